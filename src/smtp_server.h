/*
 * smtp_server: the listeners and inbound ESMTP sessions (RFC 5321). Each session is a
 * state machine over a bufferevent: greeting, EHLO/HELO, MAIL, RCPT, DATA, with
 * PIPELINING, SIZE, 8BITMIME, ENHANCEDSTATUSCODES and SMTPUTF8, and per listener STARTTLS
 * or implicit TLS, with AUTH PLAIN/LOGIN over TLS. It enforces command line length,
 * message size, recipient count, command order and relay access (relay_networks or AUTH),
 * decodes DATA strictly (smtp_proto), and writes the message into the spool while it
 * arrives. The 250 after DATA is sent only after the spool commit; the envelope is then
 * handed to the queue.
 */
#ifndef DR_SMTP_SERVER_H
#define DR_SMTP_SERVER_H

#include "conf.h"
#include "envelope.h"

struct event_base;
struct spool;
struct smtp_server;

/* A committed message; ownership of e passes to the receiver. */
typedef void (*smtp_server_message_cb)(struct envelope *e, void *arg);

/*
 * The server takes its own reference on conf (conf_ref), and each session takes one for
 * its lifetime; replace it with smtp_server_set_conf on reload. spool and base are
 * borrowed and must outlive the server. cb (may be NULL: the envelope is then freed)
 * runs after each spool commit, before the client gets its 250.
 */
struct smtp_server *smtp_server_new(struct event_base *base, const struct conf *conf,
    struct spool *spool, smtp_server_message_cb cb, void *arg);
/*
 * Binds and listens on every conf listen address (IPv6 sockets are IPV6_V6ONLY); logs
 * and returns -1 on failure. The listen addresses are read once: a reload does not
 * rebind.
 */
int smtp_server_listen(struct smtp_server *s);
/*
 * Starts a session on a socket that is already connected (the listeners' path without
 * accept: the fuzzer drives sessions through a socketpair). The server takes fd, also on
 * failure (it is then closed) and makes it non-blocking; peer is the client address the
 * session believes in (relay_networks, logs); the session is plaintext (no STARTTLS).
 * Returns 0, or -1 when no session started.
 */
int smtp_server_adopt(struct smtp_server *s, int fd, const struct netaddr *peer);
/* New sessions see the new conf; sessions in progress keep theirs until they end. */
void smtp_server_set_conf(struct smtp_server *s, const struct conf *conf);
/*
 * Commits accepted messages through c (spool_commit.h: group commit on its own thread)
 * instead of one by one on the event loop. c is borrowed and must outlive the server.
 */
struct spool_committer;
void smtp_server_set_committer(struct smtp_server *s, struct spool_committer *c);
/*
 * Checks AUTH passwords on v's thread (auth_verify.h) instead of on the event loop.
 * v is borrowed and must outlive the server.
 */
struct auth_verifier;
void smtp_server_set_auth_verifier(struct smtp_server *s, struct auth_verifier *v);
/* Stops accepting new connections (shutdown); sessions in progress continue. */
void smtp_server_stop_listening(struct smtp_server *s);
unsigned smtp_server_session_count(const struct smtp_server *s);
/* Closes everything and frees. */
void smtp_server_free(struct smtp_server *s);

#endif
