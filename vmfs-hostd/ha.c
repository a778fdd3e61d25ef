// SPDX-License-Identifier: GPL-2.0-or-later
/* HA engine (docs/ha.md): filled in below. */
#include "ops.h"
