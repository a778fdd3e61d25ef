// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * The snapshot tree of a VM, <vm>.vmsd (docs/vm.md "Snapshots"): parsed,
 * checked and written here; the agent (vmfs-hostd/snapshot.c) does the
 * operations.  The file uses the .vmx syntax (key = "value", read by
 * vmx_parse with its bounds) and VMware's key names where they mean the
 * same (snapshot.lastUID, snapshotN.uid, .parent, .displayName,
 * .description, .filename, .numDisks, .diskK.node, .diskK.fileName), plus
 * vmfsd's own: snapshotN.createTime (Unix seconds), snapshotN.state
 * (creating/deleting: an operation that did not finish), and the delta
 * files with their parents (vmfsd.deltaN.fileName/.parent) and each disk's
 * active file (vmfsd.diskK.node/.current).  It lives on a shared disk like
 * the .vmx, so it is untrusted: every name is one component in the VM
 * folder, deltas end in .qcow2, uids and parents must exist, the snapshot
 * parents and delta parents must not loop, counts are bounded.  Anything
 * else is refused naming the file, line and key.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "vm.h"

static bool has_suffix(const char *s, const char *suf)
{
	size_t a = strlen(s), b = strlen(suf);

	return a >= b && !strcmp(s + a - b, suf);
}

/* "snapshot12.disk3.node" with prefix "snapshot": idx 12, rest "disk3.node" */
static bool indexed(const char *key, const char *prefix, unsigned *idx, const char **rest)
{
	size_t pl = strlen(prefix);
	char *end;
	unsigned long v;

	if (strncasecmp(key, prefix, pl) || key[pl] < '0' || key[pl] > '9')
		return false;
	v = strtoul(key + pl, &end, 10);
	if (*end != '.' || v > 100000 || (key[pl] == '0' && end != key + pl + 1))
		return false;
	*idx = (unsigned)v;
	*rest = end + 1;
	return true;
}

static int num(const struct vmx_kv *kv, const char *what, uint64_t max, uint64_t *out,
	       struct vm_err *err)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(kv->value, &end, 10);
	if (!kv->value[0] || *end || errno || v > max || kv->value[0] == '-')
		return vm_errf(err, -EINVAL, "%s:%d: key '%s': '%.32s' is not a number from 0 to %" PRIu64,
			       what, kv->line, kv->key, kv->value, max);
	*out = v;
	return 0;
}

static int fname(const struct vmx_kv *kv, const char *what, char *out, bool delta,
		 struct vm_err *err)
{
	int rc = vm_name_check(kv->value, kv->key, kv->line, what, err);

	if (rc)
		return rc;
	if (delta && !has_suffix(kv->value, ".qcow2"))
		return vm_errf(err, -EINVAL, "%s:%d: key '%s': a delta must be a .qcow2 file, not '%.64s'",
			       what, kv->line, kv->key, kv->value);
	if (has_suffix(kv->value, ".vmx") || has_suffix(kv->value, ".vmsd") ||
	    has_suffix(kv->value, ".lck"))
		return vm_errf(err, -EINVAL, "%s:%d: key '%s': '%.64s' is not a disk or state file",
			       what, kv->line, kv->key, kv->value);
	snprintf(out, VM_NAME_MAX + 1, "%s", kv->value);
	return 0;
}

static int text(const struct vmx_kv *kv, char *out, size_t size)
{
	snprintf(out, size, "%s", kv->value);
	return 0;
}

/* a disk reference: diskK.node / diskK.<field> into refs[K] */
static int disk_field(const struct vmx_kv *kv, const char *rest, const char *field,
		      struct vmsd_ref *refs, size_t *n, const char *what, struct vm_err *err)
{
	unsigned k;
	const char *r2;

	if (!indexed(rest, "disk", &k, &r2) || k >= VM_MAX_DISKS)
		return vm_errf(err, -EINVAL, "%s:%d: unknown key '%s'", what, kv->line, kv->key);
	if (k + 1 > *n)
		*n = k + 1;
	if (!strcasecmp(r2, "node")) {
		if (strlen(kv->value) >= sizeof(refs[k].node) || !kv->value[0] ||
		    strspn(kv->value, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:") != strlen(kv->value))
			return vm_errf(err, -EINVAL, "%s:%d: key '%s': '%.32s' is not a disk key like scsi0:0",
				       what, kv->line, kv->key, kv->value);
		snprintf(refs[k].node, sizeof(refs[k].node), "%s", kv->value);
		return 0;
	}
	if (!strcasecmp(r2, field))
		return fname(kv, what, refs[k].file, false, err);
	return vm_errf(err, -EINVAL, "%s:%d: unknown key '%s'", what, kv->line, kv->key);
}

static int snap_key(struct vmsd *s, const struct vmx_kv *kv, unsigned i, const char *rest,
		    const char *what, struct vm_err *err)
{
	struct vmsd_snap *p;
	uint64_t v;
	int rc = 0;

	if (i >= VMSD_MAX_SNAPS)
		return vm_errf(err, -E2BIG, "%s:%d: key '%s': more than %d snapshots", what, kv->line,
			       kv->key, VMSD_MAX_SNAPS);
	if (i + 1 > s->nsnap)
		s->nsnap = i + 1;
	p = &s->snap[i];
	if (!strcasecmp(rest, "uid")) {
		if (!(rc = num(kv, what, 1000000, &v, err)))
			p->uid = (unsigned)v;
	} else if (!strcasecmp(rest, "parent")) {
		if (!(rc = num(kv, what, 1000000, &v, err)))
			p->parent = (unsigned)v;
	} else if (!strcasecmp(rest, "displayName")) {
		if (strlen(kv->value) > VMSD_NAME_MAX)
			return vm_errf(err, -E2BIG, "%s:%d: key '%s': longer than %d bytes", what,
				       kv->line, kv->key, VMSD_NAME_MAX);
		text(kv, p->name, sizeof(p->name));
	} else if (!strcasecmp(rest, "description")) {
		text(kv, p->desc, sizeof(p->desc));
	} else if (!strcasecmp(rest, "createTime")) {
		if (!(rc = num(kv, what, (uint64_t)1 << 40, &v, err)))
			p->created = (int64_t)v;
	} else if (!strcasecmp(rest, "filename")) {
		rc = fname(kv, what, p->memory, false, err);
	} else if (!strcasecmp(rest, "state")) {
		if (!strcmp(kv->value, "creating"))
			p->state = VMSD_CREATING;
		else if (!strcmp(kv->value, "deleting"))
			p->state = VMSD_DELETING;
		else
			return vm_errf(err, -EINVAL, "%s:%d: key '%s': '%.32s' is not creating or deleting",
				       what, kv->line, kv->key, kv->value);
	} else if (!strcasecmp(rest, "numDisks") || !strcasecmp(rest, "type")) {
		rc = num(kv, what, VM_MAX_DISKS, &v, err);     /* counted from the keys */
	} else {
		rc = disk_field(kv, rest, "fileName", p->disk, &p->ndisks, what, err);
	}
	return rc;
}

static int parse_kv(struct vmsd *s, const struct vmx_kv *kv, const char *what, struct vm_err *err)
{
	const char *k = kv->key, *rest;
	unsigned i;
	uint64_t v;
	int rc;

	if (!strcasecmp(k, ".encoding"))
		return strcasecmp(kv->value, "UTF-8")
			       ? vm_errf(err, -EINVAL, "%s:%d: encoding '%.32s': only UTF-8", what,
					 kv->line, kv->value)
			       : 0;
	if (!strcasecmp(k, "snapshot.lastUID") || !strcasecmp(k, "vmfsd.lastDelta") ||
	    !strcasecmp(k, "snapshot.current")) {
		if ((rc = num(kv, what, 1000000, &v, err)))
			return rc;
		if (!strcasecmp(k, "snapshot.lastUID"))
			s->last_uid = (unsigned)v;
		else if (!strcasecmp(k, "snapshot.current"))
			s->current = (unsigned)v;
		else
			s->last_delta = (unsigned)v;
		return 0;
	}
	if (!strcasecmp(k, "snapshot.numSnapshots") || !strcasecmp(k, "vmfsd.numDeltas") ||
	    !strcasecmp(k, "vmfsd.numDisks"))
		return num(kv, what, VMSD_MAX_DELTAS, &v, err);   /* counted from the keys */
	if (indexed(k, "snapshot", &i, &rest))
		return snap_key(s, kv, i, rest, what, err);
	if (indexed(k, "vmfsd.delta", &i, &rest)) {
		if (i >= VMSD_MAX_DELTAS)
			return vm_errf(err, -E2BIG, "%s:%d: key '%s': more than %d deltas", what,
				       kv->line, k, VMSD_MAX_DELTAS);
		if (i + 1 > s->ndelta)
			s->ndelta = i + 1;
		if (!strcasecmp(rest, "fileName"))
			return fname(kv, what, s->delta[i].file, true, err);
		if (!strcasecmp(rest, "parent"))
			return fname(kv, what, s->delta[i].parent, false, err);
	}
	if (!strncasecmp(k, "vmfsd.", 6) && indexed(k + 6, "disk", &i, &rest)) {
		char sub[64];

		snprintf(sub, sizeof(sub), "disk%u.%s", i, rest);
		return disk_field(kv, sub, "current", s->cur, &s->ncur, what, err);
	}
	return vm_errf(err, -EINVAL, "%s:%d: unknown key '%s'", what, kv->line, k);
}

static struct vmsd_snap *by_uid(struct vmsd *s, unsigned uid)
{
	for (size_t i = 0; i < s->nsnap; i++)
		if (s->snap[i].uid == uid)
			return &s->snap[i];
	return NULL;
}

/* Every slot filled, references resolved, no loops. */
static int check(struct vmsd *s, const char *what, struct vm_err *err)
{
	for (size_t i = 0; i < s->nsnap; i++) {
		struct vmsd_snap *p = &s->snap[i];

		if (!p->uid)
			return vm_errf(err, -EINVAL, "%s: snapshot%zu has no uid", what, i);
		if (p->uid > s->last_uid)
			return vm_errf(err, -EINVAL, "%s: snapshot%zu: uid %u above snapshot.lastUID %u",
				       what, i, p->uid, s->last_uid);
		for (size_t j = 0; j < i; j++) {
			if (s->snap[j].uid == p->uid)
				return vm_errf(err, -EINVAL, "%s: snapshot%zu and snapshot%zu have the same uid %u",
					       what, j, i, p->uid);
			if (!strcmp(s->snap[j].name, p->name))
				return vm_errf(err, -EINVAL, "%s: snapshot%zu and snapshot%zu have the same name '%s'",
					       what, j, i, p->name);
		}
		if (!p->name[0])
			return vm_errf(err, -EINVAL, "%s: snapshot%zu has no displayName", what, i);
		if (!p->ndisks)
			return vm_errf(err, -EINVAL, "%s: snapshot%zu names no disk", what, i);
		for (size_t k = 0; k < p->ndisks; k++)
			if (!p->disk[k].node[0] || !p->disk[k].file[0])
				return vm_errf(err, -EINVAL, "%s: snapshot%zu.disk%zu lacks node or fileName",
					       what, i, k);
	}
	for (size_t i = 0; i < s->nsnap; i++) {
		const struct vmsd_snap *p = &s->snap[i];
		size_t depth = 0;

		for (unsigned u = p->parent; u; depth++) {
			const struct vmsd_snap *q = by_uid(s, u);

			if (!q)
				return vm_errf(err, -EINVAL, "%s: snapshot%zu: parent uid %u does not exist",
					       what, i, u);
			if (depth > s->nsnap)
				return vm_errf(err, -ELOOP, "%s: snapshot%zu: its parents form a loop", what, i);
			u = q->parent;
		}
	}
	if (s->current && !by_uid(s, s->current))
		return vm_errf(err, -EINVAL, "%s: snapshot.current %u is no snapshot", what, s->current);
	for (size_t i = 0; i < s->ndelta; i++) {
		if (!s->delta[i].file[0] || !s->delta[i].parent[0])
			return vm_errf(err, -EINVAL, "%s: vmfsd.delta%zu lacks fileName or parent", what, i);
		if (!strcmp(s->delta[i].file, s->delta[i].parent))
			return vm_errf(err, -ELOOP, "%s: vmfsd.delta%zu is its own parent", what, i);
		for (size_t j = 0; j < i; j++)
			if (!strcmp(s->delta[j].file, s->delta[i].file))
				return vm_errf(err, -EINVAL, "%s: vmfsd.delta%zu and vmfsd.delta%zu are the same file",
					       what, j, i);
	}
	for (size_t i = 0; i < s->ncur; i++) {
		if (!s->cur[i].node[0] || !s->cur[i].file[0])
			return vm_errf(err, -EINVAL, "%s: vmfsd.disk%zu lacks node or current", what, i);
		for (size_t j = 0; j < i; j++)
			if (!strcmp(s->cur[j].node, s->cur[i].node))
				return vm_errf(err, -EINVAL, "%s: vmfsd.disk%zu and vmfsd.disk%zu are the same disk",
					       what, j, i);
	}
	/* delta parents: every walk ends within ndelta steps */
	for (size_t i = 0; i < s->ndelta; i++) {
		const char *f = s->delta[i].parent;

		for (size_t steps = 0;; steps++) {
			struct vmsd_delta *d = vmsd_delta_find(s, f);

			if (!d)
				break;
			if (steps > s->ndelta)
				return vm_errf(err, -ELOOP, "%s: vmfsd.delta%zu: its parents form a loop", what, i);
			f = d->parent;
		}
	}
	return 0;
}

int vmsd_parse(const char *txt, size_t len, const char *what, struct vmsd *s, struct vm_err *err)
{
	struct vmx_file f;
	int rc;

	memset(s, 0, sizeof(*s));
	rc = vmx_parse(txt, len, what, &f, err);
	if (rc)
		return rc;
	for (size_t i = 0; !rc && i < f.n; i++)
		rc = parse_kv(s, &f.kv[i], what, err);
	vmx_free(&f);
	if (!rc)
		rc = check(s, what, err);
	return rc;
}

char *vmsd_format(const struct vmsd *s)
{
	struct vmx_file f = {0};
	char k[96], v[32];
	char *out = NULL;
	int rc = 0;

#define SET(key, val)                                         \
	do {                                                  \
		if (!rc)                                      \
			rc = vmx_set(&f, (key), (val));       \
	} while (0)
#define SETN(val)                                              \
	do {                                                   \
		snprintf(v, sizeof(v), "%lld", (long long)(val)); \
		SET(k, v);                                     \
	} while (0)
	SET(".encoding", "UTF-8");
	snprintf(k, sizeof(k), "snapshot.lastUID");
	SETN(s->last_uid);
	snprintf(k, sizeof(k), "snapshot.current");
	SETN(s->current);
	snprintf(k, sizeof(k), "snapshot.numSnapshots");
	SETN(s->nsnap);
	for (size_t i = 0; i < s->nsnap; i++) {
		const struct vmsd_snap *p = &s->snap[i];

		snprintf(k, sizeof(k), "snapshot%zu.uid", i);
		SETN(p->uid);
		if (p->parent) {
			snprintf(k, sizeof(k), "snapshot%zu.parent", i);
			SETN(p->parent);
		}
		snprintf(k, sizeof(k), "snapshot%zu.displayName", i);
		SET(k, p->name);
		snprintf(k, sizeof(k), "snapshot%zu.description", i);
		SET(k, p->desc);
		snprintf(k, sizeof(k), "snapshot%zu.createTime", i);
		SETN(p->created);
		if (p->memory[0]) {
			snprintf(k, sizeof(k), "snapshot%zu.filename", i);
			SET(k, p->memory);
		}
		if (p->state != VMSD_OK) {
			snprintf(k, sizeof(k), "snapshot%zu.state", i);
			SET(k, p->state == VMSD_CREATING ? "creating" : "deleting");
		}
		snprintf(k, sizeof(k), "snapshot%zu.numDisks", i);
		SETN(p->ndisks);
		for (size_t d = 0; d < p->ndisks; d++) {
			snprintf(k, sizeof(k), "snapshot%zu.disk%zu.node", i, d);
			SET(k, p->disk[d].node);
			snprintf(k, sizeof(k), "snapshot%zu.disk%zu.fileName", i, d);
			SET(k, p->disk[d].file);
		}
	}
	snprintf(k, sizeof(k), "vmfsd.lastDelta");
	SETN(s->last_delta);
	snprintf(k, sizeof(k), "vmfsd.numDeltas");
	SETN(s->ndelta);
	for (size_t i = 0; i < s->ndelta; i++) {
		snprintf(k, sizeof(k), "vmfsd.delta%zu.fileName", i);
		SET(k, s->delta[i].file);
		snprintf(k, sizeof(k), "vmfsd.delta%zu.parent", i);
		SET(k, s->delta[i].parent);
	}
	snprintf(k, sizeof(k), "vmfsd.numDisks");
	SETN(s->ncur);
	for (size_t i = 0; i < s->ncur; i++) {
		snprintf(k, sizeof(k), "vmfsd.disk%zu.node", i);
		SET(k, s->cur[i].node);
		snprintf(k, sizeof(k), "vmfsd.disk%zu.current", i);
		SET(k, s->cur[i].file);
	}
#undef SET
#undef SETN
	if (!rc)
		out = vmx_format(&f);
	vmx_free(&f);
	return out;
}

int vmsd_load(int dirfd, const char *name, struct vmsd *s, struct vm_err *err)
{
	char *txt;
	size_t len;
	int rc;

	memset(s, 0, sizeof(*s));
	rc = vm_read_file(dirfd, name, VMX_MAX_FILE, &txt, &len);
	if (rc == -ENOENT)
		return 0;
	if (rc == -ELOOP)
		return vm_errf(err, rc, "%s: is a symbolic link (refused)", name);
	if (rc == -EFBIG)
		return vm_errf(err, rc, "%s: larger than %d bytes", name, VMX_MAX_FILE);
	if (rc)
		return vm_errf(err, rc, "%s: %s", name, strerror(-rc));
	rc = vmsd_parse(txt, len, name, s, err);
	free(txt);
	return rc;
}

int vmsd_save(int dirfd, const char *dir_path, const char *name, const struct vmsd *s)
{
	char tmp[VM_NAME_MAX + 16];
	char *txt = vmsd_format(s);
	size_t len, off = 0;
	int fd, rc = 0;

	if (!txt)
		return -ENOMEM;
	len = strlen(txt);
	snprintf(tmp, sizeof(tmp), ".%s.tmp", name);
	fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
	if (fd < 0) {
		free(txt);
		return -errno;
	}
	while (!rc && off < len) {
		ssize_t w = write(fd, txt + off, len - off);

		if (w < 0 && errno != EINTR)
			rc = -errno;
		else if (w > 0)
			off += (size_t)w;
	}
	free(txt);
	if (!rc && fsync(fd))
		rc = -errno;
	close(fd);
	if (!rc && renameat(dirfd, tmp, dirfd, name))
		rc = -errno;
	if (rc) {
		unlinkat(dirfd, tmp, 0);
		return rc;
	}
	/* the rename durable now (vmfsd commits a directory on its fsync) */
	if (dir_path) {
		int dfd = open(dir_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

		if (dfd >= 0) {
			if (fsync(dfd))
				rc = -errno;
			close(dfd);
		}
	} else if (fsync(dirfd)) {
		rc = -errno;
	}
	return rc;
}

struct vmsd_snap *vmsd_find(struct vmsd *s, const char *name_or_uid)
{
	for (size_t i = 0; i < s->nsnap; i++)
		if (!strcmp(s->snap[i].name, name_or_uid))
			return &s->snap[i];
	return NULL;
}

struct vmsd_delta *vmsd_delta_find(struct vmsd *s, const char *file)
{
	for (size_t i = 0; i < s->ndelta; i++)
		if (!strcmp(s->delta[i].file, file))
			return &s->delta[i];
	return NULL;
}

const char *vmsd_top(const struct vmsd *s, const char *node, const char *base)
{
	for (size_t i = 0; i < s->ncur; i++)
		if (!strcasecmp(s->cur[i].node, node))
			return s->cur[i].file;
	return base;
}

int vmsd_chain(const struct vmsd *s, const char *node, const char *top, const char *base,
	       char out[][VM_NAME_MAX + 1], size_t max, size_t *n, struct vm_err *err)
{
	const char *f = top;

	*n = 0;
	while (strcmp(f, base)) {
		const struct vmsd_delta *d = vmsd_delta_find((struct vmsd *)s, f);

		if (!d)
			return vm_errf(err, -EINVAL, "disk %s: '%s' in its snapshot chain is neither a delta "
				       "of the .vmsd nor the disk's extent %s", node, f, base);
		if (*n == max)
			return vm_errf(err, -E2BIG, "disk %s: snapshot chain longer than %zu deltas", node,
				       max);
		snprintf(out[(*n)++], VM_NAME_MAX + 1, "%s", f);
		f = d->parent;
	}
	return 0;
}

size_t vmsd_children(const struct vmsd *s, const char *file, const struct vmsd_delta **first)
{
	size_t n = 0;

	for (size_t i = 0; i < s->ndelta; i++)
		if (!strcmp(s->delta[i].parent, file)) {
			if (!n && first)
				*first = &s->delta[i];
			n++;
		}
	return n;
}

static bool needed(const struct vmsd *s, const char *file, int depth)
{
	if (depth > VMSD_MAX_DELTAS)
		return true;
	for (size_t i = 0; i < s->ncur; i++)
		if (!strcmp(s->cur[i].file, file))
			return true;
	for (size_t i = 0; i < s->nsnap; i++)
		for (size_t k = 0; k < s->snap[i].ndisks; k++)
			if (!strcmp(s->snap[i].disk[k].file, file))
				return true;
	for (size_t i = 0; i < s->ndelta; i++)
		if (!strcmp(s->delta[i].parent, file) && needed(s, s->delta[i].file, depth + 1))
			return true;
	return false;
}

void vmsd_gc(struct vmsd *s, char gone[][VM_NAME_MAX + 1], size_t max, size_t *n)
{
	*n = 0;
	for (size_t i = 0; i < s->ndelta;) {
		if (needed(s, s->delta[i].file, 0)) {
			i++;
			continue;
		}
		if (*n < max)
			snprintf(gone[(*n)++], VM_NAME_MAX + 1, "%s", s->delta[i].file);
		memmove(&s->delta[i], &s->delta[i + 1], (s->ndelta - i - 1) * sizeof(s->delta[0]));
		s->ndelta--;
	}
}

void vmsd_node_name(const char *file, char out[20])
{
	char h[17];

	vm_hash_name(file, h);
	/* a QEMU node name: a letter first, at most 31 characters */
	snprintf(out, 20, "s%.15s", h);
}
