#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Snapshots survive a live migration (docs/vm.md "Snapshots"): hosts A
and B mount one volume, each with its agent (--migration-address
127.0.0.1).  The test guest runs on A; snapshot s1 is taken live on A;
the VM migrates to B (the delta's lock is handed over with the extent's:
its user.vmfsd.lock is then B's); on B the guest keeps counting without a
reboot, s2 is taken live there, s1 is deleted online (block-commit on B),
and after a power-off on B, a revert to s2 and a power-on, the guest
reads a counter within s2's bounds from the chain.

Registered with meson (suite snap-long, vm-snapshot-migrate).
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vmtest  # noqa: E402

NAME = "smig"


def body(c):
    kernel, initrd = vmtest.guest()
    with vmtest.Volume("snapmig", checker=c) as vol:
        mnt = {"A": vol.mount("A"), "B": vol.mount("B")}
        ag = {h: vol.agent(h, ["--migration-address", "127.0.0.1"]) for h in "AB"}
        vm = {h: os.path.join(mnt[h], NAME) for h in "AB"}
        for h in "AB":
            other = "B" if h == "A" else "A"
            vmtest.wait_for(lambda: os.path.exists(os.path.join(
                mnt[h], ".vmfsd", "agents", other + ".migration")), 60,
                "the migration address of %s" % other)
        ag["A"].ok("create", vm["A"], "--cpus", 1, "--memory", vmtest.GUEST_MEM, "--disk", "64M",
                   "--kernel", kernel, "--initrd", initrd, "--net", "none")

        def log():
            return vmtest.read_log(vm["A"], NAME)

        def last():
            cs = vmtest.counters(log())
            return cs[-1] if cs else -1

        ag["A"].ok("power-on", vm["A"])
        vmtest.wait_counter(vm["A"], NAME, 2, timeout=180)
        ag["A"].ok("snapshot", "create", vm["A"], "s1")
        delta = [f for f in os.listdir(vm["A"]) if f.endswith(".qcow2")]
        c.eq(len(delta), 1, "deltas after s1")
        before = last()
        ag["A"].ok("migrate", vm["A"], "--host", "B", timeout=300)
        c.eq(vmtest.qemu_pids(ag["A"].state), [], "QEMUs left on A")
        c.eq(len(vmtest.qemu_pids(ag["B"].state)), 1, "QEMUs on B")
        lk = os.getxattr(os.path.join(vm["B"], delta[0]), "user.vmfsd.lock").decode()
        c.check(lk.startswith("EXCL by B "), "the delta's lock after the migration: %s" % lk)
        vmtest.wait_counter(vm["B"], NAME, before + 3, timeout=120)
        c.eq(len(vmtest.boots(log())), 1, "boots after the migration (none expected on B)")
        lst = json.loads(ag["B"].ok("--json", "snapshot", "list", vm["B"]))
        c.eq([s["name"] for s in lst["snapshots"]], ["s1"], "snapshots seen on B")
        b2 = last()
        ag["B"].ok("snapshot", "create", vm["B"], "s2")
        vmtest.wait_counter(vm["B"], NAME, b2 + 2, timeout=60)
        a2 = last()
        ag["B"].ok("snapshot", "delete", vm["B"], "s1")
        vmtest.wait_counter(vm["B"], NAME, a2 + 2, timeout=60)
        c.eq(len(vmtest.boots(log())), 1, "boots after the delete on B")
        ag["B"].ok("power-off", vm["B"])
        ag["B"].ok("snapshot", "revert", vm["B"], "s2")
        ag["B"].ok("power-on", vm["B"])
        vmtest.wait_for(lambda: vmtest.boots(log()), 180, "the boot line over s2")
        p2 = vmtest.boots(log())[-1]
        c.check(b2 <= p2 <= a2, "counter read over s2 on B: %d not in [%d, %d]" % (p2, b2, a2))
        ag["B"].ok("snapshot", "delete", vm["B"], "--all")
        c.eq([f for f in os.listdir(vm["B"]) if f.endswith(".qcow2")], [], "deltas left")
        ag["B"].ok("power-off", vm["B"])


if __name__ == "__main__":
    vmtest.main("vm-snapshot-migrate", body)
