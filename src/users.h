/*
 * users: the inbound AUTH user database (users_file): lines "user:crypt-hash", comments
 * from "#", blank lines ignored. Hashes are yescrypt ("$y$") or sha512-crypt ("$6$"), as
 * mkpasswd(1) or `openssl passwd -6` make them, verified with libxcrypt's crypt_rn.
 * Parsed once at configuration load (and reload); the file's text is not kept.
 *
 * Ownership: users_parse returns a database the caller frees with users_free.
 */
#ifndef DR_USERS_H
#define DR_USERS_H

#include <stdbool.h>
#include <stddef.h>

struct users;

/* A user name longer than this cannot be in the file (nor be logged at length). */
#define USERS_NAME_MAX 255

/*
 * Parses the text of a users file (NUL-terminated). On success returns the database
 * (possibly empty). On failure returns NULL and sets *err (malloc'd; the caller frees)
 * to "line N: what is wrong" for the first bad line.
 */
struct users *users_parse(const char *text, char **err);
/* Reads and parses path; errors as users_parse, or "cannot read PATH: REASON". */
struct users *users_load(const char *path, char **err);
void users_free(struct users *u);
size_t users_count(const struct users *u);

/*
 * True when user is in the database and pass matches its hash. An unknown user costs
 * the same hash computation as a known one, so timing does not tell names apart.
 */
bool users_verify(const struct users *u, const char *user, const char *pass);

/*
 * users_verify in two halves, for a check made elsewhere (auth_verify.h: on a worker
 * thread). users_hash gives the hash to check user's password against: user's own
 * (borrowed from u), or, when user is unknown (or u is NULL), a dummy that costs the same
 * to compute and that the caller must not accept even if it matched (*known is false).
 * users_hash_match hashes pass with hash's salt and parameters (crypt_rn, reentrant)
 * and compares in constant time; it touches no shared state and wipes its work area.
 */
const char *users_hash(const struct users *u, const char *user, bool *known);
bool users_hash_match(const char *hash, const char *pass);

#endif
