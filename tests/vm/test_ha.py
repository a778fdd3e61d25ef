#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""HA failover (docs/ha.md): a dead or isolated host's VMs restart on the
survivors, each exactly once.

Three hosts A, B, C = three vmfsd mounts of one image plus a vmfs-hostd
each (real processes).  The guests (scripts/test-guest.sh, vmfs.period=0.1)
write a counter with O_DIRECT every 100 ms, and a per-run write log.  The
volume is made with a 5 s heartbeat timeout (--hb-interval 500
--hb-timeout 5000) instead of the default 10 s, only to keep the test
short; bench/ha.sh measures the default.

  test_ha.py kill       A runs four VMs (priorities high, medium, medium,
                        low); A dies as a power loss: SIGKILL of its vmfsd,
                        agent (and HA loop) and QEMUs at once.  Every VM runs
                        again on B or C, exactly once (every agent's QMP view
                        and the lock records agree, sampled for a while),
                        each guest's counter continues from the disk.
  test_ha.py isolate    A's storage freezes (vmfsd -o fault_on_usr1,
                        freeze_io_for=...): A fences, its QEMUs die before any
                        survivor starts one (sampled every 10 ms), the write
                        log of A's guests has nothing after the survivor's
                        start; A remounted rejoins empty and starts nothing.
  test_ha.py two-dead   A and B die at once, C has room (--max-memory) for
                        two of their four VMs: it starts the two of highest
                        priority, reports the others (events, ha status), and
                        starts one when a VM of its own is powered off.
  test_ha.py vmfsd-dies only A's vmfsd is killed: A's agent kills its QEMUs
                        (nothing can fence a dead vmfsd), then B or C
                        restarts the VM.
  test_ha.py migrated   A runs vm1 and vm2 and live-migrates vm1 to B
                        (agents with --migration-address); then A dies as
                        a power loss: vm2 runs again on B or C, vm1 goes on
                        on B with the same QEMU (never restarted, no
                        ha.restarted event for it), each exactly once, and
                        only B's protected list names vm1 (docs/ha.md §4).
  test_ha.py long N     N rounds of kill and isolate (suite ha-long),
                        counting double runs: must be 0.
"""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vmtest  # noqa: E402
from vmtest import wait_for  # noqa: E402

MKFS_ARGS = ["--hb-interval", "500", "--hb-timeout", "5000"]
MEM = 128          # MiB per guest: four run on one host of a 2-core machine
APPEND = "console=ttyS0 quiet vmfs.period=0.1"
PRIOS = {"vm1": "high", "vm2": "medium", "vm3": None, "vm4": "low"}


def idle_agents_check(c, agents):
    """An idle agent sweeps once a second; it used to fork sweeps back to
    back (each one's SIGCHLD woke its loop): ~12 % of a CPU each.  CPU time
    (not wall time) of 5 idle seconds, so the machine's load does not
    matter."""
    def ticks(pid):
        with open("/proc/%d/stat" % pid) as f:
            v = f.read().rsplit(")", 1)[1].split()
        return sum(int(x) for x in v[11:15])     # utime stime cutime cstime
    hz = os.sysconf("SC_CLK_TCK")
    before = {h: ticks(ag.proc.pid) for h, ag in agents.items()}
    time.sleep(5)
    for h, ag in agents.items():
        used = (ticks(ag.proc.pid) - before[h]) / hz
        c.check(used < 0.3, "idle agent %s used %.2f s of CPU in 5 s" % (h, used))


def qemus_of(agent):
    """QEMUs started by AGENT (their command line names its state folder)."""
    return vmtest.qemu_pids(agent.state) if os.path.isdir(agent.state) else []


def power_loss(vol, host, agent):
    """SIGKILL of everything of HOST at once: vmfsd, the agent (and its
    children: HA loop, sweep), its QEMUs."""
    victims = [vol.procs[host].pid] + vmtest.procs_of(agent.state.encode())
    for p in victims:
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass
    t0 = time.time()
    agent.proc.wait()
    agent.proc = None
    vol.procs[host].wait()
    mnt = [m for m, pr in vol.mounts if pr is vol.procs[host]][0]
    subprocess.run(["umount", "-l", mnt], capture_output=True)
    return t0


def setup(vol, hosts, agent_extra=None, mount_opts=None):
    mnts, agents = {}, {}
    for h in hosts:
        o = (mount_opts or {}).get(h, "")
        mnts[h] = vol.mount(h, opts=o)
    for h in hosts:
        agents[h] = vol.agent(h, (agent_extra or {}).get(h, ()))
    return mnts, agents


def create_vms(c, agent, mnt, names, kernel, initrd, seen_from=None):
    """Creates and powers on NAMES and waits for each guest's counter in
    its log as the mount SEEN_FROM reads it: another host's view is what
    a survivor finds once this one dies (the agent syncs each log copy)."""
    for n in names:
        vm = os.path.join(mnt, n)
        agent.ok("create", vm, "--cpus", 1, "--memory", MEM, "--disk", "64M", "--kernel", kernel,
                 "--initrd", initrd, "--append", APPEND, "--net", "none")
        if PRIOS.get(n):
            with open(os.path.join(vm, n + ".vmx"), "a") as f:
                f.write('vmfsd.ha.restartPriority = "%s"\n' % PRIOS[n])
        agent.ok("power-on", vm)
    for n in names:
        vmtest.wait_counter(os.path.join(seen_from or mnt, n), n, 3, timeout=180)


def where(agents, mnts, name):
    """{host: pid} of every agent that runs NAME now, by its own QMP view
    (info: local, qemu_status running)."""
    out = {}
    for h, ag in agents.items():
        if ag.proc is None:
            continue
        r = ag.ctl("--json", "info", os.path.join(mnts[h], name), timeout=60)
        if r.returncode != 0:
            continue
        i = json.loads(r.stdout)
        if i.get("local") and i.get("pid") and i.get("qemu_status") in ("running", "paused"):
            out[h] = i["pid"]
    return out


def lock_holder(mnt, name):
    try:
        return os.getxattr(os.path.join(mnt, name, name + ".vmx.lck"),
                           "user.vmfsd.lock").decode()
    except OSError as e:
        return "error: %s" % e


def check_once(c, agents, mnts, names, seconds, tag):
    """For SECONDS: every VM runs on exactly one live host, and its lock
    record is held by that host.  Returns the number of double runs."""
    doubles = 0
    end = time.monotonic() + seconds
    last = {}
    while True:
        for n in names:
            w = where(agents, mnts, n)
            if len(w) > 1:
                doubles += 1
                c.fail("%s: %s runs on %d hosts at once: %r" % (tag, n, len(w), w))
            if len(w) == 1:
                h = list(w)[0]
                lk = lock_holder(mnts[h], n)
                c.check(lk.startswith("EXCL by %s " % h),
                        "%s: %s runs on %s but its lock record says %r" % (tag, n, h, lk))
                last[n] = h
        if time.monotonic() > end:
            return doubles, last
        time.sleep(0.5)


def continued(c, mnt, name):
    """The new run found the counter the old run left on the disk."""
    def booted():
        return re.search(r"previous counter (-?\d+)", vmtest.read_log(os.path.join(mnt, name), name))
    m = wait_for(booted, 180, "%s: the restarted guest's first line" % name, step=0.5)
    prev = int(m.group(1)) if m else None
    old = vmtest.read_log(os.path.join(mnt, name), name + "-1")
    oc = vmtest.counters(old)
    c.check(prev is not None and oc and prev >= oc[-1],
            "%s: the restarted guest read counter %r; the old run had logged up to %r"
            % (name, prev, oc[-1] if oc else None))
    return prev


def restarted_events(agents):
    out = {}
    for h, ag in agents.items():
        if ag.proc is None:
            continue
        for e in json.loads(ag.ok("--json", "events"))["events"]:
            if e["type"] == "ha.restarted":
                out[os.path.basename(os.path.dirname(e["vmx"]))] = (h, e["time_ms"] / 1000.0)
    return out


def scenario_kill(c, kernel, initrd, rounds=1):
    names = ["vm1", "vm2", "vm3", "vm4"]
    doubles = 0
    with vmtest.Volume("ha-kill", checker=c, mkfs_args=MKFS_ARGS) as vol:
        mnts, agents = setup(vol, ["A", "B", "C"])
        st = {}

        def run_on_a():
            create_vms(c, agents["A"], mnts["A"], names, kernel, initrd, seen_from=mnts["B"])
            prot = os.listdir(os.path.join(mnts["B"], ".vmfsd/ha/protected/A"))
            c.eq(len([p for p in prot if p.endswith(".json")]), 4, "A's protected list seen from B")
            hs = json.loads(agents["B"].ok("--json", "ha", "status"))
            c.check(len(hs["datastores"][0]["protected"]) == 4, "ha status on B: %r" % hs)
            # vm2 runs on a snapshot delta: its restart must use the chain
            # (the counter it reads at boot is in the delta, not the extent)
            agents["A"].ok("snapshot", "create", os.path.join(mnts["A"], "vm2"), "pre-ha")

        def kill_a():
            st["t0"] = power_loss(vol, "A", agents["A"])
            print("    A killed (vmfsd, agent, QEMUs) at %.3f" % st["t0"])

            def all_back():
                return all(len(where(agents, mnts, n)) == 1 for n in names)
            wait_for(all_back, 120, "every VM running again on B or C", step=0.5)
            # the HA loop writes ha.restarted once its attempt's process
            # ended: a moment after the VM runs
            ev = {}

            def all_events():
                ev.update(restarted_events(agents))
                return set(ev) == set(names)
            try:
                wait_for(all_events, 30, "an ha.restarted event for every VM", step=0.5)
            except TimeoutError:
                pass
            for n in names:
                if n in ev:
                    print("    %s: running on %s %.1f s after the kill" % (n, ev[n][0],
                                                                         ev[n][1] - st["t0"]))
            c.check(set(ev) == set(names), "ha.restarted events: %r" % ev)
            # the survivors' vmfsd logs tell the story in order: A declared
            # dead, then its journal replayed and its locks broken by this
            # host; or, on the other survivor, seen recovered by another
            # host (it may not have judged A dead itself before the one
            # that did had freed the slot: one look per commit interval)
            replayers = []
            for h in ("B", "C"):
                lines = vol.vmfsd_log(h).splitlines()
                dead = [i for i, ln in enumerate(lines) if "host A (slot" in ln and "declared dead" in ln]
                done = [i for i, ln in enumerate(lines) if "host A (slot" in ln and
                        ("replayed its journal" in ln or "was recovered by another host" in ln)]
                replayed = any("this host replayed its journal" in lines[i] for i in done)
                c.check(done and (dead[0] < done[0] if dead else not replayed),
                        "%s's vmfsd log lacks A's death before its recovery: %s" % (
                            h, [ln for ln in lines if "host A" in ln]))
                if replayed:
                    replayers.append(h)
                print("    %s's vmfsd: %s" % (h, "; ".join(lines[i].split(": ", 2)[-1]
                                                       for i in dead[:1] + done[:1])))
            c.eq(len(replayers), 1, "hosts that logged replaying A's journal (%s)" % replayers)

        def exactly_once():
            d, last = check_once(c, agents, mnts, names, 8, "after the kill")
            st["doubles"] = d
            for n in names:
                h = last.get(n)
                c.check(h in ("B", "C"), "%s ended up on %r" % (n, h))
                if h:
                    prev = continued(c, mnts[h], n)
                    vmtest.wait_counter(os.path.join(mnts[h], n), n, (prev or 0) + 2)
            h = last.get("vm2")
            if h:
                sl = json.loads(agents[h].ok("--json", "snapshot", "list", os.path.join(mnts[h], "vm2")))
                c.eq(([x["name"] for x in sl["snapshots"]], len(sl["disks"][0]["chain"])), (["pre-ha"], 2),
                     "vm2's snapshot and chain after its HA restart on %s" % h)
            i = agents["B"].info(os.path.join(mnts["B"], "vm1"))
            c.check(i["state"] == "running" and i["host"] in ("B", "C"), "B's info of vm1: %r" % i)
            hs = json.loads(agents["C"].ok("--json", "ha", "status"))["datastores"][0]
            hosts = {h["host"]: h for h in hs["hosts"]}
            c.check(hosts["A"]["state"] != "live" and hosts["A"].get("died", {}).get("locks_broken"),
                    "ha status: A %r" % hosts.get("A"))
            c.check(sorted(p["host"] for p in hs["protected"]) != [] and
                    all(p["host"] in ("B", "C") for p in hs["protected"]),
                    "ha status protected: %r" % hs["protected"])
            print(agents["C"].ok("ha", "status"))

        if rounds == 1:
            c.section("idle agents stay idle", idle_agents_check, c, agents)
        c.section("A runs four protected VMs", run_on_a)
        if c.failures:
            return 0    # no failover happened: nothing ran twice (the failure counts)
        c.section("A dies (power loss): B and C restart its VMs", kill_a)
        c.section("each VM runs exactly once, its counter continues", exactly_once)
        doubles += st.get("doubles", 0)
    return doubles


def scenario_isolate(c, kernel, initrd):
    names = ["vm1", "vm2"]
    with vmtest.Volume("ha-isolate", checker=c, mkfs_args=MKFS_ARGS) as vol:
        sock_a = os.path.join(vol.work, "A.sock")
        mnts, agents = setup(vol, ["A", "B", "C"], mount_opts={
            "A": "fault_on_usr1,freeze_io_for=60000,hostd_socket=%s" % sock_a})
        st = {}

        def run_on_a():
            create_vms(c, agents["A"], mnts["A"], names, kernel, initrd, seen_from=mnts["B"])
            st["qa"] = {n: agents["A"].info(os.path.join(mnts["A"], n))["pid"] for n in names}

        def isolate_a():
            seen = {"a_dead": None, "survivor": None, "a_alive_at_survivor": []}
            stop = threading.Event()

            def watch():
                k = 0
                while not stop.is_set():
                    alive = [p for p in st["qa"].values() if vmtest.pid_alive(p)]
                    if not alive and seen["a_dead"] is None:
                        seen["a_dead"] = k
                    surv = qemus_of(agents["B"]) + qemus_of(agents["C"])
                    if surv and seen["survivor"] is None:
                        seen["survivor"] = k
                        seen["a_alive_at_survivor"] = [p for p in st["qa"].values()
                                                       if vmtest.pid_alive(p)]
                        return
                    k += 1
                    time.sleep(0.01)

            t = threading.Thread(target=watch)
            t.start()
            os.kill(vol.procs["A"].pid, signal.SIGUSR1)     # A's storage hangs now
            try:
                wait_for(lambda: all(len(where(agents, mnts, n)) == 1 for n in names), 120,
                         "both VMs running on B or C", step=0.5)
            finally:
                stop.set()
                t.join()
            print("    A's QEMUs dead at sample %s, first survivor QEMU at sample %s (10 ms apart)"
                  % (seen["a_dead"], seen["survivor"]))
            c.check(seen["survivor"] is not None, "no survivor QEMU seen")
            c.check(not seen["a_alive_at_survivor"],
                    "A's QEMU(s) %r alive when a survivor started one" % seen["a_alive_at_survivor"])
            c.check(seen["a_dead"] is not None and seen["survivor"] is not None and
                    seen["a_dead"] < seen["survivor"], "A's QEMUs not dead before the survivors' start")

        def write_order():
            for n in names:
                w = where(agents, mnts, n)
                h = list(w)[0]
                prev = continued(c, mnts[h], n)
                flat = os.path.join(mnts[h], n, n + "-flat.vmdk")
                vmtest.wait_counter(os.path.join(mnts[h], n), n, (prev or 0) + 3)
                with open(flat, "rb") as f:
                    run = f.read(1024)[512:].split(b"\0")[0].split()
                    cur = int(run[1])
                    old = (cur - 1) % 16
                    f.seek((2048 + old * 4096) * 512)
                    region = f.read(4096 * 512)
                seqs = []
                for k in range(4096):
                    rec = region[k * 512:(k + 1) * 512].split(b"\0")[0].split()
                    if len(rec) >= 4 and rec[0] == b"VMFSSEQ" and int(rec[3]) == cur - 1:
                        seqs.append(int(rec[1]))
                c.check(seqs and max(seqs) <= prev,
                        "%s: A's run (%d) wrote counter %r after the survivor read %d"
                        % (n, cur - 1, max(seqs) if seqs else None, prev))
                print("    %s: A's last write %s, survivor on %s started from %s" % (
                    n, max(seqs) if seqs else None, h, prev))

        def a_rejoins_empty():
            wait_for(lambda: "killed by the fence of volume" in agents["A"].log(), 30,
                     "A's agent logging the fence")
            mnt_a = mnts["A"]
            subprocess.run(["umount", "-l", mnt_a], capture_output=True)
            vol.procs["A"].wait(timeout=60)
            vol.mount("A", mnt=mnt_a)
            time.sleep(4)
            c.eq(qemus_of(agents["A"]), [], "A started QEMUs after it came back")
            pdir = os.path.join(mnt_a, ".vmfsd/ha/protected/A")
            left = [p for p in os.listdir(pdir) if p.endswith(".json")] if os.path.isdir(pdir) else []
            c.eq(left, [], "A's protected list after it rejoined")
            d, _ = check_once(c, agents, mnts, names, 4, "after A rejoined")

        c.section("A runs two protected VMs", run_on_a)
        if c.failures:
            return 1
        c.section("A's storage hangs: A fences, its QEMUs die before B/C start them", isolate_a)
        c.section("write order: nothing from A's guests after the restart", write_order)
        c.section("A comes back: rejoins empty, starts nothing", a_rejoins_empty)
    return 0


def scenario_two_dead(c, kernel, initrd):
    with vmtest.Volume("ha-two", checker=c, mkfs_args=MKFS_ARGS) as vol:
        # C has room for two guests of MEM MiB, not three
        mnts, agents = setup(vol, ["A", "B", "C"],
                             agent_extra={"C": ["--max-memory", 2 * MEM + MEM // 2]})
        names = ["vm1", "vm2", "vm3", "vm4"]

        def run():
            create_vms(c, agents["A"], mnts["A"], ["vm1", "vm3"], kernel, initrd)
            create_vms(c, agents["B"], mnts["B"], ["vm2", "vm4"], kernel, initrd)

        def kill_both():
            power_loss(vol, "A", agents["A"])
            power_loss(vol, "B", agents["B"])
            wait_for(lambda: len([n for n in names if where(agents, mnts, n)]) == 2, 120,
                     "two VMs running on C", step=0.5)
            time.sleep(3)
            on_c = sorted(n for n in names if where(agents, mnts, n))
            c.eq(on_c, ["vm1", "vm2"], "C took the high and medium priority VMs")
            hs = json.loads(agents["C"].ok("--json", "ha", "status"))["datastores"][0]
            nofit = {e.get("vmx", "").split("/")[0] for e in hs["events"]
                     if e["type"] == "ha.no-capacity"}
            c.eq(sorted(nofit), ["vm3", "vm4"], "no-capacity events in ha status")
            print(agents["C"].ok("ha", "status"))

        def visible_and_manual():
            i = agents["C"].info(os.path.join(mnts["C"], "vm3"))
            c.eq((i["state"], i["host"], i.get("host_dead", {}).get("locks_broken")),
                 ("host-dead", "A", True), "C's info of vm3 (its host A is dead)")
            # a manual power-on works without --force once A's locks are broken
            agents["C"].ok("power-on", os.path.join(mnts["C"], "vm4"))
            c.check("took over the stale lock record of host B" in agents["C"].log(),
                    "C did not log whose record it took over")
            agents["C"].ok("power-off", os.path.join(mnts["C"], "vm4"))

        def capacity_returns():
            agents["C"].ok("power-off", os.path.join(mnts["C"], "vm1"))
            wait_for(lambda: len([n for n in names if where(agents, mnts, n)]) == 2, 60,
                     "a waiting VM started once room appeared", step=0.5)
            on_c = sorted(n for n in names if where(agents, mnts, n))
            c.eq(on_c, ["vm2", "vm3"], "after vm1 was powered off, vm3 (medium) came before vm4 (low)")

        c.section("A and B run two VMs each", run)
        if c.failures:
            return
        c.section("A and B die at once: C takes what fits, reports the rest", kill_both)
        c.section("a dead host's VM shows host-dead; a manual power-on works", visible_and_manual)
        c.section("room appears: the next waiting VM starts", capacity_returns)


def scenario_vmfsd_dies(c, kernel, initrd):
    """Only A's vmfsd dies (SIGKILL): A's QEMUs lose their disk but live
    on; A's agent must kill them (nothing can fence a dead vmfsd) before
    the survivors restart the VM."""
    with vmtest.Volume("ha-vmfsd", checker=c, mkfs_args=MKFS_ARGS) as vol:
        mnts, agents = setup(vol, ["A", "B", "C"])
        st = {}

        def run_on_a():
            create_vms(c, agents["A"], mnts["A"], ["vm1"], kernel, initrd)
            st["pid"] = agents["A"].info(os.path.join(mnts["A"], "vm1"))["pid"]

        def kill_vmfsd():
            os.kill(vol.procs["A"].pid, signal.SIGKILL)
            t0 = time.monotonic()
            wait_for(lambda: not vmtest.pid_alive(st["pid"]), 20, "A's agent killing its QEMU")
            dead_after = time.monotonic() - t0
            c.check(not qemus_of(agents["B"]) and not qemus_of(agents["C"]),
                    "a survivor started the VM before A's QEMU was dead")
            print("    A's QEMU killed by its agent %.1f s after its vmfsd died" % dead_after)
            wait_for(lambda: len(where(agents, mnts, "vm1")) == 1, 120, "vm1 back on B or C",
                     step=0.5)
            c.check("ha.datastore-lost" in json.dumps(json.loads(agents["A"].ok(
                "--json", "events"))), "A's agent logged no ha.datastore-lost event")

        c.section("A runs a VM", run_on_a)
        if c.failures:
            return
        c.section("A's vmfsd dies: its agent kills the QEMU, B or C restarts it", kill_vmfsd)


def scenario_migrated(c, kernel, initrd):
    names = ["vm1", "vm2"]
    mig = ["--migration-address", "127.0.0.1"]
    with vmtest.Volume("ha-migrated", checker=c, mkfs_args=MKFS_ARGS) as vol:
        mnts, agents = setup(vol, ["A", "B", "C"], agent_extra={h: mig for h in "ABC"})
        st = {}

        def listed(name):
            out = set()
            top = os.path.join(mnts["C"], ".vmfsd", "ha", "protected")
            for h in os.listdir(top):
                for f in os.listdir(os.path.join(top, h)):
                    try:
                        with open(os.path.join(top, h, f)) as fh:
                            if json.load(fh).get("vmx") == "%s/%s.vmx" % (name, name):
                                out.add(h)
                    except (OSError, ValueError):
                        pass
            return out

        def run_and_migrate():
            wait_for(lambda: os.path.exists(os.path.join(mnts["A"], ".vmfsd", "agents",
                                                         "B.migration")), 60, "B's address")
            create_vms(c, agents["A"], mnts["A"], names, kernel, initrd, seen_from=mnts["B"])
            agents["A"].ok("migrate", os.path.join(mnts["A"], "vm1"), "--host", "B", timeout=300)
            st["pid"] = agents["B"].info(os.path.join(mnts["B"], "vm1"))["pid"]
            wait_for(lambda: listed("vm1") == {"B"} and listed("vm2") == {"A"}, 10,
                     "vm1 listed by B only, vm2 by A (now %r, %r)" % (listed("vm1"),
                                                                       listed("vm2")))

        def kill_a():
            st["t0"] = power_loss(vol, "A", agents["A"])
            wait_for(lambda: len(where(agents, mnts, "vm2")) == 1, 120, "vm2 running again",
                     step=0.5)
            d, last = check_once(c, agents, mnts, names, 6, "after the kill")
            c.eq(d, 0, "double runs")
            c.eq(last.get("vm1"), "B", "vm1's host")
            c.check(last.get("vm2") in ("B", "C"), "vm2 ended up on %r" % last.get("vm2"))
            i = agents["B"].info(os.path.join(mnts["B"], "vm1"))
            c.eq((i["state"], i["pid"]), ("running", st["pid"]), "vm1 on B: the same QEMU")
            ev = restarted_events(agents)
            c.check("vm2" in ev and "vm1" not in ev, "ha.restarted events: %r" % ev)
            c.eq(listed("vm1"), {"B"}, "vm1's protected lists after the failover")

        c.section("A runs vm1 and vm2, vm1 migrates to B", run_and_migrate)
        if c.failures:
            return
        c.section("A dies: only vm2 is restarted", kill_a)


def body(c):
    kernel, initrd = vmtest.guest()
    mode = sys.argv[1] if len(sys.argv) > 1 else "kill"
    if mode == "kill":
        scenario_kill(c, kernel, initrd)
    elif mode == "isolate":
        scenario_isolate(c, kernel, initrd)
    elif mode == "two-dead":
        scenario_two_dead(c, kernel, initrd)
    elif mode == "vmfsd-dies":
        scenario_vmfsd_dies(c, kernel, initrd)
    elif mode == "migrated":
        scenario_migrated(c, kernel, initrd)
    elif mode == "long":
        n = int(os.environ.get("HA_LONG_ROUNDS") or (sys.argv[2] if len(sys.argv) > 2 else 100))
        doubles = 0
        for i in range(n):
            print("=== round %d/%d: kill" % (i + 1, n))
            doubles += scenario_kill(c, kernel, initrd)
            print("=== round %d/%d: isolate" % (i + 1, n))
            scenario_isolate(c, kernel, initrd)
            print("=== after %d rounds: %d double runs, %d failures" % (i + 1, doubles,
                                                                      len(c.failures)))
        c.eq(doubles, 0, "double runs over %d rounds" % n)
    else:
        c.fail("unknown mode %r" % mode)


if __name__ == "__main__":
    vmtest.main("vm-ha-" + (sys.argv[1] if len(sys.argv) > 1 else "kill"), body)
