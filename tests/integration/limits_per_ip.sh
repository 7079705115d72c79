#!/bin/bash
# limits_per_ip: max_connections_per_ip = 5, relay_networks 127.0.0.2 only (the limit
# spares relay_networks).  Five idle connections from 127.0.0.1 are held open; a sixth
# from the same address gets "421 4.7.0 Too many connections from your address" and is
# closed (and logged once, with the address), while a client on 127.0.0.2 delivers a
# message end to end meanwhile.  Once the five are gone, 127.0.0.1 is greeted again.
. "$(dirname "$0")/lab.sh"

CLIENTS="$DR_SRCDIR/tests/integration/limits_clients.py"

# The five held sessions from 127.0.0.1 have ended (the refused one never was one).
lab_sessions_gone() {
	[ "$(grep -c 'disconnect from \[127\.0\.0\.1\]' "$LAB_LOG")" -ge 5 ]
}

lab_setup
lab_dns_start <<'ZONE'
one.example. MX 10 mx.one.example.
mx.one.example. A 198.51.100.11
ZONE
lab_sink_start one 198.51.100.11
LAB_CONF_RELAY_NETWORKS='"127.0.0.2/32"' lab_conf_write "$LAB_DIR/dualrelay.conf" \
	"max_connections_per_ip = 5;"
lab_daemon_start "$LAB_DIR/dualrelay.conf"

lab_relay python3 "$CLIENTS" hold 127.0.0.1 2525 5 127.0.0.1 idle \
	"$LAB_DIR/held" "$LAB_DIR/release" 90 >"$LAB_DIR/hold.out" 2>&1 &
holder=$!
LAB_PIDS="$LAB_PIDS $holder"
wait_for 30 test -s "$LAB_DIR/held" || lab_fail "the 5 connections were not set up: $(cat "$LAB_DIR/hold.out")"

out=$(lab_relay python3 "$CLIENTS" expect 127.0.0.1 2525 127.0.0.1 \
	'^421 4\.7\.0 Too many connections from your address' 2>&1) ||
	lab_fail "6th connection from 127.0.0.1: $out"
lab_log "6th from 127.0.0.1: $out"
lab_expect_log 'connect from \[127\.0\.0\.1\]:[0-9]+ refused: 5 connections from that address \(max_connections_per_ip 5\)' \
	5 "the refusal log line"
[ "$(grep -c 'refused: 5 connections from that address' "$LAB_LOG")" -eq 1 ] ||
	lab_fail "the refusal was not logged exactly once"

# Another address is served while 127.0.0.1 is at its limit.
from=alice@client.example.net
rcpt=bob@one.example
lab_make_message "$LAB_DIR/msg" "$from" "$rcpt" "per ip"
lab_send "$from" "$rcpt" "$LAB_DIR/msg" --local-interface 127.0.0.2 ||
	lab_fail "a client on 127.0.0.2 was not served"
lab_expect_log "$(lab_re "$LAB_QID"): client=\[127\.0\.0\.2\]:" 5 "acceptance from 127.0.0.2"
lab_expect_sent "$LAB_QID" "$rcpt" mx.one.example 198.51.100.11 ipv4 20

touch "$LAB_DIR/release"
wait "$holder" || lab_fail "held connections were dropped by the server: $(cat "$LAB_DIR/hold.out")"
lab_forget_pid "$holder"
wait_for 10 lab_sessions_gone || lab_fail "the held sessions did not end"
out=$(lab_relay swaks --server 127.0.0.1:2525 --local-interface 127.0.0.1 \
	--quit-after connect 2>&1) && echo "$out" | grep -q '^<- *220 ' ||
	lab_fail "127.0.0.1 not greeted after its sessions ended: $out"
lab_pass
