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
#include <event2/event.h>

#include "envelope.h"
#include "log.h"
#include "netaddr.h"
#include "smtp_client.h"
#include "smtp_proto.h"
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
	struct smtp_client_result result;
	bool *dead;                   /* set while the callback runs; smtp_client_free marks it */
	bool idle;                    /* kept open after a transaction (keep_open), no QUIT */
	unsigned transactions;        /* begun on this connection */
};

static bool client_reply(struct smtp_client *, struct smtp_reply *);
static bool client_body_fill(struct smtp_client *);

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
		struct evbuffer *out = bufferevent_get_output(c->bev);

		log_debug("smtp_client: %s: > QUIT", c->peer);
		evbuffer_add(out, "QUIT\r\n", 6);
		/*
		 * A bufferevent keeps the start of its output frozen; libevent's own write
		 * path thaws it around each write in just this way. A short or failed write
		 * leaves the rest to the bufferevent, which is fine.
		 */
		evbuffer_unfreeze(out, 1);
		(void)evbuffer_write(out, bufferevent_getfd(c->bev));
		evbuffer_freeze(out, 1);
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
		return client_begin_transaction(c);
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
		return client_begin_transaction(c);
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
	struct evbuffer *in = bufferevent_get_input(bev);
	char *line;
	size_t len;
	bool go_on;

	if (c->idle) {
		/* Nothing is due on an idle connection (a 421 before closing, say): unusable. */
		client_close(c);
		return;
	}
	while (c->bev != NULL) {
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

static void
client_write_cb(struct bufferevent *bev, void *arg)
{
	struct smtp_client *c = arg;

	(void)bev;
	if (c->state != CLIENT_BODY)
		return;
	if (!c->dot_queued)
		client_body_fill(c);
	else
		client_rearm(c);   /* end of data written: start the final-reply clock */
}

static void
client_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct smtp_client *c = arg;
	int error = EVUTIL_SOCKET_ERROR();

	(void)bev;
	if (c->state == CLIENT_DONE) {
		evtimer_del(c->timer);
		client_close(c);   /* after QUIT: EOF is the normal end */
		return;
	}
	if (what & BEV_EVENT_TIMEOUT)
		client_fail_net(c, ETIMEDOUT, true);
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
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
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
	if (c->idle && c->bev != NULL) {
		struct evbuffer *out = bufferevent_get_output(c->bev);
		evbuffer_add(out, "QUIT\r\n", 6);
		evbuffer_unfreeze(out, 1);
		(void)evbuffer_write(out, bufferevent_getfd(c->bev));
		evbuffer_freeze(out, 1);
	}
	client_close(c);
	client_close_content(c);
	if (c->timer != NULL)
		event_free(c->timer);
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
	/* RFC 5321 4.1.1.5: RSET first, which also proves the connection still works. */
	client_send(c, EXPECT_RSET, 0, "RSET");
	client_rearm(c);
}
