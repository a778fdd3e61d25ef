// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Passes 4 to 6: directory blocks and entries, the namespace, and the
 * bitmaps.
 *
 * Pass 4 reads every directory block through the shared verifier and
 * collects the entries (names are checked within their directory: no "."
 * or "..", no duplicate).  Pass 5 decides the namespace from the root down,
 * breadth first: the first name found for a directory is its name, any
 * other name of it (a directory hard link, or a loop) is removed, so the
 * result is a tree and the parent field ("..") of each directory must name
 * the directory holding it.  Directories and files that no name reaches are
 * orphans: with no links left they were being deleted and are released;
 * otherwise they go to /lost+found as "#<inode>" (e2fsck's convention),
 * reconnecting a detached subtree at its top so its inner names survive.
 * Link counts follow (directories: 2 + subdirectories).  Pass 6 compares
 * every bitmap cluster with the truth and rebuilds those that differ.
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "fsck_internal.h"

static uint8_t dtype_of(uint32_t mode)
{
	return (uint8_t)((mode & S_IFMT) >> 12);
}

static const char *ent_name(const struct fsck *c, const struct ent *e)
{
	return c->names + e->name_off;
}

static struct ent *ent_at(struct fsck *c, uint32_t i)
{
	return &c->ents[i];
}

static int ent_add(struct fsck *c, uint64_t dir, uint64_t ino, uint32_t sblk, uint16_t idx,
		   uint8_t dtype, const char *name, size_t nl, uint8_t flags, uint32_t *out)
{
	struct ent *e;

	if (c->nents == c->cents) {
		uint32_t cap = c->cents ? c->cents * 2 : 1024;
		struct ent *n = realloc(c->ents, cap * sizeof(*n));

		if (!n)
			return -ENOMEM;
		c->ents = n;
		c->cents = cap;
	}
	if (c->names_len + nl + 1 > c->names_cap) {
		uint64_t cap = c->names_cap ? c->names_cap * 2 : 65536;
		char *n;

		while (cap < c->names_len + nl + 1)
			cap *= 2;
		n = realloc(c->names, cap);
		if (!n)
			return -ENOMEM;
		c->names = n;
		c->names_cap = cap;
	}
	e = &c->ents[c->nents];
	e->dir = dir;
	e->ino = ino;
	e->sblk = sblk;
	e->idx = idx;
	e->dtype = dtype;
	e->flags = flags;
	e->nlen = (uint8_t)nl;
	e->name_off = (uint32_t)c->names_len;
	memcpy(c->names + c->names_len, name, nl);
	c->names[c->names_len + nl] = 0;
	c->names_len += nl + 1;
	if (out)
		*out = c->nents;
	c->nents++;
	return 0;
}

static void fill_where_name(struct fsck *c, const struct ent *e)
{
	struct fsck_result *res = c->res;

	/* The last problem reported is about E: give it the entry's name. */
	if (res->n_problems)
		snprintf(res->problems[res->n_problems - 1].where.name, VMFSD_NAME_MAX + 1, "%s",
			 ent_name(c, e));
}

/* ---------------- per-directory name set ---------------- */

struct nameset {
	uint32_t *t;            /* entry index + 1 */
	uint32_t size, n;
};

static uint32_t name_hash(const char *s, size_t n)
{
	uint32_t h = 2166136261u;       /* FNV-1a */
	size_t i;

	for (i = 0; i < n; i++)
		h = (h ^ (uint8_t)s[i]) * 16777619u;
	return h;
}

/* Returns the index of an entry already named NAME, -1 after inserting
 * entry I, or -2 on allocation failure. */
static int64_t nameset_add(struct fsck *c, struct nameset *s, uint32_t i)
{
	const struct ent *e = ent_at(c, i);
	uint32_t h;

	if ((s->n + 1) * 2 > s->size) {
		uint32_t size = s->size ? s->size * 2 : 256, k;
		uint32_t *t = calloc(size, sizeof(*t));

		if (!t)
			return -2;
		for (k = 0; k < s->size; k++) {
			if (!s->t[k])
				continue;
			{
				const struct ent *o = ent_at(c, s->t[k] - 1);

				for (h = name_hash(ent_name(c, o), o->nlen) & (size - 1); t[h];
				     h = (h + 1) & (size - 1))
					;
				t[h] = s->t[k];
			}
		}
		free(s->t);
		s->t = t;
		s->size = size;
	}
	for (h = name_hash(ent_name(c, e), e->nlen) & (s->size - 1); s->t[h];
	     h = (h + 1) & (s->size - 1)) {
		const struct ent *o = ent_at(c, s->t[h] - 1);

		if (o->nlen == e->nlen && !memcmp(ent_name(c, o), ent_name(c, e), e->nlen))
			return s->t[h] - 1;
	}
	s->t[h] = i + 1;
	s->n++;
	return -1;
}

static void nameset_reset(struct nameset *s)
{
	if (s->t)
		memset(s->t, 0, s->size * sizeof(*s->t));
	s->n = 0;
}

/* ---------------- pass 4: directory blocks ---------------- */

static int empty_block(struct fsck *c, const struct irec *d, uint32_t sblk, uint8_t *blk)
{
	vmfsd_dir_block_init(blk, d->ino, d->gen);
	vmfsd_dir_block_finish(blk, sblk);
	return ck_wq_put(c, vmfsd_sub_off(&c->sb, sblk), blk, WQ_DATA);
}

static int scan_dir(struct fsck *c, struct irec *d, uint8_t *blk, struct nameset *ns,
		    bool *added)
{
	uint32_t k;
	int r;

	nameset_reset(ns);
	d->flags |= IRF_SCANNED;
	d->ent_first = c->nents;
	for (k = 0; k < d->ndb; k++) {
		uint32_t sblk = d->db[k].sblk;
		struct vmfsd_dirent de;
		unsigned off, sz;
		uint16_t idx = 0;
		int v;

		r = ck_meta_read(c, vmfsd_sub_off(&c->sb, sblk), blk);
		if (r)
			return r;
		v = vmfsd_dir_block_verify(blk, sblk, d->ino, d->gen);
		if (v) {
			fsck_report(c, P_DIR_BLOCK_BAD,
				    WHERE(.ino = d->ino, .has = FSCK_W_BLOCK | FSCK_W_LBLK,
					  .blocknr = sblk, .lblk = d->db[k].lblk),
				    "replace it with an empty block (its names are lost, their "
				    "inodes go to lost+found)",
				    "directory %" PRIu64 ": block %" PRIu64 " (sub-block %u) is "
				    "damaged or not this directory's (%s)", d->ino, d->db[k].lblk, sblk,
				    v == -EBADMSG ? "checksum mismatch" : "bad magic, owner or entry");
			r = empty_block(c, d, sblk, blk);
			if (r)
				return r;
			continue;
		}
		for (off = 0; (sz = vmfsd_dirent_get(blk, off, &de)); off += sz, idx++) {
			uint64_t ino = de.ino;
			unsigned nl = de.name_len;
			const char *name = de.name;
			uint32_t i;
			int64_t other;

			r = ent_add(c, d->ino, ino, sblk, idx, de.type, name, nl, 0, &i);
			if (r)
				return r;
			if ((nl == 1 && name[0] == '.') || (nl == 2 && !memcmp(name, "..", 2))) {
				fsck_report(c, P_DENT_DOT, WHERE(.dir = d->ino, .ino = ino),
					    "remove it (\".\" and \"..\" are not stored)",
					    "directory %" PRIu64 " holds an entry named '%.*s'", d->ino,
					    (int)nl, name);
				ent_at(c, i)->flags |= ENT_REMOVE;
			} else if ((other = nameset_add(c, ns, i)) >= 0) {
				fsck_report(c, P_DENT_DUP_NAME, WHERE(.dir = d->ino, .ino = ino),
					    "remove the second entry",
					    "directory %" PRIu64 " has two entries named '%.*s' "
					    "(inodes %" PRIu64 " and %" PRIu64 ")", d->ino, (int)nl, name,
					    ent_at(c, (uint32_t)other)->ino, ino);
				fill_where_name(c, ent_at(c, i));
				ent_at(c, i)->flags |= ENT_REMOVE;
			} else if (other == -2) {
				return -ENOMEM;
			}
			/* An inode the bitmap cannot vouch for (its cluster is
			 * damaged): read it, it may be sound. */
			if (ino < c->sb.inode_count && !ck_irec_find(c, ino) &&
			    (c->ip.cl_bad[ino / VMFSD_RC_BITS] & CL_BAD)) {
				struct irec *t;

				r = ck_irec_add(c, ino, &t);
				if (r)
					return r;
				t->flags |= IRF_FROM_ENTRY;
				*added = true;
			}
		}
	}
	d->ent_n = c->nents - d->ent_first;
	return 0;
}

int fsck_dirs(struct fsck *c, bool *added)
{
	uint8_t *blk = bdev_alloc(VMFSD_SUB_BLOCK_SIZE);
	struct nameset ns = { 0 };
	uint32_t i, n = c->nir;
	int r = 0;

	*added = false;
	if (!blk)
		return -ENOMEM;
	for (i = 0; i < n && !r; i++) {
		struct irec *d = irec_at(c, i);

		if (d->state != IR_OK || !S_ISDIR(d->mode) || (d->flags & IRF_SCANNED))
			continue;
		r = scan_dir(c, d, blk, &ns, added);
		fsck_progress(c, 4, "directories", i + 1, n);
	}
	free(ns.t);
	bdev_free(blk);
	return r;
}

/* ---------------- pass 5: the namespace ---------------- */

struct ns {
	struct fsck *c;
	uint32_t *inc;          /* entry indices sorted by target inode */
	uint32_t ninc;          /* entries when it was built (new ones come after) */
	struct irec **queue;
	uint32_t qn, qcap;
	struct irec *lf;
	struct nameset lfnames;
};

static int q_push(struct ns *s, struct irec *r)
{
	if (s->qn == s->qcap) {
		uint32_t cap = s->qcap ? s->qcap * 2 : 256;
		struct irec **q = realloc(s->queue, cap * sizeof(*q));

		if (!q)
			return -ENOMEM;
		s->queue = q;
		s->qcap = cap;
	}
	s->queue[s->qn++] = r;
	return 0;
}

static bool usable(const struct irec *r)
{
	return r && r->state == IR_OK && !(r->flags & IRF_FREE) && r->mode;
}

/* Claims the names below the directories queued from index FROM on. */
static int walk_down(struct ns *s, uint32_t from)
{
	struct fsck *c = s->c;
	uint32_t qi, k;
	int r;

	for (qi = from; qi < s->qn; qi++) {
		struct irec *d = s->queue[qi];

		for (k = 0; k < d->ent_n; k++) {
			struct ent *e = ent_at(c, d->ent_first + k);
			struct irec *t;

			if (e->flags & ENT_REMOVE)
				continue;
			t = ck_irec_find(c, e->ino);
			if (!S_ISDIR(t->mode)) {
				t->links++;
				continue;
			}
			if (t->flags & IRF_REACHED) {
				fsck_report(c, P_DIR_MULTI_LINK, WHERE(.dir = d->ino, .ino = t->ino),
					    "remove this name",
					    "directory %" PRIu64 " is named again as '%s' in directory %"
					    PRIu64 " (a directory has one name; this one is an extra "
					    "name or makes a loop)", t->ino, ent_name(c, e), d->ino);
				fill_where_name(c, e);
				e->flags |= ENT_REMOVE;
				continue;
			}
			t->flags |= IRF_REACHED;
			t->container = d->ino;
			d->nsub++;
			r = q_push(s, t);
			if (r)
				return r;
		}
	}
	return 0;
}

static int by_target(const void *a, const void *b, void *arg)
{
	const struct fsck *c = arg;
	const struct ent *x = &c->ents[*(const uint32_t *)a], *y = &c->ents[*(const uint32_t *)b];

	if (x->ino != y->ino)
		return x->ino < y->ino ? -1 : 1;
	return *(const uint32_t *)a < *(const uint32_t *)b ? -1 : 1;
}

/* First live entry naming INO from a usable directory, or NULL. */
static struct ent *incoming(struct ns *s, uint64_t ino)
{
	struct fsck *c = s->c;
	uint32_t lo = 0, hi = s->ninc;

	if (!s->inc)
		return NULL;
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;

		if (ent_at(c, s->inc[mid])->ino < ino)
			lo = mid + 1;
		else
			hi = mid;
	}
	for (; lo < s->ninc && ent_at(c, s->inc[lo])->ino == ino; lo++) {
		struct ent *e = ent_at(c, s->inc[lo]);

		if (!(e->flags & (ENT_REMOVE | ENT_NEW)) && usable(ck_irec_find(c, e->dir)))
			return e;
	}
	return NULL;
}

static void now_into(struct vmfsd_inode *in)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	in->atime_sec = in->mtime_sec = in->ctime_sec = in->btime_sec = ts.tv_sec;
	in->atime_nsec = in->mtime_nsec = in->ctime_nsec = in->btime_nsec = (uint32_t)ts.tv_nsec;
}

/* Writes an empty directory inode INO and returns its record. */
static int make_dir(struct fsck *c, uint64_t ino, uint64_t parent, uint32_t mode,
		    struct irec *r)
{
	struct vmfsd_inode *in = calloc(1, sizeof(*in));
	uint64_t gen = 1;
	int e;

	if (!in)
		return -ENOMEM;
	/* Keep generations increasing across reuse of the number (as
	 * fs/inode.c does), so stale blocks of an earlier owner stay stale. */
	if (ck_inode_load(c, ino, in) == 0)
		gen = in->generation + 1;
	memset(in, 0, sizeof(*in));
	in->ino = ino;
	in->generation = gen;
	in->mode = S_IFDIR | mode;
	in->nlink = 2;
	in->data_mode = VMFSD_DATA_SUB;
	in->parent = parent;
	in->change_seq = 1;
	now_into(in);
	e = ck_inode_store(c, in);
	free(in);
	if (e)
		return e;
	r->state = IR_OK;
	r->gen = gen;
	r->mode = S_IFDIR | mode;
	r->nlink = 2;
	r->parent = parent;
	r->data_mode = VMFSD_DATA_SUB;
	r->size = r->units = r->nodes = 0;
	r->ndb = 0;
	r->ent_n = 0;
	r->flags |= IRF_NEW | IRF_SCANNED | IRF_REACHED;
	return 0;
}

static int ensure_lost_found(struct ns *s)
{
	struct fsck *c = s->c;
	struct irec *root = ck_irec_find(c, VMFSD_ROOT_INO), *lf;
	uint64_t ino;
	uint32_t k, i;
	int r;

	if (s->lf)
		return 0;
	if (c->lf_failed)
		return -ENOENT;
	for (k = 0; k < root->ent_n; k++) {
		struct ent *e = ent_at(c, root->ent_first + k);

		if ((e->flags & ENT_REMOVE) || strcmp(ent_name(c, e), "lost+found"))
			continue;
		lf = ck_irec_find(c, e->ino);
		if (!usable(lf) || !S_ISDIR(lf->mode)) {
			fsck_report(c, P_LOST_FOUND_FAILED, WHERE(.ino = e->ino), NULL,
				    "/lost+found exists but is not a directory: orphans cannot be "
				    "reconnected (rename it and run fsck again)");
			c->lf_failed = true;
			return -ENOENT;
		}
		s->lf = lf;
		c->lf_ino = lf->ino;
		c->res->lost_found_ino = lf->ino;
		for (i = 0; i < lf->ent_n; i++)
			if (!(ent_at(c, lf->ent_first + i)->flags & ENT_REMOVE) &&
			    nameset_add(c, &s->lfnames, lf->ent_first + i) == -2)
				return -ENOMEM;
		return 0;
	}
	/* Create it: a new inode, empty, named in the root. */
	r = ck_pool_alloc(c, &c->ip, &ino);
	if (r) {
		fsck_report(c, P_LOST_FOUND_FAILED, NULL, NULL,
			    "no free inode for /lost+found: orphans cannot be reconnected");
		c->lf_failed = true;
		return -ENOENT;
	}
	r = ck_irec_add(c, ino, &lf);
	if (!r)
		r = make_dir(c, ino, VMFSD_ROOT_INO, 0700, lf);
	if (r)
		return r;
	lf->container = VMFSD_ROOT_INO;
	root->nsub++;
	root->nsub_new++;
	r = ent_add(c, VMFSD_ROOT_INO, ino, 0, 0, DT_DIR, "lost+found", 10, ENT_NEW, NULL);
	if (r)
		return r;
	s->lf = lf;
	c->lf_ino = ino;
	c->res->lost_found_ino = ino;
	c->res->lost_found_created = true;
	fsck_report(c, P_LOST_FOUND, WHERE(.ino = ino), NULL,
		    "created /lost+found (inode %" PRIu64 ") for the orphans", ino);
	return 0;
}

/* Names orphan T "#<ino>" in lost+found; NAME gets the name, "" when
 * there is no lost+found to put it in. */
static int reconnect(struct ns *s, struct irec *t, char *name, size_t len)
{
	struct fsck *c = s->c;
	uint32_t i, n;
	int r;

	name[0] = 0;
	r = ensure_lost_found(s);
	if (r)
		return r == -ENOENT ? 0 : r;
	for (n = 0;; n++) {
		int64_t other;

		if (n)
			snprintf(name, len, "#%" PRIu64 ".%u", t->ino, n);
		else
			snprintf(name, len, "#%" PRIu64, t->ino);
		r = ent_add(c, s->lf->ino, t->ino, 0, 0, dtype_of(t->mode), name, strlen(name),
			    ENT_NEW, &i);
		if (r)
			return r;
		other = nameset_add(c, &s->lfnames, i);
		if (other == -1)
			break;
		if (other == -2)
			return -ENOMEM;
		c->nents--;     /* taken: drop it and try the next name */
	}
	c->res->orphans_reconnected++;
	t->flags |= IRF_MOVED;
	if (S_ISDIR(t->mode)) {
		t->flags |= IRF_REACHED;
		t->container = s->lf->ino;
		s->lf->nsub++;
		s->lf->nsub_new++;
		r = q_push(s, t);
		if (!r)
			r = walk_down(s, s->qn - 1);
		return r;
	}
	t->links++;
	return 0;
}

static int release(struct fsck *c, struct irec *r)
{
	int e = ck_map_release(c, r);

	r->flags |= IRF_FREE;
	c->res->orphans_freed++;
	return e;
}

static uint32_t live_entries(struct fsck *c, const struct irec *d)
{
	uint32_t k, n = 0;

	for (k = 0; k < d->ent_n; k++)
		if (!(ent_at(c, d->ent_first + k)->flags & ENT_REMOVE))
			n++;
	return n;
}

static int check_root(struct ns *s)
{
	struct fsck *c = s->c;
	struct irec *root = ck_irec_find(c, VMFSD_ROOT_INO);
	int r;

	if (root->state == IR_OK && S_ISDIR(root->mode))
		return 0;
	fsck_report(c, P_ROOT_BAD, WHERE(.ino = VMFSD_ROOT_INO),
		    "recreate it empty (what it held goes to lost+found)",
		    "the root directory (inode 1) is %s",
		    root->state == IR_OK ? "not a directory" : "damaged");
	if (root->state == IR_OK) {
		r = ck_map_release(c, root);
		if (r)
			return r;
	}
	r = make_dir(c, VMFSD_ROOT_INO, VMFSD_ROOT_INO, 0755, root);
	root->flags &= (uint8_t)~IRF_NEW;
	return r;
}

static void set_nlink(struct vmfsd_inode *in, void *arg)
{
	in->nlink = *(uint32_t *)arg;
}

static void set_parent(struct vmfsd_inode *in, void *arg)
{
	in->parent = *(uint64_t *)arg;
}

static const char *type_name(uint32_t mode)
{
	switch (mode & S_IFMT) {
	case S_IFDIR: return "directory";
	case S_IFREG: return "file";
	case S_IFLNK: return "symlink";
	case 0: return "deleted";
	default: return "special file";
	}
}

/* An orphan put in lost+found as NAME ("" if there is none to put it in). */
static void report_orphan(struct fsck *c, const struct irec *t, const char *name,
			  const char *extra)
{
	char fix[VMFSD_NAME_MAX + 40];

	if (!name[0]) {
		fsck_report(c, P_LOST_FOUND_FAILED, WHERE(.ino = t->ino), NULL,
			    "%s %" PRIu64 "%s is not reachable from the root, and there is no "
			    "/lost+found to reconnect it to", type_name(t->mode), t->ino, extra);
		return;
	}
	snprintf(fix, sizeof(fix), "move it to /lost+found/%s", name);
	fsck_report(c, P_ORPHAN_RECONNECTED, WHERE(.ino = t->ino, .dir = c->lf_ino), fix,
		    "%s %" PRIu64 "%s is not reachable from the root", type_name(t->mode), t->ino,
		    extra);
	if (c->res->n_problems)
		snprintf(c->res->problems[c->res->n_problems - 1].where.name, VMFSD_NAME_MAX + 1,
			 "%s", name);
}

static int resolve(struct ns *s)
{
	struct fsck *c = s->c;
	struct irec *root = ck_irec_find(c, VMFSD_ROOT_INO);
	char name[40];
	uint32_t i, n;
	int r;

	/* 1. Every entry must name a usable inode of the type it says. */
	for (i = 0; i < c->nents; i++) {
		struct ent *e = ent_at(c, i);
		struct irec *t;

		if (e->flags & ENT_REMOVE)
			continue;
		t = ck_irec_find(c, e->ino);
		if (!usable(t) || e->ino == VMFSD_ROOT_INO || e->ino >= c->sb.inode_count) {
			fsck_report(c, P_DENT_BAD_TARGET, WHERE(.dir = e->dir, .ino = e->ino),
				    "remove the entry",
				    "entry '%s' in directory %" PRIu64 " names inode %" PRIu64
				    ", which is %s", ent_name(c, e), e->dir, e->ino,
				    e->ino >= c->sb.inode_count ? "out of range" :
				    e->ino == VMFSD_ROOT_INO ? "the root directory" :
				    !t ? "free" : (t->flags & IRF_BLANK) ? "never written" :
				    t->state == IR_BAD ? "damaged" : "being deleted");
			fill_where_name(c, e);
			e->flags |= ENT_REMOVE;
			continue;
		}
		if (e->dtype != dtype_of(t->mode)) {
			fsck_report(c, P_DENT_DTYPE, WHERE(.dir = e->dir, .ino = e->ino),
				    "set it from the inode",
				    "entry '%s' in directory %" PRIu64 " says type %u, inode %" PRIu64
				    " is a %s", ent_name(c, e), e->dir, e->dtype, e->ino,
				    type_name(t->mode));
			fill_where_name(c, e);
			e->flags |= ENT_FIX_DTYPE;
			e->dtype = dtype_of(t->mode);
		}
	}
	/* 2. From the root down. */
	root->flags |= IRF_REACHED;
	root->container = VMFSD_ROOT_INO;
	r = q_push(s, root);
	if (!r)
		r = walk_down(s, 0);
	if (r)
		return r;
	/* 3. Directories no name reaches. */
	s->inc = malloc((c->nents ? c->nents : 1) * sizeof(*s->inc));
	if (!s->inc)
		return -ENOMEM;
	for (i = 0; i < c->nents; i++)
		s->inc[i] = i;
	s->ninc = c->nents;
	qsort_r(s->inc, s->ninc, sizeof(*s->inc), by_target, c);
	n = c->nir;
	for (i = 0; i < n; i++) {
		struct irec *u = irec_at(c, i), *top;
		struct irec **path = NULL;
		uint32_t np = 0, k;

		if (!usable(u) || !S_ISDIR(u->mode) || (u->flags & IRF_REACHED))
			continue;
		if (u->nlink == 0 && !live_entries(c, u) && !incoming(s, u->ino)) {
			fsck_report(c, P_ORPHAN_FREED, WHERE(.ino = u->ino), "release it",
				    "directory %" PRIu64 " is unlinked (no links, no name) but "
				    "still allocated", u->ino);
			r = release(c, u);
			if (r)
				return r;
			continue;
		}
		/* Up through the names that detached directories give each
		 * other, to the top of the detached subtree. */
		top = u;
		for (;;) {
			struct ent *e = incoming(s, top->ino);
			struct irec *p, **np2;

			if (!e)
				break;
			p = ck_irec_find(c, e->dir);
			for (k = 0; k < np && path[k] != p; k++)
				;
			if (k < np || p == u) {
				fsck_report(c, P_DIR_MULTI_LINK, WHERE(.dir = p->ino, .ino = top->ino),
					    "remove this name",
					    "directory %" PRIu64 " named '%s' in directory %" PRIu64
					    " is part of a loop that the root does not reach",
					    top->ino, ent_name(c, e), p->ino);
				fill_where_name(c, e);
				e->flags |= ENT_REMOVE;
				break;
			}
			np2 = realloc(path, (np + 1) * sizeof(*path));
			if (!np2) {
				free(path);
				return -ENOMEM;
			}
			path = np2;
			path[np++] = top;
			top = p;
		}
		free(path);
		r = reconnect(s, top, name, sizeof(name));
		if (r)
			return r;
		report_orphan(c, top, name, top == u ? "" : " (holding others)");
	}
	/* 4. Files no name reaches. */
	for (i = 0; i < c->nir; i++) {
		struct irec *t = irec_at(c, i);

		if (t->state != IR_OK || (t->flags & IRF_FREE) || S_ISDIR(t->mode) || t->links)
			continue;
		if (t->nlink == 0) {
			fsck_report(c, P_ORPHAN_FREED, WHERE(.ino = t->ino), "release it",
				    "%s inode %" PRIu64 " is unlinked (no links, no name) but still "
				    "allocated", type_name(t->mode), t->ino);
			r = release(c, t);
		} else {
			char what[48];

			r = reconnect(s, t, name, sizeof(name));
			snprintf(what, sizeof(what), " (%u link(s))", t->nlink);
			if (!r)
				report_orphan(c, t, name, what);
		}
		if (r)
			return r;
	}
	/* 5. Link counts and parents of what remains. */
	for (i = 0; i < c->nir && !r; i++) {
		struct irec *t = irec_at(c, i);
		uint32_t want;

		if (!usable(t) || (S_ISDIR(t->mode) && !(t->flags & IRF_REACHED)))
			continue;
		want = S_ISDIR(t->mode) ? 2 + t->nsub : t->links;
		if (t->nlink != want) {
			/* What lost+found adds is the repair's doing, not a
			 * problem found: only a count wrong before it is one. */
			bool own = (t->flags & IRF_NEW) ||
				   (S_ISDIR(t->mode) && t->nlink == want - t->nsub_new);

			if (own)
				;
			else if (S_ISDIR(t->mode))
				fsck_report(c, P_INODE_NLINK, WHERE(.ino = t->ino), "correct it",
					    "directory %" PRIu64 " has link count %u, expected %u "
					    "(2 + %u subdirectories)", t->ino, t->nlink,
					    want - t->nsub_new, t->nsub - t->nsub_new);
			else
				fsck_report(c, P_INODE_NLINK, WHERE(.ino = t->ino), "correct it",
					    "inode %" PRIu64 " has link count %u, %u name(s) found",
					    t->ino, t->nlink, want);
			t->nlink = want;
			r = ck_inode_edit(c, t->ino, set_nlink, &want);
		}
		if (!r && S_ISDIR(t->mode) && t->parent != t->container) {
			uint64_t want_p = t->container;

			/* A directory we moved to lost+found gets its new
			 * parent as part of that move. */
			if (!(t->flags & (IRF_NEW | IRF_MOVED)))
				fsck_report(c, P_DIR_PARENT, WHERE(.ino = t->ino),
					    "set it to the directory that names it",
					    "directory %" PRIu64 ": parent field ('..') is %" PRIu64
					    ", it is named in directory %" PRIu64, t->ino, t->parent,
					    t->container);
			t->parent = want_p;
			r = ck_inode_edit(c, t->ino, set_parent, &want_p);
		}
	}
	return r;
}

/* ---- writing the directory changes ---- */

/* Rewrites the blocks of D that hold removed or retyped entries. */
static int rewrite_blocks(struct fsck *c, struct irec *d, uint8_t *blk, uint8_t *out)
{
	uint32_t k = 0, b;
	int r;

	for (b = 0; b < d->ndb; b++) {
		uint32_t sblk = d->db[b].sblk, k0 = k, j;
		bool touched = false;
		struct vmfsd_dirent de;
		unsigned off, sz, used;
		uint16_t idx = 0;

		while (k < d->ent_n && ent_at(c, d->ent_first + k)->sblk == sblk)
			k++;
		for (j = k0; j < k; j++)
			if (ent_at(c, d->ent_first + j)->flags & (ENT_REMOVE | ENT_FIX_DTYPE))
				touched = true;
		if (!touched)
			continue;
		r = ck_meta_read(c, vmfsd_sub_off(&c->sb, sblk), blk);
		if (r)
			return r;
		/* Edit a copy in place: the entries stay where they are until a
		 * removal moves the later ones down, and the tail past them is
		 * zero as the format wants. */
		used = vmfsd_dir_block_used(blk);
		memcpy(out, blk, VMFSD_DIR_HDR + used);
		memset(out + VMFSD_DIR_HDR + used, 0, VMFSD_DIR_SPACE - used);
		j = k0;
		for (off = 0; (sz = vmfsd_dirent_get(out, off, &de)); idx++) {
			struct ent *e = j < k ? ent_at(c, d->ent_first + j) : NULL;

			if (e && e->idx == idx)
				j++;
			else
				e = NULL;
			if (e && (e->flags & ENT_REMOVE)) {
				vmfsd_dirent_remove(out, off);
				continue;
			}
			if (e && (e->flags & ENT_FIX_DTYPE))
				vmfsd_dirent_update(out, off, de.ino, e->dtype);
			off += sz;
		}
		vmfsd_dir_block_finish(out, sblk);
		r = ck_wq_put(c, vmfsd_sub_off(&c->sb, sblk), out, WQ_DATA);
		if (r)
			return r;
	}
	return 0;
}

/* Appends the new entries of D (ENT_NEW) to its blocks, growing it. */
static int append_entries(struct fsck *c, struct irec *d, uint8_t *blk)
{
	struct vmfsd_inode *in = NULL;
	uint32_t i, b = 0;
	bool grew = false;
	int r = 0;

	for (i = 0; i < c->nents && !r; i++) {
		struct ent *e = ent_at(c, i);

		if (!(e->flags & ENT_NEW) || e->dir != d->ino)
			continue;
		/* The first block with room, from where the last one fitted. */
		for (; b < d->ndb; b++) {
			r = ck_meta_read(c, vmfsd_sub_off(&c->sb, d->db[b].sblk), blk);
			if (r)
				goto out;
			if (vmfsd_dir_block_fits(blk, e->nlen))
				break;
		}
		if (b == d->ndb) {
			uint64_t sblk;

			if (!in) {
				in = malloc(sizeof(*in));
				if (!in) {
					r = -ENOMEM;
					goto out;
				}
				r = ck_inode_load(c, d->ino, in);
				if (r)
					goto out;
			}
			r = ck_pool_alloc(c, &c->sp, &sblk);
			if (!r)
				r = ck_map_set(c, in, d, d->ndb, (uint32_t)sblk);
			if (!r)
				r = ck_dblk_add(d, d->ndb, (uint32_t)sblk);
			if (r)
				goto out;
			in->size += VMFSD_SUB_BLOCK_SIZE;
			in->alloc_units += VMFSD_SUB_BLOCK_SIZE / 512;
			d->size = in->size;
			d->units++;
			grew = true;
			vmfsd_dir_block_init(blk, d->ino, d->gen);
		}
		r = vmfsd_dirent_add(blk, e->ino, e->dtype, ent_name(c, e), e->nlen);
		if (r)
			goto out;
		vmfsd_dir_block_finish(blk, d->db[b].sblk);
		r = ck_wq_put(c, vmfsd_sub_off(&c->sb, d->db[b].sblk), blk, WQ_DATA);
	}
	if (!r && grew)
		r = ck_inode_store(c, in);
out:
	free(in);
	return r;
}

static int write_dirs(struct ns *s)
{
	struct fsck *c = s->c;
	uint8_t *blk = bdev_alloc(VMFSD_SUB_BLOCK_SIZE), *out = bdev_alloc(VMFSD_SUB_BLOCK_SIZE);
	uint32_t i;
	int r = 0;

	if (!blk || !out) {
		r = -ENOMEM;
		goto done;
	}
	for (i = 0; i < c->nir && !r; i++) {
		struct irec *d = irec_at(c, i);

		if (usable(d) && S_ISDIR(d->mode) && (d->flags & IRF_SCANNED))
			r = rewrite_blocks(c, d, blk, out);
	}
	if (!r)
		r = append_entries(c, ck_irec_find(c, VMFSD_ROOT_INO), blk);
	if (!r && s->lf)
		r = append_entries(c, s->lf, blk);
done:
	bdev_free(blk);
	bdev_free(out);
	return r;
}

int fsck_namespace(struct fsck *c)
{
	struct ns s = { .c = c };
	int r;

	fsck_progress(c, 5, "names and link counts", 0, 1);
	r = check_root(&s);
	if (!r)
		r = resolve(&s);
	if (!r)
		r = write_dirs(&s);
	free(s.inc);
	free(s.queue);
	free(s.lfnames.t);
	fsck_progress(c, 5, "names and link counts", 1, 1);
	return r;
}

/* ---------------- pass 6: bitmaps ---------------- */

/* Appends "a-b" ranges of set bits of M (N bits, items from FIRST) to BUF. */
static uint64_t ranges(const uint8_t *m, uint32_t n, uint64_t first, char *buf, size_t len)
{
	uint64_t count = 0;
	size_t used = 0;
	uint32_t i = 0;

	buf[0] = 0;
	while (i < n) {
		uint32_t j;

		if (!(m[i / 8] & (1u << (i % 8)))) {
			i++;
			continue;
		}
		for (j = i; j < n && (m[j / 8] & (1u << (j % 8))); j++)
			;
		count += j - i;
		if (used + 48 < len) {
			used += (size_t)snprintf(buf + used, len - used, "%s%" PRIu64, used ? ", " : "",
						 first + i);
			if (j - i > 1)
				used += (size_t)snprintf(buf + used, len - used, "-%" PRIu64,
							 first + j - 1);
		} else if (used + 5 < len && !strstr(buf, "...")) {
			used += (size_t)snprintf(buf + used, len - used, ", ...");
		}
		i = j;
	}
	return count;
}

static int pool_check(struct fsck *c, struct pool *p, uint32_t *done, uint32_t total)
{
	static struct vmfsd_rc rc;
	static uint8_t diff[VMFSD_RC_BITS / 8];
	const size_t cb = VMFSD_RC_BITS / 8;
	uint32_t ci, k;
	char list[200];
	int r;

	for (ci = 0; ci < p->nclusters; ci++) {
		const uint8_t *ref = p->ref + ci * cb, *disk = p->disk + ci * cb;
		uint64_t first = (uint64_t)ci * VMFSD_RC_BITS, off = vmfsd_rc_off(&c->sb, p->kind, ci);
		uint32_t nitems = (uint32_t)(p->count - first < VMFSD_RC_BITS ? p->count - first :
					     VMFSD_RC_BITS);
		bool rewrite = p->cl_bad[ci] & (CL_BAD | CL_DIRTY);
		uint64_t n;

		fsck_progress(c, 6, "bitmaps", ++*done, total);
		if (!(p->cl_bad[ci] & CL_BAD) && memcmp(ref, disk, cb)) {
			for (k = 0; k < cb; k++)
				diff[k] = disk[k] & (uint8_t)~ref[k];
			n = ranges(diff, nitems, first, list, sizeof(list));
			if (n) {
				fsck_report(c, P_BM_LEAK, WHERE(W_BLOCK(off / VMFSD_META_BLOCK)),
					    "mark them free",
					    "%s bitmap cluster %u: %" PRIu64 " %s(s) marked in use but "
					    "not used: %s", p->name, ci, n, p->name, list);
				rewrite = true;
			}
			for (k = 0; k < cb; k++)
				diff[k] = ref[k] & (uint8_t)~disk[k];
			n = ranges(diff, nitems, first, list, sizeof(list));
			if (n) {
				/* Data pools were reported item by item with
				 * their owner; inodes are reported here. */
				if (p->kind == VMFSD_RC_INODE)
					fsck_report(c, P_BM_UNMARKED,
						    WHERE(W_BLOCK(off / VMFSD_META_BLOCK)),
						    "mark them in use",
						    "inode bitmap cluster %u: %" PRIu64 " inode(s) in use "
						    "but marked free: %s", ci, n, list);
				rewrite = true;
			}
		}
		if (!rewrite)
			continue;
		memset(&rc, 0, sizeof(rc));
		rc.kind = (uint16_t)p->kind;
		rc.index = ci;
		rc.nitems = nitems;
		rc.first_item = first;
		memcpy(rc.bitmap, ref, cb);
		rc.nfree = nitems;
		for (k = 0; k < nitems; k++)
			if (rc.bitmap[k / 8] & (1u << (k % 8)))
				rc.nfree--;
		r = ck_meta_read(c, off, c->scratch);
		if (r)
			return r;
		vmfsd_rc_encode(&rc, off / VMFSD_META_BLOCK, c->scratch);
		r = ck_wq_put(c, off, c->scratch, WQ_RC);
		if (r)
			return r;
	}
	return 0;
}

int fsck_bitmaps(struct fsck *c)
{
	uint32_t i, done = 0, total = c->ip.nclusters + c->sp.nclusters + c->bp.nclusters;
	int r;

	/* The inode truth: every record still in use.  Those the repair
	 * releases were reported already: drop them from our copy of the
	 * disk bits, so their clusters are rewritten without a second report. */
	for (i = 0; i < c->nir; i++) {
		struct irec *t = irec_at(c, i);

		if (t->state == IR_OK && !(t->flags & IRF_FREE))
			ck_ref_mark(c, &c->ip, t->ino);
		else if (!(t->flags & (IRF_FROM_ENTRY | IRF_BLANK)))
			ck_ref_drop(c, &c->ip, t->ino);
	}
	r = pool_check(c, &c->ip, &done, total);
	if (!r)
		r = pool_check(c, &c->sp, &done, total);
	if (!r)
		r = pool_check(c, &c->bp, &done, total);
	return r;
}
