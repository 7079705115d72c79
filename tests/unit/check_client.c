/*
 * check_client: smtp_client against small scripted SMTP servers living in the same
 * event loop (over socketpairs), and race against listening sockets on 127.0.0.1.
 * Checks the exact bytes the server received (pipelining groups, dot-stuffing, MAIL
 * parameters), per-recipient results, failure stages and texts, and the race's
 * fallback, timing and loser handling. Loopback only.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <check.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "envelope.h"
#include "log.h"
#include "netaddr.h"
#include "race.h"
#include "smtp_client.h"
#include "smtp_proto.h"
#include "util.h"

/* ------------------------------------------------------------------------------------ */
/* A scripted SMTP server. */

struct srv {
	struct bufferevent *bev;
	const char *greeting;      /* NULL: say nothing (timeout test) */
	const char *ehlo;          /* reply to EHLO */
	const char *helo;
	const char *mail;
	const char *rcpt[4];       /* reply to the n-th RCPT */
	const char *data;          /* reply to DATA */
	const char *dot;           /* reply to the end of data; NULL: say nothing */
	const char *rset;          /* reply to RSET; NULL: 250 */
	size_t drop_after;         /* close after this many content bytes (0: never) */
	size_t nrcpt;
	bool in_data;
	size_t data_bytes;         /* content bytes seen in the current DATA phase */
	char *all;                 /* every byte received */
	size_t all_len;
	char *pending;             /* received, not yet processed */
	size_t pending_len;
	size_t max_cmds_per_read;  /* most command lines handled in one read callback */
	bool closed;
};

static void
srv_send(struct srv *s, const char *text)
{
	if (text != NULL && s->bev != NULL)
		bufferevent_write(s->bev, text, strlen(text));
}

static void
srv_close(struct srv *s)
{
	if (s->bev != NULL) {
		bufferevent_free(s->bev);
		s->bev = NULL;
	}
	s->closed = true;
}

static void
srv_consume(struct srv *s, size_t n)
{
	memmove(s->pending, s->pending + n, s->pending_len - n);
	s->pending_len -= n;
}

static void
srv_command(struct srv *s, const char *line)
{
	if (strncmp(line, "EHLO", 4) == 0)
		srv_send(s, s->ehlo);
	else if (strncmp(line, "HELO", 4) == 0)
		srv_send(s, s->helo);
	else if (strncmp(line, "MAIL", 4) == 0)
		srv_send(s, s->mail);
	else if (strncmp(line, "RCPT", 4) == 0)
		srv_send(s, s->rcpt[s->nrcpt++ % 4]);
	else if (strcmp(line, "DATA") == 0) {
		srv_send(s, s->data);
		if (s->data != NULL && strncmp(s->data, "354", 3) == 0) {
			s->in_data = true;
			s->data_bytes = 0;
		}
	} else if (strcmp(line, "RSET") == 0) {
		srv_send(s, s->rset != NULL ? s->rset : "250 2.0.0 Ok\r\n");
	} else if (strcmp(line, "QUIT") == 0) {
		srv_send(s, "221 2.0.0 bye\r\n");
		srv_close(s);
	} else
		srv_send(s, "500 5.5.2 what\r\n");
}

static void
srv_read_cb(struct bufferevent *bev, void *arg)
{
	struct srv *s = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	size_t n = evbuffer_get_length(in), cmds = 0;
	char *p;

	s->all = xrealloc(s->all, s->all_len + n + 1);
	s->pending = xrealloc(s->pending, s->pending_len + n + 1);
	evbuffer_copyout(in, s->all + s->all_len, n);
	evbuffer_remove(in, s->pending + s->pending_len, n);
	s->all_len += n;
	s->all[s->all_len] = '\0';
	s->pending_len += n;
	s->pending[s->pending_len] = '\0';

	while (s->bev != NULL && s->pending_len > 0) {
		if (s->in_data) {
			/* The client's stuffing is checked on the raw bytes; here only the end. */
			char *end = memmem(s->pending, s->pending_len, "\r\n.\r\n", 5);
			/* Without the end, keep 4 bytes: it may straddle two reads. */
			size_t take = end != NULL ? (size_t)(end - s->pending) + 5 :
			    s->pending_len > 4 ? s->pending_len - 4 : 0;

			if (s->pending_len >= 3 && s->data_bytes == 0 &&
			    memcmp(s->pending, ".\r\n", 3) == 0) {
				end = s->pending;
				take = 3;
			}
			s->data_bytes += take;
			if (s->drop_after > 0 && s->data_bytes >= s->drop_after) {
				srv_close(s);
				return;
			}
			srv_consume(s, take);
			if (end == NULL || take == 0)
				return;
			s->in_data = false;
			srv_send(s, s->dot);
			continue;
		}
		p = memmem(s->pending, s->pending_len, "\r\n", 2);
		if (p == NULL)
			return;
		*p = '\0';
		{
			char *line = xstrdup(s->pending);

			srv_consume(s, (size_t)(p - s->pending) + 2);
			cmds++;
			if (cmds > s->max_cmds_per_read)
				s->max_cmds_per_read = cmds;
			srv_command(s, line);
			free(line);
		}
	}
}

static void
srv_event_cb(struct bufferevent *bev, short what, void *arg)
{
	(void)bev;
	(void)what;
	srv_close(arg);
}

/* Defaults: a Postfix-like server that accepts everything and offers PIPELINING. */
static void
srv_init(struct srv *s)
{
	memset(s, 0, sizeof(*s));
	s->greeting = "220 mx.example.org ESMTP\r\n";
	s->ehlo = "250-mx.example.org\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n"
	    "250-8BITMIME\r\n250 ENHANCEDSTATUSCODES\r\n";
	s->helo = "250 mx.example.org\r\n";
	s->mail = "250 2.1.0 Ok\r\n";
	s->rcpt[0] = s->rcpt[1] = s->rcpt[2] = s->rcpt[3] = "250 2.1.5 Ok\r\n";
	s->data = "354 End data with <CR><LF>.<CR><LF>\r\n";
	s->dot = "250 2.0.0 Ok: queued as ABC\r\n";
}

static void
srv_free(struct srv *s)
{
	srv_close(s);
	free(s->all);
	free(s->pending);
}

/* ------------------------------------------------------------------------------------ */
/* Running one client session. */

struct run {
	struct event_base *base;
	struct srv srv;
	struct envelope *env;
	struct smtp_client *client;
	bool got_result;
	bool free_in_cb;
	int ncalls;
	/* copies of the result */
	bool completed;
	enum smtp_client_stage stage;
	int code;
	char enhanced[16];
	int error;
	bool body_sent;
	char error_text[1024];
	int rcpt_code[4];
	enum smtp_client_stage rcpt_stage[4];
	int rcpt_nlines[4];
	char rcpt_text[4][256];
	unsigned ext;
};

static void
run_cb(struct smtp_client *c, const struct smtp_client_result *r, void *arg)
{
	struct run *run = arg;
	size_t i;

	ck_assert_ptr_eq(c, run->client);
	run->ncalls++;
	run->got_result = true;
	run->completed = r->completed;
	run->stage = r->stage;
	run->code = r->reply.code;
	dr_strlcpy(run->enhanced, r->reply.enhanced, sizeof(run->enhanced));
	run->error = r->error;
	run->body_sent = r->body_sent;
	dr_strlcpy(run->error_text, r->error_text != NULL ? r->error_text : "",
	    sizeof(run->error_text));
	ck_assert_uint_le(r->nrcpts, 4);
	for (i = 0; i < r->nrcpts; i++) {
		ck_assert_uint_eq(r->rcpts[i].index, i);
		run->rcpt_code[i] = r->rcpts[i].reply.code;
		run->rcpt_stage[i] = r->rcpts[i].stage;
		run->rcpt_nlines[i] = r->rcpts[i].reply.nlines;
		dr_strlcpy(run->rcpt_text[i], r->rcpts[i].reply.text ? r->rcpts[i].reply.text : "",
		    sizeof(run->rcpt_text[i]));
	}
	run->ext = r->ehlo.ext;
	if (run->free_in_cb) {
		smtp_client_free(c);
		run->client = NULL;
	}
}

static void
guard_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	*(bool *)arg = true;
}

static int
content_fd(const char *content, size_t len)
{
	int fd = memfd_create("content", MFD_CLOEXEC);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, content, len), (ssize_t)len);
	ck_assert_int_eq(lseek(fd, 0, SEEK_SET), 0);
	return fd;
}

static void
run_init(struct run *run, size_t nrcpt, bool eightbit)
{
	static const char *addrs[] = { "b@example.net", "c@example.net", "d@example.net",
	    "e@example.net" };
	size_t i;

	memset(run, 0, sizeof(*run));
	run->base = event_base_new();
	srv_init(&run->srv);
	run->env = envelope_new();
	free(run->env->sender);
	run->env->sender = xstrdup("a@example.org");
	run->env->body = eightbit ? SMTP_BODY_8BITMIME : SMTP_BODY_7BIT;
	for (i = 0; i < nrcpt; i++)
		envelope_add_rcpt(run->env, addrs[i]);
}

/*
 * Runs the session until the result came and the server saw the connection end
 * (or 10 s passed). timeout_s is the client's reply timeout.
 */
static void
run_session(struct run *run, const char *content, size_t len, unsigned timeout_s)
{
	static const size_t idx[] = { 0, 1, 2, 3 };
	struct smtp_client_params p = { 0 };
	struct timeval tv = { 10, 0 };
	struct event *guard;
	bool expired = false;
	int sv[2];

	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
	run->srv.bev = bufferevent_socket_new(run->base, sv[1], BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(run->srv.bev, srv_read_cb, NULL, srv_event_cb, &run->srv);
	bufferevent_enable(run->srv.bev, EV_READ | EV_WRITE);
	srv_send(&run->srv, run->srv.greeting);

	memset(&p, 0, sizeof(p));
	p.helo_name = "relay.example.com";
	p.peer_name = "mx.example.org";
	ck_assert_int_eq(netaddr_parse(&p.peer, "127.0.0.1", 25), 0);
	p.reply_timeout_s = timeout_s;
	p.body_timeout_s = timeout_s;
	run->client = smtp_client_start(run->base, sv[0], content_fd(content, len), &p,
	    run->env, idx, run->env->nrcpts, run_cb, run);

	guard = evtimer_new(run->base, guard_cb, &expired);
	evtimer_add(guard, &tv);
	while (!expired && !(run->got_result && run->srv.closed))
		event_base_loop(run->base, EVLOOP_ONCE);
	event_free(guard);
	ck_assert_msg(!expired, "session did not end");
}

static void
run_free(struct run *run)
{
	smtp_client_free(run->client);
	srv_free(&run->srv);
	envelope_free(run->env);
	event_base_free(run->base);
}

static const char simple_body[] = "Subject: t\r\n\r\n.leading dot\r\n..two\r\nend\r\n";
static const char simple_stuffed[] = "Subject: t\r\n\r\n..leading dot\r\n...two\r\nend\r\n.\r\n";

/* ------------------------------------------------------------------------------------ */

START_TEST(test_pipelined)
{
	struct run run;
	char *want;

	run_init(&run, 2, true);
	run.env->content_size = sizeof(simple_body) - 1;
	run_session(&run, simple_body, sizeof(simple_body) - 1, 5);
	want = xasprintf("EHLO relay.example.com\r\n"
	    "MAIL FROM:<a@example.org> BODY=8BITMIME SIZE=%zu\r\n"
	    "RCPT TO:<b@example.net>\r\nRCPT TO:<c@example.net>\r\nDATA\r\n%sQUIT\r\n",
	    run.env->content_size, simple_stuffed);
	ck_assert_int_eq(run.ncalls, 1);
	ck_assert(run.completed);
	ck_assert_str_eq(run.srv.all, want);
	/* MAIL, both RCPTs and DATA arrived in one group. */
	ck_assert_uint_eq(run.srv.max_cmds_per_read, 4);
	ck_assert_int_eq(run.rcpt_code[0], 250);
	ck_assert_int_eq(run.rcpt_code[1], 250);
	ck_assert_int_eq(run.rcpt_stage[0], SMTP_STAGE_BODY);
	ck_assert_str_eq(run.rcpt_text[1], "Ok: queued as ABC");
	ck_assert(run.ext & SMTP_EXT_PIPELINING);
	free(want);
	run_free(&run);
}
END_TEST

START_TEST(test_lockstep)
{
	struct run run;

	run_init(&run, 2, true);
	/* No PIPELINING and no 8BITMIME: one command at a time, no BODY= parameter. */
	run.srv.ehlo = "250-mx.example.org\r\n250 HELP\r\n";
	run.env->content_size = 1234;
	run_session(&run, simple_body, sizeof(simple_body) - 1, 5);
	ck_assert(run.completed);
	ck_assert_str_eq(run.srv.all, "EHLO relay.example.com\r\nMAIL FROM:<a@example.org>\r\n"
	    "RCPT TO:<b@example.net>\r\nRCPT TO:<c@example.net>\r\nDATA\r\n"
	    "Subject: t\r\n\r\n..leading dot\r\n...two\r\nend\r\n.\r\nQUIT\r\n");
	ck_assert_uint_eq(run.srv.max_cmds_per_read, 1);
	ck_assert_int_eq(run.rcpt_code[0], 250);
	ck_assert_int_eq(run.rcpt_code[1], 250);
	run_free(&run);
}
END_TEST

START_TEST(test_null_sender_no_final_crlf)
{
	struct run run;

	run_init(&run, 1, false);
	free(run.env->sender);
	run.env->sender = xstrdup("");
	run_session(&run, "x\r\ny", 4, 5);
	ck_assert(run.completed);
	ck_assert_str_eq(run.srv.all, "EHLO relay.example.com\r\nMAIL FROM:<>\r\n"
	    "RCPT TO:<b@example.net>\r\nDATA\r\nx\r\ny\r\n.\r\nQUIT\r\n");
	run_free(&run);
}
END_TEST

START_TEST(test_rcpt_partly_rejected)
{
	struct run run;

	run_init(&run, 3, false);
	run.srv.rcpt[1] = "550 5.1.1 <c@example.net>: Recipient address rejected\r\n";
	run_session(&run, simple_body, sizeof(simple_body) - 1, 5);
	ck_assert(run.completed);
	ck_assert_int_eq(run.rcpt_code[0], 250);
	ck_assert_int_eq(run.rcpt_stage[0], SMTP_STAGE_BODY);
	ck_assert_int_eq(run.rcpt_code[1], 550);
	ck_assert_int_eq(run.rcpt_stage[1], SMTP_STAGE_RCPT);
	ck_assert_str_eq(run.rcpt_text[1], "<c@example.net>: Recipient address rejected");
	ck_assert_int_eq(run.rcpt_code[2], 250);
	ck_assert_ptr_nonnull(strstr(run.srv.all, simple_stuffed));
	run_free(&run);
}
END_TEST

START_TEST(test_all_rejected_pipelined)
{
	struct run run;

	run_init(&run, 2, false);
	run.srv.rcpt[0] = "550 5.1.1 no\r\n";
	run.srv.rcpt[1] = "450 4.2.0 later\r\n";
	run.srv.data = "554 5.5.1 Error: no valid recipients\r\n";
	run_session(&run, simple_body, sizeof(simple_body) - 1, 5);
	ck_assert(run.completed);
	ck_assert_int_eq(run.rcpt_code[0], 550);
	ck_assert_int_eq(run.rcpt_code[1], 450);
	ck_assert_int_eq(run.rcpt_stage[1], SMTP_STAGE_RCPT);
	/* The body never went out: DATA (pipelined) was refused, then QUIT. */
	ck_assert_ptr_nonnull(strstr(run.srv.all, "DATA\r\nQUIT\r\n"));
	ck_assert_ptr_null(strstr(run.srv.all, "Subject"));
	run_free(&run);
}
END_TEST

START_TEST(test_all_rejected_pipelined_354)
{
	struct run run;

	/* A broken server says 354 anyway: an empty data phase keeps QUIT a command. */
	run_init(&run, 1, false);
	run.srv.rcpt[0] = "550 5.1.1 no\r\n";
	run.srv.dot = "554 5.5.1 no valid recipients\r\n";
	run_session(&run, simple_body, sizeof(simple_body) - 1, 5);
	ck_assert(run.completed);
	ck_assert_int_eq(run.rcpt_code[0], 550);
	ck_assert_ptr_nonnull(strstr(run.srv.all, "DATA\r\n.\r\nQUIT\r\n"));
	ck_assert_ptr_null(strstr(run.srv.all, "Subject"));
	run_free(&run);
}
END_TEST

START_TEST(test_all_rejected_lockstep)
{
	struct run run;

	run_init(&run, 2, false);
	run.srv.ehlo = "250 mx.example.org\r\n";
	run.srv.rcpt[0] = "550 5.1.1 no\r\n";
	run.srv.rcpt[1] = "550 5.1.1 no\r\n";
	run_session(&run, simple_body, sizeof(simple_body) - 1, 5);
	ck_assert(run.completed);
	ck_assert_str_eq(run.srv.all, "EHLO relay.example.com\r\nMAIL FROM:<a@example.org>\r\n"
	    "RCPT TO:<b@example.net>\r\nRCPT TO:<c@example.net>\r\nQUIT\r\n");
	run_free(&run);
}
END_TEST

START_TEST(test_greeting_554)
{
	struct run run;

	run_init(&run, 1, false);
	run.srv.greeting = "554 5.7.1 go away\r\n";
	run_session(&run, simple_body, sizeof(simple_body) - 1, 5);
	ck_assert(!run.completed);
	ck_assert_int_eq(run.stage, SMTP_STAGE_GREETING);
	ck_assert_int_eq(run.code, 554);
	ck_assert_str_eq(run.enhanced, "5.7.1");
	ck_assert_int_eq(run.error, 0);
	ck_assert(!run.body_sent);
	ck_assert_str_eq(run.error_text,
	    "host mx.example.org[127.0.0.1] refused to talk to me: 554 5.7.1 go away");
	ck_assert_str_eq(run.srv.all, "QUIT\r\n");
	ck_assert_int_eq(run.rcpt_code[0], 0);
	run_free(&run);
}
END_TEST

START_TEST(test_ehlo_502_helo)
{
	struct run run;

	run_init(&run, 1, true);
	run.srv.ehlo = "502 5.5.2 Error: command not recognized\r\n";
	run_session(&run, simple_body, sizeof(simple_body) - 1, 5);
	ck_assert(run.completed);
	ck_assert_int_eq(run.rcpt_code[0], 250);
	ck_assert_uint_eq(run.ext, 0);
	/* HELO: no extensions, so no BODY= even for 8-bit content. */
	ck_assert_str_eq(run.srv.all, "EHLO relay.example.com\r\nHELO relay.example.com\r\n"
	    "MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n"
	    "Subject: t\r\n\r\n..leading dot\r\n...two\r\nend\r\n.\r\nQUIT\r\n");
	run_free(&run);
}
END_TEST

START_TEST(test_ehlo_421)
{
	struct run run;

	run_init(&run, 1, false);
	run.srv.ehlo = "421 4.3.2 shutting down\r\n";
	run_session(&run, simple_body, sizeof(simple_body) - 1, 5);
	ck_assert(!run.completed);
	ck_assert_int_eq(run.stage, SMTP_STAGE_EHLO);
	ck_assert_int_eq(run.code, 421);
	ck_assert_str_eq(run.error_text, "host mx.example.org[127.0.0.1] said: 421 4.3.2 "
	    "shutting down (in reply to EHLO command)");
	run_free(&run);
}
END_TEST

START_TEST(test_mail_rejected_pipelined)
{
	struct run run;

	run_init(&run, 2, false);
	run.srv.mail = "553 5.7.1 <a@example.org>: Sender address rejected\r\n";
	run.srv.rcpt[0] = run.srv.rcpt[1] = "503 5.5.1 Error: need MAIL command\r\n";
	run.srv.data = "503 5.5.1 Error: need RCPT command\r\n";
	run_session(&run, simple_body, sizeof(simple_body) - 1, 5);
	ck_assert(!run.completed);
	ck_assert_int_eq(run.stage, SMTP_STAGE_MAIL);
	ck_assert_int_eq(run.code, 553);
	ck_assert_int_eq(run.rcpt_code[0], 0);
	ck_assert_int_eq(run.rcpt_code[1], 0);
	ck_assert_str_eq(run.error_text, "host mx.example.org[127.0.0.1] said: 553 5.7.1 "
	    "<a@example.org>: Sender address rejected (in reply to MAIL FROM command)");
	ck_assert_ptr_nonnull(strstr(run.srv.all, "DATA\r\nQUIT\r\n"));
	ck_assert_ptr_null(strstr(run.srv.all, "Subject"));
	run_free(&run);
}
END_TEST

START_TEST(test_mail_rejected_lockstep)
{
	struct run run;

	run_init(&run, 2, false);
	run.srv.ehlo = "250 mx.example.org\r\n";
	run.srv.mail = "452 4.3.1 Insufficient system storage\r\n";
	run_session(&run, simple_body, sizeof(simple_body) - 1, 5);
	ck_assert(!run.completed);
	ck_assert_int_eq(run.stage, SMTP_STAGE_MAIL);
	ck_assert_int_eq(run.code, 452);
	ck_assert_str_eq(run.srv.all, "EHLO relay.example.com\r\nMAIL FROM:<a@example.org>\r\n"
	    "QUIT\r\n");
	run_free(&run);
}
END_TEST

START_TEST(test_data_refused)
{
	struct run run;

	run_init(&run, 2, false);
	run.srv.rcpt[1] = "550 5.1.1 no\r\n";
	run.srv.data = "451 4.3.0 try later\r\n";
	run_session(&run, simple_body, sizeof(simple_body) - 1, 5);
	ck_assert(run.completed);
	ck_assert_int_eq(run.rcpt_code[0], 451);
	ck_assert_int_eq(run.rcpt_stage[0], SMTP_STAGE_DATA);
	ck_assert_int_eq(run.rcpt_code[1], 550);
	ck_assert_int_eq(run.rcpt_stage[1], SMTP_STAGE_RCPT);
	ck_assert_ptr_null(strstr(run.srv.all, "Subject"));
	run_free(&run);
}
END_TEST

START_TEST(test_final_451)
{
	struct run run;

	run_init(&run, 2, false);
	run.srv.dot = "451 4.7.1 Try again later\r\n";
	run_session(&run, simple_body, sizeof(simple_body) - 1, 5);
	ck_assert(run.completed);
	ck_assert_int_eq(run.rcpt_code[0], 451);
	ck_assert_int_eq(run.rcpt_code[1], 451);
	ck_assert_int_eq(run.rcpt_stage[0], SMTP_STAGE_BODY);
	ck_assert_str_eq(run.rcpt_text[0], "Try again later");
	run_free(&run);
}
END_TEST

/* Content of n bytes: lines of varying length, some starting with a dot. */
static char *
big_content(size_t n, char **stuffed, size_t *stuffed_len)
{
	char *c = xmalloc(n), *s = xmalloc(2 * n + 8);
	size_t i, j = 0, col = 0;

	for (i = 0; i < n; i++) {
		if (col == (i / 97) % 80 + 1 && i + 2 <= n) {
			c[i++] = '\r';
			c[i] = '\n';
			col = 0;
			continue;
		}
		c[i] = col == 0 && (i % 3) == 0 ? '.' : (char)('a' + i % 26);
		col++;
	}
	/* Expected stuffed form, computed independently of the encoder. */
	for (i = 0; i < n; i++) {
		if (c[i] == '.' && (i == 0 || (i >= 2 && c[i - 1] == '\n' && c[i - 2] == '\r')))
			s[j++] = '.';
		s[j++] = c[i];
	}
	if (!(n >= 2 && c[n - 2] == '\r' && c[n - 1] == '\n')) {
		s[j++] = '\r';
		s[j++] = '\n';
	}
	memcpy(s + j, ".\r\n", 3);
	j += 3;
	*stuffed = s;
	*stuffed_len = j;
	return c;
}

START_TEST(test_big_body_exact)
{
	struct run run;
	char *content, *stuffed;
	size_t len = 700 * 1024 + 13, slen;
	const char *data;

	content = big_content(len, &stuffed, &slen);
	run_init(&run, 1, false);
	run_session(&run, content, len, 5);
	ck_assert(run.completed);
	ck_assert_int_eq(run.rcpt_code[0], 250);
	data = strstr(run.srv.all, "DATA\r\n");
	ck_assert_ptr_nonnull(data);
	data += 6;
	ck_assert_uint_eq(run.srv.all_len - (size_t)(data - run.srv.all), slen + 6);
	ck_assert(memcmp(data, stuffed, slen) == 0);
	ck_assert(memcmp(data + slen, "QUIT\r\n", 6) == 0);
	free(content);
	free(stuffed);
	run_free(&run);
}
END_TEST

START_TEST(test_drop_mid_body)
{
	static const char drop_text[] = "lost connection with mx.example.org[127.0.0.1] "
	    "while sending message body";
	struct run run;
	char *content, *stuffed;
	size_t len = 900 * 1024, slen;

	content = big_content(len, &stuffed, &slen);
	run_init(&run, 2, false);
	run.srv.drop_after = 100 * 1024;
	run_session(&run, content, len, 5);
	ck_assert(!run.completed);
	ck_assert_int_eq(run.stage, SMTP_STAGE_BODY);
	ck_assert(run.body_sent);
	ck_assert_int_eq(run.code, 0);
	ck_assert(run.error == ECONNRESET || run.error == EPIPE);
	ck_assert_msg(strncmp(run.error_text, drop_text, strlen(drop_text)) == 0, "%s",
	    run.error_text);
	ck_assert_int_eq(run.rcpt_code[0], 0);
	free(content);
	free(stuffed);
	run_free(&run);
}
END_TEST

START_TEST(test_drop_after_dot)
{
	struct run run;

	run_init(&run, 1, false);
	run.srv.dot = NULL;
	run.srv.drop_after = sizeof(simple_stuffed) - 1;
	run_session(&run, simple_body, sizeof(simple_body) - 1, 5);
	ck_assert(!run.completed);
	ck_assert_int_eq(run.stage, SMTP_STAGE_BODY);
	ck_assert(run.body_sent);
	ck_assert_str_eq(run.error_text, "lost connection with mx.example.org[127.0.0.1] while "
	    "sending end of data -- message may be sent more than once");
	run_free(&run);
}
END_TEST

START_TEST(test_greeting_timeout)
{
	struct run run;
	uint64_t t0;

	run_init(&run, 1, false);
	run.srv.greeting = NULL;
	t0 = dr_monotonic_ms();
	run_session(&run, simple_body, sizeof(simple_body) - 1, 1);
	ck_assert(!run.completed);
	ck_assert_int_eq(run.stage, SMTP_STAGE_GREETING);
	ck_assert_int_eq(run.error, ETIMEDOUT);
	ck_assert_uint_ge(dr_monotonic_ms() - t0, 900);
	ck_assert_str_eq(run.error_text, "conversation with mx.example.org[127.0.0.1] timed out "
	    "while receiving the initial server greeting");
	/* No QUIT on a silent peer: the connection is just closed. */
	ck_assert_uint_eq(run.srv.all_len, 0);
	run_free(&run);
}
END_TEST

START_TEST(test_final_reply_timeout)
{
	struct run run;

	run_init(&run, 1, false);
	run.srv.dot = NULL;
	run_session(&run, simple_body, sizeof(simple_body) - 1, 1);
	ck_assert(!run.completed);
	ck_assert_int_eq(run.stage, SMTP_STAGE_BODY);
	ck_assert_int_eq(run.error, ETIMEDOUT);
	ck_assert(run.body_sent);
	run_free(&run);
}
END_TEST

START_TEST(test_multiline)
{
	struct run run;

	run_init(&run, 2, false);
	run.srv.greeting = "220-mx.example.org ESMTP\r\n220-no UCE\r\n220 welcome\r\n";
	run.srv.rcpt[0] = "550-5.7.1 first line\r\n550 5.7.1 second line\r\n";
	run.srv.dot = "250-2.0.0 queued\r\n250 2.0.0 as XYZ\r\n";
	run_session(&run, simple_body, sizeof(simple_body) - 1, 5);
	ck_assert(run.completed);
	ck_assert_int_eq(run.rcpt_code[0], 550);
	ck_assert_int_eq(run.rcpt_nlines[0], 2);
	ck_assert_str_eq(run.rcpt_text[0], "first line\nsecond line");
	ck_assert_int_eq(run.rcpt_code[1], 250);
	ck_assert_int_eq(run.rcpt_nlines[1], 2);
	ck_assert(run.ext & SMTP_EXT_8BITMIME);
	run_free(&run);
}
END_TEST

START_TEST(test_long_reply_line)
{
	struct run run;
	char *greeting = xmalloc(SMTP_REPLY_LINE_MAX + 64);

	memcpy(greeting, "220 ", 4);
	memset(greeting + 4, 'x', SMTP_REPLY_LINE_MAX + 10);
	memcpy(greeting + 4 + SMTP_REPLY_LINE_MAX + 10, "\r\n", 3);
	run_init(&run, 1, false);
	run.srv.greeting = greeting;
	run_session(&run, simple_body, sizeof(simple_body) - 1, 5);
	ck_assert(!run.completed);
	ck_assert_int_eq(run.stage, SMTP_STAGE_GREETING);
	ck_assert_int_eq(run.error, EPROTO);
	ck_assert_int_eq(run.code, 0);
	run_free(&run);
	free(greeting);
}
END_TEST

START_TEST(test_smtputf8_not_offered)
{
	struct run run;

	run_init(&run, 1, false);
	run.env->smtputf8 = true;
	run_session(&run, simple_body, sizeof(simple_body) - 1, 5);
	ck_assert(!run.completed);
	ck_assert_int_eq(run.stage, SMTP_STAGE_MAIL);
	ck_assert_int_eq(run.code / 100, 5);
	ck_assert_str_eq(run.enhanced, "5.6.7");
	ck_assert_str_eq(run.error_text, "SMTPUTF8 is required, but was not offered by host "
	    "mx.example.org[127.0.0.1]");
	ck_assert_str_eq(run.srv.all, "EHLO relay.example.com\r\nQUIT\r\n");
	run_free(&run);
}
END_TEST

START_TEST(test_smtputf8_offered)
{
	struct run run;

	run_init(&run, 1, true);
	run.env->smtputf8 = true;
	run.srv.ehlo = "250-mx.example.org\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n";
	run_session(&run, simple_body, sizeof(simple_body) - 1, 5);
	ck_assert(run.completed);
	ck_assert_ptr_nonnull(strstr(run.srv.all,
	    "MAIL FROM:<a@example.org> BODY=8BITMIME SMTPUTF8\r\n"));
	run_free(&run);
}
END_TEST

START_TEST(test_size_exceeded)
{
	struct run run;

	run_init(&run, 1, false);
	run.srv.ehlo = "250-mx.example.org\r\n250 SIZE 10\r\n";
	run.env->content_size = 11;
	run_session(&run, simple_body, sizeof(simple_body) - 1, 5);
	ck_assert(!run.completed);
	ck_assert_int_eq(run.stage, SMTP_STAGE_MAIL);
	ck_assert_int_eq(run.code, 552);
	ck_assert_str_eq(run.enhanced, "5.3.4");
	ck_assert_str_eq(run.srv.all, "EHLO relay.example.com\r\nQUIT\r\n");
	run_free(&run);
}
END_TEST

START_TEST(test_free_in_callback)
{
	struct run run;

	run_init(&run, 1, false);
	run.free_in_cb = true;
	run_session(&run, simple_body, sizeof(simple_body) - 1, 5);
	ck_assert(run.completed);
	ck_assert_ptr_null(run.client);
	/* QUIT was pushed out before the callback freed the client. */
	ck_assert_msg(strstr(run.srv.all, ".\r\nQUIT\r\n") != NULL, "[%s]", run.srv.all);
	run_free(&run);
}
END_TEST

/*
 * A kept session reused for a second message (the connection cache): with PIPELINING,
 * RSET goes in one group with MAIL, RCPT and DATA (_i 0: one round trip saved); without
 * it, RSET waits for its reply and MAIL follows (_i 1); a refused RSET fails the reuse
 * at its own stage, before anything of the message counts (_i 2).
 */
START_TEST(test_reuse)
{
	static const size_t idx[] = { 0 };
	struct smtp_client_params p = { 0 };
	struct run run;
	int sv[2];

	run_init(&run, 1, false);
	if (_i == 1)
		run.srv.ehlo = "250-mx.example.org\r\n250 ENHANCEDSTATUSCODES\r\n";
	if (_i == 2)
		run.srv.rset = "421 4.3.0 going away\r\n";
	run.env->content_size = sizeof(simple_body) - 1;
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
	run.srv.bev = bufferevent_socket_new(run.base, sv[1], BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(run.srv.bev, srv_read_cb, NULL, srv_event_cb, &run.srv);
	bufferevent_enable(run.srv.bev, EV_READ | EV_WRITE);
	srv_send(&run.srv, run.srv.greeting);
	p.helo_name = "relay.example.com";
	p.peer_name = "mx.example.org";
	ck_assert_int_eq(netaddr_parse(&p.peer, "127.0.0.1", 25), 0);
	p.reply_timeout_s = p.body_timeout_s = 5;
	p.keep_open = true;
	run.client = smtp_client_start(run.base, sv[0], content_fd(simple_body,
	    sizeof(simple_body) - 1), &p, run.env, idx, 1, run_cb, &run);
	for (int i = 0; i < 1000 && !run.got_result; i++)
		event_base_loop(run.base, EVLOOP_ONCE);
	ck_assert(run.completed);
	ck_assert(smtp_client_reusable(run.client));
	size_t first = run.srv.all_len;
	run.srv.max_cmds_per_read = 0;
	run.got_result = false;

	smtp_client_reuse(run.client, content_fd(simple_body, sizeof(simple_body) - 1),
	    run.env, idx, 1, run_cb, &run);
	for (int i = 0; i < 1000 && !run.got_result; i++)
		event_base_loop(run.base, EVLOOP_ONCE);
	ck_assert(run.got_result);
	const char *second = run.srv.all + first;
	if (_i == 2) {
		ck_assert(!run.completed);
		ck_assert_int_eq(run.error, EPROTO);
		ck_assert_msg(strstr(run.error_text, "RSET refused") != NULL, "%s", run.error_text);
	} else {
		ck_assert_msg(run.completed, "%s", run.error_text);
		ck_assert_int_eq(run.rcpt_code[0], 250);
		ck_assert_msg(strncmp(second, "RSET\r\nMAIL FROM:<a@example.org>", 31) == 0,
		    "[%s]", second);
		ck_assert_msg(strstr(second, simple_stuffed) != NULL, "[%s]", second);
		/* One group (RSET MAIL RCPT DATA) with PIPELINING; one command at a time without. */
		ck_assert_uint_eq(run.srv.max_cmds_per_read, _i == 0 ? 4 : 1);
	}
	run_free(&run);
}
END_TEST

START_TEST(test_stage_names)
{
	ck_assert_str_eq(smtp_client_stage_name(SMTP_STAGE_RCPT), "in reply to RCPT TO command");
	ck_assert_str_eq(smtp_client_stage_name(SMTP_STAGE_BODY),
	    "in reply to end of DATA command");
	ck_assert_str_eq(smtp_client_stage_name(SMTP_STAGE_MAIL),
	    "in reply to MAIL FROM command");
}
END_TEST

/* ------------------------------------------------------------------------------------ */
/* race */

struct rrun {
	struct event_base *base;
	struct race *race;
	int ncb;
	enum race_event ev;
	int fd;
	size_t index;
	struct race_failure failures[8];
	size_t nfailures;
	int nfail_cb;
	bool free_in_cb;
};

static void
rrun_cb(enum race_event ev, int fd, size_t index, const struct race_failure *f, size_t nf,
    void *arg)
{
	struct rrun *rr = arg;

	rr->ncb++;
	rr->ev = ev;
	rr->fd = fd;
	rr->index = index;
	ck_assert_uint_le(nf, 8);
	memcpy(rr->failures, f, nf * sizeof(*f));
	rr->nfailures = nf;
	if (rr->free_in_cb) {
		race_free(rr->race);
		rr->race = NULL;
	}
}

static void
rrun_fail_cb(size_t index, int error, void *arg)
{
	struct rrun *rr = arg;

	(void)index;
	(void)error;
	rr->nfail_cb++;
}

/* A listening socket on 127.0.0.1, port into *port. */
static int
listener(uint16_t *port)
{
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	ck_assert_int_eq(listen(fd, 16), 0);
	ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
	*port = ntohs(sin.sin_port);
	return fd;
}

/* A port on 127.0.0.1 that nobody listens on (bound and released). */
static uint16_t
closed_port(void)
{
	uint16_t port;
	int fd = listener(&port);

	close(fd);
	return port;
}

static void
target(struct race_target *t, uint16_t port)
{
	t->host = "mx.example.org";
	ck_assert_int_eq(netaddr_parse(&t->addr, "127.0.0.1", port), 0);
}

static void
rrun_go(struct rrun *rr, const struct race_target *t, size_t n, unsigned delay_ms,
    const struct netaddr *src4)
{
	struct race_params p;

	memset(&p, 0, sizeof(p));
	p.attempt_delay_ms = delay_ms;
	p.connect_timeout_ms = 5000;
	p.source4 = src4;
	memset(rr, 0, sizeof(*rr));
	rr->fd = -1;
	rr->base = event_base_new();
	rr->race = race_new(rr->base, t, n, &p, rrun_cb, rrun_fail_cb, rr);
	race_next(rr->race);
	ck_assert_int_eq(rr->ncb, 0);   /* never inside race_next */
}

static void
rrun_loop(struct rrun *rr)
{
	struct timeval tv = { 10, 0 };
	bool expired = false;
	struct event *guard = evtimer_new(rr->base, guard_cb, &expired);
	int before = rr->ncb;

	evtimer_add(guard, &tv);
	while (!expired && rr->ncb == before)
		event_base_loop(rr->base, EVLOOP_ONCE);
	event_free(guard);
	ck_assert(!expired);
}

static void
rrun_free(struct rrun *rr)
{
	race_free(rr->race);
	event_base_free(rr->base);
}

/* The peer address a listener's next accepted connection comes from; -1 if none. */
static int
accept_peer(int lfd, char *buf, size_t size)
{
	struct sockaddr_storage ss;
	struct netaddr a;
	socklen_t len = sizeof(ss);
	int fd = accept(lfd, (struct sockaddr *)&ss, &len);

	if (fd == -1)
		return -1;
	netaddr_from_sockaddr(&a, (struct sockaddr *)&ss, len);
	netaddr_ntop(&a, buf, size);
	return fd;
}

START_TEST(test_race_connect)
{
	struct race_target t[1];
	struct rrun rr;
	uint16_t port;
	int lfd = listener(&port), afd;
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);
	char peer[NETADDR_STRLEN];

	target(&t[0], port);
	rrun_go(&rr, t, 1, 250, NULL);
	rrun_loop(&rr);
	ck_assert_int_eq(rr.ev, RACE_CONNECTED);
	ck_assert_uint_eq(rr.index, 0);
	ck_assert_int_ge(rr.fd, 0);
	ck_assert_int_eq(getpeername(rr.fd, (struct sockaddr *)&sin, &len), 0);
	ck_assert_uint_eq(ntohs(sin.sin_port), port);
	ck_assert_uint_eq(rr.nfailures, 0);
	afd = accept_peer(lfd, peer, sizeof(peer));
	ck_assert_int_ge(afd, 0);
	ck_assert_str_eq(peer, "127.0.0.1");
	close(afd);
	close(rr.fd);
	close(lfd);
	rrun_free(&rr);
}
END_TEST

START_TEST(test_race_source_bind)
{
	struct race_target t[1];
	struct netaddr src;
	struct rrun rr;
	uint16_t port;
	int lfd = listener(&port), afd;
	char peer[NETADDR_STRLEN];

	/* Linux routes all of 127/8 on lo: 127.0.0.2 is a local source with no set-up. */
	ck_assert_int_eq(netaddr_parse(&src, "127.0.0.2", 0), 0);
	target(&t[0], port);
	rrun_go(&rr, t, 1, 250, &src);
	rrun_loop(&rr);
	ck_assert_int_eq(rr.ev, RACE_CONNECTED);
	afd = accept_peer(lfd, peer, sizeof(peer));
	ck_assert_int_ge(afd, 0);
	ck_assert_str_eq(peer, "127.0.0.2");
	close(afd);
	close(rr.fd);
	close(lfd);
	rrun_free(&rr);
}
END_TEST

START_TEST(test_race_refused_then_next)
{
	struct race_target t[2];
	struct rrun rr;
	uint16_t port;
	int lfd = listener(&port);
	uint64_t t0;

	target(&t[0], closed_port());
	target(&t[1], port);
	t0 = dr_monotonic_ms();
	rrun_go(&rr, t, 2, 3000, NULL);
	rrun_loop(&rr);
	/* The RST starts the next attempt at once, long before the 3 s attempt delay. */
	ck_assert_uint_lt(dr_monotonic_ms() - t0, 1000);
	ck_assert_int_eq(rr.ev, RACE_CONNECTED);
	ck_assert_uint_eq(rr.index, 1);
	ck_assert_uint_eq(rr.nfailures, 1);
	ck_assert_uint_eq(rr.failures[0].index, 0);
	ck_assert_int_eq(rr.failures[0].error, ECONNREFUSED);
	ck_assert_int_eq(rr.nfail_cb, 1);
	close(rr.fd);
	close(lfd);
	rrun_free(&rr);
}
END_TEST

START_TEST(test_race_exhausted)
{
	struct race_target t[2];
	struct rrun rr;

	target(&t[0], closed_port());
	target(&t[1], closed_port());
	rrun_go(&rr, t, 2, 3000, NULL);
	rrun_loop(&rr);
	ck_assert_int_eq(rr.ev, RACE_EXHAUSTED);
	ck_assert_int_eq(rr.fd, -1);
	ck_assert_uint_eq(rr.nfailures, 2);
	ck_assert_uint_eq(rr.failures[0].index, 0);
	ck_assert_uint_eq(rr.failures[1].index, 1);
	ck_assert_int_eq(rr.failures[1].error, ECONNREFUSED);
	ck_assert_int_eq(rr.nfail_cb, 2);
	/* Nothing left: the next round ends at once, without failures. */
	race_next(rr.race);
	rrun_loop(&rr);
	ck_assert_int_eq(rr.ev, RACE_EXHAUSTED);
	ck_assert_uint_eq(rr.nfailures, 0);
	rrun_free(&rr);
}
END_TEST

START_TEST(test_race_delay_one_winner)
{
	struct race_target t[2];
	struct rrun rr;
	uint16_t p0, p1;
	int l0 = listener(&p0), l1 = listener(&p1), afd;
	char peer[NETADDR_STRLEN];
	struct timeval tv = { 0, 300 * 1000 };

	target(&t[0], p0);
	target(&t[1], p1);
	rrun_go(&rr, t, 2, 100, NULL);
	rrun_loop(&rr);
	ck_assert_int_eq(rr.ev, RACE_CONNECTED);
	ck_assert_uint_eq(rr.index, 0);
	/* Past the attempt delay: no second attempt, no second callback. */
	event_base_loopexit(rr.base, &tv);
	event_base_dispatch(rr.base);
	ck_assert_int_eq(rr.ncb, 1);
	afd = accept_peer(l1, peer, sizeof(peer));
	ck_assert_int_eq(afd, -1);
	afd = accept_peer(l0, peer, sizeof(peer));
	ck_assert_int_ge(afd, 0);
	close(afd);

	/* Resuming tries the untried candidate; then nothing is left. */
	race_next(rr.race);
	rrun_loop(&rr);
	ck_assert_int_eq(rr.ev, RACE_CONNECTED);
	ck_assert_uint_eq(rr.index, 1);
	close(rr.fd);
	race_next(rr.race);
	rrun_loop(&rr);
	ck_assert_int_eq(rr.ev, RACE_EXHAUSTED);
	close(l0);
	close(l1);
	rrun_free(&rr);
}
END_TEST

START_TEST(test_race_zero_delay_loser_closed)
{
	struct race_target t[2];
	struct rrun rr;
	uint16_t p[2];
	int l[2], afd, i;
	char peer[NETADDR_STRLEN], c;
	struct timeval tv = { 0, 200 * 1000 };

	l[0] = listener(&p[0]);
	l[1] = listener(&p[1]);
	target(&t[0], p[0]);
	target(&t[1], p[1]);
	rrun_go(&rr, t, 2, 0, NULL);
	rrun_loop(&rr);
	ck_assert_int_eq(rr.ev, RACE_CONNECTED);
	event_base_loopexit(rr.base, &tv);
	event_base_dispatch(rr.base);
	ck_assert_int_eq(rr.ncb, 1);
	for (i = 0; i < 2; i++) {
		afd = accept_peer(l[i], peer, sizeof(peer));
		if ((size_t)i == rr.index) {
			/* The winner's connection is open: reading finds nothing yet. */
			ck_assert_int_ge(afd, 0);
			ck_assert_int_eq(recv(afd, &c, 1, MSG_DONTWAIT), -1);
			ck_assert_int_eq(errno, EAGAIN);
		} else if (afd != -1) {
			/* The loser, if it got that far, was closed. */
			ck_assert_int_eq(recv(afd, &c, 1, MSG_DONTWAIT), 0);
		}
		if (afd != -1)
			close(afd);
		close(l[i]);
	}
	close(rr.fd);
	rrun_free(&rr);
}
END_TEST

/*
 * A loopback listener whose accept queue is full: Linux drops further SYNs
 * (tcp_conn_request, "listen overflow"), so a connect to it stays in progress until the
 * SYN is retransmitted a second later. fillers receives the connections that fill it
 * (the first is queued, the second already waits for its retransmission).
 * Returns -1 when the queue did not fill as expected (then the caller skips).
 */
static int
full_listener(uint16_t *port, int fillers[2])
{
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);
	struct pollfd pfd;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), probe, i;

	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	ck_assert_int_eq(listen(fd, 0), 0);
	ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
	*port = ntohs(sin.sin_port);
	for (i = 0; i < 2; i++) {
		fillers[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		(void)connect(fillers[i], (struct sockaddr *)&sin, sizeof(sin));
	}
	usleep(50 * 1000);
	/* The probe must still be connecting after 200 ms, or the queue is not full. */
	probe = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	(void)connect(probe, (struct sockaddr *)&sin, sizeof(sin));
	pfd.fd = probe;
	pfd.events = POLLOUT;
	i = poll(&pfd, 1, 200);
	close(probe);
	if (i != 0) {
		close(fd);
		close(fillers[0]);
		close(fillers[1]);
		return -1;
	}
	return fd;
}

START_TEST(test_race_abandoned_loser)
{
	struct race_target t[2];
	struct rrun rr;
	uint16_t pfull, popen;
	int fillers[2], lfull = full_listener(&pfull, fillers), lopen, afd, i;
	uint64_t t0, ms;

	if (lfull == -1) {
		fprintf(stderr, "test_race_abandoned_loser: accept queue did not fill; skipped\n");
		return;
	}
	lopen = listener(&popen);
	target(&t[0], pfull);
	target(&t[1], popen);
	t0 = dr_monotonic_ms();
	rrun_go(&rr, t, 2, 150, NULL);
	rrun_loop(&rr);
	ms = dr_monotonic_ms() - t0;
	/* The second attempt started after the attempt delay and won; the first was closed. */
	ck_assert_int_eq(rr.ev, RACE_CONNECTED);
	ck_assert_uint_eq(rr.index, 1);
	ck_assert_uint_ge(ms, 140);
	ck_assert_uint_lt(ms, 900);
	ck_assert_uint_eq(rr.nfailures, 0);
	ck_assert_int_eq(rr.nfail_cb, 0);
	close(rr.fd);
	/*
	 * The abandoned attempt counts as untried: resuming tries it again. Empty the
	 * accept queue first so that this time it answers.
	 */
	for (i = 0; (afd = accept(lfull, NULL, NULL)) != -1; i++)
		close(afd);
	ck_assert_int_ge(i, 1);
	race_next(rr.race);
	rrun_loop(&rr);
	ck_assert_int_eq(rr.ev, RACE_CONNECTED);
	ck_assert_uint_eq(rr.index, 0);
	close(rr.fd);
	close(fillers[0]);
	close(fillers[1]);
	close(lfull);
	close(lopen);
	rrun_free(&rr);
}
END_TEST

START_TEST(test_race_connect_timeout)
{
	struct race_target t[1];
	struct race_params p;
	struct rrun rr;
	uint16_t pfull;
	int fillers[2], lfull = full_listener(&pfull, fillers);
	uint64_t t0, ms;

	if (lfull == -1) {
		fprintf(stderr, "test_race_connect_timeout: accept queue did not fill; skipped\n");
		return;
	}
	target(&t[0], pfull);
	memset(&p, 0, sizeof(p));
	p.attempt_delay_ms = 50;
	p.connect_timeout_ms = 300;
	memset(&rr, 0, sizeof(rr));
	rr.base = event_base_new();
	rr.race = race_new(rr.base, t, 1, &p, rrun_cb, rrun_fail_cb, &rr);
	t0 = dr_monotonic_ms();
	race_next(rr.race);
	rrun_loop(&rr);
	ms = dr_monotonic_ms() - t0;
	ck_assert_int_eq(rr.ev, RACE_EXHAUSTED);
	ck_assert_uint_eq(rr.nfailures, 1);
	ck_assert_int_eq(rr.failures[0].error, ETIMEDOUT);
	ck_assert_uint_ge(ms, 290);
	ck_assert_uint_lt(ms, 900);
	close(fillers[0]);
	close(fillers[1]);
	close(lfull);
	rrun_free(&rr);
}
END_TEST

START_TEST(test_race_free_in_callback)
{
	struct race_target t[2];
	struct rrun rr;

	target(&t[0], closed_port());
	target(&t[1], closed_port());
	rrun_go(&rr, t, 2, 3000, NULL);
	rr.free_in_cb = true;
	rrun_loop(&rr);
	ck_assert_int_eq(rr.ev, RACE_EXHAUSTED);
	ck_assert_ptr_null(rr.race);
	rrun_free(&rr);
}
END_TEST

static Suite *
client_suite(void)
{
	Suite *s = suite_create("smtp_client");
	TCase *tc = tcase_create("client");
	TCase *tr = tcase_create("race");

	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_pipelined);
	tcase_add_test(tc, test_lockstep);
	tcase_add_test(tc, test_null_sender_no_final_crlf);
	tcase_add_test(tc, test_rcpt_partly_rejected);
	tcase_add_test(tc, test_all_rejected_pipelined);
	tcase_add_test(tc, test_all_rejected_pipelined_354);
	tcase_add_test(tc, test_all_rejected_lockstep);
	tcase_add_test(tc, test_greeting_554);
	tcase_add_test(tc, test_ehlo_502_helo);
	tcase_add_test(tc, test_ehlo_421);
	tcase_add_test(tc, test_mail_rejected_pipelined);
	tcase_add_test(tc, test_mail_rejected_lockstep);
	tcase_add_test(tc, test_data_refused);
	tcase_add_test(tc, test_final_451);
	tcase_add_test(tc, test_big_body_exact);
	tcase_add_test(tc, test_drop_mid_body);
	tcase_add_test(tc, test_drop_after_dot);
	tcase_add_test(tc, test_greeting_timeout);
	tcase_add_test(tc, test_final_reply_timeout);
	tcase_add_test(tc, test_multiline);
	tcase_add_test(tc, test_long_reply_line);
	tcase_add_test(tc, test_smtputf8_not_offered);
	tcase_add_test(tc, test_smtputf8_offered);
	tcase_add_test(tc, test_size_exceeded);
	tcase_add_test(tc, test_free_in_callback);
	tcase_add_loop_test(tc, test_reuse, 0, 3);
	tcase_add_test(tc, test_stage_names);
	suite_add_tcase(s, tc);

	tcase_set_timeout(tr, 30);
	tcase_add_test(tr, test_race_connect);
	tcase_add_test(tr, test_race_source_bind);
	tcase_add_test(tr, test_race_refused_then_next);
	tcase_add_test(tr, test_race_exhausted);
	tcase_add_test(tr, test_race_delay_one_winner);
	tcase_add_test(tr, test_race_zero_delay_loser_closed);
	tcase_add_test(tr, test_race_abandoned_loser);
	tcase_add_test(tr, test_race_connect_timeout);
	tcase_add_test(tr, test_race_free_in_callback);
	suite_add_tcase(s, tr);
	return s;
}

int
main(void)
{
	SRunner *sr;
	int failed;

	/* The daemon ignores SIGPIPE too: a write to a dropped peer must be an error. */
	signal(SIGPIPE, SIG_IGN);
	log_init("check_client", LOG_TARGET_STDERR,
	    getenv("DR_TEST_DEBUG") != NULL ? LOG_LEVEL_DEBUG : LOG_LEVEL_WARN);
	sr = srunner_create(client_suite());
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
