/*
 * tls: OpenSSL 3 for STARTTLS (RFC 3207) both ways. One client context per transport,
 * made when the configuration is loaded (the CA store is read once, not per
 * connection), one SSL per connection made from it with SNI (RFC 6066 3) and the name
 * the certificate must match (RFC 6125), and a summary of the finished handshake for
 * log lines: protocol version, cipher, and whether the peer was verified.
 *
 * Verification is never enforced inside the handshake (SSL_VERIFY_NONE): OpenSSL still
 * checks the chain and the name and records the result, which the caller reads with
 * tls_info_get and acts on according to the transport's policy. So "may" and
 * "encrypt" can report that a peer happened to be verified, and "verify" can say
 * exactly why one was not, after a clean handshake, before any mail is sent.
 *
 * Inbound, one server context per configuration (tls_cert, tls_key), made at load so
 * that a bad or mismatched certificate and key are configuration errors, and used for
 * both STARTTLS and implicit TLS (RFC 8314) listeners. Client certificates are not
 * asked for.
 *
 * Ownership: tls_ctx_new and tls_server_ctx_new return a context the caller frees with tls_ctx_free; SSL
 * objects hold their own reference to it, so a context may be freed (on reload) while
 * connections made from it are still open. tls_ssl_new returns an SSL the caller
 * owns (usually handed over to a bufferevent).
 */
#ifndef DR_TLS_H
#define DR_TLS_H

#include <stdbool.h>
#include <stddef.h>

struct ssl_st;
struct tls_ctx;

enum tls_policy {
	TLS_POLICY_NONE = 0,  /* never STARTTLS, even when offered */
	TLS_POLICY_MAY,       /* STARTTLS when offered; a failed handshake is retried in
	                         plaintext on a new connection (opportunistic, RFC 7435) */
	TLS_POLICY_ENCRYPT,   /* STARTTLS required, the certificate is not checked */
	TLS_POLICY_VERIFY,    /* STARTTLS required, the certificate must chain to the CA
	                         store and match the expected host name */
};

/* "none", "may", "encrypt", "verify". */
const char *tls_policy_name(enum tls_policy p);
/* 0 and *out set for a known name, else -1. */
int tls_policy_parse(const char *name, enum tls_policy *out);

/* "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3" to OpenSSL's TLS1_x_VERSION; -1 if unknown. */
int tls_version_parse(const char *name, int *out);

/*
 * A client context: CA store from ca_file (PEM, one or more certificates) or, when
 * NULL, OpenSSL's default store (the system's), and the lowest protocol version
 * allowed (min_version from tls_version_parse). NULL on failure, with *err set to a
 * one-line reason (malloc'd; the caller frees).
 */
struct tls_ctx *tls_ctx_new(const char *ca_file, int min_version, char **err);
void tls_ctx_free(struct tls_ctx *t);

/*
 * A server context: the certificate chain from cert_file (PEM, leaf first) and the
 * private key from key_file (PEM), which must match; TLS 1.2 or later. NULL on failure
 * with *err set (malloc'd; the caller frees).
 */
struct tls_ctx *tls_server_ctx_new(const char *cert_file, const char *key_file, char **err);
/* A new SSL in server mode from a server context; never NULL (aborts like xmalloc). */
struct ssl_st *tls_ssl_server_new(struct tls_ctx *t);

/*
 * A new SSL in client mode for a connection to name: SNI is the name (none for an
 * address literal, RFC 6066 3), and the certificate is checked against the name (or
 * the address) without partial wildcards. A trailing dot is ignored. Never NULL
 * (allocation failures abort, like xmalloc).
 */
struct ssl_st *tls_ssl_new(struct tls_ctx *t, const char *name);

/* What one finished handshake gave. */
struct tls_info {
	bool active;             /* a TLS session is up on the connection */
	char version[16];        /* "TLSv1.3" */
	char cipher[64];         /* "TLS_AES_256_GCM_SHA384" */
	int bits, alg_bits;      /* secret bits of the cipher, and of its algorithm */
	bool verified;           /* chain to the CA store and name both checked out */
	char verify_error[160];  /* when !verified: why ("hostname mismatch", ...) */
};

/* Fills out from an SSL whose handshake has completed. */
void tls_info_get(struct ssl_st *ssl, struct tls_info *out);
/* "TLSv1.3:TLS_AES_256_GCM_SHA384:verified" (or ":unverified"), "none" when !active. */
void tls_info_format(const struct tls_info *info, char *buf, size_t size);

/*
 * Why a handshake or a TLS read/write failed, as one line, from OpenSSL's error codes
 * (errs[0..nerrs), e.g. from bufferevent_get_openssl_error, oldest first) and, when
 * ssl is not NULL and certificate verification failed, its verify result. Falls back
 * to "connection closed" when there is nothing to say.
 */
void tls_error_text(struct ssl_st *ssl, const unsigned long *errs, size_t nerrs, char *buf,
    size_t size);

#endif
