// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Tests of bdev's I/O buffers (bdev_alloc/bdev_free): every buffer is
 * aligned for O_DIRECT and holds what was asked; those of up to 4 MiB
 * (rounded up to a power of two, 4 KiB at least) are reused after
 * bdev_free instead of being handed back to the allocator, within a
 * bounded total that what is freed now may take from what an earlier
 * workload left; larger ones and buffers bdev did not allocate for I/O
 * pass straight to free().
 */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bdev/bdev.h"

#define MIB (1u << 20)

static void check_buf(void *p, size_t len)
{
	cr_assert_not_null(p);
	cr_assert_eq((uintptr_t)p % BDEV_ALIGN, 0, "buffer %p not aligned", p);
	memset(p, 0xa5, len);   /* the whole length is usable */
}

Test(bdev_buf, aligned_and_usable)
{
	static const size_t sizes[] = { 0, 512, 4096, 65535, 65536, 65537, MIB - 512, MIB,
					MIB + 4096, 3 * MIB, 4 * MIB, 4 * MIB + 512, 9 * MIB };
	size_t i;

	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		void *p = bdev_alloc(sizes[i]);

		check_buf(p, sizes[i]);
		bdev_free(p);
	}
	bdev_free(NULL);
}

Test(bdev_buf, large_buffers_are_reused)
{
	void *a = bdev_alloc(MIB), *b;

	check_buf(a, MIB);
	bdev_free(a);
	/* any request of the same class gets the cached buffer back */
	b = bdev_alloc(MIB - 4096);
	cr_assert_eq(a, b, "a freed 1 MiB buffer was not reused");
	check_buf(b, MIB);
	bdev_free(b);
	b = bdev_alloc(MIB / 2 + 1);
	cr_assert_eq(a, b, "a request rounded up to 1 MiB did not get the cached buffer");
	bdev_free(b);
	/* the 4 KiB class of every small data read, and of the commit's
	 * bounce buffers for a block from its second sector on (3.5 KiB) */
	a = bdev_alloc(4096);
	check_buf(a, 4096);
	bdev_free(a);
	b = bdev_alloc(4096);
	cr_assert_eq(a, b, "a freed 4 KiB buffer was not reused");
	bdev_free(b);
	b = bdev_alloc(4096 - 512);
	cr_assert_eq(a, b, "a 3.5 KiB request did not get the cached 4 KiB buffer");
	check_buf(b, 4096);
	bdev_free(b);
	cr_assert_eq(bdev_buf_cached(512), 1, "a freed 3.5 KiB request's buffer was not kept");
}

Test(bdev_buf, plain_malloc_is_not_cached)
{
	/* malloc'd memory that reaches bdev_free (not from bdev_alloc) must
	 * never come back from bdev_alloc: it is not aligned */
	void *m = malloc(MIB), *p;

	cr_assert_not_null(m);
	bdev_free(m);
	p = bdev_alloc(MIB);
	check_buf(p, MIB);
	bdev_free(p);
}

/* Takes N 1 MiB buffers at once: each aligned, usable to its last byte
 * and distinct from the others held; then frees them all. */
static void hold_and_free(void **v, int n)
{
	int i, j;

	for (i = 0; i < n; i++) {
		v[i] = bdev_alloc(MIB);
		cr_assert_not_null(v[i]);
		cr_assert_eq((uintptr_t)v[i] % BDEV_ALIGN, 0);
		((char *)v[i])[0] = ((char *)v[i])[MIB - 1] = 1;
		for (j = 0; j < i; j++)
			cr_assert_neq(v[i], v[j]);
	}
	for (i = 0; i < n; i++)
		bdev_free(v[i]);
}

Test(bdev_buf, many_held_at_once)
{
	/* 96 MiB, more than the cache keeps, twice: the second round takes
	 * cached and fresh buffers mixed. */
	void *v[96];

	hold_and_free(v, 96);
	hold_and_free(v, 96);
}

Test(bdev_buf, a_full_cache_makes_room)
{
	/* 1 MiB writes fill the cache; the commit's 4 KiB buffers that follow
	 * must still be kept (left to glibc, every free trimmed its arena:
	 * a madvise and a TLB shootdown per commit block). */
	void *v[96], *small[8];
	size_t big;
	int i;

	hold_and_free(v, 96);
	big = bdev_buf_cached(MIB);
	cr_assert_eq(big, 64, "the cache keeps 64 MiB: %zu 1 MiB buffers", big);
	for (i = 0; i < 8; i++)
		small[i] = bdev_alloc(4096);
	for (i = 0; i < 8; i++)
		bdev_free(small[i]);
	cr_assert_eq(bdev_buf_cached(4096), 8, "4 KiB buffers freed into a full cache were dropped");
	cr_assert_eq(bdev_buf_cached(MIB), 63, "one 1 MiB buffer makes room for eight of 4 KiB");
	for (i = 0; i < 8; i++)
		cr_assert_eq(bdev_alloc(4096), small[7 - i], "a cached 4 KiB buffer was not reused");
	cr_assert_eq(bdev_buf_cached(4096), 0);
	for (i = 0; i < 8; i++)
		bdev_free(small[i]);
}
