#!/bin/bash
# sendmail_entry: dualrelay-sendmail as applications use it. -t takes the recipients from
# To/Cc/Bcc and removes Bcc; recipients as arguments with -f; -i keeps a lone "." line in
# the body (without -i it ends the input); LF input becomes CR LF; Date and Message-ID are
# added when missing; with the daemon stopped it exits 75 (EX_TEMPFAIL) and says so.
. "$(dirname "$0")/lab.sh"

lab_setup
lab_dns_start <<'ZONE'
sm.example. MX 10 mx.sm.example.
mx.sm.example. A 198.51.100.81
ZONE
lab_sink_start sm 198.51.100.81
lab_conf_write "$LAB_DIR/dualrelay.conf"
lab_daemon_start "$LAB_DIR/dualrelay.conf"
SM="$DR_BUILDDIR/src/dualrelay-sendmail"

# 1. -t with To, Cc and Bcc (LF line ends, as PHP writes them).
printf 'To: To One <to1@sm.example>, to2@sm.example\nCc: "Cc, Person" <cc@sm.example>\nBcc: hidden@sm.example\nSubject: minus t\n\nbody line\n.\nafter a lone dot\n' \
	| lab_relay "$SM" -t -i -f app@client.example.net || lab_fail "-t submission failed ($?)"
lab_sink_wait sm 1 10 || lab_fail "-t message did not arrive"
f=$(lab_sink_files sm | head -n1)
got=$(lab_dump_header "$f" Rcpt-Args | sed 's/ .*//' | sort | tr '\n' ' ')
[ "$got" = "<cc@sm.example> <hidden@sm.example> <to1@sm.example> <to2@sm.example> " ] ||
	lab_fail "-t recipients: $got"
[ "$(lab_dump_header "$f" Mail-Args | sed 's/ .*//')" = "<app@client.example.net>" ] ||
	lab_fail "-f sender: $(lab_dump_header "$f" Mail-Args)"
lab_dump_message "$f" >"$LAB_DIR/got1" || lab_fail "cannot parse dump"
grep -qi '^Bcc:' "$LAB_DIR/got1" && lab_fail "Bcc: was not removed"
grep -q $'^after a lone dot\r$' "$LAB_DIR/got1" || lab_fail "-i: the text after the lone dot is missing"
grep -q $'^\\.\r$' "$LAB_DIR/got1" || lab_fail "-i: the lone dot line is missing"
grep -q '^Date: ' "$LAB_DIR/got1" || lab_fail "no Date: added"
grep -q '^Message-ID: <' "$LAB_DIR/got1" || lab_fail "no Message-ID: added"
grep -qv $'\r$' "$LAB_DIR/got1" && lab_fail "a line without CR LF arrived"

# 2. Recipients as arguments; without -i a lone "." ends the message.
printf 'Subject: args\n\nfirst\n.\nnot part of the message\n' \
	| lab_relay "$SM" -F "App Sender" -f app@client.example.net arg1@sm.example arg2@sm.example ||
	lab_fail "argument submission failed"
lab_sink_wait sm 2 10 || lab_fail "argument message did not arrive"
f=$(ls -t "$(lab_sink_dir sm)"/* | head -n1)
got=$(lab_dump_header "$f" Rcpt-Args | sed 's/ .*//' | sort | tr '\n' ' ')
[ "$got" = "<arg1@sm.example> <arg2@sm.example> " ] || lab_fail "argument recipients: $got"
lab_dump_message "$f" >"$LAB_DIR/got2"
grep -q 'not part of the message' "$LAB_DIR/got2" && lab_fail "input after a lone dot was sent"
grep -q '^From: App Sender <app@client.example.net>' "$LAB_DIR/got2" || lab_fail "-F: no From: header"

# 3. No recipients: usage error.
printf 'Subject: none\n\nx\n' | lab_relay "$SM" >/dev/null 2>&1
[ $? -eq 64 ] || lab_fail "no recipients did not exit 64"

# 4. Daemon stopped: exit 75 with a clear message.
lab_daemon_stop
out=$(printf 'Subject: down\n\nx\n' | lab_relay "$SM" down@sm.example 2>&1)
rc=$?
[ "$rc" -eq 75 ] || lab_fail "daemon down: exit $rc, expected 75 ($out)"
printf '%s\n' "$out" | grep -q "cannot connect to 127.0.0.1:2525: Connection refused; message not sent" ||
	lab_fail "daemon down: unclear message: $out"
lab_log "daemon down: $out"
lab_pass
