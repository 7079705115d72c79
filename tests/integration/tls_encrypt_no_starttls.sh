#!/bin/bash
# tls_encrypt_no_starttls: two smtp-sink receivers, which never offer STARTTLS.  Mail
# routed through a tls = "encrypt" transport is deferred with dsn 4.7.4 ("TLS is
# required, but was not offered"), again at every retry, and its receiver never even
# sees a MAIL FROM (smtp-sink makes its dump file at MAIL: there must be none).  Mail
# through the default policy ("may") to the other one goes in plaintext and its delivery
# line says tls=none.
. "$(dirname "$0")/lab.sh"
. "$(dirname "$0")/lab_family.sh"
. "$(dirname "$0")/lab_tls.sh"

labt_setup
lab_dns_start <<'ZONE'
enc.example. MX 10 mx.enc.example.
mx.enc.example. A 198.51.100.121
plain.example. MX 10 mx.plain.example.
mx.plain.example. A 198.51.100.122
ZONE
lab_sink_start enc 198.51.100.121
lab_sink_start plain 198.51.100.122
lab_conf_write "$LAB_DIR/dualrelay.conf" \
	'transports = { secure = { tls = "encrypt"; }; };' \
	'routes = ( { domain = "enc.example"; transport = "secure"; } );'
lab_daemon_start "$LAB_DIR/dualrelay.conf"

from=alice@client.example.net
enc=bob@enc.example
labf_message "$LAB_DIR/msg.enc" "$from" "$enc" "must be encrypted"
lab_send "$from" "$enc" "$LAB_DIR/msg.enc" || lab_fail "message to $enc not accepted"
qenc=$(lab_re "$LAB_QID")
lab_expect_log "$qenc: to=<$(lab_re "$enc")>, relay=mx\.enc\.example\[198\.51\.100\.121\]:25, family=ipv4, delay=[0-9.]+, dsn=4\.7\.4, status=deferred \(TLS is required, but was not offered by host mx\.enc\.example\[198\.51\.100\.121\]\), tls=none$" \
	15 "deferral for the missing STARTTLS"
lab_log "$(labt_status_line "$LAB_QID" "$enc")"

plain=carol@plain.example
labf_message "$LAB_DIR/msg.plain" "$from" "$plain" "may go in plaintext"
lab_send "$from" "$plain" "$LAB_DIR/msg.plain" || lab_fail "message to $plain not accepted"
qplain=$LAB_QID
lab_expect_sent "$qplain" "$plain" mx.plain.example 198.51.100.122 ipv4 15
line=$(labt_status_line "$qplain" "$plain")
grep -Eq ', tls=none$' <<<"$line" || lab_fail "plaintext delivery not logged as tls=none: $line"
lab_log "$line"
lab_sink_wait plain 1 5 || lab_fail "the plaintext message did not reach its sink"

retries() { [ "$(grep -Ec -- "$qenc: to=<.*dsn=4\.7\.4, status=deferred" "$LAB_LOG")" -ge 3 ]; }
wait_for 15 retries || lab_fail "the encrypt transport did not keep deferring"
! grep -Eq -- "$qenc: to=<.*status=(sent|bounced)" "$LAB_LOG" ||
	lab_fail "the message that needs TLS was sent or bounced"
[ "$(lab_sink_count enc)" -eq 0 ] || lab_fail "the sink without STARTTLS received a message"
n=$(find "$(lab_sink_dir enc)" -type f | wc -l)
[ "$n" -eq 0 ] || lab_fail "the sink without STARTTLS got $n MAIL FROM (dump files)"
grep -Eq 'smtp_client: mx\.enc\.example\[198\.51\.100\.121\]: > EHLO' "$LAB_LOG" ||
	lab_fail "no session with the encrypt receiver at all (the test proves nothing)"
! grep -Eq 'smtp_client: mx\.enc\.example\[198\.51\.100\.121\]: > MAIL' "$LAB_LOG" ||
	lab_fail "MAIL FROM was sent in plaintext to the encrypt receiver"
lab_pass
