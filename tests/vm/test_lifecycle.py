#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""The life of one VM on a vmfsd datastore, through vmfsctl and the agent:
create (thin, direct kernel boot) -> qemu-img info on the descriptor ->
power-on -> the guest counts -> second power-on refused naming the host ->
shutdown by the ACPI power button -> the counter is on the flat extent
(read through the mount) and the thin disk holds only what the guest wrote
-> power-on again: the guest reads the persisted counter -> agent restart:
the VM keeps running and the new agent re-attaches -> suspend to .vmss and
resume: the guest goes on counting without rebooting -> a guest that powers
itself off has its lock record released -> power-off -> destroy.
"""

import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vmtest  # noqa: E402
from vmtest import MiB, wait_for  # noqa: E402


def body(c):
    kernel, initrd = vmtest.guest()
    with vmtest.Volume("life", checker=c) as vol:
        mnt = vol.mount("esx1")
        a = vol.agent("esx1")
        vm = os.path.join(mnt, "vm1")
        flat = os.path.join(vm, "vm1-flat.vmdk")
        state = {}

        def create():
            out = a.ok("create", vm, "--cpus", 1, "--memory", vmtest.GUEST_MEM, "--disk", "256M",
                       "--kernel", kernel, "--initrd", initrd, "--append", "console=ttyS0 quiet",
                       "--guest-os", "debian12-64", "--net", "none")
            print("    " + out.strip())
            for f in ("vm1.vmx", "vm1.vmdk", "vm1-flat.vmdk", "vmlinuz", "initrd.img"):
                c.check(os.path.isfile(os.path.join(vm, f)), "create: %s missing" % f)
            c.eq(os.stat(flat).st_size, 256 * MiB, "flat extent size")
            c.check(os.stat(flat).st_blocks * 512 < MiB, "thin flat extent allocated %d bytes at create"
                    % (os.stat(flat).st_blocks * 512))
            with open(os.path.join(vm, "vm1.vmdk")) as f:
                desc = f.read()
            c.check('createType="vmfs"' in desc, "descriptor lacks createType=\"vmfs\"")
            c.check('RW 524288 VMFS "vm1-flat.vmdk"' in desc, "descriptor extent line: %s" % desc)
            r = subprocess.run(["qemu-img", "info", "--output=json", os.path.join(vm, "vm1.vmdk")],
                               capture_output=True, text=True, timeout=60)
            if c.eq(r.returncode, 0, "qemu-img info on the descriptor (%s)" % r.stderr.strip()):
                info = json.loads(r.stdout)
                c.eq(info.get("format"), "vmdk", "qemu-img format")
                c.eq(info.get("virtual-size"), 256 * MiB, "qemu-img virtual size")
            i = a.info(vm)
            c.eq(i["state"], "off", "state after create")
            listed = json.loads(a.ok("--json", "list"))["vms"]
            c.check(any(v["path"] == os.path.realpath(vm) for v in listed), "create did not register: %s"
                    % listed)

        def power_on():
            t = time.monotonic()
            a.ok("power-on", vm)
            n = vmtest.wait_counter(vm, "vm1", 2)
            print("    guest counting (%d) %.1fs after power-on" % (n, time.monotonic() - t))
            log = vmtest.read_log(vm, "vm1")
            c.check("vmfs-guest: previous counter -1" in log, "first boot did not see a blank disk")
            i = a.info(vm)
            c.eq(i["state"], "running", "info state")
            c.eq(i["host"], "esx1", "info host")
            with open(os.path.join(vm, "vm1.vmx.lck")) as f:
                lck = f.read()
            c.check("host=esx1" in lck, "lock record does not name the host: %s" % lck)
            state["pid"] = i["pid"]

        def console():
            # vmfsctl console with a pipe for stdin: prints what the guest
            # says until killed (the guest prints a counter every 0.5 s)
            p = subprocess.Popen([vmtest.env("VMFSCTL"), "--agent", a.sock, "console", vm],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 stdin=subprocess.DEVNULL)
            try:
                out, err = p.communicate(timeout=4)
            except subprocess.TimeoutExpired:
                p.kill()
                out, err = p.communicate()
            c.check(b"vmfs-guest: counter" in out, "console printed no counter: %r %r" % (out[-300:], err))

        def again_refused():
            r = a.ctl("power-on", vm)
            c.refused(r, "second power-on on the same host", "already running", "esx1")

        def shutdown():
            before = vmtest.counters(vmtest.read_log(vm, "vm1"))[-1]
            t = time.monotonic()
            out = a.ok("shutdown", vm, "--timeout", 60)
            print("    %s (%.1fs)" % (out.strip(), time.monotonic() - t))
            c.check("guest shut down" in out, "shutdown was not done by the guest: %s" % out)
            c.check(not vmtest.pid_alive(state["pid"]), "QEMU still runs after shutdown")
            c.check(vmtest.lock_record_free(os.path.join(vm, "vm1.vmx.lck")), "lock record left after shutdown")
            wait_for(lambda: "acpi power button" in vmtest.read_log(vm, "vm1"), 5,
                     "the guest's acpi message in the log")
            rec = vmtest.disk_counter(flat)
            c.check(rec is not None and rec[0] >= before,
                    "flat extent counter %r < last printed %d" % (rec, before))
            state["persisted"] = rec[0] if rec else None
            st = os.stat(flat)
            # the guest wrote sector 0 only: one file block (1 MiB) at most
            c.check(st.st_blocks * 512 <= 2 * MiB, "thin disk: %d bytes allocated for one sector written"
                    % (st.st_blocks * 512))
            print("    persisted counter %s, %d KiB allocated of 256 MiB" % (
                state["persisted"], st.st_blocks // 2))
            c.eq(a.info(vm)["state"], "off", "state after shutdown")

        def power_on_again():
            a.ok("power-on", vm)
            vmtest.wait_counter(vm, "vm1", state["persisted"] + 2)
            log = vmtest.read_log(vm, "vm1")
            c.check("vmfs-guest: previous counter %d" % state["persisted"] in log,
                    "second boot did not read the persisted counter %s" % state["persisted"])
            c.check(os.path.exists(os.path.join(vm, "vm1-1.log")), "previous log not rotated to vm1-1.log")
            state["pid"] = a.info(vm)["pid"]

        def agent_restart():
            a.stop()
            c.check(vmtest.pid_alive(state["pid"]), "the VM died with the agent")
            n = vmtest.counters(vmtest.read_log(vm, "vm1"))[-1]
            a.start()
            i = a.info(vm)
            c.eq(i["state"], "running", "state after agent restart")
            c.eq(i.get("pid"), state["pid"], "QEMU pid after agent restart")
            c.check("re-attached" in a.log(), "agent log does not say it re-attached")
            # the new agent copies the console log again
            vmtest.wait_counter(vm, "vm1", n + 2, timeout=60)

        def suspend_resume():
            n0 = vmtest.counters(vmtest.read_log(vm, "vm1"))[-1]
            prog, res = vmtest.json_stream(a.ok("--json", "suspend", vm))
            print("    " + res.get("message", "?"))
            c.check(prog and prog[-1]["phase"] == "saving memory" and prog[-1]["done"] > 0,
                    "suspend: no progress of the memory saved: %s" % prog[-1:])
            c.check(os.path.isfile(os.path.join(vm, "vm1.vmss")), "no vm1.vmss after suspend")
            c.check(not vmtest.pid_alive(state["pid"]), "QEMU still runs after suspend")
            c.eq(a.info(vm)["state"], "suspended", "state after suspend")
            c.check(vmtest.lock_record_free(os.path.join(vm, "vm1.vmx.lck")), "lock record kept while suspended")
            last = vmtest.counters(vmtest.read_log(vm, "vm1"))[-1]
            c.check(last >= n0, "counter went back before suspend")
            time.sleep(1)
            prog, res = vmtest.json_stream(a.ok("--json", "resume", vm))
            c.check(prog and prog[-1]["phase"] == "loading memory" and
                    prog[-1]["done"] == prog[-1]["total"] > 0,
                    "resume: no progress of the memory loaded: %s" % prog[-1:])
            vmtest.wait_counter(vm, "vm1", 0)
            n = vmtest.wait_counter(vm, "vm1", last + 3)
            log = vmtest.read_log(vm, "vm1")
            c.check("init started" not in log, "the guest rebooted on resume:\n" + log[-500:])
            first = vmtest.counters(log)[0]
            c.check(first == last + 1 or first == last,
                    "resumed guest's first counter %d does not follow %d" % (first, last))
            print("    counter %d before suspend, resumed at %d, now %d" % (last, first, n))
            c.check(not os.path.exists(os.path.join(vm, "vm1.vmss")), "vm1.vmss kept after resume")
            state["pid"] = a.info(vm)["pid"]

        def reset_and_off():
            out = a.ok("reset", vm)
            wait_for(lambda: "init started" in vmtest.read_log(vm, "vm1"), 60, "the reboot after reset")
            a.ok("power-off", vm)
            c.check(not vmtest.pid_alive(state["pid"]), "QEMU still runs after power-off")
            c.eq(a.info(vm)["state"], "off", "state after power-off")
            c.refused(a.ctl("shutdown", vm), "shutdown of a powered-off VM", "not running")
            del out

        def guest_poweroff():
            # the guest powers itself off (vmfs.count=N): the agent notices
            # QEMU's exit and releases the lock record within a few seconds
            vmx = os.path.join(vm, "vm1.vmx")
            with open(vmx) as f:
                text = f.read()
            with open(vmx, "w") as f:
                f.write(text.replace('vmfsd.append = "console=ttyS0 quiet"',
                                     'vmfsd.append = "console=ttyS0 quiet vmfs.count=3"'))
            a.ok("power-on", vm)
            pid = a.info(vm)["pid"]
            wait_for(lambda: not vmtest.pid_alive(pid), 120, "the guest powering itself off")
            wait_for(lambda: vmtest.lock_record_free(os.path.join(vm, "vm1.vmx.lck")), 10,
                     "the agent releasing the lock record")
            c.eq(a.info(vm)["state"], "off", "state after the guest powered off")
            with open(vmx, "w") as f:
                f.write(text)

        def destroy():
            out = a.ok("destroy", vm)
            print("    " + out.strip())
            c.check(not os.path.exists(vm), "VM folder still exists after destroy")
            c.eq(json.loads(a.ok("--json", "list"))["vms"], [], "inventory after destroy")

        c.section("create", create)
        c.section("power-on", power_on)
        c.section("console", console)
        c.section("second power-on refused", again_refused)
        c.section("shutdown (ACPI) and persisted counter", shutdown)
        c.section("power-on again reads the counter", power_on_again)
        c.section("agent restart re-attaches", agent_restart)
        c.section("suspend / resume", suspend_resume)
        c.section("reset, power-off", reset_and_off)
        c.section("guest powers itself off", guest_poweroff)
        c.section("destroy", destroy)


vmtest.main("vm-lifecycle", body)
