/*
 * localaddr: a time-limited snapshot of this host's addresses (see localaddr.h). Owns the
 * snapshot array and the decision when to take the next one; the kernel is reached only
 * through the fetch function, so everything else here is testable without it.
 */
#include "config.h"

#include <errno.h>
#include <ifaddrs.h>
#include <stdlib.h>
#include <string.h>

#include "localaddr.h"
#include "log.h"
#include "util.h"

struct localaddr_cache {
	localaddr_fetch_fn fetch;  /* takes a fresh list (getifaddrs, or a test's) */
	void *fetch_arg;           /* borrowed, passed to fetch */
	struct netaddr *addrs;     /* owned: the snapshot, NULL when none or empty */
	size_t naddrs;
	bool have;                 /* a snapshot was taken at least once */
	bool tried;                /* a fetch was attempted at least once (taken_at valid) */
	double taken_at;           /* when the last fetch was attempted, success or not */
	bool failing;              /* the last fetch failed: logged, not logged again */
};

size_t
localaddr_from_ifaddrs(const struct ifaddrs *list, struct netaddr **out)
{
	const struct ifaddrs *ifa;
	size_t n = 0, cap = 0;
	struct netaddr a;

	*out = NULL;
	for (ifa = list; ifa != NULL; ifa = ifa->ifa_next) {
		if (netaddr_from_ip_sockaddr(&a, ifa->ifa_addr) == -1)
			continue; /* no address, or AF_PACKET (one per link, not an IP address) */
		*out = xgrow(*out, sizeof(**out), n + 1, &cap);
		(*out)[n++] = a;
	}
	return n;
}

bool
localaddr_match(const struct netaddr *addrs, size_t n, const struct netaddr *a)
{
	for (size_t i = 0; i < n; i++)
		if (netaddr_equal(&addrs[i], a))
			return true;
	return false;
}

int
localaddr_fetch_system(void *arg, struct netaddr **out, size_t *n)
{
	struct ifaddrs *ifs;

	(void)arg;
	if (getifaddrs(&ifs) == -1)
		return -1;
	*n = localaddr_from_ifaddrs(ifs, out);
	freeifaddrs(ifs);
	return 0;
}

struct localaddr_cache *
localaddr_new_with(localaddr_fetch_fn fetch, void *arg)
{
	struct localaddr_cache *c = xcalloc(1, sizeof(*c));

	c->fetch = fetch;
	c->fetch_arg = arg;
	return c;
}

struct localaddr_cache *
localaddr_new(void)
{
	return localaddr_new_with(localaddr_fetch_system, NULL);
}

void
localaddr_free(struct localaddr_cache *c)
{
	if (c == NULL)
		return;
	free(c->addrs);
	free(c);
}

static bool
is_fresh(const struct localaddr_cache *c, double now)
{
	/* A clock that went back makes the age meaningless: take a new snapshot. */
	return c->tried && now >= c->taken_at && now - c->taken_at < LOCALADDR_TTL_S;
}

/*
 * Replaces the snapshot, or keeps the old one when the kernel cannot be asked (EMFILE,
 * ENOBUFS under load): an address list a second old is a better answer than none.
 */
static void
refresh(struct localaddr_cache *c, double now)
{
	struct netaddr *addrs = NULL;
	size_t n = 0;

	/* A failure counts as an attempt too: retrying on every lookup would repeat it. */
	c->tried = true;
	c->taken_at = now;
	if (c->fetch(c->fetch_arg, &addrs, &n) == -1) {
		if (!c->failing)
			log_warn("cannot list this host's addresses (getifaddrs): %s; %s",
			    strerror(errno), c->have ? "using the previous list until it works "
			    "again" : "no MX address is taken as this host's until it works");
		c->failing = true;
		return;
	}
	if (c->failing)
		log_info("listing this host's addresses works again (%zu addresses)", n);
	c->failing = false;
	free(c->addrs);
	c->addrs = addrs;
	c->naddrs = n;
	c->have = true;
}

bool
localaddr_is_local(struct localaddr_cache *c, const struct netaddr *a, double now)
{
	if (!is_fresh(c, now))
		refresh(c, now);
	return localaddr_match(c->addrs, c->naddrs, a);
}
