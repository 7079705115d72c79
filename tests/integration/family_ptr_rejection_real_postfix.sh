#!/bin/bash
# family_ptr_rejection_real_postfix: the IPv6-without-PTR case against a real receiver.  A
# Postfix instance in NET listens on the IPv6 and IPv4 addresses of the MX with
# reject_unknown_reverse_client_hostname (unknown_client_reject_code = 550) and resolves
# through the lab DNS, which has a PTR for the relay's IPv4 address 192.0.2.1 and none for
# 2001:db8::1.  Postfix itself answers the IPv6 session "550 5.7.1 ... Client host
# rejected: cannot find your reverse hostname"; dualrelay must log that attempt as
# status=fallback, deliver over IPv4 at once, bounce nothing, and the message must land in
# the receiver's mailbox exactly once, received from 192.0.2.1.
. "$(dirname "$0")/lab.sh"
. "$(dirname "$0")/lab_family.sh"

labf_setup
lab_dns_start <<'ZONE'
ptr.example. MX 10 mx.ptr.example.
mx.ptr.example. AAAA 2001:db8:100::61
mx.ptr.example. A 198.51.100.61
ptr 198.51.100.61 mx.ptr.example.
ptr 2001:db8:100::61 mx.ptr.example.
ptr 192.0.2.1 relay.example.net.
relay.example.net. A 192.0.2.1
ZONE
[ "$(lab_dns_query 1.2.0.192.in-addr.arpa PTR)" = "NOERROR 1" ] ||
	lab_fail "the lab DNS has no PTR for 192.0.2.1"
[ "$(lab_dns_query 1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa PTR | cut -d' ' -f1)" = NXDOMAIN ] ||
	lab_fail "the lab DNS should have no PTR for 2001:db8::1"
labf_net_resolver
lab_net_addr 198.51.100.61
lab_net_addr 2001:db8:100::61
pf=$(labf_postfix_dir rx)
mkdir -p "$pf/mail"
chown 65534:65534 "$pf/mail" || lab_fail "chown $pf/mail"
labf_postfix_start rx "$LAB_NET" 198.51.100.61 2001:db8:100::61 <<EOF
myhostname = mx.ptr.example
mydomain = ptr.example
myorigin = \$myhostname
mynetworks = 127.0.0.0/8
smtpd_client_restrictions = reject_unknown_reverse_client_hostname
unknown_client_reject_code = 550
virtual_mailbox_domains = ptr.example
virtual_mailbox_base = $pf/mail
virtual_mailbox_maps = static:box/
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
EOF
lab_conf_write "$LAB_DIR/dualrelay.conf"
lab_daemon_start "$LAB_DIR/dualrelay.conf"

from=alice@client.example.net
rcpt=bob@ptr.example
lab_make_message "$LAB_DIR/msg" "$from" "$rcpt" "ptr rejection"
lab_send "$from" "$rcpt" "$LAB_DIR/msg" || lab_fail "message not accepted"
qid=$LAB_QID
q=$(lab_re "$qid")
lab_expect_sent "$qid" "$rcpt" mx.ptr.example 198.51.100.61 ipv4 15
lab_log_has "$q: to=<$(lab_re "$rcpt")>, relay=mx\.ptr\.example\[2001:db8:100::61\]:25, family=ipv6, delay=[0-9.]+, dsn=5\.7\.1, status=fallback \(host mx\.ptr\.example\[2001:db8:100::61\] said: 550 5\.7\.1 .*[Cc]lient host rejected: cannot find your reverse hostname.*retrying over ipv4\)" ||
	lab_fail "no status=fallback line for the IPv6 attempt with Postfix's 550"
labf_expect_fast "$qid" "$rcpt" 2
n=$(grep -Ec -- "$q: to=<.*status=" "$LAB_LOG")
[ "$n" -eq 2 ] || lab_fail "$n status lines for $qid, expected 2 (fallback, sent)"
! grep -Eq -- "$q: to=<.*status=(bounced|expired|deferred)" "$LAB_LOG" ||
	lab_fail "the rejection over IPv6 turned into a bounce or a deferral"
! grep -Eq -- ": client=.*, from=<>," "$LAB_LOG" || lab_fail "a bounce message was queued"

# Postfix's side of the story: it rejected the IPv6 client and delivered what came over IPv4.
pflog() { grep -E "$1" "$pf/maillog" 2>/dev/null; }
wait_for 10 pflog 'status=sent \(delivered to maildir\)' >/dev/null ||
	lab_fail "the Postfix receiver did not deliver the message"
pflog 'NOQUEUE: reject: RCPT from unknown\[2001:db8::1\]: 550 5\.7\.1 .*cannot find your reverse hostname' >/dev/null ||
	lab_fail "Postfix's log has no rejection of the IPv6 client"
pflog 'connect from relay\.example\.net\[192\.0\.2\.1\]' >/dev/null ||
	lab_fail "Postfix's log has no IPv4 connection from relay.example.net[192.0.2.1]"
sleep 0.5
files=$(find "$pf/mail/box/new" -type f 2>/dev/null)
nfiles=$(printf '%s' "$files" | grep -c .)
[ "$nfiles" -eq 1 ] || lab_fail "the receiver's mailbox holds $nfiles messages, expected 1"
grep -q '^Received: from relay\.example\.net (relay\.example\.net \[192\.0\.2\.1\])' "$files" ||
	lab_fail "the delivered message was not received from 192.0.2.1: $(grep -m1 -A2 '^Received:' "$files")"
grep -q '^Subject: ptr rejection' "$files" || lab_fail "the delivered message is not ours"
# The body crossed two relays unchanged (Postfix's virtual(8) stores LF line ends).
body() { python3 -c 'import sys; d=open(sys.argv[1],"rb").read().replace(b"\r\n",b"\n"); sys.stdout.buffer.write(d[d.index(b"\n\n")+2:])' "$1"; }
body "$LAB_DIR/msg" >"$LAB_DIR/body.sent"
body "$files" >"$LAB_DIR/body.got"
lab_compare_bytes "$LAB_DIR/body.sent" "$LAB_DIR/body.got" "body in the receiver's mailbox"
lab_pass
