/*
 * queue: the scheduler (see queue.h). Every message in memory is a queue_msg; a message
 * with recipients to try sits in the time heap at its earliest due time. When it comes
 * due, its due recipients are grouped by domain into jobs; jobs wait per destination
 * (recipient domain) until a slot is free both globally (queue.max_active) and for that
 * destination (queue.destination_concurrency), then run. Destinations with waiting jobs
 * and a free slot take turns (round robin), so one busy domain cannot starve the others,
 * and finding the next job never scans the queue. A job's outcome is written
 * to the spool and logged recipient by recipient, then the message is rescheduled at its
 * next due time, or removed when every recipient is final.
 *
 * Ownership: the queue owns messages (and their envelopes) and jobs; a job borrows its
 * message, which is never freed while a job of it exists, and holds a conf reference so
 * a reload cannot free the conf under a running delivery. The queue also owns the
 * snapshot of this host's addresses (localaddr.c) that every delivery borrows for its
 * mail loop check, so the daemon lists its interfaces at most once a second.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include <event2/event.h>

#include "bounce.h"
#include "delivery.h"
#include "localaddr.h"
#include "log.h"
#include "netaddr.h"
#include "notify.h"
#include "queue.h"
#include "spool.h"
#include "spool_commit.h"
#include "stats.h"
#include "util.h"

#define HEAP_NONE SIZE_MAX

struct queue_msg {
	TAILQ_ENTRY(queue_msg) all; /* every message, for shutdown */
	struct envelope *env;    /* owned */
	double arrival;          /* wall clock, sub-second when received in this run */
	double due;              /* when to look at it again (valid while in the heap) */
	size_t heap_pos;         /* HEAP_NONE when not in the heap */
	bool *busy;              /* per recipient: part of a running or waiting job */
	unsigned jobs;           /* jobs (waiting or running) of this message */
	bool deleted;            /* removed by the operator: drop when its jobs end */
	struct notify_item *notify; /* failed/delayed recipients whose DSN is not yet queued */
	size_t nnotify, notify_cap;
	double notify_retry;     /* when to try again a failure DSN the spool refused; 0: none */
};

struct queue_dest;

struct queue_job {
	TAILQ_ENTRY(queue_job) entry;
	struct queue *q;
	struct queue_dest *dest; /* the destination it waits or runs for */
	struct queue_msg *msg;   /* borrowed; kept alive by msg->jobs */
	char *domain;            /* owned */
	size_t *rcpts;           /* owned */
	size_t nrcpts;
	struct conf *conf;       /* referenced */
	struct delivery *delivery; /* NULL while waiting */
};
TAILQ_HEAD(queue_job_list, queue_job);
TAILQ_HEAD(queue_msg_list, queue_msg);

/* One recipient domain's jobs; exists while it has jobs waiting or running. */
struct queue_dest {
	char *name;              /* owned, lower case */
	struct queue_dest *hnext;/* hash chain */
	struct queue_job_list waiting;
	size_t nwaiting;
	unsigned running;
	bool ready;              /* in the queue's ready list */
	TAILQ_ENTRY(queue_dest) ready_entry;
};
TAILQ_HEAD(queue_dest_list, queue_dest);

#define DEST_BUCKETS 4096

/*
 * A destination whose last delivery could not reach any of its hosts (connect failures,
 * DNS failures: every recipient deferred with a 4.4.x status). Until `until`, further
 * jobs for it are deferred at once without a connection attempt, as Postfix suspends a
 * dead destination, so a host that is down is not hammered by every queued message.
 */
struct dead_dest {
	char *domain;            /* owned */
	time_t until;
	char *why;               /* owned: the failure that made it dead */
	char dsn[sizeof(((struct delivery_result *)0)->dsn)]; /* that failure's status (4.4.x) */
};

struct queue {
	struct event_base *base;
	struct spool *spool;
	struct dns *dns;
	struct health *health;   /* borrowed, may be NULL */
	struct conncache *cache; /* borrowed, may be NULL */
	struct localaddr_cache *local; /* owned: this host's addresses, for every delivery */
	struct conf *conf;       /* referenced */
	struct queue_msg **heap; /* min-heap on due */
	size_t nheap, heap_cap;
	size_t nmsgs;
	struct queue_msg_list msgs;
	struct queue_dest *dests[DEST_BUCKETS]; /* by name */
	struct queue_dest_list ready; /* destinations with a job waiting and a free slot */
	struct queue_job_list running;
	size_t nrunning;
	struct event *wake_ev;   /* fires at the heap top's due time */
	struct spool_committer *committer; /* borrowed; may be NULL */
	struct stats *stats;     /* borrowed counters */
	struct dead_dest *dead;  /* destinations that just failed to connect */
	size_t ndead, dead_cap;
	struct stats own_stats;  /* used when the caller gives none */
};

static void queue_arm(struct queue *q);
static void queue_pump(struct queue *q);

/*
 * Whole seconds on the clock the scheduler compares due times with (dr_now, i.e.
 * gettimeofday). Not time(NULL): Linux serves that from a coarse clock that lags
 * gettimeofday by up to a tick, so just after a second boundary a recipient found due
 * by dr_now() would get its next attempt computed from the previous second, be due
 * again at once and be deferred over and over until time(NULL) caught up; and a dead
 * destination's "until" would still look a second away.
 */
static time_t
queue_time(void)
{
	return (time_t)dr_now();
}

unsigned
queue_backoff_s(unsigned attempts, unsigned min_s, unsigned max_s, uint32_t rnd)
{
	if (min_s == 0)
		min_s = 1;
	if (max_s < min_s)
		max_s = min_s;
	double t = min_s;
	for (unsigned i = 1; i < attempts && t < max_s; i++)
		t *= 2;
	if (t > max_s)
		t = max_s;
	/* jitter in [-10%, +10%] */
	double j = ((double)rnd / 4294967295.0) * 0.2 - 0.1;
	t += t * j;
	return t < 1 ? 1 : (unsigned)(t + 0.5);
}

bool
queue_expired(time_t arrival, time_t now, unsigned max_lifetime_s)
{
	/* A clock that went backwards never expires anything early. */
	return now >= arrival && (unsigned long long)(now - arrival) >= max_lifetime_s;
}

/* ---- The heap ---- */

static void
heap_swap(struct queue *q, size_t a, size_t b)
{
	struct queue_msg *t = q->heap[a];
	q->heap[a] = q->heap[b];
	q->heap[b] = t;
	q->heap[a]->heap_pos = a;
	q->heap[b]->heap_pos = b;
}

static void
heap_up(struct queue *q, size_t i)
{
	while (i > 0) {
		size_t p = (i - 1) / 2;
		if (q->heap[p]->due <= q->heap[i]->due)
			break;
		heap_swap(q, p, i);
		i = p;
	}
}

static void
heap_down(struct queue *q, size_t i)
{
	for (;;) {
		size_t l = 2 * i + 1, r = l + 1, m = i;
		if (l < q->nheap && q->heap[l]->due < q->heap[m]->due)
			m = l;
		if (r < q->nheap && q->heap[r]->due < q->heap[m]->due)
			m = r;
		if (m == i)
			return;
		heap_swap(q, i, m);
		i = m;
	}
}

static void
heap_remove(struct queue *q, struct queue_msg *m)
{
	size_t i = m->heap_pos;
	if (i == HEAP_NONE)
		return;
	m->heap_pos = HEAP_NONE;
	q->nheap--;
	if (i == q->nheap)
		return;
	q->heap[i] = q->heap[q->nheap];
	q->heap[i]->heap_pos = i;
	heap_up(q, i);
	heap_down(q, q->heap[i]->heap_pos);
}

static void
heap_set(struct queue *q, struct queue_msg *m, double due)
{
	heap_remove(q, m);
	m->due = due;
	q->heap = xgrow(q->heap, sizeof(*q->heap), q->nheap + 1, &q->heap_cap);
	m->heap_pos = q->nheap;
	q->heap[q->nheap++] = m;
	heap_up(q, m->heap_pos);
}

/* ---- Messages ---- */

static bool
rcpt_open(const struct envelope_rcpt *r)
{
	return r->state == RCPT_PENDING || r->state == RCPT_DEFERRED;
}

/* Earliest time any idle, unfinished recipient is due; 0 when none. */
static double
msg_next_due(const struct queue_msg *m)
{
	double due = 0;
	if (m->env->held || m->deleted)
		return 0;
	for (size_t i = 0; i < m->env->nrcpts; i++) {
		const struct envelope_rcpt *r = &m->env->rcpts[i];
		if (!rcpt_open(r) || m->busy[i])
			continue;
		double t = r->state == RCPT_PENDING ? 1 : (double)r->next_attempt;
		if (due == 0 || t < due)
			due = t;
	}
	return due;
}

static void
msg_free(struct queue_msg *m)
{
	free(m->notify);
	envelope_free(m->env);
	free(m->busy);
	free(m);
}

static void
msg_forget(struct queue *q, struct queue_msg *m)
{
	heap_remove(q, m);
	TAILQ_REMOVE(&q->msgs, m, all);
	q->nmsgs--;
	msg_free(m);
}

static void queue_insert(struct queue *q, struct envelope *e, double arrival, bool recovered);

/* A removal handed to the commit thread; logged when the files are gone. */
struct removal {
	bool by_operator;
	char id[ENVELOPE_ID_MAX];
};

static void
on_removed(int error, void *arg)
{
	struct removal *r = arg;

	if (error != 0)
		log_error("%s: cannot remove queue file: %s", r->id, strerror(error));
	else
		log_info("%s: removed%s", r->id, r->by_operator ? " by the operator" : "");
	free(r);
}

static void
msg_remove(struct queue *q, struct queue_msg *m)
{
	struct removal *r = xcalloc(1, sizeof(*r));

	r->by_operator = m->deleted;
	snprintf(r->id, sizeof(r->id), "%s", m->env->id);
	spool_remove_later(q->committer, q->spool, m->env->id, on_removed, r);
}

static void
msg_note(struct queue_msg *m, size_t index, const char *relay, int family, int delayed)
{
	m->notify = xgrow(m->notify, sizeof(*m->notify), m->nnotify + 1, &m->notify_cap);
	struct notify_item *it = &m->notify[m->nnotify++];
	memset(it, 0, sizeof(*it));
	it->index = index;
	dr_strlcpy(it->relay, relay ? relay : "none", sizeof(it->relay));
	it->family = family;
	it->when = queue_time();
	it->delayed = delayed;
}

/*
 * Records that the DSN for items (of one kind) is queued: "N" per failed recipient, "W"
 * for a delay warning. Skipped when the message is about to be removed (the removal is
 * its record): a crash before that removal is durable yields at most a duplicate DSN.
 */
static void
msg_mark_notified(struct queue *q, struct queue_msg *m, const struct notify_item *items,
    size_t n, int delayed, bool removing)
{
	struct envelope *e = m->env;

	if (delayed) {
		e->delay_warned = true;
		if (!removing && spool_update_delay_warned(q->spool, e) < 0)
			log_error("%s: cannot record the delay warning: %s", e->id, strerror(errno));
		return;
	}
	size_t *idx = xcalloc(n, sizeof(*idx));
	for (size_t i = 0; i < n; i++) {
		idx[i] = items[i].index;
		e->rcpts[idx[i]].notified = true;
	}
	if (!removing && spool_update_notified(q->spool, e, idx, n) < 0)
		/* The DSN is queued: after a crash it would only be sent twice. */
		log_error("%s: cannot record the notification of %zu recipient%s: %s", e->id, n,
		    n == 1 ? "" : "s", strerror(errno));
	free(idx);
}

/*
 * One DSN per message and attempt (and kind): once every job of this round has ended.
 * The bounced recipients' state records are on disk already; their "N" records follow
 * only once the DSN is committed, so a crash in between leaves them owing a DSN, which
 * queue_insert finds at recovery. Returns false when a failure DSN could not be queued
 * (spool error): its items stay in m->notify to be tried again. A delay warning that
 * fails is not retried (best effort: it is a courtesy, and the failure or the delivery
 * follows anyway).
 */
static bool
msg_notify(struct queue *q, struct queue_msg *m)
{
	bool removing = m->deleted || envelope_done(m->env);
	struct notify_item *retry = NULL; /* failures to try again, or NULL */
	size_t nretry = 0;

	if (m->nnotify == 0)
		return true;
	for (int delayed = 0; delayed < 2; delayed++) {
		struct notify_item *items = xcalloc(m->nnotify, sizeof(*items));
		size_t n = 0;
		for (size_t i = 0; i < m->nnotify; i++)
			if (m->notify[i].delayed == delayed)
				items[n++] = m->notify[i];
		struct envelope *dsn = n ? notify_compose(q->spool, q->conf, m->env, items, n) : NULL;
		if (dsn) {
			msg_mark_notified(q, m, items, n, delayed, removing);
			q->stats->bounces_sent++;
			queue_insert(q, dsn, dr_now(), false);
		} else if (n && delayed) {
			m->env->delay_warned = true; /* once per message: not retried */
		} else if (n && bounce_should_send(m->env->sender)) {
			retry = items;  /* ownership moves */
			nretry = n;
			continue;
		}
		free(items);
	}
	free(m->notify);
	m->notify = retry;
	m->nnotify = nretry;
	m->notify_cap = nretry;
	return retry == NULL;
}

/* After any change: remove a finished message, or put it back in the heap. */
static void
msg_settle(struct queue *q, struct queue_msg *m)
{
	m->notify_retry = 0;
	if (m->jobs == 0 && !msg_notify(q, m)) {
		/* Not removed while the sender is owed a DSN: the spool may recover soon. */
		unsigned wait = q->conf->queue.retry_min_s ? q->conf->queue.retry_min_s : 1;
		m->notify_retry = dr_now() + wait;
	}
	if (m->jobs > 0) {
		heap_remove(q, m);
		double due = msg_next_due(m);
		if (due > 0)
			heap_set(q, m, due);
		return;
	}
	if ((m->deleted || envelope_done(m->env)) && m->notify_retry == 0) {
		msg_remove(q, m);
		msg_forget(q, m);
		return;
	}
	double due = msg_next_due(m);
	if (m->notify_retry > 0 && (due == 0 || m->notify_retry < due))
		due = m->notify_retry;
	if (due > 0)
		heap_set(q, m, due);
	else
		heap_remove(q, m);
}

static struct queue_msg *
msg_new(struct queue *q, struct envelope *e, double arrival)
{
	struct queue_msg *m = xcalloc(1, sizeof(*m));
	m->env = e;
	m->arrival = arrival;
	m->heap_pos = HEAP_NONE;
	m->busy = xcalloc(e->nrcpts ? e->nrcpts : 1, sizeof(bool));
	TAILQ_INSERT_TAIL(&q->msgs, m, all);
	q->nmsgs++;
	return m;
}

/* ---- Outcomes ---- */

static void
log_outcome(const struct queue_msg *m, const struct envelope_rcpt *r, const char *relay,
    int family, const char *tls, const char *status)
{
	/* tls= last: tests and log parsers match the fields before it as they were. */
	log_info("%s: to=<%s>, relay=%s, family=%s, delay=%.2f, dsn=%s, status=%s (%s), tls=%s",
	    m->env->id, r->addr, relay,
	    family == AF_INET || family == AF_INET6 ? netaddr_family_name(family) : "none",
	    dr_now() - m->arrival, r->dsn[0] ? r->dsn : "4.0.0", status,
	    r->reason ? r->reason : "", tls != NULL && *tls != '\0' ? tls : "none");
}

static void
record(struct queue *q, struct queue_msg *m, size_t i)
{
	if (spool_update_rcpt(q->spool, m->env, i) < 0)
		/* The outcome stays in memory; after a crash the recipient would be tried
		 * again (at least once, never lost). */
		log_error("%s: cannot record state of <%s>: %s", m->env->id, m->env->rcpts[i].addr,
		    strerror(errno));
}

static void
apply_result(struct queue *q, struct queue_msg *m, const struct delivery_result *res)
{
	struct envelope_rcpt *r = &m->env->rcpts[res->index];
	const struct conf *c = q->conf;
	time_t now = queue_time();
	const char *status;

	r->attempts++;
	dr_strlcpy(r->dsn, res->dsn, sizeof(r->dsn));
	free(r->reason);
	r->reason = xstrdup(res->reason ? res->reason : "");
	r->state = res->state;
	switch (res->state) {
	case RCPT_DELIVERED:
		status = "sent";
		q->stats->delivered[stats_family(res->family)]++;
		break;
	case RCPT_BOUNCED:
		status = "bounced";
		q->stats->bounced[stats_family(res->family)]++;
		break;
	default:
		if (queue_expired(m->env->arrival, now, c->queue.max_lifetime_s)) {
			/* Postfix's maximal_queue_lifetime: the last temporary error becomes final. */
			char *why = xasprintf("message expired after %u s in the queue; last error: %s",
			    c->queue.max_lifetime_s, r->reason);
			free(r->reason);
			r->reason = why;
			r->state = RCPT_BOUNCED;
			r->dsn[0] = '5';
			status = "expired";
			q->stats->bounced[stats_family(res->family)]++;
			break;
		}
		r->state = RCPT_DEFERRED;
		r->next_attempt = now + queue_backoff_s(r->attempts, c->queue.retry_min_s,
		    c->queue.retry_max_s, dr_random(UINT32_MAX));
		status = "deferred";
		q->stats->deferred[stats_family(res->family)]++;
		break;
	}
	log_outcome(m, r, res->relay, res->family, res->tls, status);
	if (r->state == RCPT_BOUNCED)
		msg_note(m, res->index, res->relay, res->family, 0);
	else if (r->state == RCPT_DEFERRED && c->queue.delay_warning_s > 0 &&
	    !m->env->delay_warned &&
	    now - m->env->arrival >= (time_t)c->queue.delay_warning_s) {
		/* Postfix's delay_warning_time: tell the sender once that mail is late
		 * (delay_warned is set when the notice goes out, after this round). */
		msg_note(m, res->index, res->relay, res->family, 1);
	}
}

/* ---- Destinations ---- */

static unsigned
dest_hash(const char *name)
{
	unsigned h = 2166136261u; /* FNV-1a */
	for (const unsigned char *p = (const unsigned char *)name; *p; p++)
		h = (h ^ *p) * 16777619u;
	return h % DEST_BUCKETS;
}

static struct queue_dest *
dest_get(struct queue *q, const char *name)
{
	unsigned h = dest_hash(name);
	for (struct queue_dest *d = q->dests[h]; d; d = d->hnext)
		if (strcmp(d->name, name) == 0)
			return d;
	struct queue_dest *d = xcalloc(1, sizeof(*d));
	d->name = xstrdup(name);
	TAILQ_INIT(&d->waiting);
	d->hnext = q->dests[h];
	q->dests[h] = d;
	return d;
}

static void
dest_free(struct queue *q, struct queue_dest *d)
{
	struct queue_dest **pp = &q->dests[dest_hash(d->name)];
	while (*pp != d)
		pp = &(*pp)->hnext;
	*pp = d->hnext;
	if (d->ready)
		TAILQ_REMOVE(&q->ready, d, ready_entry);
	free(d->name);
	free(d);
}

/* After a change of d's counts: join or leave the ready list, or go away. */
static void
dest_update(struct queue *q, struct queue_dest *d)
{
	unsigned limit = q->conf->queue.destination_concurrency ?
	    q->conf->queue.destination_concurrency : 1;
	bool ready = d->nwaiting > 0 && d->running < limit;
	if (ready && !d->ready) {
		TAILQ_INSERT_TAIL(&q->ready, d, ready_entry);
		d->ready = true;
	} else if (!ready && d->ready) {
		TAILQ_REMOVE(&q->ready, d, ready_entry);
		d->ready = false;
	}
	if (d->nwaiting == 0 && d->running == 0)
		dest_free(q, d);
}

static void
dest_enqueue(struct queue *q, struct queue_job *j)
{
	struct queue_dest *d = dest_get(q, j->domain);
	j->dest = d;
	TAILQ_INSERT_TAIL(&d->waiting, j, entry);
	d->nwaiting++;
	dest_update(q, d);
}

/* ---- Jobs ---- */

static void
job_free(struct queue_job *j)
{
	conf_free(j->conf);
	free(j->domain);
	free(j->rcpts);
	free(j);
}

static struct dead_dest *
dead_find(struct queue *q, const char *domain)
{
	for (size_t i = 0; i < q->ndead; i++)
		if (strcmp(q->dead[i].domain, domain) == 0)
			return &q->dead[i];
	return NULL;
}

static void
dead_forget(struct queue *q, struct dead_dest *dd)
{
	free(dd->domain);
	free(dd->why);
	*dd = q->dead[--q->ndead];
}

/* Marks or clears the destination after a real delivery attempt. */
static void
dead_update(struct queue *q, const char *domain, const struct delivery_result *res, size_t n)
{
	bool unreachable = n > 0;
	for (size_t i = 0; i < n && unreachable; i++)
		unreachable = res[i].state == RCPT_DEFERRED && strncmp(res[i].dsn, "4.4.", 4) == 0;
	struct dead_dest *dd = dead_find(q, domain);
	if (!unreachable) {
		if (dd)
			dead_forget(q, dd);
		return;
	}
	if (dd == NULL) {
		q->dead = xgrow(q->dead, sizeof(*q->dead), q->ndead + 1, &q->dead_cap);
		dd = &q->dead[q->ndead++];
		dd->domain = xstrdup(domain);
		dd->why = NULL;
	}
	free(dd->why);
	dd->why = xstrdup(res[0].reason ? res[0].reason : "unreachable");
	dr_strlcpy(dd->dsn, res[0].dsn, sizeof(dd->dsn));
	dd->until = queue_time() + (q->conf->queue.retry_min_s ? q->conf->queue.retry_min_s : 1);
}

/* Outcomes of a job (delivered or suspended) into the message, the spool and the logs. */
static void
job_record(struct queue *q, struct queue_job *j, const struct delivery_result *results, size_t n)
{
	struct queue_msg *m = j->msg;

	for (size_t i = 0; i < n; i++)
		apply_result(q, m, &results[i]);
	/*
	 * The outcomes go to disk before anything else happens to these recipients, unless
	 * this was the message's last job and every recipient is now final: then removing
	 * the message is the record (one directory fsync, shared with other removals,
	 * instead of a state write per recipient). A crash before that sync delivers again:
	 * a duplicate, never a loss.
	 */
	if (!(m->jobs == 1 && envelope_done(m->env) && m->nnotify == 0))
		for (size_t i = 0; i < n; i++)
			record(q, m, results[i].index);
	for (size_t i = 0; i < j->nrcpts; i++)
		m->busy[j->rcpts[i]] = false;
	m->jobs--;
}

static void
on_delivered(struct delivery *d, const struct delivery_result *results, size_t n, void *arg)
{
	struct queue_job *j = arg;
	struct queue *q = j->q;
	struct queue_msg *m = j->msg;

	dead_update(q, j->domain, results, n);
	job_record(q, j, results, n);
	delivery_free(d);
	TAILQ_REMOVE(&q->running, j, entry);
	q->nrunning--;
	j->dest->running--;
	dest_update(q, j->dest);
	job_free(j);
	msg_settle(q, m);
	queue_pump(q);
	queue_arm(q);
}

/* A job for a dead destination: deferred at once, no connection (see struct dead_dest). */
static void
job_suspend(struct queue *q, struct queue_job *j, const struct dead_dest *dd)
{
	struct queue_msg *m = j->msg;
	struct delivery_result *res = xcalloc(j->nrcpts, sizeof(*res));
	for (size_t i = 0; i < j->nrcpts; i++) {
		res[i].index = j->rcpts[i];
		res[i].state = RCPT_DEFERRED;
		/*
		 * The status of the failure that made the destination dead, as Postfix keeps
		 * it: a DNS failure stays 4.4.3, not a connection failure's 4.4.1.
		 */
		dr_strlcpy(res[i].dsn, dd->dsn, sizeof(res[i].dsn));
		res[i].reason = xasprintf("delivery temporarily suspended: %s", dd->why);
		dr_strlcpy(res[i].relay, "none", sizeof(res[i].relay));
		res[i].family = AF_UNSPEC;
	}
	job_record(q, j, res, j->nrcpts);
	for (size_t i = 0; i < j->nrcpts; i++)
		free(res[i].reason);
	free(res);
	j->dest->running--;
	dest_update(q, j->dest);
	job_free(j);
	msg_settle(q, m); /* no pump here: the caller is the pump */
}

static void
job_start(struct queue *q, struct queue_job *j)
{
	struct dead_dest *dd = dead_find(q, j->domain);
	if (dd && queue_time() < dd->until) {
		job_suspend(q, j, dd);
		return;
	}
	struct delivery_env denv = { q->base, q->dns, q->spool, q->health, q->stats, q->cache,
		q->local };
	TAILQ_INSERT_TAIL(&q->running, j, entry);
	q->nrunning++;
	j->delivery = delivery_start(&denv, j->conf, j->msg->env, j->msg->arrival, j->domain,
	    j->rcpts, j->nrcpts, on_delivered, j);
}

static void
queue_pump(struct queue *q)
{
	unsigned max = q->conf->queue.max_active ? q->conf->queue.max_active : 1;
	struct queue_dest *dest;
	while (q->nrunning < max && (dest = TAILQ_FIRST(&q->ready)) != NULL) {
		TAILQ_REMOVE(&q->ready, dest, ready_entry);
		dest->ready = false;
		struct queue_job *j = TAILQ_FIRST(&dest->waiting);
		TAILQ_REMOVE(&dest->waiting, j, entry);
		dest->nwaiting--;
		dest->running++;
		dest_update(q, dest); /* back to the end of the ready list, if still ready */
		job_start(q, j);
	}
}

/* Expire recipients that have waited too long without a delivery attempt ending. */
static void
expire_if_old(struct queue *q, struct queue_msg *m, size_t i)
{
	struct envelope_rcpt *r = &m->env->rcpts[i];
	if (r->state != RCPT_DEFERRED ||
	    !queue_expired(m->env->arrival, queue_time(), q->conf->queue.max_lifetime_s))
		return;
	char *why = xasprintf("message expired after %u s in the queue; last error: %s",
	    q->conf->queue.max_lifetime_s, r->reason ? r->reason : "none");
	free(r->reason);
	r->reason = why;
	r->state = RCPT_BOUNCED;
	r->dsn[0] = '5';
	if (r->dsn[1] == '\0')
		dr_strlcpy(r->dsn, "5.4.7", sizeof(r->dsn));
	q->stats->bounced[STATS_NONE]++;
	record(q, m, i);
	log_outcome(m, r, "none", AF_UNSPEC, "none", "expired");
	msg_note(m, i, "none", AF_UNSPEC, 0);
}

static const char *
rcpt_domain_lc(const struct envelope_rcpt *r, char *buf, size_t size)
{
	dr_strlcpy(buf, smtp_mailbox_domain(r->addr), size);
	return dr_strlower(buf);
}

/* Turns a due message's due recipients into jobs, one per domain. */
static void
msg_dispatch(struct queue *q, struct queue_msg *m, double now)
{
	struct envelope *e = m->env;
	char dom[SMTP_DOMAIN_MAX + 1], other[SMTP_DOMAIN_MAX + 1];

	/* Due only for a DSN to retry (msg_settle): no delivery for a held message. */
	for (size_t i = 0; !e->held && !m->deleted && i < e->nrcpts; i++) {
		struct envelope_rcpt *r = &e->rcpts[i];
		if (!rcpt_open(r) || m->busy[i])
			continue;
		if (r->state == RCPT_DEFERRED && (double)r->next_attempt > now)
			continue;
		expire_if_old(q, m, i);
		if (!rcpt_open(r))
			continue;
		struct queue_job *j = xcalloc(1, sizeof(*j));
		size_t cap = 0;
		j->q = q;
		j->msg = m;
		j->domain = xstrdup(rcpt_domain_lc(r, dom, sizeof(dom)));
		j->conf = conf_ref(q->conf);
		/* Gather this domain's other due recipients into the same transaction. */
		for (size_t k = i; k < e->nrcpts; k++) {
			struct envelope_rcpt *rk = &e->rcpts[k];
			if (!rcpt_open(rk) || m->busy[k])
				continue;
			if (rk->state == RCPT_DEFERRED && (double)rk->next_attempt > now)
				continue;
			if (strcmp(rcpt_domain_lc(rk, other, sizeof(other)), j->domain) != 0)
				continue;
			j->rcpts = xgrow(j->rcpts, sizeof(size_t), j->nrcpts + 1, &cap);
			j->rcpts[j->nrcpts++] = k;
			m->busy[k] = true;
		}
		m->jobs++;
		dest_enqueue(q, j);
	}
	msg_settle(q, m);
}

static void
on_wake(evutil_socket_t fd, short what, void *arg)
{
	struct queue *q = arg;
	double now = dr_now();
	(void)fd;
	(void)what;

	while (q->nheap > 0 && q->heap[0]->due <= now) {
		struct queue_msg *m = q->heap[0];
		heap_remove(q, m);
		msg_dispatch(q, m, now);
	}
	queue_pump(q);
	queue_arm(q);
}

static void
queue_arm(struct queue *q)
{
	if (q->nheap == 0) {
		event_del(q->wake_ev);
		return;
	}
	double delta = q->heap[0]->due - dr_now();
	if (delta < 0)
		delta = 0;
	struct timeval tv = { (time_t)delta, (suseconds_t)((delta - (double)(time_t)delta) * 1e6) };
	event_add(q->wake_ev, &tv);
}

/* ---- Public ---- */

struct queue *
queue_new(const struct queue_deps *deps, struct conf *conf)
{
	struct queue *q = xcalloc(1, sizeof(*q));
	q->base = deps->base;
	q->health = deps->health;
	q->cache = deps->cache;
	q->local = localaddr_new();
	q->spool = deps->spool;
	q->committer = deps->committer;
	q->dns = deps->dns;
	q->stats = deps->stats ? deps->stats : &q->own_stats;
	q->conf = conf_ref(conf);
	TAILQ_INIT(&q->msgs);
	TAILQ_INIT(&q->ready);
	TAILQ_INIT(&q->running);
	q->wake_ev = event_new(q->base, -1, 0, on_wake, q);
	return q;
}

void
queue_set_conf(struct queue *q, struct conf *conf)
{
	struct conf *old = q->conf;
	q->conf = conf_ref(conf);
	conf_free(old);
	queue_pump(q);
}

/*
 * Bounced recipients whose DSN is not known to be queued (no "N" record: a crash came
 * between their state record and the DSN's commit, or the spool refused the DSN) get
 * one now. What the failed delivery knew beyond the state record (relay, family, time)
 * is gone: notify.c takes the relay from the reason text.
 */
static void
msg_note_owed(struct queue_msg *m)
{
	if (!bounce_should_send(m->env->sender))
		return;
	for (size_t i = 0; i < m->env->nrcpts; i++) {
		const struct envelope_rcpt *r = &m->env->rcpts[i];
		if (r->state == RCPT_BOUNCED && !r->notified) {
			log_info("%s: to=<%s>: no notification on record for this failure: sending it",
			    m->env->id, r->addr);
			msg_note(m, i, "none", AF_UNSPEC, 0);
		}
	}
}

/* recovered: loaded from the spool at start (it may owe DSNs), not newly received. */
static void
queue_insert(struct queue *q, struct envelope *e, double arrival, bool recovered)
{
	struct queue_msg *m = msg_new(q, e, arrival);
	if (recovered)
		msg_note_owed(m);
	if (envelope_done(e)) {
		msg_settle(q, m); /* crashed between the last record and the removal */
		return;
	}
	msg_settle(q, m);
	queue_arm(q);
}

void
queue_add(struct queue *q, struct envelope *e)
{
	q->stats->received++;
	queue_insert(q, e, dr_now(), false);
}

static void
on_recovered(struct envelope *e, void *arg)
{
	queue_insert(arg, e, (double)e->arrival, true);
}

long
queue_recover(struct queue *q)
{
	long n = spool_recover(q->spool, on_recovered, q);
	if (n < 0)
		log_error("cannot read the queue in %s: %s", spool_dir(q->spool), strerror(errno));
	else
		log_info("queue: %ld message%s recovered from %s", n, n == 1 ? "" : "s",
		    spool_dir(q->spool));
	return n;
}

void
queue_get_stats(const struct queue *q, struct queue_stats *out)
{
	const struct queue_msg *m;
	memset(out, 0, sizeof(*out));
	out->messages = q->nmsgs;
	out->active = q->nrunning;
	TAILQ_FOREACH(m, &q->msgs, all) {
		out->held += m->env->held;
		if (out->oldest_arrival == 0 || m->env->arrival < out->oldest_arrival)
			out->oldest_arrival = m->env->arrival;
	}
}

/* ---- Operator actions ---- */

static struct queue_msg *
msg_by_id(const struct queue *q, const char *id)
{
	struct queue_msg *m;
	TAILQ_FOREACH(m, &q->msgs, all)
		if (strcasecmp(m->env->id, id) == 0 && !m->deleted)
			return m;
	return NULL;
}

void
queue_foreach(const struct queue *q, queue_visit_fn fn, void *arg)
{
	const struct queue_msg *m;
	TAILQ_FOREACH(m, &q->msgs, all)
		if (!m->deleted)
			fn(m->env, m->jobs > 0, arg);
}

const struct envelope *
queue_find(const struct queue *q, const char *id, bool *active)
{
	const struct queue_msg *m = msg_by_id(q, id);
	if (m && active)
		*active = m->jobs > 0;
	return m ? m->env : NULL;
}

static bool
msg_has_domain(const struct queue_msg *m, const char *domain)
{
	for (size_t i = 0; i < m->env->nrcpts; i++)
		if (rcpt_open(&m->env->rcpts[i]) &&
		    strcasecmp(smtp_mailbox_domain(m->env->rcpts[i].addr), domain) == 0)
			return true;
	return false;
}

size_t
queue_flush(struct queue *q, const char *what)
{
	struct queue_msg *m;
	size_t n = 0;
	time_t now = queue_time();

	/* The operator says try now: suspended destinations get their chance too. */
	while (q->ndead > 0)
		dead_forget(q, &q->dead[q->ndead - 1]);
	TAILQ_FOREACH(m, &q->msgs, all) {
		if (m->deleted || m->env->held)
			continue;
		if (what && strcasecmp(m->env->id, what) != 0 && !msg_has_domain(m, what))
			continue;
		bool any = false;
		for (size_t i = 0; i < m->env->nrcpts; i++) {
			struct envelope_rcpt *r = &m->env->rcpts[i];
			if (r->state == RCPT_DEFERRED && !m->busy[i]) {
				r->next_attempt = now;
				any = true;
			}
		}
		if (any) {
			n++;
			log_info("%s: flushed by the operator", m->env->id);
			msg_settle(q, m);
		}
	}
	queue_arm(q);
	return n;
}

int
queue_delete(struct queue *q, const char *id)
{
	struct queue_msg *m = msg_by_id(q, id);
	if (m == NULL)
		return -1;
	m->deleted = true;
	log_info("%s: deleted by the operator%s", m->env->id,
	    m->jobs ? " (after the delivery in progress)" : "");
	msg_settle(q, m);
	queue_arm(q);
	return 0;
}

int
queue_hold(struct queue *q, const char *id, bool hold)
{
	struct queue_msg *m = msg_by_id(q, id);
	if (m == NULL)
		return -1;
	if (m->env->held != hold) {
		m->env->held = hold;
		if (spool_update_hold(q->spool, m->env) < 0)
			log_error("%s: cannot record hold state: %s", m->env->id, strerror(errno));
		log_info("%s: %s by the operator", m->env->id, hold ? "held" : "released");
		msg_settle(q, m);
		queue_arm(q);
	}
	return 0;
}

void
queue_free(struct queue *q)
{
	struct queue_job *j;
	if (q == NULL)
		return;
	while ((j = TAILQ_FIRST(&q->running)) != NULL) {
		TAILQ_REMOVE(&q->running, j, entry);
		delivery_free(j->delivery);
		job_free(j);
	}
	for (size_t b = 0; b < DEST_BUCKETS; b++) {
		struct queue_dest *d;
		while ((d = q->dests[b]) != NULL) {
			while ((j = TAILQ_FIRST(&d->waiting)) != NULL) {
				TAILQ_REMOVE(&d->waiting, j, entry);
				job_free(j);
			}
			d->nwaiting = 0;
			d->running = 0;
			dest_free(q, d);
		}
	}
	struct queue_msg *m;
	while ((m = TAILQ_FIRST(&q->msgs)) != NULL) {
		TAILQ_REMOVE(&q->msgs, m, all);
		msg_free(m);
	}
	free(q->heap);
	while (q->ndead > 0)
		dead_forget(q, &q->dead[q->ndead - 1]);
	free(q->dead);
	event_free(q->wake_ev);
	localaddr_free(q->local); /* after the deliveries that borrowed it */
	conf_free(q->conf);
	free(q);
}
