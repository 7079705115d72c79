/*
 * delivery: one attempt to deliver one message to the recipients of one domain. It
 * routes the domain to a transport, gets the ordered candidate addresses (nexthop.c),
 * races connections to them (race.c), runs the SMTP transaction (smtp_client.c), and
 * moves on to the next address when a session fails before the recipients got their
 * final answers. When the receiver rejects us for our address family (fallback.c), the
 * rejected recipients and the whole message are sent again at once over the other
 * family, if the transport allows it. Connection and rejection outcomes feed the
 * health memory (health.c). It reports one outcome per recipient; final outcomes are
 * logged and written to the spool by the queue, in one place.
 *
 * Ownership: the caller owns the delivery (delivery_free, allowed inside the callback,
 * cancels whatever is still running). The envelope, recipient list and conf are
 * borrowed and must outlive the delivery; results are valid during the callback.
 */
#ifndef DR_DELIVERY_H
#define DR_DELIVERY_H

#include <stddef.h>

#include "conf.h"
#include "envelope.h"

struct event_base;
struct dns;
struct spool;
struct delivery;

#define DELIVERY_RELAY_MAX 320
#define DELIVERY_TLS_MAX 128

struct delivery_result {
	size_t index;            /* recipient index in the envelope */
	enum rcpt_state state;   /* RCPT_DELIVERED, RCPT_DEFERRED or RCPT_BOUNCED */
	char dsn[16];            /* "2.0.0", "4.4.1", "5.1.1" ... */
	char *reason;            /* owned by the delivery: what happened, with the remote reply */
	char relay[DELIVERY_RELAY_MAX]; /* "mx.example.org[192.0.2.25]:25", or "none" */
	int family;              /* AF_INET, AF_INET6, or AF_UNSPEC when nothing connected */
	char tls[DELIVERY_TLS_MAX]; /* the session's TLS: "TLSv1.3:CIPHER:verified" (or
	                            ":unverified"), "none" for plaintext or no session */
};

struct health;
struct stats;
struct conncache;
struct localaddr_cache;

struct delivery_env {
	struct event_base *base;
	struct dns *dns;
	struct spool *spool;
	struct health *health;   /* may be NULL */
	struct stats *stats;     /* counters to bump; never NULL */
	struct conncache *cache; /* idle sessions to reuse; may be NULL (no reuse) */
	struct localaddr_cache *local; /* this host's addresses (mail loop check); may be
	                          * NULL (the kernel is asked for every MX address) */
};

typedef void (*delivery_cb)(struct delivery *d, const struct delivery_result *results,
    size_t n, void *arg);

/* arrival: when the message was received (sub-second), for delay= in log lines. */
struct delivery *delivery_start(const struct delivery_env *denv, const struct conf *conf,
    const struct envelope *env, double arrival, const char *domain, const size_t *rcpt_idx,
    size_t nrcpt, delivery_cb cb, void *arg);
void delivery_free(struct delivery *d);

#endif
