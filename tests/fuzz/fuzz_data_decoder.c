/*
 * fuzz_data_decoder: DATA transparency (smtp_proto). Three properties:
 *   1. smtp_data_decode gives the same status, output and consumed count whether the
 *      stream arrives whole or in chunks of any size (splits taken from the input);
 *   2. content with CR LF line ends survives smtp_dot_encode + finish + decode exactly
 *      (plus the CR LF the encoder adds when the content does not end with one);
 *   3. whatever the content, the encoded stream never decodes to an end of data before
 *      its real end (the SMTP smuggling property): the decoder either stops at the very
 *      end or refuses a bare CR/LF.
 * Input: one byte seeding the chunk sizes, then the stream.
 */
#include "config.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "smtp_proto.h"

struct decoded {
	enum smtp_data_status st;
	char *out;          /* owned */
	size_t outlen;
	size_t consumed;
};

/* Decodes in with chunk sizes drawn from a small generator seeded by seed (0: whole). */
static void
decode(const char *in, size_t inlen, unsigned seed, struct decoded *r)
{
	struct smtp_data_decoder d;
	size_t off = 0;
	unsigned x = seed * 2654435761u + 1;

	r->out = malloc(inlen + 1);
	if (r->out == NULL)
		abort();
	r->outlen = 0;
	r->consumed = 0;
	r->st = SMTP_DATA_MORE;
	smtp_data_decoder_init(&d);
	do {
		size_t n = inlen - off, outlen = 0, consumed = 0;

		if (seed != 0) {
			x = x * 1103515245u + 12345u;
			n = (x >> 16) % 9; /* 0..8: empty chunks too */
			if (n > inlen - off)
				n = inlen - off;
		}
		r->st = smtp_data_decode(&d, in + off, n, r->out + r->outlen, &outlen, &consumed);
		if (consumed > n || outlen > consumed)
			abort();
		off += consumed;
		r->outlen += outlen;
		r->consumed += consumed;
		if (r->st == SMTP_DATA_MORE && consumed != n)
			abort();
	} while (r->st == SMTP_DATA_MORE && off < inlen);
	/* After the end (or an error) the decoder stays put. */
	if (r->st != SMTP_DATA_MORE) {
		size_t outlen = 1, consumed = 1;
		if (smtp_data_decode(&d, in, inlen, r->out, &outlen, &consumed) != r->st ||
		    outlen != 0 || consumed != 0)
			abort();
	}
}

static void
check_splits(const char *in, size_t inlen, unsigned seed)
{
	struct decoded whole, split;

	decode(in, inlen, 0, &whole);
	decode(in, inlen, seed | 1, &split);
	if (whole.st != split.st || whole.consumed != split.consumed)
		abort();
	/* After a bare CR/LF the message is discarded, so only a clean outcome must agree
	 * byte for byte (both runs stop at the same offending byte anyway). */
	if (whole.outlen != split.outlen || memcmp(whole.out, split.out, whole.outlen) != 0)
		abort();
	free(whole.out);
	free(split.out);
}

/* Encodes content whole, then decodes the wire form. */
static char *
encode(const char *content, size_t len, size_t *wirelen)
{
	struct smtp_dot_encoder e;
	char *wire = malloc(2 * len + 6);
	size_t n;

	if (wire == NULL)
		abort();
	smtp_dot_encoder_init(&e);
	n = smtp_dot_encode(&e, content, len, wire);
	n += smtp_dot_encoder_finish(&e, wire + n);
	*wirelen = n;
	return wire;
}

/* Property 2: content whose line ends are all CR LF (input LF become CR LF, CR dropped). */
static void
check_round_trip(const char *in, size_t inlen)
{
	char *content = malloc(2 * inlen + 3), *wire;
	size_t clen = 0, wlen;
	struct decoded r;

	if (content == NULL)
		abort();
	for (size_t i = 0; i < inlen; i++) {
		if (in[i] == '\r')
			continue;
		if (in[i] == '\n')
			content[clen++] = '\r';
		content[clen++] = in[i];
	}
	wire = encode(content, clen, &wlen);
	decode(wire, wlen, 0, &r);
	if (r.st != SMTP_DATA_END || r.consumed != wlen)
		abort();
	if (clen > 0 && (clen < 2 || memcmp(content + clen - 2, "\r\n", 2) != 0)) {
		content[clen++] = '\r';
		content[clen++] = '\n';
	}
	if (r.outlen != clen || memcmp(r.out, content, clen) != 0)
		abort();
	free(r.out);
	free(wire);
	free(content);
}

/* Property 3: arbitrary content, bare CR and LF included. */
static void
check_no_early_end(const char *in, size_t inlen)
{
	size_t wlen;
	char *wire = encode(in, inlen, &wlen);
	struct decoded r;

	decode(wire, wlen, 0, &r);
	if (r.st == SMTP_DATA_MORE || (r.st == SMTP_DATA_END && r.consumed != wlen))
		abort();
	if (r.st == SMTP_DATA_END && memchr(in, '\n', inlen) == NULL &&
	    memchr(in, '\r', inlen) == NULL && (r.outlen < inlen || memcmp(r.out, in, inlen) != 0))
		abort();
	free(r.out);
	free(wire);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *in;
	size_t inlen;
	char *copy;

	if (size == 0)
		return 0;
	/* An exact-size copy, so ASan sees a read past the end. */
	inlen = size - 1;
	copy = malloc(inlen ? inlen : 1);
	if (copy == NULL)
		abort();
	memcpy(copy, data + 1, inlen);
	in = copy;
	check_splits(in, inlen, data[0]);
	check_round_trip(in, inlen);
	check_no_early_end(in, inlen);
	free(copy);
	return 0;
}
