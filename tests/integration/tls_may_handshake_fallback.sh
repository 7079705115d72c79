#!/bin/bash
# tls_may_handshake_fallback: a real Postfix receiver offers STARTTLS but can only speak
# TLS 1.0/1.1 (smtpd_tls_protocols), which dualrelay (tls_min_version TLSv1.2) refuses, so
# every handshake fails.  With tls = "may" dualrelay must log the failed handshake, connect
# again to the same address, deliver in plaintext without STARTTLS, and log the delivery
# with tls=none; the receiver gets the message once, with "with ESMTP" (not ESMTPS).  The
# same receiver behind tls = "encrypt" must get nothing: deferred, never plaintext.
. "$(dirname "$0")/lab.sh"
. "$(dirname "$0")/lab_family.sh"
. "$(dirname "$0")/lab_tls.sh"

labt_setup
lab_dns_start <<'ZONE'
old.example. MX 10 mx.old.example.
oldenc.example. MX 10 mx.old.example.
mx.old.example. A 198.51.100.131
ptr 198.51.100.131 mx.old.example.
ptr 192.0.2.1 relay.example.net.
relay.example.net. A 192.0.2.1
ZONE
labf_net_resolver
labt_ca
labt_cert mx.old.example
# An old server: TLS 1.0 and 1.1 only.  Debian's OpenSSL configuration forbids those
# (MinProtocol TLSv1.2), and Postfix would then refuse STARTTLS with 454 instead of
# failing the handshake: give this Postfix its own OpenSSL configuration.
cat >"$LAB_DIR/openssl-old.cnf" <<'EOF2'
openssl_conf = default_conf
[default_conf]
ssl_conf = ssl_sect
[ssl_sect]
system_default = system_default_sect
[system_default_sect]
MinProtocol = TLSv1
CipherString = DEFAULT:@SECLEVEL=0
EOF2
labt_postfix_rx rx mx.old.example mx.old.example "old.example oldenc.example" 198.51.100.131 <<EOF2
import_environment = MAIL_CONFIG MAIL_DEBUG MAIL_LOGTAG TZ LANG=C OPENSSL_CONF=$LAB_DIR/openssl-old.cnf
smtpd_tls_protocols = >=TLSv1, <=TLSv1.1
tls_medium_cipherlist = DEFAULT:@SECLEVEL=0
EOF2
lab_conf_write "$LAB_DIR/dualrelay.conf" \
	'transports = { secure = { tls = "encrypt"; }; };' \
	'routes = ( { domain = "oldenc.example"; transport = "secure"; } );'
lab_daemon_start "$LAB_DIR/dualrelay.conf"

from=alice@client.example.net
rcpt=bob@old.example
labf_message "$LAB_DIR/msg" "$from" "$rcpt" "handshake fails"
lab_send "$from" "$rcpt" "$LAB_DIR/msg" || lab_fail "message not accepted"
qid=$LAB_QID
q=$(lab_re "$qid")
lab_expect_sent "$qid" "$rcpt" mx.old.example 198.51.100.131 ipv4 15
line=$(labt_status_line "$qid" "$rcpt")
grep -Eq ', tls=none$' <<<"$line" || lab_fail "plaintext delivery not logged as tls=none: $line"
lab_log "$line"
lab_log_has "$q: TLS handshake with mx\.old\.example\[198\.51\.100\.131\] failed: " ||
	lab_fail "the failed handshake was not logged"
lab_log_has "$q: TLS failed with mx\.old\.example\[198\.51\.100\.131\]:25 \(tls = may\): retrying in plaintext on a new connection" ||
	lab_fail "the plaintext retry was not logged"
lab_log "$(grep -E -- "$q: TLS handshake" "$LAB_LOG" | tail -n1)"
n=$(grep -Ec -- "$q: to=<.*status=" "$LAB_LOG")
[ "$n" -eq 1 ] || lab_fail "$n status lines for $qid, expected 1 (sent)"

wait_for 10 labt_pflog rx 'status=sent \(delivered to maildir\)' >/dev/null ||
	lab_fail "the receiver did not deliver the message"
labt_pflog rx 'SSL_accept error from relay\.example\.net' >/dev/null ||
	lab_fail "the receiver logged no failed handshake (the test proves nothing)"
sleep 0.5
[ "$(labt_mailbox_count rx)" -eq 1 ] || lab_fail "the receiver holds $(labt_mailbox_count rx) messages, expected 1"
f=$(labt_mailbox_files rx)
grep -q 'by mx\.old\.example (Postfix) with ESMTP id' "$f" ||
	lab_fail "the message did not arrive in plaintext ESMTP: $(grep -A4 -m1 '^Received:' "$f")"

enc=carol@oldenc.example
labf_message "$LAB_DIR/msg.enc" "$from" "$enc" "must not go in plaintext"
lab_send "$from" "$enc" "$LAB_DIR/msg.enc" || lab_fail "message to $enc not accepted"
qenc=$(lab_re "$LAB_QID")
lab_expect_log "$qenc: to=<$(lab_re "$enc")>, relay=mx\.old\.example\[198\.51\.100\.131\]:25, family=ipv4, delay=[0-9.]+, dsn=4\.7\.5, status=deferred \(TLS handshake with mx\.old\.example\[198\.51\.100\.131\] failed: .*\), tls=none$" \
	15 "deferral of the encrypt transport after the failed handshake"
lab_log "$(labt_status_line "$LAB_QID" "$enc")"
! lab_log_has "$qenc: TLS failed with .*retrying in plaintext" ||
	lab_fail "the encrypt transport retried in plaintext"
sleep 2
[ "$(labt_mailbox_count rx)" -eq 1 ] || lab_fail "the encrypt transport's message reached the receiver"
# Both failed handshakes (may, then encrypt) are counted, per family (stats and metrics).
stats=$(lab_relay "$DR_BUILDDIR/src/dualrelayctl" -c "$LAB_DIR/dualrelay.conf" stats 2>&1) ||
	lab_fail "dualrelayctl stats: $stats"
n=$(echo "$stats" | sed -n 's/^ipv4 .* tls_failed \([0-9]*\).*/\1/p')
[ "${n:-0}" -ge 2 ] || lab_fail "ipv4 tls_failed is ${n:-missing}, expected 2 or more: $stats"
lab_pass
