/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * vmfsd's answer to a fence of its host (fence.c): kill every process that
 * holds a file open on the mount, then tell the host agent.  Started before
 * the volume is mounted; the hook goes into fs_mount_opts.fence_hook.
 */
#ifndef VMFSD_FENCE_H
#define VMFSD_FENCE_H

/* MNT: the absolute mount point; AGENT_SOCKET: vmfs-hostd's socket, or
 * NULL.  Starts the responder thread; *HOOK_ARG is fence_arg. */
int vmfsd_fence_start(const char *mnt, const char *agent_socket, void **hook_arg);
/* After the FUSE mount: learn its mount id, so that the kill spares files
 * that only share the path prefix. */
void vmfsd_fence_mounted(void);
/* fs_mount_opts.fence_hook: posts a semaphore, nothing else. */
void vmfsd_fence_hook(void *arg, int reason);

#endif
