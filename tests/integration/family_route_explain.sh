#!/bin/bash
# family_route_explain: "dualrelayd -r DOMAIN" (run in the relay namespace, against the lab
# DNS) shows an operator why mail goes the way it does: the transport, the MX hosts and
# what DNS said, the candidates in the order they will be tried, the link-local AAAA
# skipped with the reason, and the health memory.  After a delivery whose IPv6 attempt
# hit a blackhole, the saved health state shows the IPv6 address marked bad and moved
# last.
. "$(dirname "$0")/lab.sh"
. "$(dirname "$0")/lab_family.sh"

labf_setup
lab_dns_start <<'ZONE'
explain.example. MX 10 mx.explain.example.
mx.explain.example. AAAA 2001:db8:100::101
mx.explain.example. AAAA fe80::1
mx.explain.example. A 198.51.100.101
ZONE
lab_sink_start ex4 198.51.100.101
lab_net_addr 2001:db8:100::101
lab_conf_write "$LAB_DIR/dualrelay.conf" \
	'transports = { default = { family = "any"; connect_timeout_s = 30; }; };'
lab_daemon_start "$LAB_DIR/dualrelay.conf"

explain() {
	lab_relay "$LAB_DAEMON" -r explain.example -c "$LAB_DIR/dualrelay.conf" >"$LAB_DIR/$1" 2>&1 ||
		lab_fail "dualrelayd -r failed: $(cat "$LAB_DIR/$1")"
	lab_log "dualrelayd -r explain.example ($1):"
	sed 's/^/    /' "$LAB_DIR/$1" >&2
}
# expect FILE REGEX WHAT: a line of FILE matches the extended REGEX.
expect() {
	grep -Eq -- "$2" "$LAB_DIR/$1" || lab_fail "-r output ($1) lacks $3: /$2/"
}
# line_of FILE REGEX: the number of the first matching line.
line_of() {
	grep -En -- "$2" "$LAB_DIR/$1" | head -n1 | cut -d: -f1
}

explain before
expect before '^domain: explain\.example$' "the domain"
expect before '^transport: default \(family any' "the transport"
expect before '^  host mx\.explain\.example preference 10: A ok, AAAA ok$' "the MX host and its DNS answers"
expect before '^  ipv4: source chosen by the kernel, EHLO relay\.example\.net$' "the IPv4 source and EHLO name"
c6=$(line_of before '^  1\. mx\.explain\.example\[2001:db8:100::101\]:25 ipv6$')
c4=$(line_of before '^  2\. mx\.explain\.example\[198\.51\.100\.101\]:25 ipv4$')
[ -n "$c6" ] && [ -n "$c4" ] || lab_fail "-r does not list IPv6 then IPv4 as candidates"
! grep -q 'fe80::1\]:25' "$LAB_DIR/before" || lab_fail "-r lists fe80::1 as a candidate"
expect before '^  mx\.explain\.example\[fe80::1\]: link-local address$' "the skipped link-local address with why"
s=$(line_of before '^skipped:$')
h=$(line_of before '^health:$')
[ -n "$s" ] && [ -n "$h" ] && [ "$s" -gt "$c4" ] && [ "$h" -gt "$s" ] || lab_fail "-r sections out of order"
expect before '^  no failures remembered$' "an empty health memory"

# Blackhole IPv6 port 25 and deliver one message: IPv4 wins, IPv6 is marked bad.
labf_nft_init "$LAB_NET"
labf_nft_rule "$LAB_NET" input v6drop "ip6 daddr 2001:db8:100::101 tcp dport 25" drop
from=alice@client.example.net
rcpt=bob@explain.example
labf_message "$LAB_DIR/msg" "$from" "$rcpt" "explain"
lab_send "$from" "$rcpt" "$LAB_DIR/msg" || lab_fail "message not accepted"
lab_expect_sent "$LAB_QID" "$rcpt" mx.explain.example 198.51.100.101 ipv4 10
lab_expect_log "health: mx\.explain\.example ipv6 marked bad" 2 "health memory"
[ -s "$LAB_DIR/spool/health" ] || lab_fail "the daemon did not save its health state"

explain after
c4=$(line_of after '^  1\. mx\.explain\.example\[198\.51\.100\.101\]:25 ipv4$')
c6=$(line_of after '^  2\. mx\.explain\.example\[2001:db8:100::101\]:25 ipv6, tried last: connect timeout$')
[ -n "$c6" ] && [ -n "$c4" ] || lab_fail "-r does not show IPv4 first and the bad IPv6 address last"
expect after '^  destination mx\.explain\.example ipv6: bad until [0-9-]+ [0-9:]+ \(connect timeout, 1 failure\)$' \
	"the destination's IPv6 marked bad"
expect after '^  mx\.explain\.example\[fe80::1\]: link-local address$' "the skipped link-local address"
! grep -q 'no failures remembered' "$LAB_DIR/after" || lab_fail "-r still says no failures"
lab_pass
