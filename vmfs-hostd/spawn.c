// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Starting QEMU and moving memory state: opening a VM's files the safe way
 * (O_NOFOLLOW, in the VM folder, regular files only), naming the host that
 * holds a busy disk (user.vmfsd.lock), rotating the VM's log, forking and
 * exec'ing QEMU with the agent's descriptors placed where the command line
 * names them (/proc/self/fd/N), and waiting for a migration to or from a
 * .vmss file to finish.
 */
#include <errno.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <time.h>

#include "ops.h"
#include "storage.h"

void files_close(struct files *f)
{
	for (int i = 0; i < f->n; i++)
		if (f->fd[i] >= 0)
			close(f->fd[i]);
	f->n = 0;
}

/* Opens name in the VM folder: no symlink, a regular file. */
int open_in_folder(int dirfd, const char *name, int flags, const char *key,
			  struct vm_err *err)
{
	struct stat st;
	int fd = openat(dirfd, name, flags | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);

	if (fd < 0) {
		int e = errno;

		if (e == ELOOP)
			return vm_errf(err, -ELOOP,
				       "%s: '%s' is a symbolic link (refused: it could point outside the VM folder)",
				       key, name);
		return vm_errf(err, -e, "%s: '%s': %s", key, name, strerror(e));
	}
	if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
		close(fd);
		return vm_errf(err, -EINVAL, "%s: '%s' is not a regular file", key, name);
	}
	return fd;
}

/* The host holding a busy file, as the cluster filesystem shows it: the
 * virtual attribute user.vmfsd.lock reads "<mode> by <host> (slot N)"
 * (fs/xattr.c).  host gets the name, desc the whole description. */
void busy_holder(int dirfd, const char *name, char *host, size_t hsize, char *desc,
			size_t dsize)
{
	char path[64];
	int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_PATH);
	ssize_t l;

	host[0] = desc[0] = '\0';
	if (fd < 0)
		return;
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	l = getxattr(path, "user.vmfsd.lock", desc, dsize - 1);
	close(fd);
	if (l <= 0)
		return;
	desc[l] = '\0';
	for (char *c = desc; *c; c++)
		if ((unsigned char)*c < 0x20 || *c == 0x7f)
			*c = '?';
	const char *by = strstr(desc, " by ");
	if (by) {
		by += 4;
		size_t n = strcspn(by, " (");
		if (n < hsize) {
			memcpy(host, by, n);
			host[n] = '\0';
		}
	}
}

void fmt_time(int64_t t, char *buf, size_t size)
{
	time_t tt = (time_t)t;
	struct tm tm;

	localtime_r(&tt, &tm);
	strftime(buf, size, "%Y-%m-%d %H:%M:%S", &tm);
}

/* Rotates <vm>.log like VMware's vmware.log: keeps 3 older ones. */
void rotate_log(int dirfd, const char *name)
{
	char a[VM_NAME_MAX + 16], b[VM_NAME_MAX + 16];
	struct stat st;

	snprintf(a, sizeof(a), "%s.log", name);
	if (fstatat(dirfd, a, &st, AT_SYMLINK_NOFOLLOW) || st.st_size == 0)
		return;
	for (int i = 3; i >= 1; i--) {
		if (i == 1)
			snprintf(a, sizeof(a), "%s.log", name);
		else
			snprintf(a, sizeof(a), "%s-%d.log", name, i - 1);
		snprintf(b, sizeof(b), "%s-%d.log", name, i);
		renameat(dirfd, a, dirfd, b);
	}
}

/* Forks + execs QEMU with the given descriptors mapped to the numbers the
 * command line names; waits for the -daemonize parent.  Returns 0 and the
 * daemon's pid, or the exit status with QEMU's message in err. */
int spawn_qemu(struct vmctx *v, struct strv *argv, const int *src, const int *dst, int n,
		      pid_t *qemu_pid, struct vm_err *err)
{
	char errpath[PATH_MAX + 16], pidpath[PATH_MAX + 16], buf[64];
	int efd, st = 0;
	pid_t pid;
	int64_t deadline;

	sfile(v, "qemu.err", errpath, sizeof(errpath));
	sfile(v, "qemu.pid", pidpath, sizeof(pidpath));
	unlink(pidpath);
	efd = open(errpath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (efd < 0)
		return vm_errf(err, -errno, "%s: %s", errpath, strerror(errno));
	pid = fork();
	if (pid < 0) {
		close(efd);
		return vm_errf(err, -errno, "fork: %s", strerror(errno));
	}
	if (pid == 0) {
		int hi[VM_MAX_FILES], nul = open("/dev/null", O_RDWR);

		/* move every source out of the way first, then place it */
		for (int i = 0; i < n; i++)
			hi[i] = fcntl(src[i], F_DUPFD_CLOEXEC, 3 + VM_MAX_FILES);
		dup2(nul, 0);
		dup2(efd, 1);
		dup2(efd, 2);
		for (int i = 0; i < n; i++)
			dup2(hi[i], dst[i]);       /* dup2 clears FD_CLOEXEC */
		setsid();
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		execvp(argv->v[0], argv->v);
		fprintf(stderr, "exec %s: %s\n", argv->v[0], strerror(errno));
		_exit(127);
	}
	close(efd);
	deadline = now_ms() + START_TIMEOUT_MS;
	for (;;) {
		pid_t r = waitpid(pid, &st, WNOHANG);

		if (r == pid)
			break;
		if (now_ms() > deadline) {
			kill(pid, SIGKILL);
			waitpid(pid, &st, 0);
			return vm_errf(err, -ETIMEDOUT, "QEMU did not start within %d s",
				       START_TIMEOUT_MS / 1000);
		}
		sleep_ms(20);
	}
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		char msg[400] = "";
		int fd = open(errpath, O_RDONLY | O_CLOEXEC);

		if (fd >= 0) {
			ssize_t k = read(fd, msg, sizeof(msg) - 1);

			msg[k > 0 ? k : 0] = '\0';
			close(fd);
		}
		for (char *c = msg; *c; c++)
			if (*c == '\n')
				*c = ' ';
		return vm_errf(err, -EIO, "QEMU failed to start (exit %d): %s",
			       WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st), msg);
	}
	if (read_text(pidpath, buf, sizeof(buf)) || atoi(buf) <= 0)
		return vm_errf(err, -EIO, "QEMU started but wrote no pid file");
	*qemu_pid = atoi(buf);
	return 0;
}

int save_state(struct qmp *q, int fd, struct task *t, struct vm_err *err)
{
	/* QEMU 7.2 limits migration to 128 MiB/s by default (MAX_THROTTLE in
	 * migration/migration.c), a pace meant for a network link: a save to
	 * a file goes as fast as the disk (libvirt lifts the limit the same
	 * way for its save-to-file) */
	int rc = qmp_exec(q, "migrate-set-parameters",
			  json_pack("{s:I}", "max-bandwidth", (json_int_t)1 << 40), NULL, err);

	if (!rc)
		rc = qmp_exec_fd(q, "getfd", json_pack("{s:s}", "fdname", "state"), fd, NULL, err);
	if (!rc)
		rc = qmp_exec(q, "migrate", json_pack("{s:s}", "uri", "fd:state"), NULL, err);
	if (!rc)
		rc = wait_migration(q, false, t, -1, err);
	return rc;
}

int wait_migration(struct qmp *q, bool incoming, struct task *t, int in_fd, struct vm_err *err)
{
	int64_t deadline = now_ms() + MIGRATE_TIMEOUT_MS;

	for (;;) {
		json_t *ret = NULL;
		int rc = qmp_exec(q, incoming ? "query-status" : "query-migrate", NULL, &ret, err);
		const char *s;

		if (rc)
			return rc;
		s = json_string_value(json_object_get(ret, "status"));
		if (!s)
			s = "";
		if (incoming ? strcmp(s, "inmigrate") != 0 : !strcmp(s, "completed")) {
			json_decref(ret);
			break;
		}
		if (!incoming && (!strcmp(s, "failed") || !strcmp(s, "cancelled"))) {
			const char *e = json_string_value(json_object_get(ret, "error-desc"));

			rc = vm_errf(err, -EIO, "migration %s: %s", s, e ? e : "(no reason given)");
			json_decref(ret);
			return rc;
		}
		if (t && incoming && in_fd >= 0) {
			/* QEMU reads the state through a duplicate of IN_FD:
			 * one open file, one offset (QEMU 7.2's query-migrate
			 * has no byte counts on the incoming side) */
			struct stat st;
			off_t pos = lseek(in_fd, 0, SEEK_CUR);

			if (pos >= 0 && !fstat(in_fd, &st) && st.st_size > 0)
				task_progress(t, "loading memory", (uint64_t)pos,
					      (uint64_t)(pos > st.st_size ? pos : st.st_size));
		} else if (t && !incoming) {
			/* the memory written so far of the guest's RAM */
			json_t *ram = json_object_get(ret, "ram");
			json_int_t done = json_integer_value(json_object_get(ram, "transferred"));
			json_int_t total = json_integer_value(json_object_get(ram, "total"));

			if (total > 0)
				task_progress(t, "saving memory", (uint64_t)done,
					      (uint64_t)(done > total ? done : total));
		}
		json_decref(ret);
		if (now_ms() > deadline)
			return vm_errf(err, -ETIMEDOUT, "migration did not finish within %d s",
				       MIGRATE_TIMEOUT_MS / 1000);
		sleep_ms(100);
	}
	if (incoming) {
		json_t *ret = NULL;
		int rc = qmp_exec(q, "query-migrate", NULL, &ret, err);
		const char *s = json_string_value(json_object_get(ret, "status"));

		if (!rc && s && !strcmp(s, "failed"))
			rc = vm_errf(err, -EIO, "loading the memory state failed");
		json_decref(ret);
		struct stat st;

		/* loaded: the bar ends full even when it ended between polls */
		if (!rc && t && in_fd >= 0 && !fstat(in_fd, &st))
			task_progress(t, "loading memory", (uint64_t)st.st_size, (uint64_t)st.st_size);
		return rc;
	}
	return 0;
}

int state_task(struct agent *a, struct qmp *q, const char *op, const char *vm, int fd, bool save,
	       struct vm_err *err)
{
	struct task t;
	int rc;

	/* none when the record cannot be made: t.j stays NULL */
	task_begin(&t, a, op, vm, NULL, false);
	rc = save ? save_state(q, fd, t.j ? &t : NULL, err)
		  : wait_migration(q, true, t.j ? &t : NULL, fd, err);
	if (t.j) {
		json_t *r = rc ? reply_err(rc, "%s", err->msg) : reply_ok(save ? "saved" : "loaded");

		task_end(&t, r);
		json_decref(r);
	}
	return rc;
}

/* Runs qemu-img with ARGV (no shell); KEEP are descriptors it inherits
 * (named /proc/self/fd/N in ARGV).  "-p" progress lines "(12.34/100%)" go
 * to the task as DONE of TOTAL bytes in PHASE; the rest of its output is
 * kept for the error message. */
int qemu_img_run(struct task *t, const char *phase, uint64_t total, char *const argv[],
		 const int *keep, int nkeep, struct vm_err *err)
{
	int pfd[2], status;
	char out[1024] = "", buf[512];
	size_t olen = 0;
	pid_t pid;

	if (pipe2(pfd, O_CLOEXEC))
		return vm_errf(err, -errno, "pipe: %s", strerror(errno));
	pid = fork();
	if (pid < 0) {
		close(pfd[0]);
		close(pfd[1]);
		return vm_errf(err, -errno, "fork: %s", strerror(errno));
	}
	if (pid == 0) {
		int nul = open("/dev/null", O_RDONLY);

		dup2(nul, 0);
		dup2(pfd[1], 1);
		dup2(pfd[1], 2);
		for (int i = 0; i < nkeep; i++)
			fcntl(keep[i], F_SETFD, 0);
		execvp("qemu-img", argv);
		_exit(127);
	}
	close(pfd[1]);
	for (;;) {
		ssize_t n = read(pfd[0], buf, sizeof(buf) - 1);
		char *p;

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		buf[n] = '\0';
		/* the last "(x/100%)" of this read is the progress */
		for (p = buf; (p = strchr(p, '(')); p++) {
			double pct;

			if (sscanf(p, "(%lf/100%%)", &pct) == 1 && t && t->j)
				task_progress(t, phase, (uint64_t)(pct / 100.0 * (double)total), total);
		}
		/* the tail of the output (buf is smaller than out): the
		 * error message comes last */
		if (olen + (size_t)n >= sizeof(out)) {
			size_t drop = olen + (size_t)n - (sizeof(out) - 1);

			memmove(out, out + drop, olen - drop);
			olen -= drop;
		}
		memcpy(out + olen, buf, (size_t)n);
		olen += (size_t)n;
	}
	close(pfd[0]);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	out[olen] = '\0';
	while (olen && (out[olen - 1] == '\n' || out[olen - 1] == ' ' || out[olen - 1] == '\r'))
		out[--olen] = '\0';
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 127)
		return vm_errf(err, -ENOENT, "qemu-img not found (scripts/deps.sh installs qemu-utils)");
	/* the message is the last "qemu-img: ..." line, after the
	 * progress lines ("(12.34/100%)\r") */
	char *msg = out, *p;

	while ((p = strstr(msg, "qemu-img:")) && strstr(p + 1, "qemu-img:"))
		msg = strstr(p + 1, "qemu-img:");
	if ((p = strstr(msg, "qemu-img:")))
		msg = p;
	else if ((p = strrchr(msg, '\r')))
		msg = p + 1;
	return vm_errf(err, -EIO, "qemu-img %s failed: %s", argv[1], *msg ? msg : "no message");
}
