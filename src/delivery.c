/*
 * delivery: one message, one domain, one attempt (see delivery.h). The steps are
 *
 *   RESOLVE   nexthop.c: the ordered candidate addresses, or a DNS verdict (null MX and
 *             NXDOMAIN bounce, server failures defer).
 *   CONNECT   the candidates raced per RFC 8305 (race.c).
 *   SESSION   one SMTP transaction (smtp_client.c). A session that fails before the
 *             recipients got final answers (greeting, EHLO, a temporary MAIL error, a
 *             lost connection) sends us back to CONNECT for the next candidate, as
 *             Postfix moves on to the next MX address; a permanent error on MAIL ends
 *             the attempt for every recipient.
 *   FALLBACK  when the receiver rejected us for our address family (at greeting,
 *             EHLO, MAIL, RCPT or after the body), a new race over the other family's
 *             candidates carries the rejected recipients and the whole message again.
 *             One fallback per delivery; both sessions are logged.
 *   PLAINTEXT with tls = "may", a failed TLS handshake (not a refused certificate)
 *             sends the same recipients again at once over a new connection to the
 *             same address, without STARTTLS, as Postfix does; the main race then
 *             resumes if that fails too. "encrypt" and "verify" never do this: their
 *             TLS failures are ordinary session failures (next address, then defer).
 *
 * Completion is always reported from a zero-delay event, so the owner may free the
 * delivery inside its callback and no module is freed under its own callback.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "conncache.h"
#include "delivery.h"
#include "fallback.h"
#include "health.h"
#include "log.h"
#include "nexthop.h"
#include "race.h"
#include "route.h"
#include "smtp_client.h"
#include "spool.h"
#include "stats.h"
#include "util.h"

enum delivery_state {
	DELIVERY_RESOLVE,
	DELIVERY_CONNECT,
	DELIVERY_SESSION,
	DELIVERY_DONE,
};

/* What the step event does next. */
enum delivery_step {
	STEP_NONE,
	STEP_NEXT_CANDIDATE,  /* free the failed session, race on */
	STEP_FALLBACK,        /* free the session, race over the other family */
	STEP_REPORT,          /* results are final: free the session, report */
	STEP_PLAINTEXT,       /* free the session, reconnect to it without TLS */
};

struct delivery {
	struct delivery_env denv;
	const struct conf *conf;
	const struct conf_transport *transport;
	const struct envelope *env;
	double arrival;          /* when the message came in, for delay= */
	char *domain;            /* owned, lower case */
	size_t *rcpts;           /* owned copy of the recipient indices */
	size_t nrcpts;
	delivery_cb cb;
	void *arg;
	enum delivery_state state;

	struct nexthop *nexthop; /* owned; its plan backs the targets' host names */
	struct race_target *targets; /* all candidates, owned */
	size_t ntargets;
	bool *target_failed;     /* per target: connect failed in this delivery */
	bool *target_plain;      /* per target: its TLS handshake failed ("may"): no STARTTLS */
	struct race *race;       /* the running race (first or fallback) */
	struct race *retry_race; /* the one-target race of a plaintext retry */
	size_t retry_target;     /* target index of that retry */
	size_t *race_map;        /* race index -> target index */
	struct smtp_client *client;
	size_t current;          /* target index of the running session */

	size_t *session;         /* positions (into rcpts/results) of this session's rcpts */
	size_t nsession;
	size_t session_rcpt_idx_cap;
	size_t *session_idx;     /* envelope indices for smtp_client, parallel to session */
	bool fell_back;          /* the fallback session has been started */
	int fallback_family;

	/* The most recent failure, used when every candidate fails. */
	char *last_error;
	char last_dsn[16];
	char last_relay[DELIVERY_RELAY_MAX];
	int last_family;
	char last_tls[DELIVERY_TLS_MAX];
	char cur_tls[DELIVERY_TLS_MAX]; /* TLS of the session being reported ("none") */

	struct delivery_result *results; /* one per rcpt (position), final at report */
	enum delivery_step step;
	struct event *step_ev;
};

static void start_race(struct delivery *d, int only_family);

static void
set_last_error(struct delivery *d, const char *dsn, const char *relay, int family,
    const char *tls, char *reason /* owned, taken */)
{
	free(d->last_error);
	d->last_error = reason;
	dr_strlcpy(d->last_dsn, dsn, sizeof(d->last_dsn));
	dr_strlcpy(d->last_relay, relay ? relay : "none", sizeof(d->last_relay));
	d->last_family = family;
	dr_strlcpy(d->last_tls, tls ? tls : "none", sizeof(d->last_tls));
}

static void
set_result(struct delivery_result *r, size_t index, enum rcpt_state state, const char *dsn,
    const char *relay, int family, const char *tls, char *reason /* owned, taken */)
{
	free(r->reason);
	r->index = index;
	r->state = state;
	dr_strlcpy(r->dsn, dsn, sizeof(r->dsn));
	r->reason = reason;
	dr_strlcpy(r->relay, relay ? relay : "none", sizeof(r->relay));
	r->family = family;
	if (tls != r->tls)
		dr_strlcpy(r->tls, tls ? tls : "none", sizeof(r->tls));
}

/* Every recipient of the current session gets the same outcome. */
static void
fail_session(struct delivery *d, enum rcpt_state state, const char *dsn, const char *relay,
    int family, const char *tls, const char *reason)
{
	for (size_t i = 0; i < d->nsession; i++) {
		size_t pos = d->session[i];
		set_result(&d->results[pos], d->rcpts[pos], state, dsn, relay, family, tls,
		    xstrdup(reason));
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
relay_text(const struct race_target *t, char *buf, size_t size)
{
	char a[NETADDR_STRLEN];
	snprintf(buf, size, "%s[%s]:%u", t->host, netaddr_ntop(&t->addr, a, sizeof(a)),
	    netaddr_port(&t->addr));
}

static const char *
family_name(int family)
{
	return family == AF_INET || family == AF_INET6 ? netaddr_family_name(family) : "none";
}

/* All candidates failed: the last error stands for the session's recipients. */
static void
session_exhausted(struct delivery *d)
{
	if (d->last_error == NULL)
		set_last_error(d, "4.4.1", NULL, AF_UNSPEC, NULL,
		    xasprintf("no usable address for %s", d->domain));
	if (d->fell_back) {
		/* The other family could not be reached either: what the first family said
		 * was about our address, so a later retry may still succeed. Defer. */
		for (size_t i = 0; i < d->nsession; i++) {
			struct delivery_result *r = &d->results[d->session[i]];
			char *why = xasprintf("%s; fallback over %s failed: %s", r->reason,
			    family_name(d->fallback_family), d->last_error);
			char dsn[16];
			dr_strlcpy(dsn, r->dsn, sizeof(dsn));
			dsn[0] = '4';
			set_result(r, r->index, RCPT_DEFERRED, dsn, r->relay, r->family, r->tls, why);
		}
		finish(d);
		return;
	}
	fail_session(d, d->last_dsn[0] == '5' ? RCPT_BOUNCED : RCPT_DEFERRED, d->last_dsn,
	    d->last_relay, d->last_family, d->last_tls, d->last_error);
	finish(d);
}

/* ---- Step 1: resolve ---- */

static bool reuse_session(struct delivery *d);

static void
on_nexthop(struct nexthop *n, const struct nexthop_result *r, void *arg)
{
	struct delivery *d = arg;
	(void)n;

	if (r->status != NEXTHOP_OK) {
		fail_session(d, r->status == NEXTHOP_BOUNCE ? RCPT_BOUNCED : RCPT_DEFERRED, r->dsn,
		    NULL, AF_UNSPEC, NULL, r->reason);
		finish(d);
		return;
	}
	d->ntargets = r->plan->ncand;
	d->targets = xcalloc(d->ntargets, sizeof(*d->targets));
	d->target_failed = xcalloc(d->ntargets, sizeof(bool));
	d->target_plain = xcalloc(d->ntargets, sizeof(bool));
	d->race_map = xcalloc(d->ntargets, sizeof(size_t));
	for (size_t i = 0; i < d->ntargets; i++) {
		d->targets[i].host = r->plan->cand[i].host; /* owned by the nexthop's plan */
		d->targets[i].addr = r->plan->cand[i].addr;
	}
	if (!reuse_session(d))
		start_race(d, AF_UNSPEC);
}

/* ---- Step 2: connect ---- */

static void
report_health(struct delivery *d, size_t target, enum health_event ev)
{
	if (d->denv.health == NULL)
		return;
	health_report(d->denv.health, d->transport->name, d->targets[target].host,
	    netaddr_family(&d->targets[target].addr), ev, time(NULL));
}

/* A connection attempt to target ti failed: log, remember, count. */
static void
connect_failed(struct delivery *d, size_t ti, int error)
{
	const struct race_target *t = &d->targets[ti];
	char relay[DELIVERY_RELAY_MAX], a[NETADDR_STRLEN];

	d->target_failed[ti] = true;
	relay_text(t, relay, sizeof(relay));
	log_info("%s: connect to %s[%s]:%u (%s): %s", d->env->id, t->host,
	    netaddr_ntop(&t->addr, a, sizeof(a)), netaddr_port(&t->addr),
	    family_name(netaddr_family(&t->addr)), strerror(error));
	set_last_error(d, "4.4.1", relay, netaddr_family(&t->addr), NULL,
	    xasprintf("connect to %s[%s]:%u: %s", t->host, a, netaddr_port(&t->addr),
		strerror(error)));
	report_health(d, ti, error == ETIMEDOUT ? HEALTH_CONNECT_TIMEOUT : HEALTH_CONNECT_FAILED);
	if (error == ETIMEDOUT)
		d->denv.stats->connect_timeout[stats_family(netaddr_family(&t->addr))]++;
	else
		d->denv.stats->connect_failed[stats_family(netaddr_family(&t->addr))]++;
}

static void
on_race_fail(size_t index, int error, void *arg)
{
	struct delivery *d = arg;

	connect_failed(d, d->race_map[index], error);
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
start_session(struct delivery *d, int fd, size_t target)
{
	const struct race_target *t = &d->targets[target];
	int content = spool_open_content(d->denv.spool, d->env);
	if (content < 0) {
		int err = errno;
		close(fd);
		log_error("%s: cannot open queue file: %s", d->env->id, strerror(err));
		fail_session(d, RCPT_DEFERRED, "4.3.0", NULL, AF_UNSPEC, NULL,
		    "queue file read error");
		finish(d);
		return;
	}
	const struct conf_transport *tr = d->transport;
	bool plain = d->target_plain[target];
	struct smtp_client_params p = {
		.helo_name = helo_for(d, netaddr_family(&t->addr)),
		.peer_name = t->host,
		.peer = t->addr,
		.reply_timeout_s = d->conf->timeouts.smtp_timeout_s,
		.body_timeout_s = d->conf->timeouts.smtp_timeout_s * 2,
		.keep_open = d->denv.cache != NULL && d->conf->queue.connection_cache_s > 0,
		/* "verify" checks the smarthost's name for a relay, else the MX host's. */
		.tls = plain ? NULL : tr->tls_ctx,
		.tls_policy = plain ? TLS_POLICY_NONE : tr->tls,
		.tls_name = tr->relay_host != NULL ? tr->relay_host : t->host,
		.auth_user = tr->auth_user,
		.auth_pass = tr->auth_pass,
		.auth_allow_plaintext = tr->auth_allow_plaintext,
	};
	for (size_t i = 0; i < d->nsession; i++)
		d->session_idx[i] = d->rcpts[d->session[i]];
	d->state = DELIVERY_SESSION;
	d->current = target;
	d->client = smtp_client_start(d->denv.base, fd, content, &p, d->env, d->session_idx,
	    d->nsession, on_session, d);
}

/*
 * An idle session (conncache.c) to one of the candidates, in their order, replaces the
 * connect step: RSET and the next transaction on it. False when there is none.
 */
static bool
reuse_session(struct delivery *d)
{
	if (d->denv.cache == NULL)
		return false;
	for (size_t i = 0; i < d->ntargets; i++) {
		struct smtp_client *c = conncache_take(d->denv.cache, d->transport->name,
		    &d->targets[i].addr);
		if (c == NULL)
			continue;
		int content = spool_open_content(d->denv.spool, d->env);
		if (content < 0) {
			smtp_client_free(c);
			return false; /* the normal path reports the spool error */
		}
		for (size_t k = 0; k < d->nsession; k++)
			d->session_idx[k] = d->rcpts[d->session[k]];
		d->state = DELIVERY_SESSION;
		d->current = i;
		d->client = c;
		smtp_client_reuse(c, content, d->env, d->session_idx, d->nsession, on_session, d);
		return true;
	}
	return false;
}

/*
 * A candidate listed before the winner that neither failed nor won was still pending
 * when a later one connected: it lost the race by at least the attempt delay. That is
 * the signature of a blackhole (SYNs dropped), and the health memory should know, or
 * the next message would wait for it again.
 */
static void
note_race_losers(struct delivery *d, size_t winner_race_index)
{
	int wfam = netaddr_family(&d->targets[d->race_map[winner_race_index]].addr);
	for (size_t i = 0; i < winner_race_index; i++) {
		size_t ti = d->race_map[i];
		if (d->target_failed[ti] || netaddr_family(&d->targets[ti].addr) == wfam)
			continue;
		char a[NETADDR_STRLEN];
		log_info("%s: %s[%s] (%s) did not answer before %s did", d->env->id,
		    d->targets[ti].host, netaddr_ntop(&d->targets[ti].addr, a, sizeof(a)),
		    family_name(netaddr_family(&d->targets[ti].addr)), family_name(wfam));
		report_health(d, ti, HEALTH_CONNECT_TIMEOUT);
	}
}

static void
on_race(enum race_event ev, int fd, size_t index, const struct race_failure *failures,
    size_t nfailures, void *arg)
{
	struct delivery *d = arg;
	(void)failures;
	(void)nfailures; /* each failure was already recorded by on_race_fail */

	if (ev == RACE_CONNECTED) {
		if (netaddr_family(&d->targets[d->race_map[index]].addr) !=
		    netaddr_family(&d->targets[d->race_map[0]].addr))
			d->denv.stats->fallback_tcp++;
		note_race_losers(d, index);
		start_session(d, fd, d->race_map[index]);
		return;
	}
	session_exhausted(d);
}

/* Races over the candidates (of one family only, for a fallback) not known to fail. */
/* The transport's connection settings, for a race. */
static struct race_params
race_params_for(const struct conf_transport *t)
{
	struct race_params p = {
		.attempt_delay_ms = t->attempt_delay_ms,
		.connect_timeout_ms = t->connect_timeout_s * 1000u,
		.source4 = t->has_source4 ? &t->source4 : NULL,
		.source6 = t->has_source6 ? &t->source6 : NULL,
	};
	return p;
}

static void
start_race(struct delivery *d, int only_family)
{
	struct race_target *list = xcalloc(d->ntargets ? d->ntargets : 1, sizeof(*list));
	size_t n = 0;
	for (size_t i = 0; i < d->ntargets; i++) {
		if (only_family != AF_UNSPEC &&
		    (netaddr_family(&d->targets[i].addr) != only_family || d->target_failed[i]))
			continue;
		d->race_map[n] = i;
		list[n++] = d->targets[i];
	}
	struct race_params p = race_params_for(d->transport);
	if (d->race)
		race_free(d->race);
	d->state = DELIVERY_CONNECT;
	d->race = race_new(d->denv.base, list, n, &p, on_race, on_race_fail, d);
	free(list);
	race_next(d->race);
}

static void
on_retry_race_fail(size_t index, int error, void *arg)
{
	struct delivery *d = arg;

	(void)index;
	connect_failed(d, d->retry_target, error);
}

/* The plaintext retry connected, or could not: then the main race resumes. */
static void
on_retry_race(enum race_event ev, int fd, size_t index, const struct race_failure *failures,
    size_t nfailures, void *arg)
{
	struct delivery *d = arg;
	(void)index;
	(void)failures;
	(void)nfailures;

	if (ev == RACE_CONNECTED) {
		start_session(d, fd, d->retry_target);
		return;
	}
	d->state = DELIVERY_CONNECT;
	race_next(d->race);
}

/* A new connection to the current target, for a session without STARTTLS. */
static void
start_plaintext_retry(struct delivery *d)
{
	struct race_params p = race_params_for(d->transport);

	d->retry_target = d->current;
	if (d->retry_race)
		race_free(d->retry_race);
	d->state = DELIVERY_CONNECT;
	d->retry_race = race_new(d->denv.base, &d->targets[d->current], 1, &p, on_retry_race,
	    on_retry_race_fail, d);
	race_next(d->retry_race);
}

/* ---- Step 3: the SMTP session ---- */

static void
result_from_reply(struct delivery *d, struct delivery_result *res, size_t rcpt_index,
    const struct smtp_reply *reply, enum smtp_client_stage stage)
{
	const struct race_target *t = &d->targets[d->current];
	char a[NETADDR_STRLEN], relay[DELIVERY_RELAY_MAX], dsn[16];
	char *line = smtp_reply_oneline(reply);

	relay_text(t, relay, sizeof(relay));
	smtp_reply_dsn(reply, "0.0", dsn, sizeof(dsn));
	if (reply->code >= 200 && reply->code < 300) {
		set_result(res, rcpt_index, RCPT_DELIVERED, dsn, relay, netaddr_family(&t->addr),
		    d->cur_tls, line);
		return;
	}
	set_result(res, rcpt_index, reply->code >= 500 ? RCPT_BOUNCED : RCPT_DEFERRED, dsn, relay,
	    netaddr_family(&t->addr), d->cur_tls, xasprintf("host %s[%s] said: %s (%s)", t->host,
		netaddr_ntop(&t->addr, a, sizeof(a)), line, smtp_client_stage_name(stage)));
	free(line);
}

static bool
blames_family(const struct delivery *d, const struct smtp_reply *r, enum smtp_client_stage st)
{
	return fallback_reply_blames_family(r, st, d->conf->family_fallback_patterns,
	    d->conf->nfamily_fallback_patterns);
}

/* The family to fall back to, or AF_UNSPEC when the transport or the plan forbids it. */
static int
fallback_family(const struct delivery *d)
{
	int cur = netaddr_family(&d->targets[d->current].addr);
	int other = cur == AF_INET6 ? AF_INET : AF_INET6;
	if (d->fell_back || !d->transport->family_fallback)
		return AF_UNSPEC;
	for (size_t i = 0; i < d->ntargets; i++)
		if (netaddr_family(&d->targets[i].addr) == other && !d->target_failed[i])
			return other;
	return AF_UNSPEC;
}

/* Logs the rejected attempt (the fallback's own outcome is logged by the queue). */
static void
log_fallback(struct delivery *d, size_t pos, int to)
{
	const struct delivery_result *r = &d->results[pos];
	log_info("%s: to=<%s>, relay=%s, family=%s, delay=%.2f, dsn=%s, status=fallback (%s; "
	    "retrying over %s), tls=%s", d->env->id, d->env->rcpts[r->index].addr, r->relay,
	    family_name(r->family), dr_now() - d->arrival, r->dsn, r->reason,
	    family_name(to), r->tls);
}

/* Narrows the session to the recipients at positions keep[0..n) and falls back. */
static void
begin_fallback(struct delivery *d, const size_t *keep, size_t n, int to)
{
	for (size_t i = 0; i < n; i++) {
		d->session[i] = keep[i];
		log_fallback(d, keep[i], to);
	}
	d->nsession = n;
	d->fell_back = true;
	d->fallback_family = to;
	d->denv.stats->fallback_smtp++;
	d->denv.stats->family_rejected[stats_family(netaddr_family(&d->targets[d->current].addr))]++;
	report_health(d, d->current, HEALTH_FAMILY_REJECTED);
	schedule_step(d, STEP_FALLBACK);
}

static void
on_session_completed(struct delivery *d, const struct smtp_client_result *r)
{
	size_t *blamed = xcalloc(d->nsession ? d->nsession : 1, sizeof(size_t));
	size_t nblamed = 0;
	bool any_ok = false;

	for (size_t i = 0; i < d->nsession && i < r->nrcpts; i++) {
		size_t pos = d->session[i];
		const struct smtp_client_rcpt_result *rr = &r->rcpts[i];
		result_from_reply(d, &d->results[pos], rr->index, &rr->reply, rr->stage);
		if (rr->reply.code >= 400 && blames_family(d, &rr->reply, rr->stage))
			blamed[nblamed++] = pos;
		else if (rr->reply.code < 400)
			any_ok = true;
	}
	if (any_ok)
		report_health(d, d->current, HEALTH_OK);
	int to = nblamed ? fallback_family(d) : AF_UNSPEC;
	if (to != AF_UNSPEC)
		begin_fallback(d, blamed, nblamed, to);
	else {
		if (nblamed)
			report_health(d, d->current, HEALTH_FAMILY_REJECTED);
		finish(d);
	}
	free(blamed);
}

static void
on_session(struct smtp_client *c, const struct smtp_client_result *r, void *arg)
{
	struct delivery *d = arg;
	(void)c;

	tls_info_format(&r->tls, d->cur_tls, sizeof(d->cur_tls));
	if (r->completed) {
		on_session_completed(d, r);
		return;
	}
	const struct race_target *t = &d->targets[d->current];
	char relay[DELIVERY_RELAY_MAX];
	relay_text(t, relay, sizeof(relay));
	if (r->reply.code != 0) {
		struct delivery_result tmp = { 0 };
		result_from_reply(d, &tmp, 0, &r->reply, r->stage);
		set_last_error(d, tmp.dsn, relay, tmp.family, d->cur_tls, tmp.reason);
	} else {
		/* TLS and AUTH failures decided by the client carry their own code. */
		set_last_error(d, r->dsn[0] ? r->dsn : "4.4.2", relay, netaddr_family(&t->addr),
		    d->cur_tls, xstrdup(r->error_text ? r->error_text : "lost connection"));
	}
	log_info("%s: %s (%s)", d->env->id, d->last_error, family_name(netaddr_family(&t->addr)));
	/* A failed handshake, or a certificate "verify" refused (4.7.5). */
	if (d->denv.stats != NULL && (r->tls_failed || strcmp(r->dsn, "4.7.5") == 0))
		d->denv.stats->tls_failed[stats_family(netaddr_family(&t->addr))]++;

	if (r->tls_failed && d->transport->tls == TLS_POLICY_MAY && !d->target_plain[d->current]) {
		/* Opportunistic TLS must not cost the delivery: try again without it. */
		log_info("%s: TLS failed with %s (tls = may): retrying in plaintext on a new "
		    "connection", d->env->id, relay);
		d->target_plain[d->current] = true;
		schedule_step(d, STEP_PLAINTEXT);
		return;
	}
	if (r->stage == SMTP_STAGE_AUTH && r->reply.code == 535) {
		/* RFC 4954 6: the smarthost refused our credentials; retrying will not help
		 * until the operator fixes them. The reply never holds the password. */
		fail_session(d, RCPT_BOUNCED, d->last_dsn, relay, d->last_family, d->last_tls,
		    d->last_error);
		finish(d);
		return;
	}

	if (r->reply.code >= 400 && blames_family(d, &r->reply, r->stage)) {
		int to = fallback_family(d);
		if (to != AF_UNSPEC) {
			fail_session(d, r->reply.code >= 500 ? RCPT_BOUNCED : RCPT_DEFERRED,
			    d->last_dsn, relay, d->last_family, d->last_tls, d->last_error);
			size_t *keep = xcalloc(d->nsession ? d->nsession : 1, sizeof(size_t));
			memcpy(keep, d->session, d->nsession * sizeof(size_t));
			begin_fallback(d, keep, d->nsession, to);
			free(keep);
			return;
		}
		report_health(d, d->current, HEALTH_FAMILY_REJECTED);
	}
	if (r->stage == SMTP_STAGE_MAIL && r->reply.code >= 500) {
		/* A permanent answer to MAIL FROM (or a synthesized one: SMTPUTF8, SIZE) is
		 * about this message, not this host: another MX would say the same. */
		fail_session(d, RCPT_BOUNCED, d->last_dsn, relay, d->last_family, d->last_tls,
		    d->last_error);
		finish(d);
		return;
	}
	/* Greeting, EHLO, temporary MAIL error or a broken connection: next address. A 5xx
	 * from this host is not final for the others; if it is the last, it stands as a
	 * deferral: only a host that took the recipients may refuse them for good. */
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

	enum delivery_step step = d->step;
	d->step = STEP_NONE;
	if (d->client) {
		/* A session that ended its transaction cleanly may serve the next message. */
		if (step == STEP_REPORT && d->denv.cache != NULL)
			conncache_put(d->denv.cache, d->transport->name, &d->targets[d->current].addr,
			    d->client, d->conf->queue.connection_cache_s);
		else
			smtp_client_free(d->client);
		d->client = NULL;
	}
	switch (step) {
	case STEP_NEXT_CANDIDATE:
		d->state = DELIVERY_CONNECT;
		if (d->race == NULL)
			start_race(d, AF_UNSPEC); /* the reused session was stale */
		else
			race_next(d->race);
		break;
	case STEP_FALLBACK:
		start_race(d, d->fallback_family);
		break;
	case STEP_PLAINTEXT:
		start_plaintext_retry(d);
		break;
	case STEP_REPORT:
		/* Last action: the owner may free us. */
		d->cb(d, d->results, d->nrcpts, d->arg);
		break;
	case STEP_NONE:
		break;
	}
}

/* ---- Life cycle ---- */

struct delivery *
delivery_start(const struct delivery_env *denv, const struct conf *conf,
    const struct envelope *env, double arrival, const char *domain, const size_t *rcpt_idx,
    size_t nrcpt, delivery_cb cb, void *arg)
{
	struct delivery *d = xcalloc(1, sizeof(*d));
	d->arrival = arrival;
	d->denv = *denv;
	d->conf = conf;
	d->env = env;
	d->domain = dr_strlower(xstrdup(domain));
	d->rcpts = xcalloc(nrcpt ? nrcpt : 1, sizeof(size_t));
	memcpy(d->rcpts, rcpt_idx, nrcpt * sizeof(size_t));
	d->nrcpts = nrcpt;
	d->session = xcalloc(nrcpt ? nrcpt : 1, sizeof(size_t));
	d->session_idx = xcalloc(nrcpt ? nrcpt : 1, sizeof(size_t));
	for (size_t i = 0; i < nrcpt; i++)
		d->session[i] = i;
	d->nsession = nrcpt;
	d->results = xcalloc(nrcpt ? nrcpt : 1, sizeof(*d->results));
	d->cb = cb;
	d->arg = arg;
	d->last_family = AF_UNSPEC;
	dr_strlcpy(d->last_tls, "none", sizeof(d->last_tls));
	dr_strlcpy(d->cur_tls, "none", sizeof(d->cur_tls));
	d->step_ev = event_new(denv->base, -1, 0, on_step, d);
	d->transport = route_lookup(conf, d->domain);
	d->state = DELIVERY_RESOLVE;
	d->nexthop = nexthop_resolve(denv->base, denv->dns, denv->health, denv->local, conf,
	    d->transport, d->domain, env->id, on_nexthop, d);
	return d;
}

void
delivery_free(struct delivery *d)
{
	if (d == NULL)
		return;
	if (d->client)
		smtp_client_free(d->client);
	if (d->race)
		race_free(d->race);
	if (d->retry_race)
		race_free(d->retry_race);
	nexthop_free(d->nexthop);
	free(d->targets);
	free(d->target_failed);
	free(d->target_plain);
	free(d->race_map);
	for (size_t i = 0; i < d->nrcpts; i++)
		free(d->results[i].reason);
	free(d->results);
	free(d->rcpts);
	free(d->session);
	free(d->session_idx);
	free(d->domain);
	free(d->last_error);
	event_free(d->step_ev);
	free(d);
}
