#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""fio data verification through the mount: O_DIRECT random writes of
random sizes (4 KiB .. 1 MiB) at queue depth 16 with libaio, each block
carrying a crc32c verify header checked right after writing; then an
unmount, a remount, and the same job again with --verify_only, which
replays the same offsets and sizes (fixed seed) and checks what is on the
volume now.  Then four jobs race their first whole-block writes into the
same holes of thin files (and unwritten blocks of preallocated ones).  fio
is a declared dependency of the project: a missing fio is a failure, not a
skip."""

import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import vmfstest as vt  # noqa: E402  (tests/vmfstest.py: the shared helpers)

SIZE = os.environ.get("VMFSD_FIO_SIZE", "512M")
SEED = "8021"


def fio_args(path, name):
    return ["fio", "--name=" + name, "--filename=" + path, "--direct=1",
            "--rw=randwrite", "--bsrange=4k-1M", "--size=" + SIZE,
            "--ioengine=libaio", "--iodepth=16", "--verify=crc32c",
            "--verify_fatal=1", "--randrepeat=1", "--randseed=" + SEED,
            "--group_reporting", "--output-format=normal"]


def fio_multi_args(directory):
    """Four jobs at once, each on its own file: concurrent allocation."""
    return ["fio", "--name=multi", "--directory=" + directory, "--numjobs=4",
            "--direct=1", "--rw=randwrite", "--bsrange=4k-256k", "--size=96M",
            "--ioengine=libaio", "--iodepth=8", "--verify=crc32c", "--verify_fatal=1",
            "--randrepeat=1", "--randseed=" + SEED, "--group_reporting",
            "--output-format=normal"]


def run_fio(c, args, what, expect_ok=True, cwd=None):
    print("$ " + " ".join(args), flush=True)
    # fio leaves *-verify.state files in its working directory: the test's
    # temporary directory, not wherever the test was started
    r = subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=cwd)
    if not expect_ok:
        return c.check(r.returncode != 0, "%s: fio passed although the data was "
                       "changed behind its back" % what)
    summary = [l for l in r.stdout.splitlines() if "IOPS" in l or "err=" in l]
    print("\n".join("    " + l.strip() for l in summary))
    ok = c.eq(r.returncode, 0, "%s: fio exit status" % what)
    bad = [l for l in (r.stdout + r.stderr).splitlines()
           if "verify" in l.lower() and ("bad" in l.lower() or "fail" in l.lower())
           or "err=" in l and "err= 0" not in l]
    ok &= c.check(not bad, "%s: fio reported errors: %s" % (what, bad[:5]))
    if not ok:
        print("---- fio stdout:\n%s\n---- fio stderr:\n%s" % (r.stdout[-6000:], r.stderr[-6000:]))
    return ok


RACE_BLOCKS = 24
RACE_JOBS = 4


def race_job_args(path, kind):
    """RACE_JOBS jobs on one file, each writing every 1 MiB block once in
    its own random order with libaio at QD8 and its own byte pattern: the
    first writes to a block race (the kernel serialises synchronous direct
    writes to one file, asynchronous ones it does not)."""
    args = ["fio", "--filename=" + path, "--direct=1", "--rw=randwrite", "--bs=1M",
            "--size=%dM" % RACE_BLOCKS, "--ioengine=libaio", "--iodepth=8",
            "--fallocate=none", "--randrepeat=0", "--group_reporting",
            "--output-format=normal"]
    for j in range(RACE_JOBS):
        args += ["--name=race-%s-%d" % (kind, j), "--buffer_pattern=0x%02x" % (0x11 * (j + 1))]
    return args


def racing_first_writes(c, v):
    """Whole-block first writes racing for the same holes of a thin file
    (and the same unwritten blocks of a preallocated one): the allocating
    write under the shared lock (fs/file.c, write_alloc_shared), where two
    writers of one hole both allocate, the first to map wins and the other
    gives its block back.  Every sector must hold one writer's pattern (a
    zero sector is a lost write, another byte foreign data), st_blocks must
    count each block once, and the unmount's fsck finds no leaked or shared
    block."""
    pats = [bytes([0x11 * (j + 1)]) * 512 for j in range(RACE_JOBS)]
    for kind in ("thin", "preallocated"):
        for rnd in range(3):
            path = v.path("race-%s-%d" % (kind, rnd))
            fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
            if kind == "thin":
                os.ftruncate(fd, RACE_BLOCKS << 20)
            else:
                os.posix_fallocate(fd, 0, RACE_BLOCKS << 20)
            os.close(fd)
            what = "racing first writes, %s file, round %d" % (kind, rnd)
            if not run_fio(c, race_job_args(path, kind), what, cwd=v.dir):
                continue
            with open(path, "rb") as f:
                data = f.read()
            c.eq(len(data), RACE_BLOCKS << 20, "%s: size" % what)
            bad = [i for i in range(0, len(data), 512) if data[i:i + 512] not in pats]
            c.check(not bad, "%s: %d sectors hold no writer's pattern, first at %s"
                    % (what, len(bad), bad[:3]))
            c.eq(os.stat(path).st_blocks, RACE_BLOCKS << 11,
                 "%s: st_blocks (every block counted once)" % what)


def body(c):
    if not shutil.which("fio"):
        c.fail("fio is not installed (a declared dependency: see scripts/deps.sh)")
        return
    with vt.Volume("fio") as v:
        v.mkfs("2G")
        v.mount()
        path = v.path("fio.dat")
        if run_fio(c, fio_args(path, "write-and-verify"), "randwrite + verify", cwd=v.dir):
            st = os.stat(path)
            print("fio.dat: size %d, st_blocks %d" % (st.st_size, st.st_blocks))
            v.remount()
            if run_fio(c, fio_args(path, "write-and-verify") + ["--verify_only=1"],
                       "verify_only after remount", cwd=v.dir):
                # negative control: the verification must notice a change
                fd = os.open(path, os.O_WRONLY)
                os.pwrite(fd, b"\0" * 4096, 300 << 20)
                os.close(fd)
                run_fio(c, fio_args(path, "write-and-verify") + ["--verify_only=1"],
                        "verify_only after zeroing 4 KiB", expect_ok=False, cwd=v.dir)
        multi = v.path("multi")
        os.mkdir(multi)
        if run_fio(c, fio_multi_args(multi), "4 concurrent jobs", cwd=v.dir):
            v.remount()
            run_fio(c, fio_multi_args(multi) + ["--verify_only=1"],
                    "4 concurrent jobs, verify_only after remount", cwd=v.dir)
        racing_first_writes(c, v)
        v.unmount()


if __name__ == "__main__":
    vt.main("fio_verify", body)
