// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * The checker's driver: runs the passes, keeps the problems it is told
 * about, holds every repair in a write queue and writes the queue at the
 * end in a safe order, or not at all (read-only check, preen that met a
 * problem it may not fix, a volume in use).
 *
 * Why a queue rather than writing as we go: a repair decided in pass 3 may
 * be superseded in pass 5 (an inode first gets its block count fixed, then
 * is released as an orphan), the preen rule is all-or-nothing, and the
 * order of the final writes is what keeps an interrupted repair no worse
 * than the volume it started from: pointed-to blocks first, then what
 * points at them, bitmaps after that, the superblock last.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fsck_internal.h"

/* code, structure, error, preen may fix, fixable */
const struct pdef fsck_pdefs[P_COUNT] = {
	[P_LIVE_SNAPSHOT] = { "volume.in-use", "volume", false, false, false },
	[P_SB_PRIMARY_BAD] = { "superblock.primary", "superblock", true, true, true },
	[P_SB_BACKUP_BAD] = { "superblock.backup", "backup superblock", true, true, true },
	[P_SB_BACKUP_DIFFERS] = { "superblock.backup-differs", "backup superblock", true, true,
				  true },
	[P_JOURNAL_DIRTY] = { "journal.needs-replay", "journal", true, true, true },
	[P_JOURNAL_BAD] = { "journal.header", "journal", true, false, true },
	[P_JOURNAL_NOTE] = { "journal.not-replayed", "journal", false, false, false },
	[P_JOURNAL_TAIL] = { "journal.header-tail", "journal", true, true, true },
	[P_JOURNAL_FOREIGN] = { "journal.other-format", "journal", true, true, true },
	[P_HB_BAD] = { "heartbeat.damaged", "heartbeat slot", true, false, true },
	[P_HB_STALE] = { "heartbeat.stale", "heartbeat slot", true, true, true },
	[P_HB_FIELDS] = { "heartbeat.fields", "heartbeat slot", true, false, true },
	[P_LOCK_BAD] = { "lock.damaged", "lock record", true, true, true },
	[P_LOCK_STALE] = { "lock.stale", "lock record", false, true, true },
	[P_RC_BAD] = { "cluster.damaged", "resource cluster", true, false, true },
	[P_RC_HEADER] = { "cluster.header", "resource cluster", true, false, true },
	[P_BM_LEAK] = { "bitmap.leaked", "bitmap", true, true, true },
	[P_BM_UNMARKED] = { "bitmap.unmarked", "bitmap", true, true, true },
	[P_DUP_REF] = { "map.double-reference", "block map", true, false, true },
	[P_MAP_ENTRY] = { "map.entry", "block map", true, false, true },
	[P_MAP_NODE_BAD] = { "map.node", "map node", true, false, true },
	[P_MAP_PAST_EOF] = { "map.past-eof", "block map", true, false, true },
	[P_INODE_BAD] = { "inode.damaged", "inode", true, false, true },
	[P_INODE_TYPE] = { "inode.type", "inode", true, false, true },
	[P_INODE_NLINK] = { "inode.nlink", "inode", true, true, true },
	[P_INODE_UNITS] = { "inode.alloc-units", "inode", true, true, true },
	[P_INODE_INLINE_TAIL] = { "inode.inline-tail", "inode", true, true, true },
	[P_INODE_XATTR] = { "inode.xattr", "inode", true, false, true },
	[P_INODE_PARENT_FIELD] = { "inode.parent", "inode", true, true, true },
	[P_DIR_LAYOUT] = { "directory.layout", "directory", true, false, true },
	[P_DIR_SIZE] = { "directory.size", "directory", true, false, true },
	[P_DIR_BLOCK_BAD] = { "directory.block", "directory block", true, false, true },
	[P_DENT_DOT] = { "entry.dot", "directory entry", true, false, true },
	[P_DENT_DUP_NAME] = { "entry.duplicate", "directory entry", true, false, true },
	[P_DENT_BAD_TARGET] = { "entry.target", "directory entry", true, false, true },
	[P_DENT_DTYPE] = { "entry.type", "directory entry", true, true, true },
	[P_DIR_MULTI_LINK] = { "directory.extra-name", "directory entry", true, false, true },
	[P_DIR_PARENT] = { "directory.parent", "directory", true, true, true },
	[P_ROOT_BAD] = { "root", "root directory", true, false, true },
	[P_ORPHAN_FREED] = { "inode.orphan", "inode", true, true, true },
	[P_ORPHAN_RECONNECTED] = { "inode.unreachable", "inode", true, false, true },
	[P_LOST_FOUND] = { "lost+found.created", "lost+found", false, false, false },
	[P_LOST_FOUND_FAILED] = { "lost+found.unusable", "lost+found", true, false, false },
	[P_SUPPRESSED] = { "more", "", false, false, false },
};

/* Past this many problems of one kind, only a count is kept: a bitmap
 * cluster gone bad can otherwise produce one line per item. */
#define PROBLEMS_PER_CODE 100u

static void report_v(struct fsck *c, enum pcode k, const struct fsck_where *w, const char *fix,
		     bool immediate, const char *fmt, va_list ap)
{
	const struct pdef *d = &fsck_pdefs[k];
	struct fsck_result *res = c->res;
	struct fsck_problem *p;

	if (d->error) {
		res->found++;
		if (d->fixable && !d->preen_ok && !immediate)
			c->unsafe_found = true;
	}
	if (++c->pcount[k] > PROBLEMS_PER_CODE && k != P_SUPPRESSED) {
		c->psuppressed[k]++;
		return;
	}
	if (res->n_problems >= FSCK_MAX_PROBLEMS) {
		res->problems_dropped++;
		return;
	}
	if (res->n_problems == c->pcap) {
		uint32_t cap = c->pcap ? c->pcap * 2 : 64;
		struct fsck_problem *np = realloc(res->problems, cap * sizeof(*np));
		uint8_t *ni = realloc(c->pimmediate, cap);

		if (np)
			res->problems = np;
		if (ni)
			c->pimmediate = ni;
		if (!np || !ni) {
			/* Out of memory for the list: keep counting. */
			res->problems_dropped++;
			return;
		}
		c->pcap = cap;
	}
	p = &res->problems[res->n_problems];
	c->pimmediate[res->n_problems] = immediate;
	res->n_problems++;
	memset(p, 0, sizeof(*p));
	p->code = d->code;
	p->structure = d->structure;
	p->error = d->error;
	p->preen_ok = d->preen_ok;
	if (w)
		p->where = *w;
	vsnprintf(p->msg, sizeof(p->msg), fmt, ap);
	snprintf(p->fix, sizeof(p->fix), "%s", fix ? fix : "");
}

void fsck_report(struct fsck *c, enum pcode k, const struct fsck_where *w, const char *fix,
		 const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	report_v(c, k, w, fix, false, fmt, ap);
	va_end(ap);
}

void fsck_report_done(struct fsck *c, enum pcode k, const struct fsck_where *w,
		      const char *fix, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	report_v(c, k, w, fix, true, fmt, ap);
	va_end(ap);
}

void fsck_progress(struct fsck *c, int pass, const char *what, uint64_t done, uint64_t total)
{
	if (c->o->progress)
		c->o->progress(pass, FSCK_NPASSES, what, done, total, c->o->progress_arg);
}

/* ---------------- write queue ---------------- */

static uint32_t wq_hash(const struct fsck *c, uint64_t off)
{
	return (uint32_t)(((off / VMFSD_META_BLOCK) * 0x9e3779b97f4a7c15ull) >> 32) &
	       (c->wq_size - 1);
}

static struct wq_ent *wq_find(const struct fsck *c, uint64_t off)
{
	struct wq_ent *e;

	if (!c->wq_n)
		return NULL;
	for (e = c->wq[wq_hash(c, off)]; e; e = e->next)
		if (e->off == off)
			return e;
	return NULL;
}

static int wq_grow(struct fsck *c)
{
	uint32_t size = c->wq_size ? c->wq_size * 4 : 1024, i;
	struct wq_ent **t = calloc(size, sizeof(*t)), **old = c->wq;
	uint32_t osize = c->wq_size;

	if (!t)
		return -ENOMEM;
	c->wq = t;
	c->wq_size = size;
	for (i = 0; i < osize; i++) {
		while (old[i]) {
			struct wq_ent *e = old[i];
			uint32_t h = wq_hash(c, e->off);

			old[i] = e->next;
			e->next = t[h];
			t[h] = e;
		}
	}
	free(old);
	return 0;
}

int ck_wq_put(struct fsck *c, uint64_t off, const void *img, enum wq_class cls)
{
	struct wq_ent *e = c->wq_size ? wq_find(c, off) : NULL;
	uint32_t h;

	if (e) {
		memcpy(e->img, img, VMFSD_META_BLOCK);
		if (cls > e->cls)
			e->cls = (uint8_t)cls;
		return 0;
	}
	if (c->wq_n >= c->wq_size * 4 && wq_grow(c))
		return -ENOMEM;
	e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	e->img = bdev_alloc(VMFSD_META_BLOCK);
	if (!e->img) {
		free(e);
		return -ENOMEM;
	}
	memcpy(e->img, img, VMFSD_META_BLOCK);
	e->off = off;
	e->cls = (uint8_t)cls;
	h = wq_hash(c, off);
	e->next = c->wq[h];
	c->wq[h] = e;
	c->wq_n++;
	return 0;
}

int ck_wq_zero(struct fsck *c, uint64_t off, uint64_t len)
{
	struct zero_range *n = realloc(c->zr, (c->nzr + 1) * sizeof(*n));

	if (!n)
		return -ENOMEM;
	c->zr = n;
	c->zr[c->nzr].off = off;
	c->zr[c->nzr].len = len;
	c->nzr++;
	return 0;
}

int ck_meta_read(struct fsck *c, uint64_t off, void *buf)
{
	struct wq_ent *e = wq_find(c, off);

	if (e) {
		memcpy(buf, e->img, VMFSD_META_BLOCK);
		return 0;
	}
	return bdev_pread(c->bd, buf, VMFSD_META_BLOCK, off);
}

int ck_meta_read_many(struct fsck *c, uint64_t off, void *buf, size_t len)
{
	size_t i;
	int r = bdev_pread(c->bd, buf, len, off);

	if (r || !c->wq_n)
		return r;
	for (i = 0; i < len; i += VMFSD_META_BLOCK) {
		struct wq_ent *e = wq_find(c, off + i);

		if (e)
			memcpy((uint8_t *)buf + i, e->img, VMFSD_META_BLOCK);
	}
	return 0;
}

static int wq_cmp(const void *a, const void *b)
{
	const struct wq_ent *x = *(struct wq_ent *const *)a, *y = *(struct wq_ent *const *)b;

	if (x->cls != y->cls)
		return x->cls < y->cls ? -1 : 1;
	return x->off < y->off ? -1 : x->off > y->off;
}

static void wq_free(struct fsck *c)
{
	uint32_t i;

	for (i = 0; i < c->wq_size; i++) {
		while (c->wq[i]) {
			struct wq_ent *e = c->wq[i];

			c->wq[i] = e->next;
			bdev_free(e->img);
			free(e);
		}
	}
	free(c->wq);
	c->wq = NULL;
	c->wq_size = c->wq_n = 0;
	free(c->zr);
	c->zr = NULL;
	c->nzr = 0;
}

/* Writes the queue: zeroed journal areas, then class by class.  A flush
 * separates everything from the backup superblock, and the backup from the
 * primary, so the superblock never describes a state not yet on disk. */
static int wq_commit(struct fsck *c)
{
	struct wq_ent **v;
	uint32_t i, n = 0, k;
	int r = 0;

	for (i = 0; i < c->nzr && !r; i++)
		r = bdev_zero(c->bd, c->zr[i].off, c->zr[i].len);
	if (r)
		return r;
	if (!c->wq_n)
		return c->nzr ? bdev_flush(c->bd) : 0;
	v = malloc(c->wq_n * sizeof(*v));
	if (!v)
		return -ENOMEM;
	for (i = 0; i < c->wq_size; i++) {
		struct wq_ent *e;

		for (e = c->wq[i]; e; e = e->next)
			v[n++] = e;
	}
	qsort(v, n, sizeof(*v), wq_cmp);
	for (k = 0; k < n && !r; k++) {
		if (k && v[k]->cls >= WQ_SB_BACKUP && v[k - 1]->cls != v[k]->cls)
			r = bdev_flush(c->bd);
		if (!r)
			r = bdev_pwrite(c->bd, v[k]->img, VMFSD_META_BLOCK, v[k]->off);
	}
	if (!r)
		r = bdev_flush(c->bd);
	free(v);
	return r;
}

/* ---------------- result ---------------- */

static void finish_problems(struct fsck *c, bool committed)
{
	struct fsck_result *res = c->res;
	uint32_t i;
	int k;

	res->fixed = res->left = 0;
	for (i = 0; i < res->n_problems; i++) {
		struct fsck_problem *p = &res->problems[i];
		const struct pdef *d = &fsck_pdefs[0];

		for (k = 0; k < P_COUNT; k++)
			if (fsck_pdefs[k].code == p->code)
				d = &fsck_pdefs[k];
		if (!p->error)
			p->action = FSCK_ACT_NONE;
		else if (c->pimmediate[i] || (d->fixable && committed))
			p->action = FSCK_ACT_FIXED;
		else
			p->action = FSCK_ACT_LEFT;
		if (p->action == FSCK_ACT_FIXED)
			res->fixed++;
		else if (p->action == FSCK_ACT_LEFT)
			res->left++;
	}
	/* Problems not kept one by one (flood control, list full). */
	for (k = 0; k < P_COUNT; k++) {
		uint64_t extra = c->psuppressed[k];

		if (!extra || !fsck_pdefs[k].error)
			continue;
		if (fsck_pdefs[k].fixable && committed)
			res->fixed += extra;
		else
			res->left += extra;
		fsck_report(c, P_SUPPRESSED, NULL, NULL, "%" PRIu64 " more problem(s) like '%s' %s",
			    extra, fsck_pdefs[k].code,
			    fsck_pdefs[k].fixable && committed ? "(repaired)" : "(not repaired)");
	}
	if (res->problems_dropped) {
		/* Kept out of the list for lack of room: their kinds are lost,
		 * so count them by the overall outcome. */
		if (committed && !c->unsafe_found)
			res->fixed += res->problems_dropped;
		else
			res->left += res->problems_dropped;
	}
	/* Anything counted as found and not yet placed is left. */
	if (res->fixed + res->left < res->found)
		res->left = res->found - res->fixed;
}

void fsck_result_free(struct fsck_result *res)
{
	if (!res)
		return;
	free(res->problems);
	res->problems = NULL;
	res->n_problems = 0;
}

int fsck_exit_status(int rc, const struct fsck_result *res)
{
	if (rc < 0)
		return 8;
	if (res->left)
		return 4;
	if (res->fixed)
		return 1;
	return 0;
}

static void pool_free(struct pool *p)
{
	free(p->disk);
	free(p->ref);
	free(p->cl_bad);
	memset(p, 0, sizeof(*p));
}

static void fsck_free(struct fsck *c)
{
	uint32_t i;

	wq_free(c);
	pool_free(&c->ip);
	pool_free(&c->sp);
	pool_free(&c->bp);
	for (i = 0; i < c->nir; i++)
		free(irec_at(c, i)->db);
	for (i = 0; i < c->nchunks; i++)
		free(c->chunks[i]);
	free(c->chunks);
	free(c->ihash);
	free(c->in);
	free(c->ents);
	free(c->names);
	free(c->pimmediate);
	bdev_free(c->scratch);
}

/* Releases the OFD lock pass 1 took for the repair (the caller keeps the
 * device open, so closing cannot release it for us). */
static void unlock_volume(struct fsck *c)
{
	if (c->locked)
		(void)bdev_unlock_range(c->bd, c->sb.hb_off,
					(uint64_t)c->sb.max_hosts * VMFSD_META_BLOCK);
	c->locked = false;
}

static void count_inodes(struct fsck *c)
{
	struct fsck_result *res = c->res;
	uint32_t i;

	for (i = 0; i < c->nir; i++) {
		const struct irec *r = irec_at(c, i);

		if (r->state != IR_OK || (r->flags & IRF_FREE))
			continue;
		res->inodes_used++;
		if (S_ISDIR(r->mode))
			res->dirs++;
		else if (S_ISREG(r->mode))
			res->files++;
		else if (S_ISLNK(r->mode))
			res->symlinks++;
		else
			res->others++;
	}
	res->sub_used = c->sp.nref;
	res->blocks_used = c->bp.nref;
}

int fsck_check(struct bdev *bd, const struct fsck_opts *o, struct fsck_result *res)
{
	struct fsck c;
	bool committed = false, more;
	uint32_t i;
	int r;

	memset(res, 0, sizeof(*res));
	res->live_slot = -1;
	memset(&c, 0, sizeof(c));
	c.bd = bd;
	c.o = o;
	c.res = res;
	c.repair = o->mode != FSCK_READONLY;
	c.dev_size = bdev_size(bd);
	c.scratch = bdev_alloc(VMFSD_META_BLOCK);
	if (!c.scratch)
		return -ENOMEM;

	r = fsck_volume(&c);
	if (!r)
		r = fsck_clusters(&c);
	if (!r)
		r = fsck_inodes(&c);
	/* Entries may name inodes a damaged inode-bitmap cluster no longer
	 * vouches for: read those, and the directories among them, until
	 * nothing new turns up. */
	for (more = true; !r && more;) {
		r = fsck_dirs(&c, &more);
		if (!r && more)
			r = fsck_inodes_more(&c, &more);
	}
	if (!r)
		r = fsck_namespace(&c);
	if (!r)
		r = fsck_bitmaps(&c);
	if (r)
		goto out;

	if (c.repair && !res->live) {
		if (o->mode == FSCK_PREEN && c.unsafe_found) {
			res->preen_refused = true;
		} else {
			r = wq_commit(&c);
			if (r)
				goto out;
			committed = true;
		}
	}
	count_inodes(&c);
	finish_problems(&c, committed);
	if (o->problem)
		for (i = 0; i < res->n_problems; i++)
			o->problem(&res->problems[i], o->problem_arg);
out:
	unlock_volume(&c);
	fsck_free(&c);
	return r;
}
