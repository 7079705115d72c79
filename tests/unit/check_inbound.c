/*
 * check_inbound: unit tests for the inbound TLS/AUTH pieces that need no network:
 * users_file parsing and crypt verification (src/users.c), the password check thread
 * (src/auth_verify.c), AUTH argument and response
 * decoding and the relay-trick check (src/smtp_proto.c), and the configuration keys
 * tls_cert, tls_key, listen tls and users_file (src/conf.c), with a certificate and two
 * keys made for these tests only.
 */
#include "config.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "auth_verify.h"
#include "conf.h"
#include "smtp_proto.h"
#include "users.h"
#include "util.h"

/* mkpasswd -m yescrypt s3cret; openssl passwd -6 hunter2 */
#define HASH_Y "$y$j9T$A6x0Hxn9xXx.oWReUgxTj/$O3sX8Z6IQ9ev4udQYtz0qDmfnYKXJ3bRr1a6XG8DJL1"
#define HASH_6 "$6$3wgNfGrxiSRvXxgQ$HBnpSwU1sIhE5PRFYzWOO/6ZzzXg43eC0wCiTffxTu/" \
    "jhCcQq3mQuSo9wuEAGjNJMYwAz4rC8GoPDUv1JVmX4."

/* A self-signed test certificate (CN=relay.test), its key, and a key that is not its. */
static const char cert1[] =
	"-----BEGIN CERTIFICATE-----\n"
	"MIIBgTCCASegAwIBAgIUQH7xgwxEK4TzYOhRCgZYIs16/b0wCgYIKoZIzj0EAwIw\n"
	"FTETMBEGA1UEAwwKcmVsYXkudGVzdDAgFw0yNjEyMDMxNjQ4MjJaGA8yMTI2MTEw\n"
	"OTE2NDgyMlowFTETMBEGA1UEAwwKcmVsYXkudGVzdDBZMBMGByqGSM49AgEGCCqG\n"
	"SM49AwEHA0IABFz2Xk/ycePc5Vdu4vCgOfPp1nPklnnI18ZtGI3IITGYb6pHx2xo\n"
	"V3KTlLGIlSPJtU/3X/zLHjRipzqFzocKqOKjUzBRMB0GA1UdDgQWBBSO0nI+8HtO\n"
	"f/6Y7GcyFKj0GkZlXjAfBgNVHSMEGDAWgBSO0nI+8HtOf/6Y7GcyFKj0GkZlXjAP\n"
	"BgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0gAMEUCIQC7dmE9pNGj4AF0lcZO\n"
	"AuPlB8mqFrULH8PeDP/hOVByPwIgWQw2LSzD/URT+xqhysZU6IESmehYnlm9kCn3\n"
	"ZHMYWnE=\n"
	"-----END CERTIFICATE-----\n";
static const char key1[] =
	"-----BEGIN PRIVATE KEY-----\n"
	"MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgMtHrojhJpFbyQA/S\n"
	"r4ysrKzPq3UVW/1bOU1C/O0uznGhRANCAARc9l5P8nHj3OVXbuLwoDnz6dZz5JZ5\n"
	"yNfGbRiNyCExmG+qR8dsaFdyk5SxiJUjybVP91/8yx40Yqc6hc6HCqji\n"
	"-----END PRIVATE KEY-----\n";
static const char key2[] =
	"-----BEGIN PRIVATE KEY-----\n"
	"MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgn5/FOU8tQx8VHJoU\n"
	"ty8PvZgEJza6EGPzJtkBeS8iFomhRANCAATY3dZHG8+LWHPIi1S4ZNzYN7brLvAP\n"
	"lBMfIufEKR2kXrbVepwRgy6tAmTLjJDVVUu+k4+eF5WitOl9qZ1h8283\n"
	"-----END PRIVATE KEY-----\n";

/* ---- users_file ----------------------------------------------------------------- */

START_TEST(test_users_parse_and_verify)
{
	char *err = NULL;
	struct users *u = users_parse("# inbound users\n\n  alice:" HASH_Y "  \r\n"
	    "bob:" HASH_6 ":extra:fields\n#carol:" HASH_6 "\n", &err);

	ck_assert_msg(u != NULL, "%s", err != NULL ? err : "");
	ck_assert_uint_eq(users_count(u), 2);
	ck_assert(users_verify(u, "alice", "s3cret"));
	ck_assert(!users_verify(u, "alice", "s3cret "));
	ck_assert(!users_verify(u, "alice", "hunter2"));
	ck_assert(!users_verify(u, "Alice", "s3cret"));
	ck_assert(users_verify(u, "bob", "hunter2"));
	ck_assert(!users_verify(u, "bob", ""));
	ck_assert(!users_verify(u, "bob", "s3cret"));
	/* A commented-out user does not exist, even with the right password. */
	ck_assert(!users_verify(u, "carol", "hunter2"));
	ck_assert(!users_verify(u, "nobody", "s3cret"));
	users_free(u);
	ck_assert(!users_verify(NULL, "alice", "s3cret"));
}
END_TEST

START_TEST(test_users_hash)
{
	struct users *u = users_parse("alice:" HASH_Y "\nbob:" HASH_6 "\n", NULL);
	const char *dummy;
	bool known = true;

	ck_assert_ptr_nonnull(u);
	ck_assert_str_eq(users_hash(u, "alice", &known), HASH_Y);
	ck_assert(known);
	ck_assert_str_eq(users_hash(u, "bob", &known), HASH_6);
	ck_assert(known);
	/* An unknown user gets a real yescrypt hash to check against: the same cost. */
	dummy = users_hash(u, "nobody", &known);
	ck_assert(!known);
	ck_assert(strncmp(dummy, "$y$", 3) == 0);
	ck_assert(users_hash(NULL, "alice", &known) == dummy && !known);
	ck_assert(users_hash_match(HASH_Y, "s3cret"));
	ck_assert(!users_hash_match(HASH_Y, "hunter2"));
	ck_assert(users_hash_match(HASH_6, "hunter2"));
	ck_assert(!users_hash_match("$y$garbage", "s3cret"));
	users_free(u);
}
END_TEST

/* ---- the password check thread (auth_verify) ---------------------------------- */

struct verify_case {
	const char *hash;
	const char *pass;
	bool want;
	int calls;       /* callbacks received */
	bool match;      /* what the last one said */
};

struct verify_run {
	struct event_base *base;
	int left;        /* callbacks still expected; the loop stops at 0 */
};

static struct verify_run verify_run;

static void
verify_cb(bool match, void *arg)
{
	struct verify_case *c = arg;

	c->calls++;
	c->match = match;
	if (--verify_run.left == 0)
		event_base_loopbreak(verify_run.base);
}

static void
verify_guard_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	event_base_loopbreak(arg);
}

/* Runs the loop until left callbacks came, or a generous deadline (slow sanitizer builds). */
static void
verify_wait(struct event_base *base, int left)
{
	struct timeval deadline = { .tv_sec = 45 };
	struct event *guard = evtimer_new(base, verify_guard_cb, base);

	verify_run.base = base;
	verify_run.left = left;
	evtimer_add(guard, &deadline);
	event_base_dispatch(base);
	event_free(guard);
	ck_assert_int_eq(verify_run.left, 0);
}

START_TEST(test_verifier_inflight)
{
	struct event_base *base = event_base_new();
	struct auth_verifier *v = auth_verifier_new(base);
	bool known;
	struct verify_case cases[] = {
		{ HASH_Y, "s3cret", true, 0, false },
		{ HASH_Y, "hunter2", false, 0, false },
		{ HASH_6, "hunter2", true, 0, false },
		{ HASH_6, "", false, 0, false },
		{ NULL, "s3cret", false, 0, false },  /* the unknown user's dummy */
		{ HASH_Y, "s3cret", true, 0, false },
	};
	size_t n = sizeof(cases) / sizeof(cases[0]);

	ck_assert_ptr_nonnull(v);
	cases[4].hash = users_hash(NULL, "nobody", &known);
	for (size_t i = 0; i < n; i++) {
		char pass[64];

		/* The verifier keeps its own copy: the caller wipes its buffer at once. */
		snprintf(pass, sizeof(pass), "%s", cases[i].pass);
		ck_assert_ptr_nonnull(auth_verify(v, cases[i].hash, pass, verify_cb, &cases[i]));
		memset(pass, 'x', sizeof(pass));
	}
	/* Never called back from inside auth_verify. */
	for (size_t i = 0; i < n; i++)
		ck_assert_int_eq(cases[i].calls, 0);
	verify_wait(base, (int)n);
	for (size_t i = 0; i < n; i++) {
		ck_assert_msg(cases[i].calls == 1, "case %zu: %d calls", i, cases[i].calls);
		ck_assert_msg(cases[i].match == cases[i].want, "case %zu", i);
	}
	auth_verifier_free(v);
	event_base_free(base);
}
END_TEST

START_TEST(test_verifier_cancel)
{
	struct event_base *base = event_base_new();
	struct auth_verifier *v = auth_verifier_new(base);
	struct verify_case a = { HASH_Y, "s3cret", true, 0, false };
	struct verify_case b = { HASH_Y, "s3cret", true, 0, false };
	struct verify_case c = { HASH_6, "hunter2", true, 0, false };
	struct verify_case d = { HASH_Y, "s3cret", true, 0, false };
	struct auth_verify_req *ra, *rb;
	struct timespec pause = { .tv_nsec = 300 * 1000 * 1000 };

	ck_assert_ptr_nonnull(v);
	ra = auth_verify(v, a.hash, a.pass, verify_cb, &a);
	rb = auth_verify(v, b.hash, b.pass, verify_cb, &b);
	auth_verify_cancel(rb);  /* still waiting its turn: skipped */
	auth_verify(v, c.hash, c.pass, verify_cb, &c);
	nanosleep(&pause, NULL);
	auth_verify_cancel(ra);  /* being hashed or done, not yet delivered */
	auth_verify_cancel(NULL);
	auth_verify(v, d.hash, d.pass, verify_cb, &d);
	/* In order: once d has answered, a and b have been through and dropped. */
	verify_wait(base, 2);
	ck_assert_int_eq(a.calls, 0);
	ck_assert_int_eq(b.calls, 0);
	ck_assert_int_eq(c.calls, 1);
	ck_assert(c.match);
	ck_assert_int_eq(d.calls, 1);
	ck_assert(d.match);
	auth_verifier_free(v);
	event_base_free(base);
}
END_TEST

START_TEST(test_verifier_free_inflight)
{
	struct event_base *base = event_base_new();
	struct auth_verifier *v = auth_verifier_new(base);
	struct verify_case cases[4] = {
		{ HASH_Y, "s3cret", true, 0, false },
		{ HASH_6, "hunter2", true, 0, false },
		{ HASH_Y, "nope", false, 0, false },
		{ HASH_Y, "s3cret", true, 0, false },
	};
	struct timespec pause = { .tv_nsec = 400 * 1000 * 1000 };

	ck_assert_ptr_nonnull(v);
	for (size_t i = 0; i < 4; i++)
		auth_verify(v, cases[i].hash, cases[i].pass, verify_cb, &cases[i]);
	/* Some done (undelivered), one being hashed, some waiting: none may call back. */
	nanosleep(&pause, NULL);
	auth_verifier_free(v);
	for (size_t i = 0; i < 4; i++)
		ck_assert_int_eq(cases[i].calls, 0);
	/* Nothing of it is left on the loop. */
	ck_assert_int_eq(event_base_loop(base, EVLOOP_NONBLOCK), 1);

	/* And a verifier freed at once, before its thread took anything. */
	v = auth_verifier_new(base);
	for (size_t i = 0; i < 4; i++)
		auth_verify(v, cases[i].hash, cases[i].pass, verify_cb, &cases[i]);
	auth_verifier_free(v);
	for (size_t i = 0; i < 4; i++)
		ck_assert_int_eq(cases[i].calls, 0);
	event_base_free(base);
}
END_TEST

START_TEST(test_verifier_null)
{
	struct verify_case c = { HASH_6, "hunter2", true, 0, false };
	struct verify_case w = { HASH_6, "hunter3", false, 0, false };

	verify_run.left = 2;
	verify_run.base = NULL;
	/* No verifier: checked at once, the callback has run when auth_verify returns. */
	ck_assert_ptr_null(auth_verify(NULL, c.hash, c.pass, verify_cb, &c));
	ck_assert_int_eq(c.calls, 1);
	ck_assert(c.match);
	ck_assert_ptr_null(auth_verify(NULL, w.hash, w.pass, verify_cb, &w));
	ck_assert_int_eq(w.calls, 1);
	ck_assert(!w.match);
}
END_TEST

static const struct {
	const char *text;
	const char *err;
} users_bad[] = {
	{ "alice " HASH_Y "\n", "line 1: expected \"user:hash\"" },
	{ "\nalice:secret\n", "line 2: unsupported password hash" },
	{ "alice:$1$abc$def\n", "line 1: unsupported password hash" },
	{ "alice:abJnggxhB/yJU\n", "line 1: unsupported password hash" },
	{ "alice:\n", "line 1: unsupported password hash" },
	{ ":" HASH_Y "\n", "line 1: bad user name" },
	{ "al ice:" HASH_Y "\n", "line 1: bad user name" },
	{ "a:" HASH_Y "\nb:" HASH_6 "\na:" HASH_6 "\n", "line 3: user listed twice" },
	{ "alice:$6$ab cd$ef\n", "line 1: unsupported password hash" },
};

START_TEST(test_users_bad)
{
	char *err = NULL;
	struct users *u = users_parse(users_bad[_i].text, &err);

	ck_assert_ptr_null(u);
	ck_assert_ptr_nonnull(err);
	ck_assert_msg(strncmp(err, users_bad[_i].err, strlen(users_bad[_i].err)) == 0,
	    "got \"%s\", expected \"%s...\"", err, users_bad[_i].err);
	free(err);
}
END_TEST

START_TEST(test_users_load_missing)
{
	char *err = NULL;

	ck_assert_ptr_null(users_load("/nonexistent/dualrelay-users", &err));
	ck_assert_msg(strstr(err, "cannot read /nonexistent/dualrelay-users") != NULL, "%s", err);
	free(err);
}
END_TEST

/* ---- AUTH decoding -------------------------------------------------------------- */

START_TEST(test_base64)
{
	unsigned char out[16];
	size_t n;

	ck_assert_int_eq(smtp_base64_decode("YWJj", out, sizeof(out), &n), 0);
	ck_assert_uint_eq(n, 3);
	ck_assert(memcmp(out, "abc", 3) == 0);
	ck_assert_int_eq(smtp_base64_decode("YWI=", out, sizeof(out), &n), 0);
	ck_assert_uint_eq(n, 2);
	ck_assert_int_eq(smtp_base64_decode("YQ==", out, sizeof(out), &n), 0);
	ck_assert_uint_eq(n, 1);
	ck_assert_int_eq(smtp_base64_decode("", out, sizeof(out), &n), 0);
	ck_assert_uint_eq(n, 0);
	ck_assert_int_eq(smtp_base64_decode("=", out, sizeof(out), &n), 0);
	ck_assert_uint_eq(n, 0);
	/* Not base64, not padded, padding inside, non-canonical bits, no room. */
	ck_assert_int_eq(smtp_base64_decode("YW J", out, sizeof(out), &n), -1);
	ck_assert_int_eq(smtp_base64_decode("YWJ", out, sizeof(out), &n), -1);
	ck_assert_int_eq(smtp_base64_decode("YQ==YWJj", out, sizeof(out), &n), -1);
	ck_assert_int_eq(smtp_base64_decode("Y===", out, sizeof(out), &n), -1);
	ck_assert_int_eq(smtp_base64_decode("YR==", out, sizeof(out), &n), -1);
	ck_assert_int_eq(smtp_base64_decode("YWJjYWJj", out, 5, &n), -1);
	ck_assert_int_eq(smtp_base64_decode("*", out, sizeof(out), &n), -1);
}
END_TEST

START_TEST(test_parse_auth)
{
	enum smtp_auth_mech m;
	const char *init;

	ck_assert_int_eq(smtp_parse_auth("PLAIN", &m, &init), 0);
	ck_assert_int_eq(m, SMTP_AUTH_PLAIN);
	ck_assert_ptr_null(init);
	ck_assert_int_eq(smtp_parse_auth("plain AGFsaWNlAHMzY3JldA==", &m, &init), 0);
	ck_assert_int_eq(m, SMTP_AUTH_PLAIN);
	ck_assert_str_eq(init, "AGFsaWNlAHMzY3JldA==");
	ck_assert_int_eq(smtp_parse_auth("Login =", &m, &init), 0);
	ck_assert_int_eq(m, SMTP_AUTH_LOGIN);
	ck_assert_str_eq(init, "=");
	ck_assert_int_eq(smtp_parse_auth("CRAM-MD5", &m, &init), 0);
	ck_assert_int_eq(m, SMTP_AUTH_UNKNOWN);
	ck_assert_int_eq(smtp_parse_auth("", &m, &init), -1);
	ck_assert_int_eq(smtp_parse_auth("PLAIN a b", &m, &init), -1);
	ck_assert_int_eq(smtp_parse_auth("PLAIN ", &m, &init), -1);
}
END_TEST

START_TEST(test_auth_plain)
{
	char user[32], pass[32];
	const char *why = NULL;

	/* "\0alice\0s3cret" */
	ck_assert_int_eq(smtp_auth_plain_decode("AGFsaWNlAHMzY3JldA==", user, sizeof(user), pass,
	    sizeof(pass), &why), 0);
	ck_assert_str_eq(user, "alice");
	ck_assert_str_eq(pass, "s3cret");
	/* "alice\0alice\0s3cret": authzid equal to the user is fine. */
	ck_assert_int_eq(smtp_auth_plain_decode("YWxpY2UAYWxpY2UAczNjcmV0", user, sizeof(user),
	    pass, sizeof(pass), &why), 0);
	ck_assert_str_eq(user, "alice");
	/* "bob\0alice\0s3cret": acting for bob is refused, nothing is left behind. */
	ck_assert_int_eq(smtp_auth_plain_decode("Ym9iAGFsaWNlAHMzY3JldA==", user, sizeof(user),
	    pass, sizeof(pass), &why), -2);
	ck_assert_str_eq(pass, "");
	ck_assert_str_eq(user, "");
	/* "alice\0s3cret" (one NUL), "\0alice\0" (empty password), "\0\0x" (empty user). */
	ck_assert_int_eq(smtp_auth_plain_decode("YWxpY2UAczNjcmV0", user, sizeof(user), pass,
	    sizeof(pass), &why), -1);
	ck_assert_str_eq(why, "malformed PLAIN message");
	ck_assert_int_eq(smtp_auth_plain_decode("AGFsaWNlAA==", user, sizeof(user), pass,
	    sizeof(pass), &why), -1);
	ck_assert_int_eq(smtp_auth_plain_decode("AAB4", user, sizeof(user), pass,
	    sizeof(pass), &why), -1);
	/* "\0alice\0s3\0cret": a NUL inside the password. */
	ck_assert_int_eq(smtp_auth_plain_decode("AGFsaWNlAHMzAGNyZXQ=", user, sizeof(user), pass,
	    sizeof(pass), &why), -1);
	ck_assert_int_eq(smtp_auth_plain_decode("not base64!", user, sizeof(user), pass,
	    sizeof(pass), &why), -1);
	ck_assert_str_eq(why, "cannot decode the response");
	ck_assert_int_eq(smtp_auth_plain_decode("=", user, sizeof(user), pass, sizeof(pass),
	    &why), -1);
	/* A user name longer than the buffer. */
	ck_assert_int_eq(smtp_auth_plain_decode("AGFsaWNlAHMzY3JldA==", user, 5, pass,
	    sizeof(pass), &why), -1);
}
END_TEST

START_TEST(test_auth_login)
{
	char out[16];

	ck_assert_int_eq(smtp_auth_login_decode("YWxpY2U=", out, sizeof(out)), 0);
	ck_assert_str_eq(out, "alice");
	ck_assert_int_eq(smtp_auth_login_decode("=", out, sizeof(out)), -1);
	ck_assert_int_eq(smtp_auth_login_decode("YQBi", out, sizeof(out)), -1);  /* "a\0b" */
	ck_assert_int_eq(smtp_auth_login_decode("YWxpY2U", out, sizeof(out)), -1);
	ck_assert_int_eq(smtp_auth_login_decode("YWxpY2U=", out, 5), -1);
}
END_TEST

/* ---- relay tricks --------------------------------------------------------------- */

static const struct {
	const char *addr;
	const char *trick;  /* NULL: an ordinary address */
} tricks[] = {
	{ "user@example.org", NULL },
	{ "first.last+tag@example.org", NULL },
	{ "\"first last\"@example.org", NULL },
	{ "user%other.example@example.org", "percent hack" },
	{ "user%other.example@[192.0.2.1]", "percent hack" },
	{ "other.example!user@example.org", "bang path" },
	{ "a!b%c@example.org", "percent hack" },
	{ "\"user@other.example\"@example.org", "quoted local part with @" },
	{ "\"user%other.example\"@example.org", "percent hack" },
	{ "@a.example,@b.example:user@c.example", "source route" },
};

START_TEST(test_relay_trick)
{
	const char *t = smtp_relay_trick(tricks[_i].addr);

	if (tricks[_i].trick == NULL)
		ck_assert_msg(t == NULL, "%s: %s", tricks[_i].addr, t);
	else
		ck_assert_msg(t != NULL && strcmp(t, tricks[_i].trick) == 0, "%s: %s",
		    tricks[_i].addr, t != NULL ? t : "(none)");
}
END_TEST

/* Which of these does RCPT's path parser let through at all (the rest are 501)? */
START_TEST(test_relay_trick_paths)
{
	char addr[SMTP_PATH_MAX + 1];
	const char *params, *why;

	ck_assert_int_eq(smtp_parse_path("TO:<u%o.example@example.org>", "TO:", false, false,
	    addr, sizeof(addr), &params, &why), 0);
	ck_assert_str_eq(smtp_relay_trick(addr), "percent hack");
	ck_assert_int_eq(smtp_parse_path("TO:<\"u@o.example\"@example.org>", "TO:", false,
	    false, addr, sizeof(addr), &params, &why), 0);
	ck_assert_str_eq(smtp_relay_trick(addr), "quoted local part with @");
	/* Source routes and bare bang paths never get this far. */
	ck_assert_int_eq(smtp_parse_path("TO:<@a.example:u@c.example>", "TO:", false, false,
	    addr, sizeof(addr), &params, &why), -1);
	ck_assert_int_eq(smtp_parse_path("TO:<o.example!u>", "TO:", false, false, addr,
	    sizeof(addr), &params, &why), -1);
}
END_TEST

/* ---- configuration -------------------------------------------------------------- */

static char dir[256];

static void
write_file(const char *name, const char *text, mode_t mode)
{
	char path[512];
	FILE *fp;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fp = fopen(path, "w");
	ck_assert_ptr_nonnull(fp);
	fputs(text, fp);
	fclose(fp);
	ck_assert_int_eq(chmod(path, mode), 0);
}

static void
dir_setup(void)
{
	const char *tmp = getenv("TMPDIR");

	snprintf(dir, sizeof(dir), "%s/check_inbound.XXXXXX",
	    tmp != NULL && *tmp != '\0' ? tmp : "/tmp");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	write_file("cert.pem", cert1, 0644);
	write_file("key.pem", key1, 0600);
	write_file("other.key", key2, 0600);
	write_file("open.key", key1, 0644);
	write_file("users", "alice:" HASH_Y "\n", 0600);
	write_file("users.open", "alice:" HASH_Y "\n", 0640);
	write_file("users.bad", "alice:" HASH_Y "\nbob:plain\n", 0600);
}

static void
dir_teardown(void)
{
	const char *names[] = { "cert.pem", "key.pem", "other.key", "open.key", "users",
	    "users.open", "users.bad" };
	char path[512];

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
		unlink(path);
	}
	rmdir(dir);
}

static struct conf *
load(const char *text, char **errors)
{
	*errors = NULL;
	return conf_load_string(text, "test.conf", dir, false, errors);
}

START_TEST(test_conf_tls_listen)
{
	char *errors;
	struct conf *c;

	c = load("listen = ( { address = \"127.0.0.1\"; port = 25; },\n"
	    "  { address = \"127.0.0.1\"; port = 465; tls = \"implicit\"; },\n"
	    "  { address = \"127.0.0.1\"; port = 2525; tls = \"none\"; } );\n"
	    "tls_cert = \"cert.pem\";\ntls_key = \"key.pem\";\nusers_file = \"users\";\n",
	    &errors);
	ck_assert_msg(c != NULL, "%s", errors ? errors : "");
	ck_assert_ptr_nonnull(c->tls_server);
	ck_assert_uint_eq(c->nlisten, 3);
	/* A certificate makes STARTTLS the default, even when it comes after listen. */
	ck_assert_int_eq(c->listen[0].tls, CONF_LISTEN_TLS_STARTTLS);
	ck_assert_int_eq(c->listen[1].tls, CONF_LISTEN_TLS_IMPLICIT);
	ck_assert_int_eq(c->listen[2].tls, CONF_LISTEN_TLS_NONE);
	ck_assert_uint_eq(users_count(c->users), 1);
	ck_assert_msg(c->warnings == NULL, "%s", c->warnings);
	conf_free(c);

	/* Without a certificate: no TLS anywhere, defaults included. */
	c = load("users_file = \"users\";\n", &errors);
	ck_assert_msg(c != NULL, "%s", errors ? errors : "");
	ck_assert_ptr_null(c->tls_server);
	ck_assert_int_eq(c->listen[0].tls, CONF_LISTEN_TLS_NONE);
	/* ... so AUTH can never be offered: worth a warning. */
	ck_assert_msg(c->warnings != NULL && strstr(c->warnings, "test.conf:1: users_file is "
	    "set but no listener offers TLS") != NULL, "%s", c->warnings ? c->warnings : "");
	conf_free(c);

	c = load("tls_cert = \"cert.pem\";\ntls_key = \"key.pem\";\n", &errors);
	ck_assert_msg(c != NULL, "%s", errors ? errors : "");
	ck_assert_int_eq(c->listen[0].tls, CONF_LISTEN_TLS_STARTTLS);
	ck_assert_int_eq(c->listen[1].tls, CONF_LISTEN_TLS_STARTTLS);
	ck_assert_ptr_null(c->users);
	conf_free(c);
}
END_TEST

/* postmaster: where RCPT TO:<Postmaster> goes; default postmaster@ the host name. */
START_TEST(test_conf_postmaster)
{
	char *errors;
	struct conf *c;

	/* The default follows hostname, wherever it is in the file. */
	c = load("listen = ( { address = \"127.0.0.1\"; port = 25; } );\n"
	    "hostname = \"relay.test\";\n", &errors);
	ck_assert_msg(c != NULL, "%s", errors);
	ck_assert_str_eq(c->postmaster, "postmaster@relay.test");
	conf_free(c);

	c = load("postmaster = \"noc@example.org\";\nhostname = \"relay.test\";\n", &errors);
	ck_assert_msg(c != NULL, "%s", errors);
	ck_assert_str_eq(c->postmaster, "noc@example.org");
	conf_free(c);

	/* A domain is required (the address is relayed), and no 8-bit (no SMTPUTF8 known). */
	static const char *bad[] = { "postmaster", "", "noc@", "@example.org", "a b@example.org",
	    "n\u00f6c@example.org", "<noc@example.org>" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char *text = xasprintf("hostname = \"relay.test\";\npostmaster = \"%s\";\n",
		    bad[i]);
		c = load(text, &errors);
		ck_assert_msg(c == NULL, "%s accepted", bad[i]);
		ck_assert_msg(strstr(errors, "test.conf:2: postmaster: ") != NULL &&
		    (bad[i][0] == '\0' || strstr(errors, "is not a mail address") != NULL),
		    "%s: %s", bad[i], errors);
		free(errors);
		free(text);
	}
}
END_TEST

START_TEST(test_conf_tls_errors)
{
	char *errors;
	struct conf *c;

	c = load("listen = ( { address = \"127.0.0.1\"; tls = \"starttls\"; },\n"
	    "  { address = \"127.0.0.1\"; port = 465; tls = \"implicit\"; },\n"
	    "  { address = \"127.0.0.1\"; port = 26; tls = \"yes\"; } );\n", &errors);
	ck_assert_ptr_null(c);
	ck_assert_msg(strstr(errors, "test.conf:1: listen tls: \"starttls\" needs tls_cert and "
	    "tls_key") != NULL, "%s", errors);
	ck_assert_msg(strstr(errors, "test.conf:2: listen tls: \"implicit\" needs") != NULL,
	    "%s", errors);
	ck_assert_msg(strstr(errors, "test.conf:3: listen tls: \"yes\" is not one of none, "
	    "starttls, implicit") != NULL, "%s", errors);
	free(errors);

	/* A key that is not the certificate's: located at tls_cert. */
	c = load("hostname = \"relay.test\";\ntls_cert = \"cert.pem\";\n"
	    "tls_key = \"other.key\";\n", &errors);
	ck_assert_ptr_null(c);
	ck_assert_msg(strstr(errors, "test.conf:2: tls_cert/tls_key: the private key in ") !=
	    NULL && strstr(errors, "does not match the certificate") != NULL, "%s", errors);
	free(errors);

	c = load("tls_cert = \"key.pem\";\ntls_key = \"key.pem\";\n", &errors);
	ck_assert_ptr_null(c);
	ck_assert_msg(strstr(errors, "test.conf:1: tls_cert/tls_key: cannot load the "
	    "certificate from ") != NULL, "%s", errors);
	free(errors);

	c = load("tls_cert = \"cert.pem\";\ntls_key = \"missing.key\";\n", &errors);
	ck_assert_ptr_null(c);
	ck_assert_msg(strstr(errors, "test.conf:2: tls_key: cannot read ") != NULL, "%s", errors);
	free(errors);

	c = load("\ntls_cert = \"cert.pem\";\n", &errors);
	ck_assert_ptr_null(c);
	ck_assert_msg(strstr(errors, "test.conf:2: tls_cert without tls_key") != NULL, "%s",
	    errors);
	free(errors);

	c = load("tls_cert = \"cert.pem\";\ntls_key = \"key.pem\";\n"
	    "users_file = \"users.bad\";\n", &errors);
	ck_assert_ptr_null(c);
	ck_assert_msg(strstr(errors, "test.conf:3: users_file: ") != NULL &&
	    strstr(errors, "/users.bad: line 2: unsupported password hash") != NULL, "%s",
	    errors);
	ck_assert_ptr_null(strstr(errors, "plain"));
	free(errors);
}
END_TEST

START_TEST(test_conf_secret_file_modes)
{
	char *errors;
	struct conf *c;

	c = load("tls_cert = \"cert.pem\";\ntls_key = \"open.key\";\n"
	    "users_file = \"users.open\";\n", &errors);
	ck_assert_msg(c != NULL, "%s", errors ? errors : "");
	ck_assert_ptr_nonnull(c->warnings);
	ck_assert_msg(strstr(c->warnings, "test.conf:2: tls_key ") != NULL &&
	    strstr(c->warnings, "/open.key is readable by everyone (mode 0644)") != NULL,
	    "%s", c->warnings);
	ck_assert_msg(strstr(c->warnings, "test.conf:3: users_file ") != NULL &&
	    strstr(c->warnings, "/users.open is readable by its group (mode 0640)") != NULL,
	    "%s", c->warnings);
	conf_free(c);
}
END_TEST

static Suite *
inbound_suite(void)
{
	Suite *s = suite_create("inbound");
	TCase *tu = tcase_create("users");
	TCase *ta = tcase_create("auth");
	TCase *tr = tcase_create("relay");
	TCase *tv = tcase_create("verifier");
	TCase *tc = tcase_create("conf");

	tcase_set_timeout(tu, 30);  /* yescrypt is slow on purpose */
	tcase_add_test(tu, test_users_parse_and_verify);
	tcase_add_loop_test(tu, test_users_bad, 0,
	    (int)(sizeof(users_bad) / sizeof(users_bad[0])));
	tcase_add_test(tu, test_users_load_missing);
	tcase_add_test(tu, test_users_hash);
	suite_add_tcase(s, tu);

	tcase_set_timeout(tv, 60);
	tcase_add_test(tv, test_verifier_inflight);
	tcase_add_test(tv, test_verifier_cancel);
	tcase_add_test(tv, test_verifier_free_inflight);
	tcase_add_test(tv, test_verifier_null);
	suite_add_tcase(s, tv);

	tcase_add_test(ta, test_base64);
	tcase_add_test(ta, test_parse_auth);
	tcase_add_test(ta, test_auth_plain);
	tcase_add_test(ta, test_auth_login);
	suite_add_tcase(s, ta);

	tcase_add_loop_test(tr, test_relay_trick, 0, (int)(sizeof(tricks) / sizeof(tricks[0])));
	tcase_add_test(tr, test_relay_trick_paths);
	suite_add_tcase(s, tr);

	tcase_add_checked_fixture(tc, dir_setup, dir_teardown);
	tcase_add_test(tc, test_conf_tls_listen);
	tcase_add_test(tc, test_conf_tls_errors);
	tcase_add_test(tc, test_conf_postmaster);
	tcase_add_test(tc, test_conf_secret_file_modes);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(inbound_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
