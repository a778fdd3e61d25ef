#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Directories: 10,000 entries of varying name length in one directory
(create, list exactly, stat, remount, rename half, remove all), and the
rename(2)/renameat2(2) rules: replacing files and empty directories,
ENOTEMPTY, EINVAL for a move into its own subtree, EISDIR/ENOTDIR,
RENAME_NOREPLACE, RENAME_EXCHANGE of a file and a directory across parents
with the parents' link counts and the moved directory's '..' kept right,
before and after a remount."""

import errno
import os
import stat
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import vmfstest as vt  # noqa: E402  (tests/vmfstest.py: the shared helpers)

NFILES = int(os.environ.get("VMFSD_DIRS_NFILES", "10000"))
ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.+=,~"


def make_name(i):
    """Unique (numeric prefix), 6..255 bytes, some with spaces or UTF-8."""
    prefix = "%05d_" % i
    length = 6 + (i * 37) % 250                      # 6 .. 255 bytes
    body = "".join(ALPHABET[(i * 7 + k * 13) % len(ALPHABET)]
                   for k in range(length - len(prefix)))
    name = prefix + body
    if i % 97 == 0 and len(name) > 10:
        name = name[:8] + " " + name[9:]
    if i % 89 == 0 and len(name) > 12:               # "é" is 2 bytes in UTF-8
        name = name[:len(name) - 2] + "é"
        while len(name.encode()) > 255:
            name = name[:-2] + "é"
    assert 1 <= len(name.encode()) <= 255, (i, name)
    return name


def content_of(i):
    return ("content of %d\n" % i).encode() if i % 10 == 0 else b""


def body(c):
    with vt.Volume("dirs") as v:
        v.mkfs("2G")
        v.mount()
        m = v.path
        big = m("big")
        names = [make_name(i) for i in range(NFILES)]
        assert len(set(names)) == NFILES
        lengths = [len(n.encode()) for n in names]
        print("%d names, %d..%d bytes" % (NFILES, min(lengths), max(lengths)))
        inos = {}

        def check_listing(expected, when):
            got = os.listdir(big)
            if len(got) != len(set(got)):
                dups = sorted({n for n in got if got.count(n) > 1})[:5]
                c.fail("%s: listing has duplicates, e.g. %r" % (when, dups))
            missing = set(expected) - set(got)
            extra = set(got) - set(expected)
            c.check(not missing and not extra and len(got) == len(expected),
                    "%s: listing of %d entries (expected %d): %d missing (e.g. %r), "
                    "%d unexpected (e.g. %r)" % (when, len(got), len(expected), len(missing),
                                                sorted(missing)[:3], len(extra),
                                                sorted(extra)[:3]))

        ffree0 = []

        def create_many():
            ffree0.append(os.statvfs(m()).f_ffree)
            os.mkdir(big)
            for i, n in enumerate(names):
                fd = os.open(os.path.join(big, n), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                data = content_of(i)
                if data:
                    os.write(fd, data)
                os.close(fd)
            check_listing(names, "after creating %d files" % NFILES)
            bad_types = [e.name for e in os.scandir(big) if not e.is_file(follow_symlinks=False)]
            c.check(not bad_types, "scandir d_type not regular for %d entries, e.g. %r"
                    % (len(bad_types), bad_types[:3]))
            nbad = 0
            for i, n in enumerate(names):
                st = os.lstat(os.path.join(big, n))
                inos[n] = st.st_ino
                if not stat.S_ISREG(st.st_mode) or st.st_size != len(content_of(i)) \
                        or st.st_nlink != 1:
                    nbad += 1
                    if nbad <= 3:
                        c.fail("stat of %r: mode %o size %d nlink %d" % (
                            n, st.st_mode, st.st_size, st.st_nlink))
            c.eq(nbad, 0, "entries with a wrong stat")
            c.eq(len(set(inos.values())), NFILES, "distinct inode numbers")
            c.eq(os.stat(big).st_nlink, 2, "nlink of a directory with only files")
            c.raises(errno.ENAMETOOLONG, "a 256-byte name", os.open,
                     os.path.join(big, "x" * 256), os.O_CREAT | os.O_WRONLY, 0o644)
            c.raises(errno.EEXIST, "O_EXCL create of an existing name among 10k", os.open,
                     os.path.join(big, names[NFILES // 2]), os.O_CREAT | os.O_EXCL | os.O_WRONLY)

        def after_remount():
            v.remount()
            check_listing(names, "after remount")
            for i in range(0, NFILES, 37):
                p = os.path.join(big, names[i])
                st = os.lstat(p)
                c.eq(st.st_ino, inos[names[i]], "inode number of %r after remount" % names[i])
                with open(p, "rb") as f:
                    c.eq(f.read(), content_of(i), "content of %r after remount" % names[i])

        renamed = {}

        def rename_half():
            for i in range(0, NFILES, 2):
                old = names[i]
                new = "R" + old[1:]
                os.rename(os.path.join(big, old), os.path.join(big, new))
                renamed[old] = new
            expected = [renamed.get(n, n) for n in names]
            check_listing(expected, "after renaming half")
            nbad = 0
            for old, new in renamed.items():
                try:
                    st = os.lstat(os.path.join(big, new))
                    ok = st.st_ino == inos[old]
                except OSError:
                    ok = False
                if not ok or os.path.lexists(os.path.join(big, old)):
                    nbad += 1
                    if nbad <= 3:
                        c.fail("rename %r -> %r: new name missing, other inode, or old "
                               "name still there" % (old, new))
            c.eq(nbad, 0, "bad renames")
            with open(os.path.join(big, renamed[names[10]]), "rb") as f:
                c.eq(f.read(), content_of(10), "content follows a rename")

        def remove_all():
            c.raises(errno.ENOTEMPTY, "rmdir of a directory with 10k files", os.rmdir, big)
            # the rm -rf pattern: unlink entries while readdir goes on; an
            # entry must not be skipped because others were removed
            removed = 0
            with os.scandir(big) as it:
                for e in it:
                    os.unlink(os.path.join(big, e.name))
                    removed += 1
            left = os.listdir(big)
            c.check(not left, "one readdir pass with unlinks in between removed %d of %d "
                    "entries; %d left, e.g. %r" % (removed, NFILES, len(left), left[:3]))
            for n in left:
                os.unlink(os.path.join(big, n))
            c.eq(os.listdir(big), [], "listing after removing everything")
            os.rmdir(big)
            c.check(not os.path.exists(big), "directory still there after rmdir")
            # inodes are freed when the kernel forgets them, soon after unlink
            deadline = time.monotonic() + 10
            while os.statvfs(m()).f_ffree < ffree0[0] and time.monotonic() < deadline:
                time.sleep(0.1)
            c.eq(os.statvfs(m()).f_ffree, ffree0[0], "free inodes after removing everything")

        def rename_rules():
            r = m("r")
            os.mkdir(r)
            p = lambda *a: os.path.join(r, *a)

            def wr(path, data):
                with open(path, "wb") as f:
                    f.write(data)

            def rd(path):
                with open(path, "rb") as f:
                    return f.read()

            # file over file; the replaced inode keeps its other name
            wr(p("a"), b"A")
            wr(p("b"), b"B")
            os.link(p("b"), p("b2"))
            a_ino = os.stat(p("a")).st_ino
            os.rename(p("a"), p("b"))
            c.eq(rd(p("b")), b"A", "content of b after rename a -> b")
            c.eq(os.stat(p("b")).st_ino, a_ino, "inode of b after rename a -> b")
            c.check(not os.path.exists(p("a")), "a still exists after rename a -> b")
            c.eq(os.stat(p("b2")).st_nlink, 1, "nlink of the replaced inode's other name")
            c.eq(rd(p("b2")), b"B", "content of the replaced inode's other name")
            # rename onto another name of the same inode: nothing happens
            os.link(p("b2"), p("b3"))
            os.rename(p("b2"), p("b3"))
            c.check(os.path.exists(p("b2")) and os.path.exists(p("b3")),
                    "rename between two links of one inode must leave both")
            c.eq(os.stat(p("b3")).st_nlink, 2, "nlink after rename between links")
            # rename to itself
            os.rename(p("b"), p("b"))
            c.eq(rd(p("b")), b"A", "rename onto itself")

            nl_r = os.stat(r).st_nlink
            # dir over empty dir
            os.mkdir(p("d1"))
            wr(p("d1", "inside"), b"in d1")
            os.mkdir(p("d2"))
            c.eq(os.stat(r).st_nlink, nl_r + 2, "nlink of r with two new subdirs")
            os.rename(p("d1"), p("d2"))
            c.eq(rd(p("d2", "inside")), b"in d1", "dir over empty dir: content moved")
            c.check(not os.path.exists(p("d1")), "d1 still exists after rename over d2")
            c.eq(os.stat(r).st_nlink, nl_r + 1, "nlink of r after a dir replaced another")
            # dir over non-empty dir
            os.mkdir(p("d3"))
            c.raises(errno.ENOTEMPTY, "rename dir over a non-empty dir", os.rename,
                     p("d3"), p("d2"))
            c.check(os.path.isdir(p("d3")) and os.path.exists(p("d2", "inside")),
                    "a failed rename changed something")
            # into its own subtree
            os.mkdir(p("d2", "sub"))
            c.raises(errno.EINVAL, "rename dir into its own subdir", os.rename,
                     p("d2"), p("d2", "sub", "x"))
            c.raises(errno.EINVAL, "rename dir onto its own subdir", os.rename,
                     p("d2"), p("d2", "sub"))
            # type mismatches
            c.raises(errno.EISDIR, "rename file over dir", os.rename, p("b"), p("d3"))
            c.raises(errno.ENOTDIR, "rename dir over file", os.rename, p("d3"), p("b"))
            c.raises(errno.ENOENT, "rename of a missing name", os.rename, p("nope"), p("x"))
            c.raises(errno.ENOENT, "rename into a missing dir", os.rename, p("b"),
                     p("nodir", "x"))

            # RENAME_NOREPLACE
            wr(p("n1"), b"N1")
            wr(p("n2"), b"N2")
            c.raises(errno.EEXIST, "RENAME_NOREPLACE onto an existing file", vt.renameat2,
                     p("n1"), p("n2"), vt.RENAME_NOREPLACE)
            c.eq((rd(p("n1")), rd(p("n2"))), (b"N1", b"N2"), "files after a refused "
                 "RENAME_NOREPLACE")
            c.raises(errno.EEXIST, "RENAME_NOREPLACE onto an existing dir", vt.renameat2,
                     p("d3"), p("d2"), vt.RENAME_NOREPLACE)
            vt.renameat2(p("n1"), p("n3"), vt.RENAME_NOREPLACE)
            c.check(not os.path.exists(p("n1")) and rd(p("n3")) == b"N1",
                    "RENAME_NOREPLACE to a free name")

            # RENAME_EXCHANGE of a file in p1 and a directory in p2
            os.mkdir(p("p1"))
            os.mkdir(p("p2"))
            os.mkdir(p("p2", "other"))             # p2 nlink 3
            wr(p("p1", "f"), b"the file")
            os.mkdir(p("p2", "d"))
            wr(p("p2", "d", "x"), b"x in d")
            ino_p1, ino_p2 = os.stat(p("p1")).st_ino, os.stat(p("p2")).st_ino
            c.eq((os.stat(p("p1")).st_nlink, os.stat(p("p2")).st_nlink), (2, 4),
                 "nlink of p1, p2 before the exchange")
            c.eq(os.stat(p("p2", "d", "..")).st_ino, ino_p2, "'..' of d before the exchange")
            vt.renameat2(p("p1", "f"), p("p2", "d"), vt.RENAME_EXCHANGE)
            exchange_state(c, p, ino_p1, ino_p2, "after RENAME_EXCHANGE")
            c.raises(errno.ENOENT, "RENAME_EXCHANGE with a missing target", vt.renameat2,
                     p("p2", "d"), p("p1", "missing"), vt.RENAME_EXCHANGE)
            # exchange two files in one directory
            vt.renameat2(p("n2"), p("n3"), vt.RENAME_EXCHANGE)
            c.eq((rd(p("n2")), rd(p("n3"))), (b"N1", b"N2"), "RENAME_EXCHANGE of two files")

            # moving a directory to another parent updates '..' and nlinks
            os.mkdir(p("q1"))
            os.mkdir(p("q2"))
            os.mkdir(p("q1", "mv"))
            os.rename(p("q1", "mv"), p("q2", "mv"))
            c.eq((os.stat(p("q1")).st_nlink, os.stat(p("q2")).st_nlink), (2, 3),
                 "nlink of the old and new parent after moving a dir")
            c.eq(os.stat(p("q2", "mv", "..")).st_ino, os.stat(p("q2")).st_ino,
                 "'..' of a moved dir")

        def rename_after_remount():
            v.remount()
            p = lambda *a: os.path.join(m("r"), *a)
            exchange_state(c, p, os.stat(p("p1")).st_ino, os.stat(p("p2")).st_ino,
                           "after remount")
            c.eq((os.stat(p("q1")).st_nlink, os.stat(p("q2")).st_nlink), (2, 3),
                 "nlink of q1, q2 after remount")
            c.eq(os.stat(p("q2", "mv", "..")).st_ino, os.stat(p("q2")).st_ino,
                 "'..' of the moved dir after remount")
            c.eq(sorted(os.listdir(m("r"))),
                 sorted(["b", "b2", "b3", "d2", "d3", "n2", "n3", "p1", "p2", "q1", "q2"]),
                 "listing of r after remount")
            c.eq(os.stat(m("r")).st_nlink, 2 + 6, "nlink of r (6 subdirs) after remount")

        def odd_names():
            """Names are bytes: anything but '/' and NUL, not valid UTF-8."""
            ffree = os.statvfs(m()).f_ffree
            d = os.fsencode(m("odd"))
            os.mkdir(d)
            names = [b"\xff\xfe\xfd", b"new\nline", b"tab\there", b" lead and trail ",
                     b"...", b"-", b"\x01\x02\x7f", b"\xc3\xa9t\xc3\xa9", b"a" * 255,
                     b"UPPER", b"upper"]
            for i, n in enumerate(names):
                with open(os.path.join(d, n), "wb") as f:
                    f.write(b"%d" % i)
            c.eq(sorted(os.listdir(d)), sorted(names), "listing of odd names")
            for i, n in enumerate(names):
                with open(os.path.join(d, n), "rb") as f:
                    c.eq(f.read(), b"%d" % i, "content behind the name %r" % n)
            c.raises(errno.ENOENT, "lookup is case-sensitive and exact", os.stat,
                     os.path.join(d, b"\xff\xfe"))
            for n in names:
                os.unlink(os.path.join(d, n))
            os.rmdir(d)
            deadline = time.monotonic() + 10
            while os.statvfs(m()).f_ffree < ffree and time.monotonic() < deadline:
                time.sleep(0.05)
            c.eq(os.statvfs(m()).f_ffree, ffree, "free inodes after removing the odd names")

        c.section("odd names", odd_names)
        c.section("create %d files" % NFILES, create_many)
        c.section("remount and list", after_remount)
        c.section("rename half", rename_half)
        c.section("remove all", remove_all)
        c.section("rename rules", rename_rules)
        c.section("rename results after remount", rename_after_remount)
        v.unmount()


def exchange_state(c, p, ino_p1, ino_p2, when):
    """After exchanging p1/f (file) with p2/d (dir holding x): p1/f is the dir,
    p2/d the file; p1 gained a subdir, p2 lost one; '..' of the dir is p1."""
    c.check(os.path.isdir(p("p1", "f")) and os.path.isfile(p("p2", "d")),
            "%s: p1/f should be a dir and p2/d a file" % when)
    if os.path.isfile(p("p2", "d")):
        with open(p("p2", "d"), "rb") as f:
            c.eq(f.read(), b"the file", "%s: content of p2/d" % when)
    if os.path.isdir(p("p1", "f")):
        c.eq(os.listdir(p("p1", "f")), ["x"], "%s: listing of p1/f" % when)
        c.eq(os.stat(p("p1", "f", "..")).st_ino, ino_p1, "%s: '..' of p1/f" % when)
    c.eq((os.stat(p("p1")).st_nlink, os.stat(p("p2")).st_nlink), (3, 3),
         "%s: nlink of p1, p2" % when)


if __name__ == "__main__":
    vt.main("dirs", body)
