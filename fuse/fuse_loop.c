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
 * Where the kernel offers FUSE over io_uring, requests come instead as
 * completions on the issuers' own rings, and replies go back the same way
 * (the section below): the same serving, without a read(2) and writev(2)
 * of /dev/fuse per request.
 *
 * Invariant: the issuer never waits for anything an asynchronous request
 * may hold up, since it is the thread that completes them.  The worker
 * pool grows when every worker is busy (a worker can wait seconds for
 * another host's lock) up to MAX_THREADS and never shrinks.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/sysinfo.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <liburing.h>

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
#define OP_INIT 26
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

/* FUSE over io_uring (below): its state, the slot whose request this
 * issuer serves (vmfsd_fuse_take_buf), and the handle take_buf gives for a
 * slot's payload (the slot is the request's until its reply anyway). */
struct fring;
struct slot;
static struct fring *fring;
static _Thread_local struct slot *cur_slot;
static char slot_lent;
static bool slot_holds(const struct slot *s, const void *p, size_t len);

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

	if (cur_slot && slot_holds(cur_slot, p, len))
		return &slot_lent;
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

	if (!rb || !l || h == &slot_lent)
		return;         /* (not after the loop: it drains the I/O first) */
	pthread_mutex_lock(&l->lock);
	rb->next = l->free_rb;
	l->free_rb = rb;
	pthread_mutex_unlock(&l->lock);
}

/* ---------------- FUSE over io_uring ---------------- */
/*
 * Linux 6.14 and later can pass requests through io_uring instead of
 * /dev/fuse (fs/fuse/dev_uring.c; the fuse module's enable_uring parameter
 * must be set, and the server must say so in its INIT reply).  The server
 * registers request slots, an io_uring command each, in one queue per
 * possible CPU (a request goes to the queue of the CPU its caller runs
 * on, and none goes through the ring before every queue has a slot).  A
 * request lands in a free slot of its queue and completes that slot's
 * command; the reply goes into the same slot, and one command commits it
 * and waits for the next request.  So the read(2) and writev(2) of
 * /dev/fuse per request are gone: the issuer's io_uring_enter that submits
 * the device I/O carries them (bdev_aio_cmd), and a READ or WRITE is one
 * system call on the issuer, not three.
 *
 * libfuse 3.14 knows nothing of it: vmfsd sets the flag in libfuse's own
 * INIT reply and takes libfuse's replies at the session's writev
 * (fuse_session_custom_io), where a reply to a request that came through
 * a slot goes into that slot.  FORGET, INTERRUPT and notifications still
 * use /dev/fuse (the kernel sends them there), as does every request sent
 * before the slots were registered: the reader goes on serving it.
 */

/* The kernel's ABI (include/uapi/linux/fuse.h, protocol 7.42) */
#define INIT_EXT (1u << 30)                     /* FUSE_INIT_EXT: flags2 counts */
#define INIT_MAX_PAGES (1u << 22)               /* FUSE_MAX_PAGES */
#define INIT2_OVER_IO_URING (1u << (41 - 32))   /* FUSE_OVER_IO_URING */
#define URING_CMD_REGISTER 1
#define URING_CMD_COMMIT_AND_FETCH 2

struct init_in {
	uint32_t major, minor, max_readahead, flags, flags2;
};
struct init_out {
	uint32_t major, minor, max_readahead, flags;
	uint16_t max_background, congestion_threshold;
	uint32_t max_write, time_gran;
	uint16_t max_pages, map_alignment;
	uint32_t flags2;
	uint32_t unused[7];
};
_Static_assert(sizeof(struct init_out) == 64, "struct fuse_init_out");
struct out_header {
	uint32_t len;
	int32_t error;
	uint64_t unique;
};
/* struct fuse_uring_req_header: what a slot's first buffer holds */
struct slot_hdr {
	uint8_t in_out[128];    /* the request's fuse_in_header, the reply's fuse_out_header */
	uint8_t op_in[128];     /* the request's first argument (fuse_read_in, ...) */
	uint64_t flags;         /* struct fuse_uring_ent_in_out */
	uint64_t commit_id;
	uint32_t payload_sz;    /* bytes in the payload buffer, both ways */
	uint32_t padding;
	uint64_t reserved;
};
_Static_assert(sizeof(struct slot_hdr) == 288, "struct fuse_uring_req_header");
/* struct fuse_uring_cmd_req: the command's 80 bytes in a 128-byte SQE */
struct slot_cmd {
	uint64_t flags;
	uint64_t commit_id;
	uint16_t qid;
	uint8_t padding[6];
};

/* Slots per queue, and in all: a queue takes the requests of the CPUs'
 * callers, so a QD32 job on one CPU wants 32 in its queue; each slot's
 * payload buffer is as large as the largest request (1 MiB and a page
 * here), touched only as far as requests reach, so RSS stays under
 * SLOTS_MAX MiB whatever the load. */
#define SLOTS_PER_QUEUE 32
#define SLOTS_MAX 128
/* A slot's page before its payload: the slot's header (struct slot_hdr)
 * at its start, and the request put together at its end, its headers (at
 * most 40 + 128 bytes) right before the payload, so that a WRITE's data
 * stays where the kernel put it, page aligned. */
#define SLOT_HEADROOM 4096
_Static_assert(sizeof(struct slot_hdr) + 40 + 128 <= SLOT_HEADROOM, "slot page");

struct slot {
	struct bdev_aio_cmd cmd;        /* first */
	struct vmfsd_fuse_job job;      /* a request for a worker */
	struct slot_hdr *hdr;
	uint8_t *payload;
	struct iovec iov[2];            /* what REGISTER hands the kernel */
	uint8_t *req;                   /* the request put together */
	size_t reqlen;
	uint64_t unique;                /* of the request held (0: none) */
	struct slot *hnext;             /* in the table, while held */
	uint32_t op;                    /* the command that goes out next */
	uint16_t qid;
	unsigned issuer;
};

struct fring {
	struct fuse_session *se;
	struct bdev *bd;
	int fd;
	bool want;                      /* offer it at INIT */
	bool init_seen;                 /* the INIT request, as the kernel sent it */
	uint64_t init_unique;
	uint32_t kflags, kflags2;
	size_t payload_sz;
	unsigned nslots;
	struct slot *slots;
	void *map;
	size_t maplen;
	pthread_mutex_t tlock;          /* the table of held slots */
	struct slot **table;
	unsigned tmask;
	atomic_uint_fast64_t nring, ndev;       /* requests by way */
	atomic_int failed;              /* a REGISTER's error */
};

static unsigned possible_cpus(void)
{
	FILE *f = fopen("/sys/devices/system/cpu/possible", "re");
	unsigned a, b, n = 0;
	int c;

	/* "0-3" or "0,2-5": the highest CPU number and one */
	if (f) {
		while (fscanf(f, "%u", &a) == 1) {
			b = a;
			c = fgetc(f);
			if (c == '-' && fscanf(f, "%u", &b) == 1)
				c = fgetc(f);
			n = b + 1 > n ? b + 1 : n;
			if (c != ',')
				break;
		}
		fclose(f);
	}
	return n ? n : (unsigned)get_nprocs_conf();
}

static void slot_hash(struct fring *r, struct slot *s)
{
	unsigned i = (unsigned)(s->unique >> 1) & r->tmask;

	pthread_mutex_lock(&r->tlock);
	s->hnext = r->table[i];
	r->table[i] = s;
	pthread_mutex_unlock(&r->tlock);
}

/* The slot that holds request UNIQUE, out of the table; NULL if none. */
static struct slot *slot_unhash(struct fring *r, uint64_t unique)
{
	struct slot **pp, *s;

	pthread_mutex_lock(&r->tlock);
	for (pp = &r->table[(unsigned)(unique >> 1) & r->tmask]; (s = *pp); pp = &s->hnext) {
		if (s->unique == unique) {
			*pp = s->hnext;
			break;
		}
	}
	pthread_mutex_unlock(&r->tlock);
	return s;
}

static bool slot_holds(const struct slot *s, const void *p, size_t len)
{
	const uint8_t *q = p;

	return q >= s->payload && q + len <= s->payload + fring->payload_sz;
}

static void slot_prep(struct bdev_aio_cmd *c, struct io_uring_sqe *sqe)
{
	struct slot *s = (struct slot *)c;
	struct slot_cmd *sc = (struct slot_cmd *)sqe->cmd;

	memset(sqe, 0, 128);
	sqe->opcode = IORING_OP_URING_CMD;
	sqe->fd = fring->fd;
	sqe->cmd_op = s->op;
	sc->qid = s->qid;
	/* a queue per CPU, that of the CPU the caller sent from: the reply
	 * wakes it there (if the scheduler leaves it there) */
	c->wake_cpu = s->op == URING_CMD_REGISTER ? -1 : s->qid;
	if (s->op == URING_CMD_REGISTER) {
		sqe->addr = (uint64_t)(uintptr_t)s->iov;
		sqe->len = 2;
	} else {
		sc->commit_id = s->unique;
	}
}

static void slot_run(struct vmfsd_fuse_job *j)
{
	struct slot *s = (struct slot *)((char *)j - offsetof(struct slot, job));
	struct fuse_buf fb = { .size = s->reqlen, .mem = s->req };

	/* (S may hold the next request once this one is answered) */
	fuse_session_process_buf(fring->se, &fb);
}

/* Answers the request in S with ERR without libfuse (one it cannot
 * parse): the slot must go back to the kernel either way. */
static void slot_fail(struct fring *r, struct slot *s, uint64_t unique, int err)
{
	struct out_header oh = { sizeof(oh), -err, unique };

	memcpy(s->hdr->in_out, &oh, sizeof(oh));
	s->hdr->payload_sz = 0;
	s->unique = unique;
	s->op = URING_CMD_COMMIT_AND_FETCH;
	(void)bdev_aio_cmd_submit(r->bd, s->issuer, &s->cmd);
}

/* On the issuer: S's command completed, with a request (RES 0) or
 * without (the connection ends, or REGISTER failed). */
static void slot_done(struct bdev_aio_cmd *c, int res)
{
	struct slot *s = (struct slot *)c;
	struct fring *r = fring;
	struct in_header h;
	size_t psz, opsz;

	if (res < 0) {
		/* -ENOTCONN, -ECANCELED: unmounted or aborted; else the kernel
		 * refused the slot and goes on through /dev/fuse */
		if (s->op == URING_CMD_REGISTER && res != -ENOTCONN && res != -ECANCELED)
			atomic_store(&r->failed, res);
		return;
	}
	memcpy(&h, s->hdr->in_out, sizeof(h));
	psz = s->hdr->payload_sz;
	if (h.len < sizeof(h) + psz || psz > r->payload_sz ||
	    (opsz = h.len - sizeof(h) - psz) > sizeof(s->hdr->op_in)) {
		slot_fail(r, s, h.unique, EIO);
		return;
	}
	/* in_header, first argument, payload: the layout of /dev/fuse */
	s->req = s->payload - sizeof(h) - opsz;
	s->reqlen = h.len;
	memcpy(s->req, &h, sizeof(h));
	memcpy(s->req + sizeof(h), s->hdr->op_in, opsz);
	s->unique = h.unique;
	slot_hash(r, s);
	atomic_fetch_add_explicit(&r->nring, 1, memory_order_relaxed);
	if (served_here(&h, h.len)) {
		struct fuse_buf fb = { .size = s->reqlen, .mem = s->req };

		cur_slot = s;
		fuse_session_process_buf(r->se, &fb);
		cur_slot = NULL;
		return;
	}
	s->job.run = slot_run;
	if (vmfsd_fuse_defer(&s->job) && slot_unhash(r, h.unique))
		slot_fail(r, s, h.unique, EIO);
}

/* After the INIT reply that offered io_uring: the slots, registered with
 * the kernel through the issuers.  MAX_WRITE and MAX_PAGES as replied: the
 * kernel wants every payload buffer as large as its largest request. */
static int ring_start(struct fring *r, uint32_t max_write, uint32_t max_pages)
{
	unsigned nq = possible_cpus(), nis = bdev_aio_issuer_count(r->bd);
	unsigned per = SLOTS_MAX / nq, i, t;
	struct slot **table;
	size_t psz, stride;
	uint8_t *m;

	per = per > SLOTS_PER_QUEUE ? SLOTS_PER_QUEUE : per < 2 ? 2 : per;
	psz = max_pages ? (size_t)max_pages * 4096 : 32 * 4096;    /* the kernel's default */
	psz = psz > max_write ? psz : max_write;
	psz = psz > 8192 ? psz : 8192;
	psz = (psz + 4095) & ~(size_t)4095;
	r->payload_sz = psz;
	r->nslots = nq * per;
	stride = SLOT_HEADROOM + psz;
	r->maplen = stride * r->nslots;
	r->map = mmap(NULL, r->maplen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (r->map == MAP_FAILED) {
		r->map = NULL;
		return -ENOMEM;
	}
	for (t = 1; t < 2 * r->nslots; t <<= 1)
		;
	r->tmask = t - 1;
	table = calloc(t, sizeof(*table));
	r->slots = calloc(r->nslots, sizeof(*r->slots));
	if (!table || !r->slots) {
		free(table);
		return -ENOMEM;
	}
	/* (replies on other threads look at the table from now on) */
	__atomic_store_n(&r->table, table, __ATOMIC_RELEASE);
	m = r->map;
	for (i = 0; i < r->nslots; i++) {
		struct slot *s = &r->slots[i];

		s->cmd.prep = slot_prep;
		s->cmd.done = slot_done;
		s->hdr = (struct slot_hdr *)(m + stride * i);
		s->payload = m + stride * i + SLOT_HEADROOM;
		s->iov[0] = (struct iovec){ s->hdr, sizeof(*s->hdr) };
		s->iov[1] = (struct iovec){ s->payload, psz };
		s->qid = (uint16_t)(i / per);
		s->issuer = s->qid % nis;
		s->op = URING_CMD_REGISTER;
	}
	for (i = 0; i < r->nslots; i++) {
		int e = bdev_aio_cmd_submit(r->bd, r->slots[i].issuer, &r->slots[i].cmd);

		if (e)
			return e;
	}
	return 0;
}

/* libfuse's INIT reply, as a single write; with FUSE_OVER_IO_URING added
 * when the kernel offered it and the issuers can carry the commands. */
static ssize_t init_reply(struct fring *r, int fd, const struct iovec *iov, int count)
{
	struct {
		struct out_header oh;
		struct init_out in;
	} m;
	size_t n = 0;
	bool offer;
	ssize_t w;
	int i;

	for (i = 0; i < count; i++) {
		if (n + iov[i].iov_len > sizeof(m))
			return writev(fd, iov, count);
		memcpy((char *)&m + n, iov[i].iov_base, iov[i].iov_len);
		n += iov[i].iov_len;
	}
	if (n != sizeof(m) || m.oh.error)
		return writev(fd, iov, count);
	offer = (r->kflags & INIT_EXT) && (r->kflags2 & INIT2_OVER_IO_URING) &&
		bdev_aio_issuer_count(r->bd) > 0;
	if (offer) {
		if (!(m.in.flags & INIT_EXT))
			m.in.flags2 = 0;        /* not meant by libfuse */
		m.in.flags |= INIT_EXT;
		m.in.flags2 |= INIT2_OVER_IO_URING;
	}
	w = write(fd, &m, sizeof(m));
	/* the kernel has taken the reply (written synchronously), so the
	 * slots can go; without them it goes on through /dev/fuse */
	if (w == (ssize_t)sizeof(m) && offer) {
		int e = ring_start(r, m.in.max_write,
				   m.in.flags & INIT_MAX_PAGES ? (m.in.max_pages ? m.in.max_pages : 1) : 0);

		if (e)
			atomic_store(&r->failed, e);
	}
	return w;
}

/* A reply into the slot that holds its request, and the slot back to the
 * kernel.  Any thread. */
static ssize_t slot_reply(struct fring *r, struct slot *s, const struct iovec *iov, int count)
{
	struct out_header oh;
	size_t n = 0, skip = sizeof(oh);
	int i, e;

	memcpy(&oh, iov[0].iov_base, sizeof(oh));
	for (i = 0; i < count; i++) {
		const uint8_t *p = (const uint8_t *)iov[i].iov_base + skip;
		size_t len = iov[i].iov_len - skip;

		skip = 0;
		if (n + len > r->payload_sz) {
			/* larger than any request the kernel sends: refuse */
			oh.error = -EIO;
			n = 0;
			break;
		}
		if (p != s->payload + n)
			memcpy(s->payload + n, p, len);
		n += len;
	}
	oh.len = (uint32_t)(sizeof(oh) + n);
	memcpy(s->hdr->in_out, &oh, sizeof(oh));
	s->hdr->payload_sz = (uint32_t)n;
	s->op = URING_CMD_COMMIT_AND_FETCH;
	e = bdev_aio_cmd_submit(r->bd, s->issuer, &s->cmd);
	if (e) {
		errno = ENOENT;         /* the loop ends: the kernel aborts it */
		return -1;
	}
	return (ssize_t)oh.len;
}

/* The session's writev: every reply and notification libfuse sends. */
static ssize_t ring_writev(int fd, struct iovec *iov, int count, void *userdata)
{
	struct fring *r = fring;
	const struct out_header *oh = iov[0].iov_base;

	(void)userdata;
	if (r && count > 0 && iov[0].iov_len >= sizeof(*oh)) {
		bool slots = __atomic_load_n(&r->table, __ATOMIC_ACQUIRE) != NULL;
		struct slot *s = slots && oh->unique ? slot_unhash(r, oh->unique) : NULL;

		if (s)
			return slot_reply(r, s, iov, count);
		if (r->want && r->init_seen && oh->unique == r->init_unique)
			return init_reply(r, fd, iov, count);
	}
	return writev(fd, iov, count);
}

static ssize_t ring_read(int fd, void *buf, size_t len, void *userdata)
{
	(void)userdata;
	return read(fd, buf, len);
}

void *vmfsd_fuse_reply_room(size_t *cap)
{
	if (!cur_slot)
		return NULL;
	*cap = fring->payload_sz;
	return cur_slot->payload;
}

void vmfsd_fuse_ring_stats(uint64_t *ring_requests, uint64_t *dev_requests, int *err)
{
	struct fring *r = fring;

	*ring_requests = r ? atomic_load(&r->nring) : 0;
	*dev_requests = r ? atomic_load(&r->ndev) : 0;
	*err = r ? atomic_load(&r->failed) : 0;
}

void vmfsd_fuse_ring_free(void)
{
	struct fring *r = fring;

	if (!r)
		return;
	fring = NULL;
	/* The slots' memory goes, their addresses stay reserved until the
	 * process ends: a request the kernel assigned to a slot before the
	 * unmount is copied in by task work that runs in the issuer's next
	 * io_uring_enter, and the issuer's ring lives until bdev_close.  That
	 * late copy then fails (EFAULT) instead of landing in whatever the
	 * addresses were given to next. */
	if (r->map)
		(void)mmap(r->map, r->maplen, PROT_NONE,
			   MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	free(r->table);
	free(r->slots);
	pthread_mutex_destroy(&r->tlock);
	free(r);
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
		if (fring) {
			atomic_fetch_add_explicit(&fring->ndev, 1, memory_order_relaxed);
			if (h->opcode == OP_INIT && (size_t)r >= sizeof(*h) + sizeof(struct init_in)) {
				const struct init_in *in = (const void *)(h + 1);

				/* (read by the worker that replies: the job queue
				 * orders it) */
				fring->kflags = in->flags;
				fring->kflags2 = in->flags2;
				fring->init_unique = h->unique;
				fring->init_seen = true;
			}
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

/* Takes the session's replies (ring_writev), to offer FUSE over io_uring
 * at INIT if WANT and to send replies into slots; once per process. */
static int ring_setup(struct fuse_session *se, struct bdev *bd, int fd, bool want)
{
	static const struct fuse_custom_io io = { .writev = ring_writev, .read = ring_read };
	struct fring *r;
	int e;

	if (fring)
		return -EBUSY;
	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->se = se;
	r->bd = bd;
	r->fd = fd;
	r->want = want;
	pthread_mutex_init(&r->tlock, NULL);
	e = fuse_session_custom_io(se, &io, fd);
	if (e) {
		free(r);
		return e < 0 ? e : -EINVAL;
	}
	fring = r;
	return 0;
}

int vmfsd_fuse_loop(struct fuse_session *se, struct bdev *bd, unsigned max_threads,
		    unsigned spin_us, bool uring)
{
	struct floop *l;
	int fl, r;
	unsigned i;

	if (bdev_is_iscsi(bd) || bdev_crash_enabled(bd))
		return -EOPNOTSUPP;     /* (bdev_aio_watch cannot) */
	if (max_threads < 1)
		max_threads = 1;
	r = ring_setup(se, bd, fuse_session_fd(se), uring);
	if (r)
		return r;
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
