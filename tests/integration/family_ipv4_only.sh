#!/bin/bash
# family_ipv4_only: a route to a transport with family = "ipv4" never sends a packet to an
# IPv6 address, although the MX has an AAAA record and IPv6 is preferred by default.
# nftables counters in NET's input chain, per family, prove it; a control message to a
# domain on the default transport (same MX) then goes over IPv6 and moves the IPv6
# counters, which shows they do count what they should.
. "$(dirname "$0")/lab.sh"
. "$(dirname "$0")/lab_family.sh"

labf_setup
lab_dns_start <<'ZONE'
v4only.example. MX 10 mx.fam.example.
control.example. MX 10 mx.fam.example.
mx.fam.example. AAAA 2001:db8:100::41
mx.fam.example. A 198.51.100.41
ZONE
lab_sink_start fam4 198.51.100.41
lab_sink_start fam6 2001:db8:100::41
labf_nft_init "$LAB_NET"
labf_nft_rule "$LAB_NET" input v6any "meta nfproto ipv6 ip6 daddr 2001:db8:100::/48"
labf_nft_rule "$LAB_NET" input v6tcp "meta nfproto ipv6 meta l4proto tcp"
labf_nft_rule "$LAB_NET" input v4mx "meta nfproto ipv4 ip daddr 198.51.100.0/24"

lab_conf_write "$LAB_DIR/dualrelay.conf" \
	'transports = { only4 = { family = "ipv4"; }; };' \
	'routes = ( { domain = "v4only.example"; transport = "only4"; } );'
lab_daemon_start "$LAB_DIR/dualrelay.conf"

from=alice@client.example.net
rcpt=bob@v4only.example
labf_message "$LAB_DIR/msg" "$from" "$rcpt" "ipv4 only"
lab_send "$from" "$rcpt" "$LAB_DIR/msg" || lab_fail "message not accepted"
qid=$LAB_QID
lab_expect_sent "$qid" "$rcpt" mx.fam.example 198.51.100.41 ipv4 10
lab_sink_wait fam4 1 5 || lab_fail "the IPv4 sink has no message"
sleep 0.5
v6any=$(labf_nft_packets "$LAB_NET" v6any)
v6tcp=$(labf_nft_packets "$LAB_NET" v6tcp)
v4mx=$(labf_nft_packets "$LAB_NET" v4mx)
lab_log "ipv4-only delivery: IPv6 packets to the MX net $v6any, IPv6 TCP $v6tcp, IPv4 to the MX net $v4mx"
[ "$v6any" -eq 0 ] || lab_fail "$v6any IPv6 packet(s) reached the MX addresses"
[ "$v6tcp" -eq 0 ] || lab_fail "$v6tcp IPv6 TCP packet(s) reached NET"
[ "$v4mx" -ge 3 ] || lab_fail "only $v4mx IPv4 packet(s) counted for an SMTP session"
[ "$(lab_sink_count fam6)" -eq 0 ] || lab_fail "the IPv6 sink got a message"

# Control: the default transport ("any") to the same MX prefers IPv6.
rcpt=carol@control.example
labf_message "$LAB_DIR/msg2" "$from" "$rcpt" "control"
lab_send "$from" "$rcpt" "$LAB_DIR/msg2" || lab_fail "control message not accepted"
lab_expect_sent "$LAB_QID" "$rcpt" mx.fam.example 2001:db8:100::41 ipv6 10
v6tcp=$(labf_nft_packets "$LAB_NET" v6tcp)
[ "$v6tcp" -ge 3 ] || lab_fail "the IPv6 counter saw only $v6tcp packet(s) of the control delivery"
lab_log "control delivery over IPv6: IPv6 TCP counter now $v6tcp"
lab_pass
