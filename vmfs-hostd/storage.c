// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Storage vMotion, clones and templates (docs/vm.md "Storage vMotion",
 * "Clones and templates"): `migrate-storage` moves a whole VM folder to
 * another folder, normally on another datastore: a stopped VM by the
 * sparse copier (vm/copy.c), a running one by QEMU's blockdev-mirror into
 * target nodes the agent opened itself and passed with add-fd, switched at
 * READY with job-complete.  `clone` copies a VM (hot: mirror, then
 * block-job-cancel with the guest paused for an instant, a point-in-time
 * copy) under a new identity; `template` marks a VM that may not run and
 * `deploy` creates VMs from it.
 *
 * Crash safety of a move rests on one small file, the intent record
 * <vm>.vmx.move, in both folders: in the source it says which copy is
 * authoritative ("phase": "copying" = the source, "switched" = the
 * destination); in the destination it marks an incomplete copy that must
 * not be powered on.  The switch is the atomic rename of the source record
 * to phase "switched", written only when the destination holds every byte
 * (offline: the copy fsynced; live: the mirror READY in write-blocking
 * mode, so every write the guest completes from then on is in both).  Any
 * interruption is resolved from the records alone: before the switch the
 * destination is deleted, after it the source is (storage_power_gate,
 * storage_recover_all).
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <libgen.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "storage.h"
#include "vm/copy.h"

/* how often a running mirror is polled: progress for a person, and the
 * READY state noticed within a quarter second */
#define POLL_MS 250
/* a mirror's first pass reads the whole disk: bounded like a suspend
 * (MIGRATE_TIMEOUT_MS), per disk */
#define MIRROR_TIMEOUT_MS MIGRATE_TIMEOUT_MS
/* job-complete / block-job-cancel of a READY mirror only drain requests in
 * flight: seconds at most on a loaded machine */
#define PIVOT_TIMEOUT_MS 60000
#define INTENT_MAX 16384

/* ---------------------------------------------------------------- helpers */

/* Test hook (docs/vm.md "Storage vMotion", crash tests): with
 * VMFS_HOSTD_TEST_STOP=<point> in the agent's environment, a move stops at
 * that point, writes "<point> <pid>" to state-dir/test-stop and waits
 * (at most 120 s) until the file is removed, so that a test can kill the
 * agent or QEMU exactly there.  Points: before-copy, copying, ready,
 * switched. */
static void test_point(struct agent *a, const char *point)
{
	const char *want = getenv("VMFS_HOSTD_TEST_STOP");
	char p[PATH_MAX + 16], txt[64];
	static bool stopped;     /* once per request */

	if (!want || strcmp(want, point) || stopped)
		return;
	stopped = true;
	snprintf(p, sizeof(p), "%s/test-stop", a->state_dir);
	snprintf(txt, sizeof(txt), "%s %d\n", point, (int)getpid());
	write_text(p, txt);
	for (int i = 0; i < 1200 && !access(p, F_OK); i++)
		sleep_ms(100);
}

static void intent_name(const struct vm_config *c, char *buf, size_t size)
{
	snprintf(buf, size, "%s.vmx.move", c->name);
}

static int fsync_dir(int dirfd)
{
	return fsync(dirfd) ? -errno : 0;
}

/* Writes J as NAME in DIRFD atomically (temporary file, fsync, rename,
 * fsync of the folder): a crash leaves the old record or the new one. */
static int intent_write(int dirfd, const char *name, json_t *j)
{
	char tmp[VM_NAME_MAX + 32], *s = json_dumps(j, JSON_INDENT(1) | JSON_SORT_KEYS);
	int fd, rc = 0;
	size_t len;

	if (!s)
		return -ENOMEM;
	snprintf(tmp, sizeof(tmp), "%s.tmp", name);
	unlinkat(dirfd, tmp, 0);
	fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
	if (fd < 0) {
		free(s);
		return -errno;
	}
	len = strlen(s);
	if (write(fd, s, len) != (ssize_t)len || fsync(fd))
		rc = errno ? -errno : -EIO;
	close(fd);
	free(s);
	if (!rc && renameat(dirfd, tmp, dirfd, name))
		rc = -errno;
	if (rc)
		unlinkat(dirfd, tmp, 0);
	return rc ? rc : fsync_dir(dirfd);
}

/* The record NAME of DIRFD, or NULL (none, or not a JSON object). */
static json_t *intent_read(int dirfd, const char *name)
{
	char *text;
	size_t len;
	json_t *j;

	if (vm_read_file(dirfd, name, INTENT_MAX, &text, &len))
		return NULL;
	j = json_loadb(text, len, 0, NULL);
	free(text);
	if (!json_is_object(j)) {
		json_decref(j);
		return NULL;
	}
	return j;
}

static const char *jstr(json_t *o, const char *k)
{
	return json_string_value(json_object_get(o, k)) ?: "";
}

/* Deletes the regular files of FOLDER and the folder (never recurses). */
static int remove_folder_files(const char *folder)
{
	int dfd = open(folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC), rc = 0;
	DIR *d;
	struct dirent *de;

	if (dfd < 0)
		return errno == ENOENT ? 0 : -errno;
	d = fdopendir(dfd);
	if (!d) {
		close(dfd);
		return -errno;
	}
	while ((de = readdir(d))) {
		struct stat st;

		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (!fstatat(dfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) && !S_ISDIR(st.st_mode) &&
		    unlinkat(dfd, de->d_name, 0) && !rc)
			rc = -errno;
	}
	closedir(d);
	if (rmdir(folder) && !rc)
		rc = -errno;
	return rc;
}

/* openat that waits out a short EBUSY: a FUSE release travels after
 * close() returns, so a file closed a moment ago (a VM just powered off,
 * a writer just done) can still hold its exclusive cluster lock when we
 * open it; 3 s covers the release and the journal commit it may wait for
 * (one group commit a second, docs/journal.md) */
static int open_settled(int dirfd, const char *name, int flags)
{
	int fd;

	for (int i = 0; i < 30; i++) {
		fd = openat(dirfd, name, flags);
		if (fd >= 0 || errno != EBUSY)
			break;
		sleep_ms(100);
	}
	return fd;
}

/* The state folder of a .vmx path (sdir of vmctx_open) */
static void sdir_of(struct agent *a, const char *vmx_path, char *out, size_t size)
{
	char key[17];

	vm_hash_name(vmx_path, key);
	snprintf(out, size, "%s/vms/%s", a->state_dir, key);
}

/* Takes the per-VM flock of VMX_PATH's state folder without waiting;
 * returns the descriptor, or -EBUSY while a request works on that VM. */
static int flock_vm(struct agent *a, const char *vmx_path)
{
	char sd[PATH_MAX + 32], lp[PATH_MAX + 48];
	int fd;

	sdir_of(a, vmx_path, sd, sizeof(sd));
	if (mkdir(sd, 0700) && errno != EEXIST)
		return -errno;
	snprintf(lp, sizeof(lp), "%s/lock", sd);
	fd = open(lp, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	if (flock(fd, LOCK_EX | LOCK_NB)) {
		close(fd);
		return -EBUSY;
	}
	return fd;
}

/* The runtime files of a running VM follow its .vmx to the new path's
 * state folder.  QEMU's command line still names the old folder (its QMP
 * and serial sockets were bound there; the sockets move with the rename),
 * which qemu-sdir records for vm_qemu_pid. */
static void state_move(struct agent *a, const char *old_vmx, const char *new_vmx,
		       const char *new_folder, const char *name, bool new_held)
{
	/* every runtime file of power.c, monitor.c (VM monitoring keeps
	 * watching the VM at its new path) and lck_switched */
	static const char *const files[] = {"pid", "qemu.pid", "qmp.sock", "serial.sock",
					    "serial.log", "accel", "io-error", "qemu.err",
					    "last-pid", "fenced", "res", "monitor", "hb-miss",
					    "no-restart", "lck-fd", NULL};
	char os[PATH_MAX + 32], ns[PATH_MAX + 32], p[PATH_MAX + 64], q[PATH_MAX + 64];
	char orig[PATH_MAX + 32];
	int nlock;

	sdir_of(a, old_vmx, os, sizeof(os));
	sdir_of(a, new_vmx, ns, sizeof(ns));
	mkdir(ns, 0700);
	/* the sweep takes a VM's flock before it looks at it: the file must
	 * exist (vmctx_open creates it for requests), and we hold it while
	 * the files arrive (a sweep seeing "pid" without "qemu-sdir" would
	 * take the running QEMU for a dead one and restart the VM) */
	snprintf(q, sizeof(q), "%s/lock", ns);
	nlock = open(q, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (nlock >= 0 && new_held) {
		close(nlock);   /* our caller holds it already (flock would wait on itself) */
		nlock = -1;
	}
	if (nlock >= 0)
		(void)flock(nlock, LOCK_EX);
	snprintf(p, sizeof(p), "%s/qemu-sdir", os);
	if (read_text(p, orig, sizeof(orig)))
		snprintf(orig, sizeof(orig), "%s", os);
	for (int i = 0; files[i]; i++) {
		snprintf(p, sizeof(p), "%s/%s", os, files[i]);
		snprintf(q, sizeof(q), "%s/%s", ns, files[i]);
		if (rename(p, q) && errno == ENOENT)
			unlink(q);
	}
	snprintf(q, sizeof(q), "%s/pid", ns);
	if (!access(q, F_OK)) {
		snprintf(q, sizeof(q), "%s/qemu-sdir", ns);
		write_text(q, orig);
		snprintf(q, sizeof(q), "%s/dslog", ns);
		snprintf(p, sizeof(p), "%s/%s.log", new_folder, name);
		write_text(q, p);
	}
	snprintf(p, sizeof(p), "%s/qemu-sdir", os);
	unlink(p);
	snprintf(p, sizeof(p), "%s/dslog", os);
	unlink(p);
	snprintf(q, sizeof(q), "%s/vmx", ns);
	write_text(q, new_vmx);
	if (nlock >= 0)
		close(nlock);
}

/* ---------------------------------------------------------------- QMP */

/* One QMP command on a fresh connection: QEMU's monitor socket serves one
 * client at a time, and `info`, the sweep and other requests need it
 * between our polls.  FD >= 0 travels along (add-fd). */
int qmp1(struct vmctx *v, const char *cmd, json_t *args, int fd, json_t **ret,
		struct vm_err *err)
{
	char p[PATH_MAX + 16];
	struct qmp q;
	int rc;

	sfile(v, "qmp.sock", p, sizeof(p));
	rc = qmp_open(&q, p, QMP_TIMEOUT_MS, err);
	if (rc) {
		json_decref(args);
		return rc;
	}
	rc = fd >= 0 ? qmp_exec_fd(&q, cmd, args, fd, ret, err) : qmp_exec(&q, cmd, args, ret, err);
	qmp_close(&q);
	return rc;
}

/* The block node under virtio-blk device vdI (query-block) */
int qemu_disk_node(struct vmctx *v, size_t i, char *node, size_t size, struct vm_err *err)
{
	json_t *ret = NULL, *b;
	char want[32];
	size_t k;
	int rc = qmp1(v, "query-block", NULL, -1, &ret, err);

	if (rc)
		return rc;
	snprintf(want, sizeof(want), "/vd%zu/", i);
	rc = vm_errf(err, -ENOENT, "QEMU has no block device vd%zu", i);
	json_array_foreach(ret, k, b) {
		const char *qdev = jstr(b, "qdev");
		const char *nn = jstr(json_object_get(b, "inserted"), "node-name");

		if (strstr(qdev, want) && *nn) {
			snprintf(node, size, "%s", nn);
			rc = 0;
			break;
		}
	}
	json_decref(ret);
	return rc;
}

/* job id -> {status, current-progress, total-progress, error} of query-jobs */
static json_t *jobs_query(struct vmctx *v, struct vm_err *err, int *rc)
{
	json_t *ret = NULL, *j, *byid = json_object();
	size_t k;

	*rc = qmp1(v, "query-jobs", NULL, -1, &ret, err);
	json_array_foreach(ret, k, j)
		json_object_set(byid, jstr(j, "id"), j);
	json_decref(ret);
	return byid;
}

/* ---------------------------------------------------------------- the operation */

struct disk {
	char file[VM_NAME_MAX + 1];        /* descriptor in the source */
	struct vmdk_desc desc;
	char dfile[VM_NAME_MAX + 1];       /* descriptor in the destination */
	char dext[VM_NAME_MAX + 1];        /* flat extent in the destination */
	enum vm_prov prov;
	uint64_t size, data;
	/* a clone of a VM with snapshots: the top of the chain copied (its
	 * current delta, or the file a snapshot froze); "" the extent alone */
	char top[VM_NAME_MAX + 1];
	/* live */
	size_t index;                      /* vdN */
	char src_node[64], dst_node[64], job[32];
	int fdset;
	uint64_t *regions;                 /* data regions: pairs (off, end) */
	size_t nregions;
	bool ready, done;
};

struct op {
	struct agent *a;
	struct vmctx *v;
	struct task t;
	const char *kind;                  /* "migrate-storage", "clone", "deploy" */
	bool move, live, identity;
	struct vmsd *sd;                   /* a clone's source snapshot tree (NULL: none) */
	char dst[PATH_MAX];                /* destination folder */
	char dst_name[VM_NAME_MAX + 1];    /* stem of the destination's files */
	char dst_vmx[PATH_MAX + VM_NAME_MAX + 8];
	char iname[VM_NAME_MAX + 16];      /* intent record name (source; a move's destination) */
	char diname[VM_NAME_MAX + 16];     /* the destination's (a clone's is named after it) */
	int ddir;
	bool made, marked, intent;
	struct disk d[VM_MAX_DISKS];
	size_t nd;
	uint64_t total, done;              /* data bytes, for progress */
	json_t *req;
	pid_t qpid;
	struct vm_lockrec lr;
	bool have_lr;
	/* the lock records this operation holds (docs/vm.md "Storage
	 * vMotion", "Lock records"): the source's while a stopped VM is
	 * copied, the destination's from its mkdir on; a live move hands
	 * the destination's to QEMU (getfd LCK_FDNAME) before the switch */
	int slock, dlock;
	char dlname[VM_NAME_MAX + 16];
	char lck_fdname[128];
	bool handed;
	char src_rel[PATH_MAX], dst_rel[PATH_MAX];   /* in their datastores ("" elsewhere) */
};

/* a clone's files are named after its folder: "<old>…" becomes "<new>…" */
static void map_name(const struct op *o, const char *name, char *out, size_t size)
{
	size_t l = strlen(o->v->cfg.name);

	if (o->identity && !strncmp(name, o->v->cfg.name, l) &&
	    (name[l] == '.' || name[l] == '-' || name[l] == '_'))
		snprintf(out, size, "%s%s", o->dst_name, name + l);
	else
		snprintf(out, size, "%s", name);
}

/* DEST is a new folder, or an existing one the VM goes into (like mv) */
static json_t *resolve_dest(struct op *o, const char *dest)
{
	char buf[PATH_MAX], parent[PATH_MAX], base[PATH_MAX];
	struct stat st;
	struct vm_err err;
	int rc;

	if (!dest || dest[0] != '/')
		return reply_err(EINVAL, "%s: the agent needs an absolute destination folder", o->kind);
	if (!stat(dest, &st) && S_ISDIR(st.st_mode)) {
		if (!realpath(dest, parent))
			return reply_err(errno, "%s: %s", dest, strerror(errno));
		snprintf(base, sizeof(base), "%s", basename(o->v->folder));
	} else {
		snprintf(buf, sizeof(buf), "%s", dest);
		while (strlen(buf) > 1 && buf[strlen(buf) - 1] == '/')
			buf[strlen(buf) - 1] = '\0';
		snprintf(base, sizeof(base), "%s", basename(buf));
		snprintf(buf, sizeof(buf), "%s", dest);
		if (!realpath(dirname(buf), parent))
			return reply_err(errno, "%s: parent folder of %s: %s", o->kind, dest,
					 strerror(errno));
	}
	rc = vm_name_check(base, "destination folder", 0, o->kind, &err);
	if (rc)
		return reply_err(rc, "%s", err.msg);
	if (base[0] == '.' || strlen(base) > 100)
		return reply_err(EINVAL, "%s: '%s': a VM folder name must not start with '.' and has at most 100 bytes",
				 o->kind, base);
	if ((size_t)snprintf(o->dst, sizeof(o->dst), "%s/%s", parent, base) >= sizeof(o->dst))
		return reply_err(ENAMETOOLONG, "%s: destination path too long", o->kind);
	if (!strcmp(o->dst, o->v->folder))
		return reply_err(EINVAL, "%s: %s is the VM's own folder", o->kind, o->dst);
	if (!strncmp(o->dst, o->v->folder, strlen(o->v->folder)) &&
	    o->dst[strlen(o->v->folder)] == '/')
		return reply_err(EINVAL, "%s: %s is inside the VM's folder", o->kind, o->dst);
	if (!lstat(o->dst, &st))
		return reply_err(EEXIST, "%s: %s already exists", o->kind, o->dst);
	snprintf(o->dst_name, sizeof(o->dst_name), "%s", o->identity ? base : o->v->cfg.name);
	snprintf(o->dst_vmx, sizeof(o->dst_vmx), "%s/%s.vmx", o->dst, o->dst_name);
	return NULL;
}

/* The disks and the provisioning each gets */
static json_t *plan_disks(struct op *o, const char *prov)
{
	struct vm_config *c = &o->v->cfg;
	struct vm_err err;
	enum vm_prov want = VM_PROV_THIN;

	if (prov && vm_prov_parse(prov, &want))
		return reply_err(EINVAL, "%s: --provisioning must be thin, thick or eagerzeroed", o->kind);
	for (size_t i = 0; i < c->ndisks; i++) {
		struct disk *d = &o->d[o->nd];
		int rc;

		if (c->disks[i].cdrom)
			continue;
		memset(d, 0, sizeof(*d));
		d->index = i;
		d->fdset = -1;
		snprintf(d->file, sizeof(d->file), "%s", c->disks[i].file);
		rc = vmdk_load(o->v->dirfd, d->file, &d->desc, &err);
		if (rc)
			return reply_err(rc, "%s: %s: %s", o->v->vmx_path, c->disks[i].key, err.msg);
		for (size_t k = 0; k < o->nd; k++)
			if (!strcmp(o->d[k].desc.extent, d->desc.extent))
				return reply_err(EINVAL, "%s: two disks share the extent %s", o->v->vmx_path,
						 d->desc.extent);
		d->size = d->desc.sectors * 512;
		/* by default a disk keeps its provisioning (eager-zeroed
		 * cannot be told from thick afterwards: it becomes thick) */
		d->prov = prov ? want : d->desc.thin ? VM_PROV_THIN : VM_PROV_THICK;
		map_name(o, d->file, d->dfile, sizeof(d->dfile));
		map_name(o, d->desc.extent, d->dext, sizeof(d->dext));
		o->nd++;
	}
	return NULL;
}

static bool is_extent(const struct op *o, const char *name)
{
	for (size_t i = 0; i < o->nd; i++)
		if (!strcmp(o->d[i].desc.extent, name))
			return true;
	return false;
}

static bool is_descriptor(const struct op *o, const char *name)
{
	for (size_t i = 0; i < o->nd; i++)
		if (!strcmp(o->d[i].file, name))
			return true;
	return false;
}

/* the tree file and the snapshots' memory files */
static bool is_snapshot_file(const struct op *o, const char *name)
{
	char t[VM_NAME_MAX + 8];

	snprintf(t, sizeof(t), "%s.vmsd", o->v->cfg.name);
	if (!strcmp(name, t))
		return true;
	for (size_t i = 0; i < o->sd->nsnap; i++)
		if (o->sd->snap[i].memory[0] && !strcmp(o->sd->snap[i].memory, name))
			return true;
	return false;
}

/* Which files of the source folder are copied as they are: everything but
 * the extents and descriptors (done apart), the lock record, intent
 * records and temporary files; a clone leaves out the logs and the
 * suspended memory state too (they belong to the source's runs). */
static bool copy_plain(const struct op *o, const char *name)
{
	char lck[VM_NAME_MAX + 16];
	size_t l = strlen(name);

	vm_lockrec_name(&o->v->cfg, lck, sizeof(lck));
	if (is_extent(o, name) || is_descriptor(o, name) || !strcmp(name, lck) ||
	    !strcmp(name, o->iname) || !strcmp(name, o->v->cfg.vmx_name) ||
	    (l > 4 && !strcmp(name + l - 4, ".tmp")) || (l > 5 && !strcmp(name + l - 5, ".move")))
		return false;
	if (o->identity && ((l > 4 && !strcmp(name + l - 4, ".log")) ||
			    (l > 5 && !strcmp(name + l - 5, ".vmss")) ||
			    (l > 4 && !strcmp(name + l - 4, ".lck"))))
		return false;
	/* a clone has no snapshots: its disks are the chains flattened */
	if (o->identity && o->sd && (vmsd_delta_find(o->sd, name) || is_snapshot_file(o, name)))
		return false;
	return true;
}

/* the sizes the copy will write, and a refusal when the destination
 * cannot hold them */
static json_t *check_space(struct op *o)
{
	struct statvfs sv;
	uint64_t need = 0, free_b;
	DIR *d;
	struct dirent *de;
	int dfd;

	for (size_t i = 0; i < o->nd; i++) {
		struct disk *dk = &o->d[i];
		int fd = open_settled(o->v->dirfd, dk->desc.extent, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);

		if (fd < 0)
			return reply_err(errno, "%s: %s: %s", o->v->vmx_path, dk->desc.extent,
					 strerror(errno));
		if (vm_data_bytes(fd, dk->size, &dk->data))
			dk->data = dk->size;
		close(fd);
		need += dk->prov == VM_PROV_THIN ? dk->data : dk->size;
		o->total += dk->prov == VM_PROV_EAGER ? dk->size : dk->data;
	}
	/* a new open: a dup would share (and leave at the end) the offset
	 * of the folder's descriptor */
	dfd = openat(o->v->dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	d = dfd >= 0 ? fdopendir(dfd) : NULL;
	while (d && (de = readdir(d))) {
		struct stat st;

		if (de->d_name[0] == '.' && (!de->d_name[1] || !strcmp(de->d_name, "..")))
			continue;
		if (fstatat(dfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW))
			continue;
		if (S_ISDIR(st.st_mode)) {
			json_t *r = reply_err(EISDIR, "%s: the VM folder holds a subfolder '%s': move or remove it first",
					      o->v->folder, de->d_name);
			closedir(d);
			return r;
		}
		if (S_ISREG(st.st_mode) && copy_plain(o, de->d_name)) {
			need += (uint64_t)st.st_blocks * 512;
			o->total += (uint64_t)st.st_size;
		}
	}
	if (d)
		closedir(d);
	char parent[PATH_MAX];
	snprintf(parent, sizeof(parent), "%s", o->dst);
	if (statvfs(dirname(parent), &sv))
		return reply_err(errno, "%s: %s", o->dst, strerror(errno));
	free_b = (uint64_t)sv.f_bavail * sv.f_frsize;
	if (need > free_b)
		return reply_err(ENOSPC, "%s: the destination has %" PRIu64 " MiB free; the VM needs %" PRIu64
				 " MiB there: nothing was copied", o->kind, free_b >> 20, (need + (1 << 20) - 1) >> 20);
	return NULL;
}

static void copy_cb(void *arg, uint64_t done, uint64_t total)
{
	struct op *o = arg;

	(void)total;
	task_progress(&o->t, "copying", o->done + done, o->total);
}

/* Copies NAME of the source to DNAME of the destination.  EXTENT: a flat
 * extent (direct I/O, provisioned as PROV). */
static int copy_file(struct op *o, int sdir, const char *name, const char *dname, bool extent,
		     enum vm_prov prov, struct vm_err *err)
{
	int in, out, rc;
	struct stat st;

	in = open_settled(sdir, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | (extent ? O_DIRECT : 0));
	if (in < 0 && extent && errno == EINVAL)
		in = open_settled(sdir, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (in < 0)
		return vm_errf(err, -errno, "%s: %s", name, strerror(errno));
	if (fstat(in, &st) || !S_ISREG(st.st_mode)) {
		close(in);
		return vm_errf(err, -EINVAL, "%s: not a regular file", name);
	}
	out = openat(o->ddir, dname,
		     O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC | (extent ? O_DIRECT : 0),
		     st.st_mode & 0777);
	if (out < 0 && extent && errno == EINVAL)
		out = openat(o->ddir, dname, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
			     st.st_mode & 0777);
	if (out < 0) {
		rc = vm_errf(err, -errno, "%s/%s: %s", o->dst, dname, strerror(errno));
		close(in);
		return rc;
	}
	rc = vm_copy_sparse(in, out, (uint64_t)st.st_size, extent ? prov : VM_PROV_THIN, copy_cb, o,
			    err);
	if (rc) {
		char m[sizeof(err->msg)];

		snprintf(m, sizeof(m), "%s", err->msg);
		vm_errf(err, rc, "copying %s to %s: %s", name, o->dst, m);
	}
	close(out);
	close(in);
	if (!rc) {
		uint64_t d = (uint64_t)st.st_size;

		if (extent) {
			for (size_t i = 0; i < o->nd; i++)
				if (!strcmp(o->d[i].desc.extent, name))
					d = prov == VM_PROV_EAGER ? o->d[i].size : o->d[i].data;
		}
		o->done += d;
	}
	return rc;
}

static int write_new(int dirfd, const char *name, const char *text, struct vm_err *err)
{
	int fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
	size_t len = strlen(text);

	if (fd < 0)
		return vm_errf(err, -errno, "%s: %s", name, strerror(errno));
	if (write(fd, text, len) != (ssize_t)len || fsync(fd)) {
		int rc = errno ? -errno : -EIO;

		close(fd);
		return vm_errf(err, rc, "writing %s: %s", name, strerror(-rc));
	}
	close(fd);
	return 0;
}

/* The destination's descriptor: a move keeps the source's text (its CID
 * and UUID: the same disk) but for ddb.thinProvisioned; a clone gets a new
 * one (new CID and UUID, the new extent name). */
static int write_descriptor(struct op *o, struct disk *d, struct vm_err *err)
{
	char *text = NULL, *out = NULL;
	size_t len;
	int rc;

	if (o->identity) {
		struct vmdk_desc n = d->desc;

		snprintf(n.extent, sizeof(n.extent), "%s", d->dext);
		n.thin = d->prov == VM_PROV_THIN;
		out = vmdk_format(&n);
		if (!out)
			return vm_errf(err, -ENOMEM, "out of memory");
	} else {
		FILE *m;
		char *line, *save = NULL;
		bool seen = false;

		rc = vm_read_file(o->v->dirfd, d->file, 65536, &text, &len);
		if (rc)
			return vm_errf(err, rc, "%s: %s", d->file, strerror(-rc));
		m = open_memstream(&out, &len);
		for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
			if (!strncmp(line, "ddb.thinProvisioned", 19)) {
				fprintf(m, "ddb.thinProvisioned = \"%d\"\n", d->prov == VM_PROV_THIN);
				seen = true;
			} else {
				fprintf(m, "%s\n", line);
			}
		}
		if (!seen && d->prov == VM_PROV_THIN)
			fprintf(m, "ddb.thinProvisioned = \"1\"\n");
		fclose(m);
		free(text);
	}
	rc = write_new(o->ddir, d->dfile, out, err);
	free(out);
	return rc;
}

static void vmx_del(struct vmx_file *f, const char *key)
{
	for (size_t i = 0; i < f->n; i++) {
		if (!strcasecmp(f->kv[i].key, key)) {
			free(f->kv[i].key);
			free(f->kv[i].value);
			memmove(&f->kv[i], &f->kv[i + 1], (f->n - i - 1) * sizeof(f->kv[0]));
			f->n--;
			return;
		}
	}
}

/* VMware's uuid.bios format: "56 4d xx xx xx xx xx xx-xx xx xx xx xx xx xx xx" */
static void new_uuid(char *out)
{
	unsigned char b[14];
	size_t l;

	if (getrandom(b, sizeof(b), 0) != sizeof(b))
		memset(b, 0x42, sizeof(b));
	l = (size_t)sprintf(out, "56 4d");
	for (int i = 0; i < 14; i++)
		l += (size_t)sprintf(out + l, "%s%02x", i == 6 ? "-" : " ", b[i]);
}

/* The destination's .vmx: a move copies it byte for byte (the VM keeps its
 * identity); a clone or deployment gets a new UUID, new MAC addresses
 * (VMware's 00:0c:29 generated range), a new display name and its files'
 * new names; a deployment its --cpus/--memory; neither is a template. */
static int write_vmx(struct op *o, struct vm_err *err)
{
	char *text, *out;
	size_t len;
	struct vmx_file f;
	int rc;
	const char *name = jstr(o->req, "name");
	json_int_t cpus = json_integer_value(json_object_get(o->req, "cpus"));
	json_int_t mem = json_integer_value(json_object_get(o->req, "memory"));

	rc = vm_read_file(o->v->dirfd, o->v->cfg.vmx_name, VMX_MAX_FILE, &text, &len);
	if (rc)
		return vm_errf(err, rc, "%s: %s", o->v->cfg.vmx_name, strerror(-rc));
	if (!o->identity) {
		char vn[VM_NAME_MAX + 8];

		snprintf(vn, sizeof(vn), "%s.vmx", o->dst_name);
		rc = write_new(o->ddir, vn, text, err);
		free(text);
		return rc;
	}
	rc = vmx_parse(text, len, o->v->cfg.vmx_name, &f, err);
	free(text);
	if (rc)
		return rc;
	char u[64], num[32], key[64];

	new_uuid(u);
	vmx_set(&f, "uuid.bios", u);
	vmx_set(&f, "uuid.location", u);
	vmx_del(&f, "vc.uuid");
	vmx_set(&f, "displayName", *name ? name : o->dst_name);
	vmx_del(&f, "vmfsd.template");
	if (cpus > 0) {
		snprintf(num, sizeof(num), "%lld", (long long)cpus);
		vmx_set(&f, "numvcpus", num);
	}
	if (mem > 0) {
		snprintf(num, sizeof(num), "%lld", (long long)mem);
		vmx_set(&f, "memSize", num);
	}
	for (size_t i = 0; i < o->v->cfg.nnics; i++) {
		int n = o->v->cfg.nics[i].index;
		unsigned char b[3];
		char mac[18];

		if (getrandom(b, sizeof(b), 0) != sizeof(b))
			memset(b, 0x11, sizeof(b));
		snprintf(mac, sizeof(mac), "00:0c:29:%02x:%02x:%02x", b[0], b[1], b[2]);
		snprintf(key, sizeof(key), "ethernet%d.address", n);
		vmx_del(&f, key);
		snprintf(key, sizeof(key), "ethernet%d.addressType", n);
		vmx_set(&f, key, "generated");
		snprintf(key, sizeof(key), "ethernet%d.generatedAddress", n);
		vmx_set(&f, key, mac);
	}
	for (size_t i = 0; i < o->v->cfg.ndisks; i++) {
		char nn[VM_NAME_MAX + 1];

		snprintf(key, sizeof(key), "%s.fileName", o->v->cfg.disks[i].key);
		map_name(o, o->v->cfg.disks[i].file, nn, sizeof(nn));
		vmx_set(&f, key, nn);
	}
	out = vmx_format(&f);
	vmx_free(&f);
	if (!out)
		return vm_errf(err, -ENOMEM, "out of memory");
	/* what every host will parse: check it before writing it */
	{
		struct vmx_file chk;
		struct vm_config cfg;
		char vn[VM_NAME_MAX + 8];

		snprintf(vn, sizeof(vn), "%s.vmx", o->dst_name);
		rc = vmx_parse(out, strlen(out), vn, &chk, err);
		if (!rc) {
			rc = vm_config_from_vmx(&chk, vn, &cfg, err);
			vmx_free(&chk);
		}
		if (!rc)
			rc = vm_check_resources(cfg.vcpus, cfg.mem_mib, &o->a->res, err);
		if (!rc)
			rc = write_new(o->ddir, vn, out, err);
	}
	free(out);
	return rc;
}

/* FOLDER's path relative to the root of its vmfsd datastore ("" when it
 * is on none) */
static void ds_rel(const char *folder, char *out, size_t size)
{
	struct dsview d;
	size_t l;

	out[0] = '\0';
	if (ds_open(folder, &d))
		return;
	l = strlen(d.root);
	if (!strncmp(folder, d.root, l) && folder[l] == '/')
		snprintf(out, size, "%s", folder + l + 1);
	ds_close(&d);
}

/* FOLDER holds the intent record INAME of task TASK */
static bool holds_intent(const char *folder, const char *iname, const char *task)
{
	int fd = open(folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	json_t *j = fd >= 0 ? intent_read(fd, iname) : NULL;
	bool yes = j && !strcmp(jstr(j, "task"), task);

	json_decref(j);
	if (fd >= 0)
		close(fd);
	return yes;
}

/* This host's path of the folder WHICH ("source" or "dest") of the move
 * recorded in IN, which another host may have written (its mount points
 * are not ours): the recorded path, else the recorded datastore-relative
 * path under each datastore of this host; the folder must hold the
 * move's intent record, or for a source whose record was not written yet,
 * be the only such folder with its .vmx.  NOT: the folder IN was read from.
 * False when no folder of this host matches. */
static bool intent_folder(struct agent *a, json_t *in, const char *which, const char *not,
			  char *out, size_t size)
{
	static char roots[16][PATH_MAX];
	char key[16], iname[VM_NAME_MAX + 16], vmxn[VM_NAME_MAX + 8], cand[PATH_MAX * 2];
	const char *rel, *task = jstr(in, "task"), *sv = jstr(in, "source_vmx");
	const char *b = strrchr(sv, '/');
	int n, found = 0;

	snprintf(vmxn, sizeof(vmxn), "%s", b ? b + 1 : sv);
	snprintf(iname, sizeof(iname), "%s.move", vmxn);
	snprintf(key, sizeof(key), "%s_rel", which);
	rel = jstr(in, key);
	n = *rel ? ha_datastores(a, roots, 16) : 0;
	for (int pass = 0; pass < 2; pass++) {
		for (int i = -1; i < n; i++) {
			struct stat st;
			char real[PATH_MAX];

			if (i < 0)
				snprintf(cand, sizeof(cand), "%s", jstr(in, which));
			else
				snprintf(cand, sizeof(cand), "%s/%s", roots[i], rel);
			if (!realpath(cand, real) || (not && !strcmp(real, not)))
				continue;
			if (pass == 0 && holds_intent(real, iname, task)) {
				snprintf(out, size, "%s", real);
				return true;
			}
			snprintf(cand, sizeof(cand), "%s/%s", real, vmxn);
			if (pass == 1 && !strcmp(which, "source") && !stat(cand, &st) &&
			    (!found || strcmp(out, real))) {
				snprintf(out, size, "%s", real);
				found++;
			}
		}
	}
	return found == 1;
}

static json_t *intent_json(struct op *o, const char *role, const char *phase)
{
	char bid[40] = "";
	json_t *j, *t = json_array(), *s = json_array(), *f = json_array();

	vm_boot_id(bid, sizeof(bid));
	for (size_t i = 0; i < o->nd; i++) {
		json_array_append_new(t, json_string(o->d[i].dst_node));
		json_array_append_new(s, json_string(o->d[i].src_node));
		json_array_append_new(f, json_integer(o->d[i].fdset));
	}
	j = json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:b,s:I,s:s,s:o,s:o,s:o}", "op", o->kind,
		      "role", role, "phase", phase, "source", o->v->folder, "source_vmx",
		      o->v->vmx_path, "dest", o->dst, "dest_vmx", o->dst_vmx, "host", o->a->host,
		      "task", o->t.id, "live", o->live, "time", (json_int_t)time(NULL), "boot_id", bid,
		      "target_nodes", t, "source_nodes", s, "fdsets", f);
	/* mount points differ between hosts (docs/ha.md §4): another host
	 * finds each folder by its path in its datastore */
	if (o->src_rel[0])
		json_object_set_new(j, "source_rel", json_string(o->src_rel));
	if (o->dst_rel[0])
		json_object_set_new(j, "dest_rel", json_string(o->dst_rel));
	return j;
}

static int set_phase(struct op *o, const char *phase)
{
	json_t *j = intent_json(o, "source", phase);
	int rc = intent_write(o->v->dirfd, o->iname, j);

	json_decref(j);
	return rc;
}

/* Makes the destination folder and marks it incomplete; a move also writes
 * its intent record in the source. */
static json_t *begin(struct op *o)
{
	json_t *j;
	int rc;

	if (mkdir(o->dst, 0755))
		return reply_err(errno, "%s: %s: %s", o->kind, o->dst, strerror(errno));
	o->made = true;
	ds_rel(o->v->folder, o->src_rel, sizeof(o->src_rel));
	ds_rel(o->dst, o->dst_rel, sizeof(o->dst_rel));
	o->ddir = open(o->dst, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (o->ddir < 0)
		return reply_err(errno, "%s: %s", o->dst, strerror(errno));
	/* the copy's own lock record, held from now on: no host starts
	 * the copy while it is written (the intent record says so too, but
	 * the lock is what another host's power-on meets first) */
	{
		struct vm_lockrec cur;

		snprintf(o->dlname, sizeof(o->dlname), "%s.vmx.lck", o->dst_name);
		rc = vm_lockrec_lock(o->ddir, o->dlname, &o->dlock, &cur);
		if (rc)
			return reply_err(rc, "%s: the lock record %s/%s: %s", o->kind, o->dst, o->dlname,
					 strerror(-rc));
	}
	j = intent_json(o, "destination", "copying");
	/* named after the copy's own .vmx (a clone's differs from the
	 * source's): power-on of the copy finds it (storage_power_gate) */
	snprintf(o->diname, sizeof(o->diname), "%s.vmx.move", o->dst_name);
	rc = intent_write(o->ddir, o->diname, j);
	json_decref(j);
	if (rc)
		return reply_err(rc, "%s: cannot write the intent record in %s: %s", o->kind, o->dst,
				 strerror(-rc));
	o->marked = true;
	if (o->move) {
		rc = set_phase(o, "copying");
		if (rc)
			return reply_err(rc, "%s: cannot write the intent record %s in %s: %s", o->kind,
					 o->iname, o->v->folder, strerror(-rc));
		o->intent = true;
	}
	return NULL;
}

/* Before the switch: the destination goes, the source stays as it was. */
static void rollback(struct op *o)
{
	if (o->ddir >= 0) {
		close(o->ddir);
		o->ddir = -1;
	}
	if (o->made)
		remove_folder_files(o->dst);
	if (o->intent) {
		unlinkat(o->v->dirfd, o->iname, 0);
		fsync_dir(o->v->dirfd);
	}
	o->made = o->marked = o->intent = false;
}

/* Copies everything but the extents' data (the copier or the mirror does
 * that): plain files, descriptors, the .vmx. */
static json_t *copy_small(struct op *o)
{
	struct vm_err err;
	DIR *d;
	struct dirent *de;
	int dfd = openat(o->v->dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC), rc = 0;

	d = dfd >= 0 ? fdopendir(dfd) : NULL;
	if (!d)
		return reply_err(errno, "%s: %s", o->v->folder, strerror(errno));
	while (!rc && (de = readdir(d))) {
		char dn[VM_NAME_MAX + 1];
		struct stat st;

		if (fstatat(dfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) || !S_ISREG(st.st_mode) ||
		    !copy_plain(o, de->d_name))
			continue;
		map_name(o, de->d_name, dn, sizeof(dn));
		rc = copy_file(o, o->v->dirfd, de->d_name, dn, false, VM_PROV_THIN, &err);
	}
	closedir(d);
	for (size_t i = 0; !rc && i < o->nd; i++)
		rc = write_descriptor(o, &o->d[i], &err);
	if (!rc)
		rc = write_vmx(o, &err);
	if (rc == -ENOSPC)
		return reply_err(rc, "%s: the destination is full: %s (the copy was removed, the source is untouched)",
				 o->kind, err.msg);
	if (rc)
		return reply_err(rc, "%s: %s", o->kind, err.msg);
	return NULL;
}

/* Disk D of a clone whose top is a snapshot delta: its chain (given to
 * qemu-img explicitly, as QEMU always gets it) flattened into the copy's
 * raw extent, thin; thick or eager-zeroed through the copier from a thin
 * temporary beside it. */
static int flatten_chain(struct op *o, struct disk *d, struct vm_err *err)
{
	char chain[VMSD_MAX_DELTAS][VM_NAME_MAX + 1], tmp[VM_NAME_MAX + 16], target[PATH_MAX * 2];
	const char *node = o->v->cfg.disks[d->index].key;
	json_t *top;
	char *js, *spec = NULL;
	size_t n;
	int rc = vmsd_chain(o->sd, node, d->top, d->desc.extent, chain, VMSD_MAX_DELTAS, &n, err);

	if (rc)
		return rc;
	snprintf(target, sizeof(target), "%s/%s", o->v->folder, d->desc.extent);
	top = json_pack("{s:s,s:{s:s,s:s}}", "driver", "raw", "file", "driver", "file", "filename",
			target);
	for (size_t i = n; i-- > 0;) {
		snprintf(target, sizeof(target), "%s/%s", o->v->folder, chain[i]);
		top = json_pack("{s:s,s:{s:s,s:s},s:o}", "driver", "qcow2", "file", "driver", "file",
				"filename", target, "backing", top);
	}
	js = json_dumps(top, JSON_COMPACT);
	json_decref(top);
	if (!js || asprintf(&spec, "json:%s", js) < 0) {
		free(js);
		return vm_errf(err, -ENOMEM, "out of memory");
	}
	free(js);
	snprintf(tmp, sizeof(tmp), ".%s.flat", d->dext);
	snprintf(target, sizeof(target), "%s/%s", o->dst, d->prov == VM_PROV_THIN ? d->dext : tmp);
	/* qemu-img writes only what is not zero: a thin raw file */
	char *argv[] = {"qemu-img", "convert", "-q", "-t", "none", "-T", "none", "-O", "raw", spec,
			target, NULL};

	rc = qemu_img_run(NULL, NULL, 0, argv, NULL, 0, err);
	free(spec);
	if (!rc && d->prov != VM_PROV_THIN) {
		uint64_t before = o->done;

		rc = copy_file(o, o->ddir, tmp, d->dext, true, d->prov, err);
		o->done = before;
	}
	unlinkat(o->ddir, tmp, 0);
	if (!rc)
		o->done += d->prov == VM_PROV_EAGER ? d->size : d->data;
	return rc;
}

static json_t *copy_extents(struct op *o)
{
	struct vm_err err;

	for (size_t i = 0; i < o->nd; i++) {
		int rc = o->d[i].top[0] ? flatten_chain(o, &o->d[i], &err)
					: copy_file(o, o->v->dirfd, o->d[i].desc.extent, o->d[i].dext, true,
						    o->d[i].prov, &err);

		if (rc == -ENOSPC)
			return reply_err(rc, "%s: the destination is full: %s (the copy was removed, the source is untouched)",
					 o->kind, err.msg);
		if (rc)
			return reply_err(rc, "%s: %s", o->kind, err.msg);
	}
	return NULL;
}

/* After the switch: the destination is the VM; the source's files go.
 * Used by a running operation and by recovery alike. */
static void finish_forward(struct agent *a, const char *src_folder, const char *src_vmx,
			   const char *dst_folder, const char *dst_vmx, const char *iname,
			   const char *name, bool dst_held)
{
	int ddir = open(dst_folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int sdir = open(src_folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	/* the state folder and the inventory follow the .vmx */
	state_move(a, src_vmx, dst_vmx, dst_folder, name, dst_held);
	inventory_edit(a, dst_vmx, src_vmx);
	if (ddir >= 0) {
		unlinkat(ddir, iname, 0);
		fsync_dir(ddir);
		close(ddir);
	}
	if (sdir >= 0) {
		DIR *d = fdopendir(openat(sdir, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
		struct dirent *de;

		/* every file but the record, which goes last: a crash in
		 * between leaves a record that says "switched", and the next
		 * look finishes the job */
		while (d && (de = readdir(d))) {
			struct stat st;

			if (strcmp(de->d_name, iname) &&
			    !fstatat(sdir, de->d_name, &st, AT_SYMLINK_NOFOLLOW) && S_ISREG(st.st_mode))
				unlinkat(sdir, de->d_name, 0);
		}
		if (d)
			closedir(d);
		unlinkat(sdir, iname, 0);
		close(sdir);
		if (rmdir(src_folder))
			agent_event(a, dst_vmx, "storage.leftover",
				    "the old folder %s could not be removed: %s", src_folder,
				    strerror(errno));
	}
}

/* ------------------------------------------------------------ live (mirror) */

static void region_list(struct disk *d, int fd)
{
	uint64_t pos = 0;

	while (pos < d->size) {
		off_t s = lseek(fd, (off_t)pos, SEEK_DATA), e;

		if (s < 0)
			break;
		e = lseek(fd, s, SEEK_HOLE);
		if (e < 0 || (uint64_t)e > d->size)
			e = (off_t)d->size;
		uint64_t *r = realloc(d->regions, (d->nregions + 1) * 2 * sizeof(uint64_t));
		if (!r)
			break;
		d->regions = r;
		r[2 * d->nregions] = (uint64_t)s;
		r[2 * d->nregions + 1] = (uint64_t)e;
		d->nregions++;
		pos = (uint64_t)e;
	}
}

/* data bytes of D below OFFSET: QEMU's job offset counts holes too, and
 * the progress shown is of data (docs/vm.md "Progress") */
static uint64_t data_below(const struct disk *d, uint64_t off)
{
	uint64_t n = 0;

	for (size_t i = 0; i < d->nregions; i++) {
		uint64_t s = d->regions[2 * i], e = d->regions[2 * i + 1];

		if (s >= off)
			break;
		n += (e < off ? e : off) - s;
	}
	return n;
}

/* Creates, opens and hands QEMU the target extent of disk D, adds its node. */
static json_t *add_target(struct op *o, struct disk *d)
{
	struct vm_err err;
	json_t *ret = NULL, *node;
	struct qmp q;
	int fd, rc;
	/* as at power-on (power.c): io_uring, else the thread pool */
	static const char *const aios[] = {"io_uring", "threads"};

	fd = openat(o->ddir, d->dext, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return reply_err(errno, "%s: %s/%s: %s", o->kind, o->dst, d->dext, strerror(errno));
	if (d->prov == VM_PROV_THIN)
		rc = ftruncate(fd, (off_t)d->size) ? -errno : 0;
	else
		rc = fallocate(fd, 0, 0, (off_t)d->size) ? -errno : 0;
	if (!rc && d->prov == VM_PROV_EAGER) {
		char *z = calloc(1, 1 << 20);

		for (uint64_t off = 0; z && !rc && off < d->size; off += 1 << 20)
			if (pwrite(fd, z, (size_t)(d->size - off < (1 << 20) ? d->size - off : 1 << 20),
				   (off_t)off) < 0)
				rc = -errno;
		free(z);
	}
	if (!rc && fsync(fd))
		rc = -errno;
	if (rc) {
		close(fd);
		return reply_err(rc, "%s: preparing %s/%s: %s%s", o->kind, o->dst, d->dext, strerror(-rc),
				 rc == -ENOSPC ? " (the destination is full; the source is untouched)" : "");
	}
	/* add-fd and blockdev-add on one connection: QEMU drops an fd set
	 * nobody uses when its last monitor client disconnects */
	{
		char p[PATH_MAX + 16];

		sfile(o->v, "qmp.sock", p, sizeof(p));
		rc = qmp_open(&q, p, QMP_TIMEOUT_MS, &err);
	}
	if (!rc)
		rc = qmp_exec_fd(&q, "add-fd", NULL, fd, &ret, &err);
	close(fd);
	if (rc) {
		qmp_close(&q);
		return reply_err(rc, "%s: passing %s to QEMU: %s", o->kind, d->dext, err.msg);
	}
	d->fdset = (int)json_integer_value(json_object_get(ret, "fdset-id"));
	json_decref(ret);
	snprintf(d->dst_node, sizeof(d->dst_node), "svm%zu-%lld", d->index, (long long)time(NULL));
	for (int i = 0; i < 2; i++) {
		const char *disc = d->prov == VM_PROV_THIN ? "unmap" : "ignore";

		/* discard=unmap on a thin target: the mirror writes zeroes
		 * over the source's holes, and only unmap turns them back
		 * into holes (docs/vm.md "Storage vMotion") */
		node = json_pack("{s:s,s:s,s:s,s:{s:b,s:b},s:I,s:{s:s,s:s,s:s,s:{s:b,s:b},s:s,s:s}}",
				 "driver", "raw", "node-name", d->dst_node, "discard", disc, "cache",
				 "direct", 1, "no-flush", 0, "size", (json_int_t)d->size, "file", "driver",
				 "file", "filename", "", "aio", aios[i], "cache", "direct", 1, "no-flush", 0,
				 "locking", "off", "discard", disc);
		char fn[32];
		snprintf(fn, sizeof(fn), "/dev/fdset/%d", d->fdset);
		json_object_set_new(json_object_get(node, "file"), "filename", json_string(fn));
		rc = qmp_exec(&q, "blockdev-add", node, NULL, &err);
		if (!rc) {
			qmp_close(&q);
			return NULL;
		}
	}
	qmp_close(&q);
	d->dst_node[0] = '\0';
	return reply_err(rc, "%s: QEMU could not open the target %s: %s", o->kind, d->dext, err.msg);
}

/* Removes what add_target and the job left in QEMU (before the switch). */
static void drop_targets(struct op *o)
{
	struct vm_err err;
	int rc;
	json_t *jobs = jobs_query(o->v, &err, &rc);

	for (size_t i = 0; i < o->nd; i++) {
		struct disk *d = &o->d[i];
		json_t *jb = json_object_get(jobs, d->job);

		if (d->job[0] && jb) {
			if (strcmp(jstr(jb, "status"), "concluded"))
				qmp1(o->v, "job-cancel", json_pack("{s:s}", "id", d->job), -1, NULL, &err);
			for (int64_t t = now_ms() + PIVOT_TIMEOUT_MS; now_ms() < t;) {
				json_t *js = jobs_query(o->v, &err, &rc);
				json_t *x = json_object_get(js, d->job);
				bool gone = rc || !x || !strcmp(jstr(x, "status"), "concluded");

				json_decref(js);
				if (gone)
					break;
				sleep_ms(50);
			}
			qmp1(o->v, "job-dismiss", json_pack("{s:s}", "id", d->job), -1, NULL, &err);
		}
		if (d->dst_node[0])
			qmp1(o->v, "blockdev-del", json_pack("{s:s}", "node-name", d->dst_node), -1, NULL,
			     &err);
		if (d->fdset >= 0)
			qmp1(o->v, "remove-fd", json_pack("{s:i}", "fdset-id", d->fdset), -1, NULL, &err);
		d->job[0] = d->dst_node[0] = '\0';
		d->fdset = -1;
	}
	json_decref(jobs);
}

/* Starts the mirrors and waits until every one is READY (source and target
 * in sync, and kept so by write-blocking mode). */
static json_t *mirror_ready(struct op *o)
{
	struct vm_err err;
	json_t *r;
	int rc;

	for (size_t i = 0; i < o->nd; i++) {
		struct disk *d = &o->d[i];
		int fd;

		rc = qemu_disk_node(o->v, d->index, d->src_node, sizeof(d->src_node), &err);
		if (rc)
			return reply_err(rc, "%s: %s", o->kind, err.msg);
		fd = openat(o->v->dirfd, d->desc.extent, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
		if (fd >= 0) {
			region_list(d, fd);
			close(fd);
		}
		if ((r = add_target(o, d)))
			return r;
	}
	/* the intent names the nodes: recovery after an agent crash finds
	 * them in QEMU */
	if (o->intent && (rc = set_phase(o, "copying")))
		return reply_err(rc, "%s: intent record: %s", o->kind, strerror(-rc));
	for (size_t i = 0; i < o->nd; i++) {
		struct disk *d = &o->d[i];

		snprintf(d->job, sizeof(d->job), "svm-%zu", d->index);
		rc = qmp1(o->v, "blockdev-mirror",
			  json_pack("{s:s,s:s,s:s,s:s,s:s,s:b,s:b}", "job-id", d->job, "device",
				    d->src_node, "target", d->dst_node, "sync", "full", "copy-mode",
				    "write-blocking", "auto-finalize", 1, "auto-dismiss", 0),
			  -1, NULL, &err);
		if (rc) {
			d->job[0] = '\0';
			return reply_err(rc, "%s: blockdev-mirror of %s: %s", o->kind, d->file, err.msg);
		}
	}
	for (int64_t deadline = now_ms() + MIRROR_TIMEOUT_MS * (int64_t)o->nd;;) {
		json_t *jobs = jobs_query(o->v, &err, &rc);
		uint64_t done = 0;
		size_t ready = 0;

		if (rc) {
			json_decref(jobs);
			return reply_err(rc, "%s: QEMU stopped answering during the copy: %s", o->kind, err.msg);
		}
		for (size_t i = 0; i < o->nd; i++) {
			struct disk *d = &o->d[i];
			json_t *jb = json_object_get(jobs, d->job);
			const char *st = jstr(jb, "status");

			if (!jb || !strcmp(st, "concluded") || !strcmp(st, "aborting")) {
				char m[400];

				snprintf(m, sizeof(m), "%s", jb ? jstr(jb, "error") : "the job vanished");
				json_decref(jobs);
				return reply_err(strstr(m, "No space") ? ENOSPC : EIO,
						 "%s: the mirror of %s failed: %s%s", o->kind, d->file, m,
						 strstr(m, "No space") ? " (the destination is full; the source is untouched)" : "");
			}
			if (!strcmp(st, "ready")) {
				d->ready = true;
				ready++;
				done += d->data;
			} else {
				uint64_t cur = (uint64_t)json_integer_value(json_object_get(jb, "current-progress"));

				done += d->nregions ? data_below(d, cur) : cur;
			}
		}
		json_decref(jobs);
		if (ready < o->nd)
			test_point(o->a, "copying");
		task_progress(&o->t, "mirroring", o->done + (done > o->total ? o->total : done),
			      o->total + o->done);
		if (ready == o->nd)
			return NULL;
		if (now_ms() > deadline)
			return reply_err(ETIMEDOUT, "%s: the mirror did not become ready within %d s", o->kind,
					 MIRROR_TIMEOUT_MS / 1000);
		sleep_ms(POLL_MS);
	}
}

/* job-complete (move: QEMU switches to the target) or cancel (clone: the
 * target keeps the point-in-time copy) of every READY mirror, and waits for
 * the jobs to conclude. */
static int mirror_finish(struct op *o, bool complete, struct vm_err *err)
{
	int rc;

	for (size_t i = 0; i < o->nd; i++) {
		struct disk *d = &o->d[i];

		if (complete)
			rc = qmp1(o->v, "job-complete", json_pack("{s:s}", "id", d->job), -1, NULL, err);
		else
			rc = qmp1(o->v, "block-job-cancel", json_pack("{s:s}", "device", d->job), -1, NULL,
				  err);
		if (rc)
			return rc;
	}
	for (int64_t deadline = now_ms() + PIVOT_TIMEOUT_MS;;) {
		json_t *jobs = jobs_query(o->v, err, &rc);
		size_t n = 0;

		if (rc) {
			json_decref(jobs);
			return rc;
		}
		for (size_t i = 0; i < o->nd; i++) {
			json_t *jb = json_object_get(jobs, o->d[i].job);

			if (jb && !strcmp(jstr(jb, "status"), "concluded")) {
				if (json_object_get(jb, "error")) {
					rc = vm_errf(err, -EIO, "%s: %s", o->d[i].job, jstr(jb, "error"));
					json_decref(jobs);
					return rc;
				}
				n++;
			}
		}
		json_decref(jobs);
		if (n == o->nd)
			break;
		if (now_ms() > deadline)
			return vm_errf(err, -ETIMEDOUT, "the mirror jobs did not conclude within %d s",
				       PIVOT_TIMEOUT_MS / 1000);
		sleep_ms(50);
	}
	for (size_t i = 0; i < o->nd; i++) {
		qmp1(o->v, "job-dismiss", json_pack("{s:s}", "id", o->d[i].job), -1, NULL, err);
		o->d[i].job[0] = '\0';
	}
	return 0;
}

/* ------------------------------------------------------------ lock records */

/* the lock record name of the .vmx at PATH */
static void lname_of(const char *vmx_path, char *out, size_t size)
{
	const char *b = strrchr(vmx_path, '/');

	snprintf(out, size, "%s.lck", b ? b + 1 : vmx_path);
}

/* A move hands the destination's lock record to the running QEMU with QMP
 * getfd under this name; the VM's state file "lck-fd" says
 * "<name> <QEMU pid>" (absent: QEMU holds the record it inherited at
 * power-on, which QMP cannot close).  docs/vm.md "Storage vMotion",
 * "Lock records during a move". */
static void lck_fdname_of(const char *task, char *out, size_t size)
{
	snprintf(out, size, "vmfsd-lck-%s", task);
}

/* The destination's record, held by this operation, to QEMU: from here on
 * it is held exactly as long as QEMU runs, like the source's. */
static json_t *lck_hand_over(struct op *o)
{
	struct vm_err err;
	int rc;

	lck_fdname_of(o->t.id, o->lck_fdname, sizeof(o->lck_fdname));
	rc = qmp1(o->v, "getfd", json_pack("{s:s}", "fdname", o->lck_fdname), o->dlock, NULL, &err);
	if (rc)
		return reply_err(rc, "%s: handing the lock record %s to QEMU: %s", o->kind, o->dlname,
				 err.msg);
	o->handed = true;
	close(o->dlock);
	o->dlock = -1;
	return NULL;
}

/* QEMU closes a record handed to it (before the switch: the copy goes;
 * after it: the old folder's record, which goes with its folder) */
static void lck_close_in_qemu(struct vmctx *v, const char *fdname)
{
	struct vm_err err;

	qmp1(v, "closefd", json_pack("{s:s}", "fdname", fdname), -1, NULL, &err);
}

/* After the switch: QEMU (QPID) holds the new folder's record as FDNAME.
 * The old folder's record is released when an earlier move handed it
 * (else QEMU keeps the inherited descriptor of a file about to be
 * deleted: nobody can open that any more).  V is the old path's context,
 * whose state folder follows the move (state_move). */
static void lck_switched(struct vmctx *v, pid_t qpid, const char *fdname)
{
	char p[PATH_MAX + 32], txt[256], old[128];
	int opid;

	sfile(v, "lck-fd", p, sizeof(p));
	if (!read_text(p, txt, sizeof(txt)) && sscanf(txt, "%127s %d", old, &opid) == 2 &&
	    opid == (int)qpid && strcmp(old, fdname))
		lck_close_in_qemu(v, old);
	snprintf(txt, sizeof(txt), "%s %d\n", fdname, (int)qpid);
	write_text(p, txt);
}

/* HA (docs/ha.md §4): a VM moved live is protected under its new path
 * before the switch and the old path's entries go after it, so that a host
 * dying at any instant leaves the survivors an entry for the folder that
 * is (or becomes, once they resolve the intent records) the VM. */
static int ha_protect_path(struct agent *a, const char *vmx)
{
	struct vmctx *nv = calloc(1, sizeof(*nv));
	struct vm_err err;
	int rc;

	if (!nv)
		return -ENOMEM;
	rc = vmctx_open(a, vmx, false, nv, &err);
	if (!rc)
		rc = ha_protect(a, nv);
	vmctx_close(nv);
	free(nv);
	return rc;
}

/* ha_unprotect by path (the folder must still exist: the datastore is
 * found from it) */
static void ha_unprotect_path(struct agent *a, const char *vmx, const char *why)
{
	struct vmctx *nv = calloc(1, sizeof(*nv));
	char *slash;

	if (!nv)
		return;
	snprintf(nv->vmx_path, sizeof(nv->vmx_path), "%s", vmx);
	snprintf(nv->folder, sizeof(nv->folder), "%s", vmx);
	slash = strrchr(nv->folder, '/');
	if (slash && slash != nv->folder) {
		*slash = '\0';
		nv->dirfd = -1;
		nv->lockfd = -1;
		ha_unprotect_why(a, nv, why);
	}
	free(nv);
}

/* ---------------------------------------------------------------- recovery */

/* Resolves an interrupted move of the VM whose source folder is SRC (vmx
 * name VMXN) and destination DST, from the records alone; QEMU is not
 * running.  DST_HELD: the caller holds the destination path's per-VM
 * flock.  Returns a sentence for the log. */
static void recover_move(struct agent *a, const char *src_vmx, const char *dst, char *msg,
			 size_t size, bool dst_held)
{
	char src[PATH_MAX], buf[PATH_MAX], name[VM_NAME_MAX + 1], iname[VM_NAME_MAX + 16];
	json_t *si = NULL, *di = NULL;
	int sd, dd, serr;

	snprintf(buf, sizeof(buf), "%s", src_vmx);
	snprintf(src, sizeof(src), "%s", dirname(buf));
	snprintf(buf, sizeof(buf), "%s", src_vmx);
	snprintf(name, sizeof(name), "%s", basename(buf));
	if (strlen(name) > 4)
		name[strlen(name) - 4] = '\0';
	snprintf(iname, sizeof(iname), "%s.vmx.move", name);
	sd = open(src, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	serr = errno;
	dd = open(dst, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (sd >= 0)
		si = intent_read(sd, iname);
	if (dd >= 0)
		di = intent_read(dd, iname);
	if (si && !strcmp(jstr(si, "phase"), "switched")) {
		/* the .vmx under this host's path of the destination */
		const char *dv = jstr(si, "dest_vmx");
		char why[PATH_MAX + 16], dvmx[PATH_MAX * 2];

		snprintf(dvmx, sizeof(dvmx), "%s/%s", dst, strrchr(dv, '/') ? strrchr(dv, '/') + 1 : dv);

		snprintf(why, sizeof(why), "moved to %s", dst);
		ha_unprotect_path(a, src_vmx, why);     /* the old path is no VM any more */
		finish_forward(a, src, src_vmx, dst, dvmx, iname, name, dst_held);
		snprintf(msg, size, "the move had switched to %s: finished (the source %s was removed)",
			 dst, src);
	} else if (di && sd < 0) {
		/* the source is not reachable from here (another host's
		 * local folder, a datastore not mounted here): whether it
		 * switched is unknown, so the copy is kept */
		snprintf(msg, size, "the source %s cannot be opened here (%s): the copy %s is kept; "
			 "the move is resolved where the source is reachable", src, strerror(serr), dst);
	} else if (di && (!si || !strcmp(jstr(di, "task"), jstr(si, "task")))) {
		/* a live move lists the new path just before its switch */
		const char *dv = jstr(di, "dest_vmx");
		char dvmx[PATH_MAX * 2];

		snprintf(dvmx, sizeof(dvmx), "%s/%s", dst, strrchr(dv, '/') ? strrchr(dv, '/') + 1 : dv);
		ha_unprotect_path(a, dvmx, "an incomplete copy, removed");
		remove_folder_files(dst);
		if (si) {
			unlinkat(sd, iname, 0);
			fsync_dir(sd);
		}
		snprintf(msg, size, "the copy had not switched: the incomplete copy %s was removed, %s stays the VM",
			 dst, src);
	} else if (si) {
		unlinkat(sd, iname, 0);
		fsync_dir(sd);
		snprintf(msg, size, "no copy found at %s: the intent record was removed, %s stays the VM",
			 dst, src);
	} else {
		snprintf(msg, size, "nothing to do");
	}
	json_decref(si);
	json_decref(di);
	if (sd >= 0)
		close(sd);
	if (dd >= 0)
		close(dd);
}

/* A running VM whose live move an agent crash interrupted: the mirror may
 * still run in QEMU.  Before the switch it is cancelled and the target
 * dropped; after it, completed. */
static void recover_live(struct agent *a, struct vmctx *v, json_t *in, char *msg, size_t size)
{
	struct vm_err err;
	int rc;
	json_t *jobs = jobs_query(v, &err, &rc);
	bool switched = !strcmp(jstr(in, "phase"), "switched");
	const char *k;
	json_t *jb;
	size_t i;
	json_t *n;

	json_object_foreach(jobs, k, jb) {
		if (strncmp(k, "svm-", 4))
			continue;
		if (switched && !strcmp(jstr(jb, "status"), "ready"))
			qmp1(v, "job-complete", json_pack("{s:s}", "id", k), -1, NULL, &err);
		else if (!switched && strcmp(jstr(jb, "status"), "concluded"))
			qmp1(v, "job-cancel", json_pack("{s:s}", "id", k), -1, NULL, &err);
		for (int64_t t = now_ms() + PIVOT_TIMEOUT_MS; now_ms() < t;) {
			json_t *js = jobs_query(v, &err, &rc);
			json_t *x = json_object_get(js, k);
			bool gone = rc || !x || !strcmp(jstr(x, "status"), "concluded");

			json_decref(js);
			if (gone)
				break;
			sleep_ms(50);
		}
		qmp1(v, "job-dismiss", json_pack("{s:s}", "id", k), -1, NULL, &err);
	}
	json_decref(jobs);
	{
		/* the destination's lock record, if the move had handed it to
		 * QEMU: kept after the switch (QEMU runs from there), closed
		 * before it (the copy goes) */
		char fdname[160];
		pid_t qpid = vm_qemu_pid(v);

		lck_fdname_of(jstr(in, "task"), fdname, sizeof(fdname));
		if (switched) {
			lck_switched(v, qpid, fdname);
			ha_protect_path(a, jstr(in, "dest_vmx"));
		} else {
			lck_close_in_qemu(v, fdname);
		}
	}
	/* the nodes no longer in use: the targets (before) or sources (after) */
	json_array_foreach(json_object_get(in, switched ? "source_nodes" : "target_nodes"), i, n)
		if (*json_string_value(n))
			qmp1(v, "blockdev-del", json_pack("{s:s}", "node-name", json_string_value(n)), -1,
			     NULL, &err);
	if (!switched)
		json_array_foreach(json_object_get(in, "fdsets"), i, n)
			if (json_integer_value(n) >= 0)
				qmp1(v, "remove-fd", json_pack("{s:I}", "fdset-id", json_integer_value(n)), -1,
				     NULL, &err);
	recover_move(a, v->vmx_path, jstr(in, "dest"), msg, size, false);
}

/* Takes the lock records of a move's source (.vmx SRC_VMX) and destination
 * (DST, .vmx DST_VMX) where the folders still exist; -EBUSY when one is
 * held. */
static int records_lock(const char *src_vmx, const char *dst, const char *dst_vmx, int *l1,
			int *l2)
{
	char buf[PATH_MAX], ln[PATH_MAX + 16];
	struct vm_lockrec cur;
	int fd, rc = 0;

	*l1 = *l2 = -1;
	snprintf(buf, sizeof(buf), "%s", src_vmx);
	*(strrchr(buf, '/') ?: buf) = '\0';
	fd = open(buf, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0) {
		lname_of(src_vmx, ln, sizeof(ln));
		rc = vm_lockrec_lock(fd, ln, l1, &cur);
		close(fd);
	}
	fd = rc || !*dst_vmx ? -1 : open(dst, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0) {
		lname_of(dst_vmx, ln, sizeof(ln));
		rc = vm_lockrec_lock(fd, ln, l2, &cur);
		close(fd);
	}
	return rc == -EBUSY || rc == -EAGAIN ? -EBUSY : 0;
}

static void recover_task(struct agent *a, json_t *task)
{
	const char *op = jstr(task, "op"), *vm = jstr(task, "vm");
	const char *dst = jstr(task, "dest_folder");
	char msg[PATH_MAX * 2 + 128] = "nothing to do";

	if (!*dst)
		return;
	if (!strcmp(op, "migrate-storage")) {
		struct vmctx v;
		struct vm_err err;
		int lfd = flock_vm(a, vm);
		char iname[VM_NAME_MAX + 16];
		json_t *in = NULL;

		if (lfd < 0)
			return;
		if (!vmctx_open(a, vm, false, &v, &err)) {
			intent_name(&v.cfg, iname, sizeof(iname));
			in = intent_read(v.dirfd, iname);
		}
		if (in && json_is_true(json_object_get(in, "live")) && vm_qemu_pid(&v)) {
			/* its QEMU holds the source's record: nobody else
			 * can resolve this move */
			recover_live(a, &v, in, msg, sizeof(msg));
		} else {
			/* the records of both folders first: a host that
			 * found the move first (power-on, HA) resolves it
			 * under them (storage_power_gate) */
			int l1 = -1, l2 = -1;

			if (records_lock(vm, dst, jstr(task, "dest_vmx"), &l1, &l2))
				snprintf(msg, sizeof(msg), "left to the host that holds its lock records now");
			else
				recover_move(a, vm, dst, msg, sizeof(msg), false);
			if (l1 >= 0)
				close(l1);
			if (l2 >= 0)
				close(l2);
		}
		json_decref(in);
		vmctx_close(&v);
		close(lfd);
	} else {
		/* a clone or deployment never touches its source: an
		 * incomplete copy is removed */
		int dd = open(dst, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		DIR *d = dd >= 0 ? fdopendir(dd) : NULL;
		struct dirent *de;
		bool marked = false;
		char dv[PATH_MAX + VM_NAME_MAX + 8], ln[PATH_MAX + 16];
		int lk = -1, ldir;
		struct vm_lockrec cur;

		while (d && (de = readdir(d)))
			if (strstr(de->d_name, ".vmx.move"))
				marked = true;
		if (d)
			closedir(d);
		/* the copy's record (held by the copying agent): a host that
		 * found the copy first may be removing it */
		snprintf(dv, sizeof(dv), "%s/%s.vmx", dst, strrchr(dst, '/') ? strrchr(dst, '/') + 1 : dst);
		lname_of(dv, ln, sizeof(ln));
		ldir = marked ? open(dst, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
		if (ldir >= 0 && vm_lockrec_lock(ldir, ln, &lk, &cur))
			marked = false;
		if (ldir >= 0)
			close(ldir);
		if (marked) {
			remove_folder_files(dst);
			snprintf(msg, sizeof(msg), "the incomplete copy %s was removed", dst);
		}
		if (lk >= 0)
			close(lk);
	}
	json_object_set_new(task, "recovery", json_string(msg));
	agent_event(a, vm, "storage.recovered", "%s (task %s) was interrupted: %s", op,
		    jstr(task, "id"), msg);
}

void storage_recover_all(struct agent *a)
{
	tasks_interrupted(a, recover_task);
}

/* is VMX a template ("vmfsd.template" = "TRUE") */
static bool is_template(struct vmctx *v)
{
	char *text;
	size_t len;
	struct vmx_file f;
	struct vm_err err;
	bool t = false;

	if (vm_read_file(v->dirfd, v->cfg.vmx_name, VMX_MAX_FILE, &text, &len))
		return false;
	if (!vmx_parse(text, len, v->cfg.vmx_name, &f, &err)) {
		const struct vmx_kv *kv = vmx_find(&f, "vmfsd.template");

		t = kv && !strcasecmp(kv->value, "TRUE");
		vmx_free(&f);
	}
	free(text);
	return t;
}

/* A record of a folder involved in an interrupted or running copy is held:
 * somebody works on it (the copying agent or the VM's QEMU) */
static json_t *gate_busy(struct vmctx *v, int dirfd, const char *lname, int rc, json_t *in)
{
	char holder[256] = "";
	struct dsview d;
	enum ds_hstate hs = DS_UNKNOWN;
	int64_t ago = -1;

	if (rc != -EBUSY && rc != -EAGAIN)
		return reply_err(rc, "%s: the lock record %s: %s", v->vmx_path, lname, strerror(-rc));
	if (rc == -EBUSY)
		ds_lock_holder(dirfd, lname, holder, sizeof(holder));
	if (holder[0] && !ds_open(v->folder, &d)) {
		hs = ds_host(&d, holder, &ago);
		ds_close(&d);
	}
	/* "declared dead": HA's restart waits for the locks to be broken
	 * (ha.c try_restart) instead of taking the VM for running elsewhere */
	if (hs == DS_DEAD)
		return reply_err(EBUSY, "%s: host %s, which ran a %s of it (task %s), was declared dead %lld s ago; "
				 "its locks are not broken yet: the %s is resolved once they are, in a few seconds",
				 v->vmx_path, holder, jstr(in, "op"), jstr(in, "task"),
				 (long long)(ago / 1000), jstr(in, "op"));
	return reply_err(EBUSY, "%s: a %s by host %s (task %s) is under way: wait for it (vmfsctl tasks)",
			 v->vmx_path, jstr(in, "op"), holder[0] ? holder : jstr(in, "host"),
			 jstr(in, "task"));
}

/* Power-on's (and every copy's) gate: a template never runs; a folder with
 * an intent record is part of a move or copy.  Whoever finds one resolves
 * it, any host, once it holds the lock records of the folders involved:
 * a held record means the copying agent or the VM's QEMU still works on it
 * (docs/vm.md "Storage vMotion", "Crash safety"). */
json_t *storage_power_gate(struct agent *a, struct vmctx *v)
{
	char iname[VM_NAME_MAX + 16], msg[PATH_MAX * 2 + 128], own[VM_NAME_MAX + 16];
	char other[PATH_MAX + 16], lother[PATH_MAX], lsrc_vmx[PATH_MAX * 2];
	const char *src_vmx, *dst_folder;
	struct vm_lockrec cur;
	json_t *in, *r = NULL;
	bool src_role, move;
	int l1 = -1, l2 = -1, od = -1, rc;

	if (is_template(v))
		return reply_err(EPERM, "%s is a template: it cannot be powered on; create a VM from it with `vmfsctl deploy %s NEW_FOLDER`",
				 v->vmx_path, v->folder);
	intent_name(&v->cfg, iname, sizeof(iname));
	in = intent_read(v->dirfd, iname);
	if (!in)
		return NULL;
	src_role = !strcmp(jstr(in, "role"), "source");
	move = !strcmp(jstr(in, "op"), "migrate-storage");
	/* the other folder as this host sees it (the record may come from
	 * another host, whose mount points are not ours) */
	if (!move)
		snprintf(lother, sizeof(lother), "%s", v->folder);
	else if (!intent_folder(a, in, src_role ? "dest" : "source", v->folder, lother,
				sizeof(lother)))
		snprintf(lother, sizeof(lother), "%s", jstr(in, src_role ? "dest" : "source"));
	if (src_role) {
		src_vmx = v->vmx_path;
		dst_folder = lother;
	} else {
		const char *sv = jstr(in, "source_vmx");

		snprintf(lsrc_vmx, sizeof(lsrc_vmx), "%s/%s", lother,
			 strrchr(sv, '/') ? strrchr(sv, '/') + 1 : sv);
		src_vmx = lsrc_vmx;
		dst_folder = v->folder;
	}
	vm_lockrec_name(&v->cfg, own, sizeof(own));
	rc = vm_lockrec_lock(v->dirfd, own, &l1, &cur);
	if (rc) {
		r = gate_busy(v, v->dirfd, own, rc, in);
		goto out;
	}
	if (move) {
		/* the other folder's record too (it may be gone already) */
		char buf[PATH_MAX];

		snprintf(buf, sizeof(buf), "%s", lother);
		lname_of(src_role ? jstr(in, "dest_vmx") : src_vmx, other, sizeof(other));
		od = open(buf, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (od >= 0 && (rc = vm_lockrec_lock(od, other, &l2, &cur))) {
			r = gate_busy(v, od, other, rc, in);
			goto out;
		}
	}
	/* nobody works on it: resolved here, from the records alone */
	if (!move) {
		remove_folder_files(v->folder);
		agent_event(a, v->vmx_path, "storage.recovered",
			    "an incomplete copy of an interrupted %s (task %s) was removed", jstr(in, "op"),
			    jstr(in, "task"));
		r = reply_err(ENOENT, "%s was an incomplete copy of an interrupted %s: removed",
			      v->folder, jstr(in, "op"));
		goto out;
	}
	/* a power-on of the copy holds the copy's per-VM flock already */
	recover_move(a, src_vmx, dst_folder, msg, sizeof(msg), !src_role);
	agent_event(a, v->vmx_path, "storage.recovered", "an interrupted %s (task %s, host %s): %s",
		    jstr(in, "op"), jstr(in, "task"), jstr(in, "host"), msg);
	if (src_role && !file_exists_at(v->dirfd, v->cfg.vmx_name))
		r = reply_err(ENOENT, "%s was moved to %s (%s): power that one on", v->vmx_path,
			      dst_folder, msg);
	else if (!src_role && (file_exists_at(v->dirfd, iname) ||
			       !file_exists_at(v->dirfd, v->cfg.vmx_name)))
		r = reply_err(ENOENT, "%s: an interrupted storage migration: %s", v->vmx_path, msg);
out:
	if (l1 >= 0)
		close(l1);
	if (l2 >= 0)
		close(l2);
	if (od >= 0)
		close(od);
	json_decref(in);
	return r;
}

/* ---------------------------------------------------------------- the commands */

static void op_init(struct op *o, struct agent *a, struct vmctx *v, json_t *req, const char *kind)
{
	memset(o, 0, sizeof(*o));
	o->a = a;
	o->v = v;
	o->req = req;
	o->kind = kind;
	o->ddir = -1;
	o->slock = o->dlock = -1;
	intent_name(&v->cfg, o->iname, sizeof(o->iname));
}

static json_t *op_end(struct op *o, json_t *r)
{
	if (o->ddir >= 0)
		close(o->ddir);
	/* a stopped VM's records: left as they were (the source's) or
	 * empty (the copy's): nobody runs either */
	if (o->slock >= 0)
		close(o->slock);
	if (o->dlock >= 0)
		close(o->dlock);
	for (size_t i = 0; i < o->nd; i++)
		free(o->d[i].regions);
	free(o->sd);
	if (o->t.j)
		task_end(&o->t, r);
	return r;
}

/* the checks every copy of a VM makes first */
static json_t *precheck(struct op *o)
{
	char ln[VM_NAME_MAX + 16];
	struct vm_lockrec lr;
	json_t *r;

	/* a half-done move of this VM is resolved first (or refused) */
	if ((r = storage_power_gate(o->a, o->v)) && !strstr(jstr(r, "error"), "is a template"))
		return r;
	json_decref(r);
	o->qpid = vm_qemu_pid(o->v);
	vm_lockrec_name(&o->v->cfg, ln, sizeof(ln));
	if (!o->qpid) {
		/* stopped: its record is held for the whole copy, so that no
		 * host powers the source on while it is copied (a record we
		 * can lock is stale whoever it names: docs/ha.md §3) */
		int rc = vm_lockrec_lock(o->v->dirfd, ln, &o->slock, &lr);

		if (rc == -EBUSY || rc == -EAGAIN) {
			char holder[256] = "";

			if (rc == -EBUSY)
				ds_lock_holder(o->v->dirfd, ln, holder, sizeof(holder));
			return reply_err(EBUSY, "%s is running on host %s: run the command on that host (the agent that runs a VM copies it)",
					 o->v->vmx_path, holder[0] ? holder : lr.host[0] ? lr.host : "(unknown)");
		}
		if (rc)
			return reply_err(rc, "%s: the lock record %s: %s", o->v->vmx_path, ln,
					 strerror(-rc));
	} else if (!vm_lockrec_read(o->v->dirfd, ln, &lr) && lr.host[0]) {
		o->lr = lr;
		o->have_lr = true;
	}
	if (o->qpid) {
		char st[32];

		if (vm_run_status(o->v, st, sizeof(st)))
			return reply_err(EIO, "%s: QEMU does not answer", o->v->vmx_path);
		if (!strcmp(st, "io-error"))
			return reply_err(EIO, "%s is paused by a disk I/O error: resume it first", o->v->vmx_path);
		o->live = true;
	}
	return NULL;
}

static json_t *run_offline(struct op *o)
{
	json_t *r;

	if ((r = begin(o)))
		return r;
	test_point(o->a, "before-copy");
	if ((r = copy_small(o)))
		return r;
	test_point(o->a, "copying");
	if ((r = copy_extents(o)))
		return r;
	if (fsync_dir(o->ddir))
		return reply_err(errno, "%s: fsync %s: %s", o->kind, o->dst, strerror(errno));
	return NULL;
}

static json_t *run_live(struct op *o)
{
	json_t *r;

	if ((r = begin(o)))
		return r;
	test_point(o->a, "before-copy");
	if ((r = copy_small(o)))
		return r;
	if (o->move) {
		/* the destination is the running VM's folder from the switch
		 * on: its record names the same QEMU (held by this agent
		 * until it is handed to QEMU, lck_hand_over) */
		struct vm_lockrec r = o->lr;
		int rc;

		if (!o->have_lr) {
			memset(&r, 0, sizeof(r));
			r.started = (int64_t)time(NULL);
		}
		snprintf(r.host, sizeof(r.host), "%s", o->a->host);
		r.agent_pid = o->a->pid;
		r.qemu_pid = o->qpid;
		vm_boot_id(r.boot_id, sizeof(r.boot_id));
		rc = vm_lockrec_write(o->dlock, &r);
		if (rc)
			return reply_err(rc, "%s: lock record in %s: %s", o->kind, o->dst, strerror(-rc));
	}
	return mirror_ready(o);
}

/* SRC and the parent of DST on one filesystem */
static bool same_volume(const char *src, const char *dst)
{
	char parent[PATH_MAX];
	struct stat a, b;

	snprintf(parent, sizeof(parent), "%s", dst);
	return !stat(src, &a) && !stat(dirname(parent), &b) && a.st_dev == b.st_dev;
}

json_t *storage_migrate(struct agent *a, struct vmctx *v, json_t *req)
{
	struct op o;
	struct vm_err err;
	json_t *r;
	int rc;

	/* Snapshots: merged first on request (online or offline, before
	 * this operation holds anything).  Otherwise a stopped VM's chain
	 * moves with it as files of its folder (the deltas, the .vmsd and
	 * the memory files are copied like its logs; the chain is named by
	 * file names in the .vmsd, so it holds in the new folder), and a
	 * running VM is refused: the mirror copies flat extents only. */
	if (json_is_true(json_object_get(req, "consolidate")) && (r = snap_consolidate(a, v)))
		return r;
	op_init(&o, a, v, req, "migrate-storage");
	o.move = true;
	if ((r = precheck(&o)) ||
	    (o.live && (r = snap_refuse(v, "a live migrate-storage", "add --consolidate to merge "
					   "them first, or power the VM off to move it with them"))) ||
	    (r = resolve_dest(&o, req_str(req, "dest"))) ||
	    (r = plan_disks(&o, req_str(req, "provisioning"))) || (r = check_space(&o)))
		return op_end(&o, r);
	if (!o.live && !req_str(req, "provisioning") && same_volume(v->folder, o.dst)) {
		/* a stopped VM within one volume: one atomic rename, nothing
		 * copied (and nothing to recover: the folder is in one place
		 * or the other) */
		if (rename(v->folder, o.dst))
			return op_end(&o, reply_err(errno, "%s: rename to %s: %s", o.kind, o.dst,
						    strerror(errno)));
		state_move(a, v->vmx_path, o.dst_vmx, o.dst, v->cfg.name, false);
		inventory_edit(a, o.dst_vmx, v->vmx_path);
		agent_event(a, o.dst_vmx, "storage.migrated", "moved from %s (renamed: same volume)",
			    v->folder);
		r = reply_ok("%s moved to %s (renamed within the volume)", v->vmx_path, o.dst);
		json_object_set_new(r, "path", json_string(o.dst));
		json_object_set_new(r, "vmx", json_string(o.dst_vmx));
		json_object_set_new(r, "live", json_false());
		return op_end(&o, r);
	}
	if ((rc = task_begin(&o.t, a, o.kind, v->vmx_path, o.dst, o.live)))
		return op_end(&o, reply_err(rc, "task record: %s", strerror(-rc)));
	task_set(&o.t, "dest_folder", json_string(o.dst));
	task_set(&o.t, "dest_vmx", json_string(o.dst_vmx));
	agent_event(a, v->vmx_path, "storage.migrate-started", "%s move to %s started (task %s)",
		    o.live ? "live" : "offline", o.dst, o.t.id);
	r = o.live ? run_live(&o) : run_offline(&o);
	if (!r && o.live && !vm_pid_alive(o.qpid))
		r = reply_err(EIO, "%s: QEMU ended during the copy", o.kind);
	if (r) {
		if (o.live && vm_pid_alive(o.qpid))
			drop_targets(&o);
		rollback(&o);
		agent_event(a, v->vmx_path, "storage.migrate-failed", "%s (rolled back: %s stays the VM)",
			    jstr(r, "error"), v->folder);
		return op_end(&o, r);
	}
	test_point(a, "ready");
	if (o.live && !vm_pid_alive(o.qpid)) {
		rollback(&o);
		return op_end(&o, reply_err(EIO, "%s: QEMU ended before the switch (rolled back: %s stays the VM)",
					    o.kind, v->folder));
	}
	if (o.live) {
		/* QEMU holds the destination's record before the switch: at
		 * every instant the VM's folder has a held record */
		if ((r = lck_hand_over(&o))) {
			drop_targets(&o);
			rollback(&o);
			return op_end(&o, r);
		}
		rc = ha_protect_path(a, o.dst_vmx);
		if (rc)
			agent_event(a, o.dst_vmx, "ha.protect-failed",
				    "moving, but the new path is NOT protected by HA: %s", strerror(-rc));
	}
	/* the switch: from this write on, the destination is the VM */
	task_progress(&o.t, "switching", o.total, o.total);
	rc = set_phase(&o, "switched");
	if (!rc)
		test_point(a, "switched");
	if (rc) {
		if (o.live) {
			lck_close_in_qemu(v, o.lck_fdname);
			ha_unprotect_path(a, o.dst_vmx, "the move was rolled back");
			drop_targets(&o);
		}
		rollback(&o);
		return op_end(&o, reply_err(rc, "%s: cannot record the switch in %s: %s (rolled back)",
					    o.kind, v->folder, strerror(-rc)));
	}
	if (o.live) {
		rc = mirror_finish(&o, true, &err);
		/* a QMP connection reset is QEMU dying: its threads may take a
		 * moment to exit (2 s, as vm_lockrec_release allows); only a
		 * QEMU that lives on after a failed job-complete still writes
		 * the source */
		if (rc && !wait_pid_gone(o.qpid, 2000)) {
			/* QEMU still writes the source, in sync with the
			 * target: switch back, then drop the target */
			set_phase(&o, "copying");
			lck_close_in_qemu(v, o.lck_fdname);
			ha_unprotect_path(a, o.dst_vmx, "the move was rolled back");
			drop_targets(&o);
			rollback(&o);
			return op_end(&o, reply_err(rc, "%s: job-complete failed: %s (rolled back)", o.kind,
						    err.msg));
		}
		/* QEMU died after the switch: the target holds every write it
		 * completed (write-blocking mirror): the move goes forward */
		for (size_t i = 0; !rc && i < o.nd; i++)
			qmp1(v, "blockdev-del", json_pack("{s:s}", "node-name", o.d[i].src_node), -1, NULL,
			     &err);
	}
	{
		char log[VM_NAME_MAX + 8], dl[VM_NAME_MAX + 8];

		/* the log grew during a live move: copy its latest version */
		snprintf(log, sizeof(log), "%s.log", v->cfg.name);
		snprintf(dl, sizeof(dl), "%s.log", o.dst_name);
		if (o.live && file_exists_at(v->dirfd, log)) {
			unlinkat(o.ddir, dl, 0);
			copy_file(&o, v->dirfd, log, dl, false, VM_PROV_THIN, &err);
		}
	}
	if (o.live && vm_pid_alive(o.qpid))
		lck_switched(v, o.qpid, o.lck_fdname);
	{
		char why[PATH_MAX + 16];

		snprintf(why, sizeof(why), "moved to %s", o.dst);
		ha_unprotect_path(a, v->vmx_path, why);     /* no list names the old path any more */
	}
	finish_forward(a, v->folder, v->vmx_path, o.dst, o.dst_vmx, o.iname, v->cfg.name, false);
	agent_event(a, o.dst_vmx, "storage.migrated", "moved %s from %s (%s, task %s, %.1f s)",
		    o.live ? "live" : "offline", v->folder, o.nd ? vm_prov_name(o.d[0].prov) : "no disk",
		    o.t.id, (double)(now_ms() - o.t.t0) / 1000.0);
	r = reply_ok("%s moved to %s (%s%s)", v->vmx_path, o.dst, o.live ? "live, " : "",
		     o.nd ? vm_prov_name(o.d[0].prov) : "no disk");
	json_object_set_new(r, "path", json_string(o.dst));
	json_object_set_new(r, "vmx", json_string(o.dst_vmx));
	json_object_set_new(r, "live", json_boolean(o.live));
	return op_end(&o, r);
}

/* clone and deploy: a copy under a new identity; the source is never
 * changed, so an interruption only leaves an incomplete (marked) copy */
/* A clone of a VM with snapshots has none: each disk's chain top (its
 * current delta, or the file snapshot SNAP froze) is flattened into the
 * copy's extent by copy_extents; a running VM's current state is flattened
 * by the mirror, which copies what its top node reads. */
static json_t *plan_chains(struct op *o, const char *snap)
{
	char vn[VM_NAME_MAX + 8];
	struct vmsd_snap *sn = NULL;
	struct vm_err err;
	int rc;

	o->sd = calloc(1, sizeof(*o->sd));
	if (!o->sd)
		return reply_err(ENOMEM, "out of memory");
	snprintf(vn, sizeof(vn), "%s.vmsd", o->v->cfg.name);
	rc = vmsd_load(o->v->dirfd, vn, o->sd, &err);
	if (rc)
		return reply_err(rc, "%s: %s", o->v->vmx_path, err.msg);
	if (snap) {
		sn = vmsd_find(o->sd, snap);
		if (!sn)
			return reply_err(ENOENT, "%s has no snapshot '%s' (vmfsctl snapshot list)",
					 o->v->vmx_path, snap);
		if (sn->state != VMSD_OK)
			return reply_err(EBUSY, "snapshot '%s' of %s is incomplete (an interrupted create "
					 "or delete): delete it", snap, o->v->vmx_path);
		if (o->live)
			return reply_err(EBUSY, "%s is running: a clone from snapshot '%s' is made while it "
					 "is powered off (a clone of a running VM copies its current state)",
					 o->v->vmx_path, snap);
	}
	for (size_t i = 0; i < o->nd; i++) {
		struct disk *d = &o->d[i];
		const char *node = o->v->cfg.disks[d->index].key, *top = NULL;

		if (sn) {
			for (size_t k = 0; k < sn->ndisks; k++)
				if (!strcasecmp(sn->disk[k].node, node))
					top = sn->disk[k].file;
			if (!top)
				return reply_err(EINVAL, "snapshot '%s' of %s has no disk %s (added after it)",
						 snap, o->v->vmx_path, node);
		} else {
			top = vmsd_top(o->sd, node, d->desc.extent);
		}
		if (strcmp(top, d->desc.extent) && !o->live)
			snprintf(d->top, sizeof(d->top), "%s", top);
	}
	return NULL;
}

static json_t *copy_vm(struct agent *a, struct vmctx *v, json_t *req, const char *kind)
{
	struct op o;
	struct vm_err err;
	json_t *r;
	int rc;

	op_init(&o, a, v, req, kind);
	o.identity = true;
	if ((r = precheck(&o)) || (r = resolve_dest(&o, req_str(req, "dest"))) ||
	    (r = plan_disks(&o, req_str(req, "provisioning"))) ||
	    (r = plan_chains(&o, req_str(req, "snapshot"))) || (r = check_space(&o)))
		return op_end(&o, r);
	if ((rc = task_begin(&o.t, a, o.kind, v->vmx_path, o.dst, o.live)))
		return op_end(&o, reply_err(rc, "task record: %s", strerror(-rc)));
	task_set(&o.t, "dest_folder", json_string(o.dst));
	r = o.live ? run_live(&o) : run_offline(&o);
	if (!r && o.live) {
		/* a point in time common to all disks: the guest pauses while
		 * the READY mirrors are cancelled (each target then holds the
		 * disk as of that instant) */
		json_t *e = qmp_simple(v, "stop", NULL, NULL, &err);

		rc = e ? -EIO : mirror_finish(&o, false, &err);
		json_decref(e);
		e = qmp_simple(v, "cont", NULL, NULL, &err);
		json_decref(e);
		if (rc)
			r = reply_err(rc, "%s: %s", kind, err.msg);
		else
			for (size_t i = 0; i < o.nd; i++)
				o.d[i].job[0] = '\0';
	}
	if (o.live && vm_pid_alive(o.qpid))
		drop_targets(&o);
	if (!r && fsync_dir(o.ddir))
		r = reply_err(errno, "%s: fsync %s: %s", kind, o.dst, strerror(errno));
	if (r) {
		rollback(&o);
		agent_event(a, v->vmx_path, "storage.clone-failed", "%s: %s (the copy was removed)", kind,
			    jstr(r, "error"));
		return op_end(&o, r);
	}
	unlinkat(o.ddir, o.diname, 0);
	fsync_dir(o.ddir);
	inventory_edit(a, o.dst_vmx, NULL);
	agent_event(a, o.dst_vmx, !strcmp(kind, "clone") ? "storage.cloned" : "storage.deployed",
		    "%s of %s%s (%s, task %s)", kind, v->vmx_path, o.live ? " (hot)" : "",
		    o.nd ? vm_prov_name(o.d[0].prov) : "no disk", o.t.id);
	r = reply_ok("%s %s to %s (%s%s)", !strcmp(kind, "clone") ? "cloned" : "deployed",
		     v->vmx_path, o.dst, o.live ? "hot, " : "", o.nd ? vm_prov_name(o.d[0].prov) : "no disk");
	json_object_set_new(r, "path", json_string(o.dst));
	json_object_set_new(r, "vmx", json_string(o.dst_vmx));
	json_object_set_new(r, "live", json_boolean(o.live));
	return op_end(&o, r);
}

json_t *storage_clone(struct agent *a, struct vmctx *v, json_t *req)
{
	if (is_template(v))
		return reply_err(EINVAL, "%s is a template: use `vmfsctl deploy` to create a VM from it",
				 v->vmx_path);
	return copy_vm(a, v, req, "clone");
}

json_t *storage_deploy(struct agent *a, struct vmctx *v, json_t *req)
{
	if (!is_template(v))
		return reply_err(EINVAL, "%s is not a template (vmfsctl template marks one)", v->vmx_path);
	return copy_vm(a, v, req, "deploy");
}

/* marks (or with "unset" unmarks) a powered-off VM as a template */
json_t *storage_template(struct agent *a, struct vmctx *v, json_t *req)
{
	bool unset = json_is_true(json_object_get(req, "unset"));
	char ln[VM_NAME_MAX + 16], tmp[VM_NAME_MAX + 16];
	struct vm_lockrec lr;
	struct vmx_file f;
	struct vm_err err;
	char *text, *out;
	size_t len;
	int rc, fd;

	vm_lockrec_name(&v->cfg, ln, sizeof(ln));
	/* running = its record is held, here or on another host (a record
	 * nobody holds is stale: docs/ha.md §3) */
	if (vm_qemu_pid(v) || vm_lockrec_probe(v->dirfd, ln, &lr) == 1)
		return reply_err(EBUSY, "%s is running: power it off first", v->vmx_path);
	rc = vm_read_file(v->dirfd, v->cfg.vmx_name, VMX_MAX_FILE, &text, &len);
	if (!rc) {
		rc = vmx_parse(text, len, v->cfg.vmx_name, &f, &err);
		free(text);
	} else {
		vm_errf(&err, rc, "%s", strerror(-rc));
	}
	if (rc)
		return reply_err(rc, "%s: %s", v->vmx_path, err.msg);
	if (unset)
		vmx_del(&f, "vmfsd.template");
	else
		vmx_set(&f, "vmfsd.template", "TRUE");
	out = vmx_format(&f);
	vmx_free(&f);
	if (!out)
		return reply_err(ENOMEM, "out of memory");
	/* replaced atomically: a crash leaves the old .vmx or the new one */
	snprintf(tmp, sizeof(tmp), ".%s.tmp", v->cfg.vmx_name);
	unlinkat(v->dirfd, tmp, 0);
	fd = openat(v->dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
	rc = fd < 0 ? -errno : 0;
	if (!rc && (write(fd, out, strlen(out)) != (ssize_t)strlen(out) || fsync(fd)))
		rc = errno ? -errno : -EIO;
	if (fd >= 0)
		close(fd);
	free(out);
	if (!rc && renameat(v->dirfd, tmp, v->dirfd, v->cfg.vmx_name))
		rc = -errno;
	if (rc) {
		unlinkat(v->dirfd, tmp, 0);
		return reply_err(rc, "%s: %s", v->vmx_path, strerror(-rc));
	}
	fsync_dir(v->dirfd);
	agent_event(a, v->vmx_path, unset ? "vm.template-unset" : "vm.template",
		    unset ? "no longer a template" : "marked as a template");
	return reply_ok(unset ? "%s is no longer a template" : "%s is now a template", v->vmx_path);
}
