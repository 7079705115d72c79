#!/bin/bash
# reload: a changed route takes effect for the next message after "dualrelayctl reload"
# and after SIGHUP; a broken configuration is refused (ctl exits non-zero with the
# FILE:LINE errors, the log says the old one is kept) and mail keeps following the last
# valid one.
. "$(dirname "$0")/lab.sh"

lab_setup
lab_dns_start <<'ZONE'
reload.example. MX 10 mx.reload.example.
mx.reload.example. A 198.51.100.71
ZONE
lab_sink_start mx 198.51.100.71
lab_sink_start smartA 198.51.100.72
lab_sink_start smartB 198.51.100.73
CONF="$LAB_DIR/dualrelay.conf"
CTL="$DR_BUILDDIR/src/dualrelayctl"
ctl() { lab_relay "$CTL" -c "$CONF" "$@"; }
route_to() { # TRANSPORT-LINE...: the config with reload.example routed as given
	lab_conf_write "$CONF" "$@"
}
send() { # N: one message to reload.example
	lab_make_message "$LAB_DIR/msg.$1" alice@client.example.net "r$1@reload.example" "reload $1"
	lab_send alice@client.example.net "r$1@reload.example" "$LAB_DIR/msg.$1" || lab_fail "message $1 not accepted"
}

route_to
lab_daemon_start "$CONF"
send 1
lab_sink_wait mx 1 10 || lab_fail "message 1 did not reach the MX"

# Route to smarthost A; reload over the control socket.
route_to 'transports = { smart = { relay = "[198.51.100.72]"; }; };' \
	'routes = ( { domain = "reload.example"; transport = "smart"; } );'
ctl reload || lab_fail "dualrelayctl reload failed"
lab_expect_log "reload: configuration .* loaded" 5 "reload log line"
send 2
lab_sink_wait smartA 1 10 || lab_fail "message 2 did not follow the new route to smarthost A"

# Route to smarthost B; reload with SIGHUP.
route_to 'transports = { smart = { relay = "[198.51.100.73]"; }; };' \
	'routes = ( { domain = "reload.example"; transport = "smart"; } );'
kill -HUP "$LAB_DAEMON_PID"
wait_for 5 lab_log_has "reload: configuration .* loaded.*" || true
sleep 0.5
send 3
lab_sink_wait smartB 1 10 || lab_fail "message 3 did not follow the route after SIGHUP"

# A broken file: refused, with its errors; the running configuration stays.
route_to 'transports = { smart = { relay = "[198.51.100.72]"; family = "ipv5"; }; };' \
	'routes = ( { domain = "reload.example"; transport = "nosuch"; } );'
out=$(ctl reload 2>&1) && lab_fail "reload of a broken configuration succeeded: $out"
printf '%s\n' "$out" | grep -q "$CONF:[0-9]*: .*family" || lab_fail "no FILE:LINE error for the family: $out"
printf '%s\n' "$out" | grep -q "$CONF:[0-9]*: .*nosuch" || lab_fail "no FILE:LINE error for the route: $out"
lab_expect_log "reload: .* has errors; keeping the running configuration" 5 "refusal log line"
send 4
lab_sink_wait smartB 2 10 || lab_fail "message 4 did not follow the last valid configuration"
[ "$(lab_sink_count smartA)" -eq 1 ] || lab_fail "smarthost A got a message after the refused reload"
lab_pass
