#!/bin/sh
# install-deps.sh: install everything needed to build dualrelay and run its whole test suite
# on a fresh Debian 12 machine, with apt-get.  Run as root.  Safe to run again: packages that
# are already installed are left alone, and apt-get update runs at most once, only when
# something is missing.
#
# Build:  a C toolchain, autotools, pkg-config and the libraries (libevent, c-ares, OpenSSL,
#         libconfig, libxcrypt) plus Check for the unit tests.
# Tests:  the integration lab (tests/integration) uses real peers: unbound as the DNS server,
#         Postfix (smtp-sink as the receiving MX, a private Postfix instance as a client),
#         swaks as an SMTP client, nftables for network faults, iproute2 for the namespaces,
#         python3 for small probes, procps for pgrep/pkill-free process checks,
#         python3-prometheus-client for its text-format parser (tests/integration/metrics.sh
#         checks /metrics with it).
# Fuzz:   clang and its runtimes (libFuzzer, ASan, UBSan) for ./configure CC=clang
#         --enable-fuzzing and "make fuzz" (tests/fuzz).
set -eu

BUILD_PKGS="build-essential autoconf automake libtool pkg-config \
libevent-dev libc-ares-dev libssl-dev libconfig-dev libcrypt-dev check"
TEST_PKGS="unbound postfix swaks nftables iproute2 python3 procps util-linux groff-base systemd \
python3-prometheus-client"
# tls_*.sh: openssl (the lab's test CA and certificates), sasl2-bin and libsasl2-modules
# (a Cyrus SASL sasldb for the Postfix smarthost that requires AUTH).
TEST_PKGS="$TEST_PKGS openssl sasl2-bin libsasl2-modules"
# inbound_*.sh: whois for mkpasswd (yescrypt hashes for the users_file; openssl passwd
# makes only sha512-crypt).
TEST_PKGS="$TEST_PKGS whois"
# dkim_*.sh: python3-dkim (dkimpy, the independent DKIM verifier) and python3-dnspython
# (its resolver: it reads the keys from the lab DNS); openssl makes the keys.
TEST_PKGS="$TEST_PKGS python3-dkim python3-dnspython"
# swaks over IPv6 needs IO::Socket::INET6, STARTTLS needs IO::Socket::SSL and Net::SSLeay,
# AUTH needs Authen::SASL: Debian's swaks only recommends them.
TEST_PKGS="$TEST_PKGS libio-socket-inet6-perl libio-socket-ssl-perl libnet-ssleay-perl \
libauthen-sasl-perl"
# proxy_haproxy.sh: haproxy, a real PROXY protocol v1/v2 sender in front of dualrelayd
# (run in the foreground inside the lab; its system service is never needed).
TEST_PKGS="$TEST_PKGS haproxy"
FUZZ_PKGS="clang libclang-rt-14-dev"

if [ "$(id -u)" -ne 0 ]; then
	echo "install-deps.sh: must run as root (apt-get install)" >&2
	exit 1
fi

missing=""
for p in $BUILD_PKGS $TEST_PKGS $FUZZ_PKGS; do
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
