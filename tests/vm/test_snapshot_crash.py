#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Crash safety of snapshots (docs/vm.md "Snapshots", *Crash safety*): the
agent dies between the steps of a live snapshot create and of an online
delete (fault points of vmfs-hostd/snapshot.c, VMFS_HOSTD_SNAP_FAULT: the
agent and its request killed, QEMU left running); a new agent re-attaches;
then the host "crashes" too (QEMU SIGKILLed) and the VM is powered on
again.  Each time the guest must find on its disk, through the chain of
the .vmsd, the last counter it printed (or the one after): no write lost,
none from the future.

 1. create-before-switch: the .vmsd names the new delta, QEMU still writes
    into the frozen file: the snapshot is listed as "creating", revert
    refuses it, power-on reads the newest counter, delete works;
 2. commit-running: block-commit of the active delta running in QEMU: the
    snapshot stays "deleting", power-on reads the newest counter, the
    delete run again finishes;
 3. commit-switched: the active commit completed (the guest stopped on
    the base) but the .vmsd still names the delta: the same.

Registered with meson (suite snap-long, vm-snapshot-crash).
"""

import json
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vmtest  # noqa: E402

NAME = "scr"


def body(c):
    kernel, initrd = vmtest.guest()
    with vmtest.Volume("snapcrash", size="2G", checker=c) as vol:
        mnt = vol.mount("A")
        a = vol.agent("A")
        vm = os.path.join(mnt, NAME)
        a.ok("create", vm, "--cpus", 1, "--memory", vmtest.GUEST_MEM, "--disk", "64M",
             "--kernel", kernel, "--initrd", initrd, "--net", "none")

        def log():
            return vmtest.read_log(vm, NAME)

        def last():
            cs = vmtest.counters(log())
            return cs[-1] if cs else -1

        def snaps():
            return {s["name"]: s["state"] for s in
                    json.loads(a.ok("--json", "snapshot", "list", vm))["snapshots"]}

        def crash_at(point, *cmd):
            """The agent restarted with the fault POINT; CMD makes it die
            there; a new agent without the fault re-attaches."""
            a.stop()
            os.environ["VMFS_HOSTD_SNAP_FAULT"] = point
            try:
                a.start()
            finally:
                del os.environ["VMFS_HOSTD_SNAP_FAULT"]
            r = a.ctl(*cmd)
            c.check(r.returncode != 0, "%s: %s did not fail: %s" % (point, cmd, r.stdout))
            vmtest.wait_for(lambda: a.proc.poll() is not None, 30, "the agent to die at " + point)
            # the request child may outlive the agent by a moment
            vmtest.wait_for(lambda: not vol.pids_of(b"vmfs-hostd"), 30, "the agent's children")
            a.start()
            c.eq(len(vmtest.qemu_pids(a.state)), 1, "%s: QEMU survived the agent" % point)

        def host_crash_and_boot(point):
            """QEMU SIGKILLed (the host's crash), power-on: the guest reads
            the last counter it printed (or the one after)."""
            time.sleep(1.5)              # the log reaches the datastore
            shown = last()
            for pid in vmtest.qemu_pids(a.state):
                os.kill(pid, signal.SIGKILL)
            # (a QEMU an earlier agent started is not restarted in place:
            # its exit status is unknown to this agent)
            vmtest.wait_for(lambda: a.info(vm)["state"] != "running", 60, "the VM seen off")
            a.ok("power-on", vm)
            vmtest.wait_for(lambda: vmtest.boots(log()), 180, "the boot line after " + point)
            got = vmtest.boots(log())[-1]
            c.check(got in (shown, shown + 1), "%s: the guest read %d from its chain, last shown %d"
                    % (point, got, shown))
            vmtest.wait_counter(vm, NAME, got + 2, timeout=120)

        a.ok("power-on", vm)
        vmtest.wait_counter(vm, NAME, 2, timeout=180)

        # 1. the .vmsd names the delta, QEMU was not switched
        print("  create-before-switch", flush=True)
        crash_at("create-before-switch", "snapshot", "create", vm, "s1")
        c.eq(snaps(), {"s1": "creating"}, "after the crash in create")
        c.refused(a.ctl("snapshot", "revert", vm, "s1"), "revert to an incomplete snapshot",
                  "incomplete")
        host_crash_and_boot("create-before-switch")
        a.ok("snapshot", "delete", vm, "s1")
        c.eq(snaps(), {}, "after deleting the incomplete s1")

        # 2. block-commit running in QEMU when the agent died; 3. the
        # active commit switched, the .vmsd not rewritten
        for point, name in (("commit-running", "s2"), ("commit-switched", "s3")):
            print("  " + point, flush=True)
            a.ok("snapshot", "create", vm, name)
            vmtest.wait_counter(vm, NAME, last() + 2, timeout=60)
            crash_at(point, "snapshot", "delete", vm, name)
            c.eq(snaps(), {name: "deleting"}, "after the crash at " + point)
            host_crash_and_boot(point)
            a.ok("snapshot", "delete", vm, name)
            c.eq(snaps(), {}, "after the delete run again (%s)" % point)
        c.eq([f for f in os.listdir(vm) if f.endswith(".qcow2")], [], "deltas left")
        a.ok("power-off", vm)


if __name__ == "__main__":
    vmtest.main("vm-snapshot-crash", body)
