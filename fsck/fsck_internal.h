/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Private parts of the checker: the check context shared by the passes,
 * the problem catalogue, the write queue that holds every repair until the
 * end, and the per-inode and per-entry records the passes build.
 *
 * Passes (fsck_check() in check.c runs them in this order):
 *   1 volume.c     superblock and backup, live hosts, journals, heartbeat
 *   2 inodes.c     resource clusters (the on-disk bitmaps, their locks)
 *   3 inodes.c     allocated inodes, their lock records and block maps
 *                  (marks every referenced sub-block and file block)
 *   4 names.c      directory blocks and entries
 *   5 names.c      the namespace: reachability, cycles, parents, link
 *                  counts, orphans, lost+found
 *   6 names.c      the bitmaps against the truth
 * Every repair is "logical" first: the records are updated as if it were
 * done, so later passes see the repaired volume, and its blocks go to the
 * write queue.  Reads of metadata go through the queue, so a block repaired
 * earlier is read back repaired.
 */
#ifndef VMFSD_FSCK_INTERNAL_H
#define VMFSD_FSCK_INTERNAL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>

#include "fsck.h"

#define FSCK_NPASSES 6

/* ---------------- problem catalogue (check.c) ---------------- */
enum pcode {
	P_LIVE_SNAPSHOT,
	P_SB_PRIMARY_BAD,
	P_SB_BACKUP_BAD,
	P_SB_BACKUP_DIFFERS,
	P_JOURNAL_DIRTY,
	P_JOURNAL_BAD,
	P_JOURNAL_NOTE,
	P_JOURNAL_TAIL,
	P_JOURNAL_FOREIGN,
	P_HB_BAD,
	P_HB_STALE,
	P_HB_FIELDS,
	P_LOCK_BAD,
	P_LOCK_STALE,
	P_RC_BAD,
	P_RC_HEADER,
	P_BM_LEAK,
	P_BM_UNMARKED,
	P_DUP_REF,
	P_MAP_ENTRY,
	P_MAP_NODE_BAD,
	P_MAP_PAST_EOF,
	P_INODE_BAD,
	P_INODE_TYPE,
	P_INODE_NLINK,
	P_INODE_UNITS,
	P_INODE_INLINE_TAIL,
	P_INODE_XATTR,
	P_INODE_PARENT_FIELD,
	P_DIR_LAYOUT,
	P_DIR_SIZE,
	P_DIR_BLOCK_BAD,
	P_DENT_DOT,
	P_DENT_DUP_NAME,
	P_DENT_BAD_TARGET,
	P_DENT_DTYPE,
	P_DIR_MULTI_LINK,
	P_DIR_PARENT,
	P_ROOT_BAD,
	P_ORPHAN_FREED,
	P_ORPHAN_RECONNECTED,
	P_LOST_FOUND,
	P_LOST_FOUND_FAILED,
	P_SUPPRESSED,
	P_COUNT
};

struct pdef {
	const char *code;
	const char *structure;
	bool error;             /* false: a note */
	bool preen_ok;          /* preen may repair it */
	bool fixable;           /* there is a repair at all */
};
extern const struct pdef fsck_pdefs[P_COUNT];

/* Builds a where from designated initialisers: WHERE(.ino = 5). */
#define WHERE(...) (&(const struct fsck_where){ __VA_ARGS__ })
#define W_BLOCK(b) .has = FSCK_W_BLOCK, .blocknr = (b)

/* ---------------- write queue (check.c) ---------------- */
/* Write classes, written in this order at the end. */
enum wq_class {
	WQ_DATA = 0,            /* map nodes, directory blocks */
	WQ_INODE,               /* inodes (they point at the above) */
	WQ_RC,                  /* resource clusters (bitmaps) */
	WQ_HB,                  /* heartbeat slots */
	WQ_SB_BACKUP,
	WQ_SB_PRIMARY,          /* the commit point, last */
	WQ_NCLASSES
};

struct wq_ent {
	uint64_t off;
	struct wq_ent *next;
	uint8_t cls;
	uint8_t *img;           /* 4 KiB, bdev_alloc'd */
};

struct zero_range {
	uint64_t off, len;
};

/* ---------------- pools ---------------- */
struct pool {
	int kind;               /* VMFSD_RC_* */
	const char *name;       /* "inode", "sub-block", "file block" */
	uint64_t count;
	uint32_t nclusters;
	uint8_t *disk;          /* bits as the clusters say (count bits) */
	uint8_t *ref;           /* truth: referenced items */
	uint8_t *cl_bad;        /* per cluster: 1 = unusable, its disk bits unknown */
	uint64_t nref;
};

static inline bool bit_get(const uint8_t *bm, uint64_t i)
{
	return bm[i / 8] & (1u << (i % 8));
}
static inline void bit_set(uint8_t *bm, uint64_t i)
{
	bm[i / 8] |= (uint8_t)(1u << (i % 8));
}
static inline void bit_clear(uint8_t *bm, uint64_t i)
{
	bm[i / 8] &= (uint8_t)~(1u << (i % 8));
}

/* ---------------- inode records ---------------- */
enum irec_state {
	IR_UNREAD = 0,
	IR_BAD,                 /* unusable: dropped */
	IR_OK,
};

enum irec_flags {
	IRF_FREE = 1u << 0,     /* released by the repair */
	IRF_SCANNED = 1u << 1,  /* directory entries collected */
	IRF_REACHED = 1u << 2,  /* claimed in the namespace walk */
	IRF_NEW = 1u << 3,      /* created by the repair (lost+found, root) */
	IRF_FROM_ENTRY = 1u << 4, /* found through an entry, bitmap unknown */
	IRF_BLANK = 1u << 5,    /* marked in use, block never written: a leak */
	IRF_MOVED = 1u << 6,    /* reconnected in lost+found by the repair */
};

struct dblk {
	uint64_t lblk;
	uint32_t sblk;
};

struct irec {
	uint64_t ino;
	uint64_t gen;
	uint64_t parent;        /* directories: the parent field on disk */
	uint64_t size;
	uint64_t container;     /* directory that names it (namespace pass) */
	uint64_t units;         /* data units mapped */
	uint64_t nodes;         /* map nodes */
	uint32_t mode;
	uint32_t nlink;         /* on disk */
	uint32_t links;         /* names found */
	uint32_t nsub;          /* subdirectories claimed */
	uint32_t nsub_new;      /* ... of which the repair attached (lost+found) */
	uint8_t data_mode, height;
	uint8_t state;
	uint8_t flags;
	struct dblk *db;        /* directories: blocks in logical order */
	uint32_t ndb, cdb;
	uint32_t ent_first, ent_n; /* directories: their entries in c->ents */
};

/* ---------------- directory entries ---------------- */
enum ent_flags {
	ENT_REMOVE = 1u << 0,
	ENT_FIX_DTYPE = 1u << 1,
	ENT_NEW = 1u << 2,      /* added by the repair, not on disk yet */
};

struct ent {
	uint64_t dir, ino;
	uint32_t sblk;          /* directory block holding it */
	uint32_t name_off;      /* into c->names */
	uint16_t idx;           /* index within the block */
	uint8_t dtype;
	uint8_t flags;
	uint8_t nlen;
};

/* ---------------- the check ---------------- */
struct fsck {
	struct bdev *bd;
	const struct fsck_opts *o;
	struct fsck_result *res;
	struct vmfsd_sb sb;
	uint64_t dev_size;
	bool repair;            /* -y or -p: repairs may be written */
	bool locked;            /* we hold the volume's OFD lock */
	bool sb_primary_fix, sb_backup_fix;

	/* heartbeat (volume.c) */
	struct vmfsd_hb hb[VMFSD_MAX_HOSTS];
	bool hb_ok[VMFSD_MAX_HOSTS];     /* decoded (or all-zero: free) */
	bool slot_live[VMFSD_MAX_HOSTS];

	/* problems (check.c) */
	uint32_t pcount[P_COUNT];
	uint64_t psuppressed[P_COUNT];
	uint8_t *pimmediate;    /* per stored problem: repaired on the spot */
	uint32_t pcap;
	bool unsafe_found;      /* a fixable problem preen may not fix */

	/* write queue (check.c) */
	struct wq_ent **wq;
	uint32_t wq_size, wq_n;
	struct zero_range *zr;
	uint32_t nzr;

	struct pool ip, sp, bp;

	/* inode records (inodes.c), in chunks so that a record never moves
	 * while a pass holds a pointer to it; open-addressed index by inode
	 * number (record index + 1, 0 = empty) */
	struct irec **chunks;
	uint32_t nir, nchunks;
	uint32_t *ihash;
	uint32_t ihash_size;
	struct vmfsd_inode *in; /* decode buffer (3.5 KiB) */

	/* directory entries (names.c) */
	struct ent *ents;
	uint32_t nents, cents;
	char *names;
	uint64_t names_len, names_cap;

	uint64_t lf_ino;        /* lost+found, 0 until needed */
	bool lf_failed;

	uint8_t *scratch;       /* 4 KiB aligned */
};

#define IREC_CHUNK 4096u
static inline struct irec *irec_at(const struct fsck *c, uint32_t i)
{
	return &c->chunks[i / IREC_CHUNK][i % IREC_CHUNK];
}

/* Per-cluster state bits in pool.cl_bad. */
enum {
	CL_BAD = 1u << 0,       /* unusable: its disk bits are unknown */
	CL_DIRTY = 1u << 1,     /* the repair allocated from it: rewrite */
};

/* check.c */
void fsck_report(struct fsck *c, enum pcode k, const struct fsck_where *w, const char *fix,
		 const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/* Like fsck_report, for a repair already done on the spot (journal replay). */
void fsck_report_done(struct fsck *c, enum pcode k, const struct fsck_where *w,
		      const char *fix, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));
void fsck_progress(struct fsck *c, int pass, const char *what, uint64_t done, uint64_t total);
/* Reads 4 KiB of metadata at OFF, the queued repair if there is one. */
int ck_meta_read(struct fsck *c, uint64_t off, void *buf);
/* Reads LEN bytes (a multiple of 4 KiB) and overlays queued repairs. */
int ck_meta_read_many(struct fsck *c, uint64_t off, void *buf, size_t len);
/* Queues a 4 KiB image for OFF (a later put replaces it). */
int ck_wq_put(struct fsck *c, uint64_t off, const void *img, enum wq_class cls);
int ck_wq_zero(struct fsck *c, uint64_t off, uint64_t len);

/* volume.c */
int fsck_volume(struct fsck *c);
enum { LOCK_VALID, LOCK_STALE, LOCK_MALFORMED };
/* Judges a decoded lock record against the live slots. */
int fsck_lock_judge(const struct fsck *c, const struct vmfsd_lock *lk);

/* inodes.c */
int fsck_clusters(struct fsck *c);
int fsck_inodes(struct fsck *c);
struct irec *ck_irec_find(struct fsck *c, uint64_t ino);
int ck_irec_add(struct fsck *c, uint64_t ino, struct irec **out);
/* Inode blocks through the queue: load decodes, store re-encodes the body
 * (keeping the lock sector, or writing a free one over garbage) and queues
 * it; edit is load + EDIT + store. */
int ck_inode_load(struct fsck *c, uint64_t ino, struct vmfsd_inode *in);
int ck_inode_store(struct fsck *c, const struct vmfsd_inode *in);
int ck_inode_edit(struct fsck *c, uint64_t ino, void (*edit)(struct vmfsd_inode *, void *),
	       void *arg);
/* Pool bookkeeping of the truth. */
bool ck_ref_mark(struct fsck *c, struct pool *p, uint64_t item);
void ck_ref_unmark(struct fsck *c, struct pool *p, uint64_t item);
/* Unmarks an item the repair takes away (see inodes.c). */
void ck_ref_drop(struct fsck *c, struct pool *p, uint64_t item);
/* Finds an item free in the truth (and on disk where known) and takes it. */
int ck_pool_alloc(struct fsck *c, struct pool *p, uint64_t *out);
/* Releases every unit and map node of R from the truth (no writes). */
int ck_map_release(struct fsck *c, struct irec *r);
/* Maps LBLK of IN (in memory; R's counts follow) to VAL, allocating and
 * queueing map nodes as needed; the caller stores IN. */
int ck_map_set(struct fsck *c, struct vmfsd_inode *in, struct irec *r, uint64_t lblk,
	    uint32_t val);
int ck_dblk_add(struct irec *r, uint64_t lblk, uint32_t sblk);
int fsck_inodes_more(struct fsck *c, bool *any);

/* names.c */
int fsck_dirs(struct fsck *c, bool *added);
int fsck_namespace(struct fsck *c);
int fsck_bitmaps(struct fsck *c);

#endif
