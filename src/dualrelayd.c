/*
 * dualrelayd: the daemon's entry point. Parses the command line, loads and checks the
 * configuration, wires the modules together (spool -> queue <- smtp_server; queue ->
 * delivery -> dns/race/smtp_client) on one libevent loop, and handles signals: TERM and
 * INT stop accepting and let sessions finish (bounded), HUP reloads the configuration
 * (an invalid one is refused and the running one kept). Started as root it sets up
 * what needs root, then runs as the configured user (privdrop.h); it tells systemd
 * when it is ready, reloading and stopping (sdnotify.h).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "auth_verify.h"
#include "conf.h"
#include "conncache.h"
#include "control.h"
#include "dkim.h"
#include "dns.h"
#include "explain.h"
#include "health.h"
#include "log.h"
#include "metrics.h"
#include "privdrop.h"
#include "queue.h"
#include "sdnotify.h"
#include "selfcheck.h"
#include "smtp_server.h"
#include "spool.h"
#include "spool_commit.h"
#include "stats.h"
#include "util.h"

#define SHUTDOWN_GRACE_S 10

struct daemon {
	const char *conf_path;
	struct conf *conf;
	struct event_base *base;
	struct dns *dns;
	struct spool *spool;
	struct spool_committer *committer; /* group commit of accepted messages */
	struct auth_verifier *verifier; /* AUTH password checks off the event loop */
	struct health *health;
	struct stats stats;
	struct conncache *cache;
	struct queue *queue;
	struct smtp_server *server;
	struct control *control;
	struct metrics *metrics;     /* NULL unless metrics_listen is set */
	struct selfcheck *selfcheck;
	struct event *sig_term, *sig_int, *sig_hup, *shutdown_tick;
	uint64_t shutdown_deadline;
	bool drop;                   /* started as root: become ids once set up */
	bool stay_root;              /* -R: development runs as root, no user set */
	struct privdrop_ids ids;
};

static void
usage(FILE *out)
{
	fprintf(out,
	    "usage: dualrelayd [-fnhkKRV] [-c config] [-r domain]\n"
	    "  -c FILE  configuration file (default " SYSCONFDIR "/dualrelay.conf)\n"
	    "  -f       stay in the foreground and log to stderr\n"
	    "  -n       check the configuration and exit (0 when valid, 1 with the errors);\n"
	    "           also checks the reverse DNS of the configured source addresses\n"
	    "  -k       print the DNS TXT record to publish for each DKIM selector, and exit\n"
	    "  -K       the same, and check each against the record published in DNS\n"
	    "           (exit 1 when one is missing or differs)\n"
	    "  -r DOMAIN  explain how mail to DOMAIN would be routed now, and exit\n"
	    "  -R       started as root without user in the configuration: stay root\n"
	    "           (development only; make run uses it)\n"
	    "  -V       print the version and exit\n");
}

/* The configuration's warnings (conf.h), one per line: to stderr, or logged. */
static void
report_warnings(const struct conf *c, bool to_stderr)
{
	char *copy, *save = NULL;

	if (c->warnings == NULL)
		return;
	copy = xstrdup(c->warnings);
	for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		if (to_stderr)
			fprintf(stderr, "warning: %s\n", line);
		else
			log_warn("%s", line);
	}
	free(copy);
}

static struct conf *
load_conf(const char *path, bool report_to_stderr)
{
	char *errors = NULL;
	struct conf *c = conf_load(path, true, &errors);
	if (c != NULL)
		report_warnings(c, report_to_stderr);
	if (c == NULL) {
		if (report_to_stderr)
			fputs(errors ? errors : "configuration error\n", stderr);
		else if (errors) {
			/* One log line per error. */
			for (char *line = strtok(errors, "\n"); line; line = strtok(NULL, "\n"))
				log_error("%s", line);
		}
	}
	free(errors);
	return c;
}

static void
on_shutdown_tick(evutil_socket_t fd, short what, void *arg)
{
	struct daemon *d = arg;
	(void)fd;
	(void)what;
	unsigned left = smtp_server_session_count(d->server);
	if (left == 0 || dr_monotonic_ms() >= d->shutdown_deadline) {
		if (left)
			log_warn("shutdown: closing %u session%s still in progress", left,
			    left == 1 ? "" : "s");
		event_base_loopbreak(d->base);
	}
}

static void
on_terminate(evutil_socket_t sig, short what, void *arg)
{
	struct daemon *d = arg;
	(void)what;
	if (d->shutdown_tick) {
		log_info("signal %d again: exiting now", (int)sig);
		event_base_loopbreak(d->base);
		return;
	}
	log_info("signal %d: no new connections, waiting up to %d s for sessions", (int)sig,
	    SHUTDOWN_GRACE_S);
	sdnotify("STOPPING=1\nSTATUS=stopping: waiting for sessions in progress");
	smtp_server_stop_listening(d->server);
	d->shutdown_deadline = dr_monotonic_ms() + SHUTDOWN_GRACE_S * 1000u;
	d->shutdown_tick = event_new(d->base, -1, EV_PERSIST, on_shutdown_tick, d);
	struct timeval tv = { 0, 100000 };
	event_add(d->shutdown_tick, &tv);
}

/*
 * Loads the file again; an invalid one is refused and the running one kept. systemd
 * hears RELOADING=1 before and READY=1 after, whatever the outcome (the daemon keeps
 * running either way).
 */
static int
daemon_reload(void *arg, char **errors)
{
	struct daemon *d = arg;
	char *errs = NULL;
	sdnotify_reloading();
	struct conf *c = conf_load(d->conf_path, true, &errs);
	if (c == NULL) {
		sdnotify("READY=1\nSTATUS=reload failed, running the previous configuration");
		log_error("reload: %s has errors; keeping the running configuration", d->conf_path);
		char *copy = xstrdup(errs ? errs : ""), *save = NULL;
		for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
			log_error("%s", line);
		free(copy);
		if (errors)
			*errors = errs ? errs : xstrdup("configuration error\n");
		else
			free(errs);
		return -1;
	}
	free(errs);
	report_warnings(c, false);
	smtp_server_set_conf(d->server, c);
	queue_set_conf(d->queue, c);
	conf_free(d->conf);
	d->conf = c;
	log_set_level(c->log_level);
	log_info("reload: configuration %s loaded", d->conf_path);
	sdnotify("READY=1\nSTATUS=accepting mail (configuration reloaded)");
	return 0;
}

static void
on_reload(evutil_socket_t sig, short what, void *arg)
{
	(void)sig;
	(void)what;
	daemon_reload(arg, NULL);
}

/* The SMTP server committed a message: the queue takes it over. */
static void
on_message(struct envelope *e, void *arg)
{
	queue_add(arg, e);
}

static void
on_selfcheck(unsigned warnings, void *arg)
{
	struct daemon *d = arg;
	(void)warnings; /* each one was logged */
	selfcheck_free(d->selfcheck);
	d->selfcheck = NULL;
}

static int
daemonize(void)
{
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid > 0)
		_exit(0);
	if (setsid() < 0)
		return -1;
	int fd = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (fd >= 0) {
		dup2(fd, 0);
		dup2(fd, 1);
		dup2(fd, 2);
		if (fd > 2)
			close(fd);
	}
	return chdir("/");
}

/*
 * Started as root: everything that needed root is done. Give the spool (and the
 * control socket, wherever it is) to the account, become it, and check that a reload
 * will still be able to read the configuration (key files, auth files) as it.
 */
static int
daemon_drop(struct daemon *d)
{
	const struct conf *c = d->conf;
	char *errs = NULL;

	if (privdrop_own_tree(c->spool_dir, &d->ids) < 0 ||
	    privdrop_own_path(c->control_socket, &d->ids) < 0 ||
	    privdrop_switch(&d->ids) < 0)
		return -1;
	log_info("running as %s (uid %u, gid %u)", d->ids.name, (unsigned)d->ids.uid,
	    (unsigned)d->ids.gid);
	struct conf *again = conf_load(d->conf_path, true, &errs);
	if (again == NULL) {
		char *nl = errs != NULL ? strchr(errs, '\n') : NULL;
		if (nl != NULL)
			*nl = '\0';
		log_warn("a reload will fail: as %s: %s", d->ids.name,
		    errs != NULL ? errs : "configuration error");
	}
	conf_free(again);
	free(errs);
	return 0;
}

/*
 * Decides, before anything starts, who the daemon will run as. Root must name an
 * account (user): a relay that parses mail from the network does not keep running as
 * root. Returns 0, or -1 after telling why on stderr.
 */
static int
daemon_plan_identity(struct daemon *d)
{
	const struct conf *c = d->conf;
	const char *why = NULL;
	char buf[256];

	if (geteuid() != 0) {
		const struct passwd *pw = c->user != NULL ? getpwnam(c->user) : NULL;
		if (pw != NULL && pw->pw_uid != geteuid())
			fprintf(stderr, "warning: %s: not started as root: user \"%s\" ignored, "
			    "running as uid %u\n", d->conf_path, c->user, (unsigned)geteuid());
		return 0;
	}
	if (c->user == NULL && d->stay_root) {
		/* make run from a checkout under /root: no other account could reach it. */
		fprintf(stderr, "warning: %s: running as root (-R): for development only; set "
		    "user for anything else\n", d->conf_path);
		return 0;
	}
	if (c->user == NULL) {
		fprintf(stderr, "dualrelayd: %s: refusing to run as root: set user (the account "
		    "to run as, e.g. user = \"dualrelay\";)\n", d->conf_path);
		return -1;
	}
	if (privdrop_resolve(c->user, c->group, &d->ids, buf, sizeof(buf), &why) < 0) {
		fprintf(stderr, "dualrelayd: %s: %s\n", d->conf_path, why);
		return -1;
	}
	d->drop = true;
	return 0;
}

/*
 * One syncfs per batch of accepted messages costs fewer disk round trips than an fsync
 * per file, even issued in parallel, but it also waits for everything else written to
 * the same file system (a backup, a log rotation), so "auto" uses it only when the
 * spool has a file system of its own.
 */
static bool
commit_uses_syncfs(const struct conf *c, struct spool *s)
{
	bool own = spool_own_filesystem(s);
	bool use = c->spool_sync == CONF_SPOOL_SYNC_FILESYSTEM ||
	    (c->spool_sync == CONF_SPOOL_SYNC_AUTO && own);

	log_info("spool %s: %s; accepted messages are made durable by %s", spool_dir(s),
	    own ? "on a file system of its own" : "on a shared file system",
	    use ? "one syncfs per batch" : "an fsync per file");
	return use;
}

/*
 * Every inbound session, outbound connection and open queue file is a descriptor; the
 * usual soft limit (1024) is below max_connections plus the deliveries. Take the hard
 * limit and say when even that is short (accept errors then pause the listeners).
 */
static void
raise_open_files(const struct conf *c)
{
	struct rlimit rl;
	unsigned long long need = (unsigned long long)c->max_connections +
	    2ull * c->queue.max_active + 64;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return;
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0 || getrlimit(RLIMIT_NOFILE, &rl) < 0)
			return;
	}
	if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need)
		log_warn("open files limit %llu is below the %llu that max_connections %u and "
		    "queue.max_active %u may need", (unsigned long long)rl.rlim_cur, need,
		    c->max_connections, c->queue.max_active);
}

/* The resolver settings of c (borrowed: c must outlive the resolver's creation). */
static struct dns_config
dns_config_of(const struct conf *c)
{
	struct dns_config dc = {
		.servers = (const char *const *)c->dns.servers,
		.nservers = c->dns.nservers,
		.timeout_ms = c->dns.timeout_ms,
		.tries = c->dns.tries,
	};
	return dc;
}

static int
daemon_start(struct daemon *d, bool foreground)
{
	const char *why = NULL;
	struct conf *c = d->conf;

	log_init("dualrelayd", foreground ? LOG_TARGET_STDERR : c->log_target, c->log_level);
	if (!foreground && daemonize() < 0) {
		log_error("cannot go to the background: %s", strerror(errno));
		return -1;
	}
	signal(SIGPIPE, SIG_IGN);
	raise_open_files(c);
	d->base = event_base_new();
	if (d->base == NULL) {
		log_error("cannot create the event loop");
		return -1;
	}
	struct dns_config dc = dns_config_of(c);
	d->dns = dns_new(d->base, &dc, &why);
	if (d->dns == NULL) {
		log_error("cannot start the DNS resolver: %s", why);
		return -1;
	}
	d->spool = spool_open(c->spool_dir);
	if (d->spool == NULL) {
		log_error("cannot open the spool %s: %s", c->spool_dir, strerror(errno));
		return -1;
	}
	char *health_path = xasprintf("%s/health", c->spool_dir);
	d->health = health_new(health_path, NULL);
	free(health_path);
	health_load(d->health, time(NULL));
	d->cache = conncache_new(d->base);
	d->committer = spool_committer_new(d->base, d->spool, commit_uses_syncfs(c, d->spool));
	if (d->committer == NULL) {
		log_error("cannot start the commit thread: %s", strerror(errno));
		return -1;
	}
	struct queue_deps deps = { d->base, d->spool, d->dns, d->health, &d->stats, d->cache,
		d->committer };
	d->queue = queue_new(&deps, c);
	if (queue_recover(d->queue) < 0)
		return -1;
	/* Always started: a reload may add users_file. */
	d->verifier = auth_verifier_new(d->base);
	if (d->verifier == NULL) {
		log_error("cannot start the password check thread: %s", strerror(errno));
		return -1;
	}
	d->server = smtp_server_new(d->base, c, d->spool, on_message, d->queue);
	smtp_server_set_committer(d->server, d->committer);
	smtp_server_set_auth_verifier(d->server, d->verifier);
	if (smtp_server_listen(d->server) < 0)
		return -1;
	struct control_deps cd = {
		.base = d->base, .queue = d->queue, .spool = d->spool, .health = d->health,
		.stats = &d->stats, .dns = d->dns, .server = d->server, .conf = &d->conf,
		.reload = daemon_reload, .reload_arg = d, .started = dr_now(),
	};
	d->control = control_new(&cd, c->control_socket);
	if (d->control == NULL)
		return -1;
	if (c->has_metrics_listen) {
		/* Bound once: a changed metrics_listen applies at the next start. */
		struct metrics_deps md = { .base = d->base, .stats = &d->stats,
			.queue = d->queue, .server = d->server };
		d->metrics = metrics_new(&md, &c->metrics_listen);
		if (d->metrics == NULL)
			return -1;
	}
	d->selfcheck = selfcheck_start(d->base, d->dns, c, on_selfcheck, d);
	d->sig_term = evsignal_new(d->base, SIGTERM, on_terminate, d);
	d->sig_int = evsignal_new(d->base, SIGINT, on_terminate, d);
	d->sig_hup = evsignal_new(d->base, SIGHUP, on_reload, d);
	event_add(d->sig_term, NULL);
	event_add(d->sig_int, NULL);
	event_add(d->sig_hup, NULL);
	if (d->drop && daemon_drop(d) < 0)
		return -1;
	log_info("dualrelayd %s started (config %s, spool %s)", PACKAGE_VERSION, d->conf_path,
	    c->spool_dir);
	return 0;
}

static void
daemon_stop(struct daemon *d)
{
	selfcheck_free(d->selfcheck);
	metrics_free(d->metrics);
	control_free(d->control);
	if (d->server)
		smtp_server_free(d->server);
	/* After the server: its sessions have cancelled their checks. */
	auth_verifier_free(d->verifier);
	if (d->committer) {
		struct spool_commit_stats st;
		spool_committer_stats(d->committer, &st);
		log_info("group commit: %lu messages in %lu batches, %.3f s (%.2f ms per "
		    "batch); %lu removals, %.3f s", st.commits, st.batches, st.commit_s,
		    st.batches > 0 ? st.commit_s * 1000 / (double)st.batches : 0.0,
		    st.removals, st.remove_s);
		spool_committer_free(d->committer);
	}
	if (d->queue)
		queue_free(d->queue);
	conncache_free(d->cache);
	if (d->spool)
		spool_close(d->spool);
	health_free(d->health);
	if (d->dns)
		dns_free(d->dns);
	struct event *evs[] = { d->sig_term, d->sig_int, d->sig_hup, d->shutdown_tick };
	for (size_t i = 0; i < sizeof(evs) / sizeof(evs[0]); i++)
		if (evs[i])
			event_free(evs[i]);
	if (d->base)
		event_base_free(d->base);
	if (d->conf)
		conf_free(d->conf);
}

/* -n and -r: a short-lived loop with the resolver only; no spool, no listener. */
struct offline {
	struct event_base *base;
	unsigned warnings;
};

static void
on_offline_selfcheck(unsigned warnings, void *arg)
{
	struct offline *o = arg;
	o->warnings = warnings;
	event_base_loopbreak(o->base);
}

static void
on_offline_explain(struct explain *e, void *arg)
{
	(void)e;
	event_base_loopbreak(((struct offline *)arg)->base);
}

static int
run_offline(struct conf *c, const char *route_domain)
{
	struct offline o = { event_base_new(), 0 };
	const char *why = NULL;
	struct dns_config dc = dns_config_of(c);
	log_init("dualrelayd", LOG_TARGET_STDERR, route_domain ? LOG_LEVEL_WARN : LOG_LEVEL_INFO);
	struct dns *dns = dns_new(o.base, &dc, &why);
	if (dns == NULL) {
		fprintf(stderr, "cannot start the DNS resolver: %s\n", why);
		event_base_free(o.base);
		return 1;
	}
	if (route_domain) {
		char *path = xasprintf("%s/health", c->spool_dir);
		/* Read the daemon's saved health; never written from here. */
		struct health *saved = health_new(NULL, NULL);
		health_load_file(saved, path, time(NULL));
		free(path);
		struct explain *e = explain_route(o.base, dns, saved, c, route_domain, stdout,
		    on_offline_explain, &o);
		event_base_dispatch(o.base);
		explain_free(e);
		health_free(saved);
	} else {
		struct selfcheck *sc = selfcheck_start(o.base, dns, c, on_offline_selfcheck, &o);
		event_base_dispatch(o.base);
		selfcheck_free(sc);
	}
	dns_free(dns);
	event_base_free(o.base);
	return 0;
}

/* -k and -K: the DKIM key records, and (-K) how DNS compares. */
struct dkim_records {
	struct event_base *base;
	const struct dkim_key *key;  /* the key being checked */
	bool ok;
};

static void
on_dkim_txt(const struct dns_txt_result *r, void *arg)
{
	struct dkim_records *dr = arg;
	char *name = dkim_key_dns_name(dr->key);
	const char *why = "no TXT record";

	dr->ok = false;
	if (r->status != DNS_OK && r->status != DNS_NODATA)
		why = r->error != NULL ? r->error : dns_status_name(r->status);
	for (size_t i = 0; r->status == DNS_OK && i < r->ntexts && !dr->ok; i++)
		dr->ok = dkim_key_txt_matches(dr->key, r->texts[i], &why);
	if (dr->ok)
		printf("; %s: the published record matches the key\n", name);
	else
		printf("; %s: NOT OK: %s\n", name, why);
	free(name);
	event_base_loopbreak(dr->base);
}

/* Prints txt as a zone-file TXT value: character-strings of at most 255 bytes. */
static void
print_txt_strings(const char *txt)
{
	size_t len = strlen(txt);

	for (size_t off = 0; off < len; off += 255)
		printf("%s\"%.*s\"", off > 0 ? " " : "", (int)(len - off < 255 ? len - off : 255),
		    txt + off);
}

static int
run_dkim_records(struct conf *c, bool check)
{
	struct dkim_records dr = { NULL, NULL, true };
	struct dns *dns = NULL;
	const char *why = NULL;
	int rc = 0;

	if (dkim_keyring_count(c->dkim) == 0) {
		fprintf(stderr, "%s: no dkim keys configured\n", c->path);
		return 1;
	}
	if (check) {
		struct dns_config dc = dns_config_of(c);
		log_init("dualrelayd", LOG_TARGET_STDERR, LOG_LEVEL_WARN);
		dr.base = event_base_new();
		if (dr.base == NULL || (dns = dns_new(dr.base, &dc, &why)) == NULL) {
			fprintf(stderr, "cannot start the DNS resolver: %s\n", why ? why : "no loop");
			if (dr.base)
				event_base_free(dr.base);
			return 1;
		}
	}
	for (size_t i = 0; i < dkim_keyring_count(c->dkim); i++) {
		const struct dkim_key *k = dkim_keyring_key(c->dkim, i);
		char *name = dkim_key_dns_name(k), *txt = dkim_key_txt_record(k);

		printf("; %s, %s, %d bits, %s\n", dkim_key_domain(k), dkim_alg_name(dkim_key_alg(k)),
		    dkim_key_bits(k), dkim_key_file(k));
		printf("%s. IN TXT ", name);
		print_txt_strings(txt != NULL ? txt : "");
		printf("\n");
		if (check) {
			dr.key = k;
			fflush(stdout);
			dns_query_txt(dns, name, on_dkim_txt, &dr);
			event_base_dispatch(dr.base);
			if (!dr.ok)
				rc = 1;
		}
		free(name);
		free(txt);
	}
	if (check) {
		dns_free(dns);
		event_base_free(dr.base);
	}
	return rc;
}

int
main(int argc, char **argv)
{
	struct daemon d = { .conf_path = SYSCONFDIR "/dualrelay.conf" };
	bool foreground = false, check_only = false, dkim_print = false, dkim_check = false;
	const char *route_domain = NULL;
	int ch;

	while ((ch = getopt(argc, argv, "c:fnhkKRr:V")) != -1) {
		switch (ch) {
		case 'c':
			d.conf_path = optarg;
			break;
		case 'f':
			foreground = true;
			break;
		case 'n':
			check_only = true;
			break;
		case 'k':
			dkim_print = true;
			break;
		case 'K':
			dkim_print = dkim_check = true;
			break;
		case 'r':
			route_domain = optarg;
			break;
		case 'R':
			d.stay_root = true;
			break;
		case 'V':
			printf("dualrelayd %s\n", PACKAGE_VERSION);
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return 2;
	}
	d.conf = load_conf(d.conf_path, true);
	if (d.conf == NULL)
		return 1;
	if (dkim_print) {
		int rc = run_dkim_records(d.conf, dkim_check);
		conf_free(d.conf);
		return rc;
	}
	if (check_only || route_domain) {
		if (check_only && geteuid() == 0 && d.conf->user == NULL)
			fprintf(stderr, "warning: %s: no user set: started as root, dualrelayd "
			    "will refuse to run\n", d.conf_path);
		int rc = run_offline(d.conf, route_domain);
		if (check_only && rc == 0)
			printf("%s: configuration OK\n", d.conf_path);
		conf_free(d.conf);
		return rc;
	}
	if (daemon_plan_identity(&d) < 0) {
		conf_free(d.conf);
		return EX_CONFIG;
	}
	int rc = 1;
	if (daemon_start(&d, foreground) == 0) {
		sdnotify("READY=1\nSTATUS=accepting mail");
		event_base_dispatch(d.base);
		log_info("dualrelayd stopped");
		rc = 0;
	}
	daemon_stop(&d);
	return rc;
}
