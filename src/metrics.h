/*
 * metrics: the daemon's counters in the Prometheus text exposition format (version 0.0.4)
 * over an optional HTTP listener (metrics_listen), meant for localhost: GET /metrics
 * answers with the same numbers dualrelayctl stats prints (struct stats, the queue's
 * gauges, the inbound session count), labelled by address family and outcome. Anything
 * else gets 404; methods other than GET and HEAD get 405 (evhttp).
 */
#ifndef DR_METRICS_H
#define DR_METRICS_H

#include <stdint.h>
#include <time.h>

#include "netaddr.h"
#include "queue.h"
#include "stats.h"

struct event_base;
struct evbuffer;
struct smtp_server;
struct metrics;

/* Where a scrape reads from; borrowed, must outlive the listener. */
struct metrics_deps {
	struct event_base *base;
	const struct stats *stats;
	const struct queue *queue;          /* may be NULL (no queue gauges: zeros) */
	const struct smtp_server *server;   /* may be NULL (connections 0) */
};

/* One consistent reading of everything exported; filled by the scrape handler. */
struct metrics_sample {
	struct stats stats;
	struct queue_stats queue;
	unsigned connections;               /* inbound SMTP sessions now */
};

/*
 * Appends the exposition text for s to out: "# HELP" and "# TYPE" for every family,
 * counters named *_total, one line per label set. now is used for the age of the
 * oldest queued message. Pure: no I/O, so tests can check the text.
 */
void metrics_format(const struct metrics_sample *s, time_t now, struct evbuffer *out);

/* Binds addr and serves /metrics on deps->base. NULL on failure (logged). */
struct metrics *metrics_new(const struct metrics_deps *deps, const struct netaddr *addr);
/* The port bound (the one chosen by the kernel when addr's port was 0, as in tests). */
uint16_t metrics_port(const struct metrics *m);
/* Closes the listener and any scrape in progress; NULL is fine. */
void metrics_free(struct metrics *m);

#endif
