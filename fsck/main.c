// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * fsck.vmfsd: checks and repairs a vmfsd volume, with fsck(8) habits.
 *
 *   fsck.vmfsd [-n | -y | -p] [-f] [-C [FD]] [--json] DEVICE
 *
 * The checking is the library's (fsck/fsck.h); this program opens the
 * device (read-only unless repairing), prints what the library found and
 * did, and exits with fsck(8)'s codes: 0 clean, 1 errors corrected, 4
 * errors left uncorrected, 8 operational error, 16 usage error.  Without
 * -n, -y or -p it checks read-only and says how to repair: there is no
 * interactive mode, a volume shared by hosts is repaired in maintenance.
 */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fsck/fsck.h"

#ifndef VMFSD_VERSION
#define VMFSD_VERSION "unknown"
#endif

#define PROG "fsck.vmfsd"

enum {
	EXIT_USAGE = 16,        /* fsck(8): usage or syntax error */
};

struct opts {
	enum fsck_mode mode;
	bool mode_given;
	int nmodes;
	int force;
	int progress_fd;        /* -1: none; 0: bar on stdout; else fsck(8) lines */
	bool json;
	const char *device;
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
		"Check and repair a vmfsd volume (a block device or an image file).\n"
		"\n"
		"Options:\n"
		"  -n              check only: open the device read-only, change nothing\n"
		"  -y              repair every problem found\n"
		"  -p, -a          preen: repair what is safe to repair unattended, and\n"
		"                  change nothing if anything else is wrong\n"
		"  -f              accepted for fsck(8); the check is always full\n"
		"  -C [FD]         show progress: a bar on stdout, or fsck(8) progress\n"
		"                  lines on file descriptor FD\n"
		"      --json      print a machine-readable report on stdout\n"
		"  -V, --version   print the version and exit\n"
		"  -h, --help      print this help and exit\n"
		"\n"
		"Without -n, -y or -p the check is read-only, as with -n.\n"
		"Exit status: 0 clean, 1 errors corrected, 4 errors left uncorrected,\n"
		"8 operational error, 16 usage error.\n"
		"\n"
		"See fsck.vmfsd(8).\n");
}

static bool all_digits(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++)
		if (!isdigit((unsigned char)*s))
			return false;
	return true;
}

/* -n, -y, -p/-a: counted, since only one of them may be given. */
static void mode_set(struct opts *o, enum fsck_mode mode)
{
	o->mode = mode;
	o->mode_given = true;
	o->nmodes++;
}

static int parse_args(int argc, char **argv, struct opts *o)
{
	static const struct option longopts[] = {
		{ "json", no_argument, NULL, 'J' },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	memset(o, 0, sizeof(*o));
	o->progress_fd = -1;
	while ((c = getopt_long(argc, argv, "nypafC::Vh", longopts, NULL)) != -1) {
		switch (c) {
		case 'n':
			mode_set(o, FSCK_READONLY);
			break;
		case 'y':
			mode_set(o, FSCK_REPAIR);
			break;
		case 'p':
		case 'a':
			mode_set(o, FSCK_PREEN);
			break;
		case 'f':
			o->force++;
			break;
		case 'C':
			/* e2fsck takes "-C FD" and "-C0"; a bare -C means stdout.
			 * A separate argument is the fd only if it is a number and
			 * the device still follows it. */
			if (optarg)
				o->progress_fd = all_digits(optarg) ? atoi(optarg) : -2;
			else if (optind + 1 < argc && all_digits(argv[optind]))
				o->progress_fd = atoi(argv[optind++]);
			else
				o->progress_fd = 0;
			if (o->progress_fd < 0) {
				err("-C needs a file descriptor number");
				return -EINVAL;
			}
			break;
		case 'J':
			o->json = true;
			break;
		case 'V':
			printf(PROG " from vmfsd %s\n", VMFSD_VERSION);
			exit(0);
		case 'h':
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			return -EINVAL;
		}
	}
	if (o->nmodes > 1) {
		err("only one of -n, -y and -p may be given");
		return -EINVAL;
	}
	if (optind != argc - 1) {
		err(optind >= argc ? "no device given" : "only one device may be given");
		usage(stderr);
		return -EINVAL;
	}
	o->device = argv[optind];
	return 0;
}

/* ---------------- progress ---------------- */

struct progress {
	int fd;
	FILE *bar;              /* NULL: fsck(8) lines on fd */
	const char *device;
	double last;            /* monotonic seconds of the last update */
	int shown;
};

static double mono(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void progress_cb(int pass, int npasses, const char *what, uint64_t done, uint64_t total,
			void *arg)
{
	struct progress *p = arg;
	double t = mono(), frac = total ? (double)done / (double)total : 1.0;
	double pct = 100.0 * ((pass - 1) + frac) / npasses;

	/* Ten updates a second are plenty, and keep the check fast. */
	if (t - p->last < 0.1 && done != total)
		return;
	p->last = t;
	if (!p->bar) {
		dprintf(p->fd, "%d %" PRIu64 " %" PRIu64 " %s\n", pass, done, total, p->device);
		return;
	}
	{
		char bar[41];
		int n = (int)(pct * 40 / 100), i;

		for (i = 0; i < 40; i++)
			bar[i] = i < n ? '=' : ' ';
		bar[40] = 0;
		fprintf(p->bar, "\r%s: |%s| %5.1f%%  pass %d/%d: %-24.24s", p->device, bar, pct, pass,
			npasses, what);
		fflush(p->bar);
		p->shown = 1;
	}
}

static void progress_end(struct progress *p)
{
	if (p->bar && p->shown) {
		fprintf(p->bar, "\r%*s\r", 100, "");
		fflush(p->bar);
	}
}

/* ---------------- human output ---------------- */

struct printer {
	const struct opts *o;
	int count;
};

static void print_problem(const struct fsck_problem *p, void *arg)
{
	struct printer *pr = arg;
	const struct opts *o = pr->o;

	if (o->json)
		return;
	if (!pr->count++)
		printf("\n");
	if (!p->error) {
		printf("  note: %s\n", p->msg);
		return;
	}
	if (p->action == FSCK_ACT_FIXED)
		printf("  %s\n      fixed: %s\n", p->msg, p->fix);
	else if (!p->fix[0])
		printf("  %s\n      cannot be fixed by fsck\n", p->msg);
	else
		printf("  %s\n      not fixed: would %s%s\n", p->msg, p->fix,
		       o->mode == FSCK_PREEN && !p->preen_ok ? " (needs -y)" : "");
}

static void fmt_uuid(const uint8_t *u, char *out)
{
	static const char hex[] = "0123456789abcdef";
	int i, k = 0;

	for (i = 0; i < 16; i++) {
		if (i == 4 || i == 6 || i == 8 || i == 10)
			out[k++] = '-';
		out[k++] = hex[u[i] >> 4];
		out[k++] = hex[u[i] & 15];
	}
	out[k] = 0;
}

static void print_summary(const struct opts *o, int rc, const struct fsck_result *res)
{
	const char *dev = o->device;

	if (rc < 0)
		return;
	if (res->journals_replayed)
		printf("%s: replayed %u journal(s), %u transaction(s)\n", dev,
		       res->journals_replayed, res->journal_transactions);
	if (res->lost_found_ino && (res->orphans_reconnected || res->lost_found_created))
		printf("%s: %u orphan(s) %s /lost+found (inode %" PRIu64 "%s), named #<inode>\n",
		       dev, res->orphans_reconnected,
		       res->left ? "would go to" : "moved to", res->lost_found_ino,
		       res->lost_found_created ? (res->left ? ", to be created" : ", created") : "");
	if (res->orphans_freed)
		printf("%s: %u unlinked inode(s) %s\n", dev, res->orphans_freed,
		       res->left ? "would be released" : "released");
	if (!res->found) {
		printf("%s: clean, %" PRIu64 "/%" PRIu64 " inodes, %" PRIu64 "/%" PRIu64
		       " sub-blocks, %" PRIu64 "/%" PRIu64 " file blocks\n", dev, res->inodes_used,
		       res->sb.inode_count - 1, res->sub_used, res->sb.sub_count, res->blocks_used,
		       res->sb.block_count);
	} else {
		printf("%s: %" PRIu64 " problem(s) found, %" PRIu64 " fixed, %" PRIu64
		       " left uncorrected\n", dev, res->found, res->fixed, res->left);
		printf("%s: %" PRIu64 " inodes (%" PRIu64 " directories, %" PRIu64 " files, %" PRIu64
		       " symlinks, %" PRIu64 " other), %" PRIu64 " sub-blocks, %" PRIu64
		       " file blocks in use\n", dev, res->inodes_used, res->dirs, res->files,
		       res->symlinks, res->others, res->sub_used, res->blocks_used);
	}
	if (res->live)
		printf("%s: the volume is in use: this was a snapshot of a live volume\n", dev);
	if (res->preen_refused)
		printf("\n%s: UNEXPECTED INCONSISTENCY; RUN " PROG " -y MANUALLY.\n"
		       "\t(preen repairs only what is safe unattended; nothing was written)\n", dev);
	else if (res->left && !o->mode_given)
		printf("%s: read-only check (no -n, -y or -p given): to repair, run " PROG
		       " -y (or -p for the safe repairs only)\n", dev);
	else if (res->left && o->mode == FSCK_READONLY)
		printf("%s: nothing was changed (-n); run " PROG " -y to repair\n", dev);
}

/* ---------------- JSON ---------------- */

static void jstr(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;

		if (ch == '"' || ch == '\\')
			printf("\\%c", ch);
		else if (ch == '\n')
			printf("\\n");
		else if (ch < 0x20 || ch >= 0x7f)
			printf("\\u%04x", ch);  /* names are bytes, not UTF-8 */
		else
			putchar(ch);
	}
	putchar('"');
}

static const char *action_name(enum fsck_action a)
{
	return a == FSCK_ACT_FIXED ? "fixed" : a == FSCK_ACT_LEFT ? "not fixed" : "none";
}

static void print_json(const struct opts *o, int rc, int status, const char *error,
		       const struct fsck_result *res)
{
	char uuid[37];
	uint32_t i;

	printf("{\n  \"device\": ");
	jstr(o->device);
	printf(",\n  \"version\": ");
	jstr(VMFSD_VERSION);
	printf(",\n  \"mode\": \"%s\"", o->mode == FSCK_REPAIR ? "repair" :
	       o->mode == FSCK_PREEN ? "preen" : "check");
	printf(",\n  \"exit_status\": %d,\n  \"error\": ", status);
	if (error)
		jstr(error);
	else
		printf("null");
	if (rc >= 0 || res->sb.block_size) {
		fmt_uuid(res->sb.uuid, uuid);
		printf(",\n  \"volume\": {\"label\": ");
		jstr(res->sb.label);
		printf(", \"uuid\": \"%s\", \"device_size\": %" PRIu64 ", \"block_size\": %u, "
		       "\"max_hosts\": %u, \"superblock\": \"%s\"}", uuid, res->sb.device_size,
		       res->sb.block_size, res->sb.max_hosts,
		       res->sb_from_backup ? "backup" : "primary");
	}
	printf(",\n  \"in_use\": {\"live\": %s, \"slot\": %d, \"host\": ",
	       res->live ? "true" : "false", res->live_slot);
	jstr(res->live_host);
	printf(", \"pid\": %u}", res->live_pid);
	printf(",\n  \"journals\": {\"dirty\": %u, \"replayed\": %u, \"transactions\": %u}",
	       res->journals_dirty, res->journals_replayed, res->journal_transactions);
	printf(",\n  \"found\": %" PRIu64 ", \"fixed\": %" PRIu64 ", \"left\": %" PRIu64
	       ", \"preen_refused\": %s", res->found, res->fixed, res->left,
	       res->preen_refused ? "true" : "false");
	printf(",\n  \"lost_found\": {\"inode\": %" PRIu64 ", \"created\": %s, "
	       "\"reconnected\": %u, \"released\": %u}", res->lost_found_ino,
	       res->lost_found_created ? "true" : "false", res->orphans_reconnected,
	       res->orphans_freed);
	printf(",\n  \"usage\": {\"inodes\": %" PRIu64 ", \"directories\": %" PRIu64
	       ", \"files\": %" PRIu64 ", \"symlinks\": %" PRIu64 ", \"other\": %" PRIu64
	       ", \"sub_blocks\": %" PRIu64 ", \"file_blocks\": %" PRIu64 "}", res->inodes_used,
	       res->dirs, res->files, res->symlinks, res->others, res->sub_used, res->blocks_used);
	printf(",\n  \"problems\": [");
	for (i = 0; i < res->n_problems; i++) {
		const struct fsck_problem *p = &res->problems[i];
		const struct fsck_where *w = &p->where;

		printf("%s\n    {\"code\": ", i ? "," : "");
		jstr(p->code);
		printf(", \"structure\": ");
		jstr(p->structure);
		printf(", \"severity\": \"%s\", \"message\": ", p->error ? "error" : "note");
		jstr(p->msg);
		printf(", \"location\": {");
		{
			const char *sep = "";

			if (w->ino) {
				printf("\"inode\": %" PRIu64, w->ino);
				sep = ", ";
			}
			if (w->dir) {
				printf("%s\"directory\": %" PRIu64, sep, w->dir);
				sep = ", ";
			}
			if (w->has & FSCK_W_BLOCK) {
				printf("%s\"block\": %" PRIu64, sep, w->blocknr);
				sep = ", ";
			}
			if (w->has & FSCK_W_SLOT) {
				printf("%s\"slot\": %u", sep, w->slot);
				sep = ", ";
			}
			if (w->has & FSCK_W_LBLK) {
				printf("%s\"unit\": %" PRIu64, sep, w->lblk);
				sep = ", ";
			}
			if (w->name[0]) {
				printf("%s\"name\": ", sep);
				jstr(w->name);
			}
		}
		printf("}, \"action\": \"%s\", \"repair\": ", action_name(p->action));
		jstr(p->fix);
		printf(", \"preen_ok\": %s}", p->preen_ok ? "true" : "false");
	}
	printf("%s],\n  \"problems_dropped\": %" PRIu64 "\n}\n", res->n_problems ? "\n  " : "",
	       res->problems_dropped);
}

/* ---------------- main ---------------- */

static const char *rc_message(int rc, const struct fsck_result *res, char *buf, size_t len)
{
	switch (rc) {
	case -EMEDIUMTYPE:
		return "not a vmfsd volume";
	case -EUCLEAN:
		return "not a usable vmfsd volume: the primary and the backup superblock are "
		       "both damaged";
	case -EPROTONOSUPPORT:
		return "the volume uses features this fsck.vmfsd does not know";
	case -ERANGE:
		return "the device is smaller than the volume (truncated image or wrong device)";
	case -ENOSPC:
		return "no free inode or sub-block left for the repair (lost+found)";
	case -EBUSY:
		if (res->live_slot >= 0)
			snprintf(buf, len, "the volume is in use by host '%s' (slot %d, pid %u): "
				 "refusing to repair it; unmount it first, or check it read-only "
				 "with -n", res->live_host, res->live_slot, res->live_pid);
		else
			snprintf(buf, len, "the volume is in use (mounted on this machine): "
				 "refusing to repair it; unmount it first, or check it read-only "
				 "with -n");
		return buf;
	default:
		snprintf(buf, len, "check failed: %s", strerror(-rc));
		return buf;
	}
}

int main(int argc, char **argv)
{
	struct fsck_result res;
	struct printer pr = { 0 };
	struct progress prog = { 0 };
	struct fsck_opts fo = { 0 };
	struct bdev *bd = NULL;
	struct opts o;
	const char *msg = NULL;
	char buf[512];
	int rc, status;

	if (parse_args(argc, argv, &o))
		return EXIT_USAGE;
	memset(&res, 0, sizeof(res));
	res.live_slot = -1;
	pr.o = &o;
	if (o.force && !o.json)
		printf(PROG ": -f: the check is always full\n");
	rc = bdev_open(o.device, o.mode == FSCK_READONLY ? BDEV_RDONLY : BDEV_EXCL, &bd);
	if (rc) {
		if (bdev_open_hint(o.device, rc))
			snprintf(buf, sizeof(buf), "cannot open: %s", bdev_open_hint(o.device, rc));
		else if (rc == -EBUSY)
			snprintf(buf, sizeof(buf), "cannot open: device busy (mounted?)");
		else if (rc == -EOPNOTSUPP)
			snprintf(buf, sizeof(buf), "cannot open: the filesystem holding it does not "
				 "support O_DIRECT");
		else if (rc == -ENOTBLK)
			snprintf(buf, sizeof(buf), "not a block device or a regular file");
		else
			snprintf(buf, sizeof(buf), "cannot open: %s", strerror(-rc));
		msg = buf;
		goto out;
	}
	/* Repairs on an iSCSI LUN: registered, so that a reservation left by
	 * hosts that died mounted does not refuse our writes (fsck itself
	 * refuses to repair while any host is live; docs/cluster.md §8). */
	if (o.mode != FSCK_READONLY && bdev_is_iscsi(bd))
		(void)bdev_pr_register(bd, BDEV_PR_MAINT_KEY);
	fo.mode = o.mode;
	fo.problem = print_problem;
	fo.problem_arg = &pr;
	if (o.progress_fd >= 0) {
		prog.fd = o.progress_fd;
		prog.device = o.device;
		prog.bar = o.progress_fd == 0 ? (o.json ? stderr : stdout) : NULL;
		fo.progress = progress_cb;
		fo.progress_arg = &prog;
	}
	rc = fsck_check(bd, &fo, &res);
	progress_end(&prog);
	if (rc < 0)
		msg = rc_message(rc, &res, buf, sizeof(buf));
out:
	status = fsck_exit_status(rc, &res);
	if (o.json) {
		print_json(&o, rc, status, msg, &res);
	} else {
		if (msg)
			err("%s: %s", o.device, msg);
		if (pr.count)
			printf("\n");
		print_summary(&o, rc, &res);
	}
	fsck_result_free(&res);
	if (bd && o.mode != FSCK_READONLY && bdev_is_iscsi(bd))
		(void)bdev_pr_unregister(bd, BDEV_PR_MAINT_KEY);
	bdev_close(bd);
	return status;
}
