/*
 * selfcheck: FCrDNS of the configured source addresses (see selfcheck.h). One probe per
 * distinct address: PTR, then A or AAAA of each name until one matches.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "dns.h"
#include "log.h"
#include "selfcheck.h"
#include "util.h"

struct probe {
	struct selfcheck *sc;
	struct netaddr addr;
	char *transports;        /* "ipv4out, both" for the message; owned */
	struct dns_query *q;
	char **names;            /* PTR names, owned */
	size_t nnames, next;     /* next name to resolve forward */
	bool done;
};

struct selfcheck {
	struct event_base *base;
	struct dns *dns;
	struct probe *probes;
	size_t nprobes, cap;
	size_t pending;
	unsigned warnings;
	selfcheck_cb cb;
	void *arg;
	struct event *done_ev;
};

static void probe_forward(struct probe *p);

static void
probe_finish(struct probe *p, const char *warning)
{
	struct selfcheck *sc = p->sc;
	char a[NETADDR_STRLEN];
	netaddr_ntop(&p->addr, a, sizeof(a));
	if (warning) {
		sc->warnings++;
		log_warn("source address %s (transport %s): %s; receivers that check reverse DNS "
		    "will reject mail sent from it", a, p->transports, warning);
	} else {
		log_info("source address %s (transport %s): reverse DNS %s confirmed", a,
		    p->transports, p->names[p->next - 1]);
	}
	p->done = true;
	if (--sc->pending == 0)
		event_active(sc->done_ev, 0, 0);
}

static void
on_forward(const struct dns_addr_result *r, void *arg)
{
	struct probe *p = arg;
	p->q = NULL;
	for (size_t i = 0; r->status == DNS_OK && i < r->naddrs; i++)
		if (netaddr_equal(&r->addrs[i], &p->addr)) {
			probe_finish(p, NULL);
			return;
		}
	probe_forward(p);
}

static void
probe_forward(struct probe *p)
{
	if (p->next >= p->nnames) {
		char *why = xasprintf("PTR %s does not resolve back to it (not forward-confirmed)",
		    p->names[0]);
		probe_finish(p, why);
		free(why);
		return;
	}
	const char *name = p->names[p->next++];
	p->q = dns_query_addr(p->sc->dns, name, netaddr_family(&p->addr), on_forward, p);
}

static void
on_ptr(const struct dns_ptr_result *r, void *arg)
{
	struct probe *p = arg;
	p->q = NULL;
	if (r->status != DNS_OK || r->nnames == 0) {
		char *why = xasprintf("no PTR record (%s)", dns_status_name(r->status));
		probe_finish(p, why);
		free(why);
		return;
	}
	p->names = xcalloc(r->nnames, sizeof(char *));
	for (size_t i = 0; i < r->nnames; i++)
		p->names[i] = xstrdup(r->names[i]);
	p->nnames = r->nnames;
	probe_forward(p);
}

static void
add_probe(struct selfcheck *sc, const struct netaddr *a, const char *transport)
{
	for (size_t i = 0; i < sc->nprobes; i++)
		if (netaddr_equal(&sc->probes[i].addr, a)) {
			char *t = xasprintf("%s, %s", sc->probes[i].transports, transport);
			free(sc->probes[i].transports);
			sc->probes[i].transports = t;
			return;
		}
	sc->probes = xgrow(sc->probes, sizeof(*sc->probes), sc->nprobes + 1, &sc->cap);
	struct probe *p = &sc->probes[sc->nprobes++];
	memset(p, 0, sizeof(*p));
	p->addr = *a;
	p->transports = xstrdup(transport);
}

static void
on_done(evutil_socket_t fd, short what, void *arg)
{
	struct selfcheck *sc = arg;
	(void)fd;
	(void)what;
	sc->cb(sc->warnings, sc->arg);
}

struct selfcheck *
selfcheck_start(struct event_base *base, struct dns *dns, const struct conf *conf,
    selfcheck_cb cb, void *arg)
{
	struct selfcheck *sc = xcalloc(1, sizeof(*sc));
	sc->base = base;
	sc->dns = dns;
	sc->cb = cb;
	sc->arg = arg;
	sc->done_ev = event_new(base, -1, 0, on_done, sc);
	for (size_t i = 0; i < conf->ntransports; i++) {
		const struct conf_transport *t = &conf->transports[i];
		if (t->has_source4)
			add_probe(sc, &t->source4, t->name);
		if (t->has_source6)
			add_probe(sc, &t->source6, t->name);
	}
	/* probes is final now: the queries may keep pointers into it. */
	sc->pending = sc->nprobes;
	for (size_t i = 0; i < sc->nprobes; i++) {
		sc->probes[i].sc = sc;
		sc->probes[i].q = dns_query_ptr(dns, &sc->probes[i].addr, on_ptr, &sc->probes[i]);
	}
	if (sc->nprobes == 0)
		event_active(sc->done_ev, 0, 0);
	return sc;
}

void
selfcheck_free(struct selfcheck *sc)
{
	if (sc == NULL)
		return;
	for (size_t i = 0; i < sc->nprobes; i++) {
		struct probe *p = &sc->probes[i];
		if (p->q)
			dns_cancel(p->q);
		for (size_t k = 0; k < p->nnames; k++)
			free(p->names[k]);
		free(p->names);
		free(p->transports);
	}
	free(sc->probes);
	event_free(sc->done_ev);
	free(sc);
}
