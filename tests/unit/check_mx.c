/*
 * check_mx: unit tests of mx.c: MX ordering and shuffling (RFC 5321 5.1), null MX
 * (RFC 7505), the candidate plan (family interleaving per policy, skipped addresses), and
 * the usability test nexthop shares with the plan.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <check.h>

#include "mx.h"
#include "netaddr.h"

static struct netaddr
addr(const char *text)
{
	struct netaddr a;

	ck_assert_msg(netaddr_parse(&a, text, 0) == 0, "cannot parse %s", text);
	return a;
}

static const char *
ntop(const struct netaddr *a, char *buf)
{
	return netaddr_ntop(a, buf, NETADDR_STRLEN);
}

/* Asserts the plan's candidates are exactly the addresses listed, in order. */
static void
assert_cands(const struct mx_plan *p, const char *const *want, size_t n)
{
	char buf[NETADDR_STRLEN];

	ck_assert_uint_eq(p->ncand, n);
	for (size_t i = 0; i < n; i++)
		ck_assert_str_eq(ntop(&p->cand[i].addr, buf), want[i]);
}

START_TEST(test_sort_by_preference)
{
	struct dns_mx mx[] = {
		{ "c.example", 30 }, { "a.example", 10 }, { "d.example", 40 }, { "b.example", 20 },
	};

	mx_sort(mx, 4);
	ck_assert_str_eq(mx[0].host, "a.example");
	ck_assert_uint_eq(mx[0].preference, 10);
	ck_assert_str_eq(mx[1].host, "b.example");
	ck_assert_str_eq(mx[2].host, "c.example");
	ck_assert_str_eq(mx[3].host, "d.example");
	ck_assert_uint_eq(mx[3].preference, 40);

	mx_sort(mx, 0);         /* nothing to do, must not crash */
	mx_sort(mx, 1);
	ck_assert_str_eq(mx[0].host, "a.example");
}
END_TEST

START_TEST(test_sort_shuffles_equal_preferences)
{
	unsigned seen_ab = 0, seen_ba = 0;

	for (int run = 0; run < 200; run++) {
		struct dns_mx mx[] = {
			{ "z.example", 20 }, { "a.example", 10 }, { "b.example", 10 },
			{ "first.example", 5 },
		};

		mx_sort(mx, 4);
		ck_assert_str_eq(mx[0].host, "first.example");
		ck_assert_str_eq(mx[3].host, "z.example");
		ck_assert_uint_eq(mx[1].preference, 10);
		ck_assert_uint_eq(mx[2].preference, 10);
		if (strcmp(mx[1].host, "a.example") == 0) {
			ck_assert_str_eq(mx[2].host, "b.example");
			seen_ab++;
		} else {
			ck_assert_str_eq(mx[1].host, "b.example");
			ck_assert_str_eq(mx[2].host, "a.example");
			seen_ba++;
		}
	}
	/* With a fair shuffle each order has probability 1/2: 200 runs never miss one. */
	ck_assert_uint_gt(seen_ab, 0);
	ck_assert_uint_gt(seen_ba, 0);
}
END_TEST

START_TEST(test_null_mx)
{
	struct dns_mx null_mx[] = { { "", 0 } };
	struct dns_mx dot_mx[] = { { ".", 0 } };
	struct dns_mx real[] = { { "mx.example", 0 } };
	struct dns_mx mixed[] = { { "", 0 }, { "mx.example", 10 } };

	ck_assert(mx_is_null(null_mx, 1));
	ck_assert(mx_is_null(dot_mx, 1));
	ck_assert(!mx_is_null(real, 1));
	ck_assert(!mx_is_null(mixed, 2));
	ck_assert(!mx_is_null(NULL, 0));
}
END_TEST

START_TEST(test_preferred_family)
{
	ck_assert_int_eq(mx_preferred_family(CONF_FAMILY_ANY), AF_INET6);
	ck_assert_int_eq(mx_preferred_family(CONF_FAMILY_PREFER_IPV6), AF_INET6);
	ck_assert_int_eq(mx_preferred_family(CONF_FAMILY_IPV6), AF_INET6);
	ck_assert_int_eq(mx_preferred_family(CONF_FAMILY_PREFER_IPV4), AF_INET);
	ck_assert_int_eq(mx_preferred_family(CONF_FAMILY_IPV4), AF_INET);
}
END_TEST

/* Three IPv4 and two IPv6 addresses of one host, under the policy of the loop index. */
static void
plan_for_policy(struct mx_plan *p, enum conf_family policy)
{
	struct netaddr v4[] = { addr("192.0.2.1"), addr("192.0.2.2"), addr("192.0.2.3") };
	struct netaddr v6[] = { addr("2001:db8::1"), addr("2001:db8::2") };

	mx_plan_init(p);
	mx_plan_add_host(p, "mx.example", 10, v4, 3, v6, 2, policy, 25, false, NULL, NULL);
}

START_TEST(test_interleave_per_policy)
{
	static const char *const v6first[] = {
		"2001:db8::1", "192.0.2.1", "2001:db8::2", "192.0.2.2", "192.0.2.3",
	};
	static const char *const v4first[] = {
		"192.0.2.1", "2001:db8::1", "192.0.2.2", "2001:db8::2", "192.0.2.3",
	};
	static const char *const v4only[] = { "192.0.2.1", "192.0.2.2", "192.0.2.3" };
	static const char *const v6only[] = { "2001:db8::1", "2001:db8::2" };
	struct mx_plan p;

	plan_for_policy(&p, CONF_FAMILY_ANY);
	assert_cands(&p, v6first, 5);
	for (size_t i = 0; i < p.ncand; i++) {
		ck_assert_str_eq(p.cand[i].host, "mx.example");
		ck_assert_uint_eq(p.cand[i].preference, 10);
		ck_assert_uint_eq(netaddr_port(&p.cand[i].addr), 25);
	}
	ck_assert_uint_eq(p.nskipped, 0);
	mx_plan_clear(&p);
	ck_assert_uint_eq(p.ncand, 0);
	ck_assert_ptr_null(p.cand);

	plan_for_policy(&p, CONF_FAMILY_PREFER_IPV6);
	assert_cands(&p, v6first, 5);
	mx_plan_clear(&p);

	plan_for_policy(&p, CONF_FAMILY_PREFER_IPV4);
	assert_cands(&p, v4first, 5);
	mx_plan_clear(&p);

	/* The excluded family is left out silently: not a skipped address. */
	plan_for_policy(&p, CONF_FAMILY_IPV4);
	assert_cands(&p, v4only, 3);
	ck_assert_uint_eq(p.nskipped, 0);
	mx_plan_clear(&p);

	plan_for_policy(&p, CONF_FAMILY_IPV6);
	assert_cands(&p, v6only, 2);
	ck_assert_uint_eq(p.nskipped, 0);
	mx_plan_clear(&p);
}
END_TEST

START_TEST(test_one_family_empty)
{
	struct netaddr v4[] = { addr("198.51.100.1"), addr("198.51.100.2") };
	static const char *const want[] = { "198.51.100.1", "198.51.100.2" };
	struct mx_plan p;

	mx_plan_init(&p);
	mx_plan_add_host(&p, "mx.example", 0, v4, 2, NULL, 0, CONF_FAMILY_ANY, 587, false, NULL,
	    NULL);
	assert_cands(&p, want, 2);
	ck_assert_uint_eq(netaddr_port(&p.cand[1].addr), 587);
	mx_plan_clear(&p);
}
END_TEST

START_TEST(test_hosts_in_order)
{
	struct netaddr a4[] = { addr("192.0.2.10") }, a6[] = { addr("2001:db8::10") };
	struct netaddr b4[] = { addr("203.0.113.20") };
	static const char *const want[] = { "2001:db8::10", "192.0.2.10", "203.0.113.20" };
	struct mx_plan p;

	mx_plan_init(&p);
	mx_plan_add_host(&p, "a.example", 10, a4, 1, a6, 1, CONF_FAMILY_ANY, 25, false, NULL,
	    NULL);
	mx_plan_add_host(&p, "b.example", 20, b4, 1, NULL, 0, CONF_FAMILY_ANY, 25, false, NULL,
	    NULL);
	assert_cands(&p, want, 3);
	ck_assert_str_eq(p.cand[0].host, "a.example");
	ck_assert_str_eq(p.cand[1].host, "a.example");
	ck_assert_str_eq(p.cand[2].host, "b.example");
	ck_assert_uint_eq(p.cand[2].preference, 20);
	mx_plan_clear(&p);
}
END_TEST

/* Finds the skipped entry for text; fails the test if absent. */
static const struct mx_skipped *
find_skipped(const struct mx_plan *p, const char *text)
{
	char buf[NETADDR_STRLEN];

	for (size_t i = 0; i < p->nskipped; i++)
		if (strcmp(ntop(&p->skipped[i].addr, buf), text) == 0)
			return &p->skipped[i];
	ck_abort_msg("%s not skipped", text);
	return NULL;
}

START_TEST(test_skip_unusable)
{
	struct netaddr v4[] = {
		addr("127.0.0.1"), addr("169.254.1.1"), addr("224.0.0.1"), addr("0.0.0.0"),
		addr("192.0.2.9"),
	};
	struct netaddr v6[] = {
		addr("fe80::1"), addr("::1"), addr("::ffff:192.0.2.1"), addr("ff02::1"), addr("::"),
		addr("2001:db8::9"),
	};
	static const char *const want[] = { "2001:db8::9", "192.0.2.9" };
	static const struct {
		const char *addr;
		enum netaddr_class class;
	} skips[] = {
		{ "127.0.0.1", NETADDR_LOOPBACK },
		{ "169.254.1.1", NETADDR_LINK_LOCAL },
		{ "224.0.0.1", NETADDR_MULTICAST },
		{ "0.0.0.0", NETADDR_UNSPECIFIED },
		{ "fe80::1", NETADDR_LINK_LOCAL },
		{ "::1", NETADDR_LOOPBACK },
		{ "::ffff:192.0.2.1", NETADDR_V4MAPPED },
		{ "ff02::1", NETADDR_MULTICAST },
		{ "::", NETADDR_UNSPECIFIED },
	};
	struct mx_plan p;

	mx_plan_init(&p);
	mx_plan_add_host(&p, "mx.example", 10, v4, 5, v6, 6, CONF_FAMILY_ANY, 25, true, NULL,
	    NULL);
	assert_cands(&p, want, 2);
	ck_assert_uint_eq(p.nskipped, sizeof(skips) / sizeof(skips[0]));
	for (size_t i = 0; i < sizeof(skips) / sizeof(skips[0]); i++) {
		const struct mx_skipped *s = find_skipped(&p, skips[i].addr);

		ck_assert_str_eq(s->host, "mx.example");
		ck_assert_ptr_nonnull(s->why);
		ck_assert_str_eq(s->why, netaddr_class_name(skips[i].class));
		ck_assert_str_ne(s->why, netaddr_class_name(NETADDR_OK));
	}
	mx_plan_clear(&p);
	ck_assert_uint_eq(p.nskipped, 0);
	ck_assert_ptr_null(p.skipped);
}
END_TEST

/* mx_is_local_fn: ctx is "this host's" address; counts how often it is asked. */
struct local_ctx {
	struct netaddr me;
	unsigned calls;
};

static bool
is_local_ctx(void *ctx, const struct netaddr *a)
{
	struct local_ctx *l = ctx;

	l->calls++;
	return netaddr_equal(a, &l->me);
}

START_TEST(test_skip_local)
{
	struct netaddr v4[] = { addr("192.0.2.7"), addr("192.0.2.8"), addr("127.0.0.1") };
	static const char *const only8[] = { "192.0.2.8" };
	static const char *const both[] = { "192.0.2.7", "192.0.2.8" };
	struct local_ctx l = { .me = addr("192.0.2.7") };
	struct mx_plan p;

	mx_plan_init(&p);
	mx_plan_add_host(&p, "mx.example", 10, v4, 3, NULL, 0, CONF_FAMILY_ANY, 25, false,
	    is_local_ctx, &l);
	assert_cands(&p, only8, 1);
	ck_assert_uint_eq(p.nskipped, 2);
	ck_assert_str_eq(find_skipped(&p, "192.0.2.7")->why, "address of this host (mail loop)");
	ck_assert_str_eq(find_skipped(&p, "127.0.0.1")->why, "loopback address");
	/* The context reaches the callback, asked only for addresses not already unusable. */
	ck_assert_uint_eq(l.calls, 2);
	mx_plan_clear(&p);

	/* A transport that may deliver to this host (allow_local) keeps it, without asking. */
	l.calls = 0;
	mx_plan_add_host(&p, "mx.example", 10, v4, 2, NULL, 0, CONF_FAMILY_ANY, 25, true,
	    is_local_ctx, &l);
	assert_cands(&p, both, 2);
	ck_assert_uint_eq(p.nskipped, 0);
	ck_assert_uint_eq(l.calls, 0);
	mx_plan_clear(&p);

	/* No callback: nothing is considered local. */
	mx_plan_add_host(&p, "mx.example", 10, v4, 2, NULL, 0, CONF_FAMILY_ANY, 25, false, NULL,
	    NULL);
	assert_cands(&p, both, 2);
	mx_plan_clear(&p);
}
END_TEST

/*
 * The usability test nexthop asks before building (RFC 8305 3) is the plan's own: same
 * reason for every address, and "any usable" exactly when the plan keeps a candidate.
 */
START_TEST(test_addr_unusable_agrees_with_plan)
{
	static const char *const texts[] = {
		"127.0.0.1", "169.254.1.1", "224.0.0.1", "0.0.0.0", "192.0.2.7", "192.0.2.9",
		"fe80::1", "::1", "::ffff:192.0.2.1", "ff02::1", "::", "2001:db8::7", "2001:db8::9",
	};
	struct local_ctx l = { .me = addr("192.0.2.7") };

	for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
		struct netaddr a = addr(texts[i]);
		bool v6 = netaddr_family(&a) == AF_INET6;

		for (int allow_local = 0; allow_local < 2; allow_local++) {
			struct mx_plan p;
			const char *why = mx_addr_unusable(&a, allow_local, is_local_ctx, &l);

			mx_plan_init(&p);
			mx_plan_add_host(&p, "mx.example", 10, v6 ? NULL : &a, v6 ? 0 : 1,
			    v6 ? &a : NULL, v6 ? 1 : 0, CONF_FAMILY_ANY, 25, allow_local,
			    is_local_ctx, &l);
			if (why == NULL) {
				ck_assert_msg(p.ncand == 1, "%s: usable but not a candidate", texts[i]);
			} else {
				ck_assert_msg(p.ncand == 0 && p.nskipped == 1, "%s: %s but kept",
				    texts[i], why);
				ck_assert_str_eq(p.skipped[0].why, why);
			}
			ck_assert(mx_any_usable(&a, 1, CONF_FAMILY_ANY, allow_local, is_local_ctx,
			    &l) == (p.ncand > 0));
			mx_plan_clear(&p);
		}
	}
	ck_assert_str_eq(mx_addr_unusable(&l.me, false, is_local_ctx, &l),
	    "address of this host (mail loop)");
	ck_assert_ptr_null(mx_addr_unusable(&l.me, true, is_local_ctx, &l));
	struct netaddr ll = addr("fe80::1");
	ck_assert_str_eq(mx_addr_unusable(&ll, true, NULL, NULL), "link-local address");
}
END_TEST

/* A family's answers count only when one address in them would be dialled. */
START_TEST(test_any_usable)
{
	struct netaddr junk6[] = { addr("fe80::1"), addr("::1") };
	struct netaddr mixed6[] = { addr("fe80::1"), addr("2001:db8::9") };
	struct netaddr own6[] = { addr("2001:db8::1"), addr("fe80::1") };
	struct netaddr v4[] = { addr("192.0.2.9") };
	struct local_ctx l = { .me = addr("2001:db8::1") };

	ck_assert(!mx_any_usable(NULL, 0, CONF_FAMILY_ANY, false, NULL, NULL));
	ck_assert(!mx_any_usable(junk6, 2, CONF_FAMILY_ANY, true, NULL, NULL));
	ck_assert(mx_any_usable(mixed6, 2, CONF_FAMILY_ANY, false, is_local_ctx, &l));
	/* This host's own address (mail loop) is no better than a link-local one... */
	ck_assert(!mx_any_usable(own6, 2, CONF_FAMILY_ANY, false, is_local_ctx, &l));
	/* ...unless the transport may deliver to this host. */
	ck_assert(mx_any_usable(own6, 2, CONF_FAMILY_ANY, true, is_local_ctx, &l));
	/* Families the policy leaves out count as nothing. */
	ck_assert(!mx_any_usable(mixed6, 2, CONF_FAMILY_IPV4, false, NULL, NULL));
	ck_assert(mx_any_usable(mixed6, 2, CONF_FAMILY_IPV6, false, NULL, NULL));
	ck_assert(mx_any_usable(mixed6, 2, CONF_FAMILY_PREFER_IPV4, false, NULL, NULL));
	ck_assert(!mx_any_usable(v4, 1, CONF_FAMILY_IPV6, false, NULL, NULL));
	ck_assert(mx_any_usable(v4, 1, CONF_FAMILY_ANY, false, NULL, NULL));
}
END_TEST

static Suite *
mx_suite(void)
{
	Suite *s = suite_create("mx");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_sort_by_preference);
	tcase_add_test(tc, test_sort_shuffles_equal_preferences);
	tcase_add_test(tc, test_null_mx);
	tcase_add_test(tc, test_preferred_family);
	tcase_add_test(tc, test_interleave_per_policy);
	tcase_add_test(tc, test_one_family_empty);
	tcase_add_test(tc, test_hosts_in_order);
	tcase_add_test(tc, test_skip_unusable);
	tcase_add_test(tc, test_skip_local);
	tcase_add_test(tc, test_addr_unusable_agrees_with_plan);
	tcase_add_test(tc, test_any_usable);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(mx_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
