// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * The sparse copier (copy.h): the offline path of Storage vMotion, clones
 * and deployments.  The source's data regions are listed first with
 * SEEK_DATA/SEEK_HOLE (a hole is never read: on a thin disk that is most
 * of the virtual size), cut into COPY_CHUNK pieces, and COPY_THREADS
 * threads each take the next piece, pread it and pwrite it at the same
 * offset.  Several requests in flight keep a FUSE datastore busy on both
 * ends, as qemu-img convert keeps 8 requests in flight.  A piece that is
 * all zeros is not written: on a thin target it stays a hole, on a thick
 * one fallocate already made it read as zeros.  The caller opens extents
 * with O_DIRECT (no page cache on either side: the data is read once and
 * written once, and the hosts of a datastore share no cache).
 *
 * copy_file_range is not used: vmfsd's FUSE daemon does not implement it,
 * so the kernel would fall back to a page-cache copy of one page at a time
 * (measured in BENCHMARKS.md "Storage vMotion").
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "copy.h"

/* 8 requests of 2 MiB in flight, what qemu-img convert keeps in flight
 * (its default of 8 coroutines and 2 MiB buffers); on the 2-CPU test
 * machine 8 x 8 MiB was slower (the FUSE daemon's threads compete with
 * the copy's) and 4 x 4 MiB no faster than qemu-img (BENCHMARKS.md
 * "Storage vMotion") */
#define COPY_CHUNK (2u << 20)
#define COPY_THREADS 8
/* O_DIRECT wants buffers aligned to the logical block size; 4096 covers
 * every device and vmfsd */
#define COPY_ALIGN 4096

const char *vm_prov_name(enum vm_prov p)
{
	return p == VM_PROV_EAGER ? "eagerzeroed" : p == VM_PROV_THICK ? "thick" : "thin";
}

int vm_prov_parse(const char *s, enum vm_prov *p)
{
	if (!s)
		return -EINVAL;
	if (!strcmp(s, "thin"))
		*p = VM_PROV_THIN;
	else if (!strcmp(s, "thick"))
		*p = VM_PROV_THICK;
	else if (!strcmp(s, "eagerzeroed"))
		*p = VM_PROV_EAGER;
	else
		return -EINVAL;
	return 0;
}

struct piece {
	uint64_t off, len;
	bool hole;                   /* eager-zeroed: write zeros, read nothing */
};

struct job {
	int in, out;
	struct piece *p;
	size_t n, cap;
	atomic_size_t next;
	atomic_uint_fast64_t done;
	atomic_int rc;
	int err_at_write;            /* which side failed, for the message */
	uint64_t err_off;
	pthread_mutex_t mu;
};

static int add_piece(struct job *j, uint64_t off, uint64_t len, bool hole)
{
	while (len) {
		uint64_t l = len < COPY_CHUNK ? len : COPY_CHUNK;

		if (j->n == j->cap) {
			size_t cap = j->cap ? j->cap * 2 : 256;
			struct piece *p = realloc(j->p, cap * sizeof(*p));

			if (!p)
				return -ENOMEM;
			j->p = p;
			j->cap = cap;
		}
		j->p[j->n++] = (struct piece){off, l, hole};
		off += l;
		len -= l;
	}
	return 0;
}

/* Calls fn(arg, off, len, is_data) for each region of fd below size. */
static int walk_regions(int fd, uint64_t size, int (*fn)(void *, uint64_t, uint64_t, bool),
			void *arg)
{
	uint64_t pos = 0;
	int rc;

	while (pos < size) {
		off_t d = lseek(fd, (off_t)pos, SEEK_DATA), h;

		if (d < 0 && errno == ENXIO)
			return fn(arg, pos, size - pos, false);
		if (d < 0 && (errno == EINVAL || errno == EOPNOTSUPP))
			return fn(arg, pos, size - pos, true);   /* no hole support */
		if (d < 0)
			return -errno;
		if ((uint64_t)d >= size)
			return fn(arg, pos, size - pos, false);
		if ((uint64_t)d > pos && (rc = fn(arg, pos, (uint64_t)d - pos, false)))
			return rc;
		h = lseek(fd, d, SEEK_HOLE);
		if (h < 0)
			return -errno;
		if ((uint64_t)h > size)
			h = (off_t)size;
		if ((rc = fn(arg, (uint64_t)d, (uint64_t)(h - d), true)))
			return rc;
		pos = (uint64_t)h;
	}
	return 0;
}

static int count_data(void *arg, uint64_t off, uint64_t len, bool data)
{
	(void)off;
	if (data)
		*(uint64_t *)arg += len;
	return 0;
}

int vm_data_bytes(int fd, uint64_t size, uint64_t *out)
{
	*out = 0;
	return walk_regions(fd, size, count_data, out);
}

struct plan {
	struct job *j;
	bool eager;
	uint64_t total;
};

static int plan_region(void *arg, uint64_t off, uint64_t len, bool data)
{
	struct plan *p = arg;

	if (!data && !p->eager)
		return 0;
	p->total += len;
	return add_piece(p->j, off, len, !data);
}

static bool all_zero(const char *b, size_t len)
{
	static const char z[64];

	if (len < 64)
		return !memcmp(b, z, len);
	return !memcmp(b, z, 64) && !memcmp(b, b + 64, len - 64);
}

static void fail(struct job *j, int rc, bool at_write, uint64_t off)
{
	pthread_mutex_lock(&j->mu);
	if (!atomic_load(&j->rc)) {
		j->err_at_write = at_write;
		j->err_off = off;
		atomic_store(&j->rc, rc);
	}
	pthread_mutex_unlock(&j->mu);
}

static void *worker(void *arg)
{
	struct job *j = arg;
	char *buf = NULL;

	if (posix_memalign((void **)&buf, COPY_ALIGN, COPY_CHUNK)) {
		fail(j, -ENOMEM, false, 0);
		return NULL;
	}
	for (;;) {
		size_t i = atomic_fetch_add(&j->next, 1);
		const struct piece *p;
		size_t got = 0;

		if (i >= j->n || atomic_load(&j->rc))
			break;
		p = &j->p[i];
		if (p->hole) {
			memset(buf, 0, p->len);
		} else {
			while (got < p->len) {
				ssize_t k = pread(j->in, buf + got, p->len - got, (off_t)(p->off + got));

				if (k < 0 && errno == EINTR)
					continue;
				if (k <= 0) {
					/* a short file reads as zeros past its end */
					if (k == 0) {
						memset(buf + got, 0, p->len - got);
						got = p->len;
						break;
					}
					fail(j, -errno, false, p->off + got);
					goto out;
				}
				got += (size_t)k;
			}
			if (all_zero(buf, p->len)) {
				atomic_fetch_add(&j->done, p->len);
				continue;
			}
		}
		for (size_t put = 0; put < p->len;) {
			ssize_t k = pwrite(j->out, buf + put, p->len - put, (off_t)(p->off + put));

			if (k < 0 && errno == EINTR)
				continue;
			if (k <= 0) {
				fail(j, k < 0 ? -errno : -EIO, true, p->off + put);
				goto out;
			}
			put += (size_t)k;
		}
		atomic_fetch_add(&j->done, p->len);
	}
out:
	free(buf);
	return NULL;
}

int vm_copy_sparse(int in, int out, uint64_t size, enum vm_prov prov, vm_copy_cb cb, void *arg,
		   struct vm_err *err)
{
	struct job j = {.in = in, .out = out};
	struct plan pl = {.j = &j, .eager = prov == VM_PROV_EAGER};
	pthread_t th[COPY_THREADS];
	int nth = 0, rc;

	pthread_mutex_init(&j.mu, NULL);
	atomic_init(&j.next, 0);
	atomic_init(&j.done, 0);
	atomic_init(&j.rc, 0);
	if (prov == VM_PROV_THIN) {
		if (ftruncate(out, (off_t)size))
			return vm_errf(err, -errno, "truncate to %llu bytes: %s",
				       (unsigned long long)size, strerror(errno));
	} else if (size && fallocate(out, 0, 0, (off_t)size)) {
		return vm_errf(err, -errno, "fallocate %llu bytes: %s", (unsigned long long)size,
			       strerror(errno));
	}
	rc = walk_regions(in, size, plan_region, &pl);
	if (rc) {
		free(j.p);
		return vm_errf(err, rc, "listing the data regions: %s", strerror(-rc));
	}
	for (; nth < COPY_THREADS && (size_t)nth < j.n; nth++)
		if (pthread_create(&th[nth], NULL, worker, &j))
			break;
	if (j.n && !nth) {
		free(j.p);
		return vm_errf(err, -EAGAIN, "cannot start a copy thread");
	}
	/* the workers run; report progress until they are done */
	for (;;) {
		struct timespec ts = {0, 250 * 1000 * 1000};
		bool busy = atomic_load(&j.next) < j.n && !atomic_load(&j.rc);

		if (cb)
			cb(arg, atomic_load(&j.done), pl.total);
		if (!busy)
			break;
		nanosleep(&ts, NULL);
	}
	for (int i = 0; i < nth; i++)
		pthread_join(th[i], NULL);
	free(j.p);
	rc = atomic_load(&j.rc);
	if (rc)
		return vm_errf(err, rc, "%s at offset %llu: %s", j.err_at_write ? "writing" : "reading",
			       (unsigned long long)j.err_off, strerror(-rc));
	if (cb)
		cb(arg, pl.total, pl.total);
	if (fsync(out))
		return vm_errf(err, -errno, "fsync: %s", strerror(errno));
	return 0;
}
