// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * The host agent's request dispatch and its sweep.  agent_request runs one
 * vmfsctl request (a JSON object with "cmd") in a forked child of the
 * agent: it resolves the VM (vmctx.c, with the per-VM flock for the
 * commands that change it) and calls the operation (inventory.c, power.c,
 * fence.c).  agent_reconcile is the sweep main.c runs every second in a
 * child: re-attach to running QEMUs, copy their serial logs, notice a VM
 * paused by an I/O error, clean up after QEMUs that ended, and restart in
 * place those that failed (monitor.c).  The files:
 *   util.c       clock, replies, small state files
 *   vmctx.c      the VM context and its state
 *   inventory.c  create, destroy, list, the inventory
 *   spawn.c      opening the VM's files, starting QEMU, migration waits
 *   power.c      power-on in steps, power-off, shutdown, reset, suspend,
 *                continue after an I/O error
 *   fence.c      kill-volume and the fence notice from vmfsd
 *   monitor.c    VM monitoring: QMP heartbeat, restart in place
 *   storage.c    migrate-storage, clone, template, deploy (task.c: tasks)
 *   snapshot.c   snapshots: create, list, revert, delete (vm/vmsd.c: the tree)
 */
#include <dirent.h>
#include <errno.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "ops.h"
#include "storage.h"

/* ---------------- the commands ---------------- */

static json_t *cmd_create(struct agent *a, json_t *req)
{
	return op_create(a, req);
}

static json_t *cmd_list(struct agent *a, json_t *req)
{
	json_t *r = list_vms(a);

	(void)req;
	if (maint_active(a, NULL))
		json_object_set_new(r, "maintenance", json_true());
	return r;
}

static json_t *cmd_kill_volume(struct agent *a, json_t *req)
{
	return kill_volume(a, req, req_str(req, "path"));
}

static json_t *cmd_ha_status(struct agent *a, json_t *req)
{
	(void)req;
	return ha_status(a);
}

static json_t *cmd_agent_info(struct agent *a, json_t *req)
{
	json_t *r;

	(void)req;
	r = json_pack("{s:b,s:s,s:i,s:s,s:s,s:s,s:i,s:I,s:b,s:b}", "ok", 1, "host", a->host,
			 "pid", (int)getppid(), "state_dir", a->state_dir, "accel",
			 vm_accel_name(a->accel), "auto_accel",
			 vm_accel_name(vm_accel_resolve(VM_ACCEL_AUTO)), "cpus", (int)a->res.cpus,
			 "memory_mib", (json_int_t)a->res.mem_mib, "kvm_usable", vm_kvm_usable(),
			 "nested", vm_nested());
	json_object_set_new(r, "vm_monitoring",
			    json_pack("{s:b,s:i,s:i,s:i,s:i}", "enabled", a->mon.enabled, "max_restarts",
				      a->mon.max_restarts, "window_s", a->mon.window, "backoff_s",
				      a->mon.backoff, "hang_timeout_s", a->mon.hang_timeout));
	return r;
}

/* the event log, optionally of one VM (a folder that may be gone) */
static json_t *cmd_events(struct agent *a, json_t *req)
{
	const char *path = req_str(req, "path");
	json_int_t count = json_integer_value(json_object_get(req, "count"));
	char vmx[PATH_MAX] = "";
	struct vm_err err;
	struct vmctx v;
	json_t *r;

	if (path) {
		if (vmctx_open(a, path, false, &v, &err) == 0)
			snprintf(vmx, sizeof(vmx), "%s", v.vmx_path);
		else if (v.vmx_path[0])
			snprintf(vmx, sizeof(vmx), "%s", v.vmx_path);
		else
			snprintf(vmx, sizeof(vmx), "%s", path);
		vmctx_close(&v);
	}
	r = json_pack("{s:b,s:s}", "ok", 1, "host", a->host);
	json_object_set_new(r, "events", events_read(a, vmx[0] ? vmx : NULL,
						     count > 0 ? (size_t)count : 0));
	return r;
}

static json_t *cmd_datastores(struct agent *a, json_t *req)
{
	(void)req;
	return datastores_list(a);
}

/* long operations: their progress lines go to the client before the reply */
static json_t *cmd_migrate(struct agent *a, json_t *req)
{
	return agent_migrate(a, req, a->client_fd);
}

static json_t *cmd_maintenance(struct agent *a, json_t *req)
{
	return agent_maintenance(a, req, a->client_fd);
}

static json_t *cmd_balance(struct agent *a, json_t *req)
{
	return agent_balance(a, req, a->client_fd);
}

/* unregister works on a folder that is gone or broken too */
static json_t *cmd_unregister(struct agent *a, json_t *req)
{
	const char *path = req_str(req, "path");
	char buf[PATH_MAX];
	struct vm_err err;
	struct vmctx v;

	if (!path || !realpath(path, buf))
		return reply_err(ENOENT, "unregister: %s: %s", path ? path : "(none)", strerror(errno));
	if (vmctx_open(a, path, false, &v, &err) == 0 && vm_qemu_pid(&v)) {
		vmctx_close(&v);
		return reply_err(EBUSY, "%s is running: power it off first", v.vmx_path);
	}
	inventory_edit(a, NULL, v.vmx_path[0] ? v.vmx_path : buf);
	vmctx_close(&v);
	return reply_ok("unregistered %s", v.vmx_path[0] ? v.vmx_path : buf);
}

static json_t *vm_info(struct agent *a, struct vmctx *v, json_t *req)
{
	json_t *r = vm_state(a, v, true);
	struct dsview d;

	(void)req;
	json_object_set_new(r, "ok", json_true());
	/* the datastore it lives on: vmfsctl warns when thin disks
	 * overcommit it, as for list and create */
	if (!ds_open(v->folder, &d)) {
		json_object_set_new(r, "datastores", json_pack("[o]", ds_summary(a, d.root)));
		ds_close(&d);
	}
	return r;
}

static json_t *vm_register(struct agent *a, struct vmctx *v, json_t *req)
{
	struct vm_err err;
	int rc = 0;

	(void)req;
	/* check the disks too: a VM that cannot power on should not look
	 * registered and fine */
	for (size_t i = 0; !rc && i < v->cfg.ndisks; i++) {
		struct vmdk_desc d;

		if (!v->cfg.disks[i].cdrom)
			rc = vmdk_load(v->dirfd, v->cfg.disks[i].file, &d, &err);
	}
	if (rc)
		return reply_err(rc, "register: %s", err.msg);
	inventory_edit(a, v->vmx_path, NULL);
	return reply_ok("registered %s", v->vmx_path);
}

/* running but paused (an I/O error, a stop): continue it; otherwise resume
 * from the .vmss */
static json_t *vm_resume(struct agent *a, struct vmctx *v, json_t *req)
{
	pid_t pid = vm_qemu_pid(v);

	if (pid)
		return continue_vm(a, v, pid);
	json_object_set_new(req, "resume", json_true());
	return power_on(a, v, req);
}

static json_t *vm_console(struct agent *a, struct vmctx *v, json_t *req)
{
	char p[PATH_MAX + 16], ln[VM_NAME_MAX + 8];

	(void)req;
	sfile(v, "serial.sock", p, sizeof(p));
	if (!vm_qemu_pid(v))
		return reply_not_here(a, v);
	snprintf(ln, sizeof(ln), "%s.log", v->cfg.name);
	return json_pack("{s:b,s:s,s:s}", "ok", 1, "serial", p, "log", ln);
}

static json_t *vm_power_off(struct agent *a, struct vmctx *v, json_t *req)
{
	(void)req;
	return power_off(a, v);
}

static json_t *vm_reset(struct agent *a, struct vmctx *v, json_t *req)
{
	(void)req;
	return reset_vm(a, v);
}

static json_t *vm_suspend(struct agent *a, struct vmctx *v, json_t *req)
{
	(void)req;
	return suspend_vm(a, v);
}

static json_t *vm_destroy(struct agent *a, struct vmctx *v, json_t *req)
{
	(void)req;
	return destroy_vm(a, v);
}

/* Commands without a VM context */
static const struct {
	const char *name;
	json_t *(*run)(struct agent *a, json_t *req);
} agent_cmds[] = {
	{"create", cmd_create},
	{"list", cmd_list},
	{"kill-volume", cmd_kill_volume},
	{"agent-info", cmd_agent_info},
	{"unregister", cmd_unregister},
	{"datastores", cmd_datastores},
	{"events", cmd_events},
	{"ha-status", cmd_ha_status},
	{"tasks", tasks_list},
	{"migrate", cmd_migrate},
	{"maintenance", cmd_maintenance},
	{"balance", cmd_balance},
};

/* Commands on one VM: "path" resolved and its configuration loaded first;
 * `lock`: the per-VM flock is held (operations that change the VM) */
static const struct {
	const char *name;
	bool lock;
	json_t *(*run)(struct agent *a, struct vmctx *v, json_t *req);
} vm_cmds[] = {
	{"info", false, vm_info},
	{"register", false, vm_register},
	{"console", false, vm_console},
	{"power-on", true, power_on},
	{"resume", true, vm_resume},
	{"shutdown", true, shutdown_vm},
	{"power-off", true, vm_power_off},
	{"reset", true, vm_reset},
	{"suspend", true, vm_suspend},
	{"destroy", true, vm_destroy},
	{"migrate-storage", true, storage_migrate},
	{"clone", true, storage_clone},
	{"template", true, storage_template},
	{"deploy", true, storage_deploy},
	{"snapshot", true, snapshot_cmd},
};

json_t *agent_request(struct agent *a, json_t *req)
{
	const char *cmd = req_str(req, "cmd");
	struct vm_err err;
	struct vmctx v;
	json_t *r;
	size_t i;
	int rc;

	if (!cmd)
		return reply_err(EINVAL, "request without \"cmd\"");
	/* a VM named by its name or ID instead of a path (vmfsctl sends
	 * what is not a path as it is) */
	const char *path = req_str(req, "path");

	if (path && path[0] != '/' && strcmp(cmd, "create")) {
		char vmx[PATH_MAX];

		rc = inventory_resolve(a, path, vmx, sizeof(vmx), &err);
		if (rc)
			return reply_err(rc, "%s", err.msg);
		json_object_set_new(req, "path", json_string(vmx));
	}
	for (i = 0; i < sizeof(agent_cmds) / sizeof(agent_cmds[0]); i++)
		if (!strcmp(cmd, agent_cmds[i].name))
			return agent_cmds[i].run(a, req);
	for (i = 0; i < sizeof(vm_cmds) / sizeof(vm_cmds[0]); i++)
		if (!strcmp(cmd, vm_cmds[i].name))
			break;
	if (i == sizeof(vm_cmds) / sizeof(vm_cmds[0]))
		return reply_err(EINVAL, "unknown command '%s'", cmd);
	rc = vmctx_open(a, req_str(req, "path"), vm_cmds[i].lock, &v, &err);
	if (rc) {
		/* a fenced datastore may refuse even reads: `info` still says
		 * what the state folder knows */
		r = vm_cmds[i].run == vm_info ? vm_state_fenced(&v, err.msg) : NULL;
		vmctx_close(&v);
		return r ? r : reply_err(rc, "%s", err.msg);
	}
	r = vm_cmds[i].run(a, &v, req);
	vmctx_close(&v);
	return r;
}

void agent_reconcile(struct agent *a, bool startup)
{
	char vms[PATH_MAX + 8];
	struct mon_sweep running = {0};
	DIR *d;
	struct dirent *de;

	migration_publish(a);
	if (startup)
		storage_recover_all(a);   /* moves and clones an agent crash cut short */
	snprintf(vms, sizeof(vms), "%s/vms", a->state_dir);
	d = opendir(vms);
	if (!d)
		return;
	while ((de = readdir(d))) {
		struct vmctx v;
		char p[PATH_MAX + 16], vmx[PATH_MAX];
		bool started;
		int lfd;

		if (de->d_name[0] == '.')
			continue;
		memset(&v, 0, sizeof(v));
		v.dirfd = v.lockfd = -1;
		snprintf(v.sdir, sizeof(v.sdir), "%s/%s", vms, de->d_name);
		sfile(&v, "pid", p, sizeof(p));
		started = !access(p, F_OK);
		/* not started, or already cleaned, unless the VM monitor
		 * waits to restart it */
		if (!started && !monitor_restart_due(v.sdir))
			continue;
		sfile(&v, "lock", p, sizeof(p));
		lfd = open(p, O_RDWR | O_CLOEXEC);
		if (lfd < 0 || flock(lfd, LOCK_EX | LOCK_NB)) {
			if (lfd >= 0)
				close(lfd);
			continue;           /* a request is working on it */
		}
		sfile(&v, "vmx", p, sizeof(p));
		if (read_text(p, vmx, sizeof(vmx))) {
			close(lfd);
			continue;
		}
		if (!started) {
			monitor_restart_spawn(a, v.sdir, vmx, lfd);
			close(lfd);         /* the worker holds the same lock */
			continue;
		}
		pid_t pid = vm_qemu_pid(&v);
		if (pid) {
			/* watched below, all at once; the flock stays held */
			monitor_sweep_add(&running, v.sdir, vmx, pid, lfd);
			continue;
		}
		/* QEMU ended: clean up (lock record, runtime files) and let
		 * the VM monitor decide on a restart in place */
		monitor_vm_ended(a, v.sdir, vmx);
		if (monitor_restart_due(v.sdir))
			monitor_restart_spawn(a, v.sdir, vmx, lfd);   /* at once, no backoff */
		close(lfd);
	}
	closedir(d);
	monitor_sweep_run(a, &running, startup);
}
