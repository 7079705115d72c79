/*
 * spool: the queue on disk. Owns the spool directory:
 *     SPOOL/tmp/      messages being received (removed at start: never acknowledged)
 *     SPOOL/queue/ID        header + content, written once, immutable
 *     SPOOL/queue/ID.state  appended state records (envelope.h), fsync'd per update
 * A message becomes visible in queue/ only by rename(2) after its data and the file were
 * fsync'd, and the directory is fsync'd before the client gets 250: a crash leaves the
 * whole message or nothing. Errors are returned (-1 and errno, or NULL); the caller logs.
 */
#ifndef DR_SPOOL_H
#define DR_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "envelope.h"

struct spool;
struct spool_writer;

/* Creates (0700) the directories as needed and removes leftovers in tmp/. NULL + errno. */
struct spool *spool_open(const char *dir);
void spool_close(struct spool *s);
const char *spool_dir(const struct spool *s);

/*
 * Starts a message: assigns e->id (unique in the spool), creates tmp/ID exclusively and
 * writes the header. Content follows through spool_writer_write. The envelope stays
 * owned by the caller. NULL + errno on failure.
 */
struct spool_writer *spool_writer_begin(struct spool *s, struct envelope *e);
/*
 * The same, reserving room in the header for an e->prepend of up to reserve bytes that
 * is set only before spool_writer_commit (the DKIM-Signature fields, computed while the
 * content streams in). The header is written padded and rewritten in place, at the same
 * length, at commit: before the fsync and the rename, so a crash still leaves the whole
 * message or nothing. reserve 0 is spool_writer_begin.
 */
struct spool_writer *spool_writer_begin_reserve(struct spool *s, struct envelope *e,
    size_t reserve);
int spool_writer_write(struct spool_writer *w, const void *data, size_t len);
/*
 * fsync, rename into queue/, fsync queue/. Frees w whatever the outcome. 0 or -1 + errno
 * (EOVERFLOW: e->prepend is larger than the room reserved for it). It is the three steps
 * below in a row; spool_commit.h runs the last two for many messages at once.
 */
int spool_writer_commit(struct spool_writer *w, struct envelope *e);
/*
 * The steps of a commit. prepare (on the thread that wrote the message): puts e->prepend
 * in the header, sets e->content_size, and completes the file if the message needed one
 * already; e is not used after it. write_out (on the thread that publishes): creates
 * tmp/ID and writes what is still in memory (a message smaller than the writer's buffer
 * is never on disk before this). publish (on that thread): write_out if not done, fsyncs
 * the file (unless data_synced: spool_sync_filesystem returned 0 after write_out) and
 * renames it into queue/; the message is durable only once spool_sync has returned 0
 * after it. finish: frees w; with error != 0 a published file is taken back out of
 * queue/ (the client hears a 4xx and will send it again), an unpublished one removed
 * from tmp/. prepare, write_out and publish: 0 or -1 + errno. start_writeback
 * (optional, between write_out and publish) starts writing the file out without
 * waiting, so that the fsyncs of a batch wait for disk writes already under way. sync
 * (optional, before publish with data_synced): write_out and fsync, on any thread, one
 * thread per writer at a time; an error stays with the writer (publish returns it).
 */
int spool_writer_prepare(struct spool_writer *w, struct envelope *e);
int spool_writer_write_out(struct spool_writer *w);
void spool_writer_start_writeback(struct spool_writer *w);
int spool_writer_sync(struct spool_writer *w);
int spool_writer_publish(struct spool_writer *w, bool data_synced);
void spool_writer_finish(struct spool_writer *w, int error);
/* Removes the temporary file and frees w. */
void spool_writer_abort(struct spool_writer *w);

/*
 * Opens the message content for reading: fd positioned at the first content byte (the
 * content does not include e->prepend, which is sent before it). -1 + errno.
 */
int spool_open_content(struct spool *s, const struct envelope *e);

/* Appends (and fsyncs) the state record of recipient i. 0 or -1 + errno. */
int spool_update_rcpt(struct spool *s, const struct envelope *e, size_t i);
/*
 * Appends (and fsyncs) that the DSN for recipients idx[0..n-1] is queued ("N" records,
 * envelope.h): call only once that DSN is committed. 0 or -1 + errno.
 */
int spool_update_notified(struct spool *s, const struct envelope *e, const size_t *idx,
    size_t n);
/* Appends (and fsyncs) that the delay warning is queued ("W"). 0 or -1 + errno. */
int spool_update_delay_warned(struct spool *s, const struct envelope *e);
/* Appends (and fsyncs) the message's hold flag (e->held). 0 or -1 + errno. */
int spool_update_hold(struct spool *s, const struct envelope *e);
/*
 * Removes a finished message (state file first, then the message). 0 or -1 + errno.
 * The removal is durable only after spool_sync: callers batch several removals into
 * one directory fsync (a removal lost in a crash means a duplicate, never a loss).
 */
int spool_remove(struct spool *s, const char *id);
/* fsyncs the queue directory (makes removals durable). 0 or -1 + errno. */
int spool_sync(struct spool *s);
/*
 * Flushes everything written to the spool's file system, data and inodes, in one pass
 * and one disk cache flush (syncfs(2)): for a batch of messages it costs about what two
 * fsyncs cost, where fsync per file costs a disk round trip or three per file. But it
 * also waits for whatever else is being written to that file system, so it is meant
 * for a spool on a file system of its own (spool_own_filesystem). 0 or -1 + errno.
 */
int spool_sync_filesystem(struct spool *s);
/* True when the spool directory is the root of a file system (a mount point). */
bool spool_own_filesystem(const struct spool *s);

/*
 * Loads every queued message (header + applied state), calling cb with an envelope whose
 * ownership passes to cb. Unreadable or malformed files are logged and moved to
 * SPOOL/corrupt/ (never deleted). Returns the number loaded, or -1 + errno.
 */
typedef void (*spool_recover_cb)(struct envelope *e, void *arg);
long spool_recover(struct spool *s, spool_recover_cb cb, void *arg);

#endif
