# lab_tls.sh: additions to lab.sh and lab_family.sh for the outbound TLS and smarthost
# AUTH tests (tls_*.sh).  Sourced after both; uses their variables and functions.
#
#   labt_setup                 labf_setup, plus the tools these tests need
#   labt_ca                    a test CA in $LAB_DIR/pki (ca.pem, ca.key), made with the
#                              openssl command line tool; nothing outside the test trusts it
#   labt_cert NAME             a server certificate for NAME (subjectAltName DNS:NAME),
#                              signed by the test CA: $LAB_DIR/pki/NAME.pem and NAME.key
#   labt_postfix_rx NAME HOST CERT DOMAINS ADDR...
#                              a private Postfix receiver in NET (labf_postfix_start) named
#                              NAME, myhostname HOST, listening on ADDR:25, offering
#                              STARTTLS with the certificate CERT (a labt_cert name; "-"
#                              for none), recording the TLS use in its Received: header,
#                              and delivering mail for DOMAINS (space separated) to one
#                              maildir; main.cf lines from stdin are appended
#   labt_mailbox_files NAME    the messages in that maildir, one path a line
#   labt_mailbox_count NAME    how many there are
#   labt_pflog NAME REGEX      the receiver's maillog lines matching REGEX (1 if none)
#   labt_status_line QID RCPT  dualrelayd's last status line for QID and RCPT

labt_setup() {
	labf_setup
	lab_require openssl postfix postconf
}

labt_ca() {
	local d="$LAB_DIR/pki"
	mkdir -p "$d"
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
		-keyout "$d/ca.key" -out "$d/ca.pem" -subj "/CN=dualrelay lab test CA" \
		-addext "basicConstraints=critical,CA:TRUE" \
		-addext "keyUsage=critical,keyCertSign,cRLSign" >"$d/ca.out" 2>&1 ||
		lab_fail "openssl: cannot make the test CA: $(cat "$d/ca.out")"
}

labt_cert() {
	local d="$LAB_DIR/pki" name=$1
	openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
		-keyout "$d/$name.key" -out "$d/$name.csr" -subj "/CN=$name" >"$d/$name.out" 2>&1 ||
		lab_fail "openssl: cannot make a key for $name: $(cat "$d/$name.out")"
	printf 'basicConstraints=CA:FALSE\nsubjectAltName=DNS:%s\nextendedKeyUsage=serverAuth\n' \
		"$name" >"$d/$name.ext"
	openssl x509 -req -in "$d/$name.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" \
		-CAcreateserial -days 2 -extfile "$d/$name.ext" -out "$d/$name.pem" \
		>>"$d/$name.out" 2>&1 ||
		lab_fail "openssl: cannot sign the certificate of $name: $(cat "$d/$name.out")"
}

labt_postfix_rx() {
	local name=$1 host=$2 cert=$3 domains=$4 pf a
	shift 4
	for a in "$@"; do
		lab_net_addr "$a"
	done
	pf=$(labf_postfix_dir "$name")
	mkdir -p "$pf/mail"
	chown 65534:65534 "$pf/mail" || lab_fail "chown $pf/mail"
	# Through a file, not a pipe: labf_postfix_start must run in this shell (it records
	# the instance for cleanup, and lab_fail must end the test).
	{
		cat <<EOF
myhostname = $host
mydomain = ${host#*.}
myorigin = \$myhostname
mynetworks = 127.0.0.0/8
virtual_mailbox_domains = $domains
virtual_mailbox_base = $pf/mail
virtual_mailbox_maps = static:box/
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
smtpd_tls_received_header = yes
smtpd_tls_loglevel = 1
EOF
		if [ "$cert" != - ]; then
			cat <<EOF
smtpd_tls_security_level = may
smtpd_tls_cert_file = $LAB_DIR/pki/$cert.pem
smtpd_tls_key_file = $LAB_DIR/pki/$cert.key
EOF
		fi
		cat
	} >"$LAB_DIR/main.cf.$name"
	labf_postfix_start "$name" "$LAB_NET" "$@" <"$LAB_DIR/main.cf.$name"
}

labt_mailbox_files() {
	find "$(labf_postfix_dir "$1")/mail/box/new" -type f 2>/dev/null | sort
}

labt_mailbox_count() {
	labt_mailbox_files "$1" | grep -c .
}

labt_pflog() {
	grep -E -- "$2" "$(labf_postfix_dir "$1")/maillog" 2>/dev/null
}

labt_status_line() {
	grep -E -- "$(lab_re "$1"): to=<$(lab_re "$2")>, .*status=" "$LAB_LOG" | tail -n1
}
