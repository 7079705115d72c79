#!/bin/bash
# postfix_relayhost: the relayhost use case with the real peer.  A private Postfix instance
# in the relay namespace, configured with relayhost = [127.0.0.1]:2525, takes a message from
# its own sendmail(1) and relays it through dualrelayd, which delivers it to the recipient
# domain's MX.  Postfix's log shows dualrelay's "queued as" id, dualrelay's log shows the
# delivery of that id, and the body arrives unchanged.
. "$(dirname "$0")/lab.sh"

lab_setup
lab_require postfix sendmail
lab_dns_start <<'ZONE'
one.example. MX 10 mx.one.example.
mx.one.example. A 198.51.100.11
ZONE
lab_sink_start one 198.51.100.11
lab_conf_write "$LAB_DIR/dualrelay.conf"
lab_daemon_start "$LAB_DIR/dualrelay.conf"
lab_postfix_start "[127.0.0.1]:2525"

from=alice@client.example.net
rcpt=bob@one.example
lab_make_message "$LAB_DIR/msg" "$from" "$rcpt" "via postfix"
# sendmail(1) takes the message with LF line ends.
tr -d '\r' <"$LAB_DIR/msg" >"$LAB_DIR/msg.lf"
lab_postfix_sendmail "$from" "$rcpt" "$LAB_DIR/msg.lf" || lab_fail "postfix sendmail failed"

pf_sent() { grep -Eq 'relay=127\.0\.0\.1\[127\.0\.0\.1\]:2525, .*status=sent \(250 .*queued as ' \
	"$LAB_POSTFIX_DIR/maillog" 2>/dev/null; }
wait_for 20 pf_sent || lab_fail "Postfix did not hand the message to dualrelay"
qid=$(sed -n 's/.*relay=127\.0\.0\.1\[127\.0\.0\.1\]:2525, .*queued as \([^ )]*\).*/\1/p' \
	"$LAB_POSTFIX_DIR/maillog" | tail -n1)
[ -n "$qid" ] || lab_fail "no dualrelay queue id in Postfix's log"
lab_log "Postfix relayed it; dualrelay queued it as $qid"

lab_expect_log "$(lab_re "$qid"): client=\[127\.0\.0\.1\]:[0-9]+, from=<$(lab_re "$from")>, size=[0-9]+, nrcpt=1" \
	5 "acceptance line for the message from Postfix"
lab_expect_sent "$qid" "$rcpt" mx.one.example 198.51.100.11 ipv4 15
lab_sink_wait one 1 5 || lab_fail "delivery logged but the sink has no message"
lab_expect_sink_file one
dump=$LAB_DUMP
[ "$(lab_dump_header "$dump" Client-Addr)" = 192.0.2.1 ] ||
	lab_fail "the sink was reached from $(lab_dump_header "$dump" Client-Addr), not via dualrelay"
grep -q '^Received: by client\.example\.net (Postfix' "$dump" ||
	lab_fail "Postfix's own Received: header is missing"

# The body (everything after the first empty line) is unchanged end to end.
body() { python3 -c 'import sys; d=open(sys.argv[1],"rb").read(); sys.stdout.buffer.write(d[d.index(b"\r\n\r\n")+4:])' "$1"; }
lab_dump_message "$dump" >"$LAB_DIR/got" || lab_fail "cannot parse the sink dump"
body "$LAB_DIR/msg" >"$LAB_DIR/body.sent"
body "$LAB_DIR/got" >"$LAB_DIR/body.got"
lab_compare_bytes "$LAB_DIR/body.sent" "$LAB_DIR/body.got" "body relayed through Postfix"
lab_postfix_stop
lab_pass
