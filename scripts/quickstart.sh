#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Command 1 of the quick start: from a fresh checkout to a VM running on a
# shared datastore, in one command.  Two hosts, esx1 and esx2, mount one
# volume (two vmfsd processes on one machine, as the tests run them; on real
# hosts each would mount the shared LUN) and each runs its host agent.  A
# small VM (a Debian kernel and a busybox initramfs, under TCG) is created
# and booted on esx1; esx2 lists it as running on esx1 and is refused when
# it tries to start it; then the guest is shut down cleanly.
#
#   scripts/quickstart.sh [IMAGE]     run it (again: the old one is stopped)
#   scripts/quickstart.sh --stop      power off, stop the agents, unmount
#
# IMAGE (or $VMFSD_IMAGE) is the backing file, default var/quickstart.img
# (8 GiB sparse).  It must live on a filesystem that supports O_DIRECT
# (ext4, xfs, btrfs; tmpfs since 6.6).  A block device works too, and is
# then formatted as it is: everything on it is lost.  The two mounts
# (var/esx1, var/esx2) and the agents stay up when the script ends, and
# so does esx1's web client, https://127.0.0.1:8443/ ($VMFSD_WEB_PORT).
set -euo pipefail

cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."
ROOT=$PWD

IMG=${VMFSD_IMAGE:-var/quickstart.img}
IMG_SIZE=${VMFSD_IMAGE_SIZE:-8G}
B=$ROOT/build
GUEST=$B/test-guest
HOSTS=(esx1 esx2)
VM=demo-vm
PIDS=var/quickstart.pids

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
	if ((rc != 0)); then
		echo >&2
		echo "quickstart: FAILED (exit $rc) during: $CURRENT" >&2
		echo "quickstart: logs: var/agent-esx1.log, var/agent-esx2.log; clean up with: $0 --stop" >&2
	fi
}
trap on_exit EXIT

mnt() { echo "$ROOT/var/$1"; }
sock() { echo "/run/vmfs-hostd/$1.sock"; }     # the defaults: vmfsd tells it of a fence
ctl() {                 # ctl HOST ARGS: vmfsctl talking to HOST's agent
	local h=$1
	shift
	printf '    %s$ vmfsctl %s\n' "$h" "$*"
	"$B/vmfsctl/vmfsctl" --agent "$(sock "$h")" "$@"
}
is_mounted() { findmnt -rn --mountpoint "$1" >/dev/null 2>&1; }
wait_until() {          # wait_until SECONDS WHAT COMMAND...
	local t=$1 what=$2
	shift 2
	for ((i = 0; i < t * 5; i++)); do
		"$@" >/dev/null 2>&1 && return 0
		sleep 0.2
	done
	fail "$what: not within $t s"
}

stop_all() {
	local h
	for h in "${HOSTS[@]}"; do      # wherever the demo VM runs now
		if [[ -S $(sock "$h") ]]; then
			"$B/vmfsctl/vmfsctl" --agent "$(sock "$h")" power-off "$(mnt "$h")/$VM" \
				>/dev/null 2>&1 || true
		fi
	done
	if [[ -f $PIDS ]]; then
		# the agents (their QEMUs were powered off above)
		while read -r pid; do kill "$pid" 2>/dev/null || true; done <"$PIDS"
		sleep 1
		rm -f "$PIDS"
	fi
	for h in "${HOSTS[@]}"; do
		if is_mounted "$(mnt "$h")"; then
			fusermount3 -u "$(mnt "$h")" 2>/dev/null || fusermount3 -uz "$(mnt "$h")"
		fi
	done
}

case "${1:-}" in
-h | --help)
	sed -n '4,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
	exit 0
	;;
--stop)
	step "stopping the quickstart: the demo VM, the agents, the mounts"
	stop_all
	echo "    done"
	exit 0
	;;
-*)
	fail "unknown option $1 (try --help)"
	;;
"") ;;
*) IMG=$1 ;;
esac

step "checking build dependencies (scripts/deps.sh)"
scripts/deps.sh

step "building (meson)"
if [[ ! -f build/build.ninja ]]; then
	rm -rf build
	show meson setup build
fi
show meson compile -C build
[[ -e /dev/fuse ]] || fail "/dev/fuse is missing: load the fuse module (modprobe fuse) or run where FUSE is available"

step "the guest: a Debian kernel and a busybox initramfs (scripts/test-guest.sh, cached)"
show scripts/test-guest.sh "$GUEST"

mkdir -p var
if [[ -f $PIDS ]] || is_mounted "$(mnt esx1)" || is_mounted "$(mnt esx2)"; then
	step "stopping the previous quickstart"
	stop_all
fi

if [[ -b $IMG ]]; then
	step "formatting block device $IMG (label quickstart)"
	show "$B/mkfs/mkfs.vmfsd" -f -L quickstart "$IMG"
else
	step "formatting a $IMG_SIZE sparse image $IMG (label quickstart)"
	mkdir -p "$(dirname "$IMG")"
	rm -f "$IMG"
	show "$B/mkfs/mkfs.vmfsd" -f -L quickstart -s "$IMG_SIZE" "$IMG"
fi

step "two hosts mount the one volume, each with its own vmfsd, and start their agents"
mkdir -p /run/vmfs-hostd
: >"$PIDS"
for h in "${HOSTS[@]}"; do
	mkdir -p "$(mnt "$h")"
	show "$B/vmfsd/vmfsd" -o "host=$h" "$(readlink -f "$IMG")" "$(mnt "$h")"
	# the agent: the VMs of host $h, on the datastore mounted as $h
	setsid "$B/vmfs-hostd/vmfs-hostd" --host "$h" --datastore "$(mnt "$h")" \
		</dev/null >"var/agent-$h.log" 2>&1 &
	echo $! >>"$PIDS"
	printf '    (agent of %s: pid %s, log var/agent-%s.log)\n' "$h" "$!" "$h"
done
for h in "${HOSTS[@]}"; do
	wait_until 20 "the agent of $h" test -S "$(sock "$h")"
done
# the browser client of esx1 (docs/webui.md): HTTPS on 127.0.0.1:8443, its
# self-signed certificate and login token made at first start in var/webd
mkdir -p var/webd
setsid "$B/webd/vmfs-webd" --agent "$(sock esx1)" --listen 127.0.0.1 --port "${VMFSD_WEB_PORT:-8443}" \
	--cert var/webd/cert.pem --key var/webd/key.pem --token-file var/webd/token --www webd/www \
	</dev/null >var/webd.log 2>&1 &
echo $! >>"$PIDS"
printf '    (web client of esx1: pid %s, log var/webd.log)\n' "$!"
# listening (a port taken by something else: see var/webd.log, set VMFSD_WEB_PORT)
wait_until 20 "the web client on port ${VMFSD_WEB_PORT:-8443} (var/webd.log)" \
	bash -c "exec 3<>/dev/tcp/127.0.0.1/${VMFSD_WEB_PORT:-8443}"
printf '    $ %s\n' "vmfsd --status $IMG"
"$B/vmfsd/vmfsd" --status "$IMG" | sed -n '/^SLOT/,/^$/p'

step "esx1 creates a VM on the datastore and powers it on"
ctl esx1 create "$(mnt esx1)/$VM" --cpus 1 --memory 128 --disk 256M \
	--kernel "$GUEST/vmlinuz" --initrd "$GUEST/initrd.img" --net none
ctl esx1 power-on "$VM"
echo "    waiting for the guest to boot (TCG, about 5-20 s) ..."
wait_until 120 "the guest's first counter line in $VM.log" \
	grep -q "vmfs-guest: counter" "$(mnt esx1)/$VM/$VM.log"
echo "    the guest's console ($VM/$VM.log on the datastore):"
grep -m 4 "vmfs-guest" "$(mnt esx1)/$VM/$VM.log" | sed 's/^/      /'

# the guest's kernel and initrd on the datastore too: the web client's
# create-VM wizard offers files of the datastore as boot media
mkdir -p "$(mnt esx1)/boot"
cp "$GUEST/vmlinuz" "$GUEST/initrd.img" "$(mnt esx1)/boot/"

step "esx2 sees the VM running on esx1 (every host lists every VM of the datastore)"
ctl esx2 list

step "esx2 tries to start it too: refused, the VM runs on esx1"
if ctl esx2 power-on "$VM"; then
	fail "esx2 started a VM that runs on esx1"
fi

step "esx1 shuts the guest down (ACPI power button)"
ctl esx1 shutdown "$VM"
ctl esx2 list

cat <<EOF

==> done: the datastore $IMG is mounted as host esx1 at var/esx1 and as host
    esx2 at var/esx2; both agents run.  Try next:

    export VMFS_HOSTD_SOCKET=$(sock esx2)      # talk to esx2's agent
    build/vmfsctl/vmfsctl power-on $VM          # now esx2 may start it
    build/vmfsctl/vmfsctl console $VM           # its serial console (Ctrl-] detaches)
    build/vmfsctl/vmfsctl --agent $(sock esx1) info $VM   # esx1's view
    build/vmfsctl/vmfsctl ha status             # HA: hosts, protected VMs (docs/ha.md)
    build/vmfsctl/vmfsctl events                # what esx2's agent did
    build/vmfsd/vmfsd --status $IMG             # hosts and locks on the volume

    The web client (esx1's inventory, VM console, datastore browser):
    open https://127.0.0.1:${VMFSD_WEB_PORT:-8443}/ (accept the self-signed certificate,
    var/webd/cert.pem), user root, password: $(cat var/webd/token)

    Stop everything with:  scripts/quickstart.sh --stop
    More: docs/vm.md (VMs), docs/ha.md (a host dies: its VMs restart elsewhere).
EOF
