// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Allocation of inodes, sub-blocks and file blocks from the resource-cluster
 * bitmaps.  All clusters are loaded at mount (a 15 TiB volume has about a
 * thousand: a few MiB); every change re-encodes the touched cluster into the
 * caller's transaction.  Searching starts at a goal (the block after the
 * previous one of the same file) so sequentially written files stay
 * contiguous on disk and large I/Os stay large.
 */
#include <errno.h>
#include <stdlib.h>

#include "fs_internal.h"

static int pool_load(struct fs *fs, struct alloc_pool *p, int kind, uint64_t count,
		     uint32_t nclusters)
{
	uint32_t i, batch = 256;
	uint8_t *buf;
	int r = 0;

	p->kind = kind;
	p->count = count;
	p->nclusters = nclusters;
	p->nfree = 0;
	p->hint = 0;
	p->rc = calloc(nclusters, sizeof(*p->rc));
	buf = bdev_alloc((size_t)batch * VMFSD_META_BLOCK);
	if (!p->rc || !buf) {
		r = -ENOMEM;
		goto out;
	}
	for (i = 0; i < nclusters && !r; i += batch) {
		uint32_t n = nclusters - i < batch ? nclusters - i : batch, j;
		uint64_t off = vmfsd_rc_off(&fs->sb, kind, i);

		r = bdev_pread(fs->bd, buf, (size_t)n * VMFSD_META_BLOCK, off);
		for (j = 0; j < n && !r; j++) {
			struct vmfsd_rc *rc = &p->rc[i + j];
			uint64_t expect = count - (uint64_t)(i + j) * VMFSD_RC_BITS;

			r = vmfsd_rc_decode(buf + (size_t)j * VMFSD_META_BLOCK,
					    off / VMFSD_META_BLOCK + j, rc);
			if (!r && (rc->kind != kind || rc->index != i + j ||
				   rc->nitems != (expect < VMFSD_RC_BITS ? expect : VMFSD_RC_BITS)))
				r = -EUCLEAN;
			if (!r)
				p->nfree += rc->nfree;
		}
	}
out:
	bdev_free(buf);
	return r;
}

int alloc_load(struct fs *fs)
{
	int r;

	r = pool_load(fs, &fs->ipool, VMFSD_RC_INODE, fs->sb.inode_count, fs->sb.ibm_count);
	if (!r)
		r = pool_load(fs, &fs->spool, VMFSD_RC_SUB, fs->sb.sub_count, fs->sb.sbm_count);
	if (!r)
		r = pool_load(fs, &fs->bpool, VMFSD_RC_BLOCK, fs->sb.block_count, fs->sb.dbm_count);
	return r;
}

void alloc_unload(struct fs *fs)
{
	free(fs->ipool.rc);
	free(fs->spool.rc);
	free(fs->bpool.rc);
	fs->ipool.rc = fs->spool.rc = fs->bpool.rc = NULL;
}

static void log_cluster(struct fs *fs, struct alloc_pool *p, uint32_t ci, struct tx *tx)
{
	uint8_t *blk = bdev_alloc(VMFSD_META_BLOCK);
	uint64_t off = vmfsd_rc_off(&fs->sb, p->kind, ci);
	struct vmfsd_lock lk = { .mode = VMFSD_LOCK_FREE };

	if (!blk) {
		tx->err = -ENOMEM;
		return;
	}
	vmfsd_lock_encode(&lk, off / VMFSD_META_BLOCK, blk);
	vmfsd_rc_encode(&p->rc[ci], off / VMFSD_META_BLOCK, blk);
	tx_add(tx, off | VMFSD_JENTRY_KEEP_LOCK, blk);
	bdev_free(blk);
}

bool alloc_is_used(const struct alloc_pool *p, uint64_t item)
{
	const struct vmfsd_rc *rc = &p->rc[item / VMFSD_RC_BITS];
	uint32_t bit = (uint32_t)(item % VMFSD_RC_BITS);

	return rc->bitmap[bit / 8] & (1u << (bit % 8));
}

/* First clear bit in [from, nitems) of one cluster, or -1. */
static int64_t find_clear(const struct vmfsd_rc *rc, uint32_t from)
{
	uint32_t i = from;

	while (i < rc->nitems) {
		if ((i & 63) == 0 && i + 64 <= rc->nitems) {
			uint64_t w;

			memcpy(&w, rc->bitmap + i / 8, 8);
			if (w == ~0ull) {
				i += 64;
				continue;
			}
		}
		if (!(rc->bitmap[i / 8] & (1u << (i % 8))))
			return i;
		i++;
	}
	return -1;
}

int alloc_item(struct fs *fs, struct alloc_pool *p, uint64_t goal, struct tx *tx,
	       uint64_t *out)
{
	uint64_t start = goal && goal < p->count ? goal : p->hint;
	uint32_t ci0, k;

	if (!p->nfree && fs->ndfree) {
		/* Space freed by transactions not yet durable: commit, retry. */
		int r = commit_locked(fs);

		if (r)
			return r;
	}
	if (!p->nfree)
		return -ENOSPC;
	ci0 = (uint32_t)(start / VMFSD_RC_BITS);
	for (k = 0; k <= p->nclusters; k++) {
		uint32_t ci = (ci0 + k) % p->nclusters;
		struct vmfsd_rc *rc = &p->rc[ci];
		uint32_t from = k == 0 ? (uint32_t)(start % VMFSD_RC_BITS) : 0;
		int64_t bit;

		if (!rc->nfree)
			continue;
		bit = find_clear(rc, from);
		if (bit < 0)
			continue;
		rc->bitmap[bit / 8] |= (uint8_t)(1u << (bit % 8));
		rc->nfree--;
		p->nfree--;
		*out = rc->first_item + (uint64_t)bit;
		p->hint = *out + 1 < p->count ? *out + 1 : 0;
		log_cluster(fs, p, ci, tx);
		return 0;
	}
	return -ENOSPC;
}

void alloc_free(struct fs *fs, struct alloc_pool *p, uint64_t item, struct tx *tx)
{
	(void)tx;
	if (item >= p->count || !alloc_is_used(p, item))
		return;
	/* A freed sub-block may next hold file data: drop any pending metadata
	 * image of it so no checkpoint or replay writes over that data. */
	if (p->kind == VMFSD_RC_SUB)
		commit_revoke(fs, vmfsd_sub_off(&fs->sb, item));
	commit_defer_free(fs, p, item);
}

void alloc_free_now(struct fs *fs, struct alloc_pool *p, uint64_t item, struct tx *tx)
{
	uint32_t ci = (uint32_t)(item / VMFSD_RC_BITS);
	uint32_t bit = (uint32_t)(item % VMFSD_RC_BITS);
	struct vmfsd_rc *rc;

	if (item >= p->count)
		return;
	rc = &p->rc[ci];
	if (!(rc->bitmap[bit / 8] & (1u << (bit % 8))))
		return; /* double free: leave it for fsck rather than corrupt counts */
	rc->bitmap[bit / 8] &= (uint8_t)~(1u << (bit % 8));
	rc->nfree++;
	p->nfree++;
	log_cluster(fs, p, ci, tx);
}
