#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""No shell script of the project pipes into a reader that stops early
while pipefail is on.

Under `set -o pipefail`, `producer | grep -q WORD` (or `| head -n1`) fails
now and then: the reader exits at its first match, the producer's next
write gets SIGPIPE, and the pipeline's status is 141 although the match was
found.  scripts/test-guest.sh did so in 5 of 50 runs (`busybox --list |
grep -qx acpid`), which made it run apt-get on an offline machine.

The check is textual: every *.sh under scripts/, tests/ and bench/ that
turns pipefail on must not contain `| grep -q...`, `| grep ... -q` or
`| head`.  It also shows the failure mode is real: a pipeline whose
producer keeps writing after grep -q matched exits 141 under pipefail.
"""

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EARLY = re.compile(r"\|\s*(grep\s+(-\w*q\w*|[^|;&]*\s-\w*q\w*)\b|head\b)")


def scripts():
    for top in ("scripts", "tests", "bench"):
        for d, _, files in os.walk(os.path.join(ROOT, top)):
            for f in files:
                if f.endswith(".sh"):
                    yield os.path.join(d, f)


def main():
    bad = []
    n = 0
    for p in scripts():
        text = open(p, errors="replace").read()
        if "pipefail" not in text:
            continue
        n += 1
        for i, line in enumerate(text.splitlines(), 1):
            code = line.split("#", 1)[0] if not line.lstrip().startswith("#") else ""
            if EARLY.search(code):
                bad.append("%s:%d: %s" % (os.path.relpath(p, ROOT), i, line.strip()))
    # the failure mode itself: grep -q stops reading, seq gets SIGPIPE
    r = subprocess.run(["bash", "-c", "set -o pipefail; seq 1 2000000 | grep -qx 1; echo $?"],
                       capture_output=True, text=True)
    print("bash: set -o pipefail; seq 1 2000000 | grep -qx 1 -> status %s" % r.stdout.strip())
    for b in bad:
        print("FAIL: early-exiting reader in a pipe under pipefail: %s" % b)
    print("%d script(s) with pipefail checked, %d finding(s)" % (n, len(bad)))
    return 1 if bad else 0


sys.exit(main())
