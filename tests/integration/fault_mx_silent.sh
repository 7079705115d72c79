#!/bin/bash
# fault_mx_silent: the MX accepts the TCP connection and never greets.  The daemon gives up
# after timeouts.smtp_timeout_s (3 s here), logs why, and goes on to the next MX in the
# same attempt; with no other MX the recipient is deferred (4.x.x, never bounced) and
# stays queued.  Once the MX greets again, "dualrelayctl flush" delivers it, once.
# See labx_mx_fault in lab_fault.sh.
. "$(dirname "$0")/lab.sh"
. "$(dirname "$0")/lab_family.sh"
. "$(dirname "$0")/lab_queue.sh"
. "$(dirname "$0")/lab_fault.sh"

labx_setup
labx_mx_fault "timed out while receiving the initial server greeting" --silent
grep -q "silent closed" "$(labq_sink_dir mx1)/log" 2>/dev/null ||
	lab_fail "the daemon never closed its connection to the silent MX"
lab_pass
