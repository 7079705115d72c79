#!/usr/bin/env python3
"""family_server.py: a small scripted SMTP receiver for the family fallback tests.

It stands in for a big receiver that judges the client only after the whole message:
over IPv6 it takes MAIL, RCPT and the complete DATA section, then answers the end of DATA
with Gmail's multi-line 550 5.7.1 about IPv6 sending guidelines (PTR records and
authentication); over IPv4 it accepts.  Every message received (dot-unstuffed, CR LF line
ends, exactly as it came) is stored in DIR/accepted/ or DIR/rejected/ as N.eml, and each
session's outcome is appended to DIR/log as one line:

    family=ipv6 peer=2001:db8::1 helo=relay.example.net mail=<a@b> rcpts=<c@d> bytes=N reply=550

Usage: family_server.py --dir DIR --name NAME ADDR...   (listens on ADDR port 25)
"""
import argparse
import asyncio
import itertools
import os
import socket

COUNTER = itertools.count(1)


def gmail_reply(peer):
    return ("550-5.7.1 [%s] This message does not meet IPv6 sending guidelines regarding PTR\r\n"
            "550-5.7.1 records and authentication. Please review\r\n"
            "550-5.7.1  https://support.google.com/mail/?p=IPv6AuthError for more\r\n"
            "550 5.7.1  information. lab - gsmtp\r\n" % peer)


class Session:
    def __init__(self, args, reader, writer):
        self.args = args
        self.reader = reader
        self.writer = writer
        sock = writer.get_extra_info("socket")
        self.family = "ipv6" if sock.family == socket.AF_INET6 else "ipv4"
        self.peer = writer.get_extra_info("peername")[0]
        self.helo = ""
        self.reset()

    def reset(self):
        self.mail = None
        self.rcpts = []

    async def send(self, text):
        self.writer.write(text.encode())
        await self.writer.drain()

    def note(self, nbytes, reply):
        with open(os.path.join(self.args.dir, "log"), "a") as f:
            f.write("family=%s peer=%s helo=%s mail=%s rcpts=%s bytes=%d reply=%s\n" % (
                self.family, self.peer, self.helo, self.mail, ",".join(self.rcpts), nbytes,
                reply))

    async def data(self):
        lines = []
        while True:
            line = await self.reader.readline()
            if not line:
                return None
            if line == b".\r\n":
                break
            if line.startswith(b"."):
                line = line[1:]          # RFC 5321 4.5.2
            lines.append(line)
        return b"".join(lines)

    async def run(self):
        await self.send("220 %s ESMTP family_server\r\n" % self.args.name)
        while True:
            line = await self.reader.readline()
            if not line:
                return
            cmd = line.decode("utf-8", "replace").rstrip("\r\n")
            verb = cmd.split(" ", 1)[0].upper()
            if verb == "EHLO":
                self.helo = cmd[5:]
                await self.send("250-%s\r\n250-8BITMIME\r\n250-SIZE 10240000\r\n"
                                "250 ENHANCEDSTATUSCODES\r\n" % self.args.name)
            elif verb == "HELO":
                self.helo = cmd[5:]
                await self.send("250 %s\r\n" % self.args.name)
            elif verb == "MAIL":
                self.reset()
                self.mail = cmd[10:].split(" ")[0]
                await self.send("250 2.1.0 OK\r\n")
            elif verb == "RCPT":
                self.rcpts.append(cmd[8:].split(" ")[0])
                await self.send("250 2.1.5 OK\r\n")
            elif verb == "DATA":
                if self.mail is None or not self.rcpts:
                    await self.send("503 5.5.1 need MAIL and RCPT first\r\n")
                    continue
                await self.send("354 go ahead\r\n")
                body = await self.data()
                if body is None:
                    self.note(0, "lost")
                    return
                where = "rejected" if self.family == "ipv6" else "accepted"
                with open(os.path.join(self.args.dir, where, "%d.eml" % next(COUNTER)),
                          "wb") as f:
                    f.write(body)
                if self.family == "ipv6":
                    self.note(len(body), "550")
                    await self.send(gmail_reply(self.peer))
                else:
                    self.note(len(body), "250")
                    await self.send("250 2.0.0 OK lab - gsmtp\r\n")
                self.reset()
            elif verb == "RSET":
                self.reset()
                await self.send("250 2.0.0 OK\r\n")
            elif verb == "NOOP":
                await self.send("250 2.0.0 OK\r\n")
            elif verb == "QUIT":
                await self.send("221 2.0.0 closing connection\r\n")
                return
            else:
                await self.send("502 5.5.1 unrecognized command\r\n")


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dir", required=True)
    p.add_argument("--name", default="mx.lab")
    p.add_argument("addrs", nargs="+")
    args = p.parse_args()

    async def handle(reader, writer):
        try:
            await Session(args, reader, writer).run()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    servers = [await asyncio.start_server(handle, a, 25, reuse_address=True)
               for a in args.addrs]
    await asyncio.gather(*(s.serve_forever() for s in servers))


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
