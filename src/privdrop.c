/*
 * privdrop: the switch from root to the daemon's account (see privdrop.h). The order
 * matters: supplementary groups and the gid while still root, the uid last (after it,
 * neither group call is allowed). setuid() from root changes real, effective and saved
 * uid together, so no way back remains; we check that rather than trust it. The spool
 * walk uses nftw(FTW_PHYS | FTW_MOUNT) with lchown: a link planted in the spool cannot
 * make root chown a file outside it.
 */
#include "config.h"

#include <errno.h>
#include <ftw.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "privdrop.h"
#include "util.h"

#define PRIVDROP_NFTW_FDS 16

int
privdrop_resolve(const char *user, const char *group, struct privdrop_ids *ids,
    char *buf, size_t len, const char **why)
{
	const struct passwd *pw;
	const struct group *gr;

	errno = 0;
	if ((pw = getpwnam(user)) == NULL) {
		snprintf(buf, len, "user \"%s\": %s", user,
		    errno != 0 ? strerror(errno) : "no such account");
		*why = buf;
		return -1;
	}
	if (pw->pw_uid == 0) {
		snprintf(buf, len, "user \"%s\" is root: name an unprivileged account", user);
		*why = buf;
		return -1;
	}
	ids->uid = pw->pw_uid;
	ids->gid = pw->pw_gid;
	dr_strlcpy(ids->name, user, sizeof(ids->name));
	if (group == NULL)
		return 0;
	errno = 0;
	if ((gr = getgrnam(group)) == NULL) {
		snprintf(buf, len, "group \"%s\": %s", group,
		    errno != 0 ? strerror(errno) : "no such group");
		*why = buf;
		return -1;
	}
	ids->gid = gr->gr_gid;
	return 0;
}

/* nftw has no user argument: the walk's target, set for the duration of one walk. */
static const struct privdrop_ids *privdrop_walk_ids;

static int
privdrop_walk_cb(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	(void)type;
	(void)ftw;
	if (st->st_uid == privdrop_walk_ids->uid && st->st_gid == privdrop_walk_ids->gid)
		return 0;
	if (lchown(path, privdrop_walk_ids->uid, privdrop_walk_ids->gid) < 0) {
		log_error("cannot give %s to %s: %s", path, privdrop_walk_ids->name,
		    strerror(errno));
		return 1;
	}
	return 0;
}

int
privdrop_own_tree(const char *dir, const struct privdrop_ids *ids)
{
	int rc;

	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		log_error("cannot create %s: %s", dir, strerror(errno));
		return -1;
	}
	privdrop_walk_ids = ids;
	rc = nftw(dir, privdrop_walk_cb, PRIVDROP_NFTW_FDS, FTW_PHYS | FTW_MOUNT);
	privdrop_walk_ids = NULL;
	if (rc == -1) {
		log_error("cannot walk %s: %s", dir, strerror(errno));
		return -1;
	}
	if (rc != 0)
		return -1;
	/* Only the daemon's account may look into the queue. */
	if (chmod(dir, 0700) < 0) {
		log_error("cannot chmod 0700 %s: %s", dir, strerror(errno));
		return -1;
	}
	return 0;
}

int
privdrop_own_path(const char *path, const struct privdrop_ids *ids)
{
	if (lchown(path, ids->uid, ids->gid) < 0) {
		log_error("cannot give %s to %s: %s", path, ids->name, strerror(errno));
		return -1;
	}
	return 0;
}

int
privdrop_switch(const struct privdrop_ids *ids)
{
	if (setgroups(1, &ids->gid) < 0) {
		log_error("setgroups(%u): %s", (unsigned)ids->gid, strerror(errno));
		return -1;
	}
	if (setgid(ids->gid) < 0) {
		log_error("setgid(%u): %s", (unsigned)ids->gid, strerror(errno));
		return -1;
	}
	if (setuid(ids->uid) < 0) {
		log_error("setuid(%u): %s", (unsigned)ids->uid, strerror(errno));
		return -1;
	}
	if (setuid(0) == 0 || seteuid(0) == 0 || getuid() != ids->uid ||
	    geteuid() != ids->uid || getgid() != ids->gid || getegid() != ids->gid) {
		log_error("privileges were not dropped: uid %u euid %u gid %u egid %u",
		    (unsigned)getuid(), (unsigned)geteuid(), (unsigned)getgid(),
		    (unsigned)getegid());
		return -1;
	}
	return 0;
}
