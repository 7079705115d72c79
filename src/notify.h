/*
 * notify: turns a message's failed recipients into a delivery status notification
 * (RFC 3464, composed by bounce.c) addressed to the envelope sender, and queues it in
 * the spool like any other message, so it goes through the same queue and transports.
 * A message from the null sender never produces one (RFC 5321 6.1: no bounce loops).
 */
#ifndef DR_NOTIFY_H
#define DR_NOTIFY_H

#include <stddef.h>
#include <time.h>

#include "conf.h"
#include "envelope.h"

struct spool;

/* One failed recipient, with what the delivery knew when it failed. */
struct notify_item {
	size_t index;            /* recipient index in the original envelope */
	char relay[320];         /* "mx.example.org[192.0.2.1]:25" or "none" */
	int family;              /* AF_INET, AF_INET6 or AF_UNSPEC */
	time_t when;             /* last attempt */
	int delayed;             /* 1: still being retried (delay warning), 0: failed */
};

/*
 * Composes and commits the DSN for items of orig. Returns the new envelope (ownership to
 * the caller, who queues it), or NULL when none is due (null sender: logged) or on a
 * spool error (logged, errno set).
 */
struct envelope *notify_compose(struct spool *spool, const struct conf *conf,
    const struct envelope *orig, const struct notify_item *items, size_t n);

#endif
