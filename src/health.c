/*
 * health: per destination and per egress family memory (see health.h). Entries live in
 * small arrays searched linearly: a relay talks to a bounded set of MX hosts, and an
 * entry that has been good for a day is dropped at the next save.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "health.h"
#include "log.h"
#include "netaddr.h"
#include "util.h"

#define EGRESS_RECENT 16       /* timeouts remembered per egress */
#define FORGET_AFTER_S 86400   /* good entries older than this are dropped */

struct dest_entry {
	char *name;              /* MX host, lower case; owned */
	int family;
	unsigned failures;       /* consecutive */
	time_t bad_until;        /* 0: good */
	time_t last_event;
	enum health_event why;
};

struct timeout_note {
	char *dest;              /* owned */
	time_t when;
};

struct egress_entry {
	char *transport;         /* owned */
	int family;
	time_t bad_until;
	time_t next_probe;
	struct timeout_note recent[EGRESS_RECENT]; /* ring */
	size_t next;
};

struct health {
	char *path;              /* owned; NULL: not persisted */
	struct health_params p;
	struct dest_entry *dests;
	size_t ndests, dests_cap;
	struct egress_entry *egress;
	size_t negress, egress_cap;
};

static const struct health_params health_defaults = { 600, 21600, 300, 3, 1800, 600 };

const char *
health_event_name(enum health_event ev)
{
	switch (ev) {
	case HEALTH_OK: return "ok";
	case HEALTH_CONNECT_FAILED: return "connect failed";
	case HEALTH_CONNECT_TIMEOUT: return "connect timeout";
	case HEALTH_FAMILY_REJECTED: return "rejected for the client address";
	}
	return "?";
}

static const char *
fam(int family)
{
	return netaddr_family_name(family);
}

struct health *
health_new(const char *state_path, const struct health_params *params)
{
	struct health *h = xcalloc(1, sizeof(*h));
	h->path = state_path ? xstrdup(state_path) : NULL;
	h->p = params ? *params : health_defaults;
	return h;
}

void
health_free(struct health *h)
{
	if (h == NULL)
		return;
	for (size_t i = 0; i < h->ndests; i++)
		free(h->dests[i].name);
	for (size_t i = 0; i < h->negress; i++) {
		free(h->egress[i].transport);
		for (size_t k = 0; k < EGRESS_RECENT; k++)
			free(h->egress[i].recent[k].dest);
	}
	free(h->dests);
	free(h->egress);
	free(h->path);
	free(h);
}

static struct dest_entry *
dest_find(struct health *h, const char *name, int family, bool create)
{
	for (size_t i = 0; i < h->ndests; i++)
		if (h->dests[i].family == family && strcasecmp(h->dests[i].name, name) == 0)
			return &h->dests[i];
	if (!create)
		return NULL;
	h->dests = xgrow(h->dests, sizeof(*h->dests), h->ndests + 1, &h->dests_cap);
	struct dest_entry *e = &h->dests[h->ndests++];
	memset(e, 0, sizeof(*e));
	e->name = dr_strlower(xstrdup(name));
	e->family = family;
	return e;
}

static struct egress_entry *
egress_find(struct health *h, const char *transport, int family, bool create)
{
	for (size_t i = 0; i < h->negress; i++)
		if (h->egress[i].family == family && strcmp(h->egress[i].transport, transport) == 0)
			return &h->egress[i];
	if (!create)
		return NULL;
	h->egress = xgrow(h->egress, sizeof(*h->egress), h->negress + 1, &h->egress_cap);
	struct egress_entry *e = &h->egress[h->negress++];
	memset(e, 0, sizeof(*e));
	e->transport = xstrdup(transport);
	e->family = family;
	return e;
}

/* ---- Persistence: "D family failures bad_until last_event why name" / "E family bad_until next_probe transport" ---- */

static int
health_save(struct health *h, time_t now)
{
	if (h->path == NULL)
		return 0;
	char *tmp = xasprintf("%s.tmp", h->path);
	FILE *f = fopen(tmp, "w");
	if (f == NULL) {
		log_error("health: cannot write %s: %s", tmp, strerror(errno));
		free(tmp);
		return -1;
	}
	for (size_t i = 0; i < h->ndests; i++) {
		const struct dest_entry *e = &h->dests[i];
		if (e->bad_until <= now && now - e->last_event > FORGET_AFTER_S)
			continue;
		fprintf(f, "D %d %u %lld %lld %d %s\n", e->family == AF_INET6 ? 6 : 4, e->failures,
		    (long long)e->bad_until, (long long)e->last_event, (int)e->why, e->name);
	}
	for (size_t i = 0; i < h->negress; i++) {
		const struct egress_entry *e = &h->egress[i];
		if (e->bad_until > now)
			fprintf(f, "E %d %lld %lld %s\n", e->family == AF_INET6 ? 6 : 4,
			    (long long)e->bad_until, (long long)e->next_probe, e->transport);
	}
	int rc = 0;
	if (fflush(f) != 0 || fsync(fileno(f)) != 0)
		rc = -1;
	if (fclose(f) != 0)
		rc = -1;
	if (rc == 0 && rename(tmp, h->path) != 0)
		rc = -1;
	if (rc < 0) {
		log_error("health: cannot save %s: %s", h->path, strerror(errno));
		unlink(tmp);
	}
	free(tmp);
	return rc;
}

int
health_load(struct health *h, time_t now)
{
	return h->path ? health_load_file(h, h->path, now) : 0;
}

int
health_load_file(struct health *h, const char *path, time_t now)
{
	FILE *f = fopen(path, "r");
	if (f == NULL) {
		if (errno == ENOENT)
			return 0;
		log_error("health: cannot read %s: %s", path, strerror(errno));
		return -1;
	}
	char line[512], name[300];
	int family, why;
	unsigned failures;
	long long until, last;
	size_t bad = 0;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "D %d %u %lld %lld %d %299s", &family, &failures, &until, &last, &why,
			name) == 6 && (family == 4 || family == 6) && why >= 0 &&
		    why <= HEALTH_FAMILY_REJECTED) {
			struct dest_entry *e = dest_find(h, name, family == 6 ? AF_INET6 : AF_INET, true);
			e->failures = failures;
			e->bad_until = (time_t)until;
			e->last_event = (time_t)last;
			e->why = (enum health_event)why;
		} else if (sscanf(line, "E %d %lld %lld %299s", &family, &until, &last, name) == 4 &&
		    (family == 4 || family == 6)) {
			struct egress_entry *e = egress_find(h, name, family == 6 ? AF_INET6 : AF_INET,
			    true);
			e->bad_until = (time_t)until;
			e->next_probe = (time_t)last;
		} else {
			bad++;
		}
	}
	fclose(f);
	if (bad)
		log_warn("health: %zu unreadable line%s in %s ignored", bad, bad == 1 ? "" : "s",
		    path);
	size_t nbad = 0;
	for (size_t i = 0; i < h->ndests; i++)
		nbad += h->dests[i].bad_until > now;
	log_info("health: %zu destination famil%s marked bad loaded from %s", nbad,
	    nbad == 1 ? "y" : "ies", path);
	return 0;
}

/* ---- Events ---- */

static void
egress_note_timeout(struct health *h, const char *transport, const char *dest, int family,
    time_t now)
{
	struct egress_entry *e = egress_find(h, transport, family, true);
	struct timeout_note *n = &e->recent[e->next];
	free(n->dest);
	n->dest = dr_strlower(xstrdup(dest));
	n->when = now;
	e->next = (e->next + 1) % EGRESS_RECENT;

	/* Count distinct destinations that timed out within the window. */
	const char *seen[EGRESS_RECENT];
	size_t distinct = 0;
	for (size_t i = 0; i < EGRESS_RECENT; i++) {
		const struct timeout_note *t = &e->recent[i];
		if (t->dest == NULL || now - t->when > (time_t)h->p.egress_window_s)
			continue;
		bool dup = false;
		for (size_t k = 0; k < distinct && !dup; k++)
			dup = strcmp(seen[k], t->dest) == 0;
		if (!dup)
			seen[distinct++] = t->dest;
	}
	if (distinct >= h->p.egress_threshold && e->bad_until <= now) {
		e->bad_until = now + h->p.egress_penalty_s;
		e->next_probe = now + h->p.probe_interval_s;
		log_warn("health: %s egress of transport %s marked bad for %u s: connections to %zu "
		    "destinations timed out within %u s (outbound port blocked?)", fam(family),
		    transport, h->p.egress_penalty_s, distinct, h->p.egress_window_s);
	}
}

void
health_report(struct health *h, const char *transport, const char *dest, int family,
    enum health_event ev, time_t now)
{
	if (family != AF_INET && family != AF_INET6)
		return;
	struct dest_entry *e = dest_find(h, dest, family, ev != HEALTH_OK);
	bool changed = false;

	if (ev == HEALTH_OK) {
		struct egress_entry *g = egress_find(h, transport, family, false);
		if (g && g->bad_until > now) {
			g->bad_until = 0;
			log_info("health: %s egress of transport %s works again", fam(family), transport);
			changed = true;
		}
		if (e == NULL)
			goto out;
		e->last_event = now;
		if (e->bad_until > now || e->failures > 0) {
			if (e->bad_until > now)
				log_info("health: %s %s good again", e->name, fam(family));
			e->bad_until = 0;
			e->failures = 0;
			changed = true;
		}
		goto out;
	}
	e->failures++;
	e->last_event = now;
	e->why = ev;
	unsigned penalty = h->p.penalty_s;
	for (unsigned i = 1; i < e->failures && penalty < h->p.penalty_max_s; i++)
		penalty *= 2;
	if (penalty > h->p.penalty_max_s)
		penalty = h->p.penalty_max_s;
	bool was_bad = e->bad_until > now;
	e->bad_until = now + penalty;
	log_info("health: %s %s %s for %u s (%s, failure %u)", e->name, fam(family),
	    was_bad ? "stays bad" : "marked bad", penalty, health_event_name(ev), e->failures);
	changed = true;
	if (ev == HEALTH_CONNECT_TIMEOUT)
		egress_note_timeout(h, transport, dest, family, now);
out:
	if (changed)
		health_save(h, now);
}

bool
health_avoid(struct health *h, const char *transport, const char *dest, int family,
    time_t now, const char **why)
{
	struct egress_entry *g = egress_find(h, transport, family, false);
	if (g && g->bad_until > now) {
		if (now >= g->next_probe) {
			g->next_probe = now + h->p.probe_interval_s;
			log_info("health: probing %s egress of transport %s via %s", fam(family),
			    transport, dest);
			return false;
		}
		if (why)
			*why = "egress of this family looks blocked";
		return true;
	}
	struct dest_entry *e = dest_find(h, dest, family, false);
	if (e && e->bad_until > now) {
		if (why)
			*why = health_event_name(e->why);
		return true;
	}
	return false;
}

void
health_foreach(const struct health *h, time_t now, health_visit_fn fn, void *arg)
{
	for (size_t i = 0; i < h->negress; i++) {
		const struct egress_entry *e = &h->egress[i];
		struct health_view v = { "egress", e->transport, e->family, e->bad_until > now,
			e->bad_until, 0, "outbound connections time out" };
		fn(&v, arg);
	}
	for (size_t i = 0; i < h->ndests; i++) {
		const struct dest_entry *e = &h->dests[i];
		struct health_view v = { "destination", e->name, e->family, e->bad_until > now,
			e->bad_until, e->failures, health_event_name(e->why) };
		fn(&v, arg);
	}
}
