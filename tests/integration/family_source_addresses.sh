#!/bin/bash
# family_source_addresses: source4/source6 of a transport are the addresses receivers see.
# The relay gets spare addresses 192.0.2.10 and 2001:db8::10 (preferred_lft 0: deprecated,
# so the kernel never picks them on its own); a transport binds to them, and the sinks'
# X-Client-Addr shows exactly those for its IPv4 and IPv6 deliveries, while the default
# transport still leaves from 192.0.2.1 / 2001:db8::1.  Then "dualrelayd -n" (run inside
# the relay namespace) rejects a source4 this host does not have, with FILE:LINE, and
# checks forward-confirmed reverse DNS of the source addresses: 192.0.2.10 has a PTR that
# resolves back, 2001:db8::10 has none and gets a clear warning.
. "$(dirname "$0")/lab.sh"
. "$(dirname "$0")/lab_family.sh"

labf_setup
ip -n "$LAB_RELAY" addr add 192.0.2.10/24 dev v0 preferred_lft 0 &&
	ip -n "$LAB_RELAY" addr add 2001:db8::10/64 dev v0 nodad preferred_lft 0 ||
	lab_fail "spare relay addresses"
lab_dns_start <<'ZONE'
src4.example. MX 10 mx4.src.example.
ctl4.example. MX 10 mx4.src.example.
src6.example. MX 10 mx6.src.example.
ctl6.example. MX 10 mx6.src.example.
mx4.src.example. A 198.51.100.51
mx6.src.example. AAAA 2001:db8:100::51
ptr 192.0.2.10 out4.relay.example.
out4.relay.example. A 192.0.2.10
ZONE
lab_sink_start s4 198.51.100.51
lab_sink_start s6 2001:db8:100::51

lab_conf_write "$LAB_DIR/dualrelay.conf" \
	'transports = { bound = { source4 = "192.0.2.10"; source6 = "2001:db8::10"; }; };' \
	'routes = ( { domain = "src4.example"; transport = "bound"; },' \
	'           { domain = "src6.example"; transport = "bound"; } );'
lab_daemon_start "$LAB_DIR/dualrelay.conf"

from=alice@client.example.net
declare -A qid
for dom in src4 src6 ctl4 ctl6; do
	labf_message "$LAB_DIR/msg.$dom" "$from" "bob@$dom.example" "source $dom"
	lab_send "$from" "bob@$dom.example" "$LAB_DIR/msg.$dom" || lab_fail "message to $dom not accepted"
	qid[$dom]=$LAB_QID
done
lab_expect_sent "${qid[src4]}" bob@src4.example mx4.src.example 198.51.100.51 ipv4 10
lab_expect_sent "${qid[ctl4]}" bob@ctl4.example mx4.src.example 198.51.100.51 ipv4 10
lab_expect_sent "${qid[src6]}" bob@src6.example mx6.src.example 2001:db8:100::51 ipv6 10
lab_expect_sent "${qid[ctl6]}" bob@ctl6.example mx6.src.example 2001:db8:100::51 ipv6 10
lab_sink_wait s4 2 5 || lab_fail "the IPv4 sink does not have 2 messages"
lab_sink_wait s6 2 5 || lab_fail "the IPv6 sink does not have 2 messages"

# client_of SINK RCPT: X-Client-Addr of the dump holding RCPT.
client_of() {
	local f
	for f in $(lab_sink_files "$1"); do
		if [ "$(lab_dump_header "$f" Rcpt-Args)" = "<$2>" ]; then
			lab_dump_header "$f" Client-Addr
			return
		fi
	done
	echo "(no message)"
}
expect_client() {
	local got
	got=$(client_of "$1" "$2")
	[ "$got" = "$3" ] || lab_fail "<$2> arrived from $got, expected $3"
	lab_log "<$2> arrived from $got"
}
expect_client s4 bob@src4.example 192.0.2.10
# smtp-sink writes IPv6 client addresses with an "ipv6:" prefix.
expect_client s6 bob@src6.example ipv6:2001:db8::10
expect_client s4 bob@ctl4.example 192.0.2.1
expect_client s6 bob@ctl6.example ipv6:2001:db8::1
lab_daemon_stop

# -n: a source address this host does not have is a configuration error at its line.
bad="$LAB_DIR/bad.conf"
lab_conf_write "$bad" \
	'transports = {' \
	'  bound = {' \
	'    source4 = "192.0.2.99";' \
	'  };' \
	'};'
line=$(grep -n 'source4 = "192.0.2.99"' "$bad" | cut -d: -f1)
out=$(lab_relay "$LAB_DAEMON" -n -c "$bad" 2>&1)
rc=$?
[ "$rc" -ne 0 ] || lab_fail "dualrelayd -n accepted a source4 the host does not have: $out"
printf '%s\n' "$out" | grep -Fq "$bad:$line: transport bound: source4: 192.0.2.99 is not an address of this host" ||
	lab_fail "dualrelayd -n did not report $bad:$line clearly: $out"
lab_log "dualrelayd -n: $(printf '%s\n' "$out" | grep -F "$bad:$line")"
# The same file with the address the host has is accepted.
sed -i 's/192\.0\.2\.99/192.0.2.10/' "$bad"
out=$(lab_relay "$LAB_DAEMON" -n -c "$bad" 2>&1) ||
	lab_fail "dualrelayd -n rejected source4 = 192.0.2.10, an address of the relay: $out"

# Forward-confirmed reverse DNS of the source addresses, on -n: confirmed for
# 192.0.2.10, a warning naming the missing PTR for 2001:db8::10.
out=$(lab_relay "$LAB_DAEMON" -n -c "$LAB_DIR/dualrelay.conf" 2>&1) ||
	lab_fail "dualrelayd -n failed on the running configuration: $out"
printf '%s\n' "$out" | grep -Fq "source address 192.0.2.10 (transport bound): reverse DNS out4.relay.example confirmed" ||
	lab_fail "no FCrDNS confirmation for 192.0.2.10: $out"
printf '%s\n' "$out" | grep -Eq "\[warning\]: source address 2001:db8::10 \(transport bound\): no PTR record .*will reject mail" ||
	lab_fail "no FCrDNS warning for 2001:db8::10: $out"
lab_log "dualrelayd -n: $(printf '%s\n' "$out" | grep -F 2001:db8::10)"
lab_pass
