/*
 * auth_verify: one thread that verifies passwords against crypt(3) hashes, with the
 * results delivered back on the event loop. A yescrypt check costs about 0.1 s of CPU
 * by design; made on the event loop thread, every AUTH attempt (a password guesser's
 * too) would stall every other session for that long.
 *
 * Ownership: auth_verify copies the hash and the password; the copy of the password is
 * wiped once hashed. cb runs at most once, on the event loop thread, and never after
 * auth_verify_cancel or auth_verifier_free: a caller that may go away first (a session)
 * cancels its request then, and cb never sees it again. The request handle is valid
 * until cb has run or the request is cancelled, whichever comes first. The verifier
 * borrows the event base, which must outlive it.
 *
 * With a NULL verifier the check is made at once and cb runs before auth_verify returns
 * (unit tests, the fuzzer: a server without a daemon); otherwise cb never runs from
 * inside auth_verify.
 *
 * The unknown-user rule stays the caller's (users_hash): it passes a dummy hash, which
 * costs the same to check, and ignores the result.
 */
#ifndef DR_AUTH_VERIFY_H
#define DR_AUTH_VERIFY_H

#include <stdbool.h>

struct event_base;
struct auth_verifier;
struct auth_verify_req;

/* match: pass hashed with hash's salt and parameters gives hash. */
typedef void (*auth_verify_cb)(bool match, void *arg);

/* Starts the verifying thread. NULL + errno. */
struct auth_verifier *auth_verifier_new(struct event_base *base);
/*
 * Stops the thread (after the check it is making, if any) and frees. Requests still in
 * flight are cancelled: their callbacks do not run, their handles are invalid. Not from
 * inside a callback of v.
 */
void auth_verifier_free(struct auth_verifier *v);

/*
 * Checks pass against hash (users_hash_match) through v, or at once when v is NULL.
 * Returns the request's handle for auth_verify_cancel; NULL when v is NULL (cb has run).
 */
struct auth_verify_req *auth_verify(struct auth_verifier *v, const char *hash,
    const char *pass, auth_verify_cb cb, void *arg);
/* cb of r will not run. r is invalid after this. NULL is ignored. */
void auth_verify_cancel(struct auth_verify_req *r);

#endif
