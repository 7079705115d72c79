#!/bin/bash
# sink_down_then_up: the MX host exists but nothing listens on port 25 (connection refused):
# the recipient is deferred with a 4.x.x code and retried; once an SMTP server starts on
# that address the message is delivered, once, byte-exact.
. "$(dirname "$0")/lab.sh"

lab_setup
lab_dns_start <<'ZONE'
one.example. MX 10 mx.one.example.
mx.one.example. A 198.51.100.11
ZONE
lab_net_addr 198.51.100.11     # the host is up, its SMTP server is not
lab_conf_write "$LAB_DIR/dualrelay.conf"
lab_daemon_start "$LAB_DIR/dualrelay.conf"

from=alice@client.example.net
rcpt=bob@one.example
lab_make_message "$LAB_DIR/msg" "$from" "$rcpt" "down then up"
lab_send "$from" "$rcpt" "$LAB_DIR/msg" || lab_fail "message not accepted (no 250 ... queued as)"
lab_log "accepted as $LAB_QID"

q=$(lab_re "$LAB_QID")
r=$(lab_re "$rcpt")
lab_expect_log "$q: to=<$r>, .*dsn=4\.[0-9]+\.[0-9]+, status=deferred" 15 "deferral while the MX is down"
lab_log_has "$q: to=<$r>, .*status=(bounced|sent)" && lab_fail "a refused connection was not temporary"

# At least one retry happens while the MX is still down (retry_max_s = 2).
n=$(grep -Ec -- "$q: to=<$r>, .*status=deferred" "$LAB_LOG")
lab_wait_log_count() { [ "$(grep -Ec -- "$q: to=<$r>, .*status=deferred" "$LAB_LOG")" -gt "$n" ]; }
wait_for 8 lab_wait_log_count || lab_fail "no retry within 8 s while the MX is down"

lab_sink_start one 198.51.100.11
lab_expect_sent "$LAB_QID" "$rcpt" mx.one.example 198.51.100.11 ipv4 15
lab_sink_wait one 1 5 || lab_fail "delivery logged but the sink has no message"
sleep 3
lab_expect_sink_file one
dump=$LAB_DUMP
lab_dump_message "$dump" >"$LAB_DIR/got" || lab_fail "cannot parse the sink dump"
lab_compare_bytes "$LAB_DIR/msg" "$LAB_DIR/got" "delivery after the MX came up"
lab_pass
