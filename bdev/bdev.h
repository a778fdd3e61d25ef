/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * bdev: the LUN.  A regular (image) file or a block device opened with
 * O_DIRECT, so that no host ever serves another host's data from a page
 * cache.  All I/O goes through io_uring (one small ring per calling thread:
 * the FUSE worker threads each submit their own requests, so there is no
 * shared submission lock on the hot path).  Offsets and lengths must be
 * multiples of 512; buffers that are not 4 KiB aligned are bounced.
 */
#ifndef VMFSD_BDEV_H
#define VMFSD_BDEV_H

#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>

#define BDEV_ALIGN 4096u

struct bdev;

enum bdev_open_flags {
	BDEV_RDONLY = 1u << 0,
	BDEV_EXCL = 1u << 1,    /* block devices: O_EXCL (refuse if mounted) */
};

/* Opens PATH: an image file, a block device, or an iSCSI LUN named by a
 * URL iscsi://[USER[%PASSWORD]@]HOST[:PORT]/TARGET-IQN/LUN (libiscsi, no
 * kernel initiator; bdev/iscsi.c).  Errors: -ENOENT, -EACCES, -ENOTBLK
 * (neither a regular file nor a block device), -EOPNOTSUPP (no O_DIRECT,
 * e.g. tmpfs), other negative errnos from the system.  iSCSI: -EINVAL (not
 * a valid URL), -EHOSTUNREACH (no login to the target), -EMEDIUMTYPE (a
 * read-write open found no working atomic COMPARE AND WRITE, or logical
 * blocks other than 512 bytes: unfit for a shared volume). */
int bdev_open(const char *path, unsigned flags, struct bdev **out);
/* 1 if PATH names an iSCSI LUN (iscsi://...) rather than a file. */
int bdev_is_url(const char *path);
/* A human explanation of a bdev_open error for PATH, or NULL when
 * strerror says it well enough (for the tools' messages). */
const char *bdev_open_hint(const char *path, int err);
void bdev_close(struct bdev *bd);

uint64_t bdev_size(const struct bdev *bd);
int bdev_fd(const struct bdev *bd);
int bdev_is_blockdev(const struct bdev *bd);
const char *bdev_path(const struct bdev *bd);   /* iSCSI: password masked */
int bdev_is_iscsi(const struct bdev *bd);
/* D, the I/O timeout of docs/cluster.md §2, as the cluster layer derives it
 * from the superblock.  iSCSI: every command fails (its session is
 * dropped) a tenth under D after it was queued.  Files: no effect. */
void bdev_set_io_timeout(struct bdev *bd, unsigned ms);

int bdev_pread(struct bdev *bd, void *buf, size_t len, uint64_t off);
int bdev_pwrite(struct bdev *bd, const void *buf, size_t len, uint64_t off);
/* One of several independent I/Os issued together (bdev_rw_many). */
struct bdev_vec {
	void *buf;
	size_t len;
	uint64_t off;
};
/* Issues the N reads (WRITE 0) or writes (1) in V at once, with the same
 * checks as bdev_pread/bdev_pwrite each, and returns when every one has
 * completed: 0, or the first error met (the others still completed).  For
 * many small blocks whose order does not matter (a journal checkpoint,
 * lock records): one device round trip instead of N.  iSCSI LUNs and the
 * crash model issue them one after the other. */
int bdev_rw_many(struct bdev *bd, int write, const struct bdev_vec *v, unsigned n);
/* Makes every completed write durable (fdatasync of the file / cache flush). */
int bdev_flush(struct bdev *bd);
/* Writes LEN zero bytes at OFF (regular files: may punch/zero-range). */
int bdev_zero(struct bdev *bd, uint64_t off, uint64_t len);

/* Aligned buffers for O_DIRECT I/O. */
void *bdev_alloc(size_t len);
void bdev_free(void *p);
/* How many freed buffers of LEN's size class wait for reuse. */
size_t bdev_buf_cached(size_t len);

/* Asynchronous I/O for the hot data path: one shared ring per device and
 * a reaper thread that calls CB from its own context when the whole request
 * is done (res = 0 or a negative errno).  The
 * point is that FUSE worker threads go straight back to reading requests
 * instead of sleeping on their I/O, and completions are reaped in batches. */
struct bdev_aio {
	void (*cb)(struct bdev_aio *a, int res);
	void *buf;
	size_t len;
	uint64_t off;
	int write;
	/* The callback never waits for the device (it takes no lock that is
	 * held across device I/O): a backend may then run it on its own I/O
	 * thread instead of handing it to a completion thread (bdev/iscsi.c:
	 * one context switch less per read). */
	bool cb_inline;
	/* Optional, for a callback that takes a lock which may be held
	 * across device I/O: tried first on the backend's I/O thread, it
	 * returns 0 when it completed A (CB is then not called) and -EAGAIN
	 * when it would have to wait for that lock (CB then runs on a
	 * completion thread).  Backends without an I/O thread of their own
	 * ignore it. */
	int (*cb_try)(struct bdev_aio *a, int res);
	size_t done;            /* private */
	struct bdev_aio *next;  /* private */
};
int bdev_aio_submit(struct bdev *bd, struct bdev_aio *a);
/* How many issuer threads the asynchronous path starts (1-4; 0: one per
 * two CPUs, at least one, at most four).  -EBUSY once they run. */
int bdev_aio_set_issuers(struct bdev *bd, unsigned n);
/* The issuer threads of the asynchronous path (one per two CPUs, up to four)
 * also poll FD: READY(ARG) runs on one of them whenever FD has become
 * readable (it reads FD until
 * it would block, or returns true to be called again after the issuer's
 * next turn; it must never wait for anything an asynchronous
 * request's completion could be holding up: the issuer is the thread that
 * completes them).  Requests READY submits go out together at the end of
 * its turn.  After activity, while none of its own disk I/O is in flight,
 * the issuer spins up to SPIN_US microseconds before it sleeps (0: never).
 * One watch per device, READY may run on
 * several issuers at once; file-backed devices
 * only (-EOPNOTSUPP on iSCSI LUNs and with the crash model).
 * bdev_aio_unwatch returns once READY can no longer run (never call it from
 * READY itself).  bdev_aio_on_issuer: is the caller one of those threads? */
int bdev_aio_watch(struct bdev *bd, int fd, bool (*ready)(void *arg), void *arg,
		   unsigned spin_us);
void bdev_aio_unwatch(struct bdev *bd);
bool bdev_aio_on_issuer(void);

/* A command of the watcher's own on an issuer's io_uring, such as a FUSE
 * request slot (fuse/fuse_loop.c): PREP fills the SQE, a 128-byte one
 * (IORING_SETUP_SQE128), on the issuer when it goes out; DONE gets the
 * completion's result on that issuer, while the watch is set: once
 * bdev_aio_unwatch has returned, completions of commands are dropped
 * unseen, and so are commands still queued.  A command may stay on the
 * ring for ever (it completes when the kernel has something for it) and
 * bdev_aio_drain does not wait for commands. */
struct io_uring_sqe;
struct bdev_aio_cmd {
	void (*prep)(struct bdev_aio_cmd *c, struct io_uring_sqe *sqe);
	void (*done)(struct bdev_aio_cmd *c, int res);
	/* Set by PREP: the CPU on which the submission wakes a task (a FUSE
	 * reply wakes its caller), or -1.  An issuer on that CPU sleeps
	 * after submitting it instead of spinning (aio_issuer). */
	int wake_cpu;
	struct bdev_aio_cmd *next;      /* private */
};
/* Queues C for issuer number ISSUER (0 to bdev_aio_issuer_count() - 1)
 * from any thread.  -ESHUTDOWN without a watch, -EOPNOTSUPP when that
 * issuer's ring has no 128-byte SQEs (kernels before 5.19), -EINVAL for
 * an issuer that does not exist. */
int bdev_aio_cmd_submit(struct bdev *bd, unsigned issuer, struct bdev_aio_cmd *c);
/* The issuer threads that take commands (0 before the first asynchronous
 * request or watch starts them, or when their rings cannot). */
unsigned bdev_aio_issuer_count(struct bdev *bd);
/* Waits until every submitted asynchronous request has completed. */
void bdev_aio_drain(struct bdev *bd);
int bdev_crash_enabled(const struct bdev *bd);

/* Byte-range advisory locks (OFD, so per open file, not per process), the
 * one place that knows how "in use on this kernel" is seen: an ATS in flight
 * (bdev_ats_ofd_ops), an mkfs writing the device or an fsck repairing it
 * holds one.  LEN 0 means to the end of the device.
 * bdev_trylock_range: -EAGAIN when another open file holds a conflicting lock.
 * bdev_range_locked: 1 if another open file holds a lock that would conflict
 * with a write lock on the range, 0 if not, <0 on error.
 * bdev_unlock_range: drops what bdev_trylock_range took. */
int bdev_trylock_range(struct bdev *bd, uint64_t off, uint64_t len, int exclusive);
int bdev_range_locked(struct bdev *bd, uint64_t off, uint64_t len);
int bdev_unlock_range(struct bdev *bd, uint64_t off, uint64_t len);

/* ATS (atomic test-and-set): compare-and-write of one 512-byte sector, the
 * only primitive the cluster protocol builds on besides read, write and
 * flush (docs/cluster.md §1).  If the sector at OFF equals
 * EXPECT, writes NEWVAL there and returns 0; otherwise writes nothing,
 * copies the current content to ACTUAL (when not NULL) and returns
 * -ECANCELED.  OFF must be a multiple of 512; the buffers need no alignment.
 * Other errors: -EINVAL, -ERANGE, -EIO (also when the device's writes fail
 * through bdev_fault_set, whatever the comparison would have said: ATS is a
 * write command, like SCSI COMPARE AND WRITE, and a fenced host must see
 * every ATS fail), -EOPNOTSUPP (the device's implementation is not
 * available yet). */
#define BDEV_ATS_SECTOR 512u
int bdev_ats(struct bdev *bd, uint64_t off, const void *expect, const void *newval,
	     void *actual);
/* N ATS of distinct sectors OFF[i] at once (EXPECT, NEWVAL and ACTUAL hold N
 * sectors each, one after the other; no alignment needed): RES[i] gets
 * what bdev_ats would have returned for sector i (0, -ECANCELED with
 * ACTUAL filled, or an error: then sector i was not written, or, for an
 * error of the write itself, may have been).  Each sector is one atomic
 * compare-and-write, as with bdev_ats; there is none across sectors, and
 * they may land in any order.  Returns -EINVAL (an offset not a sector)
 * or -ERANGE before doing anything, else 0. */
int bdev_ats_many(struct bdev *bd, unsigned n, const uint64_t *off, const uint8_t *expect,
		  const uint8_t *newval, uint8_t *actual, int *res);
/* bdev_ats_many for sectors that each begin a 4 KiB block (-EINVAL if
 * not) which nobody else may write while the ATS can succeed: an object's
 * lock sector in front of the object's own metadata, which only a valid
 * holder of that lock writes.  Emulated ATS (an image file, a device
 * without COMPARE AND WRITE) reads and writes the whole block, putting
 * back what it read behind the sector; a SCSI device gets sector ATS. */
int bdev_ats_many_block(struct bdev *bd, unsigned n, const uint64_t *off, const uint8_t *expect,
			const uint8_t *newval, uint8_t *actual, int *res);

/* The seam for ATS implementations, chosen per device by bdev_ats_ops_get:
 *  - "ofd":  an OFD write lock on exactly that sector around
 *            read-compare-write (plus an in-process lock, since OFD locks
 *            do not exclude threads sharing one open file).  Correct only
 *            when every host is a process of the same kernel: image files,
 *            loop devices, a local disk.
 *  - "scsi": SG_IO COMPARE AND WRITE (opcode 0x89) for LUNs seen by several
 *            machines; chosen for SCSI block devices whose Block Limits VPD
 *            page reports COMPARE AND WRITE support.  Not implemented yet:
 *            returns -EOPNOTSUPP, so such a device fails to mount rather
 *            than getting an emulation that would not exclude other
 *            machines.
 *  - "iscsi": COMPARE AND WRITE through libiscsi for iscsi:// LUNs
 *            (bdev/iscsi.c), proved to work by a trial command at open;
 *            the multi-machine path today (docs/cluster.md §8). */
struct bdev_ats_ops {
	const char *name;
	int (*cmp_write)(struct bdev *bd, uint64_t off, const void *expect,
			 const void *newval, void *actual);
	/* bdev_ats_many, where the device can do better than one at a time
	 * (NULL: bdev_ats_many issues them one after the other) */
	int (*cmp_write_many)(struct bdev *bd, unsigned n, const uint64_t *off,
			      const uint8_t *expect, const uint8_t *newval, uint8_t *actual,
			      int *res);
};
extern const struct bdev_ats_ops bdev_ats_ofd_ops;
extern const struct bdev_ats_ops bdev_ats_scsi_ops;
extern const struct bdev_ats_ops bdev_ats_iscsi_ops;   /* iscsi:// LUNs */
const struct bdev_ats_ops *bdev_ats_ops_get(struct bdev *bd);

/* SPC-3 persistent reservations (iSCSI LUNs only; -EOPNOTSUPP otherwise),
 * type Write Exclusive - Registrants Only: every registered host may
 * write, an unregistered or preempted one gets RESERVATION CONFLICT, which
 * bdev reports as -EIO on data and ATS (-EACCES from these functions).
 * See docs/cluster.md §8. */
int bdev_pr_register(struct bdev *bd, uint64_t key);
int bdev_pr_unregister(struct bdev *bd, uint64_t key);
int bdev_pr_reserve(struct bdev *bd, uint64_t key);
int bdev_pr_preempt(struct bdev *bd, uint64_t key, uint64_t victim);
/* Registers KEY, then CLEARs every registration and the reservation (mkfs:
 * a new volume starts with none of the old one's keys). */
int bdev_pr_clear(struct bdev *bd, uint64_t key);
/* The key offline tools (fsck repairing) register so that a reservation
 * left by dead hosts does not refuse their writes. */
#define BDEV_PR_MAINT_KEY 0x56464d41494e5400ull  /* "VFMAINT" */
/* Registered keys (up to MAX in KEYS, *N the total) and the reservation
 * holder's key (0: no reservation). */
int bdev_pr_read(struct bdev *bd, uint64_t *keys, unsigned max, unsigned *n, uint64_t *holder);

/* Fault injection (named points, compiled in; see docs/testing.md). */
enum bdev_fault {
	BDEV_FAULT_NONE = 0,
	BDEV_FAULT_WRITE_EIO,   /* every write fails with -EIO */
	BDEV_FAULT_ALL_EIO,     /* every read and write fails with -EIO */
	BDEV_FAULT_FROZEN,      /* every I/O waits until the fault changes (a
				 * hung path), then obeys the new setting */
};
void bdev_fault_set(struct bdev *bd, enum bdev_fault f);
/* A check run before every write (and ATS) on this device: the cluster
 * layer's "may this host still write?" (hb_write_check), so a thread that
 * wakes up late never writes before the fence thread had its turn.
 * A non-zero return fails the write with -EIO. */
void bdev_set_write_gate(struct bdev *bd, int (*gate)(void *), void *arg);

/* Ends BDEV_FAULT_FROZEN (and nothing else: a fence set meanwhile stays). */
void bdev_fault_thaw(struct bdev *bd);
/* Fault injection: the writes of one bdev_rw_many batch land one after
 * the other, US microseconds apart (0: all at once), as a busy array may
 * complete them: for tests of what other hosts read meanwhile. */
void bdev_fault_batch_gap(struct bdev *bd, unsigned us);

/* Power-cut simulation (regular files only; crash tests).  Writes since the
 * last flush are remembered as a volatile cache; bdev_crash_cut() makes the
 * device dead (every later I/O fails with -EIO) and bdev_crash_resolve()
 * decides, driven by SEED, what of that cache reached the medium, and
 * writes exactly that into the file.  The same seed gives the same image. */
enum bdev_crash_mode {
	BDEV_CRASH_DROP_ALL,    /* nothing since the last flush survives */
	BDEV_CRASH_KEEP_SOME,   /* each write survives whole or not at all */
	BDEV_CRASH_TORN,        /* each 512-byte sector of each write on its own */
};
int bdev_crash_enable(struct bdev *bd);
/* The power fails when the (N+1)th write from now is issued (it is lost). */
void bdev_crash_cut_after(struct bdev *bd, uint64_t nwrites);
void bdev_crash_cut(struct bdev *bd);
int bdev_crash_is_cut(const struct bdev *bd);
uint64_t bdev_crash_writes(const struct bdev *bd);     /* writes issued so far */
int bdev_crash_resolve(struct bdev *bd, enum bdev_crash_mode mode, uint64_t seed);

#endif
