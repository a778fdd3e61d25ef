#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""fsck.vmfsd corruption matrix and behaviour tests.

For every structure type a small volume (mkfs.vmfsd + fsck-tool populate,
through the real fs/ code) is damaged by fsck-tool at offsets computed from
the superblock; then:
  fsck.vmfsd -n --json   must exit 4 and report the expected problem code(s),
  fsck.vmfsd -y          must exit 1 (everything corrected),
  fsck.vmfsd -n          must exit 0 (clean),
and the volume must mount again.  Also: a host that died (journal replay,
stale heartbeat, unlinked orphan) repaired by preen, a volume in use (read-
only check allowed, repair refused naming the host), preen refusing what it
may not fix and writing nothing, "not a vmfsd volume", usage errors, and
the progress and JSON outputs.

Environment (set by meson): FSCK, MKFS, FSCK_TOOL; images go to a fresh
folder under $VMFSD_TEST_DIR or /var/tmp (O_DIRECT needed).  Prints TAP.
"""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import vmfstest as vt  # noqa: E402  (tests/vmfstest.py: the shared helpers)

FSCK = os.environ.get("FSCK")
MKFS = os.environ.get("MKFS")
TOOL = os.environ.get("FSCK_TOOL")

if not (FSCK and MKFS and TOOL):
    print("1..0 # SKIP FSCK, MKFS and FSCK_TOOL must be set (run through meson test)")
    sys.exit(0)

WORK = tempfile.mkdtemp(prefix="vmfsd-fsck-", dir=os.environ.get("VMFSD_TEST_DIR", "/var/tmp"))
BASE = os.path.join(WORK, "base.img")
results = []


def run(args, **kw):
    return subprocess.run(args, capture_output=True, text=True, **kw)


def must(args):
    p = run(args)
    if p.returncode != 0:
        raise AssertionError("%s: exit %d\n%s%s" % (" ".join(args), p.returncode, p.stdout,
                                                   p.stderr))
    return p.stdout


def fsck(img, *opts):
    """Runs fsck.vmfsd --json OPTS IMG: (exit status, report)."""
    p = run([FSCK, "--json", *opts, img])
    try:
        rep = json.loads(p.stdout)
    except ValueError:
        raise AssertionError("fsck %s: not JSON (exit %d):\n%s\n%s" %
                             (" ".join(opts), p.returncode, p.stdout, p.stderr))
    if rep["exit_status"] != p.returncode:
        raise AssertionError("JSON exit_status %d != exit %d" % (rep["exit_status"],
                                                                 p.returncode))
    return p.returncode, rep


def codes(rep):
    return {p["code"] for p in rep["problems"] if p["severity"] == "error"}


def info(img, path):
    out = must([TOOL, "info", img, path]).split()
    return {k: (int(v, 8) if k == "mode" else int(v)) for k, v in (t.split("=") for t in out)}


def corrupt(img, *args):
    must([TOOL, "corrupt", img, *[str(a) for a in args]])


def digest(img, skip_heartbeats=False):
    """SHA-256 of the image; with SKIP_HEARTBEATS, of everything but the
    heartbeat region (a mounted host rewrites its slot every second)."""
    sb = info_sb(img)
    lo, hi = sb["hb_off"], sb["hb_off"] + sb["max_hosts"] * 4096
    h = hashlib.sha256()
    with open(img, "rb") as f:
        pos = 0
        for chunk in iter(lambda: f.read(1 << 20), b""):
            if skip_heartbeats and pos < hi and pos + len(chunk) > lo:
                chunk = bytearray(chunk)
                a, b = max(lo, pos) - pos, min(hi, pos + len(chunk)) - pos
                chunk[a:b] = bytes(b - a)
            h.update(chunk)
            pos += len(chunk)
    return h.hexdigest()


def fresh(name):
    img = os.path.join(WORK, name + ".img")
    subprocess.run(["cp", "--sparse=always", BASE, img], check=True)
    return img


def explain(rep):
    return "\n".join("    %s: %s [%s]" % (p["code"], p["message"], p["action"])
                     for p in rep["problems"])


def check_cycle(img, want, fix_opt="-y", fix_exit=1):
    """-n finds WANT (a set of codes, all of which must appear), FIX_OPT
    repairs, -n is clean again and the volume mounts."""
    r, rep = fsck(img, "-n")
    if r != 4:
        raise AssertionError("fsck -n exit %d, expected 4\n%s" % (r, explain(rep)))
    missing = set(want) - codes(rep)
    if missing:
        raise AssertionError("fsck -n did not report %s; it said:\n%s" %
                             (sorted(missing), explain(rep)))
    for p in rep["problems"]:
        if not p["message"] or (p["severity"] == "error" and p["action"] != "not fixed"):
            raise AssertionError("bad problem entry %r" % p)
    r, rep2 = fsck(img, fix_opt)
    if r != fix_exit:
        raise AssertionError("fsck %s exit %d, expected %d\n%s" % (fix_opt, r, fix_exit,
                                                                  explain(rep2)))
    if fix_exit == 1 and rep2["left"]:
        raise AssertionError("fsck %s left %d problem(s)" % (fix_opt, rep2["left"]))
    r, rep3 = fsck(img, "-n")
    if r != 0:
        raise AssertionError("second fsck -n exit %d, expected 0\n%s" % (r, explain(rep3)))
    info(img, "/")         # mounts (read-only) and finds the root
    return rep, rep2


# ---------------------------------------------------------------- cases
CASES = []


def case(fn):
    CASES.append(fn)
    return fn


@case
def superblock_primary(img, ino):
    corrupt(img, "sb-primary")
    rep, _ = check_cycle(img, {"superblock.primary"})
    assert rep["volume"]["superblock"] == "backup"


@case
def superblock_backup(img, ino):
    corrupt(img, "sb-backup")
    check_cycle(img, {"superblock.backup"})


@case
def superblock_backup_differs(img, ino):
    corrupt(img, "sb-backup-label")
    rep, _ = check_cycle(img, {"superblock.backup-differs"})
    assert "label" in " ".join(p["message"] for p in rep["problems"])


@case
def journal_other_format(img, ino):
    # A dirty journal left by an earlier format of the device (same UUID,
    # another format generation): reported, reset, and never replayed.
    mode = info(img, "/medium")["mode"]
    corrupt(img, "journal-foreign", ino["/medium"])
    check_cycle(img, {"journal.other-format"})
    assert info(img, "/medium")["mode"] == mode, "a journal of another format was replayed"


@case
def journal_needs_replay(img, ino):
    corrupt(img, "journal-dirty", ino["/medium"])
    rep, rep2 = check_cycle(img, {"journal.needs-replay"})
    assert rep["journals"]["dirty"] == 1
    assert rep2["journals"]["replayed"] == 1 and rep2["journals"]["transactions"] == 1
    assert info(img, "/medium")["mode"] & 0o777 == 0o600, "replay did not apply"


@case
def heartbeat_stale(img, ino):
    corrupt(img, "hb-stale", 2)
    rep, _ = check_cycle(img, {"heartbeat.stale"})
    assert "ghost" in explain(rep)


@case
def heartbeat_damaged(img, ino):
    corrupt(img, "flip", info_sb(img)["hb_off"] + 3 * 4096 + 100, 1)
    check_cycle(img, {"heartbeat.damaged"})


@case
def lock_stale(img, ino):
    """A lock held by a slot that is gone: docs/cluster.md §4.2 breaks locks
    lazily, so this is a note (exit 0) that a repair clears."""
    corrupt(img, "lock-stale", ino["/large"])
    r, rep = fsck(img, "-n")
    assert r == 0 and "lock.stale" in {p["code"] for p in rep["problems"]}, explain(rep)
    r, rep = fsck(img, "-y")
    assert r == 0, explain(rep)
    r, rep = fsck(img, "-n")
    assert r == 0 and not rep["problems"], explain(rep)


@case
def lock_damaged(img, ino):
    corrupt(img, "lock-stale", ino["/medium"])
    corrupt(img, "lock-bad", ino["/medium"])
    check_cycle(img, {"lock.damaged"})


@case
def cluster_damaged(img, ino):
    corrupt(img, "rc-bad", "sub")
    check_cycle(img, {"cluster.damaged"})


@case
def bitmap_leak(img, ino):
    corrupt(img, "bm-set", "block", 50)
    corrupt(img, "bm-set", "sub", 3000)
    corrupt(img, "bm-set", "inode", 4000)
    rep, _ = check_cycle(img, {"bitmap.leaked"})
    msgs = explain(rep)
    assert "3000" in msgs and "50" in msgs and "4000" in msgs, msgs


@case
def bitmap_unmarked(img, ino):
    corrupt(img, "bm-clear", "block", info(img, "/large")["first"])
    corrupt(img, "bm-clear", "sub", info(img, "/d1")["first"])
    check_cycle(img, {"bitmap.unmarked"})


@case
def double_allocation(img, ino):
    corrupt(img, "dup", ino["/medium"], ino["/prealloc"])
    rep, _ = check_cycle(img, {"map.double-reference"})
    dup = [p for p in rep["problems"] if p["code"] == "map.double-reference"]
    assert dup[0]["location"]["inode"] == ino["/prealloc"], dup  # the later owner loses it


@case
def map_entry_out_of_range(img, ino):
    corrupt(img, "map-range", ino["/medium"])
    check_cycle(img, {"map.entry"})


@case
def inode_checksum(img, ino):
    corrupt(img, "inode-csum", ino["/d1/f1"])
    rep, _ = check_cycle(img, {"inode.damaged", "entry.target"})
    assert any(p["location"].get("name") == "f1" for p in rep["problems"]), explain(rep)


@case
def inode_nlink(img, ino):
    corrupt(img, "inode-nlink", ino["/medium"], 5)
    check_cycle(img, {"inode.nlink"})
    assert info(img, "/medium")["nlink"] == 1


@case
def directory_nlink(img, ino):
    corrupt(img, "inode-nlink", ino["/d1"], 2)
    check_cycle(img, {"inode.nlink"})
    assert info(img, "/d1")["nlink"] == 3


@case
def inode_alloc_units(img, ino):
    corrupt(img, "inode-units", ino["/large"], 7)
    check_cycle(img, {"inode.alloc-units"})
    assert info(img, "/large")["alloc_units"] == 3 * 2048


@case
def inode_size_vs_map(img, ino):
    corrupt(img, "inode-size", ino["/large"], 1 << 20)
    check_cycle(img, {"map.past-eof", "inode.alloc-units"})
    assert info(img, "/large")["alloc_units"] == 2048


@case
def inline_tail(img, ino):
    corrupt(img, "inode-tail", ino["/small"])
    check_cycle(img, {"inode.inline-tail"})


@case
def map_node(img, ino):
    corrupt(img, "map-node", ino["/sparse"])
    check_cycle(img, {"map.node"})


@case
def directory_block(img, ino):
    corrupt(img, "dir-block", ino["/d1"])
    rep, rep2 = check_cycle(img, {"directory.block", "inode.unreachable"})
    assert rep2["lost_found"]["created"] and rep2["lost_found"]["reconnected"] == 2
    assert info(img, "/lost+found/#%d" % ino["/d1/sub"])["ino"] == ino["/d1/sub"]
    assert info(img, "/lost+found/#%d/deep" % ino["/d1/sub"])["ino"] == ino["/d1/sub/deep"]
    assert info(img, "/lost+found/#%d" % ino["/d1/f1"])["nlink"] == 1


@case
def entry_to_free_inode(img, ino):
    corrupt(img, "bm-clear", "inode", ino["/medium"])
    rep, _ = check_cycle(img, {"entry.target"})
    assert any("free" in p["message"] for p in rep["problems"]), explain(rep)


@case
def entry_repointed(img, ino):
    corrupt(img, "dent-ino", 1, "medium", 5000)     # a free inode number
    check_cycle(img, {"entry.target", "inode.unreachable"})
    assert info(img, "/lost+found/#%d" % ino["/medium"])["size"] == 10240


@case
def entry_type(img, ino):
    corrupt(img, "dent-add", 1, "medium-again", ino["/medium"], 4)   # says directory
    check_cycle(img, {"entry.type", "inode.nlink"})
    assert info(img, "/medium-again")["nlink"] == 2


@case
def duplicate_name(img, ino):
    corrupt(img, "dent-add", ino["/d1"], "f1", ino["/medium"], 8)
    check_cycle(img, {"entry.duplicate"})
    assert info(img, "/d1/f1")["ino"] == ino["/d1/f1"]


@case
def directory_cycle(img, ino):
    corrupt(img, "dent-add", ino["/d1/sub"], "loop", ino["/d1"], 4)
    check_cycle(img, {"directory.extra-name"})


@case
def directory_parent(img, ino):
    corrupt(img, "inode-parent", ino["/d1/sub"], 1)
    check_cycle(img, {"directory.parent"})
    assert info(img, "/d1/sub")["parent"] == ino["/d1"]


@case
def unreachable_file(img, ino):
    corrupt(img, "dent-del", 1, "large")
    rep, rep2 = check_cycle(img, {"inode.unreachable"})
    assert rep2["lost_found"]["reconnected"] == 1
    assert info(img, "/lost+found/#%d" % ino["/large"])["size"] == 3 << 20


@case
def unlinked_orphan(img, ino):
    corrupt(img, "dent-del", 1, "large")
    corrupt(img, "inode-nlink", ino["/large"], 0)
    rep, rep2 = check_cycle(img, {"inode.orphan"}, fix_opt="-p")
    assert rep2["lost_found"]["released"] == 1 and not rep2["lost_found"]["created"]


@case
def root_damaged(img, ino):
    corrupt(img, "inode-csum", 1)
    rep, rep2 = check_cycle(img, {"root", "inode.unreachable"})
    assert rep2["lost_found"]["created"]
    assert info(img, "/lost+found/#%d/f1" % ino["/d1"])["ino"] == ino["/d1/f1"]


def info_sb(img):
    with open(img, "rb") as f:
        sb = f.read(512)
    return {"hb_off": int.from_bytes(sb[184:192], "little"),
            "max_hosts": int.from_bytes(sb[168:172], "little")}


# ---------------------------------------------------------------- behaviour
@case
def dead_host_preen(img, ino):
    """A host killed while mounted: its journal holds transactions, its slot
    says live, an unlinked file was still open.  -p repairs it all."""
    p = run([TOOL, "crash", img])
    assert p.returncode == 0, p.stderr
    # The fs checkpoints its journal clean whenever it hands locks back, so
    # add the transaction a host dies with between commit and checkpoint.
    corrupt(img, "journal-dirty", ino["/medium"])
    rep, rep2 = check_cycle(img, {"journal.needs-replay", "heartbeat.stale", "inode.orphan"},
                            fix_opt="-p")
    assert rep2["journals"]["replayed"] == 1
    assert info(img, "/medium")["mode"] & 0o777 == 0o600, "replay did not apply"


@case
def volume_in_use(img, ino):
    holder = subprocess.Popen([TOOL, "hold", img, "30"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "mounted"
        r, rep = fsck(img, "-n")
        assert r == 0, explain(rep)
        assert rep["in_use"]["live"] and rep["in_use"]["host"] == "fscktest"
        assert any(p["code"] == "volume.in-use" for p in rep["problems"])
        before = digest(img, skip_heartbeats=True)
        r, rep = fsck(img, "-y")
        assert r == 8 and "fscktest" in rep["error"], rep
        p = run([FSCK, "-y", img])
        assert p.returncode == 8 and "in use by host 'fscktest'" in p.stderr, p.stderr
        assert digest(img, skip_heartbeats=True) == before, "a refused repair wrote"
    finally:
        holder.terminate()
        vt.hangdump.wait_or_dump(holder, 60, "fsck-tool hold still running 60 s after SIGTERM")


@case
def preen_refuses(img, ino):
    corrupt(img, "inode-csum", ino["/d1/f1"])
    before = digest(img)
    r, rep = fsck(img, "-p")
    assert r == 4 and rep["preen_refused"] and rep["fixed"] == 0, explain(rep)
    assert digest(img) == before, "preen wrote although it refused"
    p = run([FSCK, "-p", img])
    assert p.returncode == 4 and "UNEXPECTED INCONSISTENCY" in p.stdout, p.stdout
    check_cycle(img, {"inode.damaged"})


@case
def no_mode_is_read_only(img, ino):
    corrupt(img, "inode-nlink", ino["/medium"], 9)
    before = digest(img)
    p = run([FSCK, img])
    assert p.returncode == 4, p.stdout + p.stderr
    assert "needs -y" in p.stdout or "to repair, run" in p.stdout, p.stdout
    assert digest(img) == before


@case
def not_a_volume(img, ino):
    with open(img, "r+b") as f:
        f.write(b"\0" * 8192)
        f.seek(-8192, 2)
        f.write(b"\0" * 8192)
    p = run([FSCK, "-n", img])
    assert p.returncode == 8 and "not a vmfsd volume" in p.stderr, (p.returncode, p.stderr)
    r, rep = fsck(img, "-n")
    assert r == 8 and rep["error"] == "not a vmfsd volume"
    p = run([FSCK, "-n", os.path.join(WORK, "no-such-file")])
    assert p.returncode == 8


@case
def usage_errors(img, ino):
    for args in (["-n", "-y", img], ["-y", "-p", img], [], ["-n", img, img], ["--bogus", img]):
        p = run([FSCK, *args])
        assert p.returncode == 16, (args, p.returncode, p.stderr)
    p = run([FSCK, "-V"])
    assert p.returncode == 0 and "fsck.vmfsd" in p.stdout
    p = run([FSCK, "--help"])
    assert p.returncode == 0 and "-n" in p.stdout


@case
def progress_and_force(img, ino):
    r, w = os.pipe()
    p = subprocess.run([FSCK, "-f", "-n", "-C", str(w), img], pass_fds=(w,),
                       capture_output=True, text=True)
    os.close(w)
    lines = os.read(r, 1 << 20).decode().splitlines()
    os.close(r)
    assert p.returncode == 0 and "always full" in p.stdout, p.stdout
    assert lines and all(len(l.split()) == 4 for l in lines), lines
    assert {int(l.split()[0]) for l in lines} >= {1, 3, 6}, lines
    p = run([FSCK, "-n", "-C", "0", img])
    assert p.returncode == 0 and "pass" in p.stdout and "clean" in p.stdout


# ---------------------------------------------------------------- main
def main():
    vt.mkfs(BASE, "256M", ["-f", "-H", "8"])
    must([TOOL, "populate", BASE])
    r, rep = fsck(BASE, "-n")
    assert r == 0, "fresh volume not clean:\n" + explain(rep)
    ino = {p: info(BASE, p)["ino"] for p in
           ("/small", "/medium", "/large", "/sparse", "/prealloc", "/d1", "/d1/sub",
            "/d1/sub/deep", "/d1/f1", "/d2")}
    print("1..%d" % len(CASES))
    failed = 0
    for i, fn in enumerate(CASES, 1):
        img = fresh(fn.__name__)
        t0 = time.monotonic()
        try:
            fn(img, ino)
            print("ok %d - %s (%.1f s)" % (i, fn.__name__, time.monotonic() - t0))
        except Exception as e:      # report every case, then fail
            failed += 1
            print("not ok %d - %s" % (i, fn.__name__))
            where = traceback.extract_tb(e.__traceback__)[-1]
            for line in (str(e).splitlines() or [repr(e)]) + \
                    ["at %s line %d" % (where.name, where.lineno)]:
                print("# " + line)
        finally:
            os.unlink(img)
        sys.stdout.flush()
    shutil.rmtree(WORK, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        shutil.rmtree(WORK, ignore_errors=True)
