#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Builds the tiny test guest of the VM tests into DIR: DIR/vmlinuz (a Debian
# 6.1 kernel), DIR/vmlinux (the same kernel uncompressed, booted by QEMU
# through its PVH entry: 3.5 s quicker under TCG; see below) and
# DIR/initrd.img (busybox-static + the virtio block modules + an /init that
# counts on /dev/vda).  Installs what it needs (busybox-static,
# cpio, xz-utils) with apt-get, and caches: when DIR already holds both files
# built by the same version of this script, it returns at once.
#
#   scripts/test-guest.sh [--force] DIR
#
# The guest, booted with `-kernel vmlinuz|vmlinux -initrd initrd.img -append
# console=ttyS0` and one virtio disk:
#   - prints "vmfs-guest: ..." progress lines on ttyS0;
#   - reads the record at sector 0 of /dev/vda ("VMFSCOUNT <n> <boot-id>"),
#     prints "vmfs-guest: previous counter <n>" (-1 on a blank disk);
#   - every 0.5 s (vmfs.period=S on the kernel command line: every S s, e.g.
#     0.1) writes "VMFSCOUNT <n> <boot> <unix time>" to sector 0 and prints
#     "vmfs-guest: counter <n+1>", ...  (dd oflag=direct conv=fsync: on the
#     disk the moment it is printed);
#   - each boot takes the next run index r from sector 1 ("VMFSRUN r boot")
#     and also writes "VMFSSEQ <n> <boot> <r> <time>" at sector
#     2048 + (r % 16) * 4096 + n % 4096: a per-run write log, so a late
#     write of an older run (a host that should be dead) stays visible;
#   - on the ACPI power button (QMP system_powerdown) prints
#     "vmfs-guest: acpi power button", syncs and powers off;
#   - powers off at once when the kernel command line has vmfs.count=N and
#     the counter reaches N (a boot-and-exit smoke run);
#   - with vmfs.fill=M on the kernel command line, first writes M MiB of a
#     non-zero pattern to /dev/vda from 1 MiB on, each MiB with
#     conv=fsync, prints "vmfs-guest: fill done M MiB" and only then starts
#     counting (the full-datastore test: the thin extent must grow);
#   - with vmfs.panic_after=N on the kernel command line, prints
#     "vmfs-guest: panicking" after writing N counters in this boot (0: before
#     the first) and panics the kernel (sysrq 'c'): the pvpanic driver tells
#     QEMU (GUEST_PANICKED; the agent runs QEMU with -device pvpanic and
#     -action panic=pause).  Without the flag nothing changes.
#   - with vmfs.dirty=M, rewrites the same M MiB of RAM in a loop while it
#     counts (a guest that dirties memory: the live-migration benchmark).
# Module load order (docs/vm.md "The test guest", seen with linux-image-6.1.0-*-amd64 and
# busybox 1.35): virtio_ring, virtio, virtio_pci_modern_dev,
# virtio_pci_legacy_dev, virtio_pci, virtio_blk; virtio needs a symbol from
# virtio_ring, so any other order fails.  Then pvpanic (the core) and its
# bus drivers pvpanic-mmio (the ISA device QEMU's `-device pvpanic` makes,
# found through ACPI as QEMU0001) and pvpanic-pci: both depend on pvpanic
# (modinfo of linux-image-6.1.0-57-amd64); they are optional here, a kernel
# without them builds a guest that cannot report a panic.
set -euo pipefail

GUEST_VERSION=8     # bump when the initramfs contents change (invalidates caches)
prog=test-guest.sh

die() {
	echo "$prog: $*" >&2
	exit 1
}
usage() {
	sed -n '9p' "${BASH_SOURCE[0]}" | sed 's/^# *//'
}

FORCE=0
DIR=""
while (($#)); do
	case "$1" in
	--force) FORCE=1 ;;
	-h | --help) usage; exit 0 ;;
	-*) usage >&2; die "unknown option $1" ;;
	*) [[ -z $DIR ]] || die "only one DIR"; DIR=$1 ;;
	esac
	shift
done
[[ -n $DIR ]] || { usage >&2; exit 2; }

mkdir -p "$DIR"
DIR=$(readlink -f "$DIR")
STAMP=$DIR/.test-guest-version
if ((!FORCE)) && [[ -s $DIR/vmlinuz && -s $DIR/initrd.img && -f $STAMP ]] &&
	[[ $(cat "$STAMP") == "$GUEST_VERSION" ]]; then
	exit 0
fi

# Serialize concurrent builds into the same folder (two test runs at once).
exec 9>"$DIR/.lock"
flock 9
if ((!FORCE)) && [[ -s $DIR/vmlinuz && -s $DIR/initrd.img && -f $STAMP ]] &&
	[[ $(cat "$STAMP") == "$GUEST_VERSION" ]]; then
	exit 0
fi

# Under pipefail, `producer | grep -q` fails now and then: grep exits at its
# first match, the producer's next write gets SIGPIPE and the pipeline's
# status is 141 (busybox --list did so in 5 of 50 runs, which sent an offline
# machine to apt-get).  So every check below captures the producer's output
# first and matches it with a here-string: no pipe, no race.
has_line() {    # has_line WORD TEXT: TEXT has a line that is exactly WORD
	grep -qxF -- "$1" <<<"$2"
}
has_text() {    # has_text WORD TEXT: TEXT contains WORD
	grep -qF -- "$1" <<<"$2"
}
need=()
[[ -x /bin/busybox ]] && has_line acpid "$(/bin/busybox --list 2>/dev/null)" &&
	has_line installed "$(dpkg-query -W -f='${db:Status-Status}' busybox-static 2>/dev/null)" ||
	need+=(busybox-static)
command -v cpio >/dev/null || need+=(cpio)
if ((${#need[@]})); then
	((EUID == 0)) || die "needs ${need[*]}: run as root or apt-get install ${need[*]}"
	echo "$prog: installing ${need[*]}" >&2
	apt-get update -qq >/dev/null || die "apt-get update failed"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		"${need[@]}" >/dev/null || die "apt-get install ${need[*]} failed"
fi
BUSYBOX=/bin/busybox
has_text 'statically linked' "$(file -b "$BUSYBOX" 2>/dev/null)" ||
	has_text 'not a dynamic' "$(ldd "$BUSYBOX" 2>&1)" ||
	die "$BUSYBOX is not the static busybox (package busybox-static)"

WORK=$(mktemp -d "$DIR/.build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# The newest linux-image-6.1.0-N-amd64 that apt knows (versions sort by N).
pkg=$(apt-cache pkgnames linux-image-6.1.0- 2>/dev/null |
	grep -E '^linux-image-6\.1\.0-[0-9]+-amd64$' | sort -t- -k5,5n | tail -n1 || true)
if [[ -z $pkg ]]; then
	((EUID == 0)) && apt-get update -qq >/dev/null 2>&1
	pkg=$(apt-cache pkgnames linux-image-6.1.0- 2>/dev/null |
		grep -E '^linux-image-6\.1\.0-[0-9]+-amd64$' | sort -t- -k5,5n | tail -n1 || true)
fi
[[ -n $pkg ]] || die "apt-cache knows no linux-image-6.1.0-*-amd64 (run apt-get update)"
echo "$prog: kernel package $pkg" >&2
(cd "$WORK" && apt-get download -qq "$pkg" >/dev/null 2>&1) ||
	die "apt-get download $pkg failed"
deb=$(ls "$WORK"/*.deb)
mkdir "$WORK/k"
dpkg -x "$deb" "$WORK/k"
kver=${pkg#linux-image-}
vmlinuz=$WORK/k/boot/vmlinuz-$kver
[[ -f $vmlinuz ]] || die "no boot/vmlinuz-$kver in $deb"
moddir=$WORK/k/lib/modules/$kver/kernel

R=$WORK/root
mkdir -p "$R"/{bin,dev,proc,sys,tmp,modules,etc}
cp "$BUSYBOX" "$R/bin/busybox"
MODS=(virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk evdev button
	pvpanic pvpanic-mmio pvpanic-pci)
OPTIONAL_MODS=" pvpanic pvpanic-mmio pvpanic-pci "
for m in "${MODS[@]}"; do
	f=$(find "$moddir" \( -name "$m.ko" -o -name "$m.ko.xz" -o -name "$m.ko.zst" \) -print -quit)
	if [[ -z $f ]]; then
		# Built into the kernel (no module): nothing to load.
		grep -q "/$m.ko" "$WORK/k/lib/modules/$kver/modules.builtin" 2>/dev/null ||
			[[ $OPTIONAL_MODS == *" $m "* ]] ||
			die "module $m not found in $pkg"
		continue
	fi
	# Debian's 6.1 modules are not compressed; newer kernels' may be
	case $f in
	*.xz)
		command -v xz >/dev/null || die "$f is xz-compressed: apt-get install xz-utils"
		xz -dc "$f" >"$R/modules/$m.ko" ;;
	*.zst)
		command -v zstd >/dev/null || die "$f is zstd-compressed: apt-get install zstd"
		zstd -qdc "$f" >"$R/modules/$m.ko" ;;
	*) cp "$f" "$R/modules/$m.ko" ;;
	esac
done

cat >"$R/init" <<'INIT'
#!/bin/busybox sh
# /init of the vmfsd test guest (built by scripts/test-guest.sh).
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null || mdev -s
exec >/dev/ttyS0 2>&1 </dev/null
say() { echo "vmfs-guest: $*"; }
say "init started (kernel $(uname -r))"
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk \
	evdev button pvpanic pvpanic-mmio pvpanic-pci; do
	[ -f /modules/$m.ko ] || continue
	insmod /modules/$m.ko || say "insmod $m failed"
done
say "modules loaded"
limit=""
fill=""
dirty=""
period=0.5
panic_after=""
for a in $(cat /proc/cmdline); do
	case $a in
	vmfs.count=*) limit=${a#vmfs.count=} ;;
	vmfs.panic_after=*) panic_after=${a#vmfs.panic_after=} ;;
	vmfs.fill=*) fill=${a#vmfs.fill=} ;;
	vmfs.dirty=*) dirty=${a#vmfs.dirty=} ;;
	vmfs.period=*) period=${a#vmfs.period=} ;;
	esac
done

off() {
	say "syncing and powering off"
	sync
	poweroff -f
}
# ACPI power button (QMP system_powerdown): the kernel's button driver
# reports it as KEY_POWER on an evdev input device; busybox acpid maps that
# to the event "PWRF" and runs /etc/acpi/PWRF/00000080 (its built-in table),
# which signals this shell, which syncs and powers off.
mkdir -p /etc/acpi/PWRF
printf '#!/bin/sh\necho "vmfs-guest: acpi power button" >/dev/ttyS0\nkill -USR1 1\n' \
	>/etc/acpi/PWRF/00000080
chmod +x /etc/acpi/PWRF/00000080
i=0
while ! ls /dev/input/event* >/dev/null 2>&1 && [ $i -lt 20 ]; do sleep 0.1; i=$((i + 1)); done
acpid -c /etc/acpi -l /tmp/acpid.log || say "acpid failed to start"
trap off USR1 TERM

i=0
while [ ! -b /dev/vda ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
if [ ! -b /dev/vda ]; then
	say "no /dev/vda"
	while :; do sleep 1; done
fi
rec=$(dd if=/dev/vda bs=512 count=1 2>/dev/null | tr -d '\000' | sed -n 1p)
set -- $rec
n=-1
if [ "$1" = VMFSCOUNT ] && [ -n "$2" ]; then n=$2; fi
boot=$(cat /proc/sys/kernel/random/boot_id 2>/dev/null | cut -c1-8)
# the run index at sector 1: each boot writes its own log of records
# (VMFSSEQ n boot run time) at 2048 + (run % 16) * 4096 + n % 4096, so a
# write of an older run that lands late stays visible (tests/vm/test_ha.py)
rec=$(dd if=/dev/vda bs=512 skip=1 count=1 2>/dev/null | tr -d '\000' | sed -n 1p)
set -- $rec
run=0
if [ "$1" = VMFSRUN ] && [ -n "$2" ]; then run=$(($2 + 1)); fi
printf 'VMFSRUN %d %s\n' "$run" "$boot" |
	dd of=/dev/vda bs=512 seek=1 count=1 conv=sync,fsync oflag=direct 2>/dev/null
base=$((2048 + (run % 16) * 4096))
say "previous counter $n"
say "up, boot $boot run $run"
if [ -n "$fill" ]; then
	dd if=/dev/zero bs=1048576 count=1 2>/dev/null | tr '\000' 'v' >/tmp/blk
	say "fill start $fill MiB"
	k=1
	while [ $k -le "$fill" ]; do
		dd if=/tmp/blk of=/dev/vda bs=1048576 seek=$k count=1 conv=fsync 2>/dev/null ||
			say "fill write $k failed"
		k=$((k + 1))
	done
	say "fill done $fill MiB"
fi
if [ -n "$dirty" ]; then
	# rewrite the same M MiB of RAM (a file in the initramfs) for ever:
	# a guest that keeps dirtying memory, for the migration benchmark
	say "dirtying $dirty MiB"
	(while :; do dd if=/dev/zero of=/tmp/dirty bs=1048576 count="$dirty" conv=notrunc \
		2>/dev/null; done) &
fi
panic_now() {
	say "panicking"
	echo c >/proc/sysrq-trigger
}
written=0
while :; do
	if [ -n "$panic_after" ] && [ "$written" -ge "$panic_after" ]; then panic_now; fi
	n=$((n + 1))
	written=$((written + 1))
	t=$(date +%s)
	# O_DIRECT and fsync: on the disk when dd returns, no guest cache
	printf 'VMFSCOUNT %d %s %s\n' "$n" "$boot" "$t" |
		dd of=/dev/vda bs=512 count=1 conv=sync,fsync oflag=direct 2>/dev/null
	printf 'VMFSSEQ %d %s %d %s\n' "$n" "$boot" "$run" "$t" |
		dd of=/dev/vda bs=512 seek=$((base + n % 4096)) count=1 conv=sync,fsync oflag=direct 2>/dev/null
	say "counter $n"
	if [ -n "$limit" ] && [ "$n" -ge "$limit" ]; then off; fi
	# sleep in the background and wait, so the USR1 trap runs at once
	sleep "$period" &
	wait $!
done
INIT
chmod +x "$R/init"

(cd "$R" && find . | LC_ALL=C sort | cpio -o -H newc --quiet | gzip -1) >"$WORK/initrd.img"

# DIR/vmlinux: the same kernel, uncompressed (the ELF inside the bzImage),
# which QEMU boots through its PVH entry point.  Why: under TCG the bzImage's
# own xz decompressor ran 3.5 s of every boot before the kernel's first line
# (measured from SeaBIOS's first line: the guest's counter 0 at 6.1 s with
# vmlinuz, at 2.6 s with vmlinux; QEMU 7.2, q35, 2-core machine), and the
# default VM tests boot dozens of guests.
# Made only when the payload is xz (Debian's amd64 kernels) and the ELF
# carries the PVH note (Xen note 18, XEN_ELFNOTE_PHYS32_ENTRY: CONFIG_PVH),
# without which QEMU refuses an uncompressed kernel; otherwise there is no
# vmlinux and the tests boot vmlinuz (tests/vm/vmtest.py guest()).
rm -f "$DIR/vmlinux"
if command -v python3 >/dev/null; then
	python3 - "$vmlinuz" "$WORK/vmlinux" <<'PY' || echo "$prog: no vmlinux (the tests boot vmlinuz)" >&2
import lzma, struct, sys
src, dst = sys.argv[1], sys.argv[2]
data = open(src, "rb").read()
at = data.find(b"\xfd7zXZ\x00")
if at < 0:
    sys.exit("%s: no xz payload" % src)
elf = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data[at:])
if elf[:4] != b"\x7fELF" or elf[4] != 2:
    sys.exit("%s: the payload is not a 64-bit ELF" % src)
phoff, = struct.unpack_from("<Q", elf, 0x20)
phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
pvh = False
for i in range(phnum):
    ptype, _, off, _, _, filesz = struct.unpack_from("<IIQQQQ", elf, phoff + i * phentsize)
    pos, end = off, off + filesz
    while ptype == 4 and pos + 12 <= end:         # PT_NOTE
        namesz, descsz, ntype = struct.unpack_from("<III", elf, pos)
        name = elf[pos + 12:pos + 12 + namesz]
        pvh |= name == b"Xen\x00" and ntype == 18
        pos += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
if not pvh:
    sys.exit("%s: no PVH entry note (CONFIG_PVH)" % src)
open(dst, "wb").write(elf)
PY
fi
[[ -s $WORK/vmlinux ]] && install -m 644 "$WORK/vmlinux" "$DIR/vmlinux.tmp"
install -m 644 "$vmlinuz" "$DIR/vmlinuz.tmp"
install -m 644 "$WORK/initrd.img" "$DIR/initrd.img.tmp"
mv -f "$DIR/vmlinuz.tmp" "$DIR/vmlinuz"
[[ -s $DIR/vmlinux.tmp ]] && mv -f "$DIR/vmlinux.tmp" "$DIR/vmlinux"
mv -f "$DIR/initrd.img.tmp" "$DIR/initrd.img"
echo "$pkg" >"$DIR/kernel-package"
echo "$GUEST_VERSION" >"$STAMP"
echo "$prog: built $DIR/vmlinuz ($pkg)$([[ -s $DIR/vmlinux ]] && echo ", its vmlinux") and $DIR/initrd.img" >&2
