// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * vmfsd: mounts a vmfsd volume through FUSE.
 *
 *   vmfsd [-f] [-d] [-o host=NAME,ro,FUSE-OPTIONS] DEVICE MOUNTPOINT
 *
 * The volume is opened and verified before anything is mounted, and unless
 * -f is given the program forks first and the parent exits only once the
 * child has mounted (status 0) or failed (status 1, message on stderr), so
 * `vmfsd dev mnt && use mnt` and mount(8)/fstab via mount.fuse3 behave as
 * they do for kernel filesystems.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>
#include <sys/wait.h>
#include <sys/xattr.h>

#include "bdev/bdev.h"
#include "format/format.h"
#include "fuse/fuse_loop.h"
#include "fuse/fuse_ops.h"
#include "lockmgr/lockmgr.h"
#include "fence.h"
#include "log.h"

#define PROG "vmfsd"

/* Enough FUSE worker threads for QD32 direct I/O from several guests: a
 * request blocks its thread for one device I/O. */
#define MAX_THREADS 96

/* How long the I/O thread keeps looking for the next request after a
 * reply when none of its disk I/O is in flight (fuse/fuse_loop.c,
 * bdev.c's aio_issuer): more than the 20-40 us a caller here takes from
 * one reply to its next request (a create's 7 requests, fio at QD1), so
 * such a stream never sleeps between them, and a few microseconds of CPU
 * per request otherwise. */
#define SPIN_US 50

struct opts {
	char *host;
	int fail_io_after;      /* ms; fault injection for tests, 0 = off */
	int freeze_io_after;
	int freeze_io_for;
	int fault_on_usr1;      /* the fault starts at SIGUSR1, not after a delay */
	int batch_gap_us;
	int no_self_fence;      /* test only: docs/cluster.md §8 */
	char *hostd_socket;     /* vmfs-hostd to tell when we fence */
	char *log_file;         /* the system log's lines appended here too */
	int spin_us;            /* -1: the default (SPIN_US) */
	int issuers;            /* 0: the default (bdev's: one per two CPUs) */
	int inode_cache;        /* 0: the default (FS_INODE_CACHE_DEFAULT) */
	int no_fuse_uring;      /* requests through /dev/fuse even where io_uring could */
	char *device;
	char *mountpoint;
	int ro;
	int norecovery;
	int foreground;
	int debug;
	int help;
	int version;
	int status;
	int json;
};

enum { KEY_HELP, KEY_VERSION, KEY_FG, KEY_DEBUG, KEY_RO, KEY_STATUS, KEY_JSON, KEY_NORECOVERY };

static const struct fuse_opt opt_spec[] = {
	{ "host=%s", offsetof(struct opts, host), 0 },
	{ "fail_io_after=%d", offsetof(struct opts, fail_io_after), 0 },
	{ "freeze_io_after=%d", offsetof(struct opts, freeze_io_after), 0 },
	{ "freeze_io_for=%d", offsetof(struct opts, freeze_io_for), 0 },
	{ "fault_on_usr1", offsetof(struct opts, fault_on_usr1), 1 },
	{ "debug_batch_gap_us=%d", offsetof(struct opts, batch_gap_us), 0 },
	{ "debug_no_self_fence", offsetof(struct opts, no_self_fence), 1 },
	{ "hostd_socket=%s", offsetof(struct opts, hostd_socket), 0 },
	{ "log_file=%s", offsetof(struct opts, log_file), 0 },
	{ "spin_us=%d", offsetof(struct opts, spin_us), 0 },
	{ "issuers=%d", offsetof(struct opts, issuers), 0 },
	{ "inode_cache=%d", offsetof(struct opts, inode_cache), 0 },
	{ "no_fuse_uring", offsetof(struct opts, no_fuse_uring), 1 },
	FUSE_OPT_KEY("ro", KEY_RO),
	FUSE_OPT_KEY("norecovery", KEY_NORECOVERY),
	FUSE_OPT_KEY("-f", KEY_FG),
	FUSE_OPT_KEY("-d", KEY_DEBUG),
	FUSE_OPT_KEY("debug", KEY_DEBUG),
	FUSE_OPT_KEY("-h", KEY_HELP),
	FUSE_OPT_KEY("--help", KEY_HELP),
	FUSE_OPT_KEY("-V", KEY_VERSION),
	FUSE_OPT_KEY("--version", KEY_VERSION),
	FUSE_OPT_KEY("--status", KEY_STATUS),
	FUSE_OPT_KEY("--json", KEY_JSON),
	FUSE_OPT_END
};

static int opt_proc(void *data, const char *arg, int key, struct fuse_args *outargs)
{
	struct opts *o = data;

	(void)outargs;
	switch (key) {
	case FUSE_OPT_KEY_NONOPT:
		if (!o->device) {
			o->device = strdup(arg);
			return 0;
		}
		if (!o->mountpoint) {
			o->mountpoint = strdup(arg);
			return 0;
		}
		fprintf(stderr, PROG ": unexpected argument '%s'\n", arg);
		return -1;
	case KEY_RO:
		o->ro = 1;
		return 1;       /* also a kernel mount option */
	case KEY_NORECOVERY:
		o->norecovery = 1;
		return 0;       /* ours only: not a kernel or FUSE option */
	case KEY_FG:
		o->foreground = 1;
		return 0;
	case KEY_DEBUG:
		o->debug = 1;
		o->foreground = 1;
		return 1;
	case KEY_HELP:
		o->help = 1;
		return 0;
	case KEY_VERSION:
		o->version = 1;
		return 0;
	case KEY_STATUS:
		o->status = 1;
		return 0;
	case KEY_JSON:
		o->json = 1;
		return 0;
	default:
		return 1;
	}
}

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: " PROG " [options] DEVICE MOUNTPOINT\n"
		"       " PROG " --status [--json] DEVICE\n\n"
		"Mount a vmfsd volume (an image file or block device formatted with\n"
		"mkfs.vmfsd) at MOUNTPOINT through FUSE.\n\n"
		"Options:\n"
		"  -f                 stay in the foreground\n"
		"  -d, -o debug       foreground with FUSE request tracing\n"
		"  -o host=NAME       name of this host on the volume (default: hostname)\n"
		"  -o ro              mount read-only\n"
		"  -o ro,norecovery   mount read-only even when a host that is gone left\n"
		"                     a journal that needs replay (its last changes are\n"
		"                     then missing; see vmfsd(8))\n"
		"  -o OPT[,OPT...]    other FUSE/mount options (allow_other, ...)\n"
		"  -o fail_io_after=MS, -o freeze_io_after=MS,freeze_io_for=MS\n"
		"                     fault injection for cluster tests: all I/O fails, or\n"
		"                     hangs for a while, MS after the mount\n"
		"  -o fault_on_usr1   the fault starts when vmfsd gets SIGUSR1 instead\n"
		"  -o debug_batch_gap_us=US  tests only: the writes of one batch (a\n"
		"                     commit's in-place writes) land one by one, US apart\n"
		"  -o debug_no_self_fence  tests only: never fence on the heartbeat deadline\n"
		"                     (shows what persistent reservations refuse alone)\n"
		"  -o log_file=PATH   append the lines logged to the system log to PATH\n"
		"                     too, with a timestamp\n"
		"  -o spin_us=US      after a reply, the I/O thread looks for the next\n"
		"                     request for US microseconds before it sleeps (default 50;\n"
		"                     0: never spins)\n"
		"  -o issuers=N       I/O threads that read and submit file I/O, 1-4\n"
		"                     (default: one per two CPUs)\n"
		"  -o inode_cache=N   inodes kept in memory before those not in use\n"
		"                     give theirs back (default 16384, about 4 KiB each)\n"
		"  -o no_fuse_uring   take requests through /dev/fuse even where the kernel\n"
		"                     offers io_uring (Linux 6.14 and later, with\n"
		"                     /sys/module/fuse/parameters/enable_uring set)\n"
		"  -o hostd_socket=PATH  the host agent to tell when this host fences\n"
		"                     (default /run/vmfs-hostd/HOST.sock)\n"
		"  --status [--json]  show the volume's hosts and held locks (read-only;\n"
		"                     watches the heartbeats for a few seconds)\n"
		"  -h, --help         show this help\n"
		"  -V, --version      show the version\n\n"
		"Unmount with: fusermount3 -u MOUNTPOINT\n"
		"See vmfsd(8).\n");
}

/* Names the live slot(s) of HOST, for the "already mounted" error. */
static void describe_holder(const char *device, const char *host)
{
	struct vmfsd_sb sb;
	struct vmfsd_hb hb;
	struct bdev *bd;
	uint8_t *blk;
	uint32_t i;

	if (bdev_open(device, BDEV_RDONLY, &bd))
		return;
	blk = bdev_alloc(VMFSD_META_BLOCK);
	if (blk && !bdev_pread(bd, blk, VMFSD_META_BLOCK, 0) && !vmfsd_sb_decode(blk, 0, &sb)) {
		for (i = 0; i < sb.max_hosts; i++) {
			uint64_t off = vmfsd_hb_slot_off(&sb, i);

			if (!bdev_pread(bd, blk, VMFSD_META_BLOCK, off) &&
			    !vmfsd_hb_decode(blk, off / VMFSD_META_BLOCK, &hb) &&
			    hb.state == VMFSD_HB_LIVE && (!host || !strcmp(hb.host_name, host)))
				fprintf(stderr, PROG ": %s: host '%s' is live in slot %u (pid %u)\n",
					device, hb.host_name, i, hb.pid);
		}
	}
	bdev_free(blk);
	bdev_close(bd);
}

/* ---------------- --status: inode numbers to paths ---------------- */

/* The status reads the volume itself, where a file is only an inode
 * number; where the volume is mounted on this machine (found by the UUID
 * its mount reports in user.vmfsd.hosts) the mount's tree names them, as
 * `vmkfstools -D` names a locked file.  The walk stops after
 * STATUS_WALK_MAX entries (a datastore of VM folders has far fewer) and
 * runs on a thread given STATUS_WALK_MS: --status is what an admin runs
 * when something is wrong, and a hung mount must not hang it too. */
#define STATUS_WALK_MAX 200000
#define STATUS_WALK_MS 3000

static struct {
	const struct lockmgr_status *st;
	char **paths;           /* per st->locks entry; filled by the walk */
	unsigned left, seen;
	char mp[PATH_MAX];
	sem_t done;
} walk;

static int walk_one(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
	(void)type;
	(void)ftw;
	for (uint32_t i = 0; i < walk.st->nlocks; i++) {
		const struct lockmgr_lock *lk = &walk.st->locks[i];

		if (lk->obj == LOCKMGR_OBJ_INODE && lk->id == (uint64_t)sb->st_ino && !walk.paths[i]) {
			walk.paths[i] = strdup(path);
			walk.left--;
		}
	}
	return !walk.left || ++walk.seen >= STATUS_WALK_MAX;
}

static void *walk_thread(void *arg)
{
	(void)arg;
	nftw(walk.mp, walk_one, 16, FTW_PHYS | FTW_MOUNT);
	sem_post(&walk.done);
	return NULL;
}

static bool mount_of_volume(const struct lockmgr_status *st, char *mp, size_t size)
{
	char uuid[37], want[64], line[4096], doc[8192];
	FILE *f = fopen("/proc/self/mountinfo", "re");
	bool found = false;

	vmfsd_uuid_format(st->sb.uuid, uuid);
	snprintf(want, sizeof(want), "\"uuid\":\"%s\"", uuid);
	while (f && !found && fgets(line, sizeof(line), f)) {
		char *sep = strstr(line, " - "), fstype[64], path[PATH_MAX];
		ssize_t n;

		if (!sep || sscanf(sep + 3, "%63s", fstype) != 1 || strcmp(fstype, "fuse.vmfsd") ||
		    sscanf(line, "%*s %*s %*s %*s %4095s", path) != 1)
			continue;
		/* mountinfo escapes blanks as octal: such mount points are
		 * skipped (the getxattr fails) */
		n = getxattr(path, "user.vmfsd.hosts", doc, sizeof(doc) - 1);
		if (n <= 0)
			continue;
		doc[n] = '\0';
		if (strstr(doc, want)) {
			snprintf(mp, size, "%s", path);
			found = true;
		}
	}
	if (f)
		fclose(f);
	return found;
}

/* Returns the mount point that did not answer in time, or NULL. */
static const char *name_locked_inodes(struct lockmgr_status *st)
{
	struct timespec ts;
	pthread_t t;

	walk.st = st;
	walk.left = walk.seen = 0;
	for (uint32_t i = 0; i < st->nlocks; i++)
		walk.left += st->locks[i].obj == LOCKMGR_OBJ_INODE;
	if (!walk.left || !mount_of_volume(st, walk.mp, sizeof(walk.mp)))
		return NULL;
	walk.paths = calloc(st->nlocks, sizeof(*walk.paths));
	if (!walk.paths || sem_init(&walk.done, 0, 0) ||
	    pthread_create(&t, NULL, walk_thread, NULL))
		return NULL;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += STATUS_WALK_MS / 1000;
	while (sem_timedwait(&walk.done, &ts))
		if (errno != EINTR)
			return walk.mp;         /* the thread ends with the process */
	pthread_join(t, NULL);
	for (uint32_t i = 0; i < st->nlocks; i++)
		st->locks[i].path = walk.paths[i];
	free(walk.paths);
	return NULL;
}

static int show_status(const char *device, int json)
{
	struct lockmgr_status *st;
	struct bdev *bd;
	char *text = NULL;
	int r;

	r = bdev_open(device, BDEV_RDONLY, &bd);
	if (r) {
		const char *hint = bdev_open_hint(device, r);

		fprintf(stderr, PROG ": %s: %s\n", device, hint ? hint : strerror(-r));
		return 1;
	}
	r = lockmgr_status(bd, 0, &st);
	if (r) {
		fprintf(stderr, PROG ": %s: cannot read the volume status: %s\n", device,
			r == -EUCLEAN || r == -EBADMSG || r == -EMEDIUMTYPE ?
			"not a vmfsd volume or damaged superblock" : strerror(-r));
		bdev_close(bd);
		return 1;
	}
	const char *hung = name_locked_inodes(st);

	r = lockmgr_status_format(st, json, &text);
	if (hung)
		fprintf(stderr, PROG ": %s did not answer within %d ms: locked files shown by inode "
			"number only\n", hung, STATUS_WALK_MS);
	if (!r)
		fputs(text, stdout);
	free(text);
	lockmgr_status_free(st);
	bdev_close(bd);
	return r ? 1 : 0;
}

/* Names the slots whose journals a read-only mount found in need of a
 * replay that no live host is doing (bit s of UNREPLAYED). */
static void describe_unreplayed(const char *device, struct bdev *bd, const uint8_t *unreplayed)
{
	uint8_t *blk = bdev_alloc(VMFSD_META_BLOCK);
	struct vmfsd_sb sb;
	uint32_t s;

	if (!blk || bdev_pread(bd, blk, VMFSD_META_BLOCK, 0) || vmfsd_sb_decode(blk, 0, &sb)) {
		bdev_free(blk);
		return;
	}
	for (s = 0; s < sb.max_hosts; s++) {
		uint64_t off = vmfsd_hb_slot_off(&sb, s);
		struct vmfsd_hb hb;

		if (!(unreplayed[s / 8] & (1u << (s % 8))))
			continue;
		if (!bdev_pread(bd, blk, VMFSD_META_BLOCK, off) &&
		    !vmfsd_hb_decode(blk, off / VMFSD_META_BLOCK, &hb))
			fprintf(stderr, PROG ": %s: slot %u (host '%s', pid %u, not beating) left "
				"a journal that needs replay\n", device, s, hb.host_name, hb.pid);
		else
			fprintf(stderr, PROG ": %s: slot %u left a journal that needs replay\n",
				device, s);
	}
	bdev_free(blk);
}

/* Whether the primary superblock's unknown features are all ro_compat ones
 * (fs_mount then refuses only a read-write mount). */
static int ro_compat_only(struct bdev *bd)
{
	uint8_t *blk = bdev_alloc(VMFSD_META_BLOCK);
	struct vmfsd_sb sb;
	int r = 0;

	if (blk && !bdev_pread(bd, blk, VMFSD_META_BLOCK, 0) && !vmfsd_sb_decode(blk, 0, &sb))
		r = (sb.feat_ro_compat & ~VMFSD_FEAT_RO_COMPAT_SUPP) != 0;
	bdev_free(blk);
	return r;
}

/* Failures of opening the device, before anything is read from it. */
static void open_error(const char *device, int r)
{
	const char *hint = bdev_open_hint(device, r);

	if (hint) {
		fprintf(stderr, PROG ": %s: %s\n", device, hint);
		return;
	}
	switch (r) {
	case -EOPNOTSUPP:
		/* bdev_open's only -EOPNOTSUPP: open(O_DIRECT) said EINVAL. */
		fprintf(stderr, PROG ": %s: the file does not support direct I/O "
			"(tmpfs?); put the image on a disk filesystem\n", device);
		break;
	case -ENOTBLK:
		fprintf(stderr, PROG ": %s: not a regular file or block device\n", device);
		break;
	default:
		fprintf(stderr, PROG ": %s: cannot open: %s\n", device, strerror(-r));
	}
}

/* Failures of fs_mount on an open device. */
static void mount_error(const char *device, const char *host, struct bdev *bd,
			const uint8_t *unreplayed, int r)
{
	switch (r) {
	case -EMEDIUMTYPE:
		fprintf(stderr, PROG ": %s: not a vmfsd volume (no vmfsd superblock; "
			"format it with mkfs.vmfsd)\n", device);
		break;
	case -EUCLEAN:
	case -EBADMSG:
		fprintf(stderr, PROG ": %s: the superblock is corrupted and its backup is "
			"unusable; run fsck.vmfsd\n", device);
		break;
	case -EPROTONOSUPPORT:
		fprintf(stderr, PROG ": %s: the volume uses features this version of vmfsd "
			"does not support%s\n", device,
			ro_compat_only(bd) ? " for writing; it can be mounted read-only (-o ro)" : "");
		break;
	case -EBUSY:
		fprintf(stderr, PROG ": %s: this host name is already mounted on the volume\n",
			device);
		describe_holder(device, host);
		break;
	case -ENOTRECOVERABLE:
		fprintf(stderr, PROG ": %s: the journal header of this host's slot is "
			"damaged; run fsck.vmfsd -y\n", device);
		break;
	case -EROFS:
		describe_unreplayed(device, bd, unreplayed);
		fprintf(stderr, PROG ": %s: a journal needs recovery, which a read-only "
			"mount cannot do; mount read-write once (a host replays the journals of "
			"hosts that are gone) or run fsck.vmfsd -p, or add -o norecovery to "
			"mount without those changes\n", device);
		break;
	case -ERANGE:
		fprintf(stderr, PROG ": %s: the device is smaller than the filesystem on it "
			"(truncated image?)\n", device);
		break;
	case -EOPNOTSUPP:
		/* Opening succeeded (with O_DIRECT): the only other source at
		 * mount is ATS (bdev_ats), the compare-and-write every cluster
		 * change relies on. */
		fprintf(stderr, PROG ": %s: vmfsd has no compare-and-write (ATS) for this "
			"device yet (SCSI COMPARE AND WRITE is not implemented); it cannot "
			"be shared safely\n", device);
		break;
	default:
		fprintf(stderr, PROG ": %s: cannot mount: %s\n", device, strerror(-r));
	}
}

/* Fault injection points (named, compiled in, off unless asked for): the
 * cluster tests use them to make one host's storage fail or hang. */
struct fault_plan {
	struct bdev *bd;
	int fail_after, freeze_after, freeze_for, on_usr1;
};

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static void *fault_thread(void *arg)
{
	struct fault_plan *fp = arg;

	if (fp->on_usr1) {
		sigset_t usr1;
		int sig;

		/* blocked in every thread since the start of main() */
		sigemptyset(&usr1);
		sigaddset(&usr1, SIGUSR1);
		sigwait(&usr1, &sig);
		fp->fail_after = fp->fail_after ? 1 : 0;
		fp->freeze_after = fp->fail_after ? 0 : 1;
	}
	if (fp->fail_after) {
		sleep_ms(fp->fail_after);
		vmfsd_log(LOG_WARNING, "fault injection: all I/O fails from now on");
		bdev_fault_set(fp->bd, BDEV_FAULT_ALL_EIO);
	} else if (fp->freeze_after) {
		sleep_ms(fp->freeze_after);
		vmfsd_log(LOG_WARNING, "fault injection: I/O frozen for %d ms", fp->freeze_for);
		bdev_fault_set(fp->bd, BDEV_FAULT_FROZEN);
		sleep_ms(fp->freeze_for);
		bdev_fault_thaw(fp->bd);
	}
	return NULL;
}

/* Daemon mode: the parent waits for the child's verdict on a pipe. */
static int status_fd = -1;

static void report_status(int ok)
{
	char c = ok ? 0 : 1;

	if (status_fd >= 0) {
		if (write(status_fd, &c, 1) != 1)
			_exit(1);
		close(status_fd);
		status_fd = -1;
	}
}

static int fork_daemon(void)
{
	int p[2];
	pid_t pid;
	char c;

	if (pipe(p) < 0)
		return -errno;
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid > 0) {
		close(p[1]);
		if (read(p[0], &c, 1) != 1) {
			int st;

			waitpid(pid, &st, 0);
			_exit(1);
		}
		_exit(c);
	}
	close(p[0]);
	status_fd = p[1];
	return 0;
}

static void detach(void)
{
	int fd;

	setsid();
	if (chdir("/") < 0)
		return;
	fd = open("/dev/null", O_RDWR);
	if (fd >= 0) {
		dup2(fd, 0);
		dup2(fd, 1);
		dup2(fd, 2);
		if (fd > 2)
			close(fd);
	}
}

int main(int argc, char **argv)
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct fs_mount_opts mo = { 0 };
	struct fuse_loop_config *lc = NULL;
	struct fuse_session *se = NULL;
	struct opts o = { .spin_us = -1 };
	struct fs *fs = NULL;
	struct bdev *bd = NULL;
	uint8_t unreplayed[VMFSD_MAX_HOSTS / 8] = { 0 };
	unsigned mflags = 0;
	char optbuf[4200];
	int r, ret = 1;

	if (fuse_opt_parse(&args, &o, opt_spec, opt_proc) < 0)
		return 1;
	if (o.help) {
		usage(stdout);
		return 0;
	}
	if (o.version) {
		printf(PROG " " VMFSD_VERSION " (on-disk format %u, FUSE %d)\n",
		       VMFSD_FORMAT_VERSION, fuse_version());
		return 0;
	}
	if (o.status) {
		if (!o.device || o.mountpoint) {
			usage(stderr);
			return 1;
		}
		return show_status(o.device, o.json);
	}
	if (!o.device || !o.mountpoint) {
		usage(stderr);
		return 1;
	}
	if (o.issuers < 0 || o.issuers > 4) {
		fprintf(stderr, PROG ": issuers=%d: must be 1 to 4\n", o.issuers);
		return 1;
	}
	if (o.inode_cache < 0 || (o.inode_cache && o.inode_cache < 16)) {
		fprintf(stderr, PROG ": inode_cache=%d: must be 16 or more\n", o.inode_cache);
		return 1;
	}
	if (o.fault_on_usr1) {
		sigset_t usr1;

		/* before any thread exists, so that only the fault thread's
		 * sigwait takes it */
		sigemptyset(&usr1);
		sigaddset(&usr1, SIGUSR1);
		pthread_sigmask(SIG_BLOCK, &usr1, NULL);
	}
	if (o.log_file) {
		/* before the daemon detaches: a relative path is the caller's,
		 * and a failure is told on the terminal */
		r = vmfsd_log_file(o.log_file);
		if (r) {
			fprintf(stderr, PROG ": log file %s: %s\n", o.log_file, strerror(-r));
			return 1;
		}
	}
	if (!o.foreground) {
		r = fork_daemon();
		if (r) {
			fprintf(stderr, PROG ": fork: %s\n", strerror(-r));
			return 1;
		}
	}

	if (o.norecovery && !o.ro) {
		fprintf(stderr, PROG ": -o norecovery needs -o ro: a read-write mount always "
			"replays the journals it finds\n");
		goto out;
	}
	/* Opened here, not by fs_mount, so that a failure to open (no
	 * O_DIRECT, ...) is told apart from a failure of the mount. */
	r = bdev_open(o.device, o.ro ? BDEV_RDONLY : 0, &bd);
	if (r) {
		open_error(o.device, r);
		goto out;
	}
	mo.host = o.host;
	mo.readonly = o.ro;
	mo.norecovery = o.norecovery;
	mo.inode_cache = (unsigned)o.inode_cache;
	mo.debug_no_self_fence = o.no_self_fence;
	mo.unreplayed = unreplayed;
	mo.bdev = bd;
	/* The fence responder (fence.c) knows the mount point by its real
	 * path (what /proc/PID/fd links show); resolved now, before our own
	 * FUSE mount covers it. */
	{
		char mnt_abs[PATH_MAX], sock[PATH_MAX], hn[256] = "";

		if (!realpath(o.mountpoint, mnt_abs)) {
			fprintf(stderr, PROG ": %s: %s\n", o.mountpoint, strerror(errno));
			goto out;
		}
		if (!o.host && gethostname(hn, sizeof(hn) - 1) < 0)
			strcpy(hn, "localhost");
		snprintf(sock, sizeof(sock), "/run/vmfs-hostd/%s.sock", o.host ? o.host : hn);
		r = vmfsd_fence_start(mnt_abs, o.hostd_socket ? o.hostd_socket : sock, &mo.fence_arg);
		if (r) {
			fprintf(stderr, PROG ": fence responder: %s\n", strerror(-r));
			goto out;
		}
		mo.fence_hook = vmfsd_fence_hook;
	}
	/* the log names the volume and host from the start: the mount itself
	 * may recover this host's previous incarnation */
	vmfsd_log_open(o.foreground);
	{
		char hn[256] = "localhost";

		gethostname(hn, sizeof(hn) - 1);
		vmfsd_log_name(NULL, o.device, o.host ? o.host : hn);
	}
	mo.log_hook = vmfsd_log_hook;
	mo.cache_hook = vmfsd_fuse_cache_hook;
	r = fs_mount(o.device, &mo, &fs, &mflags);
	if (r) {
		mount_error(o.device, o.host, bd, unreplayed, r);
		goto out;
	}
	if (mflags & FS_MOUNT_UNREPLAYED) {
		describe_unreplayed(o.device, bd, unreplayed);
		fprintf(stderr, PROG ": %s: mounted read-only WITHOUT those journals "
			"(norecovery): what those hosts committed last is missing or half "
			"there\n", o.device);
	}
	if (mflags & FS_MOUNT_REPLAYED)
		fprintf(stderr, PROG ": %s: replayed the journal of host '%s'\n", o.device,
			fs_host(fs));
	if (mflags & FS_MOUNT_USED_BACKUP_SB)
		fprintf(stderr, PROG ": %s: primary superblock was damaged; mounted from "
			"the backup%s\n", o.device,
			o.ro ? "" : " and restored the primary");

	/* Kernel-side permission checks (the fs layer trusts its caller), the
	 * device as the source shown by mount(8), and other users (QEMU often
	 * runs unprivileged) allowed when root mounts. */
	snprintf(optbuf, sizeof(optbuf), "-odefault_permissions,fsname=%s,subtype=vmfsd%s",
		 o.device, getuid() == 0 ? ",allow_other" : "");
	if (fuse_opt_add_arg(&args, optbuf)) {
		fprintf(stderr, PROG ": out of memory\n");
		goto out;
	}
	se = fuse_session_new(&args, vmfsd_fuse_ops(), sizeof(struct fuse_lowlevel_ops), fs);
	if (!se)
		goto out;
	vmfsd_fuse_set_session(se);
	if (fuse_set_signal_handlers(se)) {
		fprintf(stderr, PROG ": cannot install signal handlers\n");
		goto out;
	}
	if (fuse_session_mount(se, o.mountpoint)) {
		fprintf(stderr, PROG ": cannot mount on %s\n", o.mountpoint);
		goto out_sig;
	}
	/* in the foreground the log also goes to stderr (tests read it) */
	vmfsd_fence_mounted();
	vmfsd_log_name(fs_super(fs)->label, o.device, fs_host(fs));
	vmfsd_log(LOG_INFO, "mounted on %s", o.mountpoint);
	if (!o.foreground) {
		report_status(1);
		detach();
	}
	if (o.batch_gap_us > 0)
		bdev_fault_batch_gap(fs_device(fs), (unsigned)o.batch_gap_us);
	if (o.fail_io_after > 0 || o.freeze_io_after > 0 || o.fault_on_usr1) {
		static struct fault_plan fp;
		pthread_t t;

		fp = (struct fault_plan){ fs_device(fs), o.fail_io_after, o.freeze_io_after,
					  o.freeze_io_for > 0 ? o.freeze_io_for : 1000,
					  o.fault_on_usr1 };
		if (pthread_create(&t, NULL, fault_thread, &fp) == 0)
			pthread_detach(t);
	}
	lc = fuse_loop_cfg_create();
	if (!lc) {
		fuse_session_unmount(se);
		goto out_sig;
	}
	fuse_loop_cfg_set_max_threads(lc, MAX_THREADS);
	fuse_loop_cfg_set_idle_threads(lc, 16);
	fuse_loop_cfg_set_clone_fd(lc, 1);
	/* our own loop where the device allows it (an image file or block
	 * device), libfuse's on an iSCSI LUN and with the crash model */
	r = bdev_aio_set_issuers(fs_device(fs), (unsigned)o.issuers);
	if (!r)
		r = vmfsd_fuse_loop(se, fs_device(fs), MAX_THREADS,
				    o.spin_us >= 0 ? (unsigned)o.spin_us : SPIN_US, !o.no_fuse_uring);
	if (r == -EOPNOTSUPP) {
		ret = fuse_session_loop_mt(se, lc) ? 1 : 0;
	} else {
		uint64_t nring, ndev;
		int rerr;

		if (r)
			fprintf(stderr, PROG ": the request loop ended: %s\n", strerror(-r));
		ret = r ? 1 : 0;
		vmfsd_fuse_ring_stats(&nring, &ndev, &rerr);
		if (rerr)
			vmfsd_log(LOG_WARNING, "requests could not go through io_uring: %s",
				  strerror(-rerr));
		vmfsd_log(LOG_INFO, "requests served: %" PRIu64 " through io_uring, %" PRIu64
			  " through /dev/fuse", nring, ndev);
	}
	fuse_loop_cfg_destroy(lc);
	fuse_session_unmount(se);
out_sig:
	fuse_remove_signal_handlers(se);
out:
	/* Asynchronous reads and writes reply from the issuer thread through
	 * the session: all of them must be done before it is freed.  The loop
	 * ends with some in flight when the connection is aborted (lazy
	 * unmount, /sys/fs/fuse/connections/N/abort) or on a signal; a reply
	 * into a freed session could corrupt memory or block the issuer for
	 * ever, and unmount would then wait for it in aio drain. */
	if (fs)
		bdev_aio_drain(fs_device(fs));
	if (se) {
		vmfsd_fuse_set_session(NULL);   /* the commit thread runs on */
		fuse_session_destroy(se);
		vmfsd_fuse_ring_free();
	}
	if (fs) {
		r = fs_unmount(fs);
		if (r) {
			vmfsd_log(LOG_ERR, "unmount: %s", strerror(-r));
			ret = 1;
		} else {
			vmfsd_log(LOG_INFO, "unmounted");
		}
	}
	bdev_close(bd);         /* fs_mount and fs_unmount leave our device open */
	report_status(0);
	fuse_opt_free_args(&args);
	free(o.host);
	free(o.hostd_socket);
	free(o.device);
	free(o.mountpoint);
	return ret;
}
