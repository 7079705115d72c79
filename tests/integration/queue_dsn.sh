#!/bin/bash
# queue_dsn: a recipient the MX refuses permanently yields one RFC 3464 report, from <>
# to the envelope sender, that arrives at the sender's own MX and parses as
# multipart/report with the three parts and the right fields, while the other recipient
# of the message is delivered. A message from <> that bounces produces no report at all
# (never a bounce of a bounce). A recipient still deferred after queue.max_lifetime_s
# expires and is reported too.
. "$(dirname "$0")/lab.sh"

lab_setup
lab_dns_start <<'ZONE'
dsn.example. MX 10 mx.dsn.example.
mx.dsn.example. A 198.51.100.91
down.example. MX 10 mx.down.example.
mx.down.example. A 198.51.100.93
client.example. MX 10 mx.client.example.
mx.client.example. A 198.51.100.92
ZONE
# The MX refuses RCPT for every recipient but "ok" (smtp-sink: hard reject on RCPT
# except with the -R... option is not per address; use a Postfix-free small rule: the
# sink rejects all RCPTs, and the accepted recipient goes to the sender's MX instead).
lab_sink_start refuse 198.51.100.91 -f rcpt
lab_sink_start back 198.51.100.92
lab_net_addr 198.51.100.93
lab_conf_write "$LAB_DIR/dualrelay.conf"
sed -i 's/max_lifetime_s = 120;/max_lifetime_s = 4; delay_warning_s = 1;/' "$LAB_DIR/dualrelay.conf"
lab_daemon_start "$LAB_DIR/dualrelay.conf"

from=alice@client.example
lab_make_message "$LAB_DIR/msg" "$from" "bob@dsn.example" "dsn test"
lab_send "$from" "bob@dsn.example,carol@client.example" "$LAB_DIR/msg" || lab_fail "not accepted"
qid=$LAB_QID
lab_expect_log "$(lab_re "$qid"): to=<bob@dsn.example>, relay=mx.dsn.example\[198.51.100.91\]:25, family=ipv4, .*dsn=5\.[0-9.]+, status=bounced" 10 "the bounce"
lab_expect_sent "$qid" carol@client.example mx.client.example 198.51.100.92 ipv4 10
lab_expect_log "$(lab_re "$qid"): sender non-delivery notification: [0-9A-F]+" 10 "the notification"
lab_sink_wait back 2 10 || lab_fail "the report did not arrive at the sender's MX"

report=""
for f in $(lab_sink_files back); do
	[ "$(lab_dump_header "$f" Mail-Args | sed 's/ .*//')" = "<>" ] && report=$f
done
[ -n "$report" ] || lab_fail "no message from <> at the sender's MX"
[ "$(lab_dump_header "$report" Rcpt-Args | sed 's/ .*//')" = "<$from>" ] || lab_fail "report not to the sender"
python3 - "$report" "$qid" <<'PY' || lab_fail "the report is not a valid RFC 3464 DSN"
import email, email.policy, sys
# The sink's dump: its X- lines and its own 3-line Received: header, then the message
# (locally generated: no Received: of ours), with the sink's LF line ends.
lines = open(sys.argv[1], "rb").read().split(b"\n")
i = 0
while lines[i].startswith(b"X-"):
    i += 1
assert lines[i].startswith(b"Received: from "), lines[i]
raw = b"\n".join(lines[i + 3:])
m = email.message_from_bytes(raw, policy=email.policy.default)
assert m.get_content_type() == "multipart/report", m.get_content_type()
assert m.get_param("report-type") == "delivery-status"
assert m["Auto-Submitted"] == "auto-replied"
parts = list(m.iter_parts())
assert [p.get_content_type() for p in parts] == ["text/plain", "message/delivery-status", "text/rfc822-headers"]
text = parts[0].get_content()
assert "bob@dsn.example" in text and "over IPv4" in text, text
blocks = parts[1].get_payload()
assert blocks[0]["Reporting-MTA"] == "dns; relay.example.net", blocks[0]["Reporting-MTA"]
assert blocks[0]["Arrival-Date"]
r = blocks[1]
assert r["Final-Recipient"] == "rfc822; bob@dsn.example"
assert r["Action"] == "failed" and r["Status"].startswith("5."), (r["Action"], r["Status"])
assert r["Remote-MTA"] == "dns; mx.dsn.example"
assert r["Diagnostic-Code"].startswith("smtp; 5"), r["Diagnostic-Code"]
assert r["Last-Attempt-Date"]
assert len(blocks) == 2, "only the failed recipient is reported"
hdrs = parts[2].get_payload() if not parts[2].is_multipart() else ""
hdrs = parts[2].get_content() if isinstance(parts[2].get_content(), str) else str(parts[2].get_content())
assert "Subject: dsn test" in hdrs and "First line of the body" not in raw.decode("utf-8", "replace")
print("report ok:", r["Status"], r["Diagnostic-Code"])
PY

# A message from <> that bounces: logged, nothing sent anywhere.
before=$(lab_sink_count back)
lab_make_message "$LAB_DIR/msg2" "" "x@dsn.example" "null sender"
lab_send "<>" "x@dsn.example" "$LAB_DIR/msg2" || lab_fail "null-sender message not accepted"
qid2=$LAB_QID
lab_expect_log "$(lab_re "$qid2"): to=<x@dsn.example>.*status=bounced" 10 "the null-sender bounce"
lab_expect_log "$(lab_re "$qid2"): sender is <>: no delivery status notification" 5 "no report for <>"
sleep 1
[ "$(lab_sink_count back)" -eq "$before" ] || lab_fail "something was sent about a null-sender message"

# Delay warning, then expiry: nothing listens at mx.down.example; after delay_warning_s
# (1 s) the sender is told once that the message is late, after max_lifetime_s (4 s) the
# recipient expires and the sender gets the failure report.
lab_make_message "$LAB_DIR/msg3" "$from" "late@down.example" "expiry"
lab_send "$from" "late@down.example" "$LAB_DIR/msg3" || lab_fail "expiry message not accepted"
qid3=$LAB_QID
lab_expect_log "$(lab_re "$qid3"): to=<late@down.example>.*status=deferred" 10 "the first deferral"
lab_expect_log "$(lab_re "$qid3"): sender delay notification: [0-9A-F]+" 10 "the delay warning"
lab_expect_log "$(lab_re "$qid3"): to=<late@down.example>.*dsn=5\.[0-9.]+, status=expired \(message expired after 4 s" 15 "the expiry"
lab_sink_wait back "$((before + 2))" 10 || lab_fail "no delay warning and failure report for the expired recipient"
[ "$(grep -c "$(lab_re "$qid3"): sender delay notification" "$LAB_LOG")" -eq 1 ] ||
	lab_fail "more than one delay warning"
grep -l "^Subject: Delayed Mail (still being retried)" $(lab_sink_files back) >/dev/null ||
	lab_fail "no 'Delayed Mail' report at the sender's MX"
lab_pass
