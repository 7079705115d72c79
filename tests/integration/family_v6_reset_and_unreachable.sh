#!/bin/bash
# family_v6_reset_and_unreachable: an IPv6 connection attempt that fails outright (TCP reset,
# ICMPv6 administratively prohibited, ICMPv6 port unreachable) starts the IPv4 attempt at
# once, without waiting for the attempt delay.  The transport's attempt_delay_ms is the
# largest allowed (2000), so a delivery well under 2 s proves the failure itself moved the
# race on; the log names the error each IPv6 attempt got.
. "$(dirname "$0")/lab.sh"
. "$(dirname "$0")/lab_family.sh"

labf_setup
lab_dns_start <<'ZONE'
rst.example. MX 10 mx.rst.example.
mx.rst.example. AAAA 2001:db8:100::21
mx.rst.example. A 198.51.100.21
adm.example. MX 10 mx.adm.example.
mx.adm.example. AAAA 2001:db8:100::22
mx.adm.example. A 198.51.100.22
port.example. MX 10 mx.port.example.
mx.port.example. AAAA 2001:db8:100::23
mx.port.example. A 198.51.100.23
ZONE
lab_sink_start rst 198.51.100.21
lab_sink_start adm 198.51.100.22
lab_sink_start port 198.51.100.23
for a in 21 22 23; do
	lab_net_addr "2001:db8:100::$a"
done
labf_nft_init "$LAB_NET"
labf_nft_rule "$LAB_NET" input v6rst "ip6 daddr 2001:db8:100::21 tcp dport 25" \
	"reject with tcp reset"
labf_nft_rule "$LAB_NET" input v6adm "ip6 daddr 2001:db8:100::22 tcp dport 25" \
	"reject with icmpv6 type admin-prohibited"
labf_nft_rule "$LAB_NET" input v6port "ip6 daddr 2001:db8:100::23 tcp dport 25" \
	"reject with icmpv6 type port-unreachable"

lab_conf_write "$LAB_DIR/dualrelay.conf" \
	'transports = { default = { family = "any"; attempt_delay_ms = 2000; connect_timeout_s = 30; }; };'
lab_daemon_start "$LAB_DIR/dualrelay.conf"

from=alice@client.example.net
check() {
	local dom=$1 n=$2 counter=$3 err=$4 max=$5 rcpt qid
	rcpt="bob@$dom.example"
	labf_message "$LAB_DIR/msg.$dom" "$from" "$rcpt" "refused $dom"
	lab_send "$from" "$rcpt" "$LAB_DIR/msg.$dom" || lab_fail "message to $dom not accepted"
	qid=$LAB_QID
	lab_expect_sent "$qid" "$rcpt" "mx.$dom.example" "198.51.100.$n" ipv4 10
	lab_log_has "$(lab_re "$qid"): connect to mx\.$dom\.example\[2001:db8:100::$n\]:25 \(ipv6\): $err" ||
		lab_fail "$dom: no log line saying the IPv6 attempt failed with '$err'"
	[ "$(labf_nft_packets "$LAB_NET" "$counter")" -ge 1 ] ||
		lab_fail "$dom: the reject rule saw no IPv6 SYN"
	labf_expect_fast "$qid" "$rcpt" "$max"
	lab_sink_wait "$dom" 1 5 || lab_fail "$dom: the sink has no message"
}
# A reset fails connect() at once.
check rst 21 v6rst 'Connection refused' 0.5
# ICMPv6 errors: this kernel fails a SYN_SENT socket on ICMP only after its first
# retransmission (about 1 s), still well before the 2 s attempt delay.
check adm 22 v6adm 'Permission denied' 1.8
check port 23 v6port 'Connection refused' 1.8
lab_expect_log "health: mx\.rst\.example ipv6 marked bad for [0-9]+ s \(connect failed" 2 \
	"health memory after the reset"
lab_pass
