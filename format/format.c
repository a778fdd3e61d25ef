// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Encode, decode and verify every on-disk structure of format v1, and the
 * region layout computation that mkfs uses.  Decoders never trust a field
 * they have not range-checked: the image may be corrupt or hostile.
 */
#include <errno.h>
#include <stdio.h>
#include <sys/stat.h>
/* XXH3_state_t is an incomplete type unless the state layout is exposed,
 * and that layout is only stable within one xxhash version: inline the
 * implementation rather than depend on libxxhash's private ABI. */
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "format.h"

#define LE16(x) htole16(x)
#define LE32(x) htole32(x)
#define LE64(x) htole64(x)
#define CPU16(x) le16toh(x)
#define CPU32(x) le32toh(x)
#define CPU64(x) le64toh(x)

static const uint8_t zero8[8];

uint64_t vmfsd_csum(const void *buf, size_t len, size_t csum_off)
{
	XXH3_state_t st;
	const uint8_t *p = buf;

	XXH3_64bits_reset(&st);
	XXH3_64bits_update(&st, p, csum_off);
	XXH3_64bits_update(&st, zero8, 8);
	XXH3_64bits_update(&st, p + csum_off + 8, len - csum_off - 8);
	return XXH3_64bits_digest(&st);
}

static void csum_set(void *buf, size_t len, size_t csum_off)
{
	uint64_t c = LE64(vmfsd_csum(buf, len, csum_off));

	memcpy((uint8_t *)buf + csum_off, &c, 8);
}

static int csum_ok(const void *buf, size_t len, size_t csum_off)
{
	uint64_t c;

	memcpy(&c, (const uint8_t *)buf + csum_off, 8);
	return CPU64(c) == vmfsd_csum(buf, len, csum_off);
}

static int is_pow2(uint64_t v)
{
	return v && !(v & (v - 1));
}

static uint64_t align_up(uint64_t v, uint64_t a)
{
	return (v + a - 1) / a * a;
}

/* ---------------- superblock ---------------- */

void vmfsd_uuid_format(const uint8_t u[16], char out[37])
{
	snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
		 u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12],
		 u[13], u[14], u[15]);
}

void vmfsd_sb_encode(const struct vmfsd_sb *sb, uint64_t blocknr, void *blk)
{
	struct vmfsd_disk_sb *d = blk;

	memset(d, 0, sizeof(*d));
	d->magic = LE64(VMFSD_SB_MAGIC);
	d->version = LE32(VMFSD_FORMAT_VERSION);
	d->sb_flags = LE32(sb->sb_flags);
	d->blocknr = LE64(blocknr);
	memcpy(d->uuid, sb->uuid, 16);
	/* Unterminated when 64 bytes long: d was zeroed, so copy what fits. */
	memcpy(d->label, sb->label, strnlen(sb->label, VMFSD_LABEL_MAX));
	d->feat_compat = LE64(sb->feat_compat);
	d->feat_ro_compat = LE64(sb->feat_ro_compat);
	d->feat_incompat = LE64(sb->feat_incompat);
	d->device_size = LE64(sb->device_size);
	d->mkfs_time = LE64(sb->mkfs_time);
	d->meta_block_size = LE32(VMFSD_META_BLOCK);
	d->sector_size = LE32(VMFSD_SECTOR);
	d->block_size = LE32(sb->block_size);
	d->sub_block_size = LE32(VMFSD_SUB_BLOCK_SIZE);
	d->max_hosts = LE32(sb->max_hosts);
	d->hb_interval_ms = LE32(sb->hb_interval_ms);
	d->hb_timeout_ms = LE32(sb->hb_timeout_ms);
	d->rc_bits = LE32(sb->rc_bits);
	d->hb_off = LE64(sb->hb_off);
	d->journal_off = LE64(sb->journal_off);
	d->journal_size = LE64(sb->journal_size);
	d->ibm_off = LE64(sb->ibm_off);
	d->ibm_count = LE32(sb->ibm_count);
	d->sbm_off = LE64(sb->sbm_off);
	d->sbm_count = LE32(sb->sbm_count);
	d->dbm_off = LE64(sb->dbm_off);
	d->dbm_count = LE32(sb->dbm_count);
	d->itable_off = LE64(sb->itable_off);
	d->inode_count = LE64(sb->inode_count);
	d->sub_off = LE64(sb->sub_off);
	d->sub_count = LE64(sb->sub_count);
	d->data_off = LE64(sb->data_off);
	d->block_count = LE64(sb->block_count);
	d->root_ino = LE64(sb->root_ino);
	d->backup_blocknr = LE64(sb->backup_blocknr);
	d->format_gen = LE64(sb->format_gen);
	csum_set(d, sizeof(*d), offsetof(struct vmfsd_disk_sb, csum));
}

int vmfsd_sb_decode(const void *blk, uint64_t blocknr, struct vmfsd_sb *sb)
{
	const struct vmfsd_disk_sb *d = blk;

	if (CPU64(d->magic) != VMFSD_SB_MAGIC)
		return -EUCLEAN;
	if (!csum_ok(d, sizeof(*d), offsetof(struct vmfsd_disk_sb, csum)))
		return -EBADMSG;
	if (CPU32(d->version) != VMFSD_FORMAT_VERSION || CPU64(d->blocknr) != blocknr)
		return -EUCLEAN;
	if (CPU32(d->meta_block_size) != VMFSD_META_BLOCK ||
	    CPU32(d->sector_size) != VMFSD_SECTOR ||
	    CPU32(d->sub_block_size) != VMFSD_SUB_BLOCK_SIZE)
		return -EUCLEAN;
	memset(sb, 0, sizeof(*sb));
	sb->version = CPU32(d->version);
	sb->sb_flags = CPU32(d->sb_flags);
	memcpy(sb->uuid, d->uuid, 16);
	memcpy(sb->label, d->label, VMFSD_LABEL_MAX);
	sb->label[VMFSD_LABEL_MAX] = 0;
	sb->feat_compat = CPU64(d->feat_compat);
	sb->feat_ro_compat = CPU64(d->feat_ro_compat);
	sb->feat_incompat = CPU64(d->feat_incompat);
	sb->device_size = CPU64(d->device_size);
	sb->mkfs_time = CPU64(d->mkfs_time);
	sb->block_size = CPU32(d->block_size);
	sb->max_hosts = CPU32(d->max_hosts);
	sb->hb_interval_ms = CPU32(d->hb_interval_ms);
	sb->hb_timeout_ms = CPU32(d->hb_timeout_ms);
	sb->rc_bits = CPU32(d->rc_bits);
	sb->hb_off = CPU64(d->hb_off);
	sb->journal_off = CPU64(d->journal_off);
	sb->journal_size = CPU64(d->journal_size);
	sb->ibm_off = CPU64(d->ibm_off);
	sb->ibm_count = CPU32(d->ibm_count);
	sb->sbm_off = CPU64(d->sbm_off);
	sb->sbm_count = CPU32(d->sbm_count);
	sb->dbm_off = CPU64(d->dbm_off);
	sb->dbm_count = CPU32(d->dbm_count);
	sb->itable_off = CPU64(d->itable_off);
	sb->inode_count = CPU64(d->inode_count);
	sb->sub_off = CPU64(d->sub_off);
	sb->sub_count = CPU64(d->sub_count);
	sb->data_off = CPU64(d->data_off);
	sb->block_count = CPU64(d->block_count);
	sb->root_ino = CPU64(d->root_ino);
	sb->backup_blocknr = CPU64(d->backup_blocknr);
	sb->format_gen = CPU64(d->format_gen);
	if (sb->feat_incompat & ~VMFSD_FEAT_INCOMPAT_SUPP)
		return -EOPNOTSUPP;
	/* The journal identity needs a generation; 0 is what a volume made
	 * before the feature has there. */
	if ((sb->feat_ro_compat & VMFSD_FEAT_RO_JOURNAL_ID) && !sb->format_gen)
		return -EUCLEAN;
	return vmfsd_sb_check_layout(sb);
}

static uint32_t clusters_for(uint64_t items)
{
	return (uint32_t)((items + VMFSD_RC_BITS - 1) / VMFSD_RC_BITS);
}

/* Every region must lie inside the device, in order, without overlap. */
int vmfsd_sb_check_layout(const struct vmfsd_sb *sb)
{
	uint64_t end;

	if (!is_pow2(sb->block_size) || sb->block_size < VMFSD_MIN_BLOCK_SIZE ||
	    sb->block_size > VMFSD_MAX_BLOCK_SIZE)
		return -EUCLEAN;
	if (!sb->max_hosts || sb->max_hosts > VMFSD_MAX_HOSTS)
		return -EUCLEAN;
	if (!sb->hb_interval_ms || sb->hb_timeout_ms < 2 * sb->hb_interval_ms)
		return -EUCLEAN;
	if (sb->rc_bits != VMFSD_RC_BITS)
		return -EUCLEAN;
	/* The upper bound keeps max_hosts * journal_size from wrapping. */
	if (sb->journal_size < VMFSD_REGION_ALIGN || sb->journal_size % VMFSD_META_BLOCK ||
	    sb->journal_size > (1ull << 40))
		return -EUCLEAN;
	if (sb->inode_count < 2 || sb->inode_count > (1ull << 40) ||
	    sb->sub_count < 2 || sb->sub_count > VMFSD_MAP_PBLK_MASK ||
	    sb->block_count < 2 || sb->block_count > VMFSD_MAP_PBLK_MASK)
		return -EUCLEAN;
	if (sb->ibm_count != clusters_for(sb->inode_count) ||
	    sb->sbm_count != clusters_for(sb->sub_count) ||
	    sb->dbm_count != clusters_for(sb->block_count))
		return -EUCLEAN;
	if (sb->root_ino != VMFSD_ROOT_INO)
		return -EUCLEAN;

	end = VMFSD_META_BLOCK;
#define REGION(off, len) do {                                            \
		if ((off) < end || (off) % VMFSD_META_BLOCK)              \
			return -EUCLEAN;                                  \
		end = (off) + (len);                                      \
		if (end < (off))                                          \
			return -EUCLEAN;                                  \
	} while (0)
	REGION(sb->hb_off, (uint64_t)sb->max_hosts * VMFSD_META_BLOCK);
	REGION(sb->journal_off, (uint64_t)sb->max_hosts * sb->journal_size);
	REGION(sb->ibm_off, (uint64_t)sb->ibm_count * VMFSD_META_BLOCK);
	REGION(sb->sbm_off, (uint64_t)sb->sbm_count * VMFSD_META_BLOCK);
	REGION(sb->dbm_off, (uint64_t)sb->dbm_count * VMFSD_META_BLOCK);
	REGION(sb->itable_off, sb->inode_count * VMFSD_META_BLOCK);
	REGION(sb->sub_off, sb->sub_count * VMFSD_SUB_BLOCK_SIZE);
	if (sb->data_off % sb->block_size)
		return -EUCLEAN;
	REGION(sb->data_off, sb->block_count * (uint64_t)sb->block_size);
#undef REGION
	/* Compare in block numbers first: a hostile backup_blocknr must not
	 * wrap the byte offset back inside the device. */
	if (sb->backup_blocknr >= sb->device_size / VMFSD_META_BLOCK ||
	    sb->backup_blocknr * VMFSD_META_BLOCK < end)
		return -EUCLEAN;
	return 0;
}

/* ---------------- lock record ---------------- */

void vmfsd_lock_encode(const struct vmfsd_lock *lk, uint64_t blocknr, void *sector)
{
	struct vmfsd_disk_lock *d = sector;
	unsigned i;

	memset(d, 0, sizeof(*d));
	d->magic = LE32(VMFSD_LOCK_MAGIC);
	d->version = LE16(VMFSD_FORMAT_VERSION);
	d->mode = LE16(lk->mode);
	d->blocknr = LE64(blocknr);
	d->owner_slot = LE32(lk->owner_slot);
	d->nholders = LE32(lk->nholders);
	d->owner_slot_gen = LE64(lk->owner_slot_gen);
	d->lock_gen = LE64(lk->lock_gen);
	memcpy(d->holders, lk->holders, sizeof(d->holders));
	for (i = 0; i < VMFSD_MAX_HOSTS; i++)
		if (lk->holders[i / 8] & (1u << (i % 8)))
			d->holder_gen8[i] = lk->holder_gen8[i];
	csum_set(d, sizeof(*d), offsetof(struct vmfsd_disk_lock, csum));
}

int vmfsd_lock_decode(const void *sector, uint64_t blocknr, struct vmfsd_lock *lk)
{
	const struct vmfsd_disk_lock *d = sector;
	uint32_t s, nbits = 0, owner = CPU32(d->owner_slot), n = CPU32(d->nholders);
	uint32_t owner_bit;

	if (CPU32(d->magic) != VMFSD_LOCK_MAGIC)
		return -EUCLEAN;
	if (!csum_ok(d, sizeof(*d), offsetof(struct vmfsd_disk_lock, csum)))
		return -EBADMSG;
	if (CPU16(d->version) != VMFSD_FORMAT_VERSION || CPU64(d->blocknr) != blocknr ||
	    CPU16(d->mode) > VMFSD_LOCK_MW || owner >= VMFSD_MAX_HOSTS || n > VMFSD_MAX_HOSTS)
		return -EUCLEAN;
	for (s = 0; s < VMFSD_MAX_HOSTS; s++)
		nbits += (d->holders[s / 8] >> (s % 8)) & 1u;
	owner_bit = (d->holders[owner / 8] >> (owner % 8)) & 1u;
	/* nholders counts the holder bitmap: a free lock has none; a held
	 * one has exactly its bits, or one more when the owner is left out
	 * of the bitmap (exclusive records of older writers: the owner is a
	 * holder whatever the bitmap says, lockmgr/lock.c). */
	if (CPU16(d->mode) == VMFSD_LOCK_FREE ? n || nbits
					      : n != nbits && (owner_bit || n != nbits + 1))
		return -EUCLEAN;
	lk->mode = CPU16(d->mode);
	lk->owner_slot = owner;
	lk->nholders = n;
	lk->owner_slot_gen = CPU64(d->owner_slot_gen);
	lk->lock_gen = CPU64(d->lock_gen);
	memcpy(lk->holders, d->holders, sizeof(lk->holders));
	/* Entries of slots that are not holders mean nothing (the encoder
	 * writes zero there): read as zero, so no caller can mistake one for
	 * a holder's generation. */
	for (s = 0; s < VMFSD_MAX_HOSTS; s++)
		lk->holder_gen8[s] = (d->holders[s / 8] >> (s % 8)) & 1u ? d->holder_gen8[s] : 0;
	return 0;
}

/* ---------------- resource cluster ---------------- */

#define RC_CSUM_OFF (offsetof(struct vmfsd_disk_rc, csum) - VMFSD_RC_HDR_OFF)

void vmfsd_rc_encode(const struct vmfsd_rc *rc, uint64_t blocknr, void *blk)
{
	struct vmfsd_disk_rc *d = blk;
	uint8_t *body = (uint8_t *)blk + VMFSD_RC_HDR_OFF;

	memset(body, 0, VMFSD_META_BLOCK - VMFSD_RC_HDR_OFF);
	d->magic = LE32(VMFSD_RC_MAGIC);
	d->version = LE16(VMFSD_FORMAT_VERSION);
	d->kind = LE16(rc->kind);
	d->blocknr = LE64(blocknr);
	d->index = LE32(rc->index);
	d->nitems = LE32(rc->nitems);
	d->first_item = LE64(rc->first_item);
	d->nfree = LE32(rc->nfree);
	memcpy(d->bitmap, rc->bitmap, sizeof(d->bitmap));
	csum_set(body, VMFSD_META_BLOCK - VMFSD_RC_HDR_OFF, RC_CSUM_OFF);
}

static uint32_t popcount_bits(const uint8_t *bm, uint32_t nbits)
{
	uint32_t n = 0, i;

	for (i = 0; i < nbits / 8; i++)
		n += (uint32_t)__builtin_popcount(bm[i]);
	for (i = nbits & ~7u; i < nbits; i++)
		n += (bm[i / 8] >> (i % 8)) & 1;
	return n;
}

int vmfsd_rc_decode(const void *blk, uint64_t blocknr, struct vmfsd_rc *rc)
{
	const struct vmfsd_disk_rc *d = blk;
	const uint8_t *body = (const uint8_t *)blk + VMFSD_RC_HDR_OFF;
	uint32_t i;

	if (CPU32(d->magic) != VMFSD_RC_MAGIC)
		return -EUCLEAN;
	if (!csum_ok(body, VMFSD_META_BLOCK - VMFSD_RC_HDR_OFF, RC_CSUM_OFF))
		return -EBADMSG;
	if (CPU16(d->version) != VMFSD_FORMAT_VERSION || CPU64(d->blocknr) != blocknr ||
	    CPU16(d->kind) < VMFSD_RC_INODE || CPU16(d->kind) > VMFSD_RC_BLOCK ||
	    CPU32(d->nitems) == 0 || CPU32(d->nitems) > VMFSD_RC_BITS ||
	    CPU64(d->first_item) != (uint64_t)CPU32(d->index) * VMFSD_RC_BITS)
		return -EUCLEAN;
	rc->kind = CPU16(d->kind);
	rc->index = CPU32(d->index);
	rc->nitems = CPU32(d->nitems);
	rc->first_item = CPU64(d->first_item);
	rc->nfree = CPU32(d->nfree);
	memcpy(rc->bitmap, d->bitmap, sizeof(rc->bitmap));
	/* Bits past nitems must be clear and the free count must agree. */
	for (i = rc->nitems; i < VMFSD_RC_BITS; i++)
		if (rc->bitmap[i / 8] & (1u << (i % 8)))
			return -EUCLEAN;
	if (rc->nfree != rc->nitems - popcount_bits(rc->bitmap, rc->nitems))
		return -EUCLEAN;
	return 0;
}

/* ---------------- inode ---------------- */

#define INODE_BODY_LEN (VMFSD_META_BLOCK - VMFSD_INODE_BODY_OFF)
#define INODE_CSUM_OFF (offsetof(struct vmfsd_disk_inode, csum) - VMFSD_INODE_BODY_OFF)

void vmfsd_inode_encode(const struct vmfsd_inode *in, uint64_t blocknr, void *blk)
{
	struct vmfsd_disk_inode *d = blk;
	uint8_t *body = (uint8_t *)blk + VMFSD_INODE_BODY_OFF;

	memset(body, 0, INODE_BODY_LEN);
	d->magic = LE32(VMFSD_INODE_MAGIC);
	d->version = LE16(VMFSD_FORMAT_VERSION);
	d->data_mode = in->data_mode;
	d->map_height = in->map_height;
	d->blocknr = LE64(blocknr);
	d->ino = LE64(in->ino);
	d->generation = LE64(in->generation);
	d->mode = LE32(in->mode);
	d->uid = LE32(in->uid);
	d->gid = LE32(in->gid);
	d->nlink = LE32(in->nlink);
	d->size = LE64(in->size);
	d->alloc_units = LE64(in->alloc_units);
	d->atime_sec = LE64((uint64_t)in->atime_sec);
	d->mtime_sec = LE64((uint64_t)in->mtime_sec);
	d->ctime_sec = LE64((uint64_t)in->ctime_sec);
	d->btime_sec = LE64((uint64_t)in->btime_sec);
	d->atime_nsec = LE32(in->atime_nsec);
	d->mtime_nsec = LE32(in->mtime_nsec);
	d->ctime_nsec = LE32(in->ctime_nsec);
	d->btime_nsec = LE32(in->btime_nsec);
	d->parent = LE64(in->parent);
	d->iflags = LE32(in->iflags);
	d->xattr_len = LE16(in->xattr_len);
	d->rdev = LE64(in->rdev);
	d->change_seq = LE64(in->change_seq);
	memcpy(d->xattr, in->xattr, VMFSD_XATTR_AREA);
	memcpy(d->map, in->map, VMFSD_MAP_AREA);
	csum_set(body, INODE_BODY_LEN, INODE_CSUM_OFF);
}

int vmfsd_inode_decode(const void *blk, uint64_t blocknr, struct vmfsd_inode *in)
{
	const struct vmfsd_disk_inode *d = blk;
	const uint8_t *body = (const uint8_t *)blk + VMFSD_INODE_BODY_OFF;

	if (CPU32(d->magic) != VMFSD_INODE_MAGIC)
		return -EUCLEAN;
	if (!csum_ok(body, INODE_BODY_LEN, INODE_CSUM_OFF))
		return -EBADMSG;
	if (CPU16(d->version) != VMFSD_FORMAT_VERSION || CPU64(d->blocknr) != blocknr ||
	    d->data_mode > VMFSD_DATA_BLOCK || d->map_height > VMFSD_MAP_MAX_HEIGHT ||
	    CPU16(d->xattr_len) > VMFSD_XATTR_AREA ||
	    CPU64(d->size) > (1ull << 62) ||
	    (d->data_mode == VMFSD_DATA_INLINE &&
	     (CPU64(d->size) > VMFSD_INLINE_MAX || d->map_height)) ||
	    (S_ISLNK(CPU32(d->mode)) && CPU64(d->size) > VMFSD_SYMLINK_MAX))
		return -EUCLEAN;
	in->ino = CPU64(d->ino);
	in->generation = CPU64(d->generation);
	in->data_mode = d->data_mode;
	in->map_height = d->map_height;
	in->mode = CPU32(d->mode);
	in->uid = CPU32(d->uid);
	in->gid = CPU32(d->gid);
	in->nlink = CPU32(d->nlink);
	in->size = CPU64(d->size);
	in->alloc_units = CPU64(d->alloc_units);
	in->atime_sec = (int64_t)CPU64(d->atime_sec);
	in->mtime_sec = (int64_t)CPU64(d->mtime_sec);
	in->ctime_sec = (int64_t)CPU64(d->ctime_sec);
	in->btime_sec = (int64_t)CPU64(d->btime_sec);
	in->atime_nsec = CPU32(d->atime_nsec);
	in->mtime_nsec = CPU32(d->mtime_nsec);
	in->ctime_nsec = CPU32(d->ctime_nsec);
	in->btime_nsec = CPU32(d->btime_nsec);
	in->parent = CPU64(d->parent);
	in->iflags = CPU32(d->iflags);
	in->xattr_len = CPU16(d->xattr_len);
	in->rdev = CPU64(d->rdev);
	in->change_seq = CPU64(d->change_seq);
	memcpy(in->xattr, d->xattr, VMFSD_XATTR_AREA);
	memcpy(in->map, d->map, VMFSD_MAP_AREA);
	return 0;
}

/* ---------------- block-map node ---------------- */

#define MAP_CSUM_OFF offsetof(struct vmfsd_disk_map_node, csum)

void vmfsd_map_node_init(void *node, unsigned level, uint64_t ino, uint64_t ino_gen,
			 uint64_t first)
{
	struct vmfsd_disk_map_node *d = node;

	memset(d, 0, sizeof(*d));
	d->level = LE16((uint16_t)level);
	d->ino = LE64(ino);
	d->ino_generation = LE64(ino_gen);
	d->first_lblk = LE64(first);
}

void vmfsd_map_node_finish(void *node, uint64_t blocknr)
{
	struct vmfsd_disk_map_node *d = node;

	d->magic = LE32(VMFSD_MAP_MAGIC);
	d->version = LE16(VMFSD_FORMAT_VERSION);
	d->blocknr = LE64(blocknr);
	csum_set(d, sizeof(*d), MAP_CSUM_OFF);
}

int vmfsd_map_node_verify(const void *node, uint64_t blocknr, uint64_t ino,
			  uint64_t ino_gen)
{
	const struct vmfsd_disk_map_node *d = node;

	if (CPU32(d->magic) != VMFSD_MAP_MAGIC)
		return -EUCLEAN;
	if (!csum_ok(d, sizeof(*d), MAP_CSUM_OFF))
		return -EBADMSG;
	if (CPU16(d->version) != VMFSD_FORMAT_VERSION || CPU64(d->blocknr) != blocknr ||
	    CPU64(d->ino) != ino || CPU64(d->ino_generation) != ino_gen ||
	    CPU16(d->level) >= VMFSD_MAP_MAX_HEIGHT)
		return -EUCLEAN;
	return 0;
}

/* ---------------- directory block ---------------- */

#define DIR_CSUM_OFF offsetof(struct vmfsd_disk_dir_hdr, csum)

void vmfsd_dir_block_finish(void *blk, uint64_t blocknr)
{
	struct vmfsd_disk_dir_hdr *h = blk;

	h->magic = LE32(VMFSD_DIR_MAGIC);
	h->version = LE16(VMFSD_FORMAT_VERSION);
	h->blocknr = LE64(blocknr);
	csum_set(blk, VMFSD_SUB_BLOCK_SIZE, DIR_CSUM_OFF);
}

int vmfsd_dir_block_verify(const void *blk, uint64_t blocknr, uint64_t dir_ino,
			   uint64_t dir_gen)
{
	const struct vmfsd_disk_dir_hdr *h = blk;
	const uint8_t *p = (const uint8_t *)blk + VMFSD_DIR_HDR;
	unsigned used, off = 0, n = 0;

	if (CPU32(h->magic) != VMFSD_DIR_MAGIC)
		return -EUCLEAN;
	if (!csum_ok(blk, VMFSD_SUB_BLOCK_SIZE, DIR_CSUM_OFF))
		return -EBADMSG;
	used = CPU16(h->used);
	if (CPU16(h->version) != VMFSD_FORMAT_VERSION || CPU64(h->blocknr) != blocknr ||
	    CPU64(h->dir_ino) != dir_ino || CPU64(h->dir_generation) != dir_gen ||
	    used > VMFSD_DIR_SPACE)
		return -EUCLEAN;
	/* Walk the entries: each must fit, have a name and a valid inode. */
	while (off < used) {
		const struct vmfsd_disk_dirent *e = (const void *)(p + off);
		unsigned nl;

		if (used - off < VMFSD_DIRENT_FIXED)
			return -EUCLEAN;
		nl = e->name_len;
		if (!nl || vmfsd_dirent_size(nl) > used - off ||
		    CPU64(e->ino) < VMFSD_ROOT_INO ||
		    memchr(e->name, '/', nl) || memchr(e->name, 0, nl))
			return -EUCLEAN;
		off += vmfsd_dirent_size(nl);
		n++;
	}
	if (n != CPU16(h->nentries))
		return -EUCLEAN;
	return 0;
}

void vmfsd_dir_block_init(void *blk, uint64_t dir_ino, uint64_t dir_gen)
{
	struct vmfsd_disk_dir_hdr *h = blk;

	memset(blk, 0, VMFSD_SUB_BLOCK_SIZE);
	h->dir_ino = LE64(dir_ino);
	h->dir_generation = LE64(dir_gen);
}

unsigned vmfsd_dir_block_used(const void *blk)
{
	return CPU16(((const struct vmfsd_disk_dir_hdr *)blk)->used);
}

int vmfsd_dir_block_fits(const void *blk, unsigned name_len)
{
	unsigned used = vmfsd_dir_block_used(blk);

	/* A `used` past the block (unverified image) has no room at all. */
	return used <= VMFSD_DIR_SPACE && VMFSD_DIR_SPACE - used >= vmfsd_dirent_size(name_len);
}

unsigned vmfsd_dirent_get(const void *blk, unsigned off, struct vmfsd_dirent *de)
{
	const struct vmfsd_disk_dirent *e;
	unsigned used = vmfsd_dir_block_used(blk), sz;

	if (used > VMFSD_DIR_SPACE || off >= used || used - off < VMFSD_DIRENT_FIXED)
		return 0;
	e = (const void *)((const uint8_t *)blk + VMFSD_DIR_HDR + off);
	sz = vmfsd_dirent_size(e->name_len);
	if (sz > used - off)
		return 0;
	de->ino = CPU64(e->ino);
	de->type = e->d_type;
	de->name_len = e->name_len;
	de->name = e->name;
	return sz;
}

static void dir_hdr_adjust(struct vmfsd_disk_dir_hdr *h, int bytes, int entries)
{
	h->used = LE16((uint16_t)(CPU16(h->used) + bytes));
	h->nentries = LE16((uint16_t)(CPU16(h->nentries) + entries));
}

int vmfsd_dirent_add(void *blk, uint64_t ino, uint8_t type, const char *name,
		     unsigned name_len)
{
	unsigned used = vmfsd_dir_block_used(blk), sz = vmfsd_dirent_size(name_len);
	struct vmfsd_disk_dirent *e;

	if (!vmfsd_dir_block_fits(blk, name_len))
		return -ENOSPC;
	e = vmfsd_dirent_at(blk, used);
	memset(e, 0, sz);
	e->ino = LE64(ino);
	e->name_len = (uint8_t)name_len;
	e->d_type = type;
	memcpy(e->name, name, name_len);
	dir_hdr_adjust(blk, (int)sz, 1);
	return 0;
}

int vmfsd_dirent_find(const void *blk, const char *name, unsigned name_len)
{
	struct vmfsd_dirent de;
	unsigned off, sz;

	for (off = 0; (sz = vmfsd_dirent_get(blk, off, &de)); off += sz)
		if (de.name_len == name_len && !memcmp(de.name, name, name_len))
			return (int)off;
	return -ENOENT;
}

void vmfsd_dirent_remove(void *blk, unsigned off)
{
	uint8_t *p = (uint8_t *)blk + VMFSD_DIR_HDR;
	unsigned used = vmfsd_dir_block_used(blk);
	unsigned sz = vmfsd_dirent_size(vmfsd_dirent_at(blk, off)->name_len);

	memmove(p + off, p + off + sz, used - off - sz);
	memset(p + used - sz, 0, sz);
	dir_hdr_adjust(blk, -(int)sz, -1);
}

void vmfsd_dirent_update(void *blk, unsigned off, uint64_t ino, uint8_t type)
{
	struct vmfsd_disk_dirent *e = vmfsd_dirent_at(blk, off);

	e->ino = LE64(ino);
	e->d_type = type;
}

/* ---------------- heartbeat slot ---------------- */

#define HB_CSUM_OFF offsetof(struct vmfsd_disk_hb, csum)

void vmfsd_hb_encode(const struct vmfsd_hb *hb, uint64_t blocknr, void *blk)
{
	struct vmfsd_disk_hb *d = blk;

	memset(d, 0, sizeof(*d));
	d->magic = LE32(VMFSD_HB_MAGIC);
	d->version = LE16(VMFSD_FORMAT_VERSION);
	d->state = LE16(hb->state);
	d->blocknr = LE64(blocknr);
	memcpy(d->host_uuid, hb->host_uuid, 16);
	memcpy(d->host_name, hb->host_name, strnlen(hb->host_name, VMFSD_HOSTNAME_MAX));
	d->generation = LE64(hb->generation);
	d->counter = LE64(hb->counter);
	d->journal_off = LE64(hb->journal_off);
	d->slot = LE32(hb->slot);
	d->pid = LE32(hb->pid);
	d->replayer_slot = LE32(hb->replayer_slot);
	d->flags = LE32(hb->flags);
	d->replayer_gen = LE64(hb->replayer_gen);
	d->wall_time_ms = LE64(hb->wall_time_ms);
	csum_set(d, VMFSD_SECTOR, HB_CSUM_OFF);
}

int vmfsd_hb_decode(const void *blk, uint64_t blocknr, struct vmfsd_hb *hb)
{
	const struct vmfsd_disk_hb *d = blk;

	if (CPU32(d->magic) != VMFSD_HB_MAGIC)
		return -EUCLEAN;
	if (!csum_ok(d, VMFSD_SECTOR, HB_CSUM_OFF))
		return -EBADMSG;
	if (CPU16(d->version) != VMFSD_FORMAT_VERSION || CPU64(d->blocknr) != blocknr ||
	    CPU16(d->state) > VMFSD_HB_REPLAYING || CPU32(d->slot) >= VMFSD_MAX_HOSTS)
		return -EUCLEAN;
	hb->state = CPU16(d->state);
	memcpy(hb->host_uuid, d->host_uuid, 16);
	memcpy(hb->host_name, d->host_name, VMFSD_HOSTNAME_MAX);
	hb->host_name[VMFSD_HOSTNAME_MAX] = 0;
	hb->generation = CPU64(d->generation);
	hb->counter = CPU64(d->counter);
	hb->journal_off = CPU64(d->journal_off);
	hb->slot = CPU32(d->slot);
	hb->pid = CPU32(d->pid);
	hb->replayer_slot = CPU32(d->replayer_slot);
	hb->replayer_gen = CPU64(d->replayer_gen);
	hb->wall_time_ms = CPU64(d->wall_time_ms);
	hb->flags = CPU32(d->flags);
	return 0;
}

/* ---------------- journal ---------------- */

#define JH_CSUM_OFF offsetof(struct vmfsd_disk_jhdr, csum)
#define JD_CSUM_OFF offsetof(struct vmfsd_disk_jdesc, csum)

void vmfsd_jhdr_encode(const struct vmfsd_jhdr *jh, uint64_t blocknr, void *blk)
{
	struct vmfsd_disk_jhdr *d = blk;

	memset(d, 0, sizeof(*d));
	d->magic = LE32(VMFSD_JH_MAGIC);
	d->version = LE16(VMFSD_FORMAT_VERSION);
	d->blocknr = LE64(blocknr);
	d->slot = LE32(jh->slot);
	d->nblocks = LE32(jh->nblocks);
	d->tail_seq = LE64(jh->tail_seq);
	d->tail_blk = LE32(jh->tail_blk);
	d->clean = LE64(jh->clean);
	memcpy(d->vol_uuid, jh->id.vol_uuid, 16);
	d->format_gen = LE64(jh->id.format_gen);
	/* Only the first sector counts: a sector write is atomic, a 4 KiB one
	 * may tear, and a torn header must never make a volume unmountable. */
	csum_set(d, VMFSD_SECTOR, JH_CSUM_OFF);
}

int vmfsd_jhdr_decode(const void *blk, uint64_t blocknr, struct vmfsd_jhdr *jh)
{
	const struct vmfsd_disk_jhdr *d = blk;

	if (vmfsd_all_zero(blk, VMFSD_META_BLOCK)) {
		memset(jh, 0, sizeof(*jh));
		jh->tail_seq = 1;
		jh->tail_blk = 1;
		jh->clean = 1;
		return 0;
	}
	if (CPU32(d->magic) != VMFSD_JH_MAGIC)
		return -EUCLEAN;
	if (!csum_ok(d, VMFSD_SECTOR, JH_CSUM_OFF))
		return -EBADMSG;
	if (CPU16(d->version) != VMFSD_FORMAT_VERSION || CPU64(d->blocknr) != blocknr ||
	    CPU32(d->tail_blk) < 1 || CPU32(d->tail_blk) >= CPU32(d->nblocks) ||
	    CPU32(d->slot) >= VMFSD_MAX_HOSTS)
		return -EUCLEAN;
	jh->slot = CPU32(d->slot);
	jh->nblocks = CPU32(d->nblocks);
	jh->tail_seq = CPU64(d->tail_seq);
	jh->tail_blk = CPU32(d->tail_blk);
	jh->clean = CPU64(d->clean);
	memcpy(jh->id.vol_uuid, d->vol_uuid, 16);
	jh->id.format_gen = CPU64(d->format_gen);
	return 0;
}

void vmfsd_journal_id_of(const struct vmfsd_sb *sb, struct vmfsd_journal_id *id)
{
	memset(id, 0, sizeof(*id));
	if (!(sb->feat_ro_compat & VMFSD_FEAT_RO_JOURNAL_ID))
		return;         /* journals of such a volume carry zeros there */
	memcpy(id->vol_uuid, sb->uuid, 16);
	id->format_gen = sb->format_gen;
}

#define ORPH_CSUM_OFF offsetof(struct vmfsd_disk_orphans, csum)

void vmfsd_orphans_encode(const uint64_t *ino, uint32_t count, uint64_t blocknr, void *blk)
{
	struct vmfsd_disk_orphans *d = (void *)((uint8_t *)blk + VMFSD_SECTOR);
	uint32_t i;

	memset(d, 0, sizeof(*d));
	d->magic = LE32(VMFSD_ORPHAN_MAGIC);
	d->count = LE32(count);
	d->blocknr = LE64(blocknr);
	for (i = 0; i < count && i < VMFSD_ORPHAN_MAX; i++)
		d->ino[i] = LE64(ino[i]);
	csum_set(d, sizeof(*d), ORPH_CSUM_OFF);
}

int vmfsd_orphans_decode(const void *blk, uint64_t blocknr, uint64_t *ino, uint32_t *count)
{
	const struct vmfsd_disk_orphans *d = (const void *)((const uint8_t *)blk + VMFSD_SECTOR);
	uint32_t i;

	*count = 0;
	if (vmfsd_all_zero(d, sizeof(*d)))
		return 0;       /* never written: no orphans */
	if (CPU32(d->magic) != VMFSD_ORPHAN_MAGIC)
		return -EUCLEAN;
	if (!csum_ok(d, sizeof(*d), ORPH_CSUM_OFF))
		return -EBADMSG;
	if (CPU64(d->blocknr) != blocknr || CPU32(d->count) > VMFSD_ORPHAN_MAX)
		return -EUCLEAN;
	*count = CPU32(d->count);
	for (i = 0; i < *count; i++)
		ino[i] = CPU64(d->ino[i]);
	return 0;
}

void vmfsd_jdesc_finish(void *blk, uint64_t blocknr, const struct vmfsd_journal_id *id)
{
	struct vmfsd_disk_jdesc *d = blk;

	d->magic = LE32(VMFSD_JDESC_MAGIC);
	d->version = LE16(VMFSD_FORMAT_VERSION);
	d->blocknr = LE64(blocknr);
	memcpy(d->vol_uuid, id->vol_uuid, 16);
	d->format_gen = LE64(id->format_gen);
	csum_set(d, sizeof(*d), JD_CSUM_OFF);
}

int vmfsd_jdesc_verify(const void *blk, uint64_t blocknr, const struct vmfsd_journal_id *id)
{
	const struct vmfsd_disk_jdesc *d = blk;

	if (CPU32(d->magic) != VMFSD_JDESC_MAGIC)
		return -EUCLEAN;
	if (!csum_ok(d, sizeof(*d), JD_CSUM_OFF))
		return -EBADMSG;
	if (CPU16(d->version) != VMFSD_FORMAT_VERSION || CPU64(d->blocknr) != blocknr ||
	    !CPU32(d->nblocks) || CPU32(d->nblocks) > VMFSD_JDESC_MAX)
		return -EUCLEAN;
	if (memcmp(d->vol_uuid, id->vol_uuid, 16) || CPU64(d->format_gen) != id->format_gen)
		return -ESTALE;
	return 0;
}

/* ---------------- layout ---------------- */

static uint64_t clamp64(uint64_t v, uint64_t lo, uint64_t hi)
{
	return v < lo ? lo : v > hi ? hi : v;
}

int vmfsd_layout_compute(const struct vmfsd_mkfs_params *p, struct vmfsd_sb *sb)
{
	uint64_t off, dev = p->device_size & ~(uint64_t)(VMFSD_META_BLOCK - 1);
	uint64_t data_end, nblocks;

	memset(sb, 0, sizeof(*sb));
	sb->block_size = p->block_size ? p->block_size : VMFSD_DEF_BLOCK_SIZE;
	sb->max_hosts = p->max_hosts ? p->max_hosts : VMFSD_DEF_MAX_HOSTS;
	sb->hb_interval_ms = p->hb_interval_ms ? p->hb_interval_ms : VMFSD_DEF_HB_INTERVAL_MS;
	sb->hb_timeout_ms = p->hb_timeout_ms ? p->hb_timeout_ms : VMFSD_DEF_HB_TIMEOUT_MS;
	if (!is_pow2(sb->block_size) || sb->block_size < VMFSD_MIN_BLOCK_SIZE ||
	    sb->block_size > VMFSD_MAX_BLOCK_SIZE || sb->max_hosts > VMFSD_MAX_HOSTS ||
	    sb->hb_timeout_ms < 2 * sb->hb_interval_ms)
		return -EINVAL;
	if (p->label && strlen(p->label) > VMFSD_LABEL_MAX)
		return -EINVAL;

	sb->version = VMFSD_FORMAT_VERSION;
	if (p->uuid)
		memcpy(sb->uuid, p->uuid, 16);
	if (p->label)
		strcpy(sb->label, p->label);
	sb->device_size = p->device_size;
	sb->mkfs_time = p->now;
	sb->feat_ro_compat = VMFSD_FEAT_RO_JOURNAL_ID |
			     (p->pr_fence ? VMFSD_FEAT_RO_PR_FENCE : 0);
	sb->format_gen = p->format_gen ? p->format_gen : 1;
	sb->rc_bits = VMFSD_RC_BITS;
	sb->root_ino = VMFSD_ROOT_INO;

	/* Journal: 1/256 of the volume shared by all hosts, 1..64 MiB each. */
	sb->journal_size = p->journal_size ? p->journal_size :
		clamp64(dev / 256 / sb->max_hosts, 1ull << 20, 64ull << 20);
	sb->journal_size = align_up(sb->journal_size, VMFSD_REGION_ALIGN);
	/* Inodes: one per 512 KiB of volume, 16 Ki .. 4 Mi (a VM needs ~5). */
	sb->inode_count = p->inode_count ? p->inode_count :
		clamp64(dev / (512u << 10), 16384, 4u << 20);
	/* Sub-blocks (small files, directories, map nodes): 1/256 of the
	 * volume, up to 16 GiB.  Small on purpose: this space cannot hold
	 * VM disks, and small files overflow into file blocks when it runs
	 * low (docs/format.md §3, "Why the sub-block pool is small").  But
	 * at least two resource clusters (about 252 MiB) where the volume is
	 * 32 times that: with one cluster, every host's directory and map
	 * allocations queue for the same lock (three hosts writing at once
	 * on an 8 GiB volume got ENOSPC); never more than 1/16. */
	if (p->sub_size) {
		sb->sub_count = p->sub_size / VMFSD_SUB_BLOCK_SIZE;
	} else {
		uint64_t two = 2ull * VMFSD_RC_BITS * VMFSD_SUB_BLOCK_SIZE;
		uint64_t want = dev / 256 > two ? dev / 256 : two;

		sb->sub_count = clamp64(want, 1u << 20, dev / 16 > (1u << 20) ? dev / 16 :
					(1u << 20));
		sb->sub_count = (sb->sub_count > (16ull << 30) ? 16ull << 30 : sb->sub_count) /
				VMFSD_SUB_BLOCK_SIZE;
	}
	if (sb->sub_count > VMFSD_MAP_PBLK_MASK)
		sb->sub_count = VMFSD_MAP_PBLK_MASK;

	off = VMFSD_REGION_ALIGN;
	sb->hb_off = off;
	off = align_up(off + (uint64_t)sb->max_hosts * VMFSD_META_BLOCK, VMFSD_REGION_ALIGN);
	sb->journal_off = off;
	off += (uint64_t)sb->max_hosts * sb->journal_size;
	sb->ibm_off = off;
	sb->ibm_count = clusters_for(sb->inode_count);
	off += (uint64_t)sb->ibm_count * VMFSD_META_BLOCK;
	sb->sbm_off = off;
	sb->sbm_count = clusters_for(sb->sub_count);
	off += (uint64_t)sb->sbm_count * VMFSD_META_BLOCK;
	sb->dbm_off = off;
	/* The block count depends on the space left; size its bitmap for the
	 * upper bound (everything after the bitmaps), then trim. */
	sb->dbm_count = clusters_for(dev / sb->block_size + 1);
	off += (uint64_t)sb->dbm_count * VMFSD_META_BLOCK;
	off = align_up(off, VMFSD_REGION_ALIGN);
	sb->itable_off = off;
	off += sb->inode_count * VMFSD_META_BLOCK;
	off = align_up(off, VMFSD_REGION_ALIGN);
	sb->sub_off = off;
	off += sb->sub_count * VMFSD_SUB_BLOCK_SIZE;
	sb->data_off = align_up(off, sb->block_size);

	/* dev < 4 KiB would wrap the backup block number below. */
	if (dev < VMFSD_META_BLOCK)
		return -ENOSPC;
	sb->backup_blocknr = dev / VMFSD_META_BLOCK - 1;
	data_end = sb->backup_blocknr * VMFSD_META_BLOCK;
	if (data_end <= sb->data_off)
		return -ENOSPC;
	nblocks = (data_end - sb->data_off) / sb->block_size;
	if (nblocks < 16)
		return -ENOSPC;
	if (nblocks > VMFSD_MAP_PBLK_MASK)
		return -EFBIG;
	sb->block_count = nblocks;
	sb->dbm_count = clusters_for(nblocks);
	return vmfsd_sb_check_layout(sb);
}
