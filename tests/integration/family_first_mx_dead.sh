#!/bin/bash
# family_first_mx_dead: the preferred MX (10) has an AAAA and an A record but nothing
# listens on either (the kernel answers each SYN with a reset); the second MX (20) is
# alive on both families.  Both addresses of the first MX are tried and refused, in
# order, and the message goes to the second MX over IPv6 (preferred), at once.
. "$(dirname "$0")/lab.sh"
. "$(dirname "$0")/lab_family.sh"

labf_setup
lab_dns_start <<'ZONE'
dead.example. MX 10 mx1.dead.example.
dead.example. MX 20 mx2.dead.example.
mx1.dead.example. AAAA 2001:db8:100::81
mx1.dead.example. A 198.51.100.81
mx2.dead.example. AAAA 2001:db8:100::82
mx2.dead.example. A 198.51.100.82
ZONE
lab_net_addr 2001:db8:100::81
lab_net_addr 198.51.100.81
lab_sink_start mx2v6 2001:db8:100::82
lab_sink_start mx2v4 198.51.100.82
labf_nft_init "$LAB_NET"
labf_nft_rule "$LAB_NET" input mx1v6 "ip6 daddr 2001:db8:100::81 tcp dport 25"
labf_nft_rule "$LAB_NET" input mx1v4 "ip daddr 198.51.100.81 tcp dport 25"
lab_conf_write "$LAB_DIR/dualrelay.conf"
lab_daemon_start "$LAB_DIR/dualrelay.conf"

from=alice@client.example.net
rcpt=bob@dead.example
labf_message "$LAB_DIR/msg" "$from" "$rcpt" "first mx dead"
lab_send "$from" "$rcpt" "$LAB_DIR/msg" || lab_fail "message not accepted"
qid=$LAB_QID
q=$(lab_re "$qid")
lab_expect_sent "$qid" "$rcpt" mx2.dead.example 2001:db8:100::82 ipv6 10
labf_expect_fast "$qid" "$rcpt" 1
l6=$(grep -n -- "$q: connect to mx1\.dead\.example\[2001:db8:100::81\]:25 (ipv6): Connection refused" "$LAB_LOG" | cut -d: -f1)
l4=$(grep -n -- "$q: connect to mx1\.dead\.example\[198\.51\.100\.81\]:25 (ipv4): Connection refused" "$LAB_LOG" | cut -d: -f1)
ls=$(grep -n -- "$q: to=<.*status=sent" "$LAB_LOG" | cut -d: -f1)
[ -n "$l6" ] && [ -n "$l4" ] || lab_fail "the first MX's two refused attempts are not both logged"
[ "$l6" -lt "$l4" ] && [ "$l4" -lt "$ls" ] ||
	lab_fail "attempts out of order: mx1 IPv6 at line $l6, mx1 IPv4 at $l4, delivery at $ls"
[ "$(labf_nft_packets "$LAB_NET" mx1v6)" -eq 1 ] && [ "$(labf_nft_packets "$LAB_NET" mx1v4)" -eq 1 ] ||
	lab_fail "expected exactly one SYN to each address of the dead MX"
lab_sink_wait mx2v6 1 5 || lab_fail "the second MX has no message"
[ "$(lab_sink_count mx2v4)" -eq 0 ] || lab_fail "the second MX's IPv4 address got a message too"
n=$(grep -Ec -- "$q: to=<.*status=" "$LAB_LOG")
[ "$n" -eq 1 ] || lab_fail "$n status lines for $qid, expected only the delivery"
lab_pass
