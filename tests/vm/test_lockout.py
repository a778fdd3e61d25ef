#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""A VM runs on one host at a time.  Two host agents (esx1, esx2) share one
mount here (a second host cannot mount the volume until the cluster issue
lands; tests/vm/two_hosts.py is the same story with two vmfsd mounts), so
what is tested is the agent's own exclusivity: the lock record
<vm>.vmx.lck, held open and flock()ed by the VM's QEMU (docs/vm.md "One
host at a time").  esx1 powers the VM on; esx2's
power-on, destroy and info see that esx1 runs it (the refusal names the
host); after a shutdown on esx1, esx2 powers it on and the guest finds the
counter esx1's run left on the disk.  Then stale records (nobody holds
their lock): one of this host is cleaned at power-on; one of another host
is shown as stale, not as running, and taken over with a logged event
without --force.  Last, kill-volume: what a host does when it loses the
volume.
"""

import json
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vmtest  # noqa: E402
from vmtest import wait_for  # noqa: E402


def body(c):
    kernel, initrd = vmtest.guest()
    with vmtest.Volume("lockout", checker=c) as vol:
        mnt = vol.mount("esx1")
        a = vol.agent("esx1")
        b = vol.agent("esx2")
        vm = os.path.join(mnt, "web")
        flat = os.path.join(vm, "web-flat.vmdk")
        lck = os.path.join(vm, "web.vmx.lck")
        st = {}

        def on_a():
            a.ok("create", vm, "--cpus", 1, "--memory", vmtest.GUEST_MEM, "--disk", "64M",
                 "--kernel", kernel, "--initrd", initrd, "--append", "console=ttyS0 quiet",
                 "--net", "none")
            # Not an HA test: the sections below stop esx2's agent and kill
            # its QEMU behind its back, and then check the record that is
            # left.  With HA on, esx1 sometimes restarted the VM at once
            # (about one run in four, with this branch and with the code
            # before it: esx1 judged esx2's agent gone within a second of
            # its SIGTERM, before its record could go stale), and the
            # check found esx1's own run instead of esx2's stale record.
            with open(os.path.join(vm, "web.vmx"), "a") as f:
                f.write('vmfsd.ha.restartPriority = "disabled"\n')
            a.ok("power-on", vm)
            vmtest.wait_counter(vm, "web", 3)
            st["pid_a"] = a.info(vm)["pid"]

        def refused_on_b():
            b.ok("register", vm)
            c.refused(b.ctl("power-on", vm), "power-on on esx2 while esx1 runs it", "running on host esx1")
            c.refused(b.ctl("resume", vm), "resume on esx2", "not suspended")
            c.refused(b.ctl("destroy", vm), "destroy on esx2 while esx1 runs it", "esx1")
            i = b.info(vm)
            c.eq((i["state"], i["host"], i.get("local")), ("running", "esx1", False), "esx2's view")
            c.check(vmtest.pid_alive(st["pid_a"]), "esx1's QEMU died from esx2's attempts")
            with open(lck) as f:
                c.check("host=esx1" in f.read(), "the lock record changed hands")
            # the refused power-on must not have touched the log or the disk
            c.check(os.path.exists(lck), "esx2 removed esx1's lock record")

        def move_to_b():
            a.ok("shutdown", vm, "--timeout", 60)
            rec = vmtest.disk_counter(flat)
            c.check(rec is not None, "no counter on the disk after esx1's run")
            st["n"] = rec[0] if rec else -2
            b.ok("power-on", vm)
            vmtest.wait_counter(vm, "web", st["n"] + 2)
            c.check("vmfs-guest: previous counter %d" % st["n"] in vmtest.read_log(vm, "web"),
                    "esx2's guest did not find esx1's counter %d" % st["n"])
            i = a.info(vm)
            c.eq((i["state"], i["host"]), ("running", "esx2"), "esx1's view after the move")
            c.refused(a.ctl("power-on", vm), "power-on on esx1 while esx2 runs it", "running on host esx2")
            st["pid_b"] = b.info(vm)["pid"]

        def stale_same_host():
            # esx2's agent stops and its QEMU dies behind its back: the lock
            # record stays; esx2's next power-on finds it stale and cleans it
            b.stop()
            os.kill(st["pid_b"], signal.SIGKILL)
            wait_for(lambda: not vmtest.pid_alive(st["pid_b"]), 10, "QEMU to die")
            c.check(os.path.exists(lck), "lock record vanished without an agent")
            i = a.info(vm)
            c.eq((i["state"], i.get("stale_lock_record")), ("off", "esx2"),
                 "esx1's view of esx2's record whose QEMU is gone")
            b.start()
            # the restarted agent sweeps its state folder at start-up
            wait_for(lambda: vmtest.lock_record_free(lck), 10, "esx2's agent cleaning its stale record")
            # the event is logged right after the release
            try:
                wait_for(lambda: "QEMU exited" in b.log(), 10, "esx2's agent saying why")
            except TimeoutError:
                c.fail("esx2's agent did not say why it cleaned up")
            # a stale record of this host's own name, written by hand (a
            # crash of the whole machine): power-on cleans it
            with open(lck, "w") as f:
                f.write("host=esx1\nagent_pid=1\nqemu_pid=999999\nstarted=1\nboot_id=old\n")
            a.ok("power-on", vm)
            c.check("stale lock record" in a.log(), "esx1 did not log the stale record it removed")
            vmtest.wait_counter(vm, "web", 0)
            a.ok("power-off", vm)

        def foreign_record_and_force():
            with open(lck, "w") as f:
                f.write("host=esx9\nagent_pid=1\nqemu_pid=1\nstarted=%d\nboot_id=x\n" % int(time.time()))
            # nobody holds it: esx9 does not run the VM; taken over, logged
            a.ok("power-on", vm)
            with open(lck) as f:
                c.check("host=esx1" in f.read(), "the stale record was not taken over")
            c.check("took over the stale lock record of host esx9" in a.log(),
                    "esx1 did not log whose record it took over")
            a.ok("power-off", vm)
            c.check(vmtest.lock_record_free(lck), "lock record left after power-off")

        def kill_volume():
            a.ok("power-on", vm)
            pid = a.info(vm)["pid"]
            out = json.loads(a.ok("--json", "kill-volume", mnt))
            c.eq(out.get("killed"), [os.path.join(os.path.realpath(vm), "web.vmx")], "kill-volume list")
            wait_for(lambda: not vmtest.pid_alive(pid), 2, "QEMU killed by kill-volume")
            # the record stays (a fenced volume refuses writes); this host's
            # next power-on finds it stale
            a.ok("power-on", vm)
            a.ok("power-off", vm)
            c.check(vmtest.lock_record_free(lck), "lock record left after power-off")

        c.section("esx1 runs the VM", on_a)
        c.section("esx2 is refused, naming esx1", refused_on_b)
        c.section("shutdown on esx1, power-on on esx2, data intact", move_to_b)
        c.section("stale records of the same host", stale_same_host)
        c.section("a stale record of another host is taken over", foreign_record_and_force)
        c.section("kill-volume kills the VMs of a lost volume at once", kill_volume)


vmtest.main("vm-lockout", body)
