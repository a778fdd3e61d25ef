#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""OVF and OVA export and import (docs/vm.md "OVF and OVA"), through vmfsctl
and the agent on a real vmfsd mount.

Asserted: a VM (the test guest, direct kernel boot) exported as an OVA
has the descriptor first, then the manifest, then the files in the order
of References, a manifest whose SHA-256 digests match, an OVF 1.x envelope
with the DSP0243 sections; imported back (thin) its disk is byte for byte
the source's and it boots; export of a running, a suspended or a
snapshotted VM, or over an existing file, is refused; exported as an OVF
folder and imported thick it is allocated and identical; a VM with two
disks on two controllers and a CD image is imported eager-zeroed.  An OVF
in VirtualBox's style (OVF 2.0 envelope, vbox/sasd/epasd namespaces, SATA
and IDE controllers, a "SHA1 (file) = hex" manifest at the end of the
archive, a MAC without colons) and one in ovftool's style (OVF 1.0,
"byte * 2^30" capacity, vmw:osType, VirtualSCSI, vmxnet3, vmw:ExtraConfig)
are imported with the hardware mapped and what cannot be mapped reported,
and the ovftool one's disk is booted by the firmware (a boot sector that
writes to the serial port);
so are a GNU tar with "./" names and the descriptor not first, and a pax
archive naming its disk in a pax header.  Hostile packages are refused
with a message naming the problem and leave nothing behind: XXE, entity
expansion, hrefs with ../, an absolute path and a URL, tar members (and a
pax path) escaping the package, a symlink member, a manifest mismatch, an
absurd capacity, a truncated tar, a huge descriptor, a disk that is a VMDK
descriptor text, a VMDK with damaged grains, a dangling fileRef.
`--long` (suite ovf-long): a 2 GiB disk, thin, thick and eager-zeroed.

Registered with meson (suite vm, vm-ovf).
"""

import hashlib
import io
import os
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vmtest  # noqa: E402
from vmtest import MiB, wait_for  # noqa: E402

OVF1 = "http://schemas.dmtf.org/ovf/envelope/1"
# A boot sector that writes "vmfs-mbr\n" to COM1 and halts: the firmware
# booted the disk (xor ax,ax; mov ds,ax; cld; mov dx,0x3f8; mov si,msg;
# loop: lodsb; or al,al; jz done; out dx,al; jmp loop; done: hlt; jmp done)
_CODE = bytes([0x31, 0xC0, 0x8E, 0xD8, 0xFC, 0xBA, 0xF8, 0x03, 0xBE, 0x18, 0x7C, 0xAC, 0x08, 0xC0,
               0x74, 0x03, 0xEE, 0xEB, 0xF8, 0xF4, 0xEB, 0xFD, 0x90, 0x90]) + b"vmfs-mbr\n\0"
MBR = _CODE + bytes(510 - len(_CODE)) + b"\x55\xaa"
PATTERN = [(1 * MiB, 0x5a), (17 * MiB + 4096, 0xa5), (60 * MiB, 0x3c)]


def sha(path, alg="sha256"):
    h = hashlib.new(alg)
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(MiB), b""):
            h.update(b)
    return h.hexdigest()


def write_pattern(path):
    with open(path, "r+b") as f:
        for off, b in PATTERN:
            f.seek(off)
            f.write(bytes([b]) * (256 * 1024))
        os.fsync(f.fileno())


def stream_vmdk(raw, out):
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized",
                    raw, out], check=True, timeout=120)


def make_tar(path, members):
    """members: [(name, bytes or a file path, kind)] in that order; kind
    'file' (default) or 'symlink' (target = the data)."""
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as t:
        for m in members:
            name, data = m[0], m[1]
            kind = m[2] if len(m) > 2 else "file"
            ti = tarfile.TarInfo(name)
            if kind == "symlink":
                ti.type = tarfile.SYMTYPE
                ti.linkname = data
                t.addfile(ti)
                continue
            if isinstance(data, str):
                with open(data, "rb") as f:
                    data = f.read()
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))


def mf_text(entries, alg="SHA256", fmt="%s(%s)= %s\n"):
    """ovftool's lines; VirtualBox's (and openssl dgst's): fmt "%s (%s) = %s\n" """
    return "".join(fmt % (alg, n, hashlib.new(alg.lower(), d).hexdigest()) for n, d in entries).encode()


VBOX_OVF = """<?xml version="1.0"?>
<Envelope ovf:version="2.0" xml:lang="en-US" xmlns="http://schemas.dmtf.org/ovf/envelope/2" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/2" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:vbox="http://www.virtualbox.org/ovf/machine" xmlns:epasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_EthernetPortAllocationSettingData" xmlns:sasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_StorageAllocationSettingData">
  <References>
    <File ovf:id="file1" ovf:href="vbox-disk001.vmdk"/>
  </References>
  <DiskSection>
    <Info>List of the virtual disks used in the package</Info>
    <Disk ovf:capacity="%(cap)d" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized" vbox:uuid="b1d1d6a8-0000-4000-8000-000000000001"/>
  </DiskSection>
  <NetworkSection>
    <Info>Logical networks used in the package</Info>
    <Network ovf:name="NAT">
      <Description>Logical network used by this appliance.</Description>
    </Network>
  </NetworkSection>
  <VirtualSystem ovf:id="vbox vm">
    <Info>A virtual machine</Info>
    <OperatingSystemSection ovf:id="96">
      <Info>The kind of installed guest operating system</Info>
      <Description>Debian_64</Description>
      <vbox:OSType ovf:required="false">Debian_64</vbox:OSType>
    </OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements for a virtual machine</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemIdentifier>vbox vm</vssd:VirtualSystemIdentifier>
        <vssd:VirtualSystemType>virtualbox-2.2</vssd:VirtualSystemType>
      </System>
      <Item>
        <rasd:Caption>2 virtual CPU</rasd:Caption>
        <rasd:Description>Number of virtual CPUs</rasd:Description>
        <rasd:ElementName>2 virtual CPU</rasd:ElementName>
        <rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>2</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:AllocationUnits>MegaBytes</rasd:AllocationUnits>
        <rasd:Caption>256 MB of memory</rasd:Caption>
        <rasd:Description>Memory Size</rasd:Description>
        <rasd:ElementName>256 MB of memory</rasd:ElementName>
        <rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>256</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:Address>0</rasd:Address>
        <rasd:Caption>ideController0</rasd:Caption>
        <rasd:Description>IDE Controller</rasd:Description>
        <rasd:ElementName>ideController0</rasd:ElementName>
        <rasd:InstanceID>3</rasd:InstanceID>
        <rasd:ResourceSubType>PIIX4</rasd:ResourceSubType>
        <rasd:ResourceType>5</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:Address>0</rasd:Address>
        <rasd:Caption>sataController0</rasd:Caption>
        <rasd:Description>SATA Controller</rasd:Description>
        <rasd:ElementName>sataController0</rasd:ElementName>
        <rasd:InstanceID>4</rasd:InstanceID>
        <rasd:ResourceSubType>AHCI</rasd:ResourceSubType>
        <rasd:ResourceType>20</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:AddressOnParent>3</rasd:AddressOnParent>
        <rasd:AutomaticAllocation>false</rasd:AutomaticAllocation>
        <rasd:Caption>sound</rasd:Caption>
        <rasd:Description>Sound Card</rasd:Description>
        <rasd:ElementName>sound</rasd:ElementName>
        <rasd:InstanceID>5</rasd:InstanceID>
        <rasd:ResourceSubType>ensoniq1371</rasd:ResourceSubType>
        <rasd:ResourceType>35</rasd:ResourceType>
      </Item>
      <StorageItem>
        <sasd:AddressOnParent>0</sasd:AddressOnParent>
        <sasd:Caption>disk1</sasd:Caption>
        <sasd:Description>Disk Image</sasd:Description>
        <sasd:ElementName>disk1</sasd:ElementName>
        <sasd:HostResource>/disk/vmdisk1</sasd:HostResource>
        <sasd:InstanceID>6</sasd:InstanceID>
        <sasd:Parent>4</sasd:Parent>
        <sasd:ResourceType>17</sasd:ResourceType>
      </StorageItem>
      <Item>
        <rasd:AddressOnParent>0</rasd:AddressOnParent>
        <rasd:AutomaticAllocation>true</rasd:AutomaticAllocation>
        <rasd:Caption>cdrom1</rasd:Caption>
        <rasd:Description>CD-ROM Drive</rasd:Description>
        <rasd:ElementName>cdrom1</rasd:ElementName>
        <rasd:InstanceID>7</rasd:InstanceID>
        <rasd:Parent>3</rasd:Parent>
        <rasd:ResourceType>15</rasd:ResourceType>
      </Item>
      <EthernetPortItem>
        <epasd:Address>08002712AB34</epasd:Address>
        <epasd:AutomaticAllocation>true</epasd:AutomaticAllocation>
        <epasd:Caption>Ethernet adapter on 'NAT'</epasd:Caption>
        <epasd:Connection>NAT</epasd:Connection>
        <epasd:ElementName>Ethernet adapter on 'NAT'</epasd:ElementName>
        <epasd:InstanceID>8</epasd:InstanceID>
        <epasd:ResourceSubType>E1000</epasd:ResourceSubType>
        <epasd:ResourceType>10</epasd:ResourceType>
      </EthernetPortItem>
    </VirtualHardwareSection>
    <vbox:Machine ovf:required="false" version="1.16-linux" uuid="{b1d1d6a8-0000-4000-8000-000000000002}" name="vbox vm">
      <ovf:Info>Complete VirtualBox machine configuration in VirtualBox format</ovf:Info>
      <Hardware><CPU count="2"/><Memory RAMSize="256"/></Hardware>
    </vbox:Machine>
  </VirtualSystem>
</Envelope>
"""

OVFTOOL_OVF = """<?xml version="1.0" encoding="UTF-8"?>
<!--Generated by VMware ovftool 4.4.3 (build-18663434), UTC time: 2026-11-30T10:12:01.123456Z-->
<Envelope vmw:buildId="build-18663434" xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:cim="http://schemas.dmtf.org/wbem/wscim/1/common" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vmw="http://www.vmware.com/schema/ovf" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <References>
    <File ovf:href="esxvm-disk1.vmdk" ovf:id="file1" ovf:size="%(size)d"/>
  </References>
  <DiskSection>
    <Info>Virtual disk information</Info>
    <Disk ovf:capacity="1" ovf:capacityAllocationUnits="byte * 2^30" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized" ovf:populatedSize="786432"/>
  </DiskSection>
  <NetworkSection>
    <Info>The list of logical networks</Info>
    <Network ovf:name="VM Network">
      <Description>The VM Network network</Description>
    </Network>
  </NetworkSection>
  <VirtualSystem ovf:id="esxvm">
    <Info>A virtual machine</Info>
    <Name>esxvm</Name>
    <OperatingSystemSection ovf:id="96" vmw:osType="debian10_64Guest">
      <Info>The kind of installed guest operating system</Info>
      <Description>Debian GNU/Linux 10 (64-bit)</Description>
    </OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemIdentifier>esxvm</vssd:VirtualSystemIdentifier>
        <vssd:VirtualSystemType>vmx-15</vssd:VirtualSystemType>
      </System>
      <Item>
        <rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits>
        <rasd:Description>Number of Virtual CPUs</rasd:Description>
        <rasd:ElementName>1 virtual CPU(s)</rasd:ElementName>
        <rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>1</rasd:VirtualQuantity>
        <vmw:CoresPerSocket ovf:required="false">1</vmw:CoresPerSocket>
      </Item>
      <Item>
        <rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>
        <rasd:Description>Memory Size</rasd:Description>
        <rasd:ElementName>512MB of memory</rasd:ElementName>
        <rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>512</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:Address>0</rasd:Address>
        <rasd:Description>SCSI Controller</rasd:Description>
        <rasd:ElementName>SCSI Controller 0</rasd:ElementName>
        <rasd:InstanceID>3</rasd:InstanceID>
        <rasd:ResourceSubType>VirtualSCSI</rasd:ResourceSubType>
        <rasd:ResourceType>6</rasd:ResourceType>
      </Item>
      <Item ovf:required="false">
        <rasd:Address>0</rasd:Address>
        <rasd:Description>USB Controller (EHCI)</rasd:Description>
        <rasd:ElementName>USB controller</rasd:ElementName>
        <rasd:InstanceID>4</rasd:InstanceID>
        <rasd:ResourceSubType>vmware.usb.ehci</rasd:ResourceSubType>
        <rasd:ResourceType>23</rasd:ResourceType>
        <vmw:Config ovf:required="false" vmw:key="ehciEnabled" vmw:value="true"/>
      </Item>
      <Item>
        <rasd:AddressOnParent>0</rasd:AddressOnParent>
        <rasd:ElementName>Hard disk 1</rasd:ElementName>
        <rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource>
        <rasd:InstanceID>5</rasd:InstanceID>
        <rasd:Parent>3</rasd:Parent>
        <rasd:ResourceType>17</rasd:ResourceType>
        <vmw:Config ovf:required="false" vmw:key="backing.writeThrough" vmw:value="false"/>
      </Item>
      <Item>
        <rasd:AddressOnParent>7</rasd:AddressOnParent>
        <rasd:AutomaticAllocation>true</rasd:AutomaticAllocation>
        <rasd:Connection>VM Network</rasd:Connection>
        <rasd:Description>VmxNet3 ethernet adapter on &quot;VM Network&quot;</rasd:Description>
        <rasd:ElementName>Network adapter 1</rasd:ElementName>
        <rasd:InstanceID>6</rasd:InstanceID>
        <rasd:ResourceSubType>VmxNet3</rasd:ResourceSubType>
        <rasd:ResourceType>10</rasd:ResourceType>
        <vmw:Config ovf:required="false" vmw:key="wakeOnLanEnabled" vmw:value="true"/>
      </Item>
      <Item ovf:required="false">
        <rasd:ElementName>Video card</rasd:ElementName>
        <rasd:InstanceID>7</rasd:InstanceID>
        <rasd:ResourceType>24</rasd:ResourceType>
        <vmw:Config ovf:required="false" vmw:key="videoRamSizeInKB" vmw:value="4096"/>
      </Item>
      <vmw:Config ovf:required="false" vmw:key="cpuHotAddEnabled" vmw:value="false"/>
      <vmw:Config ovf:required="false" vmw:key="firmware" vmw:value="bios"/>
      <vmw:ExtraConfig ovf:required="false" vmw:key="nvram" vmw:value="esxvm.nvram"/>
      <vmw:ExtraConfig ovf:required="false" vmw:key="svga.autodetect" vmw:value="TRUE"/>
    </VirtualHardwareSection>
    <AnnotationSection ovf:required="false">
      <Info>A human-readable annotation</Info>
      <Annotation>made by hand in ovftool's style</Annotation>
    </AnnotationSection>
  </VirtualSystem>
</Envelope>
"""


def body(c):
    kernel, initrd = vmtest.guest()
    with vmtest.Volume("ovf", size="3G", checker=c) as vol:
        mnt = vol.mount("esx1")
        a = vol.agent("esx1")
        work = vol.work
        vm = os.path.join(mnt, "src")
        a.ok("create", vm, "--cpus", 1, "--memory", vmtest.GUEST_MEM, "--disk", "64M",
             "--kernel", kernel, "--initrd", initrd, "--append", "console=ttyS0 quiet",
             "--guest-os", "debian12-64", "--net", "nat")
        src_flat = os.path.join(vm, "src-flat.vmdk")
        write_pattern(src_flat)
        src_sha = sha(src_flat)
        imported = os.path.join(mnt, "imported")
        os.makedirs(imported)

        state = {"ok_vms": []}

        def leaves_nothing(what):
            c.eq(sorted(os.listdir(imported)), sorted(state["ok_vms"]),
                 "%s: the destination folder changed" % what)

        def export_ova():
            ova = os.path.join(work, "src.ova")
            out = a.ok("--json", "export", vm, ova)
            prog, res = vmtest.json_stream(out)
            c.check(prog and any(p["phase"].startswith("disk") for p in prog),
                    "export: no conversion progress: %s" % prog[-2:])
            with tarfile.open(ova) as t:
                names = t.getnames()
                files = {m.name: t.extractfile(m).read() for m in t.getmembers()}
                c.check(all(m.isreg() for m in t.getmembers()), "OVA members are not all regular files")
            c.eq(names, ["src.ovf", "src.mf", "src-disk1.vmdk", "vmlinuz", "initrd.img"],
                 "OVA member order (descriptor, manifest, References order)")
            mf = files["src.mf"].decode().splitlines()
            c.eq(len(mf), 4, "manifest lines")
            for line in mf:
                n, h = line[len("SHA256("):].split(")= ")
                c.eq(hashlib.sha256(files[n]).hexdigest(), h, "manifest digest of %s" % n)
            env = ET.fromstring(files["src.ovf"])
            c.eq(env.tag, "{%s}Envelope" % OVF1, "root element")
            kids = [k.tag.split("}")[1] for k in env]
            c.eq(kids, ["References", "DiskSection", "NetworkSection", "VirtualSystem"], "Envelope sections")
            rasd = "{http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData}"
            types = [i.find(rasd + "ResourceType").text for i in env.iter("{%s}Item" % OVF1)]
            c.eq(types, ["3", "4", "6", "17", "10"], "VirtualHardwareSection Item types")
            c.check(files["src-disk1.vmdk"][:4] == b"KDMV", "the disk is not a sparse VMDK")
            print("    exported %s: %d bytes, members %s" % (ova, os.path.getsize(ova), names))
            state["ova"] = ova

        def import_ova_boot():
            out = a.ok("--json", "import", state["ova"], imported)
            prog, res = vmtest.json_stream(out)
            dst = os.path.join(imported, "src")
            c.eq(res.get("path"), dst, "import path")
            state["ok_vms"].append("src")
            flat = os.path.join(dst, "src-flat.vmdk")
            c.eq(os.path.getsize(flat), 64 * MiB, "imported disk size")
            c.eq(sha(flat), src_sha, "imported disk content")
            alloc = os.stat(flat).st_blocks * 512
            c.check(alloc <= 8 * MiB, "thin import allocated %d bytes" % alloc)
            with open(os.path.join(dst, "src.vmx")) as f:
                vmx = f.read()
            for want in ('numvcpus = "1"', 'memSize = "%d"' % vmtest.GUEST_MEM, 'guestOS = "debian12-64"',
                         'vmfsd.kernel = "vmlinuz"', 'scsi0:0.fileName = "src.vmdk"',
                         'ethernet0.connectionType = "nat"', 'ethernet0.virtualDev = "vmxnet3"'):
                c.check(want in vmx, "imported .vmx lacks %s:\n%s" % (want, vmx))
            a.ok("power-on", dst)
            n = vmtest.wait_counter(dst, "src", 2)
            print("    imported VM boots: guest counter %d" % n)
            r = a.ctl("export", dst, os.path.join(work, "running.ova"))
            c.refused(r, "export of a running VM", "running")
            c.check(not os.path.exists(os.path.join(work, "running.ova")), "a refused export left a file")
            a.ok("power-off", dst)

        def export_refusals():
            # a suspended VM (its .vmss)
            path = os.path.join(vm, "src.vmss")
            with open(path, "w") as f:
                f.write("")
            c.refused(a.ctl("export", vm, os.path.join(work, "refused.ova")), "export: suspended",
                      "suspended")
            os.unlink(path)
            c.check(not os.path.exists(os.path.join(work, "refused.ova")), "a refused export left a file")
            # one with a snapshot (a delta over its disk), until it is consolidated
            a.ok("snapshot", "create", vm, "before")
            c.refused(a.ctl("export", vm, os.path.join(work, "refused.ova")), "export: snapshots",
                      "snapshots")
            c.check(not os.path.exists(os.path.join(work, "refused.ova")), "a refused export left a file")
            a.ok("snapshot", "delete", vm, "--all")
            c.refused(a.ctl("export", vm, state["ova"]), "export over an existing file", "already exists")

        def export_dir_import_thick():
            d = os.path.join(work, "srcdir")
            a.ok("export", vm, d)
            c.eq(sorted(os.listdir(d)), sorted(["src.ovf", "src.mf", "src-disk1.vmdk", "vmlinuz", "initrd.img"]),
                 "OVF folder files")
            out = a.ok("import", os.path.join(d, "src.ovf"), os.path.join(imported, "thick"),
                       "--provisioning", "thick")
            print("    " + out.strip().splitlines()[0])
            state["ok_vms"].append("thick")
            flat = os.path.join(imported, "thick", "thick-flat.vmdk")
            c.eq(sha(flat), src_sha, "thick import content")
            c.check(os.stat(flat).st_blocks * 512 >= 64 * MiB, "thick import not allocated")
            c.eq(a.info(os.path.join(imported, "thick"))["disks"][0]["provisioning"], "thick", "info provisioning")

        def multi_disk_iso():
            # two disks on two controllers and a CD image, imported eager-zeroed
            mvm = os.path.join(mnt, "multi")
            iso = os.path.join(work, "tools.iso")
            with open(iso, "wb") as f:
                f.write(bytes(32768) + b"\x01CD001\x01" + bytes(2041) + os.urandom(30 * 2048))
            a.ok("create", mvm, "--cpus", 2, "--memory", 128, "--disk", "16M", "--iso", iso, "--net", "none")
            with open(os.path.join(mvm, "multi-flat.vmdk"), "r+b") as f:
                f.seek(9 * MiB)
                f.write(os.urandom(MiB))
            with open(os.path.join(mvm, "multi_1-flat.vmdk"), "wb") as f:
                f.truncate(8 * MiB)
                f.seek(5 * MiB)
                f.write(os.urandom(MiB))
            with open(os.path.join(mvm, "multi_1.vmdk"), "w") as f:
                f.write('# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\n'
                        'createType="vmfs"\nRW 16384 VMFS "multi_1-flat.vmdk"\n'
                        'ddb.adapterType = "lsilogic"\n')
            with open(os.path.join(mvm, "multi.vmx"), "a") as f:
                f.write('sata0.present = "TRUE"\nsata0:1.present = "TRUE"\nsata0:1.fileName = "multi_1.vmdk"\n')
            ova = os.path.join(work, "multi.ova")
            a.ok("export", mvm, ova)
            with tarfile.open(ova) as t:
                c.eq(t.getnames(), ["multi.ovf", "multi.mf", "multi-disk1.vmdk", "multi-disk2.vmdk",
                                    "tools.iso"], "multi-disk OVA members")
            out = a.ok("--json", "import", ova, imported, "--name", "multi2", "--provisioning", "eagerzeroed")
            dst = os.path.join(imported, "multi2")
            state["ok_vms"].append("multi2")
            for s_, d_ in (("multi-flat.vmdk", "multi2-flat.vmdk"), ("multi_1-flat.vmdk", "multi2_1-flat.vmdk"),
                           ("tools.iso", "tools.iso")):
                c.eq(sha(os.path.join(dst, d_)), sha(os.path.join(mvm, s_)), "multi-disk import: %s" % d_)
            for d_, size in (("multi2-flat.vmdk", 16 * MiB), ("multi2_1-flat.vmdk", 8 * MiB)):
                c.check(os.stat(os.path.join(dst, d_)).st_blocks * 512 >= size, "%s not eager-zeroed" % d_)
            i = a.info(dst)
            c.eq(len(i["disks"]), 3, "multi-disk import: disks in info: %s" % i["disks"])
            with open(os.path.join(dst, "multi2.vmx")) as f:
                vmx = f.read()
            for want in ('sata0:1.fileName = "multi2_1.vmdk"', 'ide1:0.deviceType = "cdrom-image"',
                         'ide1:0.fileName = "tools.iso"', 'numvcpus = "2"'):
                c.check(want in vmx, "multi-disk import .vmx lacks %s:\n%s" % (want, vmx))

        raw = os.path.join(work, "pattern.raw")
        with open(raw, "wb") as f:
            f.truncate(64 * MiB)
        write_pattern(raw)
        raw_sha = sha(raw)

        def virtualbox_style():
            vmdk = os.path.join(work, "vbox-disk001.vmdk")
            stream_vmdk(raw, vmdk)
            ovf = (VBOX_OVF % {"cap": 64 * MiB}).encode()
            with open(vmdk, "rb") as f:
                disk = f.read()
            ova = os.path.join(work, "vbox.ova")
            # VirtualBox: descriptor, disks, then the manifest (SHA1 in 4.x)
            make_tar(ova, [("vbox.ovf", ovf), ("vbox-disk001.vmdk", disk),
                           ("vbox.mf", mf_text([("vbox.ovf", ovf), ("vbox-disk001.vmdk", disk)], "SHA1",
                                               "%s (%s) = %s\n"))])
            out = a.ok("--json", "import", ova, imported)
            _, res = vmtest.json_stream(out)
            dst = os.path.join(imported, "vbox_vm")
            c.eq(res.get("path"), dst, "VirtualBox import path (name sanitized)")
            c.eq(res.get("ovf_version"), 2, "OVF 2.0 envelope")
            state["ok_vms"].append("vbox_vm")
            nm = res.get("not_mapped", "")
            c.check("sound card" in nm and "CD-ROM" in nm, "not_mapped: %s" % nm)
            with open(os.path.join(dst, "vbox_vm.vmx")) as f:
                vmx = f.read()
            for want in ('numvcpus = "2"', 'memSize = "256"', 'guestOS = "Debian_64"',
                         'sata0:0.fileName = "vbox_vm.vmdk"', 'ethernet0.virtualDev = "e1000"',
                         'ethernet0.address = "08:00:27:12:AB:34"'):
                c.check(want in vmx, "VirtualBox import .vmx lacks %s:\n%s" % (want, vmx))
            c.eq(sha(os.path.join(dst, "vbox_vm-flat.vmdk")), raw_sha, "VirtualBox import content")
            print("    VirtualBox OVA imported; not mapped: %s" % nm)

        def ovftool_style():
            d = os.path.join(work, "esx")
            os.makedirs(d)
            big = os.path.join(work, "big.raw")
            with open(big, "wb") as f:
                f.truncate(1 << 30)
            with open(big, "r+b") as f:
                f.write(MBR)
                f.seek(700 * MiB)
                f.write(b"\x77" * MiB)
            vmdk = os.path.join(d, "esxvm-disk1.vmdk")
            stream_vmdk(big, vmdk)
            ovf = (OVFTOOL_OVF % {"size": os.path.getsize(vmdk)}).encode()
            with open(os.path.join(d, "esxvm.ovf"), "wb") as f:
                f.write(ovf)
            with open(vmdk, "rb") as f:
                disk = f.read()
            with open(os.path.join(d, "esxvm.mf"), "wb") as f:
                f.write(mf_text([("esxvm.ovf", ovf), ("esxvm-disk1.vmdk", disk)]))
            out = a.ok("--json", "import", os.path.join(d, "esxvm.ovf"), imported, "--name", "esx-copy")
            _, res = vmtest.json_stream(out)
            dst = os.path.join(imported, "esx-copy")
            state["ok_vms"].append("esx-copy")
            with open(os.path.join(dst, "esx-copy.vmx")) as f:
                vmx = f.read()
            for want in ('guestOS = "debian10-64"', 'scsi0.virtualDev = "pvscsi"', 'memSize = "512"',
                         'ethernet0.virtualDev = "vmxnet3"', 'scsi0:0.fileName = "esx-copy.vmdk"'):
                c.check(want in vmx, "ovftool import .vmx lacks %s:\n%s" % (want, vmx))
            nm = res.get("not_mapped", "")
            c.check("USB controller" in nm and "video card" in nm and "nvram" in nm, "not_mapped: %s" % nm)
            c.check(any("VM Network" in w for w in res.get("warnings", [])), "no network warning: %s" % res)
            flat = os.path.join(dst, "esx-copy-flat.vmdk")
            c.eq(os.path.getsize(flat), 1 << 30, "byte * 2^30 capacity")
            with open(flat, "rb") as f:   # the data, and holes reading as zeros around it
                for off, want in ((0, MBR + bytes(MiB - 512)), (700 * MiB, b"\x77" * MiB), (701 * MiB, bytes(MiB)),
                                  ((1 << 30) - MiB, bytes(MiB))):
                    f.seek(off)
                    c.eq(f.read(MiB) == want, True, "ovftool import content at %d" % off)
            print("    ovftool OVF imported (1 GiB disk, %d KiB allocated)" % (os.stat(flat).st_blocks // 2))
            # no direct kernel boot: the firmware boots the imported disk
            a.ok("power-on", dst)
            wait_for(lambda: "vmfs-mbr" in vmtest.read_log(dst, "esx-copy"), 60,
                            "the imported disk's boot sector on the serial port", step=0.3)
            a.ok("power-off", dst)
            print("    the firmware booted the imported disk")

        def hostile():
            vmdk = os.path.join(work, "vbox-disk001.vmdk")
            with open(vmdk, "rb") as f:
                disk = f.read()
            good = (VBOX_OVF % {"cap": 64 * MiB})

            def ova_of(name, ovf, members=None, mf=True, alg="SHA256"):
                if isinstance(ovf, str):
                    ovf = ovf.encode()
                path = os.path.join(work, name + ".ova")
                m = members if members is not None else [("vbox-disk001.vmdk", disk)]
                lst = [("h.ovf", ovf)] + m
                if mf:
                    lst.append(("h.mf", mf_text([("h.ovf", ovf)] + [x for x in m if len(x) == 2], alg)))
                make_tar(path, lst)
                return path

            def refused(path, what, *needles):
                c.refused(a.ctl("import", path, imported, "--name", "bad"), what, *needles)
                leaves_nothing(what)

            xxe = good.replace('<?xml version="1.0"?>',
                               '<?xml version="1.0"?>\n<!DOCTYPE Envelope [<!ENTITY x SYSTEM "file:///etc/passwd">]>')
            xxe = xxe.replace('<Info>A virtual machine</Info>', '<Info>A virtual machine</Info><Name>&x;</Name>')
            refused(ova_of("xxe", xxe), "XXE", "DOCTYPE")
            lol = '<!DOCTYPE Envelope [<!ENTITY a "aaaaaaaaaa">' + "".join(
                '<!ENTITY %s "%s">' % (chr(98 + i), ("&%s;" % chr(97 + i)) * 10) for i in range(9)) + "]>"
            bomb = good.replace('<?xml version="1.0"?>', '<?xml version="1.0"?>\n' + lol)
            bomb = bomb.replace("<Info>A virtual machine</Info>", "<Info>&j;</Info>")
            refused(ova_of("bomb", bomb), "entity expansion bomb", "DOCTYPE")
            refused(ova_of("dotdot", good.replace('ovf:href="vbox-disk001.vmdk"', 'ovf:href="../../etc/passwd"')),
                    "href with ../", "leaves the package")
            refused(ova_of("abs", good.replace('ovf:href="vbox-disk001.vmdk"', 'ovf:href="/etc/passwd"')),
                    "absolute href", "leaves the package")
            refused(ova_of("url", good.replace('ovf:href="vbox-disk001.vmdk"',
                                               'ovf:href="http://203.0.113.1/x.vmdk"')), "URL href", "URL")
            refused(ova_of("escape", good, [("../vbox-disk001.vmdk", disk)]), "tar member ../", "not a plain file name")
            refused(ova_of("symlink", good, [("vbox-disk001.vmdk", "/etc/passwd", "symlink")], mf=False),
                    "symlink member", "not a regular file")
            p = ova_of("mismatch", good)
            with open(p, "r+b") as f:     # one byte of the disk's data, inside the archive
                f.seek(3 * 512 + len(disk) // 2)
                b = f.read(1)
                f.seek(-1, 1)
                f.write(bytes([b[0] ^ 0xff]))
            refused(p, "manifest mismatch", "digest mismatch", "vbox-disk001.vmdk")
            refused(ova_of("cap", good.replace('ovf:capacity="%d"' % (64 * MiB),
                                               'ovf:capacity="1" ovf:capacityAllocationUnits="byte * 2^60"')),
                    "absurd capacity", "capacity", "out of range")
            p = ova_of("trunc", good)
            with open(p, "r+b") as f:
                f.truncate(os.path.getsize(p) // 2)
            refused(p, "truncated tar", "truncated")
            huge = good.replace("<References>", "<!--" + "x" * (5 * MiB) + "--><References>")
            refused(ova_of("huge", huge), "huge descriptor", "larger than")
            desc = b'# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType="monolithicFlat"\nRW 8 FLAT "/etc/passwd" 0\n'
            desc += b"\n" * (2048 - len(desc))
            refused(ova_of("desc", good, [("vbox-disk001.vmdk", desc)]), "a VMDK descriptor as disk",
                    "not a sparse VMDK")
            bad = bytearray(disk)          # compressed grains damaged (no manifest to catch it)
            bad[len(bad) // 2:len(bad) // 2 + 65536] = b"\xff" * 65536
            refused(ova_of("damaged", good, [("vbox-disk001.vmdk", bytes(bad))], mf=False),
                    "a damaged VMDK", "qemu-img convert failed", "disk 1")
            # accepted variants: GNU tar, "./" member names, descriptor not first
            p = os.path.join(work, "gnu.ova")
            ovf = good.encode()
            with tarfile.open(p, "w", format=tarfile.GNU_FORMAT) as t:
                for n, d in (("./vbox-disk001.vmdk", disk), ("./h.ovf", ovf),
                             ("./h.mf", mf_text([("h.ovf", ovf), ("vbox-disk001.vmdk", disk)]))):
                    ti = tarfile.TarInfo(n)
                    ti.size = len(d)
                    t.addfile(ti, io.BytesIO(d))
            out = a.ok("--json", "import", p, imported, "--name", "gnu")
            _, res = vmtest.json_stream(out)
            state["ok_vms"].append("gnu")
            c.check(any("not the archive's first member" in w for w in res.get("warnings", [])),
                    "no warning for a descriptor that is not first: %s" % res.get("warnings"))
            # pax headers: their path names the member (a long name), and is checked like any name
            def pax_ova(name, disk_path):
                p = os.path.join(work, name + ".ova")
                ovf = good.encode()
                with tarfile.open(p, "w", format=tarfile.PAX_FORMAT) as t:
                    for n, d, px in (("h.ovf", ovf, {}), ("short", disk, {"path": disk_path, "mtime": "1"})):
                        ti = tarfile.TarInfo(n)
                        ti.size = len(d)
                        ti.pax_headers = px
                        t.addfile(ti, io.BytesIO(d))
                return p
            a.ok("import", pax_ova("pax", "vbox-disk001.vmdk"), imported, "--name", "pax")
            state["ok_vms"].append("pax")
            refused(pax_ova("paxescape", "../vbox-disk001.vmdk"), "pax path ../", "not a plain file name")
            refused(ova_of("nomf", good.replace('ovf:fileRef="file1"', 'ovf:fileRef="file9"')),
                    "unknown fileRef", "DiskSection/Disk vmdisk1", "not in References")

        for f in (export_ova, export_refusals, import_ova_boot, export_dir_import_thick, multi_disk_iso, virtualbox_style, ovftool_style, hostile):
            t0 = time.monotonic()
            f()
            print("  %s: %.1f s" % (f.__name__, time.monotonic() - t0), flush=True)


def body_long(c):
    """A 2 GiB disk with 512 MiB of random data in 64 runs exported and
    imported three times (thin, thick, eager-zeroed), each identical;
    prints the rates (`meson test -C build --suite ovf-long`)."""
    with vmtest.Volume("ovflong", size="12G", checker=c) as vol:
        mnt = vol.mount("esx1")
        a = vol.agent("esx1")
        vm = os.path.join(mnt, "big")
        a.ok("create", vm, "--cpus", 1, "--memory", 64, "--disk", "2G", "--net", "none")
        flat = os.path.join(vm, "big-flat.vmdk")
        with open(flat, "r+b") as f:
            for i in range(64):
                f.seek(i * 32 * MiB + (i % 7) * 4096)
                f.write(os.urandom(8 * MiB))
            os.fsync(f.fileno())
        want = sha(flat)
        ova = os.path.join(vol.work, "big.ova")
        t0 = time.monotonic()
        a.ok("export", vm, ova, timeout=1800)
        dt = time.monotonic() - t0
        print("    export: 512 MiB of data in %.1f s (%.0f MiB/s), OVA %d MiB" % (
            dt, 512 / dt, os.path.getsize(ova) >> 20))
        for prov in ("thin", "thick", "eagerzeroed"):
            t0 = time.monotonic()
            a.ok("import", ova, os.path.join(mnt, "imp-" + prov), "--provisioning", prov, timeout=1800)
            dt = time.monotonic() - t0
            got = os.path.join(mnt, "imp-" + prov, "imp-%s-flat.vmdk" % prov)
            c.eq(sha(got), want, "%s import content" % prov)
            alloc = os.stat(got).st_blocks * 512
            if prov == "thin":
                c.check(alloc < 600 * MiB, "thin import allocated %d MiB" % (alloc >> 20))
            else:
                c.check(alloc >= 2048 * MiB, "%s import allocated %d MiB" % (prov, alloc >> 20))
            print("    import %s: %.1f s (%.0f MiB/s of data), %d MiB allocated" % (
                prov, dt, 512 / dt, alloc >> 20))


if __name__ == "__main__":
    if "--long" in sys.argv:
        vmtest.main("vm-ovf-long", body_long)
    else:
        vmtest.main("vm-ovf", body)
