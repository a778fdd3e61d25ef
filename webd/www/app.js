// SPDX-License-Identifier: GPL-2.0-or-later
// The vmfsd host client (docs/webui.md): a page that draws the inventory,
// the VM, datastore and host views, the create-VM wizard, the console and
// the tasks pane from vmfs-webd's JSON API.  Plain DOM, no framework, no
// build step; text is always set with textContent (never HTML), so nothing
// a datastore holds (a file name, a VM name) can run as script.  State is
// refreshed by polling every 2 s (the agent itself refreshes its view of
// other hosts about once a second).
"use strict";

const POLL_MS = 2000;
const CONSOLE_MS = 1000;
let csrf = "";
let maxUpload = 0;
let inv = { vms: [], datastores: [], host: "" };
let jobs = [];
let agentTasks = [];
let route = "";
let timers = [];

// ------------------------------------------------------------ helpers

function $(id) { return document.getElementById(id); }

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "text") e.textContent = v;
    else if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of kids.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function gbGib(bytes) {
  if (bytes === null || bytes === undefined) return "-";
  // below 0.01 GB the GB figures say nothing: the exact size first
  if (bytes > 0 && bytes < 1e7) return human(bytes) + " (" + (bytes / 1e9).toFixed(3) + " GB)";
  return (bytes / 1e9).toFixed(2) + " GB (" + (bytes / 1073741824).toFixed(2) + " GiB)";
}

function human(bytes) {
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (bytes >= 1024 && i < 4) { bytes /= 1024; i++; }
  return (i ? bytes.toFixed(1) : bytes) + " " + u[i];
}

// a datastore's mount path as its name, when it is one of ours
function dsName(path) {
  const d = inv.datastores.find(x => x.path === path);
  return d ? d.name : path;
}

function when(ms) {
  if (!ms) return "-";
  return new Date(ms).toLocaleTimeString();
}

function bar(pct, label) {
  const fill = el("span", { class: "fill" });
  fill.style.width = Math.max(0, Math.min(100, pct)).toFixed(1) + "%";
  return el("span", { class: "bar", role: "progressbar", "aria-valuemin": "0",
    "aria-valuemax": "100", "aria-valuenow": Math.round(pct), title: label || "" }, fill);
}

function stateClass(s) {
  s = s || "";
  if (s.startsWith("running")) return "on";
  if (s.startsWith("paused") || s.startsWith("suspended")) return "paused";
  return "off";
}

class ApiError extends Error {
  constructor(status, msg) { super(msg); this.status = status; }
}

async function api(method, path, body) {
  const opt = { method, credentials: "same-origin", headers: {} };
  if (method !== "GET") opt.headers["X-CSRF-Token"] = csrf;
  if (body !== undefined) {
    opt.headers["Content-Type"] = "application/json";
    opt.body = JSON.stringify(body);
  }
  const r = await fetch("/api/" + path, opt);
  let j = {};
  try { j = await r.json(); } catch (e) { j = { error: r.statusText }; }
  if (r.status === 401 && path !== "login") { showLogin(); throw new ApiError(401, "login required"); }
  if (!r.ok) throw new ApiError(r.status, j.error || r.statusText);
  return j;
}

// ------------------------------------------------------------ login

function showLogin(msg) {
  timers.forEach(clearInterval);
  timers = [];
  $("app").hidden = true;
  $("login-view").hidden = false;
  $("login-error").textContent = msg || "";
  $("login-password").value = "";
  $("login-password").focus();
}

async function login(ev) {
  ev.preventDefault();
  $("login-error").textContent = "";
  try {
    const j = await api("POST", "login", { user: $("login-user").value, password: $("login-password").value });
    csrf = j.csrf;
    maxUpload = j.max_upload || 0;
    start();
  } catch (e) {
    $("login-error").textContent = e.message;
    $("login-password").value = "";
    $("login-password").focus();
  }
}

async function logout() {
  try { await api("POST", "logout"); } catch (e) { /* gone anyway */ }
  csrf = "";
  showLogin("Logged out.");
}

async function start() {
  $("login-view").hidden = true;
  $("app").hidden = false;
  try {
    const h = await api("GET", "host");
    $("top-host").textContent = "host " + h.host + " · " + h.cpus + " CPUs · " +
      (h.memory_mib / 1024).toFixed(1) + " GiB · accelerator " + h.accel;
  } catch (e) { $("top-host").textContent = e.message; }
  await refresh();
  timers.push(setInterval(refresh, POLL_MS));
  if (!location.hash) location.hash = "#/vms";
  render();
}

// ------------------------------------------------------------ inventory

async function refresh() {
  try {
    const [v, j, t] = await Promise.all([api("GET", "vms"), api("GET", "jobs"),
      api("GET", "tasks").catch(() => ({ tasks: [] }))]);
    inv = v;
    jobs = j.jobs || [];
    agentTasks = (t.tasks || []).slice().sort((a, b) => (b.started_ms || 0) - (a.started_ms || 0)).slice(0, 20);
    drawTree();
    drawTasks();
    if (!$("events-pane").hidden) drawEvents();
    if (route.startsWith("#/vm/")) updateVmState();
  } catch (e) {
    if (e.status !== 401) $("top-host").textContent = "cannot refresh: " + e.message;
  }
}

function treeLink(href, label, cls, extra) {
  const a = el("a", { href, class: cls || "" }, extra || null, label);
  if (href === location.hash) a.setAttribute("aria-current", "page");
  return el("li", {}, a);
}

// redrawn only when something in it changed: a stable tree keeps the
// keyboard focus and the element under the pointer
let treeKey = "";

function drawTree() {
  const tree = $("tree");
  const key = JSON.stringify([location.hash, inv.host, inv.vms.map(v => [v.id, v.name, v.state, v.datastore, v.folder]),
    inv.datastores.map(d => d.name)]);
  if (key === treeKey) return;
  treeKey = key;
  const ul = el("ul", { class: "tree" });
  ul.append(treeLink("#/host", "Host " + (inv.host || ""), "node host"));
  const vmsLi = treeLink("#/vms", "Virtual Machines (" + inv.vms.length + ")", "node");
  const byDs = {};
  for (const vm of inv.vms) {
    const ds = vm.datastore || "(outside datastores)";
    (byDs[ds] = byDs[ds] || {});
    const f = vm.folder || "";
    (byDs[ds][f] = byDs[ds][f] || []).push(vm);
  }
  const dsUl = el("ul");
  for (const ds of Object.keys(byDs).sort()) {
    const fUl = el("ul");
    for (const f of Object.keys(byDs[ds]).sort()) {
      const vUl = el("ul");
      for (const vm of byDs[ds][f].sort((a, b) => a.name.localeCompare(b.name)))
        vUl.append(treeLink("#/vm/" + encodeURIComponent(vm.id), vm.name, "vm",
          el("span", { class: "dot " + stateClass(vm.state), title: vm.state, "aria-label": vm.state })));
      if (f) fUl.append(el("li", {}, el("span", { class: "folder" }, f + "/"), vUl));
      else fUl.append(...vUl.children);
    }
    dsUl.append(el("li", {}, el("span", { class: "folder ds" }, ds), fUl));
  }
  vmsLi.append(dsUl);
  ul.append(vmsLi);
  const stLi = treeLink("#/storage", "Storage (" + inv.datastores.length + ")", "node");
  const sUl = el("ul");
  for (const ds of inv.datastores)
    sUl.append(treeLink("#/datastore/" + encodeURIComponent(ds.name), ds.name, "ds"));
  stLi.append(sUl);
  ul.append(stLi);
  const focused = document.activeElement && tree.contains(document.activeElement) ?
    document.activeElement.getAttribute("href") : null;
  tree.replaceChildren(ul);
  if (focused) {
    const again = tree.querySelector('a[href="' + CSS.escape(focused) + '"]');
    if (again) again.focus();
  }
}

// ------------------------------------------------------------ tasks pane

async function drawEvents() {
  try {
    const j = await api("GET", "events?count=50");
    const rows = (j.events || []).slice().reverse().map(e => el("tr", {},
      el("td", { text: when(e.time_ms) }), el("td", { text: e.type || "" }),
      el("td", { text: e.vmx || "" }), el("td", { text: e.message || e.msg || "" })));
    $("events-pane").replaceChildren(el("table", { class: "grid" },
      el("thead", {}, el("tr", {}, el("th", { text: "Time" }), el("th", { text: "Event" }),
        el("th", { text: "VM" }), el("th", { text: "Message" }))), el("tbody", {}, rows)));
  } catch (e) { $("events-pane").textContent = e.message; }
}

function jobProgress(j) {
  const p = j.progress;
  if (j.state !== "running") return bar(100, j.state);
  if (p && p.total) {
    const pct = 100 * p.done / p.total;
    return el("span", {}, bar(pct), " " + pct.toFixed(0) + "% " + (p.phase || ""));
  }
  if (p && p.phase) return el("span", {}, bar(50), " " + p.phase);
  return el("span", { class: "spinner" }, bar(0), " running");
}

// a job's target as people know it: a VM's ID shown as its name
function targetName(t) {
  const vm = inv.vms.find(v => v.id === t);
  return vm ? vm.name : t;
}

let tasksKey = "";

function drawTasks() {
  const key = JSON.stringify([jobs, agentTasks, inv.vms.map(v => v.id + v.name)]);
  if (key === tasksKey) return;
  tasksKey = key;
  const rows = jobs.map(j => el("tr", { class: "job-" + j.state, "data-job": j.id },
    el("td", { text: j.op }),
    el("td", { text: targetName(j.target) }),
    el("td", { class: "state", text: j.state }),
    el("td", {}, jobProgress(j)),
    el("td", { text: when(j.started) }),
    el("td", { text: j.ended ? when(j.ended) : "-" }),
    el("td", { class: j.state === "failed" ? "error" : "", text: j.result ? (j.result.error || j.result.message || "") : "" })));
  $("tasks-pane").replaceChildren(el("table", { class: "grid", id: "tasks-table" },
    el("thead", {}, el("tr", {}, ...["Task", "Target", "Status", "Progress", "Started", "Ended", "Result"]
      .map(t => el("th", { text: t })))),
    el("tbody", {}, rows.length ? rows : el("tr", {}, el("td", { colspan: "7", class: "muted", text: "No tasks yet." })))),
    // the agents' copies and moves (Storage vMotion, clones, deploys,
    // zeroing, suspends), of every host of the datastores
    agentTasks.length ? el("table", { class: "grid", id: "copies-table" },
      el("thead", {}, el("tr", {}, ...["Copy or move", "VM", "Destination", "Host", "Status", "Progress", "Started"]
        .map(t => el("th", { text: t })))),
      el("tbody", {}, agentTasks.map(t => el("tr", { class: "job-" + t.state },
        el("td", { text: t.op + (t.live ? " (live)" : "") }), el("td", { text: t.vm }), el("td", { text: t.dest || "-" }),
        el("td", { text: t.host }), el("td", { class: "state", text: t.state }),
        el("td", {}, bar(t.state === "done" ? 100 : (t.percent || 0)), " " + (t.state === "running" ?
          (t.percent || 0).toFixed(0) + "% " + (t.phase || "") + (t.total ? " of " + human(t.total) : "") : "")),
        el("td", { text: when(t.started_ms) }))))) : "");
}

function showTab(which) {
  const ev = which === "events";
  $("tasks-pane").hidden = ev;
  $("events-pane").hidden = !ev;
  $("tab-tasks").setAttribute("aria-selected", String(!ev));
  $("tab-events").setAttribute("aria-selected", String(ev));
  if (ev) drawEvents();
}

// An action: a job on the server; the tasks pane shows it at once and
// until it ends.  Resolves with the job when it ended.
async function act(method, path, body) {
  const j = await api(method, path, body);
  jobs.unshift(j.job);
  drawTasks();
  for (;;) {
    await new Promise(r => setTimeout(r, 500));
    const g = await api("GET", "jobs/" + encodeURIComponent(j.job.id));
    const i = jobs.findIndex(x => x.id === g.job.id);
    if (i >= 0) jobs[i] = g.job;
    drawTasks();
    if (g.job.state !== "running") {
      refresh();
      return g.job;
    }
  }
}

// ------------------------------------------------------------ dialogs

// A form in the dialog: FIELDS [{id,label,type,value,options}], resolves
// with the values or null (cancel).
function askForm(title, fields, okLabel) {
  return new Promise(resolve => {
    const d = $("dialog");
    $("dialog-title").textContent = title;
    $("dialog-error").textContent = "";
    const body = fields.map(f => {
      let input;
      if (f.options) {
        input = el("select", { id: "dlg-" + f.id });
        for (const o of f.options) input.append(el("option", { value: o, text: o }));
        if (f.value !== undefined) input.value = f.value;
      } else {
        input = el("input", { id: "dlg-" + f.id, type: f.type || "text", value: f.value ?? "" });
      }
      return el("p", {}, el("label", { for: "dlg-" + f.id, text: f.label }), input);
    });
    $("dialog-body").replaceChildren(...body);
    const ok = el("button", { type: "submit", id: "dialog-ok", text: okLabel || "OK" });
    const cancel = el("button", { type: "button", id: "dialog-cancel", text: "Cancel" });
    $("dialog-buttons").replaceChildren(cancel, ok);
    const done = v => { d.close(); $("dialog-form").onsubmit = null; resolve(v); };
    cancel.onclick = () => done(null);
    d.oncancel = () => done(null);
    $("dialog-form").onsubmit = ev => {
      ev.preventDefault();
      const out = {};
      for (const f of fields) out[f.id] = $("dlg-" + f.id).value;
      done(out);
    };
    d.showModal();
    const first = d.querySelector("input,select");
    if (first) first.focus();
  });
}

// ------------------------------------------------------------ views

function render() {
  timers.slice(1).forEach(clearInterval);
  timers = timers.slice(0, 1);
  route = location.hash || "#/vms";
  const main = $("main");
  const m = route.match(/^#\/(\w+)(?:\/([^?]*))?(?:\?(.*))?$/) || [];
  const what = m[1], arg = m[2] ? decodeURIComponent(m[2]) : "";
  const q = new URLSearchParams(m[3] || "");
  drawTree();
  if (what === "vm") viewVm(main, arg);
  else if (what === "host") viewHost(main);
  else if (what === "storage") viewStorage(main);
  else if (what === "datastore") viewDatastore(main, arg, q.get("path") || "");
  else viewVms(main);
}

function header(title, ...buttons) {
  return el("div", { class: "view-head" }, el("h2", { text: title }), el("div", { class: "buttons" }, buttons));
}

function viewVms(main) {
  const rows = inv.vms.map(vm => el("tr", {},
    el("td", {}, el("a", { href: "#/vm/" + encodeURIComponent(vm.id), text: vm.name })),
    el("td", {}, el("span", { class: "dot " + stateClass(vm.state) }), " " + vm.state),
    el("td", { text: vm.host || "-" }),
    el("td", { text: (vm.datastore || "-") + (vm.folder ? " / " + vm.folder : "") }),
    el("td", { text: vm.id })));
  main.replaceChildren(
    header("Virtual Machines", el("button", { id: "create-vm", type: "button", onclick: wizard, text: "Create VM" })),
    el("table", { class: "grid", id: "vm-table" },
      el("thead", {}, el("tr", {}, ...["Name", "State", "Host", "Datastore / folder", "ID"].map(t => el("th", { text: t })))),
      el("tbody", {}, rows.length ? rows : el("tr", {}, el("td", { colspan: "5", class: "muted", text: "No VMs: create one." })))));
}

function capacity(ds) {
  const used = ds.capacity - ds.free;
  return el("div", { class: "capacity" },
    bar(100 * used / ds.capacity, "used"),
    el("dl", { class: "facts" },
      el("dt", { text: "Capacity" }), el("dd", { class: "cap-total", text: gbGib(ds.capacity) }),
      el("dt", { text: "Used" }), el("dd", { class: "cap-used", text: gbGib(used) }),
      el("dt", { text: "Free" }), el("dd", { class: "cap-free", text: gbGib(ds.free) }),
      el("dt", { text: "Provisioned" }), el("dd", { class: "cap-prov", text: gbGib(ds.provisioned) +
        (ds.overcommitted ? " — overcommitted (thin disks)" : "") }),
      el("dt", { text: "VM disks use" }), el("dd", { text: gbGib(ds.vm_disks_used) }),
      el("dt", { text: "VMs" }), el("dd", { text: String(ds.vms) })));
}

function viewStorage(main) {
  main.replaceChildren(header("Storage"),
    ...inv.datastores.map(ds => el("section", { class: "card" },
      el("h3", {}, el("a", { href: "#/datastore/" + encodeURIComponent(ds.name), text: ds.name })),
      el("p", { class: "muted", text: ds.path + " · " + ds.uuid }), capacity(ds))));
}

async function viewHost(main) {
  main.replaceChildren(header("Host"), el("p", { text: "Loading…" }));
  try {
    const [h, hs, mt, ha] = await Promise.all([api("GET", "host"), api("GET", "hosts"),
      api("GET", "host/maintenance").catch(e => ({ error: e.message })),
      api("GET", "ha").catch(e => ({ datastores: [], error: e.message }))]);
    const prot = (ha.datastores || []).flatMap(d => (d.protected || []).map(p => Object.assign({ ds: d.datastore }, p)));
    const haEvents = (ha.datastores || []).flatMap(d => d.events || []).slice(-10).reverse();
    const inMaint = mt && (mt.maintenance || mt.active || mt.state === "maintenance");
    main.replaceChildren(
      header("Host " + h.host,
        el("button", { type: "button", id: "maint-enter", onclick: () => act("POST", "host/maintenance", { action: "enter" }).then(() => render()), text: "Enter maintenance mode" }),
        el("button", { type: "button", id: "maint-exit", onclick: () => act("POST", "host/maintenance", { action: "exit" }).then(() => render()), text: "Exit maintenance mode" })),
      el("dl", { class: "facts" },
        el("dt", { text: "CPUs" }), el("dd", { text: String(h.cpus) }),
        el("dt", { text: "Memory" }), el("dd", { text: (h.memory_mib / 1024).toFixed(1) + " GiB" }),
        el("dt", { text: "Accelerator" }), el("dd", { text: h.accel + (h.kvm_usable ? "" : " (KVM not usable)") }),
        el("dt", { text: "VM monitoring" }), el("dd", { text: h.vm_monitoring && h.vm_monitoring.enabled ? "on" : "off" }),
        el("dt", { text: "Maintenance" }), el("dd", { text: inMaint ? "yes" : (mt.message || "no") })),
      el("h3", { text: "Hosts of the datastores" }),
      el("table", { class: "grid", id: "hosts-table" },
        el("thead", {}, el("tr", {}, ...["Host", "State", "Agent", "vCPUs used", "Memory used", "Datastores"].map(t => el("th", { text: t })))),
        el("tbody", {}, hs.hosts.map(x => el("tr", {},
          el("td", { text: x.name + (x.self ? " (this host)" : "") }),
          el("td", { text: x.state }),
          el("td", { text: x.agent ? (x.agent.seen ? "seen" : "not seen") + (x.agent.maintenance ? ", maintenance" : "") : "-" }),
          el("td", { text: x.agent ? x.agent.used_vcpus + " / " + x.agent.cap_vcpus : "-" }),
          el("td", { text: x.agent ? x.agent.used_memory_mib + " / " + x.agent.cap_memory_mib + " MiB" : "-" }),
          el("td", { text: x.datastores.map(dsName).join(", ") }))))),
      el("h3", { text: "HA: protected VMs" }),
      el("table", { class: "grid", id: "ha-table" },
        el("thead", {}, el("tr", {}, ...["VM", "Runs on", "Priority", "vCPUs", "Memory", "Datastore"].map(t => el("th", { text: t })))),
        el("tbody", {}, prot.length ? prot.map(p => el("tr", {},
          el("td", { text: p.vmx }), el("td", { text: p.host }), el("td", { text: p.priority }),
          el("td", { text: String(p.vcpus) }), el("td", { text: p.memory_mib + " MiB" }), el("td", { text: dsName(p.ds) }))) :
          el("tr", {}, el("td", { colspan: "6", class: "muted", text: "No running VM is protected." })))),
      el("h3", { text: "HA: recent failover events" }),
      el("ul", { id: "ha-events" }, haEvents.length ? haEvents.map(e => el("li", { text: when(e.time_ms || e.ms) + " " + (e.type || "") + " " + (e.message || e.msg || e.vmx || "") })) :
        el("li", { class: "muted", text: "None." })));
  } catch (e) { main.replaceChildren(header("Host"), el("p", { class: "error", text: e.message })); }
}

// ------------------------------------------------------------ VM page

let vmInfo = null;

const POWER = [
  ["power-on", "Power on", s => s === "off" || s.startsWith("suspended")],
  ["shutdown", "Shut down", s => s.startsWith("running")],
  ["power-off", "Power off", s => s.startsWith("running") || s.startsWith("paused")],
  ["reset", "Reset", s => s.startsWith("running")],
  ["suspend", "Suspend", s => s.startsWith("running")],
  ["resume", "Resume", s => s.startsWith("suspended") || s.startsWith("paused")],
];

async function vmAction(id, action, body) {
  try {
    const j = await act("POST", "vms/" + encodeURIComponent(id) + "/" + action, body || {});
    if (j.state === "failed") $("vm-msg").textContent = action + ": " + j.result.error;
    else $("vm-msg").textContent = "";
    await loadVm(id);
  } catch (e) { if ($("vm-msg")) $("vm-msg").textContent = action + ": " + e.message; }
}

async function vmMore(id, what) {
  const dsNames = inv.datastores.map(d => d.name);
  let body = null, action = what;
  if (what === "migrate") {
    const hs = await api("GET", "hosts");
    const v = await askForm("Migrate " + vmInfo.name + " to another host",
      [{ id: "host", label: "Destination host", options: hs.hosts.filter(h => !h.self).map(h => h.name) }], "Migrate");
    if (v) body = { host: v.host };
  } else if (what === "migrate-storage" || what === "clone") {
    const v = await askForm(what === "clone" ? "Clone " + vmInfo.name : "Move " + vmInfo.name + " to another datastore",
      [{ id: "datastore", label: "Datastore", options: dsNames, value: vmInfo.datastore },
       { id: "folder", label: "Folder on it (empty: its root)", value: vmInfo.folder || "" },
       { id: "name", label: "New VM folder name", value: what === "clone" ? vmInfo.name + "-clone" : vmInfo.name },
       { id: "provisioning", label: "Disk provisioning", options: ["thin", "thick", "eagerzeroed"] }],
      what === "clone" ? "Clone" : "Move");
    if (v) body = v;
  } else if (what === "destroy") {
    const v = await askForm("Delete " + vmInfo.name + " and all its files?", [], "Delete");
    if (v) body = {};
  } else if (what === "unregister" || what === "template") {
    body = {};
  }
  if (body) {
    await vmAction(id, action, body);
    if ((what === "destroy" || what === "unregister") && $("vm-msg") && !$("vm-msg").textContent)
      location.hash = "#/vms";
  }
}

async function loadVm(id) {
  try {
    vmInfo = await api("GET", "vms/" + encodeURIComponent(id));
    drawVm(id);
  } catch (e) {
    if ($("vm-summary")) $("vm-summary").replaceChildren(el("p", { class: "error", text: e.message }));
  }
}

function updateVmState() {
  const id = decodeURIComponent(route.slice(5));
  const vm = inv.vms.find(v => v.id === id);
  if (vm && vmInfo && vm.state !== vmInfo.state) loadVm(id);
}

function viewVm(main, id) {
  vmInfo = null;
  main.replaceChildren(
    el("div", { class: "view-head" }, el("h2", { id: "vm-title", text: id }),
      el("span", { id: "vm-state", class: "badge" })),
    el("div", { class: "buttons", id: "vm-power", role: "toolbar", "aria-label": "Power" }),
    el("div", { class: "buttons", id: "vm-actions", role: "toolbar", "aria-label": "Actions" }),
    el("p", { id: "vm-msg", class: "error", role: "alert" }),
    el("div", { class: "cols" },
      el("section", { id: "vm-summary", class: "card" }, el("p", { text: "Loading…" })),
      el("section", { class: "card console-card" }, el("h3", { text: "Console (serial log)" }),
        el("pre", { id: "console", tabindex: "0", "aria-live": "off", "aria-label": "serial console" }))));
  loadVm(id);
  let offset = -1;
  const con = async () => {
    if (!$("console")) return;
    try {
      const c = await api("GET", "vms/" + encodeURIComponent(id) + "/console" + (offset >= 0 ? "?offset=" + offset : ""));
      const pre = $("console");
      if (offset < 0 || c.start < offset) pre.textContent = "";
      if (c.text) {
        const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
        pre.textContent = (pre.textContent + c.text).slice(-200000);
        if (atEnd) pre.scrollTop = pre.scrollHeight;
      }
      offset = c.offset;
    } catch (e) { /* shown by the summary */ }
  };
  con();
  timers.push(setInterval(con, CONSOLE_MS));
}

function drawVm(id) {
  const v = vmInfo;
  const s = v.state || "";
  $("vm-title").textContent = v.name;
  $("vm-state").textContent = s;
  $("vm-state").className = "badge " + stateClass(s);
  $("vm-power").replaceChildren(...POWER.map(([a, label, ok]) =>
    el("button", { type: "button", id: "btn-" + a, disabled: !ok(s), onclick: () => vmAction(id, a), text: label })));
  $("vm-actions").replaceChildren(...[["migrate", "Migrate"], ["migrate-storage", "Move storage"],
    ["clone", "Clone"], ["unregister", "Unregister"], ["destroy", "Delete"]].map(([a, label]) =>
    el("button", { type: "button", id: "btn-" + a, onclick: () => vmMore(id, a), text: label })));
  const disks = (v.disks || []).map(d => el("tr", {},
    el("td", { text: d.device }), el("td", { text: d.cdrom ? "CD-ROM " + d.file : d.file }),
    el("td", { text: d.cdrom ? "-" : gbGib(d.size) }), el("td", { text: d.cdrom ? "-" : gbGib(d.allocated) }),
    el("td", { text: d.provisioning || "-" })));
  $("vm-summary").replaceChildren(el("h3", { text: "Summary" }),
    el("dl", { class: "facts" },
      el("dt", { text: "State" }), el("dd", { id: "sum-state", text: s }),
      el("dt", { text: "Host" }), el("dd", { id: "sum-host", text: v.host || "-" }),
      el("dt", { text: "Guest OS" }), el("dd", { text: v.guest_os || "-" }),
      el("dt", { text: "CPUs" }), el("dd", { text: String(v.cpus) }),
      el("dt", { text: "Memory" }), el("dd", { text: v.memory_mib + " MiB" }),
      el("dt", { text: "Datastore" }), el("dd", {}, v.datastore ? el("a", { href: "#/datastore/" + encodeURIComponent(v.datastore) + "?path=" + encodeURIComponent(v.rel || ""), text: v.datastore + " / " + (v.rel || "") }) : "-"),
      el("dt", { text: "Path" }), el("dd", { text: v.vmx || v.path || "-" })),
    el("h3", { text: "Disks" }),
    el("table", { class: "grid" }, el("thead", {}, el("tr", {}, ...["Device", "File", "Provisioned", "Used", "Type"].map(t => el("th", { text: t })))),
      el("tbody", {}, disks)));
}

// ------------------------------------------------------------ datastore browser

async function viewDatastore(main, name, path) {
  const ds = inv.datastores.find(d => d.name === name);
  main.replaceChildren(header("Datastore " + name), ds ? capacity(ds) : el("p", { text: "" }),
    el("div", { class: "buttons" },
      el("button", { type: "button", id: "ds-mkdir", text: "New folder", onclick: () => mkdir(name, path) }),
      el("label", { for: "ds-file", class: "button-like", text: "Upload file…" }),
      el("input", { type: "file", id: "ds-file", class: "visually-hidden", onchange: ev => upload(name, path, ev.target) }),
      el("span", { id: "upload-status" })),
    el("nav", { class: "crumbs", id: "crumbs", "aria-label": "Folder" }),
    el("table", { class: "grid", id: "files" }, el("tbody", {}, el("tr", {}, el("td", { text: "Loading…" })))));
  const parts = path.split("/").filter(Boolean);
  const crumbs = [el("a", { href: "#/datastore/" + encodeURIComponent(name), text: name })];
  parts.forEach((p, i) => crumbs.push(" / ", el("a", { href: "#/datastore/" + encodeURIComponent(name) + "?path=" + encodeURIComponent(parts.slice(0, i + 1).join("/")), text: p })));
  $("crumbs").replaceChildren(...crumbs);
  try {
    const j = await api("GET", "datastores/" + encodeURIComponent(name) + "/files?path=" + encodeURIComponent(path));
    const items = j.items.sort((a, b) => (a.type !== b.type ? (a.type === "folder" ? -1 : 1) : a.name.localeCompare(b.name)));
    const rel = n => (path ? path + "/" : "") + n;
    const rows = items.map(it => el("tr", {},
      el("td", {}, it.type === "folder"
        ? el("a", { href: "#/datastore/" + encodeURIComponent(name) + "?path=" + encodeURIComponent(rel(it.name)), class: "folder", text: it.name + "/" })
        : el("span", { text: it.name })),
      el("td", { text: it.type }),
      el("td", { text: it.type === "file" ? human(it.size) : "" }),
      el("td", { text: it.type === "file" ? human(it.allocated) : "" }),
      el("td", { text: new Date(it.mtime * 1000).toLocaleString() }),
      el("td", {}, it.type === "file" ? el("a", { href: "/api/datastores/" + encodeURIComponent(name) + "/download?path=" + encodeURIComponent(rel(it.name)), download: it.name, text: "Download" }) : "",
        it.vm && !inv.vms.some(v => v.datastore === name && v.rel === rel(it.name))
          ? el("button", { type: "button", class: "small", text: "Register VM", "aria-label": "Register " + it.name,
              onclick: () => act("POST", "vms/register", { datastore: name, path: rel(it.name) }).then(() => render()) }) : "",
        " ", el("button", { type: "button", class: "small", text: "Delete", "aria-label": "Delete " + it.name, onclick: () => del(name, path, rel(it.name)) }))));
    $("files").replaceChildren(el("thead", {}, el("tr", {}, ...["Name", "Type", "Size", "Allocated", "Modified", ""].map(t => el("th", { text: t })))),
      el("tbody", {}, rows.length ? rows : el("tr", {}, el("td", { colspan: "6", class: "muted", text: "Empty folder." }))));
  } catch (e) { $("files").replaceChildren(el("tbody", {}, el("tr", {}, el("td", { class: "error", text: e.message })))); }
}

async function mkdir(name, path) {
  const v = await askForm("New folder in " + name + "/" + path, [{ id: "name", label: "Folder name" }], "Create");
  if (!v || !v.name) return;
  try {
    await api("POST", "datastores/" + encodeURIComponent(name) + "/mkdir", { path: (path ? path + "/" : "") + v.name });
  } catch (e) { $("upload-status").textContent = e.message; }
  render();
}

async function del(name, path, rel) {
  const v = await askForm("Delete " + rel + "?", [], "Delete");
  if (!v) return;
  try {
    await api("DELETE", "datastores/" + encodeURIComponent(name) + "/files?path=" + encodeURIComponent(rel));
  } catch (e) { $("upload-status").textContent = e.message; return; }
  render();
}

// XMLHttpRequest: fetch() has no upload progress
function upload(name, path, input) {
  const f = input.files[0];
  if (!f) return;
  const ds = inv.datastores.find(d => d.name === name);
  if (ds && f.size > ds.free) {
    $("upload-status").replaceChildren(el("span", { class: "error", text: "upload failed: " + f.name + " (" +
      human(f.size) + ") does not fit in " + human(ds.free) + " free" }));
    return;
  }
  const status = $("upload-status");
  const rel = (path ? path + "/" : "") + f.name;
  input.value = "";
  // the server refuses bigger uploads before reading them: say so first
  if (maxUpload && f.size > maxUpload) {
    status.replaceChildren(el("span", { class: "error", text: "upload failed: " + f.name + " is " +
      human(f.size) + ", the server takes at most " + human(maxUpload) + " (vmfs-webd --max-upload)" }));
    return;
  }
  const xhr = new XMLHttpRequest();
  const b = bar(0);
  status.replaceChildren(b, el("span", { id: "upload-text", text: " uploading " + f.name }));
  xhr.upload.onprogress = ev => {
    if (!ev.lengthComputable) return;
    const pct = 100 * ev.loaded / ev.total;
    b.firstChild.style.width = pct.toFixed(1) + "%";
    b.setAttribute("aria-valuenow", Math.round(pct));
    $("upload-text").textContent = " " + pct.toFixed(0) + "% of " + human(ev.total);
  };
  xhr.onload = () => {
    let msg = "";
    try { msg = JSON.parse(xhr.responseText).error || ""; } catch (e) { msg = xhr.statusText; }
    if (xhr.status >= 200 && xhr.status < 300) {
      status.replaceChildren(el("span", { id: "upload-done", text: "uploaded " + f.name + " (" + human(f.size) + ")" }));
      viewDatastore($("main"), name, path).then(() => { $("upload-status").replaceChildren(el("span", { id: "upload-done", text: "uploaded " + f.name + " (" + human(f.size) + ")" })); });
    } else {
      status.replaceChildren(el("span", { class: "error", text: "upload failed: " + msg }));
    }
  };
  xhr.onerror = () => status.replaceChildren(el("span", { class: "error", text: "upload failed: connection lost" }));
  xhr.open("PUT", "/api/datastores/" + encodeURIComponent(name) + "/upload?path=" + encodeURIComponent(rel));
  xhr.setRequestHeader("X-CSRF-Token", csrf);
  xhr.send(f);
}

// ------------------------------------------------------------ the wizard

async function dsFiles(ds) {
  const out = [];
  const list = async p => (await api("GET", "datastores/" + encodeURIComponent(ds) + "/files?path=" + encodeURIComponent(p))).items;
  try {
    for (const it of await list("")) {
      if (it.type === "file") out.push(it.name);
      else if (it.type === "folder" && !it.vm) {   // a VM's own copies are not offered
        try {
          for (const s of await list(it.name)) if (s.type === "file" && !/\.(vmx|vmdk|log|vmss|lck)$/.test(s.name)) out.push(it.name + "/" + s.name);
        } catch (e) { /* unreadable folder */ }
      }
    }
  } catch (e) { /* none */ }
  return out;
}

async function dsFolders(ds) {
  try {
    const j = await api("GET", "datastores/" + encodeURIComponent(ds) + "/files?path=");
    const vmFolders = new Set(inv.vms.filter(v => v.datastore === ds).map(v => v.rel));
    return j.items.filter(i => i.type === "folder" && !vmFolders.has(i.name)).map(i => i.name);
  } catch (e) { return []; }
}

const STEPS = ["Name and location", "Hardware", "Boot media and network", "Ready to complete"];

function wizard() {
  const d = $("dialog");
  const st = { step: 0, v: { name: "", datastore: inv.datastores.length ? inv.datastores[0].name : "", folder: "",
    cpus: "1", memory: "256", disk: "1", prov: "thin", guest: "other-64", boot: "none", iso: "", kernel: "", initrd: "", append: "", net: "nat" } };
  let files = [], folders = [];
  const field = (id, label, input) => { input.id = "wiz-" + id; input.value = st.v[id]; return el("p", {}, el("label", { for: "wiz-" + id, text: label }), input); };
  const sel = opts => { const s = el("select"); for (const o of opts) s.append(el("option", { value: o[0], text: o[1] })); return s; };
  const save = () => { for (const k of Object.keys(st.v)) if ($("wiz-" + k)) st.v[k] = $("wiz-" + k).value; };
  const fileList = () => { const dl = el("datalist", { id: "wiz-files" }); for (const f of files) dl.append(el("option", { value: f })); return dl; };
  const draw = async () => {
    $("dialog-title").textContent = "New virtual machine — " + (st.step + 1) + " of 4: " + STEPS[st.step];
    $("dialog-error").textContent = "";
    let body;
    if (st.step === 0) {
      folders = await dsFolders(st.v.datastore);
      const fsel = sel([["", "(datastore root)"], ...folders.map(f => [f, f])]);
      const dsel = sel(inv.datastores.map(x => [x.name, x.name + " — " + gbGib(x.free) + " free"]));
      body = [field("name", "Name", el("input", { required: true, autocomplete: "off" })), field("datastore", "Datastore", dsel),
        field("folder", "VM folder", fsel)];
      dsel.onchange = () => { save(); st.v.folder = ""; draw(); };
    } else if (st.step === 1) {
      body = [field("cpus", "CPUs", el("input", { type: "number", min: "1", max: "64" })),
        field("memory", "Memory (MiB)", el("input", { type: "number", min: "16", step: "16" })),
        field("disk", "Disk size (GiB)", el("input", { type: "number", min: "0.01", step: "any" })),
        field("prov", "Disk provisioning", sel([["thin", "Thin"], ["thick", "Thick (lazily zeroed)"], ["eagerzeroed", "Thick, eagerly zeroed"]])),
        field("guest", "Guest OS", sel([["other-64", "Other (64-bit)"], ["debian12-64", "Debian 12 (64-bit)"], ["ubuntu-64", "Ubuntu (64-bit)"], ["rhel9-64", "RHEL 9 (64-bit)"], ["windows2019srv-64", "Windows Server 2019"]]))];
    } else if (st.step === 2) {
      files = await dsFiles(st.v.datastore);
      // first visit of this step: offer what the datastore has (a
      // kernel and initrd, as the quick start puts there, or an ISO)
      if (!st.bootSeen) {
        st.bootSeen = true;
        const k = files.find(f => /(^|\/)vmlinuz[^/]*$/.test(f)), i = files.find(f => /(^|\/)initrd[^/]*$/.test(f));
        const iso = files.find(f => /\.iso$/i.test(f));
        if (k) Object.assign(st.v, { boot: "kernel", kernel: k, initrd: i || "" });
        else if (iso) Object.assign(st.v, { boot: "iso", iso });
      }
      const boot = sel([["none", "None (empty disk)"], ["iso", "CD/DVD: an ISO on the datastore"], ["kernel", "Direct kernel boot (kernel + initrd on the datastore)"]]);
      body = [field("boot", "Boot media", boot), fileList()];
      if (st.v.boot === "iso") body.push(field("iso", "ISO file (path on " + st.v.datastore + ")", el("input", { list: "wiz-files" })));
      if (st.v.boot === "kernel") body.push(field("kernel", "Kernel", el("input", { list: "wiz-files" })),
        field("initrd", "Initrd", el("input", { list: "wiz-files" })), field("append", "Kernel command line", el("input")));
      body.push(field("net", "Network", sel([["nat", "NAT (user networking)"], ["none", "None"]])));
      boot.onchange = () => { save(); draw(); };
    } else {
      const v = st.v;
      body = [el("dl", { class: "facts", id: "wiz-summary" },
        ...[["Name", v.name], ["Location", v.datastore + " / " + (v.folder ? v.folder + "/" : "") + v.name], ["CPUs", v.cpus],
          ["Memory", v.memory + " MiB"], ["Disk", v.disk + " GiB, " + v.prov], ["Guest OS", v.guest],
          ["Boot", v.boot === "iso" ? "ISO " + v.iso : v.boot === "kernel" ? "kernel " + v.kernel + (v.initrd ? ", initrd " + v.initrd : "") : "none"],
          ["Network", v.net]].flatMap(([k, x]) => [el("dt", { text: k }), el("dd", { text: x })]))];
    }
    $("dialog-body").replaceChildren(...body);
    const back = el("button", { type: "button", id: "wiz-back", text: "Back", disabled: st.step === 0, onclick: () => { save(); st.step--; draw(); } });
    const next = st.step < 3 ? el("button", { type: "submit", id: "wiz-next", text: "Next" })
      : el("button", { type: "submit", id: "wiz-finish", text: "Finish" });
    const cancel = el("button", { type: "button", id: "wiz-cancel", text: "Cancel", onclick: () => d.close() });
    $("dialog-buttons").replaceChildren(cancel, back, next);
    const first = $("dialog-body").querySelector("input,select");
    if (first) first.focus();
  };
  $("dialog-form").onsubmit = async ev => {
    ev.preventDefault();
    save();
    const v = st.v;
    if (st.step === 0 && !/^[A-Za-z0-9][A-Za-z0-9._ -]*$/.test(v.name)) { $("dialog-error").textContent = "Give a name: letters, digits, '.', '_', '-', spaces."; return; }
    if (st.step === 1 && (!(+v.cpus >= 1) || !(+v.memory >= 16) || !(+v.disk > 0))) { $("dialog-error").textContent = "CPUs, memory and disk size must be positive."; return; }
    if (st.step === 2 && ((v.boot === "iso" && !v.iso) || (v.boot === "kernel" && !v.kernel))) { $("dialog-error").textContent = "Pick the boot file."; return; }
    if (st.step < 3) { st.step++; draw(); return; }
    const body = { datastore: v.datastore, folder: v.folder, name: v.name, cpus: +v.cpus, memory_mib: +v.memory,
      disk_mib: Math.max(1, Math.round(+v.disk * 1024)), provisioning: v.prov, guest_os: v.guest, net: v.net };
    if (v.boot === "iso") body.iso = v.iso;
    if (v.boot === "kernel") { body.kernel = v.kernel; if (v.initrd) body.initrd = v.initrd; if (v.append) body.append = v.append; }
    $("wiz-finish").disabled = true;
    try {
      const j = await act("POST", "vms", body);
      if (j.state === "failed") { $("dialog-error").textContent = j.result.error; $("wiz-finish").disabled = false; return; }
      d.close();
      $("dialog-form").onsubmit = null;
      await refresh();
      const vm = inv.vms.find(x => x.vmx === j.result.vmx || x.path === j.result.path);
      location.hash = vm ? "#/vm/" + encodeURIComponent(vm.id) : "#/vms";
    } catch (e) { $("dialog-error").textContent = e.message; if ($("wiz-finish")) $("wiz-finish").disabled = false; }
  };
  d.oncancel = null;
  d.showModal();
  draw();
}

// ------------------------------------------------------------ start

document.addEventListener("DOMContentLoaded", async () => {
  $("login-form").addEventListener("submit", login);
  $("logout").addEventListener("click", logout);
  $("tab-tasks").addEventListener("click", () => showTab("tasks"));
  $("tab-events").addEventListener("click", () => showTab("events"));
  window.addEventListener("hashchange", render);
  $("login-host").textContent = location.host;
  try {
    const s = await api("GET", "session");
    csrf = s.csrf;
    maxUpload = s.max_upload || 0;
    start();
  } catch (e) { showLogin(); }
});
