#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Lock handover between two hosts (docs/cluster.md §4.7): two real vmfsd
processes (hosts A and B) on one image.

 1. standby: B cannot open A's open file at all until it accepts a
    handover; then B's read-only opens work (and read A's data), its
    read-write opens are still EBUSY;
 2. give under a running writer: a thread on A writes numbered records
    as fast as it can while A gives the lock to B; every write A was told
    succeeded is on disk as B reads it, and no write of A succeeds after
    the give returned; A's old descriptor fails with EIO; B opens
    read-write (A's descriptor still open) and writes; user.vmfsd.lock names B on
    both hosts;
 3. refusals: a give to a wrong generation (ESTALE) or to our own slot
    (EINVAL), a give by a host that holds nothing (ENOLCK): A keeps
    writing;
 4. unused handover: A gives the lock to B, B's QEMU "dies" before its
    read-write open (B closes its standby descriptor): B gives the lock
    back on that close, and A takes it again;
 5. back and forth: ten handovers A -> B -> A ..., the file's counter
    continuous;
 6. a give holds up no other operation of the source: with A's device
    slowed, a chmod on A during the give's commit returns long before it.

Env: VMFSD, MKFS.  Exit 0 pass, 1 fail, 77 no /dev/fuse or not root.
"""
import errno
import os
import stat
import struct
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import vmfstest as vt  # noqa: E402

MKFS = vt.mkfs_exe()
X = "user.vmfsd.handover"
REC = 4096


def ident(mnt):
    """(slot, generation, host) of the mount, from the handover attribute."""
    s, g, h = os.getxattr(mnt, X).decode().split(" ", 2)
    return int(s), int(g), h


def give(path, to):
    os.setxattr(path, X, ("give %d %d" % (to[0], to[1])).encode())


def lock_of(path):
    return os.getxattr(path, "user.vmfsd.lock").decode()


def open_errno(path, flags):
    try:
        fd = os.open(path, flags)
    except OSError as e:
        return e.errno
    os.close(fd)
    return 0


def record(i):
    return struct.pack("<Q", i) * (REC // 8)


def body(c):
    tmp, img, (ma, mb) = vt.scratch("handover", "ab")
    try:
        subprocess.run([MKFS, "-q", "-s", "2G", "-H", "4", "--hb-interval", "200",
                        "--hb-timeout", "2000", img], check=True)
        vt.mount_daemon(img, ma, "A")
        vt.mount_daemon(img, mb, "B")
        c.section("standby and give under a writer", give_under_writer, c, ma, mb)
        c.section("refusals", refusals, c, ma, mb)
        c.section("unused handover comes back", unused, c, ma, mb)
        c.section("ten handovers back and forth", back_and_forth, c, ma, mb)
        c.section("a give holds up no other operation of the source",
                  give_holds_up_nothing, c, img, ma, mb)
    finally:
        for m in (ma, mb):
            vt.unmount_quiet(m)
        c.vmfsd_gone(img)
        subprocess.run(["rm", "-rf", tmp])


def give_under_writer(c, ma, mb):
    pa, pb = os.path.join(ma, "disk-flat"), os.path.join(mb, "disk-flat")
    fa = os.open(pa, os.O_CREAT | os.O_RDWR, 0o644)
    os.pwrite(fa, record(0) * 70, 0)    # the size a disk has: fixed
    os.fsync(fa)
    time.sleep(1.5)                     # B's attribute cache
    c.eq(open_errno(pb, os.O_RDONLY), errno.EBUSY, "B's read-only open before accept")
    os.setxattr(pb, X, b"accept")
    fb = os.open(pb, os.O_RDONLY)       # standby
    c.eq(struct.unpack("<Q", os.pread(fb, 8, 0))[0], 0, "B reads A's data on standby")
    c.eq(open_errno(pb, os.O_RDWR), errno.EBUSY, "B's read-write open while A holds the lock")

    done = {"last_ok": -1, "after": [], "err": None}
    given = threading.Event()
    stop = threading.Event()

    def writer():
        i = 1
        while not stop.is_set():
            was_given = given.is_set()
            try:
                os.pwrite(fa, record(i), (i % 64) * REC + 4 * REC)
            except OSError as e:
                done["err"] = e.errno
                return
            if was_given:
                done["after"].append(i)
            done["last_ok"] = i
            i += 1

    t = threading.Thread(target=writer)
    t.start()
    time.sleep(0.3)
    to = ident(mb)
    give(pa, to)
    given.set()
    time.sleep(0.3)
    stop.set()
    t.join()
    c.eq(done["after"], [], "A's writes that succeeded after the give returned")
    c.eq(done["err"], errno.EIO, "A's writer stopped by")
    c.check(done["last_ok"] > 0, "A's writer wrote before the give (%d)" % done["last_ok"])
    # every write A was told succeeded is there when B reads it
    last = done["last_ok"]
    for i in range(max(1, last - 63), last + 1):
        got = struct.unpack("<Q", os.pread(fb, 8, (i % 64) * REC + 4 * REC))[0]
        if got != i:
            c.fail("record %d: B reads %d, A had written it" % (i, got))
            break
    c.check(lock_of(pa).startswith("EXCL by B"), "A sees the lock as B's: " + lock_of(pa))
    c.check(lock_of(pb).startswith("EXCL by B"), "B sees the lock as its own: " + lock_of(pb))
    try:
        os.pwrite(fa, record(7), 0)
        c.fail("A's old descriptor still writes after the give")
    except OSError as e:
        c.eq(e.errno, errno.EIO, "A's old descriptor write")
    # A still has its descriptor open (and never releases): only the
    # handed-over record lets B's read-write open succeed
    fw = os.open(pb, os.O_RDWR)
    os.pwrite(fw, record(1000), 0)
    os.fsync(fw)
    c.eq(open_errno(pa, os.O_RDWR), errno.EBUSY, "A's new read-write open after the give")
    os.close(fa)
    os.close(fb)
    os.close(fw)


def refusals(c, ma, mb):
    pa, pb = os.path.join(ma, "r-flat"), os.path.join(mb, "r-flat")
    fa = os.open(pa, os.O_CREAT | os.O_RDWR, 0o644)
    os.pwrite(fa, b"x" * 512, 0)
    s, g, _ = ident(mb)
    c.eq(c.errno_of(give, pa, (s, g + 1)), errno.ESTALE, "give to a wrong generation")
    me = ident(ma)
    c.eq(c.errno_of(give, pa, me), errno.EINVAL, "give to our own slot")
    time.sleep(1.5)
    c.eq(c.errno_of(give, pb, ident(ma)), errno.ENOLCK, "give by a host that holds nothing")
    c.eq(os.pwrite(fa, b"y" * 512, 0), 512, "A still writes after the refused gives")
    os.close(fa)


def unused(c, ma, mb):
    pa, pb = os.path.join(ma, "u-flat"), os.path.join(mb, "u-flat")
    fa = os.open(pa, os.O_CREAT | os.O_RDWR, 0o644)
    os.pwrite(fa, b"u" * 512, 0)
    time.sleep(1.5)
    os.setxattr(pb, X, b"accept")
    fb = os.open(pb, os.O_RDONLY)
    give(pa, ident(mb))
    c.check(lock_of(pb).startswith("EXCL by B"), "lock is B's: " + lock_of(pb))
    os.close(fb)                        # B never opened it read-write
    vt.wait_for(lambda: lock_of(pa) == "free", 5, "B gives the unused lock back")
    c.eq(lock_of(pa), "free", "lock after B's standby close")
    os.close(fa)
    fa = os.open(pa, os.O_RDWR)
    c.eq(os.pwrite(fa, b"v" * 512, 0), 512, "A writes again after taking the lock back")
    os.close(fa)


def back_and_forth(c, ma, mb):
    hosts = [(ma, "A"), (mb, "B")]
    name = "bf-flat"
    src = 0
    fd = os.open(os.path.join(ma, name), os.O_CREAT | os.O_RDWR, 0o644)
    n = 0
    os.pwrite(fd, struct.pack("<Q", n), 0)
    time.sleep(1.5)
    for k in range(10):
        dst = 1 - src
        pd = os.path.join(hosts[dst][0], name)
        os.setxattr(pd, X, b"accept")
        standby = os.open(pd, os.O_RDONLY)
        for _ in range(5):
            n += 1
            os.pwrite(fd, struct.pack("<Q", n), 0)
        give(os.path.join(hosts[src][0], name), ident(hosts[dst][0]))
        nfd = os.open(pd, os.O_RDWR)
        got = struct.unpack("<Q", os.pread(nfd, 8, 0))[0]
        if got != n:
            c.fail("handover %d (%s -> %s): counter %d, want %d"
                   % (k, hosts[src][1], hosts[dst][1], got, n))
        try:
            os.pwrite(fd, b"zzzzzzzz", 0)
            c.fail("handover %d: the old holder still writes" % k)
        except OSError as e:
            if e.errno != errno.EIO:
                c.fail("handover %d: old holder's write: %s" % (k, e))
        os.close(fd)
        os.close(standby)
        fd = nfd
        src = dst
    os.close(fd)
    c.check(n == 50, "counter continuous through ten handovers (%d)" % n)


def give_holds_up_nothing(c, img, ma, mb):
    """A give commits what the source host has pending before it moves
    the lock.  It did so holding meta_lock through the device's writes
    and flushes, so every other operation of the host (its other VMs'
    I/O too) waited for the give.  A is mounted again with
    debug_batch_gap_us=300000: its device lands the writes of a batch
    0.3 s apart, so committing a few new files takes seconds.  A chmod
    of another file on A, made while the give commits, must return at
    least a second before the give does."""
    vt.unmount_daemon(img, ma)
    vt.mount_daemon(img, ma, "A", opts=("debug_batch_gap_us=300000",))
    pa, pb = os.path.join(ma, "g-flat"), os.path.join(mb, "g-flat")
    other = os.path.join(ma, "g-other")
    fa = os.open(pa, os.O_CREAT | os.O_RDWR, 0o644)
    os.pwrite(fa, b"g" * 4096, 0)
    os.fsync(fa)
    os.close(os.open(other, os.O_CREAT | os.O_WRONLY, 0o644))
    os.mkdir(os.path.join(ma, "g-new"))
    time.sleep(1.5)
    os.setxattr(pb, X, b"accept")
    fb = os.open(pb, os.O_RDONLY)
    for i in range(6):                  # what the give's commit carries
        os.close(os.open(os.path.join(ma, "g-new", "f%d" % i), os.O_CREAT | os.O_WRONLY, 0o644))
    res = {}

    def giver():
        try:
            give(pa, ident(mb))
        except OSError as e:
            res["err"] = e
        res["give"] = time.monotonic()

    t = threading.Thread(target=giver)
    t.start()
    time.sleep(0.3)
    os.chmod(other, 0o600)
    chmod_done = time.monotonic()
    t.join()
    c.check("err" not in res, "the give: %r" % res.get("err"))
    c.check(res["give"] - chmod_done >= 1.0,
            "A's chmod returned %.2f s before the give did (at least 1 s expected: "
            "the give held meta_lock while its commit was written)"
            % (res["give"] - chmod_done))
    vt.log("chmod during the give: returned %.2f s before the give" % (res["give"] - chmod_done))
    c.eq(stat.S_IMODE(os.stat(other).st_mode), 0o600, "the chmod made during the give")
    c.check(lock_of(pb).startswith("EXCL by B"), "B holds the lock: " + lock_of(pb))
    os.close(fa)
    os.close(fb)


if __name__ == "__main__":
    vt.main(os.path.basename(__file__), body)
