// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * The datastore browser of vmfs-webd: list a folder, download a file,
 * upload one (an ISO), make a folder, delete a file or an empty folder.
 *
 * Confinement: every path from a request is relative to a datastore's
 * mount and is resolved by the kernel with openat2(RESOLVE_BENEATH |
 * RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV): no "..",
 * absolute path or symbolic link can lead out of the datastore, whatever
 * the files on it (a shared disk: any host may have put a symlink there).
 * ".." components are refused before that, so the error says why.
 *
 * Uploads go to a hidden temporary name in the target folder and are
 * renamed into place only when every byte announced by Content-Length has
 * arrived and been fsync'd: a cut-off upload leaves nothing behind, an
 * existing file is never replaced unless ?overwrite=1.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "webd/webd.h"

bool files_name_ok(const char *name)
{
	size_t n = strlen(name);

	if (!n || n > 200 || name[0] == '.' || strchr(name, '/'))
		return false;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)name[i] < 0x20 || name[i] == 0x7f)
			return false;
	return true;
}

/* ".." anywhere, or a name too long: refused before the kernel sees it */
static int rel_check(const char *rel)
{
	const char *p = rel;

	if (strlen(rel) >= PATH_MAX - 256)
		return -ENAMETOOLONG;
	while (*p) {
		size_t n = strcspn(p, "/");

		if (n == 2 && p[0] == '.' && p[1] == '.')
			return -EXDEV;
		p += n;
		while (*p == '/')
			p++;
	}
	return 0;
}

int files_open(const char *root, const char *rel, int flags, mode_t mode)
{
	struct open_how how = {
		.flags = (uint64_t)(flags | O_CLOEXEC),
		.mode = (flags & O_CREAT) ? mode : 0,
		.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS |
			   RESOLVE_NO_XDEV,
	};
	int rootfd, fd, rc = rel_check(rel);

	if (rc)
		return rc;
	while (*rel == '/')
		rel++;
	rootfd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (rootfd < 0)
		return -errno;
	fd = (int)syscall(SYS_openat2, rootfd, *rel ? rel : ".", &how, sizeof(how));
	rc = fd < 0 ? -errno : fd;
	close(rootfd);
	return rc;
}

/* split REL into its folder (opened, O_PATH) and its last name */
static int open_parent(const char *root, const char *rel, char *name, size_t nsize)
{
	char dir[PATH_MAX];
	const char *slash;

	while (*rel == '/')
		rel++;
	slash = strrchr(rel, '/');
	if (slash) {
		snprintf(dir, sizeof(dir), "%.*s", (int)(slash - rel), rel);
		snprintf(name, nsize, "%s", slash + 1);
	} else {
		dir[0] = '\0';
		snprintf(name, nsize, "%s", rel);
	}
	if (!files_name_ok(name))
		return -EINVAL;
	return files_open(root, dir, O_PATH | O_DIRECTORY, 0);
}

unsigned files_status(int rc)
{
	switch (rc) {
	case -ENOENT:
	case -ENOTDIR:
		return MHD_HTTP_NOT_FOUND;
	case -EXDEV:
	case -ELOOP:
	case -EACCES:
	case -EPERM:
		return MHD_HTTP_FORBIDDEN;
	case -EEXIST:
	case -EBUSY:
	case -ENOTEMPTY:
		return MHD_HTTP_CONFLICT;
	case -ENOSPC:
	case -EFBIG:
		return MHD_HTTP_CONTENT_TOO_LARGE;
	case -EINVAL:
	case -ENAMETOOLONG:
		return MHD_HTTP_BAD_REQUEST;
	default:
		return MHD_HTTP_INTERNAL_SERVER_ERROR;
	}
}

static const char *why(int rc)
{
	if (rc == -EXDEV || rc == -ELOOP)
		return "the path leaves the datastore (.., a symbolic link or another mount)";
	if (rc == -EINVAL)
		return "not a valid file name (no '/', no leading '.', no control characters)";
	return strerror(-rc);
}

enum MHD_Result files_list(struct hreq *h, const char *root, const char *rel)
{
	int fd = files_open(root, rel, O_RDONLY | O_DIRECTORY, 0);
	bool all = webd_arg(h, "all") != NULL;
	struct dirent *de;
	json_t *items;
	DIR *d;

	if (fd < 0)
		return webd_error(h, files_status(fd), "%s: %s", rel, why(fd));
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return webd_error(h, 500, "%s: %s", rel, strerror(errno));
	}
	items = json_array();
	while ((de = readdir(d))) {
		struct stat st;
		const char *type;

		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..") ||
		    (de->d_name[0] == '.' && !all))
			continue;
		if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW))
			continue;
		type = S_ISDIR(st.st_mode) ? "folder" : S_ISREG(st.st_mode) ? "file"
			: S_ISLNK(st.st_mode) ? "symlink" : "other";
		json_t *it = json_pack("{s:s,s:s,s:I,s:I,s:I}", "name", de->d_name, "type", type, "size",
				       (json_int_t)st.st_size, "allocated", (json_int_t)st.st_blocks * 512,
				       "mtime", (json_int_t)st.st_mtime);

		/* a VM folder as vmfsctl creates it: <name>/<name>.vmx */
		if (S_ISDIR(st.st_mode)) {
			char vmx[600];
			struct stat vs;

			snprintf(vmx, sizeof(vmx), "%s/%s.vmx", de->d_name, de->d_name);
			if (!fstatat(dirfd(d), vmx, &vs, AT_SYMLINK_NOFOLLOW) && S_ISREG(vs.st_mode))
				json_object_set_new(it, "vm", json_true());
		}
		json_array_append_new(items, it);
		if (json_array_size(items) >= 10000)
			break;          /* bounded answer */
	}
	closedir(d);
	return webd_json(h, MHD_HTTP_OK, json_pack("{s:b,s:s,s:o}", "ok", 1, "path", rel, "items", items));
}

enum MHD_Result files_download(struct hreq *h, const char *root, const char *rel)
{
	int fd = files_open(root, rel, O_RDONLY, 0);
	struct MHD_Response *resp;
	const char *base;
	char disp[320];
	struct stat st;
	size_t n;

	if (fd < 0)
		return webd_error(h, files_status(fd), "%s: %s", rel, why(fd));
	if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
		close(fd);
		return webd_error(h, MHD_HTTP_BAD_REQUEST, "%s: not a file", rel);
	}
	resp = MHD_create_response_from_fd64((uint64_t)st.st_size, fd);
	if (!resp) {
		close(fd);
		return MHD_NO;
	}
	/* the name for the browser's save dialog, quotes and controls out */
	base = strrchr(rel, '/') ? strrchr(rel, '/') + 1 : rel;
	n = (size_t)snprintf(disp, sizeof(disp), "attachment; filename=\"");
	for (const char *p = base; *p && n < sizeof(disp) - 2; p++)
		disp[n++] = (*p == '"' || *p == '\\' || (unsigned char)*p < 0x20) ? '_' : *p;
	disp[n++] = '"';
	disp[n] = '\0';
	MHD_add_response_header(resp, "Content-Type", "application/octet-stream");
	MHD_add_response_header(resp, "Content-Disposition", disp);
	return webd_respond(h, MHD_HTTP_OK, resp);
}

enum MHD_Result files_mkdir(struct hreq *h, const char *root, const char *rel)
{
	char name[256];
	int dfd = open_parent(root, rel, name, sizeof(name)), rc = 0;

	if (dfd >= 0) {
		rc = mkdirat(dfd, name, 0755) ? -errno : 0;
		close(dfd);
	}
	rc = dfd < 0 ? dfd : rc;
	if (rc)
		return webd_error(h, files_status(rc), "mkdir %s: %s", rel, why(rc));
	webd_log("mkdir %s/%s (from %s)", root, rel, h->addr);
	return webd_json(h, MHD_HTTP_CREATED, json_pack("{s:b,s:s}", "ok", 1, "path", rel));
}

enum MHD_Result files_delete(struct hreq *h, const char *root, const char *rel)
{
	char name[256], holder[256];
	int dfd = open_parent(root, rel, name, sizeof(name)), rc = 0;
	struct stat st;

	if (dfd < 0)
		return webd_error(h, files_status(dfd), "delete %s: %s", rel, why(dfd));
	if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW)) {
		rc = -errno;
	} else if (S_ISDIR(st.st_mode)) {
		rc = unlinkat(dfd, name, AT_REMOVEDIR) ? -errno : 0;
	} else {
		/* a file some host holds open (a running VM's disk, its
		 * lock record) stays: vmfsd names the holder.  Read by path
		 * through the folder, not by opening the file (an open takes
		 * a lock itself). */
		char p[PATH_MAX];
		ssize_t n;

		snprintf(p, sizeof(p), "/proc/self/fd/%d/%s", dfd, name);
		n = lgetxattr(p, "user.vmfsd.lock", holder, sizeof(holder) - 1);
		if (n > 0) {
			holder[n] = '\0';
			if (strcmp(holder, "free")) {
				close(dfd);
				return webd_error(h, MHD_HTTP_CONFLICT, "delete %s: in use (%s)", rel, holder);
			}
		}
		rc = unlinkat(dfd, name, 0) ? -errno : 0;
	}
	close(dfd);
	if (rc)
		return webd_error(h, files_status(rc), "delete %s: %s", rel, why(rc));
	webd_log("deleted %s/%s (from %s)", root, rel, h->addr);
	return webd_json(h, MHD_HTTP_OK, json_pack("{s:b,s:s}", "ok", 1, "path", rel));
}

int files_resolve(const char *root, const char *rel, char *out, size_t size)
{
	int fd = files_open(root, rel, O_PATH, 0);
	char proc[64];
	ssize_t n;
	struct stat st;

	if (fd < 0)
		return fd;
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	n = readlink(proc, out, size - 1);
	if (n < 0 || fstat(fd, &st)) {
		close(fd);
		return -errno;
	}
	close(fd);
	out[n] = '\0';
	if (strncmp(out, root, strlen(root)) || out[strlen(root)] != '/')
		return -EXDEV;
	return S_ISREG(st.st_mode) ? 0 : -EINVAL;
}

int files_upload_begin(struct hreq *h, const char *root, const char *rel, uint64_t length)
{
	bool overwrite = webd_arg(h, "overwrite") != NULL;
	char rnd[17];
	struct statvfs sv;
	struct stat st;
	int dfd;

	h->up_fd = h->up_dirfd = -1;
	dfd = open_parent(root, rel, h->up_name, sizeof(h->up_name));
	if (dfd < 0) {
		snprintf(h->up_msg, sizeof(h->up_msg), "upload %s: %s", rel, why(dfd));
		return dfd;
	}
	h->up_dirfd = dfd;
	if (!overwrite && !fstatat(dfd, h->up_name, &st, AT_SYMLINK_NOFOLLOW)) {
		snprintf(h->up_msg, sizeof(h->up_msg), "upload %s: exists (?overwrite=1 replaces it)", rel);
		return -EEXIST;
	}
	if (!fstatvfs(dfd, &sv) && length > (uint64_t)sv.f_bavail * sv.f_frsize) {
		snprintf(h->up_msg, sizeof(h->up_msg), "upload %s: %llu bytes do not fit (%llu free)", rel,
			 (unsigned long long)length, (unsigned long long)sv.f_bavail * sv.f_frsize);
		return -ENOSPC;
	}
	if (auth_random_hex(rnd, 8))
		return -EIO;
	snprintf(h->up_tmp, sizeof(h->up_tmp), ".%.200s.upload-%s", h->up_name, rnd);
	h->up_fd = openat(dfd, h->up_tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
	if (h->up_fd < 0) {
		int rc = -errno;

		snprintf(h->up_msg, sizeof(h->up_msg), "upload %s: %s", rel, strerror(-rc));
		return rc;
	}
	h->up_len = 0;
	h->up_err = 0;
	return 0;
}

void files_upload_data(struct hreq *h, const char *data, size_t size)
{
	while (!h->up_err && size) {
		ssize_t n = write(h->up_fd, data, size);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			h->up_err = n < 0 ? -errno : -EIO;
			break;
		}
		data += n;
		size -= (size_t)n;
		h->up_len += (uint64_t)n;
	}
}

void files_upload_abort(struct hreq *h)
{
	if (h->up_fd >= 0) {
		close(h->up_fd);
		unlinkat(h->up_dirfd, h->up_tmp, 0);
		h->up_fd = -1;
	}
	if (h->up_dirfd >= 0)
		close(h->up_dirfd);
	h->up_dirfd = -1;
}

enum MHD_Result files_upload_end(struct hreq *h)
{
	int rc = h->up_err;
	uint64_t len = h->up_len;
	char name[256];

	if (!rc && fsync(h->up_fd))
		rc = -errno;
	if (!rc) {
		bool overwrite = webd_arg(h, "overwrite") != NULL;

		if (renameat2(h->up_dirfd, h->up_tmp, h->up_dirfd, h->up_name,
			      overwrite ? 0 : RENAME_NOREPLACE)) {
			rc = -errno;
			/* a filesystem without RENAME_NOREPLACE: checked at begin */
			if (rc == -EINVAL && !renameat(h->up_dirfd, h->up_tmp, h->up_dirfd, h->up_name))
				rc = 0;
		}
	}
	if (!rc) {
		close(h->up_fd);
		h->up_fd = -1;
	}
	snprintf(name, sizeof(name), "%s", h->up_name);
	files_upload_abort(h);    /* removes the temporary file if still there */
	if (rc)
		return webd_error(h, files_status(rc), "upload %s: %s", name, strerror(-rc));
	webd_log("uploaded %s (%llu bytes, from %s)", name, (unsigned long long)len, h->addr);
	return webd_json(h, MHD_HTTP_CREATED, json_pack("{s:b,s:s,s:I}", "ok", 1, "name", name, "size",
						  (json_int_t)len));
}
