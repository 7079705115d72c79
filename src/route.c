/* route: placeholder until written. */
#include "config.h"
