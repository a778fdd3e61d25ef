#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""The FUSE connection aborted while reads and writes are in flight.

An administrator's `echo 1 > /sys/fs/fuse/connections/N/abort` (or a lazy
unmount whose last user goes away) ends the session loop with
asynchronous reads and writes still in the issuer; their completions
reply through the session.  vmfsd must still finish its unmount (commit,
clean journal, slot given back) and exit, every time, and the volume must
be clean for fsck.vmfsd -n.  A daemon that does not exit has its thread
stacks dumped (tests/hangdump.py)."""

import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import vmfstest as vt  # noqa: E402  (tests/vmfstest.py: the shared helpers)
from vmfstest import MiB  # noqa: E402

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 5
FILE_MIB = 64


CONNS = "/sys/fs/fuse/connections"


def abort_connection(mnt):
    """Aborts the FUSE connection of the mount at MNT through fusectl
    (mounted here if the machine has not mounted it)."""
    if not os.listdir(CONNS):
        subprocess.run(["mount", "-t", "fusectl", "fusectl", CONNS], capture_output=True)
    with open(os.path.join(CONNS, str(os.stat(mnt).st_dev), "abort"), "w") as f:
        f.write("1")


def hammer(path, stop, errors):
    """Direct reads and overwrites of allocated data, the asynchronous
    path, until STOP or until the connection dies under us."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_DIRECT)
    except OSError as e:
        errors.append(e)
        return
    import mmap
    buf = mmap.mmap(-1, MiB)
    n = 0
    try:
        while not stop.is_set():
            off = (n * 7919 % FILE_MIB) * MiB
            if n % 2:
                os.preadv(fd, [buf], off)
            else:
                os.pwritev(fd, [buf], off)
            n += 1
    except OSError:
        pass            # ENOTCONN/ECONNABORTED once aborted: expected
    finally:
        try:
            os.close(fd)
        except OSError:
            pass


def body(c):
    with vt.Volume("abort") as v:
        v.mkfs("2G")
        for rnd in range(ROUNDS):
            v.mount()
            path = v.path("f")
            if rnd == 0:
                with open(path, "wb") as f:
                    for _ in range(FILE_MIB):
                        f.write(os.urandom(MiB))
            stop = threading.Event()
            errors = []
            ts = [threading.Thread(target=hammer, args=(path, stop, errors))
                  for _ in range(8)]
            for t in ts:
                t.start()
            time.sleep(1.0)
            abort_connection(v.mnt)
            stop.set()
            for t in ts:
                t.join(30)
            c.check(not errors, "round %d: could not open the file: %s" % (rnd, errors))
            # The mount point is dead now: take it away, then the daemon
            # must finish its unmount and exit by itself.
            subprocess.run(["fusermount3", "-u", v.mnt], capture_output=True)
            if vt.mounted_at(v.mnt):
                subprocess.run(["fusermount3", "-uz", v.mnt], capture_output=True)
            proc, v.proc = v.proc, None
            rc = vt.hangdump.wait_or_dump(proc, 60, "vmfsd still running 60 s after its "
                                          "connection was aborted")
            if rc is None:
                c.fail("round %d: vmfsd did not exit after the abort (stacks above)" % rnd)
                break
            c.eq(rc, 0, "round %d: vmfsd exit status after the abort (log: %s)"
                 % (rnd, v.log()[-2000:]))
            res = v.fsck()
            if res is not None:
                c.eq(res[0], 0, "round %d: fsck.vmfsd -n after the abort: %s"
                     % (rnd, res[1][-2000:]))


if __name__ == "__main__":
    vt.main("abort", body)
