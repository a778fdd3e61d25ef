#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Storage vMotion of stopped VMs, clones and templates, without booting
(docs/vm.md "Storage vMotion", "Clones and templates"): two vmfsd volumes
(two images, two mounts) and one agent.

Asserted: an offline move ds1 -> ds2 thin -> thick -> thin with the disk's
allocation (st_blocks, what du shows) honest at each step and the data
(a pattern written at several offsets) identical; the source folder gone,
the inventory and `info` on the new path, the .vmx byte for byte the same;
`--json` prints progress events and `tasks` lists the task; a move into an
existing folder (like mv) and to a local directory; a destination too small
refused with the source untouched and no partial folder; an offline clone
with a new identity (UUID, MAC, descriptor CID, display name, file names);
template: power-on refused, deploy with --name/--cpus/--memory; an
interrupted move (records left as a crash would leave them) resolved at the
next power-on: before the switch the copy is removed, after it the move is
finished.

Registered with meson (suite vm, vm-svm-offline).
"""

import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vmtest  # noqa: E402
from vmtest import MiB  # noqa: E402

DISK = 256 * MiB
# (offset, byte): 1 MiB of each at these offsets; the rest stays a hole
PATTERN = [(0, 0x11), (7 * MiB, 0x22), (64 * MiB, 0x33), (200 * MiB + 4096, 0x44),
           (255 * MiB, 0x55)]


def write_pattern(flat):
    with open(flat, "r+b") as f:
        for off, b in PATTERN:
            f.seek(off)
            f.write(bytes([b]) * MiB)
        f.flush()
        os.fsync(f.fileno())


def check_pattern(c, flat, what):
    with open(flat, "rb") as f:
        for off, b in PATTERN:
            f.seek(off)
            c.check(f.read(MiB) == bytes([b]) * MiB, "%s: data at %d differs" % (what, off))
        f.seek(100 * MiB)
        c.check(f.read(MiB) == bytes(MiB), "%s: a hole does not read as zeros" % what)


def alloc(path):
    return os.stat(path).st_blocks * 512


def body(c):
    with vmtest.Volume("svm1", size="2G", checker=c) as v1, \
            vmtest.Volume("svm2", size="2G", checker=c) as v2, \
            vmtest.Volume("svm3", size="1G", checker=c) as v3:
        ds1 = v1.mount("esx1")
        ds2 = v2.mount("esx1")
        small = v3.mount("esx1")
        a = v1.agent("esx1")
        vm = os.path.join(ds1, "mv1")
        a.ok("create", vm, "--cpus", 1, "--memory", 64, "--disk", "256M", "--net", "nat")
        write_pattern(os.path.join(vm, "mv1-flat.vmdk"))
        with open(os.path.join(vm, "mv1.vmx"), "rb") as f:
            vmx_text = f.read()
        with open(os.path.join(vm, "mv1.log"), "w") as f:
            f.write("an old run\n")
        data = len(PATTERN) * MiB

        def thin_thick_thin():
            dst = os.path.join(ds2, "mv1")
            out = a.ok("--json", "migrate-storage", vm, dst, "--provisioning", "thick")
            prog, res = vmtest.json_stream(out)
            c.check(prog, "no --json progress events: %s" % out[:300])
            c.check(all(p["total"] <= data + 2 * MiB for p in prog),
                    "progress total is not the data (%d): %s" % (data, prog[-1:]))
            c.eq(res.get("path"), dst, "reply path")
            c.check(not os.path.exists(vm), "the source folder is still there")
            flat = os.path.join(dst, "mv1-flat.vmdk")
            c.check(alloc(flat) >= DISK, "thick: only %d bytes allocated" % alloc(flat))
            check_pattern(c, flat, "thick copy")
            with open(os.path.join(dst, "mv1.vmx"), "rb") as f:
                c.eq(f.read(), vmx_text, "the .vmx changed in the move")
            with open(os.path.join(dst, "mv1.vmdk")) as f:
                c.check('ddb.thinProvisioned = "0"' in f.read(), "descriptor still says thin")
            c.check(os.path.exists(os.path.join(dst, "mv1.log")), "the log was not moved")
            i = a.info(dst)
            c.eq((i["state"], i["disks"][0]["provisioning"]), ("off", "thick"), "info after the move")
            paths = [x["path"] for x in json.loads(a.ok("--json", "list"))["vms"]]
            c.check(dst in paths and vm not in paths, "inventory: %s" % paths)
            print("    thin -> thick on ds2: %d MiB allocated" % (alloc(flat) >> 20))
            # back to ds1, thin again: du shows the data only
            a.ok("migrate-storage", dst, ds1, "--provisioning", "thin")   # into ds1: ds1/mv1
            flat = os.path.join(vm, "mv1-flat.vmdk")
            c.check(alloc(flat) <= data + 4 * MiB, "thin again: %d bytes allocated" % alloc(flat))
            check_pattern(c, flat, "thin copy")
            c.check(not os.path.exists(dst), "ds2/mv1 still there")
            du = int(os.popen("du -k '%s'" % flat).read().split()[0])
            c.check(du * 1024 <= data + 4 * MiB, "du says %d KiB" % du)
            print("    thick -> thin on ds1: du %d KiB" % du)
            t = json.loads(a.ok("--json", "tasks"))["tasks"]
            c.check(len(t) >= 2 and t[-1]["state"] == "done" and t[-1]["op"] == "migrate-storage",
                    "tasks: %s" % t[-1:])
            c.check("migrate-storage" in a.ok("tasks"), "tasks text")

        def local_dir():
            loc = os.path.join(v2.work, "local")
            os.makedirs(loc)
            a.ok("migrate-storage", vm, loc)
            dst = os.path.join(loc, "mv1")
            check_pattern(c, os.path.join(dst, "mv1-flat.vmdk"), "local copy")
            a.ok("migrate-storage", dst, vm)
            check_pattern(c, os.path.join(vm, "mv1-flat.vmdk"), "back from local")
            # within one volume: a rename
            ren = os.path.join(ds1, "renamed")
            c.check("renamed within the volume" in a.ok("migrate-storage", vm, ren), "not renamed")
            c.eq(a.info(ren)["vmx"], os.path.join(ren, "mv1.vmx"), "info after the rename")
            a.ok("migrate-storage", ren, vm)
            check_pattern(c, os.path.join(vm, "mv1-flat.vmdk"), "after the renames")

        def too_small():
            # fill the small volume but for 2 MiB: the 5 MiB of data do not fit
            filler = os.path.join(small, "filler")
            with open(filler, "wb") as f:
                try:
                    while True:
                        f.write(b"x" * (4 * MiB))
                        f.flush()
                except OSError:
                    pass
            os.truncate(filler, os.path.getsize(filler) - 2 * MiB)
            r = a.ctl("migrate-storage", vm, small)
            c.refused(r, "move to a full datastore", "MiB free")
            c.check(not os.path.exists(os.path.join(small, "mv1")), "a partial copy is left")
            check_pattern(c, os.path.join(vm, "mv1-flat.vmdk"), "source after the refusal")
            c.eq(a.info(vm)["state"], "off", "source state after the refusal")
            os.unlink(filler)

        def fills_up():
            # the destination fills up after the space check (another
            # writer): the copy fails with ENOSPC, is removed, the source
            # stays the VM
            stopf = os.path.join(a.state, "test-stop")
            a.stop()
            os.environ["VMFS_HOSTD_TEST_STOP"] = "before-copy"
            a.start()
            os.environ.pop("VMFS_HOSTD_TEST_STOP")
            cli = subprocess.Popen([vmtest.env("VMFSCTL"), "--agent", a.sock, "migrate-storage",
                                    vm, small], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True)
            vmtest.wait_for(lambda: os.path.exists(stopf), 60, "the move to stop before the copy")
            filler = os.path.join(small, "filler")
            with open(filler, "wb") as f:
                try:
                    while True:
                        f.write(b"x" * (4 * MiB))
                        f.flush()
                except OSError:
                    pass
            os.unlink(stopf)
            out = cli.communicate(timeout=120)[0]
            c.check(cli.returncode == 1 and "full" in out, "move into a full volume: exit %d: %s"
                    % (cli.returncode, out))
            print("    %s" % out.strip().splitlines()[-1])
            c.check(not os.path.exists(os.path.join(small, "mv1")), "the partial copy is left")
            c.check(not os.path.exists(os.path.join(vm, "mv1.vmx.move")), "the intent is left")
            check_pattern(c, os.path.join(vm, "mv1-flat.vmdk"), "source after ENOSPC")
            os.unlink(filler)
            a.stop()
            a.start()

        def clone_identity():
            cl = os.path.join(ds2, "cl1")
            a.ok("clone", vm, cl)
            names = sorted(os.listdir(cl))
            c.check("cl1.vmx" in names and "cl1.vmdk" in names and "cl1-flat.vmdk" in names,
                    "clone files: %s" % names)
            c.check(not any(n.endswith(".log") for n in names), "the clone got the logs: %s" % names)
            check_pattern(c, os.path.join(cl, "cl1-flat.vmdk"), "clone")
            c.check(alloc(os.path.join(cl, "cl1-flat.vmdk")) <= data + 4 * MiB, "clone not thin")
            with open(os.path.join(cl, "cl1.vmx")) as f:
                cv = f.read()
            with open(os.path.join(vm, "mv1.vmx")) as f:
                sv = f.read()
            c.check('displayName = "cl1"' in cv, "clone display name")
            c.check("uuid.bios" in cv, "clone has no uuid.bios")
            mac = re.search(r'ethernet0.generatedAddress = "([0-9a-f:]+)"', cv)
            c.check(mac and mac.group(1) not in sv, "clone MAC: %s" % (mac and mac.group(1)))
            cid = lambda t: re.search(r"CID=([0-9a-f]+)", t).group(1)  # noqa: E731
            with open(os.path.join(cl, "cl1.vmdk")) as f:
                cd = f.read()
            with open(os.path.join(vm, "mv1.vmdk")) as f:
                sd = f.read()
            c.check(cid(cd) != cid(sd) and '"cl1-flat.vmdk"' in cd, "clone descriptor: %s" % cd[:200])
            c.eq(a.info(cl)["name"], "cl1", "clone info name")

        def templates():
            a.ok("template", vm)
            r = a.ctl("power-on", vm)
            c.refused(r, "power-on of a template", "template", "deploy")
            r = a.ctl("clone", vm, os.path.join(ds2, "x"))
            c.refused(r, "clone of a template", "template")
            d = os.path.join(ds2, "web1")
            a.ok("deploy", vm, d, "--name", "Web 1", "--cpus", 1, "--memory", 96)
            i = a.info(d)
            c.eq((i["name"], i["cpus"], i["memory_mib"]), ("Web 1", 1, 96), "deployed VM")
            with open(os.path.join(d, "web1.vmx")) as f:
                c.check("vmfsd.template" not in f.read(), "the deployed VM is a template")
            check_pattern(c, os.path.join(d, "web1-flat.vmdk"), "deployed")
            r = a.ctl("deploy", d, os.path.join(ds2, "y"))
            c.refused(r, "deploy from a VM that is not a template", "not a template")
            a.ok("template", vm, "--unset")

        def interrupted():
            # the records a crash leaves before the switch: a copy in
            # ds2/mv1 marked incomplete, the source's intent "copying"
            dst = os.path.join(ds2, "mv1")
            shutil.copytree(vm, dst)
            rec = {"op": "migrate-storage", "role": "destination", "phase": "copying",
                   "source": vm, "source_vmx": os.path.join(vm, "mv1.vmx"), "dest": dst,
                   "dest_vmx": os.path.join(dst, "mv1.vmx"), "host": "esx1", "task": "t1",
                   "live": False}
            with open(os.path.join(dst, "mv1.vmx.move"), "w") as f:
                json.dump(rec, f)
            rec["role"] = "source"
            with open(os.path.join(vm, "mv1.vmx.move"), "w") as f:
                json.dump(rec, f)
            r = a.ctl("power-on", dst)
            c.refused(r, "power-on of an incomplete copy", "interrupted")
            c.check(not os.path.exists(dst), "the incomplete copy is still there")
            c.check(not os.path.exists(os.path.join(vm, "mv1.vmx.move")), "intent record left")
            # after the switch: the source record says "switched"
            shutil.copytree(vm, dst)
            rec["phase"] = "switched"
            with open(os.path.join(vm, "mv1.vmx.move"), "w") as f:
                json.dump(rec, f)
            rec["role"] = "destination"
            with open(os.path.join(dst, "mv1.vmx.move"), "w") as f:
                json.dump(rec, f)
            r = a.ctl("power-on", vm)
            c.refused(r, "power-on of a switched-away source", "moved to")
            c.check(not os.path.exists(vm), "the old source is still there")
            c.check(not os.path.exists(os.path.join(dst, "mv1.vmx.move")), "marker left")
            check_pattern(c, os.path.join(dst, "mv1-flat.vmdk"), "finished move")
            # another host's move (esx9), switched, back onto ds1: its
            # lock records are left in both folders.  Held (its mover still
            # works on it): refused; free (its mover is gone): resolved
            # here, and the stale records do not keep the VM off
            shutil.copytree(dst, vm)
            rec = dict(rec, host="esx9", task="t9", phase="switched", source=dst, dest=vm,
                       source_vmx=os.path.join(dst, "mv1.vmx"),
                       dest_vmx=os.path.join(vm, "mv1.vmx"))
            for folder, role in ((dst, "source"), (vm, "destination")):
                with open(os.path.join(folder, "mv1.vmx.move"), "w") as f:
                    json.dump(dict(rec, role=role), f)
                with open(os.path.join(folder, "mv1.vmx.lck"), "w") as f:
                    f.write("host=esx9\nagent_pid=1\nqemu_pid=2\nstarted=1\nboot_id=x\n")
            fd = os.open(os.path.join(vm, "mv1.vmx.lck"), os.O_RDONLY)
            fcntl.flock(fd, fcntl.LOCK_EX)
            r = a.ctl("power-on", vm)
            c.refused(r, "power-on while the mover holds the copy's record", "under way")
            c.check(os.path.exists(dst), "a move under way was resolved")
            os.close(fd)
            a.ok("power-on", vm)
            c.check(not os.path.exists(dst), "the old source of esx9's move is still there")
            c.check(not os.path.exists(os.path.join(vm, "mv1.vmx.move")), "marker left")
            with open(os.path.join(vm, "mv1.vmx.lck")) as f:
                c.check("host=esx1" in f.read(), "the stale record was not taken over")
            evs = [e["type"] for e in json.loads(a.ok("--json", "events", vm))["events"]]
            c.check("storage.recovered" in evs and "vm.lock-taken-over" in evs,
                    "events: %s" % evs[-6:])
            a.ok("power-off", vm)
            check_pattern(c, os.path.join(vm, "mv1-flat.vmdk"), "esx9's finished move")
            # a clone another host left half done: its record is named after
            # the clone, and nobody holds the clone's lock record: removed
            cl = os.path.join(ds2, "cl9")
            a.ok("clone", vm, cl)
            with open(os.path.join(cl, "cl9.vmx.move"), "w") as f:
                json.dump({"op": "clone", "role": "destination", "phase": "copying",
                           "source": vm, "source_vmx": os.path.join(vm, "mv1.vmx"), "dest": cl,
                           "dest_vmx": os.path.join(cl, "cl9.vmx"), "host": "esx9",
                           "task": "t10", "live": False}, f)
            r = a.ctl("power-on", cl)
            c.refused(r, "power-on of an incomplete clone", "incomplete copy")
            c.check(not os.path.exists(cl), "the incomplete clone is still there")
            # a real interrupted clone: its record is the clone's (it was
            # the source's name, which power-on of the clone never read);
            # the agent's start-up recovery removes the copy
            stopf = os.path.join(a.state, "test-stop")
            a.stop()
            os.environ["VMFS_HOSTD_TEST_STOP"] = "copying"
            a.start()
            os.environ.pop("VMFS_HOSTD_TEST_STOP")
            cli = subprocess.Popen([vmtest.env("VMFSCTL"), "--agent", a.sock, "clone", vm, cl],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            vmtest.wait_for(lambda: os.path.exists(stopf), 60, "the clone to stop")
            c.eq(sorted(n for n in os.listdir(cl) if n.endswith(".move")), ["cl9.vmx.move"],
                 "the interrupted clone's intent record")
            with open(stopf) as f:
                os.kill(int(f.read().split()[1]), signal.SIGKILL)
            a.proc.kill()
            a.proc.wait()
            a.proc = None
            cli.communicate(timeout=60)
            os.unlink(stopf)
            a.start()
            vmtest.wait_for(lambda: not os.path.exists(cl), 30, "recovery of the clone")

        c.section("offline move thin -> thick -> thin between two volumes", thin_thick_thin)
        c.section("move to a local directory and back, rename within a volume", local_dir)
        c.section("destination too small: refused, source untouched", too_small)
        c.section("destination fills up during the copy: aborted, source untouched", fills_up)
        c.section("offline clone with a new identity", clone_identity)
        c.section("template and deploy", templates)
        c.section("interrupted moves resolved at the next power-on", interrupted)


if __name__ == "__main__":
    vmtest.main("vm-svm-offline", body)
