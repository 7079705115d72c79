/*
 * check_server: the inbound SMTP session (smtp_server) end to end, on a socketpair that a
 * real server adopts, in an event loop, with a spool in a mkdtemp directory and, where
 * the wait for the disk matters, the group commit thread. The client end is driven by
 * hand so that it can do what ordinary clients do not: pipeline thousands of commands
 * without reading a reply (small socket buffers make the server's writes partial and
 * pause its reading), flood while a message is being committed, or half-close right
 * after its last command. Checks every reply, in order, and that the session ends.
 */
#include "config.h"

#include <errno.h>
#include <ftw.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <check.h>
#include <event2/event.h>

#include "conf.h"
#include "envelope.h"
#include "log.h"
#include "netaddr.h"
#include "smtp_server.h"
#include "spool.h"
#include "spool_commit.h"
#include "util.h"

/* Generous: sanitizer builds on a loaded two-core machine. */
#define TEST_DEADLINE_S 60.0
/* Client rounds without write progress that mean the server stopped reading. */
#define TEST_STALL_ROUNDS 40

static const char conf_text[] =
    "hostname = \"mx.test\";\n"
    "relay_networks = [ \"127.0.0.0/8\" ];\n";
static const char conf_timeout_text[] =
    "hostname = \"mx.test\";\n"
    "relay_networks = [ \"127.0.0.0/8\" ];\n"
    "timeouts = { command_timeout_s = 1; };\n";

static struct {
	char dir[900];
	struct event_base *base;
	struct event *tick;            /* wakes the loop every few ms: see peer_round */
	struct conf *conf;
	struct spool *spool;
	struct spool_committer *committer; /* NULL: synchronous commits */
	struct smtp_server *srv;
	unsigned committed;            /* messages handed to the message callback */
} fx;

/* The client end of the socketpair. */
struct peer {
	int fd;
	char *out;                     /* to send; owned */
	size_t out_len, out_off;
	char *in;                      /* everything received; owned, NUL-terminated */
	size_t in_len;
	bool reading;                  /* false: reads nothing (a client ignoring replies) */
	bool shut_when_sent;           /* shutdown(SHUT_WR) once out is all sent */
	bool shut;
	bool eof;
	unsigned stalled;              /* consecutive rounds in which nothing could be sent */
};

static int
rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void
message_cb(struct envelope *e, void *arg)
{
	(void)arg;
	fx.committed++;
	envelope_free(e);
}

static void
tick_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
}

static void
fixture_start(const char *text, bool group_commit)
{
	const char *tmp = getenv("TMPDIR");
	struct timeval tv = { 0, 5000 };
	char *errors = NULL;

	log_init("check_server", LOG_TARGET_STDERR, LOG_LEVEL_ERROR);
	memset(&fx, 0, sizeof(fx));
	snprintf(fx.dir, sizeof(fx.dir), "%s/check_server.XXXXXX",
	    tmp != NULL && *tmp != '\0' ? tmp : "/tmp");
	ck_assert_ptr_nonnull(mkdtemp(fx.dir));
	ck_assert_ptr_nonnull(fx.base = event_base_new());
	fx.conf = conf_load_string(text, "test.conf", fx.dir, false, &errors);
	ck_assert_msg(fx.conf != NULL, "%s", errors != NULL ? errors : "?");
	ck_assert_ptr_nonnull(fx.spool = spool_open(fx.dir));
	fx.srv = smtp_server_new(fx.base, fx.conf, fx.spool, message_cb, NULL);
	if (group_commit) {
		ck_assert_ptr_nonnull(fx.committer = spool_committer_new(fx.base, fx.spool,
		    false));
		smtp_server_set_committer(fx.srv, fx.committer);
	}
	fx.tick = event_new(fx.base, -1, EV_PERSIST, tick_cb, NULL);
	event_add(fx.tick, &tv);
}

static void
fixture_stop(void)
{
	smtp_server_free(fx.srv);
	spool_committer_free(fx.committer);
	event_free(fx.tick);
	spool_close(fx.spool);
	conf_free(fx.conf);
	event_base_free(fx.base);
	nftw(fx.dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/*
 * A session on a socketpair. Send buffer sizes of 0 keep the defaults; small ones make
 * the server's writes partial and the client's writes stall early.
 */
static void
peer_open(struct peer *p, int server_sndbuf, int client_sndbuf)
{
	struct netaddr addr;
	int sv[2];

	memset(p, 0, sizeof(*p));
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0,
	    sv), 0);
	if (server_sndbuf > 0)
		ck_assert_int_eq(setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &server_sndbuf,
		    sizeof(server_sndbuf)), 0);
	if (client_sndbuf > 0)
		ck_assert_int_eq(setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &client_sndbuf,
		    sizeof(client_sndbuf)), 0);
	ck_assert_int_eq(netaddr_parse(&addr, "127.0.0.1", 40000), 0);
	ck_assert_int_eq(smtp_server_adopt(fx.srv, sv[1], &addr), 0);
	p->fd = sv[0];
	p->reading = true;
	p->in = xcalloc(1, 1);
}

static void
peer_close(struct peer *p)
{
	close(p->fd);
	free(p->out);
	free(p->in);
}

static void
peer_send(struct peer *p, const char *text)
{
	size_t len = strlen(text);

	p->out = xrealloc(p->out, p->out_len + len);
	memcpy(p->out + p->out_len, text, len);
	p->out_len += len;
}

static void
peer_write(struct peer *p)
{
	ssize_t n;

	if (p->out_off == p->out_len) {
		if (p->shut_when_sent && !p->shut) {
			ck_assert_int_eq(shutdown(p->fd, SHUT_WR), 0);
			p->shut = true;
		}
		p->stalled = 0;
		return;
	}
	n = write(p->fd, p->out + p->out_off, p->out_len - p->out_off);
	if (n > 0) {
		p->out_off += (size_t)n;
		p->stalled = 0;
		return;
	}
	ck_assert_msg(n < 0 && errno == EAGAIN, "client write: %s", strerror(errno));
	p->stalled++;
}

static void
peer_read(struct peer *p)
{
	char buf[16384];
	ssize_t n;

	while (p->reading && !p->eof) {
		n = read(p->fd, buf, sizeof(buf));
		if (n < 0) {
			ck_assert_int_eq(errno, EAGAIN);
			return;
		}
		if (n == 0) {
			p->eof = true;
			return;
		}
		p->in = xrealloc(p->in, p->in_len + (size_t)n + 1);
		memcpy(p->in + p->in_len, buf, (size_t)n);
		p->in_len += (size_t)n;
		p->in[p->in_len] = '\0';
	}
}

/* One step of both ends; the tick bounds the loop's wait to a few milliseconds. */
static void
peer_round(struct peer *p)
{
	peer_write(p);
	peer_read(p);
	event_base_loop(fx.base, EVLOOP_ONCE);
}

typedef bool (*peer_cond)(const struct peer *p, const void *arg);

static void
peer_run_until(struct peer *p, peer_cond cond, const void *arg, const char *what)
{
	double end = dr_monotonic() + TEST_DEADLINE_S;

	while (!cond(p, arg)) {
		ck_assert_msg(dr_monotonic() < end,
		    "timed out waiting for %s; received:\n%.2000s", what, p->in);
		peer_round(p);
	}
}

static bool
cond_eof(const struct peer *p, const void *arg)
{
	(void)arg;
	return p->eof;
}

/* A reply line starting with arg has been received. */
static bool
cond_line(const struct peer *p, const void *arg)
{
	const char *prefix = arg;
	size_t len = strlen(prefix);

	if (strncmp(p->in, prefix, len) == 0 && strchr(p->in, '\n') != NULL)
		return true;
	for (const char *l = strstr(p->in, "\r\n"); l != NULL; l = strstr(l + 2, "\r\n"))
		if (strncmp(l + 2, prefix, len) == 0 && strchr(l + 2, '\n') != NULL)
			return true;
	return false;
}

/* The server stopped reading: nothing could be sent for a while, with more to send. */
static bool
cond_stalled(const struct peer *p, const void *arg)
{
	(void)arg;
	return p->stalled >= TEST_STALL_ROUNDS;
}

/* Takes the next reply line (CR LF removed) from *pos, or NULL at the end. */
static const char *
next_line(const char **pos, char *buf, size_t size)
{
	const char *end = strstr(*pos, "\r\n");
	size_t len;

	if (end == NULL)
		return NULL;
	len = (size_t)(end - *pos);
	ck_assert_uint_lt(len, size);
	memcpy(buf, *pos, len);
	buf[len] = '\0';
	*pos = end + 2;
	return buf;
}

static void
expect_line(const char **pos, const char *prefix)
{
	char buf[1024];
	const char *l = next_line(pos, buf, sizeof(buf));

	ck_assert_msg(l != NULL, "missing reply \"%s...\"", prefix);
	ck_assert_msg(strncmp(l, prefix, strlen(prefix)) == 0, "got \"%s\", expected \"%s...\"",
	    l, prefix);
}

/* The greeting and the EHLO reply, up to its last line. */
static void
expect_greeting_ehlo(const char **pos)
{
	char buf[1024];
	const char *l;

	expect_line(pos, "220 mx.test ESMTP");
	do {
		l = next_line(pos, buf, sizeof(buf));
		ck_assert_ptr_nonnull(l);
		ck_assert_msg(strncmp(l, "250", 3) == 0, "EHLO reply: %s", l);
	} while (l[3] == '-');
}

static void
expect_end(const char **pos)
{
	ck_assert_msg(**pos == '\0', "more replies than expected: %.200s", *pos);
	ck_assert_uint_eq(smtp_server_session_count(fx.srv), 0);
}

/*
 * A client that pipelines thousands of commands without reading a reply: the server
 * stops reading once 64 KiB of replies wait (the socket buffer being full, its write was
 * partial), the client's writes stall; once the client reads again, every command is
 * answered, in order, and QUIT still closes the session.
 */
START_TEST(test_slow_reader)
{
	static const char cycle[] = "NOOP\r\nHELP\r\nVRFY someone\r\n";
	const unsigned n = 5000;
	const char *pos;
	struct peer p;

	fixture_start(conf_text, false);
	peer_open(&p, 4096, 16384);
	peer_run_until(&p, cond_line, "220 ", "the greeting");
	p.reading = false;
	peer_send(&p, "EHLO client.test\r\n");
	for (unsigned i = 0; i < n; i++)
		peer_send(&p, cycle);
	peer_send(&p, "QUIT\r\n");
	peer_run_until(&p, cond_stalled, NULL, "the server to stop reading");
	ck_assert_uint_lt(p.out_off, p.out_len);
	p.reading = true;
	peer_run_until(&p, cond_eof, NULL, "the end of the session");
	ck_assert_uint_eq(p.out_off, p.out_len);

	pos = p.in;
	expect_greeting_ehlo(&pos);
	for (unsigned i = 0; i < n; i++) {
		expect_line(&pos, "250 2.0.0 Ok");
		expect_line(&pos, "214 2.0.0 Commands:");
		expect_line(&pos, "252 2.0.0 Cannot VRFY user");
	}
	expect_line(&pos, "221 2.0.0 Bye");
	expect_end(&pos);
	peer_close(&p);
	fixture_stop();
}
END_TEST

static void
send_envelope(struct peer *p)
{
	peer_send(p, "EHLO client.test\r\nMAIL FROM:<a@client.test>\r\n"
	    "RCPT TO:<b@example.org>\r\nDATA\r\n");
	peer_run_until(p, cond_line, "354 ", "the reply to DATA");
}

static void
expect_envelope(const char **pos)
{
	expect_greeting_ehlo(pos);
	expect_line(pos, "250 2.1.0 Ok");
	expect_line(pos, "250 2.1.5 Ok");
	expect_line(pos, "354 ");
}

/*
 * Commands pipelined right behind the end of data, more of them than the session holds
 * while the message is committed (on the commit thread): the reply to DATA comes first,
 * then every command's, in order.
 */
START_TEST(test_pipelined_after_data)
{
	const unsigned n = 20000;
	const char *pos;
	struct peer p;

	fixture_start(conf_text, true);
	peer_open(&p, 0, 0);
	send_envelope(&p);
	peer_send(&p, "Subject: pipelined\r\n\r\nbody\r\n.\r\n");
	for (unsigned i = 0; i < n; i++)
		peer_send(&p, "NOOP\r\n");
	peer_send(&p, "QUIT\r\n");
	peer_run_until(&p, cond_eof, NULL, "the end of the session");

	pos = p.in;
	expect_envelope(&pos);
	expect_line(&pos, "250 2.0.0 Ok: queued as ");
	for (unsigned i = 0; i < n; i++)
		expect_line(&pos, "250 2.0.0 Ok");
	expect_line(&pos, "221 2.0.0 Bye");
	expect_end(&pos);
	ck_assert_uint_eq(fx.committed, 1);
	peer_close(&p);
	fixture_stop();
}
END_TEST

/*
 * The client sends the end of data and QUIT and half-closes at once, while the message
 * is being committed: it still gets the 250 and the 221.
 */
START_TEST(test_eof_during_commit)
{
	const char *pos;
	struct peer p;

	fixture_start(conf_text, true);
	peer_open(&p, 0, 0);
	send_envelope(&p);
	peer_send(&p, "Subject: half-close\r\n\r\nbody\r\n.\r\nQUIT\r\n");
	p.shut_when_sent = true;
	peer_run_until(&p, cond_eof, NULL, "the end of the session");

	pos = p.in;
	expect_envelope(&pos);
	expect_line(&pos, "250 2.0.0 Ok: queued as ");
	expect_line(&pos, "221 2.0.0 Bye");
	expect_end(&pos);
	ck_assert_uint_eq(fx.committed, 1);
	peer_close(&p);
	fixture_stop();
}
END_TEST

/* A silent client gets the 421 for the command timeout, then the connection closes. */
START_TEST(test_timeout_421)
{
	const char *pos;
	struct peer p;

	fixture_start(conf_timeout_text, false);
	peer_open(&p, 0, 0);
	peer_run_until(&p, cond_eof, NULL, "the end of the session");

	pos = p.in;
	expect_line(&pos, "220 mx.test ESMTP");
	expect_line(&pos, "421 4.4.2 mx.test Error: timeout exceeded");
	expect_end(&pos);
	peer_close(&p);
	fixture_stop();
}
END_TEST

static Suite *
server_suite(void)
{
	Suite *s = suite_create("server");
	TCase *tc = tcase_create("session");

	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_slow_reader);
	tcase_add_test(tc, test_pipelined_after_data);
	tcase_add_test(tc, test_eof_during_commit);
	tcase_add_test(tc, test_timeout_421);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(server_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
