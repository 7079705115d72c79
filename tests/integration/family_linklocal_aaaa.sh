#!/bin/bash
# family_linklocal_aaaa: an MX whose AAAA records are a link-local (fe80::1) and the loopback
# (::1) address is never dialled over IPv6: each address is logged as skipped with the
# reason, and the message goes out over the host's A record.  An nftables counter in the
# relay namespace's output chain proves that no IPv6 SYN to port 25 left the relay at all
# (not even to ::1, which would not cross the lab link).
. "$(dirname "$0")/lab.sh"
. "$(dirname "$0")/lab_family.sh"

labf_setup
lab_dns_start <<'ZONE'
ll.example. MX 10 mx.ll.example.
mx.ll.example. AAAA fe80::1
mx.ll.example. AAAA ::1
mx.ll.example. A 198.51.100.31
ZONE
lab_sink_start ll 198.51.100.31
labf_nft_init "$LAB_RELAY"
labf_nft_rule "$LAB_RELAY" output v6syn "meta nfproto ipv6 tcp dport 25"
labf_nft_rule "$LAB_RELAY" output v4syn "meta nfproto ipv4 tcp dport 25"

lab_conf_write "$LAB_DIR/dualrelay.conf"
lab_daemon_start "$LAB_DIR/dualrelay.conf"

from=alice@client.example.net
rcpt=bob@ll.example
labf_message "$LAB_DIR/msg" "$from" "$rcpt" "link-local"
lab_send "$from" "$rcpt" "$LAB_DIR/msg" || lab_fail "message not accepted"
qid=$LAB_QID
lab_expect_sent "$qid" "$rcpt" mx.ll.example 198.51.100.31 ipv4 10
lab_log_has "$(lab_re "$qid"): skipping mx\.ll\.example\[fe80::1\] for ll\.example: link-local address" ||
	lab_fail "no log line skipping fe80::1 as link-local"
lab_log_has "$(lab_re "$qid"): skipping mx\.ll\.example\[::1\] for ll\.example: loopback address" ||
	lab_fail "no log line skipping ::1 as loopback"
labf_expect_fast "$qid" "$rcpt" 2
v6=$(labf_nft_packets "$LAB_RELAY" v6syn)
v4=$(labf_nft_packets "$LAB_RELAY" v4syn)
[ "$v6" -eq 0 ] || lab_fail "$v6 IPv6 packet(s) to port 25 left the relay"
[ "$v4" -ge 1 ] || lab_fail "the IPv4 counter saw nothing: the counters do not work"
lab_sink_wait ll 1 5 || lab_fail "the sink has no message"
lab_expect_sink_file ll
lab_log "IPv6 packets to port 25: $v6, IPv4: $v4"
lab_pass
