#!/bin/bash
# fault_client_long_lines: oversized input.  A 100 KB command line without a line end, and
# one with a line end, each get "500 5.5.2 Error: line too long" (logged as "line too
# long from ..."), and the same connection then answers NOOP; a message with a 100 KB
# line in its body either is refused with a clear 5xx reply or is accepted and relayed
# byte for byte (RFC 5321 4.5.3.1.6 sets 1000 octets as the line length a server must
# take, not one it must refuse).  The daemon stays up and relays an ordinary message.
. "$(dirname "$0")/lab.sh"
. "$(dirname "$0")/lab_family.sh"
. "$(dirname "$0")/lab_queue.sh"
. "$(dirname "$0")/lab_fault.sh"

labx_setup
lab_dns_start <<'ZONE'
fault.example. MX 10 mx.fault.example.
mx.fault.example. A 198.51.100.192
ZONE
lab_sink_start fault 198.51.100.192
LABX_CONF="$LAB_DIR/dualrelay.conf"
lab_conf_write "$LABX_CONF"
lab_daemon_start "$LABX_CONF"

labx_client long-command 102400 || lab_fail "long command: $(cat "$LAB_DIR/client.out")"
cat "$LAB_DIR/client.out" >&2
for k in unterminated_reply terminated_reply; do
	case $(labx_client_value $k) in
	"500 5.5.2 "*) ;;
	*) lab_fail "$k: '$(labx_client_value $k)', expected 500 5.5.2" ;;
	esac
done
for k in after_unterminated_noop after_terminated_noop; do
	case $(labx_client_value $k) in
	250*) ;;
	*) lab_fail "$k: '$(labx_client_value $k)': the session did not recover" ;;
	esac
done
[ "$(grep -c 'line too long from ' "$LAB_LOG")" -ge 2 ] || lab_fail "no 'line too long' log lines"
kill -0 "$LAB_DAEMON_PID" || lab_fail "the daemon died"

labx_client --rcpt long@fault.example --message "$LAB_DIR/long.msg" long-data-line 102400 ||
	lab_fail "long data line: $(cat "$LAB_DIR/client.out")"
cat "$LAB_DIR/client.out" >&2
reply=$(labx_client_value data_reply)
case $reply in
250*)
	qid=$(labx_client_value qid)
	labx_accepted "$qid" long@fault.example
	lab_expect_log "$(lab_re "$qid"): to=<long@fault\.example>, .*status=sent" 20 "relay of the long line"
	lab_sink_wait fault 1 10 || lab_fail "the sink has no message"
	lab_expect_sink_file fault
	lab_dump_message "$LAB_DUMP" >"$LAB_DIR/got" || lab_fail "cannot parse the sink dump"
	lab_compare_bytes "$LAB_DIR/long.msg" "$LAB_DIR/got" "message with a 100 KB line"
	n=1
	;;
5[0-9][0-9]" "5.*) lab_log "long data line refused: $reply"; n=0 ;;
*) lab_fail "long data line: unclear reply '$reply'" ;;
esac

labx_swaks_ok "after the long lines" ok@fault.example fault $((n + 1))
labx_check_no_loss "$(labx_smtp_sink_rcpts fault)"
lab_pass
