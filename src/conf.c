/*
 * conf: reads the libconfig file, validates every setting and builds an immutable
 * struct conf (see conf.h and etc/dualrelay.conf for the key names). Validation never
 * stops at the first problem: each one is collected as "FILE:LINE: message" so that
 * `dualrelayd -n` shows the operator everything to fix in one run. The libconfig tree
 * lives only while loading; struct conf owns copies of every string it keeps.
 */
#include "config.h"

#include <errno.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libconfig.h>
#include <openssl/crypto.h>
#include <openssl/ssl.h>

#include "conf.h"
#include "dkim.h"
#include "log.h"
#include "netaddr.h"
#include "smtp_proto.h"
#include "tls.h"
#include "users.h"
#include "util.h"

#define CONF_LISTEN_PORT        2525
#define CONF_SMTP_PORT          25

/* Loading context: where messages come from and the errors collected so far. */
struct load {
	const char *name;       /* file name used when libconfig does not know it */
	bool check_host;        /* also check source addresses against this host */
	char *errs;             /* "FILE:LINE: message\n"..., owned */
	size_t errlen, errcap;
	unsigned nerrs;
	const char *base_dir;   /* relative paths in the file resolve against this */
	struct conf *conf;      /* being built: warnings go to conf->warnings */
	bool has_tls_cert;      /* tls_cert and tls_key are both in the file: listeners may
	                           (and by default do) offer TLS */
	const config_setting_t *proxy_listen; /* first proxy_protocol listener, for the
	                           trusted_proxies check after the whole file is read */
};

static char *resolve_path(const char *base_dir, const char *path);
static char *get_path(struct load *ld, const config_setting_t *s, const char *what);
static void warn_if_readable(struct load *ld, const config_setting_t *s, const char *what,
    const char *path, int fd);

static void load_error(struct load *ld, const config_setting_t *s, const char *fmt, ...)
    DR_PRINTF(3, 4);

static void
load_append(struct load *ld, const char *text)
{
	size_t n = strlen(text);

	ld->errs = xgrow(ld->errs, 1, ld->errlen + n + 1, &ld->errcap);
	memcpy(ld->errs + ld->errlen, text, n + 1);
	ld->errlen += n;
}

/* Records one error located at setting s ("FILE:LINE: message\n"). */
static void
load_error(struct load *ld, const config_setting_t *s, const char *fmt, ...)
{
	const char *file = NULL;
	unsigned line = 0;
	char msg[512], *text;
	va_list ap;

	if (s != NULL) {
		file = config_setting_source_file(s);
		line = (unsigned)config_setting_source_line(s);
	}
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	text = xasprintf("%s:%u: %s\n", file != NULL ? file : ld->name, line, msg);
	load_append(ld, text);
	free(text);
	ld->nerrs++;
}

/* Records one warning located at s in conf->warnings (same form as errors). */
static void load_warning(struct load *ld, const config_setting_t *s, const char *fmt, ...)
    DR_PRINTF(3, 4);

static void
load_warning(struct load *ld, const config_setting_t *s, const char *fmt, ...)
{
	char msg[512], *text;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	text = xasprintf("%s%s:%u: %s\n", ld->conf->warnings != NULL ? ld->conf->warnings : "",
	    s != NULL && config_setting_source_file(s) != NULL ?
	    config_setting_source_file(s) : ld->name,
	    s != NULL ? (unsigned)config_setting_source_line(s) : 0, msg);
	free(ld->conf->warnings);
	ld->conf->warnings = text;
}

/* Typed accessors: each reports a wrong type or range itself and returns -1. */

static int
get_string(struct load *ld, const config_setting_t *s, const char *what, char **out)
{
	const char *v;

	if (config_setting_type(s) != CONFIG_TYPE_STRING) {
		load_error(ld, s, "%s: expected a string", what);
		return -1;
	}
	v = config_setting_get_string(s);
	if (*v == '\0') {
		load_error(ld, s, "%s: must not be empty", what);
		return -1;
	}
	free(*out);
	*out = xstrdup(v);
	return 0;
}

static int
get_int(struct load *ld, const config_setting_t *s, const char *what, long long min,
    long long max, long long *out)
{
	long long v;

	if (config_setting_type(s) != CONFIG_TYPE_INT &&
	    config_setting_type(s) != CONFIG_TYPE_INT64) {
		load_error(ld, s, "%s: expected an integer", what);
		return -1;
	}
	v = config_setting_get_int64(s);
	if (v < min || v > max) {
		load_error(ld, s, "%s: %lld is out of range (%lld..%lld)", what, v, min, max);
		return -1;
	}
	*out = v;
	return 0;
}

static void
get_unsigned(struct load *ld, const config_setting_t *s, const char *what, long long min,
    long long max, unsigned *out)
{
	long long v;

	if (get_int(ld, s, what, min, max, &v) == 0)
		*out = (unsigned)v;
}

static void
get_bool(struct load *ld, const config_setting_t *s, const char *what, bool *out)
{
	if (config_setting_type(s) != CONFIG_TYPE_BOOL) {
		load_error(ld, s, "%s: expected true or false", what);
		return;
	}
	*out = config_setting_get_bool(s) != 0;
}

/* A list or array (not a group); reports otherwise. */
static bool
is_sequence(struct load *ld, const config_setting_t *s, const char *what)
{
	if (config_setting_is_array(s) || config_setting_is_list(s))
		return true;
	load_error(ld, s, "%s: expected a list", what);
	return false;
}

static bool
is_group(struct load *ld, const config_setting_t *s, const char *what)
{
	if (config_setting_is_group(s))
		return true;
	load_error(ld, s, "%s: expected a group { ... }", what);
	return false;
}

static void
unknown_key(struct load *ld, const config_setting_t *s, const char *where)
{
	load_error(ld, s, "unknown key \"%s\" in %s", config_setting_name(s), where);
}

/* Host name syntax (RFC 1123 §2.1 LDH labels); one trailing dot allowed. */
static bool
valid_hostname(const char *name)
{
	size_t len = strlen(name), label = 0;

	if (len > 0 && name[len - 1] == '.')
		len--;
	if (len == 0 || len > 253)
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = name[i];
		if (c == '.') {
			if (label == 0 || name[i - 1] == '-')
				return false;
			label = 0;
			continue;
		}
		bool ldh = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9') || c == '-';
		if (!ldh || (c == '-' && label == 0) || ++label > 63)
			return false;
	}
	return name[len - 1] != '-';
}

static const struct {
	const char *name;
	enum conf_family family;
} family_names[] = {
	{ "any", CONF_FAMILY_ANY },
	{ "ipv4", CONF_FAMILY_IPV4 },
	{ "ipv6", CONF_FAMILY_IPV6 },
	{ "prefer-ipv4", CONF_FAMILY_PREFER_IPV4 },
	{ "prefer-ipv6", CONF_FAMILY_PREFER_IPV6 },
};

const char *
conf_family_name(enum conf_family f)
{
	for (size_t i = 0; i < sizeof(family_names) / sizeof(family_names[0]); i++)
		if (family_names[i].family == f)
			return family_names[i].name;
	return "unknown";
}

static int
family_parse(const char *name, enum conf_family *f)
{
	for (size_t i = 0; i < sizeof(family_names) / sizeof(family_names[0]); i++)
		if (strcmp(name, family_names[i].name) == 0) {
			*f = family_names[i].family;
			return 0;
		}
	return -1;
}

static const struct {
	const char *name;
	enum conf_listen_tls tls;
} listen_tls_names[] = {
	{ "none", CONF_LISTEN_TLS_NONE },
	{ "starttls", CONF_LISTEN_TLS_STARTTLS },
	{ "implicit", CONF_LISTEN_TLS_IMPLICIT },
};

const char *
conf_listen_tls_name(enum conf_listen_tls t)
{
	for (size_t i = 0; i < sizeof(listen_tls_names) / sizeof(listen_tls_names[0]); i++)
		if (listen_tls_names[i].tls == t)
			return listen_tls_names[i].name;
	return "unknown";
}

/* tls = "..." of one listen entry; false (reported) when unusable. */
static bool
parse_listen_tls(struct load *ld, const config_setting_t *f, enum conf_listen_tls *out)
{
	char *v = NULL;
	bool found = false;

	if (get_string(ld, f, "listen tls", &v) == -1)
		return false;
	for (size_t i = 0; i < sizeof(listen_tls_names) / sizeof(listen_tls_names[0]); i++)
		if (strcmp(v, listen_tls_names[i].name) == 0) {
			*out = listen_tls_names[i].tls;
			found = true;
		}
	if (!found)
		load_error(ld, f, "listen tls: \"%s\" is not one of none, starttls, implicit", v);
	else if (*out != CONF_LISTEN_TLS_NONE && !ld->has_tls_cert) {
		load_error(ld, f, "listen tls: \"%s\" needs tls_cert and tls_key", v);
		found = false;
	}
	free(v);
	return found;
}

/* ---- global settings ---------------------------------------------------------- */

static void
parse_listen(struct load *ld, const config_setting_t *s, struct conf *c)
{
	int n;

	if (!is_sequence(ld, s, "listen"))
		return;
	n = config_setting_length(s);
	if (n == 0) {
		load_error(ld, s, "listen: no address to listen on");
		return;
	}
	free(c->listen);
	c->listen = xcalloc((size_t)n, sizeof(*c->listen));
	c->nlisten = 0;
	for (int i = 0; i < n; i++) {
		const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
		char *addr = NULL;
		long long port = CONF_SMTP_PORT;
		enum conf_listen_tls tls = ld->has_tls_cert ? CONF_LISTEN_TLS_STARTTLS :
		    CONF_LISTEN_TLS_NONE;
		bool ok = true, proxy = false;

		if (!is_group(ld, e, "listen entry"))
			continue;
		for (int k = 0; k < config_setting_length(e); k++) {
			const config_setting_t *f = config_setting_get_elem(e, (unsigned)k);
			const char *key = config_setting_name(f);
			if (strcmp(key, "address") == 0)
				ok = get_string(ld, f, "listen address", &addr) == 0 && ok;
			else if (strcmp(key, "port") == 0)
				ok = get_int(ld, f, "listen port", 1, 65535, &port) == 0 && ok;
			else if (strcmp(key, "tls") == 0)
				ok = parse_listen_tls(ld, f, &tls) && ok;
			else if (strcmp(key, "proxy_protocol") == 0)
				get_bool(ld, f, "listen proxy_protocol", &proxy);
			else
				unknown_key(ld, f, "listen entry");
		}
		if (ok && addr == NULL) {
			load_error(ld, e, "listen entry: missing address");
		} else if (ok) {
			struct netaddr *a = &c->listen[c->nlisten].addr;
			if (netaddr_parse(a, addr, (uint16_t)port) == -1)
				load_error(ld, config_setting_get_member(e, "address"),
				    "listen address: \"%s\" is not an IPv4 or IPv6 address", addr);
			else {
				c->listen[c->nlisten].tls = tls;
				c->listen[c->nlisten++].proxy_protocol = proxy;
				if (proxy && ld->proxy_listen == NULL)
					ld->proxy_listen = e;
				/* The header comes in plaintext before the handshake: not supported. */
				if (proxy && tls == CONF_LISTEN_TLS_IMPLICIT)
					load_error(ld, e, "listen entry: proxy_protocol = true cannot be "
					    "combined with tls = \"implicit\" (terminate TLS on the proxy, "
					    "or use tls = \"starttls\")");
			}
		}
		free(addr);
	}
}

/* A list of CIDR strings (relay_networks, trusted_proxies) into *out (replaced). */
static void
parse_prefixes(struct load *ld, const config_setting_t *s, const char *what,
    struct netaddr_prefix **out, size_t *nout)
{
	int n;

	if (!is_sequence(ld, s, what))
		return;
	n = config_setting_length(s);
	free(*out);
	*out = xcalloc((size_t)n, sizeof(**out));
	*nout = 0;
	for (int i = 0; i < n; i++) {
		const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
		char *text = NULL;

		if (get_string(ld, e, what, &text) == -1)
			continue;
		if (netaddr_prefix_parse(&(*out)[*nout], text) == -1)
			load_error(ld, e, "%s: bad CIDR \"%s\"", what, text);
		else
			(*nout)++;
		free(text);
	}
}

static void
parse_log(struct load *ld, const config_setting_t *s, struct conf *c)
{
	if (!is_group(ld, s, "log"))
		return;
	for (int k = 0; k < config_setting_length(s); k++) {
		const config_setting_t *f = config_setting_get_elem(s, (unsigned)k);
		const char *key = config_setting_name(f);
		char *v = NULL;

		if (strcmp(key, "target") == 0) {
			if (get_string(ld, f, "log.target", &v) == -1)
				continue;
			if (strcmp(v, "stderr") == 0)
				c->log_target = LOG_TARGET_STDERR;
			else if (strcmp(v, "syslog") == 0)
				c->log_target = LOG_TARGET_SYSLOG;
			else
				load_error(ld, f, "log.target: unknown target \"%s\" "
				    "(stderr or syslog)", v);
		} else if (strcmp(key, "level") == 0) {
			if (get_string(ld, f, "log.level", &v) == -1)
				continue;
			int level = log_level_parse(v);
			if (level < 0)
				load_error(ld, f, "log.level: unknown level \"%s\" "
				    "(error, warning, info or debug)", v);
			else
				c->log_level = (enum log_level)level;
		} else
			unknown_key(ld, f, "log");
		free(v);
	}
}

static void
parse_dns_servers(struct load *ld, const config_setting_t *s, struct conf *c)
{
	int n;

	if (!is_sequence(ld, s, "dns.servers"))
		return;
	n = config_setting_length(s);
	c->dns.servers = xcalloc((size_t)n, sizeof(char *));
	for (int i = 0; i < n; i++) {
		const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
		char *text = NULL;
		struct netaddr a;

		if (get_string(ld, e, "dns.servers", &text) == -1)
			continue;
		if (netaddr_parse_hostport(&a, text, 53) == -1) {
			load_error(ld, e, "dns.servers: bad address \"%s\" "
			    "(ADDR, ADDR:PORT or [IPV6]:PORT)", text);
			free(text);
			continue;
		}
		c->dns.servers[c->dns.nservers++] = text;
	}
}

static void
parse_dns(struct load *ld, const config_setting_t *s, struct conf *c)
{
	if (!is_group(ld, s, "dns"))
		return;
	for (int k = 0; k < config_setting_length(s); k++) {
		const config_setting_t *f = config_setting_get_elem(s, (unsigned)k);
		const char *key = config_setting_name(f);

		if (strcmp(key, "servers") == 0)
			parse_dns_servers(ld, f, c);
		else if (strcmp(key, "timeout_ms") == 0)
			get_unsigned(ld, f, "dns.timeout_ms", 1, 600000, &c->dns.timeout_ms);
		else if (strcmp(key, "tries") == 0)
			get_unsigned(ld, f, "dns.tries", 1, 100, &c->dns.tries);
		else
			unknown_key(ld, f, "dns");
	}
}

static void
parse_queue(struct load *ld, const config_setting_t *s, struct conf *c)
{
	const config_setting_t *min_s = NULL;

	if (!is_group(ld, s, "queue"))
		return;
	for (int k = 0; k < config_setting_length(s); k++) {
		const config_setting_t *f = config_setting_get_elem(s, (unsigned)k);
		const char *key = config_setting_name(f);

		if (strcmp(key, "retry_min_s") == 0) {
			get_unsigned(ld, f, "queue.retry_min_s", 1, INT_MAX, &c->queue.retry_min_s);
			min_s = f;
		} else if (strcmp(key, "retry_max_s") == 0)
			get_unsigned(ld, f, "queue.retry_max_s", 1, INT_MAX, &c->queue.retry_max_s);
		else if (strcmp(key, "max_lifetime_s") == 0)
			get_unsigned(ld, f, "queue.max_lifetime_s", 0, INT_MAX,
			    &c->queue.max_lifetime_s);
		else if (strcmp(key, "delay_warning_s") == 0)
			get_unsigned(ld, f, "queue.delay_warning_s", 0, INT_MAX,
			    &c->queue.delay_warning_s);
		else if (strcmp(key, "max_active") == 0)
			get_unsigned(ld, f, "queue.max_active", 1, 100000,
			    &c->queue.max_active);
		else if (strcmp(key, "connection_cache_s") == 0)
			get_unsigned(ld, f, "queue.connection_cache_s", 0, 3600,
			    &c->queue.connection_cache_s);
		else if (strcmp(key, "destination_concurrency") == 0)
			get_unsigned(ld, f, "queue.destination_concurrency", 1, 100000,
			    &c->queue.destination_concurrency);
		else
			unknown_key(ld, f, "queue");
	}
	if (c->queue.retry_min_s > c->queue.retry_max_s)
		load_error(ld, min_s != NULL ? min_s : s, "queue.retry_min_s (%u) is greater "
		    "than queue.retry_max_s (%u)", c->queue.retry_min_s, c->queue.retry_max_s);
}

/*
 * The inbound limits and the account (top-level keys). Returns false when key is none
 * of them. With check_host, user and group must exist here.
 */
static bool
parse_limits_key(struct load *ld, const config_setting_t *s, const char *key,
    struct conf *c)
{
	if (strcmp(key, "max_connections") == 0)
		get_unsigned(ld, s, "max_connections", 1, 1000000, &c->max_connections);
	else if (strcmp(key, "max_connections_per_ip") == 0)
		get_unsigned(ld, s, "max_connections_per_ip", 0, 1000000,
		    &c->max_connections_per_ip);
	else if (strcmp(key, "max_errors") == 0)
		get_unsigned(ld, s, "max_errors", 1, 1000, &c->max_errors);
	else if (strcmp(key, "user") == 0) {
		if (get_string(ld, s, "user", &c->user) == 0 && ld->check_host &&
		    getpwnam(c->user) == NULL)
			load_error(ld, s, "user: no account \"%s\" on this host", c->user);
	} else if (strcmp(key, "group") == 0) {
		if (get_string(ld, s, "group", &c->group) == 0 && ld->check_host &&
		    getgrnam(c->group) == NULL)
			load_error(ld, s, "group: no group \"%s\" on this host", c->group);
	} else
		return false;
	return true;
}

static void
parse_timeouts(struct load *ld, const config_setting_t *s, struct conf *c)
{
	if (!is_group(ld, s, "timeouts"))
		return;
	for (int k = 0; k < config_setting_length(s); k++) {
		const config_setting_t *f = config_setting_get_elem(s, (unsigned)k);
		const char *key = config_setting_name(f);

		if (strcmp(key, "command_timeout_s") == 0)
			get_unsigned(ld, f, "timeouts.command_timeout_s", 1, 86400,
			    &c->timeouts.command_timeout_s);
		else if (strcmp(key, "data_timeout_s") == 0)
			get_unsigned(ld, f, "timeouts.data_timeout_s", 1, 86400,
			    &c->timeouts.data_timeout_s);
		else if (strcmp(key, "smtp_timeout_s") == 0)
			get_unsigned(ld, f, "timeouts.smtp_timeout_s", 1, 86400,
			    &c->timeouts.smtp_timeout_s);
		else if (strcmp(key, "session_timeout_s") == 0)
			get_unsigned(ld, f, "timeouts.session_timeout_s", 0, 604800,
			    &c->timeouts.session_timeout_s);
		else
			unknown_key(ld, f, "timeouts");
	}
}

static void
parse_patterns(struct load *ld, const config_setting_t *s, struct conf *c)
{
	int n;

	if (!is_sequence(ld, s, "family_fallback_patterns"))
		return;
	n = config_setting_length(s);
	c->family_fallback_patterns = xcalloc((size_t)n, sizeof(char *));
	for (int i = 0; i < n; i++) {
		const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
		char *text = NULL;

		if (get_string(ld, e, "family_fallback_patterns", &text) == 0)
			c->family_fallback_patterns[c->nfamily_fallback_patterns++] = text;
	}
}

static void
parse_prefer_family(struct load *ld, const config_setting_t *s, struct conf *c)
{
	char *v = NULL;

	if (get_string(ld, s, "prefer_family", &v) == -1)
		return;
	/* Plain family names read naturally here: prefer_family = "ipv4". */
	if (strcmp(v, "ipv4") == 0)
		c->prefer_family = CONF_FAMILY_PREFER_IPV4;
	else if (strcmp(v, "ipv6") == 0)
		c->prefer_family = CONF_FAMILY_PREFER_IPV6;
	else if (family_parse(v, &c->prefer_family) == -1)
		load_error(ld, s, "prefer_family: unknown family \"%s\" "
		    "(ipv4, ipv6 or any)", v);
	free(v);
}

static void
parse_spool_sync(struct load *ld, const config_setting_t *s, struct conf *c)
{
	char *v = NULL;

	if (get_string(ld, s, "spool_sync", &v) == -1)
		return;
	if (strcmp(v, "auto") == 0)
		c->spool_sync = CONF_SPOOL_SYNC_AUTO;
	else if (strcmp(v, "file") == 0)
		c->spool_sync = CONF_SPOOL_SYNC_FILE;
	else if (strcmp(v, "filesystem") == 0)
		c->spool_sync = CONF_SPOOL_SYNC_FILESYSTEM;
	else
		load_error(ld, s, "spool_sync: unknown mode \"%s\" (auto, file or filesystem)", v);
	free(v);
}

/* metrics_listen = "127.0.0.1:9125" (or "[::1]:9125"): the port is required. */
static void
parse_metrics_listen(struct load *ld, const config_setting_t *s, struct conf *c)
{
	char *v = NULL;

	if (get_string(ld, s, "metrics_listen", &v) == -1)
		return;
	if (netaddr_parse_hostport(&c->metrics_listen, v, 0) == -1 ||
	    netaddr_port(&c->metrics_listen) == 0)
		load_error(ld, s, "metrics_listen: \"%s\" is not ADDRESS:PORT "
		    "(e.g. \"127.0.0.1:9125\")", v);
	else
		c->has_metrics_listen = true;
	free(v);
}

/* ---- transports and routes ---------------------------------------------------- */

static void
transport_defaults(struct conf_transport *t, const char *name, int line)
{
	memset(t, 0, sizeof(*t));
	t->name = xstrdup(name);
	t->family = CONF_FAMILY_ANY;
	t->port = CONF_SMTP_PORT;
	t->attempt_delay_ms = 250;      /* RFC 8305 §5 recommended value */
	t->connect_timeout_s = 30;
	t->family_fallback = true;
	t->tls = TLS_POLICY_MAY;
	t->tls_min_version = TLS1_2_VERSION;
	t->line = line;
}

/* A name inside brackets: host name, IPv4 or IPv6 literal. */
static bool
valid_relay_host(const char *host, bool bracketed)
{
	struct netaddr a;

	if (strchr(host, ':') != NULL)
		return bracketed && netaddr_parse(&a, host, 0) == 0;
	if (strspn(host, "0123456789.") == strlen(host))
		return netaddr_parse(&a, host, 0) == 0;
	return valid_hostname(host);
}

/*
 * "host", "host:port", "[host]", "[host]:port", "[addr]:port", "[v6addr]:port", or a
 * bare IPv6 literal. Brackets mean "no MX lookup", as in Postfix's relayhost.
 */
static int
parse_relay(const char *text, struct conf_transport *t, bool *has_port)
{
	const char *hs = text, *he, *rest;
	bool bracketed = false;
	struct netaddr a;
	char *host;
	uint16_t port = 0;

	*has_port = false;
	if (text[0] == '[') {
		bracketed = true;
		hs = text + 1;
		if ((he = strchr(hs, ']')) == NULL)
			return -1;
		rest = he + 1;
	} else if (netaddr_parse(&a, text, 0) == 0 && netaddr_family(&a) == AF_INET6) {
		he = rest = text + strlen(text);
	} else {
		he = strchr(text, ':');
		if (he == NULL)
			he = text + strlen(text);
		rest = he;
	}
	if (*rest == ':') {
		char *end;
		errno = 0;
		long v = strtol(rest + 1, &end, 10);
		if (rest[1] < '0' || rest[1] > '9' || *end != '\0' || v < 1 || v > 65535)
			return -1;
		port = (uint16_t)v;
		*has_port = true;
	} else if (*rest != '\0')
		return -1;
	host = xstrndup(hs, (size_t)(he - hs));
	if (!valid_relay_host(host, bracketed || strchr(host, ':') != NULL)) {
		free(host);
		return -1;
	}
	free(t->relay_host);
	t->relay_host = host;
	/* An address literal has no MX either, bracketed or not. */
	t->relay_no_mx = bracketed || netaddr_parse(&a, host, 0) == 0;
	if (*has_port)
		t->port = port;
	return 0;
}

static void
parse_source(struct load *ld, const config_setting_t *f, struct conf_transport *t, int family)
{
	const char *key = family == AF_INET ? "source4" : "source6";
	struct netaddr *a = family == AF_INET ? &t->source4 : &t->source6;
	char *v = NULL;
	char buf[NETADDR_STRLEN];

	if (get_string(ld, f, key, &v) == -1)
		return;
	if (netaddr_parse(a, v, 0) == -1)
		load_error(ld, f, "transport %s: %s: bad address \"%s\"", t->name, key, v);
	else if (netaddr_family(a) != family)
		load_error(ld, f, "transport %s: %s: \"%s\" is not an %s address", t->name,
		    key, v, family == AF_INET ? "IPv4" : "IPv6");
	else if (ld->check_host && !netaddr_is_local(a))
		load_error(ld, f, "transport %s: %s: %s is not an address of this host",
		    t->name, key, netaddr_ntop(a, buf, sizeof(buf)));
	else if (family == AF_INET)
		t->has_source4 = true;
	else
		t->has_source6 = true;
	free(v);
}

/*
 * The credentials in an auth_file: "user password" on one line (the password is the
 * rest of the line), or the user name and the password on two lines. The buffer is
 * wiped before it is freed.
 */
static int
auth_file_parse(char *buf, struct conf_transport *t)
{
	char *l1 = buf, *l2 = NULL, *rest = NULL, *p;

	if ((p = strchr(l1, '\n')) != NULL) {
		*p = '\0';
		l2 = p + 1;
		if ((p = strchr(l2, '\n')) != NULL) {
			*p = '\0';
			rest = p + 1;
		}
	}
	l1[strcspn(l1, "\r")] = '\0';
	if (l2 != NULL)
		l2[strcspn(l2, "\r")] = '\0';
	if ((p = strpbrk(l1, " \t")) != NULL) {
		/* One line: nothing else but empty lines may follow. */
		if ((l2 != NULL && *l2 != '\0') || (rest != NULL && rest[strspn(rest, "\r\n")]))
			return -1;
		*p++ = '\0';
		p += strspn(p, " \t");
		l2 = p;
	} else if (rest != NULL && rest[strspn(rest, "\r\n")] != '\0')
		return -1;
	if (*l1 == '\0' || l2 == NULL || *l2 == '\0')
		return -1;
	t->auth_user = xstrdup(l1);
	t->auth_pass = xstrdup(l2);
	return 0;
}

/* auth_file = "PATH": read now; the file should be readable by the daemon only. */
static void
parse_auth_file(struct load *ld, const config_setting_t *f, struct conf_transport *t)
{
	char *path, *what, buf[4096];
	size_t n;
	FILE *fp;

	if ((path = get_path(ld, f, "auth_file")) == NULL)
		return;
	free(t->auth_file);
	t->auth_file = path;
	if ((fp = fopen(t->auth_file, "re")) == NULL) {
		load_error(ld, f, "transport %s: auth_file: cannot read %s: %s", t->name,
		    t->auth_file, strerror(errno));
		return;
	}
	what = xasprintf("transport %s: auth_file", t->name);
	warn_if_readable(ld, f, what, t->auth_file, fileno(fp));
	free(what);
	n = fread(buf, 1, sizeof(buf) - 1, fp);
	buf[n] = '\0';
	if (ferror(fp) || !feof(fp))
		load_error(ld, f, "transport %s: auth_file %s: cannot read it whole (at most %zu "
		    "bytes)", t->name, t->auth_file, sizeof(buf) - 1);
	else if (strlen(buf) != n || auth_file_parse(buf, t) == -1)
		load_error(ld, f, "transport %s: auth_file %s: expected \"USER PASSWORD\" on one "
		    "line, or the user name and the password on two lines", t->name,
		    t->auth_file);
	OPENSSL_cleanse(buf, sizeof(buf));
	fclose(fp);
}

/* The transport's TLS context, once its settings are all known; s locates errors. */
static void
transport_tls_setup(struct load *ld, const config_setting_t *s, struct conf_transport *t)
{
	char *err = NULL;

	if (t->tls == TLS_POLICY_NONE)
		return;
	t->tls_ctx = tls_ctx_new(t->tls_ca_file, t->tls_min_version, &err);
	if (t->tls_ctx == NULL) {
		load_error(ld, s, "transport %s: %s", t->name, err);
		free(err);
	}
}

/* headers = [ "From", ... ] of one dkim entry: a malloc'd array of borrowed names. */
static const char **
parse_dkim_headers(struct load *ld, const config_setting_t *s, size_t *n)
{
	const char **names;

	*n = 0;
	if (!is_sequence(ld, s, "dkim.headers"))
		return NULL;
	names = xcalloc((size_t)config_setting_length(s) + 1, sizeof(*names));
	for (int i = 0; i < config_setting_length(s); i++) {
		const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);

		if (config_setting_type(e) != CONFIG_TYPE_STRING) {
			load_error(ld, e, "dkim.headers: expected strings");
			free(names);
			return NULL;
		}
		names[(*n)++] = config_setting_get_string(e);
	}
	return names;
}

/* One dkim entry: its key is read and checked now (dkim_keyring_add). */
static void
parse_dkim_entry(struct load *ld, const config_setting_t *s, struct conf *c)
{
	char *domain = NULL, *selector = NULL, *file = NULL, *alg_name = NULL, *err = NULL;
	const config_setting_t *hdr_s = NULL;
	const char **headers = NULL;
	size_t nheaders = 0;
	enum dkim_alg alg = DKIM_ALG_RSA_SHA256;
	unsigned errs = ld->nerrs;

	if (!is_group(ld, s, "dkim entry"))
		return;
	for (int k = 0; k < config_setting_length(s); k++) {
		const config_setting_t *f = config_setting_get_elem(s, (unsigned)k);
		const char *key = config_setting_name(f);

		if (strcmp(key, "domain") == 0)
			get_string(ld, f, "dkim.domain", &domain);
		else if (strcmp(key, "selector") == 0)
			get_string(ld, f, "dkim.selector", &selector);
		else if (strcmp(key, "key_file") == 0)
			get_string(ld, f, "dkim.key_file", &file);
		else if (strcmp(key, "algorithm") == 0) {
			if (get_string(ld, f, "dkim.algorithm", &alg_name) == 0 &&
			    dkim_alg_parse(alg_name, &alg) < 0)
				load_error(ld, f, "dkim.algorithm: \"%s\" is not ed25519-sha256 or "
				    "rsa-sha256", alg_name);
		} else if (strcmp(key, "headers") == 0) {
			hdr_s = f;
			free(headers);
			headers = parse_dkim_headers(ld, f, &nheaders);
		} else
			unknown_key(ld, f, "dkim");
	}
	if (domain == NULL || selector == NULL || file == NULL || alg_name == NULL)
		load_error(ld, s, "dkim: domain, selector, key_file and algorithm are required");
	else if (ld->nerrs == errs) {
		char *path = resolve_path(ld->base_dir, file);

		if (c->dkim == NULL)
			c->dkim = dkim_keyring_new();
		for (size_t i = 0; i < dkim_keyring_count(c->dkim); i++) {
			const struct dkim_key *k = dkim_keyring_key(c->dkim, i);

			if (strcasecmp(dkim_key_domain(k), domain) == 0 &&
			    strcasecmp(dkim_key_selector(k), selector) == 0)
				load_error(ld, s, "dkim: selector %s of %s is defined twice",
				    selector, domain);
		}
		if (ld->nerrs == errs && dkim_keyring_add(c->dkim, domain, selector, path, alg,
		    headers, nheaders, &err) < 0) {
			load_error(ld, err != NULL && strncmp(err, "headers", 7) == 0 && hdr_s ?
			    hdr_s : s, "dkim %s (%s): %s", domain, selector, err);
			free(err);
		}
		free(path);
	}
	free(headers);
	free(domain);
	free(selector);
	free(file);
	free(alg_name);
}

static void
parse_dkim(struct load *ld, const config_setting_t *s, struct conf *c)
{
	if (!is_sequence(ld, s, "dkim"))
		return;
	for (int i = 0; i < config_setting_length(s); i++)
		parse_dkim_entry(ld, config_setting_get_elem(s, (unsigned)i), c);
}

static void
parse_transport(struct load *ld, const config_setting_t *s, struct conf_transport *t)
{
	const config_setting_t *s4 = NULL, *s6 = NULL, *port_s = NULL, *relay_s = NULL;
	const config_setting_t *auth_s = NULL, *ca_s = NULL;
	bool relay_port = false;
	char what[128];

	if (!is_group(ld, s, "transport"))
		return;
	for (int k = 0; k < config_setting_length(s); k++) {
		const config_setting_t *f = config_setting_get_elem(s, (unsigned)k);
		const char *key = config_setting_name(f);
		char *v = NULL;
		long long n;

		snprintf(what, sizeof(what), "transport %s: %s", t->name, key);
		if (strcmp(key, "family") == 0) {
			if (get_string(ld, f, what, &v) == 0 && family_parse(v, &t->family) == -1)
				load_error(ld, f, "%s: unknown family \"%s\" (any, ipv4, ipv6, "
				    "prefer-ipv4 or prefer-ipv6)", what, v);
		} else if (strcmp(key, "source4") == 0) {
			parse_source(ld, f, t, AF_INET);
			s4 = f;
		} else if (strcmp(key, "source6") == 0) {
			parse_source(ld, f, t, AF_INET6);
			s6 = f;
		} else if (strcmp(key, "helo") == 0)
			get_string(ld, f, what, &t->helo);
		else if (strcmp(key, "helo4") == 0)
			get_string(ld, f, what, &t->helo4);
		else if (strcmp(key, "helo6") == 0)
			get_string(ld, f, what, &t->helo6);
		else if (strcmp(key, "relay") == 0) {
			relay_s = f;
			if (get_string(ld, f, what, &v) == 0 && parse_relay(v, t, &relay_port) == -1)
				load_error(ld, f, "%s: bad relay \"%s\" (host, host:port, [host], "
				    "[host]:port or [address]:port)", what, v);
		} else if (strcmp(key, "port") == 0) {
			port_s = f;
			if (get_int(ld, f, what, 1, 65535, &n) == 0)
				t->port = (uint16_t)n;
		} else if (strcmp(key, "attempt_delay_ms") == 0)
			/* RFC 8305 §5: at least 10 ms, and no more than 2 s. */
			get_unsigned(ld, f, what, 10, 2000, &t->attempt_delay_ms);
		else if (strcmp(key, "connect_timeout_s") == 0)
			get_unsigned(ld, f, what, 1, 3600, &t->connect_timeout_s);
		else if (strcmp(key, "family_fallback") == 0)
			get_bool(ld, f, what, &t->family_fallback);
		else if (strcmp(key, "tls") == 0) {
			if (get_string(ld, f, what, &v) == 0 && tls_policy_parse(v, &t->tls) == -1)
				load_error(ld, f, "%s: unknown TLS policy \"%s\" (none, may, encrypt or "
				    "verify)", what, v);
		} else if (strcmp(key, "tls_ca_file") == 0) {
			ca_s = f;
			if (get_string(ld, f, what, &v) == 0) {
				free(t->tls_ca_file);
				t->tls_ca_file = resolve_path(ld->base_dir, v);
			}
		} else if (strcmp(key, "tls_min_version") == 0) {
			if (get_string(ld, f, what, &v) == 0 &&
			    tls_version_parse(v, &t->tls_min_version) == -1)
				load_error(ld, f, "%s: unknown version \"%s\" (TLSv1, TLSv1.1, TLSv1.2 "
				    "or TLSv1.3)", what, v);
		} else if (strcmp(key, "auth_file") == 0) {
			auth_s = f;
			parse_auth_file(ld, f, t);
		} else if (strcmp(key, "auth_allow_plaintext") == 0)
			get_bool(ld, f, what, &t->auth_allow_plaintext);
		else {
			snprintf(what, sizeof(what), "transport %s", t->name);
			unknown_key(ld, f, what);
		}
		free(v);
	}
	if (relay_port && port_s != NULL)
		load_error(ld, port_s, "transport %s: port given both here and in relay "
		    "(line %u)", t->name, (unsigned)config_setting_source_line(relay_s));
	if (t->family == CONF_FAMILY_IPV4 && s6 != NULL)
		load_error(ld, s6, "transport %s: family \"ipv4\" cannot use source6", t->name);
	if (t->family == CONF_FAMILY_IPV6 && s4 != NULL)
		load_error(ld, s4, "transport %s: family \"ipv6\" cannot use source4", t->name);
	/* Credentials go to a smarthost we name, never to whatever MX a domain lists. */
	if (auth_s != NULL && t->relay_host == NULL)
		load_error(ld, auth_s, "transport %s: auth_file needs relay (a smarthost)",
		    t->name);
	transport_tls_setup(ld, ca_s != NULL ? ca_s : s, t);
}

/* Fills c->transports: "default" first (configured or built in), then the others. */
static void
parse_transports(struct load *ld, const config_setting_t *s, struct conf *c)
{
	int n = 0;
	const config_setting_t *def = NULL;

	if (s != NULL && is_group(ld, s, "transports")) {
		n = config_setting_length(s);
		def = config_setting_get_member(s, "default");
	} else
		s = NULL;
	/* Allocated once: routes keep pointers into this array. */
	c->transports = xcalloc((size_t)n + 1, sizeof(*c->transports));
	transport_defaults(&c->transports[0], "default",
	    def != NULL ? config_setting_source_line(def) : 0);
	if (def != NULL)
		parse_transport(ld, def, &c->transports[0]);
	else
		transport_tls_setup(ld, NULL, &c->transports[0]);
	c->ntransports = 1;
	for (int i = 0; i < n; i++) {
		const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
		struct conf_transport *t;

		if (e == def)
			continue;
		t = &c->transports[c->ntransports++];
		transport_defaults(t, config_setting_name(e), config_setting_source_line(e));
		parse_transport(ld, e, t);
	}
}

/* Lower-cases, drops one trailing dot; NULL when it is not a domain or ".domain". */
static char *
route_domain(const char *text)
{
	char *d = dr_strlower(xstrdup(text));
	size_t len = strlen(d);

	if (len > 1 && d[len - 1] == '.')
		d[--len] = '\0';
	if (!valid_hostname(d[0] == '.' ? d + 1 : d) || d[len - 1] == '.') {
		free(d);
		return NULL;
	}
	return d;
}

static void
parse_route(struct load *ld, const config_setting_t *e, struct conf *c)
{
	const config_setting_t *ds = NULL, *ts = NULL;
	const struct conf_transport *t;
	char *domain = NULL, *tname = NULL, *d;

	if (!is_group(ld, e, "route"))
		return;
	for (int k = 0; k < config_setting_length(e); k++) {
		const config_setting_t *f = config_setting_get_elem(e, (unsigned)k);
		const char *key = config_setting_name(f);

		if (strcmp(key, "domain") == 0 && get_string(ld, f, "route domain", &domain) == 0)
			ds = f;
		else if (strcmp(key, "transport") == 0 &&
		    get_string(ld, f, "route transport", &tname) == 0)
			ts = f;
		else if (strcmp(key, "domain") != 0 && strcmp(key, "transport") != 0)
			unknown_key(ld, f, "route");
	}
	if (config_setting_get_member(e, "domain") == NULL)
		load_error(ld, e, "route: missing domain");
	if (config_setting_get_member(e, "transport") == NULL)
		load_error(ld, e, "route: missing transport");
	if (ds == NULL || ts == NULL)
		goto out;
	if ((d = route_domain(domain)) == NULL) {
		load_error(ld, ds, "route: bad domain \"%s\"", domain);
		goto out;
	}
	if ((t = conf_transport_find(c, tname)) == NULL) {
		load_error(ld, ts, "route for %s: unknown transport \"%s\"", d, tname);
		free(d);
		goto out;
	}
	for (size_t i = 0; i < c->nroutes; i++)
		if (strcmp(c->routes[i].domain, d) == 0) {
			load_error(ld, ds, "route for %s: duplicate (first defined at line %d)",
			    d, c->routes[i].line);
			free(d);
			goto out;
		}
	c->routes[c->nroutes].domain = d;
	/* conf_transport_find returns a pointer into c->transports, which we own. */
	c->routes[c->nroutes].transport = &c->transports[t - c->transports];
	c->routes[c->nroutes].line = config_setting_source_line(e);
	c->nroutes++;
out:
	free(domain);
	free(tname);
}

static void
parse_routes(struct load *ld, const config_setting_t *s, struct conf *c)
{
	int n;

	if (!is_sequence(ld, s, "routes"))
		return;
	n = config_setting_length(s);
	c->routes = xcalloc((size_t)n, sizeof(*c->routes));
	for (int i = 0; i < n; i++)
		parse_route(ld, config_setting_get_elem(s, (unsigned)i), c);
}

/* ---- paths -------------------------------------------------------------------- */

/* Removes "." and empty components and folds "name/.." in an absolute path, in place. */
static void
path_clean(char *path)
{
	char *out = path, *p = path;

	while (*p != '\0') {
		char *seg;
		size_t n;

		while (*p == '/')
			p++;
		seg = p;
		while (*p != '\0' && *p != '/')
			p++;
		n = (size_t)(p - seg);
		if (n == 0 || (n == 1 && seg[0] == '.'))
			continue;
		if (n == 2 && seg[0] == '.' && seg[1] == '.') {
			while (out > path && *--out != '/')
				;
			continue;
		}
		*out++ = '/';
		memmove(out, seg, n);
		out += n;
	}
	if (out == path)
		*out++ = '/';
	*out = '\0';
}

/* An absolute form of dir: realpath when it exists (so ".." later is exact), else cwd-joined. */
static char *
absolute_dir(const char *dir)
{
	char *real = realpath(dir, NULL), *cwd, *p;

	if (real != NULL) {
		p = xstrdup(real);
		free(real);
		return p;
	}
	if (dir[0] == '/')
		return xstrdup(dir);
	if ((cwd = getcwd(NULL, 0)) == NULL)
		return xstrdup(dir);
	p = xasprintf("%s/%s", cwd, dir);
	free(cwd);
	return p;
}

static char *
resolve_path(const char *base_dir, const char *path)
{
	char *base, *p;

	if (path[0] == '/') {
		p = xstrdup(path);
	} else {
		base = absolute_dir(base_dir);
		p = xasprintf("%s/%s", base, path);
		free(base);
	}
	path_clean(p);
	return p;
}

/* ---- inbound TLS and AUTH ------------------------------------------------------ */

/* A file holding a secret should be readable by the daemon only: warn otherwise. */
static void
warn_if_readable(struct load *ld, const config_setting_t *s, const char *what,
    const char *path, int fd)
{
	struct stat st;

	if (fstat(fd, &st) == 0 && (st.st_mode & (S_IRGRP | S_IROTH)) != 0)
		load_warning(ld, s, "%s %s is readable by %s (mode %04o); chmod 600 it", what,
		    path, (st.st_mode & S_IROTH) ? "everyone" : "its group",
		    (unsigned)(st.st_mode & 07777));
}

/* A path-valued key: absolute (resolved against the config file), or NULL reported. */
static char *
get_path(struct load *ld, const config_setting_t *s, const char *what)
{
	char *v = NULL, *path;

	if (get_string(ld, s, what, &v) == -1)
		return NULL;
	path = resolve_path(ld->base_dir, v);
	free(v);
	return path;
}

/* tls_cert and tls_key: both or neither; the server context is made (and checked) now. */
static void
inbound_tls_setup(struct load *ld, const config_setting_t *cert_s,
    const config_setting_t *key_s, struct conf *c)
{
	char *err = NULL;
	FILE *fp;

	if (cert_s == NULL && key_s == NULL)
		return;
	if (cert_s == NULL || key_s == NULL) {
		load_error(ld, cert_s != NULL ? cert_s : key_s, "%s without %s",
		    cert_s != NULL ? "tls_cert" : "tls_key", cert_s != NULL ? "tls_key" : "tls_cert");
		return;
	}
	c->tls_cert = get_path(ld, cert_s, "tls_cert");
	c->tls_key = get_path(ld, key_s, "tls_key");
	if (c->tls_cert == NULL || c->tls_key == NULL)
		return;
	if ((fp = fopen(c->tls_key, "re")) == NULL) {
		load_error(ld, key_s, "tls_key: cannot read %s: %s", c->tls_key, strerror(errno));
		return;
	}
	warn_if_readable(ld, key_s, "tls_key", c->tls_key, fileno(fp));
	fclose(fp);
	c->tls_server = tls_server_ctx_new(c->tls_cert, c->tls_key, &err);
	if (c->tls_server == NULL) {
		load_error(ld, cert_s, "tls_cert/tls_key: %s", err);
		free(err);
	}
}

/* users_file = "PATH": read now (and at every reload). */
static void
parse_users_file(struct load *ld, const config_setting_t *s, struct conf *c)
{
	char *err = NULL;
	FILE *fp;

	if ((c->users_file = get_path(ld, s, "users_file")) == NULL)
		return;
	if ((fp = fopen(c->users_file, "re")) != NULL) {
		warn_if_readable(ld, s, "users_file", c->users_file, fileno(fp));
		fclose(fp);
	}
	if ((c->users = users_load(c->users_file, &err)) == NULL) {
		load_error(ld, s, "users_file: %s%s%s", strncmp(err, "line ", 5) == 0 ?
		    c->users_file : "", strncmp(err, "line ", 5) == 0 ? ": " : "", err);
		free(err);
		return;
	}
	for (size_t i = 0; i < c->nlisten; i++)
		if (c->listen[i].tls != CONF_LISTEN_TLS_NONE)
			return;
	load_warning(ld, s, "users_file is set but no listener offers TLS: AUTH is offered "
	    "only over TLS, so never");
}

/* ---- loading ------------------------------------------------------------------ */

static struct conf *
conf_new(const char *path)
{
	struct conf *c = xcalloc(1, sizeof(*c));
	char host[256];

	c->refs = 1;
	c->path = xstrdup(path);
	if (gethostname(host, sizeof(host)) == -1 || host[0] == '\0')
		dr_strlcpy(host, "localhost", sizeof(host));
	host[sizeof(host) - 1] = '\0';
	c->hostname = xstrdup(host);
	c->max_message_size = 10240000;
	c->max_recipients = 1000;
	c->max_connections = 1000;
	c->max_connections_per_ip = 50;
	c->max_errors = 20;
	c->log_target = LOG_TARGET_STDERR;
	c->log_level = LOG_LEVEL_INFO;
	c->dns.timeout_ms = 2000;
	c->dns.tries = 3;
	c->queue.retry_min_s = 300;
	c->queue.retry_max_s = 4000;
	c->queue.max_lifetime_s = 432000;
	c->queue.delay_warning_s = 0;
	c->queue.max_active = 100;
	c->queue.destination_concurrency = 20;
	c->queue.connection_cache_s = 2;
	c->timeouts.command_timeout_s = 300;
	c->timeouts.data_timeout_s = 300;
	c->timeouts.smtp_timeout_s = 300;
	c->prefer_family = CONF_FAMILY_ANY;
	return c;
}

static void
conf_default_lists(struct conf *c, bool has_tls_cert)
{
	if (c->listen == NULL) {
		c->listen = xcalloc(2, sizeof(*c->listen));
		netaddr_parse(&c->listen[0].addr, "127.0.0.1", CONF_LISTEN_PORT);
		netaddr_parse(&c->listen[1].addr, "::1", CONF_LISTEN_PORT);
		c->listen[0].tls = c->listen[1].tls = has_tls_cert ? CONF_LISTEN_TLS_STARTTLS :
		    CONF_LISTEN_TLS_NONE;
		c->nlisten = 2;
	}
	if (c->relay_networks == NULL) {
		c->relay_networks = xcalloc(2, sizeof(*c->relay_networks));
		netaddr_prefix_parse(&c->relay_networks[0], "127.0.0.0/8");
		netaddr_prefix_parse(&c->relay_networks[1], "::1/128");
		c->nrelay_networks = 2;
	}
}

static void
conf_build(struct load *ld, config_setting_t *root, struct conf *c, const char *base_dir)
{
	const config_setting_t *transports = NULL, *routes = NULL;
	const config_setting_t *tls_cert = NULL, *tls_key = NULL, *users_file = NULL;
	char *spool = NULL, *control = NULL;
	long long n;

	ld->base_dir = base_dir;
	ld->conf = c;
	/* Listen entries default to STARTTLS with a certificate, wherever it is in the file. */
	ld->has_tls_cert = config_setting_get_member(root, "tls_cert") != NULL &&
	    config_setting_get_member(root, "tls_key") != NULL;
	for (int i = 0; i < config_setting_length(root); i++) {
		const config_setting_t *s = config_setting_get_elem(root, (unsigned)i);
		const char *key = config_setting_name(s);

		if (strcmp(key, "hostname") == 0) {
			if (get_string(ld, s, "hostname", &c->hostname) == 0 &&
			    !valid_hostname(c->hostname))
				load_error(ld, s, "hostname: \"%s\" is not a host name",
				    c->hostname);
		} else if (strcmp(key, "postmaster") == 0) {
			if (get_string(ld, s, "postmaster", &c->postmaster) == 0 &&
			    !smtp_mailbox_valid(c->postmaster, false))
				load_error(ld, s, "postmaster: \"%s\" is not a mail address "
				    "(local-part@domain, ASCII)", c->postmaster);
		} else if (strcmp(key, "spool_dir") == 0)
			get_string(ld, s, "spool_dir", &spool);
		else if (strcmp(key, "spool_sync") == 0)
			parse_spool_sync(ld, s, c);
		else if (strcmp(key, "control_socket") == 0)
			get_string(ld, s, "control_socket", &control);
		else if (strcmp(key, "listen") == 0)
			parse_listen(ld, s, c);
		else if (strcmp(key, "relay_networks") == 0)
			parse_prefixes(ld, s, "relay_networks", &c->relay_networks,
			    &c->nrelay_networks);
		else if (strcmp(key, "trusted_proxies") == 0)
			parse_prefixes(ld, s, "trusted_proxies", &c->trusted_proxies,
			    &c->ntrusted_proxies);
		else if (strcmp(key, "max_message_size") == 0) {
			if (get_int(ld, s, "max_message_size", 1, LLONG_MAX, &n) == 0)
				c->max_message_size = (size_t)n;
		} else if (strcmp(key, "max_recipients") == 0) {
			if (get_int(ld, s, "max_recipients", 1, 1000000, &n) == 0)
				c->max_recipients = (size_t)n;
		} else if (strcmp(key, "log") == 0)
			parse_log(ld, s, c);
		else if (strcmp(key, "dns") == 0)
			parse_dns(ld, s, c);
		else if (strcmp(key, "queue") == 0)
			parse_queue(ld, s, c);
		else if (strcmp(key, "timeouts") == 0)
			parse_timeouts(ld, s, c);
		else if (strcmp(key, "transports") == 0)
			transports = s;
		else if (strcmp(key, "routes") == 0)
			routes = s;
		else if (strcmp(key, "family_fallback_patterns") == 0)
			parse_patterns(ld, s, c);
		else if (strcmp(key, "prefer_family") == 0)
			parse_prefer_family(ld, s, c);
		else if (strcmp(key, "metrics_listen") == 0)
			parse_metrics_listen(ld, s, c);
		else if (strcmp(key, "dkim") == 0)
			parse_dkim(ld, s, c);
		else if (strcmp(key, "tls_cert") == 0)
			tls_cert = s;
		else if (strcmp(key, "tls_key") == 0)
			tls_key = s;
		else if (strcmp(key, "users_file") == 0)
			users_file = s;
		else if (parse_limits_key(ld, s, key, c))
			continue;
		else
			load_error(ld, s, "unknown top-level key \"%s\"", key);
	}
	inbound_tls_setup(ld, tls_cert, tls_key, c);
	/* Routes name transports, which may come later in the file. */
	parse_transports(ld, transports, c);
	if (routes != NULL)
		parse_routes(ld, routes, c);
	conf_default_lists(c, ld->has_tls_cert);
	/* After the listeners: whether any offers TLS decides a warning. */
	if (users_file != NULL)
		parse_users_file(ld, users_file, c);
	/* A PROXY header from anyone would let anyone choose its address (spec 2). */
	if (ld->proxy_listen != NULL && c->ntrusted_proxies == 0)
		load_error(ld, ld->proxy_listen, "listen entry: proxy_protocol = true needs "
		    "trusted_proxies (the load balancers' addresses)");
	/* After the loop: hostname may come later in the file. */
	if (c->postmaster == NULL)
		c->postmaster = xasprintf("postmaster@%s", c->hostname);
	c->spool_dir = resolve_path(base_dir, spool != NULL ? spool : CONF_DEFAULT_SPOOL_DIR);
	free(spool);
	if (control != NULL)
		c->control_socket = resolve_path(base_dir, control);
	else
		c->control_socket = xasprintf("%s/control", c->spool_dir);
	free(control);
}

/* Parses (cfg already read or failed), validates, and hands back the result or NULL. */
static struct conf *
conf_finish(struct load *ld, config_t *cfg, bool read_ok, const char *path,
    const char *base_dir, char **errors)
{
	struct conf *c = NULL;

	if (!read_ok) {
		const char *file = config_error_file(cfg);
		char *text = xasprintf("%s:%d: %s\n", file != NULL ? file : ld->name,
		    config_error_line(cfg), config_error_text(cfg));
		load_append(ld, text);
		free(text);
		ld->nerrs++;
	} else {
		c = conf_new(path);
		conf_build(ld, config_root_setting(cfg), c, base_dir);
		if (ld->nerrs > 0) {
			conf_free(c);
			c = NULL;
		}
	}
	config_destroy(cfg);
	if (c == NULL && errors != NULL) {
		size_t old = *errors != NULL ? strlen(*errors) : 0;
		*errors = xrealloc(*errors, old + ld->errlen + 1);
		memcpy(*errors + old, ld->errs != NULL ? ld->errs : "", ld->errlen + 1);
	}
	free(ld->errs);
	return c;
}

struct conf *
conf_load(const char *path, bool check_host, char **errors)
{
	struct load ld = { .name = path, .check_host = check_host };
	config_t cfg;
	char *dir, *slash;
	FILE *fp;
	struct conf *c;

	/* libconfig says only "file I/O error"; tell the operator why. */
	if ((fp = fopen(path, "r")) == NULL) {
		if (errors != NULL) {
			char *text = xasprintf("%s: cannot read: %s\n", path, strerror(errno));
			size_t old = *errors != NULL ? strlen(*errors) : 0;
			*errors = xrealloc(*errors, old + strlen(text) + 1);
			memcpy(*errors + old, text, strlen(text) + 1);
			free(text);
		}
		return NULL;
	}
	fclose(fp);
	dir = xstrdup(path);
	if ((slash = strrchr(dir, '/')) == NULL) {
		free(dir);
		dir = xstrdup(".");
	} else if (slash == dir)
		slash[1] = '\0';
	else
		*slash = '\0';
	config_init(&cfg);
	config_set_include_dir(&cfg, dir);
	c = conf_finish(&ld, &cfg, config_read_file(&cfg, path) == CONFIG_TRUE, path, dir,
	    errors);
	free(dir);
	return c;
}

struct conf *
conf_load_string(const char *text, const char *name, const char *base_dir,
    bool check_host, char **errors)
{
	struct load ld = { .name = name, .check_host = check_host };
	config_t cfg;

	config_init(&cfg);
	config_set_include_dir(&cfg, base_dir);
	return conf_finish(&ld, &cfg, config_read_string(&cfg, text) == CONFIG_TRUE, name,
	    base_dir, errors);
}

struct conf *
conf_ref(struct conf *c)
{
	c->refs++;
	return c;
}

static void
transport_free(struct conf_transport *t)
{
	free(t->name);
	free(t->helo);
	free(t->helo4);
	free(t->helo6);
	free(t->relay_host);
	free(t->tls_ca_file);
	tls_ctx_free(t->tls_ctx);
	free(t->auth_file);
	if (t->auth_user != NULL)
		OPENSSL_cleanse(t->auth_user, strlen(t->auth_user));
	if (t->auth_pass != NULL)
		OPENSSL_cleanse(t->auth_pass, strlen(t->auth_pass));
	free(t->auth_user);
	free(t->auth_pass);
}

void
conf_free(struct conf *c)
{
	if (c == NULL || --c->refs > 0)
		return;
	free(c->path);
	free(c->hostname);
	free(c->postmaster);
	free(c->spool_dir);
	free(c->control_socket);
	free(c->user);
	free(c->group);
	free(c->listen);
	free(c->relay_networks);
	free(c->trusted_proxies);
	for (size_t i = 0; i < c->dns.nservers; i++)
		free(c->dns.servers[i]);
	free(c->dns.servers);
	for (size_t i = 0; i < c->ntransports; i++)
		transport_free(&c->transports[i]);
	free(c->transports);
	for (size_t i = 0; i < c->nroutes; i++)
		free(c->routes[i].domain);
	free(c->routes);
	for (size_t i = 0; i < c->nfamily_fallback_patterns; i++)
		free(c->family_fallback_patterns[i]);
	free(c->family_fallback_patterns);
	free(c->warnings);
	dkim_keyring_free(c->dkim);
	free(c->tls_cert);
	free(c->tls_key);
	tls_ctx_free(c->tls_server);
	free(c->users_file);
	users_free(c->users);
	free(c);
}

const struct conf_transport *
conf_transport_find(const struct conf *c, const char *name)
{
	for (size_t i = 0; i < c->ntransports; i++)
		if (strcmp(c->transports[i].name, name) == 0)
			return &c->transports[i];
	return NULL;
}
