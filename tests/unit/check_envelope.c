/*
 * check_envelope: unit tests for the envelope records (envelope.c) and the on-disk
 * spool (spool.c). The spool tests run in a fresh mkdtemp directory each, which the
 * fixture removes again.
 */
#include "config.h"

#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "envelope.h"
#include "log.h"
#include "spool.h"
#include "spool_commit.h"
#include "util.h"

#include <event2/event.h>

/* ---- helpers ---- */

/* Asserts that call fails with errno err, read before an assertion can touch errno. */
#define ASSERT_FAILS_WITH(call, failval, err) do {                      \
		errno = 0;                                              \
		bool failed_ = (call) == (failval);                     \
		int errno_ = errno;                                     \
		ck_assert_msg(failed_, "%s did not fail", #call);       \
		ck_assert_int_eq(errno_, (err));                        \
	} while (0)

static struct envelope *
make_envelope(const char *sender, size_t nrcpts)
{
	struct envelope *e = envelope_new();
	char addr[64];

	dr_strlcpy(e->id, "65A1B2C30F4240AB", sizeof(e->id));
	e->arrival = 1700000000;
	e->sender = sender != NULL ? xstrdup(sender) : NULL;
	e->client_addr = xstrdup("192.0.2.7");
	e->helo = xstrdup("client.example");
	e->body = SMTP_BODY_8BITMIME;
	e->smtputf8 = false;
	for (size_t i = 0; i < nrcpts; i++) {
		snprintf(addr, sizeof(addr), "user%zu@dest%zu.example", i, i % 7);
		envelope_add_rcpt(e, addr);
	}
	return e;
}

static void
assert_same_envelope(const struct envelope *a, const struct envelope *b)
{
	ck_assert_str_eq(a->id, b->id);
	ck_assert_int_eq((long long)a->arrival, (long long)b->arrival);
	ck_assert_str_eq(a->sender != NULL ? a->sender : "", b->sender);
	ck_assert_str_eq(a->client_addr != NULL ? a->client_addr : "", b->client_addr);
	ck_assert_str_eq(a->helo != NULL ? a->helo : "", b->helo);
	ck_assert_int_eq(a->body, b->body);
	ck_assert_int_eq(a->smtputf8, b->smtputf8);
	ck_assert_uint_eq(a->nrcpts, b->nrcpts);
	for (size_t i = 0; i < a->nrcpts; i++)
		ck_assert_str_eq(a->rcpts[i].addr, b->rcpts[i].addr);
}

static struct envelope *
roundtrip(const struct envelope *e)
{
	size_t len = 0, hlen = 0;
	const char *why = "unset";
	char *buf = envelope_encode_header(e, &len);
	struct envelope *d;

	ck_assert_ptr_nonnull(buf);
	d = envelope_decode_header(buf, len, &hlen, &why);
	ck_assert_msg(d != NULL, "decode failed: %s", why);
	ck_assert_ptr_null(why);
	ck_assert_uint_eq(hlen, len);
	free(buf);
	return d;
}

static struct envelope *
decode_str(const char *s, const char **why)
{
	size_t hlen;

	return envelope_decode_header(s, strlen(s), &hlen, why);
}

/* ---- header records ---- */

START_TEST(test_header_exact_text)
{
	struct envelope *e = make_envelope("a@b.example", 2);
	size_t len;
	char *buf;

	e->smtputf8 = true;
	buf = envelope_encode_header(e, &len);
	ck_assert_ptr_nonnull(buf);
	ck_assert_str_eq(buf,
	    "DRSPOOL 1\n"
	    "id 65A1B2C30F4240AB\n"
	    "arrival 1700000000\n"
	    "sender a@b.example\n"
	    "client 192.0.2.7\n"
	    "helo client.example\n"
	    "body 8bitmime\n"
	    "smtputf8 1\n"
	    "rcpt user0@dest0.example\n"
	    "rcpt user1@dest1.example\n"
	    "\n");
	ck_assert_uint_eq(len, strlen(buf));
	free(buf);
	envelope_free(e);
}
END_TEST

START_TEST(test_header_roundtrip)
{
	struct envelope *e = make_envelope("sender@example.org", 3), *d;

	e->smtputf8 = true;
	d = roundtrip(e);
	assert_same_envelope(e, d);
	for (size_t i = 0; i < d->nrcpts; i++) {
		ck_assert_int_eq(d->rcpts[i].state, RCPT_PENDING);
		ck_assert_uint_eq(d->rcpts[i].attempts, 0);
		ck_assert_str_eq(d->rcpts[i].dsn, "");
		ck_assert_ptr_null(d->rcpts[i].reason);
	}
	envelope_free(d);

	e->body = SMTP_BODY_7BIT;
	e->smtputf8 = false;
	d = roundtrip(e);
	ck_assert_int_eq(d->body, SMTP_BODY_7BIT);
	ck_assert(!d->smtputf8);
	envelope_free(d);
	envelope_free(e);
}
END_TEST

START_TEST(test_header_content_follows)
{
	struct envelope *e = make_envelope("s@example.org", 1), *d;
	const char content[] = "Received: from x\r\n\r\nbody\n\nline\r\n";
	size_t len, hlen = 0;
	char *buf = envelope_encode_header(e, &len), *all = xmalloc(len + sizeof(content));
	const char *why;

	memcpy(all, buf, len);
	memcpy(all + len, content, sizeof(content));
	d = envelope_decode_header(all, len + sizeof(content), &hlen, &why);
	ck_assert_ptr_nonnull(d);
	ck_assert_uint_eq(hlen, len);
	ck_assert_str_eq(all + hlen, content);
	envelope_free(d);
	free(all);
	free(buf);
	envelope_free(e);
}
END_TEST

START_TEST(test_header_null_sender)
{
	struct envelope *e = make_envelope("", 1), *d;
	size_t len;
	char *buf = envelope_encode_header(e, &len);

	ck_assert_ptr_nonnull(strstr(buf, "\nsender \n"));
	free(buf);
	d = roundtrip(e);
	ck_assert_str_eq(d->sender, "");
	envelope_free(d);
	envelope_free(e);

	/* A NULL sender is written as the null sender too. */
	e = make_envelope(NULL, 1);
	d = roundtrip(e);
	ck_assert_str_eq(d->sender, "");
	envelope_free(d);
	envelope_free(e);
}
END_TEST

START_TEST(test_header_utf8)
{
	struct envelope *e = make_envelope("δοκιμή@παράδειγμα.δοκιμή", 0), *d;

	e->smtputf8 = true;
	envelope_add_rcpt(e, "用户@例子.广告");
	envelope_add_rcpt(e, "josé@exämple.example");
	envelope_add_rcpt(e, "\"quoted local\"@example.com");
	d = roundtrip(e);
	assert_same_envelope(e, d);
	ck_assert_str_eq(d->rcpts[0].addr, "用户@例子.广告");
	envelope_free(d);
	envelope_free(e);
}
END_TEST

START_TEST(test_header_many_rcpts)
{
	struct envelope *e = make_envelope("s@example.org", 5000), *d;

	d = roundtrip(e);
	ck_assert_uint_eq(d->nrcpts, 5000);
	assert_same_envelope(e, d);
	envelope_free(d);
	envelope_free(e);
}
END_TEST

START_TEST(test_header_encode_rejects)
{
	struct envelope *e;
	size_t len;
	char **field;
	const char *bad[] = { "a\r\nrcpt evil@example", "a\nb", "a\rb" };

	for (size_t k = 0; k < 3; k++) {
		for (int which = 0; which < 4; which++) {
			e = make_envelope("s@example.org", 2);
			field = which == 0 ? &e->sender : which == 1 ? &e->client_addr :
			    which == 2 ? &e->helo : &e->rcpts[1].addr;
			free(*field);
			*field = xstrdup(bad[k]);
			ck_assert_msg(envelope_encode_header(e, &len) == NULL, "field %d value %zu",
			    which, k);
			envelope_free(e);
		}
	}
	/* No recipient, an empty recipient, a bad id: nothing a decoder would take back. */
	e = make_envelope("s@example.org", 0);
	ck_assert_ptr_null(envelope_encode_header(e, &len));
	envelope_add_rcpt(e, "");
	ck_assert_ptr_null(envelope_encode_header(e, &len));
	envelope_free(e);
	e = make_envelope("s@example.org", 1);
	dr_strlcpy(e->id, "../../etc/passwd", sizeof(e->id));
	ck_assert_ptr_null(envelope_encode_header(e, &len));
	e->id[0] = '\0';
	ck_assert_ptr_null(envelope_encode_header(e, &len));
	envelope_free(e);
}
END_TEST

START_TEST(test_header_truncated_everywhere)
{
	struct envelope *e = make_envelope("s@example.org", 4), *d;
	size_t len, hlen;
	char *buf = envelope_encode_header(e, &len), *copy;
	const char *why;

	for (size_t l = 0; l < len; l++) {
		/* An exact-size copy, so ASan catches a read past the given length. */
		copy = xmalloc(l + 1);
		memcpy(copy, buf, l);
		why = NULL;
		d = envelope_decode_header(l > 0 ? copy : NULL, l, &hlen, &why);
		ck_assert_msg(d == NULL, "accepted a header cut at %zu of %zu", l, len);
		ck_assert_ptr_nonnull(why);
		ck_assert_msg(strcmp(why, "truncated") == 0, "cut at %zu: %s", l, why);
		free(copy);
	}
	d = envelope_decode_header(buf, len, &hlen, &why);
	ck_assert_ptr_nonnull(d);
	envelope_free(d);
	free(buf);
	envelope_free(e);
}
END_TEST

#define HDR_START "DRSPOOL 1\nid 65A1B2C30F4240AB\narrival 1700000000\n"

START_TEST(test_header_malformed)
{
	static const char *const cases[] = {
		"",
		"DRSPOOL 2\n" "id 65A1B2C30F4240AB\narrival 1\nsender \nrcpt a@b\n\n",
		"drspool 1\n" "id 65A1B2C30F4240AB\narrival 1\nsender \nrcpt a@b\n\n",
		"DRSPOOL 1\r\n" "id 65A1B2C30F4240AB\narrival 1\nsender \nrcpt a@b\n\n",
		/* missing required keys */
		"DRSPOOL 1\narrival 1\nsender \nrcpt a@b\n\n",
		"DRSPOOL 1\nid 65A1B2C30F4240AB\nsender \nrcpt a@b\n\n",
		HDR_START "rcpt a@b\n\n",
		HDR_START "sender a@b\n\n",
		/* bad values */
		"DRSPOOL 1\nid 65a1b2c30f4240ab\narrival 1\nsender \nrcpt a@b\n\n",
		"DRSPOOL 1\nid 65A1B2C30F4240A\narrival 1\nsender \nrcpt a@b\n\n",
		"DRSPOOL 1\nid 65A1B2C30F4240ABC\narrival 1\nsender \nrcpt a@b\n\n",
		"DRSPOOL 1\nid ../../x\narrival 1\nsender \nrcpt a@b\n\n",
		"DRSPOOL 1\nid 65A1B2C30F4240AB\narrival -1\nsender \nrcpt a@b\n\n",
		"DRSPOOL 1\nid 65A1B2C30F4240AB\narrival 12x\nsender \nrcpt a@b\n\n",
		"DRSPOOL 1\nid 65A1B2C30F4240AB\narrival \nsender \nrcpt a@b\n\n",
		"DRSPOOL 1\nid 65A1B2C30F4240AB\narrival 99999999999999999999\nsender \nrcpt a@b\n\n",
		HDR_START "sender \nrcpt \n\n",
		HDR_START "sender \nrcpt\n\n",
		HDR_START "sender \nbody 8BITMIME\nrcpt a@b\n\n",
		HDR_START "sender \nbody binarymime\nrcpt a@b\n\n",
		HDR_START "sender \nsmtputf8 2\nrcpt a@b\n\n",
		HDR_START "sender \nsmtputf8 yes\nrcpt a@b\n\n",
		/* duplicates */
		HDR_START "id 65A1B2C30F4240AB\nsender \nrcpt a@b\n\n",
		HDR_START "sender a@b\nsender c@d\nrcpt a@b\n\n",
		HDR_START "arrival 2\nsender \nrcpt a@b\n\n",
		/* line structure */
		HDR_START "sender a@b\r\nrcpt a@b\n\n",
		HDR_START "sender \nRCPT a@b\n\n",
		HDR_START "sender \n rcpt a@b\n\n",
		HDR_START "sender \nrcpt a@b\n \n",
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *why = NULL;
		struct envelope *d = decode_str(cases[i], &why);

		ck_assert_msg(d == NULL, "case %zu accepted", i);
		ck_assert_msg(why != NULL, "case %zu: no reason", i);
		envelope_free(d);
	}
}
END_TEST

START_TEST(test_header_nul_rejected)
{
	const char hdr[] = HDR_START "sender a\0b@c\nrcpt a@b\n\n";
	const char *why = NULL;
	size_t hlen;

	ck_assert_ptr_null(envelope_decode_header(hdr, sizeof(hdr) - 1, &hlen, &why));
	ck_assert_ptr_nonnull(why);
}
END_TEST

START_TEST(test_header_unknown_keys)
{
	const char *why = "unset";
	struct envelope *d = decode_str(HDR_START "x-future some value\nsender s@x\n"
	    "priority\nrcpt a@b\nrcpt c@d\n\n", &why);

	ck_assert_msg(d != NULL, "rejected: %s", why);
	ck_assert_str_eq(d->sender, "s@x");
	ck_assert_uint_eq(d->nrcpts, 2);
	ck_assert_str_eq(d->rcpts[1].addr, "c@d");
	/* Optional fields default to empty strings, body to 7bit. */
	ck_assert_str_eq(d->client_addr, "");
	ck_assert_str_eq(d->helo, "");
	ck_assert_int_eq(d->body, SMTP_BODY_7BIT);
	ck_assert(!d->smtputf8);
	envelope_free(d);

	/* "sender" without the space is the null sender as well. */
	d = decode_str(HDR_START "sender\nrcpt a@b\n\n", &why);
	ck_assert_ptr_nonnull(d);
	ck_assert_str_eq(d->sender, "");
	envelope_free(d);
}
END_TEST

/* ---- state records ---- */

static void
set_state(struct envelope *e, size_t i, enum rcpt_state st, unsigned attempts, time_t next,
    const char *dsn, const char *reason)
{
	struct envelope_rcpt *r = &e->rcpts[i];

	r->state = st;
	r->attempts = attempts;
	r->next_attempt = next;
	dr_strlcpy(r->dsn, dsn, sizeof(r->dsn));
	free(r->reason);
	r->reason = reason != NULL ? xstrdup(reason) : NULL;
}

START_TEST(test_state_exact_text)
{
	struct envelope *e = make_envelope("s@x", 3);
	char buf[1024];
	size_t n;

	set_state(e, 1, RCPT_DEFERRED, 2, 1700000600, "4.4.1", "connection refused");
	n = envelope_encode_state(e, 1, buf, sizeof(buf));
	ck_assert_str_eq(buf, "R 1 D 2 1700000600 4.4.1 connection refused\n");
	ck_assert_uint_eq(n, strlen(buf));

	n = envelope_encode_state(e, 0, buf, sizeof(buf));
	ck_assert_str_eq(buf, "R 0 P 0 0 - \n");
	ck_assert_uint_eq(n, strlen(buf));

	set_state(e, 2, RCPT_DELIVERED, 1, 0, "2.0.0", "250 2.0.0 Ok: queued as X");
	envelope_encode_state(e, 2, buf, sizeof(buf));
	ck_assert_str_eq(buf, "R 2 S 1 0 2.0.0 250 2.0.0 Ok: queued as X\n");
	set_state(e, 2, RCPT_BOUNCED, 1, 0, "5.1.1", NULL);
	envelope_encode_state(e, 2, buf, sizeof(buf));
	ck_assert_str_eq(buf, "R 2 B 1 0 5.1.1 \n");

	/* Out of range, or a buffer too small: nothing written. */
	ck_assert_uint_eq(envelope_encode_state(e, 3, buf, sizeof(buf)), 0);
	ck_assert_uint_eq(envelope_encode_state(e, 2, buf, 8), 0);
	envelope_free(e);
}
END_TEST

START_TEST(test_state_roundtrip_last_wins)
{
	struct envelope *e = make_envelope("s@x", 3), *d = make_envelope("s@x", 3);
	char log[8192], rec[1024];
	size_t len = 0, bad = 99;

	set_state(e, 0, RCPT_DEFERRED, 1, 1700000100, "4.4.1", "timeout");
	len += envelope_encode_state(e, 0, log + len, sizeof(log) - len);
	set_state(e, 1, RCPT_BOUNCED, 1, 0, "5.1.1", "550 5.1.1 no such user");
	len += envelope_encode_state(e, 1, log + len, sizeof(log) - len);
	set_state(e, 0, RCPT_DEFERRED, 2, 1700000700, "4.7.0", "451 4.7.0 greylisted");
	len += envelope_encode_state(e, 0, log + len, sizeof(log) - len);
	set_state(e, 0, RCPT_DELIVERED, 3, 0, "2.0.0", "250 ok");
	len += envelope_encode_state(e, 0, log + len, sizeof(log) - len);
	ck_assert(len < sizeof(log));

	envelope_apply_states(d, log, len, &bad);
	ck_assert_uint_eq(bad, 0);
	ck_assert_int_eq(d->rcpts[0].state, RCPT_DELIVERED);
	ck_assert_uint_eq(d->rcpts[0].attempts, 3);
	ck_assert_str_eq(d->rcpts[0].dsn, "2.0.0");
	ck_assert_str_eq(d->rcpts[0].reason, "250 ok");
	ck_assert_int_eq(d->rcpts[1].state, RCPT_BOUNCED);
	ck_assert_str_eq(d->rcpts[1].dsn, "5.1.1");
	ck_assert_str_eq(d->rcpts[1].reason, "550 5.1.1 no such user");
	ck_assert_int_eq(d->rcpts[2].state, RCPT_PENDING);
	ck_assert(envelope_done(d) == false);

	/* One more record: the deferred state and its time come back exactly. */
	set_state(e, 2, RCPT_DEFERRED, 4, 1700009999, "4.4.7", "");
	envelope_encode_state(e, 2, rec, sizeof(rec));
	envelope_apply_states(d, rec, strlen(rec), NULL);
	ck_assert_int_eq(d->rcpts[2].state, RCPT_DEFERRED);
	ck_assert_uint_eq(d->rcpts[2].attempts, 4);
	ck_assert_int_eq((long long)d->rcpts[2].next_attempt, 1700009999LL);
	ck_assert_str_eq(d->rcpts[2].dsn, "4.4.7");
	ck_assert_ptr_null(d->rcpts[2].reason);

	set_state(d, 2, RCPT_BOUNCED, 5, 0, "", NULL);
	ck_assert(envelope_done(d));
	envelope_free(e);
	envelope_free(d);
}
END_TEST

START_TEST(test_state_partial_and_garbage)
{
	struct envelope *d = make_envelope("s@x", 2);
	const char *log =
	    "R 0 D 1 1700000100 4.4.1 first\n"
	    "garbage line\n"
	    "\n"
	    "R 5 S 1 0 2.0.0 unknown recipient index\n"
	    "R 1 X 1 0 2.0.0 bad state letter\n"
	    "R 1 S 1 0 2.0 bad dsn\n"
	    "R 1 S 1 0 6.0.0 bad dsn class\n"
	    "R 1 S -1 0 2.0.0 negative attempts\n"
	    "R 1 S 1 0 2.0.0\n"          /* cut before the reason separator */
	    "R  1 S 1 0 2.0.0 double space\n"
	    "R 1 S 1 0 4.4.1x x\n"
	    "R 1 D 1 1700000200 4.4.2 second\n"
	    "R 0 S 2 0 2.0.0 delivered at l";  /* partial: no newline */
	size_t bad = 0;

	envelope_apply_states(d, log, strlen(log), &bad);
	ck_assert_uint_eq(bad, 9);
	ck_assert_int_eq(d->rcpts[0].state, RCPT_DEFERRED);
	ck_assert_str_eq(d->rcpts[0].reason, "first");
	ck_assert_int_eq(d->rcpts[1].state, RCPT_DEFERRED);
	ck_assert_uint_eq(d->rcpts[1].attempts, 1);
	ck_assert_str_eq(d->rcpts[1].dsn, "4.4.2");
	ck_assert_str_eq(d->rcpts[1].reason, "second");
	envelope_free(d);
}
END_TEST

START_TEST(test_state_every_cut)
{
	/* Whatever prefix of a record survives a crash, the previous state stays. */
	struct envelope *e = make_envelope("s@x", 1), *d;
	char rec[1024];
	size_t n, bad;

	set_state(e, 0, RCPT_DELIVERED, 7, 0, "2.0.0", "ok");
	n = envelope_encode_state(e, 0, rec, sizeof(rec));
	for (size_t l = 0; l < n; l++) {
		d = make_envelope("s@x", 1);
		envelope_apply_states(d, rec, l, &bad);
		ck_assert_int_eq(d->rcpts[0].state, RCPT_PENDING);
		ck_assert_uint_eq(bad, 0);
		envelope_free(d);
	}
	envelope_free(e);
}
END_TEST

START_TEST(test_state_reason_sanitised)
{
	struct envelope *e = make_envelope("s@x", 1), *d = make_envelope("s@x", 1);
	char rec[1024], *longr;
	size_t n, bad;

	set_state(e, 0, RCPT_DEFERRED, 1, 5, "4.0.0",
	    "451 first\r\nR 0 S 1 0 2.0.0 forged\ttab\x7f" "del\x01");
	n = envelope_encode_state(e, 0, rec, sizeof(rec));
	ck_assert_str_eq(rec, "R 0 D 1 5 4.0.0 451 first  R 0 S 1 0 2.0.0 forged tab del \n");
	envelope_apply_states(d, rec, n, &bad);
	ck_assert_uint_eq(bad, 0);
	ck_assert_int_eq(d->rcpts[0].state, RCPT_DEFERRED);
	ck_assert_str_eq(d->rcpts[0].reason, "451 first  R 0 S 1 0 2.0.0 forged tab del ");

	/* Long reasons are cut to ENVELOPE_REASON_MAX bytes. */
	longr = xmalloc(3000);
	memset(longr, 'x', 2999);
	longr[2999] = '\0';
	set_state(e, 0, RCPT_DEFERRED, 1, 5, "4.0.0", longr);
	n = envelope_encode_state(e, 0, rec, sizeof(rec));
	ck_assert_uint_eq(n, strlen("R 0 D 1 5 4.0.0 \n") + ENVELOPE_REASON_MAX);
	envelope_apply_states(d, rec, n, &bad);
	ck_assert_uint_eq(strlen(d->rcpts[0].reason), ENVELOPE_REASON_MAX);

	/* ... and never in the middle of a UTF-8 character ("é" is 2 bytes). */
	memset(longr, 'x', ENVELOPE_REASON_MAX - 1);
	strcpy(longr + ENVELOPE_REASON_MAX - 1, "ééé");
	set_state(e, 0, RCPT_DEFERRED, 1, 5, "4.0.0", longr);
	n = envelope_encode_state(e, 0, rec, sizeof(rec));
	envelope_apply_states(d, rec, n, &bad);
	ck_assert_uint_eq(strlen(d->rcpts[0].reason), ENVELOPE_REASON_MAX - 1);
	ck_assert_int_eq(d->rcpts[0].reason[ENVELOPE_REASON_MAX - 2], 'x');

	/* The largest record fits the documented 1024-byte buffer. */
	set_state(e, 0, RCPT_DEFERRED, UINT_MAX, (time_t)INT64_MAX, "4.123.123", longr);
	ck_assert_uint_gt(envelope_encode_state(e, 0, rec, sizeof(rec)), 0);
	free(longr);
	envelope_free(e);
	envelope_free(d);
}
END_TEST

/* ---- ids ---- */

static bool
id_format_ok(const char *id)
{
	if (strlen(id) != 16)
		return false;
	for (size_t i = 0; i < 16; i++) {
		if (!strchr("0123456789ABCDEF", id[i]))
			return false;
	}
	return true;
}

static int
cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

START_TEST(test_id_format_and_uniqueness)
{
	enum { N = 10000 };
	char **ids = xcalloc(N, sizeof(*ids));
	time_t before = time(NULL);
	unsigned long secs;
	unsigned usec;

	/* A tight loop first: many ids fall into the same microsecond. */
	for (size_t i = 0; i < N; i++) {
		ids[i] = xmalloc(ENVELOPE_ID_MAX);
		envelope_new_id(ids[i]);
	}
	for (size_t i = 0; i < N; i++) {
		ck_assert_msg(id_format_ok(ids[i]), "bad id %s", ids[i]);
		ck_assert(envelope_id_valid(ids[i]));
		/* Generated in order, so they sort in order. */
		if (i > 0)
			ck_assert_msg(strcmp(ids[i - 1], ids[i]) < 0, "%s !< %s", ids[i - 1], ids[i]);
	}
	/* First 8 characters: the current time in seconds; next 5: microseconds. */
	ck_assert_int_eq(sscanf(ids[0], "%8lx%5x", &secs, &usec), 2);
	ck_assert_int_ge((long long)secs, (long long)before);
	ck_assert_int_le((long long)secs, (long long)UINT32_MAX);
	ck_assert_int_le((long long)secs, (long long)time(NULL) + 1);
	ck_assert_uint_lt(usec, 1000000);

	qsort(ids, N, sizeof(*ids), cmp_str);
	for (size_t i = 1; i < N; i++)
		ck_assert_msg(strcmp(ids[i - 1], ids[i]) != 0, "duplicate id %s", ids[i]);
	for (size_t i = 0; i < N; i++)
		free(ids[i]);
	free(ids);
}
END_TEST

START_TEST(test_state_hold_record)
{
	struct envelope *e = make_envelope("a@example.org", 1);
	size_t bad = 9;
	const char *recs = "H 1\nR 0 D 1 1700000100 4.4.1 x\n";

	envelope_apply_states(e, recs, strlen(recs), &bad);
	ck_assert(e->held);
	ck_assert_uint_eq(bad, 0);
	envelope_apply_states(e, "H 0\n", 4, &bad);
	ck_assert(!e->held);
	envelope_apply_states(e, "H 2\nH 1", 7, &bad); /* bad value; partial record */
	ck_assert(!e->held);
	ck_assert_uint_eq(bad, 1);
	envelope_free(e);
}
END_TEST

START_TEST(test_state_notified_records)
{
	struct envelope *e = make_envelope("a@example.org", 3);
	size_t idx[] = { 0, 2 }, bad = 9;
	char buf[64];
	const char *recs = "R 0 B 1 0 5.1.1 host mx[192.0.2.1] said: 550 no\n"
	    "R 2 B 1 0 5.1.1 x\nN 0\nN 2\nW\n";

	ck_assert_uint_eq(envelope_encode_notified(e, idx, 2, buf, sizeof(buf)), 8);
	ck_assert_str_eq(buf, "N 0\nN 2\n");
	/* Out of range, or a buffer too small: nothing. */
	idx[1] = 3;
	ck_assert_uint_eq(envelope_encode_notified(e, idx, 2, buf, sizeof(buf)), 0);
	idx[1] = 2;
	ck_assert_uint_eq(envelope_encode_notified(e, idx, 2, buf, 6), 0);

	envelope_apply_states(e, recs, strlen(recs), &bad);
	ck_assert_uint_eq(bad, 0);
	ck_assert(e->rcpts[0].notified);
	ck_assert(!e->rcpts[1].notified);
	ck_assert(e->rcpts[2].notified);
	ck_assert(e->delay_warned);
	/* A later state record of the recipient leaves the mark alone. */
	envelope_apply_states(e, "R 0 B 2 0 5.1.1 y\n", 18, &bad);
	ck_assert(e->rcpts[0].notified);
	envelope_free(e);
}
END_TEST

START_TEST(test_state_notified_malformed)
{
	struct envelope *e = make_envelope("a@example.org", 2);
	size_t bad = 0;
	/* Unknown index, leading zero, sign, trailing junk, no index, W with a value, cut. */
	const char *recs = "N 2\nN 01\nN -1\nN 1 x\nN \nN\nW 1\nN 1";

	envelope_apply_states(e, recs, strlen(recs), &bad);
	ck_assert_uint_eq(bad, 7);
	ck_assert(!e->rcpts[0].notified);
	ck_assert(!e->rcpts[1].notified);
	ck_assert(!e->delay_warned);
	envelope_free(e);
}
END_TEST

START_TEST(test_state_old_format_owes_dsn)
{
	/* A state file written before "N" existed: loads, the bounce counts as unnotified. */
	struct envelope *e = make_envelope("a@example.org", 2);
	size_t bad = 9;
	const char *recs = "R 0 B 1 0 5.1.1 host mx[192.0.2.1] said: 550 5.1.1 no\n"
	    "R 1 D 1 1700000100 4.4.1 connection refused\nH 0\n";

	envelope_apply_states(e, recs, strlen(recs), &bad);
	ck_assert_uint_eq(bad, 0);
	ck_assert_int_eq(e->rcpts[0].state, RCPT_BOUNCED);
	ck_assert(!e->rcpts[0].notified);
	ck_assert_int_eq(e->rcpts[1].state, RCPT_DEFERRED);
	ck_assert(!e->delay_warned);
	/* And a record type from a later version is skipped and counted, as before. */
	envelope_apply_states(e, "Z 1 2\n", 6, &bad);
	ck_assert_uint_eq(bad, 1);
	ck_assert_int_eq(e->rcpts[0].state, RCPT_BOUNCED);
	envelope_free(e);
}
END_TEST

START_TEST(test_id_valid)
{
	ck_assert(envelope_id_valid("0123456789ABCDEF"));
	ck_assert(!envelope_id_valid(NULL));
	ck_assert(!envelope_id_valid(""));
	ck_assert(!envelope_id_valid("0123456789ABCDE"));
	ck_assert(!envelope_id_valid("0123456789ABCDEF0"));
	ck_assert(!envelope_id_valid("0123456789abcdef"));
	ck_assert(!envelope_id_valid("0123456789ABCDEG"));
	ck_assert(!envelope_id_valid("0123456789ABCDE/"));
	ck_assert(!envelope_id_valid("0123456789ABCDEF.state"));
	ck_assert(!envelope_id_valid("../0123456789ABC"));
}
END_TEST

START_TEST(test_state_names)
{
	ck_assert_str_eq(rcpt_state_name(RCPT_PENDING), "pending");
	ck_assert_str_eq(rcpt_state_name(RCPT_DEFERRED), "deferred");
	ck_assert_str_eq(rcpt_state_name(RCPT_DELIVERED), "sent");
	ck_assert_str_eq(rcpt_state_name(RCPT_BOUNCED), "bounced");
}
END_TEST

/* ---- spool ---- */

static char spool_path[1024]; /* SPOOL, inside the mkdtemp directory */

static int
rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void
spool_setup(void)
{
	const char *tmp = getenv("TMPDIR");
	char base[900];

	log_init("check_envelope", LOG_TARGET_STDERR, LOG_LEVEL_ERROR);
	snprintf(base, sizeof(base), "%s/check_envelope.XXXXXX", tmp != NULL ? tmp : "/tmp");
	ck_assert_ptr_nonnull(mkdtemp(base));
	snprintf(spool_path, sizeof(spool_path), "%s/spool", base);
}

static void
spool_teardown(void)
{
	char *slash = strrchr(spool_path, '/');

	*slash = '\0';
	chmod(spool_path, 0700);
	nftw(spool_path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Number of entries (other than . and ..) in SPOOL/sub. */
static int
count_entries(const char *sub)
{
	char path[PATH_MAX];
	struct dirent *de;
	DIR *d;
	int n = 0;

	snprintf(path, sizeof(path), "%s/%s", spool_path, sub);
	d = opendir(path);
	if (d == NULL)
		return -1;
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
			n++;
	}
	closedir(d);
	return n;
}

static bool
spool_file_exists(const char *sub, const char *name)
{
	char path[PATH_MAX];
	struct stat st;

	snprintf(path, sizeof(path), "%s/%s/%s", spool_path, sub, name);
	return lstat(path, &st) == 0;
}

static void
write_spool_file(const char *sub, const char *name, const char *data, size_t len)
{
	char path[PATH_MAX];
	int fd;

	snprintf(path, sizeof(path), "%s/%s/%s", spool_path, sub, name);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, data, len), (ssize_t)len);
	close(fd);
}

struct collected {
	struct envelope *e[8];
	size_t n;
};

static void
collect_cb(struct envelope *e, void *arg)
{
	struct collected *c = arg;

	ck_assert_uint_lt(c->n, 8);
	c->e[c->n++] = e;
}

/* Checks a recovered message is whole (20 bytes of content, as gc_writer writes). */
static void
recover_free(struct envelope *e, void *arg)
{
	(void)arg;
	ck_assert_uint_eq(e->content_size, 20);
	envelope_free(e);
}

static void
collected_free(struct collected *c)
{
	for (size_t i = 0; i < c->n; i++)
		envelope_free(c->e[i]);
	c->n = 0;
}

/* Content with NULs, bare CR/LF, every byte value (len >= 23), as long as asked. */
static char *
make_content(size_t len)
{
	char *c = xmalloc(len);

	ck_assert_uint_ge(len, 23);
	uint32_t x = 12345;

	for (size_t i = 0; i < len; i++) {
		x = x * 1103515245u + 12345u;
		c[i] = (char)(x >> 16);
	}
	memcpy(c, "Received: by test\r\n\r\n\n\n", 23);
	return c;
}

/* Writes content in irregular chunk sizes, including one larger than the buffer. */
static void
write_chunks(struct spool_writer *w, const char *content, size_t len)
{
	static const size_t sizes[] = { 1, 7, 1000, 65536, 100000, 3, 65535, 4096 };
	size_t off = 0;

	for (size_t k = 0; off < len; k++) {
		size_t n = sizes[k % 8];

		if (n > len - off)
			n = len - off;
		ck_assert_int_eq(spool_writer_write(w, content + off, n), 0);
		off += n;
	}
}

static void
read_all_fd(int fd, char **out, size_t *outlen)
{
	size_t cap = 4096, len = 0;
	char *buf = xmalloc(cap);
	ssize_t n;

	for (;;) {
		if (len == cap)
			buf = xgrow(buf, 1, cap * 2, &cap);
		n = read(fd, buf + len, cap - len);
		ck_assert_int_ge(n, 0);
		if (n == 0)
			break;
		len += (size_t)n;
	}
	*out = buf;
	*outlen = len;
}

/* Spools a message with content and returns its envelope (caller frees). */
static struct envelope *
spool_message(struct spool *s, const char *content, size_t len)
{
	struct envelope *e = make_envelope("sender@example.org", 3);
	struct spool_writer *w = spool_writer_begin(s, e);

	ck_assert_ptr_nonnull(w);
	write_chunks(w, content, len);
	ck_assert_int_eq(spool_writer_commit(w, e), 0);
	return e;
}

START_TEST(test_spool_layout)
{
	struct spool *s = spool_open(spool_path);
	const char *subs[] = { "", "/tmp", "/queue", "/corrupt" };
	char path[PATH_MAX];
	struct stat st;

	ck_assert_ptr_nonnull(s);
	ck_assert_str_eq(spool_dir(s), spool_path);
	for (size_t i = 0; i < 4; i++) {
		snprintf(path, sizeof(path), "%s%s", spool_path, subs[i]);
		ck_assert_int_eq(stat(path, &st), 0);
		ck_assert(S_ISDIR(st.st_mode));
		ck_assert_int_eq(st.st_mode & 0777, 0700);
	}
	spool_close(s);
	/* Opening again works on the existing tree. */
	s = spool_open(spool_path);
	ck_assert_ptr_nonnull(s);
	spool_close(s);
}
END_TEST

START_TEST(test_spool_open_fails)
{
	char path[PATH_MAX];

	snprintf(path, sizeof(path), "%s/no/such/parent", spool_path);
	ASSERT_FAILS_WITH(spool_open(path), NULL, ENOENT);
}
END_TEST

START_TEST(test_spool_write_commit_recover)
{
	struct spool *s = spool_open(spool_path);
	const size_t len = 300000;
	char *content = make_content(len), *back, path[PATH_MAX];
	struct collected c = { .n = 0 };
	struct envelope *e;
	size_t blen;
	struct stat st;
	int fd;

	e = spool_message(s, content, len);
	ck_assert(envelope_id_valid(e->id));
	ck_assert_uint_eq(e->content_size, len);
	ck_assert_int_eq(count_entries("tmp"), 0);
	ck_assert_int_eq(count_entries("queue"), 1);
	ck_assert(spool_file_exists("queue", e->id));
	snprintf(path, sizeof(path), "%s/queue/%s", spool_path, e->id);
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert_int_eq(st.st_mode & 0777, 0600);

	/* Content straight after commit. */
	fd = spool_open_content(s, e);
	ck_assert_int_ge(fd, 0);
	read_all_fd(fd, &back, &blen);
	close(fd);
	ck_assert_uint_eq(blen, len);
	ck_assert(memcmp(back, content, len) == 0);
	free(back);
	spool_close(s);

	/* After a "restart". */
	s = spool_open(spool_path);
	ck_assert_int_eq(spool_recover(s, collect_cb, &c), 1);
	ck_assert_uint_eq(c.n, 1);
	assert_same_envelope(e, c.e[0]);
	ck_assert_uint_eq(c.e[0]->content_size, len);
	for (size_t i = 0; i < c.e[0]->nrcpts; i++)
		ck_assert_int_eq(c.e[0]->rcpts[i].state, RCPT_PENDING);
	fd = spool_open_content(s, c.e[0]);
	ck_assert_int_ge(fd, 0);
	read_all_fd(fd, &back, &blen);
	close(fd);
	ck_assert_uint_eq(blen, len);
	ck_assert(memcmp(back, content, len) == 0);
	free(back);

	collected_free(&c);
	envelope_free(e);
	free(content);
	spool_close(s);
}
END_TEST

START_TEST(test_spool_prepend_memory_and_file)
{
	/*
	 * The prepend (DKIM fields) goes into the reserved room of the header of a message
	 * still in memory (_i 0) and of one already in tmp/ (_i 1); the content is intact.
	 */
	struct spool *s = spool_open(spool_path);
	struct envelope *e = make_envelope("s@x", 1);
	size_t len = _i == 0 ? 100 : 200000;
	char *content = make_content(len), *back;
	const char *prepend = "X-Prepended: yes\r\n";
	struct spool_writer *w = spool_writer_begin_reserve(s, e, 64);
	struct collected c = { .n = 0 };
	size_t blen;
	int fd;

	ck_assert_ptr_nonnull(w);
	write_chunks(w, content, len);
	ck_assert_int_eq(count_entries("tmp"), _i);
	e->prepend = xstrdup(prepend);
	ck_assert_int_eq(spool_writer_commit(w, e), 0);
	ck_assert_uint_eq(e->content_size, len + strlen(prepend));
	spool_close(s);

	s = spool_open(spool_path);
	ck_assert_int_eq(spool_recover(s, collect_cb, &c), 1);
	ck_assert_str_eq(c.e[0]->prepend, prepend);
	fd = spool_open_content(s, c.e[0]);
	ck_assert_int_ge(fd, 0);
	read_all_fd(fd, &back, &blen);
	close(fd);
	ck_assert_uint_eq(blen, len);
	ck_assert(memcmp(back, content, len) == 0);
	free(back);
	collected_free(&c);
	envelope_free(e);
	free(content);
	spool_close(s);
}
END_TEST

START_TEST(test_spool_empty_and_small_content)
{
	struct spool *s = spool_open(spool_path);
	struct envelope *e = make_envelope("", 1);
	struct spool_writer *w = spool_writer_begin(s, e);
	char buf[16];
	int fd;

	ck_assert_ptr_nonnull(w);
	ck_assert_int_eq(spool_writer_commit(w, e), 0);
	ck_assert_uint_eq(e->content_size, 0);
	fd = spool_open_content(s, e);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(read(fd, buf, sizeof(buf)), 0);
	close(fd);
	envelope_free(e);

	e = spool_message(s, "\n\nx", 3);
	fd = spool_open_content(s, e);
	ck_assert_int_eq(read(fd, buf, sizeof(buf)), 3);
	ck_assert(memcmp(buf, "\n\nx", 3) == 0);
	close(fd);
	envelope_free(e);
	spool_close(s);
}
END_TEST

START_TEST(test_spool_recover_order)
{
	struct spool *s = spool_open(spool_path);
	struct collected c = { .n = 0 };
	char ids[3][ENVELOPE_ID_MAX];

	for (int i = 0; i < 3; i++) {
		struct envelope *e = spool_message(s, "hello\r\n", 7);

		memcpy(ids[i], e->id, ENVELOPE_ID_MAX);
		envelope_free(e);
	}
	ck_assert_int_eq(spool_recover(s, collect_cb, &c), 3);
	for (int i = 0; i < 3; i++)
		ck_assert_str_eq(c.e[i]->id, ids[i]);
	collected_free(&c);
	/* A second pass on the same handle sees them all again. */
	ck_assert_int_eq(spool_recover(s, collect_cb, &c), 3);
	collected_free(&c);
	spool_close(s);
}
END_TEST

START_TEST(test_spool_abort)
{
	/*
	 * A message smaller than the writer's buffer has no file until it is committed
	 * (_i 0); a larger one has (_i 1). Aborted, neither leaves anything.
	 */
	struct spool *s = spool_open(spool_path);
	struct envelope *e = make_envelope("s@x", 1);
	struct spool_writer *w = spool_writer_begin(s, e);
	struct collected c = { .n = 0 };
	size_t len = _i == 0 ? 100 : 100000;
	char *data = make_content(len);

	ck_assert_ptr_nonnull(w);
	ck_assert_int_eq(spool_writer_write(w, data, len), 0);
	ck_assert_int_eq(count_entries("tmp"), _i);
	spool_writer_abort(w);
	ck_assert_int_eq(count_entries("tmp"), 0);
	ck_assert_int_eq(count_entries("queue"), 0);
	ck_assert_int_eq(spool_recover(s, collect_cb, &c), 0);
	free(data);
	envelope_free(e);
	spool_close(s);
}
END_TEST

START_TEST(test_spool_begin_rejects_bad_envelope)
{
	struct spool *s = spool_open(spool_path);
	struct envelope *e = make_envelope("evil\r\nrcpt x@y", 1);

	ASSERT_FAILS_WITH(spool_writer_begin(s, e), NULL, EINVAL);
	ck_assert_int_eq(count_entries("tmp"), 0);
	ck_assert_int_eq(count_entries("queue"), 0);
	envelope_free(e);
	spool_close(s);
}
END_TEST

START_TEST(test_spool_tmp_cleaned)
{
	struct spool *s = spool_open(spool_path);
	struct envelope *e = make_envelope("s@x", 1);
	struct spool_writer *w = spool_writer_begin(s, e);
	struct collected c = { .n = 0 };

	/* A crash mid-receipt: the writer is never committed nor aborted. */
	char *partial = make_content(100000); /* more than the buffer: in tmp/ already */
	ck_assert_ptr_nonnull(w);
	ck_assert_int_eq(spool_writer_write(w, partial, 100000), 0);
	free(partial);
	write_spool_file("tmp", "0000000000000000", "x", 1);
	ck_assert_int_eq(count_entries("tmp"), 2);

	struct spool *s2 = spool_open(spool_path);
	ck_assert_ptr_nonnull(s2);
	ck_assert_int_eq(count_entries("tmp"), 0);
	ck_assert_int_eq(count_entries("queue"), 0);
	ck_assert_int_eq(spool_recover(s2, collect_cb, &c), 0);
	spool_close(s2);

	/* The stale writer cannot bring the message back. */
	ck_assert_int_eq(spool_writer_commit(w, e), -1);
	ck_assert_int_eq(count_entries("queue"), 0);
	envelope_free(e);
	spool_close(s);
}
END_TEST

START_TEST(test_spool_update_rcpt)
{
	struct spool *s = spool_open(spool_path);
	struct envelope *e = spool_message(s, "body\r\n", 6);
	struct collected c = { .n = 0 };
	char name[64];
	struct stat st;
	char path[PATH_MAX];

	set_state(e, 0, RCPT_DEFERRED, 1, 1700000100, "4.4.1", "connect timeout");
	ck_assert_int_eq(spool_update_rcpt(s, e, 0), 0);
	snprintf(name, sizeof(name), "%s.state", e->id);
	ck_assert(spool_file_exists("queue", name));
	snprintf(path, sizeof(path), "%s/queue/%s", spool_path, name);
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert_int_eq(st.st_mode & 0777, 0600);

	set_state(e, 1, RCPT_BOUNCED, 1, 0, "5.1.1", "550 5.1.1 unknown user");
	ck_assert_int_eq(spool_update_rcpt(s, e, 1), 0);
	set_state(e, 0, RCPT_DELIVERED, 2, 0, "2.0.0", "250 2.0.0 queued");
	ck_assert_int_eq(spool_update_rcpt(s, e, 0), 0);
	ck_assert_int_eq(spool_update_rcpt(s, e, 99), -1);

	ck_assert_int_eq(spool_recover(s, collect_cb, &c), 1);
	ck_assert_int_eq(c.e[0]->rcpts[0].state, RCPT_DELIVERED);
	ck_assert_uint_eq(c.e[0]->rcpts[0].attempts, 2);
	ck_assert_str_eq(c.e[0]->rcpts[0].reason, "250 2.0.0 queued");
	ck_assert_int_eq(c.e[0]->rcpts[1].state, RCPT_BOUNCED);
	ck_assert_str_eq(c.e[0]->rcpts[1].dsn, "5.1.1");
	ck_assert_int_eq(c.e[0]->rcpts[2].state, RCPT_PENDING);
	collected_free(&c);

	/* A crash mid-append leaves a partial record: ignored, then trimmed by the next. */
	{
		int fd = open(path, O_WRONLY | O_APPEND);

		ck_assert_int_ge(fd, 0);
		ck_assert_int_eq(write(fd, "R 2 S 1 0 2.0", 13), 13);
		close(fd);
	}
	ck_assert_int_eq(spool_recover(s, collect_cb, &c), 1);
	ck_assert_int_eq(c.e[0]->rcpts[2].state, RCPT_PENDING);
	collected_free(&c);

	set_state(e, 2, RCPT_DEFERRED, 1, 1700000900, "4.2.2", "mailbox full");
	ck_assert_int_eq(spool_update_rcpt(s, e, 2), 0);
	ck_assert_int_eq(spool_recover(s, collect_cb, &c), 1);
	ck_assert_int_eq(c.e[0]->rcpts[2].state, RCPT_DEFERRED);
	ck_assert_int_eq((long long)c.e[0]->rcpts[2].next_attempt, 1700000900LL);
	ck_assert_int_eq(c.e[0]->rcpts[0].state, RCPT_DELIVERED);
	collected_free(&c);
	{
		/* The partial record is gone from the file, not just skipped. */
		int fd = open(path, O_RDONLY);
		char *data;
		size_t dlen;

		read_all_fd(fd, &data, &dlen);
		close(fd);
		ck_assert_ptr_null(memmem(data, dlen, "R 2 S", 5));
		ck_assert_int_eq(data[dlen - 1], '\n');
		free(data);
	}
	envelope_free(e);
	spool_close(s);
}
END_TEST

START_TEST(test_spool_hold_persists)
{
	struct spool *s = spool_open(spool_path);
	struct envelope *e = spool_message(s, "body\r\n", 6);
	struct collected c = { .n = 0 };

	e->held = true;
	ck_assert_int_eq(spool_update_hold(s, e), 0);
	set_state(e, 0, RCPT_DEFERRED, 1, 1700000100, "4.4.1", "connect timeout");
	ck_assert_int_eq(spool_update_rcpt(s, e, 0), 0);
	ck_assert_int_eq(spool_recover(s, collect_cb, &c), 1);
	ck_assert(c.e[0]->held);
	ck_assert_int_eq(c.e[0]->rcpts[0].state, RCPT_DEFERRED);
	collected_free(&c);

	e->held = false;
	ck_assert_int_eq(spool_update_hold(s, e), 0);
	ck_assert_int_eq(spool_recover(s, collect_cb, &c), 1);
	ck_assert(!c.e[0]->held);
	collected_free(&c);
	envelope_free(e);
	spool_close(s);
}
END_TEST

START_TEST(test_spool_notified_persists)
{
	struct spool *s = spool_open(spool_path);
	struct envelope *e = spool_message(s, "body\r\n", 6);
	struct collected c = { .n = 0 };
	size_t idx[] = { 0, 2 };

	set_state(e, 0, RCPT_BOUNCED, 1, 0, "5.1.1", "host mx[192.0.2.1] said: 550 no");
	set_state(e, 2, RCPT_BOUNCED, 1, 0, "5.1.1", "host mx[192.0.2.1] said: 550 no");
	ck_assert_int_eq(spool_update_rcpt(s, e, 0), 0);
	ck_assert_int_eq(spool_update_rcpt(s, e, 2), 0);
	/* The crash window: bounced on disk, no notification yet. */
	ck_assert_int_eq(spool_recover(s, collect_cb, &c), 1);
	ck_assert_int_eq(c.e[0]->rcpts[0].state, RCPT_BOUNCED);
	ck_assert(!c.e[0]->rcpts[0].notified);
	ck_assert(!c.e[0]->rcpts[2].notified);
	collected_free(&c);

	ck_assert_int_eq(spool_update_notified(s, e, idx, 2), 0);
	ck_assert_int_eq(spool_update_delay_warned(s, e), 0);
	ck_assert_int_eq(spool_recover(s, collect_cb, &c), 1);
	ck_assert(c.e[0]->rcpts[0].notified);
	ck_assert(!c.e[0]->rcpts[1].notified);
	ck_assert(c.e[0]->rcpts[2].notified);
	ck_assert(c.e[0]->delay_warned);
	collected_free(&c);

	/* Bad arguments: nothing appended. */
	idx[1] = 3;
	ASSERT_FAILS_WITH(spool_update_notified(s, e, idx, 2), -1, EINVAL);
	ASSERT_FAILS_WITH(spool_update_notified(s, e, idx, 0), -1, EINVAL);
	envelope_free(e);
	spool_close(s);
}
END_TEST

START_TEST(test_spool_notified_many)
{
	/* More recipients than fit in the on-stack buffer: one append all the same. */
	struct spool *s = spool_open(spool_path);
	struct envelope *e = make_envelope("sender@example.org", 200);
	struct spool_writer *w = spool_writer_begin(s, e);
	struct collected c = { .n = 0 };
	size_t idx[200];

	ck_assert_ptr_nonnull(w);
	ck_assert_int_eq(spool_writer_write(w, "x\r\n", 3), 0);
	ck_assert_int_eq(spool_writer_commit(w, e), 0);
	for (size_t i = 0; i < 200; i++)
		idx[i] = 199 - i;
	ck_assert_int_eq(spool_update_notified(s, e, idx, 200), 0);
	ck_assert_int_eq(spool_recover(s, collect_cb, &c), 1);
	for (size_t i = 0; i < 200; i++)
		ck_assert(c.e[0]->rcpts[i].notified);
	collected_free(&c);
	envelope_free(e);
	spool_close(s);
}
END_TEST

START_TEST(test_spool_update_missing_message)
{
	struct spool *s = spool_open(spool_path);
	struct envelope *e = make_envelope("s@x", 1);

	envelope_new_id(e->id);
	ASSERT_FAILS_WITH(spool_update_rcpt(s, e, 0), -1, ENOENT);
	ck_assert_int_eq(count_entries("queue"), 0);
	envelope_free(e);
	spool_close(s);
}
END_TEST

START_TEST(test_spool_remove)
{
	struct spool *s = spool_open(spool_path);
	struct envelope *e = spool_message(s, "x\r\n", 3), *e2 = spool_message(s, "y\r\n", 3);
	struct collected c = { .n = 0 };

	ck_assert_int_eq(spool_update_rcpt(s, e, 0), 0);
	ck_assert_int_eq(count_entries("queue"), 3);
	ck_assert_int_eq(spool_remove(s, e->id), 0);
	ck_assert_int_eq(count_entries("queue"), 1);
	ck_assert(spool_file_exists("queue", e2->id));
	/* Without a state file. */
	ck_assert_int_eq(spool_remove(s, e2->id), 0);
	ck_assert_int_eq(count_entries("queue"), 0);
	ck_assert_int_eq(spool_recover(s, collect_cb, &c), 0);

	ASSERT_FAILS_WITH(spool_remove(s, e->id), -1, ENOENT);
	ASSERT_FAILS_WITH(spool_remove(s, "../queue"), -1, EINVAL);
	envelope_free(e);
	envelope_free(e2);
	spool_close(s);
}
END_TEST

START_TEST(test_spool_corrupt)
{
	struct spool *s = spool_open(spool_path);
	struct envelope *good = spool_message(s, "ok\r\n", 4);
	struct collected c = { .n = 0 };
	const char *mismatch = "DRSPOOL 1\nid 0000000000000002\narrival 1\nsender \nrcpt a@b\n\nx";
	const char *noend = "DRSPOOL 1\nid 0000000000000003\narrival 1\nsender \nrcpt a@b\n";

	write_spool_file("queue", "0000000000000001", "garbage\n\n", 9);
	write_spool_file("queue", "0000000000000001.state", "R 0 S 1 0 2.0.0 x\n", 18);
	write_spool_file("queue", "0000000000000004", mismatch, strlen(mismatch));
	write_spool_file("queue", "0000000000000003", noend, strlen(noend));
	write_spool_file("queue", "README", "not ours", 8);
	/* Orphan state file: its message was removed before a crash. */
	write_spool_file("queue", "0000000000000009.state", "R 0 S 1 0 2.0.0 x\n", 18);

	ck_assert_int_eq(spool_recover(s, collect_cb, &c), 1);
	ck_assert_str_eq(c.e[0]->id, good->id);
	collected_free(&c);

	ck_assert(spool_file_exists("corrupt", "0000000000000001"));
	ck_assert(spool_file_exists("corrupt", "0000000000000001.state"));
	ck_assert(spool_file_exists("corrupt", "0000000000000003"));
	ck_assert(spool_file_exists("corrupt", "0000000000000004"));
	ck_assert_int_eq(count_entries("corrupt"), 4);
	ck_assert(!spool_file_exists("queue", "0000000000000009.state"));
	ck_assert(spool_file_exists("queue", "README"));
	ck_assert(spool_file_exists("queue", good->id));
	ck_assert_int_eq(count_entries("queue"), 2);

	/* Quarantined files stay out of later recoveries. */
	ck_assert_int_eq(spool_recover(s, collect_cb, &c), 1);
	collected_free(&c);
	envelope_free(good);
	spool_close(s);
}
END_TEST

/* The descriptor the writer holds on tmp/ID, found through /proc. */
static int
find_writer_fd(const char *id)
{
	char want[PATH_MAX + 64], link[64], got[PATH_MAX + 64];
	char real[PATH_MAX];
	ssize_t n;

	ck_assert_ptr_nonnull(realpath(spool_path, real));
	snprintf(want, sizeof(want), "%s/tmp/%s", real, id);
	for (int fd = 3; fd < 1024; fd++) {
		snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
		n = readlink(link, got, sizeof(got) - 1);
		if (n < 0)
			continue;
		got[n] = '\0';
		if (strcmp(got, want) == 0)
			return fd;
	}
	return -1;
}

START_TEST(test_spool_commit_fd_closed)
{
	struct spool *s = spool_open(spool_path);
	struct envelope *e = make_envelope("s@x", 1);
	struct spool_writer *w = spool_writer_begin(s, e);
	int fd;

	char *data = make_content(100000); /* more than the buffer: the file is open */
	ck_assert_ptr_nonnull(w);
	ck_assert_int_eq(spool_writer_write(w, data, 100000), 0);
	free(data);
	fd = find_writer_fd(e->id);
	ck_assert_int_ge(fd, 0);
	close(fd);
	ASSERT_FAILS_WITH(spool_writer_commit(w, e), -1, EBADF);
	ck_assert_int_eq(count_entries("queue"), 0);
	ck_assert_int_eq(count_entries("tmp"), 0);
	envelope_free(e);
	spool_close(s);
}
END_TEST

START_TEST(test_spool_commit_never_replaces)
{
	/*
	 * A queue/ID that appeared after the id was given (an earlier process's clock ran
	 * ahead) is never replaced: the commit fails, the old file stays as it was.
	 */
	struct spool *s = spool_open(spool_path);
	struct envelope *e = make_envelope("s@x", 1);
	struct spool_writer *w = spool_writer_begin(s, e);
	char path[PATH_MAX], buf[8];
	FILE *f;

	ck_assert_ptr_nonnull(w);
	ck_assert_int_eq(spool_writer_write(w, "new\r\n", 5), 0);
	write_spool_file("queue", e->id, "old", 3);
	ASSERT_FAILS_WITH(spool_writer_commit(w, e), -1, EEXIST);
	snprintf(path, sizeof(path), "%s/queue/%s", spool_path, e->id);
	ck_assert_ptr_nonnull(f = fopen(path, "r"));
	ck_assert_uint_eq(fread(buf, 1, sizeof(buf), f), 3);
	ck_assert(memcmp(buf, "old", 3) == 0);
	fclose(f);
	ck_assert_int_eq(count_entries("tmp"), 0);
	envelope_free(e);
	spool_close(s);
}
END_TEST

START_TEST(test_spool_commit_dir_vanished)
{
	struct spool *s = spool_open(spool_path);
	struct envelope *e = make_envelope("s@x", 1);
	struct spool_writer *w = spool_writer_begin(s, e);
	char path[PATH_MAX];

	/* _i 0: a small message, created at commit; _i 1: one in tmp/ already. */
	size_t len = _i == 0 ? 100 : 100000;
	char *data = make_content(len);
	ck_assert_ptr_nonnull(w);
	ck_assert_int_eq(spool_writer_write(w, data, len), 0);
	free(data);
	snprintf(path, sizeof(path), "%s/tmp/%s", spool_path, e->id);
	ck_assert_int_eq(unlink(path) == 0, _i == 1);
	snprintf(path, sizeof(path), "%s/tmp", spool_path);
	ck_assert_int_eq(rmdir(path), 0);
	ASSERT_FAILS_WITH(spool_writer_commit(w, e), -1, ENOENT);
	ck_assert_int_eq(count_entries("queue"), 0);
	envelope_free(e);
	spool_close(s);
}
END_TEST

/*
 * Lowers the soft file size limit (the hard one stays, so it can be restored even when
 * CK_FORK=no runs every test in one process); SIGXFSZ ignored, so write(2) gets EFBIG.
 */
static void
limit_file_size(rlim_t bytes, struct rlimit *rl, struct rlimit *saved)
{
	ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, saved), 0);
	*rl = *saved;
	rl->rlim_cur = bytes;
	signal(SIGXFSZ, SIG_IGN);
	ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, rl), 0);
}

START_TEST(test_spool_write_error)
{
	/*
	 * A full disk is hard to arrange; a file size limit fails write(2) the same way
	 * (EFBIG instead of ENOSPC), halfway through the content.
	 */
	struct spool *s = spool_open(spool_path);
	struct envelope *e = make_envelope("s@x", 1);
	struct spool_writer *w = spool_writer_begin(s, e);
	struct rlimit rl, saved;
	char *content = make_content(300000);
	size_t off;
	int rc = 0, err = 0;

	ck_assert_ptr_nonnull(w);
	limit_file_size(100000, &rl, &saved);
	for (off = 0; off < 300000 && rc == 0; off += 10000) {
		rc = spool_writer_write(w, content + off, 10000);
		err = errno;
	}
	ck_assert_int_eq(rc, -1);
	ck_assert_int_eq(err, EFBIG);
	/* Gone at once, so the space comes back before the session ends. */
	ck_assert_int_eq(count_entries("tmp"), 0);
	ck_assert_int_eq(spool_writer_write(w, "x", 1), -1);
	ASSERT_FAILS_WITH(spool_writer_commit(w, e), -1, EFBIG);
	ck_assert_int_eq(count_entries("queue"), 0);
	ck_assert_int_eq(count_entries("tmp"), 0);

	/* A message that fits still goes through. */
	envelope_free(e);
	e = spool_message(s, content, 1000);
	ck_assert_int_eq(count_entries("queue"), 1);
	ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &saved), 0);
	free(content);
	envelope_free(e);
	spool_close(s);
}
END_TEST

START_TEST(test_spool_commit_error_at_flush)
{
	/* The error surfaces only when commit flushes the buffer. */
	struct spool *s = spool_open(spool_path);
	struct envelope *e = make_envelope("s@x", 1);
	struct spool_writer *w = spool_writer_begin(s, e);
	struct rlimit rl, saved;

	ck_assert_ptr_nonnull(w);
	limit_file_size(20, &rl, &saved);
	ck_assert_int_eq(spool_writer_write(w, "small", 5), 0);
	ASSERT_FAILS_WITH(spool_writer_commit(w, e), -1, EFBIG);
	ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &saved), 0);
	ck_assert_int_eq(count_entries("queue"), 0);
	ck_assert_int_eq(count_entries("tmp"), 0);
	envelope_free(e);
	spool_close(s);
}
END_TEST

/* ---- group commit (spool_commit.c) ---- */

#define GC_MAX 64

struct gc_result {
	int calls;            /* callbacks so far */
	int errors[GC_MAX];   /* per message, in callback order */
	int order[GC_MAX];    /* which message each callback was for */
};

struct gc_arg {
	struct gc_result *r;
	int index;
};

static void
gc_done(int error, void *arg)
{
	struct gc_arg *a = arg;

	ck_assert_int_lt(a->r->calls, GC_MAX);
	a->r->errors[a->r->calls] = error;
	a->r->order[a->r->calls] = a->index;
	a->r->calls++;
}

/* A writer for e with some content, ready to commit. */
static struct spool_writer *
gc_writer(struct spool *s, struct envelope *e, size_t reserve)
{
	static const char content[] = "Subject: x\r\n\r\nbody\r\n";
	struct spool_writer *w = spool_writer_begin_reserve(s, e, reserve);

	ck_assert_ptr_nonnull(w);
	ck_assert_int_eq(spool_writer_write(w, content, sizeof(content) - 1), 0);
	return w;
}

/* Runs the loop until n callbacks came (bounded: 10 s). */
static void
gc_wait(struct event_base *base, struct gc_result *r, int n)
{
	for (int i = 0; i < 1000 && r->calls < n; i++) {
		struct timeval tv = { 0, 10000 };
		event_base_loopexit(base, &tv);
		event_base_dispatch(base);
	}
	ck_assert_int_eq(r->calls, n);
}

START_TEST(test_group_commit_many)
{
	/*
	 * Many commits handed over at once: all durable, each callback once;
	 * with an fsync per file (_i 0) and with one syncfs per batch (_i 1).
	 */
	struct event_base *base = event_base_new();
	struct spool *s = spool_open(spool_path);
	struct spool_committer *c = spool_committer_new(base, s, _i == 1);
	struct envelope *e[40];
	struct gc_arg args[40];
	struct gc_result r = { 0 };
	unsigned long commits, batches;

	ck_assert_ptr_nonnull(c);
	for (int i = 0; i < 40; i++) {
		e[i] = make_envelope("s@x", 2);
		args[i] = (struct gc_arg){ &r, i };
		spool_commit(c, gc_writer(s, e[i], 0), e[i], gc_done, &args[i]);
		ck_assert_int_eq(r.calls, 0); /* never from inside spool_commit */
		ck_assert_uint_eq(e[i]->content_size, 20);
	}
	gc_wait(base, &r, 40);
	/* Batches finish in any order (several commit threads): each message once. */
	bool seen[40] = { false };
	for (int k = 0; k < 40; k++) {
		ck_assert_int_eq(r.errors[k], 0);
		ck_assert(!seen[r.order[k]]);
		seen[r.order[k]] = true;
	}
	for (int i = 0; i < 40; i++)
		ck_assert(spool_file_exists("queue", e[i]->id));
	ck_assert_int_eq(count_entries("tmp"), 0);
	struct spool_commit_stats st;
	spool_committer_stats(c, &st);
	commits = st.commits;
	batches = st.batches;
	ck_assert(st.commit_s > 0);
	ck_assert_uint_eq(st.removals, 0);
	ck_assert_uint_eq(commits, 40);
	ck_assert_uint_ge(batches, 1);
	ck_assert_uint_le(batches, 40);
	spool_committer_free(c);
	spool_close(s);

	ck_assert_int_eq(count_entries("queue"), 40);
	/* What was committed reads back whole. */
	s = spool_open(spool_path);
	ck_assert_int_eq(spool_recover(s, recover_free, NULL), 40);
	spool_close(s);
	for (int i = 0; i < 40; i++)
		envelope_free(e[i]);
	event_base_free(base);
}
END_TEST

START_TEST(test_group_commit_synchronous)
{
	/* No committer: the callback runs before spool_commit returns. */
	struct spool *s = spool_open(spool_path);
	struct envelope *e = make_envelope("s@x", 1);
	struct gc_result r = { 0 };
	struct gc_arg a = { &r, 7 };

	spool_commit(NULL, gc_writer(s, e, 0), e, gc_done, &a);
	ck_assert_int_eq(r.calls, 1);
	ck_assert_int_eq(r.errors[0], 0);
	ck_assert(spool_file_exists("queue", e->id));
	envelope_free(e);
	spool_close(s);
}
END_TEST

START_TEST(test_group_commit_failures_are_per_message)
{
	/*
	 * One message whose prepend does not fit its reserved room fails (EOVERFLOW) and
	 * leaves nothing behind; the others of the same batch are queued.
	 */
	struct event_base *base = event_base_new();
	struct spool *s = spool_open(spool_path);
	struct spool_committer *c = spool_committer_new(base, s, false);
	struct envelope *e[3];
	struct gc_arg args[3];
	struct gc_result r = { 0 };

	for (int i = 0; i < 3; i++) {
		e[i] = make_envelope("s@x", 1);
		args[i] = (struct gc_arg){ &r, i };
	}
	spool_commit(c, gc_writer(s, e[0], 0), e[0], gc_done, &args[0]);
	struct spool_writer *w = gc_writer(s, e[1], 8);
	e[1]->prepend = xstrdup("DKIM-Signature: far more than the eight bytes reserved\r\n");
	spool_commit(c, w, e[1], gc_done, &args[1]);
	spool_commit(c, gc_writer(s, e[2], 0), e[2], gc_done, &args[2]);
	gc_wait(base, &r, 3);
	for (int k = 0; k < 3; k++)
		ck_assert_int_eq(r.errors[k], r.order[k] == 1 ? EOVERFLOW : 0);
	ck_assert(spool_file_exists("queue", e[0]->id));
	ck_assert(!spool_file_exists("queue", e[1]->id));
	ck_assert(spool_file_exists("queue", e[2]->id));
	ck_assert_int_eq(count_entries("tmp"), 0);
	spool_committer_free(c);
	for (int i = 0; i < 3; i++)
		envelope_free(e[i]);
	spool_close(s);
	event_base_free(base);
}
END_TEST

START_TEST(test_group_commit_parallel_fsync_failure)
{
	/*
	 * The parallel fsyncs of a batch: one file whose fsync fails (its descriptor now
	 * points at /dev/null: EINVAL) fails alone, the others of the batch are queued.
	 */
	struct event_base *base = event_base_new();
	struct spool *s = spool_open(spool_path);
	struct spool_committer *c = spool_committer_new(base, s, false);
	struct envelope *e[6];
	struct spool_writer *w[6];
	struct gc_arg args[6];
	struct gc_result r = { 0 };
	char *big = make_content(100000); /* in tmp/ already: its fd is open */

	for (int i = 0; i < 6; i++) {
		e[i] = make_envelope("s@x", 1);
		args[i] = (struct gc_arg){ &r, i };
		w[i] = spool_writer_begin(s, e[i]);
		ck_assert_ptr_nonnull(w[i]);
		ck_assert_int_eq(spool_writer_write(w[i], i == 3 ? big : "x\r\n",
		    i == 3 ? 100000 : 3), 0);
	}
	/* Not closed: its number could be reused by the files the commit thread creates. */
	int fd = find_writer_fd(e[3]->id), null = open("/dev/null", O_RDONLY);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(dup2(null, fd), fd);
	close(null);
	for (int i = 0; i < 6; i++)
		spool_commit(c, w[i], e[i], gc_done, &args[i]);
	gc_wait(base, &r, 6);
	for (int k = 0; k < 6; k++)
		ck_assert_int_eq(r.errors[k], r.order[k] == 3 ? EINVAL : 0);
	for (int i = 0; i < 6; i++)
		ck_assert(spool_file_exists("queue", e[i]->id) == (i != 3));
	ck_assert_int_eq(count_entries("tmp"), 0);
	spool_committer_free(c);
	for (int i = 0; i < 6; i++)
		envelope_free(e[i]);
	free(big);
	spool_close(s);
	event_base_free(base);
}
END_TEST

START_TEST(test_group_commit_batch_fails_together)
{
	/*
	 * queue/ gone: the renames fail, every message of the batch hears an error and
	 * none is left in tmp/ either.
	 */
	struct event_base *base = event_base_new();
	struct spool *s = spool_open(spool_path);
	struct spool_committer *c = spool_committer_new(base, s, false);
	struct envelope *e[4];
	struct gc_arg args[4];
	struct gc_result r = { 0 };
	char path[PATH_MAX];

	snprintf(path, sizeof(path), "%s/queue", spool_path);
	ck_assert_int_eq(rmdir(path), 0);
	for (int i = 0; i < 4; i++) {
		e[i] = make_envelope("s@x", 1);
		args[i] = (struct gc_arg){ &r, i };
		spool_commit(c, gc_writer(s, e[i], 0), e[i], gc_done, &args[i]);
	}
	gc_wait(base, &r, 4);
	for (int i = 0; i < 4; i++)
		ck_assert_int_ne(r.errors[i], 0);
	ck_assert_int_eq(count_entries("tmp"), 0);
	spool_committer_free(c);
	for (int i = 0; i < 4; i++)
		envelope_free(e[i]);
	spool_close(s);
	event_base_free(base);
}
END_TEST

START_TEST(test_group_commit_free_drains)
{
	/* Freed with commits in flight: their callbacks run first and the files are in. */
	struct event_base *base = event_base_new();
	struct spool *s = spool_open(spool_path);
	struct spool_committer *c = spool_committer_new(base, s, false);
	struct envelope *e[10];
	struct gc_arg args[10];
	struct gc_result r = { 0 };

	for (int i = 0; i < 10; i++) {
		e[i] = make_envelope("s@x", 1);
		args[i] = (struct gc_arg){ &r, i };
		spool_commit(c, gc_writer(s, e[i], 0), e[i], gc_done, &args[i]);
	}
	/* A removal in flight too (of a message that is not there: its error comes back). */
	struct gc_arg rm = { &r, 10 };
	spool_remove_later(c, s, "0000000000000000", gc_done, &rm);
	spool_committer_free(c);
	ck_assert_int_eq(r.calls, 11);
	/* The removal has a thread of its own: its callback may come at any place. */
	for (int k = 0; k < 11; k++)
		ck_assert_int_eq(r.errors[k], r.order[k] == 10 ? ENOENT : 0);
	for (int i = 0; i < 10; i++) {
		ck_assert(spool_file_exists("queue", e[i]->id));
		envelope_free(e[i]);
	}
	spool_close(s);
	event_base_free(base);
}
END_TEST

START_TEST(test_remove_later)
{
	/*
	 * Removals go through the commit thread, in one batch with commits: the files (and
	 * a state file) are gone when the callback runs, the others stay; without a
	 * committer the removal is done before spool_remove_later returns.
	 */
	struct event_base *base = event_base_new();
	struct spool *s = spool_open(spool_path);
	struct spool_committer *c = spool_committer_new(base, s, false);
	struct envelope *e[5];
	struct gc_arg args[10];
	struct gc_result r = { 0 };

	for (int i = 0; i < 5; i++) {
		e[i] = make_envelope("s@x", 1);
		args[i] = (struct gc_arg){ &r, i };
		spool_commit(c, gc_writer(s, e[i], 0), e[i], gc_done, &args[i]);
	}
	gc_wait(base, &r, 5);
	ck_assert_int_eq(spool_update_rcpt(s, e[0], 0), 0);
	ck_assert_int_eq(count_entries("queue"), 6);
	args[5] = (struct gc_arg){ &r, 5 };
	args[6] = (struct gc_arg){ &r, 6 };
	spool_remove_later(c, s, e[0]->id, gc_done, &args[5]);
	spool_remove_later(c, s, e[1]->id, gc_done, &args[6]);
	ck_assert_int_eq(r.calls, 5); /* never from inside spool_remove_later */
	gc_wait(base, &r, 7);
	ck_assert_int_eq(r.errors[5], 0);
	ck_assert_int_eq(r.errors[6], 0);
	ck_assert_int_eq(count_entries("queue"), 3);
	struct spool_commit_stats st;
	spool_committer_stats(c, &st);
	ck_assert_uint_eq(st.commits, 5);
	ck_assert_uint_eq(st.removals, 2);
	ck_assert(!spool_file_exists("queue", e[0]->id));
	ck_assert(!spool_file_exists("queue", e[1]->id));
	ck_assert(spool_file_exists("queue", e[2]->id));

	args[7] = (struct gc_arg){ &r, 7 };
	spool_remove_later(NULL, s, e[2]->id, gc_done, &args[7]);
	ck_assert_int_eq(r.calls, 8);
	ck_assert_int_eq(r.errors[7], 0);
	ck_assert(!spool_file_exists("queue", e[2]->id));
	args[8] = (struct gc_arg){ &r, 8 };
	spool_remove_later(NULL, s, "not an id", gc_done, &args[8]);
	ck_assert_int_eq(r.errors[8], EINVAL);

	spool_committer_free(c);
	for (int i = 0; i < 5; i++)
		envelope_free(e[i]);
	spool_close(s);
	event_base_free(base);
}
END_TEST

START_TEST(test_spool_own_filesystem)
{
	/* A directory under the test's temporary directory is not a mount point. */
	struct spool *s = spool_open(spool_path);

	ck_assert_ptr_nonnull(s);
	ck_assert(!spool_own_filesystem(s));
	spool_close(s);
}
END_TEST

static Suite *
envelope_suite(void)
{
	Suite *s = suite_create("envelope");
	TCase *tc = tcase_create("records");
	TCase *sp = tcase_create("spool");

	tcase_add_test(tc, test_header_exact_text);
	tcase_add_test(tc, test_header_roundtrip);
	tcase_add_test(tc, test_header_content_follows);
	tcase_add_test(tc, test_header_null_sender);
	tcase_add_test(tc, test_header_utf8);
	tcase_add_test(tc, test_header_many_rcpts);
	tcase_add_test(tc, test_header_encode_rejects);
	tcase_add_test(tc, test_header_truncated_everywhere);
	tcase_add_test(tc, test_header_malformed);
	tcase_add_test(tc, test_header_nul_rejected);
	tcase_add_test(tc, test_header_unknown_keys);
	tcase_add_test(tc, test_state_exact_text);
	tcase_add_test(tc, test_state_roundtrip_last_wins);
	tcase_add_test(tc, test_state_partial_and_garbage);
	tcase_add_test(tc, test_state_every_cut);
	tcase_add_test(tc, test_state_reason_sanitised);
	tcase_add_test(tc, test_id_format_and_uniqueness);
	tcase_add_test(tc, test_id_valid);
	tcase_add_test(tc, test_state_hold_record);
	tcase_add_test(tc, test_state_notified_records);
	tcase_add_test(tc, test_state_notified_malformed);
	tcase_add_test(tc, test_state_old_format_owes_dsn);
	tcase_add_test(tc, test_state_names);
	suite_add_tcase(s, tc);

	tcase_add_checked_fixture(sp, spool_setup, spool_teardown);
	tcase_set_timeout(sp, 30);
	tcase_add_test(sp, test_spool_layout);
	tcase_add_test(sp, test_spool_hold_persists);
	tcase_add_test(sp, test_spool_notified_persists);
	tcase_add_test(sp, test_spool_notified_many);
	tcase_add_test(sp, test_spool_open_fails);
	tcase_add_test(sp, test_spool_write_commit_recover);
	tcase_add_test(sp, test_spool_empty_and_small_content);
	tcase_add_loop_test(sp, test_spool_prepend_memory_and_file, 0, 2);
	tcase_add_test(sp, test_spool_recover_order);
	tcase_add_loop_test(sp, test_spool_abort, 0, 2);
	tcase_add_test(sp, test_spool_begin_rejects_bad_envelope);
	tcase_add_test(sp, test_spool_tmp_cleaned);
	tcase_add_test(sp, test_spool_update_rcpt);
	tcase_add_test(sp, test_spool_update_missing_message);
	tcase_add_test(sp, test_spool_remove);
	tcase_add_test(sp, test_spool_corrupt);
	tcase_add_test(sp, test_spool_commit_fd_closed);
	tcase_add_loop_test(sp, test_spool_commit_dir_vanished, 0, 2);
	tcase_add_test(sp, test_spool_commit_never_replaces);
	tcase_add_test(sp, test_spool_write_error);
	tcase_add_test(sp, test_spool_commit_error_at_flush);
	tcase_add_loop_test(sp, test_group_commit_many, 0, 2);
	tcase_add_test(sp, test_remove_later);
	tcase_add_test(sp, test_spool_own_filesystem);
	tcase_add_test(sp, test_group_commit_synchronous);
	tcase_add_test(sp, test_group_commit_failures_are_per_message);
	tcase_add_test(sp, test_group_commit_batch_fails_together);
	tcase_add_test(sp, test_group_commit_parallel_fsync_failure);
	tcase_add_test(sp, test_group_commit_free_drains);
	suite_add_tcase(s, sp);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(envelope_suite());
	int failed;

	log_init("check_envelope", LOG_TARGET_STDERR, LOG_LEVEL_ERROR);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
