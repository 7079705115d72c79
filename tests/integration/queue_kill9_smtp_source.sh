#!/bin/bash
# queue_kill9_smtp_source: Postfix's smtp-source sends 300 messages over 5 parallel
# sessions while dualrelayd is killed with -9 three times, at random points of the load,
# and restarted each time. Afterwards the queue drains, and every message acknowledged
# with 250 must have reached the MX at least once; duplicates (allowed only for
# deliveries in flight at a kill) are counted and reported.
#
# How "acknowledged" is known: smtp-source -v prints every reply it reads, so each
# "<<< 250 2.0.0 Ok: queued as QID" line is a 250 the client really received (a 250 the
# daemon wrote just before its death but the client never read does not count, and need
# not be delivered). The queue id is unique per message, and dualrelayd writes it into
# its Received: header ("... (dualrelay) with SMTP id QID"), which the MX stores with
# every message: so each acknowledgement can be matched with its deliveries. (smtp-source
# sends the same body every time; -N at least makes each recipient unique, shown too.)
# smtp-source gives up on the first connection it cannot make, so it runs in batches,
# each started again while the daemon is down, until 300 acknowledgements or 60 s.
. "$(dirname "$0")/lab.sh"
. "$(dirname "$0")/lab_queue.sh"

N=300
labq_setup
lab_require smtp-source
lab_dns_start <<'ZONE'
load.example. MX 10 mx.load.example.
mx.load.example. A 198.51.100.201
ZONE
labq_sink_start load 198.51.100.201
lab_conf_write "$LAB_DIR/dualrelay.conf"
lab_daemon_start "$LAB_DIR/dualrelay.conf"

acked_count() {
	cat "$LAB_DIR"/source.* 2>/dev/null | grep -c '<<< 250 2\.0\.0 Ok: queued as '
}
acked_at_least() { [ "$(acked_count)" -ge "$1" ]; }

# The load: batches of smtp-source (5 sessions, up to 60 messages each; -N numbers the
# recipients, the batch number keeps them unique across batches).
(
	batch=0
	deadline=$(($(date +%s) + 60))
	while [ "$(acked_count)" -lt "$N" ] && [ "$(date +%s)" -lt "$deadline" ]; do
		batch=$((batch + 1))
		left=$((N - $(acked_count)))
		[ "$left" -gt 60 ] && left=60
		lab_relay timeout 30 smtp-source -v -N -s 5 -m "$left" -M client.example.net \
			-f sender@client.example.net -t "b$batch@load.example" 127.0.0.1:2525 \
			>"$LAB_DIR/source.$batch" 2>&1 || sleep 0.1
	done
) &
load=$!
LAB_PIDS="$LAB_PIDS $load"

# Three kills, each at a random point of its third of the load, then a restart.
for round in 1 2 3; do
	at=$(((round - 1) * N / 3 + 20 + RANDOM % (N / 3 - 40)))
	wait_for 30 acked_at_least "$at" || lab_fail "round $round: the load stalled at $(acked_count) acknowledgements"
	sleep "0.0$((RANDOM % 10))"
	lab_daemon_kill9
	lab_log "round $round: killed -9 after $(acked_count) acknowledgements"
	sleep "0.$((RANDOM % 3))"
	lab_daemon_start "$LAB_DIR/dualrelay.conf"
done
wait "$load"
lab_forget_pid "$load"
acked=$(acked_count)
lab_log "$acked messages acknowledged with 250 in $(ls "$LAB_DIR"/source.* | wc -l) batches"
[ "$acked" -ge "$N" ] || lab_fail "only $acked of $N messages were acknowledged within 60 s"

# The queue drains (bounded), as the daemon itself reports it too.
labq_wait_queue_empty 60 || lab_fail "the queue did not drain: $(labq_queue_files) files left"
lab_relay "$DR_BUILDDIR/src/dualrelayctl" -c "$LAB_DIR/dualrelay.conf" queue --json \
	>"$LAB_DIR/queue.json" || lab_fail "dualrelayctl queue --json failed"
[ "$(tr -d ' \n' <"$LAB_DIR/queue.json")" = "[]" ] || lab_fail "the daemon still lists: $(cat "$LAB_DIR/queue.json")"
sleep 0.5

cat "$LAB_DIR"/source.* | sed -n 's/.*<<< 250 2\.0\.0 Ok: queued as \([0-9A-Za-z]*\).*/\1/p' \
	>"$LAB_DIR/acked"
python3 - "$LAB_DIR/acked" "$(labq_sink_dir load)" <<'PY' || lab_fail "acknowledged messages were lost"
import json, os, re, sys
acked = [l.strip() for l in open(sys.argv[1]) if l.strip()]
assert len(set(acked)) == len(acked), "a queue id was acknowledged twice"
seen, rcpts = {}, {}
for name in os.listdir(sys.argv[2]):
    if not name.endswith(".eml"):
        continue
    data = open(os.path.join(sys.argv[2], name), "rb").read()
    m = re.search(rb"\(dualrelay\) with [A-Z0-9]+ id ([0-9A-Za-z]+)", data)
    assert m, "a message without dualrelay's Received: header: " + name
    qid = m.group(1).decode()
    seen[qid] = seen.get(qid, 0) + 1
    env = json.load(open(os.path.join(sys.argv[2], name[:-4] + ".json")))
    for r in env["rcpts"]:
        rcpts.setdefault(r, set()).add(qid)
lost = [q for q in acked if q not in seen]
dups = sum(n - 1 for n in seen.values())
dup_ids = sorted(q for q, n in seen.items() if n > 1)
unacked = len(set(seen) - set(acked))
print("acknowledged %d; arrived %d distinct (%d copies); lost %d; duplicates %d%s; "
      "delivered without a 250 the client read: %d"
      % (len(acked), len(seen), sum(seen.values()), len(lost), dups,
         " (" + " ".join(dup_ids[:10]) + ")" if dup_ids else "", unacked))
shared = [r for r, q in rcpts.items() if len(q) > 1]
if shared:
    sys.exit("one recipient in several messages: %s" % shared[:5])
if lost:
    sys.exit("lost: %s" % " ".join(lost[:20]))
# A duplicate needs a delivery in flight at a kill: at most destination_concurrency (20)
# per kill.
if dups > 3 * 20:
    sys.exit("%d duplicates: more than the deliveries that can be in flight at 3 kills" % dups)
PY
lab_pass
