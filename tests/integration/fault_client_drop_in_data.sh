#!/bin/bash
# fault_client_drop_in_data: a client goes away in the middle of DATA, once closing
# normally after half a line (FIN), once with a reset after a complete line (RST).
# Nothing is queued (no file left in the spool's queue/ or tmp/), nothing is delivered,
# and each loss is one clear log line ("lost connection after DATA from ...").  The daemon
# then relays an ordinary message as usual.
. "$(dirname "$0")/lab.sh"
. "$(dirname "$0")/lab_family.sh"
. "$(dirname "$0")/lab_queue.sh"
. "$(dirname "$0")/lab_fault.sh"

labx_setup
lab_dns_start <<'ZONE'
fault.example. MX 10 mx.fault.example.
mx.fault.example. A 198.51.100.191
ZONE
lab_sink_start fault 198.51.100.191
LABX_CONF="$LAB_DIR/dualrelay.conf"
lab_conf_write "$LABX_CONF"
lab_daemon_start "$LABX_CONF"

spool_content() { find "$LAB_DIR/spool/queue" "$LAB_DIR/spool/tmp" -type f 2>/dev/null | wc -l; }
spool_empty() { [ "$(spool_content)" -eq 0 ]; }
n=0
for mode in partial-data reset-data; do
	labx_client "$mode" || lab_fail "$mode: the client could not get to DATA: $(cat "$LAB_DIR/client.out")"
	n=$((n + 1))
	lost() { [ "$(grep -Ec 'lost connection after DATA from ' "$LAB_LOG")" -ge "$n" ]; }
	wait_for 15 lost || lab_fail "$mode: no 'lost connection after DATA' log line"
	wait_for 10 spool_empty || lab_fail "$mode: $(spool_content) files left in the spool"
done
lab_log "log: $(grep -E 'lost connection after DATA' "$LAB_LOG" | tr '\n' '|')"
lab_log_has "client=.*from=<fault@client\.example\.net>" && lab_fail "a cut-off message was queued"
labx_ctl queue --json | grep -q '"fault@client.example.net"' && lab_fail "a cut-off message is in the queue"
[ "$(lab_sink_count fault)" -eq 0 ] || lab_fail "a cut-off message was delivered"

labx_swaks_ok "after the cut-off clients" ok@fault.example fault 1
labx_check_no_loss "$(labx_smtp_sink_rcpts fault)"
lab_pass
