/*
 * fuzz_envelope: the spool records (envelope). The input is a message file's header
 * followed by what a state file could hold: envelope_decode_header parses the start, and
 * whatever follows the header is applied with envelope_apply_states (a spool whose files
 * were damaged looks like this). A decoded envelope must survive its own encoders: the
 * header re-encodes and decodes to the same fields, and each recipient's state record
 * applied to that copy gives the same state.
 */
#include "config.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "envelope.h"
#include "fuzz.h"

static bool
str_eq(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	return strcmp(a, b) == 0;
}

static void
check_same_header(const struct envelope *a, const struct envelope *b)
{
	if (strcmp(a->id, b->id) != 0 || a->arrival != b->arrival ||
	    !str_eq(a->sender, b->sender) || a->body != b->body ||
	    a->smtputf8 != b->smtputf8 || a->nrcpts != b->nrcpts)
		abort();
	/* client and helo are optional in the file; an absent one is written back as "". */
	if (!str_eq(a->client_addr ? a->client_addr : "", b->client_addr ? b->client_addr : "") ||
	    !str_eq(a->helo ? a->helo : "", b->helo ? b->helo : ""))
		abort();
	for (size_t i = 0; i < a->nrcpts; i++)
		if (!str_eq(a->rcpts[i].addr, b->rcpts[i].addr))
			abort();
}

/* Re-encodes e's header and each recipient's state; the copy must read back the same. */
static void
check_round_trip(const struct envelope *e)
{
	struct envelope *copy;
	size_t len, hlen, bad;
	const char *why;
	char *hdr;

	hdr = envelope_encode_header(e, &len);
	if (hdr == NULL)
		return;
	copy = envelope_decode_header(hdr, len, &hlen, &why);
	if (copy == NULL || hlen != len)
		abort();
	check_same_header(e, copy);
	for (size_t i = 0; i < e->nrcpts; i++) {
		char rec[1024];
		size_t n = envelope_encode_state(e, i, rec, sizeof(rec));
		const struct envelope_rcpt *r = &e->rcpts[i], *c = &copy->rcpts[i];

		if (n == 0 || rec[n - 1] != '\n' || memchr(rec, '\n', n - 1) != NULL)
			abort();
		envelope_apply_states(copy, rec, n, &bad);
		if (bad != 0 || c->state != r->state || c->attempts != r->attempts ||
		    c->next_attempt != r->next_attempt || strcmp(c->dsn, r->dsn) != 0)
			abort();
	}
	envelope_free(copy);
	free(hdr);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* An exact-size copy (not NUL-terminated), so ASan sees a read past the end. */
	char *buf = malloc(size ? size : 1);
	struct envelope *e;
	const char *why = NULL;
	size_t hlen = 0, bad = 0;

	if (buf == NULL)
		abort();
	memcpy(buf, data, size);
	e = envelope_decode_header(buf, size, &hlen, &why);
	if (e == NULL) {
		if (why == NULL)
			abort();
		free(buf);
		return 0;
	}
	if (hlen > size || e->nrcpts == 0 || !envelope_id_valid(e->id))
		abort();
	envelope_apply_states(e, buf + hlen, size - hlen, &bad);
	for (size_t i = 0; i < e->nrcpts; i++)
		if (e->rcpts[i].reason != NULL && strlen(e->rcpts[i].reason) > ENVELOPE_REASON_MAX)
			abort();
	(void)envelope_done(e);
	check_round_trip(e);
	envelope_free(e);
	free(buf);
	return 0;
}
