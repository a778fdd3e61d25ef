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
#include <pthread.h>
#include <time.h>
#include <fcntl.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <syslog.h>
#include <unistd.h>

#include "bdev/bdev.h"
#include "format/format.h"
#include "fuse/fuse_ops.h"
#include "lockmgr/lockmgr.h"

#define PROG "vmfsd"

/* Enough FUSE worker threads for QD32 direct I/O from several guests: a
 * request blocks its thread for one device I/O. */
#define MAX_THREADS 96

struct opts {
	char *host;
	int fail_io_after;      /* ms; fault injection for tests, 0 = off */
	int freeze_io_after;
	int freeze_io_for;
	char *device;
	char *mountpoint;
	int ro;
	int foreground;
	int debug;
	int help;
	int version;
	int status;
	int json;
};

enum { KEY_HELP, KEY_VERSION, KEY_FG, KEY_DEBUG, KEY_RO, KEY_STATUS, KEY_JSON };

static const struct fuse_opt opt_spec[] = {
	{ "host=%s", offsetof(struct opts, host), 0 },
	{ "fail_io_after=%d", offsetof(struct opts, fail_io_after), 0 },
	{ "freeze_io_after=%d", offsetof(struct opts, freeze_io_after), 0 },
	{ "freeze_io_for=%d", offsetof(struct opts, freeze_io_for), 0 },
	FUSE_OPT_KEY("ro", KEY_RO),
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
		"  -o OPT[,OPT...]    other FUSE/mount options (allow_other, ...)\n"
		"  -o fail_io_after=MS, -o freeze_io_after=MS,freeze_io_for=MS\n"
		"                     fault injection for cluster tests: all I/O fails, or\n"
		"                     hangs for a while, MS after the mount\n"
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

static int show_status(const char *device, int json)
{
	struct lockmgr_status *st;
	struct bdev *bd;
	char *text = NULL;
	int r;

	r = bdev_open(device, BDEV_RDONLY, &bd);
	if (r) {
		fprintf(stderr, PROG ": %s: %s\n", device, strerror(-r));
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
	r = lockmgr_status_format(st, json, &text);
	if (!r)
		fputs(text, stdout);
	free(text);
	lockmgr_status_free(st);
	bdev_close(bd);
	return r ? 1 : 0;
}

static void mount_error(const char *device, const char *host, int r)
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
			"does not support\n", device);
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
		fprintf(stderr, PROG ": %s: the journal needs recovery, which a read-only "
			"mount cannot do; mount read-write once or run fsck.vmfsd\n", device);
		break;
	case -ERANGE:
		fprintf(stderr, PROG ": %s: the device is smaller than the filesystem on it "
			"(truncated image?)\n", device);
		break;
	case -ENOTBLK:
		fprintf(stderr, PROG ": %s: not a regular file or block device\n", device);
		break;
	case -EOPNOTSUPP:
		fprintf(stderr, PROG ": %s: the file does not support direct I/O "
			"(tmpfs?); put the image on a disk filesystem\n", device);
		break;
	default:
		fprintf(stderr, PROG ": %s: cannot mount: %s\n", device, strerror(-r));
	}
}

/* Fault injection points (named, compiled in, off unless asked for): the
 * cluster tests use them to make one host's storage fail or hang. */
struct fault_plan {
	struct bdev *bd;
	int fail_after, freeze_after, freeze_for;
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

	if (fp->fail_after) {
		sleep_ms(fp->fail_after);
		syslog(LOG_WARNING, "fault injection: all I/O fails from now on");
		bdev_fault_set(fp->bd, BDEV_FAULT_ALL_EIO);
	} else if (fp->freeze_after) {
		sleep_ms(fp->freeze_after);
		syslog(LOG_WARNING, "fault injection: I/O frozen for %d ms", fp->freeze_for);
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
	struct opts o = { 0 };
	struct fs *fs = NULL;
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
	if (!o.foreground) {
		r = fork_daemon();
		if (r) {
			fprintf(stderr, PROG ": fork: %s\n", strerror(-r));
			return 1;
		}
	}

	mo.host = o.host;
	mo.readonly = o.ro;
	r = fs_mount(o.device, &mo, &fs, &mflags);
	if (r) {
		mount_error(o.device, o.host, r);
		goto out;
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
	if (fuse_set_signal_handlers(se)) {
		fprintf(stderr, PROG ": cannot install signal handlers\n");
		goto out;
	}
	if (fuse_session_mount(se, o.mountpoint)) {
		fprintf(stderr, PROG ": cannot mount on %s\n", o.mountpoint);
		goto out_sig;
	}
	openlog(PROG, LOG_PID, LOG_DAEMON);
	syslog(LOG_INFO, "host %s mounted %s (%s) on %s", fs_host(fs), o.device,
	       fs_super(fs)->label, o.mountpoint);
	if (!o.foreground) {
		report_status(1);
		detach();
	}
	if (o.fail_io_after > 0 || o.freeze_io_after > 0) {
		static struct fault_plan fp;
		pthread_t t;

		fp = (struct fault_plan){ fs_device(fs), o.fail_io_after, o.freeze_io_after,
					  o.freeze_io_for > 0 ? o.freeze_io_for : 1000 };
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
	ret = fuse_session_loop_mt(se, lc) ? 1 : 0;
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
	if (se)
		fuse_session_destroy(se);
	if (fs) {
		r = fs_unmount(fs);
		if (r) {
			syslog(LOG_ERR, "%s: unmount: %s", o.device, strerror(-r));
			ret = 1;
		} else {
			syslog(LOG_INFO, "host %s unmounted %s", mo.host ? mo.host : "", o.device);
		}
	}
	report_status(0);
	fuse_opt_free_args(&args);
	free(o.host);
	free(o.device);
	free(o.mountpoint);
	return ret;
}
