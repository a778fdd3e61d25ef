# SPDX-License-Identifier: GPL-2.0-or-later
"""Shared helpers of every Python test of vmfsd (tests/integration,
tests/cluster, tests/crash, tests/fsck, tests/vm): the programs named by the
environment (VMFSD, MKFS, FSCK, set by each tests/*/meson.build), mkfs,
mounting a host (`vmfsd -o host=NAME IMG MNT`, in the foreground as a child
or as a daemon), unmounting and waiting for the daemon to exit (with the
stack dump of tests/hangdump.py when it does not), fsck.vmfsd -n after a
clean unmount, and a Checker that collects failures.  Scripts put this
folder on sys.path from their own location and `import vmfstest as vt`.

An integration test formats an image in a fresh directory under /var/tmp (a disk
filesystem, so the O_DIRECT I/O of vmfsd works), mounts it with the real
daemon through FUSE, checks outcomes with a Checker that records every failed
expectation with context instead of stopping at the first, and always
unmounts and deletes everything in a finally block.  Exit codes follow the
meson/automake convention: 0 pass, 1 fail, 77 skip (only when /dev/fuse or
root is missing).
"""

import ctypes
import errno
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import hangdump  # noqa: E402  (tests/hangdump.py: stacks of a daemon that hangs)

SKIP = 77
MiB = 1 << 20
GiB = 1 << 30

# Linux fallocate(2) and renameat2(2) flags.
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_ZERO_RANGE = 0x10
AT_FDCWD = -100
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2

_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
_libc.fallocate.restype = ctypes.c_int
_libc.renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                            ctypes.c_uint]
_libc.renameat2.restype = ctypes.c_int


def fallocate(fd, mode, offset, length):
    """fallocate(2); raises OSError with the errno on failure."""
    if _libc.fallocate(fd, mode, offset, length) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def renameat2(old, new, flags):
    """renameat2(2) on paths relative to the cwd; raises OSError on failure."""
    if _libc.renameat2(AT_FDCWD, os.fsencode(old), AT_FDCWD, os.fsencode(new), flags) != 0:
        e = ctypes.get_errno()
        raise OSError(e, "renameat2(%s, %s, %d): %s" % (old, new, flags, os.strerror(e)))


def require_env():
    """Skip (77) only when the machine cannot run FUSE mounts at all."""
    if os.geteuid() != 0:
        print("SKIP: these tests need root (FUSE mounts, chown)")
        sys.exit(SKIP)
    if not os.path.exists("/dev/fuse"):
        print("SKIP: /dev/fuse is missing")
        sys.exit(SKIP)
    for var in ("VMFSD", "MKFS"):
        path = os.environ.get(var)
        if not path or not os.access(path, os.X_OK):
            print("FAIL: environment variable %s does not name an executable (%r)"
                  % (var, path))
            sys.exit(1)


def vmfsd_exe():
    return os.environ["VMFSD"]


def mkfs_exe():
    return os.environ["MKFS"]


def fsck_exe():
    """fsck.vmfsd from FSCK, or None when the build has none."""
    exe = os.environ.get("FSCK")
    return exe if exe and os.path.exists(exe) else None


def log(*a):
    print(*a, flush=True)


def wait_for(cond, timeout, what, step=0.1):
    """Polls cond() until it returns something true (returned); raises
    TimeoutError after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TimeoutError("timed out after %ds waiting for %s" % (timeout, what))
        time.sleep(step)


def mkfs(image, size=None, args=(), check=True, timeout=300):
    """mkfs.vmfsd -q [-s SIZE] ARGS IMAGE; raises on failure when check."""
    cmd = [mkfs_exe(), "-q"]
    if size is not None:
        cmd += ["-s", str(size)]
    cmd += list(args) + [image]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError("%s failed (exit %d): %s%s" % (" ".join(cmd), r.returncode,
                                                        r.stdout, r.stderr))
    return r


def fsck_n(image):
    """fsck.vmfsd -n on an unmounted image: (status, output), or None when
    the build gave no FSCK."""
    exe = fsck_exe()
    if not exe:
        return None
    r = subprocess.run([exe, "-n", image], capture_output=True, text=True, timeout=600)
    return r.returncode, (r.stdout + r.stderr).strip()


def fsck_clean(image, when, fail):
    """fsck.vmfsd -n must find IMAGE clean; otherwise fail(message)."""
    res = fsck_n(image)
    if res is None:
        return
    if res[0] != 0:
        fail("fsck.vmfsd -n %s: exit %d\n%s" % (when, res[0], res[1]))
    else:
        log("fsck.vmfsd -n %s: clean" % when)


def sha256_file(path, chunk=4 * MiB):
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def mounted_at(mnt):
    """True if something is mounted exactly at mnt (read from mountinfo, so
    no request reaches a possibly hung FUSE daemon)."""
    mnt = os.path.realpath(mnt)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            mp = fields[4].replace("\\040", " ").replace("\\011", "\t") \
                          .replace("\\012", "\n").replace("\\134", "\\")
            if mp == mnt:
                return True
    return False


def fusermount_u(mnt, tries=20):
    """fusermount3 -u with retries (EBUSY while a request drains); returns
    the last CompletedProcess."""
    r = None
    for i in range(tries):
        r = subprocess.run(["fusermount3", "-u", mnt], capture_output=True, text=True)
        if r.returncode == 0 or not mounted_at(mnt):
            return r
        time.sleep(0.25 + 0.05 * i)
    return r


def pids_of_vmfsd(image, mnt=None):
    """PIDs of vmfsd processes whose command line names this image (and
    mount point, when given): daemon mode detaches, so we cannot simply
    wait() on it."""
    image = os.path.realpath(image)
    mnt = os.path.realpath(mnt) if mnt is not None else None
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % d, "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if not argv or os.path.basename(argv[0]) != b"vmfsd":
            continue
        args = [os.path.realpath(a.decode(errors="replace")) for a in argv[1:] if a]
        if image in args and (mnt is None or mnt in args):
            found.append(int(d))
    return found


pid_alive = hangdump.pid_alive


def read_bytes(pid):
    """What process PID's threads have read from storage so far
    (/proc/PID/io): a daemon's disk reads, to check what a cache spares."""
    with open("/proc/%d/io" % pid) as f:
        return int(re.search(r"^read_bytes: (\d+)", f.read(), re.M).group(1))


def wait_pid_gone(pid, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.02)
    return False


def close_fds_under(dirs):
    """Closes this process's descriptors that point below any of dirs."""
    prefixes = [os.path.realpath(d) + "/" for d in dirs]
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink("/proc/self/fd/" + fd)
        except OSError:
            continue
        if any(target.startswith(p) or target + "/" == p for p in prefixes):
            try:
                os.close(int(fd))
            except OSError:
                pass


def scratch(tag, mounts):
    """A fresh directory /var/tmp/vmfsd-TAG-*, an image path v.img in it
    and one empty mount point per name in MOUNTS: (dir, image, [mnt])."""
    tmp = tempfile.mkdtemp(prefix="vmfsd-%s-" % tag, dir="/var/tmp")
    mnts = [os.path.join(tmp, m) for m in mounts]
    for m in mnts:
        os.mkdir(m)
    return tmp, os.path.join(tmp, "v.img"), mnts


def sweep_stale(max_age=1800):
    """Deletes /var/tmp/vmfsd-it-* directories left by a run that was killed
    (meson's timeout ends with SIGKILL): only those older than max_age
    seconds with nothing mounted below them and no vmfsd naming them."""
    now = time.time()
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split()[4] for line in f]
    daemons = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open("/proc/%s/cmdline" % d, "rb") as f:
                    daemons.append(f.read().decode(errors="replace"))
            except OSError:
                pass
    for name in os.listdir("/var/tmp"):
        if not name.startswith("vmfsd-it-"):
            continue
        path = os.path.join("/var/tmp", name)
        try:
            if not os.path.isdir(path) or now - os.stat(path).st_mtime < max_age:
                continue
        except OSError:
            continue
        if any(m.startswith(path + "/") for m in mounts) or any(path in a for a in daemons):
            continue
        print("removing a stale test directory: %s" % path)
        shutil.rmtree(path, ignore_errors=True)


class MountError(Exception):
    pass


class Volume:
    """An image file in a fresh directory under /var/tmp, plus the vmfsd
    process that mounts it.  Use as a context manager: on exit everything is
    unmounted (fusermount3 -u with retries, then -uz) and deleted."""

    def __init__(self, tag="vol"):
        self.dir = tempfile.mkdtemp(prefix="vmfsd-it-%s-" % tag, dir="/var/tmp")
        self.image = os.path.join(self.dir, "vol.img")
        self.mnt = os.path.join(self.dir, "mnt")
        os.mkdir(self.mnt)
        self.proc = None
        self.logpath = None
        self.nmounts = 0
        self.extra_mnts = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.cleanup()
        return False

    def path(self, *parts):
        return os.path.join(self.mnt, *parts)

    def mkfs(self, size=None, args=(), check=True, image=None):
        return mkfs(image or self.image, size, args, check)

    def mount(self, host="it-host", opts=(), timeout=30):
        """Mounts in the foreground (-f) as a child process, so the test can
        wait for the daemon to finish its unmount and see its exit status."""
        assert self.proc is None, "already mounted"
        self.nmounts += 1
        self.logpath = os.path.join(self.dir, "vmfsd-%d.log" % self.nmounts)
        o = ",".join(["host=%s" % host] + list(opts))
        cmd = [vmfsd_exe(), "-f", "-o", o, self.image, self.mnt]
        log = open(self.logpath, "w")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + timeout
        while not mounted_at(self.mnt):
            rc = self.proc.poll()
            if rc is not None:
                self.proc = None
                raise MountError("%s exited with %d before mounting: %s"
                                 % (" ".join(cmd), rc, self.log()))
            if time.monotonic() > deadline:
                raise MountError("%s did not mount within %ds: %s"
                                 % (" ".join(cmd), timeout, self.log()))
            time.sleep(0.02)

    def log(self):
        if not self.logpath:
            return ""
        try:
            with open(self.logpath, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def fsck(self, image=None):
        """fsck.vmfsd -n on the (unmounted) image; returns (status, output)
        or None when the build gave no FSCK."""
        return fsck_n(image or self.image)

    def unmount(self, timeout=120, fsck=True):
        """Unmounts and waits for the daemon to exit; raises if the unmount
        fails or the daemon exits non-zero.  After a clean unmount the volume
        must be clean for fsck.vmfsd -n (when FSCK is set): a checker set
        with set_checker() records a failure otherwise.  Returns the
        daemon's log."""
        assert self.proc is not None, "not mounted"
        r = fusermount_u(self.mnt)
        if mounted_at(self.mnt):
            raise RuntimeError("fusermount3 -u %s failed: %s" % (self.mnt, r.stderr.strip()))
        rc = hangdump.wait_or_dump(self.proc, timeout,
                                   "vmfsd still running %ds after unmount" % timeout)
        if rc is None:
            self.proc = None
            raise RuntimeError("vmfsd still running %ds after unmount (stacks above): %s"
                               % (timeout, self.log()))
        self.proc = None
        if rc != 0:
            raise RuntimeError("vmfsd exited with status %d after unmount: %s"
                               % (rc, self.log()))
        if fsck:
            res = self.fsck()
            if res is not None and res[0] != 0:
                msg = ("fsck.vmfsd -n after clean unmount #%d exited %d:\n%s"
                       % (self.nmounts, res[0], res[1][-3000:]))
                if _checker is not None:
                    _checker.fail(msg)
                else:
                    raise RuntimeError(msg)
        return self.log()

    def remount(self, **kw):
        self.unmount()
        self.mount(**kw)

    def cleanup(self):
        # Descriptors this test left open inside the mounts (a failure in the
        # middle of an operation) would make the unmount EBUSY.
        close_fds_under([self.mnt] + self.extra_mnts)
        try:
            os.chdir("/")
        except OSError:
            pass
        for m in [self.mnt] + self.extra_mnts:
            try:
                if mounted_at(m):
                    fusermount_u(m, tries=8)
                if mounted_at(m):
                    subprocess.run(["fusermount3", "-uz", m], capture_output=True)
            except Exception as e:  # keep cleaning up
                print("cleanup: unmounting %s: %s" % (m, e))
            for pid in pids_of_vmfsd(self.image, m):
                if not hangdump.wait_pid_or_dump(pid, 15, "cleanup: vmfsd still running "
                                                 "15 s after unmounting %s" % m):
                    wait_pid_gone(pid, 10)
        if self.proc is not None:
            hangdump.wait_or_dump(self.proc, 15, "cleanup: vmfsd still running 15 s "
                                  "after the unmount")
            self.proc = None
            for m in [self.mnt] + self.extra_mnts:
                if mounted_at(m):      # a killed daemon leaves a dead mount
                    subprocess.run(["fusermount3", "-uz", m], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)


# the log files of the daemons this test started (-o log_file), shown when a
# check fails: a daemon-mode vmfsd has no terminal, and a test machine may
# have no system log
VMFSD_LOGS = []


def vmfsd_log_path(mnt):
    return os.path.abspath(mnt).rstrip("/") + ".vmfsd.log"


def dump_vmfsd_logs(lines=40):
    for path in VMFSD_LOGS:
        try:
            with open(path, errors="replace") as f:
                tail = f.readlines()[-lines:]
        except OSError:
            continue
        print("=== %s (tail):" % path)
        sys.stdout.write("".join(tail))
    sys.stdout.flush()


def run_vmfsd_daemon(image, mnt, host="it-host", opts=(), timeout=60):
    """Runs vmfsd without -f (daemon mode): returns once mounted or failed.
    Its log goes to MNT.vmfsd.log too (dump_vmfsd_logs)."""
    logf = vmfsd_log_path(mnt)
    if logf not in VMFSD_LOGS:
        VMFSD_LOGS.append(logf)
    o = ",".join(["host=%s" % host, "log_file=" + logf] + list(opts))
    return subprocess.run([vmfsd_exe(), "-o", o, image, mnt], capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def mount_daemon(image, mnt, host, opts=(), timeout=120):
    """vmfsd -o host=HOST[,OPTS] IMAGE MNT in daemon mode (the way an
    administrator mounts); raises when it fails.  Returns its stderr (the
    mount's messages, e.g. what it replayed)."""
    r = run_vmfsd_daemon(image, mnt, host, opts, timeout)
    if r.returncode != 0:
        raise RuntimeError("mount %s: %s" % (host, r.stderr))
    return r.stderr


def unmount_quiet(mnt):
    """Unmounts MNT whatever happens (fusermount3 -u with retries, then
    -uz); for cleanup paths and for a mount whose daemon was killed."""
    if mounted_at(mnt):
        fusermount_u(mnt)
    if mounted_at(mnt):
        subprocess.run(["fusermount3", "-uz", mnt], capture_output=True)


def wait_vmfsd_gone(image, timeout, when, mnt=None):
    """Every vmfsd on IMAGE (and MNT) must exit; one still there after
    timeout seconds has its stacks dumped and is killed.  Returns the pids
    that did not exit."""
    stuck = []
    for pid in pids_of_vmfsd(image, mnt):
        if not hangdump.wait_pid_or_dump(pid, timeout, "vmfsd still running %d s %s"
                                         % (timeout, when)):
            stuck.append(pid)
    return stuck


def unmount_daemon(image, mnt, timeout=120):
    """Unmounts a daemon-mode mount and waits for its process to exit."""
    pids = pids_of_vmfsd(image, mnt)
    r = fusermount_u(mnt)
    if mounted_at(mnt):
        raise RuntimeError("fusermount3 -u %s failed: %s" % (mnt, r.stderr.strip()))
    for pid in pids:
        if not hangdump.wait_pid_or_dump(pid, timeout, "vmfsd still running %ds after "
                                         "unmount" % timeout):
            raise RuntimeError("vmfsd pid %d still running %ds after unmount (stacks above)"
                               % (pid, timeout))


def short_repr(x, limit=200):
    """repr() cut to a readable size; long byte strings as length + ends."""
    if isinstance(x, (bytes, bytearray)) and len(x) > 48:
        return "%d bytes %r...%r" % (len(x), bytes(x[:16]), bytes(x[-8:]))
    r = repr(x)
    return r if len(r) <= limit else r[:limit] + "...(%d chars)" % len(r)


def first_difference(a, b):
    if not (isinstance(a, (bytes, bytearray)) and isinstance(b, (bytes, bytearray))):
        return ""
    n = min(len(a), len(b))
    i = next((i for i in range(n) if a[i] != b[i]), n)
    return " (first difference at offset %d)" % i


class Checker:
    """Records failed expectations (printed at once, with context) and runs
    independent sections so that one failure does not hide the others."""

    def __init__(self, name):
        self.name = name
        self.failures = []
        self.t0 = time.monotonic()

    def fail(self, msg):
        print("FAIL: %s" % msg, flush=True)
        if not self.failures:
            dump_vmfsd_logs()
        self.failures.append(msg)
        return False

    def check(self, cond, msg):
        if not cond:
            return self.fail(msg)
        return True

    def eq(self, got, want, what):
        if got != want:
            return self.fail("%s: got %s, expected %s" % (what, short_repr(got),
                                                          short_repr(want)) +
                             first_difference(got, want))
        return True

    def errno_of(self, fn, *args, **kw):
        """Calls fn and returns the errno of the OSError it raised, or None."""
        try:
            fn(*args, **kw)
        except OSError as e:
            return e.errno
        return None

    def raises(self, want, what, fn, *args, **kw):
        """Expects fn(*args) to fail with one of the errnos in want."""
        if isinstance(want, int):
            want = (want,)
        got = self.errno_of(fn, *args, **kw)
        if got not in want:
            names = "/".join(errno.errorcode.get(w, str(w)) for w in want)
            return self.fail("%s: expected %s, got %s" % (
                what, names, "success" if got is None else errno.errorcode.get(got, got)))
        return True

    def section(self, title, fn, *args, **kw):
        print("--- %s" % title, flush=True)
        t = time.monotonic()
        try:
            fn(*args, **kw)
        except Exception:
            self.fail("%s: unexpected exception:\n%s" % (title, traceback.format_exc()))
        print("    (%.1fs)" % (time.monotonic() - t), flush=True)

    def vmfsd_gone(self, image, when="after unmount", mnt=None, timeout=60):
        """Every vmfsd on IMAGE (and MNT) must exit; one still there after
        TIMEOUT s has its stacks dumped, is killed and fails the test."""
        for p in wait_vmfsd_gone(image, timeout, when, mnt):
            self.fail("vmfsd pid %d did not exit %s (stacks above)" % (p, when))

    def finish(self):
        dt = time.monotonic() - self.t0
        if self.failures:
            print("%s: %d failure(s) in %.1fs:" % (self.name, len(self.failures), dt))
            for f in self.failures:
                print("  - " + f.splitlines()[0])
            sys.exit(1)
        print("%s: all checks passed in %.1fs" % (self.name, dt))
        sys.exit(0)


def _terminated(signum, frame):
    # meson's timeout sends SIGTERM: unwind so that the finally blocks
    # unmount and delete what this test made
    raise SystemExit("killed by signal %d (timeout?)" % signum)


_checker = None


def main(name, body):
    """Common entry point: environment check, Checker, body(checker)."""
    global _checker
    require_env()
    signal.signal(signal.SIGTERM, _terminated)
    sweep_stale()
    if not os.environ.get("FSCK"):
        print("note: FSCK not set; volumes are not checked after unmount")
    c = Checker(name)
    _checker = c
    try:
        body(c)
    except Exception:
        c.fail("unexpected exception:\n%s" % traceback.format_exc())
    c.finish()
