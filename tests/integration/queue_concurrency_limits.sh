#!/bin/bash
# queue_concurrency_limits: queue.destination_concurrency = 2 bounds the deliveries to
# one destination and queue.max_active = 3 bounds them in all. Two domains, ten
# messages each, share one slow MX process (queue_sink.py, 1 s before it answers the end
# of DATA) on two addresses. The MX holds its greeting until all twenty messages are
# queued, so a backlog exists however slowly the spool syncs; then it counts, exactly
# and per address, the connections open at once and the transactions (MAIL to the end
# of DATA) in progress at once:
#   - per destination at most 2 connections and 2 transactions, and 2 are reached;
#   - in all at most 3 transactions at once, and 3 are reached;
#   - all twenty messages arrive, each to its own recipient, and it takes at least
#     20 / 3 DATA delays from the opening of the gate (the limits really serialise).
# (Idle connections the relay keeps for reuse are connections but not transactions; the
# global bound is on deliveries, so it is checked on transactions.)
. "$(dirname "$0")/lab.sh"
. "$(dirname "$0")/lab_queue.sh"

labq_setup
lab_dns_start <<'ZONE'
conc-a.example. MX 10 mx.conc-a.example.
mx.conc-a.example. A 198.51.100.171
conc-b.example. MX 10 mx.conc-b.example.
mx.conc-b.example. A 198.51.100.172
ZONE
A=198.51.100.171
B=198.51.100.172
labq_sink_start slow "$A,$B" --data-delay 1 --gate "$LAB_DIR/gate"
labq_conf_write "$LAB_DIR/dualrelay.conf" \
	"retry_min_s = 1; retry_max_s = 2; max_lifetime_s = 120; destination_concurrency = 2; max_active = 3;"
lab_daemon_start "$LAB_DIR/dualrelay.conf"

from=alice@client.example.net
printf 'From: %s\r\nSubject: concurrency\r\n\r\nbody\r\n' "$from" >"$LAB_DIR/msg"
for i in $(seq 1 10); do
	for d in a b; do
		lab_send "$from" "r$i@conc-$d.example" "$LAB_DIR/msg" || lab_fail "message $i to conc-$d not accepted"
	done
done
sleep 0.5
lab_log "all queued; connections waiting at the gate: $(grep '^all' "$(labq_sink_dir slow)/sessions")"
start=$(date +%s.%N)
touch "$LAB_DIR/gate"
labq_sink_wait slow 20 30 || lab_fail "the MX got $(labq_sink_count slow) of 20 messages"
elapsed=$(echo "$(date +%s.%N) - $start" | bc)
lab_log "20 messages in ${elapsed%??????} s; MX counters:"
sed 's/^/    /' "$(labq_sink_dir slow)/sessions" >&2

for addr in $A $B; do
	conn=$(labq_sink_counter slow "$addr" max)
	busy=$(labq_sink_counter slow "$addr" busymax)
	[ "$conn" -le 2 ] || lab_fail "$conn connections at once to $addr with destination_concurrency = 2"
	[ "$busy" -le 2 ] || lab_fail "$busy transactions at once to $addr with destination_concurrency = 2"
	[ "$busy" -eq 2 ] || lab_fail "never 2 transactions at once to $addr: the limit was not used"
done
busy=$(labq_sink_counter slow all busymax)
[ "$busy" -le 3 ] || lab_fail "$busy transactions at once in all with max_active = 3"
[ "$busy" -eq 3 ] || lab_fail "never 3 transactions at once in all: max_active was not used"
# 20 deliveries of >= 1 s each, at most 3 at a time: at least 7 rounds.
[ "$(echo "$elapsed >= 6.5" | bc)" -eq 1 ] || lab_fail "20 slow deliveries took only $elapsed s"

# Every recipient exactly once.
got=$(for f in "$(labq_sink_dir slow)"/*.eml; do labq_envelope "$f" rcpts; done | sort)
want=$(for i in $(seq 1 10); do for d in a b; do echo "<r$i@conc-$d.example>"; done; done | sort)
[ "$got" = "$want" ] || lab_fail "recipients delivered: $(tr "\n" " " <<<"$got")"
lab_pass
