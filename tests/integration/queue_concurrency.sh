#!/bin/bash
# queue_concurrency: queue.destination_concurrency bounds the parallel connections to one
# destination. Ten messages to one domain whose MX (smtp-sink -w 1) takes a second to
# answer each DATA: the sink never sees more than 2 connections at once (sampled with ss
# inside the MX's namespace), does see 2 (the limit is used), and gets all ten.
. "$(dirname "$0")/lab.sh"

lab_setup
lab_require smtp-source
lab_dns_start <<'ZONE'
conc.example. MX 10 mx.conc.example.
mx.conc.example. A 198.51.100.101
ZONE
lab_sink_start conc 198.51.100.101 -w 1
lab_conf_write "$LAB_DIR/dualrelay.conf"
sed -i 's/max_lifetime_s = 120;/max_lifetime_s = 120; destination_concurrency = 2;/' "$LAB_DIR/dualrelay.conf"
lab_daemon_start "$LAB_DIR/dualrelay.conf"

# Sample established connections to the sink's port 25 every 50 ms until told to stop.
( max=0
  while [ ! -e "$LAB_DIR/stop" ]; do
	n=$(lab_inet ss -Htn state established '( sport = :25 )' 2>/dev/null | grep -c 198.51.100.101)
	[ "$n" -gt "$max" ] && max=$n && echo "$max" >"$LAB_DIR/max"
	sleep 0.05
  done ) &
sampler=$!
echo 0 >"$LAB_DIR/max"
# All ten submitted at once (smtp-source, ten sessions): one by one, a loaded machine
# can submit slower than the sink answers, and connection reuse then needs only one.
lab_relay timeout 60 smtp-source -s 10 -m 10 -f alice@client.example.net \
	-t r@conc.example 127.0.0.1:2525 >"$LAB_DIR/source.out" 2>&1 ||
	lab_fail "smtp-source: $(tail -n3 "$LAB_DIR/source.out")"
lab_sink_wait conc 10 30 || lab_fail "the sink got $(lab_sink_count conc) of 10 messages"
touch "$LAB_DIR/stop"
wait "$sampler"
max=$(cat "$LAB_DIR/max")
lab_log "most connections seen at once: $max"
[ "$max" -le 2 ] || lab_fail "$max connections at once with destination_concurrency = 2"
[ "$max" -eq 2 ] || lab_fail "never 2 connections at once: the limit was not used"
lab_pass
