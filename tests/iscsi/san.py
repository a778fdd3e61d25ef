# SPDX-License-Identifier: GPL-2.0-or-later
"""A small SAN for the iSCSI tests: Debian's istgt in its own network
namespace exporting a sparse file as one LUN, and "hosts", each a network
namespace with its own veth to the target's bridge.  Host commands run with
`nsenter --net=/run/netns/NAME` (not `ip netns exec`, which also makes a
private mount namespace that would hide the hosts' FUSE mounts from each
other and from the test).  Cutting a host's link (`ip link set eth0 down`
inside its namespace) is storage isolation for that host.

Every namespace and veth name carries this process's pid and a counter, so
concurrent runs never collide; everything is torn down on every exit path
(context manager, atexit, SIGTERM through vmfstest's handler), and a run
deletes what killed runs left (names with the pid of a process that is gone).

Skips (77) only when the kernel really cannot: no network namespaces, no
veth, or istgt not installed.
"""
import atexit
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

SKIP = 77
PREFIX = "vsan"
TARGET_IQN_BASE = "iqn.2024-01.org.vmfsd"
TARGET_NAME = "lun"
PORT = 3260
SUBNET = "10.77"               # one /16 per SAN; namespaces keep runs apart
_counter = [0]
_live = []


def _ip(*args, check=True):
    r = subprocess.run(["ip"] + list(args), capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError("ip %s: %s" % (" ".join(args), r.stderr.strip()))
    return r


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def sweep_stale():
    """Deletes namespaces (and kills the istgt) of runs whose process is
    gone: a run killed by SIGKILL (meson's timeout) cannot clean up."""
    r = _ip("netns", "list", check=False)
    for line in r.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        m = re.match(r"^%s(\d+)-" % PREFIX, name)
        if not m or _pid_alive(int(m.group(1))):
            continue
        _kill_ns_processes(name)
        _ip("netns", "del", name, check=False)
    for d in os.listdir("/var/tmp"):
        m = re.match(r"^vmfsd-san(\d+)-", d)
        if m and not _pid_alive(int(m.group(1))):
            shutil.rmtree(os.path.join("/var/tmp", d), ignore_errors=True)


def _kill_ns_processes(ns):
    r = _ip("netns", "pids", ns, check=False)
    for p in r.stdout.split():
        try:
            os.kill(int(p), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


def require_netns():
    """Exit 77 with a message when this kernel/machine cannot do it."""
    if not shutil.which("istgt"):
        print("SKIP: istgt is not installed (scripts/deps.sh installs it)")
        sys.exit(SKIP)
    if not shutil.which("nsenter"):
        print("SKIP: nsenter (util-linux) is missing")
        sys.exit(SKIP)
    name = "%s%d-probe" % (PREFIX, os.getpid())
    r = _ip("netns", "add", name, check=False)
    if r.returncode != 0:
        print("SKIP: cannot create a network namespace: %s" % r.stderr.strip())
        sys.exit(SKIP)
    try:
        r = _ip("-n", name, "link", "add", "a0", "type", "veth", "peer", "name", "a1",
                check=False)
        if r.returncode != 0:
            print("SKIP: no veth devices in this kernel: %s" % r.stderr.strip())
            sys.exit(SKIP)
        r = _ip("-n", name, "link", "add", "b0", "type", "bridge", check=False)
        if r.returncode != 0:
            print("SKIP: no bridge devices in this kernel: %s" % r.stderr.strip())
            sys.exit(SKIP)
    finally:
        _ip("netns", "del", name, check=False)


class Host:
    """One machine: a network namespace with eth0 to the SAN."""

    def __init__(self, san, idx):
        self.san = san
        self.idx = idx
        self.ns = "%s-h%d" % (san.base, idx)
        self.addr = "%s.%d.%d" % (SUBNET, 1 + idx // 250, 2 + idx % 250)

    def cmd(self, argv):
        """ARGV prefixed to run inside this host's network namespace."""
        return ["nsenter", "--net=/run/netns/" + self.ns, "--"] + list(argv)

    def run(self, argv, **kw):
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        kw.setdefault("stdin", subprocess.DEVNULL)
        return subprocess.run(self.cmd(argv), **kw)

    def popen(self, argv, **kw):
        return subprocess.Popen(self.cmd(argv), **kw)

    def link(self, up):
        """Plugs or unplugs this host's cable."""
        _ip("-n", self.ns, "link", "set", "eth0", "up" if up else "down")


class San:
    """with San(size) as san: san.url, san.add_host() ..."""

    def __init__(self, size=1 << 30, queue_depth=32, max_sessions=64, scratch=0):
        """SIZE bytes of LUN 0 (self.url); SCRATCH bytes (0: none) of a
        LUN 1 (self.scratch_url) for probes that must not touch the
        volume, on the same target and backing filesystem."""
        sweep_stale()
        _counter[0] += 1
        self.base = "%s%d-%d" % (PREFIX, os.getpid(), _counter[0])
        self.tns = self.base + "-t"
        self.dir = tempfile.mkdtemp(prefix="vmfsd-san%d-" % os.getpid(), dir="/var/tmp")
        self.lun_file = os.path.join(self.dir, "lun.img")
        self.size = size
        self.queue_depth = queue_depth
        self.max_sessions = max_sessions
        self.hosts = []
        self.proc = None
        self.target_addr = SUBNET + ".0.1"
        self.iqn = "%s:%s" % (TARGET_IQN_BASE, TARGET_NAME)
        self.url = "iscsi://%s:%d/%s/0" % (self.target_addr, PORT, self.iqn)
        self.scratch = scratch
        self.scratch_url = "iscsi://%s:%d/%s/1" % (self.target_addr, PORT, self.iqn)
        _live.append(self)
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _start(self):
        with open(self.lun_file, "wb") as f:
            f.truncate(self.size)           # sparse
        if self.scratch:
            with open(self.lun_file + ".1", "wb") as f:
                f.truncate(self.scratch)
        _ip("netns", "add", self.tns)
        _ip("-n", self.tns, "link", "set", "lo", "up")
        _ip("-n", self.tns, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.tns, "addr", "add", self.target_addr + "/16", "dev", "br0")
        _ip("-n", self.tns, "link", "set", "br0", "up")
        conf = os.path.join(self.dir, "istgt.conf")
        auth = os.path.join(self.dir, "auth.conf")
        with open(auth, "w") as f:
            f.write("[AuthGroup1]\n  Comment \"none\"\n")
        mib = max(1, self.size >> 20)
        with open(conf, "w") as f:
            f.write("""[Global]
  NodeBase "%(base)s"
  PidFile %(dir)s/istgt.pid
  AuthFile %(auth)s
  MediaDirectory %(dir)s
  LogFacility "local7"
  Timeout 30
  NopInInterval 20
  DiscoveryAuthMethod None
  MaxSessions %(sess)d
  MaxConnections 4
  MaxR2T 32
  MaxOutstandingR2T 16
  DefaultTime2Wait 2
  DefaultTime2Retain 60
  FirstBurstLength 262144
  MaxBurstLength 1048576
  MaxRecvDataSegmentLength 262144
  InitialR2T Yes
  ImmediateData Yes
  DataPDUInOrder Yes
  DataSequenceInOrder Yes
  ErrorRecoveryLevel 0
[UnitControl]
  AuthMethod None
  Portal UC1 127.0.0.1:3261
  Netmask 127.0.0.1
[PortalGroup1]
  Portal DA1 %(addr)s:%(port)d
[InitiatorGroup1]
  InitiatorName "ALL"
  Netmask %(subnet)s.0.0/16
[LogicalUnit1]
  TargetName %(tname)s
  Mapping PortalGroup1 InitiatorGroup1
  AuthMethod None
  UseDigest Auto
  UnitType Disk
  QueueDepth %(qd)d
  LUN0 Storage %(file)s %(mib)dMB
%(lun1)s""" % {"lun1": ("  LUN1 Storage %s.1 %dMB\n" % (self.lun_file, self.scratch >> 20))
                         if self.scratch else "","base": TARGET_IQN_BASE, "dir": self.dir, "auth": auth, "sess": self.max_sessions,
                "addr": self.target_addr, "port": PORT, "subnet": SUBNET,
                "tname": TARGET_NAME, "qd": self.queue_depth, "file": self.lun_file,
                "mib": mib})
        self.log = open(os.path.join(self.dir, "istgt.log"), "w")
        self.proc = subprocess.Popen(["nsenter", "--net=/run/netns/" + self.tns, "--",
                                      "istgt", "-D", "-q", "-c", conf],
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        # Ready when the portal accepts connections (ss in the namespace).
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("istgt exited with %d: %s" % (
                    self.proc.returncode, self.istgt_log()))
            r = subprocess.run(["nsenter", "--net=/run/netns/" + self.tns, "--",
                                "ss", "-Hltn", "sport", "= :%d" % PORT],
                               capture_output=True, text=True)
            if r.stdout.strip():
                break
            if time.monotonic() > deadline:
                raise RuntimeError("istgt does not listen after 30 s: " + self.istgt_log())
            time.sleep(0.05)

    def istgt_log(self):
        try:
            with open(os.path.join(self.dir, "istgt.log")) as f:
                return f.read()[-2000:]
        except OSError:
            return ""

    def add_host(self):
        h = Host(self, len(self.hosts))
        self.hosts.append(h)
        _ip("netns", "add", h.ns)
        try:
            _ip("-n", h.ns, "link", "set", "lo", "up")
            _ip("-n", h.ns, "link", "add", "eth0", "type", "veth", "peer", "name",
                "p%d" % h.idx, "netns", self.tns)
            _ip("-n", self.tns, "link", "set", "p%d" % h.idx, "master", "br0")
            _ip("-n", self.tns, "link", "set", "p%d" % h.idx, "up")
            _ip("-n", h.ns, "addr", "add", h.addr + "/16", "dev", "eth0")
            _ip("-n", h.ns, "link", "set", "eth0", "up")
        except BaseException:
            _ip("netns", "del", h.ns, check=False)
            raise
        return h

    def close(self):
        """Kills everything in the namespaces, deletes them and the LUN."""
        for h in self.hosts:
            _kill_ns_processes(h.ns)
            _ip("netns", "del", h.ns, check=False)
        self.hosts = []
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        _kill_ns_processes(self.tns)
        _ip("netns", "del", self.tns, check=False)
        shutil.rmtree(self.dir, ignore_errors=True)
        if self in _live:
            _live.remove(self)


@atexit.register
def _cleanup_all():
    for s in list(_live):
        s.close()
