// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * The task registry (docs/vm.md "Tasks"): a long operation (migrate-storage,
 * clone, deploy) is a task with an id, its VM, its destination, a phase
 * and its progress in bytes of data.  The record is a JSON file in the
 * agent's state folder (state-dir/tasks/<id>.json, rewritten atomically as
 * the task goes) and a copy on the source datastore
 * (<mount>/.vmfsd-tasks/<id>.json) so that `vmfsctl tasks` on any host
 * that mounts the datastore sees it.  Progress also goes to the client as
 * extra JSON lines ({"progress":{...}}) before the final reply, which
 * vmfsctl draws as a bar; a client that went away does not stop the task.
 */
#include <dirent.h>
#include <errno.h>
#include <mntent.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#include "storage.h"

/* statfs f_type of every FUSE filesystem (linux/magic.h FUSE_SUPER_MAGIC) */
#define FUSE_MAGIC 0x65735546
/* the local record is rewritten at most this often, the datastore copy
 * less often (each rewrite is a create + rename through the cluster) */
#define TASK_EMIT_MS 250
#define TASK_DS_MS 2000
/* recent tasks kept per host */
#define TASKS_KEEP 50

/* The root of the FUSE mount holding PATH, or "" when it is not on one. */
static void ds_root(const char *path, char *out, size_t size)
{
	char cur[PATH_MAX], up[PATH_MAX + 4];
	struct statfs sf;
	struct stat st, ust;

	out[0] = '\0';
	if (!realpath(path, cur) || statfs(cur, &sf) || sf.f_type != FUSE_MAGIC || stat(cur, &st))
		return;
	for (;;) {
		char *sl = strrchr(cur, '/');

		if (!sl || sl == cur)
			break;
		snprintf(up, sizeof(up), "%.*s", (int)(sl - cur), cur);
		if (stat(up, &ust) || ust.st_dev != st.st_dev)
			break;
		*sl = '\0';
	}
	snprintf(out, size, "%s", cur);
}

static void task_write(struct task *t, bool ds)
{
	char *s = json_dumps(t->j, JSON_COMPACT);
	const char *root = json_string_value(json_object_get(t->j, "datastore"));

	if (!s)
		return;
	write_text(t->file, s);
	if (ds && root && *root) {
		char p[PATH_MAX + 160];

		snprintf(p, sizeof(p), "%s/.vmfsd-tasks", root);
		mkdir(p, 0755);
		snprintf(p, sizeof(p), "%s/.vmfsd-tasks/%s.json", root, t->id);
		write_text(p, s);
	}
	free(s);
}

static void stream(struct task *t)
{
	json_t *o;
	char *s;

	if (t->a->client_fd < 0)
		return;
	o = json_pack("{s:O}", "progress", t->j);
	s = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	if (!s)
		return;
	size_t len = strlen(s);
	s[len] = '\n';
	/* a client that went away (Ctrl-C) must not stop the task */
	if (send(t->a->client_fd, s, len + 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0 && errno != EAGAIN)
		t->a->client_fd = -1;
	free(s);
}

/* keeps the newest TASKS_KEEP records of this host */
static void prune(struct agent *a)
{
	char d[PATH_MAX + 16], p[PATH_MAX + 320];
	struct dirent **nl;
	int n;

	snprintf(d, sizeof(d), "%s/tasks", a->state_dir);
	n = scandir(d, &nl, NULL, alphasort);
	for (int i = 0; i < n; i++) {
		/* ids start with the start time in ms: sorted oldest first */
		if (i < n - TASKS_KEEP && strstr(nl[i]->d_name, ".json")) {
			snprintf(p, sizeof(p), "%s/%s", d, nl[i]->d_name);
			unlink(p);
		}
		free(nl[i]);
	}
	if (n >= 0)
		free(nl);
}

int task_begin(struct task *t, struct agent *a, const char *op, const char *vm, const char *dest,
	       bool live)
{
	char d[PATH_MAX + 16], root[PATH_MAX], bid[40] = "";
	int64_t w = wall_ms();

	memset(t, 0, sizeof(*t));
	t->a = a;
	snprintf(t->id, sizeof(t->id), "%013lld-%s-%d", (long long)w, a->host, (int)getpid());
	snprintf(d, sizeof(d), "%s/tasks", a->state_dir);
	if (mkdir(d, 0700) && errno != EEXIST)
		return -errno;
	prune(a);
	snprintf(t->file, sizeof(t->file), "%s/%s.json", d, t->id);
	ds_root(vm, root, sizeof(root));
	vm_boot_id(bid, sizeof(bid));
	t->j = json_pack("{s:s,s:s,s:s,s:s,s:s,s:b,s:s,s:I,s:I,s:s,s:i,s:s,s:s,s:I,s:I}", "id", t->id,
			 "op", op, "vm", vm, "dest", dest ? dest : "", "host", a->host, "live", live,
			 "state", "running", "started_ms", (json_int_t)w, "updated_ms",
			 (json_int_t)w, "boot_id", bid, "pid", (int)getpid(), "datastore", root,
			 "phase", "preparing", "done", (json_int_t)0, "total", (json_int_t)0);
	if (!t->j)
		return -ENOMEM;
	t->t0 = t->rate_t = now_ms();
	task_write(t, true);
	stream(t);
	return 0;
}

void task_set(struct task *t, const char *key, json_t *val)
{
	if (!t->j) {
		json_decref(val);
		return;
	}
	json_object_set_new(t->j, key, val);
	task_write(t, false);
}

void task_progress(struct task *t, const char *phase, uint64_t done, uint64_t total)
{
	int64_t now = now_ms();
	const char *old = json_string_value(json_object_get(t->j, "phase"));
	bool changed = !old || strcmp(old, phase);
	static int64_t last_ds;

	if (!t->j)
		return;
	/* rate-limited, except a new phase and the end of one */
	if (!changed && done < total && now - t->last_emit < TASK_EMIT_MS)
		return;
	/* the rate over the last second or more, smoothed: an ETA that does
	 * not jump with every sample */
	if (changed || done < t->rate_done) {
		t->rate_t = now;
		t->rate_done = done;
	} else if (now - t->rate_t >= 1000) {
		double r = (double)(done - t->rate_done) * 1000.0 / (double)(now - t->rate_t);

		t->rate = t->rate > 0 ? 0.5 * t->rate + 0.5 * r : r;
		t->rate_t = now;
		t->rate_done = done;
	}
	t->last_emit = now;
	json_object_set_new(t->j, "phase", json_string(phase));
	json_object_set_new(t->j, "done", json_integer((json_int_t)done));
	json_object_set_new(t->j, "total", json_integer((json_int_t)total));
	json_object_set_new(t->j, "percent",
			    json_real(total ? 100.0 * (double)done / (double)total : 0.0));
	json_object_set_new(t->j, "rate", json_integer((json_int_t)t->rate));
	json_object_set_new(t->j, "eta_s", t->rate > 0 && total > done
			    ? json_integer((json_int_t)((double)(total - done) / t->rate))
			    : json_null());
	json_object_set_new(t->j, "elapsed_ms", json_integer((json_int_t)(now - t->t0)));
	json_object_set_new(t->j, "updated_ms", json_integer((json_int_t)wall_ms()));
	task_write(t, changed || now - last_ds >= TASK_DS_MS);
	if (changed || now - last_ds >= TASK_DS_MS)
		last_ds = now;
	stream(t);
}

void task_end(struct task *t, json_t *reply)
{
	bool ok = json_is_true(json_object_get(reply, "ok"));
	const char *msg = json_string_value(json_object_get(reply, ok ? "message" : "error"));

	if (!t->j)
		return;
	json_object_set_new(t->j, "state", json_string(ok ? "done" : "failed"));
	json_object_set_new(t->j, "message", json_string(msg ? msg : ""));
	json_object_set_new(t->j, "elapsed_ms", json_integer((json_int_t)(now_ms() - t->t0)));
	json_object_set_new(t->j, "updated_ms", json_integer((json_int_t)wall_ms()));
	json_object_del(t->j, "eta_s");
	task_write(t, true);
	json_object_set_new(reply, "task", json_string(t->id));
	json_decref(t->j);
	t->j = NULL;
}

static void load_dir(const char *dir, json_t *byid)
{
	DIR *d = opendir(dir);
	struct dirent *de;

	while (d && (de = readdir(d))) {
		char p[PATH_MAX + 300];
		json_t *j;

		if (!strstr(de->d_name, ".json") || strstr(de->d_name, ".tmp"))
			continue;
		snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
		j = json_load_file(p, 0, NULL);
		if (json_is_object(j) && json_is_string(json_object_get(j, "id")))
			json_object_set(byid, json_string_value(json_object_get(j, "id")), j);
		json_decref(j);
	}
	if (d)
		closedir(d);
}

static int by_start(const void *x, const void *y)
{
	json_int_t a = json_integer_value(json_object_get(*(json_t *const *)x, "started_ms"));
	json_int_t b = json_integer_value(json_object_get(*(json_t *const *)y, "started_ms"));

	return a < b ? -1 : a > b;
}

/* A running task of this host whose request process is gone was cut short
 * by an agent or host crash. */
static bool task_dead(struct agent *a, json_t *t)
{
	char bid[40] = "";

	if (strcmp(json_string_value(json_object_get(t, "state")) ?: "", "running") ||
	    strcmp(json_string_value(json_object_get(t, "host")) ?: "", a->host))
		return false;
	vm_boot_id(bid, sizeof(bid));
	return strcmp(json_string_value(json_object_get(t, "boot_id")) ?: "", bid) ||
	       !vm_pid_alive((pid_t)json_integer_value(json_object_get(t, "pid")));
}

json_t *tasks_list(struct agent *a, json_t *req)
{
	char d[PATH_MAX + 16];
	json_t *byid = json_object(), *arr = json_array(), *v;
	const char *k;
	FILE *m;
	struct mntent *me;
	size_t n = 0;
	json_t **all;

	(void)req;
	snprintf(d, sizeof(d), "%s/tasks", a->state_dir);
	load_dir(d, byid);
	/* every vmfsd datastore mounted here (the FUSE subtype names it) */
	m = setmntent("/proc/self/mounts", "r");
	while (m && (me = getmntent(m))) {
		char p[PATH_MAX + 32];

		if (strcmp(me->mnt_type, "fuse.vmfsd"))
			continue;
		snprintf(p, sizeof(p), "%s/.vmfsd-tasks", me->mnt_dir);
		load_dir(p, byid);
	}
	if (m)
		endmntent(m);
	all = calloc(json_object_size(byid) + 1, sizeof(*all));
	json_object_foreach(byid, k, v) {
		if (task_dead(a, v))
			json_object_set_new(v, "state", json_string("interrupted"));
		all[n++] = v;
	}
	qsort(all, n, sizeof(*all), by_start);
	for (size_t i = 0; i < n; i++)
		json_array_append(arr, all[i]);
	free(all);
	json_decref(byid);
	return json_pack("{s:b,s:s,s:o}", "ok", 1, "host", a->host, "tasks", arr);
}

void tasks_interrupted(struct agent *a, void (*fn)(struct agent *a, json_t *task))
{
	char d[PATH_MAX + 16];
	json_t *byid = json_object(), *v;
	const char *k;

	snprintf(d, sizeof(d), "%s/tasks", a->state_dir);
	load_dir(d, byid);
	json_object_foreach(byid, k, v) {
		struct task t = {.a = a};

		if (!task_dead(a, v))
			continue;
		fn(a, v);
		/* record it on the datastore copy too */
		snprintf(t.id, sizeof(t.id), "%s", k);
		snprintf(t.file, sizeof(t.file), "%s/%s.json", d, k);
		t.j = json_incref(v);
		json_object_set_new(t.j, "state", json_string("interrupted"));
		json_object_set_new(t.j, "updated_ms", json_integer((json_int_t)wall_ms()));
		task_write(&t, true);
		json_decref(t.j);
	}
	json_decref(byid);
}
