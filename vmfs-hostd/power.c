// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * The power operations (docs/vm.md "Power operations"): power-on (and
 * resume from a .vmss) in steps — checks, open the files, the lock record,
 * the serial log, QEMU, the memory state — then power-off, ACPI shutdown,
 * reset, suspend, and continuing a VM QEMU paused after a disk I/O error
 * (a full datastore), which the sweep watches for.  Power-on is where the
 * safety lives: the flat extents are opened O_RDWR by the agent (so a
 * cluster mount answers EBUSY when another live host holds them), the lock
 * record <vm>.vmx.lck is created with O_EXCL, and only then does QEMU
 * start, with those very descriptors.
 */
#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "ops.h"
#include "storage.h"

/* One power-on (or resume from a .vmss) in progress: what the steps below
 * hand each other.  Every step returns NULL to go on, or the error reply. */
struct pon {
	struct agent *a;
	struct vmctx *v;
	struct vm_launch l;
	struct files fl;              /* our descriptors, closed at the end */
	int src[VM_MAX_FILES];    /* descriptor of ours ... */
	int dst[VM_MAX_FILES];    /* ... and the number QEMU gets it as */
	int nfd;
	char lockname[VM_NAME_MAX + 8], vmss[VM_NAME_MAX + 8];
	char qmp_path[PATH_MAX + 16], ser_path[PATH_MAX + 16], pidfile[PATH_MAX + 16];
	char taken_from[256];         /* the stale record's host, if another's */
	struct vm_lockrec rec;
	bool locked;                  /* we hold the lock record (lockfd) */
	bool had_record;              /* the file existed before (not created by us) */
	int lockfd;
	pid_t qpid;
	struct vmsd *sd;              /* the snapshot tree: the disks' chains */
	const char *state_file;       /* revert to a snapshot: its memory (kept) */
};

static int pon_pass_fd(struct pon *p, int fd);
static int pass_cb(void *ctx, int fd)
{
	return pon_pass_fd(ctx, fd);
}

/* Queues descriptor FD for QEMU; returns the number QEMU will see it as. */
static int pon_pass_fd(struct pon *p, int fd)
{
	p->fl.fd[p->fl.n++] = fd;
	p->src[p->nfd] = fd;
	p->dst[p->nfd] = 3 + p->nfd;
	return p->dst[p->nfd++];
}

/* 0. may this VM start here: not running, resources, accelerator */
static json_t *pon_check(struct pon *p, bool want_resume)
{
	struct vmctx *v = p->v;
	struct vm_config *c = &v->cfg;
	struct vm_err err;
	pid_t qpid;
	int rc;

	if ((qpid = vm_qemu_pid(v)))
		return reply_err(EALREADY, "%s is already running on host %s (QEMU pid %d)", v->vmx_path,
				 p->a->host, (int)qpid);
	json_t *mr = maint_refuse(p->a, v->vmx_path, "power-on");

	if (mr)
		return mr;
	vmss_name(v, p->vmss, sizeof(p->vmss));
	p->l.incoming = file_exists_at(v->dirfd, p->vmss);
	if (p->state_file && p->l.incoming)
		return reply_err(EBUSY, "%s is suspended: resume it instead", v->vmx_path);
	if (p->state_file) {
		snprintf(p->vmss, sizeof(p->vmss), "%s", p->state_file);
		p->l.incoming = true;
	}
	if (want_resume && !p->l.incoming)
		return reply_err(ENOENT, "%s is not suspended (no %s)", v->vmx_path, p->vmss);
	rc = vm_check_resources(c->vcpus, c->mem_mib, &p->a->res, &err);
	if (rc)
		return reply_err(rc, "%s: power-on refused: %s", v->vmx_path, err.msg);
	p->l.accel = vm_accel_resolve(c->accel != VM_ACCEL_AUTO ? c->accel : p->a->accel);
	if (p->l.accel == VM_ACCEL_KVM && !vm_kvm_usable())
		return reply_err(ENODEV, "%s: the VM wants KVM but /dev/kvm is not usable on host %s",
				 v->vmx_path, p->a->host);
	return NULL;
}

/* Why another host's lock stands in the way: that host runs the VM, or
 * it died and its locks are not broken yet (docs/ha.md §3). */
static json_t *busy_reply(struct pon *p, const char *holder, const char *what)
{
	struct vmctx *v = p->v;
	struct dsview d;
	int64_t ago = -1;
	enum ds_hstate hs = DS_UNKNOWN;

	if (holder[0] && !ds_open(v->folder, &d)) {
		hs = ds_host(&d, holder, &ago);
		ds_close(&d);
	}
	if (hs == DS_DEAD) {
		char since[48] = "";

		if (ago >= 0)
			snprintf(since, sizeof(since), " %lld s ago", (long long)(ago / 1000));
		return reply_err(EBUSY, "%s: host %s was declared dead%s; its journal is being replayed and "
				 "its locks (%s) are not broken yet: power-on works once they are, "
				 "in a few seconds (HA restarts a protected VM by itself)",
				 v->vmx_path, holder, since, what);
	}
	return reply_err(EBUSY, "%s is running on host %s: %s is locked by it: power it off there first",
			 v->vmx_path, holder[0] ? holder : "(another host)", what);
}

/* A disk whose flat extent another live host holds: name the host. */
static json_t *pon_busy_disk(struct pon *p, const char *extent)
{
	char holder[256], ldesc[320], what[VM_NAME_MAX + 400];

	busy_holder(p->v->dirfd, extent, holder, sizeof(holder), ldesc, sizeof(ldesc));
	snprintf(what, sizeof(what), "its disk %s%s%s%s", extent, ldesc[0] ? " (" : "", ldesc,
		 ldesc[0] ? ")" : "");
	return busy_reply(p, holder, what);
}

/* 1. open every file ourselves; flat extents O_RDWR: on a cluster mount
 * this is where another live host's exclusive lock answers */
static json_t *pon_open_files(struct pon *p)
{
	struct vmctx *v = p->v;
	struct vm_config *c = &v->cfg;
	struct vm_err err;
	char vn[VM_NAME_MAX + 8];
	int rc;

	p->sd = calloc(1, sizeof(*p->sd));
	if (!p->sd)
		return reply_err(ENOMEM, "out of memory");
	snprintf(vn, sizeof(vn), "%s.vmsd", c->name);
	rc = vmsd_load(v->dirfd, vn, p->sd, &err);
	if (rc)
		return reply_err(rc, "%s: %s (refused: fix or remove the file)", v->vmx_path, err.msg);
	for (size_t i = 0; i < c->ndisks; i++) {
		const struct vm_disk *d = &c->disks[i];
		char key[40], extent[VM_NAME_MAX + 1] = "";
		int fd;

		snprintf(key, sizeof(key), "%s.fileName", d->key);
		if (d->cdrom) {
			fd = open_in_folder(v->dirfd, d->file, O_RDONLY, key, &err);
			if (fd < 0)
				return reply_err(fd, "%s: %s", v->vmx_path, err.msg);
			int rc = vm_iso_check(fd, d->file, &err);

			if (rc) {
				close(fd);
				return reply_err(rc, "%s: %s: %s", v->vmx_path, key, err.msg);
			}
		} else {
			struct vmdk_desc desc;
			struct stat st;
			int rc = vmdk_load(v->dirfd, d->file, &desc, &err);

			if (rc)
				return reply_err(rc, "%s: %s: %s", v->vmx_path, key, err.msg);
			fd = open_in_folder(v->dirfd, desc.extent, O_RDWR, d->file, &err);
			if (fd == -EBUSY)
				return pon_busy_disk(p, desc.extent);
			if (fd < 0)
				return reply_err(fd, "%s: %s", v->vmx_path, err.msg);
			if (fstat(fd, &st) == 0 && (uint64_t)st.st_size < desc.sectors * 512) {
				close(fd);
				return reply_err(EINVAL, "%s: %s is %lld bytes, shorter than the %" PRIu64
						 " its descriptor %s declares", v->vmx_path, desc.extent,
						 (long long)st.st_size, desc.sectors * 512, d->file);
			}
			p->l.disk_size[i] = desc.sectors * 512;
			snprintf(extent, sizeof(extent), "%s", desc.extent);
		}
		p->l.disk_fd[i] = pon_pass_fd(p, fd);
		if (!d->cdrom) {
			/* its snapshot deltas, locked like the extent */
			char failed[VM_NAME_MAX + 1] = "";

			rc = snap_chain_open(v, p->sd, i, extent, O_RDWR, &p->l, pass_cb, p, failed,
					     sizeof(failed), &err);
			if (rc == -EBUSY)
				return pon_busy_disk(p, failed);
			if (rc)
				return reply_err(rc, "%s: %s", v->vmx_path, err.msg);
		}
	}
	if (c->kernel[0]) {
		int fd = open_in_folder(v->dirfd, c->kernel, O_RDONLY, "vmfsd.kernel", &err);

		if (fd < 0)
			return reply_err(fd, "%s: %s", v->vmx_path, err.msg);
		p->l.kernel_fd = pon_pass_fd(p, fd);
	}
	if (c->initrd[0]) {
		int fd = open_in_folder(v->dirfd, c->initrd, O_RDONLY, "vmfsd.initrd", &err);

		if (fd < 0)
			return reply_err(fd, "%s: %s", v->vmx_path, err.msg);
		p->l.initrd_fd = pon_pass_fd(p, fd);
	}
	return NULL;
}

/* Belt and braces on a cluster mount: after the open, the record's
 * on-disk lock must name this host.  vmfsd once granted an open with the
 * lock free on disk (a record re-created right after another host's
 * unlink; fixed, docs/cluster.md §5): kept as a guard (docs/ha.md §7).  1 confirmed
 * (or not a cluster mount), 0 free on disk, -1 another host's. */
#define LOCK_CONFIRM_TRIES 4
/* one commit interval (fs/commit.c, 1 s) and some: vmfsd drops the
 * stale lock state at the commit after our close */
#define LOCK_CONFIRM_WAIT_MS 1200
static int lock_confirmed(struct pon *p)
{
	char holder[256] = "", self[256] = "";
	struct dsview d;
	int hl;

	if (ds_open(p->v->folder, &d))
		return 1;
	snprintf(self, sizeof(self), "%s", d.self ? d.self : "");
	ds_close(&d);
	hl = ds_fd_lock_holder(p->lockfd, holder, sizeof(holder));
	if (!self[0] || hl < 0)
		return 1;
	if (hl == 0)
		return 0;
	return strcmp(holder, self) ? -1 : 1;
}

/* 2. the lock record <vm>.vmx.lck, held open and flock()ed for as long as
 * QEMU runs (QEMU inherits the descriptor): on a cluster mount that is the
 * file's exclusive on-disk lock, so exactly one host can hold it.  A
 * record we could lock is stale whoever it names: nobody runs the VM with
 * it (a dead host whose locks were broken, a crashed QEMU), so it is taken
 * over, with an event naming that host.  docs/vm.md "One host at a time". */
static json_t *pon_lock_record(struct pon *p, bool force)
{
	struct vmctx *v = p->v;
	struct agent *a = p->a;
	struct vm_lockrec cur;
	char when[32];
	int rc;

	vm_lockrec_name(&v->cfg, p->lockname, sizeof(p->lockname));
	snprintf(p->rec.host, sizeof(p->rec.host), "%s", a->host);
	p->rec.agent_pid = a->pid;        /* the agent, not this request's child */
	p->rec.started = (int64_t)time(NULL);
	vm_boot_id(p->rec.boot_id, sizeof(p->rec.boot_id));
	/* a record file that was there (maybe empty: released) is emptied
	 * again on failure, never unlinked (see vm_lockrec_release) */
	p->had_record = file_exists_at(v->dirfd, p->lockname);
	for (int tries = 0, waits = 0;; tries++) {
		rc = vm_lockrec_lock(v->dirfd, p->lockname, &p->lockfd, &cur);
		/* a QEMU of this kernel that was just killed (kill-volume, a
		 * crash) can hold it for a moment while its threads exit (its
		 * main thread is a zombie already): 2 s.  Whichever agent
		 * started it: two agents may share one mount. */
		if (rc == -EAGAIN && !strcmp(cur.boot_id, p->rec.boot_id) &&
		    !vm_pid_alive(cur.qemu_pid) && waits++ < 20) {
			sleep_ms(100);
			tries--;
			continue;
		}
		if (rc || tries == LOCK_CONFIRM_TRIES || lock_confirmed(p) != 0)
			break;
		/* vmfsd granted the open with the lock free on disk (see
		 * lock_confirmed): closing lets its next commit drop the
		 * stale state; the open after that takes the lock for real */
		close(p->lockfd);
		p->lockfd = -1;
		sleep_ms(LOCK_CONFIRM_WAIT_MS);
	}
	if (rc == -EBUSY) {
		char holder[256] = "", what[VM_NAME_MAX + 64];

		ds_lock_holder(v->dirfd, p->lockname, holder, sizeof(holder));
		snprintf(what, sizeof(what), "its lock record %s", p->lockname);
		return busy_reply(p, holder, what);
	}
	if (rc == -EAGAIN) {
		fmt_time(cur.started, when, sizeof(when));
		if (!cur.host[0] || !strcmp(cur.host, a->host))
			return reply_err(EBUSY, "%s is running on this host (%s) under another agent (QEMU pid %d)",
					 v->vmx_path, a->host, (int)cur.qemu_pid);
		return reply_err(EBUSY, "%s is running on host %s (since %s, QEMU pid %d there): power it off there first",
				 v->vmx_path, cur.host, when, (int)cur.qemu_pid);
	}
	if (rc)
		return reply_err(rc, "%s: cannot open the lock record %s: %s", v->vmx_path,
				 p->lockname, strerror(-rc));
	{
		char holder[256] = "";
		int lc = lock_confirmed(p);

		if (lc <= 0 && ds_fd_lock_holder(p->lockfd, holder, sizeof(holder)) >= 0) {
			char what[VM_NAME_MAX + 64];

			close(p->lockfd);
			p->lockfd = -1;
			agent_log(a, "%s: vmfsd opened %s but its on-disk lock is %s%s; refused",
				  v->vmx_path, p->lockname, lc < 0 ? "held by " : "free", holder);
			if (lc == 0)
				return reply_err(EAGAIN, "%s: the on-disk lock of %s could not be confirmed "
						 "(vmfsd reports it free): try again in a second",
						 v->vmx_path, p->lockname);
			snprintf(what, sizeof(what), "its lock record %s", p->lockname);
			return busy_reply(p, holder, what);
		}
	}
	p->locked = true;
	if (cur.host[0] && strcmp(cur.host, a->host)) {
		struct dsview d;
		int64_t ago = -1;
		enum ds_hstate hs = DS_UNKNOWN;
		char why[128];

		if (!ds_open(v->folder, &d)) {
			hs = ds_host(&d, cur.host, &ago);
			ds_close(&d);
		}
		if (hs == DS_BROKEN && ago >= 0)
			snprintf(why, sizeof(why), "host %s was declared dead %lld s ago and its locks are broken",
				 cur.host, (long long)(ago / 1000));
		else
			snprintf(why, sizeof(why), "host %s (%s) holds no lock on it: its QEMU is gone",
				 cur.host, ds_hstate_name(hs));
		fmt_time(cur.started, when, sizeof(when));
		agent_event(a, v->vmx_path, "vm.lock-taken-over",
			    "took over the stale lock record of host %s (since %s): %s%s", cur.host, when,
			    why, force ? " (--force given, not needed)" : "");
		snprintf(p->taken_from, sizeof(p->taken_from), "%s", cur.host);
	} else if (cur.host[0]) {
		agent_log(a, "%s: removing the stale lock record of this host (QEMU pid %d is gone)",
			  v->vmx_path, (int)cur.qemu_pid);
	}
	rc = vm_lockrec_write(p->lockfd, &p->rec);
	pon_pass_fd(p, p->lockfd);
	if (rc)
		return reply_err(rc, "%s: cannot write the lock record %s: %s", v->vmx_path,
				 p->lockname, strerror(-rc));
	return NULL;
}

/* 3. the serial log: local (QEMU writes it), copied to <vm>.log on the
 * datastore by vm_log_sync */
static json_t *pon_serial_log(struct pon *p)
{
	struct vmctx *v = p->v;
	char logname[VM_NAME_MAX + 8], lp[PATH_MAX + 16], dp[PATH_MAX + VM_NAME_MAX + 8];
	int fd;

	rotate_log(v->dirfd, v->cfg.name);
	snprintf(logname, sizeof(logname), "%s.log", v->cfg.name);
	fd = openat(v->dirfd, logname,
		    O_WRONLY | O_APPEND | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY, 0644);
	if (fd < 0)
		return reply_err(errno, "%s: cannot create %s: %s", v->vmx_path, logname,
				 strerror(errno));
	close(fd);
	snprintf(dp, sizeof(dp), "%s/%s", v->folder, logname);
	sfile(v, "dslog", lp, sizeof(lp));
	write_text(lp, dp);
	sfile(v, "serial.log", lp, sizeof(lp));
	fd = open(lp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return reply_err(errno, "%s: %s", lp, strerror(errno));
	p->l.log_fd = pon_pass_fd(p, fd);
	return NULL;
}

/* 4. QEMU; io_uring first, then native AIO, then the thread pool
 * (io_uring can be disabled by sysctl or a seccomp profile) */
static json_t *pon_start_qemu(struct pon *p)
{
	static const char *const aios[] = {"io_uring", "native", "threads"};
	struct vmctx *v = p->v;
	struct vm_err err;
	int rc;

	sfile(v, "qmp.sock", p->qmp_path, sizeof(p->qmp_path));
	sfile(v, "serial.sock", p->ser_path, sizeof(p->ser_path));
	sfile(v, "qemu.pid", p->pidfile, sizeof(p->pidfile));
	unlink(p->qmp_path);
	unlink(p->ser_path);
	p->l.qmp_path = p->qmp_path;
	p->l.serial_path = p->ser_path;
	p->l.pidfile = p->pidfile;
	for (int i = 0; i < 3; i++) {
		struct strv argv = {0};

		p->l.aio = aios[i];
		rc = vm_qemu_argv(&p->l, &argv, &err);
		if (rc)
			return reply_err(rc, "%s: %s", v->vmx_path, err.msg);
		rc = spawn_qemu(v, &argv, p->src, p->dst, p->nfd, &p->qpid, &err);
		strv_free(&argv);
		if (rc == 0)
			return NULL;
		if (i < 2 && (strstr(err.msg, "io_uring") || strstr(err.msg, "aio=native") ||
			      strstr(err.msg, "native"))) {
			agent_log(p->a, "%s: aio=%s failed (%s); trying aio=%s", v->vmx_path, aios[i],
				  err.msg, aios[i + 1]);
			continue;
		}
		return reply_err(rc, "%s: %s", v->vmx_path, err.msg);
	}
	return reply_err(EIO, "%s: QEMU did not start", v->vmx_path);
}

/* QEMU runs: its pid into the lock record and the state folder */
static void pon_record(struct pon *p)
{
	struct vmctx *v = p->v;
	char path[PATH_MAX + 16], pidtxt[32];

	p->rec.qemu_pid = p->qpid;
	vm_lockrec_write(p->lockfd, &p->rec);
	sfile(v, "vmx", path, sizeof(path));
	write_text(path, v->vmx_path);
	sfile(v, "accel", path, sizeof(path));
	write_text(path, vm_accel_name(p->l.accel));
	sfile(v, "aio", path, sizeof(path));        /* for nodes added later (snapshots) */
	write_text(path, p->l.aio);
	sfile(v, "pid", path, sizeof(path));
	snprintf(pidtxt, sizeof(pidtxt), "%d\n", (int)p->qpid);
	write_text(path, pidtxt);
	/* what it uses, for the HA record (ha.c) */
	sfile(v, "res", path, sizeof(path));
	snprintf(pidtxt, sizeof(pidtxt), "%u %u\n", v->cfg.vcpus, v->cfg.mem_mib);
	write_text(path, pidtxt);
}

/* 5. resume: feed the memory state, then run.  On failure QEMU is killed
 * and the suspend file kept. */
static json_t *pon_load_state(struct pon *p)
{
	struct vmctx *v = p->v;
	struct vm_err err;
	struct qmp q;
	int fd, rc;

	fd = open_in_folder(v->dirfd, p->vmss, O_RDONLY, "suspend file", &err);
	rc = fd < 0 ? fd : qmp_open(&q, p->qmp_path, QMP_TIMEOUT_MS, &err);
	if (!rc) {
		rc = qmp_exec_fd(&q, "getfd", json_pack("{s:s}", "fdname", "vmss"), fd, NULL, &err);
		if (!rc)
			rc = qmp_exec(&q, "migrate-incoming", json_pack("{s:s}", "uri", "fd:vmss"), NULL,
				      &err);
		if (!rc)
			rc = state_task(p->a, &q, "resume", v->vmx_path, fd, false, &err);
		if (!rc)
			rc = qmp_exec(&q, "cont", NULL, NULL, &err);
		qmp_close(&q);
	}
	if (fd >= 0)
		close(fd);
	if (rc) {
		kill(p->qpid, SIGKILL);
		wait_pid_gone(p->qpid, QUIT_GRACE_MS);
		vm_cleanup(p->a, v, "resume failed");
		return reply_err(rc, "%s: resume from %s failed: %s (the suspend file is kept)",
				 v->vmx_path, p->vmss, err.msg);
	}
	/* the state now lives in the running VM; resuming the same file
	 * again later would roll the guest back over newer disk contents
	 * (a snapshot's memory stays: it goes with the snapshot) */
	if (!p->state_file)
		unlinkat(v->dirfd, p->vmss, 0);
	return NULL;
}

json_t *power_on(struct agent *a, struct vmctx *v, json_t *req)
{
	return power_on_state(a, v, req, NULL);
}

json_t *power_on_state(struct agent *a, struct vmctx *v, json_t *req, const char *state_file)
{
	struct pon p = {.a = a, .v = v, .lockfd = -1, .state_file = state_file,
			.l = {.cfg = &v->cfg, .qemu = a->qemu, .kernel_fd = -1, .initrd_fd = -1,
			      .log_fd = -1}};
	char path[PATH_MAX + 16];
	json_t *reply;

	reply = pon_check(&p, json_is_true(json_object_get(req, "resume")));
	if (!reply)
		reply = storage_power_gate(a, v);     /* templates, half-done moves */
	if (!reply)
		reply = pon_lock_record(&p, json_is_true(json_object_get(req, "force")));
	if (!reply)
		reply = pon_open_files(&p);
	if (!reply)
		reply = pon_serial_log(&p);
	if (!reply)
		reply = pon_start_qemu(&p);
	if (reply) {
		/* ours (we hold its lock): nobody runs the VM; a record we
		 * just created goes, one that existed is emptied (§ release) */
		if (p.locked && !p.had_record)
			vm_lockrec_remove(v->dirfd, p.lockname);
		else if (p.locked && ftruncate(p.lockfd, 0) == 0)
			(void)fsync(p.lockfd);
		files_close(&p.fl);     /* the lock record's descriptor too */
		free(p.sd);
		return reply;
	}
	pon_record(&p);
	files_close(&p.fl);
	free(p.sd);
	if (p.l.incoming && (reply = pon_load_state(&p)))
		return reply;
	inventory_edit(a, v->vmx_path, NULL);
	sfile(v, "fenced", path, sizeof(path));       /* a new run: an old fence is history */
	unlink(path);
	/* on this host's protected list before success is reported: if the
	 * host dies from now on, the survivors know to restart it */
	int hrc = ha_protect(a, v);

	if (hrc)
		agent_event(a, v->vmx_path, "ha.protect-failed",
			    "running, but NOT protected by HA: cannot write this host's protected list: %s",
			    strerror(-hrc));
	monitor_power_on(a, v, json_is_true(json_object_get(req, "monitor_restart")));
	agent_event(a, v->vmx_path, p.l.incoming ? "vm.resumed" : "vm.powered-on",
		    "%s (QEMU pid %d, %s, aio=%s)", p.l.incoming ? "resumed" : "powered on",
		    (int)p.qpid, vm_accel_name(p.l.accel), p.l.aio);
	reply = reply_ok("%s %s on host %s (QEMU pid %d, %s)", v->vmx_path,
			 p.l.incoming ? "resumed" : "powered on", a->host, (int)p.qpid,
			 vm_accel_name(p.l.accel));
	json_object_set_new(reply, "pid", json_integer(p.qpid));
	json_object_set_new(reply, "host", json_string(a->host));
	json_object_set_new(reply, "accel", json_string(vm_accel_name(p.l.accel)));
	return reply;
}

static json_t *stop_qemu(struct agent *a, struct vmctx *v, pid_t pid, const char *why)
{
	struct vm_err err;
	json_t *e = qmp_simple(v, "quit", NULL, NULL, &err);

	json_decref(e);
	if (!wait_pid_gone(pid, QUIT_GRACE_MS)) {
		agent_log(a, "%s: QEMU pid %d ignored quit; killing it", v->vmx_path, (int)pid);
		kill(pid, SIGKILL);
		wait_pid_gone(pid, QUIT_GRACE_MS);
	}
	ha_unprotect(a, v);     /* stopped on purpose: nothing to restart */
	vm_cleanup(a, v, why);
	return NULL;
}

json_t *power_off(struct agent *a, struct vmctx *v)
{
	pid_t pid = vm_qemu_pid(v);

	if (!pid && monitor_cancel(a, v, "power-off"))
		return reply_ok("%s is off: its restart in place is cancelled", v->vmx_path);
	if (!pid)
		return reply_not_here(a, v);
	stop_qemu(a, v, pid, "powered off");
	return reply_ok("%s powered off", v->vmx_path);
}

json_t *shutdown_vm(struct agent *a, struct vmctx *v, json_t *req)
{
	pid_t pid = vm_qemu_pid(v);
	json_int_t t = json_integer_value(json_object_get(req, "timeout"));
	struct vm_err err;
	json_t *e;

	if (!pid && monitor_cancel(a, v, "shutdown"))
		return reply_ok("%s is off: its restart in place is cancelled", v->vmx_path);
	if (!pid)
		return reply_not_here(a, v);
	if (t <= 0)
		t = a->shutdown_timeout;
	e = qmp_simple(v, "system_powerdown", NULL, NULL, &err);
	if (e)
		return e;
	agent_log(a, "%s: ACPI power button pressed; waiting up to %lld s", v->vmx_path, (long long)t);
	if (wait_pid_gone(pid, (int)t * 1000)) {
		ha_unprotect(a, v);
		vm_cleanup(a, v, "guest shut down");
		return reply_ok("%s: the guest shut down", v->vmx_path);
	}
	stop_qemu(a, v, pid, "powered off after the shutdown timeout");
	json_t *r = reply_ok("%s: the guest did not shut down within %lld s: powered off", v->vmx_path,
			     (long long)t);
	json_object_set_new(r, "forced", json_true());
	return r;
}

json_t *reset_vm(struct agent *a, struct vmctx *v)
{
	struct vm_err err;
	json_t *e;

	if (!vm_qemu_pid(v))
		return reply_not_here(a, v);
	e = qmp_simple(v, "system_reset", NULL, NULL, &err);
	if (e)
		return e;
	agent_event(a, v->vmx_path, "vm.reset", "reset");
	return reply_ok("%s reset", v->vmx_path);
}

json_t *suspend_vm(struct agent *a, struct vmctx *v)
{
	pid_t pid = vm_qemu_pid(v);
	char vmss[VM_NAME_MAX + 8], p[PATH_MAX + 16];
	struct vm_err err;
	struct qmp q;
	int fd, rc;

	if (!pid)
		return reply_not_here(a, v);
	vmss_name(v, vmss, sizeof(vmss));
	sfile(v, "qmp.sock", p, sizeof(p));
	rc = qmp_open(&q, p, QMP_TIMEOUT_MS, &err);
	if (rc)
		return reply_err(rc, "%s: %s", v->vmx_path, err.msg);
	fd = openat(v->dirfd, vmss, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0) {
		rc = -errno;
		qmp_close(&q);
		return reply_err(rc, "%s: cannot create %s: %s", v->vmx_path, vmss, strerror(-rc));
	}
	rc = qmp_exec(&q, "stop", NULL, NULL, &err);
	if (!rc)
		rc = state_task(a, &q, "suspend", v->vmx_path, fd, true, &err);
	if (!rc && fsync(fd))
		rc = vm_errf(&err, -errno, "fsync %s: %s", vmss, strerror(errno));
	close(fd);
	if (rc) {
		struct vm_err e2;

		qmp_exec(&q, "cont", NULL, NULL, &e2);
		qmp_close(&q);
		unlinkat(v->dirfd, vmss, 0);
		return reply_err(rc, "%s: suspend failed, the VM keeps running: %s", v->vmx_path, err.msg);
	}
	qmp_close(&q);
	stop_qemu(a, v, pid, "suspended");
	struct stat st;
	long long sz = fstatat(v->dirfd, vmss, &st, 0) ? 0 : (long long)st.st_size;
	agent_event(a, v->vmx_path, "vm.suspended", "suspended to %s (%lld bytes)", vmss, sz);
	json_t *r = reply_ok("%s suspended to %s (%lld MiB)", v->vmx_path, vmss, sz >> 20);
	json_object_set_new(r, "suspend_file", json_string(vmss));
	return r;
}

/* `resume` of a VM whose QEMU runs but is paused: QMP cont (QEMU retries
 * the writes that failed).  Then watches the run state for a moment: a
 * datastore still full pauses it again at once. */
json_t *continue_vm(struct agent *a, struct vmctx *v, pid_t pid)
{
	char st[32] = "", p[PATH_MAX + 16];
	struct vm_err err;
	json_t *e;

	if (vm_run_status(v, st, sizeof(st)))
		return reply_err(EIO, "%s: QEMU (pid %d) does not answer on QMP", v->vmx_path, (int)pid);
	if (strcmp(st, "io-error") && strcmp(st, "paused"))
		return reply_err(EALREADY, "%s is already running on host %s (QEMU pid %d, %s)",
				 v->vmx_path, a->host, (int)pid, st);
	e = qmp_simple(v, "cont", NULL, NULL, &err);
	if (e)
		return e;
	/* QEMU resubmits the failed requests at once; CONT_SETTLE_MS is how
	 * long we look for a new stop before calling it running */
	for (int64_t end = now_ms() + CONT_SETTLE_MS; now_ms() < end; sleep_ms(100)) {
		char now[32];

		if (!vm_run_status(v, now, sizeof(now)) && !strcmp(now, "io-error")) {
			char why[512];

			vm_io_status(v, why, sizeof(why));
			return reply_err(ENOSPC, "%s: continued, but QEMU paused it again at once (%s): "
					 "free space on the datastore first", v->vmx_path, why);
		}
	}
	sfile(v, "io-error", p, sizeof(p));
	unlink(p);
	agent_event(a, v->vmx_path, "vm.continued", "continued (was %s)", st);
	return reply_ok("%s continued (it was paused%s)", v->vmx_path,
			!strcmp(st, "io-error") ? " by an I/O error" : "");
}

/* The sweep's look at a running VM whose run state ST it just got (the
 * monitor's heartbeat): log when QEMU paused it for an I/O error (and when
 * it runs again); sdir/io-error remembers what was said. */
void vm_watch_io_error(struct agent *a, struct vmctx *v, const char *vmx, const char *st)
{
	char p[PATH_MAX + 16], why[512], note[64];
	bool noted;

	sfile(v, "io-error", p, sizeof(p));
	noted = !read_text(p, note, sizeof(note));
	if (!strcmp(st, "io-error") && !noted) {
		vm_io_status(v, why, sizeof(why));
		snprintf(note, sizeof(note), "%lld\n", (long long)time(NULL));
		write_text(p, note);
		agent_event(a, vmx, "vm.io-error",
			    "paused by QEMU after a disk I/O error (%s); free space on the datastore, "
			    "then `vmfsctl resume` continues it", why);
	} else if (strcmp(st, "io-error") && noted) {
		unlink(p);
		agent_event(a, vmx, "vm.io-error-cleared", "no longer paused by an I/O error (now %s)", st);
	}
}
