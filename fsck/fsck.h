/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * fsck: the vmfsd volume checker, as a library.
 *
 * fsck_check() reads every piece of live metadata of a volume through the
 * shared verifiers of format/ (superblock and backup, heartbeat slots, the
 * journal headers, resource clusters, allocated inodes and their lock
 * records, block maps, directory blocks), rebuilds the truth (which items
 * are referenced, which names reach which inode) and compares it with what
 * the disk says.  It never prints: every finding is a struct fsck_problem
 * kept in the result and handed to the caller's callback at the end, with
 * what was done about it.  fsck.vmfsd (fsck/main.c) is one caller; the
 * crash-test harness is another.
 *
 * Repairs are computed in memory first and written only at the end, in an
 * order that keeps every intermediate state no worse than the one before
 * (blocks that are pointed to, then the inodes and directories that point
 * to them, then the bitmaps, the heartbeat slots, the backup superblock and
 * the primary superblock last).  In preen mode they are written only if
 * every problem found is one that preening may fix (e2fsck's rule):
 * otherwise nothing is written and the caller is told to run a full repair.
 */
#ifndef VMFSD_FSCK_H
#define VMFSD_FSCK_H

#include <stdbool.h>
#include <stdint.h>

#include "bdev/bdev.h"
#include "format/format.h"

enum fsck_mode {
	FSCK_READONLY = 0,      /* -n: never write (open the device read-only) */
	FSCK_REPAIR,            /* -y: repair everything that can be repaired */
	FSCK_PREEN,             /* -p: repair only what is safe without asking */
};

enum fsck_action {
	FSCK_ACT_NONE = 0,      /* informational: nothing to do */
	FSCK_ACT_FIXED,         /* the repair was written */
	FSCK_ACT_LEFT,          /* found and not repaired (-n, preen, impossible) */
};

/* Where a problem is.  ino and dir are 0 when they do not apply; the
 * others are meaningful only when their FSCK_W_* bit is set in has. */
enum {
	FSCK_W_BLOCK = 1u << 0,
	FSCK_W_SLOT = 1u << 1,
	FSCK_W_LBLK = 1u << 2,
};
struct fsck_where {
	uint64_t ino;           /* inode concerned */
	uint64_t dir;           /* directory holding the entry */
	uint64_t blocknr;       /* meta block number (superblock, slot, cluster,
				 * inode) or pool item (sub-block, file block) */
	uint64_t lblk;          /* logical unit in the file */
	uint32_t slot;          /* heartbeat / journal slot */
	unsigned has;
	char name[VMFSD_NAME_MAX + 1]; /* directory entry name, "" if none */
};

struct fsck_problem {
	const char *code;       /* stable identifier, e.g. "inode.nlink" */
	const char *structure;  /* "superblock", "inode", "directory entry", ... */
	bool error;             /* false: a note (counts as nothing) */
	bool preen_ok;          /* preen (-p) may repair it */
	enum fsck_action action;
	struct fsck_where where;
	char msg[320];          /* what is wrong, one line, no trailing period */
	char fix[160];          /* what the repair does ("" if nothing can be done) */
};

typedef void (*fsck_problem_fn)(const struct fsck_problem *p, void *arg);
/* PASS counts from 1 to NPASSES; DONE out of TOTAL units of that pass. */
typedef void (*fsck_progress_fn)(int pass, int npasses, const char *what, uint64_t done,
				 uint64_t total, void *arg);

struct fsck_opts {
	enum fsck_mode mode;
	fsck_problem_fn problem;        /* may be NULL; called at the end */
	void *problem_arg;
	fsck_progress_fn progress;      /* may be NULL */
	void *progress_arg;
	/* How long to watch heartbeat slots marked live for a renewal before
	 * calling their host gone; 0 = twice the volume's renewal interval
	 * (docs/cluster.md §2: liveness = a counter seen changing on our clock). */
	uint32_t live_wait_ms;
};

/* Problems kept in the result (the counts go on past it). */
#define FSCK_MAX_PROBLEMS 10000u

struct fsck_result {
	uint64_t found;         /* errors found (notes excluded) */
	uint64_t fixed;         /* ... repaired */
	uint64_t left;          /* ... left uncorrected */

	struct vmfsd_sb sb;     /* the superblock checked against */
	bool sb_from_backup;    /* primary unusable: the backup was used */

	/* The volume is in use (mounted here, or a heartbeat is renewing). */
	bool live;
	int32_t live_slot;      /* -1 if not known */
	char live_host[VMFSD_HOSTNAME_MAX + 1];
	uint32_t live_pid;

	uint32_t journals_dirty;        /* slots whose journal needed replay */
	uint32_t journals_replayed;
	uint32_t journal_transactions;  /* transactions applied by the replays */

	bool preen_refused;     /* -p found something only -y may repair */

	uint64_t lost_found_ino;        /* 0 if none was needed */
	bool lost_found_created;
	uint32_t orphans_reconnected;   /* moved into lost+found */
	uint32_t orphans_freed;         /* unlinked (nlink 0) inodes released */

	/* What the volume holds (after the repairs). */
	uint64_t inodes_used, dirs, files, symlinks, others;
	uint64_t sub_used, blocks_used;

	struct fsck_problem *problems;  /* n_problems entries, errors and notes */
	uint32_t n_problems;
	uint64_t problems_dropped;      /* beyond FSCK_MAX_PROBLEMS */
};

/* Checks (and with FSCK_REPAIR / FSCK_PREEN repairs) the volume on BD, which
 * must be open read-write for a repair.  Returns 0 when the check ran to the
 * end (look at res->found / fixed / left), or a negative errno when it could
 * not: -EMEDIUMTYPE not a vmfsd volume, -EUCLEAN both superblocks damaged,
 * -EPROTONOSUPPORT unknown incompatible features, -ERANGE device smaller
 * than the volume, -EBUSY repair refused because the volume is in use
 * (res->live_* name the host), I/O errors, -ENOMEM.  RES must be released
 * with fsck_result_free() in every case. */
int fsck_check(struct bdev *bd, const struct fsck_opts *o, struct fsck_result *res);
void fsck_result_free(struct fsck_result *res);

/* fsck(8) exit status for a result: 0 clean, 1 errors corrected, 4 errors
 * left uncorrected, 8 operational error (RC < 0). */
int fsck_exit_status(int rc, const struct fsck_result *res);

#endif
