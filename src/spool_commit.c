/*
 * spool_commit: group commit of accepted messages (see spool_commit.h for the why).
 *
 * Three threads. The event loop thread prepares a message (the DKIM header goes into
 * the header; a message larger than the writer's buffer is completed in its file:
 * spool_writer_prepare) and appends a job to todo; the commit thread takes ALL of todo
 * at once, writes out the messages that were still in memory, gets the files' data
 * onto the disk (sync_batch_data), renames each into queue/, fsyncs queue/ once, frees
 * the writers, moves the jobs to done and writes a byte into a pipe; the loop thread,
 * woken by the pipe, runs the callbacks. Removals of delivered messages go to a third
 * thread (removals list), because an unlink waits for the disk too and would hold up
 * the next batch. Only the job lists, the stop flag and the counters are shared, under
 * one mutex; a writer belongs to the commit thread from the moment its job is in todo.
 *
 * A failed directory fsync fails the whole batch: every file of it is taken back out of
 * queue/ and every client hears 4xx, so nothing is delivered that a client will send
 * again, and nothing is acknowledged that a crash could lose.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "log.h"
#include "spool.h"
#include "spool_commit.h"
#include "sync_pool.h"
#include "util.h"
#include "worker.h"

/*
 * Threads that fsync a batch's files alongside the commit thread: four fsyncs in flight
 * took a batch of twenty from 5.4 to 4.0 ms on the development machine's virtio disk,
 * more did not help; a journalling file system merges concurrent fsyncs into one
 * journal commit as well.
 */
#define COMMIT_SYNC_HELPERS 3

struct commit_job {
	struct commit_job *next;
	struct spool_writer *w;  /* owned by the commit thread; NULL once finished */
	char *remove_id;         /* owned: a removal (w is NULL then) */
	int error;               /* 0, or why the message is not queued (not removed) */
	spool_commit_cb cb;
	void *arg;
};

struct job_list {
	struct commit_job *head;
	struct commit_job **tail;
};

/* Jobs for one thread, and what it waits on for more. */
struct job_queue {
	struct job_list list;      /* under the committer's lock */
	pthread_cond_t more;       /* list has jobs, or stopping */
};

struct spool_committer {
	struct spool *spool;       /* borrowed */
	struct worker_wake wake;   /* both threads signal each finished round */
	pthread_t thread;          /* commits */
	pthread_t remover;         /* removals */
	pthread_mutex_t lock;
	pthread_cond_t finished;   /* a batch moved to done */
	struct job_queue todo;     /* commits, for the commit thread */
	struct job_queue removals; /* for the remover */
	struct job_list done;      /* under lock */
	bool stopping;             /* under lock */
	bool use_syncfs;           /* set once: one syncfs per batch instead of an fsync per file */
	struct sync_pool *sync_pool; /* owned: the parallel fsyncs (commit thread only) */
	void **sync_items;         /* owned, commit thread only: the batch's writers */
	size_t sync_cap;
	struct spool_commit_stats stats; /* under lock, but for commits (loop thread only) */
	unsigned long commits;     /* loop thread only */
	unsigned long inflight;    /* loop thread only: handed over, callback not yet run */
};

static void
job_list_init(struct job_list *l)
{
	l->head = NULL;
	l->tail = &l->head;
}

static void
job_list_append(struct job_list *l, struct commit_job *j)
{
	j->next = NULL;
	*l->tail = j;
	l->tail = &j->next;
}

/* Moves all of from to the end of to. */
static void
job_list_splice(struct job_list *to, struct job_list *from)
{
	if (from->head == NULL)
		return;
	*to->tail = from->head;
	to->tail = from->tail;
	job_list_init(from);
}

/* ---- the commit thread ---- */

static void
sync_one(void *w)
{
	(void)spool_writer_sync(w); /* an error stays with the writer: publish reports it */
}

/* fsyncs the files of the batch in parallel (sync_pool.h), their writes started first. */
static void
sync_files_in_parallel(struct spool_committer *c, struct commit_job *batch, size_t nfiles)
{
	size_t n = 0;

	if (nfiles > c->sync_cap)
		c->sync_items = xgrow(c->sync_items, sizeof(*c->sync_items), nfiles, &c->sync_cap);
	for (struct commit_job *j = batch; j != NULL; j = j->next) {
		if (j->w != NULL && j->error == 0) {
			spool_writer_start_writeback(j->w);
			c->sync_items[n++] = j->w;
		}
	}
	sync_pool_run(c->sync_pool, c->sync_items, n, sync_one);
}

/*
 * Gets the data of the batch's files onto the disk before they are renamed. One file:
 * its own fsync (in publish). Several: one syncfs for all of them when the spool has a
 * file system of its own, else an fsync per file, issued in parallel so that the device
 * and the file system overlap and merge their work instead of waiting file after file.
 * Returns true when the data is durable already (publish need not fsync).
 */
static bool
sync_batch_data(struct spool_committer *c, struct commit_job *batch)
{
	size_t nfiles = 0;

	for (struct commit_job *j = batch; j != NULL; j = j->next) {
		if (j->w == NULL || j->error != 0)
			continue;
		if (spool_writer_write_out(j->w) < 0)
			j->error = errno;
		else
			nfiles++;
	}
	if (nfiles < 2)
		return false;
	if (c->use_syncfs) {
		if (spool_sync_filesystem(c->spool) == 0)
			return true;
		int err = errno;
		log_error("cannot sync the spool's file system: %s", strerror(err));
		for (struct commit_job *j = batch; j != NULL; j = j->next)
			if (j->w != NULL && j->error == 0)
				j->error = err;
		return false;
	}
	sync_files_in_parallel(c, batch, nfiles);
	return true;
}

/* Makes every message of the batch durable, or none of those that failed. */
static void
commit_batch(struct spool_committer *c, struct commit_job *batch)
{
	bool changed = false;
	bool data_synced = sync_batch_data(c, batch);

	for (struct commit_job *j = batch; j != NULL; j = j->next) {
		if (j->w == NULL || j->error != 0)
			continue; /* failed already */
		if (spool_writer_publish(j->w, data_synced) < 0)
			j->error = errno;
		else
			changed = true;
	}
	if (changed && spool_sync(c->spool) < 0) {
		int err = errno;
		log_error("cannot sync the queue directory: %s", strerror(err));
		for (struct commit_job *j = batch; j != NULL; j = j->next)
			if (j->w != NULL && j->error == 0)
				j->error = err;
	}
	for (struct commit_job *j = batch; j != NULL; j = j->next) {
		if (j->w == NULL)
			continue;
		spool_writer_finish(j->w, j->error);
		j->w = NULL;
	}
}

/* Carries out the removals of the batch; returns how many messages went. */
static size_t
remove_batch(struct spool_committer *c, struct commit_job *batch)
{
	size_t removed = 0;

	for (struct commit_job *j = batch; j != NULL; j = j->next) {
		if (j->remove_id == NULL)
			continue;
		if (spool_remove(c->spool, j->remove_id) < 0)
			j->error = errno;
		else
			removed++;
	}
	return removed;
}

/* Moves the jobs of batch to done and wakes the loop thread. */
static void
hand_back(struct spool_committer *c, struct job_list *batch)
{
	if (batch->head == NULL)
		return;
	pthread_mutex_lock(&c->lock);
	job_list_splice(&c->done, batch);
	pthread_cond_broadcast(&c->finished);
	pthread_mutex_unlock(&c->lock);
	worker_wake_signal(&c->wake);
}

/* Takes all of list (waiting until it has jobs); false once stopping with none left. */
static bool
take_all(struct spool_committer *c, struct job_queue *q, struct job_list *out)
{
	pthread_mutex_lock(&c->lock);
	while (q->list.head == NULL && !c->stopping)
		pthread_cond_wait(&q->more, &c->lock);
	job_list_init(out);
	job_list_splice(out, &q->list);
	pthread_mutex_unlock(&c->lock);
	return out->head != NULL;
}

static void *
commit_thread(void *arg)
{
	struct spool_committer *c = arg;
	struct job_list batch;

	while (take_all(c, &c->todo, &batch)) {
		double t0 = dr_monotonic();
		commit_batch(c, batch.head);
		double t1 = dr_monotonic();

		pthread_mutex_lock(&c->lock);
		c->stats.batches++;
		c->stats.commit_s += t1 - t0;
		pthread_mutex_unlock(&c->lock);
		hand_back(c, &batch);
	}
	return NULL;
}

/*
 * Removals have a thread of their own: an unlink waits for the disk too (truncation,
 * and a discard on file systems mounted with it: a fifth of a millisecond each on the
 * development machine), and on the commit thread it held up the next batch. One fsync
 * of queue/ per round makes the round's removals durable.
 */
static void *
remover_thread(void *arg)
{
	struct spool_committer *c = arg;
	struct job_list round;

	while (take_all(c, &c->removals, &round)) {
		double t0 = dr_monotonic();
		size_t removed = remove_batch(c, round.head);
		if (removed > 0 && spool_sync(c->spool) < 0)
			log_error("cannot sync the queue directory after removals: %s",
			    strerror(errno)); /* a duplicate delivery at worst, after a crash */
		double t1 = dr_monotonic();

		pthread_mutex_lock(&c->lock);
		c->stats.removals += removed;
		c->stats.remove_s += t1 - t0;
		pthread_mutex_unlock(&c->lock);
		hand_back(c, &round);
	}
	return NULL;
}

/* ---- the event loop thread ---- */

/* Runs the callbacks of the finished jobs; with wait, first waits for at least one. */
static void
run_finished(struct spool_committer *c, bool wait)
{
	struct job_list done;

	job_list_init(&done);
	pthread_mutex_lock(&c->lock);
	while (wait && c->done.head == NULL)
		pthread_cond_wait(&c->finished, &c->lock);
	job_list_splice(&done, &c->done);
	pthread_mutex_unlock(&c->lock);

	while (done.head != NULL) {
		struct commit_job *j = done.head;
		done.head = j->next;
		c->inflight--;
		j->cb(j->error, j->arg);
		free(j->remove_id);
		free(j);
	}
}

static void
on_wake(void *arg)
{
	run_finished(arg, false);
}

/* Tells the threads to finish what they have and stop, and waits for them. */
static void
stop_threads(struct spool_committer *c, bool committer, bool remover)
{
	pthread_mutex_lock(&c->lock);
	c->stopping = true;
	pthread_cond_signal(&c->todo.more);
	pthread_cond_signal(&c->removals.more);
	pthread_mutex_unlock(&c->lock);
	if (committer)
		pthread_join(c->thread, NULL);
	if (remover)
		pthread_join(c->remover, NULL);
}

struct spool_committer *
spool_committer_new(struct event_base *base, struct spool *s, bool use_syncfs)
{
	struct spool_committer *c = xcalloc(1, sizeof(*c));
	int err;

	c->spool = s;
	c->use_syncfs = use_syncfs;
	job_list_init(&c->todo.list);
	job_list_init(&c->removals.list);
	job_list_init(&c->done);
	if (worker_wake_init(&c->wake, base, on_wake, c) < 0) {
		err = errno;
		free(c);
		errno = err;
		return NULL;
	}
	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->todo.more, NULL);
	pthread_cond_init(&c->removals.more, NULL);
	pthread_cond_init(&c->finished, NULL);
	err = 0;
	if (!use_syncfs && (c->sync_pool = sync_pool_new(COMMIT_SYNC_HELPERS)) == NULL)
		err = errno;
	if (err == 0 && (err = worker_thread_start(&c->thread, commit_thread, c)) == 0 &&
	    (err = worker_thread_start(&c->remover, remover_thread, c)) != 0)
		stop_threads(c, true, false);
	if (err != 0) {
		sync_pool_free(c->sync_pool);
		pthread_cond_destroy(&c->finished);
		pthread_cond_destroy(&c->removals.more);
		pthread_cond_destroy(&c->todo.more);
		pthread_mutex_destroy(&c->lock);
		worker_wake_close(&c->wake);
		free(c);
		errno = err;
		return NULL;
	}
	return c;
}

void
spool_committer_drain(struct spool_committer *c)
{
	while (c != NULL && c->inflight > 0)
		run_finished(c, true);
}

void
spool_committer_free(struct spool_committer *c)
{
	if (c == NULL)
		return;
	spool_committer_drain(c);
	stop_threads(c, true, true);
	sync_pool_free(c->sync_pool);
	free(c->sync_items);
	worker_wake_close(&c->wake);
	pthread_cond_destroy(&c->finished);
	pthread_cond_destroy(&c->removals.more);
	pthread_cond_destroy(&c->todo.more);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

void
spool_committer_stats(struct spool_committer *c, struct spool_commit_stats *st)
{
	pthread_mutex_lock(&c->lock);
	*st = c->stats;
	pthread_mutex_unlock(&c->lock);
	st->commits = c->commits;
}

static void
hand_over(struct spool_committer *c, struct job_queue *q, struct commit_job *j)
{
	c->inflight++;
	pthread_mutex_lock(&c->lock);
	job_list_append(&q->list, j);
	pthread_cond_signal(&q->more);
	pthread_mutex_unlock(&c->lock);
}

void
spool_commit(struct spool_committer *c, struct spool_writer *w, struct envelope *e,
    spool_commit_cb cb, void *arg)
{
	struct commit_job *j;

	if (c == NULL) {
		int err = spool_writer_commit(w, e) < 0 ? errno : 0;
		cb(err, arg);
		return;
	}
	j = xcalloc(1, sizeof(*j));
	j->cb = cb;
	j->arg = arg;
	j->w = w;
	if (spool_writer_prepare(w, e) < 0) {
		/* Goes through the thread anyway, so cb is never called from in here. */
		j->error = errno;
		spool_writer_finish(w, j->error);
		j->w = NULL;
	}
	c->commits++;
	hand_over(c, &c->todo, j);
}

void
spool_remove_later(struct spool_committer *c, struct spool *s, const char *id,
    spool_commit_cb cb, void *arg)
{
	struct commit_job *j;

	if (c == NULL) {
		int err = spool_remove(s, id) < 0 ? errno : 0;
		if (err == 0 && spool_sync(s) < 0)
			log_error("cannot sync the queue directory: %s", strerror(errno));
		cb(err, arg);
		return;
	}
	j = xcalloc(1, sizeof(*j));
	j->cb = cb;
	j->arg = arg;
	j->remove_id = xstrdup(id);
	hand_over(c, &c->removals, j);
}
