// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Unit tests (Criterion) of the snapshot tree file <vm>.vmsd (vm/vmsd.c):
 * a good file parsed and written back identically, the chains and the
 * delta garbage collection, hostile files refused with the key named, and
 * the QEMU command line of a disk with a chain (its backing written out
 * down to the raw extent, nodes named after the files).  No root, no QEMU.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "vm/vm.h"

static const char *good =
	".encoding = \"UTF-8\"\n"
	"snapshot.lastUID = \"2\"\n"
	"snapshot.current = \"2\"\n"
	"snapshot.numSnapshots = \"2\"\n"
	"snapshot0.uid = \"1\"\n"
	"snapshot0.displayName = \"before |22upgrade|22\"\n"
	"snapshot0.description = \"\"\n"
	"snapshot0.createTime = \"1796220611\"\n"
	"snapshot0.numDisks = \"1\"\n"
	"snapshot0.disk0.node = \"scsi0:0\"\n"
	"snapshot0.disk0.fileName = \"vm1-flat.vmdk\"\n"
	"snapshot1.uid = \"2\"\n"
	"snapshot1.parent = \"1\"\n"
	"snapshot1.displayName = \"after\"\n"
	"snapshot1.description = \"d\"\n"
	"snapshot1.createTime = \"1796220700\"\n"
	"snapshot1.filename = \"vm1-Snapshot2.vmsn\"\n"
	"snapshot1.numDisks = \"1\"\n"
	"snapshot1.disk0.node = \"scsi0:0\"\n"
	"snapshot1.disk0.fileName = \"vm1-000001.qcow2\"\n"
	"vmfsd.lastDelta = \"3\"\n"
	"vmfsd.numDeltas = \"3\"\n"
	"vmfsd.delta0.fileName = \"vm1-000001.qcow2\"\n"
	"vmfsd.delta0.parent = \"vm1-flat.vmdk\"\n"
	"vmfsd.delta1.fileName = \"vm1-000002.qcow2\"\n"
	"vmfsd.delta1.parent = \"vm1-000001.qcow2\"\n"
	"vmfsd.delta2.fileName = \"vm1-000003.qcow2\"\n"
	"vmfsd.delta2.parent = \"vm1-000001.qcow2\"\n"
	"vmfsd.numDisks = \"1\"\n"
	"vmfsd.disk0.node = \"scsi0:0\"\n"
	"vmfsd.disk0.current = \"vm1-000002.qcow2\"\n";

static struct vmsd *parse_ok(const char *t)
{
	struct vmsd *s = calloc(1, sizeof(*s));
	struct vm_err err = {{0}};
	int rc = vmsd_parse(t, strlen(t), "vm1.vmsd", s, &err);

	cr_assert_eq(rc, 0, "parse failed: %s", err.msg);
	return s;
}

Test(vmsd, round_trip)
{
	struct vmsd *s = parse_ok(good);
	char *out = vmsd_format(s);

	cr_assert_eq(s->nsnap, 2);
	cr_assert_str_eq(s->snap[0].name, "before \"upgrade\"");
	cr_assert_eq(s->snap[1].parent, 1);
	cr_assert_str_eq(s->snap[1].memory, "vm1-Snapshot2.vmsn");
	cr_assert_eq(s->ndelta, 3);
	cr_assert_str_eq(out, good);
	free(out);
	free(s);
}

Test(vmsd, chain_and_gc)
{
	struct vmsd *s = parse_ok(good);
	char chain[8][VM_NAME_MAX + 1], gone[8][VM_NAME_MAX + 1];
	struct vm_err err;
	size_t n;

	cr_assert_str_eq(vmsd_top(s, "scsi0:0", "vm1-flat.vmdk"), "vm1-000002.qcow2");
	cr_assert_str_eq(vmsd_top(s, "scsi0:1", "other-flat.vmdk"), "other-flat.vmdk");
	cr_assert_eq(vmsd_chain(s, "scsi0:0", "vm1-000002.qcow2", "vm1-flat.vmdk", chain, 8, &n, &err), 0);
	cr_assert_eq(n, 2);
	cr_assert_str_eq(chain[0], "vm1-000002.qcow2");
	cr_assert_str_eq(chain[1], "vm1-000001.qcow2");
	/* a chain that does not end at this disk's extent */
	cr_assert_eq(vmsd_chain(s, "scsi0:0", "vm1-000002.qcow2", "x-flat.vmdk", chain, 8, &n, &err),
		     -EINVAL);
	cr_assert_eq(vmsd_children(s, "vm1-000001.qcow2", NULL), 2);
	/* 000003 stands on a frozen file but nothing needs it */
	vmsd_gc(s, gone, 8, &n);
	cr_assert_eq(n, 1);
	cr_assert_str_eq(gone[0], "vm1-000003.qcow2");
	cr_assert_eq(s->ndelta, 2);
	free(s);
}

static void refused(const char *t, const char *needle)
{
	struct vmsd *s = calloc(1, sizeof(*s));
	struct vm_err err = {{0}};
	int rc = vmsd_parse(t, strlen(t), "vm1.vmsd", s, &err);

	cr_assert_lt(rc, 0, "accepted: %s", t);
	cr_assert(strstr(err.msg, needle), "message '%s' lacks '%s'", err.msg, needle);
	free(s);
}

Test(vmsd, hostile)
{
	refused("vmfsd.delta0.fileName = \"../x.qcow2\"\n", "'..'");
	refused("vmfsd.delta0.fileName = \"/etc/passwd.qcow2\"\n", "absolute");
	refused("vmfsd.delta0.fileName = \"a,b.qcow2\"\n", "not allowed");
	refused("vmfsd.delta0.fileName = \"a.raw\"\nvmfsd.delta0.parent = \"b\"\n", ".qcow2");
	refused("vmfsd.delta0.fileName = \"a.qcow2\"\nvmfsd.delta0.parent = \"vm1.vmx\"\n", "not a disk");
	refused("vmfsd.delta0.fileName = \"a.qcow2\"\nvmfsd.delta0.parent = \"a.qcow2\"\n", "own parent");
	refused("vmfsd.delta0.fileName = \"a.qcow2\"\n", "lacks");
	refused("vmfsd.delta0.fileName = \"a.qcow2\"\nvmfsd.delta0.parent = \"b.qcow2\"\n"
		"vmfsd.delta1.fileName = \"b.qcow2\"\nvmfsd.delta1.parent = \"a.qcow2\"\n", "loop");
	refused("snapshot.lastUID = \"1\"\nsnapshot0.uid = \"1\"\nsnapshot0.parent = \"1\"\n"
		"snapshot0.displayName = \"a\"\nsnapshot0.disk0.node = \"scsi0:0\"\n"
		"snapshot0.disk0.fileName = \"f\"\n", "loop");
	refused("snapshot.lastUID = \"1\"\nsnapshot0.uid = \"5\"\nsnapshot0.displayName = \"a\"\n"
		"snapshot0.disk0.node = \"scsi0:0\"\nsnapshot0.disk0.fileName = \"f\"\n", "lastUID");
	refused("snapshot.current = \"3\"\n", "no snapshot");
	refused("snapshot99.uid = \"1\"\n", "more than");
	refused("snapshot0.disk0.node = \"-drive x\"\n", "disk key");
	refused("snapshot0.state = \"weird\"\n", "creating or deleting");
	refused("qemu.args = \"-monitor stdio\"\n", "unknown key");
	refused("snapshot.lastUID = \"99999999999\"\n", "not a number");
	refused(".encoding = \"latin1\"\n", "UTF-8");
}

Test(vmsd, qemu_chain)
{
	struct vm_config cfg = {0};
	struct vm_launch l = {.cfg = &cfg, .qemu = "qemu-system-x86_64", .accel = VM_ACCEL_TCG,
			      .aio = "io_uring", .qmp_path = "/q", .serial_path = "/s", .pidfile = "/p",
			      .kernel_fd = -1, .initrd_fd = -1, .log_fd = -1};
	struct strv argv = {0};
	struct vm_err err;
	char nn[20], *line = NULL;

	cfg.vcpus = 1;
	cfg.mem_mib = 64;
	cfg.ndisks = 1;
	snprintf(cfg.disks[0].key, sizeof(cfg.disks[0].key), "scsi0:0");
	snprintf(cfg.disks[0].file, sizeof(cfg.disks[0].file), "vm1.vmdk");
	l.disk_fd[0] = 5;
	l.disk_size[0] = 1 << 20;
	l.chain_len[0] = 2;
	l.chain_fd[0][0] = 7;
	l.chain_fd[0][1] = 6;
	l.chain_name[0][0] = "vm1-000002.qcow2";
	l.chain_name[0][1] = "vm1-000001.qcow2";
	l.chain_name[0][2] = "vm1-flat.vmdk";
	cr_assert_eq(vm_qemu_argv(&l, &argv, &err), 0, "%s", err.msg);
	for (size_t i = 0; i + 1 < argv.n; i++)
		if (!strcmp(argv.v[i], "-blockdev"))
			line = argv.v[i + 1];
	cr_assert_not_null(line);
	json_t *top = json_loads(line, 0, NULL), *mid, *base;

	cr_assert_not_null(top);
	vmsd_node_name("vm1-000002.qcow2", nn);
	cr_assert_str_eq(json_string_value(json_object_get(top, "node-name")), nn);
	cr_assert_str_eq(json_string_value(json_object_get(top, "driver")), "qcow2");
	cr_assert_str_eq(json_string_value(json_object_get(json_object_get(top, "file"), "filename")),
			 "/proc/self/fd/7");
	mid = json_object_get(top, "backing");
	cr_assert_str_eq(json_string_value(json_object_get(mid, "driver")), "qcow2");
	cr_assert_str_eq(json_string_value(json_object_get(json_object_get(mid, "file"), "filename")),
			 "/proc/self/fd/6");
	base = json_object_get(mid, "backing");
	cr_assert_str_eq(json_string_value(json_object_get(base, "driver")), "raw");
	cr_assert_str_eq(json_string_value(json_object_get(json_object_get(base, "file"), "filename")),
			 "/proc/self/fd/5");
	cr_assert_eq(json_integer_value(json_object_get(base, "size")), 1 << 20);
	/* the device attaches to the top of the chain */
	int found = 0;

	for (size_t i = 0; i < argv.n; i++)
		found |= strstr(argv.v[i], "virtio-blk-pci,drive=") && strstr(argv.v[i], nn);
	cr_assert(found);
	json_decref(top);
	strv_free(&argv);
}
