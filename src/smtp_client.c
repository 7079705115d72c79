/* smtp_client: placeholder until written. */
#include "config.h"
