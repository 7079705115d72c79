#!/bin/bash
# family_unusable_aaaa_slow_a: the preferred family (IPv6) answers first, but only with
# addresses the relay must not dial: the first MX's AAAA records are a link-local address
# (fe80::1) and one of the relay's own (2001:db8::1, mail loop); the second MX has an A
# record only, and that answer comes late.  RFC 8305 3 lets delivery start as soon as the
# preferred family has answered, but unusable addresses are no answer: the relay must wait
# for the A record and deliver over IPv4 on the first attempt, not build a plan in which
# every address is skipped and defer the message for a retry period (4.4.4).
#
# Order of answers, made deterministic: an nftables rule in the lab's internet (NET, the
# DNS server's side) drops the first A query for mx2.late.example (matched on the question
# in the UDP payload), so that A answer arrives only after the resolver's resend
# (dns.timeout_ms = 1000), while every AAAA answer is in well before.  (Dropped on the
# relay's own output, the query would fail sendto() with EPERM and c-ares would resend it
# at once.)  retry_min_s is 300: a wrongful first deferral
# shows as no delivery within the test's wait, not as a delivery a second later.
. "$(dirname "$0")/lab.sh"
. "$(dirname "$0")/lab_family.sh"

labf_setup
lab_dns_start <<'ZONE'
late.example. MX 10 mx1.late.example.
late.example. MX 20 mx2.late.example.
mx1.late.example. AAAA fe80::1
mx1.late.example. AAAA 2001:db8::1
mx2.late.example. A 198.51.100.61
ZONE
lab_sink_start late 198.51.100.61

# The question "mx2.late.example. A": after the UDP header (8 bytes) and the DNS header
# (12), the name \3mx2\4late\7example\0 (18 bytes), then QTYPE 1.  Offsets are in bits.
q_a_mx2="udp dport 53 @th,160,72 0x036d7832046c617465 @th,232,72 0x076578616d706c6500 @th,304,16 1"
labf_nft_init "$LAB_NET"
ip netns exec "$LAB_NET" nft add set inet labf dropped_once '{ type ipv4_addr; flags dynamic; }' ||
	lab_fail "nft set dropped_once"
labf_nft_rule "$LAB_NET" input a_seen "$q_a_mx2"
# Once: the first such query puts the relay's address into the set and is dropped; the
# resend finds it there and passes.
labf_nft_rule "$LAB_NET" input a_dropped \
	"$q_a_mx2 ip saddr != @dropped_once add @dropped_once { ip saddr }" drop
labf_nft_init "$LAB_RELAY"
labf_nft_rule "$LAB_RELAY" output v6syn "meta nfproto ipv6 tcp dport 25"

lab_conf_write "$LAB_DIR/dualrelay.conf"
sed -i 's/queue = { retry_min_s = 1; retry_max_s = 2;/queue = { retry_min_s = 300; retry_max_s = 600;/' \
	"$LAB_DIR/dualrelay.conf"
grep -q 'retry_min_s = 300;' "$LAB_DIR/dualrelay.conf" || lab_fail "retry_min_s not set to 300"
lab_daemon_start "$LAB_DIR/dualrelay.conf"

from=alice@client.example.net
rcpt=bob@late.example
labf_message "$LAB_DIR/msg" "$from" "$rcpt" "unusable aaaa slow a"
lab_send "$from" "$rcpt" "$LAB_DIR/msg" || lab_fail "message not accepted"
qid=$LAB_QID
q=$(lab_re "$qid")
# One resolver retry (1 s) and one connection: 20 s is generous; a deferral would wait 300 s.
lab_wait_log "$q: to=<$(lab_re "$rcpt")>, .*status=(sent|deferred) " 20 ||
	lab_fail "no delivery outcome for $qid within 20 s"
if lab_log_has "$q: to=<$(lab_re "$rcpt")>, .*status=deferred "; then
	lab_fail "$qid was deferred on its first attempt: $(grep -E "$q: to=<.*status=deferred" "$LAB_LOG" | head -n1)"
fi
lab_expect_sent "$qid" "$rcpt" mx2.late.example 198.51.100.61 ipv4 5
lab_log_has "$q: skipping mx1\.late\.example\[fe80::1\] for late\.example: link-local address" ||
	lab_fail "no log line skipping fe80::1 as link-local"
lab_log_has "$q: skipping mx1\.late\.example\[2001:db8::1\] for late\.example: address of this host \(mail loop\)" ||
	lab_fail "no log line skipping 2001:db8::1 as an address of this host"

# The order of answers was the one under test: the A query was dropped once and resent.
dropped=$(labf_nft_packets "$LAB_NET" a_dropped)
seen=$(labf_nft_packets "$LAB_NET" a_seen)
v6=$(labf_nft_packets "$LAB_RELAY" v6syn)
[ "$dropped" -eq 1 ] || lab_fail "$dropped A queries for mx2.late.example dropped, expected 1"
[ "$seen" -ge 2 ] || lab_fail "$seen A queries for mx2.late.example seen: the resolver did not resend"
[ "$v6" -eq 0 ] || lab_fail "$v6 IPv6 packet(s) to port 25 left the relay"
# And the daemon saw every AAAA answer before that A answer (its debug log, in order).
last_aaaa=$(grep -nE 'dns: mx[12]\.late\.example type 28: ' "$LAB_LOG" | tail -n1 | cut -d: -f1)
a_mx2=$(grep -nE 'dns: mx2\.late\.example type 1: ok' "$LAB_LOG" | head -n1 | cut -d: -f1)
{ [ -n "$last_aaaa" ] && [ -n "$a_mx2" ]; } || lab_fail "no dns debug lines for the AAAA and A answers"
[ "$last_aaaa" -lt "$a_mx2" ] || lab_fail "the A answer for mx2 came before the AAAA answers"
lab_sink_wait late 1 5 || lab_fail "the sink has no message"
lab_expect_sink_file late
lab_log "A queries for mx2: $seen seen, $dropped dropped; IPv6 packets to port 25: $v6"
lab_pass
