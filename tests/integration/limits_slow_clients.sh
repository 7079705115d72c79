#!/bin/bash
# limits_slow_clients: 200 connections that are idle, trickle a command one byte a second,
# or trickle a message body one byte a second (from 100 addresses, within the default
# limits) do not keep a well-behaved client from being served: while they are held, swaks
# delivers a message end to end in a normal time, and none of the slow sessions is cut
# off (the event loop never blocks on one of them).
. "$(dirname "$0")/lab.sh"

CLIENTS="$DR_SRCDIR/tests/integration/limits_clients.py"

lab_setup
lab_dns_start <<'ZONE'
one.example. MX 10 mx.one.example.
mx.one.example. A 198.51.100.11
ZONE
lab_sink_start one 198.51.100.11
lab_conf_write "$LAB_DIR/dualrelay.conf"
lab_daemon_start "$LAB_DIR/dualrelay.conf"

holders=""
for mode in idle trickle data; do
	n=67
	[ "$mode" = idle ] && n=66
	srcs=$(seq -s, -f "127.0.1.%g" 1 100)
	lab_relay python3 "$CLIENTS" hold 127.0.0.1 2525 "$n" "$srcs" "$mode" \
		"$LAB_DIR/held.$mode" "$LAB_DIR/release" 120 >"$LAB_DIR/hold.$mode.out" 2>&1 &
	holders="$holders $!"
	LAB_PIDS="$LAB_PIDS $!"
done
for mode in idle trickle data; do
	wait_for 60 test -s "$LAB_DIR/held.$mode" ||
		lab_fail "$mode connections not set up: $(cat "$LAB_DIR/hold.$mode.out")"
done
held=$(grep -c ': connect from \[127\.0\.1\.' "$LAB_LOG")
[ "$held" -eq 200 ] || lab_fail "$held slow sessions, expected 200"
lab_log "200 slow sessions held (idle, trickling commands, trickling DATA)"

from=alice@client.example.net
rcpt=bob@one.example
lab_make_message "$LAB_DIR/msg" "$from" "$rcpt" "among slow clients"
t0=$(date +%s%N)
lab_send "$from" "$rcpt" "$LAB_DIR/msg" --local-interface 127.0.0.2 ||
	lab_fail "the well-behaved client was not served"
ms=$((($(date +%s%N) - t0) / 1000000))
lab_log "swaks was served in $ms ms"
[ "$ms" -lt 10000 ] || lab_fail "swaks took $ms ms among the slow clients"
lab_expect_sent "$LAB_QID" "$rcpt" mx.one.example 198.51.100.11 ipv4 20

touch "$LAB_DIR/release"
for p in $holders; do
	wait "$p" || lab_fail "slow clients were cut off: $(cat "$LAB_DIR"/hold.*.out)"
	lab_forget_pid "$p"
done
lab_pass
