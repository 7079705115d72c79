/*
 * util: allocation that cannot fail silently (out of memory aborts: a relay that
 * half-handles OOM loses mail), bounded string helpers glibc 2.36 lacks, clocks.
 */
#ifndef DR_UTIL_H
#define DR_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

void *xmalloc(size_t size);
void *xcalloc(size_t nmemb, size_t size);
void *xrealloc(void *ptr, size_t size);
/* Grows *ptr to hold at least need elements of size elem, doubling; updates *cap. */
void *xgrow(void *ptr, size_t elem, size_t need, size_t *cap);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Copies with truncation, always NUL-terminates; returns strlen(src). */
size_t dr_strlcpy(char *dst, const char *src, size_t size);
/* ASCII lower-casing in place; returns s. */
char *dr_strlower(char *s);
bool dr_strcaseprefix(const char *s, const char *prefix);

/* Wall clock (seconds and fractional) and a monotonic clock in milliseconds. */
double dr_now(void);
uint64_t dr_monotonic_ms(void);
double dr_monotonic(void);   /* seconds, sub-second, CLOCK_MONOTONIC */
/* RFC 5322 date ("Sun, 22 Nov 2026 09:00:00 +0000") into buf (>= 40 bytes). */
void dr_rfc5322_date(time_t t, char *buf, size_t size);
/* Uniform random number in [0, bound) from a non-cryptographic generator seeded at start. */
uint32_t dr_random(uint32_t bound);

/* Base64 (RFC 4648 4, no line breaks) of data[0..len), NUL-terminated; caller frees. */
char *dr_base64(const void *data, size_t len);

#endif
