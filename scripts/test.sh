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

step "meson test -C build --print-errorlogs $*"
exec meson test -C build --print-errorlogs "$@"
