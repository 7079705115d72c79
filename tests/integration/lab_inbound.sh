# lab_inbound.sh: additions to lab.sh (and lab_tls.sh's test CA) for the inbound TLS and
# AUTH tests (inbound_*.sh).  Sourced after lab.sh, lab_family.sh and lab_tls.sh.
#
#   labi_setup                 lab_setup, the tools, a test CA and a certificate for
#                              relay.example.net, and a users file ($LAB_DIR/users, mode
#                              0600): alice (yescrypt, password $LABI_PASS_ALICE) and bob
#                              (sha512-crypt, password $LABI_PASS_BOB)
#   labi_conf FILE             a configuration with those, relay_networks loopback only,
#                              listening on 127.0.0.1:2525 (STARTTLS, the default with a
#                              certificate) and on the relay's lab address 192.0.2.1:
#                              587 (STARTTLS), 465 (implicit TLS) and 2526 (tls = "none")
#   labi_swaks OUT ARGS...     swaks from the "internet" (192.0.2.254, outside
#                              relay_networks) to 192.0.2.1, transcript in OUT; its status
#   labi_client ARGS...        tests/integration/inbound_client.py from the internet

LABI_PASS_ALICE='correct horse'
LABI_PASS_BOB='b0b-s3cret'
LABI_HOST=relay.example.net

labi_setup() {
	lab_setup
	lab_require openssl mkpasswd python3 swaks
	labt_ca
	labt_cert "$LABI_HOST"
	chmod 600 "$LAB_DIR/pki/$LABI_HOST.key"
	{
		echo "# test users"
		echo "alice:$(printf '%s' "$LABI_PASS_ALICE" | mkpasswd -m yescrypt -s)"
		echo "bob:$(openssl passwd -6 -stdin <<<"$LABI_PASS_BOB")"
	} >"$LAB_DIR/users" || lab_fail "cannot make the users file"
	chmod 600 "$LAB_DIR/users"
	grep -q '^alice:\$y\$' "$LAB_DIR/users" && grep -q '^bob:\$6\$' "$LAB_DIR/users" ||
		lab_fail "users file not as expected: $(cat "$LAB_DIR/users")"
}

labi_conf() {
	LAB_CONF_LISTEN='{ address = "127.0.0.1"; port = 2525; },
  { address = "192.0.2.1"; port = 587; tls = "starttls"; },
  { address = "192.0.2.1"; port = 465; tls = "implicit"; },
  { address = "192.0.2.1"; port = 2526; tls = "none"; }'
	LAB_CONF_RELAY_NETWORKS='"127.0.0.0/8"'
	lab_conf_write "$1" \
		"tls_cert = \"$LAB_DIR/pki/$LABI_HOST.pem\";" \
		"tls_key = \"$LAB_DIR/pki/$LABI_HOST.key\";" \
		"users_file = \"$LAB_DIR/users\";"
}

labi_daemon_start() {
	lab_daemon_start "$1"
	local p
	for p in 587 465 2526; do
		wait_for 5 lab_listening "$LAB_RELAY" 192.0.2.1 "$p" ||
			lab_fail "no listener on 192.0.2.1:$p"
	done
}

labi_swaks() {
	local out=$1
	shift
	lab_inet swaks --helo outside.test --timeout 20 --tls-verify \
		--tls-ca-path "$LAB_DIR/pki/ca.pem" "$@" >"$out" 2>&1
}

labi_client() {
	lab_inet python3 "$DR_SRCDIR/tests/integration/inbound_client.py" "$@"
}
