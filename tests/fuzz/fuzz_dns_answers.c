/*
 * fuzz_dns_answers: what we do with a DNS answer as it arrives from the network (dns).
 * The input is a raw DNS message: our TTL walkers (dns_answer_min_ttl,
 * dns_answer_negative_ttl), our conversion of answers into results (dns_answer_parse:
 * MX, A, AAAA, PTR, and the cache's copy), and the c-ares parsers we rely on
 * (ares_parse_mx_reply, ares_parse_a_reply, ares_parse_aaaa_reply, ares_parse_ptr_reply)
 * all read it.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>
#include <arpa/nameser.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <ares.h>

#include "dns.h"
#include "fuzz.h"

static void
check_ours(const unsigned char *abuf, int alen)
{
	static const int types[] = { ns_t_mx, ns_t_a, ns_t_aaaa, ns_t_ptr };

	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
		size_t n = 0;
		unsigned ttl = 0;
		enum dns_status st = dns_answer_parse(types[i], abuf, alen, &n, &ttl);

		/* DNS_OK means at least one record, and nothing else carries records. */
		if ((st == DNS_OK) != (n > 0))
			abort();
		(void)dns_status_name(st);
		(void)dns_answer_min_ttl(abuf, alen, types[i]);
	}
	(void)dns_answer_min_ttl(abuf, alen, ns_t_cname);
	(void)dns_answer_negative_ttl(abuf, alen);
}

static void
check_cares(const unsigned char *abuf, int alen)
{
	struct ares_mx_reply *mx = NULL;
	struct ares_addrttl v4[8];
	struct ares_addr6ttl v6[8];
	struct hostent *h = NULL;
	static const unsigned char addr4[4] = { 192, 0, 2, 1 };
	int n;

	if (ares_parse_mx_reply(abuf, alen, &mx) == ARES_SUCCESS)
		ares_free_data(mx);
	n = 8;
	if (ares_parse_a_reply(abuf, alen, &h, v4, &n) == ARES_SUCCESS && h != NULL)
		ares_free_hostent(h);
	h = NULL;
	n = 8;
	if (ares_parse_aaaa_reply(abuf, alen, &h, v6, &n) == ARES_SUCCESS && h != NULL)
		ares_free_hostent(h);
	h = NULL;
	if (ares_parse_ptr_reply(abuf, alen, addr4, sizeof(addr4), AF_INET, &h) ==
	    ARES_SUCCESS && h != NULL)
		ares_free_hostent(h);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	unsigned char *abuf;
	int alen;

	/* A DNS message over TCP is at most 65535 bytes; c-ares takes an int. */
	if (size > 65535)
		return 0;
	alen = (int)size;
	abuf = malloc(size ? size : 1); /* exact size, so ASan sees reads past the end */
	if (abuf == NULL)
		abort();
	memcpy(abuf, data, size);
	check_ours(abuf, alen);
	check_cares(abuf, alen);
	free(abuf);
	return 0;
}
