/*
 * control: the daemon's side of dualrelayctl. A unix stream socket (0600, in the spool
 * by default) that takes one command line per connection, checks the peer's credentials
 * (root or the daemon's own user, SO_PEERCRED), runs the command against the queue,
 * the health memory, the counters or the routing code, writes the answer and closes.
 *
 * Protocol: the client sends "COMMAND [ARG...]\n"; the answer's first line is "ok" or
 * "error: why", the rest is the text (or JSON) to show.
 * Commands: queue [--json], show ID, flush [ID|DOMAIN], delete ID, hold ID, release ID,
 * stats, health, route DOMAIN, reload.
 */
#ifndef DR_CONTROL_H
#define DR_CONTROL_H

struct event_base;
struct queue;
struct health;
struct stats;
struct dns;
struct smtp_server;
struct spool;
struct conf;
struct control;

struct control_deps {
	struct event_base *base;
	struct queue *queue;
	struct spool *spool;
	struct health *health;
	struct stats *stats;
	struct dns *dns;
	struct smtp_server *server;
	struct conf *const *conf;   /* the daemon's current conf (changes on reload) */
	/* Reloads the configuration; 0 or -1 with *errors (malloc'd) set. */
	int (*reload)(void *arg, char **errors);
	void *reload_arg;
	double started;             /* dr_now() at start */
};

/* Binds path (removing a stale socket first). NULL on failure (logged). */
struct control *control_new(const struct control_deps *deps, const char *path);
void control_free(struct control *c);

#endif
