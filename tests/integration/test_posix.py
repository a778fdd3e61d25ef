#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""POSIX behaviour that needs the page cache, the kill-suid rule and long
symlinks, on one host and across two hosts of one volume.

- Shared mmap of files opened without O_DIRECT (read, write, msync, a
  mapping that outlives close); O_DIRECT opens keep direct I/O (a shared
  mapping is refused with ENODEV, the kernel's answer for direct_io files);
  a shared mapping through a second descriptor opened without O_DIRECT is
  coherent with direct I/O on the first.
- A host alone on the volume does not re-read inodes; once another host
  joins and changes a file and a directory, the first host sees both.
- Coherency of the page cache between two hosts (docs/cluster.md, "Page
  cache"): what host B wrote after host A cached the file is what A reads
  after its next open, also when B grew the file and A's kernel still held
  the old size; while A holds the file open, B cannot open it for writing.
- After a lock handover, the giver's page-cache descriptor fails reads
  (EIO) instead of returning pages cached before the give.
- A read-only mount (no locks) reads with direct I/O: it sees what a
  read-write host writes to a file it has open.
- A write by a caller other than root clears set-user-ID, and set-group-ID
  when group-executable (direct I/O and page-cache writes, and truncate); a
  write by root keeps them.
- Symbolic link targets up to 4095 bytes (inline up to 2912, in a
  sub-block above), across a remount, 4096 refused; fsck clean after.
- fsx-style random operations (write, read, truncate, mmap read and write,
  punch, reopen) on a file checked against an in-memory model after every
  step; again on small files while a second host is mounted (sub-block
  allocation that runs out part-way through a write).

Env: VMFSD, MKFS, FSCK.  Exit 0 pass, 1 fail, 77 no /dev/fuse or not root.
"""

import errno
import json
import mmap
import os
import random
import stat
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import vmfstest as vt  # noqa: E402  (tests/vmfstest.py: the shared helpers)

NOBODY = 65534
OTHER = 65533


def as_user(uid, fn):
    """Runs fn() in a child with uid/gid UID and no supplementary groups;
    returns its exit status (fn's return value, or 99 on an exception,
    which is printed)."""
    pid = os.fork()
    if pid == 0:
        rc = 99
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            rc = fn()
        except BaseException as e:  # noqa: B036  (report anything)
            print("child uid %d: %r" % (uid, e), flush=True)
        os._exit(rc)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def aligned(size, fill):
    """A page-aligned buffer for O_DIRECT writes."""
    m = mmap.mmap(-1, size)
    m.write(fill * size)
    return m


def mmap_single(c, m):
    p = m("mm")
    data = bytes(random.Random(7).randrange(256) for _ in range(3 * 4096 + 100))
    with open(p, "wb") as f:
        f.write(data)
    fd = os.open(p, os.O_RDWR)
    mm = mmap.mmap(fd, len(data), mmap.MAP_SHARED)
    c.eq(mm[:], data, "shared mapping reads the file")
    mm[5000:5005] = b"HELLO"
    mm.flush()
    c.eq(os.pread(fd, 5, 5000), b"HELLO", "read(2) sees a store through the mapping")
    os.pwrite(fd, b"world", 9000)
    c.eq(mm[9000:9005], b"world", "the mapping sees write(2)")
    # The mapping outlives the descriptor: its pages reach the file when
    # it is unmapped, before the last reference goes.
    os.close(fd)
    mm[0:4] = b"LAST"
    mm.close()
    with open(p, "rb") as f:
        got = f.read()
    want = bytearray(data)
    want[5000:5005] = b"HELLO"
    want[9000:9005] = b"world"
    want[0:4] = b"LAST"
    c.eq(got, bytes(want), "content after munmap")
    # O_DIRECT keeps direct I/O: no page cache, so no shared mapping.
    fd = os.open(p, os.O_RDWR | os.O_DIRECT)
    try:
        c.raises(errno.ENODEV, "MAP_SHARED of an O_DIRECT open", mmap.mmap, fd, 4096,
                 mmap.MAP_SHARED)
        priv = mmap.mmap(fd, 4096, mmap.MAP_PRIVATE)
        c.eq(priv[0:4], b"LAST", "MAP_PRIVATE of an O_DIRECT open")
        priv.close()
    finally:
        os.close(fd)
    # What a program that wants both does (fsx -Z with mapped operations
    # on ext4 does it on one descriptor): O_DIRECT I/O on one descriptor,
    # the shared mapping on a second one opened without O_DIRECT.  The
    # kernel keeps the two coherent on one host: a direct write is seen
    # through the mapping, a store through the mapping by a direct read
    # after msync.
    dfd = os.open(p, os.O_RDWR | os.O_DIRECT)
    cfd = os.open(p, os.O_RDWR)
    try:
        mm = mmap.mmap(cfd, 3 * 4096, mmap.MAP_SHARED)
        c.eq(mm[4096:4100], bytes(want[4096:4100]), "mapping beside an O_DIRECT descriptor")
        os.pwrite(dfd, aligned(4096, b"D"), 4096)
        c.eq(mm[4096:8192], b"D" * 4096, "the mapping sees a direct write")
        mm[8192:12288] = b"M" * 4096
        mm.flush()
        buf = aligned(4096, b"\0")
        os.preadv(dfd, [buf], 8192)
        c.eq(buf[:], b"M" * 4096, "a direct read sees a store through the mapping")
        mm.close()
    finally:
        os.close(cfd)
        os.close(dfd)
    # Multi-writer files keep direct I/O too.
    open(m("mw"), "wb").close()
    os.setxattr(m("mw"), "user.vmfsd.multiwriter", b"1")
    fd = os.open(m("mw"), os.O_RDWR)
    try:
        os.pwrite(fd, b"x" * 4096, 0)
        c.raises(errno.ENODEV, "MAP_SHARED of a multi-writer file", mmap.mmap, fd, 4096,
                 mmap.MAP_SHARED)
    finally:
        os.close(fd)


def open_retry(path, flags, what, timeout=15):
    """Opens PATH, waiting while another host still holds its lock (it is
    released by that host's next commit, within about a second)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return os.open(path, flags)
        except OSError as e:
            if e.errno != errno.EBUSY or time.monotonic() > deadline:
                raise OSError(e.errno, "%s: %s" % (what, e.strerror))
            time.sleep(0.05)


def joined(c, v):
    """Host A alone skips re-reading inodes from disk (docs/cluster.md
    §5.2); B joins and changes what A has cached: A must see it."""
    a, b = v.path, (lambda *p: os.path.join(v.mnt_b, *p))
    os.mkdir(a("jd"))
    with open(a("jd", "f"), "wb") as f:
        f.write(b"a")
    os.chmod(a("jd", "f"), 0o644)
    time.sleep(1.5)                 # alone again (the last section's B left)
    for _ in range(3):              # validated while alone
        os.stat(a("jd", "f"))
        os.listdir(a("jd"))
        time.sleep(0.4)
    vt.mount_daemon(v.image, v.mnt_b, "posix-b")
    os.chmod(b("jd", "f"), 0o600)
    with open(b("jd", "new"), "wb") as f:
        f.write(b"b")
    os.sync()
    # About a second (B's commit, A's kernel cache); generous for a loaded
    # machine: without the re-read A would show the old state for ever.
    vt.wait_for(lambda: stat.S_IMODE(os.stat(a("jd", "f")).st_mode) == 0o600, 10,
                "A sees B's chmod of a file A had cached while alone")
    vt.wait_for(lambda: "new" in os.listdir(a("jd")), 10,
                "A lists the name B created in a directory A had cached")
    with open(a("jd", "new"), "rb") as f:
        c.eq(f.read(), b"b", "A reads B's new file")


def cached_by_locks(c, v):
    """Host A alone lets its kernel cache, for a minute, the names and
    attributes its kept locks guard (docs/cluster.md §5.4); B joins and
    changes them: A must drop them from its kernel before it gives the
    locks back, and so see B's changes within the bound."""
    a, b = v.path, (lambda *p: os.path.join(v.mnt_b, *p))
    os.mkdir(a("lk"))
    for n in ("f", "old"):
        with open(a("lk", n), "wb") as f:
            f.write(b"a")
    os.chmod(a("lk", "f"), 0o644)
    time.sleep(2.5)                 # alone again (B left): A keeps its locks
    for _ in range(3):              # cached by the kept locks from here on
        os.stat(a("lk", "f"))
        os.stat(a("lk", "old"))
        time.sleep(0.4)
    vt.mount_daemon(v.image, v.mnt_b, "posix-b")
    try:
        os.chmod(b("lk", "f"), 0o600)
        os.unlink(b("lk", "old"))
        os.sync()
        # Within about a second; 10 s for a loaded machine, far below the
        # minute A's kernel would keep them if A did not drop them.
        vt.wait_for(lambda: stat.S_IMODE(os.stat(a("lk", "f")).st_mode) == 0o600, 10,
                    "A sees B's chmod of a file whose attributes A cached by its lock")
        vt.wait_for(lambda: not os.path.exists(a("lk", "old")), 10,
                    "A sees B's unlink of a name A cached by its directory lock")
    finally:
        vt.unmount_daemon(v.image, v.mnt_b)


def parked(c, v):
    """Host A alone keeps the locks of inodes it freed (docs/cluster.md
    §5.3); B joins and creates files that get those inode numbers back (one
    inode cluster on this volume, so B allocates what A freed): A must have
    given the locks back, or B's create waits for them and fails with
    EBUSY.  Then the lock record of such a file must name B: A's open for
    writing is refused while B holds it open."""
    a, b = v.path, (lambda *p: os.path.join(v.mnt_b, *p))
    os.mkdir(a("pk"))
    freed = set()
    for i in range(40):
        with open(a("pk", "f%d" % i), "wb") as f:
            f.write(b"a")
            freed.add(os.fstat(f.fileno()).st_ino)
    commit(v.mnt)
    for i in range(40):
        os.unlink(a("pk", "f%d" % i))
    commit(v.mnt)                   # the frees, durable
    commit(v.mnt)                   # applied: the locks parked
    vt.mount_daemon(v.image, v.mnt_b, "posix-b")
    try:
        vt.wait_for(lambda: os.path.isdir(b("pk")), 10, "B sees A's directory")
        got = {}
        for i in range(40):
            # no retry: a lock A still held would make this EBUSY
            fd = os.open(b("pk", "g%d" % i), os.O_WRONLY | os.O_CREAT, 0o644)
            os.write(fd, b"b")
            got[os.fstat(fd).st_ino] = "g%d" % i
            os.close(fd)
        reused = sorted(set(got) & freed)
        vt.log("B's 40 files reuse %d inode numbers A freed" % len(reused))
        c.check(reused, "B's new files reuse inode numbers A freed (%d of 40; B got %s)"
                % (len(reused), sorted(got)[:5]))
        if reused:
            name = got[reused[0]]
            fd = open_retry(b("pk", name), os.O_RDWR, "B opens its file again")
            try:
                time.sleep(1.5)     # A's entry and attribute caches
                c.raises(errno.EBUSY, "A opens for writing a file B holds (inode %d, "
                         "freed by A before)" % reused[0], os.open, a("pk", name), os.O_RDWR)
            finally:
                os.close(fd)
        for n in got.values():
            os.unlink(b("pk", n))
        os.rmdir(b("pk"))
        os.sync()
    finally:
        vt.unmount_daemon(v.image, v.mnt_b)


def commit(mnt):
    """One commit of the host mounted on MNT: an fsync of a directory
    commits (os.sync() does not reach a FUSE daemon: the kernel sends
    FUSE_SYNCFS to virtiofs only)."""
    fd = os.open(mnt, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commits_late(mnt, host):
    """Whether HOST's heartbeat, as the vmfsd on MNT last read it, says it
    commits late (alone: docs/cluster.md §5.2)."""
    view = json.loads(os.getxattr(mnt, "user.vmfsd.hosts"))
    return any(e["host"] == host and e.get("commits_late", False) for e in view["hosts"])


def late_visible(c, v):
    """Host A alone commits every few seconds and says so in its heartbeat
    (docs/cluster.md §5.2).  B's mount waits until A has committed after
    seeing B's slot, so B finds at once, without retrying, what A changed
    just before: new names, their data, a rename, a mode.  Without that
    wait, B's first lookups read the directory as it was at A's last
    commit, up to 5 s earlier."""
    a, b = v.path, (lambda *p: os.path.join(v.mnt_b, *p))
    vt.wait_for(lambda: commits_late(v.mnt, "posix-a"), 10,
                "A's heartbeat says it commits late (alone)")
    os.mkdir(a("late"))
    for i in range(10):
        with open(a("late", "f%d" % i), "wb") as f:
            f.write(b"%d" % i * 100)
    os.rename(a("late", "f9"), a("late", "moved"))
    os.chmod(a("late", "f0"), 0o600)
    vt.mount_daemon(v.image, v.mnt_b, "posix-b")
    try:
        want = sorted(["f%d" % i for i in range(9)] + ["moved"])
        c.eq(sorted(os.listdir(b("late"))), want,
             "B lists at once the names A created just before B mounted")
        for i in range(9):
            with open(b("late", "f%d" % i), "rb") as f:
                c.eq(f.read(), b"%d" % i * 100, "B reads f%d as A wrote it" % i)
        with open(b("late", "moved"), "rb") as f:
            c.eq(f.read(), b"9" * 100, "B reads the file A renamed")
        c.eq(stat.S_IMODE(os.stat(b("late", "f0")).st_mode), 0o600, "B sees A's chmod")
        c.check(not commits_late(v.mnt_b, "posix-a"),
                "B's view: A no longer says it commits late")
        vt.wait_for(lambda: not commits_late(v.mnt, "posix-a"), 10,
                    "A's own view: it no longer says it commits late")
        for n in want:
            os.unlink(b("late", n))
        os.rmdir(b("late"))
    finally:
        vt.unmount_daemon(v.image, v.mnt_b)


def kept(c, v):
    """Host A alone keeps the lock of a file it closed past its commits
    (docs/cluster.md §5.3, kept while alone); B joins and opens that file
    for writing at once, with no retry: A must give the lock back within
    the 2.5 s an open waits, or B gets EBUSY.  (B's mount already waits
    for A's commit after seeing B, the one that gives kept locks back.)"""
    a, b = v.path, (lambda *p: os.path.join(v.mnt_b, *p))
    vt.wait_for(lambda: commits_late(v.mnt, "posix-a"), 10, "A alone again (B left)")
    with open(a("kept"), "wb") as f:
        f.write(b"a" * 100)
    commit(v.mnt)                   # two of A's commits
    commit(v.mnt)
    holder = os.getxattr(a("kept"), "user.vmfsd.lock").decode()
    c.check(holder.startswith("EXCL by posix-a"),
            "A still holds the lock of the file it closed (kept while alone): %r" % holder)
    vt.mount_daemon(v.image, v.mnt_b, "posix-b")
    try:
        t = time.monotonic()
        fd = os.open(b("kept"), os.O_RDWR)      # no retry: EBUSY fails here
        vt.log("B opened A's kept file after %.2f s" % (time.monotonic() - t))
        try:
            c.eq(os.pread(fd, 100, 0), b"a" * 100, "B reads what A wrote")
            holder = os.getxattr(b("kept"), "user.vmfsd.lock").decode()
            c.check(holder.startswith("EXCL by posix-b"), "B holds it now: %r" % holder)
        finally:
            os.close(fd)
        os.unlink(b("kept"))
        os.sync()
    finally:
        vt.unmount_daemon(v.image, v.mnt_b)


def created_alone(c, v):
    """Host A alone creates files and holds one open for writing: their
    locks go on disk with the commit that publishes their names
    (docs/cluster.md §5.3, a new file's lock with the commit), not at the
    create.  The record must name A once the name is on disk, and B,
    joining, must find the open one held: with the lock never written, B
    would open it for writing too."""
    a, b = v.path, (lambda *p: os.path.join(v.mnt_b, *p))
    time.sleep(3)       # B left (the last section): A sees itself alone again
    os.mkdir(a("created"))
    for i in range(20):
        with open(a("created", "c%d" % i), "wb") as f:
            f.write(b"c" * 100)
    fd = os.open(a("created", "open"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"held by A")
        # before any commit: reading the record publishes it first
        holder = os.getxattr(a("created", "open"), "user.vmfsd.lock").decode()
        c.check(holder.startswith("EXCL by posix-a"),
                "user.vmfsd.lock of a file A just created names A: %r" % holder)
        os.fsync(fd)                    # the commit that publishes it
        holder = os.getxattr(a("created", "open"), "user.vmfsd.lock").decode()
        c.check(holder.startswith("EXCL by posix-a"),
                "the lock of A's new open file is on disk: %r" % holder)
        vt.mount_daemon(v.image, v.mnt_b, "posix-b")
        try:
            c.raises(errno.EBUSY, "B opens for writing the new file A holds open",
                     os.open, b("created", "open"), os.O_RDWR)
            with open(b("created", "c7"), "rb") as f:       # given back to B
                c.eq(f.read(), b"c" * 100, "B reads a file A created and closed")
        finally:
            vt.unmount_daemon(v.image, v.mnt_b)
    finally:
        os.close(fd)


def two_hosts(c, v):
    a, b = v.path, (lambda *p: os.path.join(v.mnt_b, *p))
    p = "shared.dat"
    data1 = os.urandom(64 * 1024)
    fd = open_retry(a(p), os.O_RDWR | os.O_CREAT, "A creates")
    os.pwrite(fd, data1, 0)
    mm = mmap.mmap(fd, len(data1), mmap.MAP_SHARED)
    c.eq(mm[:], data1, "A's mapping")
    # A holds it open (EXCL): B cannot write it, and cannot read it either
    # while A writes.
    vt.wait_for(lambda: os.path.exists(b(p)), 10, "B sees the new name")
    c.raises(errno.EBUSY, "B opens for writing while A holds the file", os.open, b(p),
             os.O_RDWR)
    mm[100:104] = b"MMAP"
    mm.close()
    os.close(fd)
    want = bytearray(data1)
    want[100:104] = b"MMAP"
    # B reads what A wrote through the mapping, then grows the file.
    fd = open_retry(b(p), os.O_RDWR, "B opens after A closed")
    c.eq(os.pread(fd, len(want) + 10, 0), bytes(want), "B reads A's mapped writes")
    st_a = os.stat(a(p))        # A's kernel caches the old size now
    tail = os.urandom(32 * 1024)
    os.pwrite(fd, tail, len(want))
    os.pwrite(fd, b"BBBB", 0)
    os.close(fd)
    want[0:4] = b"BBBB"
    want += tail
    # A's next open drops its cached pages and the cached size.
    fd = open_retry(a(p), os.O_RDONLY, "A opens after B closed")
    try:
        got = os.pread(fd, len(want) + 10, 0)
        c.eq(len(got), len(want), "A reads the whole grown file (A had cached size %d)"
             % st_a.st_size)
        c.eq(got, bytes(want), "A reads B's writes after reopening")
        mm = mmap.mmap(fd, len(want), mmap.MAP_SHARED, mmap.PROT_READ)
        c.eq(mm[:], bytes(want), "A's new mapping shows B's writes")
        mm.close()
    finally:
        os.close(fd)


def handover_cached(c, v):
    """After A hands its lock to B (docs/cluster.md §4.7), A's descriptor
    that uses the page cache must not read what it cached: B writes the
    file now.  Its reads fail with EIO (pages dropped, no lock)."""
    a, b = v.path, (lambda *p: os.path.join(v.mnt_b, *p))
    x = "user.vmfsd.handover"
    fd = open_retry(a("ho.dat"), os.O_RDWR | os.O_CREAT, "A creates ho.dat")
    nfd = None
    try:
        os.pwrite(fd, b"a" * 8192, 0)
        c.eq(os.pread(fd, 4, 0), b"aaaa", "A reads through its cached descriptor")
        vt.wait_for(lambda: os.path.exists(b("ho.dat")), 10, "B sees ho.dat")
        os.setxattr(b("ho.dat"), x, b"accept")
        slot, gen, _ = os.getxattr(v.mnt_b, x).decode().split(" ", 2)
        os.setxattr(a("ho.dat"), x, ("give %s %s" % (slot, gen)).encode())
        nfd = os.open(b("ho.dat"), os.O_RDWR)
        os.pwrite(nfd, b"bbbb", 0)
        os.fsync(nfd)
        c.eq(os.pread(nfd, 4, 0), b"bbbb", "B reads its write")
        c.raises(errno.EIO, "A's cached descriptor reads after giving the lock away",
                 os.pread, fd, 4, 0)
        c.raises(errno.EIO, "A's descriptor writes after giving the lock away",
                 os.pwrite, fd, b"cccc", 0)
    finally:
        os.close(fd)
        if nfd is not None:
            os.close(nfd)


def readonly_mount(c, v):
    """A read-only mount takes no locks, so host A may write a file it has
    open: it must read A's new bytes (direct I/O, no page cache)."""
    a = v.path
    mro = os.path.join(v.dir, "mnt-ro")
    os.mkdir(mro)
    v.extra_mnts.append(mro)
    fd = open_retry(a("ro.dat"), os.O_RDWR | os.O_CREAT, "A creates ro.dat")
    rfd = None
    try:
        os.pwrite(fd, b"1" * 8192, 0)
        os.fsync(fd)
        vt.mount_daemon(v.image, mro, "posix-ro", opts=["ro"])
        rfd = os.open(os.path.join(mro, "ro.dat"), os.O_RDONLY)
        c.eq(os.pread(rfd, 4, 0), b"1111", "read-only mount reads the file")
        c.raises(errno.ENODEV, "MAP_SHARED on a read-only mount", mmap.mmap, rfd, 4096,
                 mmap.MAP_SHARED, mmap.PROT_READ)
        os.pwrite(fd, b"2222", 0)
        os.fsync(fd)
        vt.wait_for(lambda: os.pread(rfd, 4, 0) == b"2222", 10,
                    "the read-only mount to read what A wrote while it had the file open")
    finally:
        os.close(fd)
        if rfd is not None:
            os.close(rfd)
        vt.unmount_quiet(mro)
        c.vmfsd_gone(v.image, "after unmounting the read-only mount", mro)


def kept_pages(c, v):
    """Alone, the file's lock stays with this host between opens, so the
    pages an open cached are still current at the next: read again, they
    come from the page cache (the daemon reads nothing from the disk).
    A direct-I/O open for writing in between writes around them: the next
    cached open must read what it wrote, also while it is still open."""
    p = v.path("kept.dat")
    data = os.urandom(1 << 20)
    with open(p, "wb") as f:
        f.write(data)

    def read_all():
        with open(p, "rb") as f:
            return f.read()
    c.eq(read_all(), data, "the first read")
    before = vt.read_bytes(v.proc.pid)
    for i in range(3):
        c.eq(read_all(), data, "read %d through a new open" % (i + 2))
    got = vt.read_bytes(v.proc.pid) - before
    c.check(got < 256 * 1024, "three opens and reads of a 1 MiB file this host kept locked "
            "read %d bytes from the disk" % got)
    fd = os.open(p, os.O_RDWR | os.O_DIRECT)
    try:
        buf = aligned(4096, b"D")
        os.pwrite(fd, buf, 8192)
        buf.close()
    finally:
        os.close(fd)
    want = bytearray(data)
    want[8192:12288] = b"D" * 4096
    c.eq(read_all(), bytes(want), "a cached open after a direct write reads it")
    # A direct writer still open: the file may grow under the cache.
    fd = os.open(p, os.O_RDWR | os.O_DIRECT)
    try:
        c.eq(read_all(), bytes(want), "a cached open beside a direct writer")
        buf = aligned(4096, b"E")
        os.pwrite(fd, buf, len(want))
        buf.close()
        want += b"E" * 4096
        c.eq(read_all(), bytes(want), "a cached open sees what the open direct writer added")
    finally:
        os.close(fd)


def killpriv(c, m):
    p = m("suid")

    def setup(mode):
        with open(p, "wb") as f:
            f.write(b"0" * 8192)
        os.chown(p, NOBODY, NOBODY)
        os.chmod(p, mode)
        c.eq(stat.S_IMODE(os.stat(p).st_mode), mode, "mode set to %o" % mode)

    def write_as(uid, flags, buf):
        def fn():
            fd = os.open(p, os.O_WRONLY | flags)
            try:
                os.pwrite(fd, buf, 4096)
            finally:
                os.close(fd)
            return 0
        return as_user(uid, fn)

    for how, flags in (("page cache", 0), ("O_DIRECT", os.O_DIRECT)):
        buf = aligned(4096, b"w")
        for uid, who in ((OTHER, "non-owner"), (NOBODY, "owner")):
            setup(0o6777)
            c.eq(write_as(uid, flags, buf), 0, "%s write (%s)" % (who, how))
            c.eq(stat.S_IMODE(os.stat(p).st_mode), 0o777,
                 "set-id bits cleared by a %s write (%s)" % (who, how))
        # Set-group-ID without group execute is mandatory locking, kept.
        setup(0o6767)
        c.eq(write_as(OTHER, flags, buf), 0, "non-owner write (%s)" % how)
        c.eq(stat.S_IMODE(os.stat(p).st_mode), 0o2767,
             "setuid cleared, non-executable setgid kept (%s)" % how)
        setup(0o6777)
        fd = os.open(p, os.O_WRONLY | flags)
        os.pwrite(fd, buf, 0)
        os.close(fd)
        c.eq(stat.S_IMODE(os.stat(p).st_mode), 0o6777, "root's write keeps them (%s)" % how)
        buf.close()
    setup(0o6777)

    def trunc():
        os.truncate(p, 100)
        return 0
    c.eq(as_user(OTHER, trunc), 0, "non-owner truncate")
    c.eq(stat.S_IMODE(os.stat(p).st_mode), 0o777, "set-id bits cleared by truncate")
    os.unlink(p)


def symlinks(c, v):
    m = v.path
    targets = {}
    for n in (1, 2912, 2913, 4000, 4095):
        t = ("/" + "".join(random.Random(n).choice("abcdefgh/") for _ in range(n)))[:n]
        name = "l%d" % n
        os.symlink(t, m(name))
        targets[name] = t
        c.eq(os.readlink(m(name)), t, "readlink of a %d-byte target" % n)
        c.eq(os.lstat(m(name)).st_size, n, "lstat size of a %d-byte link" % n)
    c.raises(errno.ENAMETOOLONG, "4096-byte target", os.symlink, "x" * 4096, m("l4096"))
    c.check(not os.path.lexists(m("l4096")), "a refused link leaves no name")
    before = os.statvfs(m(""))
    for i in range(20):
        os.symlink("y" * 4000, m("tmp%d" % i))
    for i in range(20):
        os.unlink(m("tmp%d" % i))
    os.sync()
    after = os.statvfs(m(""))
    c.eq(after.f_bfree, before.f_bfree, "free blocks after 20 long links made and removed")
    v.remount()
    for name, t in targets.items():
        c.eq(os.readlink(m(name)), t, "readlink of %s after remount" % name)


class Model:
    """fsx's method: every operation is applied to the file and to a bytearray;
    the whole file is compared after each one."""

    def __init__(self, c, path, rng, maxlen):
        self.c, self.path, self.rng, self.maxlen = c, path, rng, maxlen
        self.want = bytearray()
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        self.log = []

    def check(self, step):
        got = os.pread(self.fd, self.maxlen + 1, 0)
        if got != bytes(self.want):
            self.c.eq(got, bytes(self.want), "fsx step %d, last ops %s" % (step, self.log[-5:]))
            return False
        if os.fstat(self.fd).st_size != len(self.want):
            self.c.fail("fsx step %d: size %d, expected %d" % (
                step, os.fstat(self.fd).st_size, len(self.want)))
            return False
        return True

    def write(self):
        off = self.rng.randrange(self.maxlen)
        n = self.rng.randrange(1, min(65536, self.maxlen - off) + 1)
        buf = self.rng.randbytes(n)
        w = os.pwrite(self.fd, buf, off)
        self.c.eq(w, n, "fsx write %d+%d: bytes written" % (off, n))
        if off > len(self.want):
            self.want += bytes(off - len(self.want))
        self.want[off:off + n] = buf
        return "write %d+%d" % (off, n)

    def read(self):
        off = self.rng.randrange(self.maxlen)
        n = self.rng.randrange(1, 65536)
        got = os.pread(self.fd, n, off)
        self.c.eq(got, bytes(self.want[off:off + n]), "fsx read %d+%d" % (off, n))
        return "read %d+%d" % (off, n)

    def truncate(self):
        size = self.rng.randrange(self.maxlen)
        os.ftruncate(self.fd, size)
        if size < len(self.want):
            del self.want[size:]
        else:
            self.want += bytes(size - len(self.want))
        return "truncate %d" % size

    def mapwrite(self):
        if not self.want:
            return self.write()
        off = self.rng.randrange(len(self.want))
        n = self.rng.randrange(1, min(65536, len(self.want) - off) + 1)
        buf = self.rng.randbytes(n)
        base = off // mmap.PAGESIZE * mmap.PAGESIZE
        mm = mmap.mmap(self.fd, off + n - base, mmap.MAP_SHARED, offset=base)
        mm[off - base:off - base + n] = buf
        if self.rng.random() < 0.5:
            mm.flush()
        mm.close()
        self.want[off:off + n] = buf
        return "mapwrite %d+%d" % (off, n)

    def mapread(self):
        if not self.want:
            return "mapread (empty)"
        off = self.rng.randrange(len(self.want))
        n = self.rng.randrange(1, len(self.want) - off + 1)
        base = off // mmap.PAGESIZE * mmap.PAGESIZE
        mm = mmap.mmap(self.fd, off + n - base, mmap.MAP_SHARED, mmap.PROT_READ, offset=base)
        got = mm[off - base:off - base + n]
        mm.close()
        self.c.eq(got, bytes(self.want[off:off + n]), "fsx mapread %d+%d" % (off, n))
        return "mapread %d+%d" % (off, n)

    def punch(self):
        if not self.want:
            return "punch (empty)"
        off = self.rng.randrange(len(self.want))
        n = self.rng.randrange(1, len(self.want) - off + 1)
        vt.fallocate(self.fd, 0x01 | 0x02, off, n)     # KEEP_SIZE | PUNCH_HOLE
        self.want[off:off + n] = bytes(n)
        return "punch %d+%d" % (off, n)

    def reopen(self):
        os.close(self.fd)
        self.fd = os.open(self.path, os.O_RDWR)
        return "reopen"


def fsx(c, m, nops):
    seed = int(os.environ.get("FSX_SEED", "17"))
    rng = random.Random(seed)
    x = Model(c, m("fsx.dat"), rng, 1 << 20)
    ops = [x.write] * 4 + [x.read] * 2 + [x.mapwrite] * 3 + [x.mapread] * 2 + \
          [x.truncate, x.punch, x.reopen]
    try:
        for step in range(nops):
            x.log.append(rng.choice(ops)())
            if not x.check(step):
                break
    finally:
        os.close(x.fd)
    vt.log("fsx: %d operations, seed %d" % (nops, seed))


def fsx_not_alone(c, v):
    """The model fsx on host A while host B is mounted (idle): with another
    host on the volume A gives its sub-block clusters back after each
    commit and does not wait for them, so a small file's write can run out
    of sub-blocks after some units went in.  It must go on in file-block
    mode: a short count lost the rest of a page write-back (mapped writes
    read back as zeros) and shortened write(2) (xfstests' fsx found it)."""
    c.check(vt.mounted_at(v.mnt_b), "host B is mounted")
    for seed in range(4):
        rng = random.Random(seed)
        x = Model(c, v.path("fsx-b%d.dat" % seed), rng, 1 << 18)
        ops = [x.write] * 4 + [x.read] * 2 + [x.mapwrite] * 3 + [x.mapread] * 2 + [x.truncate]
        try:
            for step in range(1000):
                x.log.append(rng.choice(ops)())
                if not x.check(step):
                    break
        finally:
            os.close(x.fd)


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))


def small_inode_cache(c):
    """vmfsd -o inode_cache=16: past 16 cached inodes the commit thread gives
    back the memory of those nothing uses (fs/inode.c, inode_shrink), while
    the kernel still knows them.  Memory must stop growing with the number
    of files, every file must still read back (by name and through the
    kernel's references), a FORGET of an evicted inode must not trip
    anything, their locks must go back, and a host that joins and changes
    a file whose attributes A's kernel had cached by the lock sees A follow
    within the bound."""
    with vt.Volume("icache") as v:
        vt.mkfs(v.image, "2G", ["--hb-interval", "100", "--hb-timeout", "5000"])
        v.mount(host="ic-a", opts=["inode_cache=16"])
        a = v.path
        os.mkdir(a("d"))
        n = 6000

        def create(lo, hi):
            for i in range(lo, hi):
                with open(a("d", "f%d" % i), "wb") as f:
                    f.write(b"%d" % i)
            os.sync()
            time.sleep(1.5)         # a commit: the shrink after it
        create(0, 500)
        before = rss_kib(v.proc.pid)
        create(500, n)
        grown = rss_kib(v.proc.pid) - before
        vt.log("RSS grew by %d KiB over %d more files" % (grown, n - 500))
        # Each cached inode is about 4 KiB: 5,500 of them would be 21 MiB.
        c.check(grown < 8 * 1024, "vmfsd's memory stays bounded: %d KiB more for %d files"
                % (grown, n - 500))
        held = sum(os.getxattr(a("d", "f%d" % i), "user.vmfsd.lock").startswith(b"EXCL")
                   for i in range(0, n, 50))
        c.check(held < (n // 50) // 2, "the locks of evicted inodes went back (%d of %d "
                "sampled files still locked)" % (held, n // 50))
        fds = [os.open(a("d", "f%d" % i), os.O_RDWR) for i in range(40)]
        create(n, n + 200)          # evicts all it can while those stay open
        for i, fd in enumerate(fds):
            c.eq(os.pread(fd, 16, 0), b"%d" % i, "read through a descriptor held open")
            os.pwrite(fd, b"w%d" % i, 0)
            os.close(fd)
        for i in range(n + 200):
            want = b"w%d" % i if i < 40 else b"%d" % i
            with open(a("d", "f%d" % i), "rb") as f:
                got = f.read()
            if got != want:
                c.eq(got, want, "file f%d reads back after its inode was evicted" % i)
                break
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("2")            # the kernel forgets: FORGETs for ghosts
        free0 = os.statvfs(a()).f_ffree
        for i in range(0, n + 200, 2):
            os.unlink(a("d", "f%d" % i))
        os.sync()
        time.sleep(1.5)
        c.eq(os.statvfs(a()).f_ffree - free0, (n + 200) // 2, "unlinked inodes are freed")
        # Attributes cached for a minute by the lock while alone, then the
        # inode evicted and its lock given back: B's chmod must reach A.
        # Through an O_PATH descriptor, which keeps the inode in A's kernel
        # without an open in vmfsd and is never looked up again by name
        # (a path walk after B joins would refresh the attributes anyway).
        os.chmod(a("d", "f1"), 0o644)
        time.sleep(2.5)
        pfd = os.open(a("d", "f1"), os.O_PATH)
        for _ in range(3):
            os.fstat(pfd)
            time.sleep(0.4)
        create(n + 200, n + 2200)   # evicts f1 again
        mnt_b = os.path.join(v.dir, "mnt-b")
        os.mkdir(mnt_b)
        v.extra_mnts.append(mnt_b)
        vt.mount_daemon(v.image, mnt_b, "ic-b")
        try:
            os.chmod(os.path.join(mnt_b, "d", "f1"), 0o600)
            os.sync()
            vt.wait_for(lambda: stat.S_IMODE(os.fstat(pfd).st_mode) == 0o600, 10,
                        "A sees B's chmod of a file whose inode A evicted")
        finally:
            os.close(pfd)
            vt.unmount_daemon(v.image, mnt_b)
        v.unmount()


def body(c):
    nops = int(sys.argv[1]) if len(sys.argv) > 1 else 1500
    with vt.Volume("posix") as v:
        # A short interval: a host learns fast that it is alone again (the
        # kept-lock and cache sections).  The timeout sets the fence
        # deadline: at 1 s, host A fenced (and its fence killed this test)
        # while benchmarks on the same machine saturated the disk and a
        # heartbeat write waited longer than that.
        vt.mkfs(v.image, "4G", ["--hb-interval", "100", "--hb-timeout", "5000"])
        v.mount(host="posix-a")
        # Other users must reach the mount (killpriv's children).
        os.chmod(v.dir, 0o755)
        os.chmod(v.mnt, 0o777)
        c.section("mmap on one host", mmap_single, c, v.path)
        c.section("pages kept across opens while alone", kept_pages, c, v)
        c.section("set-id bits cleared on write", killpriv, c, v.path)
        c.section("fsx with mmap (%d operations)" % nops, fsx, c, v.path, nops)
        v.mnt_b = os.path.join(v.dir, "mnt-b")
        os.mkdir(v.mnt_b)
        v.extra_mnts.append(v.mnt_b)
        try:
            c.section("a host that joins gets the locks of inodes the other freed", parked,
                      c, v)
            c.section("a host that joins gets the locks the other kept", kept, c, v)
            c.section("a host that joins sees at once what the other changed alone",
                      late_visible, c, v)
            c.section("a host that joins changes what the other cached by its locks",
                      cached_by_locks, c, v)
            c.section("a host that joins finds the locks of files created alone",
                      created_alone, c, v)
            c.section("a host that was alone sees a joining host's changes", joined, c, v)
            c.section("fsx with mmap, a second host mounted", fsx_not_alone, c, v)
            c.section("page cache coherency between two hosts", two_hosts, c, v)
            c.section("a handover drops the giver's cached pages", handover_cached, c, v)
            c.section("a read-only mount reads around the page cache", readonly_mount, c, v)
        finally:
            vt.unmount_quiet(v.mnt_b)
            c.vmfsd_gone(v.image, "after unmounting host B", v.mnt_b)
        c.section("symlinks up to 4095 bytes", symlinks, c, v)
        v.unmount()
    c.section("a small inode cache (-o inode_cache=16)", small_inode_cache, c)


if __name__ == "__main__":
    vt.main("integration-posix", body)
