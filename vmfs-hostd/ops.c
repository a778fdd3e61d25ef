// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * The operations of the host agent: create, register, list, info and the
 * power operations of a VM, each run in a forked child of the agent for one
 * vmfsctl request.  Power-on is where the safety lives: the VM's files are
 * opened by the agent itself (O_NOFOLLOW, in the VM folder, regular files
 * only), the flat extents O_RDWR so that the cluster filesystem answers
 * EBUSY when another live host holds them, then the lock record
 * <vm>.vmx.lck is created with O_EXCL; only then does QEMU start, with those
 * very descriptors (/proc/self/fd/N), daemonized in its own session.
 * Suspend migrates the memory state into <vm>.vmss through a descriptor
 * passed over QMP (no shell, no exec: URI), resume feeds it back with
 * -incoming defer.  Per-VM state (pid file, QMP and serial sockets, QEMU's
 * start-up errors) lives in --state-dir/vms/<hash of the .vmx path>/.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

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

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};

	nanosleep(&ts, NULL);
}

static json_t *reply_err(int rc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static json_t *reply_err(int rc, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return json_pack("{s:b,s:s,s:i}", "ok", 0, "error", msg, "errno", rc < 0 ? -rc : rc);
}

static json_t *reply_ok(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static json_t *reply_ok(const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return json_pack("{s:b,s:s}", "ok", 1, "message", msg);
}

static int write_text(const char *path, const char *text)
{
	char tmp[PATH_MAX + 8];
	int fd;
	size_t len = strlen(text);

	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	if (write(fd, text, len) != (ssize_t)len) {
		close(fd);
		unlink(tmp);
		return -EIO;
	}
	close(fd);
	if (rename(tmp, path))
		return -errno;
	return 0;
}

static int read_text(const char *path, char *buf, size_t size)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = read(fd, buf, size - 1);
	close(fd);
	if (n < 0)
		return -errno;
	buf[n] = '\0';
	buf[strcspn(buf, "\n")] = '\0';
	return 0;
}

/* ------------------------------------------------------------ VM context */

static void sfile(const struct vmctx *v, const char *name, char *buf, size_t size)
{
	snprintf(buf, size, "%s/%s", v->sdir, name);
}

static void vmctx_close(struct vmctx *v)
{
	if (v->dirfd >= 0)
		close(v->dirfd);
	if (v->lockfd >= 0)
		close(v->lockfd);
	v->dirfd = v->lockfd = -1;
}

/* Resolves PATH (a VM folder or its .vmx) and loads the configuration.
 * With `lock`, takes the per-VM flock (waiting for another request). */
static int vmctx_open(struct agent *a, const char *path, bool lock, struct vmctx *v,
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
static pid_t vm_qemu_pid(const struct vmctx *v)
{
	char p[PATH_MAX + 16], buf[64], cmd[8192];
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
	return strstr(cmd, v->sdir) ? pid : 0;
}

static bool wait_pid_gone(pid_t pid, int ms)
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
 * (agent_reconcile) and once more when the VM stops.  The datastore log
 * was rotated at power-on, so it is an exact prefix of the local one. */
static void vm_log_sync(const struct vmctx *v)
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
out:
	if (dfd >= 0)
		close(dfd);
	close(lfd);
}

/* After QEMU ended: drop the lock record (if it is ours) and the runtime
 * files, keep the state folder (it holds the flock). */
static void vm_cleanup(struct agent *a, struct vmctx *v, const char *why)
{
	char name[VM_NAME_MAX + 8], p[PATH_MAX + 16], buf[PATH_MAX + 64];
	struct vm_lockrec r;

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
	if (v->cfg_ok && !vm_lockrec_name(&v->cfg, name, sizeof(name)) &&
	    !vm_lockrec_read(v->dirfd, name, &r) && !strcmp(r.host, a->host)) {
		int rc = vm_lockrec_remove(v->dirfd, name);

		if (rc)
			agent_log(a, "%s: %s; its lock record %s stays: %s", v->vmx_path, why, name,
				  strerror(-rc));
		else
			agent_log(a, "%s: %s; lock record released", v->vmx_path, why);
	}
	vm_log_sync(v);
	static const char *const files[] = {"pid", "qemu.pid", "qmp.sock", "serial.sock", "dslog", "accel",
					    "io-error", NULL};
	for (int i = 0; files[i]; i++) {
		sfile(v, files[i], p, sizeof(p));
		unlink(p);
	}
}

static json_t *qmp_simple(struct vmctx *v, const char *cmd, json_t *args, json_t **ret,
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
static int vm_run_status(struct vmctx *v, char *buf, size_t size)
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
static void vm_io_status(struct vmctx *v, char *buf, size_t size)
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

/* The sweep's look at a running VM: log when QEMU paused it for an I/O
 * error (and when it runs again); sdir/io-error remembers what was said. */
static void vm_watch_io_error(struct agent *a, struct vmctx *v, const char *vmx)
{
	char p[PATH_MAX + 16], st[32], why[512], note[64];
	bool noted;

	if (vm_run_status(v, st, sizeof(st)))
		return;
	sfile(v, "io-error", p, sizeof(p));
	noted = !read_text(p, note, sizeof(note));
	if (!strcmp(st, "io-error") && !noted) {
		vm_io_status(v, why, sizeof(why));
		snprintf(note, sizeof(note), "%lld\n", (long long)time(NULL));
		write_text(p, note);
		agent_log(a, "%s: paused by QEMU after a disk I/O error (%s); free space on the datastore, "
			  "then `vmfsctl resume` continues it", vmx, why);
	} else if (strcmp(st, "io-error") && noted) {
		unlink(p);
		agent_log(a, "%s: no longer paused by an I/O error (now %s)", vmx, st);
	}
}

/* `resume` of a VM whose QEMU runs but is paused: QMP cont (QEMU retries
 * the writes that failed).  Then watches the run state for a moment: a
 * datastore still full pauses it again at once. */
static json_t *continue_vm(struct agent *a, struct vmctx *v, pid_t pid)
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
	agent_log(a, "%s: continued (was %s)", v->vmx_path, st);
	return reply_ok("%s continued (it was paused%s)", v->vmx_path,
			!strcmp(st, "io-error") ? " by an I/O error" : "");
}

static const char *req_str(json_t *req, const char *key)
{
	return json_string_value(json_object_get(req, key));
}

/* ------------------------------------------------------------ state */

static bool file_exists_at(int dirfd, const char *name)
{
	struct stat st;

	return !fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW);
}

static void vmss_name(const struct vmctx *v, char *buf, size_t size)
{
	snprintf(buf, size, "%s.vmss", v->cfg.name);
}

/* state: "running" (here or, per its lock record, on another host),
 * "suspended" or "off" */
static json_t *vm_state(struct agent *a, struct vmctx *v, bool detail)
{
	json_t *o = json_object();
	char name[VM_NAME_MAX + 16];
	struct vm_lockrec r;
	pid_t pid = vm_qemu_pid(v);

	json_object_set_new(o, "path", json_string(v->folder));
	json_object_set_new(o, "vmx", json_string(v->vmx_path));
	json_object_set_new(o, "name", json_string(v->cfg.display_name[0] ? v->cfg.display_name
								       : v->cfg.name));
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
	} else if (!vm_lockrec_name(&v->cfg, name, sizeof(name)) &&
		   !vm_lockrec_read(v->dirfd, name, &r) && strcmp(r.host, a->host)) {
		json_object_set_new(o, "state", json_string("running"));
		json_object_set_new(o, "host", json_string(r.host));
		json_object_set_new(o, "local", json_false());
	} else {
		vmss_name(v, name, sizeof(name));
		json_object_set_new(o, "state",
				    json_string(file_exists_at(v->dirfd, name) ? "suspended" : "off"));
		json_object_set_new(o, "host", json_null());
	}
	if (!pid) {
		char p[PATH_MAX + 16], note[PATH_MAX + 64], *sp;

		/* "MOUNT TIME" written by kill_volume for a fence */
		sfile(v, "fenced", p, sizeof(p));
		if (!read_text(p, note, sizeof(note)) && (sp = strrchr(note, ' '))) {
			*sp = '\0';
			json_object_set_new(o, "killed_by_fence",
					    json_pack("{s:s,s:I}", "volume", note, "at",
						      (json_int_t)atoll(sp + 1)));
		}
	}
	if (!vm_lockrec_name(&v->cfg, name, sizeof(name)) && !vm_lockrec_read(v->dirfd, name, &r)) {
		json_object_set_new(o, "lock", json_pack("{s:s,s:i,s:i,s:I}", "host", r.host, "agent_pid",
							  (int)r.agent_pid, "qemu_pid", (int)r.qemu_pid,
							  "started", (json_int_t)r.started));
	}
	if (detail) {
		json_t *disks = json_array();

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

/* ------------------------------------------------------------ inventory */

static int inventory_edit(struct agent *a, const char *add, const char *remove)
{
	char path[PATH_MAX + 16], lp[PATH_MAX + 16], line[PATH_MAX + 2];
	char *out = NULL;
	size_t outlen = 0;
	FILE *f, *m;
	int lfd, rc = 0;
	bool present = false;

	snprintf(path, sizeof(path), "%s/inventory", a->state_dir);
	snprintf(lp, sizeof(lp), "%s/inventory.lock", a->state_dir);
	lfd = open(lp, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (lfd < 0)
		return -errno;
	flock(lfd, LOCK_EX);
	m = open_memstream(&out, &outlen);
	f = fopen(path, "re");
	while (f && fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\n")] = '\0';
		if (!*line || (remove && !strcmp(line, remove)))
			continue;
		if (add && !strcmp(line, add))
			present = true;
		fprintf(m, "%s\n", line);
	}
	if (f)
		fclose(f);
	if (add && !present)
		fprintf(m, "%s\n", add);
	fclose(m);
	rc = write_text(path, out ? out : "");
	free(out);
	close(lfd);
	return rc;
}

/* ------------------------------------------------------------ create */

static int copy_into(int dirfd, const char *src, const char *name, struct vm_err *err)
{
	int in = open(src, O_RDONLY | O_CLOEXEC), out = -1, rc = 0;
	char *buf = NULL;
	struct stat st;

	if (in < 0)
		return vm_errf(err, -errno, "%s: %s", src, strerror(errno));
	if (fstat(in, &st) || !S_ISREG(st.st_mode)) {
		rc = vm_errf(err, -EINVAL, "%s: not a regular file", src);
		goto out;
	}
	out = openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
	if (out < 0) {
		rc = vm_errf(err, -errno, "%s: %s", name, strerror(errno));
		goto out;
	}
	buf = malloc(1 << 20);
	if (!buf) {
		rc = vm_errf(err, -ENOMEM, "out of memory");
		goto out;
	}
	for (;;) {
		ssize_t n = read(in, buf, 1 << 20), w = 0;

		if (n < 0) {
			rc = vm_errf(err, -errno, "reading %s: %s", src, strerror(errno));
			goto out;
		}
		if (n == 0)
			break;
		while (w < n) {
			ssize_t k = write(out, buf + w, (size_t)(n - w));

			if (k < 0) {
				rc = vm_errf(err, -errno, "writing %s: %s", name, strerror(errno));
				goto out;
			}
			w += k;
		}
	}
	if (fsync(out))
		rc = vm_errf(err, -errno, "fsync %s: %s", name, strerror(errno));
out:
	free(buf);
	if (out >= 0)
		close(out);
	close(in);
	return rc;
}

static int make_flat(int dirfd, const char *name, uint64_t size, const char *prov,
		     struct vm_err *err)
{
	int fd = openat(dirfd, name, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	int rc = 0;

	if (fd < 0)
		return vm_errf(err, -errno, "%s: %s", name, strerror(errno));
	if (!strcmp(prov, "thin")) {
		if (ftruncate(fd, (off_t)size))
			rc = vm_errf(err, -errno, "%s: truncate: %s", name, strerror(errno));
	} else {
		if (fallocate(fd, 0, 0, (off_t)size))
			rc = vm_errf(err, -errno, "%s: fallocate %" PRIu64 " bytes: %s", name, size,
				     strerror(errno));
		if (!rc && !strcmp(prov, "eagerzeroed")) {
			/* write real zeros over the whole extent: every block is
			 * then allocated AND initialized, so the guest's first
			 * writes never pay for either */
			size_t chunk = 1 << 20;
			char *z = calloc(1, chunk);

			for (uint64_t off = 0; z && !rc && off < size; off += chunk) {
				size_t n = size - off < chunk ? (size_t)(size - off) : chunk;

				if (pwrite(fd, z, n, (off_t)off) != (ssize_t)n)
					rc = vm_errf(err, -errno ? -errno : -EIO, "%s: writing zeros: %s", name,
						     strerror(errno));
			}
			if (!z)
				rc = vm_errf(err, -ENOMEM, "out of memory");
			free(z);
		}
	}
	if (!rc && fsync(fd))
		rc = vm_errf(err, -errno, "%s: fsync: %s", name, strerror(errno));
	close(fd);
	return rc;
}

static int write_new_file(int dirfd, const char *name, const char *text, struct vm_err *err)
{
	int fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
	size_t len = strlen(text);

	if (fd < 0)
		return vm_errf(err, -errno, "%s: %s", name, strerror(errno));
	if (write(fd, text, len) != (ssize_t)len || fsync(fd)) {
		int rc = -errno ? -errno : -EIO;

		close(fd);
		return vm_errf(err, rc, "writing %s: %s", name, strerror(-rc));
	}
	close(fd);
	return 0;
}

static void remove_folder(const char *folder)
{
	int dfd = open(folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d;
	struct dirent *de;

	if (dfd < 0)
		return;
	d = fdopendir(dfd);
	if (!d) {
		close(dfd);
		return;
	}
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			unlinkat(dfd, de->d_name, 0);
	closedir(d);
	rmdir(folder);
}

static json_t *op_create(struct agent *a, json_t *req)
{
	const char *path = req_str(req, "path");
	const char *prov = req_str(req, "provisioning") ?: "thin";
	const char *guest = req_str(req, "guest_os") ?: "other-64";
	const char *iso = req_str(req, "iso"), *kernel = req_str(req, "kernel");
	const char *initrd = req_str(req, "initrd"), *append = req_str(req, "append");
	const char *accel = req_str(req, "accel"), *net = req_str(req, "net") ?: "nat";
	json_int_t cpus = json_integer_value(json_object_get(req, "cpus"));
	json_int_t mem = json_integer_value(json_object_get(req, "memory"));
	json_int_t disk = json_integer_value(json_object_get(req, "disk"));
	char buf[PATH_MAX], parent[PATH_MAX], folder[PATH_MAX + VM_NAME_MAX + 2];
	char name[VM_NAME_MAX + 1], fname[VM_NAME_MAX + 32];
	struct vmx_file vmx = {0};
	struct vmdk_desc desc = {0};
	struct vm_err err;
	enum vm_accel acc;
	int dirfd = -1, rc;
	json_t *reply = NULL;
	bool made = false;

	if (!path || path[0] != '/')
		return reply_err(EINVAL, "create: the agent needs an absolute VM folder path");
	snprintf(buf, sizeof(buf), "%s", path);
	while (strlen(buf) > 1 && buf[strlen(buf) - 1] == '/')
		buf[strlen(buf) - 1] = '\0';
	snprintf(name, sizeof(name), "%s", basename(buf));
	rc = vm_name_check(name, "VM name", 0, "create", &err);
	if (rc)
		return reply_err(rc, "%s", err.msg);
	if (name[0] == '.' || strlen(name) > 100)
		return reply_err(EINVAL, "create: '%s': a VM name must not start with '.' and has at most 100 bytes",
				 name);
	if (cpus < 1 || cpus > VM_MAX_VCPUS)
		return reply_err(EINVAL, "create: --cpus must be 1..%d", VM_MAX_VCPUS);
	if (mem < VM_MIN_MEM_MIB || mem > (16 << 20))
		return reply_err(EINVAL, "create: --memory must be %d MiB or more", VM_MIN_MEM_MIB);
	rc = vm_check_resources((unsigned)cpus, (unsigned)mem, &a->res, &err);
	if (rc)
		return reply_err(rc, "create: refused: %s", err.msg);
	if (disk <= 0)
		return reply_err(EINVAL, "create: --disk SIZE is required");
	if (strcmp(prov, "thin") && strcmp(prov, "thick") && strcmp(prov, "eagerzeroed"))
		return reply_err(EINVAL, "create: --provisioning must be thin, thick or eagerzeroed");
	if (accel && vm_accel_parse(accel, &acc))
		return reply_err(EINVAL, "create: --accel must be auto, kvm or tcg");
	if ((initrd || append) && !kernel)
		return reply_err(EINVAL, "create: --initrd and --append need --kernel");
	if (strcmp(net, "nat") && strcmp(net, "none") && strncmp(net, "bridge:", 7))
		return reply_err(EINVAL, "create: --net must be nat, none or bridge:NAME");
	if (append && (strlen(append) > VMX_MAX_VALUE || strpbrk(append, "\n\r")))
		return reply_err(EINVAL, "create: --append is longer than %d bytes or has a line break",
				 VMX_MAX_VALUE);
	/* 1 MiB multiple: the file block size of a default volume, and what
	 * VMware rounds disk sizes to */
	uint64_t size = ((uint64_t)disk + (1 << 20) - 1) & ~(uint64_t)((1 << 20) - 1);

	snprintf(buf, sizeof(buf), "%s", path);
	if (!realpath(dirname(buf), parent))
		return reply_err(errno, "create: parent folder of %s: %s", path, strerror(errno));
	snprintf(folder, sizeof(folder), "%s/%s", parent, name);
	if (mkdir(folder, 0755))
		return reply_err(errno, "create: %s: %s", folder,
				 errno == EEXIST ? "already exists" : strerror(errno));
	made = true;
	dirfd = open(folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dirfd < 0) {
		reply = reply_err(errno, "create: %s: %s", folder, strerror(errno));
		goto out;
	}

	/* flat extent and its descriptor */
	snprintf(desc.extent, sizeof(desc.extent), "%s-flat.vmdk", name);
	desc.sectors = size / 512;
	strcpy(desc.adapter, "lsilogic");
	desc.thin = !strcmp(prov, "thin");
	rc = make_flat(dirfd, desc.extent, size, prov, &err);
	if (rc) {
		reply = reply_err(rc, "create: %s", err.msg);
		goto out;
	}
	char *dtext = vmdk_format(&desc);
	snprintf(fname, sizeof(fname), "%s.vmdk", name);
	rc = dtext ? write_new_file(dirfd, fname, dtext, &err) : vm_errf(&err, -ENOMEM, "out of memory");
	free(dtext);
	if (rc) {
		reply = reply_err(rc, "create: %s", err.msg);
		goto out;
	}

	/* the .vmx, in the order VMware writes the keys */
	char num[32];
	vmx_set(&vmx, ".encoding", "UTF-8");
	vmx_set(&vmx, "config.version", "8");
	vmx_set(&vmx, "virtualHW.version", "14");
	vmx_set(&vmx, "displayName", name);
	vmx_set(&vmx, "guestOS", guest);
	snprintf(num, sizeof(num), "%lld", (long long)cpus);
	vmx_set(&vmx, "numvcpus", num);
	snprintf(num, sizeof(num), "%lld", (long long)mem);
	vmx_set(&vmx, "memSize", num);
	vmx_set(&vmx, "scsi0.present", "TRUE");
	vmx_set(&vmx, "scsi0.virtualDev", "pvscsi");
	vmx_set(&vmx, "scsi0:0.present", "TRUE");
	vmx_set(&vmx, "scsi0:0.fileName", fname);
	if (iso) {
		char isoname[VM_NAME_MAX + 1];

		snprintf(buf, sizeof(buf), "%s", iso);
		snprintf(isoname, sizeof(isoname), "%s", basename(buf));
		rc = vm_name_check(isoname, "--iso", 0, "create", &err);
		if (!rc)
			rc = copy_into(dirfd, iso, isoname, &err);
		if (rc) {
			reply = reply_err(rc, "create: --iso: %s", err.msg);
			goto out;
		}
		vmx_set(&vmx, "ide1:0.present", "TRUE");
		vmx_set(&vmx, "ide1:0.deviceType", "cdrom-image");
		vmx_set(&vmx, "ide1:0.fileName", isoname);
	}
	if (strcmp(net, "none")) {
		vmx_set(&vmx, "ethernet0.present", "TRUE");
		vmx_set(&vmx, "ethernet0.virtualDev", "vmxnet3");
		if (!strncmp(net, "bridge:", 7)) {
			vmx_set(&vmx, "ethernet0.connectionType", "bridged");
			vmx_set(&vmx, "ethernet0.networkName", net + 7);
		} else {
			vmx_set(&vmx, "ethernet0.connectionType", "nat");
		}
	}
	if (kernel) {
		rc = copy_into(dirfd, kernel, "vmlinuz", &err);
		if (!rc && initrd)
			rc = copy_into(dirfd, initrd, "initrd.img", &err);
		if (rc) {
			reply = reply_err(rc, "create: %s", err.msg);
			goto out;
		}
		vmx_set(&vmx, "vmfsd.kernel", "vmlinuz");
		if (initrd)
			vmx_set(&vmx, "vmfsd.initrd", "initrd.img");
		vmx_set(&vmx, "vmfsd.append", append ? append : "console=ttyS0");
	}
	if (accel)
		vmx_set(&vmx, "vmfsd.accel", vm_accel_name(acc));
	char *vtext = vmx_format(&vmx);
	snprintf(fname, sizeof(fname), "%s.vmx", name);
	/* validate what we wrote with the parser every other host will use
	 * (e.g. a bridge name with a bad character) */
	struct vmx_file chk;
	struct vm_config cfg;
	rc = vtext ? vmx_parse(vtext, strlen(vtext), fname, &chk, &err) : -ENOMEM;
	if (!rc) {
		rc = vm_config_from_vmx(&chk, fname, &cfg, &err);
		vmx_free(&chk);
	}
	if (!rc)
		rc = write_new_file(dirfd, fname, vtext, &err);
	free(vtext);
	if (rc) {
		reply = reply_err(rc, "create: %s", err.msg);
		goto out;
	}
	snprintf(buf, sizeof(buf), "%s/%s", folder, fname);
	inventory_edit(a, buf, NULL);
	agent_log(a, "created %s (%lld vCPUs, %lld MiB, %" PRIu64 " MiB %s disk)", buf, (long long)cpus,
		  (long long)mem, size >> 20, prov);
	reply = reply_ok("created %s (%lld vCPU, %lld MiB, %" PRIu64 " MiB %s disk)", folder,
			 (long long)cpus, (long long)mem, size >> 20, prov);
	json_object_set_new(reply, "path", json_string(folder));
	json_object_set_new(reply, "vmx", json_string(buf));
	made = false;
out:
	vmx_free(&vmx);
	if (dirfd >= 0)
		close(dirfd);
	if (made)
		remove_folder(folder);
	return reply;
}

/* ------------------------------------------------------------ power on */

struct files {
	int fd[VM_MAX_DISKS + 3];
	int n;
};

static void files_close(struct files *f)
{
	for (int i = 0; i < f->n; i++)
		if (f->fd[i] >= 0)
			close(f->fd[i]);
	f->n = 0;
}

/* Opens name in the VM folder: no symlink, a regular file. */
static int open_in_folder(int dirfd, const char *name, int flags, const char *key,
			  struct vm_err *err)
{
	struct stat st;
	int fd = openat(dirfd, name, flags | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);

	if (fd < 0) {
		int e = errno;

		if (e == ELOOP)
			return vm_errf(err, -ELOOP,
				       "%s: '%s' is a symbolic link (refused: it could point outside the VM folder)",
				       key, name);
		return vm_errf(err, -e, "%s: '%s': %s", key, name, strerror(e));
	}
	if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
		close(fd);
		return vm_errf(err, -EINVAL, "%s: '%s' is not a regular file", key, name);
	}
	return fd;
}

/* The host holding a busy file, as the cluster filesystem shows it: the
 * virtual attribute user.vmfsd.lock reads "<mode> by <host> (slot N)"
 * (fs/xattr.c).  host gets the name, desc the whole description. */
static void busy_holder(int dirfd, const char *name, char *host, size_t hsize, char *desc,
			size_t dsize)
{
	char path[64];
	int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_PATH);
	ssize_t l;

	host[0] = desc[0] = '\0';
	if (fd < 0)
		return;
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	l = getxattr(path, "user.vmfsd.lock", desc, dsize - 1);
	close(fd);
	if (l <= 0)
		return;
	desc[l] = '\0';
	for (char *c = desc; *c; c++)
		if ((unsigned char)*c < 0x20 || *c == 0x7f)
			*c = '?';
	const char *by = strstr(desc, " by ");
	if (by) {
		by += 4;
		size_t n = strcspn(by, " (");
		if (n < hsize) {
			memcpy(host, by, n);
			host[n] = '\0';
		}
	}
}

static void fmt_time(int64_t t, char *buf, size_t size)
{
	time_t tt = (time_t)t;
	struct tm tm;

	localtime_r(&tt, &tm);
	strftime(buf, size, "%Y-%m-%d %H:%M:%S", &tm);
}

/* Rotates <vm>.log like VMware's vmware.log: keeps 3 older ones. */
static void rotate_log(int dirfd, const char *name)
{
	char a[VM_NAME_MAX + 16], b[VM_NAME_MAX + 16];
	struct stat st;

	snprintf(a, sizeof(a), "%s.log", name);
	if (fstatat(dirfd, a, &st, AT_SYMLINK_NOFOLLOW) || st.st_size == 0)
		return;
	for (int i = 3; i >= 1; i--) {
		if (i == 1)
			snprintf(a, sizeof(a), "%s.log", name);
		else
			snprintf(a, sizeof(a), "%s-%d.log", name, i - 1);
		snprintf(b, sizeof(b), "%s-%d.log", name, i);
		renameat(dirfd, a, dirfd, b);
	}
}

/* Forks + execs QEMU with the given descriptors mapped to the numbers the
 * command line names; waits for the -daemonize parent.  Returns 0 and the
 * daemon's pid, or the exit status with QEMU's message in err. */
static int spawn_qemu(struct vmctx *v, struct strv *argv, const int *src, const int *dst, int n,
		      pid_t *qemu_pid, struct vm_err *err)
{
	char errpath[PATH_MAX + 16], pidpath[PATH_MAX + 16], buf[64];
	int efd, st = 0;
	pid_t pid;
	int64_t deadline;

	sfile(v, "qemu.err", errpath, sizeof(errpath));
	sfile(v, "qemu.pid", pidpath, sizeof(pidpath));
	unlink(pidpath);
	efd = open(errpath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (efd < 0)
		return vm_errf(err, -errno, "%s: %s", errpath, strerror(errno));
	pid = fork();
	if (pid < 0) {
		close(efd);
		return vm_errf(err, -errno, "fork: %s", strerror(errno));
	}
	if (pid == 0) {
		int hi[VM_MAX_DISKS + 3], nul = open("/dev/null", O_RDWR);

		/* move every source out of the way first, then place it */
		for (int i = 0; i < n; i++)
			hi[i] = fcntl(src[i], F_DUPFD_CLOEXEC, 100);
		dup2(nul, 0);
		dup2(efd, 1);
		dup2(efd, 2);
		for (int i = 0; i < n; i++)
			dup2(hi[i], dst[i]);       /* dup2 clears FD_CLOEXEC */
		setsid();
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		execvp(argv->v[0], argv->v);
		fprintf(stderr, "exec %s: %s\n", argv->v[0], strerror(errno));
		_exit(127);
	}
	close(efd);
	deadline = now_ms() + START_TIMEOUT_MS;
	for (;;) {
		pid_t r = waitpid(pid, &st, WNOHANG);

		if (r == pid)
			break;
		if (now_ms() > deadline) {
			kill(pid, SIGKILL);
			waitpid(pid, &st, 0);
			return vm_errf(err, -ETIMEDOUT, "QEMU did not start within %d s",
				       START_TIMEOUT_MS / 1000);
		}
		sleep_ms(20);
	}
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		char msg[400] = "";
		int fd = open(errpath, O_RDONLY | O_CLOEXEC);

		if (fd >= 0) {
			ssize_t k = read(fd, msg, sizeof(msg) - 1);

			msg[k > 0 ? k : 0] = '\0';
			close(fd);
		}
		for (char *c = msg; *c; c++)
			if (*c == '\n')
				*c = ' ';
		return vm_errf(err, -EIO, "QEMU failed to start (exit %d): %s",
			       WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st), msg);
	}
	if (read_text(pidpath, buf, sizeof(buf)) || atoi(buf) <= 0)
		return vm_errf(err, -EIO, "QEMU started but wrote no pid file");
	*qemu_pid = atoi(buf);
	return 0;
}

static int wait_migration(struct qmp *q, bool incoming, struct vm_err *err)
{
	int64_t deadline = now_ms() + MIGRATE_TIMEOUT_MS;

	for (;;) {
		json_t *ret = NULL;
		int rc = qmp_exec(q, incoming ? "query-status" : "query-migrate", NULL, &ret, err);
		const char *s;

		if (rc)
			return rc;
		s = json_string_value(json_object_get(ret, "status"));
		if (!s)
			s = "";
		if (incoming ? strcmp(s, "inmigrate") != 0 : !strcmp(s, "completed")) {
			json_decref(ret);
			break;
		}
		if (!incoming && (!strcmp(s, "failed") || !strcmp(s, "cancelled"))) {
			const char *e = json_string_value(json_object_get(ret, "error-desc"));

			rc = vm_errf(err, -EIO, "migration %s: %s", s, e ? e : "(no reason given)");
			json_decref(ret);
			return rc;
		}
		json_decref(ret);
		if (now_ms() > deadline)
			return vm_errf(err, -ETIMEDOUT, "migration did not finish within %d s",
				       MIGRATE_TIMEOUT_MS / 1000);
		sleep_ms(100);
	}
	if (incoming) {
		json_t *ret = NULL;
		int rc = qmp_exec(q, "query-migrate", NULL, &ret, err);
		const char *s = json_string_value(json_object_get(ret, "status"));

		if (!rc && s && !strcmp(s, "failed"))
			rc = vm_errf(err, -EIO, "loading the memory state failed");
		json_decref(ret);
		return rc;
	}
	return 0;
}

static json_t *power_on(struct agent *a, struct vmctx *v, json_t *req)
{
	struct vm_config *c = &v->cfg;
	struct vm_launch l = {.cfg = c, .qemu = a->qemu, .kernel_fd = -1, .initrd_fd = -1,
			      .log_fd = -1};
	struct files fl = {0};
	int src[VM_MAX_DISKS + 3], dst[VM_MAX_DISKS + 3], nfd = 0, vmss_fd = -1, rc;
	char lockname[VM_NAME_MAX + 8], vmss[VM_NAME_MAX + 8], logname[VM_NAME_MAX + 8];
	char qmp_path[PATH_MAX + 16], ser_path[PATH_MAX + 16], pidfile[PATH_MAX + 16];
	struct vm_lockrec rec = {0}, cur;
	struct vm_err err;
	pid_t qpid = 0;
	json_t *reply = NULL;
	bool locked = false, force = json_is_true(json_object_get(req, "force"));
	bool want_resume = json_is_true(json_object_get(req, "resume"));

	if ((qpid = vm_qemu_pid(v)))
		return reply_err(EALREADY, "%s is already running on host %s (QEMU pid %d)", v->vmx_path,
				 a->host, (int)qpid);
	vmss_name(v, vmss, sizeof(vmss));
	l.incoming = file_exists_at(v->dirfd, vmss);
	if (want_resume && !l.incoming)
		return reply_err(ENOENT, "%s is not suspended (no %s)", v->vmx_path, vmss);
	rc = vm_check_resources(c->vcpus, c->mem_mib, &a->res, &err);
	if (rc)
		return reply_err(rc, "%s: power-on refused: %s", v->vmx_path, err.msg);
	l.accel = vm_accel_resolve(c->accel != VM_ACCEL_AUTO ? c->accel : a->accel);
	if (l.accel == VM_ACCEL_KVM && !vm_kvm_usable())
		return reply_err(ENODEV, "%s: the VM wants KVM but /dev/kvm is not usable on host %s",
				 v->vmx_path, a->host);

	/* 1. open every file ourselves; flat extents O_RDWR: on a cluster
	 * mount this is where another live host's exclusive lock answers */
	for (size_t i = 0; i < c->ndisks; i++) {
		const struct vm_disk *d = &c->disks[i];
		char key[40];
		int fd;

		snprintf(key, sizeof(key), "%s.fileName", d->key);
		if (d->cdrom) {
			fd = open_in_folder(v->dirfd, d->file, O_RDONLY, key, &err);
			if (fd < 0) {
				reply = reply_err(fd, "%s: %s", v->vmx_path, err.msg);
				goto fail;
			}
		} else {
			struct vmdk_desc desc;
			struct stat st;

			rc = vmdk_load(v->dirfd, d->file, &desc, &err);
			if (rc) {
				reply = reply_err(rc, "%s: %s: %s", v->vmx_path, key, err.msg);
				goto fail;
			}
			fd = open_in_folder(v->dirfd, desc.extent, O_RDWR, d->file, &err);
			if (fd == -EBUSY) {
				char holder[256], ldesc[320], ln[VM_NAME_MAX + 8];
				struct vm_lockrec lr;

				busy_holder(v->dirfd, desc.extent, holder, sizeof(holder), ldesc,
					    sizeof(ldesc));
				if (!holder[0] && !vm_lockrec_name(c, ln, sizeof(ln)) &&
				    !vm_lockrec_read(v->dirfd, ln, &lr))
					snprintf(holder, sizeof(holder), "%s", lr.host);
				reply = reply_err(EBUSY, "%s is running on host %s: its disk %s is locked%s%s%s: power it off there first",
						  v->vmx_path, holder[0] ? holder : "(another host)", desc.extent,
						  ldesc[0] ? " (" : "", ldesc, ldesc[0] ? ")" : "");
				goto fail;
			}
			if (fd < 0) {
				reply = reply_err(fd, "%s: %s", v->vmx_path, err.msg);
				goto fail;
			}
			if (fstat(fd, &st) == 0 && (uint64_t)st.st_size < desc.sectors * 512) {
				close(fd);
				reply = reply_err(EINVAL, "%s: %s is %lld bytes, shorter than the %" PRIu64
						  " its descriptor %s declares", v->vmx_path, desc.extent,
						  (long long)st.st_size, desc.sectors * 512, d->file);
				goto fail;
			}
			l.disk_size[i] = desc.sectors * 512;
		}
		fl.fd[fl.n++] = fd;
		src[nfd] = fd;
		dst[nfd] = 3 + nfd;
		l.disk_fd[i] = dst[nfd++];
	}
	if (c->kernel[0]) {
		int fd = open_in_folder(v->dirfd, c->kernel, O_RDONLY, "vmfsd.kernel", &err);

		if (fd < 0) {
			reply = reply_err(fd, "%s: %s", v->vmx_path, err.msg);
			goto fail;
		}
		fl.fd[fl.n++] = fd;
		src[nfd] = fd;
		dst[nfd] = 3 + nfd;
		l.kernel_fd = dst[nfd++];
	}
	if (c->initrd[0]) {
		int fd = open_in_folder(v->dirfd, c->initrd, O_RDONLY, "vmfsd.initrd", &err);

		if (fd < 0) {
			reply = reply_err(fd, "%s: %s", v->vmx_path, err.msg);
			goto fail;
		}
		fl.fd[fl.n++] = fd;
		src[nfd] = fd;
		dst[nfd] = 3 + nfd;
		l.initrd_fd = dst[nfd++];
	}

	/* 2. the lock record, O_EXCL */
	vm_lockrec_name(c, lockname, sizeof(lockname));
	snprintf(rec.host, sizeof(rec.host), "%s", a->host);
	rec.agent_pid = getppid();     /* the agent, not this request's child */
	rec.started = (int64_t)time(NULL);
	vm_boot_id(rec.boot_id, sizeof(rec.boot_id));
	for (int attempt = 0; attempt < 2 && !locked; attempt++) {
		rc = vm_lockrec_create(v->dirfd, lockname, &rec, &cur);
		if (rc == 0) {
			locked = true;
			break;
		}
		if (rc != -EEXIST) {
			reply = reply_err(rc, "%s: cannot create the lock record %s: %s", v->vmx_path,
					  lockname, strerror(-rc));
			goto fail;
		}
		if (!cur.host[0]) {
			reply = reply_err(EBUSY, "%s: a lock record %s exists but cannot be read: another host may be powering the VM on; remove it only if no host runs the VM",
					  v->vmx_path, lockname);
			goto fail;
		}
		if (strcmp(cur.host, a->host)) {
			char when[32];

			fmt_time(cur.started, when, sizeof(when));
			if (!force) {
				reply = reply_err(EBUSY, "%s is running on host %s (since %s, QEMU pid %d there): power it off there first",
						  v->vmx_path, cur.host, when, (int)cur.qemu_pid);
				goto fail;
			}
			agent_log(a, "%s: --force: breaking the lock record of host %s (since %s); its disks opened for writing here",
				  v->vmx_path, cur.host, when);
		} else {
			char bid[40] = "";

			vm_boot_id(bid, sizeof(bid));
			if (!strcmp(cur.boot_id, bid) && vm_pid_alive(cur.qemu_pid)) {
				reply = reply_err(EBUSY, "%s is running on this host (%s) under another agent (QEMU pid %d)",
						  v->vmx_path, a->host, (int)cur.qemu_pid);
				goto fail;
			}
			agent_log(a, "%s: removing the stale lock record of this host (QEMU pid %d is gone)",
				  v->vmx_path, (int)cur.qemu_pid);
		}
		vm_lockrec_remove(v->dirfd, lockname);
	}
	if (!locked) {
		reply = reply_err(EBUSY, "%s: lost a race for the lock record %s", v->vmx_path, lockname);
		goto fail;
	}

	/* 3. the serial log: local (QEMU writes it), copied to <vm>.log on
	 * the datastore by vm_log_sync */
	rotate_log(v->dirfd, c->name);
	snprintf(logname, sizeof(logname), "%s.log", c->name);
	{
		char lp[PATH_MAX + 16], dp[PATH_MAX + VM_NAME_MAX + 8];
		int fd = openat(v->dirfd, logname,
				O_WRONLY | O_APPEND | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY,
				0644);

		if (fd < 0) {
			reply = reply_err(errno, "%s: cannot create %s: %s", v->vmx_path, logname,
					  strerror(errno));
			goto fail;
		}
		close(fd);
		snprintf(dp, sizeof(dp), "%s/%s", v->folder, logname);
		sfile(v, "dslog", lp, sizeof(lp));
		write_text(lp, dp);
		sfile(v, "serial.log", lp, sizeof(lp));
		fd = open(lp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		if (fd < 0) {
			reply = reply_err(errno, "%s: %s", lp, strerror(errno));
			goto fail;
		}
		fl.fd[fl.n++] = fd;
		src[nfd] = fd;
		dst[nfd] = 3 + nfd;
		l.log_fd = dst[nfd++];
	}

	/* 4. QEMU; io_uring first, then native AIO, then the thread pool
	 * (io_uring can be disabled by sysctl or a seccomp profile) */
	sfile(v, "qmp.sock", qmp_path, sizeof(qmp_path));
	sfile(v, "serial.sock", ser_path, sizeof(ser_path));
	sfile(v, "qemu.pid", pidfile, sizeof(pidfile));
	unlink(qmp_path);
	unlink(ser_path);
	l.qmp_path = qmp_path;
	l.serial_path = ser_path;
	l.pidfile = pidfile;
	static const char *const aios[] = {"io_uring", "native", "threads"};
	for (int i = 0; i < 3; i++) {
		struct strv argv = {0};

		l.aio = aios[i];
		rc = vm_qemu_argv(&l, &argv, &err);
		if (rc) {
			reply = reply_err(rc, "%s: %s", v->vmx_path, err.msg);
			goto fail;
		}
		rc = spawn_qemu(v, &argv, src, dst, nfd, &qpid, &err);
		strv_free(&argv);
		if (rc == 0)
			break;
		if (i < 2 && (strstr(err.msg, "io_uring") || strstr(err.msg, "aio=native") ||
			      strstr(err.msg, "native"))) {
			agent_log(a, "%s: aio=%s failed (%s); trying aio=%s", v->vmx_path, aios[i], err.msg,
				  aios[i + 1]);
			continue;
		}
		reply = reply_err(rc, "%s: %s", v->vmx_path, err.msg);
		goto fail;
	}
	rec.qemu_pid = qpid;
	vm_lockrec_update(v->dirfd, lockname, &rec);
	{
		char p[PATH_MAX + 16];

		sfile(v, "vmx", p, sizeof(p));
		write_text(p, v->vmx_path);
		sfile(v, "accel", p, sizeof(p));
		write_text(p, vm_accel_name(l.accel));
		sfile(v, "pid", p, sizeof(p));
		char pidtxt[32];
		snprintf(pidtxt, sizeof(pidtxt), "%d\n", (int)qpid);
		write_text(p, pidtxt);
	}
	files_close(&fl);

	/* 5. resume: feed the memory state, then run */
	if (l.incoming) {
		struct qmp q;

		vmss_fd = open_in_folder(v->dirfd, vmss, O_RDONLY, "suspend file", &err);
		rc = vmss_fd < 0 ? vmss_fd : qmp_open(&q, qmp_path, QMP_TIMEOUT_MS, &err);
		if (!rc) {
			rc = qmp_exec_fd(&q, "getfd", json_pack("{s:s}", "fdname", "vmss"), vmss_fd, NULL, &err);
			if (!rc)
				rc = qmp_exec(&q, "migrate-incoming", json_pack("{s:s}", "uri", "fd:vmss"), NULL,
					      &err);
			if (!rc)
				rc = wait_migration(&q, true, &err);
			if (!rc)
				rc = qmp_exec(&q, "cont", NULL, NULL, &err);
			qmp_close(&q);
		}
		if (rc) {
			kill(qpid, SIGKILL);
			wait_pid_gone(qpid, QUIT_GRACE_MS);
			vm_cleanup(a, v, "resume failed");
			reply = reply_err(rc, "%s: resume from %s failed: %s (the suspend file is kept)",
					  v->vmx_path, vmss, err.msg);
			goto out;
		}
		/* the state now lives in the running VM; resuming the same
		 * file again later would roll the guest back over newer disk
		 * contents */
		unlinkat(v->dirfd, vmss, 0);
	}
	inventory_edit(a, v->vmx_path, NULL);
	{
		char p[PATH_MAX + 16];

		sfile(v, "fenced", p, sizeof(p));       /* a new run: the old fence is history */
		unlink(p);
	}
	agent_log(a, "%s: %s (QEMU pid %d, %s, aio=%s)", v->vmx_path,
		  l.incoming ? "resumed" : "powered on", (int)qpid, vm_accel_name(l.accel), l.aio);
	reply = reply_ok("%s %s on host %s (QEMU pid %d, %s)", v->vmx_path,
			 l.incoming ? "resumed" : "powered on", a->host, (int)qpid, vm_accel_name(l.accel));
	json_object_set_new(reply, "pid", json_integer(qpid));
	json_object_set_new(reply, "host", json_string(a->host));
	json_object_set_new(reply, "accel", json_string(vm_accel_name(l.accel)));
	goto out;
fail:
	files_close(&fl);
	if (locked)
		vm_lockrec_remove(v->dirfd, lockname);
out:
	if (vmss_fd >= 0)
		close(vmss_fd);
	return reply;
}

/* ------------------------------------------------------------ power off etc. */

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
	vm_cleanup(a, v, why);
	return NULL;
}

static json_t *power_off(struct agent *a, struct vmctx *v)
{
	pid_t pid = vm_qemu_pid(v);

	if (!pid)
		return reply_err(ENOENT, "%s is not running on host %s", v->vmx_path, a->host);
	stop_qemu(a, v, pid, "powered off");
	return reply_ok("%s powered off", v->vmx_path);
}

static json_t *shutdown_vm(struct agent *a, struct vmctx *v, json_t *req)
{
	pid_t pid = vm_qemu_pid(v);
	json_int_t t = json_integer_value(json_object_get(req, "timeout"));
	struct vm_err err;
	json_t *e;

	if (!pid)
		return reply_err(ENOENT, "%s is not running on host %s", v->vmx_path, a->host);
	if (t <= 0)
		t = a->shutdown_timeout;
	e = qmp_simple(v, "system_powerdown", NULL, NULL, &err);
	if (e)
		return e;
	agent_log(a, "%s: ACPI power button pressed; waiting up to %lld s", v->vmx_path, (long long)t);
	if (wait_pid_gone(pid, (int)t * 1000)) {
		vm_cleanup(a, v, "guest shut down");
		return reply_ok("%s: the guest shut down", v->vmx_path);
	}
	stop_qemu(a, v, pid, "powered off after the shutdown timeout");
	json_t *r = reply_ok("%s: the guest did not shut down within %lld s: powered off", v->vmx_path,
			     (long long)t);
	json_object_set_new(r, "forced", json_true());
	return r;
}

static json_t *reset_vm(struct agent *a, struct vmctx *v)
{
	struct vm_err err;
	json_t *e;

	if (!vm_qemu_pid(v))
		return reply_err(ENOENT, "%s is not running on host %s", v->vmx_path, a->host);
	e = qmp_simple(v, "system_reset", NULL, NULL, &err);
	if (e)
		return e;
	agent_log(a, "%s: reset", v->vmx_path);
	return reply_ok("%s reset", v->vmx_path);
}

static json_t *suspend_vm(struct agent *a, struct vmctx *v)
{
	pid_t pid = vm_qemu_pid(v);
	char vmss[VM_NAME_MAX + 8], p[PATH_MAX + 16];
	struct vm_err err;
	struct qmp q;
	int fd, rc;

	if (!pid)
		return reply_err(ENOENT, "%s is not running on host %s", v->vmx_path, a->host);
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
	/* QEMU 7.2 limits migration to 32 MiB/s by default (MAX_THROTTLE in
	 * migration/migration.c), a pace meant for a network link: a save to
	 * a file goes as fast as the disk (libvirt lifts the limit the same
	 * way for its save-to-file) */
	if (!rc)
		rc = qmp_exec(&q, "migrate-set-parameters",
			      json_pack("{s:I}", "max-bandwidth", (json_int_t)1 << 40), NULL, &err);
	if (!rc)
		rc = qmp_exec_fd(&q, "getfd", json_pack("{s:s}", "fdname", "vmss"), fd, NULL, &err);
	if (!rc)
		rc = qmp_exec(&q, "migrate", json_pack("{s:s}", "uri", "fd:vmss"), NULL, &err);
	if (!rc)
		rc = wait_migration(&q, false, &err);
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
	agent_log(a, "%s: suspended to %s (%lld bytes)", v->vmx_path, vmss, sz);
	json_t *r = reply_ok("%s suspended to %s (%lld MiB)", v->vmx_path, vmss, sz >> 20);
	json_object_set_new(r, "suspend_file", json_string(vmss));
	return r;
}

static json_t *destroy_vm(struct agent *a, struct vmctx *v)
{
	char name[VM_NAME_MAX + 16];
	struct vm_lockrec r;
	DIR *d;
	struct dirent *de;
	int dfd, n = 0;

	if (vm_qemu_pid(v))
		return reply_err(EBUSY, "%s is running on host %s: power it off first", v->vmx_path,
				 a->host);
	vm_lockrec_name(&v->cfg, name, sizeof(name));
	if (!vm_lockrec_read(v->dirfd, name, &r))
		return reply_err(EBUSY, "%s is running on host %s (lock record %s): power it off first",
				 v->vmx_path, r.host, name);
	/* only regular files of the folder; a subfolder makes rmdir fail and
	 * is reported, never recursed into */
	dfd = dup(v->dirfd);
	d = dfd >= 0 ? fdopendir(dfd) : NULL;
	if (!d)
		return reply_err(errno, "%s: %s", v->folder, strerror(errno));
	while ((de = readdir(d))) {
		struct stat st;

		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (!fstatat(dfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) && !S_ISDIR(st.st_mode) &&
		    !unlinkat(dfd, de->d_name, 0))
			n++;
	}
	closedir(d);
	inventory_edit(a, NULL, v->vmx_path);
	if (rmdir(v->folder))
		return reply_err(errno, "%s: removed %d files but not the folder: %s", v->folder, n,
				 strerror(errno));
	agent_log(a, "destroyed %s (%d files)", v->folder, n);
	{
		char p[PATH_MAX + 16];

		sfile(v, "lock", p, sizeof(p));
		unlink(p);
		sfile(v, "qemu.err", p, sizeof(p));
		unlink(p);
		sfile(v, "vmx", p, sizeof(p));
		unlink(p);
		rmdir(v->sdir);
	}
	return reply_ok("destroyed %s (%d files)", v->folder, n);
}

/* ------------------------------------------------------------ list, info */

static json_t *list_vms(struct agent *a)
{
	char path[PATH_MAX + 16], line[PATH_MAX + 2];
	json_t *vms = json_array(), *r;
	FILE *f;

	snprintf(path, sizeof(path), "%s/inventory", a->state_dir);
	f = fopen(path, "re");
	while (f && fgets(line, sizeof(line), f)) {
		struct vmctx v;
		struct vm_err err;

		line[strcspn(line, "\n")] = '\0';
		if (!*line)
			continue;
		if (vmctx_open(a, line, false, &v, &err)) {
			json_array_append_new(vms, json_pack("{s:s,s:s,s:o,s:s}", "vmx", line, "state",
							     "invalid", "host", json_null(), "error", err.msg));
		} else {
			json_array_append_new(vms, vm_state(a, &v, false));
		}
		vmctx_close(&v);
	}
	if (f)
		fclose(f);
	r = json_pack("{s:b,s:o,s:s}", "ok", 1, "vms", vms, "host", a->host);
	return r;
}

/* ------------------------------------------------------------ fencing */

static bool pid_listed(json_t *pids, pid_t pid)
{
	size_t i;
	json_t *e;

	json_array_foreach(pids, i, e)
		if (pid > 0 && json_integer_value(e) == pid)
			return true;
	return false;
}

/* Kills at once (SIGKILL, no QMP round trip) every VM of this host whose
 * folder is under `mount`: what a host must do the instant it loses a
 * volume, before any survivor may break its locks and restart the VMs
 * (docs/cluster.md §3, docs/vm.md "Fencing").  vmfsd sends this request
 * itself when its host fences ("fenced": true), after it has already
 * killed every process holding files on the mount ("killed": their
 * pids); so a VM counts as ours to mark when its QEMU still runs, or when
 * its current or last pid is one vmfsd killed.  Marked VMs get a "fenced"
 * note in their state folder: `info` shows it, the cleanup logs it, and
 * nothing here restarts them.  Lock records are left alone: the volume
 * refuses this host's writes now. */
static json_t *kill_volume(struct agent *a, json_t *req, const char *mount)
{
	char vms[PATH_MAX + 8], pre[PATH_MAX + 2];
	json_t *killed = json_array(), *r, *vpids = json_object_get(req, "killed");
	bool fenced = json_is_true(json_object_get(req, "fenced"));
	DIR *d;
	struct dirent *de;

	if (!mount || mount[0] != '/')
		return reply_err(EINVAL, "kill-volume: the agent needs an absolute mount point");
	snprintf(pre, sizeof(pre), "%s", mount);
	while (strlen(pre) > 1 && pre[strlen(pre) - 1] == '/')
		pre[strlen(pre) - 1] = '\0';
	strcat(pre, "/");
	if (fenced)
		agent_log(a, "volume %s fenced: vmfsd killed %zu process(es) holding files on it",
			  mount, json_array_size(vpids));
	snprintf(vms, sizeof(vms), "%s/vms", a->state_dir);
	d = opendir(vms);
	while (d && (de = readdir(d))) {
		struct vmctx v;
		char p[PATH_MAX + 16], vmx[PATH_MAX], buf[64];
		pid_t pid, last = 0;

		if (de->d_name[0] == '.')
			continue;
		memset(&v, 0, sizeof(v));
		v.dirfd = v.lockfd = -1;
		snprintf(v.sdir, sizeof(v.sdir), "%s/%s", vms, de->d_name);
		sfile(&v, "vmx", p, sizeof(p));
		if (read_text(p, vmx, sizeof(vmx)) || strncmp(vmx, pre, strlen(pre)))
			continue;
		pid = vm_qemu_pid(&v);
		sfile(&v, "pid", p, sizeof(p));
		if (!read_text(p, buf, sizeof(buf)))
			last = atoi(buf);
		sfile(&v, "last-pid", p, sizeof(p));
		if (!pid && !pid_listed(vpids, last) && !read_text(p, buf, sizeof(buf)))
			last = atoi(buf);
		if (!pid && !(fenced && pid_listed(vpids, last)))
			continue;
		if (fenced) {
			char note[PATH_MAX + 64];

			snprintf(note, sizeof(note), "%s %lld\n", mount, (long long)time(NULL));
			sfile(&v, "fenced", p, sizeof(p));
			write_text(p, note);
		}
		if (pid)
			kill(pid, SIGKILL);
		if (fenced)
			agent_log(a, "%s: killed by the fence of volume %s (QEMU pid %d, killed by %s); "
				  "not restarted here: the survivors may take the VM over", vmx, mount,
				  (int)(pid ? pid : last), pid ? "the agent" : "vmfsd");
		else
			agent_log(a, "%s: killed (QEMU pid %d): volume %s lost", vmx, (int)pid, mount);
		json_array_append_new(killed, json_string(vmx));
	}
	if (d)
		closedir(d);
	r = reply_ok("killed %zu VM(s) of %s", json_array_size(killed), mount);
	json_object_set_new(r, "killed", killed);
	return r;
}

/* ------------------------------------------------------------ dispatch */

json_t *agent_request(struct agent *a, json_t *req)
{
	const char *cmd = req_str(req, "cmd"), *path = req_str(req, "path");
	struct vmctx v;
	struct vm_err err;
	json_t *r;

	if (!cmd)
		return reply_err(EINVAL, "request without \"cmd\"");
	if (!strcmp(cmd, "create"))
		return op_create(a, req);
	if (!strcmp(cmd, "list"))
		return list_vms(a);
	if (!strcmp(cmd, "kill-volume"))
		return kill_volume(a, req, path);
	if (!strcmp(cmd, "agent-info")) {
		return json_pack("{s:b,s:s,s:i,s:s,s:s,s:s,s:i,s:I,s:b,s:b}", "ok", 1, "host", a->host,
				 "pid", (int)getppid(), "state_dir", a->state_dir, "accel",
				 vm_accel_name(a->accel), "auto_accel",
				 vm_accel_name(vm_accel_resolve(VM_ACCEL_AUTO)), "cpus", (int)a->res.cpus,
				 "memory_mib", (json_int_t)a->res.mem_mib, "kvm_usable", vm_kvm_usable(),
				 "nested", vm_nested());
	}
	static const char *const locked_cmds[] = {"power-on", "resume", "shutdown", "power-off",
						  "reset", "suspend", "destroy", NULL};
	bool lock = false;
	for (int i = 0; locked_cmds[i]; i++)
		lock |= !strcmp(cmd, locked_cmds[i]);
	if (!strcmp(cmd, "unregister")) {
		char buf[PATH_MAX];

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
	int rc = vmctx_open(a, path, lock, &v, &err);
	if (rc) {
		vmctx_close(&v);
		return reply_err(rc, "%s", err.msg);
	}
	if (!strcmp(cmd, "info")) {
		r = vm_state(a, &v, true);
		json_object_set_new(r, "ok", json_true());
	} else if (!strcmp(cmd, "register")) {
		/* check the disks too: a VM that cannot power on should not
		 * look registered and fine */
		rc = 0;
		for (size_t i = 0; !rc && i < v.cfg.ndisks; i++) {
			struct vmdk_desc d;

			if (!v.cfg.disks[i].cdrom)
				rc = vmdk_load(v.dirfd, v.cfg.disks[i].file, &d, &err);
		}
		if (rc) {
			r = reply_err(rc, "register: %s", err.msg);
		} else {
			inventory_edit(a, v.vmx_path, NULL);
			r = reply_ok("registered %s", v.vmx_path);
		}
	} else if (!strcmp(cmd, "power-on")) {
		r = power_on(a, &v, req);
	} else if (!strcmp(cmd, "resume")) {
		pid_t pid = vm_qemu_pid(&v);

		/* running but paused (an I/O error, a stop): continue it;
		 * otherwise resume from the .vmss */
		if (pid) {
			r = continue_vm(a, &v, pid);
		} else {
			json_object_set_new(req, "resume", json_true());
			r = power_on(a, &v, req);
		}
	} else if (!strcmp(cmd, "shutdown")) {
		r = shutdown_vm(a, &v, req);
	} else if (!strcmp(cmd, "power-off")) {
		r = power_off(a, &v);
	} else if (!strcmp(cmd, "reset")) {
		r = reset_vm(a, &v);
	} else if (!strcmp(cmd, "suspend")) {
		r = suspend_vm(a, &v);
	} else if (!strcmp(cmd, "destroy")) {
		r = destroy_vm(a, &v);
	} else if (!strcmp(cmd, "console")) {
		char p[PATH_MAX + 16];

		sfile(&v, "serial.sock", p, sizeof(p));
		if (!vm_qemu_pid(&v))
			r = reply_err(ENOENT, "%s is not running on host %s", v.vmx_path, a->host);
		else
			{
			char ln[VM_NAME_MAX + 8];

			snprintf(ln, sizeof(ln), "%s.log", v.cfg.name);
			r = json_pack("{s:b,s:s,s:s}", "ok", 1, "serial", p, "log", ln);
		}
	} else {
		r = reply_err(EINVAL, "unknown command '%s'", cmd);
	}
	vmctx_close(&v);
	return r;
}

/* ------------------------------------------------------------ reconcile */

void agent_reconcile(struct agent *a, bool startup)
{
	char vms[PATH_MAX + 8];
	DIR *d;
	struct dirent *de;

	snprintf(vms, sizeof(vms), "%s/vms", a->state_dir);
	d = opendir(vms);
	if (!d)
		return;
	while ((de = readdir(d))) {
		struct vmctx v;
		struct vm_err err;
		char p[PATH_MAX + 16], vmx[PATH_MAX];
		int lfd;

		if (de->d_name[0] == '.')
			continue;
		memset(&v, 0, sizeof(v));
		v.dirfd = v.lockfd = -1;
		snprintf(v.sdir, sizeof(v.sdir), "%s/%s", vms, de->d_name);
		sfile(&v, "pid", p, sizeof(p));
		if (access(p, F_OK))
			continue;           /* not started, or already cleaned */
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
		pid_t pid = vm_qemu_pid(&v);
		if (pid) {
			if (startup)
				agent_log(a, "%s: re-attached to the running VM (QEMU pid %d)", vmx, (int)pid);
			vm_log_sync(&v);
			vm_watch_io_error(a, &v, vmx);
		} else {
			/* load the folder to find its lock record; a datastore
			 * that went away still gets its runtime files cleaned */
			int orc = vmctx_open(a, vmx, false, &v, &err), sig = 0;
			char why[64], buf[32];

			snprintf(v.sdir, sizeof(v.sdir), "%s/%s", vms, de->d_name);
			/* how it ended, if the agent reaped it (main.c records) */
			sfile(&v, "pid", p, sizeof(p));
			if (!read_text(p, buf, sizeof(buf)))
				sig = agent_reaped_signal(a, (pid_t)atoi(buf));
			if (sig > 0)
				snprintf(why, sizeof(why), "QEMU was killed (signal %d)", sig);
			else
				snprintf(why, sizeof(why), "%s", orc == 0 ? "QEMU exited (guest powered off)"
									  : "QEMU exited");
			vm_cleanup(a, &v, why);
		}
		vmctx_close(&v);
		close(lfd);
	}
	closedir(d);
}
