/*
 * Unit tests for bounce.c: compose DSNs and parse them back (a small MIME splitter
 * here, and Python's email package when python3 is present) to check every field.
 */
#include "config.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bounce.h"
#include "util.h"

static const char HEADERS[] =
    "Received: from client ([127.0.0.1])\r\n\tby relay.test (dualrelay) with ESMTP id X\r\n"
    "From: Alice <alice@example.net>\r\nTo: bob@example.org\r\nSubject: hello\r\n"
    "Message-ID: <m1@example.net>\r\n\r\n";

static struct bounce_rcpt rcpts[] = {
	{ "bob@example.org", "5.1.1", "host mx.example.org[192.0.2.25] said: 550 5.1.1 "
	  "<bob@example.org>: Recipient address rejected: User unknown (in reply to RCPT TO "
	  "command)", "mx.example.org", "550 5.1.1 <bob@example.org>: Recipient address "
	  "rejected: User unknown", AF_INET6, 1790000100, BOUNCE_FAILED },
	{ "carol@example.com", "5.1.2", "Host or domain name not found. Name service error "
	  "for name=example.com type=MX: Host not found", NULL, NULL, AF_UNSPEC, 1790000100,
	  BOUNCE_FAILED },
	{ "dörte@bücher.example", "5.7.1", "host mx[2001:db8::1] said: 550 5.7.1 no",
	  "mx.bücher.example", "550 5.7.1 no", AF_INET, 1790000100, BOUNCE_FAILED },
};

static char *
compose(size_t n, enum bounce_action action, size_t *len)
{
	struct bounce_rcpt r[3];
	memcpy(r, rcpts, sizeof(r));
	for (size_t i = 0; i < n; i++)
		r[i].action = action;
	struct bounce_msg m = { "relay.test", "6B02B11DDEF860A0", 1790000000, "alice@example.net",
		HEADERS, strlen(HEADERS), r, n, "6B02B11DDEF860A0" };
	return bounce_compose(&m, 1790000200, len);
}

/* The boundary from the Content-Type header. */
static char *
boundary_of(const char *msg)
{
	const char *b = strstr(msg, "boundary=\"");
	ck_assert_ptr_nonnull(b);
	b += 10;
	return xstrndup(b, strcspn(b, "\""));
}

/* Part k (0-based) between boundary lines, headers included. */
static char *
part(const char *msg, const char *boundary, int k)
{
	char *delim = xasprintf("\r\n--%s", boundary);
	const char *p = msg;
	for (int i = 0; i <= k; i++) {
		p = strstr(p, delim);
		ck_assert_ptr_nonnull(p);
		p += strlen(delim) + 2;
	}
	const char *e = strstr(p, delim);
	ck_assert_ptr_nonnull(e);
	free(delim);
	return xstrndup(p, (size_t)(e - p));
}

/* Value of field name in the block (unfolded), or NULL. */
static char *
field(const char *block, const char *name)
{
	char *pat = xasprintf("\r\n%s: ", name);
	char *blk = xasprintf("\r\n%s", block);
	const char *p = strstr(blk, pat);
	char *v = NULL;
	if (p) {
		p += strlen(pat);
		size_t cap = 0, len = 0;
		while (*p) {
			if (p[0] == '\r' && p[1] == '\n' && (p[2] == ' ' || p[2] == '\t')) {
				p += 2;
				continue;
			}
			if (p[0] == '\r' && p[1] == '\n')
				break;
			v = xgrow(v, 1, len + 2, &cap);
			v[len++] = *p++;
			v[len] = '\0';
		}
	}
	free(pat);
	free(blk);
	return v;
}

static void
assert_field(const char *block, const char *name, const char *want)
{
	char *v = field(block, name);
	ck_assert_msg(v != NULL, "no %s field", name);
	ck_assert_str_eq(v, want);
	free(v);
}

static void
assert_has_field(const char *block, const char *name)
{
	char *v = field(block, name);
	ck_assert_msg(v != NULL && v[0] != '\0', "no %s field", name);
	free(v);
}

static void
assert_wellformed(const char *msg, size_t len)
{
	size_t col = 0;
	for (size_t i = 0; i < len; i++) {
		if (msg[i] == '\n') {
			ck_assert_msg(i > 0 && msg[i - 1] == '\r', "bare LF at %zu", i);
			col = 0;
		} else if (msg[i] == '\r') {
			ck_assert_msg(i + 1 < len && msg[i + 1] == '\n', "bare CR at %zu", i);
		} else {
			col++;
			ck_assert_msg(col <= 998, "line longer than 998 at %zu", i);
		}
	}
}

START_TEST(test_failed_one_recipient)
{
	size_t len;
	char *msg = compose(1, BOUNCE_FAILED, &len);
	ck_assert_uint_eq(strlen(msg), len);
	assert_wellformed(msg, len);
	char *hdr = xstrndup(msg, (size_t)(strstr(msg, "\r\n\r\n") - msg) + 2);
	assert_field(hdr, "From", "Mail Delivery System <MAILER-DAEMON@relay.test>");
	assert_field(hdr, "To", "<alice@example.net>");
	assert_field(hdr, "Subject", "Undelivered Mail Returned to Sender");
	assert_field(hdr, "Auto-Submitted", "auto-replied");
	ck_assert_ptr_nonnull(strstr(hdr, "multipart/report; report-type=delivery-status;"));
	char *b = boundary_of(msg);

	char *text = part(msg, b, 0);
	ck_assert_ptr_nonnull(strstr(text, "Content-Type: text/plain"));
	ck_assert_ptr_nonnull(strstr(text, "This is the mail system at host relay.test."));
	ck_assert_ptr_nonnull(strstr(text, "<bob@example.org>: host mx.example.org"));
	ck_assert_ptr_nonnull(strstr(text, "over IPv6"));

	char *st = part(msg, b, 1);
	ck_assert_ptr_nonnull(strstr(st, "Content-Type: message/delivery-status\r\n\r\n"));
	const char *fields = strstr(st, "\r\n\r\n") + 4;
	assert_field(fields, "Reporting-MTA", "dns; relay.test");
	assert_has_field(fields, "Arrival-Date");
	const char *rblock = strstr(fields, "\r\n\r\n");
	ck_assert_ptr_nonnull(rblock);
	rblock += 4;
	assert_field(rblock, "Final-Recipient", "rfc822; bob@example.org");
	assert_field(rblock, "Action", "failed");
	assert_field(rblock, "Status", "5.1.1");
	assert_field(rblock, "Remote-MTA", "dns; mx.example.org");
	assert_field(rblock, "Diagnostic-Code", "smtp; 550 5.1.1 <bob@example.org>: Recipient "
	    "address rejected: User unknown");
	assert_has_field(rblock, "Last-Attempt-Date");

	char *h = part(msg, b, 2);
	ck_assert_ptr_nonnull(strstr(h, "Content-Type: text/rfc822-headers\r\n\r\n"));
	ck_assert_ptr_nonnull(strstr(h, "Subject: hello\r\n"));
	ck_assert_ptr_nonnull(strstr(h, "Message-ID: <m1@example.net>\r\n"));
	ck_assert_ptr_nonnull(strstr(msg, "\r\n--"));
	char *closing = xasprintf("\r\n--%s--\r\n", b);
	ck_assert_ptr_nonnull(strstr(msg, closing));
	free(closing);
	free(h);
	free(st);
	free(text);
	free(b);
	free(hdr);
	free(msg);
}
END_TEST

START_TEST(test_several_recipients_and_utf8)
{
	size_t len;
	char *msg = compose(3, BOUNCE_FAILED, &len);
	assert_wellformed(msg, len);
	char *b = boundary_of(msg);
	char *st = part(msg, b, 1);
	/* three recipient blocks after the per-message block */
	int blocks = 0;
	for (const char *p = st; (p = strstr(p, "Final-Recipient: ")) != NULL; p++)
		blocks++;
	ck_assert_int_eq(blocks, 3);
	ck_assert_ptr_nonnull(strstr(st, "Final-Recipient: rfc822; carol@example.com"));
	ck_assert_ptr_nonnull(strstr(st, "Final-Recipient: utf-8; dörte@bücher.example"));
	/* no Remote-MTA for the recipient nothing answered for */
	const char *carol = strstr(st, "carol@example.com");
	const char *next = strstr(carol, "Final-Recipient");
	char *cblock = xstrndup(carol, (size_t)(next - carol));
	ck_assert_ptr_null(strstr(cblock, "Remote-MTA"));
	ck_assert_ptr_nonnull(strstr(cblock, "Status: 5.1.2"));
	free(cblock);
	char *text = part(msg, b, 0);
	ck_assert_ptr_nonnull(strstr(text, "charset=utf-8"));
	ck_assert_ptr_nonnull(strstr(text, "over IPv4"));
	free(text);
	free(st);
	free(b);
	free(msg);
}
END_TEST

START_TEST(test_delayed)
{
	size_t len;
	char *msg = compose(1, BOUNCE_DELAYED, &len);
	ck_assert_ptr_nonnull(strstr(msg, "Subject: Delayed Mail (still being retried)\r\n"));
	ck_assert_ptr_nonnull(strstr(msg, "Action: delayed\r\n"));
	ck_assert_ptr_nonnull(strstr(msg, "still in the queue"));
	free(msg);
}
END_TEST

START_TEST(test_long_reason_folded)
{
	char longreason[3000];
	memset(longreason, 'x', sizeof(longreason) - 1);
	longreason[sizeof(longreason) - 1] = '\0';
	struct bounce_rcpt r = rcpts[0];
	r.reason = longreason;
	r.diagnostic = longreason;
	struct bounce_msg m = { "relay.test", "ID", 1, "a@b.example", HEADERS, strlen(HEADERS), &r, 1,
		"ID" };
	size_t len;
	char *msg = bounce_compose(&m, 2, &len);
	assert_wellformed(msg, len);
	free(msg);
}
END_TEST

START_TEST(test_boundary_not_in_content)
{
	/* Headers that contain the natural first boundary candidate. */
	char headers[512];
	snprintf(headers, sizeof(headers), "Subject: --ID.2.0/relay.test\r\n\r\n");
	struct bounce_msg m = { "relay.test", "ID", 1, "a@b.example", headers, strlen(headers),
		rcpts, 1, "ID" };
	size_t len;
	char *msg = bounce_compose(&m, 2, &len);
	char *b = boundary_of(msg);
	ck_assert_str_ne(b, "ID.2.0/relay.test");
	free(b);
	free(msg);
}
END_TEST

START_TEST(test_body_never_included)
{
	const char *withbody = "Subject: s\r\n\r\nSECRET BODY\r\n";
	struct bounce_msg m = { "relay.test", "ID", 1, "a@b.example", withbody, strlen(withbody),
		rcpts, 1, "ID" };
	size_t len;
	char *msg = bounce_compose(&m, 2, &len);
	ck_assert_ptr_null(strstr(msg, "SECRET"));
	ck_assert_ptr_nonnull(strstr(msg, "Subject: s\r\n"));
	free(msg);
}
END_TEST

START_TEST(test_should_send)
{
	ck_assert(!bounce_should_send(""));
	ck_assert(!bounce_should_send(NULL));
	ck_assert(bounce_should_send("alice@example.net"));
}
END_TEST

/* An independent parser: Python's email package, when python3 is installed. */
START_TEST(test_python_email_parses_it)
{
	if (access("/usr/bin/python3", X_OK) != 0)
		return;
	size_t len;
	char *msg = compose(2, BOUNCE_FAILED, &len);
	char path[] = "/tmp/check_bounce.XXXXXX";
	int fd = mkstemp(path);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, msg, len), (ssize_t)len);
	close(fd);
	char *cmd = xasprintf("/usr/bin/python3 -c '"
	    "import email, email.policy, sys\n"
	    "m = email.message_from_bytes(open(sys.argv[1], \"rb\").read(), policy=email.policy.default)\n"
	    "assert m.get_content_type() == \"multipart/report\", m.get_content_type()\n"
	    "assert m.get_param(\"report-type\") == \"delivery-status\"\n"
	    "parts = list(m.iter_parts())\n"
	    "assert [p.get_content_type() for p in parts] == [\"text/plain\", \"message/delivery-status\", \"text/rfc822-headers\"], [p.get_content_type() for p in parts]\n"
	    "blocks = parts[1].get_payload()\n"
	    "assert len(blocks) == 3, len(blocks)\n"
	    "assert blocks[0][\"Reporting-MTA\"] == \"dns; relay.test\"\n"
	    "assert blocks[1][\"Final-Recipient\"] == \"rfc822; bob@example.org\"\n"
	    "assert blocks[1][\"Action\"] == \"failed\" and blocks[1][\"Status\"] == \"5.1.1\"\n"
	    "assert blocks[2][\"Final-Recipient\"] == \"rfc822; carol@example.com\"\n"
	    "' %s", path);
	int rc = system(cmd);
	unlink(path);
	free(cmd);
	free(msg);
	ck_assert_int_eq(rc, 0);
}
END_TEST

static Suite *
bounce_suite(void)
{
	Suite *s = suite_create("bounce");
	TCase *tc = tcase_create("compose");
	tcase_add_test(tc, test_failed_one_recipient);
	tcase_add_test(tc, test_several_recipients_and_utf8);
	tcase_add_test(tc, test_delayed);
	tcase_add_test(tc, test_long_reason_folded);
	tcase_add_test(tc, test_boundary_not_in_content);
	tcase_add_test(tc, test_body_never_included);
	tcase_add_test(tc, test_should_send);
	tcase_add_test(tc, test_python_email_parses_it);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(bounce_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
