#!/bin/bash
# inbound_postmaster: RFC 5321 4.5.1, RCPT TO:<Postmaster> (no domain, any case) is
# accepted from any client, here one from the "internet" (192.0.2.254, outside
# relay_networks), and the message goes to the configured postmaster address (by default
# postmaster@ the host name, relay.example.net) through the normal routing. It opens no
# relay: the same client is still refused for any other recipient, postmaster@ another
# domain included, and nothing reaches that domain's MX.
. "$(dirname "$0")/lab.sh"

lab_setup
lab_dns_start <<'ZONE'
relay.example.net. MX 10 mx.relay.example.net.
mx.relay.example.net. A 198.51.100.181
one.example. MX 10 mx.one.example.
mx.one.example. A 198.51.100.182
ZONE
lab_sink_start pm 198.51.100.181
lab_sink_start one 198.51.100.182
LAB_CONF_LISTEN='{ address = "127.0.0.1"; port = 2525; }, { address = "::1"; port = 2525; },
  { address = "192.0.2.1"; port = 2525; }'
lab_conf_write "$LAB_DIR/dualrelay.conf"
lab_daemon_start "$LAB_DIR/dualrelay.conf"
wait_for 5 lab_listening "$LAB_RELAY" 192.0.2.1 2525 || lab_fail "no listener on 192.0.2.1:2525"

# outside_send TO NAME: swaks from outside relay_networks; its output in $LAB_DIR/NAME.out.
outside_send() {
	lab_make_message "$LAB_DIR/$2.msg" someone@outside.test "$1" "to the postmaster"
	lab_wire_data "$LAB_DIR/$2.msg" >"$LAB_DIR/$2.wire"
	lab_inet swaks --server 192.0.2.1:2525 --helo outside.test --from someone@outside.test \
		--to "$1" --data "@$LAB_DIR/$2.wire" --no-data-fixup --timeout 20 \
		>"$LAB_DIR/$2.out" 2>&1
}

outside_send PostMaster pm || lab_fail "RCPT TO:<PostMaster> from outside not accepted: $(cat "$LAB_DIR/pm.out")"
grep -q '^ *-> RCPT TO:<PostMaster>$' "$LAB_DIR/pm.out" ||
	lab_fail "swaks did not send RCPT TO:<PostMaster> as such: $(grep RCPT "$LAB_DIR/pm.out")"
qid=$(sed -n 's/.* queued as \([0-9A-F]*\).*/\1/p' "$LAB_DIR/pm.out" | head -n1)
[ -n "$qid" ] || lab_fail "no queue id in the reply: $(cat "$LAB_DIR/pm.out")"
lab_expect_log "RCPT from .*192\.0\.2\.254.*: <Postmaster> accepted for <postmaster@relay\.example\.net>" 5 \
	"the postmaster acceptance line"
lab_expect_sent "$qid" postmaster@relay.example.net mx.relay.example.net 198.51.100.181 ipv4 15
lab_sink_wait pm 1 5 || lab_fail "delivery logged but the postmaster's MX has no message"
lab_expect_sink_file pm
[ "$(lab_dump_header "$LAB_DUMP" Rcpt-Args)" = "<postmaster@relay.example.net>" ] ||
	lab_fail "the postmaster's MX got '$(lab_dump_header "$LAB_DUMP" Rcpt-Args)'"

# No relay hole: any other recipient from outside is still 554, postmaster@ too.
for to in victim@one.example postmaster@one.example Postmaster@relay.example.net; do
	n=${to%%@*}.${to#*@}
	outside_send "$to" "$n" && lab_fail "swaks from outside to <$to> succeeded"
	grep -Eq '^<\*\* +554 5\.7\.1' "$LAB_DIR/$n.out" || lab_fail "no 554 5.7.1 for <$to>: $(cat "$LAB_DIR/$n.out")"
	grep -q 'queued as' "$LAB_DIR/$n.out" && lab_fail "the message to <$to> was queued"
done
sleep 2
[ "$(lab_sink_count one)" -eq 0 ] || lab_fail "one.example's MX got a message from the outside client"
[ "$(lab_sink_count pm)" -eq 1 ] || lab_fail "the postmaster's MX has $(lab_sink_count pm) messages, expected 1"
lab_pass
