// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * HA: a dead host's VMs restart on the survivors, never twice (docs/ha.md).
 *
 * Everything the agents share lives on the datastore, under
 * <root>/.vmfsd/ha/ (paths inside are relative to the volume root: mount
 * points differ between hosts):
 *   protected/<host>/<key>.json  one file per VM that HOST runs and HA
 *                                protects (written tmp + fsync + rename
 *                                at power-on, removed at a clean stop)
 *   failover/<key>.json          VMs a host lost in a fence and handed to
 *                                the cluster when it came back (it rejoins
 *                                empty)
 *   agents/<host>                the agent's record (4 KiB: pid, CPUs,
 *                                memory, what its VMs use, a sequence
 *                                number bumped every tick) and a ring of
 *                                its last 64 HA events (512 bytes each),
 *                                written in place; the file is
 *                                multi-writer (user.vmfsd.multiwriter) so
 *                                every host can read it while its owner
 *                                has it open
 *
 * The loop (ha_main, a child of the agent, restarted when it dies) runs
 * every HA_TICK_MS per datastore: publish the record; read the cluster
 * view (user.vmfsd.hosts); keep this host's own list true; and for every
 * host that is not live and whose locks are broken, restart its protected
 * VMs: highest priority first, placed deterministically (most free memory
 * first, within each host's memory and vCPU capacity) so the agents agree
 * who starts what; anyone may try a VM its planned host did not start
 * after HA_GRACE_MS.  Power-on itself (power.c) decides the single winner
 * through the VM's lock record and disk locks.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "ops.h"

/* how often the loop looks: vmfsd updates its view once per commit
 * interval (1 s, fs/commit.c), so half of that keeps the delay between
 * "locks broken" and the first restart attempt under 0.5 s */
#define HA_TICK_MS 500
/* Hosts that die together (a rack losing power) are declared dead up to
 * a second or so apart, and each one's locks break once a survivor
 * replayed its journal (within a commit interval or two of the
 * declaration, docs/cluster.md §4.3).  While another host with protected
 * VMs has missed three heartbeats, or is declared dead and its locks are not
 * broken yet, nothing is restarted, so that the VMs of all of them are
 * placed together, high priority first; a declared host holds it for at
 * most 5 s (a recovery that does not finish: the others go on), a silent
 * one until it beats again or is declared dead (the timeout T). */
#define HA_POOL_MS 5000
static bool pooling;
/* an agent whose sequence number has not moved for this long is not
 * counted as a place to restart VMs (it bumps it every HA_TICK_MS) */
#define HA_AGENT_STALE_MS 5000
/* a VM its planned host has not started after this long may be started
 * by anyone with room: the planned host's agent may be slow or gone */
#define HA_GRACE_MS 5000
/* restart attempts that fail (not "taken elsewhere", not "locks still
 * held") back off 1, 2, 4, 8 s, then the VM is left off with an event */
#define HA_MAX_ATTEMPTS 5
#define HA_REC_SIZE 4096
#define HA_EVT_SIZE 512
#define HA_NEVT 64
#define HA_FILE_SIZE (HA_REC_SIZE + HA_NEVT * HA_EVT_SIZE)
#define HA_MAX_CAND 256

static int mkdirs(const char *path)
{
	char tmp[PATH_MAX];

	snprintf(tmp, sizeof(tmp), "%s", path);
	for (char *p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(tmp, 0755) && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(tmp, 0755) && errno != EEXIST)
		return -errno;
	return 0;
}

static const char *rel_of(const char *root, const char *path)
{
	size_t l = strlen(root);

	if (strncmp(path, root, l) || (path[l] != '/' && l != 1))
		return NULL;
	return path + l + (l != 1);
}

/* ------------------------------------------------------ protected list */

static void entry_path(const char *root, const char *host, const char *rel, char *buf,
		       size_t size)
{
	char key[17];

	vm_hash_name(rel, key);
	snprintf(buf, size, "%s/.vmfsd/ha/protected/%s/%s.json", root, host, key);
}

static int write_file_atomic(const char *path, const char *text)
{
	char tmp[PATH_MAX + 16];
	int fd, rc = 0;
	size_t len = strlen(text);

	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
	if (fd < 0)
		return -errno;
	if (write(fd, text, len) != (ssize_t)len || fsync(fd))
		rc = -errno ? -errno : -EIO;
	close(fd);
	if (!rc && rename(tmp, path))
		rc = -errno;
	if (rc) {
		unlink(tmp);
		return rc;
	}
	/* the rename is durable only once the directory is: a host killed
	 * right after a power-on must leave the VM on its list (vmfsd
	 * commits on fsync of the directory, else within a second) */
	char dir[PATH_MAX + 16];
	char *slash;

	snprintf(dir, sizeof(dir), "%s", path);
	slash = strrchr(dir, '/');
	if (slash)
		*slash = '\0';
	return sync_dir(dir);
}

int ha_protect(struct agent *a, struct vmctx *v)
{
	struct dsview d;
	char path[PATH_MAX + 64], dir[PATH_MAX + 64];
	const char *rel;
	int rc;

	if (ds_open(v->folder, &d))
		return 0;       /* not a cluster datastore: nobody to fail over to */
	rel = rel_of(d.root, v->vmx_path);
	if (!rel) {
		ds_close(&d);
		return -EINVAL;
	}
	entry_path(d.root, a->host, rel, path, sizeof(path));
	if (v->cfg.ha_priority == VM_HA_DISABLED) {
		unlink(path);
		ds_close(&d);
		return 0;
	}
	snprintf(dir, sizeof(dir), "%s/.vmfsd/ha/protected/%s", d.root, a->host);
	rc = mkdirs(dir);
	if (!rc) {
		json_t *e = json_pack("{s:s,s:s,s:s,s:i,s:i,s:I}", "vmx", rel, "host", a->host,
				      "priority", vm_ha_priority_name(v->cfg.ha_priority), "vcpus",
				      (int)v->cfg.vcpus, "memory_mib", (int)v->cfg.mem_mib, "since_ms",
				      (json_int_t)wall_ms());
		char *s = json_dumps(e, JSON_COMPACT);

		rc = s ? write_file_atomic(path, s) : -ENOMEM;
		free(s);
		json_decref(e);
	}
	ds_close(&d);
	return rc;
}

int64_t ha_since(const struct vmctx *v, const char *host)
{
	struct dsview d;
	char path[PATH_MAX + 64];
	const char *rel;
	int64_t ms = 0;

	if (ds_open(v->folder, &d))
		return 0;
	rel = rel_of(d.root, v->vmx_path);
	if (rel) {
		json_t *e;

		entry_path(d.root, host, rel, path, sizeof(path));
		e = json_load_file(path, 0, NULL);
		ms = json_integer_value(json_object_get(e, "since_ms"));
		json_decref(e);
	}
	ds_close(&d);
	return ms;
}

void ha_unprotect(struct agent *a, struct vmctx *v)
{
	ha_unprotect_why(a, v, "stopped on purpose");
}

void ha_unprotect_why(struct agent *a, struct vmctx *v, const char *why)
{
	struct dsview d;
	char path[PATH_MAX + 64];
	const char *rel;

	if (ds_open(v->folder, &d))
		return;
	rel = rel_of(d.root, v->vmx_path);
	if (rel) {
		/* stopped on purpose: no list may ask for a restart any more
		 * (a dead host's entry of a VM started by hand here, too) */
		char dir[PATH_MAX + 64], key[17];
		DIR *dh;
		struct dirent *de;
		int n = 0;

		vm_hash_name(rel, key);
		snprintf(dir, sizeof(dir), "%s/.vmfsd/ha/protected", d.root);
		dh = opendir(dir);
		while (dh && (de = readdir(dh))) {
			if (de->d_name[0] == '.')
				continue;
			snprintf(path, sizeof(path), "%s/%s/%s.json", dir, de->d_name, key);
			n += !unlink(path);
		}
		if (dh)
			closedir(dh);
		snprintf(path, sizeof(path), "%s/.vmfsd/ha/failover/%s.json", d.root, key);
		n += !unlink(path);
		if (n) {
			/* durable before the stop is reported: a host that dies
			 * next must not have the survivors start it again (an
			 * fsync of any directory commits vmfsd's journal) */
			sync_dir(dir);
			agent_event(a, v->vmx_path, "ha.unprotected",
				    "%s: removed from the protected list", why);
		}
	}
	ds_close(&d);
}

/* This host's entry only (a VM that left by live migration: its new host
 * listed it before the switch-over was reported, and ha_unprotect would
 * take that entry away too). */
void ha_unprotect_here(struct agent *a, struct vmctx *v, const char *why)
{
	struct dsview d;
	char path[PATH_MAX + 64];
	const char *rel;

	if (ds_open(v->folder, &d))
		return;
	rel = rel_of(d.root, v->vmx_path);
	if (rel) {
		entry_path(d.root, a->host, rel, path, sizeof(path));
		if (!unlink(path)) {
			char dir[PATH_MAX + 64];

			/* durable now: this host dying next must not make the
			 * survivors try to restart a VM that runs elsewhere */
			snprintf(dir, sizeof(dir), "%s/.vmfsd/ha/protected/%s", d.root, a->host);
			sync_dir(dir);
			agent_event(a, v->vmx_path, "ha.unprotected",
				    "%s: removed from this host's protected list", why);
		}
	}
	ds_close(&d);
}

/* ------------------------------------------------------ agent records */

struct ha_ds {
	char root[PATH_MAX];
	int recfd;                    /* our agents/<host>, open */
	uint64_t seq;
	uint64_t evseq;
	/* what we saw of the other agents: sequence and when it moved */
	struct { char host[65]; uint64_t seq; int64_t moved_ms; bool seen; } ag[64];
	unsigned nag;
	bool lost;                    /* its vmfsd died: our VMs of it were killed */
};

struct ha_cand {
	char root[PATH_MAX];
	char rel[PATH_MAX];
	char src[PATH_MAX + 64];      /* the list entry it came from */
	char from[65];                /* the host that lost it ("" : failover/) */
	int rank, vcpus, mem;
	/* loop state */
	int64_t first_ms, next_ms;
	int attempts;
	bool gave_up, noted_nofit, noted_wait, present;
	pid_t child;
	int64_t child_start_wall;
	char planned[65];
};

static struct ha_ds dss[AGENT_MAX_DS];
static unsigned ndss;
static struct ha_cand cands[HA_MAX_CAND];
static unsigned ncands;

static int rec_open(struct agent *a, struct ha_ds *ds)
{
	char dir[PATH_MAX + 32], path[PATH_MAX + 128];
	struct stat st;
	int fd;

	snprintf(dir, sizeof(dir), "%s/.vmfsd/ha/agents", ds->root);
	if (mkdirs(dir))
		return -errno;
	snprintf(path, sizeof(path), "%s/%s", dir, a->host);
	if (stat(path, &st) || st.st_size != HA_FILE_SIZE) {
		char tmp[PATH_MAX + 160];
		static char zero[HA_FILE_SIZE];

		/* a fixed size, written once: later writes change no
		 * metadata, so readers on other hosts see them at once */
		memset(zero, ' ', sizeof(zero));
		snprintf(tmp, sizeof(tmp), "%s.new", path);
		fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (fd < 0)
			return -errno;
		if (write(fd, zero, sizeof(zero)) != (ssize_t)sizeof(zero) || fsync(fd)) {
			close(fd);
			return -EIO;
		}
		close(fd);
		if (setxattr(tmp, "user.vmfsd.multiwriter", "1", 1, 0) || rename(tmp, path)) {
			unlink(tmp);
			return -errno;
		}
	}
	fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	/* Opened within a commit interval of the create and the flag change,
	 * vmfsd still holds the file's exclusive lock from those (fs/cluster.c
	 * keeps the stronger lock while the file is open): the other hosts
	 * could not read it.  Close and come back once it was released. */
	char desc[128];
	ssize_t l = fgetxattr(fd, "user.vmfsd.lock", desc, sizeof(desc) - 1);

	if (l > 4 && !strncmp(desc, "EXCL", 4)) {
		close(fd);
		return -EAGAIN;
	}
	ds->recfd = fd;
	return 0;
}

/* what the VMs running here use (their state folders say) */
static void local_usage(struct agent *a, int *vcpus, int *mem, int *nvm)
{
	char vms[PATH_MAX + 8];
	DIR *d;
	struct dirent *de;

	*vcpus = *mem = *nvm = 0;
	snprintf(vms, sizeof(vms), "%s/vms", a->state_dir);
	d = opendir(vms);
	while (d && (de = readdir(d))) {
		struct vmctx v;
		char p[PATH_MAX + 16], buf[64];
		int c, m;

		if (de->d_name[0] == '.')
			continue;
		memset(&v, 0, sizeof(v));
		snprintf(v.sdir, sizeof(v.sdir), "%s/%s", vms, de->d_name);
		if (!vm_qemu_pid(&v))
			continue;
		sfile(&v, "res", p, sizeof(p));
		if (read_text(p, buf, sizeof(buf)) || sscanf(buf, "%d %d", &c, &m) != 2)
			continue;
		*vcpus += c;
		*mem += m;
		(*nvm)++;
	}
	if (d)
		closedir(d);
}

/* The CPU the QEMUs of this host used since the last call, in percent of
 * one CPU (for `vmfsctl balance`): utime + stime of each QEMU from
 * /proc/PID/stat (fields 14 and 15, proc(5)), counted only for QEMUs seen
 * both times, so a QEMU that just started adds nothing it did before. */
static int qemu_cpu_pct(struct agent *a)
{
	static struct { pid_t pid; unsigned long long ticks; } prev[256], cur[256];
	static unsigned nprev;
	static int64_t prev_ms;
	static int last = 0;
	char vms[PATH_MAX + 8];
	unsigned long long used = 0;
	unsigned ncur = 0;
	int64_t now = now_ms();
	DIR *d;
	struct dirent *de;

	snprintf(vms, sizeof(vms), "%s/vms", a->state_dir);
	d = opendir(vms);
	while (d && (de = readdir(d)) && ncur < 256) {
		struct vmctx v;
		char p[64], buf[1024], *rp;
		unsigned long long ut, st;
		pid_t pid;
		int fd;
		ssize_t n;

		if (de->d_name[0] == '.')
			continue;
		memset(&v, 0, sizeof(v));
		snprintf(v.sdir, sizeof(v.sdir), "%s/%s", vms, de->d_name);
		if (!(pid = vm_qemu_pid(&v)))
			continue;
		snprintf(p, sizeof(p), "/proc/%d/stat", (int)pid);
		fd = open(p, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			continue;
		n = read(fd, buf, sizeof(buf) - 1);
		close(fd);
		if (n <= 0)
			continue;
		buf[n] = '\0';
		/* after the command name (it may hold spaces): state is field 3 */
		rp = strrchr(buf, ')');
		if (!rp || sscanf(rp + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut,
				  &st) != 2)
			continue;
		cur[ncur].pid = pid;
		cur[ncur++].ticks = ut + st;
		for (unsigned i = 0; i < nprev; i++)
			if (prev[i].pid == pid && ut + st >= prev[i].ticks)
				used += ut + st - prev[i].ticks;
	}
	if (d)
		closedir(d);
	if (prev_ms && now > prev_ms)
		last = (int)(used * 1000 * 100 / (unsigned long long)sysconf(_SC_CLK_TCK) /
			     (unsigned long long)(now - prev_ms));
	memcpy(prev, cur, sizeof(cur[0]) * ncur);
	nprev = ncur;
	prev_ms = now;
	return last;
}

static void rec_publish(struct agent *a, struct ha_ds *ds)
{
	char buf[HA_REC_SIZE];
	int vc, mem, n;
	json_t *r;
	char *s;

	if (ds->recfd < 0 && rec_open(a, ds))
		return;
	local_usage(a, &vc, &mem, &n);
	ds->seq++;
	r = json_pack("{s:s,s:i,s:I,s:I,s:i,s:I,s:i,s:I,s:i,s:i,s:i,s:I}", "host", a->host, "pid",
		      (int)getppid(), "seq", (json_int_t)ds->seq, "evseq", (json_int_t)ds->evseq,
		      "cpus", (int)a->res.cpus, "memory_mib", (json_int_t)a->res.mem_mib, "cap_vcpus",
		      a->cap_vcpus, "cap_memory_mib", (json_int_t)a->cap_mem_mib, "used_vcpus", vc,
		      "used_memory_mib", mem, "vms", n, "wall_ms", (json_int_t)wall_ms());
	/* measured once per loop tick however many datastores there are */
	{
		static int64_t at;
		static int pct;

		if (now_ms() - at >= HA_TICK_MS / 2) {
			pct = qemu_cpu_pct(a);
			at = now_ms();
		}
		if (r)
			json_object_set_new(r, "qemu_cpu_pct", json_integer(pct));
	}
	/* maintenance mode (maint.c): no HA restart may be placed here */
	if (r && maint_active(a, NULL))
		json_object_set_new(r, "maintenance", json_true());
	s = json_dumps(r, JSON_COMPACT);
	json_decref(r);
	if (!s)
		return;
	memset(buf, ' ', sizeof(buf));
	buf[sizeof(buf) - 1] = '\n';
	memcpy(buf, s, strlen(s) < sizeof(buf) - 1 ? strlen(s) : sizeof(buf) - 1);
	free(s);
	if (pwrite(ds->recfd, buf, sizeof(buf), 0) != (ssize_t)sizeof(buf)) {
		close(ds->recfd);
		ds->recfd = -1;
	}
}

/* an HA event every host can read (`vmfsctl ha status`), and this host's
 * own event log */
static void ha_event(struct agent *a, struct ha_ds *ds, const char *vmx, const char *type,
		     json_t *extra, const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static void ha_event(struct agent *a, struct ha_ds *ds, const char *vmx, const char *type,
		     json_t *extra, const char *fmt, ...)
{
	char msg[400], buf[HA_EVT_SIZE];
	va_list ap;
	json_t *e;
	char *s;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	agent_event(a, vmx, type, "%s", msg);
	if (!ds || (ds->recfd < 0 && rec_open(a, ds))) {
		json_decref(extra);
		return;
	}
	e = json_pack("{s:I,s:s,s:s,s:s}", "time_ms", (json_int_t)wall_ms(), "host", a->host,
		      "type", type, "message", msg);
	if (vmx) {
		/* relative to the volume root: the ring's slots are small and
		 * mount points differ between hosts */
		const char *rel = rel_of(ds->root, vmx);

		json_object_set_new(e, "vmx", json_string(rel ? rel : vmx));
	}
	if (extra)
		json_object_update(e, extra);
	json_decref(extra);
	s = json_dumps(e, JSON_COMPACT);
	json_decref(e);
	if (!s)
		return;
	if (strlen(s) >= sizeof(buf) - 1) {
		/* too long for a ring slot: keep the essentials */
		free(s);
		e = json_pack("{s:I,s:s,s:s,s:s}", "time_ms", (json_int_t)wall_ms(), "host", a->host,
			      "type", type, "message", "(message too long)");
		s = json_dumps(e, JSON_COMPACT);
		json_decref(e);
		if (!s)
			return;
	}
	memset(buf, ' ', sizeof(buf));
	buf[sizeof(buf) - 1] = '\n';
	memcpy(buf, s, strlen(s));
	free(s);
	(void)!pwrite(ds->recfd, buf, sizeof(buf),
		      HA_REC_SIZE + (off_t)(ds->evseq % HA_NEVT) * HA_EVT_SIZE);
	ds->evseq++;
}

/* the agents/<host> files of a datastore: records (and event rings) */
json_t *ha_agent_record(const char *path, json_t **events)
{
	static char buf[HA_FILE_SIZE + 1];
	json_error_t je;
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	json_t *rec;

	if (fd < 0)
		return NULL;
	n = pread(fd, buf, HA_FILE_SIZE, 0);
	close(fd);
	if (n < HA_REC_SIZE)
		return NULL;
	buf[HA_REC_SIZE - 1] = '\0';
	rec = json_loads(buf, JSON_DISABLE_EOF_CHECK, &je);
	if (events) {
		*events = json_array();
		for (int i = 0; i < HA_NEVT && HA_REC_SIZE + (i + 1) * HA_EVT_SIZE <= n; i++) {
			char *slot = buf + HA_REC_SIZE + i * HA_EVT_SIZE;
			json_t *e;

			slot[HA_EVT_SIZE - 1] = '\0';
			e = slot[0] == '{' ? json_loads(slot, JSON_DISABLE_EOF_CHECK, &je) : NULL;
			if (e)
				json_array_append_new(*events, e);
		}
	}
	return rec;
}

/* ------------------------------------------------------ the datastores */

/* mountinfo escapes blanks as \040 etc. */
static void unescape(char *s)
{
	char *o = s;

	for (; *s; s++) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] && s[3]) {
			*o++ = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 + (s[3] - '0'));
			s += 3;
		} else {
			*o++ = *s;
		}
	}
	*o = '\0';
}

int ha_datastores(struct agent *a, char roots[][PATH_MAX], int max)
{
	/* --datastore names them all: the mounts of other hosts that share
	 * this kernel (tests) are never touched then */
	FILE *f = a->nds ? NULL : fopen("/proc/self/mountinfo", "re");
	char line[4096];
	int n = 0;

	while (f && n < max && fgets(line, sizeof(line), f)) {
		char mp[PATH_MAX], *sep = strstr(line, " - "), fstype[64];
		json_t *h;

		if (!sep || sscanf(line, "%*s %*s %*s %*s %4095s", mp) != 1 ||
		    sscanf(sep + 3, "%63s", fstype) != 1 || strcmp(fstype, "fuse.vmfsd"))
			continue;
		unescape(mp);
		/* several test hosts share one kernel: only the mounts whose
		 * vmfsd runs as this host */
		h = ds_hosts_read(mp);
		const char *self = json_string_value(json_object_get(json_object_get(h, "self"), "host"));

		if (self && !strcmp(self, a->host))
			snprintf(roots[n++], PATH_MAX, "%s", mp);
		json_decref(h);
	}
	if (f)
		fclose(f);
	for (unsigned i = 0; i < a->nds && n < max; i++) {
		bool dup = false;

		for (int j = 0; j < n; j++)
			dup |= !strcmp(roots[j], a->datastores[i]);
		if (!dup && !realpath(a->datastores[i], roots[n]))
			continue;       /* not mounted (yet) */
		if (!dup)
			n++;
	}
	return n;
}

static struct ha_ds *ds_get(const char *root)
{
	for (unsigned i = 0; i < ndss; i++)
		if (!strcmp(dss[i].root, root))
			return &dss[i];
	if (ndss == AGENT_MAX_DS)
		return NULL;
	memset(&dss[ndss], 0, sizeof(dss[ndss]));
	snprintf(dss[ndss].root, sizeof(dss[ndss].root), "%s", root);
	dss[ndss].recfd = -1;
	dss[ndss].evseq = (uint64_t)wall_ms();   /* a restarted loop never reuses slots in order */
	return &dss[ndss++];
}

/* Is agent HOST fresh: its sequence moved within HA_AGENT_STALE_MS, as
 * measured on our clock?  Updates what we saw. */
static bool agent_fresh(struct ha_ds *ds, const char *host, uint64_t seq)
{
	int64_t now = now_ms();
	unsigned i;

	for (i = 0; i < ds->nag; i++)
		if (!strcmp(ds->ag[i].host, host))
			break;
	if (i == ds->nag) {
		if (ds->nag == 64)
			return false;
		ds->nag++;
		snprintf(ds->ag[i].host, sizeof(ds->ag[i].host), "%s", host);
		ds->ag[i].seq = seq;
		ds->ag[i].moved_ms = now - HA_AGENT_STALE_MS;   /* prove it by a move */
		return false;
	}
	if (ds->ag[i].seq != seq) {
		ds->ag[i].seq = seq;
		ds->ag[i].moved_ms = now;
	}
	return now - ds->ag[i].moved_ms < HA_AGENT_STALE_MS;
}

/* ------------------------------------------------------ own list */

static bool vm_busy_here(struct agent *a, const char *vmx, struct vmctx *v)
{
	char p[PATH_MAX + 16];
	int fd;

	memset(v, 0, sizeof(*v));
	v->dirfd = v->lockfd = -1;
	vm_hash_name(vmx, v->key);
	snprintf(v->sdir, sizeof(v->sdir), "%s/vms/%s", a->state_dir, v->key);
	if (vm_qemu_pid(v))
		return true;
	sfile(v, "lock", p, sizeof(p));
	fd = open(p, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return false;
	bool busy = flock(fd, LOCK_EX | LOCK_NB) != 0;

	close(fd);
	return busy;
}

/* This host's list must name only VMs it runs (or that item-4 monitoring
 * restarts in place): a VM killed by a fence is handed to the cluster
 * (failover/), one that runs elsewhere now is dropped.  So a host that
 * comes back after a fence rejoins empty. */
static void own_list(struct agent *a, struct ha_ds *ds, const struct dsview *d)
{
	char dir[PATH_MAX + 64];
	DIR *dh;
	struct dirent *de;

	snprintf(dir, sizeof(dir), "%s/.vmfsd/ha/protected/%s", ds->root, a->host);
	dh = opendir(dir);
	while (dh && (de = readdir(dh))) {
		char path[PATH_MAX * 2 + 64], vmx[PATH_MAX * 2], txt[2048], p[PATH_MAX + 16];
		struct vmctx v;
		json_error_t je;
		json_t *e;
		const char *rel;

		if (de->d_name[0] == '.' || !strstr(de->d_name, ".json") || strstr(de->d_name, ".tmp"))
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		if (read_text(path, txt, sizeof(txt)))
			continue;
		e = json_loads(txt, 0, &je);
		rel = json_string_value(json_object_get(e, "vmx"));
		if (!rel) {
			json_decref(e);
			continue;
		}
		snprintf(vmx, sizeof(vmx), "%s/%s", ds->root, rel);
		if (vm_busy_here(a, vmx, &v)) {
			json_decref(e);
			continue;
		}
		sfile(&v, "fenced", p, sizeof(p));
		if (!access(p, F_OK)) {
			char to[PATH_MAX + 64], fdir[PATH_MAX + 32];

			snprintf(fdir, sizeof(fdir), "%s/.vmfsd/ha/failover", ds->root);
			mkdirs(fdir);
			snprintf(to, sizeof(to), "%s/%s", fdir, de->d_name);
			if (!rename(path, to))
				ha_event(a, ds, vmx, "ha.handed-over", NULL,
					 "killed here by a fence: handed to the cluster for a restart "
					 "elsewhere (this host rejoins without it)");
		} else {
			char name[VM_NAME_MAX + 8], holder[256] = "", folder[PATH_MAX * 2];
			char *slash;
			int dfd;

			snprintf(folder, sizeof(folder), "%s", vmx);
			slash = strrchr(folder, '/');
			if (slash) {
				*slash = '\0';
				snprintf(name, sizeof(name), "%s.lck", slash + 1);
				dfd = open(folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
				if (dfd >= 0 && ds_lock_holder(dfd, name, holder, sizeof(holder)) == 1 &&
				    d->self && strcmp(holder, d->self)) {
					unlink(path);
					ha_event(a, ds, vmx, "ha.unprotected", NULL,
						 "runs on host %s now: removed from this host's list", holder);
				}
				if (dfd >= 0)
					close(dfd);
			}
		}
		json_decref(e);
	}
	if (dh)
		closedir(dh);
}

/* ------------------------------------------------------ failover */

static struct ha_cand *cand_get(const char *root, const char *rel)
{
	for (unsigned i = 0; i < ncands; i++)
		if (!strcmp(cands[i].root, root) && !strcmp(cands[i].rel, rel))
			return &cands[i];
	if (ncands == HA_MAX_CAND)
		return NULL;
	struct ha_cand *c = &cands[ncands++];

	memset(c, 0, sizeof(*c));
	snprintf(c->root, sizeof(c->root), "%s", root);
	snprintf(c->rel, sizeof(c->rel), "%s", rel);
	c->first_ms = now_ms();
	return c;
}

static void cand_drop(struct ha_cand *c)
{
	if (c->child > 0)
		return;         /* its attempt still runs */
	*c = cands[--ncands];
}

static void cand_add(const char *root, const char *src, const char *from)
{
	char txt[2048];
	json_error_t je;
	json_t *e;
	const char *rel, *prio;
	struct ha_cand *c;
	enum vm_ha_priority p = VM_HA_MEDIUM;

	if (read_text(src, txt, sizeof(txt)))
		return;
	e = json_loads(txt, 0, &je);
	rel = json_string_value(json_object_get(e, "vmx"));
	prio = json_string_value(json_object_get(e, "priority"));
	if (!rel || strstr(rel, "..")) {
		json_decref(e);
		return;
	}
	if (prio)
		vm_ha_priority_parse(prio, &p);
	c = cand_get(root, rel);
	if (c) {
		c->present = true;
		snprintf(c->src, sizeof(c->src), "%s", src);
		snprintf(c->from, sizeof(c->from), "%s", from);
		c->rank = vm_ha_priority_rank(p);
		c->vcpus = (int)json_integer_value(json_object_get(e, "vcpus"));
		c->mem = (int)json_integer_value(json_object_get(e, "memory_mib"));
	}
	json_decref(e);
}

struct ha_host {
	char host[65];
	int free_vcpus, free_mem;
};

static int cand_cmp(const void *x, const void *y)
{
	const struct ha_cand *a = x, *b = y;
	int r = strcmp(a->root, b->root);

	if (r)
		return r;
	if (a->rank != b->rank)
		return b->rank - a->rank;
	return strcmp(a->rel, b->rel);
}

/* Host NAME, live by the heartbeat, has missed three beats or more: it may
 * be about to be declared dead (pooling, HA_POOL_MS). */
static bool missing_beats(const struct dsview *d, const char *name)
{
	json_int_t interval = json_integer_value(json_object_get(d->hosts, "interval_ms"));
	size_t i;
	json_t *h;

	json_array_foreach(json_object_get(d->hosts, "hosts"), i, h) {
		const char *hn = json_string_value(json_object_get(h, "host"));

		if (hn && !strcmp(hn, name) && !json_is_true(json_object_get(h, "self")) &&
		    json_integer_value(json_object_get(h, "unchanged_ms")) > 3 * interval)
			return true;
	}
	return false;
}

/* Host NAME's agent still publishes its record on this datastore: a host
 * without a vmfsd slot of its own (agents sharing one mount, as on a test
 * machine) is not lost while its agent runs; its list waits until the
 * record goes stale (HA_AGENT_STALE_MS). */
static bool agent_alive(struct ha_ds *ds, const char *name)
{
	char path[PATH_MAX + 128];
	json_t *r;
	bool fresh;

	snprintf(path, sizeof(path), "%s/.vmfsd/ha/agents/%s", ds->root, name);
	r = ha_agent_record(path, NULL);
	fresh = r && agent_fresh(ds, name, (uint64_t)json_integer_value(json_object_get(r, "seq")));
	json_decref(r);
	return fresh;
}

/* the protected list of host NAME in DIR has an entry */
static bool has_entries(const char *dir, const char *name)
{
	char hdir[PATH_MAX + 128];
	struct dirent *e;
	bool any = false;
	DIR *dh;

	snprintf(hdir, sizeof(hdir), "%s/%s", dir, name);
	dh = opendir(hdir);
	while (dh && !any && (e = readdir(dh)))
		any = e->d_name[0] != '.' && strstr(e->d_name, ".json") && !strstr(e->d_name, ".tmp");
	if (dh)
		closedir(dh);
	return any;
}

/* The candidates of one datastore: protected lists of hosts that are not
 * live and whose locks are broken (or that hold no slot at all), and the
 * failover/ folder. */
static void collect(struct agent *a, struct ha_ds *ds, const struct dsview *d)
{
	char dir[PATH_MAX + 64];
	DIR *dh;
	struct dirent *de;

	snprintf(dir, sizeof(dir), "%s/.vmfsd/ha/protected", ds->root);
	dh = opendir(dir);
	while (dh && (de = readdir(dh))) {
		char hdir[PATH_MAX + 128];
		int64_t ago;
		enum ds_hstate hs;
		DIR *eh;
		struct dirent *ee;
		bool any = false;

		if (de->d_name[0] == '.' || !strcmp(de->d_name, a->host))
			continue;
		hs = ds_host(d, de->d_name, &ago);
		if (hs == DS_LIVE) {
			if (missing_beats(d, de->d_name) && has_entries(dir, de->d_name))
				pooling = true;     /* perhaps dying with another */
			continue;
		}
		if (hs == DS_UNKNOWN && agent_alive(ds, de->d_name))
			continue;       /* no slot of its own, but its agent runs */
		snprintf(hdir, sizeof(hdir), "%s/%s", dir, de->d_name);
		eh = opendir(hdir);
		while (eh && (ee = readdir(eh))) {
			char src[PATH_MAX * 2 + 256];

			if (ee->d_name[0] == '.' || !strstr(ee->d_name, ".json") || strstr(ee->d_name, ".tmp"))
				continue;
			any = true;
			if (hs == DS_DEAD)
				continue;       /* its locks still hold: wait */
			snprintf(src, sizeof(src), "%s/%s", hdir, ee->d_name);
			cand_add(ds->root, src, de->d_name);
		}
		if (eh)
			closedir(eh);
		if (any && hs == DS_DEAD && ago >= 0 && ago < HA_POOL_MS)
			pooling = true;
		if (any && hs == DS_DEAD) {
			/* once per death: the slot's "declared" time names it */
			static char noted[AGENT_MAX_DS][64][65];
			unsigned k;

			for (k = 0; k < 64 && noted[ds - dss][k][0] && strcmp(noted[ds - dss][k], de->d_name); k++)
				;
			if (k < 64 && !noted[ds - dss][k][0]) {
				snprintf(noted[ds - dss][k], 65, "%s", de->d_name);
				ha_event(a, ds, NULL, "ha.host-dead", NULL,
					 "host %s was declared dead%s; waiting until its journal is replayed and its locks are broken",
					 de->d_name, ago >= 0 ? "" : " (just now)");
			}
		}
	}
	if (dh)
		closedir(dh);
	snprintf(dir, sizeof(dir), "%s/.vmfsd/ha/failover", ds->root);
	dh = opendir(dir);
	while (dh && (de = readdir(dh))) {
		char src[PATH_MAX * 2 + 128];

		if (de->d_name[0] == '.' || !strstr(de->d_name, ".json") || strstr(de->d_name, ".tmp"))
			continue;
		snprintf(src, sizeof(src), "%s/%s", dir, de->d_name);
		cand_add(ds->root, src, "");
	}
	if (dh)
		closedir(dh);
}

/* the live agents of a datastore with their room, ours included */
static unsigned hosts_room(struct agent *a, struct ha_ds *ds, const struct dsview *d,
			   struct ha_host *out, unsigned max)
{
	char dir[PATH_MAX + 64];
	DIR *dh;
	struct dirent *de;
	unsigned n = 0;

	snprintf(dir, sizeof(dir), "%s/.vmfsd/ha/agents", ds->root);
	dh = opendir(dir);
	while (dh && (de = readdir(dh)) && n < max) {
		char path[PATH_MAX + 128];
		json_t *r;
		int64_t ago;
		const char *h;

		if (de->d_name[0] == '.' || strchr(de->d_name, '.'))
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		r = ha_agent_record(path, NULL);
		h = json_string_value(json_object_get(r, "host"));
		if (json_is_true(json_object_get(r, "maintenance")) || (h && !strcmp(h, a->host) &&
									 maint_active(a, NULL)))
			h = NULL;       /* in maintenance mode: no VM is placed there */
		if (h && (!strcmp(h, a->host) ||
			  (agent_fresh(ds, h, (uint64_t)json_integer_value(json_object_get(r, "seq"))) &&
			   ds_host(d, h, &ago) == DS_LIVE))) {
			snprintf(out[n].host, sizeof(out[n].host), "%s", h);
			out[n].free_vcpus = (int)(json_integer_value(json_object_get(r, "cap_vcpus")) -
						  json_integer_value(json_object_get(r, "used_vcpus")));
			out[n].free_mem = (int)(json_integer_value(json_object_get(r, "cap_memory_mib")) -
						json_integer_value(json_object_get(r, "used_memory_mib")));
			n++;
		}
		json_decref(r);
	}
	if (dh)
		closedir(dh);
	return n;
}

/* exit codes of an attempt child */
enum { TRY_OK = 0, TRY_ELSEWHERE = 10, TRY_WAIT = 11, TRY_FAIL = 12 };

static int try_restart(struct agent *a, struct ha_cand *c)
{
	char vmx[PATH_MAX * 2];
	struct vm_err err;
	struct vmctx v;
	json_t *req, *r;
	int rc;

	snprintf(vmx, sizeof(vmx), "%s/%s", c->root, c->rel);
	rc = vmctx_open(a, vmx, true, &v, &err);
	if (rc) {
		agent_event(a, vmx, "ha.restart-failed", "cannot load the VM: %s", err.msg);
		vmctx_close(&v);
		return TRY_FAIL;
	}
	if (vm_qemu_pid(&v)) {
		vmctx_close(&v);
		unlink(c->src);
		return TRY_OK;
	}
	req = json_pack("{s:s,s:s,s:b}", "cmd", "power-on", "path", vmx, "ha", 1);
	r = power_on(a, &v, req);
	json_decref(req);
	if (json_is_true(json_object_get(r, "ok"))) {
		/* ours now (power-on listed it under this host): the entry
		 * it came from goes */
		unlink(c->src);
		rc = TRY_OK;
	} else {
		const char *e = json_string_value(json_object_get(r, "error"));
		int en = (int)json_integer_value(json_object_get(r, "errno"));

		if (en == EBUSY && e && strstr(e, "declared dead"))
			rc = TRY_WAIT;
		else if (en == EBUSY) {
			rc = TRY_ELSEWHERE;
			agent_log(a, "%s: HA restart not needed here: %s", vmx, e ? e : "busy");
		} else {
			rc = TRY_FAIL;
			agent_event(a, vmx, "ha.restart-failed", "%s", e ? e : "power-on failed");
		}
	}
	json_decref(r);
	vmctx_close(&v);
	return rc;
}

/* Already running somewhere (its lock record is held: a manual power-on,
 * an agent that won while our list was read)?  Then it is not a
 * candidate, and once its new host lists it the old entry goes. */
static bool cand_running(struct agent *a, struct ha_cand *c)
{
	char folder[PATH_MAX * 2], name[VM_NAME_MAX + 8], holder[256] = "", *slash;
	int dfd, hl;

	snprintf(folder, sizeof(folder), "%s/%s", c->root, c->rel);
	slash = strrchr(folder, '/');
	if (!slash)
		return false;
	*slash = '\0';
	snprintf(name, sizeof(name), "%s.lck", slash + 1);
	dfd = open(folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return false;
	hl = ds_lock_holder(dfd, name, holder, sizeof(holder));
	if (hl == 1 && !strcmp(holder, a->host)) {
		/* our own vmfsd's lock: a look at the record from this host
		 * (info, list) keeps it for up to a commit interval after the
		 * close; the VM runs here only if a QEMU holds the record's
		 * flock.  Taken for "running" it was skipped in the plan, and
		 * a lower priority VM took its room. */
		struct vm_lockrec r;

		if (vm_lockrec_probe(dfd, name, &r) != 1)
			hl = 0;
	}
	close(dfd);
	if (hl != 1 || (c->from[0] && !strcmp(holder, c->from)))
		return false;   /* free, or still the dead host's (not broken) */
	char own[PATH_MAX + 256];

	entry_path(c->root, holder, c->rel, own, sizeof(own));
	if (!access(own, F_OK) && strcmp(own, c->src))
		unlink(c->src);
	return true;
}

static void plan_and_start(struct agent *a)
{
	struct ha_host hosts[64];
	unsigned nh = 0;
	const char *root = NULL;
	int64_t now = now_ms();

	qsort(cands, ncands, sizeof(cands[0]), cand_cmp);
	for (unsigned i = 0; i < ncands; i++) {
		struct ha_cand *c = &cands[i];
		struct ha_ds *ds = ds_get(c->root);
		int best = -1;

		if (!ds)
			continue;
		if (!root || strcmp(root, c->root)) {
			struct dsview d;

			root = c->root;
			nh = 0;
			if (!ds_open(c->root, &d)) {
				nh = hosts_room(a, ds, &d, hosts, 64);
				ds_close(&d);
			}
		}
		if (c->child > 0) {
			/* being started: its room is taken */
			for (unsigned h = 0; h < nh; h++)
				if (!strcmp(hosts[h].host, c->planned)) {
					hosts[h].free_mem -= c->mem;
					hosts[h].free_vcpus -= c->vcpus;
				}
			continue;
		}
		if (c->gave_up)
			continue;
		if (cand_running(a, c))
			continue;
		/* most free memory first; ties: the host name (every agent
		 * computes the same plan from the same records) */
		for (unsigned h = 0; h < nh; h++) {
			if (hosts[h].free_mem < c->mem || hosts[h].free_vcpus < c->vcpus)
				continue;
			if (best < 0 || hosts[h].free_mem > hosts[best].free_mem ||
			    (hosts[h].free_mem == hosts[best].free_mem &&
			     strcmp(hosts[h].host, hosts[best].host) < 0))
				best = (int)h;
		}
		char vmx[PATH_MAX * 2];

		snprintf(vmx, sizeof(vmx), "%s/%s", c->root, c->rel);
		if (best < 0) {
			c->planned[0] = '\0';
			if (!c->noted_nofit) {
				c->noted_nofit = true;
				ha_event(a, ds, vmx, "ha.no-capacity",
					 json_pack("{s:i,s:i}", "vcpus", c->vcpus, "memory_mib", c->mem),
					 "lost with host %s: no live host has room for %d vCPU(s) and %d MiB; "
					 "waiting for capacity", c->from[0] ? c->from : "(failover)", c->vcpus,
					 c->mem);
			}
			continue;
		}
		hosts[best].free_mem -= c->mem;
		hosts[best].free_vcpus -= c->vcpus;
		snprintf(c->planned, sizeof(c->planned), "%s", hosts[best].host);
		bool mine = !strcmp(hosts[best].host, a->host);

		if (!mine && now - c->first_ms < HA_GRACE_MS)
			continue;
		if (!mine) {
			/* the planned host did not start it in time: try it
			 * ourselves if we have room */
			bool room = false;

			for (unsigned h = 0; h < nh; h++)
				if (!strcmp(hosts[h].host, a->host) && hosts[h].free_mem >= c->mem &&
				    hosts[h].free_vcpus >= c->vcpus) {
					hosts[h].free_mem -= c->mem;
					hosts[h].free_vcpus -= c->vcpus;
					room = true;
				}
			if (!room)
				continue;
		}
		if (now < c->next_ms)
			continue;
		if (c->noted_nofit) {
			c->noted_nofit = false;
			ha_event(a, ds, vmx, "ha.capacity", NULL, "room found on host %s", hosts[best].host);
		}
		c->child_start_wall = wall_ms();
		pid_t pid = fork();

		if (pid == 0)
			_exit(try_restart(a, c));
		if (pid > 0) {
			c->child = pid;
			agent_log(a, "%s: HA restart attempt %d (lost with host %s, priority rank %d, planned on %s)",
				  vmx, c->attempts + 1, c->from[0] ? c->from : "(failover)", c->rank,
				  hosts[best].host);
		}
	}
}

/* the death of host FROM as this datastore's vmfsd saw it, for events */
static json_t *death_info(const char *root, const char *from)
{
	json_t *h = ds_hosts_read(root), *e, *out = NULL;
	size_t i;

	json_array_foreach(json_object_get(h, "hosts"), i, e) {
		json_t *died = json_object_get(e, "died");
		const char *dh = json_string_value(json_object_get(died, "host"));

		if (dh && !strcmp(dh, from)) {
			out = json_pack("{s:O?,s:O?,s:O?}", "declared_wall_ms",
					json_object_get(died, "declared_wall_ms"), "broken_wall_ms",
					json_object_get(died, "broken_wall_ms"), "replay_ms",
					json_object_get(died, "replay_ms"));
			break;
		}
	}
	json_decref(h);
	return out;
}

static void reap(struct agent *a, pid_t pid, int status)
{
	for (unsigned i = 0; i < ncands; i++) {
		struct ha_cand *c = &cands[i];
		char vmx[PATH_MAX * 2];
		struct ha_ds *ds;
		int code;

		if (c->child != pid)
			continue;
		c->child = 0;
		ds = ds_get(c->root);
		snprintf(vmx, sizeof(vmx), "%s/%s", c->root, c->rel);
		code = WIFEXITED(status) ? WEXITSTATUS(status) : TRY_FAIL;
		if (code == TRY_OK) {
			json_t *x = c->from[0] ? death_info(c->root, c->from) : NULL;
			int64_t now = wall_ms();

			if (!x)
				x = json_object();
			json_object_set_new(x, "lost_with", json_string(c->from));
			json_object_set_new(x, "start_wall_ms", json_integer(c->child_start_wall));
			json_object_set_new(x, "running_wall_ms", json_integer(now));
			json_object_set_new(x, "attempt", json_integer(c->attempts + 1));
			ha_event(a, ds, vmx, "ha.restarted", x,
				 "restarted here after host %s was lost (attempt %d, QEMU start took %lld ms)",
				 c->from[0] ? c->from : "(failover)", c->attempts + 1,
				 (long long)(now - c->child_start_wall));
			cand_drop(c);
		} else if (code == TRY_ELSEWHERE) {
			ha_event(a, ds, vmx, "ha.taken-elsewhere", NULL,
				 "another host holds it now: nothing to do here");
			cand_drop(c);
		} else if (code == TRY_WAIT) {
			c->next_ms = now_ms() + HA_TICK_MS;
		} else {
			c->attempts++;
			if (c->attempts >= HA_MAX_ATTEMPTS) {
				c->gave_up = true;
				ha_event(a, ds, vmx, "ha.gave-up", NULL,
					 "restart failed %d times: left off here (see the events before)",
					 c->attempts);
			} else {
				int64_t back = 1000LL << (c->attempts - 1);

				c->next_ms = now_ms() + back;
				ha_event(a, ds, vmx, "ha.retry", NULL, "restart attempt %d failed; next in %lld s",
					 c->attempts, (long long)(back / 1000));
			}
		}
		return;
	}
}

/* state_dir/ha-view.json: what the loop saw, for `vmfsctl ha status` */
static void write_view(struct agent *a)
{
	json_t *o = json_object(), *arr = json_array();
	char path[PATH_MAX + 32], *s;

	for (unsigned i = 0; i < ndss; i++) {
		json_t *ag = json_object();

		for (unsigned k = 0; k < dss[i].nag; k++)
			json_object_set_new(ag, dss[i].ag[k].host,
					    json_pack("{s:I}", "unchanged_ms",
						      (json_int_t)(now_ms() - dss[i].ag[k].moved_ms)));
		json_array_append_new(arr, json_pack("{s:s,s:o}", "root", dss[i].root, "agents", ag));
	}
	json_object_set_new(o, "datastores", arr);
	json_object_set_new(o, "pending", json_integer(ncands));
	s = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	snprintf(path, sizeof(path), "%s/ha-view.json", a->state_dir);
	if (s)
		write_text(path, s);
	free(s);
}

void ha_main(struct agent *a)
{
	agent_log(a, "HA: watching the datastores (capacity %d vCPUs, %lld MiB)", a->cap_vcpus,
		  (long long)a->cap_mem_mib);
	for (;;) {
		char roots[AGENT_MAX_DS][PATH_MAX];
		int n = ha_datastores(a, roots, AGENT_MAX_DS), st;
		pid_t pid;

		while ((pid = waitpid(-1, &st, WNOHANG)) > 0)
			reap(a, pid, st);
		for (unsigned i = 0; i < ncands; i++)
			cands[i].present = false;
		for (int i = 0; i < n; i++) {
			struct ha_ds *ds = ds_get(roots[i]);
			struct dsview d;

			if (!ds || ds_open(roots[i], &d))
				continue;
			if (d.fenced || strcmp(d.root, roots[i])) {
				ds_close(&d);
				continue;       /* a fenced volume refuses our writes */
			}
			rec_publish(a, ds);
			{
				/* watch the other agents' sequence numbers every
				 * tick, so at a death every agent already knows
				 * who is alive and plans the same */
				static struct ha_host scratch[64];

				hosts_room(a, ds, &d, scratch, 64);
			}
			own_list(a, ds, &d);
			collect(a, ds, &d);
			ds_close(&d);
		}
		/* A datastore whose vmfsd died (the mount answers ENOTCONN)
		 * cannot fence: nothing on this host writes to it any more,
		 * but its QEMUs would run on with a dead disk while the
		 * survivors restart them.  Kill them, as a fence would. */
		for (unsigned i = 0; i < ndss; i++) {
			char buf[8];

			if (getxattr(dss[i].root, "user.vmfsd.hosts", buf, 0) >= 0 || errno != ENOTCONN) {
				dss[i].lost = false;
				continue;
			}
			if (dss[i].lost)
				continue;
			dss[i].lost = true;
			json_t *req = json_pack("{s:s,s:s}", "cmd", "kill-volume", "path", dss[i].root);
			json_t *r = kill_volume(a, req, dss[i].root);

			agent_event(a, NULL, "ha.datastore-lost",
				    "vmfsd of %s is gone (ENOTCONN): killed this host's %zu VM(s) on it; "
				    "the survivors restart them once this host's locks are broken",
				    dss[i].root, json_array_size(json_object_get(r, "killed")));
			json_decref(r);
			json_decref(req);
			if (dss[i].recfd >= 0)
				close(dss[i].recfd);
			dss[i].recfd = -1;
		}
		/* gone from every list: started by someone, or handed back */
		for (unsigned i = 0; i < ncands;) {
			if (!cands[i].present && cands[i].child <= 0) {
				cand_drop(&cands[i]);
				continue;
			}
			i++;
		}
		if (!pooling)
			plan_and_start(a);
		pooling = false;
		write_view(a);
		sleep_ms(HA_TICK_MS);
	}
}

/* ------------------------------------------------------ ha status */

static json_t *list_dir_entries(const char *dir)
{
	json_t *arr = json_array();
	DIR *dh = opendir(dir);
	struct dirent *de;

	while (dh && (de = readdir(dh))) {
		char path[PATH_MAX * 2], txt[2048];
		json_error_t je;
		json_t *e;

		if (de->d_name[0] == '.' || !strstr(de->d_name, ".json") || strstr(de->d_name, ".tmp"))
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		if (read_text(path, txt, sizeof(txt)))
			continue;
		e = json_loads(txt, 0, &je);
		if (e)
			json_array_append_new(arr, e);
	}
	if (dh)
		closedir(dh);
	return arr;
}

static int ev_cmp(const void *x, const void *y)
{
	json_int_t a = json_integer_value(json_object_get(*(json_t *const *)x, "time_ms"));
	json_int_t b = json_integer_value(json_object_get(*(json_t *const *)y, "time_ms"));

	return a < b ? -1 : a > b;
}

/* `vmfsctl ha status`: per datastore, the hosts (vmfsd's view: live,
 * dead, in recovery, fenced; the agent seen or not), the protected VMs
 * and where they run, and the recent HA events of every agent */
json_t *ha_status(struct agent *a)
{
	char roots[AGENT_MAX_DS][PATH_MAX], path[PATH_MAX + 64];
	int n = ha_datastores(a, roots, AGENT_MAX_DS);
	json_t *out = json_array(), *view;
	json_error_t je;

	snprintf(path, sizeof(path), "%s/ha-view.json", a->state_dir);
	view = json_load_file(path, 0, &je);
	for (int i = 0; i < n; i++) {
		json_t *h = ds_hosts_read(roots[i]), *hosts = json_array(), *e, *prot = json_array();
		json_t *events = json_array(), *agv = NULL, *dsv;
		size_t k;
		char dir[PATH_MAX + 64];
		DIR *dh;
		struct dirent *de;

		json_array_foreach(json_object_get(view, "datastores"), k, dsv)
			if (!strcmp(json_string_value(json_object_get(dsv, "root")) ?: "", roots[i]))
				agv = json_object_get(dsv, "agents");
		json_array_foreach(json_object_get(h, "hosts"), k, e) {
			json_t *x = json_deep_copy(e);
			const char *hn = json_string_value(json_object_get(e, "host"));
			char ap[PATH_MAX + 128];
			json_t *rec;

			snprintf(ap, sizeof(ap), "%s/.vmfsd/ha/agents/%s", roots[i], hn ? hn : "-");
			rec = hn ? ha_agent_record(ap, NULL) : NULL;
			if (rec) {
				json_t *seen = json_object_get(agv, hn);
				json_int_t un = json_integer_value(json_object_get(seen, "unchanged_ms"));
				bool self = json_is_true(json_object_get(e, "self"));

				json_object_set_new(x, "agent", json_pack(
					"{s:O,s:O,s:O,s:O,s:O,s:b,s:b}", "pid", json_object_get(rec, "pid"),
					"cap_vcpus", json_object_get(rec, "cap_vcpus"), "cap_memory_mib",
					json_object_get(rec, "cap_memory_mib"), "used_vcpus",
					json_object_get(rec, "used_vcpus"), "used_memory_mib",
					json_object_get(rec, "used_memory_mib"), "seen",
					self || (seen && un < HA_AGENT_STALE_MS), "maintenance",
					self ? maint_active(a, NULL)
					     : json_is_true(json_object_get(rec, "maintenance"))));
			}
			json_decref(rec);
			json_array_append_new(hosts, x);
		}
		snprintf(dir, sizeof(dir), "%s/.vmfsd/ha/protected", roots[i]);
		dh = opendir(dir);
		while (dh && (de = readdir(dh))) {
			char hd[PATH_MAX + 128];
			json_t *l;

			if (de->d_name[0] == '.')
				continue;
			snprintf(hd, sizeof(hd), "%s/%s", dir, de->d_name);
			l = list_dir_entries(hd);
			json_array_extend(prot, l);
			json_decref(l);
		}
		if (dh)
			closedir(dh);
		/* snapshots kept too long (docs/vm.md "Snapshot age") */
		{
			size_t k;
			json_t *pe;

			json_array_foreach(prot, k, pe) {
				json_t *sn = snap_summary_rel(roots[i], json_string_value(json_object_get(pe, "vmx")));

				if (sn)
					json_object_set_new(pe, "snapshots", sn);
			}
		}
		snprintf(dir, sizeof(dir), "%s/.vmfsd/ha/failover", roots[i]);
		json_t *fo = list_dir_entries(dir);

		snprintf(dir, sizeof(dir), "%s/.vmfsd/ha/agents", roots[i]);
		dh = opendir(dir);
		while (dh && (de = readdir(dh))) {
			char ap[PATH_MAX + 128];
			json_t *ev = NULL, *rec;

			if (de->d_name[0] == '.' || strchr(de->d_name, '.'))
				continue;
			snprintf(ap, sizeof(ap), "%s/%s", dir, de->d_name);
			rec = ha_agent_record(ap, &ev);
			json_decref(rec);
			if (ev)
				json_array_extend(events, ev);
			json_decref(ev);
		}
		if (dh)
			closedir(dh);
		/* oldest first, the last 30 */
		size_t ne = json_array_size(events);
		json_t **tmp = calloc(ne ? ne : 1, sizeof(*tmp)), *sorted = json_array();

		for (size_t j = 0; j < ne; j++)
			tmp[j] = json_array_get(events, j);
		qsort(tmp, ne, sizeof(*tmp), ev_cmp);
		for (size_t j = ne > 30 ? ne - 30 : 0; j < ne; j++)
			json_array_append(sorted, tmp[j]);
		free(tmp);
		json_decref(events);
		json_array_append_new(out, json_pack("{s:s,s:O?,s:o,s:o,s:o,s:o}", "datastore", roots[i],
						     "self", json_object_get(h, "self"), "hosts", hosts,
						     "protected", prot, "failover", fo, "events", sorted));
		json_decref(h);
	}
	json_decref(view);
	return json_pack("{s:b,s:s,s:o}", "ok", 1, "host", a->host, "datastores", out);
}
