/*
 * spool_commit: group commit of accepted messages. The fsyncs that make a message
 * durable before its 250 (spool.h) are the relay's bottleneck: done one message at a
 * time on the event loop, every session waits for every other session's disk flushes.
 * Here one thread makes them durable in batches: the files of the batch are fsync'd
 * together (in parallel, or by one syncfs) and renamed into queue/, then queue/ is
 * fsync'd ONCE for the whole batch, and each message's completion comes back on the
 * event loop. Commits that arrive while a batch
 * is on disk form the next batch, so the batch grows with the load by itself (as
 * database group commit does) and costs no latency when the relay is idle.
 *
 * Ownership: spool_commit takes the writer (freed whatever happens) and calls cb exactly
 * once, on the event loop thread: later from the loop, or before it returns when the
 * committer is NULL (a plain synchronous commit: tests, tools). The envelope stays the
 * caller's; spool_commit is done with it when it returns. The committer borrows the
 * event base and the spool, which must outlive it.
 */
#ifndef DR_SPOOL_COMMIT_H
#define DR_SPOOL_COMMIT_H

#include <stdbool.h>

#include "envelope.h"

struct event_base;
struct spool;
struct spool_writer;
struct spool_committer;

/* error: 0 when the message is durable in queue/, else an errno (it is not queued). */
typedef void (*spool_commit_cb)(int error, void *arg);

/*
 * Starts the commit thread. use_syncfs: a batch of several files is made durable with
 * one syncfs of the spool's file system (spool_sync_filesystem: for a spool on a file
 * system of its own) instead of one fsync per file. NULL + errno.
 */
struct spool_committer *spool_committer_new(struct event_base *base, struct spool *s,
    bool use_syncfs);
/* Finishes every commit in flight (their callbacks run), stops the thread, frees. */
void spool_committer_free(struct spool_committer *c);
/* Waits until every commit in flight is finished and its callback has run. */
void spool_committer_drain(struct spool_committer *c);
/* What the commit thread did so far (for the log at stop, and tests). */
struct spool_commit_stats {
	unsigned long commits;  /* messages handed over */
	unsigned long batches;  /* rounds that wrote or synced something */
	unsigned long removals; /* delivered messages removed */
	double commit_s;        /* time spent making batches durable */
	double remove_s;        /* time spent removing */
};
void spool_committer_stats(struct spool_committer *c, struct spool_commit_stats *st);

/*
 * Removes a finished message (spool_remove) on the commit thread, made durable by the
 * next batch's fsync of queue/ (nothing waits for that: a removal lost in a crash means
 * a duplicate delivery, never a loss). cb runs on the loop thread once the files are
 * gone (error 0) or could not be removed (an errno); synchronously when c is NULL.
 */
void spool_remove_later(struct spool_committer *c, struct spool *s, const char *id,
    spool_commit_cb cb, void *arg);

/* Commits w (with e's prepend) through c, or synchronously when c is NULL. */
void spool_commit(struct spool_committer *c, struct spool_writer *w, struct envelope *e,
    spool_commit_cb cb, void *arg);

#endif
