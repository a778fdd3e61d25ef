// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * The OVF envelope (ovf.h): parsing what VMware's ovftool and VirtualBox
 * write, and writing one for `vmfsctl export`.  The descriptor is hostile
 * input.  libxml2 is asked for the least: no network (XML_PARSE_NONET),
 * no entity substitution (no XML_PARSE_NOENT), no DTD loading, and an
 * external entity loader that refuses everything; on top of that any
 * DOCTYPE is refused outright, since an OVF descriptor never needs one
 * and every XXE and entity expansion ("billion laughs") attack starts
 * with one.  The text must be UTF-8 (no NUL bytes), at most OVF_MAX_XML
 * bytes, and the tree is walked only to OVF_MAX_DEPTH.  Elements are
 * matched by local name, so the prefixes a tool chose (ovf:, rasd:,
 * vssd:, vmw:, vbox:) do not matter, and both the OVF 1.x and the 2.x
 * envelope namespace are accepted.  The resource types are CIM's
 * (CIM_ResourceAllocationSettingData.ResourceType): 3 processor,
 * 4 memory, 5 IDE, 6 parallel SCSI, 10 Ethernet, 15/16 CD/DVD, 17 disk,
 * 20 other storage (SATA/NVMe); docs/vm.md has the mapping tables.
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <libxml/parser.h>
#include <libxml/tree.h>

#include "ovf.h"

#define NS_OVF1 "http://schemas.dmtf.org/ovf/envelope/1"
#define NS_OVF2 "http://schemas.dmtf.org/ovf/envelope/2"

enum {
	RT_OTHER = 1, RT_CPU = 3, RT_MEM = 4, RT_IDE = 5, RT_SCSI = 6, RT_ETH = 10,
	RT_FLOPPY = 14, RT_CD = 15, RT_DVD = 16, RT_DISK = 17, RT_STORAGE = 20,
	RT_SERIAL = 21, RT_USB = 23, RT_GRAPHICS = 24, RT_SOUND = 35,
};

struct ctx {
	const char *what;
	struct ovf_pkg *p;
	struct vm_err *err;
	char config[OVF_ID_MAX];        /* the DeploymentOptionSection's default, "" = none */
};

static void note(struct ovf_pkg *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(struct ovf_pkg *p, const char *fmt, ...)
{
	size_t l = strlen(p->notes);
	va_list ap;

	if (l + 3 >= sizeof(p->notes))
		return;
	if (l) {
		strcpy(p->notes + l, "; ");
		l += 2;
	}
	va_start(ap, fmt);
	vsnprintf(p->notes + l, sizeof(p->notes) - l, fmt, ap);
	va_end(ap);
}

/* text from the package shown to a person or written to a .vmx: no
 * control characters (a terminal escape in an ElementName) */
static void scrub(char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			*s = '?';
}

static bool is(const xmlNode *n, const char *local)
{
	return n && n->type == XML_ELEMENT_NODE && !strcmp((const char *)n->name, local);
}

static xmlNode *child(const xmlNode *n, const char *local)
{
	for (xmlNode *c = n ? n->children : NULL; c; c = c->next)
		if (is(c, local))
			return c;
	return NULL;
}

static long line_of(const xmlNode *n)
{
	return n ? xmlGetLineNo(n) : 0;
}

/* an attribute by local name, whatever its namespace: 0, -ENOENT, -E2BIG */
static int attr(const xmlNode *n, const char *local, char *buf, size_t size)
{
	for (xmlAttr *a = n->properties; a; a = a->next) {
		xmlChar *v;
		int rc = 0;

		if (strcmp((const char *)a->name, local))
			continue;
		v = xmlNodeListGetString(n->doc, a->children, 1);
		if (!v) {
			buf[0] = '\0';
			return 0;
		}
		if (strlen((char *)v) >= size)
			rc = -E2BIG;
		else
			strcpy(buf, (char *)v);
		xmlFree(v);
		return rc;
	}
	return -ENOENT;
}

/* the text of element N, trimmed: 0, -E2BIG */
static int text_of(const xmlNode *n, char *buf, size_t size)
{
	xmlChar *v = xmlNodeGetContent(n);
	char *s, *e;
	int rc = 0;

	buf[0] = '\0';
	if (!v)
		return 0;
	s = (char *)v;
	while (isspace((unsigned char)*s))
		s++;
	e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		e--;
	if ((size_t)(e - s) >= size)
		rc = -E2BIG;
	else {
		memcpy(buf, s, (size_t)(e - s));
		buf[e - s] = '\0';
	}
	xmlFree(v);
	return rc;
}

/* a child element's text ("" when absent) */
static int ctext(struct ctx *x, const xmlNode *n, const char *local, char *buf, size_t size)
{
	xmlNode *c = child(n, local);

	buf[0] = '\0';
	if (c && text_of(c, buf, size))
		return vm_errf(x->err, -E2BIG, "%s:%ld: element %s: longer than %zu bytes", x->what,
			       line_of(c), local, size - 1);
	return 0;
}

static int cattr(struct ctx *x, const xmlNode *n, const char *local, char *buf, size_t size,
		 bool required)
{
	int rc = attr(n, local, buf, size);

	if (rc == -ENOENT && !required) {
		buf[0] = '\0';
		return 0;
	}
	if (rc == -ENOENT)
		return vm_errf(x->err, -EINVAL, "%s:%ld: element %s: attribute ovf:%s missing", x->what,
			       line_of(n), (const char *)n->name, local);
	if (rc)
		return vm_errf(x->err, rc, "%s:%ld: element %s: attribute %s longer than %zu bytes",
			       x->what, line_of(n), (const char *)n->name, local, size - 1);
	return 0;
}

static bool parse_u64(const char *s, uint64_t *out)
{
	uint64_t v = 0;

	if (!*s)
		return false;
	for (; *s; s++) {
		if (!isdigit((unsigned char)*s) || v > (UINT64_MAX - 9) / 10)
			return false;
		v = v * 10 + (uint64_t)(*s - '0');
	}
	*out = v;
	return true;
}

int ovf_units(const char *s, uint64_t *mult)
{
	static const struct {
		const char *name;
		uint64_t m;
	} named[] = {
		{"", 1}, {"byte", 1}, {"bytes", 1}, {"KiloBytes", 1ULL << 10}, {"KB", 1ULL << 10},
		{"MegaBytes", 1ULL << 20}, {"MB", 1ULL << 20}, {"GigaBytes", 1ULL << 30},
		{"GB", 1ULL << 30}, {"TeraBytes", 1ULL << 40}, {"TB", 1ULL << 40},
	};
	char buf[64], *p, *q;
	unsigned long base, exp;

	for (size_t i = 0; i < sizeof(named) / sizeof(named[0]); i++)
		if (!strcasecmp(s, named[i].name)) {
			*mult = named[i].m;
			return 0;
		}
	/* DSP0004 programmatic units: "byte * 2^30", spaces optional */
	if (strlen(s) >= sizeof(buf))
		return -EINVAL;
	for (p = buf, q = (char *)s; *q; q++)
		if (!isspace((unsigned char)*q))
			*p++ = *q;
	*p = '\0';
	if (strncasecmp(buf, "byte*", 5))
		return -EINVAL;
	p = buf + 5;
	base = strtoul(p, &q, 10);
	if (q == p || *q != '^' || (base != 2 && base != 10))
		return -EINVAL;
	p = q + 1;
	exp = strtoul(p, &q, 10);
	if (q == p || *q || exp > (base == 2 ? 62 : 18))
		return -EINVAL;
	*mult = 1;
	while (exp--)
		*mult *= base;
	return 0;
}

/* "ovf:/disk/ID", "/disk/ID" (VirtualBox) -> ID */
static const char *host_resource(const char *s, const char *kind)
{
	char pfx[16];

	if (!strncmp(s, "ovf:", 4))
		s += 4;
	snprintf(pfx, sizeof(pfx), "/%s/", kind);
	return strncmp(s, pfx, strlen(pfx)) ? NULL : s + strlen(pfx);
}

/* ---------------------------------------------------------------- sections */

static int parse_references(struct ctx *x, const xmlNode *sec)
{
	struct ovf_pkg *p = x->p;

	for (xmlNode *n = sec->children; n; n = n->next) {
		struct ovf_file *f;
		char buf[64];
		uint64_t v;
		int rc;

		if (n->type != XML_ELEMENT_NODE)
			continue;
		if (!is(n, "File"))
			return vm_errf(x->err, -EINVAL, "%s:%ld: References: unexpected element %s", x->what,
				       line_of(n), (const char *)n->name);
		if (p->nfiles == OVF_MAX_FILES)
			return vm_errf(x->err, -E2BIG, "%s:%ld: References: more than %d files", x->what,
				       line_of(n), OVF_MAX_FILES);
		f = &p->files[p->nfiles];
		if ((rc = cattr(x, n, "id", f->id, sizeof(f->id), true)) ||
		    (rc = cattr(x, n, "href", f->href, sizeof(f->href), true)))
			return rc;
		/* the package's own files only: no URL, no path */
		if (strstr(f->href, "://") || !strncasecmp(f->href, "file:", 5))
			return vm_errf(x->err, -EPERM, "%s:%ld: References/File ovf:href '%.100s': a URL; only files inside the package are imported",
				       x->what, line_of(n), f->href);
		if (f->href[0] == '/' || strchr(f->href, '/') || strchr(f->href, '\\') ||
		    !strcmp(f->href, "..") || !strcmp(f->href, "."))
			return vm_errf(x->err, -EPERM, "%s:%ld: References/File ovf:href '%.100s' leaves the package (a path, not a file name of the package)",
				       x->what, line_of(n), f->href);
		rc = vm_name_check(f->href, "References/File ovf:href", (int)line_of(n), x->what, x->err);
		if (rc)
			return rc;
		if (f->href[0] == '.')
			return vm_errf(x->err, -EPERM, "%s:%ld: References/File ovf:href '%.100s': hidden file names are refused",
				       x->what, line_of(n), f->href);
		f->size = -1;
		if ((rc = cattr(x, n, "size", buf, sizeof(buf), false)))
			return rc;
		if (buf[0]) {
			if (!parse_u64(buf, &v) || v > OVF_MAX_CAPACITY * 2)
				return vm_errf(x->err, -ERANGE, "%s:%ld: References/File %s: ovf:size '%.32s' out of range",
					       x->what, line_of(n), f->id, buf);
			f->size = (int64_t)v;
		}
		if ((rc = cattr(x, n, "compression", buf, sizeof(buf), false)))
			return rc;
		if (buf[0] && strcasecmp(buf, "identity"))
			return vm_errf(x->err, -ENOTSUP, "%s:%ld: References/File %s: ovf:compression '%.32s' is not supported (export without --compress)",
				       x->what, line_of(n), f->id, buf);
		if (!cattr(x, n, "chunkSize", buf, sizeof(buf), false) && buf[0])
			return vm_errf(x->err, -ENOTSUP, "%s:%ld: References/File %s: ovf:chunkSize (a file split in chunks) is not supported",
				       x->what, line_of(n), f->id);
		for (size_t i = 0; i < p->nfiles; i++)
			if (!strcmp(p->files[i].id, f->id) || !strcmp(p->files[i].href, f->href))
				return vm_errf(x->err, -EINVAL, "%s:%ld: References/File %s: ovf:id or ovf:href used twice",
					       x->what, line_of(n), f->id);
		p->nfiles++;
	}
	return 0;
}

static int file_index(const struct ovf_pkg *p, const char *id)
{
	for (size_t i = 0; i < p->nfiles; i++)
		if (!strcmp(p->files[i].id, id))
			return (int)i;
	return -1;
}

/* VMware's disk format URIs: OVF 1.x's ".../interfaces/specifications/
 * vmdk.html#streamOptimized" (or #sparse), and OVF 0.9 tools'
 * ".../specifications/vmdk.html#compressed"; the file itself is checked
 * later (a sparse VMDK header) */
static bool vmdk_format_ok(const char *f)
{
	static const char *const pfx[] = {"http://www.vmware.com/interfaces/specifications/vmdk.html#",
					  "http://www.vmware.com/specifications/vmdk.html#", NULL};
	static const char *const kind[] = {"streamOptimized", "sparse", "compressed", NULL};

	for (int i = 0; pfx[i]; i++)
		if (!strncmp(f, pfx[i], strlen(pfx[i])))
			for (int k = 0; kind[k]; k++)
				if (!strcmp(f + strlen(pfx[i]), kind[k]))
					return true;
	return false;
}

static int parse_disks(struct ctx *x, const xmlNode *sec)
{
	struct ovf_pkg *p = x->p;

	for (xmlNode *n = sec->children; n; n = n->next) {
		struct ovf_disk *d;
		char cap[64], units[64], ref[OVF_ID_MAX];
		uint64_t v, m;
		int rc;

		if (!is(n, "Disk"))
			continue;   /* Info */
		if (p->ndisks == VM_MAX_DISKS)
			return vm_errf(x->err, -E2BIG, "%s:%ld: DiskSection: more than %d disks", x->what,
				       line_of(n), VM_MAX_DISKS);
		d = &p->disks[p->ndisks];
		if ((rc = cattr(x, n, "diskId", d->id, sizeof(d->id), true)) ||
		    (rc = cattr(x, n, "capacity", cap, sizeof(cap), true)) ||
		    (rc = cattr(x, n, "capacityAllocationUnits", units, sizeof(units), false)) ||
		    (rc = cattr(x, n, "fileRef", ref, sizeof(ref), false)) ||
		    (rc = cattr(x, n, "format", d->format, sizeof(d->format), false)))
			return rc;
		if (cap[0] == '$')
			return vm_errf(x->err, -ENOTSUP, "%s:%ld: DiskSection/Disk %s: ovf:capacity '%.32s' refers to a property: not supported",
				       x->what, line_of(n), d->id, cap);
		if (!parse_u64(cap, &v))
			return vm_errf(x->err, -EINVAL, "%s:%ld: DiskSection/Disk %s: ovf:capacity '%.32s' is not a number",
				       x->what, line_of(n), d->id, cap);
		if (ovf_units(units, &m))
			return vm_errf(x->err, -EINVAL, "%s:%ld: DiskSection/Disk %s: ovf:capacityAllocationUnits '%.40s' not understood",
				       x->what, line_of(n), d->id, units);
		if (v == 0 || v > OVF_MAX_CAPACITY / m)
			return vm_errf(x->err, -ERANGE, "%s:%ld: DiskSection/Disk %s: ovf:capacity %s x %" PRIu64 " bytes is out of range (1 byte to 64 TiB, the largest file of a vmfsd volume)",
				       x->what, line_of(n), d->id, cap, m);
		d->capacity = v * m;
		d->file = -1;
		if (ref[0]) {
			d->file = file_index(p, ref);
			if (d->file < 0)
				return vm_errf(x->err, -EINVAL, "%s:%ld: DiskSection/Disk %s: ovf:fileRef '%.40s' is not in References",
					       x->what, line_of(n), d->id, ref);
			if (!vmdk_format_ok(d->format))
				return vm_errf(x->err, -ENOTSUP, "%s:%ld: DiskSection/Disk %s: ovf:format '%.100s': only VMDK streamOptimized (or sparse) disks are imported",
					       x->what, line_of(n), d->id, d->format);
		}
		for (size_t i = 0; i < p->ndisks; i++)
			if (!strcmp(p->disks[i].id, d->id))
				return vm_errf(x->err, -EINVAL, "%s:%ld: DiskSection/Disk %s: ovf:diskId used twice",
					       x->what, line_of(n), d->id);
		p->ndisks++;
	}
	return 0;
}

static int ctrl_find(const struct ovf_pkg *p, const char *bus, int index)
{
	for (size_t i = 0; i < p->nctrls; i++)
		if (!strcmp(p->ctrls[i].bus, bus) && p->ctrls[i].index == index)
			return (int)i;
	return -1;
}

/* one Item of a VirtualHardwareSection: the values a mapping needs */
struct item {
	const xmlNode *n;
	int type;
	char id[32], parent[32], addr[32], aop[32], sub[64], qty[32], units[64], conn[128];
	char host[128], name[256], required[8];
};

static int item_read(struct ctx *x, const xmlNode *n, struct item *it)
{
	char rt[16];
	int rc;
	uint64_t v;

	memset(it, 0, sizeof(*it));
	it->n = n;
	if ((rc = ctext(x, n, "ResourceType", rt, sizeof(rt))) ||
	    (rc = ctext(x, n, "InstanceID", it->id, sizeof(it->id))) ||
	    (rc = ctext(x, n, "Parent", it->parent, sizeof(it->parent))) ||
	    (rc = ctext(x, n, "Address", it->addr, sizeof(it->addr))) ||
	    (rc = ctext(x, n, "AddressOnParent", it->aop, sizeof(it->aop))) ||
	    (rc = ctext(x, n, "ResourceSubType", it->sub, sizeof(it->sub))) ||
	    (rc = ctext(x, n, "VirtualQuantity", it->qty, sizeof(it->qty))) ||
	    (rc = ctext(x, n, "AllocationUnits", it->units, sizeof(it->units))) ||
	    (rc = ctext(x, n, "Connection", it->conn, sizeof(it->conn))) ||
	    (rc = ctext(x, n, "HostResource", it->host, sizeof(it->host))) ||
	    (rc = ctext(x, n, "ElementName", it->name, sizeof(it->name))))
		return rc;
	if (!it->name[0])
		ctext(x, n, "Caption", it->name, sizeof(it->name));   /* OVF 0.9/1.0 tools */
	if (attr(n, "required", it->required, sizeof(it->required)))
		it->required[0] = '\0';
	if (!parse_u64(rt, &v) || v > 65535)
		return vm_errf(x->err, -EINVAL, "%s:%ld: VirtualHardwareSection/Item: rasd:ResourceType '%.15s' is not a number",
			       x->what, line_of(n), rt);
	it->type = (int)v;
	return 0;
}

static int item_uint(struct ctx *x, const struct item *it, const char *field, const char *val,
		     uint64_t max, uint64_t *out)
{
	if (!parse_u64(val, out) || *out > max)
		return vm_errf(x->err, -ERANGE, "%s:%ld: Item %s (%s): rasd:%s '%.31s' is not a number up to %" PRIu64,
			       x->what, line_of(it->n), it->id, it->name, field, val, max);
	return 0;
}

static const char *nic_model(const char *sub)
{
	if (!strcasecmp(sub, "VmxNet3") || !strcasecmp(sub, "vmxnet3"))
		return "vmxnet3";
	if (!strcasecmp(sub, "E1000"))
		return "e1000";
	if (!strcasecmp(sub, "E1000e"))
		return "e1000e";
	if (!strcasecmp(sub, "virtio") || !strcasecmp(sub, "virtio-net"))
		return "virtio";
	return NULL;
}

/* the controller an Item sits on: its bus and number */
static int item_parent(struct ctx *x, const struct item *it, const struct item *items, size_t n,
		       char *bus, int *ctrl)
{
	for (size_t i = 0; i < n; i++) {
		if (strcmp(items[i].id, it->parent))
			continue;
		switch (items[i].type) {
		case RT_IDE:
			strcpy(bus, "ide");
			break;
		case RT_SCSI:
			strcpy(bus, "scsi");
			break;
		case RT_STORAGE:
			strcpy(bus, strcasestr(items[i].sub, "nvme") ? "nvme" : "sata");
			break;
		default:
			return vm_errf(x->err, -EINVAL, "%s:%ld: Item %s (%s): rasd:Parent %s is not a disk controller",
				       x->what, line_of(it->n), it->id, it->name, it->parent);
		}
		*ctrl = items[i].addr[0] ? atoi(items[i].addr) : 0;
		return 0;
	}
	return vm_errf(x->err, -EINVAL, "%s:%ld: Item %s (%s): rasd:Parent '%.31s' is no Item's rasd:InstanceID",
		       x->what, line_of(it->n), it->id, it->name, it->parent);
}

/* vmw:ExtraConfig / vmw:Config: the .vmx keys ovftool carries; only
 * vmfsd's own direct-boot keys mean something here */
static void hw_extra(struct ctx *x, const xmlNode *c)
{
	static const char *const keep[] = {"vmfsd.kernel", "vmfsd.initrd", "vmfsd.append", "vmfsd.accel",
					   NULL};
	struct ovf_pkg *p = x->p;
	char key[VMX_MAX_KEY + 1], val[VMX_MAX_VALUE + 1];

	if (attr(c, "key", key, sizeof(key)) || attr(c, "value", val, sizeof(val)))
		return;
	for (int k = 0; keep[k]; k++)
		if (!strcasecmp(key, keep[k]) && p->nextra < OVF_MAX_EXTRA) {
			snprintf(p->extra[p->nextra].key, sizeof(p->extra[0].key), "%s", keep[k]);
			snprintf(p->extra[p->nextra].value, sizeof(p->extra[0].value), "%s", val);
			p->nextra++;
			return;
		}
	if (is(c, "ExtraConfig"))
		note(p, "vmw:ExtraConfig %.40s", key);
}

/* a disk controller: its bus and number (VirtualBox leaves out
 * rasd:Address: numbered in order) */
static int hw_controller(struct ctx *x, struct item *it)
{
	struct ovf_pkg *p = x->p;
	const char *bus = it->type == RT_IDE ? "ide" : it->type == RT_SCSI ? "scsi"
			: strcasestr(it->sub, "nvme") ? "nvme" : "sata";
	uint64_t a = 0;
	int rc;

	if (it->addr[0] && (rc = item_uint(x, it, "Address", it->addr, 3, &a)))
		return rc;
	if (!it->addr[0]) {
		while (ctrl_find(p, bus, (int)a) >= 0)
			a++;
		snprintf(it->addr, sizeof(it->addr), "%d", (int)a);
	}
	if (ctrl_find(p, bus, (int)a) >= 0 || p->nctrls == OVF_MAX_CTRL) {
		note(p, "controller Item %s (%s %s%d) twice", it->id, it->name, bus, (int)a);
		return 0;
	}
	snprintf(p->ctrls[p->nctrls].bus, sizeof(p->ctrls[0].bus), "%s", bus);
	p->ctrls[p->nctrls].index = (int)a;
	if (!strcmp(bus, "scsi")) {
		const char *m = !strcasecmp(it->sub, "VirtualSCSI") ? "pvscsi"
			      : !strcasecmp(it->sub, "lsilogicsas") ? "lsisas1068"
			      : !strcasecmp(it->sub, "buslogic") ? "buslogic" : "lsilogic";

		snprintf(p->ctrls[p->nctrls].model, sizeof(p->ctrls[0].model), "%s", m);
	}
	p->nctrls++;
	return 0;
}

static int hw_cpu(struct ctx *x, const struct item *it)
{
	uint64_t q;
	int rc = item_uint(x, it, "VirtualQuantity", it->qty, VM_MAX_VCPUS, &q);

	if (rc)
		return rc;
	if (q == 0)
		return vm_errf(x->err, -ERANGE, "%s:%ld: Item %s (%s): rasd:VirtualQuantity 0 processors",
			       x->what, line_of(it->n), it->id, it->name);
	x->p->vcpus = (unsigned)q;
	return 0;
}

static int hw_mem(struct ctx *x, const struct item *it)
{
	uint64_t q, m;
	int rc = item_uint(x, it, "VirtualQuantity", it->qty, UINT64_MAX / 2, &q);

	if (rc)
		return rc;
	if (ovf_units(it->units[0] ? it->units : "byte * 2^20", &m))
		return vm_errf(x->err, -EINVAL, "%s:%ld: Item %s (%s): rasd:AllocationUnits '%.40s' not understood",
			       x->what, line_of(it->n), it->id, it->name, it->units);
	if (q > ((uint64_t)OVF_MAX_MEM_MIB << 20) / m || q * m < ((uint64_t)VM_MIN_MEM_MIB << 20))
		return vm_errf(x->err, -ERANGE, "%s:%ld: Item %s (%s): memory %s x %" PRIu64 " bytes is out of range (%d MiB to 16 TiB)",
			       x->what, line_of(it->n), it->id, it->name, it->qty, m, VM_MIN_MEM_MIB);
	x->p->mem_mib = (unsigned)((q * m) >> 20);
	return 0;
}

/* a disk (ovf:/disk/ID) or a CD-ROM (ovf:/file/ID, or empty: noted) on
 * its controller; NEXT_UNIT numbers the Items without AddressOnParent */
static int hw_device(struct ctx *x, const struct item *it, const struct item *items, size_t n,
		     int next_unit[4])
{
	struct ovf_pkg *p = x->p;
	struct ovf_dev dv = {.index = -1};
	const char *id;
	uint64_t u;
	int rc, bi;

	if (!it->parent[0])
		return vm_errf(x->err, -EINVAL, "%s:%ld: Item %s (%s): no rasd:Parent controller", x->what,
			       line_of(it->n), it->id, it->name);
	if ((rc = item_parent(x, it, items, n, dv.bus, &dv.ctrl)))
		return rc;
	bi = !strcmp(dv.bus, "scsi") ? 0 : !strcmp(dv.bus, "ide") ? 1 : !strcmp(dv.bus, "sata") ? 2 : 3;
	if (it->aop[0]) {
		if ((rc = item_uint(x, it, "AddressOnParent", it->aop, 64, &u)))
			return rc;
		dv.unit = (int)u;
	} else {
		dv.unit = next_unit[bi]++;
	}
	if (!strcmp(dv.bus, "ide") && (dv.ctrl > 1 || dv.unit > 1))
		return vm_errf(x->err, -ERANGE, "%s:%ld: Item %s (%s): IDE %d:%d does not exist (two channels of two)",
			       x->what, line_of(it->n), it->id, it->name, dv.ctrl, dv.unit);
	if (it->type != RT_DISK) {
		if (it->host[0] && (id = host_resource(it->host, "file"))) {
			dv.index = file_index(p, id);
			if (dv.index < 0)
				return vm_errf(x->err, -EINVAL, "%s:%ld: Item %s (%s): file '%.40s' is not in References",
					       x->what, line_of(it->n), it->id, it->name, id);
		}
		if (dv.index < 0 || p->ncdroms == OVF_MAX_CDROMS)
			note(p, "CD-ROM Item %s (%s) without an image in the package", it->id, it->name);
		else
			p->cdroms[p->ncdroms++] = dv;
		return 0;
	}
	if (!(id = host_resource(it->host, "disk")))
		return vm_errf(x->err, -EINVAL, "%s:%ld: Item %s (%s): rasd:HostResource '%.60s' is not ovf:/disk/ID",
			       x->what, line_of(it->n), it->id, it->name, it->host);
	for (size_t d = 0; d < p->ndisks; d++)
		if (!strcmp(p->disks[d].id, id))
			dv.index = (int)d;
	if (dv.index < 0)
		return vm_errf(x->err, -EINVAL, "%s:%ld: Item %s (%s): disk '%.40s' is not in DiskSection",
			       x->what, line_of(it->n), it->id, it->name, id);
	for (size_t d = 0; d < p->nvdisks; d++)
		if (p->vdisks[d].index == dv.index)
			return vm_errf(x->err, -EINVAL, "%s:%ld: Item %s (%s): disk '%.40s' attached twice",
				       x->what, line_of(it->n), it->id, it->name, id);
	if (p->nvdisks == VM_MAX_DISKS)
		return vm_errf(x->err, -E2BIG, "%s:%ld: more than %d disks", x->what, line_of(it->n),
			       VM_MAX_DISKS);
	p->vdisks[p->nvdisks++] = dv;
	return 0;
}

static void hw_nic(struct ctx *x, const struct item *it)
{
	struct ovf_pkg *p = x->p;
	const char *mdl = nic_model(it->sub), *a = it->addr;
	struct ovf_nic *nic;

	if (p->nnics == VM_MAX_NICS) {
		note(p, "NIC Item %s (%s): more than %d NICs", it->id, it->name, VM_MAX_NICS);
		return;
	}
	nic = &p->nics[p->nnics++];
	if (!mdl) {
		if (it->sub[0])
			note(p, "NIC Item %s: model %.30s mapped to vmxnet3", it->id, it->sub);
		mdl = "vmxnet3";
	}
	snprintf(nic->model, sizeof(nic->model), "%s", mdl);
	snprintf(nic->network, sizeof(nic->network), "%s", it->conn);
	if (strlen(a) == 17)
		snprintf(nic->mac, sizeof(nic->mac), "%s", a);
	else if (strlen(a) == 12)   /* VirtualBox: 080027AABBCC */
		snprintf(nic->mac, sizeof(nic->mac), "%.2s:%.2s:%.2s:%.2s:%.2s:%.2s", a, a + 2, a + 4, a + 6,
			 a + 8, a + 10);
	if (strspn(nic->mac, "0123456789abcdefABCDEF:") != strlen(nic->mac))
		nic->mac[0] = '\0';   /* not a MAC: QEMU picks one */
}

static void hw_other(struct ctx *x, const struct item *it)
{
	static const struct {
		int t;
		const char *what;
	} names[] = {
		{RT_FLOPPY, "floppy drive"}, {RT_SERIAL, "serial port"}, {RT_USB, "USB controller"},
		{RT_GRAPHICS, "video card"}, {RT_SOUND, "sound card"}, {RT_OTHER, "other device"},
	};
	const char *w = "device";

	for (size_t k = 0; k < sizeof(names) / sizeof(names[0]); k++)
		if (names[k].t == it->type)
			w = names[k].what;
	note(x->p, "%s Item %s (%.40s, ResourceType %d)", w, it->id, it->name, it->type);
}

/* DeploymentOptionSection: several hardware configurations ("small",
 * "large"); the one marked ovf:default="true" (else the first) is
 * imported, as ovftool does without --deploymentOption */
static void deployment_option(struct ctx *x, const xmlNode *sec)
{
	char def[8];

	for (xmlNode *c = sec->children; c; c = c->next) {
		if (!is(c, "Configuration"))
			continue;
		if (!x->config[0] || (!attr(c, "default", def, sizeof(def)) && !strcmp(def, "true")))
			if (attr(c, "id", x->config, sizeof(x->config)))
				x->config[0] = '\0';
	}
	if (x->config[0])
		note(x->p, "deployment option '%s' used (the default)", x->config);
}

/* an Item for another deployment option (ovf:configuration="a b") */
static bool other_config(const struct ctx *x, const xmlNode *n)
{
	char list[256], *tok, *save;

	if (attr(n, "configuration", list, sizeof(list)) || !x->config[0])
		return false;
	for (tok = strtok_r(list, " \t\n", &save); tok; tok = strtok_r(NULL, " \t\n", &save))
		if (!strcmp(tok, x->config))
			return false;
	return true;
}

static int parse_hardware(struct ctx *x, const xmlNode *sec)
{
	struct ovf_pkg *p = x->p;
	struct item *items = calloc(OVF_MAX_ITEMS, sizeof(*items));
	int next_unit[4] = {0};
	size_t n = 0;
	int rc = 0;

	if (!items)
		return vm_errf(x->err, -ENOMEM, "out of memory");
	for (xmlNode *c = sec->children; c && !rc; c = c->next) {
		if (is(c, "Item") || is(c, "StorageItem") || is(c, "EthernetPortItem")) {
			if (other_config(x, c))
				continue;
			if (n == OVF_MAX_ITEMS)
				rc = vm_errf(x->err, -E2BIG, "%s:%ld: VirtualHardwareSection: more than %d Items",
					     x->what, line_of(c), OVF_MAX_ITEMS);
			else
				rc = item_read(x, c, &items[n++]);
		} else if (is(c, "ExtraConfig") || is(c, "Config")) {
			hw_extra(x, c);
		}
	}
	/* controllers first: disks name them as parents */
	for (size_t i = 0; i < n && !rc; i++)
		if (items[i].type == RT_IDE || items[i].type == RT_SCSI || items[i].type == RT_STORAGE)
			rc = hw_controller(x, &items[i]);
	for (size_t i = 0; i < n && !rc; i++) {
		const struct item *it = &items[i];

		switch (it->type) {
		case RT_CPU:
			rc = hw_cpu(x, it);
			break;
		case RT_MEM:
			rc = hw_mem(x, it);
			break;
		case RT_IDE:
		case RT_SCSI:
		case RT_STORAGE:
			break;
		case RT_DISK:
		case RT_CD:
		case RT_DVD:
			rc = hw_device(x, it, items, n, next_unit);
			break;
		case RT_ETH:
			hw_nic(x, it);
			break;
		default:
			hw_other(x, it);
		}
	}
	free(items);
	if (rc)
		return rc;
	if (!p->vcpus || !p->mem_mib)
		return vm_errf(x->err, -EINVAL, "%s:%ld: VirtualHardwareSection: no %s Item (rasd:ResourceType %d)",
			       x->what, line_of(sec), p->vcpus ? "memory" : "processor", p->vcpus ? RT_MEM : RT_CPU);
	return 0;
}

static int parse_system(struct ctx *x, const xmlNode *vs)
{
	struct ovf_pkg *p = x->p;
	bool hw = false;
	int rc;

	if ((rc = ctext(x, vs, "Name", p->name, sizeof(p->name))))
		return rc;
	if (!p->name[0] && (rc = cattr(x, vs, "id", p->name, sizeof(p->name), false)))
		return rc;
	strcpy(p->guest_os, "other-64");
	for (xmlNode *c = vs->children; c; c = c->next) {
		char req[8] = "";

		if (c->type != XML_ELEMENT_NODE || is(c, "Info") || is(c, "Name"))
			continue;
		if (is(c, "OperatingSystemSection")) {
			char os[65] = "";

			/* ovftool: vmw:osType="debian11_64Guest"; VirtualBox:
			 * vbox:OSType ovf:required="false">Debian_64< */
			if (attr(c, "osType", os, sizeof(os)) && child(c, "OSType"))
				text_of(child(c, "OSType"), os, sizeof(os));
			if (os[0]) {
				size_t l = strlen(os);

				/* vSphere's VirtualMachineGuestOsIdentifier
				 * "debian10_64Guest" is the .vmx's "debian10-64" */
				if (l > 5 && !strcmp(os + l - 5, "Guest")) {
					os[l -= 5] = '\0';
					if (l > 3 && !strcmp(os + l - 3, "_64"))
						os[l - 3] = '-';
				}
				for (char *s = os; *s; s++)
					if (!isalnum((unsigned char)*s) && *s != '-' && *s != '_')
						*s = '_';
				snprintf(p->guest_os, sizeof(p->guest_os), "%s", os);
			}
		} else if (is(c, "VirtualHardwareSection")) {
			if (hw) {
				note(p, "a second VirtualHardwareSection (line %ld)", line_of(c));
				continue;
			}
			hw = true;
			if ((rc = parse_hardware(x, c)))
				return rc;
		} else if (is(c, "ProductSection") || is(c, "AnnotationSection") || is(c, "EulaSection") ||
			   is(c, "Machine")) {
			/* descriptive, or VirtualBox's own copy of its settings */
			if (is(c, "ProductSection") || is(c, "EulaSection"))
				note(p, "%s", (const char *)c->name);
		} else {
			attr(c, "required", req, sizeof(req));
			note(p, "%s%s", (const char *)c->name, strcmp(req, "false") ? " (required)" : "");
		}
	}
	if (!hw)
		return vm_errf(x->err, -EINVAL, "%s:%ld: VirtualSystem: no VirtualHardwareSection", x->what,
			       line_of(vs));
	return 0;
}

static int check_depth(struct ctx *x, const xmlNode *n, int depth)
{
	for (const xmlNode *c = n->children; c; c = c->next) {
		if (c->type != XML_ELEMENT_NODE)
			continue;
		if (depth >= OVF_MAX_DEPTH)
			return vm_errf(x->err, -E2BIG, "%s:%ld: element %s: nested deeper than %d elements",
				       x->what, line_of(c), (const char *)c->name, OVF_MAX_DEPTH);
		int rc = check_depth(x, c, depth + 1);

		if (rc)
			return rc;
	}
	return 0;
}

/* no network, no file: external entities and DTDs are never fetched */
static xmlParserInputPtr no_loader(const char *url, const char *id, xmlParserCtxtPtr ctxt)
{
	(void)url;
	(void)id;
	(void)ctxt;
	return NULL;
}

static void quiet(void *ctx, const char *msg, ...)
{
	(void)ctx;
	(void)msg;
}

int ovf_parse(const char *text, size_t len, const char *what, struct ovf_pkg *p,
	      struct vm_err *err)
{
	struct ctx x = {.what = what, .p = p, .err = err};
	xmlDoc *doc;
	xmlNode *env, *vs = NULL;
	const xmlError *xe;
	int rc = 0;

	memset(p, 0, sizeof(*p));
	if (len > OVF_MAX_XML)
		return vm_errf(err, -EFBIG, "%s: %zu bytes: larger than %u bytes, not an OVF descriptor",
			       what, len, OVF_MAX_XML);
	if (memchr(text, '\0', len))
		return vm_errf(err, -EINVAL, "%s: a NUL byte: only UTF-8 descriptors are read", what);
	/* DSP0243 descriptors need no DTD; a DOCTYPE is how XXE and entity
	 * expansion attacks begin */
	if (memmem(text, len, "<!DOCTYPE", 9) || memmem(text, len, "<!ENTITY", 8))
		return vm_errf(err, -EPERM, "%s: a DOCTYPE or ENTITY declaration: refused (an OVF descriptor has none; entities could read local files or expand without bound)",
			       what);
	xmlSetExternalEntityLoader(no_loader);
	xmlSetGenericErrorFunc(NULL, quiet);
	xmlResetLastError();
	doc = xmlReadMemory(text, (int)len, what, "UTF-8",
			    XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING | XML_PARSE_NOCDATA);
	if (!doc) {
		xe = xmlGetLastError();
		return vm_errf(err, -EINVAL, "%s:%d: not well-formed XML: %s", what, xe ? xe->line : 0,
			       xe && xe->message ? xe->message : "parse error");
	}
	if (doc->intSubset || doc->extSubset) {
		rc = vm_errf(err, -EPERM, "%s: a DOCTYPE declaration: refused", what);
		goto out;
	}
	env = xmlDocGetRootElement(doc);
	if (!is(env, "Envelope") || !env->ns) {
		rc = vm_errf(err, -EINVAL, "%s:%ld: the root element is %s, not an OVF Envelope", what,
			     line_of(env), env ? (const char *)env->name : "missing");
		goto out;
	}
	if (!strcmp((const char *)env->ns->href, NS_OVF1))
		p->version = 1;
	else if (!strcmp((const char *)env->ns->href, NS_OVF2))
		p->version = 2;
	else {
		rc = vm_errf(err, -EINVAL, "%s:%ld: Envelope namespace '%.80s' is neither OVF 1.x (%s) nor 2.x",
			     what, line_of(env), (const char *)env->ns->href, NS_OVF1);
		goto out;
	}
	if ((rc = check_depth(&x, env, 1)))
		goto out;
	for (xmlNode *c = env->children; c && !rc; c = c->next) {
		if (c->type != XML_ELEMENT_NODE)
			continue;
		if (is(c, "References"))
			rc = parse_references(&x, c);
		else if (is(c, "DiskSection"))
			rc = parse_disks(&x, c);
		else if (is(c, "DeploymentOptionSection"))
			deployment_option(&x, c);
		else if (is(c, "VirtualSystemCollection"))
			rc = vm_errf(err, -ENOTSUP, "%s:%ld: VirtualSystemCollection: a package of several VMs (a vApp) is not supported: import one VM",
				     what, line_of(c));
		else if (is(c, "VirtualSystem")) {
			if (vs)
				rc = vm_errf(err, -ENOTSUP, "%s:%ld: a second VirtualSystem: one VM per package",
					     what, line_of(c));
			vs = c;
		}
		/* NetworkSection, Strings: networks
		 * are taken from the NICs' rasd:Connection */
	}
	if (rc)
		goto out;
	if (!vs) {
		rc = vm_errf(err, -EINVAL, "%s: no VirtualSystem element", what);
		goto out;
	}
	rc = parse_system(&x, vs);
out:
	xmlFreeDoc(doc);
	scrub(p->notes);
	scrub(p->name);
	if (rc)
		scrub(err->msg);
	return rc;
}

/* ---------------------------------------------------------------- writing */

struct buf {
	char *s;
	size_t len, cap;
	bool oom;
};

static void put(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(struct buf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(b->s ? b->s + b->len : NULL, b->s ? b->cap - b->len : 0, fmt, ap);
		va_end(ap);
		if (n < 0) {
			b->oom = true;
			return;
		}
		if (b->s && b->len + (size_t)n < b->cap) {
			b->len += (size_t)n;
			return;
		}
		size_t cap = (b->cap ? b->cap * 2 : 16384) + (size_t)n;
		char *s = realloc(b->s, cap);

		if (!s) {
			b->oom = true;
			return;
		}
		b->s = s;
		b->cap = cap;
	}
}

/* XML text of S (attribute or element content) */
static const char *esc(const char *s, char *out, size_t size)
{
	size_t o = 0;

	for (; *s && o + 7 < size; s++) {
		const char *r = *s == '&' ? "&amp;" : *s == '<' ? "&lt;" : *s == '>' ? "&gt;"
			      : *s == '"' ? "&quot;" : NULL;

		if (r) {
			strcpy(out + o, r);
			o += strlen(r);
		} else {
			out[o++] = *s;
		}
	}
	out[o] = '\0';
	return out;
}

static const char *vmx_get(const struct vmx_file *f, const char *key, const char *dflt)
{
	const struct vmx_kv *kv = f ? vmx_find(f, key) : NULL;

	return kv ? kv->value : dflt;
}

/* "scsi0:1" -> bus "scsi", 0, 1 */
static void split_key(const char *key, char *bus, size_t size, int *ctrl, int *unit)
{
	size_t i = 0;

	while (key[i] && isalpha((unsigned char)key[i]) && i + 1 < size) {
		bus[i] = key[i];
		i++;
	}
	bus[i] = '\0';
	*ctrl = atoi(key + i);
	*unit = strchr(key, ':') ? atoi(strchr(key, ':') + 1) : 0;
}

/* what the writer keeps while it writes */
struct fmt {
	const struct ovf_out *o;
	struct buf b;
	char e1[2 * VMX_MAX_VALUE + 64], e2[2 * VMX_MAX_VALUE + 64];
	struct {
		char bus[8];
		int ctrl, id;
	} ctrls[OVF_MAX_CTRL];
	size_t nctrl;
	int id;                         /* the next rasd:InstanceID */
};

static const char *nic_net(const struct vm_nic *n)
{
	return !strcmp(n->conn, "bridged") ? n->bridge : "nat";
}

/* References (the disks, then the other files), DiskSection, NetworkSection */
static void fmt_package(struct fmt *f)
{
	const struct ovf_out *o = f->o;
	const struct vm_config *c = o->cfg;

	put(&f->b, "  <References>\n");
	for (size_t i = 0; i < o->ndisks; i++)
		put(&f->b, "    <File ovf:href=\"%s\" ovf:id=\"file%zu\" ovf:size=\"%" PRIu64 "\"/>\n",
		    esc(o->disks[i].file, f->e1, sizeof(f->e1)), i + 1, o->disks[i].file_size);
	for (size_t i = 0; i < o->nfiles; i++)
		put(&f->b, "    <File ovf:href=\"%s\" ovf:id=\"file%zu\" ovf:size=\"%" PRIu64 "\"/>\n",
		    esc(o->files[i].file, f->e1, sizeof(f->e1)), o->ndisks + i + 1, o->files[i].size);
	put(&f->b, "  </References>\n"
		   "  <DiskSection>\n"
		   "    <Info>Virtual disk information</Info>\n");
	for (size_t i = 0; i < o->ndisks; i++)
		put(&f->b, "    <Disk ovf:capacity=\"%" PRIu64 "\" ovf:capacityAllocationUnits=\"byte\" "
			   "ovf:diskId=\"vmdisk%zu\" ovf:fileRef=\"file%zu\" ovf:format=\"" OVF_FMT_STREAM "\" "
			   "ovf:populatedSize=\"%" PRIu64 "\"/>\n",
		    o->disks[i].capacity, i + 1, i + 1, o->disks[i].populated);
	put(&f->b, "  </DiskSection>\n"
		   "  <NetworkSection>\n"
		   "    <Info>The list of logical networks</Info>\n");
	for (size_t i = 0; i < c->nnics; i++) {
		bool dup = !strcmp(c->nics[i].conn, "none");

		for (size_t j = 0; j < i; j++)
			dup |= !strcmp(nic_net(&c->nics[j]), nic_net(&c->nics[i]));
		if (!dup)
			put(&f->b, "    <Network ovf:name=\"%s\">\n"
				   "      <Description>The %s network</Description>\n"
				   "    </Network>\n",
			    esc(nic_net(&c->nics[i]), f->e1, sizeof(f->e1)),
			    esc(nic_net(&c->nics[i]), f->e2, sizeof(f->e2)));
	}
	put(&f->b, "  </NetworkSection>\n");
}

/* VirtualSystem's head, processor and memory */
static void fmt_system(struct fmt *f)
{
	const struct vm_config *c = f->o->cfg;
	char os[2 * sizeof(c->guest_os) + 64], id[sizeof(c->guest_os) + 8];
	size_t l;

	/* the .vmx's "debian12-64" is vSphere's "debian12_64Guest" */
	snprintf(id, sizeof(id), "%s", c->guest_os[0] ? c->guest_os : "other-64");
	l = strlen(id);
	if (l > 3 && !strcmp(id + l - 3, "-64"))
		id[l - 3] = '_';
	strcat(id, "Guest");

	put(&f->b, "  <VirtualSystem ovf:id=\"%s\">\n"
		   "    <Info>A virtual machine</Info>\n"
		   "    <Name>%s</Name>\n"
		   "    <OperatingSystemSection ovf:id=\"1\" vmw:osType=\"%s\">\n"
		   "      <Info>The kind of installed guest operating system</Info>\n"
		   "    </OperatingSystemSection>\n"
		   "    <VirtualHardwareSection>\n"
		   "      <Info>Virtual hardware requirements</Info>\n"
		   "      <System>\n"
		   "        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>\n"
		   "        <vssd:InstanceID>0</vssd:InstanceID>\n"
		   "        <vssd:VirtualSystemIdentifier>%s</vssd:VirtualSystemIdentifier>\n"
		   "        <vssd:VirtualSystemType>vmx-14</vssd:VirtualSystemType>\n"
		   "      </System>\n",
	    esc(c->name, f->e1, sizeof(f->e1)),
	    esc(c->display_name[0] ? c->display_name : c->name, f->e2, sizeof(f->e2)),
	    esc(id, os, sizeof(os)), f->e1);
	put(&f->b, "      <Item>\n"
		   "        <rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits>\n"
		   "        <rasd:Description>Number of Virtual CPUs</rasd:Description>\n"
		   "        <rasd:ElementName>%u virtual CPU(s)</rasd:ElementName>\n"
		   "        <rasd:InstanceID>%d</rasd:InstanceID>\n"
		   "        <rasd:ResourceType>3</rasd:ResourceType>\n"
		   "        <rasd:VirtualQuantity>%u</rasd:VirtualQuantity>\n"
		   "      </Item>\n", c->vcpus, f->id++, c->vcpus);
	put(&f->b, "      <Item>\n"
		   "        <rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>\n"
		   "        <rasd:Description>Memory Size</rasd:Description>\n"
		   "        <rasd:ElementName>%uMB of memory</rasd:ElementName>\n"
		   "        <rasd:InstanceID>%d</rasd:InstanceID>\n"
		   "        <rasd:ResourceType>4</rasd:ResourceType>\n"
		   "        <rasd:VirtualQuantity>%u</rasd:VirtualQuantity>\n"
		   "      </Item>\n", c->mem_mib, f->id++, c->mem_mib);
}

/* one controller Item per controller the disks and CD-ROMs use */
static void fmt_controllers(struct fmt *f)
{
	const struct vm_config *c = f->o->cfg;

	for (size_t i = 0; i < c->ndisks; i++) {
		char bus[8], key[32];
		const char *desc, *sub = NULL;
		int ctrl, unit, rt;
		size_t k;

		split_key(c->disks[i].key, bus, sizeof(bus), &ctrl, &unit);
		for (k = 0; k < f->nctrl; k++)
			if (!strcmp(f->ctrls[k].bus, bus) && f->ctrls[k].ctrl == ctrl)
				break;
		if (k < f->nctrl || f->nctrl == OVF_MAX_CTRL)
			continue;
		snprintf(f->ctrls[k].bus, sizeof(f->ctrls[0].bus), "%s", bus);
		f->ctrls[k].ctrl = ctrl;
		f->ctrls[k].id = f->id++;
		f->nctrl++;
		if (!strcmp(bus, "scsi")) {
			const char *m;

			snprintf(key, sizeof(key), "scsi%d.virtualDev", ctrl);
			m = vmx_get(f->o->vmx, key, "lsilogic");
			sub = !strcasecmp(m, "pvscsi") ? "VirtualSCSI" : !strcasecmp(m, "lsisas1068") ? "lsilogicsas"
			    : !strcasecmp(m, "buslogic") ? "buslogic" : "lsilogic";
			desc = "SCSI Controller";
			rt = RT_SCSI;
		} else if (!strcmp(bus, "ide")) {
			desc = "IDE Controller";
			rt = RT_IDE;
		} else if (!strcmp(bus, "nvme")) {
			desc = "NVME Controller";
			sub = "vmware.nvme.controller";
			rt = RT_STORAGE;
		} else {
			desc = "SATA Controller";
			sub = "vmware.sata.ahci";
			rt = RT_STORAGE;
		}
		put(&f->b, "      <Item>\n"
			   "        <rasd:Address>%d</rasd:Address>\n"
			   "        <rasd:Description>%s</rasd:Description>\n"
			   "        <rasd:ElementName>%s %d</rasd:ElementName>\n"
			   "        <rasd:InstanceID>%d</rasd:InstanceID>\n", ctrl, desc, desc, ctrl, f->ctrls[k].id);
		if (sub)
			put(&f->b, "        <rasd:ResourceSubType>%s</rasd:ResourceSubType>\n", sub);
		put(&f->b, "        <rasd:ResourceType>%d</rasd:ResourceType>\n"
			   "      </Item>\n", rt);
	}
}

/* disks and CD-ROMs on their controllers */
static void fmt_devices(struct fmt *f)
{
	const struct ovf_out *o = f->o;
	const struct vm_config *c = o->cfg;

	for (size_t i = 0, d = 0, fi; i < c->ndisks; i++) {
		char bus[8];
		int ctrl, unit, parent = 0;

		split_key(c->disks[i].key, bus, sizeof(bus), &ctrl, &unit);
		for (size_t k = 0; k < f->nctrl; k++)
			if (!strcmp(f->ctrls[k].bus, bus) && f->ctrls[k].ctrl == ctrl)
				parent = f->ctrls[k].id;
		if (!c->disks[i].cdrom) {
			put(&f->b, "      <Item>\n"
				   "        <rasd:AddressOnParent>%d</rasd:AddressOnParent>\n"
				   "        <rasd:ElementName>Hard disk %zu</rasd:ElementName>\n"
				   "        <rasd:HostResource>ovf:/disk/vmdisk%zu</rasd:HostResource>\n"
				   "        <rasd:InstanceID>%d</rasd:InstanceID>\n"
				   "        <rasd:Parent>%d</rasd:Parent>\n"
				   "        <rasd:ResourceType>17</rasd:ResourceType>\n"
				   "      </Item>\n", unit, d + 1, d + 1, f->id++, parent);
			d++;
			continue;
		}
		/* the CD image is in the package: its File follows the disks' */
		for (fi = 0; fi < o->nfiles; fi++)
			if (!strcmp(o->files[fi].file, c->disks[i].file))
				break;
		put(&f->b, "      <Item ovf:required=\"false\">\n"
			   "        <rasd:AddressOnParent>%d</rasd:AddressOnParent>\n"
			   "        <rasd:AutomaticAllocation>true</rasd:AutomaticAllocation>\n"
			   "        <rasd:ElementName>CD/DVD drive %d</rasd:ElementName>\n", unit, unit + 1);
		if (fi < o->nfiles)
			put(&f->b, "        <rasd:HostResource>ovf:/file/file%zu</rasd:HostResource>\n",
			    o->ndisks + fi + 1);
		put(&f->b, "        <rasd:InstanceID>%d</rasd:InstanceID>\n"
			   "        <rasd:Parent>%d</rasd:Parent>\n"
			   "        <rasd:ResourceType>15</rasd:ResourceType>\n"
			   "      </Item>\n", f->id++, parent);
	}
}

static void fmt_nics(struct fmt *f)
{
	const struct vm_config *c = f->o->cfg;

	for (size_t i = 0; i < c->nnics; i++) {
		const struct vm_nic *n = &c->nics[i];
		char key[32];
		const char *dev, *sub;

		if (!strcmp(n->conn, "none"))
			continue;
		/* the .vmx's word, not the QEMU model: vmxnet3 runs as
		 * virtio-net here and stays vmxnet3 in the package */
		snprintf(key, sizeof(key), "ethernet%d.virtualDev", n->index);
		dev = vmx_get(f->o->vmx, key, "vmxnet3");
		sub = !strcasecmp(dev, "e1000") ? "E1000" : !strcasecmp(dev, "e1000e") ? "E1000e"
		    : !strcasecmp(dev, "virtio") ? "virtio" : "VmxNet3";
		put(&f->b, "      <Item>\n");
		if (n->mac[0])
			put(&f->b, "        <rasd:Address>%s</rasd:Address>\n", n->mac);
		put(&f->b, "        <rasd:AddressOnParent>%d</rasd:AddressOnParent>\n"
			   "        <rasd:AutomaticAllocation>true</rasd:AutomaticAllocation>\n"
			   "        <rasd:Connection>%s</rasd:Connection>\n"
			   "        <rasd:ElementName>Network adapter %d</rasd:ElementName>\n"
			   "        <rasd:InstanceID>%d</rasd:InstanceID>\n"
			   "        <rasd:ResourceSubType>%s</rasd:ResourceSubType>\n"
			   "        <rasd:ResourceType>10</rasd:ResourceType>\n"
			   "      </Item>\n", 7 + n->index, esc(nic_net(n), f->e1, sizeof(f->e1)), n->index + 1,
		    f->id++, sub);
	}
}

char *ovf_format(const struct ovf_out *o)
{
	/* direct kernel boot travels as vmw:ExtraConfig, as ovftool carries
	 * .vmx keys it has no element for */
	static const char *const extra[] = {"vmfsd.kernel", "vmfsd.initrd", "vmfsd.append", "vmfsd.accel",
					    NULL};
	struct fmt *f = calloc(1, sizeof(*f));
	char *s;

	if (!f)
		return NULL;
	f->o = o;
	f->id = 1;
	put(&f->b, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
		   "<!-- written by vmfsctl export -->\n"
		   "<Envelope xmlns=\"" NS_OVF1 "\" xmlns:ovf=\"" NS_OVF1 "\"\n"
		   "    xmlns:cim=\"http://schemas.dmtf.org/wbem/wscim/1/common\"\n"
		   "    xmlns:rasd=\"http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData\"\n"
		   "    xmlns:vssd=\"http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData\"\n"
		   "    xmlns:vmw=\"http://www.vmware.com/schema/ovf\"\n"
		   "    xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\">\n");
	fmt_package(f);
	fmt_system(f);
	fmt_controllers(f);
	fmt_devices(f);
	fmt_nics(f);
	for (int k = 0; extra[k]; k++) {
		const char *v = vmx_get(o->vmx, extra[k], NULL);

		if (v)
			put(&f->b, "      <vmw:ExtraConfig ovf:required=\"false\" vmw:key=\"%s\" vmw:value=\"%s\"/>\n",
			    extra[k], esc(v, f->e1, sizeof(f->e1)));
	}
	put(&f->b, "    </VirtualHardwareSection>\n"
		   "  </VirtualSystem>\n"
		   "</Envelope>\n");
	s = f->b.oom ? NULL : f->b.s;
	if (!s)
		free(f->b.s);
	free(f);
	return s;
}
