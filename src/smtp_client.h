/*
 * smtp_client: one outbound SMTP session over an already connected socket, as an
 * explicit state machine (greeting, EHLO with HELO fallback, MAIL, RCPT..., DATA, body,
 * QUIT), with STARTTLS (RFC 3207) and AUTH PLAIN/LOGIN (RFC 4954, 4616) before the
 * transaction when the caller asks for them. Uses PIPELINING when offered (RFC 2920: MAIL, all RCPTs and DATA in one
 * write), sends BODY=8BITMIME / SMTPUTF8 / SIZE= when offered and needed, dot-stuffs the
 * content read from the spool, and times out every wait. It reports one result: either
 * the transaction ran to its end (a final reply for every recipient), or the session
 * failed at a stage, with the reply or network error that ended it.
 *
 * Ownership: the client owns the socket and the content fd from smtp_client_start on,
 * and closes both. The caller owns the client and frees it after (or instead of) the
 * callback; the envelope and recipient list are borrowed and must outlive the client.
 */
#ifndef DR_SMTP_CLIENT_H
#define DR_SMTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>

#include "envelope.h"
#include "netaddr.h"
#include "smtp_proto.h"
#include "tls.h"

struct event_base;
struct smtp_client;

enum smtp_client_stage {
	SMTP_STAGE_GREETING = 0,
	SMTP_STAGE_EHLO,
	SMTP_STAGE_HELO,
	SMTP_STAGE_MAIL,
	SMTP_STAGE_RCPT,
	SMTP_STAGE_DATA,       /* the DATA command */
	SMTP_STAGE_BODY,       /* content sent, waiting for the final reply */
	SMTP_STAGE_QUIT,
	SMTP_STAGE_STARTTLS,   /* the STARTTLS command and the TLS handshake after it */
	SMTP_STAGE_AUTH,       /* AUTH and its continuation lines */
};

/*
 * "in reply to RCPT TO command"-style wording for logs, as Postfix writes it: the whole
 * phrase, e.g. "in reply to end of DATA command" for SMTP_STAGE_BODY and "in the initial
 * server greeting" for SMTP_STAGE_GREETING.
 */
const char *smtp_client_stage_name(enum smtp_client_stage s);

struct smtp_client_rcpt_result {
	size_t index;            /* recipient index in the envelope */
	struct smtp_reply reply; /* final reply for this recipient (RCPT rejection or DATA's);
	                            code 0 when none (e.g. !completed and RCPT accepted) */
	enum smtp_client_stage stage; /* which command the reply answered */
};

struct smtp_client_result {
	bool completed;          /* true: rcpts[] all have final replies */
	/* When !completed: */
	enum smtp_client_stage stage; /* where the session failed */
	struct smtp_reply reply; /* the reply that failed it (code 0 when network/timeout) */
	int error;               /* errno for network failures (ETIMEDOUT on timeouts,
	                            ECONNRESET when the server just closed, EPROTO for a
	                            malformed reply or over-long line), else 0 */
	bool body_sent;          /* body bytes left our buffer: acceptance unknown */
	/* Always: */
	struct smtp_client_rcpt_result *rcpts; /* one per requested recipient, in order */
	size_t nrcpts;
	struct smtp_ehlo_info ehlo; /* what the server offered */
	char *error_text;        /* one-line description for logs when !completed, owned:
	                            "host H[A] said: 550 ... (in reply to MAIL FROM command)",
	                            "lost connection with H[A] while sending message body" */
	struct tls_info tls;     /* the connection's TLS session; tls.active false: plaintext */
	bool tls_failed;         /* !completed because the TLS handshake failed or timed out
	                            (not a refused certificate): "may" retries in plaintext */
	char dsn[16];            /* !completed, failures decided here without a reply (code 0):
	                            "4.7.4" TLS required but not offered, "4.7.5" TLS
	                            handshake failed or certificate not verified, "4.7.0"
	                            AUTH impossible; "" otherwise */
};

struct smtp_client_params {
	const char *helo_name;   /* our EHLO argument */
	const char *peer_name;   /* host name for logs ("mx.example.org") */
	struct netaddr peer;     /* the address connected to */
	unsigned reply_timeout_s;/* per reply (greeting, EHLO, MAIL, RCPT, DATA) */
	unsigned body_timeout_s; /* for the final reply after the body (RFC 5321: 10 min) */
	bool keep_open;          /* after a completed transaction, stay connected (no QUIT)
	                            so the owner can reuse the session */
	/*
	 * STARTTLS (RFC 3207) after EHLO when tls_policy is not TLS_POLICY_NONE and tls is
	 * set: "may" goes on in plaintext when it is not offered (or refused with a reply),
	 * "encrypt" and "verify" fail the session instead ("4.7.4"), and "verify" also fails
	 * it after the handshake ("4.7.5") unless the certificate chains to the context's CA
	 * store and matches tls_name. Borrowed: tls must outlive the handshake only.
	 */
	struct tls_ctx *tls;
	enum tls_policy tls_policy;
	const char *tls_name;    /* SNI and the certificate name; NULL: peer_name */
	/*
	 * AUTH (RFC 4954) after EHLO (the second one, over TLS) when auth_user is set:
	 * PLAIN (RFC 4616) when offered, else LOGIN. Never over plaintext unless
	 * auth_allow_plaintext. A server that offers no AUTH gets the mail without it.
	 * The credentials never appear in logs; borrowed, used only before MAIL.
	 */
	const char *auth_user;
	const char *auth_pass;
	bool auth_allow_plaintext;
};

typedef void (*smtp_client_cb)(struct smtp_client *c, const struct smtp_client_result *r,
    void *arg);

/*
 * Starts the session on the connected fd. content_fd is positioned at the first byte of
 * the content (spool_open_content). rcpt_idx lists envelope recipient indices to send.
 * The result passed to cb stays valid until smtp_client_free. cb runs from the event
 * loop, exactly once (unless the client is freed first), and may free the client.
 * Two failures are decided locally after EHLO, before MAIL, with a synthesized reply at
 * SMTP_STAGE_MAIL: SMTPUTF8 needed but not offered (550 5.6.7, RFC 6531 3.4) and content
 * larger than the server's SIZE (552 5.3.4, RFC 1870). When !completed, rcpts[] still holds the RCPT rejections already
 * received (they are final for those recipients).
 * The process must ignore SIGPIPE (writes to a peer that hung up must fail with EPIPE).
 */
struct smtp_client *smtp_client_start(struct event_base *base, int fd, int content_fd,
    const struct smtp_client_params *p, const struct envelope *env, const size_t *rcpt_idx,
    size_t nrcpt, smtp_client_cb cb, void *arg);
/* Sends QUIT first when the session is idle (kept open). */
void smtp_client_free(struct smtp_client *c);

/* Connection reuse: true when the session is idle after a completed transaction and the
 * server has not closed it. */
bool smtp_client_reusable(const struct smtp_client *c);
/* Transactions begun on this connection so far. */
unsigned smtp_client_transactions(const struct smtp_client *c);
/*
 * Runs another transaction on a reusable session (RSET, then MAIL ...), with the same
 * ownership rules as smtp_client_start: content_fd passes to the client, env and
 * rcpt_idx are borrowed. A connection that proves dead reports a failed session.
 */
void smtp_client_reuse(struct smtp_client *c, int content_fd, const struct envelope *env,
    const size_t *rcpt_idx, size_t nrcpt, smtp_client_cb cb, void *arg);

#endif
