#!/bin/bash
# queue_dead_destination: a destination that is down is not hammered by every message
# queued for it. The first delivery finds nothing listening (connection refused) and
# marks the domain unreachable until the next retry time; the four messages queued after
# it are deferred at once ("delivery temporarily suspended") without a connection attempt
# (one refused connect in the log, one SYN counted by nftables). Once the MX is back,
# "dualrelayctl flush" sends all five.
. "$(dirname "$0")/lab.sh"
. "$(dirname "$0")/lab_family.sh"

labf_setup
lab_dns_start <<'ZONE'
dead.example. MX 10 mx.dead.example.
mx.dead.example. A 198.51.100.141
ZONE
lab_net_addr 198.51.100.141
labf_nft_init "$LAB_NET"
labf_nft_rule "$LAB_NET" input syns "ip daddr 198.51.100.141 tcp dport 25 tcp flags & (syn|ack) == syn" accept
CONF="$LAB_DIR/dualrelay.conf"
lab_conf_write "$CONF"
sed -i 's/queue = { retry_min_s = 1; retry_max_s = 2;/queue = { retry_min_s = 60; retry_max_s = 120;/' "$CONF"
lab_daemon_start "$CONF"
from=alice@client.example.net
for i in 1 2 3 4 5; do
	lab_make_message "$LAB_DIR/msg$i" "$from" "d$i@dead.example" "dead $i"
	lab_send "$from" "d$i@dead.example" "$LAB_DIR/msg$i" || lab_fail "message $i not accepted"
	lab_expect_log "$(lab_re "$LAB_QID"): to=<d$i@dead.example>.*status=deferred" 10 "deferral $i"
done
refused=$(grep -c 'connect to mx.dead.example\[198.51.100.141\]:25 (ipv4): Connection refused' "$LAB_LOG")
suspended=$(grep -c 'status=deferred (delivery temporarily suspended: connect to mx.dead.example' "$LAB_LOG")
syns=$(labf_nft_packets "$LAB_NET" syns)
lab_log "refused connects $refused, suspended deferrals $suspended, SYNs $syns"
[ "$refused" -eq 1 ] || lab_fail "$refused connection attempts to the dead MX, expected 1"
[ "$suspended" -eq 4 ] || lab_fail "$suspended suspended deferrals, expected 4"
[ "$syns" -eq 1 ] || lab_fail "$syns SYNs to the dead MX, expected 1"

lab_sink_start dead 198.51.100.141
lab_relay "$DR_BUILDDIR/src/dualrelayctl" -c "$CONF" flush >/dev/null || lab_fail "flush failed"
lab_sink_wait dead 5 15 || lab_fail "the sink got $(lab_sink_count dead) of 5 after the flush"
lab_pass
