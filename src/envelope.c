/* envelope: placeholder until written. */
#include "config.h"
