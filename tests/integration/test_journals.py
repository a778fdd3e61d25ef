#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Journals that outlive their host, through real vmfsd processes:

- re-format: a host is killed -9 with transactions in its journal, the
  image is re-formatted with mkfs.vmfsd -f, and the new volume mounts with
  nothing replayed, an empty root and a clean fsck (journal blocks are bound
  to one format of the volume, docs/format.md section 12; the case where a
  stale descriptor carries exactly the sequence number replay expects is
  crafted in tests/unit/test_journal.c);
- read-only mounts: with two hosts, the one in slot 1 killed -9 with a
  dirty journal, a read-only mount refuses and names that host (it used to
  look at slot 0 only), mounts with -o norecovery and says what is missing,
  and the dead host's next mount replays its journal; beside a live host
  whose journal is dirty (it beats), a read-only mount goes ahead;
- a commit's writes hold nothing up: with the device frozen (-o
  fault_on_usr1,freeze_io_for=...) an fsync waits inside its commit, and a
  chmod and an unlink of files that commit carries still return at once
  (the commit lets go of the metadata lock while it writes: docs/journal.md
  "Commits without meta_lock"); after the thaw and a kill -9, the replayed
  volume has the newer changes, not the images the frozen commit wrote;
- a host alone commits less often (every 5 s) but still commits: files it
  never fsync'd are there after a kill -9 8 s later."""

import os
import signal
import struct
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import vmfstest as vt  # noqa: E402  (tests/vmfstest.py: the shared helpers)


def sb_fields(image):
    """(max_hosts, hb_off, journal_off, journal_size) from the superblock."""
    with open(image, "rb") as f:
        b = f.read(4096)
    max_hosts, = struct.unpack_from("<I", b, 168)
    hb_off, journal_off, journal_size = struct.unpack_from("<QQQ", b, 184)
    return max_hosts, hb_off, journal_off, journal_size


def journal_clean(image, slot):
    """The clean field of SLOT's journal header (1 clean, 0 needs replay;
    an all-zero header is a fresh, clean journal)."""
    _, _, joff, jsize = sb_fields(image)
    with open(image, "rb") as f:
        f.seek(joff + slot * jsize)
        h = f.read(512)
    if h == bytes(512):
        return 1
    return struct.unpack_from("<Q", h, 48)[0]


def slot_of(image, host):
    """The heartbeat slot whose host name is HOST, or None."""
    n, hb_off, _, _ = sb_fields(image)
    with open(image, "rb") as f:
        for s in range(n):
            f.seek(hb_off + s * 4096)
            b = f.read(512)
            if b[0:4] == b"HEAT" and b[40:104].rstrip(b"\0") == host.encode():
                return s
    return None


def kill9(v):
    """SIGKILL the foreground vmfsd of V and drop its dead FUSE mount."""
    v.proc.kill()
    v.proc.wait(60)
    v.proc = None
    subprocess.run(["fusermount3", "-uz", v.mnt], capture_output=True)


def dirty_and_kill(c, v, host, name, rounds):
    """In V's mount (host HOST): a file kept open and rewritten + fsync'd
    ROUNDS times, then until HOST's journal header says it needs replay,
    then kill -9.  The header is dirty after a commit unless a lock changed
    hands in it (the host then checkpoints: docs/journal.md); rewrites of
    the same size change no lock, but the first rounds may still release
    what the create took, or resource clusters while the host believes
    another host is present, so the test waits for the state it needs
    rather than assuming it.  Returns the content fsync'd last."""
    fd = os.open(v.path(name), os.O_CREAT | os.O_RDWR, 0o644)
    slot = slot_of(v.image, host)
    data = b""
    i = 0
    while i < rounds or journal_clean(v.image, slot) != 0:
        if i > rounds + 200:
            c.fail("setup: %s's journal is still clean after %d fsyncs" % (host, i))
            break
        if i >= rounds:
            time.sleep(0.05)
        data = (b"%s round %06d\n" % (name.encode(), i)) * 50
        os.pwrite(fd, data, 0)
        os.fsync(fd)
        i += 1
    kill9(v)
    try:
        os.close(fd)
    except OSError:
        pass
    return data


def body(c):
    def reformat():
        with vt.Volume("reformat") as v:
            v.mkfs("1G", args=["-H", "2", "-J", "4M"])
            v.mount(host="old")
            for i in range(20):
                with open(v.path("f%d" % i), "wb") as f:
                    f.write(b"old format %d\n" % i * 100)
                    f.flush()
                    os.fsync(f.fileno())
            dirty_and_kill(c, v, "old", "busy", 300)
            s = slot_of(v.image, "old")
            if not c.check(s is not None and journal_clean(v.image, s) == 0,
                           "setup: the killed host's journal should need replay"):
                return
            r = v.mkfs(args=["-f"], check=False)
            c.eq(r.returncode, 0, "mkfs -f over the dead host's volume (%s)" % r.stderr.strip())
            v.mount(host="new")
            log = v.log()
            c.check("replayed" not in log, "the new volume replayed a journal: %r" % log)
            c.eq(sorted(os.listdir(v.path())), [], "root of the re-formatted volume")
            with open(v.path("after"), "wb") as f:
                f.write(b"new format\n")
            v.unmount()          # fsck.vmfsd -n must be clean (checked by unmount)
            v.mount(host="new")
            c.eq(sorted(os.listdir(v.path())), ["after"], "root after a remount")
            v.unmount()

    def read_only():
        with vt.Volume("rojournal") as v:
            v.mkfs("1G", args=["-H", "4"])
            other = os.path.join(v.dir, "mnt2")
            os.mkdir(other)
            v.extra_mnts.append(other)
            # alpha takes slot 0, beta slot 1; alpha leaves cleanly.
            r = vt.run_vmfsd_daemon(v.image, other, host="alpha")
            if not c.eq(r.returncode, 0, "mount alpha (%r)" % r.stderr.strip()):
                return
            v.mount(host="beta")
            vt.unmount_daemon(v.image, other)
            c.eq(slot_of(v.image, "beta"), 1, "beta's slot")
            data = dirty_and_kill(c, v, "beta", "beta-file", 50)
            states = (journal_clean(v.image, 0), journal_clean(v.image, 1))
            if not c.eq(states, (1, 0), "setup: clean fields of slots 0 and 1 (slot 1's "
                        "journal dirty, slot 0's clean)"):
                return

            r = vt.run_vmfsd_daemon(v.image, other, host="gamma", opts=["ro"])
            c.eq(r.returncode, 1, "read-only mount with a dead host's dirty journal: exit "
                 "status (stderr %r)" % r.stderr.strip())
            c.check("slot 1" in r.stderr and "'beta'" in r.stderr,
                    "the refusal should name slot 1 and host beta: %r" % r.stderr.strip())
            c.check("norecovery" in r.stderr, "the refusal should point at -o norecovery: %r"
                    % r.stderr.strip())
            c.check("direct I/O" not in r.stderr, "tmpfs/O_DIRECT hint in an unrelated "
                    "failure: %r" % r.stderr.strip())
            if vt.mounted_at(other):
                vt.unmount_daemon(v.image, other)

            r = vt.run_vmfsd_daemon(v.image, other, host="gamma", opts=["ro", "norecovery"])
            c.eq(r.returncode, 0, "read-only norecovery mount (stderr %r)" % r.stderr.strip())
            c.check("WITHOUT" in r.stderr and "'beta'" in r.stderr,
                    "the norecovery mount should warn about beta's journal: %r"
                    % r.stderr.strip())
            if vt.mounted_at(other):
                c.check(os.path.isdir(other), "norecovery mount is usable")
                os.listdir(other)
                vt.unmount_daemon(v.image, other)
            c.eq(journal_clean(v.image, 1), 0, "a read-only mount wrote the journal")

            r = vt.run_vmfsd_daemon(v.image, other, host="gamma", opts=["norecovery"])
            c.eq(r.returncode, 1, "norecovery without ro: exit status")
            c.check("needs -o ro" in r.stderr, "norecovery without ro: %r" % r.stderr.strip())

            # beta comes back: its old slot is recovered and replayed.
            v.mount(host="beta")
            c.check("replayed" in v.log(), "beta's remount should replay: %r" % v.log())
            with open(v.path("beta-file"), "rb") as f:
                c.eq(f.read(), data, "beta's last fsync'd content after replay")
            # A live host's dirty journal is its own business: it beats.
            fd = os.open(v.path("live-file"), os.O_CREAT | os.O_RDWR, 0o644)
            i = 0
            while journal_clean(v.image, 1) != 0 and i < 200:
                os.pwrite(fd, b"%06d" % i, 0)
                os.fsync(fd)
                i += 1
                time.sleep(0.02)
            r = vt.run_vmfsd_daemon(v.image, other, host="gamma", opts=["ro"])
            c.eq(r.returncode, 0, "read-only mount beside a live host with a dirty journal "
                 "(stderr %r)" % r.stderr.strip())
            if vt.mounted_at(other):
                c.check("live-file" in os.listdir(other), "the read-only mount sees the "
                        "live host's file")
                vt.unmount_daemon(v.image, other)
            os.close(fd)
            v.unmount()          # and fsck.vmfsd -n is clean
            r = vt.run_vmfsd_daemon(v.image, other, host="gamma", opts=["ro"])
            c.eq(r.returncode, 0, "read-only mount after the replay (stderr %r)"
                 % r.stderr.strip())
            if vt.mounted_at(other):
                vt.unmount_daemon(v.image, other)

    def commit_frozen():
        freeze_ms = 5000
        with vt.Volume("jfrozen") as v:
            v.mkfs("1G")
            v.mount(opts=["fault_on_usr1", "freeze_io_for=%d" % freeze_ms])
            for n in ("f", "g", "h"):
                with open(v.path(n), "wb") as f:
                    f.write(n.encode() * 100)
            os.chmod(v.path("g"), 0o640)        # pending: in the frozen commit
            fd = os.open(v.path("f"), os.O_RDWR)
            v.proc.send_signal(signal.SIGUSR1)
            vt.wait_for(lambda: "I/O frozen" in v.log(), 10, "the freeze to start")
            done = {}

            def fsync():
                try:
                    os.fsync(fd)
                    done["fsync"] = "ok"
                except OSError as e:
                    done["fsync"] = e
                done["fsync_at"] = time.monotonic()

            t = threading.Thread(target=fsync)
            t.start()
            t.join(1.0)
            if not c.check(t.is_alive(), "setup: fsync returned with the device frozen"):
                t.join()
                return
            # g's inode block and the directory are in the commit that
            # waits in the frozen device; these change them again
            os.chmod(v.path("g"), 0o600)
            os.unlink(v.path("h"))
            ops_at = time.monotonic()
            t.join(freeze_ms / 1000 + 30)
            c.eq(done.get("fsync"), "ok", "fsync across the freeze")
            c.check("fsync_at" in done and ops_at < done["fsync_at"] - 1.0,
                    "chmod and unlink waited for the frozen commit: done %.1f s after "
                    "the fsync" % (ops_at - done.get("fsync_at", ops_at)))
            os.fsync(fd)                        # the chmod and unlink now
            os.close(fd)
            kill9(v)
            v.mount()
            c.eq(oct(os.stat(v.path("g")).st_mode & 0o777), oct(0o600),
                 "g's mode after replay")
            c.eq(sorted(os.listdir(v.path())), ["f", "g"], "root after replay")
            with open(v.path("f"), "rb") as f:
                c.eq(f.read(), b"f" * 100, "f after replay")
            v.unmount()          # fsck.vmfsd -n must be clean (checked by unmount)

    def alone_commits():
        # Alone on the volume the commit thread commits every 5 s, not
        # every second (docs/journal.md): what was never fsync'd must
        # still reach the disk within that, or a crash loses it all.
        with vt.Volume("alone") as v:
            v.mkfs("1G")
            v.mount(host="solo")
            time.sleep(3)       # the monitor's first scans: alone from here
            os.mkdir(v.path("d"))
            for i in range(5):
                with open(v.path("d", "f%d" % i), "wb") as f:
                    f.write(b"never fsync'd %d\n" % i)
            os.chmod(v.path("d", "f0"), 0o600)
            time.sleep(8)       # 5 s and a margin for a loaded machine
            kill9(v)
            v.mount(host="solo")
            c.eq(sorted(os.listdir(v.path("d"))), ["f%d" % i for i in range(5)],
                 "files a lone host never fsync'd, 8 s after, past a kill -9")
            with open(v.path("d", "f3"), "rb") as f:
                c.eq(f.read(), b"never fsync'd 3\n", "f3's data")
            c.eq(oct(os.stat(v.path("d", "f0")).st_mode & 0o777), oct(0o600), "f0's mode")
            v.unmount()          # fsck.vmfsd -n must be clean (checked by unmount)

    c.section("re-format after kill -9: nothing stale replayed", reformat)
    c.section("read-only mount: every slot's journal", read_only)
    c.section("a frozen commit holds up no other operation", commit_frozen)
    c.section("a host alone commits what it never fsync'd within 5 s", alone_commits)


if __name__ == "__main__":
    vt.main("journals", body)
