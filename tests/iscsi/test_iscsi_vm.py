#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""A VM on an iSCSI datastore: hosts A and B each mount the LUN from a
network namespace of their own (istgt in a third), each with its own agent
(vmfs-hostd).  A creates and powers on a VM (the test guest under TCG);
B's power-on of the same VM is refused with a message naming A, and A's VM
keeps running; A shuts it down.

Env: VMFSD, MKFS, VMFSCTL, VMFS_HOSTD, TEST_GUEST_SCRIPT, TEST_GUEST_DIR.
Exit 0 pass, 1 fail, 77 skip (no root, FUSE, QEMU or network namespaces).
"""
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "vm"))
import san  # noqa: E402
import vmtest  # noqa: E402
import vmfstest as vt  # noqa: E402


def body(c):
    san.require_netns()
    kernel, initrd = vmtest.guest()
    work = tempfile.mkdtemp(prefix="vmfsd-it-iscsivm-", dir="/var/tmp")
    mnts = {h: os.path.join(work, "mnt-" + h) for h in "AB"}
    agents = []
    try:
        with san.San(2 << 30) as s:
            hosts = {"A": s.add_host(), "B": s.add_host()}
            r = hosts["A"].run([vt.mkfs_exe(), "-q", "-H", "4", s.url], timeout=300)
            if r.returncode:
                c.fail("mkfs.vmfsd %s: %s" % (s.url, r.stderr.strip()))
                return
            try:
                for h in "AB":
                    os.mkdir(mnts[h])
                    r = hosts[h].run([vt.vmfsd_exe(), "-o", "host=%s,hostd_socket=%s" % (
                        h, os.path.join(work, "%s.sock" % h)), s.url, mnts[h]], timeout=120)
                    if r.returncode:
                        c.fail("mount %s: %s" % (h, r.stderr.strip()))
                        return
                a = vmtest.Agent(work, "A")
                a.start()
                agents.append(a)
                b = vmtest.Agent(work, "B")
                b.start()
                agents.append(b)
                vm_a, vm_b = os.path.join(mnts["A"], "db"), os.path.join(mnts["B"], "db")

                def on_a():
                    a.ok("create", vm_a, "--cpus", 1, "--memory", vmtest.GUEST_MEM, "--disk",
                         "64M", "--kernel", kernel, "--initrd", initrd, "--append",
                         "console=ttyS0 quiet", "--net", "none")
                    a.ok("power-on", vm_a)
                    vmtest.wait_counter(vm_a, "db", 2)

                def refused_on_b():
                    vmtest.wait_for(lambda: os.path.exists(os.path.join(vm_b, "db.vmx")), 10,
                                    "the VM folder on host B")
                    b.ok("register", vm_b)
                    c.refused(b.ctl("power-on", vm_b), "power-on on B while A runs the VM",
                              "host A")
                    c.check(vmtest.pid_alive(a.info(vm_a)["pid"]),
                            "A's VM died from B's attempt")
                    n = vmtest.disk_counter(os.path.join(vm_a, "db-flat.vmdk"))
                    vmtest.wait_counter(vm_a, "db", (n[0] if n else 0) + 2)

                c.section("A creates and powers on a VM over iSCSI", on_a)
                c.section("B is refused, naming A; A's VM goes on", refused_on_b)
                c.section("A shuts it down", lambda: a.ok("power-off", vm_a))
            finally:
                if c.failures:
                    for ag in agents:
                        print("=== agent %s log (tail):\n%s" % (ag.host, ag.log()[-4000:]))
                for ag in agents:
                    ag.stop()
                for d in os.listdir("/proc"):      # any QEMU left of this test
                    if d.isdigit():
                        try:
                            if work.encode() in open("/proc/%s/cmdline" % d, "rb").read() \
                                    and b"qemu-system" in open("/proc/%s/cmdline" % d,
                                                                "rb").read():
                                os.kill(int(d), 9)
                        except OSError:
                            pass
                for m in mnts.values():
                    vt.unmount_quiet(m)
                c.vmfsd_gone(s.url)
    finally:
        for m in mnts.values():
            vt.unmount_quiet(m)
        subprocess.run(["rm", "-rf", work])


vmtest.main("iscsi-vm", body)
