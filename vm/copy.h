/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The sparse file copier of libvmfs-vm: what Storage vMotion of a stopped
 * VM, clones and template deployment use to copy flat extents (and the
 * other files of a VM folder).  It reads only the data regions of the
 * source (SEEK_DATA/SEEK_HOLE), in large chunks on several threads, skips
 * chunks that are all zeros (so a thick source becomes thin when asked),
 * and provisions the target thin (ftruncate), thick (fallocate) or
 * eager-zeroed (fallocate, then zeros written over every byte the source
 * does not fill).  Progress counts bytes of data, not of the virtual size.
 * Library code: returns 0 or a negative errno, never prints.
 */
#ifndef VMFSD_VM_COPY_H
#define VMFSD_VM_COPY_H

#include <stdint.h>

#include "vm.h"

enum vm_prov { VM_PROV_THIN = 0, VM_PROV_THICK, VM_PROV_EAGER };

const char *vm_prov_name(enum vm_prov p);
/* "thin", "thick", "eagerzeroed" */
int vm_prov_parse(const char *s, enum vm_prov *p);

/* Bytes of FD below SIZE that are data (not holes), by SEEK_DATA/SEEK_HOLE;
 * a filesystem without them counts everything as data. */
int vm_data_bytes(int fd, uint64_t size, uint64_t *out);

/* Called about four times a second from the copying thread: DONE of TOTAL
 * bytes (TOTAL = the data to copy; for eager-zeroed, the whole size). */
typedef void (*vm_copy_cb)(void *arg, uint64_t done, uint64_t total);

/* Copies SIZE bytes of IN to OUT (an empty file, opened for writing),
 * provisioned as PROV, then fsyncs OUT.  -ENOSPC when the target's
 * filesystem is full (the caller removes the partial target). */
int vm_copy_sparse(int in, int out, uint64_t size, enum vm_prov prov, vm_copy_cb cb, void *arg,
		   struct vm_err *err);

#endif
