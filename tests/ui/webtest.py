# SPDX-License-Identifier: GPL-2.0-or-later
"""Helpers of the browser-client tests (tests/ui) on top of tests/vm/vmtest.py
(a vmfsd volume mounted through FUSE, host agents as child processes, the
test guest): vmfs-webd started as a child process on a free port of
127.0.0.1, with its certificate, key and token file in the test's scratch
folder, and an HTTPS client that trusts exactly that certificate (the
self-signed certificate vmfs-webd makes at first start) and keeps the
session cookie.
"""

import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "vm"))
sys.path.insert(0, os.path.join(HERE, ".."))
import hangdump  # noqa: E402
import vmtest  # noqa: E402
from vmfstest import wait_for  # noqa: E402,F401


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Webd:
    """One vmfs-webd child process for AGENT (a vmtest.Agent)."""

    def __init__(self, work, agent, tag="webd", extra=()):
        self.work = work
        self.agent = agent
        self.tag = tag
        self.port = free_port()
        self.cert = os.path.join(work, "%s-tls" % tag, "cert.pem")
        self.key = os.path.join(work, "%s-tls" % tag, "key.pem")
        self.token_file = os.path.join(work, "%s-token" % tag, "token")
        self.logpath = os.path.join(work, "%s.log" % tag)
        self.extra = [str(x) for x in extra]
        self.proc = None

    def argv(self):
        return [vmtest.env("VMFS_WEBD"), "--agent", self.agent.sock, "--port", str(self.port),
                "--cert", self.cert, "--key", self.key, "--token-file", self.token_file,
                "--www", vmtest.env("WEBD_WWW")] + self.extra

    def start(self):
        log = open(self.logpath, "a")
        self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        log.close()

        def up():
            if self.proc.poll() is not None:
                return True
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.5).close()
                return True
            except OSError:
                return False
        wait_for(up, 20, "vmfs-webd listening")
        if self.proc.poll() is not None:
            raise RuntimeError("vmfs-webd exited: %s" % self.log())
        return self

    def run_once(self, timeout=20):
        """Starts it expecting a refusal: the CompletedProcess."""
        return subprocess.run(self.argv(), capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)

    @property
    def token(self):
        with open(self.token_file) as f:
            return f.read().strip()

    @property
    def url(self):
        return "https://127.0.0.1:%d" % self.port

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            hangdump.wait_or_dump(self.proc, 20, "vmfs-webd still running 20 s after SIGTERM")
        self.proc = None

    def log(self):
        try:
            with open(self.logpath, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def client(self):
        return Client(self)


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body
        try:
            self.json = json.loads(body) if body else {}
        except ValueError:
            self.json = {}

    def __repr__(self):
        return "HTTP %d %s" % (self.status, self.body[:300])


class Client:
    """HTTPS to one vmfs-webd, verifying its certificate; keeps the session
    cookie and the CSRF token of the last login."""

    def __init__(self, webd):
        self.webd = webd
        self.ctx = ssl.create_default_context(cafile=webd.cert)
        self.cookie = None
        self.csrf = None

    def request(self, method, path, body=None, headers=None, csrf=True, raw=None):
        h = dict(headers or {})
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            h.setdefault("Content-Type", "application/json")
        if self.cookie:
            h["Cookie"] = self.cookie
        if csrf and self.csrf and method not in ("GET", "HEAD"):
            h.setdefault("X-CSRF-Token", self.csrf)
        conn = http.client.HTTPSConnection("127.0.0.1", self.webd.port, context=self.ctx, timeout=300)
        try:
            conn.request(method, path, body=data, headers=h)
            r = conn.getresponse()
            return Response(r.status, r.getheaders(), r.read().decode(errors="replace"))
        finally:
            conn.close()

    def raw(self, method, path, headers):
        """A TLS socket with the request line and headers sent (cookie and
        CSRF token included): for bodies cut off or never sent."""
        s = socket.create_connection(("127.0.0.1", self.webd.port), timeout=30)
        ts = self.ctx.wrap_socket(s, server_hostname="127.0.0.1")
        h = {"Host": "127.0.0.1", "Cookie": self.cookie or "", "X-CSRF-Token": self.csrf or ""}
        h.update(headers)
        ts.sendall(("%s %s HTTP/1.1\r\n" % (method, path) +
                    "".join("%s: %s\r\n" % kv for kv in h.items()) + "\r\n").encode())
        return ts

    def raw_status(self, method, path, headers):
        """The status line the server answers to headers alone."""
        ts = self.raw(method, path, headers)
        try:
            return ts.recv(4096).decode(errors="replace").split("\r\n")[0]
        finally:
            ts.close()

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body=body if body is not None else {}, **kw)

    def login(self, user="root", password=None):
        r = self.post("/api/login", {"user": user, "password": password if password is not None
                                     else self.webd.token}, csrf=False)
        if r.status == 200:
            for k, v in r.headers:
                if k.lower() == "set-cookie":
                    self.set_cookie = v
                    self.cookie = v.split(";")[0]
            self.csrf = r.json["csrf"]
        return r

    def act(self, path, body=None):
        """An action, waiting for the agent's reply (?wait=1)."""
        sep = "&" if "?" in path else "?"
        return self.post(path + sep + "wait=1", body)

    def upload(self, ds, rel, data, **kw):
        return self.request("PUT", "/api/datastores/%s/upload?path=%s" % (
            urllib.parse.quote(ds), urllib.parse.quote(rel)), raw=data, **kw)


DS = "ds1"   # the test volume's label: its name in the API


def env_setup(c, tag, size="2G"):
    """A volume mounted as host ui-TAG-esx1, its agent; returns (vol, mnt, agent)."""
    vol = vmtest.Volume("ui-" + tag, size=size, checker=c, mkfs_args=["-L", DS])
    vol.__enter__()
    mnt = vol.mount("ui%s1" % tag[:3])
    agent = vol.agent("ui%s1" % tag[:3])
    return vol, mnt, agent


def wait(cond, timeout, what, step=0.3):
    return wait_for(cond, timeout, what, step=step)
