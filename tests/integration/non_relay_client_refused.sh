#!/bin/bash
# non_relay_client_refused: dualrelayd also listens on the relay's lab address 192.0.2.1; a
# client from the "internet" (192.0.2.254, outside relay_networks) is refused with
# 554 5.7.1 and nothing is queued or delivered, while a loopback client on the same daemon
# relays normally.
. "$(dirname "$0")/lab.sh"

lab_setup
lab_dns_start <<'ZONE'
one.example. MX 10 mx.one.example.
mx.one.example. A 198.51.100.11
ZONE
lab_sink_start one 198.51.100.11
LAB_CONF_LISTEN='{ address = "127.0.0.1"; port = 2525; }, { address = "::1"; port = 2525; },
  { address = "192.0.2.1"; port = 2525; }'
lab_conf_write "$LAB_DIR/dualrelay.conf"
lab_daemon_start "$LAB_DIR/dualrelay.conf"
wait_for 5 lab_listening "$LAB_RELAY" 192.0.2.1 2525 || lab_fail "no listener on 192.0.2.1:2525"

spool_before=$(lab_spool_files)
lab_make_message "$LAB_DIR/msg" spammer@outside.test victim@one.example "open relay?"
lab_wire_data "$LAB_DIR/msg" >"$LAB_DIR/wire"
lab_inet swaks --server 192.0.2.1:2525 --helo outside.test --from spammer@outside.test \
	--to victim@one.example --data "@$LAB_DIR/wire" --no-data-fixup --timeout 20 \
	>"$LAB_DIR/swaks.out" 2>&1
rc=$?
[ "$rc" -ne 0 ] || lab_fail "swaks from outside relay_networks succeeded"
grep -Eq '^<\*\* +554 5\.7\.1' "$LAB_DIR/swaks.out" || lab_fail "no 554 5.7.1 reply to the outside client"
grep -q 'queued as' "$LAB_DIR/swaks.out" && lab_fail "the outside client's message was queued"
lab_log_has 'client=\[192\.0\.2\.254\]:[0-9]+, from=' && lab_fail "an acceptance line logged for the outside client"
[ "$(lab_spool_files)" -eq "$spool_before" ] || lab_fail "the spool changed after the refused transaction"

# The same daemon still relays for a loopback client.
lab_send alice@client.example.net allowed@one.example "$LAB_DIR/msg" ||
	lab_fail "loopback client not accepted (no 250 ... queued as)"
lab_expect_sent "$LAB_QID" allowed@one.example mx.one.example 198.51.100.11 ipv4 15
lab_sink_wait one 1 5 || lab_fail "delivery logged but the sink has no message"
sleep 2
lab_expect_sink_file one
dump=$LAB_DUMP
[ "$(lab_dump_header "$dump" Rcpt-Args)" = "<allowed@one.example>" ] ||
	lab_fail "the sink got '$(lab_dump_header "$dump" Rcpt-Args)', expected only <allowed@one.example>"
lab_pass
