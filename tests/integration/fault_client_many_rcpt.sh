#!/bin/bash
# fault_client_many_rcpt: one transaction with 3000 RCPT commands, pipelined in one write
# (RFC 2920), against max_recipients = 1000.  The first 1000 get 250, every one after
# "452 4.5.3 Error: too many recipients" (RFC 5321 4.5.3.1.10); the message is queued for
# the 1000 and smtp-sink receives each of them exactly once (its X-Rcpt-Args: lines, over
# however many transactions the daemon uses), with one status=sent line each.
. "$(dirname "$0")/lab.sh"
. "$(dirname "$0")/lab_family.sh"
. "$(dirname "$0")/lab_queue.sh"
. "$(dirname "$0")/lab_fault.sh"

labx_setup
lab_dns_start <<'ZONE'
many.example. MX 10 mx.many.example.
mx.many.example. A 198.51.100.193
ZONE
lab_sink_start many 198.51.100.193
LABX_CONF="$LAB_DIR/dualrelay.conf"
lab_conf_write "$LABX_CONF"
sed -i 's/^max_recipients = .*/max_recipients = 1000;/' "$LABX_CONF"
grep -q '^max_recipients = 1000;' "$LABX_CONF" || lab_fail "cannot set max_recipients"
lab_daemon_start "$LABX_CONF"

labx_client --accepted "$LAB_DIR/accepted.rcpts" many-rcpt 3000 many.example ||
	lab_fail "many-rcpt: $(cat "$LAB_DIR/client.out")"
cat "$LAB_DIR/client.out" >&2
[ "$(labx_client_value pipelining)" = True ] || lab_fail "PIPELINING is not advertised"
[ "$(labx_client_value accepted)" -eq 1000 ] || lab_fail "$(labx_client_value accepted) recipients accepted, expected 1000"
[ "$(labx_client_value refused)" -eq 2000 ] || lab_fail "$(labx_client_value refused) recipients refused, expected 2000"
case $(labx_client_value first_refusal) in
"452 4.5.3 "*) ;;
*) lab_fail "the refusal is '$(labx_client_value first_refusal)', expected 452 4.5.3" ;;
esac
[ "$(head -n1 "$LAB_DIR/accepted.rcpts")" = r1@many.example ] &&
	[ "$(tail -n1 "$LAB_DIR/accepted.rcpts")" = r1000@many.example ] ||
	lab_fail "not the first 1000 recipients were accepted"
qid=$(labx_client_value qid)
[ -n "$qid" ] || lab_fail "the message was not queued: $(labx_client_value data_reply)"
# shellcheck disable=SC2046 # one word per recipient
labx_accepted "$qid" $(cat "$LAB_DIR/accepted.rcpts")

q=$(lab_re "$qid")
all_sent() { [ "$(grep -Ec -- "$q: to=<r[0-9]+@many\.example>, .*status=sent " "$LAB_LOG")" -ge 1000 ]; }
wait_for 45 all_sent ||
	lab_fail "$(grep -Ec -- "$q: to=<.*status=sent " "$LAB_LOG") of 1000 recipients sent within 45 s"
labq_wait_queue_empty 10 || lab_fail "the queue is not empty"
lab_log "smtp-sink got $(lab_sink_count many) transactions, $(labx_smtp_sink_rcpts many) recipients"
dups=$(lab_sink_files many | xargs cat | sed -n 's/^X-Rcpt-Args: //p' | sort | uniq -d | head -n3)
[ -z "$dups" ] || lab_fail "recipients received twice: $dups"
labx_check_no_loss "$(labx_smtp_sink_rcpts many)"
lab_pass
