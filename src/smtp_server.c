/* smtp_server: placeholder until written. */
#include "config.h"
