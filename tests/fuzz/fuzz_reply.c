/*
 * fuzz_reply: the client's view of a server's replies (smtp_proto). The input is split
 * into lines at LF (a CR before it removed, as smtp_client does) and fed to
 * smtp_reply_feed; every complete reply goes through smtp_ehlo_parse, smtp_reply_oneline
 * and smtp_reply_dsn, with a default detail taken from the input itself.
 */
#include "config.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "smtp_proto.h"

static void
check_reply(const struct smtp_reply *r, const char *detail)
{
	struct smtp_ehlo_info info;
	char dsn[16], *line;

	memset(&info, 0, sizeof(info));
	smtp_ehlo_parse(r, &info);
	if (memchr(info.auth_mechs, '\0', sizeof(info.auth_mechs)) == NULL)
		abort();
	line = smtp_reply_oneline(r);
	/* One line for logs: no control character may survive. */
	if (line == NULL)
		abort();
	for (const char *c = line; *c != '\0'; c++)
		if ((unsigned char)*c < 0x20 || *c == 0x7f)
			abort();
	free(line);
	smtp_reply_dsn(r, detail, dsn, sizeof(dsn));
	/* Always "X.Y.Z" with a class of 2, 4 or 5. */
	if (memchr(dsn, '\0', sizeof(dsn)) == NULL || strchr("245", dsn[0]) == NULL ||
	    dsn[0] == '\0' || dsn[1] != '.')
		abort();
	smtp_reply_dsn(r, NULL, dsn, sizeof(dsn));
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *p = (const char *)data, *end = p + size;
	struct smtp_reply r;
	char detail[8];
	size_t dlen;

	/* The first line (up to 7 bytes) is the default detail for smtp_reply_dsn. */
	dlen = 0;
	while (p < end && *p != '\n' && dlen < sizeof(detail) - 1)
		detail[dlen++] = *p++;
	detail[dlen] = '\0';
	if (p < end && *p == '\n')
		p++;

	smtp_reply_init(&r);
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t len = nl != NULL ? (size_t)(nl - p) : (size_t)(end - p);
		char *line = malloc(len + 1); /* exact size: ASan sees any over-read */
		int rc;

		if (line == NULL)
			abort();
		memcpy(line, p, len);
		if (len > 0 && line[len - 1] == '\r')
			len--;
		line[len] = '\0';
		rc = smtp_reply_feed(&r, line, len);
		free(line);
		p += (nl != NULL ? (size_t)(nl - p) + 1 : (size_t)(end - p));
		if (rc == 1) {
			if (!r.complete || r.code < 200 || r.code > 599)
				abort();
			check_reply(&r, detail);
			smtp_reply_clear(&r);
		} else if (rc < 0) {
			smtp_reply_clear(&r);
		}
	}
	/* An incomplete reply can still be logged (connection lost mid-reply). */
	if (r.nlines > 0) {
		char *line = smtp_reply_oneline(&r);
		free(line);
	}
	smtp_reply_clear(&r);
	return 0;
}
