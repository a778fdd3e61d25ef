# SPDX-License-Identifier: GPL-2.0-or-later
"""Helpers of the VM tests (tests/vm) on top of tests/vmfstest.py (binaries,
mkfs, mounts, unmounts, the Checker): a vmfsd volume mounted through FUSE
by several hosts, host agents (vmfs-hostd) started as child processes, vmfsctl calls,
the test guest (built once by scripts/test-guest.sh into a cache folder),
and waiting for what the guest prints in <vm>.log on the datastore.

The guest (scripts/test-guest.sh) prints "vmfs-guest: previous counter N"
at boot (the record it finds at sector 0 of its disk) and then
"vmfs-guest: counter N" every 0.5 s after writing N to sector 0.  Every
VM runs under TCG (docs/vm.md: nested KVM hangs guests on these machines).

Exit codes follow meson: 0 pass, 1 fail, 77 skip (only when root,
/dev/fuse or QEMU are truly missing).
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import hangdump  # noqa: E402  (tests/hangdump.py: stacks of a daemon that hangs)
import vmfstest as vt  # noqa: E402  (tests/vmfstest.py: the shared helpers)
from vmfstest import SKIP, MiB, mounted_at, pid_alive, wait_for  # noqa: E402,F401

GUEST_MEM = 192   # MiB: the busybox guest needs ~60; keeps .vmss files small


def env(name):
    v = os.environ.get(name)
    if not v:
        print("FAIL: environment variable %s is not set (run through meson test)" % name)
        sys.exit(1)
    return v


def require_env():
    vt.require_env()     # root, /dev/fuse, VMFSD and MKFS
    for tool in ("qemu-system-x86_64", "qemu-img"):
        if not shutil.which(tool):
            print("SKIP: %s is not installed (scripts/deps.sh installs it)" % tool)
            sys.exit(SKIP)
    for var in ("VMFSCTL", "VMFS_HOSTD"):
        p = env(var)
        if not os.access(p, os.X_OK):
            print("FAIL: %s=%s is not executable" % (var, p))
            sys.exit(1)


def use_build(build):
    """For a benchmark run by hand: the programs and the test guest of the
    build folder BUILD, as meson's test environment names them."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    os.environ.update(VMFSD=build + "/vmfsd/vmfsd", MKFS=build + "/mkfs/mkfs.vmfsd",
                      VMFSCTL=build + "/vmfsctl/vmfsctl",
                      VMFS_HOSTD=build + "/vmfs-hostd/vmfs-hostd",
                      TEST_GUEST_SCRIPT=root + "/scripts/test-guest.sh",
                      TEST_GUEST_DIR=build + "/test-guest")


def guest(compressed=False):
    """(kernel, initrd.img) of the test guest, built once into
    $TEST_GUEST_DIR by scripts/test-guest.sh (instant when cached).  The
    kernel is vmlinux, the uncompressed one QEMU boots through PVH (3.5 s
    less per boot under TCG: no xz decompression in the guest), when the
    script could make it; else, or with COMPRESSED, the bzImage vmlinuz
    (8 MiB instead of 63 MiB, for tests that upload it; and the benchmarks,
    whose guests' memory, and so migration figures, stay as measured)."""
    d = env("TEST_GUEST_DIR")
    r = subprocess.run([env("TEST_GUEST_SCRIPT"), d], capture_output=True, text=True,
                       timeout=600)
    if r.returncode != 0:
        raise RuntimeError("test-guest.sh failed: %s%s" % (r.stdout, r.stderr))
    kernel = os.path.join(d, "vmlinux")
    if compressed or not os.path.isfile(kernel):
        kernel = os.path.join(d, "vmlinuz")
    return kernel, os.path.join(d, "initrd.img")


class Agent:
    """One vmfs-hostd child process: host NAME, its socket and state folder
    in the test's scratch directory."""

    def __init__(self, work, host, extra=()):
        self.work = work
        self.host = host
        self.extra = [str(x) for x in extra]   # more vmfs-hostd options
        self.sock = os.path.join(work, "%s.sock" % host)
        self.state = os.path.join(work, "state-%s" % host)
        self.logpath = os.path.join(work, "agent-%s.log" % host)
        self.proc = None

    def start(self):
        log = open(self.logpath, "a")
        self.proc = subprocess.Popen(
            [env("VMFS_HOSTD"), "--host", self.host, "--socket", self.sock, "--state-dir",
             self.state, "--accel", "tcg", "--shutdown-timeout", "60"] + self.extra,
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        # listening, not just there: an agent killed at a fault point
        # leaves its socket file behind, and a request sent before the new
        # agent binds it is refused (ECONNREFUSED)
        wait_for(lambda: self.listening() or self.proc.poll() is not None, 10,
                 "the agent listening on its socket")
        if self.proc.poll() is not None:
            raise RuntimeError("vmfs-hostd exited: %s" % self.log())

    def listening(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(self.sock)
            return True
        except OSError:
            return False
        finally:
            s.close()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            hangdump.wait_or_dump(self.proc, 20, "vmfs-hostd %s still running 20 s after "
                                  "SIGTERM" % self.host)
        self.proc = None

    def log(self):
        try:
            with open(self.logpath, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def ctl(self, *args, timeout=180):
        """vmfsctl --agent SOCK ARGS: CompletedProcess (text)."""
        cmd = [env("VMFSCTL"), "--agent", self.sock] + [str(a) for a in args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)

    def ok(self, *args, timeout=180):
        r = self.ctl(*args, timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError("vmfsctl %s failed (exit %d): %s%s" % (
                " ".join(map(str, args)), r.returncode, r.stdout, r.stderr))
        return r.stdout

    def info(self, path):
        return json.loads(self.ok("--json", "info", path))


def procs_of(word):
    """Pids whose command line contains WORD (bytes)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % d, "rb") as f:
                if word in f.read():
                    out.append(int(d))
        except OSError:
            pass
    return out


def qemu_pids(state_dir):
    """The QEMUs of one agent: their command line names its STATE_DIR."""
    out = []
    for pid in procs_of((state_dir + "/").encode()):
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                if b"qemu-system" in f.read():
                    out.append(pid)
        except OSError:
            pass
    return out


def json_stream(out):
    """The --json output of a long vmfsctl command (migrate, migrate-storage,
    clone...): ([progress task objects], reply).  Progress events are one
    line each ({"event": "progress", "task": {...}}); the reply follows."""
    progress, rest = [], []
    for line in out.splitlines():
        try:
            o = json.loads(line)
        except ValueError:
            o = None
        if isinstance(o, dict) and o.get("event") == "progress":
            progress.append(o["task"])
        else:
            rest.append(line)
    return progress, json.loads("\n".join(rest))


class Volume:
    """A vmfsd volume on an image under /var/tmp, mounted in the foreground
    (a child process) as host `host`; plus its agents.  Context manager:
    powers off every VM, stops agents, unmounts, deletes."""

    def __init__(self, tag, size="4G", checker=None, mkfs_args=()):
        self.checker = checker
        self.work = tempfile.mkdtemp(prefix="vmfsd-vm-%s-" % tag, dir="/var/tmp")
        self.image = os.path.join(self.work, "vol.img")
        self.size = size
        self.mkfs_args = list(mkfs_args)
        self.mounts = []     # (mnt, proc)
        self.procs = {}      # host -> vmfsd process
        self.agents = []

    def __enter__(self):
        vt.mkfs(self.image, self.size, self.mkfs_args, timeout=120)
        return self

    def __exit__(self, *exc):
        self.cleanup()
        return False

    def mount(self, host, mnt=None, opts=""):
        """vmfsd -f -o host=HOST[,OPTS]; its stderr (with -f, the log too)
        goes to vmfsd-HOST.log in the work folder.  Returns the mount point;
        the process is self.procs[host]."""
        mnt = mnt or os.path.join(self.work, "mnt-%s" % host)
        os.makedirs(mnt, exist_ok=True)
        log = open(os.path.join(self.work, "vmfsd-%s.log" % host), "a")
        o = "host=%s" % host + ("," + opts if opts else "")
        proc = subprocess.Popen([env("VMFSD"), "-f", "-o", o, self.image, mnt],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        try:
            wait_for(lambda: mounted_at(mnt) or proc.poll() is not None, 30, "the mount")
        except TimeoutError:
            proc.kill()
            raise
        if proc.poll() is not None:
            with open(os.path.join(self.work, "vmfsd-%s.log" % host)) as f:
                raise RuntimeError("vmfsd -o host=%s exited with %s: %s" % (host, proc.returncode,
                                                                          f.read()))
        self.mounts.append((mnt, proc))
        self.procs[host] = proc
        return mnt

    def vmfsd_log(self, host):
        try:
            with open(os.path.join(self.work, "vmfsd-%s.log" % host), errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def agent(self, host, extra=()):
        # its own mount only: the tests of other worktrees may run hosts of
        # the same name on this kernel, and HA must not touch their volumes
        mnts = [m for m, pr in self.mounts if pr is self.procs.get(host)]
        if mnts and "--datastore" not in [str(x) for x in extra]:
            extra = list(extra) + ["--datastore", os.path.realpath(mnts[0])]
        a = Agent(self.work, host, extra)
        a.start()
        self.agents.append(a)
        return a

    def pids_of(self, prog):
        """Pids of the live processes running PROG (bytes) whose command line
        names this test's folder."""
        found = []
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open("/proc/%s/cmdline" % d, "rb") as f:
                    cmd = f.read()
            except OSError:
                continue
            if prog in cmd.split(b"\0")[0] and self.work.encode() in cmd and pid_alive(int(d)):
                found.append(int(d))
        return found

    def kill_qemus(self):
        """SIGKILL every QEMU whose command line names this test's folder."""
        for pid in self.pids_of(b"qemu-system"):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass

    def cleanup(self):
        if self.checker is not None and self.checker.failures:
            for a in self.agents:
                print("=== agent %s log (tail):\n%s" % (a.host, a.log()[-6000:]))
        self.kill_qemus()
        for a in self.agents:
            a.stop()
        # a stopped agent's forked children (a request, a restart in place
        # by the VM monitor) finish their power-on: wait for them, or they
        # start a QEMU after the last kill (bounded by the agent's 60 s
        # QEMU start timeout)
        try:
            wait_for(lambda: not self.pids_of(b"vmfs-hostd"), 90, "the agents' children to finish")
        except TimeoutError:
            pass
        self.kill_qemus()
        for mnt, proc in reversed(self.mounts):
            vt.unmount_quiet(mnt)
            hangdump.wait_or_dump(proc, 30, "vmfsd (%s) still running 30 s after unmount" % mnt)
        if os.environ.get("VM_TEST_KEEP"):
            print("VM_TEST_KEEP: left %s" % self.work)
            return
        shutil.rmtree(self.work, ignore_errors=True)


def read_log(folder, name):
    try:
        with open(os.path.join(folder, name + ".log"), "rb") as f:
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def counters(text):
    return [int(m) for m in re.findall(r"vmfs-guest: counter (\d+)", text)]


def boots(text):
    """The counters the guest found on its disk at each boot ("previous
    counter N", -1 on a blank disk): what QEMU read through the chain."""
    return [int(m) for m in re.findall(r"vmfs-guest: previous counter (-?\d+)", text)]


def wait_counter(folder, name, minimum, timeout=120):
    """Waits until the guest printed a counter >= minimum in <vm>.log
    (the agent copies the log to the datastore every second)."""
    def got():
        c = counters(read_log(folder, name))
        return c and c[-1] >= minimum and c[-1]
    return wait_for(got, timeout, "%s: guest counter >= %d in %s.log" % (folder, minimum, name),
                    step=0.3)


def disk_counter(flat):
    """The counter record at sector 0 of the flat extent: (n, boot) or None."""
    with open(flat, "rb") as f:
        rec = f.read(512).split(b"\0")[0].decode(errors="replace").split()
    if len(rec) >= 3 and rec[0] == "VMFSCOUNT":
        return int(rec[1]), rec[2]
    return None


def lock_record_free(path):
    """A VM's lock record says nobody runs it: absent, or emptied (a
    power-off empties the file instead of deleting it: docs/ha.md §7)."""
    try:
        with open(path) as f:
            return "host=" not in f.read()
    except FileNotFoundError:
        return True


def qemu_gone(agent, path):
    info = agent.info(path)
    return info["state"] != "running"


class Checker(vt.Checker):
    """vmfstest's Checker plus refusals of vmfsctl."""

    def refused(self, r, what, *needles):
        """r (a vmfsctl result) must have failed with exit 1 and a message
        containing every needle."""
        msg = (r.stdout + r.stderr).strip()
        if r.returncode != 1:
            return self.fail("%s: expected refusal (exit 1), got exit %d: %s" % (
                what, r.returncode, msg))
        for n in needles:
            if n.lower() not in msg.lower():
                return self.fail("%s: message lacks %r: %s" % (what, n, msg))
        print("    ok, refused: %s" % msg.splitlines()[-1], flush=True)
        return True


def main(name, body):
    require_env()
    c = Checker(name)
    try:
        body(c)
    except Exception:
        c.fail("unexpected exception:\n%s" % traceback.format_exc())
    c.finish()
