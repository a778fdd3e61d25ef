#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Three machines on one iSCSI LUN: istgt in its own network namespace
exports a sparse file; hosts A, B and C each run vmfsd in a network
namespace of their own (nsenter --net), so the only thing they share is the
LUN, reached through libiscsi over their own veth.  Heartbeat 500 ms, dead
after 5 s (so D, the I/O timeout, is 1 s).

 1. mkfs.vmfsd and three mounts on the iscsi:// URL; vmfsd --status on the
    URL lists three live hosts (no persistent reservations: the volume was
    made without --pr-fence; test_iscsi_pr.py covers those);
 2. data written and fsync'd on A reads back on B and C;
 3. conflicts: a file open for writing on A is EBUSY for writers and readers
    on B and C, and user.vmfsd.lock names A;
 4. kill -9: A is killed while holding that lock; B opens the file within
    the timeout plus a few seconds, A's data is intact;
 5. isolation by link cut: C's cable is pulled while it writes a file; B
    takes the file over; after the cable is back none of C's writes landed
    after the takeover (C fenced itself: its I/O timed out within D);
 6. unmount everywhere; fsck.vmfsd -n on the URL is clean.

Env: VMFSD, MKFS, FSCK, ISCSI_TOOL.  Exit 0 pass, 1 fail, 77 skip.
"""
import errno
import multiprocessing
import os
import signal
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, ".."))
import san  # noqa: E402
import vmfstest as vt  # noqa: E402

TIMEOUT_S = 5.0
INTERVAL_MS = 500
TOOL = os.environ.get("ISCSI_TOOL")
CHECK = vt.Checker(os.path.basename(__file__))   # replaced by vt.main's in body()


def fail(msg):
    return CHECK.fail(msg)

log = vt.log


def mount(h, url, mnt, name, opts=()):
    o = ",".join(["host=" + name] + list(opts))
    r = h.run([vt.vmfsd_exe(), "-o", o, url, mnt], timeout=120)
    if r.returncode != 0:
        raise RuntimeError("mount %s: %s" % (name, r.stderr.strip()))


def pr_state(h, url):
    """(set of registered keys, holder key) as iscsi_tool prints them."""
    r = h.run([TOOL, "pr", url], timeout=60)
    if r.returncode:
        raise RuntimeError("iscsi_tool pr: " + r.stderr.strip())
    lines = r.stdout.splitlines()
    keys = set(lines[0].split()[1:])
    holder = lines[1].split()[1]
    return keys, holder


def status(h, url):
    r = h.run([vt.vmfsd_exe(), "--status", url], timeout=60)
    return r.returncode, r.stdout + r.stderr


def section1(s, hosts, url, mnts):
    rc, out = status(hosts[0], url)
    log(out.strip())
    for name in "ABC":
        if not any((" %s " % name) in l for l in out.splitlines()):
            fail("vmfsd --status on the URL does not list host %s" % name)
    keys, holder = pr_state(hosts[0], url)
    if keys or holder != "0":
        fail("a volume made without --pr-fence registered keys %s (holder %s)"
             % (sorted(keys), holder))


def section2(mnts):
    a, b, c = mnts
    data = os.urandom(3 << 20)
    with open(os.path.join(a, "shared.bin"), "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    time.sleep(1.5)
    for m, n in ((b, "B"), (c, "C")):
        got = open(os.path.join(m, "shared.bin"), "rb").read()
        if got != data:
            fail("data written on A reads back differently on %s (%d bytes)" % (n, len(got)))
    log("read-back: 3 MiB fsync'd on A is identical on B and C")


def section3(mnts):
    a, b, c = mnts
    fd = os.open(os.path.join(a, "vm-flat.vmdk"), os.O_CREAT | os.O_RDWR, 0o644)
    os.pwrite(fd, b"A" * 65536, 0)
    os.fsync(fd)
    time.sleep(1.2)
    for m, mode, what in ((b, os.O_RDWR, "B write"), (c, os.O_RDWR, "C write"),
                          (c, os.O_RDONLY, "C read")):
        e = CHECK.errno_of(os.open, os.path.join(m, "vm-flat.vmdk"), mode)
        if e != errno.EBUSY:
            fail("conflict: %s open of a file A holds for writing: %s, expected EBUSY"
                 % (what, os.strerror(e) if e else "succeeded"))
    holder = os.getxattr(os.path.join(b, "vm-flat.vmdk"), "user.vmfsd.lock").decode()
    if "A" not in holder:
        fail("user.vmfsd.lock on B says %r, expected host A" % holder)
    log("conflicts: EBUSY on B and C while A writes; lock: %s" % holder)
    return fd


def section4(url, hosts, mnts, fd):
    a, b = mnts[0], mnts[1]
    pids = vt.pids_of_vmfsd(url, a)
    if not pids:
        fail("kill -9: no vmfsd process found for A")
        return
    for p in pids:
        os.kill(p, signal.SIGKILL)
    t = time.monotonic()
    fdb = None
    while fdb is None:
        try:
            fdb = os.open(os.path.join(b, "vm-flat.vmdk"), os.O_RDWR)
        except OSError as e:
            if time.monotonic() - t > TIMEOUT_S + 10:
                fail("kill -9: B still cannot open A's file %.1f s later: %s"
                     % (time.monotonic() - t, e))
                break
            time.sleep(0.05)
    if fdb is not None:
        log("kill -9: B opened A's file %.1f s after A was killed (timeout %.1f s)"
            % (time.monotonic() - t, TIMEOUT_S))
        if os.pread(fdb, 65536, 0) != b"A" * 65536:
            fail("kill -9: A's fsync'd data is not intact on B")
        os.close(fdb)
    try:
        os.close(fd)
    except OSError:
        pass
    vt.unmount_quiet(a)


def c_writer(path, okfile):
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    out = open(okfile, "w")
    seq = 0
    while True:
        seq += 1
        try:
            os.pwrite(fd, struct.pack("<Q", seq) * 512, (seq % 64) * 4096)
            os.fsync(fd)
        except OSError as e:
            out.write("err %d %.3f %d\n" % (seq, time.time(), e.errno))
            out.flush()
            time.sleep(0.05)
            continue
        out.write("ok %d %.3f\n" % (seq, time.time()))
        out.flush()


def section5(url, hosts, mnts, workdir):
    b, c = mnts[1], mnts[2]
    hc = hosts[2]
    okfile = os.path.join(workdir, "c-ok")
    w = multiprocessing.Process(target=c_writer, args=(os.path.join(c, "iso.dat"), okfile))
    w.start()
    time.sleep(1.0)
    hc.link(False)
    t0 = time.time()
    log("isolation: C's cable pulled")
    took = None
    while time.time() - t0 < TIMEOUT_S + 20:
        try:
            fdb = os.open(os.path.join(b, "iso.dat"), os.O_RDWR)
            took = time.time()
            break
        except OSError:
            time.sleep(0.05)
    if took is None:
        fail("isolation: B never got the lock of C's file")
        hc.link(True)
        w.kill()
        return
    log("isolation: B took C's file over %.1f s after the cable was pulled" % (took - t0))
    os.pwrite(fdb, b"\xbb" * 4096 * 64, 0)
    os.fsync(fdb)
    hc.link(True)
    log("isolation: C's cable back")
    time.sleep(4.0)          # C's writer keeps trying with the path back
    w.kill()
    w.join()
    data = os.pread(fdb, 4096 * 64, 0)
    os.close(fdb)
    oks = [l.split() for l in open(okfile) if l.startswith("ok")]
    errs = [l.split() for l in open(okfile) if l.startswith("err")]
    late = [o for o in oks if float(o[2]) > took]
    if late:
        fail("isolation: C's write %s was acknowledged after B's takeover" % late[0])
    if data != b"\xbb" * 4096 * 64:
        bad = next(i for i in range(0, len(data), 4096) if data[i:i + 4096] != b"\xbb" * 4096)
        fail("isolation: a write of the isolated host landed after the takeover "
             "(block %d: seq %d)" % (bad // 4096, struct.unpack("<Q", data[bad:bad + 8])[0]))
    log("isolation: C wrote %d blocks before the cut, got %d errors after; none of its "
        "writes landed after the takeover" % (len(oks), len(errs)))
    vt.unmount_quiet(c)


def run(c, title, fn, *args):
    """c.section, keeping what FN returns (None when it raised)."""
    box = [None]

    def call():
        box[0] = fn(*args)
    c.section(title, call)
    return box[0]


def body(c):
    global CHECK
    CHECK = c       # the checker whose failures vt.main counts
    san.require_netns()
    if not TOOL:
        print("FAIL: ISCSI_TOOL not set")
        sys.exit(1)
    workdir = tempfile.mkdtemp(prefix="vmfsd-it-iscsi-", dir="/var/tmp")
    mnts = [os.path.join(workdir, m) for m in "abc"]
    for m in mnts:
        os.mkdir(m)
    try:
        with san.San(2 << 30) as s:
            hosts = [s.add_host() for _ in range(3)]
            url = s.url
            t = time.monotonic()
            r = hosts[0].run([vt.mkfs_exe(), "-q", "-H", "8", "--hb-interval",
                              str(INTERVAL_MS), "--hb-timeout", str(int(TIMEOUT_S * 1000)),
                              url], timeout=300)
            if r.returncode:
                fail("mkfs.vmfsd on %s: %s" % (url, r.stderr.strip()))
                return
            log("mkfs.vmfsd %s: %.1f s" % (url, time.monotonic() - t))
            try:
                for h, m, n in zip(hosts, mnts, "ABC"):
                    t = time.monotonic()
                    mount(h, url, m, n)
                    log("mount %s in namespace %s: %.1f s" % (n, h.ns, time.monotonic() - t))
                run(c, "1. status", section1, s, hosts, url, mnts)
                run(c, "2. read-back across hosts", section2, mnts)
                fd = run(c, "3. EBUSY across hosts", section3, mnts)
                run(c, "4. kill -9 takeover", section4, url, hosts, mnts, fd)
                run(c, "5. isolation by link cut", section5, url, hosts, mnts, workdir)
            finally:
                for m in mnts:
                    vt.unmount_quiet(m)
                CHECK.vmfsd_gone(url)
            if vt.fsck_exe():
                r = hosts[1].run([vt.fsck_exe(), "-n", url], timeout=600)
                if r.returncode != 0:
                    fail("fsck.vmfsd -n %s after the run: exit %d\n%s"
                         % (url, r.returncode, r.stdout + r.stderr))
                else:
                    log("fsck.vmfsd -n on the URL: clean")
    finally:
        for m in mnts:
            vt.unmount_quiet(m)
        subprocess.run(["rm", "-rf", workdir])


if __name__ == "__main__":
    vt.main(os.path.basename(__file__), body)
