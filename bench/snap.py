#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Snapshot benchmark (BENCHMARKS.md "Snapshots"): one vmfsd volume, one
host agent, the test guest, built from the build folder.

1. Time to take a snapshot of a running VM: COUNT live snapshots of the
   test guest, each timed around `vmfsctl snapshot create` (the client's
   wall time: request, qemu-img create of the delta, the .vmsd written and
   synced, the QMP switch) and as the agent measured it (its
   snapshot.created event: from the .vmsd write to the switch).
2. Guest-visible I/O rate with 0 and 3 snapshots: qemu-img bench (cache
   none, io_uring, QD 16) on the disk's chain as the agent builds it, in
   the same run: 4 KiB reads of data that lives in the raw base (every
   read goes down the chain) and 4 KiB writes (each allocates in the top
   delta), against the flat extent alone.
3. Consolidation throughput: DATA MiB written by the guest (vmfs.fill)
   into a delta over the flat extent, then `snapshot delete` online
   (block-commit of the active layer into the raw extent, the guest
   running); and the same amount offline (`qemu-img commit`).

    bench/snap.py [--build DIR] [--count N] [--data MIB] [--append]

Prints a markdown report; --append adds it to BENCHMARKS.md.  Root,
/dev/fuse, QEMU.
"""

import argparse
import datetime
import json
import os
import re
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MiB = 1 << 20


def qbench(spec, write, count, size=4096, depth=16):
    """qemu-img bench on SPEC (a file or json: chain): ops per second."""
    cmd = ["qemu-img", "bench", "-t", "none", "-i", "io_uring", "-d", str(depth), "-c", str(count),
           "-s", str(size), "-S", str(size * 7)]
    if write:
        cmd.append("-w")
    if not spec.startswith("json:"):
        cmd += ["-f", "raw"]
    t = time.monotonic()
    subprocess.run(cmd + [spec], check=True, stdout=subprocess.DEVNULL)
    return count / (time.monotonic() - t)


def chain_spec(folder, files):
    """json: spec of FILES (top first) down to the raw last one."""
    node = {"driver": "raw", "file": {"driver": "file", "filename": os.path.join(folder, files[-1])}}
    for f in reversed(files[:-1]):
        node = {"driver": "qcow2", "file": {"driver": "file", "filename": os.path.join(folder, f)},
                "backing": node}
    return "json:" + json.dumps(node)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--count", type=int, default=5, help="live snapshots timed")
    ap.add_argument("--data", type=int, default=256, help="MiB the guest writes into a delta")
    ap.add_argument("--ops", type=int, default=20000, help="qemu-img bench requests per run")
    ap.add_argument("--append", action="store_true")
    args = ap.parse_args()
    sys.path.insert(0, os.path.join(ROOT, "tests", "vm"))
    import vmtest
    vmtest.use_build(args.build)
    vmtest.require_env()
    kernel, initrd = vmtest.guest(compressed=True)   # the guest of the earlier runs (BENCHMARKS.md)
    c = vmtest.Checker("bench-snap")
    load0 = os.getloadavg()[0]
    rows = []
    with vmtest.Volume("bench-snap", size="8G", checker=c) as vol:
        mnt = vol.mount("A")
        a = vol.agent("A")
        vm = os.path.join(mnt, "bs")
        a.ok("create", vm, "--cpus", 1, "--memory", vmtest.GUEST_MEM, "--disk", "2G",
             "--kernel", kernel, "--initrd", initrd, "--net", "none",
             "--append", "console=ttyS0 quiet vmfs.fill=%d" % args.data)
        # 1. live snapshots (the guest boots and fills its disk meanwhile)
        a.ok("power-on", vm)
        vmtest.wait_for(lambda: "vmfs-guest" in vmtest.read_log(vm, "bs"), 300, "the guest")
        wall = []
        for i in range(args.count):
            t = time.monotonic()
            a.ok("snapshot", "create", vm, "b%d" % i)
            wall.append((time.monotonic() - t) * 1000)
        ev = json.loads(a.ok("--json", "events", vm))["events"]
        agent_ms = [int(m.group(1)) for e in ev
                    for m in [re.search(r"taken live in (\d+) ms", e.get("message", ""))] if m]
        rows.append(("live snapshot, vmfsctl wall time (median of %d)" % args.count,
                     "%.0f ms" % statistics.median(wall)))
        rows.append(("live snapshot, agent: .vmsd written to QMP switch done (median)",
                     "%.0f ms" % statistics.median(agent_ms)))
        # 3a. online consolidation of DATA MiB: everything since b0 went
        # into the deltas; delete --all commits them, the guest running
        vmtest.wait_for(lambda: "fill done" in vmtest.read_log(vm, "bs"), 900, "the guest's fill")
        lst = json.loads(a.ok("--json", "snapshot", "list", vm))
        data = sum(f["allocated"] for f in lst["disks"][0]["chain"][:-1])
        t = time.monotonic()
        a.ok("snapshot", "delete", vm, "--all", timeout=1800)
        dt = time.monotonic() - t
        rows.append(("online consolidation (block-commit, %d deltas, %.0f MiB allocated in them)"
                     % (args.count, data / MiB), "%.1f s, %.0f MB/s" % (dt, data / dt / 1e6)))
        a.ok("power-off", vm)
        # 2. I/O on the chain: 0 and 3 deltas, offline, with qemu-img bench
        flat = "bs-flat.vmdk"
        raw_r = qbench(os.path.join(vm, flat), False, args.ops)
        raw_w = qbench(os.path.join(vm, flat), True, args.ops)
        for i in range(3):
            a.ok("snapshot", "create", vm, "c%d" % i)
        lst = json.loads(a.ok("--json", "snapshot", "list", vm))
        files = [f["file"] for f in lst["disks"][0]["chain"]]
        spec = chain_spec(vm, files)
        ch_r = qbench(spec, False, args.ops)
        ch_w = qbench(spec, True, args.ops)
        rows.append(("4 KiB reads QD16 (data in the base): 0 / 3 snapshots",
                     "%.0f / %.0f IOPS (%.0f %%)" % (raw_r, ch_r, 100 * ch_r / raw_r)))
        rows.append(("4 KiB writes QD16 (allocating in the top delta): 0 / 3 snapshots",
                     "%.0f / %.0f IOPS (%.0f %%)" % (raw_w, ch_w, 100 * ch_w / raw_w)))
        # 3b. offline consolidation: the bench's writes sit in the top delta
        data = sum(os.stat(os.path.join(vm, f)).st_blocks * 512 for f in files[:-1])
        t = time.monotonic()
        a.ok("snapshot", "delete", vm, "--all", timeout=1800)
        dt = time.monotonic() - t
        rows.append(("offline consolidation (qemu-img commit, 3 deltas, %.0f MiB allocated in them)"
                     % (data / MiB), "%.1f s, %.0f MB/s" % (dt, data / dt / 1e6)))
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or "?"
    out = ["", "## Snapshots, %s UTC" % datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M"), "",
           "Command: `bench/snap.py --count %d --data %d --ops %d`; commit %s; %d CPUs, load "
           "average at start %.2f; TCG guest; the volume is an image file on the host's disk."
           % (args.count, args.data, args.ops, commit, os.cpu_count(), load0),
           "", "| measure | result |", "|---|---|"]
    out += ["| %s | %s |" % r for r in rows]
    text = "\n".join(out) + "\n"
    print(text)
    if args.append:
        with open(os.path.join(ROOT, "BENCHMARKS.md"), "a") as f:
            f.write(text)
    return 1 if c.failures else 0


if __name__ == "__main__":
    sys.exit(main())
