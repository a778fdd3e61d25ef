// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * On-disk locks: the first 512-byte sector of every inode and resource
 * cluster, changed only by ATS from exactly the content just read.  A lock
 * needs no renewal of its own: each holder is recorded with its heartbeat
 * slot and that slot's generation, and stays valid while the slot is LIVE
 * or REPLAYING with that generation.  So a dead host's locks become
 * breakable only once a survivor has replayed its journal and freed its
 * slot with generation + 1 (hb_release_dead), and breaking them is simply
 * dropping the stale holders in the next ATS (docs/cluster.md §4).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lockmgr_internal.h"

static bool bit_get(const uint8_t *bm, uint32_t i)
{
	return bm[i / 8] & (1u << (i % 8));
}

static void bit_set(uint8_t *bm, uint32_t i)
{
	bm[i / 8] |= (uint8_t)(1u << (i % 8));
}

static void bit_clear(uint8_t *bm, uint32_t i)
{
	bm[i / 8] &= (uint8_t)~(1u << (i % 8));
}

const char *lock_mode_name(uint16_t mode)
{
	switch (mode) {
	case VMFSD_LOCK_FREE:
		return "free";
	case VMFSD_LOCK_EXCL:
		return "EXCL";
	case VMFSD_LOCK_RO:
		return "RO";
	case VMFSD_LOCK_MW:
		return "MW";
	}
	return "?";
}

bool lock_holder_valid(const struct vmfsd_hb *rec, int zero, int err, uint64_t gen, bool full)
{
	if (err)
		return true;    /* unreadable slot: refuse rather than break */
	if (zero || rec->state == VMFSD_HB_FREE)
		return false;   /* left cleanly, or replayed and released */
	/* LIVE or REPLAYING: valid while the incarnation is the same.  A LIVE
	 * slot judged dead is still valid here: only the generation bump of
	 * hb_release_dead, after the replay, ends it. */
	return full ? rec->generation == gen : (uint8_t)rec->generation == (uint8_t)gen;
}

/* What one call learnt about the holders of one record. */
struct lock_view {
	struct vmfsd_lock rec;          /* as read (FREE for an all-zero sector) */
	uint8_t valid[VMFSD_MAX_HOSTS / 8];
	uint64_t gen[VMFSD_MAX_HOSTS];  /* current generation of valid holders */
	bool known[VMFSD_MAX_HOSTS];    /* gen[] is the full generation (not
					 * only 8 bits of an unreadable slot) */
	char name[VMFSD_MAX_HOSTS][VMFSD_HOSTNAME_MAX + 1];
	uint32_t nvalid, nstale;
	bool me;                        /* we are a valid holder */
};

/* ---------------- record guesses ---------------- */

/* A change is a compare-and-write from exactly the bytes of the record, so
 * those bytes need not come from a read just before: any guess will do,
 * because the ATS writes nothing unless the record is still exactly that,
 * and a miscompare hands back the real content (one device round trip
 * either way).  The guess is what this process last read or wrote there,
 * else an all-zero (never used) sector.  It saves the read in front of
 * every ATS when no other host touched the record since: for an inode
 * created, closed and released by this host, or one unlinked after it
 * created it, 2 of the 3 device I/Os of each lock change instead of 3
 * (BENCHMARKS.md "Metadata (helper meta)").  Only a decision that writes
 * is taken on a guess: an answer without a write (busy, held already, not
 * ours) is checked against a fresh read first.  4096 entries: 2 MiB, one
 * per inode of a directory of a few thousand files being filled or
 * emptied (direct-mapped by block number, so consecutive inodes do not
 * collide). */
#define LOCK_GUESS_N 4096u

struct lock_guess {
	uint64_t off;                   /* 0: empty (block 0 is the superblock) */
	bool mine_free;                 /* SEC is a free record we wrote */
	uint8_t sec[VMFSD_SECTOR];
};

static struct lock_guess *guess_slot(struct hb *hb, uint64_t off)
{
	if (!hb->guess) {
		hb->guess = calloc(LOCK_GUESS_N, sizeof(*hb->guess));
		if (!hb->guess)
			return NULL;
	}
	return &hb->guess[(off / VMFSD_META_BLOCK) % LOCK_GUESS_N];
}

/* CUR = the guess for OFF (an all-zero sector when there is none).
 * Returns true when the guess is a free record this process wrote. */
static bool guess_get(struct hb *hb, uint64_t off, uint8_t *cur)
{
	struct lock_guess *g;
	bool mine = false;

	pthread_mutex_lock(&hb->guess_mu);
	g = guess_slot(hb, off);
	if (g && g->off == off) {
		memcpy(cur, g->sec, VMFSD_SECTOR);
		mine = g->mine_free;
	} else {
		memset(cur, 0, VMFSD_SECTOR);
	}
	pthread_mutex_unlock(&hb->guess_mu);
	return mine;
}

/* SEC was the record at OFF a moment ago (read, written, or returned by a
 * miscompare; MINE_FREE: written by us, with no holder left); NULL forgets
 * it. */
static void guess_put(struct hb *hb, uint64_t off, const uint8_t *sec, bool mine_free)
{
	struct lock_guess *g;

	pthread_mutex_lock(&hb->guess_mu);
	g = guess_slot(hb, off);
	if (g && sec) {
		g->off = off;
		g->mine_free = mine_free;
		memcpy(g->sec, sec, VMFSD_SECTOR);
	} else if (g && g->off == off) {
		g->off = 0;
	}
	pthread_mutex_unlock(&hb->guess_mu);
}

void lock_guess_free(struct hb *hb)
{
	free(hb->guess);
	hb->guess = NULL;
}

/* Judges every holder of the record CUR (the sector at OFF) by reading its
 * slot fresh from the disk (the observer's table may be an interval old;
 * a stale verdict is final because a slot never returns to an old
 * generation, but a valid one must be current to name the holder). */
static int lock_judge_view(struct hb *hb, struct bdev *bd, uint64_t off, const uint8_t *cur,
			   struct lock_view *v)
{
	const struct vmfsd_sb *sb = &hb->sb;
	uint32_t s;
	int r, zero = 1;

	memset(v, 0, sizeof(*v));
	for (s = 0; s < VMFSD_SECTOR && zero; s++)
		zero = !cur[s];
	if (!zero) {
		r = vmfsd_lock_decode(cur, off / VMFSD_META_BLOCK, &v->rec);
		if (r)
			return r;
	}
	if (v->rec.mode == VMFSD_LOCK_FREE)
		return 0;
	/* Older writers (and fsck) may leave the owner out of the bitmap in
	 * exclusive mode: the owner is a holder whatever the bitmap says. */
	if (!bit_get(v->rec.holders, v->rec.owner_slot)) {
		bit_set(v->rec.holders, v->rec.owner_slot);
		v->rec.holder_gen8[v->rec.owner_slot] = (uint8_t)v->rec.owner_slot_gen;
	}
	for (s = 0; s < VMFSD_MAX_HOSTS; s++) {
		struct vmfsd_hb h;
		bool full = s == v->rec.owner_slot;
		uint64_t g = full ? v->rec.owner_slot_gen : v->rec.holder_gen8[s];
		int err = 0, hz = 0;

		if (!bit_get(v->rec.holders, s))
			continue;
		if (s >= sb->max_hosts) {
			v->nstale++;    /* no such slot on this volume */
			continue;
		}
		if (s == hb->slot && !atomic_load(&hb->fenced)) {
			/* Our own slot: we know our generation without a read. */
			memset(&h, 0, sizeof(h));
			h.state = VMFSD_HB_LIVE;
			h.generation = hb->gen;
			memcpy(h.host_name, hb->name, sizeof(h.host_name));
		} else {
			err = hb_slot_read(bd, sb, s, &h, &hz);
			if (err == -EIO || err == -ENOMEM)
				return err;
		}
		if (!lock_holder_valid(&h, hz, err, g, full)) {
			v->nstale++;
			continue;
		}
		bit_set(v->valid, s);
		v->nvalid++;
		v->gen[s] = err ? g : h.generation;
		v->known[s] = !err || full;
		if (err)
			snprintf(v->name[s], sizeof(v->name[s]), "?");
		else
			memcpy(v->name[s], h.host_name, sizeof(v->name[s]));
		if (s == hb->slot && v->gen[s] == hb->gen)
			v->me = true;
	}
	return 0;
}

/* Reads the sector at OFF into CUR and judges its holders. */
static int lock_read_view(struct hb *hb, struct bdev *bd, uint64_t off, uint8_t *cur,
			  struct lock_view *v)
{
	int r;

	if (off % VMFSD_META_BLOCK)
		return -EINVAL;
	r = bdev_pread(bd, cur, VMFSD_SECTOR, off);
	if (r)
		return r;
	return lock_judge_view(hb, bd, off, cur, v);
}

/* The owner to report/keep: the recorded owner if still valid, else the
 * lowest valid holder.  Returns -1 when none is valid. */
static int32_t view_owner(const struct lock_view *v)
{
	uint32_t s;

	if (bit_get(v->valid, v->rec.owner_slot))
		return (int32_t)v->rec.owner_slot;
	for (s = 0; s < VMFSD_MAX_HOSTS; s++)
		if (bit_get(v->valid, s))
			return (int32_t)s;
	return -1;
}

static void fill_info(const struct lock_view *v, uint16_t mode, uint64_t lock_gen,
		      const uint8_t *holders, int32_t owner, struct lock_info *out)
{
	uint32_t s;

	if (!out)
		return;
	memset(out, 0, sizeof(*out));
	out->mode = mode;
	out->lock_gen = lock_gen;
	out->nstale = v->nstale;
	if (mode == VMFSD_LOCK_FREE || owner < 0) {
		out->mode = VMFSD_LOCK_FREE;
		return;
	}
	memcpy(out->holders, holders, sizeof(out->holders));
	for (s = 0; s < VMFSD_MAX_HOSTS; s++)
		out->nholders += bit_get(holders, s);
	out->owner_slot = (uint32_t)owner;
	out->owner_gen = v->gen[owner];
	memcpy(out->owner_name, v->name[owner], sizeof(out->owner_name));
}

enum lock_op { OP_ACQUIRE, OP_RELEASE, OP_UPGRADE, OP_DOWNGRADE, OP_INSPECT, OP_HANDOVER };

/* Builds the record to write from the view: every holder in NEWHOLD with
 * its current generation; the recorded owner stays owner if it stays a
 * holder, else the lowest holder whose full generation we know becomes
 * owner.  No holder: FREE.  -EUCLEAN if the only holders left sit in
 * slots we cannot read: recording 8 bits as a full owner generation would
 * make a live owner look stale later. */
static int build_record(struct hb *hb, const struct lock_view *v, uint16_t mode,
			const uint8_t *newhold, struct vmfsd_lock *nr, int32_t *owner_out)
{
	int32_t owner = -1;
	uint32_t s;

	memset(nr, 0, sizeof(*nr));
	nr->lock_gen = v->rec.lock_gen + 1;     /* every change is a new version */
	for (s = 0; s < VMFSD_MAX_HOSTS; s++) {
		uint64_t g;

		if (!bit_get(newhold, s))
			continue;
		g = s == hb->slot ? hb->gen : v->gen[s];
		bit_set(nr->holders, s);
		nr->holder_gen8[s] = (uint8_t)g;
		nr->nholders++;
		if (owner < 0 && (s == hb->slot || v->known[s]))
			owner = (int32_t)s;
	}
	if (bit_get(newhold, v->rec.owner_slot))
		owner = (int32_t)v->rec.owner_slot;
	if (owner < 0 && nr->nholders)
		return -EUCLEAN;
	if (owner >= 0) {
		nr->mode = mode;
		nr->owner_slot = (uint32_t)owner;
		nr->owner_slot_gen = (uint32_t)owner == hb->slot ? hb->gen : v->gen[owner];
	}
	*owner_out = owner;
	return 0;
}

/* Small random back-off between ATS attempts on a contended record, so
 * that the same hosts do not collide again in lock step. */
static void backoff(int attempt)
{
	struct timespec ts = { 0, 0 };
	unsigned us = 50u * (unsigned)(attempt < 10 ? attempt + 1 : 10);

	ts.tv_nsec = (long)(lockmgr_rand_below(us) + us / 2) * 1000l;
	nanosleep(&ts, NULL);
}

/* The receiver of a handover must be the incarnation the caller named:
 * its slot read fresh from the disk, LIVE with exactly generation GEN (a
 * host that remounted since has another generation and never expected
 * this lock).  Fills V's entry for that slot so build_record names it. */
static int handover_target(struct hb *hb, struct bdev *bd, struct lock_view *v, uint32_t to,
			   uint64_t gen)
{
	struct vmfsd_hb h;
	int zero = 0, r;

	if (to >= hb->sb.max_hosts || to == hb->slot)
		return -EINVAL;
	r = hb_slot_read(bd, &hb->sb, to, &h, &zero);
	if (r)
		return r == -EIO || r == -ENOMEM ? r : -ESTALE;
	if (zero || h.state != VMFSD_HB_LIVE || h.generation != gen)
		return -ESTALE;
	v->gen[to] = gen;
	v->known[to] = true;
	memcpy(v->name[to], h.host_name, sizeof(v->name[to]));
	return 0;
}

static int lock_change_to(struct hb *hb, struct bdev *bd, uint64_t off, enum lock_op op,
			  uint16_t mode, uint32_t to, uint64_t to_gen, struct lock_info *out);

static int lock_change(struct hb *hb, struct bdev *bd, uint64_t off, enum lock_op op,
		       uint16_t mode, struct lock_info *out)
{
	return lock_change_to(hb, bd, off, op, mode, 0, 0, out);
}

static int lock_change_to(struct hb *hb, struct bdev *bd, uint64_t off, enum lock_op op,
			  uint16_t mode, uint32_t to, uint64_t to_gen, struct lock_info *out)
{
	uint8_t *cur = bdev_alloc(3 * VMFSD_SECTOR), *nv, *act;
	struct lock_view *v = malloc(sizeof(*v));
	int r = -EAGAIN, attempt;
	/* The first try works from the guess (never for a look without a
	 * write); later ones from what a miscompare returned or a read. */
	bool use_guess = op != OP_INSPECT && !(off % VMFSD_META_BLOCK);
	bool have_actual = false, guessed, mine_free = false;

	if (!cur || !v) {
		r = -ENOMEM;
		goto out;
	}
	nv = cur + VMFSD_SECTOR;
	act = nv + VMFSD_SECTOR;
	for (attempt = 0; attempt < LOCK_ATS_TRIES; attempt++) {
		uint8_t newhold[VMFSD_MAX_HOSTS / 8];
		struct vmfsd_lock nr;
		uint16_t newmode = mode;
		int32_t owner;

		if (op != OP_INSPECT) {
			r = hb_write_check(hb);
			if (r)
				goto out;
		}
		guessed = false;
		if (have_actual) {
			/* The record as the miscompare found it: as good as a
			 * read issued at that moment. */
			memcpy(cur, act, VMFSD_SECTOR);
			have_actual = false;
			r = lock_judge_view(hb, bd, off, cur, v);
		} else if (use_guess) {
			use_guess = false;
			mine_free = guess_get(hb, off, cur);
			r = lock_judge_view(hb, bd, off, cur, v);
			guessed = !r;
			if (r && r != -EIO && r != -ENOMEM)
				r = lock_read_view(hb, bd, off, cur, v);
		} else {
			r = lock_read_view(hb, bd, off, cur, v);
		}
		if (r)
			goto out;
		if (!guessed)
			guess_put(hb, off, cur, false);
		memcpy(newhold, v->valid, sizeof(newhold));
		switch (op) {
		case OP_INSPECT:
			fill_info(v, v->rec.mode, v->rec.lock_gen, v->valid, view_owner(v), out);
			r = 0;
			goto out;
		case OP_ACQUIRE:
			if (v->me) {
				fill_info(v, v->rec.mode, v->rec.lock_gen, v->valid, view_owner(v),
					  out);
				r = v->rec.mode == mode ? 0 : -EALREADY;
				goto nowrite;
			}
			if (v->nvalid && (mode == VMFSD_LOCK_EXCL || v->rec.mode != mode)) {
				fill_info(v, v->rec.mode, v->rec.lock_gen, v->valid, view_owner(v),
					  out);
				r = -EBUSY;
				goto nowrite;
			}
			bit_set(newhold, hb->slot);
			break;
		case OP_RELEASE:
			if (!v->me) {
				fill_info(v, v->rec.mode, v->rec.lock_gen, v->valid, view_owner(v),
					  out);
				r = -ESTALE;
				goto nowrite;
			}
			bit_clear(newhold, hb->slot);
			newmode = v->rec.mode;
			break;
		case OP_UPGRADE:
			if (!v->me || v->rec.mode == VMFSD_LOCK_EXCL) {
				fill_info(v, v->rec.mode, v->rec.lock_gen, v->valid, view_owner(v),
					  out);
				r = v->me ? 0 : -ESTALE;
				goto nowrite;
			}
			if (v->nvalid > 1) {
				uint32_t s;

				/* Name another holder, not ourselves. */
				for (s = 0; s < VMFSD_MAX_HOSTS; s++)
					if (s != hb->slot && bit_get(v->valid, s))
						break;
				fill_info(v, v->rec.mode, v->rec.lock_gen, v->valid, (int32_t)s,
					  out);
				r = -EBUSY;
				goto nowrite;
			}
			newmode = VMFSD_LOCK_EXCL;
			break;
		case OP_DOWNGRADE:
			if (!v->me) {
				r = -ESTALE;
				goto nowrite;
			}
			if (v->rec.mode == mode) {
				fill_info(v, v->rec.mode, v->rec.lock_gen, v->valid, view_owner(v),
					  out);
				r = 0;
				goto nowrite;
			}
			if (v->rec.mode != VMFSD_LOCK_EXCL) {
				r = -EINVAL;
				goto nowrite;
			}
			break;
		case OP_HANDOVER:
			/* Only the sole valid holder of an exclusive lock
			 * may give it away, and only whole: the record goes
			 * from {us} to {receiver} in this one ATS, so no
			 * instant has two owners or none (docs/cluster.md
			 * §4.7). */
			if (!v->me || v->rec.mode != VMFSD_LOCK_EXCL) {
				fill_info(v, v->rec.mode, v->rec.lock_gen, v->valid, view_owner(v),
					  out);
				r = v->me ? -EINVAL : -ESTALE;
				goto nowrite;
			}
			r = handover_target(hb, bd, v, to, to_gen);
			if (r)
				goto out;
			memset(newhold, 0, sizeof(newhold));
			bit_set(newhold, to);
			newmode = VMFSD_LOCK_EXCL;
			break;
		}
		r = build_record(hb, v, newmode, newhold, &nr, &owner);
		if (r)
			goto nowrite;
		vmfsd_lock_encode(&nr, off / VMFSD_META_BLOCK, nv);     /* one sector */
		r = bdev_ats(bd, off, cur, nv, act);
		if (!r) {
			guess_put(hb, off, nv, nr.mode == VMFSD_LOCK_FREE);
			/* Report the record we wrote; names come from the view
			 * (ours from the hb). */
			memcpy(v->name[hb->slot], hb->name, sizeof(v->name[0]));
			v->gen[hb->slot] = hb->gen;
			fill_info(v, nr.mode, nr.lock_gen, nr.holders, owner, out);
			if (out)
				out->unchanged = guessed && mine_free;
			goto out;
		}
		if (r != -ECANCELED) {
			guess_put(hb, off, NULL, false);
			goto out;
		}
		guess_put(hb, off, act, false);
		have_actual = true;
		r = -EAGAIN;
		if (guessed) {
			attempt--;      /* a wrong guess is no contention */
			continue;
		}
		backoff(attempt);
		continue;
nowrite:
		/* An answer that writes nothing must come from the record as
		 * it is now, not from a guess: read it and decide again. */
		if (!guessed)
			goto out;
		guess_put(hb, off, NULL, false);
		attempt--;
	}
out:
	bdev_free(cur);
	free(v);
	return r;
}

int lock_acquire(struct hb *hb, struct bdev *bd, uint64_t off, uint16_t mode,
		 struct lock_info *out)
{
	if (mode != VMFSD_LOCK_EXCL && mode != VMFSD_LOCK_RO && mode != VMFSD_LOCK_MW)
		return -EINVAL;
	return lock_change(hb, bd, off, OP_ACQUIRE, mode, out);
}

int lock_release(struct hb *hb, struct bdev *bd, uint64_t off, struct lock_info *out)
{
	return lock_change(hb, bd, off, OP_RELEASE, 0, out);
}

/* For the batches below: the record that follows the one judged into V,
 * with this host's bit set (ME) or cleared, in MODE, encoded into NV for
 * the record at OFF.  Returns its mode, or build_record's error. */
static int batch_record(struct hb *hb, const struct lock_view *v, uint64_t off, uint16_t mode,
			bool me, uint8_t *nv)
{
	uint8_t newhold[VMFSD_MAX_HOSTS / 8];
	struct vmfsd_lock nr;
	int32_t owner;
	int r;

	memcpy(newhold, v->valid, sizeof(newhold));
	if (me)
		bit_set(newhold, hb->slot);
	else
		bit_clear(newhold, hb->slot);
	r = build_record(hb, v, mode, newhold, &nr, &owner);
	if (r)
		return r;
	vmfsd_lock_encode(&nr, off / VMFSD_META_BLOCK, nv);
	return nr.mode;
}

/* The first try of lock_change_to's OP_RELEASE, for many records at once:
 * from the guess only (a record we do not hold by the guess, or whose
 * guess is wrong, goes through lock_release after). */
void lock_release_many(struct hb *hb, struct bdev *bd, const uint64_t *off, unsigned n)
{
	const size_t S = VMFSD_SECTOR;
	struct lock_view *v = malloc(sizeof(*v));
	uint8_t *cur = malloc(3 * S * (n ? n : 1)), *nv, *act;
	uint64_t *boff = malloc((n ? n : 1) * sizeof(*boff));
	unsigned *idx = malloc((n ? n : 1) * sizeof(*idx));
	int *res = malloc((n ? n : 1) * sizeof(*res));
	bool *isfree = malloc(n ? n : 1), *done = calloc(n ? n : 1, 1);
	unsigned i, m = 0;

	if (!v || !cur || !boff || !idx || !res || !isfree || !done || hb_write_check(hb))
		goto single;
	nv = cur + S * n;
	act = nv + S * n;
	for (i = 0; i < n; i++) {
		int mode;

		if (off[i] % VMFSD_META_BLOCK)
			continue;
		(void)guess_get(hb, off[i], cur + S * m);
		if (lock_judge_view(hb, bd, off[i], cur + S * m, v) || !v->me)
			continue;
		mode = batch_record(hb, v, off[i], v->rec.mode, false, nv + S * m);
		if (mode < 0)
			continue;
		isfree[m] = mode == VMFSD_LOCK_FREE;
		boff[m] = off[i];
		idx[m++] = i;
	}
	if (m && bdev_ats_many(bd, m, boff, cur, nv, act, res))
		m = 0;
	for (i = 0; i < m; i++) {
		if (!res[i]) {
			guess_put(hb, boff[i], nv + S * i, isfree[i]);
			done[idx[i]] = true;
		} else {
			guess_put(hb, boff[i], res[i] == -ECANCELED ? act + S * i : NULL, false);
		}
	}
single:
	for (i = 0; i < n; i++)
		if (!done || !done[i])
			(void)lock_release(hb, bd, off[i], NULL);
	free(v);
	free(cur);
	free(boff);
	free(idx);
	free(res);
	free(isfree);
	free(done);
}

/* Batch rounds of lock_acquire_many before the stragglers go one by one:
 * the first from the guess, the second from what its miscompares returned
 * (a record last changed by an earlier mount, which this process never
 * read), the third for a record that changed again in between. */
#define ACQUIRE_MANY_ROUNDS 3

void lock_acquire_many(struct hb *hb, struct bdev *bd, const uint64_t *off, unsigned n,
		       uint16_t mode, int *res)
{
	const size_t S = VMFSD_SECTOR;
	unsigned N = n ? n : 1;
	struct lock_view *v = malloc(sizeof(*v));
	/* CUR: what each record is believed to hold (the guess, then what a
	 * miscompare returned), by record; the batch's arrays by batch slot */
	uint8_t *cur = malloc(S * N), *exp = malloc(3 * S * N), *nv, *act;
	uint64_t *boff = malloc(N * sizeof(*boff));
	unsigned *idx = malloc(N * sizeof(*idx));
	int *bres = malloc(N * sizeof(*bres));
	bool *pending = malloc(N);
	unsigned i, m, round;

	for (i = 0; i < n; i++)
		res[i] = -EAGAIN;
	if (mode != VMFSD_LOCK_EXCL && mode != VMFSD_LOCK_RO && mode != VMFSD_LOCK_MW) {
		for (i = 0; i < n; i++)
			res[i] = -EINVAL;
		goto out;
	}
	if (!v || !cur || !exp || !boff || !idx || !bres || !pending)
		goto single;
	nv = exp + S * N;
	act = nv + S * N;
	for (i = 0; i < n; i++) {
		pending[i] = !(off[i] % VMFSD_META_BLOCK);
		if (pending[i])
			(void)guess_get(hb, off[i], cur + S * i);
	}
	for (round = 0; round < ACQUIRE_MANY_ROUNDS; round++) {
		if (hb_write_check(hb))
			goto single;
		for (i = 0, m = 0; i < n; i++) {
			if (!pending[i])
				continue;
			/* Only a free record (or one whose holders are all
			 * stale) is written from here: anything else needs
			 * lock_acquire's answer, from a fresh read. */
			if (lock_judge_view(hb, bd, off[i], cur + S * i, v) || v->me || v->nvalid ||
			    batch_record(hb, v, off[i], mode, true, nv + S * m) < 0) {
				pending[i] = false;
				continue;
			}
			memcpy(exp + S * m, cur + S * i, S);
			boff[m] = off[i];
			idx[m++] = i;
		}
		/* the record is the front of the inode's block, which
		 * nobody writes while it has no valid holder */
		if (!m || bdev_ats_many_block(bd, m, boff, exp, nv, act, bres))
			break;
		for (i = 0; i < m; i++) {
			unsigned k = idx[i];

			if (!bres[i]) {
				guess_put(hb, boff[i], nv + S * i, false);
				res[k] = 0;
				pending[k] = false;
			} else if (bres[i] == -ECANCELED) {
				/* the record as the miscompare found it: as
				 * good as a read issued at that moment */
				guess_put(hb, boff[i], act + S * i, false);
				memcpy(cur + S * k, act + S * i, S);
			} else {
				guess_put(hb, boff[i], NULL, false);
				pending[k] = false;
			}
		}
	}
single:
	for (i = 0; i < n; i++)
		if (res[i] == -EAGAIN)
			res[i] = lock_acquire(hb, bd, off[i], mode, NULL);
out:
	free(v);
	free(cur);
	free(exp);
	free(boff);
	free(idx);
	free(bres);
	free(pending);
}

int lock_upgrade(struct hb *hb, struct bdev *bd, uint64_t off, struct lock_info *out)
{
	return lock_change(hb, bd, off, OP_UPGRADE, VMFSD_LOCK_EXCL, out);
}

int lock_downgrade(struct hb *hb, struct bdev *bd, uint64_t off, uint16_t mode,
		   struct lock_info *out)
{
	if (mode != VMFSD_LOCK_RO && mode != VMFSD_LOCK_MW)
		return -EINVAL;
	return lock_change(hb, bd, off, OP_DOWNGRADE, mode, out);
}

int lock_handover(struct hb *hb, struct bdev *bd, uint64_t off, uint32_t to_slot,
		  uint64_t to_gen, struct lock_info *out)
{
	return lock_change_to(hb, bd, off, OP_HANDOVER, VMFSD_LOCK_EXCL, to_slot, to_gen, out);
}

int lock_inspect(struct hb *hb, struct bdev *bd, uint64_t off, struct lock_info *out)
{
	return lock_change(hb, bd, off, OP_INSPECT, 0, out);
}

int lock_holder_describe(struct hb *hb, struct bdev *bd, uint64_t off, char *buf, size_t len)
{
	uint8_t *cur = bdev_alloc(VMFSD_SECTOR);
	struct lock_view *v = malloc(sizeof(*v));
	size_t used = 0;
	uint32_t s;
	int32_t owner;
	int r, n;

	if (!cur || !v) {
		r = -ENOMEM;
		goto out;
	}
	r = lock_read_view(hb, bd, off, cur, v);
	if (r)
		goto out;
	owner = view_owner(v);
	if (v->rec.mode == VMFSD_LOCK_FREE || owner < 0) {
		n = snprintf(buf, len, "free");
		r = n < 0 || (size_t)n >= len ? -ERANGE : 0;
		goto out;
	}
	/* The owner first, then the other holders in slot order. */
	n = snprintf(buf, len, "%s by %s (slot %d)", lock_mode_name(v->rec.mode), v->name[owner],
		     owner);
	if (n < 0 || (size_t)n >= len) {
		r = -ERANGE;
		goto out;
	}
	used = (size_t)n;
	for (s = 0; s < VMFSD_MAX_HOSTS; s++) {
		if (!bit_get(v->valid, s) || (int32_t)s == owner)
			continue;
		n = snprintf(buf + used, len - used, ", %s (slot %u)", v->name[s], s);
		if (n < 0 || (size_t)n >= len - used) {
			r = -ERANGE;
			goto out;
		}
		used += (size_t)n;
	}
out:
	bdev_free(cur);
	free(v);
	return r;
}
