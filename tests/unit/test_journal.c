// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Tests of the journal against a real image formatted by mkfs.vmfsd: a
 * journal is bound to one format of the volume (docs/format.md §12), so
 * after re-formatting a used device no descriptor left over from the old
 * format is ever replayed, even one whose sequence number is exactly the
 * one replay expects next.
 *
 * The binary comes from $MKFS_VMFSD (set by meson); images go to a fresh
 * directory under $VMFSD_TEST_DIR or /var/tmp (O_DIRECT is required).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bdev/bdev.h"
#include "format/format.h"
#include "journal/journal.h"
#include "scratch_image.h"

static void setup(void)
{
	scratch_image_setup("journal");
}

TestSuite(journal, .init = setup, .fini = scratch_image_teardown, .timeout = 60);

/* Formats the image: 2 hosts, 4 MiB journals (mkfs zeroes only their first
 * MiB, so old transactions survive past it). */
static void format(const char *extra)
{
	char cmd[1024];
	int st;

	snprintf(cmd, sizeof(cmd), "'%s' -q %s -s 256M -H 2 -J 4M '%s' >/dev/null 2>&1", mkfs,
		 extra, img);
	st = system(cmd);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "mkfs failed: %s", cmd);
}

static void open_volume(struct bdev **bd, struct vmfsd_sb *sb)
{
	uint8_t *blk;

	cr_assert_eq(bdev_open(img, 0, bd), 0);
	blk = bdev_alloc(VMFSD_META_BLOCK);
	cr_assert_eq(bdev_pread(*bd, blk, VMFSD_META_BLOCK, 0), 0);
	cr_assert_eq(vmfsd_sb_decode(blk, 0, sb), 0);
	bdev_free(blk);
}

/* A target no one reads in this test: an inode-table block far from the
 * root.  Its image carries TAG in every byte after the lock sector. */
static uint64_t target_off(const struct vmfsd_sb *sb)
{
	return sb->itable_off + 1000ull * VMFSD_META_BLOCK;
}

/* Writes COUNT transactions of one image each (2 journal blocks) with seq
 * 1, 2, ... from block 1, as the volume SB describes; returns COUNT. */
static uint32_t write_txs(struct bdev *bd, const struct vmfsd_sb *sb, uint32_t count,
			  uint8_t tag)
{
	uint8_t *im = bdev_alloc(VMFSD_META_BLOCK);
	struct journal_block b;
	struct journal *j;
	uint32_t i;

	memset(im, tag, VMFSD_META_BLOCK);
	b.target = target_off(sb);
	b.img = im;
	cr_assert_eq(journal_open(bd, sb, 0, 1, &j), 0);
	for (i = 0; i < count; i++) {
		im[0] = (uint8_t)i;     /* distinct images, same target */
		cr_assert_eq(journal_write(j, &b, 1), 0);
	}
	/* No mark_clean: the host "crashed" with the journal dirty. */
	journal_close(j);
	bdev_free(im);
	return count;
}

/* Old format: 400 transactions, blocks 1 … 800 (past the first MiB, 256
 * blocks, that mkfs zeroes).  Re-format, then the new host writes 200
 * transactions (blocks 1 … 400) and crashes.  Replay starts at seq 200,
 * block 399; the next block, 401, holds the old format's seq 201 — exactly
 * the sequence number replay expects next.  Only the new transaction may
 * be applied. */
Test(journal, reformat_replays_nothing_stale)
{
	struct journal_replay_info ji;
	struct vmfsd_sb sb, sb2;
	struct bdev *bd;
	uint8_t *got;

	format("");
	open_volume(&bd, &sb);
	write_txs(bd, &sb, 400, 0xAA);
	bdev_close(bd);

	format("-f");
	open_volume(&bd, &sb2);
	cr_assert_eq(sb2.journal_off, sb.journal_off);
	cr_assert_eq(sb2.journal_size, sb.journal_size);
	/* The fresh journal is clean: a mount replays nothing. */
	cr_assert_eq(journal_replay(bd, &sb2, 0, &ji), 0);
	cr_assert_eq(ji.transactions, 0);
	write_txs(bd, &sb2, 200, 0x55);

	cr_assert_eq(journal_replay(bd, &sb2, 0, &ji), 0);
	cr_assert_eq(ji.transactions, 1, "replayed %u transactions: only the new tail (seq 200) "
		     "is ours, the rest are from the previous format", ji.transactions);
	cr_assert_eq(ji.next_seq, 201);
	got = bdev_alloc(VMFSD_META_BLOCK);
	cr_assert_eq(bdev_pread(bd, got, VMFSD_META_BLOCK, target_off(&sb2)), 0);
	cr_assert_eq(got[1], 0x55, "the target holds an image of the previous format");
	cr_assert_eq(got[0], 199);
	bdev_free(got);
	bdev_close(bd);
}

/* A volume from before the journal identity (no JOURNAL_ID feature) has
 * zeros where the identity goes: its journals still replay, and a header
 * of another format (here: the identity of the feature) is not ours. */
Test(journal, volume_without_identity)
{
	struct journal_replay_info ji;
	struct vmfsd_sb sb, legacy;
	struct bdev *bd;

	format("");
	open_volume(&bd, &sb);
	legacy = sb;
	legacy.feat_ro_compat &= ~VMFSD_FEAT_RO_JOURNAL_ID;
	write_txs(bd, &legacy, 3, 0x11);
	cr_assert_eq(journal_is_clean(bd, &legacy, 0), 1);
	cr_assert_eq(journal_replay(bd, &legacy, 0, &ji), 0);
	cr_assert_eq(ji.transactions, 1);       /* the header names the newest */
	cr_assert_eq(ji.next_seq, 4);

	write_txs(bd, &sb, 2, 0x22);
	{
		/* ... with an orphan list of that format. */
		uint64_t area = journal_area_off(&sb, 0), ino = 77;
		uint8_t *blk = bdev_alloc(VMFSD_META_BLOCK);

		cr_assert_eq(bdev_pread(bd, blk, VMFSD_META_BLOCK, area), 0);
		vmfsd_orphans_encode(&ino, 1, area / VMFSD_META_BLOCK, blk);
		cr_assert_eq(bdev_pwrite(bd, blk, VMFSD_META_BLOCK, area), 0);
		bdev_free(blk);
	}
	/* Seen without the identity, that journal is another format's. */
	cr_assert_eq(journal_is_clean(bd, &legacy, 0), 0);
	cr_assert_eq(journal_is_clean(bd, &sb, 0), 1);
	cr_assert_eq(journal_replay(bd, &legacy, 0, &ji), 0);
	cr_assert_eq(ji.transactions, 0);
	cr_assert(ji.foreign);
	{
		/* Rewritten as ours: clean, and its orphan list gone with it. */
		uint64_t area = journal_area_off(&legacy, 0), ino[VMFSD_ORPHAN_MAX];
		uint8_t *blk = bdev_alloc(VMFSD_META_BLOCK);
		struct vmfsd_jhdr jh;
		uint32_t n = 99;

		cr_assert_eq(bdev_pread(bd, blk, VMFSD_META_BLOCK, area), 0);
		cr_assert_eq(vmfsd_jhdr_decode(blk, area / VMFSD_META_BLOCK, &jh), 0);
		cr_assert_eq(jh.clean, 1);
		cr_assert_eq(vmfsd_orphans_decode(blk, area / VMFSD_META_BLOCK, ino, &n), 0);
		cr_assert_eq(n, 0, "the other format's orphan list survived");
		bdev_free(blk);
	}
	cr_assert_eq(journal_is_clean(bd, &legacy, 0), 0);
	bdev_close(bd);
}
