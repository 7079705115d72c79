/*
 * Unit tests for the queue: its pure parts (retry backoff, expiry), and recovery of a
 * spool left by a crash between a bounce's state record and its DSN's commit (a real
 * spool in a mkdtemp directory; the event loop never runs, so nothing is delivered).
 */
#include "config.h"

#include <check.h>
#include <dirent.h>
#include <ftw.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>

#include "conf.h"
#include "envelope.h"
#include "log.h"
#include "queue.h"
#include "spool.h"
#include "util.h"

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

/* ---- recovery of owed DSNs ---- */

static char tmp_base[900];    /* the mkdtemp directory */
static char spool_path[1024]; /* tmp_base/spool */

static int
rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void
spool_setup(void)
{
	const char *tmp = getenv("TMPDIR");

	log_init("check_queue", LOG_TARGET_STDERR, LOG_LEVEL_ERROR);
	snprintf(tmp_base, sizeof(tmp_base), "%s/check_queue.XXXXXX", tmp != NULL ? tmp : "/tmp");
	ck_assert_ptr_nonnull(mkdtemp(tmp_base));
	snprintf(spool_path, sizeof(spool_path), "%s/spool", tmp_base);
}

static void
spool_teardown(void)
{
	nftw(tmp_base, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* The queue ids in spool/queue other than skip (message files only), into ids. */
static size_t
other_messages(const char *skip, char ids[][ENVELOPE_ID_MAX], size_t max)
{
	char path[PATH_MAX];
	struct dirent *de;
	size_t n = 0;
	DIR *d;

	snprintf(path, sizeof(path), "%s/queue", spool_path);
	ck_assert_ptr_nonnull(d = opendir(path));
	while ((de = readdir(d)) != NULL) {
		if (!envelope_id_valid(de->d_name) || strcmp(de->d_name, skip) == 0)
			continue;
		ck_assert_uint_lt(n, max);
		dr_strlcpy(ids[n++], de->d_name, ENVELOPE_ID_MAX);
	}
	closedir(d);
	return n;
}

/* A whole file of spool/queue, NUL-terminated; NULL when it does not exist. */
static char *
queue_file(const char *name)
{
	char path[PATH_MAX], *buf;
	long len;
	FILE *f;

	snprintf(path, sizeof(path), "%s/queue/%s", spool_path, name);
	if ((f = fopen(path, "rb")) == NULL)
		return NULL;
	ck_assert_int_eq(fseek(f, 0, SEEK_END), 0);
	len = ftell(f);
	rewind(f);
	buf = xmalloc((size_t)len + 1);
	ck_assert_uint_eq(fread(buf, 1, (size_t)len, f), (size_t)len);
	buf[len] = '\0';
	fclose(f);
	return buf;
}

/*
 * Spools a message from sender to bob@bad.example (bounced, state record written, no
 * "N": the daemon died before the DSN was committed) and carol@slow.example (deferred
 * an hour, or bounced too when all_bounced). Returns its queue id in id.
 */
static void
spool_crashed_bounce(struct spool *s, const char *sender, bool all_bounced,
    char id[ENVELOPE_ID_MAX])
{
	static const char content[] = "From: a@client.example\r\nSubject: crash test\r\n\r\n"
	    "secret body\r\n";
	struct envelope *e = envelope_new();
	struct spool_writer *w;

	e->arrival = time(NULL) - 10;
	e->sender = xstrdup(sender);
	e->client_addr = xstrdup("127.0.0.1");
	e->helo = xstrdup("client.example");
	envelope_add_rcpt(e, "bob@bad.example");
	envelope_add_rcpt(e, "carol@slow.example");
	ck_assert_ptr_nonnull(w = spool_writer_begin(s, e));
	ck_assert_int_eq(spool_writer_write(w, content, sizeof(content) - 1), 0);
	ck_assert_int_eq(spool_writer_commit(w, e), 0);
	for (size_t i = 0; i < 2; i++) {
		struct envelope_rcpt *r = &e->rcpts[i];
		bool bounce = i == 0 || all_bounced;

		r->state = bounce ? RCPT_BOUNCED : RCPT_DEFERRED;
		r->attempts = 1;
		r->next_attempt = bounce ? 0 : time(NULL) + 3600;
		dr_strlcpy(r->dsn, bounce ? "5.1.1" : "4.4.1", sizeof(r->dsn));
		r->reason = xstrdup(bounce ? "host mx.bad.example[198.51.100.91] said: 550 5.1.1 "
		    "no such user (in reply to RCPT TO command)" : "connection timed out");
		ck_assert_int_eq(spool_update_rcpt(s, e, i), 0);
	}
	dr_strlcpy(id, e->id, ENVELOPE_ID_MAX);
	envelope_free(e);
}

/* Starts a daemon's queue on the spool, recovers, stops it again. Returns messages loaded. */
static long
run_recovery(void)
{
	struct conf *c = conf_load_string("hostname = \"relay.example.net\";\n"
	    "spool_dir = \"spool\";\n", "t.conf", tmp_base, false, NULL);
	struct event_base *base = event_base_new();
	struct spool *s = spool_open(spool_path);
	struct queue_deps deps = { .base = base, .spool = s };
	struct queue *q;
	long n;

	ck_assert_ptr_nonnull(c);
	ck_assert_ptr_nonnull(base);
	ck_assert_ptr_nonnull(s);
	q = queue_new(&deps, c);
	n = queue_recover(q);
	queue_free(q);
	conf_free(c);
	spool_close(s);
	event_base_free(base);
	return n;
}

START_TEST(test_recover_owed_dsn)
{
	struct spool *s = spool_open(spool_path);
	char id[ENVELOPE_ID_MAX], dsn[4][ENVELOPE_ID_MAX], state[ENVELOPE_ID_MAX + 8], *text;

	ck_assert_ptr_nonnull(s);
	spool_crashed_bounce(s, "alice@client.example", false, id);
	spool_close(s);
	snprintf(state, sizeof(state), "%s.state", id);

	/* First start: the DSN is composed and queued, then "N 0" is recorded. */
	ck_assert_int_eq(run_recovery(), 1);
	ck_assert_uint_eq(other_messages(id, dsn, 4), 1);
	ck_assert_ptr_nonnull(text = queue_file(state));
	ck_assert_msg(strstr(text, "\nN 0\n") != NULL, "no N record in:\n%s", text);
	free(text);
	ck_assert_ptr_nonnull(text = queue_file(dsn[0]));
	ck_assert_ptr_nonnull(strstr(text, "\nsender \n"));             /* from <> */
	ck_assert_ptr_nonnull(strstr(text, "\nrcpt alice@client.example\n"));
	ck_assert_ptr_nonnull(strstr(text, "Final-Recipient: rfc822; bob@bad.example"));
	ck_assert_ptr_null(strstr(text, "carol@slow.example"));         /* still deferred */
	ck_assert_ptr_nonnull(strstr(text, "Status: 5.1.1"));
	/* Relay and family come back from the reason text. */
	ck_assert_ptr_nonnull(strstr(text, "Remote-MTA: dns; mx.bad.example"));
	ck_assert_ptr_nonnull(strstr(text, "over IPv4"));
	ck_assert_ptr_nonnull(strstr(text, "Subject: crash test"));
	ck_assert_ptr_null(strstr(text, "secret body"));
	free(text);

	/* Second start: the original and the DSN load, and no second DSN. */
	ck_assert_int_eq(run_recovery(), 2);
	ck_assert_uint_eq(other_messages(id, dsn, 4), 1);
}
END_TEST

START_TEST(test_recover_owed_dsn_done_message)
{
	/* Every recipient final: the DSN goes out and the message is removed (no N needed). */
	struct spool *s = spool_open(spool_path);
	char id[ENVELOPE_ID_MAX], dsn[4][ENVELOPE_ID_MAX], *text;

	spool_crashed_bounce(s, "alice@client.example", true, id);
	spool_close(s);
	ck_assert_int_eq(run_recovery(), 1);
	ck_assert_ptr_null(text = queue_file(id));
	ck_assert_uint_eq(other_messages(id, dsn, 4), 1);
	ck_assert_ptr_nonnull(text = queue_file(dsn[0]));
	ck_assert_ptr_nonnull(strstr(text, "Final-Recipient: rfc822; bob@bad.example"));
	ck_assert_ptr_nonnull(strstr(text, "Final-Recipient: rfc822; carol@slow.example"));
	free(text);
	ck_assert_int_eq(run_recovery(), 1); /* the DSN itself only */
	ck_assert_uint_eq(other_messages(dsn[0], dsn + 1, 3), 0);
}
END_TEST

START_TEST(test_recover_null_sender_no_dsn)
{
	struct spool *s = spool_open(spool_path);
	char id[ENVELOPE_ID_MAX], dsn[4][ENVELOPE_ID_MAX], state[ENVELOPE_ID_MAX + 8], *text;

	spool_crashed_bounce(s, "", false, id);
	spool_close(s);
	snprintf(state, sizeof(state), "%s.state", id);
	ck_assert_int_eq(run_recovery(), 1);
	ck_assert_uint_eq(other_messages(id, dsn, 4), 0);
	ck_assert_ptr_nonnull(text = queue_file(state));
	ck_assert_ptr_null(strstr(text, "N 0"));
	free(text);
	/* All final: removed, still without a report. */
	s = spool_open(spool_path);
	spool_crashed_bounce(s, "", true, id);
	spool_close(s);
	ck_assert_int_eq(run_recovery(), 2);
	ck_assert_ptr_null(text = queue_file(id));
	ck_assert_uint_eq(other_messages(id, dsn, 4), 1); /* the first message only */
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
	tc = tcase_create("recovery");
	tcase_add_checked_fixture(tc, spool_setup, spool_teardown);
	tcase_add_test(tc, test_recover_owed_dsn);
	tcase_add_test(tc, test_recover_owed_dsn_done_message);
	tcase_add_test(tc, test_recover_null_sender_no_dsn);
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
