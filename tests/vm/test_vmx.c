// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Unit tests (Criterion) of the VM model library: the .vmx parser and the
 * model built from it, the VMDK descriptor writer and parser, the QEMU
 * command line builder, and small helpers.  No root, no QEMU: these run in
 * the default suite everywhere, while the Python tests of tests/vm boot real guests.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "vm/vm.h"

static const char *good =
	"# a comment\n"
	".encoding = \"UTF-8\"\n"
	"config.version = \"8\"\n"
	"displayName = \"web |22front|22\"\n"
	"numvcpus = \"2\"\n"
	"memSize = \"1024\"\n"
	"guestOS = \"debian12-64\"\n"
	"scsi0.present = \"TRUE\"\n"
	"scsi0:0.present = \"TRUE\"\n"
	"scsi0:0.fileName = \"web.vmdk\"\n"
	"scsi0:1.fileName = \"data.vmdk\"\n"
	"scsi0:2.present = \"FALSE\"\n"
	"scsi0:2.fileName = \"gone.vmdk\"\n"
	"ide1:0.present = \"TRUE\"\n"
	"ide1:0.deviceType = \"cdrom-image\"\n"
	"ide1:0.fileName = \"install.iso\"\n"
	"ethernet0.present = \"TRUE\"\n"
	"ethernet0.virtualDev = \"e1000\"\n"
	"ethernet0.address = \"00:50:56:01:02:03\"\n"
	"ethernet1.virtualDev = \"e1000\"\n"     /* not present: no NIC */
	"vmfsd.kernel = \"vmlinuz\"\n"
	"vmfsd.append = \"console=ttyS0 root=/dev/vda\"\n"
	"vmfsd.accel = \"tcg\"\n"
	"vmfsd.ha.restartPriority = \"High\"\n";

static int load(const char *text, struct vm_config *cfg, struct vm_err *err)
{
	struct vmx_file f;
	int rc = vmx_parse(text, strlen(text), "t.vmx", &f, err);

	if (rc)
		return rc;
	rc = vm_config_from_vmx(&f, "t.vmx", cfg, err);
	vmx_free(&f);
	return rc;
}

Test(vmx, good_file)
{
	struct vm_config c;
	struct vm_err e;

	cr_assert_eq(load(good, &c, &e), 0, "%s", e.msg);
	cr_expect_str_eq(c.name, "t");
	cr_expect_str_eq(c.display_name, "web \"front\"");
	cr_expect_eq(c.vcpus, 2);
	cr_expect_eq(c.mem_mib, 1024);
	cr_expect_str_eq(c.guest_os, "debian12-64");
	cr_assert_eq(c.ndisks, 3);
	cr_expect_str_eq(c.disks[0].file, "web.vmdk");
	cr_expect_str_eq(c.disks[1].file, "data.vmdk");
	cr_expect(c.disks[2].cdrom);
	cr_expect_str_eq(c.disks[2].file, "install.iso");
	cr_assert_eq(c.nnics, 1);
	cr_expect_str_eq(c.nics[0].model, "e1000");
	cr_expect_str_eq(c.nics[0].mac, "00:50:56:01:02:03");
	cr_expect_str_eq(c.kernel, "vmlinuz");
	cr_expect_str_eq(c.append, "console=ttyS0 root=/dev/vda");
	cr_expect_eq(c.accel, VM_ACCEL_TCG);
	cr_expect_eq(c.ha_priority, VM_HA_HIGH);
}

static void refused(const char *extra, const char *needle)
{
	char text[8192];
	struct vm_config c;
	struct vm_err e = {{0}};

	snprintf(text, sizeof(text), "numvcpus = \"1\"\n%s", extra);
	cr_expect_neq(load(text, &c, &e), 0, "accepted: %s", extra);
	cr_expect(strstr(e.msg, needle) != NULL, "message '%s' lacks '%s'", e.msg, needle);
}

Test(vmx, hostile)
{
	refused("scsi0:0.fileName = \"../x.vmdk\"\n", "t.vmx:2: key 'scsi0:0.fileName'");
	refused("scsi0:0.fileName = \"/etc/passwd\"\n", "absolute path");
	refused("scsi0:0.fileName = \"a/b.vmdk\"\n", "subfolder");
	refused("scsi0:0.fileName = \"..\"\n", "'..'");
	refused("scsi0:0.fileName = \"x|0A.vmdk\"\n", "control character");
	refused("scsi0:0.fileName = \"$(id).vmdk\"\n", "character '$'");
	refused("scsi0:0.fileName = \"a,b.vmdk\"\n", "character ','");
	refused("scsi0:0.fileName = \"disk.img\"\n", "must be a .vmdk");
	refused("numvcpus = \"2\"\n", "set twice (first on line 1)");
	refused("memSize = 512\n", "double quotes");
	refused("memSize = \"512\" trailing\n", "unexpected text");
	refused("memSize = \"-1\"\n", "not a number");
	refused("memSize = \"8\"\n", "less than");
	refused("numvcpus2 = \"1\"\nqemu.args = \"-S\"\n", "unknown key 'numvcpus2'");
	refused("vmfsd.extra = \"-S\"\n", "unknown key 'vmfsd.extra'");
	refused("ethernet0.present = \"TRUE\"\nethernet0.script = \"/x\"\n", "unknown key 'ethernet0.script'");
	refused("ethernet0.present = \"TRUE\"\nethernet0.address = \"01:00:00:00:00:01\"\n", "multicast");
	refused("ethernet0.present = \"TRUE\"\nethernet0.connectionType = \"bridged\"\n", "no networkName");
	refused("vmfsd.accel = \"hvf\"\n", "not auto, kvm or tcg");
	refused("vmfsd.ha.restartPriority = \"urgent\"\n", "not disabled, low, medium or high");
	refused("vmfsd.initrd = \"initrd.img\"\n", "without vmfsd.kernel");
	refused("bad key = \"1\"\n", "expected '='");
	refused("k = \"|zz\"\n", "hex escape");
	refused("k = \"open\n", "missing closing quote");
}

Test(vmx, bounds)
{
	char *big = malloc(VMX_MAX_FILE + 100);
	struct vmx_file f;
	struct vm_err e;

	memset(big, '#', VMX_MAX_FILE + 99);
	big[VMX_MAX_FILE + 99] = '\0';
	cr_expect_eq(vmx_parse(big, strlen(big), "t.vmx", &f, &e), -EFBIG);
	memset(big, 'x', 5000);
	strcpy(big + 5000, " = \"1\"\n");
	cr_expect_neq(vmx_parse(big, strlen(big), "t.vmx", &f, &e), 0);
	strcpy(big, "annotation = \"");
	memset(big + 14, 'v', VMX_MAX_VALUE + 1);
	strcpy(big + 14 + VMX_MAX_VALUE + 1, "\"\n");
	cr_expect_eq(vmx_parse(big, strlen(big), "t.vmx", &f, &e), -E2BIG);
	cr_expect(strstr(e.msg, "longer than") != NULL, "%s", e.msg);
	cr_expect_neq(vmx_parse("a = \"1\"\0b = \"2\"\n", 16, "t.vmx", &f, &e), 0);
	free(big);
}

/* VM monitoring keys (docs/vm.md "VM monitoring"): values and bounds */
Test(vmx, ha_monitoring_keys)
{
	static const char base[] = "vmfsd.kernel = \"vmlinuz\"\n";
	char buf[512];
	struct vm_config c;
	struct vm_err e;

	cr_assert_eq(load(base, &c, &e), 0, "%s", e.msg);
	cr_expect_eq(c.ha_monitoring, -1);
	cr_expect_eq(c.ha_max_restarts, -1);
	cr_expect_eq(c.ha_restart_window, -1);
	cr_expect_eq(c.ha_hang_timeout, -1);
	snprintf(buf, sizeof(buf), "%svmfsd.ha.vmMonitoring = \"Disabled\"\nvmfsd.ha.maxRestarts = \"0\"\n"
		 "vmfsd.ha.restartWindow = \"86400\"\nVMFSD.HA.HANGTIMEOUT = \"5\"\n", base);
	cr_assert_eq(load(buf, &c, &e), 0, "%s", e.msg);
	cr_expect_eq(c.ha_monitoring, 0);
	cr_expect_eq(c.ha_max_restarts, 0);
	cr_expect_eq(c.ha_restart_window, 86400);
	cr_expect_eq(c.ha_hang_timeout, 5);
	static const char *const bad[] = {
		"vmfsd.ha.vmMonitoring = \"on\"\n", "vmfsd.ha.maxRestarts = \"101\"\n",
		"vmfsd.ha.maxRestarts = \"-1\"\n", "vmfsd.ha.restartWindow = \"59\"\n",
		"vmfsd.ha.restartWindow = \"604801\"\n", "vmfsd.ha.hangTimeout = \"4\"\n",
		"vmfsd.ha.hangTimeout = \"3601\"\n", "vmfsd.ha.hangTimeout = \"5s\"\n",
		"vmfsd.ha.maxRestarts = \"3\"\nvmfsd.ha.maxRestarts = \"4\"\n", NULL,
	};
	for (int i = 0; bad[i]; i++) {
		snprintf(buf, sizeof(buf), "%s%s", base, bad[i]);
		cr_expect_neq(load(buf, &c, &e), 0, "accepted: %s", bad[i]);
		cr_expect(strstr(e.msg, "vmfsd.ha.") != NULL || strstr(e.msg, "VMFSD") != NULL ||
			  strstr(e.msg, "duplicate") != NULL, "%s", e.msg);
	}
}

Test(vmx, format_roundtrip)
{
	struct vmx_file f = {0}, g;
	struct vm_err e;
	char *s;

	vmx_set(&f, "displayName", "quote \" pipe | end");
	vmx_set(&f, "numvcpus", "4");
	s = vmx_format(&f);
	cr_assert_not_null(s);
	cr_assert_eq(vmx_parse(s, strlen(s), "t.vmx", &g, &e), 0, "%s", e.msg);
	cr_expect_str_eq(vmx_find(&g, "DISPLAYNAME")->value, "quote \" pipe | end");
	cr_expect_str_eq(vmx_find(&g, "numvcpus")->value, "4");
	free(s);
	vmx_free(&f);
	vmx_free(&g);
}

Test(vmdk, roundtrip)
{
	struct vmdk_desc d = {.sectors = 2097152, .thin = true}, p;
	struct vm_err e;
	char *s;

	strcpy(d.extent, "vm1-flat.vmdk");
	strcpy(d.adapter, "lsilogic");
	s = vmdk_format(&d);
	cr_assert_not_null(s);
	cr_expect(strstr(s, "createType=\"vmfs\"") != NULL);
	cr_expect(strstr(s, "RW 2097152 VMFS \"vm1-flat.vmdk\"") != NULL);
	cr_expect(strstr(s, "ddb.geometry.cylinders = \"130\"") != NULL, "%s", s);
	cr_assert_eq(vmdk_parse(s, strlen(s), "vm1.vmdk", &p, &e), 0, "%s", e.msg);
	cr_expect_eq(p.sectors, 2097152);
	cr_expect_str_eq(p.extent, "vm1-flat.vmdk");
	cr_expect(p.thin);
	free(s);
}

static void vmdk_refused(const char *text, const char *needle)
{
	struct vmdk_desc d;
	struct vm_err e = {{0}};

	cr_expect_neq(vmdk_parse(text, strlen(text), "d.vmdk", &d, &e), 0, "accepted: %s", text);
	cr_expect(strstr(e.msg, needle) != NULL, "message '%s' lacks '%s'", e.msg, needle);
}

Test(vmdk, hostile)
{
	vmdk_refused("createType=\"vmfs\"\nRW 8 VMFS \"../x\"\n", "'..'");
	vmdk_refused("createType=\"vmfs\"\nRW 8 VMFS \"/dev/sda\"\n", "absolute path");
	vmdk_refused("createType=\"vmfs\"\nRW 8 VMFS \"a\"\nRW 8 VMFS \"b\"\n", "more than one extent");
	vmdk_refused("createType=\"vmfs\"\nRW 8 SPARSE \"a\"\n", "only VMFS");
	vmdk_refused("createType=\"vmfs\"\nRW 8 VMFS \"a\" 2048\n", "offsets");
	vmdk_refused("createType=\"vmfs\"\nRW 0 VMFS \"a\"\n", "out of range");
	vmdk_refused("createType=\"vmfsSparse\"\nRW 8 VMFS \"a\"\n", "only \"vmfs\"");
	vmdk_refused("createType=\"vmfs\"\nparentCID=12345678\nRW 8 VMFS \"a\"\n", "snapshots");
	vmdk_refused("createType=\"vmfs\"\n", "no extent");
	vmdk_refused("RW 8 VMFS \"a\"\n", "no createType");
	vmdk_refused("KDMV\x01\x00\x00\x00", "control character");
}

Test(qemu, argv_has_no_vmx_text)
{
	struct vm_config c;
	struct vm_err e;
	struct vm_launch l = {.cfg = &c, .qemu = "qemu-system-x86_64", .accel = VM_ACCEL_TCG,
			      .aio = "io_uring", .qmp_path = "/run/s/qmp.sock",
			      .serial_path = "/run/s/serial.sock", .pidfile = "/run/s/qemu.pid",
			      .kernel_fd = 6, .initrd_fd = -1, .log_fd = 7};
	struct strv a = {0};
	bool blockdev = false, kernel = false, accel = false, pvpanic = false, panic_pause = false;

	cr_assert_eq(load(good, &c, &e), 0, "%s", e.msg);
	c.ndisks = 1;     /* web.vmdk only */
	l.disk_fd[0] = 3;
	l.disk_size[0] = 1 << 30;
	cr_assert_eq(vm_qemu_argv(&l, &a, &e), 0, "%s", e.msg);
	for (size_t i = 0; i < a.n; i++) {
		cr_expect(strstr(a.v[i], "web") == NULL, "display/file name leaked: %s", a.v[i]);
		cr_expect(strstr(a.v[i], ".vmdk") == NULL, "file name leaked: %s", a.v[i]);
		if (strstr(a.v[i], "\"filename\":\"/proc/self/fd/3\"")) {
			blockdev = true;
			cr_expect(strstr(a.v[i], "\"aio\":\"io_uring\"") != NULL, "%s", a.v[i]);
			cr_expect(strstr(a.v[i], "\"direct\":true") != NULL, "%s", a.v[i]);
			cr_expect(strstr(a.v[i], "\"discard\":\"unmap\"") != NULL, "%s", a.v[i]);
			cr_expect(strstr(a.v[i], "\"driver\":\"raw\"") != NULL, "%s", a.v[i]);
		}
		kernel |= !strcmp(a.v[i], "/proc/self/fd/6");
		accel |= !strcmp(a.v[i], "q35,accel=tcg");
		/* a guest panic must pause QEMU for the agent's monitor */
		pvpanic |= i > 0 && !strcmp(a.v[i - 1], "-device") && !strcmp(a.v[i], "pvpanic");
		panic_pause |= i > 0 && !strcmp(a.v[i - 1], "-action") && !strcmp(a.v[i], "panic=pause");
	}
	cr_expect(blockdev && kernel && accel);
	cr_expect(pvpanic && panic_pause, "no pvpanic device or -action panic=pause");
	strv_free(&a);
	l.accel = VM_ACCEL_AUTO;
	cr_expect_neq(vm_qemu_argv(&l, &a, &e), 0, "unresolved accelerator accepted");
}

Test(helpers, sizes)
{
	uint64_t v;

	cr_expect_eq(vm_parse_size("10G", &v), 0);
	cr_expect_eq(v, 10ULL << 30);
	cr_expect_eq(vm_parse_size("512MiB", &v), 0);
	cr_expect_eq(v, 512ULL << 20);
	cr_expect_eq(vm_parse_size("4096", &v), 0);
	cr_expect_eq(v, 4096);
	cr_expect_neq(vm_parse_size("-1G", &v), 0);
	cr_expect_neq(vm_parse_size("1X", &v), 0);
	cr_expect_neq(vm_parse_size("99999999999T", &v), 0);
}

Test(helpers, resources)
{
	struct vm_host_res r = {.cpus = 2, .mem_mib = 4096};
	struct vm_err e;

	cr_expect_eq(vm_check_resources(2, 4096, &r, &e), 0);
	cr_expect_eq(vm_check_resources(3, 1024, &r, &e), -E2BIG);
	cr_expect(strstr(e.msg, "this host has 2 CPUs") != NULL, "%s", e.msg);
	cr_expect_eq(vm_check_resources(1, 4097, &r, &e), -E2BIG);
	cr_expect(strstr(e.msg, "4096 MiB") != NULL, "%s", e.msg);
}
