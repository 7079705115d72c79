/*
 * dns: asynchronous DNS with c-ares driven by our libevent loop (no resolver thread, no
 * blocking call). Offers what delivery needs: MX of a domain, A and AAAA of a host
 * (queried separately so each family's outcome is known), PTR of an address, and TXT
 * (for the DKIM key check). Answers are
 * cached up to their TTL (negative answers up to the SOA minimum, capped).
 *
 * Ownership: a dns_query handle belongs to the caller until its callback runs or the
 * caller cancels it; after either, the handle is gone. Callbacks always run from the
 * event loop (a zero-delay event), never inside the submitting call.
 */
#ifndef DR_DNS_H
#define DR_DNS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "netaddr.h"

struct event_base;
struct dns;
struct dns_query;

enum dns_status {
	DNS_OK = 0,        /* answer with at least one record */
	DNS_NODATA,        /* the name exists, no records of this type (ENODATA) */
	DNS_NXDOMAIN,      /* the name does not exist: permanent */
	DNS_TEMPFAIL,      /* SERVFAIL, REFUSED, timeout, no server reachable: try later */
	DNS_BADNAME,       /* syntactically invalid name: permanent */
};

struct dns_mx {
	char *host;        /* owned, lower case; "" for a null MX (RFC 7505) */
	unsigned preference;
};

struct dns_mx_result {
	enum dns_status status;
	struct dns_mx *mx;   /* as received (unsorted); owned by the result */
	size_t nmx;
	unsigned ttl;
	const char *error;   /* human-readable reason when status != DNS_OK, static */
};

struct dns_addr_result {
	enum dns_status status;
	int family;          /* AF_INET or AF_INET6: what was asked */
	struct netaddr *addrs; /* owned by the result; port 0 */
	size_t naddrs;
	unsigned ttl;
	const char *error;
};

struct dns_ptr_result {
	enum dns_status status;
	char **names;        /* owned by the result */
	size_t nnames;
	const char *error;
};

struct dns_txt_result {
	enum dns_status status;
	char **texts;        /* one per TXT record, its strings joined; owned by the result */
	size_t ntexts;
	const char *error;
};

struct dns_config {
	const char *const *servers; /* "ADDR", "ADDR:PORT", "[V6]:PORT"; NULL/0 = resolv.conf */
	size_t nservers;
	unsigned timeout_ms;
	unsigned tries;
};

/* Results are valid only during the callback; copy what you keep. */
typedef void (*dns_mx_cb)(const struct dns_mx_result *r, void *arg);
typedef void (*dns_addr_cb)(const struct dns_addr_result *r, void *arg);
typedef void (*dns_ptr_cb)(const struct dns_ptr_result *r, void *arg);
typedef void (*dns_txt_cb)(const struct dns_txt_result *r, void *arg);

/* NULL on failure, with *error set to a static reason. */
struct dns *dns_new(struct event_base *base, const struct dns_config *cfg, const char **error);
/* Cancels everything outstanding (no callbacks run afterwards) and frees. */
void dns_free(struct dns *d);
/* Drops the cache (tests; reload). */
void dns_flush_cache(struct dns *d);

/* name without trailing dot is fine: it is made absolute (no search list). */
struct dns_query *dns_query_mx(struct dns *d, const char *domain, dns_mx_cb cb, void *arg);
struct dns_query *dns_query_addr(struct dns *d, const char *host, int family, dns_addr_cb cb,
    void *arg);
struct dns_query *dns_query_ptr(struct dns *d, const struct netaddr *a, dns_ptr_cb cb, void *arg);
/* TXT records of name (dualrelayd checks published DKIM keys with it). */
struct dns_query *dns_query_txt(struct dns *d, const char *name, dns_txt_cb cb, void *arg);
/* The callback will not run; safe to call until the callback has started. */
void dns_cancel(struct dns_query *q);

const char *dns_status_name(enum dns_status s);

/*
 * Pure helpers, exposed for unit tests. dns_answer_min_ttl: the minimum TTL over the
 * answer records of the given type and the CNAMEs in the answer section (the chain that
 * led to them), 0 if there is no record of that type. dns_answer_negative_ttl: the
 * negative-caching TTL of RFC 2308 section 5, min(SOA TTL, SOA MINIMUM) of the SOA in
 * the authority section, 0 if there is none. Both uncapped; TTLs with the top bit set
 * count as 0 (RFC 2181 8); a malformed message yields what was read before the fault.
 */
unsigned dns_answer_min_ttl(const unsigned char *abuf, int alen, int type);
unsigned dns_answer_negative_ttl(const unsigned char *abuf, int alen);
/*
 * Parses abuf as the answer to a successful query of type (ns_t_mx, ns_t_a, ns_t_aaaa,
 * ns_t_ptr), through the code live answers take (and the cache's copy), then discards
 * the result: returns its status and sets *nrecords and *ttl. For tests and the fuzzer.
 */
enum dns_status dns_answer_parse(int type, const unsigned char *abuf, int alen,
    size_t *nrecords, unsigned *ttl);

#endif
