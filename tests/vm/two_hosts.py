#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Two hosts, one datastore: the end-to-end story of the VM tools.  Host A
and host B each mount the same volume with their own vmfsd (-o host=A,
-o host=B) and run their own agent.  A creates and powers on a VM; B's
power-on is refused with a message naming A (the lock record, and on a
cluster mount also EBUSY on the flat extent, whose holder xattr names A);
B lists the VM without registering it (cluster-wide inventory, same
IDs as A's list) and names it by ID or name; A shuts the VM down (ACPI);
B powers it on and the guest finds the counter
A's run left on the disk; A's view says B runs it.

Registered with meson (suite vm, vm-two-hosts); it exits 77 (skip) where a
second mount of the volume is refused (a vmfsd without the cluster
protocol).  By hand:
  meson compile -C build && VMFSD=build/vmfsd/vmfsd MKFS=build/mkfs/mkfs.vmfsd \
    VMFSCTL=build/vmfsctl/vmfsctl VMFS_HOSTD=build/vmfs-hostd/vmfs-hostd \
    TEST_GUEST_SCRIPT=scripts/test-guest.sh TEST_GUEST_DIR=build/test-guest \
    /usr/bin/python3 tests/vm/two_hosts.py
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vmtest  # noqa: E402


def body(c):
    kernel, initrd = vmtest.guest()
    with vmtest.Volume("2hosts", checker=c) as vol:
        mnt_a = vol.mount("A")
        try:
            mnt_b = vol.mount("B")
        except RuntimeError as e:
            print("SKIP: a second host cannot mount the volume yet: %s" % str(e).splitlines()[0])
            vol.cleanup()
            sys.exit(vmtest.SKIP)
        a = vol.agent("A")
        b = vol.agent("B")
        vm_a = os.path.join(mnt_a, "db")
        vm_b = os.path.join(mnt_b, "db")
        st = {}

        def on_a():
            a.ok("create", vm_a, "--cpus", 1, "--memory", vmtest.GUEST_MEM, "--disk", "128M",
                 "--kernel", kernel, "--initrd", initrd, "--append", "console=ttyS0 quiet",
                 "--net", "none")
            a.ok("power-on", vm_a)
            vmtest.wait_counter(vm_a, "db", 4)
            c.eq(a.info(vm_a)["host"], "A", "A's view")

        def inventory():
            # B lists every VM of the datastore without registering it,
            # with the same ID as A; names and IDs work wherever a path does
            vmtest.wait_for(lambda: os.path.exists(os.path.join(vm_b, "db.vmx")), 10,
                            "the VM folder on host B")
            os.mkdir(os.path.join(mnt_a, "team"))
            a.ok("create", os.path.join(mnt_a, "team", "db"), "--cpus", 1, "--memory", 64,
                 "--disk", "16M", "--net", "none")
            la = {v["path"]: v for v in vmtest.json.loads(a.ok("--json", "list"))["vms"]}
            lb = {v["path"]: v for v in vmtest.json.loads(b.ok("--json", "list"))["vms"]}
            rel = lambda vms, m: {os.path.relpath(p, m): (v["id"], v["state"], v["host"])
                                  for p, v in vms.items()}
            c.eq(rel(lb, mnt_b), rel(la, mnt_a), "B's list vs A's")
            c.eq(rel(lb, mnt_b).get("db", (None,))[1:], ("running", "A"), "db in B's list")
            vid = lb.get(vm_b, {}).get("id", "?")
            c.refused(b.ctl("info", "db"), "info by an ambiguous name", "names 2 VMs")
            c.eq(vmtest.json.loads(b.ok("--json", "info", vid))["vmx"],
                 os.path.join(vm_b, "db.vmx"), "info by ID on B")
            c.refused(b.ctl("power-on", vid), "power-on by ID on B while A runs it", "host A")
            c.refused(b.ctl("power-off", vid), "power-off on B while A runs it",
                      "running on host A")
            c.refused(b.ctl("info", "nosuch"), "an unknown name", "no VM named 'nosuch'")
            a.ok("destroy", os.path.join(mnt_a, "team", "db"))

        def refused_on_b():
            # B sees the folder A created (coherency: within about a second)
            vmtest.wait_for(lambda: os.path.exists(os.path.join(vm_b, "db.vmx")), 10,
                            "the VM folder on host B")
            b.ok("register", vm_b)
            r = b.ctl("power-on", vm_b)
            c.refused(r, "power-on on B while A runs the VM", "host A")
            i = b.info(vm_b)
            c.eq((i["state"], i["host"]), ("running", "A"), "B's view while A runs it")
            c.check(vmtest.pid_alive(a.info(vm_a)["pid"]), "A's VM died from B's attempt")

        def move():
            a.ok("shutdown", vm_a, "--timeout", 60)
            rec = vmtest.disk_counter(os.path.join(vm_a, "db-flat.vmdk"))
            c.check(rec is not None and rec[0] >= 4, "counter on the disk after A's run: %r" % (rec,))
            st["n"] = rec[0] if rec else -2
            b.ok("power-on", vm_b)
            vmtest.wait_counter(vm_b, "db", st["n"] + 2)
            c.check("vmfs-guest: previous counter %d" % st["n"] in vmtest.read_log(vm_b, "db"),
                    "B's guest did not find A's counter %d" % st["n"])
            i = a.info(vm_a)
            c.eq((i["state"], i["host"]), ("running", "B"), "A's view after the move")
            c.refused(a.ctl("power-on", vm_a), "power-on on A while B runs it", "host B")
            b.ok("shutdown", vm_b, "--timeout", 60)

        c.section("A creates and powers on", on_a)
        c.section("every host lists every VM; names and IDs", inventory)
        c.section("B is refused, naming A", refused_on_b)
        c.section("shutdown on A, power-on on B, disk intact", move)


vmtest.main("vm-two-hosts", body)
