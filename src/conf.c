/* conf: placeholder until written. */
#include "config.h"
