/*
 * localaddr: this host's own addresses as a snapshot, refreshed when older than a TTL.
 * Delivery asks "is this MX address one of ours?" (mail loop) for every address of every
 * delivery; getifaddrs() costs a netlink socket and half a dozen system calls each time,
 * so the answer comes from a list taken at most LOCALADDR_TTL_S ago.
 *
 * The pure part (turning a struct ifaddrs list into addresses, matching) is separate and
 * needs no kernel, for tests. Time is passed in, and the function that takes the list can
 * be replaced, so tests control both.
 *
 * Ownership: the caller owns the cache (localaddr_new / localaddr_free). Not thread-safe:
 * one cache per event loop.
 */
#ifndef DR_LOCALADDR_H
#define DR_LOCALADDR_H

#include <stdbool.h>
#include <stddef.h>

#include "netaddr.h"

struct ifaddrs;
struct localaddr_cache;

/*
 * How long a snapshot answers before the kernel is asked again. One second: an address
 * an operator adds is seen as ours by the next delivery a second later at most (Postfix's
 * smtp processes learn the host's addresses once per process lifetime, i.e. up to
 * max_idle/max_use later), while a busy relay lists its interfaces once a second instead
 * of once per MX address.
 */
#define LOCALADDR_TTL_S 1.0

/*
 * Takes a fresh list of this host's addresses: *out (allocated, the cache frees it) and
 * *n. Returns 0, or -1 with errno set (nothing allocated).
 */
typedef int (*localaddr_fetch_fn)(void *arg, struct netaddr **out, size_t *n);

/* A cache backed by getifaddrs(). */
struct localaddr_cache *localaddr_new(void);
/* A cache backed by another fetch function (tests). arg is borrowed. */
struct localaddr_cache *localaddr_new_with(localaddr_fetch_fn fetch, void *arg);
void localaddr_free(struct localaddr_cache *c);

/*
 * True when a is an address of this host, as of a snapshot taken within LOCALADDR_TTL_S
 * before now (wall clock, seconds). A snapshot is taken first when there is none, when
 * it is older than the TTL, or when now is before the time it was taken (the clock went
 * back). When taking one fails, the failure is logged (once until a later one succeeds)
 * and the previous snapshot keeps answering, or "not local" when there is none; the next
 * attempt comes a TTL later.
 */
bool localaddr_is_local(struct localaddr_cache *c, const struct netaddr *a, double now);

/* The fetch function localaddr_new() uses: getifaddrs() and localaddr_from_ifaddrs(). */
int localaddr_fetch_system(void *arg, struct netaddr **out, size_t *n);

/*
 * Pure: the IPv4 and IPv6 addresses of an ifaddrs list, in list order, into *out
 * (allocated; caller frees; NULL when there are none). Entries without an address and
 * of other families (AF_PACKET) are left out. Returns the count.
 */
size_t localaddr_from_ifaddrs(const struct ifaddrs *list, struct netaddr **out);
/* Pure: is a among addrs[0..n) (addresses only, netaddr_equal)? */
bool localaddr_match(const struct netaddr *addrs, size_t n, const struct netaddr *a);

#endif
