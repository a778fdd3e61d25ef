// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Tests of mkfs.vmfsd as a program: it formats sparse image files, and what
 * it wrote is read back through bdev and checked with the format/ decoders
 * (both superblocks, every resource cluster, the root inode, the zeroed
 * heartbeat region).  Also: refusal of existing content without -f, lazy
 * formatting of a 15 TiB sparse file, and the error messages users see.
 *
 * The binary comes from $MKFS_VMFSD (set by meson), images go to a fresh
 * directory under $VMFSD_TEST_DIR or /var/tmp, which must support O_DIRECT
 * (tmpfs does not); the tests skip only when that is truly unavailable.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bdev/bdev.h"
#include "format/format.h"
#include "scratch_image.h"

static void setup(void)
{
	scratch_image_setup("mkfs");
}

static void teardown(void)
{
	char p[400];

	if (dir[0]) {
		snprintf(p, sizeof(p), "%s/other.img", dir);
		unlink(p);
	}
	scratch_image_teardown();
}

TestSuite(mkfs, .init = setup, .fini = teardown, .timeout = 60);

/* Runs "mkfs.vmfsd ARGS" with stdout and stderr into OUT; returns the exit
 * status.  ARGS are trusted test strings. */
static int run(char *out, size_t outlen, const char *fmt, ...)
{
	char args[1024], cmd[1400];
	va_list ap;
	FILE *f;
	size_t n = 0;
	int st;

	va_start(ap, fmt);
	vsnprintf(args, sizeof(args), fmt, ap);
	va_end(ap);
	snprintf(cmd, sizeof(cmd), "'%s' %s 2>&1", mkfs, args);
	f = popen(cmd, "r");
	cr_assert_not_null(f);
	if (out) {
		n = fread(out, 1, outlen - 1, f);
		out[n] = 0;
	} else {
		char sink[4096];

		while (fread(sink, 1, sizeof(sink), f) > 0)
			;
	}
	st = pclose(f);
	cr_assert(WIFEXITED(st), "mkfs.vmfsd did not exit: %s", cmd);
	return WEXITSTATUS(st);
}

static void read_sb(struct bdev *bd, uint64_t blocknr, struct vmfsd_sb *sb, void *buf)
{
	cr_assert_eq(bdev_pread(bd, buf, VMFSD_META_BLOCK, blocknr * VMFSD_META_BLOCK), 0);
	cr_assert_eq(vmfsd_sb_decode(buf, blocknr, sb), 0, "superblock at %llu",
		     (unsigned long long)blocknr);
}

/* Decodes every cluster of one kind; checks coverage, reserved items and
 * the free count.  Returns the number of free items. */
static uint64_t check_rcs(struct bdev *bd, const struct vmfsd_sb *sb, int kind,
			  uint64_t count, uint32_t nclusters, uint64_t reserved, void *buf)
{
	static struct vmfsd_rc rc;
	struct vmfsd_lock lk;
	uint64_t nfree = 0, covered = 0;
	uint32_t i;

	cr_assert_eq(bdev_pread(bd, buf, (size_t)nclusters * VMFSD_META_BLOCK,
				vmfsd_rc_off(sb, kind, 0)), 0);
	for (i = 0; i < nclusters; i++) {
		uint8_t *blk = (uint8_t *)buf + (size_t)i * VMFSD_META_BLOCK;
		uint64_t blocknr = vmfsd_rc_off(sb, kind, i) / VMFSD_META_BLOCK;
		uint64_t it, nres;

		cr_assert_eq(vmfsd_lock_decode(blk, blocknr, &lk), 0, "kind %d rc %u lock", kind, i);
		cr_assert_eq(lk.mode, VMFSD_LOCK_FREE);
		cr_assert_eq(vmfsd_rc_decode(blk, blocknr, &rc), 0, "kind %d rc %u", kind, i);
		cr_assert_eq(rc.kind, kind);
		cr_assert_eq(rc.index, i);
		cr_assert_eq(rc.first_item, covered);
		/* Reserved items set; decode already proved nfree equals the
		 * clear bits, so a right nfree means no other bit is set. */
		nres = reserved > rc.first_item ? reserved - rc.first_item : 0;
		if (nres > rc.nitems)
			nres = rc.nitems;
		for (it = 0; it < nres; it++)
			cr_assert(rc.bitmap[it / 8] & (1u << (it % 8)), "kind %d item %llu free",
				  kind, (unsigned long long)(rc.first_item + it));
		cr_assert_eq(rc.nfree, rc.nitems - nres, "kind %d rc %u nfree", kind, i);
		covered += rc.nitems;
		nfree += rc.nfree;
	}
	cr_assert_eq(covered, count, "kind %d covers %llu of %llu", kind,
		     (unsigned long long)covered, (unsigned long long)count);
	return nfree;
}

/* Reads back a formatted image and checks everything mkfs promised. */
static void check_volume(const char *path, const char *label, struct vmfsd_sb *out)
{
	static struct vmfsd_inode in;
	struct vmfsd_sb sb, backup;
	struct vmfsd_lock lk;
	struct bdev *bd;
	uint8_t *buf;
	size_t big;
	uint64_t i;

	cr_assert_eq(bdev_open(path, BDEV_RDONLY, &bd), 0);
	read_sb(bd, 0, &sb, (buf = bdev_alloc(VMFSD_META_BLOCK)));
	bdev_free(buf);
	cr_assert_str_eq(sb.label, label);
	cr_assert_eq(sb.device_size, bdev_size(bd));
	big = (size_t)(sb.sbm_count > sb.dbm_count ? sb.sbm_count : sb.dbm_count);
	if (big < sb.ibm_count)
		big = sb.ibm_count;
	if (big * VMFSD_META_BLOCK < (size_t)sb.max_hosts * VMFSD_META_BLOCK)
		big = sb.max_hosts;
	buf = bdev_alloc(big * VMFSD_META_BLOCK);
	cr_assert_not_null(buf);

	read_sb(bd, sb.backup_blocknr, &backup, buf);
	cr_assert_eq(memcmp(&sb, &backup, sizeof(sb)), 0, "backup differs from primary");

	cr_assert_eq(check_rcs(bd, &sb, VMFSD_RC_INODE, sb.inode_count, sb.ibm_count, 2, buf),
		     sb.inode_count - 2);
	cr_assert_eq(check_rcs(bd, &sb, VMFSD_RC_SUB, sb.sub_count, sb.sbm_count, 1, buf),
		     sb.sub_count - 1);
	cr_assert_eq(check_rcs(bd, &sb, VMFSD_RC_BLOCK, sb.block_count, sb.dbm_count, 1, buf),
		     sb.block_count - 1);

	cr_assert_eq(bdev_pread(bd, buf, VMFSD_META_BLOCK, vmfsd_inode_off(&sb, 1)), 0);
	i = vmfsd_inode_off(&sb, 1) / VMFSD_META_BLOCK;
	cr_assert_eq(vmfsd_lock_decode(buf, i, &lk), 0);
	cr_assert_eq(lk.mode, VMFSD_LOCK_FREE);
	cr_assert_eq(vmfsd_inode_decode(buf, i, &in), 0);
	cr_assert_eq(in.ino, VMFSD_ROOT_INO);
	cr_assert_eq(in.mode, 040755);
	cr_assert_eq(in.nlink, 2);
	cr_assert_eq(in.uid, 0);
	cr_assert_eq(in.gid, 0);
	cr_assert_eq(in.size, 0);
	cr_assert_eq(in.data_mode, VMFSD_DATA_SUB);
	cr_assert_eq(in.map_height, 0);
	cr_assert_eq(in.parent, VMFSD_ROOT_INO);
	cr_assert_eq(in.generation, 1);
	cr_assert_eq(in.change_seq, 1);
	cr_assert(in.mtime_sec > 1600000000 && in.mtime_sec <= time(NULL));
	for (i = 0; i < VMFSD_MAP_AREA; i++)
		cr_assert_eq(in.map[i], 0);

	/* Heartbeat slots all zero: never claimed. */
	cr_assert_eq(bdev_pread(bd, buf, (size_t)sb.max_hosts * VMFSD_META_BLOCK, sb.hb_off), 0);
	for (i = 0; i < (uint64_t)sb.max_hosts * VMFSD_META_BLOCK; i++)
		cr_assert_eq(buf[i], 0, "heartbeat byte %llu", (unsigned long long)i);
	/* Journal heads zero. */
	cr_assert_eq(bdev_pread(bd, buf, VMFSD_META_BLOCK,
				sb.journal_off + (sb.max_hosts - 1) * sb.journal_size), 0);
	for (i = 0; i < VMFSD_META_BLOCK; i++)
		cr_assert_eq(buf[i], 0);

	bdev_free(buf);
	bdev_close(bd);
	if (out)
		*out = sb;
}

Test(mkfs, format_and_refuse)
{
	char out[8192], uuid1[64];
	struct vmfsd_sb sb, sb2;
	const char *p;

	cr_assert_eq(run(out, sizeof(out), "-L ds1 -s 4G '%s'", img), 0, "%s", out);
	cr_assert(strstr(out, "capacity: "), "%s", out);
	cr_assert(strstr(out, "GiB) raw"), "%s", out);
	check_volume(img, "ds1", &sb);
	cr_assert_eq(sb.device_size, 4ull << 30);
	p = strstr(out, "UUID: ");
	cr_assert_not_null(p);
	snprintf(uuid1, sizeof(uuid1), "%.36s", p + 6);

	/* Again without -f: refused, naming label and UUID. */
	cr_assert_eq(run(out, sizeof(out), "-s 4G '%s'", img), 1);
	cr_assert(strstr(out, "mkfs.vmfsd: "), "%s", out);
	cr_assert(strstr(out, "'ds1'") && strstr(out, uuid1), "%s", out);
	cr_assert(strstr(out, "-f"), "%s", out);

	/* With -f: a new volume, grown to 5 GiB, quietly. */
	cr_assert_eq(run(out, sizeof(out), "-q -f -L ds2 -b 64K -H 8 -s 5G '%s'", img), 0,
		     "%s", out);
	cr_assert_str_eq(out, "");
	check_volume(img, "ds2", &sb2);
	cr_assert_eq(sb2.block_size, 64u << 10);
	cr_assert_eq(sb2.max_hosts, 8);
	cr_assert_eq(sb2.device_size, 5ull << 30);
	cr_assert_neq(memcmp(sb.uuid, sb2.uuid, 16), 0);
}

Test(mkfs, refuse_backup_only)
{
	char out[8192];
	struct bdev *bd;
	void *z = bdev_alloc(VMFSD_META_BLOCK);

	cr_assert_eq(run(out, sizeof(out), "-L half -s 1G '%s'", img), 0, "%s", out);
	/* Destroy the primary: the backup alone still marks a volume. */
	memset(z, 0, VMFSD_META_BLOCK);
	cr_assert_eq(bdev_open(img, 0, &bd), 0);
	cr_assert_eq(bdev_pwrite(bd, z, VMFSD_META_BLOCK, 0), 0);
	bdev_close(bd);
	bdev_free(z);
	cr_assert_eq(run(out, sizeof(out), "'%s'", img), 1);
	cr_assert(strstr(out, "'half'") && strstr(out, "backup"), "%s", out);
}

Test(mkfs, refuse_ext4)
{
	char out[8192], cmd[600];

	if (access("/sbin/mkfs.ext4", X_OK) && access("/usr/sbin/mkfs.ext4", X_OK))
		cr_skip_test("mkfs.ext4 not installed");
	snprintf(cmd, sizeof(cmd), "PATH=$PATH:/sbin:/usr/sbin mkfs.ext4 -q -F -L old '%s' 512M"
		 " >/dev/null 2>&1", img);
	cr_assert_eq(system(cmd), 0);
	cr_assert_eq(run(out, sizeof(out), "'%s'", img), 1);
	cr_assert(strstr(out, "ext4"), "%s", out);
	cr_assert_eq(run(out, sizeof(out), "-f '%s'", img), 0, "%s", out);
	cr_assert(strstr(out, "Overwriting"), "%s", out);
	check_volume(img, "", NULL);
	/* The old signature is gone: blkid (libblkid) finds nothing now. */
	snprintf(cmd, sizeof(cmd), "PATH=$PATH:/sbin:/usr/sbin blkid -p '%s' >/dev/null 2>&1", img);
	if (!access("/sbin/blkid", X_OK) || !access("/usr/sbin/blkid", X_OK))
		cr_assert_neq(WEXITSTATUS(system(cmd)), 0, "blkid still sees a signature");
}

/* A DOS partition table written by hand (no partitioning tool needed). */
Test(mkfs, refuse_partition_table)
{
	static const uint8_t entry[16] = {
		0x00, 0x00, 0x02, 0x00, 0x83, 0xff, 0xff, 0xff,
		0x00, 0x08, 0x00, 0x00, 0x00, 0xf8, 0x1f, 0x00,  /* LBA 2048, ~1 GiB */
	};
	uint8_t mbr[512] = { 0 };
	char out[8192];
	int fd;

	memcpy(mbr + 440, "\x12\x34\x56\x78", 4);
	memcpy(mbr + 446, entry, sizeof(entry));
	mbr[510] = 0x55;
	mbr[511] = 0xaa;
	fd = open(img, O_CREAT | O_WRONLY, 0600);
	cr_assert(fd >= 0);
	cr_assert_eq(ftruncate(fd, 1ll << 30), 0);
	cr_assert_eq(pwrite(fd, mbr, sizeof(mbr), 0), (ssize_t)sizeof(mbr));
	close(fd);
	cr_assert_eq(run(out, sizeof(out), "'%s'", img), 1);
	cr_assert(strstr(out, "partition table of type dos"), "%s", out);
	cr_assert_eq(run(out, sizeof(out), "-q -f '%s'", img), 0, "%s", out);
	check_volume(img, "", NULL);
}

/* An OFD lock held on the image (as an ATS in flight, another mkfs or an
 * fsck repair holds one) means "in use on this host": refused even with
 * -f, and the file is left alone. */
Test(mkfs, refuse_locked)
{
	struct flock fl = { .l_type = F_RDLCK, .l_whence = SEEK_SET, .l_start = 1 << 20,
			    .l_len = 4096 };
	struct stat st;
	char out[8192];
	int fd;

	cr_assert_eq(run(out, sizeof(out), "-q -s 1G '%s'", img), 0, "%s", out);
	fd = open(img, O_RDONLY);
	cr_assert(fd >= 0);
	cr_assert_eq(fcntl(fd, F_OFD_SETLK, &fl), 0);
	cr_assert_eq(run(out, sizeof(out), "-f -s 2G '%s'", img), 1);
	cr_assert(strstr(out, "in use"), "%s", out);
	cr_assert_eq(stat(img, &st), 0);
	cr_assert_eq(st.st_size, 1ll << 30, "a refused run resized the image");
	close(fd);
	cr_assert_eq(run(out, sizeof(out), "-q -f '%s'", img), 0, "%s", out);
}

struct beater {
	struct bdev *bd;
	uint64_t off;
	atomic_bool stop;
	atomic_bool beating;    /* the first LIVE record is on disk */
};

/* A host of another machine: renews heartbeat slot 0 every 20 ms. */
static void *beat(void *arg)
{
	struct beater *b = arg;
	struct vmfsd_hb hb = { .state = VMFSD_HB_LIVE, .generation = 1, .slot = 0 };
	void *blk = bdev_alloc(VMFSD_META_BLOCK);
	struct timespec ts = { 0, 20 * 1000000L };

	strcpy(hb.host_name, "esx-remote");
	while (!atomic_load(&b->stop)) {
		hb.counter++;
		vmfsd_hb_encode(&hb, b->off / VMFSD_META_BLOCK, blk);
		bdev_pwrite(b->bd, blk, VMFSD_META_BLOCK, b->off);
		atomic_store(&b->beating, true);
		nanosleep(&ts, NULL);
	}
	bdev_free(blk);
	return NULL;
}

/* Even -f does not format a volume whose heartbeat slots are moving; a
 * stale LIVE slot (a crashed host) only costs the watch time. */
Test(mkfs, refuse_live_host)
{
	struct beater b = { 0 };
	struct vmfsd_sb sb;
	pthread_t t;
	char out[8192];

	cr_assert_eq(run(out, sizeof(out), "-q -L busy --hb-interval 100 --hb-timeout 1000 -s 1G '%s'",
			 img), 0, "%s", out);
	check_volume(img, "busy", &sb);
	cr_assert_eq(bdev_open(img, 0, &b.bd), 0);
	b.off = vmfsd_hb_slot_off(&sb, 0);
	cr_assert_eq(pthread_create(&t, NULL, beat, &b), 0);
	/* mkfs must find a host that is live: until the thread's first beat is
	 * on disk the slot is free (on a loaded machine mkfs ran first and
	 * formatted, as it should with no host there). */
	while (!atomic_load(&b.beating))
		usleep(1000);
	cr_assert_eq(run(out, sizeof(out), "-f '%s'", img), 1);
	atomic_store(&b.stop, true);
	pthread_join(t, NULL);
	bdev_close(b.bd);
	cr_assert(strstr(out, "live host") && strstr(out, "esx-remote (slot 0)"), "%s", out);

	/* The slot is LIVE but no longer moves: a dead host. */
	cr_assert_eq(run(out, sizeof(out), "-f '%s'", img), 0, "%s", out);
	cr_assert(strstr(out, "Watching 1 heartbeat slot"), "%s", out);
	check_volume(img, "", NULL);
}

Test(mkfs, lazy_15t)
{
	char out[8192];
	struct timespec a, b;
	struct stat st;
	double secs;

	clock_gettime(CLOCK_MONOTONIC, &a);
	cr_assert_eq(run(out, sizeof(out), "-s 15T '%s'", img), 0, "%s", out);
	clock_gettime(CLOCK_MONOTONIC, &b);
	secs = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
	cr_assert_eq(stat(img, &st), 0);
	cr_assert_eq((uint64_t)st.st_size, 15ull << 40);
	/* Lazy: well under 256 MiB allocated (bitmaps, journal heads). */
	cr_assert((uint64_t)st.st_blocks * 512 < (256ull << 20), "%llu bytes allocated",
		  (unsigned long long)st.st_blocks * 512);
	/* The design asks for well under a second; allow slow CI machines. */
	cr_assert(secs < 5.0, "15 TiB took %.2f s", secs);
	check_volume(img, "", NULL);
}

Test(mkfs, errors)
{
	char out[8192], other[400];
	int fd;

	/* Too small: says so and gives the minimum. */
	cr_assert_eq(run(out, sizeof(out), "-s 100M '%s'", img), 1);
	cr_assert(strstr(out, "too small") && strstr(out, "at least"), "%s", out);
	cr_assert_eq(access(img, F_OK), -1, "a failed run left the image it created");

	cr_assert_eq(run(out, sizeof(out), "-b 3M -s 1G '%s'", img), 1);
	cr_assert(strstr(out, "power of two"), "%s", out);
	cr_assert_eq(run(out, sizeof(out), "-b 32K -s 1G '%s'", img), 1);
	cr_assert_eq(run(out, sizeof(out), "-s 4X '%s'", img), 1);
	cr_assert(strstr(out, "suffix"), "%s", out);
	cr_assert_eq(run(out, sizeof(out), "-H 0 -s 1G '%s'", img), 1);
	cr_assert_eq(run(out, sizeof(out), "-H 257 -s 1G '%s'", img), 1);
	cr_assert_eq(run(out, sizeof(out), "--hb-interval 1000 --hb-timeout 1500 -s 1G '%s'",
			 img), 1);
	cr_assert(strstr(out, "twice"), "%s", out);
	cr_assert_eq(run(out, sizeof(out), "-L a/b -s 1G '%s'", img), 1);
	cr_assert_eq(access(img, F_OK), -1, "a refused run created the image");

	/* Not there and no -s; a directory; no device at all. */
	snprintf(other, sizeof(other), "%s/other.img", dir);
	cr_assert_eq(run(out, sizeof(out), "'%s'", other), 1);
	cr_assert(strstr(out, "-s SIZE"), "%s", out);
	cr_assert_eq(run(out, sizeof(out), "'%s'", dir), 1);
	cr_assert(strstr(out, "not a regular file or block device"), "%s", out);
	cr_assert_eq(run(out, sizeof(out), ""), 1);

	/* Size suffixes: binary and decimal. */
	cr_assert_eq(run(out, sizeof(out), "-q -s 1GiB '%s'", img), 0, "%s", out);
	check_volume(img, "", NULL);
	cr_assert_eq(run(out, sizeof(out), "-q -f -s 2000MB '%s'", img), 0, "%s", out);
	{
		struct stat st;

		cr_assert_eq(stat(img, &st), 0);
		cr_assert_eq(st.st_size, 2000000000);
	}
	/* Shrinking an (empty) file needs -f. */
	unlink(img);
	fd = open(img, O_CREAT | O_WRONLY, 0600);
	cr_assert(fd >= 0);
	cr_assert_eq(ftruncate(fd, 2ll << 30), 0);
	close(fd);
	cr_assert_eq(run(out, sizeof(out), "-s 1G '%s'", img), 1);
	cr_assert(strstr(out, "shrink"), "%s", out);
	cr_assert_eq(run(out, sizeof(out), "-q -f -s 1G '%s'", img), 0, "%s", out);
	check_volume(img, "", NULL);

	/* tmpfs before Linux 6.6 has no O_DIRECT: a clear message then. */
	snprintf(other, sizeof(other), "/dev/shm/vmfsd-mkfs-test-%d.img", (int)getpid());
	fd = open(other, O_CREAT | O_RDWR | O_DIRECT, 0600);
	if (fd < 0 && errno == EINVAL) {
		cr_assert_eq(run(out, sizeof(out), "-s 1G '%s'", other), 1);
		cr_assert(strstr(out, "does not support direct I/O"), "%s", out);
		cr_assert_eq(access(other, F_OK), -1);
	}
	if (fd >= 0)
		close(fd);
	unlink(other);
}

Test(mkfs, help_version)
{
	char out[8192];

	cr_assert_eq(run(out, sizeof(out), "--help"), 0);
	cr_assert(strstr(out, "Usage: mkfs.vmfsd"), "%s", out);
	cr_assert_eq(run(out, sizeof(out), "-V"), 0);
	cr_assert(strstr(out, "mkfs.vmfsd from vmfsd "), "%s", out);
	cr_assert_eq(run(out, sizeof(out), "--bogus x"), 1);
}
