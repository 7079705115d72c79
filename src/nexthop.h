/*
 * nexthop: where mail for a domain goes, as an ordered list of addresses to try. Looks
 * up the MX records of the domain (or of an unbracketed smarthost; none for "[host]" or
 * an address literal), then A and AAAA of every MX host in parallel, only for the
 * families the transport allows, and builds the candidate plan (mx.c): MX preference
 * order, addresses interleaved by family, unusable addresses set aside with the reason,
 * and families the health memory says to avoid moved to the end.
 *
 * RFC 8305 3: the plan is built as soon as the preferred family's answers are in (when
 * they gave addresses the plan would dial), or 50 ms (the Resolution Delay) after the
 * other family's answers gave such addresses while the preferred family is still
 * outstanding, so a slow or broken AAAA lookup does not hold mail back. Answers arriving
 * later are not waited for. Addresses that would only be skipped (link-local, loopback,
 * this host's own) count as no answer: an MX publishing an unusable AAAA must not make
 * the plan start before the A records that could carry the mail are in.
 *
 * Used by delivery (for real) and by route explanations (to show an operator what the
 * next delivery would do). The caller owns the nexthop (nexthop_free, allowed inside the
 * callback); the result is valid during the callback only.
 */
#ifndef DR_NEXTHOP_H
#define DR_NEXTHOP_H

#include <stdbool.h>
#include <stddef.h>

#include "conf.h"
#include "dns.h"
#include "mx.h"

struct event_base;
struct health;
struct localaddr_cache;
struct nexthop;

#define NEXTHOP_RESOLUTION_DELAY_MS 50

enum nexthop_status {
	NEXTHOP_OK,       /* plan has at least one candidate */
	NEXTHOP_DEFER,    /* temporary: DNS failure, no usable address */
	NEXTHOP_BOUNCE,   /* permanent: NXDOMAIN, null MX */
};

/* One MX host as resolved, for explanations. */
struct nexthop_host {
	char *name;
	unsigned preference;
	enum dns_status status[2]; /* [0] A, [1] AAAA */
	bool asked[2];
	bool answered[2];
};

struct nexthop_result {
	enum nexthop_status status;
	char dsn[16];               /* when not OK */
	const char *reason;         /* when not OK */
	const char *mx_source;      /* "MX", "implicit MX", "smarthost", "address literal" */
	const struct mx_plan *plan; /* candidates (ordered) and skipped addresses */
	const bool *avoided;        /* per candidate: moved last by the health memory */
	const char *const *avoid_why;
	const struct nexthop_host *hosts;
	size_t nhosts;
	int first_family;           /* the family tried first */
};

typedef void (*nexthop_cb)(struct nexthop *n, const struct nexthop_result *r, void *arg);

/*
 * health may be NULL. local (borrowed, may be NULL) answers which MX addresses are this
 * host's (mail loop); NULL asks the kernel for every address (netaddr_is_local). id is
 * the queue id for log lines (may be NULL).
 */
struct nexthop *nexthop_resolve(struct event_base *base, struct dns *dns,
    struct health *health, struct localaddr_cache *local, const struct conf *conf,
    const struct conf_transport *t, const char *domain, const char *id, nexthop_cb cb,
    void *arg);
void nexthop_free(struct nexthop *n);

/*
 * RFC 8305 3 as a pure decision, taken after every address answer: given, per family
 * (preferred and other), how many lookups are outstanding and whether the finished ones
 * gave an address the plan would dial (mx_any_usable: a link-local AAAA or one of this
 * host's own addresses counts as none), build the plan now, start the Resolution Delay
 * (build when it ends unless the preferred family finishes first), or wait.
 */
enum nexthop_step {
	NEXTHOP_STEP_WAIT,  /* wait for more answers */
	NEXTHOP_STEP_BUILD, /* build the plan now */
	NEXTHOP_STEP_DELAY, /* build it NEXTHOP_RESOLUTION_DELAY_MS from now at the latest */
};
enum nexthop_step nexthop_step(size_t pending_pref, bool usable_pref, size_t pending_other,
    bool usable_other);

/* The ordering policy for a transport: its own, or the global prefer_family for "any". */
enum conf_family nexthop_policy(const struct conf *conf, const struct conf_transport *t);

#endif
