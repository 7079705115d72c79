/*
 * fuzz_smtp_session: the inbound SMTP session (smtp_server) fed arbitrary bytes, through
 * the real server code: an event loop, a conf, a spool in a temporary directory (made
 * once per process, removed at exit) and one session per input on a socketpair. The
 * input is written to the client end, which is then half-closed; the loop runs until the
 * session has ended (bounded: a session that outlives its client is reported).
 *
 * An optional first line "#ADDR" sets the client address (default 127.0.0.1, which may
 * relay; 192.0.2.1 may not). Checked on every input, besides the sanitizers:
 *   - every byte the server sends is a well-formed reply (our own reply parser agrees);
 *   - no "250 ... queued as" without a committed message, and each committed message
 *     is in the spool with CR LF line ends only (no bare CR or LF reaches the queue:
 *     SMTP smuggling), within the size limit, with 1 to max_recipients valid
 *     recipients and a valid (or null) sender;
 *   - a client outside relay_networks never gets a message queued;
 *   - the session ends once the client has gone.
 * Committed messages are removed from the spool at once.
 */
#include "config.h"

#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>

#include <event2/event.h>

#include "conf.h"
#include "envelope.h"
#include "fuzz.h"
#include "log.h"
#include "netaddr.h"
#include "smtp_proto.h"
#include "smtp_server.h"
#include "spool.h"

/* Loop iterations before a session still alive counts as stuck. */
#define FUZZ_MAX_ROUNDS 100000
/* The limits of fuzz_conf_text, and a bound on our Received: header. */
#define FUZZ_MAX_SIZE 4096
#define FUZZ_MAX_RCPTS 8
#define FUZZ_RECEIVED_MAX 1024

static const char fuzz_conf_text[] =
    "hostname = \"mx.fuzz.example\";\n"
    "relay_networks = [ \"127.0.0.0/8\", \"::1/128\", \"2001:db8::/32\" ];\n"
    "max_message_size = 4096;\n"     /* FUZZ_MAX_SIZE */
    "max_recipients = 8;\n";         /* FUZZ_MAX_RCPTS */

static struct {
	char dir[PATH_MAX];
	struct event_base *base;
	struct conf *conf;
	struct spool *spool;
	struct smtp_server *srv;
	unsigned committed;     /* messages committed during the current input */
	bool relay_ok;          /* the current client is in relay_networks */
} fz;

static int
rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	remove(path);
	return 0;
}

static void
fuzz_cleanup(void)
{
	smtp_server_free(fz.srv);
	spool_close(fz.spool);
	conf_free(fz.conf);
	event_base_free(fz.base);
	if (fz.dir[0] != '\0')
		nftw(fz.dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* The envelope of a committed message: what the server promised to accept. */
static void
fuzz_check_envelope(const struct envelope *e)
{
	if (e->sender == NULL || (e->sender[0] != '\0' &&
	    !smtp_mailbox_valid(e->sender, e->smtputf8)))
		abort();
	if (e->nrcpts == 0 || e->nrcpts > FUZZ_MAX_RCPTS)
		abort();
	for (size_t i = 0; i < e->nrcpts; i++)
		if (!smtp_mailbox_valid(e->rcpts[i].addr, e->smtputf8))
			abort();
}

/*
 * A committed message must hold CR LF line ends only and be within the size limit;
 * then it is dropped.
 */
static void
fuzz_message_cb(struct envelope *e, void *arg)
{
	char buf[8192], prev = '\0';
	size_t total = 0;
	ssize_t n;
	int fd;

	(void)arg;
	fz.committed++;
	if (!fz.relay_ok)
		abort();
	fuzz_check_envelope(e);
	if ((fd = spool_open_content(fz.spool, e)) < 0)
		abort();
	while ((n = read(fd, buf, sizeof(buf))) > 0) {
		total += (size_t)n;
		for (ssize_t i = 0; i < n; i++) {
			if ((buf[i] == '\n') != (prev == '\r'))
				abort();  /* bare LF, or CR not followed by LF */
			prev = buf[i];
		}
	}
	if (n < 0 || prev != '\n' || total > FUZZ_MAX_SIZE + FUZZ_RECEIVED_MAX)
		abort();
	close(fd);
	if (spool_remove(fz.spool, e->id) != 0)
		abort();
	envelope_free(e);
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *tmp = getenv("TMPDIR");
	char *errors = NULL;

	(void)argc;
	(void)argv;
	log_init("fuzz_smtp_session", LOG_TARGET_STDERR,
	    getenv("FUZZ_DEBUG") != NULL ? LOG_LEVEL_DEBUG : LOG_LEVEL_ERROR);
	signal(SIGPIPE, SIG_IGN);
	/* tmpfs makes the spool's fsyncs cheap. */
	if (tmp == NULL || tmp[0] == '\0')
		tmp = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
	snprintf(fz.dir, sizeof(fz.dir), "%s/fuzz_smtp_session.XXXXXX", tmp);
	if (mkdtemp(fz.dir) == NULL) {
		perror("mkdtemp");
		abort();
	}
	atexit(fuzz_cleanup);
	fz.base = event_base_new();
	fz.conf = conf_load_string(fuzz_conf_text, "fuzz.conf", fz.dir, false, &errors);
	if (fz.base == NULL || fz.conf == NULL) {
		fprintf(stderr, "fuzz_smtp_session: setup: %s\n", errors ? errors : "event_base");
		abort();
	}
	fz.spool = spool_open(fz.dir);
	if (fz.spool == NULL) {
		perror("spool_open");
		abort();
	}
	fz.srv = smtp_server_new(fz.base, fz.conf, fz.spool, fuzz_message_cb, NULL);
	return 0;
}

/* Reads what the server sent so far; each complete line must be a valid reply line. */
struct replies {
	char line[SMTP_REPLY_LINE_MAX + 3];
	size_t len;
	struct smtp_reply r;
	unsigned queued;        /* "250 2.0.0 Ok: queued as" replies */
};

static void
replies_line(struct replies *rp)
{
	int rc;

	if (rp->len < 2 || rp->line[rp->len - 2] != '\r')
		abort();  /* every reply line ends in CR LF */
	rc = smtp_reply_feed(&rp->r, rp->line, rp->len - 2);
	if (rc < 0)
		abort();
	if (rc == 1) {
		if (rp->r.code == 250 && rp->r.text != NULL &&
		    strncmp(rp->r.text, "Ok: queued as ", 14) == 0)
			rp->queued++;
		smtp_reply_clear(&rp->r);
	}
	rp->len = 0;
}

static void
replies_read(struct replies *rp, int fd)
{
	char buf[4096];
	ssize_t n;

	while ((n = read(fd, buf, sizeof(buf))) > 0) {
		for (ssize_t i = 0; i < n; i++) {
			if (rp->len >= sizeof(rp->line))
				abort();  /* longer than any reply line may be */
			rp->line[rp->len++] = buf[i];
			if (buf[i] == '\n')
				replies_line(rp);
		}
	}
}

/* relay_networks of fuzz_conf_text, matched here independently of the server. */
static bool
fuzz_may_relay(const struct netaddr *peer)
{
	static const char *const nets[] = { "127.0.0.0/8", "::1/128", "2001:db8::/32" };

	for (size_t i = 0; i < sizeof(nets) / sizeof(nets[0]); i++) {
		struct netaddr_prefix p;

		if (netaddr_prefix_parse(&p, nets[i]) != 0)
			abort();
		if (netaddr_prefix_match(&p, peer))
			return true;
	}
	return false;
}

/* "#ADDR\n" at the start chooses the client address. */
static size_t
fuzz_peer(const uint8_t *data, size_t size, struct netaddr *peer)
{
	const uint8_t *nl;
	char text[NETADDR_STRLEN];
	size_t len;

	netaddr_parse(peer, "127.0.0.1", 40000);
	if (size < 2 || data[0] != '#' || (nl = memchr(data, '\n', size)) == NULL)
		return 0;
	len = (size_t)(nl - data) - 1;
	if (len >= sizeof(text))
		return 0;
	memcpy(text, data + 1, len);
	text[len] = '\0';
	if (netaddr_parse(peer, text, 40000) != 0)
		netaddr_parse(peer, "127.0.0.1", 40000);
	return (size_t)(nl - data) + 1;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct replies rp;
	struct netaddr peer;
	size_t off = fuzz_peer(data, size, &peer);
	bool shut = false;
	unsigned rounds;
	int sv[2];

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0)
		abort();
	if (smtp_server_adopt(fz.srv, sv[1], &peer) != 0)
		abort();
	memset(&rp, 0, sizeof(rp));
	smtp_reply_init(&rp.r);
	fz.committed = 0;
	fz.relay_ok = fuzz_may_relay(&peer);

	for (rounds = 0; rounds < FUZZ_MAX_ROUNDS; rounds++) {
		if (off < size) {
			ssize_t n = write(sv[0], data + off, size - off);
			if (n > 0)
				off += (size_t)n;
			else if (n < 0 && errno != EAGAIN)
				off = size;   /* the server closed: the rest is not read */
		}
		if (off == size && !shut) {
			shutdown(sv[0], SHUT_WR);
			shut = true;
		}
		replies_read(&rp, sv[0]);
		if (smtp_server_session_count(fz.srv) == 0)
			break;
		event_base_loop(fz.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	}
	if (smtp_server_session_count(fz.srv) != 0) {
		fprintf(stderr, "fuzz_smtp_session: session still alive after its client left\n");
		abort();
	}
	replies_read(&rp, sv[0]);
	close(sv[0]);
	/*
	 * Never a 250 without a commit. The converse may fail: a client that leaves without
	 * reading can take the session down before the 250 is written (a duplicate later,
	 * never a loss).
	 */
	if (rp.queued > fz.committed)
		abort();
	smtp_reply_clear(&rp.r);
	return 0;
}
