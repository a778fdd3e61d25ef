#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Data integrity against an in-memory model.

Several files get random writes, overwrites, appends and truncates (sizes
1 byte .. 3 MiB, aligned and not, crossing the inline -> sub-block ->
file-block layouts in both directions), plus O_DIRECT writes and reads from
page-aligned (mmap) buffers for the aligned fast path.  Each file is mirrored
in a bytearray; every VERIFY_EVERY operations all files are read back and
compared, and again after a remount in the middle and at the end.

The seed is fixed and printed; set VMFSD_SEED to try another, or
VMFSD_MODEL_OPS to change the number of random operations."""

import errno
import mmap
import os
import random
import sys
import threading
import time
import traceback

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import vmfstest as vt  # noqa: E402  (tests/vmfstest.py: the shared helpers)
from vmfstest import MiB  # noqa: E402

NFILES = 4
NTHREADS = 4
MAX_SIZE = 16 * MiB
VERIFY_EVERY = 20
INLINE_MAX = 2912
# Offsets around which the layout changes (inline limit, sub-block size,
# file block size).
BOUNDARIES = [INLINE_MAX, 4096, 8192, MiB, 2 * MiB, 3 * MiB, 8 * MiB]


def rand_len(rng):
    bucket = rng.random()
    if bucket < 0.15:
        return rng.randint(1, 64)
    if bucket < 0.35:
        return rng.randint(65, 4096)
    if bucket < 0.60:
        return rng.randint(4097, 128 * 1024)
    if bucket < 0.80:
        return rng.randint(128 * 1024 + 1, MiB)
    return rng.randint(MiB + 1, 3 * MiB)


def rand_off(rng, cur):
    k = rng.random()
    if k < 0.25:        # near a layout boundary
        return max(0, rng.choice(BOUNDARIES) + rng.randint(-300, 300))
    if k < 0.40:        # at or just past EOF
        return cur + rng.choice([0, 0, 1, rng.randint(1, 70000)])
    return rng.randint(0, max(cur + 2 * MiB, 4 * MiB))


class Model:
    def __init__(self, c, v, rng, names=None, block_size=MiB):
        self.c, self.v, self.rng = c, v, rng
        self.bs = block_size
        self.names = names or ["f%d" % i for i in range(NFILES)]
        self.data = {n: bytearray() for n in self.names}
        self.log = {n: [] for n in self.names}
        self.fds = {}
        self.nops = 0
        self.dbuf = mmap.mmap(-1, 3 * MiB + 4096)     # page-aligned for O_DIRECT
        self.rbuf = mmap.mmap(-1, 3 * MiB + 4096)

    def open_all(self, create=False):
        for n in self.names:
            flags = os.O_RDWR | (os.O_CREAT | os.O_EXCL if create else 0)
            self.fds[n] = os.open(self.v.path(n), flags, 0o644)

    def close_all(self):
        for fd in self.fds.values():
            os.close(fd)
        self.fds = {}

    # --- operations, each applied to the file and to the model
    def write(self, n, off, length, via="pwrite"):
        buf = self.rng.randbytes(length)
        self.log[n].append("#%d write off=%d len=%d (%s)" % (self.nops, off, length, via))
        done = 0
        while done < length:
            w = os.pwrite(self.fds[n], buf[done:], off + done)
            if w <= 0:
                raise OSError("pwrite returned %d" % w)
            done += w
        self._apply_write(n, off, buf)

    def _apply_write(self, n, off, buf):
        d = self.data[n]
        if off > len(d):
            d.extend(bytes(off - len(d)))
        d[off:off + len(buf)] = buf

    def truncate(self, n, size):
        self.log[n].append("#%d truncate %d -> %d" % (self.nops, len(self.data[n]), size))
        os.ftruncate(self.fds[n], size)
        d = self.data[n]
        if size < len(d):
            del d[size:]
        else:
            d.extend(bytes(size - len(d)))

    def direct_write(self, n, off, length):
        """O_DIRECT write from an mmap buffer: 4 KiB aligned offset and size."""
        buf = self.rng.randbytes(length)
        self.dbuf[:length] = buf
        self.log[n].append("#%d O_DIRECT write off=%d len=%d" % (self.nops, off, length))
        fd = os.open(self.v.path(n), os.O_RDWR | os.O_DIRECT)
        try:
            w = os.pwrite(fd, memoryview(self.dbuf)[:length], off)
            self.c.eq(w, length, "%s: O_DIRECT pwrite count at %d" % (n, off))
        finally:
            os.close(fd)
        self._apply_write(n, off, buf[:w])

    def direct_read_check(self, n, off, length):
        fd = os.open(self.v.path(n), os.O_RDONLY | os.O_DIRECT)
        try:
            got = os.preadv(fd, [memoryview(self.rbuf)[:length]], off)
        finally:
            os.close(fd)
        want = bytes(self.data[n][off:off + length])
        if got != len(want) or self.rbuf[:got] != want:
            self.c.fail("%s: O_DIRECT read of %d at %d: got %d bytes, model has %d, "
                        "content %s" % (n, length, off, got, len(want),
                                        "equal" if self.rbuf[:got] == want[:got]
                                        else "differs"))
            self.dump(n)

    def random_op(self):
        self.nops += 1
        rng = self.rng
        n = rng.choice(self.names)
        cur = len(self.data[n])
        k = rng.random()
        if k < 0.60:
            off = rand_off(rng, cur)
            length = rand_len(rng)
            if off + length > MAX_SIZE:
                off = max(0, MAX_SIZE - length - rng.randint(0, 1000))
            self.write(n, off, length)
        elif k < 0.70 and cur < MAX_SIZE:
            self.write(n, cur, min(rand_len(rng), MAX_SIZE - cur), via="append")
        elif k < 0.85 or cur >= MAX_SIZE:
            kk = rng.random()
            if kk < 0.2:
                size = 0
            elif kk < 0.5:
                size = max(0, rng.choice(BOUNDARIES) + rng.randint(-2, 2))
            elif kk < 0.75:
                size = rng.randint(0, max(cur, 1))             # down
            else:
                size = rng.randint(cur, min(MAX_SIZE, cur + 4 * MiB))  # up
            self.truncate(n, size)
        else:
            length = 4096 * rng.randint(1, 768)
            off = 4096 * rng.randint(0, (MAX_SIZE - length) // 4096)
            if rng.random() < 0.5:
                off = (off // self.bs) * self.bs   # file-block-aligned too
                off = min(off, (MAX_SIZE - length) // 4096 * 4096)
            self.direct_write(n, off, length)
            self.direct_read_check(n, off, length)

    # --- verification
    def dump(self, n):
        print("    last operations on %s:" % n)
        for line in self.log[n][-25:]:
            print("      " + line)

    def verify(self, when):
        ok = True
        for n in self.names:
            want = self.data[n]
            st = os.stat(self.v.path(n))
            if st.st_size != len(want):
                self.c.fail("%s %s: size %d, model %d" % (when, n, st.st_size, len(want)))
                self.dump(n)
                ok = False
                continue
            # allocation never exceeds the size rounded up to file blocks
            # (plus block-map nodes, 4 KiB each: a 16 MiB file with 64 KiB
            # blocks needs a height-1 map)
            limit = -(-st.st_size // self.bs) * self.bs + 4 * 4096
            if st.st_blocks * 512 > limit:
                self.c.fail("%s %s: st_blocks %d (%d bytes) > size %d rounded to the "
                            "%d-byte block size" % (when, n, st.st_blocks, st.st_blocks * 512,
                                                    st.st_size, self.bs))
                self.dump(n)
                ok = False
            # one read of the whole file (plus one byte, to see EOF), then
            # more if it came back short: a short read is legal, an error or
            # a wrong byte is not
            got = b""
            fd = os.open(self.v.path(n), os.O_RDONLY)
            try:
                while True:
                    more = os.pread(fd, len(want) + 1 - len(got), len(got))
                    if not more:
                        break
                    got += more
            except OSError as e:
                self.c.fail("%s %s: read of %d bytes at offset %d (file size %d) failed: %s"
                            % (when, n, len(want) + 1 - len(got), len(got), len(want), e))
                self.dump(n)
                ok = False
                continue
            finally:
                os.close(fd)
            if got != want:
                i = next((i for i in range(min(len(got), len(want))) if got[i] != want[i]),
                         min(len(got), len(want)))
                j = i
                while j < min(len(got), len(want)) and got[j] != want[j]:
                    j += 1
                self.c.fail("%s %s: content differs from the model at offset %d "
                            "(mismatch run %d bytes; read %d bytes, model %d; got %r, "
                            "want %r)" % (when, n, i, j - i, len(got), len(want),
                                          bytes(got[i:i + 8]), bytes(want[i:i + 8])))
                self.dump(n)
                ok = False
        return ok


def body(c):
    seed = int(os.environ.get("VMFSD_SEED", "20240611"))
    nops = int(os.environ.get("VMFSD_MODEL_OPS", "1000"))
    print("seed=%d ops=%d (rerun with VMFSD_SEED=%d)" % (seed, nops, seed), flush=True)
    rng = random.Random(seed)
    with vt.Volume("model") as v:
        v.mkfs("4G")
        v.mount()
        md = Model(c, v, rng)
        md.open_all(create=True)

        # A deterministic walk across the layouts first: inline, exactly the
        # inline limit, one past it (sub-blocks), exactly one file block,
        # one past it (file blocks), truncates back down and up again.
        f0, f1 = md.names[0], md.names[1]
        md.write(f0, 0, 100)
        md.write(f0, 100, INLINE_MAX - 100)
        md.verify("inline limit")
        md.write(f0, INLINE_MAX, 1)
        md.verify("inline -> sub-block")
        md.write(f0, 10000, 5000)
        md.write(f0, MiB - 10, 10)
        md.verify("exactly one file block")
        md.write(f0, MiB, 1)
        md.verify("sub-block -> file block")
        md.truncate(f0, 2000)
        md.verify("truncate back to inline size")
        md.write(f0, 1999, 2)
        md.truncate(f0, 3 * MiB + 5)
        md.write(f0, 1, 3 * MiB)
        md.verify("unaligned 3 MiB write")
        md.write(f1, 5 * MiB + 3, 1)             # sparse from the start
        md.write(f1, 0, 1)
        md.truncate(f1, 4097)
        md.write(f1, 4095, 3)
        md.truncate(f1, 0)
        md.write(f1, MiB - 4096, 4096)
        md.verify("deterministic prologue")

        for i in range(nops):
            md.random_op()
            if md.nops % VERIFY_EVERY == 0:
                if not md.verify("after op #%d" % md.nops):
                    print("stopping the random walk at the first divergence")
                    break
            if i == nops // 2:
                md.close_all()
                v.remount()
                md.verify("after a remount at op #%d" % md.nops)
                md.open_all()

        md.verify("after op #%d (end)" % md.nops)
        for n in md.names:
            os.fsync(md.fds[n])
        md.close_all()
        sizes = {n: len(md.data[n]) for n in md.names}
        print("final sizes: %s" % sizes)

        # Concurrent phase: threads work on disjoint files at the same time
        # (the daemon is multi-threaded: allocation and map updates race),
        # plus one thread creating and deleting small files.
        models = [md]
        threaded = concurrent_phase(c, v, seed, nops // 2)
        models += threaded

        v.remount()
        for x in models:
            x.verify("after the final remount")
        v.unmount()

    # Other file block sizes (mkfs -b): the layouts switch at other sizes.
    for bs, bsbytes in (("64K", 64 * 1024), ("8M", 8 * MiB)):
        other_block_size(c, seed, bs, bsbytes, nops // 3)

    # Allocations failing midway on a nearly full volume.
    nearly_full(c, seed, nops // 3)


def other_block_size(c, seed, bs, bsbytes, nops):
    print("block size %s: %d random ops" % (bs, nops), flush=True)
    with vt.Volume("model-" + bs) as v:
        v.mkfs("4G", args=["-b", bs])
        v.mount()
        got = os.statvfs(v.mnt).f_bsize
        c.eq(got, bsbytes, "statvfs f_bsize of a volume made with -b %s" % bs)
        md = Model(c, v, random.Random(seed + bsbytes), block_size=bsbytes)
        md.open_all(create=True)
        f0 = md.names[0]
        # across this block size's own boundaries
        md.write(f0, 0, INLINE_MAX)
        md.write(f0, INLINE_MAX, 1)
        md.write(f0, bsbytes - 1, 1)
        md.verify("-b %s: exactly one file block" % bs)
        md.write(f0, bsbytes, 1)
        md.verify("-b %s: one byte past one file block" % bs)
        md.truncate(f0, bsbytes // 2 + 7)
        md.write(f0, 3 * bsbytes - 3, 5)
        md.verify("-b %s: prologue" % bs)
        for _ in range(nops):
            md.random_op()
            if md.nops % VERIFY_EVERY == 0 and not md.verify("-b %s op #%d" % (bs, md.nops)):
                break
        md.verify("-b %s end" % bs)
        md.close_all()
        v.remount()
        md.verify("-b %s after remount" % bs)
        v.unmount()


def concurrent_phase(c, v, seed, nops):
    print("concurrent phase: %d writer threads x %d ops, 1 create/unlink thread"
          % (NTHREADS, nops), flush=True)
    models = [Model(c, v, random.Random(seed * 1000 + t), names=["t%d-%d" % (t, k)
                                                                  for k in range(2)])
              for t in range(NTHREADS)]
    small = {}
    errors = []

    def writer(x, t):
        try:
            x.open_all(create=True)
            for _ in range(nops):
                x.random_op()
                if x.nops % VERIFY_EVERY == 0 and not x.verify("thread %d op #%d"
                                                               % (t, x.nops)):
                    break
            x.verify("thread %d end" % t)
        except Exception:
            errors.append("writer thread %d: %s" % (t, traceback.format_exc()))
        finally:
            x.close_all()

    def churn():
        rng = random.Random(seed * 1000 + 999)
        try:
            d = v.path("churn")
            os.mkdir(d)
            for i in range(nops * 2):
                n = "s%04d" % i
                data = rng.randbytes(rng.choice([rng.randint(0, 100),
                                                 rng.randint(101, INLINE_MAX + 200),
                                                 rng.randint(4096, 300000)]))
                with open(os.path.join(d, n), "wb") as f:
                    f.write(data)
                small[n] = data
                if rng.random() < 0.4:
                    victim = rng.choice(sorted(small))
                    os.unlink(os.path.join(d, victim))
                    del small[victim]
        except Exception:
            errors.append("churn thread: %s" % traceback.format_exc())

    threads = [threading.Thread(target=writer, args=(x, t)) for t, x in enumerate(models)]
    threads.append(threading.Thread(target=churn))
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for e in errors:
        c.fail(e)
    d = v.path("churn")
    if os.path.isdir(d):
        c.eq(sorted(os.listdir(d)), sorted(small), "names in the churn directory")
        bad = []
        for n, data in small.items():
            with open(os.path.join(d, n), "rb") as f:
                if f.read() != data:
                    bad.append(n)
        c.check(not bad, "%d of %d churn files differ, e.g. %r" % (len(bad), len(small),
                                                                    bad[:3]))
    return models


class FullModel(Model):
    """The model on a nearly full volume: a write may stop short or fail
    with ENOSPC, a truncate up or a fallocate may fail with ENOSPC.  What
    the call reports done is in the model, nothing else: a failing call
    changes nothing (a fallocate is all or nothing), a short write keeps
    exactly the bytes it counted."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.nenospc = 0

    def write(self, n, off, length, via="pwrite"):
        buf = self.rng.randbytes(length)
        done = 0
        try:
            while done < length:
                w = os.pwrite(self.fds[n], buf[done:], off + done)
                if w <= 0:
                    raise OSError("pwrite returned %d" % w)
                done += w
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
            self.nenospc += 1
        self.log[n].append("#%d write off=%d len=%d (%s): %d done"
                           % (self.nops, off, length, via, done))
        if done:
            self._apply_write(n, off, buf[:done])

    def truncate(self, n, size):
        try:
            super().truncate(n, size)
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
            self.nenospc += 1
            self.log[n][-1] += ": ENOSPC"

    def direct_write(self, n, off, length):
        self.write(n, off, length, via="instead of O_DIRECT")

    def direct_read_check(self, n, off, length):
        pass

    def fallocate(self, n, off, length):
        try:
            vt.fallocate(self.fds[n], 0, off, length)
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
            self.nenospc += 1
            self.log[n].append("#%d fallocate off=%d len=%d: ENOSPC" % (self.nops, off, length))
            return
        self.log[n].append("#%d fallocate off=%d len=%d" % (self.nops, off, length))
        d = self.data[n]
        if off + length > len(d):
            d.extend(bytes(off + length - len(d)))

    def random_op(self):
        if self.rng.random() < 0.15:
            self.nops += 1
            n = self.rng.choice(self.names)
            self.fallocate(n, rand_off(self.rng, len(self.data[n])), rand_len(self.rng))
        else:
            super().random_op()


def nearly_full(c, seed, nops):
    """Random operations on a volume with a few MiB of file blocks free and
    a sub-block pool of 256 (mkfs -S 1M): allocations fail midway all the
    time.  The files must match the model, removing everything must give
    the free space back to its start value, and fsck -n must find nothing
    leaked (Volume.unmount runs it)."""
    print("nearly full volume: %d random ops" % nops, flush=True)
    with vt.Volume("model-full") as v:
        v.mkfs("256M", args=["-S", "1M"])
        v.mount()
        sv = os.statvfs(v.mnt)
        avail0 = sv.f_bavail * sv.f_frsize
        # leave 12 MiB of file blocks free
        fd = os.open(v.path("filler"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            vt.fallocate(fd, 0, 0, avail0 - 12 * MiB)
        finally:
            os.close(fd)
        md = FullModel(c, v, random.Random(seed + 7))
        md.open_all(create=True)
        for _ in range(nops):
            md.random_op()
            if md.nops % VERIFY_EVERY == 0 and not md.verify("full op #%d" % md.nops):
                break
        md.verify("nearly full: end")
        print("    %d of %d operations failed with ENOSPC" % (md.nenospc, md.nops))
        c.check(md.nenospc > 0, "no operation hit ENOSPC on the nearly full volume")
        md.close_all()
        v.remount()
        md.verify("nearly full: after remount")
        for n in md.names + ["filler"]:
            os.unlink(v.path(n))
        deadline = time.monotonic() + 10
        while True:
            sv = os.statvfs(v.mnt)
            if sv.f_bavail * sv.f_frsize == avail0 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        c.eq(sv.f_bavail * sv.f_frsize, avail0, "available space after removing everything")
        v.unmount()


if __name__ == "__main__":
    vt.main("model", body)
