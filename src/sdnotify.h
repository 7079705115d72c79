/*
 * sdnotify: the systemd readiness protocol (sd_notify(3), Type=notify) without
 * libsystemd: one datagram of "KEY=VALUE" lines to the AF_UNIX socket named by
 * $NOTIFY_SOCKET (a path, or "@name" for the abstract namespace). Without the variable
 * every call is a no-op, so the daemon calls these unconditionally.
 */
#ifndef DR_SDNOTIFY_H
#define DR_SDNOTIFY_H

#include <stdbool.h>

/*
 * Sends state (e.g. "READY=1\nSTATUS=accepting mail") to $NOTIFY_SOCKET. Returns 1
 * when sent, 0 when the variable is unset or empty, -1 on failure (errno set; not
 * logged: the caller decides whether it matters).
 */
int sdnotify(const char *state);
/* The same to an explicit socket name (tests). */
int sdnotify_to(const char *socket_name, const char *state);
/* "RELOADING=1\nMONOTONIC_USEC=N" (systemd's Type=notify-reload needs the clock). */
int sdnotify_reloading(void);

#endif
