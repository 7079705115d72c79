#!/bin/bash
# queue_disk_full: the spool on a 2 MiB tmpfs with 200 inodes. Three ways to run out of
# space in a transaction:
#  1. a 400 KiB message with about 100 KiB free (the error comes while the content is
#     written),
#  2. a small message with no space at all (the error comes only when the last block is
#     flushed at the end of DATA), and
#  3. no inode left (the queue file cannot even be created: the reply to DATA itself).
# Each time: the client gets 452 4.3.1, nothing is half-stored (spool/tmp empty, no new
# file in spool/queue, nothing delivered), and the daemon keeps running and answering.
# Then the space comes back: the same message is accepted with 250 and delivered
# byte-exact. The tmpfs is unmounted however the test ends (labq_cleanup).
. "$(dirname "$0")/lab.sh"
. "$(dirname "$0")/lab_queue.sh"

labq_setup
labq_spool_tmpfs 2m,nr_inodes=200
SPOOL=$LAB_DIR/spool
lab_dns_start <<'ZONE'
full.example. MX 10 mx.full.example.
mx.full.example. A 198.51.100.181
ZONE
labq_sink_start full 198.51.100.181
lab_conf_write "$LAB_DIR/dualrelay.conf"
lab_daemon_start "$LAB_DIR/dualrelay.conf"
from=alice@client.example.net

python3 - "$LAB_DIR/big" <<'PY'
import sys
lines = [b"From: alice@client.example.net", b"Subject: big", b""]
lines += [b"%06d " % i + b"x" * 70 for i in range(5400)]          # ~ 400 KiB
open(sys.argv[1], "wb").write(b"".join(l + b"\r\n" for l in lines))
PY
printf 'From: %s\r\nSubject: small\r\n\r\nsmall body\r\n' "$from" >"$LAB_DIR/small"

# fill_leaving KIB: one filler file that leaves about KIB KiB free on the tmpfs.
fill_leaving() {
	rm -f "$SPOOL/filler"
	local avail
	avail=$(df -k --output=avail "$SPOOL" | tail -n1)
	if [ "$1" -gt 0 ]; then
		dd if=/dev/zero of="$SPOOL/filler" bs=1k count=$((avail - $1)) status=none ||
			lab_fail "cannot write the filler"
	else
		# Up to ENOSPC: not a single block left.
		dd if=/dev/zero of="$SPOOL/filler" bs=4k status=none 2>/dev/null
	fi
	lab_log "free on the spool: $(df -k --output=avail "$SPOOL" | tail -n1) KiB"
}

# refused_full WHAT FILE: FILE is refused with 452 4.3.1 and leaves no trace.
refused_full() {
	local before
	before=$(labq_queue_files)
	lab_send "$from" "$1@full.example" "$2" && lab_fail "$1: accepted on a full disk"
	grep -Eq '^<\*{0,2} +452 4\.3\.1 ' "$LAB_DIR/swaks.out" ||
		lab_fail "$1: no 452 4.3.1: $(grep '^<' "$LAB_DIR/swaks.out" | tail -n2)"
	lab_log "$1: $(grep -E '^<\*{0,2} +452' "$LAB_DIR/swaks.out" | tail -n1)"
	[ -z "$(ls -A "$SPOOL/tmp")" ] || lab_fail "$1: half-stored files in spool/tmp: $(ls "$SPOOL/tmp")"
	[ "$(labq_queue_files)" -eq "$before" ] || lab_fail "$1: a queue file appeared: $(ls "$SPOOL/queue")"
	kill -0 "$LAB_DAEMON_PID" 2>/dev/null || lab_fail "$1: the daemon died on a full disk"
	lab_listening "$LAB_RELAY" 127.0.0.1 2525 || lab_fail "$1: the daemon stopped listening"
	lab_log_has "$1@full\.example>.*status=" && lab_fail "$1: a refused message was delivered"
	return 0
}

# accepted_again WHAT FILE: with room again, FILE is accepted and arrives byte-exact.
accepted_again() {
	local n
	n=$(labq_sink_count full)
	rm -f "$SPOOL/filler" "$SPOOL"/inode.*
	lab_send "$from" "$1@full.example" "$2" || lab_fail "$1: not accepted once there was room again"
	lab_expect_log "$(lab_re "$LAB_QID"): to=<$1@full\.example>, .*status=sent" 10 "$1: delivery"
	labq_sink_wait full $((n + 1)) 5 || lab_fail "$1: not at the MX"
	# The MX holds the message after our Received: header.
	python3 - "$(labq_sink_dir full)/$((n + 1)).eml" "$2" <<'PY' || lab_fail "$1: not byte-exact"
import sys
got, want = open(sys.argv[1], "rb").read(), open(sys.argv[2], "rb").read()
lines = got.split(b"\r\n")
assert lines[0].startswith(b"Received: from "), lines[0]
i = 1
while lines[i][:1] in (b" ", b"\t"):     # the Received: header's continuation lines
    i += 1
assert b"\r\n".join(lines[i:]) == want, "content differs"
PY
	lab_log "$1: accepted again and delivered"
}

fill_leaving 100
refused_full big "$LAB_DIR/big"
accepted_again big "$LAB_DIR/big"

fill_leaving 0
refused_full small "$LAB_DIR/small"
accepted_again small "$LAB_DIR/small"

for i in $(seq 1 250); do
	: 2>/dev/null >"$SPOOL/inode.$i" || break
done
lab_log "no inode left: $(df --output=iavail "$SPOOL" | tail -n1) free inodes"
refused_full noinode "$LAB_DIR/small"
grep -Eq '^ -> DATA' "$LAB_DIR/swaks.out" && ! grep -Eq '^<\*{0,2} +354' "$LAB_DIR/swaks.out" ||
	lab_fail "noinode: not refused at DATA"
accepted_again noinode "$LAB_DIR/small"

labq_wait_queue_empty 5 || lab_fail "the queue is not empty: $(ls "$SPOOL/queue")"
lab_pass
