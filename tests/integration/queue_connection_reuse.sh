#!/bin/bash
# queue_connection_reuse: several messages to one destination share one SMTP connection
# (RSET between transactions) while it stays busy, as Postfix's connection cache does:
# five messages sent one after another reach the sink over one session (smtp-sink's -c
# counters: sess=1 mesg=5), byte-exact. A connection the server closed while idle is not
# reused: after the sink restarts, the next message opens a new one and still arrives.
. "$(dirname "$0")/lab.sh"

lab_setup
lab_dns_start <<'ZONE'
reuse.example. MX 10 mx.reuse.example.
mx.reuse.example. A 198.51.100.131
ZONE
lab_sink_start reuse 198.51.100.131 -c
lab_conf_write "$LAB_DIR/dualrelay.conf"
# Long enough that a slow machine (sanitizers) keeps the session between messages.
sed -i 's/max_lifetime_s = 120;/max_lifetime_s = 120; connection_cache_s = 30;/' "$LAB_DIR/dualrelay.conf"
lab_daemon_start "$LAB_DIR/dualrelay.conf"
from=alice@client.example.net
counters() { tr '\r' '\n' <"$LAB_DIR/sink.reuse.out" | grep 'mesg=' | tail -n1; }

for i in 1 2 3 4 5; do
	lab_make_message "$LAB_DIR/msg$i" "$from" "r$i@reuse.example" "reuse $i"
	lab_send "$from" "r$i@reuse.example" "$LAB_DIR/msg$i" || lab_fail "message $i not accepted"
	lab_expect_log "$(lab_re "$LAB_QID"): to=<r$i@reuse.example>.*status=sent" 10 "delivery $i"
done
lab_sink_wait reuse 5 5 || lab_fail "the sink does not have 5 messages"
# The sink counts a session when it ends: stopping the daemon ends ours with QUIT.
lab_daemon_stop
lab_log "sink counters: $(counters)"
counters | grep -q 'sess=1 quit=1 mesg=5' || lab_fail "5 messages did not share one connection: $(counters)"
[ "$(grep -c 'reusing the connection' "$LAB_LOG")" -eq 4 ] || lab_fail "expected 4 reuses in the log"
for f in $(lab_sink_files reuse); do
	rcpt=$(lab_dump_header "$f" Rcpt-Args | sed 's/[<>]//g; s/@.*//; s/ .*//')
	lab_dump_message "$f" >"$LAB_DIR/got.$rcpt" || lab_fail "cannot parse a dump"
	lab_compare_bytes "$LAB_DIR/msg${rcpt#r}" "$LAB_DIR/got.$rcpt" "message to $rcpt"
done

# The server goes away while a session is idle in the cache: the dead connection is not
# reused; the next message opens a new one and arrives.
lab_daemon_start "$LAB_DIR/dualrelay.conf"
lab_make_message "$LAB_DIR/msg6" "$from" "r6@reuse.example" "reuse 6"
lab_send "$from" "r6@reuse.example" "$LAB_DIR/msg6" || lab_fail "message 6 not accepted"
lab_expect_log "$(lab_re "$LAB_QID"): to=<r6@reuse.example>.*status=sent" 10 "delivery 6"
lab_sink_stop reuse
lab_sink_start reuse 198.51.100.131 -c
lab_make_message "$LAB_DIR/msg7" "$from" "r7@reuse.example" "reuse 7"
lab_send "$from" "r7@reuse.example" "$LAB_DIR/msg7" || lab_fail "message 7 not accepted"
lab_expect_log "$(lab_re "$LAB_QID"): to=<r7@reuse.example>.*status=sent" 10 "delivery 7"
lab_sink_wait reuse 7 5 || lab_fail "message 7 did not arrive"
lab_pass
