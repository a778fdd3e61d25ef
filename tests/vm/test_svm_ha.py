#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Storage vMotion and HA (docs/vm.md "Storage vMotion", docs/ha.md §4): the
host that moves a running VM dies in the middle of the move, and the
survivor restarts the VM exactly once, from the folder that is the VM.

Two volumes, each mounted by hosts A and B (four vmfsd processes, a 5 s
heartbeat timeout as in test_ha.py, only to keep the test short), one agent
per host watching both.  A runs a guest on ds1 and moves it live to ds2;
A's agent runs with VMFS_HOSTD_TEST_STOP=<point>, so the move stops there,
and A dies as a power loss (SIGKILL of its two vmfsd, its agent and the
request, its QEMU at once).  Asserted: B restarts the VM (ha.restarted) from
the folder the intent records name (after the switch: ds2, and the ds1
folder is removed; before it: ds1, and the incomplete ds2 copy is
removed), its lock record is held by B, the other path cannot be powered
on, the protected lists name the VM's path only (under B), and the guest
continues from the disk.

  test_svm_ha.py          A dies right after the switch (suite vm, vm-svm-ha)
  test_svm_ha.py --all    also at READY, before the switch (svm-long)
  test_svm_ha.py --only POINT   one point
"""

import json
import os
import re
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vmtest  # noqa: E402
from vmtest import wait_for  # noqa: E402

MKFS_ARGS = ["--hb-interval", "500", "--hb-timeout", "5000"]
APPEND = "console=ttyS0 quiet vmfs.period=0.2"


def protected(root):
    out = []
    for dp, _, fns in os.walk(os.path.join(root, ".vmfsd", "ha", "protected")):
        for fn in fns:
            if fn.endswith(".json"):
                with open(os.path.join(dp, fn)) as f:
                    e = json.load(f)
                out.append((e["host"], e["vmx"]))
    return sorted(out)


def body(c):
    kernel, initrd = vmtest.guest()
    points = ["switched"] + (["ready"] if "--all" in sys.argv else [])
    if "--only" in sys.argv:
        points = [sys.argv[sys.argv.index("--only") + 1]]
    for point in points:
        c.section("A dies at %s" % point, scenario, c, kernel, initrd, point)


def scenario(c, kernel, initrd, point):
    with vmtest.Volume("svmha1", size="2G", checker=c, mkfs_args=MKFS_ARGS) as v1, \
            vmtest.Volume("svmha2", size="2G", checker=c, mkfs_args=MKFS_ARGS) as v2:
        try:
            run(c, kernel, initrd, point, v1, v2)
        except Exception:
            for ag in v1.agents:
                print("=== agent %s log (tail):\n%s" % (ag.host, ag.log()[-6000:]))
            raise
        finally:
            # v2's clean-up unmounts first: nothing of v1's (the agents,
            # whose HA loops watch ds2, the QEMUs) may still use ds2
            for ag in v1.agents:
                ag.stop()
            v1.kill_qemus()


def run(c, kernel, initrd, point, v1, v2):
    m = {h: (v1.mount(h), v2.mount(h)) for h in ("A", "B")}
    os.environ["VMFS_HOSTD_TEST_STOP"] = point
    a = v1.agent("A", extra=["--datastore", m["A"][0], "--datastore", m["A"][1]])
    os.environ.pop("VMFS_HOSTD_TEST_STOP")
    b = v1.agent("B", extra=["--datastore", m["B"][0], "--datastore", m["B"][1]])
    src_a, src_b = os.path.join(m["A"][0], "sv"), os.path.join(m["B"][0], "sv")
    dst_b = os.path.join(m["B"][1], "sv")
    a.ok("create", src_a, "--cpus", 1, "--memory", vmtest.GUEST_MEM, "--disk", "64M",
         "--kernel", kernel, "--initrd", initrd, "--append", APPEND, "--net", "none")
    a.ok("power-on", src_a)
    n0 = vmtest.wait_counter(src_b, "sv", 3, timeout=180)
    stopf = os.path.join(a.state, "test-stop")
    cli = subprocess.Popen([vmtest.env("VMFSCTL"), "--agent", a.sock, "migrate-storage",
                            src_a, m["A"][1]], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    wait_for(lambda: os.path.exists(stopf), 120, "the move to stop at " + point)
    # a power loss of A: both its vmfsd, its agent with the request
    # and its HA loop, its QEMU (their command lines name A's state)
    victims = [v1.procs["A"].pid, v2.procs["A"].pid] + vmtest.procs_of(a.state.encode())
    for p in victims:
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass
    t0 = time.monotonic()
    a.proc.wait()
    a.proc = None
    cli.communicate(timeout=60)
    for v in (v1, v2):
        v.procs["A"].wait()
    for mnt in m["A"]:
        subprocess.run(["umount", "-l", mnt], capture_output=True)
    want, other = (dst_b, src_b) if point == "switched" else (src_b, dst_b)

    def runs_on_b():
        r = b.ctl("--json", "info", want, timeout=60)
        i = json.loads(r.stdout) if r.returncode == 0 else {}
        return i.get("local") and i.get("state") == "running" and i
    wait_for(runs_on_b, 150, "B running the VM from " + want, step=0.5)
    print("    A killed at %s: B runs the VM from %s %.1f s later" % (
        point, want, time.monotonic() - t0), flush=True)
    # the HA loop records ha.restarted once its attempt's process ended
    try:
        wait_for(lambda: any(e["type"] == "ha.restarted" for e in
                             json.loads(b.ok("--json", "events"))["events"]), 30,
                 "ha.restarted on B", step=0.3)
    except TimeoutError:
        c.fail("no ha.restarted on B: %s" % [e["type"] for e in json.loads(
            b.ok("--json", "events"))["events"]][-8:])
    c.check(not os.path.exists(other), "%s is still there: %s" % (
        other, os.listdir(other) if os.path.isdir(other) else ""))
    c.check(not os.path.exists(os.path.join(want, "sv.vmx.move")), "intent record left")
    lk = os.getxattr(os.path.join(want, "sv.vmx.lck"), "user.vmfsd.lock").decode()
    c.check(lk.startswith("EXCL by B "), "the lock record of %s: %r" % (want, lk))
    r = b.ctl("power-on", other)
    c.check(r.returncode != 0, "power-on of %s worked: the VM could run twice" % other)
    rel = "sv/sv.vmx"
    c.eq((protected(m["B"][0]), protected(m["B"][1])),
         ([], [("B", rel)]) if point == "switched" else ([("B", rel)], []),
         "the protected lists (ds1, ds2)")
    mm = wait_for(lambda: re.search(r"previous counter (-?\d+)", vmtest.read_log(want, "sv")),
                  180, "the restarted guest's first line", step=0.5)
    prev = int(mm.group(1))
    c.check(prev >= n0, "the restarted guest read counter %d; it had printed %d before "
            "the move" % (prev, n0))
    vmtest.wait_counter(want, "sv", prev + 2)
    b.ok("power-off", want)


if __name__ == "__main__":
    vmtest.main("vm-svm-ha", body)
