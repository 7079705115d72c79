/*
 * envelope: the in-memory envelope of a queued message and its two on-disk record
 * formats (see envelope.h). Pure code, no I/O: spool.c reads and writes the files.
 *
 * Both formats are line-oriented text so an operator can read a queue file with less(1).
 * Values never contain CR, LF or NUL: the encoder refuses them (the SMTP server never
 * accepts such addresses, RFC 5321 section 4.1.2), so one line is always one field.
 * The decoders are strict about what they need and skip what they do not know, so a
 * newer writer's extra header keys do not make an older reader quarantine the message.
 *
 * Ownership: an envelope owns every string it points to; envelope_free releases them.
 * Encoded buffers returned by envelope_encode_header are the caller's to free.
 */
#include "config.h"

#include <inttypes.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <openssl/evp.h>

#include "envelope.h"
#include "util.h"

#define ENVELOPE_MAGIC "DRSPOOL 1"
#define ENVELOPE_ID_LEN 16

/* A growing output buffer for the header encoder. */
struct envelope_buf {
	char *data;
	size_t len;
	size_t cap;
};

struct envelope *
envelope_new(void)
{
	struct envelope *e = xcalloc(1, sizeof(*e));

	e->body = SMTP_BODY_7BIT;
	return e;
}

static void
envelope_rcpt_clear(struct envelope_rcpt *r)
{
	free(r->addr);
	free(r->reason);
	r->addr = NULL;
	r->reason = NULL;
}

void
envelope_free(struct envelope *e)
{
	if (e == NULL)
		return;
	for (size_t i = 0; i < e->nrcpts; i++)
		envelope_rcpt_clear(&e->rcpts[i]);
	free(e->rcpts);
	free(e->sender);
	free(e->client_addr);
	free(e->helo);
	free(e->prepend);
	free(e);
}

void
envelope_add_rcpt(struct envelope *e, const char *addr)
{
	struct envelope_rcpt *r;

	e->rcpts = xgrow(e->rcpts, sizeof(*e->rcpts), e->nrcpts + 1, &e->rcpts_cap);
	r = &e->rcpts[e->nrcpts++];
	memset(r, 0, sizeof(*r));
	r->addr = xstrdup(addr);
	r->state = RCPT_PENDING;
}

bool
envelope_done(const struct envelope *e)
{
	for (size_t i = 0; i < e->nrcpts; i++) {
		if (e->rcpts[i].state == RCPT_PENDING || e->rcpts[i].state == RCPT_DEFERRED)
			return false;
	}
	return true;
}

const char *
rcpt_state_name(enum rcpt_state s)
{
	/* "sent" rather than "delivered": the word operators' log parsers know (status=sent). */
	switch (s) {
	case RCPT_PENDING:
		return "pending";
	case RCPT_DEFERRED:
		return "deferred";
	case RCPT_DELIVERED:
		return "sent";
	case RCPT_BOUNCED:
		return "bounced";
	}
	return "unknown";
}

/*
 * Queue ids: 8 hex digits of seconds, 5 of microseconds, 3 random. Fixed width, so ids
 * sort by arrival as strings (and ls(1) lists the queue in arrival order). Within one
 * process the time stamp is forced to increase strictly, which makes ids unique here
 * whatever the clock does; the random part separates processes (the spool's O_EXCL
 * create is the final word on uniqueness).
 */
static uint64_t envelope_last_stamp; /* seconds * 1e6 + microseconds of the last id */

void
envelope_new_id(char id[ENVELOPE_ID_MAX])
{
	struct timeval tv;
	uint64_t stamp;

	gettimeofday(&tv, NULL);
	stamp = (uint64_t)tv.tv_sec * 1000000u + (uint64_t)tv.tv_usec;
	if (stamp <= envelope_last_stamp)
		stamp = envelope_last_stamp + 1;
	envelope_last_stamp = stamp;

	snprintf(id, ENVELOPE_ID_MAX, "%08" PRIX32 "%05" PRIX32 "%03" PRIX32,
	    (uint32_t)(stamp / 1000000u), (uint32_t)(stamp % 1000000u), dr_random(0x1000));
}

bool
envelope_id_valid(const char *id)
{
	size_t i;

	if (id == NULL)
		return false;
	for (i = 0; id[i] != '\0'; i++) {
		if (i >= ENVELOPE_ID_LEN)
			return false;
		if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'A' && id[i] <= 'F')))
			return false;
	}
	return i == ENVELOPE_ID_LEN;
}

/* ---- header record ---- */

static void
envelope_buf_add(struct envelope_buf *b, const char *s, size_t n)
{
	b->data = xgrow(b->data, 1, b->len + n + 1, &b->cap);
	memcpy(b->data + b->len, s, n);
	b->len += n;
	b->data[b->len] = '\0';
}

/* Appends "key value\n"; false when the value would break the line structure. */
static bool
envelope_buf_field(struct envelope_buf *b, const char *key, const char *value)
{
	if (value == NULL)
		value = "";
	if (strpbrk(value, "\r\n") != NULL)
		return false;
	envelope_buf_add(b, key, strlen(key));
	envelope_buf_add(b, " ", 1);
	envelope_buf_add(b, value, strlen(value));
	envelope_buf_add(b, "\n", 1);
	return true;
}

/* Encodes the header record, with a pad line of pad spaces when padded. */
static char *
envelope_encode(const struct envelope *e, bool padded, size_t pad, size_t *len)
{
	struct envelope_buf b = { NULL, 0, 0 };
	char num[32];
	bool ok;

	if (!envelope_id_valid(e->id) || e->nrcpts == 0 || e->arrival < 0)
		return NULL;

	envelope_buf_add(&b, ENVELOPE_MAGIC "\n", strlen(ENVELOPE_MAGIC) + 1);
	ok = envelope_buf_field(&b, "id", e->id);
	snprintf(num, sizeof(num), "%lld", (long long)e->arrival);
	ok = ok && envelope_buf_field(&b, "arrival", num);
	ok = ok && envelope_buf_field(&b, "sender", e->sender);
	ok = ok && envelope_buf_field(&b, "client", e->client_addr);
	ok = ok && envelope_buf_field(&b, "helo", e->helo);
	ok = ok && envelope_buf_field(&b, "body",
	    e->body == SMTP_BODY_8BITMIME ? "8bitmime" : "7bit");
	ok = ok && envelope_buf_field(&b, "smtputf8", e->smtputf8 ? "1" : "0");
	for (size_t i = 0; ok && i < e->nrcpts; i++) {
		const char *a = e->rcpts[i].addr;

		/* An empty recipient could not be read back (the decoder requires one). */
		ok = a != NULL && a[0] != '\0' && envelope_buf_field(&b, "rcpt", a);
	}
	if (ok && e->prepend != NULL && e->prepend[0] != '\0') {
		/* Header lines with CR LF: base64 keeps them on one record line. */
		char *b64 = dr_base64(e->prepend, strlen(e->prepend));

		ok = envelope_buf_field(&b, "prepend", b64);
		free(b64);
	}
	if (!ok) {
		free(b.data);
		return NULL;
	}
	if (padded) {
		static const char spaces[64] = "                                "
		    "                                ";

		envelope_buf_add(&b, "pad ", 4);
		for (size_t left = pad; left > 0;) {
			size_t n = left < sizeof(spaces) ? left : sizeof(spaces);

			envelope_buf_add(&b, spaces, n);
			left -= n;
		}
		envelope_buf_add(&b, "\n", 1);
	}
	envelope_buf_add(&b, "\n", 1);
	*len = b.len;
	return b.data;
}

char *
envelope_encode_header(const struct envelope *e, size_t *len)
{
	return envelope_encode(e, false, 0, len);
}

char *
envelope_encode_header_padded(const struct envelope *e, size_t pad, size_t *len)
{
	return envelope_encode(e, true, pad, len);
}

/* Decodes a base64 prepend value; NULL when it is not base64 or holds a NUL. */
static char *
envelope_decode_prepend(const char *val, size_t vlen)
{
	char *out;
	int n;

	if (vlen == 0 || vlen % 4 != 0 || vlen > INT_MAX)
		return NULL;
	out = xmalloc(vlen / 4 * 3 + 1);
	if ((n = EVP_DecodeBlock((unsigned char *)out, (const unsigned char *)val,
	    (int)vlen)) < 0) {
		free(out);
		return NULL;
	}
	/* EVP_DecodeBlock counts the bytes the '=' padding stands for. */
	for (size_t i = vlen; i > 0 && val[i - 1] == '=' && n > 0; i--)
		n--;
	out[n] = '\0';
	if (memchr(out, '\0', (size_t)n) != NULL) {
		free(out);
		return NULL;
	}
	return out;
}

/*
 * Strict unsigned decimal: digits only, no sign, no leading zeros beyond "0", no
 * overflow past max. Returns false on anything else.
 */
static bool
envelope_parse_uint(const char *s, size_t n, uint64_t max, uint64_t *out)
{
	uint64_t v = 0;

	if (n == 0 || n > 20 || (n > 1 && s[0] == '0'))
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned d;

		if (s[i] < '0' || s[i] > '9')
			return false;
		d = (unsigned)(s[i] - '0');
		if (v > (max - d) / 10)
			return false;
		v = v * 10 + d;
	}
	*out = v;
	return true;
}

static bool
envelope_parse_time(const char *s, size_t n, time_t *out)
{
	uint64_t v;

	/* time_t is a signed 64-bit integer on every platform we build for. */
	if (!envelope_parse_uint(s, n, INT64_MAX, &v))
		return false;
	*out = (time_t)v;
	return true;
}

/* Which required keys have been seen, to reject duplicates and missing ones. */
enum {
	SEEN_ID = 1 << 0,
	SEEN_ARRIVAL = 1 << 1,
	SEEN_SENDER = 1 << 2,
	SEEN_CLIENT = 1 << 3,
	SEEN_HELO = 1 << 4,
	SEEN_BODY = 1 << 5,
	SEEN_SMTPUTF8 = 1 << 6,
};

static bool
envelope_key_is(const char *key, size_t klen, const char *name)
{
	return klen == strlen(name) && memcmp(key, name, klen) == 0;
}

/* Claims a once-only key; false on a duplicate. */
static bool
envelope_seen(unsigned *seen, unsigned bit)
{
	if (*seen & bit)
		return false;
	*seen |= bit;
	return true;
}

/* Applies one "key value" header line to e. Returns NULL or the reason it is bad. */
static const char *
envelope_header_line(struct envelope *e, unsigned *seen, const char *key, size_t klen,
    const char *val, size_t vlen)
{
	if (envelope_key_is(key, klen, "id")) {
		if (!envelope_seen(seen, SEEN_ID))
			return "duplicate id";
		if (vlen != ENVELOPE_ID_LEN)
			return "bad id";
		memcpy(e->id, val, vlen);
		e->id[vlen] = '\0';
		if (!envelope_id_valid(e->id))
			return "bad id";
	} else if (envelope_key_is(key, klen, "arrival")) {
		if (!envelope_seen(seen, SEEN_ARRIVAL))
			return "duplicate arrival";
		if (!envelope_parse_time(val, vlen, &e->arrival))
			return "bad arrival";
	} else if (envelope_key_is(key, klen, "sender")) {
		if (!envelope_seen(seen, SEEN_SENDER))
			return "duplicate sender";
		e->sender = xstrndup(val, vlen);
	} else if (envelope_key_is(key, klen, "client")) {
		if (!envelope_seen(seen, SEEN_CLIENT))
			return "duplicate client";
		e->client_addr = xstrndup(val, vlen);
	} else if (envelope_key_is(key, klen, "helo")) {
		if (!envelope_seen(seen, SEEN_HELO))
			return "duplicate helo";
		e->helo = xstrndup(val, vlen);
	} else if (envelope_key_is(key, klen, "body")) {
		if (!envelope_seen(seen, SEEN_BODY))
			return "duplicate body";
		if (envelope_key_is(val, vlen, "7bit"))
			e->body = SMTP_BODY_7BIT;
		else if (envelope_key_is(val, vlen, "8bitmime"))
			e->body = SMTP_BODY_8BITMIME;
		else
			return "bad body";
	} else if (envelope_key_is(key, klen, "smtputf8")) {
		if (!envelope_seen(seen, SEEN_SMTPUTF8))
			return "duplicate smtputf8";
		if (vlen != 1 || (val[0] != '0' && val[0] != '1'))
			return "bad smtputf8";
		e->smtputf8 = val[0] == '1';
	} else if (envelope_key_is(key, klen, "rcpt")) {
		char *addr;

		if (vlen == 0)
			return "empty rcpt";
		addr = xstrndup(val, vlen);
		envelope_add_rcpt(e, addr);
		free(addr);
	} else if (envelope_key_is(key, klen, "prepend")) {
		if (e->prepend != NULL)
			return "duplicate prepend";
		if ((e->prepend = envelope_decode_prepend(val, vlen)) == NULL)
			return "bad prepend";
	}
	/*
	 * "pad" (room reserved for a prepend, spool.c) and unknown keys (written by a
	 * newer version) are ignored.
	 */
	return NULL;
}

static bool
envelope_key_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

struct envelope *
envelope_decode_header(const char *buf, size_t len, size_t *header_len, const char **why)
{
	const char *p = buf, *end = buf + len, *nl;
	const char *bad = NULL, *dummy;
	struct envelope *e;
	unsigned seen = 0;
	size_t mlen = strlen(ENVELOPE_MAGIC);

	if (why == NULL)
		why = &dummy;
	if (len < mlen + 1)
		*why = len == 0 || memcmp(buf, ENVELOPE_MAGIC "\n", len) == 0 ? "truncated" :
		    "bad magic";
	else if (memcmp(buf, ENVELOPE_MAGIC "\n", mlen + 1) != 0)
		*why = "bad magic";
	else
		goto parse;
	return NULL;

parse:
	e = envelope_new();
	p += mlen + 1;
	for (;;) {
		const char *key, *val, *sp;
		size_t klen, vlen;

		if (p >= end) {
			bad = "truncated";
			break;
		}
		nl = memchr(p, '\n', (size_t)(end - p));
		if (nl == NULL) {
			bad = "truncated";
			break;
		}
		if (nl == p) {          /* the empty line: end of the header */
			p = nl + 1;
			break;
		}
		if (memchr(p, '\0', (size_t)(nl - p)) != NULL || memchr(p, '\r', (size_t)(nl - p))) {
			bad = "control character in header";
			break;
		}
		key = p;
		sp = memchr(p, ' ', (size_t)(nl - p));
		klen = (size_t)((sp != NULL ? sp : nl) - key);
		val = sp != NULL ? sp + 1 : nl;
		vlen = (size_t)(nl - val);
		for (size_t i = 0; i < klen; i++) {
			if (!envelope_key_char(key[i]))
				bad = "bad key";
		}
		if (klen == 0)
			bad = "bad key";
		if (bad == NULL)
			bad = envelope_header_line(e, &seen, key, klen, val, vlen);
		if (bad != NULL)
			break;
		p = nl + 1;
	}

	if (bad == NULL) {
		if (!(seen & SEEN_ID))
			bad = "missing id";
		else if (!(seen & SEEN_ARRIVAL))
			bad = "missing arrival";
		else if (!(seen & SEEN_SENDER))
			bad = "missing sender";
		else if (e->nrcpts == 0)
			bad = "no recipients";
	}
	if (bad != NULL) {
		envelope_free(e);
		*why = bad;
		return NULL;
	}
	/* Optional text fields are never NULL after decoding. */
	if (e->client_addr == NULL)
		e->client_addr = xstrdup("");
	if (e->helo == NULL)
		e->helo = xstrdup("");
	if (header_len != NULL)
		*header_len = (size_t)(p - buf);
	*why = NULL;
	return e;
}

/* ---- state records ---- */

static const char envelope_state_letters[] = { 'P', 'D', 'S', 'B' };

/*
 * Copies a remote reply into a record-safe reason: controls (CR, LF, TAB, DEL...) become
 * spaces so a reply can never forge a record, and the result is cut to
 * ENVELOPE_REASON_MAX bytes without splitting a UTF-8 sequence.
 */
static size_t
envelope_sanitize_reason(const char *in, size_t inlen, char *out)
{
	size_t n = inlen < ENVELOPE_REASON_MAX ? inlen : ENVELOPE_REASON_MAX;

	if (n < inlen) {
		/* Back off over continuation bytes to the start of the cut character. */
		size_t k = n;

		while (k > 0 && ((unsigned char)in[k] & 0xC0) == 0x80)
			k--;
		if (n - k < 4)
			n = k;
	}
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)in[i];

		out[i] = (c < 0x20 || c == 0x7F) ? ' ' : (char)c;
	}
	out[n] = '\0';
	return n;
}

/* An enhanced status code (RFC 3463): class "." subject "." detail, 2/4/5 and 1-3 digits. */
static bool
envelope_dsn_valid(const char *s, size_t n)
{
	size_t i = 0, digits;

	if (n < 5 || (s[0] != '2' && s[0] != '4' && s[0] != '5') || s[1] != '.')
		return false;
	i = 2;
	for (int part = 0; part < 2; part++) {
		for (digits = 0; i < n && s[i] >= '0' && s[i] <= '9'; i++)
			digits++;
		if (digits < 1 || digits > 3)
			return false;
		if (part == 0) {
			if (i >= n || s[i] != '.')
				return false;
			i++;
		}
	}
	return i == n;
}

size_t
envelope_encode_state(const struct envelope *e, size_t i, char *buf, size_t size)
{
	const struct envelope_rcpt *r;
	char reason[ENVELOPE_REASON_MAX + 1];
	const char *dsn;
	int n;

	if (i >= e->nrcpts || (unsigned)e->rcpts[i].state >= sizeof(envelope_state_letters))
		return 0;
	r = &e->rcpts[i];
	dsn = envelope_dsn_valid(r->dsn, strlen(r->dsn)) ? r->dsn : "-";
	if (r->reason != NULL)
		envelope_sanitize_reason(r->reason, strlen(r->reason), reason);
	else
		reason[0] = '\0';
	n = snprintf(buf, size, "R %zu %c %u %lld %s %s\n", i, envelope_state_letters[r->state],
	    r->attempts, (long long)(r->next_attempt < 0 ? 0 : r->next_attempt), dsn, reason);
	if (n < 0 || (size_t)n >= size)
		return 0;
	return (size_t)n;
}

size_t
envelope_encode_notified(const struct envelope *e, const size_t *idx, size_t n, char *buf,
    size_t size)
{
	size_t len = 0;

	for (size_t k = 0; k < n; k++) {
		int w;

		if (idx[k] >= e->nrcpts)
			return 0;
		w = snprintf(buf + len, size - len, "N %zu\n", idx[k]);
		if (w < 0 || (size_t)w >= size - len)
			return 0;
		len += (size_t)w;
	}
	return len;
}

/* Cuts the next space-separated field off [*p, end). */
static bool
envelope_field(const char **p, const char *end, const char **f, size_t *flen)
{
	const char *sp = memchr(*p, ' ', (size_t)(end - *p));

	if (sp == NULL)
		return false;
	*f = *p;
	*flen = (size_t)(sp - *p);
	*p = sp + 1;
	return *flen > 0;
}

/* Parses and applies one record (without its newline). False when malformed. */
static bool
envelope_apply_record(struct envelope *e, const char *p, const char *end)
{
	const char *f, *st, *dsn;
	size_t flen, dlen, slen;
	uint64_t idx, attempts;
	time_t next;
	struct envelope_rcpt *r;
	int state = -1;
	char reason[ENVELOPE_REASON_MAX + 1];

	/* "H 1" / "H 0": the operator held or released the whole message. */
	if (end - p == 3 && p[0] == 'H' && p[1] == ' ' && (p[2] == '0' || p[2] == '1')) {
		e->held = p[2] == '1';
		return true;
	}
	/* "W": the delay warning went out. */
	if (end - p == 1 && p[0] == 'W') {
		e->delay_warned = true;
		return true;
	}
	/* "N <index>": the DSN for that recipient's failure is queued. */
	if (end - p > 2 && p[0] == 'N' && p[1] == ' ') {
		if (!envelope_parse_uint(p + 2, (size_t)(end - p - 2), SIZE_MAX, &idx) ||
		    idx >= e->nrcpts)
			return false;
		e->rcpts[idx].notified = true;
		return true;
	}
	if (end - p < 2 || p[0] != 'R' || p[1] != ' ')
		return false;
	p += 2;
	if (!envelope_field(&p, end, &f, &flen) || !envelope_parse_uint(f, flen, SIZE_MAX, &idx))
		return false;
	if (!envelope_field(&p, end, &st, &slen) || slen != 1)
		return false;
	for (size_t k = 0; k < sizeof(envelope_state_letters); k++) {
		if (st[0] == envelope_state_letters[k])
			state = (int)k;
	}
	if (state < 0)
		return false;
	if (!envelope_field(&p, end, &f, &flen) ||
	    !envelope_parse_uint(f, flen, UINT_MAX, &attempts))
		return false;
	if (!envelope_field(&p, end, &f, &flen) || !envelope_parse_time(f, flen, &next))
		return false;
	/*
	 * The dsn must be followed by the separator space: a record cut right after it
	 * (and later completed by a newline) is not mistaken for a whole one.
	 */
	if (!envelope_field(&p, end, &dsn, &dlen))
		return false;
	if (!(dlen == 1 && dsn[0] == '-') && !envelope_dsn_valid(dsn, dlen))
		return false;
	if (memchr(p, '\0', (size_t)(end - p)) != NULL)
		return false;
	if (idx >= e->nrcpts)
		return false;

	r = &e->rcpts[idx];
	r->state = (enum rcpt_state)state;
	r->attempts = (unsigned)attempts;
	r->next_attempt = next;
	if (dsn[0] == '-')
		r->dsn[0] = '\0';
	else {
		memcpy(r->dsn, dsn, dlen);
		r->dsn[dlen] = '\0';
	}
	free(r->reason);
	r->reason = NULL;
	if (end > p) {
		envelope_sanitize_reason(p, (size_t)(end - p), reason);
		r->reason = xstrdup(reason);
	}
	return true;
}

void
envelope_apply_states(struct envelope *e, const char *buf, size_t len, size_t *bad)
{
	const char *p = buf, *end = buf + len, *nl;
	size_t nbad = 0;

	while (p < end && (nl = memchr(p, '\n', (size_t)(end - p))) != NULL) {
		if (nl > p && !envelope_apply_record(e, p, nl))
			nbad++;
		p = nl + 1;
	}
	/* Whatever follows the last newline is a record cut by a crash: ignored. */
	if (bad != NULL)
		*bad = nbad;
}
