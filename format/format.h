/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * On-disk format v1 of a vmfsd volume.
 *
 * Every structure that lives on the LUN is defined here twice: a packed,
 * little-endian "disk" struct (vmfsd_disk_*) whose size and key offsets are
 * pinned by static asserts, and a native in-memory struct (vmfsd_*) that the
 * rest of the code uses.  encode/decode functions convert between them and
 * decode always verifies: magic, format version, the block's own number and
 * its XXH3-64 checksum (computed with the checksum field zeroed).  vmfsd and
 * fsck.vmfsd share these verifiers, so there is one definition of the format.
 * docs/format.md describes every field; a field added here is a line there.
 *
 * Units: "meta block" = 4 KiB (VMFSD_META_BLOCK), "sector" = 512 bytes (the
 * ATS unit of a lock record), "file block" = the volume's block size
 * (1 MiB by default), "sub-block" = 4 KiB unit of the sub-block pool that
 * holds small files, directories and block-map nodes.
 */
#ifndef VMFSD_FORMAT_H
#define VMFSD_FORMAT_H

#include <assert.h>
#include <endian.h>
#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#define VMFSD_SECTOR            512u
#define VMFSD_META_BLOCK        4096u
#define VMFSD_FORMAT_VERSION    1u

/* Region alignment: every region starts on a 1 MiB boundary. */
#define VMFSD_REGION_ALIGN      (1u << 20)

#define VMFSD_MIN_BLOCK_SIZE    (64u << 10)
#define VMFSD_MAX_BLOCK_SIZE    (64u << 20)
#define VMFSD_DEF_BLOCK_SIZE    (1u << 20)
#define VMFSD_SUB_BLOCK_SIZE    4096u
#define VMFSD_MAX_HOSTS         256u
#define VMFSD_DEF_MAX_HOSTS     64u
/* Heartbeat defaults (docs/cluster.md §3; VMFS: 3 s renew, 16 s timeout;
 * sanlock: 20 s renew, 80 s timeout).  We renew every second and declare a
 * host dead after 10 s: fast HA restarts while a slow I/O (our I/O timeout
 * assumption is 2 s) can miss several renewals before fencing. */
#define VMFSD_DEF_HB_INTERVAL_MS 1000u
#define VMFSD_DEF_HB_TIMEOUT_MS  10000u

#define VMFSD_LABEL_MAX         64u
#define VMFSD_HOSTNAME_MAX      64u
#define VMFSD_NAME_MAX          255u

#define VMFSD_ROOT_INO          1u      /* == FUSE_ROOT_ID */
#define VMFSD_FIRST_FREE_INO    2u

/* Magic numbers: ASCII tags read little-endian. */
#define VMFSD_SB_MAGIC      0x3142534453464d56ull /* "VMFSDSB1" */
#define VMFSD_LOCK_MAGIC    0x4b434f4cu /* "LOCK" */
#define VMFSD_RC_MAGIC      0x43534552u /* "RESC" resource cluster */
#define VMFSD_INODE_MAGIC   0x45444f4eu /* "NODE" */
#define VMFSD_MAP_MAGIC     0x5050414du /* "MAPP" block-map node */
#define VMFSD_DIR_MAGIC     0x4b4c4244u /* "DBLK" directory block */
#define VMFSD_HB_MAGIC      0x54414548u /* "HEAT" heartbeat slot */
#define VMFSD_JH_MAGIC      0x4c4e524au /* "JRNL" journal header */

/* Feature masks: unknown incompat bits refuse the mount, unknown ro_compat
 * bits force read-only, unknown compat bits are ignored. */
/* Journal blocks carry the volume UUID and the superblock's format_gen, and
 * replay ignores blocks of another format (docs/format.md §12).  ro_compat:
 * a build that does not know it may read the volume but must not write a
 * journal without the identity, which replay would then ignore. */
#define VMFSD_FEAT_RO_JOURNAL_ID   0x1ull
/* Hosts fence each other with SCSI persistent reservations on an iSCSI LUN
 * (docs/cluster.md §8): every writer must register its key, so a build that
 * does not know the feature may only read (its writes would be refused). */
#define VMFSD_FEAT_RO_PR_FENCE     0x2ull
#define VMFSD_FEAT_COMPAT_SUPP     0ull
#define VMFSD_FEAT_RO_COMPAT_SUPP  (VMFSD_FEAT_RO_JOURNAL_ID | VMFSD_FEAT_RO_PR_FENCE)
#define VMFSD_FEAT_INCOMPAT_SUPP   0ull

/* Little-endian field types: a plain integer on disk, converted at the edge. */
typedef uint16_t le16;
typedef uint32_t le32;
typedef uint64_t le64;

/* ------------------------------------------------------------------ */
/* Superblock: meta block 0 and a backup in the last meta block.       */
/* ------------------------------------------------------------------ */
struct vmfsd_disk_sb {
	le64 magic;
	le32 version;
	le32 sb_flags;
	le64 blocknr;           /* own meta block number */
	le64 csum;              /* XXH3-64 of the block, this field zeroed */
	uint8_t uuid[16];
	char label[VMFSD_LABEL_MAX];
	le64 feat_compat;
	le64 feat_ro_compat;
	le64 feat_incompat;
	le64 device_size;       /* bytes, as formatted */
	le64 mkfs_time;         /* seconds since the epoch */
	le32 meta_block_size;   /* 4096 */
	le32 sector_size;       /* 512 */
	le32 block_size;        /* file block, bytes */
	le32 sub_block_size;    /* 4096 */
	le32 max_hosts;
	le32 hb_interval_ms;
	le32 hb_timeout_ms;
	le32 rc_bits;           /* items per resource cluster */
	le64 hb_off;            /* heartbeat region: max_hosts x 4 KiB */
	le64 journal_off;       /* max_hosts x journal_size */
	le64 journal_size;      /* bytes per host */
	le64 ibm_off;           /* inode bitmap clusters */
	le32 ibm_count;
	le32 sbm_count;
	le64 sbm_off;           /* sub-block bitmap clusters */
	le64 dbm_off;           /* file-block bitmap clusters */
	le32 dbm_count;
	le32 reserved0;
	le64 itable_off;        /* inode table, 4 KiB per inode */
	le64 inode_count;
	le64 sub_off;           /* sub-block pool */
	le64 sub_count;
	le64 data_off;          /* file-block pool */
	le64 block_count;
	le64 root_ino;
	le64 backup_blocknr;    /* meta block number of the backup superblock */
	le64 format_gen;        /* random at every mkfs, never 0 (JOURNAL_ID) */
	uint8_t reserved[3776];
};
static_assert(sizeof(struct vmfsd_disk_sb) == VMFSD_META_BLOCK, "sb size");
static_assert(offsetof(struct vmfsd_disk_sb, csum) == 24, "sb csum offset");
static_assert(offsetof(struct vmfsd_disk_sb, uuid) == 32, "sb uuid offset");
static_assert(offsetof(struct vmfsd_disk_sb, hb_off) == 184, "sb hb_off offset");
static_assert(offsetof(struct vmfsd_disk_sb, format_gen) == 312, "sb format_gen");
static_assert(offsetof(struct vmfsd_disk_sb, reserved) == 320, "sb reserved");

struct vmfsd_sb {
	uint32_t version;
	uint32_t sb_flags;
	uint8_t uuid[16];
	char label[VMFSD_LABEL_MAX + 1];
	uint64_t feat_compat, feat_ro_compat, feat_incompat;
	uint64_t device_size;
	uint64_t mkfs_time;
	uint32_t block_size;
	uint32_t max_hosts;
	uint32_t hb_interval_ms;
	uint32_t hb_timeout_ms;
	uint32_t rc_bits;
	uint64_t hb_off;
	uint64_t journal_off, journal_size;
	uint64_t ibm_off; uint32_t ibm_count;
	uint64_t sbm_off; uint32_t sbm_count;
	uint64_t dbm_off; uint32_t dbm_count;
	uint64_t itable_off, inode_count;
	uint64_t sub_off, sub_count;
	uint64_t data_off, block_count;
	uint64_t root_ino;
	uint64_t backup_blocknr;
	uint64_t format_gen;
};

/* ------------------------------------------------------------------ */
/* Lock record: one sector at the start of every lockable object        */
/* (inode, resource cluster).  Changed only by ATS on that sector.      */
/* ------------------------------------------------------------------ */
enum vmfsd_lock_mode {
	VMFSD_LOCK_FREE = 0,
	VMFSD_LOCK_EXCL = 1,
	VMFSD_LOCK_RO = 2,      /* shared read-only */
	VMFSD_LOCK_MW = 3,      /* multi-writer */
};

struct vmfsd_disk_lock {
	le32 magic;
	le16 version;
	le16 mode;
	le64 blocknr;           /* meta block number of the object */
	le64 csum;              /* XXH3-64 of the 512-byte sector */
	le32 owner_slot;        /* heartbeat slot of the (first) holder */
	le32 nholders;
	le64 owner_slot_gen;    /* slot generation when acquired */
	le64 lock_gen;          /* bumped on every acquire and break */
	uint8_t holders[VMFSD_MAX_HOSTS / 8]; /* bitmap of holder slots */
	/* Low 8 bits of each holder's slot generation when it joined the lock
	 * (entry s for holder slot s; zero when bit s of holders is clear):
	 * lets a reader drop a holder whose slot has since been taken over.
	 * A valid holder always matches, so a wrap can only keep a stale
	 * holder (a spurious EBUSY), never drop a valid one (docs/cluster.md). */
	uint8_t holder_gen8[VMFSD_MAX_HOSTS];
	uint8_t reserved[176];
};
static_assert(sizeof(struct vmfsd_disk_lock) == VMFSD_SECTOR, "lock size");
static_assert(offsetof(struct vmfsd_disk_lock, csum) == 16, "lock csum");
static_assert(offsetof(struct vmfsd_disk_lock, holders) == 48, "lock holders");
static_assert(offsetof(struct vmfsd_disk_lock, holder_gen8) == 80, "lock holder_gen8");
static_assert(offsetof(struct vmfsd_disk_lock, reserved) == 336, "lock reserved");

struct vmfsd_lock {
	uint16_t mode;
	uint32_t owner_slot;
	uint32_t nholders;
	uint64_t owner_slot_gen;
	uint64_t lock_gen;
	uint8_t holders[VMFSD_MAX_HOSTS / 8];
	uint8_t holder_gen8[VMFSD_MAX_HOSTS];
};

/* ------------------------------------------------------------------ */
/* Resource cluster: one meta block = lock sector + header + bitmap.    */
/* Bit set = item in use.  Covers rc_bits consecutive items.            */
/* ------------------------------------------------------------------ */
#define VMFSD_RC_HDR_OFF    512u
#define VMFSD_RC_BITMAP_OFF 1024u
#define VMFSD_RC_BITS       ((VMFSD_META_BLOCK - VMFSD_RC_BITMAP_OFF) * 8u)

enum vmfsd_rc_kind {
	VMFSD_RC_INODE = 1,
	VMFSD_RC_SUB = 2,
	VMFSD_RC_BLOCK = 3,
};

struct vmfsd_disk_rc {
	struct vmfsd_disk_lock lock;
	le32 magic;
	le16 version;
	le16 kind;
	le64 blocknr;
	le64 csum;              /* covers bytes 512..4095, this field zeroed */
	le32 index;             /* cluster number within its kind */
	le32 nitems;            /* valid bits (last cluster may be short) */
	le64 first_item;
	le32 nfree;
	uint8_t reserved[468];
	uint8_t bitmap[VMFSD_META_BLOCK - VMFSD_RC_BITMAP_OFF];
};
static_assert(sizeof(struct vmfsd_disk_rc) == VMFSD_META_BLOCK, "rc size");
static_assert(offsetof(struct vmfsd_disk_rc, magic) == VMFSD_RC_HDR_OFF, "rc hdr");
static_assert(offsetof(struct vmfsd_disk_rc, bitmap) == VMFSD_RC_BITMAP_OFF, "rc bm");

struct vmfsd_rc {
	uint16_t kind;
	uint32_t index;
	uint32_t nitems;
	uint64_t first_item;
	uint32_t nfree;
	uint8_t bitmap[VMFSD_META_BLOCK - VMFSD_RC_BITMAP_OFF];
};

/* ------------------------------------------------------------------ */
/* Inode: one meta block = lock sector + inode body.                    */
/* ------------------------------------------------------------------ */
#define VMFSD_INODE_BODY_OFF  512u
#define VMFSD_XATTR_AREA      512u
#define VMFSD_MAP_AREA        2912u
#define VMFSD_MAP_ROOT_SLOTS  (VMFSD_MAP_AREA / 4u)        /* 728 */
#define VMFSD_INLINE_MAX      VMFSD_MAP_AREA
/* Symbolic link targets: up to PATH_MAX - 1 bytes.  Those longer than
 * VMFSD_INLINE_MAX are the data of the link's inode (one sub-block, or one
 * file block when the sub-block pool is full), as a small file's. */
#define VMFSD_SYMLINK_MAX     4095u

/* How the map area of an inode is used. */
enum vmfsd_data_mode {
	VMFSD_DATA_INLINE = 0,  /* bytes stored in the map area */
	VMFSD_DATA_SUB = 1,     /* block map in 4 KiB sub-blocks */
	VMFSD_DATA_BLOCK = 2,   /* block map in file blocks */
};

/* Block-map entries are le32: a pool block number (0 = hole) with
 * VMFSD_MAP_UNWRITTEN set for preallocated blocks that read as zeros. */
#define VMFSD_MAP_UNWRITTEN   0x80000000u
#define VMFSD_MAP_PBLK_MASK   0x7fffffffu
#define VMFSD_MAP_MAX_HEIGHT  4u

#define VMFSD_IFLAG_MW        0x1u   /* multi-writer lock mode requested */

struct vmfsd_disk_inode {
	struct vmfsd_disk_lock lock;
	le32 magic;
	le16 version;
	uint8_t data_mode;
	uint8_t map_height;     /* 0: map area holds data pointers */
	le64 blocknr;
	le64 csum;              /* covers bytes 512..4095, this field zeroed */
	le64 ino;
	le64 generation;        /* bumped on each reuse of this inode number */
	le32 mode;
	le32 uid;
	le32 gid;
	le32 nlink;
	le64 size;
	le64 alloc_units;       /* sub-blocks + file blocks + map nodes in use */
	le64 atime_sec, mtime_sec, ctime_sec, btime_sec;
	le32 atime_nsec, mtime_nsec, ctime_nsec, btime_nsec;
	le64 parent;            /* directories: parent directory inode */
	le32 iflags;
	le16 xattr_len;         /* bytes used in xattr area */
	le16 reserved0;
	le64 rdev;
	le64 change_seq;        /* bumped on every change: cache validation */
	uint8_t reserved[8];
	uint8_t xattr[VMFSD_XATTR_AREA];
	uint8_t map[VMFSD_MAP_AREA];
};
static_assert(sizeof(struct vmfsd_disk_inode) == VMFSD_META_BLOCK, "inode size");
static_assert(offsetof(struct vmfsd_disk_inode, magic) == VMFSD_INODE_BODY_OFF, "inode body");
static_assert(offsetof(struct vmfsd_disk_inode, xattr) == 672, "inode xattr");
static_assert(offsetof(struct vmfsd_disk_inode, map) == 1184, "inode map");

struct vmfsd_inode {
	uint64_t ino;
	uint64_t generation;
	uint8_t data_mode;
	uint8_t map_height;
	uint32_t mode, uid, gid, nlink;
	uint64_t size;
	uint64_t alloc_units;
	int64_t atime_sec, mtime_sec, ctime_sec, btime_sec;
	uint32_t atime_nsec, mtime_nsec, ctime_nsec, btime_nsec;
	uint64_t parent;
	uint32_t iflags;
	uint16_t xattr_len;
	uint64_t rdev;
	uint64_t change_seq;
	uint8_t xattr[VMFSD_XATTR_AREA];
	uint8_t map[VMFSD_MAP_AREA];    /* little-endian entries or inline data */
};

/* ------------------------------------------------------------------ */
/* Block-map node: one sub-block of le32 pointers (interior or leaf).   */
/* ------------------------------------------------------------------ */
#define VMFSD_MAP_NODE_HDR    64u
#define VMFSD_MAP_NODE_SLOTS  ((VMFSD_SUB_BLOCK_SIZE - VMFSD_MAP_NODE_HDR) / 4u) /* 1008 */

struct vmfsd_disk_map_node {
	le32 magic;
	le16 version;
	le16 level;             /* 0 = leaf (data pointers) */
	le64 blocknr;           /* sub-block number */
	le64 csum;
	le64 ino;
	le64 ino_generation;
	le64 first_lblk;        /* first logical unit this node covers */
	uint8_t reserved[16];
	le32 slot[VMFSD_MAP_NODE_SLOTS];
};
static_assert(sizeof(struct vmfsd_disk_map_node) == VMFSD_SUB_BLOCK_SIZE, "map node");
static_assert(offsetof(struct vmfsd_disk_map_node, slot) == VMFSD_MAP_NODE_HDR, "map slots");
static_assert(offsetof(struct vmfsd_disk_map_node, ino) == 24, "map node ino");
static_assert(offsetof(struct vmfsd_disk_map_node, first_lblk) == 40, "map node first_lblk");

/* Tree arithmetic (docs/format.md §8): units one slot covers at LEVEL
 * (1008^level), and units a map of HEIGHT addresses (728 x 1008^height). */
static inline uint64_t vmfsd_map_span(unsigned level)
{
	uint64_t s = 1;

	while (level--)
		s *= VMFSD_MAP_NODE_SLOTS;
	return s;
}
static inline uint64_t vmfsd_map_capacity(unsigned height)
{
	return VMFSD_MAP_ROOT_SLOTS * vmfsd_map_span(height);
}
/* The slot array of a node image (VMFSD_MAP_NODE_SLOTS le32 entries). */
static inline uint8_t *vmfsd_map_node_slots(void *node)
{
	return (uint8_t *)node + VMFSD_MAP_NODE_HDR;
}
/* Entry I of a slot array (the inode's root map area or a node's slots). */
static inline uint32_t vmfsd_map_slot_get(const uint8_t *slots, uint32_t i)
{
	uint32_t v;

	memcpy(&v, slots + (size_t)i * 4, 4);
	return le32toh(v);
}
static inline void vmfsd_map_slot_set(uint8_t *slots, uint32_t i, uint32_t e)
{
	e = htole32(e);
	memcpy(slots + (size_t)i * 4, &e, 4);
}

/* ------------------------------------------------------------------ */
/* Directory block: one sub-block of packed, always-compacted entries.  */
/* ------------------------------------------------------------------ */
#define VMFSD_DIR_HDR         64u
#define VMFSD_DIR_SPACE       (VMFSD_SUB_BLOCK_SIZE - VMFSD_DIR_HDR)

struct vmfsd_disk_dir_hdr {
	le32 magic;
	le16 version;
	le16 nentries;
	le64 blocknr;           /* sub-block number */
	le64 csum;
	le64 dir_ino;
	le64 dir_generation;
	le16 used;              /* bytes of entries after the header */
	uint8_t reserved[22];
};
static_assert(sizeof(struct vmfsd_disk_dir_hdr) == VMFSD_DIR_HDR, "dir hdr");
static_assert(offsetof(struct vmfsd_disk_dir_hdr, csum) == 16, "dir hdr csum");
static_assert(offsetof(struct vmfsd_disk_dir_hdr, dir_ino) == 24, "dir hdr dir_ino");
static_assert(offsetof(struct vmfsd_disk_dir_hdr, used) == 40, "dir hdr used");

/* Entry: the fixed part, the name, zero pad to a multiple of 8 bytes.
 * Entries start 8-byte aligned, so ino is aligned; the struct is packed
 * only so that its size is the 10 fixed bytes. */
#define VMFSD_DIRENT_FIXED    10u

struct vmfsd_disk_dirent {
	le64 ino;
	uint8_t name_len;       /* 1..255 */
	uint8_t d_type;         /* Linux DT_* */
	char name[];            /* name_len bytes, no '/' and no NUL */
} __attribute__((packed));
static_assert(sizeof(struct vmfsd_disk_dirent) == VMFSD_DIRENT_FIXED, "dirent size");
static_assert(offsetof(struct vmfsd_disk_dirent, name_len) == 8, "dirent name_len");
static_assert(offsetof(struct vmfsd_disk_dirent, d_type) == 9, "dirent d_type");
static_assert(offsetof(struct vmfsd_disk_dirent, name) == VMFSD_DIRENT_FIXED, "dirent name");

static inline unsigned vmfsd_dirent_size(unsigned name_len)
{
	return (VMFSD_DIRENT_FIXED + name_len + 7u) & ~7u;
}

/* A decoded entry; NAME points into the block and is not NUL-terminated. */
struct vmfsd_dirent {
	uint64_t ino;
	uint8_t type;
	uint8_t name_len;
	const char *name;
};

/* ------------------------------------------------------------------ */
/* Heartbeat slot: one meta block per host (first sector is what ATS    */
/* compares; the rest is informational).                                */
/* ------------------------------------------------------------------ */
enum vmfsd_hb_state {
	VMFSD_HB_FREE = 0,
	VMFSD_HB_LIVE = 1,
	VMFSD_HB_REPLAYING = 2,
};

/* Heartbeat flags (LIVE slots).  LATE: the host is alone on the volume
 * and commits at its longer interval, so changes it made up to that long
 * ago may not be on disk yet; it clears the flag after the first commit
 * that follows its sight of another host (docs/cluster.md §5.2). */
#define VMFSD_HB_F_LATE 1u

struct vmfsd_disk_hb {
	le32 magic;
	le16 version;
	le16 state;
	le64 blocknr;
	le64 csum;              /* covers the first sector, this field zeroed */
	uint8_t host_uuid[16];
	char host_name[VMFSD_HOSTNAME_MAX];
	le64 generation;        /* bumped each time the slot is freed/claimed */
	le64 counter;           /* bumped on every renewal */
	le64 journal_off;       /* this host's journal area */
	le32 slot;
	le32 pid;
	le32 replayer_slot;     /* REPLAYING: slot of the host replaying */
	le32 flags;             /* VMFSD_HB_F_*; zero before these existed */
	le64 replayer_gen;      /* REPLAYING: that replayer slot's generation */
	le64 wall_time_ms;      /* writer's CLOCK_REALTIME, display only: never
				 * compared for liveness (docs/cluster.md §2) */
	uint8_t reserved[VMFSD_SECTOR - 160];
	uint8_t unused[VMFSD_META_BLOCK - VMFSD_SECTOR];
};
static_assert(sizeof(struct vmfsd_disk_hb) == VMFSD_META_BLOCK, "hb size");
static_assert(offsetof(struct vmfsd_disk_hb, flags) == 140, "hb flags");
static_assert(offsetof(struct vmfsd_disk_hb, replayer_gen) == 144, "hb replayer_gen");
static_assert(offsetof(struct vmfsd_disk_hb, reserved) == 160, "hb reserved");

struct vmfsd_hb {
	uint16_t state;
	uint8_t host_uuid[16];
	char host_name[VMFSD_HOSTNAME_MAX + 1];
	uint64_t generation;
	uint64_t counter;
	uint64_t journal_off;
	uint32_t slot;
	uint32_t pid;
	uint32_t replayer_slot;
	uint64_t replayer_gen;
	uint64_t wall_time_ms;
	uint32_t flags;
};

/* A live host that says it commits late (VMFSD_HB_F_LATE). */
static inline bool vmfsd_hb_late(uint16_t state, uint32_t flags)
{
	return state == VMFSD_HB_LIVE && (flags & VMFSD_HB_F_LATE);
}

/* ------------------------------------------------------------------ */
/* Journal: one area per host slot.  Meta block 0 of the area is the    */
/* header; the rest is a circular log of transactions, each one         */
/* descriptor block followed by the full images of the blocks it        */
/* changes.  The descriptor holds every block's target and checksum, so  */
/* it alone proves the transaction complete: no separate commit block.   */
/* ------------------------------------------------------------------ */
#define VMFSD_JDESC_MAGIC   0x4353444au /* "JDSC" */
#define VMFSD_JDESC_HDR     64u
#define VMFSD_JDESC_MAX     ((VMFSD_META_BLOCK - VMFSD_JDESC_HDR) / 16u) /* 252 */

struct vmfsd_disk_jhdr {
	le32 magic;             /* VMFSD_JH_MAGIC */
	le16 version;
	le16 reserved0;
	le64 blocknr;
	le64 csum;
	le32 slot;
	le32 nblocks;           /* area size in meta blocks */
	le64 tail_seq;          /* sequence of the first live transaction */
	le32 tail_blk;          /* its block within the area (>= 1) */
	le32 reserved1;
	le64 clean;             /* 1: no live transaction (clean unmount) */
	uint8_t vol_uuid[16];   /* journal identity (struct vmfsd_journal_id) */
	le64 format_gen;
	uint8_t reserved[VMFSD_META_BLOCK - 80];
};
static_assert(sizeof(struct vmfsd_disk_jhdr) == VMFSD_META_BLOCK, "jhdr size");
static_assert(offsetof(struct vmfsd_disk_jhdr, vol_uuid) == 56, "jhdr vol_uuid");
static_assert(offsetof(struct vmfsd_disk_jhdr, reserved) == 80, "jhdr reserved");

/* The rest of the journal header block (bytes 512..4095): the host's orphan
 * list, inodes whose last name is gone but whose blocks are not freed yet
 * (still open, or freed over several transactions).  The host frees them
 * at its next mount.  Changed only through journaled images that skip the
 * header sector. */
#define VMFSD_ORPHAN_MAGIC  0x4850524fu /* "ORPH" */
#define VMFSD_ORPHAN_MAX    445u

struct vmfsd_disk_orphans {
	le32 magic;
	le32 count;
	le64 blocknr;
	le64 csum;              /* covers these 3584 bytes, this field zeroed */
	le64 ino[VMFSD_ORPHAN_MAX];
};
static_assert(sizeof(struct vmfsd_disk_orphans) == VMFSD_META_BLOCK - VMFSD_SECTOR, "orphans");

/* Encodes COUNT inode numbers into the orphan part of a header block BLK
 * (bytes 512..4095); decode accepts an all-zero area as empty. */
void vmfsd_orphans_encode(const uint64_t *ino, uint32_t count, uint64_t blocknr, void *blk);
int vmfsd_orphans_decode(const void *blk, uint64_t blocknr, uint64_t *ino, uint32_t *count);

/* Which format of the volume a journal block belongs to: the volume UUID
 * and the superblock's format_gen when VMFSD_FEAT_RO_JOURNAL_ID is set, all
 * zero on a volume made before that feature.  A re-format makes both new,
 * and mkfs zeroes only the first MiB of each journal area, so blocks of the
 * previous format can follow the new log: this is how replay tells them
 * apart (the sequence numbers alone can match). */
struct vmfsd_journal_id {
	uint8_t vol_uuid[16];
	uint64_t format_gen;
};
void vmfsd_journal_id_of(const struct vmfsd_sb *sb, struct vmfsd_journal_id *id);
static inline int vmfsd_journal_id_eq(const struct vmfsd_journal_id *a,
				      const struct vmfsd_journal_id *b)
{
	return !memcmp(a->vol_uuid, b->vol_uuid, 16) && a->format_gen == b->format_gen;
}

struct vmfsd_jhdr {
	uint32_t slot;
	uint32_t nblocks;
	uint64_t tail_seq;
	uint32_t tail_blk;
	uint64_t clean;
	struct vmfsd_journal_id id;     /* zero for an all-zero (fresh) header */
};

/* Low bit of a journal entry's target: the block starts with a lock
 * record that belongs to the lock manager (ATS only); checkpoint and replay
 * write the block from its second sector on. */
#define VMFSD_JENTRY_KEEP_LOCK  1ull

struct vmfsd_disk_jentry {
	le64 target;            /* device byte offset of the block | flags */
	le64 csum;              /* XXH3-64 of the 4 KiB image */
};

struct vmfsd_disk_jdesc {
	le32 magic;
	le16 version;
	le16 reserved0;
	le64 blocknr;           /* absolute meta block number of this descriptor */
	le64 csum;
	le64 seq;
	le32 nblocks;           /* images that follow, 1..VMFSD_JDESC_MAX */
	le32 slot;
	uint8_t vol_uuid[16];   /* journal identity (struct vmfsd_journal_id) */
	le64 format_gen;
	struct vmfsd_disk_jentry e[VMFSD_JDESC_MAX];
};
static_assert(sizeof(struct vmfsd_disk_jdesc) == VMFSD_META_BLOCK, "jdesc size");
static_assert(offsetof(struct vmfsd_disk_jdesc, vol_uuid) == 40, "jdesc vol_uuid");
static_assert(offsetof(struct vmfsd_disk_jdesc, e) == VMFSD_JDESC_HDR, "jdesc entries");

/* ------------------------------------------------------------------ */
/* Codecs.  decode() verifies and returns 0, -EBADMSG (checksum),       */
/* -EUCLEAN (magic, version, self number or a field out of range) or     */
/* -EOPNOTSUPP (unknown incompatible feature).                          */
/* ------------------------------------------------------------------ */
uint64_t vmfsd_csum(const void *buf, size_t len, size_t csum_off);

/* The volume UUID as text, 8-4-4-4-12 lowercase hex (36 chars + NUL). */
void vmfsd_uuid_format(const uint8_t uuid[16], char out[37]);
void vmfsd_sb_encode(const struct vmfsd_sb *sb, uint64_t blocknr, void *blk);
int vmfsd_sb_decode(const void *blk, uint64_t blocknr, struct vmfsd_sb *sb);
/* Internal consistency of the region layout against a device size. */
int vmfsd_sb_check_layout(const struct vmfsd_sb *sb);

void vmfsd_lock_encode(const struct vmfsd_lock *lk, uint64_t blocknr, void *sector);
int vmfsd_lock_decode(const void *sector, uint64_t blocknr, struct vmfsd_lock *lk);

void vmfsd_rc_encode(const struct vmfsd_rc *rc, uint64_t blocknr, void *blk);
int vmfsd_rc_decode(const void *blk, uint64_t blocknr, struct vmfsd_rc *rc);

/* Encodes the inode body only (bytes 512..4095); the lock sector is left alone. */
void vmfsd_inode_encode(const struct vmfsd_inode *in, uint64_t blocknr, void *blk);
int vmfsd_inode_decode(const void *blk, uint64_t blocknr, struct vmfsd_inode *in);

/* An empty node of LEVEL covering from unit FIRST, owned by INO/INO_GEN. */
void vmfsd_map_node_init(void *node, unsigned level, uint64_t ino, uint64_t ino_gen,
			 uint64_t first);
void vmfsd_map_node_finish(void *node, uint64_t blocknr);
int vmfsd_map_node_verify(const void *node, uint64_t blocknr, uint64_t ino,
			  uint64_t ino_gen);

void vmfsd_dir_block_finish(void *blk, uint64_t blocknr);
int vmfsd_dir_block_verify(const void *blk, uint64_t blocknr, uint64_t dir_ino,
			   uint64_t dir_gen);

/* Directory entries within one block image.  Offsets are relative to the
 * first entry (byte VMFSD_DIR_HDR of the block), as `used` is.  None of
 * these finishes the block: the caller calls vmfsd_dir_block_finish. */
/* An empty block of directory DIR_INO (generation DIR_GEN). */
void vmfsd_dir_block_init(void *blk, uint64_t dir_ino, uint64_t dir_gen);
unsigned vmfsd_dir_block_used(const void *blk);
/* True when an entry with a NAME_LEN-byte name fits in the block. */
int vmfsd_dir_block_fits(const void *blk, unsigned name_len);
/* Decodes the entry at OFF into DE and returns its size, or returns 0 at
 * the end of the entries (or at an entry that does not fit inside `used`,
 * so that a walk over an unverified block stops instead of overrunning):
 *   for (off = 0; (sz = vmfsd_dirent_get(blk, off, &de)); off += sz) */
unsigned vmfsd_dirent_get(const void *blk, unsigned off, struct vmfsd_dirent *de);
/* Appends an entry at the end: 0, or -ENOSPC when it does not fit. */
int vmfsd_dirent_add(void *blk, uint64_t ino, uint8_t type, const char *name,
		     unsigned name_len);
/* Offset of the entry named NAME, or -ENOENT. */
int vmfsd_dirent_find(const void *blk, const char *name, unsigned name_len);
/* Removes the entry at OFF, moving the later ones down (blocks stay compacted). */
void vmfsd_dirent_remove(void *blk, unsigned off);
/* Repoints the entry at OFF to INO with type TYPE. */
void vmfsd_dirent_update(void *blk, unsigned off, uint64_t ino, uint8_t type);
/* The raw entry at OFF (for tools that damage entries on purpose). */
static inline struct vmfsd_disk_dirent *vmfsd_dirent_at(void *blk, unsigned off)
{
	return (struct vmfsd_disk_dirent *)((uint8_t *)blk + VMFSD_DIR_HDR + off);
}

void vmfsd_hb_encode(const struct vmfsd_hb *hb, uint64_t blocknr, void *blk);
int vmfsd_hb_decode(const void *blk, uint64_t blocknr, struct vmfsd_hb *hb);

void vmfsd_jhdr_encode(const struct vmfsd_jhdr *jh, uint64_t blocknr, void *blk);
/* An all-zero block (fresh mkfs) decodes as an empty journal. */
int vmfsd_jhdr_decode(const void *blk, uint64_t blocknr, struct vmfsd_jhdr *jh);
/* Finishes a descriptor whose seq, nblocks, slot and entries are filled:
 * magic, version, self number, journal identity ID, checksum. */
void vmfsd_jdesc_finish(void *blk, uint64_t blocknr, const struct vmfsd_journal_id *id);
/* Verifies magic, checksum, self number and the entry count (-EUCLEAN,
 * -EBADMSG), then the identity: -ESTALE for a sound descriptor of another
 * format of the volume (the end of the log, not damage). */
int vmfsd_jdesc_verify(const void *blk, uint64_t blocknr, const struct vmfsd_journal_id *id);

/* ------------------------------------------------------------------ */
/* Layout computation shared by mkfs and the tests.                     */
/* ------------------------------------------------------------------ */
struct vmfsd_mkfs_params {
	uint64_t device_size;
	uint32_t block_size;
	uint32_t max_hosts;
	uint32_t hb_interval_ms;
	uint32_t hb_timeout_ms;
	uint64_t journal_size;  /* 0: default */
	uint64_t inode_count;   /* 0: default */
	uint64_t sub_size;      /* bytes of sub-block pool; 0: default */
	const char *label;
	const uint8_t *uuid;    /* 16 bytes */
	uint64_t format_gen;    /* random, new at every mkfs; 0 is taken as 1 */
	uint64_t now;
	int pr_fence;           /* VMFSD_FEAT_RO_PR_FENCE */
};
/* Fills sb with a valid v1 layout, or returns -ENOSPC (device too small)
 * or -EINVAL (bad parameter). */
int vmfsd_layout_compute(const struct vmfsd_mkfs_params *p, struct vmfsd_sb *sb);

/* True when N bytes at P are all zero (never-written blocks and sectors). */
static inline int vmfsd_all_zero(const void *p, size_t n)
{
	const uint8_t *b = p;
	size_t i;

	for (i = 0; i < n; i++)
		if (b[i])
			return 0;
	return 1;
}

/* Little-endian helpers for map and directory bytes. */
static inline uint32_t vmfsd_get_le32(const void *p)
{
	uint32_t v;
	memcpy(&v, p, 4);
	return le32toh(v);
}
static inline void vmfsd_put_le32(void *p, uint32_t v)
{
	v = htole32(v);
	memcpy(p, &v, 4);
}
static inline uint64_t vmfsd_get_le64(const void *p)
{
	uint64_t v;
	memcpy(&v, p, 8);
	return le64toh(v);
}
static inline void vmfsd_put_le64(void *p, uint64_t v)
{
	v = htole64(v);
	memcpy(p, &v, 8);
}

/* Byte offset of items within the regions. */
static inline uint64_t vmfsd_inode_off(const struct vmfsd_sb *sb, uint64_t ino)
{
	return sb->itable_off + ino * VMFSD_META_BLOCK;
}
static inline uint64_t vmfsd_sub_off(const struct vmfsd_sb *sb, uint64_t sblk)
{
	return sb->sub_off + sblk * VMFSD_SUB_BLOCK_SIZE;
}
static inline uint64_t vmfsd_block_off(const struct vmfsd_sb *sb, uint64_t blk)
{
	return sb->data_off + blk * (uint64_t)sb->block_size;
}
static inline uint64_t vmfsd_rc_off(const struct vmfsd_sb *sb, int kind, uint32_t idx)
{
	uint64_t base = kind == VMFSD_RC_INODE ? sb->ibm_off :
			kind == VMFSD_RC_SUB ? sb->sbm_off : sb->dbm_off;
	return base + (uint64_t)idx * VMFSD_META_BLOCK;
}
static inline uint64_t vmfsd_hb_slot_off(const struct vmfsd_sb *sb, uint32_t slot)
{
	return sb->hb_off + (uint64_t)slot * VMFSD_META_BLOCK;
}

#endif
