/*
 * check_conf: unit tests for src/conf.c and src/route.c: the example configuration
 * loads cleanly, defaults, relative path resolution, every validation error with its
 * "FILE:LINE:" prefix (all errors at once), relay syntax, reference counting, and the
 * route lookup order (exact, longest ".suffix", default).
 */
#include "config.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf.h"
#include "netaddr.h"
#include "route.h"
#include "util.h"

#define EXAMPLE_CONF TEST_SRCDIR "/../etc/dualrelay.conf"

/* Loads text as "t.conf" from /srv/dr/etc; asserts success. */
static struct conf *
load_ok(const char *text)
{
	char *errs = NULL;
	struct conf *c = conf_load_string(text, "t.conf", "/srv/dr/etc", false, &errs);

	ck_assert_msg(c != NULL, "load failed: %s", errs != NULL ? errs : "(no message)");
	ck_assert_ptr_null(errs);
	return c;
}

/* Loads text expecting failure; returns the error text (caller frees). */
static char *
load_fail(const char *text)
{
	char *errs = NULL;
	struct conf *c = conf_load_string(text, "t.conf", "/srv/dr/etc", false, &errs);

	ck_assert_msg(c == NULL, "loaded: %s", text);
	ck_assert_ptr_nonnull(errs);
	return errs;
}

static size_t
count_lines(const char *s)
{
	size_t n = 0;

	for (; *s != '\0'; s++)
		n += *s == '\n';
	return n;
}

START_TEST(test_example_loads)
{
	char *errs = NULL;
	struct conf *c = conf_load(EXAMPLE_CONF, false, &errs);
	char buf[NETADDR_STRLEN];
	size_t n;

	ck_assert_msg(c != NULL, "%s", errs != NULL ? errs : "");
	ck_assert_ptr_null(errs);
	ck_assert_str_eq(c->path, EXAMPLE_CONF);
	ck_assert_str_eq(c->hostname, "relay.example.net");
	/* "../spool" from etc/: absolute, no "..", next to etc/. */
	ck_assert_int_eq(c->spool_dir[0], '/');
	ck_assert_ptr_null(strstr(c->spool_dir, "/.."));
	n = strlen(c->spool_dir);
	ck_assert(n > 6 && strcmp(c->spool_dir + n - 6, "/spool") == 0);
	ck_assert_uint_eq(c->nlisten, 2);
	ck_assert_str_eq(netaddr_format_hostport(&c->listen[0].addr, buf, sizeof(buf)),
	    "127.0.0.1:2525");
	ck_assert_str_eq(netaddr_format_hostport(&c->listen[1].addr, buf, sizeof(buf)),
	    "[::1]:2525");
	ck_assert_uint_eq(c->nrelay_networks, 2);
	ck_assert_uint_eq(c->max_message_size, 10240000);
	ck_assert_int_eq(c->log_target, LOG_TARGET_STDERR);
	ck_assert_int_eq(c->log_level, LOG_LEVEL_INFO);
	ck_assert_uint_eq(c->dns.nservers, 0);
	ck_assert_ptr_nonnull(conf_transport_find(c, "default"));
	conf_free(c);
}
END_TEST

START_TEST(test_missing_file)
{
	char *errs = NULL;

	ck_assert_ptr_null(conf_load(TEST_SRCDIR "/no-such.conf", false, &errs));
	ck_assert_ptr_nonnull(errs);
	ck_assert_ptr_nonnull(strstr(errs, "no-such.conf: cannot read: "));
	free(errs);
}
END_TEST

START_TEST(test_defaults)
{
	struct conf *c = load_ok("");
	const struct conf_transport *t;
	char buf[NETADDR_STRLEN], host[256] = "";
	struct netaddr a;

	gethostname(host, sizeof(host) - 1);
	ck_assert_str_eq(c->hostname, host[0] != '\0' ? host : "localhost");
	ck_assert_str_eq(c->spool_dir, "/var/spool/dualrelay");
	ck_assert_uint_eq(c->nlisten, 2);
	ck_assert_str_eq(netaddr_format_hostport(&c->listen[0].addr, buf, sizeof(buf)),
	    "127.0.0.1:2525");
	ck_assert_str_eq(netaddr_format_hostport(&c->listen[1].addr, buf, sizeof(buf)),
	    "[::1]:2525");
	ck_assert_uint_eq(c->nrelay_networks, 2);
	netaddr_parse(&a, "127.0.0.2", 0);
	ck_assert(netaddr_prefix_match(&c->relay_networks[0], &a));
	netaddr_parse(&a, "::1", 0);
	ck_assert(netaddr_prefix_match(&c->relay_networks[1], &a));
	ck_assert_uint_eq(c->max_message_size, 10240000);
	ck_assert_uint_eq(c->max_recipients, 1000);
	ck_assert_int_eq(c->log_target, LOG_TARGET_STDERR);
	ck_assert_int_eq(c->log_level, LOG_LEVEL_INFO);
	ck_assert_uint_eq(c->dns.timeout_ms, 2000);
	ck_assert_uint_eq(c->dns.tries, 3);
	ck_assert_uint_eq(c->queue.retry_min_s, 300);
	ck_assert_uint_eq(c->queue.retry_max_s, 4000);
	ck_assert_uint_eq(c->queue.max_lifetime_s, 432000);
	ck_assert_uint_eq(c->queue.delay_warning_s, 0);
	ck_assert_uint_eq(c->queue.max_active, 100);
	ck_assert_uint_eq(c->timeouts.command_timeout_s, 300);
	ck_assert_uint_eq(c->timeouts.data_timeout_s, 300);
	ck_assert_uint_eq(c->timeouts.smtp_timeout_s, 300);
	ck_assert_int_eq(c->prefer_family, CONF_FAMILY_ANY);
	ck_assert_int_eq(c->spool_sync, CONF_SPOOL_SYNC_AUTO);
	ck_assert_uint_eq(c->nroutes, 0);
	ck_assert_uint_eq(c->nfamily_fallback_patterns, 0);
	ck_assert_uint_eq(c->ntransports, 1);
	t = conf_transport_find(c, "default");
	ck_assert_ptr_eq(t, &c->transports[0]);
	ck_assert_int_eq(t->family, CONF_FAMILY_ANY);
	ck_assert(!t->has_source4 && !t->has_source6);
	ck_assert_ptr_null(t->helo);
	ck_assert_ptr_null(t->relay_host);
	ck_assert_uint_eq(t->port, 25);
	ck_assert_uint_eq(t->attempt_delay_ms, 250);
	ck_assert_uint_eq(t->connect_timeout_s, 30);
	ck_assert(t->family_fallback);
	ck_assert_ptr_null(conf_transport_find(c, "other"));
	conf_free(c);
}
END_TEST

START_TEST(test_full)
{
	struct conf *c = load_ok(
	    "hostname = \"mx.example.net\";\n"
	    "listen = ( { address = \"192.0.2.1\"; }, { address = \"2001:db8::1\"; port = 587; } );\n"
	    "relay_networks = [ \"198.51.100.0/24\" ];\n"
	    "max_message_size = 5000000000L;\n"
	    "log = { target = \"syslog\"; level = \"debug\"; };\n"
	    "dns = { servers = [ \"192.0.2.53\", \"[2001:db8::53]:5353\" ]; tries = 2; };\n"
	    "queue = { retry_min_s = 60; retry_max_s = 60; max_active = 7; };\n"
	    "timeouts = { smtp_timeout_s = 10; };\n"
	    "family_fallback_patterns = [ \"go away\", \"no v6\" ];\n"
	    "prefer_family = \"ipv4\"; spool_sync = \"filesystem\";\n"
	    "transports = {\n"
	    "  default = { family = \"prefer-ipv6\"; port = 2525; };\n"
	    "  v4 = { family = \"ipv4\"; source4 = \"192.0.2.10\"; helo = \"a.example.net\";\n"
	    "         helo4 = \"b.example.net\"; attempt_delay_ms = 100; connect_timeout_s = 5;\n"
	    "         family_fallback = false; };\n"
	    "  both = { source4 = \"192.0.2.10\"; source6 = \"2001:db8::10\"; helo6 = \"c.example.net\"; };\n"
	    "};\n");
	const struct conf_transport *t;
	char buf[NETADDR_STRLEN];

	ck_assert_str_eq(c->hostname, "mx.example.net");
	ck_assert_uint_eq(c->nlisten, 2);
	ck_assert_str_eq(netaddr_format_hostport(&c->listen[0].addr, buf, sizeof(buf)),
	    "192.0.2.1:25");
	ck_assert_str_eq(netaddr_format_hostport(&c->listen[1].addr, buf, sizeof(buf)),
	    "[2001:db8::1]:587");
	ck_assert_uint_eq(c->nrelay_networks, 1);
	ck_assert_uint_eq(c->max_message_size, 5000000000ULL);
	ck_assert_int_eq(c->log_target, LOG_TARGET_SYSLOG);
	ck_assert_int_eq(c->log_level, LOG_LEVEL_DEBUG);
	ck_assert_uint_eq(c->dns.nservers, 2);
	ck_assert_str_eq(c->dns.servers[1], "[2001:db8::53]:5353");
	ck_assert_uint_eq(c->dns.tries, 2);
	ck_assert_uint_eq(c->dns.timeout_ms, 2000);
	ck_assert_uint_eq(c->queue.retry_min_s, 60);
	ck_assert_uint_eq(c->queue.max_active, 7);
	ck_assert_uint_eq(c->timeouts.smtp_timeout_s, 10);
	ck_assert_uint_eq(c->timeouts.command_timeout_s, 300);
	ck_assert_uint_eq(c->nfamily_fallback_patterns, 2);
	ck_assert_str_eq(c->family_fallback_patterns[1], "no v6");
	ck_assert_int_eq(c->prefer_family, CONF_FAMILY_PREFER_IPV4);
	ck_assert_int_eq(c->spool_sync, CONF_SPOOL_SYNC_FILESYSTEM);
	ck_assert_uint_eq(c->ntransports, 3);

	t = conf_transport_find(c, "default");
	ck_assert_int_eq(t->family, CONF_FAMILY_PREFER_IPV6);
	ck_assert_uint_eq(t->port, 2525);
	t = conf_transport_find(c, "v4");
	ck_assert_str_eq(t->name, "v4");
	ck_assert_int_eq(t->family, CONF_FAMILY_IPV4);
	ck_assert(t->has_source4 && !t->has_source6);
	ck_assert_str_eq(netaddr_ntop(&t->source4, buf, sizeof(buf)), "192.0.2.10");
	ck_assert_uint_eq(netaddr_port(&t->source4), 0);
	ck_assert_str_eq(t->helo, "a.example.net");
	ck_assert_str_eq(t->helo4, "b.example.net");
	ck_assert_ptr_null(t->helo6);
	ck_assert_uint_eq(t->attempt_delay_ms, 100);
	ck_assert_uint_eq(t->connect_timeout_s, 5);
	ck_assert(!t->family_fallback);
	/* Inherits the built-in defaults, not the "default" transport's settings. */
	ck_assert_uint_eq(t->port, 25);
	t = conf_transport_find(c, "both");
	ck_assert_int_eq(t->family, CONF_FAMILY_ANY);
	ck_assert(t->has_source4 && t->has_source6);
	ck_assert_str_eq(netaddr_ntop(&t->source6, buf, sizeof(buf)), "2001:db8::10");
	ck_assert_str_eq(t->helo6, "c.example.net");
	ck_assert_uint_eq(t->line, 16);
	conf_free(c);
}
END_TEST

START_TEST(test_proxy_protocol)
{
	struct conf *c = load_ok(
	    "listen = ( { address = \"192.0.2.1\"; port = 2525; },\n"
	    "  { address = \"192.0.2.1\"; port = 2526; proxy_protocol = true; },\n"
	    "  { address = \"2001:db8::1\"; proxy_protocol = false; } );\n"
	    "trusted_proxies = [ \"203.0.113.0/24\", \"2001:db8:1::5\" ];\n");
	struct netaddr a;

	ck_assert_uint_eq(c->nlisten, 3);
	ck_assert(!c->listen[0].proxy_protocol);
	ck_assert(c->listen[1].proxy_protocol);
	ck_assert(!c->listen[2].proxy_protocol);
	ck_assert_uint_eq(c->ntrusted_proxies, 2);
	ck_assert_int_eq(netaddr_parse(&a, "203.0.113.9", 0), 0);
	ck_assert(netaddr_prefix_match(&c->trusted_proxies[0], &a));
	ck_assert_int_eq(netaddr_parse(&a, "2001:db8:1::5", 0), 0);
	ck_assert(netaddr_prefix_match(&c->trusted_proxies[1], &a));
	conf_free(c);

	/* Defaults: no listener expects a header, nobody is trusted. */
	c = load_ok("");
	for (size_t i = 0; i < c->nlisten; i++)
		ck_assert(!c->listen[i].proxy_protocol);
	ck_assert_uint_eq(c->ntrusted_proxies, 0);
	conf_free(c);
}
END_TEST

START_TEST(test_spool_dir)
{
	char *errs = NULL;
	struct conf *c;

	c = load_ok("spool_dir = \"../spool\";");
	ck_assert_str_eq(c->spool_dir, "/srv/dr/spool");
	conf_free(c);
	c = load_ok("spool_dir = \"./q//x/\";");
	ck_assert_str_eq(c->spool_dir, "/srv/dr/etc/q/x");
	conf_free(c);
	c = load_ok("spool_dir = \"/var/spool/x\";");
	ck_assert_str_eq(c->spool_dir, "/var/spool/x");
	conf_free(c);
	/* A relative base directory is made absolute too. */
	c = conf_load_string("spool_dir = \"q\";", "t.conf", "no-such-dir", false, &errs);
	ck_assert_ptr_nonnull(c);
	ck_assert_int_eq(c->spool_dir[0], '/');
	ck_assert(strlen(c->spool_dir) > 14);
	ck_assert_str_eq(c->spool_dir + strlen(c->spool_dir) - 14, "/no-such-dir/q");
	conf_free(c);
}
END_TEST

/* One invalid setting: the line it is on, and what the message must say. */
static const struct {
	const char *text;
	const char *want;   /* "t.conf:LINE: ..." prefix of the only error line */
} bad_configs[] = {
	{ "\nbogus = 1;", "t.conf:2: unknown top-level key \"bogus\"" },
	{ "max_recipients = \"ten\";", "t.conf:1: max_recipients: expected an integer" },
	{ "hostname = 5;", "t.conf:1: hostname: expected a string" },
	{ "log = \"stderr\";", "t.conf:1: log: expected a group" },
	{ "listen = (\n { address = \"192.0.2.300\"; port = 25; });",
	  "t.conf:2: listen address: \"192.0.2.300\" is not an IPv4 or IPv6 address" },
	{ "listen = ( { address = \"192.0.2.1\"; port = 0; } );",
	  "t.conf:1: listen port: 0 is out of range (1..65535)" },
	{ "relay_networks = [ \"127.0.0.0/8\",\n \"192.0.2.0/33\" ];",
	  "t.conf:2: relay_networks: bad CIDR \"192.0.2.0/33\"" },
	{ "trusted_proxies = [\n \"192.0.2.0/33\" ];",
	  "t.conf:2: trusted_proxies: bad CIDR \"192.0.2.0/33\"" },
	{ "listen = ( { address = \"192.0.2.1\";\n proxy_protocol = 1; } );",
	  "t.conf:2: listen proxy_protocol: expected true or false" },
	{ "listen = ( { address = \"192.0.2.1\"; },\n { address = \"192.0.2.2\"; "
	  "proxy_protocol = true; } );",
	  "t.conf:2: listen entry: proxy_protocol = true needs trusted_proxies" },
	{ "trusted_proxies = [ ];\nlisten = ( { address = \"192.0.2.1\"; "
	  "proxy_protocol = true; } );",
	  "t.conf:2: listen entry: proxy_protocol = true needs trusted_proxies" },
	{ "dns = { servers = [ \"192.0.2.53:99999\" ]; };",
	  "t.conf:1: dns.servers: bad address \"192.0.2.53:99999\"" },
	{ "transports = {\n t = {\n port = 70000; }; };",
	  "t.conf:3: transport t: port: 70000 is out of range (1..65535)" },
	{ "routes = ( { domain = \"example.org\";\n transport = \"nope\"; } );",
	  "t.conf:2: route for example.org: unknown transport \"nope\"" },
	{ "routes = ( { domain = \"example.org\"; transport = \"default\"; },\n"
	  " { domain = \"Example.ORG.\"; transport = \"default\"; } );",
	  "t.conf:2: route for example.org: duplicate (first defined at line 1)" },
	{ "routes = ( { domain = \"exa mple.org\"; transport = \"default\"; } );",
	  "t.conf:1: route: bad domain \"exa mple.org\"" },
	{ "routes = ( { domain = \"example.org\"; } );", "t.conf:1: route: missing transport" },
	{ "transports = { t = {\n source4 = \"2001:db8::1\"; }; };",
	  "t.conf:2: transport t: source4: \"2001:db8::1\" is not an IPv4 address" },
	{ "transports = { t = {\n source6 = \"192.0.2.1\"; }; };",
	  "t.conf:2: transport t: source6: \"192.0.2.1\" is not an IPv6 address" },
	{ "transports = { t = { source4 = \"192.0.2.999\"; }; };",
	  "t.conf:1: transport t: source4: bad address \"192.0.2.999\"" },
	{ "transports = { t = { family = \"ipv4\";\n source6 = \"2001:db8::1\"; }; };",
	  "t.conf:2: transport t: family \"ipv4\" cannot use source6" },
	{ "transports = { t = { family = \"ipv6\";\n source4 = \"192.0.2.1\"; }; };",
	  "t.conf:2: transport t: family \"ipv6\" cannot use source4" },
	{ "transports = { t = { relay = \"[smtp.example.net\"; }; };",
	  "t.conf:1: transport t: relay: bad relay \"[smtp.example.net\"" },
	{ "transports = { t = { relay = \"[smtp.example.net]:587\";\n port = 25; }; };",
	  "t.conf:2: transport t: port given both here and in relay (line 1)" },
	{ "transports = { t = { family = \"ipv5\"; }; };",
	  "t.conf:1: transport t: family: unknown family \"ipv5\"" },
	{ "transports = { t = { color = \"blue\"; }; };",
	  "t.conf:1: unknown key \"color\" in transport t" },
	{ "transports = { t = { attempt_delay_ms = 5; }; };",
	  "t.conf:1: transport t: attempt_delay_ms: 5 is out of range (10..2000)" },
	{ "transports = { t = { family_fallback = 1; }; };",
	  "t.conf:1: transport t: family_fallback: expected true or false" },
	{ "transports = ( );", "t.conf:1: transports: expected a group" },
	{ "max_message_size = 0;", "t.conf:1: max_message_size: 0 is out of range" },
	{ "max_message_size = -5;", "t.conf:1: max_message_size: -5 is out of range" },
	{ "queue = {\n retry_min_s = 600;\n retry_max_s = 300; };",
	  "t.conf:2: queue.retry_min_s (600) is greater than queue.retry_max_s (300)" },
	{ "queue = { retry_min_s = 6000; };",
	  "t.conf:1: queue.retry_min_s (6000) is greater than queue.retry_max_s (4000)" },
	{ "log = {\n level = \"loud\"; };", "t.conf:2: log.level: unknown level \"loud\"" },
	{ "log = {\n target = \"file\"; };", "t.conf:2: log.target: unknown target \"file\"" },
	{ "dns = { retries = 3; };", "t.conf:1: unknown key \"retries\" in dns" },
	{ "prefer_family = \"ipx\";", "t.conf:1: prefer_family: unknown family \"ipx\"" },
	{ "spool_sync = \"fdatasync\";",
	  "t.conf:1: spool_sync: unknown mode \"fdatasync\" (auto, file or filesystem)" },
	{ "hostname = \"-bad-.example\";", "t.conf:1: hostname: \"-bad-.example\" is not a host name" },
	{ "family_fallback_patterns = [ \"\" ];",
	  "t.conf:1: family_fallback_patterns: must not be empty" },
	{ "max_connections = 0;", "t.conf:1: max_connections: 0 is out of range (1..1000000)" },
	{ "max_connections_per_ip = -1;",
	  "t.conf:1: max_connections_per_ip: -1 is out of range (0..1000000)" },
	{ "max_errors = 0;", "t.conf:1: max_errors: 0 is out of range (1..1000)" },
	{ "user = \"\";", "t.conf:1: user: must not be empty" },
	{ "group = 5;", "t.conf:1: group: expected a string" },
	{ "timeouts = { session_timeout_s = 700000; };",
	  "t.conf:1: timeouts.session_timeout_s: 700000 is out of range (0..604800)" },
	/* Syntax errors come from libconfig, in the same form. */
	{ "\n\nhostname = ;", "t.conf:3: syntax error" },
};

START_TEST(test_each_error)
{
	char *errs = load_fail(bad_configs[_i].text);

	ck_assert_msg(strncmp(errs, bad_configs[_i].want, strlen(bad_configs[_i].want)) == 0,
	    "for %s\nwant: %s\ngot:  %s", bad_configs[_i].text, bad_configs[_i].want, errs);
	ck_assert_msg(count_lines(errs) == 1, "more than one error: %s", errs);
	ck_assert_int_eq(errs[strlen(errs) - 1], '\n');
	free(errs);
}
END_TEST

/* The inbound limits and the account: defaults, values, existence checked with check_host. */
START_TEST(test_limits_and_account)
{
	struct conf *c = load_ok("");
	char *errs = NULL;

	ck_assert_uint_eq(c->max_connections, 1000);
	ck_assert_uint_eq(c->max_connections_per_ip, 50);
	ck_assert_uint_eq(c->max_errors, 20);
	ck_assert_uint_eq(c->timeouts.session_timeout_s, 0);
	ck_assert_ptr_null(c->user);
	ck_assert_ptr_null(c->group);
	conf_free(c);
	c = load_ok("max_connections = 10; max_connections_per_ip = 0; max_errors = 3;\n"
	    "timeouts = { session_timeout_s = 600; };\n"
	    "user = \"dualrelay-check-no-such-user\"; group = \"dualrelay-check-no-such-group\";");
	ck_assert_uint_eq(c->max_connections, 10);
	ck_assert_uint_eq(c->max_connections_per_ip, 0);
	ck_assert_uint_eq(c->max_errors, 3);
	ck_assert_uint_eq(c->timeouts.session_timeout_s, 600);
	ck_assert_str_eq(c->user, "dualrelay-check-no-such-user");
	ck_assert_str_eq(c->group, "dualrelay-check-no-such-group");
	conf_free(c);

	/* With check_host (dualrelayd -n, the daemon), the account must exist here. */
	c = conf_load_string("user = \"dualrelay-check-no-such-user\";\n"
	    "group = \"dualrelay-check-no-such-group\";", "t.conf", "/srv/dr/etc", true, &errs);
	ck_assert_ptr_null(c);
	ck_assert_ptr_nonnull(strstr(errs,
	    "t.conf:1: user: no account \"dualrelay-check-no-such-user\" on this host\n"));
	ck_assert_ptr_nonnull(strstr(errs,
	    "t.conf:2: group: no group \"dualrelay-check-no-such-group\" on this host\n"));
	free(errs);
	errs = NULL;
	c = conf_load_string("user = \"root\"; group = \"root\";", "t.conf", "/srv/dr/etc",
	    true, &errs);
	ck_assert_msg(c != NULL, "%s", errs != NULL ? errs : "");
	conf_free(c);
}
END_TEST

START_TEST(test_all_errors_at_once)
{
	char *errs = load_fail(
	    "max_message_size = 0;\n"
	    "transports = { t = { source4 = \"2001:db8::1\"; relay = \"a:b:c:d\"; }; };\n"
	    "routes = ( { domain = \"example.org\"; transport = \"nope\"; } );\n"
	    "typo = 1;\n");

	ck_assert_uint_eq(count_lines(errs), 5);
	ck_assert_ptr_nonnull(strstr(errs, "t.conf:1: max_message_size"));
	ck_assert_ptr_nonnull(strstr(errs, "t.conf:2: transport t: source4"));
	ck_assert_ptr_nonnull(strstr(errs, "t.conf:2: transport t: relay: bad relay"));
	ck_assert_ptr_nonnull(strstr(errs, "t.conf:3: route for example.org: unknown"));
	ck_assert_ptr_nonnull(strstr(errs, "t.conf:4: unknown top-level key \"typo\""));
	free(errs);

	/* Two errors, two lines; and errors are appended to what the caller has. */
	errs = xstrdup("earlier\n");
	ck_assert_ptr_null(conf_load_string("max_recipients = 0;\nbogus = 2;\n", "x.conf",
	    "/", false, &errs));
	ck_assert_str_eq(errs, "earlier\n"
	    "x.conf:1: max_recipients: 0 is out of range (1..1000000)\n"
	    "x.conf:2: unknown top-level key \"bogus\"\n");
	free(errs);
}
END_TEST

START_TEST(test_check_host)
{
	char *errs = NULL;
	struct conf *c;

	c = conf_load_string("transports = { t = { source4 = \"127.0.0.1\"; }; };", "t.conf",
	    "/", true, &errs);
	ck_assert_ptr_nonnull(c);
	conf_free(c);
	c = conf_load_string("transports = { t = {\n source4 = \"203.0.113.254\";\n"
	    " source6 = \"2001:db8:ffff::fe\"; }; };", "t.conf", "/", true, &errs);
	ck_assert_ptr_null(c);
	ck_assert_str_eq(errs,
	    "t.conf:2: transport t: source4: 203.0.113.254 is not an address of this host\n"
	    "t.conf:3: transport t: source6: 2001:db8:ffff::fe is not an address of this host\n");
	free(errs);
	/* Without check_host the same file is fine (unit tests, other machines). */
	errs = NULL;
	c = conf_load_string("transports = { t = { source4 = \"203.0.113.254\"; }; };",
	    "t.conf", "/", false, &errs);
	ck_assert_ptr_nonnull(c);
	conf_free(c);
}
END_TEST

START_TEST(test_relay_forms)
{
	static const struct {
		const char *relay;
		const char *host;
		bool no_mx;
		uint16_t port;
	} good[] = {
		{ "smtp.example.net", "smtp.example.net", false, 25 },
		{ "smtp.example.net:587", "smtp.example.net", false, 587 },
		{ "[smtp.example.net]", "smtp.example.net", true, 25 },
		{ "[smtp.example.net]:587", "smtp.example.net", true, 587 },
		{ "[192.0.2.25]:2525", "192.0.2.25", true, 2525 },
		{ "192.0.2.25", "192.0.2.25", true, 25 },
		{ "[2001:db8::25]:2525", "2001:db8::25", true, 2525 },
		{ "[2001:db8::25]", "2001:db8::25", true, 25 },
		{ "2001:db8::25", "2001:db8::25", true, 25 },
	};
	static const char *const bad[] = {
		"", "[]", "[smtp.example.net", "smtp.example.net]", "[smtp.example.net]x",
		"smtp.example.net:", "smtp.example.net:0", "smtp.example.net:65536",
		"smtp.example.net:25x", "smtp..example.net", "smtp_x.example.net",
		"-smtp.example.net", "[2001:db8::25]:", "2001:db8::25:99999", "192.0.2.256",
		"[2001:db8::zz]", "a:b:c", "smtp.example.net:+25",
	};
	char text[256];

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		struct conf *c;
		const struct conf_transport *t;

		snprintf(text, sizeof(text), "transports = { r = { relay = \"%s\"; }; };",
		    good[i].relay);
		c = load_ok(text);
		t = conf_transport_find(c, "r");
		ck_assert_str_eq(t->relay_host, good[i].host);
		ck_assert_msg(t->relay_no_mx == good[i].no_mx, "no_mx for %s", good[i].relay);
		ck_assert_uint_eq(t->port, good[i].port);
		conf_free(c);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char *errs;

		snprintf(text, sizeof(text), "transports = { r = { relay = \"%s\"; }; };",
		    bad[i]);
		errs = load_fail(text);
		ck_assert_msg(strncmp(errs, "t.conf:1: transport r: relay: ", 30) == 0,
		    "%s: %s", bad[i], errs);
		free(errs);
	}
}
END_TEST

START_TEST(test_refcount)
{
	struct conf *c = load_ok("hostname = \"a.example\";");

	ck_assert_uint_eq(c->refs, 1);
	ck_assert_ptr_eq(conf_ref(c), c);
	ck_assert_uint_eq(c->refs, 2);
	conf_free(c);
	ck_assert_uint_eq(c->refs, 1);
	ck_assert_str_eq(c->hostname, "a.example");   /* still alive */
	conf_free(c);
	conf_free(NULL);
}
END_TEST

START_TEST(test_family_names)
{
	ck_assert_str_eq(conf_family_name(CONF_FAMILY_ANY), "any");
	ck_assert_str_eq(conf_family_name(CONF_FAMILY_IPV4), "ipv4");
	ck_assert_str_eq(conf_family_name(CONF_FAMILY_IPV6), "ipv6");
	ck_assert_str_eq(conf_family_name(CONF_FAMILY_PREFER_IPV4), "prefer-ipv4");
	ck_assert_str_eq(conf_family_name(CONF_FAMILY_PREFER_IPV6), "prefer-ipv6");
}
END_TEST

static const char routes_conf[] =
    "routes = (\n"
    "  { domain = \".example.org\";     transport = \"sub\"; },\n"
    "  { domain = \"Example.ORG.\";     transport = \"exact\"; },\n"
    "  { domain = \".deep.example.org\"; transport = \"deep\"; },\n"
    "  { domain = \"mail.deep.example.org\"; transport = \"exact\"; }\n"
    ");\n"
    "transports = { exact = { family = \"ipv4\"; }; sub = { family = \"ipv6\"; };\n"
    "               deep = { port = 26; }; };\n";

START_TEST(test_routes)
{
	struct conf *c = load_ok(routes_conf);
	const struct conf_transport *def = conf_transport_find(c, "default");
	const struct conf_transport *exact = conf_transport_find(c, "exact");
	const struct conf_transport *sub = conf_transport_find(c, "sub");
	const struct conf_transport *deep = conf_transport_find(c, "deep");

	ck_assert_uint_eq(c->nroutes, 4);
	ck_assert_str_eq(c->routes[1].domain, "example.org");
	ck_assert_ptr_eq(c->routes[1].transport, exact);
	ck_assert_int_eq(c->routes[1].line, 3);

	ck_assert_ptr_eq(route_lookup(c, "example.org"), exact);
	ck_assert_ptr_eq(route_lookup(c, "EXAMPLE.org"), exact);
	ck_assert_ptr_eq(route_lookup(c, "example.org."), exact);
	ck_assert_ptr_eq(route_lookup(c, "a.example.org"), sub);
	ck_assert_ptr_eq(route_lookup(c, "A.B.Example.Org."), sub);
	/* Longest suffix wins; a ".suffix" route does not cover the bare name. */
	ck_assert_ptr_eq(route_lookup(c, "deep.example.org"), sub);
	ck_assert_ptr_eq(route_lookup(c, "x.deep.example.org"), deep);
	ck_assert_ptr_eq(route_lookup(c, "mail.deep.example.org"), exact);
	ck_assert_ptr_eq(route_lookup(c, "MAIL.deep.example.org."), exact);
	/* Label boundaries: "badexample.org" is not under ".example.org". */
	ck_assert_ptr_eq(route_lookup(c, "badexample.org"), def);
	ck_assert_ptr_eq(route_lookup(c, "example.org.evil.example"), def);
	ck_assert_ptr_eq(route_lookup(c, "example.net"), def);
	ck_assert_ptr_eq(route_lookup(c, "org"), def);
	conf_free(c);
}
END_TEST

START_TEST(test_routes_default_only)
{
	struct conf *c = load_ok("");

	ck_assert_ptr_eq(route_lookup(c, "example.org"), &c->transports[0]);
	conf_free(c);
}
END_TEST

static Suite *
conf_suite(void)
{
	Suite *s = suite_create("conf");
	TCase *tc = tcase_create("conf");
	TCase *tr = tcase_create("route");

	/* Each load reads the system CA store per TLS transport: slow under ASan. */
	tcase_set_timeout(tc, 120);

	tcase_add_test(tc, test_example_loads);
	tcase_add_test(tc, test_missing_file);
	tcase_add_test(tc, test_defaults);
	tcase_add_test(tc, test_full);
	tcase_add_test(tc, test_proxy_protocol);
	tcase_add_test(tc, test_spool_dir);
	tcase_add_loop_test(tc, test_each_error, 0,
	    (int)(sizeof(bad_configs) / sizeof(bad_configs[0])));
	tcase_add_test(tc, test_all_errors_at_once);
	tcase_add_test(tc, test_limits_and_account);
	tcase_add_test(tc, test_check_host);
	tcase_add_test(tc, test_relay_forms);
	tcase_add_test(tc, test_refcount);
	tcase_add_test(tc, test_family_names);
	suite_add_tcase(s, tc);
	tcase_add_test(tr, test_routes);
	tcase_add_test(tr, test_routes_default_only);
	suite_add_tcase(s, tr);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(conf_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
