// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * fuse_floor: the least work a /dev/fuse daemon can do for the benchmark's
 * workloads, so that bench/run.sh (section "floor") can say what the FUSE
 * transport alone allows on this machine next to what vmfsd reaches.
 *
 * An in-memory filesystem on the libfuse 3.14 low-level API, served by
 * libfuse's multi-threaded loop (fuse_session_loop_mt) or, with -s, by its
 * single-threaded one.  No device I/O at all.  It faces the kernel exactly
 * as vmfsd does (fuse/fuse_ops.c, vmfsd/main.c): default_permissions
 * (allow_other as root), 1 s entry, negative-entry and attribute timeouts,
 * max_write 1 MiB, max_background 128, async direct I/O, parallel dirops,
 * no writeback cache, no splice (fuse/fuse_conn.h, shared with vmfsd), no
 * FLUSH (ENOSYS: the kernel stops sending it); direct_io for O_DIRECT opens, the page
 * cache (keep_cache 0, write-through, attributes invalidated at open)
 * otherwise; GETXATTR answered ENODATA (a filesystem with extended
 * attributes: the kernel keeps asking for security.capability on writes,
 * as it does vmfsd); the same operations present, so libfuse negotiates
 * the same capabilities (readdirplus; no locks, no copy_file_range).
 *
 * Data: files made through the mount keep their bytes in memory (up to
 * SMALL_MAX each).  One "sink" file, /big, exists from the start with the
 * size given by --big-size: its reads return zeros and its writes are
 * accepted and dropped (the size grows if a write ends past it), so fio
 * can run on a file of gigabytes without memory spent.
 *
 * Every request is counted per operation; SIGUSR1 writes the counters to
 * the --stats file (replaced atomically, with a sequence number) and the
 * final counts go to stderr (and the file) at unmount.
 *
 * Invariants: one mutex (big_lock) guards every node and the name table; a
 * node lives while it has a name (nlink > 0), kernel lookup references
 * (nlookup) or open handles, and is freed by the last of the three to go;
 * a node's FUSE inode number is its address (the root's is 1).
 *
 * Written for this project from the libfuse headers (fuse_lowlevel.h);
 * no code from libfuse's examples or elsewhere.
 */
#define FUSE_USE_VERSION 314
#include <fuse_lowlevel.h>

#include "fuse/fuse_conn.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define PROG "fuse_floor"

/* Entry, negative-entry and attribute timeouts: by default vmfsd's (one
 * second, fuse/fuse_ops.c: its cross-host coherency bound), so the floor
 * makes the kernel ask as often as vmfsd makes it.  --timeout changes
 * them, to show what caching for longer would buy. */
static double cache_timeout = 1.0;
#define ATTR_TIMEOUT cache_timeout
#define ENTRY_TIMEOUT cache_timeout

/* vmfsd/main.c's libfuse loop settings. */
#define MAX_THREADS 96
#define IDLE_THREADS 16

/* A file made through the mount holds at most this much in memory; a
 * write past it fails with EFBIG (the workloads write 100 bytes). */
#define SMALL_MAX (64u << 20)

/* The largest READ the kernel sends with max_write 1 MiB: libfuse then
 * negotiates max_pages = 256 (1 MiB of 4 KiB pages). */
#define ZERO_LEN (1u << 20)
static char zeros[ZERO_LEN];

/* ------------------------------------------------------------ counters */

enum op {
	C_INIT, C_LOOKUP, C_FORGET, C_BATCH_FORGET, C_GETATTR, C_SETATTR, C_MKDIR,
	C_UNLINK, C_RMDIR, C_OPEN, C_CREATE, C_READ, C_WRITE, C_RELEASE,
	C_FSYNC, C_OPENDIR, C_READDIR, C_READDIRPLUS, C_RELEASEDIR, C_FSYNCDIR,
	C_STATFS, C_GETXATTR, C_LISTXATTR, C_SETXATTR, C_REMOVEXATTR, C_NOPS
};

static const char *const op_name[C_NOPS] = {
	"INIT", "LOOKUP", "FORGET", "BATCH_FORGET", "GETATTR", "SETATTR", "MKDIR",
	"UNLINK", "RMDIR", "OPEN", "CREATE", "READ", "WRITE", "RELEASE",
	"FSYNC", "OPENDIR", "READDIR", "READDIRPLUS", "RELEASEDIR", "FSYNCDIR",
	"STATFS", "GETXATTR", "LISTXATTR", "SETXATTR", "REMOVEXATTR",
};

static atomic_uint_fast64_t counts[C_NOPS];
static const char *stats_path;
static pthread_mutex_t stats_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned long stats_seq;         /* under stats_lock */

static void count(enum op o)
{
	atomic_fetch_add_explicit(&counts[o], 1, memory_order_relaxed);
}

static void print_counts(FILE *f)
{
	uint64_t total = 0;
	int i;

	for (i = 0; i < C_NOPS; i++) {
		uint64_t n = atomic_load_explicit(&counts[i], memory_order_relaxed);

		if (n)
			fprintf(f, "%s %" PRIu64 "\n", op_name[i], n);
		total += n;
	}
	fprintf(f, "TOTAL %" PRIu64 "\n", total);
}

/* Writes the counters to stats_path through a temporary name and rename,
 * so a reader never sees half a file; "seq N" last tells it which dump. */
static void dump_stats(void)
{
	char tmp[4096];
	FILE *f;

	if (!stats_path)
		return;
	snprintf(tmp, sizeof(tmp), "%s.tmp", stats_path);
	pthread_mutex_lock(&stats_lock);
	f = fopen(tmp, "w");
	if (f) {
		print_counts(f);
		fprintf(f, "seq %lu\n", ++stats_seq);
	}
	if (!f || fclose(f) || rename(tmp, stats_path))
		fprintf(stderr, PROG ": %s: %s\n", stats_path, strerror(errno));
	pthread_mutex_unlock(&stats_lock);
}

/* SIGUSR1 is blocked in every thread; this one takes it synchronously, so
 * the dump runs in a normal context. */
static void *stats_thread(void *arg)
{
	sigset_t *set = arg;
	int sig;

	for (;;)
		if (sigwait(set, &sig) == 0 && sig == SIGUSR1)
			dump_stats();
	return NULL;
}

/* --------------------------------------------------------------- nodes */

struct node {
	mode_t mode;
	uid_t uid;
	gid_t gid;
	nlink_t nlink;
	uint64_t size;
	uint64_t generation;
	struct timespec atime, mtime, ctime;
	struct node *parent;    /* NULL once unlinked (and for the root) */
	char *name;
	struct node *hnext;     /* chain in the name table */
	uint64_t nlookup;       /* the kernel's references (LOOKUP..FORGET) */
	unsigned opens;
	bool sink;              /* /big: zeros on read, writes dropped */
	char *data;             /* regular files that are not the sink */
	size_t cap;
};

static pthread_mutex_t big_lock = PTHREAD_MUTEX_INITIALIZER;
static struct node root;
static uint64_t next_generation = 1;
static struct fuse_session *session;

/* The name table: (parent, name) -> child, chained, doubled when full. */
static struct node **table;
static size_t table_size, table_used;

static size_t name_hash(const struct node *parent, const char *name)
{
	uint64_t h = 1469598103934665603ull ^ (uint64_t)(uintptr_t)parent;

	for (; *name; name++)
		h = (h ^ (unsigned char)*name) * 1099511628211ull;
	return (size_t)(h ^ (h >> 29));
}

static struct node *find(const struct node *parent, const char *name)
{
	struct node *n;

	for (n = table[name_hash(parent, name) & (table_size - 1)]; n; n = n->hnext)
		if (n->parent == parent && !strcmp(n->name, name))
			return n;
	return NULL;
}

static int table_grow(void)
{
	size_t size = table_size ? table_size * 2 : 1024, i;
	struct node **t = calloc(size, sizeof(*t));

	if (!t)
		return -ENOMEM;
	for (i = 0; i < table_size; i++) {
		struct node *n = table[i], *next;

		for (; n; n = next) {
			size_t h = name_hash(n->parent, n->name) & (size - 1);

			next = n->hnext;
			n->hnext = t[h];
			t[h] = n;
		}
	}
	free(table);
	table = t;
	table_size = size;
	return 0;
}

static int link_name(struct node *parent, struct node *n, const char *name)
{
	size_t h;

	if (table_used >= table_size && table_grow())
		return -ENOMEM;
	n->name = strdup(name);
	if (!n->name)
		return -ENOMEM;
	n->parent = parent;
	h = name_hash(parent, name) & (table_size - 1);
	n->hnext = table[h];
	table[h] = n;
	table_used++;
	return 0;
}

static void unlink_name(struct node *n)
{
	struct node **p = &table[name_hash(n->parent, n->name) & (table_size - 1)];

	while (*p != n)
		p = &(*p)->hnext;
	*p = n->hnext;
	table_used--;
	n->parent = NULL;
	free(n->name);
	n->name = NULL;
}

static void now(struct timespec *ts)
{
	clock_gettime(CLOCK_REALTIME, ts);
}

static struct node *node_of(fuse_ino_t ino)
{
	return ino == FUSE_ROOT_ID ? &root : (struct node *)(uintptr_t)ino;
}

static fuse_ino_t ino_of(const struct node *n)
{
	return n == &root ? FUSE_ROOT_ID : (fuse_ino_t)(uintptr_t)n;
}

static void maybe_free(struct node *n)
{
	if (n == &root || n->nlink || n->nlookup || n->opens)
		return;
	free(n->data);
	free(n);
}

static struct node *new_node(mode_t mode, uid_t uid, gid_t gid)
{
	struct node *n = calloc(1, sizeof(*n));

	if (!n)
		return NULL;
	n->mode = mode;
	n->uid = uid;
	n->gid = gid;
	n->nlink = S_ISDIR(mode) ? 2 : 1;
	n->generation = next_generation++;
	now(&n->mtime);
	n->atime = n->ctime = n->mtime;
	return n;
}

static void to_stat(const struct node *n, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = ino_of(n);
	st->st_mode = n->mode;
	st->st_nlink = n->nlink;
	st->st_uid = n->uid;
	st->st_gid = n->gid;
	st->st_size = (off_t)n->size;
	st->st_blksize = 4096;
	st->st_blocks = (blkcnt_t)((n->size + 511) / 512);
	st->st_atim = n->atime;
	st->st_mtim = n->mtime;
	st->st_ctim = n->ctime;
}

/* Fills E for N and takes one lookup reference (the reply gives it to the
 * kernel); called with big_lock held. */
static void entry_of(struct node *n, struct fuse_entry_param *e)
{
	memset(e, 0, sizeof(*e));
	e->ino = ino_of(n);
	e->generation = n->generation;
	to_stat(n, &e->attr);
	e->attr_timeout = ATTR_TIMEOUT;
	e->entry_timeout = ENTRY_TIMEOUT;
	n->nlookup++;
}

/* The kernel did not take the reference a reply carried (interrupted). */
static void drop_lookup(struct node *n)
{
	pthread_mutex_lock(&big_lock);
	n->nlookup--;
	maybe_free(n);
	pthread_mutex_unlock(&big_lock);
}

/* ---------------------------------------------------------- operations */

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	(void)userdata;
	count(C_INIT);
	vmfsd_fuse_conn_init(conn);     /* what vmfsd asks for */
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fuse_entry_param e;
	struct node *n;

	count(C_LOOKUP);
	pthread_mutex_lock(&big_lock);
	n = find(node_of(parent), name);
	if (n)
		entry_of(n, &e);
	pthread_mutex_unlock(&big_lock);
	if (!n) {
		/* negative entry, cached as long as a positive one (vmfsd) */
		memset(&e, 0, sizeof(e));
		e.entry_timeout = ENTRY_TIMEOUT;
		fuse_reply_entry(req, &e);
		return;
	}
	if (fuse_reply_entry(req, &e) == -ENOENT)
		drop_lookup(n);
}

static void forget_one(fuse_ino_t ino, uint64_t nlookup)
{
	struct node *n = node_of(ino);

	n->nlookup -= nlookup < n->nlookup ? nlookup : n->nlookup;
	maybe_free(n);
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	count(C_FORGET);
	pthread_mutex_lock(&big_lock);
	forget_one(ino, nlookup);
	pthread_mutex_unlock(&big_lock);
	fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t n, struct fuse_forget_data *f)
{
	size_t i;

	count(C_BATCH_FORGET);
	pthread_mutex_lock(&big_lock);
	for (i = 0; i < n; i++)
		forget_one(f[i].ino, f[i].nlookup);
	pthread_mutex_unlock(&big_lock);
	fuse_reply_none(req);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct stat st;

	(void)fi;
	count(C_GETATTR);
	pthread_mutex_lock(&big_lock);
	to_stat(node_of(ino), &st);
	pthread_mutex_unlock(&big_lock);
	fuse_reply_attr(req, &st, ATTR_TIMEOUT);
}

/* Sets a regular file's size; called with big_lock held. */
static int resize(struct node *n, uint64_t size)
{
	if (!n->sink) {
		if (size > SMALL_MAX)
			return -EFBIG;
		if (size > n->cap) {
			size_t cap = n->cap ? n->cap : 256;
			char *d;

			while (cap < size)
				cap *= 2;
			d = realloc(n->data, cap);
			if (!d)
				return -ENOMEM;
			memset(d + n->cap, 0, cap - n->cap);
			n->data = d;
			n->cap = cap;
		}
		if (size < n->size)
			memset(n->data + size, 0, n->size - size);
	}
	n->size = size;
	return 0;
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
		       struct fuse_file_info *fi)
{
	struct node *n = node_of(ino);
	struct stat st;
	int r = 0;

	(void)fi;
	count(C_SETATTR);
	pthread_mutex_lock(&big_lock);
	if (to_set & FUSE_SET_ATTR_SIZE) {
		r = S_ISREG(n->mode) ? resize(n, (uint64_t)attr->st_size) : -EISDIR;
		if (!r)
			now(&n->mtime);
	}
	if (!r) {
		if (to_set & FUSE_SET_ATTR_MODE)
			n->mode = (n->mode & S_IFMT) | (attr->st_mode & 07777);
		if (to_set & FUSE_SET_ATTR_UID)
			n->uid = attr->st_uid;
		if (to_set & FUSE_SET_ATTR_GID)
			n->gid = attr->st_gid;
		if (to_set & FUSE_SET_ATTR_ATIME)
			n->atime = attr->st_atim;
		if (to_set & FUSE_SET_ATTR_ATIME_NOW)
			now(&n->atime);
		if (to_set & FUSE_SET_ATTR_MTIME)
			n->mtime = attr->st_mtim;
		if (to_set & FUSE_SET_ATTR_MTIME_NOW)
			now(&n->mtime);
		now(&n->ctime);
		to_stat(n, &st);
	}
	pthread_mutex_unlock(&big_lock);
	if (r)
		fuse_reply_err(req, -r);
	else
		fuse_reply_attr(req, &st, ATTR_TIMEOUT);
}

/* Makes PARENT/NAME with MODE for the request's caller; with big_lock
 * held.  *OUT gets the node, with the entry's lookup reference in E. */
static int make(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		struct fuse_entry_param *e, struct node **out)
{
	const struct fuse_ctx *c = fuse_req_ctx(req);
	struct node *p = node_of(parent), *n;

	if (!S_ISDIR(p->mode) || (p != &root && !p->parent))
		return -ENOENT;
	if (find(p, name))
		return -EEXIST;
	n = new_node(mode & ~c->umask, c->uid, c->gid);
	if (!n)
		return -ENOMEM;
	if (link_name(p, n, name)) {
		free(n);
		return -ENOMEM;
	}
	if (S_ISDIR(mode))
		p->nlink++;
	p->mtime = p->ctime = n->ctime;
	entry_of(n, e);
	*out = n;
	return 0;
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	struct fuse_entry_param e;
	struct node *n;
	int r;

	count(C_MKDIR);
	pthread_mutex_lock(&big_lock);
	r = make(req, parent, name, S_IFDIR | (mode & 07777), &e, &n);
	pthread_mutex_unlock(&big_lock);
	if (r)
		fuse_reply_err(req, -r);
	else if (fuse_reply_entry(req, &e) == -ENOENT)
		drop_lookup(n);
}

static int remove_name(fuse_ino_t parent, const char *name, bool dir)
{
	struct node *p = node_of(parent), *n = find(p, name);
	size_t i;

	if (!n)
		return -ENOENT;
	if (dir != !!S_ISDIR(n->mode))
		return dir ? -ENOTDIR : -EISDIR;
	if (dir) {
		/* empty: no name in the table has it as parent */
		for (i = 0; i < table_size; i++) {
			struct node *c;

			for (c = table[i]; c; c = c->hnext)
				if (c->parent == n)
					return -ENOTEMPTY;
		}
		p->nlink--;
	}
	unlink_name(n);
	n->nlink = 0;
	now(&n->ctime);
	p->mtime = p->ctime = n->ctime;
	maybe_free(n);
	return 0;
}

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	int r;

	count(C_UNLINK);
	pthread_mutex_lock(&big_lock);
	r = remove_name(parent, name, false);
	pthread_mutex_unlock(&big_lock);
	fuse_reply_err(req, -r);
}

static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	int r;

	count(C_RMDIR);
	pthread_mutex_lock(&big_lock);
	r = remove_name(parent, name, true);
	pthread_mutex_unlock(&big_lock);
	fuse_reply_err(req, -r);
}

/* vmfsd's rule (fuse/fuse_ops.c set_open_flags): direct_io when the opener
 * asked for O_DIRECT, else the page cache, dropped at every open. */
static void set_open_flags(struct fuse_file_info *fi)
{
	fi->direct_io = !!(fi->flags & O_DIRECT);
	fi->keep_cache = 0;
	fi->noflush = 0;
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct node *n = node_of(ino);
	int r = 0;

	count(C_OPEN);
	pthread_mutex_lock(&big_lock);
	if (S_ISDIR(n->mode))
		r = -EISDIR;
	else if ((fi->flags & O_TRUNC) && (fi->flags & O_ACCMODE) != O_RDONLY)
		r = resize(n, 0);       /* atomic_o_trunc: libfuse's default */
	if (!r)
		n->opens++;
	pthread_mutex_unlock(&big_lock);
	if (r) {
		fuse_reply_err(req, -r);
		return;
	}
	set_open_flags(fi);
	/* vmfsd makes the kernel fetch the attributes again after a cached
	 * open (the size may have changed on another host): the same here */
	if (!fi->direct_io && session)
		(void)fuse_lowlevel_notify_inval_inode(session, ino, -1, 0);
	if (fuse_reply_open(req, fi) == -ENOENT) {
		pthread_mutex_lock(&big_lock);
		n->opens--;
		maybe_free(n);
		pthread_mutex_unlock(&big_lock);
	}
}

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		      struct fuse_file_info *fi)
{
	struct fuse_entry_param e;
	struct node *n;
	int r;

	count(C_CREATE);
	pthread_mutex_lock(&big_lock);
	n = find(node_of(parent), name);
	if (n) {
		/* a stale negative entry: open the file as open(2) would
		 * (vmfsd's fs_create does the same) */
		if (fi->flags & O_EXCL)
			r = -EEXIST;
		else if (S_ISDIR(n->mode))
			r = -EISDIR;
		else
			r = (fi->flags & O_TRUNC) ? resize(n, 0) : 0;
		if (!r)
			entry_of(n, &e);
	} else {
		r = make(req, parent, name, S_IFREG | (mode & 07777), &e, &n);
	}
	if (!r)
		n->opens++;
	pthread_mutex_unlock(&big_lock);
	if (r) {
		fuse_reply_err(req, -r);
		return;
	}
	set_open_flags(fi);
	if (fuse_reply_create(req, &e, fi) == -ENOENT) {
		pthread_mutex_lock(&big_lock);
		n->opens--;
		n->nlookup--;
		maybe_free(n);
		pthread_mutex_unlock(&big_lock);
	}
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	struct node *n = node_of(ino);
	uint64_t end;
	size_t len;

	(void)fi;
	count(C_READ);
	pthread_mutex_lock(&big_lock);
	end = n->size;
	len = (uint64_t)off >= end ? 0 : end - (uint64_t)off < size ? end - (uint64_t)off : size;
	if (!n->sink) {
		/* replied under the lock: a writer may move the data */
		fuse_reply_buf(req, len ? n->data + off : NULL, len);
		pthread_mutex_unlock(&big_lock);
		return;
	}
	pthread_mutex_unlock(&big_lock);
	if (len <= ZERO_LEN) {
		fuse_reply_buf(req, zeros, len);
	} else {
		struct iovec iov[64];
		size_t i = 0, left = len;

		for (; left && i < 64; i++) {
			iov[i].iov_base = zeros;
			iov[i].iov_len = left < ZERO_LEN ? left : ZERO_LEN;
			left -= iov[i].iov_len;
		}
		fuse_reply_iov(req, iov, (int)i);
	}
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size,
		     off_t off, struct fuse_file_info *fi)
{
	struct node *n = node_of(ino);
	uint64_t end = (uint64_t)off + size;
	int r = 0;

	(void)fi;
	count(C_WRITE);
	pthread_mutex_lock(&big_lock);
	if (n->sink) {
		if (end > n->size)
			n->size = end;
	} else {
		if (end > n->size)
			r = resize(n, end);
		if (!r)
			memcpy(n->data + off, buf, size);
	}
	if (!r)
		now(&n->mtime);
	pthread_mutex_unlock(&big_lock);
	if (r)
		fuse_reply_err(req, -r);
	else
		fuse_reply_write(req, size);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct node *n = node_of(ino);

	(void)fi;
	count(C_RELEASE);
	pthread_mutex_lock(&big_lock);
	n->opens--;
	maybe_free(n);
	pthread_mutex_unlock(&big_lock);
	fuse_reply_err(req, 0);
}

static void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	(void)ino;
	(void)datasync;
	(void)fi;
	count(C_FSYNC);
	fuse_reply_err(req, 0);
}

/* A directory listing as it was at opendir: readdir pages through it. */
struct dirent_snap {
	fuse_ino_t ino;
	mode_t mode;
	char *name;
};

struct dir_snap {
	size_t n;
	struct dirent_snap e[];
};

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct node *d = node_of(ino), *c;
	struct dir_snap *s = NULL;
	size_t n = 2, i, k;

	count(C_OPENDIR);
	pthread_mutex_lock(&big_lock);
	for (i = 0; i < table_size; i++)
		for (c = table[i]; c; c = c->hnext)
			n += c->parent == d;
	s = malloc(sizeof(*s) + n * sizeof(s->e[0]));
	if (s) {
		s->e[0] = (struct dirent_snap){ ino, S_IFDIR, strdup(".") };
		s->e[1] = (struct dirent_snap){ d->parent ? ino_of(d->parent) : FUSE_ROOT_ID,
						S_IFDIR, strdup("..") };
		k = 2;
		for (i = 0; i < table_size; i++)
			for (c = table[i]; c; c = c->hnext)
				if (c->parent == d)
					s->e[k++] = (struct dirent_snap){ ino_of(c), c->mode,
									  strdup(c->name) };
		s->n = k;
		for (k = 0; k < s->n; k++)
			if (!s->e[k].name)
				s->n = 0;       /* out of memory: list nothing */
	}
	pthread_mutex_unlock(&big_lock);
	if (!s) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	fi->fh = (uint64_t)(uintptr_t)s;
	if (fuse_reply_open(req, fi) == -ENOENT) {
		for (k = 0; k < n; k++)
			free(s->e[k].name);
		free(s);
	}
}

static void do_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi, bool plus)
{
	struct dir_snap *s = (struct dir_snap *)(uintptr_t)fi->fh;
	char *buf = malloc(size);
	size_t used = 0, i;

	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	for (i = (size_t)off; i < s->n; i++) {
		struct dirent_snap *de = &s->e[i];
		size_t len;

		if (plus) {
			struct fuse_entry_param e;
			struct node *c = NULL;

			memset(&e, 0, sizeof(e));
			if (i >= 2) {
				/* an entry takes a lookup reference, as LOOKUP's */
				pthread_mutex_lock(&big_lock);
				c = find(node_of(ino), de->name);
				if (c)
					entry_of(c, &e);
				pthread_mutex_unlock(&big_lock);
				if (!c)
					continue;       /* removed since opendir */
			} else {
				e.attr.st_ino = de->ino;
				e.attr.st_mode = S_IFDIR;
			}
			len = fuse_add_direntry_plus(req, buf + used, size - used, de->name, &e,
						     (off_t)(i + 1));
			if (len > size - used) {
				if (c)
					drop_lookup(c);
				break;
			}
		} else {
			struct stat st;

			memset(&st, 0, sizeof(st));
			st.st_ino = de->ino;
			st.st_mode = de->mode & S_IFMT;
			len = fuse_add_direntry(req, buf + used, size - used, de->name, &st,
						(off_t)(i + 1));
			if (len > size - used)
				break;
		}
		used += len;
	}
	fuse_reply_buf(req, buf, used);
	free(buf);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	count(C_READDIR);
	do_readdir(req, ino, size, off, fi, false);
}

static void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			   struct fuse_file_info *fi)
{
	count(C_READDIRPLUS);
	do_readdir(req, ino, size, off, fi, true);
}

static void op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct dir_snap *s = (struct dir_snap *)(uintptr_t)fi->fh;
	size_t k;

	(void)ino;
	count(C_RELEASEDIR);
	for (k = 0; k < s->n; k++)
		free(s->e[k].name);
	free(s);
	fuse_reply_err(req, 0);
}

static void op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	(void)ino;
	(void)datasync;
	(void)fi;
	count(C_FSYNCDIR);
	fuse_reply_err(req, 0);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct statvfs st;

	(void)ino;
	count(C_STATFS);
	memset(&st, 0, sizeof(st));
	st.f_bsize = st.f_frsize = 4096;
	st.f_blocks = st.f_bfree = st.f_bavail = 1ull << 32;   /* 16 TiB */
	st.f_files = st.f_ffree = st.f_favail = 1ull << 32;
	st.f_namemax = 255;
	fuse_reply_statfs(req, &st);
}

/* No extended attribute is stored: every name is absent (ENODATA), as on
 * a filesystem that supports them, never ENOSYS/EOPNOTSUPP, which would
 * let the kernel stop asking (vmfsd cannot, it stores user.* attributes). */
static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	(void)ino;
	(void)name;
	(void)size;
	count(C_GETXATTR);
	fuse_reply_err(req, ENODATA);
}

static void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	(void)ino;
	count(C_LISTXATTR);
	if (!size)
		fuse_reply_xattr(req, 0);
	else
		fuse_reply_buf(req, NULL, 0);
}

static void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
			size_t size, int flags)
{
	(void)ino;
	(void)name;
	(void)value;
	(void)size;
	(void)flags;
	count(C_SETXATTR);
	fuse_reply_err(req, ENOTSUP);   /* not stored; none of the workloads sets one */
}

static void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	(void)ino;
	(void)name;
	count(C_REMOVEXATTR);
	fuse_reply_err(req, ENODATA);
}

static const struct fuse_lowlevel_ops ops = {
	.init = op_init,
	.lookup = op_lookup,
	.forget = op_forget,
	.forget_multi = op_forget_multi,
	.getattr = op_getattr,
	.setattr = op_setattr,
	.mkdir = op_mkdir,
	.unlink = op_unlink,
	.rmdir = op_rmdir,
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
};

/* ---------------------------------------------------------------- main */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: " PROG " [-s] [-d] [--big-size SIZE] [--stats FILE] [--timeout SEC]\n"
		"       MOUNTPOINT\n"
		"  In-memory FUSE filesystem for the benchmark (bench/run.sh, section floor);\n"
		"  runs in the foreground until unmounted.\n"
		"  -s               libfuse's single-threaded loop (default: multi-threaded)\n"
		"  -d               FUSE request tracing (libfuse's debug output)\n"
		"  --big-size SIZE  size of /big, a file reading zeros whose writes are\n"
		"                   dropped (K, M, G suffixes; default 1G)\n"
		"  --stats FILE     per-operation request counts written to FILE on SIGUSR1\n"
		"                   and at unmount (they always go to stderr at unmount)\n"
		"  --timeout SEC    entry and attribute timeouts (default 1, vmfsd's)\n");
}

static int parse_size(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s)
		return -1;
	switch (*end) {
	case 'K': case 'k': v <<= 10; end++; break;
	case 'M': case 'm': v <<= 20; end++; break;
	case 'G': case 'g': v <<= 30; end++; break;
	case 'T': case 't': v <<= 40; end++; break;
	default: break;
	}
	if (*end)
		return -1;
	*out = v;
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "big-size", required_argument, NULL, 'b' },
		{ "stats", required_argument, NULL, 'S' },
		{ "timeout", required_argument, NULL, 't' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
	struct fuse_loop_config *lc = NULL;
	uint64_t big_size = 1ull << 30;
	bool single = false, debug = false;
	struct node *big;
	sigset_t usr1;
	pthread_t st;
	char optbuf[256];
	int c, ret = 1;

	while ((c = getopt_long(argc, argv, "sdh", longopts, NULL)) != -1) {
		switch (c) {
		case 's': single = true; break;
		case 'd': debug = true; break;
		case 'b':
			if (parse_size(optarg, &big_size)) {
				fprintf(stderr, PROG ": bad size '%s'\n", optarg);
				return 2;
			}
			break;
		case 'S': stats_path = optarg; break;
		case 't': {
			char *end;

			errno = 0;
			cache_timeout = strtod(optarg, &end);
			if (errno || end == optarg || *end || cache_timeout < 0) {
				fprintf(stderr, PROG ": bad timeout '%s'\n", optarg);
				return 2;
			}
			break;
		}
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind != argc - 1) {
		usage(stderr);
		return 2;
	}

	root.mode = S_IFDIR | 0755;
	root.uid = geteuid();
	root.gid = getegid();
	root.nlink = 2;
	now(&root.mtime);
	root.atime = root.ctime = root.mtime;
	if (table_grow())
		return 1;
	big = new_node(S_IFREG | 0666, geteuid(), getegid());
	if (!big || link_name(&root, big, "big"))
		return 1;
	big->sink = true;
	big->size = big_size;

	/* SIGUSR1 goes to the stats thread only: blocked before libfuse
	 * starts its threads, which inherit the mask. */
	sigemptyset(&usr1);
	sigaddset(&usr1, SIGUSR1);
	pthread_sigmask(SIG_BLOCK, &usr1, NULL);
	if (pthread_create(&st, NULL, stats_thread, &usr1)) {
		fprintf(stderr, PROG ": cannot start the stats thread\n");
		return 1;
	}
	pthread_detach(st);

	/* vmfsd's mount options (vmfsd/main.c) */
	snprintf(optbuf, sizeof(optbuf), "-odefault_permissions,fsname=fuse_floor,subtype=floor%s",
		 geteuid() == 0 ? ",allow_other" : "");
	if (fuse_opt_add_arg(&args, argv[0]) || fuse_opt_add_arg(&args, optbuf) ||
	    (debug && fuse_opt_add_arg(&args, "-d"))) {
		fprintf(stderr, PROG ": out of memory\n");
		goto out;
	}
	session = fuse_session_new(&args, &ops, sizeof(ops), NULL);
	if (!session)
		goto out;
	if (fuse_set_signal_handlers(session))
		goto out_destroy;
	if (fuse_session_mount(session, argv[optind])) {
		fprintf(stderr, PROG ": cannot mount on %s\n", argv[optind]);
		goto out_sig;
	}
	if (single) {
		ret = fuse_session_loop(session) ? 1 : 0;
	} else {
		lc = fuse_loop_cfg_create();
		if (lc) {
			fuse_loop_cfg_set_max_threads(lc, MAX_THREADS);
			fuse_loop_cfg_set_idle_threads(lc, IDLE_THREADS);
			fuse_loop_cfg_set_clone_fd(lc, 1);
			ret = fuse_session_loop_mt(session, lc) ? 1 : 0;
			fuse_loop_cfg_destroy(lc);
		}
	}
	fuse_session_unmount(session);
	fprintf(stderr, PROG ": requests served (%s loop):\n", single ? "single-threaded" : "multi-threaded");
	print_counts(stderr);
	dump_stats();
out_sig:
	fuse_remove_signal_handlers(session);
out_destroy:
	fuse_session_destroy(session);
out:
	fuse_opt_free_args(&args);
	return ret;
}
