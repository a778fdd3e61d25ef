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
#include <unistd.h>

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
	p->crc = calloc(nclusters, sizeof(*p->crc));
	p->held = calloc(nclusters, 1);
	p->pend = calloc(nclusters, sizeof(*p->pend));
	p->tx_pins = calloc(nclusters, sizeof(*p->tx_pins));
	p->yield_until = calloc(nclusters, sizeof(*p->yield_until));
	p->asap = calloc(nclusters, sizeof(*p->asap));
	buf = bdev_alloc((size_t)batch * VMFSD_META_BLOCK);
	if (!p->rc || !p->crc || !p->held || !p->pend || !p->tx_pins || !p->yield_until || !p->asap ||
	    !buf) {
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
			if (!r) {
				p->nfree += rc->nfree;
				p->crc[i + j] = *rc;
			}
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
	free(fs->ipool.crc);
	free(fs->spool.crc);
	free(fs->bpool.crc);
	fs->ipool.crc = fs->spool.crc = fs->bpool.crc = NULL;
	free(fs->ipool.held);
	free(fs->spool.held);
	free(fs->bpool.held);
	fs->ipool.held = fs->spool.held = fs->bpool.held = NULL;
	{
		struct alloc_pool *pools[3] = { &fs->ipool, &fs->spool, &fs->bpool };
		uint32_t i;
		int k;

		for (k = 0; k < 3; k++) {
			for (i = 0; pools[k]->pend && i < pools[k]->nclusters; i++)
				free(pools[k]->pend[i]);
			free(pools[k]->pend);
			pools[k]->pend = NULL;
			free(pools[k]->tx_pins);
			pools[k]->tx_pins = NULL;
			free(pools[k]->yield_until);
			pools[k]->yield_until = NULL;
			free(pools[k]->asap);
			pools[k]->asap = NULL;
		}
	}
	fs->ipool.rc = fs->spool.rc = fs->bpool.rc = NULL;
}

/* Pins cluster CI of P for TX until TX is committed or aborted.
 *
 * The change to the bitmap lives only in the in-memory copy and in TX
 * until tx_commit() merges it into the running journal transaction, and
 * writers drop meta_lock in between (write_new_unit writes the data of a
 * new unit first).  If the commit thread gave the cluster's lock back in
 * that window, as it does after every commit when other hosts are
 * present, another host would take the cluster, read a bitmap without
 * our bit and hand out the same item: two files sharing blocks, a file
 * just written reading another's data.  So a pinned cluster is never
 * released (cluster_release_rcs); the commit after TX's releases it. */
static int pin_cluster(struct alloc_pool *p, uint32_t ci, struct tx *tx)
{
	int i;

	for (i = 0; i < tx->npins; i++)
		if (tx->pins[i].p == p && tx->pins[i].ci == ci)
			return 0;
	if (tx->npins == tx->pins_cap) {
		int cap = tx->pins_cap ? tx->pins_cap * 2 : 4;
		struct tx_pin *n = realloc(tx->pins, (size_t)cap * sizeof(*n));

		if (!n)
			return -ENOMEM;
		tx->pins = n;
		tx->pins_cap = cap;
	}
	tx->pins[tx->npins++] = (struct tx_pin){ p, ci };
	atomic_fetch_add(&p->tx_pins[ci], 1);
	return 0;
}

void alloc_unpin_tx(struct tx *tx)
{
	int i;

	for (i = 0; i < tx->npins; i++) {
		struct alloc_pool *p = tx->pins[i].p;
		uint32_t ci = tx->pins[i].ci;

		if (atomic_fetch_sub(&p->tx_pins[ci], 1) == 1 && atomic_load(&p->asap[ci]))
			tx->unpinned_asap = true;
	}
	free(tx->pins);
	tx->pins = NULL;
	tx->npins = tx->pins_cap = 0;
}

static void log_cluster(struct fs *fs, struct alloc_pool *p, uint32_t ci, struct tx *tx)
{
	uint8_t *blk;
	uint64_t off = vmfsd_rc_off(&fs->sb, p->kind, ci);

	if (pin_cluster(p, ci, tx)) {
		tx->err = -ENOMEM;
		return;
	}
	blk = bdev_alloc(VMFSD_META_BLOCK);
	if (!blk) {
		tx->err = -ENOMEM;
		return;
	}
	vmfsd_rc_encode(&p->rc[ci], off / VMFSD_META_BLOCK, blk);
	tx_add_keep_lock(tx, off, blk);
	bdev_free(blk);
}

/* Sets (or clears) ITEM's bit in the merged copy of its cluster. */
static void crc_apply(struct alloc_pool *p, uint64_t item, bool used)
{
	struct vmfsd_rc *c = &p->crc[item / VMFSD_RC_BITS];
	uint32_t bit = (uint32_t)(item % VMFSD_RC_BITS);
	uint8_t m = (uint8_t)(1u << (bit % 8));

	if (!!(c->bitmap[bit / 8] & m) == used)
		return;
	if (used) {
		c->bitmap[bit / 8] |= m;
		c->nfree--;
	} else {
		c->bitmap[bit / 8] &= (uint8_t)~m;
		c->nfree++;
	}
}

/*
 * The image of a cluster a transaction carries into the journal must hold
 * the changes of every transaction merged before it, not a snapshot of
 * the live bitmap taken when it logged the cluster: transactions commit
 * in another order than they log (a writer drops meta_lock between its
 * allocation and its tx_commit), and a snapshot taken before another
 * transaction's allocation, merged after it, wrote that bit back to clear:
 * once the cluster was given back, another host (or this one, after
 * reading the cluster again) handed the same block out twice.  So the
 * merged copy (crc) gets exactly this transaction's allocations and frees,
 * and that copy is what goes into the journal.
 */
void alloc_tx_merge(struct fs *fs, struct tx *tx)
{
	uint8_t *blk;
	int i;

	if (!tx->npins)
		return;
	for (i = 0; i < tx->nallocd; i++)
		crc_apply(tx->allocd[i].p, tx->allocd[i].item, true);
	for (i = 0; i < tx->nfreed; i++)
		crc_apply(tx->freed[i].p, tx->freed[i].item, false);
	blk = bdev_alloc(VMFSD_META_BLOCK);
	if (!blk) {
		tx->err = -ENOMEM;
		return;
	}
	for (i = 0; i < tx->npins; i++) {
		struct alloc_pool *p = tx->pins[i].p;
		uint32_t ci = tx->pins[i].ci;
		uint64_t off = vmfsd_rc_off(&fs->sb, p->kind, ci);

		vmfsd_rc_encode(&p->crc[ci], off / VMFSD_META_BLOCK, blk);
		tx_add_keep_lock(tx, off, blk);
	}
	bdev_free(blk);
}

/* First bit in [from, nitems) of one cluster that is clear and not
 * pending reuse (PEND may be NULL), or -1. */
static int64_t find_clear(const struct vmfsd_rc *rc, const uint8_t *pend, uint32_t from)
{
	uint32_t i = from;

	while (i < rc->nitems) {
		if ((i & 63) == 0 && i + 64 <= rc->nitems) {
			uint64_t w, q = 0;

			memcpy(&w, rc->bitmap + i / 8, 8);
			if (pend)
				memcpy(&q, pend + i / 8, 8);
			if ((w | q) == ~0ull) {
				i += 64;
				continue;
			}
		}
		if (!(rc->bitmap[i / 8] & (1u << (i % 8))) &&
		    !(pend && (pend[i / 8] & (1u << (i % 8)))))
			return i;
		i++;
	}
	return -1;
}


/* Takes one clear bit of cluster CI (which we hold), near FROM. */
static bool take_bit(struct fs *fs, struct alloc_pool *p, uint32_t ci, uint32_t from,
		     struct tx *tx, uint64_t *out)
{
	struct vmfsd_rc *rc = &p->rc[ci];
	int64_t bit;

	if (!rc->nfree)
		return false;
	bit = find_clear(rc, p->pend[ci], from);
	if (bit < 0 && from)
		bit = find_clear(rc, p->pend[ci], 0);
	if (bit < 0)
		return false;
	if (tx->nallocd == tx->allocd_cap) {
		int cap = tx->allocd_cap ? tx->allocd_cap * 2 : 8;
		struct tx_free *n = realloc(tx->allocd, (size_t)cap * sizeof(*n));

		if (!n) {
			tx->err = -ENOMEM;
			return false;
		}
		tx->allocd = n;
		tx->allocd_cap = cap;
	}
	rc->bitmap[bit / 8] |= (uint8_t)(1u << (bit % 8));
	rc->nfree--;
	p->nfree--;
	*out = rc->first_item + (uint64_t)bit;
	tx->allocd[tx->nallocd++] = (struct tx_free){ p, *out };
	p->hint = *out + 1 < p->count ? *out + 1 : 0;
	log_cluster(fs, p, ci, tx);
	return true;
}

bool alloc_item_free_here(const struct fs *fs, const struct alloc_pool *p, uint64_t item)
{
	uint32_t ci = (uint32_t)(item / VMFSD_RC_BITS), bit = (uint32_t)(item % VMFSD_RC_BITS);

	if (item >= p->count || (fs->hb && p->held[ci] != 1))
		return false;
	return !(p->rc[ci].bitmap[bit / 8] & (1u << (bit % 8)));
}

/* Allocation only ever sets bits in clusters this host holds, so two hosts
 * never hand out the same item.  First the clusters we hold (the goal's
 * first), then new ones, starting at a place that depends on our slot so
 * hosts spread over the volume instead of queueing for the same cluster. */
int alloc_item(struct fs *fs, struct alloc_pool *p, uint64_t goal, struct tx *tx,
	       uint64_t *out)
{
	return alloc_item_wait(fs, p, goal, tx, CLUSTER_WAIT_US, out);
}

int alloc_item_wait(struct fs *fs, struct alloc_pool *p, uint64_t goal, struct tx *tx,
		    uint32_t wait_us, uint64_t *out)
{
	uint64_t start = goal && goal < p->count ? goal : p->hint;
	uint32_t ci0 = (uint32_t)(start / VMFSD_RC_BITS), k, first, waited;
	int pass, r;

	for (k = 0; k < p->nclusters; k++) {
		uint32_t ci = (ci0 + k) % p->nclusters;

		if ((p->held[ci] || !fs->hb) &&
		    take_bit(fs, p, ci, k == 0 ? (uint32_t)(start % VMFSD_RC_BITS) : 0, tx, out))
			return 0;
	}
	if (fs->nreuse || fs->ndfree) {
		/* Space freed by transactions not yet durable: commit, retry. */
		r = commit_locked(fs);
		if (r)
			return r;
		for (k = 0; k < p->nclusters; k++)
			if ((p->held[k] || !fs->hb) && take_bit(fs, p, k, 0, tx, out))
				return 0;
	}
	if (!fs->hb)
		return -ENOSPC;
	first = (uint32_t)((uint64_t)fs->slot * p->nclusters / fs->sb.max_hosts);
	/* Pass 0: clusters our (possibly stale) copy says have room; pass 1:
	 * all others, whose copy may be older than another host's frees.
	 * Clusters busy at other hosts are retried for a while: they give
	 * them back after their next commit (fs/cluster.c). */
	for (waited = 0;; waited += CLUSTER_RETRY_US) {
		bool busy = false;

		for (pass = 0; pass < 2; pass++) {
			for (k = 0; k < p->nclusters; k++) {
				uint32_t ci = (first + k) % p->nclusters;

				if (p->held[ci] || (pass == 0) != (p->rc[ci].nfree > 0))
					continue;
				if (hb_clock_ns() < p->yield_until[ci]) {
					busy = true;    /* just given back: others first */
					continue;
				}
				r = cluster_take_rc(fs, p, ci);
				if (r == -EBUSY || r == -EAGAIN) {
					busy = true;
					continue;
				}
				if (r)
					return r;
				p->held[ci] = 1;
				if (take_bit(fs, p, ci, 0, tx, out))
					return 0;
			}
		}
		if (!busy || waited >= wait_us)
			break;
		/* We wait with meta_lock held, so our commit thread cannot give
		 * back the clusters of other pools we hold, and the host we wait
		 * for may be waiting for one of those (inode cluster here, file
		 * blocks there): commit and release them ourselves, now and
		 * then while we wait.  Clusters our open transactions changed
		 * stay held (pin_cluster). */
		if (waited % (25 * CLUSTER_RETRY_US) == 0) {
			r = commit_locked(fs);
			if (r)
				return r;
		}
		usleep(CLUSTER_RETRY_US);
	}
	return -ENOSPC;
}

/* Map nodes beyond one leaf per VMFSD_MAP_NODE_SLOTS blocks: the upper
 * levels and the partly used leaves at the ends of files.  64 covers tens
 * of large files being filled at once; a sparse file that maps one block
 * per leaf can still outrun it (then its writes fail with ENOSPC early). */
#define SUB_RESERVE_SLACK 64u

uint64_t alloc_sub_reserve(const struct fs *fs)
{
	return fs->bpool.nfree / VMFSD_MAP_NODE_SLOTS + SUB_RESERVE_SLACK;
}

uint64_t alloc_usable_blocks(const struct fs *fs)
{
	uint64_t blocks = fs->bpool.nfree, subs = fs->spool.nfree, cap;
	uint32_t i;

	for (i = 0; i < fs->ndfree; i++) {
		if (fs->dfree[i].p == &fs->bpool)
			blocks++;
		else if (fs->dfree[i].p == &fs->spool)
			subs++;
	}
	/* Each leaf maps VMFSD_MAP_NODE_SLOTS blocks; the first
	 * VMFSD_MAP_ROOT_SLOTS of a file need none, ignored here (exact for
	 * the one large file that matters: the last one filling the volume
	 * is at least this conservative). */
	cap = subs * VMFSD_MAP_NODE_SLOTS;
	return blocks < cap ? blocks : cap;
}

void alloc_free(struct fs *fs, struct alloc_pool *p, uint64_t item, struct tx *tx)
{
	(void)tx;
	if (item >= p->count)
		return;
	/* A freed sub-block may next hold file data: drop any pending metadata
	 * image of it so no checkpoint or replay writes over that data. */
	if (p->kind == VMFSD_RC_SUB)
		commit_revoke(fs, vmfsd_sub_off(&fs->sb, item));
	if (alloc_free_now(fs, p, item, tx))
		commit_defer_free(fs, p, item); /* cluster busy elsewhere: retry */
}

void alloc_release_pending(struct fs *fs, const struct tx_free *v, uint32_t n)
{
	uint32_t i;

	(void)fs;
	for (i = 0; i < n; i++) {
		struct alloc_pool *p = v[i].p;
		uint32_t ci = (uint32_t)(v[i].item / VMFSD_RC_BITS);
		uint32_t bit = (uint32_t)(v[i].item % VMFSD_RC_BITS);

		if (p->pend[ci])
			p->pend[ci][bit / 8] &= (uint8_t)~(1u << (bit % 8));
	}
}

int alloc_free_now(struct fs *fs, struct alloc_pool *p, uint64_t item, struct tx *tx)
{
	uint32_t ci = (uint32_t)(item / VMFSD_RC_BITS);
	uint32_t bit = (uint32_t)(item % VMFSD_RC_BITS);
	struct vmfsd_rc *rc;
	int r;

	if (item >= p->count)
		return 0;
	if (fs->hb && !p->held[ci]) {
		/* Another host's cluster: take it just for this free (released
		 * after the commit that writes it), or try again later. */
		r = cluster_take_rc(fs, p, ci);
		if (r)
			return r;
		p->held[ci] = 2;
	}
	rc = &p->rc[ci];
	if (!(rc->bitmap[bit / 8] & (1u << (bit % 8))))
		return 0; /* double free: leave it for fsck rather than corrupt counts */
	if (!p->pend[ci]) {
		p->pend[ci] = calloc(1, VMFSD_META_BLOCK - VMFSD_RC_BITMAP_OFF);
		if (!p->pend[ci])
			return 0;       /* no memory to guard reuse: leak it instead */
	}
	if (tx->nfreed == tx->freed_cap) {
		int cap = tx->freed_cap ? tx->freed_cap * 2 : 32;
		struct tx_free *n = realloc(tx->freed, (size_t)cap * sizeof(*n));

		if (!n)
			return 0;       /* same: better leaked than reused early */
		tx->freed = n;
		tx->freed_cap = cap;
	}
	tx->freed[tx->nfreed++] = (struct tx_free){ p, item };
	p->pend[ci][bit / 8] |= (uint8_t)(1u << (bit % 8));
	rc->bitmap[bit / 8] &= (uint8_t)~(1u << (bit % 8));
	rc->nfree++;
	p->nfree++;
	log_cluster(fs, p, ci, tx);
	return 0;
}
