/*
 * dns: the asynchronous resolver (see dns.h). Owns one c-ares channel driven by the
 * caller's libevent base, the sockets and the timer c-ares asks us to watch, the
 * requests in flight and a TTL-bounded answer cache.
 *
 * Three objects, kept apart on purpose (c-ares 1.18 cannot cancel one query):
 *  - struct dns_req: one c-ares query in flight for a (type, name). c-ares owns its
 *    lifetime: it is freed only in its c-ares callback, even when nobody waits any more.
 *  - struct dns_query: the caller's handle. It waits on a request (several handles may
 *    share one: identical queries in flight are coalesced), or holds a copy of the answer
 *    until its zero-delay delivery event runs. Cancelling just unlinks and frees it.
 *  - struct dns_answer: a parsed answer; the cache keeps one per (type, name) and every
 *    handle gets its own copy, so nothing a caller sees is shared.
 * Callers' callbacks run only from the delivery event, never from inside c-ares or the
 * submitting call, so a callback may submit, cancel or even dns_free() freely.
 *
 * Answers are cached up to their TTL (capped at one day); NXDOMAIN and NODATA up to
 * the negative TTL of RFC 2308 section 5 (capped at one hour); failures are never cached.
 */
#include "config.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <arpa/nameser.h>
#include <netinet/in.h>

#include <ares.h>
#include <event2/event.h>

#include "dns.h"
#include "log.h"
#include "util.h"

#define DNS_DEFAULT_TIMEOUT_MS 5000
#define DNS_DEFAULT_TRIES      2
#define DNS_DEFAULT_PORT       53
#define DNS_CACHE_BUCKETS      256
#define DNS_CACHE_MAX          8192   /* entries; beyond, expired ones go, then all */
#define DNS_MAX_POSITIVE_TTL   86400  /* a day: bounds a stale MX after a migration */
#define DNS_MAX_NEGATIVE_TTL   3600   /* an hour, as RFC 2308 section 5 suggests at most */
#define DNS_MAX_NAME           253    /* RFC 1035 2.3.4, without the trailing dot */
#define DNS_MAX_LABEL          63

/* A parsed answer: what the cache stores and what a handle carries to its callback. */
struct dns_answer {
	enum dns_status status;
	const char *error;       /* static; NULL when status is DNS_OK */
	unsigned ttl;            /* seconds, as received (or remaining, from the cache) */
	struct dns_mx *mx;       /* MX answers */
	size_t nmx;
	struct netaddr *addrs;   /* A/AAAA answers, port 0 */
	size_t naddrs;
	char **names;            /* PTR answers; TXT answers (each record's strings joined) */
	size_t nnames;
};

struct dns_cache_entry {
	LIST_ENTRY(dns_cache_entry) entry; /* bucket chain */
	int type;                /* ns_t_mx, ns_t_a, ... */
	char *name;              /* owned; lower case, no trailing dot */
	uint64_t expires_ms;     /* dr_monotonic_ms() deadline */
	struct dns_answer ans;   /* owned */
};

struct dns_query;

/* One c-ares query in flight; freed by its c-ares callback and nothing else. */
struct dns_req {
	LIST_ENTRY(dns_req) entry;          /* dns.reqs, for coalescing */
	struct dns *d;
	int type;
	char *name;                         /* owned; lower case, no trailing dot */
	LIST_HEAD(, dns_query) waiters;     /* handles waiting for this answer */
};

enum dns_kind {
	DNS_KIND_MX,
	DNS_KIND_ADDR,
	DNS_KIND_PTR,
	DNS_KIND_TXT,
};

/* The caller's handle (see dns.h for its lifetime). */
struct dns_query {
	LIST_ENTRY(dns_query) entry;        /* dns.queries: every live handle */
	LIST_ENTRY(dns_query) wentry;       /* dns_req.waiters, while req != NULL */
	struct dns *d;
	struct dns_req *req;                /* the request waited on; NULL once answered */
	enum dns_kind kind;
	int family;                         /* DNS_KIND_ADDR: AF_INET or AF_INET6 */
	union {
		dns_mx_cb mx;
		dns_addr_cb addr;
		dns_ptr_cb ptr;
		dns_txt_cb txt;
	} cb;
	void *arg;
	struct event *deliver;              /* zero-delay event running the callback */
	struct dns_answer ans;              /* owned copy, valid once req == NULL */
};

/* A socket c-ares asked us to watch (ARES_OPT_SOCK_STATE_CB). */
struct dns_sock {
	LIST_ENTRY(dns_sock) entry;
	ares_socket_t fd;
	struct event *ev;                   /* persistent, for the flags last asked */
};

struct dns {
	struct event_base *base;            /* not owned */
	ares_channel channel;
	struct event *timer;                /* re-armed from ares_timeout() */
	bool destroying;                    /* dns_free() running: c-ares callbacks only free */
	LIST_HEAD(, dns_sock) socks;
	LIST_HEAD(, dns_req) reqs;
	LIST_HEAD(, dns_query) queries;
	LIST_HEAD(, dns_cache_entry) cache[DNS_CACHE_BUCKETS];
	size_t ncache;
};

const char *
dns_status_name(enum dns_status s)
{
	switch (s) {
	case DNS_OK:
		return "ok";
	case DNS_NODATA:
		return "nodata";
	case DNS_NXDOMAIN:
		return "nxdomain";
	case DNS_TEMPFAIL:
		return "tempfail";
	case DNS_BADNAME:
		return "badname";
	}
	return "unknown";
}

/* ---------------------------------------------------------------------------------- */
/* Raw answer walking (RFC 1035 4.1), for the TTLs c-ares' parsers do not give us.      */

struct dns_rr {
	int type;
	unsigned ttl;
	const unsigned char *rdata;   /* inside the message, so names there can be expanded */
	int rdlen;
};

enum dns_section {
	DNS_SECTION_ANSWER,
	DNS_SECTION_AUTHORITY,
};

/* Returns the offset just past the (possibly compressed) name at off, or -1. */
static int
dns_skip_name(const unsigned char *abuf, int alen, int off)
{
	while (off < alen) {
		unsigned len = abuf[off];

		if ((len & 0xc0) == 0xc0)
			return off + 2 <= alen ? off + 2 : -1;
		if ((len & 0xc0) != 0)
			return -1;              /* RFC 6891 extended label types: not ours */
		off++;
		if (len == 0)
			return off;
		off += (int)len;
	}
	return -1;
}

static unsigned
dns_get16(const unsigned char *p)
{
	return (unsigned)p[0] << 8 | p[1];
}

static uint32_t
dns_get32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* RFC 2181 8: a TTL with the top bit set is to be taken as zero. */
static unsigned
dns_ttl_value(uint32_t ttl)
{
	return (ttl & 0x80000000u) ? 0 : ttl;
}

typedef void (*dns_rr_fn)(enum dns_section sec, const struct dns_rr *rr, void *ctx);

/*
 * Calls fn for every record of the answer and authority sections. Returns 0, or -1 if
 * the message is truncated or malformed (records before the fault were reported).
 */
static int
dns_walk(const unsigned char *abuf, int alen, dns_rr_fn fn, void *ctx)
{
	if (abuf == NULL || alen < 12)
		return -1;
	unsigned qd = dns_get16(abuf + 4), an = dns_get16(abuf + 6), ns = dns_get16(abuf + 8);
	int off = 12;

	for (unsigned i = 0; i < qd; i++) {
		if ((off = dns_skip_name(abuf, alen, off)) < 0 || off + 4 > alen)
			return -1;
		off += 4;
	}
	for (unsigned i = 0; i < an + ns; i++) {
		struct dns_rr rr;

		if ((off = dns_skip_name(abuf, alen, off)) < 0 || off + 10 > alen)
			return -1;
		rr.type = (int)dns_get16(abuf + off);
		rr.ttl = dns_ttl_value(dns_get32(abuf + off + 4));
		rr.rdlen = (int)dns_get16(abuf + off + 8);
		off += 10;
		if (off + rr.rdlen > alen)
			return -1;
		rr.rdata = abuf + off;
		off += rr.rdlen;
		fn(i < an ? DNS_SECTION_ANSWER : DNS_SECTION_AUTHORITY, &rr, ctx);
	}
	return 0;
}

struct dns_min_ttl_ctx {
	int type;
	bool found;          /* a record of the type asked was seen */
	unsigned min;        /* over those and the CNAMEs leading to them */
};

static void
dns_min_ttl_rr(enum dns_section sec, const struct dns_rr *rr, void *arg)
{
	struct dns_min_ttl_ctx *c = arg;

	if (sec != DNS_SECTION_ANSWER || (rr->type != c->type && rr->type != ns_t_cname))
		return;
	if (rr->type == c->type)
		c->found = true;
	if (rr->ttl < c->min)
		c->min = rr->ttl;
}

unsigned
dns_answer_min_ttl(const unsigned char *abuf, int alen, int type)
{
	struct dns_min_ttl_ctx c = { type, false, UINT32_MAX };

	(void)dns_walk(abuf, alen, dns_min_ttl_rr, &c);
	return c.found ? c.min : 0;
}

struct dns_neg_ttl_ctx {
	const unsigned char *abuf;
	int alen;
	bool found;
	unsigned ttl;
};

static void
dns_neg_ttl_rr(enum dns_section sec, const struct dns_rr *rr, void *arg)
{
	struct dns_neg_ttl_ctx *c = arg;

	if (sec != DNS_SECTION_AUTHORITY || rr->type != ns_t_soa || c->found)
		return;
	/* SOA RDATA: MNAME, RNAME, then SERIAL REFRESH RETRY EXPIRE MINIMUM (RFC 1035 3.3.13). */
	int off = (int)(rr->rdata - c->abuf), end = off + rr->rdlen;

	if ((off = dns_skip_name(c->abuf, end, off)) < 0 ||
	    (off = dns_skip_name(c->abuf, end, off)) < 0 || off + 20 > end)
		return;
	unsigned minimum = dns_ttl_value(dns_get32(c->abuf + off + 16));
	c->found = true;
	c->ttl = minimum < rr->ttl ? minimum : rr->ttl;   /* RFC 2308 5 */
}

unsigned
dns_answer_negative_ttl(const unsigned char *abuf, int alen)
{
	struct dns_neg_ttl_ctx c = { abuf, alen, false, 0 };

	(void)dns_walk(abuf, alen, dns_neg_ttl_rr, &c);
	return c.ttl;
}

/* ---------------------------------------------------------------------------------- */
/* Answers.                                                                             */

static void
dns_answer_clear(struct dns_answer *a)
{
	for (size_t i = 0; i < a->nmx; i++)
		free(a->mx[i].host);
	free(a->mx);
	free(a->addrs);
	for (size_t i = 0; i < a->nnames; i++)
		free(a->names[i]);
	free(a->names);
	memset(a, 0, sizeof(*a));
}

static void
dns_answer_copy(struct dns_answer *dst, const struct dns_answer *src)
{
	*dst = *src;
	dst->mx = NULL;
	dst->addrs = NULL;
	dst->names = NULL;
	if (src->nmx > 0) {
		dst->mx = xcalloc(src->nmx, sizeof(*dst->mx));
		for (size_t i = 0; i < src->nmx; i++) {
			dst->mx[i].host = xstrdup(src->mx[i].host);
			dst->mx[i].preference = src->mx[i].preference;
		}
	}
	if (src->naddrs > 0) {
		dst->addrs = xcalloc(src->naddrs, sizeof(*dst->addrs));
		memcpy(dst->addrs, src->addrs, src->naddrs * sizeof(*dst->addrs));
	}
	if (src->nnames > 0) {
		dst->names = xcalloc(src->nnames, sizeof(*dst->names));
		for (size_t i = 0; i < src->nnames; i++)
			dst->names[i] = xstrdup(src->names[i]);
	}
}

static void
dns_answer_fail(struct dns_answer *a, enum dns_status status, const char *error)
{
	a->status = status;
	a->error = error;
}

/* Maps a c-ares failure (ares_query's callback status) onto our statuses. */
static void
dns_answer_from_ares_error(struct dns_answer *a, int status, const unsigned char *abuf,
    int alen)
{
	switch (status) {
	case ARES_ENODATA:
		dns_answer_fail(a, DNS_NODATA, "no records of the requested type");
		a->ttl = dns_answer_negative_ttl(abuf, alen);
		break;
	case ARES_ENOTFOUND:
		dns_answer_fail(a, DNS_NXDOMAIN, "domain not found (NXDOMAIN)");
		a->ttl = dns_answer_negative_ttl(abuf, alen);
		break;
	case ARES_EBADNAME:
		dns_answer_fail(a, DNS_BADNAME, "invalid domain name");
		break;
	case ARES_ESERVFAIL:
		dns_answer_fail(a, DNS_TEMPFAIL, "DNS server failure (SERVFAIL)");
		break;
	case ARES_EREFUSED:
		dns_answer_fail(a, DNS_TEMPFAIL, "DNS server refused the query (REFUSED)");
		break;
	case ARES_ETIMEOUT:
		dns_answer_fail(a, DNS_TEMPFAIL, "DNS query timed out");
		break;
	case ARES_ECONNREFUSED:
		/*
		 * c-ares 1.18 also ends here when every server answered SERVFAIL, REFUSED
		 * or NOTIMP: it drops such answers, tries the next server and then reports
		 * the query's initial status (later versions record ARES_ESERVFAIL). So do
		 * not claim the server was unreachable. fault_dns_servfail runs into this.
		 */
		dns_answer_fail(a, DNS_TEMPFAIL, "no DNS server answered (connection refused, "
		    "SERVFAIL or REFUSED)");
		break;
	case ARES_EBADRESP:
	case ARES_EFORMERR:
		dns_answer_fail(a, DNS_TEMPFAIL, "malformed DNS response");
		break;
	default:
		/* ares_strerror() returns static text. */
		dns_answer_fail(a, DNS_TEMPFAIL, ares_strerror(status));
		break;
	}
}

static void
dns_answer_parse_mx(struct dns_answer *a, const unsigned char *abuf, int alen)
{
	struct ares_mx_reply *list = NULL;
	int rc = ares_parse_mx_reply(abuf, alen, &list);

	if (rc != ARES_SUCCESS) {
		dns_answer_from_ares_error(a, rc == ARES_ENODATA ? rc : ARES_EBADRESP, abuf, alen);
		return;
	}
	size_t n = 0;
	for (struct ares_mx_reply *m = list; m != NULL; m = m->next)
		n++;
	if (n == 0) {
		/* A CNAME-only answer parses as an empty list: the name has no MX. */
		dns_answer_from_ares_error(a, ARES_ENODATA, abuf, alen);
		ares_free_data(list);
		return;
	}
	a->mx = xcalloc(n, sizeof(*a->mx));
	for (struct ares_mx_reply *m = list; m != NULL; m = m->next) {
		/* A null MX (RFC 7505, "0 .") arrives as host "": kept as such for mx_is_null. */
		a->mx[a->nmx].host = dr_strlower(xstrdup(m->host));
		a->mx[a->nmx].preference = m->priority;
		a->nmx++;
	}
	ares_free_data(list);
	a->status = DNS_OK;
	a->ttl = dns_answer_min_ttl(abuf, alen, ns_t_mx);
}

static void
dns_answer_parse_a(struct dns_answer *a, const unsigned char *abuf, int alen)
{
	/* Every A record needs at least 16 bytes, so this many slots hold them all. */
	int cap = alen / 16 + 1, n = cap;
	struct ares_addrttl *v = xcalloc((size_t)cap, sizeof(*v));
	int rc = ares_parse_a_reply(abuf, alen, NULL, v, &n);

	if (rc != ARES_SUCCESS || n <= 0) {
		dns_answer_from_ares_error(a, rc == ARES_SUCCESS ? ARES_ENODATA :
		    rc == ARES_ENODATA ? rc : ARES_EBADRESP, abuf, alen);
		free(v);
		return;
	}
	a->addrs = xcalloc((size_t)n, sizeof(*a->addrs));
	a->ttl = UINT32_MAX;
	for (int i = 0; i < n; i++) {
		netaddr_from_bytes(&a->addrs[i], AF_INET, &v[i].ipaddr, 0);
		unsigned ttl = v[i].ttl < 0 ? 0 : (unsigned)v[i].ttl;
		if (ttl < a->ttl)
			a->ttl = ttl;
	}
	a->naddrs = (size_t)n;
	a->status = DNS_OK;
	free(v);
}

static void
dns_answer_parse_aaaa(struct dns_answer *a, const unsigned char *abuf, int alen)
{
	/* Every AAAA record needs at least 28 bytes. */
	int cap = alen / 28 + 1, n = cap;
	struct ares_addr6ttl *v = xcalloc((size_t)cap, sizeof(*v));
	int rc = ares_parse_aaaa_reply(abuf, alen, NULL, v, &n);

	if (rc != ARES_SUCCESS || n <= 0) {
		dns_answer_from_ares_error(a, rc == ARES_SUCCESS ? ARES_ENODATA :
		    rc == ARES_ENODATA ? rc : ARES_EBADRESP, abuf, alen);
		free(v);
		return;
	}
	a->addrs = xcalloc((size_t)n, sizeof(*a->addrs));
	a->ttl = UINT32_MAX;
	for (int i = 0; i < n; i++) {
		netaddr_from_bytes(&a->addrs[i], AF_INET6, &v[i].ip6addr, 0);
		unsigned ttl = v[i].ttl < 0 ? 0 : (unsigned)v[i].ttl;
		if (ttl < a->ttl)
			a->ttl = ttl;
	}
	a->naddrs = (size_t)n;
	a->status = DNS_OK;
	free(v);
}

struct dns_ptr_ctx {
	const unsigned char *abuf;
	int alen;
	struct dns_answer *a;
	size_t cap;
	bool bad;
};

static void
dns_ptr_rr(enum dns_section sec, const struct dns_rr *rr, void *arg)
{
	struct dns_ptr_ctx *c = arg;
	char *name = NULL;
	long enclen;

	if (sec != DNS_SECTION_ANSWER || rr->type != ns_t_ptr)
		return;
	if (ares_expand_name(rr->rdata, c->abuf, c->alen, &name, &enclen) != ARES_SUCCESS) {
		c->bad = true;
		return;
	}
	c->a->names = xgrow(c->a->names, sizeof(*c->a->names), c->a->nnames + 1, &c->cap);
	c->a->names[c->a->nnames++] = dr_strlower(xstrdup(name));
	ares_free_string(name);
}

/*
 * PTR records are walked here rather than with ares_parse_ptr_reply(), which wants the
 * address back and folds names into a hostent; RFC 2317 CNAMEs are followed by the server.
 */
static void
dns_answer_parse_names(struct dns_answer *a, const unsigned char *abuf, int alen, int type,
    dns_rr_fn rr_fn)
{
	struct dns_ptr_ctx c = { abuf, alen, a, 0, false };

	if (dns_walk(abuf, alen, rr_fn, &c) < 0 || c.bad) {
		dns_answer_clear(a);
		dns_answer_from_ares_error(a, ARES_EBADRESP, abuf, alen);
		return;
	}
	if (a->nnames == 0) {
		dns_answer_from_ares_error(a, ARES_ENODATA, abuf, alen);
		return;
	}
	a->status = DNS_OK;
	a->ttl = dns_answer_min_ttl(abuf, alen, type);
}

static void
dns_answer_parse_ptr(struct dns_answer *a, const unsigned char *abuf, int alen)
{
	dns_answer_parse_names(a, abuf, alen, ns_t_ptr, dns_ptr_rr);
}

/* One TXT record: its character-strings (RFC 1035 3.3.14) joined, as DKIM reads them. */
static void
dns_txt_rr(enum dns_section sec, const struct dns_rr *rr, void *arg)
{
	struct dns_ptr_ctx *c = arg;
	char *text = xmalloc((size_t)rr->rdlen + 1);
	size_t n = 0;

	if (sec != DNS_SECTION_ANSWER || rr->type != ns_t_txt) {
		free(text);
		return;
	}
	for (int off = 0; off < rr->rdlen;) {
		int len = rr->rdata[off];

		if (off + 1 + len > rr->rdlen) {
			c->bad = true;
			free(text);
			return;
		}
		memcpy(text + n, rr->rdata + off + 1, (size_t)len);
		n += (size_t)len;
		off += 1 + len;
	}
	text[n] = '\0';
	c->a->names = xgrow(c->a->names, sizeof(*c->a->names), c->a->nnames + 1, &c->cap);
	c->a->names[c->a->nnames++] = text;
}

static void
dns_answer_parse_txt(struct dns_answer *a, const unsigned char *abuf, int alen)
{
	dns_answer_parse_names(a, abuf, alen, ns_t_txt, dns_txt_rr);
}

static void
dns_answer_build(struct dns_answer *a, int type, int status, const unsigned char *abuf,
    int alen)
{
	memset(a, 0, sizeof(*a));
	if (status != ARES_SUCCESS) {
		dns_answer_from_ares_error(a, status, abuf, alen);
		return;
	}
	switch (type) {
	case ns_t_mx:
		dns_answer_parse_mx(a, abuf, alen);
		break;
	case ns_t_a:
		dns_answer_parse_a(a, abuf, alen);
		break;
	case ns_t_aaaa:
		dns_answer_parse_aaaa(a, abuf, alen);
		break;
	case ns_t_txt:
		dns_answer_parse_txt(a, abuf, alen);
		break;
	default:
		dns_answer_parse_ptr(a, abuf, alen);
		break;
	}
}

enum dns_status
dns_answer_parse(int type, const unsigned char *abuf, int alen, size_t *nrecords,
    unsigned *ttl)
{
	struct dns_answer a, copy;
	enum dns_status st;

	dns_answer_build(&a, type, ARES_SUCCESS, abuf, alen);
	dns_answer_copy(&copy, &a);  /* what the cache stores */
	dns_answer_clear(&a);
	st = copy.status;
	*nrecords = copy.nmx + copy.naddrs + copy.nnames;
	*ttl = copy.ttl;
	dns_answer_clear(&copy);
	return st;
}

/* ---------------------------------------------------------------------------------- */
/* Cache: (type, name) -> answer, expiring by the monotonic clock.                      */

static unsigned
dns_cache_hash(int type, const char *name)
{
	uint32_t h = 2166136261u ^ (uint32_t)type;   /* FNV-1a */

	for (const unsigned char *p = (const unsigned char *)name; *p != '\0'; p++)
		h = (h ^ *p) * 16777619u;
	return h % DNS_CACHE_BUCKETS;
}

static void
dns_cache_entry_free(struct dns *d, struct dns_cache_entry *e)
{
	LIST_REMOVE(e, entry);
	d->ncache--;
	dns_answer_clear(&e->ans);
	free(e->name);
	free(e);
}

void
dns_flush_cache(struct dns *d)
{
	for (size_t i = 0; i < DNS_CACHE_BUCKETS; i++)
		while (!LIST_EMPTY(&d->cache[i]))
			dns_cache_entry_free(d, LIST_FIRST(&d->cache[i]));
}

static void
dns_cache_expire(struct dns *d, uint64_t now)
{
	for (size_t i = 0; i < DNS_CACHE_BUCKETS; i++) {
		struct dns_cache_entry *e = LIST_FIRST(&d->cache[i]), *next;

		for (; e != NULL; e = next) {
			next = LIST_NEXT(e, entry);
			if (e->expires_ms <= now)
				dns_cache_entry_free(d, e);
		}
	}
}

/* Returns the live entry for (type, name), dropping an expired one; NULL if none. */
static struct dns_cache_entry *
dns_cache_find(struct dns *d, int type, const char *name, uint64_t now)
{
	struct dns_cache_entry *e;

	LIST_FOREACH(e, &d->cache[dns_cache_hash(type, name)], entry) {
		if (e->type == type && strcmp(e->name, name) == 0) {
			if (e->expires_ms > now)
				return e;
			dns_cache_entry_free(d, e);
			return NULL;
		}
	}
	return NULL;
}

/* Keeps a copy of the answer for as long as it may be reused (see the top comment). */
static void
dns_cache_store(struct dns *d, int type, const char *name, const struct dns_answer *a)
{
	unsigned ttl;

	switch (a->status) {
	case DNS_OK:
		ttl = a->ttl < DNS_MAX_POSITIVE_TTL ? a->ttl : DNS_MAX_POSITIVE_TTL;
		break;
	case DNS_NODATA:
	case DNS_NXDOMAIN:
		ttl = a->ttl < DNS_MAX_NEGATIVE_TTL ? a->ttl : DNS_MAX_NEGATIVE_TTL;
		break;
	default:
		return;         /* failures are retried, not remembered */
	}
	if (ttl == 0)
		return;

	uint64_t now = dr_monotonic_ms();
	struct dns_cache_entry *e = dns_cache_find(d, type, name, now);

	if (e != NULL)
		dns_cache_entry_free(d, e);
	if (d->ncache >= DNS_CACHE_MAX) {
		dns_cache_expire(d, now);
		if (d->ncache >= DNS_CACHE_MAX)
			dns_flush_cache(d);
	}
	e = xcalloc(1, sizeof(*e));
	e->type = type;
	e->name = xstrdup(name);
	e->expires_ms = now + (uint64_t)ttl * 1000;
	dns_answer_copy(&e->ans, a);
	LIST_INSERT_HEAD(&d->cache[dns_cache_hash(type, name)], e, entry);
	d->ncache++;
}

/* ---------------------------------------------------------------------------------- */
/* c-ares on libevent (GUIDE 3).                                                        */

/* After every submit and every ares_process_fd(): or a lone query never times out. */
static void
dns_rearm(struct dns *d)
{
	struct timeval tv, *tvp = ares_timeout(d->channel, NULL, &tv);

	if (tvp == NULL)
		evtimer_del(d->timer);
	else
		evtimer_add(d->timer, tvp);
}

static void
dns_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct dns *d = arg;

	(void)fd;
	(void)what;
	ares_process_fd(d->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
	dns_rearm(d);
}

static void
dns_sock_cb(evutil_socket_t fd, short what, void *arg)
{
	struct dns *d = arg;

	/* May free this very event through dns_sock_state_cb(): touch nothing after. */
	ares_process_fd(d->channel, (what & EV_READ) ? fd : ARES_SOCKET_BAD,
	    (what & EV_WRITE) ? fd : ARES_SOCKET_BAD);
	dns_rearm(d);
}

/*
 * c-ares tells us which of its sockets to watch, and for what; (0, 0) comes just before
 * it closes one, and the event must go then: the next socket may reuse the fd number.
 */
static void
dns_sock_state_cb(void *data, ares_socket_t fd, int readable, int writable)
{
	struct dns *d = data;
	struct dns_sock *s;

	LIST_FOREACH(s, &d->socks, entry)
		if (s->fd == fd)
			break;
	if (s != NULL && s->ev != NULL) {
		event_free(s->ev);      /* never re-assign a pending event */
		s->ev = NULL;
	}
	if (!readable && !writable) {
		if (s != NULL) {
			LIST_REMOVE(s, entry);
			free(s);
		}
		return;
	}
	if (s == NULL) {
		s = xcalloc(1, sizeof(*s));
		s->fd = fd;
		LIST_INSERT_HEAD(&d->socks, s, entry);
	}
	short what = EV_PERSIST | (readable ? EV_READ : 0) | (writable ? EV_WRITE : 0);
	if ((s->ev = event_new(d->base, fd, what, dns_sock_cb, d)) == NULL ||
	    event_add(s->ev, NULL) != 0)
		log_error("dns: cannot watch resolver socket %d", (int)fd);
}

/* ---------------------------------------------------------------------------------- */
/* Handles and delivery.                                                                */

/* Runs the caller's callback from the loop; the handle is gone before it runs. */
static void
dns_deliver_cb(evutil_socket_t fd, short what, void *arg)
{
	struct dns_query *q = arg;
	struct dns_answer a = q->ans;     /* ownership moves here */
	enum dns_kind kind = q->kind;
	int family = q->family;
	void *cbarg = q->arg;

	(void)fd;
	(void)what;
	LIST_REMOVE(q, entry);
	event_free(q->deliver);

	switch (kind) {
	case DNS_KIND_MX: {
		dns_mx_cb cb = q->cb.mx;
		struct dns_mx_result r = { a.status, a.mx, a.nmx, a.ttl, a.error };

		free(q);
		cb(&r, cbarg);
		break;
	}
	case DNS_KIND_ADDR: {
		dns_addr_cb cb = q->cb.addr;
		struct dns_addr_result r = { a.status, family, a.addrs, a.naddrs, a.ttl, a.error };

		free(q);
		cb(&r, cbarg);
		break;
	}
	case DNS_KIND_PTR: {
		dns_ptr_cb cb = q->cb.ptr;
		struct dns_ptr_result r = { a.status, a.names, a.nnames, a.error };

		free(q);
		cb(&r, cbarg);
		break;
	}
	case DNS_KIND_TXT: {
		dns_txt_cb cb = q->cb.txt;
		struct dns_txt_result r = { a.status, a.names, a.nnames, a.error };

		free(q);
		cb(&r, cbarg);
		break;
	}
	}
	dns_answer_clear(&a);
}

static void
dns_query_schedule(struct dns_query *q)
{
	static const struct timeval zero = { 0, 0 };

	evtimer_add(q->deliver, &zero);
}

static void
dns_req_free(struct dns_req *r)
{
	LIST_REMOVE(r, entry);
	free(r->name);
	free(r);
}

/* The c-ares callback: may run inside ares_query() or ares_process_fd(), so it only
 * parses, caches and schedules deliveries. */
static void
dns_req_done(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
	struct dns_req *r = arg;
	struct dns *d = r->d;
	struct dns_query *q;
	struct dns_answer a;

	(void)timeouts;
	if (status == ARES_EDESTRUCTION || d->destroying) {
		dns_req_free(r);        /* dns_free() already dropped every handle */
		return;
	}
	dns_answer_build(&a, r->type, status, abuf, alen);
	log_debug("dns: %s type %d: %s%s%s", r->name, r->type, dns_status_name(a.status),
	    a.error ? ", " : "", a.error ? a.error : "");
	dns_cache_store(d, r->type, r->name, &a);
	while ((q = LIST_FIRST(&r->waiters)) != NULL) {
		LIST_REMOVE(q, wentry);
		q->req = NULL;
		dns_answer_copy(&q->ans, &a);
		dns_query_schedule(q);
	}
	dns_answer_clear(&a);
	dns_req_free(r);
}

/*
 * Lower-cases name and drops one trailing dot into a new string (the cache key);
 * NULL when it cannot be a domain name (RFC 1035 2.3.4 lengths, empty labels).
 */
static char *
dns_name_key(const char *name)
{
	size_t len = strlen(name);

	if (len > 0 && name[len - 1] == '.')
		len--;
	if (len == 0 || len > DNS_MAX_NAME)
		return NULL;
	size_t label = 0;
	for (size_t i = 0; i < len; i++) {
		if (name[i] == '.') {
			if (label == 0)
				return NULL;
			label = 0;
		} else if (++label > DNS_MAX_LABEL) {
			return NULL;
		}
	}
	if (label == 0)
		return NULL;
	return dr_strlower(xstrndup(name, len));
}

static struct dns_query *
dns_query_new(struct dns *d, enum dns_kind kind, void *arg)
{
	struct dns_query *q = xcalloc(1, sizeof(*q));

	q->d = d;
	q->kind = kind;
	q->arg = arg;
	if ((q->deliver = evtimer_new(d->base, dns_deliver_cb, q)) == NULL) {
		log_error("dns: cannot create delivery event");
		abort();        /* only out of memory makes libevent fail here */
	}
	LIST_INSERT_HEAD(&d->queries, q, entry);
	return q;
}

/* Answers q from the cache, from a request in flight, or from a new one. */
static struct dns_query *
dns_submit(struct dns_query *q, int type, const char *name)
{
	struct dns *d = q->d;
	char *key = dns_name_key(name);

	if (key == NULL) {
		dns_answer_fail(&q->ans, DNS_BADNAME, "invalid domain name");
		dns_query_schedule(q);
		return q;
	}

	uint64_t now = dr_monotonic_ms();
	struct dns_cache_entry *e = dns_cache_find(d, type, key, now);
	if (e != NULL) {
		dns_answer_copy(&q->ans, &e->ans);
		q->ans.ttl = (unsigned)((e->expires_ms - now + 999) / 1000);
		dns_query_schedule(q);
		free(key);
		return q;
	}

	struct dns_req *r;
	LIST_FOREACH(r, &d->reqs, entry)
		if (r->type == type && strcmp(r->name, key) == 0)
			break;
	if (r != NULL) {
		q->req = r;
		LIST_INSERT_HEAD(&r->waiters, q, wentry);
		free(key);
		return q;
	}

	r = xcalloc(1, sizeof(*r));
	r->d = d;
	r->type = type;
	r->name = key;
	LIST_INIT(&r->waiters);
	LIST_INSERT_HEAD(&d->reqs, r, entry);
	q->req = r;
	LIST_INSERT_HEAD(&r->waiters, q, wentry);

	/* The trailing dot makes the name absolute: no search list (GUIDE 3). */
	char *abs = xasprintf("%s.", key);
	ares_query(d->channel, abs, ns_c_in, type, dns_req_done, r);   /* r may be gone now */
	free(abs);
	dns_rearm(d);
	return q;
}

struct dns_query *
dns_query_mx(struct dns *d, const char *domain, dns_mx_cb cb, void *arg)
{
	struct dns_query *q = dns_query_new(d, DNS_KIND_MX, arg);

	q->cb.mx = cb;
	return dns_submit(q, ns_t_mx, domain);
}

struct dns_query *
dns_query_addr(struct dns *d, const char *host, int family, dns_addr_cb cb, void *arg)
{
	struct dns_query *q = dns_query_new(d, DNS_KIND_ADDR, arg);

	q->cb.addr = cb;
	q->family = family;
	if (family != AF_INET && family != AF_INET6) {
		dns_answer_fail(&q->ans, DNS_BADNAME, "unsupported address family");
		dns_query_schedule(q);
		return q;
	}
	return dns_submit(q, family == AF_INET ? ns_t_a : ns_t_aaaa, host);
}

/* The reverse name of RFC 1035 3.5 (in-addr.arpa) or RFC 3596 2.5 (ip6.arpa). */
static char *
dns_reverse_name(const struct netaddr *addr)
{
	struct netaddr a = *addr;

	netaddr_unmap_v4(&a);
	if (netaddr_family(&a) == AF_INET) {
		const unsigned char *b =
		    (const unsigned char *)&((const struct sockaddr_in *)&a.ss)->sin_addr;
		return xasprintf("%u.%u.%u.%u.in-addr.arpa", b[3], b[2], b[1], b[0]);
	}
	if (netaddr_family(&a) != AF_INET6)
		return NULL;

	static const char hex[] = "0123456789abcdef";
	const unsigned char *b =
	    (const unsigned char *)&((const struct sockaddr_in6 *)&a.ss)->sin6_addr;
	char buf[16 * 4 + sizeof("ip6.arpa")], *p = buf;

	for (int i = 15; i >= 0; i--) {
		*p++ = hex[b[i] & 0xf];
		*p++ = '.';
		*p++ = hex[b[i] >> 4];
		*p++ = '.';
	}
	memcpy(p, "ip6.arpa", sizeof("ip6.arpa"));
	return xstrdup(buf);
}

struct dns_query *
dns_query_ptr(struct dns *d, const struct netaddr *a, dns_ptr_cb cb, void *arg)
{
	struct dns_query *q = dns_query_new(d, DNS_KIND_PTR, arg);
	char *name = dns_reverse_name(a);

	q->cb.ptr = cb;
	if (name == NULL) {
		dns_answer_fail(&q->ans, DNS_BADNAME, "unsupported address family");
		dns_query_schedule(q);
		return q;
	}
	dns_submit(q, ns_t_ptr, name);
	free(name);
	return q;
}

struct dns_query *
dns_query_txt(struct dns *d, const char *name, dns_txt_cb cb, void *arg)
{
	struct dns_query *q = dns_query_new(d, DNS_KIND_TXT, arg);

	q->cb.txt = cb;
	return dns_submit(q, ns_t_txt, name);
}

void
dns_cancel(struct dns_query *q)
{
	if (q == NULL)
		return;
	/* A request left without waiters still completes and feeds the cache. */
	if (q->req != NULL)
		LIST_REMOVE(q, wentry);
	LIST_REMOVE(q, entry);
	event_free(q->deliver);
	dns_answer_clear(&q->ans);
	free(q);
}

/* ---------------------------------------------------------------------------------- */
/* Life cycle.                                                                          */

/* Turns our "ADDR", "ADDR:PORT", "[V6]:PORT" list into c-ares' CSV. 0 or -1. */
static int
dns_servers_csv(const struct dns_config *cfg, char **csv)
{
	size_t len = 0, cap = 0;
	char *out = NULL;

	for (size_t i = 0; i < cfg->nservers; i++) {
		struct netaddr a;
		char buf[NETADDR_STRLEN];

		if (netaddr_parse_hostport(&a, cfg->servers[i], DNS_DEFAULT_PORT) < 0) {
			log_error("dns: invalid server address \"%s\"", cfg->servers[i]);
			free(out);
			return -1;
		}
		netaddr_format_hostport(&a, buf, sizeof(buf));
		size_t n = strlen(buf);
		out = xgrow(out, 1, len + n + 2, &cap);
		if (len > 0)
			out[len++] = ',';
		memcpy(out + len, buf, n + 1);
		len += n;
	}
	*csv = out;
	return 0;
}

struct dns *
dns_new(struct event_base *base, const struct dns_config *cfg, const char **error)
{
	static const struct dns_config defaults = { NULL, 0, 0, 0 };
	struct ares_options opts;
	char *csv = NULL;
	int rc;

	if (cfg == NULL)
		cfg = &defaults;
	if (cfg->nservers > 0 && dns_servers_csv(cfg, &csv) < 0) {
		*error = "invalid DNS server address";
		return NULL;
	}
	if ((rc = ares_library_init(ARES_LIB_INIT_ALL)) != ARES_SUCCESS) {
		log_error("dns: ares_library_init: %s", ares_strerror(rc));
		*error = "cannot initialise c-ares";
		free(csv);
		return NULL;
	}

	struct dns *d = xcalloc(1, sizeof(*d));
	d->base = base;
	LIST_INIT(&d->socks);
	LIST_INIT(&d->reqs);
	LIST_INIT(&d->queries);
	for (size_t i = 0; i < DNS_CACHE_BUCKETS; i++)
		LIST_INIT(&d->cache[i]);

	memset(&opts, 0, sizeof(opts));
	opts.sock_state_cb = dns_sock_state_cb;
	opts.sock_state_cb_data = d;
	opts.timeout = cfg->timeout_ms ? (int)cfg->timeout_ms : DNS_DEFAULT_TIMEOUT_MS;
	opts.tries = cfg->tries ? (int)cfg->tries : DNS_DEFAULT_TRIES;
	opts.lookups = (char *)"b";     /* DNS only, never /etc/hosts (GUIDE 3) */
	rc = ares_init_options(&d->channel, &opts, ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS |
	    ARES_OPT_TRIES | ARES_OPT_LOOKUPS);
	if (rc != ARES_SUCCESS) {
		log_error("dns: ares_init_options: %s", ares_strerror(rc));
		*error = "cannot initialise the resolver";
		goto fail;
	}
	/* Before any query: c-ares refuses to change servers with queries outstanding. */
	if (csv != NULL && (rc = ares_set_servers_ports_csv(d->channel, csv)) != ARES_SUCCESS) {
		log_error("dns: ares_set_servers_ports_csv(%s): %s", csv, ares_strerror(rc));
		*error = "cannot set the DNS servers";
		goto fail;
	}
	if ((d->timer = evtimer_new(base, dns_timer_cb, d)) == NULL) {
		*error = "cannot create the resolver timer";
		goto fail;
	}
	free(csv);
	return d;

fail:
	if (d->channel != NULL)
		ares_destroy(d->channel);
	free(d);
	free(csv);
	ares_library_cleanup();
	return NULL;
}

void
dns_free(struct dns *d)
{
	if (d == NULL)
		return;
	d->destroying = true;
	while (!LIST_EMPTY(&d->queries))
		dns_cancel(LIST_FIRST(&d->queries));
	/* Runs dns_req_done(ARES_EDESTRUCTION) for each request: they only free themselves. */
	ares_destroy(d->channel);
	while (!LIST_EMPTY(&d->socks)) {
		struct dns_sock *s = LIST_FIRST(&d->socks);

		if (s->ev != NULL)
			event_free(s->ev);
		LIST_REMOVE(s, entry);
		free(s);
	}
	event_free(d->timer);
	dns_flush_cache(d);
	free(d);
	ares_library_cleanup();
}
