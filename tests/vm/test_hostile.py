#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Hostile VM folders: a .vmx or a VMDK descriptor on a shared datastore is
untrusted input.  Each case below is a VM folder on the mount with one bad
thing in it; `vmfsctl register` (which validates the .vmx and every
descriptor) or `vmfsctl power-on` (which also opens the files) must refuse
it with exit 1 and a message naming the key (and line) at fault, and no
QEMU may start.  Also: creating or powering on a VM that asks for more
vCPUs or memory than the host has is refused.  No guest boots here.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vmtest  # noqa: E402

BASE = """.encoding = "UTF-8"
displayName = "hostile"
guestOS = "other-64"
numvcpus = "1"
memSize = "64"
scsi0.present = "TRUE"
scsi0:0.present = "TRUE"
scsi0:0.fileName = "hv.vmdk"
"""

DESC = """# Disk DescriptorFile
version=1
CID=12345678
parentCID=ffffffff
createType="vmfs"

RW 2048 VMFS "%s"
"""


def host_mem_mib():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    return 0


def body(c):
    with vmtest.Volume("hostile", size="1G", checker=c) as vol:
        mnt = vol.mount("esx1")
        a = vol.agent("esx1")
        n = [0]

        def folder(vmx, desc=DESC % "hv-flat.vmdk", flat=True):
            n[0] += 1
            d = os.path.join(mnt, "case%02d" % n[0])
            os.mkdir(d)
            with open(os.path.join(d, "hv.vmx"), "w") as f:
                f.write(vmx)
            if desc is not None:
                with open(os.path.join(d, "hv.vmdk"), "w") as f:
                    f.write(desc)
            if flat:
                with open(os.path.join(d, "hv-flat.vmdk"), "wb") as f:
                    f.truncate(2048 * 512)
            return d

        def register_refused(what, vmx, *needles, **kw):
            d = folder(vmx, **kw)
            c.refused(a.ctl("register", d), what, *needles)
            return d

        def sane():
            d = folder(BASE)
            out = a.ok("register", d)
            c.check("registered" in out, "the sane control case was not registered: %s" % out)

        def paths():
            register_refused("../ in a disk file name",
                             BASE.replace('"hv.vmdk"', '"../case01/hv.vmdk"'),
                             "scsi0:0.fileName", "hv.vmx:8", "..")
            register_refused("absolute disk path", BASE.replace('"hv.vmdk"', '"/etc/passwd"'),
                             "scsi0:0.fileName", "absolute path")
            register_refused("subfolder", BASE.replace('"hv.vmdk"', '"sub/hv.vmdk"'),
                             "scsi0:0.fileName", "subfolder")
            register_refused("../ in vmfsd.kernel", BASE + 'vmfsd.kernel = "../../boot/vmlinuz"\n',
                             "vmfsd.kernel", "..")
            register_refused("absolute ISO", BASE + 'ide1:0.present = "TRUE"\n'
                             'ide1:0.deviceType = "cdrom-image"\nide1:0.fileName = "/dev/sda"\n',
                             "ide1:0.fileName", "absolute path")
            register_refused("an empty .vmx", "", "no keys")
            d = folder(BASE + 'ide1:0.present = "TRUE"\nide1:0.deviceType = "cdrom-image"\n'
                       'ide1:0.fileName = "notes.iso"\n')
            with open(os.path.join(d, "notes.iso"), "w") as f:
                f.write("not a disc image\n" * 4000)
            c.refused(a.ctl("power-on", d), "a CD-ROM file that is no ISO", "ide1:0.fileName",
                      "not a CD image")
            register_refused("extent with ..", BASE, "extent", "..",
                             desc=DESC % "../../../../etc/shadow")
            register_refused("absolute extent", BASE, "extent", "absolute path",
                             desc=DESC % "/etc/shadow")

        def symlinks():
            d = folder(BASE.replace('"hv.vmdk"', '"link.vmdk"'))
            os.symlink("/etc/passwd", os.path.join(d, "link.vmdk"))
            c.refused(a.ctl("register", d), "descriptor symlink to /etc/passwd", "link.vmdk",
                      "symbolic link")
            # a flat extent swapped for a symlink to a file outside the folder
            outside = os.path.join(vol.work, "outside.img")
            with open(outside, "wb") as f:
                f.truncate(2048 * 512)
            d = folder(BASE, flat=False)
            os.symlink(outside, os.path.join(d, "hv-flat.vmdk"))
            c.refused(a.ctl("power-on", d), "flat extent symlink", "hv-flat.vmdk", "symbolic link")
            c.check(not os.path.exists(os.path.join(d, "hv.vmx.lck")), "lock record left by a refused power-on")

        def metachars():
            register_refused("$( ) in a file name", BASE.replace('"hv.vmdk"', '"$(reboot).vmdk"'),
                             "scsi0:0.fileName", "character '$'")
            register_refused("; in a file name", BASE.replace('"hv.vmdk"', '"a;rm -rf x.vmdk"'),
                             "scsi0:0.fileName", "character ';'")
            register_refused("backquote in the extent", BASE, "extent", "character '`'",
                             desc=DESC % "`id`-flat.vmdk")
            register_refused("QEMU option syntax in a bridge name",
                             BASE + 'ethernet0.present = "TRUE"\nethernet0.connectionType = "bridged"\n'
                             'ethernet0.networkName = "b0,script=/x"\n',
                             "ethernet0.networkName", "','")
            register_refused("accel with extra words", BASE + 'vmfsd.accel = "kvm -monitor stdio"\n',
                             "vmfsd.accel", "not auto, kvm or tcg")
            register_refused("control character (|0A escape)", BASE + 'displayName = "a|0Ab"\n',
                             "displayName", "control character")

        def unknown_keys():
            register_refused("QEMU-looking unknown key", BASE + 'qemu.args = "-drive file=/etc/shadow"\n',
                             "unknown key 'qemu.args'", "hv.vmx:9")
            register_refused("unknown ethernet key",
                             BASE + 'ethernet0.present = "TRUE"\nethernet0.extraArgs = "-netdev tap,script=/x"\n',
                             "unknown key 'ethernet0.extraArgs'")
            register_refused("unknown vmfsd key", BASE + 'vmfsd.qemuArgs = "-S"\n',
                             "unknown key 'vmfsd.qemuArgs'")
            register_refused("host device pass-through",
                             BASE + 'ide1:0.present = "TRUE"\nide1:0.deviceType = "atapi-cdrom"\n'
                             'ide1:0.fileName = "x.iso"\n', "ide1:0.deviceType", "not passed through")

        def huge_values():
            register_refused("huge numvcpus", BASE.replace('numvcpus = "1"', 'numvcpus = "99999999999999999999"'),
                             "numvcpus", "more than")
            register_refused("memSize not a number", BASE.replace('memSize = "64"', 'memSize = "64M"'),
                             "memSize", "not a number")
            register_refused("value over 1 KiB", BASE + 'annotation = "%s"\n' % ("x" * 2000),
                             "annotation", "longer than")
            register_refused("line over 4 KiB", BASE + "# " + "y" * 10000 + "\n", "hv.vmx:9", "longer than")
            register_refused("file over 256 KiB", BASE + ("# padding\n" * 30000), "larger than")
            register_refused("duplicate key", BASE + 'numvcpus = "2"\n', "numvcpus", "set twice", "line 4")
            register_refused("unquoted value", BASE.replace('numvcpus = "1"', "numvcpus = 1"),
                             "numvcpus", "double quotes")
            register_refused("descriptor too large", BASE, "hv.vmdk", "larger than",
                             desc=DESC % "hv-flat.vmdk" + "#" * 70000 + "\n")
            register_refused("snapshot child disk", BASE, "parentCID",
                             desc=(DESC % "hv-flat.vmdk").replace("parentCID=ffffffff", "parentCID=1234abcd"))
            register_refused("extent larger than the flat file... (too large sector count)", BASE,
                             "extent size", desc=(DESC % "hv-flat.vmdk").replace("RW 2048", "RW 99999999999999999"))

        def limits():
            cpus = os.cpu_count()
            mem = host_mem_mib()
            d = os.path.join(mnt, "toobig")
            r = a.ctl("create", d, "--cpus", cpus + 1, "--memory", 64, "--disk", "1M")
            c.refused(r, "create with more vCPUs than the host", "%d vCPUs" % (cpus + 1),
                      "%d CPUs" % cpus)
            r = a.ctl("create", d, "--cpus", 1, "--memory", mem + 1024, "--disk", "1M")
            c.refused(r, "create with more memory than the host", "MiB of memory", "this host has")
            c.check(not os.path.exists(d), "a refused create left its folder")
            d = folder(BASE.replace('numvcpus = "1"', 'numvcpus = "%d"' % (cpus + 1)))
            c.refused(a.ctl("power-on", d), "power-on with more vCPUs than the host", "this host has %d CPUs" % cpus)
            d = folder(BASE.replace('memSize = "64"', 'memSize = "%d"' % (mem + 1024)))
            c.refused(a.ctl("power-on", d), "power-on with more memory than the host", "this host has")

        c.section("a sane folder registers", sane)
        c.section("paths out of the folder", paths)
        c.section("symbolic links", symlinks)
        c.section("shell and QEMU metacharacters", metachars)
        c.section("unknown keys", unknown_keys)
        c.section("huge and malformed values", huge_values)
        c.section("host limits", limits)

        def no_qemu():
            for d in os.listdir("/proc"):
                if not d.isdigit():
                    continue
                try:
                    with open("/proc/%s/cmdline" % d, "rb") as f:
                        cmd = f.read()
                except OSError:
                    continue
                c.check(not (b"qemu-system" in cmd and vol.work.encode() in cmd),
                        "a QEMU was started for a refused VM: %r" % cmd[:300])
        c.section("no QEMU ran", no_qemu)


vmtest.main("vm-hostile", body)
