// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Creating, listing and destroying VMs: `create` writes a new VM folder
 * (.vmx, VMDK descriptor, flat extent thin/thick/eager-zeroed, kernel,
 * initrd and ISO copied in), `destroy` deletes a powered-off one, and
 * `list`: every VM on the datastores this host mounts, plus those
 * registered with this agent (--state-dir/inventory, one .vmx path a
 * line) outside them; a VM named by its name or ID is found there too.
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <libgen.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "ops.h"
#include "storage.h"

int inventory_edit(struct agent *a, const char *add, const char *remove)
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
		     struct task *t, struct vm_err *err)
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
				else if (t && t->j)
					task_progress(t, "zeroing", off + n, size);
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


json_t *op_create(struct agent *a, json_t *req)
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
	{
		/* zeroing a large eager-zeroed disk takes a while: a task with
		 * progress (a bar in vmfsctl, `vmfsctl tasks`) */
		struct task t = {0};
		char vmxp[PATH_MAX + VM_NAME_MAX + 8];

		if (!strcmp(prov, "eagerzeroed")) {
			snprintf(vmxp, sizeof(vmxp), "%s/%s.vmx", folder, name);
			task_begin(&t, a, "create", vmxp, NULL, false);
		}
		rc = make_flat(dirfd, desc.extent, size, prov, &t, &err);
		if (t.j) {
			json_t *r = rc ? reply_err(rc, "%s", err.msg) : reply_ok("disk made");

			task_end(&t, r);
			json_decref(r);
		}
	}
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
		if (!rc) {
			int fd = open(iso, O_RDONLY | O_CLOEXEC);

			rc = fd < 0 ? vm_errf(&err, -errno, "%s: %s", iso, strerror(errno))
				    : vm_iso_check(fd, iso, &err);
			if (fd >= 0)
				close(fd);
		}
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
	{
		/* guard rails: said, not refused */
		json_t *warn = json_array();
		struct dsview d;

		if (ds_open(folder, &d)) {
			json_array_append_new(warn, json_sprintf(
				"%s is not on a vmfsd datastore: no cluster lock keeps another host "
				"from starting this VM too", folder));
		} else {
			/* vmfsctl warns when it is overcommitted, as for list */
			json_object_set_new(reply, "datastores", json_pack("[o]", ds_summary(a, d.root)));
			ds_close(&d);
		}
		if (json_array_size(warn))
			json_object_set_new(reply, "warnings", warn);
		else
			json_decref(warn);
	}
out:
	vmx_free(&vmx);
	if (dirfd >= 0)
		close(dirfd);
	if (made)
		remove_folder(folder);
	return reply;
}

json_t *destroy_vm(struct agent *a, struct vmctx *v)
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
	{
		/* the record's lock says whether anybody runs it (a record
		 * nobody holds is stale); another host's lock cannot even be
		 * opened from here */
		char holder[256] = "";
		struct dsview d;
		bool other = false;

		/* our own vmfsd may still hold it for a commit interval after
		 * the QEMU ended: only another host's lock counts here */
		if (ds_lock_holder(v->dirfd, name, holder, sizeof(holder)) == 1 && !ds_open(v->folder, &d)) {
			other = d.self && strcmp(holder, d.self);
			ds_close(&d);
		}
		memset(&r, 0, sizeof(r));
		if (other || vm_lockrec_probe(v->dirfd, name, &r) == 1)
			return reply_err(EBUSY, "%s is running on host %s (lock record %s): power it off first",
					 v->vmx_path, r.host[0] ? r.host : holder, name);
	}
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

/* ---------------- the cluster-wide inventory ----------------
 *
 * Every VM folder (a folder holding a .vmx) on the datastores this host
 * mounts, down to INV_DEPTH folders below the root (admins group VMs in
 * folders), so that every host lists the same VMs of a shared datastore;
 * plus the VMs registered with this agent that live elsewhere (a local
 * directory).  A VM's ID is derived from the volume's UUID and the VM's
 * path inside it: the same on every host, whatever the mount point. */
#define INV_DEPTH 4

struct inv_vm {
	char *vmx;
	char id[9];
};

struct inv {
	struct inv_vm *v;
	size_t n, cap;
};

static void inv_add(struct inv *iv, const char *vmx, const char *idsrc)
{
	char h[17];

	for (size_t i = 0; i < iv->n; i++)
		if (!strcmp(iv->v[i].vmx, vmx))
			return;
	if (iv->n == iv->cap) {
		size_t cap = iv->cap ? 2 * iv->cap : 64;
		struct inv_vm *nv = realloc(iv->v, cap * sizeof(*nv));

		if (!nv)
			return;
		iv->v = nv;
		iv->cap = cap;
	}
	iv->v[iv->n].vmx = strdup(vmx);
	if (!iv->v[iv->n].vmx)
		return;
	vm_hash_name(idsrc, h);
	snprintf(iv->v[iv->n].id, sizeof(iv->v[iv->n].id), "%.8s", h);
	iv->n++;
}

static void inv_free(struct inv *iv)
{
	for (size_t i = 0; i < iv->n; i++)
		free(iv->v[i].vmx);
	free(iv->v);
	memset(iv, 0, sizeof(*iv));
}

static bool has_suffix(const char *s, const char *suf)
{
	size_t n = strlen(s), m = strlen(suf);

	return n > m && !strcmp(s + n - m, suf);
}

/* DIR (ROOTLEN: the datastore root's part of it) and below */
static void inv_walk(struct inv *iv, const char *uuid, const char *dir, size_t rootlen, int depth)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	char p[PATH_MAX], idsrc[PATH_MAX + 64];
	bool vmfolder = false;

	if (!d)
		return;
	while ((de = readdir(d))) {
		struct stat st;

		if (de->d_name[0] == '.' || !has_suffix(de->d_name, ".vmx") ||
		    (size_t)snprintf(p, sizeof(p), "%s/%s", dir, de->d_name) >= sizeof(p) ||
		    lstat(p, &st) || !S_ISREG(st.st_mode))
			continue;
		snprintf(idsrc, sizeof(idsrc), "%s:%s", uuid, p + rootlen);
		inv_add(iv, p, idsrc);
		vmfolder = true;
	}
	/* a VM folder's subfolders are its own (snapshots, logs): not VMs */
	if (!vmfolder && depth < INV_DEPTH) {
		rewinddir(d);
		while ((de = readdir(d))) {
			struct stat st;

			/* dot folders: .vmfsd (the agents' records), .Trash */
			if (de->d_name[0] == '.' ||
			    (de->d_type != DT_DIR && de->d_type != DT_UNKNOWN) ||
			    (size_t)snprintf(p, sizeof(p), "%s/%s", dir, de->d_name) >= sizeof(p) ||
			    lstat(p, &st) || !S_ISDIR(st.st_mode))
				continue;
			inv_walk(iv, uuid, p, rootlen, depth + 1);
		}
	}
	closedir(d);
}

static int inv_cmp(const void *x, const void *y)
{
	return strcmp(((const struct inv_vm *)x)->vmx, ((const struct inv_vm *)y)->vmx);
}

static void inv_collect(struct agent *a, struct inv *iv)
{
	char roots[AGENT_MAX_DS][PATH_MAX], path[PATH_MAX + 16], line[PATH_MAX + 2];
	int n = ha_datastores(a, roots, AGENT_MAX_DS);
	FILE *f;

	for (int i = 0; i < n; i++) {
		json_t *h = ds_hosts_read(roots[i]);
		const char *uuid = json_string_value(json_object_get(json_object_get(h, "volume"),
								     "uuid"));

		inv_walk(iv, uuid ? uuid : roots[i], roots[i], strlen(roots[i]), 0);
		json_decref(h);
	}
	qsort(iv->v, iv->n, sizeof(*iv->v), inv_cmp);
	/* registered here, outside the datastores (sorted after them) */
	snprintf(path, sizeof(path), "%s/inventory", a->state_dir);
	f = fopen(path, "re");
	while (f && fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\n")] = '\0';
		if (*line)
			inv_add(iv, line, line);
	}
	if (f)
		fclose(f);
}

json_t *list_vms(struct agent *a)
{
	json_t *vms = json_array();
	struct inv iv = {0};

	inv_collect(a, &iv);
	for (size_t i = 0; i < iv.n; i++) {
		const char *line = iv.v[i].vmx;
		struct vmctx v;
		struct vm_err err;
		json_t *e;

		if (vmctx_open(a, line, false, &v, &err)) {
			e = vm_state_fenced(&v, err.msg);
			if (e)
				json_object_del(e, "ok");
			else
				e = json_pack("{s:s,s:s,s:o,s:s}", "vmx", line, "state", "invalid", "host",
					      json_null(), "error", err.msg);
		} else {
			e = vm_state(a, &v, false);
		}
		json_object_set_new(e, "id", json_string(iv.v[i].id));
		json_array_append_new(vms, e);
		vmctx_close(&v);
	}
	inv_free(&iv);
	json_t *r = datastores_list(a);

	json_object_set_new(r, "vms", vms);
	return r;
}

static bool is_hex_prefix(const char *s)
{
	size_t n = strlen(s);

	return n >= 4 && n <= 8 && strspn(s, "0123456789abcdef") == n;
}

int inventory_resolve(struct agent *a, const char *arg, char *vmx, size_t size, struct vm_err *err)
{
	struct inv iv = {0};
	char list[1024] = "";
	size_t nmatch = 0;
	int rc;

	inv_collect(a, &iv);
	for (size_t i = 0; i < iv.n; i++) {
		char folder[PATH_MAX], stem[PATH_MAX];
		const char *base = strrchr(iv.v[i].vmx, '/') + 1;
		bool match = is_hex_prefix(arg) && !strncmp(iv.v[i].id, arg, strlen(arg));

		snprintf(stem, sizeof(stem), "%.*s", (int)(strlen(base) - 4), base);
		snprintf(folder, sizeof(folder), "%.*s", (int)(base - 1 - iv.v[i].vmx), iv.v[i].vmx);
		match |= !strcmp(stem, arg) || !strcmp(strrchr(folder, '/') + 1, arg);
		if (!match) {
			/* the display name of the .vmx */
			struct vmctx v;
			struct vm_err e2;

			if (!vmctx_open(a, iv.v[i].vmx, false, &v, &e2))
				match = !strcmp(v.cfg.display_name, arg);
			vmctx_close(&v);
		}
		if (!match)
			continue;
		if (!nmatch++)
			snprintf(vmx, size, "%s", iv.v[i].vmx);
		if (strlen(list) + strlen(iv.v[i].vmx) + 16 < sizeof(list))
			snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s (ID %s)",
				 nmatch > 1 ? ", " : "", iv.v[i].vmx, iv.v[i].id);
	}
	if (nmatch == 1)
		rc = 0;
	else if (nmatch)
		rc = vm_errf(err, -EEXIST, "'%s' names %zu VMs: %s; give the path or the ID", arg,
			     nmatch, list);
	else
		rc = vm_errf(err, -ENOENT, "no VM named '%s' on the datastores of host %s (nor "
			     "registered with its agent): give the path of its folder or .vmx; "
			     "`vmfsctl list` shows names and IDs", arg, a->host);
	inv_free(&iv);
	return rc;
}

/* ---------------- datastores: capacity and what is provisioned ---------------- */

/* What VMX's disks take: PROV their virtual sizes, USED what is allocated. */
static void vm_disk_usage(struct agent *a, const char *vmx, uint64_t *prov, uint64_t *used)
{
	struct vmctx v;
	struct vm_err err;

	if (!vmctx_open(a, vmx, false, &v, &err)) {
		for (size_t i = 0; i < v.cfg.ndisks; i++) {
			struct vmdk_desc desc;
			struct stat st;

			if (v.cfg.disks[i].cdrom || vmdk_load(v.dirfd, v.cfg.disks[i].file, &desc, &err))
				continue;
			*prov += desc.sectors * 512;
			if (!fstatat(v.dirfd, desc.extent, &st, AT_SYMLINK_NOFOLLOW))
				*used += (uint64_t)st.st_blocks * 512;
		}
	}
	vmctx_close(&v);
}

/* One datastore: capacity and free space (statvfs), the VMs on it and
 * what their disks are provisioned (virtual size) and take; thin disks
 * overcommit it when they are provisioned more than its capacity. */
json_t *ds_summary(struct agent *a, const char *root)
{
	json_t *h = ds_hosts_read(root), *vol = json_object_get(h, "volume"), *r;
	const char *uuid = json_string_value(json_object_get(vol, "uuid"));
	struct inv iv = {0};
	struct statvfs sv;
	uint64_t prov = 0, used = 0, cap = 0, avail = 0;

	if (!statvfs(root, &sv)) {
		cap = (uint64_t)sv.f_blocks * sv.f_frsize;
		avail = (uint64_t)sv.f_bavail * sv.f_frsize;
	}
	inv_walk(&iv, uuid ? uuid : root, root, strlen(root), 0);
	for (size_t i = 0; i < iv.n; i++)
		vm_disk_usage(a, iv.v[i].vmx, &prov, &used);
	r = json_pack("{s:s,s:s?,s:s?,s:I,s:I,s:I,s:I,s:i,s:b}", "path", root, "label",
		      json_string_value(json_object_get(vol, "label")), "uuid", uuid, "capacity",
		      (json_int_t)cap, "free", (json_int_t)avail, "provisioned", (json_int_t)prov,
		      "vm_disks_used", (json_int_t)used, "vms", (int)iv.n, "overcommitted",
		      cap && prov > cap);
	inv_free(&iv);
	json_decref(h);
	return r;
}

json_t *datastores_list(struct agent *a)
{
	char roots[AGENT_MAX_DS][PATH_MAX];
	int n = ha_datastores(a, roots, AGENT_MAX_DS);
	json_t *ds = json_array();

	for (int i = 0; i < n; i++)
		json_array_append_new(ds, ds_summary(a, roots[i]));
	return json_pack("{s:b,s:o,s:s}", "ok", 1, "datastores", ds, "host", a->host);
}
