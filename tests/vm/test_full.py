#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""A VM whose thin disk cannot grow because the datastore is full is paused
by QEMU (werror=enospc: QEMU's "io-error" run state), and the tools say so
(docs/vm.md "A full datastore").

A small volume; a VM with a thin disk; a filler file takes all but a few
MiB of the volume.  The guest (test-guest.sh's vmfs.fill=M) writes M MiB,
more than is left.  Asserted: `info` and `list` (text and JSON) show
`paused (io-error)`, the agent logged it; after the filler is deleted,
`vmfsctl resume` continues the VM (QMP cont), which then runs and whose
guest finishes its writes ("fill done" on its console).

Registered with meson (suite vm, vm-full).
"""

import errno
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vmtest  # noqa: E402

MiB = 1 << 20
FILL_MIB = 128         # the guest writes this much: more than is left
ROOM_MIB = 16          # the volume keeps this much free before the VM runs


def free_bytes(mnt):
    s = os.statvfs(mnt)
    return s.f_bavail * s.f_frsize


def body(c):
    kernel, initrd = vmtest.guest()
    with vmtest.Volume("full", size="1G", checker=c) as vol:
        mnt = vol.mount("A")
        a = vol.agent("A")
        vm = os.path.join(mnt, "full")
        filler = os.path.join(mnt, "filler")
        st = {}

        def setup():
            a.ok("create", vm, "--cpus", 1, "--memory", vmtest.GUEST_MEM, "--disk", "256M",
                 "--kernel", kernel, "--initrd", initrd, "--net", "none",
                 "--append", "console=ttyS0 quiet vmfs.fill=%d" % FILL_MIB)
            # fill the volume, then give back ROOM_MIB: the guest's first
            # writes fit, the rest do not
            fd = os.open(filler, os.O_CREAT | os.O_WRONLY, 0o644)
            chunk = b"f" * (4 * MiB)
            size = 0
            try:
                while True:
                    size += os.write(fd, chunk)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
            os.ftruncate(fd, max(0, size - ROOM_MIB * MiB))
            os.fsync(fd)
            os.close(fd)
            st["filler"] = size
            vmtest.wait_for(lambda: free_bytes(mnt) >= ROOM_MIB * MiB // 2, 30,
                            "the truncated filler's space")
            print("    filler %d MiB, %d MiB free" % (size >> 20, free_bytes(mnt) >> 20))
            c.check(free_bytes(mnt) < FILL_MIB * MiB // 2, "the volume kept too much room: %d MiB"
                    % (free_bytes(mnt) >> 20))

        def pauses():
            a.ok("power-on", vm)
            vmtest.wait_for(lambda: "fill start" in vmtest.read_log(vm, "full")
                            or a.info(vm)["state"] != "running", 180, "the guest's fill")
            vmtest.wait_for(lambda: a.info(vm)["state"] == "paused", 180,
                            "the VM paused by the full datastore")
            i = a.info(vm)
            c.eq((i["state"], i.get("paused_reason"), i.get("qemu_status")),
                 ("paused", "io-error", "io-error"), "info --json of the paused VM")
            c.check("paused (io-error)" in a.ok("info", vm), "info text lacks 'paused (io-error)'")
            row = [v for v in json.loads(a.ok("--json", "list"))["vms"] if v["path"] == vm]
            c.check(row and row[0]["state"] == "paused" and row[0].get("paused_reason") == "io-error",
                    "list --json: %r" % row)
            c.check("paused (io-error)" in a.ok("list"), "list text lacks 'paused (io-error)'")
            vmtest.wait_for(lambda: "paused by QEMU after a disk I/O error" in a.log(), 30,
                            "the agent's log line")
            c.check("no space left" in a.log(), "the agent's log does not say the datastore is full")
            c.check("fill done" not in vmtest.read_log(vm, "full"), "the guest finished its writes "
                    "although the datastore was full")

        def resumes():
            os.unlink(filler)
            vmtest.wait_for(lambda: free_bytes(mnt) > (FILL_MIB + ROOM_MIB) * MiB, 60,
                            "the filler's space back")
            out = a.ok("resume", vm)
            c.check("continued" in out, "resume: %r" % out)
            c.eq(a.info(vm)["state"], "running", "state after resume")
            vmtest.wait_for(lambda: "fill done %d MiB" % FILL_MIB in vmtest.read_log(vm, "full"),
                            180, "the guest's fill to complete")
            vmtest.wait_counter(vm, "full", 1)
            c.eq(a.info(vm)["state"], "running", "state after the fill")
            c.check("continued (was io-error)" in a.log(), "the agent did not log the continue")
            a.ok("power-off", vm)

        c.section("a VM with a thin disk on a nearly full volume", setup)
        c.section("the guest fills the volume: paused (io-error)", pauses)
        c.section("space freed, resume: the guest's writes complete", resumes)


vmtest.main("vm-full", body)
