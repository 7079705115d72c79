/*
 * check_proxy_proto: unit tests for src/proxy_proto.c: version 1 and 2 headers for both
 * families, headers arriving a byte at a time, UNKNOWN and LOCAL, TLVs, and the ways a
 * header can be wrong (garbage, signature, truncation, lengths, version, command).
 */
#include "config.h"

#include <arpa/inet.h>
#include <check.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proxy_proto.h"

static const uint8_t v2_sig[12] = {
	0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
};

/* Builds a v2 header into buf: signature, ver_cmd, fam, block of blen bytes. */
static size_t
v2_build(uint8_t *buf, uint8_t ver_cmd, uint8_t fam, const uint8_t *blk, size_t blen)
{
	memcpy(buf, v2_sig, sizeof(v2_sig));
	buf[12] = ver_cmd;
	buf[13] = fam;
	buf[14] = (uint8_t)(blen >> 8);
	buf[15] = (uint8_t)blen;
	if (blen > 0)
		memcpy(buf + 16, blk, blen);
	return 16 + blen;
}

/* The TCP/IPv4 block 198.51.100.7:41234 -> 192.0.2.25:25, then extra bytes. */
static size_t
v4_block(uint8_t *blk, const uint8_t *extra, size_t nextra)
{
	inet_pton(AF_INET, "198.51.100.7", blk);
	inet_pton(AF_INET, "192.0.2.25", blk + 4);
	blk[8] = 41234 >> 8;
	blk[9] = 41234 & 0xff;
	blk[10] = 0;
	blk[11] = 25;
	if (nextra > 0)
		memcpy(blk + 12, extra, nextra);
	return 12 + nextra;
}

static void
assert_addr(const struct netaddr *a, const char *ip, unsigned port)
{
	char buf[NETADDR_STRLEN];

	ck_assert_str_eq(netaddr_ntop(a, buf, sizeof(buf)), ip);
	ck_assert_uint_eq(netaddr_port(a), port);
}

/* Every proper prefix of a valid header asks for more; the whole one is DONE. */
static void
assert_split(const void *hdr, size_t len)
{
	struct proxy_proto_header h;

	for (size_t i = 0; i < len; i++)
		ck_assert_int_eq(proxy_proto_parse(hdr, i, &h), PROXY_PROTO_NEED_MORE);
	ck_assert_int_eq(proxy_proto_parse(hdr, len, &h), PROXY_PROTO_DONE);
	ck_assert_uint_eq(h.consumed, len);
}

static void
assert_error(const void *buf, size_t len)
{
	struct proxy_proto_header h;

	ck_assert_int_eq(proxy_proto_parse(buf, len, &h), PROXY_PROTO_ERROR);
	ck_assert_ptr_nonnull(h.why);
}

static void
assert_error_str(const char *s)
{
	assert_error(s, strlen(s));
}

START_TEST(test_v1_tcp4)
{
	const char *in = "PROXY TCP4 198.51.100.7 192.0.2.25 41234 25\r\nEHLO x\r\n";
	struct proxy_proto_header h;

	ck_assert_int_eq(proxy_proto_parse(in, strlen(in), &h), PROXY_PROTO_DONE);
	ck_assert_uint_eq(h.version, 1);
	ck_assert(h.has_addrs);
	ck_assert(!h.local);
	/* Only the header is consumed: the SMTP bytes after it belong to the session. */
	ck_assert_uint_eq(h.consumed, strlen("PROXY TCP4 198.51.100.7 192.0.2.25 41234 25\r\n"));
	ck_assert_int_eq(netaddr_family(&h.src), AF_INET);
	assert_addr(&h.src, "198.51.100.7", 41234);
	assert_addr(&h.dst, "192.0.2.25", 25);
}
END_TEST

START_TEST(test_v1_tcp6)
{
	const char *in = "PROXY TCP6 2001:db8::7 2001:DB8:0:0::25 0 65535\r\n";
	struct proxy_proto_header h;

	ck_assert_int_eq(proxy_proto_parse(in, strlen(in), &h), PROXY_PROTO_DONE);
	ck_assert_uint_eq(h.version, 1);
	ck_assert(h.has_addrs);
	ck_assert_int_eq(netaddr_family(&h.src), AF_INET6);
	assert_addr(&h.src, "2001:db8::7", 0);
	assert_addr(&h.dst, "2001:db8::25", 65535);
	ck_assert_uint_eq(h.consumed, strlen(in));
}
END_TEST

START_TEST(test_v1_longest)
{
	/* Spec 2.1's worst cases: 104 bytes for TCP6, 107 for UNKNOWN with addresses. */
	const char *tcp6 = "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
	    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
	const char *unk = "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
	    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
	struct proxy_proto_header h;

	ck_assert_uint_eq(strlen(tcp6), 104);
	ck_assert_uint_eq(strlen(unk), PROXY_PROTO_V1_MAX);
	ck_assert_int_eq(proxy_proto_parse(tcp6, strlen(tcp6), &h), PROXY_PROTO_DONE);
	ck_assert_int_eq(proxy_proto_parse(unk, strlen(unk), &h), PROXY_PROTO_DONE);
	ck_assert_uint_eq(h.consumed, PROXY_PROTO_V1_MAX);
}
END_TEST

START_TEST(test_v1_unknown)
{
	const char *in = "PROXY UNKNOWN\r\nEHLO";
	const char *junk = "PROXY UNKNOWN whatever the sender put here\r\n";
	struct proxy_proto_header h;

	ck_assert_int_eq(proxy_proto_parse(in, strlen(in), &h), PROXY_PROTO_DONE);
	ck_assert_uint_eq(h.version, 1);
	ck_assert(!h.has_addrs);
	ck_assert_uint_eq(h.consumed, 15);
	ck_assert_int_eq(proxy_proto_parse(junk, strlen(junk), &h), PROXY_PROTO_DONE);
	ck_assert(!h.has_addrs);
	ck_assert_uint_eq(h.consumed, strlen(junk));
	assert_error_str("PROXY UNKNOWNX\r\n");
}
END_TEST

START_TEST(test_v1_split)
{
	const char *in = "PROXY TCP4 198.51.100.7 192.0.2.25 41234 25\r\n";

	assert_split(in, strlen(in));
	assert_split("PROXY UNKNOWN\r\n", 15);
}
END_TEST

START_TEST(test_v1_errors)
{
	static const char *const bad[] = {
		"PROXY TCP4 198.51.100.7 192.0.2.25 41234 25\n",        /* bare LF */
		"PROXY TCP4 198.51.100.7 192.0.2.25 41234 25\rX",       /* bare CR */
		"PROXY TCP4 198.51.100.7  192.0.2.25 41234 25\r\n",     /* two spaces */
		"PROXY TCP4 198.51.100.7 192.0.2.25 41234 25 \r\n",     /* trailing space */
		"PROXY TCP4 198.51.100.7 192.0.2.25 41234\r\n",         /* field missing */
		"PROXY TCP4 198.51.100.7 192.0.2.25 41234 25 1\r\n",    /* field too many */
		"PROXY TCP4 2001:db8::7 192.0.2.25 41234 25\r\n",       /* family mismatch */
		"PROXY TCP6 198.51.100.7 192.0.2.25 41234 25\r\n",      /* family mismatch */
		"PROXY TCP4 198.51.100.07 192.0.2.25 41234 25\r\n",     /* leading zero */
		"PROXY TCP4 198.51.100.256 192.0.2.25 41234 25\r\n",
		"PROXY TCP4 198.51.100.7 192.0.2.25 041234 25\r\n",     /* leading zero */
		"PROXY TCP4 198.51.100.7 192.0.2.25 65536 25\r\n",
		"PROXY TCP4 198.51.100.7 192.0.2.25 -1 25\r\n",
		"PROXY TCP4 198.51.100.7 192.0.2.25 +1 25\r\n",
		"PROXY UDP4 198.51.100.7 192.0.2.25 41234 25\r\n",
		"PROXY tcp4 198.51.100.7 192.0.2.25 41234 25\r\n",
		"PROXY \r\n",
		"PROXY\r\n",
		"proxy TCP4 198.51.100.7 192.0.2.25 41234 25\r\n",
		"EHLO client.example\r\n",                              /* no header at all */
		"GET / HTTP/1.0\r\n",
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_error_str(bad[i]);
	/* A NUL inside the line. */
	assert_error("PROXY TCP4 198.51.100.7\0 192.0.2.25 41234 25\r\n", 46);
}
END_TEST

START_TEST(test_v1_garbage_early)
{
	struct proxy_proto_header h;

	/* A client speaking first is refused at its first byte, not after a timeout. */
	ck_assert_int_eq(proxy_proto_parse("E", 1, &h), PROXY_PROTO_ERROR);
	ck_assert_int_eq(proxy_proto_parse("PROXX", 5, &h), PROXY_PROTO_ERROR);
	ck_assert_int_eq(proxy_proto_parse("PRO", 3, &h), PROXY_PROTO_NEED_MORE);
	ck_assert_int_eq(proxy_proto_parse("", 0, &h), PROXY_PROTO_NEED_MORE);
}
END_TEST

START_TEST(test_v1_oversized)
{
	char buf[PROXY_PROTO_MAX];
	struct proxy_proto_header h;

	memset(buf, 'A', sizeof(buf));
	memcpy(buf, "PROXY UNKNOWN ", 14);
	/* 106 bytes without CR LF: still waiting; 107: no room left for CR LF. */
	ck_assert_int_eq(proxy_proto_parse(buf, PROXY_PROTO_V1_MAX - 1, &h),
	    PROXY_PROTO_NEED_MORE);
	ck_assert_int_eq(proxy_proto_parse(buf, PROXY_PROTO_V1_MAX, &h), PROXY_PROTO_ERROR);
	ck_assert_int_eq(proxy_proto_parse(buf, sizeof(buf), &h), PROXY_PROTO_ERROR);
	/* CR LF ending at byte 108 is one too far. */
	buf[PROXY_PROTO_V1_MAX - 1] = '\r';
	buf[PROXY_PROTO_V1_MAX] = '\n';
	ck_assert_int_eq(proxy_proto_parse(buf, PROXY_PROTO_V1_MAX + 1, &h),
	    PROXY_PROTO_ERROR);
	ck_assert_int_eq(proxy_proto_parse(buf, PROXY_PROTO_V1_MAX, &h), PROXY_PROTO_ERROR);
}
END_TEST

START_TEST(test_v2_inet)
{
	uint8_t blk[64], buf[128];
	size_t n = v2_build(buf, 0x21, 0x11, blk, v4_block(blk, NULL, 0));
	struct proxy_proto_header h;

	memcpy(buf + n, "EHLO", 4);
	ck_assert_int_eq(proxy_proto_parse(buf, n + 4, &h), PROXY_PROTO_DONE);
	ck_assert_uint_eq(h.version, 2);
	ck_assert(h.has_addrs);
	ck_assert(!h.local);
	ck_assert_uint_eq(h.consumed, 28);
	assert_addr(&h.src, "198.51.100.7", 41234);
	assert_addr(&h.dst, "192.0.2.25", 25);
	assert_split(buf, n);
}
END_TEST

START_TEST(test_v2_inet6)
{
	uint8_t blk[36], buf[128];
	struct proxy_proto_header h;
	size_t n;

	inet_pton(AF_INET6, "2001:db8::7", blk);
	inet_pton(AF_INET6, "2001:db8::25", blk + 16);
	blk[32] = 0xff;
	blk[33] = 0xfe;
	blk[34] = 0;
	blk[35] = 25;
	n = v2_build(buf, 0x21, 0x21, blk, sizeof(blk));
	ck_assert_int_eq(proxy_proto_parse(buf, n, &h), PROXY_PROTO_DONE);
	ck_assert(h.has_addrs);
	ck_assert_uint_eq(h.consumed, 52);
	ck_assert_int_eq(netaddr_family(&h.src), AF_INET6);
	assert_addr(&h.src, "2001:db8::7", 65534);
	assert_addr(&h.dst, "2001:db8::25", 25);
	assert_split(buf, n);
}
END_TEST

START_TEST(test_v2_tlvs)
{
	/* ALPN "smtp", then a NOOP of 0 bytes, then a unique id: skipped, consumed. */
	static const uint8_t tlvs[] = {
		0x01, 0x00, 0x04, 's', 'm', 't', 'p',
		0x04, 0x00, 0x00,
		0x05, 0x00, 0x02, 0xab, 0xcd,
	};
	uint8_t blk[64], buf[128];
	size_t n = v2_build(buf, 0x21, 0x11, blk, v4_block(blk, tlvs, sizeof(tlvs)));
	struct proxy_proto_header h;

	ck_assert_int_eq(proxy_proto_parse(buf, n, &h), PROXY_PROTO_DONE);
	ck_assert_uint_eq(h.consumed, 16 + 12 + sizeof(tlvs));
	assert_addr(&h.src, "198.51.100.7", 41234);

	/* A TLV whose length runs past the header, and a stray byte. */
	n = v2_build(buf, 0x21, 0x11, blk, v4_block(blk, tlvs, 6));
	assert_error(buf, n);
	n = v2_build(buf, 0x21, 0x11, blk, v4_block(blk, tlvs, 1));
	assert_error(buf, n);
}
END_TEST

START_TEST(test_v2_local)
{
	uint8_t blk[64], buf[128];
	struct proxy_proto_header h;
	size_t n;

	/* HAProxy's health checks: LOCAL, UNSPEC, no block. */
	n = v2_build(buf, 0x20, 0x00, NULL, 0);
	ck_assert_int_eq(proxy_proto_parse(buf, n, &h), PROXY_PROTO_DONE);
	ck_assert_uint_eq(h.version, 2);
	ck_assert(h.local);
	ck_assert(!h.has_addrs);
	ck_assert_uint_eq(h.consumed, 16);
	/* LOCAL with a block anyway: skipped by its length, the family ignored. */
	n = v2_build(buf, 0x20, 0x11, blk, v4_block(blk, NULL, 0));
	ck_assert_int_eq(proxy_proto_parse(buf, n, &h), PROXY_PROTO_DONE);
	ck_assert(h.local);
	ck_assert(!h.has_addrs);
	ck_assert_uint_eq(h.consumed, 28);
	assert_split(buf, n);
}
END_TEST

START_TEST(test_v2_unsupported_families)
{
	uint8_t blk[216], buf[300];
	struct proxy_proto_header h;
	size_t n;

	/* PROXY over UNSPEC, AF_UNIX or UDP: accepted, no address (spec 2.2). */
	n = v2_build(buf, 0x21, 0x00, NULL, 0);
	ck_assert_int_eq(proxy_proto_parse(buf, n, &h), PROXY_PROTO_DONE);
	ck_assert(!h.has_addrs);
	ck_assert(!h.local);
	memset(blk, 0, sizeof(blk));
	n = v2_build(buf, 0x21, 0x31, blk, sizeof(blk));
	ck_assert_int_eq(proxy_proto_parse(buf, n, &h), PROXY_PROTO_DONE);
	ck_assert(!h.has_addrs);
	n = v2_build(buf, 0x21, 0x12, blk, v4_block(blk, NULL, 0));
	ck_assert_int_eq(proxy_proto_parse(buf, n, &h), PROXY_PROTO_DONE);
	ck_assert(!h.has_addrs);
}
END_TEST

START_TEST(test_v2_errors)
{
	uint8_t blk[64], buf[128];
	size_t n, blen = v4_block(blk, NULL, 0);

	/* Wrong signature, at its first differing byte already. */
	n = v2_build(buf, 0x21, 0x11, blk, blen);
	buf[7] = 'X';
	assert_error(buf, n);
	assert_error(buf, 8);
	/* "\r\n\r\n" alone is not a signature either. */
	assert_error("\r\n\r\nQUIT\r\n", 10);
	/* Version 1 or 3 in the binary form, command 2..15. */
	n = v2_build(buf, 0x11, 0x11, blk, blen);
	assert_error(buf, 13);
	n = v2_build(buf, 0x31, 0x11, blk, blen);
	assert_error(buf, n);
	n = v2_build(buf, 0x22, 0x11, blk, blen);
	assert_error(buf, n);
	n = v2_build(buf, 0x2f, 0x11, blk, blen);
	assert_error(buf, n);
	/* Family 4, transport 3. */
	n = v2_build(buf, 0x21, 0x41, blk, blen);
	assert_error(buf, n);
	n = v2_build(buf, 0x21, 0x13, blk, blen);
	assert_error(buf, n);
	/* Blocks too short for their family. */
	n = v2_build(buf, 0x21, 0x11, blk, 11);
	assert_error(buf, n);
	n = v2_build(buf, 0x21, 0x21, blk, 12);
	assert_error(buf, n);
}
END_TEST

START_TEST(test_v2_truncated)
{
	uint8_t blk[64], buf[128];
	struct proxy_proto_header h;
	size_t n = v2_build(buf, 0x21, 0x11, blk, v4_block(blk, NULL, 0));

	/* The length announces 12 bytes; 11 came so far: wait, never guess. */
	ck_assert_int_eq(proxy_proto_parse(buf, n - 1, &h), PROXY_PROTO_NEED_MORE);
	ck_assert_int_eq(proxy_proto_parse(buf, 16, &h), PROXY_PROTO_NEED_MORE);
}
END_TEST

START_TEST(test_v2_oversized)
{
	static uint8_t buf[PROXY_PROTO_MAX + 16];
	struct proxy_proto_header h;
	size_t blen = PROXY_PROTO_MAX - 16;

	/* The largest accepted: 4096 bytes, TLVs filling the rest after the addresses. */
	memset(buf, 0, sizeof(buf));
	v2_build(buf, 0x21, 0x11, NULL, 0);
	buf[14] = (uint8_t)(blen >> 8);
	buf[15] = (uint8_t)blen;
	v4_block(buf + 16, NULL, 0);
	buf[28] = 0x04; /* NOOP TLV with the remaining length */
	buf[29] = (uint8_t)((blen - 12 - 3) >> 8);
	buf[30] = (uint8_t)(blen - 12 - 3);
	ck_assert_int_eq(proxy_proto_parse(buf, PROXY_PROTO_MAX, &h), PROXY_PROTO_DONE);
	ck_assert_uint_eq(h.consumed, PROXY_PROTO_MAX);
	/* One more byte announced: refused as soon as the length is seen. */
	blen++;
	buf[14] = (uint8_t)(blen >> 8);
	buf[15] = (uint8_t)blen;
	ck_assert_int_eq(proxy_proto_parse(buf, 16, &h), PROXY_PROTO_ERROR);
	buf[14] = 0xff;
	buf[15] = 0xff;
	ck_assert_int_eq(proxy_proto_parse(buf, 16, &h), PROXY_PROTO_ERROR);
}
END_TEST

START_TEST(test_never_need_more_at_max)
{
	/* The caller's guarantee: PROXY_PROTO_MAX bytes always get a verdict. */
	static uint8_t buf[PROXY_PROTO_MAX];
	struct proxy_proto_header h;

	memset(buf, 'P', sizeof(buf));
	ck_assert_int_ne(proxy_proto_parse(buf, sizeof(buf), &h), PROXY_PROTO_NEED_MORE);
	memcpy(buf, "PROXY ", 6);
	ck_assert_int_ne(proxy_proto_parse(buf, sizeof(buf), &h), PROXY_PROTO_NEED_MORE);
	memset(buf, 0, sizeof(buf));
	v2_build(buf, 0x21, 0x11, NULL, 0);
	buf[14] = 0x0f;
	buf[15] = 0xf0;
	ck_assert_int_ne(proxy_proto_parse(buf, sizeof(buf), &h), PROXY_PROTO_NEED_MORE);
}
END_TEST

static Suite *
proxy_proto_suite(void)
{
	Suite *s = suite_create("proxy_proto");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_v1_tcp4);
	tcase_add_test(tc, test_v1_tcp6);
	tcase_add_test(tc, test_v1_longest);
	tcase_add_test(tc, test_v1_unknown);
	tcase_add_test(tc, test_v1_split);
	tcase_add_test(tc, test_v1_errors);
	tcase_add_test(tc, test_v1_garbage_early);
	tcase_add_test(tc, test_v1_oversized);
	tcase_add_test(tc, test_v2_inet);
	tcase_add_test(tc, test_v2_inet6);
	tcase_add_test(tc, test_v2_tlvs);
	tcase_add_test(tc, test_v2_local);
	tcase_add_test(tc, test_v2_unsupported_families);
	tcase_add_test(tc, test_v2_errors);
	tcase_add_test(tc, test_v2_truncated);
	tcase_add_test(tc, test_v2_oversized);
	tcase_add_test(tc, test_never_need_more_at_max);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(proxy_proto_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
