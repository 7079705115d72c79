#!/usr/bin/env python3
# limits_clients.py: many SMTP clients at once, for the limits_* tests (run inside the
# relay namespace).  Everything is bounded: connection counts, and every wait has a
# deadline.
#
#   hold SERVER PORT N SRC[,SRC...] MODE READY RELEASE MAX_S
#       open N connections (source addresses taken in turn), wait for every greeting,
#       write "OK n" to READY, then keep them open until RELEASE exists (or MAX_S).  MODE:
#       idle (say nothing), trickle (EHLO then a NOOP line one byte a second), data (EHLO,
#       MAIL, RCPT, DATA, then a body line one byte a second).  Exits 1 if a connection
#       did not get a 220 greeting or was closed by the server while held.
#   expect SERVER PORT SRC REGEX
#       one connection from SRC: the first line must match REGEX, then the server must
#       close.  Prints the line.
import os
import re
import selectors
import socket
import sys
import time


def connect(server, port, src, timeout=10):
    s = socket.socket(socket.AF_INET6 if ":" in server else socket.AF_INET)
    s.settimeout(timeout)
    s.bind((src, 0))
    s.connect((server, port))
    return s


def read_line(s, deadline):
    buf = b""
    while not buf.endswith(b"\n"):
        s.settimeout(max(0.1, deadline - time.time()))
        chunk = s.recv(1)
        if not chunk:
            break
        buf += chunk
    return buf


def expect(server, port, src, regex):
    s = connect(server, port, src)
    deadline = time.time() + 20
    line = read_line(s, deadline).decode(errors="replace").rstrip("\r\n")
    print(line)
    if not re.search(regex, line):
        sys.exit("first line %r does not match %r" % (line, regex))
    rest = read_line(s, deadline)
    if rest:
        sys.exit("server did not close after %r: got %r" % (line, rest))
    return 0


SCRIPTS = {
    "idle": (b"", b""),
    "trickle": (b"EHLO slow.example\r\n", b"NOOP\r\n"),
    "data": (b"EHLO slow.example\r\nMAIL FROM:<slow@client.example>\r\n"
             b"RCPT TO:<slow@one.example>\r\nDATA\r\n", b"Subject: slow\r\n"),
}


def hold(server, port, n, srcs, mode, ready, release, max_s):
    srcs = srcs.split(",")
    start, trickle = SCRIPTS[mode]
    deadline = time.time() + max_s
    socks = []
    for i in range(n):
        s = connect(server, port, srcs[i % len(srcs)])
        socks.append(s)
    for s in socks:
        line = read_line(s, time.time() + 20)
        if not line.startswith(b"220"):
            sys.exit("connection %d: greeting %r" % (socks.index(s), line))
        if start:
            s.sendall(start)
        s.setblocking(False)
    with open(ready, "w") as f:
        f.write("OK %d\n" % len(socks))
    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    pos = 0
    closed = 0
    while time.time() < deadline and not os.path.exists(release):
        for key, _ in sel.select(timeout=1.0):
            try:
                data = key.fileobj.recv(4096)
            except OSError:
                data = b""
            if not data:
                closed += 1
                sel.unregister(key.fileobj)
        if trickle:
            b = trickle[pos % len(trickle):pos % len(trickle) + 1]
            pos += 1
            for s in socks:
                try:
                    s.send(b)
                except OSError:
                    pass
    for s in socks:
        s.close()
    if closed:
        sys.exit("%d held connections were closed by the server" % closed)
    return 0


def main(argv):
    if argv[1] == "hold":
        return hold(argv[2], int(argv[3]), int(argv[4]), argv[5], argv[6], argv[7],
                    argv[8], float(argv[9]))
    if argv[1] == "expect":
        return expect(argv[2], int(argv[3]), argv[4], argv[5])
    sys.exit("usage: see the top of this file")


if __name__ == "__main__":
    sys.exit(main(sys.argv))
