/*
 * explain: a human-readable account of one domain's routing (see explain.h).
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dns.h"
#include "explain.h"
#include "health.h"
#include "nexthop.h"
#include "route.h"
#include "util.h"

struct explain {
	FILE *out;
	struct health *health;
	const struct conf *conf;
	const struct conf_transport *t;
	char *domain;
	struct nexthop *nexthop;
	explain_cb cb;
	void *arg;
};

static const char *
dns_outcome(const struct nexthop_host *h, int slot)
{
	if (!h->asked[slot])
		return "not asked (transport)";
	if (!h->answered[slot])
		return "no answer yet (resolution delay passed)";
	return dns_status_name(h->status[slot]);
}

static void
print_family(const struct explain *e, int family)
{
	const struct conf_transport *t = e->t;
	char a[NETADDR_STRLEN];
	bool has = family == AF_INET ? t->has_source4 : t->has_source6;
	const struct netaddr *src = family == AF_INET ? &t->source4 : &t->source6;
	const char *helo = family == AF_INET ? t->helo4 : t->helo6;
	if (helo == NULL)
		helo = t->helo ? t->helo : e->conf->hostname;
	fprintf(e->out, "  %s: source %s, EHLO %s\n", netaddr_family_name(family),
	    has ? netaddr_ntop(src, a, sizeof(a)) : "chosen by the kernel", helo);
}

struct health_print {
	FILE *out;
	const char *transport;
	const struct nexthop_result *r;
	unsigned shown;
};

static void
print_health_entry(const struct health_view *v, void *arg)
{
	struct health_print *hp = arg;
	bool relevant = strcmp(v->scope, "egress") == 0 ? strcmp(v->name, hp->transport) == 0 :
	    false;
	for (size_t i = 0; !relevant && i < hp->r->nhosts; i++)
		relevant = strcasecmp(v->name, hp->r->hosts[i].name) == 0;
	if (!relevant)
		return;
	char when[64] = "";
	if (v->bad) {
		struct tm tm;
		localtime_r(&v->until, &tm);
		strftime(when, sizeof(when), " until %Y-%m-%d %H:%M:%S", &tm);
	}
	fprintf(hp->out, "  %s %s %s: %s%s (%s, %u failure%s)\n", v->scope, v->name,
	    netaddr_family_name(v->family), v->bad ? "bad" : "good", when, v->why, v->failures,
	    v->failures == 1 ? "" : "s");
	hp->shown++;
}

static void
on_nexthop(struct nexthop *n, const struct nexthop_result *r, void *arg)
{
	struct explain *e = arg;
	FILE *out = e->out;
	char a[NETADDR_STRLEN];
	(void)n;

	fprintf(out, "next hop: %s\n", r->mx_source ? r->mx_source : "-");
	for (size_t i = 0; i < r->nhosts; i++) {
		const struct nexthop_host *h = &r->hosts[i];
		fprintf(out, "  host %s preference %u: A %s, AAAA %s\n", h->name[0] ? h->name : ".",
		    h->preference, dns_outcome(h, 0), dns_outcome(h, 1));
	}
	if (r->status != NEXTHOP_OK) {
		fprintf(out, "result: %s %s %s\n", r->status == NEXTHOP_BOUNCE ? "bounce" : "defer",
		    r->dsn, r->reason);
	} else {
		fprintf(out, "candidates, in the order tried (family first: %s):\n",
		    netaddr_family_name(r->first_family));
		for (size_t i = 0; i < r->plan->ncand; i++) {
			const struct mx_candidate *c = &r->plan->cand[i];
			fprintf(out, "  %zu. %s[%s]:%u %s%s%s\n", i + 1, c->host,
			    netaddr_ntop(&c->addr, a, sizeof(a)), netaddr_port(&c->addr),
			    netaddr_family_name(netaddr_family(&c->addr)),
			    r->avoided[i] ? ", tried last: " : "", r->avoided[i] ? r->avoid_why[i] : "");
		}
	}
	if (r->plan && r->plan->nskipped) {
		fprintf(out, "skipped:\n");
		for (size_t i = 0; i < r->plan->nskipped; i++)
			fprintf(out, "  %s[%s]: %s\n", r->plan->skipped[i].host,
			    netaddr_ntop(&r->plan->skipped[i].addr, a, sizeof(a)),
			    r->plan->skipped[i].why);
	}
	fprintf(out, "health:\n");
	struct health_print hp = { out, e->t->name, r, 0 };
	if (e->health)
		health_foreach(e->health, time(NULL), print_health_entry, &hp);
	if (hp.shown == 0)
		fprintf(out, "  no failures remembered\n");
	fflush(out);
	e->cb(e, e->arg);
}

struct explain *
explain_route(struct event_base *base, struct dns *dns, struct health *health,
    const struct conf *conf, const char *domain, FILE *out, explain_cb cb, void *arg)
{
	struct explain *e = xcalloc(1, sizeof(*e));
	e->out = out;
	e->health = health;
	e->conf = conf;
	e->domain = dr_strlower(xstrdup(domain));
	e->cb = cb;
	e->arg = arg;
	e->t = route_lookup(conf, e->domain);

	const struct conf_transport *t = e->t;
	fprintf(out, "domain: %s\n", e->domain);
	fprintf(out, "transport: %s (family %s, order %s, fallback %s, attempt delay %u ms, "
	    "connect timeout %u s)\n", t->name, conf_family_name(t->family),
	    conf_family_name(nexthop_policy(conf, t)), t->family_fallback ? "on" : "off",
	    t->attempt_delay_ms, t->connect_timeout_s);
	if (t->relay_host)
		fprintf(out, "smarthost: %s port %u%s\n", t->relay_host, t->port,
		    t->relay_no_mx ? " (no MX lookup)" : "");
	if (t->family != CONF_FAMILY_IPV6)
		print_family(e, AF_INET);
	if (t->family != CONF_FAMILY_IPV4)
		print_family(e, AF_INET6);
	/* No address snapshot: one resolution per operator request, answered fresh. */
	e->nexthop = nexthop_resolve(base, dns, health, NULL, conf, t, e->domain, "route",
	    on_nexthop, e);
	return e;
}

void
explain_free(struct explain *e)
{
	if (e == NULL)
		return;
	nexthop_free(e->nexthop);
	free(e->domain);
	free(e);
}
