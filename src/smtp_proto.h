/*
 * smtp_proto: the SMTP protocol as text, with no I/O (RFC 5321, RFC 1870 SIZE,
 * RFC 6152 8BITMIME, RFC 6531 SMTPUTF8, RFC 2034 enhanced codes). Command parsing for
 * the server, reply parsing (multi-line) and EHLO keyword parsing for the client,
 * mailbox syntax, and DATA transparency both ways (dot-unstuffing with strict CR LF
 * handling on input, dot-stuffing on output). Everything here is unit-tested directly.
 */
#ifndef DR_SMTP_PROTO_H
#define DR_SMTP_PROTO_H

#include <stdbool.h>
#include <stddef.h>

/* RFC 5321 4.5.3.1: 512 octets per command line; we allow more for ESMTP parameters. */
#define SMTP_COMMAND_LINE_MAX 2048
#define SMTP_REPLY_LINE_MAX 4096  /* longer reply lines are a protocol error */
#define SMTP_PATH_MAX 256         /* RFC 5321 4.5.3.1.3: 256 octets for a path */
#define SMTP_LOCAL_PART_MAX 64
#define SMTP_DOMAIN_MAX 255
#define SMTP_REPLY_MAX_LINES 100  /* a reply with more lines is a protocol error */

enum smtp_verb {
	SMTP_VERB_UNKNOWN = 0,
	SMTP_VERB_HELO, SMTP_VERB_EHLO, SMTP_VERB_MAIL, SMTP_VERB_RCPT, SMTP_VERB_DATA,
	SMTP_VERB_RSET, SMTP_VERB_NOOP, SMTP_VERB_QUIT, SMTP_VERB_HELP, SMTP_VERB_VRFY,
	SMTP_VERB_EXPN, SMTP_VERB_STARTTLS, SMTP_VERB_AUTH, SMTP_VERB_BDAT,
};

struct smtp_command {
	enum smtp_verb verb;
	const char *args;  /* after the verb and one space, in the caller's buffer; "" if none */
};

/*
 * Parses one command line (without CR LF; line must be NUL-terminated). Verbs are
 * case-insensitive; an unrecognised verb gives SMTP_VERB_UNKNOWN and 0. Returns -1 for an
 * empty line or a line containing control characters (TAB, CR, LF, DEL included). A NUL
 * inside the line as read cannot be seen here: the reader must refuse a line whose
 * strlen() differs from its length.
 */
int smtp_parse_command(const char *line, struct smtp_command *out);
const char *smtp_verb_name(enum smtp_verb v);

/* Parameters of MAIL FROM (RFC 1870, 6152, 6531). */
enum smtp_body { SMTP_BODY_7BIT = 0, SMTP_BODY_8BITMIME };

struct smtp_mail_params {
	unsigned long long size;  /* SIZE=, 0 when absent */
	enum smtp_body body;
	bool smtputf8;
};

/*
 * Parses the argument of MAIL ("FROM:<a@b> SIZE=10 BODY=8BITMIME") or RCPT
 * ("TO:<a@b>"); prefix is "FROM:" or "TO:". Accepts the path with or without a space
 * after the colon, rejects source routes ("<@a,@b:x@y>") and anything not a valid
 * mailbox. The mailbox is copied to addr (without brackets; "" for the null path,
 * which only MAIL allows). *params points after the path (leading spaces skipped).
 * smtputf8 allows UTF-8 in the mailbox (MAIL's SMTPUTF8 parameter follows the path:
 * parse with smtputf8 true, then recheck with smtp_mailbox_valid once the parameters are
 * known). On error returns -1 and sets *why (when not NULL) to a short reason for a 501
 * reply ("Syntax: MAIL FROM:<address>", "bad address syntax", ...); addr is then "".
 */
int smtp_parse_path(const char *args, const char *prefix, bool allow_null, bool smtputf8,
    char *addr, size_t addrsize, const char **params, const char **why);

/*
 * Parses MAIL parameters. Unknown keywords fail (555 5.5.4 in RFC 5321 terms).
 * Returns 0, or -1 with *why set.
 */
int smtp_parse_mail_params(const char *params, struct smtp_mail_params *out, const char **why);

/* True for "local@domain" with RFC 5321 syntax (dot-atom or quoted local part). */
bool smtp_mailbox_valid(const char *addr, bool smtputf8);
/* Pointer to the domain part after the last '@' (the address itself if none). */
const char *smtp_mailbox_domain(const char *addr);

/*
 * AUTH (RFC 4954) on the server side: PLAIN (RFC 4616) and LOGIN.
 */
enum smtp_auth_mech { SMTP_AUTH_UNKNOWN = 0, SMTP_AUTH_PLAIN, SMTP_AUTH_LOGIN };

/*
 * Parses AUTH's argument: "MECHANISM [initial-response]". *mech is SMTP_AUTH_UNKNOWN
 * for a mechanism we do not offer; *initial points at the initial response in args, or
 * is NULL when there is none. Returns -1 for an empty argument or extra words.
 */
int smtp_parse_auth(const char *args, enum smtp_auth_mech *mech, const char **initial);
/*
 * Strict base64 (RFC 4648 alphabet, padding required, no white space, canonical final
 * bits). "=" alone decodes to nothing (RFC 4954 4, an empty response). Returns 0 with
 * *outlen set, or -1 for bad input or when the result does not fit in outsize bytes.
 */
int smtp_base64_decode(const char *in, unsigned char *out, size_t outsize, size_t *outlen);
/*
 * Decodes a PLAIN response (base64 of "[authzid] NUL authcid NUL passwd") into user and
 * pass (NUL-terminated; both non-empty). Returns 0; -1 when it cannot be decoded or is
 * malformed; -2 when the authorization identity is neither empty nor the user (we do
 * not let one user act for another). *why is set on error. Buffers holding the
 * password are wiped before returning; user and pass are wiped on error.
 */
int smtp_auth_plain_decode(const char *b64, char *user, size_t usize, char *pass,
    size_t psize, const char **why);
/* Decodes one LOGIN response (user name or password): non-empty, no NUL; 0 or -1. */
int smtp_auth_login_decode(const char *b64, char *out, size_t size);

/*
 * For an accepted forward-path, the trick by which some mail software would relay it on
 * to another host from its local part, or NULL: "source route" ("@a,@b:u@c"),
 * "quoted local part with @" ("\"u@c\"@b"), "percent hack" ("u%c@b"), "bang path"
 * ("c!u@b"). Used to refuse them, with a precise log line, from clients that may not
 * relay.
 */
const char *smtp_relay_trick(const char *addr);

/*
 * True when RCPT's argument is "TO:<Postmaster>" (any case, the path with or without a
 * space after the colon, as smtp_parse_path allows): the one address without a domain
 * that RFC 5321 4.5.1 says every relay MUST accept. *params points after the path
 * (leading spaces skipped). smtp_parse_path refuses it (no domain): call this when it
 * failed.
 */
bool smtp_rcpt_is_postmaster(const char *args, const char **params);

/*
 * Replies. A reply is one or more lines "NNN-text" ... "NNN text" with the same code.
 * Feed lines (without CR LF) one at a time.
 */
struct smtp_reply {
	int code;           /* 200..599 */
	char enhanced[16];  /* "5.7.1" from the first line when present (RFC 2034), else "" */
	char *text;         /* all lines' text after code (and enhanced code of the first
	                       line, and of later lines when it repeats it), joined with
	                       "\n"; owned, freed by smtp_reply_clear */
	int nlines;
	bool complete;
};

void smtp_reply_init(struct smtp_reply *r);
void smtp_reply_clear(struct smtp_reply *r);
/*
 * Returns 1 when the reply is complete, 0 when more lines are expected, -1 on a malformed
 * line (bad code, code differing from the first line's, NUL/CR/LF inside, longer than
 * SMTP_REPLY_LINE_MAX, more than SMTP_REPLY_MAX_LINES lines, or a line after completion).
 * "NNN" alone is a valid last line. smtp_reply_clear makes the struct reusable.
 */
int smtp_reply_feed(struct smtp_reply *r, const char *line, size_t len);
/* The reply as one line for logs: "550 5.1.1 <a@b>: Recipient address rejected" (lines
 * joined with " ", other control characters shown as '?'). The caller frees it. */
char *smtp_reply_oneline(const struct smtp_reply *r);

/* EHLO keywords (RFC 5321 4.1.1.1), from the reply text lines after the first. */
enum {
	SMTP_EXT_PIPELINING = 1 << 0,
	SMTP_EXT_SIZE = 1 << 1,
	SMTP_EXT_8BITMIME = 1 << 2,
	SMTP_EXT_STARTTLS = 1 << 3,
	SMTP_EXT_AUTH = 1 << 4,
	SMTP_EXT_SMTPUTF8 = 1 << 5,
	SMTP_EXT_ENHANCEDSTATUSCODES = 1 << 6,
	SMTP_EXT_DSN = 1 << 7,
	SMTP_EXT_CHUNKING = 1 << 8,
};

struct smtp_ehlo_info {
	unsigned ext;                 /* SMTP_EXT_* bits */
	unsigned long long max_size;  /* SIZE argument, 0 if none/unlimited */
	char auth_mechs[128];         /* AUTH argument, space separated, upper case */
};

void smtp_ehlo_parse(const struct smtp_reply *r, struct smtp_ehlo_info *out);

/*
 * Enhanced status code derived from a reply: its own when present and of the same class
 * as the code, otherwise default_detail completed with the class ("4" + ".0.0" etc.).
 * default_detail may be ".1.1", "1.1" or a whole code ("5.1.1", whose class is replaced);
 * NULL or "" means ".0.0". A code outside 2xx/4xx/5xx counts as class 4 (transient).
 * Writes "X.Y.Z" into buf (>= 16).
 */
void smtp_reply_dsn(const struct smtp_reply *r, const char *default_detail, char *buf, size_t size);

/*
 * DATA input (server side). Decodes the transparent byte stream that follows a 354 reply:
 * removes one leading dot from lines starting with a dot, detects the end of data, which is
 * only CR LF "." CR LF (the CR LF before the dot belongs to the content). A bare LF or a
 * bare CR anywhere in the data is an error (SMTP smuggling defence, RFC 5321 2.3.8): it is
 * reported as SMTP_DATA_BARE_EOL and decoding stops. The first line counts as if preceded
 * by CR LF, so "." CR LF right after 354 is an empty message.
 */
enum smtp_data_status {
	SMTP_DATA_MORE = 0,     /* all input consumed, end not seen yet */
	SMTP_DATA_END,          /* end of data seen; *consumed stops right after it */
	SMTP_DATA_BARE_EOL,     /* bare CR or LF seen; the message must be refused */
};

struct smtp_data_decoder {
	int state;              /* private */
	size_t line_len;        /* length of the current line so far */
	size_t max_line_len;    /* longest content line seen (without CR LF) */
};

void smtp_data_decoder_init(struct smtp_data_decoder *d);
/*
 * Decodes in[0..inlen). Writes content to out (room for inlen bytes suffices), sets
 * *outlen and *consumed. The state (a CR or a line-initial "." at the end of a chunk)
 * carries over to the next call, so chunk boundaries never matter. A content CR is
 * written as soon as it is read; if no LF follows, the call reports SMTP_DATA_BARE_EOL
 * and the whole message is to be discarded. After END or BARE_EOL, further calls
 * return the same status and consume nothing.
 */
enum smtp_data_status smtp_data_decode(struct smtp_data_decoder *d, const char *in, size_t inlen,
    char *out, size_t *outlen, size_t *consumed);

/*
 * DATA output (client side): dot-stuffs content whose lines end in CR LF. out needs room
 * for 2 * inlen bytes. Call smtp_dot_encoder_finish at the end to get the terminating
 * sequence ("." CR LF, preceded by CR LF when the content did not end with one).
 */
struct smtp_dot_encoder {
	int state;              /* private: at start of line, after CR, in line */
};

void smtp_dot_encoder_init(struct smtp_dot_encoder *e);
size_t smtp_dot_encode(struct smtp_dot_encoder *e, const char *in, size_t inlen, char *out);
/* Writes the end-of-data sequence into out (>= 6 bytes), returns its length, and resets
 * the encoder for another message. */
size_t smtp_dot_encoder_finish(struct smtp_dot_encoder *e, char *out);

#endif
