#!/bin/bash
# systemd_notify: dualrelayd speaks the sd_notify protocol as systemd's Type=notify
# expects, with a datagram socket of our own as NOTIFY_SOCKET (world-writable, as
# systemd's is: the daemon has left root by the time it reloads or stops): READY=1 once
# it listens and the queue is loaded; RELOADING=1 with MONOTONIC_USEC, then READY=1, for
# SIGHUP and for "dualrelayctl reload"; STOPPING=1 at SIGTERM.
. "$(dirname "$0")/lab.sh"

lab_setup
lab_dns_start <<'ZONE'
one.example. MX 10 mx.one.example.
mx.one.example. A 198.51.100.11
ZONE
lab_conf_write "$LAB_DIR/dualrelay.conf"

sock="$LAB_DIR/notify"
msgs="$LAB_DIR/notify.msgs"
: >"$msgs"
python3 - "$sock" "$msgs" <<'PYEOF' >"$LAB_DIR/notify.out" 2>&1 &
import os, socket, sys, time
path, out = sys.argv[1:3]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
os.chmod(path, 0o666)
s.settimeout(1.0)
deadline = time.time() + 120
while time.time() < deadline:
    try:
        data = s.recv(4096)
    except socket.timeout:
        continue
    with open(out, "a") as f:
        f.write(data.decode().replace("\n", "|") + "\n")
    if b"STOPPING=1" in data:
        break
PYEOF
receiver=$!
LAB_PIDS="$LAB_PIDS $receiver"
wait_for 5 test -S "$sock" || lab_fail "the notify socket was not created"

# n_msgs REGEX: how many notifications match.
n_msgs() { grep -Ec -- "$1" "$msgs"; }
has_n() { [ "$(n_msgs "$1")" -ge "$2" ]; }

NOTIFY_SOCKET="$sock" lab_daemon_start "$LAB_DIR/dualrelay.conf"
wait_for 10 has_n '^READY=1' 1 || lab_fail "no READY=1: $(cat "$msgs")"
head -n1 "$msgs" | grep -q '^READY=1|STATUS=accepting mail$' ||
	lab_fail "first notification: $(head -n1 "$msgs")"
lab_log_has "running as nobody" || lab_fail "the daemon did not drop to nobody"

kill -HUP "$LAB_DAEMON_PID"
wait_for 10 has_n '^READY=1' 2 || lab_fail "no READY=1 after SIGHUP: $(cat "$msgs")"
sed -n 2p "$msgs" | grep -Eq '^RELOADING=1\|MONOTONIC_USEC=[0-9]+$' ||
	lab_fail "SIGHUP: expected RELOADING=1 with MONOTONIC_USEC, got: $(sed -n 2p "$msgs")"
sed -n 3p "$msgs" | grep -q '^READY=1|STATUS=accepting mail (configuration reloaded)$' ||
	lab_fail "SIGHUP: expected READY=1 after reloading, got: $(sed -n 3p "$msgs")"
# The clock is CLOCK_MONOTONIC in microseconds (systemd compares it with its own).
usec=$(sed -n 2p "$msgs" | sed 's/.*MONOTONIC_USEC=//')
now=$(awk '{ printf "%.0f", $1 * 1000000 }' /proc/uptime)
[ $((now - usec)) -gt -5000000 ] && [ $((now - usec)) -lt 60000000 ] ||
	lab_fail "MONOTONIC_USEC $usec is not CLOCK_MONOTONIC (uptime $now us)"

out=$(lab_relay "$DR_BUILDDIR/src/dualrelayctl" -c "$LAB_DIR/dualrelay.conf" reload 2>&1) ||
	lab_fail "dualrelayctl reload: $out"
wait_for 10 has_n '^READY=1' 3 || lab_fail "no READY=1 after dualrelayctl reload: $(cat "$msgs")"
[ "$(n_msgs '^RELOADING=1')" -eq 2 ] || lab_fail "RELOADING=1 not sent for dualrelayctl reload"

lab_daemon_stop
wait_for 10 has_n '^STOPPING=1' 1 || lab_fail "no STOPPING=1 at SIGTERM: $(cat "$msgs")"
wait "$receiver"
lab_forget_pid "$receiver"
lab_log "notifications: $(tr '\n' ' ' <"$msgs")"
lab_pass
