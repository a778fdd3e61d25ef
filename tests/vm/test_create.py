#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""vmfsctl create without booting anything: thin, thick and eager-zeroed
disks (allocation seen through st_blocks, contents zero), the descriptor
readable by qemu-img, an ISO copied in and attached as a CD-ROM, the files
a new VM folder holds, create refused over an existing folder, register on
a second agent, list/info --json fields, destroy and unregister.
"""

import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vmtest  # noqa: E402
from vmtest import MiB  # noqa: E402


def body(c):
    with vmtest.Volume("create", size="2G", checker=c) as vol:
        mnt = vol.mount("esx1")
        a = vol.agent("esx1")
        b = vol.agent("esx2")

        def provisioning():
            for prov, want_min in (("thin", 0), ("thick", 64 * MiB), ("eagerzeroed", 64 * MiB)):
                vm = os.path.join(mnt, "p-" + prov)
                out = a.ok("--json", "create", vm, "--cpus", 1, "--memory", 64, "--disk", "64M",
                           "--provisioning", prov, "--net", "none")
                prog, _ = vmtest.json_stream(out)
                # zeroing an eager-zeroed disk reports its progress
                c.eq(bool(prog), prov == "eagerzeroed", "%s: progress events %s" % (prov, prog[-1:]))
                if prog:
                    c.eq((prog[-1]["phase"], prog[-1]["total"]), ("zeroing", 64 * MiB),
                         "eagerzeroed: the last progress event")
                flat = os.path.join(vm, "p-%s-flat.vmdk" % prov)
                st = os.stat(flat)
                alloc = st.st_blocks * 512
                c.eq(st.st_size, 64 * MiB, "%s: size" % prov)
                if prov == "thin":
                    c.check(alloc < MiB, "thin: %d bytes allocated" % alloc)
                else:
                    c.check(alloc >= want_min, "%s: only %d bytes allocated" % (prov, alloc))
                with open(flat, "rb") as f:
                    c.check(f.read(4 * MiB) == bytes(4 * MiB), "%s: not zeros" % prov)
                with open(os.path.join(vm, "p-%s.vmdk" % prov)) as f:
                    desc = f.read()
                c.check(('ddb.thinProvisioned = "1"' in desc) == (prov == "thin"),
                        "%s: ddb.thinProvisioned wrong" % prov)
                r = subprocess.run(["qemu-img", "info", "--output=json", os.path.join(vm, "p-%s.vmdk" % prov)],
                                   capture_output=True, text=True, timeout=60)
                c.check(r.returncode == 0 and json.loads(r.stdout).get("virtual-size") == 64 * MiB,
                        "%s: qemu-img info: %s%s" % (prov, r.stdout[:200], r.stderr))
                i = a.info(vm)
                c.eq(i["disks"][0]["provisioning"], "thin" if prov == "thin" else "thick",
                     "%s: info provisioning" % prov)
                print("    %s: %d KiB allocated" % (prov, alloc // 1024))

        def iso_and_files():
            iso = os.path.join(vol.work, "install.iso")
            with open(iso, "wb") as f:
                # an ISO 9660 primary volume descriptor at sector 16
                f.write(bytes(32768) + b"\x01CD001\x01" + bytes(2041) + bytes(30 * 2048))
            bad = os.path.join(vol.work, "random.iso")
            with open(bad, "wb") as f:
                f.write(os.urandom(256 * 1024))
            c.refused(a.ctl("create", os.path.join(mnt, "badiso"), "--cpus", 1, "--memory", 64,
                            "--disk", "1M", "--iso", bad), "create --iso of a non-ISO file",
                      "not a CD image")
            c.check(not os.path.exists(os.path.join(mnt, "badiso")),
                    "a refused create left its folder behind")
            vm = os.path.join(mnt, "withiso")
            out = json.loads(a.ok("--json", "create", vm, "--cpus", 1, "--memory", 128, "--disk", "10M",
                                  "--iso", iso, "--guest-os", "debian12-64"))
            c.eq(out.get("path"), os.path.realpath(vm), "create --json path")
            c.eq(sorted(os.listdir(vm)), ["install.iso", "withiso-flat.vmdk", "withiso.vmdk", "withiso.vmx"],
                 "files of a new VM folder")
            with open(os.path.join(vm, "withiso.vmx")) as f:
                vmx = f.read()
            for line in ('ide1:0.fileName = "install.iso"', 'ide1:0.deviceType = "cdrom-image"',
                         'guestOS = "debian12-64"', 'numvcpus = "1"', 'memSize = "128"',
                         'ethernet0.connectionType = "nat"'):
                c.check(line in vmx, "vmx lacks %s:\n%s" % (line, vmx))
            i = a.info(vm)
            c.check(any(d["cdrom"] and d["file"] == "install.iso" for d in i["disks"]),
                    "info does not show the CD-ROM: %s" % i["disks"])
            c.refused(a.ctl("create", vm, "--cpus", 1, "--memory", 64, "--disk", "1M"),
                      "create over an existing folder", "already exists")
            c.refused(a.ctl("create", os.path.join(mnt, "x"), "--cpus", 1, "--memory", 64, "--disk", "1M",
                            "--provisioning", "sparse"), "bad provisioning", "thin, thick or eagerzeroed")
            r = a.ctl("create", os.path.join(mnt, "y"), "--cpus", 1)
            c.eq(r.returncode, 2, "usage error exit status (%s)" % r.stderr.strip())

        def inventory():
            vm = os.path.join(mnt, "withiso")
            b.ok("register", vm)
            names = sorted(v["name"] for v in json.loads(b.ok("--json", "list"))["vms"])
            c.eq(names, ["withiso"], "esx2's inventory")
            c.eq(len(json.loads(a.ok("--json", "list"))["vms"]), 4, "esx1's inventory")
            human = a.ok("list")
            c.check("p-thick" in human and "off" in human, "human list: %s" % human)
            b.ok("unregister", vm)
            c.eq(json.loads(b.ok("--json", "list"))["vms"], [], "esx2's inventory after unregister")
            for name in ("p-thin", "p-thick", "p-eagerzeroed", "withiso"):
                a.ok("destroy", os.path.join(mnt, name))
            # .vmfsd/ is the agents' HA folder (docs/ha.md), like VMware's
            # .vSphere-HA: it belongs to the datastore, not to a VM
            c.eq([n for n in os.listdir(mnt) if n != ".vmfsd"], [],
                 "datastore after destroying everything")
            r = a.ctl("info", os.path.join(mnt, "withiso"))
            c.refused(r, "info of a destroyed VM", "No such file")

        def unreachable():
            r = subprocess.run([vmtest.env("VMFSCTL"), "--agent", os.path.join(vol.work, "none.sock"), "list"],
                               capture_output=True, text=True, timeout=30)
            c.eq(r.returncode, 3, "exit status without an agent (%s)" % r.stderr.strip())
            c.check("vmfs-hostd running" in r.stderr, "message without an agent: %s" % r.stderr)

        c.section("thin, thick, eagerzeroed", provisioning)
        c.section("ISO, files, refusals", iso_and_files)
        def guard_rails():
            # thin disks provisioned beyond the datastore: said at create,
            # by list and by datastores; a VM outside any datastore: said
            big = os.path.join(mnt, "big")
            r = a.ctl("create", big, "--cpus", 1, "--memory", 64, "--disk", "5G", "--net", "none")
            c.eq(r.returncode, 0, "create of a 5 GiB thin disk on 2 GiB: %s" % r.stderr)
            c.check("overcommitted" in r.stderr, "no overcommit warning: %r" % r.stderr)
            ds = json.loads(a.ok("--json", "datastores"))["datastores"]
            c.eq([(d["path"], d["overcommitted"], d["vms"], d["provisioned"] >= 5 << 30)
                  for d in ds], [(mnt, True, 1, True)], "datastores")
            c.check("overcommitted" in a.ctl("list").stderr, "list does not warn")
            a.ok("destroy", big)
            c.check(not json.loads(a.ok("--json", "datastores"))["datastores"][0]["overcommitted"],
                    "still overcommitted after destroy")
            local = os.path.join(vol.work, "local-vm")
            r = a.ctl("create", local, "--cpus", 1, "--memory", 64, "--disk", "1M", "--net", "none")
            c.check(r.returncode == 0 and "not on a vmfsd datastore" in r.stderr,
                    "create outside a datastore: %s" % r.stderr)
            a.ok("destroy", local)

        c.section("inventory, destroy", inventory)
        c.section("guard rails: overcommit, outside a datastore", guard_rails)
        c.section("no agent", unreachable)


vmtest.main("vm-create", body)
