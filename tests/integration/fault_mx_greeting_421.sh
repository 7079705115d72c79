#!/bin/bash
# fault_mx_greeting_421: the MX greets with "421 4.3.2 Service not available".  The daemon
# logs the reply, goes on to the next MX in the same attempt; with no other MX the
# recipient is deferred with the server's 421 (never bounced) and stays queued.  Once the
# MX greets normally, "dualrelayctl flush" delivers it, once.  See labx_mx_fault in
# lab_fault.sh.
. "$(dirname "$0")/lab.sh"
. "$(dirname "$0")/lab_family.sh"
. "$(dirname "$0")/lab_queue.sh"
. "$(dirname "$0")/lab_fault.sh"

labx_setup
labx_mx_fault "421 4\.3\.2 Service not available, closing channel" \
	--greeting "421 4.3.2 Service not available, closing channel"
lab_pass
