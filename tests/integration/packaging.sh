#!/bin/bash
# packaging: the man pages are lint-clean (groff warnings are errors) and the generated
# systemd unit passes "systemd-analyze verify" (with the built daemon in its Exec lines and
# the man pages it documents on MANPATH). No lab needed.
: "${DR_BUILDDIR:=$(cd "$(dirname "$0")/../.." && pwd)}"
: "${DR_SRCDIR:=$(cd "$(dirname "$0")/../.." && pwd)}"
fail() { echo "packaging: FAIL: $*" >&2; exit 1; }
command -v groff >/dev/null || { echo "packaging: SKIP: no groff"; exit 77; }
for page in "$DR_SRCDIR"/doc/*.[158]; do
	out=$(groff -man -ww -z "$page" 2>&1)
	[ -z "$out" ] || fail "$page: $out"
done
command -v systemd-analyze >/dev/null || { echo "packaging: SKIP: no systemd-analyze"; exit 77; }
tmp=$(mktemp -d) || fail "mktemp"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/man/man1" "$tmp/man/man5" "$tmp/man/man8"
cp "$DR_SRCDIR"/doc/*.1 "$tmp/man/man1/"
cp "$DR_SRCDIR"/doc/*.5 "$tmp/man/man5/"
cp "$DR_SRCDIR"/doc/*.8 "$tmp/man/man8/"
sed -e "s|@sbindir@|$DR_BUILDDIR/src|g" -e "s|@sysconfdir@|$DR_SRCDIR/etc|g" \
	"$DR_SRCDIR/contrib/dualrelay.service.in" >"$tmp/dualrelay.service"
out=$(MANPATH="$tmp/man" systemd-analyze verify "$tmp/dualrelay.service" 2>&1) ||
	fail "systemd-analyze verify: $out"
[ -z "$out" ] || fail "systemd-analyze verify warns: $out"
echo "packaging: PASS"
