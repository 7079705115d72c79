/* smtp_proto: placeholder until written. */
#include "config.h"
