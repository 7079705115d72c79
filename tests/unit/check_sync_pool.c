/*
 * check_sync_pool: unit tests of sync_pool.c: every item is run exactly once, runs follow
 * each other on the same pool, calls really overlap (a call that waits for another to
 * start could never return on one thread), a pool of no helpers runs everything on the
 * caller, and freeing an idle pool stops its threads.
 */
#include "config.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#include <check.h>

#include "sync_pool.h"

struct item {
	atomic_int runs;
};

static void
count_run(void *arg)
{
	struct item *it = arg;

	atomic_fetch_add(&it->runs, 1);
}

START_TEST(test_each_item_once)
{
	struct sync_pool *p = sync_pool_new(3);
	struct item items[257];
	void *ptrs[257];

	ck_assert_ptr_nonnull(p);
	for (int round = 0; round < 50; round++) {
		size_t n = (size_t)(round * 5 + 1) % 258;
		for (size_t i = 0; i < n; i++) {
			atomic_init(&items[i].runs, 0);
			ptrs[i] = &items[i];
		}
		sync_pool_run(p, ptrs, n, count_run);
		for (size_t i = 0; i < n; i++)
			ck_assert_int_eq(atomic_load(&items[i].runs), 1);
	}
	sync_pool_run(p, ptrs, 0, count_run); /* nothing to do: returns at once */
	sync_pool_free(p);
}
END_TEST

/* Two calls that each wait (bounded) for the other to have started. */
static atomic_int started;
static atomic_int timed_out;

static void
meet(void *arg)
{
	struct timespec pause = { 0, 1000000 };

	(void)arg;
	atomic_fetch_add(&started, 1);
	for (int i = 0; i < 5000 && atomic_load(&started) < 2; i++)
		nanosleep(&pause, NULL);
	if (atomic_load(&started) < 2)
		atomic_fetch_add(&timed_out, 1);
}

START_TEST(test_calls_overlap)
{
	struct sync_pool *p = sync_pool_new(1);
	int a, b;
	void *ptrs[2] = { &a, &b };

	ck_assert_ptr_nonnull(p);
	atomic_init(&started, 0);
	atomic_init(&timed_out, 0);
	sync_pool_run(p, ptrs, 2, meet);
	ck_assert_int_eq(atomic_load(&started), 2);
	ck_assert_int_eq(atomic_load(&timed_out), 0);
	ck_assert_uint_ge(sync_pool_helped(p), 1);
	sync_pool_free(p);
}
END_TEST

START_TEST(test_no_helpers)
{
	struct sync_pool *p = sync_pool_new(0);
	struct item items[10];
	void *ptrs[10];

	ck_assert_ptr_nonnull(p);
	for (size_t i = 0; i < 10; i++) {
		atomic_init(&items[i].runs, 0);
		ptrs[i] = &items[i];
	}
	sync_pool_run(p, ptrs, 10, count_run);
	for (size_t i = 0; i < 10; i++)
		ck_assert_int_eq(atomic_load(&items[i].runs), 1);
	ck_assert_uint_eq(sync_pool_helped(p), 0);
	sync_pool_free(p);
	sync_pool_free(NULL);
}
END_TEST

static Suite *
sync_pool_suite(void)
{
	Suite *s = suite_create("sync_pool");
	TCase *tc = tcase_create("run");

	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_each_item_once);
	tcase_add_test(tc, test_calls_overlap);
	tcase_add_test(tc, test_no_helpers);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(sync_pool_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
