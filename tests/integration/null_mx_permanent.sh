#!/bin/bash
# null_mx_permanent: a domain publishing a null MX (RFC 7505, "MX 0 .") accepts no mail:
# the recipient is bounced at once with 5.1.10, never deferred or retried, and no connection
# is made, not even to the domain's own A record.
. "$(dirname "$0")/lab.sh"

lab_setup
lab_dns_start <<'ZONE'
nullmx.example. MX 0 .
nullmx.example. A 198.51.100.21
ZONE
# A sink on the domain's A record: an implementation that wrongly falls back to the
# implicit MX would deliver here.
lab_sink_start trap 198.51.100.21
lab_conf_write "$LAB_DIR/dualrelay.conf"
lab_daemon_start "$LAB_DIR/dualrelay.conf"

from=alice@client.example.net
rcpt=nobody@nullmx.example
lab_make_message "$LAB_DIR/msg" "$from" "$rcpt" "null mx"
lab_send "$from" "$rcpt" "$LAB_DIR/msg" || lab_fail "message not accepted (no 250 ... queued as)"
lab_log "accepted as $LAB_QID"

lab_expect_log "$(lab_re "$LAB_QID"): to=<$(lab_re "$rcpt")>, .*dsn=5\.1\.10, status=bounced" 15 \
	"null MX bounce"
sleep 3
lab_log_has "$(lab_re "$LAB_QID"): to=<$(lab_re "$rcpt")>, .*status=(deferred|sent)" &&
	lab_fail "null MX recipient was deferred or sent, not only bounced"
[ "$(grep -Ec -- "$(lab_re "$LAB_QID"): to=<$(lab_re "$rcpt")>, .*status=bounced" "$LAB_LOG")" -eq 1 ] ||
	lab_fail "more than one bounce line for the null MX recipient (retried?)"
[ "$(lab_sink_count trap)" -eq 0 ] || lab_fail "mail was delivered to the null MX domain's A record"
lab_pass
