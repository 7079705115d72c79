/*
 * bounce: RFC 3464 delivery status notifications (see bounce.h). The layout follows
 * what operators know from Postfix: a plain-words explanation first, then the
 * machine-readable message/delivery-status part, then the original headers
 * (text/rfc822-headers, never the body: RFC 3462 allows it and it keeps private content
 * out of bounces). Lines are CR LF and never longer than 998 octets (RFC 5322 2.1.1).
 */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "bounce.h"
#include "util.h"

#define BOUNCE_LINE_MAX 998

struct sbuf {
	char *p;
	size_t len, cap;
};

static void
sb_add(struct sbuf *b, const char *s, size_t n)
{
	b->p = xgrow(b->p, 1, b->len + n + 1, &b->cap);
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void __attribute__((format(printf, 2, 3)))
sb_printf(struct sbuf *b, const char *fmt, ...)
{
	va_list ap;
	char *s = NULL;
	va_start(ap, fmt);
	int n = vasprintf(&s, fmt, ap);
	va_end(ap);
	if (n < 0)
		abort();
	sb_add(b, s, (size_t)n);
	free(s);
}

/*
 * Appends text word by word from column col, folding before a word that would pass
 * width (the fold sequence replaces the space, so unfolding restores the text: RFC 5322
 * 2.2.3) and hard-breaking any run that would pass 998 octets. Control characters
 * become spaces. Ends with CR LF.
 */
static void
sb_wrap(struct sbuf *b, const char *text, size_t col, size_t width, const char *fold,
    size_t fold_col)
{
	bool first = true;
	const char *p = text ? text : "";
	while (*p == ' ' || *p == '\n')
		p++;
	while (*p) {
		const char *word = p;
		while (*p && *p != ' ' && *p != '\n')
			p++;
		size_t wlen = (size_t)(p - word);
		if (!first) {
			if (col + 1 + wlen > width) {
				sb_add(b, fold, strlen(fold));
				col = fold_col;
			} else {
				sb_add(b, " ", 1);
				col++;
			}
		}
		first = false;
		for (size_t i = 0; i < wlen; i++) {
			char c = word[i];
			if ((unsigned char)c < 0x20 || c == 0x7f)
				c = ' ';
			if (col >= BOUNCE_LINE_MAX - 2) {
				sb_add(b, fold, strlen(fold));
				col = fold_col;
			}
			sb_add(b, &c, 1);
			col++;
		}
		while (*p == ' ' || *p == '\n')
			p++;
	}
	sb_add(b, "\r\n", 2);
}

/* "name: value" CR LF, folded with a leading space on continuation lines. */
static void
sb_field(struct sbuf *b, const char *name, const char *value)
{
	sb_printf(b, "%s: ", name);
	sb_wrap(b, value, strlen(name) + 2, 78, "\r\n ", 1);
}

/* Human-readable text, wrapped at 76 columns. */
static void
sb_text(struct sbuf *b, const char *text)
{
	sb_wrap(b, text, 0, 76, "\r\n", 0);
}

static bool
is_ascii(const char *s)
{
	for (; s && *s; s++)
		if ((unsigned char)*s >= 0x80)
			return false;
	return true;
}

static const char *
family_words(int family)
{
	return family == AF_INET6 ? "over IPv6" : family == AF_INET ? "over IPv4" : NULL;
}

static void
part_text(struct sbuf *b, const struct bounce_msg *m, bool delayed)
{
	sb_printf(b, "This is the mail system at host %s.\r\n\r\n", m->reporting_mta);
	if (delayed)
		sb_text(b, "Your message could not be delivered to one or more recipients yet. "
		    "It is still in the queue and delivery will be tried again; you do not need to "
		    "send it again.");
	else
		sb_text(b, "I'm sorry to have to inform you that your message could not be "
		    "delivered to one or more recipients. It's attached below (headers only).");
	sb_printf(b, "\r\nThe mail system\r\n");
	for (size_t i = 0; i < m->nrcpts; i++) {
		const struct bounce_rcpt *r = &m->rcpts[i];
		char *line;
		const char *fam = family_words(r->family);
		if (fam)
			line = xasprintf("<%s>: %s (delivery was tried %s)", r->addr, r->reason, fam);
		else
			line = xasprintf("<%s>: %s", r->addr, r->reason);
		sb_add(b, "\r\n", 2);
		sb_text(b, line);
		free(line);
	}
}

static void
part_status(struct sbuf *b, const struct bounce_msg *m, time_t now)
{
	char date[64];
	sb_printf(b, "Reporting-MTA: dns; %s\r\n", m->reporting_mta);
	sb_printf(b, "X-Dualrelay-Queue-ID: %s\r\n", m->queue_id);
	dr_rfc5322_date(m->arrival, date, sizeof(date));
	sb_printf(b, "Arrival-Date: %s\r\n", date);
	for (size_t i = 0; i < m->nrcpts; i++) {
		const struct bounce_rcpt *r = &m->rcpts[i];
		sb_add(b, "\r\n", 2);
		/* RFC 6533: a non-ASCII address needs the utf-8 address type. */
		char *fr = xasprintf("%s; %s", is_ascii(r->addr) ? "rfc822" : "utf-8", r->addr);
		sb_field(b, "Final-Recipient", fr);
		free(fr);
		sb_printf(b, "Action: %s\r\n", r->action == BOUNCE_DELAYED ? "delayed" : "failed");
		sb_printf(b, "Status: %s\r\n", r->dsn && r->dsn[0] ? r->dsn :
		    (r->action == BOUNCE_DELAYED ? "4.0.0" : "5.0.0"));
		if (r->remote_mta && r->remote_mta[0]) {
			char *v = xasprintf("dns; %s", r->remote_mta);
			sb_field(b, "Remote-MTA", v);
			free(v);
		}
		if (r->diagnostic && r->diagnostic[0]) {
			char *v = xasprintf("smtp; %s", r->diagnostic);
			sb_field(b, "Diagnostic-Code", v);
			free(v);
		} else if (r->reason && r->reason[0]) {
			char *v = xasprintf("X-Dualrelay; %s", r->reason);
			sb_field(b, "Diagnostic-Code", v);
			free(v);
		}
		dr_rfc5322_date(r->last_attempt ? r->last_attempt : now, date, sizeof(date));
		sb_printf(b, "Last-Attempt-Date: %s\r\n", date);
	}
}

/* The original headers, CR LF, lines capped; always ends with one CR LF. */
static void
part_headers(struct sbuf *b, const struct bounce_msg *m)
{
	const char *p = m->headers ? m->headers : "";
	const char *end = p + (m->headers ? m->headers_len : 0);
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *le = nl ? nl : end;
		size_t n = (size_t)(le - p);
		if (n > 0 && p[n - 1] == '\r')
			n--;
		if (n == 0)
			break; /* the empty line ending the header block */
		sb_add(b, p, n > BOUNCE_LINE_MAX ? BOUNCE_LINE_MAX : n);
		sb_add(b, "\r\n", 2);
		p = nl ? nl + 1 : end;
	}
}

bool
bounce_should_send(const char *sender)
{
	return sender != NULL && sender[0] != '\0';
}

char *
bounce_compose(const struct bounce_msg *m, time_t now, size_t *len)
{
	struct sbuf status = { 0 }, text = { 0 }, headers = { 0 }, out = { 0 };
	bool delayed = m->nrcpts > 0 && m->rcpts[0].action == BOUNCE_DELAYED;
	char date[64], boundary[128];

	part_text(&text, m, delayed);
	part_status(&status, m, now);
	part_headers(&headers, m);

	/* A boundary that occurs in none of the parts (RFC 2046 5.1.1). */
	for (unsigned n = 0;; n++) {
		snprintf(boundary, sizeof(boundary), "%s.%lld.%u/%s", m->boundary_seed ?
		    m->boundary_seed : "dsn", (long long)now, n, m->reporting_mta);
		if (!strstr(text.p, boundary) && !strstr(status.p, boundary) &&
		    !(headers.p && strstr(headers.p, boundary)))
			break;
	}
	dr_rfc5322_date(now, date, sizeof(date));
	sb_printf(&out, "From: Mail Delivery System <MAILER-DAEMON@%s>\r\n", m->reporting_mta);
	sb_printf(&out, "To: <%s>\r\n", m->sender);
	sb_printf(&out, "Subject: %s\r\n", delayed ? "Delayed Mail (still being retried)" :
	    "Undelivered Mail Returned to Sender");
	sb_printf(&out, "Date: %s\r\n", date);
	sb_printf(&out, "Message-ID: <%s.bounce.%lld@%s>\r\n", m->queue_id, (long long)now,
	    m->reporting_mta);
	sb_printf(&out, "Auto-Submitted: auto-replied\r\n");
	sb_printf(&out, "MIME-Version: 1.0\r\n");
	sb_printf(&out, "Content-Type: multipart/report; report-type=delivery-status;\r\n"
	    "\tboundary=\"%s\"\r\n", boundary);
	sb_printf(&out, "Content-Transfer-Encoding: 8bit\r\n\r\n");
	sb_printf(&out, "This is a MIME-encapsulated message.\r\n\r\n");
	sb_printf(&out, "--%s\r\nContent-Description: Notification\r\n"
	    "Content-Type: text/plain; charset=%s\r\n\r\n", boundary,
	    is_ascii(text.p) ? "us-ascii" : "utf-8");
	sb_add(&out, text.p, text.len);
	sb_printf(&out, "\r\n--%s\r\nContent-Description: Delivery report\r\n"
	    "Content-Type: message/delivery-status\r\n\r\n", boundary);
	sb_add(&out, status.p, status.len);
	sb_printf(&out, "\r\n--%s\r\nContent-Description: Undelivered Message Headers\r\n"
	    "Content-Type: text/rfc822-headers\r\n\r\n", boundary);
	if (headers.len)
		sb_add(&out, headers.p, headers.len);
	sb_printf(&out, "\r\n--%s--\r\n", boundary);
	free(status.p);
	free(text.p);
	free(headers.p);
	*len = out.len;
	return out.p;
}
