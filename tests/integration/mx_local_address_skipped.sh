#!/bin/bash
# mx_local_address_skipped: an MX host whose addresses are the relay's own (192.0.2.1 and
# 2001:db8::1 on v0) is never dialled (mail loop): each address is logged as skipped as an
# "address of this host", and the message goes to the next MX.  Then an address added to
# the relay's host while the daemon runs (198.18.0.7 on lo) is recognised as its own by a
# delivery a few seconds later: the daemon's snapshot of its addresses is refreshed after
# a second (localaddr.c), not kept for its lifetime.  An nftables counter in the relay
# namespace's output chain proves that no packet to port 25 of an own address was sent.
. "$(dirname "$0")/lab.sh"
. "$(dirname "$0")/lab_family.sh"

labf_setup
lab_dns_start <<'ZONE'
loop.example. MX 10 mx1.loop.example.
loop.example. MX 20 mx2.loop.example.
mx1.loop.example. A 192.0.2.1
mx1.loop.example. AAAA 2001:db8::1
mx2.loop.example. A 198.51.100.41
new.example. MX 10 mx1.new.example.
new.example. MX 20 mx2.loop.example.
mx1.new.example. A 198.18.0.7
ZONE
lab_sink_start loop 198.51.100.41
labf_nft_init "$LAB_RELAY"
labf_nft_rule "$LAB_RELAY" output ownsyn \
	"tcp dport 25 ip daddr { 192.0.2.1, 198.18.0.7 }"
labf_nft_rule "$LAB_RELAY" output ownsyn6 "tcp dport 25 ip6 daddr 2001:db8::1"
labf_nft_rule "$LAB_RELAY" output v4syn "meta nfproto ipv4 tcp dport 25"

lab_conf_write "$LAB_DIR/dualrelay.conf"
lab_daemon_start "$LAB_DIR/dualrelay.conf"

from=alice@client.example.net

# 1. Addresses the host had when the daemon started.
rcpt=bob@loop.example
labf_message "$LAB_DIR/msg1" "$from" "$rcpt" "own address"
lab_send "$from" "$rcpt" "$LAB_DIR/msg1" || lab_fail "first message not accepted"
qid1=$LAB_QID
lab_expect_sent "$qid1" "$rcpt" mx2.loop.example 198.51.100.41 ipv4 15
lab_log_has "$(lab_re "$qid1"): skipping mx1\.loop\.example\[192\.0\.2\.1\] for loop\.example: address of this host \(mail loop\)" ||
	lab_fail "no log line skipping 192.0.2.1 as an address of this host"
lab_log_has "$(lab_re "$qid1"): skipping mx1\.loop\.example\[2001:db8::1\] for loop\.example: address of this host \(mail loop\)" ||
	lab_fail "no log line skipping 2001:db8::1 as an address of this host"

# 2. An address added while the daemon runs, then a delivery well past the snapshot's
# one-second lifetime (the wait is generous: only "not forever" is being tested).
ip -n "$LAB_RELAY" addr add 198.18.0.7/32 dev lo || lab_fail "addr 198.18.0.7 on the relay's lo"
sleep 3
rcpt=carol@new.example
labf_message "$LAB_DIR/msg2" "$from" "$rcpt" "new own address"
lab_send "$from" "$rcpt" "$LAB_DIR/msg2" || lab_fail "second message not accepted"
qid2=$LAB_QID
lab_expect_sent "$qid2" "$rcpt" mx2.loop.example 198.51.100.41 ipv4 15
lab_log_has "$(lab_re "$qid2"): skipping mx1\.new\.example\[198\.18\.0\.7\] for new\.example: address of this host \(mail loop\)" ||
	lab_fail "the address added at run time was not recognised as this host's"

lab_sink_wait loop 2 10 || lab_fail "the sink does not have both messages"
own=$(labf_nft_packets "$LAB_RELAY" ownsyn)
own6=$(labf_nft_packets "$LAB_RELAY" ownsyn6)
v4=$(labf_nft_packets "$LAB_RELAY" v4syn)
[ "$own" -eq 0 ] || lab_fail "$own IPv4 packet(s) to port 25 of an own address"
[ "$own6" -eq 0 ] || lab_fail "$own6 IPv6 packet(s) to port 25 of an own address"
[ "$v4" -ge 2 ] || lab_fail "the IPv4 counter saw $v4 packets: the counters do not work"
lab_log "packets to port 25 of own addresses: $own (IPv4), $own6 (IPv6); IPv4 to port 25: $v4"
lab_pass
