#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Fencing by the target: a volume made with mkfs.vmfsd --pr-fence on an
iSCSI LUN (istgt in its own network namespace), hosts B and C in two other
namespaces.  C runs with -o debug_no_self_fence, so it never fences itself:
whatever keeps its late writes off the disk is the target alone.

 1. both hosts registered a key and the LUN is reserved Write Exclusive -
    Registrants Only by the first one;
 2. C writes a file in a loop; its cable is pulled; B judges C dead, claims
    its slot, PREEMPTs C's key and takes the file over, stamping it;
 3. C's cable is plugged back: C (which still believes it may write) keeps
    writing, and every write is refused (RESERVATION CONFLICT -> EIO); B's
    stamp is intact; none of C's writes is acknowledged after the takeover;
 4. unmount; fsck.vmfsd -n on the URL is clean.

Env: VMFSD, MKFS, FSCK, ISCSI_TOOL.  Exit 0 pass, 1 fail, 77 skip.
"""
import multiprocessing
import os
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, ".."))
import san  # noqa: E402
import vmfstest as vt  # noqa: E402
from test_iscsi_cluster import c_writer, mount, pr_state, run  # noqa: E402

TIMEOUT_S = 5.0
CHECK = vt.Checker(os.path.basename(__file__))   # replaced by vt.main's in body()


def fail(msg):
    return CHECK.fail(msg)

log = vt.log


def body(c):
    global CHECK
    CHECK = c       # the checker whose failures vt.main counts
    san.require_netns()
    workdir = tempfile.mkdtemp(prefix="vmfsd-it-iscsipr-", dir="/var/tmp")
    mb, mc = os.path.join(workdir, "b"), os.path.join(workdir, "c")
    os.mkdir(mb)
    os.mkdir(mc)
    try:
        with san.San(1 << 30) as s:
            hb, hc = s.add_host(), s.add_host()
            url = s.url
            r = hb.run([vt.mkfs_exe(), "-q", "-H", "4", "--pr-fence", "--hb-interval", "500",
                        "--hb-timeout", str(int(TIMEOUT_S * 1000)), url], timeout=300)
            if r.returncode:
                fail("mkfs.vmfsd --pr-fence %s: %s" % (url, r.stderr.strip()))
                return
            try:
                mount(hb, url, mb, "B")
                mount(hc, url, mc, "C", ["debug_no_self_fence"])
                run(c, "1. registrations", registrations, hb, url)
                run(c, "2-3. late writes of an unfenced isolated host", isolate, url, hb, hc,
                    mb, mc, workdir)
            finally:
                for m in (mb, mc):
                    vt.unmount_quiet(m)
                # B's clean unmount ends with writing its slot free: give
                # it time (a SIGKILL right after fusermount left the slot
                # live, and fsck then reported a host that is gone); C,
                # taken over and refused by the target, may not finish
                for p in vt.pids_of_vmfsd(url):
                    if not vt.wait_pid_gone(p, 30):
                        os.kill(p, 9)
                CHECK.vmfsd_gone(url)
            if vt.fsck_exe():
                r = hb.run([vt.fsck_exe(), "-n", url], timeout=600)
                if r.returncode != 0:
                    fail("fsck.vmfsd -n %s: exit %d\n%s" % (url, r.returncode,
                                                           r.stdout + r.stderr))
                else:
                    log("fsck.vmfsd -n on the URL: clean")
    finally:
        for m in (mb, mc):
            vt.unmount_quiet(m)
        subprocess.run(["rm", "-rf", workdir])


def registrations(hb, url):
    keys, holder = pr_state(hb, url)
    log("keys %s, reservation holder %s" % (sorted(keys), holder))
    if len(keys) != 2:
        fail("expected one key per host (2), got %s" % sorted(keys))
    if holder not in keys:
        fail("the LUN is not reserved by a registered host (holder %s)" % holder)


def isolate(url, hb, hc, mb, mc, workdir):
    keys_before, _ = pr_state(hb, url)
    okfile = os.path.join(workdir, "c-ok")
    w = multiprocessing.Process(target=c_writer, args=(os.path.join(mc, "iso.dat"), okfile))
    w.start()
    time.sleep(1.5)
    hc.link(False)
    t0 = time.time()
    took = None
    while time.time() - t0 < TIMEOUT_S + 20:
        try:
            fdb = os.open(os.path.join(mb, "iso.dat"), os.O_RDWR)
            took = time.time()
            break
        except OSError:
            time.sleep(0.05)
    if took is None:
        fail("B never got the lock of C's file")
        hc.link(True)
        w.kill()
        return
    log("B took C's file over %.1f s after C's cable was pulled" % (took - t0))
    os.pwrite(fdb, b"\xbb" * 4096 * 64, 0)
    os.fsync(fdb)
    keys, holder = pr_state(hb, url)
    gone = keys_before - keys
    log("keys now %s (preempted %s), holder %s" % (sorted(keys), sorted(gone), holder))
    if len(gone) != 1 or len(keys) != 1:
        fail("C's key was not preempted (before %s, after %s)"
             % (sorted(keys_before), sorted(keys)))
    back = time.time()
    hc.link(True)
    time.sleep(5.0)          # C keeps writing with its path back
    w.kill()
    w.join()
    data = os.pread(fdb, 4096 * 64, 0)
    os.close(fdb)
    lines = [l.split() for l in open(okfile)]
    oks = [l for l in lines if l[0] == "ok"]
    late = [l for l in oks if float(l[2]) > took]
    tried = [l for l in lines if float(l[2]) > back + 1.0]
    if not tried:
        fail("C's writer made no attempt after its cable was back (the test proves nothing)")
    if late:
        fail("C's write %s was acknowledged after B's takeover" % late[0])
    if data != b"\xbb" * 4096 * 64:
        bad = next(i for i in range(0, len(data), 4096) if data[i:i + 4096] != b"\xbb" * 4096)
        fail("a write of the isolated, unfenced host landed after the takeover "
             "(block %d: seq %d)" % (bad // 4096, struct.unpack("<Q", data[bad:bad + 8])[0]))
    log("C wrote %d blocks before the cut and tried %d times after its cable was back; "
        "the target refused every one" % (len(oks), len(tried)))


if __name__ == "__main__":
    vt.main(os.path.basename(__file__), body)
