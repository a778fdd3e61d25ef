// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Orphans: inodes whose last name is gone but whose blocks are not freed
 * yet.  With FUSE that is every unlinked file until the kernel forgets it,
 * and a big file is freed over several transactions.  The host keeps them
 * in the orphan list of its journal header block, changed in the same
 * transaction as the unlink (add) and the final free (remove), and frees
 * whatever is listed at its next mount: a crash leaves no leaked inode.
 */
#include <errno.h>
#include <stdlib.h>

#include "fs_internal.h"

static uint64_t area_off(struct fs *fs)
{
	return journal_area_off(&fs->sb, fs->slot);
}

static void orphan_log(struct fs *fs, struct tx *tx)
{
	uint64_t off = area_off(fs);
	uint8_t *blk = bdev_alloc(VMFSD_META_BLOCK);

	if (!blk) {
		tx->err = -ENOMEM;
		return;
	}
	memset(blk, 0, VMFSD_SECTOR);   /* the header sector is not written */
	vmfsd_orphans_encode(fs->orphans, fs->norphans, off / VMFSD_META_BLOCK, blk);
	tx_add(tx, off | VMFSD_JENTRY_KEEP_LOCK, blk);
	bdev_free(blk);
}

void orphan_add(struct fs *fs, uint64_t ino, struct tx *tx)
{
	uint32_t i;

	if (fs->readonly)
		return;
	for (i = 0; i < fs->norphans; i++)
		if (fs->orphans[i] == ino)
			return;
	if (fs->norphans == VMFSD_ORPHAN_MAX)
		return;         /* list full: a crash now leaks it, fsck frees it */
	fs->orphans[fs->norphans++] = ino;
	orphan_log(fs, tx);
}

void orphan_del(struct fs *fs, uint64_t ino, struct tx *tx)
{
	uint32_t i;

	for (i = 0; i < fs->norphans; i++) {
		if (fs->orphans[i] != ino)
			continue;
		fs->orphans[i] = fs->orphans[--fs->norphans];
		orphan_log(fs, tx);
		return;
	}
}

/* Is INO on this host's orphan list (meta_lock held)? */
bool orphan_listed(struct fs *fs, uint64_t ino)
{
	uint32_t i;

	for (i = 0; i < fs->norphans; i++)
		if (fs->orphans[i] == ino)
			return true;
	return false;
}

int orphan_load(struct fs *fs)
{
	uint64_t off = area_off(fs);
	uint8_t *blk = bdev_alloc(VMFSD_META_BLOCK);
	int r;

	if (!blk)
		return -ENOMEM;
	r = meta_read(fs, off, blk);
	if (!r)
		r = vmfsd_orphans_decode(blk, off / VMFSD_META_BLOCK, fs->orphans, &fs->norphans);
	bdev_free(blk);
	if (r == -EUCLEAN || r == -EBADMSG) {
		fs->norphans = 0;       /* unreadable list: fsck finds what leaks */
		r = 0;
	}
	return r;
}

/* Frees every listed inode that still has no name (mount, meta_lock not
 * held: the last inode_put frees it and drops it from the list). */
void orphan_cleanup(struct fs *fs)
{
	uint64_t todo[VMFSD_ORPHAN_MAX];
	uint32_t n, i;

	pthread_mutex_lock(&fs->meta_lock);
	n = fs->norphans;
	memcpy(todo, fs->orphans, n * sizeof(todo[0]));
	pthread_mutex_unlock(&fs->meta_lock);
	for (i = 0; i < n; i++) {
		struct fs_inode *ip;
		struct tx tx;

		if (inode_get(fs, todo[i], &ip) == 0) {
			if (ip->d.nlink == 0) {
				inode_put(fs, ip);      /* frees it and unlists it */
				continue;
			}
			inode_put(fs, ip);
		}
		/* Gone already, or linked again: just unlist it. */
		tx_begin(fs, &tx);
		pthread_mutex_lock(&fs->meta_lock);
		orphan_del(fs, todo[i], &tx);
		(void)tx_commit(&tx);
		pthread_mutex_unlock(&fs->meta_lock);
	}
}
