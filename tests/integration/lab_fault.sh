# shellcheck shell=bash
# lab_fault.sh: additions to lab.sh for the fault-injection tests (fault_*.sh).  Sourced
# after lab.sh, lab_family.sh and lab_queue.sh; uses their variables and functions.
#
# Every fault test ends with the same proof that nothing the daemon acknowledged with 250
# was lost or sent twice: each accepted (queue id, recipient) pair is recorded with
# labx_accepted, and labx_check_no_loss then checks, for every pair, that the log holds
# exactly one status=sent line or that "dualrelayctl queue --json" still lists the
# recipient as pending or deferred; that nothing bounced; and that the receivers hold
# exactly as many recipients as the log says were sent.
#
#   labx_setup                 labq_setup + labf_setup's cleanup (Postfix, nftables)
#   labx_ctl ARGS...           dualrelayctl -c $LABX_CONF ARGS... inside RELAY
#   labx_accepted QID RCPT...  record recipients the daemon acknowledged for QID
#   labx_check_no_loss N       the accounting above; N: recipients the sinks hold
#   labx_sent_count QID RCPT   status=sent lines for QID and RCPT
#   labx_smtp_sink_rcpts NAME  recipients smtp-sink NAME stored (its X-Rcpt-Args: lines)
#   labx_qsink_rcpts NAME      recipients queue_sink.py NAME stored (from its envelopes)
#   labx_dns_restart           stop unbound and start it again with $LAB_DIR/unbound's
#                              configuration (after a test edited it)
#   labx_dns_stop              stop unbound (nothing listens on the DNS address then)

LABX_CONF=""            # the daemon's configuration, for dualrelayctl
LABX_ACCEPTED=""        # file of "QID RCPT" lines the daemon acknowledged with 250

labx_setup() {
	lab_setup
	LABX_ACCEPTED="$LAB_DIR/accepted"
	: >"$LABX_ACCEPTED"
	trap 'labf_cleanup; labq_cleanup; lab_cleanup' EXIT
}

labx_ctl() {
	lab_relay "$DR_BUILDDIR/src/dualrelayctl" -c "$LABX_CONF" "$@"
}

labx_accepted() {
	local qid=$1 r
	shift
	[ -n "$qid" ] || lab_fail "labx_accepted: no queue id"
	for r in "$@"; do
		echo "$qid $r" >>"$LABX_ACCEPTED"
	done
}

labx_sent_count() {
	grep -Ec -- "$(lab_re "$1"): to=<$(lab_re "$2")>, .*status=sent " "$LAB_LOG"
}

labx_smtp_sink_rcpts() {
	local f n=0
	for f in $(lab_sink_files "$1"); do
		n=$((n + $(grep -c '^X-Rcpt-Args: ' "$f")))
	done
	echo "$n"
}

labx_qsink_rcpts() {
	python3 - "$(labq_sink_dir "$1")" <<'EOF'
import glob, json, os, sys
n = 0
for eml in glob.glob(os.path.join(sys.argv[1], "*.eml")):
    n += len(json.load(open(eml[:-4] + ".json"))["rcpts"])
print(n)
EOF
}

labx_check_no_loss() {
	local at_sinks=$1 out
	labx_ctl queue --json >"$LAB_DIR/queue.json" 2>"$LAB_DIR/queue.err" ||
		lab_fail "dualrelayctl queue --json failed: $(cat "$LAB_DIR/queue.err")"
	out=$(python3 - "$LABX_ACCEPTED" "$LAB_LOG" "$LAB_DIR/queue.json" "$at_sinks" <<'EOF'
import json, re, sys
accepted = [l.split() for l in open(sys.argv[1]) if l.strip()]
log = open(sys.argv[2], errors="replace").read().splitlines()
queue = json.load(open(sys.argv[3]))
at_sinks = int(sys.argv[4])
queued = {(m["id"], r["address"]): r["state"] for m in queue for r in m["recipients"]}
status = {}
for line in log:
    m = re.search(r"(\S+): to=<([^>]*)>, .*status=(sent|bounced|expired) ", line)
    if m:
        status.setdefault((m.group(1), m.group(2)), []).append(m.group(3))
bad, sent, waiting = [], 0, 0
for qid, rcpt in accepted:
    st = status.get((qid, rcpt), [])
    q = queued.get((qid, rcpt))
    if st.count("sent") > 1:
        bad.append("%s <%s> sent %d times" % (qid, rcpt, st.count("sent")))
    if "bounced" in st or "expired" in st:
        bad.append("%s <%s> bounced" % (qid, rcpt))
    if st.count("sent") == 1:
        sent += 1
        if q in ("pending", "deferred"):
            bad.append("%s <%s> sent but still queued as %s" % (qid, rcpt, q))
    elif q in ("pending", "deferred"):
        waiting += 1
    elif not st:
        bad.append("%s <%s> acknowledged, never sent and not queued (lost)" % (qid, rcpt))
if sent != at_sinks:
    bad.append("the log says %d recipients were sent, the receivers hold %d" % (sent, at_sinks))
print("%d accepted, %d sent (receivers hold %d), %d still queued" % (len(accepted), sent,
      at_sinks, waiting))
for b in bad:
    print("LOSS: " + b)
sys.exit(1 if bad else 0)
EOF
	) || lab_fail "accounting: $out"
	lab_log "accounting: $out"
}

# --- the lab DNS server ---------------------------------------------------------------------

labx_dns_stop() {
	lab_stop_pid "$LAB_UNBOUND_PID"
	lab_forget_pid "$LAB_UNBOUND_PID"
	LAB_UNBOUND_PID=""
}

labx_dns_restart() {
	local dir="$LAB_DIR/unbound"
	[ -z "$LAB_UNBOUND_PID" ] || labx_dns_stop
	ip netns exec "$LAB_NET" unbound -d -c "$dir/unbound.conf" >>"$dir/unbound.out" 2>&1 &
	LAB_UNBOUND_PID=$!
	LAB_PIDS="$LAB_PIDS $LAB_UNBOUND_PID"
	wait_for 10 lab_dns_answers ||
		lab_fail "unbound does not answer after a restart ($(tail -n 5 "$dir/unbound.out"))"
}

# labx_dns_fault BREAK REPAIR REASON_RE: the DNS fault tests' common course.  The lab
# serves dns.example (MX mx.dns.example, 198.51.100.151, an smtp-sink); retries are far
# apart, so only "dualrelayctl flush" makes the daemon try again.  BREAK (a function) breaks
# the lab DNS; two messages (one with two recipients) are then accepted, and every
# recipient must be deferred with 4.4.3 and a reason matching REASON_RE (never bounced),
# and still be in the queue.  REPAIR (a function) fixes DNS; after a flush all three
# recipients are delivered, once each.
labx_dns_fault() {
	local break_fn=$1 repair_fn=$2 reason=$3 from=alice@client.example.net qid1 qid2 r
	lab_dns_start <<'ZONE'
dns.example. MX 10 mx.dns.example.
mx.dns.example. A 198.51.100.151
ZONE
	lab_sink_start dns 198.51.100.151
	LABX_CONF="$LAB_DIR/dualrelay.conf"
	labq_conf_write "$LABX_CONF" "retry_min_s = 300; retry_max_s = 600; max_lifetime_s = 3600;"
	lab_daemon_start "$LABX_CONF"

	"$break_fn"
	labf_message "$LAB_DIR/msg1" "$from" a@dns.example "dns fault one"
	lab_send "$from" a@dns.example "$LAB_DIR/msg1" || lab_fail "message 1 not accepted"
	qid1=$LAB_QID
	labx_accepted "$qid1" a@dns.example
	labf_message "$LAB_DIR/msg2" "$from" b@dns.example "dns fault two"
	lab_send "$from" b@dns.example,c@dns.example "$LAB_DIR/msg2" ||
		lab_fail "message 2 not accepted"
	qid2=$LAB_QID
	labx_accepted "$qid2" b@dns.example c@dns.example
	for r in "$qid1 a" "$qid2 b" "$qid2 c"; do
		set -- $r
		lab_expect_log "$(lab_re "$1"): to=<$2@dns\.example>, .*dsn=4\.4\.3, status=deferred \(.*$reason" \
			30 "4.4.3 deferral of <$2@dns.example> while DNS is broken"
	done
	lab_log "deferral: $(grep -m1 "$(lab_re "$qid1"): to=<a@dns.example>.*status=deferred" "$LAB_LOG")"
	lab_log_has "status=(bounced|expired)" && lab_fail "a DNS failure bounced a message"
	[ "$(lab_sink_count dns)" -eq 0 ] || lab_fail "the sink got mail while DNS was broken"
	labx_ctl queue --json >"$LAB_DIR/q.json" || lab_fail "queue --json failed"
	python3 - "$LAB_DIR/q.json" <<'PY' || lab_fail "queue while DNS is broken: $(cat "$LAB_DIR/q.json")"
import json, sys
q = json.load(open(sys.argv[1]))
rs = [r for m in q for r in m["recipients"]]
assert len(q) == 2 and len(rs) == 3, q
assert all(r["state"] == "deferred" and r["dsn"] == "4.4.3" for r in rs), rs
PY
	labx_check_no_loss 0

	"$repair_fn"
	labx_ctl flush >/dev/null || lab_fail "dualrelayctl flush failed"
	lab_expect_sent "$qid1" a@dns.example mx.dns.example 198.51.100.151 ipv4 20
	lab_expect_sent "$qid2" b@dns.example mx.dns.example 198.51.100.151 ipv4 20
	lab_expect_sent "$qid2" c@dns.example mx.dns.example 198.51.100.151 ipv4 20
	lab_sink_wait dns 2 10 || lab_fail "the sink has $(lab_sink_count dns) messages, expected 2"
	labq_wait_queue_empty 10 || lab_fail "the queue is not empty after delivery"
	labx_check_no_loss "$(labx_smtp_sink_rcpts dns)"
}

# labx_mx_fault REASON_RE QUEUE_SINK_FAULT...: the common course of the tests of an MX that
# misbehaves before any mail is sent.  mx1.fault.example (198.51.100.161) runs queue_sink.py
# with the fault options QUEUE_SINK_FAULT; mx2.fault.example (198.51.100.162) is a good
# queue_sink.  one.example has mx1 only, two.example has mx1 (preference 10) and mx2 (20).
# Mail to two.example must reach mx2 in the same attempt, once; mail to one.example must be
# deferred with a reason matching REASON_RE and stay queued, never bounced.  Then mx1
# behaves again and "dualrelayctl flush" delivers the rest, once.  Outbound replies time
# out after 3 s (timeouts.smtp_timeout_s).
labx_mx_fault() {
	local reason=$1 from=alice@client.example.net q1 q2
	shift
	lab_dns_start <<'ZONE'
one.example. MX 10 mx1.fault.example.
two.example. MX 10 mx1.fault.example.
two.example. MX 20 mx2.fault.example.
mx1.fault.example. A 198.51.100.161
mx2.fault.example. A 198.51.100.162
ZONE
	labq_sink_start mx1 198.51.100.161 "$@"
	labq_sink_start mx2 198.51.100.162
	LABX_CONF="$LAB_DIR/dualrelay.conf"
	labq_conf_write "$LABX_CONF" "retry_min_s = 300; retry_max_s = 600; max_lifetime_s = 3600;" \
		"timeouts = { smtp_timeout_s = 3; };"
	lab_daemon_start "$LABX_CONF"

	labf_message "$LAB_DIR/msg2" "$from" b@two.example "mx fault two"
	lab_send "$from" b@two.example "$LAB_DIR/msg2" || lab_fail "message to two.example not accepted"
	q2=$LAB_QID
	labx_accepted "$q2" b@two.example
	lab_expect_log "$(lab_re "$q2"): to=<b@two\.example>, relay=mx2\.fault\.example\[198\.51\.100\.162\]:25, .*status=sent" \
		30 "delivery to the second MX after the first one failed"
	lab_expect_log "$(lab_re "$q2"): .*mx1\.fault\.example\[198\.51\.100\.161\].*$reason" 5 \
		"a log line saying why mx1 was passed over"
	lab_log "mx1 passed over: $(grep -E "$(lab_re "$q2"): .*mx1\.fault\.example" "$LAB_LOG" | head -n1)"

	labf_message "$LAB_DIR/msg1" "$from" a@one.example "mx fault one"
	lab_send "$from" a@one.example "$LAB_DIR/msg1" || lab_fail "message to one.example not accepted"
	q1=$LAB_QID
	labx_accepted "$q1" a@one.example
	lab_expect_log "$(lab_re "$q1"): to=<a@one\.example>, relay=mx1\.fault\.example\[198\.51\.100\.161\]:25, .*dsn=4\.[0-9.]+, status=deferred \(.*$reason" \
		30 "deferral when the only MX fails"
	lab_log "deferral: $(grep -E "$(lab_re "$q1"): to=.*status=deferred" "$LAB_LOG" | head -n1)"
	lab_log_has "status=(bounced|expired)" && lab_fail "a message bounced"
	[ "$(labq_sink_count mx1)" -eq 0 ] || lab_fail "the faulty MX stored a message"
	labx_check_no_loss "$(( $(labx_qsink_rcpts mx1) + $(labx_qsink_rcpts mx2) ))"

	labq_sink_stop mx1
	labq_sink_start mx1 198.51.100.161
	labx_ctl flush >/dev/null || lab_fail "dualrelayctl flush failed"
	lab_expect_log "$(lab_re "$q1"): to=<a@one\.example>, relay=mx1\.fault\.example\[198\.51\.100\.161\]:25, .*status=sent" \
		20 "delivery once mx1 behaves"
	labq_wait_queue_empty 10 || lab_fail "the queue is not empty"
	labx_check_no_loss "$(( $(labx_qsink_rcpts mx1) + $(labx_qsink_rcpts mx2) ))"
}

# labx_client MODE ARGS...: tests/integration/fault_client.py inside RELAY against
# dualrelayd on 127.0.0.1:2525; its output ("key=value" lines) goes to $LAB_DIR/client.out.
labx_client() {
	lab_relay timeout 120 python3 "$DR_SRCDIR/tests/integration/fault_client.py" "$@" \
		>"$LAB_DIR/client.out" 2>&1
}

# labx_client_value KEY: a value fault_client.py printed.
labx_client_value() {
	sed -n "s/^$1=//p" "$LAB_DIR/client.out" | tail -n1
}

# labx_swaks_ok SUBJECT RCPT SINK N: an ordinary message through swaks is accepted and
# delivered (the sink then holds N messages): the daemon still serves clients.
labx_swaks_ok() {
	labf_message "$LAB_DIR/msg.ok" alice@client.example.net "$2" "$1"
	lab_send alice@client.example.net "$2" "$LAB_DIR/msg.ok" ||
		lab_fail "an ordinary message was not accepted after the fault ($1)"
	labx_accepted "$LAB_QID" "$2"
	lab_expect_log "$(lab_re "$LAB_QID"): to=<$(lab_re "$2")>, .*status=sent" 20 "delivery of '$1'"
	lab_sink_wait "$3" "$4" 10 || lab_fail "sink $3 holds $(lab_sink_count "$3"), expected $4"
}
