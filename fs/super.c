// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Mount and unmount of a volume: superblock verification (primary, then the
 * backup when the primary is ours but damaged), joining the cluster (a
 * heartbeat slot of our own, fs/cluster.c), replay of our journal, loading
 * of the allocation bitmaps, freeing of orphans; statfs and sync.  The order
 * of unmount matters: everything committed and in place, the journal marked
 * clean, and only then the locks and the slot given back.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "fs_internal.h"

const struct vmfsd_sb *fs_super(const struct fs *fs)
{
	return &fs->sb;
}

struct bdev *fs_device(struct fs *fs)
{
	return fs->bd;
}

const char *fs_host(const struct fs *fs)
{
	return fs->host;
}

/* Reads and verifies the superblock; falls back to the backup only when the
 * primary carries our magic (damaged, not overwritten by another mkfs). */
static int read_super(struct fs *fs, unsigned *flags_out)
{
	uint8_t *blk = bdev_alloc(VMFSD_META_BLOCK);
	uint64_t size = bdev_size(fs->bd), bnr;
	int r, rb;

	if (!blk)
		return -ENOMEM;
	if (size < 2 * VMFSD_META_BLOCK) {
		r = -EMEDIUMTYPE;
		goto out;
	}
	r = bdev_pread(fs->bd, blk, VMFSD_META_BLOCK, 0);
	if (r)
		goto out;
	if (vmfsd_get_le64(blk) != VMFSD_SB_MAGIC) {
		r = -EMEDIUMTYPE;
		goto out;
	}
	r = vmfsd_sb_decode(blk, 0, &fs->sb);
	if (r == -EOPNOTSUPP)
		r = -EPROTONOSUPPORT;   /* unknown incompat feature, not "no O_DIRECT" */
	if (r == 0 || r == -EPROTONOSUPPORT)
		goto out;
	bnr = size / VMFSD_META_BLOCK - 1;
	rb = bdev_pread(fs->bd, blk, VMFSD_META_BLOCK, bnr * VMFSD_META_BLOCK);
	if (!rb)
		rb = vmfsd_sb_decode(blk, bnr, &fs->sb);
	if (!rb && fs->sb.backup_blocknr == bnr) {
		*flags_out |= FS_MOUNT_USED_BACKUP_SB;
		r = 0;
	}
out:
	bdev_free(blk);
	return r;
}

/* A read-only mount cannot replay, so it checks every slot's journal, not
 * only one: a journal that needs replay belongs either to a host at work on
 * the volume (its heartbeat changes while we watch: it writes that journal
 * and checkpoints it itself) or to a host that is gone, whose last
 * committed transactions are then not in place until a read-write host or
 * fsck replays them.  The second refuses the mount (-EROFS) unless the
 * caller asked for norecovery (docs/cluster.md, "Read-only mounts"). */
static int ro_check_journals(struct fs *fs, const struct fs_mount_opts *o, unsigned *flags)
{
	uint8_t dirty[VMFSD_MAX_HOSTS / 8] = { 0 }, beating[VMFSD_MAX_HOSTS / 8];
	struct hb_timing t;
	uint32_t s, ndirty = 0;
	int r;

	for (s = 0; s < fs->sb.max_hosts; s++) {
		r = journal_is_clean(fs->bd, &fs->sb, s);
		if (r == -EUCLEAN || r == -EBADMSG)
			r = 1;          /* a damaged header needs fsck as much */
		if (r < 0)
			return r;
		if (r) {
			dirty[s / 8] |= (uint8_t)(1u << (s % 8));
			ndirty++;
		}
	}
	if (!ndirty)
		return 0;
	r = hb_timing_compute(&fs->sb, &t);
	if (!r)
		r = hb_watch_beating(fs->bd, &fs->sb, t.busy_watch_ms, beating);
	if (r)
		return r;
	ndirty = 0;
	for (s = 0; s < VMFSD_MAX_HOSTS / 8; s++) {
		dirty[s] &= (uint8_t)~beating[s];
		ndirty += (uint32_t)__builtin_popcount(dirty[s]);
	}
	if (o && o->unreplayed)
		memcpy(o->unreplayed, dirty, sizeof(dirty));
	if (!ndirty)
		return 0;
	if (!o || !o->norecovery)
		return -EROFS;
	*flags |= FS_MOUNT_UNREPLAYED;
	return 0;
}

/* Rewrites the primary superblock from the verified in-memory copy. */
static int restore_primary(struct fs *fs)
{
	uint8_t *blk = bdev_alloc(VMFSD_META_BLOCK);
	int r;

	if (!blk)
		return -ENOMEM;
	vmfsd_sb_encode(&fs->sb, 0, blk);
	r = bdev_pwrite(fs->bd, blk, VMFSD_META_BLOCK, 0);
	if (!r)
		r = bdev_flush(fs->bd);
	bdev_free(blk);
	return r;
}

int fs_mount(const char *device, const struct fs_mount_opts *o, struct fs **out,
	     unsigned *flags_out)
{
	struct fs_inode *root;
	struct fs *fs;
	unsigned flags = 0;
	int r;

	fs = calloc(1, sizeof(*fs));
	if (!fs)
		return -ENOMEM;
	fs->readonly = o && o->readonly;
	if (o && o->norecovery && !fs->readonly) {
		free(fs);
		return -EINVAL;         /* a read-write mount always recovers */
	}
	if (o && o->host && *o->host)
		snprintf(fs->host, sizeof(fs->host), "%s", o->host);
	else if (gethostname(fs->host, sizeof(fs->host) - 1) < 0)
		strcpy(fs->host, "localhost");
	pthread_mutex_init(&fs->meta_lock, NULL);
	pthread_mutex_init(&fs->icache_lock, NULL);
	pthread_mutex_init(&fs->lk_lock, NULL);
	{
		/* A drop must not wait behind an endless run of replies
		 * (glibc's default prefers readers). */
		pthread_rwlockattr_t ra;

		pthread_rwlockattr_init(&ra);
		pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
		pthread_rwlock_init(&fs->lc_rw, &ra);
		pthread_rwlockattr_destroy(&ra);
		fs->lc_gen = 1;         /* an attribute never marked has 0 */
	}
	pthread_mutex_init(&fs->late_mu, NULL);
	pthread_mutex_init(&fs->plock, NULL);
	fs->itab_size = 1u << 16;
	fs->itab = calloc(fs->itab_size, sizeof(*fs->itab));
	if (!fs->itab) {
		r = -ENOMEM;
		goto fail;
	}
	fs->commit_interval_ms = o ? o->commit_interval_ms : 0;
	fs->icache_max = o && o->inode_cache ? o->inode_cache : FS_INODE_CACHE_DEFAULT;
	fs->reclaim_own = o && o->reclaim_own_slot;
	fs->no_self_fence = o && o->debug_no_self_fence;
	if (o) {
		fs->fence_hook = o->fence_hook;
		fs->fence_arg = o->fence_arg;
		fs->log_hook = o->log_hook;
		fs->log_arg = o->log_arg;
		fs->cache_hook = o->cache_hook;
		fs->cache_arg = o->cache_arg;
	}
	if (o && o->bdev) {
		fs->bd = o->bdev;
	} else {
		/* No O_EXCL: every host of the cluster opens the same LUN. */
		r = bdev_open(device, fs->readonly ? BDEV_RDONLY : 0, &fs->bd);
		if (r)
			goto fail;
		fs->own_bd = true;
	}
	r = read_super(fs, &flags);
	if (r)
		goto fail;
	if (fs->sb.device_size > bdev_size(fs->bd)) {
		r = -ERANGE;    /* device shrank or the image was truncated */
		goto fail;
	}
	if ((fs->sb.feat_ro_compat & ~VMFSD_FEAT_RO_COMPAT_SUPP) && !fs->readonly) {
		r = -EPROTONOSUPPORT;
		goto fail;
	}
	/* Read-write mounts join the cluster: a heartbeat slot of our own
	 * (-EBUSY if this host name is live already), whose journal is ours. */
	if (!fs->readonly) {
		r = cluster_join(fs);
		if (r)
			goto fail;
	}
	if ((flags & FS_MOUNT_USED_BACKUP_SB) && !fs->readonly) {
		r = restore_primary(fs);
		if (r)
			goto fail;
	}
	if (!fs->readonly) {
		struct journal_replay_info ji;

		/* Our own journal first: it may hold the newest bitmaps. */
		r = journal_replay(fs->bd, &fs->sb, fs->slot, &ji);
		if (r == -EUCLEAN || r == -EBADMSG)
			r = -ENOTRECOVERABLE;   /* journal header damaged, not the sb */
		if (r)
			goto fail;
		if (ji.transactions || fs->replayed_own)
			flags |= FS_MOUNT_REPLAYED;
		r = commit_start(fs, ji.next_seq);
		if (r)
			goto fail;
		r = cluster_start(fs);
		if (r)
			goto fail;
	} else {
		/* Replay writes; a read-only mount cannot recover the volume. */
		r = ro_check_journals(fs, o, &flags);
		if (r)
			goto fail;
	}
	r = alloc_load(fs);
	if (r)
		goto fail;
	/* The root stays cached, pinned, until the unmount drops the whole
	 * cache: the kernel never looks it up, so no lookup count holds it,
	 * and every lookup in the root read its inode and directory blocks
	 * from the disk again (3 reads per name). */
	r = inode_get(fs, VMFSD_ROOT_INO, &root);
	if (r)
		goto fail;
	if (!S_ISDIR(root->d.mode)) {
		r = -EUCLEAN;
		goto fail;
	}
	if (!fs->readonly) {
		/* Files unlinked before a crash: free them now. */
		r = orphan_load(fs);
		if (r)
			goto fail;
		orphan_cleanup(fs);
	}
	if (flags_out)
		*flags_out = flags;
	*out = fs;
	return 0;
fail:
	inode_cache_drop_all(fs);
	commit_stop(fs);
	cluster_release_rcs(fs, true, false);
	(void)cluster_leave(fs);
	alloc_unload(fs);
	if (fs->own_bd)
		bdev_close(fs->bd);
	inode_mem_release(fs);
	free(fs->itab);
	free(fs);
	return r;
}

int fs_sync(struct fs *fs)
{
	int r;

	if (fs->readonly)
		return 0;
	pthread_mutex_lock(&fs->meta_lock);
	r = inode_writeback_all_locked(fs);
	if (!r)
		r = commit_unlocked(fs);
	pthread_mutex_unlock(&fs->meta_lock);
	return r ? r : bdev_flush(fs->bd);
}

int fs_unmount(struct fs *fs)
{
	uint32_t waited;
	int r = 0, r2;

	if (!fs)
		return 0;
	bdev_aio_drain(fs->bd);         /* completions touch inodes */
	inode_cache_drop_all(fs);
	if (!fs->readonly) {
		/* Everything to the journal and in place, durable, then clean. */
		pthread_mutex_lock(&fs->meta_lock);
		r = commit_locked(fs);
		/* Frees into a cluster another host holds wait in a queue
		 * (commit_defer_free) and are retried at each commit; that host
		 * gives the cluster back within a commit interval, so wait for
		 * it a while rather than leave the space leaked on disk. */
		for (waited = 0; !r && fs->ndfree && waited < CLUSTER_WAIT_US;
		     waited += CLUSTER_RETRY_US) {
			pthread_mutex_unlock(&fs->meta_lock);
			usleep(CLUSTER_RETRY_US);
			pthread_mutex_lock(&fs->meta_lock);
			r = commit_locked(fs);
		}
		if (!r)
			r = commit_locked(fs);  /* the frees the first one released */
		pthread_mutex_unlock(&fs->meta_lock);
		if (!r)
			r = bdev_flush(fs->bd);
		if (!r)
			r = journal_mark_clean(fs->jn);
		commit_stop(fs);
		/* Locks last: everything they protect is in place now. */
		cluster_release_rcs(fs, true, false);
		r2 = cluster_leave(fs);
		if (!r)
			r = r2;
	}
	alloc_unload(fs);
	if (fs->own_bd)
		bdev_close(fs->bd);
	inode_mem_release(fs);
	free(fs->itab);
	pthread_mutex_destroy(&fs->meta_lock);
	pthread_mutex_destroy(&fs->icache_lock);
	pthread_mutex_destroy(&fs->late_mu);
	pthread_rwlock_destroy(&fs->lc_rw);
	free(fs);
	return r;
}

int fs_statfs(struct fs *fs, struct statvfs *st)
{
	uint64_t per = fs->sb.block_size / VMFSD_SUB_BLOCK_SIZE;

	memset(st, 0, sizeof(*st));
	/* The truth a user can act on: the size is the file-block pool, and
	 * free is what large files (VM disks) can still fill.  The sub-block
	 * pool is metadata space like an inode table: it cannot hold a VM
	 * disk, so counting it as free would promise space a large file hits
	 * ENOSPC on (docs/format.md §3).  Reported in 4 KiB fragments. */
	st->f_bsize = fs->sb.block_size;
	st->f_frsize = VMFSD_SUB_BLOCK_SIZE;
	pthread_mutex_lock(&fs->meta_lock);
	st->f_blocks = fs->sb.block_count * per;
	st->f_bfree = alloc_usable_blocks(fs) * per;
	st->f_files = fs->sb.inode_count - 1;
	st->f_ffree = fs->ipool.nfree;
	pthread_mutex_unlock(&fs->meta_lock);
	st->f_bavail = st->f_bfree;
	st->f_favail = st->f_ffree;
	st->f_fsid = vmfsd_get_le64(fs->sb.uuid);
	st->f_namemax = VMFSD_NAME_MAX;
	return 0;
}
