#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Stale directory entries across hosts: two real vmfsd processes (A, B) on
one image.  Each case follows the same script: B looks the name up first,
so B's kernel caches a negative or positive entry for it (for the entry
timeout, 1 s); A changes the name; B acts at once, through its now stale
entry.  The outcome must be what POSIX says for the name as it is now on
disk, never an error the name's old state would explain, and never an
action on an inode number the name no longer leads to.  Every case has its
own directory, so A's and B's directory locks do not make B wait past its
entry timeout.  Then a third host, C, whose device lands the writes of a
batch one by one, changes a directory while B reads it without a lock
(reads_mid_commit).  At the end fsck.vmfsd -n must find the volume clean.

Env: VMFSD, MKFS, FSCK.  Exit 0 pass, 1 fail, 77 no /dev/fuse or not root.
"""
import ctypes
import errno
import multiprocessing
import os
import stat
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import vmfstest as vt  # noqa: E402  (tests/vmfstest.py: the shared helpers)

MKFS = vt.mkfs_exe()
# fuse/fuse_ops.c: entry and attribute timeouts, plus a commit interval's
# worth of margin (docs/architecture.md, "Coherency between hosts").
SETTLE_S = 1.5
CHECK = vt.Checker(os.path.basename(__file__))
fail = CHECK.fail
failures = CHECK.failures
log = vt.log
libc = ctypes.CDLL(None, use_errno=True)
RENAME_NOREPLACE = 1
AT_FDCWD = -100


def mount(img, mnt, host):
    vt.mount_daemon(img, mnt, host)


def err_of(fn, *args):
    """Runs FN; returns 0 or the errno it failed with (and the result)."""
    try:
        return 0, fn(*args)
    except OSError as e:
        return e.errno, None


def lookup(path):
    """B's lookup: caches a positive or negative entry in B's kernel."""
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def expect(case, got, want):
    name = lambda e: errno.errorcode.get(e, "success") if e else "success"
    if got != want:
        fail("%s: %s, expected %s" % (case, name(got), name(want)))
    else:
        log("%s: %s" % (case, name(got)))


def write_file(path, data, mode=0o644):
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, mode)
    os.write(fd, data)
    os.close(fd)


def renameat2(old, new, flags):
    if libc.renameat2(AT_FDCWD, old.encode(), AT_FDCWD, new.encode(), flags) == 0:
        return 0
    return ctypes.get_errno()


def as_nobody(q, fn, *args):
    os.setgid(65534)
    os.setuid(65534)
    try:
        fd = fn(*args)
        os.close(fd)
        q.put(0)
    except OSError as e:
        q.put(e.errno)


def reuse_ino(a_dir, ino, prefix):
    """A creates files until one gets inode number INO again (freed inode
    numbers are reused after the next commit, which sync forces); returns
    its path or None."""
    dfd = os.open(a_dir, os.O_RDONLY | os.O_DIRECTORY)
    os.fsync(dfd)
    os.close(dfd)
    made = []
    for i in range(64):
        p = os.path.join(a_dir, "%s%d" % (prefix, i))
        write_file(p, b"new file, must survive\n")
        if os.stat(p).st_ino == ino:
            for q in made:
                os.unlink(q)
            return p
        made.append(p)
    for q in made:
        os.unlink(q)
    return None


def dir_reused(a, b):
    """B holds a directory open (its kernel keeps that inode, generation
    and all, for as long as it likes); A removes the directory and reuses
    its inode number for a new directory.  Requests B makes through its fd
    name the old directory: they must fail, never act on the new one."""
    os.mkdir(os.path.join(a, "dir_reused"))
    os.mkdir(os.path.join(a, "dir_reused", "d"))
    time.sleep(SETTLE_S)
    fdb = os.open(os.path.join(b, "dir_reused", "d"), os.O_RDONLY | os.O_DIRECTORY)
    ino = os.fstat(fdb).st_ino
    os.rmdir(os.path.join(a, "dir_reused", "d"))
    new = None
    for i in range(100):
        p = os.path.join(a, "dir_reused", "n%d" % i)
        os.mkdir(p)
        if os.stat(p).st_ino == ino:
            new = p
            break
        os.rmdir(p)
        dfd = os.open(os.path.join(a, "dir_reused"), os.O_RDONLY | os.O_DIRECTORY)
        os.fsync(dfd)       # a commit: freed numbers become reusable
        os.close(dfd)
        time.sleep(0.1)
    if new is None:
        fail("dir_reused: A never reused inode %d" % ino)
        os.close(fdb)
        return
    log("dir_reused: A reused inode %d for %s" % (ino, new))
    mode = os.stat(new).st_mode
    e, fd = err_of(lambda: os.open("f", os.O_RDWR | os.O_CREAT, 0o644, dir_fd=fdb))
    if fd is not None:
        os.close(fd)
    if e == 0:
        fail("dir_reused: B created a file in a directory A removed")
    else:
        log("dir_reused: create through B's fd of the removed directory: %s"
            % errno.errorcode[e])
    e, _ = err_of(os.fchmod, fdb, 0o700)
    if e == 0:
        fail("dir_reused: B's fchmod of the removed directory succeeded")
    os.close(fdb)
    time.sleep(SETTLE_S)
    if os.listdir(new):
        fail("dir_reused: A's new directory has %s: B acted on the reused number"
             % os.listdir(new))
    if os.stat(new).st_mode != mode:
        fail("dir_reused: B's fchmod changed A's new directory")


def lock_recreated(a, b):
    """A file A holds open for writing, unlinked by A and at once created
    again by B (same name, and the freed inode number comes back): B's open
    must hold the file's on-disk lock for as long as it is open.  It did
    not: B's first open of the old number (through its cached entry) took
    the lock, met the deleted inode (ESTALE) and left the lock for release
    after the next commit; B's create of the new file then "acquired" it
    again (held already) and the pending release freed it under the open,
    so A could open B's file for writing too."""
    d = "lock_recreated"
    # each round costs two EBUSY answers (LOCK_WAIT_MS each, fs/cluster.c)
    # and four settles: the default run takes one round, --long every pause
    pauses = [0.0, 0.05, 0.1, 0.2, 0.3, 0.0] if "--long" in sys.argv else [0.0]
    for i, pause in enumerate(pauses):
        fa = os.open(os.path.join(a, d, "x"), os.O_RDWR | os.O_CREAT, 0o600)
        os.write(fa, b"A")
        os.fsync(fa)
        time.sleep(SETTLE_S)
        e, fb = err_of(os.open, os.path.join(b, d, "x"), os.O_RDWR | os.O_CREAT, 0o600)
        if e != errno.EBUSY:
            fail("lock_recreated round %d: B's open while A holds the file: %s" % (i, e or "granted"))
            if fb is not None:
                os.close(fb)
        os.unlink(os.path.join(a, d, "x"))
        os.close(fa)
        time.sleep(pause)
        fb = None
        for _ in range(200):
            e, fb = err_of(os.open, os.path.join(b, d, "x"), os.O_RDWR | os.O_CREAT, 0o600)
            if fb is not None:
                break
            if e not in (errno.EBUSY, errno.ESTALE, errno.ENOENT):
                fail("lock_recreated round %d: B's create: %s" % (i, errno.errorcode.get(e)))
                return
            time.sleep(0.05)
        if fb is None:
            fail("lock_recreated round %d: B could not create the file again" % i)
            return
        os.write(fb, b"B")
        os.fsync(fb)
        time.sleep(SETTLE_S)    # past B's next commit (the pending release)
        held = os.getxattr(os.path.join(b, d, "x"), "user.vmfsd.lock").decode()
        e, fa2 = err_of(os.open, os.path.join(a, d, "x"), os.O_RDWR)
        if fa2 is not None:
            os.close(fa2)
        if e != errno.EBUSY or " by B " not in held:
            fail("lock_recreated round %d (pause %.2f s): B holds the new file open, its lock "
                 "reads %r and A's open for writing gives %s" % (i, pause, held,
                                                                errno.errorcode.get(e, "success")))
        else:
            log("lock_recreated round %d: lock %r, A refused" % (i, held))
        os.unlink(os.path.join(b, d, "x"))
        os.close(fb)
        time.sleep(SETTLE_S)


def link_target(i):
    """The target of reads_mid_commit's symbolic link I: longer than an
    inode's map area, so it lives in a data block of its own."""
    return "/" + "t" * 3000 + "%03d" % i


def creator(c, d, nfiles, stop, q):
    """C's side of reads_mid_commit: fills D with NFILES names (and a
    symbolic link beside every tenth), empties it, again and again (a
    commit: new directory blocks, then hundreds of inodes, one by one),
    until STOP.  Puts the number of names it created and removed, or the
    error."""
    ops = 0
    try:
        while not stop.is_set():
            made = 0
            while made < nfiles and not stop.is_set():
                os.close(os.open(os.path.join(c, d, "f%03d" % made), os.O_CREAT | os.O_WRONLY,
                                 0o644))
                if made % 10 == 0:
                    os.symlink(link_target(made), os.path.join(c, d, "l%03d" % made))
                made += 1
            for i in range(made):
                os.unlink(os.path.join(c, d, "f%03d" % i))
                if i % 10 == 0:
                    os.unlink(os.path.join(c, d, "l%03d" % i))
            ops += 2 * (made + (made + 9) // 10)
        q.put(ops)
    except OSError as e:
        q.put(repr(e))


def reads_mid_commit(img, b, c):
    """B looks names up and lists a directory without a lock while host C's
    commits write that directory in place, C's device landing each write
    of a batch 2 ms after the one before (debug_batch_gap_us): a commit
    spends about a second half in place.  Each answer must be the name's
    old or new state (a symbolic link's own target, or none), never damage
    (EUCLEAN: a new inode read before its directory blocks, as it did), and
    at the end B must see exactly C's directory."""
    d = "mid_commit"
    vt.mount_daemon(img, c, "C", opts=("debug_batch_gap_us=2000",))
    try:
        os.mkdir(os.path.join(c, d))
        time.sleep(SETTLE_S)
        stop = multiprocessing.Event()
        q = multiprocessing.Queue()
        p = multiprocessing.Process(target=creator, args=(c, d, 300, stop, q))
        p.start()
        errs, reads = {}, 0
        t_end = time.time() + 8
        while time.time() < t_end:
            k = reads // 4 % 30 * 10
            for op, arg in ((os.listdir, os.path.join(b, d)),
                            (os.lstat, os.path.join(b, d, "f%03d" % (reads % 300))),
                            (os.lstat, os.path.join(b, d, "f%03d" % (299 - reads % 300))),
                            (os.readlink, os.path.join(b, d, "l%03d" % k))):
                e, got = err_of(op, arg)
                reads += 1
                if e not in (0, errno.ENOENT):
                    key = "%s: %s" % (op.__name__, errno.errorcode.get(e, e))
                    errs[key] = errs.get(key, 0) + 1
                elif op is os.readlink and not e and got != link_target(k):
                    key = "readlink: another target"
                    errs[key] = errs.get(key, 0) + 1
        stop.set()
        ops = q.get(timeout=240)
        p.join()
        if not isinstance(ops, int) or ops < 1:
            fail("reads_mid_commit: C's creates and unlinks: %s" % ops)
        if errs:
            fail("reads_mid_commit: B's reads while C's commits were half in place: %s "
                 "(%d reads)" % (errs, reads))
        else:
            log("reads_mid_commit: %d reads by B while C made %s creates and unlinks: each "
                "the old or the new state" % (reads, ops))
        # C's last change; then B, past the bound, sees exactly C's names.
        os.close(os.open(os.path.join(c, d, "last"), os.O_CREAT | os.O_WRONLY, 0o644))
        time.sleep(2 * SETTLE_S)
        lc, lb = sorted(os.listdir(os.path.join(c, d))), sorted(os.listdir(os.path.join(b, d)))
        if lc != lb:
            fail("reads_mid_commit: after the bound C lists %s, B lists %s" % (lc, lb))
        elif lookup(os.path.join(b, d, "last")) is None:
            fail("reads_mid_commit: B does not find C's last name")
    finally:
        vt.unmount_quiet(c)


def xattr_locked(a, b):
    """An extended attribute is part of the inode, so changing one takes
    the inode's lock like any other change.  It did not: A's setxattr
    wrote A's copy of the inode while B had the file open for writing
    (that copy's size and block map over B's).  Now A gets EBUSY while
    B holds the file, and once B closes A's changes go through, B sees
    them (getxattr and listxattr), and B's data is whole."""
    d = "xattr_locked"
    os.mkdir(os.path.join(a, d))
    write_file(os.path.join(a, d, "f"), b"A" * 4096)
    os.setxattr(os.path.join(a, d, "f"), "user.v", b"one")
    time.sleep(SETTLE_S)
    data = os.urandom(1 << 20)
    fb = os.open(os.path.join(b, d, "f"), os.O_RDWR)
    os.pwrite(fb, data, 0)
    os.fsync(fb)
    # (removexattr goes through the same lock; one EBUSY costs the
    # namespace lock wait, 15 s)
    e, _ = err_of(os.setxattr, os.path.join(a, d, "f"), "user.v", b"two")
    expect("setxattr by A of a file B holds open for writing", e, errno.EBUSY)
    os.close(fb)
    e = errno.EBUSY
    t_end = time.time() + 10        # B gives the lock back at its next commit
    while e == errno.EBUSY and time.time() < t_end:
        e, _ = err_of(os.setxattr, os.path.join(a, d, "f"), "user.v", b"two")
        if e == errno.EBUSY:
            time.sleep(0.1)
    expect("setxattr by A once B closed the file", e, 0)
    os.setxattr(os.path.join(a, d, "f"), "user.gone", b"x")
    os.removexattr(os.path.join(a, d, "f"), "user.gone")
    time.sleep(SETTLE_S)
    fb = os.open(os.path.join(b, d, "f"), os.O_RDONLY)
    try:
        got = os.getxattr(os.path.join(b, d, "f"), "user.v")
        if got != b"two" or os.listxattr(os.path.join(b, d, "f")) != ["user.v"]:
            fail("xattr_locked: B reads user.v %r, lists %s after A's changes"
                 % (got, os.listxattr(os.path.join(b, d, "f"))))
        if os.fstat(fb).st_size != len(data) or os.pread(fb, len(data), 0) != data:
            fail("xattr_locked: B's 1 MiB is not whole after A's setxattr (size %d)"
                 % os.fstat(fb).st_size)
    finally:
        os.close(fb)


def cases(a, b):
    dir_reused(a, b)
    names = ["creat", "creat_busy", "creat_trunc", "creat_excl", "creat_dir", "creat_perm",
             "creat_symlink", "mkdir", "mknod", "symlink", "link_new", "link_gone",
             "link_reused", "open_reused", "unlink_gone", "unlink_replaced", "rmdir_gone",
             "rmdir_replaced", "rmdir_open", "rename_gone", "rename_target",
             "rename_noreplace", "lookup_renamed", "lock_recreated"]
    for n in names:
        os.mkdir(os.path.join(a, n), 0o777)
        os.chmod(os.path.join(a, n), 0o777)
    # Setup that B must see before its lookups.
    write_file(os.path.join(a, "link_new", "src"), b"src")
    write_file(os.path.join(a, "link_gone", "f"), b"gone")
    write_file(os.path.join(a, "link_reused", "f"), b"old")
    write_file(os.path.join(a, "open_reused", "f"), b"old")
    write_file(os.path.join(a, "unlink_gone", "f"), b"x")
    write_file(os.path.join(a, "unlink_replaced", "f"), b"old")
    os.mkdir(os.path.join(a, "rmdir_gone", "d"))
    os.mkdir(os.path.join(a, "rmdir_replaced", "d"))
    os.mkdir(os.path.join(a, "rmdir_open", "d"))
    write_file(os.path.join(a, "rename_gone", "f"), b"x")
    write_file(os.path.join(a, "rename_target", "src"), b"src")
    write_file(os.path.join(a, "rename_noreplace", "src"), b"src")
    write_file(os.path.join(a, "lookup_renamed", "old"), b"renamed")
    time.sleep(SETTLE_S)
    A = lambda *p: os.path.join(a, *p)
    B = lambda *p: os.path.join(b, *p)

    # open(O_CREAT) without O_EXCL of a name A created after B's lookup:
    # opens A's file.
    lookup(B("creat", "f"))
    write_file(A("creat", "f"), b"written by A")
    e, fd = err_of(os.open, B("creat", "f"), os.O_RDWR | os.O_CREAT, 0o644)
    expect("O_CREAT of a name A created after B's negative lookup", e, 0)
    if fd is not None:
        if os.pread(fd, 100, 0) != b"written by A":
            fail("O_CREAT opened something else than A's file")
        if os.fstat(fd).st_ino != os.stat(A("creat", "f")).st_ino:
            fail("O_CREAT: B's inode is not A's")
        os.close(fd)

    # ... EBUSY while A holds it open for writing.
    lookup(B("creat_busy", "f"))
    fda = os.open(A("creat_busy", "f"), os.O_CREAT | os.O_RDWR, 0o644)
    e, fd = err_of(os.open, B("creat_busy", "f"), os.O_RDWR | os.O_CREAT, 0o644)
    expect("O_CREAT of a name A created and holds open for writing", e, errno.EBUSY)
    if fd is not None:
        os.close(fd)
    os.close(fda)

    # ... O_TRUNC truncates A's file.
    lookup(B("creat_trunc", "f"))
    write_file(A("creat_trunc", "f"), b"to be truncated")
    e, fd = err_of(os.open, B("creat_trunc", "f"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    expect("O_CREAT|O_TRUNC of a name A created", e, 0)
    if fd is not None:
        if os.fstat(fd).st_size != 0:
            fail("O_CREAT|O_TRUNC: size %d on B" % os.fstat(fd).st_size)
        os.close(fd)
        time.sleep(SETTLE_S)
        if os.stat(A("creat_trunc", "f")).st_size != 0:
            fail("O_CREAT|O_TRUNC: A still sees size %d" % os.stat(A("creat_trunc", "f")).st_size)

    # ... O_EXCL: EEXIST.
    lookup(B("creat_excl", "f"))
    write_file(A("creat_excl", "f"), b"x")
    e, fd = err_of(os.open, B("creat_excl", "f"), os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    expect("O_CREAT|O_EXCL of a name A created", e, errno.EEXIST)
    if fd is not None:
        os.close(fd)

    # ... a directory: EISDIR.
    lookup(B("creat_dir", "f"))
    os.mkdir(A("creat_dir", "f"))
    e, fd = err_of(os.open, B("creat_dir", "f"), os.O_RDWR | os.O_CREAT, 0o644)
    expect("O_CREAT of a name A made a directory", e, errno.EISDIR)
    if fd is not None:
        os.close(fd)

    # ... a file the caller may not write: EACCES (the kernel checked
    # nothing: it thought it was creating).
    lookup(B("creat_perm", "f"))
    write_file(A("creat_perm", "f"), b"root only", 0o600)
    q = multiprocessing.Queue()
    p = multiprocessing.Process(target=as_nobody, args=(q, os.open, B("creat_perm", "f"),
                                                        os.O_RDWR | os.O_CREAT, 0o644))
    p.start()
    e = q.get(timeout=60)
    p.join()
    expect("O_CREAT by uid 65534 of a mode 0600 root file A created", e, errno.EACCES)

    # ... a symlink: followed, as open(2) does (creates its target).
    lookup(B("creat_symlink", "l"))
    os.symlink("target", A("creat_symlink", "l"))
    e, fd = err_of(os.open, B("creat_symlink", "l"), os.O_RDWR | os.O_CREAT, 0o644)
    expect("O_CREAT of a name A made a symlink", e, 0)
    if fd is not None:
        os.write(fd, b"through the link")
        os.close(fd)
        if lookup(B("creat_symlink", "target")) is None:
            fail("O_CREAT through A's symlink did not create its target")
        if not stat.S_ISLNK(os.lstat(B("creat_symlink", "l")).st_mode):
            fail("O_CREAT through A's symlink replaced the symlink")

    # mkdir / mknod / symlink / link onto a name A just created: EEXIST,
    # and B's view of the name is right afterwards.
    for case, act, make in (
            ("mkdir", lambda p: os.mkdir(p), lambda p: os.mkdir(p)),
            ("mknod", lambda p: os.mkfifo(p), lambda p: write_file(p, b"A")),
            ("symlink", lambda p: os.symlink("x", p), lambda p: write_file(p, b"A")),
            ("link_new", lambda p: os.link(B("link_new", "src"), p),
             lambda p: write_file(p, b"A"))):
        lookup(B(case, "n"))
        make(A(case, "n"))
        e, _ = err_of(act, B(case, "n"))
        expect("%s onto a name A created after B's negative lookup" % case, e, errno.EEXIST)
        st = lookup(B(case, "n"))
        if st is None or st.st_ino != os.lstat(A(case, "n")).st_ino:
            fail("%s: after EEXIST B does not see A's %s" % (case, A(case, "n")))
    if os.stat(B("link_new", "src")).st_nlink != 1:
        fail("link_new: the failed link changed the source's link count")

    # link of a name A removed: ENOENT, nothing linked.
    lookup(B("link_gone", "f"))
    os.unlink(A("link_gone", "f"))
    e, _ = err_of(os.link, B("link_gone", "f"), B("link_gone", "g"))
    expect("link of a name A unlinked after B's lookup", e, errno.ENOENT)

    # link of a name A removed whose inode number A reused for a new file:
    # ENOENT, never a link to the new file.
    st = lookup(B("link_reused", "f"))
    os.unlink(A("link_reused", "f"))
    t = time.time()
    new = reuse_ino(A("link_reused"), st.st_ino, "n")
    if new is None:
        log("link_reused: A did not reuse inode %d; case not run" % st.st_ino)
    elif time.time() - t < 0.8:
        e, _ = err_of(os.link, B("link_reused", "f"), B("link_reused", "g"))
        expect("link of a name A removed, inode number reused", e, errno.ENOENT)
        time.sleep(SETTLE_S)
        if os.stat(new).st_nlink != 1:
            fail("link_reused: B linked A's new file through a stale entry")
    else:
        log("link_reused: reuse took %.1f s, B's entry expired; case not run"
            % (time.time() - t))

    # open of a name A removed, its inode reused by A for another file.
    fa = A("open_reused", "f")
    fb = B("open_reused", "f")
    st = lookup(fb)
    os.unlink(fa)
    t = time.time()
    new = reuse_ino(A("open_reused"), st.st_ino, "n")
    if new is None:
        log("open_reused: A did not reuse inode %d; case not run" % st.st_ino)
    elif time.time() - t < 0.8:
        e, fd = err_of(os.open, fb, os.O_RDWR | os.O_TRUNC)
        expect("open(O_TRUNC) of a name A removed, inode number reused", e, errno.ENOENT)
        if fd is not None:
            os.close(fd)
        time.sleep(SETTLE_S)
        if open(new, "rb").read() != b"new file, must survive\n":
            fail("open_reused: B's open through a stale entry truncated A's new file")
    else:
        log("open_reused: reuse took %.1f s, B's entry expired; case not run" % (time.time() - t))

    # unlink of a name A removed: ENOENT.
    lookup(B("unlink_gone", "f"))
    os.unlink(A("unlink_gone", "f"))
    e, _ = err_of(os.unlink, B("unlink_gone", "f"))
    expect("unlink of a name A unlinked after B's lookup", e, errno.ENOENT)

    # unlink of a name A replaced with a new file: removes the new file.
    lookup(B("unlink_replaced", "f"))
    os.unlink(A("unlink_replaced", "f"))
    write_file(A("unlink_replaced", "f"), b"new")
    e, _ = err_of(os.unlink, B("unlink_replaced", "f"))
    expect("unlink of a name A replaced after B's lookup", e, 0)

    # rmdir of a directory A removed: ENOENT; replaced by a file: ENOTDIR.
    lookup(B("rmdir_gone", "d"))
    os.rmdir(A("rmdir_gone", "d"))
    e, _ = err_of(os.rmdir, B("rmdir_gone", "d"))
    expect("rmdir of a directory A removed after B's lookup", e, errno.ENOENT)
    lookup(B("rmdir_replaced", "d"))
    os.rmdir(A("rmdir_replaced", "d"))
    write_file(A("rmdir_replaced", "d"), b"file now")
    e, _ = err_of(os.rmdir, B("rmdir_replaced", "d"))
    expect("rmdir of a directory A replaced by a file", e, errno.ENOTDIR)

    # A directory open on both hosts, removed by A: B must not free it
    # (only the host that removed the last name frees the inode).
    fdb = os.open(B("rmdir_open", "d"), os.O_RDONLY | os.O_DIRECTORY)
    fda = os.open(A("rmdir_open", "d"), os.O_RDONLY | os.O_DIRECTORY)
    os.rmdir(A("rmdir_open", "d"))
    time.sleep(SETTLE_S)
    err_of(os.fstat, fdb)           # B re-reads the inode: nlink 0
    os.close(fdb)
    lookup(B("rmdir_open", "d"))    # B's kernel drops its entry: forget
    time.sleep(SETTLE_S)
    e, st = err_of(os.fstat, fda)   # A re-reads it: still there, A holds it
    if e or st.st_nlink != 0 or not stat.S_ISDIR(st.st_mode):
        fail("rmdir_open: A's open removed directory is gone (%s): B freed an inode "
             "A still uses" % (errno.errorcode.get(e, "nlink %s" % (st and st.st_nlink))))
    os.close(fda)
    log("rmdir_open: directory open on A and B removed by A, closed on both")

    # rename of a name A removed: ENOENT.
    lookup(B("rename_gone", "f"))
    os.unlink(A("rename_gone", "f"))
    e, _ = err_of(os.rename, B("rename_gone", "f"), B("rename_gone", "g"))
    expect("rename of a name A unlinked after B's lookup", e, errno.ENOENT)

    # rename onto a target A just created: replaces it; NOREPLACE: EEXIST.
    lookup(B("rename_target", "src"))
    lookup(B("rename_target", "dst"))
    write_file(A("rename_target", "dst"), b"A's target")
    e, _ = err_of(os.rename, B("rename_target", "src"), B("rename_target", "dst"))
    expect("rename onto a target A created after B's negative lookup", e, 0)
    lookup(B("rename_noreplace", "src"))
    lookup(B("rename_noreplace", "dst"))
    write_file(A("rename_noreplace", "dst"), b"A's target")
    e = renameat2(B("rename_noreplace", "src"), B("rename_noreplace", "dst"),
                  RENAME_NOREPLACE)
    expect("rename(NOREPLACE) onto a target A created", e, errno.EEXIST)

    # lookup after A's rename: within the coherency bound (A's commit
    # writes the directory in place, B's entry for the old name expires)
    # the new name leads to the same inode and the old name is gone.
    st = lookup(B("lookup_renamed", "old"))
    os.rename(A("lookup_renamed", "old"), A("lookup_renamed", "new"))
    time.sleep(SETTLE_S)
    st2 = lookup(B("lookup_renamed", "new"))
    if st2 is None or st2.st_ino != st.st_ino:
        fail("lookup after A's rename: B does not find the new name")
    elif lookup(B("lookup_renamed", "old")) is not None:
        fail("lookup after A's rename: B still finds the old name after the entry timeout")
    else:
        log("lookup after A's rename: new name found, old name gone")

    lock_recreated(a, b)
    xattr_locked(a, b)

    # Both hosts agree on every directory at the end.
    time.sleep(SETTLE_S)
    for n in names + ["dir_reused"]:
        la, lb = sorted(os.listdir(A(n))), sorted(os.listdir(B(n)))
        if la != lb:
            fail("%s: A lists %s, B lists %s" % (n, la, lb))
        for f in la:
            sa, sb = os.lstat(A(n, f)), os.lstat(B(n, f))
            if (sa.st_ino, sa.st_nlink, sa.st_size) != (sb.st_ino, sb.st_nlink, sb.st_size):
                fail("%s/%s: A and B disagree on inode, links or size" % (n, f))


def main():
    vt.require_env()
    tmp, img, mnts = vt.scratch("ns", "abc")
    os.chmod(tmp, 0o755)
    try:
        # the default heartbeat (1 s / 10 s): no host dies here, and with a
        # 2 s timeout a host fences itself once its heartbeat write has
        # waited 1.4 s, which a test machine busy with other tests'
        # I/O can make it do (every write then fails with EIO)
        subprocess.run([MKFS, "-q", "-s", "2G", "-H", "4", img], check=True)
        for m, h in zip(mnts[:2], "AB"):
            mount(img, m, h)
        cases(*mnts[:2])
        reads_mid_commit(img, mnts[1], mnts[2])
        for m in mnts:
            vt.unmount_quiet(m)
        CHECK.vmfsd_gone(img)
        vt.fsck_clean(img, "after the stale-entry cases", fail)
    except Exception as e:
        fail("unexpected: %r" % e)
        raise
    finally:
        for m in mnts:
            vt.unmount_quiet(m)
        CHECK.vmfsd_gone(img)
        subprocess.run(["rm", "-rf", tmp])
    log("namespace test: %d failures" % len(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
