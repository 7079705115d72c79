/*
 * check_dkim: dkim.c. Relaxed canonicalisation against RFC 6376 3.4.5 and edge cases
 * (folding, WSP runs, trailing WSP, empty lines at the end, lone CR, any chunking), body
 * hashes of known inputs (RFC 8463's example), the From: domain, key loading checks
 * (permissions, type, RSA size), key choice by domain, the TXT record, and signatures:
 * ed25519-sha256 and rsa-sha256 made by the signer are verified here with OpenSSL and
 * the public key taken back from the TXT record, by a small verifier that picks the
 * header fields itself (bottom-up, RFC 6376 5.4.2). Also the spool's side of it: the
 * room reserved for the prepend (the DKIM-Signature fields), its rewrite at commit, and
 * the "prepend" key of the envelope record; and the dkim list of the configuration.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <check.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "conf.h"
#include "dkim.h"
#include "envelope.h"
#include "spool.h"
#include "util.h"

static char tmpdir[64];
static char *ed_file, *rsa_file, *rsa1024_file, *ed_open_file;

/* ---- helpers ---- */

static char *
canon_h(const char *field)
{
	size_t n;
	char *c = dkim_canon_header_relaxed(field, strlen(field), &n);

	if (c != NULL)
		ck_assert_uint_eq(strlen(c), n);
	return c;
}

static char *
canon_b(const char *body, size_t *n)
{
	return dkim_canon_body_relaxed(body, strlen(body), n);
}

static char *
bh_of(const char *body, size_t chunk)
{
	struct dkim_body_hash *h = dkim_body_hash_new();
	unsigned char out[32];
	size_t len = strlen(body);

	for (size_t i = 0; i < len; i += chunk)
		dkim_body_hash_update(h, body + i, len - i < chunk ? len - i : chunk);
	dkim_body_hash_finish(h, out);
	return dr_base64(out, sizeof(out));
}

static void
write_key(EVP_PKEY *pk, const char *path, mode_t mode)
{
	FILE *fp = fopen(path, "w");

	ck_assert_ptr_nonnull(fp);
	ck_assert_int_eq(PEM_write_PrivateKey(fp, pk, NULL, NULL, 0, NULL, NULL), 1);
	fclose(fp);
	ck_assert_int_eq(chmod(path, mode), 0);
}

static void
setup_keys(void)
{
	EVP_PKEY *ed, *rsa, *rsa1024;

	snprintf(tmpdir, sizeof(tmpdir), "/tmp/check_dkim.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(tmpdir));
	ed_file = xasprintf("%s/ed.pem", tmpdir);
	ed_open_file = xasprintf("%s/ed-open.pem", tmpdir);
	rsa_file = xasprintf("%s/rsa.pem", tmpdir);
	rsa1024_file = xasprintf("%s/rsa1024.pem", tmpdir);
	ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	rsa = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
	rsa1024 = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
	ck_assert_ptr_nonnull(ed);
	ck_assert_ptr_nonnull(rsa);
	ck_assert_ptr_nonnull(rsa1024);
	write_key(ed, ed_file, 0600);
	write_key(ed, ed_open_file, 0644);
	write_key(rsa, rsa_file, 0600);
	write_key(rsa1024, rsa1024_file, 0600);
	EVP_PKEY_free(ed);
	EVP_PKEY_free(rsa);
	EVP_PKEY_free(rsa1024);
}

static void
teardown_keys(void)
{
	const char *files[] = { ed_file, ed_open_file, rsa_file, rsa1024_file };
	char *cmd = xasprintf("rm -rf '%s'", tmpdir);

	for (size_t i = 0; i < 4; i++)
		unlink(files[i]);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", tmpdir);
	free(cmd);
	free(ed_file);
	free(ed_open_file);
	free(rsa_file);
	free(rsa1024_file);
}

static struct dkim_keyring *
ring(const char *domain, bool ed, bool rsa)
{
	struct dkim_keyring *kr = dkim_keyring_new();
	char *err = NULL;

	if (ed)
		ck_assert_msg(dkim_keyring_add(kr, domain, "s2026", ed_file,
		    DKIM_ALG_ED25519_SHA256, NULL, 0, &err) == 0, "%s", err);
	if (rsa)
		ck_assert_msg(dkim_keyring_add(kr, domain, "r2026", rsa_file,
		    DKIM_ALG_RSA_SHA256, NULL, 0, &err) == 0, "%s", err);
	return kr;
}

/* Signs msg in chunks of chunk bytes; returns the result, *out the fields, *info. */
static enum dkim_result
sign_msg(const struct dkim_keyring *kr, const char *msg, size_t chunk, char **out,
    char **info)
{
	struct dkim_signer *s = dkim_signer_new(kr);
	size_t len = strlen(msg);
	enum dkim_result r;

	for (size_t i = 0; i < len; i += chunk)
		dkim_signer_update(s, msg + i, len - i < chunk ? len - i : chunk);
	r = dkim_signer_finish(s, 1767225600, out, info);
	dkim_signer_free(s);
	return r;
}

/* ---- a small independent verifier ---- */

/* The header fields of a message, unparsed: pointers into msg. */
struct field {
	const char *p;
	size_t len;          /* without the final CR LF */
};

static size_t
fields_of(const char *msg, struct field *f, size_t max)
{
	size_t n = 0;
	const char *p = msg;

	while (*p != '\0' && strncmp(p, "\r\n", 2) != 0 && n < max) {
		const char *q = p;

		for (;;) {
			q = strstr(q, "\r\n");
			ck_assert_ptr_nonnull(q);
			if (q[2] != ' ' && q[2] != '\t')
				break;
			q += 2;
		}
		f[n].p = p;
		f[n].len = (size_t)(q - p);
		n++;
		p = q + 2;
	}
	return n;
}

static bool
field_is(const struct field *f, const char *name)
{
	size_t n = strlen(name);

	return f->len > n && strncasecmp(f->p, name, n) == 0 &&
	    (f->p[n] == ':' || f->p[n] == ' ' || f->p[n] == '\t');
}

/* A tag's value from a DKIM-Signature field, FWS removed; malloc'd. */
static char *
tag(const char *sig, size_t len, const char *name)
{
	char *copy = xstrndup(sig, len), *out = NULL;
	char *p = strchr(copy, ':') + 1;

	for (char *save = NULL, *t = strtok_r(p, ";", &save); t;
	    t = strtok_r(NULL, ";", &save)) {
		char *eq = strchr(t, '='), *k = t, *w;

		if (eq == NULL)
			continue;
		*eq = '\0';
		while (*k == ' ' || *k == '\t' || *k == '\r' || *k == '\n')
			k++;
		if (strcmp(k, name) != 0)
			continue;
		out = xstrdup(eq + 1);
		w = out;
		for (char *r = out; *r; r++)
			if (*r != ' ' && *r != '\t' && *r != '\r' && *r != '\n')
				*w++ = *r;
		*w = '\0';
	}
	free(copy);
	return out;
}

static unsigned char *
unbase64(const char *s, size_t *len)
{
	size_t n = strlen(s);
	unsigned char *out = xmalloc(n + 1);
	int m = EVP_DecodeBlock(out, (const unsigned char *)s, (int)n);

	ck_assert_int_ge(m, 0);
	while (n > 0 && s[n - 1] == '=') {
		n--;
		m--;
	}
	*len = (size_t)m;
	return out;
}

static EVP_PKEY *
pubkey_from_txt(const char *txt, bool ed)
{
	const char *p = strstr(txt, "p=");
	unsigned char *der;
	const unsigned char *q;
	size_t len;
	EVP_PKEY *pk;

	ck_assert_ptr_nonnull(p);
	der = unbase64(p + 2, &len);
	if (ed) {
		ck_assert_uint_eq(len, 32);
		pk = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, der, len);
	} else {
		q = der;
		pk = d2i_PUBKEY(NULL, &q, (long)len);
	}
	free(der);
	ck_assert_ptr_nonnull(pk);
	return pk;
}

/*
 * Verifies the DKIM-Signature field sig (the sig_index'th field of full) over full:
 * body hash, then the header hash with fields picked bottom-up as h= lists them.
 */
static bool
verify(const char *full, size_t sig_index, EVP_PKEY *pub, bool ed)
{
	struct field f[64];
	size_t nf = fields_of(full, f, 64), n, blen, siglen, clen;
	char *h = tag(f[sig_index].p, f[sig_index].len, "h");
	char *bh = tag(f[sig_index].p, f[sig_index].len, "bh");
	char *b = tag(f[sig_index].p, f[sig_index].len, "b");
	const char *body = strstr(full, "\r\n\r\n");
	unsigned char hash[32], *sig;
	char *cb, *mybh, *data = xstrdup(""), *bstart, *stripped, *c;
	bool used[64] = { false };
	EVP_MD_CTX *ctx;
	bool ok;

	ck_assert_ptr_nonnull(h);
	ck_assert_ptr_nonnull(bh);
	ck_assert_ptr_nonnull(b);
	ck_assert_ptr_nonnull(body);
	cb = dkim_canon_body_relaxed(body + 4, strlen(body + 4), &blen);
	EVP_Digest(cb, blen, hash, NULL, EVP_sha256(), NULL);
	mybh = dr_base64(hash, 32);
	free(cb);
	if (strcmp(mybh, bh) != 0) {
		free(mybh);
		free(h);
		free(bh);
		free(b);
		free(data);
		return false;
	}
	free(mybh);
	for (char *save = NULL, *name = strtok_r(h, ":", &save); name;
	    name = strtok_r(NULL, ":", &save)) {
		for (size_t i = nf; i-- > 0;) {
			if (i == sig_index || used[i] || !field_is(&f[i], name))
				continue;
			used[i] = true;
			c = dkim_canon_header_relaxed(f[i].p, f[i].len, &clen);
			n = strlen(data);
			data = xrealloc(data, n + clen + 1);
			memcpy(data + n, c, clen + 1);
			free(c);
			break;
		}
	}
	/* The signature field with the b= value removed, canonicalised, no CR LF. */
	stripped = xstrndup(f[sig_index].p, f[sig_index].len);
	bstart = strstr(stripped, "b=");
	while (bstart != NULL && bstart != stripped && bstart[-1] != ' ' &&
	    bstart[-1] != '\t' && bstart[-1] != ';')
		bstart = strstr(bstart + 1, "b=");
	ck_assert_ptr_nonnull(bstart);
	bstart[2] = '\0';
	c = dkim_canon_header_relaxed(stripped, strlen(stripped), &clen);
	n = strlen(data);
	data = xrealloc(data, n + clen + 1);
	memcpy(data + n, c, clen - 2);
	data[n + clen - 2] = '\0';
	free(c);
	free(stripped);

	sig = unbase64(b, &siglen);
	ctx = EVP_MD_CTX_new();
	if (ed) {
		EVP_Digest(data, strlen(data), hash, NULL, EVP_sha256(), NULL);
		ck_assert_int_eq(EVP_DigestVerifyInit(ctx, NULL, NULL, NULL, pub), 1);
		ok = EVP_DigestVerify(ctx, sig, siglen, hash, 32) == 1;
	} else {
		ck_assert_int_eq(EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, pub), 1);
		ok = EVP_DigestVerify(ctx, sig, siglen, (unsigned char *)data,
		    strlen(data)) == 1;
	}
	EVP_MD_CTX_free(ctx);
	free(sig);
	free(data);
	free(h);
	free(bh);
	free(b);
	return ok;
}

/* ---- canonicalisation ---- */

START_TEST(header_rfc6376_example)
{
	/* RFC 6376 3.4.5. */
	char *a = canon_h("A: X\r\n");
	char *b = canon_h("B : Y\t\r\n\tZ  \r\n");

	ck_assert_str_eq(a, "a:X\r\n");
	ck_assert_str_eq(b, "b:Y Z\r\n");
	free(a);
	free(b);
}
END_TEST

START_TEST(header_edges)
{
	struct { const char *in, *out; } v[] = {
		{ "Subject:", "subject:\r\n" },
		{ "Subject:   \t ", "subject:\r\n" },
		{ "SUBJECT:hello", "subject:hello\r\n" },
		{ "Subject:\r\n\tfolded\r\n  twice", "subject:folded twice\r\n" },
		{ "To: a@example.org,\r\n b@example.org\r\n",
		    "to:a@example.org, b@example.org\r\n" },
		{ "X-8bit: caf\xc3\xa9  \xc3\xa0", "x-8bit:caf\xc3\xa9 \xc3\xa0\r\n" },
		{ "Subject: a:b : c", "subject:a:b : c\r\n" },
		{ "Subject \t: x", "subject:x\r\n" },
	};

	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		char *c = canon_h(v[i].in);

		ck_assert_msg(c != NULL && strcmp(c, v[i].out) == 0, "%zu: [%s]", i, c);
		free(c);
	}
	ck_assert_ptr_null(canon_h("no colon here"));
}
END_TEST

START_TEST(body_rfc6376_example)
{
	size_t n;
	char *c = canon_b(" C \r\nD \t E\r\n\r\n\r\n", &n);

	ck_assert_str_eq(c, " C\r\nD E\r\n");
	ck_assert_uint_eq(n, 9);
	free(c);
}
END_TEST

START_TEST(body_edges)
{
	struct { const char *in, *out; } v[] = {
		{ "", "" },
		{ "\r\n", "" },
		{ "\r\n\r\n\r\n", "" },
		{ "  \r\n\t\r\n", "" },
		{ "abc", "abc\r\n" },
		{ "abc  ", "abc\r\n" },
		{ "a\r\n\r\nb\r\n", "a\r\n\r\nb\r\n" },
		{ "a\r\n \r\nb\r\n", "a\r\n\r\nb\r\n" },
		{ "a\r\n  \r\n\t\r\n", "a\r\n" },
		{ "\r\n\r\nlate\r\n", "\r\n\r\nlate\r\n" },
		{ "  lead\r\n", " lead\r\n" },
		{ "a \t  b\t\r\n", "a b\r\n" },
		{ "a\rb\r\n", "a\rb\r\n" },
		{ "a\r", "a\r\r\n" },
		{ "caf\xc3\xa9 \r\n", "caf\xc3\xa9\r\n" },
	};

	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		size_t n;
		char *c = canon_b(v[i].in, &n);

		ck_assert_msg(strcmp(c, v[i].out) == 0, "%zu: [%s]", i, c);
		ck_assert_uint_eq(n, strlen(v[i].out));
		free(c);
	}
}
END_TEST

START_TEST(body_hash_known)
{
	/* SHA-256 of nothing: the relaxed hash of an empty body (and of blank lines only). */
	const char *empty = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";
	/* RFC 8463 A.3's body and bh=. */
	const char *rfc = "Hi.\r\n\r\nWe lost the game.  Are you hungry yet?\r\n\r\nJoe.\r\n";
	const char *rfc_bh = "2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=";
	size_t chunks[] = { 1, 2, 3, 7, 4096 };

	for (size_t i = 0; i < sizeof(chunks) / sizeof(chunks[0]); i++) {
		char *a = bh_of("", chunks[i]), *b = bh_of("\r\n \r\n\r\n", chunks[i]);
		char *c = bh_of(rfc, chunks[i]), *d = bh_of("Hi.\r\n\r\nWe lost the game. \t"
		    "Are you hungry yet?  \r\n\r\nJoe.\r\n\r\n\r\n", chunks[i]);

		ck_assert_str_eq(a, empty);
		ck_assert_str_eq(b, empty);
		ck_assert_str_eq(c, rfc_bh);
		ck_assert_str_eq(d, rfc_bh);
		free(a);
		free(b);
		free(c);
		free(d);
	}
}
END_TEST

START_TEST(body_hash_long_input)
{
	/* A large body in odd chunks equals the whole canonicalised at once. */
	size_t len = 300000, n;
	char *body = xmalloc(len + 1), *c, *h1, *h2;
	unsigned char hash[32];

	for (size_t i = 0; i < len; i++)
		body[i] = "ab \t\r\nx\r\n\r\n  "[i % 13];
	body[len] = '\0';
	c = dkim_canon_body_relaxed(body, len, &n);
	EVP_Digest(c, n, hash, NULL, EVP_sha256(), NULL);
	h1 = dr_base64(hash, 32);
	h2 = bh_of(body, 4097);
	ck_assert_str_eq(h1, h2);
	free(c);
	free(h1);
	free(h2);
	free(body);
}
END_TEST

/* ---- From: domain ---- */

START_TEST(from_domain)
{
	struct { const char *in, *out; } v[] = {
		{ " Joe <joe@Example.ORG>", "example.org" },
		{ " joe@example.org", "example.org" },
		{ " \"Joe <x@evil.example>\" <joe@example.org>", "example.org" },
		{ " joe@example.org (Joe <x@evil.example>)", "example.org" },
		{ " =?utf-8?q?J=C3=B6e?= <joe@mail.example.org>", "mail.example.org" },
		{ "\r\n\tJoe\r\n <joe@example.org>", "example.org" },
		{ " \"a@b\"@example.org", "example.org" },
		{ " joe@example.org, ann@example.net", "example.org" },
		{ " joe@example.org.", "example.org" },
	};

	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		char *d = dkim_from_domain(v[i].in, strlen(v[i].in));

		ck_assert_msg(d != NULL && strcmp(d, v[i].out) == 0, "%zu: %s", i, d);
		free(d);
	}
	ck_assert_ptr_null(dkim_from_domain(" no address", 11));
	ck_assert_ptr_null(dkim_from_domain(" joe@[192.0.2.1]", 16));
	ck_assert_ptr_null(dkim_from_domain(" <>", 3));
}
END_TEST

/* ---- keys ---- */

START_TEST(key_checks)
{
	struct dkim_keyring *kr = dkim_keyring_new();
	char *err = NULL;
	const char *hdrs[] = { "Subject", "To" };

	ck_assert_int_eq(dkim_keyring_add(kr, "example.org", "s1", ed_open_file,
	    DKIM_ALG_ED25519_SHA256, NULL, 0, &err), -1);
	ck_assert_ptr_nonnull(strstr(err, "mode 0644"));
	free(err);
	ck_assert_int_eq(dkim_keyring_add(kr, "example.org", "s1", rsa_file,
	    DKIM_ALG_ED25519_SHA256, NULL, 0, &err), -1);
	ck_assert_ptr_nonnull(strstr(err, "RSA key"));
	free(err);
	ck_assert_int_eq(dkim_keyring_add(kr, "example.org", "s1", ed_file,
	    DKIM_ALG_RSA_SHA256, NULL, 0, &err), -1);
	ck_assert_ptr_nonnull(strstr(err, "ed25519 key"));
	free(err);
	ck_assert_int_eq(dkim_keyring_add(kr, "example.org", "s1", rsa1024_file,
	    DKIM_ALG_RSA_SHA256, NULL, 0, &err), -1);
	ck_assert_ptr_nonnull(strstr(err, "1024 bits"));
	free(err);
	ck_assert_int_eq(dkim_keyring_add(kr, "example.org", "s1", "/nonexistent/key.pem",
	    DKIM_ALG_RSA_SHA256, NULL, 0, &err), -1);
	free(err);
	ck_assert_int_eq(dkim_keyring_add(kr, "exa mple.org", "s1", ed_file,
	    DKIM_ALG_ED25519_SHA256, NULL, 0, &err), -1);
	free(err);
	ck_assert_int_eq(dkim_keyring_add(kr, "example.org", "s1", ed_file,
	    DKIM_ALG_ED25519_SHA256, hdrs, 2, &err), -1);
	ck_assert_ptr_nonnull(strstr(err, "From"));
	free(err);
	ck_assert_uint_eq(dkim_keyring_count(kr), 0);
	ck_assert_uint_eq(dkim_keyring_reserve(kr), 0);
	dkim_keyring_free(kr);
}
END_TEST

START_TEST(key_lookup)
{
	struct dkim_keyring *kr = ring("example.org", true, true);
	const struct dkim_key *k[4];
	char *err = NULL;

	ck_assert_int_eq(dkim_keyring_add(kr, "News.Example.org", "n1", ed_file,
	    DKIM_ALG_ED25519_SHA256, NULL, 0, &err), 0);
	ck_assert_uint_eq(dkim_keyring_lookup(kr, "example.org", k, 4), 2);
	ck_assert_uint_eq(dkim_keyring_lookup(kr, "a.b.example.org", k, 4), 2);
	ck_assert_str_eq(dkim_key_domain(k[0]), "example.org");
	ck_assert_uint_eq(dkim_keyring_lookup(kr, "news.example.org", k, 4), 1);
	ck_assert_str_eq(dkim_key_selector(k[0]), "n1");
	ck_assert_uint_eq(dkim_keyring_lookup(kr, "x.news.example.org", k, 4), 1);
	ck_assert_uint_eq(dkim_keyring_lookup(kr, "example.net", k, 4), 0);
	ck_assert_uint_eq(dkim_keyring_lookup(kr, "notexample.org", k, 4), 0);
	ck_assert_uint_eq(dkim_keyring_lookup(kr, "org", k, 4), 0);
	dkim_keyring_free(kr);
}
END_TEST

START_TEST(key_txt_record)
{
	struct dkim_keyring *kr = ring("example.org", true, true);
	const struct dkim_key *ed = dkim_keyring_key(kr, 0), *rsa = dkim_keyring_key(kr, 1);
	char *t1 = dkim_key_txt_record(ed), *t2 = dkim_key_txt_record(rsa), *name;
	const char *why;

	ck_assert(strncmp(t1, "v=DKIM1; k=ed25519; p=", 22) == 0);
	ck_assert_uint_eq(strlen(t1), 22 + 44);
	ck_assert(strncmp(t2, "v=DKIM1; k=rsa; p=MIIBIjAN", 26) == 0);
	ck_assert(dkim_key_txt_matches(ed, t1, &why));
	ck_assert(dkim_key_txt_matches(rsa, t2, &why));
	ck_assert(!dkim_key_txt_matches(ed, t2, &why));
	ck_assert(!dkim_key_txt_matches(ed, "v=DKIM1; k=ed25519; p=", &why));
	ck_assert_str_eq(why, "the key is revoked (empty p=)");
	ck_assert(!dkim_key_txt_matches(ed, "v=spf1 -all", &why));
	/* Whitespace inside the record (long records come in pieces) does not matter. */
	{
		char *spaced = xasprintf("v=DKIM1;k=ed25519 ; p = %.20s %s", t1 + 22, t1 + 42);

		ck_assert_msg(dkim_key_txt_matches(ed, spaced, &why), "%s", why);
		free(spaced);
	}
	name = dkim_key_dns_name(ed);
	ck_assert_str_eq(name, "s2026._domainkey.example.org");
	ck_assert_int_eq(dkim_key_bits(rsa), 2048);
	free(name);
	free(t1);
	free(t2);
	dkim_keyring_free(kr);
}
END_TEST

/* ---- signing ---- */

static const char *msg1 =
    "From: Joe <joe@example.org>\r\n"
    "To: ann@example.net\r\n"
    "To: bob@example.net\r\n"
    "Subject: folded\r\n"
    "\tsubject   with  runs \t \r\n"
    "Date: Thu, 01 Jan 2026 00:00:00 +0000\r\n"
    "Message-ID: <1@example.org>\r\n"
    "X-Not-Signed: whatever\r\n"
    "\r\n"
    "Body line with trailing space   \r\n"
    "caf\xc3\xa9 8-bit line\r\n"
    "\r\n"
    "\r\n";

/* Checks the fields' lines are short and returns the i'th field (0-based), malloc'd. */
static void
check_lines(const char *fields)
{
	for (const char *p = fields; *p != '\0';) {
		const char *nl = strstr(p, "\r\n");

		ck_assert_ptr_nonnull(nl);
		ck_assert_msg(nl - p < 78, "line of %td characters", nl - p);
		p = nl + 2;
	}
}

static void
sign_and_verify(bool ed, bool rsa, size_t chunk)
{
	struct dkim_keyring *kr = ring("example.org", ed, rsa);
	char *out = NULL, *info = NULL, *full, *txt;
	EVP_PKEY *pub;
	enum dkim_result r = sign_msg(kr, msg1, chunk, &out, &info);
	size_t nsig = (ed ? 1 : 0) + (rsa ? 1 : 0);

	ck_assert_int_eq(r, DKIM_SIGNED);
	ck_assert_ptr_nonnull(out);
	ck_assert_msg(strncmp(info, "dkim=signed d=example.org s=", 28) == 0, "%s", info);
	ck_assert_uint_le(strlen(out), dkim_keyring_reserve(kr));
	check_lines(out);
	full = xasprintf("%s%s", out, msg1);
	for (size_t i = 0; i < nsig; i++) {
		const struct dkim_key *k = dkim_keyring_key(kr, i);
		bool is_ed = dkim_key_alg(k) == DKIM_ALG_ED25519_SHA256;
		struct field f[32];
		char *h;

		fields_of(full, f, 32);
		h = tag(f[i].p, f[i].len, "h");
		/* From oversigned, both To fields, no unlisted field. */
		ck_assert_str_eq(h, "from:from:subject:date:to:to:message-id");
		free(h);
		txt = dkim_key_txt_record(k);
		pub = pubkey_from_txt(txt, is_ed);
		ck_assert_msg(verify(full, i, pub, is_ed), "signature %zu does not verify", i);
		/* A changed header field or body must not verify. */
		{
			char *bad = xstrdup(full), *s = strstr(bad, "runs");

			s[0] = 'R';
			ck_assert(!verify(bad, i, pub, is_ed));
			free(bad);
			bad = xstrdup(full);
			s = strstr(bad, "8-bit");
			s[0] = '9';
			ck_assert(!verify(bad, i, pub, is_ed));
			free(bad);
		}
		EVP_PKEY_free(pub);
		free(txt);
	}
	free(full);
	free(out);
	free(info);
	dkim_keyring_free(kr);
}

START_TEST(sign_ed25519)
{
	sign_and_verify(true, false, 4096);
	sign_and_verify(true, false, 1);
}
END_TEST

START_TEST(sign_rsa)
{
	sign_and_verify(false, true, 4096);
	sign_and_verify(false, true, 5);
}
END_TEST

START_TEST(sign_both)
{
	sign_and_verify(true, true, 4096);
	sign_and_verify(true, true, 3);
}
END_TEST

START_TEST(sign_parent_domain_and_tags)
{
	struct dkim_keyring *kr = ring("example.org", true, false);
	char *out = NULL, *info = NULL, *d, *s, *a, *c, *t;
	const char *m = "From: <x@mail.example.org>\r\nSubject: hi\r\n\r\nbody\r\n";

	ck_assert_int_eq(sign_msg(kr, m, 4096, &out, &info), DKIM_SIGNED);
	d = tag(out, strlen(out) - 2, "d");
	s = tag(out, strlen(out) - 2, "s");
	a = tag(out, strlen(out) - 2, "a");
	c = tag(out, strlen(out) - 2, "c");
	t = tag(out, strlen(out) - 2, "t");
	ck_assert_str_eq(d, "example.org");
	ck_assert_str_eq(s, "s2026");
	ck_assert_str_eq(a, "ed25519-sha256");
	ck_assert_str_eq(c, "relaxed/relaxed");
	ck_assert_str_eq(t, "1767225600");
	ck_assert(strncmp(out, "DKIM-Signature: v=1;", 20) == 0);
	free(d);
	free(s);
	free(a);
	free(c);
	free(t);
	free(out);
	free(info);
	dkim_keyring_free(kr);
}
END_TEST

START_TEST(sign_custom_headers)
{
	struct dkim_keyring *kr = dkim_keyring_new();
	const char *hdrs[] = { "Subject", "FROM", "X-Custom", "subject" };
	char *err = NULL, *out = NULL, *info = NULL, *h, *full, *txt;
	const char *m = "From: a@example.org\r\nX-Custom: 1\r\nTo: b@example.net\r\n"
	    "Subject: s\r\n\r\nbody\r\n";
	EVP_PKEY *pub;

	ck_assert_int_eq(dkim_keyring_add(kr, "example.org", "c1", ed_file,
	    DKIM_ALG_ED25519_SHA256, hdrs, 4, &err), 0);
	ck_assert_int_eq(sign_msg(kr, m, 4096, &out, &info), DKIM_SIGNED);
	h = tag(out, strlen(out) - 2, "h");
	ck_assert_str_eq(h, "from:from:subject:x-custom");
	full = xasprintf("%s%s", out, m);
	txt = dkim_key_txt_record(dkim_keyring_key(kr, 0));
	pub = pubkey_from_txt(txt, true);
	ck_assert(verify(full, 0, pub, true));
	EVP_PKEY_free(pub);
	free(txt);
	free(full);
	free(h);
	free(out);
	free(info);
	dkim_keyring_free(kr);
}
END_TEST

START_TEST(sign_no_body_and_long_lines)
{
	struct dkim_keyring *kr = ring("example.org", true, true);
	char *out = NULL, *info = NULL, *full, *txt, *m, *subject;
	EVP_PKEY *pub;
	size_t n = 3000;

	/* A header section without an empty line: the body is empty. */
	ck_assert_int_eq(sign_msg(kr, "From: a@example.org\r\nSubject: x\r\n", 4096, &out,
	    &info), DKIM_SIGNED);
	free(out);
	free(info);
	/* Long unfolded lines in the header and the body. */
	subject = xmalloc(n + 1);
	memset(subject, 'x', n);
	subject[n] = '\0';
	m = xasprintf("From: a@example.org\r\nSubject: %s\r\n\r\n%s %s\r\n", subject, subject,
	    subject);
	ck_assert_int_eq(sign_msg(kr, m, 1000, &out, &info), DKIM_SIGNED);
	check_lines(out);
	full = xasprintf("%s%s", out, m);
	txt = dkim_key_txt_record(dkim_keyring_key(kr, 1));
	pub = pubkey_from_txt(txt, false);
	ck_assert(verify(full, 1, pub, false));
	EVP_PKEY_free(pub);
	free(txt);
	free(full);
	free(m);
	free(subject);
	free(out);
	free(info);
	dkim_keyring_free(kr);
}
END_TEST

START_TEST(sign_many_instances_capped)
{
	struct dkim_keyring *kr = ring("example.org", true, true);
	char *out = NULL, *info = NULL, *m = xstrdup("From: a@example.org\r\n"), *next;

	/* 500 To: fields: h= is capped, the field stays within the reserved room. */
	for (int i = 0; i < 500; i++) {
		next = xasprintf("%sTo: r%d@example.net\r\n", m, i);
		free(m);
		m = next;
	}
	next = xasprintf("%s\r\nbody\r\n", m);
	free(m);
	m = next;
	ck_assert_int_eq(sign_msg(kr, m, 4096, &out, &info), DKIM_SIGNED);
	ck_assert_uint_le(strlen(out), dkim_keyring_reserve(kr));
	ck_assert(strncmp(strstr(out, "h="), "h=from:from:", 12) == 0);
	check_lines(out);
	free(out);
	free(info);
	free(m);
	dkim_keyring_free(kr);
}
END_TEST

START_TEST(sign_header_limit)
{
	struct dkim_keyring *kr = ring("example.org", true, false);
	size_t big = 2 * 1024 * 1024;
	char *m = xmalloc(big + 200), *out = NULL, *info = NULL;
	int n;

	/* A small header and a 2 MiB body in one piece: signed. */
	n = snprintf(m, 200, "From: a@example.org\r\nSubject: big\r\n\r\n");
	memset(m + n, 'b', big);
	strcpy(m + n + big, "\r\n");
	ck_assert_int_eq(sign_msg(kr, m, big + 200, &out, &info), DKIM_SIGNED);
	free(out);
	free(info);
	/* A header section over the limit: not signed, and said so. */
	n = snprintf(m, 200, "From: a@example.org\r\nX-Big: ");
	memset(m + n, 'h', big);
	strcpy(m + n + big, "\r\n\r\nbody\r\n");
	ck_assert_int_eq(sign_msg(kr, m, 16384, &out, &info), DKIM_UNSIGNED);
	ck_assert_ptr_null(out);
	ck_assert_ptr_nonnull(strstr(info, "header section larger than"));
	free(info);
	free(m);
	dkim_keyring_free(kr);
}
END_TEST

START_TEST(unsigned_cases)
{
	struct dkim_keyring *kr = ring("example.org", true, false);
	char *out = NULL, *info = NULL;

	ck_assert_int_eq(sign_msg(kr, "From: a@example.net\r\n\r\nx\r\n", 4096, &out, &info),
	    DKIM_UNSIGNED);
	ck_assert_ptr_null(out);
	ck_assert_str_eq(info, "no DKIM key for example.net: not signed");
	free(info);
	ck_assert_int_eq(sign_msg(kr, "Subject: x\r\n\r\nx\r\n", 4096, &out, &info),
	    DKIM_UNSIGNED);
	ck_assert_str_eq(info, "no From: header: not signed");
	free(info);
	ck_assert_int_eq(sign_msg(kr, "From: a@example.org\r\nFrom: b@example.org\r\n\r\nx\r\n",
	    4096, &out, &info), DKIM_UNSIGNED);
	ck_assert_str_eq(info, "2 From: headers: not signed");
	free(info);
	ck_assert_int_eq(sign_msg(kr, "From: nobody\r\n\r\nx\r\n", 4096, &out, &info),
	    DKIM_UNSIGNED);
	free(info);
	/* "From:" in the body is not a header. */
	ck_assert_int_eq(sign_msg(kr, "Subject: x\r\n\r\nFrom: a@example.org\r\n", 4096, &out,
	    &info), DKIM_UNSIGNED);
	free(info);
	dkim_keyring_free(kr);
}
END_TEST

/* ---- the spool's room for the prepend (DKIM-Signature fields) ---- */

static void
collect(struct envelope *e, void *arg)
{
	*(struct envelope **)arg = e;
}

static char *
read_fd(int fd)
{
	char *buf = xmalloc(1 << 20);
	size_t len = 0;
	ssize_t n;

	while ((n = read(fd, buf + len, (1 << 20) - 1 - len)) > 0)
		len += (size_t)n;
	buf[len] = '\0';
	close(fd);
	return buf;
}

static struct envelope *
new_env(void)
{
	struct envelope *e = envelope_new();

	e->sender = xstrdup("a@example.org");
	e->client_addr = xstrdup("192.0.2.1");
	e->helo = xstrdup("client.example");
	e->arrival = 1767225600;
	envelope_add_rcpt(e, "b@example.net");
	return e;
}

START_TEST(spool_prepend_roundtrip)
{
	char dir[128];
	struct spool *sp;
	struct spool_writer *w;
	struct envelope *e = new_env(), *back = NULL;
	const char *content = "Received: x\r\nFrom: a@example.org\r\n\r\nbody\r\n";
	const char *sig = "DKIM-Signature: v=1; a=ed25519-sha256;\r\n\tb=abc\r\n";
	char *got;

	snprintf(dir, sizeof(dir), "%s/spool", tmpdir);
	ck_assert_ptr_nonnull(sp = spool_open(dir));
	ck_assert_ptr_nonnull(w = spool_writer_begin_reserve(sp, e, 2000));
	ck_assert_int_eq(spool_writer_write(w, content, strlen(content)), 0);
	e->prepend = xstrdup(sig);
	ck_assert_int_eq(spool_writer_commit(w, e), 0);
	ck_assert_uint_eq(e->content_size, strlen(content) + strlen(sig));
	/* The live envelope and the recovered one both carry it; the content is unchanged. */
	got = read_fd(spool_open_content(sp, e));
	ck_assert_str_eq(got, content);
	free(got);
	ck_assert_int_eq(spool_recover(sp, collect, &back), 1);
	ck_assert_ptr_nonnull(back);
	ck_assert_str_eq(back->prepend, sig);
	ck_assert_str_eq(back->id, e->id);
	ck_assert_uint_eq(back->content_size, e->content_size);
	got = read_fd(spool_open_content(sp, back));
	ck_assert_str_eq(got, content);
	free(got);
	ck_assert_int_eq(spool_remove(sp, e->id), 0);
	envelope_free(back);
	envelope_free(e);

	/* Reserved but left unsigned: no prepend, same content. */
	e = new_env();
	back = NULL;
	ck_assert_ptr_nonnull(w = spool_writer_begin_reserve(sp, e, 2000));
	ck_assert_int_eq(spool_writer_write(w, content, strlen(content)), 0);
	ck_assert_int_eq(spool_writer_commit(w, e), 0);
	ck_assert_int_eq(spool_recover(sp, collect, &back), 1);
	ck_assert_ptr_null(back->prepend);
	got = read_fd(spool_open_content(sp, back));
	ck_assert_str_eq(got, content);
	free(got);
	ck_assert_int_eq(spool_remove(sp, e->id), 0);
	envelope_free(back);
	envelope_free(e);

	/* A prepend larger than the room: refused, nothing queued. */
	e = new_env();
	back = NULL;
	ck_assert_ptr_nonnull(w = spool_writer_begin_reserve(sp, e, 10));
	ck_assert_int_eq(spool_writer_write(w, content, strlen(content)), 0);
	e->prepend = xstrdup(sig);
	ck_assert_int_eq(spool_writer_commit(w, e), -1);
	ck_assert_int_eq(errno, EOVERFLOW);
	ck_assert_int_eq(spool_recover(sp, collect, &back), 0);
	envelope_free(e);
	spool_close(sp);
}
END_TEST

START_TEST(envelope_prepend_decode)
{
	struct envelope *e = new_env(), *d;
	size_t len, hlen;
	const char *why;
	char *buf, *bad;

	strcpy(e->id, "0123456789ABCDEF");
	e->prepend = xstrdup("X: y\r\n");
	buf = envelope_encode_header_padded(e, 7, &len);
	ck_assert_ptr_nonnull(strstr(buf, "prepend WDogeQ0K\n"));
	ck_assert_ptr_nonnull(strstr(buf, "pad        \n\n"));
	d = envelope_decode_header(buf, len, &hlen, &why);
	ck_assert_msg(d != NULL, "%s", why);
	ck_assert_uint_eq(hlen, len);
	ck_assert_str_eq(d->prepend, "X: y\r\n");
	envelope_free(d);
	/* Not base64: the record is malformed. */
	bad = xstrdup(buf);
	memcpy(strstr(bad, "WDogeQ0K"), "WD*geQ0K", 8);
	ck_assert_ptr_null(envelope_decode_header(bad, len, &hlen, &why));
	ck_assert_str_eq(why, "bad prepend");
	free(bad);
	free(buf);
	envelope_free(e);
}
END_TEST

/* ---- configuration ---- */

/* Loads a configuration with the given dkim list; returns it (or NULL and *errors). */
static struct conf *
conf_with(const char *dkim, char **errors)
{
	char *text = xasprintf("spool_dir = \"%s/spool\";\ndkim = (\n%s\n);\n", tmpdir, dkim);
	struct conf *c;

	*errors = NULL;
	c = conf_load_string(text, "test.conf", tmpdir, false, errors);
	free(text);
	return c;
}

START_TEST(conf_dkim)
{
	char *errors, *text;
	struct conf *c;

	text = xasprintf("{ domain = \"example.org\"; selector = \"s1\"; key_file = \"ed.pem\";"
	    " algorithm = \"ed25519-sha256\"; },\n"
	    "{ domain = \"example.org\"; selector = \"r1\"; key_file = \"%s\";"
	    " algorithm = \"rsa-sha256\"; headers = [ \"From\", \"Subject\" ]; }", rsa_file);
	c = conf_with(text, &errors);
	free(text);
	ck_assert_msg(c != NULL, "%s", errors);
	ck_assert_uint_eq(dkim_keyring_count(c->dkim), 2);
	ck_assert_str_eq(dkim_key_file(dkim_keyring_key(c->dkim, 0)), ed_file);
	ck_assert_uint_gt(dkim_keyring_reserve(c->dkim), 1000);
	conf_free(c);

	/* Every problem is reported, each at its line. */
	c = conf_with("{ domain = \"example.org\"; selector = \"s1\"; key_file = \"ed.pem\";"
	    " algorithm = \"ed25519-sha256\"; },\n"
	    "{ domain = \"example.org\"; selector = \"s1\"; key_file = \"ed.pem\";"
	    " algorithm = \"ed25519-sha256\"; },\n"
	    "{ domain = \"example.org\"; selector = \"s2\"; key_file = \"ed.pem\"; },\n"
	    "{ domain = \"example.org\"; selector = \"s3\"; key_file = \"ed.pem\";"
	    " algorithm = \"rsa-sha1\"; },\n"
	    "{ domain = \"example.org\"; selector = \"s4\"; key_file = \"ed.pem\";"
	    " algorithm = \"ed25519-sha256\"; headers = [ \"Subject\" ]; },\n"
	    "{ domain = \"example.org\"; selector = \"s5\"; key_file = \"ed-open.pem\";"
	    " algorithm = \"ed25519-sha256\"; },\n"
	    "{ domain = \"example.org\"; selector = \"s6\"; key_file = \"ed.pem\";"
	    " algorithm = \"ed25519-sha256\"; colour = \"blue\"; }", &errors);
	ck_assert_ptr_null(c);
	ck_assert_ptr_nonnull(errors);
	ck_assert_msg(strstr(errors, "test.conf:4: dkim: selector s1 of example.org is defined "
	    "twice") != NULL, "%s", errors);
	ck_assert_msg(strstr(errors, "test.conf:5: dkim: domain, selector, key_file and "
	    "algorithm are required") != NULL, "%s", errors);
	ck_assert_msg(strstr(errors, "test.conf:6: dkim.algorithm: \"rsa-sha1\"") != NULL, "%s",
	    errors);
	ck_assert_msg(strstr(errors, "test.conf:7: dkim example.org (s4): headers must name "
	    "From") != NULL, "%s", errors);
	ck_assert_msg(strstr(errors, "test.conf:8: dkim example.org (s5): key_file") != NULL &&
	    strstr(errors, "(mode 0644)") != NULL, "%s", errors);
	ck_assert_msg(strstr(errors, "test.conf:9: unknown key \"colour\" in dkim") != NULL,
	    "%s", errors);
	free(errors);
}
END_TEST

static Suite *
dkim_suite(void)
{
	Suite *s = suite_create("dkim");
	TCase *canon = tcase_create("canon"), *keys = tcase_create("keys");
	TCase *sign = tcase_create("sign"), *spool = tcase_create("spool");

	tcase_add_test(canon, header_rfc6376_example);
	tcase_add_test(canon, header_edges);
	tcase_add_test(canon, body_rfc6376_example);
	tcase_add_test(canon, body_edges);
	tcase_add_test(canon, body_hash_known);
	tcase_add_test(canon, body_hash_long_input);
	tcase_add_test(canon, from_domain);
	suite_add_tcase(s, canon);

	tcase_add_unchecked_fixture(keys, setup_keys, teardown_keys);
	tcase_add_test(keys, key_checks);
	tcase_add_test(keys, key_lookup);
	tcase_add_test(keys, key_txt_record);
	suite_add_tcase(s, keys);

	tcase_add_unchecked_fixture(sign, setup_keys, teardown_keys);
	tcase_set_timeout(sign, 60);
	tcase_add_test(sign, sign_ed25519);
	tcase_add_test(sign, sign_rsa);
	tcase_add_test(sign, sign_both);
	tcase_add_test(sign, sign_parent_domain_and_tags);
	tcase_add_test(sign, sign_custom_headers);
	tcase_add_test(sign, sign_no_body_and_long_lines);
	tcase_add_test(sign, sign_many_instances_capped);
	tcase_add_test(sign, sign_header_limit);
	tcase_add_test(sign, unsigned_cases);
	suite_add_tcase(s, sign);

	tcase_add_unchecked_fixture(spool, setup_keys, teardown_keys);
	tcase_add_test(spool, spool_prepend_roundtrip);
	tcase_add_test(spool, envelope_prepend_decode);
	tcase_add_test(spool, conf_dkim);
	suite_add_tcase(s, spool);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(dkim_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
