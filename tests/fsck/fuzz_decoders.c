// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Fuzz target for the on-disk decoders and verifiers of format/ (the code
 * that reads hostile images first): superblock (with its layout check),
 * lock record, resource cluster, inode, block-map node, directory block,
 * heartbeat slot, journal header and journal descriptor.
 *
 * Input: byte 0 picks the structure, byte 1 bit 0 asks for the magic, self
 * number and checksum to be made right (so the fuzzer gets past them to the
 * range checks behind), the rest is the block.  Whatever decodes must also
 * survive encode + decode unchanged: a decoder that accepts what its
 * encoder would write differently is a bug too.
 *
 * Built two ways (tests/fsck/meson.build):
 *   - with clang and -fsanitize=fuzzer,address as fuzz-decoders (libFuzzer:
 *     `build-fuzz/tests/fsck/fuzz-decoders -max_total_time=60`);
 *   - always, as fuzz-decoders-run: a deterministic driver that feeds valid
 *     encodings of every structure with random mutations, and random bytes,
 *     N times (the default test suite runs it; it must not crash).
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "format/format.h"

enum { S_SB, S_LOCK, S_RC, S_INODE, S_MAP, S_DIR, S_HB, S_JHDR, S_JDESC, S_COUNT };

/* Checksummed range and checksum offset of each structure, as format.c
 * defines them (docs/format.md §2). */
static const struct {
	size_t start, len, csum_off, magic_len, blocknr_off;
	uint32_t magic;
} shape[S_COUNT] = {
	[S_SB] = { 0, 4096, 24, 8, 16, 0 },
	[S_LOCK] = { 0, 512, 16, 4, 8, VMFSD_LOCK_MAGIC },
	[S_RC] = { 512, 3584, 16, 4, 8, VMFSD_RC_MAGIC },
	[S_INODE] = { 512, 3584, 16, 4, 8, VMFSD_INODE_MAGIC },
	[S_MAP] = { 0, 4096, 16, 4, 8, VMFSD_MAP_MAGIC },
	[S_DIR] = { 0, 4096, 16, 4, 8, VMFSD_DIR_MAGIC },
	[S_HB] = { 0, 512, 16, 4, 8, VMFSD_HB_MAGIC },
	[S_JHDR] = { 0, 512, 16, 4, 8, VMFSD_JH_MAGIC },
	[S_JDESC] = { 0, 4096, 16, 4, 8, VMFSD_JDESC_MAGIC },
};

#define BLOCKNR 1234u
/* The journal identity descriptors are checked against (and seeded with). */
static const struct vmfsd_journal_id fuzz_jid = {
	.vol_uuid = { 0x6b, 0x1d, 0x42, 0x90, 0x0e, 0x77, 0x4c, 0x01,
		      0x8a, 0x3f, 0x11, 0x5c, 0xd2, 0x09, 0xe4, 0x6a },
	.format_gen = 0x5eed,
};
#define OWNER 77u
#define OWNER_GEN 3u

static void fix_up(int s, uint8_t *blk)
{
	uint8_t *p = blk + shape[s].start;

	if (s == S_SB)
		vmfsd_put_le64(p, VMFSD_SB_MAGIC);
	else
		vmfsd_put_le32(p, shape[s].magic);
	vmfsd_put_le64(p + shape[s].blocknr_off, BLOCKNR);
	if (s == S_MAP) {
		vmfsd_put_le64(p + 24, OWNER);
		vmfsd_put_le64(p + 32, OWNER_GEN);
	} else if (s == S_DIR) {
		vmfsd_put_le64(p + 24, OWNER);
		vmfsd_put_le64(p + 32, OWNER_GEN);
	}
	vmfsd_put_le64(p + shape[s].csum_off, vmfsd_csum(p, shape[s].len, shape[s].csum_off));
}

static void __attribute__((noreturn)) bug(const char *what)
{
	fprintf(stderr, "fuzz-decoders: %s\n", what);
	abort();
}

/* Strings are NUL-padded on disk, but a decoder keeps bytes after an early
 * NUL: compare them as the C strings they are. */
static void norm(char *s, size_t n)
{
	size_t l = strnlen(s, n);

	memset(s + l, 0, n - l);
}

static uint8_t blk2[VMFSD_META_BLOCK] __attribute__((aligned(4096)));

/* Decoded structs are compared whole, padding included: start from zero. */
#define ZERO2(a, b) do { memset(&(a), 0, sizeof(a)); memset(&(b), 0, sizeof(b)); } while (0)

static void one(int s, uint8_t *blk)
{
	switch (s) {
	case S_SB: {
		static struct vmfsd_sb a, b;

		ZERO2(a, b);
		if (vmfsd_sb_decode(blk, BLOCKNR, &a))
			return;
		vmfsd_sb_encode(&a, BLOCKNR, blk2);
		if (vmfsd_sb_decode(blk2, BLOCKNR, &b))
			bug("superblock: re-encoded image does not decode");
		norm(a.label, sizeof(a.label));
		norm(b.label, sizeof(b.label));
		if (memcmp(&a, &b, sizeof(a)))
			bug("superblock: encode/decode round trip differs");
		break;
	}
	case S_LOCK: {
		struct vmfsd_lock a, b;
		unsigned i, nbits = 0;

		ZERO2(a, b);
		if (vmfsd_lock_decode(blk, BLOCKNR, &a))
			return;
		/* What decodes obeys the format: no generation for a slot
		 * that is not a holder, nholders matching the bitmap. */
		for (i = 0; i < VMFSD_MAX_HOSTS; i++) {
			if (a.holders[i / 8] & (1u << (i % 8)))
				nbits++;
			else if (a.holder_gen8[i])
				bug("lock: generation kept for a slot that is not a holder");
		}
		if (a.mode == VMFSD_LOCK_FREE ? a.nholders || nbits
		    : a.nholders != nbits &&
		      ((a.holders[a.owner_slot / 8] & (1u << (a.owner_slot % 8))) ||
		       a.nholders != nbits + 1))
			bug("lock: nholders does not match the holder bitmap");
		vmfsd_lock_encode(&a, BLOCKNR, blk2);
		if (vmfsd_lock_decode(blk2, BLOCKNR, &b) || memcmp(&a, &b, sizeof(a)))
			bug("lock: round trip");
		break;
	}
	case S_RC: {
		static struct vmfsd_rc a, b;

		ZERO2(a, b);
		if (vmfsd_rc_decode(blk, BLOCKNR, &a))
			return;
		vmfsd_rc_encode(&a, BLOCKNR, blk2);
		if (vmfsd_rc_decode(blk2, BLOCKNR, &b) || memcmp(&a, &b, sizeof(a)))
			bug("resource cluster: round trip");
		break;
	}
	case S_INODE: {
		static struct vmfsd_inode a, b;

		ZERO2(a, b);
		if (vmfsd_inode_decode(blk, BLOCKNR, &a))
			return;
		vmfsd_inode_encode(&a, BLOCKNR, blk2);
		if (vmfsd_inode_decode(blk2, BLOCKNR, &b) || memcmp(&a, &b, sizeof(a)))
			bug("inode: round trip");
		break;
	}
	case S_MAP:
		(void)vmfsd_map_node_verify(blk, BLOCKNR, OWNER, OWNER_GEN);
		break;
	case S_DIR:
		/* A verified block must be walkable exactly as fs/dir.c and
		 * fsck walk it (vmfsd_dirent_get): every entry named, the walk
		 * ending exactly at `used` after `nentries` entries. */
		if (vmfsd_dir_block_verify(blk, BLOCKNR, OWNER, OWNER_GEN) == 0) {
			const struct vmfsd_disk_dir_hdr *h = (const void *)blk;
			unsigned off = 0, used = le16toh(h->used), n = 0, sz;
			struct vmfsd_dirent de;

			while ((sz = vmfsd_dirent_get(blk, off, &de))) {
				if (!de.name_len || sz != vmfsd_dirent_size(de.name_len))
					bug("directory block: verified entry malformed");
				off += sz;
				n++;
			}
			if (off != used || n != le16toh(h->nentries) || used > VMFSD_DIR_SPACE)
				bug("directory block: verified walk or counts wrong");
		}
		break;
	case S_HB: {
		struct vmfsd_hb a, b;

		ZERO2(a, b);
		if (vmfsd_hb_decode(blk, BLOCKNR, &a))
			return;
		vmfsd_hb_encode(&a, BLOCKNR, blk2);
		if (vmfsd_hb_decode(blk2, BLOCKNR, &b))
			bug("heartbeat: re-encoded slot does not decode");
		norm(a.host_name, sizeof(a.host_name));
		norm(b.host_name, sizeof(b.host_name));
		if (memcmp(&a, &b, sizeof(a)))
			bug("heartbeat: round trip");
		break;
	}
	case S_JHDR: {
		struct vmfsd_jhdr a, b;

		ZERO2(a, b);
		if (vmfsd_jhdr_decode(blk, BLOCKNR, &a))
			return;
		/* An all-zero block decodes as an empty journal (nblocks 0),
		 * which has no encoding of its own. */
		if (!a.nblocks)
			return;
		vmfsd_jhdr_encode(&a, BLOCKNR, blk2);
		if (vmfsd_jhdr_decode(blk2, BLOCKNR, &b) || memcmp(&a, &b, sizeof(a)))
			bug("journal header: round trip");
		break;
	}
	case S_JDESC:
		(void)vmfsd_jdesc_verify(blk, BLOCKNR, &fuzz_jid);
		break;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t blk[VMFSD_META_BLOCK] __attribute__((aligned(4096)));
	int s;

	if (size < 2)
		return 0;
	s = data[0] % S_COUNT;
	memset(blk, 0, sizeof(blk));
	memcpy(blk, data + 2, size - 2 < sizeof(blk) ? size - 2 : sizeof(blk));
	if (data[1] & 1)
		fix_up(s, blk);
	one(s, blk);
	return 0;
}

#ifndef VMFSD_LIBFUZZER
/* ---------------- the deterministic driver ---------------- */

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void)
{
	/* xorshift64*: deterministic, so a failure names its iteration. */
	rng ^= rng >> 12;
	rng ^= rng << 25;
	rng ^= rng >> 27;
	return rng * 0x2545f4914f6cdd1dull;
}

/* A valid encoding of structure S with random field values. */
static void seed_block(int s, uint8_t *blk)
{
	memset(blk, 0, VMFSD_META_BLOCK);
	switch (s) {
	case S_SB: {
		struct vmfsd_mkfs_params p = {
			.device_size = (rnd() % (1ull << 44)) + (200ull << 20),
			.block_size = 1u << (16 + rnd() % 11),
			.max_hosts = (uint32_t)(1 + rnd() % 256),
			.label = "fuzz",
		};
		struct vmfsd_sb sb;

		/* The self number is BLOCKNR; the layout stays valid. */
		if (vmfsd_layout_compute(&p, &sb) == 0)
			vmfsd_sb_encode(&sb, BLOCKNR, blk);
		break;
	}
	case S_LOCK: {
		struct vmfsd_lock lk = { .mode = (uint16_t)(rnd() % 4), .owner_slot = (uint32_t)(rnd() % 256),
					 .owner_slot_gen = rnd(), .lock_gen = rnd() };
		uint32_t i, n = lk.mode ? (uint32_t)(rnd() % 9) : 0;

		for (i = 0; i < n; i++) {
			uint32_t s = i ? (uint32_t)(rnd() % 256) : lk.owner_slot;

			if (!(lk.holders[s / 8] & (1u << (s % 8))))
				lk.nholders++;
			lk.holders[s / 8] |= (uint8_t)(1u << (s % 8));
			lk.holder_gen8[s] = (uint8_t)rnd();
		}
		vmfsd_lock_encode(&lk, BLOCKNR, blk);
		break;
	}
	case S_RC: {
		static struct vmfsd_rc rc;
		uint32_t i;

		memset(&rc, 0, sizeof(rc));
		rc.kind = (uint16_t)(1 + rnd() % 3);
		rc.index = (uint32_t)(rnd() % 100);
		rc.first_item = (uint64_t)rc.index * VMFSD_RC_BITS;
		rc.nitems = (uint32_t)(1 + rnd() % VMFSD_RC_BITS);
		rc.nfree = rc.nitems;
		for (i = 0; i < rc.nitems; i += 1 + (uint32_t)(rnd() % 64)) {
			rc.bitmap[i / 8] |= (uint8_t)(1u << (i % 8));
			rc.nfree--;
		}
		vmfsd_rc_encode(&rc, BLOCKNR, blk);
		break;
	}
	case S_INODE: {
		static struct vmfsd_inode in;

		memset(&in, 0, sizeof(in));
		in.ino = OWNER;
		in.data_mode = (uint8_t)(rnd() % 3);
		in.map_height = in.data_mode ? (uint8_t)(rnd() % 5) : 0;
		in.size = in.data_mode ? rnd() % (1ull << 40) : rnd() % 2913;
		in.xattr_len = (uint16_t)(rnd() % 513);
		in.mode = 0100644;
		vmfsd_inode_encode(&in, BLOCKNR, blk);
		break;
	}
	case S_MAP:
		vmfsd_put_le64(blk + 24, OWNER);
		vmfsd_put_le64(blk + 32, OWNER_GEN);
		vmfsd_put_le32(blk + 64, (uint32_t)rnd());
		vmfsd_map_node_finish(blk, BLOCKNR);
		break;
	case S_DIR: {
		struct vmfsd_disk_dir_hdr *h = (void *)blk;
		unsigned used = 0, n = 0;

		h->dir_ino = htole64(OWNER);
		h->dir_generation = htole64(OWNER_GEN);
		while (rnd() % 8) {
			unsigned nl = 1 + (unsigned)(rnd() % 255), k;
			struct vmfsd_disk_dirent *p = vmfsd_dirent_at(blk, used);

			if (used + vmfsd_dirent_size(nl) > VMFSD_DIR_SPACE)
				break;
			/* By hand, not vmfsd_dirent_add: the pad keeps whatever
			 * the fuzzer left there. */
			p->ino = htole64(2 + rnd() % 1000);
			p->name_len = (uint8_t)nl;
			p->d_type = 8;
			for (k = 0; k < nl; k++)
				p->name[k] = (char)('a' + rnd() % 26);
			used += vmfsd_dirent_size(nl);
			n++;
		}
		h->used = htole16((uint16_t)used);
		h->nentries = htole16((uint16_t)n);
		vmfsd_dir_block_finish(blk, BLOCKNR);
		break;
	}
	case S_HB: {
		struct vmfsd_hb hb = { .state = (uint16_t)(rnd() % 3), .generation = rnd(),
				       .counter = rnd(), .slot = (uint32_t)(rnd() % 256) };

		snprintf(hb.host_name, sizeof(hb.host_name), "host%u", (unsigned)(rnd() % 100));
		vmfsd_hb_encode(&hb, BLOCKNR, blk);
		break;
	}
	case S_JHDR: {
		struct vmfsd_jhdr jh = { .slot = (uint32_t)(rnd() % 256), .nblocks = 256,
					 .tail_seq = rnd(), .tail_blk = 1 + (uint32_t)(rnd() % 255),
					 .clean = rnd() % 2 };

		vmfsd_jhdr_encode(&jh, BLOCKNR, blk);
		break;
	}
	case S_JDESC: {
		struct vmfsd_disk_jdesc *d = (void *)blk;

		d->seq = htole64(rnd());
		d->nblocks = htole32((uint32_t)(1 + rnd() % VMFSD_JDESC_MAX));
		vmfsd_jdesc_finish(blk, BLOCKNR, &fuzz_jid);
		break;
	}
	}
}

int main(int argc, char **argv)
{
	static uint8_t in[2 + VMFSD_META_BLOCK];
	unsigned long long runs = argc > 1 ? strtoull(argv[1], NULL, 0) : 100000, i;

	if (argc > 2)
		rng = strtoull(argv[2], NULL, 0) | 1;
	for (i = 0; i < runs; i++) {
		int s = (int)(rnd() % S_COUNT), k, nmut = (int)(rnd() % 8);
		size_t len = sizeof(in);

		in[0] = (uint8_t)s;
		in[1] = (uint8_t)(rnd() % 2);
		if (rnd() % 16 == 0) {
			/* Random bytes, random length. */
			len = 2 + rnd() % VMFSD_META_BLOCK;
			for (k = 2; k < (int)len; k++)
				in[k] = (uint8_t)rnd();
		} else {
			seed_block(s, in + 2);
			/* Mutations concentrated in the header, where the fields are. */
			for (k = 0; k < nmut; k++) {
				size_t at = shape[s].start + (rnd() % 2 ? rnd() % 160 :
							       rnd() % shape[s].len);

				switch (rnd() % 3) {
				case 0:
					in[2 + at] ^= (uint8_t)(1u << (rnd() % 8));
					break;
				case 1:
					in[2 + at] = (uint8_t)rnd();
					break;
				default: {
					size_t n = 1 + rnd() % 8;

					if (at + n > VMFSD_META_BLOCK)
						n = VMFSD_META_BLOCK - at;
					memset(in + 2 + at, rnd() % 2 ? 0xff : 0, n);
					break;
				}
				}
			}
		}
		LLVMFuzzerTestOneInput(in, len);
	}
	printf("fuzz-decoders: %llu inputs, no crash, no round-trip difference\n", runs);
	return 0;
}
#endif
