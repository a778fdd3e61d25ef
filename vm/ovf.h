/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * OVF and OVA packages (DMTF DSP0243) in libvmfs-vm: the envelope's parser
 * and writer (ovf.c, libxml2) and the package around it (ova.c: the ustar
 * archive of an .ova, the .mf manifest and its SHA digests).  An OVF
 * package comes from anywhere, so everything here treats it as hostile:
 * the XML is parsed with network access and external entities off and
 * any DOCTYPE refused (no XXE, no entity expansion), sizes, counts and
 * depth are bounded, every href must name a file inside the package, tar
 * members must be regular files with plain names inside the archive, and
 * capacities are bounded by what a vmfsd volume holds.  The model is only
 * what a vmfsd VM can be (docs/vm.md "OVF and OVA": the mapping tables);
 * what the parser meets and cannot map is listed in ovf_pkg.notes, not
 * silently dropped.  Library code: returns 0 or a negative errno with a
 * message naming the element (file:line) in a struct vm_err.
 */
#ifndef VMFSD_VM_OVF_H
#define VMFSD_VM_OVF_H

#include <stdbool.h>
#include <stdint.h>

#include "vm.h"

#define OVF_MAX_XML (4u << 20)          /* descriptors are 5..100 KiB */
#define OVF_MAX_DEPTH 32                /* Envelope/VirtualSystem/VirtualHardwareSection/Item/rasd:x is 5 */
#define OVF_MAX_FILES 32
#define OVF_MAX_ITEMS 256
#define OVF_MAX_CDROMS 4
#define OVF_MAX_EXTRA 16
#define OVF_MAX_CTRL 16
#define OVF_ID_MAX 64
/* 64 TiB: the largest file a vmfsd volume holds (docs/format.md) */
#define OVF_MAX_CAPACITY (64ULL << 40)
#define OVF_MAX_MEM_MIB (16u << 20)     /* 16 TiB, the bound `vmfsctl create` applies */

#define OVF_FMT_STREAM "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"

struct ovf_file {
	char id[OVF_ID_MAX];
	char href[VM_NAME_MAX + 1];
	int64_t size;                   /* ovf:size, -1 when absent */
};

struct ovf_disk {
	char id[OVF_ID_MAX];
	int file;                       /* index in files[], -1: a blank disk */
	uint64_t capacity;              /* bytes */
	char format[128];
};

/* a disk or a CD-ROM attached to a controller */
struct ovf_dev {
	int index;                      /* disks[] (disk) or files[] (CD-ROM, -1: empty drive) */
	char bus[8];                    /* "scsi", "ide", "sata", "nvme" */
	int ctrl, unit;
};

struct ovf_nic {
	char model[16];                 /* .vmx virtualDev: vmxnet3, e1000, e1000e, virtio */
	char network[128];              /* rasd:Connection */
	char mac[18];
};

struct ovf_kv {
	char key[VMX_MAX_KEY + 1];
	char value[VMX_MAX_VALUE + 1];
};

struct ovf_pkg {
	int version;                    /* 1 or 2: the envelope's namespace */
	char name[VM_NAME_MAX + 1];     /* VirtualSystem/Name, else its ovf:id */
	char guest_os[65];              /* vmw:osType, vbox:OSType or "other-64" */
	unsigned vcpus;
	unsigned mem_mib;
	struct ovf_file files[OVF_MAX_FILES];
	size_t nfiles;
	struct ovf_disk disks[VM_MAX_DISKS];
	size_t ndisks;
	struct ovf_dev vdisks[VM_MAX_DISKS];
	size_t nvdisks;
	struct ovf_dev cdroms[OVF_MAX_CDROMS];
	size_t ncdroms;
	struct {
		char bus[8];
		int index;
		char model[24];         /* scsiN.virtualDev: lsilogic, pvscsi, ... */
	} ctrls[OVF_MAX_CTRL];
	size_t nctrls;
	struct ovf_nic nics[VM_MAX_NICS];
	size_t nnics;
	/* vmw:ExtraConfig keys that mean something here (vmfsd.kernel,
	 * vmfsd.initrd, vmfsd.append, vmfsd.accel) */
	struct ovf_kv extra[OVF_MAX_EXTRA];
	size_t nextra;
	char notes[4096];               /* "; "-separated: what was not mapped */
};

/* Parses an OVF descriptor (untrusted); WHAT names it in messages. */
int ovf_parse(const char *text, size_t len, const char *what, struct ovf_pkg *p,
	      struct vm_err *err);

/* "byte * 2^30", "byte*10^9", "MegaBytes", "GB", "" (= bytes): the
 * multiplier in bytes; -EINVAL when it is none of those. */
int ovf_units(const char *s, uint64_t *mult);

/* What `vmfsctl export` describes: one VM, its disks already converted to
 * streamOptimized files, its CD images and extra files already named. */
struct ovf_out_disk {
	char file[VM_NAME_MAX + 1];     /* the .vmdk in the package */
	uint64_t file_size;             /* its bytes */
	uint64_t capacity;              /* the virtual disk, bytes */
	uint64_t populated;             /* data bytes of the source */
	char bus[8];
	int ctrl, unit;
};

struct ovf_out {
	const struct vm_config *cfg;
	const struct vmx_file *vmx;     /* for scsiN.virtualDev, ethernetN names */
	struct ovf_out_disk disks[VM_MAX_DISKS];
	size_t ndisks;
	/* other files in the package (CD images, the direct-boot kernel and
	 * initrd): their names are those of the VM folder */
	struct {
		char file[VM_NAME_MAX + 1];
		uint64_t size;
	} files[OVF_MAX_FILES];
	size_t nfiles;
};

/* The envelope (OVF 1.x, DSP0243 1.1 element order); NULL on ENOMEM. */
char *ovf_format(const struct ovf_out *o);

/* ------------------------------------------------------------ ova.c */
enum ovf_digest { OVF_SHA1 = 0, OVF_SHA256, OVF_SHA512 };
#define OVF_HEX_MAX 129

/* Digest of LEN bytes of FD at OFF (pread), as lowercase hex.  CB (may be
 * NULL) sees the bytes hashed so far. */
int ovf_digest_fd(int fd, uint64_t off, uint64_t len, enum ovf_digest alg, char *hex,
		  void (*cb)(void *arg, uint64_t done), void *arg);
void ovf_digest_mem(const void *buf, size_t len, enum ovf_digest alg, char *hex);

#define OVF_MAX_MF (64 * 1024)
struct ovf_mf_entry {
	char file[VM_NAME_MAX + 1];
	enum ovf_digest alg;
	char hex[OVF_HEX_MAX];
};
struct ovf_mf {
	struct ovf_mf_entry e[OVF_MAX_FILES + 2];
	size_t n;
};
/* Parses a manifest: lines "SHA256(file)= hex" (SHA1 and SHA512 too). */
int ovf_mf_parse(const char *text, size_t len, const char *what, struct ovf_mf *mf,
		 struct vm_err *err);

/* A member of an OVA (a regular file): data at OFF, SIZE bytes. */
struct ova_member {
	char name[VM_NAME_MAX + 1];
	uint64_t off, size;
};
#define OVA_MAX_MEMBERS (OVF_MAX_FILES + 4)
/* Lists the members of the ustar archive on FD (untrusted): regular files
 * with one-component names only, inside the file, no duplicates. */
int ova_index(int fd, const char *what, struct ova_member *m, size_t max, size_t *n,
	      struct vm_err *err);
const struct ova_member *ova_find(const struct ova_member *m, size_t n, const char *name);
/* Appends a ustar header for NAME of SIZE bytes at the current offset of
 * FD; the caller writes the data and then ova_pad(). */
int ova_write_header(int fd, const char *name, uint64_t size);
int ova_pad(int fd, uint64_t size);
/* A member from memory: header, LEN bytes, padding. */
int ova_write_member(int fd, const char *name, const void *buf, size_t len);
/* The end of the archive: two zero blocks. */
int ova_finish(int fd);

#endif
