#!/bin/bash
# fault_client_idle_flood: 300 slow clients (one python3 process, 300 connections, each
# sending one byte of a NOOP every 2 s) keep the daemon busy; meanwhile swaks submits an
# ordinary message, which is accepted within its 20 s timeout and delivered.  The flood
# goes on for at least 16 s (so that each slow NOOP, 6 bytes in 12 s, gets answered) and
# at most 50 s.
# Every slow connection got a greeting (or was refused with a clear reply, should a
# connection limit apply); the daemon is alive afterwards.
. "$(dirname "$0")/lab.sh"
. "$(dirname "$0")/lab_family.sh"
. "$(dirname "$0")/lab_queue.sh"
. "$(dirname "$0")/lab_fault.sh"

labx_setup
lab_dns_start <<'ZONE'
fault.example. MX 10 mx.fault.example.
mx.fault.example. A 198.51.100.194
ZONE
lab_sink_start fault 198.51.100.194
LABX_CONF="$LAB_DIR/dualrelay.conf"
lab_conf_write "$LABX_CONF"
lab_daemon_start "$LABX_CONF"

lab_relay python3 "$DR_SRCDIR/tests/integration/fault_client.py" idle 300 50 "$LAB_DIR/idle.stop" \
	>"$LAB_DIR/idle.out" 2>&1 &
idle_pid=$!
LAB_PIDS="$LAB_PIDS $idle_pid"
conns() { [ "$(lab_relay ss -Htn state established '( dport = :2525 )' | wc -l)" -ge 300 ]; }
wait_for 20 conns || lab_fail "the 300 slow connections are not all established"
start=$(date +%s)
labx_swaks_ok "during the idle flood" ok@fault.example fault 1
lab_log "ordinary message accepted and delivered in $(( $(date +%s) - start )) s"
kill -0 "$idle_pid" || lab_fail "the slow clients ended before the message went through"
flood_long_enough() { [ $(( $(date +%s) - start )) -ge 16 ]; }
wait_for 20 flood_long_enough
touch "$LAB_DIR/idle.stop"
lab_wait_pid "$idle_pid" 60 || lab_fail "the slow clients did not finish"
lab_forget_pid "$idle_pid"
cat "$LAB_DIR/idle.out" >&2
v() { sed -n "s/^$1=//p" "$LAB_DIR/idle.out"; }
[ "$(v connections)" = 300 ] || lab_fail "the slow clients could not connect: $(cat "$LAB_DIR/idle.out")"
greeted=$(v greeted)
closed=$(v closed_by_server)
if [ "$greeted" -ne 300 ]; then
	# Only a connection limit may refuse some, and then with a 421 reply.
	v closed_last_line | grep -q '^421 ' ||
		lab_fail "$greeted of 300 slow clients greeted, the others closed without a clear reply"
fi
[ "$(v noop_replies)" -gt 0 ] || lab_fail "no slow client's NOOP was ever answered"
lab_log "greeted $greeted, NOOP replies $(v noop_replies), closed by the server $closed"
kill -0 "$LAB_DAEMON_PID" || lab_fail "the daemon died"
labx_swaks_ok "after the idle flood" ok2@fault.example fault 2
labx_check_no_loss "$(labx_smtp_sink_rcpts fault)"
lab_pass
