/*
 * tls: OpenSSL client contexts and per-connection SSL objects for outbound STARTTLS,
 * and the server context of inbound TLS (see tls.h). Owns the SSL_CTX of each transport
 * and of the listeners, the mapping between policy and
 * version names and their values, and the wording of TLS outcomes in logs. No I/O:
 * the handshakes run in smtp_client.c and smtp_server.c on libevent OpenSSL bufferevents.
 */
#include "config.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "log.h"
#include "netaddr.h"
#include "tls.h"
#include "util.h"

struct tls_ctx {
	SSL_CTX *ctx;            /* owned (one reference; each SSL holds its own) */
};

static const struct {
	const char *name;
	enum tls_policy policy;
} tls_policies[] = {
	{ "none", TLS_POLICY_NONE },
	{ "may", TLS_POLICY_MAY },
	{ "encrypt", TLS_POLICY_ENCRYPT },
	{ "verify", TLS_POLICY_VERIFY },
};

static const struct {
	const char *name;
	int version;
} tls_versions[] = {
	{ "TLSv1", TLS1_VERSION },
	{ "TLSv1.1", TLS1_1_VERSION },
	{ "TLSv1.2", TLS1_2_VERSION },
	{ "TLSv1.3", TLS1_3_VERSION },
};

const char *
tls_policy_name(enum tls_policy p)
{
	for (size_t i = 0; i < sizeof(tls_policies) / sizeof(tls_policies[0]); i++)
		if (tls_policies[i].policy == p)
			return tls_policies[i].name;
	return "unknown";
}

int
tls_policy_parse(const char *name, enum tls_policy *out)
{
	for (size_t i = 0; i < sizeof(tls_policies) / sizeof(tls_policies[0]); i++)
		if (strcmp(tls_policies[i].name, name) == 0) {
			*out = tls_policies[i].policy;
			return 0;
		}
	return -1;
}

int
tls_version_parse(const char *name, int *out)
{
	for (size_t i = 0; i < sizeof(tls_versions) / sizeof(tls_versions[0]); i++)
		if (strcmp(tls_versions[i].name, name) == 0) {
			*out = tls_versions[i].version;
			return 0;
		}
	return -1;
}

/* The oldest error on OpenSSL's queue as text (and the queue emptied). */
static void
tls_queue_text(char *buf, size_t size)
{
	unsigned long e = ERR_get_error();

	if (e == 0)
		dr_strlcpy(buf, "unknown error", size);
	else
		ERR_error_string_n(e, buf, size);
	ERR_clear_error();
}

/*
 * What both sides share: the lowest version; no renegotiation, no compression (CRIME),
 * no session tickets (each SMTP connection is one long session, and there is no session
 * cache to resume from); verification recorded, not enforced (see tls.h). NULL + *err.
 */
static SSL_CTX *
tls_ctx_base(const SSL_METHOD *method, int min_version, char **err)
{
	SSL_CTX *ctx;
	char why[256];

	ERR_clear_error();
	if ((ctx = SSL_CTX_new(method)) == NULL) {
		tls_queue_text(why, sizeof(why));
		*err = xasprintf("cannot create a TLS context: %s", why);
		return NULL;
	}
	if (SSL_CTX_set_min_proto_version(ctx, min_version) != 1) {
		tls_queue_text(why, sizeof(why));
		*err = xasprintf("cannot set the lowest TLS version: %s", why);
		SSL_CTX_free(ctx);
		return NULL;
	}
	SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
	    SSL_OP_NO_TICKET);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	return ctx;
}

static struct tls_ctx *
tls_ctx_wrap(SSL_CTX *ctx)
{
	struct tls_ctx *t = xcalloc(1, sizeof(*t));

	t->ctx = ctx;
	return t;
}

struct tls_ctx *
tls_ctx_new(const char *ca_file, int min_version, char **err)
{
	SSL_CTX *ctx;
	char why[256];

	if ((ctx = tls_ctx_base(TLS_client_method(), min_version, err)) == NULL)
		return NULL;
	if (ca_file != NULL) {
		if (SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1) {
			tls_queue_text(why, sizeof(why));
			*err = xasprintf("cannot load CA certificates from %s: %s", ca_file, why);
			SSL_CTX_free(ctx);
			return NULL;
		}
	} else if (SSL_CTX_set_default_verify_dir(ctx) != 1) {
		/*
		 * The system store as a hashed directory (/etc/ssl/certs, or SSL_CERT_DIR),
		 * read certificate by certificate when a chain needs one: loading the whole
		 * bundle file eagerly, as SSL_CTX_set_default_verify_paths does, costs about
		 * 4 MiB of memory per transport. No system store: nothing verifies, which
		 * only "verify" cares about.
		 */
		tls_queue_text(why, sizeof(why));
		log_warn("tls: cannot load the default CA store: %s", why);
	}
	return tls_ctx_wrap(ctx);
}

struct tls_ctx *
tls_server_ctx_new(const char *cert_file, const char *key_file, char **err)
{
	SSL_CTX *ctx;
	char why[256];

	if ((ctx = tls_ctx_base(TLS_server_method(), TLS1_2_VERSION, err)) == NULL)
		return NULL;
	if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
		tls_queue_text(why, sizeof(why));
		*err = xasprintf("cannot load the certificate from %s: %s", cert_file, why);
		goto fail;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1) {
		/* OpenSSL compares the key with the certificate already while loading it. */
		bool mismatch = ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH;

		tls_queue_text(why, sizeof(why));
		if (mismatch)
			*err = xasprintf("the private key in %s does not match the certificate in "
			    "%s", key_file, cert_file);
		else
			*err = xasprintf("cannot load the private key from %s: %s", key_file, why);
		goto fail;
	}
	if (SSL_CTX_check_private_key(ctx) != 1) {
		tls_queue_text(why, sizeof(why));
		*err = xasprintf("the private key in %s does not match the certificate in %s: %s",
		    key_file, cert_file, why);
		goto fail;
	}
	/* No client certificates (SSL_VERIFY_NONE above), no session cache. */
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE);
	return tls_ctx_wrap(ctx);
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

SSL *
tls_ssl_server_new(struct tls_ctx *t)
{
	SSL *ssl = SSL_new(t->ctx);

	if (ssl == NULL) {
		log_error("tls: cannot allocate an SSL object");
		abort();
	}
	return ssl;
}

void
tls_ctx_free(struct tls_ctx *t)
{
	if (t == NULL)
		return;
	SSL_CTX_free(t->ctx);
	free(t);
}

SSL *
tls_ssl_new(struct tls_ctx *t, const char *name)
{
	struct netaddr a;
	char *host = xstrdup(name != NULL ? name : "");
	size_t len = strlen(host);
	SSL *ssl;

	if (len > 1 && host[len - 1] == '.')
		host[len - 1] = '\0';
	if ((ssl = SSL_new(t->ctx)) == NULL) {
		log_error("tls: cannot allocate an SSL object");
		abort();
	}
	if (*host == '\0') {
		/* Nothing to match: the peer can never be verified. */
	} else if (netaddr_parse(&a, host, 0) == 0) {
		/* RFC 6066 3: no SNI for an address; match it against iPAddress entries. */
		if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host) != 1)
			log_warn("tls: cannot match certificates against address %s", host);
	} else {
		if (SSL_set_tlsext_host_name(ssl, host) != 1)
			log_warn("tls: cannot send SNI %s", host);
		SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
		if (SSL_set1_host(ssl, host) != 1)
			log_warn("tls: cannot match certificates against %s", host);
	}
	ERR_clear_error();
	free(host);
	return ssl;
}

void
tls_info_get(SSL *ssl, struct tls_info *out)
{
	const SSL_CIPHER *cipher = SSL_get_current_cipher(ssl);
	long vr;

	memset(out, 0, sizeof(*out));
	out->active = true;
	dr_strlcpy(out->version, SSL_get_version(ssl), sizeof(out->version));
	dr_strlcpy(out->cipher, cipher != NULL ? SSL_CIPHER_get_name(cipher) : "unknown",
	    sizeof(out->cipher));
	if (cipher != NULL)
		out->bits = SSL_CIPHER_get_bits(cipher, &out->alg_bits);
	/* SSL_get_verify_result says X509_V_OK when there was no certificate at all. */
	if (SSL_get0_peer_certificate(ssl) == NULL) {
		dr_strlcpy(out->verify_error, "no server certificate", sizeof(out->verify_error));
		return;
	}
	vr = SSL_get_verify_result(ssl);
	if (vr == X509_V_OK) {
		out->verified = true;
		return;
	}
	dr_strlcpy(out->verify_error, X509_verify_cert_error_string(vr),
	    sizeof(out->verify_error));
}

void
tls_info_format(const struct tls_info *info, char *buf, size_t size)
{
	if (!info->active) {
		dr_strlcpy(buf, "none", size);
		return;
	}
	snprintf(buf, size, "%s:%s:%s", info->version, info->cipher,
	    info->verified ? "verified" : "unverified");
}

void
tls_error_text(SSL *ssl, const unsigned long *errs, size_t nerrs, char *buf, size_t size)
{
	char one[256];
	size_t used = 0;
	long vr;

	buf[0] = '\0';
	for (size_t i = 0; i < nerrs && used + 3 < size; i++) {
		const char *reason;

		/* libevent adds SSL_get_error()'s small code to the queue: not an error code. */
		if (ERR_GET_LIB(errs[i]) == 0)
			continue;
		reason = ERR_reason_error_string(errs[i]);
		if (reason == NULL) {
			ERR_error_string_n(errs[i], one, sizeof(one));
			reason = one;
		}
		used += (size_t)snprintf(buf + used, size - used, "%s%s", used ? "; " : "",
		    reason);
	}
	if (used >= size)
		return;
	if (ssl != NULL && SSL_get0_peer_certificate(ssl) != NULL &&
	    (vr = SSL_get_verify_result(ssl)) != X509_V_OK)
		snprintf(buf + used, size - used, "%s%s", used ? ": " : "",
		    X509_verify_cert_error_string(vr));
	if (buf[0] == '\0')
		dr_strlcpy(buf, "connection closed", size);
}
