/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The FUSE low-level operation table of vmfsd.  The session's userdata must
 * be the mounted struct fs.
 */
#ifndef VMFSD_FUSE_OPS_H
#define VMFSD_FUSE_OPS_H

#define FUSE_USE_VERSION 314
#include <fuse_lowlevel.h>

#include "fs/fs.h"

const struct fuse_lowlevel_ops *vmfsd_fuse_ops(void);
/* The session the ops run in, for cache invalidations (call once, before
 * the session loop). */
void vmfsd_fuse_set_session(struct fuse_session *se);
/* fs_mount_opts.cache_hook: drops what the kernel caches by our locks
 * (every entry for INO 0, else INO's attributes) through the session. */
void vmfsd_fuse_cache_hook(void *arg, uint64_t ino);

#endif
