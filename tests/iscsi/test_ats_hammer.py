#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""ATS over iSCSI against a real target (istgt in its own network
namespace): several initiators, each a process in its own host namespace,
increment one 64-bit counter in one sector with COMPARE AND WRITE at the
same time; the final value must be exactly the sum of their increments (no
lost update).  Also: a CAW with a wrong expectation miscompares, reports the
sector and writes nothing; a read-write open of the LUN proved CAW with its
trial command (bdev_open would have refused otherwise).

Env: ISCSI_TOOL.  Exit 0 pass, 1 fail, 77 no root / no network namespaces.
"""
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import san  # noqa: E402

TOOL = os.environ.get("ISCSI_TOOL")
HOSTS = 4
N = 1500
SECTOR = 2000          # well inside the 64 MiB LUN; no volume on it


def main():
    if os.geteuid() != 0:
        print("SKIP: needs root (network namespaces)")
        return san.SKIP
    san.require_netns()
    fails = []
    with san.San(64 << 20) as s:
        hosts = [s.add_host() for _ in range(HOSTS)]
        r = hosts[0].run([TOOL, "caw", s.url, str(SECTOR)], timeout=60)
        print(r.stdout.strip(), r.stderr.strip())
        if r.returncode:
            fails.append("a CAW with a wrong expectation did not miscompare cleanly")
        env = dict(os.environ, ISCSI_TOOL_START="%.3f" % (time.time() + 4))
        procs = [h.popen([TOOL, "hammer", s.url, str(SECTOR), str(N), "h%d" % h.idx],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
                 for h in hosts]
        retries = 0
        for h, p in zip(hosts, procs):
            out, err = p.communicate(timeout=600)
            if p.returncode:
                fails.append("hammer on host %d failed: %s" % (h.idx, err.strip()))
            else:
                retries += int(out.split()[3])
        r = hosts[0].run([TOOL, "read", s.url, str(SECTOR)], timeout=60)
        got = int(r.stdout) if r.returncode == 0 else None
        print("counter %s after %d initiators x %d increments (%d miscompares retried)"
              % (got, HOSTS, N, retries))
        if got != HOSTS * N:
            fails.append("lost update: counter %s, expected %d" % (got, HOSTS * N))
        if retries == 0:
            print("note: no miscompare at all: the initiators did not overlap")
        r = hosts[0].run([TOOL, "bench", s.url, str(SECTOR + 1)], timeout=120)
        print("uncontended " + r.stdout.strip())
    for f in fails:
        print("FAIL: " + f)
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
