/*
 * metrics: the Prometheus text exposition (format 0.0.4) of the daemon's counters and the
 * small evhttp listener that serves it at /metrics (metrics.h).
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>

#include "log.h"
#include "metrics.h"
#include "smtp_server.h"
#include "util.h"

/* A scrape is one short request: bound what a client may make us hold. */
#define METRICS_TIMEOUT_S     10
#define METRICS_MAX_HEADERS   8192
#define METRICS_MAX_BODY      1024
#define METRICS_CONTENT_TYPE  "text/plain; version=0.0.4; charset=utf-8"

struct metrics {
	struct metrics_deps deps;
	struct evhttp *http;       /* owns the listening socket and the connections */
	uint16_t port;             /* bound */
};

/* Label values, indexed by enum stats_family. */
static const char *const family_label[STATS_NFAMILIES] = { "none", "ipv4", "ipv6" };

/* "# HELP" and "# TYPE" lines that start every metric family. */
static void
header(struct evbuffer *out, const char *name, const char *type, const char *help)
{
	evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* One counter family with a sample per address family: name{family="..."} value. */
static void
per_family(struct evbuffer *out, const char *name, const char *help,
    const unsigned long v[STATS_NFAMILIES])
{
	header(out, name, "counter", help);
	for (int f = 0; f < STATS_NFAMILIES; f++)
		evbuffer_add_printf(out, "%s{family=\"%s\"} %lu\n", name, family_label[f], v[f]);
}

void
metrics_format(const struct metrics_sample *s, time_t now, struct evbuffer *out)
{
	const struct stats *st = &s->stats;
	static const char *const outcome[] = { "sent", "deferred", "bounced" };
	const unsigned long *by_outcome[] = { st->delivered, st->deferred, st->bounced };
	long long age = 0;

	header(out, "dualrelay_messages_received_total", "counter",
	    "Messages accepted from clients (250 after DATA).");
	evbuffer_add_printf(out, "dualrelay_messages_received_total %lu\n", st->received);

	/* family="none": outcomes decided without a connection (DNS, known-dead host). */
	header(out, "dualrelay_recipients_total", "counter",
	    "Recipient delivery outcomes by the address family used; deferred counts attempts.");
	for (size_t i = 0; i < sizeof(outcome) / sizeof(outcome[0]); i++)
		for (int f = 0; f < STATS_NFAMILIES; f++)
			evbuffer_add_printf(out,
			    "dualrelay_recipients_total{family=\"%s\",outcome=\"%s\"} %lu\n",
			    family_label[f], outcome[i], by_outcome[i][f]);

	header(out, "dualrelay_connect_failures_total", "counter",
	    "Outbound connection attempts that failed: refused (also unreachable) or timeout.");
	for (int f = 0; f < STATS_NFAMILIES; f++) {
		evbuffer_add_printf(out,
		    "dualrelay_connect_failures_total{family=\"%s\",reason=\"refused\"} %lu\n",
		    family_label[f], st->connect_failed[f]);
		evbuffer_add_printf(out,
		    "dualrelay_connect_failures_total{family=\"%s\",reason=\"timeout\"} %lu\n",
		    family_label[f], st->connect_timeout[f]);
	}

	per_family(out, "dualrelay_tls_failures_total",
	    "Outbound STARTTLS handshakes that failed (or certificates refused by \"verify\").",
	    st->tls_failed);

	per_family(out, "dualrelay_family_rejections_total",
	    "SMTP rejections that blame the sending address (PTR, SPF, IPv6 policy).",
	    st->family_rejected);

	header(out, "dualrelay_fallbacks_total", "counter",
	    "Family fallbacks: tcp = session won by a family other than the first tried, "
	    "smtp = retry over the other family after a rejection.");
	evbuffer_add_printf(out, "dualrelay_fallbacks_total{level=\"tcp\"} %lu\n",
	    st->fallback_tcp);
	evbuffer_add_printf(out, "dualrelay_fallbacks_total{level=\"smtp\"} %lu\n",
	    st->fallback_smtp);

	header(out, "dualrelay_bounces_sent_total", "counter",
	    "Delivery status notifications queued.");
	evbuffer_add_printf(out, "dualrelay_bounces_sent_total %lu\n", st->bounces_sent);

	header(out, "dualrelay_queue_messages", "gauge", "Messages in the queue now.");
	evbuffer_add_printf(out, "dualrelay_queue_messages %zu\n", s->queue.messages);
	header(out, "dualrelay_queue_held_messages", "gauge", "Queued messages on hold now.");
	evbuffer_add_printf(out, "dualrelay_queue_held_messages %zu\n", s->queue.held);

	if (s->queue.oldest_arrival != 0 && now > s->queue.oldest_arrival)
		age = (long long)(now - s->queue.oldest_arrival);
	header(out, "dualrelay_queue_oldest_age_seconds", "gauge",
	    "Age of the oldest queued message (0 when the queue is empty).");
	evbuffer_add_printf(out, "dualrelay_queue_oldest_age_seconds %lld\n", age);

	header(out, "dualrelay_connections", "gauge", "Inbound SMTP sessions now.");
	evbuffer_add_printf(out, "dualrelay_connections %u\n", s->connections);
	header(out, "dualrelay_deliveries_active", "gauge", "Outbound deliveries running now.");
	evbuffer_add_printf(out, "dualrelay_deliveries_active %zu\n", s->queue.active);
}

/* Reads everything at once so one scrape is consistent (single-threaded loop). */
static void
take_sample(const struct metrics_deps *d, struct metrics_sample *s)
{
	memset(s, 0, sizeof(*s));
	if (d->stats != NULL)
		s->stats = *d->stats;
	if (d->queue != NULL)
		queue_get_stats(d->queue, &s->queue);
	if (d->server != NULL)
		s->connections = smtp_server_session_count(d->server);
}

static void
on_metrics(struct evhttp_request *req, void *arg)
{
	struct metrics *m = arg;
	struct metrics_sample s;
	struct evbuffer *body = evbuffer_new();

	take_sample(&m->deps, &s);
	metrics_format(&s, time(NULL), body);
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
	    METRICS_CONTENT_TYPE);
	/* evhttp leaves the body out of the answer to HEAD. */
	evhttp_send_reply(req, HTTP_OK, "OK", body);
	evbuffer_free(body);
}

static void
on_other(struct evhttp_request *req, void *arg)
{
	(void)arg;
	evhttp_send_error(req, HTTP_NOTFOUND, NULL);
}

struct metrics *
metrics_new(const struct metrics_deps *deps, const struct netaddr *addr)
{
	char host[NETADDR_STRLEN], where[NETADDR_STRLEN];
	struct metrics *m = xcalloc(1, sizeof(*m));

	m->deps = *deps;
	netaddr_ntop(addr, host, sizeof(host));
	netaddr_format_hostport(addr, where, sizeof(where));
	m->http = evhttp_new(deps->base);
	if (m->http == NULL) {
		log_error("metrics: cannot create the HTTP server");
		free(m);
		return NULL;
	}
	evhttp_set_allowed_methods(m->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD);
	evhttp_set_timeout(m->http, METRICS_TIMEOUT_S);
	evhttp_set_max_headers_size(m->http, METRICS_MAX_HEADERS);
	evhttp_set_max_body_size(m->http, METRICS_MAX_BODY);
	evhttp_set_cb(m->http, "/metrics", on_metrics, m);
	evhttp_set_gencb(m->http, on_other, m);
	errno = 0;
	struct evhttp_bound_socket *bound =
	    evhttp_bind_socket_with_handle(m->http, host, netaddr_port(addr));
	if (bound == NULL) {
		log_error("metrics: cannot listen on %s: %s", where,
		    errno != 0 ? strerror(errno) : "bind failed");
		metrics_free(m);
		return NULL;
	}
	m->port = netaddr_port(addr);
	struct sockaddr_storage ss;
	socklen_t sslen = sizeof(ss);
	if (getsockname(evhttp_bound_socket_get_fd(bound), (struct sockaddr *)&ss, &sslen) == 0) {
		struct netaddr got;
		netaddr_from_sockaddr(&got, (struct sockaddr *)&ss, sslen);
		m->port = netaddr_port(&got);
		netaddr_format_hostport(&got, where, sizeof(where));
	}
	/* The counters are not secret, but nothing authenticates a scrape either. */
	if (netaddr_classify(addr) != NETADDR_LOOPBACK)
		log_warn("metrics: %s is not a loopback address; anyone who can reach it can "
		    "read the counters", where);
	log_info("metrics: serving http://%s/metrics", where);
	return m;
}

uint16_t
metrics_port(const struct metrics *m)
{
	return m->port;
}

void
metrics_free(struct metrics *m)
{
	if (m == NULL)
		return;
	if (m->http != NULL)
		evhttp_free(m->http);
	free(m);
}
