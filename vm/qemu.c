// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Builds the QEMU command line of a VM from the checked model.  Nothing of
 * the .vmx reaches QEMU as text it would parse: block devices are given in
 * -blockdev JSON (built with jansson, so quoting is not ours to get wrong),
 * files are the launcher's own descriptors as /proc/self/fd/N, device ids
 * are generated, NIC models and connection types come from fixed tables,
 * and MAC addresses and bridge names were validated character by character.
 * The only free text is the guest kernel command line (vmfsd.append), which
 * QEMU hands to the guest without interpreting it.
 *
 * Disks (docs/vm.md "VMDK descriptors"): the flat extent as driver "raw" on a "file" node
 * with cache.direct=on (no host page cache: the hosts of a datastore share
 * no cache, and the image may be written by another host after a
 * migration), aio=io_uring (or native/threads, chosen by the caller after a
 * failed start), discard=unmap so guest TRIM punches holes and keeps the
 * extent thin.  Every disk is a virtio-blk-pci device, whatever bus the
 * .vmx names (a KVM guest runs best on virtio; docs/vm.md).  Every VM also
 * gets a pvpanic device, its panic pausing QEMU for the agent to see.
 */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vm.h"

int strv_add(struct strv *s, const char *str)
{
	if (s->n + 2 > s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 32;
		char **v = realloc(s->v, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		s->v = v;
		s->cap = cap;
	}
	s->v[s->n] = strdup(str);
	if (!s->v[s->n])
		return -ENOMEM;
	s->v[++s->n] = NULL;
	return 0;
}

int strv_addf(struct strv *s, const char *fmt, ...)
{
	va_list ap;
	char *t;
	int rc;

	va_start(ap, fmt);
	rc = vasprintf(&t, fmt, ap);
	va_end(ap);
	if (rc < 0)
		return -ENOMEM;
	rc = strv_add(s, t);
	free(t);
	return rc;
}

void strv_free(struct strv *s)
{
	for (size_t i = 0; i < s->n; i++)
		free(s->v[i]);
	free(s->v);
	s->v = NULL;
	s->n = s->cap = 0;
}

static int add_json(struct strv *s, const char *opt, json_t *j)
{
	char *t = json_dumps(j, JSON_COMPACT);
	int rc;

	json_decref(j);
	if (!t)
		return -ENOMEM;
	rc = strv_add(s, opt);
	if (!rc)
		rc = strv_add(s, t);
	free(t);
	return rc;
}

/* The "file" node of descriptor FD (a flat extent, a delta or an ISO). */
static json_t *file_node(const struct vm_launch *l, int fd, bool cdrom)
{
	json_t *file = json_object();
	char path[64];

	if (!file)
		return NULL;
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	json_object_set_new(file, "driver", json_string("file"));
	json_object_set_new(file, "filename", json_string(path));
	json_object_set_new(file, "aio", json_string(cdrom ? "threads" : l->aio));
	json_object_set_new(file, "cache", json_pack("{s:b,s:b}", "direct", !cdrom, "no-flush", 0));
	/* the cluster lock and the .vmx.lck record guard the image;
	 * QEMU's own OFD locks add nothing across hosts */
	json_object_set_new(file, "locking", json_string("off"));
	if (!cdrom)
		json_object_set_new(file, "discard", json_string("unmap"));
	/* live migration's destination: the disk opens read-only (the
	 * source still holds its lock; docs/cluster.md §4.7) and is
	 * reopened read-write when QEMU activates it at cont */
	if (l->migrate_in && !cdrom)
		json_object_set_new(file, "auto-read-only", json_true());
	return file;
}

/* The block node of disk I: the flat extent as "raw", or with snapshots
 * (docs/vm.md "Snapshots") its qcow2 deltas, top first, each one's
 * backing given here explicitly down to the raw extent: a backing name in
 * a qcow2 header means nothing when files are descriptors.  Nodes of a
 * chain are named after their files (vmsd_node_name), so the agent finds
 * them again for block-commit. */
static json_t *disk_node(const struct vm_launch *l, size_t i)
{
	const struct vm_disk *d = &l->cfg->disks[i];
	size_t n = d->cdrom ? 0 : l->chain_len[i];
	json_t *below = NULL;

	for (size_t k = n + 1; k-- > 0;) {
		bool base = k == n;
		json_t *node = json_object(), *file;
		char nn[20];

		file = file_node(l, base ? l->disk_fd[i] : l->chain_fd[i][k], d->cdrom);
		if (!node || !file) {
			json_decref(node);
			json_decref(file);
			json_decref(below);
			return NULL;
		}
		json_object_set_new(node, "driver", json_string(base ? "raw" : "qcow2"));
		if (n) {
			vmsd_node_name(l->chain_name[i][k], nn);
			json_object_set_new(node, "node-name", json_string(nn));
		} else {
			json_object_set_new(node, "node-name", json_sprintf("disk%zu", i));
		}
		json_object_set_new(node, "file", file);
		json_object_set_new(node, "read-only", json_boolean(d->cdrom));
		if (l->migrate_in && !d->cdrom)
			json_object_set_new(node, "auto-read-only", json_true());
		if (!d->cdrom) {
			json_object_set_new(node, "discard", json_string("unmap"));
			json_object_set_new(node, "cache", json_pack("{s:b,s:b}", "direct", 1, "no-flush", 0));
		}
		if (base && !d->cdrom)
			json_object_set_new(node, "size", json_integer((json_int_t)l->disk_size[i]));
		if (!base)
			json_object_set_new(node, "backing", below);
		below = node;
	}
	return below;
}

int vm_qemu_argv(const struct vm_launch *l, struct strv *a, struct vm_err *err)
{
	const struct vm_config *c = l->cfg;
	int rc = 0;

#define ADD(x)                                 \
	do {                                   \
		if ((rc = strv_add(a, (x))))   \
			goto oom;              \
	} while (0)
#define ADDF(...)                                   \
	do {                                        \
		if ((rc = strv_addf(a, __VA_ARGS__))) \
			goto oom;                   \
	} while (0)

	if (l->accel != VM_ACCEL_KVM && l->accel != VM_ACCEL_TCG)
		return vm_errf(err, -EINVAL, "accelerator not resolved");
	ADD(l->qemu);
	/* -nodefaults: no device the .vmx did not ask for (no default NIC,
	 * floppy, CD-ROM or monitor); -no-user-config: no /etc/qemu files */
	ADD("-nodefaults");
	ADD("-no-user-config");
	/* named after the VM so that ps and top tell QEMUs apart (the thread
	 * name is cut at 15 bytes by the kernel; the command line keeps it
	 * whole); the file stem, not the display name, and only characters
	 * that need no quoting in QEMU's option syntax or a shell */
	{
		char safe[49];
		size_t k = 0;

		for (const char *p = c->name; *p && k < sizeof(safe) - 1; p++)
			safe[k++] = isalnum((unsigned char)*p) || *p == '.' || *p == '-' ||
					    *p == '_' ? *p : '_';
		safe[k] = '\0';
		ADD("-name");
		ADDF("guest=%s,process=vm-%s", safe, safe);
	}
	ADD("-machine");
	/* pinned, not the "q35" alias: a live migration needs the same
	 * machine on both hosts, whatever QEMU version each one runs */
	ADDF("pc-q35-7.2,accel=%s", l->accel == VM_ACCEL_KVM ? "kvm" : "tcg");
	if (l->accel == VM_ACCEL_KVM) {
		ADD("-cpu");
		ADD("host");
	}
	ADD("-smp");
	ADDF("%u", c->vcpus);
	ADD("-m");
	ADDF("%u", c->mem_mib);
	/* a guest kernel panic reaches the agent (docs/vm.md "VM monitoring"):
	 * the pvpanic device (ISA, port 0x505, ACPI QEMU0001: the guest's
	 * pvpanic-mmio driver) tells QEMU, and panic=pause keeps the panicked
	 * guest as it is (QMP status "guest-panicked", event GUEST_PANICKED)
	 * until the agent's sweep sees it and restarts the VM, instead of
	 * QEMU's default of shutting down, which would look like a guest
	 * power-off */
	ADD("-device");
	ADD("pvpanic");
	ADD("-action");
	ADD("panic=pause");
	ADD("-display");
	ADD("none");
	ADD("-vga");
	ADD("none");
	ADD("-daemonize");
	ADD("-pidfile");
	ADD(l->pidfile);
	ADD("-chardev");
	ADDF("socket,id=qmp,path=%s,server=on,wait=off", l->qmp_path);
	ADD("-mon");
	ADD("chardev=qmp,mode=control");
	/* serial console: a unix socket `vmfsctl console` attaches to, and
	 * everything the guest prints also goes to <vm>.log on the datastore */
	ADD("-chardev");
	if (l->log_fd >= 0)
		ADDF("socket,id=ser0,path=%s,server=on,wait=off,logfile=/proc/self/fd/%d,logappend=on",
		     l->serial_path, l->log_fd);
	else
		ADDF("socket,id=ser0,path=%s,server=on,wait=off", l->serial_path);
	ADD("-serial");
	ADD("chardev:ser0");
	if (c->kernel[0]) {
		ADD("-kernel");
		ADDF("/proc/self/fd/%d", l->kernel_fd);
		if (c->initrd[0]) {
			ADD("-initrd");
			ADDF("/proc/self/fd/%d", l->initrd_fd);
		}
		ADD("-append");
		ADD(c->append[0] ? c->append : "console=ttyS0");
	}
	for (size_t i = 0; i < c->ndisks; i++) {
		const struct vm_disk *d = &c->disks[i];
		json_t *node = disk_node(l, i);
		char top[24];

		if (!node) {
			rc = -ENOMEM;
			goto oom;
		}
		snprintf(top, sizeof(top), "%s", json_string_value(json_object_get(node, "node-name")));
		if ((rc = add_json(a, "-blockdev", node)))
			goto oom;
		ADD("-device");
		if (d->cdrom)
			ADDF("ide-cd,drive=%s,bus=ide.%zu", top, i % 6);
		else
			/* werror=enospc: a write the datastore has no room
			 * for pauses the VM (QEMU's "io-error" state) instead
			 * of failing in the guest; the agent shows it and
			 * `resume` continues once space was freed (docs/vm.md).
			 * Any other error, like a fenced volume's EIO, reaches
			 * the guest.  (Both are QEMU's defaults, stated here.) */
			ADDF("virtio-blk-pci,drive=%s,id=vd%zu,werror=enospc,rerror=report", top, i);
	}
	for (size_t i = 0; i < c->nnics; i++) {
		const struct vm_nic *n = &c->nics[i];

		if (!strcmp(n->conn, "none"))
			continue;
		ADD("-netdev");
		if (!strcmp(n->conn, "bridged"))
			ADDF("bridge,id=net%d,br=%s", n->index, n->bridge);
		else
			ADDF("user,id=net%d", n->index);
		ADD("-device");
		if (n->mac[0])
			ADDF("%s,netdev=net%d,mac=%s", n->model, n->index, n->mac);
		else
			ADDF("%s,netdev=net%d", n->model, n->index);
	}
	if (l->incoming) {
		/* resume: wait for the memory state, stay paused until `cont` */
		ADD("-incoming");
		ADD("defer");
		ADD("-S");
	}
	return 0;
oom:
	strv_free(a);
	return vm_errf(err, rc, "out of memory building the QEMU command line");
#undef ADD
#undef ADDF
}
