/*
 * nexthop: domain -> ordered candidate addresses (see nexthop.h). Owns the DNS queries
 * of one resolution and the plan they produce.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>

#include "health.h"
#include "localaddr.h"
#include "log.h"
#include "nexthop.h"
#include "util.h"

struct nexthop_lookup {
	struct nexthop *n;       /* back pointer for DNS callbacks */
	size_t host;             /* index into n->hosts */
	int slot;                /* 0: A, 1: AAAA */
};

struct nexthop {
	struct event_base *base;
	struct dns *dns;
	struct health *health;
	struct localaddr_cache *local; /* borrowed, may be NULL (ask the kernel each time) */
	double plan_time;        /* loop time of the latest local-address questions (the
	                          * plan, or whether answers are usable), for local's TTL */
	const struct conf *conf;
	const struct conf_transport *t;
	char *domain;            /* owned, lower case */
	char *id;                /* owned, for logs */
	nexthop_cb cb;
	void *arg;

	struct dns_query *mx_query;
	struct nexthop_host *hosts;    /* owned */
	size_t nhosts;
	struct dns_query **queries;    /* [host * 2 + slot] */
	struct nexthop_lookup *lookups;/* [host * 2 + slot] */
	struct netaddr **haddrs;       /* [host * 2 + slot] owned copies */
	size_t *hnaddrs;               /* [host * 2 + slot] */
	size_t pending[2];             /* outstanding lookups per family */
	int preferred_slot;
	const char *mx_source;

	struct mx_plan plan;
	bool *avoided;
	const char **avoid_why;
	bool built;
	struct event *delay_ev;        /* resolution delay, then report */
	struct event *report_ev;
	struct nexthop_result result;
	char *reason;                  /* owned text behind result.reason */
};

static int
slot_family(int slot)
{
	return slot ? AF_INET6 : AF_INET;
}

enum conf_family
nexthop_policy(const struct conf *conf, const struct conf_transport *t)
{
	if (t->family == CONF_FAMILY_ANY && conf->prefer_family != CONF_FAMILY_ANY)
		return conf->prefer_family;
	return t->family;
}

static bool
allows(const struct nexthop *n, int slot)
{
	enum conf_family f = n->t->family;
	if (f == CONF_FAMILY_IPV4)
		return slot == 0;
	if (f == CONF_FAMILY_IPV6)
		return slot == 1;
	return true;
}

static void
report(struct nexthop *n, enum nexthop_status st, const char *dsn, char *reason)
{
	n->built = true;
	n->result.status = st;
	dr_strlcpy(n->result.dsn, dsn ? dsn : "", sizeof(n->result.dsn));
	free(n->reason);
	n->reason = reason;
	n->result.reason = reason;
	event_active(n->report_ev, 0, 0);
}

static void
on_report(evutil_socket_t fd, short what, void *arg)
{
	struct nexthop *n = arg;
	(void)fd;
	(void)what;
	n->result.mx_source = n->mx_source;
	n->result.plan = &n->plan;
	n->result.avoided = n->avoided;
	n->result.avoid_why = n->avoid_why;
	n->result.hosts = n->hosts;
	n->result.nhosts = n->nhosts;
	n->cb(n, &n->result, n->arg); /* last action: the owner may free us */
}

/* ---- Building the plan ---- */

static void
cancel_lookups(struct nexthop *n)
{
	for (size_t i = 0; i < n->nhosts * 2; i++)
		if (n->queries[i]) {
			dns_cancel(n->queries[i]);
			n->queries[i] = NULL;
		}
	if (n->delay_ev)
		event_del(n->delay_ev);
}

/* Health: move candidates of avoided families behind the others, keeping order. */
static void
apply_health(struct nexthop *n)
{
	size_t nc = n->plan.ncand;
	n->avoided = xcalloc(nc ? nc : 1, sizeof(bool));
	n->avoid_why = xcalloc(nc ? nc : 1, sizeof(char *));
	if (n->health == NULL || nc == 0)
		return;
	time_t now = time(NULL);
	struct mx_candidate *sorted = xcalloc(nc, sizeof(*sorted));
	bool *av = xcalloc(nc, sizeof(bool));
	const char **why = xcalloc(nc, sizeof(char *));
	for (size_t i = 0; i < nc; i++)
		av[i] = health_avoid(n->health, n->t->name, n->plan.cand[i].host,
		    netaddr_family(&n->plan.cand[i].addr), now, &why[i]);
	size_t k = 0;
	for (int pass = 0; pass < 2; pass++)
		for (size_t i = 0; i < nc; i++)
			if (av[i] == (pass == 1)) {
				sorted[k] = n->plan.cand[i];
				n->avoided[k] = av[i];
				n->avoid_why[k] = why[i];
				k++;
			}
	memcpy(n->plan.cand, sorted, nc * sizeof(*sorted));
	for (size_t i = 0; i < nc; i++)
		if (n->avoided[i]) {
			char a[NETADDR_STRLEN];
			log_info("%s: %s[%s] %s tried last: %s", n->id, n->plan.cand[i].host,
			    netaddr_ntop(&n->plan.cand[i].addr, a, sizeof(a)),
			    netaddr_family_name(netaddr_family(&n->plan.cand[i].addr)), n->avoid_why[i]);
		}
	free(sorted);
	free(av);
	free(why);
}

/* mx_is_local_fn for the plan: the shared snapshot when there is one. */
static bool
is_local(void *ctx, const struct netaddr *a)
{
	struct nexthop *n = ctx;

	if (n->local == NULL)
		return netaddr_is_local(a);
	return localaddr_is_local(n->local, a, n->plan_time);
}

/* Wall clock as the event loop cached it for this turn (TTL checks need no more). */
static double
loop_time(struct event_base *base)
{
	struct timeval tv;

	if (event_base_gettimeofday_cached(base, &tv) == -1)
		return dr_now();
	return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

static void
build_plan(struct nexthop *n)
{
	bool tempfail = false;
	bool explicit_relay = n->t->relay_host != NULL;
	enum conf_family policy = nexthop_policy(n->conf, n->t);

	cancel_lookups(n);
	n->plan_time = loop_time(n->base);
	for (size_t h = 0; h < n->nhosts; h++) {
		struct nexthop_host *host = &n->hosts[h];
		for (int s = 0; s < 2; s++)
			if (host->asked[s] && host->answered[s] && host->status[s] == DNS_TEMPFAIL)
				tempfail = true;
		mx_plan_add_host(&n->plan, host->name, host->preference, n->haddrs[h * 2],
		    n->hnaddrs[h * 2], n->haddrs[h * 2 + 1], n->hnaddrs[h * 2 + 1], policy,
		    n->t->port, explicit_relay, is_local, n);
	}
	for (size_t i = 0; i < n->plan.nskipped; i++) {
		char a[NETADDR_STRLEN];
		log_info("%s: skipping %s[%s] for %s: %s", n->id, n->plan.skipped[i].host,
		    netaddr_ntop(&n->plan.skipped[i].addr, a, sizeof(a)), n->domain,
		    n->plan.skipped[i].why);
	}
	apply_health(n);
	if (n->plan.ncand > 0) {
		n->result.first_family = netaddr_family(&n->plan.cand[0].addr);
		report(n, NEXTHOP_OK, NULL, NULL);
		return;
	}
	const char *fam = n->t->family == CONF_FAMILY_IPV4 ? "IPv4 " :
	    n->t->family == CONF_FAMILY_IPV6 ? "IPv6 " : "";
	char *why;
	if (tempfail)
		why = xasprintf("Host or domain name not found. Name service error for the mail "
		    "hosts of %s: try again", n->domain);
	else if (n->plan.nskipped > 0)
		why = xasprintf("no usable %saddress for %s: every address was skipped (%s)", fam,
		    n->domain, n->plan.skipped[0].why);
	else if (fam[0] != '\0') /* "%.4s": the family name without fam's trailing space */
		why = xasprintf("no %saddress found for the mail hosts of %s (transport %s allows "
		    "%.4s only)", fam, n->domain, n->t->name, fam);
	else
		why = xasprintf("no address found for the mail hosts of %s", n->domain);
	/* Defer, never bounce here: DNS may be repaired; the queue lifetime bounds it. */
	report(n, NEXTHOP_DEFER, tempfail ? "4.4.3" : "4.4.4", why);
}

/*
 * Did the answers of one family give an address the plan would dial? Asks exactly what
 * build_plan's mx_plan_add_host() will, so the decision to build never rests on
 * addresses the plan then sets aside.
 */
static bool
slot_has_usable(struct nexthop *n, int slot)
{
	enum conf_family policy = nexthop_policy(n->conf, n->t);
	bool allow_local = n->t->relay_host != NULL;

	n->plan_time = loop_time(n->base);
	for (size_t h = 0; h < n->nhosts; h++)
		if (mx_any_usable(n->haddrs[h * 2 + slot], n->hnaddrs[h * 2 + slot], policy,
		    allow_local, is_local, n))
			return true;
	return false;
}

enum nexthop_step
nexthop_step(size_t pending_pref, bool usable_pref, size_t pending_other, bool usable_other)
{
	if (pending_pref == 0 && pending_other == 0)
		return NEXTHOP_STEP_BUILD;
	if (pending_pref == 0 && usable_pref)
		return NEXTHOP_STEP_BUILD;
	/* The preferred family is still out, or gave nothing to dial: only the other can. */
	if (pending_other == 0 && usable_other)
		return NEXTHOP_STEP_DELAY;
	return NEXTHOP_STEP_WAIT;
}

static void
on_resolution_delay(evutil_socket_t fd, short what, void *arg)
{
	struct nexthop *n = arg;
	(void)fd;
	(void)what;
	if (!n->built)
		build_plan(n);
}

/* RFC 8305 3: decide, after each answer, whether to start now, soon, or wait. */
static void
maybe_build(struct nexthop *n)
{
	int pref = n->preferred_slot, other = !pref;
	if (n->built)
		return;
	/* Usability only matters for a finished family; asking costs local-address checks. */
	bool usable_pref = n->pending[pref] == 0 && slot_has_usable(n, pref);
	bool usable_other = n->pending[other] == 0 && slot_has_usable(n, other);

	switch (nexthop_step(n->pending[pref], usable_pref, n->pending[other], usable_other)) {
	case NEXTHOP_STEP_BUILD:
		build_plan(n);
		break;
	case NEXTHOP_STEP_DELAY:
		if (!event_pending(n->delay_ev, EV_TIMEOUT, NULL)) {
			struct timeval tv = { 0, NEXTHOP_RESOLUTION_DELAY_MS * 1000 };
			event_add(n->delay_ev, &tv);
		}
		break;
	case NEXTHOP_STEP_WAIT:
		break;
	}
}

static void
on_addr(const struct dns_addr_result *r, void *arg)
{
	struct nexthop_lookup *l = arg;
	struct nexthop *n = l->n;
	size_t i = l->host * 2 + (size_t)l->slot;

	n->queries[i] = NULL;
	n->hosts[l->host].answered[l->slot] = true;
	n->hosts[l->host].status[l->slot] = r->status;
	if (r->status == DNS_OK && r->naddrs > 0) {
		n->haddrs[i] = xcalloc(r->naddrs, sizeof(struct netaddr));
		memcpy(n->haddrs[i], r->addrs, r->naddrs * sizeof(struct netaddr));
		n->hnaddrs[i] = r->naddrs;
	}
	n->pending[l->slot]--;
	maybe_build(n);
}

static void
alloc_hosts(struct nexthop *n, size_t nhosts)
{
	n->nhosts = nhosts;
	n->hosts = xcalloc(nhosts ? nhosts : 1, sizeof(*n->hosts));
	n->queries = xcalloc(nhosts ? nhosts * 2 : 1, sizeof(*n->queries));
	n->lookups = xcalloc(nhosts ? nhosts * 2 : 1, sizeof(*n->lookups));
	n->haddrs = xcalloc(nhosts ? nhosts * 2 : 1, sizeof(*n->haddrs));
	n->hnaddrs = xcalloc(nhosts ? nhosts * 2 : 1, sizeof(*n->hnaddrs));
}

static void
resolve_hosts(struct nexthop *n, const struct dns_mx *mx, size_t nmx)
{
	alloc_hosts(n, nmx);
	for (size_t h = 0; h < nmx; h++) {
		n->hosts[h].name = xstrdup(mx[h].host);
		n->hosts[h].preference = mx[h].preference;
		for (int s = 0; s < 2; s++)
			if (allows(n, s)) {
				n->hosts[h].asked[s] = true;
				n->pending[s]++;
			}
	}
	/* Queries after counting: answers always come from the loop, never re-entrantly,
	 * but keep the counters whole before any can arrive. */
	for (size_t h = 0; h < nmx; h++)
		for (int s = 0; s < 2; s++) {
			if (!n->hosts[h].asked[s])
				continue;
			struct nexthop_lookup *l = &n->lookups[h * 2 + (size_t)s];
			l->n = n;
			l->host = h;
			l->slot = s;
			n->queries[h * 2 + (size_t)s] = dns_query_addr(n->dns, n->hosts[h].name,
			    slot_family(s), on_addr, l);
		}
	if (n->pending[0] + n->pending[1] == 0)
		build_plan(n);
}

/* ---- MX ---- */

static const char *
mx_name(const struct nexthop *n)
{
	return n->t->relay_host ? n->t->relay_host : n->domain;
}

static void
on_mx(const struct dns_mx_result *r, void *arg)
{
	struct nexthop *n = arg;
	const char *name = mx_name(n);

	n->mx_query = NULL;
	switch (r->status) {
	case DNS_OK: {
		if (mx_is_null(r->mx, r->nmx)) {
			report(n, NEXTHOP_BOUNCE, "5.1.10",
			    xasprintf("Domain %s does not accept mail (nullMX)", name));
			return;
		}
		struct dns_mx *mx = xcalloc(r->nmx, sizeof(*mx));
		size_t k = 0;
		for (size_t i = 0; i < r->nmx; i++)
			if (r->mx[i].host[0] != '\0') /* a null MX among real ones: ignore it */
				mx[k++] = r->mx[i];
		mx_sort(mx, k);
		n->mx_source = "MX";
		resolve_hosts(n, mx, k);
		free(mx);
		return;
	}
	case DNS_NODATA: {
		/* RFC 5321 5.1: no MX records, the domain itself is the implicit MX. */
		struct dns_mx implicit = { (char *)name, 0 };
		n->mx_source = "implicit MX";
		resolve_hosts(n, &implicit, 1);
		return;
	}
	case DNS_NXDOMAIN:
	case DNS_BADNAME:
		report(n, NEXTHOP_BOUNCE, "5.1.2", xasprintf("Host or domain name not found. Name "
		    "service error for name=%s type=MX: Host not found", name));
		return;
	case DNS_TEMPFAIL:
	default:
		report(n, NEXTHOP_DEFER, "4.4.3", xasprintf("Host or domain name not found. Name "
		    "service error for name=%s type=MX: Host not found, try again (%s)", name,
		    r->error ? r->error : "temporary failure"));
		return;
	}
}

/* "[192.0.2.1]" or "192.0.2.1" as a relay needs no DNS at all. */
static bool
relay_literal(const struct conf_transport *t, struct netaddr *out)
{
	char buf[NETADDR_STRLEN + 2];
	const char *h = t->relay_host;
	size_t len = strlen(h);
	if (len >= 2 && h[0] == '[' && h[len - 1] == ']' && len - 2 < sizeof(buf)) {
		memcpy(buf, h + 1, len - 2);
		buf[len - 2] = '\0';
		h = buf;
	}
	return netaddr_parse(out, h, t->port) == 0;
}

struct nexthop *
nexthop_resolve(struct event_base *base, struct dns *dns, struct health *health,
    struct localaddr_cache *local, const struct conf *conf, const struct conf_transport *t,
    const char *domain, const char *id, nexthop_cb cb, void *arg)
{
	struct nexthop *n = xcalloc(1, sizeof(*n));
	n->base = base;
	n->dns = dns;
	n->health = health;
	n->local = local;
	n->conf = conf;
	n->t = t;
	n->domain = dr_strlower(xstrdup(domain));
	n->id = xstrdup(id ? id : "route");
	n->cb = cb;
	n->arg = arg;
	mx_plan_init(&n->plan);
	n->report_ev = event_new(base, -1, 0, on_report, n);
	n->delay_ev = event_new(base, -1, 0, on_resolution_delay, n);
	n->preferred_slot = mx_preferred_family(nexthop_policy(conf, t)) == AF_INET ? 0 : 1;

	struct netaddr literal;
	if (t->relay_host && relay_literal(t, &literal)) {
		n->mx_source = "address literal";
		alloc_hosts(n, 1);
		n->hosts[0].name = xstrdup(t->relay_host);
		int s = netaddr_family(&literal) == AF_INET6 ? 1 : 0;
		n->hosts[0].asked[s] = n->hosts[0].answered[s] = true;
		if (allows(n, s)) {
			n->haddrs[s] = xmalloc(sizeof(struct netaddr));
			*n->haddrs[s] = literal;
			n->hnaddrs[s] = 1;
		}
		build_plan(n);
	} else if (t->relay_host && t->relay_no_mx) {
		struct dns_mx host = { t->relay_host, 0 };
		n->mx_source = "smarthost";
		resolve_hosts(n, &host, 1);
	} else {
		n->mx_source = t->relay_host ? "smarthost MX" : "MX";
		n->mx_query = dns_query_mx(dns, mx_name(n), on_mx, n);
	}
	return n;
}

void
nexthop_free(struct nexthop *n)
{
	if (n == NULL)
		return;
	if (n->mx_query)
		dns_cancel(n->mx_query);
	if (n->queries)
		cancel_lookups(n);
	for (size_t h = 0; h < n->nhosts; h++) {
		free(n->hosts[h].name);
		free(n->haddrs[h * 2]);
		free(n->haddrs[h * 2 + 1]);
	}
	free(n->hosts);
	free(n->queries);
	free(n->lookups);
	free(n->haddrs);
	free(n->hnaddrs);
	mx_plan_clear(&n->plan);
	free(n->avoided);
	free(n->avoid_why);
	free(n->reason);
	free(n->domain);
	free(n->id);
	event_free(n->report_ev);
	event_free(n->delay_ev);
	free(n);
}
