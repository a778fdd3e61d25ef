// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Metadata transactions.  Every metadata change of one operation (inode,
 * bitmap cluster, directory block, block-map node) is encoded into a 4 KiB
 * copy and added here; tx_commit() makes them reach the disk.  This is the
 * single seam through which metadata is written, so the per-host journal
 * (journal/) replaces the in-place writes below without touching callers.
 *
 * The commit merges the blocks into the running journal transaction
 * (fs/commit.c), which reaches the journal and then its home locations as
 * one atomic unit.  Callers still add "pointer" blocks (inode, map node,
 * directory) after the blocks they point to: the journal records them in
 * that order (the in-place writes of a checkpoint go out together, which
 * the journal makes safe: it rewrites them all until the next flush).
 */
#include <errno.h>
#include <stdlib.h>

#include "fs_internal.h"

void tx_begin(struct fs *fs, struct tx *tx)
{
	tx->fs = fs;
	tx->n = 0;
	tx->cap = 0;
	tx->err = 0;
	tx->b = NULL;
	tx->freed = NULL;
	tx->nfreed = tx->freed_cap = 0;
	tx->pins = NULL;
	tx->npins = tx->pins_cap = 0;
	tx->unpinned_asap = false;
	tx->allocd = NULL;
	tx->nallocd = tx->allocd_cap = 0;
}

void tx_add(struct tx *tx, uint64_t off, const void *blk)
{
	int i;

	if (tx->err)
		return;
	for (i = 0; i < tx->n; i++) {
		if (tx->b[i].off == off) {
			/* Re-added: move to the end to keep pointer-after-target order. */
			struct tx_block b = tx->b[i];

			memcpy(b.buf, blk, VMFSD_META_BLOCK);
			memmove(&tx->b[i], &tx->b[i + 1], (size_t)(tx->n - i - 1) * sizeof(b));
			tx->b[tx->n - 1] = b;
			return;
		}
	}
	if (tx->n == tx->cap) {
		int cap = tx->cap ? tx->cap * 2 : 16;
		struct tx_block *nb = realloc(tx->b, (size_t)cap * sizeof(*nb));

		if (!nb) {
			tx->err = -ENOMEM;
			return;
		}
		tx->b = nb;
		tx->cap = cap;
	}
	tx->b[tx->n].buf = bdev_alloc(VMFSD_META_BLOCK);
	if (!tx->b[tx->n].buf) {
		tx->err = -ENOMEM;
		return;
	}
	memcpy(tx->b[tx->n].buf, blk, VMFSD_META_BLOCK);
	tx->b[tx->n].off = off;
	tx->n++;
}

void tx_add_keep_lock(struct tx *tx, uint64_t off, uint8_t *blk)
{
	struct vmfsd_lock lk = { .mode = VMFSD_LOCK_FREE };

	vmfsd_lock_encode(&lk, off / VMFSD_META_BLOCK, blk);
	tx_add(tx, off | VMFSD_JENTRY_KEEP_LOCK, blk);
}

void tx_add_inode(struct tx *tx, struct fs_inode *ip)
{
	struct fs *fs = tx->fs;
	uint64_t off = vmfsd_inode_off(&fs->sb, ip->ino);
	uint8_t *blk;

	if (tx->err || ip->deleted)
		return;
	blk = bdev_alloc(VMFSD_META_BLOCK);
	if (!blk) {
		tx->err = -ENOMEM;
		return;
	}
	ip->d.change_seq++;
	vmfsd_inode_encode(&ip->d, off / VMFSD_META_BLOCK, blk);
	tx_add_keep_lock(tx, off, blk);
	bdev_free(blk);
	ip->dirty = false;
}

static void tx_release(struct tx *tx)
{
	int i;

	for (i = 0; i < tx->n; i++)
		bdev_free(tx->b[i].buf);
	free(tx->b);
	tx->b = NULL;
	tx->n = tx->cap = 0;
	/* Frees of an aborted transaction stay unreusable: safe, and only on
	 * error paths. */
	free(tx->freed);
	tx->freed = NULL;
	tx->nfreed = tx->freed_cap = 0;
	free(tx->allocd);
	tx->allocd = NULL;
	tx->nallocd = tx->allocd_cap = 0;
	/* Merged into the running transaction (or dropped): the next commit
	 * may give these clusters back. */
	alloc_unpin_tx(tx);
}

int tx_commit(struct tx *tx)
{
	struct fs *fs = tx->fs;
	int r = tx->err, i;
	bool asap;

	if (!r) {
		alloc_tx_merge(fs, tx);
		r = tx->err;
	}
	if (!r)
		r = commit_add_tx(fs, tx);
	/* Its frees become reusable after the next commit. */
	for (i = 0; i < tx->nfreed; i++)
		commit_defer_reuse(fs, &tx->freed[i]);
	tx_release(tx);
	asap = tx->unpinned_asap;
	tx->unpinned_asap = false;
	/* With other hosts present, the last commit could not give back a
	 * cluster we had pinned, and we were its last pin: commit now that
	 * our change is merged, rather than a commit interval later, when a
	 * writer that never stops would have pinned it again (and the others
	 * would still wait).  Alone, the next commit is soon enough. */
	if (asap && !fs->jerr)
		(void)commit_locked(fs);
	return r;
}

int tx_commit_after(struct tx *tx, int r)
{
	int c = tx_commit(tx);

	return r ? r : c;
}

void tx_abort(struct tx *tx)
{
	int i, k;

	/* An item both allocated and freed here was never in use on disk
	 * (this transaction never reached it): reusable now.  Other frees of
	 * an aborted transaction stay unreusable (tx_release). */
	for (i = 0; i < tx->nfreed; i++)
		for (k = 0; k < tx->nallocd; k++)
			if (tx->allocd[k].p == tx->freed[i].p &&
			    tx->allocd[k].item == tx->freed[i].item) {
				alloc_release_pending(tx->fs, &tx->freed[i], 1);
				break;
			}
	tx_release(tx);
}
