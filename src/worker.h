/*
 * worker: what the daemon's worker threads (spool_commit.c, auth_verify.c) share: a
 * wake-up pipe by which a worker tells the event loop that results are ready, and a
 * thread start with every signal blocked (signals are the event loop's business).
 *
 * Ownership: a struct worker_wake is embedded in its owner; worker_wake_init makes the
 * pipe and a persistent read event on base calling cb(arg), worker_wake_close undoes
 * both. Writing the wake byte is safe from any thread; a full pipe already holds a
 * wake-up, so a byte that does not fit is not needed.
 */
#ifndef DR_WORKER_H
#define DR_WORKER_H

#include <pthread.h>

#include <event2/event.h>

struct worker_wake {
	int fd[2];           /* [0] read by the loop, [1] written by the worker */
	struct event *ev;    /* owned; persistent read event on fd[0] */
	void (*cb)(void *arg);
	void *arg;
};

/* 0, or -1 + errno (nothing left to close). */
int worker_wake_init(struct worker_wake *w, struct event_base *base, void (*cb)(void *),
    void *arg);
/* From the worker thread: results are ready. */
void worker_wake_signal(struct worker_wake *w);
void worker_wake_close(struct worker_wake *w);

/* pthread_create with every signal blocked in the new thread; its return value. */
int worker_thread_start(pthread_t *t, void *(*fn)(void *), void *arg);

#endif
