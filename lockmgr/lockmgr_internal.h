/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Private parts of lockmgr: the observer (a table of what this process has
 * seen in every heartbeat slot, and when, on its own clock) shared by the
 * heartbeat, the lock code and the status reader; the struct hb itself; and
 * the named fault-injection points of the module.
 */
#ifndef VMFSD_LOCKMGR_INTERNAL_H
#define VMFSD_LOCKMGR_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "lockmgr.h"

#define NS_PER_MS 1000000ll

/* What one observer knows about one slot. */
struct hb_obs_slot {
	uint8_t sec[VMFSD_SECTOR];      /* exact content last read */
	bool seen;
	bool zero;                      /* all-zero: never claimed */
	bool ok;                        /* decodes (or zero) */
	struct vmfsd_hb d;              /* decoded (valid when ok && !zero) */
	/* Completion time of the first read that returned SEC.  That read
	 * finished after the write of SEC landed, which is after the writer
	 * issued it: first_seen >= the writer's issue time.  docs/cluster.md
	 * §3 needs exactly this inequality. */
	int64_t first_seen;
	/* Issue time of the latest read that returned SEC again.  Dead needs
	 * confirm_issue - first_seen > T: a read *issued* that late still saw
	 * the old content, so the writer wrote nothing for T (a stale answer
	 * from a read that sat in a queue cannot make a host look dead). */
	int64_t confirm_issue;
	bool changed;                   /* content changed at least once while
					 * watched (ALIVE vs SILENT) */
};

struct hb_obs {
	struct bdev *bd;
	struct vmfsd_sb sb;
	struct hb_timing t;
	uint32_t n;                     /* sb.max_hosts */
	pthread_mutex_t mu;             /* protects s[] */
	pthread_mutex_t scan_mu;        /* one scan at a time: observations of a
					 * slot must be in read-issue order */
	struct hb_obs_slot *s;
	uint8_t *buf;                   /* region read buffer (under scan_mu) */
	int32_t self;                   /* our slot, or -1 (status reader) */
	uint64_t self_gen;
	/* hb_alone_epoch: bumped by each scan that finds every other slot
	 * FREE after one that did not; 0 while others are there.  Under mu. */
	uint64_t alone_epoch;
	int64_t alone_issue;            /* issue time of the last such scan */
	bool alone;
};

int hb_obs_init(struct hb_obs *o, struct bdev *bd, const struct vmfsd_sb *sb, int32_t self);
void hb_obs_destroy(struct hb_obs *o);
/* Reads the whole region once and updates the table. */
int hb_obs_scan(struct hb_obs *o);
/* Under o->mu. */
enum hb_liveness hb_obs_liveness_locked(const struct hb_obs *o, uint32_t slot);
void hb_obs_info_locked(const struct hb_obs *o, uint32_t slot, int64_t now,
			struct hb_slot_info *info);

/* One slot sector read fresh from the disk (not through the table).
 * *ZERO = 1 for an all-zero sector; returns -EUCLEAN/-EBADMSG when it does
 * not decode. */
/* pr.c: fencing by SCSI persistent reservations (docs/cluster.md §8). */
uint64_t hb_pr_key(uint32_t slot, uint64_t gen);
int hb_pr_register(struct hb *hb, uint32_t slot, uint64_t gen);
void hb_pr_joined(struct hb *hb);
int hb_pr_preempt(struct hb *hb, uint32_t slot, uint64_t gen);
void hb_pr_leave(struct hb *hb);

/* lock.c: frees the record guesses (hb teardown). */
void lock_guess_free(struct hb *hb);

int hb_slot_read(struct bdev *bd, const struct vmfsd_sb *sb, uint32_t slot, struct vmfsd_hb *hb,
		 int *zero);


struct hb {
	struct hb_obs obs;
	struct bdev *bd;
	struct vmfsd_sb sb;
	struct hb_timing t;
	char name[VMFSD_HOSTNAME_MAX + 1];
	uint8_t uuid[16];
	uint32_t slot;
	uint64_t gen;

	pthread_mutex_t own_mu;         /* our slot's writes: renewal, leave */
	uint8_t *mine;                  /* exactly what we last wrote (aligned) */
	struct vmfsd_hb me;             /* decoded MINE */
	_Atomic uint32_t flags;         /* VMFSD_HB_F_* for our next write */
	/* Issue time (hb_clock_ns) of the last write of our slot that is known
	 * to have succeeded.  The fence deadline runs from the *issue*, not the
	 * completion: an observer can have seen the write as early as it
	 * landed, which can be any time after it was issued. */
	_Atomic int64_t last_ok_issue;
	_Atomic int fenced;             /* enum hb_fence_reason */
	_Atomic int64_t fenced_at;
	_Atomic int taken_over;

	hb_fence_fn fence_cb;
	void *fence_arg;

	pthread_mutex_t mu;             /* stop flag and sleeping */
	pthread_cond_t cv;              /* CLOCK_MONOTONIC condvar */
	bool stop;
	bool started;
	pthread_t renew_th, fence_th, mon_th;

	/* Slots we claimed for replay: the REPLAYING sector we wrote. */
	uint8_t (*replay)[VMFSD_SECTOR];
	uint8_t *replay_held;

	_Atomic unsigned faults;        /* enum lockmgr_fault bits */

	/* lock.c: the content each lock record had when this process last
	 * read or wrote it, a guess for the next compare-and-write on it
	 * (LOCK_GUESS_N entries by offset, allocated on first use). */
	pthread_mutex_t guess_mu;
	struct lock_guess *guess;

	/* Persistent reservations (pr.c): our key is registered; dead
	 * incarnations we preempted. */
	_Atomic int pr_registered;
	_Atomic uint64_t pr_preempts;

	/* Counters for tests and benchmarks. */
	_Atomic uint64_t renewals, renew_errors;
	_Atomic int64_t renew_max_ns;
};

/* Named fault-injection points of lockmgr (compiled in, off by default;
 * xfsprogs' error tags).  Tests flip them with lockmgr_fault_set().
 *   LOCKMGR_FAULT_RENEW_STALL   the renewal thread stops renewing (as if its
 *                               I/O hung), without failing any I/O
 *   LOCKMGR_FAULT_NO_FENCE      the fence thread does not run: only for the
 *                               negative test that shows the ordering check
 *                               catches a host that does not fence
 */
enum lockmgr_fault {
	LOCKMGR_FAULT_RENEW_STALL = 1u << 0,
	LOCKMGR_FAULT_NO_FENCE = 1u << 1,
};
void lockmgr_fault_set(struct hb *hb, unsigned faults);

#endif
