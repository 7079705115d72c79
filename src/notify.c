/*
 * notify: DSN messages for failed recipients (see notify.h). Reads the original header
 * block from the spool (never the body), lets bounce.c compose the report, and writes it
 * to the spool as a new message from <> to the original sender.
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bounce.h"
#include "log.h"
#include "notify.h"
#include "spool.h"
#include "util.h"

#define NOTIFY_HEADERS_MAX (64 * 1024)

/* The original header block (up to and including the empty line), or "" . */
static char *
read_headers(struct spool *spool, const struct envelope *e, size_t *len)
{
	char *buf = xmalloc(NOTIFY_HEADERS_MAX + 1);
	size_t n = 0;
	int fd = spool_open_content(spool, e);
	if (fd >= 0) {
		ssize_t r;
		while (n < NOTIFY_HEADERS_MAX &&
		    (r = read(fd, buf + n, NOTIFY_HEADERS_MAX - n)) > 0)
			n += (size_t)r;
		close(fd);
	}
	buf[n] = '\0';
	char *end = strstr(buf, "\r\n\r\n");
	*len = end ? (size_t)(end - buf) + 4 : n;
	buf[*len] = '\0';
	return buf;
}

/* "mx.example.org[192.0.2.1]:25" -> "mx.example.org"; NULL for "none". */
static char *
relay_host(const char *relay)
{
	if (relay == NULL || relay[0] == '\0' || strcmp(relay, "none") == 0)
		return NULL;
	const char *b = strchr(relay, '[');
	return xstrndup(relay, b ? (size_t)(b - relay) : strlen(relay));
}

/*
 * For a failure known only from its state record (the DSN composed again at recovery):
 * the host and family of "host mx.example.org[192.0.2.1] said: ..." (delivery.c's
 * reason for a refusal), so the report still names the MTA that refused. NULL (and the
 * family left alone) when the reason does not start that way.
 */
static char *
relay_from_reason(const char *reason, int *family)
{
	const char *host, *ip, *close;

	if (reason == NULL || strncmp(reason, "host ", 5) != 0)
		return NULL;
	host = reason + 5;
	ip = strchr(host, '[');
	close = ip ? strchr(ip, ']') : NULL;
	if (ip == NULL || close == NULL || ip == host || strncmp(close, "] said: ", 8) != 0 ||
	    memchr(host, ' ', (size_t)(ip - host)) != NULL)
		return NULL;
	*family = memchr(ip, ':', (size_t)(close - ip)) != NULL ? AF_INET6 : AF_INET;
	return xstrndup(host, (size_t)(ip - host));
}

/* The remote reply inside "host X[ip] said: REPLY (in reply to ...)", or NULL. */
static char *
remote_reply(const char *reason)
{
	const char *s = reason ? strstr(reason, " said: ") : NULL;
	if (s == NULL)
		return NULL;
	s += strlen(" said: ");
	const char *e = strstr(s, " (in reply to");
	if (e == NULL)
		e = strstr(s, " (in the initial");
	return xstrndup(s, e ? (size_t)(e - s) : strlen(s));
}

static bool
has_8bit(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)s[i] >= 0x80)
			return true;
	return false;
}

static struct envelope *
queue_dsn(struct spool *spool, const struct conf *conf, const struct envelope *orig,
    const char *text, size_t len)
{
	struct envelope *e = envelope_new();
	e->arrival = time(NULL);
	e->sender = xstrdup("");
	e->client_addr = xstrdup("127.0.0.1");
	e->helo = xstrdup(conf->hostname);
	e->body = has_8bit(text, len) ? SMTP_BODY_8BITMIME : SMTP_BODY_7BIT;
	e->smtputf8 = orig->smtputf8;
	envelope_add_rcpt(e, orig->sender);
	struct spool_writer *w = spool_writer_begin(spool, e);
	int rc = -1, err = errno;
	if (w != NULL) {
		if (spool_writer_write(w, text, len) == 0) {
			rc = spool_writer_commit(w, e); /* frees w */
			err = errno;
		} else {
			err = errno;
			spool_writer_abort(w);
		}
	}
	if (rc < 0) {
		log_error("%s: cannot queue the delivery status notification: %s", orig->id,
		    strerror(err));
		envelope_free(e);
		errno = err;
		return NULL;
	}
	return e;
}

struct envelope *
notify_compose(struct spool *spool, const struct conf *conf, const struct envelope *orig,
    const struct notify_item *items, size_t n)
{
	if (n == 0)
		return NULL;
	if (!bounce_should_send(orig->sender)) {
		log_info("%s: sender is <>: no delivery status notification for %zu recipient%s",
		    orig->id, n, n == 1 ? "" : "s");
		return NULL;
	}
	struct bounce_rcpt *br = xcalloc(n, sizeof(*br));
	char **owned = xcalloc(2 * n, sizeof(char *));
	for (size_t i = 0; i < n; i++) {
		const struct envelope_rcpt *r = &orig->rcpts[items[i].index];
		br[i].addr = r->addr;
		br[i].dsn = r->dsn[0] ? r->dsn : (items[i].delayed ? "4.0.0" : "5.0.0");
		br[i].reason = r->reason ? r->reason : "";
		br[i].family = items[i].family;
		br[i].remote_mta = owned[2 * i] = relay_host(items[i].relay);
		if (br[i].remote_mta == NULL && items[i].family == AF_UNSPEC)
			br[i].remote_mta = owned[2 * i] = relay_from_reason(r->reason, &br[i].family);
		br[i].diagnostic = owned[2 * i + 1] = remote_reply(r->reason);
		br[i].last_attempt = items[i].when;
		br[i].action = items[i].delayed ? BOUNCE_DELAYED : BOUNCE_FAILED;
	}
	size_t hlen = 0, len = 0;
	char *headers = read_headers(spool, orig, &hlen);
	struct bounce_msg bm = {
		.reporting_mta = conf->hostname,
		.queue_id = orig->id,
		.arrival = orig->arrival,
		.sender = orig->sender,
		.headers = headers,
		.headers_len = hlen,
		.rcpts = br,
		.nrcpts = n,
		.boundary_seed = orig->id,
	};
	char *text = bounce_compose(&bm, time(NULL), &len);
	struct envelope *dsn = text ? queue_dsn(spool, conf, orig, text, len) : NULL;
	if (dsn)
		log_info("%s: sender %s notification: %s", orig->id,
		    items[0].delayed ? "delay" : "non-delivery", dsn->id);
	free(text);
	free(headers);
	for (size_t i = 0; i < 2 * n; i++)
		free(owned[i]);
	free(owned);
	free(br);
	return dsn;
}
