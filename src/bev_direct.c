/*
 * bev_direct: direct writes on plaintext socket bufferevents (see bev_direct.h).
 */
#include "config.h"

#include <errno.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "bev_direct.h"

void
bev_direct_start(struct bufferevent *bev)
{
	bufferevent_disable(bev, EV_WRITE);
}

enum bev_direct_result
bev_direct_flush(struct bufferevent *bev)
{
	struct evbuffer *out = bufferevent_get_output(bev);
	int n, err;

	if (evbuffer_get_length(out) == 0)
		return BEV_DIRECT_DRAINED;
	/*
	 * A bufferevent keeps the start of its output frozen so that only its own write
	 * path drains it; that path thaws it around each write in just this way.
	 */
	evbuffer_unfreeze(out, 1);
	n = evbuffer_write(out, bufferevent_getfd(bev));
	err = errno;
	evbuffer_freeze(out, 1);
	if (n < 0 && err != EAGAIN && err != EWOULDBLOCK && err != EINTR) {
		errno = err;
		return BEV_DIRECT_ERROR;
	}
	if (evbuffer_get_length(out) == 0)
		return BEV_DIRECT_DRAINED;
	bufferevent_enable(bev, EV_WRITE);
	return BEV_DIRECT_PENDING;
}

void
bev_direct_drained(struct bufferevent *bev)
{
	if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
		bufferevent_disable(bev, EV_WRITE);
}

bool
bev_direct_pending(struct bufferevent *bev)
{
	return (bufferevent_get_enabled(bev) & EV_WRITE) != 0;
}
