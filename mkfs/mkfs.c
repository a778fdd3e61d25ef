// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * mkfs.vmfsd: format a LUN (block device or image file) as a vmfsd volume.
 *
 * The layout comes from vmfsd_layout_compute() in format/, so mkfs, vmfsd
 * and fsck agree on every offset; this program only decides what to write.
 * Formatting is lazy (docs/format.md §3): the data, sub-block and inode regions are
 * never touched; only the superblocks, the resource-cluster bitmaps (the
 * allocator's truth), the root inode and a few small zeroed areas are
 * written, so a 15 TiB sparse image formats in a fraction of a second.
 *
 * Write order is the crash story: old signatures and the old primary
 * superblock are destroyed first, then every region is written and flushed,
 * then the backup superblock and last the primary, which is the commit point
 * (a crash before it leaves a device that no tool takes for a volume).
 */
#include <blkid.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bdev/bdev.h"
#include "format/format.h"

#ifndef VMFSD_VERSION
#define VMFSD_VERSION "unknown"
#endif

#define PROG "mkfs.vmfsd"

/* Bitmap clusters are built in a buffer of this size and written with one
 * bdev_pwrite each: large enough that a 64 TiB volume with 64 KiB blocks
 * (~44k clusters, 170 MiB) needs few system calls, small enough to stay
 * cheap for a 1 GiB image. */
#define RC_BATCH_BYTES (4u << 20)
/* Zeroed head of each host's journal: the journal code reads its header from
 * there and must find nothing from a previous life of the device. */
#define JOURNAL_ZERO_BYTES (1u << 20)
/* Per-host journal bounds for -J: at least one region, and small enough that
 * max_hosts journals never dominate the volume (or overflow an offset). */
#define JOURNAL_MIN (1ull << 20)
#define JOURNAL_MAX (16ull << 30)
/* -N bound: check_layout accepts up to 2^40, but 2^32 inodes already mean a
 * 16 TiB inode table; anything larger is a typo. */
#define INODES_MAX (1ull << 32)
/* -S bounds: 256 sub-blocks is already a toy (tests use it to exhaust the
 * pool quickly); above 256 GiB the 31-bit sub-block numbers come near. */
#define SUB_POOL_MIN (1ull << 20)
#define SUB_POOL_MAX (256ull << 30)

struct opts {
	bool force;
	bool quiet;
	const char *label;
	uint32_t block_size;
	uint32_t max_hosts;
	uint32_t hb_interval_ms;
	uint32_t hb_timeout_ms;
	uint64_t journal_size;
	uint64_t inode_count;
	uint64_t sub_size;
	uint64_t size;          /* -s: 0 = not given */
	bool pr_fence;          /* --pr-fence */
	const char *device;
};

/* Magic signatures found by libblkid, to be zeroed when -f is given. */
struct sig {
	uint64_t off;
	size_t len;
};

struct sig_list {
	struct sig *v;
	size_t n;
};

static void __attribute__((format(printf, 1, 2))) err(const char *fmt, ...)
{
	va_list ap;

	fputs(PROG ": ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static void usage(FILE *out)
{
	fprintf(out,
		"Usage: " PROG " [options] DEVICE\n"
		"\n"
		"Create a vmfsd shared-disk cluster filesystem on DEVICE (a block\n"
		"device or a regular image file).\n"
		"\n"
		"Options:\n"
		"  -f, --force              overwrite an existing filesystem or partition table\n"
		"  -L, --label LABEL        volume label (at most %u bytes)\n"
		"  -b, --block-size SIZE    file block size, power of two 64K..64M (default 1M)\n"
		"  -H, --max-hosts N        heartbeat slots = hosts that may mount (1..%u, default %u)\n"
		"  -s, --size SIZE          create or resize the image file DEVICE to SIZE (sparse)\n"
		"      --hb-interval MS     heartbeat renewal interval (default %u ms)\n"
		"      --hb-timeout MS      a host silent this long is dead (default %u ms,\n"
		"                           at least twice the interval)\n"
		"      --pr-fence           hosts fence each other with SCSI persistent\n"
		"                           reservations (iSCSI LUNs; see vmfsd(8))\n"
		"  -J, --journal-size SIZE  journal size per host (default: 1/256 of the volume\n"
		"                           shared by all hosts, 1M..64M each)\n"
		"  -N, --inodes N           number of inodes (default: one per 512K, 16K..4M)\n"
		"  -S, --sub-pool SIZE      sub-block pool for small files, directories and\n"
		"                           block maps (default: 1/256 of the volume, 192M..16G)\n"
		"  -q, --quiet              print nothing but errors\n"
		"  -V, --version            print the version and exit\n"
		"  -h, --help               print this help and exit\n"
		"\n"
		"SIZE takes the suffixes K, M, G, T, P, E (also KiB, MiB, ...: powers of 1024)\n"
		"or KB, MB, GB, TB, PB, EB (powers of 1000).\n"
		"\n"
		"See mkfs.vmfsd(8).\n",
		VMFSD_LABEL_MAX, VMFSD_MAX_HOSTS, VMFSD_DEF_MAX_HOSTS,
		VMFSD_DEF_HB_INTERVAL_MS, VMFSD_DEF_HB_TIMEOUT_MS);
}

/* Parses "123", "4K", "4KiB", "4KB" (decimal, as util-linux does).
 * Returns 0, -EINVAL (not a number, unknown suffix) or -ERANGE. */
static int parse_size(const char *s, uint64_t *out)
{
	static const char units[] = "KMGTPE";
	unsigned long long v;
	const char *u;
	char *end;
	uint64_t base = 1024, mult = 1;
	int exp = 0;

	if (!*s || *s == '-' || !isdigit((unsigned char)*s))
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno == ERANGE)
		return -ERANGE;
	if (*end) {
		u = strchr(units, toupper((unsigned char)*end));
		if (!u || !*u)
			return -EINVAL;
		exp = (int)(u - units) + 1;
		end++;
		if (!strcmp(end, "iB") || !*end)
			base = 1024;
		else if (!strcmp(end, "B"))
			base = 1000;
		else
			return -EINVAL;
	}
	while (exp--) {
		if (mult > UINT64_MAX / base)
			return -ERANGE;
		mult *= base;
	}
	if (v && mult > UINT64_MAX / v)
		return -ERANGE;
	*out = (uint64_t)v * mult;
	return 0;
}

static int parse_u32(const char *s, uint32_t min, uint32_t max, uint32_t *out)
{
	unsigned long long v;
	char *end;

	if (!isdigit((unsigned char)*s))
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end)
		return -EINVAL;
	if (v < min || v > max)
		return -ERANGE;
	*out = (uint32_t)v;
	return 0;
}

static void fmt_uuid(const uint8_t *u, char out[37])
{
	snprintf(out, 37,
		 "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
		 u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7],
		 u[8], u[9], u[10], u[11], u[12], u[13], u[14], u[15]);
}

/* "1 MiB", "64 KiB": block sizes are powers of two, so this is exact. */
static void fmt_pow2(uint64_t v, char *out, size_t len)
{
	static const char *const unit[] = { "bytes", "KiB", "MiB", "GiB", "TiB", "PiB" };
	unsigned i = 0;

	while (v >= 1024 && !(v % 1024) && i < 5) {
		v /= 1024;
		i++;
	}
	snprintf(out, len, "%" PRIu64 " %s", v, unit[i]);
}

/* Both units, because "256 GB" disks show up as 238 GiB and people ask. */
static void fmt_gb(uint64_t v, char *out, size_t len)
{
	snprintf(out, len, "%.2f GB (%.2f GiB)", (double)v / 1e9,
		 (double)v / (double)(1ull << 30));
}

static int label_check(const char *l)
{
	const unsigned char *p;

	if (strlen(l) > VMFSD_LABEL_MAX)
		return -ENAMETOOLONG;
	/* The label names the mount point /vmfs/volumes/<label>. */
	if (!strcmp(l, ".") || !strcmp(l, ".."))
		return -EINVAL;
	for (p = (const unsigned char *)l; *p; p++)
		if (*p == '/' || *p < 0x20 || *p == 0x7f)
			return -EINVAL;
	return 0;
}

static int parse_args(int argc, char **argv, struct opts *o)
{
	enum { OPT_HB_INTERVAL = 0x100, OPT_HB_TIMEOUT, OPT_PR_FENCE };
	static const struct option longopts[] = {
		{ "force", no_argument, NULL, 'f' },
		{ "label", required_argument, NULL, 'L' },
		{ "block-size", required_argument, NULL, 'b' },
		{ "max-hosts", required_argument, NULL, 'H' },
		{ "size", required_argument, NULL, 's' },
		{ "hb-interval", required_argument, NULL, OPT_HB_INTERVAL },
		{ "hb-timeout", required_argument, NULL, OPT_HB_TIMEOUT },
		{ "pr-fence", no_argument, NULL, OPT_PR_FENCE },
		{ "journal-size", required_argument, NULL, 'J' },
		{ "inodes", required_argument, NULL, 'N' },
		{ "sub-pool", required_argument, NULL, 'S' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	uint64_t v;
	int c, r;

	while ((c = getopt_long(argc, argv, "fL:b:H:s:J:N:S:qVh", longopts, NULL)) != -1) {
		switch (c) {
		case 'f':
			o->force = true;
			break;
		case 'q':
			o->quiet = true;
			break;
		case 'L':
			r = label_check(optarg);
			if (r == -ENAMETOOLONG) {
				err("label '%s' is longer than %u bytes", optarg, VMFSD_LABEL_MAX);
				return -EINVAL;
			}
			if (r) {
				err("label '%s' must not be '.' or '..' nor contain '/' or control characters",
				    optarg);
				return -EINVAL;
			}
			o->label = optarg;
			break;
		case 'b':
			r = parse_size(optarg, &v);
			if (r == -EINVAL) {
				err("invalid block size '%s' (unknown suffix?)", optarg);
				return r;
			}
			if (r || v < VMFSD_MIN_BLOCK_SIZE || v > VMFSD_MAX_BLOCK_SIZE || (v & (v - 1))) {
				err("invalid block size '%s': must be a power of two from 64K to 64M",
				    optarg);
				return -EINVAL;
			}
			o->block_size = (uint32_t)v;
			break;
		case 'H':
			if (parse_u32(optarg, 1, VMFSD_MAX_HOSTS, &o->max_hosts)) {
				err("invalid max hosts '%s': must be 1..%u", optarg, VMFSD_MAX_HOSTS);
				return -EINVAL;
			}
			break;
		case 's':
			r = parse_size(optarg, &o->size);
			if (r == -EINVAL) {
				err("invalid size '%s' (unknown suffix?)", optarg);
				return r;
			}
			if (r || !o->size || o->size > (uint64_t)INT64_MAX) {
				err("invalid size '%s'", optarg);
				return -EINVAL;
			}
			break;
		case OPT_HB_INTERVAL:
			if (parse_u32(optarg, 1, 3600000, &o->hb_interval_ms)) {
				err("invalid heartbeat interval '%s' (milliseconds, 1..3600000)", optarg);
				return -EINVAL;
			}
			break;
		case OPT_PR_FENCE:
			o->pr_fence = true;
			break;
		case OPT_HB_TIMEOUT:
			if (parse_u32(optarg, 2, 7200000, &o->hb_timeout_ms)) {
				err("invalid heartbeat timeout '%s' (milliseconds, 2..7200000)", optarg);
				return -EINVAL;
			}
			break;
		case 'J':
			r = parse_size(optarg, &v);
			if (r == -EINVAL) {
				err("invalid journal size '%s' (unknown suffix?)", optarg);
				return r;
			}
			if (r || v < JOURNAL_MIN || v > JOURNAL_MAX) {
				err("invalid journal size '%s': must be 1M..16G per host", optarg);
				return -EINVAL;
			}
			o->journal_size = v;
			break;
		case 'N':
			r = parse_size(optarg, &v);
			if (r || v < 16 || v > INODES_MAX) {
				err("invalid inode count '%s': must be 16..%llu", optarg,
				    (unsigned long long)INODES_MAX);
				return -EINVAL;
			}
			o->inode_count = v;
			break;
		case 'S':
			r = parse_size(optarg, &v);
			if (r == -EINVAL) {
				err("invalid sub-block pool size '%s' (unknown suffix?)", optarg);
				return r;
			}
			if (r || v < SUB_POOL_MIN || v > SUB_POOL_MAX) {
				err("invalid sub-block pool size '%s': must be 1M..256G", optarg);
				return -EINVAL;
			}
			o->sub_size = v / VMFSD_SUB_BLOCK_SIZE * VMFSD_SUB_BLOCK_SIZE;
			break;
		case 'V':
			printf(PROG " from vmfsd " VMFSD_VERSION "\n");
			exit(0);
		case 'h':
			usage(stdout);
			exit(0);
		default:
			fprintf(stderr, "Try '" PROG " --help' for more information.\n");
			return -EINVAL;
		}
	}
	if (optind != argc - 1) {
		err(optind >= argc ? "no device specified" : "too many arguments");
		fprintf(stderr, "Try '" PROG " --help' for more information.\n");
		return -EINVAL;
	}
	o->device = argv[optind];
	{
		uint32_t iv = o->hb_interval_ms ? o->hb_interval_ms : VMFSD_DEF_HB_INTERVAL_MS;
		uint32_t to = o->hb_timeout_ms ? o->hb_timeout_ms : VMFSD_DEF_HB_TIMEOUT_MS;

		/* Death is declared after missed renewals, never after one. */
		if (to < 2 * iv) {
			err("heartbeat timeout %u ms must be at least twice the interval %u ms",
			    to, iv);
			return -EINVAL;
		}
	}
	return 0;
}

/* ---------------- existing content ---------------- */

/* Records where each magic signature of the probe's current result sits. */
static void sig_add(blkid_probe pr, const char *off_name, const char *magic_name,
		    struct sig_list *sl)
{
	const char *off, *magic;
	size_t len;
	struct sig *v;

	if (blkid_probe_lookup_value(pr, off_name, &off, NULL) ||
	    blkid_probe_lookup_value(pr, magic_name, &magic, &len))
		return;
	(void)magic;
	v = realloc(sl->v, (sl->n + 1) * sizeof(*v));
	if (!v)
		return;
	sl->v = v;
	sl->v[sl->n].off = strtoull(off, NULL, 10);
	sl->v[sl->n].len = len;
	sl->n++;
}

/* Lists every superblock and partition-table signature, like wipefs -n:
 * blkid_do_probe steps through all probers, one result per call. */
static void blkid_list_sigs(const char *path, struct sig_list *sl)
{
	blkid_probe pr = blkid_new_probe_from_filename(path);

	if (!pr)
		return;
	blkid_probe_enable_superblocks(pr, 1);
	blkid_probe_set_superblocks_flags(pr, BLKID_SUBLKS_MAGIC | BLKID_SUBLKS_BADCSUM);
	blkid_probe_enable_partitions(pr, 1);
	blkid_probe_set_partitions_flags(pr, BLKID_PARTS_MAGIC);
	while (blkid_do_probe(pr) == 0) {
		sig_add(pr, "SBMAGIC_OFFSET", "SBMAGIC", sl);
		sig_add(pr, "PTMAGIC_OFFSET", "PTMAGIC", sl);
	}
	blkid_free_probe(pr);
}

/* Returns 1 and describes what it found in DESC, 0 if nothing, <0 on error. */
static int blkid_check(const char *path, char *desc, size_t len)
{
	blkid_probe pr = blkid_new_probe_from_filename(path);
	const char *type = NULL, *label = NULL, *uuid = NULL;
	int r;

	if (!pr)
		return errno ? -errno : -EIO;
	blkid_probe_enable_superblocks(pr, 1);
	blkid_probe_set_superblocks_flags(pr, BLKID_SUBLKS_TYPE | BLKID_SUBLKS_LABEL |
					  BLKID_SUBLKS_UUID);
	blkid_probe_enable_partitions(pr, 1);
	r = blkid_do_safeprobe(pr);
	if (r == -2) {
		snprintf(desc, len, "several conflicting signatures");
		r = 1;
	} else if (r == 0) {
		if (!blkid_probe_lookup_value(pr, "TYPE", &type, NULL)) {
			blkid_probe_lookup_value(pr, "LABEL", &label, NULL);
			blkid_probe_lookup_value(pr, "UUID", &uuid, NULL);
			snprintf(desc, len, "a filesystem of type %s (label '%s', UUID %s)", type,
				 label ? label : "", uuid ? uuid : "none");
		} else if (!blkid_probe_lookup_value(pr, "PTTYPE", &type, NULL)) {
			snprintf(desc, len, "a partition table of type %s", type);
		} else {
			snprintf(desc, len, "an unknown signature");
		}
		r = 1;
	} else if (r == 1) {
		r = 0;
	} else {
		r = -EIO;
	}
	blkid_free_probe(pr);
	return r;
}

/* libblkid does not know vmfsd: look for our own superblock magic, primary
 * then backup.  Returns 1 with a description, 0 if none, <0 on error;
 * *decoded tells whether SB holds a valid superblock. */
static int vmfsd_check(const char *path, char *desc, size_t len, struct vmfsd_sb *sb,
		       bool *decoded)
{
	struct bdev *bd;
	uint64_t size, blk[2];
	void *buf;
	char uuid[37];
	int r, i, found = 0;

	r = bdev_open(path, BDEV_RDONLY, &bd);
	if (r)
		return r;
	size = bdev_size(bd);
	buf = bdev_alloc(VMFSD_META_BLOCK);
	if (!buf) {
		bdev_close(bd);
		return -ENOMEM;
	}
	blk[0] = 0;
	blk[1] = size / VMFSD_META_BLOCK ? size / VMFSD_META_BLOCK - 1 : 0;
	for (i = 0; i < 2 && !found && size >= VMFSD_META_BLOCK; i++) {
		/* io_uring reads are invisible to valgrind: start defined. */
		memset(buf, 0, VMFSD_META_BLOCK);
		if (bdev_pread(bd, buf, VMFSD_META_BLOCK, blk[i] * VMFSD_META_BLOCK))
			continue;
		if (vmfsd_get_le64(buf) != VMFSD_SB_MAGIC)
			continue;
		found = 1;
		r = vmfsd_sb_decode(buf, blk[i], sb);
		if (r == 0 || r == -EOPNOTSUPP) {
			*decoded = r == 0;
			fmt_uuid(sb->uuid, uuid);
			snprintf(desc, len, "a vmfsd volume (label '%s', UUID %s%s)", sb->label,
				 uuid, i ? ", backup superblock only" : "");
		} else {
			snprintf(desc, len, "a vmfsd volume with a damaged %s superblock",
				 i ? "backup" : "primary");
		}
	}
	bdev_free(buf);
	bdev_close(bd);
	return found;
}

/* Hosts of other machines that still have the old volume mounted: a slot
 * in use whose sector changes while we watch belongs to a running host.
 * Liveness is judged only by change seen against our own clock
 * (docs/cluster.md §2), never by the wall-clock times of other hosts.  We watch
 * two renewal intervals plus a second of slack, not the full timeout: a
 * crashed host's stale slot must not make every mkfs -f wait 10 s, and a
 * host that misses two renewals in a row is about to fence itself anyway.
 * Returns the number of live hosts (named in DESC) or a negative errno. */
static int vmfsd_live_hosts(const char *path, const struct vmfsd_sb *sb, bool quiet,
			    char *desc, size_t len)
{
	size_t n = (size_t)sb->max_hosts * VMFSD_META_BLOCK;
	uint64_t base = sb->hb_off / VMFSD_META_BLOCK;
	uint8_t *before = NULL, *after = NULL;
	struct vmfsd_hb hb;
	struct timespec ts;
	struct bdev *bd;
	uint32_t i, nwatch = 0;
	uint64_t wait_ms;
	int r, live = 0;

	desc[0] = 0;
	r = bdev_open(path, BDEV_RDONLY, &bd);
	if (r)
		return r;
	before = bdev_alloc(n);
	after = bdev_alloc(n);
	if (!before || !after) {
		r = -ENOMEM;
		goto out;
	}
	memset(before, 0, n);
	memset(after, 0, n);
	r = bdev_pread(bd, before, n, sb->hb_off);
	for (i = 0; !r && i < sb->max_hosts; i++)
		if (!vmfsd_hb_decode(before + (size_t)i * VMFSD_META_BLOCK, base + i, &hb) &&
		    hb.state != VMFSD_HB_FREE)
			nwatch++;
	if (r || !nwatch)
		goto out;
	wait_ms = 2ull * sb->hb_interval_ms + 1000;
	if (wait_ms > sb->hb_timeout_ms)
		wait_ms = sb->hb_timeout_ms;
	if (!quiet) {
		printf("Watching %u heartbeat slot(s) of the old volume for %.1f s...\n",
		       nwatch, (double)wait_ms / 1000);
		fflush(stdout);
	}
	ts.tv_sec = (time_t)(wait_ms / 1000);
	ts.tv_nsec = (long)(wait_ms % 1000) * 1000000L;
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
	r = bdev_pread(bd, after, n, sb->hb_off);
	for (i = 0; !r && i < sb->max_hosts; i++) {
		const uint8_t *a = after + (size_t)i * VMFSD_META_BLOCK;
		size_t l = strlen(desc);

		/* Any change of the sector ATS works on: renewed, claimed,
		 * freed or being replayed, someone is at work on the volume. */
		if (!memcmp(before + (size_t)i * VMFSD_META_BLOCK, a, VMFSD_SECTOR))
			continue;
		if (vmfsd_hb_decode(a, base + i, &hb))
			snprintf(hb.host_name, sizeof(hb.host_name), "?");
		snprintf(desc + l, len - l, "%s%s (slot %u)", live ? ", " : "", hb.host_name, i);
		live++;
	}
out:
	bdev_free(before);
	bdev_free(after);
	bdev_close(bd);
	return r ? r : live;
}

/* A lock anywhere on the device (bdev_range_locked: an ATS of a mount on
 * this kernel in flight, another mkfs, an fsck repairing) means it is in
 * use.  Mounts hold no lasting lock: the heartbeat watch below is what
 * finds a mounted volume.  Returns 1 if locked, 0 if not, <0 on error. */
static int device_locked(const char *path)
{
	struct bdev *bd;
	int r = bdev_open(path, BDEV_RDONLY, &bd);

	if (r)
		return r;
	r = bdev_range_locked(bd, 0, 0);
	bdev_close(bd);
	return r;
}

/* ---------------- the image file ---------------- */

/* -s: creates the file or sets its size with ftruncate, so it stays sparse.
 * Shrinking throws data away and needs -f. */
static int image_resize(const struct opts *o, bool existed, uint64_t cur)
{
	int fd, r = 0;

	if (existed && o->size < cur && !o->force) {
		err("%s: -s %" PRIu64 " would shrink the file from %" PRIu64
		    " bytes; use -f to allow it", o->device, o->size, cur);
		return -EINVAL;
	}
	fd = open(o->device, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0) {
		r = -errno;
		err("%s: cannot create: %s", o->device, strerror(-r));
		return r;
	}
	if (ftruncate(fd, (off_t)o->size) < 0) {
		r = -errno;
		err("%s: cannot set size to %" PRIu64 " bytes: %s%s", o->device, o->size,
		    strerror(-r), r == -EFBIG ?
		    " (the filesystem holding the image limits file size; ext4: 16 TiB)" : "");
	}
	close(fd);
	return r;
}

static void bdev_open_error(const char *path, int r)
{
	if (bdev_open_hint(path, r)) {
		err("%s: %s", path, bdev_open_hint(path, r));
		return;
	}
	switch (r) {
	case -ENOTBLK:
		err("%s: not a regular file or block device", path);
		break;
	case -EOPNOTSUPP:
		err("%s: does not support direct I/O (tmpfs?)", path);
		break;
	case -EBUSY:
		err("%s: device is busy (mounted or in use)", path);
		break;
	case -ENOENT:
		err("%s: %s (use -s SIZE to create an image file)", path, strerror(-r));
		break;
	default:
		err("%s: cannot open: %s", path, strerror(-r));
	}
}

/* ---------------- writing ---------------- */

/* Smallest device size that vmfsd_layout_compute accepts with these
 * parameters, found by doubling then bisecting on 4 KiB units (the layout's
 * own granularity), or 0 if none up to 2^62. */
static uint64_t min_device_size(struct vmfsd_mkfs_params p)
{
	struct vmfsd_sb sb;
	uint64_t lo = 0, hi = 1;

	for (;;) {
		p.device_size = hi * VMFSD_META_BLOCK;
		if (!vmfsd_layout_compute(&p, &sb))
			break;
		if (hi >= 1ull << 50)
			return 0;
		lo = hi;
		hi *= 2;
	}
	while (hi - lo > 1) {
		uint64_t mid = lo + (hi - lo) / 2;

		p.device_size = mid * VMFSD_META_BLOCK;
		if (vmfsd_layout_compute(&p, &sb))
			lo = mid;
		else
			hi = mid;
	}
	return hi * VMFSD_META_BLOCK;
}

static int write_zero(struct bdev *bd, uint64_t off, uint64_t len, const char *what)
{
	int r = bdev_zero(bd, off, len);

	if (r)
		err("%s: cannot zero %s at offset %" PRIu64 ": %s", bdev_path(bd), what, off,
		    strerror(-r));
	return r;
}

/* Zeros the 4 KiB-aligned block(s) holding each old magic, so that blkid
 * and other mkfs tools stop seeing the old filesystem or partition table
 * wherever our (sparse) layout does not overwrite it. */
static int wipe_sigs(struct bdev *bd, const struct sig_list *sl)
{
	uint64_t size = bdev_size(bd) & ~(uint64_t)(VMFSD_META_BLOCK - 1);
	size_t i;
	int r;

	for (i = 0; i < sl->n; i++) {
		uint64_t s = sl->v[i].off & ~(uint64_t)(VMFSD_META_BLOCK - 1);
		uint64_t e = sl->v[i].off + sl->v[i].len;

		e = (e + VMFSD_META_BLOCK - 1) & ~(uint64_t)(VMFSD_META_BLOCK - 1);
		if (e > size)
			e = size;
		if (s >= e)
			continue;
		r = write_zero(bd, s, e - s, "an old signature");
		if (r)
			return r;
	}
	return 0;
}

static void bit_set(uint8_t *bm, uint64_t i)
{
	bm[i / 8] |= (uint8_t)(1u << (i % 8));
}

/* Writes every resource cluster of one kind: items [0, count), with items
 * [0, reserved) in use.  Clusters are built RC_BATCH_BYTES at a time. */
static int write_rcs(struct bdev *bd, const struct vmfsd_sb *sb, int kind, uint64_t count,
		     uint32_t nclusters, uint64_t reserved, void *buf)
{
	static const struct vmfsd_lock free_lock;
	static struct vmfsd_rc rc;      /* 3 KiB: keep it off the stack */
	const uint32_t per_batch = RC_BATCH_BYTES / VMFSD_META_BLOCK;
	uint32_t i, j, n;
	uint64_t it;
	int r;

	for (i = 0; i < nclusters; i += n) {
		uint64_t off = vmfsd_rc_off(sb, kind, i);

		n = nclusters - i < per_batch ? nclusters - i : per_batch;
		for (j = 0; j < n; j++) {
			uint8_t *blk = (uint8_t *)buf + (size_t)j * VMFSD_META_BLOCK;
			uint64_t first = (uint64_t)(i + j) * VMFSD_RC_BITS;
			uint64_t blocknr = off / VMFSD_META_BLOCK + j;

			memset(&rc, 0, sizeof(rc));
			rc.kind = (uint16_t)kind;
			rc.index = i + j;
			rc.first_item = first;
			rc.nitems = (uint32_t)(count - first < VMFSD_RC_BITS ?
					       count - first : VMFSD_RC_BITS);
			rc.nfree = rc.nitems;
			for (it = first; it < reserved && it < first + rc.nitems; it++) {
				bit_set(rc.bitmap, it - first);
				rc.nfree--;
			}
			vmfsd_lock_encode(&free_lock, blocknr, blk);
			vmfsd_rc_encode(&rc, blocknr, blk);
		}
		r = bdev_pwrite(bd, buf, (size_t)n * VMFSD_META_BLOCK, off);
		if (r) {
			err("%s: cannot write resource clusters at offset %" PRIu64 ": %s",
			    bdev_path(bd), off, strerror(-r));
			return r;
		}
	}
	return 0;
}

static int write_root(struct bdev *bd, const struct vmfsd_sb *sb, void *blk)
{
	static const struct vmfsd_lock free_lock;
	static struct vmfsd_inode in;
	uint64_t off = vmfsd_inode_off(sb, VMFSD_ROOT_INO);
	struct timespec now;
	int r;

	clock_gettime(CLOCK_REALTIME, &now);
	memset(&in, 0, sizeof(in));
	in.ino = VMFSD_ROOT_INO;
	in.generation = 1;
	in.data_mode = VMFSD_DATA_SUB;  /* an empty directory: no blocks yet */
	in.map_height = 0;
	in.mode = 040755;
	in.nlink = 2;                   /* "." and its own entry in ".." */
	in.parent = VMFSD_ROOT_INO;
	in.atime_sec = in.mtime_sec = in.ctime_sec = in.btime_sec = now.tv_sec;
	in.atime_nsec = in.mtime_nsec = in.ctime_nsec = in.btime_nsec = (uint32_t)now.tv_nsec;
	in.change_seq = 1;
	memset(blk, 0, VMFSD_META_BLOCK);
	vmfsd_lock_encode(&free_lock, off / VMFSD_META_BLOCK, blk);
	vmfsd_inode_encode(&in, off / VMFSD_META_BLOCK, blk);
	r = bdev_pwrite(bd, blk, VMFSD_META_BLOCK, off);
	if (r)
		err("%s: cannot write the root inode: %s", bdev_path(bd), strerror(-r));
	return r;
}

static int write_sb(struct bdev *bd, const struct vmfsd_sb *sb, uint64_t blocknr, void *blk)
{
	int r;

	vmfsd_sb_encode(sb, blocknr, blk);
	r = bdev_pwrite(bd, blk, VMFSD_META_BLOCK, blocknr * VMFSD_META_BLOCK);
	if (r)
		err("%s: cannot write the %s superblock: %s", bdev_path(bd),
		    blocknr ? "backup" : "primary", strerror(-r));
	return r;
}

static int flush(struct bdev *bd)
{
	int r = bdev_flush(bd);

	if (r)
		err("%s: flush failed: %s", bdev_path(bd), strerror(-r));
	return r;
}

static int mkfs_write(struct bdev *bd, const struct vmfsd_sb *sb, const struct sig_list *sigs)
{
	void *buf = bdev_alloc(RC_BATCH_BYTES);
	uint32_t h;
	int r;

	if (!buf) {
		err("out of memory");
		return -ENOMEM;
	}
	/* 1. Forget the past: old signatures, then everything before the
	 *    heartbeat region, which includes the old primary superblock. */
	r = wipe_sigs(bd, sigs);
	if (!r)
		r = write_zero(bd, 0, sb->hb_off, "the volume header");
	/* 2. Heartbeat slots: all zero = never claimed. */
	if (!r)
		r = write_zero(bd, sb->hb_off, (uint64_t)sb->max_hosts * VMFSD_META_BLOCK,
			       "the heartbeat region");
	/* 3. The head of every journal, so no host replays a stale one. */
	for (h = 0; !r && h < sb->max_hosts; h++)
		r = write_zero(bd, sb->journal_off + (uint64_t)h * sb->journal_size,
			       JOURNAL_ZERO_BYTES < sb->journal_size ?
			       JOURNAL_ZERO_BYTES : sb->journal_size, "a journal");
	/* 4. Allocation bitmaps.  Reserved: inode 0 (never used, so 0 can
	 *    mean "none") and 1 (root); sub-block 0 and file block 0, because
	 *    a 0 in a block map means a hole. */
	if (!r)
		r = write_rcs(bd, sb, VMFSD_RC_INODE, sb->inode_count, sb->ibm_count,
			      VMFSD_FIRST_FREE_INO, buf);
	if (!r)
		r = write_rcs(bd, sb, VMFSD_RC_SUB, sb->sub_count, sb->sbm_count, 1, buf);
	if (!r)
		r = write_rcs(bd, sb, VMFSD_RC_BLOCK, sb->block_count, sb->dbm_count, 1, buf);
	/* 5. The root directory. */
	if (!r)
		r = write_root(bd, sb, buf);
	/* 6. Everything durable before any superblock describes it; then the
	 *    backup, and the primary last: it is what makes this a volume. */
	if (!r)
		r = flush(bd);
	if (!r)
		r = write_sb(bd, sb, sb->backup_blocknr, buf);
	if (!r)
		r = write_sb(bd, sb, 0, buf);
	if (!r)
		r = flush(bd);
	bdev_free(buf);
	return r;
}

static void print_summary(const struct vmfsd_sb *sb, const char *path)
{
	char uuid[37], bs[32], js[32], raw[64], cap[64];

	fmt_uuid(sb->uuid, uuid);
	fmt_pow2(sb->block_size, bs, sizeof(bs));
	fmt_pow2(sb->journal_size, js, sizeof(js));
	fmt_gb(sb->device_size, raw, sizeof(raw));
	fmt_gb(sb->block_count * (uint64_t)sb->block_size, cap, sizeof(cap));
	printf("Created a vmfsd volume on %s\n", path);
	printf("UUID: %s\n", uuid);
	printf("label: %s\n", sb->label);
	printf("block size: %s (%" PRIu64 " blocks)\n", bs, sb->block_count);
	printf("max hosts: %u (heartbeat every %u ms, dead after %u ms)\n", sb->max_hosts,
	       sb->hb_interval_ms, sb->hb_timeout_ms);
	printf("journal: %s per host\n", js);
	printf("inodes: %" PRIu64 "\n", sb->inode_count);
	printf("sub-blocks: %" PRIu64 " of %u bytes\n", sb->sub_count, VMFSD_SUB_BLOCK_SIZE);
	printf("capacity: %s usable of %s raw\n", cap, raw);
}

int main(int argc, char **argv)
{
	struct opts o = { 0 };
	struct vmfsd_mkfs_params p = { 0 };
	struct vmfsd_sb sb;
	struct sig_list sigs = { 0 };
	struct bdev *bd = NULL;
	struct stat st;
	uint8_t uuid[16];
	char desc[512];
	struct vmfsd_sb old;
	bool existed, created = false, old_ok = false, overwrite = false, url;
	int r;

	if (parse_args(argc, argv, &o))
		return 1;

	url = bdev_is_url(o.device);
	if (o.pr_fence && !url) {
		err("%s: --pr-fence needs an iSCSI LUN (iscsi://...): files and local "
		    "devices have no persistent reservations", o.device);
		return 1;
	}
	if (url) {
		/* An iSCSI LUN: it exists and is sized by the target, like a
		 * block device; there is no file to stat, resize or blkid. */
		memset(&st, 0, sizeof(st));
		st.st_mode = S_IFBLK;
		existed = true;
		if (o.size) {
			err("%s: -s only applies to image files, not to iSCSI LUNs", o.device);
			return 1;
		}
	} else {
		existed = stat(o.device, &st) == 0;
	}
	if (!existed && (errno != ENOENT || !o.size)) {
		bdev_open_error(o.device, -errno);
		return 1;
	}
	if (existed && !S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
		bdev_open_error(o.device, -ENOTBLK);
		return 1;
	}
	if (existed && o.size && !S_ISREG(st.st_mode)) {
		err("%s: -s only applies to image files, not to block devices", o.device);
		return 1;
	}

	/* Refuse to destroy anything recognisable without -f, before the
	 * file is resized (a refusal must leave the file as it was). */
	if (existed && device_locked(o.device) == 1) {
		err("%s: in use (mounted by vmfsd on this host?); unmount it first", o.device);
		return 1;
	}
	if (existed && (S_ISBLK(st.st_mode) || st.st_size > 0)) {
		r = url ? 0 : blkid_check(o.device, desc, sizeof(desc));
		if (r == 0)
			r = vmfsd_check(o.device, desc, sizeof(desc), &old, &old_ok);
		if (r < 0 && r != -EOPNOTSUPP && r != -ENOTBLK) {
			bdev_open_error(o.device, r);
			return 1;
		}
		if (r == 1 && !o.force) {
			err("%s already contains %s; use -f to overwrite it", o.device, desc);
			return 1;
		}
		/* Even -f does not format a volume that hosts are using. */
		if (r == 1 && old_ok) {
			char hosts[1024];
			int n = vmfsd_live_hosts(o.device, &old, o.quiet, hosts, sizeof(hosts));

			if (n > 0) {
				err("%s: %s is in use by %d live host(s): %s; unmount it everywhere first",
				    o.device, desc, n, hosts);
				return 1;
			}
		}
		overwrite = r == 1;
		if (o.force && !url)
			blkid_list_sigs(o.device, &sigs);
	}

	if (o.size) {
		r = image_resize(&o, existed, existed ? (uint64_t)st.st_size : 0);
		if (r)
			goto fail;
		created = !existed;
	}

	r = bdev_open(o.device, BDEV_EXCL, &bd);
	if (r) {
		bdev_open_error(o.device, r);
		goto fail;
	}
	/* A LUN keeps the persistent reservation of the volume it held before
	 * (hosts that died mounted): it would refuse our writes, and the new
	 * volume's hosts owe nothing to the old keys (docs/cluster.md §8). */
	if (bdev_is_iscsi(bd)) {
		r = bdev_pr_clear(bd, BDEV_PR_MAINT_KEY);
		if (r && r != -EOPNOTSUPP) {
			err("%s: cannot clear the LUN's persistent reservations: %s", o.device,
			    strerror(-r));
			goto fail;
		}
	}
	/* Checked above already; taking the lock now also keeps a vmfsd of
	 * this host from mounting the half-made volume while we write. */
	r = bdev_trylock_range(bd, 0, 0, 1);
	if (r == -EAGAIN) {
		err("%s: in use (mounted by vmfsd on this host?); unmount it first", o.device);
		goto fail;
	}
	if (overwrite && !o.quiet)
		printf("Overwriting %s on %s\n", desc, o.device);

	if (getrandom(uuid, sizeof(uuid), 0) != sizeof(uuid)) {
		err("cannot get random bytes for the UUID: %s", strerror(errno));
		goto fail;
	}
	uuid[6] = (uint8_t)((uuid[6] & 0x0f) | 0x40);  /* RFC 4122 version 4 */
	uuid[8] = (uint8_t)((uuid[8] & 0x3f) | 0x80);  /* RFC 4122 variant */
	/* New at every format, with the UUID: journal blocks left over from
	 * the previous format of this device are then never replayed
	 * (docs/format.md §12). */
	if (getrandom(&p.format_gen, sizeof(p.format_gen), 0) != sizeof(p.format_gen)) {
		err("cannot get random bytes for the format generation: %s", strerror(errno));
		goto fail;
	}

	p.device_size = bdev_size(bd);
	p.block_size = o.block_size;
	p.max_hosts = o.max_hosts;
	p.hb_interval_ms = o.hb_interval_ms;
	p.hb_timeout_ms = o.hb_timeout_ms;
	p.pr_fence = o.pr_fence;
	p.journal_size = o.journal_size;
	p.inode_count = o.inode_count;
	p.sub_size = o.sub_size;
	p.label = o.label ? o.label : "";
	p.uuid = uuid;
	p.now = (uint64_t)time(NULL);
	r = vmfsd_layout_compute(&p, &sb);
	if (r == -ENOSPC) {
		uint64_t min = min_device_size(p);

		if (min)
			err("%s: device too small (%.2f MiB); with these parameters vmfsd needs at least %"
			    PRIu64 " MiB (%" PRIu64 " bytes)", o.device,
			    (double)p.device_size / (1u << 20), (min + (1u << 20) - 1) >> 20, min);
		else
			err("%s: device too small (%.2f MiB) for these parameters", o.device,
			    (double)p.device_size / (1u << 20));
		goto fail;
	} else if (r == -EFBIG) {
		err("%s: too many file blocks for block size %u (the block map addresses at most %u); use a larger -b",
		    o.device, sb.block_size, VMFSD_MAP_PBLK_MASK);
		goto fail;
	} else if (r) {
		err("%s: these parameters give no valid layout: %s", o.device, strerror(-r));
		goto fail;
	}

	r = mkfs_write(bd, &sb, &sigs);
	if (r)
		goto fail;
	if (!o.quiet)
		print_summary(&sb, o.device);
	bdev_close(bd);
	free(sigs.v);
	return 0;
fail:
	bdev_close(bd);
	free(sigs.v);
	/* A failed run leaves no half-made image behind that it created. */
	if (created)
		unlink(o.device);
	return 1;
}
