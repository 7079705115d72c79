#!/bin/bash
# fault_dns_timeout: the DNS server does not answer at all (nftables in the lab drops
# every packet to its port 53, UDP and TCP), so each query times out (dns.timeout_ms and
# tries of lab.sh: a few seconds).  Mail accepted meanwhile is deferred with 4.4.3 and
# "DNS query timed out", never bounced, and stays queued; once the rule is gone,
# "dualrelayctl flush" delivers every recipient exactly once.
. "$(dirname "$0")/lab.sh"
. "$(dirname "$0")/lab_family.sh"
. "$(dirname "$0")/lab_queue.sh"
. "$(dirname "$0")/lab_fault.sh"

dns_drop() {
	labf_nft_init "$LAB_NET"
	labf_nft_rule "$LAB_NET" input dns_udp "ip daddr $LAB_DNS_ADDR udp dport 53" drop
	labf_nft_rule "$LAB_NET" input dns_tcp "ip daddr $LAB_DNS_ADDR tcp dport 53" drop
}

dns_undrop() {
	# Packets were really dropped (the timeout was not some other failure).
	[ "$(labf_nft_packets "$LAB_NET" dns_udp)" -gt 0 ] || lab_fail "no DNS packet was dropped"
	lab_inet nft delete table inet labf || lab_fail "cannot remove the drop rules"
	wait_for 10 lab_dns_answers || lab_fail "the lab DNS does not answer after the repair"
}

labx_setup
labx_dns_fault dns_drop dns_undrop "Host not found, try again \(DNS query timed out\)"
lab_pass
