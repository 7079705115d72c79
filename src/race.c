/*
 * race: RFC 8305 section 5 connection attempts over an ordered candidate list (see
 * race.h). Owns the in-flight sockets until one of them wins: each attempt is a
 * nonblocking socket, bound to the configured source address of its family, whose
 * connect() completion is watched with a write event carrying the per-attempt timeout.
 * A timer paces the attempts ("Connection Attempt Delay"); a failed attempt starts the
 * next candidate at once. The first connected socket passes to the caller, the others
 * are closed.
 *
 * Candidate bookkeeping: every target is UNTRIED, IN_FLIGHT, FAILED or WON. Attempts
 * abandoned because another one won go back to UNTRIED: when the winner then proves
 * unusable at the SMTP level (bad greeting, family rejection), race_next() gives them
 * a fresh attempt instead of silently dropping a working address.
 *
 * Nothing is reported synchronously: race_next() only schedules the work, and every
 * callback runs from the event loop, so a caller never sees its callback inside its
 * own call. The callback may call race_free(); a flag on the stack tells the running
 * handler that the race is gone.
 */
#include "config.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "log.h"
#include "netaddr.h"
#include "race.h"
#include "util.h"

enum race_slot_state {
	SLOT_UNTRIED = 0,  /* never tried, or abandoned when another attempt won */
	SLOT_IN_FLIGHT,    /* connect() in progress */
	SLOT_FAILED,       /* connect() failed or timed out: not tried again */
	SLOT_WON,          /* handed to the caller */
};

struct race_slot {
	struct race *race;          /* back pointer for the event callback */
	struct race_target target;  /* copy; host stays borrowed */
	size_t index;               /* position in the target list */
	enum race_slot_state state;
	int fd;                     /* IN_FLIGHT: the connecting socket, else -1 */
	struct event *ev;           /* IN_FLIGHT: writability + connect timeout */
};

struct race {
	struct event_base *base;
	struct race_slot *slots;    /* one per target, owned */
	size_t nslots;
	struct race_params params;  /* source pointers redirected to the copies below */
	struct netaddr source4;     /* copies of the caller's source addresses, port 0 */
	struct netaddr source6;
	race_cb cb;
	race_fail_cb fail_cb;
	void *arg;

	bool running;               /* between race_next() and the callback */
	size_t inflight;            /* slots IN_FLIGHT */
	struct event *step_ev;      /* zero-delay: start work from the loop */
	struct event *delay_ev;     /* attempt delay timer */

	struct race_failure *failures; /* since the last callback, owned */
	size_t nfailures;
	size_t failures_cap;

	bool *dead;                 /* set while a user callback runs; race_free marks it */
};

static void race_attempt_cb(evutil_socket_t, short, void *);
static void race_start_next(struct race *);

static void
ms_to_tv(unsigned ms, struct timeval *tv)
{
	tv->tv_sec = ms / 1000;
	tv->tv_usec = (suseconds_t)(ms % 1000) * 1000;
}

static void
race_slot_close(struct race_slot *s)
{
	if (s->ev != NULL) {
		event_free(s->ev);
		s->ev = NULL;
	}
	if (s->fd != -1) {
		close(s->fd);
		s->fd = -1;
	}
}

/* Calls the user's fail callback; returns false when the race was freed inside it. */
static bool
race_fail_notify(struct race *r, size_t index, int error)
{
	bool dead = false;

	if (r->fail_cb == NULL)
		return true;
	r->dead = &dead;
	r->fail_cb(index, error, r->arg);
	if (dead)
		return false;
	r->dead = NULL;
	return true;
}

/* Records a failed attempt. Returns false when the race was freed by the fail callback. */
static bool
race_record_failure(struct race *r, struct race_slot *s, int error)
{
	char buf[NETADDR_STRLEN];

	if (s->state == SLOT_IN_FLIGHT)
		r->inflight--;
	race_slot_close(s);
	s->state = SLOT_FAILED;
	log_debug("race: connect to %s[%s] failed: %s", s->target.host ? s->target.host : "",
	    netaddr_format_hostport(&s->target.addr, buf, sizeof(buf)), strerror(error));
	r->failures = xgrow(r->failures, sizeof(*r->failures), r->nfailures + 1,
	    &r->failures_cap);
	r->failures[r->nfailures].index = s->index;
	r->failures[r->nfailures].error = error;
	r->nfailures++;
	return race_fail_notify(r, s->index, error);
}

/* Ends the current round with one callback. Returns false when the race was freed. */
static bool
race_report(struct race *r, enum race_event ev, int fd, size_t index)
{
	bool dead = false;

	r->running = false;
	evtimer_del(r->delay_ev);
	r->dead = &dead;
	r->cb(ev, fd, index, r->failures, r->nfailures, r->arg);
	if (dead)
		return false;
	r->dead = NULL;
	r->nfailures = 0;
	return true;
}

/* The winner: abandon the other attempts (back to UNTRIED, see top) and report. */
static void
race_won(struct race *r, struct race_slot *win)
{
	char buf[NETADDR_STRLEN];
	int fd;
	size_t i;

	for (i = 0; i < r->nslots; i++) {
		struct race_slot *s = &r->slots[i];

		if (s == win || s->state != SLOT_IN_FLIGHT)
			continue;
		race_slot_close(s);
		s->state = SLOT_UNTRIED;
	}
	r->inflight = 0;
	fd = win->fd;
	win->fd = -1;
	if (win->ev != NULL) {
		event_free(win->ev);
		win->ev = NULL;
	}
	win->state = SLOT_WON;
	log_debug("race: connected to %s[%s]", win->target.host ? win->target.host : "",
	    netaddr_format_hostport(&win->target.addr, buf, sizeof(buf)));
	race_report(r, RACE_CONNECTED, fd, win->index);
}

/* After a change: when nothing is in flight and nothing is left, the round is over. */
static void
race_check_exhausted(struct race *r)
{
	size_t i;

	if (!r->running || r->inflight > 0)
		return;
	for (i = 0; i < r->nslots; i++)
		if (r->slots[i].state == SLOT_UNTRIED)
			return;
	race_report(r, RACE_EXHAUSTED, -1, 0);
}

/*
 * Opens the socket for one attempt and calls connect(). Returns the connected or
 * connecting fd and sets *in_progress, or -1 with errno set.
 */
static int
race_connect(struct race *r, const struct netaddr *dst, bool *in_progress)
{
	const struct netaddr *src;
	int family = netaddr_family(dst);
	int fd, one = 1, saved;

	*in_progress = false;
	fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return -1;
	/* A v6 socket must never fall back to a v4-mapped path: the family is the point. */
	if (family == AF_INET6 &&
	    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) == -1)
		goto fail;
	src = family == AF_INET6 ? r->params.source6 : r->params.source4;
	if (src != NULL) {
		/*
		 * Defer the local port choice to connect() so that many connections from one
		 * source address share the ephemeral range per destination (Linux 4.2+).
		 * Failure is harmless: bind() then picks a port the old way.
		 */
		(void)setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
		if (bind(fd, (const struct sockaddr *)&src->ss, src->len) == -1)
			goto fail;
	}
	if (connect(fd, (const struct sockaddr *)&dst->ss, dst->len) == 0)
		return fd;
	if (errno == EINPROGRESS) {
		*in_progress = true;
		return fd;
	}
fail:
	saved = errno;
	close(fd);
	errno = saved;
	return -1;
}

/*
 * Starts attempts from the first UNTRIED candidate: one attempt in progress, or as
 * many immediate failures as it takes to get one. Re-arms the attempt delay timer.
 */
static void
race_start_next(struct race *r)
{
	char buf[NETADDR_STRLEN];
	struct timeval tv;
	bool in_progress;
	size_t i;
	int fd;

	for (i = 0; i < r->nslots; i++) {
		struct race_slot *s = &r->slots[i];

		if (s->state != SLOT_UNTRIED)
			continue;
		log_debug("race: connecting to %s[%s]", s->target.host ? s->target.host : "",
		    netaddr_format_hostport(&s->target.addr, buf, sizeof(buf)));
		fd = race_connect(r, &s->target.addr, &in_progress);
		if (fd == -1) {
			/* e.g. ENETUNREACH (no route for this family): next one at once. */
			if (!race_record_failure(r, s, errno))
				return;
			continue;
		}
		s->fd = fd;
		s->state = SLOT_IN_FLIGHT;
		r->inflight++;
		if (!in_progress) {
			race_won(r, s);
			return;
		}
		s->ev = event_new(r->base, fd, EV_WRITE, race_attempt_cb, s);
		ms_to_tv(r->params.connect_timeout_ms, &tv);
		event_add(s->ev, &tv);
		ms_to_tv(r->params.attempt_delay_ms, &tv);
		evtimer_add(r->delay_ev, &tv);
		return;
	}
	/* Nothing left to start: stop pacing, and finish if nothing is in flight either. */
	evtimer_del(r->delay_ev);
	race_check_exhausted(r);
}

/* An attempt's socket became writable (connect() finished) or its timeout expired. */
static void
race_attempt_cb(evutil_socket_t fd, short what, void *arg)
{
	struct race_slot *s = arg;
	struct race *r = s->race;
	socklen_t len = sizeof(int);
	int err = 0;

	if (what & EV_TIMEOUT)
		err = ETIMEDOUT;
	else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1)
		err = errno;
	if (err == 0) {
		race_won(r, s);
		return;
	}
	/* RST (ECONNREFUSED), ICMP (EHOSTUNREACH, EACCES, ENETUNREACH) or timeout. */
	if (!race_record_failure(r, s, err))
		return;
	race_start_next(r);
}

static void
race_delay_cb(evutil_socket_t fd, short what, void *arg)
{
	struct race *r = arg;

	(void)fd;
	(void)what;
	if (r->running)
		race_start_next(r);
}

static void
race_step_cb(evutil_socket_t fd, short what, void *arg)
{
	struct race *r = arg;

	(void)fd;
	(void)what;
	if (r->running && r->inflight == 0)
		race_start_next(r);
}

struct race *
race_new(struct event_base *base, const struct race_target *targets, size_t n,
    const struct race_params *p, race_cb cb, race_fail_cb fail_cb, void *arg)
{
	struct race *r;
	size_t i;

	r = xcalloc(1, sizeof(*r));
	r->base = base;
	r->slots = xcalloc(n > 0 ? n : 1, sizeof(*r->slots));
	r->nslots = n;
	for (i = 0; i < n; i++) {
		r->slots[i].race = r;
		r->slots[i].target = targets[i];
		r->slots[i].index = i;
		r->slots[i].state = SLOT_UNTRIED;
		r->slots[i].fd = -1;
	}
	r->params = *p;
	if (p->source4 != NULL) {
		r->source4 = *p->source4;
		netaddr_set_port(&r->source4, 0);
		r->params.source4 = &r->source4;
	}
	if (p->source6 != NULL) {
		r->source6 = *p->source6;
		netaddr_set_port(&r->source6, 0);
		r->params.source6 = &r->source6;
	}
	/* Never NULL, even with no failure to report: callers may memcpy from it. */
	r->failures = xgrow(NULL, sizeof(*r->failures), 4, &r->failures_cap);
	r->cb = cb;
	r->fail_cb = fail_cb;
	r->arg = arg;
	r->step_ev = event_new(base, -1, 0, race_step_cb, r);
	r->delay_ev = evtimer_new(base, race_delay_cb, r);
	return r;
}

void
race_next(struct race *r)
{
	if (r->running)
		return;
	r->running = true;
	event_active(r->step_ev, EV_TIMEOUT, 0);
}

void
race_free(struct race *r)
{
	size_t i;

	if (r == NULL)
		return;
	if (r->dead != NULL)
		*r->dead = true;
	for (i = 0; i < r->nslots; i++)
		race_slot_close(&r->slots[i]);
	event_free(r->step_ev);
	event_free(r->delay_ev);
	free(r->failures);
	free(r->slots);
	free(r);
}
