/*
 * selfcheck: forward-confirmed reverse DNS of our own source addresses. For every
 * source4/source6 a transport binds to, the PTR must exist and one of its names must
 * resolve back to the address; receivers reject mail from addresses that fail this
 * ("cannot find your reverse hostname"), so dualrelayd warns clearly at start and on
 * -n. Asynchronous, on the daemon's DNS; each address is checked once.
 *
 * Ownership: the caller owns the check (selfcheck_free, allowed in the callback).
 */
#ifndef DR_SELFCHECK_H
#define DR_SELFCHECK_H

#include "conf.h"

struct event_base;
struct dns;
struct selfcheck;

/* warnings: how many addresses failed the check. */
typedef void (*selfcheck_cb)(unsigned warnings, void *arg);

struct selfcheck *selfcheck_start(struct event_base *base, struct dns *dns,
    const struct conf *conf, selfcheck_cb cb, void *arg);
void selfcheck_free(struct selfcheck *s);

#endif
