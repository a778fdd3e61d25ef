/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The VM model of vmfsd (libvmfs-vm): a VM is a folder on a datastore with
 * <vm>.vmx (VMware "key = value" syntax, a documented subset, see
 * docs/vm.md), one VMDK descriptor per disk (createType "vmfs", one VMFS
 * extent) and its flat extent, and <vm>.log (the serial console log).
 * Everything read from the datastore is untrusted (a shared disk: any host,
 * or anyone with write access to the folder, may have put it there): the
 * parsers bound every size, reject control characters, and confine every
 * file name to the VM folder.  This header also has the QMP client, the
 * QEMU command line builder and the lock record of a running VM.  Library
 * code never prints: functions return 0 or a negative errno and put a
 * human message (naming the file, line and key) in a struct vm_err.
 */
#ifndef VMFSD_VM_H
#define VMFSD_VM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>

/* Error details for the user: "<file>:<line>: key 'x': what is wrong". */
struct vm_err {
	char msg[512];
};

int vm_errf(struct vm_err *err, int rc, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* ------------------------------------------------------------ limits */
#define VMX_MAX_FILE (256 * 1024)  /* a real .vmx is a few KiB */
#define VMX_MAX_LINE 4096
#define VMX_MAX_KEY 64
#define VMX_MAX_VALUE 1024
#define VM_NAME_MAX 200            /* file names: leaves room for "-flat.vmdk" */
#define VM_MAX_DISKS 16
#define VM_MAX_NICS 4
#define VM_MAX_VCPUS 255           /* QEMU's pc/q35 limit without x2apic/IR */
#define VM_MIN_MEM_MIB 16
/* VM monitoring bounds (docs/vm.md "VM monitoring"): restarts 0 (detect and
 * report only) to 100; a window from a minute to 7 days (vSphere's longest
 * preset reset period, "Low"); a hang timeout from 5 s (two heartbeat
 * rounds of 2 s plus slack) to an hour */
#define VM_HA_MAX_RESTARTS_MIN 0
#define VM_HA_MAX_RESTARTS_MAX 100
#define VM_HA_WINDOW_MIN 60
#define VM_HA_WINDOW_MAX (7 * 86400)
#define VM_HA_HANG_MIN 5
#define VM_HA_HANG_MAX 3600

/* ------------------------------------------------------------ .vmx file */
struct vmx_kv {
	char *key;      /* as written (case kept); lookups ignore case like VMware */
	char *value;    /* unquoted, |XX escapes decoded */
	int line;
};

struct vmx_file {
	struct vmx_kv *kv;
	size_t n, cap;
};

/* Parses .vmx text (untrusted).  `what` names the file in messages. */
int vmx_parse(const char *text, size_t len, const char *what, struct vmx_file *out,
	      struct vm_err *err);
const struct vmx_kv *vmx_find(const struct vmx_file *f, const char *key);
int vmx_set(struct vmx_file *f, const char *key, const char *value);
/* Serializes in VMware syntax (quotes and '|' escaped as |22 and |7C). */
char *vmx_format(const struct vmx_file *f);
void vmx_free(struct vmx_file *f);

/* ------------------------------------------------------------ VM model */
enum vm_accel { VM_ACCEL_AUTO = 0, VM_ACCEL_KVM, VM_ACCEL_TCG };
const char *vm_accel_name(enum vm_accel a);
int vm_accel_parse(const char *s, enum vm_accel *out);

struct vm_disk {
	char key[16];            /* "scsi0:0", "ide1:0": the .vmx device key */
	char file[VM_NAME_MAX + 1];
	bool cdrom;              /* an ISO image, read-only */
};

struct vm_nic {
	int index;                   /* ethernetN */
	char model[16];              /* QEMU device: virtio-net-pci, e1000, vmxnet3 */
	char conn[16];               /* "nat" (QEMU user networking), "bridged", "none" */
	char bridge[16];             /* networkName of a bridged NIC */
	char mac[18];                /* "" = QEMU picks one */
};

/* vmfsd.ha.restartPriority: the order HA restarts a dead host's VMs in;
 * disabled = not protected.  Zero is the default (medium). */
enum vm_ha_priority { VM_HA_MEDIUM = 0, VM_HA_DISABLED, VM_HA_LOW, VM_HA_HIGH };
const char *vm_ha_priority_name(enum vm_ha_priority p);
int vm_ha_priority_parse(const char *s, enum vm_ha_priority *out);
/* 3 high ... 1 low, 0 disabled: restart order */
int vm_ha_priority_rank(enum vm_ha_priority p);

struct vm_config {
	char vmx_name[VM_NAME_MAX + 1];   /* "<vm>.vmx" */
	char name[VM_NAME_MAX + 1];       /* "<vm>": file name stem, names the .log/.vmss */
	char display_name[VMX_MAX_VALUE + 1];
	char guest_os[65];
	unsigned vcpus;
	unsigned mem_mib;
	struct vm_disk disks[VM_MAX_DISKS];
	size_t ndisks;
	struct vm_nic nics[VM_MAX_NICS];
	size_t nnics;
	char kernel[VM_NAME_MAX + 1];     /* vmfsd.kernel: direct boot, "" = firmware boot */
	char initrd[VM_NAME_MAX + 1];
	char append[VMX_MAX_VALUE + 1];
	enum vm_accel accel;
	enum vm_ha_priority ha_priority;  /* vmfsd.ha.restartPriority (docs/ha.md) */
	/* VM monitoring (docs/vm.md "VM monitoring"); -1: the agent's default */
	int ha_monitoring;                /* vmfsd.ha.vmMonitoring: 0 disabled, 1 enabled */
	int ha_max_restarts;              /* vmfsd.ha.maxRestarts */
	int ha_restart_window;            /* vmfsd.ha.restartWindow, seconds */
	int ha_hang_timeout;              /* vmfsd.ha.hangTimeout, seconds */
};

/* Checks a file name from untrusted input: one component, in the VM
 * folder.  `key`/`line` only label the message. */
int vm_name_check(const char *name, const char *key, int line, const char *what,
		  struct vm_err *err);

/* Builds the model from a parsed .vmx; refuses unknown keys and values out
 * of range.  vmx_name is the .vmx file's own name. */
int vm_config_from_vmx(const struct vmx_file *f, const char *vmx_name, struct vm_config *cfg,
		       struct vm_err *err);

/* Reads dirfd/name (O_NOFOLLOW, a regular file, at most max bytes) into a
 * NUL-terminated malloc'd buffer. */
int vm_read_file(int dirfd, const char *name, size_t max, char **out, size_t *len);

/* Loads and validates <folder>/<vmx_name> (dirfd = the VM folder). */
int vm_config_load(int dirfd, const char *vmx_name, struct vm_config *cfg, struct vm_err *err);

/* Finds the single *.vmx of a folder; -ENOENT / -EEXIST (several). */
int vm_find_vmx(int dirfd, char *name, size_t size);

/* ------------------------------------------------------------ VMDK descriptor */
struct vmdk_desc {
	uint64_t sectors;                    /* 512-byte sectors of the extent */
	char extent[VM_NAME_MAX + 1];        /* flat extent file name */
	char adapter[16];                    /* ddb.adapterType */
	bool thin;                           /* ddb.thinProvisioned = "1" */
};

int vmdk_parse(const char *text, size_t len, const char *what, struct vmdk_desc *d,
	       struct vm_err *err);
/* Writes a descriptor that QEMU's vmdk driver and VMware both read. */
char *vmdk_format(const struct vmdk_desc *d);
int vmdk_load(int dirfd, const char *name, struct vmdk_desc *d, struct vm_err *err);

/* ------------------------------------------------------------ snapshots (.vmsd) */
/* <vm>.vmsd: the snapshot tree and the delta chains (docs/vm.md
 * "Snapshots").  A delta is a qcow2 file in the VM folder over its parent
 * (another delta or the disk's flat extent); QEMU is always given the
 * chain explicitly, never the backing name inside a qcow2 header.  The
 * file is untrusted like the .vmx: bounded, names confined to the folder,
 * every reference checked. */
#define VMSD_MAX_SNAPS 32          /* VMware's supported maximum per chain */
#define VMSD_MAX_DELTAS 128        /* delta files of all disks together */
#define VMSD_NAME_MAX 128          /* a snapshot's display name */
/* descriptors power-on may hand QEMU: disks and their deltas, kernel,
 * initrd, serial log, lock record */
#define VM_MAX_FILES (VM_MAX_DISKS + VMSD_MAX_DELTAS + 4)

enum vmsd_state { VMSD_OK = 0, VMSD_CREATING, VMSD_DELETING };

struct vmsd_ref {
	char node[16];                   /* the disk's .vmx device key, "scsi0:0" */
	char file[VM_NAME_MAX + 1];      /* a delta (.qcow2) or the flat extent */
};

struct vmsd_delta {
	char file[VM_NAME_MAX + 1];      /* "<disk>-000001.qcow2" */
	char parent[VM_NAME_MAX + 1];    /* its backing: a delta or the flat extent */
};

struct vmsd_snap {
	unsigned uid, parent;            /* parent 0: a root */
	char name[VMSD_NAME_MAX + 1];
	char desc[VMX_MAX_VALUE + 1];
	int64_t created;                 /* Unix seconds */
	char memory[VM_NAME_MAX + 1];    /* the saved running state, "" none */
	enum vmsd_state state;
	size_t ndisks;
	struct vmsd_ref disk[VM_MAX_DISKS];   /* each disk's file frozen by it */
};

struct vmsd {
	unsigned last_uid, last_delta, current;   /* current: uid the VM runs from, 0 none */
	size_t nsnap, ndelta, ncur;
	struct vmsd_snap snap[VMSD_MAX_SNAPS];
	struct vmsd_delta delta[VMSD_MAX_DELTAS];
	struct vmsd_ref cur[VM_MAX_DISKS];        /* each disk's active (top) file */
};

/* Parses .vmsd text (untrusted): bounds, names, references and cycles. */
int vmsd_parse(const char *text, size_t len, const char *what, struct vmsd *s,
	       struct vm_err *err);
char *vmsd_format(const struct vmsd *s);
/* Loads <vm>.vmsd of the folder; a missing file is an empty tree. */
int vmsd_load(int dirfd, const char *name, struct vmsd *s, struct vm_err *err);
/* Writes it atomically: a temporary file, fsync, rename, fsync of the
 * folder (DIR_PATH; NULL skips that). */
int vmsd_save(int dirfd, const char *dir_path, const char *name, const struct vmsd *s);
struct vmsd_snap *vmsd_find(struct vmsd *s, const char *name_or_uid);
struct vmsd_delta *vmsd_delta_find(struct vmsd *s, const char *file);
/* the active file of disk NODE: its top delta, or BASE (the flat extent) */
const char *vmsd_top(const struct vmsd *s, const char *node, const char *base);
/* Disk NODE's chain from file TOP down to BASE: out[0] = TOP ... the last
 * delta above BASE (BASE itself not included); *n = 0 when TOP is BASE.
 * -EINVAL + message when the chain does not end at BASE. */
int vmsd_chain(const struct vmsd *s, const char *node, const char *top, const char *base,
	       char out[][VM_NAME_MAX + 1], size_t max, size_t *n, struct vm_err *err);
/* how many deltas have FILE as their parent */
size_t vmsd_children(const struct vmsd *s, const char *file, const struct vmsd_delta **first);
/* Drops the deltas nothing needs any more (no snapshot freezes them, no
 * disk runs on them, no needed delta stands on them); their names go to
 * GONE (up to max; *n counted). */
void vmsd_gc(struct vmsd *s, char gone[][VM_NAME_MAX + 1], size_t max, size_t *n);
/* QEMU node name of a chain file (hash of its name: stable across hosts) */
void vmsd_node_name(const char *file, char out[20]);

/* ------------------------------------------------------------ host limits */
struct vm_host_res {
	unsigned cpus;          /* online CPUs */
	uint64_t mem_mib;       /* MemTotal */
};
int vm_host_resources(struct vm_host_res *r);
/* -E2BIG with a message when the VM asks for more than the host has. */
int vm_check_resources(unsigned vcpus, unsigned mem_mib, const struct vm_host_res *r,
		       struct vm_err *err);
/* true when /dev/kvm opens and answers KVM_GET_API_VERSION == 12 */
bool vm_kvm_usable(void);
/* true when this host is itself a virtual machine (CPUID hypervisor bit) */
bool vm_nested(void);
/* auto -> KVM when usable and not nested, else TCG; others unchanged */
enum vm_accel vm_accel_resolve(enum vm_accel want);

/* ------------------------------------------------------------ QMP */
struct qmp {
	int fd;
	char *buf;
	size_t len, cap;
	int timeout_ms;
};

/* Connects to a QMP unix socket, reads the greeting, negotiates. */
int qmp_open(struct qmp *q, const char *path, int timeout_ms, struct vm_err *err);
/* Executes cmd with args (stolen, may be NULL); *ret gets the "return"
 * value (new reference) when ret != NULL.  -EIO + message on a QMP error. */
int qmp_exec(struct qmp *q, const char *cmd, json_t *args, json_t **ret, struct vm_err *err);
/* Same, passing fd with SCM_RIGHTS along with the command (for getfd). */
int qmp_exec_fd(struct qmp *q, const char *cmd, json_t *args, int fd, json_t **ret,
		struct vm_err *err);
void qmp_close(struct qmp *q);

/* ------------------------------------------------------------ QEMU command line */
struct vm_launch {
	const struct vm_config *cfg;
	const char *qemu;            /* qemu-system-x86_64 binary */
	enum vm_accel accel;         /* resolved: KVM or TCG */
	const char *aio;             /* "io_uring", "native" or "threads" */
	const char *qmp_path;
	const char *serial_path;
	const char *pidfile;
	/* files the launcher opened itself (O_NOFOLLOW in the VM folder) and
	 * hands QEMU as /proc/self/fd/N, so a symlink swapped in after the
	 * checks can never redirect QEMU elsewhere: */
	int disk_fd[VM_MAX_DISKS];   /* flat extents (O_RDWR) or ISOs (O_RDONLY) */
	uint64_t disk_size[VM_MAX_DISKS];
	/* a disk with snapshots: its deltas, top first, over disk_fd (the
	 * flat extent); names give the nodes their names (vmsd_node_name) */
	size_t chain_len[VM_MAX_DISKS];
	int chain_fd[VM_MAX_DISKS][VMSD_MAX_SNAPS + 1];
	const char *chain_name[VM_MAX_DISKS][VMSD_MAX_SNAPS + 2];   /* deltas, then the extent */
	int kernel_fd, initrd_fd, log_fd;   /* -1 when absent */
	bool incoming;               /* -incoming defer -S: resume from a .vmss */
	bool migrate_in;             /* live migration's destination: disks
				      * auto-read-only until activation */
};

struct strv {
	char **v;
	size_t n, cap;
};
int strv_add(struct strv *s, const char *str);
int strv_addf(struct strv *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void strv_free(struct strv *s);

/* Builds the argv (no shell ever sees it). */
int vm_qemu_argv(const struct vm_launch *l, struct strv *argv, struct vm_err *err);

/* ------------------------------------------------------------ lock record */
/* <vm>.vmx.lck in the VM folder: who runs the VM.  Created with O_EXCL. */
struct vm_lockrec {
	char host[256];
	pid_t agent_pid;
	pid_t qemu_pid;
	int64_t started;       /* Unix time */
	char boot_id[40];      /* /proc/sys/kernel/random/boot_id of the host */
};

int vm_lockrec_name(const struct vm_config *cfg, char *buf, size_t size);
/* -EEXIST if a record exists (then *cur holds it, if it parses). */
int vm_lockrec_create(int dirfd, const char *name, const struct vm_lockrec *r,
		      struct vm_lockrec *cur);
int vm_lockrec_update(int dirfd, const char *name, const struct vm_lockrec *r);
int vm_lockrec_read(int dirfd, const char *name, struct vm_lockrec *r);
int vm_lockrec_remove(int dirfd, const char *name);
/* The record as a held lock (docs/vm.md "One host at a time"): opens NAME
 * O_RDWR|O_CREAT (on a vmfsd cluster mount that takes the file's
 * exclusive on-disk lock: -EBUSY when another live host holds it) and
 * flock()s it (excludes the other processes of this kernel on the same
 * mount: a QEMU that inherited the descriptor).  0: *FD is locked, *CUR
 * holds the previous record (host "" when there was none), which nobody
 * runs any more: the lock was free.  -EAGAIN: a local process holds it,
 * *CUR says whose record it is.  -EBUSY: another host holds it (*CUR
 * empty: its content cannot be read from here). */
int vm_lockrec_lock(int dirfd, const char *name, int *fd, struct vm_lockrec *cur);
/* Writes R over the record open on FD, truncates, fsyncs. */
int vm_lockrec_write(int fd, const struct vm_lockrec *r);
/* Empties NAME (the file stays: "nobody runs the VM") only if it is
 * HOST's record and nobody holds its lock: 0 released (or absent),
 * -EAGAIN/-EBUSY held, -EPERM another host's. */
int vm_lockrec_release(int dirfd, const char *name, const char *host);
/* Is NAME's lock held (by a process of this kernel or by another host)?
 * 1 yes, 0 no, negative errno when NAME cannot be opened. *R gets the
 * record when readable. */
int vm_lockrec_probe(int dirfd, const char *name, struct vm_lockrec *r);
int vm_boot_id(char *buf, size_t size);

/* ------------------------------------------------------------ helpers */
/* true if pid runs (not a zombie) */
bool vm_pid_alive(pid_t pid);
/* Parses "10G", "512M", "1T", "4096" (bytes) into bytes. */
int vm_parse_size(const char *s, uint64_t *out);
/* FNV-1a 64 of a string, as 16 hex digits: names per-VM state folders. */
void vm_hash_name(const char *s, char out[17]);
/* 0 when FD is an ISO 9660 or UDF image (a CD-ROM's file); NAME for messages */
int vm_iso_check(int fd, const char *name, struct vm_err *err);

#endif
