/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * vmfsd's own FUSE request loop for file-backed volumes (fuse_loop.c): the
 * device's I/O issuer threads read /dev/fuse and serve READ, WRITE, LOOKUP,
 * GETATTR, FORGET, GETXATTR outside "user.", and CREATE, UNLINK and RELEASE
 * that would not wait, themselves; everything else runs in a pool of
 * worker threads.  Where the kernel offers FUSE over io_uring, the
 * requests come through the issuers' rings instead of /dev/fuse.
 */
#ifndef VMFSD_FUSE_LOOP_H
#define VMFSD_FUSE_LOOP_H

#include <stdbool.h>
#include <stdint.h>

#define FUSE_USE_VERSION 314
#include <fuse_lowlevel.h>

#include "bdev/bdev.h"

/* Serves SE until it is unmounted or told to exit, with at most
 * MAX_THREADS workers; the issuers spin SPIN_US after activity while
 * none of their disk I/O is in flight
 * (bdev_aio_watch).  With URING, requests go through io_uring instead of
 * /dev/fuse where the kernel offers it (Linux 6.14 and later, with the
 * fuse module's enable_uring set).  Returns 0, -EOPNOTSUPP when BD cannot
 * do it (iSCSI, crash model: use fuse_session_loop_mt then; nothing was
 * read), or another negative errno.  Once per process: the session's
 * replies go through the loop until vmfsd_fuse_ring_free, which is for
 * after fuse_session_destroy (the kernel may write into the request slots
 * until the session is unmounted; their addresses stay reserved after
 * that, for a late copy to fail harmlessly). */
int vmfsd_fuse_loop(struct fuse_session *se, struct bdev *bd, unsigned max_threads,
		    unsigned spin_us, bool uring);
/* Requests that came through io_uring and through /dev/fuse so far, and
 * the error that kept io_uring from being used (0 if none). */
void vmfsd_fuse_ring_stats(uint64_t *ring_requests, uint64_t *dev_requests, int *err);
void vmfsd_fuse_ring_free(void);

/* A piece of work for the worker pool (embed it first in your own). */
struct vmfsd_fuse_job {
	struct vmfsd_fuse_job *next;
	void (*run)(struct vmfsd_fuse_job *j);
};
/* Queues J for a worker; -EINVAL when the loop does not run. */
int vmfsd_fuse_defer(struct vmfsd_fuse_job *j);

/* On the issuer, while it serves a request: takes the receive buffer that
 * holds [P, P + LEN) away from the loop (which reads on into another), so
 * that the data can be used in place after the handler returns.  Returns
 * a handle for vmfsd_fuse_put_buf, or NULL (not on the issuer, P not in
 * the current request, every buffer out). */
void *vmfsd_fuse_take_buf(const void *p, size_t len);
void vmfsd_fuse_put_buf(void *h);

/* On the issuer, while it serves a request that came through io_uring:
 * the buffer the reply's data goes back in (page aligned, *CAP bytes),
 * valid until the reply; a reply whose data is already there is not
 * copied.  NULL otherwise. */
void *vmfsd_fuse_reply_room(size_t *cap);

#endif
