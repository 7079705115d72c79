#!/bin/bash
# family_blackhole_v6: the MX has an AAAA and an A record and its IPv6 port 25 is a
# blackhole (nftables drops the SYNs).  With connect_timeout_s = 30 the message must still
# go out over IPv4 within the attempt delay (RFC 8305 racing), and the health memory must
# remember the silent IPv6 address: a second message to the same domain goes straight to
# IPv4 without a single IPv6 SYN (the drop rule's counter does not move).
. "$(dirname "$0")/lab.sh"
. "$(dirname "$0")/lab_family.sh"

labf_setup
lab_dns_start <<'ZONE'
bh.example. MX 10 mx.bh.example.
mx.bh.example. AAAA 2001:db8:100::11
mx.bh.example. A 198.51.100.11
ZONE
lab_sink_start bh4 198.51.100.11
lab_net_addr 2001:db8:100::11
labf_nft_init "$LAB_NET"
labf_nft_rule "$LAB_NET" input v6drop "ip6 daddr 2001:db8:100::11 tcp dport 25" drop

lab_conf_write "$LAB_DIR/dualrelay.conf" \
	'transports = { default = { family = "any"; connect_timeout_s = 30; }; };'
lab_daemon_start "$LAB_DIR/dualrelay.conf"

from=alice@client.example.net
rcpt=bob@bh.example
labf_message "$LAB_DIR/msg1" "$from" "$rcpt" "blackhole first"
lab_send "$from" "$rcpt" "$LAB_DIR/msg1" || lab_fail "first message not accepted"
qid1=$LAB_QID
lab_expect_sent "$qid1" "$rcpt" mx.bh.example 198.51.100.11 ipv4 10
labf_expect_fast "$qid1" "$rcpt" 2
# It really did try IPv6 first (the address is there and preferred), and lost it to IPv4.
drops1=$(labf_nft_packets "$LAB_NET" v6drop)
[ "$drops1" -ge 1 ] || lab_fail "no IPv6 SYN reached the drop rule: IPv6 was never tried"
lab_log_has "$(lab_re "$qid1"): mx\.bh\.example\[2001:db8:100::11\] \(ipv6\) did not answer before ipv4 did" ||
	lab_fail "no log line about the silent IPv6 address"
lab_expect_log "health: mx\.bh\.example ipv6 marked bad for [0-9]+ s \(connect timeout" 2 \
	"health memory"
lab_sink_wait bh4 1 5 || lab_fail "the sink has no message"

# Let any retransmission of the abandoned SYN show up before the baseline is taken
# (there must be none: the socket was closed when IPv4 won).
sleep 1.2
drops1=$(labf_nft_packets "$LAB_NET" v6drop)

rcpt2=carol@bh.example
labf_message "$LAB_DIR/msg2" "$from" "$rcpt2" "blackhole second"
lab_send "$from" "$rcpt2" "$LAB_DIR/msg2" || lab_fail "second message not accepted"
qid2=$LAB_QID
lab_expect_sent "$qid2" "$rcpt2" mx.bh.example 198.51.100.11 ipv4 10
labf_expect_fast "$qid2" "$rcpt2" 1
lab_log_has "$(lab_re "$qid2"): mx\.bh\.example\[2001:db8:100::11\] ipv6 tried last: connect timeout" ||
	lab_fail "the second message's plan does not put the bad IPv6 address last"
sleep 1.2   # an IPv6 attempt, had there been one, would have sent (and retried) its SYN
drops2=$(labf_nft_packets "$LAB_NET" v6drop)
[ "$drops2" -eq "$drops1" ] ||
	lab_fail "the second message sent $((drops2 - drops1)) IPv6 SYN(s) to the blackhole"
! lab_log_has "$(lab_re "$qid2"): .*2001:db8:100::11.*did not answer" ||
	lab_fail "the second message raced the blackholed address again"
lab_sink_wait bh4 2 5 || lab_fail "the sink does not have both messages"
lab_log "IPv6 SYNs dropped: $drops1 for the first message, $((drops2 - drops1)) for the second"
lab_pass
