/*
 * dkim: DKIM signing (RFC 6376) of the messages we accept, with ed25519-sha256 (RFC 8463)
 * and rsa-sha256 keys, relaxed/relaxed canonicalisation only.
 *
 * A keyring holds the configured keys (loaded and checked once, at configuration load).
 * A signer is fed the message content as it streams in (after our own Received: header,
 * which is not signed), hashes the body on the way, keeps the header section, and at
 * the end picks the keys by the From: header's domain and builds the DKIM-Signature
 * header fields. The canonicalisation functions are exposed for the unit tests.
 *
 * Ownership: the keyring owns its keys; a signer borrows the keyring (the caller keeps it
 * alive: the session holds a reference on the conf that owns it). Every char * returned
 * is malloc'd and the caller's to free.
 */
#ifndef DR_DKIM_H
#define DR_DKIM_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

enum dkim_alg {
	DKIM_ALG_ED25519_SHA256 = 0, /* RFC 8463 */
	DKIM_ALG_RSA_SHA256,         /* RFC 6376 3.3.1, 2048 bits or more (RFC 8301) */
};

/* Smallest RSA key we sign with (RFC 8301 says 1024 at least; 2048 is today's floor). */
#define DKIM_RSA_MIN_BITS 2048

struct dkim_key;
struct dkim_keyring;
struct dkim_signer;

/* "ed25519-sha256" / "rsa-sha256" <-> enum; parse returns -1 when unknown. */
int dkim_alg_parse(const char *name, enum dkim_alg *out);
const char *dkim_alg_name(enum dkim_alg alg);

/* The header fields signed when the configuration names none (RFC 6376 5.4.1 and more). */
extern const char *const dkim_default_headers[];

struct dkim_keyring *dkim_keyring_new(void);
void dkim_keyring_free(struct dkim_keyring *kr);
/*
 * Loads the PEM private key in key_file for domain and selector and adds it. The file
 * must be a regular file readable by its owner only (no group or other read bit), the
 * key's type must match alg, and an RSA key must have DKIM_RSA_MIN_BITS bits or more.
 * headers (nheaders names, copied) replaces the default set when non-NULL; it must name
 * From (RFC 6376 5.4). Returns 0, or -1 with *err set to a malloc'd sentence.
 */
int dkim_keyring_add(struct dkim_keyring *kr, const char *domain, const char *selector,
    const char *key_file, enum dkim_alg alg, const char *const *headers, size_t nheaders,
    char **err);
size_t dkim_keyring_count(const struct dkim_keyring *kr);
const struct dkim_key *dkim_keyring_key(const struct dkim_keyring *kr, size_t i);
/*
 * The keys that sign mail From: domain: every key of the domain itself when it has one,
 * else of its closest parent domain that has one. Fills out (at most max) and returns
 * the number found (0: unsigned).
 */
size_t dkim_keyring_lookup(const struct dkim_keyring *kr, const char *domain,
    const struct dkim_key **out, size_t max);
/*
 * An upper bound of the bytes dkim_signer_finish can return for any one message: what
 * the spool reserves at the start of the queue file. 0 for an empty keyring.
 */
size_t dkim_keyring_reserve(const struct dkim_keyring *kr);

const char *dkim_key_domain(const struct dkim_key *k);
const char *dkim_key_selector(const struct dkim_key *k);
enum dkim_alg dkim_key_alg(const struct dkim_key *k);
const char *dkim_key_file(const struct dkim_key *k);
/* Key size in bits (256 for ed25519). */
int dkim_key_bits(const struct dkim_key *k);
/* "SELECTOR._domainkey.DOMAIN" (no trailing dot). */
char *dkim_key_dns_name(const struct dkim_key *k);
/* The TXT record to publish: "v=DKIM1; k=ed25519; p=BASE64" (RFC 6376 3.6.1). */
char *dkim_key_txt_record(const struct dkim_key *k);
/*
 * Compares a published TXT record (the strings of one record joined) with the key:
 * true when it is a DKIM1 key record whose k= and p= match. *why (static) says what
 * differs otherwise.
 */
bool dkim_key_txt_matches(const struct dkim_key *k, const char *txt, const char **why);

/* ---- signing ---- */

enum dkim_result {
	DKIM_SIGNED = 0,   /* *headers holds one DKIM-Signature field per key */
	DKIM_UNSIGNED,     /* no key for the From: domain, no usable From:...: *info says */
	DKIM_ERROR,        /* a signature could not be made (OpenSSL): *info says */
};

struct dkim_signer *dkim_signer_new(const struct dkim_keyring *kr);
/* Feeds content bytes: the message as it will be sent (CR LF line ends, unstuffed). */
void dkim_signer_update(struct dkim_signer *s, const void *data, size_t len);
/*
 * Ends the message and signs it, with t= now. On DKIM_SIGNED *headers receives the
 * DKIM-Signature header fields (folded, each ending in CR LF) to put before the
 * message; *info receives a log text in every case ("dkim=signed d=... s=... a=...",
 * "no DKIM key for example.org: not signed"...). Call once.
 */
enum dkim_result dkim_signer_finish(struct dkim_signer *s, time_t now, char **headers,
    char **info);
void dkim_signer_free(struct dkim_signer *s);

/* ---- canonicalisation and hashing (pure; exposed for tests) ---- */

/*
 * One header field (name, colon, value, possibly folded; a final CR LF is allowed and
 * ignored) in relaxed form (RFC 6376 3.4.2): "name:value\r\n" with the name lower-cased,
 * the value unfolded, WSP runs made one SP, WSP around the colon and at the end removed.
 * Returns a malloc'd string, or NULL when the field has no colon.
 */
char *dkim_canon_header_relaxed(const char *field, size_t len, size_t *outlen);

/* Streaming relaxed body canonicalisation (RFC 6376 3.4.4) into a SHA-256 hash. */
struct dkim_body_hash;
struct dkim_body_hash *dkim_body_hash_new(void);
void dkim_body_hash_update(struct dkim_body_hash *b, const void *data, size_t len);
/* Finishes into out (32 bytes) and frees b. */
void dkim_body_hash_finish(struct dkim_body_hash *b, unsigned char out[32]);
void dkim_body_hash_free(struct dkim_body_hash *b);
/*
 * The canonical body itself, for tests: relaxed body canonicalisation of the whole of
 * in. Returns a malloc'd buffer of *outlen bytes.
 */
char *dkim_canon_body_relaxed(const char *in, size_t len, size_t *outlen);

/* The domain of the (first) address in a From: field value, lower case, or NULL. */
char *dkim_from_domain(const char *value, size_t len);

#endif
