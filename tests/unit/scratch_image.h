// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * The scratch image of the unit tests that run mkfs.vmfsd: the binary from
 * $MKFS_VMFSD (set by meson; the test skips without it), a fresh folder
 * under $VMFSD_TEST_DIR or /var/tmp holding "t.img", which must support
 * O_DIRECT (tmpfs before Linux 6.6 does not): the test skips only when that
 * is truly unavailable.  Included by one test file each (static state).
 */
#ifndef VMFSD_TESTS_SCRATCH_IMAGE_H
#define VMFSD_TESTS_SCRATCH_IMAGE_H

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char dir[256];
static char img[320];
static const char *mkfs;

/* Criterion .init: makes the folder (named after TAG) and checks O_DIRECT. */
static void scratch_image_setup(const char *tag)
{
	const char *base = getenv("VMFSD_TEST_DIR");
	int fd;

	mkfs = getenv("MKFS_VMFSD");
	if (!mkfs)
		cr_skip_test("MKFS_VMFSD not set (run through meson test)");
	snprintf(dir, sizeof(dir), "%s/vmfsd-%s-XXXXXX", base ? base : "/var/tmp", tag);
	cr_assert_not_null(mkdtemp(dir), "mkdtemp %s: %s", dir, strerror(errno));
	snprintf(img, sizeof(img), "%s/t.img", dir);
	fd = open(img, O_CREAT | O_RDWR | O_DIRECT, 0600);
	if (fd < 0 && errno == EINVAL) {
		rmdir(dir);
		cr_skip_test("%s does not support O_DIRECT", dir);
	}
	cr_assert(fd >= 0, "create %s: %s", img, strerror(errno));
	close(fd);
	unlink(img);
}

/* Criterion .fini: removes the image and the folder (emptied by the test). */
static void scratch_image_teardown(void)
{
	if (!dir[0])
		return;
	unlink(img);
	rmdir(dir);
}

#endif
