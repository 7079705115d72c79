#!/bin/bash
# fault_dns_servfail: the DNS server answers SERVFAIL for the destination domain.  unbound
# is reconfigured so that dns.example is no longer local data but a forward zone whose
# only server refuses every query (unbound itself: the forwarded queries leave from its
# own address, which access-control refuses): unbound then answers SERVFAIL, at once.
# (A forward zone to an address where nothing listens is no good: unbound keeps retrying
# it for longer than any client waits, so the client sees a timeout, not SERVFAIL.)  Mail accepted meanwhile is deferred with 4.4.3
# and "SERVFAIL", never bounced, and stays queued; once unbound serves the zone again,
# "dualrelayctl flush" delivers every recipient exactly once.
. "$(dirname "$0")/lab.sh"
. "$(dirname "$0")/lab_family.sh"
. "$(dirname "$0")/lab_queue.sh"
. "$(dirname "$0")/lab_fault.sh"

dns_servfail() {
	local conf="$LAB_DIR/unbound/unbound.conf"
	cp "$conf" "$conf.good"
	# "transparent" lets queries for the zone through to the forward zone below.
	sed -i -e '/dns\.example\./d' -e 's/^\tlocal-zone: "example\." static$/&\n\tlocal-zone: "dns.example." transparent\n\toutgoing-interface: '"$LAB_DNS_ADDR"'\n\taccess-control: '"$LAB_DNS_ADDR"'\/32 refuse/' "$conf"
	printf 'forward-zone:\n\tname: "dns.example."\n\tforward-addr: %s\n' "$LAB_DNS_ADDR" >>"$conf"
	labx_dns_restart
	local got
	got=$(lab_dns_query dns.example. MX)
	case $got in
	SERVFAIL*) ;;
	*) lab_fail "the broken zone answers '$got', not SERVFAIL" ;;
	esac
}

dns_repair() {
	cp "$LAB_DIR/unbound/unbound.conf.good" "$LAB_DIR/unbound/unbound.conf"
	labx_dns_restart
}

labx_setup
labx_dns_fault dns_servfail dns_repair "Host not found, try again \((DNS server failure \(SERVFAIL\)|no DNS server answered \(connection refused, SERVFAIL or REFUSED\))\)"
lab_pass
