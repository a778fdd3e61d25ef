// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Group commit of metadata through the host's journal.
 *
 * Operations merge their blocks into one running transaction (the newest
 * image of a block wins).  A commit writes it to the journal (flush, header,
 * descriptor+images, flush), then writes the images in place without a
 * flush: the next commit's first flush makes them durable, and until then
 * replay would rewrite them anyway.  Images stay in a pending table until
 * written in place, so an inode or node evicted from its cache and read
 * again never comes back stale from disk.
 *
 * Commits happen on fsync/fdatasync/O_SYNC, sync, unmount, every
 * COMMIT_INTERVAL_MS (COMMIT_ALONE_FACTOR times that while alone on the
 * volume) and as soon as the running transaction is a quarter of
 * what one journal transaction holds (both from the commit thread), and at
 * once when it is half of that.  Frees are applied only after the freeing
 * transaction is durable (never reuse a block a crash could bring back),
 * and the image of a freed sub-block is revoked from the pending table so
 * neither checkpoint nor replay can overwrite it once it holds file data.
 */
#include <errno.h>
#include <stdlib.h>

#include "fs_internal.h"

/* ext4 commits every 5 s; one second matches the coherency bound the
 * design promises other hosts and bounds what a crash without fsync loses. */
#define COMMIT_INTERVAL_MS 1000
/* While this host is alone on the volume the interval is this many times
 * longer: no other host can read what we changed before one joins, and
 * the committer then commits as soon as it sees the newcomer (polled every
 * CLUSTER_KEEP_POLL_MS), so only what a crash without fsync loses depends
 * on it, for which ext4's 5 s (JBD2_DEFAULT_MAX_COMMIT_AGE) is the usual
 * bound.  Each commit flushes the device twice, and the first flush makes
 * it write back everything written since the last one: on a file-backed
 * volume, 1 MiB first-touch writes alternated with a raw file ran at
 * 37-67 % of it (median 53 %) with a commit every second, 48-106 % (74 %)
 * with this (BENCHMARKS.md, "first touch and the commit's flush"). */
#define COMMIT_ALONE_FACTOR 5

static uint32_t phash(const struct fs *fs, uint64_t off)
{
	off &= ~VMFSD_JENTRY_KEEP_LOCK;
	return (uint32_t)(((off / VMFSD_META_BLOCK) * 0x9e3779b97f4a7c15ull) >> 40) &
	       (fs->ptab_size - 1);
}

/* Looks a block up by its offset, whatever flags it was logged with. */
static struct pend *pend_find(struct fs *fs, uint64_t off)
{
	struct pend *p;

	off &= ~VMFSD_JENTRY_KEEP_LOCK;
	for (p = fs->ptab[phash(fs, off)]; p; p = p->hnext)
		if ((p->off & ~VMFSD_JENTRY_KEEP_LOCK) == off)
			return p;
	return NULL;
}

static void pend_remove(struct fs *fs, struct pend *p)
{
	struct pend **pp = &fs->ptab[phash(fs, p->off)];

	while (*pp && *pp != p)
		pp = &(*pp)->hnext;
	if (*pp)
		*pp = p->hnext;
	bdev_free(p->img);
	free(p);
}

int meta_read(struct fs *fs, uint64_t off, void *buf)
{
	struct pend *p;

	pthread_mutex_lock(&fs->plock);
	p = fs->ptab ? pend_find(fs, off) : NULL;
	if (p) {
		memcpy(buf, p->img, VMFSD_META_BLOCK);
		pthread_mutex_unlock(&fs->plock);
		return 0;
	}
	pthread_mutex_unlock(&fs->plock);
	return bdev_pread(fs->bd, buf, VMFSD_META_BLOCK, off);
}

int meta_read_many(struct fs *fs, uint64_t off, uint32_t n, void *buf)
{
	uint32_t i;
	int r = bdev_pread(fs->bd, buf, (size_t)n * VMFSD_META_BLOCK, off);

	if (r)
		return r;
	/* After the read: meta_lock keeps the table as it is meanwhile, and
	 * only blocks still in it are being written in place. */
	pthread_mutex_lock(&fs->plock);
	for (i = 0; i < n; i++) {
		struct pend *p = pend_find(fs, off + (uint64_t)i * VMFSD_META_BLOCK);

		if (p)
			memcpy((uint8_t *)buf + (size_t)i * VMFSD_META_BLOCK, p->img,
			       VMFSD_META_BLOCK);
	}
	pthread_mutex_unlock(&fs->plock);
	return 0;
}

static int add_one(struct fs *fs, uint64_t off, const void *img)
{
	struct pend *p;

	pthread_mutex_lock(&fs->plock);
	p = pend_find(fs, off);
	if (!p) {
		uint32_t h = phash(fs, off);

		p = calloc(1, sizeof(*p));
		if (p)
			p->img = bdev_alloc(VMFSD_META_BLOCK);
		if (!p || !p->img) {
			free(p);
			pthread_mutex_unlock(&fs->plock);
			return -ENOMEM;
		}
		p->off = off;
		p->hnext = fs->ptab[h];
		fs->ptab[h] = p;
	}
	memcpy(p->img, img, VMFSD_META_BLOCK);
	p->ver = ++fs->pend_ver;
	pthread_mutex_unlock(&fs->plock);
	if (!p->running) {
		if (fs->nrun == fs->run_cap) {
			uint32_t cap = fs->run_cap ? fs->run_cap * 2 : 64;
			struct pend **nr = realloc(fs->run, cap * sizeof(*nr));

			if (!nr)
				return -ENOMEM;
			fs->run = nr;
			fs->run_cap = cap;
		}
		p->running = true;
		fs->run[fs->nrun++] = p;
	}
	return 0;
}

int commit_add_tx(struct fs *fs, struct tx *tx)
{
	uint32_t max = journal_max_blocks(fs->jn);
	int i, r = 0;

	if (fs->jerr)
		return fs->jerr;
	if ((uint32_t)tx->n > max)
		return -E2BIG;  /* callers split big operations */
	/* A caller's transaction never straddles two journal transactions. */
	if (fs->nrun + (uint32_t)tx->n > max)
		r = commit_locked(fs);
	for (i = 0; i < tx->n && !r; i++)
		r = add_one(fs, tx->b[i].off, tx->b[i].buf);
	/* A quarter full: the commit thread commits it now, without
	 * meta_lock for its writes, while operations go on merging into the
	 * next one.  Half full: the operation that got there commits it
	 * itself, with meta_lock held (only when the thread falls behind).
	 * Without the early start, every ~115th create in a burst (one
	 * inode block each; a transaction holds at most 252 blocks) waited
	 * 2.3-3.6 ms for a commit of its own, 47 % of all the time creates
	 * took (BENCHMARKS.md, "a commit for every 115 creates"). */
	if (!r && fs->nrun >= max / 2) {
		r = commit_locked(fs);
	} else if (!r && fs->nrun >= max / 4 && !fs->commit_soon && fs->committer_running) {
		fs->commit_soon = true;
		pthread_cond_signal(&fs->commit_cv);
	}
	return r;
}

/* A namespace operation changes a few blocks: the inodes, a directory
 * block or two, a bitmap block, the orphan list (rename of a directory
 * onto an empty one: 4 inodes, 2 directory blocks, an orphan entry). */
#define NS_TX_BLOCKS 16

bool commit_room(struct fs *fs)
{
	return fs->nrun + NS_TX_BLOCKS < journal_max_blocks(fs->jn) / 2;
}

void commit_revoke(struct fs *fs, uint64_t off)
{
	struct pend *p;
	uint32_t i;

	pthread_mutex_lock(&fs->plock);
	p = pend_find(fs, off);
	if (p) {
		if (p->running) {
			for (i = 0; i < fs->nrun && fs->run[i] != p; i++)
				;
			if (i < fs->nrun)
				fs->run[i] = fs->run[--fs->nrun];
		}
		pend_remove(fs, p);
	}
	pthread_mutex_unlock(&fs->plock);
}

void commit_defer_free(struct fs *fs, struct alloc_pool *p, uint64_t item)
{
	if (fs->ndfree == fs->dfree_cap) {
		uint32_t cap = fs->dfree_cap ? fs->dfree_cap * 2 : 256;
		struct dfree *n = realloc(fs->dfree, cap * sizeof(*n));

		if (!n)
			return; /* leaks the item; fsck reclaims it */
		fs->dfree = n;
		fs->dfree_cap = cap;
	}
	fs->dfree[fs->ndfree].p = p;
	fs->dfree[fs->ndfree].item = item;
	fs->ndfree++;
}

void commit_defer_reuse(struct fs *fs, const struct tx_free *f)
{
	if (fs->nreuse == fs->reuse_cap) {
		uint32_t cap = fs->reuse_cap ? fs->reuse_cap * 2 : 256;
		struct tx_free *n = realloc(fs->reuse, cap * sizeof(*n));

		if (!n)
			return;
		fs->reuse = n;
		fs->reuse_cap = cap;
	}
	fs->reuse[fs->nreuse++] = *f;
}

int commit_publish_locks(struct fs *fs)
{
	int r = fs->jerr ? fs->jerr : cluster_publish_new_locks(fs, fs->lk_new, fs->nlk_new);

	/* Not publishing a name whose file is unlocked: stop instead. */
	if (r)
		fs->jerr = r;
	else
		fs->nlk_new = 0;
	return r;
}

enum { CIO_IDLE, CIO_WRITING, CIO_WRITTEN };

/* What a stage allocated, gone (after its writes, or a failed stage). */
static void commit_stage_free(struct fs *fs)
{
	free(fs->cio_jb);
	free(fs->cio_ver);
	free(fs->cio_lk);
	fs->cio_jb = NULL;
	fs->cio_ver = NULL;
	fs->cio_lk = NULL;
	fs->cio_n = fs->cio_nreuse = fs->cio_nlk = 0;
}

/* Moves the running transaction into the journal's buffer (meta_lock
 * held): the run is empty after it, and its blocks stay in the pending
 * table, where later operations may change them again, until
 * commit_staged_done. */
static int commit_stage(struct fs *fs, bool checkpoint)
{
	uint32_t i, n = fs->nrun;
	int r = -ENOMEM;

	fs->cio_jb = malloc(n * sizeof(*fs->cio_jb));
	fs->cio_ver = malloc(n * sizeof(*fs->cio_ver));
	if (!fs->cio_jb || !fs->cio_ver)
		goto fail;
	for (i = 0; i < n; i++) {
		fs->cio_jb[i].target = fs->run[i]->off;
		fs->cio_jb[i].img = fs->run[i]->img;
		fs->cio_ver[i] = fs->run[i]->ver;
	}
	/* (copies the images: cio_jb points at the copies from here on) */
	r = journal_stage(fs->jn, fs->cio_jb, n);
	if (r)
		goto fail;
	for (i = 0; i < n; i++)
		fs->run[i]->running = false;
	fs->nrun = 0;
	fs->cio_n = n;
	fs->cio_nreuse = fs->nreuse;
	fs->cio_checkpoint = checkpoint;
	/* the locks of the new inodes it publishes: creates go on into a new
	 * list meanwhile (commit_locked published them already) */
	if (fs->nlk_new) {
		fs->cio_lk = fs->lk_new;
		fs->cio_nlk = fs->nlk_new;
		fs->lk_new = NULL;
		fs->nlk_new = fs->lk_new_cap = 0;
	}
	return 0;
fail:
	commit_stage_free(fs);
	return r;
}

/* The staged transaction to the journal, then in place (every block at
 * once; the journal holds them all until the next flush), and when the
 * stage asked for it the journal marked clean (journal_checkpoint), as
 * commit_locked does before a lock goes back.  Needs no lock: only one
 * staged transaction exists at a time, and the images are the journal's
 * copies. */
static int commit_write_staged(struct fs *fs)
{
	/* (not publishing a name whose file is unlocked: stop instead) */
	int r = cluster_publish_new_locks(fs, fs->cio_lk, fs->cio_nlk);

	if (!r)
		r = journal_write_staged(fs->jn);
	if (!r)
		r = journal_write_homes(fs->bd, &fs->sb, fs->cio_jb, fs->cio_n);
	if (!r && fs->cio_checkpoint)
		r = journal_checkpoint(fs->jn);
	return r;
}

/* After commit_write_staged returned R (meta_lock held): a block that no
 * operation changed again since it was staged leaves the pending table (it
 * is in place); the frees merged before the stage are durable now. */
static int commit_staged_done(struct fs *fs, int r)
{
	uint32_t i;

	if (r) {
		/* The journal is the only safe record now: stop writing. */
		fs->jerr = r;
	} else {
		fs->jdirty = !fs->cio_checkpoint;
		pthread_mutex_lock(&fs->plock);
		for (i = 0; i < fs->cio_n; i++) {
			struct pend *p = pend_find(fs, fs->cio_jb[i].target);

			if (p && p->ver == fs->cio_ver[i])
				pend_remove(fs, p);
		}
		pthread_mutex_unlock(&fs->plock);
		alloc_release_pending(fs, fs->reuse, fs->cio_nreuse);
		fs->nreuse -= fs->cio_nreuse;
		if (fs->nreuse)         /* (merged after the stage: the next commit's) */
			memmove(fs->reuse, fs->reuse + fs->cio_nreuse,
				fs->nreuse * sizeof(*fs->reuse));
	}
	commit_stage_free(fs);
	return r;
}

/* Ends a commit_unlocked whose writes are over (meta_lock held): waits for
 * them, with meta_lock held (they do not need it), then commit_staged_done. */
static void commit_settle(struct fs *fs)
{
	int r;

	pthread_mutex_lock(&fs->cio_lock);
	while (fs->cio_state == CIO_WRITING)
		pthread_cond_wait(&fs->cio_cv, &fs->cio_lock);
	if (fs->cio_state != CIO_WRITTEN) {
		pthread_mutex_unlock(&fs->cio_lock);
		return;
	}
	r = fs->cio_err;
	fs->cio_state = CIO_IDLE;
	pthread_mutex_unlock(&fs->cio_lock);
	(void)commit_staged_done(fs, r);
}

void commit_wait_io(struct fs *fs)
{
	pthread_mutex_lock(&fs->cio_lock);
	while (fs->cio_state == CIO_WRITING) {
		pthread_mutex_unlock(&fs->meta_lock);
		pthread_cond_wait(&fs->cio_cv, &fs->cio_lock);
		pthread_mutex_unlock(&fs->cio_lock);
		pthread_mutex_lock(&fs->meta_lock);
		pthread_mutex_lock(&fs->cio_lock);
	}
	pthread_mutex_unlock(&fs->cio_lock);
	commit_settle(fs);
}

int commit_unlocked(struct fs *fs)
{
	struct release_plan plan;
	int r;

	commit_wait_io(fs);
	if (fs->jerr)
		return fs->jerr;
	if (!fs->nrun)
		return commit_locked(fs);
	/* Locks will go back after it (always with other hosts present):
	 * its writes mark the journal clean too, so that commit_locked has
	 * no flush left to do under meta_lock for them. */
	cluster_plan_releases(fs, &plan);
	r = commit_stage(fs, cluster_has_releases(fs, &plan));
	if (r)
		return r;
	pthread_mutex_lock(&fs->cio_lock);
	fs->cio_state = CIO_WRITING;
	pthread_mutex_unlock(&fs->cio_lock);
	pthread_mutex_unlock(&fs->meta_lock);
	r = commit_write_staged(fs);
	pthread_mutex_lock(&fs->cio_lock);
	fs->cio_err = r;
	fs->cio_state = CIO_WRITTEN;
	pthread_cond_broadcast(&fs->cio_cv);
	pthread_mutex_unlock(&fs->cio_lock);
	pthread_mutex_lock(&fs->meta_lock);
	commit_settle(fs);
	if (fs->jerr)
		return fs->jerr;
	/* What operations merged meanwhile waits for the next commit, unless
	 * a lock goes back now: commit_locked writes it first, and gives
	 * back what its plan says, as without meta_lock let go. */
	cluster_plan_releases(fs, &plan);
	if (fs->nrun && !cluster_has_releases(fs, &plan))
		return 0;
	return commit_locked(fs);
}

int commit_locked(struct fs *fs)
{
	struct dfree *df;
	uint32_t i, ndf;
	struct tx tx;
	struct release_plan plan;
	int r = 0;

	commit_settle(fs);
	if (fs->jerr)
		return fs->jerr;
	/* The locks of the new inodes this commit may publish, before any
	 * of it reaches the disk (cluster_lock_new_inode). */
	r = commit_publish_locks(fs);
	if (r)
		return r;
	if (fs->nrun) {
		r = commit_stage(fs, false);
		if (!r)
			r = commit_staged_done(fs, commit_write_staged(fs));
		if (r)
			return r;
	} else {
		/* (frees merged without a block: durable as they are) */
		alloc_release_pending(fs, fs->reuse, fs->nreuse);
		fs->nreuse = 0;
	}
	/* Everything is in place: make that durable and the journal clean
	 * before other hosts may take these locks (a replay of this journal
	 * after a crash must not roll back what they write next).  Also when
	 * this commit wrote nothing: the last transaction may still be
	 * replayable (an earlier commit released nothing, so it did not mark
	 * the journal clean) and hold an image of what is given back now, a
	 * parked inode lock or a cluster once another host is present. */
	cluster_plan_releases(fs, &plan);
	if (fs->jdirty && cluster_has_releases(fs, &plan)) {
		r = journal_checkpoint(fs->jn);
		if (r) {
			fs->jerr = r;
			return r;
		}
		fs->jdirty = false;
	}
	/* Inode locks before clusters: a freed inode's number can be
	 * allocated by another host as soon as it gets the cluster, and its
	 * lock must be free by then, or that host's open of its brand-new file
	 * meets our lock (EBUSY once the commit is late, seen under load). */
	cluster_release_transient(fs, &plan);
	cluster_release_rcs(fs, false, plan.others);
	if (!fs->ndfree)
		return 0;
	/* Frees that found their cluster busy at another host: try again. */
	df = fs->dfree;
	ndf = fs->ndfree;
	fs->dfree = NULL;
	fs->ndfree = fs->dfree_cap = 0;
	for (i = 0; i < ndf && !r; i++) {
		int k;

		tx_begin(fs, &tx);
		if (alloc_free_now(fs, df[i].p, df[i].item, &tx))
			commit_defer_free(fs, df[i].p, df[i].item);     /* retry later */
		alloc_tx_merge(fs, &tx);
		for (k = 0; k < tx.n && !r; k++)
			r = add_one(fs, tx.b[k].off, tx.b[k].buf);
		/* Its frees wait for the next commit like any other. */
		for (k = 0; k < tx.nfreed; k++)
			commit_defer_reuse(fs, &tx.freed[k]);
		tx_abort(&tx);
		if (!r && fs->nrun + 1 >= journal_max_blocks(fs->jn))
			r = commit_locked(fs);
	}
	free(df);
	return r;
}

static void *committer_main(void *arg)
{
	struct fs *fs = arg;
	struct timespec ts;

	pthread_mutex_lock(&fs->meta_lock);
	while (!fs->stop) {
		int ms = fs->commit_interval_ms ? fs->commit_interval_ms : COMMIT_INTERVAL_MS;
		bool alone = cluster_keep_locks(fs);
		int64_t due;

		/* Set before the long wait, cleared after the commit that
		 * follows our sight of another host: a host that joins waits
		 * for that (cluster_start). */
		cluster_set_late(fs, alone);
		if (fs->stop)
			break;  /* asked while meta_lock was dropped there */
		if (alone)
			ms *= COMMIT_ALONE_FACTOR;
		due = hb_clock_ns() + (int64_t)ms * 1000000;
		/* One interval, or less: a signal, another host seen while we
		 * keep locks (it may be waiting for one of them) or while the
		 * interval is long because we were alone (it may be reading
		 * what we changed), or a fence. */
		for (;;) {
			int64_t left = due - hb_clock_ns();
			bool poll = fs->kept || alone;
			int wait_ms;

			if (left <= 0 || fs->commit_soon)
				break;
			wait_ms = (int)((left + 999999) / 1000000);
			if (poll && wait_ms > CLUSTER_KEEP_POLL_MS)
				wait_ms = CLUSTER_KEEP_POLL_MS;
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_nsec += (wait_ms % 1000) * 1000000L;
			ts.tv_sec += wait_ms / 1000 + ts.tv_nsec / 1000000000L;
			ts.tv_nsec %= 1000000000L;
			if (!pthread_cond_timedwait(&fs->commit_cv, &fs->meta_lock, &ts) ||
			    fs->stop || (poll && !cluster_keep_locks(fs)) ||
			    (alone && __atomic_load_n(&fs->fenced, __ATOMIC_RELAXED)))
				break;
			/* A burst of creates while alone: 5 s of them would
			 * all stay cached.  Written into the running
			 * transaction (the pending table keeps their images),
			 * they can go without a commit of their own. */
			if (inode_cache_over(fs)) {
				(void)inode_writeback_all_locked(fs);
				inode_shrink(fs);
			}
		}
		if (fs->stop)
			break;
		fs->commit_soon = false;
		(void)inode_writeback_all_locked(fs);
		(void)commit_unlocked(fs);
		inode_shrink(fs);
		/* Fenced: survivors may break our locks without a release of
		 * ours, so what the kernel caches by them must go now. */
		if (__atomic_load_n(&fs->fenced, __ATOMIC_RELAXED))
			cluster_cache_drop(fs);
		cluster_recover_dead(fs);
	}
	pthread_mutex_unlock(&fs->meta_lock);
	return NULL;
}

int commit_start(struct fs *fs, uint64_t next_seq)
{
	int r;

	fs->ptab_size = 1u << 12;
	fs->ptab = calloc(fs->ptab_size, sizeof(*fs->ptab));
	if (!fs->ptab)
		return -ENOMEM;
	r = journal_open(fs->bd, &fs->sb, fs->slot, next_seq, &fs->jn);
	if (r)
		return r;
	pthread_cond_init(&fs->commit_cv, NULL);
	pthread_mutex_init(&fs->cio_lock, NULL);
	pthread_cond_init(&fs->cio_cv, NULL);
	if (fs->commit_interval_ms < 0)
		return 0;       /* commits only when forced */
	r = -pthread_create(&fs->committer, NULL, committer_main, fs);
	if (!r)
		fs->committer_running = true;
	return r;
}

void commit_stop(struct fs *fs)
{
	uint32_t i;

	if (fs->committer_running) {
		pthread_mutex_lock(&fs->meta_lock);
		fs->stop = true;
		pthread_cond_signal(&fs->commit_cv);
		pthread_mutex_unlock(&fs->meta_lock);
		pthread_join(fs->committer, NULL);
		fs->committer_running = false;
	}
	for (i = 0; fs->ptab && i < fs->ptab_size; i++)
		while (fs->ptab[i])
			pend_remove(fs, fs->ptab[i]);
	free(fs->ptab);
	fs->ptab = NULL;
	free(fs->run);
	fs->run = NULL;
	fs->nrun = fs->run_cap = 0;
	free(fs->dfree);
	fs->dfree = NULL;
	fs->ndfree = fs->dfree_cap = 0;
	free(fs->reuse);
	fs->reuse = NULL;
	fs->nreuse = fs->reuse_cap = 0;
	journal_close(fs->jn);
	fs->jn = NULL;
}
