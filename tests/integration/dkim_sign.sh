#!/bin/bash
# dkim_sign: dualrelay signs at acceptance and an independent verifier (python3-dkim,
# reading the keys from the lab DNS) accepts what reaches the MX: ed25519-sha256 alone,
# rsa-sha256 alone, both at once, a From: subdomain signed with its parent's keys, on a
# message with folded headers, runs of white space, trailing white space, 8-bit bytes,
# 998-octet lines, dot lines and empty lines at the end. The message itself arrives
# byte-exact behind the signatures and our Received:. A From: domain without a key
# arrives unsigned and the log says so; a message queued while the MX is down carries its
# signatures across a restart of the daemon (they are in the queue file).
. "$(dirname "$0")/lab.sh"

VERIFY="$DR_SRCDIR/tests/integration/dkim_verify.py"

lab_setup
lab_require openssl /usr/bin/python3
/usr/bin/python3 -c 'import dkim, dns.resolver' 2>/dev/null ||
	lab_fail "python3-dkim (with python3-dnspython) is not installed (run contrib/install-deps.sh)"

# Keys, made here with the openssl CLI; readable by their owner only, as -n demands.
keys="$LAB_DIR/keys"
mkdir -m 0700 "$keys"
for d in both ed; do
	openssl genpkey -algorithm ed25519 -out "$keys/$d.ed.pem" 2>/dev/null ||
		lab_fail "openssl genpkey ed25519"
done
for d in both rsa; do
	openssl genpkey -algorithm rsa -pkeyopt rsa_keygen_bits:2048 -out "$keys/$d.rsa.pem" \
		2>/dev/null || lab_fail "openssl genpkey rsa"
done
chmod 600 "$keys"/*.pem

lab_conf_write "$LAB_DIR/dualrelay.conf" "dkim = (
  { domain = \"both.example\"; selector = \"s2026\"; key_file = \"$keys/both.ed.pem\";
    algorithm = \"ed25519-sha256\"; },
  { domain = \"both.example\"; selector = \"r2026\"; key_file = \"$keys/both.rsa.pem\";
    algorithm = \"rsa-sha256\"; },
  { domain = \"ed.example\"; selector = \"e1\"; key_file = \"$keys/ed.ed.pem\";
    algorithm = \"ed25519-sha256\"; },
  { domain = \"rsa.example\"; selector = \"r1\"; key_file = \"$keys/rsa.rsa.pem\";
    algorithm = \"rsa-sha256\"; }
);"

# The records to publish, as dualrelayd -k prints them, made into unbound local-data
# lines: unquoted TXT strings of at most 255 bytes, ';' escaped, spaces dropped.
"$LAB_DAEMON" -k -c "$LAB_DIR/dualrelay.conf" >"$LAB_DIR/records" ||
	lab_fail "dualrelayd -k failed: $(cat "$LAB_DIR/records")"
[ "$(grep -c '\._domainkey\..*\. IN TXT "v=DKIM1; k=' "$LAB_DIR/records")" -eq 4 ] ||
	lab_fail "dualrelayd -k did not print 4 records: $(cat "$LAB_DIR/records")"
python3 - "$LAB_DIR/records" >"$LAB_DIR/zone.txt" <<'EOF'
import re, sys
for line in open(sys.argv[1]):
    m = re.match(r'^(\S+) IN TXT (.*)$', line.strip())
    if not m:
        continue
    value = "".join(re.findall(r'"([^"]*)"', m.group(2))).replace(" ", "")
    value = value.replace(";", "\\;")
    chunks = []
    while value:
        n = 255
        if value[:n].endswith("\\"):
            n -= 1
        chunks.append(value[:n])
        value = value[n:]
    print(m.group(1), "TXT", " ".join(chunks))
EOF
{
	cat <<'ZONE'
one.example. MX 10 mx.one.example.
mx.one.example. A 198.51.100.11
ptr 198.51.100.11 mx.one.example.
ZONE
	cat "$LAB_DIR/zone.txt"
} >"$LAB_DIR/zone.all"
lab_dns_start <"$LAB_DIR/zone.all"
lab_sink_start one 198.51.100.11
lab_daemon_start "$LAB_DIR/dualrelay.conf"

# make_message FILE FROM_ADDRESS TAG: the hard message.
make_message() {
	python3 - "$@" <<'EOF'
import sys
path, sender, tag = sys.argv[1:4]
lines = [
    b'From: "Sender, Test" <' + sender.encode() + b'>',
    b"To: bob@one.example,",
    b"\t carol@one.example   ",
    b"Subject: a folded",
    b"   subject\twith   runs  of white space " + tag.encode() + b"  \t",
    b"Date: Thu, 01 Jan 2026 00:00:00 +0000",
    b"Message-ID: <" + tag.encode() + b"@client.example.net>",
    b"MIME-Version: 1.0",
    b"Content-Type: text/plain;",
    b"    charset=utf-8",
    b"Content-Transfer-Encoding: 8bit",
    b"X-Unsigned:   trailing tabs\t\t",
    b"",
    b"First line of the body.",
    b".",
    b"..two leading dots",
    b"UTF-8: gr\xc3\xbc\xc3\x9fe, \xe2\x82\xac; Latin-1: caf\xe9; raw: \x80\xfe\xff",
    b"  leading and   inner   runs\tof white space  ",
    b"trailing white space   \t",
    b"X" * 998,
    b"." + b"Y" * 997,
    b"",
    b"\t ",
    b"Last line before empty lines.",
    b"",
    b"",
    b" ",
]
open(path, "wb").write(b"".join(l + b"\r\n" for l in lines))
EOF
}

# send_one TAG FROM: submit a message from FROM to bob@one.example; sets QID.
send_one() {
	make_message "$LAB_DIR/msg.$1" "$2" "$1"
	lab_send "$2" bob@one.example "$LAB_DIR/msg.$1" ||
		lab_fail "$1: message not accepted"
	QID=$LAB_QID
	eval "QID_$1=$QID"
}

# verify_dump TAG EXPECTED: the sink's dump of message TAG verifies, with exactly the
# signatures in EXPECTED ("d=... s=... a=..." lines, in order), and carries the message
# byte-exact behind them.
verify_dump() {
	local tag=$1 expected=$2 dump out
	dump=$(grep -l "<$tag@client.example.net>" "$(lab_sink_dir one)"/* 2>/dev/null | head -n1)
	[ -n "$dump" ] || lab_fail "$tag: no dump in the sink"
	out=$(lab_relay /usr/bin/python3 "$VERIFY" "$dump" "$LAB_DIR/got.$tag" 2>"$LAB_DIR/verify.$tag.err")
	local rc=$?
	lab_log "$tag: $(echo "$out" | tr '\n' ';')"
	[ "$rc" -eq 0 ] || lab_fail "$tag: verification failed: $out $(cat "$LAB_DIR/verify.$tag.err")"
	[ "$out" = "$expected" ] || lab_fail "$tag: got signatures '$out', expected '$expected'"
	lab_compare_bytes "$LAB_DIR/msg.$tag" "$LAB_DIR/got.$tag" "$tag"
}

send_one both alice@both.example
lab_expect_log "$(lab_re "$QID"): dkim=signed d=both\.example s=s2026 a=ed25519-sha256, d=both\.example s=r2026 a=rsa-sha256" \
	5 "both: signing log line"
send_one ed ed@ed.example
lab_expect_log "$(lab_re "$QID"): dkim=signed d=ed\.example s=e1 a=ed25519-sha256$" 5 "ed: log"
send_one rsa rsa@rsa.example
lab_expect_log "$(lab_re "$QID"): dkim=signed d=rsa\.example s=r1 a=rsa-sha256$" 5 "rsa: log"
send_one sub news@lists.sub.both.example
send_one nokey someone@nokey.example
lab_expect_log "$(lab_re "$QID"): no DKIM key for nokey\.example: not signed" 5 "nokey: log"

lab_sink_wait one 5 20 || lab_fail "the sink did not get the 5 messages"
verify_dump both "sig 0 d=both.example s=s2026 a=ed25519-sha256 pass
sig 1 d=both.example s=r2026 a=rsa-sha256 pass"
verify_dump ed "sig 0 d=ed.example s=e1 a=ed25519-sha256 pass"
verify_dump rsa "sig 0 d=rsa.example s=r1 a=rsa-sha256 pass"
verify_dump sub "sig 0 d=both.example s=s2026 a=ed25519-sha256 pass
sig 1 d=both.example s=r2026 a=rsa-sha256 pass"
verify_dump nokey "unsigned"

# The verifier must be able to fail: a changed body byte in a signed dump does not verify.
dump=$(grep -l "<both@client.example.net>" "$(lab_sink_dir one)"/* | head -n1)
sed 's/First line of the body/First line of the b0dy/' "$dump" >"$LAB_DIR/tampered"
if lab_relay /usr/bin/python3 "$VERIFY" "$LAB_DIR/tampered" "$LAB_DIR/got.tampered" \
	>"$LAB_DIR/tampered.out" 2>&1; then
	lab_fail "a tampered message verified: $(cat "$LAB_DIR/tampered.out")"
fi

# Queued while the MX is down, delivered after a restart: the signatures come back from
# the queue file.
lab_sink_stop one
send_one queued alice@both.example
lab_expect_log "$(lab_re "$QID"): to=<bob@one\.example>.*status=deferred" 15 "queued: deferral"
lab_daemon_stop
lab_sink_start one 198.51.100.11
lab_daemon_start "$LAB_DIR/dualrelay.conf"
lab_expect_log "$(lab_re "$QID"): to=<bob@one\.example>.*status=sent" 20 "queued: delivery after restart"
verify_dump queued "sig 0 d=both.example s=s2026 a=ed25519-sha256 pass
sig 1 d=both.example s=r2026 a=rsa-sha256 pass"

# dkimverify, the command-line tool, agrees (it checks the first signature).
if command -v dkimverify >/dev/null 2>&1; then
	dump=$(grep -l "<rsa@client.example.net>" "$(lab_sink_dir one)"/* | head -n1)
	python3 - "$dump" "$LAB_DIR/rsa.eml" <<'EOF'
import sys
lines = open(sys.argv[1], "rb").read().split(b"\n")[:-2]
i = 0
while lines[i].startswith(b"X-"):
    i += 1
open(sys.argv[2], "wb").write(b"".join(l + b"\r\n" for l in lines[i + 3:]))
EOF
	lab_relay dkimverify <"$LAB_DIR/rsa.eml" >"$LAB_DIR/dkimverify.out" 2>&1 ||
		lab_fail "dkimverify: $(cat "$LAB_DIR/dkimverify.out")"
	grep -q "signature ok" "$LAB_DIR/dkimverify.out" ||
		lab_fail "dkimverify: $(cat "$LAB_DIR/dkimverify.out")"
fi
lab_pass
