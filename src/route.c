/*
 * route: picks the transport for a recipient domain from the configured routes (see
 * route.h). Pure: it only reads the conf. Route domains are stored lower-case without
 * a trailing dot (conf.c normalises them); the looked-up domain is compared the same
 * way here, without copying it. Domain names compare case-insensitively (RFC 4343).
 */
#include "config.h"

#include <stddef.h>
#include <string.h>
#include <strings.h>

#include "conf.h"
#include "route.h"

/* Length of domain without one trailing dot. */
static size_t
domain_len(const char *domain)
{
	size_t n = strlen(domain);

	if (n > 1 && domain[n - 1] == '.')
		n--;
	return n;
}

/*
 * True when ".suffix" (route domain d, with its dot) covers the domain of length n:
 * "a.example.com" matches ".example.com", "example.com" itself does not.
 */
static bool
suffix_match(const char *domain, size_t n, const char *d)
{
	size_t dn = strlen(d);

	return n > dn && strncasecmp(domain + n - dn, d, dn) == 0;
}

const struct conf_transport *
route_lookup(const struct conf *c, const char *domain)
{
	const struct conf_route *best = NULL;
	size_t n = domain_len(domain), best_len = 0;

	for (size_t i = 0; i < c->nroutes; i++) {
		const struct conf_route *r = &c->routes[i];
		size_t rn = strlen(r->domain);

		if (r->domain[0] != '.') {
			if (rn == n && strncasecmp(domain, r->domain, n) == 0)
				return r->transport;
		} else if (suffix_match(domain, n, r->domain) && rn > best_len) {
			best = r;
			best_len = rn;
		}
	}
	if (best != NULL)
		return best->transport;
	return conf_transport_find(c, "default");
}
