/*
 * sync_pool: runs one blocking call over many items on a few threads (see sync_pool.h).
 *
 * A run is a generation: the caller publishes items, n and fn under the lock, bumps the
 * generation and wakes the helpers; everyone (the caller too) takes the next index until
 * none is left; the one that finishes the last call wakes the caller. Helpers that wake
 * late find nothing left and go back to waiting for the next generation.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

#include "sync_pool.h"
#include "util.h"
#include "worker.h"

struct sync_pool {
	pthread_mutex_t lock;
	pthread_cond_t work;      /* a new generation, or stopping */
	pthread_cond_t done;      /* the last call of a run returned */
	pthread_t *threads;
	unsigned nthreads;        /* started */
	unsigned long generation; /* under lock */
	void *const *items;       /* under lock: the current run's */
	size_t n, next;           /* under lock */
	size_t unfinished;        /* under lock: calls not yet returned */
	void (*fn)(void *);       /* under lock */
	bool stopping;            /* under lock */
	unsigned long helped;     /* under lock */
};

/* Runs calls of the current generation until none is left to take. Called locked. */
static void
take_and_run(struct sync_pool *p, bool helper)
{
	while (p->next < p->n) {
		void *item = p->items[p->next++];
		void (*fn)(void *) = p->fn;

		if (helper)
			p->helped++;
		pthread_mutex_unlock(&p->lock);
		fn(item);
		pthread_mutex_lock(&p->lock);
		if (--p->unfinished == 0)
			pthread_cond_signal(&p->done);
	}
}

static void *
helper_thread(void *arg)
{
	struct sync_pool *p = arg;
	unsigned long seen = 0;

	pthread_mutex_lock(&p->lock);
	for (;;) {
		while (p->generation == seen && !p->stopping)
			pthread_cond_wait(&p->work, &p->lock);
		if (p->stopping)
			break;
		seen = p->generation;
		take_and_run(p, true);
	}
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

struct sync_pool *
sync_pool_new(unsigned nthreads)
{
	struct sync_pool *p = xcalloc(1, sizeof(*p));
	int err = 0;

	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->work, NULL);
	pthread_cond_init(&p->done, NULL);
	p->threads = xcalloc(nthreads > 0 ? nthreads : 1, sizeof(*p->threads));
	for (unsigned i = 0; i < nthreads && err == 0; i++) {
		err = worker_thread_start(&p->threads[i], helper_thread, p);
		if (err == 0)
			p->nthreads++;
	}
	if (err != 0) {
		sync_pool_free(p);
		errno = err;
		return NULL;
	}
	return p;
}

void
sync_pool_free(struct sync_pool *p)
{
	if (p == NULL)
		return;
	pthread_mutex_lock(&p->lock);
	p->stopping = true;
	pthread_cond_broadcast(&p->work);
	pthread_mutex_unlock(&p->lock);
	for (unsigned i = 0; i < p->nthreads; i++)
		pthread_join(p->threads[i], NULL);
	pthread_cond_destroy(&p->done);
	pthread_cond_destroy(&p->work);
	pthread_mutex_destroy(&p->lock);
	free(p->threads);
	free(p);
}

void
sync_pool_run(struct sync_pool *p, void *const *items, size_t n, void (*fn)(void *))
{
	if (n == 0)
		return;
	pthread_mutex_lock(&p->lock);
	p->items = items;
	p->n = n;
	p->next = 0;
	p->unfinished = n;
	p->fn = fn;
	p->generation++;
	if (n > 1)
		pthread_cond_broadcast(&p->work);
	take_and_run(p, false);
	while (p->unfinished > 0)
		pthread_cond_wait(&p->done, &p->lock);
	/* Nothing of this run may be touched once the caller has its items back. */
	p->items = NULL;
	p->n = p->next = 0;
	pthread_mutex_unlock(&p->lock);
}

unsigned long
sync_pool_helped(struct sync_pool *p)
{
	unsigned long h;

	pthread_mutex_lock(&p->lock);
	h = p->helped;
	pthread_mutex_unlock(&p->lock);
	return h;
}
