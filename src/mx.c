/*
 * mx: from DNS answers to the ordered list of addresses delivery dials (see mx.h).
 * Pure: no I/O of its own; "is this address ours" is asked through the caller's
 * callback. The plan owns copies of everything it holds (host names included), so the
 * DNS results it was built from may go away; mx_plan_clear() frees it all.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "mx.h"
#include "util.h"

static int
mx_cmp_preference(const void *a, const void *b)
{
	const struct dns_mx *x = a, *y = b;

	return (x->preference > y->preference) - (x->preference < y->preference);
}

/* Fisher-Yates over mx[0..n). */
static void
mx_shuffle(struct dns_mx *mx, size_t n)
{
	for (size_t i = n; i > 1; i--) {
		size_t j = dr_random((uint32_t)i);
		struct dns_mx t = mx[i - 1];

		mx[i - 1] = mx[j];
		mx[j] = t;
	}
}

/*
 * RFC 5321 5.1: lowest preference first; hosts of equal preference are tried in a
 * random order, so that senders spread their load over them.
 */
void
mx_sort(struct dns_mx *mx, size_t n)
{
	if (n < 2)
		return;
	qsort(mx, n, sizeof(*mx), mx_cmp_preference);
	for (size_t start = 0, end; start < n; start = end) {
		for (end = start + 1; end < n && mx[end].preference == mx[start].preference; end++)
			;
		mx_shuffle(mx + start, end - start);
	}
}

bool
mx_is_null(const struct dns_mx *mx, size_t n)
{
	/* RFC 7505 3: a null MX is the only MX of its domain, with the root as exchange. */
	return n == 1 && mx[0].host != NULL &&
	    (mx[0].host[0] == '\0' || strcmp(mx[0].host, ".") == 0);
}

void
mx_plan_init(struct mx_plan *p)
{
	memset(p, 0, sizeof(*p));
}

void
mx_plan_clear(struct mx_plan *p)
{
	for (size_t i = 0; i < p->ncand; i++)
		free(p->cand[i].host);
	free(p->cand);
	for (size_t i = 0; i < p->nskipped; i++)
		free(p->skipped[i].host);
	free(p->skipped);
	mx_plan_init(p);
}

int
mx_preferred_family(enum conf_family policy)
{
	switch (policy) {
	case CONF_FAMILY_IPV4:
	case CONF_FAMILY_PREFER_IPV4:
		return AF_INET;
	case CONF_FAMILY_ANY:           /* RFC 6724 puts global IPv6 before IPv4 */
	case CONF_FAMILY_IPV6:
	case CONF_FAMILY_PREFER_IPV6:
		break;
	}
	return AF_INET6;
}

static bool
mx_policy_allows(enum conf_family policy, int family)
{
	if (policy == CONF_FAMILY_IPV4)
		return family == AF_INET;
	if (policy == CONF_FAMILY_IPV6)
		return family == AF_INET6;
	return true;
}

static void
mx_plan_skip(struct mx_plan *p, const char *host, const struct netaddr *a, const char *why)
{
	p->skipped = xgrow(p->skipped, sizeof(*p->skipped), p->nskipped + 1, &p->skipped_cap);
	struct mx_skipped *s = &p->skipped[p->nskipped++];

	s->host = xstrdup(host);
	s->addr = *a;
	s->why = why;
}

static void
mx_plan_append(struct mx_plan *p, const char *host, unsigned preference,
    const struct netaddr *a)
{
	p->cand = xgrow(p->cand, sizeof(*p->cand), p->ncand + 1, &p->cand_cap);
	struct mx_candidate *c = &p->cand[p->ncand++];

	c->host = xstrdup(host);
	c->preference = preference;
	c->addr = *a;
}

const char *
mx_addr_unusable(const struct netaddr *a, bool allow_local, mx_is_local_fn is_local,
    void *is_local_ctx)
{
	enum netaddr_class c = netaddr_classify(a);

	if (c != NETADDR_OK)
		return netaddr_class_name(c);
	if (!allow_local && is_local != NULL && is_local(is_local_ctx, a))
		return "address of this host (mail loop)";
	return NULL;
}

bool
mx_any_usable(const struct netaddr *a, size_t n, enum conf_family policy, bool allow_local,
    mx_is_local_fn is_local, void *is_local_ctx)
{
	for (size_t i = 0; i < n; i++)
		if (mx_policy_allows(policy, netaddr_family(&a[i])) &&
		    mx_addr_unusable(&a[i], allow_local, is_local, is_local_ctx) == NULL)
			return true;
	return false;
}

/*
 * Copies the dialable addresses of one family into keep[] (with the port set) and
 * records the others in the plan's skipped list. Returns how many were kept.
 */
static size_t
mx_filter(struct mx_plan *p, const char *host, const struct netaddr *in, size_t n,
    uint16_t port, bool allow_local, mx_is_local_fn is_local, void *is_local_ctx,
    struct netaddr *keep)
{
	size_t nkeep = 0;

	for (size_t i = 0; i < n; i++) {
		struct netaddr a = in[i];
		const char *why;

		netaddr_set_port(&a, port);
		why = mx_addr_unusable(&a, allow_local, is_local, is_local_ctx);
		if (why != NULL)
			mx_plan_skip(p, host, &a, why);
		else
			keep[nkeep++] = a;
	}
	return nkeep;
}

void
mx_plan_add_host(struct mx_plan *p, const char *host, unsigned preference,
    const struct netaddr *v4, size_t nv4, const struct netaddr *v6, size_t nv6,
    enum conf_family policy, uint16_t port, bool allow_local, mx_is_local_fn is_local,
    void *is_local_ctx)
{
	struct netaddr *k4 = NULL, *k6 = NULL;
	size_t nk4 = 0, nk6 = 0;

	if (mx_policy_allows(policy, AF_INET) && nv4 > 0) {
		k4 = xcalloc(nv4, sizeof(*k4));
		nk4 = mx_filter(p, host, v4, nv4, port, allow_local, is_local, is_local_ctx,
		    k4);
	}
	if (mx_policy_allows(policy, AF_INET6) && nv6 > 0) {
		k6 = xcalloc(nv6, sizeof(*k6));
		nk6 = mx_filter(p, host, v6, nv6, port, allow_local, is_local, is_local_ctx,
		    k6);
	}

	/* RFC 8305 4: alternate families, the preferred one first, the rest at the end. */
	bool v6first = mx_preferred_family(policy) == AF_INET6;
	const struct netaddr *first = v6first ? k6 : k4, *second = v6first ? k4 : k6;
	size_t nfirst = v6first ? nk6 : nk4, nsecond = v6first ? nk4 : nk6;

	for (size_t i = 0; i < nfirst || i < nsecond; i++) {
		if (i < nfirst)
			mx_plan_append(p, host, preference, &first[i]);
		if (i < nsecond)
			mx_plan_append(p, host, preference, &second[i]);
	}
	free(k4);
	free(k6);
}
