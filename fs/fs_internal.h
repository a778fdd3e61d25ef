/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Private parts of fs/: the mounted-volume state, the in-memory inode,
 * the allocator, block maps, directories and metadata transactions.
 *
 * Locking (outer to inner):
 *   ip->iolock (rwlock)  - read: I/O to already-mapped, written units and
 *                          map lookups; write: anything that changes the
 *                          map, the size or inline data of a regular file.
 *   fs->meta_lock        - every in-memory metadata change and its
 *                          transaction: inode fields, directory caches,
 *                          allocation bitmaps.  Never held across data I/O.
 *   fs->icache_lock      - the inode hash table and reference counts.
 * Directories are changed only under meta_lock (their iolock is unused).
 */
#ifndef VMFSD_FS_INTERNAL_H
#define VMFSD_FS_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "bdev/bdev.h"
#include "format/format.h"
#include "fs.h"
#include "journal/journal.h"
#include "lockmgr/lockmgr.h"

struct fs_inode;
struct alloc_pool;

/* ---------------- transactions (fs/tx.c) ---------------- */
/* A transaction gathers the encoded metadata blocks of one operation; the
 * commit makes them reach the disk together.  Data blocks an operation
 * newly exposes are written before its commit (ordered mode). */
struct tx_block {
	uint64_t off;           /* device byte offset, 4 KiB aligned,
				 * | VMFSD_JENTRY_KEEP_LOCK for inodes/clusters */
	void *buf;              /* 4 KiB aligned copy */
};
struct tx_free {
	struct alloc_pool *p;
	uint64_t item;
};
struct alloc_pool;
struct tx_pin {
	struct alloc_pool *p;
	uint32_t ci;
};

struct tx {
	struct fs *fs;
	int n, cap;
	int err;
	struct tx_block *b;
	/* Items this transaction freed: free on disk with it, but not
	 * reusable until it is durable (see alloc_free). */
	struct tx_free *freed;
	int nfreed, freed_cap;
	/* Resource clusters whose bitmap this transaction changed: each is
	 * pinned (alloc_pool.tx_pins) until the transaction is committed or
	 * aborted, so its lock is not given back while the change is only in
	 * this transaction (see cluster_release_rcs). */
	struct tx_pin *pins;
	int npins, pins_cap;
	bool unpinned_asap;     /* its unpin freed a cluster others wait for */
	/* Items this transaction allocated (alloc_tx_merge; an abort makes
	 * those it also freed reusable at once: they were never in use on
	 * disk, so a failed create gives its inode number back). */
	struct tx_free *allocd;
	int nallocd, allocd_cap;
};
void tx_begin(struct fs *fs, struct tx *tx);
/* Copies a 4 KiB block into the transaction (a later add of the same
 * offset replaces the earlier copy). */
void tx_add(struct tx *tx, uint64_t off, const void *blk);
void tx_add_inode(struct tx *tx, struct fs_inode *ip);
/* Adds BLK, a block whose first sector is a lock record (an inode, a
 * resource cluster), at OFF: the lock sector belongs to the lock manager
 * and is never written by a commit or a replay (KEEP_LOCK); the image
 * carries a free record there only as filler, written into BLK here. */
void tx_add_keep_lock(struct tx *tx, uint64_t off, uint8_t *blk);
/* Merges the transaction into the running journal transaction (meta_lock
 * held).  Durable at the next journal commit: fsync, sync, unmount, a full
 * running transaction, or the commit thread (every COMMIT_INTERVAL_MS). */
int tx_commit(struct tx *tx);
/* After an operation that failed with R midway: commits what it changed
 * anyway (what the allocator changed in memory must reach the disk the
 * same way; an abort would leave memory and disk disagreeing) and
 * returns R, or the commit's result when R is 0. */
int tx_commit_after(struct tx *tx, int r);
/* Drops the transaction.  Only for failures after which every item the
 * operation allocated was freed again (or nothing was allocated). */
void tx_abort(struct tx *tx);

/* ---------------- journal glue (fs/commit.c) ---------------- */
/* Pending block: committed to the running or a journal transaction but not
 * yet written in place; metadata reads must see it. */
struct pend {
	uint64_t off;           /* | VMFSD_JENTRY_KEEP_LOCK, as in struct tx_block */
	struct pend *hnext;
	bool running;
	uint64_t ver;           /* fs->pend_ver when IMG last changed */
	uint8_t *img;
};
int commit_start(struct fs *fs, uint64_t next_seq);
void commit_stop(struct fs *fs);
/* Writes the running transaction to the journal, then in place, then
 * releases deferred frees (meta_lock held). */
int commit_locked(struct fs *fs);
/* The same from a caller that has no operation half done (the commit
 * thread, fsync, sync, a handover): meta_lock, held on entry and on return, is let go
 * while the journal and in-place writes run, so that other operations
 * (the I/O path above all) do not wait for the device's cache flushes. */
int commit_unlocked(struct fs *fs);
/* Waits, without meta_lock, until no commit_unlocked is writing; meta_lock
 * held on entry and on return. */
void commit_wait_io(struct fs *fs);
/* The first step of every commit, also on its own: the pending locks of
 * new inodes on disk (cluster_publish_new_locks); a failure stops the
 * journal (meta_lock held). */
int commit_publish_locks(struct fs *fs);
/* Adds a transaction's images to the running transaction (meta_lock held). */
int commit_add_tx(struct fs *fs, struct tx *tx);
/* Room in the running transaction for one more namespace operation
 * without a commit on the caller's thread (meta_lock held). */
bool commit_room(struct fs *fs);
/* Forgets a pending image of a freed sub-block (may be reused as data). */
void commit_revoke(struct fs *fs, uint64_t off);
/* Reads one metadata block, preferring a pending image. */
int meta_read(struct fs *fs, uint64_t off, void *buf);
/* Reads N consecutive metadata blocks in one request, each replaced by its
 * pending image if it has one (meta_lock held). */
int meta_read_many(struct fs *fs, uint64_t off, uint32_t n, void *buf);
/* Frees are applied only once the transaction that frees is durable, so a
 * crash can never leave a block both referenced and reused. */
void commit_defer_free(struct fs *fs, struct alloc_pool *p, uint64_t item);
void commit_defer_reuse(struct fs *fs, const struct tx_free *f);

/* ---------------- allocator (fs/alloc.c) ---------------- */
struct alloc_pool {
	int kind;               /* VMFSD_RC_* */
	uint64_t count;         /* items */
	uint32_t nclusters;
	struct vmfsd_rc *rc;    /* decoded clusters, with the changes of open
				 * transactions (what allocation goes by) */
	struct vmfsd_rc *crc;   /* the same with only merged transactions'
				 * changes: what the journal and disk get */
	uint64_t nfree;
	uint64_t hint;          /* next item to try */
	uint8_t *held;          /* per cluster: 0 not ours, 1 ours to allocate
				 * from, 2 taken only to free into */
	uint8_t **pend;         /* per cluster, lazily: items freed by a
				 * transaction not yet durable (not reusable) */
	_Atomic uint32_t *tx_pins;      /* per cluster: open transactions that
					 * changed its bitmap (struct tx.pins) */
	int64_t *yield_until;   /* per cluster: hb_clock_ns before which we
				 * leave it to the other hosts (alloc_item) */
	_Atomic uint8_t *asap;  /* per cluster: other hosts present, a commit
				 * could not give it back (pinned) */
};
/* Other hosts hold a cluster at most until their next commit (1 s) when
 * they are not alone on the volume, but several hosts take turns on a
 * volume with one cluster per pool, and a loaded host commits late: 2.5 s
 * gave three writers on a loaded 2-core machine ENOSPC on an empty
 * volume.  Like namespace locks (NS_LOCK_WAIT_MS, fs/cluster.c), an
 * allocation must not fail just because hosts take turns: 15 s.
 * A busy cluster is polled every CLUSTER_RETRY_US, and a host that gave a
 * cluster back because others are present leaves it to them for
 * CLUSTER_YIELD_NS, five of their polls (fs/cluster.c). */
#define CLUSTER_WAIT_US 15000000u
#define CLUSTER_RETRY_US 20000u
#define CLUSTER_YIELD_NS (5 * CLUSTER_RETRY_US * 1000ll)
int alloc_load(struct fs *fs);
/* Unpins the clusters TX changed (tx_commit and tx_abort do it). */
void alloc_unpin_tx(struct tx *tx);
/* Applies TX's allocations and frees to the merged copy of the clusters
 * it changed and puts that copy in TX (meta_lock held; tx_commit). */
void alloc_tx_merge(struct fs *fs, struct tx *tx);
void alloc_unload(struct fs *fs);
/* Allocates one item near GOAL (0 = anywhere), logging the cluster. */
/* The same, waiting at most WAIT_US for clusters busy at other hosts
 * (0: only what is at hand) before -ENOSPC. */
int alloc_item_wait(struct fs *fs, struct alloc_pool *p, uint64_t goal, struct tx *tx,
		    uint32_t wait_us, uint64_t *out);
int alloc_item(struct fs *fs, struct alloc_pool *p, uint64_t goal, struct tx *tx,
	       uint64_t *out);
/* Frees ITEM in TX: clear on disk in the same transaction as the change
 * that stops using it (no leak after a crash), reusable only once that
 * transaction is durable (no block both referenced and reused).  Into a
 * cluster another host holds right now, the free waits in a retry list. */
void alloc_free(struct fs *fs, struct alloc_pool *p, uint64_t item, struct tx *tx);
/* Is ITEM free in P, in a cluster this host allocates from (meta_lock
 * held)? */
bool alloc_item_free_here(const struct fs *fs, const struct alloc_pool *p, uint64_t item);
/* Sub-blocks kept back for the block maps of large files (meta_lock held):
 * file data may not take them (it overflows into file blocks instead). */
uint64_t alloc_sub_reserve(const struct fs *fs);
/* File blocks that large files can still fill: the free ones (and those
 * whose free waits for a busy cluster), as far as the sub-block pool can
 * map them (meta_lock held).  What statfs reports as available. */
uint64_t alloc_usable_blocks(const struct fs *fs);
int alloc_free_now(struct fs *fs, struct alloc_pool *p, uint64_t item, struct tx *tx);
/* The transactions that freed these items are durable: reusable now. */
void alloc_release_pending(struct fs *fs, const struct tx_free *v, uint32_t n);

/* ---------------- inodes (fs/inode.c) ---------------- */
struct dir_cache;

/* The data-path lock of an inode: a reader/writer lock that, unlike a
 * pthread rwlock, may be released by another thread, because an
 * asynchronous read or overwrite holds it shared until the reaper thread
 * sees the I/O complete.  Writers have priority. */
struct iolock {
	pthread_mutex_t m;
	pthread_cond_t c;
	int readers;
	int writers_waiting;
	bool writer;
};
void iolock_init(struct iolock *l);
void iolock_destroy(struct iolock *l);
void iolock_rd(struct iolock *l);
bool iolock_try_rd(struct iolock *l);      /* false: a writer holds or waits */
void iolock_wr(struct iolock *l);
bool iolock_try_wr(struct iolock *l);      /* false: held, or a writer waits */
void iolock_unlock_rd(struct iolock *l);
void iolock_unlock_wr(struct iolock *l);

struct fs_inode {
	uint64_t ino;
	struct fs_inode *hnext;
	uint64_t nlookup;       /* kernel references */
	/* The generation the kernel was last given for this number (with
	 * nlookup > 0): when the disk shows another, the number was freed and
	 * reused by another host, and a request by number means the old file. */
	uint64_t kgen;
	uint32_t nopen;
	uint32_t pins;          /* transient references held by fs code */
	bool dirty;             /* in-memory fields newer than disk */
	bool on_dlist;          /* on fs->dirty_head (inode_touch), meta_lock */
	struct fs_inode *dnext, *dprev;
	bool deleted;           /* freed on disk, must not be written */
	/* This host removed its last name (so it is on our orphan list and
	 * ours to free).  An inode another host unlinked can show nlink 0
	 * here too, after a re-read: that host frees it, maybe much later
	 * (it may hold it open), never we. */
	bool unlinked_here;
	struct iolock iolock;
	struct vmfsd_inode d;
	struct dir_cache *dir;  /* directories: loaded lazily */
	/* Block-map node cache: sub-block number -> 4 KiB node image. */
	struct map_node **nodes;
	uint32_t nodes_cap, nodes_n;
	/* cluster lock state (fs->lk_lock); lk_io serialises the on-disk
	 * transitions of this inode's lock (acquire vs a concurrent release) */
	pthread_mutex_t lk_io;
	uint16_t lk_mode;       /* what we hold on disk: VMFSD_LOCK_* */
	uint32_t lk_pins;       /* operations in progress that rely on it */
	uint32_t nopen_lk;      /* local opens that need it */
	bool lk_transient;      /* release after the next commit */
	bool lk_fresh;          /* re-read from disk since the lock was taken */
	/* The kernel's pages of the file (fs_file_keep_cache): lk_gen moves
	 * on each time the lock is taken where another host may have held it
	 * since ours; pc_ok: the kernel may hold pages cached under lock
	 * generation pc_gen, with nothing written around them since;
	 * ndirect_w: direct-I/O opens for writing here (fs->lk_lock) */
	uint64_t lk_gen, pc_gen;
	bool pc_ok;
	uint32_t ndirect_w;
	uint64_t alone_epoch;   /* read from disk while alone in this epoch
				 * (hb_alone_epoch); 0: not so */
	/* lock handover (fs/handover.c, docs/cluster.md §4.7), fs->lk_lock */
	bool lk_giving;         /* we are handing it away: writes fail */
	bool lk_accept;         /* we expect it: read-only opens take no lock */
	bool lc_attr;           /* atomic: its attributes went out for long
				 * (cluster_cache_mark) */
	uint32_t nopen_standby; /* such opens ("standby") */
	struct imem_chunk *chunk;       /* its memory (fs/inode.c, imem_get) */
};

/* Inode blocks one read of inode_alloc fetches (fs/inode.c). */
#define IGEN_BATCH 64

struct fs {
	struct bdev *bd;
	struct vmfsd_sb sb;
	char host[VMFSD_HOSTNAME_MAX + 1];
	bool readonly;
	uint32_t slot;
	pthread_mutex_t meta_lock;
	pthread_mutex_t icache_lock;
	struct fs_inode **itab;
	uint32_t itab_size;
	uint32_t ninodes_cached;
	uint32_t icache_max;            /* inode_shrink's mark (fs_mount_opts) */
	uint32_t shrink_pos;            /* where inode_shrink goes on (icache_lock) */
	/* Inodes that left the cache, counted by hash_ino modulo 1024 (a read
	 * of the number that spans one may be stale: inode_get; icache_lock) */
	uint32_t evict_seq[1024];
	uint32_t icache_stuck;          /* cached after a shrink that could not reach its mark */
	struct ighost **gtab;           /* evicted inodes the kernel knows (icache_lock) */
	struct imem_chunk *imem_room;   /* fs/inode.c, imem_get (icache_lock) */
	struct fs_inode *dirty_head;    /* inodes inode_touch made dirty (meta_lock) */
	struct alloc_pool ipool, spool, bpool;
	/* The last generations of free inode numbers from igen_first on,
	 * read ahead by inode_alloc; bit k of igen_mask: igen[k] is known
	 * (meta_lock) */
	uint64_t igen_first;
	uint64_t igen[IGEN_BATCH];
	uint64_t igen_mask;

	/* journal (fs/commit.c) */
	struct journal *jn;
	pthread_mutex_t plock;          /* pending table (inside meta_lock) */
	struct pend **ptab;
	uint32_t ptab_size;
	struct pend **run;              /* blocks of the running transaction */
	uint32_t nrun, run_cap;
	struct dfree { struct alloc_pool *p; uint64_t item; } *dfree;
	uint32_t ndfree, dfree_cap;
	struct tx_free *reuse;          /* freed in merged transactions */
	uint32_t nreuse, reuse_cap;
	int jerr;                       /* sticky: journal failed, no more writes */
	/* A transaction written since the journal was last marked clean
	 * can still be replayed (commit_locked; under meta_lock). */
	bool jdirty;
	/* A transaction staged by commit_unlocked, written without meta_lock:
	 * its blocks and their pend versions, how many of fs->reuse it frees,
	 * the locks it publishes.  CIO_* state and error under cio_lock; the rest under
	 * meta_lock, or owned by the writer while CIO_WRITING. */
	pthread_mutex_t cio_lock;
	pthread_cond_t cio_cv;
	int cio_state, cio_err;
	struct journal_block *cio_jb;
	uint64_t *cio_ver;
	uint32_t cio_n, cio_nreuse;
	uint64_t *cio_lk;               /* its new inodes' locks (fs->lk_new) */
	uint32_t cio_nlk;
	bool cio_checkpoint;            /* its writes end with journal_checkpoint */
	uint64_t pend_ver;
	/* Transient locks kept past a commit while alone on the volume
	 * (cluster_release_transient; under meta_lock): the committer looks
	 * for another host more often while it is set. */
	bool kept;
	/* An inode's lock became transient since the last commit
	 * (cluster_mark_transient; fs->lk_lock). */
	bool transient_new;
	pthread_t committer;
	pthread_cond_t commit_cv;
	bool committer_running, stop;
	bool commit_soon;       /* the running transaction is a quarter full */

	int commit_interval_ms;
	bool own_bd;
	bool reclaim_own;
	bool no_self_fence;     /* fs_mount_opts.debug_no_self_fence */

	/* cluster (fs/cluster.c) */
	struct hb *hb;                  /* NULL on a read-only mount */
	pthread_mutex_t lk_lock;        /* inode lock state */
	int fenced;                     /* enum hb_fence_reason */
	void (*fence_hook)(void *, int); /* fs_mount_opts.fence_hook */
	void *fence_arg;
	void (*log_hook)(void *, int, const char *); /* fs_mount_opts.log_hook */
	void *log_arg;
	bool replayed_own;              /* our crashed incarnation's journal */
	struct hosts_hist *hosts;       /* fs/hosts.c: user.vmfsd.hosts */
	/* orphan list (fs/orphan.c), meta_lock */
	uint64_t orphans[VMFSD_ORPHAN_MAX];
	uint32_t norphans;
	/* Locks of evicted inodes, released after the next commit (lk_lock
	 * for the list; late_mu from the moment a release is decided until it
	 * is on disk, so an inode of the same number opened meanwhile either
	 * takes the pending lock over or waits for the release: never both,
	 * see cluster_lock_inode) */
	struct late_unlock {
		uint64_t off, ino;
		uint16_t mode;
		/* The inode was freed: kept ("parked") while the cluster its
		 * number belongs to is ours to allocate from and no other host
		 * is present, docs/cluster.md §5.3 */
		bool parked;
	} *late_unlock;
	uint32_t nlate, late_cap;
	pthread_mutex_t late_mu;
	/* Kernel caching by lock state (cluster_cache_*, docs/cluster.md
	 * §5.4): lc_rw is held for reading while a reply hands it out */
	pthread_rwlock_t lc_rw;
	bool lc_on;                     /* lc_rw: locks are kept, hand it out */
	uint64_t lc_gen;                /* lc_rw: moves on at every drop */
	bool lc_out;                    /* atomic: handed out since the last drop */
	void (*cache_hook)(void *, uint64_t);  /* fs_mount_opts.cache_hook */
	void *cache_arg;
	/* Lock records of brand-new inodes that the next commit takes, in
	 * one batch, before it writes anything (cluster_lock_new_inode;
	 * meta_lock) */
	uint64_t *lk_new;
	uint32_t nlk_new, lk_new_cap;
};
void orphan_add(struct fs *fs, uint64_t ino, struct tx *tx);
void orphan_del(struct fs *fs, uint64_t ino, struct tx *tx);
bool orphan_listed(struct fs *fs, uint64_t ino);
int orphan_load(struct fs *fs);
void orphan_cleanup(struct fs *fs);
/* IPS[0..N) leave the cache with the kernel still knowing them
 * (inode_shrink): the attributes the kernel caches for long by their
 * locks go before the locks do (meta_lock held, the commit thread). */
void cluster_cache_evict(struct fs *fs, struct fs_inode *const *ips, uint32_t n);
/* An inode leaves the cache holding a lock: release it after the commit. */
void cluster_forget_inode(struct fs *fs, struct fs_inode *ip);

int cluster_join(struct fs *fs);
int cluster_start(struct fs *fs);
/* The committer's interval is long (alone) or not: say so in our
 * heartbeat before the change can matter (meta_lock held; dropped while
 * the heartbeat is written). */
void cluster_set_late(struct fs *fs, bool late);
int cluster_leave(struct fs *fs);
void cluster_recover_dead(struct fs *fs);
/* fs/hosts.c: the cluster view behind the root's user.vmfsd.hosts */
int hosts_init(struct fs *fs);
void hosts_free(struct fs *fs);
void hosts_observe(struct fs *fs);
/* a line for the system log (fs_mount_opts.log_hook); not under h->mu */
void fs_log(struct fs *fs, int level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void hosts_note_replay(struct fs *fs, uint32_t slot, const char *name, uint64_t gen,
		       int64_t replay_ms);
/* malloc'd JSON document (not NUL-terminated: *LEN bytes); -ENODATA on a
 * read-only mount */
int hosts_describe(struct fs *fs, char **out, size_t *len);
void cluster_pin(struct fs *fs, struct fs_inode *ip);
void cluster_unpin(struct fs *fs, struct fs_inode *ip);
/* Takes MODE on IP (retrying conflicts for a while); without meta_lock. */
int cluster_lock_inode(struct fs *fs, struct fs_inode *ip, uint16_t mode, bool transient);
/* cluster_lock_inode(EXCL, transient) where this host holds EXCL on IP
 * already (IP pinned by the caller), else -EAGAIN: no I/O, no wait. */
int cluster_lock_held(struct fs *fs, struct fs_inode *ip);
void cluster_unlock_inode_if_unused(struct fs *fs, struct fs_inode *ip);
/* IP was just created by this host (meta_lock held, its transaction not
 * yet committed): its lock is ours now, EXCL, and goes on disk with the
 * next commit (cluster_publish_new_locks), docs/cluster.md §5.3. */
void cluster_lock_new_inode(struct fs *fs, struct fs_inode *ip);
/* At the start of every commit: the locks of the N new inodes at OFF
 * (fs->lk_new, or what a commit took of it) on disk; an error stops the
 * journal.  No lock of the caller's needed. */
int cluster_publish_new_locks(struct fs *fs, const uint64_t *off, uint32_t n);
/* What the release step after a commit gives back, decided once per commit
 * (cluster_plan_releases), so that the journal checkpoint before it
 * (cluster_has_releases) covers exactly what goes. */
struct release_plan {
	bool keep;      /* transient inode locks stay ours (cluster_keep_locks) */
	bool others;    /* another host is present: parked locks and
			 * allocation clusters go back too */
};
void cluster_plan_releases(struct fs *fs, struct release_plan *p);
/* After a commit: gives back transient locks (unless the plan keeps them)
 * and those of evicted inodes. */
void cluster_release_transient(struct fs *fs, const struct release_plan *plan);
/* IP's lock goes back after the next commit, unless kept (lk_lock held). */
void cluster_mark_transient(struct fs *fs, struct fs_inode *ip);
int cluster_refresh_inode(struct fs *fs, struct fs_inode *ip);
/* The same for an inode reached by name (its new generation is about to be
 * handed out): no check that the kernel knows it by that generation. */
int cluster_refresh_inode_named(struct fs *fs, struct fs_inode *ip);
/* -ESTALE if the kernel knows IP's number by an older generation. */
int cluster_check_kgen(struct fs *fs, struct fs_inode *ip);
int cluster_open(struct fs *fs, struct fs_inode *ip, int flags);
void cluster_close(struct fs *fs, struct fs_inode *ip);
int cluster_describe_lock(struct fs *fs, struct fs_inode *ip, char *buf, size_t len);
/* fs/handover.c: 0, or -EIO when this host may not write IP now (it holds
 * no EXCL/MW lock on it, or is handing it over); iolock held. */
int cluster_write_check(struct fs *fs, struct fs_inode *ip);
/* 1 for a standby open (no lock taken), 0 for an ordinary one. */
int handover_open_standby(struct fs *fs, struct fs_inode *ip, int flags);
void handover_close_standby(struct fs *fs, struct fs_inode *ip);
/* The virtual attribute user.vmfsd.handover. */
int handover_xattr_get(struct fs *fs, char *buf, size_t len);
int handover_xattr_set(struct fs *fs, uint64_t ino, const void *value, size_t size);
int cluster_take_rc(struct fs *fs, struct alloc_pool *p, uint32_t ci);
/* Gives back the clusters taken only for frees; ALL: every cluster and
 * parked lock (unmount); OTHERS: the same, another host being present
 * (with a head start for it). */
void cluster_release_rcs(struct fs *fs, bool all, bool others);
/* Will the release step of PLAN give any lock back? */
bool cluster_has_releases(struct fs *fs, const struct release_plan *plan);
/* Alone, and able to give kept locks back in time (meta_lock held). */
bool cluster_keep_locks(struct fs *fs);
/* Kernel caching by lock state (docs/cluster.md §5.4).  Marks in A what
 * the kernel may cache for long: DP's names, IP's attributes (either may
 * be NULL), where this host holds their lock while it keeps locks. */
void cluster_cache_mark(struct fs *fs, struct fs_inode *dp, struct fs_inode *ip,
			struct fs_attr *a);
/* Locks are kept after this commit: marks may go out (meta_lock held). */
void cluster_cache_allow(struct fs *fs);
/* Before a lock that a mark relied on goes back: no more marks, and what
 * went out is dropped from the kernel's caches (fs->cache_hook). */
void cluster_cache_drop(struct fs *fs);
/* How often the committer looks for another host while it keeps locks: a
 * tenth of the default heartbeat interval, small against the 2.5 s an open
 * waits for a lock before EBUSY. */
#define CLUSTER_KEEP_POLL_MS 100

/* Gets an in-memory inode, reading it from disk if needed; adds a pin. */
int inode_get(struct fs *fs, uint64_t ino, struct fs_inode **out);
/* The kernel forgets NLOOKUP references to INO: true if INO was evicted
 * (inode_shrink) and its ghost took them, without reading it again. */
bool inode_forget_ghost(struct fs *fs, uint64_t ino, uint64_t nlookup);
/* Drops a pin; evicts (and frees on disk, if unlinked) when unused. */
void inode_put(struct fs *fs, struct fs_inode *ip);
/* Allocates and initialises a new inode (caller holds meta_lock). */
int inode_alloc(struct fs *fs, uint32_t mode, uint32_t uid, uint32_t gid,
		uint64_t parent, struct tx *tx, struct fs_inode **out);
/* An inode cluster goes back: the generations inode_alloc read ahead may
 * change now (meta_lock held). */
void inode_gen_forget(struct fs *fs);
void inode_fill_attr(struct fs *fs, struct fs_inode *ip, struct fs_attr *a);
void inode_touch(struct fs *fs, struct fs_inode *ip, bool mtime, bool ctime);
/* One transaction holding just IP's body (meta_lock held). */
int inode_commit(struct fs *fs, struct fs_inode *ip);
int inode_writeback(struct fs *fs, struct fs_inode *ip);
int inode_writeback_all(struct fs *fs);
int inode_writeback_all_locked(struct fs *fs);
void inode_cache_drop_all(struct fs *fs);
/* Gives back the memory of unused inodes while more than fs->icache_max
 * are cached (meta_lock held; the commit thread). */
void inode_shrink(struct fs *fs);
/* Does the inode cache want inode_shrink before the next commit is due? */
bool inode_cache_over(struct fs *fs);
/* The memory of inode structs, once none is in use (unmount). */
void inode_mem_release(struct fs *fs);
uint32_t inode_unit_size(const struct fs *fs, const struct fs_inode *ip);

/* ---------------- block maps (fs/bmap.c) ---------------- */
/* Logical unit -> raw map entry (pool number | VMFSD_MAP_UNWRITTEN), 0 hole.
 * Caller holds iolock (read or write) or, for directories, meta_lock. */
int bmap_get(struct fs *fs, struct fs_inode *ip, uint64_t lblk, uint32_t *val);
/* Sets the entry for LBLK, growing the tree as needed (meta_lock and the
 * exclusive iolock held: readers walk the map without meta_lock). */
int bmap_set(struct fs *fs, struct fs_inode *ip, uint64_t lblk, uint32_t val,
	     struct tx *tx);
/* Replaces LBLK's entry OLD by VAL in place, when the path to its slot
 * exists (no node is created, the tree does not grow), with one atomic
 * store: the allocating write under the shared iolock maps its new units
 * this way while readers walk the map (meta_lock held).  -ESTALE: the entry
 * is no longer OLD; -EAGAIN: a node is missing (the exclusive path adds it). */
int bmap_replace(struct fs *fs, struct fs_inode *ip, uint64_t lblk, uint32_t old, uint32_t val,
		 struct tx *tx);
/* Frees every data unit in [from, to) (to = UINT64_MAX: to the end) and
 * the map nodes that become empty; data units go back to their pool. */
int bmap_free_range(struct fs *fs, struct fs_inode *ip, uint64_t from, uint64_t to,
		    struct tx *tx);
/* Next logical unit >= LBLK that is mapped (written or not); -ENXIO if none. */
int bmap_next_mapped(struct fs *fs, struct fs_inode *ip, uint64_t lblk, uint64_t *out);
/* Highest mapped logical unit < BEFORE; -ENXIO if none. */
int bmap_prev_mapped(struct fs *fs, struct fs_inode *ip, uint64_t before, uint64_t *out);
void bmap_cache_drop(struct fs_inode *ip);
uint64_t bmap_capacity(uint8_t height);
/* The pool an inode's data units come from. */
struct alloc_pool *bmap_pool(struct fs *fs, struct fs_inode *ip);

/* ---------------- locks around operations (fs/namei.c) ---------------- */
/* IP (the kernel's inode number INO) locked EXCL until the next commit and
 * re-read if another host may have changed it; returns with meta_lock
 * held and a reference in *IPP, to end with ns_exit and inode_put.
 * NOWAIT: see ns_enter in fs/namei.c. */
int ns_enter_ino(struct fs *fs, uint64_t ino, struct fs_inode **ipp, bool nowait);
void ns_exit(struct fs *fs, struct fs_inode **v, int n);
/* meta_lock for a read-only look at IP, re-read first if another host may
 * have changed it; an error (-ENOENT deleted, -ESTALE the number names
 * another file now) leaves meta_lock unlocked. */
int ns_read(struct fs *fs, struct fs_inode *ip);

/* ---------------- directories (fs/dir.c) ---------------- */
int dir_lookup(struct fs *fs, struct fs_inode *dp, const char *name, uint64_t *ino,
	       uint8_t *type);
int dir_add(struct fs *fs, struct fs_inode *dp, const char *name, uint64_t ino,
	    uint8_t type, struct tx *tx);
int dir_remove(struct fs *fs, struct fs_inode *dp, const char *name, struct tx *tx);
/* Re-points NAME at another inode (rename over / exchange). */
int dir_replace(struct fs *fs, struct fs_inode *dp, const char *name, uint64_t ino,
		uint8_t type, struct tx *tx);
uint32_t dir_count(struct fs *fs, struct fs_inode *dp);
void dir_cache_free(struct fs_inode *ip);
int dir_snapshot(struct fs *fs, struct fs_inode *dp, struct fs_dirent **out, uint32_t *n);

/* ---------------- file data (fs/file.c) ---------------- */
/* Changes the size, freeing or zeroing what lies past it (iolock write and
 * meta_lock held by the caller is NOT required: takes what it needs). */
int file_truncate(struct fs *fs, struct fs_inode *ip, uint64_t size);
/* Frees the units [from, to) in bounded transactions, last first
 * (meta_lock held). */
int file_free_range_locked(struct fs *fs, struct fs_inode *ip, uint64_t from, uint64_t to);
/* Content of a symlink whose target does not fit inline: stores LEN
 * (at most VMFSD_SYMLINK_MAX) bytes as the data of the new, empty inode IP
 * in one sub-block (one file block when the sub-block pool is full), in
 * TX; meta_lock held.  file_read_small_locked reads them back into BUF
 * (LEN = the inode's size). */
int file_store_small_locked(struct fs *fs, struct fs_inode *ip, const void *data, size_t len,
			    struct tx *tx);
int file_read_small_locked(struct fs *fs, struct fs_inode *ip, void *buf, size_t len);

/* Largest file size: what the inode decoder accepts (2^62 bytes), far
 * above the 64 TiB the design asks for. */
#define FS_MAX_FILE_SIZE (1ull << 62)

static inline uint8_t mode_to_dtype(uint32_t mode)
{
	return (uint8_t)((mode & S_IFMT) >> 12);
}

static inline void fs_now(struct timespec *ts)
{
	clock_gettime(CLOCK_REALTIME, ts);
}

#endif
