#!/bin/bash
# fault_mx_partial_452: the MX answers 452 to some recipients of a transaction only (one
# "452 4.2.2 Mailbox full", one "452 4.5.3 Too many recipients") and 250 to the other
# three.  The three are delivered at once, the two are deferred with the server's reply
# and retried later (retry_min_s = 1) once the MX accepts them: every recipient reaches
# the MX exactly once, and the log has exactly one status=sent line per recipient.
. "$(dirname "$0")/lab.sh"
. "$(dirname "$0")/lab_family.sh"
. "$(dirname "$0")/lab_queue.sh"
. "$(dirname "$0")/lab_fault.sh"

labx_setup
lab_dns_start <<'ZONE'
part.example. MX 10 mx.part.example.
mx.part.example. A 198.51.100.181
ZONE
labq_sink_start part 198.51.100.181 \
	--reject "b@part.example=452 4.2.2 <b@part.example>: Mailbox full, try again later" \
	--reject "d@part.example=452 4.5.3 Too many recipients"
LABX_CONF="$LAB_DIR/dualrelay.conf"
labq_conf_write "$LABX_CONF" "retry_min_s = 1; retry_max_s = 2; max_lifetime_s = 3600;"
lab_daemon_start "$LABX_CONF"

from=alice@client.example.net
rcpts="a@part.example,b@part.example,c@part.example,d@part.example,e@part.example"
labf_message "$LAB_DIR/msg" "$from" a@part.example "partial 452"
lab_send "$from" "$rcpts" "$LAB_DIR/msg" || lab_fail "message not accepted"
qid=$LAB_QID
q=$(lab_re "$qid")
labx_accepted "$qid" ${rcpts//,/ }
for r in a c e; do
	lab_expect_log "$q: to=<$r@part\.example>, relay=mx\.part\.example\[198\.51\.100\.181\]:25, .*status=sent" \
		20 "delivery of <$r@part.example>"
done
lab_expect_log "$q: to=<b@part\.example>, .*dsn=4\.2\.2, status=deferred \(host mx\.part\.example\[198\.51\.100\.181\] said: 452 4\.2\.2 <b@part\.example>: Mailbox full" \
	10 "deferral of <b@part.example> with the server's 452"
lab_expect_log "$q: to=<d@part\.example>, .*dsn=4\.5\.3, status=deferred \(host mx\.part\.example\[198\.51\.100\.181\] said: 452 4\.5\.3 Too many recipients" \
	10 "deferral of <d@part.example> with the server's 452"
lab_log "deferral: $(grep -E "$q: to=<b@part.example>.*status=deferred" "$LAB_LOG" | head -n1)"
lab_log_has "status=(bounced|expired)" && lab_fail "a 452 bounced"
[ "$(labx_qsink_rcpts part)" -eq 3 ] || lab_fail "the MX holds $(labx_qsink_rcpts part) recipients, expected 3"

# The MX accepts everyone again: the retry sends b and d only.
labq_sink_stop part
labq_sink_start part 198.51.100.181
for r in b d; do
	lab_expect_log "$q: to=<$r@part\.example>, relay=mx\.part\.example\[198\.51\.100\.181\]:25, .*status=sent" \
		20 "retried delivery of <$r@part.example>"
done
labq_wait_queue_empty 10 || lab_fail "the queue is not empty after delivery"
sleep 3   # a duplicate delivery, if there were one, would show up within a retry interval
got=$(cat "$(labq_sink_dir part)"/*.json | python3 -c '
import json, sys
print(" ".join(sorted(r for l in sys.stdin for r in json.loads(l)["rcpts"])))')
[ "$got" = "<a@part.example> <b@part.example> <c@part.example> <d@part.example> <e@part.example>" ] ||
	lab_fail "recipients at the MX: $got (expected each of a..e once)"
labx_check_no_loss "$(labx_qsink_rcpts part)"
lab_pass
