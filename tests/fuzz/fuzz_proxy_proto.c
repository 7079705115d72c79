/*
 * fuzz_proxy_proto: the PROXY protocol header decoder (proxy_proto) on arbitrary bytes,
 * as a trusted proxy's connection would deliver them. Besides memory errors it checks
 * the promises the server relies on: a verdict once PROXY_PROTO_MAX bytes are there,
 * never more consumed than given, addresses of one family, and a header that reads the
 * same whether it arrives alone or with the session's bytes after it, and asks for more
 * (rather than failing) when cut short.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "fuzz.h"
#include "proxy_proto.h"

static enum proxy_proto_status
parse_copy(const uint8_t *data, size_t size, struct proxy_proto_header *h)
{
	/* Exact size: ASan sees any read past what arrived. */
	uint8_t *copy = malloc(size > 0 ? size : 1);
	enum proxy_proto_status st;

	if (copy == NULL)
		abort();
	if (size > 0)
		memcpy(copy, data, size);
	st = proxy_proto_parse(copy, size, h);
	free(copy);
	return st;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct proxy_proto_header h, again;
	enum proxy_proto_status st;

	st = parse_copy(data, size, &h);
	switch (st) {
	case PROXY_PROTO_NEED_MORE:
		if (size >= PROXY_PROTO_MAX)
			abort();
		return 0;
	case PROXY_PROTO_ERROR:
		if (h.why == NULL || h.why[0] == '\0')
			abort();
		return 0;
	case PROXY_PROTO_DONE:
		break;
	default:
		abort();
	}
	if (h.consumed == 0 || h.consumed > size || h.consumed > PROXY_PROTO_MAX ||
	    (h.version != 1 && h.version != 2) || (h.local && h.version != 2) ||
	    (h.local && h.has_addrs))
		abort();
	if (h.has_addrs) {
		int f = netaddr_family(&h.src);

		if ((f != AF_INET && f != AF_INET6) || netaddr_family(&h.dst) != f)
			abort();
	}
	/* The header alone reads the same. */
	if (parse_copy(data, h.consumed, &again) != PROXY_PROTO_DONE ||
	    again.consumed != h.consumed || again.has_addrs != h.has_addrs ||
	    again.local != h.local || again.version != h.version)
		abort();
	if (h.has_addrs && (!netaddr_equal(&again.src, &h.src) ||
	    netaddr_port(&again.src) != netaddr_port(&h.src)))
		abort();
	/* Cut short (one byte, or half of it missing), it is not yet wrong. */
	if (parse_copy(data, h.consumed - 1, &again) != PROXY_PROTO_NEED_MORE ||
	    parse_copy(data, h.consumed / 2, &again) != PROXY_PROTO_NEED_MORE)
		abort();
	return 0;
}
