#!/usr/bin/env python3
"""fault_client.py: misbehaving SMTP clients for the fault_*.sh tests (inbound side).

Each mode talks to dualrelayd at HOST:PORT, prints what it saw as "key=value" lines on
standard output (the test greps them) and exits 0 when it could run its script to the
end, whatever the server answered; 1 when the server broke off where it should not have.

  partial-data        MAIL, RCPT, DATA, part of a body line, then close (FIN)
  reset-data          the same, ending with a complete line, then an RST (SO_LINGER 0)
  long-command N      N octets of "X" without a line end: prints the reply; then ends
                      the line and sends NOOP: prints that reply too; then the same with
                      an N-octet line that does end (one write)
  long-data-line N    a message whose body has one line of N octets; prints the reply
                      to the end of data ("data_reply=...") and the queue id if any
  many-rcpt N DOMAIN  MAIL and N RCPT TO:<rN@DOMAIN> pipelined in one write, then DATA
                      if any was accepted; prints accepted=, refused=, the first refusal,
                      the accepted addresses to FILE (--accepted FILE) and the queue id
  idle N SECONDS [STOP]
                      open N connections, read each greeting, then send one byte of a
                      NOOP command every 2 s on each, for SECONDS or until the file STOP
                      exists; prints how many got a
                      220 greeting, how many replies to the NOOPs and how many were
                      closed by the server (with the last line each of those saw)
"""
import argparse
import os
import selectors
import socket
import struct
import sys
import time

TIMEOUT = 30


def connect(args):
    s = socket.create_connection((args.host, args.port), timeout=TIMEOUT)
    return s, s.makefile("rb")


def reply(f):
    """One (possibly multi-line) reply, as a list of lines without CR LF."""
    lines = []
    while True:
        line = f.readline()
        if not line:
            raise ConnectionError("connection closed by the server")
        lines.append(line.decode("utf-8", "replace").rstrip("\r\n"))
        if len(line) < 4 or line[3:4] != b"-":
            return lines


def cmd(s, f, text):
    s.sendall(text.encode() + b"\r\n")
    return reply(f)


def envelope(s, f, rcpt):
    reply(f)
    cmd(s, f, "EHLO fault-client.example.net")
    for c in ("MAIL FROM:<fault@client.example.net>", "RCPT TO:<%s>" % rcpt, "DATA"):
        r = cmd(s, f, c)
        if not r[-1][:1] in ("2", "3"):
            sys.exit("unexpected reply to %s: %s" % (c, r))


def partial_data(args, reset):
    s, f = connect(args)
    envelope(s, f, args.rcpt)
    s.sendall(b"From: fault@client.example.net\r\nSubject: cut off\r\n\r\nfirst body line\r\n")
    if reset:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    else:
        s.sendall(b"half a li")
    time.sleep(0.2)
    s.close()
    print("closed=%s" % ("rst" if reset else "fin"))


def long_command(args):
    n = args.n
    s, f = connect(args)
    reply(f)
    s.sendall(b"X" * n)
    print("unterminated_reply=%s" % reply(f)[-1])
    print("after_unterminated_noop=%s" % cmd(s, f, "\r\nNOOP")[-1])
    s.sendall(b"Y" * n + b"\r\n")
    print("terminated_reply=%s" % reply(f)[-1])
    print("after_terminated_noop=%s" % cmd(s, f, "NOOP")[-1])
    print("quit=%s" % cmd(s, f, "QUIT")[-1])
    s.close()


def long_data_line(args):
    s, f = connect(args)
    envelope(s, f, args.rcpt)
    body = (b"From: fault@client.example.net\r\nTo: <" + args.rcpt.encode() +
            b">\r\nSubject: one long line\r\n\r\nbefore\r\n" + b"L" * args.n +
            b"\r\nafter\r\n")
    if args.message:
        with open(args.message, "wb") as out:
            out.write(body)
    s.sendall(body + b".\r\n")
    r = reply(f)[-1]
    print("data_reply=%s" % r)
    if " queued as " in r:
        print("qid=%s" % r.split(" queued as ")[1].split()[0])
    print("quit=%s" % cmd(s, f, "QUIT")[-1])
    s.close()


def many_rcpt(args):
    s, f = connect(args)
    reply(f)
    ehlo = cmd(s, f, "EHLO fault-client.example.net")
    print("pipelining=%s" % any("PIPELINING" in l for l in ehlo))
    rcpts = ["r%d@%s" % (i, args.domain) for i in range(1, args.n + 1)]
    batch = "MAIL FROM:<fault@client.example.net>\r\n" + "".join(
        "RCPT TO:<%s>\r\n" % r for r in rcpts)
    s.sendall(batch.encode())
    mail = reply(f)[-1]
    print("mail_reply=%s" % mail)
    accepted, refused, first_refusal, last_accepted = [], 0, "", ""
    for r in rcpts:
        line = reply(f)[-1]
        if line.startswith("250"):
            accepted.append(r)
        else:
            refused += 1
            first_refusal = first_refusal or line
    print("accepted=%d" % len(accepted))
    print("refused=%d" % refused)
    print("first_refusal=%s" % first_refusal)
    with open(args.accepted, "w") as out:
        out.write("".join(a + "\n" for a in accepted))
    if accepted:
        r = cmd(s, f, "DATA")[-1]
        if r.startswith("354"):
            s.sendall(b"From: fault@client.example.net\r\nSubject: many recipients\r\n\r\n"
                      b"one message, many recipients\r\n.\r\n")
            r = reply(f)[-1]
            print("data_reply=%s" % r)
            if " queued as " in r:
                print("qid=%s" % r.split(" queued as ")[1].split()[0])
    print("quit=%s" % cmd(s, f, "QUIT")[-1])
    s.close()


def idle(args):
    sel = selectors.DefaultSelector()
    conns = []
    for _ in range(args.n):
        s = socket.create_connection((args.host, args.port), timeout=TIMEOUT)
        s.setblocking(False)
        c = {"sock": s, "buf": b"", "greeted": False, "replies": 0, "closed": False,
             "last": "", "sent": 0}
        conns.append(c)
        sel.register(s, selectors.EVENT_READ, c)
    script = b"NOOP\r\n"
    end = time.time() + args.seconds
    next_byte = time.time() + 2
    while time.time() < end and not (args.stop and os.path.exists(args.stop)):
        for key, _ in sel.select(timeout=0.2):
            c = key.data
            try:
                data = c["sock"].recv(4096)
            except (ConnectionError, BlockingIOError):
                data = b""
            if not data:
                c["closed"] = True
                sel.unregister(c["sock"])
                continue
            c["buf"] += data
            while b"\n" in c["buf"]:
                line, c["buf"] = c["buf"].split(b"\n", 1)
                c["last"] = line.decode("utf-8", "replace").rstrip("\r")
                if c["last"].startswith("220"):
                    c["greeted"] = True
                else:
                    c["replies"] += 1
        if time.time() >= next_byte:
            next_byte += 2
            for c in conns:
                if not c["closed"]:
                    b = script[c["sent"] % len(script):][:1]
                    try:
                        c["sock"].send(b)
                        c["sent"] += 1
                    except OSError:
                        pass
    print("connections=%d" % len(conns))
    print("greeted=%d" % sum(c["greeted"] for c in conns))
    print("noop_replies=%d" % sum(c["replies"] for c in conns))
    closed = [c for c in conns if c["closed"]]
    print("closed_by_server=%d" % len(closed))
    if closed:
        print("closed_last_line=%s" % closed[0]["last"])
    for c in conns:
        c["sock"].close()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=2525)
    p.add_argument("--rcpt", default="rcpt@fault.example")
    p.add_argument("--message", help="long-data-line: also write the message here")
    p.add_argument("--accepted", default="/dev/null")
    p.add_argument("mode")
    p.add_argument("rest", nargs="*")
    args = p.parse_args()
    try:
        if args.mode == "partial-data":
            partial_data(args, False)
        elif args.mode == "reset-data":
            partial_data(args, True)
        elif args.mode == "long-command":
            args.n = int(args.rest[0])
            long_command(args)
        elif args.mode == "long-data-line":
            args.n = int(args.rest[0])
            long_data_line(args)
        elif args.mode == "many-rcpt":
            args.n, args.domain = int(args.rest[0]), args.rest[1]
            many_rcpt(args)
        elif args.mode == "idle":
            args.n, args.seconds = int(args.rest[0]), float(args.rest[1])
            args.stop = args.rest[2] if len(args.rest) > 2 else None
            idle(args)
        else:
            sys.exit("unknown mode " + args.mode)
    except (ConnectionError, socket.timeout) as e:
        print("error=%s" % e)
        sys.exit(1)


if __name__ == "__main__":
    main()
