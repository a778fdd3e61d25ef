#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Refusals and recoveries at mount and mkfs time, through the daemon mode
(the parent exits 0 once mounted, 1 with a message on failure):
random bytes are not a volume; a damaged primary superblock is replaced by
the backup (and restored), both damaged is refused; a same-name second mount of a
mounted volume is refused naming the holder; mkfs refuses to overwrite a
volume without -f; an image on tmpfs (no O_DIRECT) and a truncated image
are refused with a clear message; each failure to open the device or to
mount it has its own message (the tmpfs/O_DIRECT hint only for the open
that lacks O_DIRECT); a read-only mount refuses writes."""

import ctypes
import errno
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import vmfstest as vt  # noqa: E402  (tests/vmfstest.py: the shared helpers)
from vmfstest import MiB  # noqa: E402

FLIP_AT = 2048                   # the middle of the 4 KiB primary superblock


def flip_byte(path, off):
    with open(path, "r+b") as f:
        f.seek(off)
        b = f.read(1)
        f.seek(off)
        f.write(bytes([b[0] ^ 0xFF]))
        f.flush()
        os.fsync(f.fileno())


def head_hash(path, n=64 * MiB):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(n))
    return h.hexdigest()


def sb_set_ro_compat(path, bits):
    """Sets feat_ro_compat of the primary superblock and re-checksums it
    (XXH3-64 with the csum field zeroed, docs/format.md section 2)."""
    lib = ctypes.CDLL("libxxhash.so.0")
    lib.XXH3_64bits.restype = ctypes.c_uint64
    lib.XXH3_64bits.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
    with open(path, "r+b") as f:
        b = bytearray(f.read(4096))
        b[120:128] = bits.to_bytes(8, "little")
        b[24:32] = bytes(8)
        b[24:32] = lib.XXH3_64bits(bytes(b), 4096).to_bytes(8, "little")
        f.seek(0)
        f.write(b)
        f.flush()
        os.fsync(f.fileno())


def is_tmpfs(path):
    with open("/proc/mounts") as f:
        for line in f:
            fields = line.split()
            if fields[1] == path:
                return fields[2] == "tmpfs"
    return False


def odirect_works(d):
    p = os.path.join(d, "odirect-probe")
    try:
        fd = os.open(p, os.O_CREAT | os.O_RDWR | os.O_DIRECT, 0o600)
    except OSError:
        return False
    os.close(fd)
    os.unlink(p)
    return True


def body(c):
    with vt.Volume("errors") as v:
        m = v.path

        def expect_refusal(image, mnt, needle, what, opts=()):
            r = vt.run_vmfsd_daemon(image, mnt, opts=opts)
            ok = c.eq(r.returncode, 1, "%s: vmfsd exit status (stderr: %r)"
                      % (what, r.stderr.strip()))
            c.check(needle.lower() in r.stderr.lower(),
                    "%s: stderr should mention %r: %r" % (what, needle, r.stderr.strip()))
            if vt.mounted_at(mnt):
                c.fail("%s: something is mounted at %s after a refused mount" % (what, mnt))
                vt.unmount_daemon(image, mnt)
            left = vt.pids_of_vmfsd(image, mnt)
            c.check(not left, "%s: vmfsd processes left behind: %s" % (what, left))
            return ok

        def random_bytes():
            junk = os.path.join(v.dir, "junk.img")
            with open(junk, "wb") as f:
                for _ in range(16):
                    f.write(os.urandom(MiB))
            expect_refusal(junk, v.mnt, "not a vmfsd volume", "image of random bytes")
            zero = os.path.join(v.dir, "zero.img")
            with open(zero, "wb") as f:
                f.truncate(64 * MiB)
            expect_refusal(zero, v.mnt, "not a vmfsd volume", "image of zeros")
            # foreground mode reports the same
            r = subprocess.run([vt.vmfsd_exe(), "-f", junk, v.mnt], capture_output=True,
                               text=True, timeout=60)
            c.eq(r.returncode, 1, "vmfsd -f on random bytes: exit status")
            c.check("not a vmfsd volume" in r.stderr,
                    "vmfsd -f on random bytes: stderr %r" % r.stderr.strip())
            r = vt.run_vmfsd_daemon(os.path.join(v.dir, "does-not-exist.img"), v.mnt)
            c.eq(r.returncode, 1, "vmfsd on a missing image: exit status")
            c.check(r.stderr.strip() != "", "vmfsd on a missing image says nothing")
            os.unlink(junk)
            os.unlink(zero)

        def daemon_mode_and_backup():
            v.mkfs("1G")
            r = vt.run_vmfsd_daemon(v.image, v.mnt)
            c.eq(r.returncode, 0, "daemon-mode mount (stderr %r)" % r.stderr.strip())
            c.check(vt.mounted_at(v.mnt), "daemon-mode vmfsd returned before mounting")
            c.check(r.stderr.strip() == "", "clean mount printed %r" % r.stderr.strip())
            with open(m("data"), "wb") as f:
                f.write(b"survives a damaged superblock\n" * 1000)
            os.mkdir(m("dir"))
            vt.unmount_daemon(v.image, v.mnt)

            flip_byte(v.image, FLIP_AT)
            r = vt.run_vmfsd_daemon(v.image, v.mnt)
            c.eq(r.returncode, 0, "mount with a damaged primary superblock (stderr %r)"
                 % r.stderr.strip())
            c.check("backup" in r.stderr, "stderr should mention the backup superblock: %r"
                    % r.stderr.strip())
            if vt.mounted_at(v.mnt):
                with open(m("data"), "rb") as f:
                    c.eq(f.read(), b"survives a damaged superblock\n" * 1000,
                         "data after mounting from the backup superblock")
                c.check(os.path.isdir(m("dir")), "directory after mounting from the backup")
                vt.unmount_daemon(v.image, v.mnt)
            res = v.fsck()
            if res is not None:
                c.eq(res[0], 0, "fsck.vmfsd -n after mounting from the backup superblock "
                     "(%s)" % res[1][-500:])
            # the primary was restored: the next mount is a normal one
            r = vt.run_vmfsd_daemon(v.image, v.mnt)
            c.eq(r.returncode, 0, "mount after the primary was restored")
            c.check("backup" not in r.stderr, "primary superblock not restored: the next "
                    "mount says %r" % r.stderr.strip())
            if vt.mounted_at(v.mnt):
                vt.unmount_daemon(v.image, v.mnt)

            # both copies damaged: refused
            size = os.path.getsize(v.image)
            flip_byte(v.image, FLIP_AT)
            flip_byte(v.image, size - 4096 + FLIP_AT)
            expect_refusal(v.image, v.mnt, "backup", "both superblocks damaged")
            flip_byte(v.image, FLIP_AT)
            flip_byte(v.image, size - 4096 + FLIP_AT)
            # primary intact, backup damaged: mounts normally
            flip_byte(v.image, size - 4096 + FLIP_AT)
            r = vt.run_vmfsd_daemon(v.image, v.mnt)
            c.eq(r.returncode, 0, "mount with only the backup superblock damaged (stderr %r)"
                 % r.stderr.strip())
            if vt.mounted_at(v.mnt):
                vt.unmount_daemon(v.image, v.mnt)
            flip_byte(v.image, size - 4096 + FLIP_AT)

        def second_mount():
            v.mount(host="alpha")
            other = os.path.join(v.dir, "mnt2")
            os.mkdir(other)
            v.extra_mnts.append(other)
            # Another host (another name) may mount the volume at the same
            # time: that is the cluster.  The same host name may not.
            r = vt.run_vmfsd_daemon(v.image, other, host="beta")
            c.eq(r.returncode, 0, "mount by a second host: exit status (%r)"
                 % r.stderr.strip())
            if vt.mounted_at(other):
                c.check(os.path.exists(os.path.join(other, "data")),
                        "the second host sees the first host's file")
                vt.unmount_daemon(v.image, other)
            r = subprocess.run([vt.vmfsd_exe(), "-f", "-o", "host=alpha", v.image, other],
                               capture_output=True, text=True, timeout=60)
            c.eq(r.returncode, 1, "second mount with the same host name: exit status")
            c.check("already mounted" in r.stderr, "second mount with the same host name: "
                    "%r" % r.stderr.strip())
            c.check("alpha" in r.stderr, "second mount: stderr should name the holder "
                    "'alpha': %r" % r.stderr.strip())
            c.check(not vt.mounted_at(other), "second mount point is mounted")
            # the first mount is unaffected
            with open(m("data"), "rb") as f:
                c.eq(f.read(), b"survives a damaged superblock\n" * 1000,
                     "first mount still reads after a refused second mount")
            with open(m("written-while-held"), "wb") as f:
                f.write(b"ok")
            # mkfs must not format a volume in use, even with -f
            r = v.mkfs(args=["-f"], check=False)
            c.check(r.returncode != 0, "mkfs -f on a mounted volume succeeded: %r"
                    % (r.stdout + r.stderr))
            v.unmount()
            r = vt.run_vmfsd_daemon(v.image, other, host="beta")
            c.eq(r.returncode, 0, "mount by another host after a clean unmount (stderr %r)"
                 % r.stderr.strip())
            if vt.mounted_at(other):
                c.check(os.path.exists(os.path.join(other, "written-while-held")),
                        "file written by the first host")
                vt.unmount_daemon(v.image, other)

        def mkfs_refuses():
            before = head_hash(v.image)
            size = os.path.getsize(v.image)
            r = v.mkfs(check=False)
            c.check(r.returncode != 0, "mkfs without -f on a formatted image succeeded")
            c.check("-f" in r.stderr, "mkfs refusal should point at -f: %r" % r.stderr.strip())
            r = v.mkfs("2G", check=False)
            c.check(r.returncode != 0, "mkfs -s 2G without -f on a formatted image succeeded")
            c.eq(os.path.getsize(v.image), size, "image size after refused mkfs -s 2G")
            c.eq(head_hash(v.image), before, "first 64 MiB of the image after refused mkfs")
            v.mount()
            c.check(os.path.exists(m("data")), "data after a refused mkfs")
            v.unmount()
            r = v.mkfs(args=["-f"], check=False)
            c.eq(r.returncode, 0, "mkfs -f on a formatted image (%s)" % r.stderr.strip())
            v.mount()
            c.eq(os.listdir(m()), [], "root of a volume reformatted with -f")
            v.unmount()

        def tmpfs_image():
            if not is_tmpfs("/dev/shm"):
                print("    /dev/shm is not tmpfs here; nothing to check")
                return
            d = tempfile.mkdtemp(prefix="vmfsd-it-", dir="/dev/shm")
            try:
                img = os.path.join(d, "vol.img")
                # sparse copy: the formatted image is mostly holes
                subprocess.run(["cp", "--sparse=always", v.image, img], check=True)
                if odirect_works(d):
                    # Linux >= 6.6 supports O_DIRECT on tmpfs: vmfsd must
                    # then simply work there.
                    print("    this kernel's tmpfs supports O_DIRECT: expecting a mount")
                    r = vt.run_vmfsd_daemon(img, v.mnt)
                    c.eq(r.returncode, 0, "mount of an image on O_DIRECT-capable tmpfs "
                         "(stderr %r)" % r.stderr.strip())
                    if vt.mounted_at(v.mnt):
                        with open(m("on-tmpfs"), "wb") as f:
                            f.write(b"x")
                        vt.unmount_daemon(img, v.mnt)
                else:
                    expect_refusal(img, v.mnt, "direct I/O", "image on tmpfs")
            finally:
                shutil.rmtree(d, ignore_errors=True)

        def truncated_image():
            t = os.path.join(v.dir, "trunc.img")
            subprocess.run(["cp", "--sparse=always", v.image, t], check=True)
            os.truncate(t, os.path.getsize(t) // 2)
            expect_refusal(t, v.mnt, "smaller than the filesystem", "truncated image")
            os.unlink(t)

        def own_messages():
            no_hint = "direct I/O"
            d = os.path.join(v.dir, "a-directory")
            os.mkdir(d)
            expect_refusal(d, v.mnt, "not a regular file or block device", "a directory")
            r = vt.run_vmfsd_daemon(os.path.join(v.dir, "missing.img"), v.mnt)
            c.check("cannot open" in r.stderr and "No such file" in r.stderr,
                    "missing image: %r" % r.stderr.strip())
            c.check(no_hint not in r.stderr, "missing image: the tmpfs hint %r"
                    % r.stderr.strip())
            # A feature only a newer vmfsd can write: read-write refused,
            # read-only fine, and neither talks about tmpfs.
            old = os.path.join(v.dir, "newer.img")
            subprocess.run(["cp", "--sparse=always", v.image, old], check=True)
            with open(old, "rb") as f:
                f.seek(120)
                ro_compat = int.from_bytes(f.read(8), "little")
            sb_set_ro_compat(old, ro_compat | 1 << 40)
            r = vt.run_vmfsd_daemon(old, v.mnt)
            c.eq(r.returncode, 1, "read-write mount with an unknown ro_compat feature")
            c.check("read-only (-o ro)" in r.stderr and no_hint not in r.stderr,
                    "unknown ro_compat feature: %r" % r.stderr.strip())
            if vt.mounted_at(v.mnt):
                vt.unmount_daemon(old, v.mnt)
            r = vt.run_vmfsd_daemon(old, v.mnt, opts=["ro"])
            c.eq(r.returncode, 0, "read-only mount with an unknown ro_compat feature (%r)"
                 % r.stderr.strip())
            if vt.mounted_at(v.mnt):
                vt.unmount_daemon(old, v.mnt)
            os.unlink(old)
            os.rmdir(d)

        def read_only():
            v.mount()
            with open(m("ro-file"), "wb") as f:
                f.write(b"read me")
            v.unmount()
            v.mount(opts=["ro"])
            with open(m("ro-file"), "rb") as f:
                c.eq(f.read(), b"read me", "read on a read-only mount")
            c.raises(errno.EROFS, "create on a read-only mount", open, m("new"), "wb")
            c.raises(errno.EROFS, "open for writing on a read-only mount", open,
                     m("ro-file"), "r+b")
            c.raises(errno.EROFS, "mkdir on a read-only mount", os.mkdir, m("d"))
            c.raises(errno.EROFS, "unlink on a read-only mount", os.unlink, m("ro-file"))
            c.raises(errno.EROFS, "setxattr on a read-only mount", os.setxattr, m("ro-file"),
                     "user.x", b"1")
            v.unmount()

        c.section("random bytes / zeros / missing image", random_bytes)
        c.section("daemon mode; damaged primary superblock -> backup", daemon_mode_and_backup)
        c.section("second mount refused", second_mount)
        c.section("mkfs refuses to overwrite without -f", mkfs_refuses)
        c.section("image on tmpfs", tmpfs_image)
        c.section("truncated image", truncated_image)
        c.section("a message of its own for each failure", own_messages)
        c.section("read-only mount", read_only)


if __name__ == "__main__":
    vt.main("errors", body)
