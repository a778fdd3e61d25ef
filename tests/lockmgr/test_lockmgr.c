// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Lock manager tests: several hosts as several real processes on one image.
 *
 * The parent never does device I/O itself (an io_uring ring set up in the
 * parent would be inherited, half-shared, by every child it forks); each
 * "host" is a forked child with its own bdev handles that executes commands
 * the parent posts in shared memory (join, start, acquire, kill, ...), so a
 * test reads as a script of what each host does and when.  Timestamps are
 * hb_clock_ns() (CLOCK_BOOTTIME, one clock for all processes of a kernel),
 * which lets the parent check orderings across hosts: fence before death,
 * last write before takeover.
 *
 * The image is made by the real mkfs.vmfsd with --hb-interval 100
 * --hb-timeout 1000 (I = 100 ms, T = 1 s: D = 200 ms, M = 300 ms).
 *
 *   test_lockmgr CASE     CASE: timing ats join dead takeover shared
 *                               fence-eio fence-stall fence-negative
 *                               replayer status starve late
 * Environment: MKFS_VMFSD (mkfs binary), LOCKMGR_STATUS (the status
 * program), LOCKMGR_TEST_DIR (where the image goes; default /dev/shm when
 * it takes O_DIRECT, else /var/tmp: see image_dir()).
 * Exit: 0 pass, 1 fail, 77 skip.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bdev/bdev.h"
#include "format/format.h"
#include "journal/journal.h"
#include "lockmgr/lockmgr.h"
#include "lockmgr/lockmgr_internal.h"

#define MAXH 8
#define MS 1000000ll
#define CMD_TIMEOUT_MS 20000

static int failures;
static int skipped;             /* the case needs what this machine lacks */
static int verbose;             /* LOCKMGR_TEST_VERBOSE=1: log every host command */

#define CHECK(cond, ...)                                                               \
	do {                                                                           \
		if (!(cond)) {                                                         \
			fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);  \
			fprintf(stderr, __VA_ARGS__);                                  \
			fprintf(stderr, "\n");                                         \
			failures++;                                                    \
		}                                                                      \
	} while (0)

/* Evaluates COND once (it often calls a host). */
#define REQUIRE(cond, ...)                                                             \
	do {                                                                           \
		bool ok_ = (cond);                                                     \
		CHECK(ok_, __VA_ARGS__);                                               \
		if (!ok_)                                                              \
			goto out;                                                      \
	} while (0)

static void note(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fprintf(stderr, "# ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
}

/* ---------------- shared memory and host processes ---------------- */

enum op {
	OP_NONE, OP_JOIN, OP_START, OP_ACQ, OP_REL, OP_REL_MANY, OP_UPG, OP_DOWN, OP_DESC, OP_INSPECT, OP_HANDOVER,
	OP_STATE, OP_WAIT_DEAD, OP_CLAIM, OP_REPLAY, OP_RELDEAD, OP_LEAVE, OP_BFAULT,
	OP_LMFAULT, OP_INFO, OP_READ, OP_WRITE, OP_WRITER, OP_ATS_INC, OP_BENCH, OP_NICE,
	OP_FLAGS, OP_WAIT_LATE,
};

/* Renewal writes remembered per host, by heartbeat counter (a ring). */
#define GATE_RING 64

struct host_ctl {
	_Atomic uint32_t seq, done;
	pid_t pid;
	/* request */
	int op;
	uint64_t off;
	int arg;
	uint32_t slot;
	char name[VMFSD_HOSTNAME_MAX + 1];
	_Alignas(64) uint8_t data[VMFSD_SECTOR];        /* decoded in place */
	/* answer */
	int r;
	struct lock_info li;
	struct hb_slot_info si;
	char text[512];
	int64_t t;
	int64_t join_t;                 /* before hb_join: the observer's start */
	uint32_t my_slot;
	uint64_t my_gen;
	int fenced, taken;
	uint32_t busy_slot;
	uint64_t count;
	/* written asynchronously by the host */
	_Atomic int64_t fence_t;
	_Atomic int fence_reason;
	_Atomic int64_t last_write_issue, last_write_done;
	_Atomic uint64_t writes_ok, writes_failed;
	/* For every renewal of our slot: the time its write was about to be
	 * issued (the bdev write gate, which runs before the I/O), keyed by the
	 * counter it writes.  Recorded before the write can land, so whatever
	 * content an observer judges dead has its entry, even if the host was
	 * killed right after (see case_dead). */
	_Atomic int64_t gate_t[GATE_RING];
	_Atomic uint64_t gate_ctr[GATE_RING];
};

struct shm {
	struct host_ctl h[MAXH];
	char image[4096];
	_Atomic int go;                 /* start barrier for racing hosts */
};

static struct shm *shm;
static struct vmfsd_sb g_sb;            /* parsed once by a host, copied here */
static struct hb_timing g_t;

/* ---- inside a host process ---- */

struct host {
	int idx;
	pthread_t cmd_thread;   /* the thread that executes commands */
	struct host_ctl *c;
	struct bdev *bd;        /* heartbeat and locks (the test injects faults here) */
	struct bdev *dbd;       /* "data" writes; the fence callback faults it */
	struct vmfsd_sb sb;
	struct hb *hb;
	pthread_t writer;
	uint64_t writer_off;
	bool writer_on;
};

static void on_fence(void *arg, enum hb_fence_reason reason)
{
	struct host *h = arg;

	/* What the filesystem will do: every later write fails. */
	bdev_fault_set(h->dbd, BDEV_FAULT_WRITE_EIO);
	atomic_store(&h->c->fence_reason, (int)reason);
	atomic_store(&h->c->fence_t, hb_clock_ns());
}

/* The write gate of the heartbeat/lock handle (the filesystem installs one
 * too, see fs/cluster.c): runs in the writing thread before each write is
 * issued.  Writes from any thread but the command thread are renewals (the
 * fence and monitor threads never write); the renewal thread holds own_mu
 * while it writes, so hb->me is stable here and the write in flight carries
 * counter me.counter + 1. */
static int host_write_gate(void *arg)
{
	struct host *h = arg;

	if (h->hb && !pthread_equal(pthread_self(), h->cmd_thread)) {
		uint64_t ctr = h->hb->me.counter + 1;

		atomic_store(&h->c->gate_t[ctr % GATE_RING], hb_clock_ns());
		atomic_store(&h->c->gate_ctr[ctr % GATE_RING], ctr);
	}
	return 0;
}

struct marker {
	uint32_t magic;         /* 'MARK' */
	uint32_t host;
	uint64_t seq;
	int64_t issue;
};

/* The VM workload of a host: a write every 2 ms to one sector, through the
 * data handle, recording when the last successful one was issued and done. */
static void *writer_main(void *arg)
{
	struct host *h = arg;
	uint8_t *sec = bdev_alloc(VMFSD_SECTOR);
	uint64_t seq = 0;
	struct sched_param sp = { .sched_priority = 1 };

	/* Real-time (best effort, as root) only so that the times recorded
	 * around each write are when it was issued and completed, not when a
	 * loaded scheduler let this thread run again: the checks compare them
	 * with the fence and the survivors' verdict. */
	(void)pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp);
	for (;;) {
		struct marker m = { 0x4b52414d, (uint32_t)h->idx, ++seq, hb_clock_ns() };
		struct timespec ts = { 0, 2 * MS };

		memset(sec, 0, VMFSD_SECTOR);
		memcpy(sec, &m, sizeof(m));
		if (!bdev_pwrite(h->dbd, sec, VMFSD_SECTOR, h->writer_off)) {
			atomic_store(&h->c->last_write_issue, m.issue);
			atomic_store(&h->c->last_write_done, hb_clock_ns());
			atomic_fetch_add(&h->c->writes_ok, 1);
		} else {
			atomic_fetch_add(&h->c->writes_failed, 1);
		}
		nanosleep(&ts, NULL);
	}
	return NULL;
}

static int wait_dead(struct host *h, uint32_t slot, int timeout_ms)
{
	int64_t end = hb_clock_ns() + timeout_ms * MS;

	/* Scan every 5 ms rather than relying on the monitor's interval: the
	 * earliest possible verdict is the one the ordering tests must bound. */
	while (hb_clock_ns() < end) {
		struct hb_slot_info si;
		struct timespec ts = { 0, 5 * MS };

		(void)hb_scan(h->hb);
		hb_slot_state(h->hb, slot, &si);
		if (si.liveness == HB_DEAD) {
			h->c->t = hb_clock_ns();
			h->c->si = si;
			return 0;
		}
		nanosleep(&ts, NULL);
	}
	return -ETIMEDOUT;
}

/* The counters of case_ats: NCTR sectors from OFF, adjacent ones and
 * others apart (bdev_ats_many locks each sector on its own). */
#define NCTR 6
static uint64_t ctr_off(uint64_t off, int k)
{
	return off + (uint64_t)(k < 3 ? k : 8 * k) * VMFSD_SECTOR;
}

/* N times: every counter + 1, by one ATS each (MANY false), or all of them
 * by bdev_ats_many, the miscompared ones again from what it returned. */
static int ats_inc(struct host *h, uint64_t off, uint64_t n, uint64_t *retries, bool many)
{
	const size_t S = VMFSD_SECTOR;
	uint8_t *cur = bdev_alloc(NCTR * S), *nv = bdev_alloc(NCTR * S);
	uint8_t *act = bdev_alloc(NCTR * S), *e = bdev_alloc(NCTR * S);
	uint64_t i, v, offs[NCTR];
	int r = 0, k, m, res[NCTR], idx[NCTR];

	for (i = 0; i < n && !r; i++) {
		for (k = 0; k < NCTR && !r; k++)
			r = bdev_pread(h->bd, cur + k * S, S, ctr_off(off, k));
		for (k = 0; k < NCTR && !r && !many; k++) {
			while (!r) {
				memcpy(&v, cur + k * S, 8);
				memcpy(nv, cur + k * S, S);
				v++;
				memcpy(nv, &v, 8);
				r = bdev_ats(h->bd, ctr_off(off, k), cur + k * S, nv, cur + k * S);
				if (r != -ECANCELED)
					break;
				(*retries)++;
				r = 0;
			}
		}
		for (m = many && !r ? NCTR : 0, k = 0; k < m; k++)
			idx[k] = k;
		while (m && !r) {
			int left = 0;

			for (k = 0; k < m; k++) {       /* the pending ones, compacted */
				memcpy(e + k * S, cur + idx[k] * S, S);
				memcpy(nv + k * S, cur + idx[k] * S, S);
				memcpy(&v, nv + k * S, 8);
				v++;
				memcpy(nv + k * S, &v, 8);
				offs[k] = ctr_off(off, idx[k]);
			}
			r = bdev_ats_many(h->bd, (unsigned)m, offs, e, nv, act, res);
			for (k = 0; k < m && !r; k++)
				if (res[k] != 0 && res[k] != -ECANCELED)
					r = res[k];
			for (k = 0; k < m && !r; k++) {
				if (!res[k])
					continue;
				memcpy(cur + idx[k] * S, act + k * S, S);
				(*retries)++;
				idx[left++] = idx[k];
			}
			m = left;
		}
	}
	bdev_free(cur);
	bdev_free(nv);
	bdev_free(act);
	bdev_free(e);
	return r;
}

struct inc_arg {
	struct host *h;
	uint64_t off, n, retries;
	int r;
	bool many;
};

static void *inc_thread(void *arg)
{
	struct inc_arg *a = arg;

	a->r = ats_inc(a->h, a->off, a->n, &a->retries, a->many);
	return NULL;
}

static void host_exec(struct host *h)
{
	struct host_ctl *c = h->c;
	uint8_t uuid[16];
	uint8_t *sec;

	c->r = 0;
	switch (c->op) {
	case OP_JOIN:
		if (getrandom(uuid, sizeof(uuid), 0) != sizeof(uuid))
			memset(uuid, h->idx + 1, sizeof(uuid));
		while (c->arg && !atomic_load(&shm->go))
			usleep(100);
		c->join_t = hb_clock_ns();
		c->r = hb_join(h->bd, &h->sb, c->name, uuid, &c->busy_slot, &h->hb);
		if (!c->r) {
			c->my_slot = hb_my_slot(h->hb);
			c->my_gen = hb_my_generation(h->hb);
			hb_set_fence_cb(h->hb, on_fence, h);
		}
		break;
	case OP_START:
		bdev_set_write_gate(h->bd, host_write_gate, h);
		c->r = hb_start(h->hb);
		break;
	case OP_NICE: {
		/* Every thread of this host (nice is per thread on Linux); the
		 * real-time ones ignore it. */
		DIR *d = opendir("/proc/self/task");
		struct dirent *de;

		c->r = d ? 0 : -errno;
		while (d && (de = readdir(d)))
			if (de->d_name[0] != '.' &&
			    setpriority(PRIO_PROCESS, (id_t)atoi(de->d_name), c->arg))
				c->r = -errno;
		if (d)
			closedir(d);
		break;
	}
	case OP_ACQ:
		c->r = lock_acquire(h->hb, h->bd, c->off, (uint16_t)c->arg, &c->li);
		break;
	case OP_REL:
		c->r = lock_release(h->hb, h->bd, c->off, &c->li);
		break;
	case OP_UPG:
		c->r = lock_upgrade(h->hb, h->bd, c->off, &c->li);
		break;
	case OP_DOWN:
		c->r = lock_downgrade(h->hb, h->bd, c->off, (uint16_t)c->arg, &c->li);
		break;
	case OP_HANDOVER:
		/* to slot c->slot, generation c->arg */
		c->r = lock_handover(h->hb, h->bd, c->off, c->slot, (uint64_t)c->arg, &c->li);
		break;
	case OP_INSPECT:
		c->r = lock_inspect(h->hb, h->bd, c->off, &c->li);
		break;
	case OP_REL_MANY: {
		/* the ARG inode records from inode number OFF on */
		uint64_t o[64];
		unsigned k, n = c->arg < 64 ? (unsigned)c->arg : 64;

		for (k = 0; k < n; k++)
			o[k] = vmfsd_inode_off(&h->sb, c->off + k);
		lock_release_many(h->hb, h->bd, o, n);
		break;
	}
	case OP_DESC:
		c->r = lock_holder_describe(h->hb, h->bd, c->off, c->text, sizeof(c->text));
		break;
	case OP_STATE:
		c->r = hb_slot_state(h->hb, c->slot, &c->si);
		break;
	case OP_WAIT_DEAD:
		c->r = wait_dead(h, c->slot, c->arg);
		break;
	case OP_CLAIM:
		c->t = hb_clock_ns();
		c->r = hb_claim_dead(h->hb, c->slot);
		break;
	case OP_REPLAY: {
		struct journal_replay_info ji;

		c->r = journal_replay(h->bd, &h->sb, c->slot, &ji);
		break;
	}
	case OP_RELDEAD:
		c->r = hb_release_dead(h->hb, c->slot);
		c->t = hb_clock_ns();
		break;
	case OP_LEAVE:
		c->r = hb_leave(h->hb);
		h->hb = NULL;
		break;
	case OP_BFAULT:
		bdev_fault_set(h->bd, (enum bdev_fault)c->arg);
		c->t = hb_clock_ns();
		break;
	case OP_LMFAULT:
		lockmgr_fault_set(h->hb, (unsigned)c->arg);
		c->t = hb_clock_ns();
		break;
	case OP_FLAGS:
		c->t = hb_clock_ns();
		c->r = hb_set_flags(h->hb, (uint32_t)c->arg);
		break;
	case OP_WAIT_LATE:
		c->r = hb_wait_not_late(h->hb, (uint32_t)c->arg, &c->busy_slot);
		c->t = hb_clock_ns();
		break;
	case OP_INFO:
		c->fenced = h->hb ? (int)hb_is_fenced(h->hb) : -1;
		c->taken = h->hb ? hb_is_taken_over(h->hb) : -1;
		if (h->hb) {
			c->count = atomic_load(&h->hb->renewals);
			c->t = atomic_load(&h->hb->renew_max_ns);
		}
		break;
	case OP_READ:
		sec = bdev_alloc(VMFSD_SECTOR);
		c->r = bdev_pread(h->bd, sec, VMFSD_SECTOR, c->off);
		memcpy(c->data, sec, VMFSD_SECTOR);
		bdev_free(sec);
		break;
	case OP_WRITE:
		c->r = bdev_pwrite(h->dbd, c->data, VMFSD_SECTOR, c->off);
		break;
	case OP_WRITER:
		h->writer_off = c->off;
		c->r = -pthread_create(&h->writer, NULL, writer_main, h);
		break;
	case OP_BENCH: {
		/* Uncontended acquire + release pairs on one lock record. */
		int64_t t0 = hb_clock_ns();
		int i;

		for (i = 0; i < c->arg && !c->r; i++) {
			c->r = lock_acquire(h->hb, h->bd, c->off, VMFSD_LOCK_EXCL, NULL);
			if (!c->r)
				c->r = lock_release(h->hb, h->bd, c->off, NULL);
		}
		c->t = (hb_clock_ns() - t0) / (c->arg ? c->arg : 1);
		break;
	}
	case OP_ATS_INC:
		if (c->arg > 1) {
			/* Threads of one process share one open file: the case the
			 * OFD lock alone would not cover. */
			struct inc_arg a[4];
			pthread_t th[4];
			int i, n = c->arg > 4 ? 4 : c->arg;

			while (!atomic_load(&shm->go))
				usleep(100);
			for (i = 0; i < n; i++) {
				a[i] = (struct inc_arg){ h, c->off, (uint64_t)c->slot, 0, 0, i % 2 };
				pthread_create(&th[i], NULL, inc_thread, &a[i]);
			}
			c->count = 0;
			for (i = 0; i < n; i++) {
				pthread_join(th[i], NULL);
				if (a[i].r)
					c->r = a[i].r;
				c->count += a[i].retries;
			}
		} else {
			while (!atomic_load(&shm->go))
				usleep(100);
			c->count = 0;
			c->r = ats_inc(h, c->off, c->slot, &c->count, h->idx % 2);
		}
		break;
	}
}

static void host_main(int idx)
{
	struct host h = { .idx = idx, .c = &shm->h[idx], .cmd_thread = pthread_self() };
	uint8_t *blk;
	int r;

	r = bdev_open(shm->image, 0, &h.bd);
	if (!r)
		r = bdev_open(shm->image, 0, &h.dbd);
	if (r) {
		fprintf(stderr, "host %d: open %s: %s\n", idx, shm->image, strerror(-r));
		_exit(2);
	}
	blk = bdev_alloc(VMFSD_META_BLOCK);
	if (bdev_pread(h.bd, blk, VMFSD_META_BLOCK, 0) || vmfsd_sb_decode(blk, 0, &h.sb))
		_exit(3);
	bdev_free(blk);
	for (;;) {
		uint32_t s = atomic_load(&h.c->seq);

		if (s == atomic_load(&h.c->done)) {
			usleep(200);
			continue;
		}
		host_exec(&h);
		if (verbose)
			fprintf(stderr, "# %.3f host %d (%s) op %d slot %u -> %d\n",
				(double)hb_clock_ns() / 1e9, idx, h.c->name, h.c->op, h.c->slot,
				h.c->r);
		atomic_store(&h.c->done, s);
	}
}

static pid_t host_spawn(int idx)
{
	pid_t pid, parent = getpid();

	memset(&shm->h[idx], 0, sizeof(shm->h[idx]));
	pid = fork();
	if (pid == 0) {
		/* A host never outlives the test (a failed test must not leave
		 * hosts renewing slots of a deleted image). */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(1);
		host_main(idx);
		_exit(0);
	}
	shm->h[idx].pid = pid;
	return pid;
}

static void host_kill(int idx)
{
	if (shm->h[idx].pid > 0) {
		kill(shm->h[idx].pid, SIGKILL);
		waitpid(shm->h[idx].pid, NULL, 0);
		shm->h[idx].pid = 0;
	}
}

/* Posts a command without waiting (for racing hosts). */
static void host_post(int idx, int op, uint64_t off, int arg, uint32_t slot)
{
	struct host_ctl *c = &shm->h[idx];

	c->op = op;
	c->off = off;
	c->arg = arg;
	c->slot = slot;
	atomic_fetch_add(&c->seq, 1);
}

static int host_wait(int idx)
{
	struct host_ctl *c = &shm->h[idx];
	int64_t end = hb_clock_ns() + CMD_TIMEOUT_MS * MS;

	while (atomic_load(&c->done) != atomic_load(&c->seq)) {
		if (hb_clock_ns() > end) {
			fprintf(stderr, "host %d: command %d timed out\n", idx, c->op);
			return -ETIMEDOUT;
		}
		usleep(200);
	}
	return c->r;
}

static int host_call(int idx, int op, uint64_t off, int arg, uint32_t slot)
{
	host_post(idx, op, off, arg, slot);
	return host_wait(idx);
}

static int host_join(int idx, const char *name)
{
	snprintf(shm->h[idx].name, sizeof(shm->h[idx].name), "%s", name);
	return host_call(idx, OP_JOIN, 0, 0, 0);
}

/* join + start; returns the slot or -1. */
static int host_up(int idx, const char *name)
{
	int r;

	host_spawn(idx);
	r = host_join(idx, name);
	if (r) {
		fprintf(stderr, "host %d (%s): join: %s\n", idx, name, strerror(-r));
		return -1;
	}
	r = host_call(idx, OP_START, 0, 0, 0);
	if (r) {
		fprintf(stderr, "host %d: start: %s\n", idx, strerror(-r));
		return -1;
	}
	return (int)shm->h[idx].my_slot;
}

static void hosts_kill_all(void)
{
	int i;

	for (i = 0; i < MAXH; i++)
		host_kill(i);
}

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * MS };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static double ms_of(int64_t ns)
{
	return (double)ns / 1e6;
}

/* ---------------- image ---------------- */

static char workdir[2048];

/* Does DIR take O_DIRECT opens (tmpfs does since Linux 6.6)? */
static bool dir_takes_odirect(const char *dir)
{
	char path[2100];
	int fd;

	snprintf(path, sizeof(path), "%s/.odirect-probe-%d", dir, (int)getpid());
	fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_DIRECT, 0600);
	if (fd < 0)
		return false;
	close(fd);
	unlink(path);
	return true;
}

/* The image lives in memory (/dev/shm) when the kernel allows O_DIRECT
 * there.  The cases check the orderings of docs/cluster.md §3, which rest on
 * assumption 1 (§2): every I/O completes within D, here T / 5 = 200 ms.  A
 * disk shared with parallel builds and tests breaks it: we measured single
 * 512-byte O_DIRECT writes to /var/tmp taking 100-300 ms and heartbeat
 * renewals over 1 s under load, and a host whose renewals take that long
 * must fence, which is the protocol working, not what these cases test.
 * Memory makes the assumption true.  LOCKMGR_TEST_DIR overrides. */
static const char *image_dir(void)
{
	const char *d = getenv("LOCKMGR_TEST_DIR");

	if (d && *d)
		return d;
	if (dir_takes_odirect("/dev/shm"))
		return "/dev/shm";
	return "/var/tmp";      /* a disk filesystem: older tmpfs refuses O_DIRECT */
}

static int make_image(void)
{
	const char *mkfs = getenv("MKFS_VMFSD");
	char cmd[8192];

	if (!mkfs) {
		fprintf(stderr, "MKFS_VMFSD not set\n");
		return -1;
	}
	snprintf(workdir, sizeof(workdir), "%s/vmfsd-lockmgr-XXXXXX", image_dir());
	if (!mkdtemp(workdir)) {
		perror("mkdtemp");
		return -1;
	}
	snprintf(shm->image, sizeof(shm->image), "%s/vol.img", workdir);
	snprintf(cmd, sizeof(cmd),
		 "'%s' -q -f -s 256M -H %d --hb-interval 100 --hb-timeout 1000 -L locktest '%s'",
		 mkfs, MAXH, shm->image);
	if (system(cmd) != 0) {
		fprintf(stderr, "mkfs failed: %s\n", cmd);
		return -1;
	}
	return 0;
}

static void remove_image(void)
{
	if (shm && shm->image[0])
		unlink(shm->image);
	if (workdir[0])
		rmdir(workdir);
}

/* Reads the superblock through a short-lived host (see the top comment). */
static int load_sb(void)
{
	struct bdev *bd;
	uint8_t *blk;
	int r;
	pid_t pid;
	int fds[2];

	if (pipe(fds))
		return -errno;
	pid = fork();
	if (pid == 0) {
		close(fds[0]);
		r = bdev_open(shm->image, BDEV_RDONLY, &bd);
		blk = bdev_alloc(VMFSD_META_BLOCK);
		if (!r)
			r = bdev_pread(bd, blk, VMFSD_META_BLOCK, 0);
		if (!r)
			r = vmfsd_sb_decode(blk, 0, &g_sb);
		if (!r && write(fds[1], &g_sb, sizeof(g_sb)) != sizeof(g_sb))
			r = -EIO;
		_exit(r ? 1 : 0);
	}
	close(fds[1]);
	r = read(fds[0], &g_sb, sizeof(g_sb)) == sizeof(g_sb) ? 0 : -EIO;
	close(fds[0]);
	waitpid(pid, NULL, 0);
	if (!r)
		r = hb_timing_compute(&g_sb, &g_t);
	return r;
}

/* Decodes a heartbeat slot as read by host IDX. */
static int read_slot(int idx, uint32_t slot, struct vmfsd_hb *out)
{
	uint64_t off = vmfsd_hb_slot_off(&g_sb, slot);
	int r = host_call(idx, OP_READ, off, 0, 0);

	if (r)
		return r;
	return vmfsd_hb_decode(shm->h[idx].data, off / VMFSD_META_BLOCK, out);
}

/* ---------------- cases ---------------- */

static void case_timing(void)
{
	struct vmfsd_sb sb = { .hb_interval_ms = 1000, .hb_timeout_ms = 10000 };
	struct hb_timing t;

	CHECK(hb_timing_compute(&sb, &t) == 0, "default timing");
	CHECK(t.io_timeout_ms == 2000 && t.margin_ms == 3000 && t.fence_after_ms == 7000 &&
	      t.check_ms == 100, "default: D %u M %u fence %u check %u", t.io_timeout_ms,
	      t.margin_ms, t.fence_after_ms, t.check_ms);
	sb.hb_interval_ms = 100;
	sb.hb_timeout_ms = 1000;
	CHECK(hb_timing_compute(&sb, &t) == 0, "test timing");
	CHECK(t.io_timeout_ms == 200 && t.margin_ms == 300 && t.fence_after_ms == 700 &&
	      t.check_ms == 25, "test: D %u M %u fence %u check %u", t.io_timeout_ms,
	      t.margin_ms, t.fence_after_ms, t.check_ms);
	/* The inequalities of docs/cluster.md §3 for every timing mkfs
	 * accepts: M - D > check (safety), and a host whose renewals all
	 * complete within D never fences: T - M >= max(I, D) + D. */
	for (sb.hb_timeout_ms = 20; sb.hb_timeout_ms <= 600000; sb.hb_timeout_ms += 37) {
		for (sb.hb_interval_ms = 1; sb.hb_interval_ms <= sb.hb_timeout_ms / 2;
		     sb.hb_interval_ms = sb.hb_interval_ms * 3 + 1) {
			if (hb_timing_compute(&sb, &t))
				continue;
			uint32_t worst = (t.interval_ms > t.io_timeout_ms ? t.interval_ms :
					  t.io_timeout_ms) + t.io_timeout_ms;

			if (t.margin_ms - t.io_timeout_ms <= t.check_ms ||
			    t.fence_after_ms < worst) {
				CHECK(0, "I %u T %u: D %u M %u check %u", sb.hb_interval_ms,
				      sb.hb_timeout_ms, t.io_timeout_ms, t.margin_ms, t.check_ms);
				return;
			}
		}
	}
	sb.hb_interval_ms = 10;
	sb.hb_timeout_ms = 19;
	CHECK(hb_timing_compute(&sb, &t) == -EINVAL, "too short a timeout is refused");
}

/* ATS semantics, fault injection, and N processes x threads incrementing
 * one counter sector with no lost update. */
static void case_ats(void)
{
	const uint64_t off = 512 * 1024;        /* unused, zero part of the first MiB */
	const int nproc = 4, per = 300;
	uint8_t a[VMFSD_SECTOR], b[VMFSD_SECTOR], zero[VMFSD_SECTOR] = { 0 };
	uint64_t total, retries = 0, v;
	int i, r;

	memset(a, 0xa5, sizeof(a));
	memset(b, 0x5a, sizeof(b));

	/* The semantic checks need bdev_ats in a process with its own ring:
	 * run them in a child and report through the exit code. */
	{
		pid_t pid = fork();

		if (pid == 0) {
			struct bdev *bd;
			uint8_t *act = bdev_alloc(VMFSD_SECTOR);
			int bad = 0;

			if (bdev_open(shm->image, 0, &bd))
				_exit(10);
#define T(cond) do { if (!(cond)) { fprintf(stderr, "ats: %s\n", #cond); bad++; } } while (0)
			T(bdev_ats(bd, off, zero, a, act) == 0);
			T(bdev_ats(bd, off, zero, b, act) == -ECANCELED);
			T(!memcmp(act, a, VMFSD_SECTOR));
			T(bdev_ats(bd, off, a, b, NULL) == 0);
			T(bdev_ats(bd, off + 1, b, a, NULL) == -EINVAL);
			T(bdev_ats(bd, bdev_size(bd), b, a, NULL) == -ERANGE);
			T(!strcmp(bdev_ats_ops_get(bd)->name, "ofd"));
			bdev_fault_set(bd, BDEV_FAULT_WRITE_EIO);
			T(bdev_ats(bd, off, b, a, NULL) == -EIO);       /* would match */
			T(bdev_ats(bd, off, a, a, NULL) == -EIO);       /* would not */
			bdev_fault_set(bd, BDEV_FAULT_ALL_EIO);
			T(bdev_ats(bd, off, b, a, NULL) == -EIO);
			bdev_fault_set(bd, BDEV_FAULT_NONE);
			T(bdev_pread(bd, act, VMFSD_SECTOR, off) == 0 && !memcmp(act, b, VMFSD_SECTOR));
			T(bdev_ats(bd, off, b, zero, NULL) == 0);
			{
				/* bdev_ats_many: per-sector results, the miscompared
				 * ones unwritten and reported, faults as for one */
				const size_t S = VMFSD_SECTOR;
				uint64_t o[3] = { off + 2 * S, off, off + 9 * S };
				uint8_t e[3 * VMFSD_SECTOR], nv[3 * VMFSD_SECTOR];
				uint8_t got[3 * VMFSD_SECTOR];
				int res[3];

				memset(e, 0, sizeof(e));
				memcpy(e + S, a, S);            /* off holds zero: miscompare */
				memset(nv, 0x11, sizeof(nv));
				T(bdev_ats_many(bd, 3, o, e, nv, got, res) == 0);
				T(res[0] == 0 && res[1] == -ECANCELED && res[2] == 0);
				T(!memcmp(got + S, zero, S));
				T(bdev_pread(bd, act, S, off) == 0 && !memcmp(act, zero, S));
				T(bdev_pread(bd, act, S, off + 9 * S) == 0 && !memcmp(act, nv, S));
				T(bdev_ats_many(bd, 1, (uint64_t[]){ off + 1 }, e, nv, got, res) ==
				  -EINVAL);
				o[1] = o[0];                    /* twice the same sector */
				T(bdev_ats_many(bd, 2, o, nv, e, got, res) == 0 && res[0] == -EINVAL);
				bdev_fault_set(bd, BDEV_FAULT_WRITE_EIO);
				o[1] = off;
				memcpy(e + S, zero, S);
				T(bdev_ats_many(bd, 3, o, nv, e, got, res) == 0 && res[0] == -EIO &&
				  res[1] == -EIO && res[2] == -EIO);
				bdev_fault_set(bd, BDEV_FAULT_NONE);
				T(bdev_ats_many(bd, 3, o, nv, e, got, res) == 0 && !res[0] &&
				  res[1] == -ECANCELED && !res[2]);     /* back to zero */
				T(bdev_pread(bd, act, S, off + 9 * S) == 0 && !memcmp(act, zero, S));
			}
#undef T
			bdev_close(bd);
			_exit(bad ? 1 : 0);
		}
		waitpid(pid, &r, 0);
		CHECK(WIFEXITED(r) && WEXITSTATUS(r) == 0, "ATS semantics (see above)");
	}

	/* Contention: processes 0..nproc-1, the last one with 3 threads, on
	 * NCTR counters: odd processes and threads change them all at once
	 * (bdev_ats_many), the others one by one. */
	atomic_store(&shm->go, 0);
	for (i = 0; i < nproc; i++) {
		host_spawn(i);
		host_post(i, OP_ATS_INC, off, i == nproc - 1 ? 3 : 1, (uint32_t)per);
	}
	atomic_store(&shm->go, 1);
	total = 0;
	for (i = 0; i < nproc; i++) {
		r = host_wait(i);
		CHECK(r == 0, "host %d increments: %s", i, strerror(-r));
		total += (uint64_t)per * (i == nproc - 1 ? 3 : 1);
		retries += shm->h[i].count;
	}
	for (i = 0; i < NCTR; i++) {
		r = host_call(0, OP_READ, ctr_off(off, i), 0, 0);
		memcpy(&v, shm->h[0].data, 8);
		CHECK(r == 0 && v == total, "counter %d: %" PRIu64 " after %" PRIu64 " increments",
		      i, v, total);
	}
	if (!failures)
		note("ats: %d counters, %" PRIu64 " increments each by %d processes (one with 3 "
		     "threads), one ATS at a time or all at once, %" PRIu64
		     " miscompares retried, no update lost", NCTR, total, nproc, retries);
	hosts_kill_all();
}

static void case_join(void)
{
	const int n = 6;
	bool used[MAXH] = { false };
	struct vmfsd_hb rec;
	uint32_t dslot, cslot;
	uint64_t dgen;
	int i, r;

	/* n hosts race for slots: all different. */
	atomic_store(&shm->go, 0);
	for (i = 0; i < n; i++) {
		host_spawn(i);
		snprintf(shm->h[i].name, sizeof(shm->h[i].name), "race%d", i);
		host_post(i, OP_JOIN, 0, 1, 0);
	}
	atomic_store(&shm->go, 1);
	for (i = 0; i < n; i++) {
		r = host_wait(i);
		REQUIRE(r == 0, "race%d join: %s", i, strerror(-r));
		CHECK(shm->h[i].my_slot < MAXH && !used[shm->h[i].my_slot],
		      "race%d got slot %u twice", i, shm->h[i].my_slot);
		used[shm->h[i].my_slot % MAXH] = true;
		CHECK(shm->h[i].my_gen == 1, "first claim has generation 1, not %" PRIu64,
		      shm->h[i].my_gen);
	}
	for (i = 0; i < n; i++)
		CHECK(host_call(i, OP_LEAVE, 0, 0, 0) == 0, "race%d leave", i);
	for (i = 0; i < n; i++) {
		r = read_slot(0, shm->h[i].my_slot, &rec);
		CHECK(r == 0 && rec.state == VMFSD_HB_FREE && rec.generation == 1,
		      "slot %u free after leave (r %d state %u gen %" PRIu64 ")", shm->h[i].my_slot,
		      r, rec.state, rec.generation);
	}
	hosts_kill_all();
	note("join: %d racing hosts got %d different slots; all freed on leave", n, n);

	/* The same host name twice while the first one beats: EBUSY. */
	r = host_up(0, "dup");
	REQUIRE(r >= 0, "dup up");
	dslot = (uint32_t)r;
	dgen = shm->h[0].my_gen;
	host_spawn(1);
	r = host_join(1, "dup");
	CHECK(r == -EBUSY && shm->h[1].busy_slot == dslot,
	      "second 'dup' must get EBUSY naming slot %u: r %d slot %u", dslot, r,
	      shm->h[1].busy_slot);
	/* Clean leave, then the name gets its own slot back with gen + 1. */
	CHECK(host_call(0, OP_LEAVE, 0, 0, 0) == 0, "dup leave");
	r = host_join(1, "dup");
	CHECK(r == 0 && shm->h[1].my_slot == dslot && shm->h[1].my_gen == dgen + 1,
	      "rejoin: r %d slot %u (want %u) gen %" PRIu64 " (want %" PRIu64 ")", r,
	      shm->h[1].my_slot, dslot, shm->h[1].my_gen, dgen + 1);
	hosts_kill_all();
	note("join: same name while beating -> EBUSY (slot %u); after leave: same slot, "
	     "generation %" PRIu64 " -> %" PRIu64, dslot, dgen, dgen + 1);

	/* A crashed incarnation of a name does not block the name: after the
	 * watch finds no beat, another slot is claimed. */
	r = host_up(2, "crashy");
	REQUIRE(r >= 0, "crashy up");
	cslot = (uint32_t)r;
	host_kill(2);
	host_spawn(3);
	r = host_join(3, "crashy");
	CHECK(r == 0 && shm->h[3].my_slot != cslot,
	      "rejoin after a crash: r %d slot %u (dead one %u)", r, shm->h[3].my_slot, cslot);
	note("join: crashed 'crashy' in slot %u; the new incarnation took slot %u", cslot,
	     shm->h[3].my_slot);
out:
	hosts_kill_all();
}

/* SIGKILL a host: survivors declare it dead only after the timeout; an
 * observer started after the kill waits a full timeout of its own.
 *
 * The bound is docs/cluster.md §3's: a survivor calls A dead no earlier than
 * T after A issued the renewal whose content it judged (A fences T - M after
 * that issue).  When that renewal was issued is recorded by A itself, before
 * the write could land (host_write_gate), keyed by the counter it wrote: the
 * kill time is no substitute, since on a loaded machine A's last renewal can
 * be issued, or finish, well over an interval before the kill. */
static void case_dead(void)
{
	int64_t t_kill, t_c, g = 0;
	uint64_t ctr;
	uint32_t aslot;
	int r;

	r = host_up(0, "esxA");
	REQUIRE(r >= 0, "A up");
	aslot = (uint32_t)r;
	REQUIRE(host_up(1, "esxB") >= 0, "B up");
	/* B watches A beat for 1.5 timeouts: never dead. */
	r = host_call(1, OP_WAIT_DEAD, 0, 1500, aslot);
	CHECK(r == -ETIMEDOUT, "live A judged dead by B (r %d)", r);
	host_kill(0);
	t_kill = hb_clock_ns();
	host_post(1, OP_WAIT_DEAD, 0, 5000, aslot);
	REQUIRE(host_up(2, "esxC") >= 0, "C up");
	t_c = shm->h[2].join_t;
	r = host_call(2, OP_WAIT_DEAD, 0, 5000, aslot);
	CHECK(r == 0, "C: A never judged dead (%d)", r);
	r = host_wait(1);
	REQUIRE(r == 0, "B: A never judged dead (%d)", r);
	/* The content B judged dead is a renewal of A's (the claim, counter 0,
	 * was long overwritten while B watched A beat). */
	ctr = shm->h[1].si.counter;
	REQUIRE(ctr > 0 && atomic_load(&shm->h[0].gate_ctr[ctr % GATE_RING]) == ctr,
		"A's renewal %" PRIu64 " (judged dead by B) has no recorded issue", ctr);
	g = atomic_load(&shm->h[0].gate_t[ctr % GATE_RING]);
	CHECK(shm->h[1].t - g > (int64_t)g_t.timeout_ms * MS,
	      "B judged A dead %.1f ms after A issued the renewal it saw last (<= T = %u ms)",
	      ms_of(shm->h[1].t - g), g_t.timeout_ms);
	/* C started after the kill: it must have watched a full T itself. */
	CHECK(shm->h[2].t - t_c >= (int64_t)g_t.timeout_ms * MS,
	      "fresh observer C judged dead after %.1f ms of watching (< T)",
	      ms_of(shm->h[2].t - t_c));
	note("dead: A's last renewal (counter %" PRIu64 ") issued %.0f ms before SIGKILL; B judged "
	     "A dead %.0f ms after that issue, %.0f ms after the kill; C (started %.0f ms after "
	     "the kill) %.0f ms after it started (T = %u ms)", ctr, ms_of(t_kill - g),
	     ms_of(shm->h[1].t - g), ms_of(shm->h[1].t - t_kill), ms_of(t_c - t_kill),
	     ms_of(shm->h[2].t - t_c), g_t.timeout_ms);
	if (host_call(1, OP_INFO, 0, 0, 0) == 0)
		note("dead: B renewed %" PRIu64 " times, slowest renewal %.1f ms (fence after %u ms)",
		     shm->h[1].count, ms_of(shm->h[1].t), g_t.fence_after_ms);
out:
	hosts_kill_all();
}

/* A host that says it commits late (VMFSD_HB_F_LATE) holds back a host
 * that joins until it clears the flag; the flag is on disk as soon as
 * hb_set_flags returns; a late host that stops beating holds nobody back
 * for more than busy_watch_ms. */
static void case_late(void)
{
	struct vmfsd_hb d;
	int64_t t0;
	uint32_t aslot;
	int r;

	r = host_up(0, "esxA");
	REQUIRE(r >= 0, "A up");
	aslot = (uint32_t)r;
	REQUIRE(host_call(0, OP_FLAGS, 0, VMFSD_HB_F_LATE, 0) == 0, "A sets LATE");
	/* On disk at once, not at the next renewal (100 ms away at most). */
	REQUIRE(read_slot(0, aslot, &d) == 0, "read A's slot");
	CHECK(d.flags == VMFSD_HB_F_LATE, "A's slot right after hb_set_flags: flags %#x",
	      d.flags);
	REQUIRE(host_up(1, "esxB") >= 0, "B up");
	r = host_call(1, OP_WAIT_LATE, 0, 600, 0);
	CHECK(r == -ETIMEDOUT && shm->h[1].busy_slot == aslot,
	      "B's wait with A late and beating: %d (slot %u, A is %u)", r, shm->h[1].busy_slot,
	      aslot);
	/* Renewals keep the flag. */
	REQUIRE(read_slot(1, aslot, &d) == 0, "read A's slot");
	CHECK(d.flags == VMFSD_HB_F_LATE && d.counter > 1,
	      "A's slot after renewals: flags %#x, counter %" PRIu64, d.flags, d.counter);
	host_post(1, OP_WAIT_LATE, 0, 5000, 0);
	sleep_ms(300);
	REQUIRE(host_call(0, OP_FLAGS, 0, 0, 0) == 0, "A clears LATE");
	r = host_wait(1);
	CHECK(r == 0, "B's wait after A cleared LATE: %d", r);
	CHECK(shm->h[1].t >= shm->h[0].t, "B's wait ended %.1f ms before A cleared LATE",
	      ms_of(shm->h[0].t - shm->h[1].t));
	note("late: B's wait ended %.1f ms after A began to clear the flag",
	     ms_of(shm->h[1].t - shm->h[0].t));
	/* A dies late: B waits busy_watch_ms (2I + D) of silence, not T. */
	REQUIRE(host_call(0, OP_FLAGS, 0, VMFSD_HB_F_LATE, 0) == 0, "A sets LATE again");
	host_kill(0);
	t0 = hb_clock_ns();
	REQUIRE(host_up(2, "esxC") >= 0, "C up");
	r = host_call(2, OP_WAIT_LATE, 0, 10 * g_t.timeout_ms, 0);
	CHECK(r == 0, "C's wait with A dead while late: %d", r);
	CHECK(shm->h[2].t - t0 >= (int64_t)g_t.busy_watch_ms * MS,
	      "C stopped waiting for the dead late host after %.1f ms (< %u ms)",
	      ms_of(shm->h[2].t - t0), g_t.busy_watch_ms);
	note("late: C stopped waiting for a killed late host %.0f ms after the kill "
	     "(busy watch %u ms, T %u ms)", ms_of(shm->h[2].t - t0), g_t.busy_watch_ms,
	     g_t.timeout_ms);
out:
	hosts_kill_all();
}

/* Locks of a dead host: EBUSY with its name while it lives, still EBUSY
 * when dead (not replayed), still while REPLAYING, acquirable only after
 * hb_release_dead bumped the generation.  Two survivors race for the
 * claim: exactly one wins. */
static void case_takeover(void)
{
	uint64_t x = vmfsd_inode_off(&g_sb, 5), y = vmfsd_inode_off(&g_sb, 6);
	int64_t t_kill = 0, t_lock = 0;
	struct vmfsd_hb rec;
	uint32_t aslot;
	int r, rb, rc, win, lose;

	r = host_up(0, "esxA");
	REQUIRE(r >= 0, "A up");
	aslot = (uint32_t)r;
	REQUIRE(host_up(1, "esxB") >= 0, "B up");
	REQUIRE(host_up(2, "esxC") >= 0, "C up");
	CHECK(host_call(0, OP_ACQ, x, VMFSD_LOCK_EXCL, 0) == 0, "A EXCL x");
	CHECK(host_call(0, OP_ACQ, y, VMFSD_LOCK_RO, 0) == 0, "A RO y");
	CHECK(host_call(0, OP_ACQ, x, VMFSD_LOCK_EXCL, 0) == 0, "A EXCL x again: no-op");
	r = host_call(1, OP_ACQ, x, VMFSD_LOCK_EXCL, 0);
	CHECK(r == -EBUSY && shm->h[1].li.owner_slot == aslot &&
	      !strcmp(shm->h[1].li.owner_name, "esxA"),
	      "B EXCL x: r %d owner %u '%s'", r, shm->h[1].li.owner_slot, shm->h[1].li.owner_name);
	CHECK(host_call(1, OP_ACQ, x, VMFSD_LOCK_RO, 0) == -EBUSY, "B RO x while A EXCL");
	CHECK(host_call(1, OP_ACQ, y, VMFSD_LOCK_EXCL, 0) == -EBUSY, "B EXCL y while A RO");
	r = host_call(1, OP_DESC, x, 0, 0);
	{
		char want[64];

		snprintf(want, sizeof(want), "EXCL by esxA (slot %u)", aslot);
		CHECK(r == 0 && !strcmp(shm->h[1].text, want), "describe: '%s' want '%s'",
		      shm->h[1].text, want);
	}

	host_kill(0);
	t_kill = hb_clock_ns();
	host_post(1, OP_WAIT_DEAD, 0, 5000, aslot);
	host_post(2, OP_WAIT_DEAD, 0, 5000, aslot);
	CHECK(host_wait(1) == 0 && host_wait(2) == 0, "A judged dead by B and C");
	/* Dead but not replayed: the lock is still A's. */
	r = host_call(1, OP_ACQ, x, VMFSD_LOCK_EXCL, 0);
	CHECK(r == -EBUSY && shm->h[1].li.owner_slot == aslot,
	      "dead, unreplayed A's lock must hold: r %d", r);
	/* B and C race for the claim. */
	host_post(1, OP_CLAIM, 0, 0, aslot);
	host_post(2, OP_CLAIM, 0, 0, aslot);
	rb = host_wait(1);
	rc = host_wait(2);
	CHECK((rb == 0) != (rc == 0) && (rb == -EBUSY || rc == -EBUSY),
	      "exactly one claim wins: B %d C %d", rb, rc);
	win = rb == 0 ? 1 : 2;
	lose = 3 - win;
	r = read_slot(win, aslot, &rec);
	CHECK(r == 0 && rec.state == VMFSD_HB_REPLAYING &&
	      rec.replayer_slot == shm->h[win].my_slot, "slot REPLAYING by the winner");
	/* While replaying: still A's. */
	CHECK(host_call(lose, OP_ACQ, x, VMFSD_LOCK_EXCL, 0) == -EBUSY, "lock held during replay");
	CHECK(host_call(win, OP_ACQ, x, VMFSD_LOCK_EXCL, 0) == -EBUSY,
	      "lock held during replay, even for the replayer");
	CHECK(host_call(win, OP_RELDEAD, 0, 0, aslot + 1) == -EINVAL ||
	      aslot + 1 == shm->h[win].my_slot, "release of an unclaimed slot refused");
	CHECK(host_call(win, OP_REPLAY, 0, 0, aslot) == 0, "replay A's journal");
	CHECK(host_call(win, OP_RELDEAD, 0, 0, aslot) == 0, "release A's slot");
	r = read_slot(win, aslot, &rec);
	CHECK(r == 0 && rec.state == VMFSD_HB_FREE && rec.generation == 2,
	      "A's slot FREE with generation 2 (state %u gen %" PRIu64 ")", rec.state,
	      rec.generation);
	/* Now the lock breaks: the stale holder is dropped. */
	r = host_call(win, OP_ACQ, x, VMFSD_LOCK_EXCL, 0);
	CHECK(r == 0 && shm->h[win].li.nstale == 1 && shm->h[win].li.owner_slot ==
	      shm->h[win].my_slot, "winner takes x after the generation bump: r %d stale %u", r,
	      shm->h[win].li.nstale);
	t_lock = hb_clock_ns();
	CHECK(shm->h[win].li.lock_gen == 2, "lock generation %" PRIu64 " (want 2)",
	      shm->h[win].li.lock_gen);
	r = host_call(lose, OP_ACQ, x, VMFSD_LOCK_EXCL, 0);
	CHECK(r == -EBUSY && shm->h[lose].li.owner_slot == shm->h[win].my_slot,
	      "loser sees the winner as owner (r %d)", r);
	r = host_call(lose, OP_ACQ, y, VMFSD_LOCK_EXCL, 0);
	CHECK(r == 0, "A's RO lock on y is stale too: r %d", r);
	note("takeover: A's locks held while dead and while replaying; host %d won the claim, "
	     "replayed, released (generation 2), then broke them", win);
	note("takeover: SIGKILL to lock taken over %.0f ms (T = %u ms; includes this test's "
	     "extra checks between the steps)", ms_of(t_lock - t_kill), g_t.timeout_ms);
out:
	hosts_kill_all();
}

/* Shared read-only, multi-writer, upgrade/downgrade, describe. */
static void case_shared(void)
{
	uint64_t x = vmfsd_inode_off(&g_sb, 7), z = vmfsd_inode_off(&g_sb, 8);
	uint32_t sa, sb_, sc;
	char want[256];
	int r;

	sa = (uint32_t)host_up(0, "hostA");
	sb_ = (uint32_t)host_up(1, "hostB");
	sc = (uint32_t)host_up(2, "hostC");
	REQUIRE(sa < MAXH && sb_ < MAXH && sc < MAXH, "hosts up");
	CHECK(host_call(0, OP_ACQ, x, VMFSD_LOCK_RO, 0) == 0, "A RO");
	CHECK(host_call(1, OP_ACQ, x, VMFSD_LOCK_RO, 0) == 0, "B RO");
	r = host_call(2, OP_ACQ, x, VMFSD_LOCK_RO, 0);
	CHECK(r == 0 && shm->h[2].li.nholders == 3, "C RO: r %d holders %u", r,
	      shm->h[2].li.nholders);
	CHECK(host_call(2, OP_ACQ, x, VMFSD_LOCK_EXCL, 0) == -EALREADY, "C EXCL while C RO");
	CHECK(host_call(2, OP_REL, x, 0, 0) == 0, "C release");
	r = host_call(2, OP_ACQ, x, VMFSD_LOCK_EXCL, 0);
	CHECK(r == -EBUSY && shm->h[2].li.nholders == 2, "C EXCL while A, B RO: r %d", r);
	CHECK(host_call(2, OP_ACQ, x, VMFSD_LOCK_MW, 0) == -EBUSY, "C MW while RO");
	CHECK(host_call(0, OP_UPG, x, 0, 0) == -EBUSY, "A upgrade while B RO");
	CHECK(shm->h[0].li.owner_slot == sb_, "upgrade conflict names B (%u)",
	      shm->h[0].li.owner_slot);
	r = host_call(2, OP_DESC, x, 0, 0);
	snprintf(want, sizeof(want), "RO by hostA (slot %u), hostB (slot %u)", sa, sb_);
	CHECK(r == 0 && !strcmp(shm->h[2].text, want), "describe '%s' want '%s'", shm->h[2].text,
	      want);
	CHECK(host_call(1, OP_REL, x, 0, 0) == 0, "B release");
	CHECK(host_call(1, OP_REL, x, 0, 0) == -ESTALE, "B release twice");
	CHECK(host_call(0, OP_UPG, x, 0, 0) == 0 && shm->h[0].li.mode == VMFSD_LOCK_EXCL,
	      "A upgrade alone");
	CHECK(host_call(1, OP_ACQ, x, VMFSD_LOCK_RO, 0) == -EBUSY, "B RO while A EXCL");
	CHECK(host_call(0, OP_DOWN, x, VMFSD_LOCK_RO, 0) == 0, "A downgrade");
	CHECK(host_call(1, OP_ACQ, x, VMFSD_LOCK_RO, 0) == 0, "B RO after downgrade");
	CHECK(host_call(0, OP_REL, x, 0, 0) == 0 && host_call(1, OP_REL, x, 0, 0) == 0,
	      "release all");
	r = host_call(2, OP_INSPECT, x, 0, 0);
	CHECK(r == 0 && shm->h[2].li.mode == VMFSD_LOCK_FREE, "free after all released");
	r = host_call(2, OP_DESC, x, 0, 0);
	CHECK(r == 0 && !strcmp(shm->h[2].text, "free"), "describe free: '%s'", shm->h[2].text);
	/* Multi-writer shares with multi-writer only. */
	CHECK(host_call(0, OP_ACQ, z, VMFSD_LOCK_MW, 0) == 0, "A MW");
	CHECK(host_call(1, OP_ACQ, z, VMFSD_LOCK_MW, 0) == 0, "B MW");
	CHECK(host_call(2, OP_ACQ, z, VMFSD_LOCK_RO, 0) == -EBUSY, "C RO while MW");
	CHECK(host_call(2, OP_ACQ, z, VMFSD_LOCK_EXCL, 0) == -EBUSY, "C EXCL while MW");
	/* The first holder leaves: the other becomes owner. */
	CHECK(host_call(0, OP_REL, z, 0, 0) == 0 && shm->h[0].li.owner_slot == sb_,
	      "owner passes to B (%u)", shm->h[0].li.owner_slot);
	CHECK(host_call(1, OP_REL, z, 0, 0) == 0 && shm->h[1].li.mode == VMFSD_LOCK_FREE,
	      "last MW release frees");
	CHECK(host_call(2, OP_ACQ, z, VMFSD_LOCK_EXCL, 0) == 0, "C EXCL on the freed lock");
	CHECK(host_call(2, OP_ACQ, z, 9, 0) == -EINVAL, "bad mode");
	CHECK(host_call(2, OP_ACQ, z + 512, VMFSD_LOCK_EXCL, 0) == -EINVAL, "unaligned lock");
	/* Guessed compare-and-writes (docs/cluster.md §5.3): each host first
	 * tries from the record it last saw.  A stale guess must neither win
	 * nor refuse, and "unchanged" only when nobody held it since our own
	 * release. */
	{
		uint64_t y = vmfsd_inode_off(&g_sb, 9);

		CHECK(host_call(0, OP_ACQ, y, VMFSD_LOCK_EXCL, 0) == 0 &&
		      !shm->h[0].li.unchanged, "A EXCL on a never-used record: not 'unchanged'");
		CHECK(host_call(0, OP_REL, y, 0, 0) == 0, "A release");
		CHECK(host_call(0, OP_ACQ, y, VMFSD_LOCK_EXCL, 0) == 0 && shm->h[0].li.unchanged,
		      "A again after its own release: 'unchanged'");
		CHECK(host_call(0, OP_REL, y, 0, 0) == 0, "A release");
		CHECK(host_call(1, OP_ACQ, y, VMFSD_LOCK_EXCL, 0) == 0, "B EXCL");
		r = host_call(0, OP_ACQ, y, VMFSD_LOCK_EXCL, 0);
		CHECK(r == -EBUSY && shm->h[0].li.owner_slot == sb_,
		      "A's guess (free, its own release) is stale: EBUSY naming B, got %d", r);
		CHECK(host_call(1, OP_REL, y, 0, 0) == 0, "B release");
		r = host_call(0, OP_ACQ, y, VMFSD_LOCK_EXCL, 0);
		CHECK(r == 0 && !shm->h[0].li.unchanged,
		      "A's guess (held by B) is stale: A gets it, not 'unchanged' (B held it): r %d", r);
		CHECK(host_call(0, OP_REL, y, 0, 0) == 0, "A release");
		CHECK(host_call(2, OP_ACQ, y, VMFSD_LOCK_MW, 0) == 0 &&
		      host_call(2, OP_REL, y, 0, 0) == 0, "C MW and release");
		r = host_call(0, OP_ACQ, y, VMFSD_LOCK_EXCL, 0);
		CHECK(r == 0 && !shm->h[0].li.unchanged,
		      "A after C held it (A's guess is A's own release): not 'unchanged': r %d", r);
		CHECK(host_call(0, OP_REL, y, 0, 0) == 0, "A release");
	}
	/* Releases together (lock_release_many, what a commit does): from
	 * good guesses in one batch, the others one by one from the record as
	 * it is: B joined one of A's RO locks after A's guess, C broke
	 * nothing but holds one A never had. */
	{
		const uint64_t first = 20;
		int k;

		for (k = 0; k < 6; k++)
			CHECK(host_call(0, OP_ACQ, vmfsd_inode_off(&g_sb, first + k),
					k == 3 ? VMFSD_LOCK_RO : VMFSD_LOCK_EXCL, 0) == 0, "A %d", k);
		CHECK(host_call(1, OP_ACQ, vmfsd_inode_off(&g_sb, first + 3), VMFSD_LOCK_RO, 0) == 0,
		      "B joins A's RO");
		CHECK(host_call(2, OP_ACQ, vmfsd_inode_off(&g_sb, first + 6), VMFSD_LOCK_EXCL, 0) == 0,
		      "C EXCL on one A does not hold");
		CHECK(host_call(0, OP_REL_MANY, first, 7, 0) == 0, "A releases 7 together");
		for (k = 0; k < 7; k++) {
			r = host_call(2, OP_INSPECT, vmfsd_inode_off(&g_sb, first + k), 0, 0);
			if (k == 3)
				CHECK(r == 0 && shm->h[2].li.mode == VMFSD_LOCK_RO &&
				      shm->h[2].li.nholders == 1 && shm->h[2].li.owner_slot == sb_,
				      "only B holds the shared one: mode %u holders %u",
				      shm->h[2].li.mode, shm->h[2].li.nholders);
			else if (k == 6)
				CHECK(r == 0 && shm->h[2].li.mode == VMFSD_LOCK_EXCL &&
				      shm->h[2].li.owner_slot == sc, "C's is untouched");
			else
				CHECK(r == 0 && shm->h[2].li.mode == VMFSD_LOCK_FREE, "%d free", k);
		}
		CHECK(host_call(1, OP_ACQ, vmfsd_inode_off(&g_sb, first), VMFSD_LOCK_EXCL, 0) == 0,
		      "B takes one A gave back");
	}
	note("shared: RO by three hosts, EXCL/MW refused, upgrade/downgrade, MW sharing, "
	     "stale guesses, releases together");
	r = host_call(0, OP_BENCH, vmfsd_inode_off(&g_sb, 12), 200, 0);
	CHECK(r == 0, "bench: %d", r);
	if (!r)
		note("shared: uncontended EXCL acquire + release: %.3f ms per pair (image file, "
		     "O_DIRECT, 3 hosts beating)", ms_of(shm->h[0].t));
out:
	hosts_kill_all();
}

/* Handover (docs/cluster.md §4.7): the sole EXCL holder moves the record
 * to another live incarnation in one ATS; refused to a wrong generation,
 * to ourselves, by a non-holder, for a shared lock. */
static void case_handover(void)
{
	uint64_t x = vmfsd_inode_off(&g_sb, 9);
	uint32_t sa, sb_, sc;
	int ga, gb, gc, r;

	sa = (uint32_t)host_up(0, "hostA");
	sb_ = (uint32_t)host_up(1, "hostB");
	sc = (uint32_t)host_up(2, "hostC");
	REQUIRE(sa < MAXH && sb_ < MAXH && sc < MAXH, "hosts up");
	ga = (int)shm->h[0].my_gen;
	gb = (int)shm->h[1].my_gen;
	gc = (int)shm->h[2].my_gen;
	CHECK(host_call(0, OP_ACQ, x, VMFSD_LOCK_EXCL, 0) == 0, "A EXCL");
	CHECK(host_call(0, OP_HANDOVER, x, gb + 1, sb_) == -ESTALE, "to B's next generation");
	CHECK(host_call(0, OP_HANDOVER, x, ga, sa) == -EINVAL, "to ourselves");
	CHECK(host_call(0, OP_HANDOVER, x, gb, 200) == -EINVAL, "to a slot past max_hosts");
	CHECK(host_call(1, OP_HANDOVER, x, gc, sc) == -ESTALE, "by B, not a holder");
	r = host_call(0, OP_HANDOVER, x, gb, sb_);
	CHECK(r == 0 && shm->h[0].li.owner_slot == sb_ && shm->h[0].li.nholders == 1 &&
	      shm->h[0].li.owner_gen == (uint64_t)gb, "A -> B: r %d owner %u holders %u", r,
	      shm->h[0].li.owner_slot, shm->h[0].li.nholders);
	CHECK(host_call(0, OP_REL, x, 0, 0) == -ESTALE, "A is no holder after the handover");
	CHECK(host_call(0, OP_ACQ, x, VMFSD_LOCK_RO, 0) == -EBUSY, "A RO after the handover");
	CHECK(host_call(1, OP_ACQ, x, VMFSD_LOCK_EXCL, 0) == 0, "B finds it its own (no write)");
	r = host_call(2, OP_ACQ, x, VMFSD_LOCK_EXCL, 0);
	CHECK(r == -EBUSY && shm->h[2].li.owner_slot == sb_, "C EXCL refused naming B: %d", r);
	CHECK(host_call(1, OP_DOWN, x, VMFSD_LOCK_RO, 0) == 0, "B downgrade");
	CHECK(host_call(1, OP_HANDOVER, x, gc, sc) == -EINVAL, "a shared lock is not handed over");
	CHECK(host_call(1, OP_UPG, x, 0, 0) == 0, "B upgrade");
	CHECK(host_call(1, OP_HANDOVER, x, gc, sc) == 0, "B -> C");
	CHECK(host_call(2, OP_HANDOVER, x, ga, sa) == 0, "C -> A");
	CHECK(host_call(0, OP_REL, x, 0, 0) == 0 && shm->h[0].li.mode == VMFSD_LOCK_FREE,
	      "A releases: free");
	note("handover: A -> B -> C -> A; wrong generation, self, non-holder, shared refused");
out:
	hosts_kill_all();
}

/* A victim host whose heartbeat fails (I/O errors, or a stalled renewal)
 * while its data writes still work: it must fence (stop its writes)
 * strictly before any survivor may judge it dead; after the takeover, with
 * its storage back, it must never write again.  NEGATIVE: the fence is
 * disabled, and the same checks must catch the violation. */
static void fence_case(int mode)
{
	enum { EIO_MODE, STALL_MODE, NEGATIVE };
	uint64_t marker_off = vmfsd_inode_off(&g_sb, 9);
	struct host_ctl *v = &shm->h[0], *s1 = &shm->h[1];
	int64_t t_fault, fence_t, dead_t, last_done, slack;
	uint64_t ok_at_fence;
	struct vmfsd_hb rec;
	uint32_t vslot;
	struct marker m;
	int r;

	r = host_up(0, "victim");
	REQUIRE(r >= 0, "victim up");
	vslot = (uint32_t)r;
	REQUIRE(host_up(1, "surv1") >= 0, "survivor 1 up");
	REQUIRE(host_up(2, "surv2") >= 0, "survivor 2 up");
	CHECK(host_call(0, OP_ACQ, marker_off, VMFSD_LOCK_EXCL, 0) == 0, "victim EXCL");
	REQUIRE(host_call(0, OP_WRITER, marker_off + 1024, 0, 0) == 0, "victim writer");
	sleep_ms(3 * (int)g_t.interval_ms);     /* survivors watch it beat */
	CHECK(atomic_load(&v->writes_ok) > 10, "victim writes");

	if (mode == NEGATIVE)
		host_call(0, OP_LMFAULT, 0, LOCKMGR_FAULT_NO_FENCE, 0);
	/* The fault time is the victim's own, taken just after it set the
	 * fault: no renewal is issued after it (a stalled renewal thread
	 * checks the flag before each one; an ALL_EIO device fails it), while
	 * the parent's clock before the call could precede a last renewal by
	 * however long the victim took to pick the command up. */
	if (mode == STALL_MODE)
		host_call(0, OP_LMFAULT, 0, LOCKMGR_FAULT_RENEW_STALL, 0);
	else
		host_call(0, OP_BFAULT, 0, BDEV_FAULT_ALL_EIO, 0);
	t_fault = v->t;
	host_post(1, OP_WAIT_DEAD, 0, 6000, vslot);
	host_post(2, OP_WAIT_DEAD, 0, 6000, vslot);
	r = host_wait(1);
	CHECK(r == 0, "survivor 1: victim never dead (%d)", r);
	r = host_wait(2);
	CHECK(r == 0, "survivor 2: victim never dead (%d)", r);
	dead_t = s1->t < shm->h[2].t ? s1->t : shm->h[2].t;
	fence_t = atomic_load(&v->fence_t);
	last_done = atomic_load(&v->last_write_done);
	ok_at_fence = atomic_load(&v->writes_ok);
	slack = (int64_t)(g_t.margin_ms - g_t.io_timeout_ms) * MS;

	if (mode == NEGATIVE) {
		/* Without fencing the victim writes on after it was judged dead:
		 * the very check the positive cases pass must fail here. */
		sleep_ms(50);
		last_done = atomic_load(&v->last_write_done);
		CHECK(fence_t == 0, "fence disabled, yet it fenced");
		CHECK(last_done > dead_t,
		      "negative control: a victim that does not fence must be caught writing "
		      "after it was judged dead (last write %.1f ms, dead %.1f ms)",
		      ms_of(last_done - t_fault), ms_of(dead_t - t_fault));
		note("negative control: unfenced victim still wrote %.0f ms after survivors "
		     "judged it dead: the ordering check detects it", ms_of(last_done - dead_t));
		goto out;
	}
	REQUIRE(fence_t != 0, "victim never fenced");
	/* Let the victim's writer see the fence (its first failed write):
	 * writes are sequential, so every write that was in flight at the
	 * fence has been counted by then, and the counters below are final. */
	{
		int64_t end = hb_clock_ns() + CMD_TIMEOUT_MS * MS;

		while (!atomic_load(&v->writes_failed) && hb_clock_ns() < end)
			sleep_ms(1);
	}
	REQUIRE(atomic_load(&v->writes_failed) > 0, "victim writer never saw its fence");
	last_done = atomic_load(&v->last_write_done);
	ok_at_fence = atomic_load(&v->writes_ok);
	CHECK(atomic_load(&v->fence_reason) == HB_FENCE_TIMEOUT, "fence reason %d",
	      atomic_load(&v->fence_reason));
	/* The core ordering: fence, then (at least M - D later) death. */
	CHECK(fence_t + slack <= dead_t,
	      "fence %.1f ms, dead %.1f ms after the fault: need fence + %.0f ms <= dead",
	      ms_of(fence_t - t_fault), ms_of(dead_t - t_fault), ms_of(slack));
	CHECK(last_done < dead_t, "a victim write completed %.1f ms after it was judged dead",
	      ms_of(last_done - dead_t));
	/* Nothing issued after the fence; what was in flight then completed
	 * within the I/O timeout D (assumption 1 of docs/cluster.md). */
	CHECK(atomic_load(&v->last_write_issue) < fence_t, "victim write issued %.1f ms after "
	      "its fence", ms_of(atomic_load(&v->last_write_issue) - fence_t));
	CHECK(last_done <= fence_t + (int64_t)g_t.io_timeout_ms * MS,
	      "victim write completed %.1f ms after its fence", ms_of(last_done - fence_t));
	/* Fence after T - M from the last renewal issue: at most T - M after
	 * the fault (renewal before the fault) plus the check period. */
	CHECK(fence_t - t_fault <= (int64_t)(g_t.fence_after_ms + g_t.check_ms + 50) * MS,
	      "fenced %.1f ms after the fault (deadline %u ms)", ms_of(fence_t - t_fault),
	      g_t.fence_after_ms);

	/* Takeover by survivor 1, then the survivor writes the marker. */
	r = host_call(1, OP_CLAIM, 0, 0, vslot);
	REQUIRE(r == 0, "claim victim: %d", r);
	CHECK(host_call(1, OP_REPLAY, 0, 0, vslot) == 0, "replay victim");
	CHECK(host_call(1, OP_RELDEAD, 0, 0, vslot) == 0, "release victim");
	CHECK(host_call(1, OP_ACQ, marker_off, VMFSD_LOCK_EXCL, 0) == 0 &&
	      shm->h[1].li.nstale == 1, "survivor breaks the victim's lock");
	memset(s1->data, 0, VMFSD_SECTOR);
	m = (struct marker){ 0x4b52414d, 1, 1, hb_clock_ns() };
	memcpy(s1->data, &m, sizeof(m));
	CHECK(host_call(1, OP_WRITE, marker_off + 1024, 0, 0) == 0, "survivor writes");
	/* The victim's storage comes back. */
	if (mode == STALL_MODE)
		host_call(0, OP_LMFAULT, 0, 0, 0);
	else
		host_call(0, OP_BFAULT, 0, BDEV_FAULT_NONE, 0);
	sleep_ms(5 * (int)g_t.interval_ms);
	host_call(0, OP_INFO, 0, 0, 0);
	CHECK(v->fenced == HB_FENCE_TIMEOUT && v->taken == 1,
	      "victim after comeback: fenced %d taken_over %d", v->fenced, v->taken);
	CHECK(host_call(0, OP_ACQ, vmfsd_inode_off(&g_sb, 10), VMFSD_LOCK_EXCL, 0) == -EIO,
	      "fenced victim must not take locks");
	CHECK(host_call(0, OP_CLAIM, 0, 0, shm->h[2].my_slot) == -EIO, "fenced victim claims");
	CHECK(atomic_load(&v->writes_ok) == ok_at_fence, "victim wrote %" PRIu64
	      " times after its fence", atomic_load(&v->writes_ok) - ok_at_fence);
	/* Nothing of the victim landed after the takeover. */
	r = host_call(2, OP_READ, marker_off + 1024, 0, 0);
	memcpy(&m, shm->h[2].data, sizeof(m));
	CHECK(r == 0 && m.host == 1, "marker rewritten after takeover by host %u", m.host);
	r = read_slot(2, vslot, &rec);
	CHECK(r == 0 && rec.state == VMFSD_HB_FREE && rec.generation == 2,
	      "victim slot as the survivor left it (state %u gen %" PRIu64 ")", rec.state,
	      rec.generation);
	CHECK(host_call(0, OP_LEAVE, 0, 0, 0) == -ESTALE, "victim leave: taken over");
	r = read_slot(2, vslot, &rec);
	CHECK(r == 0 && rec.state == VMFSD_HB_FREE && rec.generation == 2, "leave wrote nothing");
	note("fence-%s: fenced %.0f ms after the fault, judged dead %.0f ms after it "
	     "(gap %.0f ms >= %.0f), last victim write done %.0f ms before death; "
	     "after the takeover and the storage coming back it wrote nothing",
	     mode == STALL_MODE ? "stall" : "eio", ms_of(fence_t - t_fault),
	     ms_of(dead_t - t_fault), ms_of(dead_t - fence_t), ms_of(slack),
	     ms_of(dead_t - last_done));
out:
	hosts_kill_all();
}

/* A replayer dies mid-replay: its claim expires with it, and a third host
 * takes over both. */
static void case_replayer(void)
{
	uint64_t x = vmfsd_inode_off(&g_sb, 11);
	uint32_t aslot, bslot;
	struct vmfsd_hb rec;
	int r;

	r = host_up(0, "A");
	REQUIRE(r >= 0, "A up");
	aslot = (uint32_t)r;
	r = host_up(1, "B");
	REQUIRE(r >= 0, "B up");
	bslot = (uint32_t)r;
	REQUIRE(host_up(2, "C") >= 0, "C up");
	CHECK(host_call(0, OP_ACQ, x, VMFSD_LOCK_EXCL, 0) == 0, "A EXCL");
	host_kill(0);
	r = host_call(1, OP_WAIT_DEAD, 0, 5000, aslot);
	REQUIRE(r == 0, "B: A dead: %d", r);
	r = host_call(1, OP_CLAIM, 0, 0, aslot);
	REQUIRE(r == 0, "B claims A: %d", r);
	host_kill(1);                           /* B dies while replaying A */
	/* C: B dead, and A (REPLAYING by dead B) dead too. */
	CHECK(host_call(2, OP_WAIT_DEAD, 0, 5000, bslot) == 0, "C: B dead");
	r = host_call(2, OP_WAIT_DEAD, 0, 5000, aslot);
	CHECK(r == 0 && shm->h[2].si.state == VMFSD_HB_REPLAYING,
	      "C: A, replayed by dead B, is claimable (r %d state %u)", r, shm->h[2].si.state);
	CHECK(host_call(2, OP_ACQ, x, VMFSD_LOCK_EXCL, 0) == -EBUSY, "A's lock still held");
	CHECK(host_call(2, OP_CLAIM, 0, 0, aslot) == 0, "C claims A from dead B");
	CHECK(host_call(2, OP_REPLAY, 0, 0, aslot) == 0, "C replays A");
	CHECK(host_call(2, OP_RELDEAD, 0, 0, aslot) == 0, "C releases A");
	CHECK(host_call(2, OP_CLAIM, 0, 0, bslot) == 0, "C claims B");
	CHECK(host_call(2, OP_REPLAY, 0, 0, bslot) == 0, "C replays B");
	CHECK(host_call(2, OP_RELDEAD, 0, 0, bslot) == 0, "C releases B");
	r = read_slot(2, aslot, &rec);
	CHECK(r == 0 && rec.state == VMFSD_HB_FREE && rec.generation == 2, "A free, gen 2");
	CHECK(host_call(2, OP_ACQ, x, VMFSD_LOCK_EXCL, 0) == 0, "C takes A's lock");
	note("replayer: B died replaying A; C took over A from dead B, then B");
out:
	hosts_kill_all();
}

/* CPU starvation: a host whose threads run at nice 19 while 4 CPU-bound
 * processes per core run at nice 0 (a machine loaded well past its cores,
 * in one test) keeps renewing and does not fence: the renewal thread, like
 * the fence thread, runs in the real-time class (docs/cluster.md §2,
 * assumption 3), so load delays neither.  Before it did, its renewals
 * waited behind the load and the host fenced itself within a second.
 * Needs root (SCHED_FIFO): skipped otherwise. */
static void case_starve(void)
{
	pid_t hogs[64];
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	int i, nhogs, r;
	uint64_t before;

	if (geteuid() != 0) {
		note("starve: needs root for SCHED_FIFO; skipped");
		skipped = 1;
		return;
	}
	nhogs = (int)(ncpu > 0 ? 4 * ncpu : 8);
	if (nhogs > 64)
		nhogs = 64;
	/* Niced once it is up: hb_start must follow hb_join at once (the
	 * claim starts the fence clock), which a nice-19 command thread on a
	 * busy machine does not do. */
	REQUIRE(host_up(0, "starved") >= 0, "host up");
	REQUIRE(host_call(0, OP_NICE, 0, 19, 0) == 0, "nice 19");
	REQUIRE(host_call(0, OP_INFO, 0, 0, 0) == 0, "info");
	before = shm->h[0].count;
	for (i = 0; i < nhogs; i++) {
		hogs[i] = fork();
		if (hogs[i] == 0) {
			volatile uint64_t x = 0;

			prctl(PR_SET_PDEATHSIG, SIGKILL);
			for (;;)
				x++;
		}
	}
	/* Three timeouts: a starved renewal thread misses T - M many times over. */
	sleep_ms(3 * (int)g_t.timeout_ms);
	for (i = 0; i < nhogs; i++)
		if (hogs[i] > 0) {
			kill(hogs[i], SIGKILL);
			waitpid(hogs[i], NULL, 0);
		}
	r = host_call(0, OP_INFO, 0, 0, 0);
	REQUIRE(r == 0, "info after the load");
	CHECK(shm->h[0].fenced == HB_NOT_FENCED,
	      "a host starved of CPU fenced itself (reason %d): its renewals were late",
	      shm->h[0].fenced);
	note("starve: %d CPU hogs at nice 0 for %u ms against a nice-19 host: %" PRIu64
	     " renewals, slowest %.1f ms, fenced %d", nhogs, 3 * g_t.timeout_ms,
	     shm->h[0].count - before, ms_of(shm->h[0].t), shm->h[0].fenced);
out:
	hosts_kill_all();
}

/* lockmgr_status through the standalone program: hosts and locks. */
static void case_status(void)
{
	const char *prog = getenv("LOCKMGR_STATUS");
	uint64_t root = vmfsd_inode_off(&g_sb, VMFSD_ROOT_INO);
	uint64_t bc0 = vmfsd_rc_off(&g_sb, VMFSD_RC_BLOCK, 0);
	char cmd[8192], buf[16384], *p;
	uint32_t sa, sb_;
	size_t n;
	FILE *f;
	int r;

	if (!prog) {
		fprintf(stderr, "LOCKMGR_STATUS not set\n");
		failures++;
		return;
	}
	sa = (uint32_t)host_up(0, "esx-one");
	sb_ = (uint32_t)host_up(1, "esx-two");
	REQUIRE(sa < MAXH && sb_ < MAXH, "hosts up");
	CHECK(host_call(0, OP_ACQ, root, VMFSD_LOCK_EXCL, 0) == 0, "one EXCL root inode");
	CHECK(host_call(0, OP_ACQ, bc0, VMFSD_LOCK_RO, 0) == 0, "one RO cluster");
	CHECK(host_call(1, OP_ACQ, bc0, VMFSD_LOCK_RO, 0) == 0, "two RO cluster");
	CHECK(host_call(0, OP_FLAGS, 0, VMFSD_HB_F_LATE, 0) == 0, "one says it commits late");

	snprintf(cmd, sizeof(cmd), "'%s' '%s'", prog, shm->image);
	f = popen(cmd, "r");
	REQUIRE(f, "popen");
	n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = 0;
	r = pclose(f);
	CHECK(r == 0, "status exit %d", r);
	fprintf(stderr, "%s", buf);
	CHECK(strstr(buf, "esx-one") && strstr(buf, "esx-two"), "host names");
	CHECK(strstr(buf, "alive"), "liveness");
	snprintf(cmd, sizeof(cmd), "inode 1: EXCL by esx-one (slot %u)", sa);
	CHECK(strstr(buf, cmd), "root lock line '%s'", cmd);
	snprintf(cmd, sizeof(cmd), "block-cluster 0: RO by esx-one (slot %u), esx-two (slot %u)",
		 sa, sb_);
	CHECK(strstr(buf, cmd), "cluster lock line '%s'", cmd);
	p = strstr(buf, "(alone: commits late)");
	CHECK(p && !strstr(p + 1, "(alone: commits late)"), "one host shown committing late");

	snprintf(cmd, sizeof(cmd),
		 "'%s' --json '%s' | python3 -c 'import json,sys; d=json.load(sys.stdin); "
		 "print(len(d[\"hosts\"]), len(d[\"locks\"]), "
		 "sorted(h[\"liveness\"] for h in d[\"hosts\"]), "
		 "sorted(h[\"commits_late\"] for h in d[\"hosts\"]))'",
		 prog, shm->image);
	f = popen(cmd, "r");
	REQUIRE(f, "popen json");
	n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = 0;
	r = pclose(f);
	CHECK(r == 0 && !strcmp(buf, "2 2 ['alive', 'alive'] [False, True]\n"),
	      "json summary '%s' (exit %d)",
	      buf, r);

	/* One host dies: after a watch longer than T it shows as dead, its
	 * lock as still held (not stale: its slot was not replayed). */
	host_kill(1);
	snprintf(cmd, sizeof(cmd), "'%s' --watch %u --json '%s'", prog,
		 g_t.timeout_ms + 3 * g_t.interval_ms, shm->image);
	f = popen(cmd, "r");
	REQUIRE(f, "popen dead");
	n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = 0;
	pclose(f);
	CHECK(strstr(buf, "\"liveness\": \"dead\""), "dead host shown dead");
	CHECK(!strstr(buf, "\"valid\": false"), "unreplayed dead host's lock is not stale");
	note("status: text and JSON list both hosts and both locks; a killed host shows dead");
out:
	hosts_kill_all();
}

int main(int argc, char **argv)
{
	const char *name = argc > 1 ? argv[1] : "";

	setvbuf(stderr, NULL, _IOLBF, 0);
	verbose = getenv("LOCKMGR_TEST_VERBOSE") != NULL;
	if (!strcmp(name, "timing")) {
		case_timing();
		return failures ? 1 : 0;
	}
	shm = mmap(NULL, sizeof(*shm), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (shm == MAP_FAILED)
		return 1;
	memset(shm, 0, sizeof(*shm));
	if (make_image() || load_sb()) {
		remove_image();
		return 1;
	}
	if (!strcmp(name, "ats"))
		case_ats();
	else if (!strcmp(name, "join"))
		case_join();
	else if (!strcmp(name, "dead"))
		case_dead();
	else if (!strcmp(name, "takeover"))
		case_takeover();
	else if (!strcmp(name, "shared"))
		case_shared();
	else if (!strcmp(name, "handover"))
		case_handover();
	else if (!strcmp(name, "fence-eio"))
		fence_case(0);
	else if (!strcmp(name, "fence-stall"))
		fence_case(1);
	else if (!strcmp(name, "fence-negative"))
		fence_case(2);
	else if (!strcmp(name, "replayer"))
		case_replayer();
	else if (!strcmp(name, "status"))
		case_status();
	else if (!strcmp(name, "starve"))
		case_starve();
	else if (!strcmp(name, "late"))
		case_late();
	else {
		fprintf(stderr, "unknown case '%s'\n", name);
		failures++;
	}
	hosts_kill_all();
	remove_image();
	if (failures)
		fprintf(stderr, "%s: %d failure(s)\n", name, failures);
	else
		fprintf(stderr, "%s: %s\n", name, skipped ? "skipped" : "ok");
	return failures ? 1 : skipped ? 77 : 0;
}
