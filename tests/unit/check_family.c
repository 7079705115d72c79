/* Unit tests for family decisions: SMTP-level fallback matching and the health memory. */
#include "config.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fallback.h"
#include "health.h"
#include "log.h"

static struct smtp_reply
reply(int code, const char *enhanced, const char *text)
{
	struct smtp_reply r;
	memset(&r, 0, sizeof(r));
	r.code = code;
	snprintf(r.enhanced, sizeof(r.enhanced), "%s", enhanced);
	r.text = (char *)text;
	r.complete = true;
	r.nlines = 1;
	return r;
}

static bool
blames(int code, const char *enh, const char *text, enum smtp_client_stage st)
{
	struct smtp_reply r = reply(code, enh, text);
	return fallback_reply_blames_family(&r, st, NULL, 0);
}

START_TEST(test_real_wordings_match)
{
	ck_assert(blames(550, "5.7.1", "[2001:db8::1] The IP you're using to send mail is not "
	    "authorized... This message does not meet IPv6 sending guidelines regarding PTR "
	    "records and authentication.", SMTP_STAGE_BODY));
	ck_assert(blames(550, "5.7.25", "The IP address sending this message does not have a PTR "
	    "record setup", SMTP_STAGE_RCPT));
	ck_assert(blames(421, "4.7.0", "The IP address sending this message does not have a PTR "
	    "record setup", SMTP_STAGE_MAIL));
	ck_assert(blames(550, "5.7.1", "The sending IP's PTR record's forward DNS entry doesn't "
	    "match", SMTP_STAGE_MAIL));
	ck_assert(blames(450, "4.7.1", "Client host rejected: cannot find your reverse hostname, "
	    "[2001:db8::1]", SMTP_STAGE_RCPT));
	ck_assert(blames(550, "5.7.1", "Client host rejected: cannot find your hostname, "
	    "[2001:db8::1]", SMTP_STAGE_RCPT));
	ck_assert(blames(550, "", "Sending host must have a reverse DNS record", SMTP_STAGE_MAIL));
	ck_assert(blames(550, "", "Service unavailable, this server does not accept email over "
	    "IPv6", SMTP_STAGE_GREETING));
	ck_assert(blames(554, "", "Reverse DNS for this IP failed", SMTP_STAGE_GREETING));
	ck_assert(blames(550, "", "REJECTED: no DNS PTR record for 2001:db8::1", SMTP_STAGE_RCPT));
	ck_assert(blames(550, "", "No RDNS", SMTP_STAGE_RCPT));
}
END_TEST

START_TEST(test_codes_alone_match)
{
	ck_assert(blames(550, "5.7.25", "go away", SMTP_STAGE_RCPT));
	ck_assert(blames(421, "4.7.23", "try later", SMTP_STAGE_MAIL));
	ck_assert(blames(550, "5.7.510", "nope", SMTP_STAGE_RCPT));
	/* 421 during the greeting: dropped before we could say anything. */
	ck_assert(blames(421, "", "Service not available", SMTP_STAGE_GREETING));
}
END_TEST

START_TEST(test_other_rejections_do_not_match)
{
	ck_assert(!blames(550, "5.1.1", "<x@example.org>: Recipient address rejected: User "
	    "unknown in local recipient table", SMTP_STAGE_RCPT));
	ck_assert(!blames(552, "5.3.4", "Message size exceeds fixed limit", SMTP_STAGE_BODY));
	ck_assert(!blames(421, "4.7.0", "Too many connections", SMTP_STAGE_MAIL));
	ck_assert(!blames(250, "2.0.0", "no rdns but ok", SMTP_STAGE_RCPT)); /* not a rejection */
	ck_assert(!blames(550, "5.7.1", "Message rejected as spam", SMTP_STAGE_BODY));
}
END_TEST

START_TEST(test_extra_patterns)
{
	struct smtp_reply r = reply(550, "5.7.1", "Our policy: IPv6 senders need FCrDNS");
	char *extra[] = { "needs fcrdns", "need fcrdns" };
	ck_assert(!fallback_reply_blames_family(&r, SMTP_STAGE_RCPT, NULL, 0));
	ck_assert(fallback_reply_blames_family(&r, SMTP_STAGE_RCPT, extra, 2));
}
END_TEST

/* ---- health ---- */

static const struct health_params P = { 600, 21600, 300, 3, 1800, 600 };

START_TEST(test_health_penalty_grows_and_clears)
{
	struct health *h = health_new(NULL, &P);
	time_t t = 1000000;
	ck_assert(!health_avoid(h, "default", "mx.example.org", AF_INET6, t, NULL));
	health_report(h, "default", "mx.example.org", AF_INET6, HEALTH_CONNECT_FAILED, t);
	ck_assert(health_avoid(h, "default", "MX.example.org", AF_INET6, t + 1, NULL));
	ck_assert(!health_avoid(h, "default", "mx.example.org", AF_INET, t + 1, NULL));
	ck_assert(!health_avoid(h, "default", "mx.example.org", AF_INET6, t + 601, NULL));
	/* second failure: 20 minutes */
	health_report(h, "default", "mx.example.org", AF_INET6, HEALTH_FAMILY_REJECTED, t + 700);
	ck_assert(health_avoid(h, "default", "mx.example.org", AF_INET6, t + 700 + 1199, NULL));
	ck_assert(!health_avoid(h, "default", "mx.example.org", AF_INET6, t + 700 + 1201, NULL));
	/* success clears the count */
	health_report(h, "default", "mx.example.org", AF_INET6, HEALTH_OK, t + 5000);
	health_report(h, "default", "mx.example.org", AF_INET6, HEALTH_CONNECT_TIMEOUT, t + 6000);
	ck_assert(!health_avoid(h, "default", "mx.example.org", AF_INET6, t + 6601, NULL));
	health_free(h);
}
END_TEST

START_TEST(test_health_penalty_capped)
{
	struct health *h = health_new(NULL, &P);
	time_t t = 1000000;
	for (int i = 0; i < 20; i++)
		health_report(h, "default", "mx", AF_INET6, HEALTH_CONNECT_FAILED, t);
	ck_assert(health_avoid(h, "default", "mx", AF_INET6, t + 21599, NULL));
	ck_assert(!health_avoid(h, "default", "mx", AF_INET6, t + 21601, NULL));
	health_free(h);
}
END_TEST

START_TEST(test_health_egress_blocked_and_probe)
{
	struct health *h = health_new(NULL, &P);
	time_t t = 2000000;
	const char *why = NULL;
	/* Two distinct destinations: not yet an egress problem. */
	health_report(h, "default", "a.example", AF_INET6, HEALTH_CONNECT_TIMEOUT, t);
	health_report(h, "default", "a.example", AF_INET6, HEALTH_CONNECT_TIMEOUT, t + 1);
	health_report(h, "default", "b.example", AF_INET6, HEALTH_CONNECT_TIMEOUT, t + 2);
	ck_assert(!health_avoid(h, "default", "c.example", AF_INET6, t + 3, NULL));
	/* Third distinct destination within the window: egress bad for every destination. */
	health_report(h, "default", "c.example", AF_INET6, HEALTH_CONNECT_TIMEOUT, t + 4);
	ck_assert(health_avoid(h, "default", "d.example", AF_INET6, t + 5, &why));
	ck_assert_str_eq(why, "egress of this family looks blocked");
	ck_assert(!health_avoid(h, "default", "d.example", AF_INET, t + 5, NULL));
	ck_assert(!health_avoid(h, "other", "d.example", AF_INET6, t + 5, NULL));
	/* One probe per interval. */
	ck_assert(!health_avoid(h, "default", "d.example", AF_INET6, t + 4 + 600, NULL));
	ck_assert(health_avoid(h, "default", "d.example", AF_INET6, t + 4 + 601, NULL));
	/* A success over that family ends it. */
	health_report(h, "default", "d.example", AF_INET6, HEALTH_OK, t + 700);
	ck_assert(!health_avoid(h, "default", "d.example", AF_INET6, t + 701, NULL));
	health_free(h);
}
END_TEST

START_TEST(test_health_timeouts_outside_window)
{
	struct health *h = health_new(NULL, &P);
	time_t t = 3000000;
	health_report(h, "default", "a", AF_INET6, HEALTH_CONNECT_TIMEOUT, t);
	health_report(h, "default", "b", AF_INET6, HEALTH_CONNECT_TIMEOUT, t + 200);
	health_report(h, "default", "c", AF_INET6, HEALTH_CONNECT_TIMEOUT, t + 400);
	ck_assert(!health_avoid(h, "default", "zzz", AF_INET6, t + 401, NULL));
	health_free(h);
}
END_TEST

START_TEST(test_health_persists)
{
	char dir[] = "/tmp/check_family.XXXXXX";
	ck_assert_ptr_nonnull(mkdtemp(dir));
	char path[256];
	snprintf(path, sizeof(path), "%s/health", dir);
	time_t t = 4000000;
	struct health *h = health_new(path, &P);
	health_report(h, "default", "mx.example.org", AF_INET6, HEALTH_CONNECT_TIMEOUT, t);
	health_report(h, "default", "x1", AF_INET6, HEALTH_CONNECT_TIMEOUT, t);
	health_report(h, "default", "x2", AF_INET6, HEALTH_CONNECT_TIMEOUT, t);
	health_free(h);

	h = health_new(path, &P);
	ck_assert_int_eq(health_load(h, t + 10), 0);
	ck_assert(health_avoid(h, "default", "mx.example.org", AF_INET6, t + 10, NULL));
	ck_assert(!health_avoid(h, "default", "mx.example.org", AF_INET, t + 10, NULL));
	/* egress state came back too (probe not yet due) */
	ck_assert(health_avoid(h, "default", "elsewhere", AF_INET6, t + 10, NULL));
	health_free(h);
	unlink(path);
	rmdir(dir);
}
END_TEST

static Suite *
family_suite(void)
{
	Suite *s = suite_create("family");
	TCase *tc = tcase_create("fallback");
	tcase_add_test(tc, test_real_wordings_match);
	tcase_add_test(tc, test_codes_alone_match);
	tcase_add_test(tc, test_other_rejections_do_not_match);
	tcase_add_test(tc, test_extra_patterns);
	suite_add_tcase(s, tc);
	tc = tcase_create("health");
	tcase_add_test(tc, test_health_penalty_grows_and_clears);
	tcase_add_test(tc, test_health_penalty_capped);
	tcase_add_test(tc, test_health_egress_blocked_and_probe);
	tcase_add_test(tc, test_health_timeouts_outside_window);
	tcase_add_test(tc, test_health_persists);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	log_init("check_family", LOG_TARGET_STDERR, LOG_LEVEL_ERROR);
	SRunner *sr = srunner_create(family_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
