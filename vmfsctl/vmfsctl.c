// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * vmfsctl: the command line of the vmfsd VM tools.  It is a thin client:
 * every command becomes one JSON request to the host agent (vmfs-hostd) on
 * its unix socket, and the agent's JSON reply is printed for people or, with
 * --json, as is for scripts.  Paths are made absolute here (the agent has
 * its own working directory).  `console` asks the agent for the VM's serial
 * socket and then talks to it directly, in raw terminal mode, until Ctrl-].
 * Exit status: 0 success, 1 the operation failed (the agent's message is
 * printed), 2 usage error, 3 the agent cannot be reached.
 */
#include <errno.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "vm/agentc.h"
#include "vm/vm.h"

#ifndef VMFSD_VERSION
#define VMFSD_VERSION "?"
#endif

#define EXIT_FAIL 1
#define EXIT_USAGE 2
#define EXIT_AGENT 3

static const char *prog = "vmfsctl";
static bool json_out;

/* ------------------------------------------------------------ commands */

/* What a command takes after its name */
enum cmd_arg {
	ARG_NONE,               /* nothing (list, agent-info) */
	ARG_PATH,               /* one PATH (create: the new VM folder; kill-volume: a mount) */
	ARG_VM,                 /* one VM: its folder or .vmx, or its name or ID (list) */
	ARG_OPT_VM,             /* an optional VM (events) */
	ARG_TWO_PATHS,          /* a VM and a destination folder (migrate-storage, clone, deploy) */
};

/* Options a command accepts (besides --json) */
enum {
	OPT_FORCE = 1u << 0,    /* --force */
	OPT_TIMEOUT = 1u << 1,  /* --timeout SEC */
	OPT_COUNT = 1u << 2,    /* --count N */
	OPT_APPLY = 1u << 3,    /* --apply */
};

struct command {
	const char *name;
	const char *help;       /* its lines of --help, after the name */
	enum cmd_arg arg;
	unsigned opts;
	/* parses the command's options into the request; NULL: the common
	 * ones (opts) */
	int (*parse)(const struct command *c, int argc, char **argv, json_t *req);
	/* runs after a successful reply instead of printing it */
	int (*after)(json_t *reply);
};

static int parse_create(const struct command *c, int argc, char **argv, json_t *req);
static int parse_common(const struct command *c, int argc, char **argv, json_t *req);
static int after_console(json_t *reply);
static int parse_migrate(const struct command *c, int argc, char **argv, json_t *req);
static int parse_storage(const struct command *c, int argc, char **argv, json_t *req);
static int parse_ha(const struct command *c, int argc, char **argv, json_t *req);
static int parse_host(const struct command *c, int argc, char **argv, json_t *req);
static int parse_balance(const struct command *c, int argc, char **argv, json_t *req);
static void print_balance(json_t *r);
static void print_ha(json_t *r);
static int parse_snapshot(const struct command *c, int argc, char **argv, json_t *req);

static const struct command commands[] = {
	{"create", " PATH --cpus N --memory MIB --disk SIZE [--provisioning thin|thick|eagerzeroed]\n"
	 "         [--guest-os OS] [--iso FILE] [--kernel FILE [--initrd FILE] [--append STR]]\n"
	 "         [--accel auto|kvm|tcg] [--net nat|none|bridge:BRIDGE]\n"
	 "                        new VM folder PATH on a mounted datastore\n",
	 ARG_PATH, 0, parse_create, NULL},
	{"list", "                  every VM on this host's datastores, whichever host\n"
	 "                        runs it, and those registered here outside them\n", ARG_NONE, 0, NULL, NULL},
	{"info", " VM               state, host and configuration of a VM\n", ARG_VM, 0, NULL, NULL},
	{"power-on", " VM [--force]    start (resumes a suspended VM)\n", ARG_VM, OPT_FORCE, NULL,
	 NULL},
	{"shutdown", " VM [--timeout SEC]    ACPI power button, power off after SEC\n", ARG_VM,
	 OPT_TIMEOUT, NULL, NULL},
	{"power-off", " VM          stop at once\n", ARG_VM, 0, NULL, NULL},
	{"reset", " VM              hard reset\n", ARG_VM, 0, NULL, NULL},
	{"suspend", " VM            save the memory state to <vm>.vmss and stop\n", ARG_VM, 0, NULL,
	 NULL},
	{"resume", " VM             start from <vm>.vmss; continue a VM paused by an I/O\n"
	 "                        error (a full datastore) once space is free\n",
	 ARG_VM, 0, NULL, NULL},
	{"console", " VM            attach to the serial console (detach: Ctrl-])\n", ARG_VM, 0,
	 NULL, after_console},
	{"destroy", " VM            delete a powered-off VM and its folder\n", ARG_VM, 0, NULL,
	 NULL},
	{"register", " VM           add an existing VM folder to this host's inventory\n", ARG_VM,
	 0, NULL, NULL},
	{"unregister", " VM         remove it from the inventory (files stay)\n", ARG_VM, 0, NULL,
	 NULL},
	{"kill-volume", " MOUNT     kill at once every VM of this host on that datastore\n"
	 "                        (the host lost the volume: fenced, vmfsd gone)\n",
	 ARG_PATH, 0, NULL, NULL},
	{"datastores", "            this host's datastores: capacity, free, provisioned\n"
	 "                        (thin disks may overcommit)\n", ARG_NONE, 0, NULL, NULL},
	{"agent-info", "            the agent's host name, limits and accelerator\n", ARG_NONE, 0,
	 NULL, NULL},
	{"events", " [VM] [--count N]    this host's recent events (of one VM)\n", ARG_OPT_VM,
	 OPT_COUNT, NULL, NULL},
	{"migrate", " VM --host HOST [--bandwidth MIB] [--downtime MS]\n"
	 "                        live-migrate a running VM to HOST (same datastore)\n",
	 ARG_VM, 0, parse_migrate, NULL},
	{"migrate-storage", " VM DEST [--provisioning thin|thick|eagerzeroed] [--consolidate]\n"
	 "                        move the VM folder to DEST (Storage vMotion; live\n"
	 "                        when the VM runs here); DEST an existing folder: into it;\n"
	 "                        --consolidate merges its snapshots first\n",
	 ARG_TWO_PATHS, 0, parse_storage, NULL},
	{"clone", " VM NEW_FOLDER [--provisioning thin|thick|eagerzeroed] [--snapshot NAME]\n"
	 "                        copy the VM (hot when it runs) under a new identity;\n"
	 "                        its disks as they are, or as snapshot NAME froze them\n",
	 ARG_TWO_PATHS, 0, parse_storage, NULL},
	{"template", " VM [--unset]    mark a powered-off VM as a template (no power-on)\n",
	 ARG_VM, 0, parse_storage, NULL},
	{"deploy", " TEMPLATE NEW_FOLDER [--name NAME] [--cpus N] [--memory MIB]\n"
	 "         [--provisioning thin|thick|eagerzeroed]   a new VM from a template\n",
	 ARG_TWO_PATHS, 0, parse_storage, NULL},
	{"tasks", "                 running and recent copies and moves (this host and the\n"
	 "                        datastores mounted here)\n", ARG_NONE, 0, NULL, NULL},
	{"ha", " status           HA: hosts per datastore (live, dead, fenced, in\n"
	 "                        recovery, agent seen), protected VMs and where they\n"
	 "                        run, recent failover events (vmfsctl(8))\n",
	 ARG_NONE, 0, parse_ha, NULL},
	{"host", " maintenance enter [--timeout SEC] | exit | status [HOST]\n"
	 "                        maintenance mode: migrate every running VM away,\n"
	 "                        refuse power-ons, no HA restarts here (vmfsctl(8))\n",
	 ARG_NONE, OPT_TIMEOUT, parse_host, NULL},
	{"balance", " [--apply]     per-host load (committed vCPUs and memory, QEMU CPU use)\n"
	 "                        and the live migrations that would even it out\n",
	 ARG_NONE, OPT_APPLY, parse_balance, NULL},
	{"snapshot", " create VM NAME [--memory] [--description TEXT]\n"
	 "                        | list VM | revert VM NAME | delete VM NAME|--all\n"
	 "                        snapshots: qcow2 deltas over the disks (vmfsctl(8))\n",
	 ARG_NONE, 0, parse_snapshot, NULL},
	{"export", " VM OUT.ova|OUT_DIR   write a powered-off VM as an OVA (one file) or\n"
	 "                        an OVF folder: descriptor, SHA-256 manifest,\n"
	 "                        streamOptimized VMDKs\n",
	 ARG_TWO_PATHS, 0, parse_storage, NULL},
	{"import", " FILE.ova|FILE.ovf DEST [--name NAME]\n"
	 "         [--provisioning thin|thick|eagerzeroed]   a new VM from an OVF\n"
	 "                        package (manifest verified); DEST an existing\n"
	 "                        folder: into it\n",
	 ARG_TWO_PATHS, 0, parse_storage, NULL},
};

static const struct command *command_find(const char *name)
{
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (!strcmp(commands[i].name, name))
			return &commands[i];
	return NULL;
}

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: %s [--agent SOCKET] [--json] COMMAND [ARGS]\n"
		"\n"
		"Manage the VMs of a vmfsd datastore through the host agent (vmfs-hostd).\n"
		"\n"
		"Commands:\n", prog);
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		fprintf(f, "  %s%s", commands[i].name, commands[i].help);
	fprintf(f,
		"\n"
		"Options:\n"
		"  -a, --agent SOCKET    the agent's socket (default $VMFS_HOSTD_SOCKET, else\n"
		"                        /run/vmfs-hostd/$(hostname).sock, else the only\n"
		"                        socket in /run/vmfs-hostd)\n"
		"  -j, --json            print the agent's reply as JSON\n"
		"  -h, --help            this help\n"
		"  -V, --version         version\n"
		"\n"
		"VM is a VM folder, its .vmx, or a VM's name or ID as `list` shows them.\n"
		"SIZE takes K, M, G, T suffixes (powers of 1024).  See vmfsctl(8).\n");
}

static int die_usage(const char *fmt, const char *arg)
{
	fprintf(stderr, "%s: ", prog);
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\nTry '%s --help'.\n", prog);
	return EXIT_USAGE;
}

static bool progress_shown;   /* a bar is on the terminal's last line */
static bool progress_lines;   /* --json progress events were printed */

static void human_bytes(double b, char *buf, size_t size)
{
	static const char *const u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
	int i = 0;

	while (b >= 1024 && i < 4) {
		b /= 1024;
		i++;
	}
	snprintf(buf, size, i ? "%.1f %s" : "%.0f %s", b, u[i]);
}

static const char *jstr(json_t *o, const char *k)
{
	const char *s = json_string_value(json_object_get(o, k));

	return s ? s : "-";
}

/* One step of a migration, an evacuation or a balance, on a terminal. */
static void progress_step(json_t *p)
{
	const char *phase = jstr(p, "phase");

	if (!strcmp(phase, "pre-copy") || !strcmp(phase, "stop-and-copy")) {
		fprintf(stderr, "%-13s pass %lld: %lld MiB sent, %lld MiB remaining, %lld dirty pages/s, "
			"%.0f Mbit/s\n", phase, (long long)json_integer_value(json_object_get(p, "pass")),
			(long long)(json_integer_value(json_object_get(p, "transferred")) >> 20),
			(long long)(json_integer_value(json_object_get(p, "remaining")) >> 20),
			(long long)json_integer_value(json_object_get(p, "dirty_pages_rate")),
			json_real_value(json_object_get(p, "mbps")));
	} else if (!strcmp(phase, "switch-over")) {
		fprintf(stderr, "%-13s disk locks and lock record handed over in %lld ms\n", phase,
			(long long)json_integer_value(json_object_get(p, "lock_handover_ms")));
	} else if (!strcmp(phase, "balance")) {
		fprintf(stderr, "%-13s %s: host %s -> host %s (%lld of %lld)\n", phase, jstr(p, "vmx"),
			jstr(p, "from"), jstr(p, "destination"),
			(long long)json_integer_value(json_object_get(p, "n")),
			(long long)json_integer_value(json_object_get(p, "of")));
	} else if (!strcmp(phase, "evacuate")) {
		fprintf(stderr, "%-13s %s -> host %s (%lld of %lld)\n", phase, jstr(p, "vmx"),
			jstr(p, "destination"), (long long)json_integer_value(json_object_get(p, "n")),
			(long long)json_integer_value(json_object_get(p, "of")));
	} else {
		fprintf(stderr, "%-13s destination %s\n", phase, jstr(p, "destination"));
	}
}

/* A progress line of a long operation: with --json a JSON line
 * ({"event":"progress","task":{...}}); on a terminal a bar for a copy
 * (percent of the data to copy, rate, ETA) or a line per step of a
 * migration; nothing otherwise. */
static void show_progress(json_t *p)
{
	double done = (double)json_integer_value(json_object_get(p, "done"));
	double total = (double)json_integer_value(json_object_get(p, "total"));
	double rate = (double)json_integer_value(json_object_get(p, "rate"));
	json_t *eta = json_object_get(p, "eta_s");
	const char *phase = json_string_value(json_object_get(p, "phase"));
	char d[32], t[32], r[32], e[32] = "--:--", bar[31];
	double pct = total > 0 ? 100.0 * done / total : 0;
	int fill;

	if (json_out) {
		json_t *o = json_pack("{s:s,s:O}", "event", "progress", "task", p);
		char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;

		if (s)
			printf("%s\n", s);
		fflush(stdout);
		free(s);
		json_decref(o);
		progress_lines = true;
		return;
	}
	if (!isatty(2))
		return;
	if (!json_object_get(p, "total")) {
		if (progress_shown)
			fputc('\n', stderr);
		progress_shown = false;
		progress_step(p);
		return;
	}
	if (pct > 100)
		pct = 100;
	fill = (int)(pct * 30 / 100);
	memset(bar, '#', (size_t)fill);
	memset(bar + fill, '.', (size_t)(30 - fill));
	bar[30] = '\0';
	human_bytes(done, d, sizeof(d));
	human_bytes(total, t, sizeof(t));
	human_bytes(rate, r, sizeof(r));
	if (json_is_integer(eta)) {
		long long s = json_integer_value(eta);

		snprintf(e, sizeof(e), "%lld:%02lld", s / 60, s % 60);
	}
	fprintf(stderr, "\r[%s] %3.0f%%  %s of %s  %s/s  ETA %s  %-10s", bar, pct, d, t, r, e,
		phase ? phase : "");
	progress_shown = true;
}

static void end_progress(void)
{
	if (progress_shown)
		fputc('\n', stderr);
	progress_shown = false;
}

static void progress_cb(json_t *task, void *ctx)
{
	(void)ctx;
	show_progress(task);
}

/* Sends req (stolen), returns the reply or NULL (message printed): the
 * protocol is the library's (vm/agentc.c), shared with vmfs-webd. */
static json_t *agent_call(const char *sock, json_t *req)
{
	char msg[PATH_MAX + 128];
	json_t *reply;
	int rc = agentc_call(sock, req, progress_cb, NULL, &reply, msg, sizeof(msg));

	json_decref(req);
	end_progress();
	if (rc) {
		fprintf(stderr, "%s: %s\n", prog, msg);
		return NULL;
	}
	return reply;
}

/* info: the VM monitor's view (docs/vm.md "VM monitoring") */
static void print_monitoring(json_t *m)
{
	json_int_t n = json_integer_value(json_object_get(m, "restarts_in_window"));
	json_int_t w = json_integer_value(json_object_get(m, "window_s"));
	char when[32];
	time_t t;
	struct tm tm;

	if (!json_is_object(m))
		return;
	if (!json_is_true(json_object_get(m, "enabled"))) {
		printf("monitoring:  off (not restarted after a crash, panic or hang)\n");
		return;
	}
	printf("monitoring:  on, %lld restart%s in the last %lld s (at most %lld), hang timeout %lld s\n",
	       (long long)n, n == 1 ? "" : "s", (long long)w,
	       (long long)json_integer_value(json_object_get(m, "max_restarts")),
	       (long long)json_integer_value(json_object_get(m, "hang_timeout_s")));
	if (json_object_get(m, "restart_pending_in_s"))
		printf("restart:     pending, in %lld s\n",
		       (long long)json_integer_value(json_object_get(m, "restart_pending_in_s")));
	if (json_object_get(m, "last_failure")) {
		t = (time_t)json_integer_value(json_object_get(m, "last_failure_at"));
		localtime_r(&t, &tm);
		strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", &tm);
		printf("failure:     %s (%s)\n", jstr(m, "last_failure"), when);
	}
	if (json_object_get(m, "gave_up_at")) {
		t = (time_t)json_integer_value(json_object_get(m, "gave_up_at"));
		localtime_r(&t, &tm);
		strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", &tm);
		printf("gave up:     %s: restart limit reached, left off until powered on\n", when);
	}
}

/* One event (`events`, `ha status`): time with milliseconds, host, type,
 * VM, message. */
static void print_event(json_t *e, const char *indent, const char *tfmt, int hostw, int typew)
{
	json_int_t ms = json_integer_value(json_object_get(e, "time_ms"));
	time_t t = (time_t)(ms / 1000);
	char when[32];
	struct tm tm;

	localtime_r(&t, &tm);
	strftime(when, sizeof(when), tfmt, &tm);
	printf("%s%s.%03d %-*s %-*s %s%s%s\n", indent, when, (int)(ms % 1000), hostw,
	       jstr(e, "host"), typew, jstr(e, "type"),
	       json_object_get(e, "vmx") ? jstr(e, "vmx") : "",
	       json_object_get(e, "vmx") ? ": " : "", jstr(e, "message"));
}

/* "8.25 GB (7.68 GiB)": admins read both (df -H and df -h) */
static void fmt_size(json_t *o, const char *k, char *buf, size_t size)
{
	double b = (double)json_integer_value(json_object_get(o, k));

	snprintf(buf, size, "%.2f GB (%.2f GiB)", b / 1e9, b / (1024.0 * 1024 * 1024));
}

/* a datastore whose VMs' disks are provisioned more than its capacity */
static void print_overcommit(json_t *ds)
{
	char prov[64], cap[64];
	json_int_t c = json_integer_value(json_object_get(ds, "capacity"));

	if (!json_is_true(json_object_get(ds, "overcommitted")))
		return;
	fmt_size(ds, "provisioned", prov, sizeof(prov));
	fmt_size(ds, "capacity", cap, sizeof(cap));
	fprintf(stderr, "%s: warning: datastore %s is overcommitted: its VMs' disks are provisioned "
		"%s on %s (%lld %%): thin disks can fill it\n", prog, jstr(ds, "path"), prov, cap,
		(long long)(c ? json_integer_value(json_object_get(ds, "provisioned")) * 100 / c : 0));
}

static void fmt_bytes(uint64_t v, char *buf, size_t size)
{
	static const char *const u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
	double d = (double)v;
	int i = 0;

	while (d >= 1024 && i < 4) {
		d /= 1024;
		i++;
	}
	snprintf(buf, size, i ? "%.1f %s" : "%.0f %s", d, u[i]);
}

/* list, info, ha status: snapshots kept too long (docs/vm.md "Snapshot
 * age"): a line on standard output under the VM */
static void print_snap_age(json_t *sn, const char *indent)
{
	const char *lvl = json_string_value(json_object_get(sn, "level"));
	char b[32];

	if (!lvl || !strcmp(lvl, "ok"))
		return;
	fmt_bytes((uint64_t)json_integer_value(json_object_get(sn, "size")), b, sizeof(b));
	printf("%s%s: %lld snapshot(s), the oldest %lld h old, %s of deltas: delete or consolidate "
	       "them (vmfsctl snapshot delete)\n", indent, !strcmp(lvl, "critical") ? "CRITICAL" : "WARNING",
	       (long long)json_integer_value(json_object_get(sn, "count")),
	       (long long)(json_integer_value(json_object_get(sn, "oldest_age_s")) / 3600), b);
}

/* snapshot list: the tree, children indented under their parent */
static void print_snap_tree(json_t *arr, json_int_t parent, int depth, json_int_t current)
{
	json_t *s;
	size_t i;

	json_array_foreach(arr, i, s) {
		char when[32], b[32];
		time_t t = (time_t)json_integer_value(json_object_get(s, "created"));
		const char *lvl = jstr(s, "level"), *st = jstr(s, "state");
		int ind = depth * 3;
		struct tm tm;

		if (json_integer_value(json_object_get(s, "parent")) != parent)
			continue;
		localtime_r(&t, &tm);
		strftime(when, sizeof(when), "%Y-%m-%d %H:%M", &tm);
		fmt_bytes((uint64_t)json_integer_value(json_object_get(s, "size")), b, sizeof(b));
		printf("%*s%-*s %s  %9s%s%s%s%s%s\n", ind, "", 24 - (ind < 20 ? ind : 20), jstr(s, "name"),
		       when, b, json_is_true(json_object_get(s, "memory")) ? "  +memory" : "",
		       !strcmp(lvl, "critical") ? "  CRITICAL: over 72 h old"
		       : !strcmp(lvl, "warning") ? "  WARNING: over 24 h old" : "",
		       strcmp(st, "ok") ? "  (" : "", strcmp(st, "ok") ? st : "", strcmp(st, "ok") ? ": not finished, delete it)" : "");
		if (json_integer_value(json_object_get(s, "uid")) == current)
			printf("%*s   <- you are here\n", ind, "");
		if (*jstr(s, "description"))
			printf("%*s   %s\n", ind, "", jstr(s, "description"));
		print_snap_tree(arr, json_integer_value(json_object_get(s, "uid")), depth + 1, current);
	}
}

static void print_snapshots(json_t *r)
{
	json_t *arr = json_object_get(r, "snapshots"), *d, *f;
	size_t i, k;

	if (!json_array_size(arr)) {
		printf("%s: no snapshots\n", jstr(r, "vmx"));
		return;
	}
	printf("%-24s %-16s  %9s\n", "SNAPSHOT", "CREATED", "DELTA");
	print_snap_tree(arr, 0, 0, json_integer_value(json_object_get(r, "current")));
	json_array_foreach(json_object_get(r, "disks"), i, d) {
		printf("disk %s:", jstr(d, "node"));
		json_array_foreach(json_object_get(d, "chain"), k, f)
			printf("%s%s", k ? " -> " : " ", jstr(f, "file"));
		printf("\n");
	}
}

static void print_human(const char *cmd, json_t *r)
{
	size_t wi;
	json_t *w;

	json_array_foreach(json_object_get(r, "warnings"), wi, w)
		fprintf(stderr, "%s: warning: %s\n", prog, json_string_value(w));
	/* datastores, list, create: a datastore thin disks overcommit */
	json_array_foreach(json_object_get(r, "datastores"), wi, w)
		print_overcommit(w);
	if (!strcmp(cmd, "datastores")) {
		size_t i;
		json_t *ds;

		json_array_foreach(json_object_get(r, "datastores"), i, ds) {
			char b[64];

			printf("%s%s (label %s, UUID %s)\n", i ? "\n" : "", jstr(ds, "path"),
			       jstr(ds, "label"), jstr(ds, "uuid"));
			fmt_size(ds, "capacity", b, sizeof(b));
			printf("  capacity:      %s\n", b);
			fmt_size(ds, "free", b, sizeof(b));
			printf("  free:          %s\n", b);
			fmt_size(ds, "provisioned", b, sizeof(b));
			printf("  provisioned:   %s by the disks of %lld VM(s)%s\n", b,
			       (long long)json_integer_value(json_object_get(ds, "vms")),
			       json_is_true(json_object_get(ds, "overcommitted")) ? ", OVERCOMMITTED" : "");
			fmt_size(ds, "vm_disks_used", b, sizeof(b));
			printf("  disks use:     %s\n", b);
		}
		return;
	}
	if (!strcmp(cmd, "list")) {
		size_t i;
		json_t *vm;

		if (json_is_true(json_object_get(r, "maintenance")))
			printf("host %s is in maintenance mode: power-ons are refused "
			       "(vmfsctl host maintenance exit)\n", jstr(r, "host"));
		printf("%-20s %-8s %-17s %-12s %-16s %s\n", "NAME", "ID", "STATE", "HOST", "SINCE",
		       "PATH");
		json_array_foreach(json_object_get(r, "vms"), i, vm) {
			char state[64], since[32] = "-";

			if (json_object_get(vm, "paused_reason"))
				snprintf(state, sizeof(state), "%s (%s)", jstr(vm, "state"),
					 jstr(vm, "paused_reason"));
			else
				snprintf(state, sizeof(state), "%s", jstr(vm, "state"));
			if (json_integer_value(json_object_get(vm, "since")) > 0) {
				time_t t = (time_t)json_integer_value(json_object_get(vm, "since"));
				struct tm tm;

				localtime_r(&t, &tm);
				strftime(since, sizeof(since), "%m-%d %H:%M:%S", &tm);
			}
			printf("%-20s %-8s %-17s %-12s %-16s %s\n", jstr(vm, "name"), jstr(vm, "id"),
			       state, jstr(vm, "host"), since,
			       json_string_value(json_object_get(vm, "path")) ?: jstr(vm, "vmx"));
			if (json_object_get(vm, "error"))
				printf("  error: %s\n", jstr(vm, "error"));
			print_snap_age(json_object_get(vm, "snapshots"), "  ");
		}
		return;
	}
	if (!strcmp(cmd, "info")) {
		json_t *d, *lk = json_object_get(r, "lock");
		size_t i;

		printf("name:        %s\n", jstr(r, "name"));
		printf("path:        %s\n", jstr(r, "vmx"));
		if (json_object_get(r, "paused_reason"))
			printf("state:       %s (%s)\n", jstr(r, "state"), jstr(r, "paused_reason"));
		else
			printf("state:       %s\n", jstr(r, "state"));
		if (json_object_get(r, "error"))
			printf("error:       %s\n", jstr(r, "error"));
		if (json_object_get(r, "killed_by_fence")) {
			json_t *f = json_object_get(r, "killed_by_fence");
			char when[32];
			time_t t = (time_t)json_integer_value(json_object_get(f, "at"));
			struct tm tm;

			localtime_r(&t, &tm);
			strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", &tm);
			printf("killed:      by the fence of volume %s at %s (not restarted here)\n",
			       jstr(f, "volume"), when);
		}
		if (json_object_get(r, "host_dead")) {
			json_t *hd = json_object_get(r, "host_dead");
			json_int_t ago = json_integer_value(json_object_get(hd, "declared_ago_ms"));

			printf("host:        %s: dead", jstr(r, "host"));
			if (ago >= 0)
				printf(" (declared %lld s ago)", (long long)(ago / 1000));
			printf(json_is_true(json_object_get(hd, "locks_broken"))
			       ? "; its locks are broken: the VM may be powered on elsewhere\n"
			       : "; its journal is being replayed, its locks still hold\n");
		} else {
			printf("host:        %s\n", jstr(r, "host"));
		}
		if (json_object_get(r, "stale_lock_record"))
			printf("stale lock:  a record of host %s that nobody holds (the VM does not run there)\n",
			       jstr(r, "stale_lock_record"));
		if (json_object_get(r, "pid"))
			printf("qemu pid:    %lld\n", (long long)json_integer_value(json_object_get(r, "pid")));
		printf("vcpus:       %lld\n", (long long)json_integer_value(json_object_get(r, "cpus")));
		printf("memory:      %lld MiB\n",
		       (long long)json_integer_value(json_object_get(r, "memory_mib")));
		printf("guest os:    %s\n", jstr(r, "guest_os"));
		if (json_object_get(r, "running_accel"))
			printf("accel:       %s (.vmx: %s)\n", jstr(r, "running_accel"), jstr(r, "accel"));
		else
			printf("accel:       %s\n", jstr(r, "accel"));
		if (json_object_get(r, "kernel"))
			printf("kernel:      %s\n", jstr(r, "kernel"));
		json_array_foreach(json_object_get(r, "disks"), i, d) {
			if (json_is_true(json_object_get(d, "cdrom")))
				printf("disk %s: %s (CD-ROM)\n", jstr(d, "device"), jstr(d, "file"));
			else if (json_object_get(d, "error"))
				printf("disk %s: %s: %s\n", jstr(d, "device"), jstr(d, "file"), jstr(d, "error"));
			else
				printf("disk %s: %s -> %s, %lld MiB %s, %lld MiB allocated%s%s\n",
				       jstr(d, "device"), jstr(d, "file"), jstr(d, "extent"),
				       (long long)(json_integer_value(json_object_get(d, "size")) >> 20),
				       jstr(d, "provisioning"),
				       (long long)(json_integer_value(json_object_get(d, "allocated")) >> 20),
				       json_object_get(d, "lock") ? ", lock " : "",
				       json_object_get(d, "lock") ? jstr(d, "lock") : "");
		}
		if (json_is_string(json_object_get(r, "suspend_file")))
			printf("suspended:   %s\n", jstr(r, "suspend_file"));
		if (lk && json_integer_value(json_object_get(lk, "qemu_pid")))
			printf("lock:        host %s, QEMU pid %lld\n", jstr(lk, "host"),
			       (long long)json_integer_value(json_object_get(lk, "qemu_pid")));
		else if (lk)
			printf("lock:        held by host %s\n", jstr(lk, "host"));
		printf("log:         %s\n", jstr(r, "log"));
		if (json_object_get(json_object_get(r, "snapshots"), "error")) {
			printf("snapshots:   %s\n", jstr(json_object_get(r, "snapshots"), "error"));
		} else if (json_object_get(r, "snapshots")) {
			json_t *sn = json_object_get(r, "snapshots");
			char b[32];

			fmt_bytes((uint64_t)json_integer_value(json_object_get(sn, "size")), b, sizeof(b));
			printf("snapshots:   %lld, %s of deltas, the oldest %lld h old\n",
			       (long long)json_integer_value(json_object_get(sn, "count")), b,
			       (long long)(json_integer_value(json_object_get(sn, "oldest_age_s")) / 3600));
			print_snap_age(sn, "");
		}
		print_monitoring(json_object_get(r, "vm_monitoring"));
		return;
	}
	if (!strcmp(cmd, "agent-info")) {
		printf("host:        %s\n", jstr(r, "host"));
		printf("agent pid:   %lld\n", (long long)json_integer_value(json_object_get(r, "pid")));
		printf("state dir:   %s\n", jstr(r, "state_dir"));
		printf("accel:       %s (auto = %s; KVM %s%s)\n", jstr(r, "accel"), jstr(r, "auto_accel"),
		       json_is_true(json_object_get(r, "kvm_usable")) ? "usable" : "not usable",
		       json_is_true(json_object_get(r, "nested")) ? ", nested: this host is a VM" : "");
		printf("cpus:        %lld\n", (long long)json_integer_value(json_object_get(r, "cpus")));
		printf("memory:      %lld MiB\n",
		       (long long)json_integer_value(json_object_get(r, "memory_mib")));
		if (json_is_object(json_object_get(r, "vm_monitoring"))) {
			json_t *m = json_object_get(r, "vm_monitoring");

			printf("monitoring:  %s, at most %lld restarts within %lld s, backoff %lld s, hang timeout %lld s\n",
			       json_is_true(json_object_get(m, "enabled")) ? "on" : "off",
			       (long long)json_integer_value(json_object_get(m, "max_restarts")),
			       (long long)json_integer_value(json_object_get(m, "window_s")),
			       (long long)json_integer_value(json_object_get(m, "backoff_s")),
			       (long long)json_integer_value(json_object_get(m, "hang_timeout_s")));
		}
		return;
	}
	if (!strcmp(cmd, "ha")) {
		print_ha(r);
		return;
	}
	if (!strcmp(cmd, "snapshot") && json_object_get(r, "snapshots")) {
		print_snapshots(r);
		return;
	}
	if (!strcmp(cmd, "balance")) {
		print_balance(r);
		return;
	}
	if (!strcmp(cmd, "events")) {
		json_t *e;
		size_t i;

		json_array_foreach(json_object_get(r, "events"), i, e)
			print_event(e, "", "%Y-%m-%d %H:%M:%S", 10, 20);
		return;
	}
	if (!strcmp(cmd, "tasks")) {
		json_t *t;
		size_t i;

		printf("%-19s %-8s %-15s %-11s %-11s %5s  %s\n", "STARTED", "HOST", "OPERATION", "STATE",
		       "PHASE", "DONE", "VM -> DESTINATION");
		json_array_foreach(json_object_get(r, "tasks"), i, t) {
			json_int_t ms = json_integer_value(json_object_get(t, "started_ms"));
			time_t tt = (time_t)(ms / 1000);
			char when[32];
			struct tm tm;

			localtime_r(&tt, &tm);
			strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", &tm);
			printf("%-19s %-8s %-15s %-11s %-11s %4.0f%%  %s -> %s\n", when, jstr(t, "host"),
			       jstr(t, "op"), jstr(t, "state"), jstr(t, "phase"),
			       json_number_value(json_object_get(t, "percent")), jstr(t, "vm"),
			       jstr(t, "dest"));
			if (json_object_get(t, "message") && strcmp(jstr(t, "state"), "running"))
				printf("    %s\n", jstr(t, "message"));
			if (json_object_get(t, "recovery"))
				printf("    recovery: %s\n", jstr(t, "recovery"));
		}
		return;
	}
	if (json_object_get(r, "message"))
		printf("%s\n", jstr(r, "message"));
	/* import: what the package has that the VM cannot */
	if (json_object_get(r, "not_mapped"))
		printf("not mapped: %s\n", jstr(r, "not_mapped"));
}

/* Makes PATH absolute without requiring it to exist (create). */
static int abs_path(const char *path, char *out, size_t size)
{
	char a[PATH_MAX], b[PATH_MAX], parent[PATH_MAX];

	if (realpath(path, out))
		return 0;
	snprintf(a, sizeof(a), "%s", path);
	while (strlen(a) > 1 && a[strlen(a) - 1] == '/')
		a[strlen(a) - 1] = '\0';
	snprintf(b, sizeof(b), "%s", a);
	if (!realpath(dirname(a), parent))
		return -errno;
	if ((size_t)snprintf(out, size, "%s/%s", parent, basename(b)) >= size)
		return -ENAMETOOLONG;
	return 0;
}

/* A command's PATH argument as the agent wants it: absolute; with VM, a
 * word that is no path here (no '/', no such file) goes as it is: a VM's
 * name or ID, which the agent looks up.  Returns 0 or an exit status. */
static int path_arg(const char *arg, bool vm, char *out, size_t size)
{
	int rc;

	if (vm && !strchr(arg, '/') && access(arg, F_OK)) {
		snprintf(out, size, "%s", arg);
		return 0;
	}
	rc = abs_path(arg, out, size);
	if (rc) {
		fprintf(stderr, "%s: %s: %s\n", prog, arg, strerror(-rc));
		return EXIT_FAIL;
	}
	return 0;
}

static struct termios saved_tio;
static bool tio_saved;

static void restore_tty(void)
{
	if (tio_saved)
		tcsetattr(0, TCSANOW, &saved_tio);
}

static int console(const char *serial)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	bool tty = isatty(0), in_open = true;
	char buf[4096];

	if (strlen(serial) >= sizeof(sa.sun_path))
		return EXIT_FAIL;
	strcpy(sa.sun_path, serial);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		fprintf(stderr, "%s: cannot attach to the console %s: %s\n", prog, serial,
			strerror(errno));
		return EXIT_FAIL;
	}
	if (tty) {
		struct termios t;

		tcgetattr(0, &saved_tio);
		tio_saved = true;
		atexit(restore_tty);
		t = saved_tio;
		cfmakeraw(&t);
		tcsetattr(0, TCSANOW, &t);
		fprintf(stderr, "[attached to the serial console; Ctrl-] detaches]\r\n");
	}
	for (;;) {
		struct pollfd p[2] = {{.fd = fd, .events = POLLIN}, {.fd = 0, .events = in_open ? POLLIN : 0}};

		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (p[0].revents) {
			ssize_t n = read(fd, buf, sizeof(buf));

			if (n <= 0)
				break;
			if (write(1, buf, (size_t)n) < 0)
				break;
		}
		if (in_open && p[1].revents) {
			ssize_t n = read(0, buf, sizeof(buf));

			if (n <= 0) {
				/* stdin ended: a script that piped commands wants
				 * the answers, so keep printing what the guest says
				 * until the VM stops or we are killed (no
				 * shutdown(SHUT_WR): QEMU drops a client that
				 * half-closes) */
				in_open = false;
				if (tty)
					break;
				continue;
			}
			if (tty && memchr(buf, 0x1d, (size_t)n))
				break;
			if (send(fd, buf, (size_t)n, MSG_NOSIGNAL) < 0)
				break;
		}
	}
	if (tty)
		fprintf(stderr, "\r\n[detached]\r\n");
	close(fd);
	return 0;
}

/* create's options: the size and shape of the new VM */
static int parse_create(const struct command *cmd, int argc, char **argv, json_t *req)
{
	char path[PATH_MAX];
	int c;
	static const struct option o[] = {
		{"cpus", required_argument, NULL, 'c'},
		{"memory", required_argument, NULL, 'm'},
		{"disk", required_argument, NULL, 'd'},
		{"provisioning", required_argument, NULL, 'p'},
		{"guest-os", required_argument, NULL, 'g'},
		{"iso", required_argument, NULL, 'i'},
		{"kernel", required_argument, NULL, 'k'},
		{"initrd", required_argument, NULL, 'r'},
		{"append", required_argument, NULL, 'A'},
		{"accel", required_argument, NULL, 'x'},
		{"net", required_argument, NULL, 'n'},
		{"json", no_argument, NULL, 'j'},
		{0},
	};
	bool have_cpus = false, have_mem = false, have_disk = false;

	(void)cmd;
	while ((c = getopt_long(argc, argv, "c:m:d:p:g:i:k:r:A:x:n:j", o, NULL)) != -1) {
		char *end;
		long v;
		uint64_t sz;

		switch (c) {
		case 'c':
		case 'm':
			v = strtol(optarg, &end, 10);
			if (*end || v <= 0)
				return die_usage("'%s' is not a positive number", optarg);
			json_object_set_new(req, c == 'c' ? "cpus" : "memory", json_integer(v));
			*(c == 'c' ? &have_cpus : &have_mem) = true;
			break;
		case 'd':
			if (vm_parse_size(optarg, &sz) || sz == 0 || sz > (1ULL << 56))
				return die_usage("--disk: '%s' is not a size (e.g. 10G)", optarg);
			json_object_set_new(req, "disk", json_integer((json_int_t)sz));
			have_disk = true;
			break;
		case 'p':
			json_object_set_new(req, "provisioning", json_string(optarg));
			break;
		case 'g':
			json_object_set_new(req, "guest_os", json_string(optarg));
			break;
		case 'i':
		case 'k':
		case 'r':
			if (!realpath(optarg, path)) {
				fprintf(stderr, "%s: %s: %s\n", prog, optarg, strerror(errno));
				return EXIT_FAIL;
			}
			json_object_set_new(req, c == 'i' ? "iso" : c == 'k' ? "kernel" : "initrd",
					    json_string(path));
			break;
		case 'A':
			json_object_set_new(req, "append", json_string(optarg));
			break;
		case 'x':
			json_object_set_new(req, "accel", json_string(optarg));
			break;
		case 'n':
			json_object_set_new(req, "net", json_string(optarg));
			break;
		case 'j':
			json_out = true;
			break;
		default:
			return die_usage("%s: bad option", "create");
		}
	}
	if (!have_cpus || !have_mem || !have_disk)
		return die_usage("%s needs --cpus N --memory MIB --disk SIZE", "create");
	return 0;
}

/* the options some commands share: power-on --force, shutdown --timeout */
static int parse_common(const struct command *cmd, int argc, char **argv, json_t *req)
{
	int c;
	static const struct option o[] = {
		{"force", no_argument, NULL, 'f'},
		{"timeout", required_argument, NULL, 't'},
		{"count", required_argument, NULL, 'n'},
		{"apply", no_argument, NULL, 'A'},
		{"json", no_argument, NULL, 'j'},
		{0},
	};

	while ((c = getopt_long(argc, argv, "ft:n:Aj", o, NULL)) != -1) {
		char *end;
		long v;

		switch (c) {
		case 'f':
			if (!(cmd->opts & OPT_FORCE))
				return die_usage("--force is not an option of %s", cmd->name);
			json_object_set_new(req, "force", json_true());
			break;
		case 't':
			if (!(cmd->opts & OPT_TIMEOUT))
				return die_usage("--timeout is not an option of %s", cmd->name);
			v = strtol(optarg, &end, 10);
			if (*end || v <= 0 || v > 86400)
				return die_usage("--timeout: '%s' is not 1..86400 seconds", optarg);
			json_object_set_new(req, "timeout", json_integer(v));
			break;
		case 'n':
			if (!(cmd->opts & OPT_COUNT))
				return die_usage("--count is not an option of %s", cmd->name);
			v = strtol(optarg, &end, 10);
			if (*end || v <= 0 || v > 1000000)
				return die_usage("--count: '%s' is not 1..1000000", optarg);
			json_object_set_new(req, "count", json_integer(v));
			break;
		case 'A':
			if (!(cmd->opts & OPT_APPLY))
				return die_usage("--apply is not an option of %s", cmd->name);
			json_object_set_new(req, "apply", json_true());
			break;
		case 'j':
			json_out = true;
			break;
		default:
			return die_usage("%s: bad option", cmd->name);
		}
	}
	return 0;
}

static int parse_migrate(const struct command *cmd, int argc, char **argv, json_t *req)
{
	static const struct option o[] = {
		{"host", required_argument, NULL, 'H'},
		{"bandwidth", required_argument, NULL, 'b'},
		{"downtime", required_argument, NULL, 'd'},
		{"json", no_argument, NULL, 'j'},
		{0},
	};
	int c;

	while ((c = getopt_long(argc, argv, "H:b:d:j", o, NULL)) != -1) {
		char *end;
		long v;

		switch (c) {
		case 'H':
			json_object_set_new(req, "host", json_string(optarg));
			break;
		case 'b':
			v = strtol(optarg, &end, 10);
			if (*end || v <= 0 || v > 1000000)
				return die_usage("--bandwidth: '%s' is not 1..1000000 MiB/s", optarg);
			json_object_set_new(req, "bandwidth", json_integer((json_int_t)v << 20));
			break;
		case 'd':
			v = strtol(optarg, &end, 10);
			if (*end || v <= 0 || v > 60000)
				return die_usage("--downtime: '%s' is not 1..60000 ms", optarg);
			json_object_set_new(req, "downtime_ms", json_integer(v));
			break;
		case 'j':
			json_out = true;
			break;
		default:
			return die_usage("%s: bad option", cmd->name);
		}
	}
	if (!json_object_get(req, "host"))
		return die_usage("%s needs --host HOST", cmd->name);
	return 0;
}

/* host maintenance enter [--timeout SEC] | exit | status [HOST] */
static int parse_host(const struct command *cmd, int argc, char **argv, json_t *req)
{
	int rc = parse_common(cmd, argc, argv, req);

	if (rc)
		return rc;
	if ((optind + 2 != argc && optind + 3 != argc) || strcmp(argv[optind], "maintenance") ||
	    (strcmp(argv[optind + 1], "enter") && strcmp(argv[optind + 1], "exit") &&
	     strcmp(argv[optind + 1], "status")))
		return die_usage("host: the subcommand is 'maintenance enter|exit|status'%s", "");
	json_object_set_new(req, "cmd", json_string("maintenance"));
	json_object_set_new(req, "action", json_string(argv[optind + 1]));
	/* HOST: the host the agent answering must be (its socket by default,
	 * /run/vmfs-hostd/HOST.sock) */
	if (optind + 3 == argc)
		json_object_set_new(req, "host", json_string(argv[optind + 2]));
	optind = argc;
	return 0;
}

/* snapshot create VM NAME [--memory] [--description TEXT] | list VM |
 * revert VM NAME | delete VM NAME | delete VM --all */
static int parse_snapshot(const struct command *cmd, int argc, char **argv, json_t *req)
{
	static const struct option o[] = {
		{"memory", no_argument, NULL, 'm'},
		{"description", required_argument, NULL, 'd'},
		{"all", no_argument, NULL, 'A'},
		{"json", no_argument, NULL, 'j'},
		{0},
	};
	char path[PATH_MAX];
	const char *act;
	int c, rc, need;

	/* options may come anywhere among the words (getopt permutes) */
	while ((c = getopt_long(argc, argv, "md:Aj", o, NULL)) != -1) {
		switch (c) {
		case 'm':
			json_object_set_new(req, "memory", json_true());
			break;
		case 'd':
			json_object_set_new(req, "description", json_string(optarg));
			break;
		case 'A':
			json_object_set_new(req, "all", json_true());
			break;
		case 'j':
			json_out = true;
			break;
		default:
			return die_usage("%s: bad option", cmd->name);
		}
	}
	if (optind >= argc)
		return die_usage("snapshot: the subcommand is 'create', 'list', 'revert' or 'delete'%s", "");
	act = argv[optind];
	if (!strcmp(act, "list"))
		need = 1;
	else if (!strcmp(act, "create") || !strcmp(act, "revert"))
		need = 2;
	else if (!strcmp(act, "delete"))
		need = json_is_true(json_object_get(req, "all")) ? 1 : 2;
	else
		return die_usage("snapshot: unknown subcommand '%s' (create, list, revert, delete)", act);
	if (argc - optind - 1 != need)
		return die_usage(need == 1 ? "snapshot %s: needs a VM (and no snapshot name)"
					   : "snapshot %s: needs a VM and a snapshot NAME", act);
	if ((json_object_get(req, "memory") || json_object_get(req, "description")) && strcmp(act, "create"))
		return die_usage("snapshot %s: --memory and --description belong to create", act);
	if (json_object_get(req, "all") && strcmp(act, "delete"))
		return die_usage("snapshot %s: --all belongs to delete", act);
	rc = path_arg(argv[optind + 1], true, path, sizeof(path));
	if (rc)
		return rc;
	json_object_set_new(req, "action", json_string(act));
	json_object_set_new(req, "path", json_string(path));
	if (need == 2)
		json_object_set_new(req, "name", json_string(argv[optind + 2]));
	optind = argc;
	return 0;
}

static int parse_balance(const struct command *cmd, int argc, char **argv, json_t *req)
{
	int rc = parse_common(cmd, argc, argv, req);

	if (!rc && optind != argc)
		return die_usage("balance: unexpected argument '%s'", argv[optind]);
	return rc;
}

static void print_balance(json_t *r)
{
	json_t *ds, *h, *m;
	size_t i, k;

	json_array_foreach(json_object_get(r, "datastores"), i, ds) {
		printf("datastore %s\n", jstr(ds, "datastore"));
		printf("  %-16s %-12s %4s %11s %15s %5s %8s\n", "HOST", "STATE", "VMS", "VCPUS", "MEMORY MIB",
		       "MEM%", "QEMU CPU");
		json_array_foreach(json_object_get(ds, "hosts"), k, h) {
			char st[64], vc[32], mem[40];

			snprintf(st, sizeof(st), "%s%s%s", jstr(h, "state"),
				 json_is_true(json_object_get(h, "maintenance")) ? ",maint" : "",
				 json_is_true(json_object_get(h, "migration")) ? "" : ",no-mig");
			snprintf(vc, sizeof(vc), "%lld/%lld",
				 (long long)json_integer_value(json_object_get(h, "used_vcpus")),
				 (long long)json_integer_value(json_object_get(h, "cap_vcpus")));
			snprintf(mem, sizeof(mem), "%lld/%lld",
				 (long long)json_integer_value(json_object_get(h, "used_memory_mib")),
				 (long long)json_integer_value(json_object_get(h, "cap_memory_mib")));
			printf("  %-16s %-12s %4lld %11s %15s %4.0f%% %7lld%%\n", jstr(h, "host"), st,
			       (long long)json_integer_value(json_object_get(h, "vms")), vc, mem,
			       100 * json_real_value(json_object_get(h, "memory_used")),
			       (long long)json_integer_value(json_object_get(h, "qemu_cpu_pct")));
		}
	}
	if (!json_array_size(json_object_get(r, "moves")))
		printf("balanced: no migration proposed\n");
	json_array_foreach(json_object_get(r, "moves"), i, m)
		printf("%s %s: host %s -> host %s (%lld MiB, %lld vCPU)%s%s\n",
		       json_is_true(json_object_get(r, "applied")) ? "moved" : "propose", jstr(m, "vmx"),
		       jstr(m, "from"), jstr(m, "to"),
		       (long long)json_integer_value(json_object_get(m, "memory_mib")),
		       (long long)json_integer_value(json_object_get(m, "vcpus")),
		       json_object_get(m, "result") ? ": " : "",
		       json_object_get(m, "result") ? jstr(m, "result") : "");
}

/* migrate-storage, clone, deploy, template, export, import: provisioning,
 * deploy's overrides, import's --name, template --unset */
static int parse_storage(const struct command *cmd, int argc, char **argv, json_t *req)
{
	int c;
	static const struct option o[] = {
		{"provisioning", required_argument, NULL, 'p'},
		{"name", required_argument, NULL, 'N'},
		{"cpus", required_argument, NULL, 'c'},
		{"memory", required_argument, NULL, 'm'},
		{"unset", no_argument, NULL, 'u'},
		{"consolidate", no_argument, NULL, 'C'},
		{"snapshot", required_argument, NULL, 'S'},
		{"json", no_argument, NULL, 'j'},
		{0},
	};
	bool deploy = !strcmp(cmd->name, "deploy"), tmpl = !strcmp(cmd->name, "template");
	bool imp = !strcmp(cmd->name, "import"), exp = !strcmp(cmd->name, "export");

	while ((c = getopt_long(argc, argv, "p:N:c:m:uCS:j", o, NULL)) != -1) {
		char *end;
		long v;

		switch (c) {
		case 'p':
			if (tmpl || exp)
				return die_usage("--provisioning is not an option of %s", cmd->name);
			if (strcmp(optarg, "thin") && strcmp(optarg, "thick") && strcmp(optarg, "eagerzeroed"))
				return die_usage("--provisioning: '%s' is not thin, thick or eagerzeroed", optarg);
			json_object_set_new(req, "provisioning", json_string(optarg));
			break;
		case 'N':
			if (!deploy && !imp)
				return die_usage("--name is an option of deploy and import, not %s", cmd->name);
			json_object_set_new(req, "name", json_string(optarg));
			break;
		case 'c':
		case 'm':
			if (!deploy)
				return die_usage("--cpus and --memory are options of deploy, not %s", cmd->name);
			v = strtol(optarg, &end, 10);
			if (*end || v <= 0)
				return die_usage("'%s' is not a positive number", optarg);
			json_object_set_new(req, c == 'c' ? "cpus" : "memory", json_integer(v));
			break;
		case 'u':
			if (!tmpl)
				return die_usage("--unset is an option of template, not %s", cmd->name);
			json_object_set_new(req, "unset", json_true());
			break;
		case 'S':
			if (strcmp(cmd->name, "clone"))
				return die_usage("--snapshot is an option of clone, not %s", cmd->name);
			json_object_set_new(req, "snapshot", json_string(optarg));
			break;
		case 'C':
			if (strcmp(cmd->name, "migrate-storage"))
				return die_usage("--consolidate is an option of migrate-storage, not %s",
						 cmd->name);
			json_object_set_new(req, "consolidate", json_true());
			break;
		case 'j':
			json_out = true;
			break;
		default:
			return die_usage("%s: bad option", cmd->name);
		}
	}
	return 0;
}

/* ha status: the only subcommand so far */
static int parse_ha(const struct command *cmd, int argc, char **argv, json_t *req)
{
	int rc = parse_common(cmd, argc, argv, req);

	if (rc)
		return rc;
	if (optind >= argc || strcmp(argv[optind], "status"))
		return die_usage("ha: the subcommand is '%s'", "status");
	optind++;
	json_object_set_new(req, "cmd", json_string("ha-status"));
	return 0;
}

static void print_ha(json_t *r)
{
	json_t *ds;
	size_t i;

	json_array_foreach(json_object_get(r, "datastores"), i, ds) {
		json_t *h, *p, *e;
		size_t k;

		printf("datastore %s (this host: %s)\n", jstr(ds, "datastore"),
		       jstr(json_object_get(ds, "self"), "host"));
		if (json_is_true(json_object_get(json_object_get(ds, "self"), "fenced")))
			printf("  THIS HOST IS FENCED on this datastore: remount it\n");
		printf("  %-16s %-5s %-22s %-6s %s\n", "HOST", "SLOT", "STATE", "AGENT", "ROOM (vCPU, MiB)");
		json_array_foreach(json_object_get(ds, "hosts"), k, h) {
			json_t *ag = json_object_get(h, "agent"), *died = json_object_get(h, "died");
			char state[64], room[64] = "-";

			snprintf(state, sizeof(state), "%s%s", jstr(h, "state"),
				 ag && json_is_true(json_object_get(ag, "maintenance")) ? ", maintenance" : "");
			if (died && !strcmp(jstr(died, "host"), jstr(h, "host")) &&
			    strcmp(jstr(h, "state"), "live"))
				snprintf(state, sizeof(state), "dead%s",
					 json_is_true(json_object_get(died, "locks_broken")) ? ", locks broken"
					 : ", in recovery");
			if (ag)
				snprintf(room, sizeof(room), "%lld/%lld, %lld/%lld",
					 (long long)json_integer_value(json_object_get(ag, "used_vcpus")),
					 (long long)json_integer_value(json_object_get(ag, "cap_vcpus")),
					 (long long)json_integer_value(json_object_get(ag, "used_memory_mib")),
					 (long long)json_integer_value(json_object_get(ag, "cap_memory_mib")));
			printf("  %-16s %-5lld %-22s %-6s %s\n", jstr(h, "host"),
			       (long long)json_integer_value(json_object_get(h, "slot")), state,
			       !ag ? "none" : json_is_true(json_object_get(ag, "seen")) ? "seen" : "silent",
			       room);
			if (died && strcmp(jstr(died, "host"), jstr(h, "host")))
				printf("  %-16s %-5s %-22s\n", jstr(died, "host"), "", "dead, locks broken");
		}
		printf("  protected VMs:\n");
		json_array_foreach(json_object_get(ds, "protected"), k, p) {
			printf("    %-40s on %-12s priority %s\n", jstr(p, "vmx"), jstr(p, "host"),
			       jstr(p, "priority"));
			print_snap_age(json_object_get(p, "snapshots"), "      ");
		}
		json_array_foreach(json_object_get(ds, "failover"), k, p)
			printf("    %-40s waiting for a host (lost by %s) priority %s\n", jstr(p, "vmx"),
			       jstr(p, "host"), jstr(p, "priority"));
		printf("  recent HA events:\n");
		json_array_foreach(json_object_get(ds, "events"), k, e)
			print_event(e, "    ", "%H:%M:%S", 8, 18);
	}
}

static int after_console(json_t *reply)
{
	char serial[PATH_MAX];

	snprintf(serial, sizeof(serial), "%s", jstr(reply, "serial"));
	json_decref(reply);
	return console(serial);
}

int main(int argc, char **argv)
{
	static const struct option gopts[] = {
		{"agent", required_argument, NULL, 'a'},
		{"json", no_argument, NULL, 'j'},
		{"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, 'V'},
		{0},
	};
	char sock[PATH_MAX] = "", path[PATH_MAX] = "";
	const struct command *cmd;
	json_t *req, *reply;
	int c, rc;

	/* global options stop at the command ("+"): command options follow */
	while ((c = getopt_long(argc, argv, "+a:jhV", gopts, NULL)) != -1) {
		switch (c) {
		case 'a':
			snprintf(sock, sizeof(sock), "%s", optarg);
			break;
		case 'j':
			json_out = true;
			break;
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			printf("%s %s\n", prog, VMFSD_VERSION);
			return 0;
		default:
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (optind >= argc) {
		usage(stderr);
		return EXIT_USAGE;
	}
	argc -= optind;
	argv += optind;
	optind = 0;   /* glibc: 0 re-initializes getopt for the command's options */

	cmd = command_find(argv[0]);
	if (!cmd)
		return die_usage("unknown command '%s'", argv[0]);

	req = json_pack("{s:s}", "cmd", cmd->name);
	rc = (cmd->parse ? cmd->parse : parse_common)(cmd, argc, argv, req);
	if (rc)
		return rc;
	if (cmd->arg == ARG_PATH || cmd->arg == ARG_VM ||
	    (cmd->arg == ARG_OPT_VM && optind == argc - 1)) {
		if (optind != argc - 1)
			return die_usage(cmd->arg == ARG_PATH ? "%s needs exactly one PATH"
				       : "%s needs exactly one VM (a folder, its .vmx, a name or an ID)",
				       cmd->name);
		rc = path_arg(argv[optind], cmd->arg != ARG_PATH, path, sizeof(path));
		if (rc)
			return rc;
		json_object_set_new(req, "path", json_string(path));
	} else if (cmd->arg == ARG_TWO_PATHS) {
		char dest[PATH_MAX];

		if (optind != argc - 2)
			return die_usage("%s needs a VM (folder, .vmx, name or ID) and a destination "
					 "folder", cmd->name);
		/* import's first argument is a package file, never a VM */
		rc = path_arg(argv[optind], strcmp(cmd->name, "import"), path, sizeof(path));
		if (!rc)
			rc = path_arg(argv[optind + 1], false, dest, sizeof(dest));
		if (rc)
			return rc;
		json_object_set_new(req, "path", json_string(path));
		json_object_set_new(req, "dest", json_string(dest));
	} else if (optind != argc) {
		return die_usage("unexpected argument '%s'", argv[optind]);
	}
	if (!sock[0] && !strcmp(cmd->name, "host") && json_object_get(req, "host")) {
		/* host maintenance ... HOST: that host's agent on this machine */
		snprintf(sock, sizeof(sock), "/run/vmfs-hostd/%s.sock",
			 json_string_value(json_object_get(req, "host")));
	}
	if (!sock[0]) {
		rc = agentc_default_socket(sock, sizeof(sock));
		if (rc) {
			fprintf(stderr, "%s: %s: give --agent SOCKET or set VMFS_HOSTD_SOCKET\n", prog,
				rc == -EEXIST ? "several agents in /run/vmfs-hostd"
					      : "no host agent socket found in /run/vmfs-hostd");
			return EXIT_AGENT;
		}
	}
	reply = agent_call(sock, req);
	if (!reply)
		return EXIT_AGENT;
	if (!json_is_true(json_object_get(reply, "ok"))) {
		if (json_out) {
			char *s = json_dumps(reply, JSON_INDENT(2) | JSON_PRESERVE_ORDER);

			puts(s ? s : "{}");
			free(s);
		}
		fprintf(stderr, "%s: %s\n", prog, jstr(reply, "error"));
		json_decref(reply);
		return EXIT_FAIL;
	}
	if (cmd->after)
		return cmd->after(reply);
	if (json_out) {
		char *s;

		json_object_del(reply, "ok");
		/* after progress events, the reply is one more JSON line */
		s = json_dumps(reply, progress_lines ? JSON_COMPACT : JSON_INDENT(2) | JSON_PRESERVE_ORDER);
		puts(s ? s : "{}");
		free(s);
	} else {
		print_human(cmd->name, reply);
	}
	json_decref(reply);
	return 0;
}
