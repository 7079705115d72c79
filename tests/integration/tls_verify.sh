#!/bin/bash
# tls_verify: tls = "verify" with the lab CA as tls_ca_file, against two real Postfix
# receivers.  mx.tls.example presents a certificate for its own name: the delivery line
# says tls=TLSv1.3:CIPHER:verified.  mx.wrong.example presents a certificate issued by the
# same CA for another name (wrong.tls.example): the handshake completes, dualrelay refuses
# the certificate before any mail command, defers with dsn 4.7.5 and a reason naming the
# host and "hostname mismatch", and that receiver never sees a MAIL FROM.
. "$(dirname "$0")/lab.sh"
. "$(dirname "$0")/lab_family.sh"
. "$(dirname "$0")/lab_tls.sh"

labt_setup
lab_dns_start <<'ZONE'
ok.example. MX 10 mx.tls.example.
mx.tls.example. A 198.51.100.111
ptr 198.51.100.111 mx.tls.example.
wrong.example. MX 10 mx.wrong.example.
mx.wrong.example. A 198.51.100.112
ptr 198.51.100.112 mx.wrong.example.
ptr 192.0.2.1 relay.example.net.
relay.example.net. A 192.0.2.1
ZONE
labf_net_resolver
labt_ca
labt_cert mx.tls.example
labt_cert wrong.tls.example
labt_postfix_rx good mx.tls.example mx.tls.example ok.example 198.51.100.111 </dev/null
labt_postfix_rx bad mx.wrong.example wrong.tls.example wrong.example 198.51.100.112 </dev/null
lab_conf_write "$LAB_DIR/dualrelay.conf" \
	"transports = { checked = { tls = \"verify\"; tls_ca_file = \"$LAB_DIR/pki/ca.pem\"; tls_min_version = \"TLSv1.2\"; }; };" \
	'routes = ( { domain = "ok.example"; transport = "checked"; },' \
	'           { domain = "wrong.example"; transport = "checked"; } );'
lab_daemon_start "$LAB_DIR/dualrelay.conf"

from=alice@client.example.net
good=bob@ok.example
labf_message "$LAB_DIR/msg.good" "$from" "$good" "tls verify ok"
lab_send "$from" "$good" "$LAB_DIR/msg.good" || lab_fail "message to $good not accepted"
qgood=$LAB_QID
lab_expect_sent "$qgood" "$good" mx.tls.example 198.51.100.111 ipv4 15
line=$(labt_status_line "$qgood" "$good")
grep -Eq ', tls=TLSv1\.3:TLS_[A-Z0-9_]+:verified$' <<<"$line" ||
	lab_fail "delivery line does not say verified: $line"
lab_log "$line"
wait_for 10 labt_pflog good 'status=sent \(delivered to maildir\)' >/dev/null ||
	lab_fail "the good receiver did not deliver the message"
grep -q 'with ESMTPS' "$(labt_mailbox_files good)" ||
	lab_fail "the good receiver's Received: header does not say ESMTPS"

bad=carol@wrong.example
labf_message "$LAB_DIR/msg.bad" "$from" "$bad" "tls verify wrong name"
lab_send "$from" "$bad" "$LAB_DIR/msg.bad" || lab_fail "message to $bad not accepted"
qbad=$(lab_re "$LAB_QID")
lab_expect_log "$qbad: to=<$(lab_re "$bad")>, relay=mx\.wrong\.example\[198\.51\.100\.112\]:25, family=ipv4, delay=[0-9.]+, dsn=4\.7\.5, status=deferred \(server certificate not verified: host mx\.wrong\.example\[198\.51\.100\.112\]: hostname mismatch\), tls=TLSv1\.3:TLS_[A-Z0-9_]+:unverified$" \
	15 "deferral of the wrong-name certificate with the reason"
lab_log "$(labt_status_line "$LAB_QID" "$bad")"
# Retries (every 1-2 s) must keep refusing; the receiver must never get a transaction.
retries() { [ "$(grep -Ec -- "$qbad: to=<.*dsn=4\.7\.5, status=deferred" "$LAB_LOG")" -ge 2 ]; }
wait_for 10 retries || lab_fail "no second deferral of $LAB_QID"
! grep -Eq -- "$qbad: to=<.*status=(sent|bounced)" "$LAB_LOG" ||
	lab_fail "the message to the wrong-name host was sent or bounced"
labt_pflog bad 'TLS connection established from relay\.example\.net' >/dev/null ||
	lab_fail "the wrong-name receiver saw no TLS connection (the test proves nothing)"
! labt_pflog bad ': client=relay\.example\.net' >/dev/null ||
	lab_fail "the wrong-name receiver got a MAIL FROM"
[ "$(labt_mailbox_count bad)" -eq 0 ] || lab_fail "the wrong-name receiver holds mail"
lab_pass
