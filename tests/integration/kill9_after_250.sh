#!/bin/bash
# kill9_after_250: once dualrelayd has said "250 ... queued as", the message survives a
# SIGKILL at once: after a restart it is delivered, exactly once and byte-exact.  The MX is
# down while the daemon is killed, so the delivery can only come from the spool.  Then a
# second message is killed in the middle of its delivery (the MX holds its RCPT reply) and
# is delivered after the next restart.
. "$(dirname "$0")/lab.sh"

lab_setup
lab_dns_start <<'ZONE'
one.example. MX 10 mx.one.example.
mx.one.example. A 198.51.100.11
two.example. MX 10 mx.two.example.
mx.two.example. A 198.51.100.12
ZONE
lab_net_addr 198.51.100.11
lab_conf_write "$LAB_DIR/dualrelay.conf"
lab_daemon_start "$LAB_DIR/dualrelay.conf"

from=alice@client.example.net
rcpt=bob@one.example
lab_make_message "$LAB_DIR/msg" "$from" "$rcpt" "kill -9"
lab_send "$from" "$rcpt" "$LAB_DIR/msg" || lab_fail "message not accepted (no 250 ... queued as)"
lab_daemon_kill9
lab_log "accepted as $LAB_QID, daemon killed with SIGKILL"

q=$(lab_re "$LAB_QID")
r=$(lab_re "$rcpt")
lab_log_has "$q: to=<$r>, .*status=sent" && lab_fail "delivered although the MX was down"

lab_sink_start one 198.51.100.11
lab_daemon_start "$LAB_DIR/dualrelay.conf"
lab_expect_sent "$LAB_QID" "$rcpt" mx.one.example 198.51.100.11 ipv4 20
lab_sink_wait one 1 5 || lab_fail "delivery logged but the sink has no message"
sleep 3
lab_expect_sink_file one
dump=$LAB_DUMP
lab_dump_message "$dump" >"$LAB_DIR/got" || lab_fail "cannot parse the sink dump"
lab_compare_bytes "$LAB_DIR/msg" "$LAB_DIR/got" "delivery after restart"

# A second restart must not deliver it again: the recipient is recorded as delivered.
lab_daemon_stop
lab_daemon_start "$LAB_DIR/dualrelay.conf"
sleep 3
[ "$(lab_sink_count one)" -eq 1 ] || lab_fail "message delivered again after a clean restart"

# Phase 2: SIGKILL while the outbound session is open (smtp-sink waits 3 s before it
# answers DATA, so no content has been sent yet).
lab_sink_start two 198.51.100.12 -w 3
rcpt2=carol@two.example
lab_make_message "$LAB_DIR/msg2" "$from" "$rcpt2" "kill -9 in flight"
lab_send "$from" "$rcpt2" "$LAB_DIR/msg2" || lab_fail "second message not accepted"
qid2=$LAB_QID
in_session() {
	lab_inet ss -Htn state established "( sport = :25 and src 198.51.100.12 )" | grep -q .
}
wait_for 10 in_session || lab_fail "no outbound session to mx.two.example within 10 s"
lab_daemon_kill9
lab_log "accepted as $qid2, daemon killed with SIGKILL during delivery"
[ "$(lab_sink_count two)" -eq 0 ] || lab_fail "the sink has a message although DATA was never answered"
lab_daemon_start "$LAB_DIR/dualrelay.conf"
lab_expect_sent "$qid2" "$rcpt2" mx.two.example 198.51.100.12 ipv4 20
lab_sink_wait two 1 5 || lab_fail "delivery logged but the sink has no message"
lab_expect_sink_file two
dump=$LAB_DUMP
lab_dump_message "$dump" >"$LAB_DIR/got2" || lab_fail "cannot parse the sink dump"
lab_compare_bytes "$LAB_DIR/msg2" "$LAB_DIR/got2" "delivery after a kill during delivery"
lab_pass
