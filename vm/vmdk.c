// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * VMDK descriptors of VM disks on a vmfsd datastore: a small text file
 * (`<vm>.vmdk`) naming one flat extent (`<vm>-flat.vmdk`) that holds the
 * disk's bytes, thin at the filesystem level.  The layout follows VMware's
 * published "Virtual Disk Format 1.1" specification for createType "vmfs":
 * a header (version, CID, parentCID, createType), one extent line
 * `RW <sectors> VMFS "<file>"`, and the disk database (ddb.*).  QEMU's
 * vmdk driver reads exactly this (qemu-img info works on it); the launcher
 * itself never hands the descriptor to QEMU: it opens the flat extent as
 * raw (docs/vm.md "VMDK descriptors": QEMU 7.2 refuses to migrate vmdk-driver disks).
 * The parser accepts only that shape: one extent, no parent (snapshot
 * chains are not supported), an extent name confined to the VM folder.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

#include "vm.h"

#define VMDK_MAX_FILE (64 * 1024)    /* descriptors are ~1 KiB */
#define VMDK_MAX_LINE 1024

/* Strips "key = value" / key=value; returns false when it is not one. */
static bool split_kv(char *line, char **key, char **value)
{
	char *eq = strchr(line, '='), *e;

	if (!eq)
		return false;
	*eq = '\0';
	e = eq;
	while (e > line && isspace((unsigned char)e[-1]))
		*--e = '\0';
	*key = line;
	line = eq + 1;
	while (isspace((unsigned char)*line))
		line++;
	e = line + strlen(line);
	while (e > line && isspace((unsigned char)e[-1]))
		*--e = '\0';
	if (*line == '"') {
		line++;
		e = strrchr(line, '"');
		if (!e)
			return false;
		*e = '\0';
	}
	*value = line;
	return true;
}

int vmdk_parse(const char *text, size_t len, const char *what, struct vmdk_desc *d,
	       struct vm_err *err)
{
	char line[VMDK_MAX_LINE + 1];
	size_t pos = 0;
	int lineno = 0, extents = 0;
	bool have_type = false;

	memset(d, 0, sizeof(*d));
	if (len > VMDK_MAX_FILE)
		return vm_errf(err, -EFBIG, "%s: larger than %d bytes: not a descriptor (a binary sparse VMDK is not supported)",
			       what, VMDK_MAX_FILE);
	while (pos < len) {
		size_t n = 0;
		char *s, *key, *value;

		lineno++;
		while (pos < len && text[pos] != '\n') {
			unsigned char c = (unsigned char)text[pos++];

			if ((c < 0x20 && c != '\t' && c != '\r') || c == 0x7f)
				return vm_errf(err, -EINVAL, "%s:%d: control character 0x%02x (a binary VMDK is not supported)",
					       what, lineno, c);
			if (n == VMDK_MAX_LINE)
				return vm_errf(err, -E2BIG, "%s:%d: line longer than %d bytes", what, lineno,
					       VMDK_MAX_LINE);
			line[n++] = (char)c;
		}
		pos++;
		while (n && (line[n - 1] == '\r' || line[n - 1] == ' ' || line[n - 1] == '\t'))
			n--;
		line[n] = '\0';
		s = line;
		while (*s == ' ' || *s == '\t')
			s++;
		if (!*s || *s == '#')
			continue;
		if (!strncmp(s, "RW ", 3) || !strncmp(s, "RDONLY ", 7) || !strncmp(s, "NOACCESS ", 9)) {
			char access[16], type[16], *q1, *q2;
			unsigned long long sectors;
			int consumed = 0;

			if (sscanf(s, "%15s %llu %15s %n", access, &sectors, type, &consumed) < 3)
				return vm_errf(err, -EINVAL, "%s:%d: malformed extent line", what, lineno);
			if (strcmp(access, "RW"))
				return vm_errf(err, -EINVAL, "%s:%d: extent access %s: only RW extents are supported",
					       what, lineno, access);
			if (strcmp(type, "VMFS") && strcmp(type, "FLAT"))
				return vm_errf(err, -EINVAL, "%s:%d: extent type %s: only VMFS (flat) extents are supported",
					       what, lineno, type);
			if (++extents > 1)
				return vm_errf(err, -EINVAL, "%s:%d: more than one extent: not supported", what,
					       lineno);
			q1 = s + consumed;
			if (*q1 != '"' || !(q2 = strchr(q1 + 1, '"')))
				return vm_errf(err, -EINVAL, "%s:%d: the extent file name must be in double quotes",
					       what, lineno);
			*q2 = '\0';
			for (char *t = q2 + 1; *t; t++) {
				/* an offset after the name would shift the disk inside
				 * the file: the raw launcher does not model it */
				if (!isspace((unsigned char)*t) && *t != '0')
					return vm_errf(err, -EINVAL, "%s:%d: extent offsets are not supported",
						       what, lineno);
			}
			/* 2^47 sectors = 64 PiB: keeps byte arithmetic far from overflow */
			if (sectors == 0 || sectors > (1ULL << 47))
				return vm_errf(err, -ERANGE, "%s:%d: extent size %llu sectors out of range",
					       what, lineno, sectors);
			int rc = vm_name_check(q1 + 1, "extent", lineno, what, err);
			if (rc)
				return rc;
			snprintf(d->extent, sizeof(d->extent), "%s", q1 + 1);
			d->sectors = sectors;
			continue;
		}
		if (!split_kv(s, &key, &value))
			return vm_errf(err, -EINVAL, "%s:%d: expected key=value or an extent line", what,
				       lineno);
		if (!strcmp(key, "createType")) {
			if (strcmp(value, "vmfs") && strcmp(value, "monolithicFlat"))
				return vm_errf(err, -EINVAL,
					       "%s:%d: createType \"%.32s\": only \"vmfs\" (flat) disks are supported",
					       what, lineno, value);
			have_type = true;
		} else if (!strcmp(key, "parentCID")) {
			if (strcasecmp(value, "ffffffff"))
				return vm_errf(err, -EINVAL,
					       "%s:%d: parentCID %.16s: child disks (snapshots) are not supported",
					       what, lineno, value);
		} else if (!strcmp(key, "parentFileNameHint")) {
			return vm_errf(err, -EINVAL, "%s:%d: parentFileNameHint: child disks (snapshots) are not supported",
				       what, lineno);
		} else if (!strcmp(key, "ddb.adapterType")) {
			snprintf(d->adapter, sizeof(d->adapter), "%s", value);
		} else if (!strcmp(key, "ddb.thinProvisioned")) {
			d->thin = !strcmp(value, "1");
		}
		/* other keys (version, CID, encoding, ddb.*) carry nothing the
		 * launcher uses */
	}
	if (!have_type)
		return vm_errf(err, -EINVAL, "%s: no createType line: not a VMDK descriptor", what);
	if (!extents)
		return vm_errf(err, -EINVAL, "%s: no extent line", what);
	return 0;
}

char *vmdk_format(const struct vmdk_desc *d)
{
	uint64_t cyl, heads = 255, secs = 63;
	uint32_t cid;
	unsigned char u[16];
	char uuid[64], *s;
	bool adapter_ide = !strcmp(d->adapter, "ide");

	if (getrandom(&cid, sizeof(cid), 0) != sizeof(cid))
		cid = 0x12345678;
	if (cid == 0xffffffff || cid == 0xfffffffe)
		cid = 1;
	if (getrandom(u, sizeof(u), 0) != sizeof(u))
		memset(u, 0x5a, sizeof(u));
	snprintf(uuid, sizeof(uuid),
		 "60 00 C2 %02x %02x %02x %02x %02x-%02x %02x %02x %02x %02x %02x %02x %02x",
		 u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12]);
	/* Geometry as VMware computes it for SCSI adapters: 255 heads, 63
	 * sectors per track; IDE: 16 heads, 63 sectors, at most 16383
	 * cylinders (the ATA CHS limit). */
	if (adapter_ide)
		heads = 16;
	cyl = d->sectors / (heads * secs);
	if (adapter_ide && cyl > 16383)
		cyl = 16383;
	if (asprintf(&s,
		     "# Disk DescriptorFile\n"
		     "version=1\n"
		     "encoding=\"UTF-8\"\n"
		     "CID=%08x\n"
		     "parentCID=ffffffff\n"
		     "createType=\"vmfs\"\n"
		     "\n"
		     "# Extent description\n"
		     "RW %llu VMFS \"%s\"\n"
		     "\n"
		     "# The Disk Data Base\n"
		     "#DDB\n"
		     "\n"
		     "ddb.adapterType = \"%s\"\n"
		     "ddb.geometry.cylinders = \"%llu\"\n"
		     "ddb.geometry.heads = \"%llu\"\n"
		     "ddb.geometry.sectors = \"%llu\"\n"
		     "ddb.longContentID = \"%08x%08x%08x%08x\"\n"
		     "ddb.thinProvisioned = \"%d\"\n"
		     "ddb.uuid = \"%s\"\n"
		     "ddb.virtualHWVersion = \"14\"\n",
		     cid, (unsigned long long)d->sectors, d->extent,
		     d->adapter[0] ? d->adapter : "lsilogic", (unsigned long long)cyl,
		     (unsigned long long)heads, (unsigned long long)secs, cid ^ 0x9e3779b9u,
		     cid ^ 0x7f4a7c15u, cid ^ 0x94d049bbu, cid, d->thin ? 1 : 0, uuid) < 0)
		return NULL;
	return s;
}

int vmdk_load(int dirfd, const char *name, struct vmdk_desc *d, struct vm_err *err)
{
	char *text;
	size_t len;
	int rc = vm_read_file(dirfd, name, VMDK_MAX_FILE, &text, &len);

	if (rc == -ELOOP)
		return vm_errf(err, rc, "%s: is a symbolic link (refused: it could point outside the VM folder)",
			       name);
	if (rc == -EFBIG)
		return vm_errf(err, rc, "%s: larger than %d bytes: not a descriptor (a binary sparse VMDK is not supported)",
			       name, VMDK_MAX_FILE);
	if (rc == -EINVAL)
		return vm_errf(err, rc, "%s: not a regular file", name);
	if (rc)
		return vm_errf(err, rc, "%s: %s", name, strerror(-rc));
	rc = vmdk_parse(text, len, name, d, err);
	free(text);
	return rc;
}
