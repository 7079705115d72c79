/*
 * privdrop: giving up root. Started as root, dualrelayd does what needs root (the
 * spool's ownership, listeners on ports below 1024, the control socket), then becomes
 * the configured account for good: supplementary groups, gid and uid, each checked,
 * and a failed setuid(0) as the proof. Nothing here is undone.
 */
#ifndef DR_PRIVDROP_H
#define DR_PRIVDROP_H

#include <stddef.h>
#include <sys/types.h>

struct privdrop_ids {
	uid_t uid;
	gid_t gid;
	char name[64];     /* the user name, for logs */
};

/*
 * Looks up user (and group; NULL: the user's primary group). Returns 0, or -1 with
 * why set to a message (static or in buf of size len).
 */
int privdrop_resolve(const char *user, const char *group, struct privdrop_ids *ids,
    char *buf, size_t len, const char **why);
/*
 * Gives the spool to ids: the directory itself (mode 0700) and everything below it,
 * without following symbolic links or leaving the file system. Returns 0, or -1 (logged).
 */
int privdrop_own_tree(const char *dir, const struct privdrop_ids *ids);
/* One path (a socket, say), not followed if it is a link. 0, or -1 (logged). */
int privdrop_own_path(const char *path, const struct privdrop_ids *ids);
/*
 * setgroups to the one group, setgid, setuid, then checks that root cannot be had
 * back. Returns 0, or -1 (logged): the caller must then exit, never carry on as root.
 */
int privdrop_switch(const struct privdrop_ids *ids);

#endif
