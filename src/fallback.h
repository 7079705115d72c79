/*
 * fallback: deciding whether an SMTP rejection blames the address family we connected
 * over rather than the message, so that the same recipients can be retried at once over
 * the other family (SMTP-level family fallback). Pure: no I/O.
 *
 * Receivers reject IPv6 clients without (forward-confirmed) reverse DNS while accepting
 * the same mail over IPv4; their replies say so in words that vary by vendor. We match
 * known wordings (case-insensitive substrings), the operator's extra patterns, and the
 * enhanced status codes that mean exactly this (RFC 7372's 5.7.25 "reverse DNS
 * validation failed"; 4.7.23 and 5.7.510, used by large providers).
 */
#ifndef DR_FALLBACK_H
#define DR_FALLBACK_H

#include <stdbool.h>
#include <stddef.h>

#include "smtp_client.h"
#include "smtp_proto.h"

/*
 * True when reply (answering the command of the given stage) blames the client
 * address. A 421 during the greeting counts too: receivers that drop IPv6 clients
 * without PTR do it that way. extra: operator patterns (may be NULL).
 */
bool fallback_reply_blames_family(const struct smtp_reply *reply, enum smtp_client_stage stage,
    char *const *extra, size_t nextra);

#endif
