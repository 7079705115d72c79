#!/bin/bash
# queue_dsn_crash: a DSN owed to the sender survives a SIGKILL. A message goes to
# bob@bad.example (refused with 550: bounced at once) and carol@slow.example (whose MX
# holds its greeting: the delivery round stays open, so the DSN, composed when the round
# ends, is not queued yet). The daemon is killed with SIGKILL in that window, with bob
# recorded as bounced in the spool and no DSN spooled. After the restart the DSN must be
# composed from the spool and reach the sender's MX; a second SIGKILL and restart must
# not send a second one; when the slow MX opens, carol gets the message and the queue
# empties, still with one report in all.
. "$(dirname "$0")/lab.sh"
. "$(dirname "$0")/lab_queue.sh"

labq_setup
lab_dns_start <<'ZONE'
bad.example. MX 10 mx.bad.example.
mx.bad.example. A 198.51.100.171
slow.example. MX 10 mx.slow.example.
mx.slow.example. A 198.51.100.172
client.example. MX 10 mx.client.example.
mx.client.example. A 198.51.100.173
ZONE
labq_sink_start bad 198.51.100.171 \
	--reject "bob@bad.example=550 5.1.1 <bob@bad.example>: User unknown"
labq_sink_start slow 198.51.100.172 --gate "$LAB_DIR/gate"
labq_sink_start back 198.51.100.173
lab_conf_write "$LAB_DIR/dualrelay.conf"
lab_daemon_start "$LAB_DIR/dualrelay.conf"

from=alice@client.example
lab_make_message "$LAB_DIR/msg" "$from" "bob@bad.example" "dsn crash test"
lab_send "$from" "bob@bad.example,carol@slow.example" "$LAB_DIR/msg" || lab_fail "not accepted"
qid=$LAB_QID
q=$(lab_re "$qid")
lab_expect_log "$q: to=<bob@bad\.example>, relay=mx\.bad\.example\[198\.51\.100\.171\]:25, .*dsn=5\.1\.1, status=bounced" \
	10 "the bounce"
# Sessions the slow MX has accepted (a killed daemon's session stays counted as open: the
# sink does not read while it holds the greeting).
slow_sessions() {
	local n
	n=$(labq_sink_counter slow all total 2>/dev/null)
	[ "${n:-0}" -ge "$1" ]
}
wait_for 10 slow_sessions 1 || lab_fail "no session held at the slow MX's gate"

# The window: bob is final on disk, the DSN is not queued.
state="$LAB_DIR/spool/queue/$qid.state"
grep -q '^R 0 B ' "$state" || lab_fail "no bounced record for bob in $state: $(cat "$state")"
grep -q '^N ' "$state" && lab_fail "a notified record before the round ended: $(cat "$state")"
lab_log_has "$q: sender non-delivery notification" && lab_fail "the DSN was queued already"
lab_daemon_kill9
[ "$(labq_queue_files)" -eq 2 ] ||
	lab_fail "expected the message and its state file only, queue/ has: $(ls "$LAB_DIR/spool/queue")"
[ "$(labq_sink_count back)" -eq 0 ] || lab_fail "something reached the sender's MX before the restart"
lab_log "killed with bob bounced and no DSN queued"

# First restart: the owed DSN is composed from the spool and delivered.
lab_daemon_start "$LAB_DIR/dualrelay.conf"
lab_expect_log "$q: to=<bob@bad\.example>: no notification on record for this failure" 10 \
	"the owed DSN found at recovery"
lab_expect_log "$q: sender non-delivery notification: [0-9A-F]+" 10 "the notification"
dsnqid=$(sed -n "s/^.*$q: sender non-delivery notification: \([0-9A-F]*\).*/\1/p" "$LAB_LOG" |
	head -n1)
lab_expect_sent "$dsnqid" "$from" mx.client.example 198.51.100.173 ipv4 20
labq_sink_wait back 1 10 || lab_fail "the report did not arrive at the sender's MX"
report=$(labq_sink_dir back)/1.eml
[ "$(labq_envelope "$report" mail)" = "<>" ] ||
	lab_fail "the report's MAIL FROM is $(labq_envelope "$report" mail), expected <>"
[ "$(labq_envelope "$report" rcpts)" = "<$from>" ] ||
	lab_fail "the report went to $(labq_envelope "$report" rcpts), expected <$from>"
labq_dsn_check "$report" relay.example.net "$qid" "bob@bad.example" failed '5\.1\.1' \
	mx.bad.example '^smtp; 550 5\.1\.1 <{rcpt}>: User unknown$' \
	'(?s){rcpt}.*550 5\.1\.1 <{rcpt}>: User unknown.*IPv4' \
	'^Subject: dsn crash test\r?$' 'First line of the body' ||
	lab_fail "the report is not the RFC 3464 report expected"
grep -q '^N 0$' "$state" || lab_fail "no notified record for bob after the DSN: $(cat "$state")"

# Second restart, again by SIGKILL with carol's delivery held: no second DSN.
wait_for 10 slow_sessions 2 || lab_fail "no session held at the slow MX's gate after the restart"
lab_daemon_kill9
lab_daemon_start "$LAB_DIR/dualrelay.conf"
wait_for 10 slow_sessions 3 || lab_fail "no session held at the slow MX's gate after the second restart"
sleep 3
[ "$(grep -c "$q: sender non-delivery notification" "$LAB_LOG")" -eq 1 ] ||
	lab_fail "a second DSN was composed for $qid"
[ "$(grep -c "$q: to=<bob@bad\.example>: no notification on record" "$LAB_LOG")" -eq 1 ] ||
	lab_fail "bob's DSN was owed again after the second restart"
[ "$(labq_sink_count back)" -eq 1 ] || lab_fail "the sender's MX has $(labq_sink_count back) messages, expected 1"

# The slow MX opens: carol gets the message once, bob never, and the queue empties.
touch "$LAB_DIR/gate"
lab_expect_sent "$qid" carol@slow.example mx.slow.example 198.51.100.172 ipv4 30
labq_wait_queue_empty 15 || lab_fail "the queue did not empty: $(ls "$LAB_DIR/spool/queue")"
[ "$(labq_sink_count slow)" -eq 1 ] || lab_fail "the slow MX has $(labq_sink_count slow) messages, expected 1"
[ "$(labq_sink_count bad)" -eq 0 ] || lab_fail "bob's MX accepted a message"
sleep 1
[ "$(labq_sink_count back)" -eq 1 ] || lab_fail "the sender's MX has $(labq_sink_count back) messages, expected 1"
lab_pass
