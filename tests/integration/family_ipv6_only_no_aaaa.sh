#!/bin/bash
# family_ipv6_only_no_aaaa: an ipv6-only transport to a domain whose MX has only an A
# record has nothing it may dial: the recipient is deferred (not bounced, not sent over
# IPv4) with a reason that says there is no IPv6 address, and no packet goes to the MX on
# any family (nftables counter on port 25 in NET).
. "$(dirname "$0")/lab.sh"
. "$(dirname "$0")/lab_family.sh"

labf_setup
lab_dns_start <<'ZONE'
noaaaa.example. MX 10 mx.noaaaa.example.
mx.noaaaa.example. A 198.51.100.91
ZONE
lab_sink_start v4 198.51.100.91
labf_nft_init "$LAB_NET"
labf_nft_rule "$LAB_NET" input smtp "tcp dport 25"
lab_conf_write "$LAB_DIR/dualrelay.conf" \
	'transports = { only6 = { family = "ipv6"; }; };' \
	'routes = ( { domain = "noaaaa.example"; transport = "only6"; } );'
lab_daemon_start "$LAB_DIR/dualrelay.conf"

from=alice@client.example.net
rcpt=bob@noaaaa.example
labf_message "$LAB_DIR/msg" "$from" "$rcpt" "no aaaa"
lab_send "$from" "$rcpt" "$LAB_DIR/msg" || lab_fail "message not accepted"
q=$(lab_re "$LAB_QID")
lab_expect_log "$q: to=<$(lab_re "$rcpt")>, relay=none, family=none, delay=[0-9.]+, dsn=4\.4\.4, status=deferred \(no IPv6 address found for the mail hosts of noaaaa\.example \(transport only6 allows IPv6 only\)\)" \
	10 "deferral saying there is no IPv6 address"
# The queue retries (every 1-2 s here): it must keep deferring the same way, never send.
deferrals() { [ "$(grep -Ec -- "$q: to=<.*status=deferred \(no IPv6 address" "$LAB_LOG")" -ge 2 ]; }
wait_for 6 deferrals || lab_fail "the retry did not defer again with the same reason"
! grep -Eq -- "$q: to=<.*status=(sent|bounced|expired|fallback)" "$LAB_LOG" ||
	lab_fail "the recipient was sent, bounced or fell back instead of deferred"
[ "$(labf_nft_packets "$LAB_NET" smtp)" -eq 0 ] || lab_fail "packets were sent to port 25"
[ "$(lab_sink_count v4)" -eq 0 ] || lab_fail "the IPv4 MX got the message"
lab_pass
