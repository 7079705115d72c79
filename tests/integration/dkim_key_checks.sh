#!/bin/bash
# dkim_key_checks: dualrelayd -n refuses a DKIM key file that others can read (0644, 0640),
# a key of the wrong type for its algorithm and an RSA key under 2048 bits, and accepts a
# good configuration; -K compares each selector's key with the TXT record published in the
# lab DNS: a match, another key, and a missing record.
. "$(dirname "$0")/lab.sh"

lab_setup
lab_require openssl

keys="$LAB_DIR/keys"
mkdir -m 0700 "$keys"
openssl genpkey -algorithm ed25519 -out "$keys/good.pem" 2>/dev/null &&
	openssl genpkey -algorithm ed25519 -out "$keys/other.pem" 2>/dev/null &&
	openssl genpkey -algorithm rsa -pkeyopt rsa_keygen_bits:1024 -out "$keys/small.pem" \
		2>/dev/null || lab_fail "openssl genpkey"
chmod 600 "$keys"/*.pem
cp "$keys/good.pem" "$keys/world.pem" && chmod 0644 "$keys/world.pem"
cp "$keys/good.pem" "$keys/group.pem" && chmod 0640 "$keys/group.pem"

# conf NAME ENTRIES: a lab configuration with these dkim entries.
conf() {
	lab_conf_write "$LAB_DIR/$1.conf" "dkim = ( $2 );"
}
entry() {
	echo "{ domain = \"$1\"; selector = \"$2\"; key_file = \"$keys/$3\"; algorithm = \"$4\"; }"
}

# check_n NAME WANT_RC PATTERN: dualrelayd -n on NAME.conf exits WANT_RC, output matches.
check_n() {
	lab_relay "$LAB_DAEMON" -n -c "$LAB_DIR/$1.conf" >"$LAB_DIR/$1.out" 2>&1
	local rc=$?
	[ "$rc" -eq "$2" ] || lab_fail "-n $1: exit $rc, expected $2: $(cat "$LAB_DIR/$1.out")"
	grep -Eq -- "$3" "$LAB_DIR/$1.out" || lab_fail "-n $1: no /$3/ in: $(cat "$LAB_DIR/$1.out")"
}

lab_dns_start <<'ZONE'
ok.example. MX 10 mx.ok.example.
ZONE

conf good "$(entry ok.example s1 good.pem ed25519-sha256)"
check_n good 0 "configuration OK"
conf world "$(entry ok.example s1 world.pem ed25519-sha256)"
check_n world 1 "key_file .*world\.pem is accessible by everyone \(mode 0644\).*chmod 600"
conf group "$(entry ok.example s1 group.pem ed25519-sha256)"
check_n group 1 "key_file .*group\.pem is accessible by its group \(mode 0640\)"
conf type "$(entry ok.example s1 good.pem rsa-sha256)"
check_n type 1 "holds an ed25519 key, not the RSA key that algorithm rsa-sha256 needs"
conf small "$(entry ok.example s1 small.pem rsa-sha256)"
check_n small 1 "RSA key of 1024 bits; rsa-sha256 needs 2048 bits or more"
conf alg "$(entry ok.example s1 good.pem ed448)"
check_n alg 1 "dkim\.algorithm: \"ed448\" is not"

# -k prints the record; publish it for s1, another key's for s2, nothing for s3.
conf three "$(entry ok.example s1 good.pem ed25519-sha256), $(entry ok.example s2 good.pem ed25519-sha256), $(entry ok.example s3 good.pem ed25519-sha256)"
conf other "$(entry ok.example s2 other.pem ed25519-sha256)"
good=$("$LAB_DAEMON" -k -c "$LAB_DIR/good.conf" | sed -n 's/^s1\._domainkey\.ok\.example\. IN TXT "\(.*\)"$/\1/p')
other=$("$LAB_DAEMON" -k -c "$LAB_DIR/other.conf" | sed -n 's/^s2\._domainkey\.ok\.example\. IN TXT "\(.*\)"$/\1/p')
case $good in "v=DKIM1; k=ed25519; p="?*) ;; *) lab_fail "-k printed '$good'" ;; esac
[ -n "$other" ] && [ "$other" != "$good" ] || lab_fail "-k for the other key printed '$other'"
dns_restart() {
	lab_stop_pid "$LAB_UNBOUND_PID"
	lab_forget_pid "$LAB_UNBOUND_PID"
	lab_dns_start
}
# unbound local-data: an unquoted TXT string, ';' escaped (the key fits in 255 bytes).
{
	echo "ok.example. MX 10 mx.ok.example."
	echo "s1._domainkey.ok.example. TXT $good" | sed 's/; /\\;/g'
	echo "s2._domainkey.ok.example. TXT $other" | sed 's/; /\\;/g'
} >"$LAB_DIR/zone"
dns_restart <"$LAB_DIR/zone"

lab_relay "$LAB_DAEMON" -K -c "$LAB_DIR/good.conf" >"$LAB_DIR/K.good" 2>&1 ||
	lab_fail "-K with the published key: $(cat "$LAB_DIR/K.good")"
grep -q "^; s1\._domainkey\.ok\.example: the published record matches the key" "$LAB_DIR/K.good" ||
	lab_fail "-K: $(cat "$LAB_DIR/K.good")"
if lab_relay "$LAB_DAEMON" -K -c "$LAB_DIR/three.conf" >"$LAB_DIR/K.three" 2>&1; then
	lab_fail "-K succeeded with a wrong and a missing record: $(cat "$LAB_DIR/K.three")"
fi
grep -q "^; s1\._domainkey\.ok\.example: the published record matches" "$LAB_DIR/K.three" &&
	grep -q "^; s2\._domainkey\.ok\.example: NOT OK: p= is another key" "$LAB_DIR/K.three" &&
	grep -q "^; s3\._domainkey\.ok\.example: NOT OK" "$LAB_DIR/K.three" ||
	lab_fail "-K output: $(cat "$LAB_DIR/K.three")"
lab_log "$(grep NOT "$LAB_DIR/K.three" | tr '\n' ' ')"
lab_pass
