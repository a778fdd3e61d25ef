#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Model-checks docs/model/fencing.pml with spin: the design must verify
# (errors: 0), and two broken variants must not (the model can see the
# violations it is there to exclude):
#   M = D                       the margin without slack for the check period
#   MUT_FIRST_BY_ISSUE          an observer that dates a content by the issue
#                               time of the read that first returned it
# Exit 77 (skip) when spin or a C compiler is missing.
set -eu

model=${1:?usage: spin.sh MODEL.pml}
command -v spin >/dev/null 2>&1 || { echo "spin not installed: skip"; exit 77; }
cc=$(command -v cc || command -v gcc || true)
[ -n "$cc" ] || { echo "no C compiler: skip"; exit 77; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$model" "$work/model.pml"
cd "$work"

# check NAME EXPECTED_ERRORS SPIN_FLAGS...
check() {
	name=$1
	want=$2
	shift 2
	rm -f pan pan.* model.pml.trail
	spin "$@" -a model.pml >/dev/null
	"$cc" -O2 -DSAFETY -o pan pan.c
	out=$(./pan -m1000000 2>&1 || true)
	errors=$(printf '%s\n' "$out" | sed -n 's/.*errors: \([0-9]*\).*/\1/p' | head -n1)
	states=$(printf '%s\n' "$out" | sed -n 's/^ *\([0-9.e+]*\) states, stored.*/\1/p' | head -n1)
	printf '%-24s errors: %s (want %s), states stored: %s\n' "$name" "${errors:-?}" "$want" "${states:-?}"
	if [ "${errors:-x}" != "$want" ]; then
		printf '%s\n' "$out"
		return 1
	fi
}

status=0
check design 0 || status=1
check margin-equals-D 1 -DM=2 || status=1
check first-seen-by-issue 1 -DMUT_FIRST_BY_ISSUE || status=1
exit $status
