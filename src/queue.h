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
	unsigned long received;   /* messages handed over by the SMTP server */
	unsigned long delivered;  /* recipients */
	unsigned long deferred;   /* recipient attempts that deferred */
	unsigned long bounced;    /* recipients */
	size_t messages;          /* now in the queue */
	size_t active;            /* deliveries running now */
};

/* conf is referenced (conf_ref) and released at queue_free or replacement. */
struct health;

/* health may be NULL. */
struct queue *queue_new(struct event_base *base, struct spool *spool, struct dns *dns,
    struct health *health, struct conf *conf);
void queue_set_conf(struct queue *q, struct conf *conf);
/* Loads the spool (spool_recover); returns messages loaded or -1. */
long queue_recover(struct queue *q);
/* A newly committed message; ownership of e passes to the queue. Delivered at once. */
void queue_add(struct queue *q, struct envelope *e);
void queue_get_stats(const struct queue *q, struct queue_stats *out);
/* Stops all deliveries (recipients in flight stay as they are on disk) and frees. */
void queue_free(struct queue *q);

/*
 * Retry interval after the given number of failed attempts: min doubled per attempt,
 * capped at max, then moved by up to +-10% using rnd (uniform over uint32_t), so
 * messages deferred together do not retry in lock-step. Pure, for tests.
 */
unsigned queue_backoff_s(unsigned attempts, unsigned min_s, unsigned max_s, uint32_t rnd);

#endif
