#!/bin/bash
# family_gmail_after_data: a receiver that judges the client after the whole message.
# family_server.py listens on both families of the MX; over IPv6 it takes the complete DATA
# section and only then answers Gmail's "550-5.7.1 [2001:db8::1] This message does not meet
# IPv6 sending guidelines regarding PTR records and authentication"; over IPv4 it accepts.
# dualrelay must send the whole message again over IPv4 at once: it arrives there exactly
# once and byte-exact, the IPv6 attempt is logged as status=fallback, and nothing bounces.
. "$(dirname "$0")/lab.sh"
. "$(dirname "$0")/lab_family.sh"

labf_setup
lab_dns_start <<'ZONE'
gmail.example. MX 5 mx.gmail.example.
mx.gmail.example. AAAA 2001:db8:100::71
mx.gmail.example. A 198.51.100.71
ZONE
labf_server_start g 2001:db8:100::71 198.51.100.71
srv=$(labf_server_dir g)
lab_conf_write "$LAB_DIR/dualrelay.conf"
lab_daemon_start "$LAB_DIR/dualrelay.conf"

from=alice@client.example.net
rcpt=bob@gmail.example
lab_make_message "$LAB_DIR/msg" "$from" "$rcpt" "after data"
lab_send "$from" "$rcpt" "$LAB_DIR/msg" || lab_fail "message not accepted"
qid=$LAB_QID
q=$(lab_re "$qid")
lab_expect_sent "$qid" "$rcpt" mx.gmail.example 198.51.100.71 ipv4 15
lab_log_has "$q: to=<$(lab_re "$rcpt")>, relay=mx\.gmail\.example\[2001:db8:100::71\]:25, family=ipv6, delay=[0-9.]+, dsn=5\.7\.1, status=fallback \(host mx\.gmail\.example\[2001:db8:100::71\] said: 550 5\.7\.1 \[2001:db8::1\] This message does not meet IPv6 sending guidelines regarding PTR.*in reply to end of DATA command\); retrying over ipv4\)" ||
	lab_fail "no status=fallback line for the IPv6 rejection after DATA"
labf_expect_fast "$qid" "$rcpt" 2
n=$(grep -Ec -- "$q: to=<.*status=" "$LAB_LOG")
[ "$n" -eq 2 ] || lab_fail "$n status lines for $qid, expected 2 (fallback, sent)"
! grep -Eq -- "$q: to=<.*status=(bounced|expired|deferred)" "$LAB_LOG" ||
	lab_fail "the rejection after DATA turned into a bounce or a deferral"
! grep -Eq -- ": client=.*, from=<>," "$LAB_LOG" || lab_fail "a bounce message was queued"

# The server's view: one complete message over IPv6 (rejected after the body), then one
# over IPv4 (accepted), from the relay's addresses.
sleep 0.5
log=$(cat "$srv/log")
[ "$(grep -c '^family=ipv6 peer=2001:db8::1 .* reply=550$' <<<"$log")" -eq 1 ] &&
	[ "$(grep -c '^family=ipv4 peer=192.0.2.1 .* reply=250$' <<<"$log")" -eq 1 ] &&
	[ "$(wc -l <<<"$log")" -eq 2 ] ||
	lab_fail "unexpected sessions at the server: $log"
[ "$(find "$srv/accepted" -type f | wc -l)" -eq 1 ] || lab_fail "not exactly one accepted message"
[ "$(find "$srv/rejected" -type f | wc -l)" -eq 1 ] || lab_fail "not exactly one rejected message"

# Byte-exact: what arrived minus our Received: header (the first header, with its
# continuation lines) is what the client submitted; the same holds for what IPv6 got.
strip_received() {
	python3 - "$1" <<'EOF'
import sys
lines = open(sys.argv[1], "rb").read().split(b"\r\n")
if not lines[0].lower().startswith(b"received:"):
    sys.exit("no Received: header first")
i = 1
while lines[i][:1] in (b" ", b"\t"):
    i += 1
sys.stdout.buffer.write(b"\r\n".join(lines[i:]))
EOF
}
strip_received "$(find "$srv/accepted" -type f)" >"$LAB_DIR/got4" || lab_fail "cannot parse the IPv4 copy"
lab_compare_bytes "$LAB_DIR/msg" "$LAB_DIR/got4" "message delivered over IPv4"
strip_received "$(find "$srv/rejected" -type f)" >"$LAB_DIR/got6" || lab_fail "cannot parse the IPv6 copy"
lab_compare_bytes "$LAB_DIR/msg" "$LAB_DIR/got6" "message sent over IPv6 before the rejection"
lab_pass
