// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Directories: an array of 4 KiB directory blocks (sub-blocks mapped by the
 * directory's block map), each holding packed, 8-byte aligned entries that
 * are kept compacted.  On first use a directory is loaded whole into memory
 * with a hash index of its names, so lookups in a 10,000-entry folder cost
 * no I/O; every change rewrites exactly one directory block.  Everything
 * here runs under fs->meta_lock.
 */
#include <errno.h>
#include <stdlib.h>
#include <xxhash.h>

#include "fs_internal.h"

struct dent {
	struct dent *next;
	uint64_t ino;
	uint32_t blk;           /* directory block index */
	uint8_t type;
	uint8_t nlen;
	char name[];
};

struct dir_cache {
	uint32_t nblocks;
	uint8_t **blk;          /* block images */
	uint32_t *sblk;         /* their sub-block numbers */
	uint32_t free_hint;     /* first block that may have room */
	struct dent **bucket;
	uint32_t nbuckets;
	uint32_t count;
};

static uint32_t name_hash(const char *name, size_t len, uint32_t nbuckets)
{
	return (uint32_t)XXH3_64bits(name, len) & (nbuckets - 1);
}

static struct dent **dent_slot(struct dir_cache *dc, const char *name, size_t len)
{
	struct dent **pp = &dc->bucket[name_hash(name, len, dc->nbuckets)];

	while (*pp && ((*pp)->nlen != len || memcmp((*pp)->name, name, len)))
		pp = &(*pp)->next;
	return pp;
}

static int dent_insert(struct dir_cache *dc, const char *name, size_t len, uint64_t ino,
		       uint8_t type, uint32_t blk)
{
	struct dent *d;
	uint32_t h;

	if (dc->count + 1 > dc->nbuckets) {
		uint32_t nb = dc->nbuckets * 2, i;
		struct dent **b = calloc(nb, sizeof(*b));

		if (!b)
			return -ENOMEM;
		for (i = 0; i < dc->nbuckets; i++) {
			while (dc->bucket[i]) {
				struct dent *e = dc->bucket[i];

				dc->bucket[i] = e->next;
				h = name_hash(e->name, e->nlen, nb);
				e->next = b[h];
				b[h] = e;
			}
		}
		free(dc->bucket);
		dc->bucket = b;
		dc->nbuckets = nb;
	}
	d = malloc(sizeof(*d) + len + 1);
	if (!d)
		return -ENOMEM;
	d->ino = ino;
	d->blk = blk;
	d->type = type;
	d->nlen = (uint8_t)len;
	memcpy(d->name, name, len);
	d->name[len] = 0;
	h = name_hash(name, len, dc->nbuckets);
	d->next = dc->bucket[h];
	dc->bucket[h] = d;
	dc->count++;
	return 0;
}

void dir_cache_free(struct fs_inode *ip)
{
	struct dir_cache *dc = ip->dir;
	uint32_t i;

	if (!dc)
		return;
	for (i = 0; i < dc->nbuckets; i++) {
		while (dc->bucket[i]) {
			struct dent *e = dc->bucket[i];

			dc->bucket[i] = e->next;
			free(e);
		}
	}
	for (i = 0; i < dc->nblocks; i++)
		bdev_free(dc->blk[i]);
	free(dc->blk);
	free(dc->sblk);
	free(dc->bucket);
	free(dc);
	ip->dir = NULL;
}

static int dir_load(struct fs *fs, struct fs_inode *dp)
{
	struct dir_cache *dc;
	uint32_t n, i;
	int r = 0;

	if (dp->dir)
		return 0;
	if (!S_ISDIR(dp->d.mode))
		return -ENOTDIR;
	if (dp->d.data_mode != VMFSD_DATA_SUB || dp->d.size % VMFSD_SUB_BLOCK_SIZE)
		return -EUCLEAN;
	n = (uint32_t)(dp->d.size / VMFSD_SUB_BLOCK_SIZE);
	dc = calloc(1, sizeof(*dc));
	if (!dc)
		return -ENOMEM;
	dp->dir = dc;
	dc->nbuckets = 64;
	dc->bucket = calloc(dc->nbuckets, sizeof(*dc->bucket));
	dc->blk = calloc(n ? n : 1, sizeof(*dc->blk));
	dc->sblk = calloc(n ? n : 1, sizeof(*dc->sblk));
	if (!dc->bucket || !dc->blk || !dc->sblk) {
		r = -ENOMEM;
		goto fail;
	}
	for (i = 0; i < n; i++) {
		struct vmfsd_dirent de;
		uint32_t e, off, sz;
		uint8_t *b;

		r = bmap_get(fs, dp, i, &e);
		if (r)
			goto fail;
		if (!e || (e & VMFSD_MAP_UNWRITTEN)) {
			r = -EUCLEAN;
			goto fail;
		}
		b = bdev_alloc(VMFSD_SUB_BLOCK_SIZE);
		if (!b) {
			r = -ENOMEM;
			goto fail;
		}
		dc->blk[i] = b;
		dc->sblk[i] = e;
		dc->nblocks = i + 1;
		r = meta_read(fs, vmfsd_sub_off(&fs->sb, e), b);
		if (!r)
			r = vmfsd_dir_block_verify(b, e, dp->ino, dp->d.generation);
		if (r)
			goto fail;
		for (off = 0; (sz = vmfsd_dirent_get(b, off, &de)); off += sz) {
			if (*dent_slot(dc, de.name, de.name_len)) {
				r = -EUCLEAN; /* duplicate name */
				goto fail;
			}
			r = dent_insert(dc, de.name, de.name_len, de.ino, de.type, i);
			if (r)
				goto fail;
		}
	}
	return 0;
fail:
	dir_cache_free(dp);
	return r;
}

static int check_name(const char *name, size_t *len)
{
	*len = strlen(name);
	if (!*len)
		return -ENOENT;
	if (*len > VMFSD_NAME_MAX)
		return -ENAMETOOLONG;
	if (strchr(name, '/') || !strcmp(name, ".") || !strcmp(name, ".."))
		return -EINVAL;
	return 0;
}

/* Loads DP and finds NAME: *PP is its link in the hash chain; with OFF,
 * *OFF is the entry's offset in its block. */
static int dent_find(struct fs *fs, struct fs_inode *dp, const char *name,
		     struct dent ***pp, int *off)
{
	size_t len = strlen(name);
	int r;

	r = dir_load(fs, dp);
	if (r)
		return r;
	*pp = dent_slot(dp->dir, name, len);
	if (!**pp)
		return -ENOENT;
	if (!off)
		return 0;
	/* The cache said the name is in this block: not finding it there
	 * means the block changed under the cache. */
	*off = vmfsd_dirent_find(dp->dir->blk[(**pp)->blk], name, (unsigned)len);
	return *off < 0 ? -EUCLEAN : 0;
}

int dir_lookup(struct fs *fs, struct fs_inode *dp, const char *name, uint64_t *ino,
	       uint8_t *type)
{
	struct dent **pp;
	int r;

	if (strlen(name) > VMFSD_NAME_MAX)
		return -ENAMETOOLONG;
	r = dent_find(fs, dp, name, &pp, NULL);
	if (r)
		return r;
	*ino = (*pp)->ino;
	if (type)
		*type = (*pp)->type;
	return 0;
}

static void block_log(struct fs *fs, struct fs_inode *dp, uint32_t bi, struct tx *tx)
{
	struct dir_cache *dc = dp->dir;

	vmfsd_dir_block_finish(dc->blk[bi], dc->sblk[bi]);
	tx_add(tx, vmfsd_sub_off(&fs->sb, dc->sblk[bi]), dc->blk[bi]);
}

static int block_append(struct fs *fs, struct fs_inode *dp, struct tx *tx, uint32_t *out)
{
	struct dir_cache *dc = dp->dir;
	uint32_t n = dc->nblocks;
	uint64_t sblk, goal = n ? dc->sblk[n - 1] + 1 : 0;
	uint8_t **nb;
	uint32_t *ns;
	uint8_t *b;
	int r;

	nb = realloc(dc->blk, (n + 1) * sizeof(*nb));
	if (!nb)
		return -ENOMEM;
	dc->blk = nb;
	ns = realloc(dc->sblk, (n + 1) * sizeof(*ns));
	if (!ns)
		return -ENOMEM;
	dc->sblk = ns;
	b = bdev_alloc(VMFSD_SUB_BLOCK_SIZE);
	if (!b)
		return -ENOMEM;
	r = alloc_item(fs, &fs->spool, goal, tx, &sblk);
	if (r) {
		bdev_free(b);
		return r;
	}
	r = bmap_set(fs, dp, n, (uint32_t)sblk, tx);
	if (r) {
		alloc_free(fs, &fs->spool, sblk, tx);
		bdev_free(b);
		return r;
	}
	vmfsd_dir_block_init(b, dp->ino, dp->d.generation);
	dc->blk[n] = b;
	dc->sblk[n] = (uint32_t)sblk;
	dc->nblocks = n + 1;
	dp->d.size += VMFSD_SUB_BLOCK_SIZE;
	dp->d.alloc_units += VMFSD_SUB_BLOCK_SIZE / 512;
	*out = n;
	return 0;
}

int dir_add(struct fs *fs, struct fs_inode *dp, const char *name, uint64_t ino,
	    uint8_t type, struct tx *tx)
{
	struct dir_cache *dc;
	size_t len;
	uint32_t bi;
	int r;

	r = check_name(name, &len);
	if (r)
		return r;
	r = dir_load(fs, dp);
	if (r)
		return r;
	dc = dp->dir;
	if (*dent_slot(dc, name, len))
		return -EEXIST;
	for (bi = dc->free_hint; bi < dc->nblocks; bi++)
		if (vmfsd_dir_block_fits(dc->blk[bi], (unsigned)len))
			break;
	dc->free_hint = bi;
	if (bi == dc->nblocks) {
		r = block_append(fs, dp, tx, &bi);
		if (r)
			return r;
	}
	r = dent_insert(dc, name, len, ino, type, bi);
	if (r)
		return r;
	r = vmfsd_dirent_add(dc->blk[bi], ino, type, name, (unsigned)len);
	if (r)
		return r;
	block_log(fs, dp, bi, tx);
	inode_touch(fs, dp, true, true);
	tx_add_inode(tx, dp);
	return 0;
}

int dir_remove(struct fs *fs, struct fs_inode *dp, const char *name, struct tx *tx)
{
	struct dir_cache *dc;
	struct dent **pp, *d;
	int r, off;

	r = dent_find(fs, dp, name, &pp, &off);
	if (r)
		return r;
	dc = dp->dir;
	d = *pp;
	vmfsd_dirent_remove(dc->blk[d->blk], (unsigned)off);
	if (d->blk < dc->free_hint)
		dc->free_hint = d->blk;
	block_log(fs, dp, d->blk, tx);
	*pp = d->next;
	free(d);
	dc->count--;
	inode_touch(fs, dp, true, true);
	tx_add_inode(tx, dp);
	return 0;
}

int dir_replace(struct fs *fs, struct fs_inode *dp, const char *name, uint64_t ino,
		uint8_t type, struct tx *tx)
{
	struct dent **pp, *d;
	int r, off;

	r = dent_find(fs, dp, name, &pp, &off);
	if (r)
		return r;
	d = *pp;
	vmfsd_dirent_update(dp->dir->blk[d->blk], (unsigned)off, ino, type);
	d->ino = ino;
	d->type = type;
	block_log(fs, dp, d->blk, tx);
	inode_touch(fs, dp, true, true);
	tx_add_inode(tx, dp);
	return 0;
}

uint32_t dir_count(struct fs *fs, struct fs_inode *dp)
{
	if (dir_load(fs, dp))
		return UINT32_MAX;
	return dp->dir->count;
}

int dir_snapshot(struct fs *fs, struct fs_inode *dp, struct fs_dirent **out, uint32_t *n)
{
	struct dir_cache *dc;
	struct fs_dirent *v;
	uint32_t bi, k = 0;
	int r;

	r = dir_load(fs, dp);
	if (r)
		return r;
	dc = dp->dir;
	v = malloc((dc->count ? dc->count : 1) * sizeof(*v));
	if (!v)
		return -ENOMEM;
	for (bi = 0; bi < dc->nblocks; bi++) {
		struct vmfsd_dirent de;
		unsigned off, sz;

		for (off = 0; k < dc->count && (sz = vmfsd_dirent_get(dc->blk[bi], off, &de));
		     off += sz) {
			v[k].ino = de.ino;
			v[k].type = de.type;
			memcpy(v[k].name, de.name, de.name_len);
			v[k].name[de.name_len] = 0;
			k++;
		}
	}
	*out = v;
	*n = k;
	return 0;
}
