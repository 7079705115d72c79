/*
 * check_dns: unit tests of dns.c. The TTL helpers are fed hand-built DNS messages; the
 * resolver itself runs end to end against a small UDP responder written here, bound to
 * 127.0.0.1 on a kernel-chosen port and driven by the same libevent loop, which answers
 * crafted packets per name (MX, null MX, A, AAAA, PTR, NXDOMAIN, NODATA, SERVFAIL, a
 * CNAME-only answer, silence) and counts the queries it receives, so caching can be
 * proved by the absence of packets.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <netinet/in.h>
#include <unistd.h>

#include <check.h>
#include <event2/event.h>

#include "dns.h"
#include "netaddr.h"
#include "util.h"

/* ---------------------------------------------------------------------------------- */
/* DNS message builder (RFC 1035 4.1), shared by the helper tests and the responder.    */

struct pkt {
	unsigned char b[1024];
	int len;
};

static void
put8(struct pkt *p, unsigned v)
{
	ck_assert_int_lt(p->len, (int)sizeof(p->b));
	p->b[p->len++] = (unsigned char)v;
}

static void
put16(struct pkt *p, unsigned v)
{
	put8(p, v >> 8 & 0xff);
	put8(p, v & 0xff);
}

static void
put32(struct pkt *p, uint32_t v)
{
	put16(p, v >> 16);
	put16(p, v & 0xffff);
}

/* Writes a dotted name uncompressed; "" and "." are the root. */
static void
put_name(struct pkt *p, const char *name)
{
	while (*name != '\0' && strcmp(name, ".") != 0) {
		const char *dot = strchr(name, '.');
		size_t n = dot ? (size_t)(dot - name) : strlen(name);

		put8(p, (unsigned)n);
		for (size_t i = 0; i < n; i++)
			put8(p, (unsigned char)name[i]);
		name += n + (dot ? 1 : 0);
	}
	put8(p, 0);
}

static void
pkt_header(struct pkt *p, unsigned id, unsigned flags, unsigned qd, unsigned an,
    unsigned ns)
{
	p->len = 0;
	put16(p, id);
	put16(p, flags);
	put16(p, qd);
	put16(p, an);
	put16(p, ns);
	put16(p, 0);
}

static void
pkt_question(struct pkt *p, const char *name, unsigned type)
{
	put_name(p, name);
	put16(p, type);
	put16(p, ns_c_in);
}

/* Starts a record; owner NULL means "the question name" (pointer to offset 12). */
static int
rr_begin(struct pkt *p, const char *owner, unsigned type, uint32_t ttl)
{
	if (owner == NULL)
		put16(p, 0xc00c);
	else
		put_name(p, owner);
	put16(p, type);
	put16(p, ns_c_in);
	put32(p, ttl);
	put16(p, 0);            /* RDLENGTH, patched by rr_end */
	return p->len;
}

static void
rr_end(struct pkt *p, int rdata)
{
	unsigned n = (unsigned)(p->len - rdata);

	p->b[rdata - 2] = (unsigned char)(n >> 8);
	p->b[rdata - 1] = (unsigned char)(n & 0xff);
}

static void
rr_mx(struct pkt *p, const char *owner, uint32_t ttl, unsigned pref, const char *host)
{
	int rd = rr_begin(p, owner, ns_t_mx, ttl);

	put16(p, pref);
	put_name(p, host);
	rr_end(p, rd);
}

static void
rr_a(struct pkt *p, const char *owner, uint32_t ttl, const char *text)
{
	unsigned char b[4];
	int rd = rr_begin(p, owner, ns_t_a, ttl);

	ck_assert_int_eq(inet_pton(AF_INET, text, b), 1);
	for (int i = 0; i < 4; i++)
		put8(p, b[i]);
	rr_end(p, rd);
}

static void
rr_aaaa(struct pkt *p, const char *owner, uint32_t ttl, const char *text)
{
	unsigned char b[16];
	int rd = rr_begin(p, owner, ns_t_aaaa, ttl);

	ck_assert_int_eq(inet_pton(AF_INET6, text, b), 1);
	for (int i = 0; i < 16; i++)
		put8(p, b[i]);
	rr_end(p, rd);
}

static void
rr_name(struct pkt *p, const char *owner, unsigned type, uint32_t ttl, const char *target)
{
	int rd = rr_begin(p, owner, type, ttl);

	put_name(p, target);
	rr_end(p, rd);
}

static void
rr_soa(struct pkt *p, const char *zone, uint32_t ttl, uint32_t minimum)
{
	int rd = rr_begin(p, zone, ns_t_soa, ttl);

	put_name(p, "ns.test");
	put_name(p, "hostmaster.test");
	put32(p, 2026010101);   /* serial */
	put32(p, 3600);         /* refresh */
	put32(p, 600);          /* retry */
	put32(p, 86400);        /* expire */
	put32(p, minimum);
	rr_end(p, rd);
}

/* ---------------------------------------------------------------------------------- */
/* dns_answer_min_ttl / dns_answer_negative_ttl on hand-built messages.                 */

START_TEST(test_min_ttl_mx)
{
	struct pkt p;

	pkt_header(&p, 1, 0x8180, 1, 3, 0);
	pkt_question(&p, "example.test", ns_t_mx);
	rr_mx(&p, NULL, 300, 10, "mx1.example.test");
	rr_mx(&p, NULL, 120, 20, "mx2.example.test");
	rr_mx(&p, NULL, 900, 30, "mx3.example.test");
	ck_assert_uint_eq(dns_answer_min_ttl(p.b, p.len, ns_t_mx), 120);
	/* No record of the type asked: 0, whatever else is there. */
	ck_assert_uint_eq(dns_answer_min_ttl(p.b, p.len, ns_t_a), 0);
}
END_TEST

START_TEST(test_min_ttl_cname_chain)
{
	struct pkt p;

	pkt_header(&p, 2, 0x8180, 1, 3, 0);
	pkt_question(&p, "www.example.test", ns_t_a);
	rr_name(&p, NULL, ns_t_cname, 60, "host.example.test");
	rr_a(&p, "host.example.test", 300, "192.0.2.1");
	rr_a(&p, "host.example.test", 200, "192.0.2.2");
	ck_assert_uint_eq(dns_answer_min_ttl(p.b, p.len, ns_t_a), 60);

	/* A CNAME alone is not an answer of the type. */
	pkt_header(&p, 2, 0x8180, 1, 1, 0);
	pkt_question(&p, "www.example.test", ns_t_mx);
	rr_name(&p, NULL, ns_t_cname, 60, "host.example.test");
	ck_assert_uint_eq(dns_answer_min_ttl(p.b, p.len, ns_t_mx), 0);
}
END_TEST

START_TEST(test_min_ttl_top_bit_and_truncation)
{
	struct pkt p;

	/* RFC 2181 8: a TTL with the top bit set counts as zero. */
	pkt_header(&p, 3, 0x8180, 1, 2, 0);
	pkt_question(&p, "example.test", ns_t_a);
	rr_a(&p, NULL, 500, "192.0.2.1");
	rr_a(&p, NULL, 0x80000010u, "192.0.2.2");
	ck_assert_uint_eq(dns_answer_min_ttl(p.b, p.len, ns_t_a), 0);

	/* Truncated inside the second record: the first one still counts. */
	pkt_header(&p, 3, 0x8180, 1, 2, 0);
	pkt_question(&p, "example.test", ns_t_a);
	rr_a(&p, NULL, 500, "192.0.2.1");
	int cut = p.len + 6;
	rr_a(&p, NULL, 100, "192.0.2.2");
	ck_assert_uint_eq(dns_answer_min_ttl(p.b, cut, ns_t_a), 500);
	ck_assert_uint_eq(dns_answer_min_ttl(p.b, p.len, ns_t_a), 100);

	/* Too short for a header, or no message at all. */
	ck_assert_uint_eq(dns_answer_min_ttl(p.b, 11, ns_t_a), 0);
	ck_assert_uint_eq(dns_answer_min_ttl(NULL, 0, ns_t_a), 0);

	/* A compression pointer cut in half must not be read past the end. */
	pkt_header(&p, 3, 0x8180, 1, 1, 0);
	pkt_question(&p, "example.test", ns_t_a);
	put8(&p, 0xc0);
	ck_assert_uint_eq(dns_answer_min_ttl(p.b, p.len, ns_t_a), 0);
}
END_TEST

START_TEST(test_negative_ttl)
{
	struct pkt p;

	/* RFC 2308 5: min(SOA TTL, MINIMUM). */
	pkt_header(&p, 4, 0x8183, 1, 0, 1);
	pkt_question(&p, "nx.example.test", ns_t_mx);
	rr_soa(&p, "example.test", 3600, 300);
	ck_assert_uint_eq(dns_answer_negative_ttl(p.b, p.len), 300);

	pkt_header(&p, 4, 0x8183, 1, 0, 1);
	pkt_question(&p, "nx.example.test", ns_t_mx);
	rr_soa(&p, "example.test", 100, 300);
	ck_assert_uint_eq(dns_answer_negative_ttl(p.b, p.len), 100);

	/* Behind an answer record (a CNAME to a name without data). */
	pkt_header(&p, 4, 0x8180, 1, 1, 1);
	pkt_question(&p, "alias.example.test", ns_t_aaaa);
	rr_name(&p, NULL, ns_t_cname, 600, "host.example.test");
	rr_soa(&p, "example.test", 900, 45);
	ck_assert_uint_eq(dns_answer_negative_ttl(p.b, p.len), 45);
}
END_TEST

START_TEST(test_negative_ttl_absent_or_bad)
{
	struct pkt p;

	/* No SOA: not cacheable (RFC 2308 5). */
	pkt_header(&p, 5, 0x8183, 1, 0, 0);
	pkt_question(&p, "nx.example.test", ns_t_mx);
	ck_assert_uint_eq(dns_answer_negative_ttl(p.b, p.len), 0);

	/* A SOA in the answer section is an answer, not a negative-caching hint. */
	pkt_header(&p, 5, 0x8180, 1, 1, 0);
	pkt_question(&p, "example.test", ns_t_soa);
	rr_soa(&p, "example.test", 900, 45);
	ck_assert_uint_eq(dns_answer_negative_ttl(p.b, p.len), 0);

	/* SOA RDATA too short for its five numbers. */
	pkt_header(&p, 5, 0x8183, 1, 0, 1);
	pkt_question(&p, "nx.example.test", ns_t_mx);
	int rd = rr_begin(&p, "example.test", ns_t_soa, 900);
	put_name(&p, "ns.test");
	put_name(&p, "hostmaster.test");
	put32(&p, 1);
	rr_end(&p, rd);
	ck_assert_uint_eq(dns_answer_negative_ttl(p.b, p.len), 0);

	ck_assert_uint_eq(dns_answer_negative_ttl(NULL, 0), 0);
}
END_TEST

START_TEST(test_status_names)
{
	ck_assert_str_eq(dns_status_name(DNS_OK), "ok");
	ck_assert_str_eq(dns_status_name(DNS_NODATA), "nodata");
	ck_assert_str_eq(dns_status_name(DNS_NXDOMAIN), "nxdomain");
	ck_assert_str_eq(dns_status_name(DNS_TEMPFAIL), "tempfail");
	ck_assert_str_eq(dns_status_name(DNS_BADNAME), "badname");
}
END_TEST

/* ---------------------------------------------------------------------------------- */
/* The responder.                                                                       */

#define V6_REVERSE "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"

static struct event_base *base;
static struct dns *dns;
static int rsock = -1;
static struct event *rev;
static char rserver[64];       /* "127.0.0.1:PORT" */
static unsigned npackets;       /* queries received */
static bool in_submit;          /* set around dns_query_*: a callback then is re-entrant */

static int
lower(int c)
{
	return c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c;
}

/* Fills out with the answer to (qname, qtype); false to stay silent. */
static bool
answer(struct pkt *out, const unsigned char *q, int qlen, int qend, const char *name,
    unsigned type)
{
	unsigned rcode = 0, an = 0, ns = 0;
	struct pkt body;

	/* The query's header and question, then the records; the header is patched last. */
	(void)qlen;
	memcpy(body.b, q, (size_t)qend);
	body.len = qend;

	if (strcmp(name, "timeout.test") == 0)
		return false;
	if (strcmp(name, "mx.test") == 0 && type == ns_t_mx) {
		rr_mx(&body, NULL, 600, 20, "mx2.mx.test");
		rr_mx(&body, NULL, 300, 10, "MX1.mx.test");
		an = 2;
	} else if (strcmp(name, "nullmx.test") == 0 && type == ns_t_mx) {
		rr_mx(&body, NULL, 300, 0, "");
		an = 1;
	} else if (strcmp(name, "cname.test") == 0 && type == ns_t_mx) {
		rr_name(&body, NULL, ns_t_cname, 300, "elsewhere.test");
		an = 1;
	} else if (strcmp(name, "host.test") == 0 && type == ns_t_a) {
		rr_a(&body, NULL, 120, "192.0.2.1");
		rr_a(&body, NULL, 240, "192.0.2.2");
		an = 2;
	} else if (strcmp(name, "host.test") == 0 && type == ns_t_aaaa) {
		rr_aaaa(&body, NULL, 60, "2001:db8::1");
		an = 1;
	} else if (strcmp(name, "zerottl.test") == 0 && type == ns_t_a) {
		rr_a(&body, NULL, 0, "192.0.2.5");
		an = 1;
	} else if (strcmp(name, "v4only.test") == 0 && type == ns_t_aaaa) {
		rr_soa(&body, "test", 600, 30);
		ns = 1;
	} else if (strcmp(name, "nx.test") == 0) {
		rcode = 3;
		rr_soa(&body, "test", 600, 30);
		ns = 1;
	} else if (strcmp(name, "servfail.test") == 0) {
		rcode = 2;
	} else if (strcmp(name, "refused.test") == 0) {
		rcode = 5;
	} else if (strcmp(name, "1.2.0.192.in-addr.arpa") == 0 && type == ns_t_ptr) {
		rr_name(&body, NULL, ns_t_ptr, 300, "Host.test");
		an = 1;
	} else if (strcmp(name, V6_REVERSE) == 0 && type == ns_t_ptr) {
		rr_name(&body, NULL, ns_t_ptr, 300, "v6a.test");
		rr_name(&body, NULL, ns_t_ptr, 300, "v6b.test");
		an = 2;
	} else {
		rcode = 3;
	}
	*out = body;
	/* Header: same id, QR + AA + RD + RA, the rcode, one question. */
	out->b[2] = 0x85;
	out->b[3] = (unsigned char)(0x80 | rcode);
	out->b[4] = 0;
	out->b[5] = 1;
	out->b[6] = 0;
	out->b[7] = (unsigned char)an;
	out->b[8] = 0;
	out->b[9] = (unsigned char)ns;
	out->b[10] = 0;
	out->b[11] = 0;
	return true;
}

static void
responder_cb(evutil_socket_t fd, short what, void *arg)
{
	unsigned char q[512];
	struct sockaddr_storage from;
	socklen_t fromlen = sizeof(from);
	char name[256];
	size_t nlen = 0;
	struct pkt out;

	(void)what;
	(void)arg;
	ssize_t n = recvfrom(fd, q, sizeof(q), 0, (struct sockaddr *)&from, &fromlen);
	if (n < 12)
		return;
	npackets++;

	/* Question name, uncompressed as every client sends it. */
	int off = 12;
	while (off < n && q[off] != 0) {
		unsigned len = q[off++];

		if (off + (int)len > n || nlen + len + 2 > sizeof(name))
			return;
		if (nlen > 0)
			name[nlen++] = '.';
		for (unsigned i = 0; i < len; i++)
			name[nlen++] = (char)lower(q[off + (int)i]);
		off += (int)len;
	}
	name[nlen] = '\0';
	if (off + 5 > n)
		return;
	unsigned type = (unsigned)q[off + 1] << 8 | q[off + 2];
	int qend = off + 5;

	if (answer(&out, q, (int)n, qend, name, type))
		sendto(fd, out.b, (size_t)out.len, 0, (struct sockaddr *)&from, fromlen);
}

static void
responder_start(void)
{
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);

	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	rsock = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	ck_assert_int_ge(rsock, 0);
	ck_assert_int_eq(bind(rsock, (struct sockaddr *)&sin, sizeof(sin)), 0);
	ck_assert_int_eq(getsockname(rsock, (struct sockaddr *)&sin, &len), 0);
	snprintf(rserver, sizeof(rserver), "127.0.0.1:%u", ntohs(sin.sin_port));
	rev = event_new(base, rsock, EV_READ | EV_PERSIST, responder_cb, NULL);
	ck_assert_ptr_nonnull(rev);
	ck_assert_int_eq(event_add(rev, NULL), 0);
}

static struct dns *
make_dns(unsigned timeout_ms, unsigned tries)
{
	const char *servers[] = { rserver };
	struct dns_config cfg = { servers, 1, timeout_ms, tries };
	const char *err = NULL;
	struct dns *d = dns_new(base, &cfg, &err);

	ck_assert_msg(d != NULL, "dns_new: %s", err ? err : "?");
	return d;
}

static void
setup(void)
{
	base = event_base_new();
	ck_assert_ptr_nonnull(base);
	npackets = 0;
	responder_start();
	dns = make_dns(1000, 2);
}

static void
teardown(void)
{
	dns_free(dns);
	dns = NULL;
	event_free(rev);
	close(rsock);
	event_base_free(base);
}

/* ---------------------------------------------------------------------------------- */
/* Driving the loop and capturing results.                                              */

static bool deadline_hit;

static void
deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	deadline_hit = true;
}

/* Runs the loop until *calls is non-zero or ms have passed. */
static void
run_until(const unsigned *calls, int ms)
{
	struct event *ev = evtimer_new(base, deadline_cb, NULL);
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

	deadline_hit = false;
	evtimer_add(ev, &tv);
	while ((calls == NULL || *calls == 0) && !deadline_hit)
		event_base_loop(base, EVLOOP_ONCE);
	event_free(ev);
}

struct capture {
	unsigned calls;
	bool reentrant;           /* the callback ran inside the submitting call */
	enum dns_status status;
	unsigned ttl;
	char error[128];
	int family;
	size_t n;
	char item[8][256];        /* MX hosts, addresses or PTR names */
	unsigned pref[8];
	uint16_t port[8];
};

static void
capture_common(struct capture *c, enum dns_status status, unsigned ttl, const char *error,
    size_t n)
{
	c->calls++;
	c->reentrant |= in_submit;
	c->status = status;
	c->ttl = ttl;
	snprintf(c->error, sizeof(c->error), "%s", error ? error : "");
	c->n = n;
}

static void
mx_cb(const struct dns_mx_result *r, void *arg)
{
	struct capture *c = arg;

	capture_common(c, r->status, r->ttl, r->error, r->nmx);
	for (size_t i = 0; i < r->nmx && i < 8; i++) {
		snprintf(c->item[i], sizeof(c->item[i]), "%s", r->mx[i].host);
		c->pref[i] = r->mx[i].preference;
	}
}

static void
addr_cb(const struct dns_addr_result *r, void *arg)
{
	struct capture *c = arg;

	capture_common(c, r->status, r->ttl, r->error, r->naddrs);
	c->family = r->family;
	for (size_t i = 0; i < r->naddrs && i < 8; i++) {
		ck_assert_int_eq(netaddr_family(&r->addrs[i]), r->family);
		netaddr_ntop(&r->addrs[i], c->item[i], sizeof(c->item[i]));
		c->port[i] = netaddr_port(&r->addrs[i]);
	}
}

static void
ptr_cb(const struct dns_ptr_result *r, void *arg)
{
	struct capture *c = arg;

	capture_common(c, r->status, 0, r->error, r->nnames);
	for (size_t i = 0; i < r->nnames && i < 8; i++)
		snprintf(c->item[i], sizeof(c->item[i]), "%s", r->names[i]);
}

/* Submits and checks that the callback is not run from inside the call. */
static struct dns_query *
query_mx(const char *name, struct capture *c)
{
	memset(c, 0, sizeof(*c));
	in_submit = true;
	struct dns_query *q = dns_query_mx(dns, name, mx_cb, c);
	in_submit = false;
	ck_assert_ptr_nonnull(q);
	ck_assert_uint_eq(c->calls, 0);
	return q;
}

static struct dns_query *
query_addr(const char *name, int family, struct capture *c)
{
	memset(c, 0, sizeof(*c));
	in_submit = true;
	struct dns_query *q = dns_query_addr(dns, name, family, addr_cb, c);
	in_submit = false;
	ck_assert_ptr_nonnull(q);
	ck_assert_uint_eq(c->calls, 0);
	return q;
}

static struct dns_query *
query_ptr(const char *text, struct capture *c)
{
	struct netaddr a;

	ck_assert_int_eq(netaddr_parse(&a, text, 0), 0);
	memset(c, 0, sizeof(*c));
	in_submit = true;
	struct dns_query *q = dns_query_ptr(dns, &a, ptr_cb, c);
	in_submit = false;
	ck_assert_ptr_nonnull(q);
	ck_assert_uint_eq(c->calls, 0);
	return q;
}

/* Waits for exactly one callback, run from the loop. */
static void
wait_for(struct capture *c)
{
	run_until(&c->calls, 5000);
	ck_assert_uint_eq(c->calls, 1);
	ck_assert(!c->reentrant);
}

/* ---------------------------------------------------------------------------------- */
/* End to end.                                                                          */

START_TEST(test_mx_and_cache)
{
	struct capture c;

	query_mx("mx.test", &c);
	wait_for(&c);
	ck_assert_int_eq(c.status, DNS_OK);
	ck_assert_uint_eq(c.n, 2);
	/* As received (mx_sort orders them), host names lower-cased. */
	ck_assert_str_eq(c.item[0], "mx2.mx.test");
	ck_assert_uint_eq(c.pref[0], 20);
	ck_assert_str_eq(c.item[1], "mx1.mx.test");
	ck_assert_uint_eq(c.pref[1], 10);
	ck_assert_uint_eq(c.ttl, 300);
	ck_assert_str_eq(c.error, "");
	ck_assert_uint_eq(npackets, 1);

	/* Served from the cache: no packet, still delivered from the loop. */
	query_mx("MX.Test.", &c);
	wait_for(&c);
	ck_assert_int_eq(c.status, DNS_OK);
	ck_assert_uint_eq(c.n, 2);
	ck_assert_str_eq(c.item[1], "mx1.mx.test");
	ck_assert_uint_le(c.ttl, 300);
	ck_assert_uint_ge(c.ttl, 298);
	ck_assert_uint_eq(npackets, 1);

	/* Until the cache is flushed. */
	dns_flush_cache(dns);
	query_mx("mx.test", &c);
	wait_for(&c);
	ck_assert_int_eq(c.status, DNS_OK);
	ck_assert_uint_eq(npackets, 2);
}
END_TEST

START_TEST(test_null_mx)
{
	struct capture c;

	query_mx("nullmx.test", &c);
	wait_for(&c);
	ck_assert_int_eq(c.status, DNS_OK);
	ck_assert_uint_eq(c.n, 1);
	ck_assert_str_eq(c.item[0], "");
	ck_assert_uint_eq(c.pref[0], 0);
}
END_TEST

START_TEST(test_mx_cname_only_is_nodata)
{
	struct capture c;

	query_mx("cname.test", &c);
	wait_for(&c);
	ck_assert_int_eq(c.status, DNS_NODATA);
	ck_assert_uint_eq(c.n, 0);
	ck_assert_str_ne(c.error, "");
}
END_TEST

START_TEST(test_addr_both_families)
{
	struct capture c4, c6;

	query_addr("host.test", AF_INET, &c4);
	query_addr("host.test", AF_INET6, &c6);
	wait_for(&c4);
	wait_for(&c6);
	ck_assert_int_eq(c4.status, DNS_OK);
	ck_assert_int_eq(c4.family, AF_INET);
	ck_assert_uint_eq(c4.n, 2);
	ck_assert_str_eq(c4.item[0], "192.0.2.1");
	ck_assert_str_eq(c4.item[1], "192.0.2.2");
	ck_assert_uint_eq(c4.port[0], 0);
	ck_assert_uint_eq(c4.ttl, 120);
	ck_assert_int_eq(c6.status, DNS_OK);
	ck_assert_int_eq(c6.family, AF_INET6);
	ck_assert_uint_eq(c6.n, 1);
	ck_assert_str_eq(c6.item[0], "2001:db8::1");
	ck_assert_uint_eq(c6.ttl, 60);
	ck_assert_uint_eq(npackets, 2);

	query_addr("host.test", AF_INET6, &c6);
	query_addr("host.test", AF_INET, &c4);
	wait_for(&c6);
	wait_for(&c4);
	ck_assert_str_eq(c6.item[0], "2001:db8::1");
	ck_assert_str_eq(c4.item[1], "192.0.2.2");
	ck_assert_uint_eq(npackets, 2);
}
END_TEST

START_TEST(test_zero_ttl_not_cached)
{
	struct capture c;

	query_addr("zerottl.test", AF_INET, &c);
	wait_for(&c);
	ck_assert_int_eq(c.status, DNS_OK);
	ck_assert_str_eq(c.item[0], "192.0.2.5");
	query_addr("zerottl.test", AF_INET, &c);
	wait_for(&c);
	ck_assert_int_eq(c.status, DNS_OK);
	ck_assert_uint_eq(npackets, 2);
}
END_TEST

START_TEST(test_nodata_cached)
{
	struct capture c;

	query_addr("v4only.test", AF_INET6, &c);
	wait_for(&c);
	ck_assert_int_eq(c.status, DNS_NODATA);
	ck_assert_uint_eq(c.n, 0);
	ck_assert_uint_eq(c.ttl, 30);
	ck_assert_uint_eq(npackets, 1);
	query_addr("v4only.test", AF_INET6, &c);
	wait_for(&c);
	ck_assert_int_eq(c.status, DNS_NODATA);
	ck_assert_uint_eq(npackets, 1);
}
END_TEST

START_TEST(test_nxdomain_cached_per_type)
{
	struct capture c;

	query_mx("nx.test", &c);
	wait_for(&c);
	ck_assert_int_eq(c.status, DNS_NXDOMAIN);
	ck_assert_str_ne(c.error, "");
	ck_assert_uint_eq(npackets, 1);
	query_mx("nx.test", &c);
	wait_for(&c);
	ck_assert_int_eq(c.status, DNS_NXDOMAIN);
	ck_assert_uint_eq(npackets, 1);
	/* The cache key is (type, name). */
	query_addr("nx.test", AF_INET, &c);
	wait_for(&c);
	ck_assert_int_eq(c.status, DNS_NXDOMAIN);
	ck_assert_uint_eq(npackets, 2);
}
END_TEST

START_TEST(test_nxdomain_without_soa_not_cached)
{
	struct capture c;

	query_mx("unknown.test", &c);
	wait_for(&c);
	ck_assert_int_eq(c.status, DNS_NXDOMAIN);
	query_mx("unknown.test", &c);
	wait_for(&c);
	ck_assert_int_eq(c.status, DNS_NXDOMAIN);
	ck_assert_uint_eq(npackets, 2);
}
END_TEST

START_TEST(test_servfail_tempfail_not_cached)
{
	struct capture c;

	query_mx("servfail.test", &c);
	wait_for(&c);
	ck_assert_int_eq(c.status, DNS_TEMPFAIL);
	ck_assert_str_ne(c.error, "");
	/* c-ares retries SERVFAIL on its only server up to "tries" (2) times. */
	ck_assert_uint_eq(npackets, 2);
	query_mx("servfail.test", &c);
	wait_for(&c);
	ck_assert_int_eq(c.status, DNS_TEMPFAIL);
	ck_assert_uint_eq(npackets, 4);

	query_addr("refused.test", AF_INET, &c);
	wait_for(&c);
	ck_assert_int_eq(c.status, DNS_TEMPFAIL);
}
END_TEST

START_TEST(test_timeout_tempfail)
{
	struct capture c;

	dns_free(dns);
	dns = make_dns(200, 2);
	uint64_t start = dr_monotonic_ms();
	query_mx("timeout.test", &c);
	wait_for(&c);
	uint64_t elapsed = dr_monotonic_ms() - start;
	ck_assert_int_eq(c.status, DNS_TEMPFAIL);
	ck_assert_str_ne(c.error, "");
	ck_assert_uint_eq(npackets, 2);
	/* Two tries of 200 ms (c-ares doubles the second): not instant, not forever. */
	ck_assert_uint_ge(elapsed, 350);
	ck_assert_uint_lt(elapsed, 3000);
}
END_TEST

START_TEST(test_ptr)
{
	struct capture c;

	query_ptr("192.0.2.1", &c);
	wait_for(&c);
	ck_assert_int_eq(c.status, DNS_OK);
	ck_assert_uint_eq(c.n, 1);
	ck_assert_str_eq(c.item[0], "host.test");

	/* An IPv4-mapped address asks the IPv4 reverse name: answered from the cache. */
	query_ptr("::ffff:192.0.2.1", &c);
	wait_for(&c);
	ck_assert_int_eq(c.status, DNS_OK);
	ck_assert_str_eq(c.item[0], "host.test");
	ck_assert_uint_eq(npackets, 1);

	query_ptr("2001:db8::1", &c);
	wait_for(&c);
	ck_assert_int_eq(c.status, DNS_OK);
	ck_assert_uint_eq(c.n, 2);
	ck_assert_str_eq(c.item[0], "v6a.test");
	ck_assert_str_eq(c.item[1], "v6b.test");

	query_ptr("192.0.2.99", &c);
	wait_for(&c);
	ck_assert_int_eq(c.status, DNS_NXDOMAIN);
	ck_assert_uint_eq(c.n, 0);
}
END_TEST

START_TEST(test_badname_no_packet)
{
	static const char *const bad[] = {
		"", ".", "a..test", ".test",
		"a234567890123456789012345678901234567890123456789012345678901234.test",
	};
	struct capture c;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		query_mx(bad[i], &c);
		wait_for(&c);
		ck_assert_msg(c.status == DNS_BADNAME, "\"%s\": %s", bad[i],
		    dns_status_name(c.status));
	}
	query_addr("host.test", AF_UNIX, &c);
	wait_for(&c);
	ck_assert_int_eq(c.status, DNS_BADNAME);
	ck_assert_uint_eq(npackets, 0);
}
END_TEST

START_TEST(test_coalesce)
{
	struct capture a, b;

	query_mx("mx.test", &a);
	query_mx("mx.test", &b);
	wait_for(&a);
	wait_for(&b);
	ck_assert_int_eq(a.status, DNS_OK);
	ck_assert_int_eq(b.status, DNS_OK);
	ck_assert_str_eq(b.item[1], "mx1.mx.test");
	ck_assert_uint_eq(npackets, 1);
}
END_TEST

START_TEST(test_cancel_in_flight)
{
	struct capture c1, c2;

	struct dns_query *q = query_mx("mx.test", &c1);
	dns_cancel(q);
	query_addr("host.test", AF_INET, &c2);
	wait_for(&c2);
	run_until(NULL, 100);
	ck_assert_uint_eq(c1.calls, 0);
	ck_assert_uint_eq(npackets, 2);

	/* The abandoned request still completed and fed the cache. */
	query_mx("mx.test", &c1);
	wait_for(&c1);
	ck_assert_int_eq(c1.status, DNS_OK);
	ck_assert_uint_eq(npackets, 2);
}
END_TEST

START_TEST(test_cancel_one_of_coalesced)
{
	struct capture a, b;

	struct dns_query *qa = query_mx("mx.test", &a);
	query_mx("mx.test", &b);
	dns_cancel(qa);
	wait_for(&b);
	run_until(NULL, 50);
	ck_assert_uint_eq(a.calls, 0);
	ck_assert_int_eq(b.status, DNS_OK);
}
END_TEST

START_TEST(test_cancel_cache_hit)
{
	struct capture c1, c2;

	query_mx("mx.test", &c1);
	wait_for(&c1);
	struct dns_query *q = query_mx("mx.test", &c1);
	dns_cancel(q);
	query_mx("nullmx.test", &c2);
	wait_for(&c2);
	run_until(NULL, 50);
	ck_assert_uint_eq(c1.calls, 0);
}
END_TEST

START_TEST(test_free_with_outstanding)
{
	struct capture c1, c2, c3;

	query_mx("mx.test", &c1);
	wait_for(&c1);
	query_mx("mx.test", &c1);               /* cache hit, delivery pending */
	query_mx("timeout.test", &c2);          /* in flight, no answer coming */
	query_addr("host.test", AF_INET, &c3);  /* in flight, answer coming */
	dns_free(dns);
	dns = NULL;
	run_until(NULL, 200);
	ck_assert_uint_eq(c1.calls, 0);
	ck_assert_uint_eq(c2.calls, 0);
	ck_assert_uint_eq(c3.calls, 0);
}
END_TEST

static unsigned free_cb_calls;

static void
free_from_callback_cb(const struct dns_mx_result *r, void *arg)
{
	(void)r;
	(void)arg;
	free_cb_calls++;
	dns_free(dns);          /* allowed: callbacks never run under c-ares */
	dns = NULL;
}

START_TEST(test_free_from_callback)
{
	struct capture c1, c2;

	query_mx("mx.test", &c1);
	wait_for(&c1);
	free_cb_calls = 0;
	ck_assert_ptr_nonnull(dns_query_mx(dns, "mx.test", free_from_callback_cb, NULL));
	ck_assert_ptr_nonnull(dns_query_mx(dns, "mx.test", free_from_callback_cb, NULL));
	query_mx("timeout.test", &c2);
	run_until(&free_cb_calls, 1000);
	run_until(NULL, 100);
	ck_assert_uint_eq(free_cb_calls, 1);
	ck_assert_uint_eq(c2.calls, 0);
	ck_assert_ptr_null(dns);
}
END_TEST

START_TEST(test_new_servers)
{
	static const char *const good[] = { "192.0.2.53", "198.51.100.53:5353",
		"[2001:db8::53]:5353", "2001:db8::54" };
	static const char *const bad[] = { "192.0.2.53", "not-an-address" };
	struct dns_config cfg = { good, 4, 500, 1 };
	const char *err = NULL;
	struct dns *d = dns_new(base, &cfg, &err);

	ck_assert_ptr_nonnull(d);
	dns_free(d);

	cfg.servers = bad;
	cfg.nservers = 2;
	err = NULL;
	ck_assert_ptr_null(dns_new(base, &cfg, &err));
	ck_assert_ptr_nonnull(err);

	/* No servers: /etc/resolv.conf, nothing sent. */
	err = NULL;
	d = dns_new(base, NULL, &err);
	ck_assert_ptr_nonnull(d);
	dns_free(d);
}
END_TEST

static Suite *
dns_suite(void)
{
	Suite *s = suite_create("dns");
	TCase *tc = tcase_create("ttl");

	tcase_add_test(tc, test_min_ttl_mx);
	tcase_add_test(tc, test_min_ttl_cname_chain);
	tcase_add_test(tc, test_min_ttl_top_bit_and_truncation);
	tcase_add_test(tc, test_negative_ttl);
	tcase_add_test(tc, test_negative_ttl_absent_or_bad);
	tcase_add_test(tc, test_status_names);
	suite_add_tcase(s, tc);

	tc = tcase_create("resolver");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 20);
	tcase_add_test(tc, test_mx_and_cache);
	tcase_add_test(tc, test_null_mx);
	tcase_add_test(tc, test_mx_cname_only_is_nodata);
	tcase_add_test(tc, test_addr_both_families);
	tcase_add_test(tc, test_zero_ttl_not_cached);
	tcase_add_test(tc, test_nodata_cached);
	tcase_add_test(tc, test_nxdomain_cached_per_type);
	tcase_add_test(tc, test_nxdomain_without_soa_not_cached);
	tcase_add_test(tc, test_servfail_tempfail_not_cached);
	tcase_add_test(tc, test_timeout_tempfail);
	tcase_add_test(tc, test_ptr);
	tcase_add_test(tc, test_badname_no_packet);
	tcase_add_test(tc, test_coalesce);
	tcase_add_test(tc, test_cancel_in_flight);
	tcase_add_test(tc, test_cancel_one_of_coalesced);
	tcase_add_test(tc, test_cancel_cache_hit);
	tcase_add_test(tc, test_free_with_outstanding);
	tcase_add_test(tc, test_free_from_callback);
	tcase_add_test(tc, test_new_servers);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(dns_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
