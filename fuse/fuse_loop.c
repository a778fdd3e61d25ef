// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * vmfsd's FUSE request loop on a file-backed volume.
 *
 * What a VM disk does all day is READ and WRITE of allocated data, and with
 * libfuse's own loop each such request crossed three threads: a worker
 * woke up for it on /dev/fuse, handed the device I/O to the issuer thread
 * of the asynchronous path (an eventfd wake-up), and the issuer replied.
 * On this kind of machine (virtual CPUs, where waking a halted one costs
 * tens of microseconds) the hand-offs, not the work, set the figures.
 *
 * Here the issuer threads themselves read /dev/fuse (bdev_aio_watch: a
 * poll on each of the device's io_urings, one per two CPUs): a READ or WRITE is
 * decoded, mapped and submitted on the thread that read it, all requests
 * read in one turn go to the disk in one io_uring_enter, and their
 * completions reply from the same thread.  Each issuer reads into its own
 * receive buffer.  LOOKUP, GETATTR and FORGET are served there too, and
 * CREATE, UNLINK and RELEASE while nothing in them would wait
 * (served_here).  Everything else, and a READ or WRITE that cannot go without
 * waiting (fs_read_start/fs_write_start with nowait: a truncate holds the
 * file, an inline or unallocated range, a set-user-ID bit to clear), goes
 * to a pool of worker threads that may block: on-disk locks, journal
 * commits, synchronous I/O.
 *
 * Invariant: the issuer never waits for anything an asynchronous request
 * may hold up, since it is the thread that completes them.  The worker
 * pool grows when every worker is busy (a worker can wait seconds for
 * another host's lock) up to MAX_THREADS and never shrinks.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bdev/bdev.h"
#include "fuse_loop.h"

/* The kernel's request header (struct fuse_in_header in linux/fuse.h,
 * stable ABI); that header is not included because its macros clash with
 * libfuse's. */
struct in_header {
	uint32_t len;
	uint32_t opcode;
	uint64_t unique;
	uint64_t nodeid;
	uint32_t uid, gid, pid;
	uint16_t total_extlen, padding;
};
#define OP_LOOKUP 1
#define OP_FORGET 2
#define OP_GETATTR 3
#define OP_UNLINK 10
#define OP_READ 15
#define OP_WRITE 16
#define OP_RELEASE 18
#define OP_GETXATTR 22
#define OP_CREATE 35
#define OP_BATCH_FORGET 42
/* GETXATTR's name follows the header and struct fuse_getxattr_in (8 bytes) */
#define GETXATTR_NAME_OFF (sizeof(struct in_header) + 8)

/* Served on the issuer that read them: READ and WRITE (which hand to a
 * worker what would wait), and the cheap lookups that a stat(2) of many
 * files is made of.  LOOKUP and GETATTR take meta_lock and may read an
 * inode or directory block synchronously (when another host is present),
 * never an on-disk lock: waiting for meta_lock is already allowed on the
 * issuer (a write's completion takes it), and its holders never wait for
 * asynchronous I/O.  A hop to a worker doubled the wake-ups of each.
 * GETXATTR outside the "user." namespace too: the kernel asks for
 * security.capability before every write to a file (FUSE filesystems do
 * not get SB_NOSEC), and vmfsd answers ENODATA without looking at
 * anything (fs_getxattr); user.vmfsd.* may read lock records: a worker.
 * CREATE, UNLINK and RELEASE too: alone on the volume, with the locks
 * they need held and room in the journal, nothing in them waits; their
 * handlers hand the rest to a worker (fs_create_nowait).  A create of a
 * small file was three hops to a worker: CREATE, the inline WRITE (now a
 * copy into the inode, fs_write_start) and RELEASE. */
static bool served_here(const struct in_header *h, size_t len)
{
	switch (h->opcode) {
	case OP_READ:
	case OP_WRITE:
	case OP_LOOKUP:
	case OP_GETATTR:
	case OP_FORGET:
	case OP_BATCH_FORGET:
	case OP_CREATE:
	case OP_UNLINK:
	case OP_RELEASE:
		return true;
	case OP_GETXATTR:
		return len > GETXATTR_NAME_OFF + 5 &&
		       memcmp((const char *)h + GETXATTR_NAME_OFF, "user.", 5);
	default:
		return false;
	}
}

/* Requests per reader turn: then the issuer serves completions before it
 * reads on (a burst of 256 queued requests does not hold back replies). */
#define READ_BATCH 32

/* Where a WRITE's data starts in the request: struct fuse_in_header and
 * struct fuse_write_in, 40 bytes each.  Receive buffers are placed so that
 * this offset is page aligned: the data can then go to the device as it
 * came (vmfsd_fuse_take_buf), without a copy. */
#define WRITE_DATA_OFF 80
/* Receive buffers at most (1 MiB and a page each): a lent buffer is out
 * until its write completes, and the cap bounds what that keeps. */
#define RBUF_MAX 32

struct buf_job {
	struct vmfsd_fuse_job job;
	size_t size;
	uint8_t data[];
};

struct rbuf {
	struct rbuf *next;      /* on the free list */
	struct rbuf *all;       /* every buffer, for the end */
	void *base;             /* what to free */
	uint8_t *mem;           /* the request is read here */
};

/* The buffer this issuer thread reads into (each device has one issuer
 * per two CPUs, all reading /dev/fuse).  Set again by every loop: a process
 * runs one. */
static _Thread_local struct rbuf *cur;

struct floop {
	struct fuse_session *se;
	int fd;
	struct rbuf *all_rb;    /* every buffer (under LOCK) */
	struct rbuf *free_rb;   /* returned buffers (under LOCK) */
	unsigned nrbuf;         /* allocated (under LOCK) */
	size_t rbufsize;
	pthread_mutex_t lock;
	pthread_cond_t work;            /* a job was queued, or stop */
	pthread_cond_t end;             /* ended was set */
	struct vmfsd_fuse_job *head, **tail;
	pthread_t *thr;
	unsigned nthreads, idle, queued, max_threads;
	bool stop, ended;
	int err;
};

/* One volume per process, as the ops' session (fuse_ops.c). */
static struct floop *loop;

/* A receive buffer from the free list or a new one; NULL when RBUF_MAX
 * are out, unless FORCE (an issuer's own first buffer: it must be able to
 * read).  LOCK held. */
static struct rbuf *rbuf_get(struct floop *l, bool force)
{
	struct rbuf *rb = l->free_rb;

	if (rb) {
		l->free_rb = rb->next;
		return rb;
	}
	if (l->nrbuf >= RBUF_MAX && !force)
		return NULL;
	rb = malloc(sizeof(*rb));
	if (!rb)
		return NULL;
	if (posix_memalign(&rb->base, 4096, l->rbufsize + 4096)) {
		free(rb);
		return NULL;
	}
	rb->mem = (uint8_t *)rb->base + 4096 - WRITE_DATA_OFF;
	rb->all = l->all_rb;
	l->all_rb = rb;
	l->nrbuf++;
	return rb;
}

/* At the end, when no issuer reads and no write is in flight. */
static void rbuf_free_all(struct floop *l)
{
	struct rbuf *rb;

	while ((rb = l->all_rb)) {
		l->all_rb = rb->all;
		free(rb->base);
		free(rb);
	}
}

void *vmfsd_fuse_take_buf(const void *p, size_t len)
{
	struct floop *l = loop;
	struct rbuf *rb, *next;

	if (!l || !bdev_aio_on_issuer() || !cur)
		return NULL;
	rb = cur;
	if ((const uint8_t *)p < rb->mem || (const uint8_t *)p + len > rb->mem + l->rbufsize)
		return NULL;
	pthread_mutex_lock(&l->lock);
	next = rbuf_get(l, false);
	pthread_mutex_unlock(&l->lock);
	if (!next)
		return NULL;
	cur = next;
	return rb;
}

void vmfsd_fuse_put_buf(void *h)
{
	struct floop *l = loop;
	struct rbuf *rb = h;

	if (!rb || !l)
		return;         /* (not after the loop: it drains the I/O first) */
	pthread_mutex_lock(&l->lock);
	rb->next = l->free_rb;
	l->free_rb = rb;
	pthread_mutex_unlock(&l->lock);
}

static void *worker(void *arg)
{
	struct floop *l = arg;

	for (;;) {
		struct vmfsd_fuse_job *j;

		pthread_mutex_lock(&l->lock);
		l->idle++;
		while (!l->head && !l->stop)
			pthread_cond_wait(&l->work, &l->lock);
		l->idle--;
		j = l->head;
		if (!j) {
			pthread_mutex_unlock(&l->lock);
			return NULL;
		}
		l->head = j->next;
		if (!l->head)
			l->tail = &l->head;
		l->queued--;
		pthread_mutex_unlock(&l->lock);
		j->run(j);
	}
}

int vmfsd_fuse_defer(struct vmfsd_fuse_job *j)
{
	struct floop *l = loop;
	bool grow;

	if (!l)
		return -EINVAL;
	j->next = NULL;
	pthread_mutex_lock(&l->lock);
	*l->tail = j;
	l->tail = &j->next;
	l->queued++;
	/* a worker more when the waiting ones cannot take every queued job */
	grow = l->queued > l->idle && l->nthreads < l->max_threads;
	if (grow && pthread_create(&l->thr[l->nthreads], NULL, worker, l) == 0)
		l->nthreads++;
	pthread_cond_signal(&l->work);
	pthread_mutex_unlock(&l->lock);
	return 0;
}

static void run_buf(struct vmfsd_fuse_job *j)
{
	struct buf_job *b = (struct buf_job *)j;
	struct fuse_buf fb = { .size = b->size, .mem = b->data };

	fuse_session_process_buf(loop->se, &fb);
	free(b);
}

static void end_loop(struct floop *l, int err)
{
	pthread_mutex_lock(&l->lock);
	l->ended = true;
	if (!l->err)
		l->err = err;
	pthread_cond_broadcast(&l->end);
	pthread_mutex_unlock(&l->lock);
}

/* On the issuer: reads what /dev/fuse has, up to READ_BATCH requests.
 * Returns true if it stopped with requests possibly left. */
static bool reader(void *arg)
{
	struct floop *l = arg;
	unsigned n;

	if (l->ended)
		return false;
	if (!cur) {
		pthread_mutex_lock(&l->lock);
		cur = rbuf_get(l, true);
		pthread_mutex_unlock(&l->lock);
		if (!cur) {
			end_loop(l, -ENOMEM);
			return false;
		}
	}
	for (n = 0; n < READ_BATCH; n++) {
		ssize_t r = read(l->fd, cur->mem, l->rbufsize);
		const struct in_header *h = (const struct in_header *)cur->mem;
		struct buf_job *b;

		if (r < 0) {
			if (errno == EINTR || errno == ENOENT)
				continue;       /* ENOENT: interrupted before read */
			if (errno == EAGAIN)
				return false;
			end_loop(l, errno == ENODEV ? 0 : -errno);      /* ENODEV: unmounted */
			return false;
		}
		if ((size_t)r < sizeof(*h)) {
			end_loop(l, -EIO);
			return false;
		}
		if (served_here(h, (size_t)r)) {
			struct fuse_buf fb = { .size = (size_t)r, .mem = cur->mem };

			fuse_session_process_buf(l->se, &fb);
			continue;
		}
		/* Not served here even without memory for the copy: a request
		 * that waits (an fsync drains the I/O this thread completes)
		 * would deadlock.  Wait for memory instead. */
		while (!(b = malloc(sizeof(*b) + (size_t)r)))
			usleep(1000);
		b->job.run = run_buf;
		b->size = (size_t)r;
		memcpy(b->data, cur->mem, (size_t)r);
		vmfsd_fuse_defer(&b->job);
	}
	return true;
}

int vmfsd_fuse_loop(struct fuse_session *se, struct bdev *bd, unsigned max_threads,
		    unsigned spin_us)
{
	struct floop *l;
	int fl, r;
	unsigned i;

	if (max_threads < 1)
		max_threads = 1;
	l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	l->se = se;
	l->fd = fuse_session_fd(se);
	l->max_threads = max_threads;
	/* the largest request: a max_write (1 MiB) WRITE and its headers
	 * (the kernel refuses a read buffer smaller than that) */
	l->rbufsize = (1u << 20) + 64 * 1024;
	l->thr = calloc(max_threads, sizeof(*l->thr));
	if (!l->thr) {
		r = -ENOMEM;
		goto out_free;
	}
	pthread_mutex_init(&l->lock, NULL);
	pthread_cond_init(&l->work, NULL);
	pthread_cond_init(&l->end, NULL);
	l->tail = &l->head;
	fl = fcntl(l->fd, F_GETFL);
	if (fl < 0 || fcntl(l->fd, F_SETFL, fl | O_NONBLOCK) < 0) {
		r = -errno;
		goto out_free;
	}
	loop = l;
	/* the first worker, for FUSE_INIT (more come as they are needed) */
	if (pthread_create(&l->thr[0], NULL, worker, l)) {
		r = -EAGAIN;
		goto out_restore;
	}
	l->nthreads = 1;
	r = bdev_aio_watch(bd, l->fd, reader, l, spin_us);
	if (r)
		goto out_stop;
	pthread_mutex_lock(&l->lock);
	/* libfuse's signal handlers only set the session's exit flag: look at
	 * it every 200 ms (the time a SIGTERM'ed daemon takes to notice) */
	while (!l->ended && !fuse_session_exited(se)) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 200 * 1000 * 1000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&l->end, &l->lock, &ts);
	}
	pthread_mutex_unlock(&l->lock);
	bdev_aio_unwatch(bd);
	r = l->err;
out_stop:
	/* workers finish what is queued (replies to an unmounted session just
	 * fail), then exit; then the I/O in flight completes, which gives
	 * every lent receive buffer back */
	pthread_mutex_lock(&l->lock);
	l->stop = true;
	pthread_cond_broadcast(&l->work);
	pthread_mutex_unlock(&l->lock);
	for (i = 0; i < l->nthreads; i++)
		pthread_join(l->thr[i], NULL);
	bdev_aio_drain(bd);
out_restore:
	loop = NULL;
	(void)fcntl(l->fd, F_SETFL, fl);
out_free:
	rbuf_free_all(l);
	free(l->thr);
	free(l);
	return r;
}
