/*
 * envelope: a queued message's envelope (sender, recipients with their delivery state,
 * arrival data) and its on-disk records. Pure encode/decode, no I/O; spool.c does the
 * files. Two record kinds:
 *
 *   - the header at the start of a message file, written once before the content:
 *       "DRSPOOL 1\n" then "key value\n" lines, then an empty line; the content (as
 *       received, unstuffed, CR LF line ends, our Received: header first) follows.
 *   - state records, appended to the message's state file after each attempt:
 *       "R <index> <state> <attempts> <next_attempt> <dsn> <reason>\n"
 *     and message-level records "H 1\n" / "H 0\n" (held / released by the operator).
 *     The last record for a recipient wins. "N <index>\n" says that the delivery status
 *     notification for recipient index's failure is queued (durably, as a message of its
 *     own): it is written only after that commit, so a bounced recipient without it
 *     still owes the sender a DSN, which recovery composes again (a crash in between
 *     gives at most a duplicate DSN, never none). "W\n" says the message's delay
 *     warning was queued. State files from before these records load as they did: their
 *     bounced recipients count as not notified. A trailing partial record (crash
 *     mid-write) carries no newline and is ignored, so the recipient stays in its
 *     previous state and is tried again: at-least-once, never lost.
 */
#ifndef DR_ENVELOPE_H
#define DR_ENVELOPE_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "smtp_proto.h"

#define ENVELOPE_ID_MAX 24      /* queue id buffer size (ids are 16 characters) */
#define ENVELOPE_REASON_MAX 512 /* longest reason kept in a state record */

enum rcpt_state {
	RCPT_PENDING = 0,  /* never tried, or interrupted: try as soon as possible */
	RCPT_DEFERRED,     /* temporary failure; retry at next_attempt */
	RCPT_DELIVERED,    /* 2xx from the next hop: done */
	RCPT_BOUNCED,      /* permanent failure (or expired): done, DSN owed to the sender */
};

struct envelope_rcpt {
	char *addr;          /* owned */
	enum rcpt_state state;
	unsigned attempts;
	time_t next_attempt; /* for RCPT_DEFERRED */
	char dsn[16];        /* last status, "4.4.1"; "" when never tried */
	char *reason;        /* last outcome text, owned, may be NULL */
	bool notified;       /* RCPT_BOUNCED: its DSN is queued ("N" record); false means
	                        one is still owed (unless the sender is <>) */
};

struct envelope {
	char id[ENVELOPE_ID_MAX];
	time_t arrival;
	char *sender;        /* owned; "" for the null sender */
	char *client_addr;   /* owned; the submitting client's IP, text */
	char *helo;          /* owned; the client's HELO/EHLO argument */
	enum smtp_body body;
	bool smtputf8;
	struct envelope_rcpt *rcpts; /* owned array */
	size_t nrcpts;
	size_t rcpts_cap;
	/*
	 * Header fields sent before the content (each with its CR LF), NULL when none: the
	 * DKIM-Signature fields, known only once the whole message was read, and so kept
	 * out of the content. Owned. In the header record as "prepend BASE64".
	 */
	char *prepend;
	size_t content_size; /* bytes sent as the message: prepend and content (set by the
	                        spool), 0 when unknown */
	bool held;           /* on hold by the operator: not delivered until released */
	bool delay_warned;   /* the delay warning to the sender is queued ("W" record) */
};

struct envelope *envelope_new(void);
void envelope_free(struct envelope *e);
void envelope_add_rcpt(struct envelope *e, const char *addr);
/* True when no recipient is PENDING or DEFERRED. */
bool envelope_done(const struct envelope *e);

/* A fresh, practically unique queue id: 16 upper-case hex characters (time and randomness). */
void envelope_new_id(char id[ENVELOPE_ID_MAX]);
bool envelope_id_valid(const char *id);

/* "pending", "deferred", "sent", "bounced": the words of the status= log field. */
const char *rcpt_state_name(enum rcpt_state s);

/* Header record: returns a malloc'd buffer and its length via *len. */
char *envelope_encode_header(const struct envelope *e, size_t *len);
/*
 * The same with a last line "pad" followed by pad spaces (decoders ignore it): the spool
 * reserves room this way and later rewrites the record in place, at the same length,
 * with prepend set and less padding.
 */
char *envelope_encode_header_padded(const struct envelope *e, size_t pad, size_t *len);
/*
 * Parses a header at the start of buf. On success returns a new envelope (recipients
 * PENDING) and sets *header_len to the number of bytes before the content. Returns NULL
 * with *why set on a malformed or truncated header.
 */
struct envelope *envelope_decode_header(const char *buf, size_t len, size_t *header_len,
    const char **why);

/*
 * One state record for recipient index i, as it is now in e; the reason is sanitised
 * (controls become spaces) and cut to ENVELOPE_REASON_MAX. Returns its length, or 0 when
 * i is out of range or size is too small (1024 always suffices).
 */
size_t envelope_encode_state(const struct envelope *e, size_t i, char *buf, size_t size);
/*
 * The "N" records for recipients idx[0..n-1] (their DSN is queued), one per line, into
 * buf. Returns the length, or 0 when an index is out of range or size is too small
 * (32 bytes per recipient always suffice).
 */
size_t envelope_encode_notified(const struct envelope *e, const size_t *idx, size_t n,
    char *buf, size_t size);

/*
 * Applies every complete state record in buf to e, in order. Records naming an unknown
 * recipient index or malformed are skipped and counted in *bad (may be NULL).
 */
void envelope_apply_states(struct envelope *e, const char *buf, size_t len, size_t *bad);

#endif
