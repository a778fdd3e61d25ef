/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * lockmgr: the cluster protocol (docs/cluster.md) on top of bdev's ATS.
 *
 *  - Heartbeat (hb_*): a host claims one slot of the heartbeat region with
 *    ATS and rewrites it every hb_interval_ms.  Others judge it alive by
 *    watching that sector change on their own boot-time clock, never by
 *    comparing wall clocks.  A host whose renewals stop succeeding fences
 *    itself (a callback: the filesystem makes every write fail and kills
 *    the VMs) hb_timeout_ms - margin after the last successful renewal was
 *    issued, strictly before any other host can call it dead.
 *  - Dead-host recovery: a survivor claims a dead slot with ATS (state
 *    REPLAYING), replays that host's journal, and frees the slot with
 *    generation + 1; only then do that host's locks become breakable.
 *  - Locks (lock_*): the first sector of every inode and resource cluster;
 *    exclusive, shared read-only, or multi-writer; valid while each
 *    holder's slot still has the generation recorded in the lock, so locks
 *    are never renewed on their own.
 *  - Status (lockmgr_status*): what `vmfsd --status` shows.
 *  - Back-off jitter (lockmgr_rand*): a generator seeded per process.
 *
 * The safety argument, timing constants and assumptions are written down
 * in docs/cluster.md; docs/model/ holds a Promela model of the ordering.
 * All functions return 0 or a negative errno; nothing here prints.
 */
#ifndef VMFSD_LOCKMGR_H
#define VMFSD_LOCKMGR_H

#include <stdbool.h>
#include <stdint.h>

#include "bdev/bdev.h"
#include "format/format.h"

struct hb;

/* ------------------------------------------------------------------ */
/* Timing                                                               */
/* ------------------------------------------------------------------ */

/* Derived from the superblock's hb_interval_ms (I) and hb_timeout_ms (T),
 * see docs/cluster.md §3:
 *   io_timeout_ms  D = min(2000, T / 5)   assumed bound on one device I/O
 *   margin_ms      M = D + min(1000, T / 10)
 *   fence_after_ms     T - M              self-fence this long after the
 *                                         last successful renewal was issued
 *   check_ms           fence thread period, min(I / 4, (M - D) / 4, 100)
 *   busy_watch_ms      how long hb_join watches a slot of the same host
 *                      name for a beat before calling it stale: min(2I + D, T)
 * Safety needs M > D + check_ms + clock-rate slack; the defaults
 * (I = 1 s, T = 10 s) give D = 2 s, M = 3 s, fence after 7 s. */
struct hb_timing {
	uint32_t interval_ms;
	uint32_t timeout_ms;
	uint32_t io_timeout_ms;
	uint32_t margin_ms;
	uint32_t fence_after_ms;
	uint32_t check_ms;
	uint32_t busy_watch_ms;
};

/* -EINVAL when the superblock's timing is unusable (T < 20 ms, T < 2 I). */
int hb_timing_compute(const struct vmfsd_sb *sb, struct hb_timing *t);

/* The clock every liveness and fencing decision uses: CLOCK_BOOTTIME in
 * nanoseconds (monotonic, and it keeps counting through a system suspend,
 * so a host that wakes up after an hour sees an hour and fences). */
int64_t hb_clock_ns(void);

/* ------------------------------------------------------------------ */
/* Heartbeat                                                            */
/* ------------------------------------------------------------------ */

/* Claims a heartbeat slot on the volume described by SB (already verified)
 * for HOST_NAME (1..64 bytes) / HOST_UUID.  Preference: a FREE slot last
 * used by this host name, then the lowest FREE (or never used, all-zero)
 * slot.  If a LIVE slot carries this host name, it is watched for
 * busy_watch_ms: if it beats, this host is already mounted and the call
 * fails with -EBUSY and *BUSY_SLOT = that slot (BUSY_SLOT may be NULL);
 * if not, it is a previous incarnation that crashed, left to the normal
 * dead-host recovery, and another slot is claimed.
 * The claim writes state LIVE, generation + 1, counter 0, the journal area
 * of the slot, the pid.  No threads run until hb_start().
 * Errors: -ENOSPC (no free slot), -EBUSY, -EINVAL, -ENOMEM, I/O errors. */
int hb_join(struct bdev *bd, const struct vmfsd_sb *sb, const char *host_name,
	    const uint8_t host_uuid[16], uint32_t *busy_slot, struct hb **out);

enum hb_fence_reason {
	HB_NOT_FENCED = 0,
	HB_FENCE_TIMEOUT = 1,   /* no successful renewal for fence_after_ms */
	HB_FENCE_TAKEN = 2,     /* our slot no longer holds what we wrote */
	HB_FENCE_REQUESTED = 3, /* hb_fence() by the caller */
};

/* Called exactly once, from whichever thread detects the fence first (the
 * fence thread, the renewal thread, or a caller of hb_write_check/hb_fence).
 * It must make every later write to the volume fail (e.g.
 * bdev_fault_set(bd, BDEV_FAULT_WRITE_EIO) on every handle) and have the
 * VMs killed, without waiting for I/O: the safety margin is spent while it
 * runs.  Set before hb_start(). */
typedef void (*hb_fence_fn)(void *arg, enum hb_fence_reason reason);
void hb_set_fence_cb(struct hb *hb, hb_fence_fn fn, void *arg);

/* Starts the renewal, fence and monitor threads. */
int hb_start(struct hb *hb);

/* Clean unmount: stops the threads and sets the slot FREE with ATS
 * (generation kept; the next claim bumps it).  Frees HB in every case.
 * The caller releases its locks and marks its journal clean first.
 * Errors: -EIO (fenced, or the write failed: the slot stays LIVE and other
 * hosts will recover it as dead), -ESTALE (the slot was taken over). */
int hb_leave(struct hb *hb);

/* Fences now (idempotent).  For the filesystem's own fatal errors. */
void hb_fence(struct hb *hb, enum hb_fence_reason reason);

/* 0 while writes are allowed; -EIO once fenced.  Also checks the clock
 * itself and fences synchronously when the last successful renewal is too
 * old, so a writer that wakes up from a long stall does not depend on the
 * fence thread having run first.  Cheap: call it before every write. */
int hb_write_check(struct hb *hb);

/* HB_NOT_FENCED, or why the host is fenced.  Fencing never ends. */
enum hb_fence_reason hb_is_fenced(const struct hb *hb);
/* 1 once, after fencing, this host has read its slot and found it changed
 * by another host (taken over for replay, freed with a new generation):
 * it must never write again without a remount (docs/cluster.md §4.4). */
int hb_is_taken_over(const struct hb *hb);

uint32_t hb_my_slot(const struct hb *hb);
uint64_t hb_my_generation(const struct hb *hb);
const struct hb_timing *hb_get_timing(const struct hb *hb);

/* Observation of the other slots.  hb_scan reads the whole heartbeat region
 * once (the monitor thread does it every interval). */
int hb_scan(struct hb *hb);

/* Alone on the volume: nonzero when the last scan, issued less than two
 * intervals ago, found every other slot FREE (no host alive, silent, dead
 * or being replayed), else 0.  The value changes each time this host
 * becomes alone again, so a cache validated under one value stays valid
 * while the same value comes back: no other host has written the volume
 * in between, except one that joined within the last two intervals
 * (docs/cluster.md §5.2). */
uint64_t hb_alone_epoch(struct hb *hb);

/* Our slot's flags (VMFSD_HB_F_*): a change goes to disk at once, with a
 * renewal out of turn (0 or its error), and then with every renewal. */
int hb_set_flags(struct hb *hb, uint32_t flags);
/* The flags we set last (what our next write carries). */
uint32_t hb_flags(const struct hb *hb);

/* A host that joins waits here until no other host that beats still says
 * it commits late (VMFSD_HB_F_LATE, docs/cluster.md §5.2): such a host
 * commits as soon as it sees us, then clears the flag.  Scans every
 * HB_LATE_POLL_MS, for at most MAX_MS.  A slot unchanged for
 * busy_watch_ms is not waited for.  0; -ETIMEDOUT with *SLOT a slot still
 * late; or the error of a scan.  The wait lasts about a heartbeat
 * interval: polling at 50 ms adds at most that to the mount, for 20 reads
 * of the heartbeat region a second. */
#define HB_LATE_POLL_MS 50
int hb_wait_not_late(struct hb *hb, uint32_t max_ms, uint32_t *slot);

enum hb_liveness {
	HB_UNSEEN = 0,          /* not read yet */
	HB_FREE,                /* state FREE, or all-zero (never claimed) */
	HB_ALIVE,               /* LIVE/REPLAYING and seen changing < T ago */
	HB_SILENT,              /* LIVE/REPLAYING, unchanged since this observer
				 * first saw it, for less than T: not judged yet */
	HB_DEAD,                /* LIVE, or REPLAYING by a replayer that is not
				 * alive, and unchanged for more than T as
				 * measured on this observer's clock */
	HB_DAMAGED,             /* does not decode: never claimed, never dead */
};

struct hb_slot_info {
	uint32_t slot;
	enum hb_liveness liveness;
	uint16_t state;         /* VMFSD_HB_* (FREE for an all-zero slot) */
	char host_name[VMFSD_HOSTNAME_MAX + 1];
	uint8_t host_uuid[16];
	uint64_t generation;
	uint64_t counter;
	uint64_t journal_off;
	uint32_t pid;
	uint32_t replayer_slot; /* REPLAYING */
	uint64_t replayer_gen;
	uint64_t wall_time_ms;  /* writer's clock: display only */
	uint32_t flags;         /* VMFSD_HB_F_* */
	int64_t unchanged_ms;   /* since this observer first saw the current
				 * content (−1 if never seen) */
	int mine;               /* this host's own slot */
};

int hb_slot_state(struct hb *hb, uint32_t slot, struct hb_slot_info *info);
/* Without a slot of our own: reads the first sector of every slot, waits
 * WATCH_MS, reads them again and sets bit s of BEATING (VMFSD_MAX_HOSTS / 8
 * bytes) for every slot whose sector changed: a host at work on the volume
 * (renewal, claim, release, replay).  Read-only.  A slot that did not change
 * is not proven dead unless WATCH_MS >= the timeout; a watch of busy_watch_ms
 * (two renewals and the I/O bound) is what hb_join trusts for the same
 * question. */
int hb_watch_beating(struct bdev *bd, const struct vmfsd_sb *sb, uint32_t watch_ms,
		     uint8_t *beating);
/* First slot >= FROM judged HB_DEAD (never our own): -ENOENT if none. */
int hb_next_dead(struct hb *hb, uint32_t from, uint32_t *slot);

/* Dead-host recovery, in this order:
 *   hb_claim_dead(hb, s)        ATS from the exact content judged dead to
 *                               REPLAYING by us: exactly one survivor wins;
 *   journal_replay(bd, sb, s, ...);
 *   hb_release_dead(hb, s)      flush, then ATS to FREE with generation + 1,
 *                               flush: from now on that host's locks are
 *                               stale and lock_acquire drops them.
 * hb_claim_dead errors: -EAGAIN (not judged dead: alive, silent for less
 * than the timeout, or being replayed by a live host), -EBUSY (the slot
 * changed: another survivor won, or the host came back), -EINVAL (free,
 * damaged, our own slot), -EIO (we are fenced), I/O errors.
 * hb_release_dead errors: -EINVAL (we did not claim it), -ESTALE (our claim
 * was taken over: we were judged dead ourselves), -EIO, I/O errors. */
int hb_claim_dead(struct hb *hb, uint32_t slot);
int hb_release_dead(struct hb *hb, uint32_t slot);

/* ------------------------------------------------------------------ */
/* Locks                                                                */
/* ------------------------------------------------------------------ */

/* Modes are the on-disk ones: VMFSD_LOCK_EXCL, VMFSD_LOCK_RO, VMFSD_LOCK_MW.
 * Compatible: RO with RO, MW with MW; EXCL with nothing. */

struct lock_info {
	uint16_t mode;          /* VMFSD_LOCK_* of the record as it now stands
				 * (on -EBUSY: as read, stale holders ignored) */
	uint64_t lock_gen;
	uint32_t owner_slot;    /* a valid holder (the first one to take it) */
	uint64_t owner_gen;
	char owner_name[VMFSD_HOSTNAME_MAX + 1];
	uint32_t nholders;      /* valid holders */
	uint8_t holders[VMFSD_MAX_HOSTS / 8];
	uint32_t nstale;        /* stale holders seen (dropped if we wrote) */
	/* Set by a write that found the record exactly as this process last
	 * left it, free (its own release): no host has held the lock since,
	 * so none changed the object (docs/cluster.md §5.3). */
	bool unchanged;
};

/* Number of ATS attempts on a contended record before -EAGAIN. */
#define LOCK_ATS_TRIES 32

/* OFF: byte offset of the lock sector = the object's meta block (4 KiB
 * aligned): vmfsd_inode_off(), vmfsd_rc_off().  BD is the handle to write
 * through (usually the one the heartbeat uses; the fence callback must
 * fault it too).  OUT may be NULL.
 * lock_acquire: 0 (also when we already hold it in MODE: no write),
 * -EBUSY (a valid conflicting holder: OUT names it), -EALREADY (we hold it
 * in another mode: use lock_upgrade/lock_downgrade), -EAGAIN (contention),
 * -EUCLEAN/-EBADMSG (the sector is not a lock record), -EIO (fenced).
 * A holder is valid while its slot is LIVE or REPLAYING with the generation
 * recorded in the lock: a dead host's locks stay valid until its slot was
 * replayed and freed with a new generation (hb_release_dead). */
int lock_acquire(struct hb *hb, struct bdev *bd, uint64_t off, uint16_t mode,
		 struct lock_info *out);
/* Removes us; the record becomes FREE when no valid holder is left.
 * -ESTALE if we are not a holder (our lock was broken: never expected). */
int lock_release(struct hb *hb, struct bdev *bd, uint64_t off, struct lock_info *out);
/* lock_release of the N distinct records at OFF[i], their first tries
 * issued together (bdev_ats_many): for the many locks a commit gives back.
 * A record whose guess is missing or wrong is released on its own after.
 * Failures are as lock_release's, and not reported: the caller of a
 * release has nothing to do about one (a broken lock is no longer ours;
 * a fenced host's locks go stale). */
void lock_release_many(struct hb *hb, struct bdev *bd, const uint64_t *off, unsigned n);
/* lock_acquire of the N distinct records at OFF[i] in MODE, their tries
 * issued together (bdev_ats_many), from the guess first, then from what a
 * miscompare returned; a record still not decided that way (a holder
 * present, a guess wrong again) goes through lock_acquire on its own.
 * RES[i] gets lock_acquire's answer for record i (no conflict is waited
 * for: -EBUSY and -EAGAIN are the caller's to retry).  For the locks of
 * many brand-new inodes that one commit publishes (fs/cluster.c).  Each
 * record must lead a block that only a valid holder of that lock writes
 * (an inode's or a resource cluster's): the batch may write the whole
 * block back as it read it (bdev_ats_many_block). */
void lock_acquire_many(struct hb *hb, struct bdev *bd, const uint64_t *off, unsigned n,
		       uint16_t mode, int *res);
/* RO/MW -> EXCL when we are the only valid holder, else -EBUSY. */
int lock_upgrade(struct hb *hb, struct bdev *bd, uint64_t off, struct lock_info *out);
/* EXCL -> RO or MW. */
int lock_downgrade(struct hb *hb, struct bdev *bd, uint64_t off, uint16_t mode,
		   struct lock_info *out);
/* Hands our exclusive lock to another host in one ATS (docs/cluster.md
 * §4.7): the record goes from "EXCL, holders {us}" to "EXCL, holders
 * {TO_SLOT}" with TO_GEN as the owner generation.  TO_SLOT's heartbeat is
 * read fresh and must be LIVE with exactly TO_GEN, the incarnation that
 * expects the lock.  The caller must have stopped and flushed every write
 * of its own under the lock, and checkpointed its journal (the release
 * rule of §5): after this call we are no longer a holder.
 * Errors: -ESTALE (we do not hold it, or TO_SLOT is not LIVE with TO_GEN),
 * -EINVAL (not EXCL, or TO_SLOT is ours / out of range), -EAGAIN, -EIO. */
int lock_handover(struct hb *hb, struct bdev *bd, uint64_t off, uint32_t to_slot,
		  uint64_t to_gen, struct lock_info *out);
/* Reads and judges the record without writing. */
int lock_inspect(struct hb *hb, struct bdev *bd, uint64_t off, struct lock_info *out);
/* Lock-holder validity, the one implementation of the rule (docs/cluster.md
 * §4; fsck.vmfsd judges lock records with it too): holder (slot,
 * generation GEN) is valid while the slot record SLOT_REC is LIVE or
 * REPLAYING with that generation.  GEN is compared on its low 8 bits only
 * when FULL is false (holders other than the owner record 8 bits).  An
 * all-zero slot (SLOT_ZERO) or a FREE one ends the holder; a slot that
 * could not be read or decoded (SLOT_ERR) counts as valid: refuse rather
 * than break. */
bool lock_holder_valid(const struct vmfsd_hb *slot_rec, int slot_zero, int slot_err,
		       uint64_t gen, bool full);
/* Text for an xattr / an error message: "free", "EXCL by esx1 (slot 0)",
 * "RO by esx1 (slot 0), esx2 (slot 3)"; "-ERANGE" if BUF is too small. */
int lock_holder_describe(struct hb *hb, struct bdev *bd, uint64_t off, char *buf, size_t len);
const char *lock_mode_name(uint16_t mode);

/* ------------------------------------------------------------------ */
/* Status (vmfsd --status)                                              */
/* ------------------------------------------------------------------ */

struct lockmgr_host {
	uint32_t slot;
	enum hb_liveness liveness; /* over the watch: ALIVE if it beat,
				    * SILENT if not (DEAD only if the watch
				    * lasted longer than the timeout) */
	/* The slot's record as last read (all zero if it did not decode):
	 * state, host name and uuid, generation, counter, pid, replayer,
	 * journal offset, and wall_time_ms, the writer's clock (display). */
	struct vmfsd_hb hb;
	int64_t since_beat_ms;  /* observer-measured time since the content
				 * last changed; -1: no change during the watch */
};

enum lockmgr_obj {
	LOCKMGR_OBJ_INODE = 0,
	LOCKMGR_OBJ_RC_INODE = VMFSD_RC_INODE,
	LOCKMGR_OBJ_RC_SUB = VMFSD_RC_SUB,
	LOCKMGR_OBJ_RC_BLOCK = VMFSD_RC_BLOCK,
};

struct lockmgr_lock {
	enum lockmgr_obj obj;
	uint64_t id;            /* inode number or cluster index */
	uint64_t off;
	int damaged;            /* the sector does not decode (error in mode) */
	uint16_t mode;
	uint64_t lock_gen;
	uint32_t owner_slot;
	uint64_t owner_gen;
	uint8_t holders[VMFSD_MAX_HOSTS / 8];
	uint8_t stale[VMFSD_MAX_HOSTS / 8]; /* holders whose slot moved on */
	/* inodes: the file's path, when the caller could resolve it (a
	 * malloc'd string it sets; lockmgr_status_free frees it) */
	char *path;
};

struct lockmgr_status {
	struct vmfsd_sb sb;
	struct hb_timing timing;
	uint32_t watch_ms;
	uint32_t nhosts;        /* slots ever claimed (not all-zero) */
	struct lockmgr_host *hosts;
	uint32_t nlocks;        /* records not FREE */
	struct lockmgr_lock *locks;
	uint64_t inodes_checked;
};

/* Reads the superblock (primary), watches the heartbeat slots for WATCH_MS
 * (0: one interval plus the I/O timeout, enough to see every live host
 * beat), and reads the lock records of the resource clusters and of every
 * allocated inode.  Read-only.  Free with lockmgr_status_free. */
int lockmgr_status(struct bdev *bd, uint32_t watch_ms, struct lockmgr_status **out);
void lockmgr_status_free(struct lockmgr_status *st);
/* Human text (JSON = 0) or a JSON document (JSON = 1) in a malloc'd
 * string for the program to print. */
int lockmgr_status_format(const struct lockmgr_status *st, int json, char **text);
const char *hb_liveness_name(enum hb_liveness l);

/* ------------------------------------------------------------------ */
/* Back-off jitter                                                      */
/* ------------------------------------------------------------------ */

/* 64 random bits from a generator seeded per process (getrandom, again in
 * a forked child), safe to call from any thread.  For retry jitter, so
 * hosts that collide do not retry in lockstep; not for secrets. */
uint64_t lockmgr_rand(void);
/* A random number in [0, N); 0 when N is 0. */
uint32_t lockmgr_rand_below(uint32_t n);
const char *hb_state_name(uint16_t state);

#endif
