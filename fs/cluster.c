// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * The filesystem's side of the cluster protocol (lockmgr/ does the disk
 * protocol itself): joining the volume, self-fencing, recovering dead
 * hosts, and which on-disk locks the filesystem takes when.
 *
 *  - Inodes: open() takes EXCL for writers, RO for readers, MW for both when
 *    the file asks for multi-writer (user.vmfsd.multiwriter = 1); the lock
 *    stays while any local open needs it.  Namespace operations take EXCL on
 *    every inode they change (directories included) "transiently": such a
 *    lock is kept until the next journal commit has written the changes in
 *    place, then released by the commit thread, so another host that takes
 *    it next reads fresh metadata (alone on the volume the commit keeps it
 *    until another host appears: cluster_keep_locks).  Inodes we hold no
 *    lock on are re-read from disk before use (the change sequence number
 *    says if our cached copy, its directory index and its map nodes are
 *    still good).
 *  - Resource clusters: a host allocates only from clusters it holds EXCL
 *    (taken on demand, starting at a slot-dependent place so hosts spread
 *    out, kept until unmount); a free into a cluster held by another live
 *    host waits in a queue and is retried at later commits.
 *  - Dead hosts: every heartbeat interval the commit thread looks for a
 *    dead slot; the first survivor to claim it replays its journal and frees
 *    the slot with a new generation, which is what makes its locks stale.
 *
 * Lock acquisition is always a try (ATS); conflicts are retried for
 * LOCK_WAIT_MS, outside fs->meta_lock, before -EBUSY reaches the caller.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include "fs_internal.h"
#include "lockmgr/lockmgr_internal.h"

/* Transient locks are released after the next commit (COMMIT_INTERVAL_MS,
 * 1 s), so a contender waits up to that plus the commit itself; 2.5 s
 * covers a busy commit without making a real conflict slow to report. */
#define LOCK_WAIT_MS 2500
/* Namespace operations on a directory other hosts are busy in wait longer:
 * every host holds it for at most a commit interval at a time, and a
 * create must not fail just because three hosts take turns. */
#define NS_LOCK_WAIT_MS 15000
#define LOCK_RETRY_US 20000

static void fence_cb(void *arg, enum hb_fence_reason reason)
{
	struct fs *fs = arg;

	/* Every later write fails: data, journal, checkpoint, locks. */
	bdev_fault_set(fs->bd, BDEV_FAULT_WRITE_EIO);
	fs->fenced = (int)reason;
	/* Then the processes writing through us must stop before a survivor
	 * may break our locks (docs/cluster.md §3): the owner's hook only
	 * wakes its own thread, this one must not block. */
	if (fs->fence_hook)
		fs->fence_hook(fs->fence_arg, (int)reason);
}

/* The host UUID: this machine's id (systemd's /etc/machine-id) mixed with
 * the host name, so two hosts of one machine (tests) differ and the same
 * host keeps its UUID across reboots. */
static void host_uuid(const char *name, uint8_t uuid[16])
{
	char hex[33] = "";
	FILE *f = fopen("/etc/machine-id", "r");
	size_t i;

	memset(uuid, 0, 16);
	if (f) {
		if (!fgets(hex, sizeof(hex), f))
			hex[0] = 0;
		fclose(f);
	}
	for (i = 0; i < 16 && hex[2 * i] && hex[2 * i + 1]; i++) {
		unsigned v;

		if (sscanf(hex + 2 * i, "%2x", &v) == 1)
			uuid[i] = (uint8_t)v;
	}
	for (i = 0; name[i]; i++)
		uuid[i % 16] ^= (uint8_t)(name[i] * 31 + i);
}

/* Is PID a running process of this machine?  A zombie is not: its
 * descriptors and I/O are gone (and an init that does not reap leaves
 * killed daemons as zombies for ever). */
static bool pid_running(pid_t pid)
{
	char path[64], buf[256], *p;
	FILE *f;
	bool run = true;

	if (kill(pid, 0) < 0 && errno == ESRCH)
		return false;
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "r");
	if (!f)
		return true;
	if (fgets(buf, sizeof(buf), f) && (p = strrchr(buf, ')')) && p[1] == ' ')
		run = p[2] != 'Z' && p[2] != 'X';
	fclose(f);
	return run;
}

/* This host's previous incarnation crashed (its slot is LIVE with our name
 * and UUID, and its process is gone from this machine, or the caller
 * vouches that it is gone): recover it now, as a survivor would after the
 * timeout, so a rebooted host gets its journal replayed and its old locks
 * broken at once instead of serving stale metadata and EBUSY for a while. */
static int reclaim_own_slot(struct fs *fs, const uint8_t uuid[16], bool vouched)
{
	uint8_t *blk = bdev_alloc(3 * VMFSD_META_BLOCK), *nv, *again;
	struct journal_replay_info ji;
	uint32_t i;
	int r = 0;

	if (!blk)
		return -ENOMEM;
	nv = blk + VMFSD_META_BLOCK;
	again = nv + VMFSD_META_BLOCK;
	for (i = 0; i < fs->sb.max_hosts && !r; i++) {
		uint64_t off = vmfsd_hb_slot_off(&fs->sb, i);
		struct vmfsd_hb hb;

		if (bdev_pread(fs->bd, blk, VMFSD_META_BLOCK, off) ||
		    vmfsd_hb_decode(blk, off / VMFSD_META_BLOCK, &hb) ||
		    hb.state != VMFSD_HB_LIVE || strcmp(hb.host_name, fs->host) ||
		    memcmp(hb.host_uuid, uuid, 16))
			continue;
		if (!vouched && pid_running((pid_t)hb.pid))
			continue;       /* its process still runs: hb_join decides */
		/* Not beating for two intervals: a machine-id shared by cloned
		 * machines must not let us grab a live host's slot. */
		usleep(2 * fs->sb.hb_interval_ms * 1000u);
		if (bdev_pread(fs->bd, again, VMFSD_META_BLOCK, off) ||
		    memcmp(again, blk, VMFSD_SECTOR))
			continue;
		/* REPLAYING first (its locks stay valid), replay, then FREE
		 * with a new generation: only then do its locks go stale, so
		 * no other host can have changed what the replay rewrites. */
		hb.state = VMFSD_HB_REPLAYING;
		hb.replayer_slot = i;
		hb.replayer_gen = hb.generation;
		vmfsd_hb_encode(&hb, off / VMFSD_META_BLOCK, nv);
		r = bdev_ats(fs->bd, off, blk, nv, NULL);
		if (r == -ECANCELED) {
			r = 0;          /* it changed: not a dead incarnation */
			continue;
		}
		if (!r)
			r = bdev_flush(fs->bd);
		if (!r)
			r = journal_replay(fs->bd, &fs->sb, i, &ji);
		if (r)
			break;
		if (ji.transactions)
			fs->replayed_own = true;
		fs_log(fs, FS_LOG_WARNING, "this host's previous incarnation (slot %u, generation "
		       "%llu) did not unmount: its journal was replayed (%u transactions) and its "
		       "locks are broken", i, (unsigned long long)hb.generation, ji.transactions);
		memcpy(blk, nv, VMFSD_SECTOR);
		hb.state = VMFSD_HB_FREE;
		hb.generation++;
		vmfsd_hb_encode(&hb, off / VMFSD_META_BLOCK, nv);
		r = bdev_ats(fs->bd, off, blk, nv, NULL);
		if (r == -ECANCELED)
			r = 0;          /* a survivor took over the replay: fine */
		if (!r)
			r = bdev_flush(fs->bd);
	}
	bdev_free(blk);
	return r;
}

int cluster_join(struct fs *fs)
{
	uint8_t uuid[16];
	int r;

	host_uuid(fs->host, uuid);
	r = reclaim_own_slot(fs, uuid, fs->reclaim_own);
	if (r)
		return r;
	r = hb_join(fs->bd, &fs->sb, fs->host, uuid, NULL, &fs->hb);
	if (r)
		return r;
	fs->slot = hb_my_slot(fs->hb);
	hb_set_fence_cb(fs->hb, fence_cb, fs);
	if (fs->no_self_fence)
		lockmgr_fault_set(fs->hb, LOCKMGR_FAULT_NO_FENCE);
	return hosts_init(fs);
}

static int write_gate(void *arg)
{
	return hb_write_check(arg);
}

int cluster_start(struct fs *fs)
{
	const struct hb_timing *t;
	struct hb_slot_info si;
	uint32_t slot;
	int r = hb_start(fs->hb);

	if (r)
		return r;
	/* Every write asks the heartbeat first: a writer that wakes from a
	 * stall past the fence deadline fences instead of writing. */
	bdev_set_write_gate(fs->bd, write_gate, fs->hb);
	/* A host that was alone commits every few seconds and says so in its
	 * heartbeat; it commits as soon as it sees our slot and then clears
	 * the flag.  Waiting for that here makes every change it made before
	 * our mount visible from our first request (docs/cluster.md §5.2).
	 * Past T it is stuck or dead, and we go on. */
	t = hb_get_timing(fs->hb);
	r = hb_wait_not_late(fs->hb, t->timeout_ms, &slot);
	if (r == -ETIMEDOUT && !hb_slot_state(fs->hb, slot, &si))
		fs_log(fs, FS_LOG_WARNING, "host %s (slot %u) still commits as if alone after "
		       "%u ms: its latest changes may show up here late", si.host_name, slot,
		       t->timeout_ms);
	return 0;
}

void cluster_set_late(struct fs *fs, bool late)
{
	uint32_t flags = late ? VMFSD_HB_F_LATE : 0;

	if (!fs->hb || hb_flags(fs->hb) == flags)
		return;
	pthread_mutex_unlock(&fs->meta_lock);
	(void)hb_set_flags(fs->hb, flags);      /* the next renewal retries */
	pthread_mutex_lock(&fs->meta_lock);
}

int cluster_leave(struct fs *fs)
{
	int r;

	if (!fs->hb)
		return 0;
	cluster_cache_drop(fs);
	bdev_set_write_gate(fs->bd, NULL, NULL);
	r = hb_leave(fs->hb);
	fs->hb = NULL;
	hosts_free(fs);
	free(fs->late_unlock);
	fs->late_unlock = NULL;
	fs->nlate = fs->late_cap = 0;
	free(fs->lk_new);
	fs->lk_new = NULL;
	fs->nlk_new = fs->lk_new_cap = 0;
	return r;
}

/* ---------------- dead hosts ---------------- */

void cluster_recover_dead(struct fs *fs)
{
	uint32_t slot = 0;

	/* the history behind user.vmfsd.hosts (fs/hosts.c), fenced or not */
	hosts_observe(fs);
	if (!fs->hb || fs->fenced)
		return;
	while (hb_next_dead(fs->hb, slot, &slot) == 0) {
		struct journal_replay_info ji;
		struct hb_slot_info si;
		int64_t t0 = hb_clock_ns();

		/* A failure leaves it to the next round or to another host:
		 * a journal we cannot replay keeps the slot REPLAYING, its
		 * locks stay valid and fsck must look at it. */
		if (hb_slot_state(fs->hb, slot, &si) == 0 && hb_claim_dead(fs->hb, slot) == 0 &&
		    journal_replay(fs->bd, &fs->sb, slot, &ji) == 0 &&
		    hb_release_dead(fs->hb, slot) == 0)
			hosts_note_replay(fs, slot, si.host_name, si.generation,
					  (hb_clock_ns() - t0) / 1000000);
		slot++;
	}
}

/* ---------------- inode locks ---------------- */

/* Takes MODE on the lock record at OFF (HAVE: what we hold there now; EXCL
 * over a weaker lock is an upgrade), retrying conflicts for WAIT_MS.
 * Called WITHOUT meta_lock.  On -EBUSY, LI names the holder. */
static int lock_take(struct fs *fs, uint64_t off, uint16_t have, uint16_t mode,
		     int wait_ms, struct lock_info *li)
{
	int waited = 0, r;

	for (;;) {
		if (have != VMFSD_LOCK_FREE && mode == VMFSD_LOCK_EXCL)
			r = lock_upgrade(fs->hb, fs->bd, off, li);
		else
			r = lock_acquire(fs->hb, fs->bd, off, mode, li);
		if (r == -EALREADY)
			return -EBUSY;  /* RO held here, MW wanted (or back) */
		if ((r != -EBUSY && r != -EAGAIN) || waited >= wait_ms * 1000)
			return r == -EAGAIN ? -EBUSY : r;
		/* Random backoff, so hosts do not retry in lockstep (a
		 * generator seeded per process: rand() is not). */
		usleep(LOCK_RETRY_US / 2 + lockmgr_rand_below(LOCK_RETRY_US));
		waited += LOCK_RETRY_US;
	}
}

static uint16_t stronger(uint16_t have, uint16_t want)
{
	if (have == VMFSD_LOCK_EXCL || have == want)
		return have;
	return want;
}

void cluster_pin(struct fs *fs, struct fs_inode *ip)
{
	pthread_mutex_lock(&fs->lk_lock);
	ip->lk_pins++;
	pthread_mutex_unlock(&fs->lk_lock);
}

void cluster_unpin(struct fs *fs, struct fs_inode *ip)
{
	pthread_mutex_lock(&fs->lk_lock);
	ip->lk_pins--;
	pthread_mutex_unlock(&fs->lk_lock);
}

/* The lock of record OFF that an evicted inode of the number left for
 * release after the next commit (cluster_forget_inode): its index in
 * late_unlock, or -1.  late_mu and lk_lock held. */
static int late_find(const struct fs *fs, uint64_t off)
{
	for (uint32_t i = 0; i < fs->nlate; i++)
		if (fs->late_unlock[i].off == off)
			return (int)i;
	return -1;
}

/* IP takes parked lock I over: ours again, in its mode, and no release is
 * pending for it any more.  late_mu and lk_lock held. */
static void late_take(struct fs *fs, struct fs_inode *ip, int i)
{
	ip->lk_mode = fs->late_unlock[i].mode;
	fs->late_unlock[i] = fs->late_unlock[--fs->nlate];
}

int cluster_lock_inode(struct fs *fs, struct fs_inode *ip, uint16_t mode, bool transient)
{
	uint64_t off = vmfsd_inode_off(&fs->sb, ip->ino);
	struct lock_info li;
	uint16_t have;
	int r = 0, late;

	if (!fs->hb)
		return 0;       /* read-only mount: no locks */
	cluster_pin(fs, ip);
	pthread_mutex_lock(&ip->lk_io);
	/* An evicted inode of this number may have left its lock for release
	 * after the next commit (cluster_forget_inode): we still hold it on
	 * disk.  Take it over instead: acquiring it again would answer "held
	 * already", and the pending release would then free the lock under
	 * this open (another host could open the file for writing too).
	 * late_mu: a release already under way finishes first. */
	pthread_mutex_lock(&fs->late_mu);
	pthread_mutex_lock(&fs->lk_lock);
	if (ip->lk_mode == VMFSD_LOCK_FREE && (late = late_find(fs, off)) >= 0) {
		late_take(fs, ip, late);
		ip->lk_fresh = false;
	}
	have = ip->lk_mode;
	pthread_mutex_unlock(&fs->lk_lock);
	pthread_mutex_unlock(&fs->late_mu);
	li.unchanged = false;
	if (stronger(have, mode) != have) {
		r = lock_take(fs, off, have, mode, transient ? NS_LOCK_WAIT_MS : LOCK_WAIT_MS,
			      &li);
	}
	pthread_mutex_lock(&fs->lk_lock);
	if (!r) {
		/* Re-read before trusting the cache, unless the record was
		 * still exactly our own release: then no host held the lock
		 * since, nobody changed the inode, and our copy (current when
		 * we released it, or read from disk since) still is
		 * (docs/cluster.md §5.3). */
		if (ip->lk_mode == VMFSD_LOCK_FREE) {
			ip->lk_fresh = li.unchanged;
			if (!li.unchanged)
				ip->lk_gen++;   /* the kernel's pages may be stale */
		}
		ip->lk_mode = stronger(ip->lk_mode, mode);
		if (transient)
			cluster_mark_transient(fs, ip);
	}
	ip->lk_pins--;
	pthread_mutex_unlock(&fs->lk_lock);
	pthread_mutex_unlock(&ip->lk_io);
	return r;
}

int cluster_lock_held(struct fs *fs, struct fs_inode *ip)
{
	int r = 0;

	if (!fs->hb)
		return 0;
	/* Pinned: the commit thread does not give it back under us (it
	 * marks a lock given back under lk_lock, only when unpinned). */
	pthread_mutex_lock(&fs->lk_lock);
	if (ip->lk_mode == VMFSD_LOCK_EXCL && !ip->lk_giving)
		cluster_mark_transient(fs, ip);
	else
		r = -EAGAIN;
	pthread_mutex_unlock(&fs->lk_lock);
	return r;
}

/* A brand-new inode's lock goes on disk with the commit that publishes it,
 * not at its open (docs/cluster.md §5.3): one synchronous ATS per created
 * file was about half of a create's time; a commit takes them all in one
 * batch.  Only while alone on the volume (cluster_keep_locks), where no
 * other host can hold or want this lock before that commit:
 *  - no host can reach the inode by name before the commit writes the
 *    name, and this commit takes the lock before it writes anything;
 *  - by number, only a host whose kernel still knows the number's previous
 *    file could; that file was freed while that host was mounted, so not
 *    while we were alone: its lock was given back then, and that host has
 *    since left (unmounted: its kernel forgot the number; or dead: its
 *    locks are stale), or we would not be alone.  A host that joined since
 *    knows only names looked up after it joined.  A freed number's lock
 *    that we still hold (parked, cluster_forget_inode) is taken over.
 * The record says FREE meanwhile while we count the lock as ours (a reader
 * of it publishes first: cluster_describe_lock); if a
 * holder is met after all (cluster_publish_new_locks), the commit waits
 * for it as a namespace operation would.  With other hosts present the
 * open takes the lock as for any file: there a host that opens the number
 * through an old entry can hold it while it waits for a directory lock
 * that only our commit would give back (seen in cluster-namespace's
 * link_reused: both waited NS_LOCK_WAIT_MS).  Transient: given back after
 * the commit (or kept while alone) unless an open holds it by then. */
void cluster_lock_new_inode(struct fs *fs, struct fs_inode *ip)
{
	uint64_t off = vmfsd_inode_off(&fs->sb, ip->ino);
	int late;

	if (!fs->hb || ip->lk_mode != VMFSD_LOCK_FREE || !cluster_keep_locks(fs))
		return;
	if (fs->nlk_new == fs->lk_new_cap) {
		uint32_t cap = fs->lk_new_cap ? fs->lk_new_cap * 2 : 256;
		uint64_t *n = realloc(fs->lk_new, cap * sizeof(*n));

		if (!n)
			return;         /* the open takes it, as for any file */
		fs->lk_new = n;
		fs->lk_new_cap = cap;
	}
	pthread_mutex_lock(&ip->lk_io);
	pthread_mutex_lock(&fs->late_mu);
	pthread_mutex_lock(&fs->lk_lock);
	late = late_find(fs, off);
	if (late < 0) {
		ip->lk_mode = VMFSD_LOCK_EXCL;
		fs->lk_new[fs->nlk_new++] = off;
	} else if (fs->late_unlock[late].mode == VMFSD_LOCK_EXCL) {
		late_take(fs, ip, late);
	}       /* parked in another mode: the open upgrades it (cluster_lock_inode) */
	if (ip->lk_mode == VMFSD_LOCK_EXCL) {
		ip->lk_fresh = true;    /* nobody else ever wrote this inode */
		cluster_mark_transient(fs, ip);
	}
	pthread_mutex_unlock(&fs->lk_lock);
	pthread_mutex_unlock(&fs->late_mu);
	pthread_mutex_unlock(&ip->lk_io);
}

int cluster_publish_new_locks(struct fs *fs, const uint64_t *off, uint32_t n)
{
	uint32_t i;
	int *res, r = 0;

	if (!n)
		return 0;
	if (!fs->hb)
		return -EIO;
	res = malloc(n * sizeof(*res));
	if (!res)
		return -ENOMEM;
	lock_acquire_many(fs->hb, fs->bd, off, n, VMFSD_LOCK_EXCL, res);
	for (i = 0; i < n && !r; i++) {
		struct lock_info li;

		if (!res[i])
			continue;
		/* A holder met (see cluster_lock_new_inode): wait for it as a
		 * namespace operation waits for a lock; -EALREADY is ours in
		 * another mode, which only an upgrade can change. */
		r = lock_take(fs, off[i], res[i] == -EALREADY ? VMFSD_LOCK_RO : VMFSD_LOCK_FREE,
			      VMFSD_LOCK_EXCL, NS_LOCK_WAIT_MS, &li);
	}
	free(res);
	return r;
}

/* IP's lock is ours and nothing needs it any more: marks it given back
 * and returns true (the caller releases it on disk, lk_io held). */
static bool lock_drop_if_unused(struct fs *fs, struct fs_inode *ip)
{
	bool drop;

	pthread_mutex_lock(&fs->lk_lock);
	drop = ip->lk_mode != VMFSD_LOCK_FREE && !ip->lk_pins && !ip->nopen_lk &&
	       !ip->lk_transient;
	if (drop)
		ip->lk_mode = VMFSD_LOCK_FREE;
	pthread_mutex_unlock(&fs->lk_lock);
	return drop;
}

/* Releases IP's lock if nothing needs it any more (caller has committed
 * every change to it, so the next holder reads it fresh from disk). */
void cluster_unlock_inode_if_unused(struct fs *fs, struct fs_inode *ip)
{
	if (!fs->hb)
		return;
	pthread_mutex_lock(&ip->lk_io);
	if (lock_drop_if_unused(fs, ip))
		(void)lock_release(fs->hb, fs->bd, vmfsd_inode_off(&fs->sb, ip->ino), NULL);
	pthread_mutex_unlock(&ip->lk_io);
}

void cluster_forget_inode(struct fs *fs, struct fs_inode *ip)
{
	if (!fs->hb || ip->lk_mode == VMFSD_LOCK_FREE)
		return;
	pthread_mutex_lock(&fs->lk_lock);
	if (fs->nlate == fs->late_cap) {
		uint32_t cap = fs->late_cap ? fs->late_cap * 2 : 64;
		struct late_unlock *n = realloc(fs->late_unlock, cap * sizeof(*n));

		if (!n) {
			/* Left held: stale once we unmount (generation). */
			pthread_mutex_unlock(&fs->lk_lock);
			return;
		}
		fs->late_unlock = n;
		fs->late_cap = cap;
	}
	fs->late_unlock[fs->nlate].off = vmfsd_inode_off(&fs->sb, ip->ino);
	fs->late_unlock[fs->nlate].ino = ip->ino;
	fs->late_unlock[fs->nlate].parked = ip->deleted && ip->lk_mode == VMFSD_LOCK_EXCL;
	fs->late_unlock[fs->nlate++].mode = ip->lk_mode;
	ip->lk_mode = VMFSD_LOCK_FREE;
	pthread_mutex_unlock(&fs->lk_lock);
}

/* Locks a commit gives back, collected to go in one lock_release_many
 * (a commit after many creates gives back a lock per file: one at a time,
 * two device round trips each, that was most of the commit's time). */
struct relset {
	uint64_t *off;
	void **item;            /* what the caller must finish after the release */
	uint32_t n, cap;
};

/* False when out of memory: the caller releases that one itself. */
static bool relset_add(struct relset *s, uint64_t off, void *item)
{
	if (s->n == s->cap) {
		uint32_t cap = s->cap ? s->cap * 2 : 64;
		uint64_t *o = realloc(s->off, cap * sizeof(*o));
		void **it;

		if (!o)
			return false;
		s->off = o;
		it = realloc(s->item, cap * sizeof(*it));
		if (!it)
			return false;
		s->item = it;
		s->cap = cap;
	}
	s->off[s->n] = off;
	s->item[s->n++] = item;
	return true;
}

static void relset_release(struct fs *fs, struct relset *s)
{
	lock_release_many(fs->hb, fs->bd, s->off, s->n);
}

static void relset_free(struct relset *s)
{
	free(s->off);
	free(s->item);
}

/* Does E stay parked past this commit?  Only a freed inode's lock whose
 * number's inode cluster is ours to allocate from (late_release). */
static bool late_stays_parked(const struct fs *fs, const struct late_unlock *e)
{
	uint32_t ci = (uint32_t)(e->ino / VMFSD_RC_BITS);

	return e->parked && ci < fs->ipool.nclusters && fs->ipool.held[ci] == 1;
}

/* Releases the locks of evicted inodes: those of live inodes always, those
 * of freed ("parked") ones when ALL, or when their number's inode cluster
 * is not ours to allocate from (docs/cluster.md §5.3: a parked lock must
 * be free before another host can allocate the number).  late_mu is held
 * until they are released: an open that would take one over waits. */
static void late_release(struct fs *fs, bool all)
{
	struct relset rs = { 0 };
	uint32_t i, k = 0;

	pthread_mutex_lock(&fs->late_mu);
	pthread_mutex_lock(&fs->lk_lock);
	for (i = 0; i < fs->nlate; i++) {
		struct late_unlock e = fs->late_unlock[i];

		if (!all && late_stays_parked(fs, &e)) {
			fs->late_unlock[k++] = e;
			continue;
		}
		if (relset_add(&rs, e.off, NULL))
			continue;
		pthread_mutex_unlock(&fs->lk_lock);
		(void)lock_release(fs->hb, fs->bd, e.off, NULL);
		pthread_mutex_lock(&fs->lk_lock);
	}
	fs->nlate = k;
	pthread_mutex_unlock(&fs->lk_lock);
	relset_release(fs, &rs);
	pthread_mutex_unlock(&fs->late_mu);
	relset_free(&rs);
}

/* Alone on the volume, transient inode locks stay ours after the commit
 * (docs/cluster.md §5.3, "Kept while alone"): the next open or namespace
 * change of the same inode then takes no lock I/O at all.  Only where a
 * host that joins is sure to get them in time: it waits LOCK_WAIT_MS for a
 * lock before EBUSY, and we see its slot within one heartbeat interval
 * (the monitor's scan), then give them back within CLUSTER_KEEP_POLL_MS (the
 * committer looks that often while it keeps any) plus one commit. */
bool cluster_keep_locks(struct fs *fs)
{
	return fs->hb && fs->committer_running &&
	       fs->sb.hb_interval_ms + CLUSTER_KEEP_POLL_MS <= LOCK_WAIT_MS / 2 &&
	       hb_alone_epoch(fs->hb) != 0;
}

/* ---------------- kernel caching by lock state ---------------- */

/* Does our lock on IP keep every other host from changing it (lk_lock
 * held)?  EXCL and RO do (a change needs EXCL); MW does not, nor a lock
 * being handed away. */
static bool lock_guards(const struct fs_inode *ip)
{
	return (ip->lk_mode == VMFSD_LOCK_EXCL || ip->lk_mode == VMFSD_LOCK_RO) &&
	       !ip->lk_giving && !(ip->d.iflags & VMFSD_IFLAG_MW);
}

void cluster_cache_mark(struct fs *fs, struct fs_inode *dp, struct fs_inode *ip,
			struct fs_attr *a)
{
	uint64_t gen;
	bool on;

	if (!fs->hb)
		return;
	pthread_rwlock_rdlock(&fs->lc_rw);
	on = fs->lc_on;
	gen = fs->lc_gen;
	pthread_rwlock_unlock(&fs->lc_rw);
	/* A mark of an earlier generation (fs_create marks twice) is void. */
	if (a->cache_gen != gen)
		a->cache_attr = a->cache_entry = false;
	a->cache_gen = gen;
	if (!on)
		return;
	/* A lock seen held here goes back only after a drop, which moves the
	 * generation on first: the reply's fs_cache_hold then fails. */
	pthread_mutex_lock(&fs->lk_lock);
	if (dp)
		a->cache_entry = lock_guards(dp);
	if (ip)
		a->cache_attr = lock_guards(ip);
	pthread_mutex_unlock(&fs->lk_lock);
	if (ip && a->cache_attr)
		__atomic_store_n(&ip->lc_attr, true, __ATOMIC_SEQ_CST);
}

bool fs_cache_hold(struct fs *fs, const struct fs_attr *a)
{
	pthread_rwlock_rdlock(&fs->lc_rw);
	/* fenced: our locks may be broken soon, without a release of ours */
	if (fs->lc_on && a->cache_gen == fs->lc_gen && !__atomic_load_n(&fs->fenced, __ATOMIC_RELAXED)) {
		__atomic_store_n(&fs->lc_out, true, __ATOMIC_SEQ_CST);
		return true;
	}
	pthread_rwlock_unlock(&fs->lc_rw);
	return false;
}

void fs_cache_unhold(struct fs *fs)
{
	pthread_rwlock_unlock(&fs->lc_rw);
}

void cluster_cache_allow(struct fs *fs)
{
	if (__atomic_load_n(&fs->lc_on, __ATOMIC_RELAXED) || !fs->cache_hook)
		return;
	pthread_rwlock_wrlock(&fs->lc_rw);
	fs->lc_on = true;
	pthread_rwlock_unlock(&fs->lc_rw);
}

void cluster_cache_drop(struct fs *fs)
{
	uint32_t i;
	bool out;

	/* The write lock waits for replies under way: every long timeout the
	 * kernel gets is on its way before the drop below. */
	pthread_rwlock_wrlock(&fs->lc_rw);
	fs->lc_on = false;
	fs->lc_gen++;
	out = __atomic_exchange_n(&fs->lc_out, false, __ATOMIC_SEQ_CST);
	pthread_rwlock_unlock(&fs->lc_rw);
	if (!out)
		return;
	fs->cache_hook(fs->cache_arg, 0);
	/* An inode the kernel still knows stays in our cache (nlookup), or
	 * left it through cluster_cache_evict, so every one whose attributes
	 * went out is found here. */
	pthread_mutex_lock(&fs->icache_lock);
	for (i = 0; i < fs->itab_size; i++) {
		struct fs_inode *ip;

		for (ip = fs->itab[i]; ip; ip = ip->hnext)
			if (__atomic_exchange_n(&ip->lc_attr, false, __ATOMIC_SEQ_CST))
				fs->cache_hook(fs->cache_arg, ip->ino);
	}
	pthread_mutex_unlock(&fs->icache_lock);
}

void cluster_cache_evict(struct fs *fs, struct fs_inode *const *ips, uint32_t n)
{
	bool attrs = false;
	uint32_t i;

	if (!fs->hb || !__atomic_load_n(&fs->lc_out, __ATOMIC_SEQ_CST))
		return;         /* no long timeout went out since the last drop */
	for (i = 0; i < n && !attrs; i++)
		attrs = __atomic_load_n(&ips[i]->lc_attr, __ATOMIC_SEQ_CST);
	if (!attrs)
		return;
	/* As in cluster_cache_drop, without ending the long timeouts of the
	 * rest: replies under way fall back to the short ones, then the
	 * kernel forgets the attributes of these inodes.  (Names: no
	 * directory whose lock we hold is evicted.) */
	pthread_rwlock_wrlock(&fs->lc_rw);
	fs->lc_gen++;
	pthread_rwlock_unlock(&fs->lc_rw);
	for (i = 0; i < n; i++)
		if (__atomic_exchange_n(&ips[i]->lc_attr, false, __ATOMIC_SEQ_CST))
			fs->cache_hook(fs->cache_arg, ips[i]->ino);
}

void cluster_mark_transient(struct fs *fs, struct fs_inode *ip)
{
	ip->lk_transient = true;
	fs->transient_new = true;
}

/* After a commit wrote everything in place: drop transient inode locks and
 * those of inodes evicted meanwhile (parked ones: cluster_release_rcs).
 * meta_lock held, so cached inodes cannot go away under us.  Each inode's
 * lk_io is held from its check to its release, as in
 * cluster_unlock_inode_if_unused; one whose lk_io is busy (an open is
 * taking its lock right now) goes through that function after the others,
 * whose lk_io are not held while it waits. */
void cluster_release_transient(struct fs *fs, const struct release_plan *plan)
{
	struct relset rs = { 0 }, busy = { 0 };
	bool pinned = false, fresh;
	uint32_t i;

	if (!fs->hb)
		return;
	if (plan->keep)
		cluster_cache_allow(fs);
	else
		cluster_cache_drop(fs);
	late_release(fs, false);
	pthread_mutex_lock(&fs->lk_lock);
	fresh = fs->transient_new;
	fs->transient_new = false;
	pthread_mutex_unlock(&fs->lk_lock);
	if (plan->keep) {
		/* Kept: nothing to give back, so no walk of the whole inode
		 * cache under meta_lock after every commit, dozens a second
		 * in a burst of creates (perf, 16,000 inodes cached: 0.2 % of
		 * the daemon's samples, once 17 %).  Kept from the first
		 * transient lock on until a commit that gives them back (a
		 * conservative "kept" only makes the committer look for
		 * other hosts more often). */
		fs->kept = fs->kept || fresh;
		return;
	}
	fs->kept = false;
	for (i = 0; i < fs->itab_size; i++) {
		struct fs_inode *ip;

		for (ip = fs->itab[i]; ip; ip = ip->hnext) {
			uint64_t off;

			if (!ip->lk_transient)
				continue;
			if (ip->lk_pins) {
				pinned = true;  /* in use: the next commit's */
				continue;
			}
			off = vmfsd_inode_off(&fs->sb, ip->ino);
			pthread_mutex_lock(&fs->lk_lock);
			ip->lk_transient = false;
			pthread_mutex_unlock(&fs->lk_lock);
			if (pthread_mutex_trylock(&ip->lk_io)) {
				if (!relset_add(&busy, off, ip))
					cluster_unlock_inode_if_unused(fs, ip);
				continue;
			}
			if (lock_drop_if_unused(fs, ip)) {
				if (relset_add(&rs, off, ip))
					continue;
				(void)lock_release(fs->hb, fs->bd, off, NULL);
			}
			pthread_mutex_unlock(&ip->lk_io);
		}
	}
	/* (set, not assigned: a lock may have become transient meanwhile) */
	if (pinned) {
		pthread_mutex_lock(&fs->lk_lock);
		fs->transient_new = true;
		pthread_mutex_unlock(&fs->lk_lock);
	}
	relset_release(fs, &rs);
	for (i = 0; i < rs.n; i++)
		pthread_mutex_unlock(&((struct fs_inode *)rs.item[i])->lk_io);
	relset_free(&rs);
	for (i = 0; i < busy.n; i++)
		cluster_unlock_inode_if_unused(fs, busy.item[i]);
	relset_free(&busy);
}

/* Re-reads IP from disk when we hold no lock on it, or took one since we
 * last looked (another host may have changed it), unless this host has
 * been alone on the volume since it last read it (docs/cluster.md §5.2):
 * then nobody else wrote it.  meta_lock held. */
int cluster_refresh_inode_named(struct fs *fs, struct fs_inode *ip)
{
	struct vmfsd_inode d;
	uint64_t off, alone;
	uint8_t *blk;
	int r;

	if (!fs->hb || ip->deleted)
		return 0;
	if (ip->lk_mode != VMFSD_LOCK_FREE && ip->lk_fresh)
		return 0;
	if (ip->dirty)
		return 0;       /* our own newer state (we hold its lock) */
	alone = hb_alone_epoch(fs->hb);
	/* Only a look without a lock is spared the read.  A lock just taken
	 * is read whatever: "alone" is known up to two intervals late, and
	 * a host that joined meanwhile may have held this lock, changed the
	 * inode and released it before our scan saw its slot; an open, a
	 * create or an unlink on a stale block map or directory would
	 * corrupt what it wrote. */
	if (alone && ip->alone_epoch == alone && ip->lk_mode == VMFSD_LOCK_FREE)
		return 0;
	off = vmfsd_inode_off(&fs->sb, ip->ino);
	blk = bdev_alloc(VMFSD_META_BLOCK);
	if (!blk)
		return -ENOMEM;
	r = meta_read(fs, off, blk);
	if (!r)
		r = vmfsd_inode_decode(blk, off / VMFSD_META_BLOCK, &d);
	bdev_free(blk);
	if (r)
		return r;
	if (d.ino != ip->ino || d.mode == 0)
		return -ESTALE;         /* deleted by another host */
	if (d.change_seq != ip->d.change_seq || d.generation != ip->d.generation) {
		ip->d = d;
		dir_cache_free(ip);
		bmap_cache_drop(ip);
	}
	if (ip->lk_mode != VMFSD_LOCK_FREE)
		ip->lk_fresh = true;
	ip->alone_epoch = alone;        /* sampled before the read */
	return 0;
}

/* The same, for a request that names IP by number (the kernel's inode):
 * -ESTALE when the kernel knows that number by an older generation.  Then
 * another host freed the file and reused the number for a new one, and the
 * request (through a stale directory entry of this host's kernel) means the
 * old file: acting on the new one would open, truncate or link the wrong
 * file.  The kernel answers -ESTALE by walking the path again with fresh
 * lookups, which hand out the new generation. */
int cluster_refresh_inode(struct fs *fs, struct fs_inode *ip)
{
	int r = cluster_refresh_inode_named(fs, ip);

	return r ? r : cluster_check_kgen(fs, ip);
}

int cluster_check_kgen(struct fs *fs, struct fs_inode *ip)
{
	bool stale;

	pthread_mutex_lock(&fs->icache_lock);
	stale = ip->nlookup && ip->kgen != ip->d.generation;
	pthread_mutex_unlock(&fs->icache_lock);
	return stale ? -ESTALE : 0;
}

/* ---------------- open / close ---------------- */

static uint16_t open_mode(const struct fs_inode *ip, int flags)
{
	if (ip->d.iflags & VMFSD_IFLAG_MW)
		return VMFSD_LOCK_MW;
	return (flags & O_ACCMODE) == O_RDONLY ? VMFSD_LOCK_RO : VMFSD_LOCK_EXCL;
}

int cluster_open(struct fs *fs, struct fs_inode *ip, int flags)
{
	int r;

	if (!fs->hb || !S_ISREG(ip->d.mode))
		return 0;
	r = cluster_lock_inode(fs, ip, open_mode(ip, flags), false);
	if (r)
		return r;
	pthread_mutex_lock(&fs->lk_lock);
	ip->nopen_lk++;
	pthread_mutex_unlock(&fs->lk_lock);
	pthread_mutex_lock(&fs->meta_lock);
	r = cluster_refresh_inode(fs, ip);
	pthread_mutex_unlock(&fs->meta_lock);
	if (r)
		cluster_close(fs, ip);
	return r;
}

void cluster_close(struct fs *fs, struct fs_inode *ip)
{
	if (!fs->hb || !S_ISREG(ip->d.mode))
		return;
	/* The last close does not release the lock itself: the next commit
	 * writes the file's metadata in place, checkpoints the journal, and
	 * then gives the lock back (cluster_release_transient), one flush
	 * for every file closed within the commit interval. */
	pthread_mutex_lock(&fs->lk_lock);
	if (--ip->nopen_lk == 0)
		cluster_mark_transient(fs, ip);
	pthread_mutex_unlock(&fs->lk_lock);
}

int cluster_describe_lock(struct fs *fs, struct fs_inode *ip, char *buf, size_t len)
{
	int r;

	if (!fs->hb)
		return snprintf(buf, len, "unknown (read-only mount)") < (int)len ? 0 : -ERANGE;
	/* A file created while alone has its lock on disk only from the
	 * commit that publishes it (cluster_lock_new_inode): until then the
	 * record read "free" for a file this host holds.  Publish now. */
	pthread_mutex_lock(&fs->meta_lock);
	commit_wait_io(fs);     /* (a commit may be publishing it right now) */
	r = commit_publish_locks(fs);
	pthread_mutex_unlock(&fs->meta_lock);
	if (r)
		return r;
	return lock_holder_describe(fs->hb, fs->bd, vmfsd_inode_off(&fs->sb, ip->ino), buf, len);
}

/* ---------------- resource clusters ---------------- */

/* Takes cluster CI of pool P and loads its current bitmap (meta_lock held:
 * a cluster lock never conflicts for long, it is one ATS). */
int cluster_take_rc(struct fs *fs, struct alloc_pool *p, uint32_t ci)
{
	uint64_t off = vmfsd_rc_off(&fs->sb, p->kind, ci);
	struct lock_info li;
	uint8_t *blk;
	int r;

	if (!fs->hb)
		return 0;
	if (p->held[ci])
		return 0;
	r = lock_acquire(fs->hb, fs->bd, off, VMFSD_LOCK_EXCL, &li);
	if (r)
		return r;
	blk = bdev_alloc(VMFSD_META_BLOCK);
	if (!blk) {
		(void)lock_release(fs->hb, fs->bd, off, NULL);
		return -ENOMEM;
	}
	r = meta_read(fs, off, blk);
	if (!r) {
		struct vmfsd_rc rc;

		r = vmfsd_rc_decode(blk, off / VMFSD_META_BLOCK, &rc);
		if (!r) {
			p->nfree += (int64_t)rc.nfree - (int64_t)p->rc[ci].nfree;
			p->rc[ci] = rc;
			p->crc[ci] = rc;
		}
	}
	bdev_free(blk);
	if (r) {
		(void)lock_release(fs->hb, fs->bd, off, NULL);
		return r;
	}
	p->held[ci] = 1;
	return 0;
}

/* Is any other host on the volume (alive, or not yet judged)? */
static bool others_present(struct fs *fs)
{
	uint32_t i;

	for (i = 0; i < fs->sb.max_hosts; i++) {
		struct hb_slot_info si;

		if (i == fs->slot || hb_slot_state(fs->hb, i, &si))
			continue;
		if (si.liveness == HB_ALIVE || si.liveness == HB_SILENT)
			return true;
	}
	return false;
}

/* After a commit: gives back clusters taken only for frees (2) and, when
 * other hosts share the volume, the allocation clusters too (1), so a
 * small volume with a single cluster per pool is shared fairly.  Alone, a
 * host keeps its allocation clusters: no lock traffic on the hot path. */
void cluster_release_rcs(struct fs *fs, bool all, bool others)
{
	struct alloc_pool *pools[3] = { &fs->ipool, &fs->spool, &fs->bpool };
	struct relset rs = { 0 };
	int64_t yield_until = 0;
	uint32_t i;
	int k;

	if (!fs->hb)
		return;
	if (others) {
		all = true;
		/* A writer here is back for the cluster within microseconds of
		 * this release, while a host waiting for it polls every
		 * CLUSTER_RETRY_US (20 ms): without a head start for the others
		 * one busy host kept a volume's only cluster and the others got
		 * ENOSPC after CLUSTER_WAIT_US.  Five polls of theirs. */
		yield_until = hb_clock_ns() + CLUSTER_YIELD_NS;
	}
	/* Parked locks of freed inodes before the clusters their numbers
	 * belong to: all of them once another host is present (§5.3). */
	late_release(fs, all);
	for (k = 0; k < 3; k++) {
		struct alloc_pool *p = pools[k];
		uint32_t ci;

		for (ci = 0; ci < p->nclusters; ci++) {
			if (!p->held[ci] || (!all && p->held[ci] != 2))
				continue;
			/* A transaction still open changed its bitmap: that
			 * change is not on disk yet (alloc.c, pin_cluster). */
			if (atomic_load(&p->tx_pins[ci])) {
				if (yield_until)
					atomic_store(&p->asap[ci], 1);
				continue;
			}
			atomic_store(&p->asap[ci], 0);
			if (p->held[ci] == 1)
				p->yield_until[ci] = yield_until;
			if (p == &fs->ipool)
				inode_gen_forget(fs);
			if (relset_add(&rs, vmfsd_rc_off(&fs->sb, p->kind, ci), &p->held[ci]))
				continue;
			(void)lock_release(fs->hb, fs->bd, vmfsd_rc_off(&fs->sb, p->kind, ci), NULL);
			p->held[ci] = 0;
		}
	}
	/* meta_lock held: nobody allocates from them until they are gone */
	relset_release(fs, &rs);
	for (i = 0; i < rs.n; i++)
		*(uint8_t *)rs.item[i] = 0;
	relset_free(&rs);
}

void cluster_plan_releases(struct fs *fs, struct release_plan *p)
{
	p->others = fs->hb && others_present(fs);
	p->keep = !p->others && fs->hb && cluster_keep_locks(fs);
}

/* Will the release step of PLAN give any lock back?  (meta_lock held) */
bool cluster_has_releases(struct fs *fs, const struct release_plan *plan)
{
	struct alloc_pool *pools[3] = { &fs->ipool, &fs->spool, &fs->bpool };
	uint32_t i;
	int k;

	if (!fs->hb)
		return false;
	/* Every late release but a parked one goes back after this commit
	 * (late_release's test), and every transient lock unless kept.
	 * lk_lock: an open may take one over. */
	pthread_mutex_lock(&fs->lk_lock);
	for (i = 0; i < fs->nlate; i++) {
		if (!late_stays_parked(fs, &fs->late_unlock[i])) {
			pthread_mutex_unlock(&fs->lk_lock);
			return true;
		}
	}
	pthread_mutex_unlock(&fs->lk_lock);
	for (i = 0; i < fs->itab_size && !plan->keep; i++) {
		struct fs_inode *ip;

		for (ip = fs->itab[i]; ip; ip = ip->hnext)
			if (ip->lk_transient && !ip->lk_pins)
				return true;
	}
	for (k = 0; k < 3; k++)
		for (i = 0; i < pools[k]->nclusters; i++)
			if (pools[k]->held[i] == 2)
				return true;
	return plan->others;
}
