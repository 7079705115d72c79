#!/bin/bash
# one_domain_byte_exact: a message to one domain arrives at that domain's MX exactly as it
# was submitted (dots, 8-bit bytes, 998-octet lines, trailing blanks), plus one Received:
# header of ours carrying the queue id; the sink sees the relay's lab address and EHLO name,
# and the log has the acceptance and delivery lines operators' tools parse.
. "$(dirname "$0")/lab.sh"

lab_setup
lab_dns_start <<'ZONE'
one.example. MX 10 mx.one.example.
mx.one.example. A 198.51.100.11
ptr 198.51.100.11 mx.one.example.
ZONE
lab_sink_start one 198.51.100.11
lab_conf_write "$LAB_DIR/dualrelay.conf"
lab_daemon_start "$LAB_DIR/dualrelay.conf"

from=alice@client.example.net
rcpt=bob@one.example
lab_make_message "$LAB_DIR/msg" "$from" "$rcpt" "byte exact"
lab_send "$from" "$rcpt" "$LAB_DIR/msg" || lab_fail "message not accepted (no 250 ... queued as)"
lab_log "accepted as $LAB_QID"

lab_expect_log "$(lab_re "$LAB_QID"): client=\[127\.0\.0\.1\]:[0-9]+, from=<$(lab_re "$from")>, size=[0-9]+, nrcpt=1" \
	5 "acceptance line"
lab_expect_sent "$LAB_QID" "$rcpt" mx.one.example 198.51.100.11 ipv4 15
lab_sink_wait one 1 5 || lab_fail "delivery logged but the sink has no message"
lab_expect_sink_file one
dump=$LAB_DUMP

[ "$(lab_dump_header "$dump" Client-Addr)" = 192.0.2.1 ] ||
	lab_fail "sink saw client $(lab_dump_header "$dump" Client-Addr), expected 192.0.2.1"
[ "$(lab_dump_header "$dump" Helo-Args)" = relay.example.net ] ||
	lab_fail "EHLO was '$(lab_dump_header "$dump" Helo-Args)', expected relay.example.net"
lab_dump_header "$dump" Mail-Args | grep -q "^<$(lab_re "$from")>" ||
	lab_fail "MAIL FROM was '$(lab_dump_header "$dump" Mail-Args)'"
[ "$(lab_dump_header "$dump" Rcpt-Args)" = "<$rcpt>" ] ||
	lab_fail "RCPT TO was '$(lab_dump_header "$dump" Rcpt-Args)'"

received=$(lab_dump_received "$dump") || lab_fail "no Received: header of ours"
case $received in
*"$LAB_QID"*) ;;
*) lab_fail "our Received: header lacks the queue id $LAB_QID: $received" ;;
esac
case $received in
*relay.example.net*) ;;
*) lab_fail "our Received: header lacks 'by relay.example.net': $received" ;;
esac

lab_dump_message "$dump" >"$LAB_DIR/got" || lab_fail "cannot parse the sink dump"
lab_compare_bytes "$LAB_DIR/msg" "$LAB_DIR/got" "one.example"
lab_pass
