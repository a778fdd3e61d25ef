#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Single-bit flips of every metadata block of a small volume, and random
repair rounds.

  test_bitflip.py [bitflip]    the bit flips (below)
  test_bitflip.py repairfuzz   fsck-tool repairfuzz: random damage (raw
                               flips and structures that verify but lie),
                               repair, the check after must be clean and the
                               tree must read back through fs/

A volume with two heartbeat slots is formatted and populated (every kind of
metadata block: superblock and backup, used and never-used heartbeat slots
and journal headers, the three bitmap clusters, inline/sub-block/file-block
inodes, a map node, directory blocks), then fsck-tool flips bits one at a
time, every STRIDE-th bit of every block with a start rotating from block to
block, and runs the checker in-process after each: every flip must be
reported and none may crash it.  STRIDE 211 keeps the run near 10 s on an idle machine; the
environment variable FSCK_BITFLIP_STRIDE=1 flips every bit (about an hour).
The image goes to /dev/shm when it takes O_DIRECT (tmpfs since Linux 6.6),
else to $VMFSD_TEST_DIR or /var/tmp.
"""
import os
import shutil
import subprocess
import sys
import tempfile

MKFS = os.environ.get("MKFS")
TOOL = os.environ.get("FSCK_TOOL")
if not (MKFS and TOOL):
    print("MKFS and FSCK_TOOL must be set (run through meson test)")
    sys.exit(77)


def direct_ok(d):
    try:
        fd, path = tempfile.mkstemp(dir=d)
        os.close(fd)
        try:
            os.close(os.open(path, os.O_RDWR | os.O_DIRECT))
            return True
        finally:
            os.unlink(path)
    except OSError:
        return False


base = "/dev/shm" if direct_ok("/dev/shm") else os.environ.get("VMFSD_TEST_DIR", "/var/tmp")
work = tempfile.mkdtemp(prefix="vmfsd-bitflip-", dir=base)
try:
    img = os.path.join(work, "flip.img")
    subprocess.run([MKFS, "-q", "-H", "2", "-s", "200M", img], check=True)
    subprocess.run([TOOL, "populate", img, "20"], check=True)
    if sys.argv[1:] == ["repairfuzz"]:
        rounds = os.environ.get("FSCK_REPAIRFUZZ_ROUNDS", "150")
        r = subprocess.run([TOOL, "repairfuzz", img, rounds,
                            os.environ.get("FSCK_REPAIRFUZZ_SEED", "1")])
    else:
        stride = os.environ.get("FSCK_BITFLIP_STRIDE", "211")
        r = subprocess.run([TOOL, "bitflip", img, stride])
    sys.exit(r.returncode)
finally:
    shutil.rmtree(work, ignore_errors=True)
