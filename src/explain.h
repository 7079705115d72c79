/*
 * explain: tells an operator what the next delivery to a domain would do and why: the
 * route and transport, the family policy, source address and EHLO name per family, the
 * MX hosts with each family's DNS outcome, the candidate addresses in the order they
 * would be tried (and which ones the health memory moves last), the addresses skipped
 * with the reason, and the health state. It runs the same resolution code as delivery
 * (nexthop.c), so what it prints is what delivery does.
 *
 * Ownership: the caller owns the explanation (explain_free, allowed in the callback).
 */
#ifndef DR_EXPLAIN_H
#define DR_EXPLAIN_H

#include <stdio.h>

#include "conf.h"

struct event_base;
struct dns;
struct health;
struct explain;

typedef void (*explain_cb)(struct explain *e, void *arg);

/* Writes the explanation to out, then calls cb. health may be NULL. */
struct explain *explain_route(struct event_base *base, struct dns *dns, struct health *health,
    const struct conf *conf, const char *domain, FILE *out, explain_cb cb, void *arg);
void explain_free(struct explain *e);

#endif
