/*
 * check_smtp_proto: unit tests for src/smtp_proto.c: command lines, paths and mailbox
 * syntax, MAIL parameters, single- and multi-line replies (good and malformed), EHLO
 * keywords, enhanced status codes, and DATA transparency: the strict decoder against
 * SMTP smuggling inputs under every chunking, the encoder, and encode/decode round trips.
 */
#include "config.h"

#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "smtp_proto.h"

/* Small deterministic generator so that failures reproduce. */
static uint64_t rng_state;

static void
rng_seed(uint64_t seed)
{
	rng_state = seed * 0x9e3779b97f4a7c15ULL + 1;
}

static uint32_t
rng(uint32_t bound)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return (uint32_t)(rng_state % bound);
}

/* ---------------------------------------------------------------------------------- */
/* Commands */

START_TEST(test_command_verbs)
{
	struct smtp_command c;

	ck_assert_int_eq(smtp_parse_command("MAIL FROM:<a@b.example>", &c), 0);
	ck_assert_int_eq(c.verb, SMTP_VERB_MAIL);
	ck_assert_str_eq(c.args, "FROM:<a@b.example>");

	ck_assert_int_eq(smtp_parse_command("mail from:<>", &c), 0);
	ck_assert_int_eq(c.verb, SMTP_VERB_MAIL);
	ck_assert_str_eq(c.args, "from:<>");

	ck_assert_int_eq(smtp_parse_command("rCpT TO:<x@y.example>", &c), 0);
	ck_assert_int_eq(c.verb, SMTP_VERB_RCPT);
	ck_assert_str_eq(c.args, "TO:<x@y.example>");

	ck_assert_int_eq(smtp_parse_command("EHLO client.example", &c), 0);
	ck_assert_int_eq(c.verb, SMTP_VERB_EHLO);
	ck_assert_str_eq(c.args, "client.example");

	ck_assert_int_eq(smtp_parse_command("QUIT", &c), 0);
	ck_assert_int_eq(c.verb, SMTP_VERB_QUIT);
	ck_assert_str_eq(c.args, "");

	ck_assert_int_eq(smtp_parse_command("data", &c), 0);
	ck_assert_int_eq(c.verb, SMTP_VERB_DATA);
	ck_assert_int_eq(smtp_parse_command("StartTLS", &c), 0);
	ck_assert_int_eq(c.verb, SMTP_VERB_STARTTLS);
	ck_assert_int_eq(smtp_parse_command("BDAT 100 LAST", &c), 0);
	ck_assert_int_eq(c.verb, SMTP_VERB_BDAT);
	ck_assert_str_eq(c.args, "100 LAST");

	/* Only one space is part of the separator. */
	ck_assert_int_eq(smtp_parse_command("NOOP  x", &c), 0);
	ck_assert_int_eq(c.verb, SMTP_VERB_NOOP);
	ck_assert_str_eq(c.args, " x");
	ck_assert_int_eq(smtp_parse_command("RSET ", &c), 0);
	ck_assert_int_eq(c.verb, SMTP_VERB_RSET);
	ck_assert_str_eq(c.args, "");

	/* UTF-8 in arguments is for the argument parsers to judge. */
	ck_assert_int_eq(smtp_parse_command("RCPT TO:<j\xc3\xb6@x.example>", &c), 0);
	ck_assert_int_eq(c.verb, SMTP_VERB_RCPT);
}
END_TEST

START_TEST(test_command_unknown_and_bad)
{
	struct smtp_command c;

	ck_assert_int_eq(smtp_parse_command("MAILX FROM:<a@b.example>", &c), 0);
	ck_assert_int_eq(c.verb, SMTP_VERB_UNKNOWN);
	ck_assert_int_eq(smtp_parse_command("XYZZY", &c), 0);
	ck_assert_int_eq(c.verb, SMTP_VERB_UNKNOWN);
	ck_assert_int_eq(smtp_parse_command("MAI", &c), 0);
	ck_assert_int_eq(c.verb, SMTP_VERB_UNKNOWN);
	ck_assert_int_eq(smtp_parse_command(" QUIT", &c), 0);
	ck_assert_int_eq(c.verb, SMTP_VERB_UNKNOWN);

	ck_assert_int_eq(smtp_parse_command("", &c), -1);
	ck_assert_int_eq(smtp_parse_command("QUIT\r", &c), -1);
	ck_assert_int_eq(smtp_parse_command("QUIT\n", &c), -1);
	ck_assert_int_eq(smtp_parse_command("NO\tOP", &c), -1);
	ck_assert_int_eq(smtp_parse_command("DATA\x7f", &c), -1);
	ck_assert_int_eq(smtp_parse_command("RCPT TO:<a\x01@b.example>", &c), -1);
	ck_assert_int_eq(smtp_parse_command("MAIL FROM:<a@b.example>\r\nRCPT TO:<x@y>", &c), -1);
	ck_assert_int_eq(smtp_parse_command("\x1b[31mQUIT", &c), -1);
}
END_TEST

START_TEST(test_verb_names)
{
	static const enum smtp_verb all[] = {
		SMTP_VERB_HELO, SMTP_VERB_EHLO, SMTP_VERB_MAIL, SMTP_VERB_RCPT, SMTP_VERB_DATA,
		SMTP_VERB_RSET, SMTP_VERB_NOOP, SMTP_VERB_QUIT, SMTP_VERB_HELP, SMTP_VERB_VRFY,
		SMTP_VERB_EXPN, SMTP_VERB_STARTTLS, SMTP_VERB_AUTH, SMTP_VERB_BDAT,
	};
	struct smtp_command c;

	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
		const char *name = smtp_verb_name(all[i]);
		ck_assert_int_eq(smtp_parse_command(name, &c), 0);
		ck_assert_int_eq(c.verb, all[i]);
	}
	ck_assert_str_eq(smtp_verb_name(SMTP_VERB_STARTTLS), "STARTTLS");
	ck_assert_str_eq(smtp_verb_name(SMTP_VERB_UNKNOWN), "UNKNOWN");
}
END_TEST

/* ---------------------------------------------------------------------------------- */
/* Mailboxes */

static const char *const mailbox_good[] = {
	"user@example.com",
	"first.last@example.com",
	"a+tag@sub.example.org",
	"!#$%&'*+-/=?^_`{|}~@example.com",
	"\"john doe\"@example.com",
	"\"a\\\"b\"@example.com",
	"\"a@b\"@example.com",
	"\"\"@example.com",
	"\"a.\"@example.com",
	"user@[192.0.2.1]",
	"user@[IPv6:2001:db8::1]",
	"user@[ipv6:2001:db8::1]",
	"user@[IPv6:::ffff:192.0.2.1]",
	"u@a-b.example",
	"u@1.example",
	"u@localhost",
	"U@EXAMPLE.COM",
	"0123456789012345678901234567890123456789012345678901234567890123@example.com",
	"u@abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabc.example",
};

static const char *const mailbox_bad[] = {
	"",
	"user",
	"@example.com",
	"user@",
	".user@example.com",
	"user.@example.com",
	"us..er@example.com",
	"user@example..com",
	"user@-example.com",
	"user@example-.com",
	"user@example.com.",
	"user@.example.com",
	"us er@example.com",
	"user@exa mple.com",
	"user@exa_mple.com",
	"user@@example.com",
	"a\"b\"@example.com",
	"\"unterminated@example.com",
	"\"a\"b@example.com",
	"\"a\x01\"@example.com",
	"\"a\\\x01\"@example.com",
	"user@[192.0.2.256]",
	"user@[192.0.2]",
	"user@[2001:db8::1]",
	"user@[IPv6:192.0.2.1]",
	"user@[IPv6:2001:db8::1%eth0]",
	"user@[192.0.2.1",
	"user@[192.0.2.1]x",
	"user@[x-tag:anything]",
	"user@[]",
	"user@j\xc3\xb6ran.example",
	"j\xc3\xb6ran@example.com",
	"01234567890123456789012345678901234567890123456789012345678901234@example.com",
	"u@abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcd.example",
	"user@example.com>",
	"<user@example.com>",
};

START_TEST(test_mailbox_good)
{
	ck_assert_msg(smtp_mailbox_valid(mailbox_good[_i], false), "%s", mailbox_good[_i]);
	ck_assert_msg(smtp_mailbox_valid(mailbox_good[_i], true), "%s", mailbox_good[_i]);
}
END_TEST

START_TEST(test_mailbox_bad)
{
	ck_assert_msg(!smtp_mailbox_valid(mailbox_bad[_i], false), "%s", mailbox_bad[_i]);
}
END_TEST

START_TEST(test_mailbox_utf8)
{
	ck_assert(smtp_mailbox_valid("j\xc3\xb6ran@example.com", true));
	ck_assert(smtp_mailbox_valid("user@b\xc3\xbc" "cher.example", true));
	ck_assert(smtp_mailbox_valid("\xe7\x94\xa8\xe6\x88\xb7@\xe4\xbe\x8b\xe5\xad\x90.example",
	    true));
	ck_assert(smtp_mailbox_valid("\"j\xc3\xb6 ran\"@example.com", true));
	ck_assert(!smtp_mailbox_valid("\"j\xc3\xb6 ran\"@example.com", false));
	/* Ill-formed UTF-8 stays refused: truncated, overlong, surrogate, above U+10FFFF. */
	ck_assert(!smtp_mailbox_valid("\xc3@example.com", true));
	ck_assert(!smtp_mailbox_valid("\xc0\xaf@example.com", true));
	ck_assert(!smtp_mailbox_valid("\xe0\x80\xaf@example.com", true));
	ck_assert(!smtp_mailbox_valid("\xed\xa0\x80@example.com", true));
	ck_assert(!smtp_mailbox_valid("\xf4\x90\x80\x80@example.com", true));
	ck_assert(!smtp_mailbox_valid("\xff@example.com", true));
	ck_assert(!smtp_mailbox_valid("user@\xc3.example", true));
	/* UTF-8 does not make other syntax acceptable. */
	ck_assert(!smtp_mailbox_valid("j\xc3\xb6..ran@example.com", true));
	ck_assert(!smtp_mailbox_valid("user@[IPv6:2001:db8::\xc3\xb6]", true));
}
END_TEST

START_TEST(test_mailbox_domain)
{
	ck_assert_str_eq(smtp_mailbox_domain("a@b.example"), "b.example");
	ck_assert_str_eq(smtp_mailbox_domain("\"a@b\"@c.example"), "c.example");
	ck_assert_str_eq(smtp_mailbox_domain("u@[192.0.2.1]"), "[192.0.2.1]");
	ck_assert_str_eq(smtp_mailbox_domain("nodomain"), "nodomain");
	ck_assert_str_eq(smtp_mailbox_domain(""), "");
}
END_TEST

/* ---------------------------------------------------------------------------------- */
/* Paths */

START_TEST(test_path_good)
{
	char addr[SMTP_PATH_MAX];
	const char *params, *why = NULL;

	ck_assert_int_eq(smtp_parse_path("FROM:<a@b.example>", "FROM:", true, false, addr,
	    sizeof(addr), &params, &why), 0);
	ck_assert_str_eq(addr, "a@b.example");
	ck_assert_str_eq(params, "");

	ck_assert_int_eq(smtp_parse_path("FROM: <a@b.example>", "FROM:", true, false, addr,
	    sizeof(addr), &params, &why), 0);
	ck_assert_str_eq(addr, "a@b.example");

	ck_assert_int_eq(smtp_parse_path("from:<a@b.example> SIZE=100 BODY=8BITMIME", "FROM:",
	    true, false, addr, sizeof(addr), &params, &why), 0);
	ck_assert_str_eq(addr, "a@b.example");
	ck_assert_str_eq(params, "SIZE=100 BODY=8BITMIME");

	ck_assert_int_eq(smtp_parse_path("FROM:<a@b.example>   SIZE=1", "FROM:", true, false,
	    addr, sizeof(addr), &params, &why), 0);
	ck_assert_str_eq(params, "SIZE=1");

	ck_assert_int_eq(smtp_parse_path("FROM:<>", "FROM:", true, false, addr, sizeof(addr),
	    &params, &why), 0);
	ck_assert_str_eq(addr, "");
	ck_assert_int_eq(smtp_parse_path("FROM:<> SMTPUTF8", "FROM:", true, false, addr,
	    sizeof(addr), &params, &why), 0);
	ck_assert_str_eq(addr, "");
	ck_assert_str_eq(params, "SMTPUTF8");

	ck_assert_int_eq(smtp_parse_path("To:<x@[IPv6:2001:db8::1]>", "TO:", false, false, addr,
	    sizeof(addr), &params, &why), 0);
	ck_assert_str_eq(addr, "x@[IPv6:2001:db8::1]");

	/* '>' inside a quoted local part does not close the path. */
	ck_assert_int_eq(smtp_parse_path("TO:<\"odd>name\"@b.example>", "TO:", false, false,
	    addr, sizeof(addr), &params, &why), 0);
	ck_assert_str_eq(addr, "\"odd>name\"@b.example");
	ck_assert_int_eq(smtp_parse_path("TO:<\"a\\\"b\"@b.example>", "TO:", false, false, addr,
	    sizeof(addr), &params, &why), 0);
	ck_assert_str_eq(addr, "\"a\\\"b\"@b.example");

	/* UTF-8 only with SMTPUTF8. */
	ck_assert_int_eq(smtp_parse_path("TO:<j\xc3\xb6@x.example>", "TO:", false, true, addr,
	    sizeof(addr), &params, &why), 0);
	ck_assert_str_eq(addr, "j\xc3\xb6@x.example");

	/* why and params may be NULL. */
	ck_assert_int_eq(smtp_parse_path("TO:<x@y.example>", "TO:", false, false, addr,
	    sizeof(addr), NULL, NULL), 0);
	ck_assert_int_eq(smtp_parse_path("TO:x@y.example", "TO:", false, false, addr,
	    sizeof(addr), NULL, NULL), -1);
}
END_TEST

static void
expect_path_error(const char *args, const char *prefix, bool allow_null, bool utf8,
    const char *want_why)
{
	char addr[SMTP_PATH_MAX];
	const char *params = NULL, *why = NULL;

	strcpy(addr, "junk");
	ck_assert_msg(smtp_parse_path(args, prefix, allow_null, utf8, addr, sizeof(addr),
	    &params, &why) == -1, "accepted: %s", args);
	ck_assert_msg(why != NULL, "no reason: %s", args);
	ck_assert_str_eq(addr, "");
	if (want_why != NULL)
		ck_assert_msg(strcmp(why, want_why) == 0, "%s: got \"%s\", want \"%s\"", args,
		    why, want_why);
}

/* RFC 5321 4.5.1: RCPT TO:<Postmaster>, no domain, any case; nothing else. */
START_TEST(test_rcpt_postmaster)
{
	char addr[SMTP_PATH_MAX + 1];
	const char *params = NULL, *why = NULL;
	static const char *yes[] = { "TO:<Postmaster>", "to:<postmaster>", "To: <POSTMASTER>",
	    "TO:<poStmASteR>", "TO:<Postmaster>  " };
	static const char *no[] = { "TO:<Postmaster@>", "TO:<postmaster@example.org>",
	    "TO:<Postmasters>", "TO:<Postmaste>", "TO:Postmaster", "TO:<\"Postmaster\">",
	    "TO:<Post master>", "FROM:<Postmaster>", "TO:<Postmaster>x", "TO:<>",
	    "TO:<@a.example:Postmaster>", "" };

	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		/* The ordinary parser refuses it (no domain), so the server asks this one. */
		ck_assert_int_eq(smtp_parse_path(yes[i], "TO:", false, true, addr, sizeof(addr),
		    &params, &why), -1);
		params = NULL;
		ck_assert_msg(smtp_rcpt_is_postmaster(yes[i], &params), "%s", yes[i]);
		ck_assert_str_eq(params, "");
	}
	for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
		ck_assert_msg(!smtp_rcpt_is_postmaster(no[i], &params), "%s", no[i]);
	/* Parameters follow the path as for any recipient (the server refuses them: 555). */
	ck_assert(smtp_rcpt_is_postmaster("TO:<Postmaster> NOTIFY=NEVER", &params));
	ck_assert_str_eq(params, "NOTIFY=NEVER");
	ck_assert(smtp_rcpt_is_postmaster("TO:<postmaster>", NULL));
}
END_TEST

START_TEST(test_path_bad)
{
	expect_path_error("FROM:a@b.example", "FROM:", true, false, "Syntax: MAIL FROM:<address>");
	expect_path_error("TO:a@b.example", "TO:", false, false, "Syntax: RCPT TO:<address>");
	expect_path_error("TO: a@b.example", "TO:", false, false, "Syntax: RCPT TO:<address>");
	expect_path_error("TO:<>", "TO:", false, false, NULL);
	expect_path_error("FROM:<@a.example,@b.example:u@d.example>", "FROM:", true, false,
	    "source routes are not accepted");
	expect_path_error("TO:<@a.example:u@d.example>", "TO:", false, false,
	    "source routes are not accepted");
	expect_path_error("FROM:<a@b.example", "FROM:", true, false, NULL);
	expect_path_error("FROM:<a@b.example>x", "FROM:", true, false, NULL);
	expect_path_error("FROM:<a@b.example><c@d.example>", "FROM:", true, false, NULL);
	expect_path_error("FROMX:<a@b.example>", "FROM:", true, false, NULL);
	expect_path_error("FROM<a@b.example>", "FROM:", true, false, NULL);
	expect_path_error("TO:<a@b.example>", "FROM:", true, false, NULL);
	expect_path_error("", "FROM:", true, false, NULL);
	expect_path_error("FROM:", "FROM:", true, false, NULL);
	expect_path_error("FROM:<a b@x.example>", "FROM:", true, false, "bad address syntax");
	expect_path_error("TO:<postmaster>", "TO:", false, false, "bad address syntax");
	expect_path_error("TO:<a@b..example>", "TO:", false, false, "bad address syntax");
	expect_path_error("TO:<\"a>@b.example", "TO:", false, false, NULL);
	expect_path_error("TO:<j\xc3\xb6@x.example>", "TO:", false, false,
	    "non-ASCII address requires SMTPUTF8");
	expect_path_error("TO:<j\xc3@x.example>", "TO:", false, true, "bad address syntax");
}
END_TEST

START_TEST(test_path_lengths)
{
	char args[600], dom[300], local[100], addr[SMTP_PATH_MAX];
	const char *params, *why;

	/* 64 + 1 + 189 octets of mailbox, plus the brackets: exactly 256. */
	memset(local, 'l', 64);
	local[64] = '\0';
	memset(dom, 'a', 189);
	dom[63] = '.';
	dom[127] = '.';
	dom[189] = '\0';
	snprintf(args, sizeof(args), "TO:<%s@%s>", local, dom);
	ck_assert_int_eq(smtp_parse_path(args, "TO:", false, false, addr, sizeof(addr),
	    &params, &why), 0);
	ck_assert_uint_eq(strlen(addr), 254);

	/* The caller's buffer must hold the mailbox and its NUL. */
	ck_assert_int_eq(smtp_parse_path(args, "TO:", false, false, addr, 255, &params, &why),
	    0);
	ck_assert_int_eq(smtp_parse_path(args, "TO:", false, false, addr, 254, &params, &why),
	    -1);
	ck_assert_str_eq(why, "address too long");

	/* One more octet in the domain: 257. */
	memset(dom, 'a', 190);
	dom[63] = '.';
	dom[127] = '.';
	dom[190] = '\0';
	snprintf(args, sizeof(args), "TO:<%s@%s>", local, dom);
	ck_assert_int_eq(smtp_parse_path(args, "TO:", false, false, addr, sizeof(addr),
	    &params, &why), -1);
	ck_assert_str_eq(why, "address too long");

	/* 65 octets of local part. */
	memset(local, 'l', 65);
	local[65] = '\0';
	snprintf(args, sizeof(args), "TO:<%s@x.example>", local);
	ck_assert_int_eq(smtp_parse_path(args, "TO:", false, false, addr, sizeof(addr),
	    &params, &why), -1);
	ck_assert_str_eq(why, "bad address syntax");
}
END_TEST

/* ---------------------------------------------------------------------------------- */
/* MAIL parameters */

START_TEST(test_mail_params_good)
{
	struct smtp_mail_params mp;
	const char *why = NULL;

	memset(&mp, 0xff, sizeof(mp));
	ck_assert_int_eq(smtp_parse_mail_params("", &mp, &why), 0);
	ck_assert_uint_eq(mp.size, 0);
	ck_assert_int_eq(mp.body, SMTP_BODY_7BIT);
	ck_assert(!mp.smtputf8);

	memset(&mp, 0xff, sizeof(mp));
	ck_assert_int_eq(smtp_parse_mail_params(NULL, &mp, &why), 0);
	ck_assert_uint_eq(mp.size, 0);
	ck_assert(!mp.smtputf8);

	ck_assert_int_eq(smtp_parse_mail_params("SIZE=1000", &mp, &why), 0);
	ck_assert_uint_eq(mp.size, 1000);
	ck_assert_int_eq(mp.body, SMTP_BODY_7BIT);

	ck_assert_int_eq(smtp_parse_mail_params("size=12345 body=8bitmime smtputf8", &mp, &why),
	    0);
	ck_assert_uint_eq(mp.size, 12345);
	ck_assert_int_eq(mp.body, SMTP_BODY_8BITMIME);
	ck_assert(mp.smtputf8);

	ck_assert_int_eq(smtp_parse_mail_params("BODY=7BIT", &mp, &why), 0);
	ck_assert_int_eq(mp.body, SMTP_BODY_7BIT);
	ck_assert_int_eq(smtp_parse_mail_params("  SIZE=5   SmtpUtf8  ", &mp, &why), 0);
	ck_assert_uint_eq(mp.size, 5);
	ck_assert(mp.smtputf8);
	ck_assert_int_eq(smtp_parse_mail_params("SIZE=18446744073709551615", &mp, &why), 0);
	ck_assert(mp.size == 18446744073709551615ULL);
}
END_TEST

static const char *const mail_params_bad[] = {
	"SIZE=",
	"SIZE",
	"SIZE=abc",
	"SIZE=-1",
	"SIZE=1k",
	"SIZE=18446744073709551616",
	"SIZE=99999999999999999999999",
	"SIZE=1 SIZE=2",
	"BODY=BINARYMIME",
	"BODY=",
	"BODY",
	"BODY=8BITMIMEX",
	"BODY=7BIT BODY=8BITMIME",
	"SMTPUTF8=yes",
	"SMTPUTF8 SMTPUTF8",
	"RET=HDRS",
	"ENVID=abc",
	"AUTH=<>",
	"X-FOO",
	"=x",
	"-SIZE=1",
	"SI_ZE=1",
	"SIZE=10 BOGUS",
};

START_TEST(test_mail_params_bad)
{
	struct smtp_mail_params mp;
	const char *why = NULL;

	ck_assert_msg(smtp_parse_mail_params(mail_params_bad[_i], &mp, &why) == -1, "%s",
	    mail_params_bad[_i]);
	ck_assert_ptr_nonnull(why);
}
END_TEST

START_TEST(test_mail_params_why)
{
	struct smtp_mail_params mp;
	const char *why = NULL;

	ck_assert_int_eq(smtp_parse_mail_params("RET=FULL", &mp, &why), -1);
	ck_assert_str_eq(why, "unsupported parameter");
	ck_assert_int_eq(smtp_parse_mail_params("SIZE=x", &mp, &why), -1);
	ck_assert_str_eq(why, "bad SIZE value");
	ck_assert_int_eq(smtp_parse_mail_params("BODY=BINARYMIME", &mp, &why), -1);
	ck_assert_str_eq(why, "bad BODY value");
	ck_assert_int_eq(smtp_parse_mail_params("SIZE=1", &mp, NULL), 0);
	ck_assert_int_eq(smtp_parse_mail_params("XX", &mp, NULL), -1);
}
END_TEST

/* ---------------------------------------------------------------------------------- */
/* Replies */

/* Feeds NUL-terminated lines; returns the last feed's result. */
static int
feed_lines(struct smtp_reply *r, const char *const *lines)
{
	int rc = -1;

	for (size_t i = 0; lines[i] != NULL; i++) {
		rc = smtp_reply_feed(r, lines[i], strlen(lines[i]));
		if (rc != 0 || lines[i + 1] == NULL)
			return rc;
	}
	return rc;
}

START_TEST(test_reply_single)
{
	struct smtp_reply r;

	smtp_reply_init(&r);
	ck_assert_int_eq(smtp_reply_feed(&r, "250 OK", 6), 1);
	ck_assert_int_eq(r.code, 250);
	ck_assert_str_eq(r.text, "OK");
	ck_assert_str_eq(r.enhanced, "");
	ck_assert_int_eq(r.nlines, 1);
	ck_assert(r.complete);
	smtp_reply_clear(&r);
	ck_assert_ptr_null(r.text);
	ck_assert_int_eq(r.code, 0);
	ck_assert(!r.complete);

	ck_assert_int_eq(smtp_reply_feed(&r, "250 2.1.0 Ok", 12), 1);
	ck_assert_str_eq(r.enhanced, "2.1.0");
	ck_assert_str_eq(r.text, "Ok");
	smtp_reply_clear(&r);

	const char *l = "550 5.1.1 <a@b.example>: Recipient address rejected";
	ck_assert_int_eq(smtp_reply_feed(&r, l, strlen(l)), 1);
	ck_assert_int_eq(r.code, 550);
	ck_assert_str_eq(r.enhanced, "5.1.1");
	ck_assert_str_eq(r.text, "<a@b.example>: Recipient address rejected");
	smtp_reply_clear(&r);

	/* A status code of another class is text, not an enhanced code. */
	ck_assert_int_eq(smtp_reply_feed(&r, "550 2.1.1 odd", 13), 1);
	ck_assert_str_eq(r.enhanced, "");
	ck_assert_str_eq(r.text, "2.1.1 odd");
	smtp_reply_clear(&r);

	ck_assert_int_eq(smtp_reply_feed(&r, "421 4.4.2 mx.example timeout", 28), 1);
	ck_assert_str_eq(r.enhanced, "4.4.2");
	ck_assert_str_eq(r.text, "mx.example timeout");
	smtp_reply_clear(&r);

	ck_assert_int_eq(smtp_reply_feed(&r, "250 2.0.0", 9), 1);
	ck_assert_str_eq(r.enhanced, "2.0.0");
	ck_assert_str_eq(r.text, "");
	smtp_reply_clear(&r);

	ck_assert_int_eq(smtp_reply_feed(&r, "250 2.0.0x", 10), 1);
	ck_assert_str_eq(r.enhanced, "");
	ck_assert_str_eq(r.text, "2.0.0x");
	smtp_reply_clear(&r);

	ck_assert_int_eq(smtp_reply_feed(&r, "250 2.1234.0 x", 14), 1);
	ck_assert_str_eq(r.enhanced, "");
	smtp_reply_clear(&r);

	ck_assert_int_eq(smtp_reply_feed(&r, "250 2.123.456 x", 15), 1);
	ck_assert_str_eq(r.enhanced, "2.123.456");
	ck_assert_str_eq(r.text, "x");
	smtp_reply_clear(&r);

	ck_assert_int_eq(smtp_reply_feed(&r, "354 End data with <CR><LF>.<CR><LF>", 35), 1);
	ck_assert_int_eq(r.code, 354);
	smtp_reply_clear(&r);

	/* Text is optional on the last line. */
	ck_assert_int_eq(smtp_reply_feed(&r, "250", 3), 1);
	ck_assert_int_eq(r.code, 250);
	ck_assert_str_eq(r.text, "");
	smtp_reply_clear(&r);
	ck_assert_int_eq(smtp_reply_feed(&r, "250 ", 4), 1);
	ck_assert_str_eq(r.text, "");
	smtp_reply_clear(&r);

	/* Only len bytes are read. */
	ck_assert_int_eq(smtp_reply_feed(&r, "250 OKGARBAGE", 6), 1);
	ck_assert_str_eq(r.text, "OK");
	smtp_reply_clear(&r);
}
END_TEST

START_TEST(test_reply_multiline)
{
	static const char *const ehlo[] = {
		"250-mx.example.org Hello client.example [192.0.2.7]",
		"250-PIPELINING",
		"250-SIZE 10240000",
		"250 8BITMIME",
		NULL,
	};
	static const char *const rej[] = {
		"550-5.7.1 Message rejected",
		"550-5.7.1 see https://mx.example/policy",
		"550 5.7.1 for details",
		NULL,
	};
	static const char *const mixed[] = {
		"451-4.3.0 first",
		"451-second",
		"451 4.3.1 third",
		NULL,
	};
	struct smtp_reply r;

	smtp_reply_init(&r);
	ck_assert_int_eq(smtp_reply_feed(&r, ehlo[0], strlen(ehlo[0])), 0);
	ck_assert(!r.complete);
	ck_assert_int_eq(smtp_reply_feed(&r, ehlo[1], strlen(ehlo[1])), 0);
	ck_assert_int_eq(smtp_reply_feed(&r, ehlo[2], strlen(ehlo[2])), 0);
	ck_assert_int_eq(smtp_reply_feed(&r, ehlo[3], strlen(ehlo[3])), 1);
	ck_assert(r.complete);
	ck_assert_int_eq(r.code, 250);
	ck_assert_int_eq(r.nlines, 4);
	ck_assert_str_eq(r.enhanced, "");
	ck_assert_str_eq(r.text, "mx.example.org Hello client.example [192.0.2.7]\n"
	    "PIPELINING\nSIZE 10240000\n8BITMIME");
	smtp_reply_clear(&r);

	ck_assert_int_eq(feed_lines(&r, rej), 1);
	ck_assert_int_eq(r.code, 550);
	ck_assert_str_eq(r.enhanced, "5.7.1");
	ck_assert_str_eq(r.text,
	    "Message rejected\nsee https://mx.example/policy\nfor details");
	char *one = smtp_reply_oneline(&r);
	ck_assert_str_eq(one,
	    "550 5.7.1 Message rejected see https://mx.example/policy for details");
	free(one);
	smtp_reply_clear(&r);

	/* Later lines keep a code that differs from the first line's. */
	ck_assert_int_eq(feed_lines(&r, mixed), 1);
	ck_assert_str_eq(r.enhanced, "4.3.0");
	ck_assert_str_eq(r.text, "first\nsecond\n4.3.1 third");
	ck_assert_int_eq(r.nlines, 3);
	smtp_reply_clear(&r);

	/* Empty continuation lines. */
	ck_assert_int_eq(smtp_reply_feed(&r, "220-", 4), 0);
	ck_assert_int_eq(smtp_reply_feed(&r, "220-x", 5), 0);
	ck_assert_int_eq(smtp_reply_feed(&r, "220", 3), 1);
	ck_assert_str_eq(r.text, "\nx\n");
	smtp_reply_clear(&r);
}
END_TEST

static const char *const reply_bad[] = {
	"",
	"2",
	"25",
	"2500 x",
	"25x ok",
	"250_ok",
	"250\tok",
	"abc def",
	"-250 x",
	" 250 x",
	"199 x",
	"099 x",
	"600 x",
	"999 x",
	"250 ok\r",
	"250 o\nk",
};

START_TEST(test_reply_bad_lines)
{
	struct smtp_reply r;

	smtp_reply_init(&r);
	ck_assert_msg(smtp_reply_feed(&r, reply_bad[_i], strlen(reply_bad[_i])) == -1, "%s",
	    reply_bad[_i]);
	ck_assert(!r.complete);
	smtp_reply_clear(&r);
}
END_TEST

START_TEST(test_reply_bad_sequences)
{
	struct smtp_reply r;
	char line[SMTP_REPLY_LINE_MAX + 2];

	smtp_reply_init(&r);
	/* Code mismatch between lines. */
	ck_assert_int_eq(smtp_reply_feed(&r, "250-a", 5), 0);
	ck_assert_int_eq(smtp_reply_feed(&r, "251 b", 5), -1);
	smtp_reply_clear(&r);
	ck_assert_int_eq(smtp_reply_feed(&r, "250-a", 5), 0);
	ck_assert_int_eq(smtp_reply_feed(&r, "550 b", 5), -1);
	smtp_reply_clear(&r);

	/* NUL inside the line. */
	ck_assert_int_eq(smtp_reply_feed(&r, "250 a\0b", 7), -1);
	smtp_reply_clear(&r);

	/* Nothing after the last line. */
	ck_assert_int_eq(smtp_reply_feed(&r, "250 a", 5), 1);
	ck_assert_int_eq(smtp_reply_feed(&r, "250 b", 5), -1);
	ck_assert_str_eq(r.text, "a");
	smtp_reply_clear(&r);

	/* Line length limit. */
	memset(line, 'x', sizeof(line));
	memcpy(line, "250 ", 4);
	ck_assert_int_eq(smtp_reply_feed(&r, line, SMTP_REPLY_LINE_MAX), 1);
	ck_assert_uint_eq(strlen(r.text), SMTP_REPLY_LINE_MAX - 4);
	smtp_reply_clear(&r);
	ck_assert_int_eq(smtp_reply_feed(&r, line, SMTP_REPLY_LINE_MAX + 1), -1);
	smtp_reply_clear(&r);

	/* Line count limit: SMTP_REPLY_MAX_LINES lines are fine, one more is not. */
	for (int i = 0; i < SMTP_REPLY_MAX_LINES - 1; i++)
		ck_assert_int_eq(smtp_reply_feed(&r, "250-x", 5), 0);
	ck_assert_int_eq(smtp_reply_feed(&r, "250 x", 5), 1);
	ck_assert_int_eq(r.nlines, SMTP_REPLY_MAX_LINES);
	smtp_reply_clear(&r);
	for (int i = 0; i < SMTP_REPLY_MAX_LINES; i++)
		ck_assert_int_eq(smtp_reply_feed(&r, "250-x", 5), 0);
	ck_assert_int_eq(smtp_reply_feed(&r, "250 x", 5), -1);
	ck_assert(!r.complete);
	smtp_reply_clear(&r);
}
END_TEST

START_TEST(test_reply_oneline)
{
	struct smtp_reply r;
	char *s;

	smtp_reply_init(&r);
	const char *l = "550 5.1.1 <a@b.example>: Recipient address rejected";
	ck_assert_int_eq(smtp_reply_feed(&r, l, strlen(l)), 1);
	s = smtp_reply_oneline(&r);
	ck_assert_str_eq(s, l);
	free(s);
	smtp_reply_clear(&r);

	ck_assert_int_eq(smtp_reply_feed(&r, "250", 3), 1);
	s = smtp_reply_oneline(&r);
	ck_assert_str_eq(s, "250");
	free(s);
	smtp_reply_clear(&r);

	ck_assert_int_eq(smtp_reply_feed(&r, "250 2.0.0", 9), 1);
	s = smtp_reply_oneline(&r);
	ck_assert_str_eq(s, "250 2.0.0");
	free(s);
	smtp_reply_clear(&r);

	ck_assert_int_eq(smtp_reply_feed(&r, "451-a", 5), 0);
	ck_assert_int_eq(smtp_reply_feed(&r, "451 b\x1b[0m", 9), 1);
	s = smtp_reply_oneline(&r);
	ck_assert_str_eq(s, "451 a b?[0m");
	free(s);
	smtp_reply_clear(&r);

	/* An empty reply still formats. */
	s = smtp_reply_oneline(&r);
	ck_assert_str_eq(s, "000");
	free(s);
}
END_TEST

/* ---------------------------------------------------------------------------------- */
/* EHLO */

static void
reply_from(struct smtp_reply *r, const char *const *lines)
{
	smtp_reply_init(r);
	ck_assert_int_eq(feed_lines(r, lines), 1);
}

START_TEST(test_ehlo_full)
{
	static const char *const lines[] = {
		"250-mx.example.org at your service",
		"250-pipelining",
		"250-Size 35882577",
		"250-auth PLAIN login",
		"250-AUTH=PLAIN LOGIN CRAM-MD5",
		"250-8BITMIME",
		"250-ENHANCEDSTATUSCODES",
		"250-STARTTLS",
		"250-SMTPUTF8",
		"250-DSN",
		"250-X-UNKNOWN foo",
		"250 CHUNKING",
		NULL,
	};
	struct smtp_reply r;
	struct smtp_ehlo_info e;

	reply_from(&r, lines);
	smtp_ehlo_parse(&r, &e);
	ck_assert_uint_eq(e.ext, SMTP_EXT_PIPELINING | SMTP_EXT_SIZE | SMTP_EXT_8BITMIME |
	    SMTP_EXT_STARTTLS | SMTP_EXT_AUTH | SMTP_EXT_SMTPUTF8 |
	    SMTP_EXT_ENHANCEDSTATUSCODES | SMTP_EXT_DSN | SMTP_EXT_CHUNKING);
	ck_assert_uint_eq(e.max_size, 35882577);
	ck_assert_str_eq(e.auth_mechs, "PLAIN LOGIN CRAM-MD5");
	smtp_reply_clear(&r);
}
END_TEST

START_TEST(test_ehlo_partial)
{
	static const char *const first_only[] = { "250 mx.example.org", NULL };
	static const char *const greeting[] = {
		"250-STARTTLS.example.org hello", "250 SIZE", NULL,
	};
	static const char *const lookalike[] = {
		"250-mx.example", "250-SIZEX 10", "250-STARTTLSX", "250-PIPELINING=yes",
		"250-8BITMIME extra", "250 SIZE abc", NULL,
	};
	static const char *const old_auth[] = {
		"250-mx.example", "250 AUTH=login plain", NULL,
	};
	static const char *const refused[] = {
		"502-mx.example", "502 PIPELINING", NULL,
	};
	struct smtp_reply r;
	struct smtp_ehlo_info e;

	reply_from(&r, first_only);
	smtp_ehlo_parse(&r, &e);
	ck_assert_uint_eq(e.ext, 0);
	ck_assert_uint_eq(e.max_size, 0);
	ck_assert_str_eq(e.auth_mechs, "");
	smtp_reply_clear(&r);

	/* The first line is the greeting even when it looks like a keyword. */
	reply_from(&r, greeting);
	smtp_ehlo_parse(&r, &e);
	ck_assert_uint_eq(e.ext, SMTP_EXT_SIZE);
	ck_assert_uint_eq(e.max_size, 0);
	smtp_reply_clear(&r);

	reply_from(&r, lookalike);
	smtp_ehlo_parse(&r, &e);
	ck_assert_uint_eq(e.ext, SMTP_EXT_8BITMIME | SMTP_EXT_SIZE);
	ck_assert_uint_eq(e.max_size, 0);
	smtp_reply_clear(&r);

	reply_from(&r, old_auth);
	smtp_ehlo_parse(&r, &e);
	ck_assert_uint_eq(e.ext, SMTP_EXT_AUTH);
	ck_assert_str_eq(e.auth_mechs, "LOGIN PLAIN");
	smtp_reply_clear(&r);

	reply_from(&r, refused);
	smtp_ehlo_parse(&r, &e);
	ck_assert_uint_eq(e.ext, 0);
	smtp_reply_clear(&r);

	/* An empty reply struct gives nothing. */
	smtp_reply_init(&r);
	smtp_ehlo_parse(&r, &e);
	ck_assert_uint_eq(e.ext, 0);
}
END_TEST

START_TEST(test_ehlo_auth_overflow)
{
	struct smtp_reply r;
	struct smtp_ehlo_info e;
	char line[512];

	smtp_reply_init(&r);
	ck_assert_int_eq(smtp_reply_feed(&r, "250-mx.example", 14), 0);
	/* 30 distinct mechanisms of 10 octets: far more than auth_mechs holds. */
	strcpy(line, "250 AUTH");
	for (int i = 0; i < 30; i++)
		snprintf(line + strlen(line), sizeof(line) - strlen(line), " MECH-%04d", i);
	ck_assert_int_eq(smtp_reply_feed(&r, line, strlen(line)), 1);
	smtp_ehlo_parse(&r, &e);
	ck_assert_uint_eq(e.ext, SMTP_EXT_AUTH);
	ck_assert_uint_lt(strlen(e.auth_mechs), sizeof(e.auth_mechs));
	ck_assert(strncmp(e.auth_mechs, "MECH-0000 MECH-0001 ", 20) == 0);
	/* Only whole mechanisms: the list ends at a mechanism boundary. */
	size_t len = strlen(e.auth_mechs);
	ck_assert_uint_eq((len + 1) % 10, 0);
	smtp_reply_clear(&r);
}
END_TEST

/* ---------------------------------------------------------------------------------- */
/* Enhanced status codes */

static void
expect_dsn(const char *line, const char *detail, const char *want)
{
	struct smtp_reply r;
	char buf[16];

	smtp_reply_init(&r);
	ck_assert_int_eq(smtp_reply_feed(&r, line, strlen(line)), 1);
	smtp_reply_dsn(&r, detail, buf, sizeof(buf));
	ck_assert_msg(strcmp(buf, want) == 0, "%s / %s: got %s, want %s", line,
	    detail ? detail : "(null)", buf, want);
	smtp_reply_clear(&r);
}

START_TEST(test_reply_dsn)
{
	expect_dsn("550 5.1.1 no such user", ".0.0", "5.1.1");
	expect_dsn("550 no such user", ".0.0", "5.0.0");
	expect_dsn("450 busy", ".0.0", "4.0.0");
	expect_dsn("250 ok", ".0.0", "2.0.0");
	expect_dsn("450 busy", "5.4.2", "4.4.2");
	expect_dsn("554 no", "4.4.2", "5.4.2");
	expect_dsn("550 no", "1.1", "5.1.1");
	expect_dsn("550 no", NULL, "5.0.0");
	expect_dsn("550 no", "", "5.0.0");
	expect_dsn("550 2.1.1 wrong class", ".0.0", "5.0.0");
	expect_dsn("451 4.7.1 greylisted", "5.0.0", "4.7.1");
	/* No RFC 3463 class 3: treated as transient. */
	expect_dsn("354 go ahead", ".0.0", "4.0.0");

	/* A hand-built reply with a mismatching code is not trusted either. */
	struct smtp_reply r;
	char buf[16];
	smtp_reply_init(&r);
	r.code = 550;
	strcpy(r.enhanced, "4.2.2");
	smtp_reply_dsn(&r, ".0.0", buf, sizeof(buf));
	ck_assert_str_eq(buf, "5.0.0");
}
END_TEST

/* ---------------------------------------------------------------------------------- */
/* DATA decoder */

enum split_mode { SPLIT_WHOLE, SPLIT_BYTES, SPLIT_RANDOM };

struct decode_result {
	enum smtp_data_status status;
	char out[4096];
	size_t outlen;
	size_t consumed;          /* total input consumed */
	size_t max_line_len;
};

/* Decodes in[0..len) in chunks until the decoder stops or the input runs out. */
static void
decode_split(const char *in, size_t len, enum split_mode mode, struct decode_result *res)
{
	struct smtp_data_decoder d;
	size_t pos = 0;

	smtp_data_decoder_init(&d);
	res->status = SMTP_DATA_MORE;
	res->outlen = 0;
	res->consumed = 0;
	while (pos < len && res->status == SMTP_DATA_MORE) {
		size_t n = len - pos;
		if (mode == SPLIT_BYTES)
			n = 1;
		else if (mode == SPLIT_RANDOM)
			n = 1 + rng((uint32_t)(n < 7 ? n : 7));
		char *chunk = malloc(n);  /* exact-size buffers let ASan catch overreads */
		char *out = malloc(n);
		size_t outlen = 99999, consumed = 99999;
		memcpy(chunk, in + pos, n);
		res->status = smtp_data_decode(&d, chunk, n, out, &outlen, &consumed);
		ck_assert_uint_le(outlen, n);
		ck_assert_uint_le(consumed, n);
		if (res->status == SMTP_DATA_MORE)
			ck_assert_uint_eq(consumed, n);
		ck_assert_uint_lt(res->outlen + outlen, sizeof(res->out));
		memcpy(res->out + res->outlen, out, outlen);
		res->outlen += outlen;
		res->consumed += consumed;
		pos += consumed;
		free(chunk);
		free(out);
	}
	res->max_line_len = d.max_line_len;
}

struct decode_case {
	const char *in;
	size_t inlen;             /* 0: strlen(in) */
	enum smtp_data_status status;
	const char *out;          /* expected content when status is END */
	size_t outlen;
	size_t consumed;          /* expected consumed for END and BARE_EOL */
	size_t max_line_len;      /* checked when status is END */
};

#define S(x) x, sizeof(x) - 1

static const struct decode_case decode_cases[] = {
	/* Ends. */
	{ S(".\r\n"), SMTP_DATA_END, S(""), 3, 0 },
	{ S("Hello\r\n.\r\n"), SMTP_DATA_END, S("Hello\r\n"), 10, 5 },
	{ S("\r\n.\r\n"), SMTP_DATA_END, S("\r\n"), 5, 0 },
	{ S("a\r\n.\r\nEXTRA"), SMTP_DATA_END, S("a\r\n"), 6, 1 },
	{ S("a\r\n.\r\n.\r\n"), SMTP_DATA_END, S("a\r\n"), 6, 1 },
	{ S("Subject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n"), SMTP_DATA_END,
	  S("Subject: x\r\n\r\nbody\r\n"), 23, 10 },
	/* Transparency: one leading dot removed, other dots kept. */
	{ S("..a\r\n.\r\n"), SMTP_DATA_END, S(".a\r\n"), 8, 2 },
	{ S("a\r\n..\r\n.\r\n"), SMTP_DATA_END, S("a\r\n.\r\n"), 10, 1 },
	{ S("...\r\n.\r\n"), SMTP_DATA_END, S("..\r\n"), 8, 2 },
	{ S(".x\r\n.\r\n"), SMTP_DATA_END, S("x\r\n"), 7, 1 },
	{ S(". \r\n.\r\n"), SMTP_DATA_END, S(" \r\n"), 7, 1 },
	{ S("a.\r\n.b.\r\n.\r\n"), SMTP_DATA_END, S("a.\r\nb.\r\n"), 12, 2 },
	{ S("abc\r\n12345\r\n..x\r\n.\r\n"), SMTP_DATA_END, S("abc\r\n12345\r\n.x\r\n"), 20, 5 },
	{ S("..123456\r\nab\r\n.\r\n"), SMTP_DATA_END, S(".123456\r\nab\r\n"), 17, 7 },
	{ S("a\0b\r\n.\r\n"), SMTP_DATA_END, S("a\0b\r\n"), 8, 3 },
	{ S("\xc3\xb6\r\n.\r\n"), SMTP_DATA_END, S("\xc3\xb6\r\n"), 7, 2 },
	/* Smuggling: none of these may end the data, all are refused. */
	{ S("body\n.\nMAIL FROM:<evil@x.example>\r\n.\r\n"), SMTP_DATA_BARE_EOL, NULL, 0, 5, 0 },
	{ S("body\r.\rMAIL FROM:<evil@x.example>\r\n.\r\n"), SMTP_DATA_BARE_EOL, NULL, 0, 6, 0 },
	{ S("body\r\n.\nMAIL FROM:<evil@x.example>\r\n.\r\n"), SMTP_DATA_BARE_EOL, NULL, 0, 8, 0 },
	{ S("body\n.\r\nMAIL FROM:<evil@x.example>\r\n.\r\n"), SMTP_DATA_BARE_EOL, NULL, 0, 5, 0 },
	{ S("body\r\n.\rMAIL FROM:<evil@x.example>\r\n.\r\n"), SMTP_DATA_BARE_EOL, NULL, 0, 9, 0 },
	{ S("body\r\n.\r\r\n.\r\n"), SMTP_DATA_BARE_EOL, NULL, 0, 9, 0 },
	{ S("body\r\r\n.\r\n"), SMTP_DATA_BARE_EOL, NULL, 0, 6, 0 },
	/* Bare line ends anywhere. */
	{ S("\n"), SMTP_DATA_BARE_EOL, NULL, 0, 1, 0 },
	{ S(".\n"), SMTP_DATA_BARE_EOL, NULL, 0, 2, 0 },
	{ S(".\rX"), SMTP_DATA_BARE_EOL, NULL, 0, 3, 0 },
	{ S("\rX"), SMTP_DATA_BARE_EOL, NULL, 0, 2, 0 },
	{ S("abc\ndef\r\n.\r\n"), SMTP_DATA_BARE_EOL, NULL, 0, 4, 0 },
	{ S("abc\rdef\r\n.\r\n"), SMTP_DATA_BARE_EOL, NULL, 0, 5, 0 },
	{ S("a\r\n\n.\r\n"), SMTP_DATA_BARE_EOL, NULL, 0, 4, 0 },
	{ S("a\r\n\r.\r\n"), SMTP_DATA_BARE_EOL, NULL, 0, 5, 0 },
	{ S("..\n.\r\n"), SMTP_DATA_BARE_EOL, NULL, 0, 3, 0 },
	/* Incomplete: everything consumed, no end. */
	{ S("abc\r"), SMTP_DATA_MORE, NULL, 0, 4, 0 },
	{ S("abc\r\n."), SMTP_DATA_MORE, NULL, 0, 6, 0 },
	{ S("abc\r\n.\r"), SMTP_DATA_MORE, NULL, 0, 7, 0 },
	{ S("abc\r\n.\r\n\r\n"), SMTP_DATA_END, S("abc\r\n"), 8, 3 },
	{ S("abc\r\n\r\n."), SMTP_DATA_MORE, NULL, 0, 8, 0 },
};

START_TEST(test_decode_cases)
{
	const struct decode_case *c = &decode_cases[_i];
	struct decode_result res;
	static const enum split_mode modes[] = { SPLIT_WHOLE, SPLIT_BYTES, SPLIT_RANDOM };

	for (size_t m = 0; m < 3; m++) {
		int rounds = modes[m] == SPLIT_RANDOM ? 50 : 1;
		for (int k = 0; k < rounds; k++) {
			rng_seed((uint64_t)_i * 1000 + (uint64_t)k);
			decode_split(c->in, c->inlen, modes[m], &res);
			ck_assert_msg(res.status == c->status, "case %d mode %zu: status %d", _i, m,
			    (int)res.status);
			ck_assert_msg(res.consumed == c->consumed, "case %d mode %zu: consumed %zu",
			    _i, m, res.consumed);
			if (c->status == SMTP_DATA_END) {
				ck_assert_uint_eq(res.outlen, c->outlen);
				ck_assert_mem_eq(res.out, c->out, c->outlen);
				ck_assert_uint_eq(res.max_line_len, c->max_line_len);
			}
		}
	}
}
END_TEST

START_TEST(test_decode_states)
{
	struct smtp_data_decoder d;
	char out[64];
	size_t outlen, consumed;

	/* A CR at the end of a chunk waits for its LF in the next one. */
	smtp_data_decoder_init(&d);
	ck_assert_int_eq(smtp_data_decode(&d, "abc\r", 4, out, &outlen, &consumed),
	    SMTP_DATA_MORE);
	ck_assert_uint_eq(consumed, 4);
	ck_assert_int_eq(smtp_data_decode(&d, "\n.", 2, out, &outlen, &consumed),
	    SMTP_DATA_MORE);
	ck_assert_uint_eq(consumed, 2);
	ck_assert_int_eq(smtp_data_decode(&d, "\r", 1, out, &outlen, &consumed),
	    SMTP_DATA_MORE);
	ck_assert_uint_eq(outlen, 0);
	ck_assert_int_eq(smtp_data_decode(&d, "\nnext", 5, out, &outlen, &consumed),
	    SMTP_DATA_END);
	ck_assert_uint_eq(consumed, 1);
	ck_assert_uint_eq(outlen, 0);
	/* After the end: nothing more is consumed. */
	ck_assert_int_eq(smtp_data_decode(&d, "more", 4, out, &outlen, &consumed),
	    SMTP_DATA_END);
	ck_assert_uint_eq(consumed, 0);
	ck_assert_uint_eq(outlen, 0);

	/* A CR at a chunk end followed by something else is a bare CR. */
	smtp_data_decoder_init(&d);
	ck_assert_int_eq(smtp_data_decode(&d, "abc\r", 4, out, &outlen, &consumed),
	    SMTP_DATA_MORE);
	ck_assert_int_eq(smtp_data_decode(&d, ".\r\n", 3, out, &outlen, &consumed),
	    SMTP_DATA_BARE_EOL);
	ck_assert_uint_eq(consumed, 1);
	ck_assert_int_eq(smtp_data_decode(&d, "\r\n.\r\n", 5, out, &outlen, &consumed),
	    SMTP_DATA_BARE_EOL);
	ck_assert_uint_eq(consumed, 0);
	ck_assert_uint_eq(outlen, 0);

	/* An empty chunk changes nothing. */
	smtp_data_decoder_init(&d);
	ck_assert_int_eq(smtp_data_decode(&d, "", 0, out, &outlen, &consumed), SMTP_DATA_MORE);
	ck_assert_uint_eq(consumed, 0);
	ck_assert_uint_eq(outlen, 0);
	ck_assert_int_eq(smtp_data_decode(&d, ".\r\n", 3, out, &outlen, &consumed),
	    SMTP_DATA_END);

	/* The longest line counts across chunks. */
	smtp_data_decoder_init(&d);
	ck_assert_int_eq(smtp_data_decode(&d, "12", 2, out, &outlen, &consumed),
	    SMTP_DATA_MORE);
	ck_assert_int_eq(smtp_data_decode(&d, "345\r\n1\r\n.\r\n", 11, out, &outlen, &consumed),
	    SMTP_DATA_END);
	ck_assert_uint_eq(d.max_line_len, 5);
}
END_TEST

/*
 * Oracle for the test below, independent of the decoder's state machine: in msg, the
 * offset just after the byte that reveals the first bare line end (a bare LF itself; the
 * byte after a bare CR), and the offset just after the first CR LF "." CR LF (with a
 * CR LF assumed before the first byte). SIZE_MAX when absent.
 */
static void
oracle(const char *msg, size_t len, size_t *bare, size_t *end)
{
	*bare = *end = SIZE_MAX;
	for (size_t i = 0; i < len && *bare == SIZE_MAX; i++) {
		if (msg[i] == '\n' && (i == 0 || msg[i - 1] != '\r'))
			*bare = i + 1;
		else if (msg[i] == '\r' && i + 1 < len && msg[i + 1] != '\n')
			*bare = i + 2;
	}
	if (len >= 3 && memcmp(msg, ".\r\n", 3) == 0)
		*end = 3;
	for (size_t i = 0; *end == SIZE_MAX && i + 5 <= len; i++)
		if (memcmp(msg + i, "\r\n.\r\n", 5) == 0)
			*end = i + 5;
}

/*
 * Inserts each smuggling sequence at every position of a clean message and decodes it
 * under several chunkings. Most insertions must be refused; the few that build a genuine
 * CR LF "." CR LF (say "\n.\r\n" between a CR and its LF) must end exactly there.
 */
START_TEST(test_decode_smuggling_positions)
{
	static const char *const evil[] = {
		"\n.\n", "\r.\r", "\r\n.\n", "\n.\r\n", "\r\n.\r", "\n", "\r", "\r\r\n", ".\n",
	};
	static const char base[] = "From: a@b.example\r\n\r\nline one\r\n.dot\r\nend\r\n";
	char msg[256];
	struct decode_result res;
	int refused = 0, genuine = 0;

	for (size_t e = 0; e < sizeof(evil) / sizeof(evil[0]); e++) {
		for (size_t pos = 0; pos <= sizeof(base) - 1; pos++) {
			size_t el = strlen(evil[e]);
			memcpy(msg, base, pos);
			memcpy(msg + pos, evil[e], el);
			memcpy(msg + pos + el, base + pos, sizeof(base) - 1 - pos);
			memcpy(msg + sizeof(base) - 1 + el, ".\r\n", 3);
			size_t len = sizeof(base) - 1 + el + 3;
			size_t bare, end;
			oracle(msg, len, &bare, &end);
			/* An inserted sequence always adds a bare CR/LF or an early end. */
			ck_assert(bare <= len || end < len);

			for (int k = 0; k < 8; k++) {
				rng_seed(e * 10000 + pos * 10 + (size_t)k);
				decode_split(msg, len, k == 0 ? SPLIT_WHOLE :
				    k == 1 ? SPLIT_BYTES : SPLIT_RANDOM, &res);
				if (bare < end) {
					ck_assert_msg(res.status == SMTP_DATA_BARE_EOL,
					    "evil %zu at %zu: status %d", e, pos, (int)res.status);
					ck_assert_uint_eq(res.consumed, bare);
				} else {
					ck_assert_msg(res.status == SMTP_DATA_END,
					    "evil %zu at %zu: status %d", e, pos, (int)res.status);
					ck_assert_uint_eq(res.consumed, end);
				}
			}
			if (bare < end)
				refused++;
			else
				genuine++;
		}
	}
	/* Both outcomes occur, and refusals are the rule. */
	ck_assert_int_gt(genuine, 0);
	ck_assert_int_gt(refused, 10 * genuine);

	/* The classic payloads inside a message are always refused. */
	static const char *const payload[] = { "\n.\n", "\r.\r", "\r\n.\n", "\n.\r\n", "\r\n.\r" };
	for (size_t e = 0; e < 5; e++) {
		snprintf(msg, sizeof(msg), "Subject: hi\r\n\r\nbody%sMAIL FROM:<x@y.example>\r\n.\r\n",
		    payload[e]);
		decode_split(msg, strlen(msg), SPLIT_WHOLE, &res);
		ck_assert_int_eq(res.status, SMTP_DATA_BARE_EOL);
		decode_split(msg, strlen(msg), SPLIT_BYTES, &res);
		ck_assert_int_eq(res.status, SMTP_DATA_BARE_EOL);
	}
}
END_TEST

/* ---------------------------------------------------------------------------------- */
/* DATA encoder */

static size_t
encode_all(const char *in, size_t len, char *out, size_t split)
{
	struct smtp_dot_encoder e;
	size_t o = 0;

	smtp_dot_encoder_init(&e);
	for (size_t pos = 0; pos < len; ) {
		size_t n = split == 0 || len - pos < split ? len - pos : split;
		o += smtp_dot_encode(&e, in + pos, n, out + o);
		pos += n;
	}
	o += smtp_dot_encoder_finish(&e, out + o);
	return o;
}

static void
expect_encode(const char *in, size_t len, const char *want, size_t wantlen)
{
	char out[256];

	for (size_t split = 0; split < 4; split++) {
		size_t n = encode_all(in, len, out, split);
		ck_assert_msg(n == wantlen && memcmp(out, want, n) == 0,
		    "encode split %zu: got %zu bytes \"%.*s\"", split, n, (int)n, out);
	}
}

START_TEST(test_encode)
{
	expect_encode(S(""), S(".\r\n"));
	expect_encode(S("a\r\n"), S("a\r\n.\r\n"));
	expect_encode(S("a"), S("a\r\n.\r\n"));
	expect_encode(S("\r\n"), S("\r\n.\r\n"));
	expect_encode(S(".\r\n"), S("..\r\n.\r\n"));
	expect_encode(S("."), S("..\r\n.\r\n"));
	expect_encode(S("a\r\n.b\r\n..\r\n"), S("a\r\n..b\r\n...\r\n.\r\n"));
	expect_encode(S("a.b\r\nc.\r\n"), S("a.b\r\nc.\r\n.\r\n"));
	expect_encode(S("a\r\n\r\n.\r\n"), S("a\r\n\r\n..\r\n.\r\n"));
	expect_encode(S("x\r.y\r\n"), S("x\r.y\r\n.\r\n"));
	/* A bare LF in the content (never from our spool): a dot after it is stuffed as
	 * well, and the terminator still starts with CR LF. */
	expect_encode(S("a\n.b"), S("a\n..b\r\n.\r\n"));
	expect_encode(S("a\n"), S("a\n\r\n.\r\n"));
	expect_encode(S("a\r"), S("a\r\r\n.\r\n"));

	/* The encoder is reusable after finish. */
	struct smtp_dot_encoder e;
	char out[32];
	size_t n;
	smtp_dot_encoder_init(&e);
	n = smtp_dot_encode(&e, "abc", 3, out);
	n += smtp_dot_encoder_finish(&e, out + n);
	ck_assert_uint_eq(n, 8);
	n = smtp_dot_encode(&e, ".x\r\n", 4, out);
	ck_assert_uint_eq(n, 5);
	ck_assert_mem_eq(out, "..x\r\n", 5);
	n = smtp_dot_encoder_finish(&e, out);
	ck_assert_uint_eq(n, 3);
	ck_assert_mem_eq(out, ".\r\n", 3);
}
END_TEST

/* Random CR LF-clean content: lines of random bytes (no CR, no LF) with many dots. */
static size_t
random_content(char *buf, size_t max, bool end_crlf)
{
	static const char alphabet[] = "..\r\n.abc \x00\xff\xc3\xb6" "x";
	size_t len = 0, lines = rng(12);

	for (size_t l = 0; l < lines && len + 40 < max; l++) {
		size_t ll = rng(30);
		for (size_t i = 0; i < ll; i++) {
			char c = alphabet[rng(sizeof(alphabet) - 1)];
			if (c == '\r' || c == '\n')
				c = (char)rng(256);
			if (c == '\r' || c == '\n')
				c = '.';
			buf[len++] = c;
		}
		if (l + 1 < lines || end_crlf) {
			buf[len++] = '\r';
			buf[len++] = '\n';
		}
	}
	return len;
}

START_TEST(test_round_trip)
{
	char content[1024], enc[2 * 1024 + 8];
	struct decode_result res;

	for (uint64_t seed = 0; seed < 2000; seed++) {
		rng_seed(seed + 7);
		bool end_crlf = rng(4) != 0;
		size_t len = random_content(content, sizeof(content), end_crlf);
		bool ends = len >= 2 && content[len - 2] == '\r' && content[len - 1] == '\n';

		/* Encode in random chunks. */
		struct smtp_dot_encoder e;
		size_t o = 0;
		smtp_dot_encoder_init(&e);
		for (size_t pos = 0; pos < len; ) {
			size_t n = 1 + rng((uint32_t)(len - pos));
			o += smtp_dot_encode(&e, content + pos, n, enc + o);
			pos += n;
		}
		o += smtp_dot_encoder_finish(&e, enc + o);

		/* Decode in random chunks: ends exactly at the end, content back byte for
		 * byte (plus the CR LF the encoder had to add to an unterminated last line). */
		decode_split(enc, o, (enum split_mode)(seed % 3), &res);
		ck_assert_msg(res.status == SMTP_DATA_END, "seed %llu status %d",
		    (unsigned long long)seed, (int)res.status);
		ck_assert_uint_eq(res.consumed, o);
		if (ends || len == 0) {
			ck_assert_uint_eq(res.outlen, len);
			ck_assert_mem_eq(res.out, content, len);
		} else {
			ck_assert_uint_eq(res.outlen, len + 2);
			ck_assert_mem_eq(res.out, content, len);
			ck_assert_mem_eq(res.out + len, "\r\n", 2);
		}
	}
}
END_TEST

static Suite *
smtp_proto_suite(void)
{
	Suite *s = suite_create("smtp_proto");
	TCase *tc;

	tc = tcase_create("command");
	tcase_add_test(tc, test_command_verbs);
	tcase_add_test(tc, test_command_unknown_and_bad);
	tcase_add_test(tc, test_verb_names);
	suite_add_tcase(s, tc);

	tc = tcase_create("mailbox");
	tcase_add_loop_test(tc, test_mailbox_good, 0,
	    (int)(sizeof(mailbox_good) / sizeof(mailbox_good[0])));
	tcase_add_loop_test(tc, test_mailbox_bad, 0,
	    (int)(sizeof(mailbox_bad) / sizeof(mailbox_bad[0])));
	tcase_add_test(tc, test_mailbox_utf8);
	tcase_add_test(tc, test_mailbox_domain);
	suite_add_tcase(s, tc);

	tc = tcase_create("path");
	tcase_add_test(tc, test_path_good);
	tcase_add_test(tc, test_path_bad);
	tcase_add_test(tc, test_rcpt_postmaster);
	tcase_add_test(tc, test_path_lengths);
	tcase_add_test(tc, test_mail_params_good);
	tcase_add_loop_test(tc, test_mail_params_bad, 0,
	    (int)(sizeof(mail_params_bad) / sizeof(mail_params_bad[0])));
	tcase_add_test(tc, test_mail_params_why);
	suite_add_tcase(s, tc);

	tc = tcase_create("reply");
	tcase_add_test(tc, test_reply_single);
	tcase_add_test(tc, test_reply_multiline);
	tcase_add_loop_test(tc, test_reply_bad_lines, 0,
	    (int)(sizeof(reply_bad) / sizeof(reply_bad[0])));
	tcase_add_test(tc, test_reply_bad_sequences);
	tcase_add_test(tc, test_reply_oneline);
	tcase_add_test(tc, test_ehlo_full);
	tcase_add_test(tc, test_ehlo_partial);
	tcase_add_test(tc, test_ehlo_auth_overflow);
	tcase_add_test(tc, test_reply_dsn);
	suite_add_tcase(s, tc);

	tc = tcase_create("data");
	tcase_set_timeout(tc, 60);
	tcase_add_loop_test(tc, test_decode_cases, 0,
	    (int)(sizeof(decode_cases) / sizeof(decode_cases[0])));
	tcase_add_test(tc, test_decode_states);
	tcase_add_test(tc, test_decode_smuggling_positions);
	tcase_add_test(tc, test_encode);
	tcase_add_test(tc, test_round_trip);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(smtp_proto_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
