#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Maintenance mode (docs/ha.md §4b): hosts A, B and C mount one volume,
each with its own vmfsd and agent (--migration-address 127.0.0.1).  Three
VMs run on A.

 1. `vmfsctl host maintenance enter` on A migrates all three away, to the
    hosts HA placement picks (most free memory, ties by name: B and C both
    get some), prints an evacuate line per VM, and answers with the moved
    list; A runs no QEMU, each VM runs on exactly one of B and C (its lock
    record's on-disk lock is that host's, its counter grows, one boot);
 2. A is shown in maintenance by `list` on A and by `ha status` on B;
 3. on A, a power-on is refused and so is a migration into A;
 4. `exit` lifts it: the power-on on A works;
 5. balancing (each agent offers 1024 MiB: --max-memory): with B holding
    two VMs, C one and A none, `vmfsctl balance` on A shows each host's
    load and proposes one migration, from B to A; `--apply` performs it
    (through B's agent: the VM is B's) and the next `balance` proposes
    nothing;
 6. a VM that fits no other host (900 MiB, the others have less free):
    `maintenance enter` exits 1 naming it and why ("no room"), the host
    stays in maintenance and the VM keeps running on A.

Registered with meson (suite vm, vm-maintenance).
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vmtest  # noqa: E402

NAMES = ["m1", "m2", "m3"]


def body(c):
    kernel, initrd = vmtest.guest()
    with vmtest.Volume("maint", checker=c) as vol:
        hosts = "ABC"
        mnt = {h: vol.mount(h) for h in hosts}
        ag = {h: vol.agent(h, ["--migration-address", "127.0.0.1", "--max-memory", 1024])
              for h in hosts}

        def folder(h, name):
            return os.path.join(mnt[h], name)

        def where(name):
            """The host whose vmfsd holds the VM's lock record."""
            for h in hosts:
                try:
                    lk = os.getxattr(os.path.join(folder(h, name), name + ".vmx.lck"),
                                     "user.vmfsd.lock").decode()
                except OSError:
                    continue
                if lk.startswith("EXCL by "):
                    return lk.split()[2]
            return None

        def start():
            for h in hosts:
                for o in hosts:
                    vmtest.wait_for(lambda: os.path.exists(os.path.join(
                        mnt[h], ".vmfsd", "agents", o + ".migration")), 60,
                        "%s's migration address on %s" % (o, h))
            for n in NAMES:
                ag["A"].ok("create", folder("A", n), "--cpus", 1, "--memory", vmtest.GUEST_MEM,
                           "--disk", "32M", "--kernel", kernel, "--initrd", initrd, "--append",
                           "console=ttyS0 quiet", "--net", "none")
                ag["A"].ok("power-on", folder("A", n))
            for n in NAMES:
                vmtest.wait_counter(folder("A", n), n, 3, timeout=300)

        def enter():
            c.refused(ag["A"].ctl("host", "maintenance", "status", "B"),
                      "A's agent asked about host B", "not of host B")
            r = ag["A"].ctl("--json", "host", "maintenance", "enter", "--timeout", 600, "A",
                            timeout=900)
            print(r.stdout[-3000:] + r.stderr, flush=True)
            c.eq(r.returncode, 0, "maintenance enter: " + r.stderr)
            prog, _ = vmtest.json_stream(r.stdout) if r.returncode == 0 else ([], None)
            c.eq(len([p for p in prog if p.get("phase") == "evacuate"]), 3,
                 "evacuate progress events")
            c.eq(len(vmtest.qemu_pids(ag["A"].state)), 0, "QEMUs left on A")
            got = {}
            for n in NAMES:
                h = where(n)
                got[n] = h
                c.check(h in ("B", "C"), "%s runs on %s" % (n, h))
                if h not in ("B", "C"):
                    continue
                c.eq(ag[h].info(folder(h, n))["state"], "running", "%s on %s" % (n, h))
                before = vmtest.disk_counter(os.path.join(folder(h, n), n + "-flat.vmdk"))[0]
                vmtest.wait_for(lambda: vmtest.disk_counter(os.path.join(
                    folder(h, n), n + "-flat.vmdk"))[0] > before + 2, 120,
                    "%s counts on %s" % (n, h))
                c.eq(vmtest.read_log(folder(h, n), n).count("previous counter"), 1,
                     "%s: boots seen in its log" % n)
            c.eq(sorted(set(got.values())), ["B", "C"], "placement spreads over B and C: %s" % got)
            c.eq(len(vmtest.qemu_pids(ag["B"].state)) + len(vmtest.qemu_pids(ag["C"].state)), 3,
                 "QEMUs on B and C")

        def shown():
            out = ag["A"].ok("list")
            c.check("maintenance mode" in out, "list on A: " + out)
            st = json.loads(ag["B"].ok("--json", "ha", "status"))
            flags = {h["host"]: (h.get("agent") or {}).get("maintenance")
                     for ds in st["datastores"] for h in ds["hosts"]}
            c.eq((flags.get("A"), flags.get("B")), (True, False), "ha status on B: %s" % flags)
            c.check("maintenance" in ag["B"].ok("ha", "status"), "ha status text on B")

        def refusals():
            ag["A"].ok("create", folder("A", "m4"), "--cpus", 1, "--memory", vmtest.GUEST_MEM,
                       "--disk", "32M", "--kernel", kernel, "--initrd", initrd, "--append",
                       "console=ttyS0 quiet", "--net", "none")
            c.refused(ag["A"].ctl("power-on", folder("A", "m4")), "power-on on A", "maintenance")
            h = where("m1")
            r = ag[h].ctl("migrate", folder(h, "m1"), "--host", "A", timeout=300)
            c.check(r.returncode != 0 and "maintenance" in r.stdout + r.stderr,
                    "migration into A: exit %d %s %s" % (r.returncode, r.stdout, r.stderr))
            c.eq(where("m1"), h, "m1 stays on " + h)

        def leave():
            ag["A"].ok("host", "maintenance", "exit")
            c.check("maintenance" not in ag["A"].ok("list"), "list on A after exit")
            ag["A"].ok("power-on", folder("A", "m4"))
            c.eq(ag["A"].info(folder("A", "m4"))["state"], "running", "m4 on A after exit")
            ag["A"].ok("power-off", folder("A", "m4"))

        def balance():
            def proposal():
                r = json.loads(ag["A"].ok("--json", "balance"))
                return r if [(m["from"], m["to"]) for m in r["moves"]] == [("B", "A")] else None
            try:
                r = vmtest.wait_for(proposal, 20, "one proposed move B -> A")
            except TimeoutError:
                return c.fail("balance proposes: %s" % ag["A"].ok("balance"))
            print(ag["A"].ok("balance"), flush=True)
            hl = {h["host"]: h for h in r["datastores"][0]["hosts"]}
            c.eq((hl["B"]["used_memory_mib"], hl["C"]["used_memory_mib"]),
                 (2 * vmtest.GUEST_MEM, vmtest.GUEST_MEM), "committed memory of B and C")
            vmx = r["moves"][0]["vmx"]
            name = vmx.split("/")[0]
            out = ag["A"].ok("balance", "--apply", timeout=600)
            print(out, flush=True)
            c.check("moved" in out, "balance --apply: " + out)
            c.eq(where(name), "A", "%s's host after balancing" % name)
            vmtest.wait_for(lambda: not json.loads(ag["A"].ok("--json", "balance"))["moves"], 20,
                            "no move proposed once balanced")

        def stuck():
            ag["A"].ok("create", folder("A", "big"), "--cpus", 1, "--memory", 900, "--disk",
                       "32M", "--kernel", kernel, "--initrd", initrd, "--append",
                       "console=ttyS0 quiet", "--net", "none")
            ag["A"].ok("power-on", folder("A", "big"))
            r = ag["A"].ctl("host", "maintenance", "enter", "--timeout", 120, timeout=300)
            msg = r.stdout + r.stderr
            print(msg, flush=True)
            c.check(r.returncode == 1 and "big.vmx" in msg and "no room" in msg,
                    "maintenance enter with a VM that fits nowhere: exit %d %s" % (r.returncode, msg))
            c.eq(where("big"), "A", "the big VM's host")
            c.check("maintenance mode" in ag["A"].ok("list"), "A stays in maintenance")
            ag["A"].ok("host", "maintenance", "exit")
            ag["A"].ok("power-off", folder("A", "big"))

        c.section("three VMs on A", start)
        c.section("maintenance enter on A empties it", enter)
        c.section("A shown in maintenance", shown)
        c.section("power-on and incoming migration refused on A", refusals)
        c.section("maintenance exit", leave)
        c.section("balance proposes and applies a move B -> A", balance)
        c.section("a VM that fits nowhere is reported, not moved", stuck)
        for n in NAMES:
            h = where(n)
            if h:
                ag[h].ok("power-off", folder(h, n))


vmtest.main("vm-maintenance", body)
