/*
 * queue: the scheduler. Holds every queued message in memory (envelopes loaded from the
 * spool at start, or handed over by the SMTP server after commit), decides when each
 * recipient is tried, groups a message's due recipients by domain into deliveries
 * (delivery.c), bounds how many run at once, and records every outcome: one log line per
 * recipient in Postfix's form and one spool state record, before anything else happens
 * to that recipient. Messages whose recipients are all final are removed from the spool.
 *
 * Time order is a binary heap keyed by each message's next due time, so an event costs
 * O(log n) whatever the queue size; there is no periodic scan.
 */
#ifndef DR_QUEUE_H
#define DR_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "conf.h"
#include "envelope.h"

struct event_base;
struct dns;
struct spool;
struct queue;

struct queue_stats {
	size_t messages;          /* now in the queue */
	size_t held;              /* of which on hold */
	size_t active;            /* deliveries running now */
	time_t oldest_arrival;    /* 0 when empty */
};

struct health;
struct stats;
struct conncache;

/* What the queue works with; borrowed. health and stats may be NULL. */
struct queue_deps {
	struct event_base *base;
	struct spool *spool;
	struct dns *dns;
	struct health *health;
	struct stats *stats;
	struct conncache *cache; /* idle outbound sessions to reuse; may be NULL */
	/* Syncs removals off the event loop (spool_commit.h); NULL: on the loop. */
	struct spool_committer *committer;
};

/* conf is referenced (conf_ref) and released at queue_free or replacement. */
struct queue *queue_new(const struct queue_deps *deps, struct conf *conf);
void queue_set_conf(struct queue *q, struct conf *conf);
/* Loads the spool (spool_recover); returns messages loaded or -1. */
long queue_recover(struct queue *q);
/* A newly committed message; ownership of e passes to the queue. Delivered at once. */
void queue_add(struct queue *q, struct envelope *e);
void queue_get_stats(const struct queue *q, struct queue_stats *out);

/* Operator actions (dualrelayctl). */
typedef void (*queue_visit_fn)(const struct envelope *e, bool active, void *arg);
/* Every message in arrival order of insertion; active: a delivery is running. */
void queue_foreach(const struct queue *q, queue_visit_fn fn, void *arg);
/* NULL when not queued. */
const struct envelope *queue_find(const struct queue *q, const char *id, bool *active);
/* Makes deferred recipients due now: of one message (an id), of the messages with a
 * recipient in a domain, or all (NULL). Returns the number of messages affected. */
size_t queue_flush(struct queue *q, const char *id_or_domain);
/* Removes a message (after its running deliveries end). 0, or -1 when not queued. */
int queue_delete(struct queue *q, const char *id);
/* Holds (no delivery until released) or releases a message; persisted. 0 or -1. */
int queue_hold(struct queue *q, const char *id, bool hold);
/* Stops all deliveries (recipients in flight stay as they are on disk) and frees. */
void queue_free(struct queue *q);

/*
 * Retry interval after the given number of failed attempts: min doubled per attempt,
 * capped at max, then moved by up to +-10% using rnd (uniform over uint32_t), so
 * messages deferred together do not retry in lock-step. Pure, for tests.
 */
unsigned queue_backoff_s(unsigned attempts, unsigned min_s, unsigned max_s, uint32_t rnd);
/* Postfix's maximal_queue_lifetime: has a message that arrived then outlived the limit? */
bool queue_expired(time_t arrival, time_t now, unsigned max_lifetime_s);

#endif
