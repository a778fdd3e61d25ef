#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""vmfsd's own request loop (fuse/fuse_loop.c) under mixed load.

The I/O issuer thread reads /dev/fuse and serves READ and WRITE of
allocated data itself; what would make it wait goes to the worker pool.
This drives every branch at once, with the default issuers (one per two
CPUs) spinning, and with -o spin_us=0,issuers=2 (two issuers reading
/dev/fuse side by side, whatever the machine):

- eight threads read and overwrite their own 4 KiB blocks of one file with
  O_DIRECT (the issuer's path), each block stamped with its thread, block
  and version, and check every read against what they wrote last;
- a ninth writes into the holes of the file's tail (allocating writes,
  which the issuer hands to a worker) and punches them out again, taking
  the file's I/O lock for writing over and over while reads hold it
  shared.  (An issuer that waited for that lock could deadlock: the
  writer waits for the reads in flight, which only the issuer completes.
  This load did not show it in our runs with such a mutant: the window is
  a few microseconds wide, so the rule rests on the code and its comment,
  not on this test.);
- two more write and read back 256 KiB at a time, which the device
  writes from the receive buffer itself (lent by the loop, no copy), and
  checks every read;
- an eleventh creates, stats, renames and unlinks small files (worker pool),
  and reads past the end of file and of an inline file (handed over too);
- at the end every block holds its last version, the daemon exits 0 on
  unmount and fsck.vmfsd -n is clean.  Then SIGTERM: the daemon must
  unmount and exit by itself.

Where the kernel offers FUSE over io_uring (the fuse module's
enable_uring is Y; scripts/test.sh sets it), the first two rounds must
have taken their requests through io_uring (the daemon counts them in
its log at unmount), and a third round with -o no_fuse_uring through
/dev/fuse only; the data is checked the same way in each.

A daemon that stops answering has its threads' stacks dumped
(tests/hangdump.py)."""

import os
import re
import signal
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import vmfstest as vt  # noqa: E402  (tests/vmfstest.py: the shared helpers)
from vmfstest import MiB  # noqa: E402

SECONDS = float(sys.argv[1]) if len(sys.argv) > 1 else 6.0
THREADS = 8
BLOCKS = 256            # per thread: 8 x 256 x 4 KiB = 8 MiB of the file
BS = 4096
BIG_OFF = THREADS * BLOCKS * BS       # 2 MiB for the 256 KiB writer
DATA_END = BIG_OFF + 2 * MiB
SIZE = DATA_END + 4 * MiB
PUNCH = 0x02 | 0x01     # FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE


def stamp(t, b, ver):
    head = struct.pack("<III", t, b, ver)
    return (head * (BS // len(head) + 1))[:BS]


def hammer(path, t, stop, errors, counts):
    import mmap
    buf = mmap.mmap(-1, BS)
    fd = os.open(path, os.O_RDWR | os.O_DIRECT)
    ver = [0] * BLOCKS
    n = 0
    try:
        while not stop.is_set():
            b = (n * 7919) % BLOCKS
            off = (t * BLOCKS + b) * BS
            if n % 3 == 0:
                ver[b] += 1
                buf[:] = stamp(t, b, ver[b])
                if os.pwritev(fd, [buf], off) != BS:
                    errors.append("thread %d: short write at %d" % (t, off))
                    return
            else:
                if os.preadv(fd, [buf], off) != BS:
                    errors.append("thread %d: short read at %d" % (t, off))
                    return
                if ver[b] and bytes(buf) != stamp(t, b, ver[b]):
                    errors.append("thread %d: block %d read back %r, wrote version %d"
                                  % (t, b, bytes(buf[:12]), ver[b]))
                    return
            n += 1
    except OSError as e:
        errors.append("thread %d: %s" % (t, e))
    finally:
        os.close(fd)
        counts[t] = (n, ver)


def allocator(path, stop, errors, counts):
    """Allocating writes into the holes of the file's tail and punching
    them out again: both take the file's I/O lock for writing while the
    hammers' reads hold it shared (the kernel does not order direct reads
    against writes of one file)."""
    import mmap
    buf = mmap.mmap(-1, 64 * 1024)
    back = mmap.mmap(-1, 64 * 1024)
    n = 0
    fd = os.open(path, os.O_RDWR | os.O_DIRECT)
    try:
        while not stop.is_set():
            off = DATA_END + (n % 64) * len(buf)
            buf[:] = stamp(99, n, n) * (len(buf) // BS)
            os.pwritev(fd, [buf], off)
            os.preadv(fd, [back], off)
            if back[:] != buf[:]:
                errors.append("allocator: 64 KiB written at %d read back differently" % off)
                return
            if n % 64 == 63:
                vt.fallocate(fd, PUNCH, DATA_END, SIZE - DATA_END)
            n += 1
    except OSError as e:
        errors.append("allocator: %s" % e)
    finally:
        os.close(fd)
        counts["alloc"] = n


def big(path, k, stop, errors, counts):
    """256 KiB direct writes and reads of allocated data: the device
    writes them from the receive buffer itself, which the loop lends.
    (A buffer given back before its write is done is caught by
    integration-fio_verify: QD16 writes of up to 1 MiB, verified.)"""
    import mmap
    size = 256 * 1024
    buf = mmap.mmap(-1, size)
    back = mmap.mmap(-1, size)
    n = 0
    fd = os.open(path, os.O_RDWR | os.O_DIRECT)
    try:
        while not stop.is_set():
            off = BIG_OFF + (k * 4 + n % 4) * size
            buf[:] = stamp(77 + k, n, n) * (size // BS)
            os.pwritev(fd, [buf], off)
            os.preadv(fd, [back], off)
            if back[:] != buf[:]:
                errors.append("big: 256 KiB written at %d read back differently" % off)
                return
            n += 1
    except OSError as e:
        errors.append("big: %s" % e)
    finally:
        os.close(fd)
        counts["big%d" % k] = n


def namespace(mnt, stop, errors, counts):
    n = 0
    try:
        small = os.path.join(mnt, "inline")
        with open(small, "wb") as f:
            f.write(b"tiny")
        while not stop.is_set():
            p = os.path.join(mnt, "m%d" % (n % 16))
            with open(p, "wb") as f:
                f.write(b"x" * 100)
            os.stat(p)
            os.rename(p, p + ".r")
            os.unlink(p + ".r")
            with open(small, "rb") as f:
                if f.read() != b"tiny":
                    errors.append("the inline file read back wrong")
                    return
                if f.read(10) != b"":
                    errors.append("a read past the end returned data")
                    return
            n += 1
    except OSError as e:
        errors.append("namespace: %s" % e)
    finally:
        counts["ns"] = n


def one_round(c, v, opts):
    v.mount(opts=opts)
    path = v.path("disk-flat.vmdk")
    with open(path, "wb") as f:
        f.truncate(SIZE)
    fd = os.open(path, os.O_RDWR)
    os.pwrite(fd, b"\0" * DATA_END, 0)     # allocated: the issuer's path
    os.fsync(fd)
    os.close(fd)
    stop = threading.Event()
    errors, counts = [], {}
    ts = [threading.Thread(target=hammer, args=(path, t, stop, errors, counts))
          for t in range(THREADS)]
    ts.append(threading.Thread(target=allocator, args=(path, stop, errors, counts)))
    ts += [threading.Thread(target=big, args=(path, k, stop, errors, counts)) for k in (0, 1)]
    ts.append(threading.Thread(target=namespace, args=(v.mnt, stop, errors, counts)))
    for t in ts:
        t.start()
    time.sleep(SECONDS)
    stop.set()
    for t in ts:
        t.join(60)
    alive = [t for t in ts if t.is_alive()]
    if alive:
        for pid in vt.pids_of_vmfsd(v.image, v.mnt):
            vt.hangdump.dump_stacks(pid, "loop test: requests stuck for 60 s")
        c.fail("%s: %d threads still waiting for vmfsd after 60 s (stacks above)"
               % (opts, len(alive)))
        return False
    c.check(not errors, "%s: %s" % (opts, errors[:3]))
    ios = sum(counts[t][0] for t in range(THREADS))
    vt.log("%s: %d direct I/Os, %d allocating writes, %d namespace rounds"
           % (opts or "default", ios, counts.get("alloc", 0), counts.get("ns", 0)))
    c.check(counts.get("alloc", 0) > 64 and counts.get("ns", 0) > 2 and ios > 100 and
            counts.get("big0", 0) > 10 and counts.get("big1", 0) > 10,
            "%s: the load did not run (%r)"
            % (opts, {k: counts.get(k) for k in ("alloc", "ns", "big0", "big1")}))
    log = v.unmount()
    m = re.search(r"requests served: (\d+) through io_uring, (\d+) through /dev/fuse", log)
    c.check(m is not None, "%s: no count of requests in the log: %s" % (opts, log[-1500:]))
    if m:
        ring, dev = int(m.group(1)), int(m.group(2))
        vt.log("%s: %d requests through io_uring, %d through /dev/fuse"
               % (opts or "default", ring, dev))
        if "no_fuse_uring" in opts or not uring_offered():
            c.eq(ring, 0, "%s: requests through io_uring" % opts)
        else:
            # all but the few sent before the slots were registered
            c.check(ring > 10 * dev and ring > 1000,
                    "%s: %d requests through io_uring, %d through /dev/fuse: the "
                    "kernel offers io_uring (enable_uring is Y)" % (opts, ring, dev))
    v.mount(opts=opts)
    with open(path, "rb") as f:
        data = f.read(DATA_END)
    bad = 0
    for t in range(THREADS):
        ver = counts[t][1]
        for b in range(BLOCKS):
            off = (t * BLOCKS + b) * BS
            want = stamp(t, b, ver[b]) if ver[b] else b"\0" * BS
            if data[off:off + BS] != want:
                bad += 1
    c.eq(bad, 0, "%s: blocks without their last written version after a remount" % opts)
    return True


def uring_offered():
    """Does the kernel offer FUSE over io_uring to new mounts?"""
    try:
        with open("/sys/module/fuse/parameters/enable_uring") as f:
            return f.read().strip() == "Y"
    except OSError:
        return False


def body(c):
    if not uring_offered():
        vt.log("the kernel does not offer FUSE over io_uring (no enable_uring, or N): "
               "every round goes through /dev/fuse")
    with vt.Volume("loop") as v:
        v.mkfs("1G")
        for opts in ([], ["spin_us=0", "issuers=2"], ["no_fuse_uring"]):
            if not one_round(c, v, opts):
                return
            v.unmount()
        # SIGTERM: libfuse's handler only sets the session's exit flag;
        # the loop must see it, unmount and exit 0.
        v.mount()
        proc, v.proc = v.proc, None
        proc.send_signal(signal.SIGTERM)
        rc = vt.hangdump.wait_or_dump(proc, 30, "vmfsd still running 30 s after SIGTERM")
        c.eq(rc, 0, "vmfsd exit status after SIGTERM (log: %s)" % v.log()[-1500:])
        vt.wait_for(lambda: not vt.mounted_at(v.mnt), 10, "the mount to go after SIGTERM")
        res = v.fsck()
        if res is not None:
            c.eq(res[0], 0, "fsck.vmfsd -n after SIGTERM: %s" % res[1][-2000:])


if __name__ == "__main__":
    vt.main("loop", body)
