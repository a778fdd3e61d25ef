# SPDX-License-Identifier: GPL-2.0-or-later
"""What every test harness does with a daemon (vmfsd, vmfs-hostd) that does
not exit in time: print the stacks of all its threads into the test log,
then SIGKILL it.  A hang that is only killed explains nothing; with the
user-space stacks (gdb) and the kernel stacks (/proc/PID/task/*/stack,
where a FUSE request or an io_uring wait sleeps) the next one explains
itself.

Used by tests/vmfstest.py (the helpers every Python test imports) and
tests/vm/vmtest.py; only the standard library is used.
"""

import os
import signal
import subprocess
import sys
import time

# gdb attaches and walks ~100 threads (vmfsd's FUSE workers) within a few
# seconds on the 2-core test machine; a minute bounds a gdb that wedges.
GDB_TIMEOUT_S = 60


def _read(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError as e:
        return "(%s)" % e.strerror


def dump_stacks(pid, why="", out=None):
    """Prints every thread's user-space stack (gdb -batch, thread apply all
    bt) and kernel stack of PID to OUT (default stdout, the test log).
    Never raises: it runs on the way to a SIGKILL."""
    out = out or sys.stdout
    try:
        comm = _read("/proc/%d/comm" % pid).strip()
        print("=== hang dump: pid %d (%s)%s" % (pid, comm, ": " + why if why else ""),
              file=out, flush=True)
        try:
            r = subprocess.run(["gdb", "-batch", "-nx", "-p", str(pid),
                                "-ex", "set pagination off",
                                "-ex", "thread apply all bt"],
                               capture_output=True, text=True, timeout=GDB_TIMEOUT_S,
                               stdin=subprocess.DEVNULL)
            print(r.stdout, file=out)
            if r.returncode != 0:
                print("(gdb exited %d: %s)" % (r.returncode, r.stderr.strip()[-2000:]),
                      file=out)
        except FileNotFoundError:
            print("(gdb is not installed: scripts/deps.sh installs it)", file=out)
        except subprocess.TimeoutExpired:
            print("(gdb did not finish within %d s)" % GDB_TIMEOUT_S, file=out)
        task = "/proc/%d/task" % pid
        try:
            tids = sorted(os.listdir(task), key=int)
        except OSError:
            tids = []
        for tid in tids:
            print("--- kernel stack of thread %s (%s, wchan %s):\n%s" % (
                tid, _read("%s/%s/comm" % (task, tid)).strip(),
                _read("%s/%s/wchan" % (task, tid)).strip(),
                _read("%s/%s/stack" % (task, tid)).rstrip()), file=out)
        print("=== end of hang dump of pid %d" % pid, file=out, flush=True)
    except Exception as e:     # a dump must never hide the hang it reports
        print("(hang dump of pid %d failed: %s)" % (pid, e), file=out, flush=True)


def kill_hung(pid, why="", proc=None, out=None):
    """Dumps the stacks of a process that did not exit in time, then
    SIGKILLs it; PROC (a subprocess.Popen) is reaped when given."""
    dump_stacks(pid, why, out)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if proc is not None:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            pass


def wait_or_dump(proc, timeout, why=""):
    """proc.wait(timeout) for a subprocess.Popen; when it does not exit in
    time its stacks are dumped and it is killed.  Returns the exit status,
    or None when it had to be killed."""
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        kill_hung(proc.pid, why or "still running %g s after it was told to exit" % timeout,
                  proc)
        return None


def pid_alive(pid):
    """False once PID has exited, zombies included, and only once every
    thread has: a SIGKILLed multi-threaded process (QEMU) shows its leader
    as a zombie while other threads are still exiting, and those still hold
    its files (an flock on a VM's lock record is released only when the
    last of them closes it)."""
    try:
        tids = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return False
    for tid in tids:
        try:
            with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                st = f.read()
        except OSError:
            continue
        if st[st.rindex(")") + 2] not in "ZX":
            return True
    return False


def wait_pid_or_dump(pid, timeout, why=""):
    """Waits for a process that is not our child (a daemonized vmfsd) to
    exit; dumps and kills it when it does not.  True if it exited alone."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.02)
    kill_hung(pid, why or "still running %g s after it was told to exit" % timeout)
    return False
