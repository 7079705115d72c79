#!/bin/bash
# family_ipv6_only: a route to a transport with family = "ipv6" never sends a packet to an
# IPv4 address (other than the lab DNS server, which the resolver reaches over IPv4),
# although the MX has an A record.  nftables counters in NET's input chain, per family,
# prove it; a control message to a domain on a prefer-ipv4 transport (same MX) then moves
# the IPv4 counters.
. "$(dirname "$0")/lab.sh"
. "$(dirname "$0")/lab_family.sh"

labf_setup
lab_dns_start <<'ZONE'
v6only.example. MX 10 mx.fam.example.
control.example. MX 10 mx.fam.example.
mx.fam.example. AAAA 2001:db8:100::42
mx.fam.example. A 198.51.100.42
ZONE
lab_sink_start fam4 198.51.100.42
lab_sink_start fam6 2001:db8:100::42
labf_nft_init "$LAB_NET"
labf_nft_rule "$LAB_NET" input v4notdns "meta nfproto ipv4 ip daddr != $LAB_DNS_ADDR"
labf_nft_rule "$LAB_NET" input v4tcp "meta nfproto ipv4 meta l4proto tcp"
labf_nft_rule "$LAB_NET" input v6mx "meta nfproto ipv6 ip6 daddr 2001:db8:100::/48"

lab_conf_write "$LAB_DIR/dualrelay.conf" \
	'transports = { only6 = { family = "ipv6"; }; v4first = { family = "prefer-ipv4"; }; };' \
	'routes = ( { domain = "v6only.example"; transport = "only6"; },' \
	'           { domain = "control.example"; transport = "v4first"; } );'
lab_daemon_start "$LAB_DIR/dualrelay.conf"

from=alice@client.example.net
rcpt=bob@v6only.example
labf_message "$LAB_DIR/msg" "$from" "$rcpt" "ipv6 only"
lab_send "$from" "$rcpt" "$LAB_DIR/msg" || lab_fail "message not accepted"
qid=$LAB_QID
lab_expect_sent "$qid" "$rcpt" mx.fam.example 2001:db8:100::42 ipv6 10
lab_sink_wait fam6 1 5 || lab_fail "the IPv6 sink has no message"
sleep 0.5
v4notdns=$(labf_nft_packets "$LAB_NET" v4notdns)
v4tcp=$(labf_nft_packets "$LAB_NET" v4tcp)
v6mx=$(labf_nft_packets "$LAB_NET" v6mx)
lab_log "ipv6-only delivery: IPv4 packets (not DNS) $v4notdns, IPv4 TCP $v4tcp, IPv6 to the MX net $v6mx"
[ "$v4notdns" -eq 0 ] || lab_fail "$v4notdns IPv4 packet(s) reached NET other than DNS queries"
[ "$v4tcp" -eq 0 ] || lab_fail "$v4tcp IPv4 TCP packet(s) reached NET"
[ "$v6mx" -ge 3 ] || lab_fail "only $v6mx IPv6 packet(s) counted for an SMTP session"
[ "$(lab_sink_count fam4)" -eq 0 ] || lab_fail "the IPv4 sink got a message"

# Control: prefer-ipv4 to the same MX goes over IPv4 and the IPv4 counters see it.
rcpt=carol@control.example
labf_message "$LAB_DIR/msg2" "$from" "$rcpt" "control"
lab_send "$from" "$rcpt" "$LAB_DIR/msg2" || lab_fail "control message not accepted"
lab_expect_sent "$LAB_QID" "$rcpt" mx.fam.example 198.51.100.42 ipv4 10
v4tcp=$(labf_nft_packets "$LAB_NET" v4tcp)
[ "$v4tcp" -ge 3 ] || lab_fail "the IPv4 counter saw only $v4tcp packet(s) of the control delivery"
lab_log "control delivery over IPv4: IPv4 TCP counter now $v4tcp"
lab_pass
