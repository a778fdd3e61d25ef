// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Inode generations on reuse of a number, through the core library on a
 * real image formatted by mkfs.vmfsd: every file that gets a number must
 * get a generation above every one that number had before, on this host
 * or another, so that a stale handle or a stale directory or map block of
 * the number's earlier file is never taken for the new one.  inode_alloc
 * reads the generations of the next free numbers ahead of need
 * (fs/inode.c, old_generation); these tests reuse numbers inside and
 * across such read-ahead windows, on one host and with two hosts taking
 * turns on the volume's one inode cluster.
 *
 * The binary comes from $MKFS_VMFSD (set by meson); images go to a fresh
 * directory under $VMFSD_TEST_DIR or /var/tmp (O_DIRECT is required).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "format/format.h"
#include "fs/fs.h"
#include "scratch_image.h"

static void setup(void)
{
	scratch_image_setup("inodegen");
}

TestSuite(inode_gen, .init = setup, .fini = scratch_image_teardown, .timeout = 120);

/* 256 MiB, 2 hosts: one inode cluster, which the hosts take turns on. */
static void format(void)
{
	char cmd[1024];
	int st;

	snprintf(cmd, sizeof(cmd), "'%s' -q -s 256M -H 2 '%s' >/dev/null 2>&1", mkfs, img);
	st = system(cmd);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "mkfs failed: %s", cmd);
}

static struct fs *mount_as(const char *host)
{
	struct fs_mount_opts mo = { .host = host };
	struct fs *fs = NULL;
	int r = fs_mount(img, &mo, &fs, NULL);

	cr_assert_eq(r, 0, "mount as %s: %s", host, strerror(-r));
	return fs;
}

/* How many numbers one read-ahead covers (IGEN_BATCH, fs/fs_internal.h). */
#define READ_AHEAD 64

/* The highest generation each number had so far (0: never seen). */
#define MAX_INO 4096
static uint64_t seen[MAX_INO];

/* Creates NAME in DIR and checks its generation against every earlier one
 * of its number; forgets the kernel-style reference the create took, so
 * the inode object leaves the cache once unlinked (the generation must
 * then come from the disk or the read-ahead, not from the object). */
static uint64_t create_checked(struct fs *fs, uint64_t dir, const char *name)
{
	struct fs_attr a;
	int r = fs_mknod(fs, dir, name, S_IFREG | 0644, 0, 0, 0, &a);

	cr_assert_eq(r, 0, "create %s: %s", name, strerror(-r));
	cr_assert_lt(a.ino, MAX_INO);
	cr_assert_gt(a.generation, seen[a.ino],
		     "%s got inode %llu generation %llu, which that number had already "
		     "reached (%llu)", name, (unsigned long long)a.ino,
		     (unsigned long long)a.generation, (unsigned long long)seen[a.ino]);
	seen[a.ino] = a.generation;
	fs_forget(fs, a.ino, 1);
	return a.ino;
}

static uint64_t make_dir(struct fs *fs, const char *name)
{
	struct fs_attr a;

	cr_assert_eq(fs_mkdir(fs, VMFSD_ROOT_INO, name, 0755, 0, 0, &a), 0);
	return a.ino;
}

/* A number read ahead, used, freed and used again while the read-ahead
 * window still covers it: the second use must not get the generation read
 * before the first. */
Test(inode_gen, reuse_inside_window)
{
	struct fs *fs;
	uint64_t d, x0, x1, y;

	format();
	fs = mount_as("a");
	d = make_dir(fs, "d");
	x0 = create_checked(fs, d, "x0");
	x1 = create_checked(fs, d, "x1");
	create_checked(fs, d, "x2");
	cr_assert_eq(x1, x0 + 1, "numbers not handed out in order: the test lost its point");
	cr_assert_eq(fs_unlink(fs, d, "x1"), 0);
	cr_assert_eq(fs_sync(fs), 0);
	y = create_checked(fs, d, "y");
	cr_assert_eq(y, x1, "the freed number %llu did not come back (got %llu): the test "
		     "lost its point", (unsigned long long)x1, (unsigned long long)y);
	cr_assert_eq(fs_unmount(fs), 0);
}

/* Rounds of 40 creates and 30 unlinks (all but every fourth file), each
 * round's frees made reusable by a sync: numbers come back both inside and
 * outside the window the last read-ahead covered. */
Test(inode_gen, one_host_reuse)
{
	char name[64];
	struct fs *fs;
	uint64_t d;
	int round, i, reused = 0;

	format();
	fs = mount_as("a");
	d = make_dir(fs, "d");
	for (round = 0; round < 6; round++) {
		uint64_t inos[40];

		for (i = 0; i < 40; i++) {
			snprintf(name, sizeof(name), "r%d-%d", round, i);
			inos[i] = create_checked(fs, d, name);
			reused += seen[inos[i]] > 1;
		}
		for (i = 0; i < 40; i++) {
			if (i % 4 == 3)
				continue;
			snprintf(name, sizeof(name), "r%d-%d", round, i);
			cr_assert_eq(fs_unlink(fs, d, name), 0);
		}
		cr_assert_eq(fs_sync(fs), 0);
	}
	cr_assert_gt(reused, 100, "only %d creates reused a number: the test lost its point",
		     reused);
	cr_assert_eq(fs_unmount(fs), 0);
}

/* A fills its read-ahead (one create), then B, present now, takes the
 * inode cluster in turn and uses the very numbers A read ahead, and frees
 * them again; A's next creates get those numbers back and must not hand
 * out the generations it read before B's turn. */
Test(inode_gen, two_hosts_take_turns)
{
	char name[64];
	struct fs *a, *b;
	uint64_t da, db, first, mine[10];
	int i, overlap = 0;

	format();
	a = mount_as("a");
	da = make_dir(a, "d");
	first = create_checked(a, da, "a0");
	cr_assert_eq(fs_sync(a), 0);
	b = mount_as("b");
	{
		struct fs_attr at;

		cr_assert_eq(fs_lookup(b, VMFSD_ROOT_INO, "d", &at), 0);
		db = at.ino;
		fs_forget(b, db, 1);
	}
	/* B's creates wait (seconds) for A to give the cluster and the
	 * directory back at its next commit, now that B is present. */
	for (i = 0; i < 10; i++) {
		snprintf(name, sizeof(name), "b%d", i);
		mine[i] = create_checked(b, db, name);
		overlap += mine[i] > first && mine[i] < first + READ_AHEAD;
	}
	cr_assert_gt(overlap, 0, "B used none of the numbers after A's first file: "
		     "the test lost its point");
	for (i = 0; i < 10; i++) {
		snprintf(name, sizeof(name), "b%d", i);
		cr_assert_eq(fs_unlink(b, db, name), 0);
	}
	cr_assert_eq(fs_sync(b), 0);
	for (i = 0; i < 20; i++) {
		snprintf(name, sizeof(name), "a%d", i + 1);
		create_checked(a, da, name);
	}
	cr_assert_eq(fs_unmount(b), 0);
	cr_assert_eq(fs_unmount(a), 0);
}
