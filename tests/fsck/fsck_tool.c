// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * fsck-tool: the helper behind the fsck tests and the fsck benchmark.
 *
 *   fsck-tool populate IMAGE [N]            a small tree exercising every
 *                                           structure (in-process fs/ API)
 *   fsck-tool bulk IMAGE NFILES [SIZE]      NFILES files of SIZE bytes in
 *                                           folders of 100 (benchmark)
 *   fsck-tool copy IMAGE DIR                copies a host directory tree in
 *   fsck-tool info IMAGE PATH               inode facts of PATH, key=value
 *   fsck-tool corrupt IMAGE WHAT [ARGS..]   one corruption (see corrupt())
 *   fsck-tool crash IMAGE                   mount, change things, exit
 *                                           without unmounting (a dead host)
 *   fsck-tool hold IMAGE SECONDS            mount and stay mounted
 *   fsck-tool bitflip IMAGE [STRIDE]        flips single bits of every
 *                                           metadata block and runs the
 *                                           checker in-process on each
 *   fsck-tool repairfuzz IMAGE N [SEED]     N rounds of random damage,
 *                                           repair, check clean, read all
 *
 * Corruptions are made with the format/ encoders where the test needs a
 * structure that verifies but says something wrong (a link count, a parent,
 * an entry), and by flipping raw bytes where it needs damage.  Everything
 * is located from the superblock, as fsck itself does.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <linux/falloc.h>

#include "bdev/bdev.h"
#include "format/format.h"
#include "format/maptree.h"
#include "fs/fs.h"
#include "fsck/fsck.h"
#include "journal/journal.h"

static void __attribute__((noreturn, format(printf, 1, 2))) die(const char *fmt, ...)
{
	va_list ap;

	fputs("fsck-tool: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(2);
}

#define CHECK(expr) do {                                                  \
		int r_ = (expr);                                          \
		if (r_ < 0)                                               \
			die("%s:%d: %s: %s", __FILE__, __LINE__, #expr,   \
			    strerror(-r_));                               \
	} while (0)

static uint64_t num(const char *s)
{
	char *end;
	uint64_t n = strtoull(s, &end, 0);

	if (!*s || *end)
		die("not a number: %s", s);
	return n;
}

/* ---------------- populating through fs/ ---------------- */

static struct fs *mount_rw(const char *img)
{
	struct fs_mount_opts mo = { .host = "fscktest" };
	struct fs *fs;

	CHECK(fs_mount(img, &mo, &fs, NULL));
	return fs;
}

static uint64_t mk_file(struct fs *fs, uint64_t dir, const char *name, uint64_t size,
			uint64_t at)
{
	struct fs_attr a;
	struct fs_file *f;
	uint8_t *buf;
	uint64_t done = 0;

	CHECK(fs_mknod(fs, dir, name, S_IFREG | 0644, 0, 0, 0, &a));
	CHECK(fs_open(fs, a.ino, O_RDWR, &f));
	buf = malloc(1u << 20);
	if (!buf)
		die("out of memory");
	while (done < size) {
		size_t n = size - done < (1u << 20) ? (size_t)(size - done) : (1u << 20);
		size_t i;

		for (i = 0; i < n; i++)
			buf[i] = (uint8_t)(a.ino * 31 + done + i);
		if (fs_write(fs, f, buf, n, at + done) != (ssize_t)n)
			die("write %s failed", name);
		done += n;
	}
	free(buf);
	CHECK(fs_release(fs, f));
	fs_forget(fs, a.ino, 1);
	return a.ino;
}

static uint64_t mk_dir(struct fs *fs, uint64_t dir, const char *name)
{
	struct fs_attr a;

	CHECK(fs_mkdir(fs, dir, name, 0755, 0, 0, &a));
	fs_forget(fs, a.ino, 1);
	return a.ino;
}

/* The standard test tree:
 *   /small       inline (100 B), with an xattr
 *   /medium      sub-block mode (10 KiB)
 *   /large       file-block mode (3 MiB)
 *   /sparse      file-block mode with a map node (4 KiB at 1 GiB)
 *   /prealloc    fallocated past EOF (unwritten units)
 *   /link        symlink; /small2 hard link of /small
 *   /d1/sub/deep, /d1/f1, /d2 (NENTRIES entries: 300 take two directory
 *   blocks, the bit-flip test uses 20 to stay quick)
 */
static void cmd_populate(const char *img, int nentries)
{
	struct fs *fs = mount_rw(img);
	struct fs_attr a;
	struct fs_file *f;
	uint64_t ino, d1, sub, d2;
	char name[32];
	int i;

	ino = mk_file(fs, VMFSD_ROOT_INO, "small", 100, 0);
	CHECK(fs_setxattr(fs, ino, "user.tag", "vm", 2, 0));
	CHECK(fs_link(fs, ino, VMFSD_ROOT_INO, "small2", &a));
	fs_forget(fs, a.ino, 1);
	mk_file(fs, VMFSD_ROOT_INO, "medium", 10240, 0);
	mk_file(fs, VMFSD_ROOT_INO, "large", 3u << 20, 0);
	mk_file(fs, VMFSD_ROOT_INO, "sparse", 4096, 1ull << 30);
	ino = mk_file(fs, VMFSD_ROOT_INO, "prealloc", 8192, 0);
	CHECK(fs_open(fs, ino, O_RDWR, &f));
	CHECK(fs_fallocate(fs, f, FALLOC_FL_KEEP_SIZE, 0, 64 << 10));
	CHECK(fs_release(fs, f));
	CHECK(fs_symlink(fs, VMFSD_ROOT_INO, "link", "medium", 0, 0, &a));
	fs_forget(fs, a.ino, 1);
	d1 = mk_dir(fs, VMFSD_ROOT_INO, "d1");
	sub = mk_dir(fs, d1, "sub");
	mk_file(fs, sub, "deep", 5000, 0);
	mk_file(fs, d1, "f1", 1, 0);
	d2 = mk_dir(fs, VMFSD_ROOT_INO, "d2");
	for (i = 0; i < nentries; i++) {
		snprintf(name, sizeof(name), "entry-%03d", i);
		mk_file(fs, d2, name, (uint64_t)(i % 5) * 700, 0);
	}
	CHECK(fs_unmount(fs));
}

static void cmd_bulk(const char *img, uint64_t n, uint64_t size)
{
	struct fs *fs = mount_rw(img);
	uint64_t i, dir = 0;
	char name[48];

	for (i = 0; i < n; i++) {
		if (i % 100 == 0) {
			snprintf(name, sizeof(name), "dir%05" PRIu64, i / 100);
			dir = mk_dir(fs, VMFSD_ROOT_INO, name);
		}
		snprintf(name, sizeof(name), "file%06" PRIu64 ".vmx", i);
		mk_file(fs, dir, name, size, 0);
	}
	CHECK(fs_unmount(fs));
}

static void copy_tree(struct fs *fs, uint64_t dir, const char *path)
{
	DIR *d = opendir(path);
	struct dirent *de;

	if (!d)
		die("%s: %s", path, strerror(errno));
	while ((de = readdir(d))) {
		char p[4096];
		struct stat st;

		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		snprintf(p, sizeof(p), "%s/%s", path, de->d_name);
		if (lstat(p, &st) < 0)
			die("%s: %s", p, strerror(errno));
		if (S_ISDIR(st.st_mode)) {
			copy_tree(fs, mk_dir(fs, dir, de->d_name), p);
		} else if (S_ISREG(st.st_mode)) {
			struct fs_attr a;
			struct fs_file *f;
			char *buf = malloc(1u << 20);
			int fd = open(p, O_RDONLY);
			uint64_t off = 0;
			ssize_t n;

			if (fd < 0 || !buf)
				die("%s: %s", p, strerror(errno));
			CHECK(fs_mknod(fs, dir, de->d_name, S_IFREG | 0644, 0, 0, 0, &a));
			CHECK(fs_open(fs, a.ino, O_RDWR, &f));
			while ((n = read(fd, buf, 1u << 20)) > 0) {
				if (fs_write(fs, f, buf, (size_t)n, off) != n)
					die("write %s", p);
				off += (uint64_t)n;
			}
			close(fd);
			free(buf);
			CHECK(fs_release(fs, f));
			fs_forget(fs, a.ino, 1);
		}
	}
	closedir(d);
}

/* ---------------- raw access ---------------- */

struct vol {
	struct bdev *bd;
	struct vmfsd_sb sb;
	uint8_t *blk;
};

static void vol_open(struct vol *v, const char *img, bool rw)
{
	memset(v, 0, sizeof(*v));
	CHECK(bdev_open(img, rw ? 0 : BDEV_RDONLY, &v->bd));
	v->blk = bdev_alloc(VMFSD_META_BLOCK);
	CHECK(bdev_pread(v->bd, v->blk, VMFSD_META_BLOCK, 0));
	if (vmfsd_sb_decode(v->blk, 0, &v->sb)) {
		/* The primary may be what a test damaged: use the backup. */
		uint64_t bnr = bdev_size(v->bd) / VMFSD_META_BLOCK - 1;

		CHECK(bdev_pread(v->bd, v->blk, VMFSD_META_BLOCK, bnr * VMFSD_META_BLOCK));
		CHECK(vmfsd_sb_decode(v->blk, bnr, &v->sb));
	}
}

static void vol_close(struct vol *v)
{
	CHECK(bdev_flush(v->bd));
	bdev_free(v->blk);
	bdev_close(v->bd);
}

static void rd(struct vol *v, uint64_t off, void *buf)
{
	CHECK(bdev_pread(v->bd, buf, VMFSD_META_BLOCK, off));
}

static void wr(struct vol *v, uint64_t off, const void *buf)
{
	CHECK(bdev_pwrite(v->bd, buf, VMFSD_META_BLOCK, off));
}

static void flip(struct vol *v, uint64_t off, unsigned bit)
{
	uint64_t b = off & ~(uint64_t)(VMFSD_META_BLOCK - 1);

	rd(v, b, v->blk);
	v->blk[off - b] ^= (uint8_t)(1u << bit);
	wr(v, b, v->blk);
}

static void ino_get(struct vol *v, uint64_t ino, struct vmfsd_inode *in)
{
	uint64_t off = vmfsd_inode_off(&v->sb, ino);

	rd(v, off, v->blk);
	CHECK(vmfsd_inode_decode(v->blk, off / VMFSD_META_BLOCK, in));
}

static void ino_put(struct vol *v, const struct vmfsd_inode *in)
{
	uint64_t off = vmfsd_inode_off(&v->sb, in->ino);

	rd(v, off, v->blk);
	vmfsd_inode_encode(in, off / VMFSD_META_BLOCK, v->blk);
	wr(v, off, v->blk);
}

static uint64_t pool_off(struct vol *v, int kind)
{
	return kind == VMFSD_RC_INODE ? v->sb.ibm_off : kind == VMFSD_RC_SUB ? v->sb.sbm_off :
	       v->sb.dbm_off;
}

static int kind_of(const char *s)
{
	if (!strcmp(s, "inode"))
		return VMFSD_RC_INODE;
	if (!strcmp(s, "sub"))
		return VMFSD_RC_SUB;
	if (!strcmp(s, "block"))
		return VMFSD_RC_BLOCK;
	die("unknown pool %s (inode, sub, block)", s);
}

static void bm_set(struct vol *v, int kind, uint64_t item, bool set)
{
	static struct vmfsd_rc rc;
	uint32_t ci = (uint32_t)(item / VMFSD_RC_BITS), bit = (uint32_t)(item % VMFSD_RC_BITS);
	uint64_t off = pool_off(v, kind) + (uint64_t)ci * VMFSD_META_BLOCK;
	bool was;

	rd(v, off, v->blk);
	CHECK(vmfsd_rc_decode(v->blk, off / VMFSD_META_BLOCK, &rc));
	was = rc.bitmap[bit / 8] & (1u << (bit % 8));
	if (was == set)
		die("item %" PRIu64 " already %s", item, set ? "set" : "clear");
	rc.bitmap[bit / 8] ^= (uint8_t)(1u << (bit % 8));
	rc.nfree += set ? -1 : 1;
	vmfsd_rc_encode(&rc, off / VMFSD_META_BLOCK, v->blk);
	wr(v, off, v->blk);
}

/* Depth-first search for the first data entry under SLOTS (N of them, at
 * LEVEL); returns its byte offset or 0, the entry in *entry and the first
 * map node passed on the way in *node. */
static uint64_t first_in(struct vol *v, uint64_t off, const uint8_t *slots, unsigned n,
			 unsigned level, uint32_t *entry, uint32_t *node)
{
	unsigned i;

	for (i = 0; i < n; i++) {
		uint32_t e = vmfsd_map_slot_get(slots, i);
		uint64_t noff, r;
		uint8_t *buf;

		if (!e)
			continue;
		if (level == 0) {
			*entry = e;
			return off + (uint64_t)i * 4;
		}
		noff = vmfsd_sub_off(&v->sb, e & VMFSD_MAP_PBLK_MASK);
		buf = bdev_alloc(VMFSD_SUB_BLOCK_SIZE);
		rd(v, noff, buf);
		r = first_in(v, noff + VMFSD_MAP_NODE_HDR, vmfsd_map_node_slots(buf),
			     VMFSD_MAP_NODE_SLOTS, level - 1, entry, node);
		bdev_free(buf);
		if (r) {
			if (!*node)
				*node = e & VMFSD_MAP_PBLK_MASK;
			return r;
		}
	}
	return 0;
}

/* Byte offset of the first data entry of INO (in its inode or a leaf),
 * the entry, and the top map node on its path (0 at height 0). */
static uint64_t first_entry(struct vol *v, uint64_t ino, uint32_t *entry, uint32_t *node)
{
	struct vmfsd_inode in;
	uint64_t off;

	ino_get(v, ino, &in);
	if (in.data_mode == VMFSD_DATA_INLINE)
		die("inode %" PRIu64 " is inline", ino);
	*node = 0;
	off = first_in(v, vmfsd_inode_off(&v->sb, ino) + offsetof(struct vmfsd_disk_inode, map),
		       in.map, VMFSD_MAP_ROOT_SLOTS, in.map_height, entry, node);
	if (!off)
		die("inode %" PRIu64 " maps nothing", ino);
	return off;
}

/* Rewrites the 4-byte entry at OFF (inode map area or node slot). */
static void set_entry(struct vol *v, uint64_t ino, uint64_t off, uint32_t val)
{
	uint64_t b = off & ~(uint64_t)(VMFSD_META_BLOCK - 1);

	if (b == vmfsd_inode_off(&v->sb, ino)) {
		struct vmfsd_inode in;

		ino_get(v, ino, &in);
		vmfsd_put_le32(in.map + (off - b - offsetof(struct vmfsd_disk_inode, map)), val);
		ino_put(v, &in);
		return;
	}
	rd(v, b, v->blk);
	vmfsd_put_le32(v->blk + (off - b), val);
	vmfsd_map_node_finish(v->blk, (b - v->sb.sub_off) / VMFSD_SUB_BLOCK_SIZE);
	wr(v, b, v->blk);
}

static uint32_t first_dir_block(struct vol *v, uint64_t dir)
{
	uint32_t e, node;

	first_entry(v, dir, &e, &node);
	return e & VMFSD_MAP_PBLK_MASK;
}

/* Edits directory DIR: the entry NAME is removed (NEWINO 0), repointed, or
 * with ADD, a new entry NAME -> NEWINO of type DTYPE is appended. */
static void dent_edit(struct vol *v, uint64_t dir, const char *name, uint64_t newino, bool add,
		      uint8_t dtype)
{
	struct vmfsd_inode in;
	size_t nl = strlen(name);
	uint32_t i, e, node;
	uint64_t moff;

	ino_get(v, dir, &in);
	(void)first_entry(v, dir, &e, &node);
	for (i = 0; i < in.size / VMFSD_SUB_BLOCK_SIZE; i++) {
		struct vmfsd_dirent de;
		uint32_t sblk;
		int off;

		/* Directory blocks of the test tree are mapped from the root
		 * slots (height 0). */
		if (in.map_height)
			die("directory %" PRIu64 " has a map node", dir);
		sblk = vmfsd_get_le32(in.map + i * 4) & VMFSD_MAP_PBLK_MASK;
		moff = vmfsd_sub_off(&v->sb, sblk);
		rd(v, moff, v->blk);
		if (add) {
			if (vmfsd_dirent_add(v->blk, newino, dtype, name, (unsigned)nl))
				continue;
		} else {
			off = vmfsd_dirent_find(v->blk, name, (unsigned)nl);
			if (off < 0)
				continue;
			if (newino) {
				vmfsd_dirent_get(v->blk, (unsigned)off, &de);
				vmfsd_dirent_update(v->blk, (unsigned)off, newino, de.type);
			} else {
				vmfsd_dirent_remove(v->blk, (unsigned)off);
			}
		}
		vmfsd_dir_block_finish(v->blk, sblk);
		wr(v, moff, v->blk);
		return;
	}
	die("no entry %s in directory %" PRIu64 " (or no room)", name, dir);
}

/* ---------------- info ---------------- */

static void cmd_info(const char *img, const char *path)
{
	struct fs_mount_opts mo = { .host = "fscktest", .readonly = 1 };
	uint64_t ino = VMFSD_ROOT_INO;
	struct vmfsd_inode in;
	struct fs_attr a;
	struct fs *fs;
	struct vol v;
	char *p = strdup(path), *tok, *save = NULL;

	CHECK(fs_mount(img, &mo, &fs, NULL));
	for (tok = strtok_r(p, "/", &save); tok; tok = strtok_r(NULL, "/", &save)) {
		CHECK(fs_lookup(fs, ino, tok, &a));
		ino = a.ino;
	}
	free(p);
	CHECK(fs_unmount(fs));
	vol_open(&v, img, false);
	ino_get(&v, ino, &in);
	printf("ino=%" PRIu64 " mode=%o nlink=%u size=%" PRIu64 " data_mode=%u height=%u "
	       "alloc_units=%" PRIu64 " parent=%" PRIu64 " gen=%" PRIu64, ino, in.mode, in.nlink,
	       in.size, in.data_mode, in.map_height, in.alloc_units, in.parent, in.generation);
	if (in.data_mode != VMFSD_DATA_INLINE) {
		uint32_t e, node;

		first_entry(&v, ino, &e, &node);
		printf(" first=%u node=%u", e & VMFSD_MAP_PBLK_MASK, node);
	}
	printf("\n");
	vol_close(&v);
}

/* ---------------- corruptions ---------------- */


static void corrupt(const char *img, int argc, char **argv)
{
	const char *what = argv[0];
	struct vmfsd_inode in;
	struct vol v;

#define NEED(n) do { if (argc < (n) + 1) die("%s needs %d argument(s)", what, n); } while (0)
	vol_open(&v, img, true);
	if (!strcmp(what, "flip")) {            /* OFFSET BIT */
		NEED(2);
		flip(&v, num(argv[1]), (unsigned)num(argv[2]));
	} else if (!strcmp(what, "sb-primary")) {
		flip(&v, 200, 3);
	} else if (!strcmp(what, "sb-backup")) {
		flip(&v, v.sb.backup_blocknr * VMFSD_META_BLOCK + 300, 5);
	} else if (!strcmp(what, "sb-backup-label")) {
		struct vmfsd_sb b = v.sb;

		snprintf(b.label, sizeof(b.label), "not-the-same");
		vmfsd_sb_encode(&b, b.backup_blocknr, v.blk);
		wr(&v, b.backup_blocknr * VMFSD_META_BLOCK, v.blk);
	} else if (!strcmp(what, "journal-dirty")) { /* INO: a chmod in the journal */
		uint64_t area = journal_area_off(&v.sb, 0), off;
		struct journal_block jb;
		struct vmfsd_jhdr jh;
		struct journal *j;
		uint8_t *img2 = bdev_alloc(VMFSD_META_BLOCK);

		NEED(1);
		rd(&v, area, v.blk);
		CHECK(vmfsd_jhdr_decode(v.blk, area / VMFSD_META_BLOCK, &jh));
		ino_get(&v, num(argv[1]), &in);
		in.mode = (in.mode & S_IFMT) | 0600;
		off = vmfsd_inode_off(&v.sb, in.ino);
		rd(&v, off, img2);
		vmfsd_inode_encode(&in, off / VMFSD_META_BLOCK, img2);
		jb.target = off;
		jb.img = img2;
		CHECK(journal_open(v.bd, &v.sb, 0, jh.tail_seq, &j));
		CHECK(journal_write(j, &jb, 1));
		journal_close(j);
		bdev_free(img2);
	} else if (!strcmp(what, "journal-foreign")) { /* INO: a chmod, in slot 1's
						   * journal, of another format */
		struct vmfsd_sb other = v.sb;
		struct journal_block jb;
		struct journal *j;
		uint64_t off;
		uint8_t *img2 = bdev_alloc(VMFSD_META_BLOCK);

		NEED(1);
		other.format_gen ^= 0x5a5a;     /* same UUID, another mkfs run */
		ino_get(&v, num(argv[1]), &in);
		in.mode = (in.mode & S_IFMT) | 0600;
		off = vmfsd_inode_off(&v.sb, in.ino);
		rd(&v, off, img2);
		vmfsd_inode_encode(&in, off / VMFSD_META_BLOCK, img2);
		jb.target = off;
		jb.img = img2;
		CHECK(journal_open(v.bd, &other, 1, 1, &j));
		CHECK(journal_write(j, &jb, 1));
		journal_close(j);
		bdev_free(img2);
	} else if (!strcmp(what, "hb-stale")) {      /* SLOT */
		struct vmfsd_hb hb = { .state = VMFSD_HB_LIVE, .generation = 5, .counter = 77,
				       .pid = 4242 };
		uint32_t s;

		NEED(1);
		s = (uint32_t)num(argv[1]);
		hb.slot = s;
		hb.journal_off = journal_area_off(&v.sb, s);
		snprintf(hb.host_name, sizeof(hb.host_name), "ghost");
		memset(v.blk, 0, VMFSD_META_BLOCK);
		vmfsd_hb_encode(&hb, vmfsd_hb_slot_off(&v.sb, s) / VMFSD_META_BLOCK, v.blk);
		wr(&v, vmfsd_hb_slot_off(&v.sb, s), v.blk);
	} else if (!strcmp(what, "lock-stale")) {    /* INO */
		struct vmfsd_lock lk = { .mode = VMFSD_LOCK_EXCL, .owner_slot = 3,
					 .owner_slot_gen = 9, .lock_gen = 4 };
		uint64_t off;

		NEED(1);
		off = vmfsd_inode_off(&v.sb, num(argv[1]));
		rd(&v, off, v.blk);
		vmfsd_lock_encode(&lk, off / VMFSD_META_BLOCK, v.blk);
		wr(&v, off, v.blk);
	} else if (!strcmp(what, "lock-bad")) {      /* INO */
		NEED(1);
		flip(&v, vmfsd_inode_off(&v.sb, num(argv[1])) + 40, 0);
	} else if (!strcmp(what, "rc-bad")) {        /* POOL */
		NEED(1);
		flip(&v, pool_off(&v, kind_of(argv[1])) + 2000, 1);
	} else if (!strcmp(what, "bm-set")) {        /* POOL ITEM */
		NEED(2);
		bm_set(&v, kind_of(argv[1]), num(argv[2]), true);
	} else if (!strcmp(what, "bm-clear")) {      /* POOL ITEM */
		NEED(2);
		bm_set(&v, kind_of(argv[1]), num(argv[2]), false);
	} else if (!strcmp(what, "dup")) {           /* INO_A INO_B: B's first unit := A's */
		uint32_t ea, eb, na, nb;
		uint64_t ob;

		NEED(2);
		first_entry(&v, num(argv[1]), &ea, &na);
		ob = first_entry(&v, num(argv[2]), &eb, &nb);
		set_entry(&v, num(argv[2]), ob, ea);
	} else if (!strcmp(what, "map-range")) {     /* INO: first entry out of its pool */
		uint32_t e, n;
		uint64_t o;

		NEED(1);
		o = first_entry(&v, num(argv[1]), &e, &n);
		set_entry(&v, num(argv[1]), o, VMFSD_MAP_PBLK_MASK - 1);
	} else if (!strcmp(what, "inode-csum")) {    /* INO */
		NEED(1);
		flip(&v, vmfsd_inode_off(&v.sb, num(argv[1])) + 1000, 2);
	} else if (!strcmp(what, "inode-nlink")) {   /* INO N */
		NEED(2);
		ino_get(&v, num(argv[1]), &in);
		in.nlink = (uint32_t)num(argv[2]);
		ino_put(&v, &in);
	} else if (!strcmp(what, "inode-size")) {    /* INO SIZE */
		NEED(2);
		ino_get(&v, num(argv[1]), &in);
		in.size = num(argv[2]);
		ino_put(&v, &in);
	} else if (!strcmp(what, "inode-units")) {   /* INO N */
		NEED(2);
		ino_get(&v, num(argv[1]), &in);
		in.alloc_units = num(argv[2]);
		ino_put(&v, &in);
	} else if (!strcmp(what, "inode-tail")) {    /* INO: garbage past an inline size */
		NEED(1);
		ino_get(&v, num(argv[1]), &in);
		in.map[VMFSD_INLINE_MAX - 1] = 0x5a;
		ino_put(&v, &in);
	} else if (!strcmp(what, "inode-parent")) {  /* INO PARENT */
		NEED(2);
		ino_get(&v, num(argv[1]), &in);
		in.parent = num(argv[2]);
		ino_put(&v, &in);
	} else if (!strcmp(what, "map-node")) {      /* INO: damage its first map node */
		uint32_t e, node;

		NEED(1);
		first_entry(&v, num(argv[1]), &e, &node);
		if (!node)
			die("inode has no map node");
		flip(&v, vmfsd_sub_off(&v.sb, node) + 100, 4);
	} else if (!strcmp(what, "dir-block")) {     /* DIR: damage its first block */
		NEED(1);
		flip(&v, vmfsd_sub_off(&v.sb, first_dir_block(&v, num(argv[1]))) + 70, 6);
	} else if (!strcmp(what, "dent-ino")) {      /* DIR NAME INO */
		NEED(3);
		dent_edit(&v, num(argv[1]), argv[2], num(argv[3]), false, 0);
	} else if (!strcmp(what, "dent-del")) {      /* DIR NAME */
		NEED(2);
		dent_edit(&v, num(argv[1]), argv[2], 0, false, 0);
	} else if (!strcmp(what, "dent-add")) {      /* DIR NAME INO DTYPE */
		NEED(4);
		dent_edit(&v, num(argv[1]), argv[2], num(argv[3]), true, (uint8_t)num(argv[4]));
	} else {
		die("unknown corruption %s", what);
	}
	vol_close(&v);
#undef NEED
}

/* ---------------- a host that dies ---------------- */

static void cmd_crash(const char *img)
{
	struct fs *fs = mount_rw(img);
	struct fs_file *f;
	struct fs_attr a;
	char buf[4096];

	memset(buf, 'x', sizeof(buf));
	CHECK(fs_mknod(fs, VMFSD_ROOT_INO, "after-crash", S_IFREG | 0644, 0, 0, 0, &a));
	CHECK(fs_open(fs, a.ino, O_RDWR, &f));
	if (fs_write(fs, f, buf, sizeof(buf), 0) != sizeof(buf))
		die("write");
	CHECK(fs_fsync(fs, f, 0));
	/* Unlinked while open: an orphan the next check must release. */
	CHECK(fs_unlink(fs, VMFSD_ROOT_INO, "after-crash"));
	CHECK(fs_fsync(fs, f, 0));
	/* No release, no unmount: the process just ends (kill -9). */
	_exit(0);
}

static void cmd_hold(const char *img, unsigned seconds)
{
	struct fs *fs = mount_rw(img);

	printf("mounted\n");
	fflush(stdout);
	sleep(seconds);
	CHECK(fs_unmount(fs));
}

/* ---------------- bit flips ---------------- */

struct blk {
	uint64_t off;
	const char *what;
};

struct blist {
	struct blk *v;
	size_t n, cap;
};

static void badd(struct blist *l, uint64_t off, const char *what)
{
	if (l->n == l->cap) {
		l->cap = l->cap ? l->cap * 2 : 64;
		l->v = realloc(l->v, l->cap * sizeof(*l->v));
		if (!l->v)
			die("out of memory");
	}
	l->v[l->n].off = off;
	l->v[l->n].what = what;
	l->n++;
}

/* Lists the map nodes of an inode and, for a directory, its blocks: a
 * read-only walk of the shared tree code (format/maptree.c). */
struct map_list {
	struct vol *v;
	struct blist *l;
	bool dir;
};

static int list_node(void *ctx, uint32_t sblk, unsigned level, uint64_t first, uint8_t **node)
{
	struct map_list *m = ctx;

	(void)level;
	(void)first;
	badd(m->l, vmfsd_sub_off(&m->v->sb, sblk), "map node");
	*node = bdev_alloc(VMFSD_SUB_BLOCK_SIZE);
	rd(m->v, vmfsd_sub_off(&m->v->sb, sblk), *node);
	return 0;
}

static void list_release(void *ctx, uint8_t *node)
{
	(void)ctx;
	bdev_free(node);
}

static int list_leaf(void *ctx, uint8_t *slot, uint64_t lo)
{
	struct map_list *m = ctx;
	uint32_t e = vmfsd_get_le32(slot) & VMFSD_MAP_PBLK_MASK;

	(void)lo;
	if (m->dir && e)
		badd(m->l, vmfsd_sub_off(&m->v->sb, e), "directory block");
	return 0;
}

static void add_map(struct vol *v, struct blist *l, struct vmfsd_inode *in)
{
	struct map_list m = { .v = v, .l = l, .dir = S_ISDIR(in->mode) };
	const struct vmfsd_maptree_ops ops = {
		.ctx = &m, .node_get = list_node, .node_release = list_release,
	};
	const struct vmfsd_maptree_walk w = { .ops = &ops, .to = UINT64_MAX, .leaf = list_leaf };
	int dirty;

	CHECK(vmfsd_maptree_walk(&w, in, &dirty));
}

/* Every metadata block of a small volume: superblocks, two heartbeat slots
 * (one used, one never claimed), two journal headers (likewise), the first
 * cluster of each bitmap, every inode in use, map nodes, directory blocks. */
static void list_blocks(struct vol *v, struct blist *l)
{
	static struct vmfsd_rc rc;
	struct vmfsd_inode in;
	uint64_t ino;

	badd(l, 0, "superblock");
	badd(l, v->sb.backup_blocknr * VMFSD_META_BLOCK, "backup superblock");
	badd(l, vmfsd_hb_slot_off(&v->sb, 0), "heartbeat slot (used)");
	if (v->sb.max_hosts > 1) {
		badd(l, vmfsd_hb_slot_off(&v->sb, 1), "heartbeat slot (never used)");
		badd(l, journal_area_off(&v->sb, 1), "journal header (never used)");
	}
	badd(l, journal_area_off(&v->sb, 0), "journal header (used)");
	badd(l, v->sb.ibm_off, "inode bitmap cluster");
	badd(l, v->sb.sbm_off, "sub-block bitmap cluster");
	badd(l, v->sb.dbm_off, "file-block bitmap cluster");
	rd(v, v->sb.ibm_off, v->blk);
	CHECK(vmfsd_rc_decode(v->blk, v->sb.ibm_off / VMFSD_META_BLOCK, &rc));
	for (ino = VMFSD_ROOT_INO; ino < rc.nitems; ino++) {
		if (!(rc.bitmap[ino / 8] & (1u << (ino % 8))))
			continue;
		badd(l, vmfsd_inode_off(&v->sb, ino), "inode");
		ino_get(v, ino, &in);
		if (in.data_mode != VMFSD_DATA_INLINE)
			add_map(v, l, &in);
	}
}

/* Flips bits of every metadata block, one at a time, and checks the
 * volume after each: the flip must be reported (never "clean") and the
 * checker must come back (a crash ends the test).  STRIDE > 1 flips every
 * STRIDE-th bit (with a rotating start, so every byte is hit). */
static void cmd_bitflip(const char *img, unsigned stride)
{
	struct fsck_opts fo = { .mode = FSCK_READONLY, .live_wait_ms = 1 };
	struct bdev *ro;
	struct blist l = { 0 };
	struct vol v;
	uint64_t flips = 0, missed = 0, opfail = 0;
	size_t b;
	struct timespec t0, t1;

	vol_open(&v, img, true);
	list_blocks(&v, &l);
	CHECK(bdev_open(img, BDEV_RDONLY, &ro));
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (b = 0; b < l.n; b++) {
		uint64_t bits = VMFSD_META_BLOCK * 8ull, bit, mb = 0;

		for (bit = b % stride; bit < bits; bit += stride) {
			struct fsck_result res;
			int r;

			flip(&v, l.v[b].off + bit / 8, (unsigned)(bit % 8));
			r = fsck_check(ro, &fo, &res);
			flips++;
			/* An operational error (no usable superblock) is a
			 * detection too: fsck exits 8, never 0. */
			if (r < 0)
				opfail++;
			else if (!res.found) {
				missed++;
				if (mb++ < 3)
					fprintf(stderr, "MISSED: %s at %#" PRIx64 ", byte %" PRIu64
						" bit %" PRIu64 "\n", l.v[b].what, l.v[b].off,
						bit / 8, bit % 8);
			}
			fsck_result_free(&res);
			flip(&v, l.v[b].off + bit / 8, (unsigned)(bit % 8));
		}
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	printf("bitflip: %zu metadata blocks, %" PRIu64 " flips, %" PRIu64 " missed, %" PRIu64
	       " refused as unusable, %.1f s\n", l.n, flips, missed, opfail,
	       (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9);
	bdev_close(ro);
	vol_close(&v);
	free(l.v);
	exit(missed ? 1 : 0);
}

/* ---------------- repair convergence ---------------- */

/* The data extents of the image, to put it back between rounds. */
struct extent {
	uint64_t off;
	size_t len;
	uint8_t *data;
};

static struct extent *save_image(const char *img, size_t *n, uint64_t *size)
{
	int fd = open(img, O_RDONLY);
	struct extent *v = NULL;
	off_t pos = 0, end;
	struct stat st;

	if (fd < 0 || fstat(fd, &st) < 0)
		die("%s: %s", img, strerror(errno));
	*size = (uint64_t)st.st_size;
	*n = 0;
	while ((pos = lseek(fd, pos, SEEK_DATA)) >= 0) {
		end = lseek(fd, pos, SEEK_HOLE);
		v = realloc(v, (*n + 1) * sizeof(*v));
		if (!v)
			die("out of memory");
		v[*n].off = (uint64_t)pos;
		v[*n].len = (size_t)(end - pos);
		v[*n].data = malloc(v[*n].len);
		if (!v[*n].data || pread(fd, v[*n].data, v[*n].len, pos) != (ssize_t)v[*n].len)
			die("read %s", img);
		(*n)++;
		pos = end;
	}
	close(fd);
	return v;
}

static void restore_image(const char *img, const struct extent *v, size_t n, uint64_t size)
{
	int fd = open(img, O_WRONLY);
	size_t i;

	if (fd < 0 || ftruncate(fd, 0) < 0 || ftruncate(fd, (off_t)size) < 0)
		die("%s: %s", img, strerror(errno));
	for (i = 0; i < n; i++)
		if (pwrite(fd, v[i].data, v[i].len, (off_t)v[i].off) != (ssize_t)v[i].len)
			die("restore %s", img);
	close(fd);
}

static uint64_t rs = 1;

static uint64_t rnd(void)
{
	rs ^= rs >> 12;
	rs ^= rs << 25;
	rs ^= rs >> 27;
	return rs * 0x2545f4914f6cdd1dull;
}

/* One random corruption: raw damage, or a structure that verifies but
 * says something wrong.  Describes it in DESC. */
static void random_damage(struct vol *v, const struct blist *l, char *desc, size_t len)
{
	const struct blk *b = &l->v[rnd() % l->n];
	struct vmfsd_inode in;
	unsigned k = (unsigned)(rnd() % 10);
	uint64_t off = b->off, ino;

	/* A block an earlier damage of this round broke gets raw damage. */
	rd(v, off, v->blk);
	if (!strcmp(b->what, "inode") &&
	    vmfsd_inode_decode(v->blk, off / VMFSD_META_BLOCK, &in))
		k = 0;
	if (k >= 3 && strstr(b->what, "bitmap cluster")) {
		static struct vmfsd_rc rc;
		uint32_t bit;

		if (vmfsd_rc_decode(v->blk, off / VMFSD_META_BLOCK, &rc) == 0) {
			bit = (uint32_t)(rnd() % (rnd() % 2 ? 64 : rc.nitems));
			rc.bitmap[bit / 8] ^= (uint8_t)(1u << (bit % 8));
			rc.nfree += (rc.bitmap[bit / 8] & (1u << (bit % 8))) ? -1 : 1;
			vmfsd_rc_encode(&rc, off / VMFSD_META_BLOCK, v->blk);
			wr(v, off, v->blk);
			snprintf(desc, len, "%s: bit %u toggled", b->what, bit);
			return;
		}
	}
	if (k < 3 || (strcmp(b->what, "inode") && strcmp(b->what, "directory block") &&
		      strcmp(b->what, "map node"))) {
		uint64_t at = off + rnd() % VMFSD_META_BLOCK;
		unsigned bit = (unsigned)(rnd() % 8);

		flip(v, at, bit);
		snprintf(desc, len, "flip %s %#" PRIx64 " byte %" PRIu64 " bit %u", b->what, off,
			 at - off, bit);
		return;
	}
	if (!strcmp(b->what, "inode")) {
		uint64_t val = rnd();
		static const char *const fields[] = {
			"nlink", "size", "alloc_units", "parent", "mode", "data_mode",
			"map_height", "map slot", "xattr_len", "generation",
		};
		unsigned f = (unsigned)(rnd() % 10);

		ino = (off - v->sb.itable_off) / VMFSD_META_BLOCK;
		ino_get(v, ino, &in);
		switch (f) {
		case 0: in.nlink = (uint32_t)(val % 4); break;
		case 1: in.size = val % 2 ? val % (1ull << 32) : in.size + (val % 9000) - 4500; break;
		case 2: in.alloc_units = val % 20000; break;
		case 3: in.parent = val % 20; break;
		case 4: in.mode = (uint32_t)(val % 2 ? (val & 0170000) | 0644 : S_IFDIR | 0755); break;
		case 5: in.data_mode = (uint8_t)(val % 3);
			if (in.data_mode == VMFSD_DATA_INLINE) {
				in.map_height = 0;
				if (in.size > VMFSD_INLINE_MAX)
					in.size = VMFSD_INLINE_MAX;
			}
			break;
		case 6: if (in.data_mode) in.map_height = (uint8_t)(val % 5); break;
		case 7: vmfsd_put_le32(in.map + (val % 8) * 4, (uint32_t)(val >> 8) %
				       (val % 2 ? 300 : 0x7fffffff)); break;
		case 8: in.xattr_len = (uint16_t)(val % 513); break;
		default: in.generation = val % 5; break;
		}
		ino_put(v, &in);
		snprintf(desc, len, "inode %" PRIu64 " %s := %#" PRIx64, ino, fields[f], val);
		return;
	}
	rd(v, off, v->blk);
	if (!strcmp(b->what, "map node")) {
		unsigned i = (unsigned)(rnd() % VMFSD_MAP_NODE_SLOTS);
		uint32_t val = (uint32_t)(rnd() % 400);

		vmfsd_map_slot_set(vmfsd_map_node_slots(v->blk), i, val);
		vmfsd_map_node_finish(v->blk, (off - v->sb.sub_off) / VMFSD_SUB_BLOCK_SIZE);
		snprintf(desc, len, "map node %#" PRIx64 " slot %u := %u", off, i, val);
	} else {
		unsigned o = 0, sz = 0, want = (unsigned)(rnd() % 8), i = 0;
		unsigned what = (unsigned)(rnd() % 3);
		struct vmfsd_disk_dirent *p;
		struct vmfsd_dirent de;

		while ((sz = vmfsd_dirent_get(v->blk, o, &de)) && i < want) {
			o += sz;
			i++;
		}
		if (!sz) {
			snprintf(desc, len, "nothing (empty directory block)");
			return;
		}
		p = vmfsd_dirent_at(v->blk, o);
		if (what == 0) {
			/* Often a directory, with the directory type: loops and
			 * second names. */
			p->ino = htole64(1 + rnd() % 40);
			if (rnd() % 2)
				p->d_type = 4;
		}
		else if (what == 1)
			p->d_type = (uint8_t)(rnd() % 16);
		else
			p->name[0] = (char)('a' + rnd() % 3);
		vmfsd_dir_block_finish(v->blk, (off - v->sb.sub_off) / VMFSD_SUB_BLOCK_SIZE);
		snprintf(desc, len, "directory block %#" PRIx64 " entry %u %s", off, i,
			 what == 0 ? "inode" : what == 1 ? "type" : "name");
	}
	wr(v, off, v->blk);
}

/* Reads everything through fs/ (read-only mount): what fsck calls clean
 * must be usable.  Returns 0 or a negative errno. */
static int walk_all(struct fs *fs, uint64_t dir, int depth)
{
	struct fs_dir *d;
	struct fs_dirent de;
	uint64_t i;
	int r;

	if (depth > 64)
		return -ELOOP;
	r = fs_opendir(fs, dir, &d);
	if (r)
		return r;
	for (i = 2; (r = fs_dir_entry(d, i, &de)) == 0; i++) {
		struct fs_attr a;

		r = fs_lookup(fs, dir, de.name, &a);
		if (r)
			break;
		if (S_ISDIR(a.mode)) {
			r = walk_all(fs, a.ino, depth + 1);
		} else if (S_ISREG(a.mode)) {
			struct fs_file *f;
			static char buf[1 << 16];
			uint64_t o;

			r = fs_open(fs, a.ino, O_RDONLY, &f);
			for (o = 0; !r && o < a.size && o < (8u << 20); o += sizeof(buf)) {
				ssize_t n = fs_read(fs, f, buf, sizeof(buf), o);

				if (n < 0)
					r = (int)n;
			}
			if (!r)
				r = fs_release(fs, f);
		}
		fs_forget(fs, a.ino, 1);
		if (r)
			break;
	}
	fs_closedir(d);
	return r == -ENOENT ? 0 : r;
}

/* Damages a copy of the volume at random, repairs it with the checker and
 * requires the next check to be clean and the volume to read back whole
 * through fs/: the repair converges, and fsck and fs agree on "sound". */
static void cmd_repairfuzz(const char *img, unsigned rounds, uint64_t seed)
{
	struct fsck_opts rep = { .mode = FSCK_REPAIR, .live_wait_ms = 1 };
	struct fsck_opts chk = { .mode = FSCK_READONLY, .live_wait_ms = 1 };
	struct blist l = { 0 };
	struct extent *ext;
	uint64_t size;
	size_t next;
	unsigned i, bad = 0, found = 0, refused = 0;
	struct vol v;

	rs = seed * 0x9e3779b97f4a7c15ull + 1;
	vol_open(&v, img, false);
	list_blocks(&v, &l);
	vol_close(&v);
	ext = save_image(img, &next, &size);
	for (i = 0; i < rounds; i++) {
		struct fs_mount_opts mo = { .host = "fscktest", .readonly = 1 };
		char desc[3][160];
		struct fsck_result res;
		unsigned nd = 1 + (unsigned)(rnd() % 3), k;
		struct bdev *bd;
		struct fs *fs;
		uint32_t p;
		int r;

		restore_image(img, ext, next, size);
		vol_open(&v, img, true);
		for (k = 0; k < nd; k++)
			random_damage(&v, &l, desc[k], sizeof(desc[k]));
		vol_close(&v);
		CHECK(bdev_open(img, 0, &bd));
		r = fsck_check(bd, &rep, &res);
		found += res.found > 0;
		refused += r < 0;
		if (getenv("FSCK_TOOL_VERBOSE"))
			for (k = 0; k < nd; k++)
				fprintf(stderr, "round %u: %s -> rc %d, %" PRIu64 " found\n", i, desc[k], r,
					res.found);
		fsck_result_free(&res);
		if (r == 0) {
			r = fsck_check(bd, &chk, &res);
			if (r == 0 && res.found) {
				bad++;
				fprintf(stderr, "round %u (seed %" PRIu64 "): not clean after repair:\n",
					i, seed);
				for (k = 0; k < nd; k++)
					fprintf(stderr, "  damage: %s\n", desc[k]);
				for (p = 0; p < res.n_problems; p++)
					fprintf(stderr, "  left: %s: %s\n", res.problems[p].code,
						res.problems[p].msg);
			}
			fsck_result_free(&res);
		}
		bdev_close(bd);
		if (r < 0) {
			/* Both superblocks gone, say: nothing to repair with. */
			continue;
		}
		if (!bad && (r = fs_mount(img, &mo, &fs, NULL)) == 0) {
			r = walk_all(fs, VMFSD_ROOT_INO, 0);
			fs_unmount(fs);
		}
		if (r) {
			bad++;
			fprintf(stderr, "round %u (seed %" PRIu64 "): clean, but fs/ says %s\n", i, seed,
				strerror(-r));
			for (k = 0; k < nd; k++)
				fprintf(stderr, "  damage: %s\n", desc[k]);
		}
		if (bad > 5)
			break;
	}
	restore_image(img, ext, next, size);
	printf("repairfuzz: %u rounds (%u repaired something, %u refused as unusable), %u not "
	       "converged\n", i, found, refused, bad);
	exit(bad ? 1 : 0);
}

int main(int argc, char **argv)
{
	if (argc < 3)
		die("usage: fsck-tool COMMAND IMAGE [ARGS..] (see the source)");
	if (!strcmp(argv[1], "populate"))
		cmd_populate(argv[2], argc > 3 ? (int)num(argv[3]) : 300);
	else if (!strcmp(argv[1], "bulk") && argc >= 4)
		cmd_bulk(argv[2], num(argv[3]), argc > 4 ? num(argv[4]) : 2048);
	else if (!strcmp(argv[1], "copy") && argc == 4) {
		struct fs *fs = mount_rw(argv[2]);

		copy_tree(fs, VMFSD_ROOT_INO, argv[3]);
		CHECK(fs_unmount(fs));
	} else if (!strcmp(argv[1], "info") && argc == 4)
		cmd_info(argv[2], argv[3]);
	else if (!strcmp(argv[1], "corrupt") && argc >= 4)
		corrupt(argv[2], argc - 3, argv + 3);
	else if (!strcmp(argv[1], "crash"))
		cmd_crash(argv[2]);
	else if (!strcmp(argv[1], "hold") && argc == 4)
		cmd_hold(argv[2], (unsigned)num(argv[3]));
	else if (!strcmp(argv[1], "repairfuzz") && argc >= 4)
		cmd_repairfuzz(argv[2], (unsigned)num(argv[3]), argc > 4 ? num(argv[4]) : 1);
	else if (!strcmp(argv[1], "bitflip"))
		cmd_bitflip(argv[2], argc > 3 ? (unsigned)num(argv[3]) : 1);
	else
		die("unknown command or wrong arguments: %s", argv[1]);
	return 0;
}
