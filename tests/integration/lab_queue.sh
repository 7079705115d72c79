# lab_queue.sh: additions to lab.sh for the queue tests (queue_*.sh).  Sourced after
# lab.sh; uses its variables and functions.
#
#   labq_setup                 lab_setup, plus cleanup of what this file sets up (a tmpfs
#                              spool is unmounted after the daemon has stopped, whatever
#                              way the test ends)
#   labq_conf_write FILE QUEUE [EXTRA...]
#                              lab_conf_write, with lab.sh's queue = { ... } settings
#                              replaced by QUEUE ("retry_min_s = 1; max_lifetime_s = 3;")
#   labq_sink_start NAME ADDR[,ADDR...] [queue_sink.py options...]
#                              tests/integration/queue_sink.py on port 25 of each ADDR (one
#                              process, one set of counters) in NET: rejects
#                              chosen recipients, answers DATA slowly, counts sessions
#   labq_sink_stop NAME
#   labq_sink_dir NAME         its directory: N.eml (message), N.json (envelope), sessions
#   labq_sink_count NAME       messages it accepted
#   labq_sink_wait NAME N TIMEOUT_S
#   labq_sink_counter NAME WHERE FIELD  its connection and transaction counters
#   labq_spool_tmpfs SIZE      put $LAB_DIR/spool on a tmpfs of SIZE (mount(8) syntax)
#   labq_queue_files           the number of files in the spool's queue/ directory
#   labq_wait_queue_empty TIMEOUT_S  wait until spool/queue holds no file
#   labq_dsn_check FILE ...    parse a DSN (RFC 3464) and check every field; see below
#   labq_envelope FILE FIELD   the envelope queue_sink.py stored with a message
#   labq_sink_from NAME SENDER the messages sink NAME got from MAIL FROM SENDER

LABQ_TMPFS=""           # mount point of the tmpfs spool, when there is one
LABQ_SRCDIR="$DR_SRCDIR/tests/integration"

labq_setup() {
	lab_setup
	# Our cleanup runs before lab.sh's and passes the exit status on.
	trap 'labq_cleanup; lab_cleanup' EXIT
}

labq_cleanup() {
	local rc=$?
	[ "$BASHPID" = "$$" ] || return "$rc"
	if [ -n "$LABQ_TMPFS" ]; then
		# The daemon holds the spool's directories open: stop it before unmounting.
		if [ -n "$LAB_DAEMON_PID" ]; then
			lab_stop_pid "$LAB_DAEMON_PID"
			lab_forget_pid "$LAB_DAEMON_PID"
			LAB_DAEMON_PID=""
		fi
		umount "$LABQ_TMPFS" 2>/dev/null || umount -l "$LABQ_TMPFS" 2>/dev/null ||
			echo "$LAB_TEST: cannot unmount $LABQ_TMPFS" >&2
		LABQ_TMPFS=""
	fi
	return "$rc"
}

labq_conf_write() {
	local f=$1 queue=$2
	shift 2
	lab_conf_write "$f" "$@"
	sed -i "s/^queue = {.*/queue = { $queue };/" "$f"
	grep -qF "queue = { $queue };" "$f" || lab_fail "cannot set the queue settings in $f"
}

# --- queue_sink.py --------------------------------------------------------------------------

labq_sink_start() {
	local name=$1 addrs a dir pid var
	IFS=, read -ra addrs <<<"$2"
	shift 2
	dir="$LAB_DIR/qsink.$name"
	mkdir -p "$dir"
	for a in "${addrs[@]}"; do
		lab_net_addr "$a"
		! lab_listening "$LAB_NET" "$a" 25 ||
			lab_fail "queue_sink $name: something already listens on $a port 25"
	done
	ip netns exec "$LAB_NET" python3 "$LABQ_SRCDIR/queue_sink.py" --dir "$dir" \
		--name "mx-$name.lab" "$@" "${addrs[@]}" >>"$LAB_DIR/qsink.$name.out" 2>&1 &
	pid=$!
	LAB_PIDS="$LAB_PIDS $pid"
	var="LABQ_SINK_PID_$name"
	printf -v "$var" '%s' "$pid"
	for a in "${addrs[@]}"; do
		wait_for 5 lab_sink_ready "$pid" "$a" ||
			lab_fail "queue_sink $name does not listen on $a:25 ($(cat "$LAB_DIR/qsink.$name.out"))"
	done
}

labq_sink_stop() {
	local var="LABQ_SINK_PID_$1"
	lab_stop_pid "${!var}"
	lab_forget_pid "${!var}"
	printf -v "$var" '%s' ""
}

labq_sink_dir() { echo "$LAB_DIR/qsink.$1"; }

labq_sink_count() {
	find "$LAB_DIR/qsink.$1" -maxdepth 1 -name '*.eml' 2>/dev/null | wc -l
}

labq_sink_has() {
	[ "$(labq_sink_count "$1")" -ge "$2" ]
}

labq_sink_wait() {
	wait_for "$3" labq_sink_has "$1" "$2"
}

# labq_sink_counter NAME WHERE FIELD: a counter of sink NAME (see queue_sink.py), for
# all its addresses together (WHERE "all") or one listening address: "max" is the most
# connections open at once, "busymax" the most transactions in progress at once, "total"
# the connections accepted.
labq_sink_counter() {
	awk -v k="$2" -v f="$3" '$1 == k { for (i = 2; i <= NF; i++) {
		split($i, kv, "="); if (kv[1] == f) print kv[2] } }' "$LAB_DIR/qsink.$1/sessions"
}

# --- the spool ------------------------------------------------------------------------------

# Mount before the daemon starts: "ip netns exec" gives it a copy of the mount table.
labq_spool_tmpfs() {
	local spool="$LAB_DIR/spool"
	mkdir -p "$spool"
	mount -t tmpfs -o "size=$1,mode=0700" dualrelay-lab "$spool" ||
		lab_fail "cannot mount a tmpfs of $1 on $spool"
	LABQ_TMPFS=$spool
}

labq_queue_files() {
	find "$LAB_DIR/spool/queue" -type f 2>/dev/null | wc -l
}

labq_queue_is_empty() {
	[ "$(labq_queue_files)" -eq 0 ]
}

labq_wait_queue_empty() {
	wait_for "$1" labq_queue_is_empty
}

# --- DSN ------------------------------------------------------------------------------------

# labq_dsn_check FILE REPORTING_MTA QID RCPTS ACTION STATUS_RE REMOTE_MTA DIAG_RE TEXT_RE
#     [HEADER_RE BODY_MARKER]
# FILE is a message as queue_sink.py stored it. Checks that it is an RFC 3464 report about
# message QID (the original queue id) and the recipients RCPTS (comma-separated, in the
# order of the original envelope), and nothing else:
#   - multipart/report; report-type=delivery-status, From: MAILER-DAEMON@REPORTING_MTA,
#     Auto-Submitted: auto-replied (RFC 3834), a Date: and a Subject:; exactly three
#     parts: text/plain, message/delivery-status, text/rfc822-headers;
#   - the text part matches TEXT_RE (Python regex; "{rcpt}" stands for each recipient);
#   - per-message fields: Reporting-MTA "dns; REPORTING_MTA", X-Dualrelay-Queue-ID QID,
#     an Arrival-Date that parses;
#   - one block per recipient: Final-Recipient "rfc822; RCPT", Action ACTION, a Status
#     matching STATUS_RE, Remote-MTA "dns; REMOTE_MTA" (none when REMOTE_MTA is "-",
#     either when "*"), a Diagnostic-Code matching DIAG_RE ("{rcpt}" as above; unfolded
#     first) and a Last-Attempt-Date that parses;
#   - the third part holds the original header block (HEADER_RE matches it, multi-line
#     mode) and the original body is nowhere (BODY_MARKER does not occur in FILE).
# Prints the fields; exits non-zero with the reason on the first mismatch.
labq_dsn_check() {
	python3 - "$@" <<'PY'
import email, email.policy, email.utils, re, sys
path, mta, qid, rcpts, action, status_re, remote, diag_re, text_re = sys.argv[1:10]
header_re = sys.argv[10] if len(sys.argv) > 10 else None
body_marker = sys.argv[11] if len(sys.argv) > 11 else None
rcpts = rcpts.split(",")
raw = open(path, "rb").read()
def need(cond, what):
    if not cond:
        sys.exit("DSN check: " + what)
def unfold(v):
    return re.sub(r"\s+", " ", str(v)) if v is not None else None
def for_rcpt(pattern, rcpt):
    return pattern.replace("{rcpt}", re.escape(rcpt))
def date_ok(v):
    try:
        return v is not None and email.utils.parsedate_to_datetime(str(v)) is not None
    except (TypeError, ValueError):
        return False
m = email.message_from_bytes(raw, policy=email.policy.default)
need(m.get_content_type() == "multipart/report", "type is %s" % m.get_content_type())
need(m.get_param("report-type") == "delivery-status",
     "report-type is %s" % m.get_param("report-type"))
need("MAILER-DAEMON@" + mta in str(m["From"]), "From: is %r" % m["From"])
need(m["Auto-Submitted"] == "auto-replied", "Auto-Submitted: is %r" % m["Auto-Submitted"])
need(date_ok(m["Date"]) and m["Subject"] is not None, "Date: or Subject: missing or bad")
parts = list(m.iter_parts())
types = [p.get_content_type() for p in parts]
need(types == ["text/plain", "message/delivery-status", "text/rfc822-headers"],
     "parts are %s" % types)
text = unfold(parts[0].get_content())
for rcpt in rcpts:
    need(re.search(for_rcpt(text_re, rcpt), text),
         "the text part does not match /%s/:\n%s" % (for_rcpt(text_re, rcpt), text))
blocks = parts[1].get_payload()
need(len(blocks) == 1 + len(rcpts), "%d field blocks, expected %d (message + %d recipients)"
     % (len(blocks), 1 + len(rcpts), len(rcpts)))
msgb = blocks[0]
need(msgb["Reporting-MTA"] == "dns; " + mta, "Reporting-MTA is %r" % msgb["Reporting-MTA"])
need(msgb["X-Dualrelay-Queue-ID"] == qid, "X-Dualrelay-Queue-ID is %r, expected %s"
     % (msgb["X-Dualrelay-Queue-ID"], qid))
need(date_ok(msgb["Arrival-Date"]), "Arrival-Date is %r" % msgb["Arrival-Date"])
for rcpt, r in zip(rcpts, blocks[1:]):
    need(r["Final-Recipient"] == "rfc822; " + rcpt, "Final-Recipient is %r, expected %s"
         % (r["Final-Recipient"], rcpt))
    need(r["Action"] == action, "Action is %r" % r["Action"])
    need(r["Status"] is not None and re.fullmatch(status_re, str(r["Status"])),
         "Status is %r" % r["Status"])
    if remote == "-":
        need(r["Remote-MTA"] is None, "Remote-MTA %r for a recipient never handed over"
             % r["Remote-MTA"])
    elif remote != "*":
        need(r["Remote-MTA"] == "dns; " + remote, "Remote-MTA is %r" % r["Remote-MTA"])
    d = unfold(r["Diagnostic-Code"])
    need(d is not None and re.search(for_rcpt(diag_re, rcpt), d),
         "Diagnostic-Code %r does not match /%s/" % (d, for_rcpt(diag_re, rcpt)))
    need(date_ok(r["Last-Attempt-Date"]), "Last-Attempt-Date is %r" % r["Last-Attempt-Date"])
    print("DSN: Final-Recipient=%s; Action=%s; Status=%s; Remote-MTA=%s; Diagnostic-Code=%s"
          % (r["Final-Recipient"], r["Action"], r["Status"], r["Remote-MTA"], d))
hdrs = parts[2].get_payload(decode=True) or b""
if header_re:
    need(re.search(header_re.encode(), hdrs, re.M), "original headers do not match /%s/:\n%s"
         % (header_re, hdrs.decode("utf-8", "replace")))
if body_marker:
    need(body_marker.encode() not in raw, "the original body is in the report")
print("DSN: Reporting-MTA=%s; X-Dualrelay-Queue-ID=%s; Arrival-Date=%s"
      % (msgb["Reporting-MTA"], msgb["X-Dualrelay-Queue-ID"], msgb["Arrival-Date"]))
PY
}

# labq_envelope FILE.eml FIELD: a field of the envelope queue_sink.py stored next to it
# ("mail", "mail_args", "rcpts" as a comma-separated list).
labq_envelope() {
	python3 - "${1%.eml}.json" "$2" <<'EOF'
import json, sys
v = json.load(open(sys.argv[1]))[sys.argv[2]]
print(",".join(v) if isinstance(v, list) else v)
EOF
}

# labq_sink_from NAME SENDER: the messages (.eml paths) sink NAME got from MAIL FROM SENDER
# (with the angle brackets: "<>" for the null sender).
labq_sink_from() {
	local f
	for f in "$LAB_DIR/qsink.$1"/*.eml; do
		[ -e "$f" ] || continue
		[ "$(labq_envelope "$f" mail)" = "$2" ] && echo "$f"
	done
}
