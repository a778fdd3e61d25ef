#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Command 2 of the quick start: installs what is missing, builds and runs the
# test suite.  Arguments go to `meson test`, e.g.
#   scripts/test.sh --suite crash
#   scripts/test.sh format            # one test by name
# The build folder is ./build (made on first use, reused afterwards: meson
# reconfigures itself when a meson.build changes).
set -euo pipefail

cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."

step() { printf '\n==> %s\n' "$*"; }

step "checking build dependencies (scripts/deps.sh)"
scripts/deps.sh

if [[ ! -f build/build.ninja ]]; then
	step "meson setup build"
	rm -rf build
	meson setup build
fi

step "meson compile -C build"
meson compile -C build

# FUSE over io_uring (Linux 6.14 and later) is off until the fuse module's
# enable_uring is set; vmfsd uses it where offered, and the suite covers
# both ways (integration-loop mounts with -o no_fuse_uring too).  A setting
# of the running kernel, until reboot: it changes nothing for FUSE servers
# that do not ask for io_uring.
if [[ -w /sys/module/fuse/parameters/enable_uring ]]; then
	step "offering FUSE over io_uring to new mounts (enable_uring=Y)"
	echo Y >/sys/module/fuse/parameters/enable_uring
fi

step "meson test -C build --print-errorlogs $*"
exec meson test -C build --print-errorlogs "$@"
