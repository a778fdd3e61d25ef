#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Snapshots (docs/vm.md "Snapshots"): a chain of three, the guest's data
checked at each level after reverts and after deletes, online and offline;
age warnings; hostile .vmsd files refused.

The data is the test guest's counter (sector 0 of its disk): at boot the
guest prints the counter it finds on its disk ("previous counter N"),
which is what QEMU reads through the snapshot chain.  A snapshot of a
running guest freezes a counter between the last one printed before the
command and the first one printed after it.

1. hostile .vmsd files: power-on and `snapshot list` refuse them naming
   the key, no QEMU starts;
2. s1 of the blank disk of the stopped VM (offline); the age warnings of
   list and info with a hand-edited createTime (30 h: WARNING, 80 h:
   CRITICAL), and of ha status once the VM runs;
3. boot: the guest reads s1's counter; s2 live; s3 live with --memory;
4. revert to s3: running again from its memory (no reboot, the counter
   goes on from s3's); revert to s1 (off): sector 0 read through the
   chain the .vmsd names (qemu-img) is blank again; revert to s2: the boot
   reads a counter within s2's bounds; a clone from s2 made while the VM
   is off on s1's blank disk holds s2's counter in its one flat extent;
5. online deletes while the guest runs: s3 (a dead branch: nothing to
   merge), s2 (active commit into s2's frozen delta): the same QEMU, the
   guest keeps counting, one delta left (s1's);
5b. a hot clone (the chain flattened by the mirror; no snapshot files in
   the copy), a clone from s1 refused while the VM runs; migrate-storage
   of the running VM refused while s1 exists; with
   --consolidate s1 is merged online and the VM moves live (same QEMU,
   no delta left, the guest counting on);
6. offline: t1 and t2, migrate-storage of the stopped VM moves the chain
   (sector 0 through it equals the raw extent), then `delete --all` with
   qemu-img: the flat extent holds the last counter, no delta or memory
   file is left.
(Online block-commit of a delta under the active one into the raw
extent: vm-snapshot-migrate.)

Registered with meson (suite vm, vm-snapshot).
"""

import json
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vmtest  # noqa: E402

NAME = "snap"


def body(c):
    kernel, initrd = vmtest.guest()
    with vmtest.Volume("snap", size="2G", checker=c) as vol:
        mnt = vol.mount("A")
        a = vol.agent("A")
        vm = os.path.join(mnt, NAME)
        flat = os.path.join(vm, NAME + "-flat.vmdk")
        vmsd = os.path.join(vm, NAME + ".vmsd")
        a.ok("create", vm, "--cpus", 1, "--memory", vmtest.GUEST_MEM, "--disk", "64M",
             "--kernel", kernel, "--initrd", initrd, "--net", "none")

        def log():
            return vmtest.read_log(vm, NAME)

        def last():
            cs = vmtest.counters(log())
            return cs[-1] if cs else -1

        def deltas():
            return sorted(f for f in os.listdir(vm) if f.endswith(".qcow2"))

        def chain_counter():
            """The guest's record at sector 0 read through the active
            chain as the .vmsd names it (top delta ... flat extent)."""
            files = [f["file"] for f in snaps()["disks"][0]["chain"]]
            node = {"driver": "raw", "file": {"driver": "file",
                                              "filename": os.path.join(vm, files[-1])}}
            for f in reversed(files[:-1]):
                node = {"driver": "qcow2", "backing": node,
                        "file": {"driver": "file", "filename": os.path.join(vm, f)}}
            out = os.path.join(vol.work, "sector0")
            subprocess.run(["qemu-img", "dd", "-O", "raw", "bs=512", "count=1",
                            "if=json:" + json.dumps(node), "of=" + out], check=True,
                           capture_output=True)
            return vmtest.disk_counter(out)

        def snaps():
            return json.loads(a.ok("--json", "snapshot", "list", vm))

        def clone_check(dest, args, ok, what):
            """clone VM DEST ARGS: one flat extent whose sector 0 passes
            OK, no delta, tree or memory file; then destroyed."""
            a.ok("clone", vm, dest, *args)
            files = os.listdir(dest)
            flats = [f for f in files if f.endswith("-flat.vmdk")]
            rec = vmtest.disk_counter(os.path.join(dest, flats[0])) if len(flats) == 1 else "no extent"
            c.check(ok(rec), "clone %s: sector 0 %s, expected %s" % (" ".join(args), rec, what))
            c.eq([f for f in files if f.endswith((".qcow2", ".vmsd", ".vmsn"))], [],
                 "snapshot files in the clone %s" % " ".join(args))
            a.ok("destroy", dest)

        # 1. hostile tree files: refused with the key named, nothing started
        print("  hostile .vmsd files", flush=True)
        hostile = [
            ('vmfsd.delta0.fileName = "../x.qcow2"\n', "'..'"),
            ('vmfsd.delta0.fileName = "snap-flat.vmdk"\nvmfsd.delta0.parent = "x"\n',
             "must be a .qcow2"),
            ('snapshot.lastUID = "2"\nsnapshot0.uid = "1"\nsnapshot0.parent = "2"\n'
             'snapshot0.displayName = "a"\nsnapshot0.disk0.node = "scsi0:0"\n'
             'snapshot0.disk0.fileName = "snap-flat.vmdk"\nsnapshot1.uid = "2"\n'
             'snapshot1.parent = "1"\nsnapshot1.displayName = "b"\n'
             'snapshot1.disk0.node = "scsi0:0"\nsnapshot1.disk0.fileName = "snap-flat.vmdk"\n',
             "loop"),
            ('vmfsd.delta0.fileName = "a.qcow2"\nvmfsd.delta0.parent = "b.qcow2"\n'
             'vmfsd.delta1.fileName = "b.qcow2"\nvmfsd.delta1.parent = "a.qcow2"\n', "loop"),
            ('qemu.args = "-monitor stdio"\n', "unknown key"),
            ('vmfsd.disk0.node = "scsi0:0"\nvmfsd.disk0.current = "gone.qcow2"\n',
             "neither a delta"),
            ('snapshot0.createTime = "-5"\n', "not a number"),
            # a commit would write the guest's data into the kernel file
            ('snapshot.lastUID = "1"\nsnapshot0.uid = "1"\nsnapshot0.displayName = "a"\n'
             'snapshot0.disk0.node = "scsi0:0"\nsnapshot0.disk0.fileName = "vmlinuz"\n',
             "neither a delta nor"),
            ('vmfsd.delta0.fileName = "a.qcow2"\nvmfsd.delta0.parent = "vmlinuz"\n',
             "no disk's flat extent"),
        ]
        for text, needle in hostile:
            with open(vmsd, "w") as f:
                f.write(text)
            # power-on checks the chain it runs on; the snapshot commands
            # check the whole tree against the VM's disks
            if "vmlinuz" not in text:
                c.refused(a.ctl("power-on", vm), "power-on with .vmsd %r" % text[:40], needle)
            if "gone.qcow2" not in text:
                c.refused(a.ctl("snapshot", "list", vm), "list with .vmsd %r" % text[:40], needle)
            if "vmlinuz" in text:
                c.refused(a.ctl("snapshot", "delete", vm, "--all"), "delete with .vmsd %r"
                          % text[:40], needle)
        c.eq(vmtest.qemu_pids(a.state), [], "QEMUs after the hostile .vmsd files")
        os.unlink(vmsd)
        c.refused(a.ctl("snapshot", "revert", vm, "nope"), "revert to a missing snapshot", "no snapshot")
        c.refused(a.ctl("snapshot", "create", vm, "m", "--memory"), "--memory of a stopped VM",
                  "not running")

        # 2. s1 of the blank disk, offline; age warnings
        print("  s1 offline", flush=True)
        n1 = -1       # the guest's "previous counter" on a blank disk
        a.ok("snapshot", "create", vm, "s1", "--description", "blank disk")
        c.eq([s["name"] for s in snaps()["snapshots"]], ["s1"], "snapshots after s1")
        c.eq(len(deltas()), 1, "delta files after s1: %s" % deltas())
        c.refused(a.ctl("snapshot", "create", vm, "s1"), "a second s1", "exists")
        text = open(vmsd).read()
        for hours, word in ((30, "WARNING"), (80, "CRITICAL")):
            old = int(time.time()) - hours * 3600
            with open(vmsd, "w") as f:
                f.write(re.sub(r'snapshot0\.createTime = "\d+"',
                               'snapshot0.createTime = "%d"' % old, text))
            info = a.info(vm)
            c.eq(info.get("snapshots", {}).get("level"), word.lower(), "info level at %d h" % hours)
            out = a.ok("list")
            c.check(word in out and NAME in out, "list lacks %s at %d h: %s" % (word, hours, out))
            c.check(word in a.ok("info", vm), "info text lacks %s" % word)
            c.check(word in a.ok("snapshot", "list", vm), "snapshot list lacks %s" % word)
        with open(vmsd, "w") as f:
            f.write(text)

        # 3. the guest reads s1's counter; s2 live; s3 live with memory
        print("  boot on s1, s2 and s3 live", flush=True)
        a.ok("power-on", vm)
        vmtest.wait_for(lambda: vmtest.boots(log()), 180, "the guest's boot line")
        c.eq(vmtest.boots(log())[-1], n1, "counter the guest read over s1")
        vmtest.wait_counter(vm, NAME, n1 + 2, timeout=120)
        b2 = last()
        a.ok("snapshot", "create", vm, "s2")
        vmtest.wait_counter(vm, NAME, b2 + 2, timeout=60)
        a2 = last()
        b3 = last()
        t0 = time.time()
        a.ok("snapshot", "create", vm, "s3", "--memory")
        print("    s3 with memory took %.1f s" % (time.time() - t0))
        vmtest.wait_counter(vm, NAME, b3 + 3, timeout=60)
        a3 = last()
        c.eq(len(vmtest.qemu_pids(a.state)), 1, "QEMUs while snapshotting")
        lst = snaps()
        c.eq([(s["name"], s["memory"], s["state"]) for s in lst["snapshots"]],
             [("s1", False, "ok"), ("s2", False, "ok"), ("s3", True, "ok")], "the snapshots")
        c.eq(len(lst["disks"][0]["chain"]), 4, "chain length: %s" % lst["disks"][0]["chain"])
        c.check(a.info(vm)["state"] == "running", "the VM runs after the snapshots")
        # ha status flags it too (the VM is on this host's protected list)
        text = open(vmsd).read()
        with open(vmsd, "w") as f:
            f.write(re.sub(r'snapshot0\.createTime = "\d+"', 'snapshot0.createTime = "%d"'
                           % (int(time.time()) - 80 * 3600), text))
        out = a.ok("ha", "status")
        c.check("CRITICAL" in out, "ha status lacks the snapshot warning: %s" % out)
        with open(vmsd, "w") as f:
            f.write(text)

        # 4. reverts
        print("  revert to s3 (memory), s1, s2", flush=True)
        a.ok("snapshot", "revert", vm, "s3")
        c.eq(a.info(vm)["state"], "running", "state after revert to s3")
        vmtest.wait_for(lambda: vmtest.counters(log()), 120, "a counter after the revert to s3")
        first = vmtest.counters(log())[0]
        c.check(b3 < first <= a3 + 1, "first counter after revert to s3: %d not in (%d, %d]"
                % (first, b3, a3 + 1))
        c.eq(vmtest.boots(log()), [], "boot lines after the revert to s3 (it resumes, no reboot)")
        a.ok("snapshot", "revert", vm, "s1")
        c.eq(a.info(vm)["state"], "off", "state after revert to s1 (no memory)")
        c.eq(chain_counter(), None, "sector 0 through the chain after revert to s1 (blank)")
        # a clone from s2 while the VM is off on s1's blank disk: s2's
        # chain flattened into the copy's extent, no snapshot of its own
        clone_check(os.path.join(mnt, "from-s2"), ("--snapshot", "s2"),
                    lambda r: r is not None and b2 <= r[0] <= a2, "s2's counter in [%d, %d]" % (b2, a2))
        a.ok("snapshot", "revert", vm, "s2")
        a.ok("power-on", vm)
        vmtest.wait_for(lambda: vmtest.boots(log()), 180, "the boot line over s2")
        p2 = vmtest.boots(log())[-1]
        c.check(b2 <= p2 <= a2, "counter read after revert to s2: %d not in [%d, %d]" % (p2, b2, a2))
        vmtest.wait_counter(vm, NAME, p2 + 2, timeout=120)

        # 5. online deletes, the guest running: s3 (a dead branch since
        # the revert to s2: nothing to merge), s2 (the active delta
        # committed into s2's frozen delta: block-commit + job-complete)
        print("  online deletes", flush=True)
        pid = vmtest.qemu_pids(a.state)
        for name, left in (("s3", 2), ("s2", 1)):
            before = last()
            prog, out = vmtest.json_stream(a.ok("--json", "snapshot", "delete", vm, name))
            c.check("deleted" in out.get("message", ""), "delete %s: %s" % (name, out))
            vmtest.wait_counter(vm, NAME, before + 2, timeout=60)
            c.eq(len(deltas()), left, "deltas after deleting %s online: %s" % (name, deltas()))
        c.eq([s["name"] for s in snaps()["snapshots"]], ["s1"], "snapshots after the online deletes")
        c.eq(vmtest.qemu_pids(a.state), pid, "the same QEMU ran through the deletes")
        c.eq(vmtest.boots(log())[-1], p2, "no reboot during the deletes")

        # 5b. Storage vMotion of the running VM with s1: the mirror copies
        # flat extents only, so refused; with --consolidate s1 is merged
        # online first, then the VM moves live
        # a hot clone of the running VM with s1: the mirror copies what
        # its top node reads (the chain flattened); a clone from a
        # snapshot waits for the VM to be off
        c.refused(a.ctl("clone", vm, os.path.join(mnt, "x"), "--snapshot", "s1"),
                  "a clone from a snapshot of a running VM", "powered off")
        clone_check(os.path.join(mnt, "hot"), (), lambda r: r is not None and r[0] >= p2,
                    "a counter from this boot (>= %d)" % p2)
        print("  live migrate-storage: refused, then --consolidate", flush=True)
        moved = os.path.join(mnt, "moved")
        c.refused(a.ctl("migrate-storage", vm, moved), "a live move with snapshots", "--consolidate")
        before = last()
        a.ok("migrate-storage", vm, moved, "--consolidate")
        vm, flat, vmsd = moved, os.path.join(moved, NAME + "-flat.vmdk"), os.path.join(moved, NAME + ".vmsd")
        c.eq((a.info(vm)["state"], deltas(), snaps()["snapshots"]), ("running", [], []),
             "state, deltas and snapshots after the consolidated move")
        c.eq(vmtest.qemu_pids(a.state), pid, "the same QEMU ran through the consolidated move")
        vmtest.wait_counter(vm, NAME, before + 2, timeout=60)
        a.ok("power-off", vm)
        shown = vmtest.counters(log())[-1]

        # 6. offline: t1 over it, then delete --all with qemu-img: s1's
        # delta (every write since the blank disk) goes into the extent
        print("  offline move with the chain, delete --all", flush=True)
        a.ok("snapshot", "create", vm, "t1")
        a.ok("snapshot", "create", vm, "t2")
        c.eq(len(deltas()), 2, "deltas before the move")
        # a stopped VM moves with its chain (a copy, not a rename: the
        # provisioning is given)
        moved2 = os.path.join(mnt, "moved2")
        a.ok("migrate-storage", vm, moved2, "--provisioning", "thin")
        c.check(not os.path.exists(vm), "the old folder is left after the move")
        vm, flat, vmsd = moved2, os.path.join(moved2, NAME + "-flat.vmdk"), os.path.join(moved2, NAME + ".vmsd")
        c.eq((len(deltas()), [x["name"] for x in snaps()["snapshots"]]), (2, ["t1", "t2"]),
             "deltas and snapshots moved with the VM")
        c.eq(chain_counter(), vmtest.disk_counter(flat),
             "sector 0 through the moved chain vs the raw extent (nothing written since t1)")
        a.ok("snapshot", "delete", vm, "--all")
        c.eq(deltas(), [], "deltas after the offline delete --all")
        got = vmtest.disk_counter(flat)[0]
        c.check(got in (shown, shown + 1), "flat extent after offline consolidation: %d, last "
                "shown %d" % (got, shown))
        c.eq(snaps()["snapshots"], [], "snapshots after delete --all")
        c.check(not os.path.exists(os.path.join(vm, NAME + "-Snapshot3.vmsn")),
                "s3's memory state left after its delete")


if __name__ == "__main__":
    vmtest.main("vm-snapshot", body)
