/*
 * dualrelayctl: the operator's command line for a running dualrelayd. Sends one command
 * over the daemon's control socket (found through the configuration file, or given
 * with -s) and prints the answer. Exit status: 0 when the daemon says "ok", 1 when it
 * answers with an error, 75 (EX_TEMPFAIL) when the daemon cannot be reached, 64 for
 * usage errors.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sysexits.h>
#include <unistd.h>

#include <libconfig.h>
#include <libgen.h>

#include "conf.h"
#include "util.h"

static void
usage(FILE *out)
{
	fprintf(out,
	    "usage: dualrelayctl [-c config | -s socket] command [args]\n"
	    "commands:\n"
	    "  queue [--json]        list queued messages and each recipient's state\n"
	    "  show ID               one message: envelope, recipients, headers\n"
	    "  flush [ID|DOMAIN]     retry deferred recipients now\n"
	    "  delete ID             remove a message from the queue\n"
	    "  hold ID | release ID  stop / resume delivery of a message\n"
	    "  stats                 counters since start\n"
	    "  health                the address family health table\n"
	    "  route DOMAIN          explain how mail to DOMAIN would be delivered now\n"
	    "  reload                reload the configuration\n");
}

/*
 * The control socket named by a configuration file. A file with errors must not keep the
 * operator from reaching the daemon (to reload a fixed file, say): when it does not load
 * cleanly, read just spool_dir / control_socket from it, as the daemon would resolve them.
 */
static char *
socket_from_config(const char *path)
{
	char *errors = NULL;
	struct conf *c = conf_load(path, false, &errors);
	if (c != NULL) {
		char *sock = xstrdup(c->control_socket);
		conf_free(c);
		free(errors);
		return sock;
	}
	config_t cfg;
	const char *spool = NULL, *control = NULL;
	char *sock = NULL, *dircopy = xstrdup(path), *dir = dirname(dircopy);
	config_init(&cfg);
	if (config_read_file(&cfg, path) == CONFIG_TRUE) {
		config_lookup_string(&cfg, "spool_dir", &spool);
		config_lookup_string(&cfg, "control_socket", &control);
		if (control)
			sock = control[0] == '/' ? xstrdup(control) : xasprintf("%s/%s", dir, control);
		else if (spool)
			sock = spool[0] == '/' ? xasprintf("%s/control", spool) :
			    xasprintf("%s/%s/control", dir, spool);
		else
			sock = xstrdup(CONF_DEFAULT_SPOOL_DIR "/control");
	}
	if (sock == NULL)
		fprintf(stderr, "dualrelayctl: %s", errors ? errors : "configuration error\n");
	config_destroy(&cfg);
	free(dircopy);
	free(errors);
	return sock;
}

static int
connect_control(const char *path)
{
	struct sockaddr_un sun;
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sun.sun_path)) {
		fprintf(stderr, "dualrelayctl: socket path too long: %s\n", path);
		return -1;
	}
	dr_strlcpy(sun.sun_path, path, sizeof(sun.sun_path));
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
		fprintf(stderr, "dualrelayctl: cannot reach dualrelayd at %s: %s\n", path,
		    strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	return fd;
}

static int
write_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, buf, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

int
main(int argc, char **argv)
{
	const char *conf_path = SYSCONFDIR "/dualrelay.conf", *sock_path = NULL;
	int ch;

	while ((ch = getopt(argc, argv, "+c:s:h")) != -1) {
		switch (ch) {
		case 'c':
			conf_path = optarg;
			break;
		case 's':
			sock_path = optarg;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return EX_USAGE;
		}
	}
	if (optind >= argc) {
		usage(stderr);
		return EX_USAGE;
	}
	char *owned = NULL;
	if (sock_path == NULL && (sock_path = owned = socket_from_config(conf_path)) == NULL)
		return EX_CONFIG;

	/* The command line: words joined by spaces, no newlines inside. */
	size_t len = 0;
	for (int i = optind; i < argc; i++)
		len += strlen(argv[i]) + 1;
	char *line = xmalloc(len + 1);
	line[0] = '\0';
	for (int i = optind; i < argc; i++) {
		if (strpbrk(argv[i], "\r\n")) {
			fprintf(stderr, "dualrelayctl: bad argument\n");
			return EX_USAGE;
		}
		strcat(line, argv[i]);
		strcat(line, i + 1 < argc ? " " : "\n");
	}
	int fd = connect_control(sock_path);
	free(owned);
	if (fd < 0) {
		free(line);
		return EX_TEMPFAIL;
	}
	if (write_all(fd, line, strlen(line)) < 0) {
		fprintf(stderr, "dualrelayctl: cannot send the command: %s\n", strerror(errno));
		free(line);
		close(fd);
		return EX_TEMPFAIL;
	}
	free(line);

	/* The first line is the status; the rest goes to stdout as it is. */
	char buf[8192], status[512];
	size_t slen = 0;
	bool in_status = true;
	ssize_t n;
	while ((n = read(fd, buf, sizeof(buf))) > 0 || (n < 0 && errno == EINTR)) {
		for (ssize_t i = 0; i < n; i++) {
			if (!in_status) {
				fwrite(buf + i, 1, (size_t)(n - i), stdout);
				break;
			}
			if (buf[i] == '\n') {
				status[slen] = '\0';
				in_status = false;
			} else if (slen + 1 < sizeof(status))
				status[slen++] = buf[i];
		}
	}
	close(fd);
	if (in_status) {
		fprintf(stderr, "dualrelayctl: no answer from dualrelayd\n");
		return EX_TEMPFAIL;
	}
	if (strcmp(status, "ok") != 0) {
		fprintf(stderr, "dualrelayctl: %s\n", status);
		return 1;
	}
	return 0;
}
