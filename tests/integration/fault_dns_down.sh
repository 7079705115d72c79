#!/bin/bash
# fault_dns_down: the DNS server is down (unbound stopped: nothing listens on the
# resolver's address, so each query meets an ICMP port unreachable).  Mail accepted
# meanwhile is deferred with 4.4.3 and a reason naming the DNS failure, never bounced, and
# stays in the queue; once unbound is back, "dualrelayctl flush" delivers every recipient
# exactly once.  See labx_dns_fault in lab_fault.sh.
. "$(dirname "$0")/lab.sh"
. "$(dirname "$0")/lab_family.sh"
. "$(dirname "$0")/lab_queue.sh"
. "$(dirname "$0")/lab_fault.sh"

labx_setup
labx_dns_fault labx_dns_stop labx_dns_restart "Host not found, try again \(no DNS server answered \(connection refused"
lab_pass
