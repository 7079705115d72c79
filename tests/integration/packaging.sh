#!/bin/bash
# packaging: the man pages are lint-clean (mandoc -T lint when mandoc is installed, and
# groff with every warning enabled), the systemd unit generated from
# contrib/dualrelay.service.in passes "systemd-analyze verify" (with the built daemon in
# its Exec lines and the man pages it documents on MANPATH), and the sysusers.d and
# tmpfiles.d snippets apply to an empty root. No lab, no root needed.
: "${DR_BUILDDIR:=$(cd "$(dirname "$0")/../.." && pwd)}"
: "${DR_SRCDIR:=$(cd "$(dirname "$0")/../.." && pwd)}"
fail() { echo "packaging: FAIL: $*" >&2; exit 1; }
command -v groff >/dev/null || { echo "packaging: SKIP: no groff"; exit 77; }
for page in "$DR_SRCDIR"/doc/*.[158]; do
	out=$(groff -man -ww -z "$page" 2>&1)
	[ -z "$out" ] || fail "groff: $page: $out"
	if command -v mandoc >/dev/null; then
		# Whether a page named in .Xr is installed here says nothing about ours.
		out=$(mandoc -T lint "$page" 2>&1 |
			grep -v -e 'referenced manual not found' -e 'mandoc.db lacks')
		[ -z "$out" ] || fail "mandoc -T lint: $out"
	fi
done
command -v systemd-analyze >/dev/null || { echo "packaging: SKIP: no systemd-analyze"; exit 77; }
tmp=$(mktemp -d) || fail "mktemp"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/man/man1" "$tmp/man/man5" "$tmp/man/man8" "$tmp/root/etc" "$tmp/root/var/spool"
cp "$DR_SRCDIR"/doc/*.1 "$tmp/man/man1/"
cp "$DR_SRCDIR"/doc/*.5 "$tmp/man/man5/"
cp "$DR_SRCDIR"/doc/*.8 "$tmp/man/man8/"
for f in service sysusers tmpfiles; do
	sed -e "s|@sbindir@|$DR_BUILDDIR/src|g" -e "s|@sysconfdir@|$DR_SRCDIR/etc|g" \
		-e "s|@localstatedir@|/var|g" "$DR_SRCDIR/contrib/dualrelay.$f.in" >"$tmp/dualrelay.$f"
	! grep -n '@[a-z]*@' "$tmp/dualrelay.$f" || fail "dualrelay.$f.in: unknown placeholder"
done
out=$(MANPATH="$tmp/man" systemd-analyze verify "$tmp/dualrelay.service" 2>&1) ||
	fail "systemd-analyze verify: $out"
[ -z "$out" ] || fail "systemd-analyze verify warns: $out"
# The account and the spool, as the unit expects them (sysusers before tmpfiles).
touch "$tmp/root/etc/passwd" "$tmp/root/etc/group"
if command -v systemd-sysusers >/dev/null && command -v systemd-tmpfiles >/dev/null; then
	out=$(systemd-sysusers --root="$tmp/root" "$tmp/dualrelay.sysusers" 2>&1) ||
		fail "systemd-sysusers: $out"
	grep -q '^dualrelay:x:[0-9]*:[0-9]*:[^:]*:/var/spool/dualrelay:' "$tmp/root/etc/passwd" ||
		fail "sysusers: no dualrelay account: $(cat "$tmp/root/etc/passwd")"
	out=$(systemd-tmpfiles --root="$tmp/root" --create "$tmp/dualrelay.tmpfiles" 2>&1) ||
		fail "systemd-tmpfiles: $out"
	[ "$(stat -c %a "$tmp/root/var/spool/dualrelay")" = 700 ] ||
		fail "tmpfiles: the spool is not mode 0700"
	uid=$(sed -n 's/^dualrelay:x:\([0-9]*\):.*/\1/p' "$tmp/root/etc/passwd")
	[ "$(stat -c %u "$tmp/root/var/spool/dualrelay")" = "$uid" ] ||
		fail "tmpfiles: the spool is not owned by dualrelay"
fi
echo "packaging: PASS"
