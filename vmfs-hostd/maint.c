// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Maintenance mode (docs/ha.md §4b): `vmfsctl host maintenance enter`
 * empties this host before work on it.  The host is marked in its state
 * folder (<state>/maintenance) and, through the HA loop's agent record,
 * on every datastore (.vmfsd/ha/agents/<host> "maintenance": true), so
 * the other agents' HA placement never restarts a VM here; power-ons and
 * incoming migrations are refused here; every running VM is live-migrated
 * (migrate.c) to the host HA placement would choose (the most free memory
 * within each host's published capacity, ties by name: ha.c
 * plan_and_start); what could not move is reported with the reason, and
 * the host stays in maintenance.  `exit` lifts it.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ops.h"

/* the evacuation's default budget: a 256 MiB TCG guest migrates in about a
 * second here (BENCHMARKS.md), a busy one in a few; ten minutes leaves room
 * for many VMs and for a slow migration network */
#define MAINT_DEFAULT_TIMEOUT_S 600

static void maint_path(const struct agent *a, char *buf, size_t size)
{
	snprintf(buf, size, "%s/maintenance", a->state_dir);
}

bool maint_active(const struct agent *a, int64_t *since_ms)
{
	char p[PATH_MAX + 16], t[64];

	maint_path(a, p, sizeof(p));
	if (read_text(p, t, sizeof(t)))
		return false;
	if (since_ms)
		*since_ms = atoll(t);
	return true;
}

json_t *maint_refuse(const struct agent *a, const char *vmx, const char *what)
{
	int64_t since = 0;

	if (!maint_active(a, &since))
		return NULL;
	return reply_err(EBUSY, "%s: %s refused: host %s is in maintenance mode (since %lld s ago); "
			 "`vmfsctl host maintenance exit` lifts it", vmx, what, a->host,
			 (long long)((wall_ms() - since) / 1000));
}

/* A host of ROOT's cluster that could take a VM: live, its agent's record
 * published and not in maintenance, a migration address published. */
struct target {
	char host[65];
	long long free_mem;
	long long free_vcpus;
};

static unsigned targets(struct agent *a, const struct dsview *d, struct target *out, unsigned max)
{
	char dir[PATH_MAX + 64];
	DIR *dh;
	struct dirent *de;
	unsigned n = 0;

	snprintf(dir, sizeof(dir), "%s/.vmfsd/ha/agents", d->root);
	dh = opendir(dir);
	while (dh && (de = readdir(dh)) && n < max) {
		char path[PATH_MAX + 128];
		json_t *r;
		const char *h;
		int64_t ago;

		if (de->d_name[0] == '.' || strchr(de->d_name, '.'))
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		r = ha_agent_record(path, NULL);
		h = json_string_value(json_object_get(r, "host"));
		snprintf(path, sizeof(path), "%s/.vmfsd/agents/%s.migration", d->root, h ? h : "-");
		if (h && strcmp(h, a->host) && ds_host(d, h, &ago) == DS_LIVE &&
		    !json_is_true(json_object_get(r, "maintenance")) && !access(path, F_OK)) {
			snprintf(out[n].host, sizeof(out[n].host), "%s", h);
			out[n].free_vcpus = json_integer_value(json_object_get(r, "cap_vcpus")) -
					    json_integer_value(json_object_get(r, "used_vcpus"));
			out[n].free_mem = json_integer_value(json_object_get(r, "cap_memory_mib")) -
					  json_integer_value(json_object_get(r, "used_memory_mib"));
			n++;
		}
		json_decref(r);
	}
	if (dh)
		closedir(dh);
	return n;
}

/* the running VMs of this host: .vmx paths with their size */
struct running {
	char vmx[PATH_MAX];
	unsigned vcpus, mem;
};

static int running_cmp(const void *x, const void *y)
{
	const struct running *p = x, *q = y;

	/* the largest first: they are the hardest to place */
	return p->mem != q->mem ? (p->mem < q->mem ? 1 : -1) : strcmp(p->vmx, q->vmx);
}

static size_t running_vms(struct agent *a, struct running *out, size_t max)
{
	char vms[PATH_MAX + 8];
	DIR *d;
	struct dirent *de;
	size_t n = 0;

	snprintf(vms, sizeof(vms), "%s/vms", a->state_dir);
	d = opendir(vms);
	while (d && (de = readdir(d)) && n < max) {
		struct vmctx v;
		char p[PATH_MAX + 16], buf[64];

		if (de->d_name[0] == '.')
			continue;
		memset(&v, 0, sizeof(v));
		snprintf(v.sdir, sizeof(v.sdir), "%s/%s", vms, de->d_name);
		if (!vm_qemu_pid(&v))
			continue;
		sfile(&v, "vmx", p, sizeof(p));
		if (read_text(p, out[n].vmx, sizeof(out[n].vmx)))
			continue;
		sfile(&v, "res", p, sizeof(p));
		if (read_text(p, buf, sizeof(buf)) ||
		    sscanf(buf, "%u %u", &out[n].vcpus, &out[n].mem) != 2)
			out[n].vcpus = out[n].mem = 0;
		n++;
	}
	if (d)
		closedir(d);
	qsort(out, n, sizeof(out[0]), running_cmp);
	return n;
}

static json_t *maint_enter(struct agent *a, json_t *req, int cfd)
{
	static struct running vms[256];
	char p[PATH_MAX + 16], t[32];
	json_int_t timeout = json_integer_value(json_object_get(req, "timeout"));
	int64_t end, since;
	json_t *moved = json_array(), *stuck = json_array(), *reply;
	/* what this evacuation already sent to each host (the published
	 * records lag by a second or so) */
	struct { char host[65]; long long mem, vcpus; } sent[64];
	unsigned nsent = 0;
	size_t n;

	if (timeout <= 0)
		timeout = MAINT_DEFAULT_TIMEOUT_S;
	end = now_ms() + timeout * 1000;
	if (!maint_active(a, &since)) {
		maint_path(a, p, sizeof(p));
		snprintf(t, sizeof(t), "%lld\n", (long long)wall_ms());
		if (write_text(p, t)) {
			json_decref(moved);
			json_decref(stuck);
			return reply_err(EIO, "host %s: cannot write %s", a->host, p);
		}
		agent_event(a, NULL, "host.maintenance-entered",
			    "host %s enters maintenance mode: power-ons refused, HA places nothing here, "
			    "running VMs are migrated away", a->host);
	}
	/* the HA loop republishes our record within a tick (500 ms, ha.c):
	 * let the others see it before we pick destinations */
	sleep_ms(1500);
	n = running_vms(a, vms, sizeof(vms) / sizeof(vms[0]));
	for (size_t i = 0; i < n; i++) {
		struct vmctx v;
		struct vm_err err;
		struct dsview d;
		struct target tg[64];
		unsigned nt = 0;
		int best = -1;
		char why[512] = "";

		if (now_ms() >= end) {
			json_array_append_new(stuck, json_pack("{s:s,s:s}", "vmx", vms[i].vmx, "error",
							       "maintenance timeout reached before its turn"));
			continue;
		}
		if (vmctx_open(a, vms[i].vmx, false, &v, &err)) {
			snprintf(why, sizeof(why), "%s", err.msg);
		} else if (ds_open(v.folder, &d)) {
			snprintf(why, sizeof(why), "not on a vmfsd cluster datastore");
		} else {
			nt = targets(a, &d, tg, 64);
			ds_close(&d);
		}
		vmctx_close(&v);
		for (unsigned h = 0; h < nt; h++) {
			for (unsigned s = 0; s < nsent; s++)
				if (!strcmp(sent[s].host, tg[h].host)) {
					tg[h].free_mem -= sent[s].mem;
					tg[h].free_vcpus -= sent[s].vcpus;
				}
			if (tg[h].free_mem < vms[i].mem || tg[h].free_vcpus < vms[i].vcpus)
				continue;
			if (best < 0 || tg[h].free_mem > tg[best].free_mem ||
			    (tg[h].free_mem == tg[best].free_mem && strcmp(tg[h].host, tg[best].host) < 0))
				best = (int)h;
		}
		if (!why[0] && best < 0)
			snprintf(why, sizeof(why), "%s: %u vCPU(s) and %u MiB fit no other live host with "
				 "a migration address and not in maintenance", nt ? "no room" : "no host",
				 vms[i].vcpus, vms[i].mem);
		if (why[0]) {
			agent_event(a, vms[i].vmx, "host.maintenance-stuck", "not moved: %s", why);
			json_array_append_new(stuck, json_pack("{s:s,s:s}", "vmx", vms[i].vmx, "error", why));
			continue;
		}
		migrate_progress(cfd, "evacuate", json_pack("{s:s,s:s,s:i,s:i}", "vmx", vms[i].vmx,
							    "destination", tg[best].host, "n", (int)i + 1,
							    "of", (int)n));
		json_t *mreq = json_pack("{s:s,s:s,s:s}", "cmd", "migrate", "path", vms[i].vmx, "host",
					 tg[best].host);
		json_t *r = agent_migrate(a, mreq, cfd);

		json_decref(mreq);
		if (json_is_true(json_object_get(r, "ok"))) {
			json_array_append_new(moved, json_pack("{s:s,s:s}", "vmx", vms[i].vmx, "host",
							       tg[best].host));
			if (nsent < 64) {
				snprintf(sent[nsent].host, sizeof(sent[nsent].host), "%s", tg[best].host);
				sent[nsent].mem = vms[i].mem;
				sent[nsent++].vcpus = vms[i].vcpus;
			}
		} else {
			const char *e = json_string_value(json_object_get(r, "error"));

			agent_event(a, vms[i].vmx, "host.maintenance-stuck", "not moved: migration to host %s failed: %s",
				    tg[best].host, e ? e : "?");
			json_array_append_new(stuck, json_pack("{s:s,s:s,s:s}", "vmx", vms[i].vmx, "host",
							       tg[best].host, "error", e ? e : "?"));
		}
		json_decref(r);
	}
	if (json_array_size(stuck)) {
		char msg[2048];
		size_t k, off;
		json_t *s;

		off = (size_t)snprintf(msg, sizeof(msg), "host %s is in maintenance mode, but %zu VM(s) could not be moved:",
				       a->host, json_array_size(stuck));
		json_array_foreach(stuck, k, s)
			if (off < sizeof(msg))
				off += (size_t)snprintf(msg + off, sizeof(msg) - off, "%s %s (%s)", k ? ";" : "",
							json_string_value(json_object_get(s, "vmx")),
							json_string_value(json_object_get(s, "error")));
		agent_event(a, NULL, "host.maintenance-incomplete", "%zu VM(s) moved, %zu could not be",
			    json_array_size(moved), json_array_size(stuck));
		reply = reply_err(EBUSY, "%s", msg);
	} else {
		agent_event(a, NULL, "host.maintenance-empty", "in maintenance mode and empty (%zu VM(s) moved)",
			    json_array_size(moved));
		reply = reply_ok("host %s is in maintenance mode and runs no VM (%zu moved)", a->host,
				 json_array_size(moved));
	}
	json_object_set_new(reply, "maintenance", json_true());
	json_object_set_new(reply, "moved", moved);
	json_object_set_new(reply, "not_moved", stuck);
	return reply;
}

json_t *agent_maintenance(struct agent *a, json_t *req, int cfd)
{
	const char *action = req_str(req, "action") ?: "status";
	char p[PATH_MAX + 16];
	int64_t since = 0;
	bool on = maint_active(a, &since);
	const char *host = req_str(req, "host");

	if (host && strcmp(host, a->host))
		return reply_err(EINVAL, "this is the agent of host %s, not of host %s: maintenance mode "
				 "is entered on the host's own agent (--agent SOCKET)", a->host, host);
	if (!strcmp(action, "enter"))
		return maint_enter(a, req, cfd);
	if (!strcmp(action, "exit")) {
		maint_path(a, p, sizeof(p));
		if (!on)
			return reply_ok("host %s is not in maintenance mode", a->host);
		unlink(p);
		agent_event(a, NULL, "host.maintenance-exited",
			    "host %s leaves maintenance mode: power-ons and HA restarts allowed again", a->host);
		json_t *r = reply_ok("host %s left maintenance mode", a->host);

		json_object_set_new(r, "maintenance", json_false());
		return r;
	}
	if (strcmp(action, "status"))
		return reply_err(EINVAL, "maintenance: '%s' is not enter, exit or status", action);
	json_t *r = reply_ok(on ? "host %s is in maintenance mode" : "host %s is not in maintenance mode",
			     a->host);

	json_object_set_new(r, "maintenance", json_boolean(on));
	if (on)
		json_object_set_new(r, "since_ms", json_integer(since));
	return r;
}
