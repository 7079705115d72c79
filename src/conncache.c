/*
 * conncache: idle SMTP sessions by (transport, address) (see conncache.h). A short list
 * searched linearly: it holds at most CONNCACHE_MAX_IDLE sessions, each for at most a
 * couple of seconds.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include <event2/event.h>

#include "conncache.h"
#include "log.h"
#include "smtp_client.h"
#include "util.h"

struct cached {
	TAILQ_ENTRY(cached) entry;
	struct conncache *cc;
	char *transport;         /* owned */
	struct netaddr addr;
	struct smtp_client *client; /* owned while cached */
	struct event *timer;     /* idle limit */
};

struct conncache {
	struct event_base *base;
	TAILQ_HEAD(, cached) idle;
	size_t n;
};

static void
cached_free(struct conncache *cc, struct cached *e, bool close_client)
{
	TAILQ_REMOVE(&cc->idle, e, entry);
	cc->n--;
	if (close_client)
		smtp_client_free(e->client); /* QUIT, then close */
	event_free(e->timer);
	free(e->transport);
	free(e);
}

static void
on_idle_limit(evutil_socket_t fd, short what, void *arg)
{
	struct cached *e = arg;
	(void)fd;
	(void)what;
	cached_free(e->cc, e, true);
}

struct conncache *
conncache_new(struct event_base *base)
{
	struct conncache *cc = xcalloc(1, sizeof(*cc));
	cc->base = base;
	TAILQ_INIT(&cc->idle);
	return cc;
}

void
conncache_free(struct conncache *cc)
{
	struct cached *e;
	if (cc == NULL)
		return;
	while ((e = TAILQ_FIRST(&cc->idle)) != NULL)
		cached_free(cc, e, true);
	free(cc);
}

void
conncache_put(struct conncache *cc, const char *transport, const struct netaddr *addr,
    struct smtp_client *c, unsigned idle_s)
{
	if (idle_s == 0 || !smtp_client_reusable(c) || smtp_client_transactions(c) >= CONNCACHE_MAX_REUSE ||
	    cc->n >= CONNCACHE_MAX_IDLE) {
		smtp_client_free(c);
		return;
	}
	struct cached *e = xcalloc(1, sizeof(*e));
	struct timeval tv = { (time_t)idle_s, 0 };
	e->cc = cc;
	e->transport = xstrdup(transport);
	e->addr = *addr;
	e->client = c;
	e->timer = evtimer_new(cc->base, on_idle_limit, e);
	evtimer_add(e->timer, &tv);
	TAILQ_INSERT_TAIL(&cc->idle, e, entry);
	cc->n++;
}

struct smtp_client *
conncache_take(struct conncache *cc, const char *transport, const struct netaddr *addr)
{
	struct cached *e, *next;
	for (e = TAILQ_FIRST(&cc->idle); e != NULL; e = next) {
		next = TAILQ_NEXT(e, entry);
		if (strcmp(e->transport, transport) != 0 || !netaddr_equal(&e->addr, addr) ||
		    netaddr_port(&e->addr) != netaddr_port(addr))
			continue;
		if (!smtp_client_reusable(e->client)) {
			cached_free(cc, e, true); /* the server closed it meanwhile */
			continue;
		}
		struct smtp_client *c = e->client;
		cached_free(cc, e, false);
		return c;
	}
	return NULL;
}

size_t
conncache_idle_count(const struct conncache *cc)
{
	return cc->n;
}
