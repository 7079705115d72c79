/*
 * auth_verify: password checks on a worker thread (see auth_verify.h for the why).
 *
 * The design of spool_commit.c: two threads, one request list each way under one mutex,
 * and a pipe whose read end is a libevent event on the loop. The loop thread appends a
 * request to todo; the worker takes them one at a time (a check is long, and a request
 * cancelled while it waits is then skipped, not hashed), hashes, wipes and frees the
 * password, moves the request to done and writes a byte into the pipe; the loop thread,
 * woken by the pipe, runs the callbacks of the requests not cancelled and frees them all.
 *
 * A request belongs to the verifier from auth_verify until it is freed, always on the
 * loop thread. The worker owns its hash and password copies while it has the request;
 * the cancelled flag is shared (under the lock); match is written by the worker and read
 * by the loop thread only after the request went through done (under the lock).
 *
 * Each session has at most one check in flight (it reads nothing meanwhile), so todo is
 * bounded by the number of sessions (max_connections).
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/crypto.h>

#include "auth_verify.h"
#include "users.h"
#include "util.h"
#include "worker.h"

struct auth_verify_req {
	struct auth_verify_req *next;
	struct auth_verifier *v;  /* for the lock, in auth_verify_cancel */
	char *hash;               /* owned copy: a reload may free the users database */
	char *pass;               /* owned copy; wiped and freed as soon as it is hashed */
	bool match;               /* the worker's answer */
	bool cancelled;           /* under lock: free without calling back, skip the hash */
	auth_verify_cb cb;
	void *arg;
};

struct req_list {
	struct auth_verify_req *head;
	struct auth_verify_req **tail;
};

struct auth_verifier {
	struct worker_wake wake;   /* the worker signals each finished check */
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t more;       /* todo has requests, or stopping */
	struct req_list todo;      /* under lock */
	struct req_list done;      /* under lock */
	bool stopping;             /* under lock */
};

static void
req_list_init(struct req_list *l)
{
	l->head = NULL;
	l->tail = &l->head;
}

static void
req_list_append(struct req_list *l, struct auth_verify_req *r)
{
	r->next = NULL;
	*l->tail = r;
	l->tail = &r->next;
}

/* Moves all of from to the end of to. */
static void
req_list_splice(struct req_list *to, struct req_list *from)
{
	if (from->head == NULL)
		return;
	*to->tail = from->head;
	to->tail = from->tail;
	req_list_init(from);
}

static struct auth_verify_req *
req_list_pop(struct req_list *l)
{
	struct auth_verify_req *r = l->head;

	if (r != NULL) {
		l->head = r->next;
		if (l->head == NULL)
			l->tail = &l->head;
	}
	return r;
}

/* The secret goes first; whoever frees a request does this, on whichever thread. */
static void
req_forget_secrets(struct auth_verify_req *r)
{
	if (r->pass != NULL) {
		OPENSSL_cleanse(r->pass, strlen(r->pass));
		free(r->pass);
		r->pass = NULL;
	}
	free(r->hash);
	r->hash = NULL;
}

static void
req_free(struct auth_verify_req *r)
{
	req_forget_secrets(r);
	free(r);
}

/* ---- the worker thread ---- */

static void *
verify_thread(void *arg)
{
	struct auth_verifier *v = arg;

	for (;;) {
		struct auth_verify_req *r;
		bool cancelled;

		pthread_mutex_lock(&v->lock);
		while (v->todo.head == NULL && !v->stopping)
			pthread_cond_wait(&v->more, &v->lock);
		if (v->stopping) {
			/* auth_verifier_free forgets what is left: nobody waits for it. */
			pthread_mutex_unlock(&v->lock);
			return NULL;
		}
		r = req_list_pop(&v->todo);
		cancelled = r->cancelled;
		pthread_mutex_unlock(&v->lock);

		if (!cancelled)
			r->match = users_hash_match(r->hash, r->pass);
		req_forget_secrets(r);

		pthread_mutex_lock(&v->lock);
		req_list_append(&v->done, r);
		pthread_mutex_unlock(&v->lock);
		worker_wake_signal(&v->wake);
	}
}

/* ---- the event loop thread ---- */

static void
on_wake(void *arg)
{
	struct auth_verifier *v = arg;
	struct req_list done;

	req_list_init(&done);
	pthread_mutex_lock(&v->lock);
	req_list_splice(&done, &v->done);
	pthread_mutex_unlock(&v->lock);

	/*
	 * Only this thread cancels, so cancelled needs no lock from here on, and a callback
	 * that cancels a request further down this list is obeyed.
	 */
	while (done.head != NULL) {
		struct auth_verify_req *r = req_list_pop(&done);

		if (!r->cancelled)
			r->cb(r->match, r->arg);
		req_free(r);
	}
}

struct auth_verifier *
auth_verifier_new(struct event_base *base)
{
	struct auth_verifier *v = xcalloc(1, sizeof(*v));
	int err;

	req_list_init(&v->todo);
	req_list_init(&v->done);
	if (worker_wake_init(&v->wake, base, on_wake, v) < 0) {
		err = errno;
		free(v);
		errno = err;
		return NULL;
	}
	pthread_mutex_init(&v->lock, NULL);
	pthread_cond_init(&v->more, NULL);
	if ((err = worker_thread_start(&v->thread, verify_thread, v)) != 0) {
		pthread_cond_destroy(&v->more);
		pthread_mutex_destroy(&v->lock);
		worker_wake_close(&v->wake);
		free(v);
		errno = err;
		return NULL;
	}
	return v;
}

void
auth_verifier_free(struct auth_verifier *v)
{
	struct auth_verify_req *r;

	if (v == NULL)
		return;
	pthread_mutex_lock(&v->lock);
	v->stopping = true;
	pthread_cond_signal(&v->more);
	pthread_mutex_unlock(&v->lock);
	pthread_join(v->thread, NULL);
	/* The worker is gone: the lists are ours. Unhashed passwords are wiped here. */
	while ((r = req_list_pop(&v->todo)) != NULL)
		req_free(r);
	while ((r = req_list_pop(&v->done)) != NULL)
		req_free(r);
	worker_wake_close(&v->wake);
	pthread_cond_destroy(&v->more);
	pthread_mutex_destroy(&v->lock);
	free(v);
}

struct auth_verify_req *
auth_verify(struct auth_verifier *v, const char *hash, const char *pass, auth_verify_cb cb,
    void *arg)
{
	struct auth_verify_req *r;

	if (v == NULL) {
		cb(users_hash_match(hash, pass), arg);
		return NULL;
	}
	r = xcalloc(1, sizeof(*r));
	r->v = v;
	r->hash = xstrdup(hash);
	r->pass = xstrdup(pass);
	r->cb = cb;
	r->arg = arg;
	pthread_mutex_lock(&v->lock);
	req_list_append(&v->todo, r);
	pthread_cond_signal(&v->more);
	pthread_mutex_unlock(&v->lock);
	return r;
}

void
auth_verify_cancel(struct auth_verify_req *r)
{
	if (r == NULL)
		return;
	pthread_mutex_lock(&r->v->lock);
	r->cancelled = true;
	pthread_mutex_unlock(&r->v->lock);
}
