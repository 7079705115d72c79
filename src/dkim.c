/*
 * dkim: DKIM signatures (RFC 6376) over the messages we accept. Owns the signing keys
 * (loaded from PEM files and checked at configuration load), the relaxed header and body
 * canonicalisations (RFC 6376 3.4.2 and 3.4.4), the choice of the header fields to sign,
 * and the DKIM-Signature header fields themselves. Signatures are made by OpenSSL's EVP
 * interface: rsa-sha256 is PKCS#1 v1.5 over SHA-256 (RFC 6376 3.3.1); ed25519-sha256
 * is PureEdDSA over the SHA-256 hash of the canonicalised header data (RFC 8463 3).
 *
 * The body is hashed as it streams in; only the header section is kept in memory (up to
 * DKIM_HEADER_MAX bytes: a larger one leaves the message unsigned). Both algorithms hash
 * the same relaxed body with SHA-256, so one body hash serves every signature.
 *
 * Header fields are signed bottom-up: a name listed k times in h= covers its last k
 * instances, last first (RFC 6376 5.4.2). From is listed once more than it occurs (an
 * "oversigned" From: a verifier then fails a message to which a From: was added).
 *
 * Nothing here logs: results and reasons go back to the caller as text.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "dkim.h"
#include "util.h"

/* A header section larger than this is not signed (and not kept in memory). */
#define DKIM_HEADER_MAX (1024 * 1024)
/* Longest h= value we write: more instances of a name than fit are left unsigned. */
#define DKIM_H_MAX 1024
/* Longest line of a DKIM-Signature field we write, CR LF excluded (RFC 5322 2.1.1: 78). */
#define DKIM_LINE_MAX 76
/* Body bytes staged before a hash update. */
#define DKIM_BODY_STAGE 4096

const char *const dkim_default_headers[] = {
	"from", "reply-to", "subject", "date", "to", "cc", "sender", "message-id",
	"in-reply-to", "references", "mime-version", "content-type",
	"content-transfer-encoding", "content-id", "content-description",
	"resent-date", "resent-from", "resent-sender", "resent-to", "resent-cc",
	"list-id", "list-help", "list-unsubscribe", "list-subscribe", "list-post",
	"list-owner", "list-archive", "list-unsubscribe-post",
	NULL
};

struct dkim_key {
	char *domain;         /* owned, lower case: the d= tag and the From: domain it signs */
	char *selector;       /* owned: the s= tag */
	char *key_file;       /* owned: where the key came from, for messages */
	enum dkim_alg alg;
	EVP_PKEY *pkey;       /* owned */
	char **headers;       /* owned, lower case, "from" first, no duplicates */
	size_t nheaders;
	size_t bound;         /* upper bound of this key's DKIM-Signature field, bytes */
};

struct dkim_keyring {
	struct dkim_key **keys; /* owned */
	size_t nkeys;
	size_t cap;
};

/* A growing byte buffer. */
struct dkim_buf {
	char *data;
	size_t len;
	size_t cap;
};

/* Streaming relaxed body canonicaliser (RFC 6376 3.4.4); output goes to emit. */
struct dkim_body_canon {
	void (*emit)(void *arg, const char *p, size_t n);
	void *arg;
	bool cr;             /* a CR was seen and the next byte decides if it ends a line */
	bool wsp;            /* a run of WSP is pending (written as one SP before content) */
	bool content;        /* the current line has content already written */
	size_t empty_lines;  /* empty lines held back: written only if content follows */
};

struct dkim_body_hash {
	struct dkim_body_canon canon;
	EVP_MD_CTX *md;       /* owned */
	char stage[DKIM_BODY_STAGE];
	size_t staged;
};

enum signer_phase {
	SIGNER_HEADER,        /* collecting the header section */
	SIGNER_BODY,          /* hashing the body */
	SIGNER_TOO_LARGE,     /* header section over DKIM_HEADER_MAX: will not sign */
};

struct dkim_signer {
	const struct dkim_keyring *kr; /* borrowed */
	enum signer_phase phase;
	struct dkim_buf hdr;  /* the header section, each field with its CR LF */
	size_t scan;          /* where the search for the end of the header resumes */
	struct dkim_body_hash *body; /* owned */
};

/* One field of the header section. */
struct dkim_field {
	const char *start;    /* the field, from its name */
	size_t len;           /* up to, not including, its final CR LF */
	char *name;           /* owned, lower case, WSP before the colon removed */
};

/* ---- small helpers ---- */

static void
buf_add(struct dkim_buf *b, const void *p, size_t n)
{
	b->data = xgrow(b->data, 1, b->len + n + 1, &b->cap);
	memcpy(b->data + b->len, p, n);
	b->len += n;
	b->data[b->len] = '\0';
}

static void
buf_adds(struct dkim_buf *b, const char *s)
{
	buf_add(b, s, strlen(s));
}

static bool
is_wsp(char c)
{
	return c == ' ' || c == '\t';
}

/* The first OpenSSL error as text, or what. */
static char *
ssl_error(const char *what)
{
	unsigned long e = ERR_get_error();
	char buf[256];

	ERR_clear_error();
	if (e == 0)
		return xstrdup(what);
	ERR_error_string_n(e, buf, sizeof(buf));
	return xasprintf("%s: %s", what, buf);
}

/*
 * A domain name or selector (RFC 6376 3.1, 3.5: sub-domains joined by dots): labels of
 * letters, digits and hyphens, not starting or ending with a hyphen.
 */
static bool
valid_dns_name(const char *s)
{
	size_t label = 0, total = strlen(s);

	if (total == 0 || total > 253)
		return false;
	for (size_t i = 0; i <= total; i++) {
		char c = s[i];

		if (c == '.' || c == '\0') {
			if (label == 0 || label > 63 || s[i - 1] == '-')
				return false;
			label = 0;
			continue;
		}
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9') || (c == '-' && label > 0) || c == '_'))
			return false;
		label++;
	}
	return true;
}

/* A header field name (RFC 5322 3.6.8 ftext): printable US-ASCII but the colon. */
static bool
valid_field_name(const char *s)
{
	if (*s == '\0')
		return false;
	for (; *s != '\0'; s++) {
		if ((unsigned char)*s < 33 || (unsigned char)*s > 126 || *s == ':')
			return false;
	}
	return true;
}

int
dkim_alg_parse(const char *name, enum dkim_alg *out)
{
	if (strcmp(name, "ed25519-sha256") == 0)
		*out = DKIM_ALG_ED25519_SHA256;
	else if (strcmp(name, "rsa-sha256") == 0)
		*out = DKIM_ALG_RSA_SHA256;
	else
		return -1;
	return 0;
}

const char *
dkim_alg_name(enum dkim_alg alg)
{
	return alg == DKIM_ALG_RSA_SHA256 ? "rsa-sha256" : "ed25519-sha256";
}

/* ---- keys ---- */

static void
key_free(struct dkim_key *k)
{
	if (k == NULL)
		return;
	free(k->domain);
	free(k->selector);
	free(k->key_file);
	EVP_PKEY_free(k->pkey);
	for (size_t i = 0; i < k->nheaders; i++)
		free(k->headers[i]);
	free(k->headers);
	free(k);
}

struct dkim_keyring *
dkim_keyring_new(void)
{
	return xcalloc(1, sizeof(struct dkim_keyring));
}

void
dkim_keyring_free(struct dkim_keyring *kr)
{
	if (kr == NULL)
		return;
	for (size_t i = 0; i < kr->nkeys; i++)
		key_free(kr->keys[i]);
	free(kr->keys);
	free(kr);
}

/* Never prompt for a passphrase (the daemon has no terminal): encrypted keys fail. */
static int
no_passphrase(char *buf, int size, int rwflag, void *u)
{
	(void)buf;
	(void)size;
	(void)rwflag;
	(void)u;
	return -1;
}

/* Reads and checks the private key in path. NULL with *err on failure. */
static EVP_PKEY *
key_read(const char *path, enum dkim_alg alg, char **err)
{
	struct stat st;
	EVP_PKEY *pk;
	FILE *fp;
	int fd, id;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
		*err = xasprintf("cannot read key_file %s: %s", path, strerror(errno));
		return NULL;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		*err = xasprintf("key_file %s is not a regular file", path);
		close(fd);
		return NULL;
	}
	/* A signing key readable by others lets them sign as the domain. */
	if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
		*err = xasprintf("key_file %s is accessible by %s (mode %04o); it must be "
		    "readable by the daemon only: chmod 600 it", path,
		    (st.st_mode & S_IRWXO) ? "everyone" : "its group",
		    (unsigned)(st.st_mode & 07777));
		close(fd);
		return NULL;
	}
	if ((fp = fdopen(fd, "r")) == NULL) {
		*err = xasprintf("cannot read key_file %s: %s", path, strerror(errno));
		close(fd);
		return NULL;
	}
	pk = PEM_read_PrivateKey(fp, NULL, no_passphrase, NULL);
	fclose(fp);
	if (pk == NULL) {
		char *why = ssl_error("not a PEM private key (or one with a passphrase)");

		*err = xasprintf("key_file %s: %s", path, why);
		free(why);
		return NULL;
	}
	id = EVP_PKEY_get_id(pk);
	if (alg == DKIM_ALG_ED25519_SHA256 && id != EVP_PKEY_ED25519) {
		*err = xasprintf("key_file %s holds a%s %s key, not the ed25519 key that "
		    "algorithm ed25519-sha256 needs", path, id == EVP_PKEY_RSA ? "n" : "",
		    id == EVP_PKEY_RSA ? "RSA" : OBJ_nid2sn(id));
		EVP_PKEY_free(pk);
		return NULL;
	}
	if (alg == DKIM_ALG_RSA_SHA256 && id != EVP_PKEY_RSA) {
		*err = xasprintf("key_file %s holds a%s %s key, not the RSA key that algorithm "
		    "rsa-sha256 needs", path, id == EVP_PKEY_ED25519 ? "n" : "",
		    id == EVP_PKEY_ED25519 ? "ed25519" : OBJ_nid2sn(id));
		EVP_PKEY_free(pk);
		return NULL;
	}
	if (alg == DKIM_ALG_RSA_SHA256 && EVP_PKEY_get_bits(pk) < DKIM_RSA_MIN_BITS) {
		*err = xasprintf("key_file %s: RSA key of %d bits; rsa-sha256 needs %d bits or "
		    "more", path, EVP_PKEY_get_bits(pk), DKIM_RSA_MIN_BITS);
		EVP_PKEY_free(pk);
		return NULL;
	}
	return pk;
}

/* Sets k's header list from headers (or the default set). -1 with *err when invalid. */
static int
key_set_headers(struct dkim_key *k, const char *const *headers, size_t n, char **err)
{
	size_t cap = 0;
	bool from = false;

	if (headers == NULL) {
		headers = dkim_default_headers;
		for (n = 0; dkim_default_headers[n] != NULL; n++)
			;
	}
	/* From first: it is never cut by DKIM_H_MAX. */
	k->headers = xgrow(NULL, sizeof(*k->headers), n + 1, &cap);
	k->headers[k->nheaders++] = xstrdup("from");
	for (size_t i = 0; i < n; i++) {
		char *name;
		bool dup = false;

		if (!valid_field_name(headers[i])) {
			*err = xasprintf("headers: \"%s\" is not a header field name",
			    headers[i]);
			return -1;
		}
		name = dr_strlower(xstrdup(headers[i]));
		if (strcmp(name, "from") == 0)
			from = true;
		for (size_t j = 0; j < k->nheaders; j++)
			dup = dup || strcmp(k->headers[j], name) == 0;
		if (dup) {
			free(name);
			continue;
		}
		k->headers[k->nheaders++] = name;
	}
	if (!from) {
		*err = xstrdup("headers must name From (RFC 6376 5.4: it is always signed)");
		return -1;
	}
	return 0;
}

/*
 * Upper bound of a DKIM-Signature field for k: the tags at their longest (t= with 20
 * digits, h= at DKIM_H_MAX, b= at the key's signature size), plus folding. A fold (3
 * bytes) comes after a line of at least half DKIM_LINE_MAX or before a token longer than
 * that, so folds add less than 2 * 3 / 38 of the text: a quarter more is ample.
 */
static size_t
key_bound(const struct dkim_key *k)
{
	size_t sig = (size_t)EVP_PKEY_get_size(k->pkey);
	size_t raw = 200 + strlen(k->domain) + strlen(k->selector) + DKIM_H_MAX + 44 +
	    4 * ((sig + 2) / 3);

	return raw + raw / 4 + 64;
}

int
dkim_keyring_add(struct dkim_keyring *kr, const char *domain, const char *selector,
    const char *key_file, enum dkim_alg alg, const char *const *headers, size_t nheaders,
    char **err)
{
	struct dkim_key *k;

	*err = NULL;
	if (!valid_dns_name(domain)) {
		*err = xasprintf("domain \"%s\" is not a domain name", domain);
		return -1;
	}
	if (!valid_dns_name(selector)) {
		*err = xasprintf("selector \"%s\" is not a valid selector (RFC 6376 3.1)",
		    selector);
		return -1;
	}
	k = xcalloc(1, sizeof(*k));
	k->domain = dr_strlower(xstrdup(domain));
	k->selector = xstrdup(selector);
	k->key_file = xstrdup(key_file);
	k->alg = alg;
	if (key_set_headers(k, headers, nheaders, err) < 0 ||
	    (k->pkey = key_read(key_file, alg, err)) == NULL) {
		key_free(k);
		return -1;
	}
	k->bound = key_bound(k);
	kr->keys = xgrow(kr->keys, sizeof(*kr->keys), kr->nkeys + 1, &kr->cap);
	kr->keys[kr->nkeys++] = k;
	return 0;
}

size_t
dkim_keyring_count(const struct dkim_keyring *kr)
{
	return kr != NULL ? kr->nkeys : 0;
}

const struct dkim_key *
dkim_keyring_key(const struct dkim_keyring *kr, size_t i)
{
	return i < dkim_keyring_count(kr) ? kr->keys[i] : NULL;
}

size_t
dkim_keyring_lookup(const struct dkim_keyring *kr, const char *domain,
    const struct dkim_key **out, size_t max)
{
	const char *d = domain;

	if (kr == NULL || domain == NULL)
		return 0;
	/* The domain itself, then each parent ("a.b.example.org", "b.example.org"...). */
	while (d != NULL && *d != '\0') {
		size_t n = 0;

		for (size_t i = 0; i < kr->nkeys; i++) {
			if (strcasecmp(kr->keys[i]->domain, d) == 0 && n < max)
				out[n++] = kr->keys[i];
		}
		if (n > 0)
			return n;
		d = strchr(d, '.');
		if (d != NULL)
			d++;
	}
	return 0;
}

size_t
dkim_keyring_reserve(const struct dkim_keyring *kr)
{
	size_t best = 0;

	/* A message is signed by the keys of one domain: the largest such group. */
	for (size_t i = 0; i < dkim_keyring_count(kr); i++) {
		size_t sum = 0;

		for (size_t j = 0; j < kr->nkeys; j++) {
			if (strcmp(kr->keys[i]->domain, kr->keys[j]->domain) == 0)
				sum += kr->keys[j]->bound;
		}
		if (sum > best)
			best = sum;
	}
	return best;
}

const char *
dkim_key_domain(const struct dkim_key *k)
{
	return k->domain;
}

const char *
dkim_key_selector(const struct dkim_key *k)
{
	return k->selector;
}

enum dkim_alg
dkim_key_alg(const struct dkim_key *k)
{
	return k->alg;
}

const char *
dkim_key_file(const struct dkim_key *k)
{
	return k->key_file;
}

int
dkim_key_bits(const struct dkim_key *k)
{
	return EVP_PKEY_get_bits(k->pkey);
}

char *
dkim_key_dns_name(const struct dkim_key *k)
{
	return xasprintf("%s._domainkey.%s", k->selector, k->domain);
}

/*
 * The p= value: for ed25519 the raw 32-byte public key (RFC 8463 4.2); for RSA the DER
 * SubjectPublicKeyInfo, which is what every verifier reads (RFC 6376 3.6.1 with
 * erratum 3017; opendkim-genkey publishes the same).
 */
static char *
key_public_b64(const struct dkim_key *k)
{
	unsigned char raw[64], *der = NULL;
	size_t rlen = sizeof(raw);
	char *out;
	int n;

	if (k->alg == DKIM_ALG_ED25519_SHA256) {
		if (EVP_PKEY_get_raw_public_key(k->pkey, raw, &rlen) != 1)
			return NULL;
		return dr_base64(raw, rlen);
	}
	if ((n = i2d_PUBKEY(k->pkey, &der)) <= 0)
		return NULL;
	out = dr_base64(der, (size_t)n);
	OPENSSL_free(der);
	return out;
}

char *
dkim_key_txt_record(const struct dkim_key *k)
{
	char *p = key_public_b64(k), *txt;

	if (p == NULL)
		return NULL;
	txt = xasprintf("v=DKIM1; k=%s; p=%s", k->alg == DKIM_ALG_RSA_SHA256 ? "rsa" :
	    "ed25519", p);
	free(p);
	return txt;
}

/* The value of tag in a tag list (RFC 6376 3.2), with all WSP removed; NULL if absent. */
static char *
tag_value(const char *list, const char *tag)
{
	const char *p = list;
	size_t tlen = strlen(tag);

	while (*p != '\0') {
		const char *end = strchr(p, ';'), *eq;

		if (end == NULL)
			end = p + strlen(p);
		while (p < end && (is_wsp(*p) || *p == '\r' || *p == '\n'))
			p++;
		eq = memchr(p, '=', (size_t)(end - p));
		if (eq != NULL) {
			const char *ne = eq;

			while (ne > p && is_wsp(ne[-1]))
				ne--;
			if ((size_t)(ne - p) == tlen && memcmp(p, tag, tlen) == 0) {
				struct dkim_buf b = { NULL, 0, 0 };

				buf_add(&b, "", 0);
				for (const char *q = eq + 1; q < end; q++) {
					if (!is_wsp(*q) && *q != '\r' && *q != '\n')
						buf_add(&b, q, 1);
				}
				return b.data;
			}
		}
		p = *end == ';' ? end + 1 : end;
	}
	return NULL;
}

bool
dkim_key_txt_matches(const struct dkim_key *k, const char *txt, const char **why)
{
	char *v = tag_value(txt, "v"), *kt = tag_value(txt, "k"), *p = tag_value(txt, "p");
	char *mine = key_public_b64(k);
	const char *want = k->alg == DKIM_ALG_RSA_SHA256 ? "rsa" : "ed25519";
	bool ok = false;

	/* v= is optional but must come first and say DKIM1 when present (3.6.1). */
	if (v != NULL && strcmp(v, "DKIM1") != 0)
		*why = "not a DKIM1 record";
	else if (p == NULL)
		*why = "no p= tag";
	else if (*p == '\0')
		*why = "the key is revoked (empty p=)";
	else if (strcmp(kt != NULL ? kt : "rsa", want) != 0)
		*why = "k= names another key type";
	else if (mine == NULL || strcmp(p, mine) != 0)
		*why = "p= is another key";
	else {
		*why = NULL;
		ok = true;
	}
	free(v);
	free(kt);
	free(p);
	free(mine);
	return ok;
}

/* ---- canonicalisation ---- */

char *
dkim_canon_header_relaxed(const char *field, size_t len, size_t *outlen)
{
	const char *colon = memchr(field, ':', len), *p, *end = field + len;
	struct dkim_buf b = { NULL, 0, 0 };
	size_t nlen;
	bool wsp = false;

	if (colon == NULL)
		return NULL;
	if (len >= 2 && field[len - 2] == '\r' && field[len - 1] == '\n')
		end -= 2;
	/* The name, lower case, without the WSP before the colon. */
	nlen = (size_t)(colon - field);
	while (nlen > 0 && is_wsp(field[nlen - 1]))
		nlen--;
	buf_add(&b, field, nlen);
	dr_strlower(b.data);
	buf_add(&b, ":", 1);
	/*
	 * The value: unfold (drop CR LF), make WSP runs one SP, drop the WSP after the
	 * colon and at the end. A lone CR or LF is kept as it is (never in what we accept).
	 */
	for (p = colon + 1; p < end; p++) {
		if (*p == '\r' && p + 1 < end && p[1] == '\n') {
			p++;
			continue;
		}
		if (is_wsp(*p)) {
			wsp = true;
			continue;
		}
		if (wsp && b.len > nlen + 1)
			buf_add(&b, " ", 1);
		wsp = false;
		buf_add(&b, p, 1);
	}
	buf_add(&b, "\r\n", 2);
	*outlen = b.len;
	return b.data;
}

static void
canon_init(struct dkim_body_canon *c, void (*emit)(void *, const char *, size_t), void *arg)
{
	memset(c, 0, sizeof(*c));
	c->emit = emit;
	c->arg = arg;
}

/* A non-WSP byte of a line: held-back empty lines and WSP go first. */
static void
canon_content(struct dkim_body_canon *c, const char *p, size_t n)
{
	for (; c->empty_lines > 0; c->empty_lines--)
		c->emit(c->arg, "\r\n", 2);
	if (c->wsp)
		c->emit(c->arg, " ", 1);
	c->wsp = false;
	c->content = true;
	c->emit(c->arg, p, n);
}

/* CR LF: a line with content ends now; an empty (or all-WSP) one is held back. */
static void
canon_eol(struct dkim_body_canon *c)
{
	if (c->content)
		c->emit(c->arg, "\r\n", 2);
	else
		c->empty_lines++;
	c->content = false;
	c->wsp = false;     /* WSP at the end of a line is dropped */
}

static void
canon_update(struct dkim_body_canon *c, const char *data, size_t len)
{
	const char *p = data, *end = data + len;

	while (p < end) {
		const char *run;

		if (c->cr) {
			c->cr = false;
			if (*p == '\n') {
				canon_eol(c);
				p++;
				continue;
			}
			canon_content(c, "\r", 1);  /* a lone CR is content */
		}
		if (*p == '\r') {
			c->cr = true;
			p++;
		} else if (is_wsp(*p)) {
			c->wsp = true;
			p++;
		} else {
			/* A run of plain bytes goes out in one piece. */
			for (run = p; run < end && *run != '\r' && !is_wsp(*run); run++)
				;
			canon_content(c, p, (size_t)(run - p));
			p = run;
		}
	}
}

static void
canon_finish(struct dkim_body_canon *c)
{
	if (c->cr) {
		c->cr = false;
		canon_content(c, "\r", 1);
	}
	/* A last line without CR LF gets one; trailing empty lines stay dropped (3.4.4). */
	if (c->content)
		c->emit(c->arg, "\r\n", 2);
	c->content = false;
	c->empty_lines = 0;
}

static void
emit_buf(void *arg, const char *p, size_t n)
{
	buf_add(arg, p, n);
}

char *
dkim_canon_body_relaxed(const char *in, size_t len, size_t *outlen)
{
	struct dkim_body_canon c;
	struct dkim_buf b = { NULL, 0, 0 };

	buf_add(&b, "", 0);
	canon_init(&c, emit_buf, &b);
	canon_update(&c, in, len);
	canon_finish(&c);
	*outlen = b.len;
	return b.data;
}

static void
emit_hash(void *arg, const char *p, size_t n)
{
	struct dkim_body_hash *h = arg;

	if (n > sizeof(h->stage) - h->staged) {
		EVP_DigestUpdate(h->md, h->stage, h->staged);
		h->staged = 0;
		if (n >= sizeof(h->stage)) {
			EVP_DigestUpdate(h->md, p, n);
			return;
		}
	}
	memcpy(h->stage + h->staged, p, n);
	h->staged += n;
}

struct dkim_body_hash *
dkim_body_hash_new(void)
{
	struct dkim_body_hash *h = xcalloc(1, sizeof(*h));

	canon_init(&h->canon, emit_hash, h);
	if ((h->md = EVP_MD_CTX_new()) == NULL ||
	    EVP_DigestInit_ex(h->md, EVP_sha256(), NULL) != 1) {
		/* Only out of memory gets here: as everywhere else, that is fatal. */
		fprintf(stderr, "dkim: cannot set up SHA-256\n");
		abort();
	}
	return h;
}

void
dkim_body_hash_update(struct dkim_body_hash *h, const void *data, size_t len)
{
	canon_update(&h->canon, data, len);
}

void
dkim_body_hash_finish(struct dkim_body_hash *h, unsigned char out[32])
{
	unsigned int n = 32;

	canon_finish(&h->canon);
	EVP_DigestUpdate(h->md, h->stage, h->staged);
	EVP_DigestFinal_ex(h->md, out, &n);
	dkim_body_hash_free(h);
}

void
dkim_body_hash_free(struct dkim_body_hash *h)
{
	if (h == NULL)
		return;
	EVP_MD_CTX_free(h->md);
	free(h);
}

/* ---- the From: domain ---- */

/*
 * Copies value with comments made one SP and quoted strings dropped (RFC 5322 3.2.2,
 * 3.2.4), so that the '<', ',', ':' and '@' left are structure, not text.
 */
static char *
strip_comments_quotes(const char *value, size_t len)
{
	struct dkim_buf b = { NULL, 0, 0 };
	int depth = 0;
	bool quoted = false;

	buf_add(&b, "", 0);
	for (size_t i = 0; i < len; i++) {
		char c = value[i];

		if ((quoted || depth > 0) && c == '\\') {
			i++;
			continue;
		}
		if (quoted) {
			quoted = c != '"';
			continue;
		}
		if (c == '(') {
			depth++;
			continue;
		}
		if (depth > 0) {
			if (c == ')' && --depth == 0)
				buf_add(&b, " ", 1);
			continue;
		}
		if (c == '"')
			quoted = true;
		else
			buf_add(&b, &c, 1);
	}
	return b.data;
}

char *
dkim_from_domain(const char *value, size_t len)
{
	char *s = strip_comments_quotes(value, len), *addr, *end, *at, *d, *out = NULL;
	size_t n;

	/* name-addr: the angle-addr; else the first mailbox of the list, after a group name. */
	if ((addr = strchr(s, '<')) != NULL) {
		addr++;
		if ((end = strchr(addr, '>')) != NULL)
			*end = '\0';
	} else {
		addr = s;
		if ((end = strchr(addr, ',')) != NULL)
			*end = '\0';
		if ((end = strchr(addr, ':')) != NULL)
			addr = end + 1;
		if ((end = strchr(addr, ';')) != NULL)
			*end = '\0';
	}
	if ((at = strrchr(addr, '@')) == NULL)
		goto out;
	d = at + 1;
	while (is_wsp(*d) || *d == '\r' || *d == '\n')
		d++;
	n = strcspn(d, " \t\r\n");
	if (d[n + strspn(d + n, " \t\r\n")] != '\0')
		goto out;      /* something after the domain: not a plain address */
	d[n] = '\0';
	if (n > 0 && d[n - 1] == '.')
		d[--n] = '\0';
	if (valid_dns_name(d))
		out = dr_strlower(xstrdup(d));
out:
	free(s);
	return out;
}

/* ---- signing ---- */

struct dkim_signer *
dkim_signer_new(const struct dkim_keyring *kr)
{
	struct dkim_signer *s = xcalloc(1, sizeof(*s));

	s->kr = kr;
	s->phase = SIGNER_HEADER;
	s->body = dkim_body_hash_new();
	return s;
}

void
dkim_signer_free(struct dkim_signer *s)
{
	if (s == NULL)
		return;
	free(s->hdr.data);
	dkim_body_hash_free(s->body);
	free(s);
}

/* Looks for the empty line that ends the header section; moves what follows to the body. */
static void
signer_find_header_end(struct dkim_signer *s)
{
	struct dkim_buf *h = &s->hdr;
	size_t hend, bstart;
	char *p;

	if (h->len >= 2 && memcmp(h->data, "\r\n", 2) == 0) {
		hend = 0;       /* no header fields at all */
		bstart = 2;
	} else if ((p = memmem(h->data + s->scan, h->len - s->scan, "\r\n\r\n", 4)) != NULL) {
		hend = (size_t)(p - h->data) + 2;
		bstart = hend + 2;
	} else {
		s->scan = h->len >= 3 ? h->len - 3 : 0;
		return;
	}
	s->phase = SIGNER_BODY;
	dkim_body_hash_update(s->body, h->data + bstart, h->len - bstart);
	h->len = hend;
}

void
dkim_signer_update(struct dkim_signer *s, const void *data, size_t len)
{
	switch (s->phase) {
	case SIGNER_HEADER: {
		/* At most what fits; past the end of the header, the rest is body. */
		size_t room = DKIM_HEADER_MAX + 4 - s->hdr.len, take = len < room ? len : room;

		buf_add(&s->hdr, data, take);
		signer_find_header_end(s);
		if (s->phase == SIGNER_BODY && take < len)
			dkim_body_hash_update(s->body, (const char *)data + take, len - take);
		else if (s->phase == SIGNER_HEADER && s->hdr.len >= DKIM_HEADER_MAX + 4) {
			s->phase = SIGNER_TOO_LARGE;
			free(s->hdr.data);
			memset(&s->hdr, 0, sizeof(s->hdr));
		}
		break;
	}
	case SIGNER_BODY:
		dkim_body_hash_update(s->body, data, len);
		break;
	case SIGNER_TOO_LARGE:
		break;
	}
}

/* Splits the header section into fields. Returns the number; *fields is malloc'd. */
static size_t
split_fields(const char *hdr, size_t len, struct dkim_field **fields)
{
	struct dkim_field *f = NULL;
	size_t n = 0, cap = 0;
	const char *p = hdr, *end = hdr + len;

	while (p < end) {
		const char *q = p, *colon, *nend;

		/* A field runs to the CR LF not followed by WSP (continuation lines). */
		for (;;) {
			const char *nl = memmem(q, (size_t)(end - q), "\r\n", 2);

			if (nl == NULL) {
				q = end;
				break;
			}
			q = nl + 2;
			if (q >= end || !is_wsp(*q)) {
				q = nl;
				break;
			}
		}
		f = xgrow(f, sizeof(*f), n + 1, &cap);
		f[n].start = p;
		f[n].len = (size_t)(q - p);
		colon = memchr(p, ':', f[n].len);
		if (colon != NULL) {
			for (nend = colon; nend > p && is_wsp(nend[-1]); nend--)
				;
			f[n].name = dr_strlower(xstrndup(p, (size_t)(nend - p)));
		} else
			f[n].name = NULL;   /* not a field: never signed */
		n++;
		p = q < end ? q + 2 : end;
	}
	*fields = f;
	return n;
}

static void
free_fields(struct dkim_field *f, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(f[i].name);
	free(f);
}

/* Folding writer for the DKIM-Signature field. */
struct fold {
	struct dkim_buf b;
	size_t col;           /* characters on the current line */
};

/* Adds sep + tok, or a fold and tok when the line would grow past DKIM_LINE_MAX. */
static void
fold_add(struct fold *f, const char *sep, const char *tok)
{
	size_t n = strlen(sep) + strlen(tok);

	if (f->col + n > DKIM_LINE_MAX && f->col > 1) {
		buf_add(&f->b, "\r\n\t", 3);
		f->col = 1;
	} else {
		buf_adds(&f->b, sep);
		f->col += strlen(sep);
	}
	buf_adds(&f->b, tok);
	f->col += strlen(tok);
}

/* Adds a long value (base64) broken anywhere into lines of DKIM_LINE_MAX. */
static void
fold_add_long(struct fold *f, const char *v)
{
	size_t n = strlen(v);

	while (n > 0) {
		size_t room = f->col < DKIM_LINE_MAX ? DKIM_LINE_MAX - f->col : 0, k;

		if (room == 0) {
			buf_add(&f->b, "\r\n\t", 3);
			f->col = 1;
			continue;
		}
		k = n < room ? n : room;
		buf_add(&f->b, v, k);
		f->col += k;
		v += k;
		n -= k;
	}
}

/* The h= list for k over the message's fields: names, with instances and oversigned From. */
static void
build_h_list(const struct dkim_key *k, const struct dkim_field *fields, size_t nfields,
    const char ***names, size_t *nnames)
{
	const char **out = NULL;
	size_t n = 0, cap = 0, textlen = 0;

	for (size_t i = 0; i < k->nheaders; i++) {
		const char *name = k->headers[i];
		size_t count = 0, want;

		for (size_t j = 0; j < nfields; j++)
			count += fields[j].name != NULL && strcmp(fields[j].name, name) == 0;
		want = count + (strcmp(name, "from") == 0 ? 1 : 0);
		for (size_t j = 0; j < want; j++) {
			if (textlen + strlen(name) + 1 > DKIM_H_MAX)
				break;
			out = xgrow(out, sizeof(*out), n + 1, &cap);
			out[n++] = name;
			textlen += strlen(name) + 1;
		}
	}
	*names = out;
	*nnames = n;
}

/*
 * The header data to sign: each h= name picks the next instance of that name from the
 * bottom (RFC 6376 5.4.2), canonicalised; a name with no instance left adds nothing.
 */
static void
add_signed_fields(struct dkim_buf *data, const char **names, size_t nnames,
    const struct dkim_field *fields, size_t nfields)
{
	for (size_t i = 0; i < nnames; i++) {
		size_t used = 0;

		for (size_t j = 0; j < i; j++)
			used += strcmp(names[j], names[i]) == 0;
		for (size_t j = nfields; j-- > 0;) {
			char *c;
			size_t clen;

			if (fields[j].name == NULL || strcmp(fields[j].name, names[i]) != 0)
				continue;
			if (used-- > 0)
				continue;
			c = dkim_canon_header_relaxed(fields[j].start, fields[j].len, &clen);
			if (c != NULL)
				buf_add(data, c, clen);
			free(c);
			break;
		}
	}
}

/* Signs data with k into a malloc'd base64 string, or NULL with *err. */
static char *
sign_data(const struct dkim_key *k, const char *data, size_t len, char **err)
{
	unsigned char hash[32], *sig = NULL;
	const unsigned char *tbs = (const unsigned char *)data;
	size_t tbslen = len, siglen = 0;
	unsigned int hlen = sizeof(hash);
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	char *out = NULL;
	int ok;

	if (ctx == NULL) {
		*err = xstrdup("out of memory");
		return NULL;
	}
	if (k->alg == DKIM_ALG_ED25519_SHA256) {
		/* RFC 8463 3: Ed25519 (pure, no prehash mode) signs the SHA-256 hash. */
		if (EVP_Digest(data, len, hash, &hlen, EVP_sha256(), NULL) != 1) {
			*err = ssl_error("SHA-256");
			goto out;
		}
		tbs = hash;
		tbslen = hlen;
		ok = EVP_DigestSignInit(ctx, NULL, NULL, NULL, k->pkey) == 1;
	} else
		ok = EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, k->pkey) == 1;
	if (!ok || EVP_DigestSign(ctx, NULL, &siglen, tbs, tbslen) != 1) {
		*err = ssl_error("cannot sign");
		goto out;
	}
	sig = xmalloc(siglen);
	if (EVP_DigestSign(ctx, sig, &siglen, tbs, tbslen) != 1) {
		*err = ssl_error("cannot sign");
		goto out;
	}
	out = dr_base64(sig, siglen);
out:
	free(sig);
	EVP_MD_CTX_free(ctx);
	return out;
}

/* One DKIM-Signature field for k, appended to out. -1 with *err on failure. */
static int
sign_one(const struct dkim_key *k, const struct dkim_field *fields, size_t nfields,
    const char *bh, time_t now, struct dkim_buf *out, char **err)
{
	struct fold f = { { NULL, 0, 0 }, 0 };
	struct dkim_buf data = { NULL, 0, 0 };
	const char **names;
	size_t nnames, clen;
	char tok[300], *canon, *b;
	int rc = -1;

	build_h_list(k, fields, nfields, &names, &nnames);
	buf_add(&data, "", 0);
	add_signed_fields(&data, names, nnames, fields, nfields);

	fold_add(&f, "", "DKIM-Signature:");
	fold_add(&f, " ", "v=1;");
	snprintf(tok, sizeof(tok), "a=%s;", dkim_alg_name(k->alg));
	fold_add(&f, " ", tok);
	fold_add(&f, " ", "c=relaxed/relaxed;");
	snprintf(tok, sizeof(tok), "d=%s;", k->domain);
	fold_add(&f, " ", tok);
	snprintf(tok, sizeof(tok), "s=%s;", k->selector);
	fold_add(&f, " ", tok);
	snprintf(tok, sizeof(tok), "t=%lld;", (long long)(now < 0 ? 0 : now));
	fold_add(&f, " ", tok);
	for (size_t i = 0; i < nnames; i++) {
		snprintf(tok, sizeof(tok), "%s%s%s", i == 0 ? "h=" : ":", names[i],
		    i + 1 == nnames ? ";" : "");
		/* FWS is allowed around the colons of h= (RFC 6376 3.5, sig-h-tag). */
		fold_add(&f, i == 0 ? " " : "", tok);
	}
	snprintf(tok, sizeof(tok), "bh=%s;", bh);
	fold_add(&f, " ", tok);
	/* b= starts a line of its own: the text before it is what a verifier keeps. */
	buf_add(&f.b, "\r\n\tb=", 5);
	f.col = 3;

	/* The field itself, b= empty, canonicalised, without its CR LF (3.7). */
	canon = dkim_canon_header_relaxed(f.b.data, f.b.len, &clen);
	buf_add(&data, canon, clen - 2);
	free(canon);

	if ((b = sign_data(k, data.data, data.len, err)) == NULL)
		goto out;
	fold_add_long(&f, b);
	free(b);
	buf_add(&f.b, "\r\n", 2);
	if (f.b.len > k->bound) {
		/* key_bound is wrong: the reserved room in the queue file would not hold it. */
		*err = xasprintf("signature field of %zu bytes exceeds its bound %zu", f.b.len,
		    k->bound);
		goto out;
	}
	buf_add(out, f.b.data, f.b.len);
	rc = 0;
out:
	free(f.b.data);
	free(data.data);
	free(names);
	return rc;
}

enum dkim_result
dkim_signer_finish(struct dkim_signer *s, time_t now, char **headers, char **info)
{
	const struct dkim_key *keys[16];
	struct dkim_field *fields = NULL;
	struct dkim_buf out = { NULL, 0, 0 }, what = { NULL, 0, 0 };
	size_t nfields = 0, nkeys, nfrom = 0, from = 0;
	unsigned char bh[32];
	char *domain = NULL, *bh64 = NULL, *err = NULL;
	enum dkim_result r = DKIM_UNSIGNED;

	*headers = NULL;
	*info = NULL;
	if (s->phase == SIGNER_TOO_LARGE) {
		*info = xasprintf("header section larger than %d bytes: not signed",
		    DKIM_HEADER_MAX);
		return DKIM_UNSIGNED;
	}
	/* No empty line: the whole message is header (an empty body, RFC 5322 3.5). */
	nfields = split_fields(s->hdr.data != NULL ? s->hdr.data : "", s->hdr.len, &fields);
	for (size_t i = 0; i < nfields; i++) {
		if (fields[i].name != NULL && strcmp(fields[i].name, "from") == 0) {
			nfrom++;
			from = i;
		}
	}
	if (nfrom != 1) {
		/* RFC 5322 3.6 wants exactly one; a verifier would not know which to trust. */
		*info = nfrom == 0 ? xstrdup("no From: header: not signed") :
		    xasprintf("%zu From: headers: not signed", nfrom);
		goto out;
	}
	{
		const char *colon = memchr(fields[from].start, ':', fields[from].len);
		size_t vlen = fields[from].len - (size_t)(colon + 1 - fields[from].start);

		domain = dkim_from_domain(colon + 1, vlen);
	}
	if (domain == NULL) {
		*info = xstrdup("no domain in the From: header: not signed");
		goto out;
	}
	nkeys = dkim_keyring_lookup(s->kr, domain, keys, sizeof(keys) / sizeof(keys[0]));
	if (nkeys == 0) {
		*info = xasprintf("no DKIM key for %s: not signed", domain);
		goto out;
	}
	dkim_body_hash_finish(s->body, bh);
	s->body = NULL;
	bh64 = dr_base64(bh, sizeof(bh));
	buf_adds(&what, "dkim=signed");
	for (size_t i = 0; i < nkeys; i++) {
		if (sign_one(keys[i], fields, nfields, bh64, now, &out, &err) < 0) {
			free(what.data);
			what.data = xasprintf("dkim=error d=%s s=%s a=%s: %s: not signed",
			    keys[i]->domain, keys[i]->selector, dkim_alg_name(keys[i]->alg),
			    err);
			free(err);
			free(out.data);
			out.data = NULL;
			r = DKIM_ERROR;
			break;
		}
		buf_adds(&what, i == 0 ? " " : ", ");
		buf_adds(&what, "d=");
		buf_adds(&what, keys[i]->domain);
		buf_adds(&what, " s=");
		buf_adds(&what, keys[i]->selector);
		buf_adds(&what, " a=");
		buf_adds(&what, dkim_alg_name(keys[i]->alg));
		r = DKIM_SIGNED;
	}
	*info = what.data;
	*headers = out.data;
out:
	free(bh64);
	free(domain);
	free_fields(fields, nfields);
	return r;
}
