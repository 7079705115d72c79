#!/bin/bash
# privdrop_user: started as root with user = "nobody", dualrelayd sets up as root, then
# runs as nobody for good: the process's real, effective and saved ids and its groups
# are nobody's, the spool (including a file root left in it) belongs to nobody with mode
# 0700, the control socket too, root's dualrelayctl still works and a message still
# flows end to end.  Without user, started as root, it refuses to run (exit 78, with a
# clear message) and "dualrelayd -n" warns about it; an unknown account is a
# configuration error.
. "$(dirname "$0")/lab.sh"

lab_setup
lab_dns_start <<'ZONE'
one.example. MX 10 mx.one.example.
mx.one.example. A 198.51.100.11
ZONE
lab_sink_start one 198.51.100.11

nobody_uid=$(id -u nobody) || lab_fail "no nobody account"
nobody_gid=$(id -g nobody)

# A spool root already used: a file of root's in it must become nobody's.
mkdir -m 0755 "$LAB_DIR/spool"
echo stale >"$LAB_DIR/spool/leftover"

# --- user unset: refused ----------------------------------------------------------------------
LAB_CONF_USER="" lab_conf_write "$LAB_DIR/nouser.conf"
out=$(lab_relay "$LAB_DAEMON" -n -c "$LAB_DIR/nouser.conf" 2>&1) ||
	lab_fail "dualrelayd -n failed on a file without user: $out"
echo "$out" | grep -q "warning: .*no user set.*refuse" ||
	lab_fail "dualrelayd -n did not warn about the missing user: $out"
lab_relay timeout 20 "$LAB_DAEMON" -f -c "$LAB_DIR/nouser.conf" >"$LAB_DIR/nouser.out" 2>&1
rc=$?
[ "$rc" -eq 78 ] || lab_fail "root without user: exit $rc, expected 78: $(cat "$LAB_DIR/nouser.out")"
grep -q 'refusing to run as root: set user' "$LAB_DIR/nouser.out" ||
	lab_fail "root without user: no clear message: $(cat "$LAB_DIR/nouser.out")"
lab_listening "$LAB_RELAY" 127.0.0.1 2525 && lab_fail "something listens after the refusal"
lab_log "without user: $(head -n1 "$LAB_DIR/nouser.out")"

# --- an account that does not exist: a configuration error ------------------------------------
LAB_CONF_USER="dualrelay-no-such-user" lab_conf_write "$LAB_DIR/unknown.conf"
out=$(lab_relay "$LAB_DAEMON" -n -c "$LAB_DIR/unknown.conf" 2>&1) &&
	lab_fail "dualrelayd -n accepted an unknown user: $out"
echo "$out" | grep -q 'unknown.conf:[0-9]*: user: no account "dualrelay-no-such-user"' ||
	lab_fail "unknown user not reported clearly: $out"

# --- user = nobody ----------------------------------------------------------------------------
lab_conf_write "$LAB_DIR/dualrelay.conf"
lab_daemon_start "$LAB_DIR/dualrelay.conf"
lab_expect_log "running as nobody \(uid $nobody_uid, gid $nobody_gid\)" 5 "privilege drop"

[ "$(ps -o user= -p "$LAB_DAEMON_PID" | tr -d ' ')" = nobody ] ||
	lab_fail "dualrelayd runs as '$(ps -o user= -p "$LAB_DAEMON_PID")', expected nobody"
status=/proc/$LAB_DAEMON_PID/status
read -r _ ruid euid suid fsuid < <(grep '^Uid:' "$status")
read -r _ rgid egid sgid fsgid < <(grep '^Gid:' "$status")
for v in "$ruid" "$euid" "$suid" "$fsuid"; do
	[ "$v" = "$nobody_uid" ] || lab_fail "uids are not all nobody's: $(grep '^Uid:' "$status")"
done
for v in "$rgid" "$egid" "$sgid" "$fsgid"; do
	[ "$v" = "$nobody_gid" ] || lab_fail "gids are not all nogroup: $(grep '^Gid:' "$status")"
done
groups=$(sed -n 's/^Groups:[[:space:]]*//p' "$status" | tr -d ' ')
[ "$groups" = "$nobody_gid" ] || lab_fail "supplementary groups: '$groups', expected $nobody_gid"
grep -q '^CapEff:[[:space:]]*0*$' "$status" || lab_fail "capabilities left: $(grep '^Cap' "$status")"
lab_log "process: $(grep '^Uid:' "$status" | tr -s '\t ' ' '), groups $groups"

[ "$(stat -c '%U %a' "$LAB_DIR/spool")" = "nobody 700" ] ||
	lab_fail "spool is $(stat -c '%U %a' "$LAB_DIR/spool"), expected nobody 700"
bad=$(find "$LAB_DIR/spool" ! -user nobody -printf '%p %u\n')
[ -z "$bad" ] || lab_fail "not nobody's in the spool: $bad"
[ "$(stat -c '%U %a' "$LAB_DIR/spool/control")" = "nobody 600" ] ||
	lab_fail "control socket is $(stat -c '%U %a' "$LAB_DIR/spool/control"), expected nobody 600"

out=$(lab_relay "$DR_BUILDDIR/src/dualrelayctl" -c "$LAB_DIR/dualrelay.conf" stats 2>&1) ||
	lab_fail "dualrelayctl (root) against the dropped daemon failed: $out"

from=alice@client.example.net
rcpt=bob@one.example
lab_make_message "$LAB_DIR/msg" "$from" "$rcpt" "after the drop"
lab_send "$from" "$rcpt" "$LAB_DIR/msg" || lab_fail "message not accepted"
lab_expect_sent "$LAB_QID" "$rcpt" mx.one.example 198.51.100.11 ipv4 20
lab_sink_wait one 1 10 || lab_fail "delivery logged but the sink has no message"

# A reload reads the file as nobody: the lab's file is world-readable, so it works.
kill -HUP "$LAB_DAEMON_PID"
lab_expect_log "reload: configuration .* loaded" 10 "reload as nobody"
lab_log_has "a reload will fail" && lab_fail "warned that a reload would fail"
lab_pass
