#!/bin/bash
# queue_sigterm: SIGTERM while a client is in the middle of DATA.
#  - the listeners close at once: a new connection to 127.0.0.1:2525 or [::1]:2525 is
#    refused while the old session goes on;
#  - the transaction in progress finishes: the rest of the content is read and answered
#    with 250 (queued), and QUIT with 221;
#  - the daemon then exits by itself, with status 0, well within its 10 s grace period;
#  - the message, undeliverable while the MX is down, is still in the spool and is
#    delivered after the restart, exactly once.
# Then the grace period's bound: a client that connects and stays silent does not hold
# the daemon for ever: it exits 0 about 10 s after SIGTERM, logging that it closed the
# session.
. "$(dirname "$0")/lab.sh"
. "$(dirname "$0")/lab_queue.sh"

labq_setup
lab_dns_start <<'ZONE'
term.example. MX 10 mx.term.example.
mx.term.example. A 198.51.100.191
ZONE
lab_net_addr 198.51.100.191 # the MX is down until the restart
lab_conf_write "$LAB_DIR/dualrelay.conf"
lab_daemon_start "$LAB_DIR/dualrelay.conf"

# A client that stops in the middle of DATA until the file GO exists.
cat >"$LAB_DIR/slow.py" <<'PY'
import os, socket, sys, time
go, ready = sys.argv[1], sys.argv[2]
s = socket.create_connection(("127.0.0.1", 2525), timeout=20)
f = s.makefile("rb")
def reply():
    line = f.readline()
    while line[3:4] == b"-":
        line = f.readline()
    out = line.decode().strip()
    print(out, flush=True)
    return out
reply()
for cmd in (b"EHLO client.example.net", b"MAIL FROM:<alice@client.example.net>",
            b"RCPT TO:<term@term.example>", b"DATA"):
    s.sendall(cmd + b"\r\n")
    reply()
s.sendall(b"From: alice@client.example.net\r\nSubject: sigterm\r\nMessage-ID: <sigterm@lab>\r\n"
          b"\r\nfirst half\r\n")
open(ready, "w").close()
deadline = time.monotonic() + 15
while not os.path.exists(go) and time.monotonic() < deadline:
    time.sleep(0.05)
s.sendall(b"second half\r\n.\r\n")
reply()
s.sendall(b"QUIT\r\n")
reply()
PY
refused() {
	lab_relay python3 - "$1" <<'PY'
import socket, sys
try:
    socket.create_connection((sys.argv[1], 2525), timeout=2).close()
except ConnectionRefusedError:
    sys.exit(0)
sys.exit(1)
PY
}

lab_relay python3 "$LAB_DIR/slow.py" "$LAB_DIR/go" "$LAB_DIR/ready" >"$LAB_DIR/slow.out" 2>&1 &
client=$!
wait_for 10 test -e "$LAB_DIR/ready" || lab_fail "the client did not reach the middle of DATA"
t0=$(date +%s.%N)
kill -TERM "$LAB_DAEMON_PID"
lab_expect_log "signal 15: no new connections" 2 "the SIGTERM log line"
refused 127.0.0.1 || lab_fail "a new IPv4 connection was not refused after SIGTERM"
refused ::1 || lab_fail "a new IPv6 connection was not refused after SIGTERM"
kill -0 "$LAB_DAEMON_PID" 2>/dev/null || lab_fail "the daemon exited with a transaction in progress"
sleep 1 # the daemon waits for the session, not just for a moment
kill -0 "$LAB_DAEMON_PID" 2>/dev/null || lab_fail "the daemon exited with a transaction in progress"
touch "$LAB_DIR/go"
wait "$client" || lab_fail "the client failed: $(cat "$LAB_DIR/slow.out")"
grep -q '^250 2\.0\.0 Ok: queued as ' "$LAB_DIR/slow.out" ||
	lab_fail "the transaction in progress did not end with 250: $(cat "$LAB_DIR/slow.out")"
grep -q '^221 ' "$LAB_DIR/slow.out" || lab_fail "QUIT was not answered: $(cat "$LAB_DIR/slow.out")"
qid=$(sed -n 's/^250 2\.0\.0 Ok: queued as \([0-9A-Za-z]*\).*/\1/p' "$LAB_DIR/slow.out")
wait_for 3 lab_pid_gone "$LAB_DAEMON_PID" ||
	lab_fail "the daemon did not exit within 3 s of its last session's end"
wait "$LAB_DAEMON_PID"
rc=$?
t=$(echo "$(date +%s.%N) - $t0" | bc)
lab_forget_pid "$LAB_DAEMON_PID"
LAB_DAEMON_PID=""
[ "$rc" -eq 0 ] || lab_fail "the daemon exited with status $rc after SIGTERM"
[ "$(echo "$t < 10" | bc)" -eq 1 ] || lab_fail "the daemon took $t s to exit"
lab_log "exited 0, ${t%??????} s after SIGTERM; message $qid"
lab_log_has "dualrelayd stopped" || lab_fail "no 'dualrelayd stopped' line"
lab_log_has "shutdown: closing" && lab_fail "a session was cut, not finished"
[ -e "$LAB_DIR/spool/queue/$qid" ] || lab_fail "message $qid is not in the spool after the exit"

# Restart with the MX up: the message goes out, exactly once.
labq_sink_start term 198.51.100.191
lab_daemon_start "$LAB_DIR/dualrelay.conf"
lab_expect_sent "$qid" term@term.example mx.term.example 198.51.100.191 ipv4 10
labq_sink_wait term 1 5 || lab_fail "the message is not at the MX"
grep -q 'second half' "$(labq_sink_dir term)/1.eml" || lab_fail "the message arrived cut"
sleep 1
[ "$(labq_sink_count term)" -eq 1 ] || lab_fail "$(labq_sink_count term) copies delivered, expected 1"

# The grace period is a bound: a silent client is cut after 10 s.
lab_relay python3 -c '
import socket, sys, time
s = socket.create_connection(("127.0.0.1", 2525), timeout=30)
open(sys.argv[1], "w").close()
s.recv(512)          # the greeting, then nothing
time.sleep(30)' "$LAB_DIR/idle" >/dev/null 2>&1 &
idle=$!
LAB_PIDS="$LAB_PIDS $idle"
wait_for 5 test -e "$LAB_DIR/idle" || lab_fail "the idle client did not connect"
sleep 0.2
t0=$(date +%s.%N)
kill -TERM "$LAB_DAEMON_PID"
wait_for 13 lab_pid_gone "$LAB_DAEMON_PID" || lab_fail "the daemon still runs 13 s after SIGTERM"
wait "$LAB_DAEMON_PID"
rc=$?
t=$(echo "$(date +%s.%N) - $t0" | bc)
lab_forget_pid "$LAB_DAEMON_PID"
LAB_DAEMON_PID=""
lab_log "with an idle session: exited $rc after ${t%??????} s"
[ "$rc" -eq 0 ] || lab_fail "the daemon exited with status $rc"
[ "$(echo "$t >= 9.5" | bc)" -eq 1 ] || lab_fail "the daemon cut the idle session after only $t s"
lab_expect_log "shutdown: closing 1 session still in progress" 1 "the log of the cut session"
lab_stop_pid "$idle"
lab_forget_pid "$idle"
lab_pass
