/*
 * spool: the queue on disk (layout and guarantees in spool.h). Owns the spool directory
 * tree and every file in it; the envelope record formats belong to envelope.c.
 *
 * Crash safety follows the classic mail-queue recipe (OpenSMTPD queue_fs, Postfix): a
 * message is written under tmp/ with O_EXCL, fsync'd, renamed into queue/, and queue/ is
 * fsync'd so the rename itself is durable before the client hears 250. A file under
 * tmp/ was never acknowledged, so spool_open deletes it. State records are appended and
 * fsync'd one by one; a record cut by a crash is dropped by the reader (and trimmed
 * before the next append), leaving the recipient in its previous state: at-least-once.
 *
 * Every path is resolved relative to directory descriptors opened once, so the daemon
 * keeps working on the same spool even if its working directory changes, and ids are
 * validated before use so a name can never leave the spool.
 *
 * Errors are returned with errno set; this module logs only what it handles itself
 * (quarantined and orphaned files during recovery).
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "envelope.h"
#include "log.h"
#include "spool.h"
#include "util.h"

#define SPOOL_WBUF_SIZE (64 * 1024)       /* writer buffer */
#define SPOOL_HEADER_MAX (16 * 1024 * 1024) /* a header longer than this is corrupt */
#define SPOOL_STATE_MAX (64 * 1024 * 1024)  /* likewise for a state file */
#define SPOOL_ID_TRIES 16                 /* fresh ids tried before giving up */
#define SPOOL_STATE_SUFFIX ".state"
#define SPOOL_NAME_MAX (ENVELOPE_ID_MAX + sizeof(SPOOL_STATE_SUFFIX))

struct spool {
	char *dir;       /* owned: the spool directory as configured */
	int root_fd;     /* SPOOL/ */
	int tmp_fd;      /* SPOOL/tmp/: messages being received */
	int queue_fd;    /* SPOOL/queue/: committed messages and their state files */
	int corrupt_fd;  /* SPOOL/corrupt/: quarantined files, kept for the operator */
	bool own_fs;     /* SPOOL/ is the root of its file system (a mount point) */
	bool noreplace;  /* renameat2(RENAME_NOREPLACE) works here */
};

struct spool_writer {
	struct spool *spool;  /* not owned */
	int fd;               /* tmp/ID, write-only; -1 before it is created and once closed */
	bool created;         /* tmp/ID was created by this writer (and is removed on failure) */
	char id[ENVELOPE_ID_MAX];
	char *buf;            /* owned, SPOOL_WBUF_SIZE bytes */
	size_t used;          /* bytes pending in buf */
	size_t written;       /* bytes handed to the writer, header included */
	size_t header_len;    /* bytes of the header record */
	bool reserved;        /* the header is padded: rewrite it at commit (prepend) */
	bool published;       /* renamed into queue/ (not yet durable before spool_sync) */
	int error;            /* first errno met; the temporary file is gone once set */
};

/* ---- small helpers ---- */

static int
spool_write_all(int fd, const void *data, size_t len)
{
	const char *p = data;

	while (len > 0) {
		ssize_t n = write(fd, p, len);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (n == 0) {           /* should not happen for a regular file */
			errno = EIO;
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static ssize_t
spool_read_some(int fd, void *buf, size_t len)
{
	ssize_t n;

	do
		n = read(fd, buf, len);
	while (n < 0 && errno == EINTR);
	return n;
}

/* Closes fd keeping errno, for cleanup paths. */
static void
spool_close_quiet(int fd)
{
	int saved = errno;

	if (fd >= 0)
		close(fd);
	errno = saved;
}

static int
spool_fsync_dir(int dfd)
{
	while (fsync(dfd) < 0) {
		if (errno != EINTR)
			return -1;
	}
	return 0;
}

/* Opens (creating 0700 if needed) the subdirectory name of dfd. */
static int
spool_open_subdir(int dfd, const char *name, bool *created)
{
	if (mkdirat(dfd, name, 0700) == 0)
		*created = true;
	else if (errno != EEXIST)
		return -1;
	return openat(dfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
}

/* True when name exists in dfd (an lstat error other than ENOENT counts as existing). */
static bool
spool_exists(int dfd, const char *name)
{
	struct stat st;

	return fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 || errno != ENOENT;
}

static void
spool_state_name(const char *id, char name[SPOOL_NAME_MAX])
{
	snprintf(name, SPOOL_NAME_MAX, "%s" SPOOL_STATE_SUFFIX, id);
}

/* Removes every entry of tmp/: none of them was ever acknowledged. */
static int
spool_clean_tmp(struct spool *s)
{
	int fd = dup(s->tmp_fd);
	DIR *d;
	struct dirent *de;

	if (fd < 0)
		return -1;
	if ((d = fdopendir(fd)) == NULL) {
		spool_close_quiet(fd);
		return -1;
	}
	rewinddir(d);
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (unlinkat(s->tmp_fd, de->d_name, 0) < 0)
			log_warn("spool: cannot remove %s/tmp/%s: %s", s->dir, de->d_name,
			    strerror(errno));
		else
			log_info("spool: removed unacknowledged %s/tmp/%s", s->dir, de->d_name);
	}
	closedir(d);
	return 0;
}

/* ---- opening ---- */

/*
 * Whether the file system refuses a rename over an existing name by itself
 * (RENAME_NOREPLACE: ext4, xfs, btrfs, tmpfs; not NFS). A rename of a name that does not
 * exist tells: ENOENT when the flag is understood, EINVAL when it is not.
 */
static bool
spool_probe_noreplace(struct spool *s)
{
#ifdef RENAME_NOREPLACE
	return renameat2(s->tmp_fd, ".dualrelay-probe", s->queue_fd, ".dualrelay-probe",
	    RENAME_NOREPLACE) < 0 && errno == ENOENT;
#else
	(void)s;
	return false;
#endif
}

/* Renames tmp/ID to queue/ID, never over an existing queue/ID when the system can say. */
static int
spool_rename_in(struct spool *s, const char *id)
{
#ifdef RENAME_NOREPLACE
	if (s->noreplace)
		return renameat2(s->tmp_fd, id, s->queue_fd, id, RENAME_NOREPLACE);
#endif
	return renameat(s->tmp_fd, id, s->queue_fd, id);
}

/* True when dir (an open directory) is a mount point, or the root directory. */
static bool
spool_is_mount_point(int dfd)
{
	struct stat self, parent;

	if (fstatat(dfd, ".", &self, 0) < 0 || fstatat(dfd, "..", &parent, 0) < 0)
		return false;
	return self.st_dev != parent.st_dev || self.st_ino == parent.st_ino;
}

struct spool *
spool_open(const char *dir)
{
	struct spool *s;
	bool created = false;
	int saved;

	if (mkdir(dir, 0700) == 0)
		created = true;
	else if (errno != EEXIST)
		return NULL;

	s = xcalloc(1, sizeof(*s));
	s->dir = xstrdup(dir);
	s->root_fd = s->tmp_fd = s->queue_fd = s->corrupt_fd = -1;
	if ((s->root_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0 ||
	    (s->tmp_fd = spool_open_subdir(s->root_fd, "tmp", &created)) < 0 ||
	    (s->queue_fd = spool_open_subdir(s->root_fd, "queue", &created)) < 0 ||
	    (s->corrupt_fd = spool_open_subdir(s->root_fd, "corrupt", &created)) < 0)
		goto fail;
	/* New directory entries must survive a crash before anything relies on them. */
	if (created && spool_fsync_dir(s->root_fd) < 0)
		goto fail;
	if (spool_clean_tmp(s) < 0 || spool_fsync_dir(s->tmp_fd) < 0)
		goto fail;
	s->own_fs = spool_is_mount_point(s->root_fd);
	s->noreplace = spool_probe_noreplace(s);
	return s;

fail:
	saved = errno;
	spool_close(s);
	errno = saved;
	return NULL;
}

void
spool_close(struct spool *s)
{
	if (s == NULL)
		return;
	spool_close_quiet(s->corrupt_fd);
	spool_close_quiet(s->queue_fd);
	spool_close_quiet(s->tmp_fd);
	spool_close_quiet(s->root_fd);
	free(s->dir);
	free(s);
}

const char *
spool_dir(const struct spool *s)
{
	return s->dir;
}

/* ---- writing a message ---- */

/* Records the first error and drops the temporary file: it can never be committed now. */
static void
spool_writer_fail(struct spool_writer *w, int err)
{
	if (w->error == 0) {
		w->error = err;
		if (w->created)
			unlinkat(w->spool->tmp_fd, w->id, 0);
	}
	errno = err;
}

/*
 * Creates tmp/ID. Exclusively: the id was checked free in queue/ when it was given, and
 * ids of one process never repeat, so EEXIST here means a leftover of another process
 * with the same clock reading; the message then fails (the client hears a 4xx).
 */
static int
spool_writer_create(struct spool_writer *w)
{
	if (w->fd >= 0)
		return 0;
	w->fd = openat(w->spool->tmp_fd, w->id, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (w->fd < 0) {
		spool_writer_fail(w, errno);
		return -1;
	}
	w->created = true;
	return 0;
}

static int
spool_writer_flush(struct spool_writer *w)
{
	if (w->error != 0) {
		errno = w->error;
		return -1;
	}
	if (w->used == 0)
		return 0;
	if (spool_writer_create(w) < 0)
		return -1;
	if (spool_write_all(w->fd, w->buf, w->used) < 0) {
		spool_writer_fail(w, errno);
		return -1;
	}
	w->used = 0;
	return 0;
}

static void
spool_writer_free(struct spool_writer *w)
{
	spool_close_quiet(w->fd);
	free(w->buf);
	free(w);
}

struct spool_writer *
spool_writer_begin(struct spool *s, struct envelope *e)
{
	return spool_writer_begin_reserve(s, e, 0);
}

/* Bytes a prepend of len bytes takes in the header: "prepend " BASE64 "\n". */
static size_t
spool_prepend_room(size_t len)
{
	return strlen("prepend \n") + 4 * ((len + 2) / 3);
}

struct spool_writer *
spool_writer_begin_reserve(struct spool *s, struct envelope *e, size_t reserve)
{
	struct spool_writer *w;
	char state[SPOOL_NAME_MAX], *hdr;
	size_t hlen;

	for (int tries = 0;; tries++) {
		if (tries == SPOOL_ID_TRIES) {
			errno = EEXIST;
			return NULL;
		}
		envelope_new_id(e->id);
		/*
		 * Ids of one process never repeat, and orphan state files are removed at
		 * start; what is left is a queue/ID of an earlier process whose clock ran
		 * ahead of ours. Where the rename into queue/ refuses to replace, that is
		 * caught there (the message fails, the client tries again) without two
		 * lookups here per message; elsewhere the names are looked up now.
		 */
		if (s->noreplace)
			break;
		spool_state_name(e->id, state);
		if (!spool_exists(s->queue_fd, e->id) && !spool_exists(s->queue_fd, state))
			break;
	}

	/*
	 * tmp/ID is created only when the buffer first fills up, or by the commit thread
	 * when the whole message fits in it (most mail): creating a file waits for the
	 * file system's allocator, which the event loop should not do once per message.
	 */
	w = xcalloc(1, sizeof(*w));
	w->spool = s;
	w->fd = -1;
	memcpy(w->id, e->id, sizeof(w->id));
	w->buf = xmalloc(SPOOL_WBUF_SIZE);

	w->reserved = reserve > 0;
	hdr = w->reserved ? envelope_encode_header_padded(e, spool_prepend_room(reserve), &hlen) :
	    envelope_encode_header(e, &hlen);
	if (hdr == NULL) {
		/* CR/LF in a field, or no recipient: the caller's bug, not the disk's. */
		spool_writer_fail(w, EINVAL);
		spool_writer_free(w);
		errno = EINVAL;
		return NULL;
	}
	w->header_len = hlen;
	if (spool_writer_write(w, hdr, hlen) < 0) {
		int saved = errno;

		free(hdr);
		spool_writer_free(w);
		errno = saved;
		return NULL;
	}
	free(hdr);
	return w;
}

int
spool_writer_write(struct spool_writer *w, const void *data, size_t len)
{
	if (w->error != 0) {
		errno = w->error;
		return -1;
	}
	if (len > SPOOL_WBUF_SIZE - w->used) {
		if (spool_writer_flush(w) < 0)
			return -1;
		/* Large blocks go straight to the file rather than through the buffer. */
		if (len >= SPOOL_WBUF_SIZE) {
			if (spool_write_all(w->fd, data, len) < 0) {
				spool_writer_fail(w, errno);
				return -1;
			}
			w->written += len;
			return 0;
		}
	}
	memcpy(w->buf + w->used, data, len);
	w->used += len;
	w->written += len;
	return 0;
}

/*
 * The header record again, with e->prepend in it and as much less padding, at exactly
 * the length written at first (so the content does not move). NULL + errno (EOVERFLOW:
 * the prepend does not fit the room reserved for it).
 */
static char *
spool_writer_signed_header(const struct spool_writer *w, const struct envelope *e)
{
	size_t len, bare;
	char *hdr;

	if ((hdr = envelope_encode_header_padded(e, 0, &bare)) == NULL) {
		errno = EINVAL;
		return NULL;
	}
	free(hdr);
	if (bare > w->header_len) {
		errno = EOVERFLOW;
		return NULL;
	}
	hdr = envelope_encode_header_padded(e, w->header_len - bare, &len);
	if (hdr != NULL && len != w->header_len) {
		free(hdr);
		hdr = NULL;
	}
	if (hdr == NULL)
		errno = EINVAL;
	return hdr;
}

/*
 * Puts the signed header where the old one is: at the start of the file, or of the
 * buffer when the message is still wholly in memory. 0 or -1 + errno.
 */
static int
spool_writer_rewrite_header(struct spool_writer *w, const struct envelope *e)
{
	char *hdr = spool_writer_signed_header(w, e);
	size_t len = w->header_len;
	ssize_t n;

	if (hdr == NULL)
		return -1;
	if (w->fd < 0) {
		memcpy(w->buf, hdr, len); /* the buffer holds the header at least */
		free(hdr);
		return 0;
	}
	for (size_t off = 0; off < len; off += (size_t)n) {
		n = pwrite(w->fd, hdr + off, len - off, (off_t)off);
		if (n < 0 && errno == EINTR) {
			n = 0;
			continue;
		}
		if (n <= 0) {
			if (n == 0)
				errno = EIO;
			free(hdr);
			return -1;
		}
	}
	free(hdr);
	return 0;
}

int
spool_writer_prepare(struct spool_writer *w, struct envelope *e)
{
	if (w->error != 0) {
		errno = w->error;
		return -1;
	}
	/* A message in a file of its own is completed now; one still in memory stays. */
	if (w->fd >= 0 && spool_writer_flush(w) < 0)
		return -1;
	/* Left unsigned, the padded header stands as written. */
	if (w->reserved && e->prepend != NULL && spool_writer_rewrite_header(w, e) < 0) {
		spool_writer_fail(w, errno);
		return -1;
	}
	e->content_size = w->written - w->header_len +
	    (e->prepend != NULL ? strlen(e->prepend) : 0);
	return 0;
}

int
spool_writer_write_out(struct spool_writer *w)
{
	if (spool_writer_flush(w) < 0)
		return -1;
	return spool_writer_create(w);
}

void
spool_writer_start_writeback(struct spool_writer *w)
{
#ifdef SYNC_FILE_RANGE_WRITE
	/* Only a head start for the fsync that follows, which reports any error. */
	if (w->error == 0 && w->fd >= 0)
		(void)sync_file_range(w->fd, 0, 0, SYNC_FILE_RANGE_WRITE);
#else
	(void)w;
#endif
}

int
spool_writer_sync(struct spool_writer *w)
{
	if (spool_writer_write_out(w) < 0)
		return -1;
	while (fsync(w->fd) < 0) {
		if (errno != EINTR) {
			spool_writer_fail(w, errno);
			return -1;
		}
	}
	return 0;
}

int
spool_writer_publish(struct spool_writer *w, bool data_synced)
{
	struct spool *s = w->spool;
	int fd;

	if (spool_writer_write_out(w) < 0)
		return -1;
	while (!data_synced && fsync(w->fd) < 0) {
		if (errno != EINTR) {
			spool_writer_fail(w, errno);
			return -1;
		}
	}
	/* close(2) can report a deferred write error (NFS): it counts. */
	fd = w->fd;
	w->fd = -1;
	if (close(fd) < 0 && errno != EINTR) {
		spool_writer_fail(w, errno);
		return -1;
	}
	if (spool_rename_in(s, w->id) < 0) {
		spool_writer_fail(w, errno);
		return -1;
	}
	w->published = true;
	return 0;
}

void
spool_writer_finish(struct spool_writer *w, int error)
{
	if (error != 0 && w->published) {
		/*
		 * The rename may not be durable and the client is about to be told to try
		 * again: take the message back so it is not delivered twice.
		 */
		unlinkat(w->spool->queue_fd, w->id, 0);
	} else if (error != 0 && w->error == 0) {
		spool_writer_fail(w, error);
	}
	spool_writer_free(w);
}

int
spool_writer_commit(struct spool_writer *w, struct envelope *e)
{
	int err = 0;

	if (spool_writer_prepare(w, e) < 0 || spool_writer_publish(w, false) < 0 ||
	    spool_sync(w->spool) < 0)
		err = errno;
	spool_writer_finish(w, err);
	errno = err;
	return err != 0 ? -1 : 0;
}

void
spool_writer_abort(struct spool_writer *w)
{
	if (w == NULL)
		return;
	if (w->error == 0 && w->created)
		unlinkat(w->spool->tmp_fd, w->id, 0);
	spool_writer_free(w);
}

/* ---- reading ---- */

/*
 * Reads the header record at the start of fd (positioned at 0): the text up to and
 * including the first empty line. Returns a malloc'd buffer (caller frees) holding at
 * least *header_len bytes, or NULL + errno (EBADMSG when no header end is found).
 */
static char *
spool_read_header(int fd, size_t *header_len)
{
	size_t cap = 4096, len = 0, scan = 0;
	char *buf = xmalloc(cap), *end;
	ssize_t n;

	for (;;) {
		if (len == cap) {
			if (cap >= SPOOL_HEADER_MAX)
				break;
			buf = xgrow(buf, 1, cap * 2, &cap);
		}
		if ((n = spool_read_some(fd, buf + len, cap - len)) < 0) {
			free(buf);
			return NULL;
		}
		if (n == 0)
			break;
		len += (size_t)n;
		/* The only empty line in a header is its end, so "\n\n" marks it. */
		end = memmem(buf + scan, len - scan, "\n\n", 2);
		if (end != NULL) {
			*header_len = (size_t)(end - buf) + 2;
			return buf;
		}
		scan = len - 1;
	}
	free(buf);
	errno = EBADMSG;
	return NULL;
}

/* Reads the whole of fd. Returns a malloc'd buffer (caller frees) or NULL + errno. */
static char *
spool_read_all(int fd, size_t *lenp)
{
	size_t cap = 4096, len = 0;
	char *buf = xmalloc(cap);
	ssize_t n;

	for (;;) {
		if (len == cap) {
			if (cap >= SPOOL_STATE_MAX) {
				free(buf);
				errno = EFBIG;
				return NULL;
			}
			buf = xgrow(buf, 1, cap * 2, &cap);
		}
		if ((n = spool_read_some(fd, buf + len, cap - len)) < 0) {
			free(buf);
			return NULL;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	*lenp = len;
	return buf;
}

int
spool_open_content(struct spool *s, const struct envelope *e)
{
	size_t hlen;
	char *hdr;
	int fd, saved;

	if (!envelope_id_valid(e->id)) {
		errno = EINVAL;
		return -1;
	}
	if ((fd = openat(s->queue_fd, e->id, O_RDONLY | O_CLOEXEC)) < 0)
		return -1;
	if ((hdr = spool_read_header(fd, &hlen)) == NULL)
		goto fail;
	free(hdr);
	if (lseek(fd, (off_t)hlen, SEEK_SET) < 0)
		goto fail;
	return fd;

fail:
	saved = errno;
	close(fd);
	errno = saved;
	return -1;
}

/* ---- state records ---- */

/*
 * Cuts a trailing partial record (left by a crash or a failed append) off the state
 * file, so the next record starts on its own line instead of being glued to garbage.
 * A record is shorter than 1024 bytes, so the last newline is within the tail.
 */
static int
spool_trim_partial(int fd)
{
	char tail[2048];
	struct stat st;
	off_t off, keep = 0;
	ssize_t n;

	if (fstat(fd, &st) < 0)
		return -1;
	if (st.st_size == 0)
		return 0;
	off = st.st_size > (off_t)sizeof(tail) ? st.st_size - (off_t)sizeof(tail) : 0;
	do
		n = pread(fd, tail, (size_t)(st.st_size - off), off);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -1;
	if (n > 0 && tail[n - 1] == '\n')
		return 0;
	for (ssize_t i = n; i > 0; i--) {
		if (tail[i - 1] == '\n') {
			keep = off + i;
			break;
		}
	}
	/* keep == 0 with a long tail: no record fits; drop the unreadable rest as well. */
	return ftruncate(fd, keep);
}

/* Appends one record to the message's state file, durably. */
static int
spool_append_state(struct spool *s, const struct envelope *e, const char *rec, size_t len)
{
	char name[SPOOL_NAME_MAX];
	bool created = false;
	struct stat st;
	int fd, saved;

	spool_state_name(e->id, name);
	/* Read access too: spool_trim_partial looks at the tail. */
	fd = openat(s->queue_fd, name, O_RDWR | O_APPEND | O_CLOEXEC);
	if (fd < 0 && errno == ENOENT) {
		/* Only a queued message gets a state file (else recovery deletes it as orphan). */
		if (fstatat(s->queue_fd, e->id, &st, AT_SYMLINK_NOFOLLOW) < 0)
			return -1;
		fd = openat(s->queue_fd, name, O_RDWR | O_APPEND | O_CREAT | O_EXCL | O_CLOEXEC,
		    0600);
		created = fd >= 0;
		if (fd < 0 && errno == EEXIST)
			fd = openat(s->queue_fd, name, O_RDWR | O_APPEND | O_CLOEXEC);
	}
	if (fd < 0)
		return -1;
	if (!created && spool_trim_partial(fd) < 0)
		goto fail;
	if (fstat(fd, &st) < 0)
		goto fail;
	if (spool_write_all(fd, rec, len) < 0) {
		/* Do not leave half a record behind (ENOSPC in the middle). */
		saved = errno;
		if (ftruncate(fd, st.st_size) < 0)
			log_debug("%s: cannot trim state file: %s", e->id, strerror(errno));
		errno = saved;
		goto fail;
	}
	while (fsync(fd) < 0) {
		if (errno != EINTR)
			goto fail;
	}
	if (close(fd) < 0 && errno != EINTR)
		return -1;
	if (created && spool_fsync_dir(s->queue_fd) < 0)
		return -1;
	return 0;

fail:
	spool_close_quiet(fd);
	return -1;
}

int
spool_update_rcpt(struct spool *s, const struct envelope *e, size_t i)
{
	char rec[1024];
	size_t len;

	if (!envelope_id_valid(e->id) || (len = envelope_encode_state(e, i, rec, sizeof(rec))) == 0) {
		errno = EINVAL;
		return -1;
	}
	return spool_append_state(s, e, rec, len);
}

int
spool_update_notified(struct spool *s, const struct envelope *e, const size_t *idx, size_t n)
{
	/* "N " SIZE_MAX "\n" fits in 32 bytes (a DSN is rare: no stack buffer games). */
	size_t size = n * 32 + 1, len;
	char *rec = xmalloc(size);
	int rc = -1, saved = EINVAL;

	if (envelope_id_valid(e->id) && n > 0 &&
	    (len = envelope_encode_notified(e, idx, n, rec, size)) > 0) {
		/* One append and one fsync for the whole DSN, whatever its number of recipients. */
		rc = spool_append_state(s, e, rec, len);
		saved = errno;
	}
	free(rec);
	errno = saved;
	return rc;
}

int
spool_update_delay_warned(struct spool *s, const struct envelope *e)
{
	if (!envelope_id_valid(e->id)) {
		errno = EINVAL;
		return -1;
	}
	return spool_append_state(s, e, "W\n", 2);
}

int
spool_update_hold(struct spool *s, const struct envelope *e)
{
	if (!envelope_id_valid(e->id)) {
		errno = EINVAL;
		return -1;
	}
	return spool_append_state(s, e, e->held ? "H 1\n" : "H 0\n", 4);
}

int
spool_remove(struct spool *s, const char *id)
{
	char name[SPOOL_NAME_MAX];

	if (!envelope_id_valid(id)) {
		errno = EINVAL;
		return -1;
	}
	/* State first: a message without state is pending again, never an orphan state. */
	spool_state_name(id, name);
	if (unlinkat(s->queue_fd, name, 0) < 0 && errno != ENOENT)
		return -1;
	if (unlinkat(s->queue_fd, id, 0) < 0)
		return -1;
	return 0;
}

int
spool_sync(struct spool *s)
{
	return spool_fsync_dir(s->queue_fd);
}

bool
spool_own_filesystem(const struct spool *s)
{
	return s->own_fs;
}

int
spool_sync_filesystem(struct spool *s)
{
	/* Since Linux 5.8 syncfs reports write-back errors met since tmp_fd was opened. */
	while (syncfs(s->tmp_fd) < 0) {
		if (errno != EINTR)
			return -1;
	}
	return 0;
}

/* ---- recovery ---- */

/* Moves queue/name to corrupt/ for the operator to look at. */
static void
spool_quarantine(struct spool *s, const char *name)
{
	if (renameat(s->queue_fd, name, s->corrupt_fd, name) < 0) {
		if (errno != ENOENT)
			log_error("spool: cannot move %s/queue/%s to corrupt/: %s", s->dir, name,
			    strerror(errno));
		return;
	}
	spool_fsync_dir(s->corrupt_fd);
	spool_fsync_dir(s->queue_fd);
}

/* Errors that say nothing about the file itself: give up rather than quarantine. */
static bool
spool_resource_error(int err)
{
	return err == EMFILE || err == ENFILE || err == ENOMEM || err == EINTR;
}

/*
 * Loads queue/id with its state. Returns the envelope, or NULL with *why set (the file
 * is bad) or with *why NULL and errno set (a resource error or a vanished file).
 */
static struct envelope *
spool_load(struct spool *s, const char *id, const char **why)
{
	char name[SPOOL_NAME_MAX], *hdr = NULL, *states;
	struct envelope *e = NULL;
	size_t hlen, slen, bad;
	struct stat st;
	int fd;

	*why = NULL;
	if ((fd = openat(s->queue_fd, id, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)) < 0)
		goto ioerr;
	if (fstat(fd, &st) < 0)
		goto ioerr;
	if (!S_ISREG(st.st_mode)) {
		*why = "not a regular file";
		goto out;
	}
	if ((hdr = spool_read_header(fd, &hlen)) == NULL)
		goto ioerr;
	if ((e = envelope_decode_header(hdr, hlen, NULL, why)) == NULL)
		goto out;
	if (strcmp(e->id, id) != 0) {
		*why = "id does not match the file name";
		goto bad;
	}
	e->content_size = (size_t)st.st_size - hlen +
	    (e->prepend != NULL ? strlen(e->prepend) : 0);
	close(fd);

	spool_state_name(id, name);
	if ((fd = openat(s->queue_fd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)) < 0) {
		if (errno == ENOENT)
			goto done;      /* never attempted yet */
		goto ioerr;
	}
	if ((states = spool_read_all(fd, &slen)) == NULL)
		goto ioerr;
	envelope_apply_states(e, states, slen, &bad);
	free(states);
	if (bad > 0)
		log_warn("%s: %zu malformed state record(s) skipped", id, bad);
	close(fd);
done:
	free(hdr);
	return e;

ioerr:
	if (errno == EBADMSG)
		*why = "no end of header";
	else if (errno == EFBIG)
		*why = "state file too large";
	else if (!spool_resource_error(errno) && errno != ENOENT)
		*why = strerror(errno);  /* unreadable: quarantine too */
bad:
	envelope_free(e);
	e = NULL;
out:
	spool_close_quiet(fd);
	free(hdr);
	return e;
}

static int
spool_name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The sorted names in queue/ (ids sort by arrival). Caller frees. NULL + errno. */
static char **
spool_list_queue(struct spool *s, size_t *countp)
{
	char **names = NULL;
	size_t n = 0, cap = 0;
	struct dirent *de;
	DIR *d;
	int fd;

	if ((fd = dup(s->queue_fd)) < 0)
		return NULL;
	if ((d = fdopendir(fd)) == NULL) {
		spool_close_quiet(fd);
		return NULL;
	}
	rewinddir(d);
	errno = 0;
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		names = xgrow(names, sizeof(*names), n + 1, &cap);
		names[n++] = xstrdup(de->d_name);
	}
	closedir(d);
	if (n > 0)
		qsort(names, n, sizeof(*names), spool_name_cmp);
	*countp = n;
	if (names == NULL)
		names = xcalloc(1, sizeof(*names));
	return names;
}

/* An orphan ID.state (its message was removed, a crash came in between): delete it. */
static void
spool_recover_state(struct spool *s, const char *name)
{
	char id[ENVELOPE_ID_MAX];
	size_t len = strlen(name) - strlen(SPOOL_STATE_SUFFIX);

	if (len >= sizeof(id))
		return;
	memcpy(id, name, len);
	id[len] = '\0';
	if (!envelope_id_valid(id) || spool_exists(s->queue_fd, id))
		return;
	if (unlinkat(s->queue_fd, name, 0) < 0) {
		if (errno != ENOENT)    /* already quarantined with its message */
			log_warn("spool: cannot remove orphan %s/queue/%s: %s", s->dir, name,
			    strerror(errno));
	} else
		log_info("spool: removed orphan state file %s/queue/%s", s->dir, name);
}

static bool
spool_has_suffix(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);

	return n >= m && strcmp(s + n - m, suffix) == 0;
}

long
spool_recover(struct spool *s, spool_recover_cb cb, void *arg)
{
	char **names, state[SPOOL_NAME_MAX];
	size_t count;
	long loaded = 0;
	int err = 0;

	if ((names = spool_list_queue(s, &count)) == NULL)
		return -1;
	for (size_t i = 0; i < count; i++) {
		struct envelope *e;
		const char *why;

		if (err != 0)
			break;
		if (spool_has_suffix(names[i], SPOOL_STATE_SUFFIX)) {
			spool_recover_state(s, names[i]);
			continue;
		}
		if (!envelope_id_valid(names[i])) {
			log_debug("spool: ignoring %s/queue/%s", s->dir, names[i]);
			continue;
		}
		if ((e = spool_load(s, names[i], &why)) != NULL) {
			loaded++;
			cb(e, arg);
			continue;
		}
		if (why == NULL) {
			if (errno != ENOENT)
				err = errno;    /* out of descriptors or memory: stop */
			continue;
		}
		log_warn("%s: corrupt queue file (%s), moved to %s/corrupt/", names[i], why,
		    s->dir);
		spool_state_name(names[i], state);
		spool_quarantine(s, names[i]);
		spool_quarantine(s, state);
	}
	for (size_t i = 0; i < count; i++)
		free(names[i]);
	free(names);
	if (err != 0) {
		errno = err;
		return -1;
	}
	return loaded;
}
