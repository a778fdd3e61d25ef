/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Internal interface between the files of the host agent's operations
 * (ops.c lists them): the timeouts they share and the functions one of them
 * defines and another calls.  main.c sees only hostd.h.
 */
#ifndef VMFS_HOSTD_OPS_H
#define VMFS_HOSTD_OPS_H

#include <stdarg.h>
#include <stdint.h>
#include <sys/types.h>

#include "hostd.h"

/* QMP answers within milliseconds; 10 s covers a TCG guest busy on both
 * host CPUs of a test machine */
#define QMP_TIMEOUT_MS 10000

/* how long `quit` may take before SIGKILL: QEMU flushes its disks on quit,
 * and a flush of a direct-I/O raw image has nothing cached: seconds at most */
#define QUIT_GRACE_MS 15000

/* QEMU's -daemonize parent returns once the machine is set up; under TCG
 * with a 1 GiB guest that is well under a second here.  60 s bounds a hung
 * start-up (a FUSE mount that stopped answering). */
#define START_TIMEOUT_MS 60000

/* a suspend writes guest RAM at disk speed: 10 min bounds even 64 GiB at
 * ~100 MB/s */
#define MIGRATE_TIMEOUT_MS 600000

/* another request on the same VM (a shutdown waiting for its guest) */
#define VMLOCK_WAIT_MS (120 * 1000)

/* after a cont, how long a stop for the same I/O error is waited for: the
 * retried writes go out at once and fail within one datastore round trip
 * (milliseconds on FUSE) */
#define CONT_SETTLE_MS 1000

/* spawn.c: descriptors handed to QEMU */
struct files {
	int fd[VM_MAX_FILES];     /* disks, kernel, initrd, log, lock record */
	int n;
};

/* util.c */
int64_t now_ms(void);
int64_t wall_ms(void);
void sleep_ms(int ms);
json_t *reply_err(int rc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
json_t *reply_ok(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int write_text(const char *path, const char *text);
int read_text(const char *path, char *buf, size_t size);
/* a rename or unlink in DIR durable now (vmfsd commits on a directory's
 * fsync, else within its commit interval) */
int sync_dir(const char *dir);
const char *req_str(json_t *req, const char *key);
/* Records an event (and logs it): TYPE is a dotted name ("vm.powered-on",
 * "ha.restart"), VMX the VM's .vmx path or NULL for host events. */
void agent_event(const struct agent *a, const char *vmx, const char *type, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* The last MAX events (0: all kept), oldest first, optionally of one VM. */
json_t *events_read(const struct agent *a, const char *vmx, size_t max);
/* vmctx.c */
void sfile(const struct vmctx *v, const char *name, char *buf, size_t size);
void vmctx_close(struct vmctx *v);
int vmctx_open(struct agent *a, const char *path, bool lock, struct vmctx *v,
		      struct vm_err *err);
pid_t vm_qemu_pid(const struct vmctx *v);
bool wait_pid_gone(pid_t pid, int ms);
void vm_log_sync(const struct vmctx *v);
void vm_cleanup(struct agent *a, struct vmctx *v, const char *why);
json_t *qmp_simple(struct vmctx *v, const char *cmd, json_t *args, json_t **ret,
			  struct vm_err *err);
int vm_run_status(struct vmctx *v, char *buf, size_t size);
void vm_io_status(struct vmctx *v, char *buf, size_t size);
bool file_exists_at(int dirfd, const char *name);
void vmss_name(const struct vmctx *v, char *buf, size_t size);
json_t *vm_state(struct agent *a, struct vmctx *v, bool detail);
/* ENOENT reply: VM not running here; says where it runs if elsewhere */
json_t *reply_not_here(struct agent *a, struct vmctx *v);
/* the fence note of a VM's state folder ({"volume","at"}), or NULL */
json_t *vm_fence_note(const struct vmctx *v);
json_t *vm_state_fenced(struct vmctx *v, const char *error);
/* inventory.c */
int inventory_edit(struct agent *a, const char *add, const char *remove);
json_t *op_create(struct agent *a, json_t *req);
/* a new file NAME in DIRFD holding TEXT, fsynced (O_EXCL) */
int write_new_file(int dirfd, const char *name, const char *text, struct vm_err *err);
/* removes FOLDER's files and FOLDER (a create or an import that failed) */
void remove_folder(const char *folder);
/* vmfsctl export / import: OVF and OVA packages (ovf.c) */
json_t *ovf_export(struct agent *a, struct vmctx *v, json_t *req);
json_t *ovf_import(struct agent *a, json_t *req);
json_t *destroy_vm(struct agent *a, struct vmctx *v);
json_t *list_vms(struct agent *a);
/* the datastores of this host: capacity, free, provisioned (inventory.c) */
json_t *datastores_list(struct agent *a);
/* the datastore mounted at ROOT: capacity, free, provisioned, overcommitted */
json_t *ds_summary(struct agent *a, const char *root);
/* a VM named by its name, folder name or ID (`list`): its .vmx path */
int inventory_resolve(struct agent *a, const char *arg, char *vmx, size_t size, struct vm_err *err);
/* spawn.c */
void files_close(struct files *f);
int open_in_folder(int dirfd, const char *name, int flags, const char *key,
			  struct vm_err *err);
void busy_holder(int dirfd, const char *name, char *host, size_t hsize, char *desc,
			size_t dsize);
void fmt_time(int64_t t, char *buf, size_t size);
void rotate_log(int dirfd, const char *name);
int spawn_qemu(struct vmctx *v, struct strv *argv, const int *src, const int *dst, int n,
		      pid_t *qemu_pid, struct vm_err *err);
struct task;
/* Waits for QEMU's migration (to a file, or an incoming one) to end,
 * reporting its progress to T (NULL: none): an outgoing one from QEMU's
 * counts, an incoming one from the offset of IN_FD (the file QEMU reads
 * through a duplicate of it; -1: none). */
int wait_migration(struct qmp *q, bool incoming, struct task *t, int in_fd, struct vm_err *err);
/* Saves a stopped guest's state into FD (a .vmss, a snapshot's .vmsn):
 * QMP migrate to the descriptor, progress to T (NULL: none). */
int save_state(struct qmp *q, int fd, struct task *t, struct vm_err *err);
/* save_state (SAVE) or the wait for QEMU's load from FD (an incoming
 * migration from that file), as task OP of VM: a progress bar for
 * vmfsctl, a record for `tasks` */
int state_task(struct agent *a, struct qmp *q, const char *op, const char *vm, int fd, bool save,
	       struct vm_err *err);
/* power.c */
json_t *power_on(struct agent *a, struct vmctx *v, json_t *req);
/* power-on that loads the memory state STATE_FILE (a snapshot's; kept) */
json_t *power_on_state(struct agent *a, struct vmctx *v, json_t *req, const char *state_file);
json_t *power_off(struct agent *a, struct vmctx *v);
json_t *shutdown_vm(struct agent *a, struct vmctx *v, json_t *req);
json_t *reset_vm(struct agent *a, struct vmctx *v);
json_t *suspend_vm(struct agent *a, struct vmctx *v);
json_t *continue_vm(struct agent *a, struct vmctx *v, pid_t pid);
/* dsview.c: the cluster a VM folder lives on (docs/ha.md) */
struct dsview {
	char root[PATH_MAX];          /* the vmfsd mount's root */
	json_t *hosts;                /* its user.vmfsd.hosts document */
	const char *self;             /* the vmfsd host name of that mount */
	bool fenced;
};
enum ds_hstate { DS_UNKNOWN, DS_LIVE, DS_DEAD, DS_BROKEN };
json_t *ds_hosts_read(const char *root);
/* -ENOENT: PATH is not on a vmfsd cluster mount */
int ds_open(const char *path, struct dsview *d);
void ds_close(struct dsview *d);
/* host NAME's state; *AGO_MS: since it was declared dead (-1 unknown) */
enum ds_hstate ds_host(const struct dsview *d, const char *name, int64_t *ago_ms);
const char *ds_hstate_name(enum ds_hstate s);
/* 1: NAME's on-disk lock is held, by HOST; 0 free; -ENODATA no cluster */
int ds_lock_holder(int dirfd, const char *name, char *host, size_t hsize);
int ds_fd_lock_holder(int fd, char *host, size_t hsize);
/* ha.c: the protected list (docs/ha.md) */
int ha_protect(struct agent *a, struct vmctx *v);
void ha_unprotect(struct agent *a, struct vmctx *v);
/* only this host's entry (a VM that left by live migration) */
void ha_unprotect_here(struct agent *a, struct vmctx *v, const char *why);
/* when HOST started the VM, by HOST's protected list (ms, 0: unknown) */
int64_t ha_since(const struct vmctx *v, const char *host);
/* an agent's record on a datastore (.vmfsd/ha/agents/<host>: its first
 * 4 KiB), and with EVENTS its ring of recent HA events */
json_t *ha_agent_record(const char *path, json_t **events);
/* the vmfsd mounts of this host (or --datastore): at most AGENT_MAX_DS */
#define AGENT_MAX_DS 16
/* the same, WHY saying so in its event (a Storage vMotion: the path moved) */
void ha_unprotect_why(struct agent *a, struct vmctx *v, const char *why);
int ha_datastores(struct agent *a, char roots[][PATH_MAX], int max);
json_t *ha_status(struct agent *a);
void vm_watch_io_error(struct agent *a, struct vmctx *v, const char *vmx, const char *st);
/* monitor.c: VM monitoring (restart in place) */
struct mon_entry;
struct mon_sweep {
	struct mon_entry **v;
	size_t n, cap;
};
/* the sweep: a running VM whose flock LFD it holds (closed by run) */
void monitor_sweep_add(struct mon_sweep *s, const char *sdir, const char *vmx, pid_t pid, int lfd);
/* QMP heartbeat of all added VMs at once, then each one's checks */
void monitor_sweep_run(struct agent *a, struct mon_sweep *s, bool startup);
/* QEMU of the VM is gone: clean up, and restart it if it failed */
void monitor_vm_ended(struct agent *a, const char *sdir, const char *vmx);
bool monitor_restart_due(const char *sdir);
/* forks the restart worker, which takes over the flock LFD */
void monitor_restart_spawn(struct agent *a, const char *sdir, const char *vmx, int lfd);
/* at every power-on; RESTART: by the monitor (keeps the history) */
void monitor_power_on(struct agent *a, struct vmctx *v, bool restart);
/* the VM is being stopped on purpose (kill-volume): never restart it
 * after this, until its next power-on; WHY goes into the event */
void monitor_no_restart(const char *sdir, const char *why);
/* a pending restart cancelled (power-off of a VM waiting for one) */
bool monitor_cancel(struct agent *a, struct vmctx *v, const char *why);
void monitor_info(struct agent *a, struct vmctx *v, json_t *o);
/* migrate.c */
void migration_publish(struct agent *a);
void migrate_progress(int cfd, const char *phase, json_t *fields);
/* monitor.c's question when a QEMU of ours ended: did the VM leave this
 * host by live migration (or run elsewhere now)?  Then it was cleaned up
 * here, not restarted, and only this host's HA entry went. */
bool migrate_left(struct agent *a, const char *sdir, const char *vmx);
/* migrate.c: ask host FROM's agent to migrate REL (relative to ROOT) to
 * TO, progress lines passed on to CFD */
json_t *migrate_remote(const char *root, const char *from, const char *rel, const char *to, int cfd);
/* maint.c: maintenance mode (docs/ha.md §4b) */
bool maint_active(const struct agent *a, int64_t *since_ms);
/* the refusal of WHAT (a power-on, an incoming migration) in maintenance
 * mode, or NULL */
json_t *maint_refuse(const struct agent *a, const char *vmx, const char *what);
/* snapshot.c (docs/vm.md "Snapshots") */
json_t *snapshot_cmd(struct agent *a, struct vmctx *v, json_t *req);
/* Opens disk I's snapshot deltas (top first) with FLAGS for QEMU: each
 * descriptor goes through PASS, the chain into L; FAILED gets the file
 * that could not be opened (-EBUSY: another host holds it). */
int snap_chain_open(struct vmctx *v, const struct vmsd *sd, size_t i, const char *extent,
		    int flags, struct vm_launch *l, int (*pass)(void *ctx, int fd), void *ctx,
		    char *failed, size_t fsize, struct vm_err *err);
/* the delta files in V's current chains (what a migration hands over) */
int snap_delta_files(struct vmctx *v, char names[][VM_NAME_MAX + 8], size_t max, size_t *n,
		     struct vm_err *err);
/* the refusal of WHAT (migrate-storage, clone) for a VM with snapshots, or NULL */
/* Runs qemu-img with ARGV (no shell); KEEP (NKEEP) are descriptors it
 * inherits (named /proc/self/fd/N in ARGV).  With "-p", its progress goes
 * to task T (NULL: none) as DONE of TOTAL bytes in PHASE; the tail of its
 * output is the error message. */
int qemu_img_run(struct task *t, const char *phase, uint64_t total, char *const argv[],
		 const int *keep, int nkeep, struct vm_err *err);
/* HINT: what to do instead (NULL: delete the snapshots) */
json_t *snap_refuse(struct vmctx *v, const char *what, const char *hint);
/* snapshot delete --all, when the VM has snapshots: NULL once done, or
 * the failure's reply */
json_t *snap_consolidate(struct agent *a, struct vmctx *v);
/* {count, oldest_created, oldest_age_s, size, level} or NULL (none) */
json_t *snap_summary(int dirfd, const char *vm_name);
/* the same of the VM whose .vmx is REL below datastore ROOT (ha status) */
json_t *snap_summary_rel(const char *root, const char *rel);
/* fence.c */
json_t *kill_volume(struct agent *a, json_t *req, const char *mount);

#endif
