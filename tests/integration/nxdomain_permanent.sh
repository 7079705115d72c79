#!/bin/bash
# nxdomain_permanent: a recipient domain that does not exist (NXDOMAIN) is a permanent
# failure, 5.1.2, bounced once and never retried; another recipient of the same message in
# a domain that exists is delivered normally.
. "$(dirname "$0")/lab.sh"

lab_setup
lab_dns_start <<'ZONE'
one.example. MX 10 mx.one.example.
mx.one.example. A 198.51.100.11
ZONE
lab_sink_start one 198.51.100.11
lab_conf_write "$LAB_DIR/dualrelay.conf"
lab_daemon_start "$LAB_DIR/dualrelay.conf"

from=alice@client.example.net
bad=nobody@no-such-domain.example
good=bob@one.example
lab_make_message "$LAB_DIR/msg" "$from" "$bad" "nxdomain"
lab_send "$from" "$bad,$good" "$LAB_DIR/msg" || lab_fail "message not accepted (no 250 ... queued as)"
lab_log "accepted as $LAB_QID"

lab_expect_log "$(lab_re "$LAB_QID"): to=<$(lab_re "$bad")>, .*dsn=5\.1\.2, status=bounced" 15 \
	"NXDOMAIN bounce"
lab_expect_sent "$LAB_QID" "$good" mx.one.example 198.51.100.11 ipv4 15
sleep 3
lab_log_has "$(lab_re "$LAB_QID"): to=<$(lab_re "$bad")>, .*status=(deferred|sent)" &&
	lab_fail "NXDOMAIN recipient was deferred or sent, not only bounced"
[ "$(grep -Ec -- "$(lab_re "$LAB_QID"): to=<$(lab_re "$bad")>, .*status=bounced" "$LAB_LOG")" -eq 1 ] ||
	lab_fail "more than one bounce line for the NXDOMAIN recipient (retried?)"
lab_expect_sink_file one
dump=$LAB_DUMP
[ "$(lab_dump_header "$dump" Rcpt-Args | sed 's/ .*//')" = "<$good>" ] ||
	lab_fail "sink got recipients '$(lab_dump_header "$dump" Rcpt-Args)', expected <$good>"
lab_pass
