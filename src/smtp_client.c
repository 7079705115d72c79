/*
 * smtp_client: one outbound SMTP transaction over a connected socket (see
 * smtp_client.h). Owns the socket (a bufferevent) and the content fd from
 * smtp_client_start() on, the queue of replies still expected, and the result handed
 * to the callback.
 *
 * Every command that was sent pushes what its reply means onto a small queue; replies
 * are matched to it in order. Without PIPELINING that queue holds one entry at a time
 * (lock-step); with it (RFC 2920) MAIL, every RCPT and DATA go out in one write and
 * their replies are matched the same way, so both modes share one set of handlers.
 * Each wait for a reply is bounded by a timer (reply_timeout_s, or body_timeout_s for
 * the reply to the end of data, RFC 5321 4.5.3.2.6), and each stalled write by the
 * bufferevent's write timeout.
 *
 * The result is reported once, from the event loop, as soon as it is known; a polite
 * QUIT is then written straight to the socket and the client just waits to be freed
 * (RFC 5321 4.1.1.10 lets the client close after sending QUIT). The callback may free
 * the client: a flag on the stack tells the running handler to touch nothing more.
 * Sessions are logged at debug level only: the caller logs outcomes.
 *
 * In plaintext the client writes its commands and the message itself, straight to the
 * socket, once per callback, from a zero-delay event (client_flush_cb, bev_direct.h):
 * libevent would otherwise change the socket's epoll interest twice per command batch.
 * The bufferevent writes only what the kernel did not take at once, and streams a body
 * larger than one fill (BODY_HIGH_WATER) as it always did. After each drain
 * client_output_drained refills the body or starts the final-reply clock.
 *
 * STARTTLS (RFC 3207) swaps the plain socket bufferevent for an OpenSSL one on the same
 * fd once the server said 220; the handshake is one more expected "reply" (EXPECT_TLS),
 * so the same timer bounds it, and the EHLO after it starts from a clean slate. AUTH
 * (RFC 4954) runs after that, lock-step, and its lines are never logged.
 */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>

#include "bev_direct.h"
#include "envelope.h"
#include "log.h"
#include "netaddr.h"
#include "smtp_client.h"
#include "smtp_proto.h"
#include "tls.h"
#include "util.h"

#define BODY_CHUNK (64 * 1024)        /* bytes read from the content file at a time */
#define BODY_HIGH_WATER (256 * 1024)  /* stop reading the file above this much output */
#define BODY_LOW_WATER (64 * 1024)    /* ... and continue once it drained below this */
#define QUIT_LINGER_S 5               /* how long to wait for 221 before just closing */

/* What an expected reply answers. */
enum expect_kind {
	EXPECT_GREETING,
	EXPECT_EHLO,
	EXPECT_HELO,
	EXPECT_MAIL,
	EXPECT_RCPT,
	EXPECT_DATA,
	EXPECT_DOT,      /* end of data after the body: the final reply */
	EXPECT_RSET,     /* before a further transaction on a reused connection */
	EXPECT_STARTTLS, /* 220 to STARTTLS */
	EXPECT_TLS,      /* not a reply: the TLS handshake completing */
	EXPECT_AUTH_USER,/* 334 to AUTH LOGIN: the user name is due */
	EXPECT_AUTH_PASS,/* 334 after the user name: the password is due */
	EXPECT_AUTH,     /* 235 (or a refusal) ending AUTH */
};

struct expect {
	enum expect_kind kind;
	size_t rcpt;     /* EXPECT_RCPT: position in the result's rcpts */
};

enum client_state {
	CLIENT_HANDSHAKE,   /* greeting, EHLO/HELO */
	CLIENT_TRANSACTION, /* MAIL, RCPT, DATA */
	CLIENT_BODY,        /* after 354: sending content, then waiting for the final reply */
	CLIENT_DONE,        /* result reported */
};

struct smtp_client {
	struct event_base *base;
	struct bufferevent *bev;      /* owns the socket; NULL once closed */
	int content_fd;               /* owned; -1 once closed */
	struct smtp_client_params p;  /* copy; the strings stay borrowed */
	char peer[NETADDR_STRLEN + 300]; /* "mx.example.org[192.0.2.1]" for texts */
	const struct envelope *env;   /* borrowed */
	smtp_client_cb cb;
	void *arg;

	enum client_state state;
	bool pipelining;              /* RFC 2920 offered: MAIL..DATA in one write */
	bool rset_pipelined;          /* a reuse sent RSET and MAIL..DATA in one write */
	struct expect *expect;        /* replies still due, in order; owned */
	size_t expect_head, expect_tail, expect_cap;
	struct smtp_reply reply;      /* the reply being read */

	bool *accepted;               /* per rcpt: RCPT got 2xx; owned */
	size_t naccepted;
	bool outcome_set;             /* result already decided (MAIL failed, draining) */

	struct smtp_dot_encoder enc;
	char *chunk;                  /* BODY_CHUNK bytes read from the file; owned */
	char *stuffed;                /* 2 * BODY_CHUNK dot-stuffed bytes; owned */
	uint64_t body_queued;         /* bytes added to the output after 354 */
	bool dot_queued;              /* the end-of-data sequence is in the output */

	struct event *timer;          /* reply timeout; after the result: QUIT linger */
	struct event *flush_ev;       /* plaintext: writes the output (client_flush_cb) */
	struct smtp_client_result result;
	bool *dead;                   /* set while the callback runs; smtp_client_free marks it */
	bool idle;                    /* kept open after a transaction (keep_open), no QUIT */
	unsigned transactions;        /* begun on this connection */

	bool tls_on;                  /* bev is an OpenSSL bufferevent (handshake begun) */
	bool tls_refused;             /* "may": STARTTLS got an error reply; plaintext */
	struct tls_info tls;          /* the finished handshake; kept across reuse */
	bool authed;                  /* AUTH succeeded (or was not needed) */
};

static bool client_reply(struct smtp_client *, struct smtp_reply *);
static bool client_body_fill(struct smtp_client *);
static void client_read_cb(struct bufferevent *, void *);
static void client_write_cb(struct bufferevent *, void *);
static void client_event_cb(struct bufferevent *, short, void *);

/* Output was queued: in plaintext, write it once the running callback is done. */
static void
client_queued(struct smtp_client *c)
{
	if (!c->tls_on)
		event_active(c->flush_ev, EV_WRITE, 1);
}

const char *
smtp_client_stage_name(enum smtp_client_stage s)
{
	switch (s) {
	case SMTP_STAGE_GREETING:
		return "in the initial server greeting";
	case SMTP_STAGE_EHLO:
		return "in reply to EHLO command";
	case SMTP_STAGE_HELO:
		return "in reply to HELO command";
	case SMTP_STAGE_MAIL:
		return "in reply to MAIL FROM command";
	case SMTP_STAGE_RCPT:
		return "in reply to RCPT TO command";
	case SMTP_STAGE_DATA:
		return "in reply to DATA command";
	case SMTP_STAGE_BODY:
		return "in reply to end of DATA command";
	case SMTP_STAGE_QUIT:
		return "in reply to QUIT command";
	case SMTP_STAGE_STARTTLS:
		return "in reply to STARTTLS command";
	case SMTP_STAGE_AUTH:
		return "in reply to AUTH command";
	}
	return "in reply to an unknown command";
}

static enum smtp_client_stage
kind_stage(enum expect_kind k)
{
	switch (k) {
	case EXPECT_GREETING:
		return SMTP_STAGE_GREETING;
	case EXPECT_EHLO:
		return SMTP_STAGE_EHLO;
	case EXPECT_HELO:
		return SMTP_STAGE_HELO;
	case EXPECT_MAIL:
		return SMTP_STAGE_MAIL;
	case EXPECT_RCPT:
		return SMTP_STAGE_RCPT;
	case EXPECT_DATA:
		return SMTP_STAGE_DATA;
	case EXPECT_DOT:
		return SMTP_STAGE_BODY;
	case EXPECT_RSET:
		return SMTP_STAGE_GREETING; /* a stale reused connection: like a failed connect */
	case EXPECT_STARTTLS:
	case EXPECT_TLS:
		return SMTP_STAGE_STARTTLS;
	case EXPECT_AUTH_USER:
	case EXPECT_AUTH_PASS:
	case EXPECT_AUTH:
		return SMTP_STAGE_AUTH;
	}
	return SMTP_STAGE_GREETING;
}

static bool
expect_empty(const struct smtp_client *c)
{
	return c->expect_head == c->expect_tail;
}

/* Where the session is now, for failures that are not replies. */
static enum smtp_client_stage
client_stage(const struct smtp_client *c)
{
	if (!expect_empty(c))
		return kind_stage(c->expect[c->expect_head].kind);
	if (c->state == CLIENT_BODY)
		return SMTP_STAGE_BODY;
	if (c->state == CLIENT_DONE)
		return SMTP_STAGE_QUIT;
	return c->state == CLIENT_TRANSACTION ? SMTP_STAGE_MAIL : SMTP_STAGE_GREETING;
}

/* Postfix's wording for what was going on when the connection broke. */
static const char *
client_doing(const struct smtp_client *c)
{
	if (!expect_empty(c)) {
		switch (c->expect[c->expect_head].kind) {
		case EXPECT_GREETING:
			return "receiving the initial server greeting";
		case EXPECT_EHLO:
			return "performing the EHLO handshake";
		case EXPECT_HELO:
			return "performing the HELO handshake";
		case EXPECT_MAIL:
			return "sending MAIL FROM";
		case EXPECT_RCPT:
			return "sending RCPT TO";
		case EXPECT_DATA:
			return "sending DATA command";
		case EXPECT_DOT:
			return "sending end of data -- message may be sent more than once";
		case EXPECT_RSET:
			return "reusing the connection (RSET)";
		case EXPECT_STARTTLS:
			return "sending STARTTLS";
		case EXPECT_TLS:
			return "performing the TLS handshake";
		case EXPECT_AUTH_USER:
		case EXPECT_AUTH_PASS:
		case EXPECT_AUTH:
			return "authenticating (AUTH)";
		}
	}
	if (c->state == CLIENT_BODY)
		return "sending message body";
	return "sending QUIT";
}

static void
expect_push(struct smtp_client *c, enum expect_kind kind, size_t rcpt)
{
	if (expect_empty(c))
		c->expect_head = c->expect_tail = 0;
	c->expect = xgrow(c->expect, sizeof(*c->expect), c->expect_tail + 1, &c->expect_cap);
	c->expect[c->expect_tail].kind = kind;
	c->expect[c->expect_tail].rcpt = rcpt;
	c->expect_tail++;
}

static void
reply_move(struct smtp_reply *dst, struct smtp_reply *src)
{
	smtp_reply_clear(dst);
	*dst = *src;
	smtp_reply_init(src);
}

static void
reply_copy(struct smtp_reply *dst, const struct smtp_reply *src)
{
	smtp_reply_clear(dst);
	*dst = *src;
	dst->text = src->text != NULL ? xstrdup(src->text) : NULL;
}

/* A reply we make up ourselves (RFC 3463 code, one line of text). */
static void
reply_synth(struct smtp_reply *r, int code, const char *enhanced, const char *text)
{
	smtp_reply_clear(r);
	r->code = code;
	dr_strlcpy(r->enhanced, enhanced, sizeof(r->enhanced));
	r->text = xstrdup(text);
	r->nlines = 1;
	r->complete = true;
}

/* Arms the timer for the reply at the head of the queue; none while only writing. */
static void
client_rearm(struct smtp_client *c)
{
	struct timeval tv = { 0, 0 };
	const struct expect *e;

	if (c->state == CLIENT_DONE)
		return;
	if (expect_empty(c)) {
		evtimer_del(c->timer);
		return;
	}
	e = &c->expect[c->expect_head];
	if (e->kind == EXPECT_DOT) {
		/* The final-reply clock starts once the end of data has left our buffer. */
		if (c->bev != NULL && evbuffer_get_length(bufferevent_get_output(c->bev)) > 0) {
			evtimer_del(c->timer);
			return;
		}
		tv.tv_sec = c->p.body_timeout_s;
	} else
		tv.tv_sec = c->p.reply_timeout_s;
	evtimer_add(c->timer, &tv);
}

static void
client_send(struct smtp_client *c, enum expect_kind kind, size_t rcpt, const char *fmt, ...)
    DR_PRINTF(4, 5);

static void
client_send(struct smtp_client *c, enum expect_kind kind, size_t rcpt, const char *fmt, ...)
{
	va_list ap;
	char *line;

	va_start(ap, fmt);
	if (vasprintf(&line, fmt, ap) == -1)
		line = NULL;
	va_end(ap);
	if (line == NULL) {
		log_error("smtp_client: out of memory");
		abort();
	}
	log_debug("smtp_client: %s: > %s", c->peer, line);
	evbuffer_add_printf(bufferevent_get_output(c->bev), "%s\r\n", line);
	free(line);
	expect_push(c, kind, rcpt);
	client_queued(c);
}

/* Like client_send for a line carrying credentials: logged as shown; line is wiped and
 * freed. */
static void
client_send_secret(struct smtp_client *c, enum expect_kind kind, const char *shown, char *line)
{
	struct evbuffer *out = bufferevent_get_output(c->bev);
	size_t len = strlen(line);

	log_debug("smtp_client: %s: > %s", c->peer, shown);
	evbuffer_add(out, line, len);
	evbuffer_add(out, "\r\n", 2);
	OPENSSL_cleanse(line, len);
	free(line);
	expect_push(c, kind, 0);
	client_queued(c);
}

/*
 * Writes a short line at once, not from the event loop, so that it leaves even when the
 * owner frees the client right after the callback (QUIT). Over TLS it is an SSL_write
 * of its own, and only when nothing is queued: OpenSSL then has no partial record
 * waiting to be retried with other bytes. It is a courtesy; failures are ignored.
 */
static void
client_write_now(struct smtp_client *c, const char *text)
{
	struct evbuffer *out = bufferevent_get_output(c->bev);
	size_t len = strlen(text);
	SSL *ssl;

	if (c->tls_on) {
		ssl = bufferevent_openssl_get_ssl(c->bev);
		if (ssl != NULL && c->tls.active && evbuffer_get_length(out) == 0) {
			ERR_clear_error();
			(void)SSL_write(ssl, text, (int)len);
			ERR_clear_error();
		}
		return;
	}
	evbuffer_add(out, text, len);
	/* A short write leaves the rest to the bufferevent; a failed one is ignored. */
	(void)bev_direct_flush(c->bev);
}

/* Body bytes that actually left our buffer: the server may have the (partial) message. */
static bool
client_body_written(const struct smtp_client *c)
{
	size_t pending = 0;

	if (c->state != CLIENT_BODY || c->body_queued == 0)
		return false;
	if (c->bev != NULL)
		pending = evbuffer_get_length(bufferevent_get_output(c->bev));
	return c->body_queued > pending;
}

static void
client_close_content(struct smtp_client *c)
{
	if (c->content_fd != -1) {
		close(c->content_fd);
		c->content_fd = -1;
	}
}

static void
client_close(struct smtp_client *c)
{
	if (c->bev != NULL) {
		bufferevent_free(c->bev);
		c->bev = NULL;
	}
}

/* Hands the result over. Returns false when the client was freed in the callback. */
static bool
client_report(struct smtp_client *c)
{
	bool dead = false;

	c->state = CLIENT_DONE;
	client_close_content(c);
	c->dead = &dead;
	c->cb(c, &c->result, c->arg);
	if (dead)
		return false;
	c->dead = NULL;
	return true;
}

/*
 * The result is decided and the dialogue is at a command boundary: say QUIT, push it
 * out now (the callback may free us at once), linger a moment for 221, report.
 */
static bool
client_finish(struct smtp_client *c)
{
	struct timeval tv = { QUIT_LINGER_S, 0 };

	if (c->p.keep_open && c->result.completed && c->bev != NULL) {
		/* The owner may reuse the connection (smtp_client_reuse) or free it. */
		evtimer_del(c->timer);
		c->expect_head = c->expect_tail = 0;
		c->idle = true;
		return client_report(c);
	}
	if (c->bev != NULL) {
		log_debug("smtp_client: %s: > QUIT", c->peer);
		client_write_now(c, "QUIT\r\n");
		evtimer_add(c->timer, &tv);
	}
	c->expect_head = c->expect_tail = 0;
	return client_report(c);
}

/* The session ends without a QUIT (the stream is unusable or mid-message). */
static bool
client_abort(struct smtp_client *c)
{
	evtimer_del(c->timer);
	client_close(c);
	c->expect_head = c->expect_tail = 0;
	return client_report(c);
}

static void
client_set_failure(struct smtp_client *c, enum smtp_client_stage stage, int error)
{
	c->outcome_set = true;
	c->result.completed = false;
	c->result.stage = stage;
	c->result.error = error;
	c->result.body_sent = client_body_written(c);
	/* Whatever ends the session during the handshake makes it a failed handshake. */
	c->result.tls_failed = !expect_empty(c) && c->expect[c->expect_head].kind == EXPECT_TLS;
	if (c->result.tls_failed)
		dr_strlcpy(c->result.dsn, "4.7.5", sizeof(c->result.dsn));
}

/* Records a reply that failed the session at stage; rep is taken over. */
static void
client_set_reply_failure(struct smtp_client *c, enum smtp_client_stage stage,
    struct smtp_reply *rep)
{
	char *line = smtp_reply_oneline(rep);

	client_set_failure(c, stage, 0);
	free(c->result.error_text);
	if (stage == SMTP_STAGE_GREETING)
		c->result.error_text = xasprintf("host %s refused to talk to me: %s", c->peer, line);
	else
		c->result.error_text = xasprintf("host %s said: %s (%s)", c->peer, line,
		    smtp_client_stage_name(stage));
	free(line);
	reply_move(&c->result.reply, rep);
}

/* A reply that ends the session; rep is taken over. */
static bool
client_fail_reply(struct smtp_client *c, enum smtp_client_stage stage, struct smtp_reply *rep)
{
	client_set_reply_failure(c, stage, rep);
	return client_finish(c);
}

/* Network failure, EOF or timeout: not completed unless a reply already decided it. */
static bool
client_fail_net(struct smtp_client *c, int error, bool timeout)
{
	if (!c->outcome_set) {
		client_set_failure(c, client_stage(c), error);
		free(c->result.error_text);
		if (timeout)
			c->result.error_text = xasprintf("conversation with %s timed out while %s",
			    c->peer, client_doing(c));
		else if (error == ECONNRESET)
			c->result.error_text = xasprintf("lost connection with %s while %s",
			    c->peer, client_doing(c));
		else
			c->result.error_text = xasprintf("lost connection with %s while %s: %s",
			    c->peer, client_doing(c), strerror(error));
	}
	log_debug("smtp_client: %s: %s", c->peer, c->result.error_text);
	return client_abort(c);
}

/* The server broke the protocol: nothing it says can be trusted any more. */
static bool
client_fail_protocol(struct smtp_client *c, const char *what)
{
	if (!c->outcome_set) {
		client_set_failure(c, client_stage(c), EPROTO);
		free(c->result.error_text);
		c->result.error_text = xasprintf("protocol error with %s while %s: %s", c->peer,
		    client_doing(c), what);
	}
	log_debug("smtp_client: %s: %s", c->peer, c->result.error_text);
	return client_abort(c);
}

/* A failure we decide ourselves before MAIL (RFC 6531 3.4, RFC 1870 6). */
static bool
client_fail_synth(struct smtp_client *c, int code, const char *enhanced, char *text)
{
	client_set_failure(c, SMTP_STAGE_MAIL, 0);
	reply_synth(&c->result.reply, code, enhanced, text);
	free(c->result.error_text);
	c->result.error_text = text;
	return client_finish(c);
}

/* A failure we decide ourselves without a reply (TLS policy, AUTH); text is taken over. */
static bool
client_fail_local(struct smtp_client *c, enum smtp_client_stage stage, const char *dsn,
    char *text)
{
	client_set_failure(c, stage, 0);
	dr_strlcpy(c->result.dsn, dsn, sizeof(c->result.dsn));
	free(c->result.error_text);
	c->result.error_text = text;
	log_debug("smtp_client: %s: %s", c->peer, text);
	return client_finish(c);
}

/* A TLS-level error (alert, bad record, handshake refused): the stream is unusable. */
static bool
client_fail_tls(struct smtp_client *c, const unsigned long *errs, size_t nerrs)
{
	char why[512];
	bool handshake = !expect_empty(c) && c->expect[c->expect_head].kind == EXPECT_TLS;

	if (!c->outcome_set) {
		tls_error_text(bufferevent_openssl_get_ssl(c->bev), errs, nerrs, why, sizeof(why));
		client_set_failure(c, client_stage(c), EPROTO);
		free(c->result.error_text);
		if (handshake)
			c->result.error_text = xasprintf("TLS handshake with %s failed: %s",
			    c->peer, why);
		else
			c->result.error_text = xasprintf("TLS error with %s while %s: %s", c->peer,
			    client_doing(c), why);
	}
	log_debug("smtp_client: %s: %s", c->peer, c->result.error_text);
	return client_abort(c);
}

/* Every accepted recipient gets rep as its final reply; the transaction is complete. */
static bool
client_complete(struct smtp_client *c, enum smtp_client_stage stage, const struct smtp_reply *rep)
{
	size_t i;

	for (i = 0; i < c->result.nrcpts; i++) {
		if (!c->accepted[i])
			continue;
		reply_copy(&c->result.rcpts[i].reply, rep);
		c->result.rcpts[i].stage = stage;
	}
	c->outcome_set = true;
	c->result.completed = true;
	return true;
}

static void
client_send_ehlo(struct smtp_client *c, bool helo)
{
	const char *name = c->p.helo_name != NULL ? c->p.helo_name : "localhost";

	if (helo)
		client_send(c, EXPECT_HELO, 0, "HELO %s", name);
	else
		client_send(c, EXPECT_EHLO, 0, "EHLO %s", name);
}

static void
client_send_rcpt(struct smtp_client *c, size_t i)
{
	const struct envelope_rcpt *r = &c->env->rcpts[c->result.rcpts[i].index];

	client_send(c, EXPECT_RCPT, i, "RCPT TO:<%s>", r->addr);
}

/* After EHLO/HELO: checks what the server offers against the message, then MAIL. */
/* Whether client_begin_transaction would send MAIL (rather than refuse the message). */
static bool
client_can_begin(const struct smtp_client *c)
{
	const struct smtp_ehlo_info *x = &c->result.ehlo;

	return c->result.nrcpts > 0 && !(c->env->smtputf8 && !(x->ext & SMTP_EXT_SMTPUTF8)) &&
	    !((x->ext & SMTP_EXT_SIZE) && x->max_size > 0 && c->env->content_size > x->max_size);
}

static bool
client_begin_transaction(struct smtp_client *c)
{
	const struct smtp_ehlo_info *x = &c->result.ehlo;
	char size[32] = "";
	size_t i;

	if (c->env->smtputf8 && !(x->ext & SMTP_EXT_SMTPUTF8))
		return client_fail_synth(c, 550, "5.6.7", xasprintf("SMTPUTF8 is required, "
		    "but was not offered by host %s", c->peer));
	if ((x->ext & SMTP_EXT_SIZE) && x->max_size > 0 && c->env->content_size > x->max_size)
		return client_fail_synth(c, 552, "5.3.4", xasprintf("message size %zu exceeds "
		    "size limit %llu of server %s", c->env->content_size, x->max_size, c->peer));
	if (c->result.nrcpts == 0) {
		c->result.completed = true;
		return client_finish(c);
	}
	if ((x->ext & SMTP_EXT_SIZE) && c->env->content_size > 0)
		snprintf(size, sizeof(size), " SIZE=%zu", c->env->content_size);
	c->state = CLIENT_TRANSACTION;
	c->transactions++;
	c->pipelining = (x->ext & SMTP_EXT_PIPELINING) != 0;
	client_send(c, EXPECT_MAIL, 0, "MAIL FROM:<%s>%s%s%s", c->env->sender,
	    c->env->body == SMTP_BODY_8BITMIME && (x->ext & SMTP_EXT_8BITMIME) ?
	    " BODY=8BITMIME" : "", c->env->smtputf8 ? " SMTPUTF8" : "", size);
	if (c->pipelining) {
		/* RFC 2920 3.1: DATA may end the group; everything goes out in one write. */
		for (i = 0; i < c->result.nrcpts; i++)
			client_send_rcpt(c, i);
		client_send(c, EXPECT_DATA, 0, "DATA");
	}
	return true;
}

/* RFC 4954: mechanism names in the EHLO AUTH list (upper case, space separated). */
static bool
client_mech_offered(const char *mechs, const char *mech)
{
	size_t n = strlen(mech);

	for (const char *p = mechs; *p != '\0'; ) {
		size_t len = strcspn(p, " ");

		if (len == n && memcmp(p, mech, n) == 0)
			return true;
		p += len;
		p += strspn(p, " ");
	}
	return false;
}

/* AUTH PLAIN (RFC 4616) with the initial response, or AUTH LOGIN, as offered. */
static bool
client_begin_auth(struct smtp_client *c)
{
	const struct smtp_ehlo_info *x = &c->result.ehlo;
	size_t ulen, plen, len;
	char *msg, *b64;

	if (!(x->ext & SMTP_EXT_AUTH)) {
		/* Nothing to authenticate with: the server decides whether it relays for us. */
		log_info("smtp_client: %s offers no AUTH; sending without authentication",
		    c->peer);
		c->authed = true;
		return client_begin_transaction(c);
	}
	if (!c->tls.active && !c->p.auth_allow_plaintext)
		return client_fail_local(c, SMTP_STAGE_AUTH, "4.7.0", xasprintf("not sending "
		    "credentials to %s without TLS (auth_allow_plaintext is false)", c->peer));
	if (client_mech_offered(x->auth_mechs, "PLAIN")) {
		/* authzid (empty) NUL authcid NUL passwd */
		ulen = strlen(c->p.auth_user);
		plen = c->p.auth_pass != NULL ? strlen(c->p.auth_pass) : 0;
		len = ulen + plen + 2;
		msg = xmalloc(len);
		msg[0] = '\0';
		memcpy(msg + 1, c->p.auth_user, ulen);
		msg[ulen + 1] = '\0';
		memcpy(msg + ulen + 2, c->p.auth_pass != NULL ? c->p.auth_pass : "", plen);
		b64 = dr_base64(msg, len);
		OPENSSL_cleanse(msg, len);
		free(msg);
		msg = xasprintf("AUTH PLAIN %s", b64);
		OPENSSL_cleanse(b64, strlen(b64));
		free(b64);
		client_send_secret(c, EXPECT_AUTH, "AUTH PLAIN (credentials not logged)", msg);
		return true;
	}
	if (client_mech_offered(x->auth_mechs, "LOGIN")) {
		client_send(c, EXPECT_AUTH_USER, 0, "AUTH LOGIN");
		return true;
	}
	return client_fail_local(c, SMTP_STAGE_AUTH, "4.7.0", xasprintf("no AUTH mechanism in "
	    "common with %s (it offers %s; we have PLAIN and LOGIN)", c->peer,
	    x->auth_mechs[0] != '\0' ? x->auth_mechs : "none"));
}

static bool
client_on_auth(struct smtp_client *c, struct smtp_reply *rep, enum expect_kind kind)
{
	const char *secret;

	if (kind != EXPECT_AUTH && rep->code == 334) {
		/* AUTH LOGIN: the challenges are fixed prompts; answer in order. */
		secret = kind == EXPECT_AUTH_USER ? c->p.auth_user : c->p.auth_pass;
		smtp_reply_clear(rep);
		client_send_secret(c, kind == EXPECT_AUTH_USER ? EXPECT_AUTH_PASS : EXPECT_AUTH,
		    kind == EXPECT_AUTH_USER ? "(user name not logged)" : "(password not logged)",
		    dr_base64(secret != NULL ? secret : "", secret != NULL ? strlen(secret) : 0));
		return true;
	}
	if (kind == EXPECT_AUTH && rep->code == 235) {
		smtp_reply_clear(rep);
		c->authed = true;
		/* Borrowed from a configuration that a reload may free: done with them. */
		c->p.auth_user = c->p.auth_pass = NULL;
		return client_begin_transaction(c);
	}
	return client_fail_reply(c, SMTP_STAGE_AUTH, rep);
}

/*
 * After a successful EHLO/HELO: STARTTLS when the policy asks for it, then AUTH when
 * configured, then the transaction.
 */
static bool
client_after_hello(struct smtp_client *c)
{
	if (c->p.tls_policy != TLS_POLICY_NONE && !c->tls_on && !c->tls_refused) {
		if ((c->result.ehlo.ext & SMTP_EXT_STARTTLS) && c->p.tls != NULL) {
			client_send(c, EXPECT_STARTTLS, 0, "STARTTLS");
			return true;
		}
		if (c->p.tls_policy != TLS_POLICY_MAY)
			return client_fail_local(c, SMTP_STAGE_STARTTLS, "4.7.4", xasprintf("TLS is "
			    "required, but was not offered by host %s", c->peer));
	}
	if (c->p.auth_user != NULL && !c->authed)
		return client_begin_auth(c);
	return client_begin_transaction(c);
}

/*
 * 220 to STARTTLS: the socket passes to an OpenSSL bufferevent and the handshake
 * starts. Anything the server sent after the 220 came in plaintext and would be read as
 * if it had come over TLS (the STARTTLS command injection flaw, CVE-2011-0411): refuse.
 */
static bool
client_start_tls(struct smtp_client *c)
{
	struct bufferevent *plain = c->bev, *bev;
	evutil_socket_t fd = bufferevent_getfd(plain);
	struct timeval wtv = { c->p.reply_timeout_s, 0 };
	SSL *ssl;

	if (evbuffer_get_length(bufferevent_get_input(plain)) > 0)
		return client_fail_protocol(c, "data after the reply to STARTTLS");
	ssl = tls_ssl_new(c->p.tls, c->p.tls_name != NULL ? c->p.tls_name : c->p.peer_name);
	/* Detach the fd so that freeing the plain bufferevent leaves it open. */
	bufferevent_setfd(plain, -1);
	bufferevent_free(plain);
	bev = bufferevent_openssl_socket_new(c->base, fd, ssl, BUFFEREVENT_SSL_CONNECTING,
	    BEV_OPT_CLOSE_ON_FREE);
	if (bev == NULL) {
		log_error("smtp_client: cannot allocate a TLS bufferevent");
		abort();
	}
	c->bev = bev;
	c->tls_on = true;
	/* A peer closing without close_notify after QUIT is an ordinary EOF. */
	bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
	bufferevent_setcb(bev, client_read_cb, client_write_cb, client_event_cb, c);
	bufferevent_set_timeouts(bev, NULL, &wtv);
	bufferevent_enable(bev, EV_READ | EV_WRITE);
	log_debug("smtp_client: %s: TLS handshake (SNI %s)", c->peer,
	    c->p.tls_name != NULL ? c->p.tls_name : c->p.peer_name);
	expect_push(c, EXPECT_TLS, 0);
	return true;
}

static bool
client_on_starttls(struct smtp_client *c, struct smtp_reply *rep)
{
	if (rep->code == 220) {
		smtp_reply_clear(rep);
		return client_start_tls(c);
	}
	if (c->p.tls_policy == TLS_POLICY_MAY) {
		/* Opportunistic: the session is still fine in plaintext. */
		log_debug("smtp_client: %s: STARTTLS refused; going on in plaintext", c->peer);
		smtp_reply_clear(rep);
		c->tls_refused = true;
		return client_after_hello(c);
	}
	return client_fail_reply(c, SMTP_STAGE_STARTTLS, rep);
}

/* The handshake finished (BEV_EVENT_CONNECTED on the OpenSSL bufferevent). */
static void
client_tls_connected(struct smtp_client *c)
{
	char info[128];

	if (c->state == CLIENT_DONE || expect_empty(c) ||
	    c->expect[c->expect_head].kind != EXPECT_TLS)
		return;
	c->expect_head++;
	tls_info_get(bufferevent_openssl_get_ssl(c->bev), &c->tls);
	c->result.tls = c->tls;
	tls_info_format(&c->tls, info, sizeof(info));
	log_debug("smtp_client: %s: TLS established: %s%s%s", c->peer, info,
	    c->tls.verified ? "" : ", ", c->tls.verified ? "" : c->tls.verify_error);
	if (c->p.tls_policy == TLS_POLICY_VERIFY && !c->tls.verified) {
		client_fail_local(c, SMTP_STAGE_STARTTLS, "4.7.5", xasprintf("server certificate "
		    "not verified: host %s: %s", c->peer, c->tls.verify_error));
		return;
	}
	/* RFC 3207 4.2: discard what the server said before TLS and ask again. */
	memset(&c->result.ehlo, 0, sizeof(c->result.ehlo));
	client_send_ehlo(c, false);
	client_rearm(c);
}

static bool
client_on_greeting(struct smtp_client *c, struct smtp_reply *rep)
{
	if (rep->code != 220)
		return client_fail_reply(c, SMTP_STAGE_GREETING, rep);
	smtp_reply_clear(rep);
	client_send_ehlo(c, false);
	return true;
}

static bool
client_on_ehlo(struct smtp_client *c, struct smtp_reply *rep, bool helo)
{
	if (rep->code / 100 == 2) {
		if (!helo)
			smtp_ehlo_parse(rep, &c->result.ehlo);
		smtp_reply_clear(rep);
		return client_after_hello(c);
	}
	/* RFC 5321 4.1.4: a server that does not know EHLO gets HELO. */
	if (!helo && (rep->code == 500 || rep->code == 502 || rep->code == 504 ||
	    rep->code == 550)) {
		smtp_reply_clear(rep);
		client_send_ehlo(c, true);
		return true;
	}
	return client_fail_reply(c, helo ? SMTP_STAGE_HELO : SMTP_STAGE_EHLO, rep);
}

static bool
client_on_mail(struct smtp_client *c, struct smtp_reply *rep)
{
	if (rep->code / 100 == 2) {
		smtp_reply_clear(rep);
		if (!c->pipelining)
			client_send_rcpt(c, 0);
		return true;
	}
	if (expect_empty(c))
		return client_fail_reply(c, SMTP_STAGE_MAIL, rep);
	/* Pipelined: record the failure, read the RCPT and DATA replies still due, then QUIT. */
	client_set_reply_failure(c, SMTP_STAGE_MAIL, rep);
	return true;
}

static bool
client_on_rcpt(struct smtp_client *c, struct smtp_reply *rep, size_t i)
{
	if (c->outcome_set) {
		smtp_reply_clear(rep);   /* MAIL failed: these replies mean nothing */
		return true;
	}
	if (rep->code / 100 == 2) {
		c->accepted[i] = true;
		c->naccepted++;
		smtp_reply_clear(rep);
	} else {
		reply_move(&c->result.rcpts[i].reply, rep);
		c->result.rcpts[i].stage = SMTP_STAGE_RCPT;
	}
	if (c->pipelining)
		return true;
	if (i + 1 < c->result.nrcpts)
		client_send_rcpt(c, i + 1);
	else if (c->naccepted > 0)
		client_send(c, EXPECT_DATA, 0, "DATA");
	else {
		/* Nobody accepted: no DATA; every recipient has its RCPT reply. */
		c->result.completed = true;
		c->outcome_set = true;
		return client_finish(c);
	}
	return true;
}

static bool
client_on_data(struct smtp_client *c, struct smtp_reply *rep)
{
	struct evbuffer *out = bufferevent_get_output(c->bev);

	if (c->outcome_set || c->naccepted == 0) {
		/*
		 * Pipelined DATA after a failed MAIL or with no recipient left: the server
		 * should refuse it (RFC 2920 3.1); if it said 354 anyway, an empty message
		 * without recipients ends the data phase so that QUIT is read as a command.
		 */
		if (rep->code == 354) {
			log_debug("smtp_client: %s: > .", c->peer);
			evbuffer_add(out, ".\r\n", 3);
			client_queued(c);
		}
		smtp_reply_clear(rep);
		if (!c->outcome_set) {
			c->result.completed = true;
			c->outcome_set = true;
		}
		return client_finish(c);
	}
	if (rep->code == 354) {
		smtp_reply_clear(rep);
		c->state = CLIENT_BODY;
		/* Kept across transactions of a reused connection. */
		if (c->chunk == NULL)
			c->chunk = xmalloc(BODY_CHUNK);
		if (c->stuffed == NULL)
			c->stuffed = xmalloc(2 * BODY_CHUNK);
		smtp_dot_encoder_init(&c->enc);
		/* Fields made at acceptance (DKIM-Signature) go first, stuffed the same way. */
		if (c->env->prepend != NULL && c->env->prepend[0] != '\0') {
			size_t plen = strlen(c->env->prepend), m;
			char *st = xmalloc(2 * plen);

			m = smtp_dot_encode(&c->enc, c->env->prepend, plen, st);
			evbuffer_add(bufferevent_get_output(c->bev), st, m);
			c->body_queued += m;
			free(st);
		}
		bufferevent_setwatermark(c->bev, EV_WRITE, BODY_LOW_WATER, 0);
		return client_body_fill(c);
	}
	if (rep->code / 100 != 4 && rep->code / 100 != 5) {
		smtp_reply_clear(rep);
		return client_fail_protocol(c, "unexpected reply to DATA");
	}
	client_complete(c, SMTP_STAGE_DATA, rep);
	smtp_reply_clear(rep);
	return client_finish(c);
}

static bool
client_on_dot(struct smtp_client *c, struct smtp_reply *rep)
{
	client_complete(c, SMTP_STAGE_BODY, rep);
	smtp_reply_clear(rep);
	return client_finish(c);
}

/* A reply while none is due: only a refusal in the middle of the body makes sense. */
static bool
client_on_unexpected(struct smtp_client *c, struct smtp_reply *rep)
{
	if (c->state == CLIENT_BODY && !c->dot_queued && rep->code / 100 >= 4) {
		client_complete(c, SMTP_STAGE_BODY, rep);
		smtp_reply_clear(rep);
		return client_abort(c);   /* mid-data: a QUIT would be message text */
	}
	smtp_reply_clear(rep);
	return client_fail_protocol(c, "unexpected reply");
}

/* Dispatches a complete reply (taken over) to the command it answers. */
static bool
client_reply(struct smtp_client *c, struct smtp_reply *rep)
{
	struct expect e;

	if (expect_empty(c))
		return client_on_unexpected(c, rep);
	e = c->expect[c->expect_head++];
	switch (e.kind) {
	case EXPECT_GREETING:
		return client_on_greeting(c, rep);
	case EXPECT_EHLO:
		return client_on_ehlo(c, rep, false);
	case EXPECT_HELO:
		return client_on_ehlo(c, rep, true);
	case EXPECT_MAIL:
		return client_on_mail(c, rep);
	case EXPECT_RCPT:
		return client_on_rcpt(c, rep, e.rcpt);
	case EXPECT_DATA:
		return client_on_data(c, rep);
	case EXPECT_DOT:
		return client_on_dot(c, rep);
	case EXPECT_RSET:
		if (rep->code / 100 != 2) {
			smtp_reply_clear(rep);
			return client_fail_protocol(c, "RSET refused on a reused connection");
		}
		smtp_reply_clear(rep);
		if (c->rset_pipelined)
			return true; /* MAIL..DATA went with it: their replies follow */
		return client_begin_transaction(c);
	case EXPECT_STARTTLS:
		return client_on_starttls(c, rep);
	case EXPECT_TLS:
		/* A reply in the middle of the handshake: cannot happen over TLS framing. */
		smtp_reply_clear(rep);
		return client_fail_protocol(c, "reply during the TLS handshake");
	case EXPECT_AUTH_USER:
	case EXPECT_AUTH_PASS:
	case EXPECT_AUTH:
		return client_on_auth(c, rep, e.kind);
	}
	smtp_reply_clear(rep);
	return true;
}

/*
 * Reads the content file into the output until the high water mark or the end of the
 * file, dot-stuffing on the way (RFC 5321 4.5.2). At the end queues the end-of-data
 * sequence and expects the final reply.
 */
static bool
client_body_fill(struct smtp_client *c)
{
	struct evbuffer *out = bufferevent_get_output(c->bev);
	char *text;
	ssize_t n;
	size_t m;

	while (!c->dot_queued && evbuffer_get_length(out) < BODY_HIGH_WATER) {
		n = read(c->content_fd, c->chunk, BODY_CHUNK);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1) {
			int error = errno;

			text = xasprintf("error reading message content for %s: %s", c->peer,
			    strerror(error));
			client_set_failure(c, SMTP_STAGE_BODY, error);
			free(c->result.error_text);
			c->result.error_text = text;
			return client_abort(c);
		}
		if (n == 0) {
			m = smtp_dot_encoder_finish(&c->enc, c->stuffed);
			c->dot_queued = true;
			client_close_content(c);
			bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
			expect_push(c, EXPECT_DOT, 0);
			log_debug("smtp_client: %s: > (%llu bytes of content) .", c->peer,
			    (unsigned long long)c->body_queued);
		} else
			m = smtp_dot_encode(&c->enc, c->chunk, (size_t)n, c->stuffed);
		evbuffer_add(out, c->stuffed, m);
		c->body_queued += m;
	}
	client_queued(c);
	client_rearm(c);
	return true;
}

/* One line of input (without its CR LF). Returns false when the client stopped reading. */
static bool
client_line(struct smtp_client *c, const char *line, size_t len)
{
	struct smtp_reply rep;
	int r;

	if (c->state == CLIENT_DONE)
		return true;   /* the reply to QUIT, or leftovers: nothing depends on them */
	log_debug("smtp_client: %s: < %s", c->peer, line);
	r = smtp_reply_feed(&c->reply, line, len);
	if (r < 0)
		return client_fail_protocol(c, "malformed reply");
	if (r == 0)
		return true;
	rep = c->reply;
	smtp_reply_init(&c->reply);
	if (!client_reply(c, &rep))
		return false;
	if (c->state == CLIENT_DONE)
		return true;
	client_rearm(c);
	return true;
}

static void
client_read_cb(struct bufferevent *bev, void *arg)
{
	struct smtp_client *c = arg;
	struct evbuffer *in;
	char *line;
	size_t len;
	bool go_on;

	(void)bev;
	if (c->idle) {
		/* Nothing is due on an idle connection (a 421 before closing, say): unusable. */
		client_close(c);
		return;
	}
	/* c->bev, not bev: STARTTLS replaces the bufferevent between two lines. */
	while (c->bev != NULL) {
		in = bufferevent_get_input(c->bev);
		line = evbuffer_readln(in, &len, EVBUFFER_EOL_CRLF);
		if (line == NULL) {
			if (evbuffer_get_length(in) > SMTP_REPLY_LINE_MAX && c->state != CLIENT_DONE)
				client_fail_protocol(c, "reply line too long");
			return;
		}
		if (len > SMTP_REPLY_LINE_MAX && c->state != CLIENT_DONE) {
			free(line);
			client_fail_protocol(c, "reply line too long");
			return;
		}
		go_on = client_line(c, line, len);
		free(line);
		if (!go_on)
			return;
	}
}

/*
 * The output drained (all of it, or below BODY_LOW_WATER while the body streams): more
 * of the body, or the final-reply clock once the end of data has left. Returns false
 * when the client was freed.
 */
static bool
client_output_drained(struct smtp_client *c)
{
	if (c->state != CLIENT_BODY)
		return true;
	if (c->dot_queued) {
		client_rearm(c);   /* end of data written: start the final-reply clock */
		return true;
	}
	if (!client_body_fill(c))
		return false;
	/*
	 * Still more to come: libevent streams the rest (EV_WRITE on, refills from
	 * client_write_cb at the low-water mark), so that the loop goes on serving other
	 * connections between chunks; for bulk data two epoll_ctl per message are nothing.
	 */
	if (c->state == CLIENT_BODY && !c->dot_queued && c->bev != NULL && !c->tls_on)
		bufferevent_enable(c->bev, EV_WRITE);
	return true;
}

/*
 * Plaintext output, written by the client itself (bev_direct.h): whatever one callback
 * queued goes out in one write, with no change of the socket's epoll interest unless the
 * kernel does not take it all; then libevent writes the rest and client_write_cb follows.
 */
static void
client_flush_cb(evutil_socket_t fd, short what, void *arg)
{
	struct smtp_client *c = arg;

	(void)fd;
	(void)what;
	if (c->bev == NULL || c->tls_on || bev_direct_pending(c->bev))
		return;  /* closed, over TLS now, or libevent is writing (it takes these too) */
	switch (bev_direct_flush(c->bev)) {
	case BEV_DIRECT_DRAINED:
		(void)client_output_drained(c);
		break;
	case BEV_DIRECT_PENDING:
		break;
	case BEV_DIRECT_ERROR:
		/* What libevent's write path reports for the same failure; may free c. */
		client_event_cb(c->bev, BEV_EVENT_WRITING | BEV_EVENT_ERROR, c);
		break;
	}
}

/* libevent wrote (over TLS; in plaintext, what a direct write left, or the body). */
static void
client_write_cb(struct bufferevent *bev, void *arg)
{
	struct smtp_client *c = arg;

	if (!client_output_drained(c))
		return;
	if (c->bev == bev && !c->tls_on)
		bev_direct_drained(bev);
}

static void
client_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct smtp_client *c = arg;
	int error = EVUTIL_SOCKET_ERROR();
	unsigned long errs[8], e;
	size_t nerrs = 0;

	if (c->tls_on) {
		while ((e = bufferevent_get_openssl_error(bev)) != 0)
			if (nerrs < sizeof(errs) / sizeof(errs[0]))
				errs[nerrs++] = e;
	}
	if (what & BEV_EVENT_CONNECTED) {
		client_tls_connected(c);
		return;
	}
	if (c->state == CLIENT_DONE) {
		evtimer_del(c->timer);
		client_close(c);   /* after QUIT: EOF is the normal end */
		return;
	}
	if (what & BEV_EVENT_TIMEOUT)
		client_fail_net(c, ETIMEDOUT, true);
	else if ((what & BEV_EVENT_ERROR) && nerrs > 0)
		client_fail_tls(c, errs, nerrs);
	else if ((what & BEV_EVENT_ERROR) && error != 0)
		client_fail_net(c, error, false);
	else
		client_fail_net(c, ECONNRESET, false);   /* EOF: the server hung up */
}

static void
client_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct smtp_client *c = arg;

	(void)fd;
	(void)what;
	if (c->state == CLIENT_DONE) {
		client_close(c);   /* no 221 in time: just close */
		return;
	}
	client_fail_net(c, ETIMEDOUT, true);
}

struct smtp_client *
smtp_client_start(struct event_base *base, int fd, int content_fd,
    const struct smtp_client_params *p, const struct envelope *env, const size_t *rcpt_idx,
    size_t nrcpt, smtp_client_cb cb, void *arg)
{
	struct smtp_client *c;
	struct timeval wtv;
	char ip[NETADDR_STRLEN];
	size_t i;

	c = xcalloc(1, sizeof(*c));
	c->base = base;
	c->content_fd = content_fd;
	c->p = *p;
	netaddr_ntop(&p->peer, ip, sizeof(ip));
	snprintf(c->peer, sizeof(c->peer), "%s[%s]",
	    p->peer_name != NULL && *p->peer_name != '\0' ? p->peer_name : ip, ip);
	c->env = env;
	c->cb = cb;
	c->arg = arg;
	c->state = CLIENT_HANDSHAKE;
	smtp_reply_init(&c->reply);
	smtp_reply_init(&c->result.reply);
	c->result.rcpts = xcalloc(nrcpt > 0 ? nrcpt : 1, sizeof(*c->result.rcpts));
	c->result.nrcpts = nrcpt;
	for (i = 0; i < nrcpt; i++) {
		c->result.rcpts[i].index = rcpt_idx[i];
		c->result.rcpts[i].stage = SMTP_STAGE_RCPT;
		smtp_reply_init(&c->result.rcpts[i].reply);
	}
	c->accepted = xcalloc(nrcpt > 0 ? nrcpt : 1, sizeof(*c->accepted));
	c->timer = evtimer_new(base, client_timer_cb, c);
	c->flush_ev = event_new(base, -1, 0, client_flush_cb, c);
	if (c->timer == NULL || c->flush_ev == NULL) {
		log_error("smtp_client: cannot allocate events");
		abort();
	}

	c->bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (c->bev == NULL) {
		/* Only allocation fails here; like xmalloc, do not limp on. */
		log_error("smtp_client: cannot allocate a bufferevent");
		abort();
	}
	bufferevent_setcb(c->bev, client_read_cb, client_write_cb, client_event_cb, c);
	/* A write that makes no progress for a reply timeout means the peer is gone. */
	wtv.tv_sec = p->reply_timeout_s;
	wtv.tv_usec = 0;
	bufferevent_set_timeouts(c->bev, NULL, &wtv);
	/* Before anything is written: the output goes out by client_flush_cb. */
	bev_direct_start(c->bev);
	bufferevent_enable(c->bev, EV_READ);
	log_debug("smtp_client: %s: session started", c->peer);
	expect_push(c, EXPECT_GREETING, 0);
	client_rearm(c);
	return c;
}

void
smtp_client_free(struct smtp_client *c)
{
	size_t i;

	if (c == NULL)
		return;
	if (c->dead != NULL)
		*c->dead = true;
	if (c->idle && c->bev != NULL)
		client_write_now(c, "QUIT\r\n");
	client_close(c);
	client_close_content(c);
	if (c->timer != NULL)
		event_free(c->timer);
	if (c->flush_ev != NULL)
		event_free(c->flush_ev);
	smtp_reply_clear(&c->reply);
	smtp_reply_clear(&c->result.reply);
	for (i = 0; i < c->result.nrcpts; i++)
		smtp_reply_clear(&c->result.rcpts[i].reply);
	free(c->result.rcpts);
	free(c->result.error_text);
	free(c->expect);
	free(c->accepted);
	free(c->chunk);
	free(c->stuffed);
	free(c);
}

bool
smtp_client_reusable(const struct smtp_client *c)
{
	return c->idle && c->bev != NULL && c->state == CLIENT_DONE;
}

unsigned
smtp_client_transactions(const struct smtp_client *c)
{
	return c->transactions;
}

void
smtp_client_reuse(struct smtp_client *c, int content_fd, const struct envelope *env,
    const size_t *rcpt_idx, size_t nrcpt, smtp_client_cb cb, void *arg)
{
	size_t i;

	for (i = 0; i < c->result.nrcpts; i++)
		smtp_reply_clear(&c->result.rcpts[i].reply);
	free(c->result.rcpts);
	free(c->result.error_text);
	smtp_reply_clear(&c->result.reply);
	smtp_reply_init(&c->result.reply);
	c->result.error_text = NULL;
	c->result.completed = false;
	c->result.error = 0;
	c->result.body_sent = false;
	c->result.stage = SMTP_STAGE_MAIL;
	c->result.tls_failed = false;
	c->result.dsn[0] = '\0';
	c->result.tls = c->tls;
	c->result.rcpts = xcalloc(nrcpt > 0 ? nrcpt : 1, sizeof(*c->result.rcpts));
	c->result.nrcpts = nrcpt;
	for (i = 0; i < nrcpt; i++) {
		c->result.rcpts[i].index = rcpt_idx[i];
		c->result.rcpts[i].stage = SMTP_STAGE_RCPT;
		smtp_reply_init(&c->result.rcpts[i].reply);
	}
	free(c->accepted);
	c->accepted = xcalloc(nrcpt > 0 ? nrcpt : 1, sizeof(*c->accepted));
	c->naccepted = 0;
	c->outcome_set = false;
	c->body_queued = 0;
	c->dot_queued = false;
	c->content_fd = content_fd;
	c->env = env;
	c->cb = cb;
	c->arg = arg;
	c->idle = false;
	c->expect_head = c->expect_tail = 0;
	c->state = CLIENT_TRANSACTION;
	log_debug("smtp_client: %s: reusing the connection (transaction %u)", c->peer,
	    c->transactions + 1);
	/*
	 * RFC 5321 4.1.1.5: RSET first, which also proves the connection still works. With
	 * PIPELINING the transaction's commands go in the same write (RFC 2920 3.1: RSET
	 * may stand anywhere in a group): a connection the server closed meanwhile still
	 * fails at the RSET reply, before anything of the message counts, and each reused
	 * delivery saves a round trip. A message the server will be refused locally
	 * (SMTPUTF8, SIZE) waits for the RSET reply as before.
	 */
	client_send(c, EXPECT_RSET, 0, "RSET");
	c->rset_pipelined = (c->result.ehlo.ext & SMTP_EXT_PIPELINING) && client_can_begin(c);
	if (c->rset_pipelined)
		(void)client_begin_transaction(c); /* sends, cannot fail: client_can_begin */
	client_rearm(c);
}
