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
#include <stdint.h>

#define BDEV_ALIGN 4096u

struct bdev;

enum bdev_open_flags {
	BDEV_RDONLY = 1u << 0,
	BDEV_EXCL = 1u << 1,    /* block devices: O_EXCL (refuse if mounted) */
};

/* Opens PATH.  Errors: -ENOENT, -EACCES, -ENOTBLK (neither a regular file
 * nor a block device), -EOPNOTSUPP (no O_DIRECT, e.g. tmpfs), -EINVAL
 * (size not a multiple of 4 KiB), other negative errnos from the system. */
int bdev_open(const char *path, unsigned flags, struct bdev **out);
void bdev_close(struct bdev *bd);

uint64_t bdev_size(const struct bdev *bd);
int bdev_fd(const struct bdev *bd);
int bdev_is_blockdev(const struct bdev *bd);
const char *bdev_path(const struct bdev *bd);

int bdev_pread(struct bdev *bd, void *buf, size_t len, uint64_t off);
int bdev_pwrite(struct bdev *bd, const void *buf, size_t len, uint64_t off);
/* Makes every completed write durable (fdatasync of the file / cache flush). */
int bdev_flush(struct bdev *bd);
/* Writes LEN zero bytes at OFF (regular files: may punch/zero-range). */
int bdev_zero(struct bdev *bd, uint64_t off, uint64_t len);

/* Aligned buffers for O_DIRECT I/O. */
void *bdev_alloc(size_t len);
void bdev_free(void *p);

/* Byte-range advisory lock (OFD, so per open file, not per process): used to
 * refuse a second mount on the same kernel.  Returns -EAGAIN when held. */
int bdev_trylock_range(struct bdev *bd, uint64_t off, uint64_t len, int exclusive);

/* Fault injection (named points, compiled in; see docs/testing.md). */
enum bdev_fault {
	BDEV_FAULT_NONE = 0,
	BDEV_FAULT_WRITE_EIO,   /* every write fails with -EIO */
	BDEV_FAULT_ALL_EIO,     /* every read and write fails with -EIO */
};
void bdev_fault_set(struct bdev *bd, enum bdev_fault f);

#endif
