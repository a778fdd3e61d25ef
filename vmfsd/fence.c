// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * What vmfsd does when its host fences (docs/cluster.md §3, "the VMs"):
 * every process of this machine that holds a file open on the mount is
 * killed (SIGKILL) and the host agent is told which volume it lost, so
 * that it records the VMs as killed by the fence and never restarts them.
 *
 * The fence itself happens on lockmgr's fence thread, which must not block
 * (its period and the margin M are the safety argument), so the
 * filesystem's fence hook (fs_mount_opts.fence_hook) only posts a
 * semaphore.  The work runs on a thread started at mount that does nothing
 * else and, like the fence thread, asks for SCHED_FIFO: it wakes within the
 * same few milliseconds.  It kills first and talks to the agent after, so a
 * dead or hung agent cannot keep a VM alive: QEMU holds the VM's disks open
 * (the agent opened them and handed them over, docs/vm.md), and the kill
 * is found by scanning /proc/PID/fd for links under the mount point, not by
 * asking anyone.  The scan never touches the mount itself (readlink of a
 * /proc fd link asks the kernel, not FUSE).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "fence.h"
#include "log.h"

/* A scan pass can miss a process that opens a file while it runs (one
 * whose lock was already held here needs no disk write, so the fence does
 * not stop that open); passes repeat until one finds nobody. */
#define KILL_PASSES 20
#define KILL_PASS_GAP_MS 10
/* The agent answers kill-volume from a forked child within milliseconds;
 * 2 s bounds an agent that hangs.  This wait comes after the kill, so it
 * costs the fencing deadline nothing. */
#define AGENT_REPLY_MS 2000
#define MAX_KILLED 256

struct fence_resp {
	sem_t sem;
	char mnt[4096];
	char sock[sizeof(((struct sockaddr_un *)0)->sun_path)];
	int reason;
	/* the FUSE mount's id (/proc/self/mountinfo), 0 until mounted: a file
	 * counts only if its fdinfo names this mount, so a file whose path
	 * merely starts with the mount point (the volume's own image, hidden
	 * under the mount point, held by another host's vmfsd) is spared */
	int mnt_id;
	pid_t killed[MAX_KILLED];
	char comm[MAX_KILLED][20];
	int nkilled;
};

static struct fence_resp fr;

void vmfsd_fence_hook(void *arg, int reason)
{
	struct fence_resp *f = arg;

	/* sem_post is async-signal-safe: no lock, no allocation, no I/O */
	f->reason = reason;
	sem_post(&f->sem);
}

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* Is fd FD of process PID on our mount (fdinfo's mnt_id)? */
static int fd_on_mount(const struct fence_resp *f, const char *pid, const char *fd)
{
	int want = __atomic_load_n(&f->mnt_id, __ATOMIC_ACQUIRE), id = -1;
	char p[600], line[128];
	FILE *fp;

	if (!want)
		return 1;
	snprintf(p, sizeof(p), "/proc/%s/fdinfo/%s", pid, fd);
	fp = fopen(p, "re");
	if (!fp)
		return 0;
	while (fgets(line, sizeof(line), fp))
		if (sscanf(line, "mnt_id: %d", &id) == 1)
			break;
	fclose(fp);
	return id == want;
}

/* Does process PID hold a file open under f->mnt? */
static int holds_mount(const struct fence_resp *f, const char *pid)
{
	char dp[300], lp[600], target[4200];
	size_t ml = strlen(f->mnt);
	struct dirent *de;
	DIR *d;
	int hit = 0;

	snprintf(dp, sizeof(dp), "/proc/%s/fd", pid);
	d = opendir(dp);
	if (!d)
		return 0;
	while (!hit && (de = readdir(d))) {
		ssize_t n;

		if (de->d_name[0] == '.')
			continue;
		snprintf(lp, sizeof(lp), "%s/%s", dp, de->d_name);
		n = readlink(lp, target, sizeof(target) - 1);
		if (n <= 0)
			continue;
		target[n] = '\0';
		if (!strncmp(target, f->mnt, ml) && (target[ml] == '/' || target[ml] == '\0') &&
		    fd_on_mount(f, pid, de->d_name))
			hit = 1;
	}
	closedir(d);
	return hit;
}

static void comm_of(pid_t pid, char *buf, size_t size)
{
	char p[64];
	FILE *fp;

	snprintf(p, sizeof(p), "/proc/%d/comm", (int)pid);
	buf[0] = '\0';
	fp = fopen(p, "re");
	if (fp) {
		if (fgets(buf, (int)size, fp))
			buf[strcspn(buf, "\n")] = '\0';
		fclose(fp);
	}
	if (!buf[0])
		snprintf(buf, size, "?");
}

/* One pass over /proc; returns how many processes it killed. */
static int kill_pass(struct fence_resp *f)
{
	char self[32];
	struct dirent *de;
	DIR *d = opendir("/proc");
	int n = 0;

	if (!d)
		return 0;
	snprintf(self, sizeof(self), "%d", (int)getpid());
	while ((de = readdir(d))) {
		if (de->d_name[0] < '1' || de->d_name[0] > '9' || !strcmp(de->d_name, self))
			continue;
		if (!holds_mount(f, de->d_name))
			continue;
		if (kill((pid_t)atoi(de->d_name), SIGKILL) == 0) {
			if (f->nkilled < MAX_KILLED) {
				f->killed[f->nkilled] = (pid_t)atoi(de->d_name);
				comm_of(f->killed[f->nkilled], f->comm[f->nkilled],
					sizeof(f->comm[0]));
				f->nkilled++;
			}
			n++;
		}
	}
	closedir(d);
	return n;
}

/* JSON string body of S (quotes and backslashes escaped, controls dropped). */
static void json_esc(const char *s, char *out, size_t size)
{
	size_t o = 0;

	for (; *s && o + 3 < size; s++) {
		if (*s == '"' || *s == '\\')
			out[o++] = '\\';
		if ((unsigned char)*s >= 0x20)
			out[o++] = *s;
	}
	out[o] = '\0';
}

/* Tells the host agent: {"cmd":"kill-volume","path":MNT,"fenced":true,
 * "killed":[pids]}.  Non-blocking connect (a full backlog is a hung
 * agent: give up), reply awaited at most AGENT_REPLY_MS. */
static void notify_agent(struct fence_resp *f)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char req[8192], esc[8300], reply[512];
	size_t len = 0;
	ssize_t n, got = 0;
	int fd;

	if (!f->sock[0])
		return;
	json_esc(f->mnt, esc, sizeof(esc));
	len = (size_t)snprintf(req, sizeof(req),
			       "{\"cmd\":\"kill-volume\",\"path\":\"%s\",\"fenced\":true,\"killed\":[",
			       esc);
	for (int i = 0; i < f->nkilled && len + 16 < sizeof(req); i++)
		len += (size_t)snprintf(req + len, sizeof(req) - len, "%s%d", i ? "," : "",
					(int)f->killed[i]);
	len += (size_t)snprintf(req + len, sizeof(req) - len, "]}\n");
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return;
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", f->sock);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		vmfsd_log(LOG_WARNING, "fence: host agent at %s not told: %s", f->sock, strerror(errno));
		close(fd);
		return;
	}
	n = send(fd, req, len, MSG_NOSIGNAL | MSG_DONTWAIT);
	if (n != (ssize_t)len) {
		vmfsd_log(LOG_WARNING, "fence: host agent at %s not told: send: %s", f->sock,
		       n < 0 ? strerror(errno) : "short write");
		close(fd);
		return;
	}
	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };

		if (poll(&p, 1, AGENT_REPLY_MS) <= 0)
			break;
		n = read(fd, reply + got, sizeof(reply) - 1 - (size_t)got);
		if (n <= 0)
			break;
		got += n;
		if (memchr(reply, '\n', (size_t)got) || got == (ssize_t)sizeof(reply) - 1)
			break;
	}
	close(fd);
	reply[got] = '\0';
	reply[strcspn(reply, "\n")] = '\0';
	if (got)
		vmfsd_log(LOG_WARNING, "fence: host agent at %s answered: %s", f->sock, reply);
	else
		vmfsd_log(LOG_WARNING, "fence: host agent at %s did not answer within %d ms", f->sock,
		       AGENT_REPLY_MS);
}

static const char *reason_name(int r)
{
	switch (r) {
	case 1: return "no heartbeat renewal succeeded within the fence deadline";
	case 2: return "another host took our heartbeat slot";
	case 3: return "fence requested";
	default: return "fenced";
	}
}

static void *fence_main(void *arg)
{
	struct fence_resp *f = arg;
	struct sched_param sp = { .sched_priority = 1 };
	char list[2048];
	size_t l = 0;

	/* the same class as lockmgr's fence thread (lockmgr/hb.c): the kill
	 * must come within the slack of the margin M (docs/cluster.md §3) */
	(void)pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp);
	while (sem_wait(&f->sem) < 0 && errno == EINTR)
		;
	for (int pass = 0; pass < KILL_PASSES; pass++) {
		if (kill_pass(f) == 0)
			break;
		sleep_ms(KILL_PASS_GAP_MS);
	}
	list[0] = '\0';
	for (int i = 0; i < f->nkilled && l + 64 < sizeof(list); i++) {
		l += (size_t)snprintf(list + l, sizeof(list) - l, "%s%d (%s)", i ? ", " : "",
				      (int)f->killed[i], f->comm[i]);
	}
	vmfsd_log(LOG_CRIT, "fenced (%s): every write of the volume fails from now on; killed %d "
	       "process(es) holding files on %s%s%s", reason_name(f->reason), f->nkilled, f->mnt,
	       f->nkilled ? ": " : "", list);
	notify_agent(f);
	return NULL;
}

int vmfsd_fence_start(const char *mnt, const char *agent_socket, void **hook_arg)
{
	pthread_t t;
	int r;

	if (strlen(mnt) >= sizeof(fr.mnt) || (agent_socket && strlen(agent_socket) >= sizeof(fr.sock)))
		return -ENAMETOOLONG;
	snprintf(fr.mnt, sizeof(fr.mnt), "%s", mnt);
	while (strlen(fr.mnt) > 1 && fr.mnt[strlen(fr.mnt) - 1] == '/')
		fr.mnt[strlen(fr.mnt) - 1] = '\0';
	snprintf(fr.sock, sizeof(fr.sock), "%s", agent_socket ? agent_socket : "");
	if (sem_init(&fr.sem, 0, 0))
		return -errno;
	r = -pthread_create(&t, NULL, fence_main, &fr);
	if (r)
		return r;
	pthread_detach(t);
	*hook_arg = &fr;
	return 0;
}

void vmfsd_fence_mounted(void)
{
	char line[8192], mp[4200];
	FILE *fp = fopen("/proc/self/mountinfo", "re");
	int id, best = 0;

	if (!fp)
		return;
	/* "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS ... - FSTYPE ...": the last
	 * fuse.vmfsd line on our mount point is the mount just made (the list
	 * is in mount order; a mount point with a space is escaped as \040
	 * there and keeps the path check alone) */
	while (fgets(line, sizeof(line), fp)) {
		const char *sep = strstr(line, " - ");

		if (sscanf(line, "%d %*d %*s %*s %4199s", &id, mp) == 2 && !strcmp(mp, fr.mnt) &&
		    sep && !strncmp(sep + 3, "fuse.vmfsd ", 11))
			best = id;
	}
	fclose(fp);
	__atomic_store_n(&fr.mnt_id, best, __ATOMIC_RELEASE);
}
