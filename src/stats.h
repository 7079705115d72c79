/*
 * stats: the daemon's counters since start, shared by the modules that count (queue,
 * delivery) and read by the control socket (dualrelayctl stats) and metrics. A plain
 * struct owned by the daemon and passed by pointer, so a test can make its own.
 */
#ifndef DR_STATS_H
#define DR_STATS_H

#include <sys/socket.h>

enum stats_family { STATS_NONE = 0, STATS_IPV4, STATS_IPV6, STATS_NFAMILIES };

struct stats {
	unsigned long received;                      /* messages accepted (250) */
	unsigned long delivered[STATS_NFAMILIES];    /* recipients, by family used */
	unsigned long deferred[STATS_NFAMILIES];     /* recipient attempts */
	unsigned long bounced[STATS_NFAMILIES];      /* recipients (incl. expired) */
	unsigned long connect_failed[STATS_NFAMILIES];  /* refused, unreachable */
	unsigned long connect_timeout[STATS_NFAMILIES]; /* no answer */
	unsigned long family_rejected[STATS_NFAMILIES]; /* rejections blaming our address */
	unsigned long tls_failed[STATS_NFAMILIES];   /* STARTTLS handshakes that failed */
	unsigned long fallback_tcp;   /* sessions won by a family other than the first tried */
	unsigned long fallback_smtp;  /* SMTP-level family fallbacks started */
	unsigned long bounces_sent;   /* DSNs queued */
};

static inline enum stats_family
stats_family(int family)
{
	return family == AF_INET ? STATS_IPV4 : family == AF_INET6 ? STATS_IPV6 : STATS_NONE;
}

#endif
