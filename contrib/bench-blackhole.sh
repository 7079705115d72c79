#!/bin/bash
# bench-blackhole.sh: acceptance-to-delivery delay for a domain whose MX has an AAAA and an
# A record and whose IPv6 port 25 is a blackhole (nftables drops the SYNs), for dualrelay
# and for Postfix with its defaults, measured in the integration lab in one run.
#
#   client --SMTP--> dualrelayd on 127.0.0.1:2525  --\
#   client --SMTP--> Postfix    on 127.0.0.1:25    ----> mx.bench.example (IPv6 dropped,
#                                                        IPv4 smtp-sink)
#
# Both relays run in the lab's relay namespace and resolve through the lab DNS.  Postfix is
# a private instance with its defaults (smtp_connect_timeout = 30s) except that it uses both
# families and tries IPv6 first (smtp_address_preference = ipv6; its default "any" picks a
# family at random per message, which hits the blackhole on about half of them).  The delay
# runs from the relay's "250" to the end of DATA until the sink has the message (the sink's
# dump directory is polled every 5 ms).  Postfix gets at most 100 s.
#
# Needs root (network namespaces), unbound, smtp-sink, postfix, nft, python3.
# Usage: contrib/bench-blackhole.sh   (DR_BUILDDIR / DR_SRCDIR default to this tree)
: "${DR_SRCDIR:=$(cd "$(dirname "$0")/.." && pwd)}"
: "${DR_BUILDDIR:=$DR_SRCDIR}"
export DR_SRCDIR DR_BUILDDIR
. "$DR_SRCDIR/tests/integration/lab.sh"
. "$DR_SRCDIR/tests/integration/lab_family.sh"

labf_setup
lab_require postfix postconf nft
lab_dns_start <<'ZONE'
bench.example. MX 10 mx.bench.example.
mx.bench.example. AAAA 2001:db8:100::111
mx.bench.example. A 198.51.100.111
ZONE
lab_sink_start bench 198.51.100.111
lab_net_addr 2001:db8:100::111
labf_nft_init "$LAB_NET"
labf_nft_rule "$LAB_NET" input v6drop "ip6 daddr 2001:db8:100::111 tcp dport 25" drop

lab_conf_write "$LAB_DIR/dualrelay.conf"
lab_daemon_start "$LAB_DIR/dualrelay.conf"
labf_postfix_start relay "$LAB_RELAY" 127.0.0.1 <<'EOF'
myhostname = client.example.net
mydomain = example.net
myorigin = $myhostname
mynetworks = 127.0.0.0/8
relayhost =
smtp_address_preference = ipv6
EOF
pf=$(labf_postfix_dir relay)

# submit-and-wait SERVER PORT RCPT LIMIT_S: submit one message, then poll the sink for it;
# prints the delay in seconds, or "timeout".
cat >"$LAB_DIR/measure.py" <<'EOF'
import os, smtplib, sys, time
server, port, rcpt, limit, sinkdir = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4]), sys.argv[5]
msg = ("From: bench@client.example.net\r\nTo: %s\r\nSubject: bench %s\r\n\r\nbench\r\n" % (rcpt, rcpt))
s = smtplib.SMTP(server, port, "client.example.net", timeout=20)
s.sendmail("bench@client.example.net", [rcpt], msg)   # returns after the 250 to DATA
t0 = time.monotonic()
s.quit()
needle = ("X-Rcpt-Args: <%s>" % rcpt).encode()
while time.monotonic() - t0 < limit:
    for name in os.listdir(sinkdir):
        p = os.path.join(sinkdir, name)
        try:
            with open(p, "rb") as f:
                data = f.read()
        except OSError:
            continue
        if needle in data and data.endswith(b"\n"):
            print("%.3f" % (time.monotonic() - t0))
            sys.exit(0)
    time.sleep(0.005)
print("timeout")
EOF
sinkdir=$(lab_sink_dir bench)
lab_log "Postfix: smtp_connect_timeout = $(postconf -c "$pf" -h smtp_connect_timeout)," \
	"inet_protocols = $(postconf -c "$pf" -h inet_protocols)," \
	"smtp_address_preference = $(postconf -c "$pf" -h smtp_address_preference)"
lab_log "measuring (Postfix may take up to 100 s)..."
lab_relay python3 "$LAB_DIR/measure.py" 127.0.0.1 25 pf@bench.example 100 "$sinkdir" \
	>"$LAB_DIR/pf.delay" 2>&1 &
pf_pid=$!
lab_relay python3 "$LAB_DIR/measure.py" 127.0.0.1 2525 dr@bench.example 100 "$sinkdir" \
	>"$LAB_DIR/dr.delay" 2>&1 &
dr_pid=$!
wait "$dr_pid"
wait "$pf_pid"
dr=$(tail -n1 "$LAB_DIR/dr.delay")
pfd=$(tail -n1 "$LAB_DIR/pf.delay")
case $dr in [0-9]*) ;; *) lab_fail "dualrelay measurement failed: $(cat "$LAB_DIR/dr.delay")" ;; esac
lab_log "dualrelay delivery line: $(grep -E 'to=<dr@bench\.example>.*status=' "$LAB_LOG" | sed 's/.*: to=/to=/')"
lab_log "Postfix delivery line: $(grep -E 'to=<pf@bench\.example>.*status=' "$pf/maillog" | sed 's/.*: to=/to=/')"
printf '\nblackholed IPv6, acceptance to delivery:\n'
printf '  dualrelay: %s s\n' "$dr"
case $pfd in
[0-9]*)
	printf '  Postfix:   %s s\n' "$pfd"
	python3 -c 'import sys; print("  ratio:     %.0fx (Postfix / dualrelay)" % (float(sys.argv[2]) / float(sys.argv[1])))' "$dr" "$pfd"
	;;
*)
	printf '  Postfix:   not delivered within 100 s (%s)\n' "$pfd"
	;;
esac
lab_pass
