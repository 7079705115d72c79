#!/bin/bash
# fault_mx_drop_in_data: the MX closes the connection in the middle of DATA (queue_sink.py
# --drop-in-data: after 100000 octets of a message of about 300 KB, without a reply).
# The recipients are not counted as delivered: each is deferred with a clear "lost
# connection ... while sending the message body"-style reason and stays queued.  Then
# the MX behaves; the retry timer (retry_min_s = 1) delivers the message once, and the
# log holds exactly one status=sent line per recipient (no duplicate delivery counted).
. "$(dirname "$0")/lab.sh"
. "$(dirname "$0")/lab_family.sh"
. "$(dirname "$0")/lab_queue.sh"
. "$(dirname "$0")/lab_fault.sh"

labx_setup
lab_dns_start <<'ZONE'
drop.example. MX 10 mx.drop.example.
mx.drop.example. A 198.51.100.171
ZONE
labq_sink_start drop 198.51.100.171 --drop-in-data 100000
LABX_CONF="$LAB_DIR/dualrelay.conf"
labq_conf_write "$LABX_CONF" "retry_min_s = 1; retry_max_s = 2; max_lifetime_s = 3600;" \
	"timeouts = { smtp_timeout_s = 10; };"
lab_daemon_start "$LABX_CONF"

from=alice@client.example.net
{
	printf 'From: %s\r\nTo: a@drop.example\r\nSubject: dropped in DATA\r\n\r\n' "$from"
	for i in $(seq 1 4000); do printf 'line %05d of a long body that the MX will not see the end of\r\n' "$i"; done
} >"$LAB_DIR/msg"
lab_send "$from" a@drop.example,b@drop.example "$LAB_DIR/msg" || lab_fail "message not accepted"
qid=$LAB_QID
q=$(lab_re "$qid")
labx_accepted "$qid" a@drop.example b@drop.example
for r in a b; do
	lab_expect_log "$q: to=<$r@drop\.example>, relay=mx\.drop\.example\[198\.51\.100\.171\]:25, .*dsn=4\.[0-9.]+, status=deferred \(lost connection with mx\.drop\.example\[198\.51\.100\.171\] while" \
		30 "deferral of <$r@drop.example> after the connection was dropped in DATA"
done
lab_log "deferral: $(grep -E "$q: to=<a@drop.example>.*status=deferred" "$LAB_LOG" | head -n1)"
grep -q "dropped in DATA" "$(labq_sink_dir drop)/log" || lab_fail "the MX never dropped the connection"
lab_log_has "$q: to=<.*status=(sent|bounced)" && lab_fail "a dropped transfer was counted as final"
[ "$(labq_sink_count drop)" -eq 0 ] || lab_fail "the MX stored a message although it dropped it"
labx_check_no_loss 0

# The MX recovers: the next retry delivers, once.
labq_sink_stop drop
labq_sink_start drop 198.51.100.171
for r in a b; do
	lab_expect_log "$q: to=<$r@drop\.example>, relay=mx\.drop\.example\[198\.51\.100\.171\]:25, .*status=sent" \
		20 "retried delivery of <$r@drop.example>"
done
labq_wait_queue_empty 10 || lab_fail "the queue is not empty after delivery"
sleep 3   # a duplicate delivery, if there were one, would show up within a retry interval
[ "$(labq_sink_count drop)" -eq 1 ] || lab_fail "the MX holds $(labq_sink_count drop) messages, expected 1"
cmp -s "$LAB_DIR/msg" <(tail -c "$(stat -c %s "$LAB_DIR/msg")" "$(labq_sink_dir drop)"/*.eml) ||
	lab_fail "the delivered message is not the one accepted"
labx_check_no_loss "$(labx_qsink_rcpts drop)"
lab_pass
