#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Command 1 of the quick start: from a fresh checkout to a mounted vmfsd
# volume holding a thin VM disk, in one command.
#
#   scripts/quickstart.sh [IMAGE]
#
# IMAGE (or $VMFSD_IMAGE) is the backing file, default var/quickstart.img
# (8 GiB sparse; $VMFSD_IMAGE_SIZE changes the size).  It must live on a
# filesystem that supports O_DIRECT (ext4, xfs, btrfs; tmpfs since 6.6).  A block
# device works too, and is then formatted as it is: everything on it is lost.
# The volume stays mounted at var/mnt when the script ends.
set -euo pipefail

cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."
ROOT=$PWD

IMG=${1:-${VMFSD_IMAGE:-var/quickstart.img}}
IMG_SIZE=${VMFSD_IMAGE_SIZE:-8G}
MNT=var/mnt
MKFS=build/mkfs/mkfs.vmfsd
VMFSD=build/vmfsd/vmfsd
HOST=$(hostname 2>/dev/null || uname -n)
VM=demo-vm
DATA_MIB=64             # random data written into the thin disk
OFFSET_MIB=4096         # ... at this offset (4 GiB into a 10 GiB disk)

CURRENT="starting"
step() {
	CURRENT=$*
	printf '\n==> %s\n' "$*"
}
show() {                # prints a command, then runs it
	printf '    $ %s\n' "$*"
	"$@"
}
fail() {
	echo "quickstart: FAILED: $*" >&2
	exit 1
}
on_exit() {
	local rc=$?
	rm -f "${TMPDATA:-}"
	if ((rc != 0)); then
		echo >&2
		echo "quickstart: FAILED (exit $rc) during: $CURRENT" >&2
		if findmnt -rn --mountpoint "$ROOT/$MNT" >/dev/null 2>&1; then
			echo "quickstart: the volume is still mounted; unmount with: fusermount3 -u $MNT" >&2
		fi
	fi
}
trap on_exit EXIT

is_mounted() { findmnt -rn --mountpoint "$ROOT/$MNT" >/dev/null 2>&1; }

case "${1:-}" in
-h | --help)
	sed -n '4,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
	exit 0
	;;
esac

step "checking build dependencies (scripts/deps.sh)"
scripts/deps.sh

step "building (meson)"
if [[ ! -f build/build.ninja ]]; then
	rm -rf build
	show meson setup build
fi
show meson compile -C build
[[ -x $MKFS ]] || fail "$MKFS was not built"
[[ -x $VMFSD ]] || fail "$VMFSD was not built"
[[ -e /dev/fuse ]] || fail "/dev/fuse is missing: load the fuse module (modprobe fuse) or run where FUSE is available"

mkdir -p var "$MNT"
if is_mounted; then
	step "unmounting the previous quickstart volume at $MNT"
	show fusermount3 -u "$MNT" || show fusermount3 -uz "$MNT"
fi

if [[ -b $IMG ]]; then
	step "formatting block device $IMG (label quickstart)"
	show "$MKFS" -f -L quickstart "$IMG"
else
	step "formatting a $IMG_SIZE sparse image $IMG (label quickstart)"
	mkdir -p "$(dirname "$IMG")"
	rm -f "$IMG"
	show "$MKFS" -f -L quickstart -s "$IMG_SIZE" "$IMG"
	show ls -ls "$IMG"
fi

step "mounting it at $MNT as host $HOST"
# Absolute paths: the daemon may change directory, and findmnt shows them.
show "$VMFSD" -o "host=$HOST" "$(readlink -f "$IMG")" "$ROOT/$MNT"
for _ in $(seq 50); do
	is_mounted && break
	sleep 0.1
done
is_mounted || fail "vmfsd did not mount $MNT (run it with -f to see its messages)"
show findmnt --mountpoint "$ROOT/$MNT"

step "creating a VM folder $MNT/$VM with a .vmx, a VMDK descriptor and a thin 10 GiB disk"
mkdir "$MNT/$VM"
cat >"$MNT/$VM/$VM.vmx" <<VMX
.encoding = "UTF-8"
config.version = "8"
displayName = "$VM"
guestOS = "debian12-64"
numvcpus = "2"
memSize = "2048"
scsi0:0.present = "TRUE"
scsi0:0.fileName = "$VM.vmdk"
ethernet0.present = "TRUE"
ethernet0.virtualDev = "virtio"
VMX
cat >"$MNT/$VM/$VM.vmdk" <<VMDK
# Disk DescriptorFile
version=1
CID=fffffffe
parentCID=ffffffff
createType="vmfs"

# Extent description
RW 20971520 VMFS "$VM-flat.vmdk"
VMDK
show truncate -s 10G "$MNT/$VM/$VM-flat.vmdk"

step "writing $DATA_MIB MiB of random data at offset $OFFSET_MIB MiB with O_DIRECT"
TMPDATA=$(mktemp var/quickstart-data.XXXXXX)
head -c "$((DATA_MIB << 20))" /dev/urandom >"$TMPDATA"
show dd if="$TMPDATA" of="$MNT/$VM/$VM-flat.vmdk" bs=1M seek="$OFFSET_MIB" \
	count="$DATA_MIB" oflag=direct conv=notrunc,fsync status=none
want=$(sha256sum <"$TMPDATA" | cut -d' ' -f1)
rm -f "$TMPDATA"

step "reading the range back with O_DIRECT and comparing checksums"
got=$(dd if="$MNT/$VM/$VM-flat.vmdk" bs=1M skip="$OFFSET_MIB" count="$DATA_MIB" \
	iflag=direct status=none | sha256sum | cut -d' ' -f1)
echo "    written: $want"
echo "    read:    $got"
[[ "$want" == "$got" ]] || fail "read-back checksum differs from what was written"
echo "    match"
size=$(stat -c %s "$MNT/$VM/$VM-flat.vmdk")
[[ $size -eq $((10 << 30)) ]] || fail "disk size is $size bytes, expected 10 GiB"

step "thin provisioning: the 10 GiB disk uses only what was written"
show ls -ls "$MNT/$VM"
show du -h --apparent-size "$MNT/$VM"
show du -h "$MNT/$VM"

step "the volume"
show df -h "$MNT"

printf '\n==> done: the volume %s is mounted at %s (host %s)\n' "$IMG" "$MNT" "$HOST"
echo "    unmount it with:  fusermount3 -u $MNT"
