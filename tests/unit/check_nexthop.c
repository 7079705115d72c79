/*
 * check_nexthop: unit tests of nexthop.c's pure parts: the RFC 8305 section 3 decision
 * (build the plan now, after the Resolution Delay, or wait) and the transport's ordering
 * policy. The DNS-driven parts run in the lab (tests/integration).
 */
#include "config.h"

#include <stdlib.h>

#include <check.h>

#include "conf.h"
#include "nexthop.h"

/* Arguments: pending and usable of the preferred family, then of the other family. */
START_TEST(test_step_preferred_first)
{
	/* Preferred family in with something to dial: go, whatever the other family does. */
	ck_assert_int_eq(nexthop_step(0, true, 3, false), NEXTHOP_STEP_BUILD);
	ck_assert_int_eq(nexthop_step(0, true, 0, true), NEXTHOP_STEP_BUILD);
	/* Everything answered: build, even with nothing usable (the plan says why). */
	ck_assert_int_eq(nexthop_step(0, false, 0, false), NEXTHOP_STEP_BUILD);
	/* Nothing in yet. */
	ck_assert_int_eq(nexthop_step(2, false, 2, false), NEXTHOP_STEP_WAIT);
}
END_TEST

START_TEST(test_step_resolution_delay)
{
	/* Other family in and usable, preferred still out: the Resolution Delay. */
	ck_assert_int_eq(nexthop_step(1, false, 0, true), NEXTHOP_STEP_DELAY);
	/* Other family in but nothing usable: no point starting early. */
	ck_assert_int_eq(nexthop_step(1, false, 0, false), NEXTHOP_STEP_WAIT);
	/* Other family partly in: wait for the rest of it (or the preferred one). */
	ck_assert_int_eq(nexthop_step(1, false, 1, false), NEXTHOP_STEP_WAIT);
}
END_TEST

/*
 * The bug this guards: an MX whose only AAAA is unusable (fe80::1, one of the relay's own
 * addresses) made the preferred family look answered, the plan was built before the A
 * records were in, every candidate was skipped and the mail waited a retry period.
 */
START_TEST(test_step_preferred_unusable_waits_for_other)
{
	ck_assert_int_eq(nexthop_step(0, false, 1, false), NEXTHOP_STEP_WAIT);
	ck_assert_int_eq(nexthop_step(0, false, 3, false), NEXTHOP_STEP_WAIT);
	/* Once the other family is in: build (with its addresses, or to report none). */
	ck_assert_int_eq(nexthop_step(0, false, 0, true), NEXTHOP_STEP_BUILD);
	ck_assert_int_eq(nexthop_step(0, false, 0, false), NEXTHOP_STEP_BUILD);
}
END_TEST

START_TEST(test_policy)
{
	struct conf conf = { .prefer_family = CONF_FAMILY_ANY };
	struct conf_transport t = { .family = CONF_FAMILY_ANY };

	ck_assert_int_eq(nexthop_policy(&conf, &t), CONF_FAMILY_ANY);
	conf.prefer_family = CONF_FAMILY_PREFER_IPV4;
	ck_assert_int_eq(nexthop_policy(&conf, &t), CONF_FAMILY_PREFER_IPV4);
	/* A transport's own family wins over the global preference. */
	t.family = CONF_FAMILY_IPV6;
	ck_assert_int_eq(nexthop_policy(&conf, &t), CONF_FAMILY_IPV6);
}
END_TEST

static Suite *
nexthop_suite(void)
{
	Suite *s = suite_create("nexthop");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_step_preferred_first);
	tcase_add_test(tc, test_step_resolution_delay);
	tcase_add_test(tc, test_step_preferred_unusable_waits_for_other);
	tcase_add_test(tc, test_policy);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(nexthop_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
