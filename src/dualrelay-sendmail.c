/*
 * dualrelay-sendmail: the sendmail(8) entry point for applications (PHP's sendmail_path,
 * cron, scripts). Reads one message on standard input and submits it over SMTP to the
 * local dualrelayd, which does the rest. Blocking I/O: a short-lived command has no use
 * for an event loop. Exit codes are sysexits(3): 0 when the daemon answered 250,
 * EX_TEMPFAIL (75) when it cannot be reached or answers 4xx, so callers can retry.
 *
 * Options: -t (recipients from To/Cc/Bcc; Bcc removed), -i / -oi (a lone "." does not end
 * the input), -f SENDER, -F NAME (From: when the message has none), -S HOST:PORT or
 * $DUALRELAY_SERVER (default 127.0.0.1:2525), recipients as arguments. Accepted and
 * ignored, as other sendmail replacements do: -bm, -odi, -odb, -oem, -oee, -om, -v, -U,
 * -B TYPE, -N DSN, -R RET, -V ENVID, -X LOG, -L TAG.
 */
#include "config.h"

#include <errno.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "netaddr.h"
#include "smtp_proto.h"
#include "util.h"

#define PROG "dualrelay-sendmail"

struct strlist {
	char **v;
	size_t n, cap;
};

static void
strlist_add(struct strlist *l, const char *s, size_t len)
{
	l->v = xgrow(l->v, sizeof(char *), l->n + 1, &l->cap);
	l->v[l->n++] = xstrndup(s, len);
}

/* ---- The message ---- */

struct message {
	char *data;     /* CR LF line ends, headers then body */
	size_t len, cap;
	size_t header_end; /* offset of the empty line ending the headers (or len) */
};

static void
msg_add(struct message *m, const char *s, size_t n)
{
	m->data = xgrow(m->data, 1, m->len + n + 1, &m->cap);
	memcpy(m->data + m->len, s, n);
	m->len += n;
	m->data[m->len] = '\0';
}

/* Reads stdin into CR LF lines; without -i a line "." ends the input. */
static void
read_message(struct message *m, bool dot_ends)
{
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	bool in_headers = true;
	m->header_end = (size_t)-1;
	while ((n = getline(&line, &cap, stdin)) > 0) {
		size_t len = (size_t)n;
		while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
			len--;
		if (dot_ends && len == 1 && line[0] == '.')
			break;
		if (in_headers && len == 0) {
			in_headers = false;
			m->header_end = m->len;
		}
		msg_add(m, line, len);
		msg_add(m, "\r\n", 2);
	}
	free(line);
	if (m->header_end == (size_t)-1)
		m->header_end = m->len;
}

/* The header field's value (unfolded) for each instance of name, appended to out. */
static void
header_values(const struct message *m, const char *name, struct strlist *out)
{
	size_t nlen = strlen(name);
	const char *p = m->data, *end = m->data + m->header_end;
	while (p && p < end) {
		const char *eol = strstr(p, "\r\n");
		if (eol == NULL)
			break;
		if ((size_t)(eol - p) > nlen && strncasecmp(p, name, nlen) == 0 && p[nlen] == ':') {
			const char *v = p + nlen + 1, *vend = eol;
			/* continuation lines */
			while (vend + 2 < end && (vend[2] == ' ' || vend[2] == '\t')) {
				const char *next = strstr(vend + 2, "\r\n");
				if (next == NULL)
					break;
				vend = next;
			}
			char *val = xstrndup(v, (size_t)(vend - v));
			for (char *c = val; *c; c++)
				if (*c == '\r' || *c == '\n')
					*c = ' ';
			strlist_add(out, val, strlen(val));
			free(val);
			p = vend + 2;
			continue;
		}
		p = eol + 2;
	}
}

static bool
has_header(const struct message *m, const char *name)
{
	struct strlist l = { 0 };
	header_values(m, name, &l);
	bool has = l.n > 0;
	for (size_t i = 0; i < l.n; i++)
		free(l.v[i]);
	free(l.v);
	return has;
}

/* Removes every instance of a header field (Bcc under -t). */
static void
remove_header(struct message *m, const char *name)
{
	size_t nlen = strlen(name), i = 0;
	while (i < m->header_end) {
		char *eol = strstr(m->data + i, "\r\n");
		size_t lineend = eol ? (size_t)(eol - m->data) + 2 : m->len;
		size_t fieldend = lineend;
		while (fieldend < m->header_end && (m->data[fieldend] == ' ' || m->data[fieldend] == '\t')) {
			char *e2 = strstr(m->data + fieldend, "\r\n");
			fieldend = e2 ? (size_t)(e2 - m->data) + 2 : m->len;
		}
		if (lineend - i > nlen && strncasecmp(m->data + i, name, nlen) == 0 &&
		    m->data[i + nlen] == ':') {
			memmove(m->data + i, m->data + fieldend, m->len - fieldend + 1);
			m->len -= fieldend - i;
			m->header_end -= fieldend - i;
			continue;
		}
		i = fieldend;
	}
}

/* Addresses in an address-list header value: the part in <...>, or bare words with '@'. */
static void
parse_addresses(const char *value, struct strlist *out)
{
	const char *p = value;
	while (*p) {
		/* one element up to a ',' outside quotes and angle brackets */
		const char *start = p;
		bool quote = false;
		int angle = 0;
		for (; *p; p++) {
			if (*p == '"')
				quote = !quote;
			else if (!quote && *p == '<')
				angle++;
			else if (!quote && *p == '>' && angle > 0)
				angle--;
			else if (!quote && angle == 0 && *p == ',')
				break;
		}
		char *elem = xstrndup(start, (size_t)(p - start));
		char *lt = strrchr(elem, '<'), *gt = lt ? strchr(lt, '>') : NULL;
		if (lt && gt && gt > lt + 1)
			strlist_add(out, lt + 1, (size_t)(gt - lt - 1));
		else {
			char *tok = strtok(elem, " \t");
			for (; tok; tok = strtok(NULL, " \t"))
				if (strchr(tok, '@'))
					strlist_add(out, tok, strlen(tok));
		}
		free(elem);
		if (*p == ',')
			p++;
	}
}

/* Date: and Message-ID: when missing (RFC 5322 3.6); From: with -F or the sender. */
static void
complete_headers(struct message *m, const char *sender, const char *fullname)
{
	struct message h = { 0 };
	char date[64], host[256] = "localhost";
	gethostname(host, sizeof(host) - 1);
	if (!has_header(m, "From")) {
		char *from = fullname ? xasprintf("From: %s <%s>\r\n", fullname, sender) :
		    xasprintf("From: <%s>\r\n", sender);
		msg_add(&h, from, strlen(from));
		free(from);
	}
	if (!has_header(m, "Date")) {
		dr_rfc5322_date(time(NULL), date, sizeof(date));
		char *d = xasprintf("Date: %s\r\n", date);
		msg_add(&h, d, strlen(d));
		free(d);
	}
	if (!has_header(m, "Message-ID")) {
		char *id = xasprintf("Message-ID: <%lld.%d.%u@%s>\r\n", (long long)time(NULL),
		    (int)getpid(), dr_random(1000000), host);
		msg_add(&h, id, strlen(id));
		free(id);
	}
	if (h.len == 0)
		return;
	msg_add(&h, m->data ? m->data : "", m->len);
	h.header_end = m->header_end + (h.len - m->len);
	free(m->data);
	*m = h;
}

/* ---- SMTP ---- */

struct conn {
	int fd;
	FILE *in;
	const char *server;
};

static int
read_reply(struct conn *c, struct smtp_reply *r)
{
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	smtp_reply_clear(r);
	smtp_reply_init(r);
	while ((n = getline(&line, &cap, c->in)) > 0) {
		size_t len = (size_t)n;
		while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
			len--;
		int rc = smtp_reply_feed(r, line, len);
		if (rc != 0) {
			free(line);
			return rc > 0 ? 0 : -1;
		}
	}
	free(line);
	return -1;
}

static int
send_all(struct conn *c, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = write(c->fd, buf, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

static int
exit_for(int code)
{
	if (code >= 400 && code < 500)
		return EX_TEMPFAIL;
	if (code == 550 || code == 551 || code == 553)
		return EX_NOUSER;
	if (code == 552 || code == 554)
		return EX_DATAERR;
	return EX_UNAVAILABLE;
}

/* Sends "cmd" and expects a reply of class want (2 or 3). */
static int
command(struct conn *c, struct smtp_reply *r, int want, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int
command(struct conn *c, struct smtp_reply *r, int want, const char *fmt, ...)
{
	char *cmd = NULL;
	va_list ap;
	va_start(ap, fmt);
	int n = vasprintf(&cmd, fmt, ap);
	va_end(ap);
	if (n < 0)
		return EX_OSERR;
	int rc = send_all(c, cmd, (size_t)n) < 0 || send_all(c, "\r\n", 2) < 0 ? -1 : 0;
	free(cmd);
	if (rc < 0 || read_reply(c, r) < 0) {
		fprintf(stderr, PROG ": lost connection with %s; message not sent\n", c->server);
		return EX_TEMPFAIL;
	}
	if (r->code / 100 != want) {
		char *line = smtp_reply_oneline(r);
		fprintf(stderr, PROG ": %s said: %s; message not sent\n", c->server, line);
		free(line);
		return exit_for(r->code);
	}
	return 0;
}

static int
connect_server(const char *server)
{
	struct netaddr a;
	if (netaddr_parse_hostport(&a, server, 2525) < 0) {
		fprintf(stderr, PROG ": bad server address %s (HOST:PORT with a numeric address)\n",
		    server);
		return -2;
	}
	int fd = socket(netaddr_family(&a), SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&a.ss, a.len) < 0) {
		fprintf(stderr, PROG ": cannot connect to %s: %s; message not sent\n", server,
		    strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	return fd;
}

static int
submit(const char *server, const char *sender, const struct strlist *rcpts,
    const struct message *m)
{
	int fd = connect_server(server);
	if (fd < 0)
		return fd == -2 ? EX_USAGE : EX_TEMPFAIL;
	struct conn c = { fd, fdopen(dup(fd), "r"), server };
	struct smtp_reply r;
	char host[256] = "localhost";
	int rc;
	smtp_reply_init(&r);
	gethostname(host, sizeof(host) - 1);
	if (c.in == NULL || read_reply(&c, &r) < 0 || r.code != 220) {
		fprintf(stderr, PROG ": %s did not greet; message not sent\n", server);
		rc = EX_TEMPFAIL;
		goto out;
	}
	if ((rc = command(&c, &r, 2, "EHLO %s", host)) != 0 ||
	    (rc = command(&c, &r, 2, "MAIL FROM:<%s>", sender)) != 0)
		goto out;
	for (size_t i = 0; i < rcpts->n; i++)
		if ((rc = command(&c, &r, 2, "RCPT TO:<%s>", rcpts->v[i])) != 0)
			goto out;
	if ((rc = command(&c, &r, 3, "DATA")) != 0)
		goto out;
	struct smtp_dot_encoder e;
	char *out = xmalloc(2 * m->len + 8);
	smtp_dot_encoder_init(&e);
	size_t n = smtp_dot_encode(&e, m->data ? m->data : "", m->len, out);
	n += smtp_dot_encoder_finish(&e, out + n);
	if (send_all(&c, out, n) < 0 || read_reply(&c, &r) < 0) {
		free(out);
		fprintf(stderr, PROG ": lost connection with %s; message not sent\n", server);
		rc = EX_TEMPFAIL;
		goto out;
	}
	free(out);
	if (r.code / 100 != 2) {
		char *line = smtp_reply_oneline(&r);
		fprintf(stderr, PROG ": %s said: %s; message not sent\n", server, line);
		free(line);
		rc = exit_for(r.code);
		goto out;
	}
	command(&c, &r, 2, "QUIT");
	rc = 0;
out:
	smtp_reply_clear(&r);
	if (c.in)
		fclose(c.in);
	close(fd);
	return rc;
}

static void
usage(void)
{
	fprintf(stderr, "usage: " PROG " [-t] [-i] [-f sender] [-F name] [-S host:port] "
	    "[recipient ...]\n");
}

int
main(int argc, char **argv)
{
	bool from_headers = false, dot_ends = true;
	const char *sender = NULL, *fullname = NULL, *server = getenv("DUALRELAY_SERVER");
	struct strlist rcpts = { 0 };
	int ch;

	/* "-oi" and friends: getopt sees -o with an argument. */
	while ((ch = getopt(argc, argv, "tif:F:S:o:b:vUB:N:R:V:X:L:r:")) != -1) {
		switch (ch) {
		case 't':
			from_headers = true;
			break;
		case 'i':
			dot_ends = false;
			break;
		case 'f':
		case 'r':
			sender = optarg;
			break;
		case 'F':
			fullname = optarg;
			break;
		case 'S':
			server = optarg;
			break;
		case 'o':
			if (strcmp(optarg, "i") == 0)
				dot_ends = false;
			break; /* -oem, -odi, ...: ignored */
		case 'b':
			if (strcmp(optarg, "m") != 0) {
				fprintf(stderr, PROG ": -b%s is not supported (only -bm)\n", optarg);
				return EX_USAGE;
			}
			break;
		case 'v': case 'U': case 'B': case 'N': case 'R': case 'V': case 'X': case 'L':
			break;
		default:
			usage();
			return EX_USAGE;
		}
	}
	if (server == NULL || server[0] == '\0')
		server = "127.0.0.1:2525";
	char *default_sender = NULL;
	if (sender == NULL) {
		const char *user = getenv("USER");
		char host[256] = "localhost";
		gethostname(host, sizeof(host) - 1);
		sender = default_sender = xasprintf("%s@%s", user && user[0] ? user : "root", host);
	}
	for (int i = optind; i < argc; i++)
		parse_addresses(argv[i], &rcpts);

	struct message m = { 0 };
	read_message(&m, dot_ends);
	if (from_headers) {
		static const char *const fields[] = { "To", "Cc", "Bcc" };
		for (size_t f = 0; f < 3; f++) {
			struct strlist vals = { 0 };
			header_values(&m, fields[f], &vals);
			for (size_t i = 0; i < vals.n; i++) {
				parse_addresses(vals.v[i], &rcpts);
				free(vals.v[i]);
			}
			free(vals.v);
		}
		remove_header(&m, "Bcc");
	}
	int rc;
	if (rcpts.n == 0) {
		fprintf(stderr, PROG ": no recipients (give them as arguments, or use -t)\n");
		rc = EX_USAGE;
	} else {
		complete_headers(&m, sender, fullname);
		rc = submit(server, sender, &rcpts, &m);
	}
	for (size_t i = 0; i < rcpts.n; i++)
		free(rcpts.v[i]);
	free(rcpts.v);
	free(m.data);
	free(default_sender);
	return rc;
}
