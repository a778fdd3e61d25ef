// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Unit tests of format/: the layout computation (for volumes from 1 GiB to
 * 64 TiB, with the smallest and the default block size), the encode/decode
 * round trip of every on-disk structure, and the verifiers: every single-bit
 * flip in checksummed bytes, a wrong self block number, a wrong magic and
 * the structural checks (bitmap counts, directory entries, region overlap)
 * must all be refused, because vmfsd and fsck trust nothing else.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "format/format.h"
#include "format/maptree.h"

#define KiB (1ull << 10)
#define MiB (1ull << 20)
#define GiB (1ull << 30)
#define TiB (1ull << 40)

static const uint8_t test_uuid[16] = {
	0x10, 0x32, 0x54, 0x76, 0x98, 0xba, 0x4c, 0xde,
	0x8f, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd,
};

static int layout(uint64_t dev, uint32_t bs, struct vmfsd_sb *sb)
{
	struct vmfsd_mkfs_params p = {
		.device_size = dev,
		.block_size = bs,
		.label = "unit",
		.uuid = test_uuid,
		.now = 1700000000,
	};

	return vmfsd_layout_compute(&p, sb);
}

/* Block-map capacity in pool units of an inode whose map has HEIGHT levels
 * of 1008-slot nodes below the 728 root slots. */
static uint64_t map_capacity(unsigned height)
{
	uint64_t n = VMFSD_MAP_ROOT_SLOTS;

	while (height--)
		n *= VMFSD_MAP_NODE_SLOTS;
	return n;
}

/* ------------------------------------------------------------------ */
/* Layout                                                              */
/* ------------------------------------------------------------------ */

struct layout_case {
	uint64_t dev;
	uint32_t bs;
};

ParameterizedTestParameters(layout, sizes)
{
	static struct layout_case cases[] = {
		{ 1 * GiB, 1 * MiB }, { 1 * GiB, 64 * KiB },
		{ 64 * GiB, 1 * MiB }, { 64 * GiB, 64 * KiB },
		{ 15 * TiB, 1 * MiB }, { 15 * TiB, 64 * KiB },
		{ 64 * TiB, 1 * MiB }, { 64 * TiB, 64 * KiB },
		/* Odd sizes: not a multiple of the block size or of 4 KiB. */
		{ 1 * GiB + 12345, 1 * MiB }, { 300 * GiB + 4096 * 7, 64 * MiB },
	};

	return cr_make_param_array(struct layout_case, cases,
				   sizeof(cases) / sizeof(cases[0]));
}

struct region {
	uint64_t start, end;
	const char *name;
};

static int region_cmp(const void *a, const void *b)
{
	const struct region *x = a, *y = b;

	return x->start < y->start ? -1 : x->start > y->start;
}

ParameterizedTest(struct layout_case *c, layout, sizes)
{
	struct vmfsd_sb sb, back;
	struct region r[9];
	uint8_t *blk = calloc(1, VMFSD_META_BLOCK);
	uint64_t file_units;
	unsigned i, h;

	cr_assert_eq(layout(c->dev, c->bs, &sb), 0, "layout %llu/%u",
		     (unsigned long long)c->dev, c->bs);
	cr_assert_eq(vmfsd_sb_check_layout(&sb), 0);
	cr_assert_eq(sb.block_size, c->bs);
	cr_assert_eq(sb.max_hosts, VMFSD_DEF_MAX_HOSTS);
	cr_assert_eq(sb.root_ino, VMFSD_ROOT_INO);
	cr_assert_eq(sb.rc_bits, VMFSD_RC_BITS);
	cr_assert_eq(sb.data_off % sb.block_size, 0);
	cr_assert_eq(sb.backup_blocknr, (c->dev & ~4095ull) / VMFSD_META_BLOCK - 1);
	cr_assert(sb.block_count >= 16);
	cr_assert(sb.block_count <= VMFSD_MAP_PBLK_MASK);
	cr_assert(sb.sub_count <= VMFSD_MAP_PBLK_MASK);
	cr_assert_eq(sb.ibm_count, (sb.inode_count + VMFSD_RC_BITS - 1) / VMFSD_RC_BITS);
	cr_assert_eq(sb.sbm_count, (sb.sub_count + VMFSD_RC_BITS - 1) / VMFSD_RC_BITS);
	cr_assert_eq(sb.dbm_count, (sb.block_count + VMFSD_RC_BITS - 1) / VMFSD_RC_BITS);
	/* Most of a large volume is data: metadata under 1/8 beyond 64 GiB. */
	if (c->dev >= 64 * GiB)
		cr_assert(sb.block_count * sb.block_size > c->dev / 8 * 7);

	/* Regions, computed here independently of check_layout. */
	r[0] = (struct region){ 0, VMFSD_META_BLOCK, "sb" };
	r[1] = (struct region){ sb.hb_off, sb.hb_off + sb.max_hosts * 4096ull, "hb" };
	r[2] = (struct region){ sb.journal_off,
				sb.journal_off + sb.max_hosts * sb.journal_size, "journal" };
	r[3] = (struct region){ sb.ibm_off, sb.ibm_off + sb.ibm_count * 4096ull, "ibm" };
	r[4] = (struct region){ sb.sbm_off, sb.sbm_off + sb.sbm_count * 4096ull, "sbm" };
	r[5] = (struct region){ sb.dbm_off, sb.dbm_off + sb.dbm_count * 4096ull, "dbm" };
	r[6] = (struct region){ sb.itable_off, sb.itable_off + sb.inode_count * 4096, "itable" };
	r[7] = (struct region){ sb.sub_off, sb.sub_off + sb.sub_count * 4096, "sub" };
	r[8] = (struct region){ sb.data_off,
				sb.data_off + sb.block_count * (uint64_t)sb.block_size, "data" };
	for (i = 0; i < 9; i++) {
		cr_assert(r[i].end > r[i].start, "%s empty", r[i].name);
		cr_assert_eq(r[i].start % VMFSD_META_BLOCK, 0, "%s unaligned", r[i].name);
	}
	qsort(r, 9, sizeof(r[0]), region_cmp);
	for (i = 1; i < 9; i++)
		cr_assert(r[i].start >= r[i - 1].end, "%s overlaps %s", r[i].name,
			  r[i - 1].name);
	cr_assert(r[8].end <= sb.backup_blocknr * VMFSD_META_BLOCK, "backup sb overlaps %s",
		  r[8].name);
	cr_assert((sb.backup_blocknr + 1) * VMFSD_META_BLOCK <= c->dev);

	/* A file of 64 TiB fits a block map of height <= 4, both in file
	 * blocks and in 4 KiB sub-block units (the worst case). */
	file_units = 64 * TiB / sb.block_size;
	for (h = 0; h <= VMFSD_MAP_MAX_HEIGHT && map_capacity(h) < file_units; h++)
		;
	cr_assert(h <= VMFSD_MAP_MAX_HEIGHT, "64 TiB needs height %u", h);
	cr_assert(map_capacity(VMFSD_MAP_MAX_HEIGHT) >= 64 * TiB / VMFSD_SUB_BLOCK_SIZE);

	/* And the superblock survives the disk, at both its places. */
	vmfsd_sb_encode(&sb, sb.backup_blocknr, blk);
	cr_assert_eq(vmfsd_sb_decode(blk, sb.backup_blocknr, &back), 0);
	cr_assert_eq(back.data_off, sb.data_off);
	cr_assert_eq(back.block_count, sb.block_count);
	free(blk);
}

Test(layout, map_height_numbers)
{
	/* The numbers the design relies on. */
	cr_assert_eq(VMFSD_MAP_ROOT_SLOTS, 728);
	cr_assert_eq(VMFSD_MAP_NODE_SLOTS, 1008);
	cr_assert_eq(VMFSD_MAP_MAX_HEIGHT, 4);
	/* 64 KiB blocks: 2^30 blocks for 64 TiB, height 3 suffices. */
	cr_assert(map_capacity(2) < 64 * TiB / (64 * KiB));
	cr_assert(map_capacity(3) >= 64 * TiB / (64 * KiB));
	/* 1 MiB blocks: height 2. */
	cr_assert(map_capacity(2) >= 64 * TiB / MiB);
}

Test(layout, too_small)
{
	static const uint64_t sizes[] = { 0, 4096, 1 * MiB, 64 * MiB, 128 * MiB };
	struct vmfsd_sb sb;
	uint64_t lo = 0, hi = 64 * GiB / 4096, mid;
	unsigned i;

	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
		cr_assert_eq(layout(sizes[i], 0, &sb), -ENOSPC, "size %llu",
			     (unsigned long long)sizes[i]);
	/* There is a smallest size, and everything below it is -ENOSPC. */
	while (hi - lo > 1) {
		mid = lo + (hi - lo) / 2;
		if (layout(mid * 4096, 0, &sb))
			lo = mid;
		else
			hi = mid;
	}
	cr_assert_eq(layout(hi * 4096, 0, &sb), 0);
	cr_assert_eq(vmfsd_sb_check_layout(&sb), 0);
	cr_assert_eq(layout(hi * 4096 - 4096, 0, &sb), -ENOSPC);
	cr_assert_eq(layout(hi * 4096 - 1, 0, &sb), -ENOSPC);
	cr_assert(hi * 4096 < 512 * MiB, "minimum volume %llu bytes",
		  (unsigned long long)hi * 4096);
}

Test(layout, bad_params)
{
	struct vmfsd_mkfs_params p = { .device_size = 64 * GiB };
	struct vmfsd_sb sb;
	char label[VMFSD_LABEL_MAX + 2];

	p.block_size = 3 * MiB;
	cr_assert_eq(vmfsd_layout_compute(&p, &sb), -EINVAL);
	p.block_size = 32 * KiB;
	cr_assert_eq(vmfsd_layout_compute(&p, &sb), -EINVAL);
	p.block_size = 128 * MiB;
	cr_assert_eq(vmfsd_layout_compute(&p, &sb), -EINVAL);
	p.block_size = 0;
	p.max_hosts = VMFSD_MAX_HOSTS + 1;
	cr_assert_eq(vmfsd_layout_compute(&p, &sb), -EINVAL);
	p.max_hosts = VMFSD_MAX_HOSTS;
	cr_assert_eq(vmfsd_layout_compute(&p, &sb), 0);
	p.hb_interval_ms = 1000;
	p.hb_timeout_ms = 1999;
	cr_assert_eq(vmfsd_layout_compute(&p, &sb), -EINVAL);
	p.hb_timeout_ms = 2000;
	cr_assert_eq(vmfsd_layout_compute(&p, &sb), 0);
	memset(label, 'x', sizeof(label) - 1);
	label[sizeof(label) - 1] = 0;
	p.label = label;
	cr_assert_eq(vmfsd_layout_compute(&p, &sb), -EINVAL);
	label[VMFSD_LABEL_MAX] = 0;     /* exactly 64 bytes fits */
	cr_assert_eq(vmfsd_layout_compute(&p, &sb), 0);
	/* 2^31 blocks of 64 KiB do not fit the 31-bit block map. */
	p.label = NULL;
	p.block_size = 64 * KiB;
	p.device_size = 130 * TiB;
	cr_assert_eq(vmfsd_layout_compute(&p, &sb), -EFBIG);
}

Test(layout, params_honoured)
{
	struct vmfsd_mkfs_params p = {
		.device_size = 10 * GiB, .block_size = 8 * MiB, .max_hosts = 8,
		.hb_interval_ms = 500, .hb_timeout_ms = 4000,
		.journal_size = 3 * MiB + 1, .inode_count = 100000,
	};
	struct vmfsd_sb sb;

	cr_assert_eq(vmfsd_layout_compute(&p, &sb), 0);
	cr_assert_eq(sb.block_size, 8 * MiB);
	cr_assert_eq(sb.max_hosts, 8);
	cr_assert_eq(sb.hb_interval_ms, 500);
	cr_assert_eq(sb.hb_timeout_ms, 4000);
	cr_assert_eq(sb.journal_size, 4 * MiB, "journal rounds up to 1 MiB");
	cr_assert_eq(sb.inode_count, 100000);
}

/* check_layout on superblocks that decode fine but lie. */
Test(layout, check_rejects)
{
	struct vmfsd_sb good, sb;

	cr_assert_eq(layout(64 * GiB, 0, &good), 0);

	sb = good;
	sb.sbm_off = sb.ibm_off;        /* overlap */
	cr_assert_eq(vmfsd_sb_check_layout(&sb), -EUCLEAN);
	sb = good;
	sb.data_off += 4096;            /* not block aligned */
	cr_assert_eq(vmfsd_sb_check_layout(&sb), -EUCLEAN);
	sb = good;
	sb.block_count += 1;            /* data runs into the backup */
	cr_assert_eq(vmfsd_sb_check_layout(&sb), -EUCLEAN);
	sb = good;
	sb.dbm_count += 1;
	cr_assert_eq(vmfsd_sb_check_layout(&sb), -EUCLEAN);
	sb = good;
	sb.device_size -= 4096;         /* backup past the end */
	cr_assert_eq(vmfsd_sb_check_layout(&sb), -EUCLEAN);
	sb = good;
	sb.root_ino = 2;
	cr_assert_eq(vmfsd_sb_check_layout(&sb), -EUCLEAN);
	sb = good;
	sb.max_hosts = 0;
	cr_assert_eq(vmfsd_sb_check_layout(&sb), -EUCLEAN);
	/* 64 x 2^58 wraps to 0: the journal region must not vanish. */
	sb = good;
	sb.journal_size = 1ull << 58;
	cr_assert_eq(vmfsd_sb_check_layout(&sb), -EUCLEAN);
	/* A backup block number whose byte offset wraps into the device. */
	sb = good;
	sb.backup_blocknr += 1ull << 52;
	cr_assert_eq(vmfsd_sb_check_layout(&sb), -EUCLEAN);
}

/* ------------------------------------------------------------------ */
/* Verifier helpers                                                    */
/* ------------------------------------------------------------------ */

typedef int (*verify_fn)(const void *buf, uint64_t blocknr);

/* Flips every bit of [lo, hi) in turn: each must make VERIFY fail, and the
 * block must verify again once the bit is restored. */
static void flip_every_bit(uint8_t *buf, size_t lo, size_t hi, uint64_t blocknr,
			   verify_fn verify, const char *what)
{
	size_t byte;
	unsigned bit;

	cr_assert_eq(verify(buf, blocknr), 0, "%s: clean block", what);
	for (byte = lo; byte < hi; byte++) {
		for (bit = 0; bit < 8; bit++) {
			buf[byte] ^= (uint8_t)(1u << bit);
			if (verify(buf, blocknr) == 0)
				cr_assert_fail("%s: flip of byte %zu bit %u not detected", what,
					       byte, bit);
			buf[byte] ^= (uint8_t)(1u << bit);
		}
	}
	cr_assert_eq(verify(buf, blocknr), 0, "%s: restored block", what);
}

/* Writes a different magic and re-checksums, so only the magic is wrong. */
static void rewrite_magic32(uint8_t *buf, size_t magic_off, size_t len, size_t csum_off)
{
	uint32_t m = vmfsd_get_le32(buf + magic_off);

	vmfsd_put_le32(buf + magic_off, m ^ 0x20202020u);
	vmfsd_put_le64(buf + csum_off, vmfsd_csum(buf, len, csum_off));
}

static void *blk_alloc(void)
{
	void *p = calloc(1, VMFSD_META_BLOCK);

	cr_assert_not_null(p);
	return p;
}

/* ------------------------------------------------------------------ */
/* Superblock                                                          */
/* ------------------------------------------------------------------ */

static int sb_verify(const void *buf, uint64_t blocknr)
{
	struct vmfsd_sb sb;

	return vmfsd_sb_decode(buf, blocknr, &sb);
}

Test(sb, round_trip)
{
	struct vmfsd_sb sb, out;
	uint8_t *blk = blk_alloc();

	cr_assert_eq(layout(64 * GiB, 0, &sb), 0);
	sb.sb_flags = 0x5;
	sb.feat_compat = 0x1234;        /* unknown compat bits: ignored */
	sb.feat_ro_compat = 0x8;
	vmfsd_sb_encode(&sb, 0, blk);
	cr_assert_eq(vmfsd_sb_decode(blk, 0, &out), 0);
	cr_assert_eq(memcmp(&sb, &out, sizeof(sb)), 0, "decoded superblock differs");
	cr_assert_str_eq(out.label, "unit");
	cr_assert_eq(memcmp(out.uuid, test_uuid, 16), 0);
	free(blk);
}

Test(sb, label_64_bytes)
{
	struct vmfsd_sb sb, out;
	uint8_t *blk = blk_alloc();

	cr_assert_eq(layout(64 * GiB, 0, &sb), 0);
	memset(sb.label, 'L', VMFSD_LABEL_MAX);
	sb.label[VMFSD_LABEL_MAX] = 0;
	vmfsd_sb_encode(&sb, 0, blk);
	cr_assert_eq(vmfsd_sb_decode(blk, 0, &out), 0);
	cr_assert_eq(strlen(out.label), VMFSD_LABEL_MAX);
	free(blk);
}

Test(sb, bit_flips)
{
	struct vmfsd_sb sb;
	uint8_t *blk = blk_alloc();

	cr_assert_eq(layout(1 * GiB, 0, &sb), 0);
	vmfsd_sb_encode(&sb, 0, blk);
	flip_every_bit(blk, 0, VMFSD_META_BLOCK, 0, sb_verify, "sb");
	vmfsd_sb_encode(&sb, sb.backup_blocknr, blk);
	flip_every_bit(blk, 0, VMFSD_META_BLOCK, sb.backup_blocknr, sb_verify, "backup sb");
	free(blk);
}

Test(sb, wrong_blocknr_magic_feature)
{
	struct vmfsd_sb sb, out;
	uint8_t *blk = blk_alloc();
	uint64_t m;

	cr_assert_eq(layout(1 * GiB, 0, &sb), 0);
	vmfsd_sb_encode(&sb, 0, blk);
	cr_assert_eq(vmfsd_sb_decode(blk, sb.backup_blocknr, &out), -EUCLEAN);
	cr_assert_eq(vmfsd_sb_decode(blk, 1, &out), -EUCLEAN);

	m = vmfsd_get_le64(blk) ^ 1;
	vmfsd_put_le64(blk, m);
	vmfsd_put_le64(blk + 24, vmfsd_csum(blk, VMFSD_META_BLOCK, 24));
	cr_assert_eq(vmfsd_sb_decode(blk, 0, &out), -EUCLEAN);

	sb.feat_incompat = 1ull << 63;
	vmfsd_sb_encode(&sb, 0, blk);
	cr_assert_eq(vmfsd_sb_decode(blk, 0, &out), -EOPNOTSUPP);

	/* A correctly checksummed superblock with a broken layout. */
	sb.feat_incompat = 0;
	sb.itable_off = sb.ibm_off;
	vmfsd_sb_encode(&sb, 0, blk);
	cr_assert_eq(vmfsd_sb_decode(blk, 0, &out), -EUCLEAN);
	free(blk);
}

/* ------------------------------------------------------------------ */
/* Lock record                                                         */
/* ------------------------------------------------------------------ */

static int lock_verify(const void *buf, uint64_t blocknr)
{
	struct vmfsd_lock lk;

	return vmfsd_lock_decode(buf, blocknr, &lk);
}

static struct vmfsd_lock sample_lock(void)
{
	struct vmfsd_lock lk = {
		.mode = VMFSD_LOCK_RO, .owner_slot = 17, .nholders = 3,
		.owner_slot_gen = 0x1122334455667788ull, .lock_gen = 99,
	};

	lk.holders[2] = 0x02;
	lk.holders[5] = 0x81;
	return lk;
}

Test(lock, round_trip)
{
	struct vmfsd_lock lk = sample_lock(), out;
	uint8_t *blk = blk_alloc();

	vmfsd_lock_encode(&lk, 12345, blk);
	cr_assert_eq(vmfsd_lock_decode(blk, 12345, &out), 0);
	cr_assert_eq(out.mode, lk.mode);
	cr_assert_eq(out.owner_slot, lk.owner_slot);
	cr_assert_eq(out.nholders, lk.nholders);
	cr_assert_eq(out.owner_slot_gen, lk.owner_slot_gen);
	cr_assert_eq(out.lock_gen, lk.lock_gen);
	cr_assert_eq(memcmp(out.holders, lk.holders, sizeof(lk.holders)), 0);
	free(blk);
}

Test(lock, bit_flips_blocknr_magic)
{
	struct vmfsd_lock lk = sample_lock(), out;
	uint8_t *blk = blk_alloc();

	vmfsd_lock_encode(&lk, 77, blk);
	flip_every_bit(blk, 0, VMFSD_SECTOR, 77, lock_verify, "lock");
	cr_assert_eq(vmfsd_lock_decode(blk, 78, &out), -EUCLEAN);
	rewrite_magic32(blk, 0, VMFSD_SECTOR, 16);
	cr_assert_eq(vmfsd_lock_decode(blk, 77, &out), -EUCLEAN);

	/* Out-of-range fields with a good checksum. */
	lk.mode = VMFSD_LOCK_MW + 1;
	vmfsd_lock_encode(&lk, 77, blk);
	cr_assert_eq(vmfsd_lock_decode(blk, 77, &out), -EUCLEAN);
	lk = sample_lock();
	lk.owner_slot = VMFSD_MAX_HOSTS;
	vmfsd_lock_encode(&lk, 77, blk);
	cr_assert_eq(vmfsd_lock_decode(blk, 77, &out), -EUCLEAN);
	free(blk);
}

/* Re-checksums a lock sector after a test pokes its bytes. */
static void lock_rechecksum(uint8_t *sec)
{
	vmfsd_put_le64(sec + 16, vmfsd_csum(sec, VMFSD_SECTOR, 16));
}

/* The format says holder_gen8 is zero where a slot is not a holder; the
 * decoder used to hand such a byte to its caller as if it meant something
 * (the fuzzer masked it).  Now it reads as zero. */
Test(lock, non_holder_generation_reads_as_zero)
{
	struct vmfsd_lock lk = sample_lock(), out;
	uint8_t *blk = blk_alloc();

	lk.holder_gen8[17] = 0x42;      /* a holder's: kept */
	vmfsd_lock_encode(&lk, 77, blk);
	blk[80 + 3] = 0x99;             /* slot 3: not a holder */
	lock_rechecksum(blk);
	cr_assert_eq(vmfsd_lock_decode(blk, 77, &out), 0);
	cr_assert_eq(out.holder_gen8[3], 0, "generation of a non-holder kept");
	cr_assert_eq(out.holder_gen8[17], 0x42);
	free(blk);
}

/* nholders must agree with the holder bitmap. */
Test(lock, nholders_checked_against_bitmap)
{
	struct vmfsd_lock lk = sample_lock(), out;
	uint8_t *blk = blk_alloc();

	lk.nholders = 2;                /* three bits set */
	vmfsd_lock_encode(&lk, 77, blk);
	cr_assert_eq(vmfsd_lock_decode(blk, 77, &out), -EUCLEAN);
	lk.nholders = 4;
	vmfsd_lock_encode(&lk, 77, blk);
	cr_assert_eq(vmfsd_lock_decode(blk, 77, &out), -EUCLEAN);

	/* A free lock has no holders. */
	lk = sample_lock();
	lk.mode = VMFSD_LOCK_FREE;
	vmfsd_lock_encode(&lk, 77, blk);
	cr_assert_eq(vmfsd_lock_decode(blk, 77, &out), -EUCLEAN);
	lk.nholders = 0;
	vmfsd_lock_encode(&lk, 77, blk);
	cr_assert_eq(vmfsd_lock_decode(blk, 77, &out), -EUCLEAN);
	memset(lk.holders, 0, sizeof(lk.holders));
	vmfsd_lock_encode(&lk, 77, blk);
	cr_assert_eq(vmfsd_lock_decode(blk, 77, &out), 0);

	/* Exclusive with the owner left out of the bitmap (older writers):
	 * counted or not, both read; one more is wrong. */
	memset(&lk, 0, sizeof(lk));
	lk.mode = VMFSD_LOCK_EXCL;
	lk.owner_slot = 3;
	lk.owner_slot_gen = 9;
	vmfsd_lock_encode(&lk, 77, blk);
	cr_assert_eq(vmfsd_lock_decode(blk, 77, &out), 0);
	lk.nholders = 1;
	vmfsd_lock_encode(&lk, 77, blk);
	cr_assert_eq(vmfsd_lock_decode(blk, 77, &out), 0);
	lk.nholders = 2;
	vmfsd_lock_encode(&lk, 77, blk);
	cr_assert_eq(vmfsd_lock_decode(blk, 77, &out), -EUCLEAN);
	/* ... but an owner in the bitmap is counted exactly once. */
	lk.holders[0] = 1u << 3;
	lk.nholders = 2;
	vmfsd_lock_encode(&lk, 77, blk);
	cr_assert_eq(vmfsd_lock_decode(blk, 77, &out), -EUCLEAN);
	lk.nholders = 1;
	vmfsd_lock_encode(&lk, 77, blk);
	cr_assert_eq(vmfsd_lock_decode(blk, 77, &out), 0);
	free(blk);
}

/* ------------------------------------------------------------------ */
/* Resource cluster                                                    */
/* ------------------------------------------------------------------ */

static int rc_verify(const void *buf, uint64_t blocknr)
{
	static struct vmfsd_rc rc;

	return vmfsd_rc_decode(buf, blocknr, &rc);
}

static void sample_rc(struct vmfsd_rc *rc, uint32_t index, uint32_t nitems)
{
	uint32_t i;

	memset(rc, 0, sizeof(*rc));
	rc->kind = VMFSD_RC_BLOCK;
	rc->index = index;
	rc->first_item = (uint64_t)index * VMFSD_RC_BITS;
	rc->nitems = nitems;
	rc->nfree = nitems;
	for (i = 0; i < nitems; i += 7) {
		rc->bitmap[i / 8] |= (uint8_t)(1u << (i % 8));
		rc->nfree--;
	}
}

Test(rc, round_trip)
{
	static struct vmfsd_rc rc, out;
	struct vmfsd_lock lk = { 0 }, lout;
	uint8_t *blk = blk_alloc();

	sample_rc(&rc, 3, VMFSD_RC_BITS);
	vmfsd_lock_encode(&lk, 4242, blk);
	vmfsd_rc_encode(&rc, 4242, blk);
	cr_assert_eq(vmfsd_rc_decode(blk, 4242, &out), 0);
	cr_assert_eq(vmfsd_lock_decode(blk, 4242, &lout), 0, "encode kept the lock sector");
	cr_assert_eq(out.kind, rc.kind);
	cr_assert_eq(out.index, 3);
	cr_assert_eq(out.first_item, 3ull * VMFSD_RC_BITS);
	cr_assert_eq(out.nitems, VMFSD_RC_BITS);
	cr_assert_eq(out.nfree, rc.nfree);
	cr_assert_eq(memcmp(out.bitmap, rc.bitmap, sizeof(rc.bitmap)), 0);

	/* A short last cluster. */
	sample_rc(&rc, 0, 100);
	vmfsd_rc_encode(&rc, 5, blk);
	cr_assert_eq(vmfsd_rc_decode(blk, 5, &out), 0);
	cr_assert_eq(out.nitems, 100);
	free(blk);
}

Test(rc, bit_flips_blocknr_magic)
{
	static struct vmfsd_rc rc, out;
	struct vmfsd_lock lk = { 0 };
	uint8_t *blk = blk_alloc();

	sample_rc(&rc, 1, 5000);
	vmfsd_lock_encode(&lk, 9, blk);
	vmfsd_rc_encode(&rc, 9, blk);
	flip_every_bit(blk, VMFSD_RC_HDR_OFF, VMFSD_META_BLOCK, 9, rc_verify, "rc");
	/* The lock sector is the lock's to check, with its own checksum. */
	flip_every_bit(blk, 0, VMFSD_SECTOR, 9, lock_verify, "rc lock");
	cr_assert_eq(vmfsd_rc_decode(blk, 10, &out), -EUCLEAN);
	rewrite_magic32(blk + VMFSD_RC_HDR_OFF, 0, VMFSD_META_BLOCK - VMFSD_RC_HDR_OFF, 16);
	cr_assert_eq(vmfsd_rc_decode(blk, 9, &out), -EUCLEAN);
	free(blk);
}

Test(rc, structural)
{
	static struct vmfsd_rc rc, out;
	uint8_t *blk = blk_alloc();

	/* nfree that disagrees with the bitmap. */
	sample_rc(&rc, 0, 1000);
	rc.nfree++;
	vmfsd_rc_encode(&rc, 1, blk);
	cr_assert_eq(vmfsd_rc_decode(blk, 1, &out), -EUCLEAN);
	sample_rc(&rc, 0, 1000);
	rc.nfree--;
	vmfsd_rc_encode(&rc, 1, blk);
	cr_assert_eq(vmfsd_rc_decode(blk, 1, &out), -EUCLEAN);

	/* A bit set past nitems, nfree right for the valid part. */
	sample_rc(&rc, 0, 100);
	rc.bitmap[150 / 8] |= 1u << (150 % 8);
	vmfsd_rc_encode(&rc, 1, blk);
	cr_assert_eq(vmfsd_rc_decode(blk, 1, &out), -EUCLEAN);
	sample_rc(&rc, 0, 100);
	rc.bitmap[sizeof(rc.bitmap) - 1] = 0x80;        /* the very last bit */
	vmfsd_rc_encode(&rc, 1, blk);
	cr_assert_eq(vmfsd_rc_decode(blk, 1, &out), -EUCLEAN);

	/* nitems 0 or too many; first_item not index * RC_BITS; bad kind. */
	sample_rc(&rc, 0, 0);
	vmfsd_rc_encode(&rc, 1, blk);
	cr_assert_eq(vmfsd_rc_decode(blk, 1, &out), -EUCLEAN);
	sample_rc(&rc, 0, 100);
	rc.nitems = VMFSD_RC_BITS + 1;
	rc.nfree = rc.nitems - (100 + 6) / 7;
	vmfsd_rc_encode(&rc, 1, blk);
	cr_assert_eq(vmfsd_rc_decode(blk, 1, &out), -EUCLEAN);
	sample_rc(&rc, 2, 100);
	rc.first_item++;
	vmfsd_rc_encode(&rc, 1, blk);
	cr_assert_eq(vmfsd_rc_decode(blk, 1, &out), -EUCLEAN);
	sample_rc(&rc, 0, 100);
	rc.kind = 4;
	vmfsd_rc_encode(&rc, 1, blk);
	cr_assert_eq(vmfsd_rc_decode(blk, 1, &out), -EUCLEAN);
	free(blk);
}

/* ------------------------------------------------------------------ */
/* Inode                                                               */
/* ------------------------------------------------------------------ */

static int inode_verify(const void *buf, uint64_t blocknr)
{
	static struct vmfsd_inode in;

	return vmfsd_inode_decode(buf, blocknr, &in);
}

static void sample_inode(struct vmfsd_inode *in)
{
	unsigned i;

	memset(in, 0, sizeof(*in));
	in->ino = 123456;
	in->generation = 7;
	in->data_mode = VMFSD_DATA_BLOCK;
	in->map_height = 2;
	in->mode = 0100644;
	in->uid = 1000;
	in->gid = 100;
	in->nlink = 1;
	in->size = 64 * TiB;            /* the largest VMDK we promise */
	in->alloc_units = 42;
	in->atime_sec = -5;             /* before the epoch survives */
	in->mtime_sec = 1700000000;
	in->ctime_sec = 1700000001;
	in->btime_sec = 1600000000;
	in->atime_nsec = 1;
	in->mtime_nsec = 999999999;
	in->ctime_nsec = 500;
	in->btime_nsec = 12;
	in->parent = 1;
	in->iflags = VMFSD_IFLAG_MW;
	in->xattr_len = 11;
	memcpy(in->xattr, "user.a\0xyz", 11);
	in->rdev = 0x0801;
	in->change_seq = 0xfedcba9876543210ull;
	for (i = 0; i < VMFSD_MAP_ROOT_SLOTS; i++)
		vmfsd_put_le32(in->map + 4 * i, i * 3 + 1);
}

Test(inode, round_trip)
{
	static struct vmfsd_inode in, out;
	struct vmfsd_lock lk = sample_lock(), lout;
	uint8_t *blk = blk_alloc();

	sample_inode(&in);
	vmfsd_lock_encode(&lk, 888, blk);
	vmfsd_inode_encode(&in, 888, blk);
	cr_assert_eq(vmfsd_inode_decode(blk, 888, &out), 0);
	cr_assert_eq(vmfsd_lock_decode(blk, 888, &lout), 0, "encode kept the lock sector");
	cr_assert_eq(lout.lock_gen, lk.lock_gen);
	cr_assert_eq(memcmp(&in, &out, sizeof(in)), 0, "decoded inode differs");

	/* Inline data at its maximum. */
	sample_inode(&in);
	in.data_mode = VMFSD_DATA_INLINE;
	in.map_height = 0;
	in.size = VMFSD_INLINE_MAX;
	vmfsd_inode_encode(&in, 888, blk);
	cr_assert_eq(vmfsd_inode_decode(blk, 888, &out), 0);
	cr_assert_eq(memcmp(&in, &out, sizeof(in)), 0);
	free(blk);
}

Test(inode, bit_flips_blocknr_magic)
{
	static struct vmfsd_inode in, out;
	uint8_t *blk = blk_alloc();

	sample_inode(&in);
	vmfsd_inode_encode(&in, 31, blk);
	flip_every_bit(blk, VMFSD_INODE_BODY_OFF, VMFSD_META_BLOCK, 31, inode_verify, "inode");
	cr_assert_eq(vmfsd_inode_decode(blk, 32, &out), -EUCLEAN);
	rewrite_magic32(blk + VMFSD_INODE_BODY_OFF, 0,
			VMFSD_META_BLOCK - VMFSD_INODE_BODY_OFF, 16);
	cr_assert_eq(vmfsd_inode_decode(blk, 31, &out), -EUCLEAN);
	free(blk);
}

Test(inode, structural)
{
	static struct vmfsd_inode in, out;
	uint8_t *blk = blk_alloc();

	sample_inode(&in);
	in.map_height = VMFSD_MAP_MAX_HEIGHT;
	vmfsd_inode_encode(&in, 1, blk);
	cr_assert_eq(vmfsd_inode_decode(blk, 1, &out), 0);
	in.map_height = VMFSD_MAP_MAX_HEIGHT + 1;
	vmfsd_inode_encode(&in, 1, blk);
	cr_assert_eq(vmfsd_inode_decode(blk, 1, &out), -EUCLEAN);

	sample_inode(&in);
	in.data_mode = VMFSD_DATA_INLINE;
	in.map_height = 0;
	in.size = VMFSD_INLINE_MAX + 1;
	vmfsd_inode_encode(&in, 1, blk);
	cr_assert_eq(vmfsd_inode_decode(blk, 1, &out), -EUCLEAN);

	sample_inode(&in);
	in.data_mode = 3;
	vmfsd_inode_encode(&in, 1, blk);
	cr_assert_eq(vmfsd_inode_decode(blk, 1, &out), -EUCLEAN);

	sample_inode(&in);
	in.xattr_len = VMFSD_XATTR_AREA + 1;
	vmfsd_inode_encode(&in, 1, blk);
	cr_assert_eq(vmfsd_inode_decode(blk, 1, &out), -EUCLEAN);
	free(blk);
}

/* ------------------------------------------------------------------ */
/* Block-map node                                                      */
/* ------------------------------------------------------------------ */

#define MAP_INO 555u
#define MAP_GEN 3u

static int map_verify(const void *buf, uint64_t blocknr)
{
	return vmfsd_map_node_verify(buf, blocknr, MAP_INO, MAP_GEN);
}

static void sample_map_node(uint8_t *blk, uint64_t blocknr, uint16_t level)
{
	struct vmfsd_disk_map_node *n = (void *)blk;
	unsigned i;

	memset(blk, 0, VMFSD_SUB_BLOCK_SIZE);
	n->level = htole16(level);
	n->ino = htole64(MAP_INO);
	n->ino_generation = htole64(MAP_GEN);
	n->first_lblk = htole64(1008ull * 728);
	for (i = 0; i < VMFSD_MAP_NODE_SLOTS; i++)
		n->slot[i] = htole32(i % 5 ? i | (i % 3 ? 0 : VMFSD_MAP_UNWRITTEN) : 0);
	vmfsd_map_node_finish(blk, blocknr);
}

Test(map_node, round_trip)
{
	uint8_t *blk = blk_alloc();
	struct vmfsd_disk_map_node *n = (void *)blk;

	sample_map_node(blk, 4000, 1);
	cr_assert_eq(vmfsd_map_node_verify(blk, 4000, MAP_INO, MAP_GEN), 0);
	cr_assert_eq(le32toh(n->magic), VMFSD_MAP_MAGIC);
	cr_assert_eq(le16toh(n->version), VMFSD_FORMAT_VERSION);
	cr_assert_eq(le64toh(n->blocknr), 4000);
	cr_assert_eq(le16toh(n->level), 1);
	cr_assert_eq(le64toh(n->first_lblk), 1008ull * 728);
	cr_assert_eq(le32toh(n->slot[3]), 3 | VMFSD_MAP_UNWRITTEN);
	cr_assert_eq(le32toh(n->slot[5]), 0);
	cr_assert_eq(le32toh(n->slot[1007]), 1007);
	free(blk);
}

Test(map_node, bit_flips_blocknr_magic_owner)
{
	uint8_t *blk = blk_alloc();

	sample_map_node(blk, 4000, 0);
	flip_every_bit(blk, 0, VMFSD_SUB_BLOCK_SIZE, 4000, map_verify, "map node");
	cr_assert_eq(vmfsd_map_node_verify(blk, 4001, MAP_INO, MAP_GEN), -EUCLEAN);
	/* A node of another inode or an older life of this one. */
	cr_assert_eq(vmfsd_map_node_verify(blk, 4000, MAP_INO + 1, MAP_GEN), -EUCLEAN);
	cr_assert_eq(vmfsd_map_node_verify(blk, 4000, MAP_INO, MAP_GEN - 1), -EUCLEAN);
	rewrite_magic32(blk, 0, VMFSD_SUB_BLOCK_SIZE, 16);
	cr_assert_eq(vmfsd_map_node_verify(blk, 4000, MAP_INO, MAP_GEN), -EUCLEAN);
	/* level 3 is the highest a height-4 map needs. */
	sample_map_node(blk, 4000, VMFSD_MAP_MAX_HEIGHT - 1);
	cr_assert_eq(vmfsd_map_node_verify(blk, 4000, MAP_INO, MAP_GEN), 0);
	sample_map_node(blk, 4000, VMFSD_MAP_MAX_HEIGHT);
	cr_assert_eq(vmfsd_map_node_verify(blk, 4000, MAP_INO, MAP_GEN), -EUCLEAN);
	free(blk);
}

/* ------------------------------------------------------------------ */
/* Directory block                                                     */
/* ------------------------------------------------------------------ */

#define DIR_INO 1u
#define DIR_GEN 1u

static int dir_verify(const void *buf, uint64_t blocknr)
{
	return vmfsd_dir_block_verify(buf, blocknr, DIR_INO, DIR_GEN);
}

/* Appends an entry by hand: le64 ino, u8 name_len, u8 d_type, name, pad. */
static unsigned dirent_put(uint8_t *blk, unsigned used, uint64_t ino, const char *name,
			   uint8_t type)
{
	uint8_t *e = blk + VMFSD_DIR_HDR + used;
	unsigned nl = (unsigned)strlen(name);

	memset(e, 0, vmfsd_dirent_size(nl));
	vmfsd_put_le64(e, ino);
	e[8] = (uint8_t)nl;
	e[9] = type;
	memcpy(e + VMFSD_DIRENT_FIXED, name, nl);
	return used + vmfsd_dirent_size(nl);
}

static void dir_finish(uint8_t *blk, unsigned used, unsigned n, uint64_t blocknr)
{
	struct vmfsd_disk_dir_hdr *h = (void *)blk;

	h->nentries = htole16((uint16_t)n);
	h->used = htole16((uint16_t)used);
	h->dir_ino = htole64(DIR_INO);
	h->dir_generation = htole64(DIR_GEN);
	vmfsd_dir_block_finish(blk, blocknr);
}

/* Three entries: a VM folder, a 255-byte name and a short file. */
static unsigned sample_dir(uint8_t *blk, uint64_t blocknr)
{
	char longname[VMFSD_NAME_MAX + 1];
	unsigned used = 0;

	memset(blk, 0, VMFSD_SUB_BLOCK_SIZE);
	memset(longname, 'n', VMFSD_NAME_MAX);
	longname[VMFSD_NAME_MAX] = 0;
	used = dirent_put(blk, used, 2, "vm1", 4 /* DT_DIR */);
	used = dirent_put(blk, used, 3, longname, 8 /* DT_REG */);
	used = dirent_put(blk, used, 4, "vm1-flat.vmdk", 8);
	dir_finish(blk, used, 3, blocknr);
	return used;
}

Test(dir_block, round_trip)
{
	uint8_t *blk = blk_alloc();
	unsigned used = sample_dir(blk, 70), off = 0, n = 0;
	const uint8_t *p = blk + VMFSD_DIR_HDR;
	const char *names[] = { "vm1", NULL, "vm1-flat.vmdk" };

	cr_assert_eq(vmfsd_dirent_size(1), 16);
	cr_assert_eq(vmfsd_dirent_size(6), 16);
	cr_assert_eq(vmfsd_dirent_size(7), 24);
	cr_assert_eq(vmfsd_dirent_size(255), 272);
	cr_assert_eq(used, 16 + 272 + 24);
	cr_assert_eq(vmfsd_dir_block_verify(blk, 70, DIR_INO, DIR_GEN), 0);
	while (off < used) {
		unsigned nl = p[off + 8];

		cr_assert_eq(vmfsd_get_le64(p + off), n + 2);
		if (names[n])
			cr_assert(nl == strlen(names[n]) &&
				  !memcmp(p + off + VMFSD_DIRENT_FIXED, names[n], nl));
		else
			cr_assert_eq(nl, VMFSD_NAME_MAX);
		off += vmfsd_dirent_size(nl);
		n++;
	}
	cr_assert_eq(n, 3);

	/* An empty directory block verifies too. */
	memset(blk, 0, VMFSD_SUB_BLOCK_SIZE);
	dir_finish(blk, 0, 0, 71);
	cr_assert_eq(vmfsd_dir_block_verify(blk, 71, DIR_INO, DIR_GEN), 0);
	free(blk);
}

Test(dir_block, bit_flips_blocknr_magic_owner)
{
	uint8_t *blk = blk_alloc();

	sample_dir(blk, 70);
	flip_every_bit(blk, 0, VMFSD_SUB_BLOCK_SIZE, 70, dir_verify, "dir block");
	cr_assert_eq(vmfsd_dir_block_verify(blk, 69, DIR_INO, DIR_GEN), -EUCLEAN);
	cr_assert_eq(vmfsd_dir_block_verify(blk, 70, DIR_INO + 1, DIR_GEN), -EUCLEAN);
	cr_assert_eq(vmfsd_dir_block_verify(blk, 70, DIR_INO, DIR_GEN + 1), -EUCLEAN);
	rewrite_magic32(blk, 0, VMFSD_SUB_BLOCK_SIZE, 16);
	cr_assert_eq(vmfsd_dir_block_verify(blk, 70, DIR_INO, DIR_GEN), -EUCLEAN);
	free(blk);
}

Test(dir_block, bad_entries)
{
	uint8_t *blk = blk_alloc();
	uint8_t *e = blk + VMFSD_DIR_HDR;
	unsigned used;

	/* A '/' in a name. */
	memset(blk, 0, VMFSD_SUB_BLOCK_SIZE);
	used = dirent_put(blk, 0, 2, "ok", 8);
	used = dirent_put(blk, used, 3, "a/b", 8);
	dir_finish(blk, used, 2, 5);
	cr_assert_eq(dir_verify(blk, 5), -EUCLEAN);

	/* A NUL inside a name. */
	memset(blk, 0, VMFSD_SUB_BLOCK_SIZE);
	used = dirent_put(blk, 0, 2, "abcd", 8);
	e[VMFSD_DIRENT_FIXED + 1] = 0;
	dir_finish(blk, used, 1, 5);
	cr_assert_eq(dir_verify(blk, 5), -EUCLEAN);

	/* name_len running past the used bytes (but not past the block). */
	memset(blk, 0, VMFSD_SUB_BLOCK_SIZE);
	used = dirent_put(blk, 0, 2, "abc", 8);
	used = dirent_put(blk, used, 3, "def", 8);
	e[16 + 8] = 200;
	dir_finish(blk, used, 2, 5);
	cr_assert_eq(dir_verify(blk, 5), -EUCLEAN);

	/* name_len 255 in a block with used at its end. */
	memset(blk, 0, VMFSD_SUB_BLOCK_SIZE);
	used = dirent_put(blk, 0, 2, "abc", 8);
	e[8] = 255;
	dir_finish(blk, used, 1, 5);
	cr_assert_eq(dir_verify(blk, 5), -EUCLEAN);

	/* An empty name. */
	memset(blk, 0, VMFSD_SUB_BLOCK_SIZE);
	used = dirent_put(blk, 0, 2, "", 8);
	dir_finish(blk, used, 1, 5);
	cr_assert_eq(dir_verify(blk, 5), -EUCLEAN);

	/* Inode 0 (the "no inode" number). */
	memset(blk, 0, VMFSD_SUB_BLOCK_SIZE);
	used = dirent_put(blk, 0, 0, "zero", 8);
	dir_finish(blk, used, 1, 5);
	cr_assert_eq(dir_verify(blk, 5), -EUCLEAN);

	/* nentries disagreeing with the walk. */
	memset(blk, 0, VMFSD_SUB_BLOCK_SIZE);
	used = dirent_put(blk, 0, 2, "abc", 8);
	dir_finish(blk, used, 2, 5);
	cr_assert_eq(dir_verify(blk, 5), -EUCLEAN);

	/* used larger than the space of a block. */
	memset(blk, 0, VMFSD_SUB_BLOCK_SIZE);
	dir_finish(blk, VMFSD_DIR_SPACE + 8, 0, 5);
	cr_assert_eq(dir_verify(blk, 5), -EUCLEAN);

	/* A truncated entry header at the end. */
	memset(blk, 0, VMFSD_SUB_BLOCK_SIZE);
	used = dirent_put(blk, 0, 2, "abc", 8);
	dir_finish(blk, used + 8, 1, 5);
	cr_assert_eq(dir_verify(blk, 5), -EUCLEAN);
	free(blk);
}

/* The codec writes exactly the layout docs/format.md §10 gives (the
 * by-hand dirent_put above), and add/find/update/remove keep the block
 * compacted and verifiable. */
Test(dirent, codec_matches_layout)
{
	uint8_t *blk = blk_alloc(), *ref = blk_alloc();
	char longname[VMFSD_NAME_MAX + 1];
	struct vmfsd_dirent de;
	unsigned off, sz, n = 0;

	memset(longname, 'n', VMFSD_NAME_MAX);
	longname[VMFSD_NAME_MAX] = 0;
	sample_dir(ref, 70);
	vmfsd_dir_block_init(blk, DIR_INO, DIR_GEN);
	cr_assert_eq(vmfsd_dir_block_used(blk), 0);
	cr_assert_eq(vmfsd_dirent_get(blk, 0, &de), 0);
	cr_assert_eq(vmfsd_dirent_add(blk, 2, 4, "vm1", 3), 0);
	cr_assert_eq(vmfsd_dirent_add(blk, 3, 8, longname, VMFSD_NAME_MAX), 0);
	cr_assert_eq(vmfsd_dirent_add(blk, 4, 8, "vm1-flat.vmdk", 13), 0);
	vmfsd_dir_block_finish(blk, 70);
	cr_assert_eq(memcmp(blk, ref, VMFSD_SUB_BLOCK_SIZE), 0, "codec differs from the layout");

	for (off = 0; (sz = vmfsd_dirent_get(blk, off, &de)); off += sz, n++) {
		cr_assert_eq(de.ino, n + 2);
		cr_assert_eq(sz, vmfsd_dirent_size(de.name_len));
	}
	cr_assert_eq(n, 3);
	cr_assert_eq(off, vmfsd_dir_block_used(blk));
	cr_assert_eq(vmfsd_dirent_get(blk, 16, &de), 272);
	cr_assert_eq(de.name_len, VMFSD_NAME_MAX);
	cr_assert_eq(de.type, 8);
	cr_assert_eq(de.name, (const char *)blk + VMFSD_DIR_HDR + 16 + VMFSD_DIRENT_FIXED);

	cr_assert_eq(vmfsd_dirent_find(blk, "vm1", 3), 0);
	cr_assert_eq(vmfsd_dirent_find(blk, "vm1-flat.vmdk", 13), 16 + 272);
	cr_assert_eq(vmfsd_dirent_find(blk, "vm", 2), -ENOENT);

	vmfsd_dirent_update(blk, 0, 9, 10);
	vmfsd_dirent_get(blk, 0, &de);
	cr_assert(de.ino == 9 && de.type == 10 && de.name_len == 3);

	/* Removing the long name moves the last entry down and zeroes the tail. */
	vmfsd_dirent_remove(blk, 16);
	cr_assert_eq(vmfsd_dir_block_used(blk), 16 + 24);
	cr_assert_eq(vmfsd_dirent_find(blk, "vm1-flat.vmdk", 13), 16);
	cr_assert(vmfsd_all_zero(blk + VMFSD_DIR_HDR + 40, VMFSD_DIR_SPACE - 40));
	vmfsd_dir_block_finish(blk, 70);
	cr_assert_eq(vmfsd_dir_block_verify(blk, 70, DIR_INO, DIR_GEN), 0);
	cr_assert_eq(le16toh(((struct vmfsd_disk_dir_hdr *)blk)->nentries), 2);
	free(blk);
	free(ref);
}

Test(dirent, full_block_and_bad_walk)
{
	uint8_t *blk = blk_alloc();
	struct vmfsd_dirent de;
	char name[8];
	unsigned i;

	/* 252 entries of 16 bytes fill the 4032 bytes exactly. */
	vmfsd_dir_block_init(blk, DIR_INO, DIR_GEN);
	for (i = 0; i < VMFSD_DIR_SPACE / 16; i++) {
		snprintf(name, sizeof(name), "%u", i);
		cr_assert_eq(vmfsd_dirent_add(blk, i + 2, 8, name, (unsigned)strlen(name)), 0);
	}
	cr_assert_not(vmfsd_dir_block_fits(blk, 1));
	cr_assert_eq(vmfsd_dirent_add(blk, 1000, 8, "x", 1), -ENOSPC);
	cr_assert_eq(vmfsd_dir_block_used(blk), VMFSD_DIR_SPACE);
	vmfsd_dir_block_finish(blk, 5);
	cr_assert_eq(dir_verify(blk, 5), 0);

	/* An unverified block whose entry runs past `used` ends the walk
	 * there instead of reading past it. */
	vmfsd_dir_block_init(blk, DIR_INO, DIR_GEN);
	cr_assert_eq(vmfsd_dirent_add(blk, 2, 8, "abc", 3), 0);
	cr_assert_eq(vmfsd_dirent_add(blk, 3, 8, "def", 3), 0);
	vmfsd_dirent_at(blk, 16)->name_len = 200;
	cr_assert_eq(vmfsd_dirent_get(blk, 0, &de), 16);
	cr_assert_eq(vmfsd_dirent_get(blk, 16, &de), 0);
	/* A `used` larger than the block yields nothing at all, and has no
	 * room for another entry. */
	((struct vmfsd_disk_dir_hdr *)blk)->used = htole16(VMFSD_DIR_SPACE + 8);
	cr_assert_eq(vmfsd_dirent_get(blk, 0, &de), 0);
	cr_assert_not(vmfsd_dir_block_fits(blk, 1));
	cr_assert_eq(vmfsd_dirent_add(blk, 2, 8, "x", 1), -ENOSPC);
	free(blk);
}

/* ------------------------------------------------------------------ */
/* Heartbeat slot                                                      */
/* ------------------------------------------------------------------ */

static int hb_verify(const void *buf, uint64_t blocknr)
{
	struct vmfsd_hb hb;

	return vmfsd_hb_decode(buf, blocknr, &hb);
}

static struct vmfsd_hb sample_hb(void)
{
	struct vmfsd_hb hb = {
		.state = VMFSD_HB_LIVE, .generation = 12, .counter = 987654321,
		.journal_off = 5 * MiB, .slot = 63, .pid = 4242, .replayer_slot = 0,
		.flags = VMFSD_HB_F_LATE,
	};

	memcpy(hb.host_uuid, test_uuid, 16);
	strcpy(hb.host_name, "esx-01.example.org");
	return hb;
}

Test(hb, round_trip)
{
	struct vmfsd_hb hb = sample_hb(), out;
	uint8_t *blk = blk_alloc();

	vmfsd_hb_encode(&hb, 256 + 63, blk);
	cr_assert_eq(vmfsd_hb_decode(blk, 256 + 63, &out), 0);
	cr_assert_eq(out.state, hb.state);
	cr_assert_eq(memcmp(out.host_uuid, hb.host_uuid, 16), 0);
	cr_assert_str_eq(out.host_name, hb.host_name);
	cr_assert_eq(out.generation, hb.generation);
	cr_assert_eq(out.counter, hb.counter);
	cr_assert_eq(out.journal_off, hb.journal_off);
	cr_assert_eq(out.slot, hb.slot);
	cr_assert_eq(out.pid, hb.pid);
	cr_assert_eq(out.replayer_slot, hb.replayer_slot);
	cr_assert_eq(out.flags, VMFSD_HB_F_LATE);

	/* A 64-byte host name has no terminator on disk. */
	memset(hb.host_name, 'h', VMFSD_HOSTNAME_MAX);
	hb.host_name[VMFSD_HOSTNAME_MAX] = 0;
	vmfsd_hb_encode(&hb, 1, blk);
	cr_assert_eq(vmfsd_hb_decode(blk, 1, &out), 0);
	cr_assert_eq(strlen(out.host_name), VMFSD_HOSTNAME_MAX);
	free(blk);
}

Test(hb, bit_flips_blocknr_magic)
{
	struct vmfsd_hb hb = sample_hb(), out;
	uint8_t *blk = blk_alloc();

	vmfsd_hb_encode(&hb, 300, blk);
	/* Only the first sector is what ATS compares and what is checksummed. */
	flip_every_bit(blk, 0, VMFSD_SECTOR, 300, hb_verify, "hb");
	cr_assert_eq(vmfsd_hb_decode(blk, 301, &out), -EUCLEAN);
	rewrite_magic32(blk, 0, VMFSD_SECTOR, 16);
	cr_assert_eq(vmfsd_hb_decode(blk, 300, &out), -EUCLEAN);

	hb.state = VMFSD_HB_REPLAYING + 1;
	vmfsd_hb_encode(&hb, 300, blk);
	cr_assert_eq(vmfsd_hb_decode(blk, 300, &out), -EUCLEAN);
	hb = sample_hb();
	hb.slot = VMFSD_MAX_HOSTS;
	vmfsd_hb_encode(&hb, 300, blk);
	cr_assert_eq(vmfsd_hb_decode(blk, 300, &out), -EUCLEAN);
	free(blk);
}

/* ------------------------------------------------------------------ */
/* Cross-type confusion                                                */
/* ------------------------------------------------------------------ */

/* A block handed to the wrong decoder (a stale pointer, a misdirected
 * write) must be refused by magic even though its checksum is valid. */
Test(cross, wrong_type)
{
	static struct vmfsd_inode in, iout;
	static struct vmfsd_rc rc, rout;
	struct vmfsd_sb sb, sout;
	struct vmfsd_hb hb = sample_hb(), hout;
	struct vmfsd_lock lk = { 0 };
	uint8_t *blk = blk_alloc();

	sample_inode(&in);
	vmfsd_lock_encode(&lk, 8, blk);
	vmfsd_inode_encode(&in, 8, blk);
	cr_assert_neq(vmfsd_rc_decode(blk, 8, &rout), 0);
	cr_assert_neq(vmfsd_hb_decode(blk, 8, &hout), 0);
	cr_assert_neq(vmfsd_sb_decode(blk, 8, &sout), 0);
	cr_assert_neq(vmfsd_map_node_verify(blk, 8, 0, 0), 0);
	cr_assert_neq(vmfsd_dir_block_verify(blk, 8, 0, 0), 0);

	sample_rc(&rc, 0, 10);
	vmfsd_rc_encode(&rc, 8, blk);
	cr_assert_neq(vmfsd_inode_decode(blk, 8, &iout), 0);

	cr_assert_eq(layout(1 * GiB, 0, &sb), 0);
	vmfsd_sb_encode(&sb, 0, blk);
	cr_assert_neq(vmfsd_hb_decode(blk, 0, &hout), 0);
	cr_assert_neq(vmfsd_lock_decode(blk, 0, &lk), 0);

	vmfsd_hb_encode(&hb, 0, blk);
	cr_assert_neq(vmfsd_sb_decode(blk, 0, &sout), 0);
	cr_assert_neq(vmfsd_lock_decode(blk, 0, &lk), 0);

	/* All zeros (a never-written block) is nothing. */
	memset(blk, 0, VMFSD_META_BLOCK);
	cr_assert_neq(vmfsd_sb_decode(blk, 0, &sout), 0);
	cr_assert_neq(vmfsd_lock_decode(blk, 0, &lk), 0);
	cr_assert_neq(vmfsd_rc_decode(blk, 0, &rout), 0);
	cr_assert_neq(vmfsd_inode_decode(blk, 0, &iout), 0);
	cr_assert_neq(vmfsd_map_node_verify(blk, 0, 0, 0), 0);
	cr_assert_neq(vmfsd_dir_block_verify(blk, 0, 0, 0), 0);
	cr_assert_neq(vmfsd_hb_decode(blk, 0, &hout), 0);
	free(blk);
}

/* ------------------------------------------------------------------ */
/* Journal identity (docs/format.md §12)                                */
/* ------------------------------------------------------------------ */

Test(journal_id, sb_format_gen)
{
	struct vmfsd_sb sb, out;
	struct vmfsd_journal_id id;
	uint8_t *blk = blk_alloc();

	cr_assert_eq(layout(1 * GiB, 0, &sb), 0);
	cr_assert(sb.feat_ro_compat & VMFSD_FEAT_RO_JOURNAL_ID, "new volumes bind journals");
	cr_assert_neq(sb.format_gen, 0);
	sb.format_gen = 0x0123456789abcdefull;
	vmfsd_sb_encode(&sb, 0, blk);
	cr_assert_eq(vmfsd_get_le64(blk + 312), sb.format_gen, "format_gen at offset 312");
	cr_assert_eq(vmfsd_sb_decode(blk, 0, &out), 0);
	cr_assert_eq(out.format_gen, sb.format_gen);
	vmfsd_journal_id_of(&out, &id);
	cr_assert_eq(memcmp(id.vol_uuid, test_uuid, 16), 0);
	cr_assert_eq(id.format_gen, sb.format_gen);
	/* The feature without a generation is not a volume mkfs makes. */
	sb.format_gen = 0;
	vmfsd_sb_encode(&sb, 0, blk);
	cr_assert_eq(vmfsd_sb_decode(blk, 0, &out), -EUCLEAN);
	/* A volume from before the feature: journals carry zeros. */
	sb.feat_ro_compat = 0;
	vmfsd_sb_encode(&sb, 0, blk);
	cr_assert_eq(vmfsd_sb_decode(blk, 0, &out), 0);
	vmfsd_journal_id_of(&out, &id);
	cr_assert(vmfsd_all_zero(&id, sizeof(id)));
	free(blk);
}

Test(journal_id, header_and_descriptor)
{
	struct vmfsd_journal_id a = { .format_gen = 5 }, b;
	struct vmfsd_jhdr jh = { .slot = 3, .nblocks = 256, .tail_seq = 10, .tail_blk = 7,
				 .clean = 0 }, out;
	uint8_t *blk = blk_alloc();

	memcpy(a.vol_uuid, test_uuid, 16);
	b = a;
	b.format_gen = 6;
	jh.id = a;
	vmfsd_jhdr_encode(&jh, 900, blk);
	cr_assert_eq(memcmp(blk + 56, test_uuid, 16), 0, "header vol_uuid at 56");
	cr_assert_eq(vmfsd_get_le64(blk + 72), 5, "header format_gen at 72");
	cr_assert_eq(vmfsd_jhdr_decode(blk, 900, &out), 0);
	cr_assert(vmfsd_journal_id_eq(&out.id, &a));

	memset(blk, 0, VMFSD_META_BLOCK);
	vmfsd_put_le64(blk + 24, 42);   /* seq */
	blk[32] = 1;                    /* nblocks */
	vmfsd_jdesc_finish(blk, 901, &a);
	cr_assert_eq(memcmp(blk + 40, test_uuid, 16), 0, "descriptor vol_uuid at 40");
	cr_assert_eq(vmfsd_get_le64(blk + 56), 5, "descriptor format_gen at 56");
	cr_assert_eq(vmfsd_jdesc_verify(blk, 901, &a), 0);
	/* Sound, but of another format: -ESTALE, not damage. */
	cr_assert_eq(vmfsd_jdesc_verify(blk, 901, &b), -ESTALE);
	b = a;
	b.vol_uuid[15] ^= 1;
	cr_assert_eq(vmfsd_jdesc_verify(blk, 901, &b), -ESTALE);
	blk[100] ^= 1;
	cr_assert_eq(vmfsd_jdesc_verify(blk, 901, &a), -EBADMSG);
	free(blk);
}

/* ------------------------------------------------------------------ */
/* Block-map tree (format/maptree.c) over an in-memory node store       */
/* ------------------------------------------------------------------ */

#define TREE_NODES 64u

struct tree_store {
	uint8_t *node[TREE_NODES];      /* by sub-block number, 0 unused */
	uint32_t next;
	uint32_t put_order[4 * TREE_NODES];
	unsigned nput;
	unsigned roots;
	const struct vmfsd_inode *in;
	uint32_t clear_sblk;            /* ts_get answers CLEAR for this node */
	uint64_t leaves[16];            /* units the walk visited */
	unsigned nleaves;
	uint32_t dropped[TREE_NODES];
	unsigned ndropped;
};

/* Frees (zeroes) every entry it is shown. */
static int ts_leaf(void *ctx, uint8_t *slot, uint64_t lo)
{
	struct tree_store *t = ctx;

	cr_assert(t->nleaves < 16);
	t->leaves[t->nleaves++] = lo;
	vmfsd_put_le32(slot, 0);
	return 1;
}

static void ts_drop(void *ctx, uint32_t sblk)
{
	struct tree_store *t = ctx;

	t->dropped[t->ndropped++] = sblk;
}

static int ts_get(void *ctx, uint32_t sblk, unsigned level, uint64_t first, uint8_t **node)
{
	struct tree_store *t = ctx;

	if (t->clear_sblk && sblk == t->clear_sblk)
		return VMFSD_MAPTREE_CLEAR;

	cr_assert(sblk && sblk < t->next, "pointer to sub-block %u", sblk);
	cr_assert_eq(vmfsd_map_node_verify(t->node[sblk], sblk, t->in->ino,
					   t->in->generation), 0);
	cr_assert_eq(le16toh(((struct vmfsd_disk_map_node *)t->node[sblk])->level), level);
	cr_assert_eq(le64toh(((struct vmfsd_disk_map_node *)t->node[sblk])->first_lblk), first);
	*node = t->node[sblk];
	return 0;
}

static int ts_new(void *ctx, unsigned level, uint64_t first, uint32_t *sblk, uint8_t **node)
{
	struct tree_store *t = ctx;

	if (t->next == TREE_NODES)
		return -ENOSPC;
	t->node[t->next] = blk_alloc();
	vmfsd_map_node_init(t->node[t->next], level, t->in->ino, t->in->generation, first);
	*sblk = t->next++;
	*node = t->node[*sblk];
	return 0;
}

static int ts_put(void *ctx, uint32_t sblk, uint8_t *node)
{
	struct tree_store *t = ctx;

	cr_assert_eq(node, t->node[sblk]);
	vmfsd_map_node_finish(node, sblk);
	t->put_order[t->nput++] = sblk;
	return 0;
}

static void ts_root(void *ctx)
{
	((struct tree_store *)ctx)->roots++;
}

/* Units spread over three heights (the root, one level, two levels), in
 * increasing order. */
static const uint64_t tree_lblk[] = {
	0, 5, VMFSD_MAP_ROOT_SLOTS - 1, VMFSD_MAP_ROOT_SLOTS,
	(uint64_t)VMFSD_MAP_ROOT_SLOTS * VMFSD_MAP_NODE_SLOTS + 7, 1000000, 1000001,
};

Test(maptree, set_get_grow_seek)
{
	struct vmfsd_inode in = { .ino = 77, .generation = 3, .data_mode = VMFSD_DATA_BLOCK };
	struct tree_store t = { .next = 1, .in = &in };
	const struct vmfsd_maptree_ops ops = {
		.ctx = &t, .node_get = ts_get, .node_new = ts_new, .node_put = ts_put,
		.root_put = ts_root,
	};
	size_t n = sizeof(tree_lblk) / sizeof(tree_lblk[0]), i;
	uint64_t out;
	uint32_t v;

	cr_assert_eq(vmfsd_map_span(2), (uint64_t)VMFSD_MAP_NODE_SLOTS * VMFSD_MAP_NODE_SLOTS);
	cr_assert_eq(vmfsd_map_capacity(1), 733824u);
	for (i = 0; i < n; i++)
		cr_assert_eq(vmfsd_maptree_set(&ops, &in, tree_lblk[i], (uint32_t)(100 + i)), 0);
	/* 728 x 1008 + 7 needs height 2: two growths, each logged the root. */
	cr_assert_eq(in.map_height, 2);
	cr_assert_eq(t.roots, 2);
	cr_assert_eq(in.alloc_units, (uint64_t)(t.next - 1) * (VMFSD_SUB_BLOCK_SIZE / 512));
	for (i = 0; i < n; i++) {
		cr_assert_eq(vmfsd_maptree_get(&ops, &in, tree_lblk[i], &v), 0);
		cr_assert_eq(v, 100 + i, "unit %" PRIu64, tree_lblk[i]);
	}
	cr_assert_eq(vmfsd_maptree_get(&ops, &in, 6, &v), 0);
	cr_assert_eq(v, 0);
	cr_assert_eq(vmfsd_maptree_get(&ops, &in, vmfsd_map_capacity(2), &v), 0);
	cr_assert_eq(v, 0);

	/* Seeking forward and backward visits the units in order. */
	for (i = 0; i < n; i++) {
		cr_assert_eq(vmfsd_maptree_seek(&ops, &in, i ? tree_lblk[i - 1] + 1 : 0, 1, &out), 0);
		cr_assert_eq(out, tree_lblk[i], "i %zu out %" PRIu64, i, out);
		cr_assert_eq(vmfsd_maptree_seek(&ops, &in, tree_lblk[i] + 1, -1, &out), 0);
		cr_assert_eq(out, tree_lblk[i]);
	}
	cr_assert_eq(vmfsd_maptree_seek(&ops, &in, tree_lblk[n - 1] + 1, 1, &out), -ENXIO);
	cr_assert_eq(vmfsd_maptree_seek(&ops, &in, 0, -1, &out), -ENXIO);

	/* A set on an existing path rewrites that path only, leaf first. */
	t.nput = 0;
	cr_assert_eq(vmfsd_maptree_set(&ops, &in, 1000001, 9), 0);
	cr_assert_eq(t.nput, 2);
	cr_assert_eq(le16toh(((struct vmfsd_disk_map_node *)t.node[t.put_order[0]])->level), 0);
	cr_assert_eq(le16toh(((struct vmfsd_disk_map_node *)t.node[t.put_order[1]])->level), 1);
	cr_assert_eq(le64toh(((struct vmfsd_disk_map_node *)t.node[t.put_order[0]])->first_lblk),
		     1000001 / VMFSD_MAP_NODE_SLOTS * VMFSD_MAP_NODE_SLOTS);

	/* Walking [729, 1000001) frees 733831 and 1000000 only: the node of
	 * 733831 empties and is dropped, the leaf of 1000000 keeps 1000001. */
	{
		const struct vmfsd_maptree_walk w = {
			.ops = &ops, .from = 729, .to = 1000001, .leaf = ts_leaf, .drop = ts_drop,
		};
		int dirty;

		t.nput = 0;
		cr_assert_eq(vmfsd_maptree_walk(&w, &in, &dirty), 0);
		cr_assert_eq(dirty, 0);
		cr_assert_eq(t.nleaves, 2);
		cr_assert(t.leaves[0] == 733831 && t.leaves[1] == 1000000);
		cr_assert_eq(t.ndropped, 1);
		cr_assert_eq(t.nput, 2, "the changed leaf and the level-1 node losing a pointer");
		cr_assert_eq(vmfsd_maptree_get(&ops, &in, 1000001, &v), 0);
		cr_assert_eq(v, 9);
		cr_assert_eq(vmfsd_maptree_get(&ops, &in, 728, &v), 0);
		cr_assert_eq(v, 103);
	}
	/* A node the storage refuses (CLEAR) loses its pointer; a walk of
	 * everything then leaves the root empty. */
	{
		const struct vmfsd_maptree_walk w = {
			.ops = &ops, .from = 0, .to = UINT64_MAX, .leaf = ts_leaf, .drop = ts_drop,
		};
		int dirty;

		t.clear_sblk = vmfsd_map_slot_get(in.map, 0);
		t.nleaves = 0;
		cr_assert_eq(vmfsd_maptree_walk(&w, &in, &dirty), 1);
		cr_assert_eq(dirty, 1);
		cr_assert_eq(t.nleaves, 0);
		t.clear_sblk = 0;
	}

	/* Past the greatest height. */
	in.map_height = VMFSD_MAP_MAX_HEIGHT;
	cr_assert_eq(vmfsd_maptree_set(&ops, &in, vmfsd_map_capacity(VMFSD_MAP_MAX_HEIGHT), 1),
		     -EFBIG);
	for (i = 1; i < t.next; i++)
		free(t.node[i]);
}
