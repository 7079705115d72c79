/*
 * route: which transport carries mail for a recipient domain (pure). An exact domain
 * route beats a subdomain route (".example.com", longest suffix first), which beats the
 * "default" transport. Domains compare case-insensitively, trailing dot ignored.
 */
#ifndef DR_ROUTE_H
#define DR_ROUTE_H

#include "conf.h"

const struct conf_transport *route_lookup(const struct conf *c, const char *domain);

#endif
