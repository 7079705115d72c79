/*
 * log: the one way dualrelay reports events. One line per event; lines about a
 * message start with its queue id ("QID: ..."), as Postfix does, so operators' tools
 * (grep, pflogsumm-style parsers) work. Output goes to stderr (foreground) or syslog.
 * The state is a small struct that log_init() resets, so tests can re-initialise it.
 */
#ifndef DR_LOG_H
#define DR_LOG_H

#include <stdarg.h>

#define DR_PRINTF(f, a) __attribute__((format(printf, f, a)))

enum log_level {
	LOG_LEVEL_ERROR = 0,
	LOG_LEVEL_WARN,
	LOG_LEVEL_INFO,
	LOG_LEVEL_DEBUG,
};

enum log_target {
	LOG_TARGET_STDERR = 0,
	LOG_TARGET_SYSLOG,
};

void log_init(const char *ident, enum log_target target, enum log_level level);
void log_set_level(enum log_level level);
enum log_level log_get_level(void);
/* Parses "error", "warning", "info", "debug"; returns -1 when unknown. */
int log_level_parse(const char *name);

void log_error(const char *fmt, ...) DR_PRINTF(1, 2);
void log_warn(const char *fmt, ...) DR_PRINTF(1, 2);
void log_info(const char *fmt, ...) DR_PRINTF(1, 2);
void log_debug(const char *fmt, ...) DR_PRINTF(1, 2);
void log_vmsg(enum log_level level, const char *fmt, va_list ap) DR_PRINTF(2, 0);

#endif
