// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Tests of bdev_rw_many, the batched I/O a journal checkpoint and batched
 * lock changes use: every I/O of a batch lands where it was asked, with
 * its own length, aligned or not (unaligned buffers are bounced), across
 * more I/Os than one ring holds; reads come back the same way; a bad
 * range refuses the whole batch before anything is written.  On a real
 * image file (O_DIRECT), in /var/tmp or $VMFSD_TEST_DIR.  And the
 * asynchronous path's drain waits for its callbacks.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bdev/bdev.h"

#define N 150                   /* more than a ring's depth (64) */
#define IMG_SIZE (16u << 20)

static char path[300];
static struct bdev *bd;

static void setup(void)
{
	const char *base = getenv("VMFSD_TEST_DIR");
	int fd;

	snprintf(path, sizeof(path), "%s/vmfsd-bdev-many-XXXXXX", base ? base : "/var/tmp");
	fd = mkstemp(path);
	cr_assert(fd >= 0, "mkstemp %s: %s", path, strerror(errno));
	cr_assert_eq(ftruncate(fd, IMG_SIZE), 0);
	close(fd);
	cr_assert_eq(bdev_open(path, 0, &bd), 0, "bdev_open %s", path);
}

static void teardown(void)
{
	bdev_close(bd);
	unlink(path);
}

/* Entry I: 512 B to 8 KiB at a distinct place, in a buffer placed as
 * entry A's (odd ones unaligned). */
static void entry(struct bdev_vec *v, int i, int a, uint8_t **mem)
{
	size_t len = 512u * (size_t)(1 + i % 16);

	*mem = bdev_alloc(len + 4096);
	v->buf = *mem + (a % 2 ? 512 * (size_t)(1 + a % 7) : 0);
	v->len = len;
	v->off = (uint64_t)i * 64 * 1024 + (uint64_t)(i % 5) * 512;
}

Test(bdev_many, writes_and_reads_land_where_asked, .init = setup, .fini = teardown)
{
	struct bdev_vec v[N], rv[N];
	uint8_t *mem[N], *rmem[N];
	uint8_t *chk = bdev_alloc(8192);
	int i;

	for (i = 0; i < N; i++) {
		entry(&v[i], i, i, &mem[i]);
		memset(v[i].buf, 0x10 + i % 200, v[i].len);
	}
	cr_assert_eq(bdev_rw_many(bd, 1, v, N), 0);
	for (i = 0; i < N; i++) {
		cr_assert_eq(bdev_pread(bd, chk, v[i].len, v[i].off), 0);
		cr_assert(!memcmp(chk, v[i].buf, v[i].len), "write %d landed wrong", i);
		/* and nothing past its end (the next 512 bytes were never written) */
		cr_assert_eq(bdev_pread(bd, chk, 512, v[i].off + v[i].len), 0);
		cr_assert_eq(chk[0], 0, "write %d ran past its length", i);
	}
	for (i = 0; i < N; i++) {
		entry(&rv[i], i, i + 1, &rmem[i]);      /* the other alignment */
		memset(rv[i].buf, 0xff, rv[i].len);
	}
	cr_assert_eq(bdev_rw_many(bd, 0, rv, N), 0);
	for (i = 0; i < N; i++)
		cr_assert(!memcmp(rv[i].buf, v[i].buf, v[i].len), "read %d differs", i);
	for (i = 0; i < N; i++) {
		bdev_free(mem[i]);
		bdev_free(rmem[i]);
	}
	bdev_free(chk);
}

Test(bdev_many, bad_range_writes_nothing, .init = setup, .fini = teardown)
{
	uint8_t *a = bdev_alloc(4096), *chk = bdev_alloc(4096);
	struct bdev_vec v[3] = {
		{ a, 4096, 0 }, { a, 4096, IMG_SIZE }, { a, 4096, 8192 },
	};

	memset(a, 0x5a, 4096);
	cr_assert_eq(bdev_rw_many(bd, 1, v, 3), -ERANGE);
	cr_assert_eq(bdev_pread(bd, chk, 4096, 0), 0);
	cr_assert_eq(chk[0], 0, "the first write of a refused batch went out");
	v[1].off = 512 * 3 + 1;
	cr_assert_eq(bdev_rw_many(bd, 1, v, 3), -EINVAL);
	bdev_free(a);
	bdev_free(chk);
}

/* bdev_ats_many_block: each sector compared and replaced, the rest of its
 * block written back as it was (an image file writes the whole block);
 * a miscompare writes nothing and returns the sector; a sector that does
 * not start a block is refused. */
Test(bdev_many, ats_block_keeps_the_rest_of_the_block, .init = setup, .fini = teardown)
{
	enum { NB = 70 };       /* more than one ATS batch (64) */
	uint64_t off[NB];
	uint8_t *exp = bdev_alloc(512 * NB), *nv = bdev_alloc(512 * NB),
		*act = bdev_alloc(512 * NB), *blk = bdev_alloc(4096);
	int res[NB], i;

	for (i = 0; i < NB; i++) {
		off[i] = (uint64_t)i * 8192;
		memset(blk, 0xa0 + i % 16, 4096);      /* the sector, then the rest */
		cr_assert_eq(bdev_pwrite(bd, blk, 4096, off[i]), 0);
		memset(exp + 512 * i, i == 3 ? 0 : 0xa0 + i % 16, 512);  /* 3: wrong */
		memset(nv + 512 * i, 0x11 + i, 512);
	}
	cr_assert_eq(bdev_ats_many_block(bd, NB, off, exp, nv, act, res), 0);
	for (i = 0; i < NB; i++) {
		cr_assert_eq(bdev_pread(bd, blk, 4096, off[i]), 0);
		if (i == 3) {
			cr_assert_eq(res[i], -ECANCELED);
			cr_assert_eq(act[512 * i], 0xa0 + i % 16);
			cr_assert_eq(blk[0], 0xa0 + i % 16, "a miscompare wrote");
		} else {
			cr_assert_eq(res[i], 0, "record %d: %d", i, res[i]);
			cr_assert_eq(blk[0], 0x11 + i, "record %d not written", i);
			cr_assert_eq(blk[511], 0x11 + i);
		}
		cr_assert_eq(blk[512], 0xa0 + i % 16, "block %d: the rest changed", i);
		cr_assert_eq(blk[4095], 0xa0 + i % 16, "block %d: the rest changed", i);
	}
	off[0] = 512;
	cr_assert_eq(bdev_ats_many_block(bd, 1, off, exp, nv, act, res), -EINVAL);
	bdev_free(exp);
	bdev_free(nv);
	bdev_free(act);
	bdev_free(blk);
}

/* bdev_aio_drain returns only once every completion callback has returned:
 * its callers free what the callbacks touch (an unmount frees the inodes
 * whose I/O locks the last completion drops).  Each callback here takes
 * 20 ms before it marks itself finished; a drain that counted a request
 * done before its callback ran would return while one still sleeps. */
struct slow_aio {
	struct bdev_aio a;
	_Atomic int *finished;
};

static void slow_cb(struct bdev_aio *a, int res)
{
	struct slow_aio *s = (struct slow_aio *)a;

	cr_assert_eq(res, 0);
	usleep(20 * 1000);
	atomic_fetch_add(s->finished, 1);
}

Test(bdev_many, drain_waits_for_the_callbacks, .init = setup, .fini = teardown)
{
	enum { NA = 4 };
	struct slow_aio s[NA];
	_Atomic int finished = 0;
	uint8_t *buf = bdev_alloc(4096 * NA);
	int i;

	memset(s, 0, sizeof(s));
	for (i = 0; i < NA; i++) {
		s[i].a.cb = slow_cb;
		s[i].a.buf = buf + 4096 * i;
		s[i].a.len = 4096;
		s[i].a.off = (uint64_t)i * 4096;
		s[i].finished = &finished;
		cr_assert_eq(bdev_aio_submit(bd, &s[i].a), 0);
	}
	bdev_aio_drain(bd);
	cr_assert_eq(atomic_load(&finished), NA,
		     "drain returned with %d of %d callbacks finished", atomic_load(&finished), NA);
	bdev_free(buf);
}
