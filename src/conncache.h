/*
 * conncache: idle outbound SMTP sessions kept for the next message to the same place
 * (Postfix's connection cache, smtp_connection_cache_time_limit). A session is filed
 * under its transport and the address it is connected to, so the next delivery whose
 * candidate list starts with that address (same transport: same source address, same
 * EHLO name) skips DNS-to-connect and the greeting, and sends RSET and a new transaction.
 * Sessions leave the cache after an idle time limit, after a number of transactions, or
 * when the server closes them.
 *
 * Ownership: conncache_put takes the session; conncache_take gives it back to the caller.
 */
#ifndef DR_CONNCACHE_H
#define DR_CONNCACHE_H

#include <stddef.h>

#include "netaddr.h"

struct event_base;
struct smtp_client;
struct conncache;

#define CONNCACHE_MAX_REUSE 100    /* transactions per connection, then a new one */
#define CONNCACHE_MAX_IDLE 1000    /* idle sessions kept at most */

struct conncache *conncache_new(struct event_base *base);
/* Closes (QUIT) and frees every idle session. */
void conncache_free(struct conncache *cc);

/*
 * Files an idle session (smtp_client_reusable) for idle_s seconds, or frees it when it
 * may not be kept (idle_s 0, too many transactions, cache full, not reusable).
 */
void conncache_put(struct conncache *cc, const char *transport, const struct netaddr *addr,
    struct smtp_client *c, unsigned idle_s);
/* An idle session to addr over transport, or NULL. */
struct smtp_client *conncache_take(struct conncache *cc, const char *transport,
    const struct netaddr *addr);
size_t conncache_idle_count(const struct conncache *cc);

#endif
