#!/bin/bash
# lab_selftest: the lab itself works, without dualrelayd, so that a failure of the other
# tests points at the daemon and not at the lab: unbound answers (NOERROR, NXDOMAIN for a
# missing name, REFUSED outside the lab zones), smtp-sink receives over IPv4 and IPv6 from
# the relay namespace and its dump gives back the exact bytes sent, and a private Postfix
# instance relays through a relayhost with the body unchanged.
. "$(dirname "$0")/lab.sh"

lab_setup
lab_dns_start <<'ZONE'
one.example. MX 10 mx.one.example.
mx.one.example. A 198.51.100.11
mx.one.example. AAAA 2001:db8:100::11
nullmx.example. MX 0 .
ptr 198.51.100.11 mx.one.example.
ZONE
check_dns() { # NAME TYPE EXPECTED
	local got
	got=$(lab_dns_query "$1" "$2") || lab_fail "no DNS answer for $1 $2"
	[ "$got" = "$3" ] || lab_fail "DNS $1 $2: got '$got', expected '$3'"
}
check_dns one.example. MX "NOERROR 1"
check_dns mx.one.example. A "NOERROR 1"
check_dns mx.one.example. AAAA "NOERROR 1"
check_dns nullmx.example. MX "NOERROR 1"
check_dns 11.100.51.198.in-addr.arpa. PTR "NOERROR 1"
check_dns no-such-domain.example. MX "NXDOMAIN 0"
check_dns example.com. MX "REFUSED 0"

lab_sink_start v4 198.51.100.11
lab_sink_start v6 2001:db8:100::11
lab_make_message "$LAB_DIR/msg" alice@client.example.net bob@one.example "lab selftest"
printf 'Received: from client.example.net\r\n\tby relay.example.net with ESMTP id TESTID;\r\n\tSun, 1 Jan 2023 00:00:00 +0000\r\n' |
	cat - "$LAB_DIR/msg" >"$LAB_DIR/full"
lab_wire_data "$LAB_DIR/full" >"$LAB_DIR/wire"
for name in v4 v6; do
	case $name in
	v4) server=198.51.100.11:25 client=192.0.2.1 ;;
	v6) server="[2001:db8:100::11]:25" client=ipv6:2001:db8::1 ;;
	esac
	lab_relay swaks --server "$server" --from alice@client.example.net --to bob@one.example \
		--data "@$LAB_DIR/wire" --no-data-fixup --timeout 10 >"$LAB_DIR/swaks.out" 2>&1 ||
		lab_fail "swaks to sink $name failed"
	lab_sink_wait "$name" 1 5 || lab_fail "sink $name stored nothing"
	lab_expect_sink_file "$name"
	dump=$LAB_DUMP
	[ "$(lab_dump_header "$dump" Client-Addr)" = "$client" ] ||
		lab_fail "sink $name saw client $(lab_dump_header "$dump" Client-Addr)"
	lab_dump_message "$dump" >"$LAB_DIR/got.$name" || lab_fail "cannot parse dump of $name"
	lab_compare_bytes "$LAB_DIR/msg" "$LAB_DIR/got.$name" "sink $name"
	case $(lab_dump_received "$dump") in
	*"id TESTID;"*) ;;
	*) lab_fail "lab_dump_received: $(lab_dump_received "$dump")" ;;
	esac
done

if command -v postfix >/dev/null 2>&1; then
	lab_postfix_start "[198.51.100.11]:25"
	tr -d '\r' <"$LAB_DIR/msg" >"$LAB_DIR/msg.lf"
	lab_postfix_sendmail alice@client.example.net bob@one.example "$LAB_DIR/msg.lf" ||
		lab_fail "postfix sendmail failed"
	lab_sink_wait v4 2 20 || lab_fail "the private Postfix did not deliver to the sink"
	dump=$(lab_sink_files v4 | tail -n1)
	grep -q '^Received: by client\.example\.net (Postfix' "$dump" || lab_fail "not from Postfix"
	python3 - "$LAB_DIR/msg" "$dump" <<'PY' || lab_fail "Postfix changed the body"
import sys
sent = open(sys.argv[1], "rb").read().replace(b"\r\n", b"\n")
dump = open(sys.argv[2], "rb").read()
body = sent[sent.index(b"\n\n") + 2:]
got = dump[dump.index(b"\n\n") + 2:]
sys.exit(0 if got == body + b"\n" else 1)
PY
	lab_postfix_stop
	pid=$(lab_postfix_pid)
	[ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null || lab_fail "Postfix master $pid still running"
fi
lab_pass
