// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * FUSE low-level operations: a thin translation from kernel requests to
 * fs/ calls.  This is the only place where errno turns positive.  Files
 * opened with O_DIRECT (QEMU's cache=none) or in multi-writer mode are
 * opened with direct_io: another host may write them while they are open,
 * so no page cache may hold their data.  Other regular files use the page
 * cache (so shared mmap works), write-through, dropped at an open unless
 * this host's lock has kept every other writer out since: the file's
 * cluster lock keeps other hosts from writing while it is open
 * (fs_file_cached, fs_file_keep_cache, docs/cluster.md "Page cache").
 * Entry and attribute timeouts are one second: the coherency bound the
 * design promises for changes made by other hosts; longer where this
 * host's locks keep the other hosts out (docs/cluster.md §5.4).
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bdev/bdev.h"
#include "fuse_conn.h"
#include "fuse_loop.h"
#include "fuse_ops.h"

/* Another host's change is visible within about a second
 * (docs/architecture.md, "Coherency between hosts"): it reaches the disk at
 * that host's next commit, within its 1 s commit interval, so a shorter
 * timeout would only add lookups that still find the old state. */
#define ATTR_TIMEOUT 1.0
#define ENTRY_TIMEOUT 1.0
/* What this host's locks guard (fs_attr.cache_*) is dropped from the
 * kernel's caches before the locks go back, so any timeout would do; a
 * minute bounds what a daemon that hangs (and is fenced without running
 * its drop) leaves the kernel showing. */
#define HELD_TIMEOUT 60.0

/* FUSE_NOTIFY_INC_EPOCH (protocol 7.44, Linux 6.16; libfuse 3.14 does not
 * know it): every directory entry the kernel holds is looked up again
 * before its next use.  Without it, names could only be dropped one by
 * one, so entries are never cached past the bound. */
#define NOTIFY_INC_EPOCH 8
static bool epoch_ok;

/* For cache invalidations (one session per process: one mounted volume).
 * session_mu: the commit thread's cache_hook may run while the session is
 * destroyed at unmount. */
static struct fuse_session *session;
static pthread_mutex_t session_mu = PTHREAD_MUTEX_INITIALIZER;

void vmfsd_fuse_set_session(struct fuse_session *se)
{
	pthread_mutex_lock(&session_mu);
	session = se;
	pthread_mutex_unlock(&session_mu);
}

void vmfsd_fuse_cache_hook(void *arg, uint64_t ino)
{
	(void)arg;
	pthread_mutex_lock(&session_mu);
	if (session && ino) {
		(void)fuse_lowlevel_notify_inval_inode(session, ino, -1, 0);
	} else if (session) {
		/* the kernel's struct fuse_out_header; a notification has
		 * unique 0 and its code in error */
		struct { uint32_t len; int32_t error; uint64_t unique; } oh = {
			.len = sizeof(oh), .error = NOTIFY_INC_EPOCH,
		};

		(void)!write(fuse_session_fd(session), &oh, sizeof(oh));
	}
	pthread_mutex_unlock(&session_mu);
}

static struct fs *req_fs(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

/* Timeouts for A's reply: long where fs says our locks guard it.  True:
 * the hold is taken (cache_unhold once the reply is sent). */
static bool cache_hold(fuse_req_t req, const struct fs_attr *a, double *attr, double *entry)
{
	bool held = epoch_ok && (a->cache_attr || a->cache_entry) && fs_cache_hold(req_fs(req), a);

	*attr = held && a->cache_attr ? HELD_TIMEOUT : ATTR_TIMEOUT;
	if (entry)
		*entry = held && a->cache_entry ? HELD_TIMEOUT : ENTRY_TIMEOUT;
	return held;
}

/* After the reply: REQ is gone, FS is what req_fs gave before it. */
static void cache_unhold(struct fs *fs, bool held)
{
	if (held)
		fs_cache_unhold(fs);
}

static void attr_to_stat(const struct fs_attr *a, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = a->ino;
	st->st_mode = a->mode;
	st->st_nlink = a->nlink;
	st->st_uid = a->uid;
	st->st_gid = a->gid;
	st->st_size = (off_t)a->size;
	st->st_blocks = (blkcnt_t)a->blocks;
	st->st_blksize = (blksize_t)a->blksize;
	st->st_rdev = (dev_t)a->rdev;
	st->st_atim = a->atime;
	st->st_mtim = a->mtime;
	st->st_ctim = a->ctime;
}

/* E for A, with its timeouts: the return value as cache_hold's. */
static bool entry_of(fuse_req_t req, const struct fs_attr *a, struct fuse_entry_param *e)
{
	memset(e, 0, sizeof(*e));
	e->ino = a->ino;
	e->generation = a->generation;
	attr_to_stat(a, &e->attr);
	return cache_hold(req, a, &e->attr_timeout, &e->entry_timeout);
}

static void reply_entry(fuse_req_t req, const struct fs_attr *a)
{
	struct fs *fs = req_fs(req);
	struct fuse_entry_param e;
	bool held = entry_of(req, a, &e);

	fuse_reply_entry(req, &e);
	cache_unhold(fs, held);
}

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	(void)userdata;
	vmfsd_fuse_conn_init(conn);
	epoch_ok = conn->proto_major > 7 || (conn->proto_major == 7 && conn->proto_minor >= 44);
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs_attr a;
	int r = fs_lookup(req_fs(req), parent, name, &a);

	if (r == -ENOENT) {
		/* Negative entry, cached no longer than a positive one: names
		 * created on another host show up within the same bound.  A
		 * stale negative entry is harmless beyond that: mkdir, mknod,
		 * symlink, link and rename's target look the name up again
		 * (LOOKUP_EXCL / LOOKUP_RENAME_TARGET), and the CREATE that
		 * open(O_CREAT) sends through it opens the existing file
		 * (fs_create). */
		struct fuse_entry_param e;

		memset(&e, 0, sizeof(e));
		e.entry_timeout = ENTRY_TIMEOUT;
		fuse_reply_entry(req, &e);
		return;
	}
	if (r)
		fuse_reply_err(req, -r);
	else
		reply_entry(req, &a);
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	fs_forget(req_fs(req), ino, nlookup);
	fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *f)
{
	size_t i;

	for (i = 0; i < count; i++)
		fs_forget(req_fs(req), f[i].ino, f[i].nlookup);
	fuse_reply_none(req);
}

static void reply_attr(fuse_req_t req, const struct fs_attr *a)
{
	struct fs *fs = req_fs(req);
	struct stat st;
	double timeout;
	bool held;

	attr_to_stat(a, &st);
	held = cache_hold(req, a, &timeout, NULL);
	fuse_reply_attr(req, &st, timeout);
	cache_unhold(fs, held);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs_attr a;
	int r = fs_getattr(req_fs(req), ino, &a);

	(void)fi;
	if (r) {
		fuse_reply_err(req, -r);
		return;
	}
	reply_attr(req, &a);
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
		       struct fuse_file_info *fi)
{
	struct fs_setattr sa = {
		.mode = attr->st_mode, .uid = attr->st_uid, .gid = attr->st_gid,
		.size = (uint64_t)attr->st_size, .atime = attr->st_atim, .mtime = attr->st_mtim,
		.ctime = attr->st_ctim,
	};
	unsigned mask = 0;
	struct fs_attr a;
	int r;

	(void)fi;
	if (to_set & FUSE_SET_ATTR_MODE)
		mask |= FS_SET_MODE;
	if (to_set & FUSE_SET_ATTR_UID)
		mask |= FS_SET_UID;
	if (to_set & FUSE_SET_ATTR_GID)
		mask |= FS_SET_GID;
	if (to_set & FUSE_SET_ATTR_SIZE)
		mask |= FS_SET_SIZE;
	if (to_set & FUSE_SET_ATTR_ATIME)
		mask |= FS_SET_ATIME;
	if (to_set & FUSE_SET_ATTR_MTIME)
		mask |= FS_SET_MTIME;
	if (to_set & FUSE_SET_ATTR_ATIME_NOW)
		mask |= FS_SET_ATIME_NOW;
	if (to_set & FUSE_SET_ATTR_MTIME_NOW)
		mask |= FS_SET_MTIME_NOW;
	if (to_set & FUSE_SET_ATTR_CTIME)
		mask |= FS_SET_CTIME;
	r = fs_setattr(req_fs(req), ino, &sa, mask, &a);
	if (r) {
		fuse_reply_err(req, -r);
		return;
	}
	reply_attr(req, &a);
}

static void op_readlink(fuse_req_t req, fuse_ino_t ino)
{
	char buf[VMFSD_SYMLINK_MAX + 1];
	int r = fs_readlink(req_fs(req), ino, buf, sizeof(buf));

	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_readlink(req, buf);
}

static void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		     dev_t rdev)
{
	const struct fuse_ctx *c = fuse_req_ctx(req);
	struct fs_attr a;
	int r = fs_mknod(req_fs(req), parent, name, mode & ~c->umask, c->uid, c->gid, rdev, &a);

	if (r)
		fuse_reply_err(req, -r);
	else
		reply_entry(req, &a);
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	const struct fuse_ctx *c = fuse_req_ctx(req);
	struct fs_attr a;
	int r = fs_mkdir(req_fs(req), parent, name, mode & ~c->umask, c->uid, c->gid, &a);

	if (r)
		fuse_reply_err(req, -r);
	else
		reply_entry(req, &a);
}

static void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
	const struct fuse_ctx *c = fuse_req_ctx(req);
	struct fs_attr a;
	int r = fs_symlink(req_fs(req), parent, name, link, c->uid, c->gid, &a);

	if (r)
		fuse_reply_err(req, -r);
	else
		reply_entry(req, &a);
}

/* CREATE, UNLINK and RELEASE are served on the issuer thread (fuse_loop.c)
 * when nothing in them would wait (fs_create_nowait and the others); the
 * rest is handed to a worker as this job, with what the request said. */
struct ns_job {
	struct vmfsd_fuse_job job;
	fuse_req_t req;
	fuse_ino_t ino;         /* the parent (CREATE, UNLINK) or the file */
	mode_t mode;
	struct fuse_file_info fi;
	char name[];
};

/* Queues RUN for a worker; on failure (no memory) the request fails: the
 * issuer may not wait. */
static void ns_defer(fuse_req_t req, void (*run)(struct vmfsd_fuse_job *), fuse_ino_t ino,
		     const char *name, mode_t mode, const struct fuse_file_info *fi)
{
	size_t len = name ? strlen(name) + 1 : 0;
	struct ns_job *j = malloc(sizeof(*j) + len);

	if (!j) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	j->job.run = run;
	j->req = req;
	j->ino = ino;
	j->mode = mode;
	if (fi)
		j->fi = *fi;
	if (name)
		memcpy(j->name, name, len);
	if (vmfsd_fuse_defer(&j->job)) {
		free(j);
		fuse_reply_err(req, ENOMEM);
	}
}

static void unlink_job_run(struct vmfsd_fuse_job *job)
{
	struct ns_job *j = (struct ns_job *)job;

	fuse_reply_err(j->req, -fs_unlink(req_fs(j->req), j->ino, j->name));
	free(j);
}

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	bool nowait = bdev_aio_on_issuer();
	int r = (nowait ? fs_unlink_nowait : fs_unlink)(req_fs(req), parent, name);

	if (r == -EAGAIN && nowait)
		ns_defer(req, unlink_job_run, parent, name, 0, NULL);
	else
		fuse_reply_err(req, -r);
}

static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	fuse_reply_err(req, -fs_rmdir(req_fs(req), parent, name));
}

static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name,
		      fuse_ino_t newparent, const char *newname, unsigned int flags)
{
	fuse_reply_err(req, -fs_rename(req_fs(req), parent, name, newparent, newname, flags));
}

static void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
	struct fs_attr a;
	int r = fs_link(req_fs(req), ino, newparent, newname, &a);

	if (r)
		fuse_reply_err(req, -r);
	else
		reply_entry(req, &a);
}

/* keep_cache: the kernel drops the file's cached pages at an open unless
 * this host's lock kept every other writer out since they were cached, so
 * they never outlive another host's writes in between. */
static void set_open_flags(struct fuse_file_info *fi, const struct fs_file *f)
{
	fi->direct_io = !fs_file_cached(f);
	fi->keep_cache = fs_file_keep_cache(f);
	fi->noflush = 0;
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = req_fs(req);
	struct fs_file *f;
	int r = fs_open(fs, ino, fi->flags, &f);

	if (r) {
		fuse_reply_err(req, -r);
		return;
	}
	fi->fh = (uint64_t)(uintptr_t)f;
	set_open_flags(fi, f);
	/* The kernel may hold attributes up to ATTR_TIMEOUT old, and a cached
	 * read trusts its size: another host may have grown the file since.
	 * The open took the lock and read the inode fresh: make the kernel
	 * ask again.  (Attributes only: no page work, no inode lock.)  Not
	 * where the pages stay: nobody else changed the file since. */
	if (!fi->direct_io && !fi->keep_cache && session)
		(void)fuse_lowlevel_notify_inval_inode(session, ino, -1, 0);
	if (fuse_reply_open(req, fi) == -ENOENT)
		fs_release(fs, f);      /* the opener was interrupted (REQ is gone) */
}

static void do_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		      struct fuse_file_info *fi, bool nowait);

static void create_job_run(struct vmfsd_fuse_job *job)
{
	struct ns_job *j = (struct ns_job *)job;

	do_create(j->req, j->ino, j->name, j->mode, &j->fi, false);
	free(j);
}

/* A create can name a file that exists: the kernel sends CREATE whenever
 * its entry for the name is negative, and on a cluster that entry can be
 * stale (another host created the name since).  fs_create then opens the
 * existing file as open(2) would; it needs the caller's groups for that.
 * NOWAIT: on the issuer, what would wait goes to a worker. */
static void do_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		      struct fuse_file_info *fi, bool nowait)
{
	const struct fuse_ctx *c = fuse_req_ctx(req);
	struct fs_cred cred = { .uid = c->uid, .gid = c->gid };
	gid_t groups[64];
	uint32_t g32[64];
	struct fuse_entry_param e;
	struct fs *fs = req_fs(req);
	struct fs_file *f;
	struct fs_attr a;
	bool held;
	int r;

	if (c->uid != 0 && !(fi->flags & O_EXCL)) {
		int n = fuse_req_getgroups(req, 64, groups), i;

		n = n < 0 ? 0 : n > 64 ? 64 : n;
		for (i = 0; i < n; i++)
			g32[i] = groups[i];
		cred.groups = g32;
		cred.ngroups = n;
	}
	r = (nowait ? fs_create_nowait : fs_create)(fs, parent, name, mode & ~c->umask, &cred,
						    fi->flags, &a, &f);
	if (r == -EAGAIN && nowait) {
		ns_defer(req, create_job_run, parent, name, mode, fi);
		return;
	}
	if (r) {
		fuse_reply_err(req, -r);
		return;
	}
	fi->fh = (uint64_t)(uintptr_t)f;
	set_open_flags(fi, f);
	held = entry_of(req, &a, &e);
	r = fuse_reply_create(req, &e, fi);
	cache_unhold(fs, held);
	if (r == -ENOENT) {
		fs_release(fs, f);
		fs_forget(fs, a.ino, 1);
	}
}

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		      struct fuse_file_info *fi)
{
	do_create(req, parent, name, mode, fi, bdev_aio_on_issuer());
}

static struct fs_file *fh(struct fuse_file_info *fi)
{
	return (struct fs_file *)(uintptr_t)fi->fh;
}

static void read_done(void *arg, ssize_t res, const void *data)
{
	fuse_req_t req = arg;

	if (res < 0)
		fuse_reply_err(req, (int)-res);
	else
		fuse_reply_buf(req, data, (size_t)res);
}

static void write_done(void *arg, ssize_t res, const void *data)
{
	fuse_req_t req = arg;

	(void)data;
	if (res < 0)
		fuse_reply_err(req, (int)-res);
	else
		fuse_reply_write(req, (size_t)res);
}

/* A READ or WRITE that the issuer thread (fuse_loop.c) cannot serve
 * without waiting, handed to a worker with what the request said. */
struct rw_job {
	struct vmfsd_fuse_job job;
	fuse_req_t req;
	fuse_ino_t ino;
	size_t size;
	off_t off;
	struct fuse_file_info fi;
	const char *buf;        /* a WRITE's payload: in DATA or lent */
	void *lent;             /* vmfsd_fuse_take_buf's handle, or NULL */
	char data[];
};

/* A WRITE whose payload the device writes in place from the receive
 * buffer (FS_IO_LEND): the buffer goes back when the write is done. */
struct lent_write {
	fuse_req_t req;
	void *lent;
};

/* Writes this large are worth lending the receive buffer for: a 1 MiB
 * copy costs ~0.2 ms of the issuer's time here, a 4 KiB one less than the
 * hand-over of a buffer. */
#define LEND_MIN (64 * 1024)

static void do_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi, bool nowait);
static void do_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size,
		     off_t off, struct fuse_file_info *fi, bool nowait);

static void read_job_run(struct vmfsd_fuse_job *j)
{
	struct rw_job *w = (struct rw_job *)j;

	do_read(w->req, w->ino, w->size, w->off, &w->fi, false);
	free(w);
}

static void write_job_run(struct vmfsd_fuse_job *j)
{
	struct rw_job *w = (struct rw_job *)j;

	do_write(w->req, w->ino, w->buf, w->size, w->off, &w->fi, false);
	vmfsd_fuse_put_buf(w->lent);
	free(w);
}

/* Hands the request to a worker, with the lent receive buffer LENT if
 * there is one (else a copy of a WRITE's payload); false if it could not
 * (no memory: the caller fails the request, it may not wait on the issuer
 * thread; LENT is still the caller's then). */
static bool rw_defer(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size,
		     off_t off, struct fuse_file_info *fi, void *lent)
{
	struct rw_job *w = malloc(sizeof(*w) + (buf && !lent ? size : 0));

	if (!w)
		return false;
	w->job.run = buf ? write_job_run : read_job_run;
	w->req = req;
	w->ino = ino;
	w->size = size;
	w->off = off;
	w->fi = *fi;
	w->lent = lent;
	w->buf = lent ? buf : w->data;
	if (buf && !lent)
		memcpy(w->data, buf, size);
	if (vmfsd_fuse_defer(&w->job)) {
		free(w);
		return false;
	}
	return true;
}

static void lent_write_done(void *arg, ssize_t res, const void *data)
{
	struct lent_write *lw = arg;

	write_done(lw->req, res, data);
	vmfsd_fuse_put_buf(lw->lent);
	free(lw);
}

/* Reads and overwrites of allocated data go asynchronous: the thread that
 * received the request submits and goes on, the completion replies.  On
 * the issuer thread (NOWAIT) whatever would wait goes to a worker. */
static void do_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi, bool nowait)
{
	size_t doff, cap = 0;
	void *buf, *room = nowait ? vmfsd_fuse_reply_room(&cap) : NULL;
	ssize_t n;
	int r;

	/* through io_uring, the device reads into the reply's own buffer */
	r = fs_read_start(req_fs(req), fh(fi), room, cap, size, (uint64_t)off, read_done, req,
			  (nowait ? FS_IO_NOWAIT : 0) | (room ? FS_IO_LEND : 0));
	if (r == 0)
		return;
	if (r == -EAGAIN && nowait) {
		if (!rw_defer(req, ino, NULL, size, off, fi, NULL))
			fuse_reply_err(req, ENOMEM);    /* never wait on the issuer */
		return;
	}
	if (r != -EAGAIN) {
		fuse_reply_err(req, -r);
		return;
	}
	n = fs_read_buf(req_fs(req), fh(fi), size, (uint64_t)off, &buf, &doff);
	if (n < 0)
		fuse_reply_err(req, (int)-n);
	else
		fuse_reply_buf(req, n ? (char *)buf + doff : NULL, (size_t)n);
	bdev_free(buf);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	do_read(req, ino, size, off, fi, bdev_aio_on_issuer());
}

static void do_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size,
		     off_t off, struct fuse_file_info *fi, bool nowait)
{
	struct lent_write *lw = NULL;
	void *lent = NULL;
	ssize_t n;
	int r;

	/* On the issuer, a large write's data goes to the device from the
	 * receive buffer itself (or to the worker that takes the request). */
	if (nowait && size >= LEND_MIN && !((uintptr_t)buf & 511))
		lent = vmfsd_fuse_take_buf(buf, size);
	/* A write clears set-user-ID and set-group-ID unless the writer has
	 * CAP_FSETID (POSIX; Linux's file_remove_privs).  The kernel does it
	 * itself for page-cache writes but leaves direct I/O writes to us,
	 * with a flag libfuse 3.14 does not pass on: a caller other than root
	 * stands for "no CAP_FSETID".  Write-back of mmap'ed pages
	 * (writepage) runs as the kernel, not as the writer: the kernel
	 * cleared the bits when the page was first written.  Clearing them is
	 * an inode update: not on the issuer thread. */
	if (!fi->writepage && fuse_req_ctx(req)->uid != 0) {
		if (nowait) {
			r = rw_defer(req, ino, buf, size, off, fi, lent) ? 0 : -ENOMEM;
			goto out_nowait;
		}
		r = fs_file_kill_suid(req_fs(req), fh(fi));
		if (r) {
			fuse_reply_err(req, -r);
			return;
		}
	}
	if (lent) {
		lw = malloc(sizeof(*lw));
		if (lw) {
			lw->req = req;
			lw->lent = lent;
		} else {
			vmfsd_fuse_put_buf(lent);       /* copy it after all */
			lent = NULL;
		}
	}
	if (lw)
		r = fs_write_start(req_fs(req), fh(fi), buf, size, (uint64_t)off, lent_write_done,
				   lw, FS_IO_NOWAIT | FS_IO_LEND);
	else
		r = fs_write_start(req_fs(req), fh(fi), buf, size, (uint64_t)off, write_done,
				   req, nowait ? FS_IO_NOWAIT : 0);
	if (r == 0)
		return;
	free(lw);
	if (r == -EAGAIN && nowait) {
		r = rw_defer(req, ino, buf, size, off, fi, lent) ? 0 : -ENOMEM;
		goto out_nowait;
	}
	vmfsd_fuse_put_buf(lent);
	if (r != -EAGAIN) {
		fuse_reply_err(req, -r);
		return;
	}
	n = fs_write(req_fs(req), fh(fi), buf, size, (uint64_t)off);
	if (n < 0)
		fuse_reply_err(req, (int)-n);
	else
		fuse_reply_write(req, (size_t)n);
	return;
out_nowait:
	/* never wait on the issuer: a request no worker could take fails */
	if (r) {
		vmfsd_fuse_put_buf(lent);
		fuse_reply_err(req, -r);
	}
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size,
		     off_t off, struct fuse_file_info *fi)
{
	do_write(req, ino, buf, size, off, fi, bdev_aio_on_issuer());
}

static void release_job_run(struct vmfsd_fuse_job *job)
{
	struct ns_job *j = (struct ns_job *)job;

	fuse_reply_err(j->req, -fs_release(req_fs(j->req), fh(&j->fi)));
	free(j);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	bool nowait = bdev_aio_on_issuer();
	int r = (nowait ? fs_release_nowait : fs_release)(req_fs(req), fh(fi));

	if (r == -EAGAIN && nowait)
		ns_defer(req, release_job_run, ino, NULL, 0, fi);
	else
		fuse_reply_err(req, -r);
}

static void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	(void)ino;
	fuse_reply_err(req, -fs_fsync(req_fs(req), fh(fi), datasync));
}

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs_dir *d;
	int r = fs_opendir(req_fs(req), ino, &d);

	if (r) {
		fuse_reply_err(req, -r);
		return;
	}
	fi->fh = (uint64_t)(uintptr_t)d;
	if (fuse_reply_open(req, fi) == -ENOENT)
		fs_closedir(d);
}

static void do_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi, int plus)
{
	struct fs_dir *d = (struct fs_dir *)(uintptr_t)fi->fh;
	struct fs *fs = req_fs(req);
	char *buf = malloc(size);
	size_t used = 0;
	uint64_t idx;

	(void)ino;
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	for (idx = (uint64_t)off;; idx++) {
		struct fs_dirent de;
		size_t n;

		if (fs_dir_entry(d, idx, &de))
			break;
		if (plus) {
			struct fuse_entry_param e;
			struct fs_attr a;
			bool dot = !strcmp(de.name, ".") || !strcmp(de.name, "..");

			memset(&e, 0, sizeof(e));
			if (!dot) {
				/* Takes a lookup reference, as readdirplus must. */
				if (fs_lookup(fs, d ? fs_dir_ino(d) : ino, de.name, &a))
					continue;       /* removed meanwhile */
				e.ino = a.ino;
				e.generation = a.generation;
				attr_to_stat(&a, &e.attr);
				e.attr_timeout = ATTR_TIMEOUT;
				e.entry_timeout = ENTRY_TIMEOUT;
			} else {
				e.attr.st_ino = de.ino;
				e.attr.st_mode = S_IFDIR;
			}
			n = fuse_add_direntry_plus(req, buf + used, size - used, de.name, &e,
						   (off_t)(idx + 1));
			if (n > size - used) {
				if (!dot)
					fs_forget(fs, a.ino, 1);
				break;
			}
		} else {
			struct stat st;

			memset(&st, 0, sizeof(st));
			st.st_ino = de.ino;
			st.st_mode = (mode_t)de.type << 12;
			n = fuse_add_direntry(req, buf + used, size - used, de.name, &st,
					      (off_t)(idx + 1));
			if (n > size - used)
				break;
		}
		used += n;
	}
	fuse_reply_buf(req, buf, used);
	free(buf);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	do_readdir(req, ino, size, off, fi, 0);
}

static void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			   struct fuse_file_info *fi)
{
	do_readdir(req, ino, size, off, fi, 1);
}

static void op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	fs_closedir((struct fs_dir *)(uintptr_t)fi->fh);
	fuse_reply_err(req, 0);
}

static void op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync,
			struct fuse_file_info *fi)
{
	(void)ino;
	(void)datasync;
	(void)fi;
	/* Namespace changes are committed when made; make them durable. */
	fuse_reply_err(req, -fs_sync(req_fs(req)));
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct statvfs st;
	int r = fs_statfs(req_fs(req), &st);

	(void)ino;
	if (r)
		fuse_reply_err(req, -r);
	else
		fuse_reply_statfs(req, &st);
}

static void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
			size_t size, int flags)
{
	int r = fs_setxattr(req_fs(req), ino, name, value, size, flags);

	/* After a lock handover another host writes the file: drop what the
	 * page cache holds of it here (reads through cached descriptors fail
	 * from now on, fs_read_buf). */
	if (!r && session && !strcmp(name, FS_XATTR_HANDOVER))
		(void)fuse_lowlevel_notify_inval_inode(session, ino, 0, 0);
	fuse_reply_err(req, -r);
}

static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	char *buf = size ? malloc(size) : NULL;
	int r;

	if (size && !buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	r = fs_getxattr(req_fs(req), ino, name, buf, size);
	if (r < 0)
		fuse_reply_err(req, -r);
	else if (!size)
		fuse_reply_xattr(req, (size_t)r);
	else
		fuse_reply_buf(req, buf, (size_t)r);
	free(buf);
}

static void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	char *buf = size ? malloc(size) : NULL;
	int r;

	if (size && !buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	r = fs_listxattr(req_fs(req), ino, buf, size);
	if (r < 0)
		fuse_reply_err(req, -r);
	else if (!size)
		fuse_reply_xattr(req, (size_t)r);
	else
		fuse_reply_buf(req, buf, (size_t)r);
	free(buf);
}

static void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	fuse_reply_err(req, -fs_removexattr(req_fs(req), ino, name));
}

static void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset,
			 off_t length, struct fuse_file_info *fi)
{
	(void)ino;
	if (offset < 0 || length <= 0) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	fuse_reply_err(req, -fs_fallocate(req_fs(req), fh(fi), mode, (uint64_t)offset,
					  (uint64_t)length));
}

static void op_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence,
		     struct fuse_file_info *fi)
{
	int64_t r;

	(void)ino;
	r = fs_lseek(req_fs(req), fh(fi), off, whence);
	if (r < 0)
		fuse_reply_err(req, (int)-r);
	else
		fuse_reply_lseek(req, (off_t)r);
}

/* No .flush: writes reach the disk before write(2) returns, so a close has
 * nothing to flush here, and libfuse's ENOSYS makes the kernel stop sending
 * FLUSH (one round trip less per close; the kernel still writes a shared
 * mapping's dirty pages back at close before it would have sent it). */
static const struct fuse_lowlevel_ops ops = {
	.init = op_init,
	.lookup = op_lookup,
	.forget = op_forget,
	.forget_multi = op_forget_multi,
	.getattr = op_getattr,
	.setattr = op_setattr,
	.readlink = op_readlink,
	.mknod = op_mknod,
	.mkdir = op_mkdir,
	.symlink = op_symlink,
	.unlink = op_unlink,
	.rmdir = op_rmdir,
	.rename = op_rename,
	.link = op_link,
	.open = op_open,
	.create = op_create,
	.read = op_read,
	.write = op_write,
	.release = op_release,
	.fsync = op_fsync,
	.opendir = op_opendir,
	.readdir = op_readdir,
	.readdirplus = op_readdirplus,
	.releasedir = op_releasedir,
	.fsyncdir = op_fsyncdir,
	.statfs = op_statfs,
	.setxattr = op_setxattr,
	.getxattr = op_getxattr,
	.listxattr = op_listxattr,
	.removexattr = op_removexattr,
	.fallocate = op_fallocate,
	.lseek = op_lseek,
};

const struct fuse_lowlevel_ops *vmfsd_fuse_ops(void)
{
	return &ops;
}
