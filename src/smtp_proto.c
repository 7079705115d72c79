/*
 * smtp_proto: SMTP as text, with no I/O and no global state. It owns the syntax of
 * command lines (RFC 5321 4.1.1), of reverse- and forward-paths and mailboxes (RFC 5321
 * 4.1.2, widened to UTF-8 by RFC 6531 3.3), of MAIL parameters (RFC 1870 SIZE, RFC 6152
 * BODY, RFC 6531 SMTPUTF8), of replies (RFC 5321 4.2, enhanced codes from RFC 2034 /
 * RFC 3463), of EHLO keywords, and DATA transparency both ways (RFC 5321 4.5.2).
 *
 * The DATA decoder is deliberately strict: the only end of data is CR LF "." CR LF, and
 * any CR or LF that is not part of a CR LF pair stops decoding. A relay that accepted
 * "\n.\n" or "\r.\r" as line ends would disagree with its next hop about where a message
 * ends, which is what "SMTP smuggling" exploits (RFC 5321 2.3.8 forbids bare CR and LF).
 *
 * Ownership: everything returned through pointers points into the caller's buffers,
 * except smtp_reply.text (owned by the reply, freed by smtp_reply_clear) and the string
 * returned by smtp_reply_oneline (the caller frees it).
 */
#include "config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "smtp_proto.h"
#include "util.h"

/* Character classes in ASCII only: the C library's versions depend on the locale. */
static bool
is_alpha(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

static bool
is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

static bool
is_alnum(unsigned char c)
{
	return is_alpha(c) || is_digit(c);
}

static unsigned char
to_upper(unsigned char c)
{
	return (c >= 'a' && c <= 'z') ? (unsigned char)(c - 'a' + 'A') : c;
}

/* Case-insensitive (ASCII) comparison of s[0..n) with the whole of word. */
static bool
word_eq(const char *s, size_t n, const char *word)
{
	if (strlen(word) != n)
		return false;
	for (size_t i = 0; i < n; i++)
		if (to_upper((unsigned char)s[i]) != to_upper((unsigned char)word[i]))
			return false;
	return true;
}

static bool
has_prefix_ci(const char *s, const char *prefix)
{
	size_t n = strlen(prefix);
	for (size_t i = 0; i < n; i++)
		if (s[i] == '\0' || to_upper((unsigned char)s[i]) != to_upper((unsigned char)prefix[i]))
			return false;
	return true;
}

static void
set_why(const char **why, const char *reason)
{
	if (why != NULL)
		*why = reason;
}

/*
 * Length of the well-formed UTF-8 sequence at s (RFC 3629 section 4: no overlong forms,
 * no surrogates, nothing above U+10FFFF), or 0 when s does not start one. s[0] >= 0x80.
 * Relies on the string being NUL-terminated: a NUL ends a truncated sequence.
 */
static size_t
utf8_seq_len(const unsigned char *s)
{
	unsigned char c = s[0];
	size_t n;
	unsigned char lo = 0x80, hi = 0xbf;  /* allowed range of the second byte */

	if (c >= 0xc2 && c <= 0xdf)
		n = 2;
	else if (c >= 0xe0 && c <= 0xef) {
		n = 3;
		if (c == 0xe0)
			lo = 0xa0;
		else if (c == 0xed)
			hi = 0x9f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		n = 4;
		if (c == 0xf0)
			lo = 0x90;
		else if (c == 0xf4)
			hi = 0x8f;
	} else
		return 0;
	if (s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < n; i++)
		if (s[i] < 0x80 || s[i] > 0xbf)
			return 0;
	return n;
}

/* ------------------------------------------------------------------------------------ */
/* Commands (RFC 5321 4.1.1). */

static const struct {
	enum smtp_verb verb;
	const char *name;
} verbs[] = {
	{ SMTP_VERB_HELO, "HELO" }, { SMTP_VERB_EHLO, "EHLO" }, { SMTP_VERB_MAIL, "MAIL" },
	{ SMTP_VERB_RCPT, "RCPT" }, { SMTP_VERB_DATA, "DATA" }, { SMTP_VERB_RSET, "RSET" },
	{ SMTP_VERB_NOOP, "NOOP" }, { SMTP_VERB_QUIT, "QUIT" }, { SMTP_VERB_HELP, "HELP" },
	{ SMTP_VERB_VRFY, "VRFY" }, { SMTP_VERB_EXPN, "EXPN" },
	{ SMTP_VERB_STARTTLS, "STARTTLS" }, { SMTP_VERB_AUTH, "AUTH" },
	{ SMTP_VERB_BDAT, "BDAT" },
};

int
smtp_parse_command(const char *line, struct smtp_command *out)
{
	out->verb = SMTP_VERB_UNKNOWN;
	out->args = "";
	if (line[0] == '\0')
		return -1;
	/* Controls (including TAB, CR, LF and DEL) have no place in a command line; bytes
	 * >= 0x80 may be UTF-8 (RFC 6531) and are left to the argument parsers. */
	for (const unsigned char *p = (const unsigned char *)line; *p != '\0'; p++)
		if (*p < 0x20 || *p == 0x7f)
			return -1;

	size_t n = strcspn(line, " ");
	for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++) {
		if (word_eq(line, n, verbs[i].name)) {
			out->verb = verbs[i].verb;
			break;
		}
	}
	out->args = line[n] == ' ' ? line + n + 1 : line + n;
	return 0;
}

const char *
smtp_verb_name(enum smtp_verb v)
{
	for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++)
		if (verbs[i].verb == v)
			return verbs[i].name;
	return "UNKNOWN";
}

/* ------------------------------------------------------------------------------------ */
/* Mailboxes (RFC 5321 4.1.2, RFC 6531 3.3). */

/* atext of RFC 5322 3.2.3, which RFC 5321 Atom uses. */
static bool
is_atext(unsigned char c)
{
	return is_alnum(c) || (c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

/*
 * Scans a Local-part (Dot-string or Quoted-string) at s. Returns the pointer just after
 * it, or NULL when it is malformed. UTF-8 is allowed in atoms and quoted text when utf8.
 */
static const char *
scan_local_part(const char *s, bool utf8)
{
	const unsigned char *p = (const unsigned char *)s;

	if (*p == '"') {
		/* Quoted-string: qtextSMTP is %d32-33 / %d35-91 / %d93-126,
		 * quoted-pairSMTP is "\" followed by %d32-126. */
		for (p++; *p != '"'; ) {
			if (*p == '\\') {
				if (p[1] < 32 || p[1] > 126)
					return NULL;
				p += 2;
			} else if (*p >= 32 && *p <= 126) {
				p++;
			} else if (*p >= 0x80 && utf8) {
				size_t n = utf8_seq_len(p);
				if (n == 0)
					return NULL;
				p += n;
			} else
				return NULL;  /* control, NUL (unterminated) or 8-bit without utf8 */
		}
		return (const char *)p + 1;
	}

	/* Dot-string = Atom *("." Atom): no empty atom, so no leading, trailing or double dot. */
	for (;;) {
		const unsigned char *atom = p;
		for (;;) {
			if (is_atext(*p))
				p++;
			else if (*p >= 0x80 && utf8) {
				size_t n = utf8_seq_len(p);
				if (n == 0)
					return NULL;
				p += n;
			} else
				break;
		}
		if (p == atom)
			return NULL;
		if (*p != '.')
			return (const char *)p;
		p++;
	}
}

/* A domain name: dot-separated labels of letters, digits and inner hyphens. */
static bool
domain_valid(const char *s, bool utf8)
{
	const unsigned char *p = (const unsigned char *)s;

	if (strlen(s) > SMTP_DOMAIN_MAX)
		return false;
	for (;;) {
		const unsigned char *label = p;
		bool ascii = true;
		while (*p != '\0' && *p != '.') {
			if (is_alnum(*p) || *p == '-')
				p++;
			else if (*p >= 0x80 && utf8) {
				/* A U-label (RFC 6531 3.3); its A-label length is not checked here. */
				size_t n = utf8_seq_len(p);
				if (n == 0)
					return false;
				p += n;
				ascii = false;
			} else
				return false;
		}
		size_t len = (size_t)(p - label);
		/* RFC 1035 2.3.4 / RFC 5321 4.5.3.1.2: labels of 1..63 octets. */
		if (len == 0 || (ascii && len > 63))
			return false;
		if (label[0] == '-' || p[-1] == '-')
			return false;
		if (*p == '\0')
			return true;
		p++;  /* '.'; a trailing dot leaves an empty label, refused above */
	}
}

/* address-literal = "[" ( IPv4-address-literal / IPv6-address-literal ) "]". The
 * General-address-literal form is refused: we could not deliver to one anyway. */
static bool
address_literal_valid(const char *s)
{
	size_t len = strlen(s);
	char buf[INET6_ADDRSTRLEN + 8];
	unsigned char bin[sizeof(struct in6_addr)];

	if (len < 3 || s[0] != '[' || s[len - 1] != ']' || len - 2 >= sizeof(buf))
		return false;
	memcpy(buf, s + 1, len - 2);
	buf[len - 2] = '\0';
	if (has_prefix_ci(buf, "IPv6:"))
		return inet_pton(AF_INET6, buf + 5, bin) == 1;
	/* glibc's inet_pton accepts only four decimal parts without leading zeros. */
	return inet_pton(AF_INET, buf, bin) == 1;
}

bool
smtp_mailbox_valid(const char *addr, bool smtputf8)
{
	if (strlen(addr) > SMTP_PATH_MAX - 2)
		return false;
	const char *end = scan_local_part(addr, smtputf8);
	if (end == NULL || *end != '@')
		return false;
	if ((size_t)(end - addr) > SMTP_LOCAL_PART_MAX)
		return false;
	const char *domain = end + 1;
	if (domain[0] == '[')
		return address_literal_valid(domain);
	return domain_valid(domain, smtputf8);
}

const char *
smtp_mailbox_domain(const char *addr)
{
	const char *at = strrchr(addr, '@');
	return at != NULL ? at + 1 : addr;
}

/* ------------------------------------------------------------------------------------ */
/* Paths (RFC 5321 4.1.2: Reverse-path, Forward-path). */

/* Finds the '>' closing the path that starts after '<' at s, skipping quoted text. */
static const char *
find_path_end(const char *s)
{
	bool quoted = false;

	for (const char *p = s; *p != '\0'; p++) {
		if (quoted && *p == '\\' && p[1] != '\0')
			p++;
		else if (*p == '"')
			quoted = !quoted;
		else if (*p == '>' && !quoted)
			return p;
	}
	return NULL;
}

static bool
has_8bit(const char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s >= 0x80)
			return true;
	return false;
}

int
smtp_parse_path(const char *args, const char *prefix, bool allow_null, bool smtputf8,
    char *addr, size_t addrsize, const char **params, const char **why)
{
	const char *syntax = has_prefix_ci(prefix, "FROM") ?
	    "Syntax: MAIL FROM:<address>" : "Syntax: RCPT TO:<address>";
	char mailbox[SMTP_PATH_MAX + 1];

	if (addrsize > 0)
		addr[0] = '\0';
	if (params != NULL)
		*params = "";
	if (!has_prefix_ci(args, prefix)) {
		set_why(why, syntax);
		return -1;
	}
	/* RFC 5321 has no space after the colon, but many clients send one. */
	const char *p = args + strlen(prefix);
	while (*p == ' ')
		p++;
	if (*p != '<') {
		set_why(why, syntax);  /* unbracketed paths are not accepted */
		return -1;
	}
	const char *end = find_path_end(p + 1);
	if (end == NULL) {
		set_why(why, syntax);
		return -1;
	}
	if (end[1] != '\0' && end[1] != ' ') {
		set_why(why, syntax);
		return -1;
	}
	size_t len = (size_t)(end - (p + 1));
	/* RFC 5321 4.5.3.1.3: 256 octets including the angle brackets. */
	if (len + 2 > SMTP_PATH_MAX) {
		set_why(why, "address too long");
		return -1;
	}
	if (len == 0 && !allow_null) {
		set_why(why, "null address not allowed here");
		return -1;
	}
	if (p[1] == '@') {
		set_why(why, "source routes are not accepted");
		return -1;
	}
	memcpy(mailbox, p + 1, len);
	mailbox[len] = '\0';
	if (len > 0 && !smtp_mailbox_valid(mailbox, smtputf8)) {
		if (!smtputf8 && has_8bit(mailbox))
			set_why(why, "non-ASCII address requires SMTPUTF8");
		else
			set_why(why, "bad address syntax");
		return -1;
	}
	if (len + 1 > addrsize) {
		set_why(why, "address too long");
		return -1;
	}
	memcpy(addr, mailbox, len + 1);
	for (p = end + 1; *p == ' '; p++)
		;
	if (params != NULL)
		*params = p;
	return 0;
}

/* ------------------------------------------------------------------------------------ */
/* MAIL parameters (RFC 5321 4.1.2 Mail-parameters; RFC 1870, RFC 6152, RFC 6531). */

static int
parse_size(const char *v, size_t n, unsigned long long *out)
{
	unsigned long long x = 0;

	if (n == 0 || n > 20)
		return -1;
	for (size_t i = 0; i < n; i++) {
		if (!is_digit((unsigned char)v[i]))
			return -1;
		unsigned d = (unsigned)(v[i] - '0');
		if (x > (~0ULL - d) / 10)
			return -1;
		x = x * 10 + d;
	}
	*out = x;
	return 0;
}

/* esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-") */
static bool
keyword_valid(const char *k, size_t n)
{
	if (n == 0 || !is_alnum((unsigned char)k[0]))
		return false;
	for (size_t i = 1; i < n; i++)
		if (!is_alnum((unsigned char)k[i]) && k[i] != '-')
			return false;
	return true;
}

int
smtp_parse_mail_params(const char *params, struct smtp_mail_params *out, const char **why)
{
	bool seen_size = false, seen_body = false;

	memset(out, 0, sizeof(*out));
	out->body = SMTP_BODY_7BIT;
	if (params == NULL)
		return 0;
	for (const char *p = params; *p != '\0'; ) {
		if (*p == ' ') {
			p++;
			continue;
		}
		size_t toklen = strcspn(p, " ");
		size_t klen = strcspn(p, "= ");
		const char *val = NULL;
		size_t vlen = 0;
		if (klen < toklen) {
			val = p + klen + 1;
			vlen = toklen - klen - 1;
		}
		if (!keyword_valid(p, klen)) {
			set_why(why, "bad parameter syntax");
			return -1;
		}
		if (word_eq(p, klen, "SIZE")) {
			if (seen_size || val == NULL || parse_size(val, vlen, &out->size) < 0) {
				set_why(why, seen_size ? "duplicate SIZE parameter" : "bad SIZE value");
				return -1;
			}
			seen_size = true;
		} else if (word_eq(p, klen, "BODY")) {
			if (seen_body || val == NULL) {
				set_why(why, seen_body ? "duplicate BODY parameter" : "bad BODY value");
				return -1;
			}
			if (word_eq(val, vlen, "7BIT"))
				out->body = SMTP_BODY_7BIT;
			else if (word_eq(val, vlen, "8BITMIME"))
				out->body = SMTP_BODY_8BITMIME;
			else {
				set_why(why, "bad BODY value");
				return -1;
			}
			seen_body = true;
		} else if (word_eq(p, klen, "SMTPUTF8")) {
			if (val != NULL || out->smtputf8) {
				set_why(why, val != NULL ?
				    "SMTPUTF8 takes no value" : "duplicate SMTPUTF8 parameter");
				return -1;
			}
			out->smtputf8 = true;
		} else {
			/* RFC 5321 4.1.1.11: 555 for parameters we do not implement. */
			set_why(why, "unsupported parameter");
			return -1;
		}
		p += toklen;
	}
	return 0;
}

/* ------------------------------------------------------------------------------------ */
/* Replies (RFC 5321 4.2, RFC 2034). */

void
smtp_reply_init(struct smtp_reply *r)
{
	memset(r, 0, sizeof(*r));
}

void
smtp_reply_clear(struct smtp_reply *r)
{
	free(r->text);
	smtp_reply_init(r);
}

/*
 * Length of an RFC 3463 status code "class.subject.detail" at s[0..len) (subject and
 * detail 1..3 digits) followed by a space or the end, or 0 if there is none.
 */
static size_t
enhanced_code_len(const char *s, size_t len)
{
	size_t i = 0;

	if (len < 5 || (s[0] != '2' && s[0] != '4' && s[0] != '5') || s[1] != '.')
		return 0;
	i = 2;
	for (int part = 0; part < 2; part++) {
		size_t start = i;
		while (i < len && i - start < 4 && is_digit((unsigned char)s[i]))
			i++;
		if (i == start || i - start > 3)
			return 0;
		if (part == 0) {
			if (i >= len || s[i] != '.')
				return 0;
			i++;
		}
	}
	if (i < len && s[i] != ' ')
		return 0;
	return i;
}

static void
reply_append(struct smtp_reply *r, const char *s, size_t n)
{
	size_t old = r->text != NULL ? strlen(r->text) : 0;
	size_t sep = r->nlines > 1 ? 1 : 0;

	r->text = xrealloc(r->text, old + sep + n + 1);
	if (sep)
		r->text[old] = '\n';
	memcpy(r->text + old + sep, s, n);
	r->text[old + sep + n] = '\0';
}

int
smtp_reply_feed(struct smtp_reply *r, const char *line, size_t len)
{
	if (r->complete || len < 3 || len > SMTP_REPLY_LINE_MAX)
		return -1;
	/* The caller strips CR LF; one left inside would mean a bare CR/LF from the peer. */
	for (size_t i = 0; i < len; i++)
		if (line[i] == '\0' || line[i] == '\r' || line[i] == '\n')
			return -1;
	if (!is_digit((unsigned char)line[0]) || !is_digit((unsigned char)line[1]) ||
	    !is_digit((unsigned char)line[2]))
		return -1;
	int code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
	if (code < 200 || code > 599)
		return -1;
	if (r->nlines > 0 && code != r->code)
		return -1;  /* RFC 5321 4.2.1: every line of a reply carries the same code */
	/* "NNN" alone is a final line with no text (RFC 5321 4.2: the text is optional). */
	bool last = len == 3 || line[3] == ' ';
	if (len > 3 && line[3] != ' ' && line[3] != '-')
		return -1;
	if (r->nlines >= SMTP_REPLY_MAX_LINES)
		return -1;

	const char *text = len > 3 ? line + 4 : line + 3;
	size_t tlen = len > 3 ? len - 4 : 0;
	size_t elen = enhanced_code_len(text, tlen);
	if (r->nlines == 0) {
		r->code = code;
		/* RFC 3463 2: the class of the status code must match the reply's class. */
		if (elen > 0 && text[0] == line[0]) {
			memcpy(r->enhanced, text, elen);
			r->enhanced[elen] = '\0';
		} else
			elen = 0;
	} else if (elen == 0 || r->enhanced[0] == '\0' ||
	    strlen(r->enhanced) != elen || memcmp(r->enhanced, text, elen) != 0)
		elen = 0;  /* strip only a repetition of the first line's code */
	if (elen > 0) {
		text += elen;
		tlen -= elen;
		while (tlen > 0 && *text == ' ') {
			text++;
			tlen--;
		}
	}
	r->nlines++;
	reply_append(r, text, tlen);
	if (last)
		r->complete = true;
	return last ? 1 : 0;
}

char *
smtp_reply_oneline(const struct smtp_reply *r)
{
	const char *text = r->text != NULL ? r->text : "";
	char *s = xasprintf("%03d%s%s%s%s", r->code, r->enhanced[0] ? " " : "", r->enhanced,
	    text[0] ? " " : "", text);

	/* Lines joined with a space; other controls neutralised so logs stay one line. */
	for (char *p = s; *p != '\0'; p++) {
		if (*p == '\n')
			*p = ' ';
		else if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = '?';
	}
	return s;
}

/* ------------------------------------------------------------------------------------ */
/* EHLO keywords (RFC 5321 4.1.1.1). */

static const struct {
	const char *name;
	unsigned bit;
} ehlo_keywords[] = {
	{ "PIPELINING", SMTP_EXT_PIPELINING }, { "SIZE", SMTP_EXT_SIZE },
	{ "8BITMIME", SMTP_EXT_8BITMIME }, { "STARTTLS", SMTP_EXT_STARTTLS },
	{ "AUTH", SMTP_EXT_AUTH }, { "SMTPUTF8", SMTP_EXT_SMTPUTF8 },
	{ "ENHANCEDSTATUSCODES", SMTP_EXT_ENHANCEDSTATUSCODES }, { "DSN", SMTP_EXT_DSN },
	{ "CHUNKING", SMTP_EXT_CHUNKING },
};

/* Adds the SASL mechanisms in s[0..n) (space separated) to out->auth_mechs, upper case,
 * once each; mechanisms that do not fit are dropped. */
static void
ehlo_add_mechs(struct smtp_ehlo_info *out, const char *s, size_t n)
{
	size_t i = 0;

	while (i < n) {
		while (i < n && s[i] == ' ')
			i++;
		size_t start = i;
		while (i < n && s[i] != ' ')
			i++;
		size_t mlen = i - start;
		char mech[64];
		if (mlen == 0 || mlen >= sizeof(mech))
			continue;
		for (size_t k = 0; k < mlen; k++)
			mech[k] = (char)to_upper((unsigned char)s[start + k]);
		mech[mlen] = '\0';

		/* Already listed (servers often send both "AUTH x" and "AUTH=x")? */
		bool dup = false;
		for (const char *q = out->auth_mechs; *q != '\0'; ) {
			size_t ql = strcspn(q, " ");
			if (ql == mlen && memcmp(q, mech, mlen) == 0)
				dup = true;
			q += ql;
			while (*q == ' ')
				q++;
		}
		size_t used = strlen(out->auth_mechs);
		size_t need = used + (used ? 1 : 0) + mlen + 1;
		if (dup || need > sizeof(out->auth_mechs))
			continue;
		if (used)
			out->auth_mechs[used++] = ' ';
		memcpy(out->auth_mechs + used, mech, mlen + 1);
	}
}

static void
ehlo_line(struct smtp_ehlo_info *out, const char *s, size_t n)
{
	size_t klen = 0;

	while (klen < n && s[klen] != ' ' && s[klen] != '=')
		klen++;
	const char *arg = klen < n ? s + klen + 1 : s + n;
	size_t alen = klen < n ? n - klen - 1 : 0;
	bool old_auth = klen < n && s[klen] == '=';

	for (size_t i = 0; i < sizeof(ehlo_keywords) / sizeof(ehlo_keywords[0]); i++) {
		if (!word_eq(s, klen, ehlo_keywords[i].name))
			continue;
		/* "AUTH=mechs" is the pre-RFC 4954 form some servers still send. */
		if (old_auth && ehlo_keywords[i].bit != SMTP_EXT_AUTH)
			return;
		out->ext |= ehlo_keywords[i].bit;
		if (ehlo_keywords[i].bit == SMTP_EXT_AUTH)
			ehlo_add_mechs(out, arg, alen);
		else if (ehlo_keywords[i].bit == SMTP_EXT_SIZE) {
			/* RFC 1870: "SIZE" alone or "SIZE 0" means no fixed limit. */
			unsigned long long v;
			while (alen > 0 && *arg == ' ') {
				arg++;
				alen--;
			}
			out->max_size = parse_size(arg, alen, &v) == 0 ? v : 0;
		}
		return;
	}
}

void
smtp_ehlo_parse(const struct smtp_reply *r, struct smtp_ehlo_info *out)
{
	memset(out, 0, sizeof(*out));
	if (r->code != 250 || r->text == NULL)
		return;
	/* The first line is the server's domain and greeting, not a keyword. */
	const char *p = strchr(r->text, '\n');
	while (p != NULL) {
		p++;
		size_t n = strcspn(p, "\n");
		ehlo_line(out, p, n);
		p = p[n] == '\n' ? p + n : NULL;
	}
}

/* ------------------------------------------------------------------------------------ */
/* Enhanced status codes for delivery results. */

void
smtp_reply_dsn(const struct smtp_reply *r, const char *default_detail, char *buf, size_t size)
{
	char cls = (char)('0' + r->code / 100);

	if (size == 0)
		return;
	/* Only 2, 4 and 5 are classes of RFC 3463; anything else is treated as a transient
	 * failure, the safe reading of a reply we do not understand. */
	if (cls != '2' && cls != '4' && cls != '5')
		cls = '4';
	if (r->enhanced[0] == cls) {
		dr_strlcpy(buf, r->enhanced, size);
		return;
	}
	/* default_detail may be ".1.1", "1.1" or a whole code "5.1.1" whose class is replaced. */
	const char *d = default_detail != NULL && default_detail[0] != '\0' ?
	    default_detail : ".0.0";
	if (is_digit((unsigned char)d[0]) && d[1] == '.' && strchr(d + 2, '.') != NULL)
		d += 1;
	snprintf(buf, size, "%c%s%s", cls, d[0] == '.' ? "" : ".", d);
}

/* ------------------------------------------------------------------------------------ */
/* DATA input (RFC 5321 4.5.2, 2.3.8). */

enum data_state {
	DATA_BOL = 0,   /* at the start of a line (also the start of the data) */
	DATA_DOT,       /* "." at the start of a line, not yet known to be the end */
	DATA_DOT_CR,    /* "." CR at the start of a line: LF ends the data */
	DATA_LINE,      /* inside a line */
	DATA_CR,        /* CR inside a line (already emitted): it must be followed by LF */
	DATA_DONE,      /* the end was seen */
	DATA_ERROR,     /* a bare CR or LF was seen */
};

void
smtp_data_decoder_init(struct smtp_data_decoder *d)
{
	memset(d, 0, sizeof(*d));
	d->state = DATA_BOL;
}

static void
data_content(struct smtp_data_decoder *d, char c, char *out, size_t *o)
{
	out[(*o)++] = c;
	if (++d->line_len > d->max_line_len)
		d->max_line_len = d->line_len;
}

/*
 * The dot at the start of a line is never emitted: either it is the terminator or the
 * transparency dot (RFC 5321 4.5.2). A content CR is emitted as soon as it is read, and
 * the following byte decides whether it was legal; if not, decoding stops with an error
 * and the caller discards the message. So out never needs more than inlen bytes and no
 * byte is held back across chunks: only the state is.
 */
enum smtp_data_status
smtp_data_decode(struct smtp_data_decoder *d, const char *in, size_t inlen,
    char *out, size_t *outlen, size_t *consumed)
{
	size_t i = 0, o = 0;
	enum smtp_data_status st = SMTP_DATA_MORE;

	if (d->state == DATA_DONE || d->state == DATA_ERROR) {
		*outlen = 0;
		*consumed = 0;
		return d->state == DATA_DONE ? SMTP_DATA_END : SMTP_DATA_BARE_EOL;
	}
	while (i < inlen && st == SMTP_DATA_MORE) {
		char c = in[i++];
		switch (d->state) {
		case DATA_BOL:
			if (c == '.')
				d->state = DATA_DOT;
			else if (c == '\r') {
				out[o++] = c;
				d->state = DATA_CR;
			} else if (c == '\n')
				st = SMTP_DATA_BARE_EOL;
			else {
				data_content(d, c, out, &o);
				d->state = DATA_LINE;
			}
			break;
		case DATA_DOT:
			if (c == '\r')
				d->state = DATA_DOT_CR;
			else if (c == '\n')
				st = SMTP_DATA_BARE_EOL;
			else {
				data_content(d, c, out, &o);
				d->state = DATA_LINE;
			}
			break;
		case DATA_DOT_CR:
			if (c == '\n')
				st = SMTP_DATA_END;
			else
				st = SMTP_DATA_BARE_EOL;
			break;
		case DATA_LINE:
			if (c == '\r') {
				out[o++] = c;
				d->state = DATA_CR;
			} else if (c == '\n')
				st = SMTP_DATA_BARE_EOL;
			else
				data_content(d, c, out, &o);
			break;
		case DATA_CR:
			if (c == '\n') {
				out[o++] = c;
				d->line_len = 0;
				d->state = DATA_BOL;
			} else
				st = SMTP_DATA_BARE_EOL;
			break;
		default:
			st = SMTP_DATA_BARE_EOL;  /* unreachable: terminal states handled above */
			break;
		}
	}
	if (st == SMTP_DATA_END)
		d->state = DATA_DONE;
	else if (st == SMTP_DATA_BARE_EOL)
		d->state = DATA_ERROR;
	*outlen = o;
	*consumed = i;
	return st;
}

/* ------------------------------------------------------------------------------------ */
/* DATA output (RFC 5321 4.5.2). */

enum enc_state {
	ENC_BOL = 0,    /* at the start of the content or after CR LF */
	ENC_LINE,       /* inside a line */
	ENC_CR,         /* after a CR */
	ENC_BARE_LF,    /* after an LF not preceded by CR */
};

void
smtp_dot_encoder_init(struct smtp_dot_encoder *e)
{
	e->state = ENC_BOL;
}

/*
 * Content comes from our spool, which the strict decoder above filled, so it has CR LF
 * line ends only. Should a bare LF slip in anyway, a dot after it is stuffed too, so a
 * next hop that takes LF for a line end still cannot see an early end of data.
 */
size_t
smtp_dot_encode(struct smtp_dot_encoder *e, const char *in, size_t inlen, char *out)
{
	size_t o = 0;

	for (size_t i = 0; i < inlen; i++) {
		char c = in[i];
		if (c == '.' && (e->state == ENC_BOL || e->state == ENC_BARE_LF))
			out[o++] = '.';
		out[o++] = c;
		if (c == '\r')
			e->state = ENC_CR;
		else if (c == '\n')
			e->state = e->state == ENC_CR ? ENC_BOL : ENC_BARE_LF;
		else
			e->state = ENC_LINE;
	}
	return o;
}

size_t
smtp_dot_encoder_finish(struct smtp_dot_encoder *e, char *out)
{
	size_t o = 0;

	if (e->state != ENC_BOL) {
		out[o++] = '\r';
		out[o++] = '\n';
	}
	memcpy(out + o, ".\r\n", 3);
	e->state = ENC_BOL;
	return o + 3;
}

/* ------------------------------------------------------------------------------------ */
/* AUTH (RFC 4954) with PLAIN (RFC 4616) and LOGIN (draft-murchison-sasl-login). */

static int
b64_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

int
smtp_base64_decode(const char *in, unsigned char *out, size_t outsize, size_t *outlen)
{
	size_t len = strlen(in), n = 0;

	*outlen = 0;
	/* RFC 4954 4: "=" alone is an empty response. */
	if (strcmp(in, "=") == 0)
		return 0;
	if (len % 4 != 0)
		return -1;
	for (size_t i = 0; i < len; i += 4) {
		int v[4], pad = 0;
		unsigned long bits;

		/* Padding: "xx==" or "xxx=", in the last quartet only. */
		if (i + 4 == len && in[i + 3] == '=')
			pad = in[i + 2] == '=' ? 2 : 1;
		for (int k = 0; k < 4; k++) {
			if (k >= 4 - pad)
				v[k] = 0;
			else if ((v[k] = b64_value((unsigned char)in[i + (size_t)k])) < 0)
				return -1;
		}
		bits = ((unsigned long)v[0] << 18) | ((unsigned long)v[1] << 12) |
		    ((unsigned long)v[2] << 6) | (unsigned long)v[3];
		/* Bits beyond the last octet must be zero (RFC 4648 3.5, canonical form). */
		if ((pad == 1 && (bits & 0xff) != 0) || (pad == 2 && (bits & 0xffff) != 0))
			return -1;
		if (n + 3 - (size_t)pad > outsize)
			return -1;
		out[n++] = (unsigned char)(bits >> 16);
		if (pad < 2)
			out[n++] = (unsigned char)(bits >> 8);
		if (pad < 1)
			out[n++] = (unsigned char)bits;
	}
	*outlen = n;
	return 0;
}

int
smtp_parse_auth(const char *args, enum smtp_auth_mech *mech, const char **initial)
{
	size_t mlen = strcspn(args, " ");
	const char *rest = args + mlen;

	*mech = SMTP_AUTH_UNKNOWN;
	*initial = NULL;
	if (mlen == 0)
		return -1;
	if (*rest == ' ') {
		rest++;
		if (*rest == '\0' || strchr(rest, ' ') != NULL)
			return -1;
		*initial = rest;
	}
	if (word_eq(args, mlen, "PLAIN"))
		*mech = SMTP_AUTH_PLAIN;
	else if (word_eq(args, mlen, "LOGIN"))
		*mech = SMTP_AUTH_LOGIN;
	return 0;
}

/* Copies s[0..n) to out as a string; -1 when empty, too long or holding a NUL. */
static int
auth_copy_field(const unsigned char *s, size_t n, char *out, size_t size)
{
	if (n == 0 || n + 1 > size || memchr(s, '\0', n) != NULL)
		return -1;
	memcpy(out, s, n);
	out[n] = '\0';
	return 0;
}

int
smtp_auth_plain_decode(const char *b64, char *user, size_t usize, char *pass, size_t psize,
    const char **why)
{
	unsigned char buf[SMTP_COMMAND_LINE_MAX];
	const unsigned char *authcid, *passwd, *nul;
	size_t len, zlen, clen;
	int rc = -1;

	if (usize > 0)
		user[0] = '\0';
	if (psize > 0)
		pass[0] = '\0';
	if (smtp_base64_decode(b64, buf, sizeof(buf), &len) != 0) {
		set_why(why, "cannot decode the response");
		return -1;
	}
	/* message = [authzid] NUL authcid NUL passwd */
	if ((nul = memchr(buf, '\0', len)) == NULL)
		goto bad;
	zlen = (size_t)(nul - buf);
	authcid = nul + 1;
	if ((nul = memchr(authcid, '\0', len - zlen - 1)) == NULL)
		goto bad;
	clen = (size_t)(nul - authcid);
	passwd = nul + 1;
	if (auth_copy_field(authcid, clen, user, usize) != 0 ||
	    auth_copy_field(passwd, len - zlen - clen - 2, pass, psize) != 0)
		goto bad;
	/* Acting for another identity is not supported: authzid is empty or the user. */
	if (zlen != 0 && (zlen != clen || memcmp(buf, authcid, clen) != 0)) {
		set_why(why, "authorization identity differs from the user");
		rc = -2;
		goto out;
	}
	rc = 0;
	goto out;
bad:
	set_why(why, "malformed PLAIN message");
out:
	if (rc != 0) {
		if (usize > 0)
			memset(user, 0, usize);
		if (psize > 0)
			memset(pass, 0, psize);
	}
	/* The password was in here: do not leave it on the stack. */
	for (volatile unsigned char *p = buf; p < buf + sizeof(buf); p++)
		*p = 0;
	return rc;
}

int
smtp_auth_login_decode(const char *b64, char *out, size_t size)
{
	unsigned char buf[SMTP_COMMAND_LINE_MAX];
	size_t len;
	int rc = -1;

	if (size > 0)
		out[0] = '\0';
	if (smtp_base64_decode(b64, buf, sizeof(buf), &len) == 0)
		rc = auth_copy_field(buf, len, out, size);
	for (volatile unsigned char *p = buf; p < buf + sizeof(buf); p++)
		*p = 0;
	return rc;
}

/* ------------------------------------------------------------------------------------ */
/* Relay tricks: addresses that other mail software may route on from the local part. */

const char *
smtp_relay_trick(const char *addr)
{
	const char *at = strrchr(addr, '@');
	size_t llen = at != NULL ? (size_t)(at - addr) : strlen(addr);

	if (addr[0] == '@')
		return "source route";
	if (llen > 0 && addr[0] == '"' && memchr(addr, '@', llen) != NULL)
		return "quoted local part with @";
	if (memchr(addr, '%', llen) != NULL)
		return "percent hack";
	if (memchr(addr, '!', llen) != NULL)
		return "bang path";
	return NULL;
}

bool
smtp_rcpt_is_postmaster(const char *args, const char **params)
{
	static const char path[] = "<postmaster>";
	const char *p;

	if (!has_prefix_ci(args, "TO:"))
		return false;
	for (p = args + 3; *p == ' '; p++)
		;
	if (!has_prefix_ci(p, path) || (p[sizeof(path) - 1] != '\0' && p[sizeof(path) - 1] != ' '))
		return false;
	for (p += sizeof(path) - 1; *p == ' '; p++)
		;
	if (params != NULL)
		*params = p;
	return true;
}
