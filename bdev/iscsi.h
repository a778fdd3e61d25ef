/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The iSCSI backend of bdev (bdev/iscsi.c), private to bdev/: a LUN named by
 * an iscsi:// URL, reached through libiscsi from userspace.  bdev.c keeps the
 * device-independent parts (range checks, fault injection, the write gate)
 * and hands the transfers to these functions.
 */
#ifndef VMFSD_BDEV_ISCSI_H
#define VMFSD_BDEV_ISCSI_H

#include <stddef.h>
#include <stdint.h>

struct bdev_iscsi;

/* PERSISTENT RESERVE OUT service actions (SPC-3 6.14.2). */
enum {
	SCSI_PR_REGISTER = 0,
	SCSI_PR_RESERVE = 1,
	SCSI_PR_CLEAR = 3,
	SCSI_PR_PREEMPT = 4,
	SCSI_PR_REGISTER_AND_IGNORE = 6,
};
struct bdev_aio;

/* GATE(ARG, WRITE) is asked again right before a command leaves for the
 * target (a request may have waited in the queue while the host fenced). */
typedef int (*bdev_iscsi_gate_fn)(void *arg, int write);

int bdev_iscsi_open(const char *url, int rdonly, bdev_iscsi_gate_fn gate, void *gate_arg,
		    struct bdev_iscsi **out, uint64_t *size);
void bdev_iscsi_close(struct bdev_iscsi *li);
void bdev_iscsi_set_timeout(struct bdev_iscsi *li, unsigned ms);
int bdev_iscsi_rw(struct bdev_iscsi *li, int write, void *buf, size_t len, uint64_t off);
int bdev_iscsi_flush(struct bdev_iscsi *li);
int bdev_iscsi_submit(struct bdev_iscsi *li, struct bdev_aio *a);
void bdev_iscsi_drain(struct bdev_iscsi *li);
int bdev_iscsi_caw(struct bdev_iscsi *li, uint64_t off, const void *expect, const void *newval,
		   void *actual);
int bdev_iscsi_pr(struct bdev_iscsi *li, int action, uint64_t key, uint64_t sa_key);
int bdev_iscsi_pr_keys(struct bdev_iscsi *li, uint64_t *keys, unsigned max, unsigned *n,
		       uint64_t *holder, int *type);
/* For ats.c: the COMPARE AND WRITE of BD, after the write gate. */
struct bdev;
int bdev_scsi_caw(struct bdev *bd, uint64_t off, const void *expect, const void *newval,
		  void *actual);
uint32_t bdev_iscsi_block_size(const struct bdev_iscsi *li);

#endif
