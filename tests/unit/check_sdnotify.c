/*
 * Unit tests for sdnotify.c: a datagram socket of our own stands in for systemd's,
 * bound to a file path and to an abstract name ("@..."); each notification must arrive
 * as exactly the text sent, RELOADING=1 must carry a plausible MONOTONIC_USEC, and an
 * unset NOTIFY_SOCKET, a name of another kind or a socket nobody listens on are
 * handled without a crash.
 */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "log.h"
#include "sdnotify.h"

/* A bound datagram socket standing in for systemd's notify socket; name as in the env. */
static int
listener(char *name, size_t size, bool abstract)
{
	struct sockaddr_un sun;
	socklen_t len;
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	ck_assert_int_ge(fd, 0);
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (abstract) {
		snprintf(name, size, "@dualrelay-check-sdnotify-%ld", (long)getpid());
		memcpy(sun.sun_path + 1, name + 1, strlen(name) - 1);
		len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(name));
	} else {
		snprintf(name, size, "/tmp/check_sdnotify.%ld", (long)getpid());
		unlink(name);
		memcpy(sun.sun_path, name, strlen(name) + 1);
		len = sizeof(sun);
	}
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&sun, len), 0);
	return fd;
}

/* The next datagram, NUL-terminated; fails the test when none comes within 5 s. */
static void
receive(int fd, char *buf, size_t size)
{
	struct timeval tv = { 5, 0 };
	ssize_t n;

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	n = recv(fd, buf, size - 1, 0);
	ck_assert_int_gt(n, 0);
	buf[n] = '\0';
}

START_TEST(test_path_socket)
{
	char name[108], buf[256];
	int fd = listener(name, sizeof(name), false);

	ck_assert_int_eq(sdnotify_to(name, "READY=1\nSTATUS=accepting mail"), 1);
	receive(fd, buf, sizeof(buf));
	ck_assert_str_eq(buf, "READY=1\nSTATUS=accepting mail");

	/* Through the environment, as the daemon calls it. */
	ck_assert_int_eq(setenv("NOTIFY_SOCKET", name, 1), 0);
	ck_assert_int_eq(sdnotify("STOPPING=1"), 1);
	receive(fd, buf, sizeof(buf));
	ck_assert_str_eq(buf, "STOPPING=1");
	unsetenv("NOTIFY_SOCKET");
	close(fd);
	unlink(name);
}
END_TEST

START_TEST(test_abstract_socket)
{
	char name[108], buf[256];
	int fd = listener(name, sizeof(name), true);

	ck_assert_int_eq(sdnotify_to(name, "READY=1"), 1);
	receive(fd, buf, sizeof(buf));
	ck_assert_str_eq(buf, "READY=1");
	close(fd);
}
END_TEST

START_TEST(test_reloading)
{
	char name[108], buf[256];
	int fd = listener(name, sizeof(name), false);
	struct timespec ts;
	unsigned long long before, got = 0;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	before = (unsigned long long)ts.tv_sec * 1000000ull + (unsigned long long)ts.tv_nsec / 1000;
	ck_assert_int_eq(setenv("NOTIFY_SOCKET", name, 1), 0);
	ck_assert_int_eq(sdnotify_reloading(), 1);
	receive(fd, buf, sizeof(buf));
	ck_assert_int_eq(sscanf(buf, "RELOADING=1\nMONOTONIC_USEC=%llu", &got), 1);
	ck_assert(got >= before && got < before + 5000000ull);
	unsetenv("NOTIFY_SOCKET");
	close(fd);
	unlink(name);
}
END_TEST

START_TEST(test_no_socket)
{
	unsetenv("NOTIFY_SOCKET");
	ck_assert_int_eq(sdnotify("READY=1"), 0);
	ck_assert_int_eq(setenv("NOTIFY_SOCKET", "", 1), 0);
	ck_assert_int_eq(sdnotify("READY=1"), 0);
	unsetenv("NOTIFY_SOCKET");
	ck_assert_int_eq(sdnotify_to(NULL, "READY=1"), 0);
	/* Not a unix socket name (systemd also knows vsock:...): refused, not guessed. */
	errno = 0;
	ck_assert_int_eq(sdnotify_to("vsock:2:1234", "READY=1"), -1);
	ck_assert_int_eq(errno, EINVAL);
	/* Too long for sun_path. */
	char longname[200];
	memset(longname, 'a', sizeof(longname) - 1);
	longname[0] = '/';
	longname[sizeof(longname) - 1] = '\0';
	ck_assert_int_eq(sdnotify_to(longname, "READY=1"), -1);
	/* Nobody listening: an error, reported, nothing else. */
	ck_assert_int_eq(sdnotify_to("/nonexistent/notify", "READY=1"), -1);
}
END_TEST

static Suite *
sdnotify_suite(void)
{
	Suite *s = suite_create("sdnotify");
	TCase *tc = tcase_create("sdnotify");
	tcase_add_test(tc, test_path_socket);
	tcase_add_test(tc, test_abstract_socket);
	tcase_add_test(tc, test_reloading);
	tcase_add_test(tc, test_no_socket);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	log_init("check_sdnotify", LOG_TARGET_STDERR, LOG_LEVEL_WARN);
	SRunner *sr = srunner_create(sdnotify_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
