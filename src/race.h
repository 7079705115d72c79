/*
 * race: connection establishment over an ordered candidate list, RFC 8305 style. Starts
 * the first attempt, then the next one after attempt_delay_ms or as soon as the current
 * one fails (RST, ICMP unreachable, ENETUNREACH), whichever is first; the first connection
 * established wins and the other attempts are closed. Each attempt is bound to the source
 * address for its family when one is given. With a very large attempt delay this is
 * plain sequential connecting.
 *
 * A race can be resumed: after a winner turned out unusable at the SMTP level (bad
 * greeting), race_next() continues with the candidates not yet tried. Attempts that were
 * still in flight when another one won count as not yet tried (they never got their
 * chance), so race_next() tries them again; failed attempts and the winner are not retried.
 *
 * Ownership: the caller owns the race (race_free). The winning fd passes to the callback's
 * receiver, which must close it. Callbacks run from the event loop; race_free is allowed
 * inside the callback.
 */
#ifndef DR_RACE_H
#define DR_RACE_H

#include <stdbool.h>
#include <stddef.h>

#include "netaddr.h"

struct event_base;
struct race;

struct race_target {
	const char *host;      /* borrowed; for logs */
	struct netaddr addr;   /* destination with port */
};

struct race_params {
	unsigned attempt_delay_ms;   /* RFC 8305 "Connection Attempt Delay" */
	unsigned connect_timeout_ms; /* per attempt */
	const struct netaddr *source4; /* NULL: kernel's choice */
	const struct netaddr *source6;
};

/* Per-attempt outcome, reported for each failed attempt (for logs and health memory). */
struct race_failure {
	size_t index;          /* into the target list */
	int error;             /* errno: ETIMEDOUT, ECONNREFUSED, ENETUNREACH, EACCES, ... */
};

enum race_event {
	RACE_CONNECTED,        /* fd is connected to targets[index] */
	RACE_EXHAUSTED,        /* every remaining candidate failed */
};

/*
 * Called once per race_start/race_next. For RACE_CONNECTED, fd belongs to the receiver.
 * failures lists the attempts that failed since the previous callback (never NULL; valid
 * during the call only).
 */
typedef void (*race_cb)(enum race_event ev, int fd, size_t index,
    const struct race_failure *failures, size_t nfailures, void *arg);
/* Called as soon as an attempt fails (before the race ends), for logging. May be NULL. */
typedef void (*race_fail_cb)(size_t index, int error, void *arg);

/* targets are copied (host strings stay borrowed). Does not start: call race_next(). */
struct race *race_new(struct event_base *base, const struct race_target *targets, size_t n,
    const struct race_params *p, race_cb cb, race_fail_cb fail_cb, void *arg);
/*
 * Starts racing from the first untried candidate. The work and every callback happen
 * from the event loop, never inside this call. A no-op while a round is running; when
 * no candidate is left, the round ends at once with RACE_EXHAUSTED (no failures).
 */
void race_next(struct race *r);
void race_free(struct race *r);

#endif
