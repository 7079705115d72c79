/*
 * netaddr: socket addresses as values. Parsing and formatting of IPv4/IPv6 addresses
 * with optional ports, CIDR prefixes and matching (relay_networks), and classification
 * of destination addresses that must never be dialled (link-local, loopback, ...).
 * Pure: no I/O except netaddr_is_local(), which asks the kernel for this host's
 * addresses (getifaddrs) on every call; delivery asks a short-lived snapshot of them
 * instead (localaddr.h).
 */
#ifndef DR_NETADDR_H
#define DR_NETADDR_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <netinet/in.h>

/* Longest text form: "[" IPv6 "]:" port, with a NUL. */
#define NETADDR_STRLEN 64

struct netaddr {
	struct sockaddr_storage ss; /* AF_INET or AF_INET6, port in network order */
	socklen_t len;              /* sizeof(sockaddr_in) or sizeof(sockaddr_in6) */
};

struct netaddr_prefix {
	int family;             /* AF_INET or AF_INET6 */
	uint8_t addr[16];       /* network address, host bits zeroed */
	unsigned bits;          /* prefix length */
};

/* Why an address must not be used as a destination (RFC 8305 §... / our policy). */
enum netaddr_class {
	NETADDR_OK = 0,
	NETADDR_UNSPECIFIED,    /* 0.0.0.0, :: */
	NETADDR_LOOPBACK,       /* 127/8, ::1 */
	NETADDR_LINK_LOCAL,     /* 169.254/16, fe80::/10 */
	NETADDR_MULTICAST,      /* 224/4, ff00::/8 */
	NETADDR_V4MAPPED,       /* ::ffff:0:0/96 in an AAAA record */
	NETADDR_BROADCAST,      /* 255.255.255.255 */
};

int netaddr_family(const struct netaddr *a);
uint16_t netaddr_port(const struct netaddr *a);
void netaddr_set_port(struct netaddr *a, uint16_t port);
/* Builds from raw address bytes (4 or 16) of the given family. */
void netaddr_from_bytes(struct netaddr *a, int family, const void *bytes, uint16_t port);
void netaddr_from_sockaddr(struct netaddr *a, const struct sockaddr *sa, socklen_t len);
/*
 * From a sockaddr whose length is known only by its family (getifaddrs): 0 for AF_INET
 * and AF_INET6, -1 (a untouched) for NULL or any other family.
 */
int netaddr_from_ip_sockaddr(struct netaddr *a, const struct sockaddr *sa);

/* Parses a bare address ("192.0.2.1", "2001:db8::1"); returns 0 or -1. */
int netaddr_parse(struct netaddr *a, const char *text, uint16_t port);
/*
 * Parses "ADDR", "ADDR:PORT", "[V6ADDR]", "[V6ADDR]:PORT" (a bare IPv6 address without
 * brackets is taken whole, with default_port). A port given in the text must be
 * 1..65535; brackets must hold an IPv6 address. Returns 0 or -1.
 */
int netaddr_parse_hostport(struct netaddr *a, const char *text, uint16_t default_port);

/* "192.0.2.1" / "2001:db8::1" into buf (>= NETADDR_STRLEN); returns buf. */
char *netaddr_ntop(const struct netaddr *a, char *buf, size_t size);
/* "192.0.2.1:25" / "[2001:db8::1]:25"; returns buf. */
char *netaddr_format_hostport(const struct netaddr *a, char *buf, size_t size);
/* "ipv4" or "ipv6" (for log lines: family=...). */
const char *netaddr_family_name(int family);

/* Address only (ports ignored); an IPv4-mapped IPv6 address equals its IPv4 address. */
bool netaddr_equal(const struct netaddr *a, const struct netaddr *b);
/* An IPv4-mapped IPv6 address (::ffff:a.b.c.d) becomes plain IPv4; others unchanged. */
void netaddr_unmap_v4(struct netaddr *a);

/*
 * "192.0.2.0/24", "2001:db8::/32", or a bare address (full-length prefix). 0 or -1.
 * Host bits are cleared ("192.0.2.1/24" is 192.0.2.0/24, as Postfix reads mynetworks).
 */
int netaddr_prefix_parse(struct netaddr_prefix *p, const char *text);
/* Matches families strictly, except that an IPv4-mapped IPv6 address matches IPv4 prefixes. */
bool netaddr_prefix_match(const struct netaddr_prefix *p, const struct netaddr *a);

enum netaddr_class netaddr_classify(const struct netaddr *a);
const char *netaddr_class_name(enum netaddr_class c); /* "link-local address", ... */

/*
 * True when the address is configured on an interface of this host. Asks the kernel
 * (getifaddrs) on every call, uncached, so it never goes stale: for the configuration
 * check and route explanations, where a fresh answer matters and the cost does not.
 * Delivery, which asks for every MX address, uses localaddr.h's snapshot instead.
 */
bool netaddr_is_local(const struct netaddr *a);

#endif
