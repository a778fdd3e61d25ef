// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Handing a file's exclusive lock from one host to another (live migration
 * of a VM, docs/cluster.md §4.7): the source host stops, drains and
 * flushes its own writes to the file, checkpoints its journal, and then
 * rewrites the lock record in one ATS so that it names the destination
 * host instead of itself.  The source's descriptors stay open but lose the
 * right to write (every write through them fails with EIO); the
 * destination's next read-write open finds the lock already its own.
 *
 * The destination must ask for it first ("accept"): while it waits, its
 * read-only opens of the file take no lock (a "standby" open; the source's
 * exclusive lock would refuse them), so a migration's incoming QEMU can
 * open the disk read-only while the source still runs.  A standby open
 * never writes.  If the destination never opens the file read-write (its
 * QEMU died before the switch), the last standby close gives back a lock
 * that was handed to it and that nothing here uses.
 *
 * The interface is the virtual attribute user.vmfsd.handover (fs/xattr.c):
 *   read                 "<slot> <generation> <host>": this mount's
 *                        heartbeat incarnation, what a source names
 *   write "accept"       this host expects the lock (standby opens allowed)
 *   write "cancel"       it does not any more
 *   write "give S G"     hand our exclusive lock to slot S, generation G
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "fs_internal.h"

/* The write gate: a regular file on a cluster mount is written only while
 * this host holds its lock EXCL or MW, and not while a handover of it is
 * under way.  Called with IP's iolock held (read or write), so a handover,
 * which takes the iolock for writing after setting lk_giving, waits for
 * every write that passed this check. */
int cluster_write_check(struct fs *fs, struct fs_inode *ip)
{
	int r = 0;

	if (!fs->hb || !S_ISREG(ip->d.mode))
		return 0;
	pthread_mutex_lock(&fs->lk_lock);
	if (ip->lk_giving || (ip->lk_mode != VMFSD_LOCK_EXCL && ip->lk_mode != VMFSD_LOCK_MW))
		r = -EIO;
	pthread_mutex_unlock(&fs->lk_lock);
	return r;
}

/* cluster_open's question: is this a standby open (1: no lock taken), or
 * an ordinary one (0)?  Read-only opens of a file this host accepts a
 * handover for, while it holds no lock on it. */
int handover_open_standby(struct fs *fs, struct fs_inode *ip, int flags)
{
	bool standby;

	if (!fs->hb || (flags & O_ACCMODE) != O_RDONLY)
		return 0;
	pthread_mutex_lock(&fs->lk_lock);
	standby = ip->lk_accept && ip->lk_mode == VMFSD_LOCK_FREE;
	if (standby)
		ip->nopen_standby++;
	pthread_mutex_unlock(&fs->lk_lock);
	if (!standby)
		return 0;
	/* No lock: read the inode fresh, as for any file we do not hold. */
	pthread_mutex_lock(&fs->meta_lock);
	(void)cluster_refresh_inode(fs, ip);
	pthread_mutex_unlock(&fs->meta_lock);
	return 1;
}

/* Gives back a lock that was handed to us but never used: nothing here
 * holds it in memory (lk_mode FREE), yet the record may name us.  We
 * never wrote under it, so no journal transaction of ours can roll back
 * what the next holder writes (the release rule of docs/cluster.md §5). */
static void drop_unused_handover(struct fs *fs, struct fs_inode *ip)
{
	uint64_t off = vmfsd_inode_off(&fs->sb, ip->ino);
	struct lock_info li;
	bool unused;

	pthread_mutex_lock(&ip->lk_io);
	pthread_mutex_lock(&fs->lk_lock);
	unused = ip->lk_mode == VMFSD_LOCK_FREE && !ip->nopen_lk && !ip->nopen_standby;
	pthread_mutex_unlock(&fs->lk_lock);
	if (unused && lock_inspect(fs->hb, fs->bd, off, &li) == 0 && li.mode != VMFSD_LOCK_FREE &&
	    (li.holders[fs->slot / 8] & (1u << (fs->slot % 8))))
		(void)lock_release(fs->hb, fs->bd, off, NULL);
	pthread_mutex_unlock(&ip->lk_io);
}

void handover_close_standby(struct fs *fs, struct fs_inode *ip)
{
	bool last;

	pthread_mutex_lock(&fs->lk_lock);
	last = --ip->nopen_standby == 0;
	if (last)
		ip->lk_accept = false;  /* one migration's worth */
	pthread_mutex_unlock(&fs->lk_lock);
	if (last)
		drop_unused_handover(fs, ip);
}

/* The source's side: stop writes, drain them, make everything this host
 * wrote to the file durable and out of reach of a replay of its journal,
 * then move the lock record to (TO, GEN) in one ATS. */
static int handover_give(struct fs *fs, struct fs_inode *ip, uint32_t to, uint64_t gen)
{
	uint64_t off = vmfsd_inode_off(&fs->sb, ip->ino);
	struct lock_info li;
	int r = 0;

	/* lk_io serialises on-disk transitions of this inode's lock; it is
	 * not held across the commit below, whose release step takes it. */
	pthread_mutex_lock(&ip->lk_io);
	pthread_mutex_lock(&fs->lk_lock);
	if (ip->lk_mode != VMFSD_LOCK_EXCL || !ip->nopen_lk)
		/* nobody here has it open for writing: nothing to give
		 * (a namespace operation's lock is not the file's) */
		r = ip->lk_mode == VMFSD_LOCK_EXCL || ip->lk_mode == VMFSD_LOCK_FREE ? -ENOLCK
										   : -EINVAL;
	else if (ip->lk_giving)
		r = -EBUSY;
	else
		ip->lk_giving = true;   /* from now on every write fails */
	pthread_mutex_unlock(&fs->lk_lock);
	pthread_mutex_unlock(&ip->lk_io);
	if (r)
		return r;
	/* The kernel may cache this file's attributes only while we hold its
	 * lock (docs/cluster.md §5.4). */
	cluster_cache_drop(fs);
	/* Writes that passed the gate before lk_giving hold the iolock for
	 * reading until they are done: wait for them. */
	iolock_wr(&ip->iolock);
	iolock_unlock_wr(&ip->iolock);
	pthread_mutex_lock(&fs->meta_lock);
	if (ip->dirty)
		r = inode_writeback(fs, ip);
	/* The commit writes every pending metadata block in place between
	 * two flushes (data written by the file's writes included), without
	 * meta_lock while the device writes and flushes (commit_unlocked: the
	 * host's other files go on meanwhile); then what operations merged
	 * meanwhile, under it.  The journal must be clean after it, so that
	 * no later replay can write an old image of this file over the new
	 * holder's: a commit that gives locks back leaves it so, otherwise
	 * the checkpoint below does. */
	if (!r)
		r = commit_unlocked(fs);
	if (!r && fs->nrun)
		r = commit_locked(fs);
	if (!r && fs->jdirty) {
		r = journal_checkpoint(fs->jn);
		if (!r)
			fs->jdirty = false;
	}
	pthread_mutex_unlock(&fs->meta_lock);
	/* The file's data written before lk_giving: durable before the give
	 * (a flush needs no lock of ours). */
	if (!r)
		r = bdev_flush(fs->bd);
	pthread_mutex_lock(&ip->lk_io);
	pthread_mutex_lock(&fs->lk_lock);
	if (!r && ip->lk_mode != VMFSD_LOCK_EXCL)
		r = -ENOLCK;    /* the last opener closed meanwhile and it went back */
	pthread_mutex_unlock(&fs->lk_lock);
	if (!r)
		r = lock_handover(fs->hb, fs->bd, off, to, gen, &li);
	pthread_mutex_lock(&fs->lk_lock);
	if (!r) {
		ip->lk_mode = VMFSD_LOCK_FREE;  /* our descriptors stay, unable to write */
		ip->lk_fresh = false;
		ip->lk_transient = false;
	}
	ip->lk_giving = false;
	pthread_mutex_unlock(&fs->lk_lock);
	pthread_mutex_unlock(&ip->lk_io);
	return r;
}

int handover_xattr_get(struct fs *fs, char *buf, size_t len)
{
	int n;

	if (!fs->hb)
		return -EOPNOTSUPP;     /* a read-only mount holds no locks */
	n = snprintf(buf, len, "%" PRIu32 " %" PRIu64 " %s", hb_my_slot(fs->hb),
		     hb_my_generation(fs->hb), fs->host);
	return n < 0 || (size_t)n >= len ? -ERANGE : 0;
}

int handover_xattr_set(struct fs *fs, uint64_t ino, const void *value, size_t size)
{
	char v[96], extra;
	struct fs_inode *ip;
	uint32_t to;
	uint64_t gen;
	int r = 0;

	if (!fs->hb)
		return -EOPNOTSUPP;
	if (!size || size >= sizeof(v))
		return -EINVAL;
	memcpy(v, value, size);
	v[size] = 0;
	if (v[size - 1] == '\n')
		v[size - 1] = 0;
	r = inode_get(fs, ino, &ip);
	if (r)
		return r;
	if (!S_ISREG(ip->d.mode)) {
		r = -EINVAL;
	} else if (!strcmp(v, "accept") || !strcmp(v, "cancel")) {
		bool drop;

		pthread_mutex_lock(&fs->lk_lock);
		ip->lk_accept = v[0] == 'a';
		drop = !ip->lk_accept && !ip->nopen_standby;
		pthread_mutex_unlock(&fs->lk_lock);
		if (drop)
			drop_unused_handover(fs, ip);
	} else if (sscanf(v, "give %" SCNu32 " %" SCNu64 " %c", &to, &gen, &extra) == 2) {
		r = to == fs->slot ? -EINVAL : handover_give(fs, ip, to, gen);
	} else {
		r = -EINVAL;
	}
	inode_put(fs, ip);
	return r;
}
