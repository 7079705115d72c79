#!/bin/bash
# tls_may: the default policy (tls = "may") against a real Postfix receiver that offers
# STARTTLS with a certificate from the lab's own CA, which the system store does not
# know.  dualrelay must use TLS (STARTTLS, then EHLO again), deliver, and say so in its
# delivery line: tls=TLSv1.3:CIPHER:unverified (opportunistic TLS does not need a
# trusted certificate).  Postfix's side must agree: its log shows a TLS connection from
# the relay, and the Received: header it adds says "with ESMTPS" and TLSv1.3.  A second
# message reuses the idle TLS session and its line still reports that session's TLS.
. "$(dirname "$0")/lab.sh"
. "$(dirname "$0")/lab_family.sh"
. "$(dirname "$0")/lab_tls.sh"

labt_setup
lab_dns_start <<'ZONE'
tls.example. MX 10 mx.tls.example.
mx.tls.example. A 198.51.100.101
ptr 198.51.100.101 mx.tls.example.
ptr 192.0.2.1 relay.example.net.
relay.example.net. A 192.0.2.1
ZONE
labf_net_resolver
labt_ca
labt_cert mx.tls.example
labt_postfix_rx rx mx.tls.example mx.tls.example tls.example 198.51.100.101 </dev/null
lab_conf_write "$LAB_DIR/dualrelay.conf"
lab_daemon_start "$LAB_DIR/dualrelay.conf"

from=alice@client.example.net
rcpt=bob@tls.example
labf_message "$LAB_DIR/msg" "$from" "$rcpt" "tls may"
lab_send "$from" "$rcpt" "$LAB_DIR/msg" || lab_fail "message not accepted"
qid=$LAB_QID
lab_expect_sent "$qid" "$rcpt" mx.tls.example 198.51.100.101 ipv4 15
line=$(labt_status_line "$qid" "$rcpt")
grep -Eq ', tls=TLSv1\.3:TLS_[A-Z0-9_]+:unverified$' <<<"$line" ||
	lab_fail "delivery line does not say TLSv1.3, the cipher and unverified: $line"
lab_log "$line"
# A second message at once reuses the idle TLS session (RSET over TLS): its line must
# still carry the session's TLS.
rcpt2=carol@tls.example
labf_message "$LAB_DIR/msg2" "$from" "$rcpt2" "tls may again"
lab_send "$from" "$rcpt2" "$LAB_DIR/msg2" || lab_fail "second message not accepted"
lab_expect_sent "$LAB_QID" "$rcpt2" mx.tls.example 198.51.100.101 ipv4 15
line2=$(labt_status_line "$LAB_QID" "$rcpt2")
grep -Eq ', tls=TLSv1\.3:TLS_[A-Z0-9_]+:unverified$' <<<"$line2" ||
	lab_fail "the second delivery line lost the TLS details: $line2"
lab_log_has 'smtp_client: mx\.tls\.example\[198\.51\.100\.101\]: reusing the connection' ||
	lab_fail "the second message did not reuse the TLS session"
[ "$(grep -c '> STARTTLS' "$LAB_LOG")" -eq 1 ] || lab_fail "more than one STARTTLS for two messages"
# The client side of the dialogue: STARTTLS, then a second EHLO over TLS.
lab_log_has 'smtp_client: mx\.tls\.example\[198\.51\.100\.101\]: > STARTTLS' ||
	lab_fail "no STARTTLS in the session"
lab_log_has 'smtp_client: mx\.tls\.example\[198\.51\.100\.101\]: TLS established: TLSv1\.3:' ||
	lab_fail "no TLS session logged"

# Postfix: a TLS connection from us, and the message in its mailbox with ESMTPS.
wait_for 10 labt_pflog rx 'status=sent \(delivered to maildir\)' >/dev/null ||
	lab_fail "the Postfix receiver did not deliver the message"
labt_pflog rx 'TLS connection established from relay\.example\.net\[192\.0\.2\.1\]: TLSv1\.3' >/dev/null ||
	lab_fail "Postfix logged no TLSv1.3 connection from the relay"
count2() { [ "$(labt_mailbox_count rx)" -eq 2 ]; }
wait_for 10 count2 || lab_fail "the receiver holds $(labt_mailbox_count rx) messages, expected 2"
f=$(grep -l '^Subject: tls may$' $(labt_mailbox_files rx))
[ -n "$f" ] || lab_fail "the first message is not in the receiver's mailbox"
received=$(python3 - "$f" <<'PY'
import sys
lines = open(sys.argv[1], "rb").read().decode("utf-8", "replace").split("\n")
out = []
for l in lines:
    if out and l[:1] in (" ", "\t"):
        out[-1] += " " + l.strip()
    elif l.startswith("Received:"):
        out.append(l)
    elif out:
        break
print(out[0] if out else "")
PY
)
grep -q 'using TLSv1\.3 with cipher' <<<"$received" ||
	lab_fail "Postfix's Received: header does not say TLSv1.3: $received"
grep -q 'by mx\.tls\.example (Postfix) with ESMTPS id' <<<"$received" ||
	lab_fail "Postfix's Received: header does not say ESMTPS: $received"
lab_log "receiver: $received"
# The idle session ends (2 s later) with a QUIT written over TLS, which Postfix counts.
wait_for 10 labt_pflog rx 'disconnect from relay\.example\.net\[192\.0\.2\.1\] ehlo=2 starttls=1 mail=2 rcpt=2 data=2 rset=1 quit=1' >/dev/null ||
	lab_fail "Postfix did not see one session with STARTTLS, two transactions and QUIT: $(labt_pflog rx 'disconnect from')"
lab_pass
