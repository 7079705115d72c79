#!/bin/bash
# bench-idle.sh: memory of idle inbound connections, dualrelay next to Postfix, in the
# integration lab, in one run:
#
#   1. dualrelayd idle (no connection): its RSS (target: under 8 MiB);
#   2. BENCH_IDLE_CONNS (10,000) connections to dualrelayd that read the greeting and
#      then say nothing: RSS growth per connection (target: under 64 KiB);
#   3. Postfix (its defaults: one smtpd process per connection, at most
#      default_process_limit = 100 of them): as many idle connections as it serves at
#      once, the summed RSS of its smtpd processes per connection.
#
# Every connection is opened from one bounded client (python3) in the relay namespace to
# 127.0.0.1; all are closed when it exits. Not a test: figures only.
# Needs root and the lab's packages (contrib/install-deps.sh).
# Usage: contrib/bench-idle.sh   (env: BENCH_IDLE_CONNS=10000)
: "${DR_SRCDIR:=$(cd "$(dirname "$0")/.." && pwd)}"
: "${DR_BUILDDIR:=$DR_SRCDIR}"
export DR_SRCDIR DR_BUILDDIR
: "${BENCH_IDLE_CONNS:=10000}"
. "$DR_SRCDIR/tests/integration/lab.sh"
. "$DR_SRCDIR/tests/integration/lab_family.sh"

labf_setup
lab_require postfix postconf python3
[ "$BENCH_IDLE_CONNS" -ge 1 ] && [ "$BENCH_IDLE_CONNS" -le 50000 ] ||
	lab_fail "BENCH_IDLE_CONNS must be 1..50000"
lab_dns_start <<'ZONE'
bench.example. MX 10 mx.bench.example.
mx.bench.example. A 198.51.100.121
ZONE

# hold.py PORT N READY: opens N connections, reads each greeting, touches READY, then
# holds them until stdin closes (or 300 s); prints how many were greeted.
cat >"$LAB_DIR/hold.py" <<'PYEOF'
import resource, socket, sys, time, select
port, n, ready = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
socks, greeted = [], 0
deadline = time.time() + 120
for i in range(n):
    if time.time() > deadline:
        break
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    socks.append(s)
    try:
        if s.recv(512).startswith(b"220"):
            greeted += 1
    except OSError:
        pass
print(greeted, flush=True)
open(ready, "w").close()
select.select([sys.stdin], [], [], 300)
PYEOF

rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
calc() { python3 -c "print($1)"; }

# 1 and 2: dualrelay, with the limits raised for the run.
lab_conf_write "$LAB_DIR/dualrelay.conf" \
	"max_connections = $((BENCH_IDLE_CONNS + 100));" "max_connections_per_ip = 0;"
ulimit -n "$(ulimit -Hn)"
lab_daemon_start "$LAB_DIR/dualrelay.conf"
sleep 1
dr_idle=$(rss_kb "$LAB_DAEMON_PID")
mkfifo "$LAB_DIR/hold.in"
lab_relay python3 "$LAB_DIR/hold.py" 2525 "$BENCH_IDLE_CONNS" "$LAB_DIR/dr.ready" \
	<"$LAB_DIR/hold.in" >"$LAB_DIR/dr.greeted" 2>"$LAB_DIR/dr.err" &
holder=$!
exec 7>"$LAB_DIR/hold.in"
wait_for 180 test -e "$LAB_DIR/dr.ready" || lab_fail "dualrelay: the client did not finish connecting"
sleep 1
dr_held=$(rss_kb "$LAB_DAEMON_PID")
dr_greeted=$(cat "$LAB_DIR/dr.greeted")
exec 7>&-
wait "$holder"
lab_daemon_stop

# 3: Postfix, as many idle connections as its process limit serves.
labf_postfix_start relay "$LAB_RELAY" 127.0.0.1 <<'EOF'
myhostname = client.example.net
mynetworks = 127.0.0.0/8
EOF
pf=$(labf_postfix_dir relay)
pf_limit=$(postconf -c "$pf" -h default_process_limit)
master=$(tr -d ' ' <"$pf/queue/pid/master.pid" 2>/dev/null)
[ -n "$master" ] || lab_fail "no Postfix master pid"
smtpd_rss() { # summed RSS (kB) and count of this instance's smtpd processes
	local p total=0 n=0
	for p in $(pgrep -P "$master" -x smtpd); do
		total=$((total + $(rss_kb "$p"))); n=$((n + 1))
	done
	echo "$total $n"
}
read -r pf_before pf_n0 < <(smtpd_rss)
rm -f "$LAB_DIR/hold.in"; mkfifo "$LAB_DIR/hold.in"
lab_relay python3 "$LAB_DIR/hold.py" 25 "$pf_limit" "$LAB_DIR/pf.ready" \
	<"$LAB_DIR/hold.in" >"$LAB_DIR/pf.greeted" 2>"$LAB_DIR/pf.err" &
holder=$!
exec 7>"$LAB_DIR/hold.in"
wait_for 180 test -e "$LAB_DIR/pf.ready" || lab_fail "Postfix: the client did not finish connecting"
sleep 1
read -r pf_after pf_n1 < <(smtpd_rss)
pf_greeted=$(cat "$LAB_DIR/pf.greeted")
exec 7>&-
wait "$holder"

dr_per=$(calc "round(($dr_held - $dr_idle) / max($dr_greeted, 1), 1)")
pf_per=$(calc "round(($pf_after - $pf_before) / max($pf_greeted, 1), 1)")
printf '\nidle inbound connections; %s cores, kernel %s\n' "$(nproc)" "$(uname -r)"
printf '%-10s %12s %12s %14s %16s\n' "" "connections" "greeted" "RSS before" "RSS per conn"
printf '%-10s %12s %12s %11s kB %13s kB\n' dualrelay "$BENCH_IDLE_CONNS" "$dr_greeted" "$dr_idle" "$dr_per"
printf '%-10s %12s %12s %11s kB %13s kB\n' postfix "$pf_limit" "$pf_greeted" "$pf_before" "$pf_per"
printf '\ndualrelay idle RSS %s kB (%s MiB); with %s connections %s kB\n' "$dr_idle" \
	"$(calc "round($dr_idle / 1024, 1)")" "$dr_greeted" "$dr_held"
printf 'ratio: RSS per connection dualrelay/Postfix %s (Postfix: smtpd processes, %s at most)\n' \
	"$(calc "round($dr_per / max($pf_per, 0.1), 3)")" "$pf_limit"
lab_pass
