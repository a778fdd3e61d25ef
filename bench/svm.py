#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Storage vMotion benchmark (BENCHMARKS.md "Storage vMotion"): two vmfsd
volumes (two images, two mounts, one host) and a host agent, built from
the build folder.

Offline: a VM with an 8 GiB thin disk holding DATA GiB of data (64 MiB
runs, every other one) is moved ds1 -> ds2 by `vmfsctl migrate-storage`,
against the two anchors copying the same flat extent between the same two
volumes: `cp --sparse=always` and `qemu-img convert -f raw -O raw -t none
-T none` (page cache dropped before each).  Reported: seconds, data MB/s,
allocation of the result.

Live: the test guest writes (vmfs.fill: 1 MiB fsynced writes in a loop)
on a disk that also holds LIVE_DATA GiB; its write rate (growth of the
thin extent) is measured for WINDOW s before the move, during the move,
and the move's data throughput.

    bench/svm.py [--build DIR] [--data GIB] [--append]

Prints a markdown report; --append adds it to BENCHMARKS.md.  Root,
/dev/fuse, QEMU; about 2 x DATA GiB free in /var/tmp.
"""

import argparse
import datetime
import json
import os
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MiB = 1 << 20
GiB = 1 << 30


def drop_caches():
    subprocess.run(["sync"])
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def timed(cmd, src=None):
    if src:
        settle(src)
    drop_caches()
    t = time.monotonic()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["sync"])
    return time.monotonic() - t


def fill(path, data_gib, start=256 * MiB):
    """DATA GiB in 64 MiB runs every 128 MiB from START on."""
    blk = os.urandom(MiB)
    fd = os.open(path, os.O_WRONLY)
    try:
        off, left = start, data_gib * GiB
        while left > 0:
            for k in range(64):
                os.pwrite(fd, blk[k:] + blk[:k], off + k * MiB)
            off += 128 * MiB
            left -= 64 * MiB
        os.fsync(fd)
    finally:
        os.close(fd)
    settle(path)


def settle(path):
    """Waits until PATH opens: now and then an open right after a long
    write answered EBUSY on this machine (vmfsd still held the writer's
    lock); the wait is reported, never timed."""
    for i in range(600):
        try:
            os.close(os.open(path, os.O_RDONLY))
            if i:
                print("bench: %s opened after %.1f s of EBUSY" % (path, i / 10), file=sys.stderr)
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("%s stays busy" % path)


def alloc(path):
    return os.stat(path).st_blocks * 512


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--data", type=int, default=3, help="GiB of data on the offline disk")
    ap.add_argument("--live-data", type=int, default=1)
    ap.add_argument("--window", type=int, default=10)
    ap.add_argument("--append", action="store_true")
    ap.add_argument("--offline-only", action="store_true")
    args = ap.parse_args()
    sys.path.insert(0, os.path.join(ROOT, "tests", "vm"))
    import vmtest
    vmtest.use_build(args.build)
    vmtest.require_env()
    kernel, initrd = vmtest.guest(compressed=True)   # the guest of the earlier runs (BENCHMARKS.md)
    c = vmtest.Checker("bench-svm")
    out = []
    size = "%dG" % (2 * args.data + 6)
    with vmtest.Volume("bsvm1", size=size, checker=c) as v1, \
            vmtest.Volume("bsvm2", size=size, checker=c) as v2:
        ds1, ds2 = v1.mount("bench"), v2.mount("bench")
        a = v1.agent("bench")
        vm = os.path.join(ds1, "bvm")
        a.ok("create", vm, "--cpus", 1, "--memory", 64, "--disk", "8G", "--net", "none")
        flat = os.path.join(vm, "bvm-flat.vmdk")
        fill(flat, args.data)
        data = alloc(flat)
        rows = []
        t = timed(["cp", "--sparse=always", flat, os.path.join(ds2, "cp-flat")], flat)
        rows.append(("cp --sparse=always", t, alloc(os.path.join(ds2, "cp-flat"))))
        os.unlink(os.path.join(ds2, "cp-flat"))
        t = timed(["qemu-img", "convert", "-f", "raw", "-O", "raw", "-t", "none", "-T", "none",
                   flat, os.path.join(ds2, "qi-flat")], flat)
        rows.append(("qemu-img convert -t none -T none", t, alloc(os.path.join(ds2, "qi-flat"))))
        os.unlink(os.path.join(ds2, "qi-flat"))
        settle(flat)
        drop_caches()
        t0 = time.monotonic()
        r = subprocess.run([os.environ["VMFSCTL"], "--agent", a.sock, "--json", "migrate-storage",
                            vm, ds2], check=True, capture_output=True, text=True)
        t = time.monotonic() - t0
        # the copy ends where the switch begins; the rest is removing the
        # source (freeing its blocks) and the records
        sw = [json.loads(x)["task"]["elapsed_ms"] / 1000 for x in r.stdout.splitlines()
              if '"switching"' in x]
        moved = alloc(os.path.join(ds2, "bvm", "bvm-flat.vmdk"))
        if sw:
            rows.append(("vmfsctl migrate-storage: the copy (to the switch)", sw[0], moved))
        rows.append(("vmfsctl migrate-storage: the whole move (source removed)", t, moved))
        best = min(r[1] for r in rows[:2])
        out.append("### Offline move: %d GiB of data on an 8 GiB thin disk, ds1 -> ds2\n"
                   % (data // GiB))
        out.append("| copier | seconds | data MB/s | allocated after | vs faster anchor |")
        out.append("|---|---|---|---|---|")
        for name, t, al in rows:
            out.append("| %s | %.1f | %.0f | %d MiB | %.2fx |" % (
                name, t, data / t / 1e6, al >> 20, best / t))
        a.ok("destroy", os.path.join(ds2, "bvm"))
        if args.offline_only:
            print("\n".join(out))
            return

        # live: a guest writing during the move
        lv = os.path.join(ds1, "lvm")
        a.ok("create", lv, "--cpus", 1, "--memory", 192, "--disk", "8G", "--net", "none",
             "--kernel", kernel, "--initrd", initrd,
             "--append", "console=ttyS0 quiet vmfs.fill=4000")
        lflat = os.path.join(lv, "lvm-flat.vmdk")
        # far from the guest's own writes (from 1 MiB up): its write rate
        # is measured as the growth of the thin extent
        fill(lflat, args.live_data, start=6 * GiB)
        a.ok("power-on", lv)
        vmtest.wait_for(lambda: "fill start" in vmtest.read_log(lv, "lvm"), 300, "fill start")
        time.sleep(3)

        def rate(path, secs):
            a0, t0 = alloc(path), time.monotonic()
            time.sleep(secs)
            return (alloc(path) - a0) / (time.monotonic() - t0)

        before = rate(lflat, args.window)
        ldata = alloc(lflat)
        during = {}

        def sample():
            during["r"] = rate(lflat, min(args.window, 5))

        th = threading.Thread(target=sample)
        t0 = time.monotonic()
        th.start()
        a.ok("migrate-storage", lv, ds2, timeout=3600)
        tl = time.monotonic() - t0
        th.join()
        after = rate(os.path.join(ds2, "lvm", "lvm-flat.vmdk"), args.window)
        a.ok("power-off", os.path.join(ds2, "lvm"))
        out.append("\n### Live move: %d MiB allocated, guest writing 1 MiB fsynced blocks\n"
                   % (ldata >> 20))
        out.append("| measure | value |")
        out.append("|---|---|")
        out.append("| move time | %.1f s |" % tl)
        out.append("| move throughput (data) | %.0f MB/s |" % (ldata / tl / 1e6))
        out.append("| guest writes before the move | %.1f MB/s |" % (before / 1e6))
        out.append("| guest writes during the move (first %d s) | %.1f MB/s (%.0f %%) |" % (
            min(args.window, 5), during.get("r", 0) / 1e6,
            100 * during.get("r", 0) / before if before else 0))
        out.append("| guest writes after the move | %.1f MB/s |" % (after / 1e6))
    if c.failures:
        sys.exit(1)
    cpu = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    head = ["## Storage vMotion benchmark, %s UTC" % datetime.datetime.utcnow().strftime(
        "%Y-%m-%d %H:%M"), "",
        "`bench/svm.py --data %d` (%s CPUs, QEMU TCG guest, volumes on sparse images in "
        "/var/tmp; one run)" % (args.data, cpu), ""]
    text = "\n".join(head + out) + "\n"
    print(text)
    if args.append:
        with open(os.path.join(ROOT, "BENCHMARKS.md"), "a") as f:
            f.write("\n" + text)


if __name__ == "__main__":
    main()
