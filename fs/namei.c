// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Namespace operations: lookup, create, link, unlink, rename, attributes,
 * directory listing.  Each runs under fs->meta_lock and commits one
 * transaction holding every block it changed, added in dependency order
 * (new inode before the entry that names it; entry removed before the inode
 * it named is freed, which happens at the last reference in inode_put()).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <unistd.h>

#include "fs_internal.h"

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#endif
#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif

/* The kernel gets a reference to IP at its current generation (meta_lock
 * held, so the generation is the one just read). */
static void take_lookup(struct fs *fs, struct fs_inode *ip)
{
	pthread_mutex_lock(&fs->icache_lock);
	ip->nlookup++;
	ip->kgen = ip->d.generation;
	pthread_mutex_unlock(&fs->icache_lock);
}


/* ---------------- cluster helpers ---------------- */

/* A namespace operation changes the inodes in V: lock each EXCL until the
 * next commit (fs/cluster.c), pin them so that commit cannot drop the
 * locks mid-operation, then take meta_lock and re-read any inode whose
 * cached copy may be older than another host's change.  The first NBYINO
 * came by number from the kernel (-ESTALE if the number now names another
 * file), the others by name.  On success the caller holds meta_lock and
 * ends with ns_exit().
 *
 * Locks are taken in inode-number order, whatever V's order: an operation
 * waits for a lock while it holds (pinned) the ones it took before, so two
 * hosts renaming in opposite directions between two directories, taking
 * them source first, each held one and waited NS_LOCK_WAIT_MS for the
 * other, and both failed with EBUSY (seen in cluster-three-hosts' storm).
 * In one global order no such cycle can form.
 *
 * NOWAIT (the I/O issuer's calls, fs_create_nowait): -EAGAIN, nothing
 * held, unless this host is alone on the volume (no commit hands anything
 * to another host), every lock is ours already, and the journal has room
 * for the operation without a commit (commit_room). */
#define NS_MAX 4
static int ns_enter(struct fs *fs, struct fs_inode **v, int n, int nbyino, bool nowait)
{
	int ord[NS_MAX], i, k, r = 0;

	if (nowait && fs->hb && !cluster_keep_locks(fs))
		return -EAGAIN;
	for (i = 0; i < n; i++) {       /* insertion sort of at most NS_MAX */
		for (k = i; k > 0 && (!v[ord[k - 1]] || (v[i] &&
		     v[ord[k - 1]]->ino > v[i]->ino)); k--)
			ord[k] = ord[k - 1];
		ord[k] = i;
	}
	for (i = 0; i < n && !r; i++) {
		struct fs_inode *ip = v[ord[i]];

		if (!ip)
			break;          /* the NULLs sort last */
		cluster_pin(fs, ip);
		r = nowait ? cluster_lock_held(fs, ip) :
			     cluster_lock_inode(fs, ip, VMFSD_LOCK_EXCL, true);
		if (r)
			cluster_unpin(fs, ip);
	}
	if (r) {
		for (k = 0; k < i - 1; k++)
			cluster_unpin(fs, v[ord[k]]);
		return r;
	}
	pthread_mutex_lock(&fs->meta_lock);
	if (nowait && !commit_room(fs))
		r = -EAGAIN;
	for (i = 0; i < n && !r; i++)
		if (v[i])
			r = i < nbyino ? cluster_refresh_inode(fs, v[i]) :
					 cluster_refresh_inode_named(fs, v[i]);
	if (r) {
		pthread_mutex_unlock(&fs->meta_lock);
		for (k = 0; k < n; k++)
			if (v[k])
				cluster_unpin(fs, v[k]);
	}
	return r;
}

/* ns_enter for one inode the kernel named by number: looks it up first;
 * on failure nothing is held, not even the reference. */
int ns_enter_ino(struct fs *fs, uint64_t ino, struct fs_inode **ipp, bool nowait)
{
	int r = inode_get(fs, ino, ipp);

	if (r)
		return r;
	r = ns_enter(fs, ipp, 1, 1, nowait);
	if (r)
		inode_put(fs, *ipp);
	return r;
}

void ns_exit(struct fs *fs, struct fs_inode **v, int n)
{
	int k;

	pthread_mutex_unlock(&fs->meta_lock);
	for (k = 0; k < n; k++)
		if (v[k])
			cluster_unpin(fs, v[k]);
}

/* meta_lock for a read-only look at IP (re-read if another host may have
 * changed it), reached by number (BYINO, see ns_enter) or by name.
 * Returns with meta_lock held, or an error without it: -ENOENT if another
 * host deleted it, -ESTALE if the number names another file now. */
static int ns_read_as(struct fs *fs, struct fs_inode *ip, bool byino)
{
	int r;

	pthread_mutex_lock(&fs->meta_lock);
	r = cluster_refresh_inode_named(fs, ip);
	if (r == -ESTALE)
		r = -ENOENT;
	if (!r && byino)
		r = cluster_check_kgen(fs, ip);
	if (r)
		pthread_mutex_unlock(&fs->meta_lock);
	return r;
}

int ns_read(struct fs *fs, struct fs_inode *ip)
{
	return ns_read_as(fs, ip, true);
}

/* Reads without a lock (a lookup, a stat, a listing) can meet another
 * host's commit being written in place (docs/cluster.md §5.5): a block
 * that does not verify yet (an inode never used before reads as zeros),
 * or one freed and reused since the inode we read pointed at it.  The
 * writer puts each inode after the blocks it points to, one device round
 * trip later (journal_write_homes), so such a read is tried again after a
 * pause, READ_TRIES times (1 + 2 + 4 + 8 + 16 ms: a round trip of a loaded
 * disk), then once more holding IP's lock (read-only, transient; not on a
 * read-only mount, which takes none): the writer gives its lock back only
 * once its commit is in place.  What fails under the lock is damage.
 *
 * Called after each try with its result R: true to try again.  For the
 * try under the lock IP stays pinned, and the call after it unpins. */
#define READ_TRIES 5
static bool read_again(struct fs *fs, struct fs_inode *ip, int r, int *tries)
{
	if (*tries > READ_TRIES) {
		cluster_unpin(fs, ip);
		return false;
	}
	if (r != -EUCLEAN && r != -EBADMSG)
		return false;
	if (++*tries <= READ_TRIES) {
		usleep(500u << *tries);
		return true;
	}
	if (!fs->hb)
		return false;
	cluster_pin(fs, ip);
	if (cluster_lock_inode(fs, ip, VMFSD_LOCK_RO, true)) {
		cluster_unpin(fs, ip);
		return false;   /* (R: what the reads met) */
	}
	return true;
}

/* The inode NAME in DP names now (a hint: the caller locks it, then checks
 * the name still leads there).  *out = NULL if NAME does not exist. */
static int ns_child(struct fs *fs, struct fs_inode *dp, const char *name,
		    struct fs_inode **out)
{
	uint64_t ino;
	int r, tries = 0;

	do {
		*out = NULL;
		r = ns_read(fs, dp);
		if (r)
			continue;
		r = S_ISDIR(dp->d.mode) ? dir_lookup(fs, dp, name, &ino, NULL) : -ENOTDIR;
		pthread_mutex_unlock(&fs->meta_lock);
		if (!r)
			r = inode_get(fs, ino, out);
		/* (a name whose inode is not written yet, or freed already: as
		 * good as absent; the caller locks and looks again) */
		if (r == -ENOENT || r == -ESTALE)
			r = 0;
	} while (read_again(fs, dp, r, &tries));
	return r;
}

/* Tries an operation that raced with another host's change again. */
#define NS_RETRIES 8

static int lookup_in(struct fs *fs, struct fs_inode *dp, const char *name,
		     struct fs_attr *out)
{
	struct fs_inode *ip = NULL;
	uint64_t ino;
	int r;

	r = ns_read(fs, dp);
	if (r)
		return r;
	if (!S_ISDIR(dp->d.mode)) {
		r = -ENOTDIR;
	} else if (!strcmp(name, ".")) {
		ino = dp->ino;
	} else if (!strcmp(name, "..")) {
		ino = dp->d.parent;
	} else {
		r = dir_lookup(fs, dp, name, &ino, NULL);
	}
	pthread_mutex_unlock(&fs->meta_lock);
	if (!r) {
		r = inode_get(fs, ino, &ip);
		/* a free inode: the name's create has not landed yet, or it
		 * was removed since we read the entry */
		if (r == -ESTALE)
			r = -ENOENT;
	}
	if (!r)
		r = ns_read_as(fs, ip, false);
	if (!r) {
		inode_fill_attr(fs, ip, out);
		cluster_cache_mark(fs, dp, ip, out);
		take_lookup(fs, ip);
		pthread_mutex_unlock(&fs->meta_lock);
	}
	inode_put(fs, ip);
	return r;
}

int fs_lookup(struct fs *fs, uint64_t parent, const char *name, struct fs_attr *out)
{
	struct fs_inode *dp;
	int r, tries = 0;

	r = inode_get(fs, parent, &dp);
	if (r)
		return r;
	do
		r = lookup_in(fs, dp, name, out);
	while (read_again(fs, dp, r, &tries));
	inode_put(fs, dp);
	return r;
}

void fs_forget(struct fs *fs, uint64_t ino, uint64_t nlookup)
{
	struct fs_inode *ip;

	if (inode_forget_ghost(fs, ino, nlookup) || inode_get(fs, ino, &ip))
		return;
	pthread_mutex_lock(&fs->icache_lock);
	ip->nlookup = ip->nlookup > nlookup ? ip->nlookup - nlookup : 0;
	pthread_mutex_unlock(&fs->icache_lock);
	inode_put(fs, ip);
}

int fs_getattr(struct fs *fs, uint64_t ino, struct fs_attr *out)
{
	struct fs_inode *ip;
	int tries = 0, r = inode_get(fs, ino, &ip);

	if (r)
		return r;
	do {
		r = ns_read(fs, ip);
		if (!r) {
			inode_fill_attr(fs, ip, out);
			cluster_cache_mark(fs, NULL, ip, out);
			pthread_mutex_unlock(&fs->meta_lock);
		}
	} while (read_again(fs, ip, r, &tries));
	inode_put(fs, ip);
	return r;
}

int fs_setattr(struct fs *fs, uint64_t ino, const struct fs_setattr *sa, unsigned mask,
	       struct fs_attr *out)
{
	struct fs_inode *ip;
	struct timespec now;
	int r;

	if (fs->readonly)
		return -EROFS;
	/* Lock (until the next commit) and refresh, outside meta_lock. */
	r = ns_enter_ino(fs, ino, &ip, false);
	if (r)
		return r;
	cluster_pin(fs, ip);
	ns_exit(fs, &ip, 1);
	if (mask & FS_SET_SIZE) {
		if (S_ISDIR(ip->d.mode))
			r = -EISDIR;
		else if (!S_ISREG(ip->d.mode))
			r = -EINVAL;
		else
			r = file_truncate(fs, ip, sa->size);
	}
	if (!r) {
		fs_now(&now);
		pthread_mutex_lock(&fs->meta_lock);
		if (mask & FS_SET_MODE)
			ip->d.mode = (ip->d.mode & S_IFMT) | (sa->mode & 07777);
		if (mask & FS_SET_UID)
			ip->d.uid = sa->uid;
		if (mask & FS_SET_GID)
			ip->d.gid = sa->gid;
		if (mask & (FS_SET_ATIME | FS_SET_ATIME_NOW)) {
			struct timespec t = (mask & FS_SET_ATIME_NOW) ? now : sa->atime;

			ip->d.atime_sec = t.tv_sec;
			ip->d.atime_nsec = (uint32_t)t.tv_nsec;
		}
		if (mask & (FS_SET_MTIME | FS_SET_MTIME_NOW)) {
			struct timespec t = (mask & FS_SET_MTIME_NOW) ? now : sa->mtime;

			ip->d.mtime_sec = t.tv_sec;
			ip->d.mtime_nsec = (uint32_t)t.tv_nsec;
		}
		ip->d.ctime_sec = now.tv_sec;
		ip->d.ctime_nsec = (uint32_t)now.tv_nsec;
		if (mask & FS_SET_CTIME) {
			ip->d.ctime_sec = sa->ctime.tv_sec;
			ip->d.ctime_nsec = (uint32_t)sa->ctime.tv_nsec;
		}
		r = inode_commit(fs, ip);
		if (out) {
			inode_fill_attr(fs, ip, out);
			cluster_cache_mark(fs, NULL, ip, out);
		}
		pthread_mutex_unlock(&fs->meta_lock);
	}
	cluster_unpin(fs, ip);
	inode_put(fs, ip);
	return r;
}

/* Creates NAME in PARENT (meta_lock held by caller).  *ipp gets a pinned
 * new inode. */
static int create_locked(struct fs *fs, struct fs_inode *dp, const char *name,
			 uint32_t mode, uint32_t uid, uint32_t gid, uint64_t rdev,
			 struct tx *tx, struct fs_inode **ipp)
{
	struct fs_inode *ip;
	uint64_t ino;
	int r;

	if (!S_ISDIR(dp->d.mode))
		return -ENOTDIR;
	if (dp->d.nlink == 0)
		return -ENOENT;
	r = dir_lookup(fs, dp, name, &ino, NULL);
	if (r == 0)
		return -EEXIST;
	if (r != -ENOENT)
		return r;
	/* Setgid directories pass their group on (POSIX). */
	if (dp->d.mode & S_ISGID) {
		gid = dp->d.gid;
		if (S_ISDIR(mode))
			mode |= S_ISGID;
	}
	r = inode_alloc(fs, mode, uid, gid, dp->ino, tx, &ip);
	if (r)
		return r;
	ip->d.rdev = rdev;
	tx_add_inode(tx, ip);
	r = dir_add(fs, dp, name, ip->ino, mode_to_dtype(mode), tx);
	if (r) {
		alloc_free(fs, &fs->ipool, ip->ino, tx);
		ip->d.nlink = 0;
		ip->deleted = true;
		*ipp = ip;
		return r;
	}
	if (S_ISDIR(mode)) {
		dp->d.nlink++;
		tx_add_inode(tx, dp);
	}
	*ipp = ip;
	return 0;
}

/* LOCK_NEW: the caller opens the new file next (fs_create): its lock is
 * taken with the commit that publishes it (cluster_lock_new_inode).
 * NOWAIT: see ns_enter. */
static int do_create(struct fs *fs, uint64_t parent, const char *name, uint32_t mode,
		     uint32_t uid, uint32_t gid, uint64_t rdev, const char *link_target,
		     bool lock_new, bool nowait, struct fs_attr *out)
{
	struct fs_inode *dp, *ip = NULL;
	struct tx tx;
	int r;

	if (fs->readonly)
		return -EROFS;
	/* Targets live inline when they fit, else in a sub-block; too long
	 * ones fail before anything changes. */
	if (link_target && strlen(link_target) > VMFSD_SYMLINK_MAX)
		return -ENAMETOOLONG;
	/* The new inode needs no lock: nobody can reach it before the commit
	 * that makes its name visible, after which the directory lock goes.
	 * One opened right away gets its lock with that commit. */
	r = ns_enter_ino(fs, parent, &dp, nowait);
	if (r)
		return r;
	tx_begin(fs, &tx);
	r = create_locked(fs, dp, name, mode, uid, gid, rdev, &tx, &ip);
	if (!r && link_target) {
		size_t len = strlen(link_target);

		if (len > VMFSD_INLINE_MAX) {
			r = file_store_small_locked(fs, ip, link_target, len, &tx);
		} else {
			memcpy(ip->d.map, link_target, len);
			ip->d.size = len;
			tx_add_inode(&tx, ip);
		}
	}
	/* Before tx_commit: that may commit at once (a full journal). */
	if (!r && lock_new)
		cluster_lock_new_inode(fs, ip);
	if (r) {
		tx_abort(&tx);
	} else {
		r = tx_commit(&tx);
		if (!r) {
			inode_fill_attr(fs, ip, out);
			cluster_cache_mark(fs, dp, ip, out);
			take_lookup(fs, ip);
		}
	}
	ns_exit(fs, &dp, 1);
	inode_put(fs, ip);
	inode_put(fs, dp);
	return r;
}

int fs_mknod(struct fs *fs, uint64_t parent, const char *name, uint32_t mode,
	     uint32_t uid, uint32_t gid, uint64_t rdev, struct fs_attr *out)
{
	if (S_ISDIR(mode) || S_ISLNK(mode))
		return -EINVAL;
	if (!(mode & S_IFMT))
		mode |= S_IFREG;
	return do_create(fs, parent, name, mode, uid, gid, rdev, NULL, false, false, out);
}

/* open(2)'s access check on an existing inode.  The kernel did not make
 * it: its entry said the name did not exist, so it sent a create, and it
 * checks nothing on a file it believes it created. */
static int may_open(const struct fs_attr *a, const struct fs_cred *c, int flags)
{
	unsigned want = 0, bits;
	int i;

	if ((flags & O_ACCMODE) != O_WRONLY)
		want |= 4;
	if ((flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC))
		want |= 2;
	if (c->uid == 0)
		return 0;       /* root reads and writes any regular file */
	if (a->uid == c->uid) {
		bits = (a->mode >> 6) & 7;
	} else {
		bool group = a->gid == c->gid;

		for (i = 0; i < c->ngroups && !group; i++)
			group = c->groups[i] == a->gid;
		bits = group ? (a->mode >> 3) & 7 : a->mode & 7;
	}
	return (bits & want) == want ? 0 : -EACCES;
}

/* The file just created is open, its lock taken: its attributes may be
 * cached for long too (its name was marked when it was made, and so were
 * its attributes when its lock came with the create). */
static void cache_mark_opened(struct fs *fs, struct fs_attr *a)
{
	struct fs_inode *ip;

	if (a->cache_attr || inode_get(fs, a->ino, &ip))
		return;
	cluster_cache_mark(fs, NULL, ip, a);
	inode_put(fs, ip);
}

static int create_open(struct fs *fs, uint64_t parent, const char *name, uint32_t mode,
		       const struct fs_cred *cred, int flags, bool nowait, struct fs_attr *out,
		       struct fs_file **fout)
{
	int r = -EAGAIN, tries;

	/* Nowait only while alone (ns_enter): then the new file's lock comes
	 * with the create, and the open below takes no lock of its own. */
	for (tries = 0; tries < NS_RETRIES && r == -EAGAIN; tries++) {
		r = do_create(fs, parent, name, S_IFREG | (mode & 07777), cred->uid, cred->gid, 0,
			      NULL, true, nowait, out);
		if (!r) {
			/* Ours: no O_TRUNC (empty) and no permission check
			 * (open(2) makes none on a file it created). */
			r = fs_open(fs, out->ino, flags & ~O_TRUNC, fout);
			if (r)
				fs_forget(fs, out->ino, 1);
			else
				cache_mark_opened(fs, out);
			return r;
		}
		if (r != -EEXIST || (flags & O_EXCL))
			return r;
		/* The name exists now: open what it names.  Not NOWAIT: an
		 * O_TRUNC waits for the file's I/O in flight. */
		if (nowait)
			return -EAGAIN;
		r = fs_lookup(fs, parent, name, out);
		if (r == -ENOENT || r == -ESTALE) {
			r = -EAGAIN;    /* removed again meanwhile: create */
			continue;
		}
		if (r)
			return r;
		if (S_ISDIR(out->mode))
			r = -EISDIR;
		else if (!S_ISREG(out->mode))
			r = -ESTALE;    /* the kernel follows or opens it itself */
		else
			r = may_open(out, cred, flags);
		if (!r) {
			r = fs_open(fs, out->ino, flags, fout);
			if (r == -ESTALE)
				r = -EAGAIN;    /* deleted since the lookup: again */
		}
		if (!r) {
			r = fs_getattr(fs, out->ino, out);   /* after O_TRUNC */
			if (r) {
				fs_release(fs, *fout);
				*fout = NULL;
			}
		}
		if (r)
			fs_forget(fs, out->ino, 1);
	}
	return r;
}

int fs_create(struct fs *fs, uint64_t parent, const char *name, uint32_t mode,
	      const struct fs_cred *cred, int flags, struct fs_attr *out,
	      struct fs_file **fout)
{
	return create_open(fs, parent, name, mode, cred, flags, false, out, fout);
}

int fs_create_nowait(struct fs *fs, uint64_t parent, const char *name, uint32_t mode,
		     const struct fs_cred *cred, int flags, struct fs_attr *out,
		     struct fs_file **fout)
{
	return create_open(fs, parent, name, mode, cred, flags, true, out, fout);
}

int fs_mkdir(struct fs *fs, uint64_t parent, const char *name, uint32_t mode,
	     uint32_t uid, uint32_t gid, struct fs_attr *out)
{
	return do_create(fs, parent, name, S_IFDIR | (mode & 07777), uid, gid, 0, NULL, false,
			 false, out);
}

int fs_symlink(struct fs *fs, uint64_t parent, const char *name, const char *target,
	       uint32_t uid, uint32_t gid, struct fs_attr *out)
{
	return do_create(fs, parent, name, S_IFLNK | 0777, uid, gid, 0, target, false, false,
			 out);
}

int fs_readlink(struct fs *fs, uint64_t ino, char *buf, size_t size)
{
	struct fs_inode *ip;
	size_t n;
	int tries = 0, r = inode_get(fs, ino, &ip);

	if (r)
		return r;
	do {
		r = ns_read(fs, ip);
		if (r)
			continue;
		if (!S_ISLNK(ip->d.mode) || ip->d.size > VMFSD_SYMLINK_MAX) {
			r = -EINVAL;
		} else {
			/* Inline, or (longer than the map area) in the inode's
			 * data: a block that another host's commit may still be
			 * landing, as a lookup's (read_again). */
			char t[VMFSD_SYMLINK_MAX];
			const void *src = ip->d.map;

			if (ip->d.data_mode != VMFSD_DATA_INLINE) {
				r = file_read_small_locked(fs, ip, t, ip->d.size);
				src = t;
			}
			if (!r) {
				n = ip->d.size < size - 1 ? ip->d.size : size - 1;
				memcpy(buf, src, n);
				buf[n] = 0;
				r = (int)ip->d.size;
			}
		}
		pthread_mutex_unlock(&fs->meta_lock);
	} while (read_again(fs, ip, r, &tries));
	inode_put(fs, ip);
	return r;
}

int fs_link(struct fs *fs, uint64_t ino, uint64_t newparent, const char *newname,
	    struct fs_attr *out)
{
	struct fs_inode *ip, *dp = NULL;
	struct tx tx;
	int r;

	if (fs->readonly)
		return -EROFS;
	r = inode_get(fs, ino, &ip);
	if (!r)
		r = inode_get(fs, newparent, &dp);
	if (r)
		goto out;
	{
		struct fs_inode *v[2] = { ip, dp };

		r = ns_enter(fs, v, 2, 2, false);
		if (r)
			goto out;
	}
	tx_begin(fs, &tx);
	if (S_ISDIR(ip->d.mode))
		r = -EPERM;
	else if (!S_ISDIR(dp->d.mode))
		r = -ENOTDIR;
	else if (ip->d.nlink == 0 || dp->d.nlink == 0)
		r = -ENOENT;
	else if (ip->d.nlink >= 65000)
		r = -EMLINK;
	if (!r) {
		ip->d.nlink++;
		inode_touch(fs, ip, false, true);
		tx_add_inode(&tx, ip);
		r = dir_add(fs, dp, newname, ip->ino, mode_to_dtype(ip->d.mode), &tx);
		if (r)
			ip->d.nlink--;
	}
	if (r) {
		tx_abort(&tx);
	} else {
		r = tx_commit(&tx);
		if (!r) {
			inode_fill_attr(fs, ip, out);
			cluster_cache_mark(fs, dp, ip, out);
			take_lookup(fs, ip);
		}
	}
	{
		struct fs_inode *v[2] = { ip, dp };

		ns_exit(fs, v, 2);
	}
out:
	inode_put(fs, dp);
	inode_put(fs, ip);
	return r;
}

/* Removes NAME from DP and drops one link of its inode (meta_lock held).
 * HINT is the inode the caller locked: -EAGAIN, with nothing changed, if
 * NAME leads elsewhere now (another host replaced it meanwhile).
 * *victim gets the pinned inode, freed by inode_put() when unreferenced. */
static int remove_locked(struct fs *fs, struct fs_inode *dp, const char *name, bool isdir,
			 const struct fs_inode *hint, struct tx *tx, struct fs_inode **victim)
{
	struct fs_inode *ip;
	uint64_t ino;
	int r;

	if (!S_ISDIR(dp->d.mode))
		return -ENOTDIR;
	if (!strcmp(name, ".") || !strcmp(name, ".."))
		return isdir ? -ENOTEMPTY : -EISDIR;
	r = dir_lookup(fs, dp, name, &ino, NULL);
	if (r)
		return r;
	if (ino != hint->ino)
		return -EAGAIN;         /* not the inode we locked: again */
	r = inode_get(fs, ino, &ip);
	if (r)
		return r;
	*victim = ip;
	if (isdir && !S_ISDIR(ip->d.mode))
		return -ENOTDIR;
	if (!isdir && S_ISDIR(ip->d.mode))
		return -EISDIR;
	if (isdir && dir_count(fs, ip) != 0)
		return -ENOTEMPTY;
	r = dir_remove(fs, dp, name, tx);
	if (r)
		return r;
	if (isdir) {
		ip->d.nlink = 0;
		dp->d.nlink--;
		tx_add_inode(tx, dp);
	} else {
		ip->d.nlink--;
	}
	inode_touch(fs, ip, false, true);
	tx_add_inode(tx, ip);
	if (ip->d.nlink == 0) {
		ip->unlinked_here = true;
		orphan_add(fs, ip->ino, tx);    /* freed at last put, or next mount */
	}
	return 0;
}

static int do_remove(struct fs *fs, uint64_t parent, const char *name, bool isdir,
		     bool nowait)
{
	struct fs_inode *dp, *ip = NULL, *hint = NULL;
	struct tx tx;
	int r, tries = 0;

	if (fs->readonly)
		return -EROFS;
	r = inode_get(fs, parent, &dp);
	if (r)
		return r;
again:
	/* The victim's lock too: a file open on another host is busy. */
	r = ns_child(fs, dp, name, &hint);
	if (!r && !hint)
		r = -ENOENT;
	if (!r) {
		struct fs_inode *v[2] = { dp, hint };

		r = ns_enter(fs, v, 2, 1, nowait);
		if (!r) {
			tx_begin(fs, &tx);
			r = remove_locked(fs, dp, name, isdir, hint, &tx, &ip);
			if (r)
				tx_abort(&tx);
			else
				r = tx_commit(&tx);
			ns_exit(fs, v, 2);
		}
	}
	inode_put(fs, ip);
	inode_put(fs, hint);
	ip = hint = NULL;
	if (r == -EAGAIN && !nowait && ++tries < NS_RETRIES)
		goto again;
	inode_put(fs, dp);
	return r;
}

int fs_unlink(struct fs *fs, uint64_t parent, const char *name)
{
	return do_remove(fs, parent, name, false, false);
}

int fs_unlink_nowait(struct fs *fs, uint64_t parent, const char *name)
{
	return do_remove(fs, parent, name, false, true);
}

int fs_rmdir(struct fs *fs, uint64_t parent, const char *name)
{
	return do_remove(fs, parent, name, true, false);
}

/* Is ANC an ancestor of (or equal to) DIR?  (meta_lock held) */
static int is_ancestor(struct fs *fs, uint64_t anc, uint64_t dir)
{
	uint32_t depth = 0;

	while (dir != VMFSD_ROOT_INO) {
		struct fs_inode *ip;
		uint64_t up;

		if (dir == anc)
			return 1;
		if (++depth > 4096 || inode_get(fs, dir, &ip))
			return -EUCLEAN;
		up = ip->d.parent;
		/* Unpinning cannot evict here: evicting needs meta_lock, which we hold,
		 * so drop the pin without eviction and let a later put evict. */
		pthread_mutex_lock(&fs->icache_lock);
		ip->pins--;
		pthread_mutex_unlock(&fs->icache_lock);
		dir = up;
	}
	return anc == VMFSD_ROOT_INO;
}

static int rename_once(struct fs *fs, uint64_t parent, const char *name, uint64_t newparent,
		       const char *newname, unsigned flags)
{
	struct fs_inode *hs = NULL, *hd = NULL, *v[4];
	struct fs_inode *sdp = NULL, *ddp = NULL, *sip = NULL, *dip = NULL;
	uint64_t sino, dino = 0;
	bool sdir, ddir = false;
	struct tx tx;
	int r;

	if (fs->readonly)
		return -EROFS;
	if (flags & ~(unsigned)(RENAME_NOREPLACE | RENAME_EXCHANGE))
		return -EINVAL;
	if ((flags & RENAME_NOREPLACE) && (flags & RENAME_EXCHANGE))
		return -EINVAL;
	if (!strcmp(name, ".") || !strcmp(name, "..") || !strcmp(newname, ".") ||
	    !strcmp(newname, ".."))
		return -EBUSY;
	r = inode_get(fs, parent, &sdp);
	if (!r)
		r = inode_get(fs, newparent, &ddp);
	if (r)
		goto out_put;
	/* Lock both directories and both named inodes (hints, checked below). */
	r = ns_child(fs, sdp, name, &hs);
	if (!r)
		r = ns_child(fs, ddp, newname, &hd);
	if (!r && !hs)
		r = -ENOENT;
	if (r)
		goto out_put;
	v[0] = sdp;
	v[1] = ddp;
	v[2] = hs;
	v[3] = hd;
	r = ns_enter(fs, v, 4, 2, false);
	if (r)
		goto out_put;
	tx_begin(fs, &tx);
	if (!S_ISDIR(sdp->d.mode) || !S_ISDIR(ddp->d.mode)) {
		r = -ENOTDIR;
		goto out;
	}
	r = dir_lookup(fs, sdp, name, &sino, NULL);
	if (r)
		goto out;
	r = dir_lookup(fs, ddp, newname, &dino, NULL);
	if (r == -ENOENT) {
		dino = 0;
		r = 0;
	}
	if (r)
		goto out;
	if (flags & RENAME_EXCHANGE && !dino) {
		r = -ENOENT;
		goto out;
	}
	if ((flags & RENAME_NOREPLACE) && dino) {
		r = -EEXIST;
		goto out;
	}
	if (sino != hs->ino || dino != (hd ? hd->ino : 0)) {
		r = -EAGAIN;    /* changed since we locked: again */
		goto out;
	}
	if (sino == dino)
		goto out;       /* same inode: POSIX says do nothing */
	r = inode_get(fs, sino, &sip);
	if (!r && dino)
		r = inode_get(fs, dino, &dip);
	if (r)
		goto out;
	sdir = S_ISDIR(sip->d.mode);
	ddir = dip && S_ISDIR(dip->d.mode);
	/* A directory may not move below itself. */
	if (sdir && parent != newparent) {
		r = is_ancestor(fs, sino, newparent);
		if (r) {
			r = r < 0 ? r : -EINVAL;
			goto out;
		}
	}
	if ((flags & RENAME_EXCHANGE) && ddir && parent != newparent) {
		r = is_ancestor(fs, dino, parent);
		if (r) {
			r = r < 0 ? r : -EINVAL;
			goto out;
		}
	}

	if (flags & RENAME_EXCHANGE) {
		r = dir_replace(fs, sdp, name, dino, mode_to_dtype(dip->d.mode), &tx);
		if (!r)
			r = dir_replace(fs, ddp, newname, sino, mode_to_dtype(sip->d.mode), &tx);
		if (r)
			goto out;
		if (sdir != ddir && parent != newparent) {
			/* One directory moves each way: swap the parents' link counts. */
			if (sdir) {
				sdp->d.nlink--;
				ddp->d.nlink++;
			} else {
				sdp->d.nlink++;
				ddp->d.nlink--;
			}
		}
		if (sdir)
			sip->d.parent = newparent;
		if (ddir)
			dip->d.parent = parent;
		inode_touch(fs, sip, false, true);
		inode_touch(fs, dip, false, true);
		tx_add_inode(&tx, sip);
		tx_add_inode(&tx, dip);
		tx_add_inode(&tx, sdp);
		tx_add_inode(&tx, ddp);
		goto commit;
	}

	if (dip) {
		if (sdir && !ddir) {
			r = -ENOTDIR;
			goto out;
		}
		if (!sdir && ddir) {
			r = -EISDIR;
			goto out;
		}
		if (ddir && dir_count(fs, dip) != 0) {
			r = -ENOTEMPTY;
			goto out;
		}
		r = dir_replace(fs, ddp, newname, sino, mode_to_dtype(sip->d.mode), &tx);
		if (r)
			goto out;
		if (ddir) {
			dip->d.nlink = 0;
			ddp->d.nlink--;  /* the replaced directory's ".." */
		} else {
			dip->d.nlink--;
		}
		inode_touch(fs, dip, false, true);
		tx_add_inode(&tx, dip);
		if (dip->d.nlink == 0) {
			dip->unlinked_here = true;
			orphan_add(fs, dip->ino, &tx);
		}
	} else {
		r = dir_add(fs, ddp, newname, sino, mode_to_dtype(sip->d.mode), &tx);
		if (r)
			goto out;
	}
	r = dir_remove(fs, sdp, name, &tx);
	if (r)
		goto out;
	if (sdir && parent != newparent) {
		sdp->d.nlink--;
		ddp->d.nlink++;
		sip->d.parent = newparent;
	}
	inode_touch(fs, sip, false, true);
	tx_add_inode(&tx, sip);
	tx_add_inode(&tx, ddp);
	tx_add_inode(&tx, sdp);
commit:
	r = tx_commit(&tx);
	ns_exit(fs, v, 4);
	goto out_put;
out:
	tx_abort(&tx);
	ns_exit(fs, v, 4);
out_put:
	inode_put(fs, dip);
	inode_put(fs, sip);
	inode_put(fs, hd);
	inode_put(fs, hs);
	inode_put(fs, ddp);
	inode_put(fs, sdp);
	return r;
}

int fs_rename(struct fs *fs, uint64_t parent, const char *name, uint64_t newparent,
	      const char *newname, unsigned flags)
{
	int r, tries = 0;

	do
		r = rename_once(fs, parent, name, newparent, newname, flags);
	while (r == -EAGAIN && ++tries < NS_RETRIES);
	return r;
}

/* ---------------- directory listing ---------------- */

struct fs_dir {
	uint64_t ino, parent;
	struct fs_dirent *v;
	uint32_t n;
};

int fs_opendir(struct fs *fs, uint64_t ino, struct fs_dir **out)
{
	struct fs_inode *ip;
	struct fs_dir *d;
	int tries = 0, r = inode_get(fs, ino, &ip);

	if (r)
		return r;
	d = calloc(1, sizeof(*d));
	if (!d) {
		inode_put(fs, ip);
		return -ENOMEM;
	}
	do {
		r = ns_read(fs, ip);
		if (r)
			continue;
		if (!S_ISDIR(ip->d.mode))
			r = -ENOTDIR;
		else
			r = dir_snapshot(fs, ip, &d->v, &d->n);
		d->parent = ip->d.parent;
		pthread_mutex_unlock(&fs->meta_lock);
	} while (read_again(fs, ip, r, &tries));
	d->ino = ino;
	inode_put(fs, ip);
	if (r) {
		free(d);
		return r;
	}
	*out = d;
	return 0;
}

int fs_dir_entry(struct fs_dir *d, uint64_t idx, struct fs_dirent *out)
{
	if (idx == 0 || idx == 1) {
		out->ino = idx == 0 ? d->ino : d->parent;
		out->type = DT_DIR;
		strcpy(out->name, idx == 0 ? "." : "..");
		return 0;
	}
	if (idx - 2 >= d->n)
		return -ENOENT;
	*out = d->v[idx - 2];
	return 0;
}

void fs_closedir(struct fs_dir *d)
{
	if (!d)
		return;
	free(d->v);
	free(d);
}

uint64_t fs_dir_ino(const struct fs_dir *d)
{
	return d->ino;
}
