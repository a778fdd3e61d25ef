// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * The in-memory inode cache.  An inode stays cached while the kernel holds
 * lookup references, a file handle is open, or fs code pins it; when the
 * last reference goes it is written back (if dirty) and, if it has no names
 * left, its blocks and inode number are freed.  Past fs->icache_max cached
 * inodes, those only the kernel's lookup references hold go too, leaving
 * a ghost (inode_shrink, below).  Reads of an inode from disk
 * go through the shared verifier, so a damaged inode is reported (-EUCLEAN)
 * rather than trusted.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "fs_internal.h"

static uint32_t hash_ino(const struct fs *fs, uint64_t ino)
{
	return (uint32_t)((ino * 0x9e3779b97f4a7c15ull) >> 32) & (fs->itab_size - 1);
}

/* The count of evictions of numbers that share INO's (icache_lock). */
static uint32_t *evict_seq(struct fs *fs, uint64_t ino)
{
	return &fs->evict_seq[hash_ino(fs, ino) % (sizeof(fs->evict_seq) / sizeof(fs->evict_seq[0]))];
}

static struct fs_inode *icache_find(struct fs *fs, uint64_t ino)
{
	struct fs_inode *ip;

	for (ip = fs->itab[hash_ino(fs, ino)]; ip; ip = ip->hnext)
		if (ip->ino == ino)
			return ip;
	return NULL;
}

static void icache_insert(struct fs *fs, struct fs_inode *ip)
{
	uint32_t h = hash_ino(fs, ip->ino);

	ip->hnext = fs->itab[h];
	fs->itab[h] = ip;
	fs->ninodes_cached++;
}

/* IP leaves the cache (inode_put, inode_shrink); counted for inode_get. */
static void icache_remove(struct fs *fs, struct fs_inode *ip)
{
	struct fs_inode **pp = &fs->itab[hash_ino(fs, ip->ino)];

	while (*pp && *pp != ip)
		pp = &(*pp)->hnext;
	if (*pp) {
		*pp = ip->hnext;
		fs->ninodes_cached--;
		(*evict_seq(fs, ip->ino))++;
	}
}

/* ---------------- evicted inodes the kernel still knows ----------------
 *
 * The kernel keeps an inode it looked up (and so vmfsd's struct, nearly a
 * page: the decoded on-disk inode carries its inline data and attributes)
 * until memory pressure makes it forget it: 100,000 files created and
 * looked up once held 390 MiB of vmfsd's memory.  So past fs->icache_max
 * cached inodes, the commit thread gives back the structs of inodes
 * nobody uses (inode_shrink).  What the kernel's reference still needs
 * stays in a ghost of a few dozen bytes: the lookup count that its FORGET
 * takes back and the generation it was given (cluster_check_kgen).  What
 * the kernel caches for long by the inode's lock goes first
 * (cluster_cache_evict), since the lock goes back at the next commit.
 * inode_get reads an evicted inode again from disk (or
 * the pending table: never stale) and takes its ghost back. */
struct ighost {
	struct ighost *next;
	uint64_t ino, nlookup, kgen;
};

/* The link that points to INO's ghost; NULL if it has none (icache_lock
 * held). */
static struct ighost **ghost_link(struct fs *fs, uint64_t ino)
{
	struct ighost **pp;

	if (!fs->gtab)
		return NULL;
	for (pp = &fs->gtab[hash_ino(fs, ino)]; *pp; pp = &(*pp)->next)
		if ((*pp)->ino == ino)
			return pp;
	return NULL;
}

/* The ghost at link PP out of the table, and freed. */
static void ghost_drop(struct ighost **pp)
{
	struct ighost *g = *pp;

	*pp = g->next;
	free(g);
}

/* IP's ghost, if it left one, back into IP (icache_lock held). */
static void ghost_take(struct fs *fs, struct fs_inode *ip)
{
	struct ighost **pp = ghost_link(fs, ip->ino);

	if (!pp)
		return;
	ip->nlookup = (*pp)->nlookup;
	ip->kgen = (*pp)->kgen;
	ghost_drop(pp);
}

static void ghosts_free(struct fs *fs)
{
	uint32_t i;

	for (i = 0; fs->gtab && i < fs->itab_size; i++)
		while (fs->gtab[i])
			ghost_drop(&fs->gtab[i]);
	free(fs->gtab);
	fs->gtab = NULL;
}

/* Inode structs, INODE_CHUNK at a time.  A struct is nearly a page (the
 * decoded on-disk inode carries its inline data), and while the cache
 * grows (a create, a first lookup) each came from fresh heap: an mprotect
 * and a page fault or two, each a trip through the hypervisor on this kind
 * of virtual CPU.  That was half of a CREATE's time (perf, 8,000 creates
 * of small files: 368 of 713 samples in the create path; the median
 * CREATE 29-35 us before, 17-21 us after).  A chunk's pages are made in
 * one mmap (MAP_POPULATE); a chunk whose structs are all free again is
 * unmapped unless it is the only one with room, so memory follows the
 * cache's size, as with malloc.  Under fs->icache_lock. */
#define INODE_CHUNK 64

struct imem_chunk {
	struct imem_chunk *prev, *next;         /* fs->imem_room: chunks with room */
	struct fs_inode *free;                  /* linked through hnext */
	uint32_t nfree;
	bool listed;                            /* on fs->imem_room */
	size_t len;
	struct fs_inode v[];
};

static void imem_list(struct fs *fs, struct imem_chunk *c)
{
	c->prev = NULL;
	c->next = fs->imem_room;
	if (c->next)
		c->next->prev = c;
	fs->imem_room = c;
	c->listed = true;
}

static void imem_unlist(struct fs *fs, struct imem_chunk *c)
{
	if (c->prev)
		c->prev->next = c->next;
	else
		fs->imem_room = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->listed = false;
}

static struct fs_inode *imem_get(struct fs *fs)
{
	struct imem_chunk *c;
	struct fs_inode *ip;

	pthread_mutex_lock(&fs->icache_lock);
	c = fs->imem_room;
	if (!c) {
		size_t len = sizeof(*c) + INODE_CHUNK * sizeof(struct fs_inode);
		int i;

		c = mmap(NULL, len, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
		if (c == MAP_FAILED) {
			pthread_mutex_unlock(&fs->icache_lock);
			return NULL;
		}
		c->len = len;
		for (i = INODE_CHUNK - 1; i >= 0; i--) {
			c->v[i].hnext = c->free;
			c->free = &c->v[i];
		}
		c->nfree = INODE_CHUNK;
		imem_list(fs, c);
	}
	ip = c->free;
	c->free = ip->hnext;
	if (!--c->nfree)
		imem_unlist(fs, c);
	pthread_mutex_unlock(&fs->icache_lock);
	memset(ip, 0, sizeof(*ip));
	ip->chunk = c;
	return ip;
}

static void imem_put(struct fs *fs, struct fs_inode *ip)
{
	struct imem_chunk *c = ip->chunk;

	pthread_mutex_lock(&fs->icache_lock);
	ip->hnext = c->free;
	c->free = ip;
	c->nfree++;
	if (!c->listed)
		imem_list(fs, c);
	if (c->nfree == INODE_CHUNK && (c->prev || c->next)) {
		imem_unlist(fs, c);
		munmap(c, c->len);
	}
	pthread_mutex_unlock(&fs->icache_lock);
}

/* The last chunk, once inode_cache_drop_all freed every struct. */
void inode_mem_release(struct fs *fs)
{
	while (fs->imem_room) {
		struct imem_chunk *c = fs->imem_room;

		imem_unlist(fs, c);
		munmap(c, c->len);
	}
}

/* The inodes inode_touch made dirty, for inode_writeback_all_locked: a
 * walk of the whole cache (65,536 buckets and every cached inode, most of
 * them a page of their own) under meta_lock at each commit, up to 80
 * commits a second in a burst of creates, held up every other operation of
 * the host meanwhile.  Under meta_lock. */
static void dlist_add(struct fs *fs, struct fs_inode *ip)
{
	if (ip->on_dlist)
		return;
	ip->dprev = NULL;
	ip->dnext = fs->dirty_head;
	if (ip->dnext)
		ip->dnext->dprev = ip;
	fs->dirty_head = ip;
	ip->on_dlist = true;
}

static void dlist_del(struct fs *fs, struct fs_inode *ip)
{
	if (!ip->on_dlist)
		return;
	if (ip->dprev)
		ip->dprev->dnext = ip->dnext;
	else
		fs->dirty_head = ip->dnext;
	if (ip->dnext)
		ip->dnext->dprev = ip->dprev;
	ip->on_dlist = false;
}

static struct fs_inode *inode_new_mem(struct fs *fs, uint64_t ino)
{
	struct fs_inode *ip = imem_get(fs);

	if (!ip)
		return NULL;
	ip->ino = ino;
	iolock_init(&ip->iolock);
	pthread_mutex_init(&ip->lk_io, NULL);
	return ip;
}

static void inode_free_mem(struct fs *fs, struct fs_inode *ip)
{
	dir_cache_free(ip);
	bmap_cache_drop(ip);
	iolock_destroy(&ip->iolock);
	pthread_mutex_destroy(&ip->lk_io);
	imem_put(fs, ip);
}

/* Decodes BLK as inode number INO's block. */
static int inode_decode_as(const struct fs *fs, uint64_t ino, const void *blk,
			   struct vmfsd_inode *out)
{
	int r = vmfsd_inode_decode(blk, vmfsd_inode_off(&fs->sb, ino) / VMFSD_META_BLOCK, out);

	return !r && out->ino != ino ? -EUCLEAN : r;
}

static int inode_read(struct fs *fs, uint64_t ino, struct vmfsd_inode *out)
{
	void *blk = bdev_alloc(VMFSD_META_BLOCK);
	int r;

	if (!blk)
		return -ENOMEM;
	r = meta_read(fs, vmfsd_inode_off(&fs->sb, ino), blk);
	if (!r)
		r = inode_decode_as(fs, ino, blk, out);
	bdev_free(blk);
	return r;
}

int inode_get(struct fs *fs, uint64_t ino, struct fs_inode **out)
{
	struct fs_inode *ip, *other;
	uint32_t evictions;
	int r;

	if (ino < VMFSD_ROOT_INO || ino >= fs->sb.inode_count)
		return -ESTALE;
again:
	pthread_mutex_lock(&fs->icache_lock);
	ip = icache_find(fs, ino);
	if (ip) {
		ip->pins++;
		pthread_mutex_unlock(&fs->icache_lock);
		*out = ip;
		return 0;
	}
	evictions = *evict_seq(fs, ino);
	pthread_mutex_unlock(&fs->icache_lock);

	/* No bitmap check: our copy of another host's cluster may be stale;
	 * the inode block itself says whether it is in use (mode 0: free). */
	ip = inode_new_mem(fs, ino);
	if (!ip)
		return -ENOMEM;
	r = inode_read(fs, ino, &ip->d);
	if (!r && ip->d.mode == 0)
		r = -ESTALE;
	pthread_mutex_lock(&fs->icache_lock);
	if (*evict_seq(fs, ino) != evictions && !icache_find(fs, ino)) {
		/* A copy cached, changed and evicted while we read may be
		 * newer than ours (its image is in the pending table now):
		 * read again. */
		pthread_mutex_unlock(&fs->icache_lock);
		inode_free_mem(fs, ip);
		goto again;
	}
	if (r) {
		pthread_mutex_unlock(&fs->icache_lock);
		inode_free_mem(fs, ip);
		return r;
	}
	other = icache_find(fs, ino);
	if (other) {
		other->pins++;
		pthread_mutex_unlock(&fs->icache_lock);
		inode_free_mem(fs, ip);
		*out = other;
		return 0;
	}
	ip->pins = 1;
	ghost_take(fs, ip);
	icache_insert(fs, ip);
	pthread_mutex_unlock(&fs->icache_lock);
	*out = ip;
	return 0;
}

bool inode_forget_ghost(struct fs *fs, uint64_t ino, uint64_t nlookup)
{
	struct ighost **pp;

	pthread_mutex_lock(&fs->icache_lock);
	pp = icache_find(fs, ino) ? NULL : ghost_link(fs, ino);
	if (pp && (*pp)->nlookup > nlookup)
		(*pp)->nlookup -= nlookup;
	else if (pp)
		ghost_drop(pp);
	pthread_mutex_unlock(&fs->icache_lock);
	return pp != NULL;
}

/* Is IP's last name gone and ours to free (meta_lock held)?  Only the
 * host that removed the last name frees the inode: it has it on its orphan
 * list, and the others may hold it open still. */
static bool inode_ours_to_delete(struct fs *fs, const struct fs_inode *ip)
{
	return ip->d.nlink == 0 && !ip->deleted &&
	       (ip->unlinked_here || orphan_listed(fs, ip->ino));
}

static bool evictable_after_put(const struct fs_inode *ip)
{
	return ip->pins == 1 && ip->nlookup == 0 && ip->nopen == 0;
}

/* Frees an unlinked inode's blocks and number (meta_lock held). */
static void inode_delete(struct fs *fs, struct fs_inode *ip)
{
	struct tx tx;

	/* A failure leaks the inode (nlink 0, still allocated); fsck reclaims
	 * it.  Nothing a caller could do: the last reference is gone. */
	if (file_free_range_locked(fs, ip, 0, UINT64_MAX) == 0) {
		tx_begin(fs, &tx);
		ip->d.mode = 0;
		tx_add_inode(&tx, ip);
		alloc_free(fs, &fs->ipool, ip->ino, &tx);
		orphan_del(fs, ip->ino, &tx);
		(void)tx_commit(&tx);
	}
	ip->deleted = true;
}

void inode_put(struct fs *fs, struct fs_inode *ip)
{
	if (!ip)
		return;
	pthread_mutex_lock(&fs->icache_lock);
	if (!evictable_after_put(ip)) {
		ip->pins--;
		pthread_mutex_unlock(&fs->icache_lock);
		return;
	}
	pthread_mutex_unlock(&fs->icache_lock);

	/* Last reference: write back or delete with the inode still hashed,
	 * so a concurrent inode_get() finds it instead of a stale disk copy. */
	pthread_mutex_lock(&fs->meta_lock);
	pthread_mutex_lock(&fs->icache_lock);
	if (!evictable_after_put(ip)) {
		ip->pins--;
		pthread_mutex_unlock(&fs->icache_lock);
		pthread_mutex_unlock(&fs->meta_lock);
		return;
	}
	pthread_mutex_unlock(&fs->icache_lock);
	if (!fs->readonly) {
		if (inode_ours_to_delete(fs, ip))
			inode_delete(fs, ip);
		else if (ip->dirty)
			(void)inode_writeback(fs, ip);
	}
	pthread_mutex_lock(&fs->icache_lock);
	ip->pins--;
	if (ip->pins || ip->nlookup || ip->nopen) {
		/* Re-found while we wrote it back: keep it. */
		pthread_mutex_unlock(&fs->icache_lock);
		pthread_mutex_unlock(&fs->meta_lock);
		return;
	}
	icache_remove(fs, ip);
	pthread_mutex_unlock(&fs->icache_lock);
	dlist_del(fs, ip);
	cluster_forget_inode(fs, ip);
	pthread_mutex_unlock(&fs->meta_lock);
	inode_free_mem(fs, ip);
}

uint32_t inode_unit_size(const struct fs *fs, const struct fs_inode *ip)
{
	return ip->d.data_mode == VMFSD_DATA_BLOCK ? fs->sb.block_size : VMFSD_SUB_BLOCK_SIZE;
}

/* The generation inode number INO had last (0: never used, or not
 * readable), for inode_alloc (meta_lock held).  Each number is an inode
 * block of its own, so this was a synchronous read per create: 30-50 us of
 * a create's ~55 us here (BENCHMARKS.md, "where a create's time goes"), a
 * network round trip on an iSCSI LUN.  So one read fetches the next
 * IGEN_BATCH blocks (64: one read per 64 creates instead of 16 took the
 * FUSE CREATE's p90 from 61-76 to 33-34 us, tracepoints over 4,000
 * creates) and keeps the generations of the numbers among them that are
 * free in a cluster this host holds.  They stay right: a
 * generation changes only when its number is allocated, no other host
 * allocates in a cluster we hold, our own allocations take their entry
 * out here, and every release of an inode cluster drops them all
 * (inode_gen_forget). */
static uint64_t old_generation(struct fs *fs, uint64_t ino)
{
	uint64_t k = ino - fs->igen_first, gen = 0;
	struct vmfsd_inode d;
	uint32_t i, n;
	uint8_t *blk;

	if (ino >= fs->igen_first && k < IGEN_BATCH && (fs->igen_mask >> k & 1)) {
		fs->igen_mask &= ~(1ull << k);
		return fs->igen[k];
	}
	n = fs->sb.inode_count - ino < IGEN_BATCH ? (uint32_t)(fs->sb.inode_count - ino)
						  : IGEN_BATCH;
	blk = bdev_alloc((size_t)n * VMFSD_META_BLOCK);
	if (!blk)
		return 0;
	if (meta_read_many(fs, vmfsd_inode_off(&fs->sb, ino), n, blk)) {
		bdev_free(blk);
		return 0;
	}
	fs->igen_first = ino;
	fs->igen_mask = 0;
	for (i = 0; i < n; i++) {
		uint64_t g = 0;

		if (!inode_decode_as(fs, ino + i, blk + (size_t)i * VMFSD_META_BLOCK, &d))
			g = d.generation;
		if (i == 0) {
			gen = g;
		} else if (alloc_item_free_here(fs, &fs->ipool, ino + i)) {
			fs->igen[i] = g;
			fs->igen_mask |= 1ull << i;
		}
	}
	bdev_free(blk);
	return gen;
}

void inode_gen_forget(struct fs *fs)
{
	fs->igen_mask = 0;
}

int inode_alloc(struct fs *fs, uint32_t mode, uint32_t uid, uint32_t gid,
		uint64_t parent, struct tx *tx, struct fs_inode **out)
{
	struct fs_inode *ip;
	struct timespec now;
	uint64_t ino, gen;
	int r;

	for (int tries = 0;; tries++) {
		r = alloc_item(fs, &fs->ipool, parent, tx, &ino);
		if (r)
			return r;
		/* The number may still have an inode object here: the file
		 * that had it before (freed by us or by another host) that the
		 * kernel still references.  There must never be two objects
		 * of one number: the cluster lock state lives in the object
		 * but the on-disk lock record belongs to the number, and the
		 * stale object releasing "its" lock after a commit would
		 * free the lock the new file's open holds (docs/cluster.md
		 * §5).  So the new file takes the object over (its lock state
		 * with it; the kernel's old references still get ESTALE by
		 * generation).  One still open here is not taken: that number
		 * goes back and another is allocated. */
		pthread_mutex_lock(&fs->icache_lock);
		ip = icache_find(fs, ino);
		if (ip && ip->nopen) {
			pthread_mutex_unlock(&fs->icache_lock);
			alloc_free(fs, &fs->ipool, ino, tx);
			if (tries == 8)
				return -EUCLEAN;
			continue;
		}
		if (ip)
			ip->pins++;
		pthread_mutex_unlock(&fs->icache_lock);
		break;
	}
	/* Keep generations increasing across reuse of an inode number, so a
	 * stale handle or a stale map/directory block is recognised. */
	gen = old_generation(fs, ino) + 1;
	if (ip) {
		if (ip->d.generation >= gen)
			gen = ip->d.generation + 1;
		dir_cache_free(ip);
		bmap_cache_drop(ip);
		memset(&ip->d, 0, sizeof(ip->d));
		ip->dirty = ip->deleted = ip->unlinked_here = false;
		pthread_mutex_lock(&fs->lk_lock);
		ip->lk_fresh = false;
		pthread_mutex_unlock(&fs->lk_lock);
	} else {
		ip = inode_new_mem(fs, ino);
		if (!ip) {
			alloc_free(fs, &fs->ipool, ino, tx);
			return -ENOMEM;
		}
		ip->pins = 1;
		pthread_mutex_lock(&fs->icache_lock);
		icache_insert(fs, ip);
		pthread_mutex_unlock(&fs->icache_lock);
	}
	fs_now(&now);
	ip->d.ino = ino;
	ip->d.generation = gen;
	ip->d.mode = mode;
	ip->d.uid = uid;
	ip->d.gid = gid;
	ip->d.nlink = S_ISDIR(mode) ? 2 : 1;
	ip->d.data_mode = S_ISDIR(mode) ? VMFSD_DATA_SUB : VMFSD_DATA_INLINE;
	ip->d.parent = S_ISDIR(mode) ? parent : 0;
	ip->d.atime_sec = ip->d.mtime_sec = ip->d.ctime_sec = ip->d.btime_sec = now.tv_sec;
	ip->d.atime_nsec = ip->d.mtime_nsec = ip->d.ctime_nsec = ip->d.btime_nsec =
		(uint32_t)now.tv_nsec;
	tx_add_inode(tx, ip);
	*out = ip;
	return 0;
}

void inode_touch(struct fs *fs, struct fs_inode *ip, bool mtime, bool ctime)
{
	struct timespec now;

	fs_now(&now);
	if (mtime) {
		ip->d.mtime_sec = now.tv_sec;
		ip->d.mtime_nsec = (uint32_t)now.tv_nsec;
	}
	if (ctime) {
		ip->d.ctime_sec = now.tv_sec;
		ip->d.ctime_nsec = (uint32_t)now.tv_nsec;
	}
	ip->dirty = true;
	dlist_add(fs, ip);
}

void inode_fill_attr(struct fs *fs, struct fs_inode *ip, struct fs_attr *a)
{
	memset(a, 0, sizeof(*a));
	a->ino = ip->ino;
	a->generation = ip->d.generation;
	a->mode = ip->d.mode;
	a->uid = ip->d.uid;
	a->gid = ip->d.gid;
	a->nlink = ip->d.nlink;
	a->size = ip->d.size;
	a->blocks = ip->d.alloc_units;
	a->rdev = ip->d.rdev;
	a->blksize = inode_unit_size(fs, ip);
	a->atime.tv_sec = ip->d.atime_sec;
	a->atime.tv_nsec = ip->d.atime_nsec;
	a->mtime.tv_sec = ip->d.mtime_sec;
	a->mtime.tv_nsec = ip->d.mtime_nsec;
	a->ctime.tv_sec = ip->d.ctime_sec;
	a->ctime.tv_nsec = ip->d.ctime_nsec;
}

int inode_commit(struct fs *fs, struct fs_inode *ip)
{
	struct tx tx;

	tx_begin(fs, &tx);
	tx_add_inode(&tx, ip);
	return tx_commit(&tx);
}

int inode_writeback(struct fs *fs, struct fs_inode *ip)
{
	if (!ip->dirty || ip->deleted || fs->readonly)
		return 0;
	return inode_commit(fs, ip);
}

int inode_writeback_all(struct fs *fs)
{
	int r;

	pthread_mutex_lock(&fs->meta_lock);
	r = inode_writeback_all_locked(fs);
	pthread_mutex_unlock(&fs->meta_lock);
	return r;
}

int inode_writeback_all_locked(struct fs *fs)
{
	struct fs_inode *ip;
	int r = 0;

	/* Eviction needs meta_lock, which we hold, so no inode goes away.  An
	 * inode whose write-back failed stays dirty, and listed. */
	while ((ip = fs->dirty_head)) {
		dlist_del(fs, ip);
		r = inode_writeback(fs, ip);
		if (r) {
			dlist_add(fs, ip);
			break;
		}
	}
	return r;
}

/* Can the commit thread give IP's memory back (inode_shrink)?  Nothing
 * uses it: no pin (every operation holds one while it looks at the
 * inode), no open, nothing to write back or free on disk, no lock being
 * taken, handed over or relied on.  A file's lock merely held (kept while
 * alone, transient until the commit) goes back as when the kernel forgets
 * an inode (cluster_forget_inode).  Not a directory's: the names in it
 * the kernel may cache for a minute by it (docs/cluster.md §5.4) could
 * only be dropped all at once (a new epoch), and the kernel then shows
 * every open file's path as deleted.  icache_lock and meta_lock held; the
 * lock fields change only under a pin. */
static bool inode_idle(const struct fs_inode *ip)
{
	return !ip->pins && !ip->nopen && !ip->dirty && !ip->on_dlist && !ip->deleted &&
	       !ip->unlinked_here && ip->d.nlink && !ip->lk_pins && !ip->nopen_lk &&
	       !ip->nopen_standby && !ip->ndirect_w && !ip->lk_giving && !ip->lk_accept &&
	       !(S_ISDIR(ip->d.mode) && ip->lk_mode != VMFSD_LOCK_FREE);
}

/* Cached inodes past icache_max at which the commit thread shrinks the
 * cache before its commit is due. */
static uint32_t icache_high(const struct fs *fs)
{
	return fs->icache_max + fs->icache_max / 4;
}

bool inode_cache_over(struct fs *fs)
{
	uint32_t n = __atomic_load_n(&fs->ninodes_cached, __ATOMIC_RELAXED);

	return n > icache_high(fs) &&
	       n > __atomic_load_n(&fs->icache_stuck, __ATOMIC_RELAXED) + fs->icache_max / 4;
}

void inode_shrink(struct fs *fs)
{
	/* Down to three quarters of the mark, so that a shrink is not due
	 * again after every few inodes. */
	uint32_t low = fs->icache_max - fs->icache_max / 4, n = 0, scanned = 0, i;
	struct fs_inode **gone = NULL;

	pthread_mutex_lock(&fs->icache_lock);
	if (fs->ninodes_cached <= fs->icache_max) {
		pthread_mutex_unlock(&fs->icache_lock);
		return;
	}
	if (!fs->gtab)
		fs->gtab = calloc(fs->itab_size, sizeof(*fs->gtab));
	if (fs->gtab)
		gone = malloc(sizeof(*gone) * (fs->ninodes_cached - low));
	if (!gone) {
		pthread_mutex_unlock(&fs->icache_lock);
		return;
	}
	/* From where the last shrink stopped, one pass over the table at
	 * most: a bucket at a time, the idle inodes in it. */
	for (i = fs->shrink_pos; scanned < fs->itab_size && fs->ninodes_cached > low;
	     scanned++, i = (i + 1) & (fs->itab_size - 1)) {
		struct fs_inode **pp = &fs->itab[i], *ip;

		while ((ip = *pp) && fs->ninodes_cached > low) {
			struct ighost *g = NULL;

			if (!inode_idle(ip) || (ip->nlookup && !(g = malloc(sizeof(*g))))) {
				pp = &ip->hnext;
				continue;
			}
			if (g) {
				*g = (struct ighost){ .next = fs->gtab[i], .ino = ip->ino,
						      .nlookup = ip->nlookup, .kgen = ip->kgen };
				fs->gtab[i] = g;
			}
			icache_remove(fs, ip);  /* (*pp is the next one now) */
			gone[n++] = ip;
		}
	}
	fs->shrink_pos = i;
	/* What stays is in use (open files, pinned, dirty): no early commit
	 * for it until the cache grows by a quarter of the mark again. */
	fs->icache_stuck = fs->ninodes_cached > icache_high(fs) ? fs->ninodes_cached : 0;
	pthread_mutex_unlock(&fs->icache_lock);
	cluster_cache_evict(fs, gone, n);
	while (n--) {
		cluster_forget_inode(fs, gone[n]);
		inode_free_mem(fs, gone[n]);
	}
	free(gone);
}

/* Unmount: every remaining inode is unreferenced by the kernel now. */
void inode_cache_drop_all(struct fs *fs)
{
	uint32_t i;

	pthread_mutex_lock(&fs->meta_lock);
	pthread_mutex_lock(&fs->icache_lock);
	ghosts_free(fs);
	pthread_mutex_unlock(&fs->icache_lock);
	for (i = 0; i < fs->itab_size; i++) {
		struct fs_inode *ip;

		while ((ip = fs->itab[i])) {
			fs->itab[i] = ip->hnext;
			if (!fs->readonly) {
				if (inode_ours_to_delete(fs, ip))
					inode_delete(fs, ip);
				else
					(void)inode_writeback(fs, ip);
			}
			dlist_del(fs, ip);
			cluster_forget_inode(fs, ip);
			inode_free_mem(fs, ip);
		}
	}
	fs->ninodes_cached = 0;
	pthread_mutex_unlock(&fs->meta_lock);
}

void iolock_init(struct iolock *l)
{
	pthread_mutex_init(&l->m, NULL);
	pthread_cond_init(&l->c, NULL);
	l->readers = l->writers_waiting = 0;
	l->writer = false;
}

void iolock_destroy(struct iolock *l)
{
	pthread_mutex_destroy(&l->m);
	pthread_cond_destroy(&l->c);
}

void iolock_rd(struct iolock *l)
{
	pthread_mutex_lock(&l->m);
	while (l->writer || l->writers_waiting)
		pthread_cond_wait(&l->c, &l->m);
	l->readers++;
	pthread_mutex_unlock(&l->m);
}

bool iolock_try_rd(struct iolock *l)
{
	bool ok;

	pthread_mutex_lock(&l->m);
	ok = !l->writer && !l->writers_waiting;
	if (ok)
		l->readers++;
	pthread_mutex_unlock(&l->m);
	return ok;
}

void iolock_wr(struct iolock *l)
{
	pthread_mutex_lock(&l->m);
	l->writers_waiting++;
	while (l->writer || l->readers)
		pthread_cond_wait(&l->c, &l->m);
	l->writers_waiting--;
	l->writer = true;
	pthread_mutex_unlock(&l->m);
}

bool iolock_try_wr(struct iolock *l)
{
	bool ok;

	pthread_mutex_lock(&l->m);
	ok = !l->writer && !l->readers && !l->writers_waiting;
	if (ok)
		l->writer = true;
	pthread_mutex_unlock(&l->m);
	return ok;
}

void iolock_unlock_rd(struct iolock *l)
{
	pthread_mutex_lock(&l->m);
	if (--l->readers == 0)
		pthread_cond_broadcast(&l->c);
	pthread_mutex_unlock(&l->m);
}

void iolock_unlock_wr(struct iolock *l)
{
	pthread_mutex_lock(&l->m);
	l->writer = false;
	pthread_cond_broadcast(&l->c);
	pthread_mutex_unlock(&l->m);
}
