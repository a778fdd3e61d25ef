#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""kill -9 test: a real vmfsd under a metadata-heavy workload is killed with
SIGKILL at random moments; the next mount replays its journal, and every
file the workload fsync'd (and did not touch again) must be there with the
content it had at that fsync.  fsck.vmfsd -n must find nothing to repair.

The workload runs in a child process and records each acknowledged fsync in
a log on the host filesystem (itself fsync'd), so the check knows exactly
what was promised.  Usage: kill9.py [CYCLES] (env VMFSD, MKFS, FSCK, SEED).
"""
import hashlib
import os
import random
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import vmfstest as vt  # noqa: E402  (tests/vmfstest.py: the shared helpers)

MKFS = vt.mkfs_exe()
log = vt.log


def mount(img, mnt):
    return vt.mount_daemon(img, mnt, "k9")


def daemon_pid(img):
    return vt.pids_of_vmfsd(img)


def wait_daemons_gone(img, when):
    """Every vmfsd on IMG must exit: one still there after 120 s has its
    thread stacks dumped into the log, then it is killed."""
    for p in vt.wait_vmfsd_gone(img, 120, when):
        log("FAIL: vmfsd pid %d did not exit %s (stacks above)" % (p, when))
        raise RuntimeError("vmfsd did not exit %s" % when)


def worker(mnt, logpath, seed):
    """Runs until killed.  Log lines: 'sync PATH SHA' after an fsync,
    'touch PATH' before changing or removing a file."""
    rnd = random.Random(seed)
    lf = open(logpath, "a")

    def note(line):
        lf.write(line + "\n")
        lf.flush()
        os.fsync(lf.fileno())

    files = []
    n = 0
    for d in ("a", "b", "c"):
        os.makedirs(os.path.join(mnt, d), exist_ok=True)
    while True:
        n += 1
        op = rnd.random()
        if op < 0.45 or len(files) < 5:
            p = os.path.join(mnt, rnd.choice("abc"), "s%d_%d" % (seed, n))
            data = os.urandom(rnd.choice([10, 3000, 5000, 70000, 1200000]))
            fd = os.open(p, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
            os.write(fd, data)
            if rnd.random() < 0.7:
                os.fsync(fd)
                os.close(fd)
                note("sync %s %s" % (p, hashlib.sha256(data).hexdigest()))
            else:
                os.close(fd)
            files.append(p)
        elif op < 0.65:
            p = rnd.choice(files)
            q = os.path.join(mnt, rnd.choice("abc"), "r%d_%d" % (seed, n))
            note("touch %s" % p)
            os.rename(p, q)
            files.remove(p)
            files.append(q)
        elif op < 0.85:
            p = rnd.choice(files)
            note("touch %s" % p)
            os.unlink(p)
            files.remove(p)
        else:
            # a burst of small creates and unlinks (journal pressure)
            for i in range(20):
                p = os.path.join(mnt, "c", "t%d_%d_%d" % (seed, n, i))
                open(p, "w").write("x" * i)
                if i % 3 == 0:
                    os.unlink(p)


def check(mnt, logpath):
    """Returns a list of problems."""
    promised = {}
    if os.path.exists(logpath):
        for line in open(logpath):
            parts = line.split()
            if parts and parts[0] == "sync" and len(parts) == 3:
                promised[parts[1]] = parts[2]
            elif parts and parts[0] == "touch" and len(parts) == 2:
                promised.pop(parts[1], None)
    bad = []
    for p, sha in promised.items():
        try:
            got = hashlib.sha256(open(p, "rb").read()).hexdigest()
        except OSError as e:
            bad.append("fsync'd %s: %s" % (p, e))
            continue
        if got != sha:
            bad.append("fsync'd %s: content differs" % p)
    return bad, len(promised)


def main():
    vt.require_env()
    cycles = int(sys.argv[1]) if len(sys.argv) > 1 else 6
    seed = int(os.environ.get("SEED", "1"))
    rnd = random.Random(seed)
    tmp = tempfile.mkdtemp(prefix="vmfsd-kill9-", dir="/var/tmp")
    img, mnt, logpath = tmp + "/k.img", tmp + "/mnt", tmp + "/log"
    os.mkdir(mnt)
    failures = 0
    try:
        subprocess.run([MKFS, "-q", "-H", "4", "-s", "4G", img], check=True)
        for cycle in range(cycles):
            msg = mount(img, mnt)
            if cycle and "replayed" not in msg:
                log("cycle %d: mounted (nothing to replay)" % cycle)
            bad, n = check(mnt, logpath)
            log("cycle %d: %d fsync'd files verified after kill -9 + replay" % (cycle, n))
            for b in bad:
                log("FAIL:", b)
            failures += len(bad)
            pid = os.fork()
            if pid == 0:
                try:
                    worker(mnt, logpath, seed * 1000 + cycle)
                finally:
                    os._exit(0)
            time.sleep(rnd.uniform(0.3, 2.0))
            for p in daemon_pid(img):
                os.kill(p, signal.SIGKILL)
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            vt.unmount_quiet(mnt)
            wait_daemons_gone(img, "after kill -9 and unmount")
            if vt.fsck_exe():
                # The journal is not replayed yet: replay by mounting, then check.
                mount(img, mnt)
                vt.unmount_quiet(mnt)
                wait_daemons_gone(img, "after a clean unmount")
                res = vt.fsck_n(img)
                if res[0] != 0:
                    log("FAIL: fsck.vmfsd -n exit %d:\n%s" % res)
                    failures += 1
        mount(img, mnt)
        bad, n = check(mnt, logpath)
        log("final: %d fsync'd files verified" % n)
        for b in bad:
            log("FAIL:", b)
        failures += len(bad)
    finally:
        vt.unmount_quiet(mnt)
        subprocess.run(["rm", "-rf", tmp])
    log("kill -9 test: %d cycles, %d failures (seed %d)" % (cycles, failures, seed))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
