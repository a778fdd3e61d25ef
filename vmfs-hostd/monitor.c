// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * VM monitoring (docs/vm.md "VM monitoring"): a VM whose QEMU dies on this
 * healthy host (killed by a signal, or exiting with an error), whose guest
 * panics (pvpanic: QEMU pauses in "guest-panicked") or whose QEMU hangs
 * (its QMP monitor stays silent) is restarted in place, through the normal
 * power-on path (disk locks, lock record), at most max_restarts times
 * within a sliding window, with a backoff between restarts; then it is
 * left off with an event.  Never restarted: a guest that powered itself off
 * (QEMU exits 0), a power operation (those run under the VM's flock and
 * clean up themselves, so the sweep never sees them), a VM killed by a
 * fence, a VM whose datastore does not answer, a VM with monitoring
 * disabled.
 *
 * Everything runs in the agent's sweep (agent_reconcile, a forked child
 * every second) or in a restart worker the sweep forks: the sweep asks
 * every running VM's QEMU for query-status at once on non-blocking
 * sockets, so a hung QEMU costs one bounded wait per sweep and never stops
 * the others from being watched.  The per-VM state lives in the state
 * folder, file "monitor" (JSON): the policy in force since power-on, the
 * times of recent restarts, a pending restart, why QEMU was killed.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ops.h"

/* One sweep waits at most this long for all QMP answers together.  QEMU
 * answers query-status from its main loop within milliseconds; a miss is
 * only a miss: a VM is hung after hang_timeout seconds without an answer,
 * so a slow round on a loaded host costs nothing but this wait. */
#define HB_ROUND_MS 2000

/* after SIGKILL, how long the sweep waits for QEMU to be gone (it exits at
 * once unless it is in uninterruptible I/O; then a later sweep goes on) */
#define KILL_WAIT_MS 5000

/* A QEMU the agent started is reaped by the agent's main loop within about
 * a second (it wakes on SIGCHLD); a sweep forked before that reap does not
 * know the exit status yet and leaves the VM to the next sweep, but not for
 * longer than this (the status was then lost: treated as unknown). */
#define EXIT_STATUS_WAIT_MS 5000

/* the backoff doubles up to this cap, the one of Kubernetes'
 * CrashLoopBackOff (5 min; "Pod Lifecycle", kubernetes.io) */
#define BACKOFF_MAX_S 300

/* ---------------- the state file ---------------- */

static json_t *mon_load(const char *sdir)
{
	char p[PATH_MAX + 16];
	json_t *j;

	snprintf(p, sizeof(p), "%s/monitor", sdir);
	j = json_load_file(p, 0, NULL);
	if (!json_is_object(j)) {
		json_decref(j);
		j = json_object();
	}
	return j;
}

static void mon_save(const char *sdir, json_t *j)
{
	char p[PATH_MAX + 16];
	char *s = json_dumps(j, JSON_COMPACT);

	if (!s)
		return;
	snprintf(p, sizeof(p), "%s/monitor", sdir);
	write_text(p, s);
	free(s);
}

static int64_t jint(json_t *o, const char *key, int64_t def)
{
	json_t *v = json_object_get(o, key);

	return json_is_integer(v) ? (int64_t)json_integer_value(v) : def;
}

struct mon_policy {
	bool enabled;
	int max_restarts, window, backoff, hang_timeout;
};

static void policy_of(const struct agent *a, const struct vm_config *c, struct mon_policy *p)
{
	p->enabled = c && c->ha_monitoring >= 0 ? c->ha_monitoring == 1 : a->mon.enabled;
	p->max_restarts = c && c->ha_max_restarts >= 0 ? c->ha_max_restarts : a->mon.max_restarts;
	p->window = c && c->ha_restart_window >= 0 ? c->ha_restart_window : a->mon.window;
	p->hang_timeout = c && c->ha_hang_timeout >= 0 ? c->ha_hang_timeout : a->mon.hang_timeout;
	p->backoff = a->mon.backoff;
}

/* the policy in force: the one saved at power-on, else the agent's */
static void policy_saved(const struct agent *a, json_t *st, struct mon_policy *p)
{
	json_t *o = json_object_get(st, "policy");

	policy_of(a, NULL, p);
	if (!json_is_object(o))
		return;
	p->enabled = json_is_true(json_object_get(o, "enabled"));
	p->max_restarts = (int)jint(o, "max_restarts", p->max_restarts);
	p->window = (int)jint(o, "window", p->window);
	p->backoff = (int)jint(o, "backoff", p->backoff);
	p->hang_timeout = (int)jint(o, "hang_timeout", p->hang_timeout);
}

/* drops restarts older than the window; returns how many are left */
static int restarts_in_window(json_t *st, const struct mon_policy *p, int64_t now)
{
	json_t *r = json_object_get(st, "restarts"), *kept = json_array(), *e;
	size_t i;

	json_array_foreach(r, i, e)
		if (json_integer_value(e) > now - (int64_t)p->window * 1000)
			json_array_append(kept, e);
	json_object_set_new(st, "restarts", kept);
	return (int)json_array_size(kept);
}

/* seconds before restart number k+1 (k done in the window): the first at
 * once (a crash costs one boot), then backoff, 2 backoff, ... capped */
static int backoff_s(const struct mon_policy *p, int k)
{
	int64_t d = p->backoff;

	if (k == 0)
		return 0;
	for (int i = 1; i < k && d < BACKOFF_MAX_S; i++)
		d *= 2;
	return (int)(d < BACKOFF_MAX_S ? d : BACKOFF_MAX_S);
}

static void fmt_window(int s, char *buf, size_t size)
{
	if (s % 3600 == 0)
		snprintf(buf, size, "%d h", s / 3600);
	else if (s % 60 == 0)
		snprintf(buf, size, "%d min", s / 60);
	else
		snprintf(buf, size, "%d s", s);
}

void monitor_power_on(struct agent *a, struct vmctx *v, bool restart)
{
	struct mon_policy p;
	json_t *st = restart ? mon_load(v->sdir) : json_object();

	policy_of(a, &v->cfg, &p);
	/* a power-on by a user starts afresh, as vSphere clears its reset
	 * statistics when a VM is powered off and on again */
	json_object_set_new(st, "policy", json_pack("{s:b,s:i,s:i,s:i,s:i}", "enabled", p.enabled,
						     "max_restarts", p.max_restarts, "window", p.window,
						     "backoff", p.backoff, "hang_timeout", p.hang_timeout));
	json_object_set_new(st, "agent_pid", json_integer(a->pid));
	json_object_del(st, "pending_at");
	json_object_del(st, "kill_reason");
	json_object_del(st, "gave_up_at");
	json_object_del(st, "panic_noted");
	mon_save(v->sdir, st);
	json_decref(st);
	{
		char hp[PATH_MAX + 16];

		sfile(v, "hb-miss", hp, sizeof(hp));
		unlink(hp);
		sfile(v, "no-restart", hp, sizeof(hp));
		unlink(hp);
		sfile(v, "migrated-to", hp, sizeof(hp));
		unlink(hp);
	}
}

void monitor_no_restart(const char *sdir, const char *why)
{
	char p[PATH_MAX + 16];

	snprintf(p, sizeof(p), "%s/no-restart", sdir);
	write_text(p, why);
}

/* the reason a stop said the VM must not be restarted, if any */
static bool no_restart_note(const char *sdir, char *buf, size_t size)
{
	char p[PATH_MAX + 16];

	snprintf(p, sizeof(p), "%s/no-restart", sdir);
	return read_text(p, buf, size) == 0;
}

bool monitor_cancel(struct agent *a, struct vmctx *v, const char *why)
{
	json_t *st = mon_load(v->sdir);
	bool pending = json_object_get(st, "pending_at") != NULL;

	if (pending) {
		json_object_del(st, "pending_at");
		mon_save(v->sdir, st);
		agent_event(a, v->vmx_path, "vm.restart-cancelled", "restart in place cancelled by %s",
			    why);
	}
	json_decref(st);
	return pending;
}

bool monitor_restart_due(const char *sdir)
{
	json_t *st = mon_load(sdir);
	int64_t at = jint(st, "pending_at", -1);

	json_decref(st);
	return at >= 0 && at <= wall_ms();
}

void monitor_info(struct agent *a, struct vmctx *v, json_t *o)
{
	json_t *st = mon_load(v->sdir), *m;
	struct mon_policy p;
	int64_t now = wall_ms(), at;

	if (json_object_get(st, "policy"))
		policy_saved(a, st, &p);
	else
		policy_of(a, &v->cfg, &p);
	m = json_pack("{s:b,s:i,s:i,s:i,s:i}", "enabled", p.enabled, "max_restarts", p.max_restarts,
		      "window_s", p.window, "hang_timeout_s", p.hang_timeout, "restarts_in_window",
		      restarts_in_window(st, &p, now));
	at = jint(st, "pending_at", -1);
	if (at >= 0)
		json_object_set_new(m, "restart_pending_in_s",
				    json_integer(at > now ? (at - now + 999) / 1000 : 0));
	if (json_object_get(st, "gave_up_at"))
		json_object_set_new(m, "gave_up_at", json_integer(jint(st, "gave_up_at", 0) / 1000));
	if (json_is_string(json_object_get(st, "last_failure"))) {
		json_object_set(m, "last_failure", json_object_get(st, "last_failure"));
		json_object_set_new(m, "last_failure_at", json_integer(jint(st, "last_failure_at", 0) / 1000));
	}
	json_object_set_new(o, "vm_monitoring", m);
	json_decref(st);
}

/* ---------------- the decision after QEMU ended ---------------- */

static bool fenced_note(const char *sdir)
{
	char p[PATH_MAX + 16];

	snprintf(p, sizeof(p), "%s/fenced", sdir);
	return access(p, F_OK) == 0;
}

/* a datastore that is gone or broken: no restart can work, and a fenced
 * volume must not get one */
static bool datastore_errno(int rc)
{
	return rc == -EIO || rc == -ENOTCONN || rc == -ENOENT || rc == -ESTALE || rc == -ENODEV ||
	       rc == -EROFS || rc == -ENOTDIR || rc == -ECONNABORTED;
}

/* A failure of a monitored VM: schedule the restart or give up.  ST is
 * saved by the caller. */
/* Returns true when the VM is left off (the limit was reached). */
static bool failure(struct agent *a, const char *vmx, json_t *st, const char *why)
{
	struct mon_policy p;
	int64_t now = wall_ms();
	char win[32];
	int k, d;

	policy_saved(a, st, &p);
	fmt_window(p.window, win, sizeof(win));
	k = restarts_in_window(st, &p, now);
	json_object_set_new(st, "last_failure", json_string(why));
	json_object_set_new(st, "last_failure_at", json_integer(now));
	agent_event(a, vmx, "vm.failure-detected", "%s (restarts so far within %s: %d of at most %d)",
		    why, win, k, p.max_restarts);
	if (k >= p.max_restarts) {
		json_object_del(st, "pending_at");
		json_object_set_new(st, "gave_up_at", json_integer(now));
		agent_event(a, vmx, "vm.restart-gave-up",
			    "not restarted: %d restart(s) within %s already (the limit; vmfsd.ha.maxRestarts, "
			    "vmfsd.ha.restartWindow); left off until powered on",
			    k, win);
		return true;
	}
	d = backoff_s(&p, k);
	json_object_set_new(st, "pending_at", json_integer(now + (int64_t)d * 1000));
	if (d)
		agent_event(a, vmx, "vm.restart-scheduled",
			    "restarting in place in %d s (backoff): restart %d of at most %d within %s", d,
			    k + 1, p.max_restarts, win);
	else
		agent_event(a, vmx, "vm.restart-scheduled",
			    "restarting in place now: restart %d of at most %d within %s", k + 1,
			    p.max_restarts, win);
	return false;
}

/* Why QEMU ended, from the exit status the agent reaped.  0 = a failure
 * (WHY says what), 1 = not a failure, -EAGAIN = not known yet. */
static int classify(struct agent *a, const char *sdir, json_t *st, char *why, size_t size)
{
	char p[PATH_MAX + 16], buf[64];
	pid_t pid = 0;
	int status;

	if (json_is_string(json_object_get(st, "kill_reason"))) {
		snprintf(why, size, "%s", json_string_value(json_object_get(st, "kill_reason")));
		return 0;
	}
	snprintf(p, sizeof(p), "%s/pid", sdir);
	if (!read_text(p, buf, sizeof(buf)))
		pid = atoi(buf);
	if (pid > 0 && agent_reaped_status(a, pid, &status)) {
		if (WIFSIGNALED(status)) {
			snprintf(why, size, "QEMU was killed by signal %d (%s)", WTERMSIG(status),
				 strsignal(WTERMSIG(status)));
			return 0;
		}
		if (WEXITSTATUS(status)) {
			snprintf(why, size, "QEMU exited with status %d", WEXITSTATUS(status));
			return 0;
		}
		snprintf(why, size, "QEMU exited (guest powered off)");
		return 1;
	}
	/* not reaped (yet): a zombie waits for the agent's main loop; a QEMU
	 * of this agent was reaped after this sweep was forked */
	if (pid > 0 && jint(st, "agent_pid", 0) == a->pid) {
		char dp[PATH_MAX + 16];
		int64_t since;

		snprintf(dp, sizeof(dp), "%s/dead-since", sdir);
		if (read_text(dp, buf, sizeof(buf))) {
			snprintf(buf, sizeof(buf), "%lld\n", (long long)now_ms());
			write_text(dp, buf);
			return -EAGAIN;
		}
		since = atoll(buf);
		if (now_ms() - since < EXIT_STATUS_WAIT_MS)
			return -EAGAIN;
	}
	snprintf(why, size, "QEMU exited (how is unknown: an earlier agent started it, so this one could "
		 "not reap it)");
	return 1;
}

void monitor_vm_ended(struct agent *a, const char *sdir, const char *vmx)
{
	char why[256], p[PATH_MAX + 16];
	struct vm_err err;
	struct vmctx v;
	json_t *st = mon_load(sdir);
	struct mon_policy pol;
	int orc, c;

	c = classify(a, sdir, st, why, sizeof(why));
	if (c == -EAGAIN) {
		json_decref(st);
		return;
	}
	/* a VM that left by live migration (migrate.c): neither restarted
	 * nor unprotected */
	if (migrate_left(a, sdir, vmx)) {
		json_object_del(st, "kill_reason");
		mon_save(sdir, st);
		json_decref(st);
		return;
	}
	/* load the folder to find its lock record; a datastore that went
	 * away still gets its runtime files cleaned */
	orc = vmctx_open(a, vmx, false, &v, &err);
	snprintf(v.sdir, sizeof(v.sdir), "%s", sdir);
	vm_cleanup(a, &v, why);
	snprintf(p, sizeof(p), "%s/dead-since", sdir);
	unlink(p);
	snprintf(p, sizeof(p), "%s/hb-miss", sdir);
	unlink(p);
	json_object_del(st, "kill_reason");
	policy_saved(a, st, &pol);
	/* left_off: nothing will start the VM again, so HA must not either
	 * (docs/ha.md): its entry leaves this host's protected list.  A VM
	 * killed by a fence or on a datastore that stopped answering stays
	 * protected: the survivors restart it. */
	bool left_off = false;
	if (c == 1) {
		/* a guest power-off is the user's will */
		left_off = true;
	} else if (no_restart_note(sdir, p, sizeof(p))) {
		agent_event(a, vmx, "vm.restart-skipped", "%s: %s: not restarted", why, p);
	} else if (fenced_note(sdir)) {
		agent_event(a, vmx, "vm.restart-skipped", "%s: killed by the fence of its volume: not restarted here",
			    why);
	} else if (!pol.enabled) {
		agent_event(a, vmx, "vm.restart-skipped",
			    "%s: VM monitoring is disabled for this VM (vmfsd.ha.vmMonitoring or the agent's "
			    "--vm-monitoring): not restarted", why);
		left_off = true;
	} else if (orc && datastore_errno(orc)) {
		agent_event(a, vmx, "vm.restart-skipped", "%s: its datastore does not answer (%s): not restarted",
			    why, err.msg);
	} else {
		left_off = failure(a, vmx, st, why);
	}
	if (left_off && orc == 0)
		ha_unprotect(a, &v);
	vmctx_close(&v);
	mon_save(sdir, st);
	json_decref(st);
}

/* ---------------- the restart ---------------- */

/* The restart worker: a child of the sweep holding the VM's flock (LFD,
 * inherited: the same lock the sweep took, so no request slips in between
 * the decision and the power-on). */
static void restart_vm(struct agent *a, const char *sdir, const char *vmx, int lfd)
{
	struct vm_err err;
	struct vmctx v;
	struct mon_policy pol;
	json_t *st = mon_load(sdir), *req, *r;
	int rc, k;
	char win[32], note[256];

	/* The sweep saw the restart due before it took the flock: a worker
	 * of an earlier sweep may have made it (or had it refused) since, and
	 * saved the state without pending_at before it let go of the flock. */
	if (jint(st, "pending_at", -1) < 0) {
		json_decref(st);
		close(lfd);
		return;
	}
	policy_saved(a, st, &pol);
	fmt_window(pol.window, win, sizeof(win));
	json_object_del(st, "pending_at");
	rc = vmctx_open(a, vmx, false, &v, &err);
	if (rc) {
		snprintf(v.sdir, sizeof(v.sdir), "%s", sdir);
		agent_event(a, vmx, datastore_errno(rc) ? "vm.restart-skipped" : "vm.restart-failed",
			    "not restarted: %s", err.msg);
		goto out;
	}
	v.lockfd = lfd;
	lfd = -1;
	if (fenced_note(sdir)) {
		agent_event(a, vmx, "vm.restart-skipped", "not restarted: killed by the fence of its volume");
		goto out;
	}
	if (no_restart_note(sdir, note, sizeof(note))) {
		agent_event(a, vmx, "vm.restart-skipped", "not restarted: %s", note);
		goto out;
	}
	if (vm_qemu_pid(&v))
		goto out;                   /* powered on meanwhile */
	k = restarts_in_window(st, &pol, wall_ms());
	agent_event(a, vmx, "vm.restarting", "restarting in place (restart %d of at most %d within %s)",
		    k + 1, pol.max_restarts, win);
	req = json_pack("{s:s,s:b}", "cmd", "power-on", "monitor_restart", 1);
	/* the normal power-on: disk locks and lock record; another host
	 * that took the VM meanwhile makes it fail, never a second copy */
	r = power_on(a, &v, req);
	json_decref(req);
	json_decref(st);
	st = mon_load(sdir);                /* power_on kept it, policy and all */
	json_object_del(st, "pending_at");
	if (json_is_true(json_object_get(r, "ok"))) {
		json_t *rs = json_object_get(st, "restarts");

		if (!json_is_array(rs)) {
			rs = json_array();
			json_object_set_new(st, "restarts", rs);
		}
		json_array_append_new(rs, json_integer(wall_ms()));
		agent_event(a, vmx, "vm.restarted", "restarted in place (QEMU pid %lld): restart %d of at most %d within %s",
			    (long long)json_integer_value(json_object_get(r, "pid")), k + 1,
			    pol.max_restarts, win);
	} else {
		int e = (int)json_integer_value(json_object_get(r, "errno"));
		const char *msg = json_string_value(json_object_get(r, "error"));

		if (e == EBUSY || e == EALREADY) {
			agent_event(a, vmx, "vm.restart-refused",
				    "restart refused, not retried: %s", msg ? msg : "busy");
		} else if (datastore_errno(-e)) {
			agent_event(a, vmx, "vm.restart-skipped", "not restarted: its datastore does not answer: %s",
				    msg ? msg : strerror(e));
		} else {
			/* counts as a restart: a start that fails for good
			 * must not loop faster than the limit allows */
			json_t *rs = json_object_get(st, "restarts");

			if (!json_is_array(rs)) {
				rs = json_array();
				json_object_set_new(st, "restarts", rs);
			}
			json_array_append_new(rs, json_integer(wall_ms()));
			agent_event(a, vmx, "vm.restart-failed", "restart failed: %s", msg ? msg : strerror(e));
			failure(a, vmx, st, "the restart failed");
		}
	}
	json_decref(r);
out:
	mon_save(sdir, st);
	json_decref(st);
	vmctx_close(&v);
	if (lfd >= 0)
		close(lfd);
}

void monitor_restart_spawn(struct agent *a, const char *sdir, const char *vmx, int lfd)
{
	pid_t pid = fork();

	if (pid == 0) {
		/* only this VM's flock: the sweep holds the flocks of the
		 * running VMs it has seen so far, and a worker that kept them
		 * for the length of a power-on would keep those VMs from
		 * their requests and from the next sweeps */
		if (lfd > 3)
			close_range(3, (unsigned)lfd - 1, 0);
		close_range((unsigned)lfd + 1, ~0u, 0);
		restart_vm(a, sdir, vmx, lfd);
		_exit(0);
	}
	if (pid < 0)
		agent_log(a, "%s: fork for the restart: %s", vmx, strerror(errno));
	/* not waited for: the sweep must go on; when the sweep exits the
	 * worker is the agent's (a subreaper), which reaps it */
}

/* ---------------- the heartbeat ---------------- */

struct mon_entry {
	char sdir[PATH_MAX];
	char vmx[PATH_MAX];
	pid_t pid;
	int lfd;                      /* the VM's flock, held by the sweep */
	int fd;                       /* QMP connection, -1 when done */
	char buf[8192];
	size_t len;
	char status[32];              /* query-status's answer, "" if none */
};

void monitor_sweep_add(struct mon_sweep *s, const char *sdir, const char *vmx, pid_t pid, int lfd)
{
	struct mon_entry *e;

	if (s->n == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 8;
		struct mon_entry **v = realloc(s->v, cap * sizeof(*v));

		if (!v) {
			close(lfd);
			return;
		}
		s->v = v;
		s->cap = cap;
	}
	e = calloc(1, sizeof(*e));
	if (!e) {
		close(lfd);
		return;
	}
	snprintf(e->sdir, sizeof(e->sdir), "%s", sdir);
	snprintf(e->vmx, sizeof(e->vmx), "%s", vmx);
	e->pid = pid;
	e->lfd = lfd;
	e->fd = -1;
	s->v[s->n++] = e;
}

/* Connects and sends qmp_capabilities and query-status at once (QMP runs
 * them in order after its greeting), without waiting: a stopped QEMU's
 * listening socket still accepts into its backlog. */
static void hb_start(struct mon_entry *e)
{
	static const char cmds[] = "{\"execute\":\"qmp_capabilities\"}\n{\"execute\":\"query-status\"}\n";
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/qmp.sock", e->sdir);
	if (fd < 0)
		return;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) ||
	    send(fd, cmds, sizeof(cmds) - 1, MSG_NOSIGNAL) != (ssize_t)sizeof(cmds) - 1) {
		close(fd);
		return;
	}
	e->fd = fd;
}

/* Reads what came; true when the exchange is over (answer, EOF, error). */
static bool hb_read(struct mon_entry *e)
{
	ssize_t k = recv(e->fd, e->buf + e->len, sizeof(e->buf) - 1 - e->len, 0);
	char *line, *nl;

	if (k < 0 && (errno == EAGAIN || errno == EINTR))
		return false;
	if (k <= 0)
		return true;
	e->len += (size_t)k;
	e->buf[e->len] = '\0';
	for (line = e->buf; (nl = strchr(line, '\n')); line = nl + 1) {
		json_t *j, *ret;

		*nl = '\0';
		j = json_loads(line, 0, NULL);
		ret = json_object_get(j, "return");
		if (json_is_string(json_object_get(ret, "status")))
			snprintf(e->status, sizeof(e->status), "%s",
				 json_string_value(json_object_get(ret, "status")));
		json_decref(j);
		if (e->status[0])
			return true;
	}
	/* keep the partial line */
	memmove(e->buf, line, strlen(line) + 1);
	e->len = strlen(e->buf);
	return e->len >= sizeof(e->buf) - 1;
}

static void heartbeat(struct mon_sweep *s)
{
	int64_t end = now_ms() + HB_ROUND_MS;
	struct pollfd *pf = calloc(s->n ? s->n : 1, sizeof(*pf));

	if (!pf)
		return;
	for (size_t i = 0; i < s->n; i++)
		hb_start(s->v[i]);
	for (;;) {
		size_t n = 0;
		int64_t left = end - now_ms();

		for (size_t i = 0; i < s->n; i++)
			if (s->v[i]->fd >= 0)
				pf[n++] = (struct pollfd){.fd = s->v[i]->fd, .events = POLLIN};
		if (!n || left <= 0)
			break;
		if (poll(pf, n, (int)left) < 0 && errno != EINTR)
			break;
		for (size_t i = 0; i < s->n; i++) {
			struct mon_entry *e = s->v[i];

			for (size_t j = 0; j < n; j++)
				if (e->fd >= 0 && pf[j].fd == e->fd && pf[j].revents && hb_read(e)) {
					close(e->fd);
					e->fd = -1;
				}
		}
	}
	for (size_t i = 0; i < s->n; i++)
		if (s->v[i]->fd >= 0) {
			close(s->v[i]->fd);
			s->v[i]->fd = -1;
		}
	free(pf);
}

/* Kills a panicked or hung QEMU and handles it as a failure. */
static void kill_failed(struct agent *a, struct mon_entry *e, json_t *st, const char *why)
{
	json_object_set_new(st, "kill_reason", json_string(why));
	mon_save(e->sdir, st);
	agent_event(a, e->vmx, "vm.killing", "%s: killing QEMU (pid %d)", why, (int)e->pid);
	kill(e->pid, SIGKILL);
	if (!wait_pid_gone(e->pid, KILL_WAIT_MS)) {
		agent_log(a, "%s: QEMU pid %d not gone %d s after SIGKILL; a later sweep goes on", e->vmx,
			  (int)e->pid, KILL_WAIT_MS / 1000);
		return;
	}
	monitor_vm_ended(a, e->sdir, e->vmx);
	if (monitor_restart_due(e->sdir))
		monitor_restart_spawn(a, e->sdir, e->vmx, e->lfd);   /* at once, no backoff */
}

static void check_running(struct agent *a, struct mon_entry *e)
{
	char hp[PATH_MAX + 16], buf[32], why[160];
	json_t *st = mon_load(e->sdir);
	struct mon_policy p;
	int64_t since;

	policy_saved(a, st, &p);
	snprintf(hp, sizeof(hp), "%s/hb-miss", e->sdir);
	if (e->status[0]) {
		struct vmctx v = {.dirfd = -1, .lockfd = -1};

		unlink(hp);
		snprintf(v.sdir, sizeof(v.sdir), "%s", e->sdir);
		if (!strcmp(e->status, "internal-error") && p.enabled) {
			/* QEMU stopped the VM after an error of its own
			 * (KVM_RUN failed): nothing resumes it */
			kill_failed(a, e, st, "QEMU stopped the VM after an internal error");
		} else if (!strcmp(e->status, "guest-panicked")) {
			if (p.enabled)
				kill_failed(a, e, st, "the guest panicked (pvpanic; QEMU paused it)");
			else if (!json_is_true(json_object_get(st, "panic_noted"))) {
				json_object_set_new(st, "panic_noted", json_true());
				mon_save(e->sdir, st);
				agent_event(a, e->vmx, "vm.guest-panicked",
					    "the guest panicked; VM monitoring is disabled: left paused");
			}
		} else {
			vm_watch_io_error(a, &v, e->vmx, e->status);
		}
		json_decref(st);
		return;
	}
	/* no answer this round */
	if (read_text(hp, buf, sizeof(buf))) {
		snprintf(buf, sizeof(buf), "%lld\n", (long long)now_ms());
		write_text(hp, buf);
		json_decref(st);
		return;
	}
	since = atoll(buf);
	if (p.enabled && now_ms() - since >= (int64_t)p.hang_timeout * 1000) {
		snprintf(why, sizeof(why), "QEMU did not answer QMP for %lld s (hang timeout %d s): hung",
			 (long long)(now_ms() - since) / 1000, p.hang_timeout);
		unlink(hp);
		kill_failed(a, e, st, why);
	}
	json_decref(st);
}

void monitor_sweep_run(struct agent *a, struct mon_sweep *s, bool startup)
{
	heartbeat(s);
	for (size_t i = 0; i < s->n; i++) {
		struct mon_entry *e = s->v[i];
		struct vmctx v = {.dirfd = -1, .lockfd = -1};

		snprintf(v.sdir, sizeof(v.sdir), "%s", e->sdir);
		if (startup)
			agent_log(a, "%s: re-attached to the running VM (QEMU pid %d)", e->vmx, (int)e->pid);
		vm_log_sync(&v);
		check_running(a, e);
		close(e->lfd);
		free(e);
	}
	free(s->v);
	s->v = NULL;
	s->n = s->cap = 0;
}
