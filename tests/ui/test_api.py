#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""The HTTP API of vmfs-webd against a real agent, volume and guest:
authentication required on every resource, a wrong password and a wrong
user refused, the session cookie's flags, CSRF refused (missing and wrong
token: nothing happens), path traversal refused (.., absolute paths, a
symlink out of the datastore, in listings, downloads, uploads, mkdir,
delete and in the boot files of a new VM), sizes bounded (JSON body,
upload over --max-upload), a cut-off upload leaving nothing, rate limits
(requests and failed logins), an idle session expiring, start-up refused
with a token file others may read or a certificate without its key, the
certificate kept and the sessions gone across a restart, logout; then
every action through the
agent: create (kernel and initrd uploaded through the API), info with
GB/GiB, power-on, the console showing the guest, reset, suspend, resume,
shutdown, power-on and power-off, clone, migrate-storage, template and
deploy, unregister and register, a refused migration passed through,
HA status, hosts, maintenance enter/status/exit, balance, tasks, events,
jobs, and destroy.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import webtest  # noqa: E402
from webtest import DS, vmtest  # noqa: E402


def body(c):
    vol, mnt, agent = webtest.env_setup(c, "api")
    webds = []
    try:
        w = webtest.Webd(vol.work, agent, extra=["--rate", "1000", "--max-upload", "64M"]).start()
        webds.append(w)
        run(c, vol, mnt, agent, w, webds)
    finally:
        for x in webds:
            if c.failures:
                print("=== %s log:\n%s" % (x.tag, x.log()[-4000:]))
            x.stop()
        vol.cleanup()


def run(c, vol, mnt, agent, w, webds):
    cl = w.client()
    t0 = time.monotonic()
    act0 = cl.act

    def act(path, body=None):
        t = time.monotonic()
        r = act0(path, body)
        print("    %6.1f s  %-40s %d in %.1f s" % (t - t0, path, r.status, time.monotonic() - t), flush=True)
        return r
    cl.act = act
    c.check(os.stat(w.token_file).st_mode & 0o777 == 0o600, "token file mode %o" % os.stat(w.token_file).st_mode)
    c.check(os.stat(w.key).st_mode & 0o777 == 0o600, "key file mode")

    # --- nothing without a login
    for path in ("/api/vms", "/api/datastores", "/api/host", "/api/hosts", "/api/ha", "/api/tasks",
                 "/api/events", "/api/jobs", "/api/session",
                 "/api/datastores/%s/files?path=" % DS, "/api/datastores/%s/download?path=x" % DS):
        r = cl.get(path)
        c.eq(r.status, 401, "GET %s without login" % path)
    r = cl.post("/api/vms", {"datastore": DS, "name": "x", "cpus": 1, "memory_mib": 64, "disk_mib": 16})
    c.eq(r.status, 401, "create without login")
    c.check(not os.path.exists(os.path.join(mnt, "x")), "create without login made a folder")
    r = cl.upload(DS, "evil.iso", b"x" * 100)
    c.eq(r.status, 401, "upload without login")
    r = cl.get("/")
    c.check(r.status == 200 and "vmfsd Host Client" in r.body, "the UI's page: %r" % r)
    hdrs = {k.lower(): v for k, v in r.headers}
    c.check("default-src 'self'" in hdrs.get("content-security-policy", ""), "CSP header: %s" % hdrs)
    c.eq(hdrs.get("x-frame-options"), "DENY", "X-Frame-Options")

    # --- wrong credentials
    r = cl.login(password="wrong-password")
    c.eq(r.status, 401, "wrong password")
    r = cl.login(user="admin")
    c.eq(r.status, 401, "a user other than root")
    c.check(cl.cookie is None, "a refused login set a cookie")
    r = cl.request("POST", "/api/login", raw=b'{"user":"root","password":"%s"}' % w.token.encode(),
                   headers={"Content-Type": "text/plain"}, csrf=False)
    c.eq(r.status, 415, "login with a non-JSON content type (a cross-site form)")
    r = cl.login()
    c.eq(r.status, 200, "login")
    ck = cl.set_cookie
    for flag in ("HttpOnly", "Secure", "SameSite=Strict", "Path=/"):
        c.check(flag in ck, "cookie lacks %s: %s" % (flag, ck))
    c.eq(cl.get("/api/session").json.get("csrf"), cl.csrf, "session's CSRF token")

    # --- CSRF
    good = cl.csrf
    for tok in (None, "0" * 64, good[:-1] + ("0" if good[-1] != "0" else "1")):
        cl.csrf = tok
        r = cl.post("/api/vms", {"datastore": DS, "name": "csrf", "cpus": 1, "memory_mib": 64,
                                 "disk_mib": 16})
        c.eq(r.status, 403, "create with CSRF token %r" % tok)
        r = cl.post("/api/datastores/%s/mkdir" % DS, {"path": "csrfdir"})
        c.eq(r.status, 403, "mkdir with CSRF token %r" % tok)
        r = cl.upload(DS, "csrf.iso", b"x" * 10)
        c.eq(r.status, 403, "upload with CSRF token %r" % tok)
    cl.csrf = good
    for n in ("csrf", "csrfdir", "csrf.iso"):
        c.check(not os.path.exists(os.path.join(mnt, n)), "%s made despite a bad CSRF token" % n)

    # --- paths stay inside the datastore
    os.symlink("/etc", os.path.join(mnt, "etc-link"))
    os.makedirs(os.path.join(mnt, "iso"))
    with open(os.path.join(mnt, "iso", "a.txt"), "w") as f:
        f.write("hello\n")
    q = "/api/datastores/%s/" % DS
    for bad in ("..", "../..", "iso/../..", "/etc", "etc-link", "etc-link/passwd", "../../../../etc/passwd",
                "%2e%2e/%2e%2e"):
        r = cl.get(q + "files?path=" + bad)
        c.check(r.status in (403, 404) and "root:" not in r.body, "list %s: %r" % (bad, r))
        r = cl.get(q + "download?path=" + bad)
        c.check(r.status in (400, 403, 404) and "root:" not in r.body, "download %s: %r" % (bad, r))
    r = cl.get(q + "download?path=etc-link/passwd")
    c.eq(r.status, 403, "download through a symlink out")
    r = cl.get(q + "download?path=iso/a.txt")
    c.check(r.status == 200 and r.body == "hello\n", "download inside: %r" % r)
    r = cl.get(q + "files?path=iso")
    c.check(r.status == 200 and [i["name"] for i in r.json["items"]] == ["a.txt"], "list iso: %r" % r)
    for bad in ("../evil.iso", "etc-link/evil", "iso/../../evil.iso", ".hidden", "/tmp/evil"):
        r = cl.upload(DS, bad, b"x" * 10)
        c.check(r.status in (400, 403, 404), "upload %s: %r" % (bad, r))
        r = cl.post(q + "mkdir", {"path": bad})
        c.check(r.status in (400, 403, 404), "mkdir %s: %r" % (bad, r))
    c.check(not os.path.exists(os.path.join(os.path.dirname(mnt), "evil.iso")), "upload escaped")
    r = cl.request("DELETE", q + "files?path=etc-link/hostname")
    c.check(r.status in (400, 403), "delete through a symlink: %r" % r)
    c.check(os.path.exists("/etc/hostname"), "/etc/hostname deleted")
    r = cl.post("/api/vms", {"datastore": DS, "name": "trav", "cpus": 1, "memory_mib": 64, "disk_mib": 16,
                             "kernel": "../../../../boot/vmlinuz"})
    c.check(r.status in (400, 403), "create with a kernel outside: %r" % r)
    r = cl.post("/api/vms", {"datastore": DS, "name": "../trav", "cpus": 1, "memory_mib": 64, "disk_mib": 16})
    c.eq(r.status, 400, "create named ../trav")
    r = cl.post("/api/vms", {"datastore": DS, "folder": "../..", "name": "trav", "cpus": 1, "memory_mib": 64,
                             "disk_mib": 16})
    c.eq(r.status, 400, "create in folder ../..")
    r = cl.get("/api/vms/..%2F..%2Fetc")
    c.check(r.status in (400, 404), "a VM named by a path: %r" % r)
    r = cl.get("/../../../etc/passwd")
    c.check(r.status == 404 and "root:" not in r.body, "static file outside www: %r" % r)

    # --- sizes
    c.check(cl.raw_status("POST", "/api/vms", {"Content-Type": "application/json", "Content-Length": 70 << 10,
                                                "Expect": "100-continue"}).startswith("HTTP/1.1 413"),
            "a JSON body of 70 KiB announced")
    ts = cl.raw("POST", "/api/vms", {"Content-Type": "application/json", "Transfer-Encoding": "chunked"})
    ts.sendall(b"%x\r\n" % (70 << 10) + b"x" * (70 << 10) + b"\r\n0\r\n\r\n")
    c.check(ts.recv(4096).startswith(b"HTTP/1.1 413"), "a chunked JSON body of 70 KiB")
    ts.close()
    # refused before the body is read (a client that sends the body anyway
    # sees the connection closed after the answer)
    c.check(cl.raw_status("PUT", "/api/datastores/%s/upload?path=big.iso" % DS,
                          {"Content-Length": 65 << 20, "Expect": "100-continue"}).startswith("HTTP/1.1 413"),
            "an upload over --max-upload")
    c.check(not os.path.exists(os.path.join(mnt, "big.iso")), "refused upload left a file")
    # an upload cut off half-way: nothing left, not even the temporary file
    ts = cl.raw("PUT", "/api/datastores/%s/upload?path=iso/cut.iso" % DS, {"Content-Length": 1000000})
    ts.sendall(b"y" * 300000)
    time.sleep(0.5)
    ts.close()
    webtest.wait(lambda: sorted(os.listdir(os.path.join(mnt, "iso"))) == ["a.txt"], 10,
                 "the cut-off upload's temporary file removed")
    r = cl.upload(DS, "iso/a.txt", b"new")
    c.eq(r.status, 409, "upload over an existing file without ?overwrite=1")

    # --- start-up refusals: a token file others may read, a certificate
    # without its key; an existing certificate is kept, not remade
    bad = webtest.Webd(vol.work, agent, tag="webd-bad")
    os.makedirs(os.path.dirname(bad.token_file))
    with open(bad.token_file, "w") as f:
        f.write("0123456789abcdef0123\n")
    os.chmod(bad.token_file, 0o644)
    r = bad.run_once()
    c.check(r.returncode == 1 and "chmod 600" in r.stderr, "a world-readable token file: %s" % r.stderr)
    os.chmod(bad.token_file, 0o600)
    os.makedirs(os.path.dirname(bad.cert))
    with open(bad.cert, "w") as f:
        f.write("not a certificate\n")
    r = bad.run_once()
    c.check(r.returncode == 1 and "give both or neither" in r.stderr, "a certificate without its key: %s" % r.stderr)
    with open(w.cert) as f:
        cert = f.read()

    # --- rate limits and session expiry, on a second server
    w2 = webtest.Webd(vol.work, agent, tag="webd-limits", extra=["--rate", "5", "--login-failures", "3",
                                                                  "--session-idle", "10"]).start()
    webds.append(w2)
    c3 = w2.client()
    c.eq(c3.login().status, 200, "login on the second server")
    idle_from = time.monotonic()        # checked at the end: unused for 10 s, it expires
    c2 = w2.client()
    codes = [c2.login(password="nope%d" % i).status for i in range(5)]
    c.eq(codes, [401, 401, 401, 429, 429], "failed logins from one address")
    time.sleep(1.5)
    codes = [c2.get("/api/vms").status for i in range(30)]
    c.check(429 in codes and codes[0] == 401, "30 requests at once with --rate 5: %s" % codes)

    # --- resources
    r = cl.get("/api/datastores")
    ds = [d for d in r.json.get("datastores", []) if d["name"] == DS]
    c.check(len(ds) == 1, "datastores: %r" % r)
    if ds:
        d = ds[0]
        for k in ("capacity", "free", "used", "provisioned"):
            c.check(abs(d[k + "_gb"] - d[k] / 1e9) < 0.01 and abs(d[k + "_gib"] - d[k] / 2**30) < 0.01,
                    "%s in GB/GiB: %s" % (k, d))
    r = cl.get("/api/host")
    c.check(r.status == 200 and r.json.get("host") == agent.host, "host: %r" % r)
    r = cl.get("/api/hosts")
    c.check(r.status == 200 and [h["name"] for h in r.json["hosts"]] == [agent.host], "hosts: %r" % r)
    r = cl.get("/api/ha")
    c.check(r.status == 200 and r.json.get("datastores"), "ha: %r" % r)
    r = cl.get("/api/host/maintenance")
    c.eq(r.status, 200, "maintenance status: %r" % r)
    r = cl.get("/api/balance")
    c.eq(r.status, 200, "balance: %r" % r)

    # --- the VM's life through the API
    kernel, initrd = vmtest.guest(compressed=True)   # uploaded: the 8 MiB bzImage
    for src, name in ((kernel, "boot/vmlinuz"), (initrd, "boot/initrd.img")):
        if name == "boot/vmlinuz":
            c.eq(cl.post(q + "mkdir", {"path": "boot"}).status, 201, "mkdir boot")
        with open(src, "rb") as f:
            data = f.read()
        r = cl.upload(DS, name, data)
        c.check(r.status == 201 and r.json.get("size") == len(data), "upload %s: %r" % (name, r))
        with open(os.path.join(mnt, name), "rb") as f:
            c.check(f.read() == data, "%s uploaded intact" % name)
    os.makedirs(os.path.join(mnt, "prod"))
    spec = {"datastore": DS, "folder": "prod", "name": "web1", "cpus": 1, "memory_mib": vmtest.GUEST_MEM,
            "disk_mib": 64, "provisioning": "thin", "kernel": "boot/vmlinuz", "initrd": "boot/initrd.img",
            "net": "none"}
    r = cl.post("/api/vms", spec)      # a job
    c.eq(r.status, 202, "create answers with its job: %r" % r)
    job = r.json.get("job", {})
    webtest.wait(lambda: cl.get("/api/jobs/" + job.get("id", "x")).json.get("job", {}).get("state") != "running",
                 60, "the create job")
    j = cl.get("/api/jobs/" + job.get("id", "x")).json.get("job", {})
    c.eq(j.get("state"), "done", "create job: %s" % j)
    c.check(any(x["id"] == job.get("id") for x in cl.get("/api/jobs").json["jobs"]), "jobs lists it")
    vm = [v for v in cl.get("/api/vms").json["vms"] if v["name"] == "web1"]
    c.check(len(vm) == 1 and vm[0]["datastore"] == DS and vm[0]["folder"] == "prod", "vms: %s" % vm)
    if not vm:
        return
    vid = vm[0]["id"]
    r = cl.post("/api/vms", spec)
    c.eq(r.status, 202, "second create starts a job")
    r = cl.act("/api/vms", spec)
    c.check(r.status == 409 and "exist" in r.body, "create over an existing VM refused by the agent: %r" % r)
    info = cl.get("/api/vms/" + vid).json
    c.check(info.get("disks") and info["disks"][0].get("size_gib") == round(64 / 1024, 2), "info disks: %s" % info)

    def state():
        return cl.get("/api/vms/" + vid).json.get("state", "")

    def console():
        return cl.get("/api/vms/%s/console" % vid).json.get("text", "")

    r = cl.act("/api/vms/%s/power-on" % vid)
    c.check(r.status == 200 and r.json.get("ok"), "power-on: %r" % r)
    c.check(state().startswith("running"), "running after power-on")
    # the kernel's first lines: a busy 2-core machine takes 15-40 s to the
    # guest's counter, seconds to these
    webtest.wait(lambda: "Linux version" in console(), 120, "the guest kernel in the console")
    off = cl.get("/api/vms/%s/console" % vid).json["offset"]
    webtest.wait(lambda: cl.get("/api/vms/%s/console?offset=%d" % (vid, off)).json["text"], 60,
                 "new console text after an offset")
    r = cl.act("/api/vms/%s/power-on" % vid)
    c.eq(r.status, 409, "second power-on refused")
    r = cl.act("/api/vms/%s/migrate" % vid, {"host": "no-such-host"})
    c.check(r.status >= 400 and r.json.get("error"), "migrate to an unknown host: %r" % r)
    r = cl.request("DELETE", q + "files?path=prod/web1/web1-flat.vmdk")
    c.eq(r.status, 409, "delete a running VM's disk")
    c.check(os.path.exists(os.path.join(mnt, "prod/web1/web1-flat.vmdk")), "the running VM's disk deleted")
    c.eq(cl.act("/api/vms/%s/reset" % vid).status, 200, "reset")
    r = cl.act("/api/vms/%s/suspend" % vid)
    c.check(r.status == 200 and state().startswith("suspended"), "suspend: %r, %s" % (r, state()))
    r = cl.act("/api/vms/%s/resume" % vid)
    c.check(r.status == 200 and state().startswith("running"), "resume: %r" % r)
    r = cl.act("/api/vms/%s/power-off" % vid)
    c.check(r.status == 200 and state() == "off", "power-off: %r" % r)
    c.eq(cl.act("/api/vms/%s/power-on" % vid).status, 200, "power-on again")
    # a guest still booting ignores the ACPI button: 3 s, then off
    r = cl.act("/api/vms/%s/shutdown" % vid, {"timeout": 3})
    c.check(r.status == 200 and state() == "off", "shutdown: %r %s" % (r, state()))
    r = cl.act("/api/vms/%s/clone" % vid, {"datastore": DS, "folder": "prod", "name": "web2"})
    c.check(r.status == 200 and os.path.exists(os.path.join(mnt, "prod", "web2", "web2.vmx")), "clone: %r" % r)
    os.makedirs(os.path.join(mnt, "archive"))
    r = cl.act("/api/vms/%s/migrate-storage" % vid, {"datastore": DS, "folder": "archive", "name": "web1"})
    c.check(r.status == 200 and os.path.exists(os.path.join(mnt, "archive", "web1", "web1.vmx")),
            "migrate-storage: %r" % r)
    vms = {v["name"]: v for v in cl.get("/api/vms").json["vms"]}
    c.check(vms.get("web1", {}).get("folder") == "archive", "web1 now in archive: %s" % vms.get("web1"))
    r = cl.act("/api/vms/web2/template")
    c.eq(r.status, 200, "template: %r" % r)
    r = cl.act("/api/vms/web2/power-on")
    c.check(r.status in (403, 409) and "template" in r.body, "a template does not power on: %r" % r)
    r = cl.act("/api/vms/web2/deploy", {"datastore": DS, "folder": "prod", "name": "web3", "cpus": 1})
    c.check(r.status == 200 and os.path.exists(os.path.join(mnt, "prod", "web3")), "deploy: %r" % r)
    r = cl.act("/api/vms/web3/unregister")
    c.check(r.status == 200 and "web3" not in [v["name"] for v in cl.get("/api/vms").json["vms"]] or
            os.path.exists(os.path.join(mnt, "prod", "web3")), "unregister: %r" % r)
    r = cl.act("/api/vms/register", {"datastore": DS, "path": "prod/web3"})
    c.eq(r.status, 200, "register: %r" % r)
    r = cl.act("/api/vms/register", {"datastore": DS, "path": "../../etc"})
    c.check(r.status in (403, 404), "register outside the datastore: %r" % r)
    # snapshots, export and import: the agent's commands too
    r = cl.act("/api/vms/web3/snapshot", {"action": "create", "name": "s1", "description": "api"})
    c.eq(r.status, 200, "snapshot create: %r" % r)
    r = cl.act("/api/vms/web3/snapshot", {"action": "list"})
    c.check(r.status == 200 and "s1" in r.body, "snapshot list: %r" % r)
    r = cl.act("/api/vms/web3/snapshot", {"action": "rollback"})
    c.eq(r.status, 400, "an unknown snapshot action: %r" % r)
    r = cl.act("/api/vms/web3/snapshot", {"action": "delete", "all": True})
    c.eq(r.status, 200, "snapshot delete --all: %r" % r)
    r = cl.act("/api/vms/web3/export", {"datastore": DS, "folder": "prod", "name": "web3.ova"})
    c.check(r.status == 200 and os.path.isfile(os.path.join(mnt, "prod", "web3.ova")), "export: %r" % r)
    r = cl.act("/api/vms/web3/export", {"datastore": DS, "folder": "..", "name": "x.ova"})
    c.check(r.status in (400, 403), "export outside the datastore: %r" % r)
    r = cl.act("/api/vms/import", {"datastore": DS, "package": "../../etc/passwd", "folder": "archive"})
    c.check(r.status in (403, 404), "import of a package outside the datastore: %r" % r)
    r = cl.act("/api/vms/import", {"datastore": DS, "package": "prod/web3.ova", "folder": "archive",
                                   "name": "web4"})
    c.check(r.status == 200 and os.path.exists(os.path.join(mnt, "archive", "web4", "web4.vmx")),
            "import: %r" % r)
    r = cl.get("/api/tasks")
    c.check(r.status == 200 and r.json.get("tasks"), "tasks lists the clone and move: %r" % r)
    r = cl.get("/api/events")
    c.check(r.status == 200 and any("powered" in e.get("type", "") for e in r.json.get("events", [])),
            "events: %r" % r)
    r = cl.get("/api/vms/%s/events" % vms.get("web1", {}).get("id", "x"))
    c.eq(r.status, 200, "a VM's events")
    for name in ("web4", "web3", "web2", "web1"):
        v = [x for x in cl.get("/api/vms").json["vms"] if x["name"] == name]
        if name == "web2":
            cl.act("/api/vms/web2/template", {"unset": True})
        r = cl.request("DELETE", "/api/vms/%s?wait=1" % (v[0]["id"] if v else name))
        c.eq(r.status, 200, "destroy %s: %r" % (name, r))
    c.eq([v["name"] for v in cl.get("/api/vms").json["vms"]], [], "no VMs left")
    c.check(not os.path.exists(os.path.join(mnt, "archive", "web1")), "web1's folder deleted")

    # --- the jobs table keeps the last 64: older finished jobs make
    # room (66 in all: two evicted)
    more = 66 - len(cl.get("/api/jobs").json.get("jobs", []))
    for i in range(more):
        r = cl.post("/api/vms/no-such-vm-%d/power-off?wait=1" % i)
        if r.status != 404:
            c.fail("power-off of a VM that does not exist: %r" % r)
            break
    js = cl.get("/api/jobs").json.get("jobs", [])
    c.check(len(js) == 64 and js[0]["target"] == "no-such-vm-%d" % (more - 1) and js[0]["state"] == "failed",
            "jobs after %d more: %d, newest %s" % (more, len(js), js[:1]))

    # --- the host's actions: maintenance mode in and out, a balance run
    r = cl.act("/api/host/maintenance", {"action": "enter", "timeout": 60})
    c.check(r.status == 200 and cl.get("/api/host/maintenance").json.get("maintenance") is True,
            "maintenance enter: %r / %r" % (r, cl.get("/api/host/maintenance")))
    r = cl.act("/api/host/maintenance", {"action": "exit"})
    c.check(r.status == 200 and not cl.get("/api/host/maintenance").json.get("maintenance"),
            "maintenance exit: %r" % r)
    r = cl.act("/api/host/maintenance", {"action": "dance"})
    c.eq(r.status, 400, "maintenance with an unknown action")
    r = cl.act("/api/balance", {"apply": True})
    c.check(r.status == 200 and r.json.get("moves") == [], "balance --apply with one host: %r" % r)

    # --- the second server's idle session has expired; the certificate is
    # the one made at first start, unchanged by a restart
    time.sleep(max(0, 11 - (time.monotonic() - idle_from)))
    c.eq(c3.get("/api/vms").status, 401, "a session unused for longer than --session-idle")
    w.stop()
    w.start()
    with open(w.cert) as f:
        c.check(f.read() == cert, "the certificate was remade at restart")
    c.eq(cl.get("/api/vms").status, 401, "a session of the server before its restart")
    cl.login()

    # --- logout ends the session
    c.eq(cl.post("/api/logout").status, 200, "logout")
    c.eq(cl.get("/api/vms").status, 401, "the old cookie after logout")


if __name__ == "__main__":
    vmtest.main("ui-api", body)
