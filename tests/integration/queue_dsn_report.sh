#!/bin/bash
# queue_dsn_report: the MX of dsn.example refuses two of a message's three recipients
# with 550 5.1.1 at RCPT and takes the third. The third is delivered alone; the sender
# gets exactly one report (RFC 3464: one per message and attempt) from <>, at the MX of
# the sender's own domain, and every field of it is checked after parsing it with
# Python's email package: multipart/report; report-type=delivery-status with text/plain
# (naming each address, quoting the remote reply, saying IPv4), message/delivery-status
# (Reporting-MTA, the queue id, Arrival-Date; per failed recipient Final-Recipient,
# Action: failed, Status 5.1.1, Remote-MTA, Diagnostic-Code with the 550 text,
# Last-Attempt-Date) and text/rfc822-headers (the original headers, not the body).
. "$(dirname "$0")/lab.sh"
. "$(dirname "$0")/lab_queue.sh"

labq_setup
lab_dns_start <<'ZONE'
dsn.example. MX 10 mx.dsn.example.
mx.dsn.example. A 198.51.100.151
client.example. MX 10 mx.client.example.
mx.client.example. A 198.51.100.152
ZONE
reply_for() { echo "550 5.1.1 <$1>: Recipient address rejected: User unknown in lab table"; }
labq_sink_start dsn 198.51.100.151 \
	--reject "bob@dsn.example=$(reply_for bob@dsn.example)" \
	--reject "dave@dsn.example=$(reply_for dave@dsn.example)"
labq_sink_start back 198.51.100.152
lab_conf_write "$LAB_DIR/dualrelay.conf"
lab_daemon_start "$LAB_DIR/dualrelay.conf"

from=alice@client.example
lab_make_message "$LAB_DIR/msg" "$from" "bob@dsn.example" "dsn report test"
lab_send "$from" "bob@dsn.example,carol@dsn.example,dave@dsn.example" "$LAB_DIR/msg" ||
	lab_fail "the message was not accepted"
qid=$LAB_QID
for r in bob dave; do
	lab_expect_log "$(lab_re "$qid"): to=<$r@dsn\.example>, relay=mx\.dsn\.example\[198\.51\.100\.151\]:25, family=ipv4, delay=[0-9.]+, dsn=5\.1\.1, status=bounced \(.*550 5\.1\.1" \
		10 "the bounce of $r"
done
lab_expect_sent "$qid" carol@dsn.example mx.dsn.example 198.51.100.151 ipv4 10
lab_expect_log "$(lab_re "$qid"): sender non-delivery notification: [0-9A-Za-z]+" 10 \
	"the notification"
dsnqid=$(sed -n "s/^.*$(lab_re "$qid"): sender non-delivery notification: \([0-9A-Za-z]*\).*/\1/p" \
	"$LAB_LOG" | head -n1)
lab_log "report $dsnqid for $qid"
lab_expect_sent "$dsnqid" "$from" mx.client.example 198.51.100.152 ipv4 10
labq_sink_wait back 1 5 || lab_fail "the report did not arrive at the sender's MX"

# The accepted recipient got the message, alone.
[ "$(labq_sink_count dsn)" -eq 1 ] || lab_fail "dsn.example's MX has $(labq_sink_count dsn) messages, expected 1"
got=$(labq_envelope "$(labq_sink_dir dsn)/1.eml" rcpts)
[ "$got" = "<carol@dsn.example>" ] || lab_fail "delivered to $got, expected only <carol@dsn.example>"

# Exactly one report, from <>, to the envelope sender.
sleep 1
[ "$(labq_sink_count back)" -eq 1 ] || lab_fail "the sender's MX has $(labq_sink_count back) messages, expected one report"
[ "$(grep -c "$(lab_re "$qid"): sender non-delivery notification" "$LAB_LOG")" -eq 1 ] ||
	lab_fail "more than one report for $qid"
report=$(labq_sink_dir back)/1.eml
[ "$(labq_envelope "$report" mail)" = "<>" ] ||
	lab_fail "the report's MAIL FROM is $(labq_envelope "$report" mail), expected <>"
[ "$(labq_envelope "$report" rcpts)" = "<$from>" ] ||
	lab_fail "the report went to $(labq_envelope "$report" rcpts), expected <$from>"
labq_dsn_check "$report" relay.example.net "$qid" "bob@dsn.example,dave@dsn.example" failed \
	'5\.1\.1' mx.dsn.example \
	'^smtp; 550 5\.1\.1 <{rcpt}>: Recipient address rejected: User unknown in lab table$' \
	'(?s){rcpt}.*550 5\.1\.1 <{rcpt}>: Recipient address rejected.*IPv4' \
	'^Subject: dsn report test\r?$' 'First line of the body' ||
	lab_fail "the report is not the RFC 3464 report expected"
# The original header block is complete: Message-ID and Received: too.
python3 - "$report" <<'PY' || lab_fail "the text/rfc822-headers part is not the original header block"
import email, email.policy, sys
m = email.message_from_bytes(open(sys.argv[1], "rb").read(), policy=email.policy.default)
h = list(m.iter_parts())[2].get_payload(decode=True).decode("utf-8", "replace")
for want in ("Message-ID: <dsn.report.test@client.example.net>", "From: alice@client.example",
             "Received: from client.example.net", "Content-Transfer-Encoding: 8bit"):
    assert want in h, "missing %r in:\n%s" % (want, h)
PY
labq_wait_queue_empty 5 || lab_fail "the queue is not empty: $(ls "$LAB_DIR/spool/queue")"
lab_pass
