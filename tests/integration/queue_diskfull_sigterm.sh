#!/bin/bash
# queue_diskfull_sigterm: the spool on a small tmpfs. When the disk fills during DATA the
# client gets 452 4.3.1, nothing half-stored stays (spool/tmp empty, no new queue file),
# the daemon keeps running and accepts again once there is room. Then SIGTERM during a
# transaction: the listener closes at once (a new connection is refused), the transaction
# in progress finishes with 250, the daemon exits 0 within its grace period, and the
# message is delivered after the restart.
. "$(dirname "$0")/lab.sh"

lab_setup
SPOOL="$LAB_DIR/spool"
mkdir -p "$SPOOL"
mount -t tmpfs -o size=1m,mode=0700 dualrelay-test "$SPOOL" || lab_fail "cannot mount a tmpfs"
trap 'umount "$SPOOL" 2>/dev/null; lab_cleanup' EXIT
lab_dns_start <<'ZONE'
full.example. MX 10 mx.full.example.
mx.full.example. A 198.51.100.111
ZONE
lab_sink_start full 198.51.100.111
lab_conf_write "$LAB_DIR/dualrelay.conf"
lab_daemon_start "$LAB_DIR/dualrelay.conf"
from=alice@client.example.net

# Fill the tmpfs but ~100 KiB, then send 400 KiB.
dd if=/dev/zero of="$SPOOL/filler" bs=1k count=2048 2>/dev/null
rm -f "$SPOOL/filler"
avail=$(df -k --output=avail "$SPOOL" | tail -n1)
dd if=/dev/zero of="$SPOOL/filler" bs=1k count=$((avail - 100)) 2>/dev/null
python3 -c 'import sys; sys.stdout.buffer.write(b"Subject: big\r\n\r\n" + (b"x" * 76 + b"\r\n") * 5400)' >"$LAB_DIR/big"
queued_before=$(ls "$SPOOL/queue" | wc -l)
lab_send "$from" "big@full.example" "$LAB_DIR/big" && lab_fail "a message larger than the free space was accepted"
grep -q '^<\*\{0,2\} *452 4\.3\.1' "$LAB_DIR/swaks.out" || lab_fail "no 452 4.3.1: $(grep '^<' "$LAB_DIR/swaks.out" | tail -n3)"
[ -z "$(ls -A "$SPOOL/tmp")" ] || lab_fail "half-stored files left in spool/tmp: $(ls "$SPOOL/tmp")"
[ "$(ls "$SPOOL/queue" | wc -l)" -eq "$queued_before" ] || lab_fail "a queue file appeared"
kill -0 "$LAB_DAEMON_PID" || lab_fail "the daemon died on a full disk"
lab_log "disk full: $(grep '^<.* 452' "$LAB_DIR/swaks.out" | tail -n1)"

rm -f "$SPOOL/filler"
lab_send "$from" "big@full.example" "$LAB_DIR/big" || lab_fail "not accepted once there was room again"
lab_sink_wait full 1 10 || lab_fail "the message did not arrive after the disk had room"

# SIGTERM while a client is in the middle of DATA (a python client that pauses there).
lab_sink_stop full  # keep the next message queued across the restart
cat >"$LAB_DIR/slow.py" <<'PY'
import socket, sys, time
s = socket.create_connection(("127.0.0.1", 2525), timeout=20)
f = s.makefile("rb")
def reply():
    line = f.readline()
    while line[3:4] == b"-":
        line = f.readline()
    return line.decode().strip()
reply()
for cmd in (b"EHLO client.example.net", b"MAIL FROM:<alice@client.example.net>",
            b"RCPT TO:<term@full.example>", b"DATA"):
    s.sendall(cmd + b"\r\n"); reply()
s.sendall(b"Subject: sigterm\r\n\r\nfirst half\r\n")
open(sys.argv[1], "w").write("in data\n")
time.sleep(1.5)                       # SIGTERM arrives now
s.sendall(b"second half\r\n.\r\n")
print(reply())
s.sendall(b"QUIT\r\n"); reply()
PY
lab_relay python3 "$LAB_DIR/slow.py" "$LAB_DIR/in-data" >"$LAB_DIR/slow.out" 2>&1 &
client=$!
wait_for 10 test -e "$LAB_DIR/in-data" || lab_fail "the slow client did not reach DATA"
kill -TERM "$LAB_DAEMON_PID"
sleep 0.3
lab_relay python3 -c 'import socket; socket.create_connection(("127.0.0.1", 2525), timeout=2)' \
	2>/dev/null && lab_fail "a new connection was accepted after SIGTERM"
wait "$client"
grep -q '^250 2.0.0 Ok: queued as' "$LAB_DIR/slow.out" || lab_fail "the transaction in progress did not finish: $(cat "$LAB_DIR/slow.out")"
for _ in $(seq 1 100); do kill -0 "$LAB_DAEMON_PID" 2>/dev/null || break; sleep 0.1; done
kill -0 "$LAB_DAEMON_PID" 2>/dev/null && lab_fail "the daemon did not exit within 10 s of SIGTERM"
wait "$LAB_DAEMON_PID"; rc=$?
[ "$rc" -eq 0 ] || lab_fail "the daemon exited $rc after SIGTERM"
lab_forget_pid "$LAB_DAEMON_PID"
lab_sink_start full 198.51.100.111
lab_daemon_start "$LAB_DIR/dualrelay.conf"
lab_expect_log "to=<term@full.example>.*status=sent" 10 "delivery after the restart"
lab_pass
