#!/bin/bash
# metrics: with metrics_listen set, GET /metrics answers in the Prometheus text format,
# accepted by a real parser (prometheus_client, or promtool), and its numbers are what
# happened: one message delivered over IPv6, one over IPv4, one deferred after a refused
# connection (still queued, so the queue gauges and its age move), one bounced at NXDOMAIN
# whose DSN is delivered over IPv4; the open inbound session count follows a client that
# stays connected; the same counters as "dualrelayctl stats". Other paths get 404.
. "$(dirname "$0")/lab.sh"
. "$(dirname "$0")/lab_ops.sh"

lab_setup
lab_require curl
labo_prom_find
lab_dns_start <<'ZONE'
v6.example. MX 10 mx6.metrics.example.
mx6.metrics.example. AAAA 2001:db8:100::81
v4.example. MX 10 mx4.metrics.example.
mx4.metrics.example. A 198.51.100.81
down.example. MX 10 mxd.metrics.example.
mxd.metrics.example. A 198.51.100.82
ZONE
lab_sink_start m6 2001:db8:100::81
lab_sink_start m4 198.51.100.81
lab_net_addr 198.51.100.82
CONF="$LAB_DIR/dualrelay.conf"
URL=http://127.0.0.1:9125/metrics
lab_conf_write "$CONF" 'metrics_listen = "127.0.0.1:9125";'
# Retries far apart: the deferred message stays deferred (attempts 1) for the whole test.
sed -i 's/queue = { retry_min_s = 1; retry_max_s = 2;/queue = { retry_min_s = 300; retry_max_s = 600;/' "$CONF"
lab_daemon_start "$CONF"
lab_expect_log "metrics: serving http://127\.0\.0\.1:9125/metrics" 5 "metrics listener"

# Before any mail: a valid exposition with zeros.
code=$(labo_metrics_fetch "$URL" "$LAB_DIR/m0") || lab_fail "curl $URL failed"
[ "$code" = 200 ] || lab_fail "GET /metrics answered $code"
grep -qi '^Content-Type: text/plain; version=0\.0\.4' "$LAB_DIR/m0.headers" ||
	lab_fail "Content-Type: $(cat "$LAB_DIR/m0.headers")"
labo_prom_parse "$LAB_DIR/m0" >"$LAB_DIR/m0.samples" || lab_fail "the parser rejects: $(cat "$LAB_DIR/m0")"
[ "$(labo_prom_value "$LAB_DIR/m0.samples" dualrelay_messages_received_total)" = 0 ] ||
	lab_fail "received before any mail: $(cat "$LAB_DIR/m0.samples")"

# Sender in v4.example, so the DSN for the NXDOMAIN recipient lands on sink m4.
from=alice@v4.example
start=$(date +%s)
declare -A qid
for r in bob@v6.example carol@v4.example dave@down.example erin@no-such-domain.example; do
	lab_make_message "$LAB_DIR/msg.$r" "$from" "$r" "metrics $r"
	lab_send "$from" "$r" "$LAB_DIR/msg.$r" || lab_fail "message to $r not accepted"
	qid[$r]=$LAB_QID
done
lab_expect_sent "${qid[bob@v6.example]}" bob@v6.example mx6.metrics.example 2001:db8:100::81 ipv6 10
lab_expect_sent "${qid[carol@v4.example]}" carol@v4.example mx4.metrics.example 198.51.100.81 ipv4 10
lab_expect_log "$(lab_re "${qid[dave@down.example]}"): to=<dave@down\.example>.*status=deferred" 10 \
	"deferral of dave@down.example"
lab_expect_log "$(lab_re "${qid[erin@no-such-domain.example]}"): to=<erin@no-such-domain\.example>.*dsn=5\.1\.2, status=bounced" \
	10 "NXDOMAIN bounce"
lab_sink_wait m4 2 10 || lab_fail "the DSN did not reach sink m4"
lab_expect_log "to=<alice@v4\.example>.*family=ipv4.*status=sent" 10 "DSN delivery"
sleep 2 # the oldest message is at least 2 s old; swaks' sessions are closed

# A client that connects and stays: one inbound session now. ("ip netns exec" execs
# python3, so $! is the client itself.)
ip netns exec "$LAB_RELAY" python3 -c 'import socket, time
s = socket.create_connection(("127.0.0.1", 2525)); s.recv(512); time.sleep(30)' &
holder=$!
LAB_PIDS="$LAB_PIDS $holder"
sleep 1
code=$(labo_metrics_fetch "$URL" "$LAB_DIR/m1") || lab_fail "curl $URL failed"
[ "$code" = 200 ] || lab_fail "GET /metrics answered $code"
now=$(date +%s)
lab_stop_pid "$holder"
lab_forget_pid "$holder"
labo_prom_parse "$LAB_DIR/m1" >"$LAB_DIR/m1.samples" || lab_fail "the parser rejects: $(cat "$LAB_DIR/m1")"
lab_log "samples: $(tr '\n' ';' <"$LAB_DIR/m1.samples")"

expect() { # SAMPLE VALUE
	local v
	v=$(labo_prom_value "$LAB_DIR/m1.samples" "$1")
	[ "$v" = "$2" ] || lab_fail "$1 is $v, expected $2"
}
expect dualrelay_messages_received_total 4
expect 'dualrelay_recipients_total{family="ipv6",outcome="sent"}' 1
expect 'dualrelay_recipients_total{family="ipv4",outcome="sent"}' 2
expect 'dualrelay_recipients_total{family="none",outcome="sent"}' 0
expect 'dualrelay_recipients_total{family="ipv4",outcome="deferred"}' 1
expect 'dualrelay_recipients_total{family="ipv6",outcome="deferred"}' 0
expect 'dualrelay_recipients_total{family="none",outcome="bounced"}' 1
expect 'dualrelay_recipients_total{family="ipv4",outcome="bounced"}' 0
expect 'dualrelay_connect_failures_total{family="ipv4",reason="refused"}' 1
expect 'dualrelay_connect_failures_total{family="ipv4",reason="timeout"}' 0
expect 'dualrelay_connect_failures_total{family="ipv6",reason="refused"}' 0
expect 'dualrelay_family_rejections_total{family="ipv4"}' 0
expect 'dualrelay_family_rejections_total{family="ipv6"}' 0
expect 'dualrelay_fallbacks_total{level="tcp"}' 0
expect 'dualrelay_fallbacks_total{level="smtp"}' 0
expect dualrelay_bounces_sent_total 1
expect dualrelay_queue_messages 1
expect dualrelay_queue_held_messages 0
expect dualrelay_connections 1
expect dualrelay_deliveries_active 0
# The sinks agree with the counters: 1 over IPv6, 2 (message and DSN) over IPv4.
[ "$(lab_sink_count m6)" -eq 1 ] || lab_fail "sink m6 has $(lab_sink_count m6) messages"
[ "$(lab_sink_count m4)" -eq 2 ] || lab_fail "sink m4 has $(lab_sink_count m4) messages"
age=$(labo_prom_value "$LAB_DIR/m1.samples" dualrelay_queue_oldest_age_seconds)
[ "$age" != missing ] && [ "$age" -ge 2 ] && [ "$age" -le $((now - start + 1)) ] ||
	lab_fail "dualrelay_queue_oldest_age_seconds is $age (test ran $((now - start)) s)"

# The same counters as dualrelayctl stats; the session is gone once the client is.
stats=$(lab_relay "$DR_BUILDDIR/src/dualrelayctl" -c "$CONF" stats) || lab_fail "stats failed"
printf '%s\n' "$stats" | grep -q "^received 4$" || lab_fail "stats: $stats"
printf '%s\n' "$stats" | grep -q "^ipv4 delivered 2 deferred 1 bounced 0 connect_failed 1 " ||
	lab_fail "stats ipv4: $stats"
wait_for 5 eval '[ "$(labo_metrics_fetch "$URL" "$LAB_DIR/m2")" = 200 ] &&
	grep -qx "dualrelay_connections 0" "$LAB_DIR/m2"' ||
	lab_fail "dualrelay_connections does not return to 0: $(grep ^dualrelay_connections "$LAB_DIR/m2")"

# Only /metrics, only GET and HEAD.
code=$(labo_metrics_fetch http://127.0.0.1:9125/ "$LAB_DIR/root") || lab_fail "curl / failed"
[ "$code" = 404 ] || lab_fail "GET / answered $code"
code=$(lab_relay curl -sS --max-time 10 -o /dev/null -w '%{http_code}' -X POST "$URL") ||
	lab_fail "curl POST failed"
[ "$code" != 200 ] || lab_fail "POST /metrics answered 200"
code=$(lab_relay curl -sS --max-time 10 -o /dev/null -w '%{http_code}' -I "$URL") ||
	lab_fail "curl HEAD failed"
[ "$code" = 200 ] || lab_fail "HEAD /metrics answered $code"
lab_pass
