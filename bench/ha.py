#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""HA failover time (docs/ha.md): three hosts (vmfsd + vmfs-hostd each) on
one volume, N test guests on host A, A killed as a power loss (SIGKILL of
its vmfsd, agent and QEMUs at once).  Measured from the kill, on this
machine's clock:

  detection   until a survivor's vmfsd declared A dead (user.vmfsd.hosts
              "died.declared_wall_ms")
  replay      the survivor's journal replay of A (claim to release)
  lock break  until A's slot was freed with a new generation: A's locks
              are breakable from then on ("broken_wall_ms")
  QEMU start  the restart attempt to QEMU running (ha.restarted event)
  total       until each VM's QEMU runs on a survivor (seen in /proc)

Prints markdown table rows ("| a | b |"), one per heartbeat timing, for
bench/run.sh --sections ha; run alone:

  bench/ha.py [--vms N] [--timing I:T ...]    (ms; default 1000:10000 and 200:2000)

Needs the build (build/), root, /dev/fuse, QEMU, the test guest
(scripts/test-guest.sh builds it into build/test-guest).
"""

import argparse
import json
import os
import re
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
B = os.path.join(ROOT, "build")
os.environ.setdefault("VMFSD", os.path.join(B, "vmfsd/vmfsd"))
os.environ.setdefault("MKFS", os.path.join(B, "mkfs/mkfs.vmfsd"))
os.environ.setdefault("VMFSCTL", os.path.join(B, "vmfsctl/vmfsctl"))
os.environ.setdefault("VMFS_HOSTD", os.path.join(B, "vmfs-hostd/vmfs-hostd"))
os.environ.setdefault("TEST_GUEST_SCRIPT", os.path.join(ROOT, "scripts/test-guest.sh"))
os.environ.setdefault("TEST_GUEST_DIR", os.path.join(B, "test-guest"))
sys.path.insert(0, os.path.join(ROOT, "tests", "vm"))
import vmtest  # noqa: E402
import test_ha  # noqa: E402


def one(interval, timeout, nvms, kernel, initrd):
    names = ["vm%d" % (i + 1) for i in range(nvms)]
    c = vmtest.Checker("bench-ha")
    args = ["--hb-interval", str(interval), "--hb-timeout", str(timeout)]
    with vmtest.Volume("bench-ha", checker=c, mkfs_args=args) as vol:
        mnts, agents = test_ha.setup(vol, ["A", "B", "C"])
        test_ha.create_vms(c, agents["A"], mnts["A"], names, kernel, initrd)
        t0 = test_ha.power_loss(vol, "A", agents["A"])
        seen = {}
        deadline = time.time() + timeout / 1000.0 + 120
        while len(seen) < nvms and time.time() < deadline:
            for h in ("B", "C"):
                for pid in test_ha.qemus_of(agents[h]):
                    # one VM = one state folder (QEMU's -daemonize parent
                    # and child both name it for a moment)
                    try:
                        cmd = open("/proc/%d/cmdline" % pid, "rb").read().decode(errors="replace")
                    except OSError:
                        continue
                    m = re.search(r"/vms/([0-9a-f]{16})/", cmd)
                    key = "%s-%s" % (h, m.group(1) if m else pid)
                    seen.setdefault(key, time.time())
            time.sleep(0.05)
        totals = sorted(t - t0 for t in seen.values())
        died = None
        for h in ("B", "C"):
            doc = json.loads(os.getxattr(mnts[h], "user.vmfsd.hosts"))
            for e in doc["hosts"]:
                d = e.get("died")
                if d and d["host"] == "A" and (died is None or d.get("replayed_here")):
                    died = d
        starts = []
        for h in ("B", "C"):
            for e in json.loads(agents[h].ok("--json", "events"))["events"]:
                if e["type"] == "ha.restarted":
                    starts.append(e["message"])
        qemu = []
        for h in ("B", "C"):
            st = json.loads(agents[h].ok("--json", "ha", "status"))
            for e in st["datastores"][0]["events"]:
                if e["type"] == "ha.restarted" and "start_wall_ms" in e:
                    qemu.append((e["running_wall_ms"] - e["start_wall_ms"]) / 1000.0)
        qemu = sorted(set(qemu))

    def s(x):
        return "%.1f s" % x if x is not None else "n/a"
    det = died["declared_wall_ms"] / 1000.0 - t0 if died else None
    brk = died["broken_wall_ms"] / 1000.0 - t0 if died and "broken_wall_ms" in died else None
    rep = died.get("replay_ms", 0) / 1000.0 if died else None
    return ["%d ms / %d ms" % (interval, timeout), str(len(totals)) + "/" + str(nvms), s(det),
            "%.3f s" % rep if rep is not None else "n/a", s(brk),
            "%s–%s" % (s(min(qemu)) if qemu else "n/a", s(max(qemu)) if qemu else "n/a"),
            s(totals[0]) if totals else "n/a",
            s(statistics.median(totals)) if totals else "n/a", s(totals[-1]) if totals else "n/a"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vms", type=int, default=2)
    ap.add_argument("--timing", action="append", default=[])
    ap.add_argument("--header", action="store_true", help="print the table header first")
    o = ap.parse_args()
    timings = o.timing or ["1000:10000", "200:2000"]
    kernel, initrd = vmtest.guest(compressed=True)   # the guest of the earlier runs (BENCHMARKS.md)
    if o.header:
        print("| heartbeat (interval / timeout) | VMs back | detection | replay | lock break "
              "| QEMU start | first VM running | median | last VM running |")
        print("|---|---|---|---|---|---|---|---|---|")
    for t in timings:
        i, to = (int(x) for x in t.split(":"))
        print("| " + " | ".join(one(i, to, o.vms, kernel, initrd)) + " |", flush=True)


if __name__ == "__main__":
    main()
