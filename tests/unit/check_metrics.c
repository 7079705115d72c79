/*
 * Unit tests for metrics.c: the exposition text (every sample line, HELP/TYPE before
 * samples, counters named *_total), the metrics_listen configuration key, and the HTTP
 * listener answering a real request over loopback (libevent's own HTTP client).
 */
#include "config.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>

#include "conf.h"
#include "log.h"
#include "metrics.h"
#include "util.h"

static struct metrics_sample
sample(void)
{
	struct metrics_sample s;
	memset(&s, 0, sizeof(s));
	s.stats.received = 7;
	s.stats.delivered[STATS_IPV4] = 3;
	s.stats.delivered[STATS_IPV6] = 2;
	s.stats.deferred[STATS_NONE] = 4;
	s.stats.deferred[STATS_IPV6] = 5;
	s.stats.bounced[STATS_IPV4] = 1;
	s.stats.connect_failed[STATS_IPV6] = 6;
	s.stats.connect_timeout[STATS_IPV4] = 8;
	s.stats.family_rejected[STATS_IPV6] = 9;
	s.stats.tls_failed[STATS_IPV4] = 14;
	s.stats.fallback_tcp = 10;
	s.stats.fallback_smtp = 11;
	s.stats.bounces_sent = 12;
	s.queue.messages = 13;
	s.queue.held = 2;
	s.queue.active = 3;
	s.queue.oldest_arrival = 1700000000;
	s.connections = 4;
	return s;
}

/* The text for s as a NUL-terminated string; caller frees. */
static char *
render(const struct metrics_sample *s, time_t now)
{
	struct evbuffer *b = evbuffer_new();
	metrics_format(s, now, b);
	size_t n = evbuffer_get_length(b);
	char *text = xmalloc(n + 1);
	evbuffer_remove(b, text, n);
	text[n] = '\0';
	evbuffer_free(b);
	return text;
}

/* True when text has line as one whole line. */
static bool
has_line(const char *text, const char *line)
{
	size_t n = strlen(line);
	for (const char *p = text; (p = strstr(p, line)) != NULL; p++)
		if ((p == text || p[-1] == '\n') && p[n] == '\n')
			return true;
	return false;
}

START_TEST(test_values)
{
	struct metrics_sample s = sample();
	char *t = render(&s, 1700000042);
	static const char *const want[] = {
		"dualrelay_messages_received_total 7",
		"dualrelay_tls_failures_total{family=\"ipv4\"} 14",
		"dualrelay_tls_failures_total{family=\"ipv6\"} 0",
		"dualrelay_recipients_total{family=\"ipv4\",outcome=\"sent\"} 3",
		"dualrelay_recipients_total{family=\"ipv6\",outcome=\"sent\"} 2",
		"dualrelay_recipients_total{family=\"none\",outcome=\"sent\"} 0",
		"dualrelay_recipients_total{family=\"none\",outcome=\"deferred\"} 4",
		"dualrelay_recipients_total{family=\"ipv6\",outcome=\"deferred\"} 5",
		"dualrelay_recipients_total{family=\"ipv4\",outcome=\"bounced\"} 1",
		"dualrelay_recipients_total{family=\"ipv6\",outcome=\"bounced\"} 0",
		"dualrelay_connect_failures_total{family=\"ipv6\",reason=\"refused\"} 6",
		"dualrelay_connect_failures_total{family=\"ipv4\",reason=\"refused\"} 0",
		"dualrelay_connect_failures_total{family=\"ipv4\",reason=\"timeout\"} 8",
		"dualrelay_family_rejections_total{family=\"ipv6\"} 9",
		"dualrelay_family_rejections_total{family=\"ipv4\"} 0",
		"dualrelay_fallbacks_total{level=\"tcp\"} 10",
		"dualrelay_fallbacks_total{level=\"smtp\"} 11",
		"dualrelay_bounces_sent_total 12",
		"dualrelay_queue_messages 13",
		"dualrelay_queue_held_messages 2",
		"dualrelay_queue_oldest_age_seconds 42",
		"dualrelay_connections 4",
		"dualrelay_deliveries_active 3",
		"# TYPE dualrelay_recipients_total counter",
		"# TYPE dualrelay_queue_messages gauge",
	};
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
		ck_assert_msg(has_line(t, want[i]), "missing line \"%s\" in:\n%s", want[i], t);
	free(t);
}
END_TEST

START_TEST(test_empty_queue_age_zero)
{
	struct metrics_sample s;
	memset(&s, 0, sizeof(s));
	char *t = render(&s, 1700000042);
	ck_assert(has_line(t, "dualrelay_queue_oldest_age_seconds 0"));
	ck_assert(has_line(t, "dualrelay_messages_received_total 0"));
	free(t);
	/* A clock that went backwards never gives a negative age. */
	s.queue.oldest_arrival = 1700000100;
	t = render(&s, 1700000042);
	ck_assert(has_line(t, "dualrelay_queue_oldest_age_seconds 0"));
	free(t);
}
END_TEST

/*
 * The format's rules, line by line: every sample's metric was declared by "# TYPE" just
 * before its group (HELP first), counters end in _total, each family appears once, and
 * values are plain non-negative integers.
 */
START_TEST(test_format_rules)
{
	struct metrics_sample s = sample();
	char *t = render(&s, 1700000042), *save = NULL;
	char help[128] = "", type[128] = "", kind[16] = "", seen[4096] = " ";
	int samples = 0;

	ck_assert(t[strlen(t) - 1] == '\n');
	for (char *line = strtok_r(t, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char name[128];
		if (sscanf(line, "# HELP %127s", name) == 1) {
			ck_assert_msg(strstr(seen, name) == NULL, "family %s twice", name);
			ck_assert(strlen(seen) + strlen(name) + 2 < sizeof(seen));
			strcat(seen, name);
			strcat(seen, " ");
			dr_strlcpy(help, name, sizeof(help));
			continue;
		}
		if (sscanf(line, "# TYPE %127s %15s", name, kind) == 2) {
			ck_assert_str_eq(name, help);
			ck_assert(strcmp(kind, "counter") == 0 || strcmp(kind, "gauge") == 0);
			size_t n = strlen(name);
			bool total = n > 6 && strcmp(name + n - 6, "_total") == 0;
			ck_assert_msg(total == (strcmp(kind, "counter") == 0), "%s %s", name, kind);
			dr_strlcpy(type, name, sizeof(type));
			continue;
		}
		ck_assert_msg(line[0] != '#', "stray comment: %s", line);
		size_t n = strcspn(line, "{ ");
		ck_assert_msg(n == strlen(type) && strncmp(line, type, n) == 0,
		    "sample %s outside its family %s", line, type);
		const char *value = strrchr(line, ' ');
		ck_assert(value != NULL);
		ck_assert_msg(strspn(value + 1, "0123456789") == strlen(value + 1) &&
		    value[1] != '\0', "value of %s", line);
		samples++;
	}
	/* 1 + 9 + 6 + 3 (tls) + 3 + 2 + 1 + 1 + 1 + 1 + 1 + 1 */
	ck_assert_int_eq(samples, 30);
	free(t);
}
END_TEST

START_TEST(test_conf_key)
{
	static const struct {
		const char *value;
		bool ok;
		int family;
		uint16_t port;
	} cases[] = {
		{ "127.0.0.1:9125", true, AF_INET, 9125 },
		{ "[::1]:9200", true, AF_INET6, 9200 },
		{ "127.0.0.1", false, 0, 0 },
		{ "::1", false, 0, 0 },
		{ "localhost:9125", false, 0, 0 },
		{ "127.0.0.1:0", false, 0, 0 },
		{ "127.0.0.1:70000", false, 0, 0 },
	};
	char *errors = NULL;
	struct conf *c = conf_load_string("hostname = \"relay.test\";\n", "t.conf", "/",
	    false, &errors);
	ck_assert_msg(c != NULL, "%s", errors ? errors : "");
	ck_assert(!c->has_metrics_listen);
	conf_free(c);

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *text = xasprintf("hostname = \"relay.test\";\n\nmetrics_listen = \"%s\";\n",
		    cases[i].value);
		errors = NULL;
		c = conf_load_string(text, "t.conf", "/", false, &errors);
		free(text);
		if (cases[i].ok) {
			ck_assert_msg(c != NULL, "%s: %s", cases[i].value, errors ? errors : "");
			ck_assert(c->has_metrics_listen);
			ck_assert_int_eq(netaddr_family(&c->metrics_listen), cases[i].family);
			ck_assert_uint_eq(netaddr_port(&c->metrics_listen), cases[i].port);
			conf_free(c);
		} else {
			ck_assert_msg(c == NULL, "%s accepted", cases[i].value);
			ck_assert_ptr_nonnull(errors);
			ck_assert_msg(strstr(errors, "t.conf:3: metrics_listen:") != NULL, "%s",
			    errors);
		}
		free(errors);
	}
}
END_TEST

/* One request from libevent's HTTP client; the answer is kept for the test to check. */
struct fetch {
	struct event_base *base;
	int code;
	char type[128];
	char *body;
};

static void
on_answer(struct evhttp_request *req, void *arg)
{
	struct fetch *f = arg;
	if (req != NULL) {
		f->code = evhttp_request_get_response_code(req);
		const char *ct = evhttp_find_header(evhttp_request_get_input_headers(req),
		    "Content-Type");
		dr_strlcpy(f->type, ct ? ct : "", sizeof(f->type));
		struct evbuffer *b = evhttp_request_get_input_buffer(req);
		size_t n = evbuffer_get_length(b);
		f->body = xmalloc(n + 1);
		evbuffer_remove(b, f->body, n);
		f->body[n] = '\0';
	}
	event_base_loopbreak(f->base);
}

static void
fetch(struct event_base *base, uint16_t port, enum evhttp_cmd_type cmd, const char *uri,
    struct fetch *f)
{
	memset(f, 0, sizeof(*f));
	f->base = base;
	struct evhttp_connection *conn = evhttp_connection_base_new(base, NULL, "127.0.0.1", port);
	evhttp_connection_set_timeout(conn, 5);
	struct evhttp_request *req = evhttp_request_new(on_answer, f);
	evhttp_add_header(evhttp_request_get_output_headers(req), "Host", "127.0.0.1");
	ck_assert_int_eq(evhttp_make_request(conn, req, cmd, uri), 0);
	event_base_dispatch(base);
	evhttp_connection_free(conn);
}

START_TEST(test_http)
{
	struct event_base *base = event_base_new();
	struct stats st = { 0 };
	struct netaddr a;
	struct fetch f;

	st.received = 5;
	st.delivered[STATS_IPV6] = 4;
	ck_assert_int_eq(netaddr_parse(&a, "127.0.0.1", 0), 0);
	struct metrics_deps d = { .base = base, .stats = &st };
	struct metrics *m = metrics_new(&d, &a);
	ck_assert_ptr_nonnull(m);
	ck_assert_uint_ne(metrics_port(m), 0);

	fetch(base, metrics_port(m), EVHTTP_REQ_GET, "/metrics", &f);
	ck_assert_int_eq(f.code, 200);
	ck_assert_str_eq(f.type, "text/plain; version=0.0.4; charset=utf-8");
	ck_assert_msg(has_line(f.body, "dualrelay_messages_received_total 5"), "%s", f.body);
	ck_assert(has_line(f.body,
	    "dualrelay_recipients_total{family=\"ipv6\",outcome=\"sent\"} 4"));
	ck_assert(has_line(f.body, "dualrelay_queue_messages 0"));
	free(f.body);

	/* The counters are read at each scrape, not at start. */
	st.received = 6;
	fetch(base, metrics_port(m), EVHTTP_REQ_GET, "/metrics?x=1", &f);
	ck_assert_int_eq(f.code, 200);
	ck_assert(has_line(f.body, "dualrelay_messages_received_total 6"));
	free(f.body);

	fetch(base, metrics_port(m), EVHTTP_REQ_GET, "/", &f);
	ck_assert_int_eq(f.code, 404);
	free(f.body);
	fetch(base, metrics_port(m), EVHTTP_REQ_POST, "/metrics", &f);
	ck_assert_int_ne(f.code, 200);
	ck_assert_int_ne(f.code, 0);
	free(f.body);

	metrics_free(m);
	event_base_free(base);
}
END_TEST

START_TEST(test_bind_failure)
{
	struct event_base *base = event_base_new();
	struct stats st = { 0 };
	struct netaddr a;
	ck_assert_int_eq(netaddr_parse(&a, "127.0.0.1", 0), 0);
	struct metrics_deps d = { .base = base, .stats = &st };
	struct metrics *m1 = metrics_new(&d, &a);
	ck_assert_ptr_nonnull(m1);
	/* The same port again: in use. */
	netaddr_set_port(&a, metrics_port(m1));
	ck_assert_ptr_null(metrics_new(&d, &a));
	metrics_free(m1);
	metrics_free(NULL);
	event_base_free(base);
}
END_TEST

static Suite *
metrics_suite(void)
{
	Suite *s = suite_create("metrics");
	TCase *tc = tcase_create("format");
	tcase_add_test(tc, test_values);
	tcase_add_test(tc, test_empty_queue_age_zero);
	tcase_add_test(tc, test_format_rules);
	tcase_add_test(tc, test_conf_key);
	suite_add_tcase(s, tc);
	tc = tcase_create("http");
	tcase_add_test(tc, test_http);
	tcase_add_test(tc, test_bind_failure);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	log_init("check_metrics", LOG_TARGET_STDERR, LOG_LEVEL_WARN);
	SRunner *sr = srunner_create(metrics_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
