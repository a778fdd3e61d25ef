// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * `vmfsctl export` and `vmfsctl import` in the host agent (docs/vm.md "OVF
 * and OVA"): long conversions run here, like clones, as tasks with
 * progress.  Export writes a powered-off VM as an OVF folder or an OVA
 * (descriptor, manifest, streamOptimized VMDKs made by qemu-img convert,
 * then the CD images and the direct-boot kernel and initrd); the VM's lock
 * record is held for the whole export so that no host powers it on while
 * its disks are read (a running VM is refused: a copy of disks that change
 * under it is not consistent, and a snapshot-based copy is not offered).
 * Import checks the whole package before it creates anything: the
 * descriptor (vm/ovf.c), every file it references present in the package,
 * the manifest's digests, each disk a sparse VMDK whose header capacity
 * fits its DiskSection entry; then it builds the VM in a hidden folder
 * beside its final place (removed again on any failure), converts every
 * disk with qemu-img into a flat extent provisioned as asked, writes the
 * descriptors and the .vmx, checks the .vmx with the parser every host
 * uses, renames the folder into place and registers the VM.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ops.h"
#include "storage.h"
#include "vm/copy.h"
#include "vm/ovf.h"

/* ---------------------------------------------------------------- helpers */

static bool ends_with(const char *s, const char *sfx)
{
	size_t l = strlen(s), k = strlen(sfx);

	return l >= k && !strcasecmp(s + l - k, sfx);
}

/* Appends LEN bytes of IN at OFF to OUT (at its current offset). */
static int copy_range(int out, int in, uint64_t off, uint64_t len, struct task *t,
		      const char *phase, uint64_t *done, uint64_t total)
{
	size_t bs = 1 << 20;
	char *buf = malloc(bs);
	int rc = 0;

	if (!buf)
		return -ENOMEM;
	for (uint64_t pos = 0; pos < len && !rc;) {
		size_t want = len - pos < bs ? (size_t)(len - pos) : bs;
		ssize_t n = pread(in, buf, want, (off_t)(off + pos));

		if (n <= 0) {
			rc = n < 0 ? -errno : -ENODATA;
			break;
		}
		for (ssize_t w = 0; w < n && !rc;) {
			ssize_t k = write(out, buf + w, (size_t)(n - w));

			if (k < 0 && errno != EINTR)
				rc = -errno;
			else if (k > 0)
				w += k;
		}
		pos += (uint64_t)n;
		*done += (uint64_t)n;
		if (t && t->j)
			task_progress(t, phase, *done, total);
	}
	free(buf);
	return rc;
}

/* ---------------------------------------------------------------- export */

struct xfile {
	char name[VM_NAME_MAX + 1];
	int dirfd;                     /* where it is: the VM folder or the parts folder */
	uint64_t size;
	char sha[OVF_HEX_MAX];
};
_Static_assert(sizeof(((struct xfile *)0)->name) == sizeof(((struct ovf_out_disk *)0)->file),
	       "a package file's name is copied whole");

static int export_files(struct vmctx *v, struct xfile *f, size_t *n)
{
	const char *extra[2] = {v->cfg.kernel, v->cfg.initrd};

	*n = 0;
	for (size_t i = 0; i < v->cfg.ndisks; i++)
		if (v->cfg.disks[i].cdrom && *n < OVF_MAX_FILES)
			snprintf(f[(*n)++].name, sizeof(f[0].name), "%s", v->cfg.disks[i].file);
	for (int i = 0; i < 2; i++)
		if (extra[i][0] && *n < OVF_MAX_FILES)
			snprintf(f[(*n)++].name, sizeof(f[0].name), "%s", extra[i]);
	for (size_t i = 0; i < *n; i++) {
		struct stat st;
		struct vm_err e;
		int fd = open_in_folder(v->dirfd, f[i].name, O_RDONLY, "file", &e);

		if (fd < 0)
			return fd;
		if (fstat(fd, &st)) {
			close(fd);
			return -errno;
		}
		f[i].size = (uint64_t)st.st_size;
		f[i].dirfd = v->dirfd;
		close(fd);
	}
	return 0;
}

static int hash_file(struct xfile *f, struct vm_err *err)
{
	int fd = openat(f->dirfd, f->name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	int rc;

	if (fd < 0)
		return vm_errf(err, -errno, "%s: %s", f->name, strerror(errno));
	rc = ovf_digest_fd(fd, 0, f->size, OVF_SHA256, f->sha, NULL, NULL);
	close(fd);
	return rc ? vm_errf(err, rc, "reading %s: %s", f->name, strerror(-rc)) : 0;
}

/* one export: the VM, where it goes, what is written */
struct exp {
	struct agent *a;
	struct vmctx *v;
	const char *dest;
	bool ova;
	struct task t;
	int lfd;                       /* the VM's lock record, held */
	struct vmx_file vmx;
	char parts[PATH_MAX];          /* where the disks are converted */
	int pdir;
	bool made_parts;               /* remove PARTS at the end (always for an OVA; on failure for a folder) */
	struct ovf_out o;
	struct xfile disks[VM_MAX_DISKS], files[OVF_MAX_FILES];
	size_t ndisks, nfiles;
	char ovfname[VM_NAME_MAX + 8], mfname[VM_NAME_MAX + 8];
	char *ovf, *mf;
};

/* powered off, not suspended, no snapshots; its lock record held (no
 * host powers it on during the export); its .vmx read */
static json_t *export_check(struct exp *e)
{
	struct vmctx *v = e->v;
	char ln[VM_NAME_MAX + 16], vmss[VM_NAME_MAX + 16], holder[256] = "", *text = NULL;
	struct vm_lockrec lr;
	struct vm_err err;
	size_t len;
	json_t *r;
	int rc;

	vm_lockrec_name(&v->cfg, ln, sizeof(ln));
	if (vm_qemu_pid(v))
		return reply_err(EBUSY, "%s is running: power it off first (export copies the disks of a powered-off VM; disks that change during the copy would not be consistent)",
				 v->vmx_path);
	rc = vm_lockrec_lock(v->dirfd, ln, &e->lfd, &lr);
	if (rc == -EBUSY || rc == -EAGAIN) {
		if (rc == -EBUSY)
			ds_lock_holder(v->dirfd, ln, holder, sizeof(holder));
		return reply_err(EBUSY, "%s is running on host %s: power it off first", v->vmx_path,
				 holder[0] ? holder : lr.host[0] ? lr.host : "(unknown)");
	}
	if (rc)
		return reply_err(rc, "%s: the lock record %s: %s", v->vmx_path, ln, strerror(-rc));
	vmss_name(v, vmss, sizeof(vmss));
	if (file_exists_at(v->dirfd, vmss))
		return reply_err(EBUSY, "%s is suspended: resume and shut it down, or power it off, first (OVF carries no memory state)",
				 v->vmx_path);
	/* one disk per virtual disk, not a snapshot chain */
	if ((r = snap_refuse(v, "export", NULL)))
		return r;
	if (!access(e->dest, F_OK) && (e->ova || rmdir(e->dest)))
		return reply_err(EEXIST, "export: %s already exists%s", e->dest,
				 e->ova ? "" : " (and is not an empty folder)");
	rc = vm_read_file(v->dirfd, v->cfg.vmx_name, VMX_MAX_FILE, &text, &len);
	if (!rc)
		rc = vmx_parse(text, len, v->cfg.vmx_name, &e->vmx, &err);
	else
		vm_errf(&err, rc, "%s", strerror(-rc));
	free(text);
	if (rc)
		return reply_err(rc, "%s: %s", v->vmx_path, err.msg);
	if ((rc = export_files(v, e->files, &e->nfiles)))
		return reply_err(rc, "export: the CD image, kernel or initrd of %s: %s", v->vmx_path,
				 strerror(-rc));
	return NULL;
}

/* the disks are converted into PARTS: the destination folder itself, or
 * a hidden folder beside the .ova */
static json_t *export_parts(struct exp *e)
{
	if (e->ova) {
		char d[PATH_MAX], b[PATH_MAX];

		snprintf(d, sizeof(d), "%s", e->dest);
		snprintf(b, sizeof(b), "%s", e->dest);
		snprintf(e->parts, sizeof(e->parts), "%s/.%s.parts-XXXXXX", dirname(d), basename(b));
		if (!mkdtemp(e->parts))
			return reply_err(errno, "export: %s: %s", e->parts, strerror(errno));
	} else {
		snprintf(e->parts, sizeof(e->parts), "%s", e->dest);
		if (mkdir(e->parts, 0755))
			return reply_err(errno, "export: %s: %s", e->parts, strerror(errno));
	}
	e->made_parts = true;
	e->pdir = open(e->parts, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (e->pdir < 0)
		return reply_err(errno, "export: %s: %s", e->parts, strerror(errno));
	return NULL;
}

/* each disk -> PARTS/<vm>-diskK.vmdk, streamOptimized */
static json_t *export_disks(struct exp *e)
{
	const struct vm_config *cfg = &e->v->cfg;
	struct vm_err err;
	int rc;

	for (size_t i = 0; i < cfg->ndisks; i++) {
		const struct vm_disk *d = &cfg->disks[i];
		struct ovf_out_disk *od = &e->o.disks[e->o.ndisks];
		struct xfile *xf = &e->disks[e->ndisks];
		struct vmdk_desc desc;
		char src[160], dst[PATH_MAX + VM_NAME_MAX], phase[32], opts[96];
		struct stat st;
		int fd;

		if (d->cdrom)
			continue;
		if ((rc = vmdk_load(e->v->dirfd, d->file, &desc, &err)))
			return reply_err(rc, "export: %s", err.msg);
		fd = open_in_folder(e->v->dirfd, desc.extent, O_RDONLY, d->key, &err);
		if (fd < 0)
			return reply_err(fd, "export: %s", err.msg);
		od->capacity = desc.sectors * 512;
		vm_data_bytes(fd, od->capacity, &od->populated);
		snprintf(od->file, sizeof(od->file), "%s-disk%zu.vmdk", cfg->name, e->ndisks + 1);
		/* the descriptor's size, not the extent file's: a flat file
		 * longer than its descriptor exports the disk the VM sees */
		snprintf(src, sizeof(src),
			 "json:{\"driver\":\"raw\",\"size\":%" PRIu64 ",\"file\":{\"driver\":\"file\",\"filename\":\"/proc/self/fd/%d\"}}",
			 od->capacity, fd);
		snprintf(dst, sizeof(dst), "%s/%s", e->parts, od->file);
		snprintf(phase, sizeof(phase), "disk %zu", e->ndisks + 1);
		snprintf(opts, sizeof(opts), "subformat=streamOptimized,adapter_type=%s",
			 !strcmp(desc.adapter, "ide") ? "ide" : "lsilogic");
		char *argv[] = {"qemu-img", "convert", "-p", "-O", "vmdk", "-o", opts, src, dst, NULL};

		rc = qemu_img_run(&e->t, phase, od->capacity, argv, &fd, 1, &err);
		close(fd);
		if (rc)
			return reply_err(rc, "export: %s: %s", d->file, err.msg);
		if (stat(dst, &st))
			return reply_err(errno, "export: %s: %s", dst, strerror(errno));
		od->file_size = (uint64_t)st.st_size;
		memcpy(xf->name, od->file, sizeof(xf->name));   /* same size, both NUL-terminated */
		xf->dirfd = e->pdir;
		xf->size = od->file_size;
		e->ndisks++;
		e->o.ndisks++;
	}
	return NULL;
}

/* the descriptor, and the manifest: SHA-256 of it and of every file */
static json_t *export_manifest(struct exp *e)
{
	char hex[OVF_HEX_MAX], line[VM_NAME_MAX + OVF_HEX_MAX + 16];
	size_t n = e->ndisks + e->nfiles, cap = (n + 1) * sizeof(line), len = 0;
	struct vm_err err;
	int rc;

	for (size_t i = 0; i < e->nfiles; i++) {
		snprintf(e->o.files[i].file, sizeof(e->o.files[0].file), "%s", e->files[i].name);
		e->o.files[i].size = e->files[i].size;
	}
	e->o.nfiles = e->nfiles;
	e->ovf = ovf_format(&e->o);
	e->mf = calloc(1, cap);
	if (!e->ovf || !e->mf)
		return reply_err(ENOMEM, "out of memory");
	snprintf(e->ovfname, sizeof(e->ovfname), "%s.ovf", e->v->cfg.name);
	snprintf(e->mfname, sizeof(e->mfname), "%s.mf", e->v->cfg.name);
	ovf_digest_mem(e->ovf, strlen(e->ovf), OVF_SHA256, hex);
	len += (size_t)snprintf(e->mf + len, cap - len, "SHA256(%s)= %s\n", e->ovfname, hex);
	for (size_t i = 0; i < n; i++) {
		struct xfile *f = i < e->ndisks ? &e->disks[i] : &e->files[i - e->ndisks];

		task_progress(&e->t, "digests", i, n);
		if ((rc = hash_file(f, &err)))
			return reply_err(rc, "export: %s", err.msg);
		len += (size_t)snprintf(e->mf + len, cap - len, "SHA256(%s)= %s\n", f->name, f->sha);
	}
	return NULL;
}

/* a folder: the descriptor, the manifest, the disks (already there) and
 * copies of the other files */
static json_t *export_folder(struct exp *e)
{
	struct vm_err err;
	int rc;

	if ((rc = write_new_file(e->pdir, e->ovfname, e->ovf, &err)) ||
	    (rc = write_new_file(e->pdir, e->mfname, e->mf, &err)))
		return reply_err(rc, "export: %s", err.msg);
	for (size_t i = 0; i < e->nfiles; i++) {
		const struct xfile *f = &e->files[i];
		uint64_t done = 0;
		int in = openat(f->dirfd, f->name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
		int out = in < 0 ? -1 : openat(e->pdir, f->name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);

		rc = out < 0 ? -errno : copy_range(out, in, 0, f->size, &e->t, "files", &done, f->size);
		if (!rc && fsync(out))
			rc = -errno;
		if (in >= 0)
			close(in);
		if (out >= 0)
			close(out);
		if (rc)
			return reply_err(-rc, "export: %s: %s", f->name, strerror(-rc));
	}
	fsync(e->pdir);
	return NULL;
}

/* DSP0243: the descriptor first, then the manifest, then the files in the
 * order of References (the disks, then the others); written as OUT.tmp,
 * renamed when complete */
static json_t *export_ova(struct exp *e)
{
	uint64_t total = 0, done = 0;
	char tmp[PATH_MAX + 8];
	int out, rc;

	for (size_t i = 0; i < e->ndisks + e->nfiles; i++)
		total += i < e->ndisks ? e->disks[i].size : e->files[i - e->ndisks].size;
	snprintf(tmp, sizeof(tmp), "%s.tmp", e->dest);
	unlink(tmp);
	out = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
	if (out < 0)
		return reply_err(errno, "export: %s: %s", tmp, strerror(errno));
	rc = ova_write_member(out, e->ovfname, e->ovf, strlen(e->ovf));
	if (!rc)
		rc = ova_write_member(out, e->mfname, e->mf, strlen(e->mf));
	for (size_t i = 0; i < e->ndisks + e->nfiles && !rc; i++) {
		const struct xfile *f = i < e->ndisks ? &e->disks[i] : &e->files[i - e->ndisks];
		int in = openat(f->dirfd, f->name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);

		if (in < 0) {
			rc = -errno;
			break;
		}
		rc = ova_write_header(out, f->name, f->size);
		if (!rc)
			rc = copy_range(out, in, 0, f->size, &e->t, "packaging", &done, total);
		if (!rc)
			rc = ova_pad(out, f->size);
		close(in);
	}
	if (!rc)
		rc = ova_finish(out);
	if (!rc && fsync(out))
		rc = -errno;
	close(out);
	if (!rc && rename(tmp, e->dest))
		rc = -errno;
	if (rc) {
		unlink(tmp);
		return reply_err(-rc, "export: writing %s: %s", e->dest, strerror(-rc));
	}
	return NULL;
}

json_t *ovf_export(struct agent *a, struct vmctx *v, json_t *req)
{
	struct exp *e = calloc(1, sizeof(*e));
	json_t *r;
	int rc;

	if (!e)
		return reply_err(ENOMEM, "out of memory");
	e->a = a;
	e->v = v;
	e->dest = req_str(req, "dest");
	e->lfd = e->pdir = -1;
	e->o.cfg = &v->cfg;
	e->o.vmx = &e->vmx;
	if (!e->dest || e->dest[0] != '/') {
		r = reply_err(EINVAL, "export: the agent needs an absolute destination path");
		goto out;
	}
	e->ova = ends_with(e->dest, ".ova");
	if ((r = export_check(e)) || (r = export_parts(e)))
		goto out;
	if ((rc = task_begin(&e->t, a, "export", v->vmx_path, e->dest, false))) {
		r = reply_err(rc, "task record: %s", strerror(-rc));
		goto out;
	}
	if ((r = export_disks(e)) || (r = export_manifest(e)) ||
	    (r = e->ova ? export_ova(e) : export_folder(e)))
		goto out;
	if (!e->ova)
		e->made_parts = false;   /* the folder is the result */
	agent_event(a, v->vmx_path, "vm.exported", "exported to %s (%zu disks, task %s)", e->dest,
		    e->ndisks, e->t.id);
	r = reply_ok("exported %s to %s (%s, %zu disk%s)", v->vmx_path, e->dest,
		     e->ova ? "OVA" : "OVF folder", e->ndisks, e->ndisks == 1 ? "" : "s");
	json_object_set_new(r, "path", json_string(e->dest));
out:
	if (e->pdir >= 0)
		close(e->pdir);
	if (e->made_parts)
		remove_folder(e->parts);
	if (e->lfd >= 0)
		close(e->lfd);
	if (e->t.j)
		task_end(&e->t, r);
	vmx_free(&e->vmx);
	free(e->ovf);
	free(e->mf);
	free(e);
	return r;
}

/* ---------------------------------------------------------------- import */

/* where each file of the package is: FD at OFF, SIZE bytes */
struct pfile {
	int fd;                        /* the OVA, or the file itself; -1: not there */
	uint64_t off, size;
};

struct imp {
	struct task t;
	struct ovf_pkg p;
	const char *pkg;               /* the path given */
	bool ova;
	int afd;                       /* the OVA */
	int pdir;                      /* the .ovf's folder */
	struct ova_member m[OVA_MAX_MEMBERS];
	size_t nm;
	struct pfile f[OVF_MAX_FILES];
	char ovfname[VM_NAME_MAX + 1];
	char *ovf;
	size_t ovflen;
	uint64_t vbase, vtotal;         /* verifying: bytes hashed before this file, in all */
	json_t *warn;
	/* what is made */
	char name[VM_NAME_MAX + 1];
	char folder[PATH_MAX];
	char work[PATH_MAX + 32];       /* the hidden folder it is built in */
	char vmx_path[PATH_MAX + VM_NAME_MAX + 8];
	int dirfd;
	bool made;                      /* WORK removed at the end unless the import succeeded */
	struct vmx_file vmx;
};

/* verifying: bytes hashed of all the files */
static void digest_cb(void *arg, uint64_t done)
{
	struct imp *im = arg;

	if (im->t.j)
		task_progress(&im->t, "verifying", im->vbase + done, im->vtotal);
}

/* a file of the package by name: OVA member or a file beside the .ovf */
static int pkg_open(struct imp *im, const char *name, struct pfile *pf, struct vm_err *err)
{
	if (im->ova) {
		const struct ova_member *mm = ova_find(im->m, im->nm, name);

		if (!mm)
			return vm_errf(err, -ENOENT, "%s: '%s' is not in the archive", im->pkg, name);
		pf->fd = im->afd;
		pf->off = mm->off;
		pf->size = mm->size;
		return 0;
	}
	struct stat st;
	int fd = open_in_folder(im->pdir, name, O_RDONLY, "package file", err);

	if (fd < 0)
		return fd;
	if (fstat(fd, &st)) {
		close(fd);
		return vm_errf(err, -errno, "%s: %s", name, strerror(errno));
	}
	pf->fd = fd;
	pf->off = 0;
	pf->size = (uint64_t)st.st_size;
	return 0;
}

static void pkg_close(struct imp *im, struct pfile *pf)
{
	if (!im->ova && pf->fd >= 0)
		close(pf->fd);
	pf->fd = -1;
}

static json_t *load_package(struct imp *im)
{
	struct vm_err err;
	struct pfile pf = {.fd = -1};
	int rc;

	if (im->ova) {
		const char *ovfm = NULL;

		if ((rc = ova_index(im->afd, im->pkg, im->m, OVA_MAX_MEMBERS, &im->nm, &err)))
			return reply_err(rc, "import: %s", err.msg);
		for (size_t i = 0; i < im->nm; i++)
			if (ends_with(im->m[i].name, ".ovf")) {
				if (ovfm)
					return reply_err(EINVAL, "import: %s: two descriptors (%s, %s): one VM per package",
							 im->pkg, ovfm, im->m[i].name);
				ovfm = im->m[i].name;
			}
		if (!ovfm)
			return reply_err(EINVAL, "import: %s: no .ovf descriptor in the archive", im->pkg);
		if (strcmp(ovfm, im->m[0].name))
			json_array_append_new(im->warn, json_sprintf("the descriptor %s is not the archive's first member (DSP0243 wants it first); read anyway", ovfm));
		snprintf(im->ovfname, sizeof(im->ovfname), "%s", ovfm);
	} else {
		char d[PATH_MAX];

		snprintf(d, sizeof(d), "%s", im->pkg);
		snprintf(im->ovfname, sizeof(im->ovfname), "%s", basename(d));
		snprintf(d, sizeof(d), "%s", im->pkg);
		im->pdir = open(dirname(d), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (im->pdir < 0)
			return reply_err(errno, "import: the folder of %s: %s", im->pkg, strerror(errno));
	}
	if ((rc = pkg_open(im, im->ovfname, &pf, &err)))
		return reply_err(rc, "import: %s", err.msg);
	if (pf.size > OVF_MAX_XML) {
		pkg_close(im, &pf);
		return reply_err(EFBIG, "import: %s: %" PRIu64 " bytes: larger than %u bytes, not an OVF descriptor",
				 im->ovfname, pf.size, OVF_MAX_XML);
	}
	im->ovf = malloc(pf.size + 1);
	rc = im->ovf ? 0 : -ENOMEM;
	if (!rc && pread(pf.fd, im->ovf, pf.size, (off_t)pf.off) != (ssize_t)pf.size)
		rc = -EIO;
	pkg_close(im, &pf);
	if (rc)
		return reply_err(-rc, "import: reading %s: %s", im->ovfname, strerror(-rc));
	im->ovf[pf.size] = '\0';
	im->ovflen = pf.size;
	if ((rc = ovf_parse(im->ovf, im->ovflen, im->ovfname, &im->p, &err)))
		return reply_err(rc, "import: %s", err.msg);
	/* every referenced file is there, with the size References says */
	for (size_t i = 0; i < im->p.nfiles; i++) {
		const struct ovf_file *of = &im->p.files[i];

		if ((rc = pkg_open(im, of->href, &im->f[i], &err)))
			return reply_err(rc, "import: References/File %s: %s", of->id, err.msg);
		if (of->size >= 0 && (uint64_t)of->size != im->f[i].size)
			return reply_err(EINVAL, "import: References/File %s: '%s' has %" PRIu64 " bytes, ovf:size says %" PRId64,
					 of->id, of->href, im->f[i].size, of->size);
	}
	return NULL;
}

/* the manifest: every digest matches, and it covers the descriptor and
 * every referenced file */
static json_t *verify_manifest(struct imp *im)
{
	char mfname[VM_NAME_MAX + 8], hex[OVF_HEX_MAX], *text;
	struct pfile pf = {.fd = -1};
	struct ovf_mf mf;
	struct vm_err err;
	int rc;

	snprintf(mfname, sizeof(mfname), "%.*s.mf", (int)strlen(im->ovfname) - 4, im->ovfname);
	rc = pkg_open(im, mfname, &pf, &err);
	if (rc == -ENOENT) {
		json_array_append_new(im->warn, json_sprintf("no manifest (%s): the package's contents are not verified", mfname));
		return NULL;
	}
	if (rc)   /* there, but a symbolic link or not a regular file */
		return reply_err(rc, "import: the manifest: %s", err.msg);
	if (pf.size > OVF_MAX_MF) {
		pkg_close(im, &pf);
		return reply_err(EFBIG, "import: %s: larger than %d bytes: not a manifest", mfname, OVF_MAX_MF);
	}
	text = malloc(pf.size + 1);
	rc = text && pread(pf.fd, text, pf.size, (off_t)pf.off) == (ssize_t)pf.size ? 0 : -EIO;
	pkg_close(im, &pf);
	if (!rc)
		rc = ovf_mf_parse(text, pf.size, mfname, &mf, &err);
	else
		vm_errf(&err, rc, "%s: cannot read it", mfname);
	free(text);
	if (rc)
		return reply_err(rc, "import: %s", err.msg);
	for (size_t i = 0; i < im->p.nfiles; i++)
		im->vtotal += im->f[i].size;
	task_progress(&im->t, "verifying", 0, im->vtotal);
	/* the descriptor and each file must be listed */
	for (size_t i = 0; i <= im->p.nfiles; i++) {
		const char *name = i ? im->p.files[i - 1].href : im->ovfname;
		size_t k;

		for (k = 0; k < mf.n; k++)
			if (!strcmp(mf.e[k].file, name))
				break;
		if (k == mf.n)
			return reply_err(EINVAL, "import: %s does not list %s: the package does not match its manifest",
					 mfname, name);
	}
	for (size_t k = 0; k < mf.n; k++) {
		const struct ovf_mf_entry *e = &mf.e[k];
		size_t i;

		if (!strcmp(e->file, im->ovfname)) {
			ovf_digest_mem(im->ovf, im->ovflen, e->alg, hex);
		} else {
			for (i = 0; i < im->p.nfiles; i++)
				if (!strcmp(im->p.files[i].href, e->file))
					break;
			if (i == im->p.nfiles)
				return reply_err(EINVAL, "import: %s lists %s, which the descriptor does not reference",
						 mfname, e->file);
			rc = ovf_digest_fd(im->f[i].fd, im->f[i].off, im->f[i].size, e->alg, hex, digest_cb, im);
			if (rc)
				return reply_err(rc, "import: reading %s: %s", e->file, strerror(-rc));
			im->vbase += im->f[i].size;
		}
		if (strcmp(hex, e->hex))
			return reply_err(EBADMSG, "import: %s: digest mismatch for %s (the manifest says %s %.16s..., the file has %.16s...): the package is damaged or was altered",
					 mfname, e->file, e->alg == OVF_SHA1 ? "SHA1" : e->alg == OVF_SHA256 ? "SHA256" : "SHA512",
					 e->hex, hex);
	}
	return NULL;
}

/* A disk file must be a hosted sparse VMDK (streamOptimized or sparse):
 * "KDMV" and a capacity that fits its DiskSection entry.  A descriptor
 * (text) or a header without capacity could name other files for
 * qemu-img to open, so neither is handed to it. */
static json_t *check_vmdk(struct imp *im, const struct ovf_disk *d)
{
	const struct pfile *pf = &im->f[d->file];
	unsigned char h[512];
	uint64_t cap = 0;

	if (pf->size < 512 || pread(pf->fd, h, 512, (off_t)pf->off) != 512)
		return reply_err(EINVAL, "import: DiskSection/Disk %s: '%s' is too short for a VMDK", d->id,
				 im->p.files[d->file].href);
	if (memcmp(h, "KDMV", 4))
		return reply_err(EINVAL, "import: DiskSection/Disk %s: '%s' is not a sparse VMDK (no KDMV header)",
				 d->id, im->p.files[d->file].href);
	for (int i = 7; i >= 0; i--)
		cap = cap << 8 | h[12 + i];
	if (cap == 0 || cap > OVF_MAX_CAPACITY / 512)
		return reply_err(EINVAL, "import: DiskSection/Disk %s: '%s' has a capacity of %" PRIu64 " sectors: refused",
				 d->id, im->p.files[d->file].href, cap);
	if (cap * 512 > d->capacity)
		return reply_err(EINVAL, "import: DiskSection/Disk %s: '%s' holds %" PRIu64 " bytes, more than its ovf:capacity %" PRIu64,
				 d->id, im->p.files[d->file].href, cap * 512, d->capacity);
	return NULL;
}

/* eager-zeroed: zeros written over every hole the conversion left */
static int fill_holes(int fd, uint64_t size)
{
	/* 1 MiB writes, the size create zeroes an eager-zeroed disk with
	 * (the volume's default file block: one FUSE write per block) */
	static const char z[1 << 20];
	off_t pos = 0;

	while ((uint64_t)pos < size) {
		off_t hole = lseek(fd, pos, SEEK_HOLE), data;

		if (hole < 0 || (uint64_t)hole >= size)
			break;
		data = lseek(fd, hole, SEEK_DATA);
		if (data < 0 || (uint64_t)data > size)
			data = (off_t)size;
		for (off_t p = hole; p < data;) {
			size_t n = (size_t)(data - p) < sizeof(z) ? (size_t)(data - p) : sizeof(z);
			ssize_t w = pwrite(fd, z, n, p);

			if (w <= 0)
				return w < 0 ? -errno : -EIO;
			p += w;
		}
		pos = data;
	}
	return 0;
}

static int import_disk(struct imp *im, int dirfd, size_t k, const char *flat, enum vm_prov prov,
		       struct vm_err *err)
{
	const struct ovf_dev *vd = &im->p.vdisks[k];
	const struct ovf_disk *d = &im->p.disks[vd->index];
	uint64_t size = (d->capacity + 511) & ~511ULL;
	char phase[32], dst[32];
	int fd, rc = 0;

	fd = openat(dirfd, flat, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return vm_errf(err, -errno, "%s: %s", flat, strerror(errno));
	if (ftruncate(fd, (off_t)size))
		rc = vm_errf(err, -errno, "%s: truncate: %s", flat, strerror(errno));
	if (!rc && prov != VM_PROV_THIN && fallocate(fd, 0, 0, (off_t)size))
		rc = vm_errf(err, -errno, "%s: fallocate %" PRIu64 " bytes: %s", flat, size, strerror(errno));
	if (!rc && d->file >= 0) {
		const struct pfile *pf = &im->f[d->file];
		json_t *spec = json_pack("{s:s,s:{s:s,s:I,s:I,s:{s:s,s:s,s:s}}}", "driver", "vmdk", "file",
					 "driver", "raw", "offset", (json_int_t)pf->off, "size",
					 (json_int_t)pf->size, "file", "driver", "file", "filename", "",
					 "locking", "off");
		char src[64], *js, *jsrc = NULL;
		int keep[2] = {pf->fd, fd};

		snprintf(src, sizeof(src), "/proc/self/fd/%d", pf->fd);
		json_object_set_new(json_object_get(json_object_get(spec, "file"), "file"), "filename",
				    json_string(src));
		js = json_dumps(spec, JSON_COMPACT);
		json_decref(spec);
		if (!js || asprintf(&jsrc, "json:%s", js) < 0)
			rc = vm_errf(err, -ENOMEM, "out of memory");
		free(js);
		snprintf(dst, sizeof(dst), "/proc/self/fd/%d", fd);
		snprintf(phase, sizeof(phase), "disk %zu", k + 1);
		/* -n: into the extent made above (its provisioning kept);
		 * --target-is-zero: it reads as zeros, so zero areas of the
		 * source are not written (a thin extent stays thin) */
		char *argv[] = {"qemu-img", "convert", "-p", "-n", "--target-is-zero", "-O", "raw", jsrc, dst,
				NULL};

		if (!rc)
			rc = qemu_img_run(&im->t, phase, size, argv, keep, 2, err);
		free(jsrc);
	}
	if (!rc && prov == VM_PROV_EAGER && (rc = fill_holes(fd, size)))
		vm_errf(err, rc, "%s: writing zeros: %s", flat, strerror(-rc));
	if (!rc && fsync(fd))
		rc = vm_errf(err, -errno, "%s: fsync: %s", flat, strerror(errno));
	close(fd);
	return rc;
}

/* a VM name from the package's: file-name safe */
static void safe_name(const char *in, char *out, size_t size)
{
	size_t o = 0;

	for (; *in && o + 1 < size && o < 100; in++) {
		unsigned char c = (unsigned char)*in;

		out[o++] = (c < 0x20 || c == 0x7f || strchr("/;|&$`<>\\\"'*?,=!{}[]~ ", c)) ? '_' : (char)c;
	}
	out[o] = '\0';
	while (out[0] == '.')
		out[0] = '_';
	if (!out[0])
		snprintf(out, size, "imported");
}

static int copy_member(struct imp *im, int dirfd, size_t fi, struct vm_err *err)
{
	const char *name = im->p.files[fi].href;
	uint64_t done = 0;
	int out = openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644), rc;

	if (out < 0)
		return vm_errf(err, -errno, "%s: %s", name, strerror(errno));
	rc = copy_range(out, im->f[fi].fd, im->f[fi].off, im->f[fi].size, &im->t, "files", &done,
			im->f[fi].size);
	if (!rc && fsync(out))
		rc = -errno;
	close(out);
	return rc ? vm_errf(err, rc, "copying %s: %s", name, strerror(-rc)) : 0;
}

/* the VM's name and folder: DEST an existing folder = into it */
static json_t *import_folder(struct imp *im, const char *dest, const char *want)
{
	char buf[PATH_MAX];
	struct stat st;

	if (!stat(dest, &st) && S_ISDIR(st.st_mode)) {
		safe_name(want ? want : im->p.name, im->name, sizeof(im->name));
		snprintf(im->folder, sizeof(im->folder), "%s/%s", dest, im->name);
	} else {
		snprintf(buf, sizeof(buf), "%s", dest);
		safe_name(want ? want : basename(buf), im->name, sizeof(im->name));
		snprintf(buf, sizeof(buf), "%s", dest);
		snprintf(im->folder, sizeof(im->folder), "%s/%s", dirname(buf), im->name);
	}
	if (want && strcmp(want, im->name))
		return reply_err(EINVAL, "import: --name '%s' is not a usable file name (try '%s')", want,
				 im->name);
	if (!access(im->folder, F_OK))
		return reply_err(EEXIST, "import: %s: already exists", im->folder);
	/* built as a hidden folder beside it and renamed when complete: an
	 * agent that dies mid-import leaves a dot folder, which no VM list
	 * shows, never a half VM */
	snprintf(buf, sizeof(buf), "%s", im->folder);
	snprintf(im->work, sizeof(im->work), "%s/.%s.import-%d", dirname(buf), im->name, (int)getpid());
	if (mkdir(im->work, 0755))
		return reply_err(errno, "import: %s: %s", im->work, strerror(errno));
	im->made = true;
	im->dirfd = open(im->work, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (im->dirfd < 0)
		return reply_err(errno, "import: %s: %s", im->work, strerror(errno));
	return NULL;
}

static void setf(struct vmx_file *f, const char *value, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void setf(struct vmx_file *f, const char *value, const char *fmt, ...)
{
	char key[VMX_MAX_KEY + 1];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(key, sizeof(key), fmt, ap);
	va_end(ap);
	vmx_set(f, key, value);
}

/* each disk: a flat extent and its descriptor, <name>.vmdk, <name>_1.vmdk, ... */
static json_t *import_disks(struct imp *im, enum vm_prov prov)
{
	struct vm_err err;
	int rc;

	for (size_t k = 0; k < im->p.nvdisks; k++) {
		const struct ovf_dev *vd = &im->p.vdisks[k];
		struct vmdk_desc desc = {0};
		char fname[VM_NAME_MAX + 32], flat[VM_NAME_MAX + 32], *dtext;

		if (k == 0) {
			snprintf(fname, sizeof(fname), "%s.vmdk", im->name);
			snprintf(flat, sizeof(flat), "%s-flat.vmdk", im->name);
		} else {
			snprintf(fname, sizeof(fname), "%s_%zu.vmdk", im->name, k);
			snprintf(flat, sizeof(flat), "%s_%zu-flat.vmdk", im->name, k);
		}
		if ((rc = import_disk(im, im->dirfd, k, flat, prov, &err)))
			return reply_err(rc, "import: disk %zu (%s): %s", k + 1, im->p.disks[vd->index].id, err.msg);
		desc.sectors = (im->p.disks[vd->index].capacity + 511) / 512;
		snprintf(desc.extent, sizeof(desc.extent), "%s", flat);
		snprintf(desc.adapter, sizeof(desc.adapter), "%s", !strcmp(vd->bus, "ide") ? "ide" : "lsilogic");
		desc.thin = prov == VM_PROV_THIN;
		dtext = vmdk_format(&desc);
		rc = dtext ? write_new_file(im->dirfd, fname, dtext, &err) : vm_errf(&err, -ENOMEM, "out of memory");
		free(dtext);
		if (rc)
			return reply_err(rc, "import: %s", err.msg);
		setf(&im->vmx, "TRUE", "%s%d:%d.present", vd->bus, vd->ctrl, vd->unit);
		setf(&im->vmx, fname, "%s%d:%d.fileName", vd->bus, vd->ctrl, vd->unit);
	}
	return NULL;
}

/* CD images, and the files vmfsd.kernel / vmfsd.initrd name: copied
 * under their names in the package */
static json_t *import_files(struct imp *im)
{
	struct vm_err err;
	int rc;

	for (size_t k = 0; k < im->p.ncdroms; k++) {
		const struct ovf_dev *cd = &im->p.cdroms[k];

		if ((rc = copy_member(im, im->dirfd, (size_t)cd->index, &err)))
			return reply_err(rc, "import: %s", err.msg);
		setf(&im->vmx, "TRUE", "%s%d:%d.present", cd->bus, cd->ctrl, cd->unit);
		setf(&im->vmx, "cdrom-image", "%s%d:%d.deviceType", cd->bus, cd->ctrl, cd->unit);
		setf(&im->vmx, im->p.files[cd->index].href, "%s%d:%d.fileName", cd->bus, cd->ctrl, cd->unit);
	}
	for (size_t k = 0; k < im->p.nextra; k++) {
		const struct ovf_kv *kv = &im->p.extra[k];
		size_t i;

		if (!strcasecmp(kv->key, "vmfsd.kernel") || !strcasecmp(kv->key, "vmfsd.initrd")) {
			for (i = 0; i < im->p.nfiles; i++)
				if (!strcmp(im->p.files[i].href, kv->value))
					break;
			if (i == im->p.nfiles)
				return reply_err(EINVAL, "import: vmw:ExtraConfig %s = '%.60s': no such file in References",
						 kv->key, kv->value);
			if (!file_exists_at(im->dirfd, kv->value) && (rc = copy_member(im, im->dirfd, i, &err)))
				return reply_err(rc, "import: %s", err.msg);
		}
		vmx_set(&im->vmx, kv->key, kv->value);
	}
	return NULL;
}

/* the machine and its NICs, then the .vmx checked with the parser every
 * host uses and written */
static json_t *import_vmx(struct imp *im)
{
	struct vmx_file *x = &im->vmx;
	char fname[VM_NAME_MAX + 8], *text;
	struct vmx_file chk;
	struct vm_config cfg;
	struct vm_err err;
	int rc;

	for (size_t k = 0; k < im->p.nnics; k++) {
		const struct ovf_nic *n = &im->p.nics[k];

		setf(x, "TRUE", "ethernet%zu.present", k);
		setf(x, n->model, "ethernet%zu.virtualDev", k);
		/* a network name of another platform names no bridge here:
		 * QEMU user networking, said in a warning */
		setf(x, "nat", "ethernet%zu.connectionType", k);
		if (n->network[0] && strcasecmp(n->network, "nat"))
			json_array_append_new(im->warn, json_sprintf("ethernet%zu: network '%s' connected to nat (QEMU user networking): set ethernet%zu.connectionType = \"bridged\" and networkName for a bridge",
								      k, n->network, k));
		if (n->mac[0])
			setf(x, n->mac, "ethernet%zu.address", k);
	}
	text = vmx_format(x);
	snprintf(fname, sizeof(fname), "%s.vmx", im->name);
	rc = text ? vmx_parse(text, strlen(text), fname, &chk, &err) : vm_errf(&err, -ENOMEM, "out of memory");
	if (!rc) {
		rc = vm_config_from_vmx(&chk, fname, &cfg, &err);
		vmx_free(&chk);
	}
	if (!rc)
		rc = write_new_file(im->dirfd, fname, text, &err);
	free(text);
	if (rc)
		return reply_err(rc, "import: the .vmx made from %s: %s", im->ovfname, err.msg);
	fsync(im->dirfd);
	snprintf(im->vmx_path, sizeof(im->vmx_path), "%s/%s", im->folder, fname);
	return NULL;
}

json_t *ovf_import(struct agent *a, json_t *req)
{
	const char *pkg = req_str(req, "path"), *dest = req_str(req, "dest");
	const char *provs = req_str(req, "provisioning") ?: "thin";
	struct imp *im = calloc(1, sizeof(*im));
	enum vm_prov prov;
	char num[32];
	json_t *r = NULL;
	int rc;

	if (!im)
		return reply_err(ENOMEM, "out of memory");
	im->pkg = pkg;
	im->afd = im->pdir = im->dirfd = -1;
	im->warn = json_array();
	for (size_t i = 0; i < OVF_MAX_FILES; i++)
		im->f[i].fd = -1;
	if (!pkg || pkg[0] != '/' || !dest || dest[0] != '/') {
		r = reply_err(EINVAL, "import: the agent needs absolute paths");
		goto out;
	}
	if (vm_prov_parse(provs, &prov)) {
		r = reply_err(EINVAL, "import: --provisioning must be thin, thick or eagerzeroed");
		goto out;
	}
	im->ova = !ends_with(pkg, ".ovf");
	if (im->ova && (im->afd = open(pkg, O_RDONLY | O_CLOEXEC)) < 0) {
		r = reply_err(errno, "import: %s: %s", pkg, strerror(errno));
		goto out;
	}
	/* everything checked before anything is made */
	if ((r = load_package(im)))
		goto out;
	if ((rc = task_begin(&im->t, a, "import", pkg, dest, false))) {
		r = reply_err(rc, "task record: %s", strerror(-rc));
		goto out;
	}
	if ((r = verify_manifest(im)))
		goto out;
	for (size_t i = 0; i < im->p.nvdisks; i++) {
		const struct ovf_disk *d = &im->p.disks[im->p.vdisks[i].index];

		if (d->file >= 0 && (r = check_vmdk(im, d)))
			goto out;
	}
	for (size_t i = 0; im->ova && i < im->nm; i++)
		if (ends_with(im->m[i].name, ".cert"))
			json_array_append_new(im->warn, json_sprintf("%s: the signature is not checked", im->m[i].name));
	if ((r = import_folder(im, dest, req_str(req, "name"))))
		goto out;
	vmx_set(&im->vmx, ".encoding", "UTF-8");
	vmx_set(&im->vmx, "config.version", "8");
	vmx_set(&im->vmx, "virtualHW.version", "14");
	vmx_set(&im->vmx, "displayName", im->p.name[0] ? im->p.name : im->name);
	vmx_set(&im->vmx, "guestOS", im->p.guest_os);
	snprintf(num, sizeof(num), "%u", im->p.vcpus);
	vmx_set(&im->vmx, "numvcpus", num);
	snprintf(num, sizeof(num), "%u", im->p.mem_mib);
	vmx_set(&im->vmx, "memSize", num);
	for (size_t i = 0; i < im->p.nctrls; i++) {
		setf(&im->vmx, "TRUE", "%s%d.present", im->p.ctrls[i].bus, im->p.ctrls[i].index);
		if (im->p.ctrls[i].model[0])
			setf(&im->vmx, im->p.ctrls[i].model, "%s%d.virtualDev", im->p.ctrls[i].bus,
			     im->p.ctrls[i].index);
	}
	if ((r = import_disks(im, prov)) || (r = import_files(im)) || (r = import_vmx(im)))
		goto out;
	/* renameat2 NOREPLACE: a folder made meanwhile is not overwritten */
	if (renameat2(AT_FDCWD, im->work, AT_FDCWD, im->folder, RENAME_NOREPLACE)) {
		r = reply_err(errno, "import: %s -> %s: %s", im->work, im->folder,
			      errno == EEXIST ? "already exists" : strerror(errno));
		goto out;
	}
	im->made = false;
	inventory_edit(a, im->vmx_path, NULL);
	agent_event(a, im->vmx_path, "vm.imported", "imported from %s (%zu disks, %s, task %s)", pkg,
		    im->p.nvdisks, vm_prov_name(prov), im->t.id);
	r = reply_ok("imported %s as %s (%u vCPU, %u MiB, %zu disk%s, %s)", pkg, im->folder, im->p.vcpus,
		     im->p.mem_mib, im->p.nvdisks, im->p.nvdisks == 1 ? "" : "s", vm_prov_name(prov));
	json_object_set_new(r, "path", json_string(im->folder));
	json_object_set_new(r, "vmx", json_string(im->vmx_path));
	json_object_set_new(r, "ovf_version", json_integer(im->p.version));
out:
	if (im->p.notes[0])
		json_object_set_new(r, "not_mapped", json_string(im->p.notes));
	if (json_array_size(im->warn))
		json_object_set(r, "warnings", im->warn);
	if (im->dirfd >= 0)
		close(im->dirfd);
	if (im->made)
		remove_folder(im->work);
	if (im->t.j)
		task_end(&im->t, r);
	for (size_t i = 0; i < OVF_MAX_FILES; i++)
		pkg_close(im, &im->f[i]);
	if (im->afd >= 0)
		close(im->afd);
	if (im->pdir >= 0)
		close(im->pdir);
	json_decref(im->warn);
	vmx_free(&im->vmx);
	free(im->ovf);
	free(im);
	return r;
}
