/*
 * check_localaddr: unit tests of localaddr.c: the address list built from a hand-made
 * struct ifaddrs list (no kernel), matching, when the snapshot is taken again (TTL, a
 * clock going back, fetch failures, each with a counting fake fetch and explicit times),
 * and once against the real getifaddrs().
 */
#include "config.h"

#include <errno.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netpacket/packet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <check.h>

#include "localaddr.h"
#include "log.h"
#include "netaddr.h"
#include "util.h"

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

/* ---- Building the list from struct ifaddrs ---- */

/* Storage for one hand-made ifaddrs entry and its address. */
struct fake_if {
	struct ifaddrs ifa;
	struct netaddr na;
	struct sockaddr_ll ll;
};

static void
fake_if_ip(struct fake_if *f, const char *name, const char *text, unsigned scope)
{
	memset(f, 0, sizeof(*f));
	f->na = addr(text);
	if (netaddr_family(&f->na) == AF_INET6)
		((struct sockaddr_in6 *)(void *)&f->na.ss)->sin6_scope_id = scope;
	f->ifa.ifa_name = (char *)name;
	f->ifa.ifa_flags = IFF_UP;
	f->ifa.ifa_addr = (struct sockaddr *)&f->na.ss;
}

static void
fake_if_packet(struct fake_if *f, const char *name)
{
	memset(f, 0, sizeof(*f));
	f->ll.sll_family = AF_PACKET;
	f->ll.sll_ifindex = 1;
	f->ll.sll_halen = 6;
	f->ifa.ifa_name = (char *)name;
	f->ifa.ifa_addr = (struct sockaddr *)&f->ll;
}

static void
fake_if_link(struct fake_if *f, size_t n)
{
	for (size_t i = 0; i + 1 < n; i++)
		f[i].ifa.ifa_next = &f[i + 1].ifa;
	f[n - 1].ifa.ifa_next = NULL;
}

START_TEST(test_from_ifaddrs)
{
	struct fake_if f[7];
	struct netaddr *out;
	char buf[NETADDR_STRLEN];
	size_t n;

	/* As glibc lists them: AF_PACKET entries first, then addresses; tun has none. */
	fake_if_packet(&f[0], "lo");
	fake_if_packet(&f[1], "eth0");
	memset(&f[2], 0, sizeof(f[2]));
	f[2].ifa.ifa_name = (char *)"tun0";
	fake_if_ip(&f[3], "lo", "127.0.0.1", 0);
	fake_if_ip(&f[4], "eth0", "192.0.2.1", 0);
	fake_if_ip(&f[5], "eth0", "2001:db8::1", 0);
	fake_if_ip(&f[6], "eth0", "fe80::1", 2);
	fake_if_link(f, 7);

	n = localaddr_from_ifaddrs(&f[0].ifa, &out);
	ck_assert_uint_eq(n, 4);
	ck_assert_ptr_nonnull(out);
	ck_assert_str_eq(ntop(&out[0], buf), "127.0.0.1");
	ck_assert_int_eq(netaddr_family(&out[0]), AF_INET);
	ck_assert_uint_eq(out[0].len, sizeof(struct sockaddr_in));
	ck_assert_str_eq(ntop(&out[1], buf), "192.0.2.1");
	ck_assert_str_eq(ntop(&out[2], buf), "2001:db8::1");
	ck_assert_int_eq(netaddr_family(&out[2]), AF_INET6);
	ck_assert_uint_eq(out[2].len, sizeof(struct sockaddr_in6));
	ck_assert_str_eq(ntop(&out[3], buf), "fe80::1");
	free(out);

	/* Nothing usable, or nothing at all: no array. */
	fake_if_link(f, 3);
	ck_assert_uint_eq(localaddr_from_ifaddrs(&f[0].ifa, &out), 0);
	ck_assert_ptr_null(out);
	ck_assert_uint_eq(localaddr_from_ifaddrs(NULL, &out), 0);
	ck_assert_ptr_null(out);
}
END_TEST

START_TEST(test_match)
{
	struct netaddr mine[] = { addr("127.0.0.1"), addr("192.0.2.1"), addr("2001:db8::1") };
	struct netaddr a;

	ck_assert(localaddr_match(mine, 3, &mine[1]));
	a = addr("2001:db8::1");
	netaddr_set_port(&a, 25); /* addresses only: the destination port does not matter */
	ck_assert(localaddr_match(mine, 3, &a));
	a = addr("::ffff:192.0.2.1"); /* an IPv4-mapped form is the same host */
	ck_assert(localaddr_match(mine, 3, &a));
	a = addr("192.0.2.2");
	ck_assert(!localaddr_match(mine, 3, &a));
	a = addr("2001:db8::2");
	ck_assert(!localaddr_match(mine, 3, &a));
	a = addr("::1"); /* a v6 loopback is not a v4 one */
	ck_assert(!localaddr_match(mine, 3, &a));
	ck_assert(!localaddr_match(NULL, 0, &mine[0]));
}
END_TEST

/* ---- When the snapshot is taken ---- */

/* A fetch function under the test's control: the addresses it reports, or a failure. */
struct fake_fetch {
	const char *addrs[4];   /* NULL-terminated texts */
	int fail_errno;         /* nonzero: fail with this errno */
	unsigned calls;
};

static int
fake_fetch(void *arg, struct netaddr **out, size_t *n)
{
	struct fake_fetch *f = arg;
	size_t k = 0;

	f->calls++;
	if (f->fail_errno != 0) {
		errno = f->fail_errno;
		return -1;
	}
	while (k < 4 && f->addrs[k] != NULL)
		k++;
	*out = k ? xcalloc(k, sizeof(**out)) : NULL;
	for (size_t i = 0; i < k; i++)
		(*out)[i] = addr(f->addrs[i]);
	*n = k;
	return 0;
}

static bool
is_local(struct localaddr_cache *c, const char *text, double now)
{
	struct netaddr a = addr(text);

	return localaddr_is_local(c, &a, now);
}

START_TEST(test_ttl)
{
	struct fake_fetch f = { .addrs = { "192.0.2.1", "2001:db8::1" } };
	struct localaddr_cache *c = localaddr_new_with(fake_fetch, &f);

	/* The first lookup takes a snapshot; lookups within the TTL use it. */
	ck_assert(is_local(c, "192.0.2.1", 1000.0));
	ck_assert_uint_eq(f.calls, 1);
	ck_assert(is_local(c, "2001:db8::1", 1000.5));
	ck_assert(!is_local(c, "192.0.2.2", 1000.5));
	ck_assert_uint_eq(f.calls, 1);

	/* An address added now is not seen before the snapshot is a TTL old... */
	f.addrs[2] = "192.0.2.2";
	ck_assert(!is_local(c, "192.0.2.2", 1000.0 + LOCALADDR_TTL_S - 0.01));
	ck_assert_uint_eq(f.calls, 1);
	/* ...and is from then on. */
	ck_assert(is_local(c, "192.0.2.2", 1000.0 + LOCALADDR_TTL_S));
	ck_assert_uint_eq(f.calls, 2);

	/* A removed address goes the same way. */
	f.addrs[0] = "192.0.2.9";
	ck_assert(is_local(c, "192.0.2.1", 1001.5));
	ck_assert(!is_local(c, "192.0.2.1", 1003.0));
	ck_assert_uint_eq(f.calls, 3);

	/* The clock going back makes the snapshot's age unknown: a new one is taken. */
	ck_assert(is_local(c, "192.0.2.9", 500.0));
	ck_assert_uint_eq(f.calls, 4);
	ck_assert(is_local(c, "192.0.2.9", 500.5));
	ck_assert_uint_eq(f.calls, 4);
	localaddr_free(c);

	localaddr_free(NULL);
}
END_TEST

/* Runs fn with stderr (the log) going to a file; returns how many lines held needle. */
static unsigned
log_lines_with(const char *needle, void (*fn)(void *), void *arg)
{
	FILE *tmp = tmpfile();
	char line[512];
	unsigned count = 0;
	int saved;

	ck_assert_ptr_nonnull(tmp);
	fflush(stderr);
	saved = dup(STDERR_FILENO);
	ck_assert_int_ge(saved, 0);
	ck_assert_int_ge(dup2(fileno(tmp), STDERR_FILENO), 0);
	fn(arg);
	fflush(stderr);
	ck_assert_int_ge(dup2(saved, STDERR_FILENO), 0);
	close(saved);
	rewind(tmp);
	while (fgets(line, sizeof(line), tmp) != NULL)
		if (strstr(line, needle) != NULL)
			count++;
	fclose(tmp);
	return count;
}

struct failure_run {
	struct fake_fetch f;
	struct localaddr_cache *c;
};

static void
failure_steps(void *arg)
{
	struct failure_run *r = arg;
	struct fake_fetch *f = &r->f;
	struct localaddr_cache *c = r->c;

	/* No snapshot yet and the kernel cannot be asked: nothing is local, as before. */
	f->fail_errno = EMFILE;
	ck_assert(!is_local(c, "192.0.2.1", 10.0));
	ck_assert_uint_eq(f->calls, 1);
	/* The failed attempt counts: no retry on every lookup within the TTL. */
	ck_assert(!is_local(c, "192.0.2.1", 10.5));
	ck_assert_uint_eq(f->calls, 1);
	/* Still failing a TTL later: tried again, not logged again. */
	ck_assert(!is_local(c, "192.0.2.1", 11.0));
	ck_assert_uint_eq(f->calls, 2);

	/* Works again. */
	f->fail_errno = 0;
	ck_assert(is_local(c, "192.0.2.1", 12.0));
	ck_assert_uint_eq(f->calls, 3);

	/* Fails again (a second failure, logged): the previous snapshot keeps answering. */
	f->fail_errno = ENOBUFS;
	f->addrs[0] = "192.0.2.7";
	ck_assert(is_local(c, "192.0.2.1", 13.0));
	ck_assert(!is_local(c, "192.0.2.7", 13.5));
	ck_assert_uint_eq(f->calls, 4);
}

START_TEST(test_fetch_failure)
{
	struct failure_run r = { .f = { .addrs = { "192.0.2.1" } } };

	r.c = localaddr_new_with(fake_fetch, &r.f);
	ck_assert_uint_eq(log_lines_with("cannot list this host's addresses", failure_steps, &r),
	    2);
	localaddr_free(r.c);
}
END_TEST

/* ---- The real kernel ---- */

START_TEST(test_system)
{
	struct localaddr_cache *c = localaddr_new();
	struct netaddr *addrs;
	size_t n;

	/* Loopback is configured in every namespace we run in; documentation space never. */
	ck_assert(is_local(c, "127.0.0.1", dr_now()));
	ck_assert(!is_local(c, "203.0.113.254", dr_now()));
	ck_assert(!is_local(c, "2001:db8:ffff::fe", dr_now()));
	localaddr_free(c);

	ck_assert_int_eq(localaddr_fetch_system(NULL, &addrs, &n), 0);
	ck_assert_uint_ge(n, 1);
	struct netaddr lo = addr("127.0.0.1");
	ck_assert(localaddr_match(addrs, n, &lo));
	free(addrs);
}
END_TEST

static Suite *
localaddr_suite(void)
{
	Suite *s = suite_create("localaddr");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_from_ifaddrs);
	tcase_add_test(tc, test_match);
	tcase_add_test(tc, test_ttl);
	tcase_add_test(tc, test_fetch_failure);
	tcase_add_test(tc, test_system);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(localaddr_suite());
	int failed;

	log_init("check_localaddr", LOG_TARGET_STDERR, LOG_LEVEL_INFO);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
