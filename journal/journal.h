/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * journal: the per-host write-ahead log of metadata blocks.
 *
 * A transaction is written as one descriptor (targets and checksums of up to
 * 252 block images) followed by the images, between two cache flushes:
 *
 *   flush            data the transaction exposes, and the in-place
 *                    writes of the previous transaction, are durable
 *   header           tail := this transaction (nothing older needs replay),
 *   descriptor+images  sent together (neither is durable before the flush)
 *   flush            the transaction is durable: the caller may now write
 *                    the images in place (and need not flush them)
 *
 * Replay applies every complete transaction from the header's tail in
 * sequence order, so it is idempotent, and it takes a journal area rather
 * than a mounted filesystem: a survivor can replay a dead host's journal.
 *
 * Every header and descriptor carries the journal identity of the volume's
 * format (struct vmfsd_journal_id: UUID and format_gen): a block of an
 * earlier format of the same device ends the log, whatever its sequence
 * number (docs/journal.md "Replay").
 */
#ifndef VMFSD_JOURNAL_H
#define VMFSD_JOURNAL_H

#include <stdint.h>

#include "bdev/bdev.h"
#include "format/format.h"

struct journal;

struct journal_block {
	uint64_t target;        /* device byte offset, 4 KiB aligned,
				 * | VMFSD_JENTRY_KEEP_LOCK */
	const void *img;        /* 4 KiB image */
};

/* Writes the N 4 KiB images of one transaction (of the volume SB
 * describes) in place, leaving the lock sector alone where a target
 * carries VMFSD_JENTRY_KEEP_LOCK: shared by commit and replay so both
 * treat lock records the same way.  Two batches: first every block that
 * is not an inode, then the inodes, once the first batch is written.
 * For a crash the order does not matter (the journal holds them all
 * until the next flush); it is for the other hosts, which read
 * directories and attributes without a lock while we write them: an
 * inode they read is never newer than the directory blocks and map nodes
 * it points to (docs/cluster.md §5.5). */
int journal_write_homes(struct bdev *bd, const struct vmfsd_sb *sb,
			const struct journal_block *b, uint32_t n);

struct journal_replay_info {
	uint32_t transactions;  /* complete transactions applied */
	uint32_t blocks;        /* block images written in place */
	uint64_t next_seq;      /* sequence the next transaction will get */
	int was_clean;          /* header said: nothing to replay */
	int foreign;            /* the header was of another format of the
				 * volume: read as empty, rewritten as ours */
};

/* Byte offset and size of SLOT's journal area. */
uint64_t journal_area_off(const struct vmfsd_sb *sb, uint32_t slot);

/* Replays SLOT's journal area of the volume SB describes and leaves it empty
 * and clean.  Errors: -EUCLEAN/-EBADMSG header damaged, I/O errors. */
int journal_replay(struct bdev *bd, const struct vmfsd_sb *sb, uint32_t slot,
		   struct journal_replay_info *info);

/* 0 if SLOT's journal needs no replay, 1 if it does (a read-only mount
 * cannot replay); -EUCLEAN/-EBADMSG if its header is damaged, I/O errors. */
int journal_is_clean(struct bdev *bd, const struct vmfsd_sb *sb, uint32_t slot);

/* Opens SLOT's replayed (clean) journal for writing, starting at NEXT_SEQ. */
int journal_open(struct bdev *bd, const struct vmfsd_sb *sb, uint32_t slot, uint64_t next_seq,
		 struct journal **out);
void journal_close(struct journal *j);
/* Most blocks one transaction may carry. */
uint32_t journal_max_blocks(const struct journal *j);
/* Writes one transaction durably (see above).  -E2BIG if N is too large. */
int journal_write(struct journal *j, const struct journal_block *b, uint32_t n);
/* journal_write in two steps, so that a caller can let go of its images
 * before the I/O: journal_stage copies the N images of B into the
 * journal's own buffer and points B's images at the copies (valid until
 * the next stage; the in-place writes can use them); journal_write_staged
 * writes what was staged, durably (it needs no lock of the caller's, but
 * only one stage or write may run at a time). */
int journal_stage(struct journal *j, struct journal_block *b, uint32_t n);
int journal_write_staged(struct journal *j);
/* After the caller flushed every in-place write: marks the journal clean. */
int journal_mark_clean(struct journal *j);
/* Flushes the in-place writes of the transactions written so far and marks
 * the journal clean, durably: after it, no replay can write those images
 * again.  Needed before a lock is released, or a replay after a crash could
 * roll back what the lock's next holder wrote. */
int journal_checkpoint(struct journal *j);

#endif
