// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Snapshots in the host agent (docs/vm.md "Snapshots"): create, list,
 * revert, delete one or all, for a VM running on this host (through QMP)
 * or stopped (with qemu-img, holding the VM's lock record so that no host
 * powers it on meanwhile).  The model: each disk's flat extent stays the
 * raw base; a snapshot freezes each disk's active file and puts a new
 * qcow2 delta over it; the tree and the chains live in <vm>.vmsd
 * (vm/vmsd.c).  Deleting snapshot S commits the one delta standing on S's
 * frozen file into that file (block-commit online, qemu-img commit
 * offline); reverting drops the active deltas and starts new ones over
 * S's files, and with S's memory state brings the VM back running.
 *
 * Crash safety, by the order of the steps:
 * - create: the delta files are made and synced, then the .vmsd naming
 *   them is renamed into place, and only then does QEMU switch to them.
 *   A crash before the rename leaves unreferenced files (removed by the
 *   next create); after it, the chain in the .vmsd is the one a power-on
 *   uses, and the delta over the old top is empty or holds the writes
 *   made since: consistent either way.  A snapshot marked "creating" is
 *   one whose switch was not confirmed.
 * - delete: the snapshot is marked "deleting" first (no revert to it
 *   from then on: its file is being merged).  While C is committed into
 *   F, "C over F" reads the same as before (every cluster copied into F
 *   is also in C, which is read first), so a crash leaves a chain that
 *   powers on; the delete is simply run again.  Only after the commit
 *   ended is the .vmsd rewritten without C.  An active commit pauses the
 *   guest from the job's completion until that rewrite (milliseconds),
 *   so no write lands in F alone while the .vmsd still says "C over F".
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ops.h"
#include "storage.h"

/* qemu-img's own operations are quick (create) or bounded by the data to
 * commit; an hour bounds a commit of hundreds of GiB at the ~100 MB/s
 * measured on these machines (BENCHMARKS.md) */
#define QEMU_IMG_TIMEOUT_MS (3600 * 1000)
/* block-commit polls: query-jobs every 200 ms is cheap for QEMU and fine
 * for a progress bar */
#define JOB_POLL_MS 200
/* snapshot age warnings (docs/vm.md "Snapshot age"): kept longer than a
 * day the delta grows and slows the VM; three days is critical (the
 * 24-72 h rule of thumb of VMware's KB 1025279 "Best practices for using
 * snapshots") */
#define SNAP_WARN_S (24 * 3600)
#define SNAP_CRIT_S (72 * 3600)

/* Fault injection for the crash tests (tests/vm/test_snapshot_crash.py):
 * the agent's environment VMFS_HOSTD_SNAP_FAULT names a point where the
 * agent dies at once (SIGKILL of the agent and of this request's child),
 * its QEMU left running, as if the agent had crashed there:
 *   create-before-switch  the .vmsd names the new deltas, QEMU not switched
 *   commit-running        block-commit started, the job running in QEMU
 *   commit-switched       an active commit completed (the guest stopped on
 *                         the base), the .vmsd not yet rewritten */
static void fault_point(const char *name)
{
	const char *f = getenv("VMFS_HOSTD_SNAP_FAULT");

	if (!f || strcmp(f, name))
		return;
	kill(getppid(), SIGKILL);
	_exit(1);
}

/* One snapshot operation: the VM, its disks, the tree. */
struct sop {
	struct agent *a;
	struct vmctx *v;
	struct vmsd *sd;
	char vmsd_name[VM_NAME_MAX + 8];
	size_t nd;                               /* disks (CD-ROMs skipped) */
	size_t di[VM_MAX_DISKS];                 /* their index in cfg.disks */
	char base[VM_MAX_DISKS][VM_NAME_MAX + 1];
	uint64_t size[VM_MAX_DISKS];
	pid_t qpid;                              /* running here, else 0 */
	int lockfd;                              /* stopped VM: its lock record, held */
};

/* What only the agent can check of a parsed .vmsd (it knows the disks):
 * every delta stands, down its parents, on one of the VM's flat extents,
 * and what a snapshot froze is a delta or that disk's own extent.  Else a
 * hand-made .vmsd could have a commit write guest data into any file of
 * the folder. */
static int sop_check(struct sop *o, struct vm_err *err)
{
	struct vmsd *sd = o->sd;

	for (size_t i = 0; i < sd->ndelta; i++) {
		const char *f = sd->delta[i].parent;
		bool ok = false;

		for (size_t steps = 0; vmsd_delta_find(sd, f) && steps <= sd->ndelta; steps++)
			f = vmsd_delta_find(sd, f)->parent;
		for (size_t k = 0; k < o->nd; k++)
			ok |= !strcmp(f, o->base[k]);
		if (!ok)
			return vm_errf(err, -EINVAL, "delta %s stands on %s, which is no disk's flat extent",
				       sd->delta[i].file, f);
	}
	for (size_t i = 0; i < sd->nsnap; i++)
		for (size_t d = 0; d < sd->snap[i].ndisks; d++) {
			const struct vmsd_ref *r = &sd->snap[i].disk[d];
			size_t k;

			for (k = 0; k < o->nd && strcasecmp(o->v->cfg.disks[o->di[k]].key, r->node); k++)
				;
			if (k == o->nd)
				continue;     /* a disk removed from the .vmx since: left alone */
			if (strcmp(r->file, o->base[k]) && !vmsd_delta_find(sd, r->file))
				return vm_errf(err, -EINVAL, "snapshot '%s' froze %s for disk %s: neither a "
					       "delta nor that disk's extent %s", sd->snap[i].name, r->file,
					       r->node, o->base[k]);
		}
	return 0;
}

static json_t *sop_open(struct agent *a, struct vmctx *v, struct sop *o)
{
	struct vm_err err;
	int rc;

	memset(o, 0, sizeof(*o));
	o->a = a;
	o->v = v;
	o->lockfd = -1;
	o->sd = calloc(1, sizeof(*o->sd));
	if (!o->sd)
		return reply_err(ENOMEM, "out of memory");
	snprintf(o->vmsd_name, sizeof(o->vmsd_name), "%s.vmsd", v->cfg.name);
	for (size_t i = 0; i < v->cfg.ndisks; i++) {
		struct vmdk_desc d;

		if (v->cfg.disks[i].cdrom)
			continue;
		rc = vmdk_load(v->dirfd, v->cfg.disks[i].file, &d, &err);
		if (rc)
			return reply_err(rc, "%s: %s", v->vmx_path, err.msg);
		o->di[o->nd] = i;
		o->size[o->nd] = d.sectors * 512;
		snprintf(o->base[o->nd++], VM_NAME_MAX + 1, "%s", d.extent);
	}
	rc = vmsd_load(v->dirfd, o->vmsd_name, o->sd, &err);
	if (rc)
		return reply_err(rc, "%s: %s (refused: fix or remove the file)", v->vmx_path, err.msg);
	if ((rc = sop_check(o, &err)))
		return reply_err(rc, "%s: %s: %s (refused: fix or remove the file)", v->vmx_path,
				 o->vmsd_name, err.msg);
	o->qpid = vm_qemu_pid(v);
	return NULL;
}

static void sop_close(struct sop *o)
{
	if (o->lockfd >= 0)
		close(o->lockfd);
	free(o->sd);
}

/* A stopped VM: hold its lock record for the operation, so no host powers
 * it on with a chain we are changing.  Refused when another host runs it. */
static json_t *sop_hold(struct sop *o)
{
	struct vm_lockrec cur;
	char ln[VM_NAME_MAX + 8], holder[256] = "";
	int rc;

	vm_lockrec_name(&o->v->cfg, ln, sizeof(ln));
	rc = vm_lockrec_lock(o->v->dirfd, ln, &o->lockfd, &cur);
	if (rc == -EBUSY)
		ds_lock_holder(o->v->dirfd, ln, holder, sizeof(holder));
	if (rc == -EAGAIN)
		snprintf(holder, sizeof(holder), "%s", cur.host);
	if (rc == -EBUSY || rc == -EAGAIN)
		return reply_err(EBUSY, "%s is running on host %s: run the snapshot command there",
				 o->v->vmx_path, holder[0] ? holder : "(another host)");
	if (rc)
		return reply_err(rc, "%s: cannot open the lock record %s: %s", o->v->vmx_path, ln,
				 strerror(-rc));
	return NULL;
}

static int sop_save(struct sop *o)
{
	return vmsd_save(o->v->dirfd, o->v->folder, o->vmsd_name, o->sd);
}

/* stem of a flat extent: "vm1-flat.vmdk" -> "vm1" */
static void extent_stem(const char *ext, char *out, size_t size)
{
	size_t n = strlen(ext);

	if (n > 10 && !strcmp(ext + n - 10, "-flat.vmdk"))
		n -= 10;
	else if (strrchr(ext, '.'))
		n = (size_t)(strrchr(ext, '.') - ext);
	snprintf(out, size, "%.*s", (int)n, ext);
}

static uint64_t allocated(int dirfd, const char *name)
{
	struct stat st;

	return fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) ? 0 : (uint64_t)st.st_blocks * 512;
}

/* ---------------- qemu-img ---------------- */

/* A new empty qcow2 delta NAME over PARENT (of format PFMT), virtual size
 * SIZE; created O_EXCL here (on a cluster mount: the exclusive lock).  The
 * parent's name goes into the header only for people running qemu-img
 * info in the folder: QEMU is always given the chain explicitly.  Returns
 * the open descriptor (O_RDWR). */
static int delta_create(struct sop *o, const char *name, const char *parent, const char *pfmt,
			uint64_t size, struct vm_err *err)
{
	char path[64], sz[32], bopt[VM_NAME_MAX + 64];
	int fd = openat(o->v->dirfd, name, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	int rc;

	if (fd < 0 && errno == EEXIST && !vmsd_delta_find(o->sd, name)) {
		/* left by a create that did not reach its .vmsd: nobody's */
		unlinkat(o->v->dirfd, name, 0);
		fd = openat(o->v->dirfd, name, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	}
	if (fd < 0)
		return vm_errf(err, -errno, "cannot create %s: %s", name, strerror(errno));
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	snprintf(sz, sizeof(sz), "%" PRIu64, size);
	snprintf(bopt, sizeof(bopt), "backing_file=%s,backing_fmt=%s", parent, pfmt);
	char *argv[] = {"qemu-img", "create", "-q", "-f", "qcow2", "-u", "-o", bopt, path, sz, NULL};

	rc = qemu_img_run(NULL, NULL, 0, argv, &fd, 1, err);
	if (!rc && fsync(fd))
		rc = vm_errf(err, -errno, "fsync %s: %s", name, strerror(errno));
	if (rc) {
		close(fd);
		unlinkat(o->v->dirfd, name, 0);
		return rc;
	}
	return fd;
}

static const char *fmt_of(struct sop *o, const char *file)
{
	return vmsd_delta_find(o->sd, file) ? "qcow2" : "raw";
}

/* A new delta FILE over PARENT becomes disk NODE's active file. */
static void set_active(struct vmsd *sd, const char *node, const char *file, const char *parent)
{
	struct vmsd_delta *d = &sd->delta[sd->ndelta++];
	size_t c;

	snprintf(d->file, sizeof(d->file), "%s", file);
	snprintf(d->parent, sizeof(d->parent), "%s", parent);
	for (c = 0; c < sd->ncur && strcasecmp(sd->cur[c].node, node); c++)
		;
	if (c == sd->ncur)
		sd->ncur++;
	snprintf(sd->cur[c].node, sizeof(sd->cur[c].node), "%s", node);
	snprintf(sd->cur[c].file, sizeof(sd->cur[c].file), "%s", file);
}

/* ---------------- the chains handed to QEMU (power-on, migration) ---------------- */

int snap_chain_open(struct vmctx *v, const struct vmsd *sd, size_t i, const char *extent,
		    int flags, struct vm_launch *l, int (*pass)(void *ctx, int fd), void *ctx,
		    char *failed, size_t fsize, struct vm_err *err)
{
	char names[VMSD_MAX_SNAPS + 1][VM_NAME_MAX + 1];
	const char *node = v->cfg.disks[i].key;
	const char *top = vmsd_top(sd, node, extent);
	size_t n;
	int rc = vmsd_chain(sd, node, top, extent, names, VMSD_MAX_SNAPS + 1, &n, err);

	l->chain_len[i] = 0;
	if (rc)
		return rc;
	for (size_t k = 0; k < n; k++) {
		const struct vmsd_delta *d = vmsd_delta_find((struct vmsd *)sd, names[k]);
		int fd = open_in_folder(v->dirfd, names[k], flags, node, err);

		if (fd < 0) {
			snprintf(failed, fsize, "%s", names[k]);
			return fd;
		}
		l->chain_fd[i][k] = pass(ctx, fd);
		l->chain_name[i][k] = d->file;           /* lives as long as SD */
		l->chain_name[i][k + 1] = d->parent;
	}
	l->chain_len[i] = n;
	return 0;
}

int snap_delta_files(struct vmctx *v, char names[][VM_NAME_MAX + 8], size_t max, size_t *n,
		     struct vm_err *err)
{
	struct vmsd *sd = calloc(1, sizeof(*sd));
	char vn[VM_NAME_MAX + 8], chain[VMSD_MAX_SNAPS + 1][VM_NAME_MAX + 1];
	int rc;

	if (!sd)
		return -ENOMEM;
	snprintf(vn, sizeof(vn), "%s.vmsd", v->cfg.name);
	rc = vmsd_load(v->dirfd, vn, sd, err);
	for (size_t i = 0; !rc && i < v->cfg.ndisks; i++) {
		struct vmdk_desc d;
		size_t k;

		if (v->cfg.disks[i].cdrom)
			continue;
		rc = vmdk_load(v->dirfd, v->cfg.disks[i].file, &d, err);
		if (!rc)
			rc = vmsd_chain(sd, v->cfg.disks[i].key, vmsd_top(sd, v->cfg.disks[i].key, d.extent),
					d.extent, chain, VMSD_MAX_SNAPS + 1, &k, err);
		for (size_t j = 0; !rc && j < k; j++) {
			if (*n == max) {
				rc = vm_errf(err, -E2BIG, "too many files");
				break;
			}
			snprintf(names[(*n)++], VM_NAME_MAX + 8, "%s", chain[j]);
		}
	}
	free(sd);
	return rc;
}

/* ---------------- summary: list, info, ha status ---------------- */

static const char *age_level(int64_t age)
{
	return age >= SNAP_CRIT_S ? "critical" : age >= SNAP_WARN_S ? "warning" : "ok";
}

/* the changes made since S: the deltas standing on S's frozen files */
static uint64_t snap_size(int dirfd, const struct vmsd *sd, const struct vmsd_snap *s)
{
	uint64_t sum = 0;

	for (size_t k = 0; k < s->ndisks; k++)
		for (size_t i = 0; i < sd->ndelta; i++)
			if (!strcmp(sd->delta[i].parent, s->disk[k].file))
				sum += allocated(dirfd, sd->delta[i].file);
	return sum;
}

json_t *snap_summary(int dirfd, const char *vm_name)
{
	struct vmsd *sd = calloc(1, sizeof(*sd));
	char vn[VM_NAME_MAX + 8];
	struct vm_err err;
	int64_t now = (int64_t)time(NULL), oldest = 0;
	uint64_t size = 0;
	json_t *r = NULL;

	if (!sd)
		return NULL;
	snprintf(vn, sizeof(vn), "%s.vmsd", vm_name);
	if (vmsd_load(dirfd, vn, sd, &err)) {
		r = json_pack("{s:s}", "error", err.msg);
		goto out;
	}
	if (!sd->nsnap)
		goto out;
	for (size_t i = 0; i < sd->ndelta; i++)
		size += allocated(dirfd, sd->delta[i].file);
	for (size_t i = 0; i < sd->nsnap; i++)
		if (!oldest || sd->snap[i].created < oldest)
			oldest = sd->snap[i].created;
	r = json_pack("{s:i,s:I,s:I,s:I,s:s}", "count", (int)sd->nsnap, "oldest_created",
		      (json_int_t)oldest, "oldest_age_s", (json_int_t)(now - oldest), "size",
		      (json_int_t)size, "level", age_level(now - oldest));
out:
	free(sd);
	return r;
}

json_t *snap_summary_rel(const char *root, const char *rel)
{
	char vp[PATH_MAX + 8], stem[VM_NAME_MAX + 1];
	size_t n = rel ? strlen(rel) : 0;
	char *sl;
	json_t *sn;
	int dfd;

	if (n < 5 || strcmp(rel + n - 4, ".vmx"))
		return NULL;
	snprintf(vp, sizeof(vp), "%s/%s", root, rel);
	sl = strrchr(vp, '/');
	snprintf(stem, sizeof(stem), "%.*s", (int)(strlen(sl + 1) - 4), sl + 1);
	*sl = '\0';
	dfd = open(vp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return NULL;
	sn = snap_summary(dfd, stem);
	close(dfd);
	return sn;
}

/* Clones, templates, exports and live moves copy the disks' flat extents
 * only: a VM with snapshots (deltas in its chains) is refused, clearly. */
json_t *snap_refuse(struct vmctx *v, const char *what, const char *hint)
{
	char names[VM_MAX_FILES][VM_NAME_MAX + 8];
	struct vm_err err;
	size_t n = 0;
	int rc = snap_delta_files(v, names, VM_MAX_FILES, &n, &err);

	if (rc)
		return reply_err(rc, "%s: %s refused: %s", v->vmx_path, what, err.msg);
	if (n)
		return reply_err(EBUSY, "%s has snapshots (%zu delta file%s, first %s): %s copies flat "
				 "extents only; %s", v->vmx_path, n, n == 1 ? "" : "s", names[0], what,
				 hint ? hint : "delete the snapshots first (vmfsctl snapshot delete VM "
				 "--all consolidates them)");
	return NULL;
}

json_t *snap_consolidate(struct agent *a, struct vmctx *v)
{
	char names[VM_MAX_FILES][VM_NAME_MAX + 8];
	struct vm_err err;
	size_t n = 0;
	int rc = snap_delta_files(v, names, VM_MAX_FILES, &n, &err);
	json_t *req, *r;

	if (rc)
		return reply_err(rc, "%s: %s", v->vmx_path, err.msg);
	if (!n)
		return NULL;
	req = json_pack("{s:s,s:b}", "action", "delete", "all", 1);
	r = snapshot_cmd(a, v, req);
	json_decref(req);
	if (json_is_true(json_object_get(r, "ok"))) {
		json_decref(r);
		return NULL;
	}
	return r;
}

/* The guest stopped for an active commit's switch runs again (a failure
 * is logged: `vmfsctl resume` continues it by hand). */
static void guest_cont(struct sop *o)
{
	struct vm_err err;
	int rc = qmp1(o->v, "cont", NULL, -1, NULL, &err);

	if (rc)
		agent_event(o->a, o->v->vmx_path, "snapshot.cont-failed",
			    "the guest stopped for a snapshot delete could not be continued: %s", err.msg);
}

/* ---------------- create ---------------- */

static void snap_drop_new(struct sop *o, int *fds, char names[][VM_NAME_MAX + 1], size_t n)
{
	for (size_t k = 0; k < n; k++) {
		if (fds[k] >= 0)
			close(fds[k]);
		unlinkat(o->v->dirfd, names[k], 0);
	}
}

/* the live part: new nodes over the fds, one transaction switching every
 * disk, optionally the memory saved while the guest is stopped.  One QMP
 * connection for all of it: QEMU drops an fd set added by add-fd when the
 * monitor that added it closes before a node uses it, and its monitor
 * serves one client at a time (so the root nodes are asked first). */
static json_t *create_live(struct sop *o, int *fds, char names[][VM_NAME_MAX + 1],
			   const char *memfile, struct task *t)
{
	char aio[16] = "threads", p[PATH_MAX + 16], roots[VM_MAX_DISKS][64];
	json_t *actions = NULL;
	bool stopped = false;
	struct vm_err err;
	struct qmp qm;
	int rc = 0, mfd = -1;

	sfile(o->v, "aio", p, sizeof(p));
	if (read_text(p, aio, sizeof(aio)) || !aio[0])
		snprintf(aio, sizeof(aio), "threads");
	for (size_t k = 0; !rc && k < o->nd; k++)
		rc = qemu_disk_node(o->v, o->di[k], roots[k], sizeof(roots[k]), &err);
	if (rc)
		return reply_err(rc, "%s: %s", o->v->vmx_path, err.msg);
	if (memfile) {
		mfd = openat(o->v->dirfd, memfile, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (mfd < 0)
			return reply_err(errno, "%s: cannot create %s: %s", o->v->vmx_path, memfile,
					 strerror(errno));
	}
	sfile(o->v, "qmp.sock", p, sizeof(p));
	rc = qmp_open(&qm, p, QMP_TIMEOUT_MS, &err);
	if (rc) {
		if (mfd >= 0)
			close(mfd);
		return reply_err(rc, "%s: %s", o->v->vmx_path, err.msg);
	}
	actions = json_array();
	if (memfile) {
		rc = qmp_exec(&qm, "stop", NULL, NULL, &err);
		stopped = !rc;
	}
	for (size_t k = 0; !rc && k < o->nd; k++) {
		char nn[20], fn[32];
		json_t *ret = NULL;

		rc = qmp_exec_fd(&qm, "add-fd", NULL, fds[k], &ret, &err);
		if (rc)
			break;
		snprintf(fn, sizeof(fn), "/dev/fdset/%d",
			 (int)json_integer_value(json_object_get(ret, "fdset-id")));
		json_decref(ret);
		vmsd_node_name(names[k], nn);
		rc = qmp_exec(&qm, "blockdev-add",
			      json_pack("{s:s,s:s,s:n,s:s,s:{s:b,s:b},s:{s:s,s:s,s:s,s:s,s:s,s:{s:b,s:b}}}",
					"driver", "qcow2", "node-name", nn, "backing", "discard", "unmap",
					"cache", "direct", 1, "no-flush", 0, "file", "driver", "file",
					"filename", fn, "aio", aio, "locking", "off", "discard", "unmap",
					"cache", "direct", 1, "no-flush", 0),
			      NULL, &err);
		if (!rc)
			json_array_append_new(actions, json_pack("{s:s,s:{s:s,s:s}}", "type",
								 "blockdev-snapshot", "data", "node",
								 roots[k], "overlay", nn));
	}
	/* every disk switches at once, or none does */
	if (!rc)
		rc = qmp_exec(&qm, "transaction", json_pack("{s:O}", "actions", actions), NULL, &err);
	if (!rc && memfile) {
		rc = save_state(&qm, mfd, t->j ? t : NULL, &err);
		if (!rc && fsync(mfd))
			rc = vm_errf(&err, -errno, "fsync %s: %s", memfile, strerror(errno));
	}
	if (stopped) {
		struct vm_err e2;

		qmp_exec(&qm, "cont", NULL, NULL, &e2);
	}
	/* nodes of a failed attempt: not in the graph, gone with their fds */
	if (rc)
		for (size_t k = 0; k < o->nd; k++) {
			char nn[20];
			struct vm_err e2;

			vmsd_node_name(names[k], nn);
			qmp_exec(&qm, "blockdev-del", json_pack("{s:s}", "node-name", nn), NULL, &e2);
		}
	qmp_close(&qm);
	json_decref(actions);
	if (mfd >= 0)
		close(mfd);
	return rc ? reply_err(rc, "%s: %s", o->v->vmx_path, err.msg) : NULL;
}

static json_t *snap_create(struct sop *o, json_t *req)
{
	const char *name = req_str(req, "name"), *desc = req_str(req, "description");
	bool memory = json_is_true(json_object_get(req, "memory"));
	struct vmsd *sd = o->sd;
	struct vmsd saved;
	char names[VM_MAX_DISKS][VM_NAME_MAX + 1], memfile[VM_NAME_MAX + 1] = "";
	int fds[VM_MAX_DISKS];
	struct vm_err err;
	struct vmsd_snap *s;
	json_t *e = NULL;
	struct task t = {0};

	if (!name || !name[0] || strlen(name) > VMSD_NAME_MAX)
		return reply_err(EINVAL, "snapshot create: a NAME of 1 to %d bytes is needed", VMSD_NAME_MAX);
	for (const char *c = name; *c; c++)
		if ((unsigned char)*c < 0x20 || *c == 0x7f)
			return reply_err(EINVAL, "snapshot create: control character in the name");
	if (desc && strlen(desc) > VMX_MAX_VALUE)
		return reply_err(E2BIG, "snapshot create: description longer than %d bytes", VMX_MAX_VALUE);
	if (vmsd_find(sd, name))
		return reply_err(EEXIST, "%s: a snapshot named '%s' exists already", o->v->vmx_path, name);
	if (sd->nsnap == VMSD_MAX_SNAPS || sd->ndelta + o->nd > VMSD_MAX_DELTAS)
		return reply_err(E2BIG, "%s: %zu snapshots: at most %d are supported; delete some first",
				 o->v->vmx_path, sd->nsnap, VMSD_MAX_SNAPS);
	if (!o->nd)
		return reply_err(EINVAL, "%s has no disk to snapshot", o->v->vmx_path);
	if (memory && !o->qpid)
		return reply_err(EINVAL, "%s is not running on this host: --memory saves a running VM's state",
				 o->v->vmx_path);
	if (!o->qpid && (e = sop_hold(o)))
		return e;
	for (size_t k = 0; k < o->nd; k++) {
		char stem[VM_NAME_MAX + 1], chain[VMSD_MAX_SNAPS + 1][VM_NAME_MAX + 1];
		const char *node = o->v->cfg.disks[o->di[k]].key;
		size_t n;
		int rc = vmsd_chain(sd, node, vmsd_top(sd, node, o->base[k]), o->base[k], chain,
				    VMSD_MAX_SNAPS + 1, &n, &err);

		if (!rc && n >= VMSD_MAX_SNAPS)
			rc = vm_errf(&err, -E2BIG, "disk %s: its chain has %zu deltas already", node, n);
		if (rc) {
			snap_drop_new(o, fds, names, k);
			return reply_err(rc, "%s: %s", o->v->vmx_path, err.msg);
		}
		extent_stem(o->base[k], stem, sizeof(stem));
		snprintf(names[k], sizeof(names[k]), "%.*s-%06u.qcow2", VM_NAME_MAX - 14, stem,
			 sd->last_delta + 1 + (unsigned)k);
		fds[k] = -1;
		rc = vm_name_check(names[k], "delta", 0, o->v->vmx_path, &err);
		if (rc >= 0) {
			const char *top = vmsd_top(sd, node, o->base[k]);

			rc = delta_create(o, names[k], top, fmt_of(o, top), o->size[k], &err);
		}
		if (rc < 0) {
			snap_drop_new(o, fds, names, k);
			return reply_err(rc, "%s: %s", o->v->vmx_path, err.msg);
		}
		fds[k] = rc;
	}
	/* the new tree: the snapshot freezes each disk's top, the new
	 * deltas stand on them and are the disks' active files */
	memcpy(&saved, sd, sizeof(saved));
	s = &sd->snap[sd->nsnap++];
	memset(s, 0, sizeof(*s));
	s->uid = ++sd->last_uid;
	s->parent = sd->current;
	snprintf(s->name, sizeof(s->name), "%s", name);
	snprintf(s->desc, sizeof(s->desc), "%s", desc ? desc : "");
	s->created = (int64_t)time(NULL);
	s->state = o->qpid ? VMSD_CREATING : VMSD_OK;
	if (memory) {
		snprintf(memfile, sizeof(memfile), "%.*s-Snapshot%u.vmsn", VM_NAME_MAX - 24,
			 o->v->cfg.name, s->uid);
		snprintf(s->memory, sizeof(s->memory), "%s", memfile);
	}
	s->ndisks = o->nd;
	for (size_t k = 0; k < o->nd; k++) {
		const char *node = o->v->cfg.disks[o->di[k]].key;
		const char *top = vmsd_top(&saved, node, o->base[k]);

		snprintf(s->disk[k].node, sizeof(s->disk[k].node), "%s", node);
		snprintf(s->disk[k].file, sizeof(s->disk[k].file), "%s", top);
		set_active(sd, node, names[k], top);
	}
	sd->last_delta += (unsigned)o->nd;
	sd->current = s->uid;
	int rc = sop_save(o);

	if (rc) {
		snap_drop_new(o, fds, names, o->nd);
		return reply_err(rc, "%s: cannot write %s: %s", o->v->vmx_path, o->vmsd_name, strerror(-rc));
	}
	if (o->qpid) {
		int64_t t0 = now_ms();

		fault_point("create-before-switch");
		if (memory)
			task_begin(&t, o->a, "snapshot", o->v->vmx_path, NULL, true);
		e = create_live(o, fds, names, memory ? memfile : NULL, &t);
		if (e) {
			/* QEMU did not switch (a transaction is all or
			 * nothing): the old tree is the truth again */
			memcpy(sd, &saved, sizeof(saved));
			sop_save(o);
			snap_drop_new(o, fds, names, o->nd);
			if (memfile[0])
				unlinkat(o->v->dirfd, memfile, 0);
			if (t.j)
				task_end(&t, e);
			return e;
		}
		s = vmsd_find(sd, name);
		s->state = VMSD_OK;
		sop_save(o);
		agent_event(o->a, o->v->vmx_path, "snapshot.created", "snapshot '%s' (uid %u) taken live in %lld ms%s",
			    name, s->uid, (long long)(now_ms() - t0), memory ? " with its memory" : "");
	} else {
		agent_event(o->a, o->v->vmx_path, "snapshot.created", "snapshot '%s' (uid %u) taken", name,
			    s->uid);
	}
	for (size_t k = 0; k < o->nd; k++)
		close(fds[k]);
	json_t *r = reply_ok("%s: snapshot '%s' created%s", o->v->vmx_path, name,
			     memory ? " with the memory state" : "");

	if (t.j)
		task_end(&t, r);
	json_object_set_new(r, "uid", json_integer(s->uid));
	return r;
}

/* ---------------- list ---------------- */

static json_t *snap_list(struct sop *o)
{
	struct vmsd *sd = o->sd;
	int64_t now = (int64_t)time(NULL);
	json_t *arr = json_array(), *disks = json_array();

	for (size_t i = 0; i < sd->nsnap; i++) {
		const struct vmsd_snap *s = &sd->snap[i];
		json_t *j = json_pack("{s:i,s:i,s:s,s:s,s:I,s:I,s:s,s:I,s:b,s:s}", "uid", (int)s->uid,
				      "parent", (int)s->parent, "name", s->name, "description", s->desc,
				      "created", (json_int_t)s->created, "age_s",
				      (json_int_t)(now - s->created), "level", age_level(now - s->created),
				      "size", (json_int_t)snap_size(o->v->dirfd, sd, s), "memory",
				      s->memory[0] != 0, "state",
				      s->state == VMSD_CREATING ? "creating"
				      : s->state == VMSD_DELETING ? "deleting" : "ok");

		if (s->memory[0])
			json_object_set_new(j, "memory_size",
					    json_integer((json_int_t)allocated(o->v->dirfd, s->memory)));
		json_object_set_new(j, "current", json_boolean(s->uid == sd->current));
		json_array_append_new(arr, j);
	}
	for (size_t k = 0; k < o->nd; k++) {
		const char *node = o->v->cfg.disks[o->di[k]].key;
		char chain[VMSD_MAX_SNAPS + 1][VM_NAME_MAX + 1];
		struct vm_err err;
		json_t *files = json_array();
		size_t n = 0;

		if (vmsd_chain(sd, node, vmsd_top(sd, node, o->base[k]), o->base[k], chain,
			       VMSD_MAX_SNAPS + 1, &n, &err))
			n = 0;
		for (size_t c = 0; c < n; c++)
			json_array_append_new(files, json_pack("{s:s,s:I}", "file", chain[c], "allocated",
							       (json_int_t)allocated(o->v->dirfd, chain[c])));
		json_array_append_new(files, json_pack("{s:s,s:I}", "file", o->base[k], "allocated",
						       (json_int_t)allocated(o->v->dirfd, o->base[k])));
		json_array_append_new(disks, json_pack("{s:s,s:o}", "node", node, "chain", files));
	}
	return json_pack("{s:b,s:s,s:i,s:o,s:o}", "ok", 1, "vmx", o->v->vmx_path, "current",
			 (int)sd->current, "snapshots", arr, "disks", disks);
}

/* ---------------- revert ---------------- */

static void unlink_all(struct sop *o, char gone[][VM_NAME_MAX + 1], size_t n)
{
	for (size_t k = 0; k < n; k++)
		unlinkat(o->v->dirfd, gone[k], 0);
	if (n)
		sync_dir(o->v->folder);
}

static json_t *snap_revert(struct sop *o, json_t *req)
{
	const char *name = req_str(req, "name");
	struct vmsd *sd = o->sd;
	struct vmsd_snap *s = name ? vmsd_find(sd, name) : NULL;
	char names[VM_MAX_DISKS][VM_NAME_MAX + 1], gone[VMSD_MAX_DELTAS][VM_NAME_MAX + 1];
	int fds[VM_MAX_DISKS];
	struct vm_err err;
	size_t ng;
	json_t *e;
	int rc;

	if (!s)
		return reply_err(ENOENT, "%s: no snapshot named '%s'", o->v->vmx_path, name ? name : "");
	if (s->state != VMSD_OK)
		return reply_err(EINVAL, "%s: snapshot '%s' is %s: it cannot be reverted to (delete it)",
				 o->v->vmx_path, name, s->state == VMSD_DELETING ? "being deleted" : "incomplete");
	{
		char vmss[VM_NAME_MAX + 8];

		vmss_name(o->v, vmss, sizeof(vmss));
		if (!o->qpid && file_exists_at(o->v->dirfd, vmss))
			return reply_err(EBUSY, "%s is suspended: its saved state belongs to the current disks; "
					 "resume it (and power it off) before reverting", o->v->vmx_path);
	}
	if (sd->ndelta + o->nd > VMSD_MAX_DELTAS)
		return reply_err(E2BIG, "%s: %zu delta files: delete snapshots first", o->v->vmx_path,
				 sd->ndelta);
	if (s->memory[0] && !file_exists_at(o->v->dirfd, s->memory))
		return reply_err(ENOENT, "%s: snapshot '%s': its memory state %s is missing", o->v->vmx_path,
				 name, s->memory);
	if (o->qpid) {
		/* the current state goes away: QEMU first (it flushes) */
		e = power_off(o->a, o->v);
		if (!json_is_true(json_object_get(e, "ok")))
			return e;
		json_decref(e);
		o->qpid = 0;
	}
	if ((e = sop_hold(o)))
		return e;
	for (size_t k = 0; k < o->nd; k++) {
		const char *node = o->v->cfg.disks[o->di[k]].key;
		const char *frozen = NULL;
		char stem[VM_NAME_MAX + 1];

		for (size_t d = 0; d < s->ndisks; d++)
			if (!strcasecmp(s->disk[d].node, node))
				frozen = s->disk[d].file;
		if (!frozen) {
			snap_drop_new(o, fds, names, k);
			return reply_err(EINVAL, "%s: snapshot '%s' has no file for disk %s (added later?)",
					 o->v->vmx_path, name, node);
		}
		extent_stem(o->base[k], stem, sizeof(stem));
		snprintf(names[k], sizeof(names[k]), "%.*s-%06u.qcow2", VM_NAME_MAX - 14, stem,
			 sd->last_delta + 1 + (unsigned)k);
		rc = delta_create(o, names[k], frozen, fmt_of(o, frozen), o->size[k], &err);
		if (rc < 0) {
			snap_drop_new(o, fds, names, k);
			return reply_err(rc, "%s: %s", o->v->vmx_path, err.msg);
		}
		fds[k] = rc;
		set_active(sd, node, names[k], frozen);
	}
	sd->last_delta += (unsigned)o->nd;
	sd->current = s->uid;
	/* the old active deltas: nothing stands on them any more */
	vmsd_gc(sd, gone, VMSD_MAX_DELTAS, &ng);
	rc = sop_save(o);
	if (rc) {
		snap_drop_new(o, fds, names, o->nd);
		return reply_err(rc, "%s: cannot write %s: %s", o->v->vmx_path, o->vmsd_name, strerror(-rc));
	}
	for (size_t k = 0; k < o->nd; k++)
		close(fds[k]);
	unlink_all(o, gone, ng);
	agent_event(o->a, o->v->vmx_path, "snapshot.reverted", "reverted to snapshot '%s' (uid %u)",
		    name, s->uid);
	if (!s->memory[0])
		return reply_ok("%s: reverted to snapshot '%s'; the VM is off (the snapshot has no memory state)",
				o->v->vmx_path, name);
	/* back running from the saved state: a power-on that loads it (and
	 * keeps it: the snapshot may be reverted to again) */
	close(o->lockfd);
	o->lockfd = -1;
	json_t *pr = power_on_state(o->a, o->v, req, s->memory);

	if (!json_is_true(json_object_get(pr, "ok")))
		return pr;
	json_decref(pr);
	return reply_ok("%s: reverted to snapshot '%s'; running from its memory state", o->v->vmx_path,
			name);
}

/* ---------------- delete ---------------- */

/* Polls block job ID until it is READY (WANT_READY) or concluded; progress
 * to T.  0, or an error with ERR. */
static int job_wait(struct sop *o, const char *id, bool want_ready, struct task *t,
		    struct vm_err *err)
{
	for (;;) {
		json_t *ret = NULL, *j;
		size_t k;
		int rc = qmp1(o->v, "query-jobs", NULL, -1, &ret, err);
		const char *st = NULL, *je = NULL;
		json_int_t cur = 0, tot = 0;

		if (rc)
			return rc;
		json_array_foreach(ret, k, j)
			if (!strcmp(json_string_value(json_object_get(j, "id")) ?: "", id)) {
				st = json_string_value(json_object_get(j, "status"));
				je = json_string_value(json_object_get(j, "error"));
				cur = json_integer_value(json_object_get(j, "current-progress"));
				tot = json_integer_value(json_object_get(j, "total-progress"));
			}
		if (!st) {
			json_decref(ret);
			return vm_errf(err, -EIO, "block job %s vanished", id);
		}
		if (t->j && tot > 0)
			task_progress(t, "consolidating", (uint64_t)cur, (uint64_t)tot);
		if (!strcmp(st, "concluded")) {
			rc = je ? vm_errf(err, -EIO, "block-commit failed: %s", je) : 0;
			json_decref(ret);
			qmp1(o->v, "job-dismiss", json_pack("{s:s}", "id", id), -1, NULL, err);
			return rc;
		}
		bool ready = !strcmp(st, "ready");

		json_decref(ret);      /* st pointed into it */
		if (want_ready && ready)
			return 0;
		sleep_ms(JOB_POLL_MS);
	}
}

/* C (a delta standing on F) into F, online: block-commit.  C active: the
 * mirror reaches READY, the guest is stopped, job-complete switches the
 * disk to F; STOPPED says the caller must cont after the .vmsd rewrite. */
static int commit_live(struct sop *o, size_t k, const char *c, const char *f, bool active,
		       struct task *t, bool *stopped, struct vm_err *err)
{
	char root[64], cn[20], fnn[20], id[32];
	json_t *args;
	int rc = qemu_disk_node(o->v, o->di[k], root, sizeof(root), err);

	if (rc)
		return rc;
	vmsd_node_name(c, cn);
	vmsd_node_name(f, fnn);
	snprintf(id, sizeof(id), "snapcommit%zu", k);
	args = json_pack("{s:s,s:s,s:b}", "job-id", id, "device", root, "auto-dismiss", 0);
	if (!active)
		json_object_set_new(args, "top-node", json_string(cn));
	/* the flat extent at the bottom is the default base: its node is
	 * named "disk<i>" or after the file, depending on how QEMU started */
	if (vmsd_delta_find(o->sd, f))
		json_object_set_new(args, "base-node", json_string(fnn));
	rc = qmp1(o->v, "block-commit", args, -1, NULL, err);
	if (!rc)
		fault_point("commit-running");
	if (!rc)
		rc = job_wait(o, id, active, t, err);
	if (!rc && active) {
		rc = qmp1(o->v, "stop", NULL, -1, NULL, err);
		*stopped = !rc;
		if (!rc)
			rc = qmp1(o->v, "job-complete", json_pack("{s:s}", "id", id), -1, NULL, err);
		if (!rc)
			rc = job_wait(o, id, false, t, err);
	}
	if (rc) {
		struct vm_err e2;

		qmp1(o->v, "job-cancel", json_pack("{s:s}", "id", id), -1, NULL, &e2);
		return rc;
	}
	/* a node the monitor added (a live snapshot's delta) stays until
	 * deleted; an implicit one went with the commit (the error is moot) */
	{
		struct vm_err e2;

		qmp1(o->v, "blockdev-del", json_pack("{s:s}", "node-name", cn), -1, NULL, &e2);
	}
	return 0;
}

/* C into F, offline: qemu-img commit on the chain given explicitly */
static int commit_offline(struct sop *o, const char *c, const char *f, struct vm_err *err)
{
	int cfd = open_in_folder(o->v->dirfd, c, O_RDWR, "delta", err), ffd = -1, rc;
	char cp[32], fp[32];

	if (cfd < 0)
		return cfd;
	ffd = open_in_folder(o->v->dirfd, f, O_RDWR, "delta", err);
	if (ffd < 0) {
		close(cfd);
		return ffd;
	}
	snprintf(cp, sizeof(cp), "/proc/self/fd/%d", cfd);
	snprintf(fp, sizeof(fp), "/proc/self/fd/%d", ffd);
	json_t *base = json_pack("{s:s,s:{s:s,s:s}}", "driver", fmt_of(o, f), "file", "driver", "file",
				 "filename", fp);
	if (vmsd_delta_find(o->sd, f))
		json_object_set_new(base, "backing", json_null());
	json_t *top = json_pack("{s:s,s:{s:s,s:s},s:o}", "driver", "qcow2", "file", "driver", "file",
				"filename", cp, "backing", base);
	char *js = json_dumps(top, JSON_COMPACT), *spec = NULL;

	json_decref(top);
	if (!js || asprintf(&spec, "json:%s", js) < 0) {
		free(js);
		close(cfd);
		close(ffd);
		return vm_errf(err, -ENOMEM, "out of memory");
	}
	char *argv[] = {"qemu-img", "commit", "-q", "-t", "none", "-d", spec, NULL};
	int keep[2] = {cfd, ffd};

	rc = qemu_img_run(NULL, NULL, 0, argv, keep, 2, err);
	if (!rc && fsync(ffd))
		rc = vm_errf(err, -errno, "fsync %s: %s", f, strerror(errno));
	free(js);
	free(spec);
	close(cfd);
	close(ffd);
	return rc;
}

/* Deletes snapshot S: for each disk the one delta C on S's frozen file F
 * is committed into F, then the tree forgets C and S. */
static json_t *delete_one(struct sop *o, struct vmsd_snap *s, struct task *t)
{
	struct vmsd *sd = o->sd;
	char gone[VMSD_MAX_DELTAS][VM_NAME_MAX + 1], sname[VMSD_NAME_MAX + 1], mem[VM_NAME_MAX + 1];
	const char *c_of[VM_MAX_DISKS] = {0};
	char cfile[VM_MAX_DISKS][VM_NAME_MAX + 1] = {{0}}, ffile[VM_MAX_DISKS][VM_NAME_MAX + 1] = {{0}};
	bool stopped = false;
	struct vm_err err;
	unsigned uid = s->uid;
	size_t ng;
	int rc = 0;

	snprintf(sname, sizeof(sname), "%s", s->name);
	snprintf(mem, sizeof(mem), "%s", s->memory);
	for (size_t d = 0; d < s->ndisks; d++) {
		const struct vmsd_delta *c = NULL;
		size_t n = vmsd_children(sd, s->disk[d].file, &c), k;

		for (k = 0; k < o->nd && strcasecmp(o->v->cfg.disks[o->di[k]].key, s->disk[d].node); k++)
			;
		if (k == o->nd && n)
			return reply_err(ENOENT, "%s: snapshot '%s' has changes of disk %s, which the .vmx no "
					 "longer has: put the disk back to merge them", o->v->vmx_path, sname,
					 s->disk[d].node);

		if (n > 1)
			return reply_err(EBUSY, "%s: snapshot '%s': %zu deltas stand on its file %s (a revert "
					 "made a branch): delete the snapshots of the other branch first",
					 o->v->vmx_path, sname, n, s->disk[d].file);
		c_of[d] = n ? c->file : NULL;
		snprintf(cfile[d], sizeof(cfile[d]), "%s", n ? c->file : "");
		snprintf(ffile[d], sizeof(ffile[d]), "%s", s->disk[d].file);
	}
	s->state = VMSD_DELETING;
	rc = sop_save(o);
	if (rc)
		return reply_err(rc, "%s: cannot write %s: %s", o->v->vmx_path, o->vmsd_name, strerror(-rc));
	for (size_t d = 0; !rc && d < s->ndisks; d++) {
		size_t k;
		bool active = false;

		if (!c_of[d])
			continue;
		for (k = 0; k < o->nd && strcasecmp(o->v->cfg.disks[o->di[k]].key, s->disk[d].node); k++)
			;
		for (size_t c = 0; c < sd->ncur; c++)
			active |= !strcmp(sd->cur[c].file, cfile[d]);
		if (o->qpid)
			rc = commit_live(o, k, cfile[d], ffile[d], active, t, &stopped, &err);
		else
			rc = commit_offline(o, cfile[d], ffile[d], &err);
	}
	if (rc) {
		if (stopped)
			guest_cont(o);
		return reply_err(rc, "%s: deleting snapshot '%s' failed: %s (the VM's disks are intact; "
				 "the snapshot stays marked as being deleted: run the delete again)",
				 o->v->vmx_path, sname, err.msg);
	}
	if (stopped)
		fault_point("commit-switched");
	/* the tree without C: what stood on C stands on F, what ran on C
	 * runs on F, a snapshot that froze C froze F; S goes, its children
	 * hang on its parent */
	s = NULL;
	for (size_t i = 0; i < sd->nsnap; i++)
		if (sd->snap[i].uid == uid)
			s = &sd->snap[i];
	for (size_t d = 0; d < VM_MAX_DISKS; d++) {
		if (!cfile[d][0])
			continue;
		for (size_t i = 0; i < sd->ndelta; i++)
			if (!strcmp(sd->delta[i].parent, cfile[d]))
				snprintf(sd->delta[i].parent, sizeof(sd->delta[i].parent), "%s", ffile[d]);
		for (size_t i = 0; i < sd->ncur; i++)
			if (!strcmp(sd->cur[i].file, cfile[d]))
				snprintf(sd->cur[i].file, sizeof(sd->cur[i].file), "%s", ffile[d]);
		for (size_t i = 0; i < sd->nsnap; i++)
			for (size_t x = 0; x < sd->snap[i].ndisks; x++)
				if (!strcmp(sd->snap[i].disk[x].file, cfile[d]))
					snprintf(sd->snap[i].disk[x].file, sizeof(sd->snap[i].disk[x].file),
						 "%s", ffile[d]);
		struct vmsd_delta *cd = vmsd_delta_find(sd, cfile[d]);

		if (cd) {
			memmove(cd, cd + 1, (size_t)(&sd->delta[sd->ndelta] - (cd + 1)) * sizeof(*cd));
			sd->ndelta--;
		}
	}
	for (size_t i = 0; i < sd->nsnap; i++)
		if (sd->snap[i].parent == uid)
			sd->snap[i].parent = s->parent;
	if (sd->current == uid)
		sd->current = s->parent;
	memmove(s, s + 1, (size_t)(&sd->snap[sd->nsnap] - (s + 1)) * sizeof(*s));
	sd->nsnap--;
	/* the files of a dead branch that only S kept */
	vmsd_gc(sd, gone, VMSD_MAX_DELTAS, &ng);
	rc = sop_save(o);
	if (stopped)
		guest_cont(o);
	if (rc)
		return reply_err(rc, "%s: cannot write %s: %s", o->v->vmx_path, o->vmsd_name, strerror(-rc));
	for (size_t d = 0; d < VM_MAX_DISKS; d++)
		if (cfile[d][0] && ng < VMSD_MAX_DELTAS)
			snprintf(gone[ng++], VM_NAME_MAX + 1, "%s", cfile[d]);
	if (mem[0] && ng < VMSD_MAX_DELTAS)
		snprintf(gone[ng++], VM_NAME_MAX + 1, "%s", mem);
	unlink_all(o, gone, ng);
	agent_event(o->a, o->v->vmx_path, "snapshot.deleted", "snapshot '%s' deleted (%s)", sname,
		    o->qpid ? "block-commit" : "qemu-img commit");
	return NULL;
}

/* --all: the snapshots in an order that always has one delta to commit:
 * dead-branch leaves first, then from the root down the current branch */
static struct vmsd_snap *next_deletable(struct vmsd *sd)
{
	struct vmsd_snap *best = NULL;
	size_t best_score = (size_t)-1;

	for (size_t i = 0; i < sd->nsnap; i++) {
		struct vmsd_snap *s = &sd->snap[i];
		size_t score = 0, depth = 0;
		bool ok = true;

		for (size_t d = 0; d < s->ndisks; d++) {
			size_t n = vmsd_children(sd, s->disk[d].file, NULL);

			ok &= n <= 1;
			score += n;
		}
		for (unsigned u = s->parent; u && depth <= sd->nsnap; depth++) {
			struct vmsd_snap *p = NULL;

			for (size_t j = 0; j < sd->nsnap; j++)
				if (sd->snap[j].uid == u)
					p = &sd->snap[j];
			u = p ? p->parent : 0;
		}
		score = score * 1000 + depth;
		if (ok && score < best_score) {
			best = s;
			best_score = score;
		}
	}
	return best;
}

static json_t *snap_delete(struct sop *o, json_t *req)
{
	const char *name = req_str(req, "name");
	bool all = json_is_true(json_object_get(req, "all"));
	struct vmsd *sd = o->sd;
	size_t n = 0;
	struct task t = {0};
	json_t *e = NULL;

	if (!all && (!name || !vmsd_find(sd, name)))
		return reply_err(ENOENT, "%s: no snapshot named '%s'", o->v->vmx_path, name ? name : "");
	if (all && !sd->nsnap)
		return reply_ok("%s has no snapshots", o->v->vmx_path);
	if (!o->qpid && (e = sop_hold(o)))
		return e;
	if (o->qpid)
		task_begin(&t, o->a, "snapshot-delete", o->v->vmx_path, NULL, true);
	while (!e && (all ? sd->nsnap > 0 : n == 0)) {
		struct vmsd_snap *s = all ? next_deletable(sd) : vmsd_find(sd, name);

		if (!s) {
			e = reply_err(EBUSY, "%s: the remaining %zu snapshots form branches that cannot be "
				      "merged", o->v->vmx_path, sd->nsnap);
			break;
		}
		e = delete_one(o, s, &t);
		n++;
	}
	if (!e)
		e = all ? reply_ok("%s: all %zu snapshots deleted, the disks consolidated", o->v->vmx_path, n)
			: reply_ok("%s: snapshot '%s' deleted", o->v->vmx_path, name);
	if (t.j)
		task_end(&t, e);
	return e;
}

/* ---------------- the command ---------------- */

json_t *snapshot_cmd(struct agent *a, struct vmctx *v, json_t *req)
{
	const char *action = req_str(req, "action");
	struct sop o;
	json_t *r = sop_open(a, v, &o);

	if (r) {
		sop_close(&o);
		return r;
	}
	if (!action)
		r = reply_err(EINVAL, "snapshot: no action");
	else if (!strcmp(action, "list"))
		r = snap_list(&o);
	else if (!strcmp(action, "create"))
		r = snap_create(&o, req);
	else if (!strcmp(action, "revert"))
		r = snap_revert(&o, req);
	else if (!strcmp(action, "delete"))
		r = snap_delete(&o, req);
	else
		r = reply_err(EINVAL, "snapshot: unknown action '%s'", action);
	sop_close(&o);
	return r;
}
