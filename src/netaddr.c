/*
 * netaddr: IPv4/IPv6 socket addresses as plain values (see netaddr.h). Owns the text
 * forms we accept in the configuration and print in logs ("192.0.2.1:25",
 * "[2001:db8::1]:25"), CIDR prefixes for relay_networks, and the classification of
 * addresses that a relay must never dial (RFC 6890 special-purpose registries).
 * Nothing here allocates or keeps state; netaddr_is_local() asks the kernel on every
 * call (getifaddrs) and is meant for rare questions (configuration check, route
 * explanations). The delivery path keeps a snapshot refreshed every second instead
 * (localaddr.c), which owns the caching this module does not.
 */
#include "config.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "netaddr.h"

/* The ::ffff:0:0/96 prefix of IPv4-mapped IPv6 addresses (RFC 4291 §2.5.5.2). */
static const uint8_t v4mapped_prefix[12] = {
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff
};

static const struct sockaddr_in *
as_sin(const struct netaddr *a)
{
	return (const struct sockaddr_in *)(const void *)&a->ss;
}

static const struct sockaddr_in6 *
as_sin6(const struct netaddr *a)
{
	return (const struct sockaddr_in6 *)(const void *)&a->ss;
}

int
netaddr_family(const struct netaddr *a)
{
	return a->ss.ss_family;
}

uint16_t
netaddr_port(const struct netaddr *a)
{
	switch (a->ss.ss_family) {
	case AF_INET:
		return ntohs(as_sin(a)->sin_port);
	case AF_INET6:
		return ntohs(as_sin6(a)->sin6_port);
	default:
		return 0;
	}
}

void
netaddr_set_port(struct netaddr *a, uint16_t port)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)(void *)&a->ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)(void *)&a->ss;

	if (a->ss.ss_family == AF_INET)
		sin->sin_port = htons(port);
	else if (a->ss.ss_family == AF_INET6)
		sin6->sin6_port = htons(port);
}

void
netaddr_from_bytes(struct netaddr *a, int family, const void *bytes, uint16_t port)
{
	memset(a, 0, sizeof(*a));
	if (family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)(void *)&a->ss;
		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		memcpy(&sin->sin_addr, bytes, 4);
		a->len = sizeof(*sin);
	} else if (family == AF_INET6) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)(void *)&a->ss;
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		memcpy(&sin6->sin6_addr, bytes, 16);
		a->len = sizeof(*sin6);
	}
}

void
netaddr_from_sockaddr(struct netaddr *a, const struct sockaddr *sa, socklen_t len)
{
	memset(a, 0, sizeof(*a));
	if (len > sizeof(a->ss))
		len = sizeof(a->ss);
	memcpy(&a->ss, sa, len);
	if (sa->sa_family == AF_INET)
		a->len = sizeof(struct sockaddr_in);
	else if (sa->sa_family == AF_INET6)
		a->len = sizeof(struct sockaddr_in6);
	else
		a->len = len;
}

int
netaddr_from_ip_sockaddr(struct netaddr *a, const struct sockaddr *sa)
{
	if (sa == NULL)
		return -1;
	if (sa->sa_family == AF_INET)
		netaddr_from_sockaddr(a, sa, sizeof(struct sockaddr_in));
	else if (sa->sa_family == AF_INET6)
		netaddr_from_sockaddr(a, sa, sizeof(struct sockaddr_in6));
	else
		return -1;
	return 0;
}

/* Points at the 4 or 16 address bytes; *n gets their count (0 for other families). */
static const uint8_t *
addr_bytes(const struct netaddr *a, size_t *n)
{
	switch (a->ss.ss_family) {
	case AF_INET:
		*n = 4;
		return (const uint8_t *)&as_sin(a)->sin_addr;
	case AF_INET6:
		*n = 16;
		return (const uint8_t *)&as_sin6(a)->sin6_addr;
	default:
		*n = 0;
		return NULL;
	}
}

int
netaddr_parse(struct netaddr *a, const char *text, uint16_t port)
{
	uint8_t buf[16];

	if (inet_pton(AF_INET, text, buf) == 1) {
		netaddr_from_bytes(a, AF_INET, buf, port);
		return 0;
	}
	if (inet_pton(AF_INET6, text, buf) == 1) {
		netaddr_from_bytes(a, AF_INET6, buf, port);
		return 0;
	}
	return -1;
}

/* Strict decimal port 1..65535: no sign, no spaces, no leading junk. */
static int
parse_port(const char *s, uint16_t *port)
{
	unsigned long v = 0;

	if (*s == '\0' || strlen(s) > 5)
		return -1;
	for (; *s != '\0'; s++) {
		if (*s < '0' || *s > '9')
			return -1;
		v = v * 10 + (unsigned long)(*s - '0');
	}
	if (v == 0 || v > 65535)
		return -1;
	*port = (uint16_t)v;
	return 0;
}

int
netaddr_parse_hostport(struct netaddr *a, const char *text, uint16_t default_port)
{
	char host[NETADDR_STRLEN];
	const char *colon, *end;
	uint16_t port = default_port;
	size_t n;

	if (text[0] == '[') {
		/* "[V6ADDR]" or "[V6ADDR]:PORT"; brackets are only for IPv6 (RFC 3986 §3.2.2). */
		if ((end = strchr(text, ']')) == NULL)
			return -1;
		n = (size_t)(end - text - 1);
		if (n == 0 || n >= sizeof(host))
			return -1;
		memcpy(host, text + 1, n);
		host[n] = '\0';
		if (end[1] == ':') {
			if (parse_port(end + 2, &port) == -1)
				return -1;
		} else if (end[1] != '\0')
			return -1;
		if (strchr(host, ':') == NULL)
			return -1;
		return netaddr_parse(a, host, port);
	}

	colon = strchr(text, ':');
	if (colon != NULL && strchr(colon + 1, ':') != NULL)
		return netaddr_parse(a, text, port); /* bare IPv6, taken whole */
	if (colon == NULL)
		return netaddr_parse(a, text, port);
	n = (size_t)(colon - text);
	if (n == 0 || n >= sizeof(host))
		return -1;
	memcpy(host, text, n);
	host[n] = '\0';
	if (parse_port(colon + 1, &port) == -1)
		return -1;
	/* Only IPv4 can come here: a single colon cannot be an IPv6 address. */
	if (netaddr_parse(a, host, port) == -1 || netaddr_family(a) != AF_INET)
		return -1;
	return 0;
}

char *
netaddr_ntop(const struct netaddr *a, char *buf, size_t size)
{
	size_t n;
	const uint8_t *b = addr_bytes(a, &n);

	if (size == 0)
		return buf;
	if (b == NULL || inet_ntop(a->ss.ss_family, b, buf, (socklen_t)size) == NULL)
		snprintf(buf, size, "?");
	return buf;
}

char *
netaddr_format_hostport(const struct netaddr *a, char *buf, size_t size)
{
	char host[NETADDR_STRLEN];

	netaddr_ntop(a, host, sizeof(host));
	if (netaddr_family(a) == AF_INET6)
		snprintf(buf, size, "[%s]:%u", host, netaddr_port(a));
	else
		snprintf(buf, size, "%s:%u", host, netaddr_port(a));
	return buf;
}

const char *
netaddr_family_name(int family)
{
	switch (family) {
	case AF_INET:
		return "ipv4";
	case AF_INET6:
		return "ipv6";
	default:
		return "unknown";
	}
}

static bool
is_v4mapped(const struct netaddr *a)
{
	return a->ss.ss_family == AF_INET6 &&
	    memcmp(&as_sin6(a)->sin6_addr, v4mapped_prefix, sizeof(v4mapped_prefix)) == 0;
}

bool
netaddr_equal(const struct netaddr *a, const struct netaddr *b)
{
	struct netaddr ua = *a, ub = *b;
	const uint8_t *ba, *bb;
	size_t na, nb;

	/* A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d: same host. */
	netaddr_unmap_v4(&ua);
	netaddr_unmap_v4(&ub);
	if (ua.ss.ss_family != ub.ss.ss_family)
		return false;
	ba = addr_bytes(&ua, &na);
	bb = addr_bytes(&ub, &nb);
	return ba != NULL && na == nb && memcmp(ba, bb, na) == 0;
}

void
netaddr_unmap_v4(struct netaddr *a)
{
	uint8_t v4[4];
	uint16_t port;

	if (!is_v4mapped(a))
		return;
	memcpy(v4, (const uint8_t *)&as_sin6(a)->sin6_addr + 12, 4);
	port = netaddr_port(a);
	netaddr_from_bytes(a, AF_INET, v4, port);
}

/* Strict decimal prefix length up to max. */
static int
parse_bits(const char *s, unsigned max, unsigned *bits)
{
	unsigned v = 0;

	if (*s == '\0' || strlen(s) > 3)
		return -1;
	for (; *s != '\0'; s++) {
		if (*s < '0' || *s > '9')
			return -1;
		v = v * 10 + (unsigned)(*s - '0');
	}
	if (v > max)
		return -1;
	*bits = v;
	return 0;
}

/* Zeroes every bit of addr past the first bits. */
static void
mask_bits(uint8_t *addr, size_t len, unsigned bits)
{
	for (size_t i = 0; i < len; i++) {
		if (bits >= 8) {
			bits -= 8;
			continue;
		}
		addr[i] &= (uint8_t)(0xff << (8 - bits));
		bits = 0;
	}
}

int
netaddr_prefix_parse(struct netaddr_prefix *p, const char *text)
{
	char host[NETADDR_STRLEN];
	const char *slash = strchr(text, '/');
	struct netaddr a;
	const uint8_t *b;
	size_t n, hlen;
	unsigned max;

	hlen = slash != NULL ? (size_t)(slash - text) : strlen(text);
	if (hlen == 0 || hlen >= sizeof(host))
		return -1;
	memcpy(host, text, hlen);
	host[hlen] = '\0';
	if (netaddr_parse(&a, host, 0) == -1)
		return -1;
	b = addr_bytes(&a, &n);
	max = (unsigned)n * 8;
	memset(p, 0, sizeof(*p));
	p->family = netaddr_family(&a);
	memcpy(p->addr, b, n);
	p->bits = max;
	if (slash != NULL && parse_bits(slash + 1, max, &p->bits) == -1)
		return -1;
	/* "192.0.2.1/24" means the network, as Postfix's mynetworks reads it. */
	mask_bits(p->addr, n, p->bits);
	return 0;
}

bool
netaddr_prefix_match(const struct netaddr_prefix *p, const struct netaddr *a)
{
	struct netaddr u = *a;
	const uint8_t *b;
	size_t n;
	unsigned bits = p->bits, full, rest;

	if (p->family == AF_INET)
		netaddr_unmap_v4(&u);
	if (netaddr_family(&u) != p->family)
		return false;
	b = addr_bytes(&u, &n);
	if (bits > n * 8)
		return false;
	full = bits / 8;
	rest = bits % 8;
	if (memcmp(b, p->addr, full) != 0)
		return false;
	if (rest == 0)
		return true;
	uint8_t mask = (uint8_t)(0xff << (8 - rest));
	return (b[full] & mask) == (p->addr[full] & mask);
}

static enum netaddr_class
classify_v4(const uint8_t *b)
{
	if (b[0] == 0)
		return NETADDR_UNSPECIFIED;           /* 0.0.0.0/8, "this network" */
	if (b[0] == 127)
		return NETADDR_LOOPBACK;
	if (b[0] == 169 && b[1] == 254)
		return NETADDR_LINK_LOCAL;            /* RFC 3927 */
	if ((b[0] & 0xf0) == 224)
		return NETADDR_MULTICAST;             /* 224.0.0.0/4 */
	if (b[0] == 255 && b[1] == 255 && b[2] == 255 && b[3] == 255)
		return NETADDR_BROADCAST;             /* RFC 919 limited broadcast */
	return NETADDR_OK;
}

static enum netaddr_class
classify_v6(const uint8_t *b)
{
	static const uint8_t zero[15];

	if (memcmp(b, zero, 15) == 0 && b[15] == 0)
		return NETADDR_UNSPECIFIED;           /* :: */
	if (memcmp(b, zero, 15) == 0 && b[15] == 1)
		return NETADDR_LOOPBACK;              /* ::1 */
	if (b[0] == 0xfe && (b[1] & 0xc0) == 0x80)
		return NETADDR_LINK_LOCAL;            /* fe80::/10 */
	if (b[0] == 0xff)
		return NETADDR_MULTICAST;             /* ff00::/8 */
	if (memcmp(b, v4mapped_prefix, sizeof(v4mapped_prefix)) == 0)
		return NETADDR_V4MAPPED;              /* never a real AAAA (RFC 4291 §2.5.5.2) */
	return NETADDR_OK;
}

enum netaddr_class
netaddr_classify(const struct netaddr *a)
{
	size_t n;
	const uint8_t *b = addr_bytes(a, &n);

	if (b == NULL)
		return NETADDR_UNSPECIFIED;
	return n == 4 ? classify_v4(b) : classify_v6(b);
}

const char *
netaddr_class_name(enum netaddr_class c)
{
	switch (c) {
	case NETADDR_OK:
		return "usable address";
	case NETADDR_UNSPECIFIED:
		return "unspecified address";
	case NETADDR_LOOPBACK:
		return "loopback address";
	case NETADDR_LINK_LOCAL:
		return "link-local address";
	case NETADDR_MULTICAST:
		return "multicast address";
	case NETADDR_V4MAPPED:
		return "IPv4-mapped IPv6 address";
	case NETADDR_BROADCAST:
		return "broadcast address";
	}
	return "unknown address class";
}

bool
netaddr_is_local(const struct netaddr *a)
{
	struct ifaddrs *ifs, *ifa;
	struct netaddr cur;
	bool found = false;

	if (getifaddrs(&ifs) == -1)
		return false;
	for (ifa = ifs; ifa != NULL && !found; ifa = ifa->ifa_next)
		found = netaddr_from_ip_sockaddr(&cur, ifa->ifa_addr) == 0 &&
		    netaddr_equal(&cur, a);
	freeifaddrs(ifs);
	return found;
}
