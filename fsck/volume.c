// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Pass 1: the volume as a whole.  Which superblock to trust (primary,
 * backup, whether they agree), whether the volume is in use (refusing any
 * repair while it is), the per-host journals (replayed before anything else
 * is looked at when repairing, exactly as a mount would), and the heartbeat
 * slots.
 *
 * In use means either of: an OFD lock held on the heartbeat region
 * (bdev_range_locked: an ATS in flight on this kernel, an mkfs, another
 * fsck repairing), or a slot marked live whose first sector changes while
 * we watch it (a host renewing its heartbeat, docs/cluster.md §2-3).  A slot marked live
 * that does not change is a host that is gone: its journal is replayed and
 * the slot freed, as a surviving host would.  For a repair we take the OFD
 * lock ourselves first, so no mount can start on this kernel while we
 * write, and keep it to the end.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fsck_internal.h"
#include "journal/journal.h"
#include "lockmgr/lockmgr.h"

static const char *err_name(int r)
{
	switch (r) {
	case -EBADMSG:
		return "checksum mismatch";
	case -EUCLEAN:
		return "bad magic or a field out of range";
	case -EOPNOTSUPP:
		return "unknown incompatible feature";
	default:
		return "unreadable";
	}
}

/* Name of the first field in which two superblocks differ, or NULL. */
static const char *sb_diff(const struct vmfsd_sb *a, const struct vmfsd_sb *b)
{
#define F(x) if (a->x != b->x) return #x
	F(version); F(sb_flags);
	if (memcmp(a->uuid, b->uuid, sizeof(a->uuid)))
		return "uuid";
	if (strncmp(a->label, b->label, sizeof(a->label)))
		return "label";
	F(feat_compat); F(feat_ro_compat); F(feat_incompat); F(device_size);
	F(mkfs_time); F(block_size); F(max_hosts); F(hb_interval_ms);
	F(hb_timeout_ms); F(rc_bits); F(hb_off); F(journal_off); F(journal_size);
	F(ibm_off); F(ibm_count); F(sbm_off); F(sbm_count); F(dbm_off);
	F(dbm_count); F(itable_off); F(inode_count); F(sub_off); F(sub_count);
	F(data_off); F(block_count); F(root_ino); F(backup_blocknr);
#undef F
	return NULL;
}

/* A primary whose magic is a few bits off our own is ours and damaged; any
 * other value means the start of the device now belongs to something else
 * (another mkfs), which fsck must not overwrite from an old backup. */
static bool magic_near(uint64_t m)
{
	return __builtin_popcountll(m ^ VMFSD_SB_MAGIC) <= 4;
}

static int check_supers(struct fsck *c)
{
	uint8_t *blk = c->scratch;
	struct vmfsd_sb p, b;
	uint64_t bnr;
	const char *f;
	bool pmagic;
	int rp, rb;

	if (c->dev_size < 2 * VMFSD_META_BLOCK)
		return -EMEDIUMTYPE;
	rp = bdev_pread(c->bd, blk, VMFSD_META_BLOCK, 0);
	if (rp)
		return rp;
	pmagic = magic_near(vmfsd_get_le64(blk));
	rp = pmagic ? vmfsd_sb_decode(blk, 0, &p) : -EUCLEAN;
	if (rp == -EOPNOTSUPP)
		return -EPROTONOSUPPORT;
	if (rp == 0) {
		c->sb = p;
		if (p.device_size > c->dev_size)
			return -ERANGE;
		rb = bdev_pread(c->bd, blk, VMFSD_META_BLOCK, p.backup_blocknr * VMFSD_META_BLOCK);
		if (rb && rb != -EBADMSG && rb != -EUCLEAN)
			return rb;
		rb = vmfsd_sb_decode(blk, p.backup_blocknr, &b);
		if (rb) {
			fsck_report(c, P_SB_BACKUP_BAD, WHERE(W_BLOCK(p.backup_blocknr)),
				    "rewrite it from the primary",
				    "backup superblock (block %" PRIu64 ") is damaged: %s",
				    p.backup_blocknr, err_name(rb));
			c->sb_backup_fix = true;
		} else if ((f = sb_diff(&p, &b))) {
			fsck_report(c, P_SB_BACKUP_DIFFERS, WHERE(W_BLOCK(p.backup_blocknr)),
				    "rewrite it from the primary",
				    "backup superblock (block %" PRIu64 ") differs from the primary "
				    "in field '%s'", p.backup_blocknr, f);
			c->sb_backup_fix = true;
		}
		return 0;
	}
	/* The primary is unusable: the backup sits in the last 4 KiB block. */
	bnr = c->dev_size / VMFSD_META_BLOCK - 1;
	rb = bdev_pread(c->bd, blk, VMFSD_META_BLOCK, bnr * VMFSD_META_BLOCK);
	if (rb)
		return rb;
	if (vmfsd_get_le64(blk) != VMFSD_SB_MAGIC)
		rb = -EUCLEAN;
	else
		rb = vmfsd_sb_decode(blk, bnr, &b);
	if (rb == -EOPNOTSUPP)
		return -EPROTONOSUPPORT;
	if (rb || b.backup_blocknr != bnr)
		return pmagic ? -EUCLEAN : -EMEDIUMTYPE;
	if (!pmagic)
		return -EMEDIUMTYPE;
	c->sb = b;
	c->res->sb_from_backup = true;
	if (b.device_size > c->dev_size)
		return -ERANGE;
	fsck_report(c, P_SB_PRIMARY_BAD, WHERE(W_BLOCK(0)), "rewrite it from the backup",
		    "primary superblock is damaged (%s); the backup (block %" PRIu64 ") is sound",
		    err_name(rp), bnr);
	c->sb_primary_fix = true;
	return 0;
}

/* Is the heartbeat region locked by another open of the device (an ATS
 * in flight, an mkfs, another fsck repairing)? */
static int ofd_held(struct fsck *c)
{
	return bdev_range_locked(c->bd, c->sb.hb_off,
				 (uint64_t)c->sb.max_hosts * VMFSD_META_BLOCK);
}

static void sleep_ms(uint32_t ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static void set_live(struct fsck *c, uint32_t s)
{
	struct fsck_result *res = c->res;

	c->slot_live[s] = true;
	if (res->live_slot < 0) {
		res->live_slot = (int32_t)s;
		snprintf(res->live_host, sizeof(res->live_host), "%s", c->hb[s].host_name);
		res->live_pid = c->hb[s].pid;
	}
	res->live = true;
}

/* A host is at work on the volume if a slot's first sector changes while we
 * watch (renewal, claim, release, replay) or if an OFD lock on the region is
 * held (an ATS in flight, or a mount of a version that claims the region). */
static int watch_changes(struct fsck *c, const uint8_t *before, uint8_t *after)
{
	size_t len = (size_t)c->sb.max_hosts * VMFSD_META_BLOCK;
	uint64_t base = c->sb.hb_off / VMFSD_META_BLOCK;
	uint32_t s;
	int r = bdev_pread(c->bd, after, len, c->sb.hb_off);

	for (s = 0; !r && s < c->sb.max_hosts; s++) {
		size_t o = (size_t)s * VMFSD_META_BLOCK;
		struct vmfsd_hb h;

		if (!memcmp(before + o, after + o, VMFSD_SECTOR))
			continue;
		if (vmfsd_hb_decode(after + o, base + s, &h) == 0) {
			c->hb[s] = h;
			c->hb_ok[s] = true;
		}
		set_live(c, s);
	}
	return r;
}

/* Reads and decodes the slots; decides who is live.  HB gets the region.
 * For a repair, takes the region's OFD lock afterwards (never before the
 * watch: a host's renewal ATS waits on it, and a host kept from renewing
 * while we watch would look dead) and looks once more under it. */
static int check_live(struct fsck *c, uint8_t *hb)
{
	size_t len = (size_t)c->sb.max_hosts * VMFSD_META_BLOCK;
	uint64_t base = c->sb.hb_off / VMFSD_META_BLOCK;
	uint8_t *again = NULL;
	struct hb_timing t;
	uint32_t s, nwatch = 0, wait;
	int held, r;

	r = bdev_pread(c->bd, hb, len, c->sb.hb_off);
	if (r)
		return r;
	for (s = 0; s < c->sb.max_hosts; s++) {
		const uint8_t *blk = hb + (size_t)s * VMFSD_META_BLOCK;

		memset(&c->hb[s], 0, sizeof(c->hb[s]));
		if (vmfsd_all_zero(blk, VMFSD_META_BLOCK)) {
			c->hb_ok[s] = true;     /* never claimed */
			continue;
		}
		c->hb_ok[s] = vmfsd_hb_decode(blk, base + s, &c->hb[s]) == 0;
		if (c->hb_ok[s] && c->hb[s].state != VMFSD_HB_FREE)
			nwatch++;
	}
	held = ofd_held(c);
	if (held < 0)
		return held;
	if (held) {
		for (s = 0; s < c->sb.max_hosts; s++)
			if (c->hb_ok[s] && c->hb[s].state != VMFSD_HB_FREE)
				set_live(c, s);
		c->res->live = true;
		return 0;
	}
	again = bdev_alloc(len);
	if (!again)
		return -ENOMEM;
	if (nwatch) {
		/* As long as hb_join watches a slot before calling it stale
		 * (docs/cluster.md §4.1): a mounted host beats within one
		 * interval plus one I/O timeout. */
		wait = c->o->live_wait_ms;
		if (!wait)
			wait = hb_timing_compute(&c->sb, &t) == 0 ? t.busy_watch_ms :
			       2 * c->sb.hb_interval_ms + 1000;
		fsck_progress(c, 1, "watching heartbeats", 0, wait);
		sleep_ms(wait);
		r = watch_changes(c, hb, again);
		if (r || c->res->live)
			goto out;
		memcpy(hb, again, len);
	}
	if (c->repair) {
		/* Claim the volume: an ATS on any slot (a host joining) now
		 * waits for us.  A claim that got in before the lock shows as
		 * a change. */
		r = bdev_trylock_range(c->bd, c->sb.hb_off, len, 1);
		if (r == -EAGAIN) {
			c->res->live = true;
			r = 0;
			goto out;
		}
		if (r)
			goto out;
		c->locked = true;
		r = watch_changes(c, hb, again);
	}
out:
	bdev_free(again);
	return r;
}

static int check_journals(struct fsck *c)
{
	uint8_t *blk = c->scratch;
	struct fsck_result *res = c->res;
	uint32_t s, nblocks = (uint32_t)(c->sb.journal_size / VMFSD_META_BLOCK);
	int r;

	struct vmfsd_journal_id id;

	vmfsd_journal_id_of(&c->sb, &id);
	for (s = 0; s < c->sb.max_hosts; s++) {
		uint64_t area = journal_area_off(&c->sb, s);
		struct journal_replay_info ji;
		struct vmfsd_jhdr jh;

		fsck_progress(c, 1, "journals", s, c->sb.max_hosts);
		r = bdev_pread(c->bd, blk, VMFSD_META_BLOCK, area);
		if (r)
			return r;
		r = vmfsd_jhdr_decode(blk, area / VMFSD_META_BLOCK, &jh);
		if (!r && !vmfsd_all_zero(blk, VMFSD_META_BLOCK) &&
		    (jh.slot != s || (jh.nblocks && jh.nblocks != nblocks)))
			r = -EUCLEAN;
		if (r) {
			fsck_report(c, P_JOURNAL_BAD, WHERE(.has = FSCK_W_SLOT | FSCK_W_BLOCK,
							    .slot = s,
							    .blocknr = area / VMFSD_META_BLOCK),
				    "discard the journal (zero its area)",
				    "journal header of slot %u is damaged (%s): its transactions "
				    "cannot be replayed", s, err_name(r));
			r = ck_wq_zero(c, area, c->sb.journal_size);
			if (r)
				return r;
			continue;
		}
		if (!vmfsd_all_zero(blk, VMFSD_META_BLOCK) && !vmfsd_journal_id_eq(&jh.id, &id)) {
			/* A sound header of an earlier format of this device
			 * (mkfs zeroes headers, so only damage or a foreign
			 * writer leaves one): replay ignores it and all its
			 * log; a fresh empty header (no orphans) is the fix. */
			fsck_report(c, P_JOURNAL_FOREIGN, WHERE(.has = FSCK_W_SLOT | FSCK_W_BLOCK,
								.slot = s,
								.blocknr = area / VMFSD_META_BLOCK),
				    "rewrite it as an empty journal",
				    "journal header of slot %u belongs to another format of this "
				    "device (format generation %" PRIu64 ", the volume's is %" PRIu64
				    "): nothing in it is replayed", s, jh.id.format_gen, id.format_gen);
			jh = (struct vmfsd_jhdr){ .slot = s, .nblocks = nblocks, .tail_seq = 1,
						  .tail_blk = 1, .clean = 1, .id = id };
			vmfsd_jhdr_encode(&jh, area / VMFSD_META_BLOCK, blk);
			r = ck_wq_put(c, area, blk, WQ_HB);
			if (r)
				return r;
			continue;
		}
		/* Only the first sector is the header; the rest of the block is
		 * the host's orphan list (vmfsd_orphans_decode).  A damaged list
		 * is dropped: the inodes it named are found unlinked below.  A
		 * repair frees those inodes, so it empties the list too. */
		{
			uint64_t orph[VMFSD_ORPHAN_MAX];
			uint32_t norph = 0;
			int ro = vmfsd_orphans_decode(blk, area / VMFSD_META_BLOCK, orph, &norph);

			if ((ro || (norph && c->repair && !res->live)) &&
			    (jh.clean == 1 || !c->repair || res->live)) {
				if (ro)
					fsck_report(c, P_JOURNAL_TAIL,
						    WHERE(.has = FSCK_W_SLOT | FSCK_W_BLOCK, .slot = s,
							  .blocknr = area / VMFSD_META_BLOCK),
						    "empty the orphan list",
						    "journal header of slot %u: its orphan list is "
						    "damaged (%s)", s, err_name(ro));
				vmfsd_jhdr_encode(&jh, area / VMFSD_META_BLOCK, blk);
				r = ck_wq_put(c, area, blk, WQ_HB);
				if (r)
					return r;
			}
		}
		if (jh.clean == 1)
			continue;
		res->journals_dirty++;
		if (res->live) {
			/* The host writing it is at work: nothing to say. */
			continue;
		}
		if (!c->repair) {
			fsck_report(c, P_JOURNAL_DIRTY, WHERE(.has = FSCK_W_SLOT, .slot = s),
				    "replay it (fsck.vmfsd -y or -p, or mount the volume)",
				    "journal of slot %u needs replay", s);
			continue;
		}
		r = journal_replay(c->bd, &c->sb, s, &ji);
		if (r == -EUCLEAN || r == -EBADMSG) {
			fsck_report(c, P_JOURNAL_BAD, WHERE(.has = FSCK_W_SLOT, .slot = s),
				    "discard the journal (zero its area)",
				    "journal of slot %u cannot be replayed (%s)", s, err_name(r));
			r = ck_wq_zero(c, area, c->sb.journal_size);
			if (r)
				return r;
			continue;
		}
		if (r)
			return r;
		res->journals_replayed++;
		res->journal_transactions += ji.transactions;
		{
			char fix[96];

			snprintf(fix, sizeof(fix), "replayed %u transaction(s), %u block(s)",
				 ji.transactions, ji.blocks);
			fsck_report_done(c, P_JOURNAL_DIRTY, WHERE(.has = FSCK_W_SLOT, .slot = s),
					 fix, "journal of slot %u needed replay", s);
		}
	}
	if (res->journals_dirty && !c->repair && !res->live)
		fsck_report(c, P_JOURNAL_NOTE, NULL, NULL,
			    "%u journal(s) not replayed (read-only check): what follows is the "
			    "volume without their transactions and may include problems the "
			    "replay would repair", res->journals_dirty);
	return 0;
}

static int put_slot(struct fsck *c, uint32_t s, const struct vmfsd_hb *hb)
{
	uint64_t off = vmfsd_hb_slot_off(&c->sb, s);

	if (hb)
		vmfsd_hb_encode(hb, off / VMFSD_META_BLOCK, c->scratch);
	else
		memset(c->scratch, 0, VMFSD_META_BLOCK);
	return ck_wq_put(c, off, c->scratch, WQ_HB);
}

static int check_slots(struct fsck *c, const uint8_t *region)
{
	uint64_t base = c->sb.hb_off / VMFSD_META_BLOCK;
	uint32_t s;
	int r = 0;

	for (s = 0; s < c->sb.max_hosts && !r; s++) {
		const uint8_t *blk = region + (size_t)s * VMFSD_META_BLOCK;
		struct vmfsd_hb *h = &c->hb[s];

		if (c->slot_live[s])
			continue;
		if (!c->hb_ok[s]) {
			fsck_report(c, P_HB_BAD, WHERE(.has = FSCK_W_SLOT | FSCK_W_BLOCK, .slot = s,
						       .blocknr = base + s),
				    "clear the slot (never claimed)",
				    "heartbeat slot %u is damaged (%s)", s,
				    err_name(vmfsd_hb_decode(blk, base + s, h)));
			memset(h, 0, sizeof(*h));
			r = put_slot(c, s, NULL);
			continue;
		}
		if (vmfsd_all_zero(blk, VMFSD_META_BLOCK))
			continue;
		if (h->slot != s || h->journal_off != journal_area_off(&c->sb, s) ||
		    !vmfsd_all_zero(blk + VMFSD_SECTOR, VMFSD_META_BLOCK - VMFSD_SECTOR)) {
			fsck_report(c, P_HB_FIELDS, WHERE(.has = FSCK_W_SLOT | FSCK_W_BLOCK, .slot = s,
							  .blocknr = base + s),
				    "rewrite the slot with the right values", "heartbeat slot %u: %s",
				    s, h->slot != s ? "it names another slot" :
				    h->journal_off != journal_area_off(&c->sb, s) ?
				    "it points at another journal area" :
				    "bytes past its first sector are not zero");
			h->slot = s;
			h->journal_off = journal_area_off(&c->sb, s);
			r = put_slot(c, s, h);
			if (r)
				break;
		}
		if (h->state == VMFSD_HB_FREE)
			continue;
		fsck_report(c, P_HB_STALE, WHERE(.has = FSCK_W_SLOT, .slot = s),
			    "mark the slot free (generation + 1)",
			    "heartbeat slot %u is marked %s by host '%s' (pid %u) but is not "
			    "renewed: that host is gone", s,
			    h->state == VMFSD_HB_LIVE ? "live" : "replaying", h->host_name, h->pid);
		h->state = VMFSD_HB_FREE;
		h->generation++;
		r = put_slot(c, s, h);
	}
	return r;
}

/* Slot S as lock_holder_valid should see it: as read when a host is at
 * work in it, else FREE, which is what recovering that host leaves (its
 * journal replayed, its slot freed with a new generation), so its locks
 * are judged as any host would judge them after the recovery. */
static void slot_as_recovered(const struct fsck *c, uint32_t s, struct vmfsd_hb *rec)
{
	*rec = c->hb[s];
	if (!c->slot_live[s])
		rec->state = VMFSD_HB_FREE;
}

static bool holder_valid(const struct fsck *c, uint32_t s, uint64_t gen, bool full)
{
	struct vmfsd_hb rec;

	slot_as_recovered(c, s, &rec);
	return lock_holder_valid(&rec, 0, 0, gen, full);
}

int fsck_lock_judge(const struct fsck *c, const struct vmfsd_lock *lk)
{
	uint32_t s;
	int verdict = LOCK_VALID;

	if (lk->mode == VMFSD_LOCK_FREE)
		return LOCK_VALID;
	if (lk->owner_slot >= c->sb.max_hosts)
		return LOCK_MALFORMED;
	/* The lock manager's rule (lock_holder_valid): all 64 bits of the
	 * generation for the owner, the low 8 for the other holders. */
	if (!holder_valid(c, lk->owner_slot, lk->owner_slot_gen, true))
		verdict = LOCK_STALE;
	for (s = 0; s < VMFSD_MAX_HOSTS; s++) {
		if (!(lk->holders[s / 8] & (1u << (s % 8))))
			continue;
		if (s >= c->sb.max_hosts)
			return LOCK_MALFORMED;
		if (s == lk->owner_slot)
			continue;
		if (!holder_valid(c, s, lk->holder_gen8[s], false))
			verdict = LOCK_STALE;
	}
	return verdict;
}

int fsck_volume(struct fsck *c)
{
	struct fsck_result *res = c->res;
	uint8_t *region;
	int r;

	fsck_progress(c, 1, "superblock", 0, 1);
	r = check_supers(c);
	if (r)
		return r;
	res->sb = c->sb;
	if (c->repair && (c->sb.feat_ro_compat & ~VMFSD_FEAT_RO_COMPAT_SUPP))
		return -EPROTONOSUPPORT;   /* we would not understand what we write */
	region = bdev_alloc((size_t)c->sb.max_hosts * VMFSD_META_BLOCK);
	if (!region)
		return -ENOMEM;
	r = check_live(c, region);
	if (r)
		goto out;
	if (res->live) {
		if (c->repair) {
			r = -EBUSY;
			goto out;
		}
		if (res->live_slot >= 0)
			fsck_report(c, P_LIVE_SNAPSHOT, WHERE(.has = FSCK_W_SLOT,
							       .slot = (uint32_t)res->live_slot),
				    NULL, "the volume is in use by host '%s' (slot %d, pid %u): "
				    "this is a snapshot of a live volume and may show changes in "
				    "flight", res->live_host, res->live_slot, res->live_pid);
		else
			fsck_report(c, P_LIVE_SNAPSHOT, NULL, NULL,
				    "the volume is in use (mounted on this machine): this is a "
				    "snapshot of a live volume and may show changes in flight");
	}
	r = check_journals(c);
	if (!r)
		r = check_slots(c, region);
	/* The superblock repairs are known now; queue them (written last). */
	if (!r && c->sb_backup_fix) {
		vmfsd_sb_encode(&c->sb, c->sb.backup_blocknr, c->scratch);
		r = ck_wq_put(c, c->sb.backup_blocknr * VMFSD_META_BLOCK, c->scratch, WQ_SB_BACKUP);
	}
	if (!r && c->sb_primary_fix) {
		vmfsd_sb_encode(&c->sb, 0, c->scratch);
		r = ck_wq_put(c, 0, c->scratch, WQ_SB_PRIMARY);
	}
	fsck_progress(c, 1, "journals", c->sb.max_hosts, c->sb.max_hosts);
out:
	bdev_free(region);
	return r;
}
