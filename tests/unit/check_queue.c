/* Unit tests for the queue's pure parts: retry backoff. */
#include "config.h"

#include <check.h>
#include <stdint.h>
#include <stdlib.h>

#include "queue.h"

#define MID (UINT32_MAX / 2) /* jitter close to zero */

START_TEST(test_backoff_doubles_from_min)
{
	ck_assert_uint_eq(queue_backoff_s(1, 300, 4000, MID), 300);
	ck_assert_uint_eq(queue_backoff_s(2, 300, 4000, MID), 600);
	ck_assert_uint_eq(queue_backoff_s(3, 300, 4000, MID), 1200);
	ck_assert_uint_eq(queue_backoff_s(4, 300, 4000, MID), 2400);
}
END_TEST

START_TEST(test_backoff_capped_at_max)
{
	ck_assert_uint_eq(queue_backoff_s(5, 300, 4000, MID), 4000);
	ck_assert_uint_eq(queue_backoff_s(60, 300, 4000, MID), 4000);
	ck_assert_uint_eq(queue_backoff_s(1000000, 300, 4000, MID), 4000);
}
END_TEST

START_TEST(test_backoff_jitter_bounds)
{
	/* +-10% at the extremes of the random input. */
	ck_assert_uint_eq(queue_backoff_s(1, 300, 4000, 0), 270);
	ck_assert_uint_eq(queue_backoff_s(1, 300, 4000, UINT32_MAX), 330);
	for (uint32_t r = 0; r < 1000; r++) {
		unsigned v = queue_backoff_s(3, 300, 4000, r * 4294967u);
		ck_assert_uint_ge(v, 1080);
		ck_assert_uint_le(v, 1320);
	}
}
END_TEST

START_TEST(test_backoff_degenerate_bounds)
{
	ck_assert_uint_eq(queue_backoff_s(1, 0, 0, MID), 1);          /* never zero */
	ck_assert_uint_eq(queue_backoff_s(3, 500, 100, MID), 500);    /* max < min: min */
	ck_assert_uint_eq(queue_backoff_s(0, 300, 4000, MID), 300);   /* no attempt yet */
}
END_TEST

START_TEST(test_expiry)
{
	time_t t = 1790000000;
	ck_assert(!queue_expired(t, t, 432000));
	ck_assert(!queue_expired(t, t + 431999, 432000));
	ck_assert(queue_expired(t, t + 432000, 432000));
	ck_assert(queue_expired(t, t + 999999, 432000));
	ck_assert(!queue_expired(t, t - 5, 432000));   /* clock went backwards */
	ck_assert(queue_expired(t, t, 0));              /* lifetime 0: expire at once */
}
END_TEST

static Suite *
queue_suite(void)
{
	Suite *s = suite_create("queue");
	TCase *tc = tcase_create("backoff");
	tcase_add_test(tc, test_backoff_doubles_from_min);
	tcase_add_test(tc, test_backoff_capped_at_max);
	tcase_add_test(tc, test_backoff_jitter_bounds);
	tcase_add_test(tc, test_backoff_degenerate_bounds);
	tcase_add_test(tc, test_expiry);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(queue_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
