#!/bin/bash
# queue_expiry: a recipient whose MX is down (connections refused) is deferred and retried
# every second (retry_min_s = retry_max_s = 1) until queue.max_lifetime_s = 3 has passed;
# then it is final: logged status=expired with a 5.x.x code and "message expired after
# 3 s", not tried again, and the sender's MX receives one RFC 3464 report from <> with
# Action: failed for it. The message leaves the queue.
. "$(dirname "$0")/lab.sh"
. "$(dirname "$0")/lab_queue.sh"

labq_setup
lab_dns_start <<'ZONE'
down.example. MX 10 mx.down.example.
mx.down.example. A 198.51.100.141
client.example. MX 10 mx.client.example.
mx.client.example. A 198.51.100.142
ZONE
lab_net_addr 198.51.100.141 # the address answers, nothing listens: connection refused
labq_sink_start back 198.51.100.142
labq_conf_write "$LAB_DIR/dualrelay.conf" "retry_min_s = 1; retry_max_s = 1; max_lifetime_s = 3;"
lab_daemon_start "$LAB_DIR/dualrelay.conf"

from=alice@client.example
lab_make_message "$LAB_DIR/msg" "$from" "late@down.example" "expiry test"
start=$(date +%s.%N)
lab_send "$from" "late@down.example" "$LAB_DIR/msg" || lab_fail "the message was not accepted"
qid=$LAB_QID
q=$(lab_re "$qid")
lab_expect_log "$q: to=<late@down\.example>, .*status=deferred" 5 "the first deferral"
lab_expect_log "$q: to=<late@down\.example>, .*dsn=5\.[0-9]+\.[0-9]+, status=expired \(message expired after 3 s in the queue; last error: .+\)" \
	10 "the expiry"
elapsed=$(echo "$(date +%s.%N) - $start" | bc)
line=$(grep -E "$q: to=<late@down\.example>, .*status=expired" "$LAB_LOG" | head -n1)
delay=$(sed -n 's/.*, delay=\([0-9.]*\),.*/\1/p' <<<"$line")
tries=$(grep -cE "$q: to=<late@down\.example>, .*status=deferred" "$LAB_LOG")
lab_log "expired after delay=$delay s (test clock ${elapsed%????????} s), $tries deferrals before"
lab_log "$(grep -E "$q: to=<late@down\.example>" "$LAB_LOG" | sed 's/ dualrelayd\[info\]: [0-9A-F]*: to=.*delay=\([0-9.]*\).*status=\([a-z]*\).*/ delay=\1 \2/' | tr '\n' ';')"
# The lifetime is counted in whole seconds from the arrival second: at least 2 s of real
# time, and with a 1 s retry interval not much more than 3 s.
[ "$(echo "$delay >= 2 && $delay < 6" | bc)" -eq 1 ] ||
	lab_fail "expired after $delay s, expected about 3 s"
[ "$tries" -ge 2 ] || lab_fail "only $tries attempt(s) before the expiry: no retries every second?"
# Retried every second (next attempt = this second + 1 s): a handful of deferrals, not
# one burst per second of them.
[ "$tries" -le 6 ] || lab_fail "$tries deferrals in about 3 s with retry_min_s = retry_max_s = 1"
conns=$(grep -cE "$q: connect to mx\.down\.example\[198\.51\.100\.141\]:25 \(ipv4\): Connection refused" "$LAB_LOG")
[ "$conns" -le 5 ] || lab_fail "$conns connection attempts in about 3 s: the MX is hammered"

lab_expect_log "$q: sender non-delivery notification: [0-9A-Za-z]+" 5 "the notification"
labq_sink_wait back 1 10 || lab_fail "no report arrived at the sender's MX"
report=$(labq_sink_dir back)/1.eml
[ "$(labq_envelope "$report" mail)" = "<>" ] || lab_fail "the report is not from <>"
[ "$(labq_envelope "$report" rcpts)" = "<$from>" ] || lab_fail "the report is not to <$from>"
labq_dsn_check "$report" relay.example.net "$qid" late@down.example failed '5\.[0-9]+\.[0-9]+' \
	'*' 'message expired after 3 s' '{rcpt}' '^Subject: expiry test\r?$' \
	'First line of the body' || lab_fail "the report is not the RFC 3464 report expected"

# Final means final: no attempt after the expiry, and the message is gone.
lab_expect_log "$q: removed" 5 "the removal of the expired message"
n=$(grep -cE "$q: to=<late@down\.example>" "$LAB_LOG")
sleep 2
[ "$(grep -cE "$q: to=<late@down\.example>" "$LAB_LOG")" -eq "$n" ] ||
	lab_fail "the recipient was tried again after it expired"
[ "$(labq_sink_count back)" -eq 1 ] || lab_fail "$(labq_sink_count back) reports, expected 1"
labq_wait_queue_empty 5 || lab_fail "the queue is not empty: $(ls "$LAB_DIR/spool/queue")"
lab_pass
