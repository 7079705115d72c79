/* netaddr: placeholder until written. */
#include "config.h"
