#!/bin/bash
# sendmail_entry: dualrelay-sendmail as applications use it, against the real daemon.
#  1. -t takes the recipients from To/Cc/Bcc (display names, quoted commas, a group, a
#     folded Bcc) and removes Bcc; -f sets the sender; -i keeps a lone "." line; LF input
#     becomes CR LF; From, Date and Message-ID are added: the message arrives byte for
#     byte as expected, with only the generated Date and Message-ID values taken over.
#  2. Recipients as arguments, over IPv6 loopback (-S); without -i a lone "." ends the
#     input; -F gives From: with the full name; cron's no-op options are accepted.
#  3. No recipients: 64 (EX_USAGE).
#  4. A message over max_message_size: refused at MAIL (SIZE), 65 (EX_DATAERR).
#  5. Daemon stopped: 75 (EX_TEMPFAIL) with a clear message; DUALRELAY_SERVER honoured.
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
[ -x "$SM" ] || lab_fail "$SM is not built"

# 1. -t, LF line ends as PHP writes them.
printf '%s\n' 'To: To One <to1@sm.example>, to2@sm.example' \
	'Cc: "Cc, Person" <cc@sm.example>, team: grp1@sm.example, grp2@sm.example;' \
	'Bcc: hidden@sm.example,' ' hidden2@sm.example' 'Subject: minus t' '' \
	'body line' '.' '..two dots' 'after a lone dot' >"$LAB_DIR/in1"
lab_relay "$SM" -t -i -f app@client.example.net <"$LAB_DIR/in1" ||
	lab_fail "-t submission failed ($?)"
lab_sink_wait sm 1 10 || lab_fail "-t message did not arrive"
f=$(lab_sink_files sm | head -n1)
got=$(lab_dump_header "$f" Rcpt-Args | sed 's/ .*//' | sort | tr '\n' ' ')
want="<cc@sm.example> <grp1@sm.example> <grp2@sm.example> <hidden2@sm.example> <hidden@sm.example> <to1@sm.example> <to2@sm.example> "
[ "$got" = "$want" ] || lab_fail "-t recipients: $got (expected $want)"
[ "$(lab_dump_header "$f" Mail-Args | sed 's/ .*//')" = "<app@client.example.net>" ] ||
	lab_fail "-f sender: $(lab_dump_header "$f" Mail-Args)"
lab_dump_message "$f" >"$LAB_DIR/got1" || lab_fail "cannot parse the sink's dump"
# The expected bytes: the added fields first, then the input without Bcc, CR LF.
python3 - "$LAB_DIR/got1" "$LAB_DIR/want1" <<'EOF' || lab_fail "cannot build the expected message"
import re, sys
got = open(sys.argv[1], "rb").read()
date = re.search(rb"^Date: ([^\r\n]*)\r\n", got, re.M)
mid = re.search(rb"^Message-ID: (<[^\r\n]*>)\r\n", got, re.M)
if not date or not mid:
    sys.exit("no Date: or Message-ID: in what arrived")
lines = [b"From: app@client.example.net", b"Date: " + date.group(1),
         b"Message-ID: " + mid.group(1),
         b"To: To One <to1@sm.example>, to2@sm.example",
         b"Cc: \"Cc, Person\" <cc@sm.example>, team: grp1@sm.example, grp2@sm.example;",
         b"Subject: minus t", b"", b"body line", b".", b"..two dots", b"after a lone dot"]
open(sys.argv[2], "wb").write(b"".join(l + b"\r\n" for l in lines))
EOF
lab_compare_bytes "$LAB_DIR/want1" "$LAB_DIR/got1" "-t message"
grep -Eq '^Date: (Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-9]{1,2} [A-Z][a-z]{2} [0-9]{4} [0-9:]{8} [-+][0-9]{4}'$'\r''$' \
	"$LAB_DIR/got1" || lab_fail "the added Date: is not an RFC 5322 date"

# 2. Arguments (one of them a comma list, as sendmail allows), over [::1]; cron's options.
printf 'Subject: args\n\nfirst\n.\nnot part of the message\n' |
	lab_relay "$SM" -S '[::1]:2525' -odi -oem -B8BITMIME -F "App Sender" \
		-f app@client.example.net arg1@sm.example 'arg2@sm.example, arg3@sm.example' ||
	lab_fail "argument submission failed"
lab_sink_wait sm 2 10 || lab_fail "argument message did not arrive"
f=$(lab_sink_files sm | tail -n1)
got=$(lab_dump_header "$f" Rcpt-Args | sed 's/ .*//' | sort | tr '\n' ' ')
[ "$got" = "<arg1@sm.example> <arg2@sm.example> <arg3@sm.example> " ] ||
	lab_fail "argument recipients: $got"
lab_dump_message "$f" >"$LAB_DIR/got2" || lab_fail "cannot parse the sink's dump"
grep -q 'not part of the message' "$LAB_DIR/got2" && lab_fail "input after a lone dot was sent"
grep -q $'^From: App Sender <app@client.example.net>\r$' "$LAB_DIR/got2" ||
	lab_fail "-F: no From: header with the full name"
printf 'Subject: args\r\n\r\nfirst\r\n' >"$LAB_DIR/end2"
tail -c "$(wc -c <"$LAB_DIR/end2")" "$LAB_DIR/got2" | cmp -s - "$LAB_DIR/end2" ||
	lab_fail "argument message: the body is not exactly \"first\""

# 3. No recipients: usage error, nothing sent.
printf 'Subject: none\n\nx\n' | lab_relay "$SM" >/dev/null 2>&1
rc=$?
[ "$rc" -eq 64 ] || lab_fail "no recipients: exit $rc, expected 64"

# 4. Too big (lab limit 10240000 bytes): the daemon refuses at MAIL (552 5.3.4).
out=$(python3 -c 'import sys; sys.stdout.write("Subject: big\n\n" + ("x" * 99 + "\n") * 103000)' |
	lab_relay "$SM" big@sm.example 2>&1)
rc=$?
[ "$rc" -eq 65 ] || lab_fail "message too big: exit $rc, expected 65 ($out)"
printf '%s\n' "$out" | grep -q '552 5.3.4' || lab_fail "message too big: $out"
[ "$(lab_sink_count sm)" -eq 2 ] || lab_fail "the sink holds $(lab_sink_count sm) messages, expected 2"

# 5. Daemon stopped: exit 75 with a clear message, on the default address and on the
#    one DUALRELAY_SERVER names.
lab_daemon_stop
out=$(printf 'Subject: down\n\nx\n' | lab_relay "$SM" down@sm.example 2>&1)
rc=$?
[ "$rc" -eq 75 ] || lab_fail "daemon down: exit $rc, expected 75 ($out)"
[ "$out" = "dualrelay-sendmail: cannot connect to 127.0.0.1:2525: Connection refused; message not sent" ] ||
	lab_fail "daemon down: unclear message: $out"
out=$(printf 'Subject: down\n\nx\n' |
	lab_relay env DUALRELAY_SERVER='[::1]:2526' "$SM" down@sm.example 2>&1)
rc=$?
[ "$rc" -eq 75 ] && [[ "$out" == *"cannot connect to [::1]:2526"* ]] ||
	lab_fail "DUALRELAY_SERVER: exit $rc: $out"
lab_log "daemon down: $out"
lab_pass
