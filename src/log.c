/*
 * log: formats and emits log lines to stderr or syslog (see log.h for the contract).
 * Stderr lines carry a timestamp and the level; syslog lines get both from syslog.
 */
#include "config.h"

#include <stdio.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <sys/time.h>

#include "log.h"

static struct {
	char ident[32];
	enum log_target target;
	enum log_level level;
} log_state = { "dualrelayd", LOG_TARGET_STDERR, LOG_LEVEL_INFO };

static const char *const log_level_names[] = { "error", "warning", "info", "debug" };

void
log_init(const char *ident, enum log_target target, enum log_level level)
{
	if (log_state.target == LOG_TARGET_SYSLOG)
		closelog();
	snprintf(log_state.ident, sizeof(log_state.ident), "%s", ident);
	log_state.target = target;
	log_state.level = level;
	if (target == LOG_TARGET_SYSLOG)
		openlog(log_state.ident, LOG_PID | LOG_NDELAY, LOG_MAIL);
}

void
log_set_level(enum log_level level)
{
	log_state.level = level;
}

enum log_level
log_get_level(void)
{
	return log_state.level;
}

int
log_level_parse(const char *name)
{
	for (size_t i = 0; i < sizeof(log_level_names) / sizeof(log_level_names[0]); i++)
		if (strcmp(name, log_level_names[i]) == 0)
			return (int)i;
	if (strcmp(name, "warn") == 0)
		return LOG_LEVEL_WARN;
	return -1;
}

void
log_vmsg(enum log_level level, const char *fmt, va_list ap)
{
	static const int prio[] = { LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG };
	char line[4096];

	if (level > log_state.level)
		return;
	vsnprintf(line, sizeof(line), fmt, ap);
	if (log_state.target == LOG_TARGET_SYSLOG) {
		syslog(prio[level], "%s%s%s", level <= LOG_LEVEL_WARN ? log_level_names[level] : "",
		    level <= LOG_LEVEL_WARN ? ": " : "", line);
		return;
	}
	struct timeval tv;
	struct tm tm;
	char stamp[32];
	gettimeofday(&tv, NULL);
	localtime_r(&tv.tv_sec, &tm);
	strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
	fprintf(stderr, "%s.%03ld %s[%s]: %s\n", stamp, (long)(tv.tv_usec / 1000), log_state.ident,
	    log_level_names[level], line);
}

#define LOG_FN(name, level)                     \
	void name(const char *fmt, ...)         \
	{                                       \
		va_list ap;                     \
		va_start(ap, fmt);              \
		log_vmsg(level, fmt, ap);       \
		va_end(ap);                     \
	}
LOG_FN(log_error, LOG_LEVEL_ERROR)
LOG_FN(log_warn, LOG_LEVEL_WARN)
LOG_FN(log_info, LOG_LEVEL_INFO)
LOG_FN(log_debug, LOG_LEVEL_DEBUG)
