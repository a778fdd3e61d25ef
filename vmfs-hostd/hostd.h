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

#define AGENT_REAPED_MAX 256

struct agent {
	const char *host;
	char state_dir[PATH_MAX];
	char socket_path[PATH_MAX];
	const char *qemu;
	enum vm_accel accel;          /* default for VMs whose .vmx says auto */
	int shutdown_timeout;         /* seconds of ACPI grace before power-off */
	struct vm_host_res res;
	/* HA (ha.c, docs/ha.md): what this host offers for restarts, and the
	 * datastores named with --datastore besides the vmfsd mounts found */
	int cap_vcpus;
	long long cap_mem_mib;
	bool ha;
	const char *datastores[16];
	unsigned nds;
	pid_t pid;                    /* the agent's main process */
	/* VM monitoring defaults (docs/vm.md "VM monitoring"; a .vmx may
	 * override all but the backoff) */
	struct {
		bool enabled;         /* --vm-monitoring on|off */
		int max_restarts;     /* --max-restarts */
		int window;           /* --restart-window, seconds */
		int backoff;          /* --restart-backoff, seconds before the 2nd restart */
		int hang_timeout;     /* --hang-timeout, seconds */
	} mon;
	/* the last children main.c reaped (QEMUs are reparented to the
	 * agent): a sweep forked later tells a killed QEMU from one whose
	 * guest powered off.  The sweeps themselves are not recorded (one a
	 * second would push QEMUs out). */
	struct { pid_t pid; int status; } reaped[AGENT_REAPED_MAX];
	unsigned nreaped;
	/* live migration (migrate.c): the control listener "ADDR:PORT" this
	 * agent publishes on its datastores, the address QEMU streams reach,
	 * and the secret a source must show (empty: migration disabled) */
	char mig_listen[128];
	char mig_addr[64];
	char mig_token[40];
	/* the connection of the request being served (in its child), -1 in
	 * the agent: long operations stream progress lines on it (task.c) */
	int client_fd;
};

/* The signal that ended child PID, if the agent reaped it killed; else 0. */
int agent_reaped_signal(const struct agent *a, pid_t pid);
/* The wait status of child PID if the agent reaped it: true and *status. */
bool agent_reaped_status(const struct agent *a, pid_t pid, int *status);

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

/* The HA loop (ha.c): runs for ever in a child of the agent. */
void ha_main(struct agent *a);
/* Live migration (migrate.c): the secret, vmfsctl's `migrate` (progress
 * lines on CFD before the reply), another agent's migrate-incoming. */
void agent_migration_init(struct agent *a);
json_t *agent_migrate(struct agent *a, json_t *req, int cfd);
/* Maintenance mode (maint.c): enter (evacuates, progress lines on CFD),
 * exit, status. */
json_t *agent_maintenance(struct agent *a, json_t *req, int cfd);
/* Another agent asks (its secret shown) to migrate one of our VMs away
 * (balance.c's --apply); vmfsctl's `balance` (balance.c). */
json_t *agent_migrate_out(struct agent *a, json_t *req, int cfd);
json_t *agent_balance(struct agent *a, json_t *req, int cfd);
void agent_migrate_incoming(struct agent *a, json_t *req, int cfd, const char *peer);

#endif
