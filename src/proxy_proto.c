/*
 * proxy_proto: the PROXY protocol header decoder (HAProxy's "The PROXY protocol",
 * versions 1 and 2). Pure: no I/O, no allocation; everything it returns is in the
 * caller's struct or static text.
 *
 * Strictness follows the spec: version 1 is one US-ASCII line of exactly the given form
 * (single spaces, canonical addresses, ports without leading zeroes) ending in CR LF
 * within 107 bytes, a bare CR or LF being an error; version 2 has its 12-byte
 * signature, version 2, command LOCAL or PROXY, a known family and transport, and an
 * address block long enough for its family. TLVs after the addresses are skipped, but
 * their framing must add up to the announced length, as HAProxy itself requires.
 * Anything else is an error at the first byte that shows it, so a client that is not a
 * proxy is dropped without waiting for a timeout.
 */
#include "config.h"

#include <stdint.h>
#include <string.h>
#include <arpa/inet.h>
#include <sys/socket.h>

#include "proxy_proto.h"

static const uint8_t proxy_v2_sig[12] = {
	0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
};
static const char proxy_v1_prefix[] = "PROXY ";

/* v2 byte 13: high nibble version, low nibble command. */
#define PROXY_V2_VERSION 0x2
#define PROXY_V2_CMD_LOCAL 0x0
#define PROXY_V2_CMD_PROXY 0x1
/* v2 byte 14: high nibble family, low nibble transport. */
#define PROXY_V2_FAM_UNSPEC 0x0
#define PROXY_V2_FAM_INET 0x1
#define PROXY_V2_FAM_INET6 0x2
#define PROXY_V2_FAM_UNIX 0x3
#define PROXY_V2_PROTO_STREAM 0x1
#define PROXY_V2_PROTO_DGRAM 0x2
/* Address block sizes: two addresses and two ports. */
#define PROXY_V2_INET_LEN (2 * 4 + 2 * 2)
#define PROXY_V2_INET6_LEN (2 * 16 + 2 * 2)
#define PROXY_V2_TLV_HEAD 3 /* type, length high, length low */

static enum proxy_proto_status
proxy_error(struct proxy_proto_header *h, const char *why)
{
	h->why = why;
	return PROXY_PROTO_ERROR;
}

/* ---- version 1 ------------------------------------------------------------------ */

/*
 * Cuts the next field of a v1 line at *p: up to a single space (consumed) or, when
 * last, the end of the line. Returns the field NUL-terminated in place, or NULL when it
 * is empty or not followed by what it must be.
 */
static char *
v1_field(char **p, bool last)
{
	char *start = *p, *sp = strchr(start, ' ');

	if (last) {
		if (sp != NULL || *start == '\0')
			return NULL;
		*p = start + strlen(start);
		return start;
	}
	if (sp == NULL || sp == start)
		return NULL;
	*sp = '\0';
	*p = sp + 1;
	return start;
}

/* Decimal 0..65535, no sign, no leading zero (spec 2.1). */
static bool
v1_port(const char *s, uint16_t *port)
{
	unsigned long v = 0;
	size_t n = strlen(s);

	if (n == 0 || n > 5 || (s[0] == '0' && n > 1))
		return false;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (unsigned long)(s[i] - '0');
	}
	if (v > 65535)
		return false;
	*port = (uint16_t)v;
	return true;
}

/* Canonical address of the announced family; IPv4 without leading zeroes. */
static bool
v1_addr(const char *s, int family, struct netaddr *a, uint16_t port)
{
	uint8_t bytes[16];

	if (family == AF_INET) {
		/* inet_pton takes "01.2.3.4" on some libcs; the spec forbids it (octal). */
		for (const char *c = s; *c != '\0'; c++)
			if (*c == '0' && (c == s || c[-1] == '.') && c[1] >= '0' && c[1] <= '9')
				return false;
	}
	if (inet_pton(family, s, bytes) != 1)
		return false;
	netaddr_from_bytes(a, family, bytes, port);
	return true;
}

/* A complete line (CR LF removed, NUL-terminated, starts with "PROXY "). */
static enum proxy_proto_status
v1_line(char *line, struct proxy_proto_header *h)
{
	char *p = line + sizeof(proxy_v1_prefix) - 1;
	char *proto, *src, *dst, *sport, *dport;
	uint16_t sp, dp;
	int family;

	if (strncmp(p, "UNKNOWN", 7) == 0 && (p[7] == '\0' || p[7] == ' ')) {
		/* Spec 2.1: whatever follows UNKNOWN is ignored. */
		h->has_addrs = false;
		return PROXY_PROTO_DONE;
	}
	if ((proto = v1_field(&p, false)) == NULL)
		return proxy_error(h, "v1: malformed line");
	if (strcmp(proto, "TCP4") == 0)
		family = AF_INET;
	else if (strcmp(proto, "TCP6") == 0)
		family = AF_INET6;
	else
		return proxy_error(h, "v1: unknown protocol (not TCP4, TCP6 or UNKNOWN)");
	if ((src = v1_field(&p, false)) == NULL || (dst = v1_field(&p, false)) == NULL ||
	    (sport = v1_field(&p, false)) == NULL || (dport = v1_field(&p, true)) == NULL)
		return proxy_error(h, "v1: malformed line (expected 4 fields after protocol)");
	if (!v1_port(sport, &sp) || !v1_port(dport, &dp))
		return proxy_error(h, "v1: bad port");
	if (!v1_addr(src, family, &h->src, sp) || !v1_addr(dst, family, &h->dst, dp))
		return proxy_error(h, family == AF_INET ? "v1: bad IPv4 address" :
		    "v1: bad IPv6 address");
	h->has_addrs = true;
	return PROXY_PROTO_DONE;
}

static enum proxy_proto_status
v1_parse(const uint8_t *b, size_t len, struct proxy_proto_header *h)
{
	size_t prefix = sizeof(proxy_v1_prefix) - 1;
	size_t scan = len < PROXY_PROTO_V1_MAX ? len : PROXY_PROTO_V1_MAX;
	char line[PROXY_PROTO_V1_MAX + 1];

	if (memcmp(b, proxy_v1_prefix, len < prefix ? len : prefix) != 0)
		return proxy_error(h, "not a PROXY protocol header");
	for (size_t i = 0; i < scan; i++) {
		if (b[i] == '\n')
			return proxy_error(h, "v1: bare LF in line");
		if (b[i] == '\0')
			return proxy_error(h, "v1: NUL byte in line");
		if (b[i] != '\r')
			continue;
		if (i + 2 > PROXY_PROTO_V1_MAX)
			return proxy_error(h, "v1: no CR LF within 107 bytes");
		if (i + 1 == len)
			return PROXY_PROTO_NEED_MORE;
		if (b[i + 1] != '\n')
			return proxy_error(h, "v1: bare CR in line");
		memcpy(line, b, i);
		line[i] = '\0';
		h->version = 1;
		h->consumed = i + 2;
		return v1_line(line, h);
	}
	if (len >= PROXY_PROTO_V1_MAX)
		return proxy_error(h, "v1: no CR LF within 107 bytes");
	return PROXY_PROTO_NEED_MORE;
}

/* ---- version 2 ------------------------------------------------------------------ */

/* TLVs fill the rest of the header exactly: each one's length must fit. */
static bool
v2_tlvs_ok(const uint8_t *p, size_t n)
{
	while (n > 0) {
		size_t vlen;

		if (n < PROXY_V2_TLV_HEAD)
			return false;
		vlen = ((size_t)p[1] << 8) | p[2];
		if (vlen > n - PROXY_V2_TLV_HEAD)
			return false;
		p += PROXY_V2_TLV_HEAD + vlen;
		n -= PROXY_V2_TLV_HEAD + vlen;
	}
	return true;
}

/* The address block of a PROXY command over TCP: addresses, then ports. */
static enum proxy_proto_status
v2_inet(const uint8_t *blk, size_t blen, int family, struct proxy_proto_header *h)
{
	size_t alen = family == AF_INET ? 4 : 16;
	size_t need = family == AF_INET ? PROXY_V2_INET_LEN : PROXY_V2_INET6_LEN;
	uint16_t sport, dport;

	if (blen < need)
		return proxy_error(h, family == AF_INET ?
		    "v2: address block too short for AF_INET" :
		    "v2: address block too short for AF_INET6");
	if (!v2_tlvs_ok(blk + need, blen - need))
		return proxy_error(h, "v2: malformed TLV");
	sport = (uint16_t)((blk[2 * alen] << 8) | blk[2 * alen + 1]);
	dport = (uint16_t)((blk[2 * alen + 2] << 8) | blk[2 * alen + 3]);
	netaddr_from_bytes(&h->src, family, blk, sport);
	netaddr_from_bytes(&h->dst, family, blk + alen, dport);
	h->has_addrs = true;
	return PROXY_PROTO_DONE;
}

static enum proxy_proto_status
v2_parse(const uint8_t *b, size_t len, struct proxy_proto_header *h)
{
	size_t blen, total;
	unsigned ver, cmd, fam, proto;

	if (memcmp(b, proxy_v2_sig, len < sizeof(proxy_v2_sig) ? len :
	    sizeof(proxy_v2_sig)) != 0)
		return proxy_error(h, "v2: bad signature");
	if (len <= sizeof(proxy_v2_sig))
		return PROXY_PROTO_NEED_MORE;
	ver = b[12] >> 4;
	cmd = b[12] & 0x0f;
	if (ver != PROXY_V2_VERSION)
		return proxy_error(h, "v2: unsupported version");
	if (cmd != PROXY_V2_CMD_LOCAL && cmd != PROXY_V2_CMD_PROXY)
		return proxy_error(h, "v2: unknown command");
	if (len < PROXY_PROTO_V2_FIXED)
		return PROXY_PROTO_NEED_MORE;
	fam = b[13] >> 4;
	proto = b[13] & 0x0f;
	if (fam > PROXY_V2_FAM_UNIX || proto > PROXY_V2_PROTO_DGRAM)
		return proxy_error(h, "v2: unknown address family or transport");
	blen = ((size_t)b[14] << 8) | b[15];
	total = PROXY_PROTO_V2_FIXED + blen;
	if (total > PROXY_PROTO_MAX)
		return proxy_error(h, "v2: header longer than 4096 bytes");
	if (len < total)
		return PROXY_PROTO_NEED_MORE;
	h->version = 2;
	h->consumed = total;
	h->has_addrs = false;
	if (cmd == PROXY_V2_CMD_LOCAL) {
		/* Spec 2.2: the block, family included, is discarded. */
		h->local = true;
		return PROXY_PROTO_DONE;
	}
	if (proto == PROXY_V2_PROTO_STREAM && fam == PROXY_V2_FAM_INET)
		return v2_inet(b + PROXY_PROTO_V2_FIXED, blen, AF_INET, h);
	if (proto == PROXY_V2_PROTO_STREAM && fam == PROXY_V2_FAM_INET6)
		return v2_inet(b + PROXY_PROTO_V2_FIXED, blen, AF_INET6, h);
	/* UNSPEC, AF_UNIX, UDP: falls back to UNSPEC, the real endpoints (spec 2.2). */
	return PROXY_PROTO_DONE;
}

enum proxy_proto_status
proxy_proto_parse(const void *buf, size_t len, struct proxy_proto_header *h)
{
	const uint8_t *b = buf;

	memset(h, 0, sizeof(*h));
	if (len == 0)
		return PROXY_PROTO_NEED_MORE;
	/* Spec 2.2: the first byte tells the versions apart ("P" or CR). */
	if (b[0] == proxy_v2_sig[0])
		return v2_parse(b, len, h);
	if (b[0] == (uint8_t)proxy_v1_prefix[0])
		return v1_parse(b, len, h);
	return proxy_error(h, "not a PROXY protocol header");
}
