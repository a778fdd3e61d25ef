#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""VM monitoring (docs/vm.md "VM monitoring"): one agent on a real vmfsd
mount runs the TCG test guest, whose counter lives at sector 0 of its disk.
- SIGKILL of QEMU: restarted in place, the guest's counter continues from
  what was on the disk, the lock record names the new QEMU;
- SIGSEGV of QEMU: likewise;
- SIGSTOP of QEMU (QMP socket open, no answers): detected by the QMP
  heartbeat after the VM's hang timeout, killed and restarted;
- a second VM hung (SIGSTOP, 60 s hang timeout) while the first is killed:
  the first is restarted all the same; the second answers again
  (SIGCONT) before its timeout and is left alone;
- `power-off`, `kill-volume`: not restarted;
- another host (a second agent) took the VM while the first one could not
  act yet: the restart is refused by the lock record, one event, no retry;
- a guest that powers itself off (vmfs.count=N): not restarted;
- a guest that panics at every boot (vmfs.panic_after=1, pvpanic): restarted
  vmfsd.ha.maxRestarts times, then left off with a vm.restart-gave-up event;
every step is an event (`vmfsctl events`) and `info` shows the restarts in
the window.  Short settings keep it quick: hang timeout 5 s, agent
--restart-backoff 1.
"""

import os
import re
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vmtest  # noqa: E402
from vmtest import wait_for  # noqa: E402

APPEND = "console=ttyS0 quiet"
# the default run covers SIGKILL and the hang; --long (suite monitor-long)
# adds SIGSEGV and a second VM hung while the first is restarted
LONG = "--long" in sys.argv


def body(c):
    kernel, initrd = vmtest.guest()
    with vmtest.Volume("mon", size="2G", checker=c) as vol:
        mnt = vol.mount("esx1")
        a = vol.agent("esx1", extra=["--restart-backoff", "1"])
        vm = os.path.join(mnt, "vm1")
        vmx = os.path.join(vm, "vm1.vmx")
        flat = os.path.join(vm, "vm1-flat.vmdk")
        a.ok("create", vm, "--cpus", 1, "--memory", vmtest.GUEST_MEM, "--disk", "64M",
             "--kernel", kernel, "--initrd", initrd, "--append", APPEND, "--net", "none")

        def set_vmx(**keys):
            """Sets .vmx keys (vmfsd.append, vmfsd.ha.*): read at the next power-on."""
            with open(vmx) as f:
                lines = [ln for ln in f.read().splitlines()
                         if ln.split("=")[0].strip().lower() not in {k.lower() for k in keys}]
            lines += ['%s = "%s"' % (k, v) for k, v in keys.items()]
            with open(vmx, "w") as f:
                f.write("\n".join(lines) + "\n")

        def events():
            return vmtest.json.loads(a.ok("--json", "events", vm))["events"]

        def events_of(evs, since, typ):
            return [e for e in evs[since:] if e["type"] == typ]

        def wait_event(since, typ, timeout=120):
            def got():
                evs = events()
                found = events_of(evs, since, typ)
                return found and found[-1]
            return wait_for(got, timeout, "event %s" % typ, step=0.3)

        def running_pid():
            i = a.info(vm)
            return i["state"] == "running" and i.get("pid")

        def crash_and_restart(sig, what, reason, verify=True):
            pid = running_pid()
            c.check(pid, "%s: the VM is not running before the crash" % what)
            before = vmtest.wait_counter(vm, "vm1", 1)
            since = len(events())
            t = time.monotonic()
            os.kill(pid, sig)
            ev = wait_event(since, "vm.restarted", timeout=120)
            print("    %s: restarted in place %.1fs after the signal: %s" % (
                what, time.monotonic() - t, ev["message"]), flush=True)
            evs = events()
            det = events_of(evs, since, "vm.failure-detected")
            c.check(det and reason in det[0]["message"], "%s: failure event lacks %r: %s" % (
                what, reason, det))
            c.check(events_of(evs, since, "vm.restarting"), "%s: no vm.restarting event" % what)
            new = running_pid()
            c.check(new and new != pid, "%s: no new QEMU (old %s, now %s)" % (what, pid, new))
            with open(os.path.join(vm, "vm1.vmx.lck")) as f:
                lck = f.read()
            c.check("host=esx1" in lck and "qemu_pid=%s" % new in lck,
                    "%s: the lock record does not name the new QEMU %s: %s" % (what, new, lck))
            if not verify:
                return
            # the guest continues from its disk: the new boot read a
            # counter at least as high as the last one printed before
            wait_for(lambda: "previous counter" in vmtest.read_log(vm, "vm1"), 120,
                     "%s: the restarted guest's first line" % what, step=0.3)
            m = re.search(r"previous counter (-?\d+)", vmtest.read_log(vm, "vm1"))
            prev = int(m.group(1))
            c.check(prev >= before, "%s: the restarted guest read counter %d from its disk, "
                    "the guest had printed %d before the crash" % (what, prev, before))
            n = vmtest.wait_counter(vm, "vm1", prev + 1)
            print("    %s: guest counter %d -> read %d from disk -> counting %d" % (
                what, before, prev, n), flush=True)

        def not_restarted(since, what):
            """No restart after SINCE: checked once several sweeps (1 s
            each) have run past the stop."""
            wait_for(lambda: a.info(vm)["state"] == "off", 60, "%s: state off" % what)
            time.sleep(4)
            evs = events()
            bad = [e for e in evs[since:] if e["type"] in ("vm.failure-detected", "vm.restarting",
                                                            "vm.restarted")]
            c.check(not bad, "%s: restarted anyway: %s" % (what, bad))
            c.eq(a.info(vm)["state"], "off", "%s: state a few sweeps later" % what)

        # the VM: hangs detected after 5 s, room for the three crashes
        set_vmx(**{"vmfsd.ha.hangTimeout": "5", "vmfsd.ha.maxRestarts": "4"})
        a.ok("power-on", vm)
        vmtest.wait_counter(vm, "vm1", 2)
        i = a.info(vm)
        mon = i.get("vm_monitoring", {})
        c.check(mon.get("enabled") and mon.get("max_restarts") == 4 and mon.get("hang_timeout_s") == 5,
                "info vm_monitoring after power-on: %s" % mon)

        print("  SIGKILL of QEMU", flush=True)
        crash_and_restart(signal.SIGKILL, "SIGKILL", "signal 9")
        c.eq(a.info(vm)["vm_monitoring"].get("restarts_in_window"), 1, "restarts after SIGKILL")

        if LONG:
            print("  SIGSEGV of QEMU", flush=True)
            crash_and_restart(signal.SIGSEGV, "SIGSEGV", "signal 11")

        print("  SIGSTOP of QEMU (hang)", flush=True)
        crash_and_restart(signal.SIGSTOP, "SIGSTOP", "did not answer QMP", verify=False)
        n = 3 if LONG else 2
        c.eq(a.info(vm)["vm_monitoring"].get("restarts_in_window"), n, "restarts after the hang")
        out = a.ok("info", vm)
        c.check(re.search(r"monitoring: +on, %d restarts" % n, out), "info text lacks the restarts: %s" % out)

        if LONG:
            print("  one hung QEMU does not hold up the others", flush=True)
            # vm2 hangs (SIGSTOP, hang timeout 60 s); vm1 is killed meanwhile and
            # must be restarted while vm2 still counts as merely silent; vm2
            # then answers again (SIGCONT) and is not restarted
            vm2 = os.path.join(mnt, "vm2")
            a.ok("create", vm2, "--cpus", 1, "--memory", vmtest.GUEST_MEM, "--disk", "16M",
                 "--kernel", kernel, "--initrd", initrd, "--append", APPEND, "--net", "none")
            with open(os.path.join(vm2, "vm2.vmx"), "a") as f:
                f.write('vmfsd.ha.hangTimeout = "60"\n')
            a.ok("power-on", vm2)
            pid2 = a.info(vm2)["pid"]
            since2 = len(vmtest.json.loads(a.ok("--json", "events", vm2))["events"])
            pid = running_pid()
            since = len(events())
            os.kill(pid2, signal.SIGSTOP)
            try:
                time.sleep(1)
                os.kill(pid, signal.SIGKILL)
                ev = wait_event(since, "vm.restarted", timeout=60)
                print("    vm1 restarted while vm2 is silent: " + ev["message"], flush=True)
                ev2 = vmtest.json.loads(a.ok("--json", "events", vm2))["events"][since2:]
                c.check(not [e for e in ev2 if e["type"].startswith("vm.")],
                        "vm2 acted on before vm1 was restarted: %s" % ev2)
            finally:
                os.kill(pid2, signal.SIGCONT)
            time.sleep(4)     # a few sweeps with vm2 answering again
            ev2 = vmtest.json.loads(a.ok("--json", "events", vm2))["events"][since2:]
            c.check(not ev2, "vm2, silent for a while then answering, was acted on: %s" % ev2)
            c.eq(a.info(vm2).get("pid"), pid2, "vm2's QEMU after its stall")
            a.ok("power-off", vm2)

        print("  power-off: not restarted", flush=True)
        since = len(events())
        a.ok("power-off", vm)
        not_restarted(since, "power-off")

        print("  kill-volume: not restarted", flush=True)
        a.ok("power-on", vm)
        since = len(events())
        a.ok("kill-volume", mnt)
        not_restarted(since, "kill-volume")
        c.check(events_of(events(), since, "vm.restart-skipped"), "kill-volume: no vm.restart-skipped")

        print("  guest powers itself off: not restarted", flush=True)
        rec = vmtest.disk_counter(flat)
        stop_at = (rec[0] if rec else 0) + 2
        set_vmx(**{"vmfsd.append": "%s vmfs.count=%d" % (APPEND, stop_at)})
        since = len(events())
        a.ok("power-on", vm)
        c.eq(a.info(vm)["vm_monitoring"].get("restarts_in_window"), 0,
             "a user's power-on starts the restart count afresh")
        wait_for(lambda: a.info(vm)["state"] == "off", 120, "the guest's own power-off")
        not_restarted(since, "guest power-off")
        stopped = events_of(events(), since, "vm.stopped")
        c.check(stopped and "guest powered off" in stopped[-1]["message"],
                "guest power-off: stop event %s" % stopped)

        print("  another host took the VM before the restart: refused, not retried", flush=True)
        # esx1's agent is held (SIGSTOP) so that it cannot restart the VM
        # before esx2 takes it: QEMU dies, esx2 powers the VM on (--force:
        # the lock record still names esx1), then esx1's agent goes on
        set_vmx(**{"vmfsd.append": APPEND})
        b = vol.agent("esx2")
        b.ok("register", vm)
        a.ok("power-on", vm)
        pid = running_pid()
        since = len(events())
        os.kill(a.proc.pid, signal.SIGSTOP)
        try:
            os.kill(pid, signal.SIGKILL)
            wait_for(lambda: not vmtest.pid_alive(pid), 30, "esx1's QEMU gone")
            b.ok("power-on", "--force", vm)
        finally:
            os.kill(a.proc.pid, signal.SIGCONT)
        ev = wait_event(since, "vm.restart-refused", timeout=60)
        print("    " + ev["message"], flush=True)
        c.check("esx2" in ev["message"], "the refusal does not name esx2: %s" % ev["message"])
        c.check(events_of(events(), since, "vm.failure-detected"), "no failure event on esx1")
        time.sleep(3)     # a few sweeps: no second attempt
        evs = events()
        c.eq(len(events_of(evs, since, "vm.restarting")), 1, "restart attempts on esx1")
        c.eq(len(events_of(evs, since, "vm.restarted")), 0, "restarts on esx1")
        i = a.info(vm)
        c.eq((i["state"], i["host"], i.get("local")), ("running", "esx2", False),
             "esx1's view after the refusal")
        i = b.info(vm)
        c.eq((i["state"], i["host"]), ("running", "esx2"), "esx2 runs the VM")
        b.ok("power-off", vm)

        print("  a guest that panics at every boot: 2 restarts, then left off", flush=True)
        set_vmx(**{"vmfsd.append": "%s vmfs.panic_after=1" % APPEND, "vmfsd.ha.maxRestarts": "2"})
        since = len(events())
        t = time.monotonic()
        a.ok("power-on", vm)
        ev = wait_event(since, "vm.restart-gave-up", timeout=240)
        print("    gave up %.1fs after power-on: %s" % (time.monotonic() - t, ev["message"]),
              flush=True)
        evs = events()
        c.eq(len(events_of(evs, since, "vm.restarted")), 2, "restarts of the panicking guest")
        det = events_of(evs, since, "vm.failure-detected")
        c.eq(len(det), 3, "failures of the panicking guest")
        c.check(all("panicked" in e["message"] for e in det), "panic failures: %s" % det)
        c.check("vmfs-guest: panicking" in vmtest.read_log(vm, "vm1"), "the guest did not panic")
        i = a.info(vm)
        c.eq(i["state"], "off", "state after giving up")
        c.check(i["vm_monitoring"].get("gave_up_at"), "info lacks gave_up_at: %s" % i["vm_monitoring"])
        time.sleep(3)
        c.eq(len(events_of(events(), since, "vm.restarted")), 2, "restarts a few sweeps after giving up")
        out = a.ok("info", vm)
        c.check("gave up:" in out, "info text lacks 'gave up': %s" % out)


if __name__ == "__main__":
    vmtest.main("vm-monitor", body)
