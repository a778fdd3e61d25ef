/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * What vmfsd asks of the kernel at FUSE_INIT, in one place: fuse_ops.c's
 * init uses it, and so does bench/fuse_floor, whose figures stand for
 * "the same connection without vmfsd's work" only while both ask the same.
 */
#ifndef VMFSD_FUSE_CONN_H
#define VMFSD_FUSE_CONN_H

#ifndef FUSE_USE_VERSION
#define FUSE_USE_VERSION 314
#endif
#include <fuse_lowlevel.h>

static inline void vmfsd_fuse_conn_init(struct fuse_conn_info *conn)
{
	/* 1 MiB requests: one file block per request on sequential I/O. */
	conn->max_write = 1u << 20;
	/* Enough in-flight async direct I/O for QD32 workloads from QEMU/fio. */
	conn->max_background = 128;
	conn->congestion_threshold = 96;
	if (conn->capable & FUSE_CAP_ASYNC_DIO)
		conn->want |= FUSE_CAP_ASYNC_DIO;
	if (conn->capable & FUSE_CAP_PARALLEL_DIROPS)
		conn->want |= FUSE_CAP_PARALLEL_DIROPS;
	conn->want &= ~(unsigned)(FUSE_CAP_WRITEBACK_CACHE | FUSE_CAP_SPLICE_READ |
				  FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE);
}

#endif
