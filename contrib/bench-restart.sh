#!/bin/bash
# bench-restart.sh: restart with a big queue. BENCH_QUEUED (100,000) messages of 4 KiB
# for a destination that cannot be reached are put in a spool, then dualrelayd starts on
# it; the figures are the time from exec to the listener answering (every message
# recovered into the scheduler: target under 5 s), the RSS then and 5 s later, and
# whether every message is still there.
#
# The spool is written here, in dualrelay's own format (DRSPOOL 1 header records, see
# src/envelope.h), by a small generator: submitting 100,000 messages over SMTP first
# would measure acceptance, not restart. The lab DNS answers for the destination with
# an address nobody listens on, so the first delivery round fails quickly and the queue
# stays whole.
#
# Not a test: figures only. Needs root and the lab's packages (contrib/install-deps.sh).
# Usage: contrib/bench-restart.sh   (env: BENCH_QUEUED=100000)
: "${DR_SRCDIR:=$(cd "$(dirname "$0")/.." && pwd)}"
: "${DR_BUILDDIR:=$DR_SRCDIR}"
export DR_SRCDIR DR_BUILDDIR
: "${BENCH_QUEUED:=100000}"
. "$DR_SRCDIR/tests/integration/lab.sh"

lab_setup
[ "$BENCH_QUEUED" -ge 1 ] && [ "$BENCH_QUEUED" -le 1000000 ] ||
	lab_fail "BENCH_QUEUED must be 1..1000000"
lab_dns_start <<'ZONE'
down.example. MX 10 mx.down.example.
mx.down.example. A 198.51.100.200
ZONE

# The spool, as dualrelayd would have left it (queue/ID files, no state yet).
mkdir -p "$LAB_DIR/spool/queue" "$LAB_DIR/spool/tmp"
t_gen=$(date +%s.%N)
python3 - "$LAB_DIR/spool/queue" "$BENCH_QUEUED" <<'PYEOF'
import os, sys, time
qdir, n = sys.argv[1], int(sys.argv[2])
body = b"Subject: queued\r\n\r\n" + (b"x" * 76 + b"\r\n") * 52
base = int(time.time()) - 60
for i in range(n):
    sec, usec = base + i // 1000000, i % 1000000
    qid = "%08X%05X%03X" % (sec, usec, i % 4096)
    hdr = ("DRSPOOL 1\nid %s\narrival %d\nsender bench@client.example.net\n"
           "client 127.0.0.1\nhelo client.example.net\nbody 7bit\n"
           "rcpt user%d@down.example\n\n" % (qid, sec, i)).encode()
    with open(os.path.join(qdir, qid), "wb") as f:
        f.write(hdr + body)
PYEOF
t_gen=$(python3 -c "import time; print(round(time.time() - $t_gen, 1))")
chmod -R u=rwX,go= "$LAB_DIR/spool"
[ -n "${LAB_CONF_USER-nobody}" ] && chown -R "${LAB_CONF_USER-nobody}" "$LAB_DIR/spool"
du_kb=$(du -sk "$LAB_DIR/spool" | cut -f1)

lab_conf_write "$LAB_DIR/dualrelay.conf"
t0=$(date +%s.%N)
lab_daemon_start "$LAB_DIR/dualrelay.conf"
# Ready = the listener answers with its greeting.
ready() { lab_relay swaks --server 127.0.0.1 --port 2525 --quit-after connect >/dev/null 2>&1; }
wait_for 120 ready || lab_fail "dualrelayd did not get ready within 120 s"
t1=$(date +%s.%N)
rss_ready=$(awk '/^VmRSS/ {print $2}' "/proc/$LAB_DAEMON_PID/status")
sleep 5
rss_later=$(awk '/^VmRSS/ {print $2}' "/proc/$LAB_DAEMON_PID/status")
recovered=$(sed -n 's/.*queue: \([0-9]*\) messages recovered.*/\1/p' "$LAB_LOG" | tail -n1)
lab_daemon_stop
left=$(find "$LAB_DIR/spool/queue" -maxdepth 1 -type f ! -name '*.state' | wc -l)

ready_s=$(python3 -c "print(round($t1 - $t0, 2))")
printf '\n%d queued messages (spool %d MiB, generated in %s s); %s cores, kernel %s\n' \
	"$BENCH_QUEUED" "$((du_kb / 1024))" "$t_gen" "$(nproc)" "$(uname -r)"
printf 'restart to ready: %s s (target under 5 s); recovered %s\n' "$ready_s" "${recovered:-?}"
printf 'RSS when ready: %s kB (%s bytes per queued message); 5 s later: %s kB\n' "$rss_ready" \
	"$((rss_ready * 1024 / BENCH_QUEUED))" "$rss_later"
printf 'messages still queued after stop: %s of %s\n' "$left" "$BENCH_QUEUED"
[ "$left" -eq "$BENCH_QUEUED" ] || lab_fail "messages were lost: $left of $BENCH_QUEUED left"
lab_pass
