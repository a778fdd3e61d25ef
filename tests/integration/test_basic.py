#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Basic POSIX behaviour of a single-host mount: small and large files,
appends, directories, symlinks, hard links, chmod/chown/utime, statfs,
user.* xattrs; then unmount and remount and check that every name, content
and piece of metadata survived unchanged."""

import errno
import hashlib
import os
import random
import re
import stat
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import vmfstest as vt  # noqa: E402  (tests/vmfstest.py: the shared helpers)
from vmfstest import MiB  # noqa: E402


def snapshot(root):
    """Everything a remount must preserve, per path (atime excluded: reads
    may update it)."""
    snap = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [""] + dirnames + filenames:
            p = os.path.join(dirpath, name) if name else dirpath
            rel = os.path.relpath(p, root)
            if rel in snap:
                continue
            st = os.lstat(p)
            ent = {
                "ino": st.st_ino, "mode": st.st_mode, "nlink": st.st_nlink,
                "uid": st.st_uid, "gid": st.st_gid, "size": st.st_size,
                "blocks": st.st_blocks, "mtime_ns": st.st_mtime_ns,
                "ctime_ns": st.st_ctime_ns,
            }
            if stat.S_ISREG(st.st_mode):
                ent["sha256"] = vt.sha256_file(p)
            elif stat.S_ISLNK(st.st_mode):
                ent["target"] = os.readlink(p)
            if not stat.S_ISLNK(st.st_mode):
                ent["xattrs"] = {n: os.getxattr(p, n) for n in sorted(os.listxattr(p))}
            snap[rel] = ent
    return snap


def compare_snapshots(c, before, after, when):
    for rel in sorted(set(before) | set(after)):
        if rel not in after:
            c.fail("%s: %s disappeared" % (when, rel))
        elif rel not in before:
            c.fail("%s: %s appeared from nowhere" % (when, rel))
        else:
            for k in before[rel]:
                if before[rel][k] != after[rel].get(k):
                    c.fail("%s: %s: %s was %r, now %r" % (when, rel, k, before[rel][k],
                                                           after[rel].get(k)))


def body(c):
    rng = random.Random(1234)
    with vt.Volume("basic") as v:
        r = subprocess.run([vt.mkfs_exe(), "-s", "8G", v.image], capture_output=True,
                           text=True)
        c.eq(r.returncode, 0, "mkfs -s 8G exit status (%s)" % r.stderr.strip())
        mkfs_out = r.stdout
        v.mount()
        m = v.path

        def cached_lookups():
            # First, before anything has changed the root (a change locks
            # it, which kept it cached).  Alone on the volume, a lookup
            # answers from the cached directory: 2,000 names that are not
            # there, in the root and in a subdirectory, must not read the
            # disk once per name (the root was not kept cached: 8 KiB read
            # per name).  /proc/PID/io counts what the daemon's threads
            # read.
            for d in ("", "lookups/"):
                if d:
                    os.mkdir(m(d))
                before = vt.read_bytes(v.proc.pid)
                for i in range(2000):
                    c.check(not os.path.exists(m("%snot-there-%d" % (d, i))),
                            "%snot-there-%d exists" % (d, i))
                got = vt.read_bytes(v.proc.pid) - before
                c.check(got < 64 * 4096, "2,000 lookups of missing names in %s read %d bytes "
                        "from the disk" % (d or "the root", got))
            os.rmdir(m("lookups"))
        c.section("lookups answer from the cache", cached_lookups)

        def small_files():
            with open(m("small"), "wb") as f:
                f.write(b"hello\n")
            with open(m("small"), "rb") as f:
                c.eq(f.read(), b"hello\n", "small file content")
            with open(m("small"), "ab") as f:
                f.write(b"world\n")
            with open(m("small"), "rb") as f:
                c.eq(f.read(), b"hello\nworld\n", "small file after append")
            c.eq(os.stat(m("small")).st_size, 12, "small file size")
            open(m("empty"), "wb").close()
            st = os.stat(m("empty"))
            c.eq((st.st_size, st.st_blocks), (0, 0), "empty file size/blocks")
            with open(m("empty"), "rb") as f:
                c.eq(f.read(), b"", "empty file content")
            # O_EXCL on an existing name
            c.raises(errno.EEXIST, "O_CREAT|O_EXCL on existing file",
                     os.open, m("small"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            c.raises(errno.ENOENT, "open of a missing file", open, m("missing"), "rb")

        def large_files():
            data = rng.randbytes(5 * MiB + 12345)
            with open(m("large"), "wb") as f:
                f.write(data)
            with open(m("large"), "rb") as f:
                got = f.read()
            c.check(got == data, "large file (5 MiB+12345) content differs after write "
                    "(len %d vs %d)" % (len(got), len(data)))
            extra = rng.randbytes(MiB + 777)
            with open(m("large"), "ab") as f:
                f.write(extra)
            data += extra
            with open(m("large"), "rb") as f:
                got = f.read()
            c.check(got == data, "large file content differs after append")
            st = os.stat(m("large"))
            c.eq(st.st_size, len(data), "large file size")
            # 1 MiB file blocks: 7 of them for 6 MiB + something
            c.eq(st.st_blocks, 7 * MiB // 512, "large file st_blocks (7 file blocks)")
            # a read in the middle, unaligned
            with open(m("large"), "rb") as f:
                f.seek(3 * MiB - 17)
                c.check(f.read(100000) == data[3 * MiB - 17:3 * MiB - 17 + 100000],
                        "unaligned read in the middle of the large file")
                f.seek(len(data) - 10)
                c.eq(f.read(100), data[-10:], "short read at EOF")
                c.eq(f.read(100), b"", "read past EOF")

        def dirs():
            os.mkdir(m("d"))
            os.makedirs(m("d", "a", "b", "c"))
            os.mkdir(m("d", "x"), 0o700)
            c.eq(stat.S_IMODE(os.stat(m("d", "x")).st_mode), 0o700, "mkdir mode 0700")
            c.eq(os.stat(m("d")).st_nlink, 4, "nlink of d (., .., a, x)")
            c.eq(os.stat(m("d", "a", "b", "c")).st_nlink, 2, "nlink of an empty dir")
            c.raises(errno.EEXIST, "mkdir of an existing dir", os.mkdir, m("d"))
            c.raises(errno.ENOTEMPTY, "rmdir of a non-empty dir", os.rmdir, m("d", "a"))
            os.rmdir(m("d", "a", "b", "c"))
            c.eq(os.stat(m("d", "a", "b")).st_nlink, 2, "nlink of b after rmdir of its child")
            c.raises(errno.ENOENT, "stat of a removed dir", os.stat, m("d", "a", "b", "c"))
            c.raises(errno.ENOENT, "rmdir of a missing dir", os.rmdir, m("d", "nope"))
            c.raises(errno.ENOTDIR, "rmdir of a file", os.rmdir, m("small"))
            c.raises(errno.EISDIR, "unlink of a dir", os.unlink, m("d"))
            os.mkdir(m("d", "gone"))
            os.rmdir(m("d", "gone"))
            c.eq(sorted(os.listdir(m("d"))), ["a", "x"], "listing of d")
            with open(m("d", "a", "b", "f"), "wb") as f:
                f.write(b"deep")
            c.eq(sorted(os.listdir(m())), ["d", "empty", "large", "small"], "root listing")

        def links():
            os.symlink("d/a/b/f", m("sym"))
            os.symlink("/nonexistent/target/" + "y" * 200, m("dangling"))
            c.eq(os.readlink(m("sym")), "d/a/b/f", "readlink")
            c.eq(os.readlink(m("dangling")), "/nonexistent/target/" + "y" * 200,
                 "readlink of a long dangling symlink")
            c.check(stat.S_ISLNK(os.lstat(m("sym")).st_mode), "lstat of symlink is S_IFLNK")
            c.eq(os.lstat(m("sym")).st_size, len("d/a/b/f"), "symlink st_size")
            with open(m("sym"), "rb") as f:
                c.eq(f.read(), b"deep", "read through symlink")
            c.raises(errno.ENOENT, "open through a dangling symlink", open, m("dangling"))
            c.raises(errno.EINVAL, "readlink of a regular file", os.readlink, m("small"))
            # Targets are stored inline (up to 2912 bytes, docs/format.md);
            # longer ones, up to PATH_MAX - 1, must either work or be refused
            # with ENAMETOOLONG, never truncated.
            for n in (2912, 2913, 4095):
                t = ("t%d/" % n + "x" * n)[:n]
                try:
                    os.symlink(t, m("longlink%d" % n))
                except OSError as e:
                    if n > 2912 and e.errno == errno.ENAMETOOLONG:
                        print("    a %d-byte symlink target is refused (ENAMETOOLONG)" % n)
                        continue
                    c.fail("symlink with a %d-byte target: %s" % (n, e))
                    continue
                c.eq(os.readlink(m("longlink%d" % n)), t, "readlink of a %d-byte target" % n)
                c.eq(os.lstat(m("longlink%d" % n)).st_size, n, "st_size of a %d-byte symlink"
                     % n)
            # hard links
            os.link(m("small"), m("d", "hard1"))
            os.link(m("small"), m("hard2"))
            for p in ("small", "d/hard1", "hard2"):
                c.eq(os.stat(m(p)).st_nlink, 3, "nlink of %s with 3 names" % p)
            c.eq(os.stat(m("small")).st_ino, os.stat(m("hard2")).st_ino, "hard link inode")
            with open(m("hard2"), "ab") as f:
                f.write(b"via hard2\n")
            with open(m("d", "hard1"), "rb") as f:
                c.eq(f.read(), b"hello\nworld\nvia hard2\n", "content via another hard link")
            os.unlink(m("hard2"))
            c.eq(os.stat(m("small")).st_nlink, 2, "nlink after unlinking one name")
            c.raises(errno.EEXIST, "link onto an existing name", os.link, m("small"), m("large"))
            c.raises(errno.EPERM, "hard link to a directory", os.link, m("d"), m("dlink"))

        def metadata():
            os.chmod(m("small"), 0o640)
            c.eq(stat.S_IMODE(os.stat(m("small")).st_mode), 0o640, "chmod 0640")
            os.chmod(m("d", "x"), 0o1755)
            c.eq(stat.S_IMODE(os.stat(m("d", "x")).st_mode), 0o1755, "chmod 01755 on a dir")
            os.chown(m("large"), 1234, 5678)
            st = os.stat(m("large"))
            c.eq((st.st_uid, st.st_gid), (1234, 5678), "chown 1234:5678")
            os.lchown(m("sym"), 42, 43)
            st = os.lstat(m("sym"))
            c.eq((st.st_uid, st.st_gid), (42, 43), "lchown of a symlink")
            c.eq(os.stat(m("d", "a", "b", "f")).st_uid, 0, "lchown did not follow the link")
            at, mt = 1_000_000_000_123_456_789, 1_500_000_000_987_654_321
            os.utime(m("small"), ns=(at, mt))
            st = os.stat(m("small"))
            c.eq(st.st_mtime_ns, mt, "mtime set by utime (ns)")
            c.eq(st.st_atime_ns, at, "atime set by utime (ns)")
            os.utime(m("d"), ns=(at, mt))
            c.eq(os.stat(m("d")).st_mtime_ns, mt, "directory mtime set by utime")
            # mtime and ctime move on a write
            before = os.stat(m("empty"))
            with open(m("empty"), "ab") as f:
                f.write(b"x")
            after = os.stat(m("empty"))
            c.check(after.st_mtime_ns >= before.st_mtime_ns and
                    after.st_ctime_ns >= before.st_ctime_ns,
                    "mtime/ctime went backwards on write")
            # truncate via setattr
            os.truncate(m("empty"), 0)
            c.eq(os.stat(m("empty")).st_size, 0, "truncate to 0")
            # O_TRUNC on an existing file with data in file blocks
            with open(m("otrunc"), "wb") as f:
                f.write(b"o" * (2 * MiB))
            with open(m("otrunc"), "wb") as f:
                f.write(b"short")
            st = os.stat(m("otrunc"))
            c.eq((st.st_size, st.st_blocks), (5, 0), "size/blocks after O_TRUNC and a "
                 "5-byte write")
            with open(m("otrunc"), "rb") as f:
                c.eq(f.read(), b"short", "content after O_TRUNC")
            # a directory's mtime and ctime move when entries come and go
            for what, fn in (("create", lambda: open(m("d", "x", "new"), "wb").close()),
                             ("rename", lambda: os.rename(m("d", "x", "new"),
                                                          m("d", "x", "new2"))),
                             ("unlink", lambda: os.unlink(m("d", "x", "new2")))):
                os.utime(m("d", "x"), ns=(at, mt))
                before = os.stat(m("d", "x"))
                fn()
                after = os.stat(m("d", "x"))
                c.check(after.st_mtime_ns > before.st_mtime_ns and
                        after.st_ctime_ns >= before.st_ctime_ns,
                        "parent mtime/ctime after %s: mtime %d -> %d, ctime %d -> %d"
                        % (what, before.st_mtime_ns, after.st_mtime_ns, before.st_ctime_ns,
                           after.st_ctime_ns))
            os.utime(m("d", "x"), ns=(at, mt))
            fd = os.open(m("d"), os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            except OSError as e:
                c.fail("fsync of a directory: %s" % e)
            finally:
                os.close(fd)

        def statfs():
            sv = os.statvfs(m())
            total = sv.f_blocks * sv.f_frsize
            free = sv.f_bfree * sv.f_frsize
            avail = sv.f_bavail * sv.f_frsize
            print("statvfs: bsize %d frsize %d blocks %d bfree %d bavail %d files %d ffree %d "
                  "namemax %d" % (sv.f_bsize, sv.f_frsize, sv.f_blocks, sv.f_bfree,
                                  sv.f_bavail, sv.f_files, sv.f_ffree, sv.f_namemax))
            raw = 8 << 30
            c.check(0.85 * raw <= total <= raw,
                    "statfs total %d not within 85..100%% of the 8 GiB raw size" % total)
            mo = re.search(r"block size: (\d+) MiB \((\d+) blocks\)", mkfs_out)
            if c.check(mo, "mkfs output lacks 'block size: N MiB (M blocks)': %r" % mkfs_out):
                usable = int(mo.group(1)) * MiB * int(mo.group(2))
                c.check(abs(total - usable) <= 0.05 * usable,
                        "statfs total %d differs by more than 5%% from the %d usable "
                        "bytes mkfs reported" % (total, usable))
            c.check(0 < free <= total and avail <= free,
                    "statfs free %d avail %d total %d inconsistent" % (free, avail, total))
            # about 7.3 MiB of data written so far, inline and sub-blocks aside
            c.check(total - free >= 7 * MiB, "statfs used %d < the 7 MiB of large file"
                    % (total - free))
            c.check(total - free < 256 * MiB, "statfs used %d is implausibly large"
                    % (total - free))
            c.check(sv.f_files > 0 and 0 < sv.f_ffree < sv.f_files,
                    "statfs inode counts files %d ffree %d" % (sv.f_files, sv.f_ffree))
            c.eq(sv.f_namemax, 255, "statfs namemax")
            r = subprocess.run(["df", "-B1", "--output=size,used,avail", m()],
                               capture_output=True, text=True)
            c.eq(r.returncode, 0, "df exit status (%s)" % r.stderr.strip())
            nums = r.stdout.split("\n")[1].split() if r.returncode == 0 else []
            c.eq(int(nums[0]) if nums else None, total, "df size vs statvfs")

        def xattrs():
            p = m("small")
            os.setxattr(p, "user.a", b"1")
            os.setxattr(p, "user.long.name.here", b"v" * 200)
            os.setxattr(p, "user.bin", bytes(range(256))[:100])
            os.setxattr(m("d"), "user.ondir", b"dir value")
            c.eq(os.getxattr(p, "user.a"), b"1", "getxattr user.a")
            c.eq(os.getxattr(p, "user.bin"), bytes(range(100)), "getxattr of binary value")
            c.eq(sorted(os.listxattr(p)), ["user.a", "user.bin", "user.long.name.here"],
                 "listxattr")
            c.eq(os.getxattr(m("d"), "user.ondir"), b"dir value", "xattr on a directory")
            os.setxattr(p, "user.a", b"replaced value")
            c.eq(os.getxattr(p, "user.a"), b"replaced value", "xattr after replace")
            c.raises(errno.EEXIST, "XATTR_CREATE on an existing name", os.setxattr, p,
                     "user.a", b"x", os.XATTR_CREATE)
            c.raises(errno.ENODATA, "XATTR_REPLACE on a missing name", os.setxattr, p,
                     "user.missing", b"x", os.XATTR_REPLACE)
            os.setxattr(p, "user.tmp", b"t")
            os.removexattr(p, "user.tmp")
            c.raises(errno.ENODATA, "getxattr after removexattr", os.getxattr, p, "user.tmp")
            c.raises(errno.ENODATA, "removexattr of a missing name", os.removexattr, p,
                     "user.tmp")
            c.raises((errno.ENOSPC, errno.E2BIG), "600-byte xattr value (512 bytes/inode)",
                     os.setxattr, m("large"), "user.big", b"z" * 600)
            c.raises(errno.ENODATA, "the refused 600-byte xattr is absent", os.getxattr,
                     m("large"), "user.big")
            os.setxattr(m("large"), "user.ok", b"k" * 300)
            c.eq(os.getxattr(m("large"), "user.ok"), b"k" * 300, "300-byte xattr value")
            # an empty value is legal
            os.setxattr(m("large"), "user.empty", b"")
            c.eq(os.getxattr(m("large"), "user.empty"), b"", "empty xattr value")
            # the 512 bytes are per inode, across all names
            q = m("d", "a", "b", "f")
            os.setxattr(q, "user.one", b"1" * 250)
            c.raises((errno.ENOSPC, errno.E2BIG), "a second 250-byte xattr (512 bytes per "
                     "inode in all)", os.setxattr, q, "user.two", b"2" * 250)
            c.eq(os.listxattr(q), ["user.one"], "xattrs after a refused second one")
            os.removexattr(q, "user.one")
            os.setxattr(q, "user.two", b"2" * 250)
            c.eq(os.getxattr(q, "user.two"), b"2" * 250, "space of a removed xattr is reused")
            c.raises((errno.EOPNOTSUPP, errno.EPERM), "setxattr outside user.*",
                     os.setxattr, q, "trusted.x", b"1")

        def open_handles():
            # two O_APPEND descriptors interleaving: each write lands at the end
            a = os.open(m("appendee"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            b = os.open(m("appendee"), os.O_WRONLY | os.O_APPEND)
            want = b""
            for i in range(50):
                piece = (b"a%d;" % i) * (i + 1) if i % 2 == 0 else (b"B%d," % i) * 700
                os.write(a if i % 2 == 0 else b, piece)
                want += piece
            os.close(a)
            os.close(b)
            with open(m("appendee"), "rb") as f:
                got = f.read()
            c.check(got == want, "interleaved O_APPEND writes: %d bytes, expected %d%s"
                    % (len(got), len(want), "" if len(got) != len(want) else
                       " (content differs)"))
            # unlinked while open: still readable and writable through the fd
            data = rng.randbytes(3 * MiB)
            fd = os.open(m("orphan"), os.O_RDWR | os.O_CREAT, 0o644)
            os.write(fd, data)
            os.unlink(m("orphan"))
            c.check(not os.path.exists(m("orphan")), "unlinked file still visible")
            os.pwrite(fd, b"after unlink", 100)
            got = os.pread(fd, len(data), 0)
            c.check(got == data[:100] + b"after unlink" + data[112:],
                    "read/write through the fd of an unlinked file")
            c.eq(os.fstat(fd).st_nlink, 0, "fstat nlink of an unlinked open file")
            os.close(fd)
            # replaced by rename while open: the fd keeps the old inode
            with open(m("victim"), "wb") as f:
                f.write(b"old inode")
            with open(m("replacement"), "wb") as f:
                f.write(b"new inode")
            fd = os.open(m("victim"), os.O_RDONLY)
            os.rename(m("replacement"), m("victim"))
            c.eq(os.pread(fd, 100, 0), b"old inode", "read through an fd whose name was "
                 "replaced by rename")
            os.close(fd)
            with open(m("victim"), "rb") as f:
                c.eq(f.read(), b"new inode", "the name after rename")
            os.unlink(m("victim"))
            os.unlink(m("appendee"))

        def copy_tree():
            src = "/usr/include/linux"
            if not os.path.isdir(src):
                print("    %s missing; nothing to copy" % src)
                return
            r = subprocess.run(["cp", "-a", src, m("tree")], capture_output=True, text=True)
            c.eq(r.returncode, 0, "cp -a %s into the mount (%s)" % (src, r.stderr.strip()[:300]))
            r = subprocess.run(["diff", "-r", "--no-dereference", src, m("tree")],
                               capture_output=True, text=True)
            c.eq(r.returncode, 0, "diff -r of the copied tree: %s" % (r.stdout + r.stderr)[:500])

            def listing(root):
                """(path, mode, size unless a dir, mtime_ns, link target) of
                everything below root: what cp -a must preserve."""
                out = []
                for dirpath, dirnames, filenames in os.walk(root):
                    for n in [""] + dirnames + filenames:
                        full = os.path.join(dirpath, n) if n else dirpath
                        st = os.lstat(full)
                        out.append((os.path.relpath(full, root), st.st_mode,
                                    None if stat.S_ISDIR(st.st_mode) else st.st_size,
                                    st.st_mtime_ns,
                                    os.readlink(full) if stat.S_ISLNK(st.st_mode) else None))
                return sorted(set(out))
            a, b = listing(src), listing(m("tree"))
            diffs = sorted(set(a) ^ set(b))
            c.check(not diffs, "metadata (path mode size mtime target) of the copied tree "
                    "differs: %d vs %d entries, e.g. %r" % (len(a), len(b), diffs[:4]))
            r = subprocess.run(["rm", "-rf", m("tree", "netfilter")], capture_output=True,
                               text=True)
            c.eq(r.returncode, 0, "rm -rf of a copied subtree (%s)" % r.stderr.strip())
            c.check(not os.path.exists(m("tree", "netfilter")), "rm -rf left the subtree")

        c.section("small files", small_files)
        c.section("large files", large_files)
        c.section("directories", dirs)
        c.section("symlinks and hard links", links)
        c.section("chmod/chown/utime", metadata)
        c.section("statfs", statfs)
        c.section("xattrs", xattrs)
        c.section("open handles: O_APPEND, unlink and rename while open", open_handles)
        c.section("cp -a / diff -r / rm -rf of a tree", copy_tree)

        before = snapshot(v.mnt)
        print("snapshot: %d paths" % len(before))
        v.unmount()
        c.check(not os.listdir(v.mnt), "mount point not empty after unmount")
        v.mount()
        after = snapshot(v.mnt)
        compare_snapshots(c, before, after, "after remount")
        # and the content once more explicitly
        with open(m("small"), "rb") as f:
            c.eq(f.read(), b"hello\nworld\nvia hard2\n", "small file content after remount")
        # still writable after remount
        with open(m("after-remount"), "wb") as f:
            f.write(b"ok")
        os.unlink(m("after-remount"))
        v.unmount()


if __name__ == "__main__":
    vt.main("basic", body)
