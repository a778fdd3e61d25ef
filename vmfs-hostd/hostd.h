/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Internal interface of vmfs-hostd, the host agent: the agent's settings,
 * the per-VM context a request works on (the VM folder, its checked
 * configuration, its state folder under the agent's --state-dir and the
 * flock that serializes operations on one VM), and the operations that
 * ops.c implements for main.c's request loop.  Requests and replies are
 * one JSON object per line on the agent's unix socket (docs/vm.md).
 */
#ifndef VMFS_HOSTD_H
#define VMFS_HOSTD_H

#include <limits.h>
#include <stdbool.h>

#include <jansson.h>

#include "vm/vm.h"

struct agent {
	const char *host;
	char state_dir[PATH_MAX];
	char socket_path[PATH_MAX];
	const char *qemu;
	enum vm_accel accel;          /* default for VMs whose .vmx says auto */
	int shutdown_timeout;         /* seconds of ACPI grace before power-off */
	struct vm_host_res res;
	/* the last children main.c reaped (QEMUs are reparented to the
	 * agent): a sweep forked later tells a killed QEMU from one whose
	 * guest powered off */
	struct { pid_t pid; int status; } reaped[64];
	unsigned nreaped;
	/* the connection of the request being served (in its child), -1 in
	 * the agent: long operations stream progress lines on it (task.c) */
	int client_fd;
};

/* The signal that ended child PID, if the agent reaped it killed; else 0. */
int agent_reaped_signal(const struct agent *a, pid_t pid);

struct vmctx {
	char folder[PATH_MAX];        /* realpath of the VM folder */
	char vmx_path[PATH_MAX];      /* folder/<vm>.vmx: the VM's identity */
	int dirfd;
	struct vm_config cfg;
	bool cfg_ok;
	char key[17];                 /* hash of vmx_path */
	char sdir[PATH_MAX];          /* state_dir/vms/<key> */
	int lockfd;                   /* flock on sdir/lock, -1 when not held */
};

/* log to stderr as "vmfs-hostd[host]: ..." */
void agent_log(const struct agent *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* One request (an object with "cmd"); returns the reply (new reference). */
json_t *agent_request(struct agent *a, json_t *req);

/* Checks every VM known in the state folder: re-attach to running QEMUs,
 * clean up after those that ended (lock record, sockets).  Non-blocking:
 * skips VMs that a request is working on. */
void agent_reconcile(struct agent *a, bool startup);

#endif
