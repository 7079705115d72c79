/*
 * delivery: one message, one domain, one attempt (see delivery.h). The steps are
 *
 *   RESOLVE_MX    MX of the domain (or of an unbracketed smarthost); no MX means the
 *                 name itself (RFC 5321 5.1 implicit MX), a null MX (RFC 7505) or
 *                 NXDOMAIN fails permanently, a server failure defers.
 *   RESOLVE_HOSTS A and AAAA of every MX host at once, only for the families the
 *                 transport allows.
 *   CONNECT       the ordered candidate list (mx.c) raced per RFC 8305 (race.c).
 *   SESSION       one SMTP transaction (smtp_client.c). A session that fails before the
 *                 recipients got final answers (greeting, EHLO, a temporary MAIL error,
 *                 a lost connection) sends us back to CONNECT for the next candidate,
 *                 as Postfix moves to the next MX address; a permanent error on MAIL
 *                 ends the attempt for every recipient.
 *
 * Completion is always reported from a zero-delay event, so the owner may free the
 * delivery inside its callback and no module is freed under its own callback.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "delivery.h"
#include "dns.h"
#include "log.h"
#include "mx.h"
#include "race.h"
#include "route.h"
#include "smtp_client.h"
#include "spool.h"
#include "util.h"

enum delivery_state {
	DELIVERY_RESOLVE_MX,
	DELIVERY_RESOLVE_HOSTS,
	DELIVERY_CONNECT,
	DELIVERY_SESSION,
	DELIVERY_DONE,
};

/* What the step event does next. */
enum delivery_step {
	STEP_NONE,
	STEP_NEXT_CANDIDATE,  /* free the failed session, race on */
	STEP_REPORT,          /* results are final: free the session, report */
};

struct host_lookup {
	struct delivery *d;      /* back pointer for the DNS callbacks */
	char *name;              /* owned */
	unsigned preference;
	struct dns_query *q[2];  /* [0] A, [1] AAAA; NULL when not asked or answered */
	struct netaddr *addrs[2];/* owned copies of the answers */
	size_t naddrs[2];
	enum dns_status status[2];
	bool asked[2];
};

struct delivery {
	struct delivery_env denv;
	const struct conf *conf;
	const struct conf_transport *transport;
	const struct envelope *env;
	char *domain;            /* owned, lower case */
	size_t *rcpts;           /* owned copy of the recipient indices */
	size_t nrcpts;
	delivery_cb cb;
	void *arg;
	enum delivery_state state;

	struct dns_query *mx_query;
	struct host_lookup *hosts;
	size_t nhosts;
	size_t lookups_pending;

	struct mx_plan plan;
	struct race_target *targets;  /* parallel to plan.cand */
	struct race *race;
	struct smtp_client *client;
	size_t current;               /* candidate index of the running session */

	/* The most recent failure, used when every candidate fails. */
	char *last_error;
	char last_dsn[16];
	char last_relay[DELIVERY_RELAY_MAX];
	int last_family;

	struct delivery_result *results; /* one per rcpt once final */
	enum delivery_step step;
	struct event *step_ev;
};

static void delivery_resolve_hosts(struct delivery *d, struct dns_mx *mx, size_t nmx);
static void delivery_connect(struct delivery *d);

static int
family_slot(int family)
{
	return family == AF_INET6 ? 1 : 0;
}

static bool
transport_allows(const struct conf_transport *t, int family)
{
	if (t->family == CONF_FAMILY_IPV4)
		return family == AF_INET;
	if (t->family == CONF_FAMILY_IPV6)
		return family == AF_INET6;
	return true;
}

static void
set_last_error(struct delivery *d, const char *dsn, const char *relay, int family,
    char *reason /* owned, taken */)
{
	free(d->last_error);
	d->last_error = reason;
	dr_strlcpy(d->last_dsn, dsn, sizeof(d->last_dsn));
	dr_strlcpy(d->last_relay, relay ? relay : "none", sizeof(d->last_relay));
	d->last_family = family;
}

/* Every recipient gets the same outcome (DNS failure, no route, all hosts failed). */
static void
fail_all(struct delivery *d, enum rcpt_state state, const char *dsn, const char *relay,
    int family, const char *reason)
{
	for (size_t i = 0; i < d->nrcpts; i++) {
		struct delivery_result *r = &d->results[i];
		free(r->reason);
		r->index = d->rcpts[i];
		r->state = state;
		dr_strlcpy(r->dsn, dsn, sizeof(r->dsn));
		r->reason = xstrdup(reason);
		dr_strlcpy(r->relay, relay ? relay : "none", sizeof(r->relay));
		r->family = family;
	}
}

static void
schedule_step(struct delivery *d, enum delivery_step step)
{
	d->step = step;
	event_active(d->step_ev, 0, 0);
}

static void
finish(struct delivery *d)
{
	d->state = DELIVERY_DONE;
	schedule_step(d, STEP_REPORT);
}

static void
defer_with_last_error(struct delivery *d)
{
	if (d->last_error == NULL)
		set_last_error(d, "4.4.1", NULL, AF_UNSPEC,
		    xasprintf("no usable address for %s", d->domain));
	fail_all(d, d->last_dsn[0] == '5' ? RCPT_BOUNCED : RCPT_DEFERRED, d->last_dsn,
	    d->last_relay, d->last_family, d->last_error);
	finish(d);
}

/* ---- Step 1: MX ---- */

static void
on_mx(const struct dns_mx_result *r, void *arg)
{
	struct delivery *d = arg;
	const char *name = d->transport->relay_host ? d->transport->relay_host : d->domain;

	d->mx_query = NULL;
	switch (r->status) {
	case DNS_OK:
		if (mx_is_null(r->mx, r->nmx)) {
			char *why = xasprintf("Domain %s does not accept mail (nullMX)", name);
			fail_all(d, RCPT_BOUNCED, "5.1.10", NULL, AF_UNSPEC, why);
			free(why);
			finish(d);
			return;
		}
		struct dns_mx *mx = xcalloc(r->nmx, sizeof(*mx));
		size_t n = 0;
		for (size_t i = 0; i < r->nmx; i++) {
			if (r->mx[i].host[0] == '\0')
				continue; /* a null MX mixed with real ones: ignore it */
			mx[n].host = r->mx[i].host;
			mx[n].preference = r->mx[i].preference;
			n++;
		}
		mx_sort(mx, n);
		delivery_resolve_hosts(d, mx, n);
		free(mx);
		return;
	case DNS_NODATA: {
		/* RFC 5321 5.1: no MX records, the domain itself is the implicit MX. */
		struct dns_mx implicit = { (char *)name, 0 };
		delivery_resolve_hosts(d, &implicit, 1);
		return;
	}
	case DNS_NXDOMAIN:
	case DNS_BADNAME: {
		char *why = xasprintf("Host or domain name not found. Name service error for "
		    "name=%s type=MX: Host not found", name);
		fail_all(d, RCPT_BOUNCED, "5.1.2", NULL, AF_UNSPEC, why);
		free(why);
		finish(d);
		return;
	}
	case DNS_TEMPFAIL:
	default: {
		char *why = xasprintf("Host or domain name not found. Name service error for "
		    "name=%s type=MX: Host not found, try again (%s)", name,
		    r->error ? r->error : "temporary failure");
		fail_all(d, RCPT_DEFERRED, "4.4.3", NULL, AF_UNSPEC, why);
		free(why);
		finish(d);
		return;
	}
	}
}

/* ---- Step 2: A and AAAA of every MX host ---- */

static void
host_answered(struct host_lookup *h, int slot, const struct dns_addr_result *r)
{
	h->q[slot] = NULL;
	h->status[slot] = r->status;
	if (r->status == DNS_OK && r->naddrs > 0) {
		h->addrs[slot] = xcalloc(r->naddrs, sizeof(struct netaddr));
		memcpy(h->addrs[slot], r->addrs, r->naddrs * sizeof(struct netaddr));
		h->naddrs[slot] = r->naddrs;
	}
}

static void build_plan(struct delivery *d);

static void
on_host_addr(const struct dns_addr_result *r, void *arg)
{
	struct host_lookup *h = arg;
	struct delivery *d = h->d;

	host_answered(h, family_slot(r->family), r);
	if (--d->lookups_pending == 0)
		build_plan(d);
}

static void
delivery_resolve_hosts(struct delivery *d, struct dns_mx *mx, size_t nmx)
{
	static const int families[2] = { AF_INET, AF_INET6 };

	d->state = DELIVERY_RESOLVE_HOSTS;
	d->hosts = xcalloc(nmx ? nmx : 1, sizeof(*d->hosts));
	d->nhosts = nmx;
	/* Count first: a cached answer still arrives from the loop, never re-entrantly. */
	for (size_t i = 0; i < nmx; i++)
		for (int s = 0; s < 2; s++)
			if (transport_allows(d->transport, families[s]))
				d->lookups_pending++;
	for (size_t i = 0; i < nmx; i++) {
		struct host_lookup *h = &d->hosts[i];
		h->d = d;
		h->name = xstrdup(mx[i].host);
		h->preference = mx[i].preference;
		for (int s = 0; s < 2; s++) {
			if (!transport_allows(d->transport, families[s]))
				continue;
			h->asked[s] = true;
			h->q[s] = dns_query_addr(d->denv.dns, h->name, families[s], on_host_addr, h);
		}
	}
	if (d->lookups_pending == 0)
		build_plan(d);
}

/* A host name that is an address literal needs no lookup ("[192.0.2.1]", "192.0.2.1"). */
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

static void
build_plan(struct delivery *d)
{
	bool tempfail = false;
	bool explicit_relay = d->transport->relay_host != NULL;

	for (size_t i = 0; i < d->nhosts; i++) {
		struct host_lookup *h = &d->hosts[i];
		for (int s = 0; s < 2; s++)
			if (h->asked[s] && h->status[s] == DNS_TEMPFAIL)
				tempfail = true;
		mx_plan_add_host(&d->plan, h->name, h->preference, h->addrs[0], h->naddrs[0],
		    h->addrs[1], h->naddrs[1], d->transport->family, d->transport->port,
		    explicit_relay, netaddr_is_local);
	}
	for (size_t i = 0; i < d->plan.nskipped; i++) {
		char a[NETADDR_STRLEN];
		log_info("%s: skipping %s[%s] for %s: %s", d->env->id, d->plan.skipped[i].host,
		    netaddr_ntop(&d->plan.skipped[i].addr, a, sizeof(a)), d->domain,
		    d->plan.skipped[i].why);
	}
	if (d->plan.ncand > 0) {
		delivery_connect(d);
		return;
	}
	const char *fam = d->transport->family == CONF_FAMILY_IPV4 ? "IPv4 " :
	    d->transport->family == CONF_FAMILY_IPV6 ? "IPv6 " : "";
	char *why;
	if (tempfail)
		why = xasprintf("Host or domain name not found. Name service error for the MX "
		    "hosts of %s: try again", d->domain);
	else if (d->plan.nskipped > 0)
		why = xasprintf("no usable %saddress for %s: every address was skipped (%s)", fam,
		    d->domain, d->plan.skipped[0].why);
	else
		why = xasprintf("no %saddress found for the mail hosts of %s (transport %s, "
		    "family %s)", fam, d->domain, d->transport->name,
		    conf_family_name(d->transport->family));
	/* Defer, never bounce here: DNS may be repaired; the queue lifetime bounds it. */
	fail_all(d, RCPT_DEFERRED, tempfail ? "4.4.3" : "4.4.4", NULL, AF_UNSPEC, why);
	free(why);
	finish(d);
}

/* ---- Step 3: connect ---- */

static void
relay_text(const struct race_target *t, char *buf, size_t size)
{
	char a[NETADDR_STRLEN];
	snprintf(buf, size, "%s[%s]:%u", t->host, netaddr_ntop(&t->addr, a, sizeof(a)),
	    netaddr_port(&t->addr));
}

static void
on_race_fail(size_t index, int error, void *arg)
{
	struct delivery *d = arg;
	const struct race_target *t = &d->targets[index];
	char relay[DELIVERY_RELAY_MAX], a[NETADDR_STRLEN];

	relay_text(t, relay, sizeof(relay));
	log_info("%s: connect to %s[%s]:%u (%s): %s", d->env->id, t->host,
	    netaddr_ntop(&t->addr, a, sizeof(a)), netaddr_port(&t->addr),
	    netaddr_family_name(netaddr_family(&t->addr)), strerror(error));
	set_last_error(d, "4.4.1", relay, netaddr_family(&t->addr),
	    xasprintf("connect to %s[%s]:%u: %s", t->host, a, netaddr_port(&t->addr),
		strerror(error)));
}

static const char *
helo_for(const struct delivery *d, int family)
{
	const struct conf_transport *t = d->transport;
	if (family == AF_INET && t->helo4)
		return t->helo4;
	if (family == AF_INET6 && t->helo6)
		return t->helo6;
	return t->helo ? t->helo : d->conf->hostname;
}

static void on_session(struct smtp_client *c, const struct smtp_client_result *r, void *arg);

static void
start_session(struct delivery *d, int fd, size_t index)
{
	const struct race_target *t = &d->targets[index];
	int content = spool_open_content(d->denv.spool, d->env);
	if (content < 0) {
		int err = errno;
		close(fd);
		log_error("%s: cannot open queue file: %s", d->env->id, strerror(err));
		fail_all(d, RCPT_DEFERRED, "4.3.0", NULL, AF_UNSPEC, "queue file read error");
		finish(d);
		return;
	}
	struct smtp_client_params p = {
		.helo_name = helo_for(d, netaddr_family(&t->addr)),
		.peer_name = t->host,
		.peer = t->addr,
		.reply_timeout_s = d->conf->timeouts.smtp_timeout_s,
		.body_timeout_s = d->conf->timeouts.smtp_timeout_s * 2,
	};
	d->state = DELIVERY_SESSION;
	d->current = index;
	d->client = smtp_client_start(d->denv.base, fd, content, &p, d->env, d->rcpts, d->nrcpts,
	    on_session, d);
}

static void
on_race(enum race_event ev, int fd, size_t index, const struct race_failure *failures,
    size_t nfailures, void *arg)
{
	struct delivery *d = arg;
	(void)failures;
	(void)nfailures; /* each failure was already recorded by on_race_fail */

	if (ev == RACE_CONNECTED) {
		start_session(d, fd, index);
		return;
	}
	defer_with_last_error(d);
}

static void
delivery_connect(struct delivery *d)
{
	const struct conf_transport *t = d->transport;
	d->state = DELIVERY_CONNECT;
	d->targets = xcalloc(d->plan.ncand, sizeof(*d->targets));
	for (size_t i = 0; i < d->plan.ncand; i++) {
		d->targets[i].host = d->plan.cand[i].host;
		d->targets[i].addr = d->plan.cand[i].addr;
	}
	struct race_params p = {
		.attempt_delay_ms = t->attempt_delay_ms,
		.connect_timeout_ms = t->connect_timeout_s * 1000u,
		.source4 = t->has_source4 ? &t->source4 : NULL,
		.source6 = t->has_source6 ? &t->source6 : NULL,
	};
	d->race = race_new(d->denv.base, d->targets, d->plan.ncand, &p, on_race, on_race_fail, d);
	race_next(d->race);
}

/* ---- Step 4: the SMTP session ---- */

static void
result_from_reply(struct delivery *d, struct delivery_result *res, size_t rcpt_index,
    const struct smtp_reply *reply, enum smtp_client_stage stage)
{
	const struct race_target *t = &d->targets[d->current];
	char a[NETADDR_STRLEN];
	char *line = smtp_reply_oneline(reply);

	res->index = rcpt_index;
	relay_text(t, res->relay, sizeof(res->relay));
	res->family = netaddr_family(&t->addr);
	free(res->reason);
	if (reply->code >= 200 && reply->code < 300) {
		res->state = RCPT_DELIVERED;
		smtp_reply_dsn(reply, "0.0", res->dsn, sizeof(res->dsn));
		res->reason = line;
		return;
	}
	res->state = reply->code >= 500 ? RCPT_BOUNCED : RCPT_DEFERRED;
	smtp_reply_dsn(reply, "0.0", res->dsn, sizeof(res->dsn));
	res->reason = xasprintf("host %s[%s] said: %s (in reply to %s)", t->host,
	    netaddr_ntop(&t->addr, a, sizeof(a)), line, smtp_client_stage_name(stage));
	free(line);
}

static bool
session_failure_is_permanent(const struct smtp_client_result *r)
{
	/* A permanent answer to MAIL FROM (or a synthesized one: SMTPUTF8, SIZE) is about
	 * this message, not this host: another MX would say the same. */
	return r->stage == SMTP_STAGE_MAIL && r->reply.code >= 500;
}

static void
on_session(struct smtp_client *c, const struct smtp_client_result *r, void *arg)
{
	struct delivery *d = arg;
	(void)c;

	if (r->completed) {
		for (size_t i = 0; i < d->nrcpts && i < r->nrcpts; i++)
			result_from_reply(d, &d->results[i], r->rcpts[i].index, &r->rcpts[i].reply,
			    r->rcpts[i].stage);
		finish(d);
		return;
	}
	const struct race_target *t = &d->targets[d->current];
	char relay[DELIVERY_RELAY_MAX], dsn[16];
	relay_text(t, relay, sizeof(relay));
	if (r->reply.code != 0) {
		struct delivery_result tmp = { 0 };
		result_from_reply(d, &tmp, 0, &r->reply, r->stage);
		set_last_error(d, tmp.dsn, relay, tmp.family, tmp.reason);
		dr_strlcpy(dsn, tmp.dsn, sizeof(dsn));
	} else {
		set_last_error(d, "4.4.2", relay, netaddr_family(&t->addr),
		    xstrdup(r->error_text ? r->error_text : "lost connection"));
	}
	log_info("%s: %s (%s)", d->env->id, d->last_error,
	    netaddr_family_name(netaddr_family(&t->addr)));
	if (session_failure_is_permanent(r)) {
		fail_all(d, RCPT_BOUNCED, d->last_dsn, relay, d->last_family, d->last_error);
		finish(d);
		return;
	}
	/* Greeting, EHLO, temporary MAIL error or a broken connection: next address. A 5xx
	 * from this host is not final for the others, but if it is the last, it stands as a
	 * deferral: only a host that accepted the conversation may refuse mail for good. */
	if (d->last_dsn[0] == '5')
		d->last_dsn[0] = '4';
	schedule_step(d, STEP_NEXT_CANDIDATE);
}

static void
on_step(evutil_socket_t fd, short what, void *arg)
{
	struct delivery *d = arg;
	(void)fd;
	(void)what;

	if (d->client) {
		smtp_client_free(d->client);
		d->client = NULL;
	}
	if (d->step == STEP_NEXT_CANDIDATE) {
		d->step = STEP_NONE;
		d->state = DELIVERY_CONNECT;
		race_next(d->race);
		return;
	}
	if (d->step == STEP_REPORT) {
		d->step = STEP_NONE;
		/* Last action: the owner may free us. */
		d->cb(d, d->results, d->nrcpts, d->arg);
	}
}

/* ---- Life cycle ---- */

struct delivery *
delivery_start(const struct delivery_env *denv, const struct conf *conf,
    const struct envelope *env, const char *domain, const size_t *rcpt_idx, size_t nrcpt,
    delivery_cb cb, void *arg)
{
	struct delivery *d = xcalloc(1, sizeof(*d));
	d->denv = *denv;
	d->conf = conf;
	d->env = env;
	d->domain = dr_strlower(xstrdup(domain));
	d->rcpts = xcalloc(nrcpt, sizeof(size_t));
	memcpy(d->rcpts, rcpt_idx, nrcpt * sizeof(size_t));
	d->nrcpts = nrcpt;
	d->results = xcalloc(nrcpt, sizeof(*d->results));
	d->cb = cb;
	d->arg = arg;
	d->last_family = AF_UNSPEC;
	mx_plan_init(&d->plan);
	d->step_ev = event_new(denv->base, -1, 0, on_step, d);
	d->transport = route_lookup(conf, d->domain);

	const struct conf_transport *t = d->transport;
	struct netaddr literal;
	if (t->relay_host && relay_literal(t, &literal)) {
		/* "[192.0.2.1]:587": no DNS at all. */
		d->hosts = xcalloc(1, sizeof(*d->hosts));
		d->nhosts = 1;
		d->hosts[0].d = d;
		d->hosts[0].name = xstrdup(t->relay_host);
		int s = family_slot(netaddr_family(&literal));
		if (transport_allows(t, netaddr_family(&literal))) {
			d->hosts[0].addrs[s] = xmalloc(sizeof(struct netaddr));
			*d->hosts[0].addrs[s] = literal;
			d->hosts[0].naddrs[s] = 1;
		}
		d->state = DELIVERY_RESOLVE_HOSTS;
		build_plan(d);
		return d;
	}
	if (t->relay_host && t->relay_no_mx) {
		struct dns_mx host = { t->relay_host, 0 };
		delivery_resolve_hosts(d, &host, 1);
		return d;
	}
	d->state = DELIVERY_RESOLVE_MX;
	d->mx_query = dns_query_mx(denv->dns, t->relay_host ? t->relay_host : d->domain, on_mx, d);
	return d;
}

void
delivery_free(struct delivery *d)
{
	if (d == NULL)
		return;
	if (d->mx_query)
		dns_cancel(d->mx_query);
	for (size_t i = 0; i < d->nhosts; i++) {
		struct host_lookup *h = &d->hosts[i];
		for (int s = 0; s < 2; s++) {
			if (h->q[s])
				dns_cancel(h->q[s]);
			free(h->addrs[s]);
		}
		free(h->name);
	}
	free(d->hosts);
	if (d->client)
		smtp_client_free(d->client);
	if (d->race)
		race_free(d->race);
	free(d->targets);
	mx_plan_clear(&d->plan);
	for (size_t i = 0; i < d->nrcpts; i++)
		free(d->results[i].reason);
	free(d->results);
	free(d->rcpts);
	free(d->domain);
	free(d->last_error);
	event_free(d->step_ev);
	free(d);
}
