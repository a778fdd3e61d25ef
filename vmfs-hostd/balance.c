// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * `vmfsctl balance [--apply]` (docs/ha.md §4c): the load of each host of
 * this host's datastores, and live migrations that even it out.
 *
 * The load comes from what every agent publishes on the datastore for HA
 * (.vmfsd/ha/agents/<host>: committed vCPUs and memory of the VMs running
 * there against the capacity it offers, and the CPU its QEMUs used over
 * the last HA tick) and the VMs from the HA protected lists (one entry per
 * running protected VM with its vCPUs and memory).  The measure evened out
 * is committed memory over capacity, the one HA placement and maintenance
 * mode place by.  Moves are chosen greedily: from the most loaded host to
 * the least loaded one, the VM that brings the two closest, while the
 * spread between them exceeds BALANCE_SPREAD and the VM fits (memory and
 * vCPUs within the destination's capacity).  Hosts in maintenance, not
 * live, or without a migration address take no part.
 *
 * --apply performs the moves in order: a VM of this host through
 * agent_migrate, one of another host by asking that host's agent over its
 * migration control connection (migrate_remote; it shows that host's
 * secret, which only a reader of the datastore's .vmfsd/agents/ knows).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ops.h"

/* Our choice, not a measured number: below a 20-point spread of committed
 * memory a move buys little and still costs a migration's pause. */
#define BALANCE_SPREAD 0.20
#define BALANCE_MAX_MOVES 16
#define BALANCE_MAX_HOSTS 64
#define BALANCE_MAX_VMS 512

struct bhost {
	char host[65];
	const char *state;
	bool maintenance, migration, eligible;
	long long cap_vcpus, used_vcpus, cap_mem, used_mem;
	int cpu_pct, nvms;
};

struct bvm {
	char rel[PATH_MAX];
	int host;                     /* index in the host table */
	int vcpus, mem;
	bool moved;
};

static double frac(const struct bhost *h, long long extra)
{
	return h->cap_mem > 0 ? (double)(h->used_mem + extra) / (double)h->cap_mem : 1e9;
}

static unsigned load_hosts(const char *root, const struct dsview *d, struct bhost *hs, unsigned max)
{
	char dir[PATH_MAX + 64];
	DIR *dh;
	struct dirent *de;
	unsigned n = 0;

	snprintf(dir, sizeof(dir), "%s/.vmfsd/ha/agents", root);
	dh = opendir(dir);
	while (dh && (de = readdir(dh)) && n < max) {
		char path[PATH_MAX + 128];
		const char *h;
		int64_t ago;
		json_t *r;

		if (de->d_name[0] == '.' || strchr(de->d_name, '.'))
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		r = ha_agent_record(path, NULL);
		h = json_string_value(json_object_get(r, "host"));
		if (h) {
			struct bhost *b = &hs[n++];
			enum ds_hstate st = ds_host(d, h, &ago);

			memset(b, 0, sizeof(*b));
			snprintf(b->host, sizeof(b->host), "%s", h);
			b->state = ds_hstate_name(st);
			b->maintenance = json_is_true(json_object_get(r, "maintenance"));
			snprintf(path, sizeof(path), "%s/.vmfsd/agents/%s.migration", root, h);
			b->migration = !access(path, F_OK);
			b->cap_vcpus = json_integer_value(json_object_get(r, "cap_vcpus"));
			b->used_vcpus = json_integer_value(json_object_get(r, "used_vcpus"));
			b->cap_mem = json_integer_value(json_object_get(r, "cap_memory_mib"));
			b->used_mem = json_integer_value(json_object_get(r, "used_memory_mib"));
			b->cpu_pct = (int)json_integer_value(json_object_get(r, "qemu_cpu_pct"));
			b->nvms = (int)json_integer_value(json_object_get(r, "vms"));
			b->eligible = st == DS_LIVE && !b->maintenance && b->migration && b->cap_mem > 0;
		}
		json_decref(r);
	}
	if (dh)
		closedir(dh);
	return n;
}

static unsigned load_vms(const char *root, struct bhost *hs, unsigned nh, struct bvm *vs,
			 unsigned max)
{
	unsigned n = 0;

	for (unsigned h = 0; h < nh; h++) {
		char dir[PATH_MAX + 160];
		DIR *dh;
		struct dirent *de;

		snprintf(dir, sizeof(dir), "%s/.vmfsd/ha/protected/%s", root, hs[h].host);
		dh = opendir(dir);
		while (dh && (de = readdir(dh)) && n < max) {
			char path[PATH_MAX * 2], txt[2048];
			json_t *e;

			if (de->d_name[0] == '.' || !strstr(de->d_name, ".json") ||
			    strstr(de->d_name, ".tmp"))
				continue;
			snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
			if (read_text(path, txt, sizeof(txt)) || !(e = json_loads(txt, 0, NULL)))
				continue;
			if (json_string_value(json_object_get(e, "vmx"))) {
				snprintf(vs[n].rel, sizeof(vs[n].rel), "%s",
					 json_string_value(json_object_get(e, "vmx")));
				vs[n].host = (int)h;
				vs[n].vcpus = (int)json_integer_value(json_object_get(e, "vcpus"));
				vs[n].mem = (int)json_integer_value(json_object_get(e, "memory_mib"));
				vs[n++].moved = false;
			}
			json_decref(e);
		}
		if (dh)
			closedir(dh);
	}
	return n;
}

/* The greedy plan (see the top of the file); moves into MOVES. */
static void plan(const char *root, struct bhost *hs, unsigned nh, struct bvm *vs, unsigned nv,
		 json_t *moves)
{
	for (int k = 0; k < BALANCE_MAX_MOVES; k++) {
		int hi = -1, lo = -1, best = -1;
		double bestspread;

		for (unsigned h = 0; h < nh; h++) {
			if (!hs[h].eligible)
				continue;
			if (hi < 0 || frac(&hs[h], 0) > frac(&hs[hi], 0))
				hi = (int)h;
			if (lo < 0 || frac(&hs[h], 0) < frac(&hs[lo], 0))
				lo = (int)h;
		}
		if (hi < 0 || hi == lo || frac(&hs[hi], 0) - frac(&hs[lo], 0) <= BALANCE_SPREAD)
			return;
		bestspread = frac(&hs[hi], 0) - frac(&hs[lo], 0);
		for (unsigned i = 0; i < nv; i++) {
			double s;

			if (vs[i].host != hi || vs[i].moved || vs[i].mem <= 0 ||
			    hs[lo].used_mem + vs[i].mem > hs[lo].cap_mem ||
			    hs[lo].used_vcpus + vs[i].vcpus > hs[lo].cap_vcpus)
				continue;
			s = frac(&hs[hi], -vs[i].mem) - frac(&hs[lo], vs[i].mem);
			if (s < 0)
				s = -s;
			if (s < bestspread) {
				bestspread = s;
				best = (int)i;
			}
		}
		if (best < 0)
			return;
		vs[best].moved = true;
		hs[hi].used_mem -= vs[best].mem;
		hs[hi].used_vcpus -= vs[best].vcpus;
		hs[lo].used_mem += vs[best].mem;
		hs[lo].used_vcpus += vs[best].vcpus;
		json_array_append_new(moves, json_pack("{s:s,s:s,s:s,s:s,s:i,s:i}", "datastore", root,
						       "vmx", vs[best].rel, "from", hs[hi].host, "to",
						       hs[lo].host, "memory_mib", vs[best].mem, "vcpus",
						       vs[best].vcpus));
	}
}

json_t *agent_balance(struct agent *a, json_t *req, int cfd)
{
	static char roots[16][PATH_MAX];
	static struct bhost hs[BALANCE_MAX_HOSTS];
	static struct bvm vs[BALANCE_MAX_VMS];
	bool apply = json_is_true(json_object_get(req, "apply"));
	json_t *dss = json_array(), *moves = json_array(), *reply;
	int nr = ha_datastores(a, roots, 16), failed = 0, done = 0;

	for (int i = 0; i < nr; i++) {
		struct dsview d;
		unsigned nh, nv;
		json_t *hj = json_array(), *before = json_array();

		if (ds_open(roots[i], &d)) {
			json_decref(hj);
			json_decref(before);
			continue;
		}
		nh = load_hosts(roots[i], &d, hs, BALANCE_MAX_HOSTS);
		ds_close(&d);
		nv = load_vms(roots[i], hs, nh, vs, BALANCE_MAX_VMS);
		for (unsigned h = 0; h < nh; h++)
			json_array_append_new(hj, json_pack(
				"{s:s,s:s,s:b,s:b,s:i,s:I,s:I,s:I,s:I,s:i,s:f}", "host", hs[h].host,
				"state", hs[h].state, "maintenance", hs[h].maintenance, "migration",
				hs[h].migration, "vms", hs[h].nvms, "used_vcpus", hs[h].used_vcpus,
				"cap_vcpus", hs[h].cap_vcpus, "used_memory_mib", hs[h].used_mem,
				"cap_memory_mib", hs[h].cap_mem, "qemu_cpu_pct", hs[h].cpu_pct,
				"memory_used", hs[h].cap_mem > 0 ? frac(&hs[h], 0) : 0.0));
		plan(roots[i], hs, nh, vs, nv, moves);
		json_array_append_new(dss, json_pack("{s:s,s:o}", "datastore", roots[i], "hosts", hj));
		json_decref(before);
	}
	if (apply) {
		size_t k;
		json_t *m;

		json_array_foreach(moves, k, m) {
			const char *root = json_string_value(json_object_get(m, "datastore"));
			const char *rel = json_string_value(json_object_get(m, "vmx"));
			const char *from = json_string_value(json_object_get(m, "from"));
			const char *to = json_string_value(json_object_get(m, "to"));
			json_t *r;

			migrate_progress(cfd, "balance", json_pack("{s:s,s:s,s:s,s:i,s:i}", "vmx", rel,
								   "from", from, "destination", to, "n",
								   (int)k + 1, "of", (int)json_array_size(moves)));
			if (!strcmp(from, a->host)) {
				char path[PATH_MAX * 2];
				json_t *mreq;

				snprintf(path, sizeof(path), "%s/%s", root, rel);
				mreq = json_pack("{s:s,s:s,s:s}", "cmd", "migrate", "path", path, "host", to);
				r = agent_migrate(a, mreq, cfd);
				json_decref(mreq);
			} else {
				r = migrate_remote(root, from, rel, to, cfd);
			}
			if (json_is_true(json_object_get(r, "ok"))) {
				done++;
				json_object_set_new(m, "result", json_string("moved"));
			} else {
				failed++;
				json_object_set_new(m, "result", json_string(
					json_string_value(json_object_get(r, "error")) ?: "failed"));
			}
			agent_event(a, NULL, json_is_true(json_object_get(r, "ok")) ? "balance.moved"
										   : "balance.failed",
				    "%s: host %s -> host %s: %s", rel, from, to,
				    json_string_value(json_object_get(r, "message")) ?:
				    json_string_value(json_object_get(r, "error")) ?: "?");
			json_decref(r);
		}
	}
	if (failed)
		reply = reply_err(EIO, "%d of %zu balancing migration(s) failed", failed,
				  json_array_size(moves));
	else if (apply)
		reply = reply_ok("%d balancing migration(s) done", done);
	else
		reply = reply_ok("%zu migration(s) proposed", json_array_size(moves));
	json_object_set_new(reply, "datastores", dss);
	json_object_set_new(reply, "moves", moves);
	json_object_set_new(reply, "applied", json_boolean(apply));
	return reply;
}
