// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Passes 2 and 3: the resource clusters (what the bitmaps say) and the
 * allocated inodes with their lock records and block maps (what is really
 * used).
 *
 * The inode table is read only where the inode bitmap says an inode is in
 * use, in runs of adjacent inodes of up to 1 MiB per read, so a 1 TiB
 * volume with ten thousand files costs a few dozen reads.  Every map entry
 * is range-checked and marked in the truth bitmaps of its pool; the first
 * owner of an item keeps it, a later one loses that entry (double
 * reference).  Map nodes are verified against their owner (inode number
 * and generation), level and first unit, so a node that is correct but
 * belongs to another file, or to an earlier life of this one, is caught.
 *
 * The map walker here is shared by the later passes: releasing an orphan's
 * units, cutting a directory at a hole, and growing a directory (map_set)
 * for lost+found.  The tree code under it is vmfsd's own (format/maptree.c):
 * this file only supplies node storage (reads through the write queue,
 * changed nodes queued) and the per-node and per-entry checks.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "format/maptree.h"
#include "fsck_internal.h"

/* Inode-table reads: up to 1 MiB, bridging gaps of up to 8 free inodes
 * (reading 32 KiB more is cheaper than another request). */
#define ITABLE_BATCH 256u
#define ITABLE_GAP 8u

static const char *err_name(int r)
{
	switch (r) {
	case -EBADMSG:
		return "checksum mismatch";
	case -EUCLEAN:
		return "bad magic, owner or field";
	default:
		return "unreadable";
	}
}

/* ---------------- pools ---------------- */

static int pool_init(struct pool *p, int kind, const char *name, uint64_t count,
		     uint32_t nclusters)
{
	size_t bytes = (size_t)nclusters * (VMFSD_RC_BITS / 8);

	p->kind = kind;
	p->name = name;
	p->count = count;
	p->nclusters = nclusters;
	p->disk = calloc(1, bytes ? bytes : 1);
	p->ref = calloc(1, bytes ? bytes : 1);
	p->cl_bad = calloc(1, nclusters ? nclusters : 1);
	if (!p->disk || !p->ref || !p->cl_bad)
		return -ENOMEM;
	return 0;
}

static bool disk_known(const struct pool *p, uint64_t item)
{
	return !(p->cl_bad[item / VMFSD_RC_BITS] & CL_BAD);
}

/* Marks ITEM referenced; false if it already was (a double reference). */
bool ck_ref_mark(struct fsck *c, struct pool *p, uint64_t item)
{
	(void)c;
	if (bit_get(p->ref, item))
		return false;
	bit_set(p->ref, item);
	p->nref++;
	return true;
}

void ck_ref_unmark(struct fsck *c, struct pool *p, uint64_t item)
{
	(void)c;
	if (!bit_get(p->ref, item))
		return;
	bit_clear(p->ref, item);
	p->nref--;
}

/* An item the repair itself takes away from an inode (released orphan,
 * dropped entry): out of the truth, and out of our copy of the disk bits
 * too, so pass 6 rewrites its cluster without reporting it a second time
 * as a leak. */
void ck_ref_drop(struct fsck *c, struct pool *p, uint64_t item)
{
	if (item >= p->count)
		return;
	ck_ref_unmark(c, p, item);
	if (disk_known(p, item) && bit_get(p->disk, item)) {
		bit_clear(p->disk, item);
		p->cl_bad[item / VMFSD_RC_BITS] |= CL_DIRTY;
	}
}

/* Free in the truth, and free on disk where the disk is known; failing
 * that, anything free in the truth: the truth is complete (every item a
 * surviving inode uses is marked), and a cluster we allocate from is
 * rebuilt from it, damaged or not. */
int ck_pool_alloc(struct fsck *c, struct pool *p, uint64_t *out)
{
	uint64_t i, first = p->kind == VMFSD_RC_INODE ? VMFSD_FIRST_FREE_INO : 1;
	int strict;

	for (strict = 1; strict >= 0; strict--) {
		for (i = first; i < p->count; i++) {
			uint32_t ci = (uint32_t)(i / VMFSD_RC_BITS);

			if ((i & 63) == 0 && i + 64 <= p->count) {
				uint64_t w;

				memcpy(&w, p->ref + i / 8, 8);
				if (w == ~0ull) {
					i += 63;
					continue;
				}
			}
			if (bit_get(p->ref, i))
				continue;
			if (strict && ((p->cl_bad[ci] & CL_BAD) || bit_get(p->disk, i)))
				continue;
			ck_ref_mark(c, p, i);
			/* Ours now: the cluster must be rewritten, and the
			 * difference is no problem to report. */
			bit_set(p->disk, i);
			p->cl_bad[ci] |= CL_DIRTY;
			*out = i;
			return 0;
		}
	}
	return -ENOSPC;
}

/* ---------------- resource clusters (pass 2) ---------------- */

static bool zero_sector(const uint8_t *p)
{
	size_t i;

	for (i = 0; i < VMFSD_SECTOR; i++)
		if (p[i])
			return false;
	return true;
}

static int check_lock(struct fsck *c, uint8_t *sector, uint64_t blocknr, uint64_t ino,
		      const char *what, bool *changed)
{
	struct vmfsd_lock lk;
	int r, v;

	/* The fs never writes lock sectors (they are the lock manager's, ATS
	 * only) and mkfs leaves the inode table untouched: an all-zero sector
	 * is a lock that was never taken, free like an all-zero heartbeat
	 * slot. */
	if (zero_sector(sector))
		return 0;
	r = vmfsd_lock_decode(sector, blocknr, &lk);
	v = r ? LOCK_MALFORMED : fsck_lock_judge(c, &lk);
	if (v == LOCK_VALID)
		return 0;
	if (v == LOCK_MALFORMED) {
		fsck_report(c, P_LOCK_BAD, WHERE(.ino = ino, W_BLOCK(blocknr)),
			    "rewrite it as a free lock", "lock record of %s is damaged (%s)", what,
			    r ? err_name(r) : "a holder outside the volume's slots");
		memset(&lk, 0, sizeof(lk));
		lk.lock_gen = 1;
	} else {
		/* Locks are broken lazily (docs/cluster.md §4.2): the next
		 * acquirer drops holders whose slot moved on, so a stale record
		 * is a normal leftover of a crash, not damage.  A note; a
		 * repair tidies it since no host is live then. */
		fsck_report(c, P_LOCK_STALE, WHERE(.ino = ino, W_BLOCK(blocknr)),
			    "released by a repair (-y or -p), else dropped by the next acquirer",
			    "lock record of %s is held (%s) by slot %u generation %" PRIu64
			    ", which is gone", what, lk.mode == VMFSD_LOCK_EXCL ? "exclusive" :
			    lk.mode == VMFSD_LOCK_RO ? "read-only" : "multi-writer",
			    lk.owner_slot, lk.owner_slot_gen);
		memset(lk.holders, 0, sizeof(lk.holders));
		memset(lk.holder_gen8, 0, sizeof(lk.holder_gen8));
		lk.mode = VMFSD_LOCK_FREE;
		lk.owner_slot = 0;
		lk.nholders = 0;
		lk.owner_slot_gen = 0;
		lk.lock_gen++;
	}
	vmfsd_lock_encode(&lk, blocknr, sector);
	*changed = true;
	return 0;
}

static int pool_clusters(struct fsck *c, struct pool *p, uint32_t *done, uint32_t total)
{
	static struct vmfsd_rc rc;      /* 3 KiB: off the stack */
	const uint32_t batch = 256;
	uint8_t *buf = bdev_alloc((size_t)batch * VMFSD_META_BLOCK);
	uint32_t i, j, n;
	int r = 0;

	if (!buf)
		return -ENOMEM;
	for (i = 0; i < p->nclusters && !r; i += n) {
		uint64_t off = vmfsd_rc_off(&c->sb, p->kind, i);

		n = p->nclusters - i < batch ? p->nclusters - i : batch;
		r = ck_meta_read_many(c, off, buf, (size_t)n * VMFSD_META_BLOCK);
		for (j = 0; j < n && !r; j++) {
			uint8_t *blk = buf + (size_t)j * VMFSD_META_BLOCK;
			uint64_t bnr = off / VMFSD_META_BLOCK + j, first = (uint64_t)(i + j) * VMFSD_RC_BITS;
			uint64_t expect = p->count - first;
			bool changed = false;
			char what[64];
			int d;

			if (expect > VMFSD_RC_BITS)
				expect = VMFSD_RC_BITS;
			snprintf(what, sizeof(what), "%s bitmap cluster %u", p->name, i + j);
			r = check_lock(c, blk, bnr, 0, what, &changed);
			if (!r && changed)
				r = ck_wq_put(c, bnr * VMFSD_META_BLOCK, blk, WQ_RC);
			d = vmfsd_rc_decode(blk, bnr, &rc);
			if (d) {
				fsck_report(c, P_RC_BAD, WHERE(W_BLOCK(bnr)),
					    "rebuild it from the blocks in use",
					    "%s is damaged (%s)", what, err_name(d));
				p->cl_bad[i + j] |= CL_BAD;
			} else if (rc.kind != p->kind || rc.index != i + j || rc.nitems != expect) {
				fsck_report(c, P_RC_HEADER, WHERE(W_BLOCK(bnr)),
					    "rebuild it from the blocks in use",
					    "%s has kind %u, index %u, %u items (expected %d, %u, %" PRIu64
					    ")", what, rc.kind, rc.index, rc.nitems, p->kind, i + j,
					    expect);
				p->cl_bad[i + j] |= CL_BAD;
			} else {
				memcpy(p->disk + (size_t)(i + j) * (VMFSD_RC_BITS / 8), rc.bitmap,
				       VMFSD_RC_BITS / 8);
			}
			fsck_progress(c, 2, "resource clusters", ++*done, total);
		}
	}
	bdev_free(buf);
	return r;
}

int fsck_clusters(struct fsck *c)
{
	uint32_t done = 0, total = c->sb.ibm_count + c->sb.sbm_count + c->sb.dbm_count;
	int r;

	r = pool_init(&c->ip, VMFSD_RC_INODE, "inode", c->sb.inode_count, c->sb.ibm_count);
	if (!r)
		r = pool_init(&c->sp, VMFSD_RC_SUB, "sub-block", c->sb.sub_count, c->sb.sbm_count);
	if (!r)
		r = pool_init(&c->bp, VMFSD_RC_BLOCK, "file block", c->sb.block_count,
			      c->sb.dbm_count);
	if (!r)
		r = pool_clusters(c, &c->ip, &done, total);
	if (!r)
		r = pool_clusters(c, &c->sp, &done, total);
	if (!r)
		r = pool_clusters(c, &c->bp, &done, total);
	if (r)
		return r;
	/* Reserved at mkfs: inode 0 and sub-block / file block 0 (0 = none). */
	ck_ref_mark(c, &c->ip, 0);
	ck_ref_mark(c, &c->sp, 0);
	ck_ref_mark(c, &c->bp, 0);
	return 0;
}

/* ---------------- inode records ---------------- */

static uint32_t ihash_of(uint64_t ino, uint32_t size)
{
	return (uint32_t)((ino * 0x9e3779b97f4a7c15ull) >> 32) & (size - 1);
}

struct irec *ck_irec_find(struct fsck *c, uint64_t ino)
{
	uint32_t h;

	if (!c->ihash_size)
		return NULL;
	for (h = ihash_of(ino, c->ihash_size); c->ihash[h]; h = (h + 1) & (c->ihash_size - 1)) {
		struct irec *r = irec_at(c, c->ihash[h] - 1);

		if (r->ino == ino)
			return r;
	}
	return NULL;
}

static int ihash_grow(struct fsck *c)
{
	uint32_t size = c->ihash_size ? c->ihash_size * 2 : 4096, i;
	uint32_t *t = calloc(size, sizeof(*t));

	if (!t)
		return -ENOMEM;
	for (i = 0; i < c->nir; i++) {
		uint32_t h = ihash_of(irec_at(c, i)->ino, size);

		while (t[h])
			h = (h + 1) & (size - 1);
		t[h] = i + 1;
	}
	free(c->ihash);
	c->ihash = t;
	c->ihash_size = size;
	return 0;
}

int ck_irec_add(struct fsck *c, uint64_t ino, struct irec **out)
{
	struct irec *r;
	uint32_t h;

	if ((c->nir + 1) * 2 > c->ihash_size && ihash_grow(c))
		return -ENOMEM;
	if (c->nir / IREC_CHUNK >= c->nchunks) {
		struct irec **nc = realloc(c->chunks, (c->nchunks + 1) * sizeof(*nc));

		if (!nc)
			return -ENOMEM;
		c->chunks = nc;
		c->chunks[c->nchunks] = calloc(IREC_CHUNK, sizeof(struct irec));
		if (!c->chunks[c->nchunks])
			return -ENOMEM;
		c->nchunks++;
	}
	r = irec_at(c, c->nir);
	memset(r, 0, sizeof(*r));
	r->ino = ino;
	for (h = ihash_of(ino, c->ihash_size); c->ihash[h]; h = (h + 1) & (c->ihash_size - 1))
		;
	c->ihash[h] = ++c->nir;
	*out = r;
	return 0;
}

/* ---------------- inode blocks ---------------- */

int ck_inode_load(struct fsck *c, uint64_t ino, struct vmfsd_inode *in)
{
	uint64_t off = vmfsd_inode_off(&c->sb, ino);
	int r = ck_meta_read(c, off, c->scratch);

	if (!r)
		r = vmfsd_inode_decode(c->scratch, off / VMFSD_META_BLOCK, in);
	return r;
}

/* Encodes IN over its block, keeping the lock sector (or writing a free
 * one where the old sector is not a lock record: a new inode). */
int ck_inode_store(struct fsck *c, const struct vmfsd_inode *in)
{
	uint64_t off = vmfsd_inode_off(&c->sb, in->ino), bnr = off / VMFSD_META_BLOCK;
	struct vmfsd_lock lk;
	int r = ck_meta_read(c, off, c->scratch);

	if (r)
		return r;
	if (!zero_sector(c->scratch) && vmfsd_lock_decode(c->scratch, bnr, &lk)) {
		memset(&lk, 0, sizeof(lk));
		vmfsd_lock_encode(&lk, bnr, c->scratch);
	}
	vmfsd_inode_encode(in, bnr, c->scratch);
	return ck_wq_put(c, off, c->scratch, WQ_INODE);
}

int ck_inode_edit(struct fsck *c, uint64_t ino, void (*edit)(struct vmfsd_inode *, void *),
	       void *arg)
{
	int r = ck_inode_load(c, ino, c->in);

	if (r)
		return r;
	edit(c->in, arg);
	return ck_inode_store(c, c->in);
}

/* ---------------- the map walker ---------------- */

enum { W_KEEP = 0, W_CLEAR = VMFSD_MAPTREE_CLEAR, W_SKIP = VMFSD_MAPTREE_SKIP };

struct walk {
	struct fsck *c;
	struct irec *r;
	uint64_t ino, gen;
	uint64_t from;          /* only units at or past this one */
	bool verify;            /* verify nodes (pass 3); later walks trust them */
	/* Before a node is read: range and ownership.  W_KEEP, W_CLEAR, W_SKIP. */
	int (*ptr)(struct walk *w, uint32_t sblk, unsigned level, uint64_t lo);
	/* A node failed verification (its pointer is cleared). */
	void (*bad)(struct walk *w, uint32_t sblk, unsigned level, uint64_t lo, int err);
	/* A node passed verification. */
	void (*node_ok)(struct walk *w, uint32_t sblk, unsigned level, uint64_t lo);
	/* A data entry: returns 1 if it changed the entry, <0 on error. */
	int (*leaf)(struct walk *w, uint8_t *slot, uint64_t lo);
	void *arg;
};

/* Node storage for the walk (format/maptree.c): the hooks decide before a
 * node is read, pass 3 verifies it against its place in the tree. */
static int walk_node_get(void *ctx, uint32_t sblk, unsigned level, uint64_t lo,
			 uint8_t **out)
{
	struct walk *w = ctx;
	uint8_t *node;
	int r;

	r = w->ptr ? w->ptr(w, sblk, level, lo) : W_KEEP;
	if (r)
		return r;
	node = bdev_alloc(VMFSD_SUB_BLOCK_SIZE);
	if (!node)
		return -ENOMEM;
	r = ck_meta_read(w->c, vmfsd_sub_off(&w->c->sb, sblk), node);
	if (r) {
		bdev_free(node);
		return r;
	}
	if (w->verify) {
		const struct vmfsd_disk_map_node *nd = (const void *)node;
		int v = vmfsd_map_node_verify(node, sblk, w->ino, w->gen);

		if (!v && (le16toh(nd->level) != level || le64toh(nd->first_lblk) != lo))
			v = -EUCLEAN;
		if (v) {
			if (w->bad)
				w->bad(w, sblk, level, lo, v);
			bdev_free(node);
			return W_CLEAR;
		}
		if (w->node_ok)
			w->node_ok(w, sblk, level, lo);
	}
	*out = node;
	return 0;
}

static void walk_node_release(void *ctx, uint8_t *node)
{
	(void)ctx;
	bdev_free(node);
}

static int walk_node_put(void *ctx, uint32_t sblk, uint8_t *node)
{
	struct walk *w = ctx;

	vmfsd_map_node_finish(node, sblk);
	return ck_wq_put(w->c, vmfsd_sub_off(&w->c->sb, sblk), node, WQ_DATA);
}

static int walk_leaf(void *ctx, uint8_t *slot, uint64_t lo)
{
	struct walk *w = ctx;

	return w->leaf(w, slot, lo);
}

/* Walks IN's map from unit w->from on; ROOT_DIRTY is set (never cleared)
 * when the root slots changed. */
static int walk_inode(struct walk *w, struct vmfsd_inode *in, bool *root_dirty)
{
	const struct vmfsd_maptree_ops ops = {
		.ctx = w, .node_get = walk_node_get, .node_release = walk_node_release,
		.node_put = walk_node_put,
	};
	const struct vmfsd_maptree_walk mw = {
		.ops = &ops, .from = w->from, .to = UINT64_MAX, .leaf = walk_leaf,
	};
	int dirty, r;

	w->ino = in->ino;
	w->gen = in->generation;
	r = vmfsd_maptree_walk(&mw, in, &dirty);
	if (dirty)
		*root_dirty = true;
	return r < 0 ? r : 0;
}

static struct pool *data_pool(struct fsck *c, const struct vmfsd_inode *in)
{
	return in->data_mode == VMFSD_DATA_BLOCK ? &c->bp : &c->sp;
}

static uint32_t unit_size(const struct fsck *c, const struct vmfsd_inode *in)
{
	return in->data_mode == VMFSD_DATA_BLOCK ? c->sb.block_size : VMFSD_SUB_BLOCK_SIZE;
}

/* ---- pass 3 hooks ---- */

struct p3 {
	struct vmfsd_inode *in;
	struct pool *pool;
	uint64_t size_units;    /* units below EOF */
	bool isdir;
	uint64_t past_eof;      /* entries dropped past EOF */
	uint64_t units, nodes;
};

static void report_unmarked(struct fsck *c, struct pool *p, uint64_t item, uint64_t ino,
			    const char *as, uint64_t lo)
{
	if (!disk_known(p, item) || bit_get(p->disk, item))
		return;
	fsck_report(c, P_BM_UNMARKED, WHERE(.ino = ino, W_BLOCK(item)), "mark it in use",
		    "%s %" PRIu64 " (%s of inode %" PRIu64 ", unit %" PRIu64
		    ") is marked free in the bitmap", p->name, item, as, ino, lo);
}

static int p3_ptr(struct walk *w, uint32_t sblk, unsigned level, uint64_t lo)
{
	struct fsck *c = w->c;

	(void)level;
	if (!sblk || sblk >= c->sp.count) {
		fsck_report(c, P_MAP_ENTRY, WHERE(.ino = w->ino, .has = FSCK_W_LBLK, .lblk = lo),
			    "clear the pointer (the units below it are lost)",
			    "inode %" PRIu64 ": map pointer for units from %" PRIu64
			    " is %u, outside the sub-block pool", w->ino, lo, sblk);
		return W_CLEAR;
	}
	if (!ck_ref_mark(c, &c->sp, sblk)) {
		fsck_report(c, P_DUP_REF, WHERE(.ino = w->ino, .has = FSCK_W_LBLK | FSCK_W_BLOCK,
						.lblk = lo, .blocknr = sblk),
			    "clear this inode's pointer; the earlier owner keeps the sub-block",
			    "inode %" PRIu64 ": map node at sub-block %u (units from %" PRIu64
			    ") is also used by another inode", w->ino, sblk, lo);
		return W_CLEAR;
	}
	return W_KEEP;
}

static void p3_bad(struct walk *w, uint32_t sblk, unsigned level, uint64_t lo, int err)
{
	fsck_report(w->c, P_MAP_NODE_BAD, WHERE(.ino = w->ino, .has = FSCK_W_LBLK | FSCK_W_BLOCK,
						.lblk = lo, .blocknr = sblk),
		    "clear the pointer (the units it mapped become holes)",
		    "inode %" PRIu64 ": map node at sub-block %u (level %u, units from %" PRIu64
		    ") is damaged or not this inode's (%s)", w->ino, sblk, level, lo,
		    err_name(err));
	ck_ref_unmark(w->c, &w->c->sp, sblk);
}

static void p3_node_ok(struct walk *w, uint32_t sblk, unsigned level, uint64_t lo)
{
	struct p3 *a = w->arg;

	(void)level;
	a->nodes++;
	report_unmarked(w->c, &w->c->sp, sblk, w->ino, "map node", lo);
}

int ck_dblk_add(struct irec *r, uint64_t lblk, uint32_t sblk)
{
	if (r->ndb == r->cdb) {
		uint32_t cap = r->cdb ? r->cdb * 2 : 8;
		struct dblk *n = realloc(r->db, cap * sizeof(*n));

		if (!n)
			return -ENOMEM;
		r->db = n;
		r->cdb = cap;
	}
	r->db[r->ndb].lblk = lblk;
	r->db[r->ndb].sblk = sblk;
	r->ndb++;
	return 0;
}

static int p3_leaf(struct walk *w, uint8_t *slot, uint64_t lo)
{
	struct fsck *c = w->c;
	struct p3 *a = w->arg;
	uint32_t e = vmfsd_get_le32(slot), p = e & VMFSD_MAP_PBLK_MASK;
	bool unwritten = e & VMFSD_MAP_UNWRITTEN;

	if (!p || p >= a->pool->count) {
		fsck_report(c, P_MAP_ENTRY, WHERE(.ino = w->ino, .has = FSCK_W_LBLK, .lblk = lo),
			    "clear the entry (a hole)",
			    "inode %" PRIu64 ": entry of unit %" PRIu64 " is %#x, outside the %s "
			    "pool", w->ino, lo, e, a->pool->name);
		goto clear;
	}
	if (a->isdir && unwritten) {
		fsck_report(c, P_MAP_ENTRY, WHERE(.ino = w->ino, .has = FSCK_W_LBLK, .lblk = lo),
			    "clear the entry", "directory %" PRIu64 ": block %" PRIu64
			    " is marked unwritten", w->ino, lo);
		goto clear;
	}
	/* Preallocated (unwritten) units past EOF are legal for files. */
	if (lo >= a->size_units && (a->isdir || !unwritten)) {
		a->past_eof++;
		if (!bit_get(a->pool->ref, p))
			ck_ref_drop(c, a->pool, p);
		goto clear;
	}
	if (!ck_ref_mark(c, a->pool, p)) {
		fsck_report(c, P_DUP_REF, WHERE(.ino = w->ino, .has = FSCK_W_LBLK | FSCK_W_BLOCK,
						.lblk = lo, .blocknr = p),
			    "clear this inode's entry (a hole); the earlier owner keeps it",
			    "inode %" PRIu64 ": %s %u (unit %" PRIu64 ") is also used by another "
			    "inode", w->ino, a->pool->name, p, lo);
		goto clear;
	}
	report_unmarked(c, a->pool, p, w->ino, a->isdir ? "directory block" : "data", lo);
	a->units++;
	if (a->isdir)
		return ck_dblk_add(w->r, lo, p);
	return 0;
clear:
	vmfsd_put_le32(slot, 0);
	return 1;
}

/* ---- truncation and release (later passes and directory holes) ---- */

struct cut {
	struct pool *pool;
	uint64_t dropped;
	bool release_nodes;
};

static int cut_leaf(struct walk *w, uint8_t *slot, uint64_t lo)
{
	struct cut *a = w->arg;

	if (lo < w->from)
		return 0;
	ck_ref_drop(w->c, a->pool, vmfsd_get_le32(slot) & VMFSD_MAP_PBLK_MASK);
	a->dropped++;
	if (a->release_nodes)
		return 0;       /* releasing a whole inode: nothing is rewritten */
	vmfsd_put_le32(slot, 0);
	return 1;
}

static int release_ptr(struct walk *w, uint32_t sblk, unsigned level, uint64_t lo)
{
	(void)level;
	(void)lo;
	ck_ref_drop(w->c, &w->c->sp, sblk);
	return W_KEEP;
}

int ck_map_release(struct fsck *c, struct irec *r)
{
	struct cut a = { .release_nodes = true };
	struct walk w = { .c = c, .r = r, .ptr = release_ptr, .leaf = cut_leaf, .arg = &a };
	bool dirty = false;
	int e;

	if (r->state != IR_OK)
		return 0;
	e = ck_inode_load(c, r->ino, c->in);
	if (e)
		return e;
	a.pool = data_pool(c, c->in);
	return walk_inode(&w, c->in, &dirty);
}

/* Cuts IN (in memory) at unit FROM: every unit at or past it is dropped;
 * changed nodes are queued, the caller stores IN. */
static int cut_inode(struct fsck *c, struct irec *r, struct vmfsd_inode *in, uint64_t from,
		     uint64_t *dropped)
{
	struct cut a = { .pool = data_pool(c, in) };
	struct walk w = { .c = c, .r = r, .from = from, .leaf = cut_leaf, .arg = &a };
	bool dirty = false;
	int e = walk_inode(&w, in, &dirty);

	*dropped = a.dropped;
	return e;
}

/* ---- growing a directory (lost+found, root) ---- */

/* Node storage for format/maptree.c: images read through the write queue
 * (pass 3 verified the nodes, so they are trusted), changed ones queued. */
#define SET_BUFS (2 * VMFSD_MAP_MAX_HEIGHT)

struct set_ctx {
	struct fsck *c;
	struct irec *r;
	const struct vmfsd_inode *in;
	uint8_t *buf[SET_BUFS];  /* one per node the operation touches */
	unsigned nbuf;
};

static int set_buf(struct set_ctx *t, uint8_t **out)
{
	/* A set touches at most one node per level on the way down plus
	 * one per growth step. */
	if (t->nbuf == SET_BUFS)
		return -EUCLEAN;
	*out = t->buf[t->nbuf] = bdev_alloc(VMFSD_SUB_BLOCK_SIZE);
	if (!*out)
		return -ENOMEM;
	t->nbuf++;
	return 0;
}

static int set_node_get(void *ctx, uint32_t sblk, unsigned level, uint64_t first,
			uint8_t **node)
{
	struct set_ctx *t = ctx;
	int e = set_buf(t, node);

	(void)level;
	(void)first;
	return e ? e : ck_meta_read(t->c, vmfsd_sub_off(&t->c->sb, sblk), *node);
}

static int set_node_new(void *ctx, unsigned level, uint64_t first, uint32_t *sblk,
			uint8_t **node)
{
	struct set_ctx *t = ctx;
	uint64_t s;
	int e = set_buf(t, node);

	if (!e)
		e = ck_pool_alloc(t->c, &t->c->sp, &s);
	if (e)
		return e;
	vmfsd_map_node_init(*node, level, t->in->ino, t->in->generation, first);
	*sblk = (uint32_t)s;
	t->r->nodes++;
	return 0;
}

static int set_node_put(void *ctx, uint32_t sblk, uint8_t *node)
{
	struct set_ctx *t = ctx;

	vmfsd_map_node_finish(node, sblk);
	return ck_wq_put(t->c, vmfsd_sub_off(&t->c->sb, sblk), node, WQ_DATA);
}

int ck_map_set(struct fsck *c, struct vmfsd_inode *in, struct irec *r, uint64_t lblk,
	       uint32_t val)
{
	struct set_ctx t = { .c = c, .r = r, .in = in };
	const struct vmfsd_maptree_ops ops = {
		.ctx = &t, .node_get = set_node_get, .node_new = set_node_new,
		.node_put = set_node_put,
	};
	int e = vmfsd_maptree_set(&ops, in, lblk, val);

	while (t.nbuf)
		bdev_free(t.buf[--t.nbuf]);
	return e;
}

/* ---------------- pass 3: the inodes ---------------- */

static bool valid_type(uint32_t mode)
{
	switch (mode & S_IFMT) {
	case S_IFREG: case S_IFDIR: case S_IFLNK: case S_IFCHR: case S_IFBLK:
	case S_IFIFO: case S_IFSOCK:
		return true;
	default:
		return false;
	}
}

static bool zero_bytes(const uint8_t *p, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

/* The xattr area: packed entries (u8 name length, le16 value length, name,
 * value) filling exactly xattr_len bytes, zeros after.  Returns the length
 * of the well-formed prefix. */
static uint16_t xattr_good_len(const struct vmfsd_inode *in)
{
	unsigned off = 0;

	while (off + 3 <= in->xattr_len) {
		unsigned l = in->xattr[off], vl = in->xattr[off + 1] | in->xattr[off + 2] << 8;

		if (off + 3 + l + vl > in->xattr_len)
			break;
		off += 3 + l + vl;
	}
	return (uint16_t)off;
}

static int check_dir_blocks(struct fsck *c, struct irec *r, struct vmfsd_inode *in,
			    struct p3 *a, bool *dirty)
{
	uint64_t m = in->size / VMFSD_SUB_BLOCK_SIZE + (in->size % VMFSD_SUB_BLOCK_SIZE != 0);
	uint64_t k = 0, dropped = 0;
	int e;

	while (k < r->ndb && r->db[k].lblk == k)
		k++;
	if (k >= m && !(in->size % VMFSD_SUB_BLOCK_SIZE))
		return 0;
	if (in->size % VMFSD_SUB_BLOCK_SIZE)
		fsck_report(c, P_DIR_SIZE, WHERE(.ino = r->ino),
			    "set the size to the blocks present",
			    "directory %" PRIu64 ": size %" PRIu64 " is not a whole number of "
			    "blocks", r->ino, in->size);
	if (k < m)
		fsck_report(c, P_DIR_SIZE, WHERE(.ino = r->ino, .has = FSCK_W_LBLK, .lblk = k),
			    "cut the directory before the hole (names past it are lost, their "
			    "inodes go to lost+found)",
			    "directory %" PRIu64 ": block %" PRIu64 " of %" PRIu64 " is missing",
			    r->ino, k, m);
	if (k < r->ndb) {
		e = cut_inode(c, r, in, k, &dropped);
		if (e)
			return e;
		a->units -= dropped;
		r->ndb = (uint32_t)k;
	}
	in->size = k * VMFSD_SUB_BLOCK_SIZE;
	*dirty = true;
	return 0;
}

static int process_inode(struct fsck *c, struct irec *r, uint8_t *blk)
{
	uint64_t off = vmfsd_inode_off(&c->sb, r->ino), bnr = off / VMFSD_META_BLOCK, expect;
	struct vmfsd_inode *in = c->in;
	bool lock_changed = false, dirty = false;
	char what[48];
	uint32_t unit;
	int d, e;

	d = vmfsd_inode_decode(blk, bnr, in);
	if (!d && in->ino != r->ino)
		d = -EUCLEAN;
	if (d) {
		r->state = IR_BAD;
		/* Marked in use but never written (all zero): a bitmap leak,
		 * which pass 6 reports as such, rather than a damaged inode. */
		if (zero_bytes(blk + VMFSD_INODE_BODY_OFF, VMFSD_META_BLOCK - VMFSD_INODE_BODY_OFF)) {
			r->flags |= IRF_BLANK;
			return 0;
		}
		if (r->ino != VMFSD_ROOT_INO && !(r->flags & IRF_FROM_ENTRY))
			fsck_report(c, P_INODE_BAD, WHERE(.ino = r->ino, W_BLOCK(bnr)),
				    "release it: its names are removed, its blocks freed",
				    "inode %" PRIu64 " is damaged (%s)", r->ino, err_name(d));
		return 0;
	}
	/* Mode 0 with no links is an inode caught half-way through its
	 * release (fs/inode.c clears the mode, then the bitmap bit). */
	if (!valid_type(in->mode) && !(in->mode == 0 && in->nlink == 0)) {
		r->state = IR_BAD;
		if (r->ino != VMFSD_ROOT_INO)
			fsck_report(c, P_INODE_TYPE, WHERE(.ino = r->ino, W_BLOCK(bnr)),
				    "release it: its names are removed, its blocks freed",
				    "inode %" PRIu64 " has no valid file type (mode %#o)", r->ino,
				    in->mode);
		return 0;
	}
	r->state = IR_OK;
	r->gen = in->generation;
	r->mode = in->mode;
	r->nlink = in->nlink;
	r->parent = in->parent;

	snprintf(what, sizeof(what), "inode %" PRIu64, r->ino);
	e = check_lock(c, blk, bnr, r->ino, what, &lock_changed);
	if (e)
		return e;

	if (S_ISDIR(in->mode) && in->data_mode != VMFSD_DATA_SUB) {
		fsck_report(c, P_DIR_LAYOUT, WHERE(.ino = r->ino),
			    "empty the directory (its entries' inodes go to lost+found)",
			    "directory %" PRIu64 " has data mode %u, not sub-block mode", r->ino,
			    in->data_mode);
		in->data_mode = VMFSD_DATA_SUB;
		in->map_height = 0;
		memset(in->map, 0, VMFSD_MAP_AREA);
		in->size = 0;
		in->alloc_units = 0;
		dirty = true;
	}
	if (!S_ISDIR(in->mode) && in->parent) {
		fsck_report(c, P_INODE_PARENT_FIELD, WHERE(.ino = r->ino), "set it to 0",
			    "inode %" PRIu64 " is not a directory but has parent %" PRIu64,
			    r->ino, in->parent);
		in->parent = 0;
		r->parent = 0;
		dirty = true;
	}
	if (xattr_good_len(in) != in->xattr_len ||
	    !zero_bytes(in->xattr + in->xattr_len, VMFSD_XATTR_AREA - in->xattr_len)) {
		uint16_t good = xattr_good_len(in);

		fsck_report(c, P_INODE_XATTR, WHERE(.ino = r->ino),
			    "keep the well-formed attributes, zero the rest",
			    "inode %" PRIu64 ": extended attribute area is malformed (%u bytes "
			    "used, %u well formed)", r->ino, in->xattr_len, good);
		in->xattr_len = good;
		memset(in->xattr + good, 0, VMFSD_XATTR_AREA - good);
		dirty = true;
	}

	if (in->data_mode == VMFSD_DATA_INLINE) {
		if (!zero_bytes(in->map + in->size, VMFSD_MAP_AREA - in->size)) {
			fsck_report(c, P_INODE_INLINE_TAIL, WHERE(.ino = r->ino), "zero them",
				    "inode %" PRIu64 ": inline bytes past the size (%" PRIu64
				    ") are not zero", r->ino, in->size);
			memset(in->map + in->size, 0, VMFSD_MAP_AREA - in->size);
			dirty = true;
		}
		expect = 0;
	} else {
		struct p3 a = { .in = in, .pool = data_pool(c, in), .isdir = S_ISDIR(in->mode) };
		struct walk w = { .c = c, .r = r, .verify = true, .ptr = p3_ptr, .bad = p3_bad,
				  .node_ok = p3_node_ok, .leaf = p3_leaf, .arg = &a };

		unit = unit_size(c, in);
		a.size_units = in->size / unit + (in->size % unit != 0);
		e = walk_inode(&w, in, &dirty);
		if (e)
			return e;
		if (a.past_eof) {
			fsck_report(c, P_MAP_PAST_EOF, WHERE(.ino = r->ino),
				    "drop them (the units are freed)",
				    "inode %" PRIu64 ": %" PRIu64 " written unit(s) mapped past the "
				    "end of the %s (size %" PRIu64 ")", r->ino, a.past_eof,
				    a.isdir ? "directory" : "file", in->size);
		}
		if (a.isdir) {
			e = check_dir_blocks(c, r, in, &a, &dirty);
			if (e)
				return e;
		}
		r->units = a.units;
		r->nodes = a.nodes;
		expect = a.nodes * (VMFSD_SUB_BLOCK_SIZE / 512) + a.units * (unit / 512);
	}
	if (in->alloc_units != expect) {
		fsck_report(c, P_INODE_UNITS, WHERE(.ino = r->ino), "set it to what is mapped",
			    "inode %" PRIu64 ": alloc_units is %" PRIu64 ", %" PRIu64
			    " are mapped", r->ino, in->alloc_units, expect);
		in->alloc_units = expect;
		dirty = true;
	}
	r->data_mode = in->data_mode;
	r->height = in->map_height;
	r->size = in->size;
	if (dirty)
		vmfsd_inode_encode(in, bnr, blk);
	if (dirty || lock_changed)
		return ck_wq_put(c, off, blk, WQ_INODE);
	return 0;
}

static uint32_t *unread_list(struct fsck *c, uint32_t *n)
{
	uint32_t *v = malloc((c->nir ? c->nir : 1) * sizeof(*v)), i;

	*n = 0;
	if (!v)
		return NULL;
	for (i = 0; i < c->nir; i++)
		if (irec_at(c, i)->state == IR_UNREAD)
			v[(*n)++] = i;
	return v;
}

static int by_ino(const void *a, const void *b, void *arg)
{
	uint64_t x = irec_at(arg, *(const uint32_t *)a)->ino;
	uint64_t y = irec_at(arg, *(const uint32_t *)b)->ino;

	return x < y ? -1 : x > y;
}

/* Reads and checks the records V (sorted by inode number) in runs. */
static int read_inodes(struct fsck *c, const uint32_t *v, uint32_t n)
{
	uint8_t *buf = bdev_alloc((size_t)ITABLE_BATCH * VMFSD_META_BLOCK);
	uint32_t i = 0, j, k;
	int e = 0;

	if (!buf)
		return -ENOMEM;
	while (i < n && !e) {
		uint64_t start = irec_at(c, v[i])->ino, last = start;

		for (j = i + 1; j < n; j++) {
			uint64_t ino = irec_at(c, v[j])->ino;

			if (ino - start >= ITABLE_BATCH || ino - last > ITABLE_GAP)
				break;
			last = ino;
		}
		e = ck_meta_read_many(c, vmfsd_inode_off(&c->sb, start), buf,
				   (size_t)(last - start + 1) * VMFSD_META_BLOCK);
		for (k = i; k < j && !e; k++) {
			struct irec *r = irec_at(c, v[k]);

			e = process_inode(c, r, buf + (size_t)(r->ino - start) * VMFSD_META_BLOCK);
		}
		i = j;
		fsck_progress(c, 3, "inodes", i, n);
	}
	bdev_free(buf);
	return e;
}

int fsck_inodes(struct fsck *c)
{
	struct pool *p = &c->ip;
	struct irec *r;
	uint32_t *v, n;
	uint64_t i;
	int e;

	c->in = malloc(sizeof(*c->in));
	if (!c->in)
		return -ENOMEM;
	/* The root is read whatever its bit says. */
	e = ck_irec_add(c, VMFSD_ROOT_INO, &r);
	for (i = VMFSD_FIRST_FREE_INO; i < p->count && !e; i++) {
		uint64_t w;

		if ((i & 63) == 0 && i + 64 <= p->count) {
			memcpy(&w, p->disk + i / 8, 8);
			if (!w) {
				i += 63;
				continue;
			}
		}
		if (bit_get(p->disk, i) && disk_known(p, i))
			e = ck_irec_add(c, i, &r);
	}
	if (e)
		return e;
	v = unread_list(c, &n);
	if (!v)
		return -ENOMEM;
	e = read_inodes(c, v, n);
	free(v);
	return e;
}

int fsck_inodes_more(struct fsck *c, bool *any)
{
	uint32_t *v, n;
	int e;

	v = unread_list(c, &n);
	if (!v)
		return -ENOMEM;
	qsort_r(v, n, sizeof(*v), by_ino, c);
	e = read_inodes(c, v, n);
	free(v);
	*any = n > 0;
	return e;
}
