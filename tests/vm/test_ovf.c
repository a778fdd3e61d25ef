// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Unit tests (Criterion) of the OVF package code of libvmfs-vm (vm/ovf.c,
 * vm/ova.c): the envelope parser on good and hostile descriptors (XXE,
 * entity expansion, depth, size, hrefs, capacities, namespaces), the
 * writer read back by the parser, allocation units, manifests, and the
 * ustar reader on archives it wrote and on damaged ones.  No root, no
 * QEMU; tests/vm/test_ovf.py runs whole packages through the agent.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vm/ovf.h"

#define HEAD "<?xml version=\"1.0\"?>\n"
#define ENV1 "<Envelope xmlns=\"http://schemas.dmtf.org/ovf/envelope/1\" " \
	"xmlns:ovf=\"http://schemas.dmtf.org/ovf/envelope/1\" " \
	"xmlns:rasd=\"http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData\">\n"
#define REFS "<References><File ovf:id=\"f1\" ovf:href=\"d1.vmdk\" ovf:size=\"1024\"/></References>\n"
#define DISKS "<DiskSection><Info>x</Info><Disk ovf:diskId=\"vmdisk1\" ovf:fileRef=\"f1\" " \
	"ovf:capacity=\"4\" ovf:capacityAllocationUnits=\"byte * 2^30\" " \
	"ovf:format=\"" OVF_FMT_STREAM "\"/></DiskSection>\n"
#define HW "<VirtualSystem ovf:id=\"vm1\"><Info>x</Info><Name>web 1</Name>" \
	"<VirtualHardwareSection><Info>x</Info>" \
	"<Item><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>2</rasd:VirtualQuantity></Item>" \
	"<Item><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>1024</rasd:VirtualQuantity></Item>" \
	"<Item><rasd:Address>0</rasd:Address><rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceSubType>lsilogic</rasd:ResourceSubType><rasd:ResourceType>6</rasd:ResourceType></Item>" \
	"<Item><rasd:AddressOnParent>0</rasd:AddressOnParent><rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource><rasd:InstanceID>4</rasd:InstanceID><rasd:Parent>3</rasd:Parent><rasd:ResourceType>17</rasd:ResourceType></Item>" \
	"<Item><rasd:Connection>VM Network</rasd:Connection><rasd:InstanceID>5</rasd:InstanceID><rasd:ResourceSubType>E1000</rasd:ResourceSubType><rasd:ResourceType>10</rasd:ResourceType></Item>" \
	"</VirtualHardwareSection></VirtualSystem>\n"
#define GOOD HEAD ENV1 REFS DISKS HW "</Envelope>\n"

static int parse(const char *text, struct ovf_pkg *p, struct vm_err *err)
{
	return ovf_parse(text, strlen(text), "t.ovf", p, err);
}

/* TEXT with FROM replaced by TO (first occurrence); malloc'd */
static char *subst(const char *text, const char *from, const char *to)
{
	const char *at = strstr(text, from);
	char *out;

	cr_assert(at, "'%s' not in the template", from);
	cr_assert(asprintf(&out, "%.*s%s%s", (int)(at - text), text, to, at + strlen(from)) > 0);
	return out;
}

static void refused(const char *text, int want, const char *needle)
{
	struct ovf_pkg p;
	struct vm_err err = {{0}};
	int rc = parse(text, &p, &err);

	cr_expect_eq(rc, want, "rc %d, want %d (%s)", rc, want, err.msg);
	cr_expect(strstr(err.msg, needle), "message lacks '%s': %s", needle, err.msg);
}

Test(ovf, good)
{
	struct ovf_pkg p;
	struct vm_err err = {{0}};

	cr_assert_eq(parse(GOOD, &p, &err), 0, "%s", err.msg);
	cr_expect_eq(p.version, 1);
	cr_expect_str_eq(p.name, "web 1");
	cr_expect_eq(p.vcpus, 2);
	cr_expect_eq(p.mem_mib, 1024);
	cr_expect_eq(p.ndisks, 1);
	cr_expect_eq(p.disks[0].capacity, 4ULL << 30);
	cr_expect_eq(p.nvdisks, 1);
	cr_expect_str_eq(p.vdisks[0].bus, "scsi");
	cr_expect_eq(p.nnics, 1);
	cr_expect_str_eq(p.nics[0].model, "e1000");
	cr_expect_str_eq(p.nics[0].network, "VM Network");
}

Test(ovf, control_characters_scrubbed)
{
	/* XML 1.0 has no control characters but tab, LF and CR: a CR
	 * rewrites a terminal's line, a LF fakes one */
	char *t = subst(GOOD, "<Name>web 1</Name>", "<Name>web&#13;1</Name>");
	struct ovf_pkg p;
	struct vm_err err = {{0}};

	t = subst(t, "<rasd:ResourceType>10</rasd:ResourceType>",
		  "<rasd:ResourceType>35</rasd:ResourceType><rasd:ElementName>snd&#10;x&#9;y</rasd:ElementName>");
	cr_assert_eq(parse(t, &p, &err), 0, "%s", err.msg);
	cr_expect_str_eq(p.name, "web?1");
	cr_expect(strstr(p.notes, "snd?x?y"), "notes: %s", p.notes);
	free(t);
	t = subst(GOOD, "ovf:href=\"d1.vmdk\"", "ovf:href=\"../&#13;ok\"");
	cr_expect_lt(parse(t, &p, &err), 0);
	cr_expect(!strchr(err.msg, '\r'), "a CR in the message: %s", err.msg);
	free(t);
}

Test(ovf, deployment_options)
{
	/* ovftool's appliances: Items per configuration; the default wins */
	char *t = subst(GOOD, REFS, REFS "<DeploymentOptionSection><Info>x</Info>"
			"<Configuration ovf:id=\"small\"><Label>S</Label><Description>s</Description></Configuration>"
			"<Configuration ovf:default=\"true\" ovf:id=\"large\"><Label>L</Label><Description>l</Description></Configuration>"
			"</DeploymentOptionSection>\n");
	struct ovf_pkg p;
	struct vm_err err = {{0}};

	t = subst(t, "<Item><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>2</rasd:VirtualQuantity></Item>",
		  "<Item ovf:configuration=\"small\"><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>2</rasd:VirtualQuantity></Item>"
		  "<Item ovf:configuration=\"large huge\"><rasd:InstanceID>9</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>8</rasd:VirtualQuantity></Item>");
	cr_assert_eq(parse(t, &p, &err), 0, "%s", err.msg);
	cr_expect_eq(p.vcpus, 8);
	cr_expect_eq(p.mem_mib, 1024);
	cr_expect(strstr(p.notes, "deployment option 'large'"), "notes: %s", p.notes);
	free(t);
}

Test(ovf, ovf2_namespace)
{
	char *t = subst(GOOD, "xmlns=\"http://schemas.dmtf.org/ovf/envelope/1\"",
			"xmlns=\"http://schemas.dmtf.org/ovf/envelope/2\"");
	struct ovf_pkg p;
	struct vm_err err = {{0}};

	cr_expect_eq(parse(t, &p, &err), 0, "%s", err.msg);
	cr_expect_eq(p.version, 2);
	free(t);
	t = subst(GOOD, "xmlns=\"http://schemas.dmtf.org/ovf/envelope/1\"", "xmlns=\"urn:other\"");
	refused(t, -EINVAL, "Envelope namespace");
	free(t);
}

Test(ovf, xxe_and_bomb)
{
	char *t = subst(GOOD, HEAD, HEAD "<!DOCTYPE Envelope [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>\n");

	refused(t, -EPERM, "DOCTYPE");
	free(t);
	t = subst(GOOD, HEAD, HEAD "<!DOCTYPE Envelope [<!ENTITY a \"aaaa\"><!ENTITY b \"&a;&a;&a;&a;\">]>\n");
	refused(t, -EPERM, "DOCTYPE");
	free(t);
	/* an external DTD alone */
	t = subst(GOOD, HEAD, HEAD "<!DOCTYPE Envelope SYSTEM \"http://203.0.113.1/x.dtd\">\n");
	refused(t, -EPERM, "DOCTYPE");
	free(t);
}

Test(ovf, size_depth_nul)
{
	size_t big = OVF_MAX_XML + 1;
	char *t = malloc(big + 1), *deep;
	struct ovf_pkg p;
	struct vm_err err = {{0}};
	size_t n = 0;

	memset(t, ' ', big);
	t[big] = '\0';
	refused(t, -EFBIG, "larger than");
	free(t);
	cr_expect_eq(ovf_parse("<a>\0</a>", 8, "t.ovf", &p, &err), -EINVAL);
	deep = malloc(64 * 1024);
	n += (size_t)sprintf(deep + n, HEAD ENV1 "<VirtualSystem>");
	for (int i = 0; i < 40; i++)
		n += (size_t)sprintf(deep + n, "<x>");
	for (int i = 0; i < 40; i++)
		n += (size_t)sprintf(deep + n, "</x>");
	sprintf(deep + n, "</VirtualSystem></Envelope>");
	refused(deep, -E2BIG, "nested deeper");
	free(deep);
}

Test(ovf, hrefs)
{
	static const char *const bad[] = {"../d1.vmdk", "/etc/passwd", "sub/d1.vmdk", "..", ".hidden",
					  "http://203.0.113.1/d1.vmdk", "file:///etc/passwd"};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char to[128], *t;
		struct ovf_pkg p;
		struct vm_err err = {{0}};

		snprintf(to, sizeof(to), "ovf:href=\"%s\"", bad[i]);
		t = subst(GOOD, "ovf:href=\"d1.vmdk\"", to);
		cr_expect_lt(parse(t, &p, &err), 0, "href %s accepted", bad[i]);
		cr_expect(strstr(err.msg, "References/File"), "%s: %s", bad[i], err.msg);
		free(t);
	}
}

Test(ovf, capacities_and_units)
{
	char *t = subst(GOOD, "ovf:capacity=\"4\"", "ovf:capacity=\"65\" ");
	struct ovf_pkg p0;
	struct vm_err err0 = {{0}};

	t = subst(t, "byte * 2^30", "byte * 2^40");
	refused(t, -ERANGE, "out of range");
	free(t);
	t = subst(GOOD, "ovf:capacity=\"4\"", "ovf:capacity=\"0\"");
	refused(t, -ERANGE, "DiskSection/Disk vmdisk1");
	free(t);
	t = subst(GOOD, "ovf:capacity=\"4\"", "ovf:capacity=\"99999999999999999999999\"");
	refused(t, -EINVAL, "not a number");
	free(t);
	t = subst(GOOD, "ovf:capacity=\"4\"", "ovf:capacity=\"${disk.size}\"");
	refused(t, -ENOTSUP, "property");
	free(t);
	t = subst(GOOD, "byte * 2^30", "furlongs");
	refused(t, -EINVAL, "capacityAllocationUnits");
	free(t);
	t = subst(GOOD, OVF_FMT_STREAM, "http://www.vmware.com/specifications/vmdk.html#compressed");
	cr_expect_eq(parse(t, &p0, &err0), 0, "%s", err0.msg);
	free(t);
	t = subst(GOOD, OVF_FMT_STREAM, "http://www.vmware.com/interfaces/specifications/vmdk.html#monolithicFlat");
	refused(t, -ENOTSUP, "ovf:format");
	free(t);
	t = subst(GOOD, "ovf:size=\"1024\"", "ovf:size=\"1024\" ovf:compression=\"gzip\"");
	refused(t, -ENOTSUP, "compression");
	free(t);
	t = subst(GOOD, "<rasd:VirtualQuantity>2</rasd:VirtualQuantity>", "<rasd:VirtualQuantity>100000</rasd:VirtualQuantity>");
	refused(t, -ERANGE, "VirtualQuantity");
	free(t);
	t = subst(GOOD, "<rasd:VirtualQuantity>1024</rasd:VirtualQuantity>", "<rasd:VirtualQuantity>99999999999</rasd:VirtualQuantity>");
	refused(t, -ERANGE, "memory");
	free(t);

	uint64_t m;
	cr_expect_eq(ovf_units("byte * 2^30", &m), 0);
	cr_expect_eq(m, 1ULL << 30);
	cr_expect_eq(ovf_units("byte*10^9", &m), 0);
	cr_expect_eq(m, 1000000000ULL);
	cr_expect_eq(ovf_units("MegaBytes", &m), 0);
	cr_expect_eq(m, 1ULL << 20);
	cr_expect_eq(ovf_units("", &m), 0);
	cr_expect_eq(m, 1);
	cr_expect_eq(ovf_units("byte * 3^4", &m), -EINVAL);
	cr_expect_eq(ovf_units("byte * 2^99", &m), -EINVAL);
}

Test(ovf, structure)
{
	char *t = subst(GOOD, "<VirtualSystem ovf:id=\"vm1\">", "<VirtualSystemCollection><VirtualSystem ovf:id=\"vm1\">");

	t = subst(t, "</VirtualSystem>", "</VirtualSystem></VirtualSystemCollection>");
	refused(t, -ENOTSUP, "VirtualSystemCollection");
	free(t);
	t = subst(GOOD, "<rasd:ResourceType>3</rasd:ResourceType>", "<rasd:ResourceType>1</rasd:ResourceType>");
	refused(t, -EINVAL, "processor");
	free(t);
	t = subst(GOOD, "ovf:/disk/vmdisk1", "ovf:/disk/nope");
	refused(t, -EINVAL, "not in DiskSection");
	free(t);
	t = subst(GOOD, "<rasd:Parent>3</rasd:Parent>", "<rasd:Parent>42</rasd:Parent>");
	refused(t, -EINVAL, "rasd:Parent");
	free(t);
	t = subst(GOOD, "<Envelope", "<Envelope><broken");
	refused(t, -EINVAL, "not well-formed");
	free(t);
}

Test(ovf, writer_read_back)
{
	struct vm_config cfg = {0};
	struct ovf_out o = {.cfg = &cfg};
	struct vmx_file vmx = {0};
	struct ovf_pkg p;
	struct vm_err err = {{0}};
	char *text;

	strcpy(cfg.name, "a&b");
	strcpy(cfg.display_name, "A <b> \"c\"");
	strcpy(cfg.guest_os, "debian12-64");
	cfg.vcpus = 3;
	cfg.mem_mib = 768;
	cfg.ndisks = 3;
	strcpy(cfg.disks[0].key, "scsi0:0");
	strcpy(cfg.disks[0].file, "a.vmdk");
	strcpy(cfg.disks[1].key, "sata0:1");
	strcpy(cfg.disks[1].file, "b.vmdk");
	strcpy(cfg.disks[2].key, "ide1:0");
	strcpy(cfg.disks[2].file, "x.iso");
	cfg.disks[2].cdrom = true;
	cfg.nnics = 1;
	strcpy(cfg.nics[0].model, "e1000e");
	strcpy(cfg.nics[0].conn, "nat");
	vmx_set(&vmx, "ethernet0.virtualDev", "e1000e");
	vmx_set(&vmx, "vmfsd.kernel", "vmlinuz");
	o.vmx = &vmx;
	o.ndisks = 2;
	for (int i = 0; i < 2; i++) {
		snprintf(o.disks[i].file, sizeof(o.disks[i].file), "a-disk%d.vmdk", i + 1);
		o.disks[i].capacity = (uint64_t)(i + 1) << 30;
		o.disks[i].file_size = 4096;
	}
	o.nfiles = 1;
	strcpy(o.files[0].file, "x.iso");
	o.files[0].size = 2048;
	text = ovf_format(&o);
	cr_assert(text);
	cr_assert_eq(parse(text, &p, &err), 0, "%s\n%s", err.msg, text);
	cr_expect_str_eq(p.name, "A <b> \"c\"");
	cr_expect_eq(p.vcpus, 3);
	cr_expect_eq(p.mem_mib, 768);
	cr_expect_eq(p.nfiles, 3);
	cr_expect_eq(p.ndisks, 2);
	cr_expect_eq(p.disks[1].capacity, 2ULL << 30);
	cr_expect_eq(p.nvdisks, 2);
	cr_expect_str_eq(p.vdisks[1].bus, "sata");
	cr_expect_eq(p.vdisks[1].unit, 1);
	cr_expect_eq(p.ncdroms, 1);
	cr_expect_str_eq(p.cdroms[0].bus, "ide");
	cr_expect_eq(p.cdroms[0].ctrl, 1);
	cr_expect_str_eq(p.files[p.cdroms[0].index].href, "x.iso");
	cr_expect_str_eq(p.nics[0].model, "e1000e");
	cr_expect_str_eq(p.guest_os, "debian12-64");
	cr_expect_eq(p.notes[0], '\0', "notes: %s", p.notes);
	cr_expect_eq(p.nextra, 1);
	cr_expect_str_eq(p.extra[0].key, "vmfsd.kernel");
	cr_expect_str_eq(p.extra[0].value, "vmlinuz");
	vmx_free(&vmx);
	free(text);
}

Test(ova, manifest)
{
	struct ovf_mf mf;
	struct vm_err err = {{0}};
	char hex[OVF_HEX_MAX];
	const char *ok = "SHA256(a.ovf)= 2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824\n"
			 "SHA1 (b.vmdk) = AAF4C61DDCC5E8A2DABEDE0F3B482CD9AEA9434D\r\n";

	cr_assert_eq(ovf_mf_parse(ok, strlen(ok), "t.mf", &mf, &err), 0, "%s", err.msg);
	cr_expect_eq(mf.n, 2);
	cr_expect_eq(mf.e[1].alg, OVF_SHA1);
	cr_expect_str_eq(mf.e[1].file, "b.vmdk");
	cr_expect_str_eq(mf.e[1].hex, "aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d");
	ovf_digest_mem("hello", 5, OVF_SHA256, hex);
	cr_expect_str_eq(hex, mf.e[0].hex);
	ovf_digest_mem("hello", 5, OVF_SHA1, hex);
	cr_expect_str_eq(hex, mf.e[1].hex);
	cr_expect_eq(ovf_mf_parse("MD5(a)= 00\n", 11, "t.mf", &mf, &err), -ENOTSUP);
	cr_expect_eq(ovf_mf_parse("SHA256(a)= 00\n", 14, "t.mf", &mf, &err), -EINVAL);
	cr_expect_eq(ovf_mf_parse("garbage\n", 8, "t.mf", &mf, &err), -EINVAL);
}

static int tmpfile_fd(void)
{
	char p[] = "/tmp/ovf-unit-XXXXXX";
	int fd = mkstemp(p);

	cr_assert_geq(fd, 0);
	unlink(p);
	return fd;
}

Test(ova, write_and_index)
{
	int fd = tmpfile_fd();
	struct ova_member m[8];
	struct vm_err err = {{0}};
	size_t n;

	cr_assert_eq(ova_write_header(fd, "a.ovf", 5), 0);
	cr_assert_eq(write(fd, "hello", 5), 5);
	cr_assert_eq(ova_pad(fd, 5), 0);
	cr_assert_eq(ova_write_header(fd, "a.mf", 0), 0);
	cr_assert_eq(ova_finish(fd), 0);
	cr_assert_eq(ova_index(fd, "t.ova", m, 8, &n, &err), 0, "%s", err.msg);
	cr_expect_eq(n, 2);
	cr_expect_str_eq(m[0].name, "a.ovf");
	cr_expect_eq(m[0].off, 512);
	cr_expect_eq(m[0].size, 5);
	cr_expect_str_eq(m[1].name, "a.mf");
	/* truncated: the member's data cut */
	cr_assert_eq(ftruncate(fd, 512 + 3), 0);
	cr_expect_eq(ova_index(fd, "t.ova", m, 8, &n, &err), -EINVAL);
	cr_expect(strstr(err.msg, "truncated"), "%s", err.msg);
	close(fd);

	/* a path in a member name; a damaged checksum */
	fd = tmpfile_fd();
	cr_assert_eq(ova_write_header(fd, "x/../../a.ovf", 0), 0);
	cr_expect_eq(ova_index(fd, "t.ova", m, 8, &n, &err), -EPERM);
	cr_expect(strstr(err.msg, "plain file name"), "%s", err.msg);
	cr_assert_eq(pwrite(fd, "z", 1, 0), 1);
	cr_expect_eq(ova_index(fd, "t.ova", m, 8, &n, &err), -EINVAL);
	cr_expect(strstr(err.msg, "checksum"), "%s", err.msg);
	close(fd);

	/* a pax header naming and sizing the next member (as GNU tar and
	 * Python write for long names and 8 GiB and more) */
	fd = tmpfile_fd();
	{
		const char *rec = "32 path=a-rather-long-name.vmdk\n" "11 size=20\n" "11 mtime=1\n";
		unsigned char h[512];
		unsigned sum = 0;

		cr_assert_eq(ova_write_header(fd, "PaxHeaders/x", strlen(rec)), 0);
		cr_assert_eq(pread(fd, h, 512, 0), 512);
		h[156] = 'x';
		memset(h + 148, ' ', 8);
		for (int i = 0; i < 512; i++)
			sum += h[i];
		snprintf((char *)h + 148, 8, "%06o", sum);
		cr_assert_eq(pwrite(fd, h, 512, 0), 512);
		cr_assert_eq(write(fd, rec, strlen(rec)), (ssize_t)strlen(rec));
		cr_assert_eq(ova_pad(fd, strlen(rec)), 0);
		cr_assert_eq(ova_write_header(fd, "short", 5), 0);   /* the pax size wins: 20 */
		cr_assert_eq(write(fd, "01234567890123456789", 20), 20);
		cr_assert_eq(ova_pad(fd, 20), 0);
		cr_assert_eq(ova_index(fd, "t.ova", m, 8, &n, &err), 0, "%s", err.msg);
		cr_expect_eq(n, 1);
		cr_expect_str_eq(m[0].name, "a-rather-long-name.vmdk");
		cr_expect_eq(m[0].size, 20);
		cr_assert_eq(ftruncate(fd, 3 * 512 + 10), 0);   /* the pax size is checked too */
		cr_expect_eq(ova_index(fd, "t.ova", m, 8, &n, &err), -EINVAL);
		cr_expect(strstr(err.msg, "truncated"), "%s", err.msg);
	}
	close(fd);

	/* 8 GiB and more: base-256 size, read back (a sparse file) */
	fd = tmpfile_fd();
	cr_assert_eq(ova_write_header(fd, "big.vmdk", 9ULL << 30), 0);
	cr_assert_eq(ftruncate(fd, 512 + (9LL << 30)), 0);
	cr_assert_eq(ova_index(fd, "t.ova", m, 8, &n, &err), 0, "%s", err.msg);
	cr_expect_eq(m[0].size, 9ULL << 30);
	close(fd);
}
