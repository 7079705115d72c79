#!/bin/bash
# limits_total: max_connections = 8 (no per-address limit).  Eight idle connections
# from eight addresses fill the server; a ninth, from yet another address, gets
# "421 4.7.0 Too many connections" and is closed, logged once.  When the eight go
# away, mail is accepted and delivered again.
. "$(dirname "$0")/lab.sh"

CLIENTS="$DR_SRCDIR/tests/integration/limits_clients.py"

lab_setup
lab_dns_start <<'ZONE'
one.example. MX 10 mx.one.example.
mx.one.example. A 198.51.100.11
ZONE
lab_sink_start one 198.51.100.11
lab_conf_write "$LAB_DIR/dualrelay.conf" "max_connections = 8;" "max_connections_per_ip = 0;"
lab_daemon_start "$LAB_DIR/dualrelay.conf"

srcs=127.0.0.11,127.0.0.12,127.0.0.13,127.0.0.14,127.0.0.15,127.0.0.16,127.0.0.17,127.0.0.18
lab_relay python3 "$CLIENTS" hold 127.0.0.1 2525 8 "$srcs" idle \
	"$LAB_DIR/held" "$LAB_DIR/release" 90 >"$LAB_DIR/hold.out" 2>&1 &
holder=$!
LAB_PIDS="$LAB_PIDS $holder"
wait_for 30 test -s "$LAB_DIR/held" || lab_fail "the 8 connections were not set up: $(cat "$LAB_DIR/hold.out")"

out=$(lab_relay python3 "$CLIENTS" expect 127.0.0.1 2525 127.0.0.19 \
	'^421 4\.7\.0 Too many connections, try again later' 2>&1) ||
	lab_fail "9th connection: $out"
lab_log "9th connection: $out"
lab_expect_log 'connect from \[127\.0\.0\.19\]:[0-9]+ refused: 8 connections \(max_connections 8\)' \
	5 "the refusal log line"
[ "$(grep -c 'refused: 8 connections (max_connections 8)' "$LAB_LOG")" -eq 1 ] ||
	lab_fail "the refusal was not logged exactly once"

touch "$LAB_DIR/release"
wait "$holder" || lab_fail "held connections were dropped by the server: $(cat "$LAB_DIR/hold.out")"
lab_forget_pid "$holder"
wait_for 10 test "$(grep -c 'disconnect from \[127\.0\.0\.1[1-8]\]' "$LAB_LOG")" -ge 8 ||
	lab_fail "the held sessions did not end"

from=alice@client.example.net
rcpt=bob@one.example
lab_make_message "$LAB_DIR/msg" "$from" "$rcpt" "total"
lab_send "$from" "$rcpt" "$LAB_DIR/msg" --local-interface 127.0.0.19 ||
	lab_fail "not served once the connections were gone"
lab_expect_sent "$LAB_QID" "$rcpt" mx.one.example 198.51.100.11 ipv4 20
lab_pass
