/*
 * health: memory of how each address family fares, per destination (MX host) and per
 * transport's egress, so that a family that just failed is tried last next time.
 *
 * Per destination x family: connect failures, timeouts and SMTP rejections that blame the
 * family mark it bad for penalty_s (10 minutes), doubling on each further failure up to
 * penalty_max_s; a success clears it. Per transport x family ("egress"): when attempts to
 * egress_threshold distinct destinations time out within egress_window_s, the provider
 * probably blocks that family's port 25: the family is bad for the whole transport for
 * egress_penalty_s, and only one probe attempt is let through per probe_interval_s.
 *
 * State changes are logged and saved to a file (atomically, tmp + rename) so a restart
 * does not forget them. Time is passed in, so tests control it.
 */
#ifndef DR_HEALTH_H
#define DR_HEALTH_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

struct health;

enum health_event {
	HEALTH_OK = 0,            /* connected and the session went through */
	HEALTH_CONNECT_FAILED,    /* refused, unreachable */
	HEALTH_CONNECT_TIMEOUT,   /* no answer at all (blackhole) */
	HEALTH_FAMILY_REJECTED,   /* the receiver refused us for our address (PTR, ...) */
};

struct health_params {
	unsigned penalty_s;        /* default 600 */
	unsigned penalty_max_s;    /* default 21600 */
	unsigned egress_window_s;  /* default 300 */
	unsigned egress_threshold; /* distinct destinations; default 3 */
	unsigned egress_penalty_s; /* default 1800 */
	unsigned probe_interval_s; /* default 600 */
};

/* What an operator sees (dualrelayctl health, route explanations). */
struct health_view {
	const char *scope;       /* "destination" or "egress" */
	const char *name;        /* MX host, or transport name */
	int family;
	bool bad;
	time_t until;            /* when bad */
	unsigned failures;
	const char *why;         /* last event that marked it bad */
};

/* state_path may be NULL (no persistence). params NULL: defaults. */
struct health *health_new(const char *state_path, const struct health_params *params);
void health_free(struct health *h);
/* Loads the saved state; a missing file is fine. Returns 0, or -1 (logged). */
int health_load(struct health *h, time_t now);
/* Loads another file's state (e.g. the daemon's, for a read-only explanation). */
int health_load_file(struct health *h, const char *path, time_t now);

void health_report(struct health *h, const char *transport, const char *dest, int family,
    enum health_event ev, time_t now);

/*
 * Should this family be avoided (tried last) for dest over transport now? When the
 * egress is bad but a probe is due, returns false once and starts the probe interval.
 * why (may be NULL) gets a static description.
 */
bool health_avoid(struct health *h, const char *transport, const char *dest, int family,
    time_t now, const char **why);

typedef void (*health_visit_fn)(const struct health_view *v, void *arg);
void health_foreach(const struct health *h, time_t now, health_visit_fn fn, void *arg);

const char *health_event_name(enum health_event ev);

#endif
