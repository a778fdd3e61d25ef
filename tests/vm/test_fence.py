#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""A fenced host's VMs die before a survivor can take their disks over
(docs/cluster.md §3 "The VMs", docs/vm.md "Fencing").

Hosts A and B mount one volume (default heartbeat: I = 1 s, T = 10 s, so A
fences 7 s after its last good renewal and B may call A dead no earlier
than 10 s after it).  A runs the test guest.  A's storage then hangs
(vmfsd's fault injection, -o fault_on_usr1,freeze_io_for=...: every I/O of
A's vmfsd waits, as on a lost path).  The test watches, every few
milliseconds, whether A's QEMU is alive and what B's filesystem says of
the flat extent's lock (the virtual attribute user.vmfsd.lock, which
drops holders whose heartbeat slot moved on: "free" once B replayed A's
journal and freed A's slot).  It asserts:
  - A's QEMU is dead, and was seen dead before the first moment B's view of
    the disk lock was "free" (the kill came before the takeover);
  - A's vmfsd logged the fence and the kill, A's agent recorded the VM as
    killed by the fence (its log and `info`'s killed_by_fence) and did not
    restart it;
  - B can then open the disk, B's HA restarts the VM (A's lock record, which
    A, fenced, could not remove, is stale: nobody holds it), and the guest
    continues A's counter.

Registered with meson (suite vm, vm-fence).
"""

import os
import re
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vmtest  # noqa: E402


def lock_desc(path):
    try:
        return os.getxattr(path, "user.vmfsd.lock").decode(errors="replace")
    except OSError as e:
        return "error: %s" % e


def body(c):
    kernel, initrd = vmtest.guest()
    with vmtest.Volume("fence", checker=c) as vol:
        sock_a = os.path.join(vol.work, "A.sock")
        # freeze far longer than T: the host must fence, not ride it out
        mnt_a = vol.mount("A", opts="fault_on_usr1,freeze_io_for=60000,hostd_socket=%s" % sock_a)
        mnt_b = vol.mount("B")
        a = vol.agent("A")
        b = vol.agent("B")
        vm_a = os.path.join(mnt_a, "web")
        vm_b = os.path.join(mnt_b, "web")
        flat_b = os.path.join(vm_b, "web-flat.vmdk")
        st = {}

        def run_on_a():
            a.ok("create", vm_a, "--cpus", 1, "--memory", vmtest.GUEST_MEM, "--disk", "64M",
                 "--kernel", kernel, "--initrd", initrd, "--append", "console=ttyS0 quiet",
                 "--net", "none")
            a.ok("power-on", vm_a)
            vmtest.wait_counter(vm_a, "web", 3)
            st["qpid"] = a.info(vm_a)["pid"]
            vmtest.wait_for(lambda: os.path.exists(flat_b), 10, "the VM folder on host B")
            d = lock_desc(flat_b)
            c.check(d.startswith("EXCL by A"), "B's view of the disk lock while A runs: %r" % d)

        def fence_a():
            qpid = st["qpid"]
            seen = {"dead": None, "free": None, "alive_after_free": False, "desc": []}
            stop = threading.Event()

            def watch():
                # one sample: QEMU first, then B's view of the lock; a "free"
                # view is then followed by one more liveness sample
                n = 0
                while not stop.is_set():
                    alive = vmtest.pid_alive(qpid)
                    if not alive and seen["dead"] is None:
                        seen["dead"] = n
                    d = lock_desc(flat_b)
                    if not seen["desc"] or seen["desc"][-1] != d:
                        seen["desc"].append(d)
                    if d == "free":
                        seen["free"] = n
                        seen["alive_after_free"] = vmtest.pid_alive(qpid)
                        return
                    n += 1
                    time.sleep(0.01)

            t = threading.Thread(target=watch)
            t.start()
            os.kill(vol.procs["A"].pid, signal.SIGUSR1)     # A's storage hangs now
            t.join(90)
            stop.set()
            t.join()
            print("    B's view of the lock over time: %s" % " -> ".join(seen["desc"]))
            c.check(seen["free"] is not None, "B never saw A's disk lock become free")
            c.check(not vmtest.pid_alive(qpid), "A's QEMU (pid %d) still runs after the fence" % qpid)
            c.check(not seen["alive_after_free"],
                    "A's QEMU was alive after B saw its disk lock free (no kill on fence)")
            if seen["free"] is not None:
                c.check(seen["dead"] is not None and seen["dead"] < seen["free"],
                        "A's QEMU was not seen dead before B's takeover (dead at sample %r, "
                        "lock free at sample %r)" % (seen["dead"], seen["free"]))
                print("    QEMU seen dead at sample %s, lock free at sample %s (10 ms apart)"
                      % (seen["dead"], seen["free"]))
            log = vol.vmfsd_log("A")
            # QEMU among the killed (so may be the agent's sweep child, if
            # it was copying the log when the storage hung)
            c.check("fenced" in log and re.search(r"killed \d+ process\(es\) holding files on "
                                                  r".*\b%d \(" % qpid, log),
                    "A's vmfsd log lacks the fence and the kill:\n%s" % log[-2000:])
            c.check("host agent at %s answered" % sock_a in log,
                    "A's vmfsd did not reach the agent:\n%s" % log[-2000:])

        def agent_a_records():
            vmtest.wait_for(lambda: "killed by the fence of volume" in a.log(), 30,
                            "A's agent logging the fence")
            i = a.info(vm_a)
            c.check(not i.get("local") and i.get("killed_by_fence", {}).get("volume")
                    == os.path.realpath(mnt_a), "A's info after the fence: %r" % i)
            time.sleep(2)     # a few sweeps of A's agent: it must not start QEMU again
            i = a.info(vm_a)
            # (B's HA may run it by now: "running" on B is fine, here is not)
            c.check("pid" not in i and not i.get("local"),
                    "A's agent restarted the fenced VM: %r" % i)

        def b_takes_over():
            # B's HA restarts it (docs/ha.md): A's locks are broken now and
            # A's lock record, which A (fenced) could not remove, is stale
            vmtest.wait_for(lambda: b.info(vm_b).get("local"), 60, "B's HA restarting the VM",
                            step=0.5)
            m = vmtest.wait_for(lambda: re.search(r"previous counter (-?\d+)",
                                                  vmtest.read_log(vm_b, "web")),
                                120, "B's guest booting", step=0.5)
            n = int(m.group(1)) if m else -2
            old = vmtest.counters(vmtest.read_log(vm_b, "web-1"))
            c.check(n >= 3 and (not old or n >= old[-1]),
                    "B's guest read counter %d; A's run had logged %r" % (n, old[-1:]))
            vmtest.wait_counter(vm_b, "web", n + 2)
            b.ok("power-off", vm_b)

        c.section("A creates and runs the VM", run_on_a)
        if c.failures:
            return
        c.section("A's storage hangs: A fences, its QEMU dies before B takes over", fence_a)
        c.section("A's agent records the VM as killed by the fence, no restart", agent_a_records)
        c.section("B's HA restarts the VM, the guest continues", b_takes_over)


vmtest.main("vm-fence", body)
