/*
 * mx: turning DNS answers into an ordered list of connection candidates (pure, no I/O).
 * RFC 5321 5.1: MX hosts by preference, equal preferences in random order, implicit MX
 * when there is none, null MX (RFC 7505) is a permanent failure. Then, per host, the
 * addresses that may be dialled, with the ones that must not (link-local, loopback, ...)
 * set aside with the reason, ordered by family per the transport's policy.
 */
#ifndef DR_MX_H
#define DR_MX_H

#include <stdbool.h>
#include <stddef.h>

#include "conf.h"
#include "dns.h"
#include "netaddr.h"

/* Sorts by preference; shuffles runs of equal preference (dr_random). In place. */
void mx_sort(struct dns_mx *mx, size_t n);
/* True when the list is exactly one MX with host "" (or "."): RFC 7505 null MX. */
bool mx_is_null(const struct dns_mx *mx, size_t n);

/* One address to try, in order. */
struct mx_candidate {
	char *host;          /* owned; the MX host name (or relay name) it belongs to */
	unsigned preference;
	struct netaddr addr; /* with the destination port set */
};

struct mx_skipped {
	char *host;          /* owned */
	struct netaddr addr;
	const char *why;     /* static, e.g. "link-local address", "address of this host" */
};

struct mx_plan {
	struct mx_candidate *cand;
	size_t ncand, cand_cap;
	struct mx_skipped *skipped;
	size_t nskipped, skipped_cap;
};

void mx_plan_init(struct mx_plan *p);
void mx_plan_clear(struct mx_plan *p);

/*
 * Adds one MX host's addresses (v4 and v6 lists, either may be empty) to the plan,
 * after any hosts added before (so callers add hosts in preference order). Unusable
 * addresses are moved to skipped; with allow_local false, addresses of this host
 * (is_local callback with its is_local_ctx, may be NULL) are skipped too (mail loop),
 * the callback being asked once per otherwise usable address. Families the policy
 * excludes are left out silently. The kept addresses are interleaved by family,
 * starting with the preferred one (RFC 8305 4).
 */
typedef bool (*mx_is_local_fn)(void *ctx, const struct netaddr *a);
void mx_plan_add_host(struct mx_plan *p, const char *host, unsigned preference,
    const struct netaddr *v4, size_t nv4, const struct netaddr *v6, size_t nv6,
    enum conf_family policy, uint16_t port, bool allow_local, mx_is_local_fn is_local,
    void *is_local_ctx);

/*
 * Why the plan would not dial a: a static reason ("link-local address", "address of this
 * host (mail loop)", ...), or NULL when it may be dialled. The same test
 * mx_plan_add_host() applies (families aside), so callers deciding whether answers gave
 * anything worth dialling (RFC 8305 3 in nexthop.c) agree with the plan they will get.
 */
const char *mx_addr_unusable(const struct netaddr *a, bool allow_local,
    mx_is_local_fn is_local, void *is_local_ctx);
/* True when the plan would keep at least one of a[0..n) under policy (see above). */
bool mx_any_usable(const struct netaddr *a, size_t n, enum conf_family policy,
    bool allow_local, mx_is_local_fn is_local, void *is_local_ctx);

/* The family tried first under a policy (AF_INET6 for "any", as RFC 6724). */
int mx_preferred_family(enum conf_family policy);

#endif
