// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * The block-map tree (docs/format.md §8) over caller-supplied node storage:
 * lookup, set with growth, seeking the next or previous mapped unit, and a
 * range walk.
 * fs/bmap.c and fsck.vmfsd both use it, so the tree has one writer.
 */
#include <errno.h>
#include <stdbool.h>

#include "format/maptree.h"

#define FANOUT VMFSD_MAP_NODE_SLOTS
#define ROOTS VMFSD_MAP_ROOT_SLOTS

int vmfsd_maptree_get(const struct vmfsd_maptree_ops *ops, const struct vmfsd_inode *in,
		      uint64_t lblk, uint32_t *val)
{
	unsigned h = in->map_height, level;
	uint64_t span = vmfsd_map_span(h), rem = lblk;
	uint32_t e;
	uint8_t *node;
	int r;

	*val = 0;
	if (lblk >= vmfsd_map_capacity(h))
		return 0;
	e = vmfsd_map_slot_get(in->map, (uint32_t)(rem / span));
	rem %= span;
	for (level = h; level > 0; level--) {
		if (!e)
			return 0;
		r = ops->node_get(ops->ctx, e & VMFSD_MAP_PBLK_MASK, level - 1, lblk - rem,
				  &node);
		if (r)
			return r;
		span /= FANOUT;
		e = vmfsd_map_slot_get(vmfsd_map_node_slots(node), (uint32_t)(rem / span));
		rem %= span;
	}
	*val = e;
	return 0;
}

static int node_new(const struct vmfsd_maptree_ops *ops, struct vmfsd_inode *in,
		    unsigned level, uint64_t first, uint32_t *sblk, uint8_t **node)
{
	int r = ops->node_new(ops->ctx, level, first, sblk, node);

	if (!r)
		in->alloc_units += VMFSD_SUB_BLOCK_SIZE / 512;
	return r;
}

/* A new node of the old height takes the root slots; root slot 0 points
 * to it (docs/format.md §8, "Growing"). */
static int grow(const struct vmfsd_maptree_ops *ops, struct vmfsd_inode *in)
{
	unsigned h = in->map_height;
	uint32_t sblk;
	uint8_t *node;
	int r;

	if (h + 1 > VMFSD_MAP_MAX_HEIGHT)
		return -EFBIG;
	r = node_new(ops, in, h, 0, &sblk, &node);
	if (r)
		return r;
	memcpy(vmfsd_map_node_slots(node), in->map, (size_t)ROOTS * 4);
	memset(in->map, 0, VMFSD_MAP_AREA);
	vmfsd_map_slot_set(in->map, 0, sblk);
	in->map_height = (uint8_t)(h + 1);
	r = ops->node_put(ops->ctx, sblk, node);
	if (ops->root_put)
		ops->root_put(ops->ctx);
	return r;
}

int vmfsd_maptree_set(const struct vmfsd_maptree_ops *ops, struct vmfsd_inode *in,
		      uint64_t lblk, uint32_t val)
{
	uint8_t *path_node[VMFSD_MAP_MAX_HEIGHT], *path_slots[VMFSD_MAP_MAX_HEIGHT];
	uint32_t path_sblk[VMFSD_MAP_MAX_HEIGHT], path_si[VMFSD_MAP_MAX_HEIGHT];
	bool path_new[VMFSD_MAP_MAX_HEIGHT];
	unsigned h, level, depth = 0, i;
	uint64_t span, rem, first;
	uint8_t *slots;
	uint32_t si;
	int r;

	while (lblk >= vmfsd_map_capacity(in->map_height)) {
		r = grow(ops, in);
		if (r)
			return r;
	}
	h = in->map_height;
	span = vmfsd_map_span(h);
	slots = in->map;
	si = (uint32_t)(lblk / span);
	rem = lblk % span;
	first = lblk - rem;
	for (level = h; level > 0; level--) {
		uint32_t e = vmfsd_map_slot_get(slots, si);
		uint8_t *node;

		path_new[depth] = !e;
		path_slots[depth] = slots;
		path_si[depth] = si;
		if (!e) {
			r = node_new(ops, in, level - 1, first, &e, &node);
			if (r)
				goto undo;
			vmfsd_map_slot_set(slots, si, e);
		} else {
			r = ops->node_get(ops->ctx, e & VMFSD_MAP_PBLK_MASK, level - 1, first,
					  &node);
			if (r)
				goto undo;
		}
		path_node[depth] = node;
		path_sblk[depth] = e & VMFSD_MAP_PBLK_MASK;
		depth++;
		span /= FANOUT;
		slots = vmfsd_map_node_slots(node);
		si = (uint32_t)(rem / span);
		first += rem / span * span;
		rem %= span;
	}
	vmfsd_map_slot_set(slots, si, val);
	/* Bottom-up, so every node reaches the disk before its parent. */
	for (i = depth; i-- > 0;) {
		r = ops->node_put(ops->ctx, path_sblk[i], path_node[i]);
		if (r)
			return r;
	}
	return 0;
undo:
	/* The nodes created on this path are empty and were never put. */
	for (i = depth; i-- > 0;) {
		if (!path_new[i])
			continue;
		vmfsd_map_slot_set(path_slots[i], path_si[i], 0);
		in->alloc_units -= VMFSD_SUB_BLOCK_SIZE / 512;
		if (ops->node_forget)
			ops->node_forget(ops->ctx, path_sblk[i]);
	}
	return r;
}

/* Seeks among the N entries of SLOTS (level LEVEL, the first covering
 * units from BASE): forward from FROM, or backward before FROM. */
static int seek_slots(const struct vmfsd_maptree_ops *ops, uint8_t *slots, uint32_t n,
		      unsigned level, uint64_t base, uint64_t from, int dir, uint64_t *out)
{
	uint64_t span = vmfsd_map_span(level), lim;
	uint32_t i;
	int r;

	if (dir > 0) {
		i = from > base ? (uint32_t)((from - base) / span) : 0;
	} else {
		if (from <= base)
			return -ENXIO;
		lim = (from - base + span - 1) / span;
		i = (lim < n ? (uint32_t)lim : n) - 1;
	}
	for (; i < n; dir > 0 ? i++ : i--) {
		uint32_t e = vmfsd_map_slot_get(slots, i);
		uint64_t lo = base + i * span;
		uint8_t *node;

		if (!e)
			continue;
		if (level == 0) {
			*out = lo;
			return 0;
		}
		r = ops->node_get(ops->ctx, e & VMFSD_MAP_PBLK_MASK, level - 1, lo, &node);
		if (r)
			return r;
		r = seek_slots(ops, vmfsd_map_node_slots(node), FANOUT, level - 1, lo,
			       dir > 0 && from < lo ? lo : from, dir, out);
		if (r != -ENXIO)
			return r;
	}
	return -ENXIO;
}

int vmfsd_maptree_seek(const struct vmfsd_maptree_ops *ops, const struct vmfsd_inode *in,
		       uint64_t from, int dir, uint64_t *out)
{
	if (in->data_mode == VMFSD_DATA_INLINE)
		return -ENXIO;
	return seek_slots(ops, (uint8_t *)in->map, ROOTS, in->map_height, 0, from, dir, out);
}

/* Walks the N entries of SLOTS (level LEVEL, the first covering units from
 * BASE) that meet [w->from, w->to).  Returns 1 if SLOTS are all zero
 * afterwards, 0, or a negative errno. */
static int walk_slots(const struct vmfsd_maptree_walk *w, uint8_t *slots, uint32_t n,
		      unsigned level, uint64_t base, int *dirty)
{
	const struct vmfsd_maptree_ops *ops = w->ops;
	uint64_t span = vmfsd_map_span(level), lim;
	uint32_t i, i0 = 0, i1 = 0;
	int r;

	if (w->to > base && w->to > w->from) {
		if (w->from > base)
			i0 = (w->from - base) / span < n ? (uint32_t)((w->from - base) / span) : n;
		lim = (w->to - base - 1) / span + 1;        /* no overflow at to = ~0 */
		i1 = lim < n ? (uint32_t)lim : n;
	}
	for (i = i0; i < i1; i++) {
		uint32_t e = vmfsd_map_slot_get(slots, i), sblk;
		uint64_t lo = base + i * span;
		int cdirty = 0;
		uint8_t *node;

		if (!e)
			continue;
		if (level == 0) {
			r = w->leaf(ops->ctx, slots + (size_t)i * 4, lo);
			if (r < 0)
				return r;
			if (r)
				*dirty = 1;
			continue;
		}
		sblk = e & VMFSD_MAP_PBLK_MASK;
		r = ops->node_get(ops->ctx, sblk, level - 1, lo, &node);
		if (r < 0)
			return r;
		if (r == VMFSD_MAPTREE_CLEAR) {
			vmfsd_map_slot_set(slots, i, 0);
			*dirty = 1;
			continue;
		}
		if (r == VMFSD_MAPTREE_SKIP)
			continue;
		r = walk_slots(w, vmfsd_map_node_slots(node), FANOUT, level - 1, lo, &cdirty);
		if (r == 1 && w->drop) {
			/* Child empty: drop the pointer, then the node. */
			vmfsd_map_slot_set(slots, i, 0);
			*dirty = 1;
			w->drop(ops->ctx, sblk);
			continue;
		}
		if (r >= 0 && cdirty)
			r = ops->node_put(ops->ctx, sblk, node);
		if (ops->node_release)
			ops->node_release(ops->ctx, node);
		if (r < 0)
			return r;
	}
	return vmfsd_all_zero(slots, (size_t)n * 4);
}

int vmfsd_maptree_walk(const struct vmfsd_maptree_walk *w, struct vmfsd_inode *in,
		       int *root_dirty)
{
	*root_dirty = 0;
	if (in->data_mode == VMFSD_DATA_INLINE)
		return 0;
	return walk_slots(w, in->map, ROOTS, in->map_height, 0, root_dirty);
}
