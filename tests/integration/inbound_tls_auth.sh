#!/bin/bash
# inbound_tls_auth: a client outside relay_networks (192.0.2.254) relays through dualrelayd
# only after STARTTLS and AUTH.  swaks with STARTTLS (certificate verified against the test
# CA) and AUTH PLAIN (alice, yescrypt) and AUTH LOGIN (bob, sha512-crypt), and with implicit
# TLS on port 465: each message reaches smtp-sink, with "ESMTPSA" and the cipher in
# dualrelay's Received:, and sasl_username on the client= line; no password is logged.  A
# wrong password gets 535 5.7.8 (three: 421 4.7.0 and the connection closes, each 535 about
# 1 s late); AUTH is not offered over plaintext and is refused there with 538 5.7.11; input
# pipelined after STARTTLS is discarded; a loopback client still relays without AUTH.
# Password checks run on a worker thread: while 20 clients send wrong passwords together,
# another client's EHLO and NOOP are each answered within 1 s.
. "$(dirname "$0")/lab.sh"
. "$(dirname "$0")/lab_family.sh"
. "$(dirname "$0")/lab_tls.sh"
. "$(dirname "$0")/lab_inbound.sh"

labi_setup
lab_dns_start <<'ZONE'
one.example. MX 10 mx.one.example.
mx.one.example. A 198.51.100.11
ZONE
lab_sink_start one 198.51.100.11
labi_conf "$LAB_DIR/dualrelay.conf"
lab_relay "$LAB_DAEMON" -n -c "$LAB_DIR/dualrelay.conf" >"$LAB_DIR/check.out" 2>&1 ||
	lab_fail "dualrelayd -n: $(cat "$LAB_DIR/check.out")"
grep -q 'warning' "$LAB_DIR/check.out" && lab_fail "dualrelayd -n warns: $(cat "$LAB_DIR/check.out")"
labi_daemon_start "$LAB_DIR/dualrelay.conf"
lab_make_message "$LAB_DIR/msg" alice@client.example one@one.example "inbound auth"
lab_wire_data "$LAB_DIR/msg" >"$LAB_DIR/wire"
sent=0

# qid_of FILE: the queue id from swaks' transcript.
qid_of() {
	sed -n 's/^<~ *250 .*queued as \([^ ]*\).*/\1/p' "$1" | tail -n1
}

# 1. STARTTLS + AUTH PLAIN.
labi_swaks "$LAB_DIR/plain.out" --server 192.0.2.1:587 --tls --auth PLAIN \
	--auth-user alice --auth-password "$LABI_PASS_ALICE" --from alice@client.example \
	--to one@one.example --data "@$LAB_DIR/wire" --no-data-fixup ||
	lab_fail "STARTTLS + AUTH PLAIN failed: $(cat "$LAB_DIR/plain.out")"
grep -q '^<- *250-STARTTLS' "$LAB_DIR/plain.out" || lab_fail "STARTTLS not offered in plaintext"
grep -q '^<- *250-AUTH' "$LAB_DIR/plain.out" && lab_fail "AUTH offered in plaintext"
grep -q '^<~ *250-AUTH PLAIN LOGIN' "$LAB_DIR/plain.out" || lab_fail "AUTH not offered over TLS"
grep -q '^<~ *235 2.7.0' "$LAB_DIR/plain.out" || lab_fail "no 235 to AUTH PLAIN"
qid=$(qid_of "$LAB_DIR/plain.out")
[ -n "$qid" ] || lab_fail "AUTH PLAIN message not queued: $(cat "$LAB_DIR/plain.out")"
lab_expect_log "$qid: client=\[192\.0\.2\.254\]:[0-9]+, sasl_method=PLAIN, sasl_username=alice, from=<alice@client\.example>" 5 "client= line of $qid"
lab_expect_sent "$qid" one@one.example mx.one.example 198.51.100.11 ipv4 15
sent=$((sent + 1))
lab_sink_wait one "$sent" 10 || lab_fail "the sink did not get the AUTH PLAIN message"
dump=$(lab_sink_files one | tail -n1)
received=$(lab_dump_received "$dump")
echo "$received" | grep -Eq 'from outside\.test \(\[192\.0\.2\.254\]\) \(using TLSv1\.[23] with cipher [A-Z0-9_-]+ \([0-9]+/[0-9]+ bits\)\) by relay\.example\.net \(dualrelay\) with ESMTPSA id ' ||
	lab_fail "Received: header without TLS and AUTH: $received"
lab_log_has "TLS connection established from \[192\.0\.2\.254\]:[0-9]+: TLSv1\.[23] with cipher " ||
	lab_fail "no TLS log line"

# 2. STARTTLS + AUTH LOGIN.
labi_swaks "$LAB_DIR/login.out" --server 192.0.2.1:587 --tls --auth LOGIN \
	--auth-user bob --auth-password "$LABI_PASS_BOB" --from bob@client.example \
	--to one@one.example --data "@$LAB_DIR/wire" --no-data-fixup ||
	lab_fail "STARTTLS + AUTH LOGIN failed: $(cat "$LAB_DIR/login.out")"
qid=$(qid_of "$LAB_DIR/login.out")
[ -n "$qid" ] || lab_fail "AUTH LOGIN message not queued"
lab_expect_log "$qid: client=\[192\.0\.2\.254\]:[0-9]+, sasl_method=LOGIN, sasl_username=bob, " 5 "client= line of $qid"
lab_expect_sent "$qid" one@one.example mx.one.example 198.51.100.11 ipv4 15
sent=$((sent + 1))

# 3. Implicit TLS (port 465 style): the greeting comes over TLS.
labi_swaks "$LAB_DIR/tlsc.out" --server 192.0.2.1:465 --tlsc --auth PLAIN \
	--auth-user alice --auth-password "$LABI_PASS_ALICE" --from alice@client.example \
	--to one@one.example --data "@$LAB_DIR/wire" --no-data-fixup ||
	lab_fail "implicit TLS + AUTH failed: $(cat "$LAB_DIR/tlsc.out")"
grep -q '^<~ *220 relay.example.net ESMTP' "$LAB_DIR/tlsc.out" ||
	lab_fail "no greeting over TLS on 465"
grep -q 'STARTTLS' "$LAB_DIR/tlsc.out" && lab_fail "STARTTLS offered on the implicit TLS listener"
qid=$(qid_of "$LAB_DIR/tlsc.out")
[ -n "$qid" ] || lab_fail "implicit TLS message not queued"
lab_expect_sent "$qid" one@one.example mx.one.example 198.51.100.11 ipv4 15
sent=$((sent + 1))
lab_sink_wait one "$sent" 10 || lab_fail "the sink has $(lab_sink_count one) messages, expected $sent"

# 4. A wrong password: 535 5.7.8, nothing queued.
labi_swaks "$LAB_DIR/wrong.out" --server 192.0.2.1:587 --tls --auth PLAIN \
	--auth-user alice --auth-password "not the password" --from alice@client.example \
	--to one@one.example --data "@$LAB_DIR/wire" --no-data-fixup &&
	lab_fail "swaks succeeded with a wrong password"
grep -q '^<~\* *535 5\.7\.8 ' "$LAB_DIR/wrong.out" || lab_fail "no 535 5.7.8: $(cat "$LAB_DIR/wrong.out")"
grep -q 'queued as' "$LAB_DIR/wrong.out" && lab_fail "queued after a failed AUTH"
lab_log_has 'SASL PLAIN authentication failed: bad user name or password; sasl_username=alice \(failure 1 of 3\)' ||
	lab_fail "no log line for the failed AUTH"

# 5. Three wrong passwords end the session; AUTH over plaintext; STARTTLS injection.
labi_client 192.0.2.1 587 "$LAB_DIR/pki/ca.pem" "$LABI_HOST" auth-failures alice \
	>"$LAB_DIR/failures.out" 2>&1 || lab_fail "auth-failures: $(cat "$LAB_DIR/failures.out")"
lab_log_has 'too many failed authentications from \[192\.0\.2\.254\]' ||
	lab_fail "no log line for the failure limit"
labi_client 192.0.2.1 587 "$LAB_DIR/pki/ca.pem" "$LABI_HOST" plaintext-auth \
	>"$LAB_DIR/plaintext.out" 2>&1 || lab_fail "plaintext-auth: $(cat "$LAB_DIR/plaintext.out")"
labi_swaks "$LAB_DIR/noauth.out" --server 192.0.2.1:2526 --auth PLAIN --auth-user alice \
	--auth-password "$LABI_PASS_ALICE" --from alice@client.example --to one@one.example &&
	lab_fail "AUTH succeeded on the plaintext listener"
grep -Eq 'STARTTLS|235' "$LAB_DIR/noauth.out" && lab_fail "tls = none listener offered STARTTLS or took AUTH"
labi_client 192.0.2.1 587 "$LAB_DIR/pki/ca.pem" "$LABI_HOST" starttls-injection \
	>"$LAB_DIR/inject.out" 2>&1 || lab_fail "starttls-injection: $(cat "$LAB_DIR/inject.out")"
lab_log_has 'discarding 6 bytes sent after STARTTLS before the TLS handshake' ||
	lab_fail "no log line for the discarded input"

# 5b. The event loop does not wait for password hashes: 20 guessers at once (60 yescrypt
# checks, 0.05 to 0.1 s each, which on the loop would stall it for 1 s or more a round) while
# a probe on the plaintext listener gets every EHLO/NOOP answered within 1 s.
labi_client 192.0.2.1 587 "$LAB_DIR/pki/ca.pem" "$LABI_HOST" auth-flood alice 20 \
	192.0.2.1 2526 >"$LAB_DIR/flood.out" 2>&1 || lab_fail "auth-flood: $(cat "$LAB_DIR/flood.out")"
cat "$LAB_DIR/flood.out"
[ "$(grep -c 'SASL PLAIN authentication failed: .*sasl_username=alice (failure 3 of 3)' "$LAB_LOG")" -ge 21 ] ||
	lab_fail "not every guesser's third failure was logged"

# 6. A loopback client (relay_networks) relays without AUTH, as before.
lab_send local@client.example one@one.example "$LAB_DIR/msg" ||
	lab_fail "loopback client not accepted: $(cat "$LAB_DIR/swaks.out")"
lab_expect_sent "$LAB_QID" one@one.example mx.one.example 198.51.100.11 ipv4 15
sent=$((sent + 1))
lab_sink_wait one "$sent" 10 || lab_fail "the sink has $(lab_sink_count one) messages, expected $sent"
sleep 1
[ "$(lab_sink_count one)" -eq "$sent" ] || lab_fail "the sink has $(lab_sink_count one) messages, expected $sent"

# Passwords never reach the log, in clear or in base64.
for p in "$LABI_PASS_ALICE" "$LABI_PASS_BOB" "not the password"; do
	grep -qF -- "$p" "$LAB_LOG" && lab_fail "a password is in the log"
	b=$(printf '%s' "$p" | base64)
	grep -qF -- "${b%%=*}" "$LAB_LOG" && lab_fail "a password (base64) is in the log"
done
plain=$(printf '\0alice\0%s' "$LABI_PASS_ALICE" | base64 -w0)
grep -qF -- "${plain%%=*}" "$LAB_LOG" && lab_fail "an AUTH PLAIN response is in the log"
lab_pass
