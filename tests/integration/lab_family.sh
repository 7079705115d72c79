# lab_family.sh: additions to lab.sh for the family-aware delivery tests (family_*.sh) and
# contrib/bench-blackhole.sh.  Sourced after lab.sh; uses its variables and functions.
#
#   labf_setup                 lab_setup, plus cleanup of what this file starts
#   labf_nft_init NS           an nftables table "labf" in namespace NS with an input and an
#                              output chain (policy accept), for fault rules and counters
#   labf_nft_rule NS CHAIN NAME MATCH [VERDICT]
#                              a rule "MATCH counter name NAME [VERDICT]": every packet the
#                              rule sees is counted in the named counter NAME
#   labf_nft_packets NS NAME   that counter's packet count
#   labf_sent_delay QID RCPT   the delay= of the status=sent line of QID to RCPT
#   labf_postfix_start NAME NS LISTEN...
#                              a private Postfix instance (own config, queue and data
#                              directories under $LAB_DIR/postfix.NAME, no chroot) with
#                              smtpd on each LISTEN address; main.cf lines from stdin are
#                              appended (later lines override earlier ones)
#   labf_net_resolver          /etc/netns/$LAB_NET/resolv.conf pointing at the lab DNS, so
#                              programs in NET (a Postfix receiver) resolve through it
#   labf_server_start NAME ADDR...  tests/integration/family_server.py on ADDR:25

LABF_POSTFIX_DIRS=""    # private Postfix instances to stop ("NS:DIR" words)
LABF_NET_RESOLVER=""    # set when we created /etc/netns/$LAB_NET

labf_setup() {
	lab_setup
	# Run our cleanup before lab.sh's, keeping the exit status it reports.
	trap 'labf_cleanup; lab_cleanup' EXIT
}

labf_cleanup() {
	local rc=$? w ns dir pid
	[ "$BASHPID" = "$$" ] || return "$rc"
	for w in $LABF_POSTFIX_DIRS; do
		ns=${w%%:*}
		dir=${w#*:}
		pid=$(tr -dc '0-9' <"$dir/queue/pid/master.pid" 2>/dev/null)
		ip netns exec "$ns" postfix -c "$dir" stop >/dev/null 2>&1
		[ -n "$pid" ] && { wait_for 10 lab_pid_gone "$pid" || kill -KILL "$pid" 2>/dev/null; }
	done
	LABF_POSTFIX_DIRS=""
	if [ -n "$LABF_NET_RESOLVER" ] && [ -n "$LAB_NET" ]; then
		rm -rf "/etc/netns/$LAB_NET"
		LABF_NET_RESOLVER=""
	fi
	return "$rc"
}

# --- nftables -------------------------------------------------------------------------------

labf_nft_init() {
	lab_require nft
	ip netns exec "$1" nft -f - <<'EOF' || lab_fail "nft table in $1"
table inet labf {
	chain input { type filter hook input priority -10; policy accept; }
	chain output { type filter hook output priority -10; policy accept; }
}
EOF
}

labf_nft_rule() {
	local ns=$1 chain=$2 name=$3 match=$4 verdict=${5:-}
	ip netns exec "$ns" nft add counter inet labf "$name" ||
		lab_fail "nft counter $name in $ns"
	# shellcheck disable=SC2086 # MATCH and VERDICT are nft words
	ip netns exec "$ns" nft add rule inet labf "$chain" $match counter name "$name" $verdict ||
		lab_fail "nft rule '$match counter name $name $verdict' in $ns"
}

labf_nft_packets() {
	local n
	n=$(ip netns exec "$1" nft list counter inet labf "$2" 2>/dev/null |
		sed -n 's/.*packets \([0-9][0-9]*\).*/\1/p')
	[ -n "$n" ] || lab_fail "cannot read nft counter $2 in $1"
	echo "$n"
}

# --- dualrelayd's log -----------------------------------------------------------------------

# labf_sent_line QID RCPT: the status=sent line for QID and RCPT (empty if none).
labf_sent_line() {
	grep -E -- "$(lab_re "$1"): to=<$(lab_re "$2")>, .*status=sent " "$LAB_LOG" | tail -n1
}

labf_sent_delay() {
	labf_sent_line "$1" "$2" | sed -n 's/.*, delay=\([0-9.]*\),.*/\1/p'
}

# labf_lt A B: A < B for decimal numbers.
labf_lt() {
	python3 -c 'import sys; sys.exit(0 if float(sys.argv[1]) < float(sys.argv[2]) else 1)' "$1" "$2"
}

# labf_expect_fast QID RCPT MAX_S: the sent line's delay= is below MAX_S seconds.
labf_expect_fast() {
	local d
	d=$(labf_sent_delay "$1" "$2")
	[ -n "$d" ] || lab_fail "no delay= in the delivery line of $1 to <$2>"
	labf_lt "$d" "$3" || lab_fail "$1 to <$2> took delay=$d s, expected < $3 s"
	lab_log "$1 to <$2>: delay=$d s (< $3 s)"
}

# labf_message FILE FROM TO SUBJECT: a short plain message (CR LF).
labf_message() {
	printf 'From: %s\r\nTo: %s\r\nSubject: %s\r\nMessage-ID: <%s@client.example.net>\r\n\r\nbody of %s\r\n' \
		"$2" "$3" "$4" "$(echo "$4" | tr ' ' .)" "$4" >"$1"
}

# --- programs in NET ------------------------------------------------------------------------

labf_net_resolver() {
	mkdir -p "/etc/netns/$LAB_NET" || lab_fail "mkdir /etc/netns/$LAB_NET"
	LABF_NET_RESOLVER=1
	echo "nameserver $LAB_DNS_ADDR" >"/etc/netns/$LAB_NET/resolv.conf"
}

labf_postfix_start() {
	local name=$1 ns=$2 d="$LAB_DIR/postfix.$1" a listen=() interfaces="" svc
	shift 2
	lab_require postfix postconf
	for a in "$@"; do
		case $a in
		*:*) listen+=("[$a]:25") ;;
		*) listen+=("$a:25") ;;
		esac
		interfaces="$interfaces${interfaces:+, }$a"
	done
	mkdir -p "$d/queue" "$d/data"
	chown postfix "$d/data" || lab_fail "chown postfix $d/data"
	{
		cat <<EOF
compatibility_level = 3.6
queue_directory = $d/queue
data_directory = $d/data
command_directory = $(postconf -dh command_directory)
daemon_directory = $(postconf -dh daemon_directory)
shlib_directory = $(postconf -dh shlib_directory)
meta_directory = $(postconf -dh meta_directory)
mail_owner = postfix
setgid_group = postdrop
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
inet_interfaces = $interfaces
inet_protocols = all
smtp_tls_security_level = none
smtpd_tls_security_level = none
maillog_file_prefixes = $d
maillog_file = $d/maillog
biff = no
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
EOF
		cat
	} >"$d/main.cf"
	{
		for a in "${listen[@]}"; do
			echo "$a inet n - n - - smtpd"
		done
		for svc in "postlog unix-dgram n - n - 1 postlogd" \
			"pickup unix n - n 60 1 pickup" \
			"cleanup unix n - n - 0 cleanup" \
			"qmgr unix n - n 300 1 qmgr" \
			"tlsmgr unix - - n 1000? 1 tlsmgr" \
			"rewrite unix - - n - - trivial-rewrite" \
			"bounce unix - - n - 0 bounce" \
			"defer unix - - n - 0 bounce" \
			"trace unix - - n - 0 bounce" \
			"verify unix - - n - 1 verify" \
			"flush unix n - n 1000? 0 flush" \
			"proxymap unix - - n - - proxymap" \
			"proxywrite unix - - n - 1 proxymap" \
			"smtp unix - - n - - smtp" \
			"relay unix - - n - - smtp" \
			"showq unix n - n - - showq" \
			"error unix - - n - - error" \
			"retry unix - - n - - error" \
			"discard unix - - n - - discard" \
			"local unix - n n - - local" \
			"virtual unix - n n - - virtual" \
			"anvil unix - - n - 1 anvil" \
			"scache unix - - n - 1 scache"; do
			echo "$svc"
		done
	} >"$d/master.cf"
	LABF_POSTFIX_DIRS="$LABF_POSTFIX_DIRS $ns:$d"
	ip netns exec "$ns" postfix -c "$d" start >"$d/start.out" 2>&1 ||
		lab_fail "postfix -c $d start failed: $(cat "$d/start.out")"
	for a in "$@"; do
		wait_for 10 lab_listening "$ns" "$a" 25 ||
			lab_fail "postfix $name does not listen on $a:25 ($(tail -n 5 "$d/maillog" 2>/dev/null))"
	done
}

labf_postfix_dir() { echo "$LAB_DIR/postfix.$1"; }

# labf_server_start NAME ADDR...: the scripted server (family_server.py) in NET on ADDR:25
# for each ADDR; it stores accepted messages in $LAB_DIR/server.NAME/accepted/ and the
# messages it rejected after DATA in .../rejected/, and logs each session to
# $LAB_DIR/server.NAME/log.
labf_server_start() {
	local name=$1 dir="$LAB_DIR/server.$1" a pid var
	shift
	mkdir -p "$dir/accepted" "$dir/rejected"
	for a in "$@"; do
		lab_net_addr "$a"
	done
	ip netns exec "$LAB_NET" python3 "$DR_SRCDIR/tests/integration/family_server.py" \
		--dir "$dir" --name "mx-$name.lab" "$@" >>"$dir/out" 2>&1 &
	pid=$!
	LAB_PIDS="$LAB_PIDS $pid"
	var="LABF_SERVER_PID_$name"
	printf -v "$var" '%s' "$pid"
	for a in "$@"; do
		wait_for 5 lab_sink_ready "$pid" "$a" ||
			lab_fail "family_server $name does not listen on $a:25 ($(cat "$dir/out"))"
	done
}

labf_server_dir() { echo "$LAB_DIR/server.$1"; }
