#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Thin provisioning and space accounting.

Files are thin: a truncated 10 GiB file allocates nothing, one 4 KiB write
allocates one 1 MiB file block (st_blocks 2048), SEEK_DATA/SEEK_HOLE find
exactly the allocated blocks; small files use the inode (st_blocks 0) or
4 KiB sub-blocks; fallocate mode 0 reserves unwritten blocks that count in
st_blocks, read as zeros and are holes for SEEK_DATA; punching holes frees
whole blocks and zeroes partial ones; df's free space follows writes and
deletes; du and du --apparent-size agree with st_blocks and st_size."""

import errno
import os
import random
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import vmfstest as vt  # noqa: E402  (tests/vmfstest.py: the shared helpers)
from vmfstest import MiB, GiB  # noqa: E402

SECTORS_PER_BLOCK = MiB // 512
# A file with a few blocks scattered over 10 GiB needs a map of height 1
# (728 root slots x 1008 per node): one leaf per populated 1008-block range,
# plus the node left by growing from height 0.
MAX_NODES_DEFAULT = 4


def du(path, apparent=False):
    cmd = ["du", "-B1"] + (["--apparent-size"] if apparent else []) + [path]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError("%s: %s" % (" ".join(cmd), r.stderr))
    return int(r.stdout.split()[0])


def free_bytes(path):
    sv = os.statvfs(path)
    return sv.f_bfree * sv.f_frsize


def wait_free(path, target, timeout=10):
    deadline = time.monotonic() + timeout
    while free_bytes(path) < target:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def read_at(path, off, length):
    with open(path, "rb", buffering=0) as f:
        f.seek(off)
        out = b""
        while len(out) < length:
            b = f.read(length - len(out))
            if not b:
                break
            out += b
        return out


def body(c):
    rng = random.Random(77)
    with vt.Volume("sparse") as v:
        v.mkfs("8G")
        v.mount()
        m = v.path

        def seek(path, off, whence):
            fd = os.open(path, os.O_RDONLY)
            try:
                return os.lseek(fd, off, whence)
            except OSError as e:
                return "ENXIO" if e.errno == errno.ENXIO else "errno %d" % e.errno
            finally:
                os.close(fd)

        def blocks(path):
            return os.stat(path).st_blocks

        def check_thin_blocks(path, data_blocks, what, max_nodes=None):
            """st_blocks counts data file blocks plus 4 KiB block-map nodes
            (docs/format.md, inode alloc_units): the data part must be exact,
            the rest whole map nodes, at most MAX_MAP_NODES of them."""
            got = blocks(path)
            MAX_MAP_NODES = max_nodes or MAX_NODES_DEFAULT
            want = data_blocks * SECTORS_PER_BLOCK
            extra = got - want
            if extra < 0 or extra % 8 or extra > 8 * MAX_MAP_NODES:
                c.fail("%s: st_blocks %d, expected %d for %d file block(s) plus at most "
                       "%d 4 KiB map nodes" % (what, got, want, data_blocks, MAX_MAP_NODES))
            else:
                print("    %s: st_blocks %d = %d data + %d map node(s)"
                      % (what, got, want, extra // 8))
            return got

        state = {}

        def thin():
            p = m("thin")
            with open(p, "wb") as f:
                f.truncate(10 * GiB)
            st = os.stat(p)
            c.eq(st.st_size, 10 * GiB, "thin file size")
            c.eq(st.st_blocks, 0, "st_blocks of a truncated 10 GiB file")
            c.eq(read_at(p, 7 * GiB + 123, 4096), bytes(4096), "read inside a hole")
            c.eq(seek(p, 0, os.SEEK_DATA), "ENXIO", "SEEK_DATA in an all-hole file")
            c.eq(seek(p, 0, os.SEEK_HOLE), 0, "SEEK_HOLE(0) in an all-hole file")
            payload = rng.randbytes(4096)
            fd = os.open(p, os.O_WRONLY)
            os.pwrite(fd, payload, 5 * GiB)
            os.close(fd)
            st = os.stat(p)
            c.eq(st.st_size, 10 * GiB, "size after a write inside the thin file")
            check_thin_blocks(p, 1, "st_blocks after a 4 KiB write at 5 GiB (one 1 MiB "
                              "file block)")
            c.eq(seek(p, 0, os.SEEK_DATA), 5 * GiB, "SEEK_DATA(0)")
            c.eq(seek(p, 5 * GiB + 100, os.SEEK_DATA), 5 * GiB + 100,
                 "SEEK_DATA inside the data block")
            c.eq(seek(p, 5 * GiB, os.SEEK_HOLE), 5 * GiB + MiB, "SEEK_HOLE(5 GiB)")
            c.eq(seek(p, 0, os.SEEK_HOLE), 0, "SEEK_HOLE(0)")
            c.eq(seek(p, 5 * GiB + MiB, os.SEEK_DATA), "ENXIO", "SEEK_DATA after the data")
            c.eq(seek(p, 10 * GiB - 1, os.SEEK_HOLE), 10 * GiB - 1,
                 "SEEK_HOLE at the last byte")
            c.eq(seek(p, 10 * GiB, os.SEEK_DATA), "ENXIO", "SEEK_DATA at EOF")
            c.eq(seek(p, 10 * GiB, os.SEEK_HOLE), "ENXIO", "SEEK_HOLE at EOF")
            c.eq(read_at(p, 5 * GiB, 4096), payload, "the 4 KiB written at 5 GiB")
            c.eq(read_at(p, 5 * GiB - 10, 10), bytes(10), "zeros before the data")
            c.eq(read_at(p, 5 * GiB + 4096, MiB - 4096), bytes(MiB - 4096),
                 "zeros in the rest of the file block")
            # a write straddling two file blocks allocates both
            fd = os.open(p, os.O_WRONLY)
            os.pwrite(fd, payload, 3 * GiB + MiB - 2048)
            os.close(fd)
            nb = check_thin_blocks(p, 3, "st_blocks after a write across a block "
                                   "boundary (3 file blocks in all)")
            c.eq(seek(p, 0, os.SEEK_DATA), 3 * GiB, "SEEK_DATA(0) finds the straddling write")
            c.eq(seek(p, 3 * GiB, os.SEEK_HOLE), 3 * GiB + 2 * MiB, "SEEK_HOLE after it")
            c.eq(seek(p, 3 * GiB + 2 * MiB, os.SEEK_DATA), 5 * GiB,
                 "SEEK_DATA skips to 5 GiB")
            c.eq(du(p), nb * 512, "du of the thin file vs st_blocks")
            c.eq(du(p, apparent=True), 10 * GiB, "du --apparent-size of the thin file")

        def small():
            p = m("hundred")
            with open(p, "wb") as f:
                f.write(b"h" * 100)
            c.eq(blocks(p), 0, "st_blocks of a 100-byte file (inline)")
            c.eq(du(p), 0, "du of a 100-byte file")
            c.eq(du(p, apparent=True), 100, "du --apparent-size of a 100-byte file")
            p = m("100k")
            data = rng.randbytes(100 * 1024)
            with open(p, "wb") as f:
                f.write(data)
            c.eq(blocks(p), 200, "st_blocks of a 100 KiB file (25 sub-blocks)")
            c.eq(du(p), 100 * 1024, "du of a 100 KiB file")
            c.eq(read_at(p, 0, len(data) + 10), data, "100 KiB file content")
            p = m("1m+1")
            with open(p, "wb") as f:
                f.write(b"x" * (MiB + 1))
            c.eq(blocks(p), 2 * SECTORS_PER_BLOCK, "st_blocks of a 1 MiB + 1 file "
                 "(two file blocks)")
            # punch in sub-block and inline files: zeroes, size unchanged
            fd = os.open(m("100k"), os.O_RDWR)
            vt.fallocate(fd, vt.FALLOC_FL_PUNCH_HOLE | vt.FALLOC_FL_KEEP_SIZE, 10000, 20000)
            os.close(fd)
            want = data[:10000] + bytes(20000) + data[30000:]
            c.eq(os.stat(m("100k")).st_size, len(data), "size after punching a sub-block file")
            c.check(read_at(m("100k"), 0, len(data)) == want,
                    "content after punching [10000, 30000) of a sub-block file")
            fd = os.open(m("hundred"), os.O_RDWR)
            vt.fallocate(fd, vt.FALLOC_FL_PUNCH_HOLE | vt.FALLOC_FL_KEEP_SIZE, 10, 20)
            os.close(fd)
            c.eq(read_at(m("hundred"), 0, 200), b"h" * 10 + bytes(20) + b"h" * 70,
                 "content after punching an inline file")

        def prealloc():
            # Leave stale random data in freed blocks first, so that reading
            # unwritten blocks as zeros is a real check.
            junk = m("junk")
            free0 = free_bytes(m())
            with open(junk, "wb") as f:
                for _ in range(64):
                    f.write(rng.randbytes(MiB))
            os.unlink(junk)
            # the blocks of an unlinked file are freed when the kernel
            # forgets the inode, which may come a moment after unlink
            c.check(wait_free(m(), free0), "free space did not come back within 10 s "
                    "after deleting a 64 MiB file: %d, was %d" % (free_bytes(m()), free0))
            p = m("prealloc")
            free0 = free_bytes(m())
            fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                vt.fallocate(fd, 0, 0, 64 * MiB)
            finally:
                os.close(fd)
            st = os.stat(p)
            c.eq(st.st_size, 64 * MiB, "size after fallocate 64 MiB")
            c.eq(st.st_blocks, 64 * SECTORS_PER_BLOCK, "st_blocks after fallocate 64 MiB")
            used = free0 - free_bytes(m())
            c.check(64 * MiB <= used <= 66 * MiB,
                    "fallocate 64 MiB took %d bytes of free space" % used)
            d = read_at(p, 0, 64 * MiB)
            if d != bytes(64 * MiB):
                c.fail("preallocated file does not read as zeros (%d bytes read, %d non-zero,"
                       " first at %d)" % (len(d), sum(1 for b in d if b),
                                          next((i for i, b in enumerate(d) if b), -1)))
            c.eq(seek(p, 0, os.SEEK_DATA), "ENXIO", "SEEK_DATA in an all-unwritten file")
            c.eq(seek(p, 0, os.SEEK_HOLE), 0, "SEEK_HOLE(0) in an all-unwritten file")
            # writing into an unwritten block: the rest of that block must
            # still read as zeros
            payload = rng.randbytes(4096)
            fd = os.open(p, os.O_WRONLY)
            os.pwrite(fd, payload, 10 * MiB + 8192)
            os.close(fd)
            c.eq(blocks(p), 64 * SECTORS_PER_BLOCK, "st_blocks after writing into "
                 "preallocated space")
            c.eq(read_at(p, 10 * MiB, MiB), bytes(8192) + payload + bytes(MiB - 12288),
                 "block written partially after preallocation: data plus zeros")
            got = seek(p, 0, os.SEEK_DATA)
            c.check(got in (10 * MiB, 10 * MiB + 8192),
                    "SEEK_DATA(0) after writing at 10 MiB + 8 KiB: %r" % (got,))
            c.eq(seek(p, 10 * MiB + 8192, os.SEEK_HOLE), 11 * MiB,
                 "SEEK_HOLE after the written block")
            # punch the middle 8 MiB of preallocated space
            fd = os.open(p, os.O_RDWR)
            vt.fallocate(fd, vt.FALLOC_FL_PUNCH_HOLE | vt.FALLOC_FL_KEEP_SIZE,
                         28 * MiB, 8 * MiB)
            os.close(fd)
            c.eq(blocks(p), 56 * SECTORS_PER_BLOCK, "st_blocks after punching 8 MiB of "
                 "preallocated space")
            c.eq(os.stat(p).st_size, 64 * MiB, "size kept by PUNCH_HOLE|KEEP_SIZE")

        def falloc_over_data():
            """fallocate over written data keeps it; beyond EOF extends with
            zeros; KEEP_SIZE beyond EOF either works or is EOPNOTSUPP."""
            p = m("fdata")
            data = rng.randbytes(4 * MiB + MiB // 2)       # ends inside block 4
            with open(p, "wb") as f:
                f.write(data)
            fd = os.open(p, os.O_RDWR)
            try:
                vt.fallocate(fd, 0, 0, 8 * MiB)
                c.eq(os.fstat(fd).st_size, 8 * MiB, "size after fallocate over data to 8 MiB")
                got = os.pread(fd, 8 * MiB, 0)
                c.check(got[:len(data)] == data, "fallocate over written data changed it")
                c.check(got[len(data):] == bytes(8 * MiB - len(data)),
                        "bytes between the old EOF and the fallocated end are not zeros")
                c.eq(os.fstat(fd).st_blocks, 8 * SECTORS_PER_BLOCK,
                     "st_blocks after fallocate over data to 8 MiB")
                # write into the unwritten tail, then check the neighbours
                os.pwrite(fd, b"W" * 10, 6 * MiB + 3)
                c.eq(os.pread(fd, 16, 6 * MiB), b"\0\0\0" + b"W" * 10 + b"\0\0\0",
                     "a small write into preallocated space")
                # ZERO_RANGE past EOF without KEEP_SIZE extends the file
                vt.fallocate(fd, vt.FALLOC_FL_ZERO_RANGE, 8 * MiB - 100, MiB)
                c.eq(os.fstat(fd).st_size, 9 * MiB - 100, "size after ZERO_RANGE past EOF")
                c.eq(os.pread(fd, 2 * MiB, 8 * MiB - 100), bytes(MiB),
                     "zeros from ZERO_RANGE past EOF (up to the new EOF)")
                # PUNCH_HOLE past EOF changes nothing
                size = os.fstat(fd).st_size
                vt.fallocate(fd, vt.FALLOC_FL_PUNCH_HOLE | vt.FALLOC_FL_KEEP_SIZE,
                             size + MiB, MiB)
                c.eq(os.fstat(fd).st_size, size, "size after punching past EOF")
                # KEEP_SIZE preallocation past EOF
                b0 = os.fstat(fd).st_blocks
                err = c.errno_of(vt.fallocate, fd, vt.FALLOC_FL_KEEP_SIZE, 16 * MiB, 2 * MiB)
                if err == errno.EOPNOTSUPP:
                    print("    fallocate KEEP_SIZE past EOF: EOPNOTSUPP")
                elif err is not None:
                    c.fail("fallocate KEEP_SIZE past EOF: %s" % os.strerror(err))
                else:
                    st = os.fstat(fd)
                    c.eq(st.st_size, size, "size after fallocate KEEP_SIZE past EOF")
                    c.eq(st.st_blocks - b0, 2 * SECTORS_PER_BLOCK,
                         "st_blocks added by fallocate KEEP_SIZE of 2 MiB past EOF")
                    c.eq(os.pread(fd, MiB, size - 10), bytes(10), "read at EOF after "
                         "preallocating past it")
            finally:
                os.close(fd)
            v_data = data
            state["fdata"] = v_data

        punch_model = {}

        def punch():
            p = m("punch")
            data = bytearray()
            with open(p, "wb") as f:
                for _ in range(64):
                    chunk = rng.randbytes(MiB)
                    f.write(chunk)
                    data += chunk
            c.eq(blocks(p), 64 * SECTORS_PER_BLOCK, "st_blocks of a 64 MiB file")
            free0 = free_bytes(m())
            fd = os.open(p, os.O_RDWR)
            try:
                vt.fallocate(fd, vt.FALLOC_FL_PUNCH_HOLE | vt.FALLOC_FL_KEEP_SIZE,
                             28 * MiB, 8 * MiB)
            finally:
                os.close(fd)
            data[28 * MiB:36 * MiB] = bytes(8 * MiB)
            c.eq(blocks(p), 56 * SECTORS_PER_BLOCK, "st_blocks after punching 8 MiB")
            c.eq(free_bytes(m()) - free0, 8 * MiB, "free space gained by punching 8 MiB")
            c.eq(read_at(p, 28 * MiB, 8 * MiB), bytes(8 * MiB), "punched range reads zeros")
            c.eq(seek(p, 0, os.SEEK_HOLE), 28 * MiB, "SEEK_HOLE finds the punched range")
            c.eq(seek(p, 28 * MiB, os.SEEK_DATA), 36 * MiB, "SEEK_DATA after the hole")
            # unaligned punch: blocks 41 and 42 are freed, the partial ends zeroed
            fd = os.open(p, os.O_RDWR)
            try:
                vt.fallocate(fd, vt.FALLOC_FL_PUNCH_HOLE | vt.FALLOC_FL_KEEP_SIZE,
                             40 * MiB + 100, 3 * MiB)
                data[40 * MiB + 100:43 * MiB + 100] = bytes(3 * MiB)
                c.eq(blocks(p), 54 * SECTORS_PER_BLOCK,
                     "st_blocks after an unaligned 3 MiB punch (2 whole blocks freed)")
                # zero range, unaligned
                vt.fallocate(fd, vt.FALLOC_FL_ZERO_RANGE, 50 * MiB + 5, 2 * MiB - 5)
                data[50 * MiB + 5:52 * MiB] = bytes(2 * MiB - 5)
                c.eq(os.fstat(fd).st_size, 64 * MiB, "size after ZERO_RANGE inside the file")
            finally:
                os.close(fd)
            got = read_at(p, 0, 64 * MiB + 1)
            if got != data:
                i = next(i for i in range(min(len(got), len(data))) if got[i] != data[i]) \
                    if len(got) == len(data) else min(len(got), len(data))
                c.fail("punched/zeroed 64 MiB file differs from the expected content at "
                       "offset %d (read %d bytes)" % (i, len(got)))
            punch_model["data"] = bytes(data)
            c.eq(du(p), blocks(p) * 512, "du vs st_blocks of the punched file")
            c.eq(du(p, apparent=True), 64 * MiB, "du --apparent-size of the punched file")

        def df():
            free0 = free_bytes(m())
            p = m("big200")
            chunk = rng.randbytes(MiB)
            with open(p, "wb") as f:
                for _ in range(200):
                    f.write(chunk)
                os.fsync(f.fileno())
            free1 = free_bytes(m())
            used = free0 - free1
            print("df: free %d -> %d after writing 200 MiB (%.2f MiB used)"
                  % (free0, free1, used / MiB))
            c.check(200 * MiB <= used <= 202 * MiB,
                    "writing 200 MiB reduced free space by %d bytes (%.2f MiB)"
                    % (used, used / MiB))
            r = subprocess.run(["df", "-B1", "--output=avail", m()], capture_output=True,
                               text=True)
            c.eq(int(r.stdout.split()[1]), os.statvfs(m()).f_bavail * os.statvfs(m()).f_frsize,
                 "df avail vs statvfs")
            os.unlink(p)
            wait_free(m(), free0)
            free2 = free_bytes(m())
            c.eq(free2, free0, "free space after deleting the 200 MiB file")

        def far():
            """Writes far apart make the block map grow to heights 1..4
            (728 root slots, 1008 per node: 728 MiB, 717 GiB, 706 TiB)."""
            p = m("far")
            free0 = free_bytes(m())
            offs = [0, 727 * MiB + 5, 728 * MiB, 5 * GiB, 1 << 40, 1 << 50,
                    (1 << 62) - 4096]
            written = {}
            fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                for off in offs:
                    d = rng.randbytes(4096)
                    try:
                        os.pwrite(fd, d, off)
                    except OSError as e:
                        c.fail("4 KiB write at offset %d (%#x): %s" % (off, off, e))
                        continue
                    written[off] = d
                    c.eq(os.pread(fd, 4096, off), d, "read back the 4 KiB at %#x" % off)
                    c.eq(os.pread(fd, 4096, 0), written[0], "first 4 KiB after writing at %#x"
                         % off)
            finally:
                os.close(fd)
            if not written:
                return
            # each write lands in its own 1 MiB block, except 727 MiB + 5
            # which straddles blocks 727 and 728 (728 MiB is in 728 too)
            blocks_expected = sorted({o // MiB for o in written} |
                                     {(o + 4095) // MiB for o in written})
            state["far"] = (written, blocks_expected)
            check_far("after the writes", free0)
            state["far_free0"] = free0

        def check_far(when, free0=None):
            if "far" not in state:
                return
            written, blocks_expected = state["far"]
            p = m("far")
            st = os.stat(p)
            c.eq(st.st_size, max(written) + 4096, "%s: size of the far file" % when)
            check_thin_blocks(p, len(blocks_expected), "%s: st_blocks of the far file" % when,
                              max_nodes=16)
            # walk SEEK_DATA/SEEK_HOLE: exactly the written blocks, merged
            # where adjacent
            runs = []
            for b in blocks_expected:
                if runs and runs[-1][1] == b * MiB:
                    runs[-1][1] = (b + 1) * MiB
                else:
                    runs.append([b * MiB, (b + 1) * MiB])
            got, pos = [], 0
            while len(got) <= len(runs):
                d = seek(p, pos, os.SEEK_DATA)
                if d == "ENXIO" or not isinstance(d, int):
                    break
                h = seek(p, d, os.SEEK_HOLE)
                if not isinstance(h, int):
                    break
                got.append([d, min(h, st.st_size)])
                pos = h
            want = [[a, min(b, st.st_size)] for a, b in runs]
            c.eq(got, want, "%s: data regions found with SEEK_DATA/SEEK_HOLE" % when)
            fd = os.open(p, os.O_RDONLY)
            try:
                for off, d in written.items():
                    blk = off // MiB * MiB
                    n = min(2 * MiB, st.st_size - blk)
                    exp = bytearray(n)
                    for o2, d2 in written.items():
                        lo, hi = max(o2, blk), min(o2 + 4096, blk + n)
                        if lo < hi:
                            exp[lo - blk:hi - blk] = d2[lo - o2:hi - o2]
                    c.check(os.pread(fd, n, blk) == exp,
                            "%s: blocks around %#x: written data plus zeros" % (when, off))
            finally:
                os.close(fd)

        limit = {}

        def size_limit():
            """Past the largest size the format accepts (docs/format.md: an
            inode's size is at most 2^62), a write or truncate must either
            fail with EFBIG or give a file that survives a remount."""
            for name, how, fn in (
                    ("limit-write", "1-byte write at 2^62",
                     lambda fd: os.pwrite(fd, b"L", 1 << 62)),
                    ("limit-trunc", "ftruncate to 2^62 + 1",
                     lambda fd: os.ftruncate(fd, (1 << 62) + 1))):
                fd = os.open(m(name), os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    fn(fd)
                    limit[name] = (how, os.fstat(fd).st_size)
                    print("    %s accepted (size %d): must survive a remount" % (how,
                                                                              limit[name][1]))
                except OSError as e:
                    c.eq(e.errno, errno.EFBIG, "%s refused with" % how)
                finally:
                    os.close(fd)

        def size_limit_after_remount():
            for name, (how, size) in limit.items():
                try:
                    c.eq(os.stat(m(name)).st_size, size, "after remount: size of the file "
                         "made by a %s" % how)
                except OSError as e:
                    c.fail("after remount: stat of the file made by a %s (accepted before "
                           "the remount): %s" % (how, e))

        def far_shrink():
            if "far" not in state:
                return
            p = m("far")
            os.truncate(p, MiB)
            check_thin_blocks(p, 1, "st_blocks of the far file truncated to 1 MiB",
                              max_nodes=4)
            c.eq(seek(p, 0, os.SEEK_HOLE), MiB, "SEEK_HOLE after truncating the far file")
            written = state["far"][0]
            c.eq(read_at(p, 0, 4096), written[0], "first 4 KiB after truncating far file")
            os.unlink(p)
            free0 = state["far_free0"]
            c.check(wait_free(m(), free0), "free space after deleting the far file: %d, "
                    "before it was created %d" % (free_bytes(m()), free0))

        c.section("thin 10 GiB file", thin)
        c.section("small files", small)
        c.section("fallocate", prealloc)
        c.section("punch hole / zero range", punch)
        c.section("fallocate over data and past EOF", falloc_over_data)
        c.section("df free space", df)
        c.section("far writes (map heights 1..4)", far)

        def sizes():
            out = {}
            for n in sorted(os.listdir(m())):
                try:
                    st = os.stat(m(n))
                    out[n] = (st.st_size, st.st_blocks)
                except OSError as e:
                    out[n] = "stat: %s" % e
            return out
        before = sizes()
        v.remount()
        after = sizes()
        c.eq(after, before, "sizes and st_blocks after remount")
        c.eq(seek(m("thin"), 0, os.SEEK_DATA), 3 * GiB, "SEEK_DATA(0) after remount")
        c.eq(seek(m("prealloc"), 0, os.SEEK_HOLE), 0,
             "SEEK_HOLE(0) of the preallocated file after remount")
        c.check(read_at(m("prealloc"), 40 * MiB, 4 * MiB) == bytes(4 * MiB),
                "preallocated space reads zeros after remount")
        if "data" in punch_model:
            c.check(read_at(m("punch"), 0, 64 * MiB + 1) == punch_model["data"],
                    "punched file content after remount")
        if "fdata" in state:
            c.check(read_at(m("fdata"), 0, len(state["fdata"])) == state["fdata"],
                    "data under a fallocate after remount")
        c.section("far file after remount", check_far, "after remount")
        c.section("far file truncated and deleted", far_shrink)
        c.section("file size limit", size_limit)
        v.remount()
        c.section("size limit after remount", size_limit_after_remount)
        v.unmount()


if __name__ == "__main__":
    vt.main("sparse", body)
