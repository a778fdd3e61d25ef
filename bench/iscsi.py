#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""vmfsd over iSCSI: what a volume on a SAN LUN costs, measured in one run
on this machine against QEMU's own libiscsi driver on the same target.

A SAN is built the way the tests build it (tests/iscsi/san.py): Debian's
istgt in its own network namespace exporting a sparse file, each host a
network namespace with a veth to the target's bridge.

  bench/iscsi.py [--append] [--sections io,scale] [--runtime SEC]
                 [--hosts 1,8,32]

  io     fio (direct=1, libaio, QD16) on a 1 GiB file in a vmfsd mount on
         LUN 0, against `qemu-img bench` (raw, cache=none, QD16) on LUN 1 of
         the same target (same backing filesystem): 1 MiB sequential and
         4 KiB random (a 1 MiB + 4 KiB stride for qemu-img, which has no
         random mode), and 4 KiB in that same stride on both sides, read
         and write; the two alternate, three rounds.  Also the CPU time
         per I/O of each side (qemu-img; vmfsd plus fio, whose system time
         holds the kernel's FUSE work): on a loaded machine throughput
         follows the share of CPU a side gets, its CPU cost does not.
  scale  N hosts (namespaces) mount one LUN, for each N of --hosts: mount
         time of each host, uncontended lock latency (open O_RDWR + close of
         a file nobody else holds: one lock acquire and one release, each an
         ATS) on one host, and heartbeat traffic on the SAN per second with
         every host idle (bytes through the target's bridge).

--append also appends the report to BENCHMARKS.md.  Needs root, istgt,
qemu-block-extra and fio (scripts/deps.sh).
"""
import argparse
import datetime
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "iscsi"))
import san  # noqa: E402

TOOL = os.environ.get("ISCSI_TOOL", os.path.join(ROOT, "build/tests/iscsi/iscsi_tool"))
MKFS = os.environ.get("VMFSD_MKFS", os.path.join(ROOT, "build/mkfs/mkfs.vmfsd"))
VMFSD = os.environ.get("VMFSD_BIN", os.path.join(ROOT, "build/vmfsd/vmfsd"))
OUT = []


def out(line=""):
    print(line, flush=True)
    OUT.append(line)


def table(title, cols):
    out()
    out("### " + title)
    out()
    out("| " + " | ".join(cols) + " |")
    out("|" + "---|" * len(cols))


def row(cells):
    out("| " + " | ".join(str(c) for c in cells) + " |")


def pct(a, b):
    return "%.0f %%" % (100.0 * a / b) if a and b else "n/a"


def unmount(mnt):
    for _ in range(20):
        if subprocess.run(["fusermount3", "-u", mnt], capture_output=True).returncode == 0:
            return
        time.sleep(0.3)
    subprocess.run(["fusermount3", "-uz", mnt], capture_output=True)


def mount(h, url, mnt, name):
    r = h.run([VMFSD, "-o", "host=" + name, url, mnt], timeout=300)
    if r.returncode:
        raise RuntimeError("mount %s: %s" % (name, r.stderr.strip()))


def child_cpu():
    """CPU seconds (user + system) of the children waited for so far."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def proc_cpu(pid):
    """CPU seconds (user + system) of process PID so far."""
    with open("/proc/%d/stat" % pid) as f:
        st = f.read().rsplit(")", 1)[1].split()
    return (int(st[11]) + int(st[12])) / os.sysconf("SC_CLK_TCK")


def vmfsd_pid(mnt):
    """The pid of the vmfsd serving MNT (it detached from the shell)."""
    for p in os.listdir("/proc"):
        try:
            with open("/proc/%s/cmdline" % p, "rb") as f:
                argv = f.read().split(b"\0")
        except (OSError, ValueError):
            continue
        if os.path.basename(argv[0]) == b"vmfsd" and mnt.encode() in argv:
            return int(p)
    raise RuntimeError("no vmfsd process for " + mnt)


def qemu_bench(h, url, write, bs, step, count):
    """(MB/s, IOPS, CPU µs per I/O) of one qemu-img bench run on URL."""
    cmd = ["qemu-img", "bench", "-f", "raw", "-t", "none", "-n", "-d", "16", "-c", str(count),
           "-s", str(bs), "-S", str(step)] + (["-w"] if write else []) + [url]
    t = time.monotonic()
    c = child_cpu()
    r = h.run(cmd, timeout=900)
    cpu = child_cpu() - c
    dt = time.monotonic() - t
    if r.returncode:
        raise RuntimeError("qemu-img bench: " + r.stderr.strip())
    for line in r.stdout.splitlines():
        if line.startswith("Run completed in"):
            dt = max(float(line.split()[3]), 1e-3)
    return count * bs / dt / 1e6, count / dt, cpu * 1e6 / count


def fio(path, rw, bs, runtime, daemon=None):
    """(MB/s, IOPS, CPU µs per I/O of fio and the process DAEMON);
    RUNTIME 0: once over the whole file (the layout)."""
    cmd = ["fio", "--name=b", "--filename=" + path, "--size=1G", "--direct=1",
           "--ioengine=libaio", "--iodepth=16", "--rw=" + rw, "--bs=" + bs,
           "--output-format=json"]
    if runtime:
        cmd += ["--runtime=%d" % runtime, "--time_based"]
    c = child_cpu() + (proc_cpu(daemon) if daemon else 0)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=runtime + 300)
    cpu = child_cpu() + (proc_cpu(daemon) if daemon else 0) - c
    if r.returncode:
        raise RuntimeError("fio: " + r.stderr.strip())
    j = json.loads(r.stdout)["jobs"][0]
    d = j["write" if "write" in rw else "read"]
    return d["bw_bytes"] / 1e6, d["iops"], cpu * 1e6 / max(d["total_ios"], 1)


def section_io(runtime, rounds=3):
    """qemu-img bench on LUN 1 and fio through vmfsd on LUN 0 of the same
    target, alternating, ROUNDS times per workload: the machine's load
    changes by the minute, so each pair is measured side by side and the
    medians are compared."""
    cases = [("1 MiB sequential write", True, 1 << 20, 1 << 20, "write", "1M"),
             ("1 MiB sequential read", False, 1 << 20, 1 << 20, "read", "1M"),
             ("4 KiB random write", True, 4096, (1 << 20) + 4096, "randwrite", "4k"),
             ("4 KiB random read", False, 4096, (1 << 20) + 4096, "randread", "4k"),
             # qemu-img's own pattern on both sides: 4 KiB every 1 MiB + 4 KiB
             # (fio's rw=write:1M skips 1 MiB after each block)
             ("4 KiB, 1 MiB + 4 KiB stride, write", True, 4096, (1 << 20) + 4096, "write:1M", "4k"),
             ("4 KiB, 1 MiB + 4 KiB stride, read", False, 4096, (1 << 20) + 4096, "read:1M", "4k")]
    work = tempfile.mkdtemp(prefix="vmfsd-bench-iscsi-", dir="/var/tmp")
    mnt = os.path.join(work, "m")
    os.mkdir(mnt)
    res = {}
    alloc = (0, 0)
    try:
        with san.San(4 << 30, scratch=2 << 30) as s:
            h = s.add_host()
            r = h.run([MKFS, "-q", s.url], timeout=600)
            if r.returncode:
                raise RuntimeError("mkfs: " + r.stderr)
            mount(h, s.url, mnt, "bench")
            try:
                pid = vmfsd_pid(mnt)
                f = os.path.join(mnt, "fio.dat")
                # Lay the file out (allocating writes, each block's
                # allocation committed through the journal), then measure
                # the steady state, as qemu-img measures a raw LUN; the
                # raw LUN gets the same first pass.
                alloc = fio(f, "write", "1M", 0)
                qemu_bench(h, s.scratch_url, True, 1 << 20, 1 << 20, 1024)
                for name, write, bs, step, rw, fbs in cases:
                    probe = 200 if bs > 4096 else 2000
                    iops = qemu_bench(h, s.scratch_url, write, bs, step, probe)[1]
                    count = max(probe, int(iops * runtime))
                    q, v = [], []
                    for _ in range(rounds):
                        q.append(qemu_bench(h, s.scratch_url, write, bs, step, count))
                        v.append(fio(f, rw, fbs, runtime, pid))
                    res[name] = (q, v)
            finally:
                unmount(mnt)
    finally:
        subprocess.run(["rm", "-rf", work])
    table("iSCSI: fio in a vmfsd mount on the iscsi:// URL vs qemu-img bench on an "
          "iscsi:// URL of the same target (istgt in a network namespace, QD16, "
          "%d s each, median of %d alternating rounds)" % (runtime, rounds),
          ["workload", "qemu-img bench (libiscsi)", "vmfsd + fio", "vmfsd / qemu",
           "rounds (vmfsd / qemu)", "CPU µs per I/O: qemu-img / vmfsd + fio"])
    for name, _, bs, _, _, _ in cases:
        q, v = res[name]
        k = 0 if bs > 4096 else 1
        qm = statistics.median(x[k] for x in q)
        vm = statistics.median(x[k] for x in v)
        unit = "MB/s" if k == 0 else "IOPS"
        row([name, "%.0f %s" % (qm, unit), "%.0f %s" % (vm, unit), pct(vm, qm),
             " ".join(pct(b[k], a[k]) for a, b in zip(q, v)),
             "%.0f / %.0f" % (statistics.median(x[2] for x in q),
                              statistics.median(x[2] for x in v))])
    out()
    out("The first write of the 1 GiB file (every 1 MiB block allocated, QD16): "
        "%.0f MB/s." % alloc[0])


def bridge_bytes(s):
    r = subprocess.run(["ip", "-n", s.tns, "-s", "-j", "link", "show", "br0"],
                       capture_output=True, text=True)
    st = json.loads(r.stdout)[0]["stats64"]
    return st["rx"]["bytes"] + st["tx"]["bytes"], st["rx"]["packets"] + st["tx"]["packets"]


def lock_latency(mnt, n=100):
    """open(O_RDWR) of N files this host never opened before: each takes
    the file's on-disk lock (a read and a COMPARE AND WRITE); the close
    releases it.  Median and p95 of the open, in ms."""
    paths = [os.path.join(mnt, "lockprobe%d" % i) for i in range(n)]
    for p in paths:
        os.mknod(p)
    time.sleep(1.5)
    lat = []
    for p in paths:
        t = time.monotonic()
        fd = os.open(p, os.O_RDWR)
        lat.append(time.monotonic() - t)
        os.close(fd)
    return statistics.median(lat) * 1e3, sorted(lat)[int(0.95 * n)] * 1e3


def caw_latency(h, url):
    """Mean and minimum of 200 uncontended COMPARE AND WRITEs (iscsi_tool)."""
    r = h.run([TOOL, "bench", url, "0"], timeout=300)
    if r.returncode:
        return "n/a"
    f = r.stdout.split()
    return "%s / %s µs" % (f[2], f[4])


def section_scale(host_counts):
    table("iSCSI: N hosts (network namespaces) on one LUN, default heartbeat (1 s interval, "
          "10 s timeout)",
          ["hosts", "mount time, median / max", "open O_RDWR (lock), median / p95",
           "CAW mean / min",
           "heartbeat traffic on the SAN, all idle", "per host"])
    for n in host_counts:
        work = tempfile.mkdtemp(prefix="vmfsd-bench-scale-", dir="/var/tmp")
        mnts = []
        try:
            with san.San(2 << 30, max_sessions=max(64, 2 * n + 4), scratch=16 << 20) as s:
                hosts = [s.add_host() for _ in range(n)]
                r = hosts[0].run([MKFS, "-q", "-H", str(max(8, n)), s.url], timeout=600)
                if r.returncode:
                    raise RuntimeError("mkfs: " + r.stderr)
                times = []
                try:
                    for i, h in enumerate(hosts):
                        m = os.path.join(work, "m%d" % i)
                        os.mkdir(m)
                        t = time.monotonic()
                        mount(h, s.url, m, "h%d" % i)
                        times.append(time.monotonic() - t)
                        mnts.append(m)
                    med, p95 = lock_latency(mnts[0])
                    caw = caw_latency(hosts[0], s.scratch_url)
                    time.sleep(3)
                    b0, p0 = bridge_bytes(s)
                    t0 = time.monotonic()
                    time.sleep(10)
                    b1, p1 = bridge_bytes(s)
                    dt = time.monotonic() - t0
                    # the bridge sees each frame once in and once out
                    bps = (b1 - b0) / 2 / dt
                    pps = (p1 - p0) / 2 / dt
                    row([n, "%.1f s / %.1f s" % (statistics.median(times), max(times)),
                         "%.2f ms / %.2f ms" % (med, p95), caw,
                         "%.0f KiB/s, %.0f packets/s" % (bps / 1024, pps),
                         "%.1f KiB/s" % (bps / 1024 / n)])
                finally:
                    for m in mnts:
                        unmount(m)
        finally:
            subprocess.run(["rm", "-rf", work])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--append", action="store_true")
    ap.add_argument("--sections", default="io,scale")
    ap.add_argument("--runtime", type=int, default=8)
    ap.add_argument("--hosts", default="1,8,32")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/iscsi.py: needs root (network namespaces, FUSE)")

    def terminated(signum, frame):
        raise SystemExit("killed by signal %d" % signum)     # run the cleanups
    signal.signal(signal.SIGTERM, terminated)
    san.require_netns()
    out("## vmfsd over iSCSI, %s" % datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M UTC"))
    out()
    out("Command: `bench/iscsi.py %s`; commit %s; load average at start %s." % (
        " ".join(sys.argv[1:]),
        subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                       capture_output=True, text=True).stdout.strip(),
        open("/proc/loadavg").read().split()[0]))
    secs = a.sections.split(",")
    if "io" in secs:
        section_io(a.runtime)
    if "scale" in secs:
        section_scale([int(x) for x in a.hosts.split(",")])
    if a.append:
        with open(os.path.join(ROOT, "BENCHMARKS.md"), "a") as f:
            f.write("\n" + "\n".join(OUT) + "\n")


if __name__ == "__main__":
    main()
