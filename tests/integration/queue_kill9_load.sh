#!/bin/bash
# queue_kill9_load: a load of submissions while the daemon is killed with -9 and restarted
# three times. Four client threads send 240 messages with unique Message-IDs and note
# which ones got "250 ... queued as"; after the last restart the queue drains, and every
# acknowledged message must have arrived at the sink at least once. Duplicates (possible
# only for deliveries in flight at a kill) are counted and reported.
. "$(dirname "$0")/lab.sh"

lab_setup
lab_dns_start <<'ZONE'
load.example. MX 10 mx.load.example.
mx.load.example. A 198.51.100.121
ZONE
lab_sink_start load 198.51.100.121
lab_conf_write "$LAB_DIR/dualrelay.conf"
lab_daemon_start "$LAB_DIR/dualrelay.conf"

cat >"$LAB_DIR/load.py" <<'PY'
import smtplib, sys, threading, time
total, threads, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
acked, lock = [], threading.Lock()
deadline = time.monotonic() + 60
def worker(k):
    for i in range(k, total, threads):
        mid = "load-%d@client.example.net" % i
        msg = "From: a@client.example.net\r\nTo: r@load.example\r\nMessage-ID: <%s>\r\nSubject: %d\r\n\r\nbody %d\r\n" % (mid, i, i)
        while time.monotonic() < deadline:
            try:
                s = smtplib.SMTP("127.0.0.1", 2525, "client.example.net", timeout=5)
                # sendmail() returns only after "250" to the end of data; any other
                # answer or a broken connection raises.
                s.sendmail("a@client.example.net", ["r%d@load.example" % i], msg)
                with lock:
                    acked.append(mid)
                try:
                    s.quit()
                except Exception:
                    pass
                break
            except Exception:
                time.sleep(0.05)        # daemon down: retry until it is back
ts = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
[t.start() for t in ts]
[t.join() for t in ts]
open(out, "w").write("\n".join(acked) + "\n")
PY
lab_relay python3 "$LAB_DIR/load.py" 240 4 "$LAB_DIR/acked" &
client=$!
for round in 1 2 3; do
	sleep "0.$((RANDOM % 6 + 3))"
	kill -KILL "$LAB_DAEMON_PID"
	wait "$LAB_DAEMON_PID" 2>/dev/null
	lab_forget_pid "$LAB_DAEMON_PID"
	lab_log "round $round: killed -9"
	lab_daemon_start "$LAB_DIR/dualrelay.conf"
done
wait "$client" || lab_fail "the load client failed"
acked=$(grep -c . "$LAB_DIR/acked")
lab_log "$acked messages acknowledged with 250"
[ "$acked" -eq 240 ] || lab_fail "only $acked of 240 messages were acknowledged in 60 s"

# Wait for the queue to drain (bounded).
for _ in $(seq 1 300); do
	[ -z "$(ls "$LAB_DIR/spool/queue" 2>/dev/null)" ] && break
	sleep 0.1
done
[ -z "$(ls "$LAB_DIR/spool/queue")" ] || lab_fail "the queue did not drain: $(ls "$LAB_DIR/spool/queue" | head)"
sleep 0.5
python3 - "$LAB_DIR/acked" "$(lab_sink_dir load)" <<'PY' || lab_fail "acknowledged messages were lost"
import os, re, sys
acked = set(l.strip() for l in open(sys.argv[1]) if l.strip())
seen = {}
for name in os.listdir(sys.argv[2]):
    data = open(os.path.join(sys.argv[2], name), "rb").read()
    m = re.search(rb"Message-ID: <([^>]+)>", data)
    if m:
        k = m.group(1).decode()
        seen[k] = seen.get(k, 0) + 1
lost = sorted(acked - set(seen))
dups = sum(n - 1 for n in seen.values() if n > 1)
print("acknowledged %d, arrived %d distinct, lost %d, duplicates %d" % (len(acked), len(seen), len(lost), dups))
if lost:
    print("lost:", lost[:10])
    sys.exit(1)
PY
lab_pass
