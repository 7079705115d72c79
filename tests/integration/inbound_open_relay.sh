#!/bin/bash
# inbound_open_relay: from the lab address 192.0.2.254, outside relay_networks and without
# AUTH, every relay attempt is refused at RCPT, in plaintext and after STARTTLS: a plain
# foreign recipient, the percent hack, a source route, a bang path, quoted local parts with
# @ or %.  Nothing is queued or reaches the sink, and the log names each trick.  The same
# recipients from an authenticated client: the percent hack and quoted forms are ordinary
# mailboxes of one.example and are relayed there; source routes and bare bang paths are
# refused for everyone (501).
. "$(dirname "$0")/lab.sh"
. "$(dirname "$0")/lab_family.sh"
. "$(dirname "$0")/lab_tls.sh"
. "$(dirname "$0")/lab_inbound.sh"

labi_setup
lab_dns_start <<'ZONE'
one.example. MX 10 mx.one.example.
mx.one.example. A 198.51.100.11
other.example. MX 10 mx.other.example.
mx.other.example. A 198.51.100.12
ZONE
lab_sink_start one 198.51.100.11
lab_sink_start other 198.51.100.12
labi_conf "$LAB_DIR/dualrelay.conf"
labi_daemon_start "$LAB_DIR/dualrelay.conf"
spool_before=$(lab_spool_files)

# attempt NAME RCPT EXPECT ARGS...: one unauthenticated relay attempt; the RCPT reply must
# start with EXPECT.
attempt() {
	local name=$1 rcpt=$2 want=$3 out="$LAB_DIR/relay.$1.out"
	shift 3
	labi_swaks "$out" --from spammer@outside.test --to "$rcpt" --quit-after RCPT "$@" &&
		lab_fail "$name: swaks succeeded: $(cat "$out")"
	grep -Eq "^<[-~*]\*? *$want" "$out" || lab_fail "$name: RCPT not answered $want: $(cat "$out")"
	grep -Eq '^<[-~] *250 2\.1\.5' "$out" && lab_fail "$name: a recipient was accepted"
	return 0
}

for mode in plain tls; do
	if [ "$mode" = plain ]; then
		set -- --server 192.0.2.1:2526
	else
		set -- --server 192.0.2.1:587 --tls
	fi
	attempt "$mode-plain" victim@other.example '554 5\.7\.1 <victim@other\.example>: Relay access denied' "$@"
	attempt "$mode-percent" 'victim%other.example@one.example' '554 5\.7\.1 ' "$@"
	attempt "$mode-route" '@one.example:victim@other.example' '501 5\.1\.3 ' "$@"
	attempt "$mode-bang" 'other.example!victim@one.example' '554 5\.7\.1 ' "$@"
	attempt "$mode-bare-bang" 'other.example!victim' '501 5\.1\.3 ' "$@"
	attempt "$mode-quoted-at" '"victim@other.example"@one.example' '554 5\.7\.1 ' "$@"
	attempt "$mode-quoted-pct" '"victim%other.example"@one.example' '554 5\.7\.1 ' "$@"
done
lab_log_has 'NOQUEUE: reject: RCPT from \[192\.0\.2\.254\]:[0-9]+: 554 5\.7\.1 <victim%other\.example@one\.example>: Relay access denied \(percent hack\)' ||
	lab_fail "no log line naming the percent hack"
lab_log_has 'Relay access denied \(bang path\)' || lab_fail "no log line naming the bang path"
lab_log_has 'Relay access denied \(quoted local part with @\)' ||
	lab_fail "no log line naming the quoted local part"
grep -c 'NOQUEUE: reject: RCPT from \[192\.0\.2\.254\]' "$LAB_LOG" | grep -qx 10 ||
	lab_fail "expected 10 NOQUEUE lines, got $(grep -c 'NOQUEUE: reject' "$LAB_LOG")"

# A full transaction with DATA from outside: refused, nothing queued.
lab_wire_data <(printf 'Subject: x\r\n\r\nx\r\n') >"$LAB_DIR/wire"
labi_swaks "$LAB_DIR/relay.data.out" --server 192.0.2.1:587 --tls \
	--from spammer@outside.test --to victim@other.example --data "@$LAB_DIR/wire" \
	--no-data-fixup && lab_fail "a full relay transaction from outside succeeded"
grep -q 'queued as' "$LAB_DIR/relay.data.out" && lab_fail "queued for an outside client"
lab_log_has 'client=\[192\.0\.2\.254\]' && lab_fail "an acceptance line for the outside client"
[ "$(lab_spool_files)" -eq "$spool_before" ] || lab_fail "the spool changed"

# Authenticated, the percent hack is just a mailbox of one.example: relayed to its MX,
# never to other.example.
labi_swaks "$LAB_DIR/auth.out" --server 192.0.2.1:587 --tls --auth PLAIN --auth-user alice \
	--auth-password "$LABI_PASS_ALICE" --from alice@client.example \
	--to 'victim%other.example@one.example' --data "@$LAB_DIR/wire" --no-data-fixup ||
	lab_fail "authenticated client refused: $(cat "$LAB_DIR/auth.out")"
lab_sink_wait one 1 15 || lab_fail "the authenticated message did not reach one.example's MX"
sleep 2
[ "$(lab_sink_count one)" -eq 1 ] || lab_fail "one.example's sink has $(lab_sink_count one) messages"
[ "$(lab_sink_count other)" -eq 0 ] || lab_fail "other.example's sink got mail"
lab_pass
