// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * The VM context a request works on, and what the agent knows of a VM's
 * state: resolving a VM folder or .vmx path and loading its checked
 * configuration (vmctx_open, with the per-VM flock that serializes
 * requests), the running QEMU found through the state folder's pid file,
 * the serial log copied to the datastore, the cleanup after QEMU ended,
 * one-shot QMP commands, and the state `info`/`list` report (running,
 * paused, paused by an I/O error, suspended, off; killed by a fence).
 */
#include <errno.h>
#include <libgen.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ops.h"

void sfile(const struct vmctx *v, const char *name, char *buf, size_t size)
{
	snprintf(buf, size, "%s/%s", v->sdir, name);
}

void vmctx_close(struct vmctx *v)
{
	if (v->dirfd >= 0)
		close(v->dirfd);
	if (v->lockfd >= 0)
		close(v->lockfd);
	v->dirfd = v->lockfd = -1;
}

/* Resolves PATH (a VM folder or its .vmx) and loads the configuration.
 * With `lock`, takes the per-VM flock (waiting for another request). */
int vmctx_open(struct agent *a, const char *path, bool lock, struct vmctx *v,
		      struct vm_err *err)
{
	char buf[PATH_MAX], name[VM_NAME_MAX + 1];
	struct stat st;
	int rc;

	memset(v, 0, sizeof(*v));
	v->dirfd = v->lockfd = -1;
	if (!path || !*path)
		return vm_errf(err, -EINVAL, "no VM path given");
	if (path[0] != '/')
		return vm_errf(err, -EINVAL, "'%s': the agent needs an absolute path", path);
	if (stat(path, &st))
		return vm_errf(err, -errno, "%s: %s", path, strerror(errno));
	if (S_ISDIR(st.st_mode)) {
		if (!realpath(path, v->folder))
			return vm_errf(err, -errno, "%s: %s", path, strerror(errno));
		v->dirfd = open(v->folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (v->dirfd < 0)
			return vm_errf(err, -errno, "%s: %s", v->folder, strerror(errno));
		rc = vm_find_vmx(v->dirfd, name, sizeof(name));
		if (rc == -ENOENT)
			return vm_errf(err, rc, "%s: no .vmx file in this folder: not a VM folder", v->folder);
		if (rc == -EEXIST)
			return vm_errf(err, rc, "%s: several .vmx files: name the one to use", v->folder);
		if (rc)
			return vm_errf(err, rc, "%s: %s", v->folder, strerror(-rc));
	} else {
		snprintf(buf, sizeof(buf), "%s", path);
		if (!realpath(dirname(buf), v->folder))
			return vm_errf(err, -errno, "%s: %s", path, strerror(errno));
		snprintf(buf, sizeof(buf), "%s", path);
		snprintf(name, sizeof(name), "%s", basename(buf));
		v->dirfd = open(v->folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (v->dirfd < 0)
			return vm_errf(err, -errno, "%s: %s", v->folder, strerror(errno));
	}
	if ((size_t)snprintf(v->vmx_path, sizeof(v->vmx_path), "%s/%s", v->folder, name) >=
	    sizeof(v->vmx_path))
		return vm_errf(err, -ENAMETOOLONG, "%s: path too long", v->folder);
	vm_hash_name(v->vmx_path, v->key);
	snprintf(v->sdir, sizeof(v->sdir), "%s/vms/%s", a->state_dir, v->key);
	rc = vm_config_load(v->dirfd, name, &v->cfg, err);
	if (rc)
		return rc;
	v->cfg_ok = true;
	if (lock) {
		char lp[PATH_MAX + 8];
		int64_t deadline = now_ms() + VMLOCK_WAIT_MS;

		if (mkdir(v->sdir, 0700) && errno != EEXIST)
			return vm_errf(err, -errno, "%s: %s", v->sdir, strerror(errno));
		sfile(v, "lock", lp, sizeof(lp));
		v->lockfd = open(lp, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
		if (v->lockfd < 0)
			return vm_errf(err, -errno, "%s: %s", lp, strerror(errno));
		while (flock(v->lockfd, LOCK_EX | LOCK_NB)) {
			if (now_ms() > deadline)
				return vm_errf(err, -EBUSY,
					       "%s: another operation on this VM is still running", v->vmx_path);
			sleep_ms(100);
		}
	}
	return 0;
}

/* The pid of this VM's QEMU if it runs (its command line names our state
 * folder, which guards against a recycled pid), else 0. */
pid_t vm_qemu_pid(const struct vmctx *v)
{
	char p[PATH_MAX + 16], buf[64], cmd[8192], buf2[PATH_MAX];
	pid_t pid;
	int fd;
	ssize_t n;

	/* "pid" is the agent's copy of QEMU's -pidfile: QEMU deletes its
	 * own at exit, and the sweep must still find VMs that ended */
	sfile(v, "pid", p, sizeof(p));
	if (read_text(p, buf, sizeof(buf)))
		return 0;
	pid = atoi(buf);
	if (!vm_pid_alive(pid))
		return 0;
	snprintf(p, sizeof(p), "/proc/%d/cmdline", (int)pid);
	fd = open(p, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	n = read(fd, cmd, sizeof(cmd) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	for (ssize_t i = 0; i < n; i++)
		if (cmd[i] == '\0')
			cmd[i] = ' ';
	cmd[n] = '\0';
	if (strstr(cmd, v->sdir))
		return pid;
	/* a VM moved by Storage vMotion while it ran: its QEMU's command
	 * line names the state folder of its old path (storage.c) */
	sfile(v, "qemu-sdir", p, sizeof(p));
	if (!read_text(p, buf2, sizeof(buf2)) && buf2[0] && strstr(cmd, buf2))
		return pid;
	return 0;
}

bool wait_pid_gone(pid_t pid, int ms)
{
	int64_t deadline = now_ms() + ms;

	while (vm_pid_alive(pid)) {
		if (now_ms() > deadline)
			return false;
		sleep_ms(50);
	}
	return true;
}

/* The serial log: QEMU writes it byte by byte (one write per character
 * the guest prints), which on a FUSE datastore costs a request each (on a
 * loaded 2-core test machine a booting guest's console crawled at a few
 * hundred bytes per second), and a datastore that stalls would stall the
 * guest's serial port with it.  So
 * QEMU logs to serial.log in the local state folder and the agent copies
 * what is new to <vm>.log on the datastore in large appends, every second
 * (agent_reconcile) and once more when the VM stops, each copy synced to
 * the disk.  The datastore log
 * was rotated at power-on, so it is an exact prefix of the local one. */
void vm_log_sync(const struct vmctx *v)
{
	char lp[PATH_MAX + 16], dp[PATH_MAX], buf[65536];
	struct stat ls, ds;
	int lfd, dfd;

	sfile(v, "dslog", lp, sizeof(lp));
	if (read_text(lp, dp, sizeof(dp)))
		return;
	sfile(v, "serial.log", lp, sizeof(lp));
	lfd = open(lp, O_RDONLY | O_CLOEXEC);
	if (lfd < 0)
		return;
	dfd = open(dp, O_WRONLY | O_APPEND | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
	if (dfd < 0 || fstat(lfd, &ls) || fstat(dfd, &ds) || !S_ISREG(ds.st_mode))
		goto out;
	for (off_t off = ds.st_size; off < ls.st_size;) {
		ssize_t n = pread(lfd, buf, sizeof(buf), off);

		if (n <= 0 || write(dfd, buf, (size_t)n) != n)
			break;
		off += n;
	}
	/* durable at once, not at the filesystem's next commit: a VM's last
	 * console lines are what an admin reads after its host died */
	if (ds.st_size < ls.st_size)
		fdatasync(dfd);
out:
	if (dfd >= 0)
		close(dfd);
	close(lfd);
}

/* After QEMU ended: drop the lock record (if it is ours) and the runtime
 * files, keep the state folder (it holds the flock). */
void vm_cleanup(struct agent *a, struct vmctx *v, const char *why)
{
	char name[VM_NAME_MAX + 8], p[PATH_MAX + 16], buf[PATH_MAX + 64];

	/* the pid stays known as last-pid: a fence notice (kill_volume) names
	 * the pids vmfsd killed, and may arrive after this cleanup */
	sfile(v, "pid", p, sizeof(p));
	if (!read_text(p, buf, sizeof(buf))) {
		char lp[PATH_MAX + 16];

		sfile(v, "last-pid", lp, sizeof(lp));
		strcat(buf, "\n");
		write_text(lp, buf);
	}
	sfile(v, "fenced", p, sizeof(p));
	if (!read_text(p, buf, sizeof(buf))) {
		why = "QEMU killed by the fence of its volume";
	}
	if (v->cfg_ok && !vm_lockrec_name(&v->cfg, name, sizeof(name))) {
		/* only our own record, and only once nobody holds its lock:
		 * after a fence a survivor may own the VM (and the record) */
		int rc = vm_lockrec_release(v->dirfd, name, a->host);

		if (rc == -EPERM)
			agent_event(a, v->vmx_path, "vm.stopped",
				    "%s; its lock record %s names another host now: left alone", why, name);
		else if (rc == -EBUSY || rc == -EAGAIN)
			agent_event(a, v->vmx_path, "vm.stopped",
				    "%s; its lock record %s is held by %s: left alone", why, name,
				    rc == -EBUSY ? "another host" : "another process of this host");
		else if (rc)
			agent_event(a, v->vmx_path, "vm.stopped", "%s; its lock record %s stays: %s", why,
				    name, strerror(-rc));
		else
			agent_event(a, v->vmx_path, "vm.stopped", "%s; lock record released", why);
	} else {
		agent_event(a, v->vmx_path, "vm.stopped", "%s", why);
	}
	vm_log_sync(v);
	static const char *const files[] = {"pid", "qemu.pid", "qmp.sock", "serial.sock", "dslog", "accel",
					    "io-error", "qemu-sdir", NULL};
	for (int i = 0; files[i]; i++) {
		sfile(v, files[i], p, sizeof(p));
		unlink(p);
	}
}

json_t *qmp_simple(struct vmctx *v, const char *cmd, json_t *args, json_t **ret,
			  struct vm_err *err)
{
	struct qmp q;
	char p[PATH_MAX + 16];
	int rc;

	sfile(v, "qmp.sock", p, sizeof(p));
	rc = qmp_open(&q, p, QMP_TIMEOUT_MS, err);
	if (rc) {
		json_decref(args);
		return reply_err(rc, "%s: %s", v->vmx_path, err->msg);
	}
	rc = qmp_exec(&q, cmd, args, ret, err);
	qmp_close(&q);
	if (rc)
		return reply_err(rc, "%s: %s", v->vmx_path, err->msg);
	return NULL;
}

/* QEMU's run state ("running", "paused", "io-error", ...) by QMP
 * query-status. */
int vm_run_status(struct vmctx *v, char *buf, size_t size)
{
	struct vm_err err;
	json_t *ret = NULL, *e = qmp_simple(v, "query-status", NULL, &ret, &err);
	const char *s = ret ? json_string_value(json_object_get(ret, "status")) : NULL;
	int rc = e || !s ? -EIO : 0;

	if (!rc)
		snprintf(buf, size, "%s", s);
	json_decref(ret);
	json_decref(e);
	return rc;
}

/* Which disks QEMU reports failed (query-block io-status "failed" or
 * "nospace"), as "vd0: nospace, ..." for the log. */
void vm_io_status(struct vmctx *v, char *buf, size_t size)
{
	struct vm_err err;
	json_t *ret = NULL, *e = qmp_simple(v, "query-block", NULL, &ret, &err), *dev;
	size_t i, l = 0;

	buf[0] = '\0';
	json_array_foreach(ret, i, dev) {
		const char *io = json_string_value(json_object_get(dev, "io-status"));
		const char *q = json_string_value(json_object_get(dev, "qdev"));

		if (io && strcmp(io, "ok") && l + 64 < size)
			l += (size_t)snprintf(buf + l, size - l, "%s%s: %s", l ? ", " : "",
					      q ? q : "?", !strcmp(io, "nospace")
					      ? "no space left on the datastore" : io);
	}
	json_decref(ret);
	json_decref(e);
	if (!buf[0])
		snprintf(buf, size, "no disk named");
}

bool file_exists_at(int dirfd, const char *name)
{
	struct stat st;

	return !fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW);
}

void vmss_name(const struct vmctx *v, char *buf, size_t size)
{
	snprintf(buf, size, "%s.vmss", v->cfg.name);
}

/* state: "running" (here or, per its lock record, on another host),
 * "suspended" or "off" */
json_t *vm_fence_note(const struct vmctx *v)
{
	char p[PATH_MAX + 16], note[PATH_MAX + 64], *sp;

	/* "MOUNT TIME" written by kill_volume for a fence */
	if (!v->sdir[0])
		return NULL;
	sfile(v, "fenced", p, sizeof(p));
	if (read_text(p, note, sizeof(note)) || !(sp = strrchr(note, ' ')))
		return NULL;
	*sp = '\0';
	return json_pack("{s:s,s:I}", "volume", note, "at", (json_int_t)atoll(sp + 1));
}

/* What a fenced datastore still lets us say of a VM whose .vmx cannot be
 * read any more (the volume answers EIO): from the state folder only. */
json_t *vm_state_fenced(struct vmctx *v, const char *error)
{
	json_t *f = vm_fence_note(v), *o;

	if (!f)
		return NULL;
	o = json_pack("{s:b,s:s,s:s,s:s,s:o,s:s}", "ok", 1, "path", v->folder, "vmx", v->vmx_path,
		      "state", "off", "killed_by_fence", f, "error", error);
	json_object_set_new(o, "host", json_null());
	return o;
}

/* A VM whose QEMU does not run here: who runs it, if anybody.  The lock
 * record's lock says it (docs/vm.md "One host at a time"): held by
 * another vmfsd host (user.vmfsd.lock; its content cannot be read from
 * here then), held by a process of this kernel (flock: an agent sharing
 * this mount), or free (a record left behind is stale).  A holder whose
 * host is dead shows as "host-dead" with since when, never as running
 * (docs/ha.md §3).  Returns false when nobody runs it. */
static bool vm_remote_state(struct agent *a, struct vmctx *v, json_t *o)
{
	char name[VM_NAME_MAX + 8], holder[256] = "", runner[256] = "";
	struct vm_lockrec r;
	struct dsview d;
	bool dsok, stale = false;
	int hl;

	if (vm_lockrec_name(&v->cfg, name, sizeof(name)))
		return false;
	dsok = !ds_open(v->folder, &d);
	hl = ds_lock_holder(v->dirfd, name, holder, sizeof(holder));
	memset(&r, 0, sizeof(r));
	if (hl == 1 && dsok && d.self && strcmp(holder, d.self)) {
		snprintf(runner, sizeof(runner), "%s", holder);
		/* its content cannot be read here: opening a file another host
		 * holds waits out vmfsd's lock retries (2.5 s) for EBUSY */
		json_object_set_new(o, "lock", json_pack("{s:s,s:b}", "host", holder, "held", 1));
	} else {
		int pr = vm_lockrec_probe(v->dirfd, name, &r);

		/* an open granted despite another host's lock (see power.c) */
		if (pr == 0 && dsok && d.self && r.host[0] &&
		    ds_lock_holder(v->dirfd, name, holder, sizeof(holder)) == 1 &&
		    strcmp(holder, d.self))
			pr = 1;

		if (pr == 1)
			snprintf(runner, sizeof(runner), "%s", r.host[0] ? r.host : holder);
		else if (pr == 0 && r.host[0] && strcmp(r.host, a->host))
			stale = true;
		if (pr >= 0 && r.host[0])
			json_object_set_new(o, "lock", json_pack("{s:s,s:i,s:i,s:I,s:b}", "host", r.host,
								  "agent_pid", (int)r.agent_pid, "qemu_pid",
								  (int)r.qemu_pid, "started",
								  (json_int_t)r.started, "held", pr == 1));
	}
	if (!runner[0] && !stale) {
		if (dsok)
			ds_close(&d);
		return false;
	}
	const char *who = runner[0] ? runner : r.host;
	int64_t ago = -1;
	enum ds_hstate hs = dsok ? ds_host(&d, who, &ago) : DS_UNKNOWN;

	if (dsok)
		ds_close(&d);
	if (hs == DS_DEAD || hs == DS_BROKEN) {
		json_object_set_new(o, "state", json_string("host-dead"));
		json_object_set_new(o, "host", json_string(who));
		json_object_set_new(o, "local", json_false());
		json_object_set_new(o, "host_dead", json_pack("{s:I,s:b}", "declared_ago_ms",
							      (json_int_t)ago, "locks_broken",
							      hs == DS_BROKEN));
		return true;
	}
	if (stale) {
		/* nobody holds it: whoever it names does not run the VM */
		json_object_set_new(o, "stale_lock_record", json_string(r.host));
		return false;
	}
	json_object_set_new(o, "state", json_string("running"));
	json_object_set_new(o, "host", json_string(who));
	json_object_set_new(o, "local", json_false());
	return true;
}

/* The refusal of an operation that needs the VM's QEMU on this host when
 * there is none here: it says where the VM actually is ("running on host
 * esx1"), not only where it is not. */
json_t *reply_not_here(struct agent *a, struct vmctx *v)
{
	json_t *o = json_object(), *r;

	if (vm_remote_state(a, v, o) && json_string_value(json_object_get(o, "host"))) {
		const char *st = json_string_value(json_object_get(o, "state"));
		const char *h = json_string_value(json_object_get(o, "host"));

		if (st && !strcmp(st, "host-dead"))
			r = reply_err(ENOENT, "%s ran on host %s, which is dead: it runs nowhere now "
				      "(info says when it may be powered on)", v->vmx_path, h);
		else
			r = reply_err(ENOENT, "%s is running on host %s, not on this host (%s): run "
				      "the command on %s", v->vmx_path, h, a->host, h);
	} else {
		char name[VM_NAME_MAX + 16];

		vmss_name(v, name, sizeof(name));
		r = reply_err(ENOENT, "%s is not running (%s)", v->vmx_path,
			      file_exists_at(v->dirfd, name) ? "suspended" : "off");
	}
	json_decref(o);
	return r;
}

json_t *vm_state(struct agent *a, struct vmctx *v, bool detail)
{
	json_t *o = json_object();
	char name[VM_NAME_MAX + 16];
	struct vm_lockrec r;
	pid_t pid = vm_qemu_pid(v);

	json_object_set_new(o, "path", json_string(v->folder));
	json_object_set_new(o, "vmx", json_string(v->vmx_path));
	json_object_set_new(o, "name", json_string(v->cfg.display_name[0] ? v->cfg.display_name
								       : v->cfg.name));
	{
		/* snapshots and their age (docs/vm.md "Snapshot age") */
		json_t *sn = snap_summary(v->dirfd, v->cfg.name);

		if (sn)
			json_object_set_new(o, "snapshots", sn);
	}
	if (pid) {
		json_object_set_new(o, "state", json_string("running"));
		json_object_set_new(o, "host", json_string(a->host));
		json_object_set_new(o, "local", json_true());
		json_object_set_new(o, "pid", json_integer(pid));
		if (detail) {
			char p[PATH_MAX + 16], acc[16];

			sfile(v, "accel", p, sizeof(p));
			if (!read_text(p, acc, sizeof(acc)))
				json_object_set_new(o, "running_accel", json_string(acc));
		}
		{
			char st[32];

			/* QEMU's run state: "paused" (stop, suspend under way)
			 * or "io-error" (a disk write failed, werror=enospc:
			 * the datastore is full) show as paused */
			if (!vm_run_status(v, st, sizeof(st))) {
				json_object_set_new(o, "qemu_status", json_string(st));
				if (!strcmp(st, "paused") || !strcmp(st, "io-error"))
					json_object_set_new(o, "state", json_string("paused"));
				if (!strcmp(st, "io-error"))
					json_object_set_new(o, "paused_reason", json_string("io-error"));
			}
		}
	} else if (!vm_remote_state(a, v, o)) {
		vmss_name(v, name, sizeof(name));
		json_object_set_new(o, "state",
				    json_string(file_exists_at(v->dirfd, name) ? "suspended" : "off"));
		json_object_set_new(o, "host", json_null());
	}
	if (!pid) {
		json_t *f = vm_fence_note(v);

		if (f)
			json_object_set_new(o, "killed_by_fence", f);
	}
	if (!json_object_get(o, "lock") && !vm_lockrec_name(&v->cfg, name, sizeof(name)) &&
	    vm_lockrec_probe(v->dirfd, name, &r) >= 0 && r.host[0]) {
		json_object_set_new(o, "lock", json_pack("{s:s,s:i,s:i,s:I}", "host", r.host, "agent_pid",
							  (int)r.agent_pid, "qemu_pid", (int)r.qemu_pid,
							  "started", (json_int_t)r.started));
	}
	{
		/* since when it runs: its lock record, or (another host's
		 * record cannot be opened here) that host's protected list */
		const char *h = json_string_value(json_object_get(o, "host"));
		json_t *lk = json_object_get(o, "lock");
		json_int_t since = 0;

		if (h && lk && !strcmp(json_string_value(json_object_get(lk, "host")) ?: "", h))
			since = json_integer_value(json_object_get(lk, "started"));
		if (h && !since)
			since = ha_since(v, h) / 1000;
		if (since > 0)
			json_object_set_new(o, "since", json_integer(since));
	}
	if (detail) {
		json_t *disks = json_array();

		monitor_info(a, v, o);
		json_object_set_new(o, "cpus", json_integer(v->cfg.vcpus));
		json_object_set_new(o, "memory_mib", json_integer(v->cfg.mem_mib));
		json_object_set_new(o, "guest_os", json_string(v->cfg.guest_os));
		json_object_set_new(o, "accel", json_string(vm_accel_name(v->cfg.accel)));
		if (v->cfg.kernel[0])
			json_object_set_new(o, "kernel", json_string(v->cfg.kernel));
		for (size_t i = 0; i < v->cfg.ndisks; i++) {
			const struct vm_disk *d = &v->cfg.disks[i];
			json_t *dj = json_pack("{s:s,s:s,s:b}", "device", d->key, "file", d->file, "cdrom",
					       d->cdrom);
			struct vmdk_desc desc;
			struct vm_err err;
			struct stat st;

			if (!d->cdrom && !vmdk_load(v->dirfd, d->file, &desc, &err)) {
				json_object_set_new(dj, "extent", json_string(desc.extent));
				json_object_set_new(dj, "size", json_integer((json_int_t)(desc.sectors * 512)));
				json_object_set_new(dj, "provisioning",
						    json_string(desc.thin ? "thin" : "thick"));
				if (!fstatat(v->dirfd, desc.extent, &st, AT_SYMLINK_NOFOLLOW))
					json_object_set_new(dj, "allocated",
							    json_integer((json_int_t)st.st_blocks * 512));
				{
					/* the extent's on-disk lock, as vmfsd states
					 * it ("EXCL by esx1 (slot 0)"; cluster
					 * mounts only) */
					char host[256], ldesc[320];

					busy_holder(v->dirfd, desc.extent, host, sizeof(host), ldesc,
						    sizeof(ldesc));
					if (ldesc[0])
						json_object_set_new(dj, "lock", json_string(ldesc));
				}
			} else if (!d->cdrom) {
				json_object_set_new(dj, "error", json_string(err.msg));
			}
			json_array_append_new(disks, dj);
		}
		json_object_set_new(o, "disks", disks);
		vmss_name(v, name, sizeof(name));
		json_object_set_new(o, "suspend_file",
				    file_exists_at(v->dirfd, name) ? json_string(name) : json_null());
		snprintf(name, sizeof(name), "%s.log", v->cfg.name);
		json_object_set_new(o, "log", json_string(name));
	}
	return o;
}
