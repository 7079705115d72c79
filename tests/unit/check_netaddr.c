/*
 * check_netaddr: unit tests for src/netaddr.c: parsing and formatting of both
 * families, host:port forms, CIDR prefixes and matching, the classification of
 * addresses never to dial, and equality.
 */
#include "config.h"

#include <arpa/inet.h>
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "netaddr.h"

START_TEST(test_parse_format_v4)
{
	struct netaddr a;
	char buf[NETADDR_STRLEN];

	ck_assert_int_eq(netaddr_parse(&a, "192.0.2.1", 25), 0);
	ck_assert_int_eq(netaddr_family(&a), AF_INET);
	ck_assert_uint_eq(a.len, sizeof(struct sockaddr_in));
	ck_assert_uint_eq(netaddr_port(&a), 25);
	ck_assert_str_eq(netaddr_ntop(&a, buf, sizeof(buf)), "192.0.2.1");
	ck_assert_str_eq(netaddr_format_hostport(&a, buf, sizeof(buf)), "192.0.2.1:25");
	netaddr_set_port(&a, 587);
	ck_assert_uint_eq(netaddr_port(&a), 587);
	ck_assert_str_eq(netaddr_format_hostport(&a, buf, sizeof(buf)), "192.0.2.1:587");
	ck_assert_str_eq(netaddr_family_name(netaddr_family(&a)), "ipv4");
}
END_TEST

START_TEST(test_parse_format_v6)
{
	struct netaddr a;
	char buf[NETADDR_STRLEN];

	ck_assert_int_eq(netaddr_parse(&a, "2001:DB8:0:0::1", 2525), 0);
	ck_assert_int_eq(netaddr_family(&a), AF_INET6);
	ck_assert_uint_eq(a.len, sizeof(struct sockaddr_in6));
	ck_assert_str_eq(netaddr_ntop(&a, buf, sizeof(buf)), "2001:db8::1");
	ck_assert_str_eq(netaddr_format_hostport(&a, buf, sizeof(buf)), "[2001:db8::1]:2525");
	ck_assert_str_eq(netaddr_family_name(AF_INET6), "ipv6");

	/* The longest text form fits NETADDR_STRLEN. */
	ck_assert_int_eq(netaddr_parse(&a, "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255",
	    65535), 0);
	netaddr_format_hostport(&a, buf, sizeof(buf));
	ck_assert_str_eq(buf, "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535");
}
END_TEST

START_TEST(test_parse_rejects)
{
	static const char *const bad[] = {
		"", "192.0.2", "192.0.2.256", "192.0.2.1 ", " 192.0.2.1", "example.org",
		"2001:db8::1::2", "[2001:db8::1]", "192.0.2.1:25", "2001:db8::g",
	};
	struct netaddr a;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		ck_assert_msg(netaddr_parse(&a, bad[i], 0) == -1, "accepted \"%s\"", bad[i]);
}
END_TEST

START_TEST(test_hostport)
{
	static const struct {
		const char *text;
		int family;
		const char *addr;
		uint16_t port;
	} good[] = {
		{ "192.0.2.7", AF_INET, "192.0.2.7", 53 },
		{ "192.0.2.7:5353", AF_INET, "192.0.2.7", 5353 },
		{ "2001:db8::53", AF_INET6, "2001:db8::53", 53 },
		{ "[2001:db8::53]", AF_INET6, "2001:db8::53", 53 },
		{ "[2001:db8::53]:5353", AF_INET6, "2001:db8::53", 5353 },
		{ "[::1]:65535", AF_INET6, "::1", 65535 },
	};
	static const char *const bad[] = {
		"192.0.2.7:", "192.0.2.7:0", "192.0.2.7:65536", "192.0.2.7:53x",
		"192.0.2.7:+53", "[2001:db8::53", "[2001:db8::53]:", "[2001:db8::53]x",
		"[192.0.2.7]:53", "[]:53", "host:25", ":53", "2001:db8::53:",
	};
	struct netaddr a;
	char buf[NETADDR_STRLEN];

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		ck_assert_msg(netaddr_parse_hostport(&a, good[i].text, 53) == 0,
		    "rejected \"%s\"", good[i].text);
		ck_assert_int_eq(netaddr_family(&a), good[i].family);
		ck_assert_str_eq(netaddr_ntop(&a, buf, sizeof(buf)), good[i].addr);
		ck_assert_uint_eq(netaddr_port(&a), good[i].port);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		ck_assert_msg(netaddr_parse_hostport(&a, bad[i], 53) == -1,
		    "accepted \"%s\"", bad[i]);
}
END_TEST

START_TEST(test_bytes_sockaddr)
{
	static const uint8_t v4[4] = { 198, 51, 100, 9 };
	static const uint8_t v6[16] = { 0x20, 0x01, 0x0d, 0xb8, [15] = 9 };
	struct netaddr a, b;
	struct sockaddr_in6 sin6;
	char buf[NETADDR_STRLEN];

	netaddr_from_bytes(&a, AF_INET, v4, 25);
	ck_assert_str_eq(netaddr_format_hostport(&a, buf, sizeof(buf)), "198.51.100.9:25");
	netaddr_from_bytes(&a, AF_INET6, v6, 25);
	ck_assert_str_eq(netaddr_format_hostport(&a, buf, sizeof(buf)), "[2001:db8::9]:25");

	memset(&sin6, 0, sizeof(sin6));
	sin6.sin6_family = AF_INET6;
	sin6.sin6_port = htons(465);
	memcpy(&sin6.sin6_addr, v6, 16);
	netaddr_from_sockaddr(&b, (struct sockaddr *)&sin6, sizeof(sin6));
	ck_assert_uint_eq(b.len, sizeof(sin6));
	ck_assert_uint_eq(netaddr_port(&b), 465);
	ck_assert(netaddr_equal(&a, &b));
}
END_TEST

START_TEST(test_equal_and_unmap)
{
	struct netaddr a, b, m;
	char buf[NETADDR_STRLEN];

	netaddr_parse(&a, "192.0.2.1", 25);
	netaddr_parse(&b, "192.0.2.1", 587);
	ck_assert(netaddr_equal(&a, &b));          /* ports do not matter */
	netaddr_parse(&b, "192.0.2.2", 25);
	ck_assert(!netaddr_equal(&a, &b));
	netaddr_parse(&b, "2001:db8::1", 25);
	ck_assert(!netaddr_equal(&a, &b));
	netaddr_parse(&a, "2001:db8::1", 0);
	ck_assert(netaddr_equal(&a, &b));

	netaddr_parse(&m, "::ffff:192.0.2.1", 2525);
	netaddr_parse(&a, "192.0.2.1", 0);
	ck_assert(netaddr_equal(&m, &a));          /* mapped equals plain */
	netaddr_unmap_v4(&m);
	ck_assert_int_eq(netaddr_family(&m), AF_INET);
	ck_assert_uint_eq(m.len, sizeof(struct sockaddr_in));
	ck_assert_str_eq(netaddr_format_hostport(&m, buf, sizeof(buf)), "192.0.2.1:2525");
	/* Not mapped: untouched. */
	netaddr_parse(&b, "2001:db8::1", 25);
	netaddr_unmap_v4(&b);
	ck_assert_int_eq(netaddr_family(&b), AF_INET6);
	netaddr_parse(&b, "::192.0.2.1", 25);      /* deprecated compatible form */
	netaddr_unmap_v4(&b);
	ck_assert_int_eq(netaddr_family(&b), AF_INET6);
}
END_TEST

START_TEST(test_prefix_parse)
{
	struct netaddr_prefix p;
	static const char *const bad[] = {
		"", "/24", "192.0.2.0/", "192.0.2.0/33", "2001:db8::/129", "192.0.2.0/-1",
		"192.0.2.0/2x", "192.0.2.0/24/1", "example.org/24", "192.0.2.0/ 24",
	};

	ck_assert_int_eq(netaddr_prefix_parse(&p, "192.0.2.0/24"), 0);
	ck_assert_int_eq(p.family, AF_INET);
	ck_assert_uint_eq(p.bits, 24);
	ck_assert_int_eq(netaddr_prefix_parse(&p, "192.0.2.77/26"), 0);
	ck_assert_uint_eq(p.addr[3], 64);          /* host bits cleared */
	ck_assert_int_eq(netaddr_prefix_parse(&p, "2001:db8::/32"), 0);
	ck_assert_int_eq(p.family, AF_INET6);
	ck_assert_uint_eq(p.bits, 32);
	ck_assert_int_eq(netaddr_prefix_parse(&p, "198.51.100.5"), 0);
	ck_assert_uint_eq(p.bits, 32);
	ck_assert_int_eq(netaddr_prefix_parse(&p, "::1"), 0);
	ck_assert_uint_eq(p.bits, 128);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		ck_assert_msg(netaddr_prefix_parse(&p, bad[i]) == -1, "accepted \"%s\"", bad[i]);
}
END_TEST

static bool
matches(const char *prefix, const char *addr)
{
	struct netaddr_prefix p;
	struct netaddr a;

	ck_assert_int_eq(netaddr_prefix_parse(&p, prefix), 0);
	ck_assert_int_eq(netaddr_parse(&a, addr, 0), 0);
	return netaddr_prefix_match(&p, &a);
}

START_TEST(test_prefix_match)
{
	ck_assert(matches("192.0.2.0/24", "192.0.2.255"));
	ck_assert(!matches("192.0.2.0/24", "192.0.3.0"));
	ck_assert(matches("192.0.2.64/26", "192.0.2.127"));
	ck_assert(!matches("192.0.2.64/26", "192.0.2.128"));
	ck_assert(!matches("192.0.2.64/26", "192.0.2.63"));
	ck_assert(matches("198.51.100.5", "198.51.100.5"));
	ck_assert(!matches("198.51.100.5", "198.51.100.6"));
	ck_assert(matches("0.0.0.0/0", "203.0.113.9"));
	ck_assert(!matches("0.0.0.0/0", "2001:db8::1"));   /* families are strict */
	ck_assert(matches("::/0", "2001:db8::1"));
	ck_assert(!matches("::/0", "192.0.2.1"));
	ck_assert(matches("2001:db8::/32", "2001:db8:ffff::1"));
	ck_assert(!matches("2001:db8::/32", "2001:db9::1"));
	ck_assert(matches("2001:db8::/33", "2001:db8:7fff::1"));
	ck_assert(!matches("2001:db8::/33", "2001:db8:8000::1"));
	ck_assert(matches("::1/128", "::1"));
	ck_assert(!matches("::1/128", "::2"));
	/* A dual-stack socket reports IPv4 clients as mapped: they match IPv4 prefixes. */
	ck_assert(matches("127.0.0.0/8", "::ffff:127.0.0.1"));
	ck_assert(!matches("127.0.0.0/8", "::ffff:192.0.2.1"));
	ck_assert(matches("0.0.0.0/0", "::ffff:192.0.2.1"));
}
END_TEST

START_TEST(test_classify)
{
	static const struct {
		const char *addr;
		enum netaddr_class cls;
	} table[] = {
		{ "192.0.2.1", NETADDR_OK },
		{ "2001:db8::1", NETADDR_OK },
		{ "0.0.0.0", NETADDR_UNSPECIFIED },
		{ "0.1.2.3", NETADDR_UNSPECIFIED },
		{ "::", NETADDR_UNSPECIFIED },
		{ "127.0.0.1", NETADDR_LOOPBACK },
		{ "127.255.255.254", NETADDR_LOOPBACK },
		{ "::1", NETADDR_LOOPBACK },
		{ "169.254.0.1", NETADDR_LINK_LOCAL },
		{ "169.255.0.1", NETADDR_OK },
		{ "fe80::1", NETADDR_LINK_LOCAL },
		{ "febf:ffff::1", NETADDR_LINK_LOCAL },
		{ "fec0::1", NETADDR_OK },
		{ "224.0.0.1", NETADDR_MULTICAST },
		{ "239.255.255.255", NETADDR_MULTICAST },
		{ "223.255.255.255", NETADDR_OK },
		{ "240.0.0.1", NETADDR_OK },
		{ "ff02::1", NETADDR_MULTICAST },
		{ "255.255.255.255", NETADDR_BROADCAST },
		{ "::ffff:192.0.2.1", NETADDR_V4MAPPED },
		{ "::ffff:0:0", NETADDR_V4MAPPED },
		{ "::fffe:192.0.2.1", NETADDR_OK },
	};
	struct netaddr a;

	for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
		ck_assert_int_eq(netaddr_parse(&a, table[i].addr, 25), 0);
		ck_assert_msg(netaddr_classify(&a) == table[i].cls, "%s: got %s, want %s",
		    table[i].addr, netaddr_class_name(netaddr_classify(&a)),
		    netaddr_class_name(table[i].cls));
	}
	ck_assert_str_eq(netaddr_class_name(NETADDR_LINK_LOCAL), "link-local address");
	ck_assert_str_eq(netaddr_class_name(NETADDR_V4MAPPED), "IPv4-mapped IPv6 address");
}
END_TEST

START_TEST(test_is_local)
{
	struct netaddr a;

	/* Loopback is configured in every namespace we run in; documentation space never. */
	netaddr_parse(&a, "127.0.0.1", 0);
	ck_assert(netaddr_is_local(&a));
	netaddr_parse(&a, "203.0.113.254", 0);
	ck_assert(!netaddr_is_local(&a));
	netaddr_parse(&a, "2001:db8:ffff::fe", 0);
	ck_assert(!netaddr_is_local(&a));
}
END_TEST

static Suite *
netaddr_suite(void)
{
	Suite *s = suite_create("netaddr");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_parse_format_v4);
	tcase_add_test(tc, test_parse_format_v6);
	tcase_add_test(tc, test_parse_rejects);
	tcase_add_test(tc, test_hostport);
	tcase_add_test(tc, test_bytes_sockaddr);
	tcase_add_test(tc, test_equal_and_unmap);
	tcase_add_test(tc, test_prefix_parse);
	tcase_add_test(tc, test_prefix_match);
	tcase_add_test(tc, test_classify);
	tcase_add_test(tc, test_is_local);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(netaddr_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
