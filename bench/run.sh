#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# vmfsd benchmark: every number is measured in ONE run on THIS machine and
# reported as a ratio against a baseline measured the same way, so that the
# table says how much vmfsd costs, not how fast the machine is.
#
#   bench/run.sh [--append] [--dir DIR] [--size SIZE] [--runtime SEC]
#                [--rounds N] [--sections LIST] [--no-vmfsd] [--keep]
#
#   --append        also append the report to BENCHMARKS.md (date + command)
#   --dir DIR       work folder, on the filesystem to measure (default
#                   var/bench under the project; $VMFSD_BENCH_DIR)
#   --size SIZE     size of the fio test files (default 4G)
#   --runtime SEC   seconds per fio job (default 12)
#   --rounds N      the engines and meta sections measure vmfsd and its
#                   baseline N times, alternated (default 3; the fio jobs
#                   then run --runtime / N seconds each, at least 4)
#   --sections LIST comma-separated subset of: SECTIONS (default: all)
#   --no-vmfsd      baselines only (to check the script or the machine)
#   --keep          leave the volume mounted and the images in place
#
# $VMFSD_MKFS and $VMFSD_BIN measure other binaries (nothing is built then).
# FUSE over io_uring: the run sets the fuse module's enable_uring to Y where
# it can (Linux 6.14 and later, as root), so vmfsd takes its requests through
# io_uring; VMFSD_FUSE_URING=0 leaves the setting alone and mounts vmfsd with
# -o no_fuse_uring (requests through /dev/fuse).  The report says which.
# Section floor mounts build/bench/fuse_floor ($VMFSD_FLOOR), an in-memory
# FUSE filesystem facing the kernel as vmfsd does, and runs the engines and
# meta workloads on it: what any /dev/fuse daemon can reach on this machine.
#
# Sections are shell functions named section_<name> listed in SECTIONS
# below.  To add one (metadata ops vs ext4 on a loop device, fsck vs e2fsck,
# lock latency, failover time): write section_<name>, add <name> to
# SECTIONS, and use the helpers:
#   volume_up            format + mount the vmfsd volume once ($VOL_MNT)
#   track FILE           delete FILE at exit; track_mount DIR unmounts DIR;
#                        at_exit CMD.. runs CMD at exit (e.g. losetup -d)
#   fio_run NAME FILE RW BS QD [FIO ARGS..]  one direct libaio job: "<MB/s> <IOPS>"
#   timeit CMD..         runs CMD, prints its wall time in seconds
#   table TITLE COL..    starts a markdown table; row CELL.. adds a row
#   ratio A B            prints A/B in percent ("n/a" if either is missing)
#   ext4_loop_up IMG MNT a fresh ext4 on a loop device (the metadata baseline)
#   floor_up NAME [ARGS] mounts fuse_floor at $BENCH_DIR/floor-NAME
# A section prints only through table/row/note, so --append gets it too.
set -euo pipefail

cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."
ROOT=$PWD

SECTIONS=(fio engines mixed pagecache mkfs fsck meta floor cluster vmdisk ha migrate)
PY=/usr/bin/python3      # Debian's: the python3 on PATH may be a pyenv shim
MKFS=${VMFSD_MKFS:-$ROOT/build/mkfs/mkfs.vmfsd}
VMFSD=${VMFSD_BIN:-$ROOT/build/vmfsd/vmfsd}

# ---------------------------------------------------------------- options
CMDLINE="bench/run.sh"
for a in "$@"; do CMDLINE+=" $(printf '%q' "$a")"; done

APPEND=0
KEEP=0
NO_VMFSD=0
BENCH_DIR=${VMFSD_BENCH_DIR:-var/bench}
FIO_SIZE=4G
RUNTIME=12
ROUNDS=3
ONLY=""
usage() {
	sed -n '7,26p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' |
		sed "s/SECTIONS (default/${SECTIONS[*]} (default/"
}
while (($#)); do
	case "$1" in
	--append) APPEND=1 ;;
	--keep) KEEP=1 ;;
	--no-vmfsd) NO_VMFSD=1 ;;
	--dir) BENCH_DIR=${2:?--dir needs a folder}; shift ;;
	--size) FIO_SIZE=${2:?--size needs a size}; shift ;;
	--runtime) RUNTIME=${2:?--runtime needs seconds}; shift ;;
	--rounds) ROUNDS=${2:?--rounds needs a count}; shift ;;
	--sections) ONLY=${2:?--sections needs a list}; shift ;;
	-h | --help) usage; exit 0 ;;
	*) echo "bench: unknown option $1" >&2; usage >&2; exit 2 ;;
	esac
	shift
done
[[ $RUNTIME =~ ^[0-9]+$ ]] || { echo "bench: --runtime must be whole seconds" >&2; exit 2; }
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || { echo "bench: --rounds must be a count" >&2; exit 2; }
# seconds per fio job of a round
RRUN=$((RUNTIME / ROUNDS > 4 ? RUNTIME / ROUNDS : 4))
if [[ -n $ONLY ]]; then
	IFS=, read -r -a RUN <<<"$ONLY"
else
	RUN=("${SECTIONS[@]}")
fi

mkdir -p "$BENCH_DIR"
BENCH_DIR=$(readlink -f "$BENCH_DIR")
REPORT=$(mktemp "$BENCH_DIR/report.XXXXXX")
LOG_DIR=$BENCH_DIR/logs
mkdir -p "$LOG_DIR"

# ---------------------------------------------------------------- cleanup
CLEAN_FILES=()
CLEAN_MOUNTS=()
CLEAN_CMDS=()
VMFSD_PID=""
track() { CLEAN_FILES+=("$@"); }
at_exit() { CLEAN_CMDS+=("$(printf '%q ' "$@")"); }
track_mount() { CLEAN_MOUNTS+=("$1"); }
is_mounted() { findmnt -rn --mountpoint "$1" >/dev/null 2>&1; }

# One fio job of the engines table (ENG_TESTS): LABEL FILE, with the
# caller's rw, bs, qd, eng, i (1: MB/s, 2: IOPS) and run (seconds; default
# --runtime); prints that figure.
eng_fio() {
	fio_run "$1" "$2" "$rw" "$bs" "$qd" --ioengine="$eng" --time_based --runtime="${run:-$RUNTIME}" \
		--ramp_time=2 | cut -d' ' -f"$i"
}

# Waits up to 10 s for the daemon PID to mount MNT (sooner if it exits).
wait_mounted() {
	local mnt=$1 pid=$2
	for _ in $(seq 100); do
		is_mounted "$mnt" && return 0
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	is_mounted "$mnt"
}

# vmfsd_start VAR IMG MNT LOG [VMFSD ARGS..]: mounts IMG at MNT with vmfsd
# in the foreground (unmounted at exit, its output appended to LOG), sets
# VAR to its pid and waits for the mount.
vmfsd_start() {
	local -n started_pid=$1
	local img=$2 mnt=$3 log=$4
	shift 4
	mkdir -p "$mnt"
	track_mount "$mnt"
	"$VMFSD" -f "$@" "$img" "$mnt" >>"$log" 2>&1 &
	started_pid=$!
	wait_mounted "$mnt" "$started_pid" || die "vmfsd did not mount $mnt: see $log"
}

# run_words VAR MESSAGE CMD..: runs CMD, dies with MESSAGE if it fails, and
# splits what it printed into the array VAR.
run_words() {
	local -n words_out=$1
	local msg=$2 out
	shift 2
	out=$("$@") || die "$msg"
	# shellcheck disable=SC2034  # a nameref: the caller's array
	read -r -a words_out <<<"$out"
}

cleanup() {
	local rc=$? m f i
	set +e
	trap - EXIT
	if ((KEEP)); then
		((${#CLEAN_MOUNTS[@]})) && echo "bench: --keep: left mounted: ${CLEAN_MOUNTS[*]}" >&2
		((${#CLEAN_FILES[@]})) && echo "bench: --keep: left in place: ${CLEAN_FILES[*]}" >&2
	else
		for ((i = ${#CLEAN_MOUNTS[@]} - 1; i >= 0; i--)); do
			m=${CLEAN_MOUNTS[i]}
			if is_mounted "$m"; then
				fusermount3 -u "$m" 2>/dev/null || umount "$m" 2>/dev/null ||
					fusermount3 -uz "$m" 2>/dev/null || umount -l "$m"
			fi
			rmdir "$m" 2>/dev/null
		done
		if [[ -n $VMFSD_PID ]]; then
			# vmfsd -f exits once unmounted; give it a moment, then stop it.
			for _ in $(seq 50); do kill -0 "$VMFSD_PID" 2>/dev/null || break; sleep 0.1; done
			kill "$VMFSD_PID" 2>/dev/null && wait "$VMFSD_PID" 2>/dev/null
		fi
		for ((i = ${#CLEAN_CMDS[@]} - 1; i >= 0; i--)); do
			eval "${CLEAN_CMDS[i]}"
		done
		for f in "${CLEAN_FILES[@]}"; do rm -f -- "$f"; done
	fi
	rm -f "$REPORT"
	if ((rc == 130)); then
		echo "bench: interrupted; cleaned up; logs in $LOG_DIR" >&2
	elif ((rc != 0)); then
		echo "bench: FAILED (exit $rc); logs in $LOG_DIR" >&2
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

die() { echo "bench: $*" >&2; exit 1; }

# ---------------------------------------------------------------- report
out() { printf '%s\n' "$*" | tee -a "$REPORT"; }
note() { out "$*"; }
table() {
	local title=$1 sep="|" c
	shift
	out ""
	out "### $title"
	out ""
	local hdr="|"
	for c in "$@"; do hdr+=" $c |"; sep+="---|"; done
	out "$hdr"
	out "$sep"
}
row() {
	local line="|" c
	for c in "$@"; do line+=" $c |"; done
	out "$line"
}
ratio() {
	"$PY" - "$1" "$2" <<'PYEOF'
import sys
try:
    a, b = float(sys.argv[1]), float(sys.argv[2])
    print("%.0f %%" % (100.0 * a / b) if b > 0 else "n/a")
except ValueError:
    print("n/a")
PYEOF
}
# "N %" for a number N, n/a otherwise.
pct() { [[ $1 =~ ^[0-9]+$ ]] && echo "$1 %" || echo n/a; }
# paired "V1 V2 .." "B1 B2 ..": vmfsd's and its baseline's figures of
# alternated rounds (round k: Vk and Bk, measured one after the other).
# Prints the baseline's median, vmfsd's median, the median of the rounds'
# ratios Vk / Bk in percent, and those ratios ("61,70,66"); n/a for what
# vmfsd has none of (--no-vmfsd).  The ratio of
# each round's pair, not of the medians: this machine drifts by tens of
# percent over minutes (the raw file's 4 KiB random reads 75-113k IOPS in
# one run), and a pair measured back to back shares most of the drift.
paired() {
	"$PY" - "$1" "$2" <<'PYEOF'
import statistics, sys
try:
    b = [float(x) for x in sys.argv[2].split()]
    assert b and min(b) > 0
except (ValueError, AssertionError):
    print("n/a n/a n/a n/a")
    sys.exit(0)
try:
    v = [float(x) for x in sys.argv[1].split()]
    assert len(v) == len(b)
except (ValueError, AssertionError):
    print("%.0f n/a n/a n/a" % statistics.median(b))     # --no-vmfsd
    sys.exit(0)
r = [100.0 * x / y for x, y in zip(v, b)]
print("%.0f %.0f %.0f %s" % (statistics.median(b), statistics.median(v), statistics.median(r),
                             ",".join("%.0f" % x for x in r)))
PYEOF
}
# Prints the wall-clock seconds CMD took (its output goes to the log).
timeit() {
	local t0 t1
	echo "bench: timing $*" >&2
	t0=$(date +%s.%N)
	"$@" >>"$LOG_DIR/commands.log" 2>&1
	t1=$(date +%s.%N)
	"$PY" -c 'import sys; print("%.3f" % (float(sys.argv[2]) - float(sys.argv[1])))' "$t0" "$t1"
}

# ---------------------------------------------------------------- machine
machine() {
	local mem cpu fsinfo build
	mem=$(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
	cpu=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)
	fsinfo=$(findmnt -rn -o FSTYPE,SOURCE -T "$BENCH_DIR" | sed -n 1p)
	build=$("$PY" - <<'PYEOF' 2>/dev/null || echo "?"
import json, subprocess
opts = json.loads(subprocess.run(["meson", "introspect", "build", "--buildoptions"],
                                 capture_output=True, text=True, check=True).stdout)
print(next(o["value"] for o in opts if o["name"] == "buildtype"))
PYEOF
)
	out "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
	out "- command: \`$CMDLINE\`"
	out "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- 2>/dev/null || echo ' (with local changes)'), meson buildtype $build"
	out "- machine: $(nproc) CPUs ($cpu), $mem RAM, kernel $(uname -r)"
	out "- bench folder: $BENCH_DIR on $fsinfo"
	out "- $(fio --version), $(meson --version | sed 's/^/meson /')"
	out "- FUSE requests: $FUSE_WAY"
}

# ---------------------------------------------------------------- FUSE over io_uring
URING_PARAM=/sys/module/fuse/parameters/enable_uring
VMFSD_OPTS=host=bench
if [[ ${VMFSD_FUSE_URING:-1} == 0 ]]; then
	VMFSD_OPTS+=,no_fuse_uring
	FUSE_WAY="through /dev/fuse (VMFSD_FUSE_URING=0: -o no_fuse_uring)"
elif [[ -w $URING_PARAM ]] && echo Y >"$URING_PARAM" 2>/dev/null; then
	FUSE_WAY="through io_uring where vmfsd's loop serves them ($URING_PARAM set to Y)"
else
	FUSE_WAY="through /dev/fuse (this kernel has no FUSE over io_uring, or $URING_PARAM is not writable)"
fi

# ---------------------------------------------------------------- build
build() {
	if [[ -n ${VMFSD_MKFS:-}${VMFSD_BIN:-} ]]; then
		[[ -x $MKFS && -x $VMFSD ]] || die "$MKFS or $VMFSD is not executable"
		return 0
	fi
	if [[ ! -f build/build.ninja ]]; then
		rm -rf build
		meson setup build >"$LOG_DIR/build.log" 2>&1 ||
			die "meson setup failed: see $LOG_DIR/build.log"
	fi
	meson compile -C build >>"$LOG_DIR/build.log" 2>&1 ||
		die "build failed: see $LOG_DIR/build.log"
	[[ -x $MKFS && -x $VMFSD ]] || die "$MKFS or $VMFSD missing after the build"
}

# ---------------------------------------------------------------- volume
VOL_IMG=$BENCH_DIR/vmfsd.img
VOL_MNT=$BENCH_DIR/mnt
VOL_SIZE=""             # set in volume_up: fio size x max(rounds, 2) + 2 GiB
VOL_UP=0

# Formats an image next to the project and mounts it as host "bench".  The
# image is fallocated, as every raw file here is: a sparse one made each of
# vmfsd's first writes to a region allocate on the host as well, which the
# raw side (unwritten extents, converted on write) never pays, and a volume
# on a LUN never pays either.  Room for first_touch's rounds and the mixed
# section's two files.  vmfsd runs in the foreground (-f) as our child, so
# we know its pid and can stop exactly that process at exit.
volume_up() {
	((VOL_UP)) && return 0
	((NO_VMFSD)) && die "volume_up called with --no-vmfsd"
	local gib
	gib=$(size_bytes "$FIO_SIZE")
	VOL_SIZE=$(((gib * (ROUNDS > 2 ? ROUNDS : 2) >> 30) + 2))G
	is_mounted "$VOL_MNT" && die "$VOL_MNT is already mounted (another bench run?)"
	track "$VOL_IMG"
	rm -f "$VOL_IMG"
	fallocate -l "$VOL_SIZE" "$VOL_IMG" || die "cannot fallocate $VOL_SIZE for $VOL_IMG"
	"$MKFS" -f -q -L bench -s "$VOL_SIZE" "$VOL_IMG" >>"$LOG_DIR/mkfs.log" 2>&1 ||
		die "mkfs.vmfsd failed: see $LOG_DIR/mkfs.log"
	vmfsd_start VMFSD_PID "$VOL_IMG" "$VOL_MNT" "$LOG_DIR/vmfsd.log" -o "$VMFSD_OPTS"
	VOL_UP=1
}

# A new volume, every block of it unwritten on the host: what a first-touch
# measurement needs, since blocks an earlier section wrote and freed would
# be reallocated at the host's overwrite speed, never the raw side's.
volume_fresh() {
	if ((VOL_UP)); then
		umount "$VOL_MNT" || die "cannot unmount $VOL_MNT"
		wait "$VMFSD_PID" 2>/dev/null       # vmfsd -f exits once unmounted
		VMFSD_PID=""
		VOL_UP=0
	fi
	volume_up
}

size_bytes() {
	"$PY" - "$1" <<'PYEOF'
import re, sys
m = re.fullmatch(r"(\d+)([KMGT]?)i?B?", sys.argv[1], re.I)
if not m:
    sys.exit("bad size " + sys.argv[1])
print(int(m.group(1)) << {"": 0, "K": 10, "M": 20, "G": 30, "T": 40}[m.group(2).upper()])
PYEOF
}

# ---------------------------------------------------------------- fio
# fio_run NAME FILE RW BS IODEPTH [extra fio args]: runs one job with direct
# I/O through libaio and prints "<MB/s> <IOPS>" of the job's direction
# (MB = 10^6 bytes).  The JSON is kept in the log folder.
fio_run() {
	local name=$1 file=$2 rw=$3 bs=$4 qd=$5
	shift 5
	local json=$LOG_DIR/fio-$name.json
	echo "bench: fio $name ($rw $bs QD$qd on $file)" >&2
	fio --name="$name" --filename="$file" --rw="$rw" --bs="$bs" --iodepth="$qd" \
		--ioengine=libaio --direct=1 --size="$FIO_SIZE" --fallocate=none \
		--numjobs=1 --randrepeat=0 --norandommap=1 "$@" \
		--output-format=json --output="$json" >>"$LOG_DIR/fio.log" 2>&1 ||
		die "fio $name failed: see $LOG_DIR/fio.log"
	"$PY" - "$json" "$rw" <<'PYEOF'
import json, sys
text = open(sys.argv[1]).read()
job = json.loads(text[text.index("{"):])["jobs"][0]   # skip any warning lines
if job.get("error"):
    sys.exit("fio job error %d" % job["error"])
d = job["write" if "write" in sys.argv[2] else "read"]
print("%.1f %.0f" % (d["bw_bytes"] / 1e6, d["iops"]))
PYEOF
}

# Lays FILE out with one sequential 1 MiB direct write pass so that every
# later job reads and overwrites allocated, written blocks (a thin vmfsd file
# or a fallocated ext4 file would otherwise read unwritten extents as zeros
# without touching the disk).  Prints the MB/s of that first-touch write.
fio_layout() {
	fio_run "$1-layout" "$2" write 1M 16 | cut -d' ' -f1
}

# alternated FN VS BS: ROUNDS rounds of "FN vmfsd K" and "FN raw K", vmfsd
# first in odd rounds so that neither side always runs right after the
# other; their outputs go to the arrays named VS and BS, in round order,
# for `paired` (vmfsd's are n/a with --no-vmfsd).  FN sees its caller's
# locals (the files, the engine, ...).
alternated() {
	local fn=$1 k
	local -n _vs=$2 _bs=$3
	_vs=() _bs=()
	for ((k = 0; k < ROUNDS; k++)); do
		((!NO_VMFSD && k % 2)) && _vs+=("$("$fn" vmfsd "$k")")
		_bs+=("$("$fn" raw "$k")")
		if ((${#_vs[@]} == k)); then
			if ((NO_VMFSD)); then _vs+=(n/a); else _vs+=("$("$fn" vmfsd "$k")"); fi
		fi
	done
}

# Round K of first_touch (its tag, raw, vm): RAW newly fallocated; on
# vmfsd a new thin file, VM itself in the last round.
first_touch_round() {
	local f=$vm
	if [[ $1 == raw ]]; then
		rm -f "$raw"
		fallocate -l "$FIO_SIZE" "$raw"
		f=$raw
	else
		(($2 < ROUNDS - 1)) && f=$vm.round$2
		truncate -s "$FIO_SIZE" "$f"        # thin: first write allocates
	fi
	fio_layout "$tag-$1-$2" "$f"
}

# first_touch TAG RAW VM: the first-touch write (fio_layout) in alternated
# rounds, each on new files, since the host's own speed moves by tens of
# percent from one minute to the next: RAW newly fallocated each round; VM
# (empty: no vmfsd side) a new thin file each round, on a volume the
# caller made with volume_fresh (not here: this runs in a subshell),
# earlier rounds' files kept until the end so that every round allocates
# blocks nothing wrote before.  Leaves RAW and VM laid out for the jobs
# after it; prints what `paired` prints.
first_touch() {
	local tag=$1 raw=$2 vm=$3
	local -a lr lv
	alternated first_touch_round lv lr
	[[ -n $vm ]] && rm -f "$vm".round*
	paired "${lv[*]}" "${lr[*]}"
}

section_fio() {
	local raw=$BENCH_DIR/raw.dat vm="" r v t test rw bs qd unit i
	local -a tests=(
		"1 MiB sequential read, QD16|read|1M|16|MB/s"
		"1 MiB sequential write, QD16|write|1M|16|MB/s"
		"4 KiB random read, QD32|randread|4k|32|IOPS"
		"4 KiB random write, QD32|randwrite|4k|32|IOPS"
	)
	local -a p
	table "fio: file in the vmfsd mount vs preallocated file on the host filesystem (direct=1, libaio, $FIO_SIZE, ${RUNTIME}s each; the first touch in $ROUNDS rounds, the two sides alternated: each side's median, and the median of the rounds' ratios)" \
		test unit "raw file" vmfsd "vmfsd / raw"

	track "$raw"
	if ((!NO_VMFSD)); then
		volume_fresh
		vm=$VOL_MNT/bench-flat.vmdk
	fi
	read -r -a p <<<"$(first_touch ft "$raw" "$vm")"
	row "1 MiB sequential write, first touch (allocating; rounds, vmfsd / raw: ${p[3]} %)" MB/s \
		"${p[0]}" "${p[1]}" "$(pct "${p[2]}")"

	for t in "${tests[@]}"; do
		IFS='|' read -r test rw bs qd unit <<<"$t"
		i=1; [[ $unit == IOPS ]] && i=2
		r=$(fio_run "raw-$rw" "$raw" "$rw" "$bs" "$qd" --time_based --runtime="$RUNTIME" --ramp_time=2 |
			cut -d' ' -f"$i")
		if [[ -n $vm ]]; then
			v=$(fio_run "vmfsd-$rw" "$vm" "$rw" "$bs" "$qd" --time_based --runtime="$RUNTIME" --ramp_time=2 |
				cut -d' ' -f"$i")
		else
			v=n/a
		fi
		row "$test" "$unit" "$r" "$v" "$(ratio "$v" "$r")"
	done
	rm -f "$raw"
	[[ -n $vm ]] && rm -f "$vm"
	return 0
}

# ---------------------------------------------------------------- engines
# The mounted daemon's (or PID's) resident set now and at its peak.
vmfsd_mem() {
	awk '/^VmRSS/ { r = $2 } /^VmHWM/ { h = $2 }
	     END { printf "RSS %d MiB, peak %d MiB", r / 1024, h / 1024 }' "/proc/${1:-$VMFSD_PID}/status"
}

# fio_lat NAME FILE ENGINE: 4 KiB random reads at QD1; prints the median and
# the 99th percentile completion latency (fio's clat: from the submission's
# return to the completion), then the same of the total latency (fio's lat:
# from the submission's start, what the application waits), in
# microseconds.  Both, because they differ where the work sits: a raw file's
# submission does the device's doorbell (tens of µs here, all in slat), a
# FUSE request's returns at once and a fast daemon's reply can be there
# before it returns (a clat of 2 µs).  The caller's run sets the seconds
# (default --runtime).
fio_lat() {
	local json=$LOG_DIR/fio-$1.json
	echo "bench: fio $1 (randread 4k QD1, $3, on $2)" >&2
	fio --name="$1" --filename="$2" --rw=randread --bs=4k --iodepth=1 --ioengine="$3" \
		--direct=1 --size="$FIO_SIZE" --numjobs=1 --randrepeat=0 --norandommap=1 \
		--time_based --runtime="${run:-$RUNTIME}" --ramp_time=2 --lat_percentiles=1 \
		--output-format=json --output="$json" >>"$LOG_DIR/fio.log" 2>&1 ||
		die "fio $1 failed: see $LOG_DIR/fio.log"
	"$PY" - "$json" <<'PYEOF'
import json, sys
text = open(sys.argv[1]).read()
d = json.loads(text[text.index("{"):])["jobs"][0]["read"]
c, t = d["clat_ns"]["percentile"], d["lat_ns"]["percentile"]
print("%.0f %.0f %.0f %.0f" % (c["50.000000"] / 1e3, c["99.000000"] / 1e3,
                               t["50.000000"] / 1e3, t["99.000000"] / 1e3))
PYEOF
}

# The issue-17 table: io_uring and libaio (each hides different costs),
# QD32 random 4 KiB, QD32 1 MiB sequential write, QD1 latency, then the
# daemon's memory after all of it.
# The QD32 jobs of the issue-17 table (also run by section_floor):
# "title|fio rw|block size|queue depth|unit|issue-17 target (percent of raw)".
ENG_TESTS=(
	"4 KiB random read, QD32|randread|4k|32|IOPS|80"
	"4 KiB random write, QD32|randwrite|4k|32|IOPS|80"
	"1 MiB sequential write, QD32|write|1M|32|MB/s|90"
)
# vmfsd's ratios measured by section_engines and section_meta in this run,
# keyed "ENGINE|RW", "ENGINE|lat50", "ENGINE|lat99", "layout", "create",
# "stat" (one pass), "stat3" (three passes), "unlink": section_floor shows
# them next to the floor's.
declare -A VMFSD_RATIO=()

# Column C (from 1) of the lines given, space-separated.
column() { local c=$1; shift; printf '%s\n' "$@" | awk -v c="$c" '{ printf "%s ", $c }'; }

# One round of section_engines' jobs (its eng, rw, bs, qd, raw, vm).
eng_round() {
	local f=$raw
	[[ $1 == vmfsd ]] && f=$vm
	eng_fio "eng-$1-$eng-$rw-$2" "$f"
}
lat_round() {
	local f=$raw
	[[ $1 == vmfsd ]] && f=$vm
	fio_lat "lat-$1-$eng-$2" "$f" "$eng"
}

section_engines() {
	local raw=$BENCH_DIR/eng-raw.dat vm="" r v t test rw bs qd unit i eng j key
	local run=$RRUN
	local -a p lr lv
	table "fio by engine: file in the vmfsd mount vs preallocated file on the host filesystem (direct=1, $FIO_SIZE; $ROUNDS rounds of ${RRUN}s per job, the two sides alternated: each side's median, and the median of the rounds' ratios)" \
		test engine unit "raw file" vmfsd "vmfsd / raw" "rounds, vmfsd / raw (%)"
	track "$raw"
	if ((!NO_VMFSD)); then
		volume_fresh
		vm=$VOL_MNT/eng-flat.vmdk
	fi
	read -r -a p <<<"$(first_touch eng "$raw" "$vm")"
	row "1 MiB sequential write, first touch (allocating), QD16" libaio MB/s "${p[0]}" "${p[1]}" \
		"$(pct "${p[2]}")" "${p[3]}"
	VMFSD_RATIO[layout]=$(pct "${p[2]}")
	for eng in io_uring libaio; do
		for t in "${ENG_TESTS[@]}"; do
			IFS='|' read -r test rw bs qd unit _ <<<"$t"
			i=1; [[ $unit == IOPS ]] && i=2
			alternated eng_round lv lr
			read -r -a p <<<"$(paired "${lv[*]}" "${lr[*]}")"
			row "$test" "$eng" "$unit" "${p[0]}" "${p[1]}" "$(pct "${p[2]}")" "${p[3]}"
			VMFSD_RATIO["$eng|$rw"]=$(pct "${p[2]}")
		done
		alternated lat_round lv lr
		j=1
		for t in "median latency|lat50" "p99 latency|lat99" \
			 "median total latency (slat + clat)|tlat50" "p99 total latency (slat + clat)|tlat99"; do
			IFS='|' read -r test key <<<"$t"
			read -r -a p <<<"$(paired "$(column "$j" "${lv[@]}")" "$(column "$j" "${lr[@]}")")"
			row "4 KiB random read QD1, $test" "$eng" µs "${p[0]}" "${p[1]}" "$(pct "${p[2]}")" "${p[3]}"
			VMFSD_RATIO["$eng|$key"]=$(pct "${p[2]}")
			j=$((j + 1))
		done
	done
	if [[ -n $VMFSD_PID ]]; then
		note ""
		note "vmfsd memory after these jobs: $(vmfsd_mem)"
	fi
	rm -f "$raw"
	[[ -n $vm ]] && rm -f "$vm"
	return 0
}

# ---------------------------------------------------------------- mixed
# One VM reading while another writes and flushes (a guest's fsync): fio
# 4 KiB random reads at QD1 of one file while a second job writes another
# file 1 MiB at QD8 with an fsync every 16 writes, io_uring, both files in
# the vmfsd mount, then both on the host filesystem.  A commit that held
# the metadata lock across the device's flush stalled every read of the
# host for the length of the flush (BENCHMARKS.md, "commits without
# meta_lock"): the reader's mean and tail latency show it.
mix_fio() {
	local json=$LOG_DIR/fio-$1.json
	echo "bench: fio $1 (QD1 reads of $2 while $3 is written with fsyncs)" >&2
	fio --output-format=json --output="$json" --direct=1 --time_based --runtime="$RUNTIME" \
		--size="$FIO_SIZE" --ioengine=io_uring --lat_percentiles=1 --randrepeat=0 \
		--norandommap=1 \
		--name=r --filename="$2" --rw=randread --bs=4k --iodepth=1 \
		--name=w --filename="$3" --rw=write --bs=1M --iodepth=8 --fsync=16 \
		>>"$LOG_DIR/fio.log" 2>&1 || die "fio $1 failed: see $LOG_DIR/fio.log"
	"$PY" - "$json" <<'PYEOF'
import json, sys
text = open(sys.argv[1]).read()
j = json.loads(text[text.index("{"):])["jobs"]
r, w = j[0]["read"], j[1]["write"]
p = r["lat_ns"]["percentile"]
print("%.0f %.0f %.0f %.0f %.0f" % (r["iops"], r["lat_ns"]["mean"] / 1e3, p["99.000000"] / 1e3,
                                    p["99.900000"] / 1e3, w["bw"] / 1024))
PYEOF
}

section_mixed() {
	local ra=$BENCH_DIR/mix-a.dat rb=$BENCH_DIR/mix-b.dat f i
	local -a r v names=("reads" "read latency, mean" "read latency, p99" "read latency, p99.9" "writer")
	local -a units=(IOPS µs µs µs MB/s)
	table "one file read at QD1 while another is written 1 MiB at QD8 with an fsync every 16 writes (io_uring, direct=1, $FIO_SIZE files, ${RUNTIME}s)" \
		test unit "host files" vmfsd "vmfsd / host"
	track "$ra"
	track "$rb"
	for f in "$ra" "$rb"; do
		rm -f "$f"
		fallocate -l "$FIO_SIZE" "$f"
		fio_layout "mix-raw-$(basename "$f" .dat)" "$f" >/dev/null
	done
	read -r -a r <<<"$(mix_fio mix-raw "$ra" "$rb")"
	rm -f "$ra" "$rb"
	v=(n/a n/a n/a n/a n/a)
	if ((!NO_VMFSD)); then
		volume_up
		for f in a b; do
			truncate -s "$FIO_SIZE" "$VOL_MNT/mix-$f.vmdk"
			fio_layout "mix-vmfsd-$f" "$VOL_MNT/mix-$f.vmdk" >/dev/null
		done
		read -r -a v <<<"$(mix_fio mix-vmfsd "$VOL_MNT/mix-a.vmdk" "$VOL_MNT/mix-b.vmdk")"
		rm -f "$VOL_MNT/mix-a.vmdk" "$VOL_MNT/mix-b.vmdk"
	fi
	for i in 0 1 2 3 4; do
		row "${names[$i]}" "${units[$i]}" "${r[$i]}" "${v[$i]}" "$(ratio "${v[$i]}" "${r[$i]}")"
	done
}

# ---------------------------------------------------------------- pagecache
# Buffered (not O_DIRECT) 4 KiB random reads of a 256 MiB file, read once
# first through the same descriptor: files opened without O_DIRECT use the
# page cache (docs/cluster.md 5.1), dropped at each open, so within one
# open the reads should cost what they cost on the host filesystem.  (Not
# fio: it opens the file again after its pre-read, and an open drops the
# cache.)  Also open + read + close of a 2 KiB file (a .vmx): there every
# open starts cold.
section_pagecache() {
	local raw=$BENCH_DIR/pc-raw.dat r v
	table "page cache: buffered reads (3 s each), vmfsd vs a file on the host filesystem" \
		test unit "host file" vmfsd "vmfsd / host"
	track "$raw"
	head -c 256M /dev/urandom >"$raw"
	r=$(hot_reads "$raw")
	v=n/a
	if ((!NO_VMFSD)); then
		volume_up
		cp "$raw" "$VOL_MNT/pc.dat"
		v=$(hot_reads "$VOL_MNT/pc.dat")
	fi
	row "4 KiB random read, QD1, after one pass (same open)" IOPS "$r" "$v" "$(ratio "$v" "$r")"
	head -c 2048 /dev/urandom >"$BENCH_DIR/pc-small.vmx"
	track "$BENCH_DIR/pc-small.vmx"
	r=$(small_reads "$BENCH_DIR/pc-small.vmx")
	v=n/a
	if ((!NO_VMFSD)); then
		cp "$BENCH_DIR/pc-small.vmx" "$VOL_MNT/pc-small.vmx"
		v=$(small_reads "$VOL_MNT/pc-small.vmx")
		rm -f "$VOL_MNT/pc.dat" "$VOL_MNT/pc-small.vmx"
	fi
	row "open + read 2 KiB + close" ops/s "$r" "$v" "$(ratio "$v" "$r")"
	rm -f "$raw"
}

hot_reads() {
	"$PY" - "$1" <<'PYEOF'
import os, random, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY)
size = os.fstat(fd).st_size
while os.read(fd, 1 << 20):
    pass
rng = random.Random(1)
n, t = 0, time.monotonic()
while time.monotonic() - t < 3:
    for _ in range(1000):
        os.pread(fd, 4096, rng.randrange(size // 4096) * 4096)
    n += 1000
print("%.0f" % (n / (time.monotonic() - t)))
PYEOF
}

small_reads() {
	"$PY" - "$1" <<'PYEOF'
import os, sys, time
n, t = 0, time.monotonic()
while time.monotonic() - t < 3:
    for _ in range(200):
        with open(sys.argv[1], "rb") as f:
            f.read()
    n += 200
print("%.0f" % (n / (time.monotonic() - t)))
PYEOF
}

# ---------------------------------------------------------------- mkfs
section_mkfs() {
	local img=$BENCH_DIR/mkfs-15T.img t
	table "mkfs" test seconds
	if ((NO_VMFSD)); then
		row "mkfs.vmfsd -s 15T (fresh sparse file)" n/a
		return 0
	fi
	track "$img"
	rm -f "$img"
	t=$(timeit "$MKFS" -f -q -s 15T "$img") || die "mkfs.vmfsd -s 15T failed: see $LOG_DIR/commands.log"
	row "mkfs.vmfsd -s 15T (fresh sparse file)" "$t"
	rm -f "$img"
}

# ---------------------------------------------------------------- fsck
# fsck.vmfsd -n on a 1 TiB sparse volume holding 10,000 files of 4 KiB in
# 100 folders, against e2fsck -fn on a 1 TiB sparse ext4 image holding the
# same files (mkfs.ext4 -d copies the tree; fsck-tool copy puts it through
# fs/).  Page caches are dropped before each run when we may (root), so
# both checkers read from the disk; each is run three times and the median
# is reported.  (section owned by the fsck work: tests/fsck/, fsck/)
FSCK=${VMFSD_FSCK:-$ROOT/build/fsck/fsck.vmfsd}
FSCK_TOOL=${VMFSD_FSCK_TOOL:-$ROOT/build/tests/fsck/fsck-tool}

fsck_drop_caches() {
	sync
	[[ -w /proc/sys/vm/drop_caches ]] && echo 1 >/proc/sys/vm/drop_caches
	return 0
}

# fsck_median CMD..: the median wall time of three cold runs.
fsck_median() {
	local t a=()
	for _ in 1 2 3; do
		fsck_drop_caches
		t=$(timeit "$@") || return 1
		a+=("$t")
	done
	printf '%s\n' "${a[@]}" | sort -n | sed -n 2p
}

section_fsck() {
	local tree=$BENCH_DIR/fsck-tree vimg=$BENCH_DIR/fsck-vmfsd-1T.img
	local eimg=$BENCH_DIR/fsck-ext4-1T.img tv te cold
	cold="cold cache"
	[[ -w /proc/sys/vm/drop_caches ]] || cold="page cache not dropped (not root)"
	table "fsck: read-only check of a 1 TiB sparse volume with 10,000 files of 4 KiB ($cold, median of 3)" \
		checker seconds "vs e2fsck -fn"
	if ((NO_VMFSD)) || ! command -v mkfs.ext4 >/dev/null || ! command -v e2fsck >/dev/null; then
		row "fsck.vmfsd -n" n/a n/a
		row "e2fsck -fn (ext4)" n/a n/a
		return 0
	fi
	[[ -x $FSCK && -x $FSCK_TOOL ]] || die "$FSCK or $FSCK_TOOL missing after the build"
	track "$vimg" "$eimg"
	rm -rf "$tree" "$vimg" "$eimg"
	at_exit rm -rf "$tree"
	"$PY" - "$tree" <<'PYEOF'
import os, sys
root = sys.argv[1]
for d in range(100):
    p = os.path.join(root, "dir%05d" % d)
    os.makedirs(p)
    for f in range(100):
        with open(os.path.join(p, "file%06d.vmx" % (d * 100 + f)), "wb") as fh:
            fh.write(os.urandom(4096))
PYEOF
	"$MKFS" -f -q -s 1T "$vimg" >"$LOG_DIR/fsck-mkfs.log" 2>&1 ||
		die "mkfs.vmfsd -s 1T failed: see $LOG_DIR/fsck-mkfs.log"
	"$FSCK_TOOL" copy "$vimg" "$tree" >"$LOG_DIR/fsck-copy.log" 2>&1 ||
		die "copying the tree into the volume failed: see $LOG_DIR/fsck-copy.log"
	truncate -s 1T "$eimg"
	mkfs.ext4 -q -F -d "$tree" -E lazy_itable_init=1,lazy_journal_init=1 "$eimg" \
		>"$LOG_DIR/fsck-mkfs-ext4.log" 2>&1 ||
		die "mkfs.ext4 -d failed: see $LOG_DIR/fsck-mkfs-ext4.log"
	tv=$(fsck_median "$FSCK" -n "$vimg") || die "fsck.vmfsd -n failed: see $LOG_DIR/commands.log"
	te=$(fsck_median e2fsck -fn "$eimg") || die "e2fsck -fn failed: see $LOG_DIR/commands.log"
	row "fsck.vmfsd -n" "$tv" "$(ratio "$tv" "$te")"
	row "e2fsck -fn (ext4)" "$te" "100 %"
	rm -rf "$tree" "$vimg" "$eimg"
}


# ---------------------------------------------------------------- metadata
# Creates, stats and unlinks N small files in one directory; prints four
# rates (ops/s): create, stat (one pass, right after the writes), unlink,
# stat in three passes (issue 17's measure: every file three times, the
# rate over all of it).  The same script runs on vmfsd and on ext4.
meta_ops() {
	"$PY" - "$1" "${META_FILES:-5000}" <<'PYEOF'
import os, sys, time
d, n = sys.argv[1], int(sys.argv[2])
os.makedirs(d, exist_ok=True)
rates = []
t = time.monotonic()
for i in range(n):
    fd = os.open(os.path.join(d, "f%06d.vmx" % i), os.O_CREAT | os.O_WRONLY, 0o644)
    os.write(fd, b"x" * 100)
    os.close(fd)
os.sync()
rates.append(n / (time.monotonic() - t))
t = time.monotonic()
for i in range(n):
    os.stat(os.path.join(d, "f%06d.vmx" % i))
first = time.monotonic() - t
rates.append(n / first)
t = time.monotonic()
for p in range(2):
    for i in range(n):
        os.stat(os.path.join(d, "f%06d.vmx" % i))
three = 3 * n / (first + time.monotonic() - t)
t = time.monotonic()
for i in range(n):
    os.unlink(os.path.join(d, "f%06d.vmx" % i))
os.sync()
rates.append(n / (time.monotonic() - t))
rates.append(three)
print(" ".join("%.0f" % r for r in rates))
PYEOF
}

# Durable creates and unlinks, one at a time: N files (META_FSYNC_FILES,
# default 1000) created with 4 KiB written and fsync'd each, then unlinked
# with an fsync of the directory after each; prints the two rates (ops/s).
# Every operation is a commit of its own: the journal's latency, flushes
# and in-place writes, not its batching, decide it.
meta_fsync_ops() {
	"$PY" - "$1" "${META_FSYNC_FILES:-1000}" <<'PYEOF'
import os, sys, time
d, n = sys.argv[1], int(sys.argv[2])
os.makedirs(d, exist_ok=True)
buf = b"y" * 4096
t = time.monotonic()
for i in range(n):
    fd = os.open(os.path.join(d, "s%06d" % i), os.O_CREAT | os.O_WRONLY, 0o644)
    os.write(fd, buf)
    os.fsync(fd)
    os.close(fd)
c = n / (time.monotonic() - t)
dfd = os.open(d, os.O_RDONLY)
t = time.monotonic()
for i in range(n):
    os.unlink(os.path.join(d, "s%06d" % i))
    os.fsync(dfd)
u = n / (time.monotonic() - t)
os.close(dfd)
print("%.0f %.0f" % (c, u))
PYEOF
}

# ext4_loop_up IMG MNT: a fresh 8 GiB sparse ext4 image mounted from a loop
# device at MNT (the metadata baseline); unmounted and deleted at exit.
ext4_loop_up() {
	track "$1"
	truncate -s 8G "$1"
	mkfs.ext4 -q -F "$1" >"$LOG_DIR/mkfs-ext4-$(basename "$1").log" 2>&1 || die "mkfs.ext4 failed"
	mkdir -p "$2"
	mount -o loop "$1" "$2" || die "mounting ext4 on a loop device failed"
	track_mount "$2"
}

# vmfsd's memory with many files, which the kernel keeps looked up (issue
# 17: bounded whatever the file count): a volume of its own, a sparse
# 64 GiB image (131,072 inodes), MANY_FILES (default 100,000) files of
# 100 B created in 10 directories and each stat'ed once; sets MANY_MEM to
# the daemon's memory then.  (Not run in a command substitution: what it
# tracks must reach the exit trap of this shell.)
meta_many_mem() {
	local img=$BENCH_DIR/many.img mnt=$BENCH_DIR/many pid
	track "$img"
	rm -f "$img"
	truncate -s 64G "$img"
	"$MKFS" -f -q -L many "$img" >>"$LOG_DIR/mkfs.log" 2>&1 ||
		die "mkfs.vmfsd failed: see $LOG_DIR/mkfs.log"
	vmfsd_start pid "$img" "$mnt" "$LOG_DIR/vmfsd-many.log" -o "$VMFSD_OPTS"
	"$PY" - "$mnt" "${MANY_FILES:-100000}" <<'PYEOF' || die "many-files workload failed"
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
for k in range(10):
    os.mkdir(os.path.join(d, "d%d" % k))
for i in range(n):
    with open(os.path.join(d, "d%d" % (i % 10), "f%d" % i), "wb") as f:
        f.write(b"x" * 100)
os.sync()
for i in range(n):
    os.stat(os.path.join(d, "d%d" % (i % 10), "f%d" % i))
PYEOF
	MANY_MEM=$(vmfsd_mem "$pid")
	umount "$mnt" || die "cannot unmount $mnt"
	wait "$pid" 2>/dev/null
	rmdir "$mnt"
	rm -f "$img"
}

section_meta() {
	local eimg=$BENCH_DIR/meta-ext4.img emnt=$BENCH_DIR/meta-ext4 vf ef k t test i key
	local -a p lv le
	table "metadata: ${META_FILES:-5000} files (create+write 100 B+close, then sync; stat, one pass then two more; unlink, then sync), ops/s; $ROUNDS rounds, vmfsd and ext4 alternated: each side's median, and the median of the rounds' ratios" \
		operation vmfsd "ext4 (loop device)" ratio "rounds, vmfsd / ext4 (%)"
	((NO_VMFSD)) && { row "all" n/a n/a n/a n/a; return 0; }
	volume_up
	ext4_loop_up "$eimg" "$emnt"
	# a new directory each round, vmfsd first in even rounds
	for ((k = 0; k < ROUNDS; k++)); do
		((k % 2)) && { le+=("$(meta_ops "$emnt/meta-$k")") || die "metadata workload failed on ext4"; }
		lv+=("$(meta_ops "$VOL_MNT/meta-$k")") || die "metadata workload failed on vmfsd"
		((k % 2)) || { le+=("$(meta_ops "$emnt/meta-$k")") || die "metadata workload failed on ext4"; }
	done
	for t in "create|1|create" "stat, one pass right after the writes|2|stat" \
		 "stat, three passes (issue 17's measure)|4|stat3" "unlink|3|unlink"; do
		IFS='|' read -r test i key <<<"$t"
		read -r -a p <<<"$(paired "$(column "$i" "${lv[@]}")" "$(column "$i" "${le[@]}")")"
		row "$test" "${p[1]}" "${p[0]}" "$(pct "${p[2]}")" "${p[3]}"
		VMFSD_RATIO[$key]=$(pct "${p[2]}")
	done
	run_words vf "fsync workload failed on vmfsd" meta_fsync_ops "$VOL_MNT/meta-fsync"
	run_words ef "fsync workload failed on ext4" meta_fsync_ops "$emnt/meta-fsync"
	row "create + 4 KiB write + fsync, one at a time (${META_FSYNC_FILES:-1000} files)" \
		"${vf[0]}" "${ef[0]}" "$(ratio "${vf[0]}" "${ef[0]}")" one
	row "unlink + fsync of the directory, one at a time" "${vf[1]}" "${ef[1]}" \
		"$(ratio "${vf[1]}" "${ef[1]}")" one
	[[ -n $VMFSD_PID ]] && note "" && note "vmfsd memory after the metadata run: $(vmfsd_mem)"
	note ""
	meta_many_mem
	note "vmfsd memory with ${MANY_FILES:-100000} files created and stat'ed (a 64 GiB sparse volume of their own, default -o inode_cache): $MANY_MEM"
	umount "$emnt"
	rm -f "$eimg"
}

# ---------------------------------------------------------------- floor
# What any /dev/fuse daemon can reach here: bench/fuse_floor (built with
# the project, not installed) is an in-memory filesystem facing the kernel
# exactly as vmfsd does (the same mount options, 1 s entry/negative/attribute
# timeouts, direct_io on O_DIRECT opens and the page cache otherwise,
# max_write 1 MiB, async DIO, GETXATTR answered ENODATA), doing no device
# I/O: its reads return zeros, its writes to /big are dropped.  The same
# workloads as the engines and meta sections, with the same helpers and
# parameters, on two mounts (libfuse's multi-threaded loop and -s, its
# single-threaded one: the better of the two is the floor), next to the
# same baselines measured again here; then the FUSE requests each metadata
# operation costs, from the floor's own per-opcode counters.
FLOOR=${VMFSD_FLOOR:-$ROOT/build/bench/fuse_floor}
declare -A FLOOR_PID=()

# floor_up NAME [ARGS..]: mounts fuse_floor ARGS at $BENCH_DIR/floor-NAME
# (its /big is --size bytes), as our child; FLOOR_PID[NAME] is its pid.
floor_up() {
	local name=$1 mnt=$BENCH_DIR/floor-$1 pid
	shift
	[[ -x $FLOOR ]] || die "$FLOOR missing (meson compile -C build)"
	is_mounted "$mnt" && die "$mnt is already mounted (another bench run?)"
	mkdir -p "$mnt"
	track_mount "$mnt"
	rm -f "$LOG_DIR/floor-$name.stats"
	"$FLOOR" --big-size "$(size_bytes "$FIO_SIZE")" --stats "$LOG_DIR/floor-$name.stats" "$@" \
		"$mnt" 2>"$LOG_DIR/floor-$name.log" &
	pid=$!
	at_exit floor_reap "$pid"
	wait_mounted "$mnt" "$pid" || die "fuse_floor did not mount $mnt: see $LOG_DIR/floor-$name.log"
	FLOOR_PID[$name]=$pid
}

# fuse_floor exits once unmounted (it then logs its request counts).
floor_reap() {
	for _ in $(seq 50); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
	kill "$1" 2>/dev/null
	wait "$1" 2>/dev/null
	return 0
}

# floor_reqs DIR N [PID STATS]: create+write 100 B+close N files then sync;
# wait 1.1 s (the 1 s entry and attribute timeouts expire); stat each; stat
# each again at once; once more 1.1 s later; unlink each then sync.  Prints
# one line per phase:
# "phase|ops/s|FUSE requests per file|the requests by opcode", the requests
# counted by fuse_floor PID (SIGUSR1 makes it write its counters to STATS;
# 0.2 s after each phase, so that the asynchronous RELEASE and FORGET of
# that phase are in).  Without PID (ext4) only the rates.
floor_reqs() {
	"$PY" - "$@" <<'PYEOF'
import os, signal, sys, time
d, n = sys.argv[1], int(sys.argv[2])
pid, stats = (int(sys.argv[3]), sys.argv[4]) if len(sys.argv) > 4 else (0, None)

def read_stats():
    c, seq = {}, 0
    try:
        for line in open(stats):
            k, v = line.split()
            if k == "seq":
                seq = int(v)
            elif k != "TOTAL":
                c[k] = int(v)
    except FileNotFoundError:
        pass
    return c, seq

def snap():
    if not pid:
        return {}
    time.sleep(0.2)
    seq0 = read_stats()[1]
    os.kill(pid, signal.SIGUSR1)
    t = time.monotonic()
    while time.monotonic() - t < 10:
        c, seq = read_stats()
        if seq > seq0:
            return c
        time.sleep(0.01)
    sys.exit("fuse_floor did not write its counters")

names = [os.path.join(d, "r%06d.vmx" % i) for i in range(n)]
os.makedirs(d, exist_ok=True)
out, before = [], snap()

def phase(title, fn, then_sync=False):
    global before
    t = time.monotonic()
    for p in names:
        fn(p)
    if then_sync:
        os.sync()
    rate = n / (time.monotonic() - t)
    after = snap()
    diff = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    before = after
    per = sorted(((v / n, k) for k, v in diff.items() if v), reverse=True)
    total = sum(v for v, _ in per)
    detail = ", ".join("%s %.2f" % (k, v) for v, k in per if v >= 0.005)
    out.append("%s|%.0f|%s|%s" % (title, rate, "%.2f" % total if pid else "-", detail or "-"))

def create(p):
    fd = os.open(p, os.O_CREAT | os.O_WRONLY, 0o644)
    os.write(fd, b"x" * 100)
    os.close(fd)

phase("create + write 100 B + close, then sync", create, True)
time.sleep(1.1)
phase("stat, entries expired (1.1 s after the create)", os.stat)
phase("stat again at once (entries cached)", os.stat)
time.sleep(1.1)
phase("stat again 1.1 s later (not written since)", os.stat)
phase("unlink, then sync", os.unlink, True)
print("\n".join(out))
PYEOF
}

# floor_best MODE BASE MT ST TARGET: MODE "high" (throughput: the larger of
# MT and ST is the floor, the target is a minimum percent of BASE) or "low"
# (latency: the smaller, the target is a maximum).  Prints
# "floor|which loop|floor / base|target met|budget", the budget (MODE high
# only, for one-at-a-time operations such as the metadata ones) being the
# µs per operation a daemon may spend on its own work on top of the
# transport and still meet the target (1 / (BASE x TARGET) - 1 / floor;
# negative: out of reach).
floor_best() {
	"$PY" - "$@" <<'PYEOF'
import sys
mode, base, mt, st, target = sys.argv[1:6]
def num(x):
    try:
        return float(x)
    except ValueError:
        return None
base, mt, st, target = num(base), num(mt), num(st), float(target)
cand = [(v, w) for v, w in ((mt, "MT"), (st, "-s")) if v is not None]
if not cand or not base:
    print("n/a|n/a|n/a|n/a|n/a"); sys.exit()
v, w = (max if mode == "high" else min)(cand)
r = 100.0 * v / base
ok = r >= target if mode == "high" else r <= target
budget = "%.0f µs" % (1e6 / (base * target / 100) - 1e6 / v) if mode == "high" and v else "n/a"
print("%g|%s|%.0f %%|%s|%s" % (v, w, r, "yes" if ok else "**no**", budget))
PYEOF
}

section_floor() {
	local raw=$BENCH_DIR/floor-raw.dat eimg=$BENCH_DIR/floor-ext4.img emnt=$BENCH_DIR/floor-ext4
	local mt=$BENCH_DIR/floor-mt st=$BENCH_DIR/floor-st lt=$BENCH_DIR/floor-lt nreq=1000
	local r m s b w pc ok t test rw bs qd unit target i eng line
	local -a e fm fs fl ph
	local -A rate=()
	floor_up mt
	floor_up st -s
	# entries and attributes cached for a minute, as if a daemon kept them
	# for as long as it holds the locks that guard them
	floor_up lt --timeout 60

	# metadata: meta_ops as section_meta runs it, then the request counts
	ext4_loop_up "$eimg" "$emnt"
	run_words e "metadata workload failed on ext4" meta_ops "$emnt/meta"
	run_words fm "metadata workload failed on fuse_floor" meta_ops "$mt/meta"
	run_words fs "metadata workload failed on fuse_floor -s" meta_ops "$st/meta"
	run_words fl "metadata workload failed on fuse_floor --timeout 60" meta_ops "$lt/meta"
	table "FUSE floor, metadata: ${META_FILES:-5000} files as in the meta section (ops/s); fuse_floor (in memory, no I/O) vs ext4 on a loop device" \
		operation "ext4 (loop device)" "floor, MT loop" "floor, -s loop" "best floor / ext4 (loop)" \
		"floor, MT loop, 60 s timeouts / ext4" \
		"vmfsd / ext4 (meta section, this run)" "issue-17 target" "reachable by a /dev/fuse daemon" \
		"daemon's own time per op left at the target"
	for t in "create|20|0|create" "stat, one pass right after the writes|50|1|stat" \
		 "stat, three passes (issue 17's measure)|50|3|stat3" "unlink|20|2|unlink"; do
		IFS='|' read -r test target i key <<<"$t"
		IFS='|' read -r b w r ok pc <<<"$(floor_best high "${e[i]}" "${fm[i]}" "${fs[i]}" "$target")"
		row "$test" "${e[i]}" "${fm[i]}" "${fs[i]}" "$r ($w)" "${fl[i]} ($(ratio "${fl[i]}" "${e[i]}"))" \
			"${VMFSD_RATIO[$key]:-—}" "≥ $target %" "$ok" "$pc"
	done
	while IFS='|' read -r test r _; do rate["ext4|$test"]=$r; done < <(floor_reqs "$emnt/req" "$nreq")
	while IFS='|' read -r test r _; do rate["st|$test"]=$r; done < <(floor_reqs "$st/req" "$nreq" "${FLOOR_PID[st]}" "$LOG_DIR/floor-st.stats")
	mapfile -t ph < <(floor_reqs "$mt/req" "$nreq" "${FLOOR_PID[mt]}" "$LOG_DIR/floor-mt.stats")
	for line in "${ph[@]}"; do
		IFS='|' read -r test r _ <<<"$line"
		rate["mt|$test"]=$r
	done
	# and vmfsd, alone on its volume: what its kept locks guard stays in
	# the kernel's caches past the second (docs/cluster.md §5.4)
	if ((!NO_VMFSD)); then
		volume_up
		# a host learns it is alone from its heartbeat monitor's scans,
		# one a second: not in the first seconds of a mount
		sleep 2.5
		while IFS='|' read -r test r _; do rate["vm|$test"]=$r; done < <(floor_reqs "$VOL_MNT/req" "$nreq")
	fi
	for t in "stat, entries expired (1.1 s after the create)|stat, every entry expired ($nreq files, 1.1 s after creating them)" \
		 "stat again 1.1 s later (not written since)|stat again 1.1 s after that ($nreq files not written since)"; do
		IFS='|' read -r test title <<<"$t"
		for w in ext4 mt st vm; do [[ -n ${rate["$w|$test"]:-} ]] || rate["$w|$test"]=n/a; done
		IFS='|' read -r b w r ok pc <<<"$(floor_best high "${rate["ext4|$test"]}" "${rate["mt|$test"]}" "${rate["st|$test"]}" 50)"
		row "$title" "${rate["ext4|$test"]}" "${rate["mt|$test"]}" "${rate["st|$test"]}" "$r ($w)" "—" \
			"${rate["vm|$test"]} ($(ratio "${rate["vm|$test"]}" "${rate["ext4|$test"]}"), in this section)" \
			"≥ 50 %" "$ok" "$pc"
	done
	note ""
	note "The stat that follows a write asks the daemon once per file whatever the" \
		"timeouts (60 s column): the kernel marks a file's size and times stale after" \
		"every write it passes on, and without the writeback cache (which would make" \
		"it trust its own size over the server's, hiding other hosts' changes) only" \
		"a GETATTR makes them valid again."
	table "FUSE requests per metadata operation (fuse_floor's per-opcode counters, $nreq files in one directory, MT loop)" \
		phase "floor ops/s" "requests per file" "requests per file, by opcode"
	for line in "${ph[@]}"; do
		IFS='|' read -r test r b t <<<"$line"
		row "$test" "$r" "$b" "$t"
	done
	umount "$emnt"
	rm -f "$eimg"

	# fio: the engines section's jobs, raw file vs /big of each floor mount
	table "FUSE floor, fio: the engines section's jobs (direct=1, $FIO_SIZE, ${RUNTIME}s each) on fuse_floor's /big (reads zeros, drops writes) vs a preallocated raw file" \
		test engine unit "raw file" "floor, MT loop" "floor, -s loop" "best floor / raw (loop)" \
		"vmfsd / raw (engines section, this run)" "issue-17 target" "reachable by a /dev/fuse daemon"
	track "$raw"
	rm -f "$raw"
	fallocate -l "$FIO_SIZE" "$raw"
	r=$(fio_layout floor-raw "$raw")
	m=$(fio_layout floor-mt "$mt/big")
	s=$(fio_layout floor-st "$st/big")
	IFS='|' read -r b w t ok _ <<<"$(floor_best high "$r" "$m" "$s" 70)"
	row "1 MiB sequential write, first touch (floor: no allocation), QD16" libaio MB/s "$r" "$m" "$s" \
		"$t ($w)" "${VMFSD_RATIO[layout]:-—}" "≥ 70 %" "$ok"
	for eng in io_uring libaio; do
		for t in "${ENG_TESTS[@]}"; do
			IFS='|' read -r test rw bs qd unit target <<<"$t"
			i=1; [[ $unit == IOPS ]] && i=2
			r=$(eng_fio "floor-raw-$eng-$rw" "$raw")
			m=$(eng_fio "floor-mt-$eng-$rw" "$mt/big")
			s=$(eng_fio "floor-st-$eng-$rw" "$st/big")
			IFS='|' read -r b w pc ok _ <<<"$(floor_best high "$r" "$m" "$s" "$target")"
			row "$test" "$eng" "$unit" "$r" "$m" "$s" "$pc ($w)" "${VMFSD_RATIO["$eng|$rw"]:-—}" "≥ $target %" "$ok"
		done
		read -r -a e <<<"$(fio_lat "floor-lat-raw-$eng" "$raw" "$eng")"
		read -r -a fm <<<"$(fio_lat "floor-lat-mt-$eng" "$mt/big" "$eng")"
		read -r -a fs <<<"$(fio_lat "floor-lat-st-$eng" "$st/big" "$eng")"
		for i in 0 1 2 3; do
			case $i in
			0) test="4 KiB random read QD1, median latency"; t=lat50 ;;
			1) test="4 KiB random read QD1, p99 latency"; t=lat99 ;;
			2) test="4 KiB random read QD1, median total latency (slat + clat)"; t=tlat50 ;;
			3) test="4 KiB random read QD1, p99 total latency (slat + clat)"; t=tlat99 ;;
			esac
			IFS='|' read -r b w pc ok _ <<<"$(floor_best low "${e[i]}" "${fm[i]}" "${fs[i]}" 150)"
			row "$test" "$eng" µs "${e[i]}" "${fm[i]}" "${fs[i]}" "$pc ($w)" "${VMFSD_RATIO["$eng|$t"]:-—}" "≤ 150 %" "$ok"
		done
	done
	rm -f "$raw"
	note ""
	note "Latency: \"latency\" is fio's clat (submission's return to completion; what the engines section has always reported), \"total latency\" its lat (slat + clat: what the application waits for one read at QD1)."
	note ""
	note "MT = libfuse's multi-threaded loop (fuse_session_loop_mt, vmfsd's libfuse settings: up to 96 threads, 16 idle, clone_fd), -s = its single-threaded loop; the better of the two is the floor. fuse_floor's request counts per mount are in the log folder (floor-mt.log, floor-st.log)."
	fusermount3 -u "$mt" 2>/dev/null || true
	fusermount3 -u "$st" 2>/dev/null || true
	return 0
}

# ---------------------------------------------------------------- cluster
# Lock latency (uncontended open(O_RDWR)+close: one ATS to take the inode
# lock, one to release it) and failover: a file held open for writing by
# host A, A killed with SIGKILL, time until host B's open succeeds.  Uses
# the default heartbeat timing (1 s renewals, dead after 10 s).
section_cluster() {
	local img=$BENCH_DIR/cluster.img ma=$BENCH_DIR/ca mb=$BENCH_DIR/cb pa t
	table "cluster: on-disk locks and failover (default heartbeat: 1 s interval, 10 s timeout)" \
		measure value
	((NO_VMFSD)) && { row "all" n/a; return 0; }
	track "$img"
	mkdir -p "$mb"
	"$MKFS" -f -q -s 8G "$img" >"$LOG_DIR/cluster-mkfs.log" 2>&1 || die "mkfs.vmfsd failed"
	vmfsd_start pa "$img" "$ma" "$LOG_DIR/cluster-a.log" -o host=bench-a
	track_mount "$mb"
	"$VMFSD" -o host=bench-b "$img" "$mb" >"$LOG_DIR/cluster-b.log" 2>&1 || die "host b did not mount"
	t=$("$PY" - "$ma/disk.vmdk" <<'PYEOF'
import os, sys, time
p = sys.argv[1]
fd = os.open(p, os.O_CREAT | os.O_RDWR, 0o644); os.close(fd)
n = 500
t = time.monotonic()
for _ in range(n):
    os.close(os.open(p, os.O_RDWR))
print("%.0f" % ((time.monotonic() - t) / n * 1e6))
PYEOF
) || die "lock latency run failed"
	row "open(O_RDWR)+close, uncontended (lock + unlock), µs" "$t"
	t=$("$PY" - "$ma/vm-flat.vmdk" "$mb/vm-flat.vmdk" "$pa" <<'PYEOF'
import os, signal, sys, time
a, b, pid = sys.argv[1], sys.argv[2], int(sys.argv[3])
fd = os.open(a, os.O_CREAT | os.O_RDWR, 0o644)
os.write(fd, b"x" * 4096); os.fsync(fd)
time.sleep(2)
try:
    os.open(b, os.O_RDWR); sys.exit("host b opened a file host a holds")
except OSError:
    pass
os.kill(pid, signal.SIGKILL)
t = time.monotonic()
while True:
    try:
        os.close(os.open(b, os.O_RDWR)); break
    except OSError:
        if time.monotonic() - t > 60: sys.exit("no takeover within 60 s")
        time.sleep(0.05)
print("%.1f" % (time.monotonic() - t))
PYEOF
) || die "failover run failed"
	row "host killed (SIGKILL) to its file opened by a survivor, s" "$t"
	fusermount3 -uz "$ma" 2>/dev/null || true
	fusermount3 -u "$mb" || true
	rm -f "$img"
}

# ---------------------------------------------------------------- vmdisk
# VM disk throughput through QEMU's block layer, as a VM sees it: the flat
# extent of a VM disk in the vmfsd mount vs a preallocated raw file on the
# host filesystem, both with the launcher's settings (raw, cache=none i.e.
# O_DIRECT, io_uring; native AIO where io_uring is refused), measured with
# `qemu-img bench` (QEMU's own block-layer benchmark: no guest, no TCG
# noise).  1 GiB per file, laid out by one write pass first so reads hit
# written blocks.  The 4 KiB test steps 1 MiB + 4 KiB between requests
# (wrapping at the end of the file), which touches every file block.
VMDISK_SIZE_MIB=1024
qbench() {      # qbench FILE ARGS..: prints MB/s (10^6 bytes)
	local file=$1 out secs aio=io_uring
	shift
	qemu-img bench -f raw -t none -i io_uring -c 1 -s 4k "$file" >/dev/null 2>&1 || aio=native
	out=$(qemu-img bench -f raw -t none -i "$aio" "$@" "$file" 2>>"$LOG_DIR/qemu-img.log") ||
		die "qemu-img bench $* $file failed: see $LOG_DIR/qemu-img.log"
	echo "$out" >>"$LOG_DIR/qemu-img.log"
	secs=$(sed -n 's/^Run completed in \([0-9.]*\) seconds.*/\1/p' <<<"$out")
	"$PY" - "$secs" "$@" <<'PYEOF'
import sys
secs = float(sys.argv[1]); a = sys.argv[2:]
count = int(a[a.index("-c") + 1]); size = a[a.index("-s") + 1]
size = int(size[:-1]) << {"k": 10, "M": 20}[size[-1]] if size[-1] in "kM" else int(size)
print("%.1f" % (count * size / secs / 1e6))
PYEOF
}

# Live migration between two hosts of one volume (bench/migrate.py: two
# vmfsd mounts and two agents; an idle and a memory-dirtying 256 MiB TCG
# guest): total time and the guest-seen pause, and where the pause goes.
section_migrate() {
	local line
	command -v qemu-system-x86_64 >/dev/null ||
		{ note "migrate: QEMU not installed (scripts/deps.sh)"; return 0; }
	((NO_VMFSD)) && { note "migrate: needs vmfsd"; return 0; }
	while IFS= read -r line; do out "$line"; done < <(
		VMFSD=$VMFSD MKFS=$MKFS VMFSCTL=$ROOT/build/vmfsctl/vmfsctl \
		VMFS_HOSTD=$ROOT/build/vmfs-hostd/vmfs-hostd \
		TEST_GUEST_SCRIPT=$ROOT/scripts/test-guest.sh TEST_GUEST_DIR=$ROOT/build/test-guest \
		"$PY" "$ROOT/bench/migrate.py" "${MIGRATE_RUNS:-5}")
}

section_vmdisk() {
	local raw=$BENCH_DIR/vmdisk-raw.img vm="" n=$VMDISK_SIZE_MIB t name args unit r v
	local -a tests=(
		"1 MiB sequential write, QD16|MB/s|-w -s 1M -S 1M -d 16 -c $n"
		"1 MiB sequential read, QD16|MB/s|-s 1M -S 1M -d 16 -c $n"
		"4 KiB strided read, QD32|IOPS|-s 4k -S 1052672 -d 32 -c 40000"
		"4 KiB strided write, QD32|IOPS|-w -s 4k -S 1052672 -d 32 -c 40000"
	)
	command -v qemu-img >/dev/null || { note "vmdisk: qemu-img not installed (scripts/deps.sh)"; return 0; }
	table "VM disk through QEMU (qemu-img bench, raw, cache=none, io_uring, ${n} MiB): flat extent in the vmfsd mount vs raw file" \
		test unit "raw file" "vmfsd flat extent" "vmfsd / raw"
	track "$raw"
	rm -f "$raw"
	fallocate -l "${n}M" "$raw"
	r=$(qbench "$raw" -w -s 1M -S 1M -d 16 -c "$n")
	if ((!NO_VMFSD)); then
		volume_fresh            # its first touch: see volume_fresh
		mkdir -p "$VOL_MNT/benchvm"
		vm=$VOL_MNT/benchvm/benchvm-flat.vmdk
		truncate -s "${n}M" "$vm"       # thin, as vmfsctl create makes it
		v=$(qbench "$vm" -w -s 1M -S 1M -d 16 -c "$n")
	else
		v=n/a
	fi
	row "1 MiB sequential write, first touch (allocating), QD16" MB/s "$r" "$v" "$(ratio "$v" "$r")"
	for t in "${tests[@]}"; do
		IFS='|' read -r name unit args <<<"$t"
		# shellcheck disable=SC2086 # args is a word list on purpose
		r=$(qbench "$raw" $args)
		if [[ -n $vm ]]; then
			# shellcheck disable=SC2086
			v=$(qbench "$vm" $args)
		else
			v=n/a
		fi
		if [[ $unit == IOPS ]]; then
			r=$("$PY" -c 'import sys; print("%.0f" % (float(sys.argv[1]) * 1e6 / 4096))' "$r")
			[[ $v != n/a ]] && v=$("$PY" -c 'import sys; print("%.0f" % (float(sys.argv[1]) * 1e6 / 4096))' "$v")
		fi
		row "$name" "$unit" "$r" "$v" "$(ratio "$v" "$r")"
	done
	rm -f "$raw"
	[[ -n $vm ]] && rm -rf "$VOL_MNT/benchvm"
	return 0
}

# HA failover (docs/ha.md): bench/ha.py kills a host running test guests and
# times each VM's return on a survivor, default and short heartbeat
section_ha() {
	local line
	command -v qemu-system-x86_64 >/dev/null || { note "ha: QEMU not installed (scripts/deps.sh)"; return 0; }
	((NO_VMFSD)) && return 0
	table "HA failover: host A (2 test guests) killed as a power loss, 3 hosts; time from the kill (bench/ha.py)" \
		"heartbeat (interval / timeout)" "VMs back" detection replay "lock break" "QEMU start" \
		"first VM running" median "last VM running"
	while IFS= read -r line; do
		[[ $line == \|* ]] && out "$line"
	done < <("$PY" bench/ha.py)
	note ""
	note "Anchors (not measured here): vSphere HA restarts VMs after minutes; Proxmox HA about 2 min; oVirt with sanlock at least 140 s (its host_dead default)."
	return 0
}

# ---------------------------------------------------------------- main
for s in "${RUN[@]}"; do
	declare -F "section_$s" >/dev/null || die "unknown section '$s' (known: ${SECTIONS[*]})"
done
command -v fio >/dev/null || die "fio not found: run scripts/deps.sh"
[[ -x $PY ]] || die "$PY not found: run scripts/deps.sh"
((NO_VMFSD)) || build

out "## vmfsd benchmark, $(date -u "+%Y-%m-%d %H:%M UTC")"
out ""
machine
for s in "${RUN[@]}"; do
	"section_$s"
done

if ((APPEND)); then
	{ echo; cat "$REPORT"; } >>BENCHMARKS.md
	echo
	echo "bench: appended to BENCHMARKS.md"
fi
