/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * fs: the filesystem proper, independent of FUSE.  Inode-number based calls
 * shaped like the FUSE low-level API (lookup counts, forget, open handles),
 * so the FUSE layer is a thin translation and tests and the crash harness can
 * drive the very same code in-process.  Every call returns 0 (or a byte
 * count) or a negative errno.
 */
#ifndef VMFSD_FS_H
#define VMFSD_FS_H

#include <stdint.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>
#include <time.h>

#include "format/format.h"

struct fs;
struct fs_file;

struct bdev;

struct fs_mount_opts {
	const char *host;       /* host name; NULL = gethostname() */
	int readonly;
	/* Journal commit period; 0 = default (1 s), < 0 = only when forced
	 * (fsync, sync, full, unmount): deterministic I/O for crash tests. */
	int commit_interval_ms;
	/* Use this open device instead of opening DEVICE; fs_unmount leaves
	 * it open (crash tests keep it to cut the power). */
	struct bdev *bdev;
	/* The caller knows this host's previous mount is gone even though its
	 * process may still exist (crash tests remount in-process): recover
	 * its slot at once.  A previous mount whose process is gone from this
	 * machine is recovered at once anyway. */
	int reclaim_own_slot;
	/* Read-only mounts: mount even when a host that is not at work on the
	 * volume left a journal that needs replay (which a read-only mount
	 * cannot do), as ext4's and XFS's norecovery; what that host committed
	 * last is then missing or half there.  Without it such a mount fails
	 * with -EROFS. */
	int norecovery;
	/* Read-only mounts, when not NULL (VMFSD_MAX_HOSTS / 8 bytes): bit s
	 * set for every slot whose journal needs a replay that no live host
	 * is about to do (for the caller's message). */
	uint8_t *unreplayed;
	/* Called once when this host fences (docs/cluster.md §3, §5): on the
	 * heartbeat's fence thread, after every write of the volume was made
	 * to fail.  It runs inside the fencing deadline, so it must not block,
	 * do I/O, allocate or take a lock: post a wake-up to a thread of the
	 * caller's and return (vmfsd's kills this host's VMs, docs/vm.md).
	 * REASON is enum hb_fence_reason (lockmgr.h). */
	void (*fence_hook)(void *arg, int reason);
	void *fence_arg;
	/* Called with what an administrator should find in the system log:
	 * other hosts joining, leaving, declared dead, recovered (journal
	 * replayed, locks broken) and this host's own recovery.  LEVEL is a
	 * syslog priority (FS_LOG_*); on the commit thread, never under a
	 * lock of the filesystem's. */
	void (*log_hook)(void *arg, int level, const char *msg);
	void *log_arg;
	/* Drops from the kernel's caches what fs_attr.cache_* handed out,
	 * before a lock that guards it goes back: INO 0 for every directory
	 * entry, then once for each inode whose attributes were handed out.
	 * On the commit thread with the filesystem's locks held: it must not
	 * wait for a request of the mount (FUSE's notifications don't). */
	void (*cache_hook)(void *arg, uint64_t ino);
	void *cache_arg;
	/* Test only (vmfsd -o debug_no_self_fence): the heartbeat never fences
	 * on its own deadline, so a test can show what the target's
	 * persistent reservations refuse by themselves (docs/cluster.md §8). */
	int debug_no_self_fence;
	/* Inodes kept in memory while the kernel still knows more (0: the
	 * default, FS_INODE_CACHE_DEFAULT): beyond it, the commit thread
	 * gives back the memory of unused ones (docs/architecture.md). */
	unsigned inode_cache;
};

#define FS_INODE_CACHE_DEFAULT 16384u

enum { FS_LOG_WARNING = 4, FS_LOG_NOTICE = 5, FS_LOG_INFO = 6 };  /* syslog's values */

enum fs_mount_flags_out {
	FS_MOUNT_USED_BACKUP_SB = 1u << 0,  /* primary superblock was bad */
	FS_MOUNT_REPLAYED = 1u << 1,        /* the journal held transactions */
	FS_MOUNT_UNREPLAYED = 1u << 2,      /* read-only with norecovery: some
					     * journal needs replay (o->unreplayed) */
};

struct fs_attr {
	uint64_t ino;
	uint64_t generation;
	uint32_t mode, uid, gid, nlink;
	uint64_t size;
	uint64_t blocks;        /* 512-byte units allocated */
	uint64_t rdev;
	uint32_t blksize;
	struct timespec atime, mtime, ctime;
	/* What the kernel may cache for longer than the one-second bound
	 * (docs/cluster.md §5.4): this host holds the lock that guards it,
	 * and drops it from the kernel's caches (fs_mount_opts.cache_hook)
	 * before that lock goes back.  Only for a reply sent while
	 * fs_cache_hold holds. */
	bool cache_attr;        /* the attributes: the inode's own lock */
	bool cache_entry;       /* the name: its directory's lock */
	uint64_t cache_gen;
};

/* Before a reply that would hand out A's cache_attr or cache_entry: true
 * if they still stand, and then no cache_hook call starts until
 * fs_cache_unhold (call it once the reply is sent); false: reply with the
 * ordinary timeouts. */
bool fs_cache_hold(struct fs *fs, const struct fs_attr *a);
void fs_cache_unhold(struct fs *fs);

/* setattr mask bits */
enum {
	FS_SET_MODE = 1u << 0,
	FS_SET_UID = 1u << 1,
	FS_SET_GID = 1u << 2,
	FS_SET_SIZE = 1u << 3,
	FS_SET_ATIME = 1u << 4,
	FS_SET_MTIME = 1u << 5,
	FS_SET_ATIME_NOW = 1u << 6,
	FS_SET_MTIME_NOW = 1u << 7,
	FS_SET_CTIME = 1u << 8,
};

struct fs_setattr {
	uint32_t mode, uid, gid;
	uint64_t size;
	struct timespec atime, mtime, ctime;
};

/* Mount: opens the device (unless O->bdev), verifies the superblock
 * (falling back to the backup when the primary is damaged and the backup
 * is sound), loads the allocation bitmaps and claims the host's slot,
 * replaying its journal; a read-only mount checks every slot's journal
 * instead.  Errors: -EMEDIUMTYPE not a vmfsd volume, -EUCLEAN/-EBADMSG
 * superblock and backup damaged, -EPROTONOSUPPORT unknown incompat
 * features (or unknown ro_compat ones for a read-write mount), -EBUSY
 * volume already mounted by this host name, -ENOTRECOVERABLE our journal
 * header damaged, -EROFS read-only and a journal needs a replay no live
 * host will do (O->unreplayed names the slots), -ERANGE device smaller
 * than the volume, -EINVAL norecovery without readonly, -EOPNOTSUPP the
 * device has no usable ATS, bdev_open errors. */
int fs_mount(const char *device, const struct fs_mount_opts *o, struct fs **out,
	     unsigned *flags_out);
/* Writes back everything dirty, frees orphans, flushes, releases the slot. */
int fs_unmount(struct fs *fs);
const struct vmfsd_sb *fs_super(const struct fs *fs);
const char *fs_host(const struct fs *fs);
/* The device (fault injection by the daemon's test options). */
struct bdev *fs_device(struct fs *fs);
int fs_statfs(struct fs *fs, struct statvfs *st);
/* Writes back dirty inodes and flushes the device. */
int fs_sync(struct fs *fs);

/* Lookup counts: each successful lookup/create/mkdir/mknod/symlink/link
 * takes one reference that fs_forget() returns (as the kernel does). */
int fs_lookup(struct fs *fs, uint64_t parent, const char *name, struct fs_attr *out);
void fs_forget(struct fs *fs, uint64_t ino, uint64_t nlookup);
int fs_getattr(struct fs *fs, uint64_t ino, struct fs_attr *out);
int fs_setattr(struct fs *fs, uint64_t ino, const struct fs_setattr *sa, unsigned mask,
	       struct fs_attr *out);

int fs_mknod(struct fs *fs, uint64_t parent, const char *name, uint32_t mode,
	     uint32_t uid, uint32_t gid, uint64_t rdev, struct fs_attr *out);
int fs_mkdir(struct fs *fs, uint64_t parent, const char *name, uint32_t mode,
	     uint32_t uid, uint32_t gid, struct fs_attr *out);
int fs_symlink(struct fs *fs, uint64_t parent, const char *name, const char *target,
	       uint32_t uid, uint32_t gid, struct fs_attr *out);
/* Returns the target length; BUF gets a NUL-terminated copy (truncated). */
int fs_readlink(struct fs *fs, uint64_t ino, char *buf, size_t size);
int fs_link(struct fs *fs, uint64_t ino, uint64_t newparent, const char *newname,
	    struct fs_attr *out);
int fs_unlink(struct fs *fs, uint64_t parent, const char *name);
int fs_rmdir(struct fs *fs, uint64_t parent, const char *name);
/* flags: 0, RENAME_NOREPLACE or RENAME_EXCHANGE */
int fs_rename(struct fs *fs, uint64_t parent, const char *name, uint64_t newparent,
	      const char *newname, unsigned flags);

/* Open files. */
int fs_open(struct fs *fs, uint64_t ino, int flags, struct fs_file **out);
/* May the kernel keep this open file's data in its page cache (and so
 * allow shared mmap)?  True for regular files opened without O_DIRECT,
 * not multi-writer and not a handover standby, on a read-write mount
 * (a read-only mount takes no locks): the file's cluster lock
 * then keeps every other host from writing it while it is open.  The
 * caller must drop cached pages and attributes at each open unless
 * fs_file_keep_cache says they are still current, and write through (no
 * writeback cache). */
bool fs_file_cached(const struct fs_file *f);
/* May the kernel keep, at this cached open, the pages and attributes it
 * cached for the file before?  True when this host's lock has kept every
 * other host from writing the file since the last cached open (held all
 * along, or its record found as we left it), nothing here wrote it around
 * the page cache since (a direct-I/O open for writing, open now or opened
 * since), and the open does not truncate. */
bool fs_file_keep_cache(const struct fs_file *f);
/* A write clears set-user-ID, and set-group-ID when group-executable,
 * as for a writer without CAP_FSETID (the caller decides who that is). */
int fs_file_kill_suid(struct fs *fs, struct fs_file *f);
/* The virtual attribute that hands a file's lock to another host
 * (fs/handover.c): a successful set may move the lock away. */
#define FS_XATTR_HANDOVER "user.vmfsd.handover"

/* Who asks: open(2)'s permission check when fs_create opens a file that
 * exists already.  GROUPS (NGROUPS of them) are the supplementary groups;
 * they may be left out (NULL, 0) when UID is 0. */
struct fs_cred {
	uint32_t uid, gid;
	const uint32_t *groups;
	int ngroups;
};

/* open(NAME, FLAGS | O_CREAT, MODE) in PARENT: creates a regular file and
 * opens it, or, when NAME exists (another host created it after this
 * host's kernel cached a negative entry, so the kernel sent a create) and
 * FLAGS lack O_EXCL, opens the existing file as open(2) would: permission
 * check for CRED, -EISDIR for a directory, the file's lock (-EBUSY), O_TRUNC.
 * -ESTALE for a symlink or special file: the kernel must look the name up
 * again and open it itself (it retries the path walk on -ESTALE).
 * OUT gets the file's attributes and takes a lookup reference. */
int fs_create(struct fs *fs, uint64_t parent, const char *name, uint32_t mode,
	      const struct fs_cred *cred, int flags, struct fs_attr *out,
	      struct fs_file **fout);
int fs_release(struct fs *fs, struct fs_file *f);
/* For the device's I/O issuer (see FS_IO_NOWAIT), which must not wait for
 * another host nor for I/O it completes itself, nor stall its I/O for a
 * journal commit: the same as fs_create, fs_unlink and fs_release, or
 * -EAGAIN before anything changed where they might.  They go on only
 * while this host is alone on the volume, holds every lock they need
 * already, and the running journal transaction has room for them; and not
 * for a create that finds the name taken (an O_TRUNC waits for the file's
 * I/O) nor the release of a handover standby.  What they may still do, as
 * a lookup does: wait for meta_lock and read metadata synchronously. */
int fs_create_nowait(struct fs *fs, uint64_t parent, const char *name, uint32_t mode,
		     const struct fs_cred *cred, int flags, struct fs_attr *out,
		     struct fs_file **fout);
int fs_unlink_nowait(struct fs *fs, uint64_t parent, const char *name);
int fs_release_nowait(struct fs *fs, struct fs_file *f);
/* Data calls take the open file (its inode stays pinned while open). */
ssize_t fs_read(struct fs *fs, struct fs_file *f, void *buf, size_t size, uint64_t off);
/* Like fs_read, but returns an aligned buffer the caller frees with
 * bdev_free() and the offset of the data in it: the zero-copy read path. */
ssize_t fs_read_buf(struct fs *fs, struct fs_file *f, size_t size, uint64_t off,
		    void **bufp, size_t *data_off);
ssize_t fs_write(struct fs *fs, struct fs_file *f, const void *buf, size_t size,
		 uint64_t off);
int fs_fsync(struct fs *fs, struct fs_file *f, int datasync);

/* Asynchronous fast path for the FUSE layer.  Returns 0 when the I/O was
 * started: DONE(ARG, result, data) then runs exactly once, from the I/O
 * completion thread (or before the return when no device I/O is needed);
 * for reads DATA points at the bytes, valid only during the call.
 * -EAGAIN: use fs_read_buf/fs_write instead (reads of inline data, writes
 * that leave inline mode or allocate, unaligned or O_SYNC writes, a
 * crash-simulating device); else an error.  A write that leaves an inline
 * file inline is a copy into the inode: DONE runs before the return.
 * Flags: FS_IO_NOWAIT: the caller is the device's I/O issuer
 * (bdev_aio_watch), which must not wait for the file's I/O lock (its holder
 * may wait for requests only the issuer completes): -EAGAIN instead of
 * waiting.  FS_IO_LEND (writes): BUF is aligned to 512 bytes and stays
 * valid and unchanged until DONE runs, so the device writes it in place
 * instead of from a copy (-EINVAL if it is not aligned).  FS_IO_LEND
 * (reads): BUF, aligned to 512 bytes and CAP bytes long, stays valid until
 * DONE runs: the device reads into it when OFF is aligned to 512 bytes and
 * SIZE rounded up to 512 fits in CAP, and DONE's DATA is then BUF (else a
 * buffer of the read's own, as without the flag; BUF may be NULL then). */
#define FS_IO_NOWAIT 1u
#define FS_IO_LEND 2u
typedef void (*fs_aio_done_fn)(void *arg, ssize_t res, const void *data);
int fs_read_start(struct fs *fs, struct fs_file *f, void *buf, size_t cap, size_t size,
		  uint64_t off, fs_aio_done_fn done, void *arg, unsigned flags);
int fs_write_start(struct fs *fs, struct fs_file *f, const void *buf, size_t size,
		   uint64_t off, fs_aio_done_fn done, void *arg, unsigned flags);
/* mode: 0, FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE|FALLOC_FL_KEEP_SIZE,
 * FALLOC_FL_ZERO_RANGE[|KEEP_SIZE]. */
int fs_fallocate(struct fs *fs, struct fs_file *f, int mode, uint64_t off, uint64_t len);
/* SEEK_DATA / SEEK_HOLE; -ENXIO past the end or when no data follows. */
int64_t fs_lseek(struct fs *fs, struct fs_file *f, int64_t off, int whence);

/* Directory listing: a snapshot taken at opendir, so entries unchanged
 * during the listing are returned exactly once whatever else happens. */
struct fs_dirent {
	uint64_t ino;
	uint8_t type;           /* DT_* */
	char name[VMFSD_NAME_MAX + 1];
};
struct fs_dir;
int fs_opendir(struct fs *fs, uint64_t ino, struct fs_dir **out);
/* Entry at index IDX (0 = ".", 1 = ".."), or -ENOENT past the end. */
int fs_dir_entry(struct fs_dir *d, uint64_t idx, struct fs_dirent *out);
void fs_closedir(struct fs_dir *d);
uint64_t fs_dir_ino(const struct fs_dir *d);

/* user.* extended attributes (other namespaces: -EOPNOTSUPP). */
int fs_setxattr(struct fs *fs, uint64_t ino, const char *name, const void *value,
		size_t size, int flags);
/* Returns the value size; with size 0 only the size. -ERANGE if too small. */
int fs_getxattr(struct fs *fs, uint64_t ino, const char *name, void *value, size_t size);
int fs_listxattr(struct fs *fs, uint64_t ino, char *list, size_t size);
int fs_removexattr(struct fs *fs, uint64_t ino, const char *name);

#endif
