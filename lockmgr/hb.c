// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Heartbeat: slot claim, renewal, self-fencing, observation of the other
 * slots, and the dead-host takeover (claim for replay, release with a new
 * generation).  Three threads per mounted volume:
 *   renewal  rewrites our slot with ATS every interval, expecting exactly
 *            the sector it wrote last; a miscompare means another host
 *            took the slot over (it judged us dead): fence (real-time
 *            class, like the fence thread);
 *   fence    a timer that does no I/O at all: when the last successful
 *            renewal was issued more than T - M ago, fence (so a hung I/O
 *            cannot stop the fencing clock, docs/cluster.md §3);
 *   monitor  reads every slot each interval and records, on this host's
 *            clock, when each content was first seen.
 * The ordering argument behind every constant is in docs/cluster.md; the
 * comments here point at its sections.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lockmgr_internal.h"

/* ---------------- clocks and timing ---------------- */

int64_t hb_clock_ns(void)
{
	struct timespec ts;

	/* CLOCK_BOOTTIME: like CLOCK_MONOTONIC (never steps, NTP only slews
	 * its rate) but it keeps counting while the system is suspended.  A
	 * host that resumes after a suspend longer than the timeout must see
	 * that time as passed and fence at once (docs/cluster.md §5). */
	clock_gettime(CLOCK_BOOTTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000ll + ts.tv_nsec;
}

static uint64_t wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);     /* display only */
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint32_t min_u32(uint32_t a, uint32_t b)
{
	return a < b ? a : b;
}

int hb_timing_compute(const struct vmfsd_sb *sb, struct hb_timing *t)
{
	uint32_t i = sb->hb_interval_ms, to = sb->hb_timeout_ms, slack;

	/* Below 20 ms the scheduling noise of an ordinary kernel is of the
	 * order of the margins themselves. */
	if (!i || to < 20 || to / 2 < i)
		return -EINVAL;
	t->interval_ms = i;
	t->timeout_ms = to;
	/* D, the I/O timeout we assume (docs/cluster.md §2): 2 s at the
	 * default 10 s timeout, as sanlock assumes its io_timeout; shorter
	 * timeouts (tests) scale it down to T / 5. */
	t->io_timeout_ms = min_u32(2000, to / 5);
	/* M = D + slack.  The slack absorbs the fence thread's period, the
	 * time the fence callback takes to fault the device, and the rate
	 * difference of two hosts' clocks over T (§3: M > D + check + 2ρT). */
	slack = min_u32(1000, to / 10);
	t->margin_ms = t->io_timeout_ms + slack;
	t->fence_after_ms = to - t->margin_ms;
	/* The fence thread's period is at most a quarter of the slack, so
	 * checking late by one period still leaves 3/4 of it. */
	t->check_ms = min_u32(min_u32(i / 4, slack / 4), 100);
	if (!t->check_ms)
		t->check_ms = 1;
	/* A host that is mounted beats within I + D; watch a little more. */
	t->busy_watch_ms = min_u32(2 * i + t->io_timeout_ms, to);
	return 0;
}

/* ---------------- observer ---------------- */

int hb_obs_init(struct hb_obs *o, struct bdev *bd, const struct vmfsd_sb *sb, int32_t self)
{
	int r;

	memset(o, 0, sizeof(*o));
	r = hb_timing_compute(sb, &o->t);
	if (r)
		return r;
	if (!sb->max_hosts || sb->max_hosts > VMFSD_MAX_HOSTS)
		return -EINVAL;
	o->bd = bd;
	o->sb = *sb;
	o->n = sb->max_hosts;
	/* Make assumption 1 (docs/cluster.md §2) true where the device can:
	 * iSCSI commands fail a little under D instead of waiting forever. */
	bdev_set_io_timeout(bd, o->t.io_timeout_ms);
	o->self = self;
	o->s = calloc(o->n, sizeof(*o->s));
	o->buf = bdev_alloc((size_t)o->n * VMFSD_META_BLOCK);
	if (!o->s || !o->buf) {
		free(o->s);
		bdev_free(o->buf);
		return -ENOMEM;
	}
	pthread_mutex_init(&o->mu, NULL);
	pthread_mutex_init(&o->scan_mu, NULL);
	return 0;
}

void hb_obs_destroy(struct hb_obs *o)
{
	if (!o->s)
		return;
	pthread_mutex_destroy(&o->mu);
	pthread_mutex_destroy(&o->scan_mu);
	free(o->s);
	bdev_free(o->buf);
	o->s = NULL;
	o->buf = NULL;
}

/* Records that SEC was in SLOT for a read issued at ISSUE that completed at
 * DONE (or, for our own writes, that we wrote it at DONE).  Under o->mu. */
static void obs_note_locked(struct hb_obs *o, uint32_t slot, const uint8_t *sec, int64_t issue,
			    int64_t done)
{
	struct hb_obs_slot *s = &o->s[slot];
	uint64_t base = o->sb.hb_off / VMFSD_META_BLOCK;

	if (s->seen && !memcmp(s->sec, sec, VMFSD_SECTOR)) {
		if (issue > s->confirm_issue)
			s->confirm_issue = issue;
		return;
	}
	if (s->seen)
		s->changed = true;
	memcpy(s->sec, sec, VMFSD_SECTOR);
	s->seen = true;
	s->zero = vmfsd_all_zero(sec, VMFSD_SECTOR);
	s->ok = s->zero || vmfsd_hb_decode(sec, base + slot, &s->d) == 0;
	if (s->zero)
		memset(&s->d, 0, sizeof(s->d));
	s->first_seen = done;
	s->confirm_issue = issue;
}

int hb_obs_scan(struct hb_obs *o)
{
	int64_t issue, done;
	uint32_t i;
	int r;

	pthread_mutex_lock(&o->scan_mu);
	issue = hb_clock_ns();
	r = bdev_pread(o->bd, o->buf, (size_t)o->n * VMFSD_META_BLOCK, o->sb.hb_off);
	done = hb_clock_ns();
	if (!r) {
		bool alone = o->self >= 0;

		pthread_mutex_lock(&o->mu);
		for (i = 0; i < o->n; i++)
			obs_note_locked(o, i, o->buf + (size_t)i * VMFSD_META_BLOCK, issue, done);
		for (i = 0; i < o->n && alone; i++)
			if ((int32_t)i != o->self && hb_obs_liveness_locked(o, i) != HB_FREE)
				alone = false;
		if (alone && !o->alone)
			o->alone_epoch++;
		o->alone = alone;
		o->alone_issue = issue;
		pthread_mutex_unlock(&o->mu);
	}
	pthread_mutex_unlock(&o->scan_mu);
	return r;
}

static bool unchanged_past_timeout(const struct hb_obs *o, const struct hb_obs_slot *s)
{
	/* §3: a read issued more than T after the content was first seen
	 * returned it again. */
	return s->confirm_issue - s->first_seen > (int64_t)o->t.timeout_ms * NS_PER_MS;
}

enum hb_liveness hb_obs_liveness_locked(const struct hb_obs *o, uint32_t slot)
{
	const struct hb_obs_slot *s = &o->s[slot], *rs;
	uint32_t rsl;

	/* No "now" here on purpose: a verdict rests on what reads returned
	 * and when they were issued, never on how long ago the last read was
	 * (a host whose own reads hang must not call others dead). */
	if (!s->seen)
		return HB_UNSEEN;
	if (!s->ok)
		return HB_DAMAGED;
	if (s->zero || s->d.state == VMFSD_HB_FREE)
		return HB_FREE;
	if (!unchanged_past_timeout(o, s))
		return s->changed ? HB_ALIVE : HB_SILENT;
	if (s->d.state == VMFSD_HB_LIVE)
		return HB_DEAD;
	/* REPLAYING for longer than T: dead only if the replayer, as named by
	 * slot *and* generation, is not a live host (§4.3). */
	rsl = s->d.replayer_slot;
	if (rsl >= o->n)
		return HB_DEAD;
	if ((int32_t)rsl == o->self && s->d.replayer_gen == o->self_gen)
		return HB_ALIVE;
	rs = &o->s[rsl];
	if (rs->seen && rs->ok && !rs->zero && rs->d.state == VMFSD_HB_LIVE &&
	    rs->d.generation == s->d.replayer_gen && !unchanged_past_timeout(o, rs))
		return HB_ALIVE;
	return HB_DEAD;
}

void hb_obs_info_locked(const struct hb_obs *o, uint32_t slot, int64_t now,
			struct hb_slot_info *info)
{
	const struct hb_obs_slot *s = &o->s[slot];

	memset(info, 0, sizeof(*info));
	info->slot = slot;
	info->liveness = hb_obs_liveness_locked(o, slot);
	info->unchanged_ms = s->seen ? (now - s->first_seen) / NS_PER_MS : -1;
	info->mine = (int32_t)slot == o->self;
	if (!s->seen || !s->ok || s->zero)
		return;
	info->state = s->d.state;
	memcpy(info->host_name, s->d.host_name, sizeof(info->host_name));
	memcpy(info->host_uuid, s->d.host_uuid, 16);
	info->generation = s->d.generation;
	info->counter = s->d.counter;
	info->journal_off = s->d.journal_off;
	info->pid = s->d.pid;
	info->replayer_slot = s->d.replayer_slot;
	info->replayer_gen = s->d.replayer_gen;
	info->wall_time_ms = s->d.wall_time_ms;
	info->flags = s->d.flags;
}

int hb_slot_read(struct bdev *bd, const struct vmfsd_sb *sb, uint32_t slot, struct vmfsd_hb *hb,
		 int *zero)
{
	uint64_t off = vmfsd_hb_slot_off(sb, slot);
	uint8_t *sec;
	int r;

	if (slot >= sb->max_hosts)
		return -EINVAL;
	sec = bdev_alloc(VMFSD_SECTOR);
	if (!sec)
		return -ENOMEM;
	r = bdev_pread(bd, sec, VMFSD_SECTOR, off);
	*zero = 0;
	if (!r && vmfsd_all_zero(sec, VMFSD_SECTOR)) {
		*zero = 1;
		memset(hb, 0, sizeof(*hb));
	} else if (!r) {
		r = vmfsd_hb_decode(sec, off / VMFSD_META_BLOCK, hb);
	}
	bdev_free(sec);
	return r;
}

int hb_watch_beating(struct bdev *bd, const struct vmfsd_sb *sb, uint32_t watch_ms,
		     uint8_t *beating)
{
	size_t len = (size_t)sb->max_hosts * VMFSD_META_BLOCK;
	uint8_t *before = bdev_alloc(len), *after = bdev_alloc(len);
	struct timespec ts = { .tv_sec = watch_ms / 1000,
			       .tv_nsec = (long)(watch_ms % 1000) * 1000000L };
	uint32_t s;
	int r = -ENOMEM;

	memset(beating, 0, VMFSD_MAX_HOSTS / 8);
	if (!before || !after)
		goto out;
	r = bdev_pread(bd, before, len, sb->hb_off);
	if (r)
		goto out;
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
	r = bdev_pread(bd, after, len, sb->hb_off);
	for (s = 0; !r && s < sb->max_hosts; s++)
		if (memcmp(before + (size_t)s * VMFSD_META_BLOCK,
			   after + (size_t)s * VMFSD_META_BLOCK, VMFSD_SECTOR))
			beating[s / 8] |= (uint8_t)(1u << (s % 8));
out:
	bdev_free(before);
	bdev_free(after);
	return r;
}

/* ---------------- our own slot ---------------- */

static void encode_sector(const struct vmfsd_hb *rec, uint64_t off, uint8_t *sec)
{
	_Alignas(8) uint8_t blk[VMFSD_META_BLOCK];      /* encode fills a whole block */

	vmfsd_hb_encode(rec, off / VMFSD_META_BLOCK, blk);
	memcpy(sec, blk, VMFSD_SECTOR);
}

static uint64_t slot_off(const struct hb *hb, uint32_t slot)
{
	return vmfsd_hb_slot_off(&hb->sb, slot);
}

static void note_issue(struct hb *hb, int64_t issue)
{
	int64_t cur = atomic_load(&hb->last_ok_issue);

	while (issue > cur && !atomic_compare_exchange_weak(&hb->last_ok_issue, &cur, issue))
		;
}

void hb_fence(struct hb *hb, enum hb_fence_reason reason)
{
	int expected = HB_NOT_FENCED;

	if (reason == HB_FENCE_TIMEOUT && (atomic_load(&hb->faults) & LOCKMGR_FAULT_NO_FENCE))
		return;
	if (!atomic_compare_exchange_strong(&hb->fenced, &expected, (int)reason))
		return;
	atomic_store(&hb->fenced_at, hb_clock_ns());
	/* The callback runs before anything else: the fenced flag above
	 * already stops lockmgr's own writes, the callback stops the
	 * filesystem's. */
	if (hb->fence_cb)
		hb->fence_cb(hb->fence_arg, reason);
	pthread_mutex_lock(&hb->mu);
	pthread_cond_broadcast(&hb->cv);
	pthread_mutex_unlock(&hb->mu);
}

int hb_write_check(struct hb *hb)
{
	int64_t age;

	if (atomic_load(&hb->fenced))
		return -EIO;
	age = hb_clock_ns() - atomic_load(&hb->last_ok_issue);
	if (age > (int64_t)hb->t.fence_after_ms * NS_PER_MS) {
		hb_fence(hb, HB_FENCE_TIMEOUT);
		if (atomic_load(&hb->fenced))
			return -EIO;
	}
	return 0;
}

/* Is ACTUAL a renewal of ours that we believed failed but that landed
 * (an I/O error reported after the write reached the medium)?  Only we
 * write LIVE with our generation: a takeover writes REPLAYING, and every
 * later owner of the slot has a higher generation. */
static bool is_our_lost_renewal(const struct hb *hb, const uint8_t *actual, struct vmfsd_hb *d)
{
	uint64_t off = slot_off(hb, hb->slot);

	return vmfsd_hb_decode(actual, off / VMFSD_META_BLOCK, d) == 0 &&
	       d->state == VMFSD_HB_LIVE && d->slot == hb->slot && d->generation == hb->gen &&
	       !memcmp(d->host_uuid, hb->uuid, 16) && d->counter > hb->me.counter;
}

/* One renewal: ATS from exactly what we wrote last to counter + 1.
 * Returns 0, -ECANCELED (the slot was taken over) or an I/O error. */
static int renew_once(struct hb *hb)
{
	uint64_t off = slot_off(hb, hb->slot);
	uint8_t *nv = bdev_alloc(2 * VMFSD_SECTOR), *actual;
	struct vmfsd_hb rec, seen;
	int64_t issue, took;
	int r = -EIO, tries;

	if (!nv)
		return -ENOMEM;
	actual = nv + VMFSD_SECTOR;
	pthread_mutex_lock(&hb->own_mu);
	for (tries = 0; tries < 3; tries++) {
		rec = hb->me;
		rec.counter++;
		rec.wall_time_ms = wall_ms();
		rec.flags = atomic_load(&hb->flags);
		encode_sector(&rec, off, nv);
		issue = hb_clock_ns();
		r = bdev_ats(hb->bd, off, hb->mine, nv, actual);
		took = hb_clock_ns() - issue;
		if (took > atomic_load(&hb->renew_max_ns))
			atomic_store(&hb->renew_max_ns, took);
		if (!r) {
			memcpy(hb->mine, nv, VMFSD_SECTOR);
			hb->me = rec;
			note_issue(hb, issue);
			atomic_fetch_add(&hb->renewals, 1);
			break;
		}
		if (r != -ECANCELED || !is_our_lost_renewal(hb, actual, &seen))
			break;
		/* Adopt it and renew on top; its issue time is unknown, so it
		 * does not move the fence deadline. */
		memcpy(hb->mine, actual, VMFSD_SECTOR);
		hb->me = seen;
	}
	pthread_mutex_unlock(&hb->own_mu);
	bdev_free(nv);
	if (r && r != -ECANCELED)
		atomic_fetch_add(&hb->renew_errors, 1);
	return r;
}

/* A renewal, and what a slot taken over means: someone judged us dead and
 * claimed it. */
static int renew(struct hb *hb)
{
	int r = renew_once(hb);

	if (r == -ECANCELED) {
		atomic_store(&hb->taken_over, 1);
		hb_fence(hb, HB_FENCE_TAKEN);
	}
	return r;
}

int hb_set_flags(struct hb *hb, uint32_t flags)
{
	if (atomic_exchange(&hb->flags, flags) == flags)
		return 0;
	if (atomic_load(&hb->fenced))
		return -EIO;
	/* A stalled renewal (fault injection) stalls this one too. */
	if (atomic_load(&hb->faults) & LOCKMGR_FAULT_RENEW_STALL)
		return 0;
	return renew(hb);
}

uint32_t hb_flags(const struct hb *hb)
{
	return atomic_load(&((struct hb *)hb)->flags);
}

/* ---------------- threads ---------------- */

/* Sleeps until DEADLINE on hb_clock_ns; returns true when asked to stop.
 * The condvar runs on CLOCK_MONOTONIC (the only clock glibc condvars take
 * besides the wall clock); the deadline is re-checked on the boot clock
 * after every wake-up, so a suspend costs at most one extra wait. */
static bool sleep_until(struct hb *hb, int64_t deadline)
{
	bool stop;

	pthread_mutex_lock(&hb->mu);
	while (!hb->stop) {
		int64_t left = deadline - hb_clock_ns();
		struct timespec ts;

		if (left <= 0)
			break;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec += left / 1000000000ll;
		ts.tv_nsec += left % 1000000000ll;
		if (ts.tv_nsec >= 1000000000l) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000l;
		}
		pthread_cond_timedwait(&hb->cv, &hb->mu, &ts);
	}
	stop = hb->stop;
	pthread_mutex_unlock(&hb->mu);
	return stop;
}

/* After fencing: read (never write) our slot each interval to learn
 * whether another host has taken it over (docs/cluster.md §4.4: a host that comes
 * back and finds its generation changed never writes again). */
static void watch_own_slot(struct hb *hb)
{
	uint8_t *sec = bdev_alloc(VMFSD_SECTOR);

	if (!sec)
		return;
	if (!bdev_pread(hb->bd, sec, VMFSD_SECTOR, slot_off(hb, hb->slot)) &&
	    memcmp(sec, hb->mine, VMFSD_SECTOR))
		atomic_store(&hb->taken_over, 1);
	bdev_free(sec);
}

static void *renew_main(void *arg)
{
	struct hb *hb = arg;
	int64_t iv = (int64_t)hb->t.interval_ms * NS_PER_MS;
	int64_t next = atomic_load(&hb->last_ok_issue) + iv;
	struct sched_param sp = { .sched_priority = 1 };

	/* The same real-time class as the fence thread (best effort, root
	 * only).  The renewal is as time-critical as the fence check: with
	 * the fence thread on time and the renewal thread waiting behind CPU
	 * hogs, a healthy host misses its own deadline and fences itself
	 * (docs/cluster.md §2, assumption 3; §3 "No spurious fencing").
	 * sanlock likewise runs its lease renewals at real-time priority. */
	(void)pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp);
	while (!sleep_until(hb, next)) {
		int64_t issue = hb_clock_ns();

		next = issue + iv;
		if (atomic_load(&hb->fenced)) {
			if (!atomic_load(&hb->taken_over))
				watch_own_slot(hb);
			continue;
		}
		if (atomic_load(&hb->faults) & LOCKMGR_FAULT_RENEW_STALL)
			continue;
		/* After an error, simply try again next interval: the device
		 * may recover, and if it does not, the fence thread acts. */
		(void)renew(hb);
	}
	return NULL;
}

static void *fence_main(void *arg)
{
	struct hb *hb = arg;
	int64_t limit = (int64_t)hb->t.fence_after_ms * NS_PER_MS;
	int64_t period = (int64_t)hb->t.check_ms * NS_PER_MS;
	struct sched_param sp = { .sched_priority = 1 };

	/* Best effort: a real-time class keeps the fencing clock on time under
	 * CPU load (sanlock's daemon does the same).  Without the privilege
	 * the check period and margin still hold on a normally loaded host. */
	(void)pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp);
	while (!atomic_load(&hb->fenced)) {
		int64_t now = hb_clock_ns();

		if (now - atomic_load(&hb->last_ok_issue) > limit)
			hb_fence(hb, HB_FENCE_TIMEOUT);
		if (sleep_until(hb, now + period))
			break;
	}
	return NULL;
}

static void *monitor_main(void *arg)
{
	struct hb *hb = arg;
	int64_t iv = (int64_t)hb->t.interval_ms * NS_PER_MS;
	int64_t next = hb_clock_ns();

	do {
		next += iv;
		(void)hb_obs_scan(&hb->obs);    /* a failed read teaches nothing */
		if (next < hb_clock_ns())
			next = hb_clock_ns();
	} while (!sleep_until(hb, next));
	return NULL;
}

/* ---------------- join, start, leave ---------------- */

static void hb_free(struct hb *hb)
{
	if (!hb)
		return;
	hb_obs_destroy(&hb->obs);
	bdev_free(hb->mine);
	free(hb->replay);
	free(hb->replay_held);
	lock_guess_free(hb);
	pthread_mutex_destroy(&hb->guess_mu);
	pthread_mutex_destroy(&hb->own_mu);
	pthread_mutex_destroy(&hb->mu);
	pthread_cond_destroy(&hb->cv);
	free(hb);
}

static struct hb *hb_alloc(struct bdev *bd, const struct vmfsd_sb *sb, int *err)
{
	pthread_condattr_t ca;
	struct hb *hb = calloc(1, sizeof(*hb));

	*err = -ENOMEM;
	if (!hb)
		return NULL;
	pthread_mutex_init(&hb->own_mu, NULL);
	pthread_mutex_init(&hb->mu, NULL);
	pthread_mutex_init(&hb->guess_mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&hb->cv, &ca);
	pthread_condattr_destroy(&ca);
	*err = hb_obs_init(&hb->obs, bd, sb, -1);
	if (*err) {
		pthread_mutex_destroy(&hb->guess_mu);
		pthread_mutex_destroy(&hb->own_mu);
		pthread_mutex_destroy(&hb->mu);
		pthread_cond_destroy(&hb->cv);
		free(hb);
		return NULL;
	}
	hb->bd = bd;
	hb->sb = *sb;
	hb->t = hb->obs.t;
	hb->mine = bdev_alloc(VMFSD_SECTOR);
	hb->replay = calloc(sb->max_hosts, sizeof(*hb->replay));
	hb->replay_held = calloc(sb->max_hosts, 1);
	if (!hb->mine || !hb->replay || !hb->replay_held) {
		hb_free(hb);
		*err = -ENOMEM;
		return NULL;
	}
	*err = 0;
	return hb;
}

static bool name_is(const struct hb_obs_slot *s, const char *name)
{
	return s->ok && !s->zero && !strncmp(s->d.host_name, name, VMFSD_HOSTNAME_MAX);
}

/* Watches every LIVE slot carrying our name for busy_watch_ms.  Returns
 * -EBUSY (with *BUSY) if one beat: this host name is mounted already. */
static int busy_check(struct hb *hb, uint32_t *busy)
{
	struct hb_obs *o = &hb->obs;
	uint8_t (*before)[VMFSD_SECTOR];
	uint32_t i, nwatch = 0;
	int r = 0;

	before = calloc(o->n, VMFSD_SECTOR);
	if (!before)
		return -ENOMEM;
	pthread_mutex_lock(&o->mu);
	for (i = 0; i < o->n; i++)
		if (name_is(&o->s[i], hb->name) && o->s[i].d.state == VMFSD_HB_LIVE) {
			memcpy(before[i], o->s[i].sec, VMFSD_SECTOR);
			nwatch++;
		}
	pthread_mutex_unlock(&o->mu);
	if (!nwatch)
		goto out;
	{
		struct timespec ts = {
			.tv_sec = hb->t.busy_watch_ms / 1000,
			.tv_nsec = (long)(hb->t.busy_watch_ms % 1000) * 1000000l,
		};

		while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
			;
	}
	r = hb_obs_scan(o);
	if (r)
		goto out;
	pthread_mutex_lock(&o->mu);
	for (i = 0; i < o->n && !r; i++)
		if (!vmfsd_all_zero(before[i], VMFSD_SECTOR) && memcmp(before[i], o->s[i].sec, VMFSD_SECTOR) &&
		    name_is(&o->s[i], hb->name) && o->s[i].d.state == VMFSD_HB_LIVE) {
			if (busy)
				*busy = i;
			r = -EBUSY;
		}
	pthread_mutex_unlock(&o->mu);
out:
	free(before);
	return r;
}

/* Picks the slot to claim: a FREE one last used by our name, else the
 * lowest FREE or never-used one.  Under o->mu.  -ENOSPC if none. */
static int pick_slot_locked(struct hb *hb, uint32_t *slot)
{
	struct hb_obs *o = &hb->obs;
	int64_t best = -1;
	uint32_t i;

	for (i = 0; i < o->n; i++) {
		const struct hb_obs_slot *s = &o->s[i];

		if (!s->seen || !s->ok || (!s->zero && s->d.state != VMFSD_HB_FREE))
			continue;
		if (name_is(s, hb->name)) {
			best = i;
			break;
		}
		if (best < 0)
			best = i;
	}
	if (best < 0)
		return -ENOSPC;
	*slot = (uint32_t)best;
	return 0;
}

int hb_join(struct bdev *bd, const struct vmfsd_sb *sb, const char *host_name,
	    const uint8_t host_uuid[16], uint32_t *busy_slot, struct hb **out)
{
	uint8_t *expect = NULL, *nv;
	struct hb *hb;
	size_t nl = host_name ? strlen(host_name) : 0;
	int r, tries;

	if (!nl || nl > VMFSD_HOSTNAME_MAX || !host_uuid)
		return -EINVAL;
	hb = hb_alloc(bd, sb, &r);
	if (!hb)
		return r;
	memcpy(hb->name, host_name, nl);
	memcpy(hb->uuid, host_uuid, 16);
	expect = bdev_alloc(2 * VMFSD_SECTOR);
	if (!expect) {
		r = -ENOMEM;
		goto fail;
	}
	nv = expect + VMFSD_SECTOR;
	r = hb_obs_scan(&hb->obs);
	if (r)
		goto fail;
	r = busy_check(hb, busy_slot);
	if (r)
		goto fail;
	/* Every miscompare means another host claimed or changed a slot
	 * between our scan and our ATS: rescan and pick again.  Each round
	 * somebody else made progress, so max_hosts + 8 rounds is plenty. */
	for (tries = 0; tries < (int)sb->max_hosts + 8; tries++) {
		struct vmfsd_hb rec;
		uint32_t slot;
		int64_t issue;
		uint64_t off;

		pthread_mutex_lock(&hb->obs.mu);
		r = pick_slot_locked(hb, &slot);
		if (!r) {
			memcpy(expect, hb->obs.s[slot].sec, VMFSD_SECTOR);
			rec = hb->obs.s[slot].d;        /* zeroed for a zero slot */
		}
		pthread_mutex_unlock(&hb->obs.mu);
		if (r)
			goto fail;
		off = vmfsd_hb_slot_off(sb, slot);
		memset(rec.host_name, 0, sizeof(rec.host_name));
		memcpy(rec.host_name, host_name, nl);
		memcpy(rec.host_uuid, host_uuid, 16);
		rec.state = VMFSD_HB_LIVE;
		rec.generation++;       /* a new incarnation: old locks go stale */
		rec.counter = 0;
		rec.journal_off = sb->journal_off + (uint64_t)slot * sb->journal_size;
		rec.slot = slot;
		rec.pid = (uint32_t)getpid();
		rec.replayer_slot = 0;
		rec.replayer_gen = 0;
		rec.flags = 0;
		rec.wall_time_ms = wall_ms();
		encode_sector(&rec, off, nv);
		/* Registered before the claim, our first write: a reserved LUN
		 * refuses writes from unregistered initiators (pr.c). */
		r = hb_pr_register(hb, slot, rec.generation);
		if (r)
			goto fail;
		issue = hb_clock_ns();
		r = bdev_ats(bd, off, expect, nv, NULL);
		if (r == -ECANCELED) {
			r = hb_obs_scan(&hb->obs);
			if (r)
				goto fail;
			r = -EAGAIN;
			continue;
		}
		if (r)
			goto fail;
		hb->slot = slot;
		hb->gen = rec.generation;
		hb->me = rec;
		memcpy(hb->mine, nv, VMFSD_SECTOR);
		atomic_store(&hb->last_ok_issue, issue);
		pthread_mutex_lock(&hb->obs.mu);
		hb->obs.self = (int32_t)slot;
		hb->obs.self_gen = rec.generation;
		obs_note_locked(&hb->obs, slot, nv, issue, hb_clock_ns());
		pthread_mutex_unlock(&hb->obs.mu);
		hb_pr_joined(hb);
		bdev_free(expect);
		*out = hb;
		return 0;
	}
fail:
	bdev_free(expect);
	hb_free(hb);
	return r;
}

void hb_set_fence_cb(struct hb *hb, hb_fence_fn fn, void *arg)
{
	hb->fence_cb = fn;
	hb->fence_arg = arg;
}

void lockmgr_fault_set(struct hb *hb, unsigned faults)
{
	atomic_store(&hb->faults, faults);
}

/* Tells the threads to stop and wakes those waiting on the condition. */
static void signal_stop(struct hb *hb)
{
	pthread_mutex_lock(&hb->mu);
	hb->stop = true;
	pthread_cond_broadcast(&hb->cv);
	pthread_mutex_unlock(&hb->mu);
}

static void stop_threads(struct hb *hb)
{
	if (!hb->started)
		return;
	signal_stop(hb);
	pthread_join(hb->renew_th, NULL);
	pthread_join(hb->fence_th, NULL);
	pthread_join(hb->mon_th, NULL);
	hb->started = false;
}

int hb_start(struct hb *hb)
{
	sigset_t all, old;
	int r;

	if (hb->started)
		return -EALREADY;
	/* Our threads take no signals: they stay with the program's own. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	hb->stop = false;
	r = -pthread_create(&hb->fence_th, NULL, fence_main, hb);
	if (r)
		goto out;
	r = -pthread_create(&hb->renew_th, NULL, renew_main, hb);
	if (r) {
		signal_stop(hb);
		pthread_join(hb->fence_th, NULL);
		goto out;
	}
	r = -pthread_create(&hb->mon_th, NULL, monitor_main, hb);
	if (r) {
		signal_stop(hb);
		pthread_join(hb->fence_th, NULL);
		pthread_join(hb->renew_th, NULL);
		goto out;
	}
	hb->started = true;
out:
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return r;
}

int hb_leave(struct hb *hb)
{
	uint64_t off;
	uint8_t *nv;
	struct vmfsd_hb rec;
	int r;

	if (!hb)
		return 0;
	stop_threads(hb);
	off = slot_off(hb, hb->slot);
	r = hb_write_check(hb);
	if (r) {
		r = atomic_load(&hb->taken_over) ? -ESTALE : -EIO;
		goto out;
	}
	nv = bdev_alloc(VMFSD_SECTOR);
	if (!nv) {
		r = -ENOMEM;
		goto out;
	}
	pthread_mutex_lock(&hb->own_mu);
	rec = hb->me;
	rec.state = VMFSD_HB_FREE;
	rec.flags = 0;
	rec.counter++;
	rec.wall_time_ms = wall_ms();
	encode_sector(&rec, off, nv);
	r = bdev_ats(hb->bd, off, hb->mine, nv, NULL);
	pthread_mutex_unlock(&hb->own_mu);
	if (r == -ECANCELED)
		r = -ESTALE;
	if (!r)
		hb_pr_leave(hb);        /* after our last write */
	bdev_free(nv);
out:
	hb_free(hb);
	return r;
}

/* ---------------- queries ---------------- */

enum hb_fence_reason hb_is_fenced(const struct hb *hb)
{
	return (enum hb_fence_reason)atomic_load(&((struct hb *)hb)->fenced);
}

int hb_is_taken_over(const struct hb *hb)
{
	return atomic_load(&((struct hb *)hb)->taken_over);
}

uint32_t hb_my_slot(const struct hb *hb)
{
	return hb->slot;
}

uint64_t hb_my_generation(const struct hb *hb)
{
	return hb->gen;
}

const struct hb_timing *hb_get_timing(const struct hb *hb)
{
	return &hb->t;
}

int hb_scan(struct hb *hb)
{
	return hb_obs_scan(&hb->obs);
}

int hb_slot_state(struct hb *hb, uint32_t slot, struct hb_slot_info *info)
{
	if (slot >= hb->obs.n)
		return -EINVAL;
	pthread_mutex_lock(&hb->obs.mu);
	hb_obs_info_locked(&hb->obs, slot, hb_clock_ns(), info);
	pthread_mutex_unlock(&hb->obs.mu);
	return 0;
}

uint64_t hb_alone_epoch(struct hb *hb)
{
	/* A scan older than two intervals proves nothing about a host that
	 * joined since (the monitor scans every interval; a failed read
	 * leaves the table as it was). */
	int64_t fresh = 2 * (int64_t)hb->obs.t.interval_ms * NS_PER_MS;
	uint64_t e = 0;

	pthread_mutex_lock(&hb->obs.mu);
	if (hb->obs.alone && hb_clock_ns() - hb->obs.alone_issue < fresh)
		e = hb->obs.alone_epoch;
	pthread_mutex_unlock(&hb->obs.mu);
	return e;
}

/* Is slot I a host that beats and says it commits late (obs.mu held)?
 * A slot that has not changed for busy_watch_ms (2I + D) since we first
 * saw its content is not renewing: dead or stalled past its own fence
 * deadline's reach, it commits nothing we could wait for. */
static bool slot_late_locked(const struct hb *hb, uint32_t i, int64_t now)
{
	const struct hb_obs_slot *s = &hb->obs.s[i];

	return (int32_t)i != hb->obs.self && s->seen && s->ok && !s->zero &&
	       vmfsd_hb_late(s->d.state, s->d.flags) &&
	       now - s->first_seen < (int64_t)hb->t.busy_watch_ms * NS_PER_MS;
}

int hb_wait_not_late(struct hb *hb, uint32_t max_ms, uint32_t *slot)
{
	int64_t end = hb_clock_ns() + (int64_t)max_ms * NS_PER_MS;

	for (;;) {
		int64_t now;
		bool late = false;
		uint32_t i;
		int r = hb_obs_scan(&hb->obs);

		if (r)
			return r;
		now = hb_clock_ns();
		pthread_mutex_lock(&hb->obs.mu);
		for (i = 0; i < hb->obs.n && !late; i++)
			if (slot_late_locked(hb, i, now)) {
				late = true;
				*slot = i;
			}
		pthread_mutex_unlock(&hb->obs.mu);
		if (!late)
			return 0;
		if (now >= end)
			return -ETIMEDOUT;
		if (sleep_until(hb, now + (int64_t)HB_LATE_POLL_MS * NS_PER_MS))
			return -EINTR;
	}
}

int hb_next_dead(struct hb *hb, uint32_t from, uint32_t *slot)
{
	uint32_t i;
	int r = -ENOENT;

	pthread_mutex_lock(&hb->obs.mu);
	for (i = from; i < hb->obs.n; i++)
		if (i != hb->slot && hb_obs_liveness_locked(&hb->obs, i) == HB_DEAD) {
			*slot = i;
			r = 0;
			break;
		}
	pthread_mutex_unlock(&hb->obs.mu);
	return r;
}

/* ---------------- dead-host takeover ---------------- */

/* The two sectors of a takeover step (expected content, new content), once
 * the write check passed. */
static int takeover_bufs(struct hb *hb, uint8_t **expect, uint8_t **nv)
{
	int r = hb_write_check(hb);

	if (r)
		return r;
	*expect = bdev_alloc(2 * VMFSD_SECTOR);
	if (!*expect)
		return -ENOMEM;
	*nv = *expect + VMFSD_SECTOR;
	return 0;
}

/* ATS of the slot sector at OFF from EXPECT to REC, stamped now; the new
 * sector is left in NV and the issue time in *ISSUE for obs_note_locked. */
static int takeover_ats(struct hb *hb, uint64_t off, const uint8_t *expect,
			struct vmfsd_hb *rec, uint8_t *nv, int64_t *issue)
{
	rec->wall_time_ms = wall_ms();
	encode_sector(rec, off, nv);
	*issue = hb_clock_ns();
	return bdev_ats(hb->bd, off, expect, nv, NULL);
}

int hb_claim_dead(struct hb *hb, uint32_t slot)
{
	struct hb_obs *o = &hb->obs;
	uint8_t *expect, *nv;
	struct vmfsd_hb rec;
	enum hb_liveness l;
	uint64_t off;
	int64_t issue;
	int r;

	if (slot >= o->n || slot == hb->slot)
		return -EINVAL;
	r = takeover_bufs(hb, &expect, &nv);
	if (r)
		return r;
	pthread_mutex_lock(&o->mu);
	l = hb_obs_liveness_locked(o, slot);
	memcpy(expect, o->s[slot].sec, VMFSD_SECTOR);
	rec = o->s[slot].d;
	pthread_mutex_unlock(&o->mu);
	if (l == HB_FREE || l == HB_DAMAGED) {
		r = -EINVAL;
		goto out;
	}
	if (l != HB_DEAD) {
		r = -EAGAIN;
		goto out;
	}
	/* The expected content is exactly the one judged dead: if the host
	 * (or a replayer) wrote anything since, the ATS fails. */
	off = slot_off(hb, slot);
	rec.state = VMFSD_HB_REPLAYING;
	rec.flags = 0;          /* what the dead host had not committed is lost */
	rec.replayer_slot = hb->slot;
	rec.replayer_gen = hb->gen;
	r = takeover_ats(hb, off, expect, &rec, nv, &issue);
	if (r == -ECANCELED)
		r = -EBUSY;
	if (r)
		goto out;
	pthread_mutex_lock(&o->mu);
	memcpy(hb->replay[slot], nv, VMFSD_SECTOR);
	hb->replay_held[slot] = 1;
	obs_note_locked(o, slot, nv, issue, hb_clock_ns());
	pthread_mutex_unlock(&o->mu);
	/* Before anything of the dead incarnation is replayed or broken: from
	 * now on the target refuses its writes (pr.c). */
	(void)hb_pr_preempt(hb, slot, rec.generation);
out:
	bdev_free(expect);
	return r;
}

int hb_release_dead(struct hb *hb, uint32_t slot)
{
	struct hb_obs *o = &hb->obs;
	uint8_t *expect, *nv;
	struct vmfsd_hb rec;
	uint64_t off;
	int64_t issue;
	int r;

	if (slot >= o->n)
		return -EINVAL;
	pthread_mutex_lock(&o->mu);
	r = hb->replay_held[slot] ? 0 : -EINVAL;
	pthread_mutex_unlock(&o->mu);
	if (r)
		return r;
	r = takeover_bufs(hb, &expect, &nv);
	if (r)
		return r;
	off = slot_off(hb, slot);
	pthread_mutex_lock(&o->mu);
	memcpy(expect, hb->replay[slot], VMFSD_SECTOR);
	pthread_mutex_unlock(&o->mu);
	r = vmfsd_hb_decode(expect, off / VMFSD_META_BLOCK, &rec);
	if (r)
		goto out;
	/* The replay must be durable before the new generation can be seen:
	 * the generation is what lets others break the dead host's locks and
	 * read the objects the replay wrote (§4.2). */
	r = bdev_flush(hb->bd);
	if (r)
		goto out;
	rec.state = VMFSD_HB_FREE;
	rec.flags = 0;
	rec.generation++;
	rec.replayer_slot = 0;
	rec.replayer_gen = 0;
	r = takeover_ats(hb, off, expect, &rec, nv, &issue);
	if (r == -ECANCELED) {
		/* Someone took the replay from us: they judged us dead. */
		pthread_mutex_lock(&o->mu);
		hb->replay_held[slot] = 0;
		pthread_mutex_unlock(&o->mu);
		r = -ESTALE;
		goto out;
	}
	if (r)
		goto out;
	r = bdev_flush(hb->bd);
	pthread_mutex_lock(&o->mu);
	hb->replay_held[slot] = 0;
	obs_note_locked(o, slot, nv, issue, hb_clock_ns());
	pthread_mutex_unlock(&o->mu);
out:
	bdev_free(expect);
	return r;
}
