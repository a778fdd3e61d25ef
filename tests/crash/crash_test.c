// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Power-cut test harness (the CrashMonkey / dm-log-writes method).
 *
 * A seeded, single-threaded workload of creates, writes, truncates, renames,
 * unlinks, fsyncs and syncs runs through the real fs/ code on an image whose
 * bdev simulates a volatile write cache.  The power is cut at the Nth device
 * write; what the cache held is dropped, kept in part, or torn per sector;
 * then the volume is mounted again (journal replay) and checked:
 *   - fsck (the shared checker) finds nothing to repair;
 *   - every file as of the last acknowledged fsync/sync that was not touched
 *     afterwards is at its path with exactly its content;
 *   - no file shows a byte it was never given (bytes encode file id,
 *     version and offset), so stale or foreign data is caught;
 *   - no file appears twice (rename is atomic).
 * Every failure prints the seed, cut point and mode that reproduce it.
 *
 *   crash_test --mkfs PATH [--dir BASE] [--fsck PATH] [--seed S] [--seeds N]
 *              [--cuts N] [--ops N] [--cut N --mode M]   (one point: reproduce)
 *              [--stall MS]
 * --stall stops the whole process for MS milliseconds half-way through every
 * workload, as a loaded machine's scheduler may: the host must not fence
 * itself (and fail the workload with EIO) over a stall the heartbeat
 * timeout of the test volume is meant to absorb.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bdev/bdev.h"
#include "fs/fs.h"
#include "fs/fs_internal.h"          /* fs->fenced, fs->hb: see fenced_detail() */
#include "lockmgr/lockmgr_internal.h"

#define MAXF 64
#define MAXV 96
#define MAXSZ (4u << 20)
#define NDIRS 3

struct mfile {
	bool live;
	int dir;
	char name[32];
	uint8_t *data;
	size_t size;
	uint32_t ver[MAXV];
	int nver;
	bool touched;           /* changed since the last durable snapshot */
};

struct model {
	struct mfile f[MAXF];
	int nfiles;
};

static const char *dirs[NDIRS] = { "", "a", "b" };
static const char *mkfs_path, *fsck_path, *workdir;
static unsigned stall_ms;
static char template_img[4096], img[4096];
static int failures;

static uint64_t rnd(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 2685821657736338717ull;
}

/* Byte OFF of version V of file ID: never 0, so zeros are always holes. */
static uint8_t gen(int id, uint32_t v, uint64_t off)
{
	uint64_t x = ((uint64_t)id << 48) ^ ((uint64_t)v << 28) ^ off;

	x ^= x >> 31;
	x *= 0x7fb5d329728ea185ull;
	x ^= x >> 27;
	return (uint8_t)(x % 255 + 1);
}

static void fail(const char *what, uint64_t seed, uint64_t cut, int mode, const char *detail)
{
	fprintf(stderr, "FAIL seed=%" PRIu64 " cut=%" PRIu64 " mode=%d: %s: %s\n", seed, cut,
		mode, what, detail);
	failures++;
}

/* Runs ARGV with its stdout into OUT (or /dev/null). */
static int run_to(const char *const argv[], const char *out)
{
	pid_t pid = fork();
	int st;

	if (pid == 0) {
		int fd = open(out ? out : "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0600);

		dup2(fd, 1);
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	if (pid < 0 || waitpid(pid, &st, 0) < 0)
		return -1;
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int run(const char *const argv[])
{
	return run_to(argv, NULL);
}

/* Sparse copy of the formatted template. */
static int copy_sparse(const char *src, const char *dst)
{
	int in = open(src, O_RDONLY), out = open(dst, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	static char buf[1 << 20];
	off_t size, pos = 0;
	int r = -1;

	if (in < 0 || out < 0)
		goto out;
	size = lseek(in, 0, SEEK_END);
	if (ftruncate(out, size) < 0)
		goto out;
	while (pos < size) {
		off_t d = lseek(in, pos, SEEK_DATA), h;

		if (d < 0)
			break;
		h = lseek(in, d, SEEK_HOLE);
		for (pos = d; pos < h;) {
			ssize_t n = pread(in, buf, (size_t)(h - pos < (off_t)sizeof(buf) ?
							    h - pos : (off_t)sizeof(buf)), pos);

			if (n <= 0 || pwrite(out, buf, (size_t)n, pos) != n)
				goto out;
			pos += n;
		}
	}
	r = fsync(out);
out:
	if (in >= 0)
		close(in);
	if (out >= 0)
		close(out);
	return r;
}

static int lookup_dir(struct fs *fs, int d, uint64_t *ino)
{
	struct fs_attr a;
	int r;

	if (d == 0) {
		*ino = 1;
		return 0;
	}
	r = fs_lookup(fs, 1, dirs[d], &a);
	if (r)
		return r;
	fs_forget(fs, a.ino, 1);
	*ino = a.ino;
	return 0;
}

static int file_ino(struct fs *fs, const struct mfile *m, uint64_t *ino)
{
	struct fs_attr a;
	uint64_t d;
	int r = lookup_dir(fs, m->dir, &d);

	if (!r)
		r = fs_lookup(fs, d, m->name, &a);
	if (r)
		return r;
	fs_forget(fs, a.ino, 1);
	*ino = a.ino;
	return 0;
}

/* One workload step; returns 0, 1 if it was a durability point, or -errno. */
static int step(struct fs *fs, struct model *m, uint64_t *s, uint32_t opno)
{
	uint64_t ino, dino;
	struct fs_file *fh;
	struct fs_attr a;
	int op = (int)(rnd(s) % 100), id, r;
	struct mfile *f;

	if (m->nfiles < 4 || (op < 12 && m->nfiles < MAXF)) {
		id = m->nfiles;
		f = &m->f[id];
		f->dir = (int)(rnd(s) % NDIRS);
		snprintf(f->name, sizeof(f->name), "f%d", id);
		/* In the model before the attempt: a create cut short may still
		 * reach the disk if its journal transaction did. */
		f->data = calloc(1, MAXSZ);
		f->touched = true;
		m->nfiles++;
		r = lookup_dir(fs, f->dir, &dino);
		if (!r)
			r = fs_mknod(fs, dino, f->name, S_IFREG | 0644, 0, 0, 0, &a);
		if (r)
			return r;
		fs_forget(fs, a.ino, 1);
		f->live = true;
		return 0;
	}
	id = (int)(rnd(s) % (uint64_t)m->nfiles);
	f = &m->f[id];
	if (!f->live)
		return 0;
	if (op < 55) {
		/* Write: sizes from a byte to 1.5 MiB, across unit boundaries. */
		uint64_t off = rnd(s) % (3u << 20);
		size_t len = rnd(s) % 4 == 0 ? rnd(s) % (1536u << 10) + 1 : rnd(s) % 65536 + 1;
		uint8_t *buf;
		size_t i;

		/* One write in eight covers whole 1 MiB units from a unit
		 * boundary: the allocating write that runs under the shared
		 * iolock (fs/file.c, write_alloc_shared), whose new units must
		 * never show another file's old bytes after a cut. */
		if (rnd(s) % 8 == 0) {
			off &= ~(uint64_t)((1u << 20) - 1);
			len = (size_t)(rnd(s) % 2 + 1) << 20;
		}

		if (off + len > MAXSZ)
			len = MAXSZ - off;
		if (f->nver == MAXV)
			return 0;
		/* Recorded before the attempt: a write cut short by the power
		 * failure may still have landed in part. */
		f->ver[f->nver++] = opno;
		f->touched = true;
		buf = malloc(len);
		for (i = 0; i < len; i++)
			buf[i] = gen(id, opno, off + i);
		r = file_ino(fs, f, &ino);
		if (!r)
			r = fs_open(fs, ino, O_RDWR, &fh);
		if (!r) {
			ssize_t n = fs_write(fs, fh, buf, len, off);

			r = n < 0 ? (int)n : 0;
			fs_release(fs, fh);
		}
		if (!r) {
			memcpy(f->data + off, buf, len);
			if (off + len > f->size)
				f->size = off + len;
		}
		free(buf);
		return r;
	}
	if (op < 63) {
		struct fs_setattr sa = { .size = rnd(s) % MAXSZ };

		if (rnd(s) & 1)
			sa.size %= 8192;
		f->touched = true;
		r = file_ino(fs, f, &ino);
		if (!r)
			r = fs_setattr(fs, ino, &sa, FS_SET_SIZE, &a);
		if (r)
			return r;
		if (sa.size < f->size)
			memset(f->data + sa.size, 0, f->size - sa.size);
		f->size = sa.size;
		f->touched = true;
		return 0;
	}
	if (op < 72) {
		int nd = (int)(rnd(s) % NDIRS);
		char nn[32];
		uint64_t sd;

		snprintf(nn, sizeof(nn), "f%d_%u", id, opno);
		f->touched = true;
		r = lookup_dir(fs, f->dir, &sd);
		if (!r)
			r = lookup_dir(fs, nd, &dino);
		if (!r)
			r = fs_rename(fs, sd, f->name, dino, nn, 0);
		if (r)
			return r;
		f->dir = nd;
		strcpy(f->name, nn);
		f->touched = true;
		return 0;
	}
	if (op < 77) {
		f->touched = true;
		r = lookup_dir(fs, f->dir, &dino);
		if (!r)
			r = fs_unlink(fs, dino, f->name);
		if (r)
			return r;
		f->live = false;
		f->touched = true;
		return 0;
	}
	if (op < 95) {
		r = file_ino(fs, f, &ino);
		if (!r)
			r = fs_open(fs, ino, O_RDWR, &fh);
		if (!r) {
			r = fs_fsync(fs, fh, rnd(s) & 1);
			fs_release(fs, fh);
		}
		return r ? r : 1;
	}
	r = fs_sync(fs);
	return r ? r : 1;
}

static void snapshot(const struct model *m, struct model *snap)
{
	int i;

	for (i = 0; i < MAXF; i++) {
		free(snap->f[i].data);
		snap->f[i] = m->f[i];
		snap->f[i].data = NULL;
		if (m->f[i].live) {
			snap->f[i].data = malloc(MAXSZ);
			memcpy(snap->f[i].data, m->f[i].data, MAXSZ);
		}
	}
	snap->nfiles = m->nfiles;
}

static void model_free(struct model *m)
{
	int i;

	for (i = 0; i < MAXF; i++) {
		free(m->f[i].data);
		m->f[i].data = NULL;
	}
}

/* Reads a whole file of the recovered volume. */
static int read_all(struct fs *fs, uint64_t ino, uint8_t **out, size_t *size)
{
	struct fs_file *fh;
	struct fs_attr a;
	int r = fs_getattr(fs, ino, &a);
	ssize_t n;

	if (r)
		return r;
	if (a.size > MAXSZ)
		return -EFBIG;
	*out = malloc(a.size + 1);
	*size = a.size;
	r = fs_open(fs, ino, O_RDONLY, &fh);
	if (r)
		return r;
	n = fs_read(fs, fh, *out, a.size, 0);
	fs_release(fs, fh);
	return n == (ssize_t)a.size ? 0 : (n < 0 ? (int)n : -EIO);
}

static void verify(const struct model *all, const struct model *snap, uint64_t seed,
		   uint64_t cut, int mode)
{
	struct fs_mount_opts mo = { .host = "crash", .commit_interval_ms = -1,
				    .reclaim_own_slot = 1 };
	int seen[MAXF] = { 0 };
	char msg[512];
	struct fs *fs;
	int d, r;

	r = fs_mount(img, &mo, &fs, NULL);
	if (r) {
		snprintf(msg, sizeof(msg), "%s", strerror(-r));
		fail("remount", seed, cut, mode, msg);
		return;
	}
	for (d = 0; d < NDIRS; d++) {
		struct fs_dirent de;
		struct fs_dir *dh;
		uint64_t dino, i;

		if (lookup_dir(fs, d, &dino) || fs_opendir(fs, dino, &dh)) {
			fail("directory", seed, cut, mode, dirs[d]);
			continue;
		}
		for (i = 2; fs_dir_entry(dh, i, &de) == 0; i++) {
			int id;
			uint8_t *data = NULL;
			size_t size = 0, o;
			const struct mfile *mf, *sf;

			if (de.type == DT_DIR)
				continue;
			if (sscanf(de.name, "f%d", &id) != 1 || id < 0 || id >= MAXF) {
				fail("unknown name", seed, cut, mode, de.name);
				continue;
			}
			if (seen[id]++) {
				fail("file appears twice", seed, cut, mode, de.name);
				continue;
			}
			if (read_all(fs, de.ino, &data, &size)) {
				fail("read", seed, cut, mode, de.name);
				free(data);
				continue;
			}
			mf = &all->f[id];
			for (o = 0; o < size; o++) {
				int v, ok = data[o] == 0;

				for (v = 0; v < mf->nver && !ok; v++)
					ok = data[o] == gen(id, mf->ver[v], o);
				if (!ok) {
					snprintf(msg, sizeof(msg), "%s/%s byte %zu = %u never written",
						 dirs[d], de.name, o, data[o]);
					fail("stale or foreign data", seed, cut, mode, msg);
					break;
				}
			}
			sf = &snap->f[id];
			if (id < snap->nfiles && sf->live && !all->f[id].touched &&
			    (sf->dir != d || strcmp(sf->name, de.name) || size != sf->size ||
			     memcmp(data, sf->data, size))) {
				snprintf(msg, sizeof(msg), "%s/%s (size %zu, durable %zu)", dirs[d],
					 de.name, size, sf->size);
				fail("durable file changed", seed, cut, mode, msg);
			}
			free(data);
		}
		fs_closedir(dh);
	}
	/* Every durable, untouched file must be there. */
	for (d = 0; d < snap->nfiles; d++)
		if (snap->f[d].live && !all->f[d].touched && !seen[d]) {
			snprintf(msg, sizeof(msg), "%s/%s", dirs[snap->f[d].dir], snap->f[d].name);
			fail("durable file lost", seed, cut, mode, msg);
		}
	r = fs_unmount(fs);
	if (r)
		fail("unmount", seed, cut, mode, strerror(-r));
	if (fsck_path) {
		const char *argv[] = { fsck_path, "-n", img, NULL };
		char out[4200];

		snprintf(out, sizeof(out), "%s/fsck.out", workdir);
		r = run_to(argv, out);
		if (r != 0) {
			char line[512];
			FILE *f = fopen(out, "r");

			snprintf(msg, sizeof(msg), "fsck.vmfsd -n exit %d", r);
			fail("fsck", seed, cut, mode, msg);
			while (f && fgets(line, sizeof(line), f))
				fprintf(stderr, "    %s", line);
			if (f)
				fclose(f);
		}
		unlink(out);
	}
}

/* Stops every thread of this process for MS milliseconds: a child sends
 * SIGSTOP, waits, sends SIGCONT.  The monotonic clock the heartbeat and
 * fencing threads read goes on meanwhile, as under a real stall. */
static void stall(unsigned ms)
{
	pid_t me = getpid(), child = fork();

	if (child == 0) {
		struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000l };

		kill(me, SIGSTOP);
		while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
			;
		kill(me, SIGCONT);
		_exit(0);
	}
	if (child > 0)
		while (waitpid(child, NULL, 0) < 0 && errno == EINTR)
			;
}

/* A workload op that fails with EIO on a device that was not cut is either
 * a filesystem bug or the heartbeat fencing this host (its renewals were
 * late: the machine broke the I/O-time assumption of docs/cluster.md §2).
 * Says which, so a failure report names the right culprit. */
static bool fenced_detail(struct fs *fs, char *buf, size_t len)
{
	struct hb *hb = fs->hb;

	if (!fs->fenced || !hb)
		return false;
	snprintf(buf, len, "fence reason %d after %" PRIu64 " renewals, slowest renewal %.1f ms, "
		 "fence after %u ms without one", fs->fenced, (uint64_t)atomic_load(&hb->renewals),
		 (double)atomic_load(&hb->renew_max_ns) / 1e6, hb->t.fence_after_ms);
	return true;
}

/* Runs the workload; cut < 0: no cut, returns the device writes issued. */
static uint64_t one_run(uint64_t seed, int64_t cut, int mode, int ops)
{
	struct fs_mount_opts mo = { .host = "crash", .commit_interval_ms = -1,
				    .reclaim_own_slot = 1 };
	struct model m = { 0 }, snap = { 0 };
	uint64_t s = seed * 0x9e3779b97f4a7c15ull + 7, writes = 0;
	struct bdev *bd;
	struct fs *fs;
	uint32_t i;
	int r;

	if (copy_sparse(template_img, img)) {
		fail("copy template", seed, (uint64_t)cut, mode, strerror(errno));
		return 0;
	}
	if (bdev_open(img, 0, &bd) || bdev_crash_enable(bd)) {
		fail("open", seed, (uint64_t)cut, mode, img);
		return 0;
	}
	mo.bdev = bd;
	r = fs_mount(img, &mo, &fs, NULL);
	if (r) {
		fail("mount", seed, (uint64_t)cut, mode, strerror(-r));
		bdev_close(bd);
		return 0;
	}
	{
		struct fs_attr a;

		for (i = 1; i < NDIRS; i++) {
			r = fs_mkdir(fs, 1, dirs[i], 0755, 0, 0, &a);
			if (!r)
				fs_forget(fs, a.ino, 1);
		}
		fs_sync(fs);
	}
	if (cut >= 0)
		bdev_crash_cut_after(bd, (uint64_t)cut);
	for (i = 0; i < (uint32_t)ops; i++) {
		if (stall_ms && i == (uint32_t)ops / 2)
			stall(stall_ms);
		r = step(fs, &m, &s, i + 1);
		if (bdev_crash_is_cut(bd))
			break;
		if (r < 0) {
			char why[256];

			if (fenced_detail(fs, why, sizeof(why)))
				fail("host fenced itself, not a filesystem error", seed, (uint64_t)cut,
				     mode, why);
			else
				fail("workload op", seed, (uint64_t)cut, mode, strerror(-r));
			break;
		}
		if (r == 1) {
			int k;

			snapshot(&m, &snap);
			for (k = 0; k < MAXF; k++)
				m.f[k].touched = false;
		}
	}
	writes = bdev_crash_writes(bd);
	if (cut < 0) {
		(void)fs_unmount(fs);
		bdev_close(bd);
		model_free(&m);
		model_free(&snap);
		return writes;
	}
	bdev_crash_cut(bd);
	(void)fs_unmount(fs);    /* fails: the device is dead; frees memory */
	r = bdev_crash_resolve(bd, (enum bdev_crash_mode)mode, seed ^ (uint64_t)cut);
	bdev_close(bd);
	if (r)
		fail("resolve", seed, (uint64_t)cut, mode, strerror(-r));
	else
		verify(&m, &snap, seed, (uint64_t)cut, mode);
	model_free(&m);
	model_free(&snap);
	return writes;
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "mkfs", required_argument, NULL, 'm' },
		{ "fsck", required_argument, NULL, 'k' },
		{ "dir", required_argument, NULL, 'd' },
		{ "seed", required_argument, NULL, 's' },
		{ "cuts", required_argument, NULL, 'c' },
		{ "ops", required_argument, NULL, 'o' },
		{ "seeds", required_argument, NULL, 'n' },
		{ "cut", required_argument, NULL, 'x' },
		{ "mode", required_argument, NULL, 'y' },
		{ "stall", required_argument, NULL, 't' },
		{ NULL, 0, NULL, 0 }
	};
	uint64_t seed = 1, total = 0, tried = 0;
	int cuts = 30, ops = 150, seeds = 1, c, k, si, mode = -1;
	int64_t only = -1;

	setvbuf(stdout, NULL, _IOLBF, 0);       /* progress lines as they come */
	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (c) {
		case 'm': mkfs_path = optarg; break;
		case 'k': fsck_path = optarg; break;
		case 'd': workdir = optarg; break;
		case 's': seed = strtoull(optarg, NULL, 0); break;
		case 'c': cuts = atoi(optarg); break;
		case 'o': ops = atoi(optarg); break;
		case 'n': seeds = atoi(optarg); break;
		case 'x': only = strtoll(optarg, NULL, 0); break;
		case 'y': mode = atoi(optarg); break;
		case 't': stall_ms = (unsigned)atoi(optarg); break;
		default: return 2;
		}
	}
	if (!workdir)
		workdir = "/var/tmp";
	if (!mkfs_path) {
		fprintf(stderr, "usage: crash_test --mkfs PATH --dir DIR [--fsck PATH] "
			"[--seed S] [--seeds N] [--cuts N] [--ops N]\n");
		return 2;
	}
	if (fsck_path && access(fsck_path, X_OK))
		fsck_path = NULL;
	{
		static char tmpl[4096];

		/* O_DIRECT needs a disk filesystem: /var/tmp, not a tmpfs /tmp. */
		snprintf(tmpl, sizeof(tmpl), "%s/vmfsd-crash-XXXXXX", workdir);
		workdir = mkdtemp(tmpl);
		if (!workdir) {
			perror("mkdtemp");
			return 1;
		}
	}
	snprintf(template_img, sizeof(template_img), "%s/template.img", workdir);
	snprintf(img, sizeof(img), "%s/crash.img", workdir);
	{
		/* Heartbeat timing.  The interval is short (100 ms) because a
		 * remount recovers the crashed incarnation's slot after watching
		 * it for two intervals (fs/cluster.c), once per cut point.  The
		 * timeout is the product's default, 10 s (VMFSD_DEF_HB_TIMEOUT_MS):
		 * this test has one host and is not about fencing, and the
		 * timeout sets how slow the device may be (D = T / 5, capped at
		 * 2 s, docs/cluster.md §3) before the host fences itself.  With
		 * 1 s (D = 200 ms) a disk shared with parallel builds broke that
		 * assumption (renewals over 1 s were measured), the host fenced
		 * and the workload got EIO. */
		const char *argv_mkfs[] = { mkfs_path, "-q", "-f", "-H", "4", "--hb-interval", "100",
					    "--hb-timeout", "10000", "-s", "1G", template_img, NULL };

		if (run(argv_mkfs) != 0) {
			fprintf(stderr, "mkfs failed\n");
			return 1;
		}
	}
	for (si = 0; si < seeds; si++, seed++) {
		total = one_run(seed, -1, 0, ops);
		if (!total)
			return 1;
		if (only >= 0) {
			/* Reproduce one reported failure. */
			one_run(seed, only, mode < 0 ? 2 : mode, ops);
			tried++;
			continue;
		}
		for (k = 0; k < cuts; k++) {
			/* Spread the cuts over the run, plus the very first writes. */
			uint64_t cut = k < 3 ? (uint64_t)k : total * (uint64_t)k / (uint64_t)cuts +
				(seed * 31 + (uint64_t)k * 17) % (total / (uint64_t)cuts + 1);

			one_run(seed, (int64_t)cut, k % 3, ops);
			tried++;
		}
		printf("seed %" PRIu64 ": %" PRIu64 " device writes, %d cut points, failures so far %d\n",
		       seed, total, cuts, failures);
	}
	printf("crash test: %" PRIu64 " cut points tried, %d failures\n", tried, failures);
	unlink(img);
	unlink(template_img);
	rmdir(workdir);
	return failures ? 1 : 0;
}
