#!/usr/bin/env python3
"""queue_sink.py: a scripted SMTP receiver for the queue tests (queue_*.sh).

smtp-sink answers every RCPT alike and cannot tell how many sessions were open at once;
this one can. It accepts mail like an MX, with these knobs:

  --reject ADDR=REPLY   answer RCPT TO:<ADDR> with REPLY (e.g. "550 5.1.1 <ADDR>: User
                        unknown"); other recipients get 250. Repeatable.
  --data-delay S        wait S seconds before answering the end of DATA (a slow MX).
  --name NAME           the host name in the greeting and EHLO reply.
  --gate PATH           hold every greeting until the file PATH exists (a test can let
                        a backlog build up, then open the gate).

Faults no real server produces on demand (the fault_*.sh tests), each for every session:
  --greeting REPLY      greet with REPLY (e.g. "421 4.3.2 try later") and close.
  --silent              accept the connection and never say anything; read and discard
                        whatever comes until the client closes.
  --drop-in-data N      close the connection, without a reply, once N octets of the DATA
                        section have arrived (the message is not stored).
Each is noted in DIR/log: "session=K greeting=421", "session=K silent closed",
"session=K dropped in DATA after N octets".

Every accepted message is stored as DIR/N.eml (dot-unstuffed, CR LF line ends, exactly as
it came) with its envelope in DIR/N.json ({"mail": "<a@b>", "mail_args": "...",
"rcpts": ["<c@d>"], "helo": ..., "peer": ..., "session": K}); the .eml appears last, by
rename, so a reader that counts *.eml never sees half a message. Each RCPT, accepted or
not, is a line of DIR/log: "session=K mail=<a@b> rcpt=<c@d> reply=250".

Sessions are counted in DIR/sessions, rewritten by rename at each change: a line for all
addresses together, "all current=C max=M total=T busy=B busymax=X", then one per
listening address, "ADDR current=..." alike: connections open now, at most, in all, and
transactions (MAIL to the end of DATA, RSET or the end of the session) now and at most.
A client that keeps idle connections for reuse has more connections than transactions.

Usage: queue_sink.py --dir DIR [--name NAME] [--reject ADDR=REPLY]... [--data-delay S]
                     [--gate PATH] ADDR...
(listens on each ADDR, port 25; the test runs it inside the lab's NET namespace).
"""
import argparse
import asyncio
import itertools
import json
import os
import re

MESSAGES = itertools.count(1)
SESSIONS = itertools.count(1)
# Connections (current, max, total) and transactions, MAIL to the end of the transaction
# (busy, busymax): an idle connection a client keeps for reuse counts as a connection only.
ZERO = {"current": 0, "max": 0, "total": 0, "busy": 0, "busymax": 0}
STATE = dict(ZERO)                             # all addresses together
PER_ADDR = {}                                  # listening address -> the same counters
PATH_RE = re.compile(r"^(?:FROM|TO):\s*(<[^>]*>)\s*(.*)$", re.I)


def write_atomic(path, data):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.rename(tmp, path)


def note_sessions(args):
    fmt = "current=%(current)d max=%(max)d total=%(total)d busy=%(busy)d busymax=%(busymax)d"
    lines = ["all " + fmt % STATE] + ["%s %s" % (a, fmt % c) for a, c in sorted(PER_ADDR.items())]
    write_atomic(os.path.join(args.dir, "sessions"), ("\n".join(lines) + "\n").encode())


def count(addr, delta, what="current"):
    for c in (STATE, PER_ADDR.setdefault(addr, dict(ZERO))):
        c[what] += delta
        if delta > 0:
            if what == "current":
                c["total"] += 1
            peak = "max" if what == "current" else "busymax"
            c[peak] = max(c[peak], c[what])


class Session:
    def __init__(self, args, reader, writer):
        self.args = args
        self.reader = reader
        self.writer = writer
        self.peer = writer.get_extra_info("peername")[0]
        self.addr = writer.get_extra_info("sockname")[0]
        self.number = next(SESSIONS)
        self.busy = False
        self.helo = ""
        self.reset()

    def reset(self):
        self.mail = None
        self.mail_args = ""
        self.rcpts = []
        self.set_busy(False)

    def set_busy(self, busy):
        if getattr(self, "busy", False) != busy:
            self.busy = busy
            count(self.addr, 1 if busy else -1, "busy")
            note_sessions(self.args)

    async def send(self, text):
        self.writer.write(text.encode())
        await self.writer.drain()

    def log(self, what):
        with open(os.path.join(self.args.dir, "log"), "a") as f:
            f.write("session=%d %s\n" % (self.number, what))

    async def data(self):
        lines = []
        octets = 0
        while True:
            line = await self.reader.readline()
            if not line:
                return None
            if line == b".\r\n":
                return b"".join(lines)
            octets += len(line)
            if self.args.drop_in_data and octets >= self.args.drop_in_data:
                self.log("dropped in DATA after %d octets" % octets)
                return None
            if line.startswith(b"."):
                line = line[1:]          # RFC 5321 4.5.2 dot-unstuffing
            lines.append(line)

    def store(self, content):
        n = next(MESSAGES)
        base = os.path.join(self.args.dir, str(n))
        env = {"mail": self.mail, "mail_args": self.mail_args, "rcpts": self.rcpts,
               "helo": self.helo, "peer": self.peer, "session": self.number}
        write_atomic(base + ".json", json.dumps(env).encode() + b"\n")
        write_atomic(base + ".eml", content)
        return n

    async def command(self, cmd):
        verb = cmd.split(" ", 1)[0].upper()
        if verb in ("EHLO", "HELO"):
            self.helo = cmd[5:]
            self.reset()
            if verb == "HELO":
                await self.send("250 %s\r\n" % self.args.name)
            else:
                await self.send("250-%s\r\n250-8BITMIME\r\n250-SIZE 10240000\r\n"
                                "250 ENHANCEDSTATUSCODES\r\n" % self.args.name)
        elif verb == "MAIL":
            m = PATH_RE.match(cmd[5:])
            if not m:
                await self.send("501 5.5.4 Syntax: MAIL FROM:<address>\r\n")
                return True
            self.reset()
            self.mail, self.mail_args = m.group(1), m.group(2)
            self.set_busy(True)
            await self.send("250 2.1.0 Ok\r\n")
        elif verb == "RCPT":
            m = PATH_RE.match(cmd[5:])
            if self.mail is None or not m:
                await self.send("503 5.5.1 Error: need MAIL command\r\n")
                return True
            addr = m.group(1)[1:-1].lower()
            reply = self.args.rejects.get(addr, "250 2.1.5 Ok")
            if reply.startswith("2"):
                self.rcpts.append(m.group(1))
            self.log("mail=%s rcpt=%s reply=%s" % (self.mail, m.group(1), reply[:3]))
            await self.send(reply + "\r\n")
        elif verb == "DATA":
            if not self.rcpts:
                await self.send("554 5.5.1 Error: no valid recipients\r\n")
                return True
            await self.send("354 End data with <CR><LF>.<CR><LF>\r\n")
            content = await self.data()
            if content is None:
                return False
            if self.args.data_delay > 0:
                await asyncio.sleep(self.args.data_delay)
            n = self.store(content)
            self.reset()
            await self.send("250 2.0.0 Ok: queued as %d\r\n" % n)
        elif verb == "RSET":
            self.reset()
            await self.send("250 2.0.0 Ok\r\n")
        elif verb == "NOOP":
            await self.send("250 2.0.0 Ok\r\n")
        elif verb == "QUIT":
            await self.send("221 2.0.0 Bye\r\n")
            return False
        else:
            await self.send("502 5.5.2 Error: command not recognized\r\n")
        return True

    async def run(self):
        while self.args.gate and not os.path.exists(self.args.gate):
            await asyncio.sleep(0.02)
        if self.args.silent:
            while await self.reader.read(4096):
                pass
            self.log("silent closed")
            return
        if self.args.greeting:
            self.log("greeting=%s" % self.args.greeting[:3])
            await self.send(self.args.greeting + "\r\n")
            return
        await self.send("220 %s ESMTP queue_sink\r\n" % self.args.name)
        while True:
            line = await self.reader.readline()
            if not line:
                return
            if not await self.command(line.decode("utf-8", "replace").rstrip("\r\n")):
                return


async def handle(args, reader, writer):
    addr = writer.get_extra_info("sockname")[0]
    count(addr, 1)
    note_sessions(args)
    session = Session(args, reader, writer)
    try:
        await session.run()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        session.set_busy(False)
        count(addr, -1)
        note_sessions(args)
        writer.close()


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dir", required=True)
    p.add_argument("--name", default="queue-sink.lab")
    p.add_argument("--reject", action="append", default=[])
    p.add_argument("--data-delay", type=float, default=0)
    p.add_argument("--gate")
    p.add_argument("--greeting")
    p.add_argument("--silent", action="store_true")
    p.add_argument("--drop-in-data", type=int, default=0)
    p.add_argument("addrs", nargs="+")
    args = p.parse_args()
    args.rejects = {}
    for r in args.reject:
        addr, reply = r.split("=", 1)
        args.rejects[addr.lower()] = reply
    os.makedirs(args.dir, exist_ok=True)
    # A sink restarted on the same directory (an MX that "recovers") numbers on, so the
    # messages it got before are kept.
    global MESSAGES
    done = [int(f[:-4]) for f in os.listdir(args.dir) if re.fullmatch(r"[0-9]+\.eml", f)]
    MESSAGES = itertools.count(max(done, default=0) + 1)
    note_sessions(args)
    servers = [await asyncio.start_server(lambda r, w: handle(args, r, w), a, 25,
                                          reuse_address=True) for a in args.addrs]
    await asyncio.gather(*(s.serve_forever() for s in servers))


if __name__ == "__main__":
    asyncio.run(main())
