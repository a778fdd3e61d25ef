// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * What the VM tools need to know about the host and the processes on it:
 * CPU and memory limits (a VM never asks for more than the machine has),
 * whether KVM works, whether a pid still runs, and the lock record file
 * `<vm>.vmx.lck` that says which host runs a VM.  The record is a few
 * "key=value" lines created with O_EXCL in the VM folder, so two agents
 * racing to power the same VM on cannot both create it; it complements the
 * cluster filesystem's own exclusive lock on the flat extents (open O_RDWR
 * answers EBUSY on another live host) with something a person can read:
 * the host name, the agent and QEMU pids, and when the VM started.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <linux/kvm.h>

#include "vm.h"

int vm_host_resources(struct vm_host_res *r)
{
	FILE *f;
	char line[256];
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	r->cpus = n > 0 ? (unsigned)n : 1;
	r->mem_mib = 0;
	f = fopen("/proc/meminfo", "re");
	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		unsigned long long kib;

		if (sscanf(line, "MemTotal: %llu kB", &kib) == 1) {
			r->mem_mib = kib / 1024;
			break;
		}
	}
	fclose(f);
	return r->mem_mib ? 0 : -EIO;
}

int vm_check_resources(unsigned vcpus, unsigned mem_mib, const struct vm_host_res *r,
		       struct vm_err *err)
{
	if (vcpus > r->cpus)
		return vm_errf(err, -E2BIG, "the VM asks for %u vCPUs but this host has %u CPUs", vcpus,
			       r->cpus);
	if (mem_mib > r->mem_mib)
		return vm_errf(err, -E2BIG, "the VM asks for %u MiB of memory but this host has %" PRIu64
			       " MiB", mem_mib, r->mem_mib);
	return 0;
}

bool vm_kvm_usable(void)
{
	int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	bool ok;

	if (fd < 0)
		return false;
	/* 12 is the only stable KVM API version (linux/kvm.h, since 2.6.22) */
	ok = ioctl(fd, KVM_GET_API_VERSION, 0) == 12;
	close(fd);
	return ok;
}

bool vm_nested(void)
{
	FILE *f = fopen("/proc/cpuinfo", "re");
	char line[4096];
	bool nested = false;

	if (!f)
		return false;
	while (!nested && fgets(line, sizeof(line), f))
		if (!strncmp(line, "flags", 5) && strstr(line, " hypervisor"))
			nested = true;
	fclose(f);
	return nested;
}

enum vm_accel vm_accel_resolve(enum vm_accel want)
{
	if (want != VM_ACCEL_AUTO)
		return want;
	/* docs/vm.md, "Quick start": nested KVM (this host is itself a VM: CPUID's
	 * hypervisor bit) hung every Linux guest tried on the project's
	 * machines while a trivial real-mode probe ran fine, so no cheap probe
	 * tells; auto picks KVM on bare metal only, and an explicit "kvm"
	 * still gets it anywhere */
	return vm_kvm_usable() && !vm_nested() ? VM_ACCEL_KVM : VM_ACCEL_TCG;
}

bool vm_pid_alive(pid_t pid)
{
	char path[64], buf[512], *p;
	int fd;
	ssize_t n;

	if (pid <= 0)
		return false;
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return false;
	buf[n] = '\0';
	p = strrchr(buf, ')');
	/* a zombie has exited; only its parent has not reaped it yet */
	return p && p[1] == ' ' && p[2] != 'Z' && p[2] != 'X';
}

int vm_parse_size(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;
	int shift = 0;

	if (!isdigit((unsigned char)*s))
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno)
		return -ERANGE;
	switch (toupper((unsigned char)*end)) {
	case '\0':
		break;
	case 'K':
		shift = 10;
		break;
	case 'M':
		shift = 20;
		break;
	case 'G':
		shift = 30;
		break;
	case 'T':
		shift = 40;
		break;
	default:
		return -EINVAL;
	}
	if (*end) {
		end++;
		if (*end == 'i' || *end == 'I')
			end++;
		if (*end == 'B' || *end == 'b')
			end++;
		if (*end)
			return -EINVAL;
	}
	if (shift && v > (UINT64_MAX >> shift))
		return -ERANGE;
	*out = (uint64_t)v << shift;
	return 0;
}

void vm_hash_name(const char *s, char out[17])
{
	/* FNV-1a 64: offset basis and prime from the FNV specification */
	uint64_t h = 0xcbf29ce484222325ULL;

	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 0x100000001b3ULL;
	}
	snprintf(out, 17, "%016" PRIx64, h);
}

int vm_boot_id(char *buf, size_t size)
{
	int fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = read(fd, buf, size - 1);
	close(fd);
	if (n <= 0)
		return -EIO;
	buf[n] = '\0';
	buf[strcspn(buf, "\n")] = '\0';
	return 0;
}

/* ------------------------------------------------------------ lock record */

int vm_lockrec_name(const struct vm_config *cfg, char *buf, size_t size)
{
	if ((size_t)snprintf(buf, size, "%s.lck", cfg->vmx_name) >= size)
		return -ENAMETOOLONG;
	return 0;
}

static int lockrec_format(const struct vm_lockrec *r, char *buf, size_t size)
{
	int n = snprintf(buf, size,
			 "# vmfsd VM lock record: the host below runs this VM\n"
			 "host=%s\nagent_pid=%d\nqemu_pid=%d\nstarted=%" PRId64 "\nboot_id=%s\n",
			 r->host, (int)r->agent_pid, (int)r->qemu_pid, r->started, r->boot_id);

	return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : n;
}

static int lockrec_parse(const char *text, struct vm_lockrec *r)
{
	const char *p = text;

	memset(r, 0, sizeof(*r));
	while (*p) {
		const char *nl = strchr(p, '\n');
		size_t l = nl ? (size_t)(nl - p) : strlen(p);
		char line[320];

		if (l < sizeof(line)) {
			memcpy(line, p, l);
			line[l] = '\0';
			/* the host name is shown to people: keep it printable */
			for (char *c = line; *c; c++)
				if ((unsigned char)*c < 0x20 || *c == 0x7f)
					*c = '?';
			if (!strncmp(line, "host=", 5))
				snprintf(r->host, sizeof(r->host), "%s", line + 5);
			else if (!strncmp(line, "agent_pid=", 10))
				r->agent_pid = atoi(line + 10);
			else if (!strncmp(line, "qemu_pid=", 9))
				r->qemu_pid = atoi(line + 9);
			else if (!strncmp(line, "started=", 8))
				r->started = strtoll(line + 8, NULL, 10);
			else if (!strncmp(line, "boot_id=", 8))
				snprintf(r->boot_id, sizeof(r->boot_id), "%s", line + 8);
		}
		p += l;
		if (*p)
			p++;
	}
	return r->host[0] ? 0 : -EINVAL;
}

int vm_lockrec_read(int dirfd, const char *name, struct vm_lockrec *r)
{
	char *text;
	size_t len;
	int rc = vm_read_file(dirfd, name, 4096, &text, &len);

	if (rc)
		return rc;
	rc = lockrec_parse(text, r);
	free(text);
	return rc;
}

static int write_all_at(int fd, const char *buf, size_t len)
{
	off_t off = 0;

	while (len) {
		ssize_t n = pwrite(fd, buf, len, off);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		buf += n;
		off += n;
		len -= (size_t)n;
	}
	return 0;
}

int vm_lockrec_create(int dirfd, const char *name, const struct vm_lockrec *r,
		      struct vm_lockrec *cur)
{
	char buf[1024];
	int n = lockrec_format(r, buf, sizeof(buf)), fd, rc;

	if (n < 0)
		return n;
	fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
	if (fd < 0) {
		rc = -errno;
		if (rc == -EEXIST && cur && vm_lockrec_read(dirfd, name, cur))
			memset(cur, 0, sizeof(*cur));
		return rc;
	}
	rc = write_all_at(fd, buf, (size_t)n);
	if (!rc && fsync(fd))
		rc = -errno;
	close(fd);
	if (rc)
		unlinkat(dirfd, name, 0);
	return rc;
}

int vm_lockrec_update(int dirfd, const char *name, const struct vm_lockrec *r)
{
	char buf[1024];
	int n = lockrec_format(r, buf, sizeof(buf)), fd, rc;

	if (n < 0)
		return n;
	fd = openat(dirfd, name, O_WRONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	rc = write_all_at(fd, buf, (size_t)n);
	if (!rc && ftruncate(fd, n))
		rc = -errno;
	if (!rc && fsync(fd))
		rc = -errno;
	close(fd);
	return rc;
}

int vm_lockrec_remove(int dirfd, const char *name)
{
	if (unlinkat(dirfd, name, 0) && errno != ENOENT)
		return -errno;
	return 0;
}

static int lockrec_read_fd(int fd, struct vm_lockrec *r)
{
	char buf[4096];
	ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);

	memset(r, 0, sizeof(*r));
	if (n < 0)
		return -errno;
	buf[n] = '\0';
	return n ? lockrec_parse(buf, r) : 0;
}

static int lockrec_lock(int dirfd, const char *name, int oflags, int *fdp, struct vm_lockrec *cur)
{
	int fd, rc;

	memset(cur, 0, sizeof(*cur));
	*fdp = -1;
	fd = openat(dirfd, name, O_RDWR | oflags | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY, 0644);
	if (fd < 0)
		return -errno;
	if (flock(fd, LOCK_EX | LOCK_NB)) {
		rc = errno == EWOULDBLOCK ? -EAGAIN : -errno;
		(void)lockrec_read_fd(fd, cur);
		close(fd);
		return rc;
	}
	rc = lockrec_read_fd(fd, cur);
	if (rc == -EINVAL)
		rc = 0;         /* an unreadable record nobody holds: ours now */
	if (rc) {
		close(fd);
		return rc;
	}
	*fdp = fd;
	return 0;
}

int vm_lockrec_lock(int dirfd, const char *name, int *fdp, struct vm_lockrec *cur)
{
	return lockrec_lock(dirfd, name, O_CREAT, fdp, cur);
}

int vm_lockrec_write(int fd, const struct vm_lockrec *r)
{
	char buf[1024];
	int n = lockrec_format(r, buf, sizeof(buf)), rc;

	if (n < 0)
		return n;
	rc = write_all_at(fd, buf, (size_t)n);
	if (!rc && ftruncate(fd, n))
		rc = -errno;
	if (!rc && fsync(fd))
		rc = -errno;
	return rc;
}

int vm_lockrec_release(int dirfd, const char *name, const char *host)
{
	struct vm_lockrec cur;
	int fd, rc = lockrec_lock(dirfd, name, 0, &fd, &cur);

	/* A QEMU that just exited can still hold it for a moment: its main
	 * thread shows as a zombie while the other threads still close the
	 * shared descriptor table.  2 s bounds that. */
	for (int i = 0; rc == -EAGAIN && i < 20; i++) {
		usleep(100 * 1000);
		rc = lockrec_lock(dirfd, name, 0, &fd, &cur);
	}
	if (rc == -ENOENT)
		return 0;
	if (rc)
		return rc;
	/* emptied, not unlinked: the file (and its inode) stays, so no
	 * host ever re-creates a record of the same name right after
	 * another host deleted it (vmfsd then granted an open with the
	 * on-disk lock free: docs/ha.md §7) */
	if (cur.host[0] && strcmp(cur.host, host))
		rc = -EPERM;
	else if (ftruncate(fd, 0) || fsync(fd))
		rc = -errno;
	close(fd);
	return rc;
}

int vm_lockrec_probe(int dirfd, const char *name, struct vm_lockrec *r)
{
	int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY), rc;

	memset(r, 0, sizeof(*r));
	if (fd < 0)
		return errno == EBUSY ? 1 : -errno;
	(void)lockrec_read_fd(fd, r);
	rc = flock(fd, LOCK_SH | LOCK_NB) ? (errno == EWOULDBLOCK ? 1 : -errno) : 0;
	close(fd);
	return rc;
}
