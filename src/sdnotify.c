/*
 * sdnotify: the sender side of sd_notify(3) (see sdnotify.h). Each call opens a
 * datagram socket, sends once and closes it: the notifications are rare (start,
 * reload, stop) and a socket kept open would be one more descriptor to leak across
 * the privilege drop and reload. The socket of systemd's notify service is writable
 * by every user, so this keeps working after the daemon left root.
 */
#include "config.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "sdnotify.h"

int
sdnotify_to(const char *name, const char *state)
{
	struct sockaddr_un sun;
	size_t nlen, len = strlen(state);
	socklen_t salen;
	ssize_t n;
	int fd, saved;

	if (name == NULL || name[0] == '\0')
		return 0;
	nlen = strlen(name);
	/* A path or "@abstract"; anything else (vsock, "/" missing) is not ours to read. */
	if ((name[0] != '/' && name[0] != '@') || nlen >= sizeof(sun.sun_path)) {
		errno = EINVAL;
		return -1;
	}
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	memcpy(sun.sun_path, name, nlen);
	if (name[0] == '@')
		sun.sun_path[0] = '\0'; /* abstract: the length, not a NUL, ends the name */
	salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + nlen +
	    (name[0] == '/' ? 1 : 0));
	if ((fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)) < 0)
		return -1;
	n = sendto(fd, state, len, MSG_NOSIGNAL, (struct sockaddr *)&sun, salen);
	saved = errno;
	close(fd);
	if (n < 0 || (size_t)n != len) {
		errno = n < 0 ? saved : EMSGSIZE;
		return -1;
	}
	return 1;
}

int
sdnotify(const char *state)
{
	return sdnotify_to(getenv("NOTIFY_SOCKET"), state);
}

int
sdnotify_reloading(void)
{
	struct timespec ts;
	char msg[96];

	clock_gettime(CLOCK_MONOTONIC, &ts);
	snprintf(msg, sizeof(msg), "RELOADING=1\nMONOTONIC_USEC=%llu",
	    (unsigned long long)ts.tv_sec * 1000000ull + (unsigned long long)ts.tv_nsec / 1000ull);
	return sdnotify(msg);
}
