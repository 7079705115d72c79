/*
 * conf: the configuration as loaded from a libconfig file and validated. A struct conf
 * is immutable once loaded; reload builds a new one and swaps it in (users hold a
 * reference for the duration of one delivery). Every validation error is reported as
 * "FILE:LINE: what is wrong", all of them, not just the first.
 */
#ifndef DR_CONF_H
#define DR_CONF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "log.h"
#include "netaddr.h"
#include "tls.h"

struct dkim_keyring;
struct users;

/* Where the queue lives when the file says nothing. */
#define CONF_DEFAULT_SPOOL_DIR "/var/spool/dualrelay"

enum conf_family {
	CONF_FAMILY_ANY = 0,     /* both; IPv6 first, as RFC 6724 orders */
	CONF_FAMILY_IPV4,        /* IPv4 only */
	CONF_FAMILY_IPV6,        /* IPv6 only */
	CONF_FAMILY_PREFER_IPV4, /* both; IPv4 first */
	CONF_FAMILY_PREFER_IPV6, /* both; IPv6 first */
};

/* Inbound TLS of one listener: tls = "none" | "starttls" | "implicit". */
enum conf_listen_tls {
	CONF_LISTEN_TLS_NONE = 0,  /* plaintext only; STARTTLS not offered */
	CONF_LISTEN_TLS_STARTTLS,  /* STARTTLS offered (RFC 3207); the default with tls_cert */
	CONF_LISTEN_TLS_IMPLICIT,  /* TLS from the first byte (RFC 8314, port 465 style) */
};

struct conf_listen {
	struct netaddr addr;     /* address and port to bind */
	enum conf_listen_tls tls; /* needs tls_cert/tls_key unless NONE */
	/*
	 * proxy_protocol = true: every connection starts with a PROXY protocol header (v1
	 * or v2, proxy_proto.h) from one of trusted_proxies, naming the real client. Read
	 * at start only, like the address.
	 */
	bool proxy_protocol;
};

struct conf_transport {
	char *name;
	enum conf_family family;
	bool has_source4, has_source6;
	struct netaddr source4;  /* bind outbound IPv4 connections here (port 0) */
	struct netaddr source6;  /* bind outbound IPv6 connections here (port 0) */
	char *helo;              /* EHLO name; NULL = global hostname */
	char *helo4, *helo6;     /* per-family EHLO names; NULL = helo */
	/*
	 * Smarthost: relay_host is a host name or an address literal (without brackets).
	 * relay_no_mx is set when the name was given in brackets ("[host]") or is an
	 * address literal: look up A/AAAA (or use the literal), skip MX.
	 */
	char *relay_host;        /* NULL: deliver to the recipient domain's MX */
	bool relay_no_mx;
	uint16_t port;           /* destination port (default 25; "relay = h:PORT" sets it) */
	unsigned attempt_delay_ms;  /* RFC 8305 connection attempt delay (default 250, 10..2000) */
	unsigned connect_timeout_s; /* per connection attempt (default 30) */
	bool family_fallback;    /* SMTP-level retry over the other family (default true) */
	/*
	 * Outbound TLS (tls.h): tls = "none" | "may" | "encrypt" | "verify" (default "may").
	 * "verify" matches the certificate against the MX host name, or the relay host
	 * name for a smarthost transport. tls_ca_file (PEM) replaces the system CA store;
	 * tls_min_version is "TLSv1" .. "TLSv1.3" (default "TLSv1.2").
	 */
	enum tls_policy tls;
	char *tls_ca_file;       /* absolute; NULL: the system default store */
	int tls_min_version;     /* OpenSSL TLS1_x_VERSION */
	struct tls_ctx *tls_ctx; /* made at load from the above, owned; NULL for "none" */
	/*
	 * Smarthost AUTH (RFC 4954), relay transports only: auth_file holds the user name
	 * and the password, either on one line separated by white space ("user password";
	 * the password is the rest of the line) or on two lines (user, then password).
	 * It is read at load (and reload); credentials are never sent without TLS unless
	 * auth_allow_plaintext = true.
	 */
	char *auth_file;         /* absolute; NULL: no AUTH */
	char *auth_user, *auth_pass; /* read from auth_file; wiped when freed */
	bool auth_allow_plaintext;
	int line;                /* where it was defined, for diagnostics */
};

struct conf_route {
	char *domain;            /* "example.org" exact, or ".example.com" subdomains */
	struct conf_transport *transport; /* points into conf->transports */
	int line;
};

/* spool_sync: fsync each file, or one syncfs per batch (spool_commit.h). */
enum conf_spool_sync {
	CONF_SPOOL_SYNC_AUTO,       /* filesystem when spool_dir is a mount point, else file */
	CONF_SPOOL_SYNC_FILE,
	CONF_SPOOL_SYNC_FILESYSTEM,
};

struct conf {
	unsigned refs;           /* conf_ref/conf_free */
	char *path;              /* the file this was loaded from */
	char *hostname;          /* EHLO name and Received: by; default: gethostname() */
	char *postmaster;        /* where RCPT TO:<Postmaster> goes (RFC 5321 4.5.1), from
	                            any client; default "postmaster@" hostname */
	char *spool_dir;         /* absolute (resolved against the config file's directory);
	                            default /var/spool/dualrelay */
	enum conf_spool_sync spool_sync; /* how a batch of accepted messages is made durable;
	                            default auto. Read at start only. */
	char *control_socket;    /* dualrelayctl's unix socket; default SPOOL/control */
	bool has_metrics_listen; /* metrics_listen = "ADDR:PORT": Prometheus /metrics over */
	struct netaddr metrics_listen; /* HTTP (metrics.h); default off. Read at start only. */
	struct conf_listen *listen; /* default 127.0.0.1:2525 and [::1]:2525; port default 25 */
	size_t nlisten;
	struct netaddr_prefix *relay_networks; /* default: 127.0.0.0/8 and ::1/128 */
	size_t nrelay_networks;
	/*
	 * Who may connect to a proxy_protocol listener (and so name the client): CIDR
	 * list, empty by default; a config with a proxy_protocol listener must set it.
	 */
	struct netaddr_prefix *trusted_proxies;
	size_t ntrusted_proxies;
	size_t max_message_size; /* bytes; default 10240000 (Postfix's message_size_limit) */
	size_t max_recipients;   /* per transaction; default 1000 */
	/*
	 * Inbound limits. A connection over max_connections (sessions at once) or over
	 * max_connections_per_ip (sessions from one client address; 0 = no limit) gets
	 * 421 4.7.0 and is closed at once (Postfix smtpd_client_connection_count_limit).
	 * After max_errors error replies a session gets 421 4.7.0 and is closed (Postfix
	 * smtpd_hard_error_limit).
	 */
	unsigned max_connections;        /* default 1000 */
	unsigned max_connections_per_ip; /* default 50 */
	unsigned max_errors;             /* default 20 */
	/*
	 * The account dualrelayd runs as: started as root, it prepares the spool and opens
	 * its sockets, then becomes user (group: the given one, else user's primary group).
	 * Root without user refuses to start. Read at start only.
	 */
	char *user;              /* NULL: none */
	char *group;             /* NULL: user's primary group */
	enum log_target log_target;
	enum log_level log_level;

	struct {
		char **servers;      /* "ADDR" / "ADDR:PORT" / "[V6]:PORT"; none = /etc/resolv.conf */
		size_t nservers;
		unsigned timeout_ms; /* default 2000 */
		unsigned tries;      /* default 3 */
	} dns;

	struct {
		unsigned retry_min_s;    /* default 300 */
		unsigned retry_max_s;    /* default 4000 */
		unsigned max_lifetime_s; /* default 432000 (5 days) */
		unsigned delay_warning_s;/* default 0 (off) */
		unsigned max_active;     /* outbound deliveries at once (global bound); default 100 */
		unsigned connection_cache_s; /* idle outbound sessions kept this long for the
		                            next message (Postfix smtp_connection_cache_time_limit);
		                            default 2, 0 = no reuse */
		unsigned destination_concurrency; /* per recipient domain; default 20, as
		                            Postfix's default_destination_concurrency_limit */
	} queue;

	struct {
		unsigned command_timeout_s; /* inbound command wait (default 300) */
		unsigned data_timeout_s;    /* inbound DATA between chunks (default 300) */
		unsigned session_timeout_s; /* inbound session as a whole (default 0: no cap) */
		unsigned smtp_timeout_s;    /* outbound per-reply wait (default 300) */
	} timeouts;

	struct conf_transport *transports; /* always contains "default" */
	size_t ntransports;
	struct conf_route *routes;
	size_t nroutes;
	char **family_fallback_patterns;   /* extra patterns (case-insensitive substrings) */
	size_t nfamily_fallback_patterns;
	/*
	 * Ordering used by transports whose family is "any": CONF_FAMILY_ANY (default,
	 * IPv6 first as RFC 6724), CONF_FAMILY_PREFER_IPV4 or CONF_FAMILY_PREFER_IPV6.
	 * The file says prefer_family = "any" | "ipv4" | "ipv6" (or "prefer-ipv4"/"-ipv6").
	 */
	enum conf_family prefer_family;
	/*
	 * Things worth fixing that do not stop the daemon, "FILE:LINE: message\n" each
	 * (e.g. an auth_file readable by group or others); NULL when none. dualrelayd -n
	 * prints them, the daemon logs them.
	 */
	char *warnings;
	/*
	 * DKIM signing (dkim.h): dkim = ( { domain = "example.org"; selector = "s2026";
	 * key_file = "PATH"; algorithm = "ed25519-sha256" | "rsa-sha256"; headers = [ ... ]
	 * (optional: replaces the default set) }, ... ). Keys are read and checked at load
	 * (file mode, type, RSA size); mail is signed with the keys of its From: domain or of
	 * the closest parent domain that has any. NULL when nothing is configured.
	 */
	struct dkim_keyring *dkim;
	/*
	 * Inbound TLS: tls_cert (PEM chain, leaf first) and tls_key (PEM), both absolute,
	 * loaded and checked against each other at load into tls_server (owned; NULL when
	 * not configured). Listeners use it according to their tls key.
	 */
	char *tls_cert, *tls_key;
	struct tls_ctx *tls_server;
	/*
	 * Inbound AUTH (RFC 4954, PLAIN and LOGIN, only over TLS): users_file (absolute)
	 * holds "user:crypt-hash" lines (users.h), read at load and reload into users
	 * (owned). NULL: AUTH is not offered.
	 */
	char *users_file;
	struct users *users;
};

/*
 * Loads and validates path (@include files resolve against its directory). On success
 * returns a conf (free with conf_free) and leaves *errors alone. On failure returns
 * NULL and appends one "FILE:LINE: message\n" per error to *errors (NULL or a malloc'd
 * string; caller frees; errors may be NULL to discard). A file that cannot be opened
 * gives one "FILE: cannot read: REASON\n" line. check_host enables checks that look
 * at this host (source addresses configured here); unit tests pass false.
 */
struct conf *conf_load(const char *path, bool check_host, char **errors);
/* The same from a string, for tests; name is FILE in messages; relative paths and
 * @include resolve against base_dir. */
struct conf *conf_load_string(const char *text, const char *name, const char *base_dir,
    bool check_host, char **errors);
/* Reference counting: conf_load returns one reference; conf_free drops one and frees at zero. */
struct conf *conf_ref(struct conf *c);
void conf_free(struct conf *c);

const struct conf_transport *conf_transport_find(const struct conf *c, const char *name);
const char *conf_family_name(enum conf_family f);
/* "none", "starttls", "implicit". */
const char *conf_listen_tls_name(enum conf_listen_tls t);

#endif
