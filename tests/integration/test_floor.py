#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""bench/fuse_floor gives real results, so the benchmark's "floor" section
(bench/run.sh) cannot silently measure nothing.

Mounts the in-memory filesystem (multi-threaded loop, then -s) and checks
what the benchmark's workloads rely on: a created file is found and its
stat gives the size written and its bytes read back, an unlinked name is
gone (also at once through the 1 s negative entry), a directory lists what
it holds and can be removed when empty; /big has the size asked for, reads
zeros through O_DIRECT and the page cache and keeps its size when written;
extended attributes are absent (ENODATA, not ENOTSUP); the per-opcode
counters written on SIGUSR1 saw the requests; the daemon exits 0 when
unmounted."""

import errno
import mmap
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import vmfstest as vt  # noqa: E402  (tests/vmfstest.py: the shared helpers)
from vmfstest import MiB  # noqa: E402

BIG = 3 * 1024 * MiB + 4096     # not a power of two: the end is checked


def counters(stats, pid):
    """Asks fuse_floor for its counters (SIGUSR1) and returns them."""
    def read():
        c = {}
        try:
            with open(stats) as f:
                for line in f:
                    k, v = line.split()
                    c[k] = int(v)
        except FileNotFoundError:
            pass
        return c
    seq = read().get("seq", 0)
    os.kill(pid, signal.SIGUSR1)
    return vt.wait_for(lambda: (lambda c: c if c.get("seq", 0) > seq else None)(read()),
                       10, "fuse_floor's counters")


def exercise(c, mnt, stats, pid):
    d = os.path.join(mnt, "dir")
    os.mkdir(d)
    names = [os.path.join(d, "f%03d.vmx" % i) for i in range(50)]
    for i, p in enumerate(names):
        fd = os.open(p, os.O_CREAT | os.O_WRONLY, 0o644)
        os.write(fd, bytes([i]) * (100 + i))
        os.close(fd)
    for i, p in enumerate(names):
        c.eq(os.stat(p).st_size, 100 + i, "size of %s after writing %d bytes" % (p, 100 + i))
        with open(p, "rb") as f:
            c.eq(f.read(), bytes([i]) * (100 + i), "bytes of %s" % p)
    c.eq(sorted(os.listdir(d)), sorted(os.path.basename(p) for p in names), "listing")
    with open(names[0], "r+b") as f:
        f.truncate(10)
    c.eq(os.stat(names[0]).st_size, 10, "size after truncate to 10")
    c.raises(errno.ENODATA, "getxattr of an absent attribute", os.getxattr, names[1],
             "user.nothing")
    for p in names:
        os.unlink(p)
    for p in names[:5]:
        c.check(not os.path.exists(p), "%s still there after unlink" % p)
    c.raises(errno.ENOENT, "stat of an unlinked name", os.stat, names[7])
    c.eq(os.listdir(d), [], "listing after unlinking everything")
    os.rmdir(d)
    c.check(not os.path.exists(d), "directory still there after rmdir")

    big = os.path.join(mnt, "big")
    c.eq(os.stat(big).st_size, BIG, "size of /big")
    buf = mmap.mmap(-1, MiB)
    buf.write(b"\xff" * MiB)
    fd = os.open(big, os.O_RDWR | os.O_DIRECT)
    try:
        c.eq(os.pwritev(fd, [buf], 2 * MiB), MiB, "O_DIRECT write of 1 MiB to /big")
        for off in (0, 2 * MiB, BIG - MiB):
            buf.seek(0)
            buf.write(b"\xff" * MiB)
            c.eq(os.preadv(fd, [buf], off), MiB, "O_DIRECT read of 1 MiB of /big at %d" % off)
            c.check(buf[:] == bytes(MiB), "/big at %d read non-zero bytes" % off)
        c.eq(os.preadv(fd, [buf], BIG - 4096), 4096, "O_DIRECT read across the end of /big")
        c.eq(os.preadv(fd, [buf], BIG), 0, "O_DIRECT read at the end of /big")
    finally:
        os.close(fd)
    with open(big, "rb") as f:
        f.seek(5 * MiB + 3)
        c.eq(f.read(100000), bytes(100000), "buffered read of /big")
    c.eq(os.stat(big).st_size, BIG, "size of /big after writes inside it")

    n = counters(stats, pid)
    for op, least in (("CREATE", 50), ("UNLINK", 50), ("WRITE", 51), ("LOOKUP", 1),
                      ("GETXATTR", 1), ("READ", 4), ("MKDIR", 1), ("RMDIR", 1)):
        c.check(n.get(op, 0) >= least, "counter %s = %d, expected at least %d: %r"
                % (op, n.get(op, 0), least, n))


def run_one(c, tmp, args):
    mnt = os.path.join(tmp, "mnt" + "".join(args).replace("-", "_"))
    stats = mnt + ".stats"
    os.mkdir(mnt)
    p = subprocess.Popen([os.environ["FUSE_FLOOR"], "--big-size", str(BIG), "--stats", stats]
                         + args + [mnt], stderr=subprocess.PIPE, text=True)
    try:
        vt.wait_for(lambda: vt.mounted_at(mnt) or p.poll() is not None, 20, "fuse_floor to mount")
        if not c.check(vt.mounted_at(mnt), "fuse_floor %s did not mount" % args):
            return
        c.section("fuse_floor %s" % (" ".join(args) or "(multi-threaded)"),
                  exercise, c, mnt, stats, p.pid)
    finally:
        if vt.mounted_at(mnt):
            r = vt.fusermount_u(mnt)
            c.eq(r.returncode, 0, "fusermount3 -u %s: %s" % (mnt, r.stderr))
        try:
            rc = p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()
            rc = p.wait()
            c.fail("fuse_floor did not exit after unmount")
        err = p.stderr.read()
        c.eq(rc, 0, "fuse_floor's exit status (stderr: %s)" % err[-500:])
        c.check("CREATE " in err, "fuse_floor printed no request counts at exit: %r" % err[-500:])


def body(c):
    floor = os.environ.get("FUSE_FLOOR")
    if not floor or not os.access(floor, os.X_OK):
        c.fail("FUSE_FLOOR does not name an executable (%r)" % floor)
        return
    tmp, _, _ = vt.scratch("floor", [])
    try:
        run_one(c, tmp, [])
        run_one(c, tmp, ["-s"])
    finally:
        for f in os.listdir(tmp):
            p = os.path.join(tmp, f)
            if os.path.isdir(p) and not vt.mounted_at(p):
                os.rmdir(p)
            elif os.path.isfile(p):
                os.unlink(p)
        if not os.listdir(tmp):
            os.rmdir(tmp)


if __name__ == "__main__":
    vt.main("integration-floor", body)
