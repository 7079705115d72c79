/*
 * spool_commit: group commit of accepted messages (see spool_commit.h for the why).
 *
 * Two threads, one queue each way. The event loop thread prepares a message (the last
 * buffered bytes and the DKIM header go to the file: spool_writer_prepare) and appends a
 * job to todo; the commit thread takes ALL of todo at once, publishes each file (fsync,
 * rename into queue/), fsyncs queue/ once, frees the writers, moves the jobs to done and
 * writes a byte into a pipe; the loop thread, woken by the pipe, runs the callbacks.
 * Only the job lists, the stop flag and the counters are shared, under one mutex; a
 * writer belongs to the commit thread from the moment its job is in todo.
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
#include "util.h"
#include "worker.h"

struct commit_job {
	struct commit_job *next;
	struct spool_writer *w;  /* owned by the commit thread; NULL once finished */
	int error;               /* 0, or why the message is not queued */
	spool_commit_cb cb;
	void *arg;
};

struct job_list {
	struct commit_job *head;
	struct commit_job **tail;
};

struct spool_committer {
	struct spool *spool;       /* borrowed */
	struct worker_wake wake;   /* the commit thread signals each finished batch */
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t more;       /* todo has jobs, or stopping */
	pthread_cond_t finished;   /* a batch moved to done */
	struct job_list todo;      /* under lock */
	struct job_list done;      /* under lock */
	bool stopping;             /* under lock */
	bool sync_wanted;          /* under lock: fsync queue/ even without a commit */
	unsigned long batches;     /* under lock */
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

/* Makes every message of the batch durable, or none of those that failed. */
static void
commit_batch(struct spool *s, struct commit_job *batch, bool sync_wanted)
{
	bool published = false;

	for (struct commit_job *j = batch; j != NULL; j = j->next) {
		if (j->w == NULL)
			continue; /* failed already when prepared */
		if (spool_writer_publish(j->w) < 0)
			j->error = errno;
		else
			published = true;
	}
	if ((published || sync_wanted) && spool_sync(s) < 0) {
		int err = errno;
		log_error("cannot sync the queue directory: %s", strerror(err));
		for (struct commit_job *j = batch; j != NULL; j = j->next)
			if (j->error == 0)
				j->error = err;
	}
	for (struct commit_job *j = batch; j != NULL; j = j->next) {
		if (j->w == NULL)
			continue;
		spool_writer_finish(j->w, j->error);
		j->w = NULL;
	}
}

static void *
commit_thread(void *arg)
{
	struct spool_committer *c = arg;

	for (;;) {
		struct job_list batch;
		bool sync_wanted;

		pthread_mutex_lock(&c->lock);
		while (c->todo.head == NULL && !c->sync_wanted && !c->stopping)
			pthread_cond_wait(&c->more, &c->lock);
		if (c->todo.head == NULL && !c->sync_wanted) {
			pthread_mutex_unlock(&c->lock);
			return NULL; /* stopping, and nothing left to commit */
		}
		job_list_init(&batch);
		job_list_splice(&batch, &c->todo);
		sync_wanted = c->sync_wanted;
		c->sync_wanted = false;
		pthread_mutex_unlock(&c->lock);

		commit_batch(c->spool, batch.head, sync_wanted);
		if (batch.head == NULL)
			continue; /* a sync alone: nobody waits for it */

		pthread_mutex_lock(&c->lock);
		job_list_splice(&c->done, &batch);
		c->batches++;
		pthread_cond_broadcast(&c->finished);
		pthread_mutex_unlock(&c->lock);
		worker_wake_signal(&c->wake);
	}
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
		free(j);
	}
}

static void
on_wake(void *arg)
{
	run_finished(arg, false);
}

struct spool_committer *
spool_committer_new(struct event_base *base, struct spool *s)
{
	struct spool_committer *c = xcalloc(1, sizeof(*c));
	int err;

	c->spool = s;
	job_list_init(&c->todo);
	job_list_init(&c->done);
	if (worker_wake_init(&c->wake, base, on_wake, c) < 0) {
		err = errno;
		free(c);
		errno = err;
		return NULL;
	}
	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->more, NULL);
	pthread_cond_init(&c->finished, NULL);
	if ((err = worker_thread_start(&c->thread, commit_thread, c)) != 0) {
		pthread_cond_destroy(&c->finished);
		pthread_cond_destroy(&c->more);
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
	pthread_mutex_lock(&c->lock);
	c->stopping = true;
	pthread_cond_signal(&c->more);
	pthread_mutex_unlock(&c->lock);
	pthread_join(c->thread, NULL);
	worker_wake_close(&c->wake);
	pthread_cond_destroy(&c->finished);
	pthread_cond_destroy(&c->more);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

void
spool_committer_counts(struct spool_committer *c, unsigned long *commits,
    unsigned long *batches)
{
	pthread_mutex_lock(&c->lock);
	*batches = c->batches;
	pthread_mutex_unlock(&c->lock);
	*commits = c->commits;
}

void
spool_committer_sync(struct spool_committer *c)
{
	pthread_mutex_lock(&c->lock);
	c->sync_wanted = true;
	pthread_cond_signal(&c->more);
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
	c->inflight++;
	pthread_mutex_lock(&c->lock);
	job_list_append(&c->todo, j);
	pthread_cond_signal(&c->more);
	pthread_mutex_unlock(&c->lock);
}
