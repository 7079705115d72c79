#!/bin/bash
# proxy_haproxy: dualrelayd behind a real HAProxy (TCP mode) that sends the PROXY
# protocol: version 1 (send-proxy) on one frontend, version 2 (send-proxy-v2, with SMTP
# health checks) on the other. dualrelayd's listener 192.0.2.1:2526 has proxy_protocol
# = true and trusts only HAProxy's address (192.0.2.254), which is NOT in relay_networks;
# the clients' own addresses decide:
#   - 198.51.100.77 (in relay_networks) through v1 and [2001:db8:100::77] through v2 are
#     accepted and delivered; the log (client=...) and the Received: header show the
#     original client, not HAProxy;
#   - 198.51.100.66 (outside relay_networks) through v2 gets 554 5.7.1: the relay check
#     uses the address from the header;
#   - a direct connection to the proxy listener from 198.51.100.77 (not a trusted proxy)
#     is closed unanswered, and one from HAProxy's address that sends SMTP instead of a
#     header is closed as a bad header.
. "$(dirname "$0")/lab.sh"

lab_setup
lab_require haproxy

lab_dns_start <<'ZONE'
one.example. MX 10 mx.one.example.
mx.one.example. A 198.51.100.11
ZONE
lab_sink_start one 198.51.100.11

# HAProxy's frontends and the clients live in NET ("the internet"); HAProxy reaches the
# relay's 192.0.2.1 from 192.0.2.254.
HAP_V4=203.0.113.25
HAP_V6=2001:db8:100::25
GOOD4=198.51.100.77
GOOD6=2001:db8:100::77
BAD4=198.51.100.66
for a in $HAP_V4 $HAP_V6 $GOOD4 $GOOD6 $BAD4; do
	lab_net_addr "$a"
done

LAB_CONF_LISTEN='{ address = "127.0.0.1"; port = 2525; },
  { address = "192.0.2.1"; port = 2526; proxy_protocol = true; }'
LAB_CONF_RELAY_NETWORKS="\"127.0.0.0/8\", \"::1/128\", \"$GOOD4/32\", \"$GOOD6/128\""
lab_conf_write "$LAB_DIR/dualrelay.conf" 'trusted_proxies = [ "192.0.2.254/32" ];'
lab_daemon_start "$LAB_DIR/dualrelay.conf"
wait_for 5 lab_listening "$LAB_RELAY" 192.0.2.1 2526 || lab_fail "no listener on 192.0.2.1:2526"
lab_log_has 'listening on 192\.0\.2\.1:2526 \(PROXY protocol\)' ||
	lab_fail "the proxy listener is not logged as such"

cat >"$LAB_DIR/haproxy.cfg" <<EOF
global
	maxconn 100
	log stderr format raw local0 info

defaults
	mode tcp
	log global
	option tcplog
	timeout connect 5s
	timeout client 60s
	timeout server 60s

frontend smtp_v1
	bind $HAP_V4:2587
	bind [$HAP_V6]:2587
	default_backend relay_v1

backend relay_v1
	server relay 192.0.2.1:2526 send-proxy

frontend smtp_v2
	bind $HAP_V4:2588
	bind [$HAP_V6]:2588
	default_backend relay_v2

backend relay_v2
	option smtpchk EHLO haproxy.example.net
	server relay 192.0.2.1:2526 send-proxy-v2 check inter 2s
EOF
haproxy -c -f "$LAB_DIR/haproxy.cfg" >"$LAB_DIR/haproxy.check" 2>&1 ||
	lab_fail "haproxy -c: $(cat "$LAB_DIR/haproxy.check")"
# "ip netns exec" execs haproxy (-db: foreground, no daemon): $! is HAProxy's own PID.
ip netns exec "$LAB_NET" haproxy -db -f "$LAB_DIR/haproxy.cfg" >"$LAB_DIR/haproxy.log" 2>&1 &
HAP_PID=$!
LAB_PIDS="$LAB_PIDS $HAP_PID"

hap_ready() {
	kill -0 "$HAP_PID" 2>/dev/null &&
		lab_listening "$LAB_NET" "$HAP_V4" 2587 && lab_listening "$LAB_NET" "$HAP_V4" 2588 &&
		lab_listening "$LAB_NET" "$HAP_V6" 2587 && lab_listening "$LAB_NET" "$HAP_V6" 2588
}
wait_for 10 hap_ready || lab_fail "haproxy does not listen: $(cat "$LAB_DIR/haproxy.log")"

# hap_send SOURCE SERVER TO: swaks from SOURCE (a NET address) to SERVER; 0 when queued.
hap_send() {
	local src=$1 server=$2 to=$3
	lab_make_message "$LAB_DIR/msg" alice@client.example.net "$to" "via haproxy $src"
	lab_wire_data "$LAB_DIR/msg" >"$LAB_DIR/wire"
	LAB_QID=""
	lab_inet swaks --server "$server" --local-interface "$src" --helo client.example.net \
		--from alice@client.example.net --to "$to" --data "@$LAB_DIR/wire" \
		--no-data-fixup --timeout 30 >"$LAB_DIR/swaks.out" 2>&1
	local rc=$?
	LAB_QID=$(sed -n 's/^<- *250 .*queued as \([^ ]*\).*/\1/p' "$LAB_DIR/swaks.out" | tail -n1)
	[ "$rc" -eq 0 ] && [ -n "$LAB_QID" ]
}

# 1. PROXY v1, IPv4 client in relay_networks.
hap_send "$GOOD4" "$HAP_V4:2587" v1@one.example || lab_fail "v1 client not accepted"
qid1=$LAB_QID
lab_log_has "connect from \[$(lab_re $GOOD4)\]:[0-9]+ via proxy \[192\.0\.2\.254\]:[0-9]+ \(PROXY v1\)" ||
	lab_fail "no 'connect from' line naming the v1 client via the proxy"
lab_log_has "$qid1: client=\[$(lab_re $GOOD4)\]:[0-9]+, from=<alice@client\.example\.net>" ||
	lab_fail "the acceptance line does not name the original client $GOOD4"
lab_expect_sent "$qid1" v1@one.example mx.one.example 198.51.100.11 ipv4 20

# 2. PROXY v2, IPv6 client in relay_networks (HAProxy talks IPv4 to the relay).
hap_send "$GOOD6" "[$HAP_V6]:2588" v2@one.example || lab_fail "v2 IPv6 client not accepted"
qid2=$LAB_QID
lab_log_has "connect from \[$(lab_re $GOOD6)\]:[0-9]+ via proxy \[192\.0\.2\.254\]:[0-9]+ \(PROXY v2\)" ||
	lab_fail "no 'connect from' line naming the v2 IPv6 client via the proxy"
lab_log_has "$qid2: client=\[$(lab_re $GOOD6)\]:[0-9]+, from=" ||
	lab_fail "the acceptance line does not name the original client $GOOD6"
lab_expect_sent "$qid2" v2@one.example mx.one.example 198.51.100.11 ipv4 20

lab_sink_wait one 2 10 || lab_fail "the sink did not get both messages"
sleep 1
for f in $(lab_sink_files one); do
	recv=$(lab_dump_received "$f")
	case $recv in
	*"from client.example.net ([$GOOD4])"* | *"from client.example.net ([IPv6:$GOOD6])"*) ;;
	*) lab_fail "Received: does not name the original client: $recv" ;;
	esac
	case $recv in *192.0.2.254*) lab_fail "Received: names HAProxy: $recv" ;; esac
done

# 3. A client outside relay_networks, through the trusted proxy: refused at RCPT.
spool_before=$(lab_spool_files)
hap_send "$BAD4" "$HAP_V4:2588" victim@one.example && lab_fail "the outside client relayed"
grep -Eq '^<\*\* +554 5\.7\.1' "$LAB_DIR/swaks.out" || lab_fail "no 554 5.7.1 for the outside client"
lab_log_has "NOQUEUE: reject: RCPT from \[$(lab_re $BAD4)\]:[0-9]+: 554 5\.7\.1" ||
	lab_fail "the reject line does not name the original client $BAD4"
[ "$(lab_spool_files)" -eq "$spool_before" ] || lab_fail "the spool changed after the refusal"

# 4. Straight to the proxy listener from an address that is not a trusted proxy: closed
#    before any greeting, even though the address may relay.
lab_inet swaks --server 192.0.2.1:2526 --local-interface "$GOOD4" --helo client.example.net \
	--from alice@client.example.net --to direct@one.example --timeout 15 \
	>"$LAB_DIR/swaks.out" 2>&1 && lab_fail "a direct client got through the proxy listener"
grep -q '^<- *220' "$LAB_DIR/swaks.out" && lab_fail "the untrusted client was greeted"
lab_expect_log "refused connection from \[$(lab_re $GOOD4)\]:[0-9]+ on a proxy_protocol listener: not in trusted_proxies" \
	10 "direct connection from $GOOD4"

# 5. From HAProxy's (trusted) address but speaking SMTP first: a bad header, closed
#    at once without a reply.
got=$(lab_inet python3 - <<'EOF'
import socket
s = socket.create_connection(("192.0.2.1", 2526), timeout=15, source_address=("192.0.2.254", 0))
s.sendall(b"EHLO client.example.net\r\n")
data = b""
while True:
    chunk = s.recv(4096)
    if not chunk:
        break
    data += chunk
print(repr(data))
EOF
) || lab_fail "the raw client failed"
[ "$got" = "b''" ] || lab_fail "the relay answered a connection without PROXY header: $got"
lab_expect_log 'bad PROXY header from \[192\.0\.2\.254\]:[0-9]+: not a PROXY protocol header' 10 \
	"SMTP instead of a PROXY header"

# 6. HAProxy's SMTP health checks (v2 backend) reach the relay with a PROXY header.
lab_expect_log 'connect from \[192\.0\.2\.254\]:[0-9]+ \(PROXY v2 LOCAL: no client address\)' 10 \
	"HAProxy health check (PROXY v2 LOCAL)"

lab_sink_has one 3 && lab_fail "the sink got a message that should have been refused"
lab_stop_pid "$HAP_PID"
lab_forget_pid "$HAP_PID"
lab_pass
