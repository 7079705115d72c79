#!/bin/bash
# bench-throughput.sh: relay throughput, latency, CPU and memory of dualrelay next to Postfix
# and next to the ceiling (client straight into the sink), in the integration lab, in one
# run, with the same message set:
#
#   smtp-source (BENCH_SESSIONS sessions, BENCH_MESSAGES messages of BENCH_SIZE bytes)
#     1. -> smtp-sink                                   (ceiling)
#     2. -> dualrelayd 127.0.0.1:2525 -> smtp-sink      (lab default configuration)
#     3. -> Postfix    127.0.0.1:25   -> smtp-sink      (Postfix defaults)
#
# BENCH_ROUNDS rounds (default 3), each running the three in turn, so that a slow spell of
# the machine hits all three alike; the table shows each figure's median over the rounds
# (peak RSS: the highest), the ratios are those of the medians, and each round's
# delivered/s is printed too.
#
# For each: accepted msg/s (messages / time smtp-source took), delivered msg/s (until the
# sink counted them all, from the first connection), acceptance-to-delivery latency p50 and
# p99 (the relays' own delay= log fields), CPU seconds per 1000 messages (dualrelayd: its
# utime+stime; Postfix: the sum over its master's process tree, sampled from /proc every
# 100 ms), and peak RSS (dualrelayd VmHWM; Postfix: the peak of the summed RSS of its
# processes, sampled alike). Then the ratios.
#
# Not a test: these machines are noisy. Needs root, the lab's packages (install-deps.sh).
# Usage: contrib/bench-throughput.sh   (env: BENCH_MESSAGES=5000 BENCH_SESSIONS=20
#        BENCH_SIZE=4096 BENCH_LIMIT_S=600 BENCH_ROUNDS=3; BENCH_PERF=FILE also records
#        a perf profile of dualrelayd during its first round, for `perf report -i FILE`;
#        BENCH_STRACE=FILE counts its system calls instead (strace -c -f: slows it down,
#        that round's figures are not comparable); BENCH_POSTFIX=0 skips Postfix, for
#        quick comparisons while working; BENCH_SPOOL_SYNC=file|filesystem sets
#        dualrelay's spool_sync)
: "${DR_SRCDIR:=$(cd "$(dirname "$0")/.." && pwd)}"
: "${DR_BUILDDIR:=$DR_SRCDIR}"
export DR_SRCDIR DR_BUILDDIR
: "${BENCH_MESSAGES:=5000}" "${BENCH_SESSIONS:=20}" "${BENCH_SIZE:=4096}" "${BENCH_LIMIT_S:=600}"
: "${BENCH_ROUNDS:=3}" "${BENCH_POSTFIX:=1}"
. "$DR_SRCDIR/tests/integration/lab.sh"
. "$DR_SRCDIR/tests/integration/lab_family.sh"

labf_setup
lab_require postfix postconf smtp-source smtp-sink python3
# With an SOA, as every real zone has: the "no AAAA" answer for the MX host can then be
# cached for its negative TTL (RFC 2308) instead of asked again for every message.
lab_dns_start <<'ZONE'
example. 3600 SOA ns.example. hostmaster.example. 1 3600 600 86400 300
bench.example. MX 10 mx.bench.example.
mx.bench.example. A 198.51.100.121
ZONE
lab_net_addr 198.51.100.121
lab_net_addr 198.51.100.122

# A counting sink (no dumps: the sink must not be the bottleneck). "-c" prints
# "sess=N quit=N mesg=N" after each message.
sink_start() { # NAME ADDR
	lab_inet smtp-sink -u nobody -c "$2:25" 1000 >"$LAB_DIR/sink.$1.count" 2>&1 &
	LAB_PIDS="$LAB_PIDS $!"
	wait_for 10 lab_listening "$LAB_NET" "$2" 25 || lab_fail "sink $1 does not listen"
}
sink_count() { # NAME (the end of the file is enough: it grows by a line per message)
	tail -c 256 "$LAB_DIR/sink.$1.count" | tr '\r' '\n' |
		sed -n 's/.*mesg=\([0-9]*\).*/\1/p' | tail -n1
}
sink_start relay 198.51.100.121
sink_start ceil 198.51.100.122

now() { date +%s.%N; }
calc() { python3 -c "print($1)"; }

# Sum of utime+stime (s) of the processes whose PIDs are given.
cpu_of() {
	local t=0 p
	for p in "$@"; do
		[ -r "/proc/$p/stat" ] || continue
		t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat")))
	done
	calc "$t / $(getconf CLK_TCK)"
}

# wait_sink NAME WANT LIMIT: wait until the sink counted WANT messages.
wait_sink() {
	local end=$(( $(date +%s) + $3 ))
	while [ "$(sink_count "$1")" != "$2" ]; do
		[ "$(date +%s)" -lt "$end" ] || return 1
		sleep 0.01 # the poll's lag counts against the relay's delivered/s
	done
}

# source HOST PORT: run smtp-source in RELAY; prints its wall time.
source_run() {
	local t0 t1
	t0=$(now)
	lab_relay timeout "$BENCH_LIMIT_S" smtp-source -s "$BENCH_SESSIONS" -m "$BENCH_MESSAGES" \
		-l "$BENCH_SIZE" -f bench@client.example.net -t to@bench.example "$1:$2" \
		>"$LAB_DIR/source.out" 2>&1 || lab_fail "smtp-source to $1:$2: $(tail -n3 "$LAB_DIR/source.out")"
	t1=$(now)
	calc "$t1 - $t0"
}

percentiles() { # file of numbers -> "p50 p99"
	python3 -c '
import sys
v = sorted(float(x) for x in open(sys.argv[1]) if x.strip())
if not v: print("- -"); sys.exit()
q = lambda p: v[min(len(v) - 1, int(round(p * (len(v) - 1))))]
print("%.3f %.3f" % (q(0.5), q(0.99)))' "$1"
}

N=$BENCH_MESSAGES
declare -A ACC DEL P50 P99 CPU RSS   # per peer: one value per round, space-separated

median() { # numbers... ("-" ignored)
	python3 -c '
import sys
v = sorted(float(x) for x in sys.argv[1:] if x != "-")
n = len(v)
print("-" if n == 0 else "%.3f" % (v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2))' "$@"
}

# record PEER ACC DEL P50 P99 CPU RSS: one round's figures.
record() {
	ACC[$1]="${ACC[$1]:-} $2"; DEL[$1]="${DEL[$1]:-} $3"; P50[$1]="${P50[$1]:-} $4"
	P99[$1]="${P99[$1]:-} $5"; CPU[$1]="${CPU[$1]:-} $6"; RSS[$1]="${RSS[$1]:-} $7"
}

# The lines a log gained since a mark (its line count then): one round's delays.
log_since() { tail -n +"$(($2 + 1))" "$1"; }
lines_of() { wc -l <"$1" 2>/dev/null || echo 0; }

# 1. the ceiling
run_ceiling() {
	local base t
	base=$(sink_count ceil); base=${base:-0}
	t=$(source_run 198.51.100.122 25)
	wait_sink ceil "$((base + N))" "$BENCH_LIMIT_S" ||
		lab_fail "ceiling: the sink got $(($(sink_count ceil) - base)) of $N"
	record ceiling "$(calc "$N / $t")" "$(calc "$N / $t")" - - - -
}

# 2. dualrelay, logging at level info like Postfix (the lab's default is debug: a line
# per SMTP command and reply)
dualrelay_start() {
	lab_conf_write "$LAB_DIR/dualrelay.conf"
	sed -i 's/level = "debug";/level = "info";/' "$LAB_DIR/dualrelay.conf"
	# BENCH_SPOOL_SYNC=file|filesystem: how batches are made durable (default auto: the
	# lab spool shares its file system, so an fsync per file).
	[ -z "${BENCH_SPOOL_SYNC:-}" ] ||
		echo "spool_sync = \"$BENCH_SPOOL_SYNC\";" >>"$LAB_DIR/dualrelay.conf"
	lab_daemon_start "$LAB_DIR/dualrelay.conf"
}

run_dualrelay() { # ROUND
	local base mark c0 c1 t0 t1 t p50 p99 perf_pid=
	base=$(sink_count relay); base=${base:-0}
	mark=$(lines_of "$LAB_LOG")
	if [ "$1" = 1 ] && [ -n "${BENCH_PERF:-}" ]; then
		perf record -F 999 -g -p "$LAB_DAEMON_PID" -o "$BENCH_PERF" >"$LAB_DIR/perf.out" 2>&1 &
		perf_pid=$!
		sleep 0.5
	elif [ "$1" = 1 ] && [ -n "${BENCH_STRACE:-}" ]; then
		strace -c -f -p "$LAB_DAEMON_PID" -o "$BENCH_STRACE" >"$LAB_DIR/strace.out" 2>&1 &
		perf_pid=$!
		sleep 0.5
	fi
	c0=$(cpu_of "$LAB_DAEMON_PID")
	t0=$(now)
	t=$(source_run 127.0.0.1 2525)
	wait_sink relay "$((base + N))" "$BENCH_LIMIT_S" ||
		lab_fail "dualrelay: the sink got $(($(sink_count relay) - base)) of $N"
	t1=$(now)
	if [ -n "$perf_pid" ]; then
		kill -INT "$perf_pid"
		wait "$perf_pid" || true
	fi
	c1=$(cpu_of "$LAB_DAEMON_PID")
	log_since "$LAB_LOG" "$mark" | sed -n 's/.* delay=\([0-9.]*\), .*status=sent.*/\1/p' \
		>"$LAB_DIR/dr.delays"
	read -r p50 p99 < <(percentiles "$LAB_DIR/dr.delays")
	record dualrelay "$(calc "$N / $t")" "$(calc "$N / ($t1 - $t0)")" "$p50" "$p99" \
		"$(calc "round(($c1 - $c0) * 1000 / $N, 3)")" \
		"$(awk '/VmHWM/ {print $2}' "/proc/$LAB_DAEMON_PID/status")"
}

# 3. Postfix (defaults, relaying by MX through the lab DNS)
postfix_start() {
	labf_postfix_start relay "$LAB_RELAY" 127.0.0.1 <<'EOF'
myhostname = client.example.net
mydomain = example.net
myorigin = $myhostname
mynetworks = 127.0.0.0/8
relayhost =
EOF
	pf=$(labf_postfix_dir relay)
	master=$(tr -d ' ' <"$pf/queue/pid/master.pid" 2>/dev/null)
	[ -n "$master" ] || lab_fail "no Postfix master pid"
	# The master's process tree is Postfix: its CPU (what each process used while the
	# sampler watched; processes born meanwhile count whole) and the peak of its summed
	# RSS, sampled every 100 ms.
	cat >"$LAB_DIR/sample.py" <<'PYEOF'
import os, sys, time
master, out, stop = int(sys.argv[1]), sys.argv[2], sys.argv[3]
tck = os.sysconf("SC_CLK_TCK"); page_kb = os.sysconf("SC_PAGE_SIZE") // 1024
cpu = {}; first = {}; peak = 0; rounds = 0
def tree():
    kids = {}
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                st = open("/proc/%s/stat" % p).read().rsplit(")", 1)[1].split()
                kids.setdefault(int(st[1]), []).append(int(p))
            except OSError:
                pass
    todo, seen = [master], []
    while todo:
        p = todo.pop(); seen.append(p); todo += kids.get(p, [])
    return seen
while not os.path.exists(stop):
    rss = 0
    for p in tree():
        try:
            st = open("/proc/%d/stat" % p).read().rsplit(")", 1)[1].split()
            t = (int(st[11]) + int(st[12])) / tck
            first.setdefault(p, t if rounds == 0 else 0.0)
            cpu[p] = t
            rss += int(st[21]) * page_kb
        except OSError:
            pass
    peak = max(peak, rss)
    rounds += 1
    time.sleep(0.1)
open(out, "w").write("%.3f %d\n" % (sum(cpu[p] - first[p] for p in cpu), peak))
PYEOF
}

run_postfix() {
	local base mark t0 t1 t p50 p99 pfcpu pfrss sampler
	base=$(sink_count relay); base=${base:-0}
	mark=$(lines_of "$pf/maillog")
	rm -f "$LAB_DIR/pf.stop"
	python3 "$LAB_DIR/sample.py" "$master" "$LAB_DIR/pf.sample" "$LAB_DIR/pf.stop" &
	sampler=$!
	sleep 0.3
	t0=$(now)
	t=$(source_run 127.0.0.1 25)
	wait_sink relay "$((base + N))" "$BENCH_LIMIT_S" ||
		lab_fail "Postfix: the sink got $(($(sink_count relay) - base)) of $N"
	t1=$(now)
	touch "$LAB_DIR/pf.stop"; wait "$sampler"
	read -r pfcpu pfrss <"$LAB_DIR/pf.sample"
	log_since "$pf/maillog" "$mark" | sed -n 's/.* delay=\([0-9.]*\), .*status=sent.*/\1/p' \
		>"$LAB_DIR/pf.delays"
	read -r p50 p99 < <(percentiles "$LAB_DIR/pf.delays")
	record postfix "$(calc "$N / $t")" "$(calc "$N / ($t1 - $t0)")" "$p50" "$p99" \
		"$(calc "round($pfcpu * 1000 / $N, 3)")" "$pfrss"
}

PEERS="ceiling dualrelay"
dualrelay_start
if [ "$BENCH_POSTFIX" != 0 ]; then
	PEERS="$PEERS postfix"
	postfix_start
fi
for r in $(seq 1 "$BENCH_ROUNDS"); do
	run_ceiling
	run_dualrelay "$r"
	[ "$BENCH_POSTFIX" = 0 ] || run_postfix
	lab_log "round $r of $BENCH_ROUNDS done"
done

printf '\n%d messages of %d bytes, %d client sessions, median of %d rounds; %s cores, kernel %s\n' \
	"$N" "$BENCH_SIZE" "$BENCH_SESSIONS" "$BENCH_ROUNDS" "$(nproc)" "$(uname -r)"
printf '%-10s %12s %13s %9s %9s %12s %12s\n' "" "accepted/s" "delivered/s" "p50 s" "p99 s" \
	"CPU s/1000" "peak RSS"
declare -A M
for k in $PEERS; do
	# shellcheck disable=SC2086 # word splitting of the per-round lists is the point
	{
		M[ACC.$k]=$(median ${ACC[$k]}); M[DEL.$k]=$(median ${DEL[$k]})
		M[P50.$k]=$(median ${P50[$k]}); M[P99.$k]=$(median ${P99[$k]})
		M[CPU.$k]=$(median ${CPU[$k]})
		peak=$(python3 -c '
import sys
v = [int(x) for x in sys.argv[1:] if x != "-"]
print("%d kB" % max(v) if v else "-")' ${RSS[$k]})
	}
	printf '%-10s %12.0f %13.0f %9s %9s %12s %12s\n' "$k" "${M[ACC.$k]}" "${M[DEL.$k]}" \
		"${M[P50.$k]}" "${M[P99.$k]}" "${M[CPU.$k]}" "$peak"
done
printf '\ndelivered/s in each round:\n'
for k in $PEERS; do
	printf '  %-10s' "$k"
	for v in ${DEL[$k]}; do printf ' %7.0f' "$v"; done
	printf '\n'
done
printf '\nratios of the medians: delivered/s dualrelay/ceiling %.2f' \
	"$(calc "${M[DEL.dualrelay]} / ${M[DEL.ceiling]}")"
if [ "$BENCH_POSTFIX" != 0 ]; then
	printf ', dualrelay/Postfix %.2f; accepted/s dualrelay/Postfix %.2f' \
		"$(calc "${M[DEL.dualrelay]} / ${M[DEL.postfix]}")" \
		"$(calc "${M[ACC.dualrelay]} / ${M[ACC.postfix]}")"
fi
printf '\n'
lab_daemon_stop
grep -h "group commit" "$LAB_LOG" | tail -n1 | sed 's/^.*dualrelayd\[info\]: /dualrelay: /' || true
lab_pass
