// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * O_DIRECT I/O on the LUN through io_uring.  Each thread that does I/O gets
 * its own small ring (created on first use, torn down at thread exit), so
 * FUSE worker threads never contend on a submission lock; a request is one
 * io_uring_enter that submits and waits.  Unaligned user buffers are copied
 * through an aligned bounce buffer (libfuse hands us unaligned write data).
 */
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <malloc.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdio.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bdev.h"
#include "iscsi.h"

struct crash_write {
	uint64_t off;
	uint32_t len;
	uint8_t *old;           /* medium content before this write */
	uint8_t *data;
};

struct crash_sim {
	pthread_mutex_t lock;
	int fd;                 /* buffered fd for bookkeeping */
	struct crash_write *w;
	size_t n, cap;
	uint64_t writes;        /* issued since enable */
	uint64_t cut_at;        /* UINT64_MAX: no cut scheduled */
	int cut;
};

/* Shared ring for asynchronous I/O (bdev_aio_submit). */
#define AIO_DEPTH 256

struct aio_engine {
	struct io_uring ring;
	pthread_mutex_t lock;           /* queue, counters, flags */
	pthread_cond_t room;            /* inflight reached 0 */
	pthread_t thr;
	int efd;                        /* wakes the issuer */
	uint64_t efd_val;
	struct bdev_aio *qhead, **qtail;
	unsigned inflight;              /* queued or on the ring */
	bool sleeping;
	int stop;
	int init;                       /* 1 starting, 2 running, < 0 failed */
	/* bdev_aio_watch: a descriptor the issuer polls besides the ring, and
	 * what it calls when the descriptor is readable.  Set under LOCK by
	 * any thread (WGEN moves on); the issuer arms/cancels the poll (it
	 * owns the ring) and sets WSEEN to WGEN when it has seen the change. */
	struct aio_engine *next;        /* the device's other issuers */
	struct bdev *bd;
	int wfd;                        /* -1: none */
	bool (*wready)(void *);
	void *warg;
	uint64_t spin_ns;
	unsigned wgen, wseen;
	bool watched;                   /* wfd >= 0: commands are taken */
	bool sqe128;                    /* the ring has 128-byte SQEs */
	bool tflag;                     /* it flags pending task work (IORING_SQ_TASKRUN) */
	struct bdev_aio_cmd *chead, **ctail;    /* bdev_aio_cmd_submit */
};

struct bdev {
	int fd;
	int is_blk;
	uint64_t size;
	char *path;
	_Atomic int fault;
	_Atomic unsigned batch_gap_us;  /* bdev_fault_batch_gap */
	struct crash_sim *cs;
	pthread_mutex_t aio_init_lock;
	struct aio_engine *aio;
	unsigned aio_issuers;   /* bdev_aio_set_issuers; 0: the default */
	int (*write_gate)(void *);
	void *write_gate_arg;
	struct bdev_iscsi *isc; /* an iscsi:// LUN (fd is -1) */
};

/* A thread has one request in flight, or a batch of up to RING_DEPTH
 * (bdev_rw_many). */
#define RING_DEPTH 64

struct tring {
	struct io_uring ring;
	int ok;
};

static pthread_key_t ring_key;
static pthread_once_t ring_once = PTHREAD_ONCE_INIT;

static void ring_destroy(void *p)
{
	struct tring *t = p;

	if (t->ok)
		io_uring_queue_exit(&t->ring);
	free(t);
}

static void ring_key_init(void)
{
	pthread_key_create(&ring_key, ring_destroy);
}

/* A ring whose submission failed still holds the requests it could not
 * submit: never use it again (this thread goes on with pread/pwrite). */
static void thread_ring_drop(void)
{
	struct tring *t = pthread_getspecific(ring_key);

	if (t && t->ok) {
		io_uring_queue_exit(&t->ring);
		t->ok = 0;
	}
}

static struct io_uring *thread_ring(void)
{
	struct tring *t;

	pthread_once(&ring_once, ring_key_init);
	t = pthread_getspecific(ring_key);
	if (t)
		return t->ok ? &t->ring : NULL;
	t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	t->ok = io_uring_queue_init(RING_DEPTH, &t->ring, 0) == 0;
	pthread_setspecific(ring_key, t);
	return t->ok ? &t->ring : NULL;
}

/* I/O buffers are kept for reuse.  The data path allocates one per
 * request (fs/file.c: a 1 MiB read or write is a 1 MiB buffer), and
 * glibc serves such sizes with fresh pages (mmap, or a thread arena's heap
 * that it shrinks with MADV_DONTNEED on free): every 4 KiB page then
 * faults on first touch, 256 faults per MiB.  Measured over iSCSI on this
 * kind of (virtualised) machine, those faults and the munmap/madvise TLB
 * shootdowns were half of vmfsd's CPU time on 1 MiB reads.  Small ones
 * churn the same way: 32 4 KiB reads in flight allocate and free a few
 * hundred KiB of a thread arena over and over, and its trim (madvise, a
 * TLB shootdown on every CPU) and the page faults after it were 10-15 %
 * of vmfsd's CPU on 4 KiB random reads at QD32 (perf, cpu-clock); cached
 * from 4 KiB up, vmfsd's CPU per read went from 18-21 to 15-17 us.  Sizes
 * up to 4 MiB are rounded up to a power of two, 4 KiB at least (the
 * smaller ones are the commit's bounce buffers for inode blocks written
 * from their second sector, 3.5 KiB each: left to glibc, they trimmed the
 * commit thread's arena, a madvise per block, ~20 per commit of a run of
 * unlinks), and freed buffers of those classes go on a per-class free
 * list, up to BUF_CACHE_BYTES in all (at QD32 the data path holds 32 MiB
 * at 1 MiB per request).  The bound keeps
 * the daemon's memory bounded too: left to glibc, buffers allocated by a
 * FUSE worker and freed by a completion thread piled up in per-thread
 * arenas (vmfsd's RSS reached 430-560 MiB after 1 MiB writes at QD32,
 * BENCHMARKS.md). */
#define BUF_MIN_SHIFT 12u
#define BUF_MAX_SHIFT 22u
#define BUF_CACHE_BYTES (64u << 20)

struct buf_free {
	struct buf_free *next;
};

static struct {
	pthread_mutex_t lock;
	struct buf_free *head[BUF_MAX_SHIFT - BUF_MIN_SHIFT + 1];
	size_t n[BUF_MAX_SHIFT - BUF_MIN_SHIFT + 1];    /* on each list */
	size_t bytes;
} buf_cache = { .lock = PTHREAD_MUTEX_INITIALIZER };

/* The cache class of a LEN-byte request, or -1 (not cached). */
static int buf_class(size_t len)
{
	unsigned s = BUF_MIN_SHIFT;

	if (len > (1u << BUF_MAX_SHIFT))
		return -1;
	while (((size_t)1 << s) < len)
		s++;
	return (int)(s - BUF_MIN_SHIFT);
}

void *bdev_alloc(size_t len)
{
	int c = buf_class(len);
	void *p = NULL;

	if (c >= 0) {
		pthread_mutex_lock(&buf_cache.lock);
		p = buf_cache.head[c];
		if (p) {
			buf_cache.head[c] = buf_cache.head[c]->next;
			buf_cache.n[c]--;
			buf_cache.bytes -= (size_t)1 << (c + BUF_MIN_SHIFT);
		}
		pthread_mutex_unlock(&buf_cache.lock);
		if (p)
			return p;
		len = (size_t)1 << (c + BUF_MIN_SHIFT);
	}
	if (posix_memalign(&p, BDEV_ALIGN, len ? len : BDEV_ALIGN))
		return NULL;
	return p;
}

size_t bdev_buf_cached(size_t len)
{
	int c = buf_class(len);
	size_t n = 0;

	if (c >= 0) {
		pthread_mutex_lock(&buf_cache.lock);
		n = buf_cache.n[c];
		pthread_mutex_unlock(&buf_cache.lock);
	}
	return n;
}

void bdev_free(void *p)
{
	size_t have;
	int c;

	if (!p)
		return;
	/* The largest class the block holds whole (the allocator may give a
	 * little more than asked, never twice a class-sized request). */
	have = malloc_usable_size(p);
	c = have >= (1u << BUF_MIN_SHIFT) ? 63 - __builtin_clzll(have) - (int)BUF_MIN_SHIFT : -1;
	if (c >= 0 && c <= (int)(BUF_MAX_SHIFT - BUF_MIN_SHIFT) && !((uintptr_t)p % BDEV_ALIGN)) {
		size_t sz = (size_t)1 << (c + BUF_MIN_SHIFT);
		struct buf_free *evicted = NULL;
		int k = BUF_MAX_SHIFT - BUF_MIN_SHIFT;

		pthread_mutex_lock(&buf_cache.lock);
		/* Full: what the workload frees now wins over what an earlier
		 * one left, largest class first (1 MiB writes must not leave
		 * the commit's 4 KiB bounce buffers to glibc and its trims). */
		while (buf_cache.bytes + sz > BUF_CACHE_BYTES && k >= 0 &&
		       (buf_cache.n[c] + 1) * sz <= BUF_CACHE_BYTES) {
			struct buf_free *b = buf_cache.head[k];

			if (k == c || !b) {
				k--;
				continue;
			}
			buf_cache.head[k] = b->next;
			buf_cache.n[k]--;
			buf_cache.bytes -= (size_t)1 << (k + BUF_MIN_SHIFT);
			b->next = evicted;
			evicted = b;
		}
		if (buf_cache.bytes + sz <= BUF_CACHE_BYTES) {
			((struct buf_free *)p)->next = buf_cache.head[c];
			buf_cache.head[c] = p;
			buf_cache.n[c]++;
			buf_cache.bytes += sz;
			p = NULL;
		}
		pthread_mutex_unlock(&buf_cache.lock);
		while (evicted) {
			struct buf_free *b = evicted;

			evicted = b->next;
			free(b);
		}
	}
	free(p);
}

int bdev_is_url(const char *path)
{
	return path && !strncmp(path, "iscsi://", 8);
}

static int iscsi_gate(void *arg, int write);

const char *bdev_open_hint(const char *path, int err)
{
	if (!bdev_is_url(path))
		return NULL;
	switch (err) {
	case -EINVAL:
		return "not a valid iSCSI URL (iscsi://[USER[%PASSWORD]@]HOST[:PORT]/TARGET-IQN/LUN)";
	case -EHOSTUNREACH:
		return "cannot log in to the iSCSI target (address, target name, LUN, "
		       "credentials, network?)";
	case -EMEDIUMTYPE:
		return "the target has no working atomic SCSI COMPARE AND WRITE on 512-byte "
		       "blocks: refused for a volume shared by several hosts";
	default:
		return NULL;
	}
}

/* PATH without the password of its user part (it ends up in messages). */
static char *url_for_display(const char *url)
{
	const char *at = strchr(url + 8, '@'), *slash = strchr(url + 8, '/');
	const char *pct = strchr(url + 8, '%');
	char *s;

	if (!at || !pct || pct > at || (slash && slash < at))
		return strdup(url);
	if (asprintf(&s, "%.*s%%***%s", (int)(pct - url), url, at) < 0)
		return NULL;
	return s;
}

static int open_iscsi(const char *url, unsigned flags, struct bdev **out)
{
	struct bdev *bd = calloc(1, sizeof(*bd));
	int r;

	if (!bd)
		return -ENOMEM;
	bd->fd = -1;
	pthread_mutex_init(&bd->aio_init_lock, NULL);
	bd->path = url_for_display(url);
	if (!bd->path) {
		free(bd);
		return -ENOMEM;
	}
	r = bdev_iscsi_open(url, !!(flags & BDEV_RDONLY), iscsi_gate, bd, &bd->isc, &bd->size);
	if (r) {
		free(bd->path);
		free(bd);
		return r;
	}
	*out = bd;
	return 0;
}

int bdev_open(const char *path, unsigned flags, struct bdev **out)
{
	struct bdev *bd;
	struct stat st;
	int oflags = O_DIRECT | O_CLOEXEC | ((flags & BDEV_RDONLY) ? O_RDONLY : O_RDWR);
	int fd, r;

	if (bdev_is_url(path))
		return open_iscsi(path, flags, out);
	if (stat(path, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))
		return -ENOTBLK;
	if (S_ISBLK(st.st_mode) && (flags & BDEV_EXCL))
		oflags |= O_EXCL;
	fd = open(path, oflags);
	if (fd < 0) {
		/* tmpfs and some FUSE filesystems refuse O_DIRECT with EINVAL. */
		if (errno == EINVAL)
			return -EOPNOTSUPP;
		return -errno;
	}
	bd = calloc(1, sizeof(*bd));
	if (!bd) {
		close(fd);
		return -ENOMEM;
	}
	bd->fd = fd;
	bd->is_blk = S_ISBLK(st.st_mode);
	pthread_mutex_init(&bd->aio_init_lock, NULL);
	if (bd->is_blk) {
		if (ioctl(fd, BLKGETSIZE64, &bd->size) < 0) {
			r = -errno;
			goto fail;
		}
	} else {
		bd->size = (uint64_t)st.st_size;
	}
	bd->path = strdup(path);
	if (!bd->path) {
		r = -ENOMEM;
		goto fail;
	}
	*out = bd;
	return 0;
fail:
	close(fd);
	free(bd);
	return r;
}

static void crash_free(struct crash_sim *cs)
{
	size_t i;

	if (!cs)
		return;
	for (i = 0; i < cs->n; i++) {
		free(cs->w[i].old);
		free(cs->w[i].data);
	}
	free(cs->w);
	cs->w = NULL;
	cs->n = cs->cap = 0;
}

static void aio_stop(struct bdev *bd);

void bdev_close(struct bdev *bd)
{
	if (!bd)
		return;
	aio_stop(bd);
	bdev_iscsi_close(bd->isc);
	if (bd->cs) {
		crash_free(bd->cs);
		close(bd->cs->fd);
		pthread_mutex_destroy(&bd->cs->lock);
		free(bd->cs);
	}
	if (bd->fd >= 0)
		close(bd->fd);
	free(bd->path);
	free(bd);
}

int bdev_is_iscsi(const struct bdev *bd)
{
	return bd->isc != NULL;
}

void bdev_set_io_timeout(struct bdev *bd, unsigned ms)
{
	if (bd->isc)
		bdev_iscsi_set_timeout(bd->isc, ms);
}

uint64_t bdev_size(const struct bdev *bd)
{
	return bd->size;
}

int bdev_fd(const struct bdev *bd)
{
	return bd->fd;
}

int bdev_is_blockdev(const struct bdev *bd)
{
	return bd->is_blk;
}

const char *bdev_path(const struct bdev *bd)
{
	return bd->path;
}

void bdev_fault_set(struct bdev *bd, enum bdev_fault f)
{
	atomic_store(&bd->fault, (int)f);
}

void bdev_fault_batch_gap(struct bdev *bd, unsigned us)
{
	atomic_store(&bd->batch_gap_us, us);
}

void bdev_fault_thaw(struct bdev *bd)
{
	int frozen = BDEV_FAULT_FROZEN;

	/* Only undo the freeze: a fence set meanwhile must stay. */
	atomic_compare_exchange_strong(&bd->fault, &frozen, BDEV_FAULT_NONE);
}

/* One read or write through this thread's ring, retried until complete. */
static int do_io(struct bdev *bd, int write, void *buf, size_t len, uint64_t off)
{
	struct io_uring *ring;
	size_t done = 0;

	if (bd->isc)
		return bdev_iscsi_rw(bd->isc, write, buf, len, off);
	ring = thread_ring();

	while (done < len) {
		struct io_uring_sqe *sqe;
		struct io_uring_cqe *cqe;
		ssize_t res;
		int r;

		if (!ring) {
			res = write ? pwrite(bd->fd, (char *)buf + done, len - done, (off_t)(off + done))
				    : pread(bd->fd, (char *)buf + done, len - done, (off_t)(off + done));
			if (res < 0 && errno == EINTR)
				continue;
			if (res < 0)
				return -errno;
		} else {
			sqe = io_uring_get_sqe(ring);
			if (!sqe)
				return -EBUSY;
			if (write)
				io_uring_prep_write(sqe, bd->fd, (char *)buf + done,
						    (unsigned)(len - done), off + done);
			else
				io_uring_prep_read(sqe, bd->fd, (char *)buf + done,
						   (unsigned)(len - done), off + done);
			r = io_uring_submit_and_wait(ring, 1);
			if (r < 0 && r != -EINTR)
				return r;
			/* The request is on the ring now: a signal must not make
			 * us return before its completion, which would then be
			 * taken for the completion of this thread's next request
			 * (that one "done" before its data arrived, and the kernel
			 * writing into a buffer the caller freed). */
			do
				r = io_uring_wait_cqe(ring, &cqe);
			while (r == -EINTR);
			if (r < 0)
				return r;
			res = cqe->res;
			io_uring_cqe_seen(ring, cqe);
			if (res == -EINTR || res == -EAGAIN)
				continue;
			if (res < 0)
				return (int)res;
		}
		if (res == 0) {
			if (write)
				return -EIO;
			/* Read past the end of a file-backed LUN: zeros. */
			memset((char *)buf + done, 0, len - done);
			return 0;
		}
		done += (size_t)res;
	}
	return 0;
}

static int check_range(struct bdev *bd, size_t len, uint64_t off)
{
	if ((off | len) & 511)
		return -EINVAL;
	if (off > bd->size || len > bd->size - off)
		return -ERANGE;
	return 0;
}

/* Fault gate of every I/O: waits out a frozen device, then says whether
 * this I/O may go on (0) or fails (-EIO).  Re-checked after the wait, so
 * a host fenced while its device hung never writes when it comes back. */
static int fault_gate(struct bdev *bd, int write)
{
	int f;

	while ((f = atomic_load(&bd->fault)) == BDEV_FAULT_FROZEN)
		usleep(1000);
	if (f == BDEV_FAULT_ALL_EIO || (write && f != BDEV_FAULT_NONE))
		return -EIO;
	if (write && bd->write_gate && bd->write_gate(bd->write_gate_arg))
		return -EIO;
	return 0;
}

/* The gate again, in the iSCSI service thread right before a command is
 * sent.  It must not wait there (one thread serves every request of the
 * LUN): a frozen device was already waited out by the caller. */
static int iscsi_gate(void *arg, int write)
{
	struct bdev *bd = arg;
	int f = atomic_load(&bd->fault);

	if (f == BDEV_FAULT_ALL_EIO || (write && f == BDEV_FAULT_WRITE_EIO))
		return -EIO;
	if (write && bd->write_gate && bd->write_gate(bd->write_gate_arg))
		return -EIO;
	return 0;
}

int bdev_scsi_caw(struct bdev *bd, uint64_t off, const void *expect, const void *newval,
		  void *actual)
{
	if (!bd->isc)
		return -EOPNOTSUPP;
	if (fault_gate(bd, 1))
		return -EIO;
	return bdev_iscsi_caw(bd->isc, off, expect, newval, actual);
}

void bdev_set_write_gate(struct bdev *bd, int (*gate)(void *), void *arg)
{
	bd->write_gate_arg = arg;
	bd->write_gate = gate;
}

int bdev_pread(struct bdev *bd, void *buf, size_t len, uint64_t off)
{
	int r = check_range(bd, len, off);
	void *bounce;

	if (r)
		return r;
	if (fault_gate(bd, 0) || (bd->cs && bd->cs->cut))
		return -EIO;
	if (!((uintptr_t)buf & (BDEV_ALIGN - 1)))
		return do_io(bd, 0, buf, len, off);
	bounce = bdev_alloc(len);
	if (!bounce)
		return -ENOMEM;
	r = do_io(bd, 0, bounce, len, off);
	if (!r)
		memcpy(buf, bounce, len);
	bdev_free(bounce);
	return r;
}

static int crash_record(struct bdev *bd, const void *buf, size_t len, uint64_t off);

int bdev_pwrite(struct bdev *bd, const void *buf, size_t len, uint64_t off)
{
	int r = check_range(bd, len, off);
	void *bounce;

	if (r)
		return r;
	if (fault_gate(bd, 1))
		return -EIO;
	if (bd->cs) {
		r = crash_record(bd, buf, len, off);
		if (r)
			return r;
	}
	if (!((uintptr_t)buf & (BDEV_ALIGN - 1)))
		return do_io(bd, 1, (void *)buf, len, off);
	bounce = bdev_alloc(len);
	if (!bounce)
		return -ENOMEM;
	memcpy(bounce, buf, len);
	r = do_io(bd, 1, bounce, len, off);
	bdev_free(bounce);
	return r;
}

/* Up to RING_DEPTH I/Os of a batch, all aligned, on this thread's ring.
 * A short transfer is finished synchronously (as do_io would). */
static int rw_ring(struct bdev *bd, struct io_uring *ring, int write, const struct bdev_vec *v,
		   unsigned n)
{
	int res[RING_DEPTH];
	unsigned i, got;
	int r = 0, s;

	for (i = 0; i < n; i++) {
		struct io_uring_sqe *sqe = io_uring_get_sqe(ring);

		if (!sqe) {     /* the ring is ours and empty: cannot happen */
			thread_ring_drop();
			return -EBUSY;
		}
		if (write)
			io_uring_prep_write(sqe, bd->fd, v[i].buf, (unsigned)v[i].len, v[i].off);
		else
			io_uring_prep_read(sqe, bd->fd, v[i].buf, (unsigned)v[i].len, v[i].off);
		io_uring_sqe_set_data64(sqe, i);
	}
	do
		s = io_uring_submit(ring);
	while (s == -EINTR);
	if (s < 0) {
		thread_ring_drop();
		return s;
	}
	/* Every completion is reaped before this thread's ring is used for
	 * anything else (do_io's comment: a completion left behind is taken
	 * for the next request's), and before returning: the buffers are the
	 * caller's.  The wait fails only when interrupted. */
	for (i = 0; i < n; i++)
		res[i] = i < (unsigned)s ? 1 : -EAGAIN;      /* not submitted: again */
	for (got = 0; got < (unsigned)s; got++) {
		struct io_uring_cqe *cqe;

		while (io_uring_wait_cqe(ring, &cqe))
			;
		res[io_uring_cqe_get_data64(cqe)] = cqe->res;
		io_uring_cqe_seen(ring, cqe);
	}
	/* Short transfers, interrupted or unsubmitted ones: the rest, one at a
	 * time (a write that moved nothing fails there with -EIO). */
	for (i = 0; i < n; i++) {
		const struct bdev_vec *e = &v[i];
		int w = res[i];

		if (w >= 0 && (size_t)w < e->len)
			w = do_io(bd, write, (char *)e->buf + w, e->len - (size_t)w,
				  e->off + (uint64_t)w);
		else if (w == -EINTR || w == -EAGAIN)
			w = do_io(bd, write, e->buf, e->len, e->off);
		if (w < 0 && !r)
			r = w;
	}
	return r;
}

/* A chunk of a batch, unaligned buffers bounced through aligned ones. */
static int rw_chunk(struct bdev *bd, struct io_uring *ring, int write, const struct bdev_vec *v,
		    unsigned n)
{
	struct bdev_vec a[RING_DEPTH];
	unsigned i;
	int r = 0;

	for (i = 0; i < n; i++) {
		a[i] = v[i];
		if (!((uintptr_t)v[i].buf & (BDEV_ALIGN - 1)))
			continue;
		a[i].buf = bdev_alloc(v[i].len);
		if (!a[i].buf) {
			r = -ENOMEM;
			break;
		}
		if (write)
			memcpy(a[i].buf, v[i].buf, v[i].len);
	}
	if (!r)
		r = rw_ring(bd, ring, write, a, n);
	while (i-- > 0) {
		if (a[i].buf == v[i].buf)
			continue;
		if (!r && !write)
			memcpy(v[i].buf, a[i].buf, v[i].len);
		bdev_free(a[i].buf);
	}
	return r;
}

int bdev_rw_many(struct bdev *bd, int write, const struct bdev_vec *v, unsigned n)
{
	unsigned i, k, gap = write ? atomic_load(&bd->batch_gap_us) : 0;
	struct io_uring *ring = bd->isc || bd->cs || gap ? NULL : thread_ring();
	int r = 0, w;

	for (i = 0; i < n; i++) {
		r = check_range(bd, v[i].len, v[i].off);
		if (r)
			return r;
	}
	if (!ring) {
		for (i = 0; i < n; i++) {
			w = write ? bdev_pwrite(bd, v[i].buf, v[i].len, v[i].off)
				  : bdev_pread(bd, v[i].buf, v[i].len, v[i].off);
			if (w && !r)
				r = w;
			if (gap && i + 1 < n)
				usleep(gap);
		}
		return r;
	}
	if (fault_gate(bd, write))
		return -EIO;
	for (i = 0; i < n; i += k) {
		k = n - i < RING_DEPTH ? n - i : RING_DEPTH;
		w = rw_chunk(bd, ring, write, v + i, k);
		if (w && !r)
			r = w;
	}
	return r;
}

int bdev_flush(struct bdev *bd)
{
	if (fault_gate(bd, 1))
		return -EIO;
	if (bd->cs) {
		int dead;

		pthread_mutex_lock(&bd->cs->lock);
		dead = bd->cs->cut;
		if (!dead)
			crash_free(bd->cs);     /* everything written is durable now */
		pthread_mutex_unlock(&bd->cs->lock);
		if (dead)
			return -EIO;
	}
	if (bd->isc)
		return bdev_iscsi_flush(bd->isc);       /* SYNCHRONIZE CACHE */
	if (fdatasync(bd->fd) < 0)
		return -errno;
	return 0;
}

int bdev_zero(struct bdev *bd, uint64_t off, uint64_t len)
{
	int r = check_range(bd, len, off);
	uint64_t done;
	void *z;

	if (r)
		return r;
	if (fault_gate(bd, 1))
		return -EIO;
	if (bd->cs || bd->isc)
		goto slow;      /* recorded writes / plain WRITEs of zeros */
	if (!bd->is_blk && fallocate(bd->fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE,
				     (off_t)off, (off_t)len) == 0)
		return 0;
	if (bd->is_blk) {
		uint64_t range[2] = { off, len };

		if (ioctl(bd->fd, BLKZEROOUT, range) == 0)
			return 0;
	}
slow:
	z = bdev_alloc(1u << 20);
	if (!z)
		return -ENOMEM;
	memset(z, 0, 1u << 20);
	for (done = 0; done < len && !r; done += 1u << 20) {
		size_t n = len - done < (1u << 20) ? (size_t)(len - done) : (1u << 20);

		r = bd->cs ? bdev_pwrite(bd, z, n, off + done) : do_io(bd, 1, z, n, off + done);
	}
	bdev_free(z);
	return r;
}

/* One OFD byte-range lock call (CMD F_OFD_SETLK or F_OFD_GETLK) of TYPE on
 * [OFF, OFF+LEN); *TYPE gets what GETLK found.  0 or -errno. */
static int ofd_range(struct bdev *bd, int cmd, short *type, uint64_t off, uint64_t len)
{
	struct flock fl = {
		.l_type = *type,
		.l_whence = SEEK_SET,
		.l_start = (off_t)off,
		.l_len = (off_t)len,
	};

	if (fcntl(bd->fd, cmd, &fl) < 0)
		return -errno;
	*type = fl.l_type;
	return 0;
}

/* An iSCSI LUN has no local file to lock: what other machines do is seen
 * only through the heartbeat, so these say "nobody on this kernel". */
int bdev_trylock_range(struct bdev *bd, uint64_t off, uint64_t len, int exclusive)
{
	short type = exclusive ? F_WRLCK : F_RDLCK;
	int r;

	if (bd->isc)
		return 0;
	r = ofd_range(bd, F_OFD_SETLK, &type, off, len);

	return r == -EACCES ? -EAGAIN : r;
}

int bdev_range_locked(struct bdev *bd, uint64_t off, uint64_t len)
{
	short type = F_WRLCK;
	int r;

	if (bd->isc)
		return 0;
	r = ofd_range(bd, F_OFD_GETLK, &type, off, len);

	return r ? r : type != F_UNLCK;
}

int bdev_unlock_range(struct bdev *bd, uint64_t off, uint64_t len)
{
	short type = F_UNLCK;

	if (bd->isc)
		return 0;
	return ofd_range(bd, F_OFD_SETLK, &type, off, len);
}

/* ---------------- power-cut simulation ---------------- */

int bdev_crash_enable(struct bdev *bd)
{
	struct crash_sim *cs;

	if (bd->is_blk || bd->isc)
		return -EOPNOTSUPP;
	cs = calloc(1, sizeof(*cs));
	if (!cs)
		return -ENOMEM;
	cs->fd = open(bd->path, O_RDWR | O_CLOEXEC);
	if (cs->fd < 0) {
		free(cs);
		return -errno;
	}
	pthread_mutex_init(&cs->lock, NULL);
	cs->cut_at = UINT64_MAX;
	bd->cs = cs;
	return 0;
}

void bdev_crash_cut_after(struct bdev *bd, uint64_t nwrites)
{
	pthread_mutex_lock(&bd->cs->lock);
	bd->cs->cut_at = bd->cs->writes + nwrites;
	pthread_mutex_unlock(&bd->cs->lock);
}

void bdev_crash_cut(struct bdev *bd)
{
	pthread_mutex_lock(&bd->cs->lock);
	bd->cs->cut = 1;
	pthread_mutex_unlock(&bd->cs->lock);
}

int bdev_crash_is_cut(const struct bdev *bd)
{
	return bd->cs && bd->cs->cut;
}

uint64_t bdev_crash_writes(const struct bdev *bd)
{
	return bd->cs ? bd->cs->writes : 0;
}

/* Remembers the medium's old content and the new data of one write. */
static int crash_record(struct bdev *bd, const void *buf, size_t len, uint64_t off)
{
	struct crash_sim *cs = bd->cs;
	struct crash_write *w;
	int r = 0;

	pthread_mutex_lock(&cs->lock);
	if (cs->cut || cs->writes >= cs->cut_at) {
		cs->cut = 1;
		r = -EIO;
		goto out;
	}
	cs->writes++;
	if (cs->n == cs->cap) {
		size_t cap = cs->cap ? cs->cap * 2 : 256;
		struct crash_write *nw = realloc(cs->w, cap * sizeof(*nw));

		if (!nw) {
			r = -ENOMEM;
			goto out;
		}
		cs->w = nw;
		cs->cap = cap;
	}
	w = &cs->w[cs->n];
	w->off = off;
	w->len = (uint32_t)len;
	w->old = malloc(len);
	w->data = malloc(len);
	if (!w->old || !w->data) {
		free(w->old);
		free(w->data);
		r = -ENOMEM;
		goto out;
	}
	if (pread(cs->fd, w->old, len, (off_t)off) != (ssize_t)len)
		memset(w->old, 0, len);
	memcpy(w->data, buf, len);
	cs->n++;
out:
	pthread_mutex_unlock(&cs->lock);
	return r;
}

/* xorshift64*: small, seedable, good enough to pick survivors. */
static uint64_t rnd(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 2685821657736338717ull;
}

int bdev_crash_resolve(struct bdev *bd, enum bdev_crash_mode mode, uint64_t seed)
{
	struct crash_sim *cs = bd->cs;
	uint64_t s = seed * 0x9e3779b97f4a7c15ull + 1;
	size_t i;
	int r = 0;

	if (!cs)
		return -EINVAL;
	pthread_mutex_lock(&cs->lock);
	cs->cut = 1;
	/* Undo everything the cache held, oldest content last, so every sector
	 * is back to what the medium had at the last flush... */
	for (i = cs->n; i-- > 0;)
		if (pwrite(cs->fd, cs->w[i].old, cs->w[i].len, (off_t)cs->w[i].off) !=
		    (ssize_t)cs->w[i].len)
			r = -EIO;
	/* ...then replay, in issue order, what the medium got: a disk cache
	 * may persist any subset of writes in any order, so applying the chosen
	 * ones in order gives each sector the newest surviving content. */
	for (i = 0; i < cs->n && !r && mode != BDEV_CRASH_DROP_ALL; i++) {
		struct crash_write *w = &cs->w[i];
		uint32_t sec;

		if (mode == BDEV_CRASH_KEEP_SOME) {
			if (rnd(&s) & 1)
				if (pwrite(cs->fd, w->data, w->len, (off_t)w->off) != (ssize_t)w->len)
					r = -EIO;
			continue;
		}
		for (sec = 0; sec < w->len && !r; sec += 512)
			if (rnd(&s) & 1)
				if (pwrite(cs->fd, w->data + sec, 512, (off_t)(w->off + sec)) != 512)
					r = -EIO;
	}
	if (!r && fsync(cs->fd) < 0)
		r = -errno;
	crash_free(cs);
	pthread_mutex_unlock(&cs->lock);
	return r;
}


/* ---------------- asynchronous I/O ---------------- */
/*
 * Each issuer thread owns its ring (IORING_SETUP_SINGLE_ISSUER +
 * DEFER_TASKRUN where the kernel has them): callers queue requests under a
 * mutex and kick an eventfd only when the issuer sleeps, and completions
 * run in the issuer, so no two threads ever fight over a ring's lock (the
 * first version let every FUSE worker submit and spent its time in
 * io_uring's task-work mutex).  A device has one issuer per two CPUs (at
 * most AIO_ENGINES): an issuer submits its own requests on its own ring, any
 * other thread on the first.
 */

int bdev_crash_enabled(const struct bdev *bd)
{
	return bd->cs != NULL;
}

#define EVFD_TAG ((uint64_t)1)
#define WATCH_TAG ((uint64_t)2)
#define UNWATCH_TAG ((uint64_t)3)
/* A bdev_aio_cmd's completion: its address with the low bit set (the tags
 * above are below 4, a command is at least pointer-aligned). */
#define CMD_BIT ((uint64_t)1)
/* The shortest spin window (issuer_spin): a few system calls. */
#define SPIN_MIN_NS 2000
/* How long issuer_spin keeps its CPU from another thread ready to run
 * there.  A yield on every look made creates, stats and unlinks 2-4 %
 * slower (a system call, 1.8 us here, between a request's arrival and its
 * being seen); every 5 us keeps a thread woken onto the spinning CPU
 * waiting at most that. */
#define SPIN_YIELD_NS 5000

/* The engine whose issuer thread this is (NULL on other threads). */
static _Thread_local struct aio_engine *on_issuer;

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static struct io_uring_sqe *issuer_sqe(struct aio_engine *e)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&e->ring);

	if (!sqe) {
		io_uring_submit(&e->ring);
		sqe = io_uring_get_sqe(&e->ring);
	}
	return sqe;
}

/* Spins up to the end of the spin window for something to do: a
 * completion, a queued request.  Returns true if there is.  Waking a
 * sleeping thread on this machine's virtual CPUs costs tens of
 * microseconds (a halted vCPU), about the device's own 4 KiB read latency
 * (31 us measured on the raw image file): a request that follows within
 * the window is served without that wake-up.  DEFER_TASKRUN posts
 * completions only when the issuer enters the kernel for them
 * (io_uring_enter with GETEVENTS), and a system call costs 1.8 us on this
 * kind of machine (getppid, measured); so where the ring flags pending
 * task work in its shared memory (IORING_SETUP_TASKRUN_FLAG), the spin
 * reads that flag and enters only when something is there: at QD1, 38
 * instead of 42-45 us of the daemon's CPU per 4 KiB read.
 *
 * It yields the CPU at its first look and then every SPIN_YIELD_NS: the
 * caller that the reply just woke (fio, QEMU) may have been woken onto
 * this very CPU, where it waited for the rest of the window whenever it
 * did not preempt the spin.  (Where the issuer knows that it was, a
 * command's wake_cpu, it does not spin at all.)  fio's 4 KiB QD1 reads
 * with fio and the issuer pinned to one CPU, in the machine's quiet
 * minutes: p90 100-113 against 64-83 us, p99 120-175 against 91-136 us,
 * the median within the noise (52-65 against 58-64 us).  Unpinned, where
 * the scheduler puts them on one CPU only part of the time, three runs of
 * 10 alternated rounds showed no difference beyond the machine's noise. */
static bool issuer_spin(struct aio_engine *e, uint64_t until)
{
	uint64_t now, yield_at = 0;    /* the first look yields */

	do {
		if (!e->tflag || (IO_URING_READ_ONCE(*e->ring.sq.kflags) &
				  (IORING_SQ_TASKRUN | IORING_SQ_CQ_OVERFLOW)))
			io_uring_get_events(&e->ring);
		if (io_uring_cq_ready(&e->ring) ||
		    __atomic_load_n(&e->qhead, __ATOMIC_ACQUIRE) != NULL ||
		    __atomic_load_n(&e->chead, __ATOMIC_ACQUIRE) != NULL)
			return true;
#if defined(__x86_64__) || defined(__i386__)
		__builtin_ia32_pause();
#endif
		now = now_ns();
		if (now >= yield_at) {
			sched_yield();
			yield_at = now + SPIN_YIELD_NS;
		}
	} while (now < until);
	return false;
}

static void aio_prep(struct aio_engine *e, struct bdev *bd, struct bdev_aio *a)
{
	struct io_uring_sqe *sqe = issuer_sqe(e);
	char *p = (char *)a->buf + a->done;
	unsigned n = (unsigned)(a->len - a->done);

	if (a->write)
		io_uring_prep_write(sqe, bd->fd, p, n, a->off + a->done);
	else
		io_uring_prep_read(sqe, bd->fd, p, n, a->off + a->done);
	io_uring_sqe_set_data(sqe, a);
}

/* One request is done: call its completion, then account for it.  In
 * that order: bdev_aio_drain waits for zero and its caller then frees
 * what completions touch (inodes, the FUSE session, lent buffers); a
 * count dropped before the callback ran let an unmount free an inode
 * under a completion still unlocking it. */
static void aio_complete(struct aio_engine *e, struct bdev_aio *a, int res)
{
	a->cb(a, res);          /* (A may be freed now) */
	pthread_mutex_lock(&e->lock);
	e->inflight--;
	if (!e->inflight)
		pthread_cond_broadcast(&e->room);
	pthread_mutex_unlock(&e->lock);
}

static void *aio_issuer(void *arg)
{
	static const unsigned ring_flags[] = {
		IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_SQE128 |
			IORING_SETUP_TASKRUN_FLAG,
		IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_SQE128,
		IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
		0,      /* kernels before 6.1 */
	};
	struct aio_engine *e = arg;
	struct bdev *bd = e->bd;
	struct bdev_aio *pending = NULL, **ptail = &pending;
	unsigned inflight = 0, wgen = 0;
	bool armed = false, stopping = false, more, wakes_here;
	int cpu;
	int wfd = -1;                   /* the watched descriptor, as armed */
	bool warmed = false;            /* its multishot poll is on the ring */
	bool wagain = false;            /* the handler left some unread */
	uint64_t last_event = 0, spin_ns = 0, spin_cur = 0;
	struct io_uring_params p;
	size_t i;
	int r;

	on_issuer = e;

	/* The best ring the kernel offers: 128-byte SQEs for the watcher's
	 * commands (FUSE over io_uring needs them; Linux 5.19 and later),
	 * the task-work flag issuer_spin reads (with DEFER_TASKRUN: 6.1),
	 * then less. */
	for (i = 0; i < sizeof(ring_flags) / sizeof(ring_flags[0]); i++) {
		memset(&p, 0, sizeof(p));
		p.flags = ring_flags[i];
		r = io_uring_queue_init_params(AIO_DEPTH, &e->ring, &p);
		if (!r)
			break;
	}
	e->sqe128 = !r && (ring_flags[i] & IORING_SETUP_SQE128);
	e->tflag = !r && (ring_flags[i] & IORING_SETUP_TASKRUN_FLAG);
	pthread_mutex_lock(&e->lock);
	e->init = r ? r : 2;
	pthread_cond_broadcast(&e->room);
	pthread_mutex_unlock(&e->lock);
	if (r)
		return NULL;

	for (;;) {
		struct io_uring_cqe *cqe;
		struct bdev_aio *a;
		struct bdev_aio_cmd *cmds;
		unsigned head, seen = 0;

		/* Take what callers queued, up to the ring's capacity. */
		pthread_mutex_lock(&e->lock);
		if (e->qhead) {
			*ptail = e->qhead;
			ptail = e->qtail;
			e->qhead = NULL;
			e->qtail = &e->qhead;
		}
		cmds = e->chead;
		e->chead = NULL;
		e->ctail = &e->chead;
		stopping = e->stop;
		if (e->wgen != wgen) {
			/* a watch was set or dropped: re-arm from scratch */
			if (warmed) {
				struct io_uring_sqe *sqe = issuer_sqe(e);

				io_uring_prep_poll_remove(sqe, WATCH_TAG);
				io_uring_sqe_set_data(sqe, (void *)(uintptr_t)UNWATCH_TAG);
				warmed = false;
			}
			wgen = e->wgen;
			wfd = e->wfd;
			spin_ns = e->spin_ns;
			spin_cur = spin_ns;
			e->wseen = wgen;
			pthread_cond_broadcast(&e->room);
		}
		pthread_mutex_unlock(&e->lock);
		wakes_here = false;
		cpu = cmds ? sched_getcpu() : -1;
		while (cmds) {
			struct bdev_aio_cmd *c = cmds;
			struct io_uring_sqe *sqe = issuer_sqe(e);

			cmds = c->next;
			c->prep(c, sqe);
			wakes_here = wakes_here || (cpu >= 0 && c->wake_cpu == cpu);
			io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)c | CMD_BIT);
		}
		if (wfd >= 0 && !warmed) {
			struct io_uring_sqe *sqe = issuer_sqe(e);

			io_uring_prep_poll_multishot(sqe, wfd, POLLIN);
			io_uring_sqe_set_data(sqe, (void *)(uintptr_t)WATCH_TAG);
			warmed = true;
		}
		while (pending && inflight < AIO_DEPTH - 1) {
			a = pending;
			pending = a->next;
			if (!pending)
				ptail = &pending;
			/* The gate again, now that the request really goes out: it
			 * may have waited here (behind a busy completion) while the
			 * host fenced itself, and must then never reach the disk. */
			if (fault_gate(bd, a->write)) {
				aio_complete(e, a, -EIO);
				continue;
			}
			aio_prep(e, bd, a);
			inflight++;
		}
		if (stopping && !inflight && !pending)
			break;
		/* (the ring is torn down below, by the thread that owns it) */
		if (!armed) {
			struct io_uring_sqe *sqe = issuer_sqe(e);

			io_uring_prep_read(sqe, e->efd, &e->efd_val, sizeof(e->efd_val), 0);
			io_uring_sqe_set_data(sqe, (void *)(uintptr_t)EVFD_TAG);
			armed = true;
		}
		/* Sleep only when nothing is queued: a request queued while we
		 * were busy found sleeping == false and did not kick, and with no
		 * other I/O in flight nothing else would ever wake us. */
		more = false;
		/* Not after a submission that wakes a task on this CPU (a FUSE
		 * reply to a caller that sent from here): the task would wait
		 * for the spin, which sched_yield does not end when the
		 * scheduler deems the task ahead of its share.  Traced (fuse
		 * and sched tracepoints, a stat(2) loop on written files): such
		 * a caller ran 18-34 us median after the reply, up to the
		 * window's 50; with the issuer asleep, 2-3 us. */
		if (!wakes_here && spin_cur && wfd >= 0 && !stopping && !inflight &&
		    now_ns() - last_event < spin_cur) {
			/* The window adapts: halved by a spin that found nothing
			 * (sparse requests: they would pay it each time for
			 * nothing), doubled back up to spin_ns by one that did,
			 * and back to spin_ns after a sleep that one would have
			 * spared (below).  Never while disk I/O of this ring is
			 * in flight: its completion wakes the issuer anyway, and
			 * spinning over a 4 KiB read made fio's QD1 reads slower
			 * here (84 against 69-76 us median, alternated). */
			io_uring_submit(&e->ring);
			more = issuer_spin(e, last_event + spin_cur);
			if (more)
				spin_cur = spin_cur * 2 < spin_ns ? spin_cur * 2 : spin_ns;
			else
				spin_cur = spin_cur / 2 > SPIN_MIN_NS ? spin_cur / 2 : SPIN_MIN_NS;
		}
		pthread_mutex_lock(&e->lock);
		more = more || wagain || e->qhead != NULL || e->chead != NULL || e->wgen != wgen ||
		       io_uring_cq_ready(&e->ring);
		e->sleeping = !more;
		pthread_mutex_unlock(&e->lock);
		if (more) {
			r = io_uring_submit_and_wait(&e->ring, 0);
		} else {
			r = io_uring_submit_and_wait(&e->ring, 1);
			/* Woken within the longest window of the last event: a
			 * spin of that window would have found this, so spin
			 * it again.  Halving alone never recovers from the
			 * shortest window once requests come one at a time,
			 * each after the caller's round trip (20-40 us here):
			 * with FUSE over io_uring nothing else woke the issuer
			 * in between, and every request of a create or stat
			 * loop paid the wake-up of a halted CPU (13-15 against
			 * 6-7 us median per request, fuse tracepoints). */
			if (spin_cur && last_event && now_ns() - last_event < spin_ns)
				spin_cur = spin_ns;
		}
		if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY && r != -ETIME)
			usleep(1000);   /* never spin on a broken ring */
		pthread_mutex_lock(&e->lock);
		e->sleeping = false;
		pthread_mutex_unlock(&e->lock);

		bool wready = false;

		io_uring_for_each_cqe(&e->ring, head, cqe) {
			int r = cqe->res;

			seen++;
			a = io_uring_cqe_get_data(cqe);
			if ((uintptr_t)a == EVFD_TAG) {
				armed = false;
				continue;
			}
			if ((uintptr_t)a == UNWATCH_TAG)
				continue;
			if ((uintptr_t)a & CMD_BIT) {
				/* the watcher's command: its own until unwatched */
				if (wfd >= 0) {
					struct bdev_aio_cmd *c =
						(void *)((uintptr_t)a & ~(uintptr_t)CMD_BIT);

					c->done(c, r);
					last_event = spin_ns ? now_ns() : 0;
				}
				continue;
			}
			if ((uintptr_t)a == WATCH_TAG) {
				/* a poll that ends (no F_MORE) is armed again,
				 * unless it was cancelled on purpose */
				if (!(cqe->flags & IORING_CQE_F_MORE) && r != -ECANCELED &&
				    wfd >= 0)
					warmed = false;
				wready = wready || (r > 0 && wfd >= 0);
				continue;
			}
			last_event = spin_ns ? now_ns() : 0;
			if (r > 0 && a->done + (size_t)r < a->len) {
				a->done += (size_t)r;   /* short transfer: go on */
				if (!fault_gate(bd, a->write)) {
					aio_prep(e, bd, a);
					continue;
				}
				r = -EIO;
			}
			if (r == 0 && a->write)
				r = -EIO;       /* no progress on a write */
			else if (r == 0)        /* read past the end of the file: zeros */
				memset((char *)a->buf + a->done, 0, a->len - a->done);
			else if (r > 0)
				r = 0;
			inflight--;
			aio_complete(e, a, r);
		}
		io_uring_cq_advance(&e->ring, seen);
		if ((wready || wagain) && wfd >= 0) {
			/* The handler may queue requests (bdev_aio_submit from this
			 * thread never kicks: we are awake), which the next turn
			 * submits together. */
			wagain = e->wready(e->warg);
			last_event = spin_ns ? now_ns() : 0;
		}
	}
	io_uring_queue_exit(&e->ring);
	return NULL;
}

/* Issuer threads per device: one per two CPUs (at least one), at most
 * AIO_ENGINES.  The work per request is mostly the kernel's (reading the
 * request, replying, the submission), which more threads can share, but
 * the application that sends the requests (QEMU, fio) needs CPUs too, and
 * every issuer polls /dev/fuse, so each request wakes them all.  Measured
 * on 2 CPUs with fio (4 KiB random reads, QD32, A/B twice, after the
 * 4 KiB buffer cache): one issuer 61-74k IOPS at 10-12 us of vmfsd CPU
 * per read, p99 0.66-0.77 ms; two issuers 48-56k at 15-18 us, p99
 * 1.5-3.1 ms; 1 MiB reads and writes the same or better with one, QD1
 * 83 against 89 us median.  (Before the 4 KiB buffer cache, two issuers
 * were ahead: 48-50k against 38-41k, when glibc's trims cost each thread
 * a share of every CPU.) */
#define AIO_ENGINES 4

static void aio_engine_free(struct aio_engine *e)
{
	close(e->efd);
	free(e);
}

static int aio_engine_start(struct bdev *bd, struct aio_engine **out)
{
	struct aio_engine *e = calloc(1, sizeof(*e));
	int r;

	if (!e)
		return -ENOMEM;
	/* SINGLE_ISSUER binds the ring to the task that creates it, so the
	 * issuer thread creates it (IORING_SETUP_R_DISABLED + enabling it in
	 * the thread would do too); here we only set up the rest. */
	e->efd = eventfd(0, EFD_CLOEXEC);
	if (e->efd < 0) {
		r = -errno;
		free(e);
		return r;
	}
	pthread_mutex_init(&e->lock, NULL);
	pthread_cond_init(&e->room, NULL);
	e->qtail = &e->qhead;
	e->ctail = &e->chead;
	e->wfd = -1;
	e->init = 1;
	e->bd = bd;
	r = -pthread_create(&e->thr, NULL, aio_issuer, e);
	if (!r) {
		pthread_mutex_lock(&e->lock);
		while (e->init == 1)
			pthread_cond_wait(&e->room, &e->lock);
		r = e->init < 0 ? e->init : 0;
		pthread_mutex_unlock(&e->lock);
		if (r)
			pthread_join(e->thr, NULL);
	}
	if (r) {
		aio_engine_free(e);
		return r;
	}
	*out = e;
	return 0;
}

static int aio_start(struct bdev *bd)
{
	struct aio_engine *first = NULL, **tail = &first;
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	int i, n, r = 0;

	pthread_mutex_lock(&bd->aio_init_lock);
	if (bd->aio) {
		pthread_mutex_unlock(&bd->aio_init_lock);
		return 0;
	}
	n = ncpu < 2 ? 1 : ncpu / 2 > AIO_ENGINES ? AIO_ENGINES : (int)(ncpu / 2);
	if (bd->aio_issuers)
		n = (int)bd->aio_issuers;
	for (i = 0; i < n; i++) {
		r = aio_engine_start(bd, tail);
		if (r)
			break;
		tail = &(*tail)->next;
	}
	if (first)
		r = 0;          /* fewer issuers than CPUs still work */
	bd->aio = first;
	pthread_mutex_unlock(&bd->aio_init_lock);
	return r;
}

static void aio_kick(struct aio_engine *e)
{
	uint64_t one = 1;

	if (write(e->efd, &one, sizeof(one)) < 0) {
		/* EAGAIN: the counter is saturated, the issuer will wake anyway. */
	}
}

static void aio_stop(struct bdev *bd)
{
	struct aio_engine *e, *next;

	for (e = bd->aio; e; e = next) {
		next = e->next;
		pthread_mutex_lock(&e->lock);
		e->stop = 1;
		pthread_mutex_unlock(&e->lock);
		aio_kick(e);
		pthread_join(e->thr, NULL);
		aio_engine_free(e);
	}
	bd->aio = NULL;
}

int bdev_aio_submit(struct bdev *bd, struct bdev_aio *a)
{
	struct aio_engine *e;
	bool kick;
	int r;

	r = check_range(bd, a->len, a->off);
	if (r)
		return r;
	/* O_DIRECT needs memory aligned to the logical block (512), not 4 KiB. */
	if ((uintptr_t)a->buf & 511)
		return -EINVAL;
	if (fault_gate(bd, a->write))
		return -EIO;
	if (bd->cs)
		return -EOPNOTSUPP;     /* the crash model records synchronous I/O only */
	if (bd->isc)
		return bdev_iscsi_submit(bd->isc, a);
	if (!bd->aio) {
		r = aio_start(bd);
		if (r)
			return r;
	}
	/* an issuer submits on its own ring (no wake-up), others on the first */
	e = on_issuer && on_issuer->bd == bd ? on_issuer : bd->aio;
	a->done = 0;
	a->next = NULL;
	pthread_mutex_lock(&e->lock);
	*e->qtail = a;
	e->qtail = &a->next;
	e->inflight++;
	kick = e->sleeping;
	e->sleeping = false;    /* one kick per sleep is enough */
	pthread_mutex_unlock(&e->lock);
	if (kick)
		aio_kick(e);
	return 0;
}

int bdev_aio_set_issuers(struct bdev *bd, unsigned n)
{
	int r = 0;

	if (n > AIO_ENGINES)
		return -EINVAL;
	pthread_mutex_lock(&bd->aio_init_lock);
	if (bd->aio)
		r = -EBUSY;
	else
		bd->aio_issuers = n;
	pthread_mutex_unlock(&bd->aio_init_lock);
	return r;
}

int bdev_aio_watch(struct bdev *bd, int fd, bool (*ready)(void *arg), void *arg,
		   unsigned spin_us)
{
	struct aio_engine *e;
	int r;

	if (bd->cs || bd->isc)
		return -EOPNOTSUPP;
	if (!bd->aio) {
		r = aio_start(bd);
		if (r)
			return r;
	}
	for (e = bd->aio; e; e = e->next) {
		pthread_mutex_lock(&e->lock);
		e->wfd = fd;
		e->watched = true;
		e->wready = ready;
		e->warg = arg;
		e->spin_ns = (uint64_t)spin_us * 1000;
		e->wgen++;
		e->sleeping = false;
		pthread_mutex_unlock(&e->lock);
		aio_kick(e);
	}
	return 0;
}

void bdev_aio_unwatch(struct bdev *bd)
{
	struct aio_engine *e;
	unsigned gen;

	if (on_issuer)
		return;
	for (e = bd->aio; e; e = e->next) {
		pthread_mutex_lock(&e->lock);
		if (e->wfd < 0) {
			pthread_mutex_unlock(&e->lock);
			continue;
		}
		e->wfd = -1;
		e->watched = false;
		e->chead = NULL;        /* dropped: see bdev_aio_cmd */
		e->ctail = &e->chead;
		gen = ++e->wgen;
		e->sleeping = false;
		pthread_mutex_unlock(&e->lock);
		aio_kick(e);
		pthread_mutex_lock(&e->lock);
		while (e->wseen != gen)
			pthread_cond_wait(&e->room, &e->lock);
		pthread_mutex_unlock(&e->lock);
	}
}

int bdev_aio_cmd_submit(struct bdev *bd, unsigned issuer, struct bdev_aio_cmd *c)
{
	struct aio_engine *e;
	bool kick;

	for (e = bd->aio; e && issuer; e = e->next)
		issuer--;
	if (!e)
		return -EINVAL;
	if (!e->sqe128)
		return -EOPNOTSUPP;
	c->next = NULL;
	pthread_mutex_lock(&e->lock);
	if (!e->watched) {
		pthread_mutex_unlock(&e->lock);
		return -ESHUTDOWN;
	}
	*e->ctail = c;
	e->ctail = &c->next;
	kick = e->sleeping;
	e->sleeping = false;
	pthread_mutex_unlock(&e->lock);
	if (kick)
		aio_kick(e);
	return 0;
}

unsigned bdev_aio_issuer_count(struct bdev *bd)
{
	struct aio_engine *e;
	unsigned n = 0;

	for (e = bd->aio; e && e->sqe128; e = e->next)
		n++;
	return n;
}

bool bdev_aio_on_issuer(void)
{
	return on_issuer != NULL;
}

void bdev_aio_drain(struct bdev *bd)
{
	struct aio_engine *e;

	if (bd->isc)
		bdev_iscsi_drain(bd->isc);
	for (e = bd->aio; e; e = e->next) {
		pthread_mutex_lock(&e->lock);
		while (e->inflight)
			pthread_cond_wait(&e->room, &e->lock);
		pthread_mutex_unlock(&e->lock);
	}
}

/* ---------------- persistent reservations ---------------- */

int bdev_pr_register(struct bdev *bd, uint64_t key)
{
	if (!bd->isc)
		return -EOPNOTSUPP;
	return bdev_iscsi_pr(bd->isc, SCSI_PR_REGISTER_AND_IGNORE, 0, key);
}

int bdev_pr_unregister(struct bdev *bd, uint64_t key)
{
	if (!bd->isc)
		return -EOPNOTSUPP;
	return bdev_iscsi_pr(bd->isc, SCSI_PR_REGISTER, key, 0);
}

int bdev_pr_reserve(struct bdev *bd, uint64_t key)
{
	if (!bd->isc)
		return -EOPNOTSUPP;
	return bdev_iscsi_pr(bd->isc, SCSI_PR_RESERVE, key, 0);
}

int bdev_pr_preempt(struct bdev *bd, uint64_t key, uint64_t victim)
{
	if (!bd->isc)
		return -EOPNOTSUPP;
	return bdev_iscsi_pr(bd->isc, SCSI_PR_PREEMPT, key, victim);
}

int bdev_pr_clear(struct bdev *bd, uint64_t key)
{
	int r;

	if (!bd->isc)
		return -EOPNOTSUPP;
	r = bdev_iscsi_pr(bd->isc, SCSI_PR_REGISTER_AND_IGNORE, 0, key);
	if (!r)
		r = bdev_iscsi_pr(bd->isc, SCSI_PR_CLEAR, key, 0);
	return r;
}

int bdev_pr_read(struct bdev *bd, uint64_t *keys, unsigned max, unsigned *n, uint64_t *holder)
{
	int type;

	if (!bd->isc)
		return -EOPNOTSUPP;
	return bdev_iscsi_pr_keys(bd->isc, keys, max, n, holder, &type);
}
