/*
 * dualrelay-sendmail: the sendmail(8) entry point for applications (PHP's sendmail_path,
 * cron, scripts). Reads one message on standard input and submits it over SMTP to the
 * local dualrelayd, which does the rest. Blocking I/O: a short-lived command has no use
 * for an event loop. Nothing goes to syslog; diagnostics go to standard error. Exit codes
 * are sysexits(3): 0 when the daemon answered 250, EX_TEMPFAIL (75) when it cannot be
 * reached or answers 4xx, so callers can retry; see exit_for() for 5xx answers.
 *
 * Options: -t (recipients from To/Cc/Bcc, added to the arguments; Bcc removed), -i / -oi
 * (a lone "." does not end the input), -f SENDER (or -r), -F NAME (From: when the message
 * has none), -S HOST:PORT or $DUALRELAY_SERVER (default 127.0.0.1:2525), recipients as
 * arguments. Accepted and ignored, as other sendmail replacements do: -bm, -n, -v, -U,
 * -G, -o X (except -oi), -A X, -B X, -N X, -R X, -V X, -X X, -L X, -O X, -h X.
 */
#include "config.h"

#include <errno.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "netaddr.h"
#include "smtp_proto.h"
#include "util.h"

#define PROG "dualrelay-sendmail"
#define DEFAULT_SERVER "127.0.0.1:2525"
/* Per reply and per write; the local daemon answers in milliseconds when it is well. */
#define IO_TIMEOUT_S 300

struct strlist {
	char **v;       /* owned strings */
	size_t n, cap;
};

static void
strlist_add(struct strlist *l, const char *s, size_t len)
{
	l->v = xgrow(l->v, sizeof(char *), l->n + 1, &l->cap);
	l->v[l->n++] = xstrndup(s, len);
}

static void
strlist_free(struct strlist *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i]);
	free(l->v);
	l->v = NULL;
	l->n = l->cap = 0;
}

/* This host's name, for user@host defaults, EHLO and Message-ID. */
static void
host_name(char *buf, size_t size)
{
	if (gethostname(buf, size) == -1 || buf[0] == '\0')
		dr_strlcpy(buf, "localhost", size);
	buf[size - 1] = '\0';
}

/* ---- The message ---- */

struct message {
	char *data;        /* CR LF line ends, headers, empty line, body; owned */
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

/* A header field's first line: field-name (printable ASCII but ':') then ':' (RFC 5322 2.2). */
static bool
is_field_start(const char *line, size_t len)
{
	size_t i = 0;
	while (i < len && line[i] >= 33 && line[i] <= 126 && line[i] != ':')
		i++;
	return i > 0 && i < len && line[i] == ':';
}

/*
 * Reads standard input as lines (LF or CR LF), stores them with CR LF; without -i a line
 * "." ends the input. As Postfix's cleanup does, the header section ends at the first
 * line that is neither a header field nor its continuation: when that line is not empty
 * (an application that sent no headers, "echo text | sendmail"), the empty line is
 * inserted before it. A leading mbox "From " line is dropped. -1 on a read error.
 */
static int
read_message(struct message *m, bool dot_ends)
{
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	bool in_headers = true, first = true;

	m->header_end = (size_t)-1;
	while ((n = getline(&line, &cap, stdin)) > 0) {
		size_t len = (size_t)n;
		if (len > 0 && line[len - 1] == '\n')
			len--;
		if (len > 0 && line[len - 1] == '\r')
			len--;
		if (dot_ends && len == 1 && line[0] == '.')
			break;
		if (first && len >= 5 && strncmp(line, "From ", 5) == 0) {
			first = false;
			continue;
		}
		first = false;
		if (in_headers && (len == 0 || (!is_field_start(line, len) &&
		    !(m->len > 0 && (line[0] == ' ' || line[0] == '\t'))))) {
			in_headers = false;
			m->header_end = m->len;
			if (len > 0)
				msg_add(m, "\r\n", 2);
		}
		msg_add(m, line, len);
		msg_add(m, "\r\n", 2);
	}
	free(line);
	if (m->header_end == (size_t)-1)
		m->header_end = m->len;
	return ferror(stdin) ? -1 : 0;
}

/*
 * The header line starting at off: *lineend is the offset after its CR LF, the return
 * value the offset after the whole field, continuation lines included (RFC 5322 2.2.3).
 * memmem, not strstr: the input may hold NUL bytes.
 */
static size_t
line_end(const struct message *m, size_t off)
{
	const char *eol = memmem(m->data + off, m->header_end - off, "\r\n", 2);
	return eol != NULL ? (size_t)(eol - m->data) + 2 : m->header_end;
}

static size_t
field_end(const struct message *m, size_t off, size_t *lineend)
{
	size_t end = *lineend = line_end(m, off);

	while (end < m->header_end && (m->data[end] == ' ' || m->data[end] == '\t'))
		end = line_end(m, end);
	return end;
}

/* Each instance of header field name: its value, unfolded, appended to out. */
static void
header_values(const struct message *m, const char *name, struct strlist *out)
{
	size_t nlen = strlen(name), i = 0;

	while (i < m->header_end) {
		size_t lineend, end = field_end(m, i, &lineend);
		const char *p = m->data + i;
		if (lineend - i > nlen + 2 && strncasecmp(p, name, nlen) == 0 && p[nlen] == ':') {
			size_t vend = end;
			if (vend - i >= nlen + 3 && m->data[vend - 2] == '\r')
				vend -= 2;  /* the field's final CR LF */
			char *val = xstrndup(p + nlen + 1, vend - i - nlen - 1);
			for (char *c = val; *c; c++)
				if (*c == '\r' || *c == '\n')
					*c = ' ';
			strlist_add(out, val, strlen(val));
			free(val);
		}
		i = end;
	}
}

static bool
has_header(const struct message *m, const char *name)
{
	struct strlist l = { 0 };
	header_values(m, name, &l);
	bool has = l.n > 0;
	strlist_free(&l);
	return has;
}

/* Removes every instance of a header field with its continuation lines (Bcc under -t). */
static void
remove_header(struct message *m, const char *name)
{
	size_t nlen = strlen(name), i = 0;

	while (i < m->header_end) {
		size_t lineend, end = field_end(m, i, &lineend);
		if (lineend - i > nlen + 2 && strncasecmp(m->data + i, name, nlen) == 0 &&
		    m->data[i + nlen] == ':') {
			memmove(m->data + i, m->data + end, m->len - end + 1);
			m->len -= end - i;
			m->header_end -= end - i;
			continue;
		}
		i = end;
	}
}

/* Appends addr to out, "@domain" added to a bare local part (cron's "root"). */
static void
add_address(struct strlist *out, const char *addr, size_t len, const char *domain)
{
	while (len > 0 && (addr[0] == ' ' || addr[0] == '\t')) {
		addr++;
		len--;
	}
	while (len > 0 && (addr[len - 1] == ' ' || addr[len - 1] == '\t'))
		len--;
	if (len == 0)
		return;
	if (memchr(addr, '@', len) != NULL) {
		strlist_add(out, addr, len);
		return;
	}
	char *q = xasprintf("%.*s@%s", (int)len, addr, domain);
	strlist_add(out, q, strlen(q));
	free(q);
}

/*
 * The addresses of an address-list (RFC 5322 3.4) or of a command-line argument, which
 * sendmail also splits at commas: per element the part in <...>, else the bare
 * addr-spec. Comments in parentheses go, and a group's "name:" and ";" (so
 * "undisclosed-recipients:;" gives nothing). Good enough for what applications write;
 * the daemon checks every address's syntax again.
 */
static void
parse_addresses(const char *value, const char *domain, struct strlist *out)
{
	size_t vlen = strlen(value);
	char *elem = xmalloc(vlen + 1);
	const char *p = value;

	while (*p != '\0') {
		size_t n = 0, lt = 0, gt = 0;
		bool quote = false, angle = false, has_angle = false, literal = false;
		int comment = 0;
		for (; *p != '\0'; p++) {
			char c = *p;
			if (c == '\\' && p[1] != '\0' && (quote || comment)) {
				p++;    /* quoted-pair: kept in a quoted string, dropped in a comment */
				if (!comment) {
					elem[n++] = c;
					elem[n++] = *p;
				}
				continue;
			}
			if (comment) {
				comment += c == '(' ? 1 : c == ')' ? -1 : 0;
				continue;
			}
			bool plain = !quote && !literal;
			if (c == '"' && !literal)
				quote = !quote;
			else if (c == '[' && !quote)
				literal = true;     /* "[IPv6:2001:db8::1]": its colons are no group */
			else if (c == ']' && literal)
				literal = false;
			else if (plain && c == '(') {
				comment = 1;
				continue;
			} else if (plain && !angle && c == ',')
				break;
			else if (plain && !angle && c == ':') {
				n = 0;          /* a group's display name */
				continue;
			} else if (plain && !angle && c == ';')
				continue;       /* end of a group */
			else if (plain && c == '<') {
				angle = has_angle = true;
				lt = n + 1;
			} else if (plain && c == '>' && angle) {
				angle = false;
				gt = n;
			}
			elem[n++] = c;
		}
		if (has_angle && gt >= lt)
			add_address(out, elem + lt, gt - lt, domain);
		else if (!has_angle)
			add_address(out, elem, n, domain);
		if (*p == ',')
			p++;
	}
	free(elem);
}

/* A display name as a quoted-string when it holds RFC 5322 specials (cron: -FCronDaemon). */
static char *
display_name(const char *name)
{
	if (strpbrk(name, "()<>[]:;@\\,.\"") == NULL)
		return xstrdup(name);
	char *q = xmalloc(2 * strlen(name) + 3), *o = q;
	*o++ = '"';
	for (const char *s = name; *s; s++) {
		if (*s == '"' || *s == '\\')
			*o++ = '\\';
		*o++ = *s;
	}
	*o++ = '"';
	*o = '\0';
	return q;
}

/* From: (with -F), Date: and Message-ID: when missing (RFC 5322 3.6), before the rest. */
static void
complete_headers(struct message *m, const char *from_addr, const char *fullname,
    const char *host)
{
	struct message h = { 0 };
	char date[64];
	char *field;

	if (!has_header(m, "From")) {
		if (fullname != NULL) {
			char *dn = display_name(fullname);
			field = xasprintf("From: %s <%s>\r\n", dn, from_addr);
			free(dn);
		} else
			field = xasprintf("From: %s\r\n", from_addr);
		msg_add(&h, field, strlen(field));
		free(field);
	}
	if (!has_header(m, "Date")) {
		dr_rfc5322_date(time(NULL), date, sizeof(date));
		field = xasprintf("Date: %s\r\n", date);
		msg_add(&h, field, strlen(field));
		free(field);
	}
	if (!has_header(m, "Message-ID")) {
		field = xasprintf("Message-ID: <%lld.%ld.%08x@%s>\r\n", (long long)time(NULL),
		    (long)getpid(), (unsigned)dr_random(UINT32_MAX), host);
		msg_add(&h, field, strlen(field));
		free(field);
	}
	if (h.len == 0)
		return;
	size_t added = h.len;
	msg_add(&h, m->data != NULL ? m->data : "", m->len);
	h.header_end = m->header_end + added;
	free(m->data);
	*m = h;
}

static bool
has_8bit(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)s[i] >= 0x80)
			return true;
	return false;
}

/* ---- SMTP ---- */

enum stage { ST_GREETING, ST_EHLO, ST_MAIL, ST_RCPT, ST_DATA, ST_END, ST_QUIT };

struct conn {
	int fd;
	FILE *in;            /* a dup of fd for reading lines; owned */
	const char *server;
};

/* One whole reply into r; -1 when the connection ends or sends garbage first. */
static int
read_reply(struct conn *c, struct smtp_reply *r)
{
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	int rc = -1;

	smtp_reply_clear(r);
	for (;;) {
		errno = 0;      /* stays 0 at a clean end of the connection */
		if ((n = getline(&line, &cap, c->in)) <= 0)
			break;
		size_t len = (size_t)n;
		if (len > 0 && line[len - 1] == '\n')
			len--;
		if (len > 0 && line[len - 1] == '\r')
			len--;
		int fed = smtp_reply_feed(r, line, len);
		if (fed != 0) {
			rc = fed > 0 ? 0 : -1;
			if (fed < 0)
				errno = EBADMSG;
			break;
		}
	}
	free(line);
	return rc;
}

/* MSG_NOSIGNAL: a daemon gone mid-write must give EX_TEMPFAIL, not death by SIGPIPE. */
static int
send_all(struct conn *c, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = send(c->fd, buf, len, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

/*
 * The exit status for a reply that refused the message: 4xx is temporary; for 5xx the
 * enhanced status code (RFC 3463) decides when it tells (5.1.x addresses, 5.7.x policy,
 * 5.2.x/5.3.4/5.6.x the message), else the stage: a recipient refused is EX_NOUSER, a
 * refused sender or message EX_DATAERR, a refused session EX_UNAVAILABLE.
 */
static int
exit_for(enum stage st, const struct smtp_reply *r)
{
	if (r->code / 100 == 4)
		return EX_TEMPFAIL;
	if (r->code / 100 != 5)
		return EX_PROTOCOL;
	if (strncmp(r->enhanced, "5.1.", 4) == 0)
		return EX_NOUSER;
	if (strncmp(r->enhanced, "5.7.", 4) == 0)
		return EX_UNAVAILABLE;
	if (strncmp(r->enhanced, "5.2.", 4) == 0 || strcmp(r->enhanced, "5.3.4") == 0 ||
	    strncmp(r->enhanced, "5.6.", 4) == 0)
		return EX_DATAERR;
	switch (st) {
	case ST_RCPT:
		return EX_NOUSER;
	case ST_MAIL:
	case ST_DATA:
	case ST_END:
		return EX_DATAERR;
	default:
		return EX_UNAVAILABLE;
	}
}

static int
lost(struct conn *c)
{
	int err = errno;
	const char *why = err == 0 ? "connection closed by the server" :
	    err == EAGAIN || err == EWOULDBLOCK ? "timed out" :
	    err == EBADMSG ? "malformed reply" : strerror(err);
	fprintf(stderr, PROG ": lost connection with %s: %s; message not sent\n", c->server,
	    why);
	return EX_TEMPFAIL;
}

/* Checks that r has class want (2 or 3); else says why on stderr and gives the status. */
static int
expect(struct conn *c, const struct smtp_reply *r, enum stage st, int want)
{
	if (r->code / 100 == want)
		return 0;
	char *line = smtp_reply_oneline(r);
	fprintf(stderr, PROG ": %s said: %s; message not sent\n", c->server, line);
	free(line);
	return exit_for(st, r);
}

/* Sends one command line and reads the reply, expecting class want. */
static int
command(struct conn *c, struct smtp_reply *r, enum stage st, int want, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static int
command(struct conn *c, struct smtp_reply *r, enum stage st, int want, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *cmd = NULL;
	int n = vasprintf(&cmd, fmt, ap);
	va_end(ap);
	if (n < 0)
		return EX_OSERR;
	errno = 0;
	int rc = send_all(c, cmd, (size_t)n) == 0 && send_all(c, "\r\n", 2) == 0 ? 0 : -1;
	free(cmd);
	if (rc < 0 || read_reply(c, r) < 0)
		return lost(c);
	return expect(c, r, st, want);
}

/* A connected socket, or -1 (unreachable: EX_TEMPFAIL) or -2 (bad address: EX_USAGE). */
static int
connect_server(const char *server)
{
	struct netaddr a;
	if (netaddr_parse_hostport(&a, server, 2525) < 0) {
		fprintf(stderr, PROG ": bad server address \"%s\" (ADDRESS:PORT, [IPV6]:PORT "
		    "or ADDRESS)\n", server);
		return -2;
	}
	int fd = socket(netaddr_family(&a), SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd >= 0) {
		struct timeval tv = { IO_TIMEOUT_S, 0 };
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	}
	if (fd < 0 || connect(fd, (struct sockaddr *)&a.ss, a.len) < 0) {
		fprintf(stderr, PROG ": cannot connect to %s: %s; message not sent\n", server,
		    strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	return fd;
}

struct submission {
	const char *server;
	const char *sender;        /* "" for the null reverse-path */
	const struct strlist *rcpts;
	const struct message *msg;
	const char *host;          /* EHLO name */
};

/* The SMTP transaction (RFC 5321 3.3): the status to exit with. */
static int
transaction(struct conn *c, struct smtp_reply *r, const struct submission *s)
{
	struct smtp_ehlo_info ehlo;
	int rc;

	errno = 0;
	if (read_reply(c, r) < 0)
		return lost(c);
	if ((rc = expect(c, r, ST_GREETING, 2)) != 0)
		return rc;
	if ((rc = command(c, r, ST_EHLO, 2, "EHLO %s", s->host)) != 0)
		return rc;
	smtp_ehlo_parse(r, &ehlo);

	/* Declare what the content and addresses need (RFC 6152, RFC 6531, RFC 1870). */
	bool utf8 = has_8bit(s->sender, strlen(s->sender));
	for (size_t i = 0; i < s->rcpts->n; i++)
		utf8 = utf8 || has_8bit(s->rcpts->v[i], strlen(s->rcpts->v[i]));
	bool eightbit = has_8bit(s->msg->data != NULL ? s->msg->data : "", s->msg->len);
	char params[96] = "";
	if (ehlo.ext & SMTP_EXT_SIZE)
		snprintf(params, sizeof(params), " SIZE=%zu", s->msg->len);
	if (eightbit && (ehlo.ext & SMTP_EXT_8BITMIME))
		strcat(params, " BODY=8BITMIME");
	if (utf8 && (ehlo.ext & SMTP_EXT_SMTPUTF8))
		strcat(params, " SMTPUTF8");
	if ((rc = command(c, r, ST_MAIL, 2, "MAIL FROM:<%s>%s", s->sender, params)) != 0)
		return rc;
	/* All or nothing: one refused recipient refuses the message, so the caller knows. */
	for (size_t i = 0; i < s->rcpts->n; i++)
		if ((rc = command(c, r, ST_RCPT, 2, "RCPT TO:<%s>", s->rcpts->v[i])) != 0)
			return rc;
	if ((rc = command(c, r, ST_DATA, 3, "DATA")) != 0)
		return rc;

	struct smtp_dot_encoder e;
	char *out = xmalloc(2 * s->msg->len + 8);
	smtp_dot_encoder_init(&e);
	size_t n = smtp_dot_encode(&e, s->msg->data != NULL ? s->msg->data : "", s->msg->len, out);
	n += smtp_dot_encoder_finish(&e, out + n);
	errno = 0;
	rc = send_all(c, out, n) == 0 && read_reply(c, r) == 0 ? 0 : -1;
	free(out);
	if (rc < 0)
		return lost(c);
	if ((rc = expect(c, r, ST_END, 2)) != 0)
		return rc;
	/* Accepted: what QUIT gets no longer matters. */
	(void)command(c, r, ST_QUIT, 2, "QUIT");
	return 0;
}

static int
submit(const struct submission *s)
{
	int fd = connect_server(s->server);
	if (fd < 0)
		return fd == -2 ? EX_USAGE : EX_TEMPFAIL;
	int dupfd = dup(fd);
	struct conn c = { fd, dupfd >= 0 ? fdopen(dupfd, "r") : NULL, s->server };
	int rc;
	if (c.in == NULL) {
		fprintf(stderr, PROG ": %s; message not sent\n", strerror(errno));
		if (dupfd >= 0)
			close(dupfd);
		rc = EX_OSERR;
	} else {
		struct smtp_reply r;
		smtp_reply_init(&r);
		rc = transaction(&c, &r, s);
		smtp_reply_clear(&r);
		fclose(c.in);
	}
	close(fd);
	return rc;
}

/* ---- Command line ---- */

static void
usage(void)
{
	fprintf(stderr, "usage: " PROG " [-t] [-i] [-f sender] [-F fullname] [-S host:port] "
	    "[recipient ...]\n");
}

/* -f's argument: "<>" or "" is the null sender; brackets around an address are dropped. */
static char *
sender_arg(const char *arg, const char *domain)
{
	size_t len = strlen(arg);
	if (len >= 2 && arg[0] == '<' && arg[len - 1] == '>') {
		arg++;
		len -= 2;
	}
	if (len == 0)
		return xstrdup("");
	if (memchr(arg, '@', len) != NULL)
		return xstrndup(arg, len);
	return xasprintf("%.*s@%s", (int)len, arg, domain);
}

/* The invoking user, for the default sender. */
static const char *
login_name(void)
{
	struct passwd *pw = getpwuid(getuid());
	if (pw != NULL && pw->pw_name[0] != '\0')
		return pw->pw_name;
	const char *u = getenv("LOGNAME");
	if (u == NULL || u[0] == '\0')
		u = getenv("USER");
	return u != NULL && u[0] != '\0' ? u : "nobody";
}

int
main(int argc, char **argv)
{
	bool from_headers = false, dot_ends = true;
	const char *sender_opt = NULL, *fullname = NULL, *server = getenv("DUALRELAY_SERVER");
	struct strlist rcpts = { 0 };
	char host[256];
	int ch, rc;

	host_name(host, sizeof(host));
	/* "-oi", "-odi", "-bm": getopt sees -o / -b with an argument. */
	while ((ch = getopt(argc, argv, "tif:r:F:S:o:b:nvUGA:B:N:R:V:X:L:O:h:")) != -1) {
		switch (ch) {
		case 't':
			from_headers = true;
			break;
		case 'i':
			dot_ends = false;
			break;
		case 'f':
		case 'r':   /* the old name of -f */
			sender_opt = optarg;
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
			break;  /* -odi, -odb, -oem, -oee, -om, ...: nothing to do here */
		case 'b':
			if (strcmp(optarg, "m") == 0)
				break;
			if (strcmp(optarg, "p") == 0)
				fprintf(stderr, PROG ": -bp is not supported; use "
				    "\"dualrelayctl queue\"\n");
			else
				fprintf(stderr, PROG ": -b%s is not supported (only -bm)\n", optarg);
			return EX_USAGE;
		case 'n': case 'v': case 'U': case 'G':
		case 'A': case 'B': case 'N': case 'R': case 'V': case 'X': case 'L': case 'O':
		case 'h':
			break;
		default:
			usage();
			return EX_USAGE;
		}
	}
	if (server == NULL || server[0] == '\0')
		server = DEFAULT_SERVER;

	char *sender = sender_opt != NULL ? sender_arg(sender_opt, host) :
	    xasprintf("%s@%s", login_name(), host);
	for (int i = optind; i < argc; i++)
		parse_addresses(argv[i], host, &rcpts);

	struct message m = { 0 };
	if (read_message(&m, dot_ends) < 0) {
		fprintf(stderr, PROG ": cannot read the message: %s; message not sent\n",
		    strerror(errno));
		rc = EX_IOERR;
		goto out;
	}
	if (from_headers) {
		static const char *const fields[] = { "To", "Cc", "Bcc" };
		for (size_t f = 0; f < sizeof(fields) / sizeof(fields[0]); f++) {
			struct strlist vals = { 0 };
			header_values(&m, fields[f], &vals);
			for (size_t i = 0; i < vals.n; i++)
				parse_addresses(vals.v[i], host, &rcpts);
			strlist_free(&vals);
		}
		/* Bcc recipients get the message, nobody sees the list (RFC 5322 3.6.3). */
		remove_header(&m, "Bcc");
	}
	if (rcpts.n == 0) {
		fprintf(stderr, PROG ": no recipients (give them as arguments, or use -t); "
		    "message not sent\n");
		rc = EX_USAGE;
		goto out;
	}
	char *from_addr = sender[0] != '\0' ? xstrdup(sender) :
	    xasprintf("%s@%s", login_name(), host);
	complete_headers(&m, from_addr, fullname, host);
	free(from_addr);
	struct submission s = { server, sender, &rcpts, &m, host };
	rc = submit(&s);
out:
	strlist_free(&rcpts);
	free(m.data);
	free(sender);
	return rc;
}
