#!/bin/bash
# sink_4xx_then_retry: the MX answers RCPT with a temporary failure (smtp-sink -r RCPT:
# "450 4.3.0 Error: command failed"); the recipient is deferred, not bounced, and the
# remote reply is in the log.  Once the MX accepts again, the retry (retry_min_s = 1,
# retry_max_s = 2) delivers the message, once, byte-exact.
. "$(dirname "$0")/lab.sh"

lab_setup
lab_dns_start <<'ZONE'
one.example. MX 10 mx.one.example.
mx.one.example. A 198.51.100.11
ZONE
lab_sink_start one 198.51.100.11 -r RCPT
lab_conf_write "$LAB_DIR/dualrelay.conf"
lab_daemon_start "$LAB_DIR/dualrelay.conf"

from=alice@client.example.net
rcpt=bob@one.example
lab_make_message "$LAB_DIR/msg" "$from" "$rcpt" "4xx then retry"
lab_send "$from" "$rcpt" "$LAB_DIR/msg" || lab_fail "message not accepted (no 250 ... queued as)"
lab_log "accepted as $LAB_QID"

q=$(lab_re "$LAB_QID")
r=$(lab_re "$rcpt")
lab_expect_log "$q: to=<$r>, relay=mx\.one\.example\[198\.51\.100\.11\]:25, .*dsn=4\.3\.0, status=deferred \(.*450" \
	15 "deferral after 450 to RCPT"
lab_log_has "$q: to=<$r>, .*status=(bounced|sent)" && lab_fail "a 4xx was not treated as temporary"
[ "$(lab_sink_count one)" -eq 0 ] || lab_fail "the sink stored a message although RCPT was refused"

# The MX recovers: the same address now accepts everything.
lab_sink_stop one
lab_sink_start one 198.51.100.11
lab_expect_sent "$LAB_QID" "$rcpt" mx.one.example 198.51.100.11 ipv4 15
lab_sink_wait one 1 5 || lab_fail "delivery logged but the sink has no message"
sleep 3
lab_expect_sink_file one
dump=$LAB_DUMP
lab_dump_message "$dump" >"$LAB_DIR/got" || lab_fail "cannot parse the sink dump"
lab_compare_bytes "$LAB_DIR/msg" "$LAB_DIR/got" "retried delivery"
[ "$(grep -Ec -- "$q: to=<$r>, .*status=sent" "$LAB_LOG")" -eq 1 ] ||
	lab_fail "more than one status=sent line for one recipient"
lab_pass
