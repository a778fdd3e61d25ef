// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Unit tests (Criterion) of the sparse copier (vm/copy.c) on files in a
 * temporary folder of the host filesystem (tmpfs or ext4: both have
 * SEEK_DATA/SEEK_HOLE): data copied byte for byte, holes and zero runs not
 * allocated on a thin target, a thick target fully allocated, the data
 * count, progress reaching the total, and ENOSPC-free errors reported.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vm/copy.h"

#define MiB (1u << 20)
#define SIZE (64u * MiB)

static char dir[64];

static void setup(void)
{
	snprintf(dir, sizeof(dir), "/var/tmp/vmfsd-copy-XXXXXX");
	cr_assert(mkdtemp(dir));
}

static void teardown(void)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	cr_assert_eq(system(cmd), 0);
}

static int mk(const char *name, int flags)
{
	char p[128];

	snprintf(p, sizeof(p), "%s/%s", dir, name);
	return open(p, flags | O_CREAT | O_CLOEXEC, 0600);
}

/* a source: 1 MiB of 0xAB at 3 MiB, 4 MiB of zeros written at 20 MiB,
 * 2 MiB of 0xCD at 40 MiB; the rest holes */
static int source(void)
{
	int fd = mk("src", O_RDWR);
	char *b = malloc(4 * MiB);

	cr_assert(fd >= 0 && b);
	cr_assert_eq(ftruncate(fd, SIZE), 0);
	memset(b, 0xab, MiB);
	cr_assert_eq(pwrite(fd, b, MiB, 3 * MiB), (ssize_t)MiB);
	memset(b, 0, 4 * MiB);
	cr_assert_eq(pwrite(fd, b, 4 * MiB, 20 * MiB), (ssize_t)(4 * MiB));
	memset(b, 0xcd, 2 * MiB);
	cr_assert_eq(pwrite(fd, b, 2 * MiB, 40 * MiB), (ssize_t)(2 * MiB));
	free(b);
	fsync(fd);
	return fd;
}

static uint64_t last_done, last_total;

static void cb(void *arg, uint64_t done, uint64_t total)
{
	(void)arg;
	cr_assert(done <= total);
	last_done = done;
	last_total = total;
}

static void same(int a, int b)
{
	char *x = malloc(MiB), *y = malloc(MiB);

	for (off_t off = 0; off < SIZE; off += MiB) {
		cr_assert_eq(pread(a, x, MiB, off), (ssize_t)MiB);
		cr_assert_eq(pread(b, y, MiB, off), (ssize_t)MiB);
		cr_assert(!memcmp(x, y, MiB), "differs at %lld", (long long)off);
	}
	free(x);
	free(y);
}

TestSuite(copy, .init = setup, .fini = teardown);

Test(copy, thin_keeps_holes_and_skips_zeros)
{
	int in = source(), out = mk("thin", O_RDWR);
	uint64_t data;
	struct vm_err err;
	struct stat st;

	cr_assert_eq(vm_data_bytes(in, SIZE, &data), 0);
	cr_assert(data >= 7 * MiB && data < 16 * MiB, "data %llu", (unsigned long long)data);
	cr_assert_eq(vm_copy_sparse(in, out, SIZE, VM_PROV_THIN, cb, NULL, &err), 0, "%s", err.msg);
	same(in, out);
	cr_assert_eq(fstat(out, &st), 0);
	cr_assert_eq(st.st_size, SIZE);
	/* the 3 MiB of data, not the 4 MiB of zeros nor the holes */
	cr_assert((uint64_t)st.st_blocks * 512 <= 4 * MiB, "%lld allocated",
		  (long long)st.st_blocks * 512);
	cr_assert_eq(last_done, last_total);
	cr_assert_eq(last_total, data);
	close(in);
	close(out);
}

Test(copy, thick_is_allocated)
{
	int in = source(), out = mk("thick", O_RDWR);
	struct vm_err err;
	struct stat st;

	cr_assert_eq(vm_copy_sparse(in, out, SIZE, VM_PROV_THICK, NULL, NULL, &err), 0, "%s",
		     err.msg);
	same(in, out);
	cr_assert_eq(fstat(out, &st), 0);
	cr_assert((uint64_t)st.st_blocks * 512 >= SIZE);
	close(in);
	close(out);
}

Test(copy, eagerzeroed_counts_the_whole_size)
{
	int in = source(), out = mk("eager", O_RDWR);
	struct vm_err err;

	cr_assert_eq(vm_copy_sparse(in, out, SIZE, VM_PROV_EAGER, cb, NULL, &err), 0, "%s",
		     err.msg);
	same(in, out);
	cr_assert_eq(last_total, SIZE);
	close(in);
	close(out);
}

Test(copy, write_error_is_reported)
{
	int in = source(), out = mk("ro", O_RDONLY);
	struct vm_err err;
	int rc = vm_copy_sparse(in, out, SIZE, VM_PROV_THIN, NULL, NULL, &err);

	cr_assert(rc < 0);
	cr_assert(strlen(err.msg) > 0);
	close(in);
	close(out);
}

Test(copy, provisioning_names)
{
	enum vm_prov p;

	cr_assert_eq(vm_prov_parse("eagerzeroed", &p), 0);
	cr_assert_eq(p, VM_PROV_EAGER);
	cr_assert_str_eq(vm_prov_name(VM_PROV_THICK), "thick");
	cr_assert_eq(vm_prov_parse("fat", &p), -EINVAL);
}
