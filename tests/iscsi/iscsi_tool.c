// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * iscsi_tool: the bdev-level probes the iSCSI tests run inside a host's
 * network namespace, each process being its own initiator (its own I_T
 * nexus to the target):
 *
 *   iscsi_tool hammer URL SECTOR N TAG   N increments of a 64-bit counter in
 *                                         SECTOR by ATS (COMPARE AND WRITE),
 *                                         retrying on miscompare; prints
 *                                         "done N retries R"
 *   iscsi_tool read URL SECTOR            prints the counter
 *   iscsi_tool caw URL SECTOR             one ATS with a wrong expectation
 *                                         must miscompare (-ECANCELED) and
 *                                         report the sector's content
 *   iscsi_tool pr URL                     prints registered keys and holder
 *   iscsi_tool write URL SECTOR BYTE [KEY] writes one sector of BYTE, after
 *                                         registering KEY when given; prints
 *                                         "ok" or the error
 *   iscsi_tool preempt URL MYKEY VICTIM   registers MYKEY, PREEMPTs VICTIM
 *   iscsi_tool bench URL                  CAW latency (prints microseconds)
 *
 * Each hammer write is unique (the tag and the count are in it), the
 * condition under which "current == new" would be recognisable; the
 * counter is the first 8 bytes.  Exit 0 on success, 1 on failure.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bdev/bdev.h"

static uint64_t get64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, 8);
	return v;
}

static int hammer(struct bdev *bd, uint64_t off, long n, const char *tag)
{
	uint8_t *cur = bdev_alloc(3 * 512), *nv = cur + 512, *act = nv + 512;
	long done = 0, retries = 0;
	int r;

	/* All initiators log in first (about a second each), then start
	 * together at the wall-clock time the test gave, so they overlap. */
	if (getenv("ISCSI_TOOL_START")) {
		double t = atof(getenv("ISCSI_TOOL_START"));
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		while (ts.tv_sec + ts.tv_nsec / 1e9 < t) {
			usleep(1000);
			clock_gettime(CLOCK_REALTIME, &ts);
		}
	}
	r = bdev_pread(bd, cur, 512, off);
	if (r)
		goto out;
	while (done < n) {
		uint64_t c = get64(cur) + 1;

		memset(nv, 0, 512);
		memcpy(nv, &c, 8);
		snprintf((char *)nv + 8, 504, "%s %ld", tag, done);
		r = bdev_ats(bd, off, cur, nv, act);
		if (r == -ECANCELED) {
			retries++;
			memcpy(cur, act, 512);
			continue;
		}
		if (r)
			goto out;
		memcpy(cur, nv, 512);
		done++;
	}
	printf("done %ld retries %ld\n", done, retries);
out:
	if (r)
		fprintf(stderr, "iscsi_tool: hammer: %s after %ld\n", strerror(-r), done);
	bdev_free(cur);
	return r ? 1 : 0;
}

static double now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

int main(int argc, char **argv)
{
	struct bdev *bd;
	uint64_t off = 0;
	int r, rc = 1;

	if (argc < 3) {
		fprintf(stderr, "usage: iscsi_tool hammer|read|caw|pr|write|bench URL [ARGS]\n");
		return 2;
	}
	if (argc > 3 && strcmp(argv[1], "preempt"))
		off = strtoull(argv[3], NULL, 0) * 512;
	r = bdev_open(argv[2], !strcmp(argv[1], "read") || !strcmp(argv[1], "pr") ?
		      BDEV_RDONLY : 0, &bd);
	if (r) {
		const char *h = bdev_open_hint(argv[2], r);

		fprintf(stderr, "iscsi_tool: %s: %s\n", argv[2], h ? h : strerror(-r));
		return 1;
	}
	if (!strcmp(argv[1], "hammer") && argc == 6) {
		rc = hammer(bd, off, atol(argv[4]), argv[5]);
	} else if (!strcmp(argv[1], "read") && argc == 4) {
		uint8_t *b = bdev_alloc(512);

		r = bdev_pread(bd, b, 512, off);
		if (!r)
			printf("%" PRIu64 "\n", get64(b));
		rc = !!r;
		bdev_free(b);
	} else if (!strcmp(argv[1], "caw") && argc == 4) {
		uint8_t *b = bdev_alloc(3 * 512), *bad = b + 512, *act = bad + 512;

		r = bdev_pread(bd, b, 512, off);
		memcpy(bad, b, 512);
		bad[7] ^= 0x5a;
		if (!r)
			r = bdev_ats(bd, off, bad, bad, act);
		rc = !(r == -ECANCELED && !memcmp(act, b, 512));
		printf("caw with a wrong expectation: %s, actual %s\n", strerror(-r),
		       memcmp(act, b, 512) ? "differs" : "reported");
		if (!rc) {
			r = bdev_pread(bd, act, 512, off);
			rc = r || memcmp(act, b, 512);  /* nothing was written */
		}
		bdev_free(b);
	} else if (!strcmp(argv[1], "pr") && argc == 3) {
		uint64_t keys[64], holder;
		unsigned n, i;

		r = bdev_pr_read(bd, keys, 64, &n, &holder);
		if (!r) {
			printf("keys");
			for (i = 0; i < n && i < 64; i++)
				printf(" %" PRIx64, keys[i]);
			printf("\nholder %" PRIx64 "\n", holder);
		}
		rc = !!r;
	} else if (!strcmp(argv[1], "write") && (argc == 5 || argc == 6)) {
		uint8_t *b = bdev_alloc(512);

		memset(b, (int)strtol(argv[4], NULL, 0), 512);
		r = argc == 6 ? bdev_pr_register(bd, strtoull(argv[5], NULL, 16)) : 0;
		if (!r)
			r = bdev_pwrite(bd, b, 512, off);
		if (!r)
			r = bdev_flush(bd);
		printf("%s\n", r ? strerror(-r) : "ok");
		rc = !!r;
		bdev_free(b);
	} else if (!strcmp(argv[1], "preempt") && argc == 5) {
		uint64_t mine = strtoull(argv[3], NULL, 16);

		r = bdev_pr_register(bd, mine);
		if (!r)
			r = bdev_pr_preempt(bd, mine, strtoull(argv[4], NULL, 16));
		printf("%s\n", r ? strerror(-r) : "ok");
		rc = !!r;
	} else if (!strcmp(argv[1], "bench")) {
		uint8_t *b = bdev_alloc(1024);
		double t0, best = 1e12, sum = 0;
		int i, n = 200;

		r = bdev_pread(bd, b, 512, off);
		for (i = 0; i < n && !r; i++) {
			memcpy(b + 512, b, 512);
			b[512] ^= 1;
			t0 = now_us();
			r = bdev_ats(bd, off, b, b + 512, NULL);
			t0 = now_us() - t0;
			sum += t0;
			if (t0 < best)
				best = t0;
			memcpy(b, b + 512, 512);
		}
		if (!r)
			printf("caw_us mean %.0f min %.0f\n", sum / n, best);
		rc = !!r;
		bdev_free(b);
	} else {
		fprintf(stderr, "iscsi_tool: bad arguments\n");
		rc = 2;
	}
	bdev_close(bd);
	return rc;
}
