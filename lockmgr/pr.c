// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Fencing by the target: SPC-3 persistent reservations on iSCSI LUNs
 * (docs/cluster.md §8).  Each incarnation of a host, named by its heartbeat
 * slot and the generation it claims, registers the key
 * hb_pr_key(slot, generation) before its first write; the volume is
 * reserved Write Exclusive - Registrants Only by whoever joins first.  A
 * survivor that claims a dead slot PREEMPTs that incarnation's key before
 * it replays the journal, so the target itself refuses (RESERVATION
 * CONFLICT) any write the presumed-dead host still sends, whatever its
 * clock or its fence thread did.  Self-fencing (hb.c) stays the primary
 * mechanism; this closes the holes of its assumptions 1 and 3 (an I/O that
 * lands late, a host frozen past its own fence deadline).
 *
 * Only on volumes made with mkfs.vmfsd --pr-fence (feature
 * VMFSD_FEAT_RO_PR_FENCE): there every host must register or not join.
 * Reserving, preempting and unregistering are best effort: their failure
 * leaves the self-fencing argument, which never depended on them.  The
 * outcome is counted in struct hb (pr_registered, pr_preempts).
 */
#include <errno.h>

#include "bdev/bdev.h"
#include "lockmgr_internal.h"

/* "VF", 16 bits of slot, 32 bits of generation: unique per incarnation for
 * the volume's life (a slot's generation only grows, docs/cluster.md §1),
 * never zero (zero means "no key" in SPC-3). */
uint64_t hb_pr_key(uint32_t slot, uint64_t gen)
{
	return 0x5646000000000000ull | ((uint64_t)(slot & 0xffff) << 32) | (gen & 0xffffffffull);
}

static bool pr_volume(const struct hb *hb)
{
	return hb->sb.feat_ro_compat & VMFSD_FEAT_RO_PR_FENCE;
}

int hb_pr_register(struct hb *hb, uint32_t slot, uint64_t gen)
{
	int r;

	if (!pr_volume(hb))
		return 0;
	/* REGISTER AND IGNORE EXISTING KEY: replaces whatever key this I_T
	 * nexus had (a claim attempt on another slot that lost its ATS). */
	r = bdev_pr_register(hb->bd, hb_pr_key(slot, gen));
	atomic_store(&hb->pr_registered, r == 0);
	/* The volume promises fencing by the target: a host that cannot
	 * register must not join (-ENOLCK: no persistent reservations). */
	return r == -EOPNOTSUPP ? -ENOLCK : r;
}

void hb_pr_joined(struct hb *hb)
{
	if (!atomic_load(&hb->pr_registered))
		return;
	/* The first host reserves; later ones get RESERVATION CONFLICT
	 * (-EACCES), which is fine: registrants may write either way. */
	(void)bdev_pr_reserve(hb->bd, hb_pr_key(hb->slot, hb->gen));
}

int hb_pr_preempt(struct hb *hb, uint32_t slot, uint64_t gen)
{
	uint64_t mine = hb_pr_key(hb->slot, hb->gen);
	int r;

	if (!atomic_load(&hb->pr_registered))
		return -EOPNOTSUPP;
	r = bdev_pr_preempt(hb->bd, mine, hb_pr_key(slot, gen));
	if (!r)
		atomic_fetch_add(&hb->pr_preempts, 1);
	/* If nobody held the reservation (its holder left cleanly), the
	 * preempted key is gone but nothing refuses it yet: reserve. */
	(void)bdev_pr_reserve(hb->bd, mine);
	return r;
}

void hb_pr_leave(struct hb *hb)
{
	if (atomic_load(&hb->pr_registered))
		(void)bdev_pr_unregister(hb->bd, hb_pr_key(hb->slot, hb->gen));
}
