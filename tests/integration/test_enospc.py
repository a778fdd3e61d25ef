#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Running out of space, and of inodes, on a small volume.

A file is written until write(2) fails with ENOSPC: everything written
before the error must read back intact (hashed as it was written), files
written earlier must be untouched, the volume must survive a remount while
full, and deleting the file must give the space back so that the volume is
usable again.  Then the inode table is filled until create fails with
ENOSPC, and emptied again."""

import errno
import hashlib
import os
import random
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import vmfstest as vt  # noqa: E402  (tests/vmfstest.py: the shared helpers)
from vmfstest import MiB  # noqa: E402

SIZES = ["512M", "1G"]          # the first that mkfs accepts is used


def write_file(path, data):
    with open(path, "wb") as f:
        f.write(data)


def read_file(path):
    with open(path, "rb") as f:
        return f.read()


def free_bytes(path):
    sv = os.statvfs(path)
    return sv.f_bfree * sv.f_frsize


def wait_until(pred, timeout=10):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def body(c):
    rng = random.Random(4242)
    with vt.Volume("enospc") as v:
        for size in SIZES:
            r = v.mkfs(size, check=False)
            if r.returncode == 0:
                break
            print("mkfs -s %s refused: %s" % (size, r.stderr.strip()))
        else:
            c.fail("mkfs accepted none of the sizes %s" % SIZES)
            return
        print("volume size %s" % size)
        raw = os.path.getsize(v.image)
        v.mount()
        m = v.path

        keep = {
            "inline": rng.randbytes(100),
            "subblocks": rng.randbytes(50 * 1024),
            "fileblocks": rng.randbytes(3 * MiB + 5),
            "dir/a": rng.randbytes(1000),
            "dir/b": rng.randbytes(70000),
        }
        os.mkdir(m("dir"))
        for n, d in keep.items():
            write_file(m(n), d)

        def check_keep(when):
            for n, d in keep.items():
                try:
                    got = read_file(m(n))
                except OSError as e:
                    c.fail("%s: reading %s: %s" % (when, n, e))
                    continue
                c.check(got == d, "%s: %s changed (%d bytes, expected %d)"
                        % (when, n, len(got), len(d)))

        state = {}

        def fill():
            free0 = free_bytes(m())
            state["free0"] = free0
            h = hashlib.sha256()
            written = 0
            err = None
            fd = os.open(m("fill"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                while written <= 2 * raw:
                    chunk = rng.randbytes(MiB + rng.randint(0, 4096))
                    off = 0
                    try:
                        while off < len(chunk):
                            n = os.write(fd, chunk[off:])
                            if n <= 0:
                                raise OSError(errno.EIO, "write returned %d" % n)
                            h.update(chunk[off:off + n])
                            off += n
                            written += n
                    except OSError as e:
                        err = e
                        break
                if err is None:
                    c.fail("wrote %d bytes on a %d-byte volume without ENOSPC" % (written, raw))
                elif err.errno != errno.ENOSPC:
                    c.fail("filling stopped with %s, expected ENOSPC" % err)
                # the volume is full: another write fails the same way
                c.raises(errno.ENOSPC, "a second write on the full volume", os.write, fd,
                         b"x" * MiB)
                os.fsync(fd)
            finally:
                os.close(fd)
            sv = os.statvfs(m())
            print("filled: %d bytes written (%.1f MiB) of %.1f MiB free before; "
                  "now free %d avail %d bytes" % (written, written / MiB, free0 / MiB,
                                                  sv.f_bfree * sv.f_frsize,
                                                  sv.f_bavail * sv.f_frsize))
            c.check(written >= 0.9 * free0 - 32 * MiB,
                    "only %d bytes written before ENOSPC with %d free" % (written, free0))
            state["written"], state["sha"] = written, h.hexdigest()
            st = os.stat(m("fill"))
            c.eq(st.st_size, written, "size of the file that hit ENOSPC")
            c.eq(vt.sha256_file(m("fill")), h.hexdigest(),
                 "hash of the data written before ENOSPC")
            check_keep("when full")
            # inline files need no data space: creating one still works
            try:
                write_file(m("tiny-when-full"), b"t" * 100)
                c.eq(read_file(m("tiny-when-full")), b"t" * 100, "tiny file on a full volume")
            except OSError as e:
                c.fail("creating a 100-byte file on a volume with no free file blocks: %s" % e)

        def remount_full():
            v.remount()
            if "sha" in state:
                c.eq(os.stat(m("fill")).st_size, state["written"],
                     "size of the full file after remount")
                c.eq(vt.sha256_file(m("fill")), state["sha"],
                     "hash of the full file after remount")
            check_keep("after remount while full")

        def free_again():
            os.unlink(m("fill"))
            free0 = state.get("free0", 0)
            ok = wait_until(lambda: free_bytes(m()) >= free0 - MiB)
            c.check(ok, "free space after deleting the fill file: %d, before filling %d"
                    % (free_bytes(m()), free0))
            # usable again: half the space in a new file
            big = rng.randbytes(MiB)
            nblk = int(free_bytes(m()) // MiB // 2)
            with open(m("again"), "wb") as f:
                for _ in range(nblk):
                    f.write(big)
            state["again"] = (nblk, hashlib.sha256(big * nblk).hexdigest())
            c.eq(vt.sha256_file(m("again")), state["again"][1],
                 "content of a %d MiB file written after freeing space" % nblk)
            check_keep("after freeing space")

        def inodes():
            d = m("inodes")
            os.mkdir(d)
            ffree0 = os.statvfs(m()).f_ffree
            created = 0
            err = None
            while created <= ffree0 + 10:
                sub = os.path.join(d, "d%02d" % (created // 2000))
                try:
                    if created % 2000 == 0 and not os.path.isdir(sub):
                        os.mkdir(sub)
                        created += 1
                        continue
                    fd = os.open(os.path.join(sub, "i%06d" % created),
                                 os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                    os.close(fd)
                    created += 1
                except OSError as e:
                    err = e
                    break
            print("inodes: %d created (dirs included), %d were free" % (created, ffree0))
            if err is None:
                c.fail("created %d inodes with %d free and no ENOSPC" % (created, ffree0))
            else:
                c.eq(err.errno, errno.ENOSPC, "errno when the inode table is full (%s)" % err)
            c.eq(created, ffree0, "inodes created before ENOSPC vs f_ffree")
            c.eq(os.statvfs(m()).f_ffree, 0, "f_ffree when the inode table is full")
            check_keep("with a full inode table")
            for sub in sorted(os.listdir(d)):
                for n in os.listdir(os.path.join(d, sub)):
                    os.unlink(os.path.join(d, sub, n))
                os.rmdir(os.path.join(d, sub))
            os.rmdir(d)
            ok = wait_until(lambda: os.statvfs(m()).f_ffree >= ffree0 + 1)
            c.check(ok, "free inodes after deleting them all: %d, expected %d"
                    % (os.statvfs(m()).f_ffree, ffree0 + 1))
            write_file(m("after-inodes"), b"works")
            c.eq(read_file(m("after-inodes")), b"works", "a file created afterwards")

        def fallocate_too_much():
            free0 = free_bytes(m())
            fd = os.open(m("toobig"), os.O_RDWR | os.O_CREAT, 0o644)
            try:
                err = c.errno_of(vt.fallocate, fd, 0, 0, free0 + 64 * MiB)
                c.eq(err, errno.ENOSPC, "fallocate of 64 MiB more than the free space")
                st = os.fstat(fd)
                c.eq(st.st_size, 0, "size after a failed fallocate")
                used = free0 - free_bytes(m())
                c.eq(used, st.st_blocks * 512, "free space taken by a failed fallocate vs "
                     "the file's st_blocks")
            finally:
                os.close(fd)
            os.unlink(m("toobig"))
            c.check(wait_until(lambda: free_bytes(m()) >= free0),
                    "free space after deleting the file of a failed fallocate: %d, was %d"
                    % (free_bytes(m()), free0))

        def fill_file_blocks(name):
            """Preallocates 1 MiB at a time until the file-block pool is full;
            returns the bytes taken."""
            fd = os.open(m(name), os.O_RDWR | os.O_CREAT, 0o644)
            off = 0
            try:
                while True:
                    try:
                        vt.fallocate(fd, 0, off, MiB)
                    except OSError as e:
                        c.eq(e.errno, errno.ENOSPC, "filling the file blocks: %s" % e)
                        break
                    off += MiB
            finally:
                os.close(fd)
            return off

        def failing_allocations():
            """Every allocation that fails midway gives back exactly what it
            took: free space returns to its start value and fsck -n is clean
            after the files are removed (a failed fallocate far beyond the
            volume used to leak its map nodes)."""
            free0 = free_bytes(m())
            # 1. fallocate of 30 GiB: the map needs nodes (height 1) before
            # the file blocks run out.
            fd = os.open(m("huge"), os.O_RDWR | os.O_CREAT, 0o644)
            try:
                err = c.errno_of(vt.fallocate, fd, 0, 0, 30 << 30)
                c.eq(err, errno.ENOSPC, "fallocate of 30 GiB on a small volume")
                st = os.fstat(fd)
                c.eq((st.st_size, st.st_blocks), (0, 0), "size and st_blocks after it failed")
                c.eq(free_bytes(m()), free0, "free space after the failed 30 GiB fallocate")
                # the same at an offset that needs a height-2 map
                err = c.errno_of(vt.fallocate, fd, 0, 5 << 40, 64 << 30)
                c.eq(err, errno.ENOSPC, "fallocate of 64 GiB at 5 TiB")
                c.eq(os.fstat(fd).st_blocks, 0, "st_blocks after the failed fallocate at 5 TiB")
                c.eq(free_bytes(m()), free0, "free space after the failed fallocate at 5 TiB")
            finally:
                os.close(fd)
            os.unlink(m("huge"))
            # 2. a small file in sub-blocks that must become a file-block file
            # while no file block is free: the growth fails, the data stays.
            small = rng.randbytes(100 * 1024 + 7)
            write_file(m("grows"), small)
            taken = fill_file_blocks("filler")
            print("    file-block pool filled with %d MiB" % (taken // MiB))
            err = c.errno_of(os.truncate, m("grows"), 10 * MiB)
            c.eq(err, errno.ENOSPC, "truncate of a sub-block file to 10 MiB on a full volume")
            c.eq(read_file(m("grows")), small, "content after the failed truncate up")
            fd = os.open(m("grows"), os.O_RDWR)
            try:
                err = c.errno_of(os.pwrite, fd, b"y" * 8192, 3 * MiB)
                c.eq(err, errno.ENOSPC, "write at 3 MiB into a sub-block file, volume full")
            finally:
                os.close(fd)
            c.eq(read_file(m("grows")), small, "content after the failed write at 3 MiB")
            # 3. a write far out in a new file: needs map nodes and a block
            fd = os.open(m("far"), os.O_RDWR | os.O_CREAT, 0o644)
            try:
                err = c.errno_of(os.pwrite, fd, b"z" * (2 * MiB), 5 << 40)
                c.eq(err, errno.ENOSPC, "write of 2 MiB at 5 TiB on a full volume")
                c.eq(os.fstat(fd).st_blocks, 0, "st_blocks of the file whose write failed")
            finally:
                os.close(fd)
            for n in ("far", "filler", "grows"):
                os.unlink(m(n))
            c.check(wait_until(lambda: free_bytes(m()) == free0),
                    "free space after removing the files of the failed allocations: %d, "
                    "was %d" % (free_bytes(m()), free0))
            v.remount()   # fsck -n must be clean: nothing leaked
            c.eq(free_bytes(m()), free0, "free space after the remount")

        def many_small():
            """Files of a few sub-blocks each, until ENOSPC: the sub-block pool
            is small on a small volume; whatever runs out, what was written
            must be intact and deleting it must give the space back."""
            free0 = free_bytes(m())
            d = m("small")
            os.mkdir(d)
            files = {}
            err = None
            for i in range(2000):
                data = rng.randbytes(rng.randint(3000, 120000))
                p = os.path.join(d, "s%04d" % i)
                try:
                    with open(p, "wb") as f:
                        f.write(data)
                except OSError as e:
                    err = e
                    break
                files[p] = data
            print("    %d small files (%.1f MiB) written, then %s" % (
                len(files), sum(map(len, files.values())) / MiB, err))
            if err is not None:
                c.eq(err.errno, errno.ENOSPC, "error when small files fill the volume")
            bad = [p for p, data in files.items() if read_file(p) != data]
            c.check(not bad, "%d of %d small files differ, e.g. %r" % (len(bad), len(files),
                                                                       bad[:3]))
            check_keep("after filling with small files")
            for p in os.listdir(d):
                os.unlink(os.path.join(d, p))
            os.rmdir(d)
            c.check(wait_until(lambda: free_bytes(m()) >= free0),
                    "free space after deleting the small files: %d, was %d"
                    % (free_bytes(m()), free0))

        c.section("fallocate more than the free space", fallocate_too_much)
        c.section("failing allocations give back what they took", failing_allocations)
        c.section("fill with small files", many_small)
        c.section("fill with one file until ENOSPC", fill)
        c.section("remount while full", remount_full)
        c.section("delete and reuse the space", free_again)
        c.section("fill the inode table", inodes)

        v.remount()
        check_keep("after the final remount")
        if "again" in state:
            c.eq(vt.sha256_file(m("again")), state["again"][1],
                 "content of the file written after freeing space, after remount")
        v.unmount()


def avail_bytes(path):
    sv = os.statvfs(path)
    return sv.f_bavail * sv.f_frsize


def write_until_enospc(c, path, rng, what):
    """Writes 1 MiB chunks until ENOSPC; returns (bytes written, sha256)."""
    h = hashlib.sha256()
    written = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        while True:
            chunk = rng.randbytes(MiB)
            try:
                n = os.write(fd, chunk)
            except OSError as e:
                c.eq(e.errno, errno.ENOSPC, "%s: error when the volume is full" % what)
                break
            h.update(chunk[:n])
            written += n
        os.fsync(fd)
    finally:
        os.close(fd)
    return written, h.hexdigest()


def df_truth(c):
    """statfs tells the truth: available = what a large file can fill, on a
    volume whose sub-block pool (1 MiB here: 256 sub-blocks) is exhausted by
    small files, which then overflow into file blocks and keep working."""
    rng = random.Random(77)
    with vt.Volume("df-truth") as v:
        r = v.mkfs("256M", args=("-S", "1M"), check=False)
        if not c.check(r.returncode == 0, "mkfs -S 1M: %s" % r.stderr.strip()):
            return
        v.mount()
        m = v.path
        sv = os.statvfs(m())
        avail0 = sv.f_bavail * sv.f_frsize
        print("    size %d, free %d, avail %d bytes" % (sv.f_blocks * sv.f_frsize,
                                                       sv.f_bfree * sv.f_frsize, avail0))
        c.eq(sv.f_bfree, sv.f_bavail, "f_bfree vs f_bavail")

        def fill_and_free(when):
            avail = avail_bytes(m())
            written, sha = write_until_enospc(c, m("big"), rng, when)
            print("    %s: %d MiB written, %d MiB were available" % (when, written // MiB,
                                                                     avail // MiB))
            c.eq(avail_bytes(m()), 0, "%s: available after a large file hit ENOSPC" % when)
            c.check(written >= avail - MiB, "%s: only %d bytes written of %d available"
                    % (when, written, avail))
            c.eq(vt.sha256_file(m("big")), sha, "%s: content of the large file" % when)
            os.unlink(m("big"))
            c.check(wait_until(lambda: avail_bytes(m()) == avail),
                    "%s: available after deleting the large file: %d, was %d"
                    % (when, avail_bytes(m()), avail))

        c.section("fill an empty volume with one large file", fill_and_free, "empty")

        files = {}

        def small_files():
            # 8 KiB each: 150 of them need 300 sub-blocks, more than the pool;
            # those that overflow cost a 1 MiB file block each
            os.mkdir(m("small"))
            for i in range(150):
                data = rng.randbytes(8192 - i)
                p = os.path.join(m("small"), "f%03d" % i)
                try:
                    write_file(p, data)
                except OSError as e:
                    c.fail("small file %d on an exhausted sub-block pool: %s" % (i, e))
                    return
                files[p] = data
            # directories and files in them still work too
            for i in range(10):
                d = m("dir%02d" % i)
                os.mkdir(d)
                p = os.path.join(d, "x")
                data = rng.randbytes(20000)
                write_file(p, data)
                files[p] = data
            bad = [p for p, d in files.items() if read_file(p) != d]
            c.check(not bad, "%d small files differ, e.g. %r" % (len(bad), bad[:3]))
            print("    %d small files, available now %d MiB" % (len(files),
                                                                avail_bytes(m()) // MiB))
            c.check(avail_bytes(m()) < avail0, "small files that overflowed into file "
                    "blocks do not show in the available space")

        c.section("small files beyond the sub-block pool", small_files)
        c.section("fill the rest with one large file", fill_and_free, "with small files")

        def remove_all():
            for p in files:
                os.unlink(p)
            os.rmdir(m("small"))
            for i in range(10):
                os.rmdir(m("dir%02d" % i))
            c.check(wait_until(lambda: avail_bytes(m()) == avail0),
                    "available after removing everything: %d, was %d"
                    % (avail_bytes(m()), avail0))

        c.section("remove everything", remove_all)
        v.remount()
        c.eq(avail_bytes(m()), avail0, "available after the remount")
        v.unmount()


def failed_creates(c):
    """A create that fails because its directory cannot grow (no sub-block
    left) gives its inode back: every inode that statfs counts as free can
    still be created afterwards."""
    with vt.Volume("failed-create") as v:
        r = v.mkfs("256M", args=("-S", "1M", "-N", "1024"), check=False)
        if not c.check(r.returncode == 0, "mkfs -S 1M -N 1024: %s" % r.stderr.strip()):
            return
        v.mount()
        m = v.path
        # one directory block per directory: until the sub-block pool is out
        err = None
        for i in range(400):
            try:
                os.mkdir(m("d%03d" % i))
                write_file(m("d%03d" % i, "x"), b"")
            except OSError as e:
                err = e
                break
        print("    %d directories made, then %s" % (i, err))
        if not c.check(err is not None and err.errno == errno.ENOSPC,
                       "filling the sub-block pool with directories ended with %s" % err):
            return
        # more creates that fail the same way: each takes an inode first
        nfail = 0
        for i in range(5):
            try:
                os.mkdir(m("e%d" % i))
            except OSError:
                break
            c.raises(errno.ENOSPC, "create in a new directory with no sub-block left",
                     write_file, m("e%d" % i, "x"), b"")
            nfail += 1
        c.check(nfail > 0, "no create failed for lack of a directory block")
        ffree = os.statvfs(m()).f_ffree
        made = 0
        while made <= ffree:
            try:
                # spread over the directories: each block has room for ~250
                write_file(m("d%03d" % (made % 200), "f%04d" % made), b"")
            except OSError as e:
                c.eq(e.errno, errno.ENOSPC, "error when the inodes run out")
                break
            made += 1
        c.eq(made, ffree, "files created after the failed creates vs f_ffree")
        v.unmount()


def body_all(c):
    body(c)
    df_truth(c)
    failed_creates(c)


if __name__ == "__main__":
    vt.main("enospc", body_all)
