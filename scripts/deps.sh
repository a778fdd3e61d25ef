#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Installs the Debian 12 packages needed to build, test and benchmark vmfsd.
# Idempotent: asks dpkg which packages are missing and touches apt only when
# something is; so it is cheap to run before every build (quickstart.sh and
# test.sh do).  Installing needs root; when everything is already there it
# runs fine as any user.
set -euo pipefail

PACKAGES=(
	build-essential meson ninja-build pkg-config
	libfuse3-dev fuse3 liburing-dev libblkid-dev libxxhash-dev
	libcriterion-dev python3 fio e2fsprogs util-linux clang
	libjansson-dev qemu-system-x86 qemu-utils busybox-static cpio
	spin gdb attr
	libiscsi-dev libiscsi-bin istgt qemu-block-extra iproute2
	libxml2-dev nettle-dev
	libmicrohttpd-dev libgnutls28-dev chromium chromium-driver python3-selenium
)

die() {
	echo "deps.sh: $*" >&2
	exit 1
}

command -v dpkg-query >/dev/null 2>&1 ||
	die "dpkg-query not found: this script supports Debian 12 (bookworm) and derivatives"

missing=()
for pkg in "${PACKAGES[@]}"; do
	status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
	if [[ "$status" != installed ]]; then
		missing+=("$pkg")
	fi
done

if ((${#missing[@]} == 0)); then
	echo "deps.sh: all ${#PACKAGES[@]} packages present"
	exit 0
fi

echo "deps.sh: missing packages: ${missing[*]}"
if ((EUID != 0)); then
	die "must run as root to install them (try: sudo $0), or install them yourself: apt-get install ${missing[*]}"
fi
command -v apt-get >/dev/null 2>&1 || die "apt-get not found"

apt-get update
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"

# Check again: apt-get can succeed while a package stays half-configured.
still=()
for pkg in "${missing[@]}"; do
	status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
	[[ "$status" == installed ]] || still+=("$pkg")
done
((${#still[@]} == 0)) || die "still not installed after apt-get: ${still[*]}"
echo "deps.sh: installed ${missing[*]}"
