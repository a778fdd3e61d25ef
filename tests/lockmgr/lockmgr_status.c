// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * lockmgr-status: a tiny standalone front end of lockmgr_status(), what
 * `vmfsd --status DEVICE [--json]` will print: the hosts of a volume
 * (slot, name, state, liveness, generation, time since the last beat) and
 * the lock records that are held.  Used by the lockmgr tests.
 *
 *   lockmgr-status [--json] [--watch MS] DEVICE
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bdev/bdev.h"
#include "lockmgr/lockmgr.h"

int main(int argc, char **argv)
{
	struct lockmgr_status *st;
	const char *dev = NULL;
	unsigned long watch = 0;
	struct bdev *bd;
	char *text;
	int i, json = 0, r;

	for (i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--json"))
			json = 1;
		else if (!strcmp(argv[i], "--watch") && i + 1 < argc)
			watch = strtoul(argv[++i], NULL, 10);
		else if (argv[i][0] != '-' && !dev)
			dev = argv[i];
		else {
			fprintf(stderr, "usage: lockmgr-status [--json] [--watch MS] DEVICE\n");
			return 2;
		}
	}
	if (!dev) {
		fprintf(stderr, "usage: lockmgr-status [--json] [--watch MS] DEVICE\n");
		return 2;
	}
	r = bdev_open(dev, BDEV_RDONLY, &bd);
	if (r) {
		fprintf(stderr, "lockmgr-status: %s: %s\n", dev, strerror(-r));
		return 1;
	}
	r = lockmgr_status(bd, (uint32_t)watch, &st);
	if (!r) {
		r = lockmgr_status_format(st, json, &text);
		lockmgr_status_free(st);
	}
	bdev_close(bd);
	if (r) {
		fprintf(stderr, "lockmgr-status: %s: %s\n", dev, strerror(-r));
		return 1;
	}
	fputs(text, stdout);
	free(text);
	return 0;
}
