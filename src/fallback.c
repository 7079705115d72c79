/*
 * fallback: matching rejections that blame our address family (see fallback.h). The
 * built-in wordings come from real receivers' replies; they are deliberately specific
 * (a 550 "user unknown" must never trigger a second delivery over the other family).
 */
#include "config.h"

#include <string.h>

#include "fallback.h"

static const char *const fallback_patterns[] = {
	"does not meet ipv6 sending guidelines",       /* Gmail, 550 5.7.1 */
	"does not have a ptr record",                  /* 550 5.7.25 */
	"ptr record's forward dns entry",              /* "...doesn't match" */
	"cannot find your reverse hostname",           /* Postfix reject_unknown_reverse_client_hostname */
	"cannot find your hostname",                   /* Postfix reject_unknown_client_hostname */
	"must have a reverse dns record",
	"does not accept email over ipv6",             /* 5.7.510 */
	"reverse dns for this ip failed",
	"no dns ptr record",
	"no rdns",
	"reverse dns lookup failed",
	"no ptr record",
};

static const char *const fallback_codes[] = { "5.7.25", "4.7.25", "4.7.23", "5.7.510" };

static bool
contains_nocase(const char *hay, const char *needle)
{
	return strcasestr(hay, needle) != NULL;
}

bool
fallback_reply_blames_family(const struct smtp_reply *reply, enum smtp_client_stage stage,
    char *const *extra, size_t nextra)
{
	if (reply == NULL || reply->code < 400 || reply->code > 599)
		return false;
	if (stage == SMTP_STAGE_GREETING && reply->code == 421)
		return true;
	for (size_t i = 0; i < sizeof(fallback_codes) / sizeof(fallback_codes[0]); i++)
		if (strcmp(reply->enhanced, fallback_codes[i]) == 0)
			return true;
	const char *text = reply->text ? reply->text : "";
	for (size_t i = 0; i < sizeof(fallback_patterns) / sizeof(fallback_patterns[0]); i++)
		if (contains_nocase(text, fallback_patterns[i]))
			return true;
	for (size_t i = 0; i < nextra; i++)
		if (extra[i] && extra[i][0] && contains_nocase(text, extra[i]))
			return true;
	return false;
}
