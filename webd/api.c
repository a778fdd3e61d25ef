// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * The JSON API of vmfs-webd (docs/webui.md lists every route).  Resources
 * are the agent's answers (agent-info, ha-status, datastores, list, info,
 * tasks, events) with what a browser needs added: sizes in GB and GiB,
 * each VM's datastore and folder, the hosts of the datastores as one list.
 * Actions are agent requests built from the JSON body, run as jobs: a
 * thread per action sends the request and keeps its progress lines, so
 * the UI shows a progress bar for any of them; ?wait=1 answers with the
 * agent's reply instead of the job.  A VM is named in URLs by its ID (or
 * name) as `vmfsctl list` shows it and the agent resolves it; datastores
 * by label or UUID; paths in bodies are relative to a datastore and
 * resolved inside it (files.c).  Nothing here knows how to start a VM.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "vm/agentc.h"
#include "webd/webd.h"

#define COOKIE "vmfs_session"
#define MAX_JOBS 64
/* what the console view fetches at most per poll */
#define CONSOLE_CHUNK (64 * 1024)

/* ------------------------------------------------------------ the agent */

static int64_t wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

json_t *api_agent(struct webd *w, json_t *req)
{
	char msg[PATH_MAX + 128];
	json_t *reply;
	int rc = agentc_call(w->agent, req, NULL, NULL, &reply, msg, sizeof(msg));

	json_decref(req);
	if (rc)
		return json_pack("{s:b,s:s,s:i,s:b}", "ok", 0, "error", msg, "errno", -rc, "agent_down", 1);
	return reply;
}

static unsigned agent_status(json_t *r)
{
	if (json_is_true(json_object_get(r, "ok")))
		return MHD_HTTP_OK;
	if (json_is_true(json_object_get(r, "agent_down")))
		return MHD_HTTP_BAD_GATEWAY;
	switch (json_integer_value(json_object_get(r, "errno"))) {
	case ENOENT:
		return MHD_HTTP_NOT_FOUND;
	case EINVAL:
	case E2BIG:
	case ERANGE:
	case ENAMETOOLONG:
		return MHD_HTTP_BAD_REQUEST;
	case EACCES:
	case EPERM:
		return MHD_HTTP_FORBIDDEN;
	case ENOSPC:
		return MHD_HTTP_INSUFFICIENT_STORAGE;
	default:
		return MHD_HTTP_CONFLICT;   /* refused: running, locked, in maintenance */
	}
}

/* KEY's byte count also as KEY_gb and KEY_gib, two decimals */
static void add_units(json_t *o, const char *key, json_int_t v)
{
	char k[64];

	snprintf(k, sizeof(k), "%s_gb", key);
	json_object_set_new(o, k, json_real(round((double)v / 1e7) / 100));
	snprintf(k, sizeof(k), "%s_gib", key);
	json_object_set_new(o, k, json_real(round((double)v / (1 << 30) * 100) / 100));
}

static json_int_t jint(json_t *o, const char *k)
{
	return json_integer_value(json_object_get(o, k));
}

static const char *jstr(json_t *o, const char *k)
{
	return json_string_value(json_object_get(o, k));
}

static void datastore_units(json_t *ds)
{
	json_int_t cap = jint(ds, "capacity"), free_ = jint(ds, "free");

	json_object_set_new(ds, "used", json_integer(cap - free_));
	add_units(ds, "capacity", cap);
	add_units(ds, "free", free_);
	add_units(ds, "used", cap - free_);
	add_units(ds, "provisioned", jint(ds, "provisioned"));
	add_units(ds, "vm_disks_used", jint(ds, "vm_disks_used"));
	json_object_set_new(ds, "name", json_string(jstr(ds, "label") && *jstr(ds, "label")
						    ? jstr(ds, "label") : jstr(ds, "uuid")));
}

int api_datastore(struct webd *w, const char *name, char *root, size_t size)
{
	json_t *r = api_agent(w, json_pack("{s:s}", "cmd", "datastores")), *ds;
	int rc = -ENOENT;
	size_t i;

	json_array_foreach(json_object_get(r, "datastores"), i, ds) {
		const char *label = jstr(ds, "label"), *uuid = jstr(ds, "uuid");

		if ((label && *label && !strcmp(label, name)) || (uuid && !strcmp(uuid, name))) {
			rc = realpath(jstr(ds, "path"), root) && strlen(root) < size ? 0 : -ENOENT;
			break;
		}
	}
	json_decref(r);
	return rc;
}

/* the datastore of absolute PATH among DSS (an agent list): its name and
 * PATH relative to it */
static json_t *locate(json_t *dss, const char *path, const char **rel)
{
	json_t *ds;
	size_t i;

	json_array_foreach(dss, i, ds) {
		const char *root = jstr(ds, "path");
		size_t n = root ? strlen(root) : 0;

		if (n && !strncmp(path, root, n) && (path[n] == '/' || !path[n])) {
			*rel = path + n + (path[n] == '/');
			return ds;
		}
	}
	*rel = NULL;
	return NULL;
}

static void vm_place(json_t *vm, json_t *dss)
{
	const char *path = jstr(vm, "path"), *rel;
	json_t *ds = path ? locate(dss, path, &rel) : NULL;

	if (ds) {
		const char *slash = strrchr(rel, '/');

		json_object_set_new(vm, "datastore", json_string(jstr(ds, "label") && *jstr(ds, "label")
								 ? jstr(ds, "label") : jstr(ds, "uuid")));
		json_object_set_new(vm, "folder", json_stringn(rel, slash ? (size_t)(slash - rel) : 0));
		json_object_set_new(vm, "rel", json_string(rel));
	}
}

/* ------------------------------------------------------------ jobs */

struct job {
	char id[32];
	char op[32];
	char target[PATH_MAX];
	char addr[64];
	int64_t started, ended;       /* wall ms; ended 0 while running */
	json_t *progress;             /* the last progress line's task */
	json_t *reply;
	json_t *req;
	struct webd *w;
	unsigned seq;
	int waiters;                  /* requests waiting for it (?wait=1) */
};

static pthread_mutex_t jobs_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t jobs_cond = PTHREAD_COND_INITIALIZER;
static struct job *jobs[MAX_JOBS];
static unsigned job_seq;

static json_t *job_json(const struct job *j)
{
	json_t *o = json_pack("{s:s,s:s,s:s,s:I,s:s}", "id", j->id, "op", j->op, "target", j->target,
			      "started", (json_int_t)j->started, "state",
			      !j->ended ? "running" : json_is_true(json_object_get(j->reply, "ok"))
			      ? "done" : "failed");

	if (j->ended)
		json_object_set_new(o, "ended", json_integer(j->ended));
	if (j->progress)
		json_object_set(o, "progress", j->progress);
	if (j->reply)
		json_object_set(o, "result", j->reply);
	return o;
}

static void job_progress(json_t *task, void *ctx)
{
	struct job *j = ctx;

	pthread_mutex_lock(&jobs_lock);
	json_decref(j->progress);
	j->progress = json_deep_copy(task);
	pthread_mutex_unlock(&jobs_lock);
}

static void *job_run(void *arg)
{
	struct job *j = arg;
	char msg[PATH_MAX + 128];
	json_t *reply;
	int rc = agentc_call(j->w->agent, j->req, job_progress, j, &reply, msg, sizeof(msg));

	if (rc)
		reply = json_pack("{s:b,s:s,s:i,s:b}", "ok", 0, "error", msg, "errno", -rc, "agent_down", 1);
	webd_log("%s %s (from %s): %s", j->op, j->target, j->addr,
		 json_is_true(json_object_get(reply, "ok")) ? "done"
		 : jstr(reply, "error") ? jstr(reply, "error") : "failed");
	pthread_mutex_lock(&jobs_lock);
	j->reply = reply;
	j->ended = wall_ms();
	if (!j->ended)
		j->ended = 1;
	pthread_cond_broadcast(&jobs_cond);
	pthread_mutex_unlock(&jobs_lock);
	return NULL;
}

static void job_free(struct job *j)
{
	json_decref(j->progress);
	json_decref(j->reply);
	json_decref(j->req);
	free(j);
}

/* starts REQ (stolen) as a job; answers 202 with it, or with ?wait=1 the
 * agent's reply when it is done */
static enum MHD_Result job_start(struct hreq *h, const char *op, const char *target, json_t *req)
{
	struct job *j = calloc(1, sizeof(*j));
	bool wait = webd_arg(h, "wait") != NULL;
	pthread_attr_t at;
	pthread_t t;
	int slot = -1;
	json_t *o;

	if (!j) {
		json_decref(req);
		return MHD_NO;
	}
	pthread_mutex_lock(&jobs_lock);
	/* a free slot, else the oldest finished job's that nobody waits for */
	for (int i = 0; i < MAX_JOBS; i++) {
		if (!jobs[i]) {
			slot = i;
			break;
		}
		if (jobs[i]->ended && !jobs[i]->waiters && (slot < 0 || jobs[i]->seq < jobs[slot]->seq))
			slot = i;
	}
	if (slot < 0) {
		pthread_mutex_unlock(&jobs_lock);
		json_decref(req);
		free(j);
		return webd_error(h, MHD_HTTP_SERVICE_UNAVAILABLE, "%d actions running: try again later",
				  MAX_JOBS);
	}
	if (jobs[slot])
		job_free(jobs[slot]);
	j->w = h->w;
	j->req = req;
	j->seq = ++job_seq;
	j->started = wall_ms();
	snprintf(j->id, sizeof(j->id), "%lld-%u", (long long)j->started, j->seq);
	snprintf(j->op, sizeof(j->op), "%s", op);
	snprintf(j->target, sizeof(j->target), "%s", target);
	snprintf(j->addr, sizeof(j->addr), "%s", h->addr);
	jobs[slot] = j;
	pthread_attr_init(&at);
	pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
	if (pthread_create(&t, &at, job_run, j)) {
		j->reply = json_pack("{s:b,s:s}", "ok", 0, "error", "cannot start a thread");
		j->ended = wall_ms();
	}
	pthread_attr_destroy(&at);
	if (!wait) {
		o = json_pack("{s:b,s:o}", "ok", 1, "job", job_json(j));
		pthread_mutex_unlock(&jobs_lock);
		return webd_json(h, MHD_HTTP_ACCEPTED, o);
	}
	/* J is not reused while we wait: a slot goes to a new job only when
	 * its job ended and nobody waits for it */
	j->waiters++;
	while (!j->ended)
		pthread_cond_wait(&jobs_cond, &jobs_lock);
	o = json_deep_copy(j->reply);
	j->waiters--;
	pthread_mutex_unlock(&jobs_lock);
	return webd_json(h, agent_status(o), o);
}

static enum MHD_Result jobs_get(struct hreq *h, const char *id)
{
	json_t *list = json_array(), *found = NULL;

	pthread_mutex_lock(&jobs_lock);
	for (unsigned s = job_seq; s > 0 && s + MAX_JOBS > job_seq; s--)
		for (int i = 0; i < MAX_JOBS; i++)
			if (jobs[i] && jobs[i]->seq == s) {
				if (id && !strcmp(jobs[i]->id, id))
					found = job_json(jobs[i]);
				else if (!id)
					json_array_append_new(list, job_json(jobs[i]));
			}
	pthread_mutex_unlock(&jobs_lock);
	if (id) {
		json_decref(list);
		if (!found)
			return webd_error(h, MHD_HTTP_NOT_FOUND, "no job %s", id);
		return webd_json(h, MHD_HTTP_OK, json_pack("{s:b,s:o}", "ok", 1, "job", found));
	}
	return webd_json(h, MHD_HTTP_OK, json_pack("{s:b,s:o}", "ok", 1, "jobs", list));
}

/* ------------------------------------------------------------ bodies */

static json_t *body_json(struct hreq *h)
{
	json_t *o = h->len ? json_loadb(h->body, h->len, 0, NULL) : json_object();

	if (!json_is_object(o)) {
		json_decref(o);
		return NULL;
	}
	return o;
}

/* ROOT/FOLDER[/NAME] for a destination: FOLDER a datastore-relative
 * folder ("" its root), each component a plain name */
static int dest_path(struct webd *w, json_t *b, bool need_name, char *out, size_t size, char *msg,
		     size_t msize)
{
	const char *ds = jstr(b, "datastore"), *folder = jstr(b, "folder"), *name = jstr(b, "name");
	char root[PATH_MAX], f[PATH_MAX];
	size_t n;

	if (!ds || api_datastore(w, ds, root, sizeof(root))) {
		snprintf(msg, msize, "no datastore '%s' on this host", ds ? ds : "(none given)");
		return -ENOENT;
	}
	snprintf(f, sizeof(f), "%s", folder ? folder : "");
	for (char *save = NULL, *p = strtok_r(f, "/", &save); p; p = strtok_r(NULL, "/", &save))
		if (!files_name_ok(p)) {
			snprintf(msg, msize, "folder '%s': '%s' is not a plain name", folder, p);
			return -EINVAL;
		}
	if ((need_name && !name) || (name && !files_name_ok(name))) {
		snprintf(msg, msize, "name '%s': give a plain name (no '/', not starting with '.')",
			 name ? name : "");
		return -EINVAL;
	}
	n = (size_t)snprintf(out, size, "%s%s%s%s%s", root, folder && *folder ? "/" : "",
			     folder ? folder : "", name ? "/" : "", name ? name : "");
	if (n >= size) {
		snprintf(msg, msize, "path too long");
		return -ENAMETOOLONG;
	}
	/* the folder must exist inside the datastore (the kernel checks
	 * nothing leads out of it) */
	int fd = files_open(root, folder ? folder : "", O_PATH | O_DIRECTORY, 0);

	if (fd < 0) {
		snprintf(msg, msize, "folder '%s' on %s: %s", folder ? folder : "", ds, strerror(-fd));
		return fd;
	}
	close(fd);
	return 0;
}

/* a positive integer member, bounded */
static int body_int(json_t *b, const char *k, json_int_t lo, json_int_t hi, json_int_t *v, char *msg,
		    size_t msize)
{
	json_t *x = json_object_get(b, k);

	if (!x)
		return 1;
	if (!json_is_integer(x) || json_integer_value(x) < lo || json_integer_value(x) > hi) {
		snprintf(msg, msize, "%s: an integer %lld..%lld", k, (long long)lo, (long long)hi);
		return -EINVAL;
	}
	*v = json_integer_value(x);
	return 0;
}

static int copy_str(json_t *b, json_t *req, const char *k, const char *as, const char *const *allowed,
		    char *msg, size_t msize)
{
	const char *v = jstr(b, k);

	if (!json_object_get(b, k))
		return 0;
	if (!v || strlen(v) > 200) {
		snprintf(msg, msize, "%s: a string", k);
		return -EINVAL;
	}
	if (allowed) {
		size_t i;

		for (i = 0; allowed[i] && strcmp(allowed[i], v); i++)
			;
		if (!allowed[i]) {
			snprintf(msg, msize, "%s: '%s' is not allowed", k, v);
			return -EINVAL;
		}
	}
	json_object_set_new(req, as, json_string(v));
	return 0;
}

static const char *const provisionings[] = {"thin", "thick", "eagerzeroed", NULL};

/* a file of the VM's own datastore (an ISO, a kernel): absolute, inside */
static int ds_file(json_t *b, json_t *req, const char *k, const char *root, char *msg, size_t msize)
{
	const char *rel = jstr(b, k);
	char abs[PATH_MAX];
	int rc;

	if (!rel || !*rel)
		return 0;
	rc = files_resolve(root, rel, abs, sizeof(abs));
	if (rc) {
		snprintf(msg, msize, "%s '%s': %s", k, rel, rc == -EXDEV || rc == -ELOOP
			 ? "leaves the datastore" : rc == -EINVAL ? "not a file" : strerror(-rc));
		return rc;
	}
	json_object_set_new(req, k, json_string(abs));
	return 0;
}

/* POST /api/vms: the wizard's VM */
static enum MHD_Result vm_create(struct hreq *h, json_t *b)
{
	static const char *const nets[] = {"nat", "none", NULL};
	static const char *const accels[] = {"auto", "kvm", "tcg", NULL};
	char path[PATH_MAX], root[PATH_MAX], msg[PATH_MAX + 128] = "";
	json_int_t cpus = 0, mem = 0, disk = 0;
	json_t *req = json_pack("{s:s}", "cmd", "create");
	int rc;

	rc = dest_path(h->w, b, true, path, sizeof(path), msg, sizeof(msg));
	if (!rc)
		rc = api_datastore(h->w, jstr(b, "datastore"), root, sizeof(root));
	/* body_int: 1 when the member is missing, and all three are needed */
	if (!rc && (body_int(b, "cpus", 1, 256, &cpus, msg, sizeof(msg)) ||
		    body_int(b, "memory_mib", 16, 16 << 20, &mem, msg, sizeof(msg)) ||
		    body_int(b, "disk_mib", 1, 64LL << 20, &disk, msg, sizeof(msg)))) {
		if (!msg[0])
			snprintf(msg, sizeof(msg), "cpus, memory_mib and disk_mib are needed");
		rc = -EINVAL;
	}
	if (!rc)
		rc = copy_str(b, req, "provisioning", "provisioning", provisionings, msg, sizeof(msg));
	if (!rc)
		rc = copy_str(b, req, "guest_os", "guest_os", NULL, msg, sizeof(msg));
	if (!rc)
		rc = copy_str(b, req, "net", "net", nets, msg, sizeof(msg));
	if (!rc)
		rc = copy_str(b, req, "accel", "accel", accels, msg, sizeof(msg));
	if (!rc)
		rc = copy_str(b, req, "append", "append", NULL, msg, sizeof(msg));
	if (!rc)
		rc = ds_file(b, req, "iso", root, msg, sizeof(msg));
	if (!rc)
		rc = ds_file(b, req, "kernel", root, msg, sizeof(msg));
	if (!rc)
		rc = ds_file(b, req, "initrd", root, msg, sizeof(msg));
	if (rc) {
		json_decref(req);
		return webd_error(h, rc == -ENOENT ? MHD_HTTP_NOT_FOUND : MHD_HTTP_BAD_REQUEST, "%s", msg);
	}
	json_object_set_new(req, "path", json_string(path));
	json_object_set_new(req, "cpus", json_integer(cpus));
	json_object_set_new(req, "memory", json_integer(mem));
	json_object_set_new(req, "disk", json_integer(disk << 20));
	return job_start(h, "create", path, req);
}

/* ------------------------------------------------------------ VM actions */

/* the extra members of an action's request, from its body */
typedef int (*action_fn)(struct webd *w, json_t *b, json_t *req, char *msg, size_t msize);

static int a_power_on(struct webd *w, json_t *b, json_t *req, char *msg, size_t msize)
{
	(void)w;
	(void)msg;
	(void)msize;
	if (json_is_true(json_object_get(b, "force")))
		json_object_set_new(req, "force", json_true());
	return 0;
}

static int a_shutdown(struct webd *w, json_t *b, json_t *req, char *msg, size_t msize)
{
	json_int_t t;
	int rc = body_int(b, "timeout", 1, 86400, &t, msg, msize);

	(void)w;
	if (!rc)
		json_object_set_new(req, "timeout", json_integer(t));
	return rc < 0 ? rc : 0;
}

static int a_migrate(struct webd *w, json_t *b, json_t *req, char *msg, size_t msize)
{
	json_int_t v;
	int rc;

	(void)w;
	if (!jstr(b, "host")) {
		snprintf(msg, msize, "host: the destination host is needed");
		return -EINVAL;
	}
	json_object_set_new(req, "host", json_string(jstr(b, "host")));
	rc = body_int(b, "bandwidth_mib", 1, 1000000, &v, msg, msize);
	if (rc < 0)
		return rc;
	if (!rc)
		json_object_set_new(req, "bandwidth", json_integer(v << 20));
	rc = body_int(b, "downtime_ms", 1, 60000, &v, msg, msize);
	if (rc < 0)
		return rc;
	if (!rc)
		json_object_set_new(req, "downtime_ms", json_integer(v));
	return 0;
}

/* migrate-storage and clone: {datastore, folder, name?, provisioning?} */
static int a_dest(struct webd *w, json_t *b, json_t *req, char *msg, size_t msize)
{
	char dest[PATH_MAX];
	int rc = dest_path(w, b, false, dest, sizeof(dest), msg, msize);

	if (!rc)
		rc = copy_str(b, req, "provisioning", "provisioning", provisionings, msg, msize);
	if (!rc)
		json_object_set_new(req, "dest", json_string(dest));
	return rc;
}

/* migrate-storage: a_dest's, and consolidate? (merge the snapshots first) */
static int a_move(struct webd *w, json_t *b, json_t *req, char *msg, size_t msize)
{
	int rc = a_dest(w, b, req, msg, msize);

	if (!rc && json_is_true(json_object_get(b, "consolidate")))
		json_object_set_new(req, "consolidate", json_true());
	return rc;
}

/* clone: a_dest's, and snapshot? (the disks as that snapshot froze them) */
static int a_clone(struct webd *w, json_t *b, json_t *req, char *msg, size_t msize)
{
	int rc = a_dest(w, b, req, msg, msize);

	return rc ? rc : copy_str(b, req, "snapshot", "snapshot", NULL, msg, msize);
}

static int a_template(struct webd *w, json_t *b, json_t *req, char *msg, size_t msize)
{
	(void)w;
	(void)msg;
	(void)msize;
	if (json_is_true(json_object_get(b, "unset")))
		json_object_set_new(req, "unset", json_true());
	return 0;
}

/* deploy: a_dest's destination, plus the new VM's name, CPUs, memory */
static int a_deploy(struct webd *w, json_t *b, json_t *req, char *msg, size_t msize)
{
	json_int_t v;
	int rc = a_dest(w, b, req, msg, msize);

	if (!rc)
		rc = copy_str(b, req, "vm_name", "name", NULL, msg, msize);
	if (!rc && (rc = body_int(b, "cpus", 1, 256, &v, msg, msize)) == 0)
		json_object_set_new(req, "cpus", json_integer(v));
	if (rc >= 0 && (rc = body_int(b, "memory_mib", 16, 16 << 20, &v, msg, msize)) == 0)
		json_object_set_new(req, "memory", json_integer(v));
	return rc < 0 ? rc : 0;
}

/* snapshot: {action: create|list|revert|delete, name?, description?,
 * memory?, all?}: vmfsctl snapshot's request; the agent checks the rest */
static int a_snapshot(struct webd *w, json_t *b, json_t *req, char *msg, size_t msize)
{
	static const char *const actions[] = {"create", "list", "revert", "delete", NULL};
	static const char *const flags[] = {"memory", "all"};
	int rc;

	(void)w;
	if (!jstr(b, "action")) {
		snprintf(msg, msize, "action: create, list, revert or delete");
		return -EINVAL;
	}
	rc = copy_str(b, req, "action", "action", actions, msg, msize);
	if (!rc)
		rc = copy_str(b, req, "name", "name", NULL, msg, msize);
	if (!rc)
		rc = copy_str(b, req, "description", "description", NULL, msg, msize);
	for (size_t i = 0; !rc && i < sizeof(flags) / sizeof(flags[0]); i++)
		if (json_is_true(json_object_get(b, flags[i])))
			json_object_set_new(req, flags[i], json_true());
	return rc;
}

/* export: {datastore, folder, name}: NAME.ova is one file, another name a
 * new folder, inside the datastore */
static int a_export(struct webd *w, json_t *b, json_t *req, char *msg, size_t msize)
{
	char dest[PATH_MAX];
	int rc = dest_path(w, b, true, dest, sizeof(dest), msg, msize);

	if (!rc)
		json_object_set_new(req, "dest", json_string(dest));
	return rc;
}

/* POST /api/vms/import: {datastore, package, folder?, name?,
 * provisioning?}: an OVF or OVA package on the datastore (uploaded there)
 * becomes a new VM in FOLDER of the same datastore */
static enum MHD_Result vm_import(struct hreq *h, json_t *b)
{
	char root[PATH_MAX], pkg[PATH_MAX], dest[PATH_MAX], msg[PATH_MAX + 128] = "";
	const char *ds = jstr(b, "datastore"), *p = jstr(b, "package");
	json_t *req, *where;
	int rc, fd;

	if (!ds || !p || api_datastore(h->w, ds, root, sizeof(root)))
		return webd_error(h, MHD_HTTP_NOT_FOUND, "import: {datastore, package, folder, name, "
				  "provisioning}: no package '%s' on datastore '%s'", p ? p : "",
				  ds ? ds : "");
	fd = files_open(root, p, O_PATH, 0);
	if (fd < 0)
		return webd_error(h, fd == -EXDEV || fd == -ELOOP ? MHD_HTTP_FORBIDDEN : MHD_HTTP_NOT_FOUND,
				  "import: package %s: %s", p, strerror(-fd));
	close(fd);
	snprintf(pkg, sizeof(pkg), "%s/%s", root, p);
	where = json_pack("{s:s,s:s?}", "datastore", ds, "folder", jstr(b, "folder"));
	rc = dest_path(h->w, where, false, dest, sizeof(dest), msg, sizeof(msg));
	json_decref(where);
	req = json_pack("{s:s,s:s,s:s}", "cmd", "import", "path", pkg, "dest", dest);
	if (!rc)
		rc = copy_str(b, req, "name", "name", NULL, msg, sizeof(msg));
	if (!rc)
		rc = copy_str(b, req, "provisioning", "provisioning", provisionings, msg, sizeof(msg));
	if (rc) {
		json_decref(req);
		return webd_error(h, rc == -ENOENT ? MHD_HTTP_NOT_FOUND : MHD_HTTP_BAD_REQUEST, "%s", msg);
	}
	return job_start(h, "import", pkg, req);
}

/* POST /api/vms/{vm}/{action}: every VM operation of vmfsctl, by the
 * agent command of the same name */
static const struct {
	const char *name;
	action_fn fn;
} vm_actions[] = {
	{"power-on", a_power_on},
	{"shutdown", a_shutdown},
	{"power-off", NULL},
	{"reset", NULL},
	{"suspend", NULL},
	{"resume", NULL},
	{"destroy", NULL},
	{"unregister", NULL},
	{"migrate", a_migrate},
	{"migrate-storage", a_move},
	{"clone", a_clone},
	{"template", a_template},
	{"deploy", a_deploy},
	{"snapshot", a_snapshot},
	{"export", a_export},
};

/* a VM as the URL names it: its ID or name (what `list` shows); never a
 * path, so the agent resolves it among the VMs it knows */
static bool vm_ref_ok(const char *s)
{
	return *s && strlen(s) <= 200 && s[0] != '.' &&
	       strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-+ ") ==
	       strlen(s);
}

static enum MHD_Result vm_action(struct hreq *h, const char *vm, const char *action, json_t *b)
{
	char msg[PATH_MAX + 128] = "";
	json_t *req;
	size_t i;

	for (i = 0; i < sizeof(vm_actions) / sizeof(vm_actions[0]); i++)
		if (!strcmp(vm_actions[i].name, action))
			break;
	if (i == sizeof(vm_actions) / sizeof(vm_actions[0]))
		return webd_error(h, MHD_HTTP_NOT_FOUND, "no VM action '%s'", action);
	req = json_pack("{s:s,s:s}", "cmd", action, "path", vm);
	if (vm_actions[i].fn) {
		int rc = vm_actions[i].fn(h->w, b, req, msg, sizeof(msg));

		if (rc) {
			json_decref(req);
			return webd_error(h, rc == -ENOENT ? MHD_HTTP_NOT_FOUND : MHD_HTTP_BAD_REQUEST, "%s",
					  msg);
		}
	}
	return job_start(h, action, vm, req);
}

/* the VM's console: its serial log on the datastore from OFFSET */
static enum MHD_Result vm_console(struct hreq *h, const char *vm)
{
	json_t *info = api_agent(h->w, json_pack("{s:s,s:s}", "cmd", "info", "path", vm));
	const char *off_s = webd_arg(h, "offset"), *folder = jstr(info, "path"), *log = jstr(info, "log");
	long long off = off_s ? atoll(off_s) : -1, start;
	char buf[CONSOLE_CHUNK];
	struct stat st;
	ssize_t n = 0;
	int fd;

	if (!json_is_true(json_object_get(info, "ok")) || !folder || !log)
		return webd_json(h, agent_status(info), info);
	fd = files_open(folder, log, O_RDONLY, 0);
	if (fd < 0 || fstat(fd, &st)) {
		json_decref(info);
		if (fd >= 0)
			close(fd);
		return webd_json(h, MHD_HTTP_OK, json_pack("{s:b,s:s,s:I,s:I,s:I}", "ok", 1, "text", "",
						   "start", (json_int_t)0, "offset", (json_int_t)0,
						   "size", (json_int_t)0));
	}
	/* a new log (rotated at power-on) is shorter than where we were */
	start = off < 0 || off > st.st_size ? (st.st_size > CONSOLE_CHUNK ? st.st_size - CONSOLE_CHUNK : 0)
		: off;
	if (start < st.st_size)
		n = pread(fd, buf, sizeof(buf), start);
	close(fd);
	if (n < 0)
		n = 0;
	/* text for a JSON string: printable ASCII, newlines and tabs */
	for (ssize_t i = 0; i < n; i++)
		if (buf[i] != '\n' && buf[i] != '\t' && ((unsigned char)buf[i] < 0x20 || (unsigned char)buf[i] >= 0x7f))
			buf[i] = buf[i] == '\r' ? ' ' : '?';
	json_t *o = json_pack("{s:b,s:s%,s:I,s:I,s:I,s:s}", "ok", 1, "text", buf, (size_t)n, "start",
			      (json_int_t)start, "offset", (json_int_t)(start + n), "size",
			      (json_int_t)st.st_size, "state", jstr(info, "state") ? jstr(info, "state") : "");

	json_decref(info);
	return webd_json(h, MHD_HTTP_OK, o);
}

/* ------------------------------------------------------------ resources */

static enum MHD_Result get_datastores(struct hreq *h)
{
	json_t *r = api_agent(h->w, json_pack("{s:s}", "cmd", "datastores")), *ds;
	size_t i;

	json_array_foreach(json_object_get(r, "datastores"), i, ds)
		datastore_units(ds);
	return webd_json(h, agent_status(r), r);
}

static enum MHD_Result get_vms(struct hreq *h)
{
	json_t *r = api_agent(h->w, json_pack("{s:s}", "cmd", "list")), *vm, *ds;
	size_t i;

	json_array_foreach(json_object_get(r, "datastores"), i, ds)
		datastore_units(ds);
	json_array_foreach(json_object_get(r, "vms"), i, vm)
		vm_place(vm, json_object_get(r, "datastores"));
	return webd_json(h, agent_status(r), r);
}

static enum MHD_Result get_vm(struct hreq *h, const char *vm)
{
	json_t *r = api_agent(h->w, json_pack("{s:s,s:s}", "cmd", "info", "path", vm)), *d;
	json_t *dss = api_agent(h->w, json_pack("{s:s}", "cmd", "datastores"));
	size_t i;

	json_array_foreach(json_object_get(r, "disks"), i, d) {
		add_units(d, "size", jint(d, "size"));
		add_units(d, "allocated", jint(d, "allocated"));
	}
	vm_place(r, json_object_get(dss, "datastores"));
	json_decref(dss);
	return webd_json(h, agent_status(r), r);
}

/* every host of this host's datastores, once, from the HA view */
static enum MHD_Result get_hosts(struct hreq *h)
{
	json_t *r = api_agent(h->w, json_pack("{s:s}", "cmd", "ha-status")), *ds, *x;
	json_t *hosts = json_object(), *list = json_array();
	const char *k;
	size_t i, j;

	if (!json_is_true(json_object_get(r, "ok")))
		return webd_json(h, agent_status(r), r);
	json_array_foreach(json_object_get(r, "datastores"), i, ds) {
		json_array_foreach(json_object_get(ds, "hosts"), j, x) {
			const char *name = jstr(x, "host");
			json_t *e;

			if (!name)
				continue;
			e = json_object_get(hosts, name);
			if (!e) {
				e = json_pack("{s:s,s:s,s:b,s:[]}", "name", name, "state",
					      jstr(x, "state") ? jstr(x, "state") : "unknown", "self",
					      json_is_true(json_object_get(x, "self")), "datastores");
				if (json_object_get(x, "agent"))
					json_object_set(e, "agent", json_object_get(x, "agent"));
				json_object_set_new(hosts, name, e);
			}
			json_array_append_new(json_object_get(e, "datastores"),
					      json_string(jstr(ds, "datastore")));
		}
	}
	json_object_foreach(hosts, k, x)
		json_array_append(list, x);
	json_decref(hosts);
	x = json_pack("{s:b,s:s,s:o}", "ok", 1, "host", jstr(r, "host") ? jstr(r, "host") : "", "hosts",
		      list);
	json_decref(r);
	return webd_json(h, MHD_HTTP_OK, x);
}

static enum MHD_Result agent_get(struct hreq *h, json_t *req)
{
	json_t *r = api_agent(h->w, req);

	return webd_json(h, agent_status(r), r);
}

/* ------------------------------------------------------------ sessions */

static enum MHD_Result set_cookie(struct hreq *h, unsigned status, json_t *o, const char *id, int max_age)
{
	char *s = json_dumps(o, JSON_COMPACT), cookie[256];
	struct MHD_Response *resp;

	json_decref(o);
	if (!s)
		return MHD_NO;
	resp = MHD_create_response_from_buffer(strlen(s), s, MHD_RESPMEM_MUST_FREE);
	snprintf(cookie, sizeof(cookie), COOKIE "=%s; Path=/; Max-Age=%d; HttpOnly; Secure; SameSite=Strict",
		 id, max_age);
	MHD_add_response_header(resp, "Set-Cookie", cookie);
	MHD_add_response_header(resp, "Content-Type", "application/json; charset=utf-8");
	return webd_respond(h, status, resp);
}

static enum MHD_Result login(struct hreq *h)
{
	json_t *b = body_json(h);
	char id[65], csrf[65];
	int rc;

	if (!b)
		return webd_error(h, MHD_HTTP_BAD_REQUEST, "login: a JSON object {\"user\",\"password\"}");
	rc = auth_login(h->w, h->addr, jstr(b, "user"), jstr(b, "password"), id, csrf);
	if (rc) {
		webd_log("login as '%.64s' from %s refused%s", jstr(b, "user") ? jstr(b, "user") : "",
			 h->addr, rc == -EAGAIN ? " (too many failures)" : "");
		json_decref(b);
		if (rc == -EAGAIN)
			return webd_error(h, MHD_HTTP_TOO_MANY_REQUESTS, "too many failed logins from %s: "
					  "wait a minute", h->addr);
		return webd_error(h, MHD_HTTP_UNAUTHORIZED, "wrong user name or password");
	}
	json_decref(b);
	webd_log("root logged in from %s", h->addr);
	return set_cookie(h, MHD_HTTP_OK, json_pack("{s:b,s:s,s:s,s:i,s:i,s:I}", "ok", 1, "user", "root",
						    "csrf", csrf, "idle_s", h->w->session_idle, "max_s",
						    h->w->session_max, "max_upload",
						    (json_int_t)h->w->max_upload), id, h->w->session_max);
}

static const char *cookie(struct hreq *h)
{
	return MHD_lookup_connection_value(h->conn, MHD_COOKIE_KIND, COOKIE);
}

/* ------------------------------------------------------------ routing */

static bool is_get(const char *m)
{
	return !strcmp(m, "GET") || !strcmp(m, "HEAD");
}

/* PUT /api/datastores/{ds}/upload: checked and opened before the body */
static bool is_upload(const char *method, const char *url, char *ds, size_t size)
{
	const char *p = url + strlen("/api/datastores/"), *slash;

	if (strcmp(method, "PUT") || strncmp(url, "/api/datastores/", 16))
		return false;
	slash = strchr(p, '/');
	if (!slash || strcmp(slash, "/upload") || (size_t)(slash - p) >= size)
		return false;
	snprintf(ds, size, "%.*s", (int)(slash - p), p);
	return true;
}

enum MHD_Result api_begin(struct hreq *h, const char *method, const char *url, bool *handled)
{
	const char *len_s = MHD_lookup_connection_value(h->conn, MHD_HEADER_KIND, "Content-Length");
	const char *ctype = MHD_lookup_connection_value(h->conn, MHD_HEADER_KIND, "Content-Type");
	const char *token = MHD_lookup_connection_value(h->conn, MHD_HEADER_KIND, "X-CSRF-Token");
	const char *te = MHD_lookup_connection_value(h->conn, MHD_HEADER_KIND, "Transfer-Encoding");
	unsigned long long len = len_s ? strtoull(len_s, NULL, 10) : 0;
	char csrf[65], ds[256], root[PATH_MAX];
	int rc;

	*handled = true;
	if (!strcmp(url, "/api/login") && !strcmp(method, "POST")) {
		/* no session yet: a JSON body, which a form of another site
		 * cannot send without the browser asking first (CORS) */
		if (!ctype || strncmp(ctype, "application/json", 16))
			return webd_error(h, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE, "login: Content-Type "
					  "application/json");
		*handled = false;
		return MHD_YES;
	}
	if (auth_session(h->w, cookie(h), csrf))
		return webd_error(h, MHD_HTTP_UNAUTHORIZED, "login required");
	if (!is_get(method)) {
		if (!token || !auth_equal(token, csrf))
			return webd_error(h, MHD_HTTP_FORBIDDEN, "CSRF token missing or wrong (send the "
					  "session's token in X-CSRF-Token)");
		if (is_upload(method, url, ds, sizeof(ds))) {
			const char *rel = webd_arg(h, "path");

			if (!len_s)
				return webd_error(h, MHD_HTTP_LENGTH_REQUIRED, "upload: Content-Length needed");
			if (len > h->w->max_upload)
				return webd_error(h, MHD_HTTP_CONTENT_TOO_LARGE, "upload: %llu bytes, at most "
						  "%llu (--max-upload)", len,
						  (unsigned long long)h->w->max_upload);
			if (!rel)
				return webd_error(h, MHD_HTTP_BAD_REQUEST, "upload: ?path=FOLDER/NAME needed");
			if (api_datastore(h->w, ds, root, sizeof(root)))
				return webd_error(h, MHD_HTTP_NOT_FOUND, "no datastore '%s'", ds);
			rc = files_upload_begin(h, root, rel, len);
			if (rc)
				return webd_error(h, files_status(rc), "%s", h->up_msg);
			*handled = false;
			return MHD_YES;
		}
		if (len > WEBD_MAX_BODY)
			return webd_error(h, MHD_HTTP_CONTENT_TOO_LARGE, "request body over %d bytes",
					  WEBD_MAX_BODY);
		if ((len || te) && (!ctype || strncmp(ctype, "application/json", 16)))
			return webd_error(h, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE, "a JSON body "
					  "(Content-Type: application/json)");
	}
	*handled = false;
	return MHD_YES;
}

enum MHD_Result api_handle(struct hreq *h, const char *method, const char *url)
{
	char buf[1024], *seg[6] = {0}, csrf[65], root[PATH_MAX];
	const char *path = webd_arg(h, "path");
	bool get = is_get(method), post = !strcmp(method, "POST"), del = !strcmp(method, "DELETE");
	int n = 0;
	json_t *b;
	enum MHD_Result r;

	if (strlen(url) >= sizeof(buf))
		return webd_error(h, MHD_HTTP_URI_TOO_LONG, "URL too long");
	snprintf(buf, sizeof(buf), "%s", url + 5);
	for (char *save = NULL, *p = strtok_r(buf, "/", &save); p && n < 6; p = strtok_r(NULL, "/", &save))
		seg[n++] = p;
	if (!n)
		return webd_error(h, MHD_HTTP_NOT_FOUND, "no such resource");
	if (h->up_fd >= 0)
		return files_upload_end(h);
	if (!strcmp(seg[0], "login") && post && n == 1)
		return login(h);
	if (!strcmp(seg[0], "logout") && post && n == 1) {
		auth_logout(cookie(h));
		return set_cookie(h, MHD_HTTP_OK, json_pack("{s:b}", "ok", 1), "", 0);
	}
	if (!strcmp(seg[0], "session") && get && n == 1) {
		auth_session(h->w, cookie(h), csrf);
		return webd_json(h, MHD_HTTP_OK, json_pack("{s:b,s:s,s:s,s:i,s:I}", "ok", 1, "user", "root",
							  "csrf", csrf, "idle_s", h->w->session_idle,
							  "max_upload", (json_int_t)h->w->max_upload));
	}
	b = get ? json_object() : body_json(h);
	if (!b)
		return webd_error(h, MHD_HTTP_BAD_REQUEST, "the body is not a JSON object");
	r = MHD_NO;
	if (get && n == 1 && !strcmp(seg[0], "host")) {
		r = agent_get(h, json_pack("{s:s}", "cmd", "agent-info"));
	} else if (get && n == 1 && !strcmp(seg[0], "hosts")) {
		r = get_hosts(h);
	} else if (get && n == 1 && !strcmp(seg[0], "ha")) {
		r = agent_get(h, json_pack("{s:s}", "cmd", "ha-status"));
	} else if (get && n == 1 && !strcmp(seg[0], "tasks")) {
		r = agent_get(h, json_pack("{s:s}", "cmd", "tasks"));
	} else if (get && n == 1 && !strcmp(seg[0], "events")) {
		const char *c = webd_arg(h, "count");
		int count = c ? atoi(c) : 100;

		if (count < 1 || count > 10000)
			count = count < 1 ? 1 : 10000;   /* a bounded answer */
		r = agent_get(h, json_pack("{s:s,s:i}", "cmd", "events", "count", count));
	} else if (get && n <= 2 && !strcmp(seg[0], "jobs")) {
		r = jobs_get(h, n == 2 ? seg[1] : NULL);
	} else if (n == 2 && !strcmp(seg[0], "host") && !strcmp(seg[1], "maintenance")) {
		const char *act = get ? "status" : jstr(b, "action");
		json_t *req;

		if (!act || (strcmp(act, "enter") && strcmp(act, "exit") && strcmp(act, "status")))
			r = webd_error(h, MHD_HTTP_BAD_REQUEST, "action: enter, exit or status");
		else if (get || !strcmp(act, "status"))
			r = agent_get(h, json_pack("{s:s,s:s}", "cmd", "maintenance", "action", "status"));
		else {
			json_int_t t;

			req = json_pack("{s:s,s:s}", "cmd", "maintenance", "action", act);
			if (!body_int(b, "timeout", 1, 86400, &t, buf, sizeof(buf)))
				json_object_set_new(req, "timeout", json_integer(t));
			r = job_start(h, !strcmp(act, "enter") ? "maintenance-enter" : "maintenance-exit",
				      "host", req);
		}
	} else if (n == 1 && !strcmp(seg[0], "balance") && (get || post)) {
		json_t *req = json_pack("{s:s}", "cmd", "balance");

		if (get) {
			r = agent_get(h, req);
		} else {
			if (json_is_true(json_object_get(b, "apply")))
				json_object_set_new(req, "apply", json_true());
			r = job_start(h, "balance", "cluster", req);
		}
	} else if (n == 1 && !strcmp(seg[0], "datastores") && get) {
		r = get_datastores(h);
	} else if (n == 3 && !strcmp(seg[0], "datastores")) {
		if (api_datastore(h->w, seg[1], root, sizeof(root)))
			r = webd_error(h, MHD_HTTP_NOT_FOUND, "no datastore '%s'", seg[1]);
		else if (!strcmp(seg[2], "files") && get)
			r = files_list(h, root, path ? path : "");
		else if (!strcmp(seg[2], "download") && get && path)
			r = files_download(h, root, path);
		else if (!strcmp(seg[2], "mkdir") && post && jstr(b, "path"))
			r = files_mkdir(h, root, jstr(b, "path"));
		else if (!strcmp(seg[2], "files") && del && path)
			r = files_delete(h, root, path);
		else
			r = webd_error(h, MHD_HTTP_NOT_FOUND, "no such resource (path= missing?)");
	} else if (!strcmp(seg[0], "vms")) {
		if (n == 1 && get) {
			r = get_vms(h);
		} else if (n == 1 && post) {
			r = vm_create(h, b);
		} else if (n == 2 && post && !strcmp(seg[1], "import")) {
			r = vm_import(h, b);
		} else if (n == 2 && post && !strcmp(seg[1], "register")) {
			char p[PATH_MAX], msg[PATH_MAX + 128];
			int rc = jstr(b, "path") ? api_datastore(h->w, jstr(b, "datastore") ? jstr(b, "datastore") : "",
								  root, sizeof(root)) : -EINVAL;
			int fd = rc ? rc : files_open(root, jstr(b, "path"), O_PATH | O_DIRECTORY, 0);

			if (fd < 0) {
				snprintf(msg, sizeof(msg), "register: {datastore, path}: %s", strerror(-fd));
				r = webd_error(h, fd == -EXDEV || fd == -ELOOP ? MHD_HTTP_FORBIDDEN
					       : MHD_HTTP_NOT_FOUND, "%s", msg);
			} else {
				close(fd);
				snprintf(p, sizeof(p), "%s/%s", root, jstr(b, "path"));
				r = job_start(h, "register", p, json_pack("{s:s,s:s}", "cmd", "register",
									  "path", p));
			}
		} else if (n >= 2 && !vm_ref_ok(seg[1])) {
			r = webd_error(h, MHD_HTTP_BAD_REQUEST, "'%s' is not a VM ID or name", seg[1]);
		} else if (n == 2 && get) {
			r = get_vm(h, seg[1]);
		} else if (n == 2 && del) {
			r = vm_action(h, seg[1], "destroy", b);
		} else if (n == 3 && get && !strcmp(seg[2], "console")) {
			r = vm_console(h, seg[1]);
		} else if (n == 3 && get && !strcmp(seg[2], "events")) {
			r = agent_get(h, json_pack("{s:s,s:s,s:i}", "cmd", "events", "path", seg[1], "count", 100));
		} else if (n == 3 && post) {
			r = vm_action(h, seg[1], seg[2], b);
		} else {
			r = webd_error(h, MHD_HTTP_NOT_FOUND, "no such resource");
		}
	} else {
		r = webd_error(h, MHD_HTTP_NOT_FOUND, "no such resource");
	}
	json_decref(b);
	return r;
}
