#!/bin/bash
# queue_no_bounce_of_bounce: a report is never sent about a message from the null sender.
#  1. A message with MAIL FROM:<> whose recipient the MX refuses with 550: the recipient
#     bounces, the log says "sender is <>: no delivery status notification", and no
#     message goes anywhere (every MX of the lab is counted).
#  2. A report that itself bounces: alice@client.example sends to a refused recipient;
#     her own MX refuses her address too, so the report (from <>) bounces there. That
#     bounce is logged as "no delivery status notification" and ends the story: one
#     report attempted in all, nothing delivered anywhere, the queue empties.
. "$(dirname "$0")/lab.sh"
. "$(dirname "$0")/lab_queue.sh"

labq_setup
lab_dns_start <<'ZONE'
dsn.example. MX 10 mx.dsn.example.
mx.dsn.example. A 198.51.100.161
client.example. MX 10 mx.client.example.
mx.client.example. A 198.51.100.162
ZONE
labq_sink_start dsn 198.51.100.161 \
	--reject "nobody@dsn.example=550 5.1.1 <nobody@dsn.example>: User unknown"
labq_sink_start back 198.51.100.162 \
	--reject "alice@client.example=550 5.1.1 <alice@client.example>: User unknown"
lab_conf_write "$LAB_DIR/dualrelay.conf"
lab_daemon_start "$LAB_DIR/dualrelay.conf"
# Every RCPT any MX of the lab was given (the sinks log each one, accepted or not).
rcpts_tried() {
	cat "$(labq_sink_dir dsn)/log" "$(labq_sink_dir back)/log" 2>/dev/null | wc -l
}

# 1. From <>.
lab_make_message "$LAB_DIR/msg1" "MAILER-DAEMON@client.example" "nobody@dsn.example" "null sender"
lab_send "<>" "nobody@dsn.example" "$LAB_DIR/msg1" || lab_fail "the message from <> was not accepted"
q1=$(lab_re "$LAB_QID")
lab_expect_log "$q1: to=<nobody@dsn\.example>, relay=mx\.dsn\.example\[198\.51\.100\.161\]:25, .*dsn=5\.1\.1, status=bounced" \
	10 "the bounce of the null-sender message"
lab_expect_log "$q1: sender is <>: no delivery status notification for 1 recipient" 5 \
	"no report for a message from <>"
lab_expect_log "$q1: removed" 5 "the removal of the bounced message"
sleep 1
lab_log_has "$q1: sender non-delivery notification" && lab_fail "a report was made about a message from <>"
[ "$(labq_sink_count dsn)" -eq 0 ] && [ "$(labq_sink_count back)" -eq 0 ] ||
	lab_fail "something was delivered: dsn=$(labq_sink_count dsn) back=$(labq_sink_count back)"
[ "$(rcpts_tried)" -eq 1 ] || lab_fail "$(rcpts_tried) RCPTs at the MXs, expected only the refused one"
labq_wait_queue_empty 5 || lab_fail "the queue is not empty: $(ls "$LAB_DIR/spool/queue")"

# 2. The report bounces: no report about the report.
lab_make_message "$LAB_DIR/msg2" "alice@client.example" "nobody@dsn.example" "bounce loop"
lab_send "alice@client.example" "nobody@dsn.example" "$LAB_DIR/msg2" || lab_fail "message 2 not accepted"
q2=$(lab_re "$LAB_QID")
lab_expect_log "$q2: to=<nobody@dsn\.example>, .*status=bounced" 10 "the bounce of message 2"
lab_expect_log "$q2: sender non-delivery notification: [0-9A-Za-z]+" 5 "the report about message 2"
dsnqid=$(sed -n "s/.*$q2: sender non-delivery notification: \([0-9A-Za-z]*\).*/\1/p" "$LAB_LOG" | head -n1)
dq=$(lab_re "$dsnqid")
lab_expect_log "$dq: to=<alice@client\.example>, relay=mx\.client\.example\[198\.51\.100\.162\]:25, .*dsn=5\.1\.1, status=bounced" \
	10 "the bounce of the report $dsnqid"
lab_expect_log "$dq: sender is <>: no delivery status notification for 1 recipient" 5 \
	"no report about the report"
lab_expect_log "$dq: removed" 5 "the removal of the bounced report"
sleep 1
n=$(grep -c 'sender non-delivery notification' "$LAB_LOG")
[ "$n" -eq 1 ] || lab_fail "$n reports made, expected exactly 1 (about message 2 only)"
[ "$(labq_sink_count dsn)" -eq 0 ] && [ "$(labq_sink_count back)" -eq 0 ] ||
	lab_fail "something was delivered: dsn=$(labq_sink_count dsn) back=$(labq_sink_count back)"
[ "$(rcpts_tried)" -eq 3 ] ||
	lab_fail "$(rcpts_tried) RCPTs at the MXs, expected 3 (two refused messages, one refused report)"
grep -q 'mail=<> rcpt=<alice@client.example> reply=550' "$(labq_sink_dir back)/log" ||
	lab_fail "the report was not offered from <> to <alice@client.example>"
labq_wait_queue_empty 5 || lab_fail "the queue is not empty: $(ls "$LAB_DIR/spool/queue")"
lab_pass
