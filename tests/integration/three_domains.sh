#!/bin/bash
# three_domains: one message for four recipients in three domains reaches three MX hosts:
# one.example (MX with an IPv4 address; two recipients, delivered in one transaction),
# two.example (MX with only an IPv6 address) and three.example (no MX: the implicit MX of
# RFC 5321 5.1, the domain's own A record).  Each sink gets the message once, with only its
# own recipients, byte-exact.
. "$(dirname "$0")/lab.sh"

lab_setup
lab_dns_start <<'ZONE'
one.example. MX 10 mx.one.example.
mx.one.example. A 198.51.100.11
two.example. MX 10 mx.two.example.
mx.two.example. AAAA 2001:db8:100::12
three.example. A 198.51.100.13
ZONE
lab_sink_start one 198.51.100.11
lab_sink_start two 2001:db8:100::12
lab_sink_start three 198.51.100.13
lab_conf_write "$LAB_DIR/dualrelay.conf"
lab_daemon_start "$LAB_DIR/dualrelay.conf"

from=alice@client.example.net
lab_make_message "$LAB_DIR/msg" "$from" "several" "three domains"
lab_send "$from" "a@one.example,b@one.example,c@two.example,d@three.example" "$LAB_DIR/msg" ||
	lab_fail "message not accepted (no 250 ... queued as)"
lab_log "accepted as $LAB_QID"
lab_expect_log "$(lab_re "$LAB_QID"): client=.*nrcpt=4" 5 "acceptance line"

lab_expect_sent "$LAB_QID" a@one.example mx.one.example 198.51.100.11 ipv4 15
lab_expect_sent "$LAB_QID" b@one.example mx.one.example 198.51.100.11 ipv4 5
lab_expect_sent "$LAB_QID" c@two.example mx.two.example 2001:db8:100::12 ipv6 15
lab_expect_sent "$LAB_QID" d@three.example three.example 198.51.100.13 ipv4 15

check_sink() { # NAME CLIENT-ADDR RCPT...
	local name=$1 client=$2 dump want got
	shift 2
	lab_sink_wait "$name" 1 5 || lab_fail "sink $name has no message"
	lab_expect_sink_file "$name"
	dump=$LAB_DUMP
	got=$(lab_dump_header "$dump" Client-Addr)
	[ "$got" = "$client" ] || lab_fail "sink $name saw client '$got', expected '$client'"
	want=$(printf '<%s>\n' "$@")
	got=$(lab_dump_header "$dump" Rcpt-Args | sed 's/ .*//')
	[ "$got" = "$want" ] || lab_fail "sink $name got recipients '$got', expected '$want'"
	lab_dump_message "$dump" >"$LAB_DIR/got.$name" || lab_fail "cannot parse dump of $name"
	lab_compare_bytes "$LAB_DIR/msg" "$LAB_DIR/got.$name" "sink $name"
}
check_sink one 192.0.2.1 a@one.example b@one.example
check_sink two ipv6:2001:db8::1 c@two.example
check_sink three 192.0.2.1 d@three.example

# Nothing more arrives later (no duplicate deliveries on a retry pass).
sleep 3
for s in one two three; do
	[ "$(lab_sink_count $s)" -eq 1 ] || lab_fail "sink $s got a second copy"
done
lab_pass
