// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * File data: read, write, truncate, fallocate, SEEK_DATA/SEEK_HOLE.
 *
 * A file lives in one of three data modes that only ever grow: inline (the
 * bytes sit in the inode, <= 2912 bytes), sub-block (4 KiB units, while the
 * file fits in one file block) and file-block (1 MiB units by default), so a
 * .vmx costs no block at all and a log a few 4 KiB units, while a VMDK maps
 * 1 MiB at a time.
 *
 * Invariants that keep stale data out of files: a unit is exposed (mapped
 * as written) only after its full contents were written; a newly allocated
 * unit is written whole (zeros around the caller's bytes); preallocated
 * units are flagged unwritten and read as zeros; bytes past EOF inside a
 * unit are always zero (truncate and punch zero them), so growing a file
 * never reveals old bytes.
 *
 * Overwrites of written units that are 512-byte aligned run in parallel
 * under the inode's iolock held shared; everything that allocates, converts,
 * truncates or needs a read-modify-write holds it exclusive.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <linux/falloc.h>
#include <stdlib.h>
#include <unistd.h>

#include "fs_internal.h"

struct fs_file {
	struct fs_inode *ip;
	int flags;
	bool standby;   /* a read-only open awaiting a lock handover: no lock */
	bool cached;    /* the kernel may keep its data in the page cache */
	bool keep;      /* and what it cached before this open */
	bool direct_w;  /* direct I/O, open for writing (ip->ndirect_w) */
};

#define SECTOR 512u

static uint64_t round_down(uint64_t v, uint64_t a)
{
	return v / a * a;
}

static uint64_t round_up(uint64_t v, uint64_t a)
{
	return (v + a - 1) / a * a;
}

static bool entry_written(uint32_t e)
{
	return e && !(e & VMFSD_MAP_UNWRITTEN);
}

static uint64_t unit_dev_off(struct fs *fs, struct fs_inode *ip, uint32_t e)
{
	uint64_t p = e & VMFSD_MAP_PBLK_MASK;

	return ip->d.data_mode == VMFSD_DATA_BLOCK ? vmfsd_block_off(&fs->sb, p)
						   : vmfsd_sub_off(&fs->sb, p);
}

/* ---------------- read ---------------- */

/* A stretch of the file: DEV = device offset of physically contiguous
 * written units, or 0 for holes and unwritten units (which read as zeros). */
struct run {
	uint64_t dev, pos, len;
};

struct runs {
	struct run *v;
	uint32_t n, cap;
	struct run inl[8];
};

static void runs_free(struct runs *rs)
{
	if (rs->v != rs->inl)
		free(rs->v);
}

static int runs_push(struct runs *rs, uint64_t dev, uint64_t pos, uint64_t len)
{
	if (rs->n == rs->cap) {
		uint32_t cap = rs->cap * 2;
		struct run *nv = malloc(cap * sizeof(*nv));

		if (!nv)
			return -ENOMEM;
		memcpy(nv, rs->v, rs->n * sizeof(*nv));
		runs_free(rs);
		rs->v = nv;
		rs->cap = cap;
	}
	rs->v[rs->n++] = (struct run){ dev, pos, len };
	return 0;
}

/* Splits [p0, p1) into runs, merging physically contiguous written units
 * so a sequential 1 MiB request stays one device I/O (iolock held). */
static int collect_runs(struct fs *fs, struct fs_inode *ip, uint64_t p0, uint64_t p1,
			struct runs *rs)
{
	uint32_t unit = inode_unit_size(fs, ip);
	uint64_t pos = p0;
	int r;

	rs->v = rs->inl;
	rs->n = 0;
	rs->cap = sizeof(rs->inl) / sizeof(rs->inl[0]);
	while (pos < p1) {
		uint64_t lblk = pos / unit, end = (lblk + 1) * unit;
		uint32_t e;

		r = bmap_get(fs, ip, lblk, &e);
		if (r)
			goto fail;
		if (end > p1)
			end = p1;
		if (!entry_written(e)) {
			r = runs_push(rs, 0, pos, end - pos);
			if (r)
				goto fail;
			pos = end;
			continue;
		}
		while (end < p1) {
			uint32_t e2;

			r = bmap_get(fs, ip, end / unit, &e2);
			if (r)
				goto fail;
			if (!entry_written(e2) ||
			    (e2 & VMFSD_MAP_PBLK_MASK) != (e & VMFSD_MAP_PBLK_MASK) + (end / unit - lblk))
				break;
			end = (end / unit + 1) * unit < p1 ? (end / unit + 1) * unit : p1;
		}
		r = runs_push(rs, unit_dev_off(fs, ip, e) + pos % unit, pos, end - pos);
		if (r)
			goto fail;
		pos = end;
	}
	return 0;
fail:
	runs_free(rs);
	return r;
}

/* A descriptor that uses the page cache reads only while this host holds
 * the file's lock: after the lock was handed to another host (which may
 * write the file), the pages it would fill could go stale behind the
 * kernel's back (docs/cluster.md, "Page cache").  Direct-I/O descriptors
 * always read the disk and keep reading. */
static int cached_read_check(struct fs *fs, struct fs_file *f)
{
	int r = 0;

	if (!f->cached || !fs->hb)
		return 0;
	pthread_mutex_lock(&fs->lk_lock);
	if (f->ip->lk_mode == VMFSD_LOCK_FREE)
		r = -EIO;
	pthread_mutex_unlock(&fs->lk_lock);
	return r;
}

/* Reads the sector-aligned range [a0, a1) of the file into BUF (iolock held). */
static int read_aligned(struct fs *fs, struct fs_inode *ip, uint8_t *buf, uint64_t a0,
			uint64_t a1)
{
	struct runs rs;
	uint32_t i;
	int r = 0;

	if (ip->d.data_mode == VMFSD_DATA_INLINE) {
		memset(buf, 0, a1 - a0);
		if (a0 < VMFSD_INLINE_MAX)
			memcpy(buf, ip->d.map + a0,
			       (a1 < VMFSD_INLINE_MAX ? a1 : VMFSD_INLINE_MAX) - a0);
		return 0;
	}
	r = collect_runs(fs, ip, a0, a1, &rs);
	if (r)
		return r;
	for (i = 0; i < rs.n && !r; i++) {
		if (rs.v[i].dev)
			r = bdev_pread(fs->bd, buf + (rs.v[i].pos - a0), rs.v[i].len, rs.v[i].dev);
		else
			memset(buf + (rs.v[i].pos - a0), 0, rs.v[i].len);
	}
	runs_free(&rs);
	return r;
}

ssize_t fs_read_buf(struct fs *fs, struct fs_file *f, size_t size, uint64_t off,
		    void **bufp, size_t *data_off)
{
	struct fs_inode *ip = f->ip;
	uint64_t a0, a1, end;
	uint8_t *buf;
	int r;

	*bufp = NULL;
	*data_off = 0;
	r = cached_read_check(fs, f);
	if (r)
		return r;
	iolock_rd(&ip->iolock);
	if (off >= ip->d.size || !size) {
		iolock_unlock_rd(&ip->iolock);
		return 0;
	}
	end = off + size < ip->d.size ? off + size : ip->d.size;
	a0 = round_down(off, SECTOR);
	a1 = round_up(end, SECTOR);
	buf = bdev_alloc(a1 - a0);
	if (!buf) {
		iolock_unlock_rd(&ip->iolock);
		return -ENOMEM;
	}
	r = read_aligned(fs, ip, buf, a0, a1);
	iolock_unlock_rd(&ip->iolock);
	if (r) {
		bdev_free(buf);
		return r;
	}
	*bufp = buf;
	*data_off = off - a0;
	return (ssize_t)(end - off);
}

ssize_t fs_read(struct fs *fs, struct fs_file *f, void *buf, size_t size, uint64_t off)
{
	size_t doff;
	void *b;
	ssize_t n = fs_read_buf(fs, f, size, off, &b, &doff);

	if (n > 0)
		memcpy(buf, (uint8_t *)b + doff, (size_t)n);
	bdev_free(b);
	return n;
}

/* ---------------- write helpers ---------------- */

/* Writes LEN bytes at device offset DEV, which lies inside a written unit;
 * read-modify-write of the partial sectors at either end (iolock excl.). */
static int write_span(struct fs *fs, uint64_t dev, const uint8_t *data, size_t len)
{
	uint64_t a0 = round_down(dev, SECTOR), a1 = round_up(dev + len, SECTOR);
	uint8_t *buf;
	int r = 0;

	if (a0 == dev && a1 == dev + len)
		return bdev_pwrite(fs->bd, data, len, dev);
	buf = bdev_alloc(a1 - a0);
	if (!buf)
		return -ENOMEM;
	if (a0 != dev)
		r = bdev_pread(fs->bd, buf, SECTOR, a0);
	if (!r && a1 != dev + len && (a1 - SECTOR != a0 || a0 == dev))
		r = bdev_pread(fs->bd, buf + (a1 - a0 - SECTOR), SECTOR, a1 - SECTOR);
	if (!r) {
		memcpy(buf + (dev - a0), data, len);
		r = bdev_pwrite(fs->bd, buf, a1 - a0, a0);
	}
	bdev_free(buf);
	return r;
}

/* Allocates a data unit from POOL (meta_lock held).  Small-file data never
 * takes the sub-blocks kept for the block maps of large files, and does
 * not wait for sub-block clusters other hosts are busy in (a small volume
 * has one or two, and three writers would queue for them): ENOSPC here
 * makes a regular file move to file-block mode instead. */
static int alloc_data(struct fs *fs, struct alloc_pool *pool, uint64_t goal, struct tx *tx,
		      uint64_t *out)
{
	if (pool != &fs->spool)
		return alloc_item(fs, pool, goal, tx, out);
	if (fs->spool.nfree <= alloc_sub_reserve(fs))
		return -ENOSPC;
	return alloc_item_wait(fs, pool, goal, tx, 0, out);
}

/* Physical goal for unit LBLK: right after the unit before it. */
static uint64_t alloc_goal(struct fs *fs, struct fs_inode *ip, uint64_t lblk)
{
	uint32_t e = 0;

	if (lblk && bmap_get(fs, ip, lblk - 1, &e) == 0 && e)
		return (e & VMFSD_MAP_PBLK_MASK) + 1;
	return 0;
}

/* After a failed allocation: when nothing is mapped any more, frees the
 * map nodes that remain (the levels a grow added for an offset that then
 * failed) so the file costs nothing again (meta_lock held). */
static void prune_if_empty(struct fs *fs, struct fs_inode *ip, struct tx *tx)
{
	uint64_t next;

	if (ip->d.data_mode != VMFSD_DATA_INLINE && ip->d.map_height &&
	    bmap_next_mapped(fs, ip, 0, &next) == -ENXIO)
		(void)bmap_free_range(fs, ip, 0, UINT64_MAX, tx);
}

static int store_small(struct fs *fs, struct fs_inode *ip, const void *data, size_t len,
		       uint8_t mode, struct tx *tx)
{
	uint32_t unit = mode == VMFSD_DATA_BLOCK ? fs->sb.block_size : VMFSD_SUB_BLOCK_SIZE;
	struct alloc_pool *pool = mode == VMFSD_DATA_BLOCK ? &fs->bpool : &fs->spool;
	uint8_t *buf = bdev_alloc(unit);
	uint64_t p;
	int r;

	if (!buf)
		return -ENOMEM;
	memset(buf, 0, unit);
	memcpy(buf, data, len);
	r = alloc_data(fs, pool, 0, tx, &p);
	if (!r) {
		/* Ordered: the data reaches the device before the map points at it. */
		r = bdev_pwrite(fs->bd, buf, unit,
				mode == VMFSD_DATA_BLOCK ? vmfsd_block_off(&fs->sb, p)
							 : vmfsd_sub_off(&fs->sb, p));
		if (r)
			alloc_free(fs, pool, p, tx);
	}
	bdev_free(buf);
	if (r)
		return r;
	memset(ip->d.map, 0, VMFSD_MAP_AREA);
	ip->d.map_height = 0;
	ip->d.data_mode = mode;
	vmfsd_put_le32(ip->d.map, (uint32_t)p);    /* height 0: root slot 0 */
	ip->d.alloc_units += unit / 512;
	ip->d.size = len;
	tx_add_inode(tx, ip);
	return 0;
}

int file_store_small_locked(struct fs *fs, struct fs_inode *ip, const void *data, size_t len,
			    struct tx *tx)
{
	int r;

	if (len > VMFSD_SYMLINK_MAX || ip->d.size || ip->d.data_mode != VMFSD_DATA_INLINE)
		return -EINVAL;
	r = store_small(fs, ip, data, len, VMFSD_DATA_SUB, tx);
	if (r == -ENOSPC)
		r = store_small(fs, ip, data, len, VMFSD_DATA_BLOCK, tx);
	return r;
}

int file_read_small_locked(struct fs *fs, struct fs_inode *ip, void *buf, size_t len)
{
	uint32_t a1 = (uint32_t)round_up(len, SECTOR);
	uint8_t *b;
	int r;

	if (len > VMFSD_SYMLINK_MAX)
		return -EIO;
	b = bdev_alloc(a1 ? a1 : SECTOR);
	if (!b)
		return -ENOMEM;
	r = read_aligned(fs, ip, b, 0, a1);
	if (!r)
		memcpy(buf, b, len);
	bdev_free(b);
	return r;
}

/* Writes a whole new unit: zeros with DATA at IN_OFF; maps it written.
 * E is the current entry (0 hole, or unwritten).  iolock exclusive held. */
static int write_new_unit(struct fs *fs, struct fs_inode *ip, uint64_t lblk, uint32_t e,
			  const uint8_t *data, size_t in_off, size_t len, struct tx *tx)
{
	uint32_t unit = inode_unit_size(fs, ip);
	uint64_t p;
	uint8_t *buf;
	int r;

	buf = bdev_alloc(unit);
	if (!buf)
		return -ENOMEM;
	memset(buf, 0, unit);
	if (len)
		memcpy(buf + in_off, data, len);
	if (e) {
		p = e & VMFSD_MAP_PBLK_MASK;
	} else {
		pthread_mutex_lock(&fs->meta_lock);
		r = alloc_data(fs, bmap_pool(fs, ip), alloc_goal(fs, ip, lblk), tx, &p);
		if (!r)
			ip->d.alloc_units += unit / 512;
		pthread_mutex_unlock(&fs->meta_lock);
		if (r) {
			bdev_free(buf);
			return r;
		}
	}
	/* Ordered: the data reaches the device before the map points at it. */
	r = bdev_pwrite(fs->bd, buf, unit, unit_dev_off(fs, ip, (uint32_t)p));
	bdev_free(buf);
	pthread_mutex_lock(&fs->meta_lock);
	if (!r)
		r = bmap_set(fs, ip, lblk, (uint32_t)p, tx);
	if (r && !e) {
		alloc_free(fs, bmap_pool(fs, ip), p, tx);
		ip->d.alloc_units -= unit / 512;
	}
	pthread_mutex_unlock(&fs->meta_lock);
	return r;
}

/* Moves an inline or sub-block file to MODE, keeping its bytes.
 * iolock exclusive held; commits its own transaction.  All or nothing:
 * the new unit is allocated and written before the old map is freed, so a
 * conversion that fails (ENOSPC in the target pool, EIO) leaves the file
 * exactly as it was and gives back what it took. */
static int convert_mode(struct fs *fs, struct fs_inode *ip, uint8_t mode)
{
	uint64_t size = ip->d.size, copy, p = 0;
	uint32_t nunit = mode == VMFSD_DATA_BLOCK ? fs->sb.block_size : VMFSD_SUB_BLOCK_SIZE;
	struct alloc_pool *pool = mode == VMFSD_DATA_BLOCK ? &fs->bpool : &fs->spool;
	uint8_t *data = NULL;
	struct tx tx;
	bool any = false;
	int r = 0;

	if (mode <= ip->d.data_mode)
		return 0;
	/* A sub-block file is at most one file block long (mode_for). */
	copy = size < nunit ? size : nunit;
	if (ip->d.data_mode == VMFSD_DATA_INLINE) {
		any = copy > 0;
	} else {
		uint64_t next;

		r = bmap_next_mapped(fs, ip, 0, &next);
		if (r && r != -ENXIO)
			return r;
		any = r == 0;
		r = 0;
	}
	if (any) {
		data = bdev_alloc(nunit);
		if (!data)
			return -ENOMEM;
		memset(data, 0, nunit);
		r = read_aligned(fs, ip, data, 0, round_up(copy, SECTOR));
		if (r)
			goto out;
	}
	tx_begin(fs, &tx);
	if (any) {
		pthread_mutex_lock(&fs->meta_lock);
		r = alloc_data(fs, pool, 0, &tx, &p);
		pthread_mutex_unlock(&fs->meta_lock);
		/* Ordered: the data reaches the device before a map points at it. */
		if (!r)
			r = bdev_pwrite(fs->bd, data, nunit,
					mode == VMFSD_DATA_BLOCK ? vmfsd_block_off(&fs->sb, p)
								 : vmfsd_sub_off(&fs->sb, p));
	}
	pthread_mutex_lock(&fs->meta_lock);
	if (r) {
		if (p)
			alloc_free(fs, pool, p, &tx);
	} else {
		r = bmap_free_range(fs, ip, 0, UINT64_MAX, &tx);
		if (!r) {
			memset(ip->d.map, 0, VMFSD_MAP_AREA);
			ip->d.map_height = 0;
			ip->d.data_mode = mode;
			if (any) {
				/* Height 0: root slot 0, no node to allocate. */
				vmfsd_put_le32(ip->d.map, (uint32_t)p);
				ip->d.alloc_units += nunit / 512;
			}
			tx_add_inode(&tx, ip);
		}
	}
	r = tx_commit_after(&tx, r);
	pthread_mutex_unlock(&fs->meta_lock);
out:
	bdev_free(data);
	return r;
}

/* The data mode a file of SIZE bytes needs. */
static uint8_t mode_for(struct fs *fs, uint64_t size)
{
	if (size <= VMFSD_INLINE_MAX)
		return VMFSD_DATA_INLINE;
	return size <= fs->sb.block_size ? VMFSD_DATA_SUB : VMFSD_DATA_BLOCK;
}

/* Regular files whose sub-block mode finds no room (the pool is small,
 * and partly kept for block maps) move to file-block mode instead: they
 * cost a file block, but never fail while the volume has room. */
static int ensure_mode(struct fs *fs, struct fs_inode *ip, uint64_t end)
{
	uint8_t m = mode_for(fs, end);
	int r;

	if (m <= ip->d.data_mode)
		return 0;
	r = convert_mode(fs, ip, m);
	if (r == -ENOSPC && m == VMFSD_DATA_SUB && S_ISREG(ip->d.mode))
		r = convert_mode(fs, ip, VMFSD_DATA_BLOCK);
	return r;
}

/* Fast path: every unit in range written, sector aligned, no mode change.
 * Returns -EAGAIN if the slow path is needed. */
static bool fast_write_ok(struct fs *fs, struct fs_inode *ip, uint64_t off, size_t size)
{
	return !((off | size) & (SECTOR - 1)) && ip->d.data_mode != VMFSD_DATA_INLINE &&
	       mode_for(fs, off + size) <= ip->d.data_mode;
}

static int write_fast(struct fs *fs, struct fs_inode *ip, const uint8_t *buf, size_t size,
		      uint64_t off)
{
	struct runs rs;
	uint32_t i;
	int r;

	if (!fast_write_ok(fs, ip, off, size))
		return -EAGAIN;
	r = collect_runs(fs, ip, off, off + size, &rs);
	if (r)
		return r;
	/* Check first so nothing is written if the slow path must run. */
	for (i = 0; i < rs.n && !r; i++)
		if (!rs.v[i].dev)
			r = -EAGAIN;
	for (i = 0; i < rs.n && !r; i++)
		r = bdev_pwrite(fs->bd, buf + (rs.v[i].pos - off), rs.v[i].len, rs.v[i].dev);
	runs_free(&rs);
	return r;
}

/* meta_lock held */
static void size_times_locked(struct fs *fs, struct fs_inode *ip, uint64_t end)
{
	if (end > ip->d.size)
		ip->d.size = end;
	inode_touch(fs, ip, true, true);
}

static void update_size_times(struct fs *fs, struct fs_inode *ip, uint64_t end)
{
	pthread_mutex_lock(&fs->meta_lock);
	size_times_locked(fs, ip, end);
	pthread_mutex_unlock(&fs->meta_lock);
}

/* A new unit of an allocating write under the shared iolock. */
struct new_unit {
	uint64_t lblk;
	uint32_t old;           /* entry seen: 0 (hole) or unwritten */
	uint32_t p;             /* its unit: allocated here when OLD is 0 */
};

/* Gives back the units write_alloc_shared allocated and did not map
 * (meta_lock held). */
static void new_units_free(struct fs *fs, struct fs_inode *ip, struct new_unit *nu, uint32_t n,
			   struct tx *tx)
{
	uint32_t unit = inode_unit_size(fs, ip), i;

	for (i = 0; i < n; i++) {
		if (nu[i].old || !nu[i].p)
			continue;
		alloc_free(fs, bmap_pool(fs, ip), nu[i].p, tx);
		ip->d.alloc_units -= unit / 512;
		nu[i].p = 0;
	}
}

/* Allocating write without the exclusive iolock, so that a queue of first
 * writes to a thin file reaches the device in parallel instead of one
 * synchronous unit at a time (issue #17).  Only for writes where every
 * unit of [OFF, OFF+SIZE) is either written already or a hole/unwritten
 * unit lying wholly inside the request: no zeroing, no read-modify-write,
 * no mode change; anything else returns -EAGAIN before a byte is written
 * and the exclusive path (write_slow_any) runs.  The shared iolock keeps
 * truncate, punch and the exclusive writer out for the whole call.
 *
 * Crash rules as write_new_unit: a new unit is allocated (bitmap in TX),
 * its data written, and only then mapped (written) in TX, so no journal
 * commit can make a map point at a unit before its data was written (the
 * commit's first flush makes that data durable before the map).  The map
 * change is one in-place slot store (bmap_replace) under meta_lock: never
 * a new node or growth (-EAGAIN: the exclusive path makes the path), so a
 * reader walking the map sees the old entry (zeros) or the new one.  Two
 * such writers racing for one hole both allocate; the first to map wins
 * and the other frees its unit, as if it had written first (both covered
 * the whole unit, and both were in flight together).
 *
 * Returns SIZE, a negative errno, or -EAGAIN (nothing written). */
static ssize_t write_alloc_shared(struct fs *fs, struct fs_inode *ip, const uint8_t *buf,
				  size_t size, uint64_t off)
{
	struct alloc_pool *pool = bmap_pool(fs, ip);
	uint64_t end = off + size, goal = 0;
	struct new_unit *nu = NULL;
	uint32_t unit, n = 0, i, k;
	struct runs rs;
	struct tx tx;
	int r;

	if (!fast_write_ok(fs, ip, off, size) || ip->d.data_mode != VMFSD_DATA_BLOCK)
		return -EAGAIN;
	unit = inode_unit_size(fs, ip);
	r = collect_runs(fs, ip, off, end, &rs);
	if (r)
		return r;
	for (i = 0; i < rs.n; i++) {
		if (rs.v[i].dev)
			continue;
		if (rs.v[i].pos % unit || rs.v[i].len % unit) {
			runs_free(&rs);
			return -EAGAIN;
		}
		n += (uint32_t)(rs.v[i].len / unit);
	}
	nu = calloc(n ? n : 1, sizeof(*nu));
	if (!nu) {
		runs_free(&rs);
		return -ENOMEM;
	}
	tx_begin(fs, &tx);
	pthread_mutex_lock(&fs->meta_lock);
	for (i = 0, n = 0; i < rs.n && !r; i++) {
		uint64_t lblk;

		if (rs.v[i].dev)
			continue;
		for (lblk = rs.v[i].pos / unit; lblk < (rs.v[i].pos + rs.v[i].len) / unit; lblk++) {
			uint32_t e;

			/* Probe: -EAGAIN when the slot's path is missing. */
			r = bmap_get(fs, ip, lblk, &e);
			if (!r)
				r = bmap_replace(fs, ip, lblk, e, e, &tx);
			if (!r && entry_written(e))
				r = -EAGAIN;    /* written meanwhile: the exclusive path */
			if (r)
				break;
			nu[n].lblk = lblk;
			nu[n].old = e;
			if (e) {
				nu[n].p = e & VMFSD_MAP_PBLK_MASK;
			} else {
				uint64_t p;

				if (!goal)
					goal = alloc_goal(fs, ip, lblk);
				r = alloc_data(fs, pool, goal, &tx, &p);
				if (r) {
					r = -EAGAIN;    /* ENOSPC and the rest: the exclusive path */
					break;
				}
				nu[n].p = (uint32_t)p;
				goal = p + 1;
				ip->d.alloc_units += unit / 512;
			}
			n++;
		}
	}
	if (r)
		new_units_free(fs, ip, nu, n, &tx);
	pthread_mutex_unlock(&fs->meta_lock);

	/* The data: written runs in place, new units in physically contiguous
	 * stretches (one device I/O for a sequential request). */
	for (i = 0, k = 0; i < rs.n && !r; i++) {
		uint64_t pos = rs.v[i].pos, stop = pos + rs.v[i].len;

		if (rs.v[i].dev) {
			r = bdev_pwrite(fs->bd, buf + (pos - off), rs.v[i].len, rs.v[i].dev);
			continue;
		}
		while (pos < stop && !r) {
			uint32_t j = k + 1;

			while (pos + (uint64_t)(j - k) * unit < stop && nu[j].p == nu[j - 1].p + 1)
				j++;
			r = bdev_pwrite(fs->bd, buf + (pos - off), (size_t)(j - k) * unit,
					unit_dev_off(fs, ip, nu[k].p));
			pos += (uint64_t)(j - k) * unit;
			k = j;
		}
	}
	runs_free(&rs);

	pthread_mutex_lock(&fs->meta_lock);
	for (i = 0; i < n && !r; i++) {
		int rr = bmap_replace(fs, ip, nu[i].lblk, nu[i].old, nu[i].p, &tx);

		if (rr == -ESTALE && !nu[i].old) {
			/* Another whole-unit writer mapped its unit first. */
			alloc_free(fs, pool, nu[i].p, &tx);
			ip->d.alloc_units -= unit / 512;
			nu[i].p = 0;
		} else if (rr == -ESTALE) {
			/* The unwritten unit was written by another meanwhile. */
		} else if (rr) {
			r = rr;
		} else {
			nu[i].p = 0;    /* mapped: not ours to free any more */
		}
	}
	if (r)
		new_units_free(fs, ip, nu, n, &tx);
	else
		size_times_locked(fs, ip, end);
	if (tx.n || !r)
		tx_add_inode(&tx, ip);
	r = tx_commit_after(&tx, r);
	pthread_mutex_unlock(&fs->meta_lock);
	free(nu);
	return r ? r : (ssize_t)size;
}

/* Returns the bytes written: SIZE, or fewer when an error (ENOSPC, EIO)
 * stopped it after some units were written (those stay, and the size
 * covers them, so no allocated bytes hide past EOF), or the error when
 * nothing was written. */
static ssize_t write_slow(struct fs *fs, struct fs_inode *ip, const uint8_t *buf, size_t size,
			  uint64_t off, int *err)
{
	uint64_t end = off + size, pos, good = off;
	uint32_t unit;
	struct tx tx;
	int r;

	r = ensure_mode(fs, ip, end);
	*err = r;
	if (r)
		return r;
	if (ip->d.data_mode == VMFSD_DATA_INLINE) {
		pthread_mutex_lock(&fs->meta_lock);
		memcpy(ip->d.map + off, buf, size);
		pthread_mutex_unlock(&fs->meta_lock);
		update_size_times(fs, ip, end);
		return (ssize_t)size;
	}
	unit = inode_unit_size(fs, ip);
	tx_begin(fs, &tx);
	for (pos = off; pos < end && !r;) {
		uint64_t lblk = pos / unit, uend = (lblk + 1) * unit;
		uint32_t e;

		if (uend > end)
			uend = end;
		r = bmap_get(fs, ip, lblk, &e);
		if (r)
			break;
		if (entry_written(e))
			r = write_span(fs, unit_dev_off(fs, ip, e) + pos % unit, buf + (pos - off),
				       uend - pos);
		else
			r = write_new_unit(fs, ip, lblk, e, buf + (pos - off), pos % unit,
					   uend - pos, &tx);
		if (!r)
			good = uend;
		pos = uend;
	}
	pthread_mutex_lock(&fs->meta_lock);
	if (r && good == off)
		prune_if_empty(fs, ip, &tx);
	/* A write that wrote nothing changes nothing: not even the size when
	 * it started past EOF. */
	if (good > off && good > ip->d.size)
		ip->d.size = good;
	if (good > off)
		inode_touch(fs, ip, true, true);
	if (tx.n || good > off)
		tx_add_inode(&tx, ip);
	r = tx_commit_after(&tx, r);
	pthread_mutex_unlock(&fs->meta_lock);
	*err = r;
	if (good > off)
		return (ssize_t)(good - off);
	return r;
}

/* Slow path, retried once in file-block mode when the sub-block pool is
 * full (small files then cost a file block, but never fail while the
 * volume has room).  The pool can fill up after some units of the write
 * went in (with other hosts on the volume, alloc_data does not wait for
 * their sub-block clusters): the rest goes on in file-block mode, since a
 * short count is no answer for a page write-back (the kernel drops the
 * pages it did not write: fsx's mapped writes read back as zeros). */
static ssize_t write_slow_any(struct fs *fs, struct fs_inode *ip, const uint8_t *buf,
			      size_t size, uint64_t off)
{
	int err = 0;
	ssize_t n = write_slow(fs, ip, buf, size, off, &err);
	size_t done = n > 0 ? (size_t)n : 0;
	ssize_t rest;
	int r;

	if (err != -ENOSPC || ip->d.data_mode == VMFSD_DATA_BLOCK || !S_ISREG(ip->d.mode))
		return n;
	r = convert_mode(fs, ip, VMFSD_DATA_BLOCK);
	if (r)
		return done ? (ssize_t)done : r;
	rest = write_slow(fs, ip, buf + done, size - done, off + done, &err);
	if (rest < 0)
		return done ? (ssize_t)done : rest;
	return (ssize_t)(done + (size_t)rest);
}

ssize_t fs_write(struct fs *fs, struct fs_file *f, const void *buf, size_t size,
		 uint64_t off)
{
	struct fs_inode *ip = f->ip;
	ssize_t n = (ssize_t)size;
	int r;

	if (fs->readonly)
		return -EROFS;
	if (!size)
		return 0;
	if (off + size < off || off + size > FS_MAX_FILE_SIZE)
		return -EFBIG;
	iolock_rd(&ip->iolock);
	r = cluster_write_check(fs, ip);
	if (r) {
		iolock_unlock_rd(&ip->iolock);
		return r;
	}
	if (f->flags & O_APPEND) {
		r = -EAGAIN;
	} else {
		r = write_fast(fs, ip, buf, size, off);
		if (!r)
			update_size_times(fs, ip, off + size);
		if (r == -EAGAIN) {
			/* Holes or unwritten units: whole ones are allocated
			 * here, still shared; the rest needs the exclusive
			 * path below. */
			n = write_alloc_shared(fs, ip, buf, size, off);
			r = n < 0 ? (int)n : 0;
			if (r == -EAGAIN)
				n = (ssize_t)size;
		}
	}
	iolock_unlock_rd(&ip->iolock);
	if (r == -EAGAIN) {
		iolock_wr(&ip->iolock);
		if (f->flags & O_APPEND)
			off = ip->d.size;
		r = cluster_write_check(fs, ip);
		n = r ? r : write_slow_any(fs, ip, buf, size, off);
		iolock_unlock_wr(&ip->iolock);
		r = n < 0 ? (int)n : 0;
	}
	if (!r && (f->flags & (O_SYNC | O_DSYNC)))
		r = fs_fsync(fs, f, (f->flags & O_SYNC) != O_SYNC);
	return r ? r : n;
}

/* ---------------- asynchronous fast path ---------------- */

struct aio_seg {
	struct bdev_aio a;
	struct aio_ctx *ctx;
};

struct aio_ctx {
	struct fs *fs;
	struct fs_inode *ip;
	fs_aio_done_fn done;
	void *arg;
	uint8_t *buf;
	size_t data_off;
	ssize_t result;
	uint64_t end;           /* writes: new end of data */
	bool write;
	bool lent;              /* BUF is the caller's (FS_IO_LEND) */
	_Atomic int pending;
	_Atomic int err;
	uint32_t nseg;
	struct aio_seg seg[];
};

/* TIMES_DONE: the caller updated a write's size and times already. */
static void aio_finish(struct aio_ctx *c, bool times_done)
{
	int err = atomic_load(&c->err);

	if (c->write && !err && !times_done)
		update_size_times(c->fs, c->ip, c->end);
	iolock_unlock_rd(&c->ip->iolock);
	c->done(c->arg, err ? err : c->result, c->buf + c->data_off);
	if (!c->lent)
		bdev_free(c->buf);
	free(c);
}

static void aio_put(struct aio_ctx *c)
{
	if (atomic_fetch_sub(&c->pending, 1) == 1)
		aio_finish(c, false);
}

static void aio_seg_err(struct aio_ctx *c, int res)
{
	int zero = 0;

	if (res < 0)
		atomic_compare_exchange_strong(&c->err, &zero, res);
}

static void aio_seg_done(struct bdev_aio *a, int res)
{
	struct aio_seg *sg = (struct aio_seg *)a;

	aio_seg_err(sg->ctx, res);
	aio_put(sg->ctx);
}

/* A write's completion on the backend's I/O thread (bdev_aio.cb_try):
 * only when meta_lock is free, since its holder may be waiting for I/O
 * that this thread serves. */
static int aio_seg_try(struct bdev_aio *a, int res)
{
	struct aio_seg *sg = (struct aio_seg *)a;
	struct aio_ctx *c = sg->ctx;
	bool last;

	if (pthread_mutex_trylock(&c->fs->meta_lock))
		return -EAGAIN;
	aio_seg_err(c, res);
	last = atomic_fetch_sub(&c->pending, 1) == 1;
	if (last && !atomic_load(&c->err))
		size_times_locked(c->fs, c->ip, c->end);
	pthread_mutex_unlock(&c->fs->meta_lock);
	if (last)
		aio_finish(c, true);
	return 0;
}

/* Submits the device runs of RS (iolock held shared; released by the last
 * completion).  A run that fails to submit counts as completed with its
 * error, so the context is always finished exactly once. */
static int aio_submit_runs(struct aio_ctx *c, const struct runs *rs, uint64_t base)
{
	uint32_t i, n = 0;

	for (i = 0; i < rs->n; i++)
		if (rs->v[i].dev)
			n++;
	c->nseg = n;
	atomic_store(&c->pending, (int)n + 1);  /* +1: held until all are submitted */
	for (i = 0, n = 0; i < rs->n; i++) {
		struct aio_seg *sg;
		int r;

		if (!rs->v[i].dev)
			continue;
		sg = &c->seg[n++];
		sg->ctx = c;
		sg->a.cb = aio_seg_done;
		sg->a.buf = c->buf + (rs->v[i].pos - base);
		sg->a.len = rs->v[i].len;
		sg->a.off = rs->v[i].dev;
		sg->a.write = c->write;
		/* a read's completion (aio_finish) unlocks iolock and replies:
		 * it never waits for the device; a write's takes meta_lock */
		sg->a.cb_inline = !c->write;
		sg->a.cb_try = c->write ? aio_seg_try : NULL;
		r = bdev_aio_submit(c->fs->bd, &sg->a);
		if (r)
			aio_seg_done(&sg->a, r);
	}
	aio_put(c);     /* the submitter's reference */
	return 0;
}

static struct aio_ctx *aio_ctx_new(struct fs *fs, struct fs_inode *ip, uint32_t nruns,
				   fs_aio_done_fn done, void *arg)
{
	struct aio_ctx *c = calloc(1, sizeof(*c) + nruns * sizeof(struct aio_seg));

	if (!c)
		return NULL;
	c->fs = fs;
	c->ip = ip;
	c->done = done;
	c->arg = arg;
	return c;
}

/* The I/O lock shared, or -EAGAIN where the caller may not wait for it. */
static int iolock_rd_nowait(struct iolock *l, bool nowait)
{
	if (!nowait) {
		iolock_rd(l);
		return 0;
	}
	return iolock_try_rd(l) ? 0 : -EAGAIN;
}

int fs_read_start(struct fs *fs, struct fs_file *f, void *buf, size_t cap, size_t size,
		  uint64_t off, fs_aio_done_fn done, void *arg, unsigned flags)
{
	struct fs_inode *ip = f->ip;
	uint64_t a0, a1, end;
	struct aio_ctx *c;
	struct runs rs;
	uint32_t i;
	int r;

	if (bdev_crash_enabled(fs->bd))
		return -EAGAIN;
	r = cached_read_check(fs, f);
	if (r)
		return r;
	r = iolock_rd_nowait(&ip->iolock, flags & FS_IO_NOWAIT);
	if (r)
		return r;
	if (ip->d.data_mode == VMFSD_DATA_INLINE || off >= ip->d.size || !size) {
		iolock_unlock_rd(&ip->iolock);
		return -EAGAIN;
	}
	end = off + size < ip->d.size ? off + size : ip->d.size;
	a0 = round_down(off, SECTOR);
	a1 = round_up(end, SECTOR);
	r = collect_runs(fs, ip, a0, a1, &rs);
	if (r) {
		iolock_unlock_rd(&ip->iolock);
		return r;
	}
	c = aio_ctx_new(fs, ip, rs.n, done, arg);
	if (c && (flags & FS_IO_LEND) && buf && !((uintptr_t)buf & (SECTOR - 1)) && a0 == off &&
	    a1 - a0 <= cap) {
		c->buf = buf;   /* the caller's, in place */
		c->lent = true;
	} else if (c) {
		c->buf = bdev_alloc(a1 - a0);
	}
	if (!c || !c->buf) {
		runs_free(&rs);
		iolock_unlock_rd(&ip->iolock);
		if (c)
			free(c);
		return -ENOMEM;
	}
	c->data_off = off - a0;
	c->result = (ssize_t)(end - off);
	for (i = 0; i < rs.n; i++)
		if (!rs.v[i].dev)
			memset(c->buf + (rs.v[i].pos - a0), 0, rs.v[i].len);
	r = aio_submit_runs(c, &rs, a0);
	runs_free(&rs);
	return r;
}

/* A write into an inline file that stays inline (a .vmx, a descriptor, a
 * new small file) is a copy into the inode: done here, DONE called before
 * returning, so the issuer thread needs no worker for it.  -EAGAIN when
 * the exclusive iolock is not free at once (NOWAIT) or the file is no
 * longer inline under it: the slow path then. */
static int write_inline_now(struct fs *fs, struct fs_inode *ip, const void *buf, size_t size,
			    uint64_t off, fs_aio_done_fn done, void *arg, unsigned flags)
{
	int r;

	if (flags & FS_IO_NOWAIT) {
		if (!iolock_try_wr(&ip->iolock))
			return -EAGAIN;
	} else {
		iolock_wr(&ip->iolock);
	}
	r = cluster_write_check(fs, ip);
	if (!r && ip->d.data_mode != VMFSD_DATA_INLINE)
		r = -EAGAIN;
	if (!r) {
		pthread_mutex_lock(&fs->meta_lock);
		memcpy(ip->d.map + off, buf, size);
		size_times_locked(fs, ip, off + size);
		pthread_mutex_unlock(&fs->meta_lock);
	}
	iolock_unlock_wr(&ip->iolock);
	if (!r)
		done(arg, (ssize_t)size, NULL);
	return r;
}

int fs_write_start(struct fs *fs, struct fs_file *f, const void *buf, size_t size,
		   uint64_t off, fs_aio_done_fn done, void *arg, unsigned flags)
{
	struct fs_inode *ip = f->ip;
	struct aio_ctx *c;
	struct runs rs;
	uint32_t i;
	int r;

	if (fs->readonly)
		return -EROFS;
	if (bdev_crash_enabled(fs->bd) || (f->flags & (O_APPEND | O_SYNC | O_DSYNC)) || !size)
		return -EAGAIN;
	if ((flags & FS_IO_LEND) && ((uintptr_t)buf & (SECTOR - 1)))
		return -EINVAL;
	if (ip->d.data_mode == VMFSD_DATA_INLINE && mode_for(fs, off + size) == VMFSD_DATA_INLINE)
		return write_inline_now(fs, ip, buf, size, off, done, arg, flags);
	r = iolock_rd_nowait(&ip->iolock, flags & FS_IO_NOWAIT);
	if (r)
		return r;
	r = cluster_write_check(fs, ip);
	if (r) {
		iolock_unlock_rd(&ip->iolock);
		return r;
	}
	if (!fast_write_ok(fs, ip, off, size)) {
		iolock_unlock_rd(&ip->iolock);
		return -EAGAIN;
	}
	r = collect_runs(fs, ip, off, off + size, &rs);
	if (r) {
		iolock_unlock_rd(&ip->iolock);
		return r;
	}
	for (i = 0; i < rs.n; i++)
		if (!rs.v[i].dev)
			r = -EAGAIN;    /* a hole or unwritten unit: allocation path */
	c = r ? NULL : aio_ctx_new(fs, ip, rs.n, done, arg);
	if (c && (flags & FS_IO_LEND)) {
		c->buf = (uint8_t *)buf;
		c->lent = true;
	} else if (c) {
		c->buf = bdev_alloc(size);
	}
	if (r || !c || !c->buf) {
		runs_free(&rs);
		iolock_unlock_rd(&ip->iolock);
		if (c && !c->lent)
			bdev_free(c->buf);
		free(c);
		return r ? r : -ENOMEM;
	}
	/* O_DIRECT wants aligned memory, and libfuse reuses its buffer. */
	if (!c->lent)
		memcpy(c->buf, buf, size);
	c->write = true;
	c->result = (ssize_t)size;
	c->end = off + size;
	r = aio_submit_runs(c, &rs, off);
	runs_free(&rs);
	return r;
}

/* ---------------- truncate / punch / zero ---------------- */

/* Zeroes [from, to) inside one unit (sector RMW at the edges). */
static int zero_in_unit(struct fs *fs, struct fs_inode *ip, uint64_t from, uint64_t to)
{
	uint32_t unit = inode_unit_size(fs, ip);
	uint8_t *z;
	uint32_t e;
	int r;

	if (from >= to)
		return 0;
	if (ip->d.data_mode == VMFSD_DATA_INLINE) {
		if (from < VMFSD_INLINE_MAX)
			memset(ip->d.map + from, 0,
			       (to < VMFSD_INLINE_MAX ? to : VMFSD_INLINE_MAX) - from);
		return 0;
	}
	r = bmap_get(fs, ip, from / unit, &e);
	if (r || !entry_written(e))
		return r;
	z = calloc(1, to - from);
	if (!z)
		return -ENOMEM;
	r = write_span(fs, unit_dev_off(fs, ip, e) + from % unit, z, to - from);
	free(z);
	return r;
}

/* Units per transaction when freeing: 64 leaf nodes' worth touches at most
 * ~70 metadata blocks, well inside the smallest journal (252 blocks). */
#define FREE_CHUNK ((uint64_t)VMFSD_MAP_NODE_SLOTS * 64)

/* Frees [FROM, TO) of IP's map in one transaction of its own. */
static int free_range_commit(struct fs *fs, struct fs_inode *ip, uint64_t from, uint64_t to)
{
	struct tx tx;
	int r;

	tx_begin(fs, &tx);
	r = bmap_free_range(fs, ip, from, to, &tx);
	if (r) {
		tx_abort(&tx);
		return r;
	}
	return tx_commit(&tx);
}

int file_free_range_locked(struct fs *fs, struct fs_inode *ip, uint64_t from, uint64_t to)
{
	uint64_t cap = bmap_capacity(ip->d.map_height), to0;
	int r;

	if (ip->d.data_mode == VMFSD_DATA_INLINE)
		return 0;
	if (to > cap)
		to = cap;
	to0 = to;
	/* From the end backwards: every intermediate state is a file whose
	 * tail is gone, never one with holes punched at random.  Unmapped
	 * stretches are skipped, so a sparse 64 TiB file costs nothing. */
	while (to > from) {
		uint64_t last, lo;

		r = bmap_prev_mapped(fs, ip, to, &last);
		if (r == -ENXIO || (!r && last < from))
			break;
		if (r)
			return r;
		to = last + 1;
		lo = to - from > FREE_CHUNK ? to - FREE_CHUNK : from;
		r = free_range_commit(fs, ip, lo, to);
		if (r)
			return r;
		to = lo;
	}
	if (ip->d.map_height) {
		/* Nothing is mapped in [from, to0) any more, but map nodes with
		 * no entry may remain there (the loop above only visits nodes
		 * around mapped units): free them, and drop the empty tree's
		 * height too.  Cheap: only nodes that exist are visited. */
		return free_range_commit(fs, ip, from, to0);
	}
	return 0;
}

/* Frees the whole units of [from, to) and zeroes the partial ones
 * (iolock exclusive held; commits). */
static int punch(struct fs *fs, struct fs_inode *ip, uint64_t from, uint64_t to)
{
	uint32_t unit = inode_unit_size(fs, ip);
	uint64_t u0 = round_up(from, unit), u1 = to / unit * unit;
	int r;

	if (ip->d.data_mode == VMFSD_DATA_INLINE)
		return zero_in_unit(fs, ip, from, to);
	if (u0 >= u1) {
		/* Inside one unit, or straddling one boundary. */
		uint64_t mid = u0 < to ? u0 : to;

		r = zero_in_unit(fs, ip, from, mid);
		if (!r && mid < to)
			r = zero_in_unit(fs, ip, mid, to);
		return r;
	}
	r = zero_in_unit(fs, ip, from, u0);
	if (!r)
		r = zero_in_unit(fs, ip, u1, to);
	if (r)
		return r;
	pthread_mutex_lock(&fs->meta_lock);
	r = file_free_range_locked(fs, ip, u0 / unit, u1 / unit);
	pthread_mutex_unlock(&fs->meta_lock);
	return r;
}

int file_truncate(struct fs *fs, struct fs_inode *ip, uint64_t size)
{
	int r = 0;

	if (size > FS_MAX_FILE_SIZE)
		return -EFBIG;
	iolock_wr(&ip->iolock);
	if (size > ip->d.size) {
		r = ensure_mode(fs, ip, size);
	} else if (size < ip->d.size) {
		if (size == 0 && ip->d.data_mode != VMFSD_DATA_INLINE) {
			/* Back to inline: an emptied file costs nothing again. */
			pthread_mutex_lock(&fs->meta_lock);
			r = file_free_range_locked(fs, ip, 0, UINT64_MAX);
			if (!r) {
				memset(ip->d.map, 0, VMFSD_MAP_AREA);
				ip->d.map_height = 0;
				ip->d.data_mode = VMFSD_DATA_INLINE;
			}
			pthread_mutex_unlock(&fs->meta_lock);
		} else if (ip->d.data_mode == VMFSD_DATA_INLINE) {
			r = zero_in_unit(fs, ip, size, VMFSD_INLINE_MAX);
		} else {
			/* Zero the tail of the last unit, free every unit after it
			 * (preallocated ones past EOF included). */
			uint32_t unit = inode_unit_size(fs, ip);

			r = zero_in_unit(fs, ip, size, round_up(size, unit));
			if (!r) {
				pthread_mutex_lock(&fs->meta_lock);
				r = file_free_range_locked(fs, ip, round_up(size, unit) / unit,
							   UINT64_MAX);
				pthread_mutex_unlock(&fs->meta_lock);
			}
		}
	}
	if (!r) {
		pthread_mutex_lock(&fs->meta_lock);
		ip->d.size = size;
		inode_touch(fs, ip, true, true);
		r = inode_commit(fs, ip);
		pthread_mutex_unlock(&fs->meta_lock);
	}
	iolock_unlock_wr(&ip->iolock);
	return r;
}

/* Preallocates unwritten units over [off, end) (iolock exclusive held).
 * Commits every ~4 MiB of map so a huge preallocation never builds one
 * enormous transaction. */
static int prealloc(struct fs *fs, struct fs_inode *ip, uint64_t off, uint64_t end)
{
	uint32_t unit = inode_unit_size(fs, ip);
	uint64_t lblk, last = (end + unit - 1) / unit, *mine = NULL;
	size_t nmine = 0, cap = 0, i;
	uint32_t batch = 0;
	struct tx tx;
	int r = 0;

	tx_begin(fs, &tx);
	pthread_mutex_lock(&fs->meta_lock);
	for (lblk = off / unit; lblk < last && !r; lblk++) {
		uint32_t e;
		uint64_t p;

		r = bmap_get(fs, ip, lblk, &e);
		if (r || e)
			continue;
		if (nmine == cap) {
			uint64_t *n = realloc(mine, (cap = cap ? cap * 2 : 1024) * sizeof(*n));

			if (!n) {
				r = -ENOMEM;
				break;
			}
			mine = n;
		}
		r = alloc_data(fs, bmap_pool(fs, ip), alloc_goal(fs, ip, lblk), &tx, &p);
		if (r)
			break;
		r = bmap_set(fs, ip, lblk, (uint32_t)p | VMFSD_MAP_UNWRITTEN, &tx);
		if (r) {
			alloc_free(fs, bmap_pool(fs, ip), p, &tx);
			break;
		}
		mine[nmine++] = lblk;
		ip->d.alloc_units += unit / 512;
		if (++batch == 1024) {
			tx_add_inode(&tx, ip);
			r = tx_commit(&tx);
			tx_begin(fs, &tx);
			batch = 0;
		}
	}
	tx_add_inode(&tx, ip);
	if (!r) {
		r = tx_commit(&tx);
	} else {
		int r2 = tx_commit(&tx);

		/* All or nothing, like a failed write: give back what this call
		 * took (ENOSPC must not leave the space gone and unexplained). */
		tx_begin(fs, &tx);
		for (i = nmine; i-- > 0 && !r2;) {
			uint32_t e;

			r2 = bmap_get(fs, ip, mine[i], &e);
			if (r2 || !(e & VMFSD_MAP_UNWRITTEN))
				continue;       /* written meanwhile: keep it */
			/* Frees the unit and the map nodes it leaves empty (a
			 * cleared entry alone would strand those nodes). */
			r2 = bmap_free_range(fs, ip, mine[i], mine[i] + 1, &tx);
			if (r2)
				break;
			if (i % 512 == 0) {
				tx_add_inode(&tx, ip);
				r2 = tx_commit(&tx);
				tx_begin(fs, &tx);
			}
		}
		prune_if_empty(fs, ip, &tx);
		tx_add_inode(&tx, ip);
		(void)tx_commit(&tx);
	}
	pthread_mutex_unlock(&fs->meta_lock);
	free(mine);
	return r;
}

/* Zero range: whole written units become unwritten (no I/O), partial
 * ones are zeroed, holes stay holes. */
static int zero_range(struct fs *fs, struct fs_inode *ip, uint64_t off, uint64_t end)
{
	uint32_t unit = inode_unit_size(fs, ip);
	uint64_t u0 = round_up(off, unit), u1 = end / unit * unit, lblk;
	struct tx tx;
	int r;

	if (ip->d.data_mode == VMFSD_DATA_INLINE || u0 >= u1)
		return punch(fs, ip, off, end);
	r = zero_in_unit(fs, ip, off, u0);
	if (!r)
		r = zero_in_unit(fs, ip, u1, end);
	if (r)
		return r;
	tx_begin(fs, &tx);
	pthread_mutex_lock(&fs->meta_lock);
	for (lblk = u0 / unit; lblk < u1 / unit && !r; lblk++) {
		uint32_t e;

		r = bmap_get(fs, ip, lblk, &e);
		if (!r && entry_written(e))
			r = bmap_set(fs, ip, lblk, e | VMFSD_MAP_UNWRITTEN, &tx);
	}
	if (r)
		tx_abort(&tx);
	else
		r = tx_commit(&tx);
	pthread_mutex_unlock(&fs->meta_lock);
	return r;
}

int fs_fallocate(struct fs *fs, struct fs_file *f, int mode, uint64_t off, uint64_t len)
{
	struct fs_inode *ip = f->ip;
	uint64_t end = off + len;
	int r = 0;

	if (fs->readonly)
		return -EROFS;
	if (!len || end < off)
		return -EINVAL;
	if (!S_ISREG(ip->d.mode))
		return -ENODEV;
	if (end > FS_MAX_FILE_SIZE)
		return -EFBIG;
	if (mode & ~(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE))
		return -EOPNOTSUPP;
	if ((mode & FALLOC_FL_PUNCH_HOLE) &&
	    ((mode & FALLOC_FL_ZERO_RANGE) || !(mode & FALLOC_FL_KEEP_SIZE)))
		return -EOPNOTSUPP;

	iolock_wr(&ip->iolock);
	r = cluster_write_check(fs, ip);
	if (r) {
		iolock_unlock_wr(&ip->iolock);
		return r;
	}
	if (mode & FALLOC_FL_PUNCH_HOLE) {
		uint64_t e = end < ip->d.size ? end : ip->d.size;

		if (off < e)
			r = punch(fs, ip, off, e);
	} else if (mode & FALLOC_FL_ZERO_RANGE) {
		/* Past EOF everything already reads as zero. */
		uint64_t e = end < ip->d.size ? end : ip->d.size;

		if (!(mode & FALLOC_FL_KEEP_SIZE))
			r = ensure_mode(fs, ip, end);
		if (!r && off < e)
			r = zero_range(fs, ip, off, e);
	} else {
		r = ensure_mode(fs, ip, end);
		if (!r && ip->d.data_mode != VMFSD_DATA_INLINE)
			r = prealloc(fs, ip, off, end);
		if (r == -ENOSPC && ip->d.data_mode == VMFSD_DATA_SUB) {
			/* Sub-blocks ran out (prealloc gave back what it took). */
			r = convert_mode(fs, ip, VMFSD_DATA_BLOCK);
			if (!r)
				r = prealloc(fs, ip, off, end);
		}
	}
	if (!r) {
		pthread_mutex_lock(&fs->meta_lock);
		if (!(mode & (FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE)) && end > ip->d.size)
			ip->d.size = end;
		inode_touch(fs, ip, false, true);
		r = inode_commit(fs, ip);
		pthread_mutex_unlock(&fs->meta_lock);
	}
	iolock_unlock_wr(&ip->iolock);
	return r;
}

/* ---------------- SEEK_DATA / SEEK_HOLE ---------------- */

int64_t fs_lseek(struct fs *fs, struct fs_file *f, int64_t soff, int whence)
{
	struct fs_inode *ip = f->ip;
	uint64_t off = (uint64_t)soff, size, lblk;
	uint32_t unit;
	int64_t res = -ENXIO;
	int r;

	if (soff < 0)
		return -ENXIO;
	if (whence != SEEK_DATA && whence != SEEK_HOLE)
		return -EINVAL;
	iolock_rd(&ip->iolock);
	size = ip->d.size;
	if (off >= size)
		goto out;
	if (ip->d.data_mode == VMFSD_DATA_INLINE) {
		res = whence == SEEK_DATA ? (int64_t)off : (int64_t)size;
		goto out;
	}
	unit = inode_unit_size(fs, ip);
	lblk = off / unit;
	if (whence == SEEK_DATA) {
		for (;;) {
			uint64_t next;
			uint32_t e;

			r = bmap_next_mapped(fs, ip, lblk, &next);
			if (r) {
				res = r == -ENXIO ? -ENXIO : r;
				break;
			}
			if (next * unit >= size)
				break;
			r = bmap_get(fs, ip, next, &e);
			if (r) {
				res = r;
				break;
			}
			if (entry_written(e)) {
				res = (int64_t)(next * unit > off ? next * unit : off);
				break;
			}
			lblk = next + 1;
		}
	} else {
		res = (int64_t)size;
		for (; lblk * unit < size; lblk++) {
			uint32_t e;

			r = bmap_get(fs, ip, lblk, &e);
			if (r) {
				res = r;
				break;
			}
			if (!entry_written(e)) {
				res = (int64_t)(lblk * unit > off ? lblk * unit : off);
				break;
			}
		}
	}
out:
	iolock_unlock_rd(&ip->iolock);
	return res;
}

/* ---------------- open / release / fsync ---------------- */

int fs_open(struct fs *fs, uint64_t ino, int flags, struct fs_file **out)
{
	struct fs_inode *ip;
	struct fs_file *f;
	int r;

	if (fs->readonly && (flags & O_ACCMODE) != O_RDONLY)
		return -EROFS;
	r = inode_get(fs, ino, &ip);
	if (r)
		return r;
	if (S_ISDIR(ip->d.mode) && (flags & O_ACCMODE) != O_RDONLY) {
		inode_put(fs, ip);
		return -EISDIR;
	}
	f = calloc(1, sizeof(*f));
	if (!f) {
		inode_put(fs, ip);
		return -ENOMEM;
	}
	/* Cluster: EXCL for writers, RO for readers (MW if the file asks);
	 * -EBUSY when another live host holds it. */
	r = handover_open_standby(fs, ip, flags);
	f->standby = r == 1;
	if (!f->standby)
		r = cluster_open(fs, ip, flags);
	if (r < 0) {
		free(f);
		inode_put(fs, ip);
		return r;
	}
	f->ip = ip;
	f->flags = flags;
	/* Page cache only where one host's lock covers every reader and
	 * writer (docs/cluster.md, "Page cache"): not for O_DIRECT openers
	 * (QEMU's cache=none), multi-writer files, standby opens, which read
	 * while another host still writes, or read-only mounts, which take
	 * no locks at all. */
	f->cached = fs->hb && S_ISREG(ip->d.mode) && !(flags & O_DIRECT) && !f->standby &&
		    !(ip->d.iflags & VMFSD_IFLAG_MW);
	/* The pages (and attributes) an earlier open left stay valid while
	 * this host's lock kept every other writer out since (the same lock
	 * generation).  A direct-I/O open that may write, from its open to
	 * its close, writes around them (and not every kernel drops the
	 * pages a direct write overlaps); so does any host under MW. */
	pthread_mutex_lock(&fs->lk_lock);
	if (f->cached) {
		f->keep = ip->pc_ok && ip->pc_gen == ip->lk_gen && !ip->ndirect_w &&
			  !(flags & O_TRUNC);
		ip->pc_gen = ip->lk_gen;
		ip->pc_ok = true;
	} else if ((flags & O_ACCMODE) != O_RDONLY || (ip->d.iflags & VMFSD_IFLAG_MW)) {
		f->direct_w = (flags & O_ACCMODE) != O_RDONLY;
		ip->ndirect_w += f->direct_w;
		ip->pc_ok = false;
	}
	pthread_mutex_unlock(&fs->lk_lock);
	pthread_mutex_lock(&fs->icache_lock);
	ip->nopen++;
	ip->pins--;     /* the open count holds it now */
	pthread_mutex_unlock(&fs->icache_lock);
	if ((flags & O_TRUNC) && S_ISREG(ip->d.mode) && (flags & O_ACCMODE) != O_RDONLY) {
		r = file_truncate(fs, ip, 0);
		if (r) {
			fs_release(fs, f);
			return r;
		}
	}
	*out = f;
	return 0;
}

bool fs_file_cached(const struct fs_file *f)
{
	return f->cached;
}

bool fs_file_keep_cache(const struct fs_file *f)
{
	return f->keep;
}

int fs_file_kill_suid(struct fs *fs, struct fs_file *f)
{
	/* Unlocked peek: the common case (no such bit) costs no lock; a mode
	 * changed concurrently by chmod is as good as the one before it. */
	uint32_t m = __atomic_load_n(&f->ip->d.mode, __ATOMIC_RELAXED), kill = S_ISUID;
	struct fs_setattr sa = { 0 };
	struct fs_attr a;

	if ((m & (S_ISGID | S_IXGRP)) == (S_ISGID | S_IXGRP))
		kill |= S_ISGID;
	if (!S_ISREG(m) || !(m & kill))
		return 0;
	sa.mode = m & ~kill;
	return fs_setattr(fs, f->ip->ino, &sa, FS_SET_MODE, &a);
}

/* NOWAIT: see fs_release_nowait. */
static int release(struct fs *fs, struct fs_file *f, bool nowait)
{
	struct fs_inode *ip = f->ip;
	int r = 0;

	/* A standby's close may hand the lock over (fs/handover.c). */
	if (nowait && f->standby)
		return -EAGAIN;
	if (ip->dirty && !fs->readonly) {
		pthread_mutex_lock(&fs->meta_lock);
		if (nowait && !commit_room(fs)) {
			pthread_mutex_unlock(&fs->meta_lock);
			return -EAGAIN;
		}
		r = inode_writeback(fs, ip);
		pthread_mutex_unlock(&fs->meta_lock);
	}
	if (f->direct_w) {
		pthread_mutex_lock(&fs->lk_lock);
		ip->ndirect_w--;
		ip->pc_ok = false;      /* (fs_open: it may have written until now) */
		pthread_mutex_unlock(&fs->lk_lock);
	}
	if (f->standby)
		handover_close_standby(fs, ip);
	else
		cluster_close(fs, ip);
	pthread_mutex_lock(&fs->icache_lock);
	ip->nopen--;
	ip->pins++;
	pthread_mutex_unlock(&fs->icache_lock);
	inode_put(fs, ip);
	free(f);
	return r;
}

int fs_release(struct fs *fs, struct fs_file *f)
{
	return release(fs, f, false);
}

int fs_release_nowait(struct fs *fs, struct fs_file *f)
{
	return release(fs, f, true);
}

int fs_fsync(struct fs *fs, struct fs_file *f, int datasync)
{
	struct fs_inode *ip = f->ip;
	int r = 0;

	(void)datasync;
	if (fs->readonly)
		return 0;
	pthread_mutex_lock(&fs->meta_lock);
	if (ip->dirty)
		r = inode_writeback(fs, ip);
	/* A journal commit starts and ends with a flush: it makes this file's
	 * data durable too.  With no metadata pending, a flush is enough,
	 * once a commit that may hold this file's metadata is written.
	 * Neither holds meta_lock while the device flushes: the I/O path of
	 * every other file would wait for it. */
	if (!r && fs->nrun) {
		r = commit_unlocked(fs);
		pthread_mutex_unlock(&fs->meta_lock);
		return r;
	}
	if (!r) {
		commit_wait_io(fs);
		r = fs->jerr;
	}
	pthread_mutex_unlock(&fs->meta_lock);
	return r ? r : bdev_flush(fs->bd);
}
