/*
 * proxy_proto: decodes the PROXY protocol header (HAProxy's "The PROXY protocol",
 * versions 1 and 2) that a load balancer sends before anything else on a connection,
 * carrying the original client's address. Pure: it looks at a byte buffer and says
 * whether it holds a complete, valid header, how long it is and what it announces.
 * Who may send one (trusted_proxies) and what to do with it is smtp_server's business.
 */
#ifndef DR_PROXY_PROTO_H
#define DR_PROXY_PROTO_H

#include <stdbool.h>
#include <stddef.h>

#include "netaddr.h"

/* Spec 2.1: the longest version 1 line, CR LF included ("PROXY UNKNOWN" + 2 × IPv6). */
#define PROXY_PROTO_V1_MAX 107
/* The 16 fixed bytes of a version 2 header (signature, version/command, family, length). */
#define PROXY_PROTO_V2_FIXED 16
/*
 * The longest header accepted, either version. The v2 length field allows 16 + 65535
 * bytes, but the addresses and every TLV HAProxy sends (ALPN, authority, unique id up
 * to 128 bytes, SSL strings) fit many times in this; a bound keeps what one pending
 * connection may make us buffer small.
 */
#define PROXY_PROTO_MAX 4096

enum proxy_proto_status {
	PROXY_PROTO_NEED_MORE, /* a valid beginning: wait for more bytes */
	PROXY_PROTO_ERROR,     /* not a PROXY header, or a broken one: drop the connection */
	PROXY_PROTO_DONE,      /* a complete header; see struct proxy_proto_header */
};

struct proxy_proto_header {
	unsigned version;      /* 1 or 2 */
	/*
	 * true: src and dst hold the original connection's endpoints (v1 TCP4/TCP6, v2
	 * PROXY over AF_INET/AF_INET6 STREAM). false: the receiver uses the real
	 * connection's addresses (v1 UNKNOWN; v2 LOCAL, the proxy's own health checks; v2
	 * PROXY with a family or transport we do not carry, such as AF_UNIX or UDP, which
	 * spec 2.2 says falls back to UNSPEC).
	 */
	bool has_addrs;
	bool local;            /* v2 LOCAL command (the proxy itself, e.g. a health check) */
	struct netaddr src;    /* original client address and port, when has_addrs */
	struct netaddr dst;    /* address and port the client connected to, when has_addrs */
	size_t consumed;       /* header length in bytes; the session starts after it */
	const char *why;       /* PROXY_PROTO_ERROR: what is wrong (static text, for logs) */
};

/*
 * Looks at the first len bytes received on a connection. NEED_MORE only while
 * len < PROXY_PROTO_MAX: a caller that buffers at most PROXY_PROTO_MAX bytes always gets
 * a verdict. On DONE and ERROR, *h is filled (consumed and the addresses on DONE, why on
 * ERROR); on NEED_MORE it is left undefined.
 */
enum proxy_proto_status proxy_proto_parse(const void *buf, size_t len,
    struct proxy_proto_header *h);

#endif
