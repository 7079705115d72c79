#!/bin/bash
# tls_smarthost_auth: smarthost AUTH against a real Postfix that requires it (Cyrus SASL
# with a sasldb, AUTH only over TLS, smtpd_relay_restrictions = permit_sasl_authenticated,
# reject).  Two relay transports point at it with tls = "verify" (the certificate must
# match the smarthost's name, smarthost.example): one with the right password in a
# one-line auth_file, one with a wrong password in a two-line auth_file.
#   - dualrelayd -n warns while an auth_file is readable by others, and not after chmod 600;
#   - the right password: relayed, the smarthost logs sasl_method=PLAIN and its Received:
#     header says ESMTPSA;
#   - the wrong password: the smarthost's 535 bounces the recipient at once (dsn 5.7.8,
#     with the reply), nothing reaches its mailbox;
#   - neither password appears in dualrelayd's log (debug level), in clear or in base64.
. "$(dirname "$0")/lab.sh"
. "$(dirname "$0")/lab_family.sh"
. "$(dirname "$0")/lab_tls.sh"

labt_setup
lab_require saslpasswd2
lab_dns_start <<'ZONE'
smarthost.example. A 198.51.100.141
ptr 198.51.100.141 smarthost.example.
ptr 192.0.2.1 relay.example.net.
relay.example.net. A 192.0.2.1
ZONE
labf_net_resolver
labt_ca
labt_cert smarthost.example

user=relayuser
good_pw='Lab-Pa55word&right'
bad_pw='Lab-Pa55word&wrong'
pf=$(labf_postfix_dir hub)
mkdir -p "$pf/sasl"
cat >"$pf/sasl/smtpd.conf" <<EOF
pwcheck_method: auxprop
auxprop_plugin: sasldb
mech_list: PLAIN LOGIN
sasldb_path: $pf/sasl/sasldb2
EOF
printf '%s' "$good_pw" | saslpasswd2 -p -c -f "$pf/sasl/sasldb2" -u smarthost.example "$user" ||
	lab_fail "saslpasswd2 failed"
chown postfix "$pf/sasl/sasldb2" && chmod 0600 "$pf/sasl/sasldb2" || lab_fail "chown sasldb2"
labt_postfix_rx hub smarthost.example smarthost.example "auth-ok.example auth-bad.example" \
	198.51.100.141 <<EOF
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = cyrus
smtpd_sasl_path = smtpd
cyrus_sasl_config_path = $pf/sasl
smtpd_sasl_local_domain = smarthost.example
smtpd_sasl_security_options = noanonymous
smtpd_tls_auth_only = yes
smtpd_relay_restrictions = permit_sasl_authenticated, reject
EOF

# One line "user password" for the right one, two lines for the wrong one.
printf '%s %s\n' "$user" "$good_pw" >"$LAB_DIR/auth.ok"
printf '%s\n%s\n' "$user" "$bad_pw" >"$LAB_DIR/auth.bad"
chmod 0644 "$LAB_DIR/auth.ok"
chmod 0600 "$LAB_DIR/auth.bad"
lab_conf_write "$LAB_DIR/dualrelay.conf" \
	"transports = {" \
	"  smart_ok = { relay = \"[smarthost.example]\"; tls = \"verify\"; tls_ca_file = \"$LAB_DIR/pki/ca.pem\"; auth_file = \"$LAB_DIR/auth.ok\"; };" \
	"  smart_bad = { relay = \"[smarthost.example]\"; tls = \"verify\"; tls_ca_file = \"$LAB_DIR/pki/ca.pem\"; auth_file = \"$LAB_DIR/auth.bad\"; };" \
	"};" \
	'routes = ( { domain = "auth-ok.example"; transport = "smart_ok"; },' \
	'           { domain = "auth-bad.example"; transport = "smart_bad"; } );'

# -n: a warning while the file is readable by others, none once it is not.
lab_relay "$LAB_DAEMON" -n -c "$LAB_DIR/dualrelay.conf" >"$LAB_DIR/check.out" 2>&1 ||
	lab_fail "dualrelayd -n failed: $(cat "$LAB_DIR/check.out")"
grep -Eq "^warning: .*transport smart_ok: auth_file $(lab_re "$LAB_DIR/auth.ok") is readable by everyone \(mode 0644\)" "$LAB_DIR/check.out" ||
	lab_fail "dualrelayd -n did not warn about the readable auth_file: $(cat "$LAB_DIR/check.out")"
! grep -q 'auth\.bad' "$LAB_DIR/check.out" || lab_fail "-n warned about the 0600 auth_file"
chmod 0600 "$LAB_DIR/auth.ok"
lab_relay "$LAB_DAEMON" -n -c "$LAB_DIR/dualrelay.conf" >"$LAB_DIR/check.out" 2>&1 ||
	lab_fail "dualrelayd -n failed: $(cat "$LAB_DIR/check.out")"
! grep -q '^warning:' "$LAB_DIR/check.out" ||
	lab_fail "dualrelayd -n still warns: $(cat "$LAB_DIR/check.out")"

lab_daemon_start "$LAB_DIR/dualrelay.conf"
from=alice@client.example.net

ok=bob@auth-ok.example
labf_message "$LAB_DIR/msg.ok" "$from" "$ok" "relayed with auth"
lab_send "$from" "$ok" "$LAB_DIR/msg.ok" || lab_fail "message to $ok not accepted"
qok=$(lab_re "$LAB_QID")
lab_expect_log "$qok: to=<$(lab_re "$ok")>, relay=smarthost\.example\[198\.51\.100\.141\]:25, family=ipv4, delay=[0-9.]+, dsn=2\.[0-9.]+, status=sent \(250 .*\), tls=TLSv1\.3:TLS_[A-Z0-9_]+:verified$" \
	15 "delivery through the smarthost with AUTH over verified TLS"
lab_log "$(labt_status_line "$LAB_QID" "$ok")"
lab_log_has 'smtp_client: smarthost\.example\[198\.51\.100\.141\]: > AUTH PLAIN \(credentials not logged\)' ||
	lab_fail "no AUTH PLAIN in the session"
wait_for 10 labt_pflog hub 'status=sent \(delivered to maildir\)' >/dev/null ||
	lab_fail "the smarthost did not deliver the message"
labt_pflog hub "client=relay\.example\.net\[192\.0\.2\.1\], sasl_method=PLAIN, sasl_username=$user" >/dev/null ||
	lab_fail "the smarthost logged no SASL login for $user"
f=$(labt_mailbox_files hub)
grep -q 'by smarthost\.example (Postfix) with ESMTPSA id' "$f" ||
	lab_fail "the Received: header does not say ESMTPSA: $(grep -A5 -m1 '^Received:' "$f")"

bad=carol@auth-bad.example
labf_message "$LAB_DIR/msg.bad" "$from" "$bad" "wrong password"
lab_send "$from" "$bad" "$LAB_DIR/msg.bad" || lab_fail "message to $bad not accepted"
qbad=$(lab_re "$LAB_QID")
lab_expect_log "$qbad: to=<$(lab_re "$bad")>, relay=smarthost\.example\[198\.51\.100\.141\]:25, family=ipv4, delay=[0-9.]+, dsn=5\.7\.8, status=bounced \(host smarthost\.example\[198\.51\.100\.141\] said: 535 5\.7\.8 Error: authentication failed: .*\(in reply to AUTH command\)\), tls=TLSv1\.3:TLS_[A-Z0-9_]+:verified$" \
	15 "bounce after the smarthost's 535"
lab_log "$(labt_status_line "$LAB_QID" "$bad")"
labt_pflog hub 'SASL PLAIN authentication failed' >/dev/null ||
	lab_fail "the smarthost logged no failed SASL login"
n=$(grep -Ec -- "$qbad: to=<.*status=" "$LAB_LOG")
[ "$n" -eq 1 ] || lab_fail "$n status lines for the 535 message, expected 1 (no retry)"
sleep 1
[ "$(labt_mailbox_count hub)" -eq 1 ] || lab_fail "the smarthost holds $(labt_mailbox_count hub) messages, expected 1"

# No password in the log, in any form the client could have written it.
for pw in "$good_pw" "$bad_pw"; do
	for form in "$pw" "$(printf '%s' "$pw" | base64 -w0)" \
		"$(printf '\0%s\0%s' "$user" "$pw" | base64 -w0)"; do
		! grep -qF -- "$form" "$LAB_LOG" || lab_fail "a password appears in the daemon log ($form)"
	done
done
lab_pass
