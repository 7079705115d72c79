/*
 * smtp_server: the listening sockets and the inbound ESMTP sessions (RFC 5321).
 *
 * Ownership: the server owns its listeners and every session; a session owns its
 * bufferevent, its conf reference, the envelope of the transaction in progress and the
 * spool writer (and the DKIM signer, dkim.h) while DATA is being received. When a
 * message is committed the envelope is handed to the message callback and the session
 * forgets it. Messages are signed once, here, so every delivery attempt sends the same
 * signed bytes.
 *
 * A session is a state machine (enum session_state, session_state_name for logs) driven
 * by one function, session_process, that consumes the input buffer in order: command
 * lines in the command states, the transparent DATA stream (smtp_data_decode) in
 * SESSION_DATA. Replies are appended to the output buffer in the order the commands
 * arrived, so RFC 2920 pipelining needs nothing special. After DATA the session waits
 * in SESSION_COMMIT, looking at no input, while the group commit (spool_commit.h) makes
 * the message durable: no later command is looked at before the reply to DATA is
 * written. Password checks likewise run on a worker thread (auth_verify.h) while input
 * waits. When a client pipelines faster than it reads replies, reading pauses until the
 * output drains.
 *
 * A plaintext session writes its replies straight to the socket, all those of one
 * callback in one write, from a zero-delay event (session_flush_cb, bev_direct.h), and
 * keeps reading while it waits for a commit: libevent would otherwise change the
 * socket's epoll interest twice per reply and twice per wait. The bufferevent writes
 * only what the kernel did not take at once. What waited for the output to drain
 * (closing after the last reply, TLS after the 220 to STARTTLS, reading after a pause)
 * happens in session_output_drained, whichever wrote the last byte.
 *
 * TLS (RFC 3207 STARTTLS, RFC 8314 implicit TLS): a listener offers STARTTLS or starts
 * TLS at once, with the conf's server context (tls.h). After the 220 to STARTTLS is
 * written, the plain socket bufferevent is replaced by an OpenSSL one on the same
 * socket; input the client sent after STARTTLS, before the handshake, is discarded
 * (RFC 3207 6, the CVE-2011-0411 class of bug), and the session starts again as
 * before EHLO. AUTH (RFC 4954) PLAIN and LOGIN are offered only over TLS, checked
 * against the conf's users (users.h) on the verifier's thread (auth_verify.h; nothing is
 * read while the check runs); failures are answered after a delay (an event timer,
 * reading stops meanwhile) and end the session after a few. A client may relay
 * when its address is in relay_networks or once it has authenticated.
 *
 * Sessions are never freed under a running bufferevent callback: closing marks the
 * session and activates a zero-delay event that frees it (as OpenSMTPD and tmux do).
 *
 * On a proxy_protocol listener a session starts in SESSION_PROXY: only trusted_proxies
 * may connect, and nothing is said until their PROXY header (proxy_proto) has named
 * the real client, which then is the session's peer for everything (relay_networks,
 * logs, Received:). A bad or missing header closes the connection without a word, as
 * the PROXY protocol spec asks.
 *
 * Log lines follow Postfix's smtpd ("connect from", "disconnect from ... ehlo=1 mail=1
 * rcpt=1 data=1 quit=1 commands=5", "NOQUEUE: reject: RCPT from ...") so that operators'
 * tools keep working.
 */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>
#include <netinet/in.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <openssl/crypto.h>
#include <openssl/ssl.h>

#include "auth_verify.h"
#include "bev_direct.h"
#include "conf.h"
#include "dkim.h"
#include "envelope.h"
#include "log.h"
#include "netaddr.h"
#include "proxy_proto.h"
#include "smtp_proto.h"
#include "smtp_server.h"
#include "spool.h"
#include "spool_commit.h"
#include "tls.h"
#include "users.h"
#include "util.h"

/* Stop reading pipelined commands while this many reply bytes wait for the client. */
#define SMTP_SERVER_OUTPUT_HIGH (64 * 1024)
/*
 * A plaintext session goes on reading while it waits (session_hold_input); it stops
 * once this much input is held, should a client flood meanwhile.
 */
#define SMTP_SERVER_INPUT_HELD_MAX (64 * 1024)
/* DATA is decoded in chunks of at most this size (the decoder output buffer). */
#define SMTP_SERVER_DATA_CHUNK (16 * 1024)
/* A HELO/EHLO argument longer than a domain name cannot be valid. */
#define SMTP_SERVER_HELO_MAX SMTP_DOMAIN_MAX
/* listen(2) backlog. */
#define SMTP_SERVER_BACKLOG 128
/* After an accept error (EMFILE...), listeners pause this long instead of spinning. */
#define SMTP_SERVER_ACCEPT_PAUSE_S 1
/* A failed AUTH is answered this late (slows password guessing; Postfix waits 1 s too). */
#define SMTP_SERVER_AUTH_FAIL_DELAY_S 1
/* After this many failed AUTH attempts the session ends (421 4.7.0). */
#define SMTP_SERVER_AUTH_MAX_FAILURES 3
/* Room for a decoded AUTH password (the command line limits it anyway). */
#define SMTP_SERVER_AUTH_PASS_MAX 1024
/*
 * A proxy sends its header at once on connecting; the spec suggests a few seconds (at
 * least 3, a TCP retransmission) before giving up. command_timeout_s when shorter.
 */
#define SMTP_SERVER_PROXY_TIMEOUT_S 10

enum session_state {
	SESSION_PROXY,    /* proxy_protocol listener: waiting for the header, no greeting */
	SESSION_INIT,     /* greeting sent, waiting for HELO/EHLO */
	SESSION_HELO,     /* HELO/EHLO done, no mail transaction */
	SESSION_MAIL,     /* MAIL accepted; RCPT (and DATA once a recipient is accepted) */
	SESSION_DATA,     /* 354 sent, receiving content until CR LF . CR LF */
	SESSION_COMMIT,   /* content complete, waiting for it to be durable (input waits) */
	SESSION_CLOSING,  /* last reply queued or connection lost; freed soon */
};

/* Where a session is in an AUTH exchange (RFC 4954 4): what the next line answers. */
enum auth_step {
	AUTH_STEP_NONE,       /* no exchange: lines are commands */
	AUTH_STEP_PLAIN,      /* "334 " sent: the PLAIN response */
	AUTH_STEP_LOGIN_USER, /* "334 VXNlcm5hbWU6" (Username:) sent: the user name */
	AUTH_STEP_LOGIN_PASS, /* "334 UGFzc3dvcmQ6" (Password:) sent: the password */
};

/* What happened to the content of the DATA in progress. */
enum data_status {
	DATA_OK,          /* everything so far is in the spool writer */
	DATA_TOO_BIG,     /* over max_message_size: discard to the end, then 552 */
	DATA_WRITE_ERROR, /* spool write failed: discard to the end, then 452 */
};

/* Per-verb counters for the "disconnect from" line; ok counts replies below 400. */
struct session_count {
	unsigned total;
	unsigned ok;
};

#define SESSION_NVERBS (SMTP_VERB_BDAT + 1)

/*
 * A message between the end of its DATA and its final reply, while spool_commit makes
 * it durable. It outlives its session when the client goes away in the meantime: the
 * message may still be queued (the client, having no 250, may send it again: a
 * duplicate, never a loss).
 */
struct smtp_commit {
	struct smtp_server *srv;      /* the server drains commits before it is freed */
	struct smtp_session *s;       /* NULL once the session ended */
	struct envelope *env;         /* owned until handed to the message callback */
	char *dkim_info;              /* owned; logged once the message is queued */
	char *client;                 /* owned; "client=..." (session_client_fields) */
	char peer_name[NETADDR_STRLEN + 8];
	size_t spool_size;
};

struct smtp_session {
	struct smtp_server *srv;      /* back pointer; the server owns the session */
	struct smtp_session *prev, *next; /* the server's list of sessions */
	struct conf *conf;            /* reference held for the session's lifetime */
	struct bufferevent *bev;      /* owned; closes the socket when freed */
	struct event *free_ev;        /* owned; zero-delay event that frees the session */
	struct event *flush_ev;       /* owned; writes a plaintext session's replies */
	bool direct_write;            /* plaintext: replies go out by session_flush_cb */
	struct event *session_ev;     /* owned; timeouts.session_timeout_s, NULL when off */
	enum session_state state;
	bool close_after_flush;       /* SESSION_CLOSING: free once the output is written */
	bool paused;                  /* reading stopped until the output drains */
	bool discarding;              /* skipping the rest of an over-long command line */
	bool esmtp;                   /* EHLO (not HELO) was used: "with ESMTP" */
	bool relay_ok;                /* client address is in relay_networks */

	enum conf_listen_tls listen_tls; /* what the listener that accepted us offers */
	bool tls_pending;             /* 220 to STARTTLS queued: start TLS once it is written */
	bool tls_handshake;           /* TLS handshake in progress */
	struct tls_info tls;          /* .active once the handshake finished */
	char *auth_user;              /* owned; the authenticated user, NULL before */
	const char *auth_mech;        /* "PLAIN" / "LOGIN" of the exchange or the success */
	enum auth_step auth_step;
	char *auth_login_user;        /* owned; LOGIN's user name between its two steps */
	unsigned auth_failures;       /* failed AUTH attempts (SMTP_SERVER_AUTH_MAX_FAILURES) */
	bool auth_delayed;            /* the reply to a failed AUTH is being held back */
	bool auth_checking;           /* a password check is in flight: input waits */
	struct auth_verify_req *auth_req; /* that check; cancelled if the session ends first */
	char *auth_check_user;        /* owned; the user name being checked */
	bool auth_check_known;        /* it is in users_file (else the hash was a dummy) */
	struct event *auth_delay_ev;  /* owned; sends that reply */

	struct netaddr peer;          /* client address (IPv4-mapped made plain IPv4) */
	char peer_ip[NETADDR_STRLEN]; /* "192.0.2.1" / "2001:db8::1" */
	char peer_name[NETADDR_STRLEN + 8]; /* "[192.0.2.1]:1234" for logs */
	char *helo;                   /* owned; HELO/EHLO argument, NULL before */

	struct envelope *env;         /* owned; the transaction in progress, NULL outside */
	struct spool_writer *writer;  /* owned while receiving DATA */
	struct smtp_commit *commit;   /* in SESSION_COMMIT; owned by the commit callback */
	bool processing;              /* inside session_process */
	struct dkim_signer *dkim;     /* owned while receiving DATA, when DKIM keys are set */
	struct smtp_data_decoder dec; /* DATA transparency and end detection */
	enum data_status data_status;
	int data_errno;               /* errno of a spool write failure */
	size_t data_size;             /* content bytes received (unstuffed) */
	size_t spool_size;            /* bytes written to the writer (Received: + content) */

	enum smtp_verb last_verb;     /* for "timeout after DATA" style log lines */
	int last_code;                /* code of the last reply, for counting */
	unsigned errors;              /* error replies so far (conf max_errors) */
	struct session_count counts[SESSION_NVERBS]; /* by verb; UNKNOWN = unknown */
	struct session_count commands; /* all commands */

	char line[SMTP_COMMAND_LINE_MAX + 1]; /* the command being handled, NUL-terminated */
	char data_out[SMTP_SERVER_DATA_CHUNK + 16]; /* decoder output */
};

struct smtp_server {
	struct event_base *base;      /* borrowed */
	struct conf *conf;            /* reference; new sessions take their own */
	struct spool *spool;          /* borrowed */
	struct spool_committer *committer; /* borrowed; NULL: commits are synchronous */
	struct auth_verifier *verifier; /* borrowed; NULL: passwords are checked at once */
	smtp_server_message_cb cb;    /* receives committed envelopes */
	void *cb_arg;
	struct evconnlistener **listeners; /* owned, one per conf->listen entry */
	enum conf_listen_tls *listener_tls; /* owned; TLS of listeners[i], fixed at listen */
	size_t nlisteners;
	size_t listeners_cap;
	size_t listener_tls_cap;
	bool *listener_proxy;         /* owned; listeners[i] expects a PROXY header */
	size_t listener_proxy_cap;
	struct event *accept_pause_ev; /* owned; re-enables listeners after accept errors */
	struct smtp_session *sessions; /* owned list */
	unsigned nsessions;
};

static void session_process(struct smtp_session *s);
static unsigned server_sessions_from(const struct smtp_server *srv,
    const struct netaddr *peer);
static void session_close_after_reply(struct smtp_session *s);
static void session_close_now(struct smtp_session *s);
static void session_reply(struct smtp_session *s, const char *fmt, ...) DR_PRINTF(2, 3);
static void session_read_cb(struct bufferevent *bev, void *arg);
static void session_write_cb(struct bufferevent *bev, void *arg);
static void session_event_cb(struct bufferevent *bev, short what, void *arg);

static const char *
session_state_name(enum session_state st)
{
	switch (st) {
	case SESSION_PROXY:
		return "PROXY";
	case SESSION_INIT:
		return "INIT";
	case SESSION_HELO:
		return "HELO";
	case SESSION_MAIL:
		return "MAIL";
	case SESSION_DATA:
		return "DATA";
	case SESSION_COMMIT:
		return "COMMIT";
	case SESSION_CLOSING:
		return "CLOSING";
	}
	return "?";
}

/* The name Postfix uses in "disconnect from" counters for a verb. */
static const char *
session_count_name(enum smtp_verb v)
{
	switch (v) {
	case SMTP_VERB_UNKNOWN:
		return "unknown";
	case SMTP_VERB_HELO:
		return "helo";
	case SMTP_VERB_EHLO:
		return "ehlo";
	case SMTP_VERB_MAIL:
		return "mail";
	case SMTP_VERB_RCPT:
		return "rcpt";
	case SMTP_VERB_DATA:
		return "data";
	case SMTP_VERB_RSET:
		return "rset";
	case SMTP_VERB_NOOP:
		return "noop";
	case SMTP_VERB_QUIT:
		return "quit";
	case SMTP_VERB_HELP:
		return "help";
	case SMTP_VERB_VRFY:
		return "vrfy";
	case SMTP_VERB_EXPN:
		return "expn";
	case SMTP_VERB_STARTTLS:
		return "starttls";
	case SMTP_VERB_AUTH:
		return "auth";
	case SMTP_VERB_BDAT:
		return "bdat";
	}
	return "unknown";
}

/* Postfix's order of the counters in the "disconnect from" line. */
static const enum smtp_verb session_count_order[] = {
	SMTP_VERB_HELO, SMTP_VERB_EHLO, SMTP_VERB_STARTTLS, SMTP_VERB_AUTH, SMTP_VERB_MAIL,
	SMTP_VERB_RCPT, SMTP_VERB_DATA, SMTP_VERB_BDAT, SMTP_VERB_RSET, SMTP_VERB_NOOP,
	SMTP_VERB_VRFY, SMTP_VERB_EXPN, SMTP_VERB_HELP, SMTP_VERB_QUIT, SMTP_VERB_UNKNOWN,
};

static bool
str_has_8bit(const char *p)
{
	for (; *p != '\0'; p++)
		if ((unsigned char)*p >= 0x80)
			return true;
	return false;
}

/*
 * Replies
 */

/*
 * Queues one reply line (CR LF added). The code is read from the text to count errors:
 * Postfix counts every 4xx/5xx towards the hard error limit, except the 452 for too many
 * recipients, which a well-behaved client provokes on purpose (RFC 5321 4.5.3.1.10).
 * A plaintext session writes its replies itself (session_flush_cb), once for all the
 * replies of the callback that made them.
 */
static void
session_reply(struct smtp_session *s, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf) - 2, fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if ((size_t)n > sizeof(buf) - 3)
		n = (int)(sizeof(buf) - 3);
	log_debug("%s > %.*s", s->peer_name, n, buf);
	buf[n++] = '\r';
	buf[n++] = '\n';
	bufferevent_write(s->bev, buf, (size_t)n);
	if (s->direct_write)
		event_active(s->flush_ev, EV_WRITE, 1);

	s->last_code = atoi(buf);
	if (s->last_code >= 400 && strncmp(buf, "452 4.5.3", 9) != 0)
		s->errors++;
}

/* Drops the transaction in progress (RSET, EHLO, end of DATA). */
static void
session_reset_transaction(struct smtp_session *s)
{
	if (s->writer != NULL) {
		spool_writer_abort(s->writer);
		s->writer = NULL;
	}
	dkim_signer_free(s->dkim);
	s->dkim = NULL;
	envelope_free(s->env);
	s->env = NULL;
	if (s->state == SESSION_MAIL || s->state == SESSION_DATA)
		s->state = SESSION_HELO;
}

static void
session_set_timeout(struct smtp_session *s, unsigned read_s)
{
	struct timeval rd = { .tv_sec = read_s, .tv_usec = 0 };
	struct timeval wr = { .tv_sec = s->conf->timeouts.command_timeout_s, .tv_usec = 0 };

	bufferevent_set_timeouts(s->bev, read_s ? &rd : NULL,
	    s->conf->timeouts.command_timeout_s ? &wr : NULL);
}

/* A client-supplied name for a log line: printable ASCII, no spaces, bounded. */
static void
session_log_safe(const char *in, char *out, size_t size)
{
	size_t i;

	for (i = 0; in[i] != '\0' && i + 1 < size; i++) {
		unsigned char c = (unsigned char)in[i];
		out[i] = c > ' ' && c < 0x7f ? (char)c : '?';
	}
	out[i] = '\0';
}

static bool
session_starttls_offered(const struct smtp_session *s)
{
	return s->listen_tls == CONF_LISTEN_TLS_STARTTLS && !s->tls.active &&
	    s->conf->tls_server != NULL;
}

/* RFC 4954 4: never offer to take a password over plaintext. */
static bool
session_auth_offered(const struct smtp_session *s)
{
	return s->tls.active && s->conf->users != NULL;
}

/*
 * Commands. Each handler queues exactly one reply (or none when it closes the session
 * after queuing one).
 */

static void
cmd_helo(struct smtp_session *s, enum smtp_verb verb, const char *args)
{
	size_t len = strcspn(args, " \t");
	bool esmtp = verb == SMTP_VERB_EHLO;

	if (len == 0) {
		session_reply(s, "501 5.5.4 Syntax: %s hostname", esmtp ? "EHLO" : "HELO");
		return;
	}
	if (len > SMTP_SERVER_HELO_MAX) {
		session_reply(s, "501 5.5.4 Syntax: %s hostname (name too long)",
		    esmtp ? "EHLO" : "HELO");
		return;
	}
	/* RFC 5321 4.1.4: EHLO/HELO in a transaction resets it, as RSET does. */
	session_reset_transaction(s);
	free(s->helo);
	s->helo = xstrndup(args, len);
	s->esmtp = esmtp;
	s->state = SESSION_HELO;

	if (!esmtp) {
		session_reply(s, "250 %s", s->conf->hostname);
		return;
	}
	/* RFC 2034 3: the EHLO reply carries no enhanced status code. */
	session_reply(s, "250-%s", s->conf->hostname);
	session_reply(s, "250-PIPELINING");
	session_reply(s, "250-SIZE %zu", s->conf->max_message_size);
	session_reply(s, "250-8BITMIME");
	if (session_starttls_offered(s))
		session_reply(s, "250-STARTTLS");
	if (session_auth_offered(s))
		session_reply(s, "250-AUTH PLAIN LOGIN");
	session_reply(s, "250-ENHANCEDSTATUSCODES");
	session_reply(s, "250 SMTPUTF8");
}

static void
cmd_mail(struct smtp_session *s, const char *args)
{
	char addr[SMTP_PATH_MAX + 1];
	struct smtp_mail_params p;
	const char *params, *why = NULL;

	if (s->state == SESSION_INIT) {
		session_reply(s, "503 5.5.1 Error: send HELO/EHLO first");
		return;
	}
	if (s->state == SESSION_MAIL) {
		session_reply(s, "503 5.5.1 Error: nested MAIL command");
		return;
	}
	/*
	 * The path is parsed allowing UTF-8 because SMTPUTF8 is declared after it; a
	 * non-ASCII sender without the parameter is refused below (RFC 6531 3.4).
	 */
	if (smtp_parse_path(args, "FROM:", true, true, addr, sizeof(addr), &params,
	    &why) != 0) {
		if (why != NULL && strncmp(why, "Syntax", 6) == 0)
			session_reply(s, "501 5.5.4 %s", why);
		else
			session_reply(s, "501 5.1.7 Bad sender address syntax");
		return;
	}
	memset(&p, 0, sizeof(p));
	if (smtp_parse_mail_params(params, &p, &why) != 0) {
		session_reply(s, "555 5.5.4 %s", why != NULL ? why : "Unsupported option");
		return;
	}
	if (!p.smtputf8 && str_has_8bit(addr)) {
		session_reply(s, "553 5.6.7 Must declare SMTPUTF8 to send unicode address");
		return;
	}
	/* RFC 1870 6.1: refuse a declared size over the limit before any data. */
	if (p.size > s->conf->max_message_size) {
		session_reply(s, "552 5.3.4 Message size exceeds fixed limit");
		return;
	}
	s->env = envelope_new();
	s->env->sender = xstrdup(addr);
	s->env->body = p.body;
	s->env->smtputf8 = p.smtputf8;
	s->state = SESSION_MAIL;
	session_reply(s, "250 2.1.0 Ok");
}

static bool
session_relay_allowed(const struct conf *c, const struct netaddr *a)
{
	for (size_t i = 0; i < c->nrelay_networks; i++)
		if (netaddr_prefix_match(&c->relay_networks[i], a))
			return true;
	return false;
}

static void
cmd_rcpt(struct smtp_session *s, const char *args)
{
	char addr[SMTP_PATH_MAX + 1];
	const char *params, *why = NULL;
	bool postmaster = false;

	if (s->state != SESSION_MAIL) {
		session_reply(s, "503 5.5.1 Error: need MAIL command");
		return;
	}
	int rc = smtp_parse_path(args, "TO:", false, true, addr, sizeof(addr), &params, &why);
	if (rc != 0 && smtp_rcpt_is_postmaster(args, &params)) {
		/*
		 * RFC 5321 4.5.1: <Postmaster> without a domain MUST be accepted, from anyone
		 * (it is how a refused sender reaches us). We have no mailboxes: it becomes
		 * the one configured address, so it opens no relay.
		 */
		postmaster = true;
		dr_strlcpy(addr, s->conf->postmaster, sizeof(addr));
	} else if (rc != 0) {
		if (why != NULL && strncmp(why, "Syntax", 6) == 0)
			session_reply(s, "501 5.5.4 %s", why);
		else
			session_reply(s, "501 5.1.3 Bad recipient address syntax");
		return;
	}
	/* We advertise no RCPT parameter (no DSN): any is unknown (RFC 5321 4.1.1.11). */
	if (*params != '\0') {
		session_reply(s, "555 5.5.4 Unsupported option: %s", params);
		return;
	}
	if (!s->env->smtputf8 && str_has_8bit(addr)) {
		session_reply(s, "553 5.6.7 Must declare SMTPUTF8 to send unicode address");
		return;
	}
	if (s->env->nrcpts >= s->conf->max_recipients) {
		session_reply(s, "452 4.5.3 Error: too many recipients");
		return;
	}
	if (postmaster) {
		log_info("RCPT from %s: <Postmaster> accepted for <%s>; from=<%s> proto=%s "
		    "helo=<%s>", s->peer_name, addr, s->env->sender, s->esmtp ? "ESMTP" : "SMTP",
		    s->helo);
	} else if (!s->relay_ok && s->auth_user == NULL) {
		/*
		 * Checked here, not at connect or MAIL, as Postfix does: the log shows who.
		 * We have no local domains, so every recipient is a relay: the tricks that
		 * would route on from the local part (percent hack, bang path...) are named
		 * in the log, and refused like any other.
		 */
		const char *trick = smtp_relay_trick(addr);

		session_reply(s, "554 5.7.1 <%s>: Relay access denied", addr);
		log_info("NOQUEUE: reject: RCPT from %s: 554 5.7.1 <%s>: Relay access denied%s%s%s; "
		    "from=<%s> to=<%s> proto=%s helo=<%s>", s->peer_name, addr,
		    trick != NULL ? " (" : "", trick != NULL ? trick : "", trick != NULL ? ")" : "",
		    s->env->sender, addr, s->esmtp ? "ESMTP" : "SMTP", s->helo);
		return;
	}
	envelope_add_rcpt(s->env, addr);
	session_reply(s, "250 2.1.5 Ok");
}

/* Writes to the spool unless the content is already refused; never fails the session. */
static void
session_data_write(struct smtp_session *s, const char *buf, size_t len)
{
	if (s->data_status != DATA_OK || len == 0)
		return;
	if (spool_writer_write(s->writer, buf, len) != 0) {
		s->data_errno = errno;
		s->data_status = DATA_WRITE_ERROR;
		log_error("%s: queue file write error: %s", s->env->id, strerror(s->data_errno));
		spool_writer_abort(s->writer);
		s->writer = NULL;
		return;
	}
	/* The signer sees what is spooled after our Received: (made before it exists). */
	if (s->dkim != NULL)
		dkim_signer_update(s->dkim, buf, len);
	s->spool_size += len;
}

/*
 * Our trace header (RFC 5321 4.4), first in the content. The protocol name is from the
 * IANA "with" registry: SMTP, ESMTP, UTF8SMTP (RFC 6531 3.7.3), with S after TLS and
 * A after AUTH (RFC 3848: ESMTPS, ESMTPA, ESMTPSA). The TLS protocol and cipher follow
 * the client, as Postfix writes them; the user name is not disclosed. The client address is an RFC 5321
 * address literal ("[192.0.2.1]", "[IPv6:2001:db8::1]"). "for" names the recipient
 * only when there is exactly one, so a Bcc recipient is not disclosed to the others.
 */
static void
session_write_received(struct smtp_session *s, time_t now)
{
	char date[64], forpart[SMTP_PATH_MAX + 16], proto[16], tlspart[160];
	char *hdr;

	dr_rfc5322_date(now, date, sizeof(date));
	if (!s->esmtp)
		dr_strlcpy(proto, "SMTP", sizeof(proto));
	else
		snprintf(proto, sizeof(proto), "%s%s%s", s->env->smtputf8 ? "UTF8SMTP" : "ESMTP",
		    s->tls.active ? "S" : "", s->auth_user != NULL ? "A" : "");
	if (s->tls.active)
		snprintf(tlspart, sizeof(tlspart), "\r\n\t(using %s with cipher %s (%d/%d bits))",
		    s->tls.version, s->tls.cipher, s->tls.bits, s->tls.alg_bits);
	else
		tlspart[0] = '\0';
	if (s->env->nrcpts == 1)
		snprintf(forpart, sizeof(forpart), "\r\n\tfor <%s>", s->env->rcpts[0].addr);
	else
		forpart[0] = '\0';
	hdr = xasprintf("Received: from %s ([%s%s])%s\r\n\tby %s (dualrelay) with %s id %s%s; "
	    "%s\r\n", s->helo, netaddr_family(&s->peer) == AF_INET6 ? "IPv6:" : "",
	    s->peer_ip, tlspart, s->conf->hostname, proto, s->env->id, forpart, date);
	session_data_write(s, hdr, strlen(hdr));
	free(hdr);
}

/* A spool error that means "no room": 452 4.3.1 (RFC 3463 "mail system full"). */
static bool
spool_full(int err)
{
	return err == ENOSPC || err == EDQUOT;
}

static void
cmd_data(struct smtp_session *s, const char *args)
{
	time_t now;

	if (*args != '\0') {
		session_reply(s, "501 5.5.4 Syntax: DATA");
		return;
	}
	if (s->state != SESSION_MAIL) {
		session_reply(s, "503 5.5.1 Error: need RCPT command");
		return;
	}
	if (s->env->nrcpts == 0) {
		session_reply(s, "554 5.5.1 Error: no valid recipients");
		return;
	}
	now = time(NULL);
	s->env->arrival = now;
	free(s->env->client_addr);
	s->env->client_addr = xstrdup(s->peer_ip);
	free(s->env->helo);
	s->env->helo = xstrdup(s->helo);
	/*
	 * With DKIM keys, room for the signatures is reserved in the queue file: they are
	 * known only at the end of the data but are sent before it (envelope.h, prepend).
	 */
	s->writer = spool_writer_begin_reserve(s->srv->spool, s->env,
	    dkim_keyring_reserve(s->conf->dkim));
	if (s->writer == NULL) {
		int err = errno;
		log_error("NOQUEUE: queue file write error from %s: %s", s->peer_name,
		    strerror(err));
		if (spool_full(err)) /* e.g. no inode left for the queue file */
			session_reply(s, "452 4.3.1 Insufficient system storage");
		else
			session_reply(s, "451 4.3.0 Error: queue file write error");
		return;
	}
	smtp_data_decoder_init(&s->dec);
	s->data_status = DATA_OK;
	s->data_errno = 0;
	s->data_size = 0;
	s->spool_size = 0;
	session_write_received(s, now);
	if (dkim_keyring_count(s->conf->dkim) > 0)
		s->dkim = dkim_signer_new(s->conf->dkim);
	s->state = SESSION_DATA;
	session_set_timeout(s, s->conf->timeouts.data_timeout_s);
	session_reply(s, "354 End data with <CR><LF>.<CR><LF>");
}

/*
 * Signs the message now that all of it was read: the DKIM-Signature fields become the
 * envelope's prepend, written into the queue file at commit. Returns -1 when a key
 * could not sign (the message is refused for now rather than sent unsigned); *info
 * receives the text to log once the message is queued (caller frees).
 */
static int
session_dkim_sign(struct smtp_session *s, char **info)
{
	enum dkim_result r;
	char *fields = NULL;

	*info = NULL;
	if (s->dkim == NULL)
		return 0;
	r = dkim_signer_finish(s->dkim, time(NULL), &fields, info);
	dkim_signer_free(s->dkim);
	s->dkim = NULL;
	if (r == DKIM_ERROR) {
		log_error("%s: %s", s->env->id, *info);
		free(*info);
		*info = NULL;
		return -1;
	}
	free(s->env->prepend);
	s->env->prepend = fields;
	return 0;
}

/*
 * The "client=" part of the message's log line, with the SASL user when the client
 * authenticated. Made when the message is complete: the session may be gone when the
 * commit finishes. The caller frees it.
 */
static char *
session_client_fields(const struct smtp_session *s)
{
	char user[USERS_NAME_MAX + 1];

	if (s->auth_user == NULL)
		return xasprintf("client=%s", s->peer_name);
	session_log_safe(s->auth_user, user, sizeof(user));
	return xasprintf("client=%s, sasl_method=%s, sasl_username=%s", s->peer_name,
	    s->auth_mech, user);
}

/* Waiting for something other than the client: a commit, a password check, an AUTH delay. */
static bool
session_waiting(const struct smtp_session *s)
{
	return s->state == SESSION_COMMIT || s->auth_checking || s->auth_delayed;
}

/*
 * A wait (session_waiting) begins: the input waits too. A TLS session stops reading. A
 * plaintext session goes on reading into its input buffer, unread by session_process,
 * because stopping and restarting would cost two epoll_ctl per message (the group commit
 * wait); session_read_cb stops reading should a client flood meanwhile, and
 * session_event_cb keeps an end of file or a read timeout for session_resume.
 */
static void
session_hold_input(struct smtp_session *s)
{
	if (!s->direct_write)
		bufferevent_disable(s->bev, EV_READ);
}

/*
 * Reads and serves input again once a wait (session_waiting, or output to drain) is
 * over. Called from inside session_process (a synchronous commit or check), the loop
 * there carries on by itself.
 */
static void
session_resume(struct smtp_session *s)
{
	if (s->state == SESSION_CLOSING || session_waiting(s))
		return;
	if (!s->paused)
		bufferevent_enable(s->bev, EV_READ);
	if (!s->processing)
		session_process(s);
}

/* Back to the command states after the final reply to DATA. */
static void
session_data_done(struct smtp_session *s)
{
	session_reset_transaction(s);
	s->state = SESSION_HELO;
	session_set_timeout(s, s->conf->timeouts.command_timeout_s);
}

/* The commit of c finished: queue the message and answer the client, if still there. */
static void
session_commit_done(int error, void *arg)
{
	struct smtp_commit *c = arg;
	struct smtp_session *s = c->s;
	struct envelope *e = c->env;
	char id[ENVELOPE_ID_MAX];

	dr_strlcpy(id, e->id, sizeof(id));
	if (error != 0) {
		log_error("%s: queue file commit error: %s", id, strerror(error));
		envelope_free(e);
	} else {
		log_info("%s: %s, from=<%s>, size=%zu, nrcpt=%zu", id, c->client, e->sender,
		    e->content_size ? e->content_size : c->spool_size, e->nrcpts);
		if (c->dkim_info != NULL)
			log_info("%s: %s", id, c->dkim_info);
		if (s == NULL)
			log_info("%s: queued after the client %s went away", id, c->peer_name);
		/* Ownership of e passes to the callback; do not touch it afterwards. */
		if (c->srv->cb != NULL)
			c->srv->cb(e, c->srv->cb_arg);
		else
			envelope_free(e);
	}
	free(c->dkim_info);
	free(c->client);
	free(c);
	if (s == NULL)
		return;
	s->commit = NULL;
	/* Closing meanwhile (session time limit, write error): no reply, no revival. */
	if (s->state == SESSION_CLOSING)
		return;
	if (error == 0) {
		s->counts[SMTP_VERB_DATA].ok++;
		s->commands.ok++;
		session_reply(s, "250 2.0.0 Ok: queued as %s", id);
	} else if (spool_full(error)) {
		/*
		 * The last buffered block is written only now: a full disk shows here for a
		 * message smaller than the writer's buffer, and is the same condition as
		 * during DATA (RFC 3463 4.3.1, "mail system full").
		 */
		session_reply(s, "452 4.3.1 Insufficient system storage");
	} else {
		session_reply(s, "451 4.3.0 Error: queue file write error");
	}
	session_data_done(s);
	session_resume(s); /* what was pipelined behind the message */
}

/*
 * Hands the complete message to the group commit; its final reply waits for the commit
 * (session_commit_done), and so does any command pipelined behind it.
 */
static void
session_commit(struct smtp_session *s, char *dkim_info /* owned, taken */)
{
	struct smtp_commit *c = xcalloc(1, sizeof(*c));
	struct spool_writer *w = s->writer;

	c->srv = s->srv;
	c->s = s;
	c->env = s->env;
	c->dkim_info = dkim_info;
	c->client = session_client_fields(s);
	c->spool_size = s->spool_size;
	dr_strlcpy(c->peer_name, s->peer_name, sizeof(c->peer_name));
	s->writer = NULL;
	s->env = NULL;
	s->commit = c;
	s->state = SESSION_COMMIT;
	session_hold_input(s);
	spool_commit(s->srv->committer, w, c->env, session_commit_done, c);
}

/* CR LF . CR LF seen: commit or refuse; the reply comes now, or once committed. */
static void
session_data_end(struct smtp_session *s)
{
	char *dkim_info = NULL;

	if (s->data_status == DATA_TOO_BIG) {
		session_reply(s, "552 5.3.4 Message size exceeds fixed limit");
	} else if (s->data_status == DATA_WRITE_ERROR) {
		session_reply(s, "452 4.3.1 Insufficient system storage");
	} else if (session_dkim_sign(s, &dkim_info) < 0) {
		session_reply(s, "451 4.3.0 Error: cannot sign the message, try again later");
	} else {
		session_commit(s, dkim_info);
		return;
	}
	session_data_done(s);
}

/* Counts content against the size limit, then spools it. */
static void
session_data_content(struct smtp_session *s, const char *buf, size_t len)
{
	s->data_size += len;
	if (s->data_status == DATA_OK && s->data_size > s->conf->max_message_size) {
		s->data_status = DATA_TOO_BIG;
		log_info("%s: reject: message from %s larger than %zu bytes", s->env->id,
		    s->peer_name, s->conf->max_message_size);
		spool_writer_abort(s->writer);
		s->writer = NULL;
	}
	session_data_write(s, buf, len);
}

/*
 * Consumes DATA input. Returns true when the data phase ended (the caller goes on with
 * the next command), false when more input is needed or the session is closing.
 */
static bool
session_data_input(struct smtp_session *s)
{
	struct evbuffer *in = bufferevent_get_input(s->bev);

	while (evbuffer_get_length(in) > 0) {
		struct evbuffer_iovec v;
		enum smtp_data_status st;
		size_t n, outlen = 0, consumed = 0;

		if (evbuffer_peek(in, -1, NULL, &v, 1) < 1 || v.iov_len == 0)
			break;
		n = v.iov_len < SMTP_SERVER_DATA_CHUNK ? v.iov_len : SMTP_SERVER_DATA_CHUNK;
		st = smtp_data_decode(&s->dec, v.iov_base, n, s->data_out, &outlen, &consumed);
		session_data_content(s, s->data_out, outlen);
		if (st == SMTP_DATA_BARE_EOL) {
			/*
			 * A bare CR or LF: whatever the client meant, another server could read
			 * an end of data here (SMTP smuggling). Refuse the message and the
			 * connection; nothing that follows is read as commands.
			 */
			log_warn("%s: reject: bare <CR> or <LF> in DATA from %s",
			    s->env->id, s->peer_name);
			session_reply(s, "521 5.5.2 Error: bare <CR> or <LF> received "
			    "(SMTP smuggling protection)");
			session_close_after_reply(s);
			return false;
		}
		evbuffer_drain(in, consumed);
		if (st == SMTP_DATA_END) {
			session_data_end(s);
			return true;
		}
	}
	return false;
}

/*
 * STARTTLS (RFC 3207). The switch to TLS happens once the 220 is written
 * (session_output_drained); until then nothing more is read, and what was already read is
 * discarded there.
 */
static void
cmd_starttls(struct smtp_session *s, const char *args)
{
	if (!session_starttls_offered(s)) {
		if (s->tls.active)
			session_reply(s, "554 5.5.1 Error: TLS already active");
		else
			session_reply(s, "502 5.5.1 Error: command not implemented");
		return;
	}
	if (*args != '\0') {
		session_reply(s, "501 5.5.4 Syntax: STARTTLS");
		return;
	}
	if (s->state == SESSION_INIT) {
		session_reply(s, "503 5.5.1 Error: send EHLO first");
		return;
	}
	session_reply(s, "220 2.0.0 Ready to start TLS");
	s->tls_pending = true;
	bufferevent_disable(s->bev, EV_READ);
}

/* Ends an AUTH exchange successfully: the session may relay from now on. */
static void
session_auth_ok(struct smtp_session *s, const char *user)
{
	char safe[USERS_NAME_MAX + 1];

	s->auth_user = xstrdup(user);
	session_log_safe(user, safe, sizeof(safe));
	log_info("%s: AUTH %s: sasl_username=%s authenticated", s->peer_name, s->auth_mech,
	    safe);
	/* The command counts as done only now (session_command leaves it open). */
	s->counts[SMTP_VERB_AUTH].ok++;
	s->commands.ok++;
	session_reply(s, "235 2.7.0 Authentication successful");
}

/*
 * A failed attempt: the 535 is sent after SMTP_SERVER_AUTH_FAIL_DELAY_S, and nothing is
 * read meanwhile (session_auth_delay_cb). user may be NULL (not known).
 */
static void
session_auth_failed(struct smtp_session *s, const char *user, const char *why)
{
	struct timeval tv = { .tv_sec = SMTP_SERVER_AUTH_FAIL_DELAY_S, .tv_usec = 0 };
	char safe[USERS_NAME_MAX + 1];

	s->auth_failures++;
	session_log_safe(user != NULL ? user : "", safe, sizeof(safe));
	log_warn("%s: SASL %s authentication failed: %s; sasl_username=%s (failure %u of %u)",
	    s->peer_name, s->auth_mech, why, safe, s->auth_failures,
	    SMTP_SERVER_AUTH_MAX_FAILURES);
	s->auth_delayed = true;
	session_hold_input(s);
	evtimer_add(s->auth_delay_ev, &tv);
}

static void
session_auth_delay_cb(evutil_socket_t fd, short what, void *arg)
{
	struct smtp_session *s = arg;

	(void)fd;
	(void)what;
	s->auth_delayed = false;
	if (s->state == SESSION_CLOSING)
		return;
	session_reply(s, "535 5.7.8 Authentication credentials invalid");
	if (s->auth_failures >= SMTP_SERVER_AUTH_MAX_FAILURES) {
		log_info("too many failed authentications from %s", s->peer_name);
		session_reply(s, "421 4.7.0 %s Error: too many failed authentications",
		    s->conf->hostname);
		session_close_after_reply(s);
		return;
	}
	session_resume(s);
}

/* The answer of the password check (auth_verify.h); the session still exists. */
static void
session_auth_checked(bool match, void *arg)
{
	struct smtp_session *s = arg;
	char *user = s->auth_check_user;
	bool ok = match && s->auth_check_known;

	s->auth_req = NULL;
	s->auth_check_user = NULL;
	s->auth_checking = false;
	if (s->state != SESSION_CLOSING) {
		if (ok)
			session_auth_ok(s, user);
		else
			session_auth_failed(s, user, "bad user name or password");
	}
	free(user);
	session_resume(s);
}

/*
 * Checks a user name and password; the caller wipes pass (auth_verify wipes its copy).
 * An unknown user's password is checked against a dummy hash: the same cost.
 */
static void
session_auth_check(struct smtp_session *s, const char *user, const char *pass)
{
	const char *hash = users_hash(s->conf->users, user, &s->auth_check_known);

	s->auth_check_user = xstrdup(user);
	s->auth_checking = true;
	session_hold_input(s);
	s->auth_req = auth_verify(s->srv->verifier, hash, pass, session_auth_checked, s);
}

static void
session_auth_plain(struct smtp_session *s, const char *b64)
{
	char user[USERS_NAME_MAX + 1], pass[SMTP_SERVER_AUTH_PASS_MAX];
	const char *why = NULL;
	int rc;

	rc = smtp_auth_plain_decode(b64, user, sizeof(user), pass, sizeof(pass), &why);
	if (rc == -1)
		session_reply(s, "501 5.5.2 Error: %s", why);
	else if (rc == -2)
		session_auth_failed(s, NULL, why);
	else
		session_auth_check(s, user, pass);
	OPENSSL_cleanse(pass, sizeof(pass));
}

/* LOGIN's first step: the user name; asks for the password. */
static void
session_auth_login_user(struct smtp_session *s, const char *b64)
{
	char user[USERS_NAME_MAX + 1];

	if (smtp_auth_login_decode(b64, user, sizeof(user)) != 0) {
		session_reply(s, "501 5.5.2 Error: cannot decode the user name");
		return;
	}
	free(s->auth_login_user);
	s->auth_login_user = xstrdup(user);
	s->auth_step = AUTH_STEP_LOGIN_PASS;
	session_reply(s, "334 UGFzc3dvcmQ6");
}

static void
session_auth_login_pass(struct smtp_session *s, const char *b64)
{
	char pass[SMTP_SERVER_AUTH_PASS_MAX];

	if (smtp_auth_login_decode(b64, pass, sizeof(pass)) != 0)
		session_reply(s, "501 5.5.2 Error: cannot decode the password");
	else
		session_auth_check(s, s->auth_login_user, pass);
	OPENSSL_cleanse(pass, sizeof(pass));
	free(s->auth_login_user);
	s->auth_login_user = NULL;
}

/* An over-long line in an AUTH exchange ends it: the next line is a command again. */
static void
session_auth_abandon(struct smtp_session *s)
{
	s->auth_step = AUTH_STEP_NONE;
	free(s->auth_login_user);
	s->auth_login_user = NULL;
}

/* A line that answers a 334 (RFC 4954 4): never logged, it may hold a password. */
static void
session_auth_response(struct smtp_session *s, const char *line)
{
	enum auth_step step = s->auth_step;

	log_debug("%s < (AUTH %s response, not logged)", s->peer_name, s->auth_mech);
	s->auth_step = AUTH_STEP_NONE;
	if (strcmp(line, "*") == 0) {
		free(s->auth_login_user);
		s->auth_login_user = NULL;
		session_reply(s, "501 5.7.0 Authentication aborted");
		return;
	}
	switch (step) {
	case AUTH_STEP_PLAIN:
		session_auth_plain(s, line);
		break;
	case AUTH_STEP_LOGIN_USER:
		session_auth_login_user(s, line);
		break;
	case AUTH_STEP_LOGIN_PASS:
		session_auth_login_pass(s, line);
		break;
	case AUTH_STEP_NONE:
		break;
	}
}

static void
cmd_auth(struct smtp_session *s, const char *args)
{
	enum smtp_auth_mech mech;
	const char *initial;

	if (!s->tls.active) {
		/* RFC 4954 6: not offered without TLS, and refused if tried anyway. */
		session_reply(s, "538 5.7.11 Encryption required for requested authentication "
		    "mechanism");
		return;
	}
	if (s->conf->users == NULL) {
		session_reply(s, "503 5.5.1 Error: authentication not enabled");
		return;
	}
	if (s->state == SESSION_INIT || !s->esmtp) {
		session_reply(s, "503 5.5.1 Error: send EHLO first");
		return;
	}
	if (s->auth_user != NULL) {
		session_reply(s, "503 5.5.1 Error: already authenticated");
		return;
	}
	if (s->state != SESSION_HELO) {
		session_reply(s, "503 5.5.1 Error: MAIL transaction in progress");
		return;
	}
	if (smtp_parse_auth(args, &mech, &initial) != 0) {
		session_reply(s, "501 5.5.4 Syntax: AUTH mechanism [initial-response]");
		return;
	}
	if (mech == SMTP_AUTH_UNKNOWN) {
		session_reply(s, "504 5.5.4 Unrecognized authentication type");
		return;
	}
	s->auth_mech = mech == SMTP_AUTH_PLAIN ? "PLAIN" : "LOGIN";
	if (mech == SMTP_AUTH_PLAIN && initial == NULL) {
		s->auth_step = AUTH_STEP_PLAIN;
		session_reply(s, "334 ");
	} else if (mech == SMTP_AUTH_PLAIN) {
		session_auth_plain(s, initial);
	} else if (initial == NULL) {
		s->auth_step = AUTH_STEP_LOGIN_USER;
		session_reply(s, "334 VXNlcm5hbWU6");
	} else {
		session_auth_login_user(s, initial);
	}
}

static void
cmd_dispatch(struct smtp_session *s, const struct smtp_command *c)
{
	switch (c->verb) {
	case SMTP_VERB_HELO:
	case SMTP_VERB_EHLO:
		cmd_helo(s, c->verb, c->args);
		break;
	case SMTP_VERB_MAIL:
		cmd_mail(s, c->args);
		break;
	case SMTP_VERB_RCPT:
		cmd_rcpt(s, c->args);
		break;
	case SMTP_VERB_DATA:
		cmd_data(s, c->args);
		break;
	case SMTP_VERB_RSET:
		if (*c->args != '\0') {
			session_reply(s, "501 5.5.4 Syntax: RSET");
			break;
		}
		session_reset_transaction(s);
		session_reply(s, "250 2.0.0 Ok");
		break;
	case SMTP_VERB_NOOP:
		session_reply(s, "250 2.0.0 Ok");
		break;
	case SMTP_VERB_QUIT:
		session_reply(s, "221 2.0.0 Bye");
		session_close_after_reply(s);
		break;
	case SMTP_VERB_HELP:
		session_reply(s, "214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA RSET NOOP VRFY "
		    "HELP QUIT");
		break;
	case SMTP_VERB_VRFY:
		/* RFC 5321 3.5.3: 252 when we will not say, but would accept mail. */
		if (*c->args == '\0')
			session_reply(s, "501 5.5.4 Syntax: VRFY address");
		else
			session_reply(s, "252 2.0.0 Cannot VRFY user, but will accept message");
		break;
	case SMTP_VERB_STARTTLS:
		cmd_starttls(s, c->args);
		break;
	case SMTP_VERB_AUTH:
		cmd_auth(s, c->args);
		break;
	case SMTP_VERB_EXPN:
	case SMTP_VERB_BDAT:
		/* Known verbs of extensions we do not offer. */
		session_reply(s, "502 5.5.1 Error: command not implemented");
		break;
	case SMTP_VERB_UNKNOWN:
	default:
		session_reply(s, "502 5.5.2 Error: command not recognized");
		break;
	}
}

/* One command line (CR LF removed). */
static void
session_command(struct smtp_session *s, char *line, size_t len)
{
	struct smtp_command c;
	enum smtp_verb v;
	bool parsed;

	parsed = memchr(line, '\0', len) == NULL && smtp_parse_command(line, &c) == 0;
	if (parsed && c.verb == SMTP_VERB_AUTH)  /* an initial response may hold a password */
		log_debug("%s < AUTH %.*s", s->peer_name, (int)strcspn(c.args, " "), c.args);
	else
		log_debug("%s < %.*s", s->peer_name, (int)len, line);
	if (!parsed) {
		s->counts[SMTP_VERB_UNKNOWN].total++;
		s->commands.total++;
		s->last_verb = SMTP_VERB_UNKNOWN;
		session_reply(s, "500 5.5.2 Error: bad syntax");
		return;
	}
	v = c.verb < SESSION_NVERBS ? c.verb : SMTP_VERB_UNKNOWN;
	s->last_verb = v;
	s->counts[v].total++;
	s->commands.total++;
	cmd_dispatch(s, &c);
	/*
	 * DATA counts as done at its final reply, not at 354 (session_data_end); AUTH at
	 * 235 (session_auth_ok), not at 334 or before a delayed 535.
	 */
	if (s->last_code < 400 && !(v == SMTP_VERB_DATA && s->state == SESSION_DATA) &&
	    v != SMTP_VERB_AUTH) {
		s->counts[v].ok++;
		s->commands.ok++;
	}
}

/*
 * Takes the next command line from the input. Returns true when it handled one (or
 * discarded input) and the caller should look again, false when more input is needed.
 */
static bool
session_command_input(struct smtp_session *s)
{
	struct evbuffer *in = bufferevent_get_input(s->bev);
	struct evbuffer_ptr eol;
	size_t eol_len = 0, len;

	eol = evbuffer_search_eol(in, NULL, &eol_len, EVBUFFER_EOL_LF);
	if (s->discarding) {
		if (eol.pos < 0) {
			evbuffer_drain(in, evbuffer_get_length(in));
			return false;
		}
		evbuffer_drain(in, (size_t)eol.pos + eol_len);
		s->discarding = false;
		return true;
	}
	if (eol.pos < 0) {
		if (evbuffer_get_length(in) < SMTP_COMMAND_LINE_MAX)
			return false;
		session_auth_abandon(s);
		/* No end in sight: answer now, skip to the next LF. */
		session_reply(s, "500 5.5.2 Error: line too long");
		log_info("line too long from %s (command state %s)", s->peer_name,
		    session_state_name(s->state));
		evbuffer_drain(in, evbuffer_get_length(in));
		s->discarding = true;
		return false;
	}
	len = (size_t)eol.pos;
	if (len + eol_len > SMTP_COMMAND_LINE_MAX) {
		session_auth_abandon(s);
		session_reply(s, "500 5.5.2 Error: line too long");
		log_info("line too long from %s (command state %s)", s->peer_name,
		    session_state_name(s->state));
		evbuffer_drain(in, len + eol_len);
		return true;
	}
	evbuffer_remove(in, s->line, len);
	evbuffer_drain(in, eol_len);
	/* CR LF is the line end; a bare LF is tolerated on command lines only. */
	if (len > 0 && s->line[len - 1] == '\r')
		len--;
	s->line[len] = '\0';
	if (s->auth_step != AUTH_STEP_NONE) {
		session_auth_response(s, s->line);
		OPENSSL_cleanse(s->line, len);
	} else {
		session_command(s, s->line, len);
		if (s->last_verb == SMTP_VERB_AUTH)
			OPENSSL_cleanse(s->line, len);
	}
	return true;
}

static void session_process_input(struct smtp_session *s, struct evbuffer *out);
/* "[192.0.2.1]:1234" / "[2001:db8::1]:1234", the form every log line uses. */
static void
peer_format(const struct netaddr *a, char *buf, size_t size)
{
	char ip[NETADDR_STRLEN];

	snprintf(buf, size, "[%s]:%u", netaddr_ntop(a, ip, sizeof(ip)),
	    (unsigned)netaddr_port(a));
}

/* Who the session talks to: the socket's peer, or the client a PROXY header names. */
static void
session_set_peer(struct smtp_session *s, const struct netaddr *a)
{
	s->peer = *a;
	/* A v6 socket reports IPv4 clients as ::ffff:a.b.c.d; relay_networks say 127/8. */
	netaddr_unmap_v4(&s->peer);
	netaddr_ntop(&s->peer, s->peer_ip, sizeof(s->peer_ip));
	peer_format(&s->peer, s->peer_name, sizeof(s->peer_name));
	s->relay_ok = session_relay_allowed(s->conf, &s->peer);
}

/* The client is known: log it and greet. via says how it became known ("" if direct). */
static void
session_start(struct smtp_session *s, const char *via)
{
	log_info("connect from %s%s", s->peer_name, via);
	s->state = SESSION_INIT;
	session_set_timeout(s, s->conf->timeouts.command_timeout_s);
	session_reply(s, "220 %s ESMTP dualrelay", s->conf->hostname);
}

/*
 * SESSION_PROXY: waits for the whole PROXY header, then starts the session for the
 * client it names; bytes after it are the client's and stay in the input. Returns true
 * when the session started (the caller goes on with the input).
 */
static bool
session_proxy_input(struct smtp_session *s)
{
	struct evbuffer *in = bufferevent_get_input(s->bev);
	size_t len = evbuffer_get_length(in);
	struct proxy_proto_header h;
	char via[sizeof(s->peer_name) + 64];

	if (len > PROXY_PROTO_MAX)
		len = PROXY_PROTO_MAX; /* the parser always decides within this many */
	switch (proxy_proto_parse(evbuffer_pullup(in, (ev_ssize_t)len), len, &h)) {
	case PROXY_PROTO_NEED_MORE:
		return false;
	case PROXY_PROTO_ERROR:
		log_info("bad PROXY header from %s: %s", s->peer_name, h.why);
		session_close_now(s);
		return false;
	case PROXY_PROTO_DONE:
		break;
	}
	evbuffer_drain(in, h.consumed);
	if (h.has_addrs) {
		unsigned limit = s->conf->max_connections_per_ip, from;

		snprintf(via, sizeof(via), " via proxy %s (PROXY v%u)", s->peer_name, h.version);
		session_set_peer(s, &h.src);
		/* The per-address limit, which the accept could not apply (this one counts). */
		if (limit > 0 && !s->relay_ok &&
		    (from = server_sessions_from(s->srv, &s->peer)) > limit) {
			log_warn("connect from %s%s refused: %u connections from that address "
			    "(max_connections_per_ip %u)", s->peer_name, via, from - 1, limit);
			session_reply(s, "421 4.7.0 Too many connections from your address, try "
			    "again later");
			session_close_after_reply(s);
			return false;
		}
	} else {
		/* LOCAL (the proxy's health check), UNKNOWN, UNSPEC: the proxy is the client. */
		snprintf(via, sizeof(via), " (PROXY v%u %s: no client address)", h.version,
		    h.local ? "LOCAL" : h.version == 1 ? "UNKNOWN" : "UNSPEC");
	}
	session_start(s, via);
	return true;
}

/* Consumes as much input as the state allows; replies go out in order. */
static void
session_process(struct smtp_session *s)
{
	struct evbuffer *out = bufferevent_get_output(s->bev);
	bool was_processing = s->processing;

	s->processing = true;
	session_process_input(s, out);
	s->processing = was_processing;
}

static void
session_process_input(struct smtp_session *s, struct evbuffer *out)
{
	while (s->state != SESSION_CLOSING) {
		bool more;

		/* Waiting for the switch to TLS, a commit, a password check or an AUTH delay. */
		if (s->tls_pending || s->tls_handshake || session_waiting(s))
			return;
		if (s->errors >= s->conf->max_errors) {
			log_info("too many errors after %s from %s",
			    smtp_verb_name(s->last_verb), s->peer_name);
			session_reply(s, "421 4.7.0 Too many errors");
			session_close_after_reply(s);
			return;
		}
		if (evbuffer_get_length(out) >= SMTP_SERVER_OUTPUT_HIGH) {
			/* The client is not reading its replies: wait for the output to drain. */
			s->paused = true;
			bufferevent_disable(s->bev, EV_READ);
			return;
		}
		if (s->state == SESSION_PROXY)
			more = session_proxy_input(s);
		else if (s->state == SESSION_DATA)
			more = session_data_input(s);
		else
			more = session_command_input(s);
		if (!more)
			return;
	}
}

/*
 * Session life cycle
 */

static void
session_free(struct smtp_session *s)
{
	struct smtp_server *srv = s->srv;
	char counters[512];
	size_t off = 0;

	for (size_t i = 0; i < sizeof(session_count_order) / sizeof(session_count_order[0]);
	    i++) {
		const struct session_count *c = &s->counts[session_count_order[i]];
		int n;

		if (c->total == 0)
			continue;
		if (c->ok == c->total)
			n = snprintf(counters + off, sizeof(counters) - off, " %s=%u",
			    session_count_name(session_count_order[i]), c->total);
		else
			n = snprintf(counters + off, sizeof(counters) - off, " %s=%u/%u",
			    session_count_name(session_count_order[i]), c->ok, c->total);
		if (n > 0 && (size_t)n < sizeof(counters) - off)
			off += (size_t)n;
	}
	counters[off] = '\0';
	if (s->commands.ok == s->commands.total)
		log_info("disconnect from [%s]%s commands=%u", s->peer_ip, counters,
		    s->commands.total);
	else
		log_info("disconnect from [%s]%s commands=%u/%u", s->peer_ip, counters,
		    s->commands.ok, s->commands.total);

	if (s->prev != NULL)
		s->prev->next = s->next;
	else
		srv->sessions = s->next;
	if (s->next != NULL)
		s->next->prev = s->prev;
	srv->nsessions--;

	if (s->writer != NULL)
		spool_writer_abort(s->writer);
	if (s->commit != NULL)
		s->commit->s = NULL; /* the commit completes without us */
	auth_verify_cancel(s->auth_req); /* its callback would find us gone */
	free(s->auth_check_user);
	dkim_signer_free(s->dkim);
	envelope_free(s->env);
	free(s->helo);
	free(s->auth_user);
	free(s->auth_login_user);
	bufferevent_free(s->bev);  /* and the SSL, over TLS */
	event_free(s->free_ev);
	event_free(s->flush_ev);
	event_free(s->auth_delay_ev);
	if (s->session_ev != NULL)
		event_free(s->session_ev);
	conf_free(s->conf);
	free(s);
}

static void
session_free_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	session_free(arg); /* the last action: nothing touches the session after this */
}

/*
 * Ends the session now (connection lost or unusable); freed from a zero-delay event.
 * Replies not yet written are dropped.
 */
static void
session_close_now(struct smtp_session *s)
{
	s->state = SESSION_CLOSING;
	bufferevent_disable(s->bev, EV_READ | EV_WRITE);
	event_del(s->flush_ev);
	event_active(s->free_ev, EV_TIMEOUT, 1);
}

/*
 * Ends the session once the queued replies are written (QUIT, 421, 521): at once when
 * they are, else from session_output_drained.
 */
static void
session_close_after_reply(struct smtp_session *s)
{
	session_reset_transaction(s); /* nothing half-received survives the session */
	s->state = SESSION_CLOSING;
	s->close_after_flush = true;
	bufferevent_disable(s->bev, EV_READ);
	if (evbuffer_get_length(bufferevent_get_output(s->bev)) == 0)
		session_close_now(s);
}

static void
session_read_cb(struct bufferevent *bev, void *arg)
{
	struct smtp_session *s = arg;

	if (s->state == SESSION_CLOSING)
		return;
	if (session_waiting(s)) {
		/* Input held by a wait (session_hold_input): bounded; session_resume reads on. */
		if (evbuffer_get_length(bufferevent_get_input(bev)) >= SMTP_SERVER_INPUT_HELD_MAX)
			bufferevent_disable(bev, EV_READ);
		return;
	}
	session_process(s);
}

/*
 * Puts an OpenSSL bufferevent in server mode on fd (which it then owns) and starts the
 * handshake; the session reads nothing until it finishes (session_tls_established).
 */
static void
session_tls_begin(struct smtp_session *s, evutil_socket_t fd)
{
	s->bev = bufferevent_openssl_socket_new(s->srv->base, fd,
	    tls_ssl_server_new(s->conf->tls_server), BUFFEREVENT_SSL_ACCEPTING,
	    BEV_OPT_CLOSE_ON_FREE);
	if (s->bev == NULL) {
		log_error("smtp server: cannot allocate a TLS bufferevent");
		abort();
	}
	s->tls_handshake = true;
	/* A client closing without close_notify after QUIT is an ordinary EOF. */
	bufferevent_openssl_set_allow_dirty_shutdown(s->bev, 1);
	bufferevent_setcb(s->bev, session_read_cb, session_write_cb, session_event_cb, s);
	session_set_timeout(s, s->conf->timeouts.command_timeout_s);
	bufferevent_enable(s->bev, EV_READ | EV_WRITE);
}

/*
 * The 220 to STARTTLS is written: the socket passes to TLS. What the client sent after
 * STARTTLS came in plaintext; read as if it came over TLS it would be an injection
 * (RFC 3207 6, CVE-2011-0411): it is dropped. Everything known about the client before
 * is forgotten too (RFC 3207 4.2): it must say EHLO again.
 */
static void
session_start_tls(struct smtp_session *s)
{
	struct bufferevent *plain = s->bev;
	evutil_socket_t fd = bufferevent_getfd(plain);
	size_t extra = evbuffer_get_length(bufferevent_get_input(plain));

	s->tls_pending = false;
	/* From now on replies are written through OpenSSL, by the bufferevent. */
	s->direct_write = false;
	event_del(s->flush_ev);
	if (extra > 0)
		log_warn("%s: discarding %zu bytes sent after STARTTLS before the TLS handshake",
		    s->peer_name, extra);
	/* Detach the fd so that freeing the plain bufferevent leaves it open. */
	bufferevent_setfd(plain, -1);
	bufferevent_free(plain);
	session_reset_transaction(s);
	free(s->helo);
	s->helo = NULL;
	s->esmtp = false;
	s->state = SESSION_INIT;
	session_tls_begin(s, fd);
}

/* The handshake finished (BEV_EVENT_CONNECTED): one log line; greet on implicit TLS. */
static void
session_tls_established(struct smtp_session *s)
{
	s->tls_handshake = false;
	tls_info_get(bufferevent_openssl_get_ssl(s->bev), &s->tls);
	log_info("TLS connection established from %s: %s with cipher %s (%d/%d bits)",
	    s->peer_name, s->tls.version, s->tls.cipher, s->tls.bits, s->tls.alg_bits);
	if (s->listen_tls == CONF_LISTEN_TLS_IMPLICIT)
		session_reply(s, "220 %s ESMTP dualrelay", s->conf->hostname);
	else
		session_process(s);  /* the client may have pipelined its EHLO into the TLS */
}

/*
 * Every queued reply has been written: what waited for that happens now (closing after
 * the last reply, TLS after the 220 to STARTTLS, reading after a pause).
 */
static void
session_output_drained(struct smtp_session *s)
{
	if (s->state == SESSION_CLOSING) {
		if (s->close_after_flush)
			session_close_now(s);
		return;
	}
	if (s->tls_pending) {
		session_start_tls(s);
		return;
	}
	if (s->paused && !session_waiting(s)) {
		s->paused = false;
		session_resume(s);
	}
}

/*
 * A plaintext session's replies, written by the session itself (bev_direct.h): every
 * reply made in one callback goes out in one write, with no change of the socket's
 * epoll interest unless the kernel does not take it all; then libevent writes the rest
 * and session_write_cb follows.
 */
static void
session_flush_cb(evutil_socket_t fd, short what, void *arg)
{
	struct smtp_session *s = arg;

	(void)fd;
	(void)what;
	if (!s->direct_write || bev_direct_pending(s->bev))
		return;  /* over TLS now, or libevent is finishing a write (it takes these too) */
	switch (bev_direct_flush(s->bev)) {
	case BEV_DIRECT_DRAINED:
		session_output_drained(s);
		break;
	case BEV_DIRECT_PENDING:
		break;
	case BEV_DIRECT_ERROR:
		/* What libevent's write path reports for the same failure. */
		session_event_cb(s->bev, BEV_EVENT_WRITING | BEV_EVENT_ERROR, s);
		break;
	}
}

/* libevent wrote everything (over TLS; in plaintext, what a direct write left). */
static void
session_write_cb(struct bufferevent *bev, void *arg)
{
	struct smtp_session *s = arg;

	if (s->direct_write)
		bev_direct_drained(bev);
	session_output_drained(s);
}

/* A TLS handshake that did not finish: say why once, and drop the connection. */
static void
session_tls_failed(struct smtp_session *s, short what)
{
	unsigned long errs[8], e;
	size_t nerrs = 0;
	char why[512];

	while ((e = bufferevent_get_openssl_error(s->bev)) != 0)
		if (nerrs < sizeof(errs) / sizeof(errs[0]))
			errs[nerrs++] = e;
	if (what & BEV_EVENT_TIMEOUT)
		dr_strlcpy(why, "timeout", sizeof(why));
	else
		tls_error_text(NULL, errs, nerrs, why, sizeof(why));
	log_info("TLS handshake failed from %s: %s", s->peer_name, why);
	session_close_now(s);
}

static void
session_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct smtp_session *s = arg;

	(void)bev;
	if (s->state == SESSION_CLOSING) {
		session_close_now(s);
		return;
	}
	if (s->tls_handshake) {
		if (what & BEV_EVENT_CONNECTED)
			session_tls_established(s);
		else
			session_tls_failed(s, what);
		return;
	}
	if (s->state == SESSION_PROXY) {
		/* Nothing was said yet, so no 421: the proxy just sees the close. */
		log_info("no PROXY header from %s: %s", s->peer_name,
		    (what & BEV_EVENT_TIMEOUT) ? "timeout" : "connection lost");
		session_close_now(s);
		return;
	}
	if (session_waiting(s) && (what & BEV_EVENT_READING) && !(what & BEV_EVENT_ERROR)) {
		/*
		 * End of file or read timeout while a plaintext session waits, still reading
		 * (session_hold_input). libevent stopped reading; the reply being waited for
		 * is still due, and session_resume reads again and meets the end of file, as a
		 * session that had stopped reading for the wait would. No timeout runs while
		 * the session, not the client, is the one that is late.
		 */
		return;
	}
	if ((what & BEV_EVENT_TIMEOUT) && (what & BEV_EVENT_READING)) {
		log_info("timeout after %s from %s", smtp_verb_name(s->last_verb),
		    s->peer_name);
		session_reply(s, "421 4.4.2 %s Error: timeout exceeded", s->conf->hostname);
		session_close_after_reply(s);
		return;
	}
	if (what & BEV_EVENT_TIMEOUT)
		log_info("write timeout after %s from %s", smtp_verb_name(s->last_verb),
		    s->peer_name);
	else if (what & BEV_EVENT_ERROR)
		log_info("lost connection after %s from %s: %s", smtp_verb_name(s->last_verb),
		    s->peer_name, strerror(EVUTIL_SOCKET_ERROR()));
	else
		log_info("lost connection after %s from %s", smtp_verb_name(s->last_verb),
		    s->peer_name);
	session_close_now(s);
}

/*
 * timeouts.session_timeout_s: the read timeouts restart with every byte, so a client
 * trickling one byte at a time could otherwise hold a session slot for ever.
 */
static void
session_cap_cb(evutil_socket_t fd, short what, void *arg)
{
	struct smtp_session *s = arg;

	(void)fd;
	(void)what;
	if (s->state == SESSION_CLOSING)
		return;
	log_info("session time limit exceeded after %s from %s",
	    smtp_verb_name(s->last_verb), s->peer_name);
	session_reply(s, "421 4.4.2 %s Error: session time limit exceeded",
	    s->conf->hostname);
	session_close_after_reply(s);
}

static void
session_new(struct smtp_server *srv, evutil_socket_t fd, const struct sockaddr *sa,
    socklen_t salen, enum conf_listen_tls tls, bool proxy)
{
	struct smtp_session *s;
	struct netaddr peer;

	s = xcalloc(1, sizeof(*s));
	s->srv = srv;
	s->conf = conf_ref(srv->conf);
	s->listen_tls = tls;
	s->state = SESSION_INIT;
	s->last_verb = SMTP_VERB_UNKNOWN;
	netaddr_from_sockaddr(&peer, sa, salen);
	session_set_peer(s, &peer);

	if (tls != CONF_LISTEN_TLS_NONE && s->conf->tls_server == NULL) {
		/* A reload dropped tls_cert; listeners keep their mode until restart. */
		log_error("no TLS certificate for the %s listener: dropping %s",
		    conf_listen_tls_name(tls), s->peer_name);
		evutil_closesocket(fd);
		conf_free(s->conf);
		free(s);
		return;
	}
	if (tls != CONF_LISTEN_TLS_IMPLICIT)
		s->bev = bufferevent_socket_new(srv->base, fd, BEV_OPT_CLOSE_ON_FREE);
	s->free_ev = evtimer_new(srv->base, session_free_cb, s);
	s->flush_ev = event_new(srv->base, -1, 0, session_flush_cb, s);
	s->auth_delay_ev = evtimer_new(srv->base, session_auth_delay_cb, s);
	if (s->conf->timeouts.session_timeout_s > 0)
		s->session_ev = evtimer_new(srv->base, session_cap_cb, s);
	if ((s->bev == NULL && tls != CONF_LISTEN_TLS_IMPLICIT) || s->free_ev == NULL ||
	    s->flush_ev == NULL || s->auth_delay_ev == NULL ||
	    (s->conf->timeouts.session_timeout_s > 0 && s->session_ev == NULL)) {
		log_error("cannot set up session for %s", s->peer_name);
		if (s->bev != NULL)
			bufferevent_free(s->bev);
		else
			evutil_closesocket(fd);
		if (s->free_ev != NULL)
			event_free(s->free_ev);
		if (s->flush_ev != NULL)
			event_free(s->flush_ev);
		if (s->auth_delay_ev != NULL)
			event_free(s->auth_delay_ev);
		if (s->session_ev != NULL)
			event_free(s->session_ev);
		conf_free(s->conf);
		free(s);
		return;
	}
	s->next = srv->sessions;
	if (srv->sessions != NULL)
		srv->sessions->prev = s;
	srv->sessions = s;
	srv->nsessions++;

	if (s->session_ev != NULL) {
		struct timeval cap = { .tv_sec = s->conf->timeouts.session_timeout_s };

		evtimer_add(s->session_ev, &cap);
	}
	if (tls == CONF_LISTEN_TLS_IMPLICIT) {
		/* RFC 8314 3.3: the handshake first; the greeting comes over TLS. */
		log_info("connect from %s", s->peer_name);
		session_tls_begin(s, fd);
		return;
	}
	bufferevent_setcb(s->bev, session_read_cb, session_write_cb, session_event_cb, s);
	/* Before anything is written: replies go out by session_flush_cb. */
	bev_direct_start(s->bev);
	s->direct_write = true;
	bufferevent_enable(s->bev, EV_READ);
	if (proxy) {
		unsigned t = s->conf->timeouts.command_timeout_s;

		s->state = SESSION_PROXY;
		session_set_timeout(s, t != 0 && t < SMTP_SERVER_PROXY_TIMEOUT_S ? t :
		    SMTP_SERVER_PROXY_TIMEOUT_S);
		return;
	}
	session_start(s, "");
}

/*
 * Listeners
 */

/* A PROXY header names any address it likes: only trusted_proxies may send one. */
static bool
server_proxy_trusted(const struct smtp_server *srv, const struct sockaddr *sa,
    socklen_t salen)
{
	struct netaddr a;
	char name[NETADDR_STRLEN + 8];

	netaddr_from_sockaddr(&a, sa, salen);
	netaddr_unmap_v4(&a);
	for (size_t i = 0; i < srv->conf->ntrusted_proxies; i++)
		if (netaddr_prefix_match(&srv->conf->trusted_proxies[i], &a))
			return true;
	peer_format(&a, name, sizeof(name));
	log_warn("refused connection from %s on a proxy_protocol listener: not in "
	    "trusted_proxies", name);
	return false;
}

/* Sessions in progress from the address of peer. */
static unsigned
server_sessions_from(const struct smtp_server *srv, const struct netaddr *peer)
{
	unsigned n = 0;

	for (const struct smtp_session *s = srv->sessions; s != NULL; s = s->next)
		if (s->state != SESSION_CLOSING && netaddr_equal(&s->peer, peer))
			n++;
	return n;
}

/*
 * Refuses a connection over max_connections or max_connections_per_ip (which, as
 * Postfix's smtpd_client_event_limit_exceptions, spares relay_networks: the local MTA
 * or application relaying through us is not a flood): one 421 line
 * written straight to the new socket (its send buffer is empty, so a non-blocking
 * send of a few bytes does not fail for want of room), then close. No session, no
 * buffers: a flood of connections costs a log line each and nothing that lasts.
 * Returns true when fd was refused (and closed).
 */
static bool
server_refuse_over_limit(struct smtp_server *srv, evutil_socket_t fd,
    const struct sockaddr *sa, socklen_t salen, bool per_ip)
{
	const struct conf *c = srv->conf;
	struct netaddr peer;
	char ip[NETADDR_STRLEN];
	const char *reply;
	unsigned from_peer = 0;

	netaddr_from_sockaddr(&peer, sa, salen);
	netaddr_unmap_v4(&peer);
	if (srv->nsessions >= c->max_connections) {
		reply = "421 4.7.0 Too many connections, try again later\r\n";
	} else if (per_ip && c->max_connections_per_ip > 0 &&
	    !session_relay_allowed(c, &peer) && (from_peer = server_sessions_from(srv, &peer)) >= c->max_connections_per_ip) {
		reply = "421 4.7.0 Too many connections from your address, try again later\r\n";
	} else
		return false;
	netaddr_ntop(&peer, ip, sizeof(ip));
	if (from_peer > 0)
		log_warn("connect from [%s]:%u refused: %u connections from that address "
		    "(max_connections_per_ip %u)", ip, (unsigned)netaddr_port(&peer), from_peer,
		    c->max_connections_per_ip);
	else
		log_warn("connect from [%s]:%u refused: %u connections (max_connections %u)",
		    ip, (unsigned)netaddr_port(&peer), srv->nsessions, c->max_connections);
	(void)send(fd, reply, strlen(reply), MSG_DONTWAIT | MSG_NOSIGNAL);
	evutil_closesocket(fd);
	return true;
}

static void
server_accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
    int salen, void *arg)
{
	struct smtp_server *srv = arg;
	enum conf_listen_tls tls = CONF_LISTEN_TLS_NONE;
	bool proxy = false;

	for (size_t i = 0; i < srv->nlisteners; i++)
		if (srv->listeners[i] == l) {
			tls = srv->listener_tls[i];
			proxy = srv->listener_proxy[i];
		}
	if (proxy && !server_proxy_trusted(srv, sa, (socklen_t)salen)) {
		evutil_closesocket(fd);
		return;
	}
	/* Behind a proxy, the client's address is known only from its header. */
	if (server_refuse_over_limit(srv, fd, sa, (socklen_t)salen, !proxy))
		return;
	session_new(srv, fd, sa, (socklen_t)salen, tls, proxy);
}

static void
server_accept_resume_cb(evutil_socket_t fd, short what, void *arg)
{
	struct smtp_server *srv = arg;

	(void)fd;
	(void)what;
	for (size_t i = 0; i < srv->nlisteners; i++)
		evconnlistener_enable(srv->listeners[i]);
}

/* EMFILE and friends: the socket stays readable, so pause rather than spin. */
static void
server_accept_error_cb(struct evconnlistener *l, void *arg)
{
	struct smtp_server *srv = arg;
	struct timeval tv = { .tv_sec = SMTP_SERVER_ACCEPT_PAUSE_S, .tv_usec = 0 };
	int err = EVUTIL_SOCKET_ERROR();

	(void)l;
	log_warn("accept: %s; pausing listeners for %d s", strerror(err),
	    SMTP_SERVER_ACCEPT_PAUSE_S);
	for (size_t i = 0; i < srv->nlisteners; i++)
		evconnlistener_disable(srv->listeners[i]);
	evtimer_add(srv->accept_pause_ev, &tv);
}

/* One bound, listening, non-blocking, close-on-exec socket; -1 (errno set) on failure. */
static int
server_socket(const struct netaddr *a)
{
	int fd, on = 1, saved;

	fd = socket(netaddr_family(a), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return -1;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) == -1)
		goto fail;
	/* Each configured address is its own listener: [::] must not also take IPv4. */
	if (netaddr_family(a) == AF_INET6 &&
	    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof(on)) == -1)
		goto fail;
	if (bind(fd, (const struct sockaddr *)&a->ss, a->len) == -1)
		goto fail;
	if (listen(fd, SMTP_SERVER_BACKLOG) == -1)
		goto fail;
	return fd;
fail:
	saved = errno;
	close(fd);
	errno = saved;
	return -1;
}

struct smtp_server *
smtp_server_new(struct event_base *base, const struct conf *conf, struct spool *spool,
    smtp_server_message_cb cb, void *arg)
{
	struct smtp_server *srv = xcalloc(1, sizeof(*srv));

	srv->base = base;
	/* The reference count is the one mutable part of a conf. */
	srv->conf = conf_ref((struct conf *)conf);
	srv->spool = spool;
	srv->cb = cb;
	srv->cb_arg = arg;
	srv->accept_pause_ev = evtimer_new(base, server_accept_resume_cb, srv);
	if (srv->accept_pause_ev == NULL) {
		log_error("smtp server: cannot create event");
		abort();
	}
	return srv;
}

int
smtp_server_listen(struct smtp_server *srv)
{
	for (size_t i = 0; i < srv->conf->nlisten; i++) {
		const struct netaddr *a = &srv->conf->listen[i].addr;
		char name[NETADDR_STRLEN];
		struct evconnlistener *l;
		int fd;

		netaddr_format_hostport(a, name, sizeof(name));
		if ((fd = server_socket(a)) == -1) {
			log_error("cannot listen on %s: %s", name, strerror(errno));
			return -1;
		}
		l = evconnlistener_new(srv->base, server_accept_cb, srv,
		    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 0, fd);
		if (l == NULL) {
			log_error("cannot listen on %s: %s", name, strerror(errno));
			close(fd);
			return -1;
		}
		evconnlistener_set_error_cb(l, server_accept_error_cb);
		srv->listeners = xgrow(srv->listeners, sizeof(*srv->listeners),
		    srv->nlisteners + 1, &srv->listeners_cap);
		srv->listener_tls = xgrow(srv->listener_tls, sizeof(*srv->listener_tls),
		    srv->nlisteners + 1, &srv->listener_tls_cap);
		srv->listener_tls[srv->nlisteners] = srv->conf->listen[i].tls;
		srv->listener_proxy = xgrow(srv->listener_proxy, sizeof(*srv->listener_proxy),
		    srv->nlisteners + 1, &srv->listener_proxy_cap);
		srv->listener_proxy[srv->nlisteners] = srv->conf->listen[i].proxy_protocol;
		srv->listeners[srv->nlisteners++] = l;
		const struct conf_listen *cl = &srv->conf->listen[i];
		char tls_mode[32] = "";
		if (cl->tls != CONF_LISTEN_TLS_NONE)
			snprintf(tls_mode, sizeof(tls_mode), "tls %s", conf_listen_tls_name(cl->tls));
		/* "(tls starttls)", "(PROXY protocol)", "(tls starttls, PROXY protocol)" */
		log_info("listening on %s%s%s%s%s%s", name, *tls_mode || cl->proxy_protocol ?
		    " (" : "", tls_mode, *tls_mode && cl->proxy_protocol ? ", " : "",
		    cl->proxy_protocol ? "PROXY protocol" : "",
		    *tls_mode || cl->proxy_protocol ? ")" : "");
	}
	return 0;
}

int
smtp_server_adopt(struct smtp_server *srv, int fd, const struct netaddr *peer)
{
	unsigned before = srv->nsessions;

	if (evutil_make_socket_nonblocking(fd) != 0) {
		log_error("smtp server: cannot adopt socket: %s", strerror(errno));
		close(fd);
		return -1;
	}
	session_new(srv, fd, (const struct sockaddr *)&peer->ss, peer->len,
	    CONF_LISTEN_TLS_NONE, false);
	return srv->nsessions > before ? 0 : -1;
}

void
smtp_server_set_committer(struct smtp_server *srv, struct spool_committer *c)
{
	srv->committer = c;
}

void
smtp_server_set_auth_verifier(struct smtp_server *srv, struct auth_verifier *v)
{
	srv->verifier = v;
}

void
smtp_server_set_conf(struct smtp_server *srv, const struct conf *conf)
{
	struct conf *old = srv->conf;

	srv->conf = conf_ref((struct conf *)conf);
	conf_free(old);
}

void
smtp_server_stop_listening(struct smtp_server *srv)
{
	for (size_t i = 0; i < srv->nlisteners; i++)
		evconnlistener_free(srv->listeners[i]);
	srv->nlisteners = 0;
	evtimer_del(srv->accept_pause_ev);
}

unsigned
smtp_server_session_count(const struct smtp_server *srv)
{
	return srv->nsessions;
}

void
smtp_server_free(struct smtp_server *srv)
{
	if (srv == NULL)
		return;
	smtp_server_stop_listening(srv);
	/* Messages being committed get their reply and reach the queue first. */
	spool_committer_drain(srv->committer);
	while (srv->sessions != NULL)
		session_free(srv->sessions);
	free(srv->listeners);
	free(srv->listener_tls);
	free(srv->listener_proxy);
	event_free(srv->accept_pause_ev);
	conf_free(srv->conf);
	free(srv);
}
