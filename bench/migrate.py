#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Live-migration benchmark (bench/run.sh --sections migrate): two hosts on
one image file (two vmfsd mounts, two agents with --migration-address
127.0.0.1), a 256 MiB TCG test guest migrated back and forth RUNS times,
idle and then dirtying 128 MiB of its RAM in a loop (vmfs.dirty=128).

Per migration the agent reports (vmfsctl --json migrate):
  total_ms             vmfsctl's request, connect to result
  pause_ms             the guest-seen pause: source STOP (QEMU reached
                       pre-switchover, guest stopped) to destination RESUME
                       (its `cont` returned with the guest running)
  qemu_downtime_ms     QEMU's own downtime figure (source side only)
  stop_to_completed_ms stop-and-copy: the device state and last dirty pages
  lock_handover_ms     the disk locks and the lock record moved (per file:
                       flush + checkpoint + one ATS)
  switch_ms            the destination's `cont`: disks reopened read-write
                       (the lock already its own), guest running, record
                       rewritten
Prints markdown rows: one table per guest load, the median and the worst
of RUNS migrations.

Env: VMFSD, MKFS, VMFSCTL, VMFS_HOSTD, TEST_GUEST_SCRIPT, TEST_GUEST_DIR.
"""
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "vm"))
import vmtest  # noqa: E402

RUNS = int(sys.argv[1]) if len(sys.argv) > 1 else 5
KEYS = ["total_ms", "pause_ms", "qemu_downtime_ms", "stop_to_completed_ms", "lock_handover_ms",
        "switch_ms", "passes"]


def run(load, append):
    kernel, initrd = vmtest.guest(compressed=True)   # the guest of the earlier runs (BENCHMARKS.md)
    res = []
    with vmtest.Volume("bench-mig") as vol:
        mnt = {h: vol.mount(h) for h in "AB"}
        ag = {h: vol.agent(h, ["--migration-address", "127.0.0.1"]) for h in "AB"}
        vm = {h: os.path.join(mnt[h], "bm") for h in "AB"}
        for h in "AB":
            vmtest.wait_for(lambda: os.path.exists(os.path.join(
                mnt[h], ".vmfsd", "agents", ("B" if h == "A" else "A") + ".migration")), 60,
                "published migration addresses")
        ag["A"].ok("create", vm["A"], "--cpus", 1, "--memory", 256, "--disk", "64M",
                   "--kernel", kernel, "--initrd", initrd, "--append", append, "--net", "none")
        ag["A"].ok("power-on", vm["A"])
        vmtest.wait_counter(vm["A"], "bm", 3, timeout=300)
        src = "A"
        for _ in range(RUNS):
            dst = "B" if src == "A" else "A"
            out = ag[src].ok("--json", "migrate", vm[src], "--host", dst, timeout=600)
            res.append(vmtest.json_stream(out)[1])
            src = dst
            vmtest.wait_counter(vm[src], "bm", 0, timeout=60)
        ag[src].ok("power-off", vm[src])
    print("")
    print("### Live migration, 256 MiB TCG guest, %s (%d migrations, two hosts on one "
          "image file, stream over TCP 127.0.0.1)" % (load, RUNS))
    print("")
    print("| measure | median | worst |")
    print("|---|---|---|")
    for k in KEYS:
        v = [r.get(k) for r in res if isinstance(r.get(k), (int, float)) and r.get(k) >= 0]
        if v:
            print("| %s | %s | %s |" % (k, statistics.median(v), max(v)))
    sys.stdout.flush()


def main():
    run("idle", "console=ttyS0 quiet")
    run("dirtying 128 MiB in a loop", "console=ttyS0 quiet vmfs.dirty=128")


if __name__ == "__main__":
    main()
