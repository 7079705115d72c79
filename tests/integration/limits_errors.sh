#!/bin/bash
# limits_errors: a command line longer than the limit (2048 octets with CR LF) gets
# "500 5.5.2 Error: line too long" and the session goes on; a message with a 5000-octet
# line in its body is accepted and delivered unchanged (text lines are not limited:
# the relay passes bytes through); with max_errors = 5 the fifth error reply is followed
# by "421 4.7.0 Too many errors" and the server closes the connection.
. "$(dirname "$0")/lab.sh"

lab_setup
lab_dns_start <<'ZONE'
one.example. MX 10 mx.one.example.
mx.one.example. A 198.51.100.11
ZONE
lab_sink_start one 198.51.100.11
lab_conf_write "$LAB_DIR/dualrelay.conf" "max_errors = 5;"
lab_daemon_start "$LAB_DIR/dualrelay.conf"

lab_relay python3 - >"$LAB_DIR/dialog.out" 2>&1 <<'PYEOF' || lab_fail "dialog: $(cat "$LAB_DIR/dialog.out")"
import socket, sys, time
s = socket.create_connection(("127.0.0.1", 2525), timeout=20)
f = s.makefile("rb")

def reply():
    lines = []
    while True:
        l = f.readline()
        if not l:
            return lines, True
        lines.append(l.decode().rstrip("\r\n"))
        if l[3:4] != b"-":
            return lines, False

def step(send, want):
    if send is not None:
        s.sendall(send)
    lines, eof = reply()
    print(repr(send)[:60], "->", lines[-1:] if lines else "EOF")
    if not lines or not lines[-1].startswith(want):
        sys.exit("after %r: %r, expected %r" % (send[:60] if send else send, lines, want))

step(None, "220 ")
step(b"EHLO client.example.net\r\n", "250 ")
step(b"NOOP " + b"x" * 3000 + b"\r\n", "500 5.5.2 Error: line too long")       # error 1
step(b"NOOP\r\n", "250 2.0.0")                                                  # goes on
step(b"MAIL FROM:<a@client.example.net> " + b"X=y " * 600 + b"\r\n", "500 5.5.2")  # error 2
step(b"MAIL FROM:<a@client.example.net>\r\n", "250 2.1.0")
step(b"BOGUS1\r\n", "502 5.5.2")                                                # error 3
step(b"BOGUS2\r\n", "502 5.5.2")                                                # error 4
s.sendall(b"BOGUS3\r\n")                                                        # error 5
lines, eof = reply()
print("BOGUS3 ->", lines)
if not lines or not lines[0].startswith("502 5.5.2"):
    sys.exit("BOGUS3: %r" % lines)
if len(lines) == 1:
    more, eof = reply()
    lines += more
if not lines[-1].startswith("421 4.7.0 Too many errors"):
    sys.exit("no 421 after the fifth error: %r" % lines)
s.settimeout(10)
if f.read(1) != b"":
    sys.exit("server did not close after 421")
print("closed")
PYEOF
lab_log "dialog: $(tr '\n' ' ' <"$LAB_DIR/dialog.out")"
lab_expect_log 'line too long from \[127\.0\.0\.1\]' 5 "the line-too-long log line"
lab_expect_log 'too many errors after [A-Z]+ from \[127\.0\.0\.1\]' 5 "the too-many-errors log line"

# A 5000-octet body line passes unchanged.
from=alice@client.example.net
rcpt=bob@one.example
python3 - "$LAB_DIR/msg" "$from" "$rcpt" <<'PYEOF'
import sys
path, sender, rcpt = sys.argv[1:4]
lines = [b"From: " + sender.encode(), b"To: " + rcpt.encode(), b"Subject: long line",
         b"", b"before", b"L" * 5000, b"after"]
open(path, "wb").write(b"".join(l + b"\r\n" for l in lines))
PYEOF
lab_send "$from" "$rcpt" "$LAB_DIR/msg" || lab_fail "message with a 5000-octet line refused"
lab_expect_sent "$LAB_QID" "$rcpt" mx.one.example 198.51.100.11 ipv4 20
lab_sink_wait one 1 10 || lab_fail "delivery logged but the sink has no message"
lab_expect_sink_file one
grep -q "^L\{5000\}"$'\r'"\?$" "$LAB_DUMP" || lab_fail "the 5000-octet line did not arrive whole"
lab_pass
