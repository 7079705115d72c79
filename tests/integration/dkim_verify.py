#!/usr/bin/python3
# dkim_verify.py DUMP ORIGINAL_OUT: the independent check of dualrelay's DKIM signatures.
#
# Reads a smtp-sink dump (X- lines, smtp-sink's three-line Received:, then the message as
# received with LF line ends, then one empty line), restores the message with CR LF, and
# verifies every DKIM-Signature in it with dkimpy (python3-dkim), which fetches the keys
# from DNS: run it inside the relay namespace, where resolv.conf names the lab server.
# Prints one line per signature, "sig N d=DOMAIN s=SELECTOR a=ALGORITHM pass|fail", or
# "unsigned". Writes to ORIGINAL_OUT the message without the DKIM-Signature fields and
# without dualrelay's Received: (what the client submitted, for a byte comparison).
# Exit status: 0 when every signature verifies (or there is none), 1 otherwise.
import logging
import sys

import dkim
import dkim.util

dump, out = sys.argv[1], sys.argv[2]
lines = open(dump, "rb").read().split(b"\n")
if lines and lines[-1] == b"":
    lines.pop()
i = 0
while i < len(lines) and lines[i].startswith(b"X-"):
    i += 1
if not lines[i].startswith(b"Received: from "):
    sys.exit("dump: no smtp-sink Received: header")
i += 3
if not lines or lines[-1] != b"":
    sys.exit("dump: no trailing empty line")
lines.pop()
msg = b"".join(l + b"\r\n" for l in lines[i:])


def fields(data):
    """The header fields as (name, raw bytes) and the offset of the body."""
    res, pos = [], 0
    while pos < len(data) and not data.startswith(b"\r\n", pos):
        end = data.index(b"\r\n", pos)
        while data[end + 2:end + 3] in (b" ", b"\t"):
            end = data.index(b"\r\n", end + 2)
        raw = data[pos:end + 2]
        res.append((raw.split(b":", 1)[0].strip().lower(), raw))
        pos = end + 2
    return res, pos


hdrs, _ = fields(msg)
nsig = 0
while nsig < len(hdrs) and hdrs[nsig][0] == b"dkim-signature":
    nsig += 1
if nsig < len(hdrs) and hdrs[nsig][0] == b"received":
    rest = msg[sum(len(r) for _, r in hdrs[:nsig + 1]):]
else:
    sys.exit("dump: no Received: of the relay after the signatures")
open(out, "wb").write(rest)

ok = True
total = sum(1 for n, _ in hdrs if n == b"dkim-signature")
if total == 0:
    print("unsigned")
log = logging.getLogger("dkim")
logging.basicConfig(stream=sys.stderr, level=logging.INFO)
for idx in range(total):
    d = dkim.DKIM(msg, logger=log)
    try:
        res = d.verify(idx=idx)
    except dkim.DKIMException as e:
        print("dkimpy: %s" % e, file=sys.stderr)
        res = False
    tags = dkim.util.parse_tag_value(
        [r for n, r in hdrs if n == b"dkim-signature"][idx].split(b":", 1)[1])
    print("sig %d d=%s s=%s a=%s %s" % (idx, tags[b"d"].decode(), tags[b"s"].decode(),
                                      tags[b"a"].decode(), "pass" if res else "fail"))
    ok = ok and res
sys.exit(0 if ok else 1)
