# lab.sh: the integration-test lab, sourced by every tests/integration/*.sh script.
#
# It builds a small private "internet" out of two network namespaces, runs real peers in it
# (unbound as the DNS server, Postfix's smtp-sink as the MX hosts, swaks and Postfix as
# clients) and runs dualrelayd in the middle.  Nothing here touches the root namespace's
# interfaces or routes, and every address is a documentation address (RFC 5737, RFC 3849).
#
# Addressing plan
#
#   RELAY namespace ($LAB_RELAY): dualrelayd, the SMTP clients, a private Postfix
#     lo   127.0.0.1/8, ::1/128          dualrelayd listens on 127.0.0.1:2525 and [::1]:2525
#     v0   192.0.2.1/24, 2001:db8::1/64  the relay's "public" addresses (outbound source)
#     routes: 198.51.100.0/24 and 203.0.113.0/24 via 192.0.2.254,
#             2001:db8:100::/48 via 2001:db8::fe
#     /etc/netns/$LAB_RELAY/resolv.conf: nameserver 203.0.113.53
#
#   NET namespace ($LAB_NET): "the internet"
#     v1   192.0.2.254/24, 2001:db8::fe/64   (peer of v0)
#     lo   203.0.113.53/32                    unbound, port 53 (the only DNS server)
#     lo   198.51.100.N/32, 2001:db8:100::N/128   MX hosts (smtp-sink on port 25), added on
#                                              demand by lab_net_addr / lab_sink_start
#
# The two namespaces are joined by a veth pair created inside RELAY with its peer moved into
# NET, so no interface ever appears in the root namespace.  Everything started here runs in
# one of the two namespaces, so lab_cleanup can stop exactly the processes the test started
# (the PIDs it recorded, then whatever is still inside its own namespaces) and nothing else.
#
# Usage (see the tests next to this file):
#   . "$DR_SRCDIR/tests/integration/lab.sh"
#   lab_setup
#   lab_dns_start <<EOF
#   one.example. MX 10 mx.one.example.
#   mx.one.example. A 198.51.100.11
#   EOF
#   lab_sink_start one 198.51.100.11
#   lab_conf_write "$LAB_DIR/dualrelay.conf"
#   lab_daemon_start "$LAB_DIR/dualrelay.conf"
#   lab_send sender@client.example rcpt@one.example "$msgfile"
#   lab_wait_log "$LAB_QID: to=<rcpt@one.example>.*status=sent" 10
#
# Tests exit 0 on success, 1 on failure (with the daemon log printed), 77 when skipped
# (not root: namespaces need CAP_SYS_ADMIN).

LAB_TEST=$(basename "$0" .sh)
: "${DR_BUILDDIR:=$(cd "$(dirname "$0")/../.." && pwd)}"
: "${DR_SRCDIR:=$(cd "$(dirname "$0")/../.." && pwd)}"
# DR_DAEMON runs another build of the daemon (e.g. one with sanitizers) against the lab.
LAB_DAEMON="${DR_DAEMON:-$DR_BUILDDIR/src/dualrelayd}"

LAB_RELAY=""
LAB_NET=""
LAB_DIR=""
LAB_LOG=""          # dualrelayd's log (stderr), appended to across restarts
LAB_DAEMON_PID=""
LAB_UNBOUND_PID=""
LAB_PIDS=""         # every background process we started (sinks, unbound, daemon)
LAB_POSTFIX_DIR=""
LAB_QID=""          # queue id of the last message lab_send got accepted
LAB_DUMP=""         # set by lab_expect_sink_file
LAB_DNS_ADDR=203.0.113.53
LAB_SETUP_DONE=0
LAB_LOGS_SHOWN=""

# --- small helpers --------------------------------------------------------------------------

lab_log() {
	printf '%s: %s\n' "$LAB_TEST" "$*" >&2
}

# Print everything an engineer needs to see why a test failed.
lab_dump_logs() {
	if [ -n "$LAB_LOG" ] && [ -f "$LAB_LOG" ]; then
		echo "----- dualrelayd log ($LAB_LOG) -----" >&2
		tail -n 200 "$LAB_LOG" >&2
	fi
	if [ -n "$LAB_DIR" ] && [ -f "$LAB_DIR/swaks.out" ]; then
		echo "----- last swaks transcript -----" >&2
		tail -n 60 "$LAB_DIR/swaks.out" >&2
	fi
	if [ -n "$LAB_DIR" ] && [ -f "$LAB_DIR/unbound/unbound.log" ]; then
		echo "----- unbound log -----" >&2
		tail -n 30 "$LAB_DIR/unbound/unbound.log" >&2
	fi
	if [ -n "$LAB_POSTFIX_DIR" ] && [ -f "$LAB_POSTFIX_DIR/maillog" ]; then
		echo "----- postfix maillog -----" >&2
		tail -n 60 "$LAB_POSTFIX_DIR/maillog" >&2
	fi
	echo "-----" >&2
}

lab_fail() {
	lab_log "FAIL: $*"
	lab_dump_logs
	LAB_LOGS_SHOWN=1
	exit 1
}

# lab_pass: stop the daemon with SIGTERM (it must exit by itself, and a sanitizer build
# then reports leaks) and fail if the log holds a sanitizer report; else exit 0.
lab_pass() {
	lab_daemon_stop
	if [ -f "$LAB_LOG" ] && grep -Eq 'ERROR: (Address|Leak|Memory|Thread)Sanitizer|runtime error:' "$LAB_LOG"; then
		lab_fail "sanitizer report in the dualrelayd log"
	fi
	lab_log "PASS"
	exit 0
}

# Missing tools on a machine that can run the lab are a failure, not a skip: CI installs them
# with contrib/install-deps.sh, and a silent skip would hide a broken install step.
lab_require() {
	local t
	for t in "$@"; do
		command -v "$t" >/dev/null 2>&1 ||
			lab_fail "required tool '$t' not found (run contrib/install-deps.sh)"
	done
}

# wait_for TIMEOUT_S CMD...: run CMD every 0.1 s until it succeeds; 1 on timeout.
wait_for() {
	local timeout=$1 deadline
	shift
	deadline=$(($(date +%s%N) / 1000000 + timeout * 1000))
	while :; do
		"$@" && return 0
		[ $(($(date +%s%N) / 1000000)) -ge "$deadline" ] && return 1
		sleep 0.1
	done
}

lab_relay() { ip netns exec "$LAB_RELAY" "$@"; }
lab_inet() { ip netns exec "$LAB_NET" "$@"; }

# Wait up to TIMEOUT_S for PID to exit (it must be our child); 1 if it is still running.
lab_wait_pid() {
	local pid=$1 timeout=$2
	wait_for "$timeout" lab_pid_gone "$pid" || return 1
	wait "$pid" 2>/dev/null
	return 0
}

lab_pid_gone() {
	! kill -0 "$1" 2>/dev/null
}

# Stop one process we started: TERM, a bounded wait, then KILL.
lab_stop_pid() {
	local pid=$1
	[ -n "$pid" ] || return 0
	kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null; return 0; }
	kill -TERM "$pid" 2>/dev/null
	if ! lab_wait_pid "$pid" 5; then
		kill -KILL "$pid" 2>/dev/null
		lab_wait_pid "$pid" 5
	fi
	return 0
}

lab_forget_pid() {
	local p out=""
	for p in $LAB_PIDS; do
		[ "$p" = "$1" ] || out="$out $p"
	done
	LAB_PIDS=$out
}

# --- namespaces -----------------------------------------------------------------------------

lab_setup() {
	if [ "$(id -u)" -ne 0 ]; then
		echo "$LAB_TEST: SKIP: needs root (network namespaces)" >&2
		exit 77
	fi
	lab_require ip python3 unbound smtp-sink swaks ss

	local suffix
	suffix=$(printf '%x%04x' $$ $((RANDOM)))
	LAB_RELAY="drl${suffix}r"
	LAB_NET="drl${suffix}n"
	LAB_DIR=$(mktemp -d "${TMPDIR:-/tmp}/drl.$LAB_TEST.XXXXXX") || lab_fail "mktemp"
	# smtp-sink and Postfix drop privileges: they must be able to reach their directories.
	chmod 0755 "$LAB_DIR"
	LAB_LOG="$LAB_DIR/dualrelayd.log"
	trap lab_cleanup EXIT
	trap 'exit 1' INT TERM HUP

	# /etc/netns/NAME/* is bind-mounted over /etc/* by "ip netns exec": the relay's
	# resolver (Postfix, anything using libc) sees only the lab DNS server.
	mkdir -p "/etc/netns/$LAB_RELAY" || lab_fail "mkdir /etc/netns/$LAB_RELAY"
	echo "nameserver $LAB_DNS_ADDR" >"/etc/netns/$LAB_RELAY/resolv.conf"

	ip netns add "$LAB_RELAY" || lab_fail "ip netns add $LAB_RELAY"
	ip netns add "$LAB_NET" || lab_fail "ip netns add $LAB_NET"
	LAB_SETUP_DONE=1

	local ns
	for ns in "$LAB_RELAY" "$LAB_NET"; do
		# No duplicate address detection: addresses must be usable at once.
		ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.accept_dad=0 \
			net.ipv6.conf.default.accept_dad=0 >/dev/null ||
			lab_fail "sysctl in $ns"
		ip -n "$ns" link set lo up || lab_fail "lo up in $ns"
	done

	ip -n "$LAB_RELAY" link add v0 type veth peer name v1 netns "$LAB_NET" ||
		lab_fail "veth pair"
	ip -n "$LAB_RELAY" addr add 192.0.2.1/24 dev v0 &&
		ip -n "$LAB_RELAY" addr add 2001:db8::1/64 dev v0 nodad &&
		ip -n "$LAB_NET" addr add 192.0.2.254/24 dev v1 &&
		ip -n "$LAB_NET" addr add 2001:db8::fe/64 dev v1 nodad &&
		ip -n "$LAB_RELAY" link set v0 up &&
		ip -n "$LAB_NET" link set v1 up ||
		lab_fail "veth addresses"
	ip -n "$LAB_RELAY" route add 198.51.100.0/24 via 192.0.2.254 &&
		ip -n "$LAB_RELAY" route add 203.0.113.0/24 via 192.0.2.254 &&
		ip -n "$LAB_RELAY" -6 route add 2001:db8:100::/48 via 2001:db8::fe ||
		lab_fail "relay routes"
	lab_net_addr "$LAB_DNS_ADDR"

	# Addresses must be usable at once (no DAD still running), and the link must be up.
	wait_for 5 lab_links_ready || lab_fail "veth link or IPv6 addresses not ready"
}

lab_links_ready() {
	ip -n "$LAB_RELAY" link show v0 | grep -q 'state UP' &&
		ip -n "$LAB_NET" link show v1 | grep -q 'state UP' &&
		! ip -n "$LAB_RELAY" -6 addr show tentative | grep -q inet6 &&
		! ip -n "$LAB_NET" -6 addr show tentative | grep -q inet6
}

# lab_net_addr ADDR: put a host address (IPv4 /32 or IPv6 /128) on NET's lo, once.
lab_net_addr() {
	local a=$1
	case $a in
	*:*)
		ip -n "$LAB_NET" -6 addr show dev lo | grep -q "inet6 $a/128" && return 0
		ip -n "$LAB_NET" addr add "$a/128" dev lo nodad || lab_fail "addr $a"
		;;
	*)
		ip -n "$LAB_NET" -4 addr show dev lo | grep -q "inet $a/32" && return 0
		ip -n "$LAB_NET" addr add "$a/32" dev lo || lab_fail "addr $a"
		;;
	esac
}

lab_cleanup() {
	local rc=$? p ns
	# Only the test's main shell tears the lab down, never a subshell of it.
	[ "$BASHPID" = "$$" ] || exit "$rc"
	trap - EXIT
	if [ "$rc" -ne 0 ] && [ "$rc" -ne 77 ] && [ -z "$LAB_LOGS_SHOWN" ]; then
		lab_dump_logs
	fi
	if [ -n "$LAB_POSTFIX_DIR" ]; then
		lab_postfix_stop
	fi
	for p in $LAB_PIDS; do
		lab_stop_pid "$p"
	done
	if [ "$LAB_SETUP_DONE" = 1 ]; then
		# Anything left inside our own namespaces was started by this test (e.g. Postfix
		# children that outlived their master): end those, by PID.
		for ns in "$LAB_RELAY" "$LAB_NET"; do
			for p in $(ip netns pids "$ns" 2>/dev/null); do
				kill -KILL "$p" 2>/dev/null
			done
		done
		sleep 0.1
		ip netns del "$LAB_RELAY" 2>/dev/null
		ip netns del "$LAB_NET" 2>/dev/null
	fi
	if [ -n "$LAB_RELAY" ]; then
		rm -rf "/etc/netns/$LAB_RELAY"
	fi
	if [ -n "$LAB_DIR" ] && [ -d "$LAB_DIR" ]; then
		if [ -n "$DR_KEEP_LAB" ]; then
			echo "$LAB_TEST: lab directory kept: $LAB_DIR" >&2
		else
			rm -rf "$LAB_DIR"
		fi
	fi
	exit "$rc"
}

# --- DNS: unbound in NET --------------------------------------------------------------------

# lab_dns_start: serve the records read from standard input, one per line, in unbound
# local-data syntax ("mx.one.example. 300 A 198.51.100.11", "one.example. MX 0 ."), or
# "ptr ADDR NAME" for a reverse record.  Every name under example., test. and the lab's
# reverse zones not listed does not exist (NXDOMAIN); every other name is refused, so no
# query ever leaves the lab.
lab_dns_start() {
	local dir="$LAB_DIR/unbound" conf line addr name
	mkdir -p "$dir"
	conf="$dir/unbound.conf"
	{
		cat <<EOF
server:
	interface: $LAB_DNS_ADDR
	port: 53
	do-daemonize: no
	username: ""
	chroot: ""
	directory: "$dir"
	pidfile: "$dir/unbound.pid"
	logfile: "$dir/unbound.log"
	use-syslog: no
	verbosity: 1
	access-control: 0.0.0.0/0 allow
	access-control: ::/0 allow
	do-not-query-localhost: no
	module-config: "iterator"
	num-threads: 1
	cache-max-ttl: 0
	cache-max-negative-ttl: 0
	local-zone: "." refuse
	local-zone: "example." static
	local-zone: "test." static
	local-zone: "2.0.192.in-addr.arpa." static
	local-zone: "100.51.198.in-addr.arpa." static
	local-zone: "8.b.d.0.1.0.0.2.ip6.arpa." static
EOF
		while IFS= read -r line; do
			case $line in
			'' | '#'*) ;;
			ptr\ *)
				read -r _ addr name <<<"$line"
				printf '\tlocal-data-ptr: "%s %s"\n' "$addr" "$name"
				;;
			*) printf '\tlocal-data: "%s"\n' "$line" ;;
			esac
		done
		printf 'remote-control:\n\tcontrol-enable: no\n'
	} >"$conf"
	# Run "ip netns exec" itself in the background (not a shell function): it execs the
	# program, so $! is the program's own PID.
	ip netns exec "$LAB_NET" unbound -d -c "$conf" >>"$dir/unbound.out" 2>&1 &
	LAB_UNBOUND_PID=$!
	LAB_PIDS="$LAB_PIDS $LAB_UNBOUND_PID"
	wait_for 10 lab_dns_answers ||
		lab_fail "unbound does not answer on $LAB_DNS_ADDR:53 ($(cat "$dir/unbound.out"))"
}

lab_dns_answers() {
	kill -0 "$LAB_UNBOUND_PID" 2>/dev/null || return 1
	lab_dns_query example. SOA >/dev/null 2>&1
}

# lab_dns_query NAME TYPE: ask the lab DNS server from RELAY; prints "RCODE ANCOUNT"
# (RCODE as a name: NOERROR, NXDOMAIN, SERVFAIL, REFUSED...).  1 when there is no answer.
lab_dns_query() {
	lab_relay python3 - "$LAB_DNS_ADDR" "$1" "$2" <<'EOF'
import random, socket, struct, sys
server, name, qtype = sys.argv[1], sys.argv[2], sys.argv[3]
types = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "MX": 15, "TXT": 16, "AAAA": 28}
qid = random.randrange(65536)
q = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
for label in name.rstrip(".").split("."):
    if label:
        q += bytes([len(label)]) + label.encode()
q += b"\0" + struct.pack("!HH", types[qtype.upper()], 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.5)
s.sendto(q, (server, 53))
try:
    r, _ = s.recvfrom(4096)
except socket.timeout:
    sys.exit(1)
rid, flags, _, an = struct.unpack("!HHHH", r[:8])
if rid != qid:
    sys.exit(1)
rcodes = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}
print(rcodes.get(flags & 15, str(flags & 15)), an)
EOF
}

# --- MX hosts: smtp-sink in NET -------------------------------------------------------------

# lab_sink_start NAME ADDR [smtp-sink options...]: an SMTP receiver on ADDR:25 (ADDR gets
# added to NET's lo) that dumps each message to its own file in $LAB_DIR/sink.NAME/.  The
# dump is smtp-sink's format: X-Client-Addr:, X-Client-Proto:, X-Helo-Args:, X-Mail-Args:,
# X-Rcpt-Args: (one per RCPT), a three-line Received: header, then the message as received
# (after dot-unstuffing, one LF per line) and one empty line.
lab_sink_start() {
	local name=$1 addr=$2 dir pid listen var
	shift 2
	dir="$LAB_DIR/sink.$name"
	mkdir -p "$dir"
	chown nobody "$dir" 2>/dev/null || chmod 0777 "$dir"
	lab_net_addr "$addr"
	# smtp-sink binds with SO_REUSEPORT: a second one on a busy address would start fine
	# and share the connections with the first.  One server per address, always.
	! lab_listening "$LAB_NET" "$addr" 25 ||
		lab_fail "smtp-sink $name: something already listens on $addr port 25"
	case $addr in
	*:*) listen="[$addr]:25" ;;
	*) listen="$addr:25" ;;
	esac
	ip netns exec "$LAB_NET" smtp-sink -u nobody -h "mx-$name.lab" -d "$dir/%H%M%S." "$@" \
		"$listen" 64 >>"$LAB_DIR/sink.$name.out" 2>&1 &
	pid=$!
	LAB_PIDS="$LAB_PIDS $pid"
	var="LAB_SINK_PID_$name"
	printf -v "$var" '%s' "$pid"
	wait_for 5 lab_sink_ready "$pid" "$addr" ||
		lab_fail "smtp-sink $name does not listen on $listen ($(cat "$LAB_DIR/sink.$name.out"))"
}

# The sink we just started (not an older one on the same address) is alive and listening.
lab_sink_ready() {
	kill -0 "$1" 2>/dev/null && lab_listening "$LAB_NET" "$2" 25
}

lab_sink_stop() {
	local var="LAB_SINK_PID_$1"
	lab_stop_pid "${!var}"
	lab_forget_pid "${!var}"
	printf -v "$var" '%s' ""
}

lab_sink_dir() { echo "$LAB_DIR/sink.$1"; }

# A message counts once its dump file is not empty: smtp-sink creates the file at MAIL and
# leaves an empty one behind for a transaction that never completed.
lab_sink_count() {
	find "$LAB_DIR/sink.$1" -maxdepth 1 -type f -size +0 2>/dev/null | wc -l
}

# lab_sink_files NAME: the (non-empty) dump files, oldest first.
lab_sink_files() {
	find "$LAB_DIR/sink.$1" -maxdepth 1 -type f -size +0 -printf '%T@ %p\n' 2>/dev/null |
		sort -n | cut -d' ' -f2-
}

# lab_sink_wait NAME N TIMEOUT_S: wait until the sink has at least N messages.
lab_sink_wait() {
	wait_for "$3" lab_sink_has "$1" "$2"
}

lab_sink_has() {
	[ "$(lab_sink_count "$1")" -ge "$2" ]
}

# lab_dump_header FILE NAME: the value of smtp-sink's X-NAME: line(s) in a dump.
lab_dump_header() {
	sed -n "s/^X-$2: //p" "$1"
}

# lab_dump_message FILE: the message as dualrelay sent it, recovered from a sink dump: drop
# smtp-sink's own X- lines and its three-line Received:, drop dualrelay's Received: header
# (the first header left, with its continuation lines) and the trailing empty line smtp-sink
# adds, and restore CR LF line ends.
lab_dump_message() {
	python3 - "$1" <<'EOF'
import sys
data = open(sys.argv[1], "rb").read()
lines = data.split(b"\n")
if lines and lines[-1] == b"":
    lines.pop()                      # the file's final newline
i = 0
while i < len(lines) and lines[i].startswith(b"X-"):
    i += 1
if not lines[i].startswith(b"Received: from "):
    sys.exit("dump: no smtp-sink Received: header at line %d" % (i + 1))
i += 3                               # smtp-sink's Received: is exactly three lines
if not lines[i].lower().startswith(b"received:"):
    sys.exit("dump: no Received: header of the relay after smtp-sink's")
i += 1
while i < len(lines) and lines[i][:1] in (b" ", b"\t"):
    i += 1
if not lines or lines[-1] != b"":
    sys.exit("dump: no trailing empty line")
lines.pop()
sys.stdout.buffer.write(b"".join(l + b"\r\n" for l in lines[i:]))
EOF
}

# lab_dump_received FILE: dualrelay's Received: header (unfolded) from a sink dump.
lab_dump_received() {
	python3 - "$1" <<'EOF'
import sys
lines = open(sys.argv[1], "rb").read().split(b"\n")
i = 0
while lines[i].startswith(b"X-"):
    i += 1
i += 3
out = lines[i]
i += 1
while lines[i][:1] in (b" ", b"\t"):
    out += b" " + lines[i].strip()
    i += 1
sys.stdout.buffer.write(out + b"\n")
EOF
}

# lab_listening NS ADDR PORT: something listens on ADDR:PORT (TCP) in namespace NS.
lab_listening() {
	local a=$2
	case $a in *:*) a="[$a]" ;; esac
	ip netns exec "$1" ss -Hltn "src $a:$3" 2>/dev/null | grep -q LISTEN
}

# --- dualrelayd -----------------------------------------------------------------------------

# lab_conf_write FILE [EXTRA...]: a configuration for the lab: loopback listeners on 2525,
# the lab DNS server, short retry intervals (1 s, at most 2 s), spool in the lab directory.
# LAB_CONF_LISTEN and LAB_CONF_RELAY_NETWORKS, when set, replace the contents of the listen
# list and of relay_networks.  The daemon runs as root only to set up, then as
# LAB_CONF_USER (default nobody; set it empty to leave user out of the file).  EXTRA lines are
# appended verbatim (libconfig rejects a key set twice, so tests needing a different value
# of a key given here write their own configuration).
lab_conf_write() {
	local f=$1 l listen relaynets user
	shift
	listen=${LAB_CONF_LISTEN:-'{ address = "127.0.0.1"; port = 2525; }, { address = "::1"; port = 2525; }'}
	relaynets=${LAB_CONF_RELAY_NETWORKS:-'"127.0.0.0/8", "::1/128"'}
	user=${LAB_CONF_USER-nobody}
	{
		cat <<EOF
# generated by lab.sh for $LAB_TEST
hostname = "relay.example.net";
spool_dir = "$LAB_DIR/spool";
listen = (
  $listen
);
relay_networks = [ $relaynets ];
max_message_size = 10240000;
max_recipients = 100;
log = { target = "stderr"; level = "debug"; };
dns = { servers = [ "$LAB_DNS_ADDR:53" ]; timeout_ms = 1000; tries = 2; };
queue = { retry_min_s = 1; retry_max_s = 2; max_lifetime_s = 120; };
EOF
		[ -z "$user" ] || echo "user = \"$user\";"
		for l in "$@"; do
			echo "$l"
		done
	} >"$f"
}

# lab_daemon_start CONF: run dualrelayd in RELAY, in the foreground, logging to $LAB_LOG;
# wait until it listens on 127.0.0.1:2525.
lab_daemon_start() {
	local conf=$1
	[ -x "$LAB_DAEMON" ] || lab_fail "$LAB_DAEMON is not built"
	echo "=== $(date '+%T') lab: start dualrelayd -f -c $conf" >>"$LAB_LOG"
	# "ip netns exec" execs the command: $! is dualrelayd's own PID.
	ip netns exec "$LAB_RELAY" "$LAB_DAEMON" -f -c "$conf" >>"$LAB_LOG" 2>&1 &
	LAB_DAEMON_PID=$!
	LAB_PIDS="$LAB_PIDS $LAB_DAEMON_PID"
	wait_for 10 lab_daemon_ready ||
		lab_fail "dualrelayd did not start listening on 127.0.0.1:2525"
}

lab_daemon_ready() {
	kill -0 "$LAB_DAEMON_PID" 2>/dev/null || lab_fail "dualrelayd exited during start"
	lab_listening "$LAB_RELAY" 127.0.0.1 2525
}

lab_daemon_stop() {
	[ -n "$LAB_DAEMON_PID" ] || return 0
	echo "=== $(date '+%T') lab: stop dualrelayd (TERM)" >>"$LAB_LOG"
	kill -TERM "$LAB_DAEMON_PID" 2>/dev/null
	lab_wait_pid "$LAB_DAEMON_PID" 10 || {
		kill -KILL "$LAB_DAEMON_PID" 2>/dev/null
		lab_wait_pid "$LAB_DAEMON_PID" 5
		lab_fail "dualrelayd did not exit within 10 s of SIGTERM"
	}
	lab_forget_pid "$LAB_DAEMON_PID"
	LAB_DAEMON_PID=""
}

lab_daemon_kill9() {
	[ -n "$LAB_DAEMON_PID" ] || return 0
	kill -KILL "$LAB_DAEMON_PID" 2>/dev/null
	lab_wait_pid "$LAB_DAEMON_PID" 5 || lab_fail "dualrelayd survived SIGKILL"
	echo "=== $(date '+%T') lab: dualrelayd killed (KILL)" >>"$LAB_LOG"
	lab_forget_pid "$LAB_DAEMON_PID"
	LAB_DAEMON_PID=""
}

# lab_wait_log REGEX TIMEOUT_S: wait for an extended regular expression in the daemon log.
lab_wait_log() {
	wait_for "$2" grep -Eq -- "$1" "$LAB_LOG"
}

lab_log_has() {
	grep -Eq -- "$1" "$LAB_LOG"
}

# --- clients --------------------------------------------------------------------------------

# lab_send FROM TO[,TO...] DATAFILE [swaks options...]: submit DATAFILE (the message with
# CR LF line ends, exactly as it should arrive, no dot-stuffing, no final ".") to dualrelayd
# on 127.0.0.1:2525 from RELAY.  Sets LAB_QID from the "queued as" reply.  1 if swaks failed.
lab_send() {
	local from=$1 to=$2 data=$3 wire
	shift 3
	wire="$LAB_DIR/wire.$$.$RANDOM"
	lab_wire_data "$data" >"$wire" || lab_fail "cannot prepare $data"
	LAB_QID=""
	lab_relay swaks --server 127.0.0.1:2525 --helo client.example.net \
		--from "$from" --to "$to" --data "@$wire" --no-data-fixup \
		--timeout 20 "$@" >"$LAB_DIR/swaks.out" 2>&1
	local rc=$?
	rm -f "$wire"
	LAB_QID=$(sed -n 's/^<- *250 .*queued as \([^ ]*\).*/\1/p' "$LAB_DIR/swaks.out" | tail -n1)
	[ "$rc" -eq 0 ] && [ -n "$LAB_QID" ]
}

# The DATA section as it goes on the wire: dot-stuffed (RFC 5321 4.5.2), ended by ".".
# swaks --no-data-fixup sends its data as given, so the stuffing is done here.
lab_wire_data() {
	python3 - "$1" <<'EOF'
import sys
data = open(sys.argv[1], "rb").read()
if not data.endswith(b"\r\n"):
    sys.exit("message must end with CR LF")
out = b"".join((b"." + l if l.startswith(b".") else l) + b"\r\n"
               for l in data[:-2].split(b"\r\n"))
sys.stdout.buffer.write(out + b".")   # swaks adds the final CR LF
EOF
}

# --- Postfix as a client (relayhost) --------------------------------------------------------

# lab_postfix_start RELAYHOST: a private Postfix instance in RELAY, configuration, queue and
# data in $LAB_DIR/postfix, no chroot, smtpd on 127.0.0.1:10025 only, relayhost RELAYHOST.
lab_postfix_start() {
	local relayhost=$1 d="$LAB_DIR/postfix" svc
	lab_require postfix postconf
	LAB_POSTFIX_DIR=$d
	mkdir -p "$d/queue" "$d/data"
	chown postfix "$d/data" || lab_fail "chown postfix $d/data"
	cat >"$d/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $d/queue
data_directory = $d/data
command_directory = $(postconf -dh command_directory)
daemon_directory = $(postconf -dh daemon_directory)
shlib_directory = $(postconf -dh shlib_directory)
meta_directory = $(postconf -dh meta_directory)
mail_owner = postfix
setgid_group = postdrop
myhostname = client.example.net
mydomain = example.net
myorigin = \$myhostname
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
relayhost = $relayhost
smtp_tls_security_level = none
smtpd_tls_security_level = none
maillog_file_prefixes = $d
maillog_file = $d/maillog
biff = no
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
EOF
	{
		echo "127.0.0.1:10025 inet n - n - - smtpd"
		echo "postlog unix-dgram n - n - 1 postlogd"
		for svc in "pickup unix n - n 60 1 pickup" \
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
			"anvil unix - - n - 1 anvil" \
			"scache unix - - n - 1 scache"; do
			echo "$svc"
		done
	} >"$d/master.cf"
	lab_relay postfix -c "$d" start >"$d/start.out" 2>&1 ||
		lab_fail "postfix -c $d start failed: $(cat "$d/start.out")"
	wait_for 10 lab_listening "$LAB_RELAY" 127.0.0.1 10025 ||
		lab_fail "private postfix does not listen on 127.0.0.1:10025"
}

lab_postfix_pid() {
	local f="$LAB_POSTFIX_DIR/queue/pid/master.pid"
	[ -f "$f" ] && tr -dc '0-9' <"$f"
}

lab_postfix_stop() {
	local pid
	[ -n "$LAB_POSTFIX_DIR" ] || return 0
	pid=$(lab_postfix_pid)
	lab_relay postfix -c "$LAB_POSTFIX_DIR" stop >/dev/null 2>&1
	if [ -n "$pid" ]; then
		wait_for 10 lab_pid_gone "$pid" || kill -KILL "$pid" 2>/dev/null
	fi
}

# lab_postfix_sendmail FROM TO FILE: submit FILE with the instance's own sendmail(1).
lab_postfix_sendmail() {
	lab_relay sendmail -C "$LAB_POSTFIX_DIR" -i -f "$1" -- "$2" <"$3"
}

# lab_make_message FILE FROM TO SUBJECT: a message that is hard to relay byte-exact: lines
# starting with one or two dots and a line that is only a dot (dot-stuffing both ways,
# RFC 5321 4.5.2), 8-bit bytes that are not UTF-8 next to UTF-8 (8BITMIME), a line of 998
# octets (the longest RFC 5321 4.5.3.1.6 allows), trailing white space, a body line starting
# with "From ", empty lines inside and at the end.  CR LF line ends throughout.
lab_make_message() {
	python3 - "$@" <<'EOF'
import sys
path, sender, rcpt, subject = sys.argv[1:5]
lines = [
    b"From: " + sender.encode(),
    b"To: " + rcpt.encode(),
    b"Subject: " + subject.encode(),
    b"Message-ID: <" + subject.encode().replace(b" ", b".") + b"@client.example.net>",
    b"MIME-Version: 1.0",
    b"Content-Type: text/plain; charset=utf-8",
    b"Content-Transfer-Encoding: 8bit",
    b"",
    b"First line of the body.",
    b".",
    b".leading dot",
    b"..two leading dots",
    b". a dot and a space",
    b"",
    b"UTF-8: gr\xc3\xbc\xc3\x9fe, \xe2\x82\xac, \xf0\x9f\x93\xa8; Latin-1: caf\xe9; raw: \x80\xfe\xff",
    b"From the start of a line (mbox would quote this)",
    b"trailing white space   \t",
    b"X" * 998,
    b"." + b"Y" * 997,
    b"",
    b"Last line before two empty lines.",
    b"",
    b"",
]
open(path, "wb").write(b"".join(l + b"\r\n" for l in lines))
EOF
}

# lab_expect_log REGEX TIMEOUT_S WHAT: wait for REGEX in the daemon log or fail with WHAT.
lab_expect_log() {
	lab_wait_log "$1" "$2" || lab_fail "$3: no log line matching /$1/ within $2 s"
}

# lab_re STRING: STRING with the characters special in an extended regular expression
# escaped, for building log patterns from addresses and queue ids.
lab_re() {
	printf '%s' "$1" | sed 's/[][\.*^$+?(){}|/]/\\&/g'
}

# lab_expect_sent QID RCPT RELAY_HOST RELAY_IP FAMILY TIMEOUT_S: wait for the delivery line.
lab_expect_sent() {
	local re
	re="$(lab_re "$1"): to=<$(lab_re "$2")>, relay=$(lab_re "$3")\[$(lab_re "$4")\]:25, family=$5, delay=[0-9]+(\.[0-9]+)?, dsn=2\.[0-9]+\.[0-9]+, status=sent \("
	lab_expect_log "$re" "$6" "delivery of $1 to <$2> via $3[$4] ($5)"
}

# lab_expect_sink_file NAME: set LAB_DUMP to the only dump of sink NAME; fail unless the
# sink holds exactly one message.  (A variable, not output: lab_fail inside a command
# substitution would end only that subshell.)
lab_expect_sink_file() {
	local n
	n=$(lab_sink_count "$1")
	[ "$n" -eq 1 ] || lab_fail "sink $1 holds $n messages, expected exactly 1"
	LAB_DUMP=$(lab_sink_files "$1")
}

# lab_compare_bytes EXPECTED GOT WHAT: byte comparison, with the first difference shown.
lab_compare_bytes() {
	cmp "$1" "$2" >/dev/null 2>&1 && return 0
	lab_log "$3: content differs: $(cmp "$1" "$2" 2>&1)"
	diff <(od -c "$1") <(od -c "$2") | head -n 20 >&2
	lab_fail "$3: message not byte-exact"
}

# lab_spool_files: the number of regular files under the spool directory.
lab_spool_files() {
	find "$LAB_DIR/spool" -type f 2>/dev/null | wc -l
}
