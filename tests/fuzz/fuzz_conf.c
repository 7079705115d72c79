/*
 * fuzz_conf: the configuration loader (conf) on arbitrary text: libconfig's parser, then
 * our validation of every setting. A load either returns a conf whose invariants hold
 * or fails with at least one "FILE:LINE: ..." message; never both, never neither.
 * "@include" is refused before parsing: it would let the input name any file on this
 * machine (/dev/zero, a FIFO), which tests nothing of ours.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "conf.h"
#include "fuzz.h"
#include "log.h"

static int
has_include(const char *text)
{
	for (const char *p = strchr(text, '@'); p != NULL; p = strchr(p + 1, '@'))
		if (strncasecmp(p, "@include", 8) == 0)
			return 1;
	return 0;
}

static void
check_conf(const struct conf *c)
{
	if (c->hostname == NULL || c->spool_dir == NULL || c->spool_dir[0] != '/' ||
	    c->control_socket == NULL || c->ntransports == 0 ||
	    conf_transport_find(c, "default") == NULL)
		abort();
	for (size_t i = 0; i < c->nroutes; i++) {
		const struct conf_route *r = &c->routes[i];

		if (r->domain == NULL || r->transport < c->transports ||
		    r->transport >= c->transports + c->ntransports)
			abort();
	}
	for (size_t i = 0; i < c->ntransports; i++)
		(void)conf_family_name(c->transports[i].family);
	if (c->queue.retry_max_s < c->queue.retry_min_s)
		abort();
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	log_init("fuzz_conf", LOG_TARGET_STDERR, LOG_LEVEL_ERROR);
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = malloc(size + 1), *errors = NULL;
	struct conf *c;

	if (text == NULL)
		abort();
	memcpy(text, data, size);
	text[size] = '\0';
	if (has_include(text)) {
		free(text);
		return 0;
	}
	c = conf_load_string(text, "fuzz.conf", "/nonexistent", false, &errors);
	if (c != NULL) {
		if (errors != NULL)
			abort();
		check_conf(c);
		/* A reference taken and dropped leaves the conf alive (reload's pattern). */
		conf_free(conf_ref(c));
		check_conf(c);
		conf_free(c);
	} else {
		if (errors == NULL || strncmp(errors, "fuzz.conf", 9) != 0 ||
		    errors[strlen(errors) - 1] != '\n')
			abort();
		free(errors);
	}
	free(text);
	return 0;
}
