// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Write-ahead metadata journal: transaction writing and replay.  See
 * journal.h for the protocol and why one header write per transaction keeps
 * replay from ever re-applying an image over a block that has since been
 * freed and reused for file data.
 */
#include <errno.h>
#include <stdlib.h>
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "journal.h"

struct journal {
	struct bdev *bd;
	struct vmfsd_journal_id id;     /* written into every header and descriptor */
	uint64_t area_off;
	uint32_t nblocks;       /* area size in meta blocks */
	uint32_t slot;
	uint32_t head;          /* next free block (>= 1) */
	uint64_t seq;           /* sequence of the next transaction */
	uint8_t *buf;           /* descriptor + images staging, aligned */
	uint8_t *hbuf;          /* the header block journal_write_staged writes */
	uint32_t staged;        /* images in BUF not yet written (journal_stage) */
};

uint64_t journal_area_off(const struct vmfsd_sb *sb, uint32_t slot)
{
	return sb->journal_off + (uint64_t)slot * sb->journal_size;
}

static int write_header_len(struct bdev *bd, uint64_t area_off, const struct vmfsd_jhdr *jh,
			    size_t len)
{
	uint8_t *blk = bdev_alloc(VMFSD_META_BLOCK);
	int r;

	if (!blk)
		return -ENOMEM;
	vmfsd_jhdr_encode(jh, area_off / VMFSD_META_BLOCK, blk);
	/* Normally only the header sector (LEN 512): the rest of the block is
	 * the orphan list, which changes through journaled images
	 * (VMFSD_JENTRY_KEEP_LOCK). */
	r = bdev_pwrite(bd, blk, len, area_off);
	bdev_free(blk);
	return r;
}

static int write_header(struct bdev *bd, uint64_t area_off, const struct vmfsd_jhdr *jh)
{
	return write_header_len(bd, area_off, jh, VMFSD_SECTOR);
}

/* Reads and checks the transaction at block POS with sequence SEQ into BUF
 * (room for a descriptor and VMFSD_JDESC_MAX images).  Returns its block
 * count, 0 if there is no complete transaction of this format of the
 * volume (ID) there, or an I/O error.  A descriptor of an earlier format
 * can sit right after our last transaction with the very sequence number
 * we expect (mkfs zeroes only the first MiB of the area): only the
 * identity tells it apart. */
static int read_tx(struct bdev *bd, const struct vmfsd_journal_id *id, uint64_t area_off,
		   uint32_t nblocks, uint32_t pos, uint64_t seq, uint8_t *buf)
{
	const struct vmfsd_disk_jdesc *d = (const void *)buf;
	uint64_t off = area_off + (uint64_t)pos * VMFSD_META_BLOCK;
	uint32_t n, i;
	int r;

	if (pos < 1 || pos >= nblocks)
		return 0;
	r = bdev_pread(bd, buf, VMFSD_META_BLOCK, off);
	if (r)
		return r;
	if (vmfsd_jdesc_verify(buf, off / VMFSD_META_BLOCK, id) || le64toh(d->seq) != seq)
		return 0;
	n = le32toh(d->nblocks);
	if (pos + 1 + n > nblocks)
		return 0;
	r = bdev_pread(bd, buf + VMFSD_META_BLOCK, (size_t)n * VMFSD_META_BLOCK,
		       off + VMFSD_META_BLOCK);
	if (r)
		return r;
	for (i = 0; i < n; i++) {
		const uint8_t *img = buf + (size_t)(i + 1) * VMFSD_META_BLOCK;
		uint64_t t = le64toh(d->e[i].target) & ~VMFSD_JENTRY_KEEP_LOCK;

		/* A torn write leaves an image that does not match. */
		if (XXH3_64bits(img, VMFSD_META_BLOCK) != le64toh(d->e[i].csum) ||
		    t % VMFSD_META_BLOCK || t + VMFSD_META_BLOCK > bdev_size(bd))
			return 0;
	}
	return (int)n;
}

int journal_write_homes(struct bdev *bd, const struct vmfsd_sb *sb,
			const struct journal_block *b, uint32_t n)
{
	struct bdev_vec *v = malloc((n ? n : 1) * sizeof(*v));
	uint64_t itable_end = sb->itable_off + sb->inode_count * VMFSD_META_BLOCK;
	uint32_t i, first = 0, last = n;
	int r;

	if (!v)
		return -ENOMEM;
	/* Inodes at the back: [first, n) after everything else is written. */
	for (i = 0; i < n; i++) {
		uint64_t off = b[i].target & ~VMFSD_JENTRY_KEEP_LOCK;
		size_t skip = b[i].target & VMFSD_JENTRY_KEEP_LOCK ? VMFSD_SECTOR : 0;
		struct bdev_vec *d = off >= sb->itable_off && off < itable_end ? &v[--last]
									       : &v[first++];

		d->buf = (uint8_t *)b[i].img + skip;
		d->len = VMFSD_META_BLOCK - skip;
		d->off = off + skip;
	}
	r = first ? bdev_rw_many(bd, 1, v, first) : 0;
	if (!r && first < n)
		r = bdev_rw_many(bd, 1, v + first, n - first);
	free(v);
	return r;
}

/* Decodes the header at AREA_OFF from BLK.  A sound header of another
 * format of the volume (id differs and it is not all zero) describes a log
 * that is not ours: it reads as an empty, clean journal, *FOREIGN set. */
static int header_decode(const void *blk, uint64_t area_off, const struct vmfsd_journal_id *id,
			 struct vmfsd_jhdr *jh, int *foreign)
{
	int r = vmfsd_jhdr_decode(blk, area_off / VMFSD_META_BLOCK, jh);

	*foreign = 0;
	if (r || vmfsd_all_zero(blk, VMFSD_META_BLOCK) || vmfsd_journal_id_eq(&jh->id, id))
		return r;
	*foreign = 1;
	jh->tail_seq = 1;
	jh->tail_blk = 1;
	jh->clean = 1;
	jh->nblocks = 0;
	return 0;
}

int journal_replay(struct bdev *bd, const struct vmfsd_sb *sb, uint32_t slot,
		   struct journal_replay_info *info)
{
	uint64_t area_off = journal_area_off(sb, slot);
	uint32_t nblocks = (uint32_t)(sb->journal_size / VMFSD_META_BLOCK), pos;
	struct journal_block jb[VMFSD_JDESC_MAX];
	struct vmfsd_journal_id id;
	struct vmfsd_jhdr jh;
	uint8_t *buf;
	uint64_t seq;
	int r;

	memset(info, 0, sizeof(*info));
	vmfsd_journal_id_of(sb, &id);
	if (nblocks < 2 + 1)
		return -EINVAL;
	buf = bdev_alloc((size_t)(VMFSD_JDESC_MAX + 1) * VMFSD_META_BLOCK);
	if (!buf)
		return -ENOMEM;
	r = bdev_pread(bd, buf, VMFSD_META_BLOCK, area_off);
	if (!r)
		r = header_decode(buf, area_off, &id, &jh, &info->foreign);
	if (r)
		goto out;
	if (jh.nblocks && jh.nblocks != nblocks) {
		r = -EUCLEAN;
		goto out;
	}
	info->was_clean = jh.clean == 1;
	pos = jh.tail_blk;
	seq = jh.tail_seq;
	while (!jh.clean) {
		struct vmfsd_disk_jdesc *d = (void *)buf;
		uint32_t i;
		int n;

		n = read_tx(bd, &id, area_off, nblocks, pos, seq, buf);
		if (n == 0 && pos != 1) {
			/* The writer wraps to block 1 when a transaction does not fit. */
			pos = 1;
			n = read_tx(bd, &id, area_off, nblocks, pos, seq, buf);
		}
		if (n < 0) {
			r = n;
			goto out;
		}
		if (n == 0)
			break;
		for (i = 0; i < (uint32_t)n; i++) {
			jb[i].target = le64toh(d->e[i].target);
			jb[i].img = buf + (size_t)(i + 1) * VMFSD_META_BLOCK;
		}
		r = journal_write_homes(bd, sb, jb, (uint32_t)n);
		if (r)
			goto out;
		info->transactions++;
		info->blocks += (uint32_t)n;
		pos += 1 + (uint32_t)n;
		seq++;
	}
	r = bdev_flush(bd);
	if (r)
		goto out;
	/* Empty and clean; the next transaction continues the sequence. */
	jh.slot = slot;
	jh.nblocks = nblocks;
	jh.tail_seq = seq;
	jh.tail_blk = pos < nblocks ? pos : 1;
	jh.clean = 1;
	jh.id = id;
	/* A header of another format comes with that format's orphan list,
	 * naming inodes of that volume: the whole block goes, the list empty
	 * (vmfsd_jhdr_encode zeroes it). */
	r = write_header_len(bd, area_off, &jh, info->foreign ? VMFSD_META_BLOCK : VMFSD_SECTOR);
	if (!r)
		r = bdev_flush(bd);
	info->next_seq = seq;
out:
	bdev_free(buf);
	return r;
}

int journal_is_clean(struct bdev *bd, const struct vmfsd_sb *sb, uint32_t slot)
{
	uint64_t area_off = journal_area_off(sb, slot);
	uint8_t *blk = bdev_alloc(VMFSD_META_BLOCK);
	struct vmfsd_journal_id id;
	struct vmfsd_jhdr jh;
	int r, foreign;

	if (!blk)
		return -ENOMEM;
	vmfsd_journal_id_of(sb, &id);
	r = bdev_pread(bd, blk, VMFSD_META_BLOCK, area_off);
	if (!r)
		r = header_decode(blk, area_off, &id, &jh, &foreign);
	if (!r && jh.clean != 1)
		r = 1;
	bdev_free(blk);
	return r;
}

int journal_open(struct bdev *bd, const struct vmfsd_sb *sb, uint32_t slot, uint64_t next_seq,
		 struct journal **out)
{
	struct journal *j = calloc(1, sizeof(*j));

	if (!j)
		return -ENOMEM;
	j->bd = bd;
	vmfsd_journal_id_of(sb, &j->id);
	j->area_off = journal_area_off(sb, slot);
	j->nblocks = (uint32_t)(sb->journal_size / VMFSD_META_BLOCK);
	j->slot = slot;
	j->head = 1;
	j->seq = next_seq ? next_seq : 1;
	j->buf = bdev_alloc((size_t)(VMFSD_JDESC_MAX + 1) * VMFSD_META_BLOCK);
	j->hbuf = bdev_alloc(VMFSD_META_BLOCK);
	if (!j->buf || !j->hbuf) {
		journal_close(j);
		return -ENOMEM;
	}
	*out = j;
	return 0;
}

void journal_close(struct journal *j)
{
	if (!j)
		return;
	bdev_free(j->buf);
	bdev_free(j->hbuf);
	free(j);
}

uint32_t journal_max_blocks(const struct journal *j)
{
	uint32_t room = j->nblocks - 2;

	return room < VMFSD_JDESC_MAX ? room : VMFSD_JDESC_MAX;
}

int journal_stage(struct journal *j, struct journal_block *b, uint32_t n)
{
	struct vmfsd_disk_jdesc *d = (void *)j->buf;
	uint32_t i;

	if (n > journal_max_blocks(j))
		return -E2BIG;
	j->staged = 0;
	if (!n)
		return 0;
	if (j->head + 1 + n > j->nblocks)
		j->head = 1;
	memset(d, 0, sizeof(*d));
	d->seq = htole64(j->seq);
	d->nblocks = htole32(n);
	d->slot = htole32(j->slot);
	for (i = 0; i < n; i++) {
		uint8_t *img = j->buf + (size_t)(i + 1) * VMFSD_META_BLOCK;

		memcpy(img, b[i].img, VMFSD_META_BLOCK);
		d->e[i].target = htole64(b[i].target);
		d->e[i].csum = htole64(XXH3_64bits(img, VMFSD_META_BLOCK));
		b[i].img = img;
	}
	j->staged = n;
	vmfsd_jdesc_finish(d, (j->area_off + (uint64_t)j->head * VMFSD_META_BLOCK) / VMFSD_META_BLOCK,
			   &j->id);
	return 0;
}

int journal_write_staged(struct journal *j)
{
	uint64_t off = j->area_off + (uint64_t)j->head * VMFSD_META_BLOCK;
	uint32_t n = j->staged;
	struct vmfsd_jhdr jh;
	int r;

	if (!n)
		return 0;
	/* Ordered mode: the data this transaction exposes, and the previous
	 * transaction's in-place writes, must be durable before it is. */
	r = bdev_flush(j->bd);
	if (r)
		return r;
	jh = (struct vmfsd_jhdr){ .slot = j->slot, .nblocks = j->nblocks, .tail_seq = j->seq,
				  .tail_blk = j->head, .clean = 0, .id = j->id };
	vmfsd_jhdr_encode(&jh, j->area_off / VMFSD_META_BLOCK, j->hbuf);
	/* The header and the transaction in one batch: the flush below makes
	 * them durable together, and before it a crash may keep either, both
	 * or neither, whatever order they were sent in.  The header alone
	 * names a transaction that does not verify (replay ends there: what
	 * it replaced is in place since the flush above); the transaction
	 * alone follows a tail that replay reaches it from, or a clean
	 * journal (the caller had no answer yet: it is lost). */
	{
		struct bdev_vec v[2] = {
			{ .buf = j->hbuf, .len = VMFSD_SECTOR, .off = j->area_off },
			{ .buf = j->buf, .len = (size_t)(n + 1) * VMFSD_META_BLOCK, .off = off },
		};

		r = bdev_rw_many(j->bd, 1, v, 2);
	}
	if (!r)
		r = bdev_flush(j->bd);
	if (r)
		return r;
	j->staged = 0;
	j->head += 1 + n;
	j->seq++;
	return 0;
}

int journal_write(struct journal *j, const struct journal_block *b, uint32_t n)
{
	struct journal_block *c;
	int r;

	if (!n)
		return 0;
	c = malloc(n * sizeof(*c));
	if (!c)
		return -ENOMEM;
	memcpy(c, b, n * sizeof(*c));
	r = journal_stage(j, c, n);
	if (!r)
		r = journal_write_staged(j);
	free(c);
	return r;
}

int journal_mark_clean(struct journal *j)
{
	struct vmfsd_jhdr jh = { .slot = j->slot, .nblocks = j->nblocks, .tail_seq = j->seq,
				 .tail_blk = j->head < j->nblocks ? j->head : 1, .clean = 1,
				 .id = j->id };
	int r = write_header(j->bd, j->area_off, &jh);

	if (!r)
		r = bdev_flush(j->bd);
	return r;
}

int journal_checkpoint(struct journal *j)
{
	int r = bdev_flush(j->bd);

	if (!r)
		r = journal_mark_clean(j);
	return r;
}
