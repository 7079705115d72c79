/*
 * bounce: composes delivery status notifications (RFC 3464 inside RFC 6522's
 * multipart/report) for recipients that failed or are delayed. Pure: no I/O; the caller
 * (notify.c) supplies the original header block and queues the result.
 */
#ifndef DR_BOUNCE_H
#define DR_BOUNCE_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

enum bounce_action { BOUNCE_FAILED = 0, BOUNCE_DELAYED };

struct bounce_rcpt {
	const char *addr;        /* the recipient as given in RCPT TO */
	const char *dsn;         /* enhanced status "5.1.1" */
	const char *reason;      /* what happened, in words (with the remote reply) */
	const char *remote_mta;  /* "mx.example.org", or NULL when nothing answered */
	const char *diagnostic;  /* the remote reply "550 5.1.1 ...", or NULL */
	int family;              /* AF_INET, AF_INET6 or AF_UNSPEC: the family tried */
	time_t last_attempt;
	enum bounce_action action;
};

struct bounce_msg {
	const char *reporting_mta; /* our host name */
	const char *queue_id;
	time_t arrival;
	const char *sender;      /* the original envelope sender */
	const char *headers;     /* original header block, CR LF line ends */
	size_t headers_len;
	const struct bounce_rcpt *rcpts;
	size_t nrcpts;
	const char *boundary_seed; /* makes the MIME boundary unique (queue id) */
};

/* The whole message (CR LF line ends), malloc'd; *len gets its length. */
char *bounce_compose(const struct bounce_msg *m, time_t now, size_t *len);
/* False for the null sender: a notification is never sent about a notification. */
bool bounce_should_send(const char *sender);

#endif
