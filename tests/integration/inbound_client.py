#!/usr/bin/env python3
"""inbound_client.py: raw SMTP checks of dualrelayd's inbound TLS and AUTH that swaks
cannot make (used by tests/integration/inbound_*.sh).

  inbound_client.py HOST PORT CAFILE NAME plaintext-auth
      EHLO over plaintext offers STARTTLS but not AUTH; AUTH PLAIN then gets 538 5.7.11.
  inbound_client.py HOST PORT CAFILE NAME starttls-injection
      "STARTTLS" and "RSET" in one write: after the handshake (certificate verified
      against CAFILE for NAME) the first reply must answer our EHLO, not the RSET
      (RFC 3207 6); EHLO now offers AUTH and no STARTTLS.
  inbound_client.py HOST PORT CAFILE NAME auth-failures USER
      three wrong passwords: 535 5.7.8 each, each late by about 1 s, then 421 4.7.0 and
      the connection closes.
  inbound_client.py HOST PORT CAFILE NAME auth-flood USER N PROBE_HOST PROBE_PORT
      N clients over STARTTLS send wrong passwords for USER together (three rounds, as
      above) while a probe client on PROBE_HOST:PROBE_PORT (plaintext) alternates EHLO
      and NOOP: every probe reply must come within PROBE_MAX_S, i.e. the password checks
      do not hold up the event loop (they run on the verifier's thread).

Prints what it saw; exits 0 when every expectation held, 1 otherwise. Every socket
operation has a timeout.
"""
import base64
import socket
import ssl
import sys
import threading
import time

TIMEOUT = 20
# A probe reply later than this means the event loop stalled (about 0.1 s of yescrypt
# per wrong password, N of them at once, would show as N * 0.1 s: 2.2 s with 20 guessers
# when the hashes ran on the loop). 1 s leaves room for a loaded sanitizer build.
PROBE_MAX_S = 1.0


class Fail(Exception):
    pass


class Conn:
    def __init__(self, host, port, verbose=True):
        self.sock = socket.create_connection((host, port), timeout=TIMEOUT)
        self.buf = b""
        self.verbose = verbose

    def say(self, text):
        if self.verbose:
            print(text)

    def send(self, data):
        self.say("C: %r" % data)
        self.sock.sendall(data)

    def line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise Fail("connection closed while waiting for a reply")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        self.say("S: %s" % line.decode("ascii", "replace"))
        return line.decode("ascii", "replace")

    def reply(self):
        lines = [self.line()]
        while len(lines[-1]) > 3 and lines[-1][3] == "-":
            lines.append(self.line())
        return lines

    def starttls(self, cafile, name):
        ctx = ssl.create_default_context(cafile=cafile)
        self.sock = ctx.wrap_socket(self.sock, server_hostname=name)
        self.say("TLS: %s %s" % (self.sock.version(), self.sock.cipher()[0]))


def expect(lines, prefix):
    if not lines[-1].startswith(prefix):
        raise Fail("expected %r, got %r" % (prefix, lines))
    return lines


def keywords(lines):
    return [l[4:].split(" ")[0].upper() for l in lines[1:]]


def plaintext_auth(c, cafile, name):
    expect(c.reply(), "220 ")
    c.send(b"EHLO client.test\r\n")
    kw = keywords(expect(c.reply(), "250 "))
    if "STARTTLS" not in kw or "AUTH" in kw:
        raise Fail("plaintext EHLO keywords %r: want STARTTLS and no AUTH" % kw)
    c.send(b"AUTH PLAIN " + base64.b64encode(b"\0alice\0whatever") + b"\r\n")
    expect(c.reply(), "538 5.7.11 ")
    c.send(b"QUIT\r\n")
    expect(c.reply(), "221 ")


def starttls_injection(c, cafile, name):
    expect(c.reply(), "220 ")
    c.send(b"EHLO client.test\r\n")
    expect(c.reply(), "250 ")
    # One write: the RSET arrives in plaintext after STARTTLS, before the handshake.
    c.send(b"STARTTLS\r\nRSET\r\n")
    expect(c.reply(), "220 ")
    if c.buf:
        raise Fail("data after the 220 to STARTTLS: %r" % c.buf)
    c.starttls(cafile, name)
    c.send(b"EHLO client.test\r\n")
    lines = c.reply()
    if lines[0].startswith("250 2.0.0") or not lines[0].startswith("250-"):
        raise Fail("first reply over TLS is %r: the plaintext RSET was executed" % lines)
    kw = keywords(expect(lines, "250 "))
    if "AUTH" not in kw or "STARTTLS" in kw:
        raise Fail("EHLO keywords over TLS %r: want AUTH and no STARTTLS" % kw)
    c.send(b"QUIT\r\n")
    expect(c.reply(), "221 ")


def auth_failures(c, cafile, name, user):
    expect(c.reply(), "220 ")
    c.send(b"EHLO client.test\r\n")
    expect(c.reply(), "250 ")
    c.send(b"STARTTLS\r\n")
    expect(c.reply(), "220 ")
    c.starttls(cafile, name)
    c.send(b"EHLO client.test\r\n")
    expect(c.reply(), "250 ")
    for i in range(3):
        t0 = time.monotonic()
        c.send(b"AUTH PLAIN " + base64.b64encode(b"\0" + user.encode() + b"\0wrong" +
                                                 str(i).encode()) + b"\r\n")
        expect(c.reply(), "535 5.7.8 ")
        took = time.monotonic() - t0
        print("535 after %.2f s" % took)
        if took < 0.9:
            raise Fail("535 came after %.2f s, expected a delay of about 1 s" % took)
    expect(c.reply(), "421 4.7.0 ")
    c.sock.settimeout(TIMEOUT)
    try:
        rest = c.sock.recv(4096)
    except (ConnectionResetError, ssl.SSLError):
        rest = b""
    if rest:
        raise Fail("data after the 421: %r" % rest)


def flood_guesser(host, port, cafile, name, user, i, ready, errors):
    try:
        c = Conn(host, port, verbose=False)
        expect(c.reply(), "220 ")
        c.send(b"EHLO guesser%d.test\r\n" % i)
        expect(c.reply(), "250 ")
        c.send(b"STARTTLS\r\n")
        expect(c.reply(), "220 ")
        c.starttls(cafile, name)
        c.send(b"EHLO guesser%d.test\r\n" % i)
        expect(c.reply(), "250 ")
        ready.wait(TIMEOUT)
        for r in range(3):
            c.send(b"AUTH PLAIN " + base64.b64encode(
                b"\0" + user.encode() + b"\0guess-%d-%d" % (i, r)) + b"\r\n")
            expect(c.reply(), "535 5.7.8 ")
        expect(c.reply(), "421 4.7.0 ")
    except (Fail, OSError, threading.BrokenBarrierError) as e:
        errors.append("guesser %d: %s" % (i, e))


def auth_flood(c, cafile, name, user, n, host, port):
    """c is the probe's connection; the guessers make their own."""
    n = int(n)
    ready = threading.Barrier(n + 1)
    errors = []
    guessers = [threading.Thread(target=flood_guesser,
                                 args=(host, port, cafile, name, user, i, ready, errors))
                for i in range(n)]
    for g in guessers:
        g.start()
    c.verbose = False
    expect(c.reply(), "220 ")
    c.send(b"EHLO probe.test\r\n")
    expect(c.reply(), "250 ")
    ready.wait(TIMEOUT)
    t_start = time.monotonic()
    worst, probes = 0.0, 0
    # Bounded: at most 2000 probes and 60 s, ending once every guesser is done.
    while probes < 2000 and time.monotonic() - t_start < 60:
        cmd = b"NOOP\r\n" if probes % 2 else b"EHLO probe.test\r\n"
        t0 = time.monotonic()
        c.send(cmd)
        expect(c.reply(), "250")
        took = time.monotonic() - t0
        probes += 1
        if took > worst:
            worst = took
        if took > PROBE_MAX_S:
            errors.append("probe %d (%r) answered after %.3f s" % (probes, cmd, took))
        if not any(g.is_alive() for g in guessers):
            break
        time.sleep(0.02)
    for g in guessers:
        g.join(TIMEOUT)
        if g.is_alive():
            errors.append("a guesser did not finish")
    print("%d guessers x 3 wrong passwords in %.2f s; %d probes, slowest %.3f s" %
          (n, time.monotonic() - t_start, probes, worst))
    if probes < 20:
        errors.append("only %d probes during the flood" % probes)
    c.send(b"QUIT\r\n")
    expect(c.reply(), "221 ")
    if errors:
        raise Fail("; ".join(errors[:10]))


def main():
    host, port, cafile, name, what = sys.argv[1:6]
    if what == "auth-flood":
        # The probe's connection; the guessers use HOST PORT.
        c = Conn(sys.argv[8], int(sys.argv[9]))
    else:
        c = Conn(host, int(port))
    try:
        if what == "plaintext-auth":
            plaintext_auth(c, cafile, name)
        elif what == "starttls-injection":
            starttls_injection(c, cafile, name)
        elif what == "auth-failures":
            auth_failures(c, cafile, name, sys.argv[6])
        elif what == "auth-flood":
            auth_flood(c, cafile, name, sys.argv[6], sys.argv[7], host, int(port))
        else:
            raise Fail("unknown check %s" % what)
    except (Fail, OSError) as e:
        print("FAIL: %s" % e)
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
