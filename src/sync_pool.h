/*
 * sync_pool: a few threads that run one blocking call over many items at once, for the
 * commit thread's fsyncs. fsync(2) waits for the disk: one file after the other, a batch
 * of N messages waits N times for the device (the file's data, its inode, a cache
 * flush); issued together, the device and the file system overlap and merge that work
 * (ext4 writes a shared inode table block once, its journal commits once for all).
 *
 * Ownership: the pool owns its threads; sync_pool_run borrows the items for the time of
 * the call. One caller at a time (the commit thread). Threads start with every signal
 * blocked (worker.h).
 */
#ifndef DR_SYNC_POOL_H
#define DR_SYNC_POOL_H

#include <stddef.h>

struct sync_pool;

/*
 * Starts nthreads helper threads (0 is allowed: the caller then does everything). NULL +
 * errno when a thread cannot be started.
 */
struct sync_pool *sync_pool_new(unsigned nthreads);
/* Stops and joins the threads. No sync_pool_run may be in progress. */
void sync_pool_free(struct sync_pool *p);
/*
 * Calls fn(items[i]) for every i in [0, n), on the pool's threads and the caller's,
 * each exactly once; returns when every call has returned. fn must be safe to run on
 * several items at once.
 */
void sync_pool_run(struct sync_pool *p, void *const *items, size_t n, void (*fn)(void *));
/* Calls made by the pool's threads (not the caller) so far: for tests. */
unsigned long sync_pool_helped(struct sync_pool *p);

#endif
