/*
 * check_tls: tls.c (policy and version names, contexts, the handshake summary) and
 * smtp_client's STARTTLS and AUTH against a small scripted SMTP server in the same
 * event loop (over a socketpair) that really speaks TLS: a test CA, a server
 * certificate for mx.tls.example and one for another name are made here with the
 * OpenSSL API. Checks what the server received before and after TLS (nothing but EHLO
 * and STARTTLS in plaintext; no mail and no credentials in the clear), the policies'
 * outcomes, AUTH PLAIN and LOGIN, and that no log line holds the password.
 */
#include "config.h"

#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <check.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "conf.h"
#include "envelope.h"
#include "log.h"
#include "netaddr.h"
#include "smtp_client.h"
#include "tls.h"
#include "util.h"

#define GOOD_NAME "mx.tls.example"
#define USER "relayuser"
#define PASS "s3cret-Pa55word"

/* ------------------------------------------------------------------------------------ */
/* Test PKI, made once per process. */

struct pki {
	EVP_PKEY *ca_key, *key;
	X509 *ca, *good, *wrong;
	char ca_file[256];       /* the CA certificate as PEM, for tls_ctx_new */
};

static struct pki pki;

static void
add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX v3;
	X509_EXTENSION *ex;

	X509V3_set_ctx_nodb(&v3);
	X509V3_set_ctx(&v3, issuer, x, NULL, NULL, 0);
	ex = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
	ck_assert_ptr_nonnull(ex);
	ck_assert_int_eq(X509_add_ext(x, ex, -1), 1);
	X509_EXTENSION_free(ex);
}

/* A certificate for key, signed by issuer (NULL: self-signed CA). */
static X509 *
make_cert(EVP_PKEY *key, const char *cn, X509 *issuer, EVP_PKEY *issuer_key, long serial)
{
	X509 *x = X509_new();
	X509_NAME *name;

	ck_assert_ptr_nonnull(x);
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), serial);
	X509_gmtime_adj(X509_getm_notBefore(x), -3600);
	X509_gmtime_adj(X509_getm_notAfter(x), 86400);
	X509_set_pubkey(x, key);
	name = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
	X509_set_issuer_name(x, issuer != NULL ? X509_get_subject_name(issuer) : name);
	if (issuer == NULL) {
		add_ext(x, x, NID_basic_constraints, "critical,CA:TRUE");
		add_ext(x, x, NID_key_usage, "critical,keyCertSign,cRLSign");
	} else {
		char san[128];

		snprintf(san, sizeof(san), "DNS:%s", cn);
		add_ext(x, issuer, NID_basic_constraints, "CA:FALSE");
		add_ext(x, issuer, NID_subject_alt_name, san);
	}
	ck_assert_int_gt(X509_sign(x, issuer_key != NULL ? issuer_key : key, EVP_sha256()), 0);
	return x;
}

static void
pki_setup(void)
{
	const char *tmp = getenv("TMPDIR");
	FILE *fp;
	int fd;

	pki.ca_key = EVP_EC_gen("P-256");
	pki.key = EVP_EC_gen("P-256");
	ck_assert_ptr_nonnull(pki.ca_key);
	ck_assert_ptr_nonnull(pki.key);
	pki.ca = make_cert(pki.ca_key, "dualrelay test CA", NULL, NULL, 1);
	pki.good = make_cert(pki.key, GOOD_NAME, pki.ca, pki.ca_key, 2);
	pki.wrong = make_cert(pki.key, "other.tls.example", pki.ca, pki.ca_key, 3);
	snprintf(pki.ca_file, sizeof(pki.ca_file), "%s/check_tls.XXXXXX",
	    tmp != NULL && *tmp != '\0' ? tmp : "/tmp");
	fd = mkstemp(pki.ca_file);
	ck_assert_int_ge(fd, 0);
	fp = fdopen(fd, "w");
	ck_assert_ptr_nonnull(fp);
	ck_assert_int_eq(PEM_write_X509(fp, pki.ca), 1);
	fclose(fp);
}

static void
pki_teardown(void)
{
	unlink(pki.ca_file);
	X509_free(pki.ca);
	X509_free(pki.good);
	X509_free(pki.wrong);
	EVP_PKEY_free(pki.ca_key);
	EVP_PKEY_free(pki.key);
	memset(&pki, 0, sizeof(pki));
}

/* A server context presenting cert (NULL: no certificate, so every handshake fails). */
static SSL_CTX *
server_ctx(X509 *cert)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

	ck_assert_ptr_nonnull(ctx);
	if (cert != NULL) {
		ck_assert_int_eq(SSL_CTX_use_certificate(ctx, cert), 1);
		ck_assert_int_eq(SSL_CTX_use_PrivateKey(ctx, pki.key), 1);
	}
	return ctx;
}

/* ------------------------------------------------------------------------------------ */
/* A scripted SMTP server that can switch to TLS. */

struct tsrv {
	struct event_base *base;
	struct bufferevent *bev;
	SSL_CTX *ctx;            /* STARTTLS offered when set; owned */
	const char *auth;        /* AUTH mechanisms offered, NULL: none */
	bool auth_only_tls;      /* AUTH offered only over TLS (smtpd_tls_auth_only) */
	bool tls;                /* TLS is up */
	char plain[16384];       /* every line received before TLS (with CR LF) */
	size_t plain_len;
	char secure[65536];      /* every line received over TLS */
	size_t secure_len;
	int login_step;          /* AUTH LOGIN: 1 user due, 2 password due */
	char login_user[128];
	bool in_data;
	int mails;               /* MAIL commands seen (any channel) */
	int plain_mails;         /* ... of which in plaintext */
	bool authed;
	bool quit_over_tls;
	bool closed;
};

static void
tsrv_send(struct tsrv *s, const char *text)
{
	if (s->bev != NULL)
		bufferevent_write(s->bev, text, strlen(text));
}

static void
tsrv_close(struct tsrv *s)
{
	if (s->bev != NULL) {
		bufferevent_free(s->bev);
		s->bev = NULL;
	}
	s->closed = true;
}

static void
tsrv_record(struct tsrv *s, const char *line, size_t len)
{
	char *buf = s->tls ? s->secure : s->plain;
	size_t *used = s->tls ? &s->secure_len : &s->plain_len;
	size_t cap = s->tls ? sizeof(s->secure) : sizeof(s->plain);

	if (*used + len + 3 > cap)
		return;
	memcpy(buf + *used, line, len);
	memcpy(buf + *used + len, "\r\n", 3);
	*used += len + 2;
}

static void tsrv_read_cb(struct bufferevent *, void *);
static void tsrv_event_cb(struct bufferevent *, short, void *);

/* 220 goes out at once in plaintext, then the socket passes to an OpenSSL bufferevent. */
static void
tsrv_starttls(struct tsrv *s)
{
	static const char ready[] = "220 2.0.0 Ready to start TLS\r\n";
	evutil_socket_t fd = bufferevent_getfd(s->bev);

	ck_assert_int_eq(write(fd, ready, sizeof(ready) - 1), (ssize_t)(sizeof(ready) - 1));
	bufferevent_setfd(s->bev, -1);
	bufferevent_free(s->bev);
	s->bev = bufferevent_openssl_socket_new(s->base, fd, SSL_new(s->ctx),
	    BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
	ck_assert_ptr_nonnull(s->bev);
	bufferevent_openssl_set_allow_dirty_shutdown(s->bev, 1);
	bufferevent_setcb(s->bev, tsrv_read_cb, NULL, tsrv_event_cb, s);
	bufferevent_enable(s->bev, EV_READ | EV_WRITE);
	s->tls = true;
}

static bool
tsrv_check_plain(const char *b64)
{
	unsigned char out[256];
	static const char want[] = "\0" USER "\0" PASS;
	int n = EVP_DecodeBlock(out, (const unsigned char *)b64, (int)strlen(b64));
	size_t len = strlen(b64);

	/* EVP_DecodeBlock counts the padding as data bytes. */
	if (n < 0)
		return false;
	if (len >= 1 && b64[len - 1] == '=')
		n--;
	if (len >= 2 && b64[len - 2] == '=')
		n--;
	return (size_t)n == sizeof(want) - 1 && memcmp(out, want, sizeof(want) - 1) == 0;
}

static void
tsrv_decode(const char *b64, char *out, size_t size)
{
	unsigned char buf[256];
	int n = EVP_DecodeBlock(buf, (const unsigned char *)b64, (int)strlen(b64));

	ck_assert_int_ge(n, 0);
	while (n > 0 && buf[n - 1] == '\0')
		n--;
	ck_assert_uint_lt((size_t)n, size);
	memcpy(out, buf, (size_t)n);
	out[n] = '\0';
}

static void
tsrv_command(struct tsrv *s, const char *line)
{
	char buf[512];

	if (s->login_step == 1) {
		tsrv_decode(line, s->login_user, sizeof(s->login_user));
		s->login_step = 2;
		tsrv_send(s, "334 UGFzc3dvcmQ6\r\n");
		return;
	}
	if (s->login_step == 2) {
		tsrv_decode(line, buf, sizeof(buf));
		s->login_step = 0;
		s->authed = strcmp(s->login_user, USER) == 0 && strcmp(buf, PASS) == 0;
		tsrv_send(s, s->authed ? "235 2.7.0 Authentication successful\r\n" :
		    "535 5.7.8 Error: authentication failed: authentication failure\r\n");
		return;
	}
	if (strncmp(line, "EHLO", 4) == 0) {
		snprintf(buf, sizeof(buf), "250-" GOOD_NAME "\r\n250-PIPELINING\r\n%s%s%s%s"
		    "250 8BITMIME\r\n", s->ctx != NULL && !s->tls ? "250-STARTTLS\r\n" : "",
		    s->auth != NULL && (s->tls || !s->auth_only_tls) ? "250-AUTH " : "",
		    s->auth != NULL && (s->tls || !s->auth_only_tls) ? s->auth : "",
		    s->auth != NULL && (s->tls || !s->auth_only_tls) ? "\r\n" : "");
		tsrv_send(s, buf);
	} else if (strcmp(line, "STARTTLS") == 0 && s->ctx != NULL && !s->tls)
		tsrv_starttls(s);
	else if (strncmp(line, "AUTH PLAIN ", 11) == 0) {
		s->authed = tsrv_check_plain(line + 11);
		tsrv_send(s, s->authed ? "235 2.7.0 Authentication successful\r\n" :
		    "535 5.7.8 Error: authentication failed: authentication failure\r\n");
	} else if (strcmp(line, "AUTH LOGIN") == 0) {
		s->login_step = 1;
		tsrv_send(s, "334 VXNlcm5hbWU6\r\n");
	} else if (strncmp(line, "MAIL", 4) == 0) {
		s->mails++;
		if (!s->tls)
			s->plain_mails++;
		tsrv_send(s, "250 2.1.0 Ok\r\n");
	} else if (strncmp(line, "RCPT", 4) == 0)
		tsrv_send(s, "250 2.1.5 Ok\r\n");
	else if (strcmp(line, "DATA") == 0) {
		s->in_data = true;
		tsrv_send(s, "354 End data with <CR><LF>.<CR><LF>\r\n");
	} else if (strcmp(line, "QUIT") == 0) {
		s->quit_over_tls = s->tls;
		tsrv_send(s, "221 2.0.0 Bye\r\n");
		tsrv_close(s);
	} else
		tsrv_send(s, "502 5.5.2 Error: command not recognized\r\n");
}

static void
tsrv_read_cb(struct bufferevent *bev, void *arg)
{
	struct tsrv *s = arg;
	char *line;
	size_t len;

	(void)bev;
	/* s->bev, not bev: STARTTLS replaces it between two lines. */
	while (s->bev != NULL &&
	    (line = evbuffer_readln(bufferevent_get_input(s->bev), &len, EVBUFFER_EOL_CRLF))) {
		tsrv_record(s, line, len);
		if (s->in_data) {
			if (strcmp(line, ".") == 0) {
				s->in_data = false;
				tsrv_send(s, "250 2.0.0 Ok: queued as TLS1\r\n");
			}
		} else
			tsrv_command(s, line);
		free(line);
	}
}

static void
tsrv_event_cb(struct bufferevent *bev, short what, void *arg)
{
	(void)bev;
	if (what & BEV_EVENT_CONNECTED)
		return;
	tsrv_close(arg);
}

/* ------------------------------------------------------------------------------------ */
/* One client session against it. */

struct trun {
	struct event_base *base;
	struct tsrv srv;
	struct envelope *env;
	struct smtp_client *client;
	struct smtp_client_params p;
	struct tls_ctx *tls;
	bool got_result;
	/* copies of the result */
	bool completed;
	enum smtp_client_stage stage;
	int code;
	char dsn[16];
	bool tls_failed;
	struct tls_info info;
	char error_text[1024];
	int rcpt_code;
	/* the log, when captured */
	int log_fd, saved_stderr;
};

static void
trun_cb(struct smtp_client *c, const struct smtp_client_result *r, void *arg)
{
	struct trun *t = arg;

	ck_assert_ptr_eq(c, t->client);
	t->got_result = true;
	t->completed = r->completed;
	t->stage = r->stage;
	t->code = r->reply.code;
	dr_strlcpy(t->dsn, r->dsn, sizeof(t->dsn));
	t->tls_failed = r->tls_failed;
	t->info = r->tls;
	dr_strlcpy(t->error_text, r->error_text != NULL ? r->error_text : "",
	    sizeof(t->error_text));
	t->rcpt_code = r->nrcpts > 0 ? r->rcpts[0].reply.code : 0;
	/* As the delivery does: free at once, so QUIT must already be on its way. */
	smtp_client_free(c);
	t->client = NULL;
}

static void
trun_init(struct trun *t, X509 *server_cert, bool offer_tls, enum tls_policy policy)
{
	char *err = NULL;

	memset(t, 0, sizeof(*t));
	t->log_fd = t->saved_stderr = -1;
	t->base = event_base_new();
	t->srv.base = t->base;
	if (offer_tls)
		t->srv.ctx = server_ctx(server_cert);
	t->env = envelope_new();
	free(t->env->sender);
	t->env->sender = xstrdup("a@example.org");
	envelope_add_rcpt(t->env, "b@example.net");
	t->tls = tls_ctx_new(pki.ca_file, TLS1_2_VERSION, &err);
	ck_assert_msg(t->tls != NULL, "tls_ctx_new: %s", err ? err : "");
	t->p.helo_name = "relay.example.com";
	t->p.peer_name = GOOD_NAME;
	ck_assert_int_eq(netaddr_parse(&t->p.peer, "127.0.0.1", 25), 0);
	t->p.reply_timeout_s = 5;
	t->p.body_timeout_s = 5;
	t->p.tls = t->tls;
	t->p.tls_policy = policy;
}

/* Debug log lines go to a memory file from here on (this test process only). */
static void
trun_capture_log(struct trun *t)
{
	t->log_fd = memfd_create("log", MFD_CLOEXEC);
	ck_assert_int_ge(t->log_fd, 0);
	fflush(stderr);
	t->saved_stderr = dup(STDERR_FILENO);
	ck_assert_int_eq(dup2(t->log_fd, STDERR_FILENO), STDERR_FILENO);
	log_init("check_tls", LOG_TARGET_STDERR, LOG_LEVEL_DEBUG);
}

/* The captured log (malloc'd), stderr restored. */
static char *
trun_log(struct trun *t)
{
	off_t n;
	char *buf;

	fflush(stderr);
	dup2(t->saved_stderr, STDERR_FILENO);
	close(t->saved_stderr);
	t->saved_stderr = -1;
	n = lseek(t->log_fd, 0, SEEK_END);
	ck_assert_int_ge(n, 0);
	buf = xmalloc((size_t)n + 1);
	ck_assert_int_eq(pread(t->log_fd, buf, (size_t)n, 0), n);
	buf[n] = '\0';
	close(t->log_fd);
	t->log_fd = -1;
	return buf;
}

static void
guard_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	*(bool *)arg = true;
}

static void
trun_session(struct trun *t)
{
	static const char content[] = "Subject: tls\r\n\r\nhello over TLS\r\n";
	static const size_t idx[] = { 0 };
	struct timeval tv = { 10, 0 };
	struct event *guard;
	bool expired = false;
	int sv[2], cfd;

	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
	t->srv.bev = bufferevent_socket_new(t->base, sv[1], BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(t->srv.bev, tsrv_read_cb, NULL, tsrv_event_cb, &t->srv);
	bufferevent_enable(t->srv.bev, EV_READ | EV_WRITE);
	tsrv_send(&t->srv, "220 " GOOD_NAME " ESMTP\r\n");
	cfd = memfd_create("content", MFD_CLOEXEC);
	ck_assert_int_ge(cfd, 0);
	ck_assert_int_eq(write(cfd, content, sizeof(content) - 1), (ssize_t)(sizeof(content) - 1));
	ck_assert_int_eq(lseek(cfd, 0, SEEK_SET), 0);
	t->env->content_size = sizeof(content) - 1;
	t->client = smtp_client_start(t->base, sv[0], cfd, &t->p, t->env, idx, 1, trun_cb, t);
	guard = evtimer_new(t->base, guard_cb, &expired);
	evtimer_add(guard, &tv);
	while (!expired && !(t->got_result && t->srv.closed))
		event_base_loop(t->base, EVLOOP_ONCE);
	event_free(guard);
	ck_assert_msg(!expired, "session did not end");
}

static void
trun_free(struct trun *t)
{
	if (t->saved_stderr != -1)
		free(trun_log(t));
	smtp_client_free(t->client);
	tsrv_close(&t->srv);
	SSL_CTX_free(t->srv.ctx);
	tls_ctx_free(t->tls);
	envelope_free(t->env);
	event_base_free(t->base);
}

/* ------------------------------------------------------------------------------------ */
/* tls.c alone */

START_TEST(test_names)
{
	enum tls_policy p;
	int v;

	ck_assert_int_eq(tls_policy_parse("none", &p), 0);
	ck_assert_int_eq(p, TLS_POLICY_NONE);
	ck_assert_int_eq(tls_policy_parse("may", &p), 0);
	ck_assert_int_eq(p, TLS_POLICY_MAY);
	ck_assert_int_eq(tls_policy_parse("encrypt", &p), 0);
	ck_assert_int_eq(p, TLS_POLICY_ENCRYPT);
	ck_assert_int_eq(tls_policy_parse("verify", &p), 0);
	ck_assert_int_eq(p, TLS_POLICY_VERIFY);
	ck_assert_int_eq(tls_policy_parse("secure", &p), -1);
	ck_assert_int_eq(tls_policy_parse("MAY", &p), -1);
	ck_assert_str_eq(tls_policy_name(TLS_POLICY_VERIFY), "verify");
	ck_assert_str_eq(tls_policy_name(TLS_POLICY_NONE), "none");
	ck_assert_int_eq(tls_version_parse("TLSv1.2", &v), 0);
	ck_assert_int_eq(v, TLS1_2_VERSION);
	ck_assert_int_eq(tls_version_parse("TLSv1.3", &v), 0);
	ck_assert_int_eq(v, TLS1_3_VERSION);
	ck_assert_int_eq(tls_version_parse("TLSv1", &v), 0);
	ck_assert_int_eq(v, TLS1_VERSION);
	ck_assert_int_eq(tls_version_parse("SSLv3", &v), -1);
	ck_assert_int_eq(tls_version_parse("1.2", &v), -1);
}
END_TEST

START_TEST(test_format)
{
	struct tls_info i;
	char buf[128];

	memset(&i, 0, sizeof(i));
	tls_info_format(&i, buf, sizeof(buf));
	ck_assert_str_eq(buf, "none");
	i.active = true;
	dr_strlcpy(i.version, "TLSv1.3", sizeof(i.version));
	dr_strlcpy(i.cipher, "TLS_AES_256_GCM_SHA384", sizeof(i.cipher));
	tls_info_format(&i, buf, sizeof(buf));
	ck_assert_str_eq(buf, "TLSv1.3:TLS_AES_256_GCM_SHA384:unverified");
	i.verified = true;
	tls_info_format(&i, buf, sizeof(buf));
	ck_assert_str_eq(buf, "TLSv1.3:TLS_AES_256_GCM_SHA384:verified");
}
END_TEST

START_TEST(test_ctx_errors)
{
	char *err = NULL;
	struct tls_ctx *t = tls_ctx_new("/nonexistent/ca.pem", TLS1_2_VERSION, &err);

	ck_assert_ptr_null(t);
	ck_assert_ptr_nonnull(err);
	ck_assert_msg(strstr(err, "/nonexistent/ca.pem") != NULL, "%s", err);
	free(err);
	err = NULL;
	t = tls_ctx_new(NULL, TLS1_3_VERSION, &err);   /* the system store */
	ck_assert_ptr_nonnull(t);
	tls_ctx_free(t);
	tls_ctx_free(NULL);
}
END_TEST

/* ------------------------------------------------------------------------------------ */
/* STARTTLS */

START_TEST(test_may_tls_verified)
{
	struct trun t;

	trun_init(&t, pki.good, true, TLS_POLICY_MAY);
	trun_session(&t);
	ck_assert(t.completed);
	ck_assert_int_eq(t.rcpt_code, 250);
	ck_assert(t.info.active);
	ck_assert(t.info.verified);
	ck_assert_str_eq(t.info.version, "TLSv1.3");
	ck_assert_msg(strlen(t.info.cipher) > 0, "no cipher");
	/* Plaintext: the greeting's EHLO and STARTTLS, nothing else. */
	ck_assert_str_eq(t.srv.plain, "EHLO relay.example.com\r\nSTARTTLS\r\n");
	/* RFC 3207 4.2: EHLO again over TLS, then the mail, then QUIT. */
	ck_assert_msg(strncmp(t.srv.secure, "EHLO relay.example.com\r\nMAIL FROM:<a@example.org>",
	    49) == 0, "%s", t.srv.secure);
	ck_assert_int_eq(t.srv.mails, 1);
	ck_assert_int_eq(t.srv.plain_mails, 0);
	ck_assert_msg(strstr(t.srv.secure, "hello over TLS\r\n.\r\n") != NULL, "%s", t.srv.secure);
	ck_assert(t.srv.quit_over_tls);
	trun_free(&t);
}
END_TEST

START_TEST(test_may_wrong_name_unverified_still_sent)
{
	struct trun t;

	trun_init(&t, pki.wrong, true, TLS_POLICY_MAY);
	trun_session(&t);
	ck_assert(t.completed);
	ck_assert(t.info.active);
	ck_assert(!t.info.verified);
	ck_assert_int_eq(t.srv.mails, 1);
	ck_assert_int_eq(t.srv.plain_mails, 0);
	trun_free(&t);
}
END_TEST

START_TEST(test_may_no_starttls_plaintext)
{
	struct trun t;

	trun_init(&t, NULL, false, TLS_POLICY_MAY);
	trun_session(&t);
	ck_assert(t.completed);
	ck_assert(!t.info.active);
	ck_assert_int_eq(t.srv.plain_mails, 1);
	ck_assert_ptr_null(strstr(t.srv.plain, "STARTTLS"));
	trun_free(&t);
}
END_TEST

START_TEST(test_none_ignores_starttls)
{
	struct trun t;

	trun_init(&t, pki.good, true, TLS_POLICY_NONE);
	trun_session(&t);
	ck_assert(t.completed);
	ck_assert(!t.info.active);
	ck_assert_ptr_null(strstr(t.srv.plain, "STARTTLS"));
	ck_assert_int_eq(t.srv.plain_mails, 1);
	trun_free(&t);
}
END_TEST

START_TEST(test_verify_ok)
{
	struct trun t;

	trun_init(&t, pki.good, true, TLS_POLICY_VERIFY);
	t.p.tls_name = GOOD_NAME;
	t.p.peer_name = "192.0.2.25-name-for-logs";
	trun_session(&t);
	ck_assert(t.completed);
	ck_assert(t.info.verified);
	ck_assert_int_eq(t.srv.mails, 1);
	ck_assert_int_eq(t.srv.plain_mails, 0);
	trun_free(&t);
}
END_TEST

START_TEST(test_verify_wrong_name)
{
	struct trun t;

	trun_init(&t, pki.wrong, true, TLS_POLICY_VERIFY);
	trun_session(&t);
	ck_assert(!t.completed);
	ck_assert_int_eq(t.stage, SMTP_STAGE_STARTTLS);
	ck_assert_int_eq(t.code, 0);
	ck_assert_str_eq(t.dsn, "4.7.5");
	ck_assert(!t.tls_failed);     /* a refused certificate is not a broken handshake */
	ck_assert(t.info.active);
	ck_assert(!t.info.verified);
	ck_assert_msg(strstr(t.error_text, "server certificate not verified") != NULL &&
	    strstr(t.error_text, "hostname mismatch") != NULL, "%s", t.error_text);
	ck_assert_int_eq(t.srv.mails, 0);
	ck_assert(t.srv.quit_over_tls);
	trun_free(&t);
}
END_TEST

START_TEST(test_verify_untrusted_ca)
{
	struct trun t;
	char *err = NULL;

	trun_init(&t, pki.good, true, TLS_POLICY_VERIFY);
	/* The system store does not know the test CA. */
	tls_ctx_free(t.tls);
	t.tls = t.p.tls = tls_ctx_new(NULL, TLS1_2_VERSION, &err);
	ck_assert_ptr_nonnull(t.tls);
	trun_session(&t);
	ck_assert(!t.completed);
	ck_assert_str_eq(t.dsn, "4.7.5");
	ck_assert_msg(strstr(t.error_text, "local issuer") != NULL, "%s", t.error_text);
	ck_assert_int_eq(t.srv.mails, 0);
	trun_free(&t);
}
END_TEST

START_TEST(test_encrypt_not_offered)
{
	struct trun t;

	trun_init(&t, NULL, false, TLS_POLICY_ENCRYPT);
	trun_session(&t);
	ck_assert(!t.completed);
	ck_assert_int_eq(t.stage, SMTP_STAGE_STARTTLS);
	ck_assert_str_eq(t.dsn, "4.7.4");
	ck_assert_msg(strstr(t.error_text, "TLS is required, but was not offered by host "
	    GOOD_NAME "[127.0.0.1]") != NULL, "%s", t.error_text);
	ck_assert_int_eq(t.srv.mails, 0);
	ck_assert_str_eq(t.srv.plain, "EHLO relay.example.com\r\nQUIT\r\n");
	trun_free(&t);
}
END_TEST

START_TEST(test_encrypt_unverified_ok)
{
	struct trun t;

	trun_init(&t, pki.wrong, true, TLS_POLICY_ENCRYPT);
	trun_session(&t);
	ck_assert(t.completed);
	ck_assert(t.info.active);
	ck_assert(!t.info.verified);
	ck_assert_int_eq(t.srv.plain_mails, 0);
	trun_free(&t);
}
END_TEST

START_TEST(test_handshake_failure)
{
	struct trun t;

	/* A server without a certificate: every handshake ends in an alert. */
	trun_init(&t, NULL, true, TLS_POLICY_MAY);
	trun_session(&t);
	ck_assert(!t.completed);
	ck_assert(t.tls_failed);
	ck_assert_str_eq(t.dsn, "4.7.5");
	ck_assert_int_eq(t.stage, SMTP_STAGE_STARTTLS);
	ck_assert_msg(strstr(t.error_text, "TLS handshake with " GOOD_NAME "[127.0.0.1] failed: ")
	    != NULL, "%s", t.error_text);
	ck_assert_int_eq(t.srv.mails, 0);
	trun_free(&t);
}
END_TEST

/* ------------------------------------------------------------------------------------ */
/* AUTH */

static void
assert_no_secret(const char *log)
{
	static const char plain[] = "\0" USER "\0" PASS;
	unsigned char b64[256];

	ck_assert_ptr_null(strstr(log, PASS));
	EVP_EncodeBlock(b64, (const unsigned char *)plain, (int)sizeof(plain) - 1);
	ck_assert_ptr_null(strstr(log, (char *)b64));
	EVP_EncodeBlock(b64, (const unsigned char *)PASS, (int)strlen(PASS));
	ck_assert_ptr_null(strstr(log, (char *)b64));
}

START_TEST(test_auth_plain_over_tls)
{
	struct trun t;
	char *log;

	trun_init(&t, pki.good, true, TLS_POLICY_MAY);
	t.srv.auth = "LOGIN PLAIN";
	t.srv.auth_only_tls = true;
	t.p.auth_user = USER;
	t.p.auth_pass = PASS;
	trun_capture_log(&t);
	trun_session(&t);
	log = trun_log(&t);
	ck_assert_msg(t.completed, "%s", t.error_text);
	ck_assert(t.srv.authed);
	ck_assert_ptr_nonnull(strstr(t.srv.secure, "AUTH PLAIN "));
	ck_assert_ptr_null(strstr(t.srv.plain, "AUTH"));
	ck_assert_int_eq(t.srv.mails, 1);
	ck_assert_ptr_nonnull(strstr(log, "AUTH PLAIN (credentials not logged)"));
	assert_no_secret(log);
	free(log);
	trun_free(&t);
}
END_TEST

START_TEST(test_auth_login)
{
	struct trun t;
	char *log;

	trun_init(&t, pki.good, true, TLS_POLICY_ENCRYPT);
	t.srv.auth = "LOGIN";
	t.p.auth_user = USER;
	t.p.auth_pass = PASS;
	trun_capture_log(&t);
	trun_session(&t);
	log = trun_log(&t);
	ck_assert_msg(t.completed, "%s", t.error_text);
	ck_assert(t.srv.authed);
	ck_assert_ptr_nonnull(strstr(t.srv.secure, "AUTH LOGIN\r\n"));
	assert_no_secret(log);
	free(log);
	trun_free(&t);
}
END_TEST

START_TEST(test_auth_535)
{
	struct trun t;
	char *log;

	trun_init(&t, pki.good, true, TLS_POLICY_MAY);
	t.srv.auth = "PLAIN";
	t.p.auth_user = USER;
	t.p.auth_pass = "wrong-" PASS;
	trun_capture_log(&t);
	trun_session(&t);
	log = trun_log(&t);
	ck_assert(!t.completed);
	ck_assert_int_eq(t.stage, SMTP_STAGE_AUTH);
	ck_assert_int_eq(t.code, 535);
	ck_assert_msg(strstr(t.error_text, "said: 535 5.7.8 Error: authentication failed") != NULL
	    && strstr(t.error_text, "(in reply to AUTH command)") != NULL, "%s", t.error_text);
	ck_assert_ptr_null(strstr(t.error_text, PASS));
	ck_assert_int_eq(t.srv.mails, 0);
	assert_no_secret(log);
	free(log);
	trun_free(&t);
}
END_TEST

START_TEST(test_auth_refused_without_tls)
{
	struct trun t;

	trun_init(&t, NULL, false, TLS_POLICY_MAY);
	t.srv.auth = "PLAIN LOGIN";
	t.p.auth_user = USER;
	t.p.auth_pass = PASS;
	trun_session(&t);
	ck_assert(!t.completed);
	ck_assert_int_eq(t.stage, SMTP_STAGE_AUTH);
	ck_assert_str_eq(t.dsn, "4.7.0");
	ck_assert_msg(strstr(t.error_text, "without TLS") != NULL, "%s", t.error_text);
	ck_assert_ptr_null(strstr(t.srv.plain, "AUTH"));
	ck_assert_int_eq(t.srv.mails, 0);
	trun_free(&t);
}
END_TEST

START_TEST(test_auth_plaintext_allowed)
{
	struct trun t;

	trun_init(&t, NULL, false, TLS_POLICY_NONE);
	t.srv.auth = "PLAIN";
	t.p.auth_user = USER;
	t.p.auth_pass = PASS;
	t.p.auth_allow_plaintext = true;
	trun_session(&t);
	ck_assert_msg(t.completed, "%s", t.error_text);
	ck_assert(t.srv.authed);
	ck_assert_int_eq(t.srv.plain_mails, 1);
	trun_free(&t);
}
END_TEST

START_TEST(test_auth_no_common_mechanism)
{
	struct trun t;

	trun_init(&t, pki.good, true, TLS_POLICY_MAY);
	t.srv.auth = "CRAM-MD5 SCRAM-SHA-256";
	t.p.auth_user = USER;
	t.p.auth_pass = PASS;
	trun_session(&t);
	ck_assert(!t.completed);
	ck_assert_str_eq(t.dsn, "4.7.0");
	ck_assert_msg(strstr(t.error_text, "CRAM-MD5 SCRAM-SHA-256") != NULL, "%s", t.error_text);
	ck_assert_int_eq(t.srv.mails, 0);
	trun_free(&t);
}
END_TEST

/* ------------------------------------------------------------------------------------ */
/* The transport keys in conf.c */

static char conf_dir[256];

static void
conf_dir_setup(void)
{
	const char *tmp = getenv("TMPDIR");

	snprintf(conf_dir, sizeof(conf_dir), "%s/check_tls_conf.XXXXXX",
	    tmp != NULL && *tmp != '\0' ? tmp : "/tmp");
	ck_assert_ptr_nonnull(mkdtemp(conf_dir));
}

static void
conf_dir_teardown(void)
{
	static const char *files[] = { "ca.pem", "one", "two", "open", "three", "empty" };
	char path[512];

	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", conf_dir, files[i]);
		unlink(path);
	}
	rmdir(conf_dir);
}

static void
write_file(const char *name, const char *text, mode_t mode)
{
	char path[512];
	FILE *fp;

	snprintf(path, sizeof(path), "%s/%s", conf_dir, name);
	fp = fopen(path, "w");
	ck_assert_ptr_nonnull(fp);
	fputs(text, fp);
	fclose(fp);
	ck_assert_int_eq(chmod(path, mode), 0);
}

/* Loads text with conf_dir as the base; errors (malloc'd or NULL) into *errors. */
static struct conf *
load(const char *text, char **errors)
{
	*errors = NULL;
	return conf_load_string(text, "test.conf", conf_dir, false, errors);
}

START_TEST(test_conf_defaults)
{
	char *errors;
	struct conf *c = load("", &errors);

	ck_assert_msg(c != NULL, "%s", errors ? errors : "");
	ck_assert_int_eq(c->transports[0].tls, TLS_POLICY_MAY);
	ck_assert_int_eq(c->transports[0].tls_min_version, TLS1_2_VERSION);
	ck_assert_ptr_nonnull(c->transports[0].tls_ctx);
	ck_assert_ptr_null(c->transports[0].tls_ca_file);
	ck_assert_ptr_null(c->transports[0].auth_user);
	ck_assert(!c->transports[0].auth_allow_plaintext);
	ck_assert_ptr_null(c->warnings);
	conf_free(c);
}
END_TEST

START_TEST(test_conf_tls_keys)
{
	char *errors, *want;
	struct conf *c;
	const struct conf_transport *t, *n;
	FILE *fp;
	char path[512];

	snprintf(path, sizeof(path), "%s/ca.pem", conf_dir);
	fp = fopen(path, "w");
	ck_assert_ptr_nonnull(fp);
	ck_assert_int_eq(PEM_write_X509(fp, pki.ca), 1);
	fclose(fp);
	c = load("transports = { strict = { tls = \"verify\"; tls_ca_file = \"ca.pem\";\n"
	    "tls_min_version = \"TLSv1.3\"; }; plain = { tls = \"none\"; };\n"
	    "enc = { tls = \"encrypt\"; }; };", &errors);
	ck_assert_msg(c != NULL, "%s", errors ? errors : "");
	t = conf_transport_find(c, "strict");
	n = conf_transport_find(c, "plain");
	ck_assert_ptr_nonnull(t);
	ck_assert_ptr_nonnull(n);
	ck_assert_int_eq(t->tls, TLS_POLICY_VERIFY);
	ck_assert_int_eq(t->tls_min_version, TLS1_3_VERSION);
	want = xasprintf("%s/ca.pem", conf_dir);
	/* conf_dir may hold a symbolic link (TMPDIR); compare the last components. */
	ck_assert_ptr_nonnull(t->tls_ca_file);
	ck_assert_int_eq(t->tls_ca_file[0], '/');
	ck_assert_str_eq(strrchr(t->tls_ca_file, '/'), strrchr(want, '/'));
	free(want);
	ck_assert_ptr_nonnull(t->tls_ctx);
	ck_assert_int_eq(n->tls, TLS_POLICY_NONE);
	ck_assert_ptr_null(n->tls_ctx);
	ck_assert_int_eq(conf_transport_find(c, "enc")->tls, TLS_POLICY_ENCRYPT);
	conf_free(c);
}
END_TEST

START_TEST(test_conf_tls_errors)
{
	char *errors;
	struct conf *c = load("transports = { a = { tls = \"sometimes\"; };\n"
	    "b = { tls_min_version = \"TLSv2\"; };\n"
	    "c = { tls = \"verify\"; tls_ca_file = \"missing.pem\"; }; };", &errors);

	ck_assert_ptr_null(c);
	ck_assert_ptr_nonnull(errors);
	ck_assert_msg(strstr(errors, "test.conf:1: transport a: tls: unknown TLS policy "
	    "\"sometimes\" (none, may, encrypt or verify)") != NULL, "%s", errors);
	ck_assert_msg(strstr(errors, "test.conf:2: transport b: tls_min_version: unknown version "
	    "\"TLSv2\"") != NULL, "%s", errors);
	ck_assert_msg(strstr(errors, "test.conf:3: transport c: cannot load CA certificates from ")
	    != NULL && strstr(errors, "missing.pem") != NULL, "%s", errors);
	free(errors);
}
END_TEST

START_TEST(test_conf_auth_file)
{
	char *errors;
	struct conf *c;
	const struct conf_transport *t;

	write_file("one", "relayuser  pass word with spaces\n", 0600);
	write_file("two", "relayuser\r\nsecret two\r\n", 0600);
	write_file("open", "u p\n", 0644);
	c = load("transports = {\n"
	    "one = { relay = \"[smart.example]\"; auth_file = \"one\"; };\n"
	    "two = { relay = \"smart.example:587\"; auth_file = \"two\";\n"
	    "        auth_allow_plaintext = true; };\n"
	    "open = { relay = \"[192.0.2.9]\"; auth_file = \"open\"; }; };", &errors);
	ck_assert_msg(c != NULL, "%s", errors ? errors : "");
	t = conf_transport_find(c, "one");
	ck_assert_str_eq(t->auth_user, "relayuser");
	ck_assert_str_eq(t->auth_pass, "pass word with spaces");
	ck_assert(!t->auth_allow_plaintext);
	t = conf_transport_find(c, "two");
	ck_assert_str_eq(t->auth_user, "relayuser");
	ck_assert_str_eq(t->auth_pass, "secret two");
	ck_assert(t->auth_allow_plaintext);
	t = conf_transport_find(c, "open");
	ck_assert_str_eq(t->auth_user, "u");
	ck_assert_str_eq(t->auth_pass, "p");
	/* Only the 0644 file is worth a warning, located at its setting. */
	ck_assert_ptr_nonnull(c->warnings);
	ck_assert_msg(strncmp(c->warnings, "test.conf:5: transport open: auth_file ", 39) == 0 &&
	    strstr(c->warnings, "/open is readable by everyone (mode 0644)") != NULL,
	    "%s", c->warnings);
	ck_assert_ptr_null(strstr(c->warnings, "transport one"));
	ck_assert_ptr_null(strstr(c->warnings, "transport two"));
	ck_assert_ptr_null(strchr(strchr(c->warnings, '\n') + 1, '\n'));
	conf_free(c);
}
END_TEST

START_TEST(test_conf_auth_file_errors)
{
	char *errors;
	struct conf *c;

	write_file("three", "user\nhunter2\nextra\n", 0600);
	write_file("empty", "\n", 0600);
	write_file("one", "relayuser secret\n", 0600);
	c = load("transports = {\n"
	    "a = { relay = \"[smart.example]\"; auth_file = \"three\"; };\n"
	    "b = { relay = \"[smart.example]\"; auth_file = \"empty\"; };\n"
	    "c = { relay = \"[smart.example]\"; auth_file = \"nothere\"; };\n"
	    "d = { auth_file = \"one\"; }; };", &errors);
	ck_assert_ptr_null(c);
	ck_assert_ptr_nonnull(errors);
	ck_assert_msg(strstr(errors, "test.conf:2: transport a: auth_file ") != NULL &&
	    strstr(errors, "/three: expected \"USER PASSWORD\" on one line, or the user name and "
	    "the password on two lines") != NULL, "%s", errors);
	ck_assert_msg(strstr(errors, "test.conf:3: transport b: auth_file ") != NULL, "%s", errors);
	ck_assert_msg(strstr(errors, "test.conf:4: transport c: auth_file: cannot read ") != NULL &&
	    strstr(errors, "No such file or directory") != NULL, "%s", errors);
	ck_assert_msg(strstr(errors, "test.conf:5: transport d: auth_file needs relay") != NULL,
	    "%s", errors);
	/* The password is never part of an error message. */
	ck_assert_ptr_null(strstr(errors, "secret"));
	ck_assert_ptr_null(strstr(errors, "hunter2"));
	free(errors);
}
END_TEST

static Suite *
tls_suite(void)
{
	Suite *s = suite_create("tls");
	TCase *tu = tcase_create("tls");
	TCase *ts = tcase_create("starttls");
	TCase *ta = tcase_create("auth");
	TCase *tc = tcase_create("conf");

	tcase_add_test(tu, test_names);
	tcase_add_test(tu, test_format);
	tcase_add_test(tu, test_ctx_errors);
	suite_add_tcase(s, tu);

	tcase_add_unchecked_fixture(ts, pki_setup, pki_teardown);
	tcase_add_test(ts, test_may_tls_verified);
	tcase_add_test(ts, test_may_wrong_name_unverified_still_sent);
	tcase_add_test(ts, test_may_no_starttls_plaintext);
	tcase_add_test(ts, test_none_ignores_starttls);
	tcase_add_test(ts, test_verify_ok);
	tcase_add_test(ts, test_verify_wrong_name);
	tcase_add_test(ts, test_verify_untrusted_ca);
	tcase_add_test(ts, test_encrypt_not_offered);
	tcase_add_test(ts, test_encrypt_unverified_ok);
	tcase_add_test(ts, test_handshake_failure);
	suite_add_tcase(s, ts);

	tcase_add_unchecked_fixture(ta, pki_setup, pki_teardown);
	tcase_add_test(ta, test_auth_plain_over_tls);
	tcase_add_test(ta, test_auth_login);
	tcase_add_test(ta, test_auth_535);
	tcase_add_test(ta, test_auth_refused_without_tls);
	tcase_add_test(ta, test_auth_plaintext_allowed);
	tcase_add_test(ta, test_auth_no_common_mechanism);
	suite_add_tcase(s, ta);

	tcase_add_unchecked_fixture(tc, pki_setup, pki_teardown);
	tcase_add_checked_fixture(tc, conf_dir_setup, conf_dir_teardown);
	tcase_add_test(tc, test_conf_defaults);
	tcase_add_test(tc, test_conf_tls_keys);
	tcase_add_test(tc, test_conf_tls_errors);
	tcase_add_test(tc, test_conf_auth_file);
	tcase_add_test(tc, test_conf_auth_file_errors);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(tls_suite());
	int failed;

	signal(SIGPIPE, SIG_IGN);
	log_init("check_tls", LOG_TARGET_STDERR, LOG_LEVEL_WARN);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
