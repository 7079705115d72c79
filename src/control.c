/*
 * control: dualrelayctl's commands inside the daemon (see control.h). Each connection
 * is a small object: read one line, answer, close once the answer is written. "route"
 * is the one asynchronous command (it resolves DNS); its connection waits for the
 * explanation and drops it if the client goes away first.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "conf.h"
#include "control.h"
#include "explain.h"
#include "health.h"
#include "log.h"
#include "queue.h"
#include "smtp_server.h"
#include "spool.h"
#include "stats.h"
#include "util.h"

#define CONTROL_LINE_MAX 1024
#define CONTROL_HEADERS_MAX 65536

struct control {
	struct control_deps deps;
	char *path;                  /* owned; unlinked at free */
	struct evconnlistener *listener;
	TAILQ_HEAD(, control_conn) conns;
};

struct control_conn {
	TAILQ_ENTRY(control_conn) entry;
	struct control *c;
	struct bufferevent *bev;
	struct explain *explain;     /* "route" in progress */
	FILE *mem;                   /* its output */
	char *membuf;
	size_t memlen;
};

/* ---- Connections ---- */

static void
conn_free(struct control_conn *cc)
{
	explain_free(cc->explain);
	if (cc->mem)
		fclose(cc->mem);
	free(cc->membuf);
	bufferevent_free(cc->bev);
	TAILQ_REMOVE(&cc->c->conns, cc, entry);
	free(cc);
}

static void
on_conn_written(struct bufferevent *bev, void *arg)
{
	if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
		conn_free(arg);
}

/* Queues the answer; the connection closes when it has been written. */
static void
conn_answer(struct control_conn *cc, struct evbuffer *body, const char *error)
{
	struct evbuffer *out = bufferevent_get_output(cc->bev);
	if (error)
		evbuffer_add_printf(out, "error: %s\n", error);
	else
		evbuffer_add_printf(out, "ok\n");
	if (body)
		evbuffer_add_buffer(out, body);
	bufferevent_disable(cc->bev, EV_READ);
	bufferevent_setcb(cc->bev, NULL, on_conn_written, NULL, cc);
	bufferevent_enable(cc->bev, EV_WRITE);
}

/* ---- Formatting ---- */

static void
json_string(struct evbuffer *b, const char *s)
{
	evbuffer_add(b, "\"", 1);
	for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
		if (*p == '"' || *p == '\\')
			evbuffer_add_printf(b, "\\%c", *p);
		else if (*p < 0x20)
			evbuffer_add_printf(b, "\\u%04x", *p);
		else
			evbuffer_add(b, p, 1);
	}
	evbuffer_add(b, "\"", 1);
}

static void
time_text(time_t t, char *buf, size_t size)
{
	struct tm tm;
	localtime_r(&t, &tm);
	strftime(buf, size, "%Y-%m-%d %H:%M:%S", &tm);
}

struct listing {
	struct evbuffer *b;
	bool json;
	size_t count;
	size_t bytes;
};

static void
list_text(const struct envelope *e, bool active, struct listing *l)
{
	char when[32];
	time_text(e->arrival, when, sizeof(when));
	evbuffer_add_printf(l->b, "%-16s %8zu  %s  <%s>%s%s\n", e->id, e->content_size, when,
	    e->sender, e->held ? "  (held)" : "", active ? "  (delivering)" : "");
	for (size_t i = 0; i < e->nrcpts; i++) {
		const struct envelope_rcpt *r = &e->rcpts[i];
		evbuffer_add_printf(l->b, "    <%s> %s, attempts %u", r->addr, rcpt_state_name(r->state),
		    r->attempts);
		if (r->state == RCPT_DEFERRED) {
			time_text(r->next_attempt, when, sizeof(when));
			evbuffer_add_printf(l->b, ", next try %s", when);
		}
		if (r->reason && r->reason[0])
			evbuffer_add_printf(l->b, "\n        %s %s", r->dsn, r->reason);
		evbuffer_add_printf(l->b, "\n");
	}
}

static void
list_json(const struct envelope *e, bool active, struct listing *l)
{
	evbuffer_add_printf(l->b, "%s{\"id\":", l->count ? "," : "");
	json_string(l->b, e->id);
	evbuffer_add_printf(l->b, ",\"arrival\":%lld,\"age\":%lld,\"size\":%zu,\"sender\":",
	    (long long)e->arrival, (long long)(time(NULL) - e->arrival), e->content_size);
	json_string(l->b, e->sender);
	evbuffer_add_printf(l->b, ",\"held\":%s,\"active\":%s,\"recipients\":[",
	    e->held ? "true" : "false", active ? "true" : "false");
	for (size_t i = 0; i < e->nrcpts; i++) {
		const struct envelope_rcpt *r = &e->rcpts[i];
		evbuffer_add_printf(l->b, "%s{\"address\":", i ? "," : "");
		json_string(l->b, r->addr);
		evbuffer_add_printf(l->b, ",\"state\":\"%s\",\"attempts\":%u,\"next_attempt\":%lld,"
		    "\"dsn\":", rcpt_state_name(r->state), r->attempts,
		    r->state == RCPT_DEFERRED ? (long long)r->next_attempt : 0LL);
		json_string(l->b, r->dsn);
		evbuffer_add_printf(l->b, ",\"last_error\":");
		json_string(l->b, r->reason);
		evbuffer_add_printf(l->b, "}");
	}
	evbuffer_add_printf(l->b, "]}");
}

static void
on_list(const struct envelope *e, bool active, void *arg)
{
	struct listing *l = arg;
	if (l->json)
		list_json(e, active, l);
	else
		list_text(e, active, l);
	l->count++;
	l->bytes += e->content_size;
}

/* ---- Commands ---- */

static void
cmd_queue(struct control_conn *cc, char **argv, int argc)
{
	struct listing l = { evbuffer_new(), argc > 1 && strcmp(argv[1], "--json") == 0, 0, 0 };
	if (l.json)
		evbuffer_add_printf(l.b, "[");
	queue_foreach(cc->c->deps.queue, on_list, &l);
	if (l.json)
		evbuffer_add_printf(l.b, "]\n");
	else if (l.count == 0)
		evbuffer_add_printf(l.b, "queue is empty\n");
	else
		evbuffer_add_printf(l.b, "-- %zu message%s, %zu bytes\n", l.count,
		    l.count == 1 ? "" : "s", l.bytes);
	conn_answer(cc, l.b, NULL);
	evbuffer_free(l.b);
}

/* The header block of a queued message, for "show". */
static void
add_headers(struct control_conn *cc, const struct envelope *e, struct evbuffer *b)
{
	int fd = spool_open_content(cc->c->deps.spool, e);
	if (fd < 0) {
		evbuffer_add_printf(b, "(cannot read the queue file: %s)\n", strerror(errno));
		return;
	}
	char *buf = xmalloc(CONTROL_HEADERS_MAX + 1);
	size_t len = 0;
	ssize_t n;
	while (len < CONTROL_HEADERS_MAX &&
	    (n = read(fd, buf + len, CONTROL_HEADERS_MAX - len)) > 0)
		len += (size_t)n;
	close(fd);
	buf[len] = '\0';
	char *end = strstr(buf, "\r\n\r\n");
	if (end)
		end[2] = '\0';
	for (char *p = buf; *p; p++)
		if (*p != '\r')
			evbuffer_add(b, p, 1);
	free(buf);
}

static void
cmd_show(struct control_conn *cc, char **argv, int argc)
{
	bool active = false;
	const struct envelope *e = argc > 1 ? queue_find(cc->c->deps.queue, argv[1], &active) : NULL;
	if (e == NULL) {
		conn_answer(cc, NULL, argc > 1 ? "no such message in the queue" : "usage: show ID");
		return;
	}
	struct evbuffer *b = evbuffer_new();
	struct listing l = { b, false, 0, 0 };
	evbuffer_add_printf(b, "client: [%s] helo %s\nbody: %s%s\n", e->client_addr, e->helo,
	    e->body == SMTP_BODY_8BITMIME ? "8BITMIME" : "7BIT", e->smtputf8 ? ", SMTPUTF8" : "");
	on_list(e, active, &l);
	evbuffer_add_printf(b, "headers:\n");
	add_headers(cc, e, b);
	conn_answer(cc, b, NULL);
	evbuffer_free(b);
}

static void
cmd_flush(struct control_conn *cc, char **argv, int argc)
{
	size_t n = queue_flush(cc->c->deps.queue, argc > 1 ? argv[1] : NULL);
	struct evbuffer *b = evbuffer_new();
	evbuffer_add_printf(b, "%zu message%s scheduled for delivery now\n", n, n == 1 ? "" : "s");
	conn_answer(cc, b, NULL);
	evbuffer_free(b);
}

static void
cmd_by_id(struct control_conn *cc, char **argv, int argc, const char *what)
{
	if (argc < 2) {
		char *u = xasprintf("usage: %s ID", what);
		conn_answer(cc, NULL, u);
		free(u);
		return;
	}
	int rc;
	if (strcmp(what, "delete") == 0)
		rc = queue_delete(cc->c->deps.queue, argv[1]);
	else
		rc = queue_hold(cc->c->deps.queue, argv[1], strcmp(what, "hold") == 0);
	conn_answer(cc, NULL, rc < 0 ? "no such message in the queue" : NULL);
}

static void
cmd_stats(struct control_conn *cc)
{
	const struct stats *s = cc->c->deps.stats;
	struct queue_stats qs;
	struct evbuffer *b = evbuffer_new();
	static const char *const fam[] = { "none", "ipv4", "ipv6" };

	queue_get_stats(cc->c->deps.queue, &qs);
	evbuffer_add_printf(b, "uptime_s %.0f\nreceived %lu\n", dr_now() - cc->c->deps.started,
	    s->received);
	for (int f = 0; f < STATS_NFAMILIES; f++)
		evbuffer_add_printf(b, "%s delivered %lu deferred %lu bounced %lu connect_failed %lu "
		    "connect_timeout %lu family_rejected %lu tls_failed %lu\n", fam[f], s->delivered[f],
		    s->deferred[f], s->bounced[f], s->connect_failed[f], s->connect_timeout[f],
		    s->family_rejected[f], s->tls_failed[f]);
	evbuffer_add_printf(b, "fallback_tcp %lu\nfallback_smtp %lu\nbounces_sent %lu\n",
	    s->fallback_tcp, s->fallback_smtp, s->bounces_sent);
	evbuffer_add_printf(b, "connections %u\nqueue_messages %zu\nqueue_held %zu\n"
	    "deliveries_active %zu\noldest_age_s %lld\n",
	    smtp_server_session_count(cc->c->deps.server), qs.messages, qs.held, qs.active,
	    qs.oldest_arrival ? (long long)(time(NULL) - qs.oldest_arrival) : 0LL);
	conn_answer(cc, b, NULL);
	evbuffer_free(b);
}

static void
on_health(const struct health_view *v, void *arg)
{
	struct evbuffer *b = arg;
	char until[32] = "-";
	if (v->bad)
		time_text(v->until, until, sizeof(until));
	evbuffer_add_printf(b, "%-11s %-30s %s %-4s until %s  failures %u  (%s)\n", v->scope,
	    v->name, netaddr_family_name(v->family), v->bad ? "bad" : "good", until, v->failures,
	    v->why);
}

static void
cmd_health(struct control_conn *cc)
{
	struct evbuffer *b = evbuffer_new();
	if (cc->c->deps.health)
		health_foreach(cc->c->deps.health, time(NULL), on_health, b);
	if (evbuffer_get_length(b) == 0)
		evbuffer_add_printf(b, "no failures remembered\n");
	conn_answer(cc, b, NULL);
	evbuffer_free(b);
}

static void
on_explained(struct explain *e, void *arg)
{
	struct control_conn *cc = arg;
	(void)e;
	fclose(cc->mem);
	cc->mem = NULL;
	struct evbuffer *b = evbuffer_new();
	evbuffer_add(b, cc->membuf, cc->memlen);
	conn_answer(cc, b, NULL);
	evbuffer_free(b);
}

static void
cmd_route(struct control_conn *cc, char **argv, int argc)
{
	if (argc < 2) {
		conn_answer(cc, NULL, "usage: route DOMAIN");
		return;
	}
	cc->mem = open_memstream(&cc->membuf, &cc->memlen);
	if (cc->mem == NULL) {
		conn_answer(cc, NULL, strerror(errno));
		return;
	}
	bufferevent_disable(cc->bev, EV_READ);
	cc->explain = explain_route(cc->c->deps.base, cc->c->deps.dns, cc->c->deps.health,
	    *cc->c->deps.conf, argv[1], cc->mem, on_explained, cc);
}

static void
cmd_reload(struct control_conn *cc)
{
	char *errors = NULL;
	if (cc->c->deps.reload(cc->c->deps.reload_arg, &errors) == 0) {
		conn_answer(cc, NULL, NULL);
	} else {
		struct evbuffer *b = evbuffer_new();
		if (errors)
			evbuffer_add(b, errors, strlen(errors));
		conn_answer(cc, b, "configuration has errors; the running one is kept");
		evbuffer_free(b);
	}
	free(errors);
}

static void
run_command(struct control_conn *cc, char *line)
{
	char *argv[8];
	int argc = 0;
	char *save = NULL;
	for (char *tok = strtok_r(line, " \t", &save); tok && argc < 8;
	    tok = strtok_r(NULL, " \t", &save))
		argv[argc++] = tok;
	if (argc == 0) {
		conn_answer(cc, NULL, "empty command");
		return;
	}
	log_debug("control: %s", argv[0]);
	if (strcmp(argv[0], "queue") == 0)
		cmd_queue(cc, argv, argc);
	else if (strcmp(argv[0], "show") == 0)
		cmd_show(cc, argv, argc);
	else if (strcmp(argv[0], "flush") == 0)
		cmd_flush(cc, argv, argc);
	else if (strcmp(argv[0], "delete") == 0 || strcmp(argv[0], "hold") == 0 ||
	    strcmp(argv[0], "release") == 0)
		cmd_by_id(cc, argv, argc, argv[0]);
	else if (strcmp(argv[0], "stats") == 0)
		cmd_stats(cc);
	else if (strcmp(argv[0], "health") == 0)
		cmd_health(cc);
	else if (strcmp(argv[0], "route") == 0)
		cmd_route(cc, argv, argc);
	else if (strcmp(argv[0], "reload") == 0)
		cmd_reload(cc);
	else
		conn_answer(cc, NULL, "unknown command");
}

static void
on_conn_read(struct bufferevent *bev, void *arg)
{
	struct control_conn *cc = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	size_t len;
	char *line = evbuffer_readln(in, &len, EVBUFFER_EOL_CRLF);
	if (line == NULL) {
		if (evbuffer_get_length(in) > CONTROL_LINE_MAX)
			conn_answer(cc, NULL, "command too long");
		return;
	}
	run_command(cc, line);
	free(line);
}

static void
on_conn_event(struct bufferevent *bev, short what, void *arg)
{
	(void)bev;
	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT))
		conn_free(arg);
}

/* Only root and the daemon's own user may drive the daemon. */
static bool
peer_allowed(int fd)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
		return false;
	if (cred.uid == 0 || cred.uid == geteuid())
		return true;
	log_warn("control: refused a connection from uid %u", (unsigned)cred.uid);
	return false;
}

static void
on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen,
    void *arg)
{
	struct control *c = arg;
	(void)l;
	(void)sa;
	(void)salen;
	if (!peer_allowed(fd)) {
		close(fd);
		return;
	}
	struct control_conn *cc = xcalloc(1, sizeof(*cc));
	cc->c = c;
	cc->bev = bufferevent_socket_new(c->deps.base, fd, BEV_OPT_CLOSE_ON_FREE);
	struct timeval tv = { 30, 0 };
	bufferevent_set_timeouts(cc->bev, &tv, &tv);
	bufferevent_setcb(cc->bev, on_conn_read, NULL, on_conn_event, cc);
	bufferevent_enable(cc->bev, EV_READ);
	TAILQ_INSERT_TAIL(&c->conns, cc, entry);
}

struct control *
control_new(const struct control_deps *deps, const char *path)
{
	struct sockaddr_un sun;
	if (strlen(path) >= sizeof(sun.sun_path)) {
		log_error("control socket path too long: %s", path);
		return NULL;
	}
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	dr_strlcpy(sun.sun_path, path, sizeof(sun.sun_path));
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		log_error("control socket: %s", strerror(errno));
		return NULL;
	}
	unlink(path); /* a stale socket from a previous run */
	mode_t old = umask(0177);
	int rc = bind(fd, (struct sockaddr *)&sun, sizeof(sun));
	umask(old);
	if (rc < 0 || listen(fd, 16) < 0) {
		log_error("control socket %s: %s", path, strerror(errno));
		close(fd);
		return NULL;
	}
	struct control *c = xcalloc(1, sizeof(*c));
	c->deps = *deps;
	c->path = xstrdup(path);
	TAILQ_INIT(&c->conns);
	c->listener = evconnlistener_new(deps->base, on_accept, c, LEV_OPT_CLOSE_ON_FREE, -1, fd);
	log_info("control socket %s", path);
	return c;
}

void
control_free(struct control *c)
{
	if (c == NULL)
		return;
	struct control_conn *cc;
	while ((cc = TAILQ_FIRST(&c->conns)) != NULL)
		conn_free(cc);
	evconnlistener_free(c->listener);
	unlink(c->path);
	free(c->path);
	free(c);
}
