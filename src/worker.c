/*
 * worker: the wake-up pipe and thread start shared by the worker threads (worker.h).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include "worker.h"

static void
on_wake(evutil_socket_t fd, short what, void *arg)
{
	struct worker_wake *w = arg;
	char buf[64];

	(void)what;
	while (read(fd, buf, sizeof(buf)) > 0)
		;
	w->cb(w->arg);
}

int
worker_wake_init(struct worker_wake *w, struct event_base *base, void (*cb)(void *),
    void *arg)
{
	w->cb = cb;
	w->arg = arg;
	w->ev = NULL;
	if (pipe2(w->fd, O_CLOEXEC | O_NONBLOCK) < 0)
		return -1;
	w->ev = event_new(base, w->fd[0], EV_READ | EV_PERSIST, on_wake, w);
	if (w->ev == NULL || event_add(w->ev, NULL) < 0) {
		worker_wake_close(w);
		errno = ENOMEM;
		return -1;
	}
	return 0;
}

void
worker_wake_signal(struct worker_wake *w)
{
	while (write(w->fd[1], "", 1) < 0 && errno == EINTR)
		;
}

void
worker_wake_close(struct worker_wake *w)
{
	if (w->ev != NULL)
		event_free(w->ev);
	w->ev = NULL;
	close(w->fd[0]);
	close(w->fd[1]);
}

int
worker_thread_start(pthread_t *t, void *(*fn)(void *), void *arg)
{
	sigset_t all, old;
	int err;

	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	err = pthread_create(t, NULL, fn, arg);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return err;
}
