#!/bin/bash
# ctl_queue: dualrelayctl against a running daemon. Messages stay queued while the sink
# is down; "queue" and "queue --json" list them with their recipients and last error;
# "hold" keeps a message from being delivered by "flush" once the sink is up, while
# another is delivered; "release" + "flush ID" deliver it; "delete" removes a message
# (from the queue and the spool, never delivered); "stats" counts what the sink got;
# "health" and "route" answer; a user other than root or the daemon's is refused.
. "$(dirname "$0")/lab.sh"

lab_setup
lab_dns_start <<'ZONE'
ctl.example. MX 10 mx.ctl.example.
mx.ctl.example. A 198.51.100.61
ZONE
lab_net_addr 198.51.100.61
CONF="$LAB_DIR/dualrelay.conf"
# Retries far apart: only "flush" makes the daemon try again within the test.
lab_conf_write "$CONF"
sed -i 's/queue = { retry_min_s = 1; retry_max_s = 2;/queue = { retry_min_s = 300; retry_max_s = 600;/' "$CONF"
lab_daemon_start "$CONF"
CTL="$DR_BUILDDIR/src/dualrelayctl"
ctl() { lab_relay "$CTL" -c "$CONF" "$@"; }

from=alice@client.example.net
declare -A qid
for m in held deleted normal; do
	lab_make_message "$LAB_DIR/msg.$m" "$from" "$m@ctl.example" "ctl $m"
	lab_send "$from" "$m@ctl.example" "$LAB_DIR/msg.$m" || lab_fail "message $m not accepted"
	qid[$m]=$LAB_QID
	lab_expect_log "$(lab_re "$LAB_QID"): to=<$m@ctl.example>.*status=deferred" 10 "deferral of $m"
done

out=$(ctl queue) || lab_fail "dualrelayctl queue failed: $out"
for m in held deleted normal; do
	printf '%s\n' "$out" | grep -q "^${qid[$m]} " || lab_fail "queue does not list ${qid[$m]}: $out"
	printf '%s\n' "$out" | grep -q "<$m@ctl.example> deferred, attempts 1" ||
		lab_fail "queue does not show <$m@ctl.example> as deferred: $out"
done
printf '%s\n' "$out" | grep -q "connect to mx.ctl.example\[198.51.100.61\]:25: Connection refused" ||
	lab_fail "queue does not show the last error: $out"
printf '%s\n' "$out" | grep -q -- "-- 3 messages" || lab_fail "queue total: $out"

ctl queue --json >"$LAB_DIR/q.json" || lab_fail "queue --json failed"
python3 - "$LAB_DIR/q.json" "${qid[held]}" <<'PY' || lab_fail "queue --json: $(cat "$LAB_DIR/q.json")"
import json, sys
q = json.load(open(sys.argv[1]))
assert len(q) == 3, q
m = [x for x in q if x["id"] == sys.argv[2]][0]
assert m["sender"] == "alice@client.example.net" and m["held"] is False and m["size"] > 0
r = m["recipients"][0]
assert r["address"] == "held@ctl.example" and r["state"] == "deferred" and r["attempts"] == 1
assert r["dsn"] == "4.4.1" and "Connection refused" in r["last_error"] and r["next_attempt"] > 0
PY

ctl hold "${qid[held]}" || lab_fail "hold failed"
ctl queue | grep -q "^${qid[held]} .*(held)" || lab_fail "held message not shown as held"
ctl delete "${qid[deleted]}" || lab_fail "delete failed"
ctl show "${qid[deleted]}" >/dev/null 2>&1 && lab_fail "show finds a deleted message"
ctl hold NOSUCHID >/dev/null 2>&1 && lab_fail "hold of an unknown id succeeded"
[ -e "$LAB_DIR/spool/queue/${qid[deleted]}" ] && lab_fail "deleted message still in the spool"
out=$(ctl show "${qid[normal]}") || lab_fail "show failed"
printf '%s\n' "$out" | grep -q "^Subject: ctl normal" || lab_fail "show has no headers: $out"

# The sink comes up; flush: the normal message goes, the held one does not.
lab_sink_start ctl 198.51.100.61
out=$(ctl flush) || lab_fail "flush failed"
printf '%s\n' "$out" | grep -q "^1 message scheduled" || lab_fail "flush counted: $out"
lab_expect_sent "${qid[normal]}" normal@ctl.example mx.ctl.example 198.51.100.61 ipv4 10
sleep 1
[ "$(lab_sink_count ctl)" -eq 1 ] || lab_fail "the sink got $(lab_sink_count ctl) messages, expected 1"
lab_log_has "$(lab_re "${qid[held]}"): to=<held@ctl.example>.*status=sent" &&
	lab_fail "the held message was delivered"

ctl release "${qid[held]}" || lab_fail "release failed"
ctl flush "${qid[held]}" >/dev/null || lab_fail "flush ID failed"
lab_expect_sent "${qid[held]}" held@ctl.example mx.ctl.example 198.51.100.61 ipv4 10
lab_sink_wait ctl 2 5 || lab_fail "the sink does not have 2 messages"
sleep 1
[ "$(lab_sink_count ctl)" -eq 2 ] || lab_fail "the sink got $(lab_sink_count ctl) messages, expected 2"
lab_log_has "to=<deleted@ctl.example>.*status=sent" && lab_fail "the deleted message was delivered"
out=$(ctl queue) || lab_fail "queue failed"
[ "$out" = "queue is empty" ] || lab_fail "queue not empty: $out"

out=$(ctl stats) || lab_fail "stats failed"
printf '%s\n' "$out" | grep -q "^received 3$" || lab_fail "stats received: $out"
# One deferral after a refused connect (ipv4); the other two were suspended without a
# connection (family none) because the destination was known to be down.
printf '%s\n' "$out" | grep -q "^ipv4 delivered 2 deferred 1 " || lab_fail "stats ipv4: $out"
printf '%s\n' "$out" | grep -q "^none delivered 0 deferred 2 " || lab_fail "stats none: $out"
printf '%s\n' "$out" | grep -q "^queue_messages 0$" || lab_fail "stats queue: $out"

out=$(ctl health) || lab_fail "health failed"
printf '%s\n' "$out" | grep -q "destination mx.ctl.example" || lab_fail "health: $out"
out=$(ctl route ctl.example) || lab_fail "route failed"
printf '%s\n' "$out" | grep -q "1. mx.ctl.example\[198.51.100.61\]:25 ipv4" || lab_fail "route: $out"
ctl bogus >/dev/null 2>&1 && lab_fail "an unknown command succeeded"

# Only root and the daemon's user (the lab runs it as nobody): "daemon" is refused
# (socket mode 0600 or peer check).
out=$(lab_relay setpriv --reuid=nobody --regid=nogroup --clear-groups "$CTL" \
	-s "$LAB_DIR/spool/control" stats 2>&1) || lab_fail "the daemon's user was refused: $out"
out=$(lab_relay setpriv --reuid=daemon --regid=daemon --clear-groups "$CTL" \
	-s "$LAB_DIR/spool/control" stats 2>&1) && lab_fail "daemon could use the control socket: $out"
lab_log "as daemon: $out"
lab_pass
