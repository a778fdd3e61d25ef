#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Crash safety of Storage vMotion (docs/vm.md "Storage vMotion", "Crash
safety"): the agent (with the request's process) or QEMU is killed at a
step of a live move, and afterwards the VM is runnable from exactly one
folder: the source before the switch, the destination after it.

The agent stops a move at a named point when started with
VMFS_HOSTD_TEST_STOP=<point> (before-copy, copying, ready, switched); the
test kills there.  After an agent kill a new agent starts, and its
start-up recovery cancels or completes the mirror still running in QEMU;
after a QEMU kill the paused request goes on and rolls back or forward
itself.  Each case checks: one folder with the .vmx and no intent record,
the other gone, the VM running there (agent killed) or powering on there
(QEMU killed), and the guest's counter continuing from its disk.

Default: agent killed while copying and after the switch, QEMU killed
after the switch.  `--all` (suite svm-long) adds the agent killed before
the copy and at READY, QEMU killed while copying and at READY, and an
offline move whose agent is killed while copying.

Registered with meson (suite vm, vm-svm-crash; svm-long: vm-svm-crash-all).
"""

import json
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vmtest  # noqa: E402

# each QEMU kill costs a reboot of the guest: the default suite has one
CASES = [("agent", "copying", "src"), ("agent", "switched", "dst"),
         ("qemu", "switched", "dst")]
MORE = [("agent", "before-copy", "src"), ("agent", "ready", "src"),
        ("qemu", "copying", "src"), ("qemu", "ready", "src")]


def body(c):
    kernel, initrd = vmtest.guest()
    every = "--all" in sys.argv
    with vmtest.Volume("svmc1", size="2G", checker=c) as v1, \
            vmtest.Volume("svmc2", size="2G", checker=c) as v2:
        ds1 = v1.mount("esx1")
        ds2 = v2.mount("esx1")
        a = v1.agent("esx1")
        src = os.path.join(ds1, "cv")
        dst = os.path.join(ds2, "cv")
        stopf = os.path.join(a.state, "test-stop")
        a.ok("create", src, "--cpus", 1, "--memory", vmtest.GUEST_MEM, "--disk", "256M",
             "--kernel", kernel, "--initrd", initrd, "--net", "none",
             "--append", "console=ttyS0 quiet")
        st = {"at": src}

        def restart(point=None):
            a.stop()
            if point:
                os.environ["VMFS_HOSTD_TEST_STOP"] = point
            else:
                os.environ.pop("VMFS_HOSTD_TEST_STOP", None)
            a.start()
            os.environ.pop("VMFS_HOSTD_TEST_STOP", None)

        def running_at(path):
            i = a.info(path)
            return i["state"] == "running" and i

        def one_copy(want, other):
            c.check(os.path.exists(os.path.join(want, "cv.vmx")), "%s has no .vmx" % want)
            c.check(not os.path.exists(os.path.join(want, "cv.vmx.move")),
                    "%s still has an intent record" % want)
            c.check(not os.path.exists(other), "%s is still there: %s" % (
                other, os.listdir(other) if os.path.isdir(other) else ""))

        def case(victim, point, side):
            here, there = (src, dst) if st["at"] == src else (dst, src)
            if not running_at(here):
                a.ok("power-on", here)
            n0 = vmtest.wait_counter(here, "cv", vmtest.counters(vmtest.read_log(here, "cv"))[-1] + 1
                                     if vmtest.counters(vmtest.read_log(here, "cv")) else 1)
            restart(point)
            qpid = a.info(here)["pid"]
            cli = subprocess.Popen([vmtest.env("VMFSCTL"), "--agent", a.sock, "migrate-storage",
                                    here, os.path.dirname(there)], stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
            vmtest.wait_for(lambda: os.path.exists(stopf), 120, "the move to stop at " + point)
            with open(stopf) as f:
                req_pid = int(f.read().split()[1])
            if victim == "agent":
                os.kill(req_pid, signal.SIGKILL)
                a.proc.kill()
                a.proc.wait()
                a.proc = None
                out = cli.communicate(timeout=60)[0]
                c.check(cli.returncode != 0, "vmfsctl succeeded after the agent was killed: %s" % out)
                os.unlink(stopf)
                restart()          # the new agent's start-up recovery
            else:
                os.kill(qpid, signal.SIGKILL)
                os.unlink(stopf)
                out = cli.communicate(timeout=300)[0]
                print("    vmfsctl: %s" % out.strip().splitlines()[-1], flush=True)
                restart()
            want, other = (here, there) if side == "src" else (there, here)
            vmtest.wait_for(lambda: not os.path.exists(other), 60,
                            "recovery: %s gone" % other)
            one_copy(want, other)
            if victim == "agent":
                i = running_at(want)
                c.check(i and i["pid"] == qpid, "the VM does not run from %s: %s" % (
                    want, a.info(want)))
                n = vmtest.wait_counter(want, "cv", n0 + 2)
                # the disk QEMU now writes is the one in WANT
                vmtest.wait_for(lambda: (vmtest.disk_counter(os.path.join(want, "cv-flat.vmdk"))
                                         or (-1,))[0] >= n, 30, "the guest's writes in " + want)
            else:
                # not restarted in place: an earlier agent started this
                # QEMU (restart() above), so nobody knows how it ended
                # (docs/vm.md "VM monitoring"); vm-svm-live has the
                # restart in place of a moved VM
                vmtest.wait_for(lambda: a.info(want)["state"] == "off", 60, "the killed VM off")
                rec = vmtest.disk_counter(os.path.join(want, "cv-flat.vmdk"))
                a.ok("power-on", want)
                vmtest.wait_for(lambda: "previous counter" in vmtest.read_log(want, "cv"), 180,
                                "the reboot")
                log = vmtest.read_log(want, "cv")
                prev = int(log.split("previous counter ")[1].split()[0])
                c.check(rec and prev == rec[0] and prev >= n0,
                        "after the reboot the guest read %d (disk %s, printed %d before)" % (
                            prev, rec, n0))
                vmtest.wait_counter(want, "cv", prev + 1)
            r = a.ctl("power-on", other)
            c.check(r.returncode != 0, "power-on of %s worked: the VM could run twice" % other)
            st["at"] = want
            evs = [e["type"] for e in json.loads(a.ok("--json", "events"))["events"]]
            if victim == "agent":
                c.check("storage.recovered" in evs, "no storage.recovered event: %s" % evs[-5:])
            print("    %s killed at %s: the VM is in %s" % (victim, point, want), flush=True)

        def offline():
            here, there = (src, dst) if st["at"] == src else (dst, src)
            if running_at(here):
                a.ok("power-off", here)
            restart("copying")
            cli = subprocess.Popen([vmtest.env("VMFSCTL"), "--agent", a.sock, "migrate-storage",
                                    here, os.path.dirname(there)], stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
            vmtest.wait_for(lambda: os.path.exists(stopf), 60, "the offline move to stop")
            with open(stopf) as f:
                os.kill(int(f.read().split()[1]), signal.SIGKILL)
            a.proc.kill()
            a.proc.wait()
            a.proc = None
            cli.communicate(timeout=60)
            os.unlink(stopf)
            restart()
            vmtest.wait_for(lambda: not os.path.exists(there), 60, "recovery of the offline move")
            one_copy(here, there)
            t = [x for x in json.loads(a.ok("--json", "tasks"))["tasks"]
                 if x["op"] == "migrate-storage"][-1]
            c.eq(t["state"], "interrupted", "the interrupted task's state")
            a.ok("power-on", here)
            vmtest.wait_counter(here, "cv", 1)

        for victim, point, side in CASES + (MORE if every else []):
            c.section("%s killed at %s" % (victim, point), case, victim, point, side)
        if every:
            c.section("offline move, agent killed while copying", offline)
        # the QEMU's command line names v1's folder (the agent's state
        # folder), never ds2, which v2's clean-up unmounts first
        v1.kill_qemus()


if __name__ == "__main__":
    vmtest.main("vm-svm-crash", body)
