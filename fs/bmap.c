// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Block maps: logical unit -> pool unit, as a radix tree of fixed fanout.
 * The inode holds 728 root slots; at height h each root slot points to a
 * node of level h-1 and each node holds 1008 slots (level 0: data entries).
 * Height 2 with 1 MiB blocks addresses 728 x 1008^2 MiB = 709 TiB, so a
 * 64 TiB VMDK needs at most two node reads per lookup, and every
 * allocation dirties exactly one leaf (plus new nodes on the way down):
 * small, predictable transactions for the journal.  Nodes are sub-blocks;
 * the nodes of an inode are cached while the inode is in memory.
 *
 * The tree itself (lookup, set, seek, range walk) is format/maptree.c,
 * shared with fsck; this file supplies its node storage (the cache, the
 * journal transaction) and what freeing a range does to each unit.
 */
#include <assert.h>
#include <endian.h>
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>

#include "format/maptree.h"
#include "fs_internal.h"

struct map_node {
	uint32_t sblk;
	uint8_t *buf;           /* struct vmfsd_disk_map_node image */
};

static pthread_mutex_t ncache_lock = PTHREAD_MUTEX_INITIALIZER;

uint64_t bmap_capacity(uint8_t height)
{
	return vmfsd_map_capacity(height);
}

struct alloc_pool *bmap_pool(struct fs *fs, struct fs_inode *ip)
{
	return ip->d.data_mode == VMFSD_DATA_BLOCK ? &fs->bpool : &fs->spool;
}

/* ---- node cache: open addressing on sub-block number ---- */

static uint32_t nhash(uint32_t sblk, uint32_t cap)
{
	return (sblk * 2654435761u) & (cap - 1);
}

static struct map_node *ncache_find(struct fs_inode *ip, uint32_t sblk)
{
	uint32_t i;

	if (!ip->nodes_cap)
		return NULL;
	for (i = nhash(sblk, ip->nodes_cap);; i = (i + 1) & (ip->nodes_cap - 1)) {
		if (!ip->nodes[i])
			return NULL;
		if (ip->nodes[i]->sblk == sblk)
			return ip->nodes[i];
	}
}

static int ncache_insert(struct fs_inode *ip, struct map_node *n)
{
	uint32_t i;

	if ((ip->nodes_n + 1) * 2 > ip->nodes_cap) {
		uint32_t cap = ip->nodes_cap ? ip->nodes_cap * 2 : 16, j;
		struct map_node **nt = calloc(cap, sizeof(*nt));

		if (!nt)
			return -ENOMEM;
		for (j = 0; j < ip->nodes_cap; j++) {
			struct map_node *m = ip->nodes[j];

			if (!m)
				continue;
			for (i = nhash(m->sblk, cap); nt[i]; i = (i + 1) & (cap - 1))
				;
			nt[i] = m;
		}
		free(ip->nodes);
		ip->nodes = nt;
		ip->nodes_cap = cap;
	}
	for (i = nhash(n->sblk, ip->nodes_cap); ip->nodes[i]; i = (i + 1) & (ip->nodes_cap - 1))
		;
	ip->nodes[i] = n;
	ip->nodes_n++;
	return 0;
}

/* Backward-shift deletion keeps linear probing chains intact. */
static void ncache_remove(struct fs_inode *ip, uint32_t sblk)
{
	uint32_t mask = ip->nodes_cap - 1, i, j;
	struct map_node *n;

	if (!ip->nodes_cap)
		return;
	for (i = nhash(sblk, ip->nodes_cap); ip->nodes[i]; i = (i + 1) & mask)
		if (ip->nodes[i]->sblk == sblk)
			break;
	if (!ip->nodes[i])
		return;
	n = ip->nodes[i];
	ip->nodes[i] = NULL;
	ip->nodes_n--;
	for (j = (i + 1) & mask; ip->nodes[j]; j = (j + 1) & mask) {
		uint32_t h = nhash(ip->nodes[j]->sblk, ip->nodes_cap);

		/* Move j into the hole at i if its home is not in (i, j]. */
		if ((j > i && (h <= i || h > j)) || (j < i && (h <= i && h > j))) {
			ip->nodes[i] = ip->nodes[j];
			ip->nodes[j] = NULL;
			i = j;
		}
	}
	bdev_free(n->buf);
	free(n);
}

void bmap_cache_drop(struct fs_inode *ip)
{
	uint32_t i;

	for (i = 0; i < ip->nodes_cap; i++) {
		if (ip->nodes[i]) {
			bdev_free(ip->nodes[i]->buf);
			free(ip->nodes[i]);
		}
	}
	free(ip->nodes);
	ip->nodes = NULL;
	ip->nodes_cap = ip->nodes_n = 0;
}

/* Returns the cached node image, reading and verifying it on a miss. */
static int node_get(struct fs *fs, struct fs_inode *ip, uint32_t sblk, unsigned level,
		    uint8_t **out)
{
	struct map_node *n;
	uint8_t *buf;
	int r;

	if (!sblk || sblk >= fs->sb.sub_count)
		return -EUCLEAN;
	pthread_mutex_lock(&ncache_lock);
	n = ncache_find(ip, sblk);
	pthread_mutex_unlock(&ncache_lock);
	if (n) {
		*out = n->buf;
		return 0;
	}
	buf = bdev_alloc(VMFSD_SUB_BLOCK_SIZE);
	if (!buf)
		return -ENOMEM;
	r = meta_read(fs, vmfsd_sub_off(&fs->sb, sblk), buf);
	if (!r)
		r = vmfsd_map_node_verify(buf, sblk, ip->ino, ip->d.generation);
	if (!r && le16toh(((struct vmfsd_disk_map_node *)buf)->level) != level)
		r = -EUCLEAN;
	if (r) {
		bdev_free(buf);
		return r;
	}
	pthread_mutex_lock(&ncache_lock);
	n = ncache_find(ip, sblk);
	if (n) {
		/* Another reader loaded it meanwhile. */
		pthread_mutex_unlock(&ncache_lock);
		bdev_free(buf);
		*out = n->buf;
		return 0;
	}
	n = malloc(sizeof(*n));
	if (!n || ncache_insert(ip, n)) {
		pthread_mutex_unlock(&ncache_lock);
		free(n);
		bdev_free(buf);
		return -ENOMEM;
	}
	n->sblk = sblk;
	n->buf = buf;
	pthread_mutex_unlock(&ncache_lock);
	*out = buf;
	return 0;
}

static void node_log(struct fs *fs, uint32_t sblk, uint8_t *node, struct tx *tx)
{
	vmfsd_map_node_finish(node, sblk);
	tx_add(tx, vmfsd_sub_off(&fs->sb, sblk), node);
}

/* ---- node storage for format/maptree.c ---- */

struct tree_ctx {
	struct fs *fs;
	struct fs_inode *ip;
	struct tx *tx;
};

static int tree_node_get(void *ctx, uint32_t sblk, unsigned level, uint64_t first,
			 uint8_t **node)
{
	struct tree_ctx *t = ctx;

	(void)first;
	return node_get(t->fs, t->ip, sblk, level, node);
}

/* Allocates a node of LEVEL covering FIRST and inserts it in the cache. */
static int tree_node_new(void *ctx, unsigned level, uint64_t first, uint32_t *sblk_out,
			 uint8_t **out)
{
	struct tree_ctx *t = ctx;
	struct fs *fs = t->fs;
	struct map_node *n;
	uint64_t sblk;
	uint8_t *d;
	int r;

	r = alloc_item(fs, &fs->spool, 0, t->tx, &sblk);
	if (r)
		return r;
	n = malloc(sizeof(*n));
	d = bdev_alloc(VMFSD_SUB_BLOCK_SIZE);
	if (!n || !d) {
		free(n);
		bdev_free(d);
		alloc_free(fs, &fs->spool, sblk, t->tx);
		return -ENOMEM;
	}
	vmfsd_map_node_init(d, level, t->ip->ino, t->ip->d.generation, first);
	n->sblk = (uint32_t)sblk;
	n->buf = d;
	pthread_mutex_lock(&ncache_lock);
	r = ncache_insert(t->ip, n);
	pthread_mutex_unlock(&ncache_lock);
	if (r) {
		free(n);
		bdev_free(d);
		alloc_free(fs, &fs->spool, sblk, t->tx);
		return r;
	}
	*sblk_out = (uint32_t)sblk;
	*out = d;
	return 0;
}

static int tree_node_put(void *ctx, uint32_t sblk, uint8_t *node)
{
	struct tree_ctx *t = ctx;

	node_log(t->fs, sblk, node, t->tx);
	return 0;
}

static void tree_root_put(void *ctx)
{
	struct tree_ctx *t = ctx;

	tx_add_inode(t->tx, t->ip);
}

/* A node unlinked from the tree (a failed set's new node, or an emptied
 * one a walk drops): its sub-block is free with the transaction, and its
 * cached image goes.  The caller has uncounted it from alloc_units. */
static void tree_node_forget(void *ctx, uint32_t sblk)
{
	struct tree_ctx *t = ctx;

	alloc_free(t->fs, &t->fs->spool, sblk, t->tx);
	pthread_mutex_lock(&ncache_lock);
	ncache_remove(t->ip, sblk);
	pthread_mutex_unlock(&ncache_lock);
}

#define TREE_OPS(t) { .ctx = &(t), .node_get = tree_node_get, .node_new = tree_node_new, \
		      .node_put = tree_node_put, .root_put = tree_root_put, \
		      .node_forget = tree_node_forget }

int bmap_get(struct fs *fs, struct fs_inode *ip, uint64_t lblk, uint32_t *val)
{
	struct tree_ctx t = { .fs = fs, .ip = ip };
	const struct vmfsd_maptree_ops ops = TREE_OPS(t);

	return vmfsd_maptree_get(&ops, &ip->d, lblk, val);
}

int bmap_set(struct fs *fs, struct fs_inode *ip, uint64_t lblk, uint32_t val,
	     struct tx *tx)
{
	struct tree_ctx t = { .fs = fs, .ip = ip, .tx = tx };
	const struct vmfsd_maptree_ops ops = TREE_OPS(t);
	int r = vmfsd_maptree_set(&ops, &ip->d, lblk, val);

	if (r)
		return r;
	tx_add_inode(tx, ip);
	return 0;
}

/* ---- freeing a range: a walk whose leaves free their units ---- */

struct free_ctx {
	struct tree_ctx t;      /* first: the tree callbacks take it as theirs */
	struct alloc_pool *pool;
	uint32_t unit_sectors;
};

/* Entries are stored with one aligned 32-bit store: bmap_replace changes
 * them while readers holding only the shared iolock walk the map. */
static_assert(offsetof(struct vmfsd_inode, map) % 4 == 0, "root slots aligned");
static_assert(VMFSD_MAP_NODE_HDR % 4 == 0, "node slots aligned");

int bmap_replace(struct fs *fs, struct fs_inode *ip, uint64_t lblk, uint32_t old, uint32_t val,
		 struct tx *tx)
{
	unsigned h = ip->d.map_height, level;
	uint64_t span = vmfsd_map_span(h), rem = lblk;
	uint8_t *slots = ip->d.map, *node = NULL;
	uint32_t si, sblk = 0, cur;
	int r;

	if (ip->d.data_mode == VMFSD_DATA_INLINE || lblk >= vmfsd_map_capacity(h))
		return -EAGAIN;
	si = (uint32_t)(rem / span);
	rem %= span;
	for (level = h; level > 0; level--) {
		uint32_t e = vmfsd_map_slot_get(slots, si);

		if (!e)
			return -EAGAIN;
		r = node_get(fs, ip, e & VMFSD_MAP_PBLK_MASK, level - 1, &node);
		if (r)
			return r;
		sblk = e & VMFSD_MAP_PBLK_MASK;
		span /= VMFSD_MAP_NODE_SLOTS;
		slots = vmfsd_map_node_slots(node);
		si = (uint32_t)(rem / span);
		rem %= span;
	}
	cur = vmfsd_map_slot_get(slots, si);
	if (cur != old)
		return -ESTALE;
	if (old == val)
		return 0;
	__atomic_store_n((uint32_t *)(void *)(slots + (size_t)si * 4), htole32(val),
			 __ATOMIC_RELEASE);
	if (node)
		node_log(fs, sblk, node, tx);
	tx_add_inode(tx, ip);
	return 0;
}

static int free_leaf(void *ctx, uint8_t *slot, uint64_t lo)
{
	struct free_ctx *c = ctx;

	(void)lo;
	alloc_free(c->t.fs, c->pool, vmfsd_get_le32(slot) & VMFSD_MAP_PBLK_MASK, c->t.tx);
	c->t.ip->d.alloc_units -= c->unit_sectors;
	vmfsd_put_le32(slot, 0);
	return 1;
}

static void free_node(void *ctx, uint32_t sblk)
{
	struct free_ctx *c = ctx;

	c->t.ip->d.alloc_units -= VMFSD_SUB_BLOCK_SIZE / 512;
	tree_node_forget(&c->t, sblk);
}

int bmap_free_range(struct fs *fs, struct fs_inode *ip, uint64_t from, uint64_t to,
		    struct tx *tx)
{
	struct free_ctx c = {
		.t = { .fs = fs, .ip = ip, .tx = tx }, .pool = bmap_pool(fs, ip),
		.unit_sectors = inode_unit_size(fs, ip) / 512,
	};
	const struct vmfsd_maptree_ops ops = TREE_OPS(c);
	const struct vmfsd_maptree_walk w = {
		.ops = &ops, .from = from, .to = to, .leaf = free_leaf, .drop = free_node,
	};
	int dirty, r;

	if (ip->d.data_mode == VMFSD_DATA_INLINE)
		return 0;
	if (from < to && from < vmfsd_map_capacity(ip->d.map_height)) {
		r = vmfsd_maptree_walk(&w, &ip->d, &dirty);
		if (r < 0)
			return r;
		if (r == 1)
			ip->d.map_height = 0;
	}
	tx_add_inode(tx, ip);
	return 0;
}

int bmap_next_mapped(struct fs *fs, struct fs_inode *ip, uint64_t lblk, uint64_t *out)
{
	struct tree_ctx t = { .fs = fs, .ip = ip };
	const struct vmfsd_maptree_ops ops = TREE_OPS(t);

	return vmfsd_maptree_seek(&ops, &ip->d, lblk, 1, out);
}

int bmap_prev_mapped(struct fs *fs, struct fs_inode *ip, uint64_t before, uint64_t *out)
{
	struct tree_ctx t = { .fs = fs, .ip = ip };
	const struct vmfsd_maptree_ops ops = TREE_OPS(t);

	return vmfsd_maptree_seek(&ops, &ip->d, before, -1, out);
}
