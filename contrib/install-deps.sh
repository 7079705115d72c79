#!/bin/sh
# install-deps.sh: install everything needed to build dualrelay and run its whole test suite
# on a fresh Debian 12 machine, with apt-get.  Run as root.  Safe to run again: packages that
# are already installed are left alone, and apt-get update runs at most once, only when
# something is missing.
#
# Build:  a C toolchain, autotools, pkg-config and the libraries (libevent, c-ares, OpenSSL,
#         libconfig) plus Check for the unit tests.
# Tests:  the integration lab (tests/integration) uses real peers: unbound as the DNS server,
#         Postfix (smtp-sink as the receiving MX, a private Postfix instance as a client),
#         swaks as an SMTP client, nftables for network faults, iproute2 for the namespaces,
#         python3 for small probes, procps for pgrep/pkill-free process checks.
set -eu

BUILD_PKGS="build-essential autoconf automake libtool pkg-config \
libevent-dev libc-ares-dev libssl-dev libconfig-dev check"
# python3-prometheus-client: its text-format parser checks /metrics (tests/integration/metrics.sh).
TEST_PKGS="unbound postfix swaks nftables iproute2 python3 procps util-linux groff-base systemd \
python3-prometheus-client"

if [ "$(id -u)" -ne 0 ]; then
	echo "install-deps.sh: must run as root (apt-get install)" >&2
	exit 1
fi

missing=""
for p in $BUILD_PKGS $TEST_PKGS; do
	st=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
	if [ "$st" != "installed" ]; then
		missing="$missing $p"
	fi
done

if [ -z "$missing" ]; then
	echo "install-deps.sh: all packages already installed"
	exit 0
fi

echo "install-deps.sh: installing:$missing"
export DEBIAN_FRONTEND=noninteractive

# Postfix must not set up (or start) a system mail server: the tests run private instances.
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections

apt-get update
# shellcheck disable=SC2086  # word splitting of the package list is intended
apt-get install -y --no-install-recommends $missing

# Debian starts unbound as a system service on install; the tests run their own instances
# inside network namespaces and never need the system one.  Leave it as the admin set it up.
exit 0
