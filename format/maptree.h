/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Block-map tree operations shared by the filesystem (fs/bmap.c) and
 * fsck.vmfsd: looking a unit up, setting a slot (growing the tree and
 * creating nodes on the way down), seeking the next mapped unit and
 * walking a range of units (freeing, checking, cutting).  There is
 * one implementation of the tree of docs/format.md §8; the caller supplies
 * the node storage, because the two differ there: vmfsd caches nodes per
 * inode and logs changed ones to its journal transaction, fsck reads
 * through its write queue and queues changed nodes for its final write.
 */
#ifndef VMFSD_MAPTREE_H
#define VMFSD_MAPTREE_H

#include "format/format.h"

/* What node_get may answer in a walk besides 0 and a negative errno. */
enum {
	VMFSD_MAPTREE_CLEAR = 1,        /* drop the pointer to the node */
	VMFSD_MAPTREE_SKIP = 2,         /* leave the pointer, do not descend */
};

struct vmfsd_maptree_ops {
	void *ctx;
	/* Node SBLK, which the tree says is of LEVEL and covers units from
	 * FIRST: an image the operation may change, valid until the operation
	 * returns (or node_release).  The callee verifies as much as it wants
	 * (vmfsd verifies, fsck trusts what its pass 3 did). */
	int (*node_get)(void *ctx, uint32_t sblk, unsigned level, uint64_t first,
			uint8_t **node);
	/* Optional: a walk is done with an image node_get gave. */
	void (*node_release)(void *ctx, uint8_t *node);
	/* A new node: allocates a sub-block and an image initialised with
	 * vmfsd_map_node_init(LEVEL, the inode, FIRST). */
	int (*node_new)(void *ctx, unsigned level, uint64_t first, uint32_t *sblk,
			uint8_t **node);
	/* NODE at SBLK changed: finish and store it.  A child always comes
	 * before the parent that gains a pointer to it. */
	int (*node_put)(void *ctx, uint32_t sblk, uint8_t *node);
	/* Optional: the inode's root changed because the tree grew. */
	void (*root_put)(void *ctx);
	/* Optional: a node node_new made was unlinked again before it was
	 * ever put (a set failed further down): give its sub-block back. */
	void (*node_forget)(void *ctx, uint32_t sblk);
};

/* Entry of unit LBLK in the map of IN (0: a hole or past the map). */
int vmfsd_maptree_get(const struct vmfsd_maptree_ops *ops, const struct vmfsd_inode *in,
		      uint64_t lblk, uint32_t *val);

/* Sets the entry of unit LBLK to VAL, growing the tree while LBLK is past
 * its capacity and creating missing nodes on the path (each counted in
 * IN->alloc_units).  Changes IN's map in memory; storing IN is the
 * caller's.  -EFBIG past VMFSD_MAP_MAX_HEIGHT.  When it fails on the path
 * (no room for a node, a read error) the nodes this call created are
 * unlinked, uncounted and handed to ops->node_forget, so nothing leaks and
 * no pointer leads to a node that never reaches the disk; a growth of the
 * tree stays (it holds the old root and was put). */
int vmfsd_maptree_set(const struct vmfsd_maptree_ops *ops, struct vmfsd_inode *in,
		      uint64_t lblk, uint32_t val);

/* The first (DIR > 0) mapped unit at or past FROM, or (DIR < 0) the last
 * mapped unit before FROM, in *OUT; -ENXIO when there is none. */
int vmfsd_maptree_seek(const struct vmfsd_maptree_ops *ops, const struct vmfsd_inode *in,
		       uint64_t from, int dir, uint64_t *out);

/* Walks the data entries of units [FROM, TO) in IN's map, depth first.
 * For a node whose pointer was followed: its subtree is walked, then a
 * node that became all zeros is dropped when DROP is set (its pointer is
 * cleared, DROP frees it), else a changed node goes to ops->node_put. */
struct vmfsd_maptree_walk {
	const struct vmfsd_maptree_ops *ops;
	uint64_t from, to;
	/* A non-zero data entry at unit LO; returns 1 if it changed *SLOT, 0,
	 * or a negative errno that ends the walk. */
	int (*leaf)(void *ctx, uint8_t *slot, uint64_t lo);
	/* Optional: the node at SBLK has no entries left and is unlinked. */
	void (*drop)(void *ctx, uint32_t sblk);
};

/* Returns 1 when the root slots are all zero afterwards, 0, or a negative
 * errno; *ROOT_DIRTY tells whether IN's root slots changed. */
int vmfsd_maptree_walk(const struct vmfsd_maptree_walk *w, struct vmfsd_inode *in,
		       int *root_dirty);

#endif
