#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Read-after-write on one host, alone and with other hosts mounted.

What `vmfsctl create` + `power-on` does: a folder is made, a kernel-sized
file is copied into it (1 MiB writes, fsync or not, close), and at once a
new process (QEMU) opens it and reads it.  That new process must see
exactly what was written, on the host that wrote it, whatever the other
hosts do meanwhile: with other hosts present allocation clusters are given
back after every commit, inode locks are released by the commit thread and
re-taken by the next opener, and an inode we hold no lock on is
revalidated against the disk (docs/architecture.md, "Coherency between
hosts").  Each round writes a new file (the allocating path) and then
overwrites an existing one in place (the asynchronous overwrite path), and
every file is read back by a fresh process (sha256sum) right after close.

Phases: host A alone; then A, B and C each doing rounds in their own
folders at the same time (with --churn, the long suite's run, B and C
also churn metadata in a shared folder).  A wrong read is reported with its offset, whether it read zeros,
and whether a read a moment later was right (a transient stale read).

Usage: test_readback.py [ROUNDS] (default 12 per host and phase).
Env: VMFSD, MKFS, FSCK.  Exit 0 pass, 1 fail, 77 no /dev/fuse or not root.
"""
import hashlib
import multiprocessing
import os
import random
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import vmfstest as vt  # noqa: E402  (tests/vmfstest.py: the shared helpers)

MKFS = vt.mkfs_exe()
MiB = vt.MiB
CHECK = vt.Checker(os.path.basename(__file__))
fail = CHECK.fail
failures = CHECK.failures
log = vt.log


def mount(img, mnt, host):
    vt.mount_daemon(img, mnt, host)


def unmount(img, mnt):
    vt.unmount_quiet(mnt)
    CHECK.vmfsd_gone(img, "after unmounting %s" % mnt, mnt)


def copy_like_vmfsctl(path, data, fsync):
    """What vmfs-hostd's copy_into does: 1 MiB writes, fsync, close."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        for off in range(0, len(data), MiB):
            view = memoryview(data)[off:off + MiB]
            while view:
                n = os.write(fd, view)
                view = view[n:]
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


def overwrite_in_place(path, data, fsync):
    """Rewrites an existing file of the same size without truncating it:
    every write hits allocated units, the asynchronous overwrite path."""
    fd = os.open(path, os.O_WRONLY)
    try:
        for off in range(0, len(data), MiB):
            os.pwrite(fd, data[off:off + MiB], off)
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


def sha_by_new_process(path):
    """The reader is a new process, as QEMU is."""
    r = subprocess.run(["sha256sum", path], capture_output=True, text=True, timeout=120)
    if r.returncode:
        return "error: " + r.stderr.strip()
    return r.stdout.split()[0]


def describe_bad(path, data):
    """Where the read differs and whether it is still wrong a moment later."""
    with open(path, "rb") as f:
        got = f.read()
    if len(got) != len(data):
        what = "size %d instead of %d" % (len(got), len(data))
    else:
        i = next((i for i in range(len(data)) if got[i] != data[i]), None)
        if i is None:
            what = "an in-process read right after was correct"
        else:
            zeros = not any(got[i:i + 4096])
            what = "first difference at offset %d (%s)" % (i, "zeros there" if zeros
                                                           else "other data")
    time.sleep(2)
    later = sha_by_new_process(path) == hashlib.sha256(data).hexdigest()
    return "%s; %s 2 s later" % (what, "right" if later else "STILL WRONG")


def rounds(mnt, tag, seed, n, q, phase):
    """N rounds on one mount: a new folder with a new file, read back; then
    the previous round's file overwritten in place, read back."""
    rng = random.Random(seed)
    bad, done = [], 0
    try:
        base = os.path.join(mnt, "rb-%s-%s" % (phase, tag))
        os.makedirs(base, exist_ok=True)
        prev = None
        for i in range(n):
            folder = os.path.join(base, "vm%03d" % i)
            os.mkdir(folder)
            path = os.path.join(folder, "vmlinuz")
            size = rng.randint(1, 6) * MiB + rng.randint(0, MiB - 1)
            data = rng.randbytes(size)
            copy_like_vmfsctl(path, data, fsync=i % 2 == 0)
            if sha_by_new_process(path) != hashlib.sha256(data).hexdigest():
                bad.append("%s: new file %s (%d bytes): %s" % (tag, path, size,
                                                             describe_bad(path, data)))
            done += 1
            if prev:
                ppath, psize = prev
                pdata = rng.randbytes(psize)
                overwrite_in_place(ppath, pdata, fsync=i % 3 == 0)
                if sha_by_new_process(ppath) != hashlib.sha256(pdata).hexdigest():
                    bad.append("%s: overwritten %s (%d bytes): %s"
                               % (tag, ppath, psize, describe_bad(ppath, pdata)))
                done += 1
            prev = (path, size)
        q.put((tag, done, bad, None))
    except Exception as e:
        q.put((tag, done, bad, "%s: %r" % (tag, e)))


def churn(mnt, tag, seed, stop, q):
    """Metadata and allocation traffic of another host: small and medium
    files created, renamed and unlinked in a shared folder."""
    rng = random.Random(seed)
    d = os.path.join(mnt, "churn")
    i = 0
    errs = {}
    while not stop.is_set():
        p = os.path.join(d, "%s_%d" % (tag, i))
        try:
            with open(p, "wb") as f:
                f.write(rng.randbytes(rng.choice([100, 20000, 300000, 2 * MiB])))
            if i % 3 == 0:
                os.rename(p, p + "r")
                p += "r"
            if i % 2 == 0:
                os.unlink(p)
        except OSError as e:
            errs[e.errno] = errs.get(e.errno, 0) + 1
        i += 1
    q.put((tag, i, errs))


def run_phase(name, hosts, nrounds, churners):
    q = multiprocessing.Queue()
    cq = multiprocessing.Queue()
    stop = multiprocessing.Event()
    chs = [multiprocessing.Process(target=churn, args=(m, t, 100 + i, stop, cq))
           for i, (m, t) in enumerate(churners)]
    for p in chs:
        p.start()
    procs = [multiprocessing.Process(target=rounds, args=(m, t, 7 * i + len(name), nrounds, q,
                                                          len(name)))
             for i, (m, t) in enumerate(hosts)]
    t0 = time.time()
    for p in procs:
        p.start()
    total = 0
    for _ in procs:
        tag, done, bad, err = q.get(timeout=1200)
        total += done
        for b in bad:
            fail("%s: wrong read-back: %s" % (name, b))
        if err:
            fail("%s: round worker %s" % (name, err))
    for p in procs:
        p.join()
    stop.set()
    for _ in chs:
        tag, n, errs = cq.get(timeout=300)
        # The churn's files are its own: no other host opens them, so
        # nothing may fail (a conflict on the shared folder is retried).
        if errs:
            fail("%s: churn on %s: %d of %d rounds failed: %s" % (
                name, tag, sum(errs.values()), n,
                ", ".join("%s x%d" % (os.strerror(e), k) for e, k in errs.items())))
    for p in chs:
        p.join(60)
    log("%s: %d files written and read back by a new process, %d wrong (%.1f s)"
        % (name, total, len(failures), time.time() - t0))


def main():
    vt.require_env()
    nrounds = int(sys.argv[1]) if len(sys.argv) > 1 else 12
    # The churn (B and C creating and unlinking small files in one shared
    # folder while all three write) runs in the long suite only: under it
    # an allocation can still fail with ENOSPC on a volume far from full
    # when two hosts each wait for a cluster the other's open transaction
    # pins (a wait cycle across pools, not fixed yet; see
    # docs/cluster.md §7).  Item 10's window needs only other hosts
    # mounted and writing, which the default run keeps.
    churn_on = "--churn" in sys.argv[2:]
    tmp, img, mnts = vt.scratch("readback", "abc")
    try:
        # Default heartbeat timing (10 s): this test is not about fencing,
        # and the 2-core test machine is loaded.
        subprocess.run([MKFS, "-q", "-s", "8G", "-H", "8", img], check=True)
        mount(img, mnts[0], "A")
        run_phase("A alone", [(mnts[0], "A")], nrounds, [])
        mount(img, mnts[1], "B")
        mount(img, mnts[2], "C")
        os.mkdir(os.path.join(mnts[1], "churn"))
        time.sleep(1.5)     # the commit interval: C sees the folder
        run_phase("three hosts", list(zip(mnts, "ABC")), nrounds,
                  [(mnts[1], "B"), (mnts[2], "C")] if churn_on else [])
        for m in mnts:
            unmount(img, m)
        vt.fsck_clean(img, "after the read-back phases", fail)
    except Exception as e:
        fail("unexpected: %r" % e)
    finally:
        for m in mnts:
            if vt.mounted_at(m):
                unmount(img, m)
        subprocess.run(["rm", "-rf", tmp])
    log("read-back test: %d failures" % len(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
