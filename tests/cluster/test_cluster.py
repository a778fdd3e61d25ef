#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Three hosts on one volume: three real vmfsd processes with different host
names on one image (heartbeat 200 ms, dead after 2 s).

 1. storm: every host creates, renames (across shared directories) and
    unlinks files at the same time; then every host lists exactly the
    union of what survived, and fsck.vmfsd -n is clean;
 2. crossing renames: each host creates a file in one shared directory,
    then all rename theirs into the next directory of a cycle at once
    (A x->y, B y->z, C z->x); every rename succeeds (a rename locks both
    directories: taken source first, each host held one and waited for the
    next host's, and all failed with EBUSY), and every file ends where its
    host moved it;
 3. conflicts: a file open for writing on A is EBUSY for writers and readers
    on B and C, and user.vmfsd.lock names A;
 4. kill -9: A is killed while holding that lock in the middle of metadata
    work; B opens the file within the timeout plus a few seconds, A's
    fsync'd data is there, fsck.vmfsd -n is clean;
 5. storage isolation: C's device hangs while it writes a file; C fences
    itself, B takes its lock over, and when C's device comes back none of
    C's writes lands after the takeover (write-order check on the data).

Env: VMFSD, MKFS, FSCK.  Exit 0 pass, 1 fail, 77 no /dev/fuse or not root.
"""
import errno
import json
import multiprocessing
import os
import random
import signal
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import vmfstest as vt  # noqa: E402  (tests/vmfstest.py: the shared helpers)

MKFS = vt.mkfs_exe()
TIMEOUT_S = 2.0
CHECK = vt.Checker(os.path.basename(__file__))
fail = CHECK.fail
failures = CHECK.failures
log = vt.log


def mount(img, mnt, host, extra=""):
    vt.mount_daemon(img, mnt, host, [extra] if extra else [])


def storm_worker(mnt, tag, seed, q):
    """Creates, renames and unlinks in shared directories; reports the
    names it expects to survive."""
    rnd = random.Random(seed)
    mine = {}
    try:
        for i in range(150):
            op = rnd.random()
            if op < 0.5 or not mine:
                d = rnd.choice("xyz")
                name = "%s_%d" % (tag, i)
                with open(os.path.join(mnt, d, name), "wb") as f:
                    f.write(("%s %d\n" % (tag, i)).encode() * rnd.randint(1, 300))
                mine[name] = d
            elif op < 0.8:
                name = rnd.choice(sorted(mine))
                nd = rnd.choice("xyz")
                nn = name + "r"
                os.rename(os.path.join(mnt, mine[name], name), os.path.join(mnt, nd, nn))
                del mine[name]
                mine[nn] = nd
            else:
                name = rnd.choice(sorted(mine))
                os.unlink(os.path.join(mnt, mine[name], name))
                del mine[name]
        q.put((tag, mine, None))
    except Exception as e:  # reported by the parent
        q.put((tag, mine, "%s: %r (op %d)" % (tag, e, i)))


def storm(mnts):
    for d in "xyz":
        os.mkdir(os.path.join(mnts[0], d))
    time.sleep(1.5)
    q = multiprocessing.Queue()
    procs = [multiprocessing.Process(target=storm_worker, args=(m, t, i, q))
             for i, (m, t) in enumerate(zip(mnts, "ABC"))]
    t0 = time.time()
    for p in procs:
        p.start()
    expect = {d: set() for d in "xyz"}
    for _ in procs:
        tag, mine, err = q.get(timeout=600)
        if err:
            fail("storm worker " + err)
        for name, d in mine.items():
            expect[d].add(name)
    for p in procs:
        p.join()
    log("storm: 3 hosts x 150 create/rename/unlink in 3 shared directories: %.1f s"
        % (time.time() - t0))
    time.sleep(1.5)  # entry/attr timeouts and the commit interval
    for m, tag in zip(mnts, "ABC"):
        for d in "xyz":
            got = set(os.listdir(os.path.join(m, d)))
            if got != expect[d]:
                fail("storm: host %s lists %s/: missing %s, unexpected %s" % (
                    tag, d, sorted(expect[d] - got)[:5], sorted(got - expect[d])[:5]))
    # contents are intact everywhere
    for d in "xyz":
        for name in sorted(expect[d])[:30]:
            data = open(os.path.join(mnts[2], d, name), "rb").read()
            tag, i = name.rstrip("r").split("_")
            if not data or data != ("%s %s\n" % (tag, i)).encode() * (len(data) // len(
                    ("%s %s\n" % (tag, i)).encode())):
                fail("storm: %s/%s has wrong content" % (d, name))


def crossing_worker(mnt, tag, src, dst, rounds, barrier, q):
    """Each round: creates a file in SRC (this host now holds SRC's lock
    until its next commit), waits for the other hosts to do the same, then
    renames it into DST, whose lock the next host holds."""
    i = 0
    try:
        for i in range(rounds):
            p = os.path.join(mnt, src, "%s_c%d" % (tag, i))
            with open(p, "wb") as f:
                f.write(tag.encode())
            barrier.wait(timeout=120)
            os.rename(p, os.path.join(mnt, dst, "%s_c%d" % (tag, i)))
        q.put((tag, None))
    except Exception as e:  # reported by the parent
        barrier.abort()
        q.put((tag, "%s: %r (round %d)" % (tag, e, i)))


def crossing(mnts, rounds=5):
    moves = list(zip(mnts, "ABC", "xyz", "yzx"))
    q = multiprocessing.Queue()
    barrier = multiprocessing.Barrier(len(moves))
    procs = [multiprocessing.Process(target=crossing_worker,
                                     args=(m, t, s, d, rounds, barrier, q))
             for m, t, s, d in moves]
    t0 = time.time()
    for p in procs:
        p.start()
    for _ in procs:
        tag, err = q.get(timeout=600)
        if err:
            fail("crossing renames: " + err)
    for p in procs:
        p.join()
    log("crossing renames: 3 hosts x %d rounds of create, then rename into the next "
        "host's directory: %.1f s" % (rounds, time.time() - t0))
    time.sleep(1.5)  # entry/attr timeouts and the commit interval
    for m, tag, src, dst in moves:
        got = [x for x in os.listdir(os.path.join(mnts[0], dst)) if x.startswith(tag + "_c")]
        left = [x for x in os.listdir(os.path.join(mnts[0], src)) if x.startswith(tag + "_c")]
        if len(got) != rounds or left:
            fail("crossing renames: host %s moved %d of %d files into %s/, %d left in %s/"
                 % (tag, len(got), rounds, dst, len(left), src))


def conflicts_and_kill(img, mnts):
    a, b, c = mnts
    pa = os.path.join(a, "vm-flat.vmdk")
    fd = os.open(pa, os.O_CREAT | os.O_RDWR, 0o644)
    os.pwrite(fd, b"A" * 65536, 0)
    os.fsync(fd)
    time.sleep(1.2)
    for m, mode, what in ((b, os.O_RDWR, "B write"), (c, os.O_RDWR, "C write"),
                          (c, os.O_RDONLY, "C read")):
        try:
            os.close(os.open(os.path.join(m, "vm-flat.vmdk"), mode))
            fail("conflict: %s open of a file A holds for writing succeeded" % what)
        except OSError as e:
            if e.errno != errno.EBUSY:
                fail("conflict: %s open: %s, expected EBUSY" % (what, e))
    holder = os.getxattr(os.path.join(b, "vm-flat.vmdk"), "user.vmfsd.lock").decode()
    if "A" not in holder:
        fail("user.vmfsd.lock on B says %r, expected host A" % holder)
    log("conflicts: EBUSY on B and C while A writes; lock: %s" % holder)
    # vmfsd --status names the locked file by its path (through a mount of
    # the volume on this machine), not only by its inode number
    r = subprocess.run([vt.vmfsd_exe(), "--status", "--json", img], capture_output=True,
                       text=True, timeout=60)
    ino = os.stat(pa).st_ino
    lk = [x for x in json.loads(r.stdout)["locks"] if x["object"] == "inode" and x["id"] == ino] \
        if r.returncode == 0 else []
    want = [os.path.join(m, "vm-flat.vmdk") for m in mnts]
    if not lk or lk[0].get("path") not in want:
        fail("vmfsd --status: inode %d shown as %r, expected one of %s (%s)" % (
            ino, lk, want, r.stderr.strip()))
    else:
        log("vmfsd --status: inode %d (%s): %s" % (ino, lk[0]["path"], lk[0]["mode"]))

    # A keeps doing metadata work while it is killed.
    def busy(mnt):
        i = 0
        while True:
            p = os.path.join(mnt, "x", "busy%d" % i)
            open(p, "w").write("x" * (i % 5000))
            if i % 3:
                os.rename(p, os.path.join(mnt, "y", "busy%d" % i))
            i += 1
    worker = multiprocessing.Process(target=busy, args=(a,))
    worker.start()
    time.sleep(1.0)
    for p in vt.pids_of_vmfsd(img, a):
        os.kill(p, signal.SIGKILL)
    t = time.time()
    worker.kill()
    worker.join()
    while True:
        try:
            fdb = os.open(os.path.join(b, "vm-flat.vmdk"), os.O_RDWR)
            break
        except OSError as e:
            if time.time() - t > TIMEOUT_S + 10:
                fail("kill -9: B still cannot open A's file %.1f s later: %s" % (
                    time.time() - t, e))
                fdb = None
                break
            time.sleep(0.05)
    if fdb is not None:
        took = time.time() - t
        log("kill -9: B opened A's file %.1f s after A was killed (timeout %.1f s)"
            % (took, TIMEOUT_S))
        if os.pread(fdb, 65536, 0) != b"A" * 65536:
            fail("kill -9: A's fsync'd data is not intact on B")
        os.close(fdb)
    try:
        os.close(fd)    # A's mount is gone with its daemon
    except OSError:
        pass
    subprocess.run(["fusermount3", "-uz", a], capture_output=True)


def isolation(img, mnts, workdir):
    """C's storage hangs; C must fence before B takes its lock, and after
    its device comes back no write of C's may land."""
    b, c = mnts[1], mnts[2]
    vt.unmount_quiet(c)
    while vt.pids_of_vmfsd(img, c):
        time.sleep(0.1)
    # freeze 2 s after mount, for 8 s (well past the 2 s timeout)
    mount(img, c, "C", "freeze_io_after=2000,freeze_io_for=8000")
    okfile = os.path.join(workdir, "c-ok")

    def writer():
        fd = os.open(os.path.join(c, "iso.dat"), os.O_CREAT | os.O_RDWR, 0o644)
        out = open(okfile, "w")
        seq = 0
        while seq < 100000:
            seq += 1
            try:
                os.pwrite(fd, struct.pack("<Q", seq) * 512, (seq % 64) * 4096)
            except OSError:
                out.write("err %d %.3f\n" % (seq, time.time()))
                out.flush()
                time.sleep(0.05)
                continue
            out.write("ok %d %.3f\n" % (seq, time.time()))
            out.flush()
    w = multiprocessing.Process(target=writer)
    w.start()
    t0 = time.time()
    took = None
    while time.time() - t0 < 20:
        try:
            fdb = os.open(os.path.join(b, "iso.dat"), os.O_RDWR)
            took = time.time()
            break
        except OSError:
            time.sleep(0.05)
    if took is None:
        fail("isolation: B never got the lock of C's file")
        w.kill()
        return
    log("isolation: B took C's file over %.1f s after C's writer started" % (took - t0))
    # B stamps the file; then wait until C's device is back and C has tried
    # again for a while.
    os.pwrite(fdb, b"\xbb" * 4096 * 64, 0)
    os.fsync(fdb)
    time.sleep(max(0.0, t0 + 2.0 + 8.0 + 2.0 - time.time()))
    w.kill()
    w.join()
    data = os.pread(fdb, 4096 * 64, 0)
    os.close(fdb)
    oks = [l.split() for l in open(okfile) if l.startswith("ok")]
    late = [o for o in oks if float(o[2]) > took]
    if late:
        fail("isolation: C's write %s was acknowledged after B's takeover" % late[0])
    if data != b"\xbb" * 4096 * 64:
        bad = next(i for i in range(0, len(data), 4096) if data[i:i + 4096] != b"\xbb" * 4096)
        fail("isolation: a write of the fenced host landed after the takeover "
             "(block %d: seq %d)" % (bad // 4096, struct.unpack("<Q", data[bad:bad + 8])[0]))
    errs = sum(1 for l in open(okfile) if l.startswith("err"))
    log("isolation: C wrote %d blocks before its device hung, got %d errors after; "
        "none of its writes landed after the takeover" % (len(oks), errs))
    vt.unmount_quiet(c)


def main():
    vt.require_env()
    tmp, img, mnts = vt.scratch("cluster", "abc")
    try:
        subprocess.run([MKFS, "-q", "-s", "8G", "-H", "8", "--hb-interval", "200",
                        "--hb-timeout", str(int(TIMEOUT_S * 1000)), img], check=True)
        for m, h in zip(mnts, "ABC"):
            mount(img, m, h)
        storm(mnts)
        crossing(mnts)
        for m in mnts:
            vt.unmount_quiet(m)
        CHECK.vmfsd_gone(img)
        vt.fsck_clean(img, "after the storm", fail)
        for m, h in zip(mnts, "ABC"):
            mount(img, m, h)
        conflicts_and_kill(img, mnts)
        isolation(img, mnts, tmp)
        for m in mnts:
            vt.unmount_quiet(m)
        CHECK.vmfsd_gone(img)
        # the survivors replayed A's journal and took over: clean volume
        vt.fsck_clean(img, "after kill -9, takeover and fencing", fail)
    except Exception as e:
        fail("unexpected: %r" % e)
        raise
    finally:
        for m in mnts:
            vt.unmount_quiet(m)
        CHECK.vmfsd_gone(img)
        subprocess.run(["rm", "-rf", tmp])
    log("cluster test: %d failures" % len(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
