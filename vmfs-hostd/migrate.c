// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Live migration between two hosts of one datastore (vMotion, docs/vm.md
 * "Live migration").  The disks stay where they are; QEMU moves the memory
 * and device state, and the filesystem hands each disk's exclusive lock,
 * and the VM's lock record's, from the source host to the destination at
 * the switch-over (docs/cluster.md §4.7).
 *
 * Finding each other: every agent started with --migration-address
 * publishes <mount>/.vmfsd/agents/<host>.migration on each vmfsd datastore
 * it sees (its control address and a secret, mode 0600); the source agent
 * reads the destination's file on the VM's own datastore.
 *
 * The steps (source agent S, destination agent D, one TCP control
 * connection between them for the whole migration):
 *   1. S -> D "migrate-incoming": D checks the secret, accepts a handover
 *      of each disk and of the lock record <vm>.vmx.lck (user.vmfsd.handover
 *      "accept"), opens them read-only (standby opens, inherited by its
 *      QEMU), starts QEMU with -incoming defer -S, auto-read-only
 *      disks and late-block-activate, listens for the stream on its
 *      published address and answers its handover identity, the stream's
 *      port and a one-time token.
 *   2. S connects the stream (sends the token first; D also checks the
 *      peer address) and hands the socket to its QEMU (migrate fd:),
 *      with pause-before-switchover: pre-copy passes, then QEMU stops the
 *      guest, drains and flushes its disks (pre-switchover); S lets it
 *      finish (migrate-continue): the device state goes over and the
 *      source's disks are inactivated.
 *   3. S gives every disk's lock to D (user.vmfsd.handover "give"), then
 *      the lock record's.
 *   4. S -> D "switch": D's QEMU activates its disks (reopens them
 *      read-write, which finds the locks D's own) at `cont`; D opens the
 *      lock record read-write (its own too), hands it to its QEMU (QMP
 *      getfd) and rewrites it to name D and that QEMU; D lists the VM for
 *      HA and its monitor takes over; S quits the source QEMU and drops
 *      only its own HA entry.
 * Failure before 3: the source QEMU continues (`cont`) with its record;
 * D's QEMU is killed, its standby opens close and nothing moved.  Failure
 * after 3: whichever QEMU reopens its disks read-write first runs, the
 * other cannot (the lock): the source takes the record back and retries
 * `cont` until D's QEMU is gone and its locks are back; D, whose source
 * went silent, tries `cont` once, then takes the record.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <mntent.h>
#include <netdb.h>
#include <poll.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "ops.h"

#define XATTR_HANDOVER "user.vmfsd.handover"
/* D answers migrate-incoming once its QEMU is up: START_TIMEOUT_MS bounds
 * the start, plus the file opens */
#define PREPARE_TIMEOUT_MS (START_TIMEOUT_MS + 10000)
/* after D listens, S connects within milliseconds; 30 s bounds a source
 * that died in between */
#define STREAM_ACCEPT_MS 30000
/* progress is polled this often: query-migrate is cheap, and the
 * pre-switchover state must be seen soon (the guest is stopped in it) */
#define POLL_MS 10
/* how long a source whose destination failed after the handover retries
 * `cont`: D's QEMU dead -> its descriptors closed -> locks given back at
 * its next commit (1 s, docs/architecture.md); a dead D host's locks only
 * after the heartbeat timeout plus its replay (10 s by default,
 * docs/cluster.md §3) */
#define TAKEBACK_MS 30000

/* Fault injection for the tests (tests/vm/test_migrate.py): the agent's
 * environment VMFS_HOSTD_MIGRATE_FAULT names a point where this side of
 * a migration dies at once, QEMU included, as if its host failed there:
 *   dest-at-switch     the destination, on receiving "switch" (the disk
 *                      locks were handed to it, its QEMU not yet running)
 *   source-after-give  the source, right after handing the locks over */
static void fault_point(const char *name, pid_t qemu)
{
	const char *f = getenv("VMFS_HOSTD_MIGRATE_FAULT");

	if (!f || strcmp(f, name))
		return;
	if (qemu > 0)
		kill(qemu, SIGKILL);
	kill(getppid(), SIGKILL);       /* the agent too */
	_exit(1);
}

/* ---------------- lines of JSON on a socket ---------------- */

static int send_json(int fd, json_t *j)
{
	char *s = json_dumps(j, JSON_COMPACT);
	size_t len, off = 0;
	int rc = 0;

	json_decref(j);
	if (!s)
		return -ENOMEM;
	len = strlen(s);
	s = realloc(s, len + 2);
	s[len++] = '\n';
	while (off < len && !rc) {
		ssize_t k = send(fd, s + off, len - off, MSG_NOSIGNAL);

		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			rc = k < 0 ? -errno : -EPIPE;
		else
			off += (size_t)k;
	}
	free(s);
	return rc;
}

/* One line (a JSON object) within MS; -ETIMEDOUT, -EPIPE on EOF. */
static int recv_json(int fd, int ms, json_t **out)
{
	char buf[16384];
	size_t len = 0;
	int64_t end = now_ms() + ms;

	*out = NULL;
	while (len < sizeof(buf) - 1) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		int left = (int)(end - now_ms());
		ssize_t k;

		if (left <= 0)
			return -ETIMEDOUT;
		if (poll(&p, 1, left) <= 0)
			continue;
		k = recv(fd, buf + len, 1, 0);  /* byte by byte: nothing past the line */
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return -EPIPE;
		if (buf[len] == '\n') {
			json_error_t je;

			buf[len] = 0;
			*out = json_loads(buf, 0, &je);
			return *out && json_is_object(*out) ? 0 : -EBADMSG;
		}
		len++;
	}
	return -E2BIG;
}

void migrate_progress(int cfd, const char *phase, json_t *fields)
{
	if (!fields)
		fields = json_object();
	json_object_set_new(fields, "phase", json_string(phase));
	(void)send_json(cfd, json_pack("{s:o}", "progress", fields));
}

static int tcp_connect(const char *host, const char *port, struct vm_err *err)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
	int fd = -1, rc;

	rc = getaddrinfo(host, port, &hints, &ai);
	if (rc)
		return vm_errf(err, -EHOSTUNREACH, "%s:%s: %s", host, port, gai_strerror(rc));
	for (struct addrinfo *p = ai; p; p = p->ai_next) {
		fd = socket(p->ai_family, p->ai_socktype | SOCK_CLOEXEC, 0);
		if (fd >= 0 && !connect(fd, p->ai_addr, p->ai_addrlen))
			break;
		if (fd >= 0)
			close(fd);
		fd = -1;
	}
	rc = errno;
	freeaddrinfo(ai);
	if (fd < 0)
		return vm_errf(err, -rc, "connecting to %s:%s: %s", host, port, strerror(rc));
	return fd;
}

/* "ADDR:PORT" (ADDR may be [v6]) into its parts. */
static int split_hostport(const char *s, char *host, size_t hs, char *port, size_t ps)
{
	const char *c = strrchr(s, ':');

	if (!c || c == s || (size_t)(c - s) >= hs || strlen(c + 1) >= ps)
		return -EINVAL;
	if (s[0] == '[' && c[-1] == ']')
		snprintf(host, hs, "%.*s", (int)(c - s - 2), s + 1);
	else
		snprintf(host, hs, "%.*s", (int)(c - s), s);
	snprintf(port, ps, "%s", c + 1);
	return 0;
}

static void addr_text(const struct sockaddr_storage *ss, char *buf, size_t size)
{
	buf[0] = 0;
	if (ss->ss_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr, buf, (socklen_t)size);
	else if (ss->ss_family == AF_INET6)
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)ss)->sin6_addr, buf,
			  (socklen_t)size);
}

static void random_hex(char *out, size_t nbytes)
{
	unsigned char b[32];
	FILE *f = fopen("/dev/urandom", "re");

	if (nbytes > sizeof(b))
		nbytes = sizeof(b);
	if (!f || fread(b, 1, nbytes, f) != nbytes)
		for (size_t i = 0; i < nbytes; i++)
			b[i] = (unsigned char)(rand() ^ getpid() ^ (int)now_ms());
	if (f)
		fclose(f);
	for (size_t i = 0; i < nbytes; i++)
		sprintf(out + 2 * i, "%02x", b[i]);
}

void agent_migration_init(struct agent *a)
{
	random_hex(a->mig_token, 16);
}

/* ---------------- publishing the agent on the datastores ---------------- */

static bool is_vmfsd_mount(const char *dir)
{
	FILE *f = setmntent("/proc/self/mounts", "re");
	struct mntent *m;
	bool yes = false;

	while (f && (m = getmntent(f)))
		if (!strcmp(m->mnt_type, "fuse.vmfsd") && !strcmp(m->mnt_dir, dir))
			yes = true;
	if (f)
		endmntent(f);
	return yes;
}

/* Publishes on one mount, if it is one of this host's (its handover
 * identity "<slot> <generation> <host>" names us: on a test machine every
 * host's mount is visible to every agent), rewriting the file only when
 * it differs. */
static void publish_one(struct agent *a, const char *mnt)
{
	char dir[PATH_MAX], path[PATH_MAX + 128], old[2048] = "", id[300];
	const char *h;
	char *text;
	ssize_t l;
	json_t *j;

	l = getxattr(mnt, XATTR_HANDOVER, id, sizeof(id) - 1);
	if (l <= 0)
		return;
	id[l] = 0;
	h = strchr(id, ' ');
	h = h ? strchr(h + 1, ' ') : NULL;
	if (!h || strcmp(h + 1, a->host))
		return;
	j = json_pack("{s:s,s:s,s:s,s:s,s:s}", "host", a->host, "control", a->mig_listen,
		      "address", a->mig_addr, "mount", mnt, "token", a->mig_token);
	text = json_dumps(j, JSON_COMPACT);
	json_decref(j);
	snprintf(dir, sizeof(dir), "%s/.vmfsd", mnt);
	mkdir(dir, 0700);
	snprintf(dir, sizeof(dir), "%s/.vmfsd/agents", mnt);
	mkdir(dir, 0700);
	snprintf(path, sizeof(path), "%s/%s.migration", dir, a->host);
	if (text && (read_text(path, old, sizeof(old)) || strcmp(old, text))) {
		char tmp[PATH_MAX + 160];
		int fd;

		snprintf(tmp, sizeof(tmp), "%s.tmp", path);
		fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
		if (fd >= 0) {
			bool ok = write(fd, text, strlen(text)) == (ssize_t)strlen(text);

			close(fd);
			if (!ok || rename(tmp, path))
				unlink(tmp);
		}
	}
	free(text);
}

/* The sweep's job: <mount>/.vmfsd/agents/<host>.migration on each of this
 * host's vmfsd mounts.  Every mount is looked at in a child of its own,
 * waited for PUBLISH_WAIT_MS at most, with a per-mount flock in the state
 * folder: a datastore that hangs (another host's mount, a frozen or fenced
 * vmfsd) holds one child, never the sweep. */
#define PUBLISH_WAIT_MS 1000
void migration_publish(struct agent *a)
{
	FILE *f;
	struct mntent *m;

	if (!a->mig_listen[0])
		return;
	f = setmntent("/proc/self/mounts", "re");
	while (f && (m = getmntent(f))) {
		char lp[PATH_MAX + 64], key[17];
		int lfd;
		pid_t pid;

		if (strcmp(m->mnt_type, "fuse.vmfsd") || strstr(m->mnt_opts, "ro,") == m->mnt_opts)
			continue;
		vm_hash_name(m->mnt_dir, key);
		snprintf(lp, sizeof(lp), "%s/publish-%s.lock", a->state_dir, key);
		lfd = open(lp, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
		if (lfd < 0 || flock(lfd, LOCK_EX | LOCK_NB)) {
			if (lfd >= 0)
				close(lfd);
			continue;       /* the last look at it has not come back */
		}
		pid = fork();
		if (pid == 0) {
			publish_one(a, m->mnt_dir);
			_exit(0);
		}
		close(lfd);             /* the child keeps the flock until it ends */
		for (int64_t end = now_ms() + PUBLISH_WAIT_MS; pid > 0 && now_ms() < end;
		     sleep_ms(10))
			if (waitpid(pid, NULL, WNOHANG) == pid)
				break;
	}
	if (f)
		endmntent(f);
}

/* The datastore a VM folder is on: the vmfsd mount point above it. */
static int datastore_root(const char *folder, char *root, size_t size)
{
	char p[PATH_MAX];

	snprintf(p, sizeof(p), "%s", folder);
	for (;;) {
		if (is_vmfsd_mount(p)) {
			snprintf(root, size, "%s", p);
			return 0;
		}
		char *s = strrchr(p, '/');

		if (!s || s == p)
			return -ENOENT;
		*s = 0;
	}
}

/* ---------------- disks and their locks ---------------- */

/* The flat extents of V's disks (not CD-ROMs), then the snapshot deltas
 * of their chains (docs/vm.md "Snapshots"): names in the folder. */
static int flat_extents(struct vmctx *v, char names[][VM_NAME_MAX + 8], size_t *n,
			struct vm_err *err)
{
	*n = 0;
	for (size_t i = 0; i < v->cfg.ndisks; i++) {
		struct vmdk_desc desc;
		int rc;

		if (v->cfg.disks[i].cdrom)
			continue;
		rc = vmdk_load(v->dirfd, v->cfg.disks[i].file, &desc, err);
		if (rc)
			return rc;
		snprintf(names[(*n)++], VM_NAME_MAX + 8, "%s", desc.extent);
	}
	return snap_delta_files(v, names, VM_MAX_FILES - 1, n, err);
}

static int xattr_set_at(int dirfd, const char *name, const char *value)
{
	char p[64];
	int fd = openat(dirfd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC), rc = 0;

	if (fd < 0)
		return -errno;
	snprintf(p, sizeof(p), "/proc/self/fd/%d", fd);
	if (setxattr(p, XATTR_HANDOVER, value, strlen(value), 0))
		rc = -errno;
	close(fd);
	return rc;
}

/* ---------------- the destination ---------------- */

struct incoming {
	struct agent *a;
	struct vmctx v;
	int cfd;
	char peer[INET6_ADDRSTRLEN];
	struct vm_launch l;
	struct files fl;
	int src[VM_MAX_FILES], dst[VM_MAX_FILES], nfd;
	/* the files whose locks are handed to us: the flat extents, then
	 * the lock record */
	char extents[VM_MAX_FILES][VM_NAME_MAX + 8];
	size_t nextents;
	char lockname[VM_NAME_MAX + 8];
	struct vmsd *sd;              /* the snapshot chains (names QEMU's nodes) */
	int lrfd;                     /* the lock record, read-write, once ours */
	char qmp_path[PATH_MAX + 16], ser_path[PATH_MAX + 16], pidfile[PATH_MAX + 16];
	pid_t qpid;
};

static int in_pass_fd(struct incoming *m, int fd)
{
	m->fl.fd[m->fl.n++] = fd;
	m->src[m->nfd] = fd;
	m->dst[m->nfd] = 3 + m->nfd;
	return m->dst[m->nfd++];
}

static int in_pass_cb(void *ctx, int fd)
{
	return in_pass_fd(ctx, fd);
}

static json_t *in_open_files(struct incoming *m)
{
	struct vmctx *v = &m->v;
	struct vm_err err;
	char vn[VM_NAME_MAX + 8];
	int rc;

	m->sd = calloc(1, sizeof(*m->sd));
	if (!m->sd)
		return reply_err(ENOMEM, "out of memory");
	snprintf(vn, sizeof(vn), "%s.vmsd", v->cfg.name);
	rc = vmsd_load(v->dirfd, vn, m->sd, &err);
	if (rc)
		return reply_err(rc, "%s: %s", v->vmx_path, err.msg);

	for (size_t i = 0, e = 0; i < v->cfg.ndisks; i++) {
		const struct vm_disk *d = &v->cfg.disks[i];
		int fd;

		if (d->cdrom) {
			fd = open_in_folder(v->dirfd, d->file, O_RDONLY, "cdrom", &err);
		} else {
			struct vmdk_desc desc;
			int rc = vmdk_load(v->dirfd, d->file, &desc, &err);

			if (rc)
				return reply_err(rc, "%s: %s", v->vmx_path, err.msg);
			/* standby: a read-only open the source's lock allows
			 * because we accept its handover */
			rc = xattr_set_at(v->dirfd, desc.extent, "accept");
			if (rc)
				return reply_err(rc, "%s: %s: cannot accept a lock handover (%s): is the datastore a vmfsd cluster mount?",
						 v->vmx_path, desc.extent, strerror(-rc));
			fd = open_in_folder(v->dirfd, desc.extent, O_RDONLY, d->file, &err);
			m->l.disk_size[i] = desc.sectors * 512;
			snprintf(m->extents[e++], VM_NAME_MAX + 8, "%s", desc.extent);
			m->nextents = e;
		}
		if (fd < 0)
			return reply_err(fd, "%s: %s", v->vmx_path, err.msg);
		m->l.disk_fd[i] = in_pass_fd(m, fd);
		if (!d->cdrom) {
			/* its snapshot deltas: standby opens like the extent */
			char chain[VMSD_MAX_SNAPS + 1][VM_NAME_MAX + 1], failed[VM_NAME_MAX + 1];
			const char *ext = m->extents[e - 1];
			size_t n = 0;

			rc = vmsd_chain(m->sd, d->key, vmsd_top(m->sd, d->key, ext), ext, chain,
					VMSD_MAX_SNAPS + 1, &n, &err);
			for (size_t k = 0; !rc && k < n; k++) {
				rc = xattr_set_at(v->dirfd, chain[k], "accept");
				if (rc)
					vm_errf(&err, rc, "%s: cannot accept a lock handover: %s", chain[k],
						strerror(-rc));
				else
					snprintf(m->extents[e++], VM_NAME_MAX + 8, "%s", chain[k]);
			}
			m->nextents = e;
			if (!rc)
				rc = snap_chain_open(v, m->sd, i, ext, O_RDONLY, &m->l, in_pass_cb, m, failed,
						     sizeof(failed), &err);
			if (rc)
				return reply_err(rc, "%s: %s", v->vmx_path, err.msg);
		}
	}
	if (v->cfg.kernel[0]) {
		int fd = open_in_folder(v->dirfd, v->cfg.kernel, O_RDONLY, "vmfsd.kernel", &err);

		if (fd < 0)
			return reply_err(fd, "%s: %s", v->vmx_path, err.msg);
		m->l.kernel_fd = in_pass_fd(m, fd);
	}
	if (v->cfg.initrd[0]) {
		int fd = open_in_folder(v->dirfd, v->cfg.initrd, O_RDONLY, "vmfsd.initrd", &err);

		if (fd < 0)
			return reply_err(fd, "%s: %s", v->vmx_path, err.msg);
		m->l.initrd_fd = in_pass_fd(m, fd);
	}
	/* the lock record <vm>.vmx.lck moves like a disk (docs/cluster.md
	 * §4.7): a standby open now, inherited by QEMU, so the lock handed
	 * to us at the switch stays ours (never free on disk) until QEMU
	 * holds it read-write */
	{
		int rc = vm_lockrec_name(&v->cfg, m->lockname, sizeof(m->lockname)), fd;

		if (!rc)
			rc = xattr_set_at(v->dirfd, m->lockname, "accept");
		if (rc)
			return reply_err(rc, "%s: %s: cannot accept a lock handover (%s)", v->vmx_path,
					 m->lockname, strerror(-rc));
		snprintf(m->extents[m->nextents++], VM_NAME_MAX + 8, "%s", m->lockname);
		fd = openat(v->dirfd, m->lockname, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
		if (fd < 0)
			return reply_err(errno, "%s: cannot open the lock record %s in standby: %s",
					 v->vmx_path, m->lockname, strerror(errno));
		in_pass_fd(m, fd);
	}
	return NULL;
}

/* The lock record, read-write: after the switch-over its on-disk lock is
 * ours already (handed over with the disks'), so this open finds it held
 * by this host.  QEMU gets the descriptor (QMP getfd: a named descriptor
 * stays open until QEMU exits, unlike an fdset entry, which QEMU closes
 * when the last QMP client disconnects) and the record is rewritten to
 * name this host and QEMU.  The agent's copy stays in m->lrfd until the
 * migration's child ends. */
static int in_take_record(struct incoming *m, struct qmp *q, struct vm_err *err)
{
	struct vmctx *v = &m->v;
	int fd = openat(v->dirfd, m->lockname, O_RDWR | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY), rc;

	if (fd < 0)
		return vm_errf(err, -errno, "the lock record %s: %s", m->lockname, strerror(errno));
	/* the local flock the power-on takes too (two agents may share a
	 * mount); a stale one of ours is no reason to fail the switch */
	(void)flock(fd, LOCK_EX | LOCK_NB);
	rc = qmp_exec_fd(q, "getfd", json_pack("{s:s}", "fdname", "vmfsd-lockrec"), fd, NULL, err);
	if (rc) {
		close(fd);
		return rc;
	}
	m->lrfd = fd;
	return 0;
}

static json_t *in_start_qemu(struct incoming *m)
{
	struct vmctx *v = &m->v;
	struct vm_err err;
	struct strv argv = {0};
	char lp[PATH_MAX + 16];
	int fd, rc;

	sfile(v, "serial.log", lp, sizeof(lp));
	fd = open(lp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return reply_err(errno, "%s: %s", lp, strerror(errno));
	/* the console log continues the datastore's <vm>.log: the log sync
	 * (vm_log_sync) appends what the local log has past the datastore
	 * log's size, so start from a copy of it */
	{
		char logname[VM_NAME_MAX + 8], buf[65536];
		int dfd;
		ssize_t n;

		snprintf(logname, sizeof(logname), "%s.log", v->cfg.name);
		dfd = openat(v->dirfd, logname, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
		while (dfd >= 0 && (n = read(dfd, buf, sizeof(buf))) > 0)
			if (write(fd, buf, (size_t)n) != n)
				break;
		if (dfd >= 0)
			close(dfd);
	}
	m->l.log_fd = in_pass_fd(m, fd);
	sfile(v, "qmp.sock", m->qmp_path, sizeof(m->qmp_path));
	sfile(v, "serial.sock", m->ser_path, sizeof(m->ser_path));
	sfile(v, "qemu.pid", m->pidfile, sizeof(m->pidfile));
	unlink(m->qmp_path);
	unlink(m->ser_path);
	m->l.qmp_path = m->qmp_path;
	m->l.serial_path = m->ser_path;
	m->l.pidfile = m->pidfile;
	m->l.incoming = true;
	m->l.migrate_in = true;
	m->l.aio = "io_uring";
	rc = vm_qemu_argv(&m->l, &argv, &err);
	if (!rc)
		rc = spawn_qemu(v, &argv, m->src, m->dst, m->nfd, &m->qpid, &err);
	strv_free(&argv);
	if (rc)
		return reply_err(rc, "%s: %s", v->vmx_path, err.msg);
	return NULL;
}

/* Kills the incoming QEMU and forgets it; the standby opens close with
 * it, which gives back any lock that was handed to us unused. */
static void in_abandon(struct incoming *m, const char *why)
{
	char p[PATH_MAX + 16];

	if (m->qpid > 0) {
		kill(m->qpid, SIGKILL);
		wait_pid_gone(m->qpid, QUIT_GRACE_MS);
	}
	if (m->lrfd >= 0)
		close(m->lrfd);
	m->lrfd = -1;
	files_close(&m->fl);
	for (size_t i = 0; i < m->nextents; i++)
		(void)xattr_set_at(m->v.dirfd, m->extents[i], "cancel");
	static const char *const files[] = {"pid", "qemu.pid", "qmp.sock", "serial.sock", "accel", NULL};
	for (int i = 0; files[i]; i++) {
		sfile(&m->v, files[i], p, sizeof(p));
		unlink(p);
	}
	agent_event(m->a, m->v.vmx_path, "migrate.incoming-abandoned", "%s", why);
}

/* Q: the QMP connection kept open since migrate-incoming (a new one
 * would cost a connect and a negotiation inside the guest's pause). */
static int in_cont(struct incoming *m, struct qmp *qp, struct vm_err *err)
{
	struct qmp own, *q = qp;
	json_t *ret = NULL;
	int rc = 0;

	if (!q || q->fd < 0) {
		q = &own;
		rc = qmp_open(q, m->qmp_path, QMP_TIMEOUT_MS, err);
		if (rc)
			return rc;
	}
	/* the memory state must be all in: status leaves "inmigrate" */
	rc = wait_migration(q, true, NULL, -1, err);
	if (!rc)
		rc = qmp_exec(q, "cont", NULL, NULL, err);
	if (!rc)
		rc = qmp_exec(q, "query-status", NULL, &ret, err);
	if (!rc && strcmp(json_string_value(json_object_get(ret, "status")) ?: "", "running"))
		rc = vm_errf(err, -EIO, "QEMU is %s after cont",
			     json_string_value(json_object_get(ret, "status")) ?: "?");
	json_decref(ret);
	if (q == &own)
		qmp_close(q);
	return rc;
}

/* The VM runs here now: the lock record (held through m->lrfd and QEMU's
 * copy) names this host and QEMU, the state folder knows the QEMU, the
 * inventory lists it, this host's HA list protects it and the monitor
 * watches it from here on (docs/ha.md, docs/vm.md "VM monitoring"). */
static void in_adopt(struct incoming *m, const char *how)
{
	struct vmctx *v = &m->v;
	char p[PATH_MAX + 16], txt[64];
	struct vm_lockrec rec = {0};
	int rc;

	snprintf(rec.host, sizeof(rec.host), "%s", m->a->host);
	rec.agent_pid = m->a->pid;
	rec.qemu_pid = m->qpid;
	rec.started = (int64_t)time(NULL);
	vm_boot_id(rec.boot_id, sizeof(rec.boot_id));
	rc = m->lrfd >= 0 ? vm_lockrec_write(m->lrfd, &rec) : -EBADF;
	if (rc)
		agent_event(m->a, v->vmx_path, "migrate.record-failed",
			    "runs here, but its lock record %s could not be %s: %s", m->lockname,
			    m->lrfd >= 0 ? "rewritten" : "taken", strerror(-rc));
	inventory_edit(m->a, v->vmx_path, NULL);
	{
		char dp[PATH_MAX + VM_NAME_MAX + 8];

		snprintf(dp, sizeof(dp), "%s/%s.log", v->folder, v->cfg.name);
		sfile(v, "dslog", p, sizeof(p));
		write_text(p, dp);
	}
	sfile(v, "res", p, sizeof(p));
	snprintf(txt, sizeof(txt), "%u %u\n", v->cfg.vcpus, v->cfg.mem_mib);
	write_text(p, txt);
	sfile(v, "fenced", p, sizeof(p));
	unlink(p);
	sfile(v, "migrated-to", p, sizeof(p));
	unlink(p);
	/* protected here before the source drops its own entry: at every
	 * instant some list names the VM */
	rc = ha_protect(m->a, v);
	if (rc)
		agent_event(m->a, v->vmx_path, "ha.protect-failed",
			    "running, but NOT protected by HA: cannot write this host's protected list: %s",
			    strerror(-rc));
	monitor_power_on(m->a, v, false);
	agent_event(m->a, v->vmx_path, "migrate.arrived", "%s (QEMU pid %d)", how, (int)m->qpid);
}

/* Waits for the one stream connection of this migration: from the
 * source's address, with the one-time token first.  Others are closed. */
static int in_accept_stream(struct incoming *m, int lfd, const char *token, struct vm_err *err)
{
	int64_t end = now_ms() + STREAM_ACCEPT_MS;

	while (now_ms() < end) {
		struct pollfd p = {.fd = lfd, .events = POLLIN};
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		char peer[INET6_ADDRSTRLEN], line[80];
		size_t n = 0;
		int fd;

		if (poll(&p, 1, (int)(end - now_ms())) <= 0)
			continue;
		fd = accept4(lfd, (struct sockaddr *)&ss, &sl, SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		addr_text(&ss, peer, sizeof(peer));
		/* the token line, byte by byte: QEMU's stream follows it */
		while (n < sizeof(line) - 1) {
			struct pollfd q = {.fd = fd, .events = POLLIN};

			if (poll(&q, 1, 5000) <= 0 || recv(fd, line + n, 1, 0) != 1)
				break;
			if (line[n] == '\n')
				break;
			n++;
		}
		line[n] = 0;
		if (strcmp(peer, m->peer) || strcmp(line, token)) {
			agent_event(m->a, m->v.vmx_path, "migrate.stream-refused",
				    "a stream connection from %s was refused (%s)", peer,
				    strcmp(peer, m->peer) ? "not the source's address" : "wrong token");
			close(fd);
			continue;
		}
		return fd;
	}
	return vm_errf(err, -ETIMEDOUT, "the source did not connect the migration stream within %d s",
		       STREAM_ACCEPT_MS / 1000);
}

/* The destination's whole part, on the control connection CFD. */
void agent_migrate_incoming(struct agent *a, json_t *req, int cfd, const char *peer)
{
	struct incoming m = {.a = a, .cfd = cfd,
			     .l = {.qemu = a->qemu, .kernel_fd = -1, .initrd_fd = -1, .log_fd = -1}};
	const char *token = req_str(req, "token"), *mount = req_str(req, "mount"),
		   *rel = req_str(req, "vmx"), *src = req_str(req, "source");
	char path[PATH_MAX * 2], stoken[40], ident[256], sport[16];
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	struct vm_err err;
	json_t *reply = NULL, *msg = NULL;
	struct qmp q = {.fd = -1};
	int lfd = -1, sfd = -1, rc;
	bool got_switch = false;

	snprintf(m.peer, sizeof(m.peer), "%s", peer);
	m.lrfd = -1;
	m.v.lockfd = -1;
	m.v.dirfd = -1;
	if (!token || strcmp(token, a->mig_token)) {
		send_json(cfd, reply_err(EACCES, "migration refused: wrong or missing token"));
		return;
	}
	if (!mount || !rel || !src || strstr(rel, "..") || rel[0] == '/' || !is_vmfsd_mount(mount)) {
		send_json(cfd, reply_err(EINVAL, "migration refused: bad datastore or VM path"));
		return;
	}
	snprintf(path, sizeof(path), "%s/%s", mount, rel);
	rc = vmctx_open(a, path, true, &m.v, &err);
	if (rc) {
		send_json(cfd, reply_err(rc, "%s", err.msg));
		return;
	}
	m.l.cfg = &m.v.cfg;
	if ((reply = maint_refuse(a, m.v.vmx_path, "incoming migration")))
		goto fail;
	if (vm_qemu_pid(&m.v)) {
		reply = reply_err(EALREADY, "%s already runs on host %s", m.v.vmx_path, a->host);
		goto fail;
	}
	if ((rc = vm_check_resources(m.v.cfg.vcpus, m.v.cfg.mem_mib, &a->res, &err))) {
		reply = reply_err(rc, "host %s cannot take %s: %s", a->host, m.v.vmx_path, err.msg);
		goto fail;
	}
	m.l.accel = vm_accel_resolve(m.v.cfg.accel != VM_ACCEL_AUTO ? m.v.cfg.accel : a->accel);
	agent_event(a, m.v.vmx_path, "migrate.incoming", "preparing to receive the VM from host %s (%s)",
		    src, peer);
	if ((reply = in_open_files(&m)) || (reply = in_start_qemu(&m)))
		goto fail;
	files_close(&m.fl);     /* QEMU has them */
	{
		char p[PATH_MAX + 16], t[32];

		sfile(&m.v, "vmx", p, sizeof(p));
		write_text(p, m.v.vmx_path);
		sfile(&m.v, "accel", p, sizeof(p));
		write_text(p, vm_accel_name(m.l.accel));
		sfile(&m.v, "pid", p, sizeof(p));
		snprintf(t, sizeof(t), "%d\n", (int)m.qpid);
		write_text(p, t);
	}
	/* our handover identity, from the datastore's root */
	{
		ssize_t l = getxattr(mount, XATTR_HANDOVER, ident, sizeof(ident) - 1);

		if (l <= 0) {
			reply = reply_err(EIO, "%s: cannot read this host's handover identity", mount);
			goto fail;
		}
		ident[l] = 0;
	}
	/* the stream: on our published address, a fresh port */
	lfd = socket(strchr(a->mig_addr, ':') ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	{
		struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST}, *ai;

		if (lfd < 0 || getaddrinfo(a->mig_addr, "0", &hints, &ai)) {
			reply = reply_err(EINVAL, "cannot listen on %s", a->mig_addr);
			goto fail;
		}
		rc = bind(lfd, ai->ai_addr, ai->ai_addrlen) || listen(lfd, 4) ? -errno : 0;
		freeaddrinfo(ai);
		if (rc || getsockname(lfd, (struct sockaddr *)&ss, &sl)) {
			reply = reply_err(rc ? -rc : errno, "cannot listen on %s", a->mig_addr);
			goto fail;
		}
		snprintf(sport, sizeof(sport), "%d",
			 ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
						       : ((struct sockaddr_in6 *)&ss)->sin6_port));
	}
	random_hex(stoken, 16);
	reply = reply_ok("host %s is ready to receive %s", a->host, m.v.vmx_path);
	json_object_set_new(reply, "stream_port", json_string(sport));
	json_object_set_new(reply, "stream_token", json_string(stoken));
	json_object_set_new(reply, "handover", json_string(ident));
	json_object_set_new(reply, "qemu_pid", json_integer(m.qpid));
	if (send_json(cfd, reply)) {
		reply = NULL;
		in_abandon(&m, "the source went away");
		goto out;
	}
	reply = NULL;
	sfd = in_accept_stream(&m, lfd, stoken, &err);
	close(lfd);
	lfd = -1;
	if (sfd < 0) {
		in_abandon(&m, err.msg);
		goto out;
	}
	rc = qmp_open(&q, m.qmp_path, QMP_TIMEOUT_MS, &err);
	if (rc)
		q.fd = -1;      /* a failed open may leave 0 there */
	if (!rc) {
		rc = qmp_exec(&q, "migrate-set-capabilities",
			      json_pack("{s:[{s:s,s:b},{s:s,s:b}]}", "capabilities", "capability",
					"events", "state", 1, "capability", "late-block-activate",
					"state", 1),
			      NULL, &err);
		if (!rc)
			rc = qmp_exec_fd(&q, "getfd", json_pack("{s:s}", "fdname", "migration"), sfd,
					 NULL, &err);
		if (!rc)
			rc = qmp_exec(&q, "migrate-incoming", json_pack("{s:s}", "uri", "fd:migration"),
				      NULL, &err);
	}
	close(sfd);
	if (rc) {
		in_abandon(&m, err.msg);
		goto out;
	}
	/* now the source streams; it says "switch" after giving the locks,
	 * or "abort"; EOF means it went away */
	rc = recv_json(cfd, MIGRATE_TIMEOUT_MS, &msg);
	got_switch = !rc && !strcmp(req_str(msg, "cmd") ?: "", "switch");
	if (got_switch)
		fault_point("dest-at-switch", m.qpid);
	if (!rc && !got_switch) {
		in_abandon(&m, "the source aborted the migration");
		goto out;
	}
	rc = in_cont(&m, &q, &err);
	if (rc) {
		char why[600];

		snprintf(why, sizeof(why), "%s: %s", got_switch ? "cont failed" :
			 "the source went away and the VM cannot run here", err.msg);
		in_abandon(&m, why);
		if (got_switch)
			send_json(cfd, reply_err(rc, "host %s: %s", a->host, why));
		goto out;
	}
	int64_t resumed = wall_ms();

	/* the lock record: handed to us with the disks (at "switch"); a
	 * source that went silent may have been cut off before giving it,
	 * and gives up its own claim after TAKEBACK_MS (agent_migrate's
	 * abort), so wait a little longer than that for it */
	for (int64_t end = now_ms() + (got_switch ? 2000 : TAKEBACK_MS + 15000);;) {
		struct vm_err e2;

		if (!in_take_record(&m, &q, &e2))
			break;
		if (now_ms() >= end) {
			agent_log(a, "%s: %s", m.v.vmx_path, e2.msg);
			break;
		}
		sleep_ms(500);
	}
	{
		char how[300];

		snprintf(how, sizeof(how), got_switch ? "live migration from host %s finished: running here"
			 : "the source host %s went away after the switch-over: running here", src);
		in_adopt(&m, how);
	}
	reply = reply_ok("%s runs on host %s", m.v.vmx_path, a->host);
	json_object_set_new(reply, "resume_wall_ms", json_integer(resumed));
	json_object_set_new(reply, "qemu_pid", json_integer(m.qpid));
	send_json(cfd, reply);
	reply = NULL;
	goto out;
fail:
	if (m.qpid > 0 || m.fl.n)
		in_abandon(&m, json_string_value(json_object_get(reply, "error")) ?: "failed");
	send_json(cfd, reply);
	reply = NULL;
out:
	json_decref(msg);
	if (q.fd >= 0)
		qmp_close(&q);
	if (lfd >= 0)
		close(lfd);
	if (m.lrfd >= 0)
		close(m.lrfd);
	files_close(&m.fl);
	free(m.sd);
	vmctx_close(&m.v);
}

/* ---------------- the source ---------------- */

/* Takes back a lock record handed to the destination (RECORD) and runs
 * the source QEMU PID again, retrying for MS: the destination gives the
 * locks back when its QEMU is gone (its standby descriptors closed) or,
 * if its host died, when the survivors break them (docs/cluster.md §4.7).
 * The record first: the host that holds it is the one that runs the VM. */
static int src_takeback(struct agent *a, struct vmctx *v, pid_t pid, bool record, int ms,
			struct vm_err *err)
{
	int64_t end = now_ms() + ms;
	char ln[VM_NAME_MAX + 8];
	int rc = -EIO;

	if (vm_lockrec_name(&v->cfg, ln, sizeof(ln)))
		record = false;
	do {
		if (record) {
			/* the flock comes after getfd: our QEMU's old descriptor
			 * (same name, replaced and closed by QEMU) still has it */
			int fd = openat(v->dirfd, ln, O_RDWR | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
			char qp[PATH_MAX + 16];
			struct qmp q;

			rc = fd < 0 ? vm_errf(err, -errno, "the lock record %s: %s", ln, strerror(errno)) : 0;
			sfile(v, "qmp.sock", qp, sizeof(qp));
			if (!rc && !(rc = qmp_open(&q, qp, QMP_TIMEOUT_MS, err))) {
				rc = qmp_exec_fd(&q, "getfd", json_pack("{s:s}", "fdname", "vmfsd-lockrec"), fd,
						 NULL, err);
				qmp_close(&q);
			}
			if (!rc) {
				struct vm_lockrec r = {0};

				(void)flock(fd, LOCK_EX | LOCK_NB);
				snprintf(r.host, sizeof(r.host), "%s", a->host);
				r.agent_pid = a->pid;
				r.qemu_pid = pid;
				r.started = (int64_t)time(NULL);
				vm_boot_id(r.boot_id, sizeof(r.boot_id));
				(void)vm_lockrec_write(fd, &r);
				record = false;
				agent_event(a, v->vmx_path, "migrate.record-back",
					    "the lock record %s is this host's again", ln);
			}
			if (fd >= 0)
				close(fd);
		}
		if (!record) {
			json_t *e = qmp_simple(v, "cont", NULL, NULL, err);

			rc = e ? -EIO : 0;
			json_decref(e);
			if (!rc) {
				char st[32] = "";

				if (!vm_run_status(v, st, sizeof(st)) && !strcmp(st, "running"))
					return 0;
				rc = vm_errf(err, -EIO, "QEMU is %s after cont", st[0] ? st : "?");
			}
		}
		sleep_ms(500);
	} while (now_ms() < end);
	return rc;
}

static json_t *progress_fields(json_t *mq)
{
	json_t *ram = json_object_get(mq, "ram");

	return json_pack("{s:I,s:I,s:I,s:I,s:I,s:f}",
			 "pass", json_integer_value(json_object_get(ram, "dirty-sync-count")),
			 "transferred", json_integer_value(json_object_get(ram, "transferred")),
			 "remaining", json_integer_value(json_object_get(ram, "remaining")),
			 "total", json_integer_value(json_object_get(ram, "total")),
			 "dirty_pages_rate", json_integer_value(json_object_get(ram, "dirty-pages-rate")),
			 "mbps", json_real_value(json_object_get(ram, "mbps")));
}

json_t *agent_migrate(struct agent *a, json_t *req, int cfd)
{
	const char *path = req_str(req, "path"), *dest = req_str(req, "host");
	char root[PATH_MAX], pub[PATH_MAX + 300], text[2048], chost[256], cport[32], qmp_path[PATH_MAX + 16];
	/* the flat extents, then the lock record: handed over in this order */
	char extents[VM_MAX_FILES][VM_NAME_MAX + 8];
	size_t nextents = 0;
	struct vmctx v;
	struct vm_err err;
	json_t *pubj = NULL, *r1 = NULL, *r2 = NULL, *reply = NULL, *mq = NULL;
	int ctl = -1, sfd = -1, rc;
	int64_t t0 = now_ms(), t_stop = 0, t_completed = 0, t_given = 0, t_switch = 0;
	int64_t stop_wall = 0;
	pid_t pid;
	struct qmp q = {.fd = -1};
	bool paused = false, given = false;
	size_t ngiven = 0;
	int last_pass = -1;

	if (!dest || !dest[0])
		return reply_err(EINVAL, "migrate: --host HOST is required");
	rc = vmctx_open(a, path, true, &v, &err);
	if (rc)
		return reply_err(rc, "%s", err.msg);
	if (!(pid = vm_qemu_pid(&v))) {
		reply = reply_err(ENOENT, "%s is not running on host %s", v.vmx_path, a->host);
		goto out;
	}
	if (!strcmp(dest, a->host)) {
		reply = reply_err(EINVAL, "%s already runs on host %s", v.vmx_path, dest);
		goto out;
	}
	if (datastore_root(v.folder, root, sizeof(root))) {
		reply = reply_err(EINVAL, "%s is not on a vmfsd datastore", v.vmx_path);
		goto out;
	}
	snprintf(pub, sizeof(pub), "%s/.vmfsd/agents/%s.migration", root, dest);
	if (read_text(pub, text, sizeof(text)) || !(pubj = json_loads(text, 0, NULL))) {
		reply = reply_err(EHOSTUNREACH, "host %s has not published a migration address on %s (%s): is its vmfs-hostd running with --migration-address?",
				  dest, root, pub);
		goto out;
	}
	if ((rc = flat_extents(&v, extents, &nextents, &err)) ||
	    (rc = vm_lockrec_name(&v.cfg, extents[nextents], sizeof(extents[0])))) {
		reply = reply_err(rc, "%s: %s", v.vmx_path, rc == -ENAMETOOLONG ? strerror(-rc) : err.msg);
		goto out;
	}
	nextents++;
	if (split_hostport(req_str(pubj, "control") ?: "", chost, sizeof(chost), cport, sizeof(cport))) {
		reply = reply_err(EINVAL, "%s: no usable control address", pub);
		goto out;
	}
	ctl = tcp_connect(chost, cport, &err);
	if (ctl < 0) {
		/* a restarted agent (another port) republishes within a sweep,
		 * and this host sees the new file within the attribute timeout
		 * (1 s, docs/architecture.md): read it once more */
		sleep_ms(2500);
		json_decref(pubj);
		pubj = NULL;
		if (!read_text(pub, text, sizeof(text)) && (pubj = json_loads(text, 0, NULL)) &&
		    !split_hostport(req_str(pubj, "control") ?: "", chost, sizeof(chost), cport,
				    sizeof(cport)))
			ctl = tcp_connect(chost, cport, &err);
	}
	if (ctl < 0) {
		reply = reply_err(ctl, "host %s: %s", dest, err.msg);
		goto out;
	}
	agent_event(a, v.vmx_path, "migrate.start", "live migration to host %s started", dest);
	migrate_progress(cfd, "prepare", json_pack("{s:s}", "destination", dest));
	rc = send_json(ctl, json_pack("{s:s,s:s,s:s,s:s,s:s}", "cmd", "migrate-incoming", "token",
				      req_str(pubj, "token") ?: "", "mount", req_str(pubj, "mount") ?: "",
				      "vmx", v.vmx_path + strlen(root) + 1, "source", a->host));
	if (!rc)
		rc = recv_json(ctl, PREPARE_TIMEOUT_MS, &r1);
	if (rc || !json_is_true(json_object_get(r1, "ok"))) {
		reply = reply_err(rc ? rc : EIO, "host %s cannot receive %s: %s", dest, v.vmx_path,
				  rc ? strerror(-rc) : req_str(r1, "error") ?: "?");
		goto out;
	}
	/* the stream: to the address the destination published, token first */
	sfd = tcp_connect(req_str(pubj, "address") ?: "", req_str(r1, "stream_port") ?: "", &err);
	if (sfd < 0) {
		reply = reply_err(sfd, "host %s: stream: %s", dest, err.msg);
		goto out;
	}
	snprintf(text, sizeof(text), "%s\n", req_str(r1, "stream_token") ?: "");
	if (send(sfd, text, strlen(text), MSG_NOSIGNAL) != (ssize_t)strlen(text)) {
		reply = reply_err(EPIPE, "host %s: stream: %s", dest, strerror(errno));
		goto out;
	}
	sfile(&v, "qmp.sock", qmp_path, sizeof(qmp_path));
	rc = qmp_open(&q, qmp_path, QMP_TIMEOUT_MS, &err);
	if (rc)
		q.fd = -1;
	if (!rc)
		rc = qmp_exec(&q, "migrate-set-capabilities",
			      json_pack("{s:[{s:s,s:b},{s:s,s:b}]}", "capabilities", "capability",
					"events", "state", 1, "capability", "pause-before-switchover",
					"state", 1),
			      NULL, &err);
	/* QEMU 7.2's default limit is 128 MiB/s for a live migration
	 * (migration/migration.c); a VM moves between hosts of one cluster
	 * on a dedicated link, so take what the link gives unless told */
	if (!rc)
		rc = qmp_exec(&q, "migrate-set-parameters",
			      json_pack("{s:I,s:I}", "max-bandwidth",
					json_integer_value(json_object_get(req, "bandwidth")) > 0
						? json_integer_value(json_object_get(req, "bandwidth"))
						: (json_int_t)1 << 40,
					"downtime-limit",
					json_integer_value(json_object_get(req, "downtime_ms")) > 0
						? json_integer_value(json_object_get(req, "downtime_ms"))
						: 300),
			      NULL, &err);
	if (!rc)
		rc = qmp_exec_fd(&q, "getfd", json_pack("{s:s}", "fdname", "migration"), sfd, NULL, &err);
	close(sfd);
	sfd = -1;
	if (!rc)
		rc = qmp_exec(&q, "migrate", json_pack("{s:s}", "uri", "fd:migration"), NULL, &err);
	if (rc) {
		reply = reply_err(rc, "%s: %s", v.vmx_path, err.msg);
		goto abort;
	}
	/* pre-copy passes, then pre-switchover (guest stopped, disks
	 * drained and flushed), then the rest of the state */
	for (;;) {
		const char *st;
		struct pollfd p = {.fd = ctl, .events = POLLIN};

		json_decref(mq);
		mq = NULL;
		if ((rc = qmp_exec(&q, "query-migrate", NULL, &mq, &err))) {
			reply = reply_err(rc, "%s: %s", v.vmx_path, err.msg);
			goto abort;
		}
		st = req_str(mq, "status") ?: "";
		if (!strcmp(st, "completed"))
			break;
		if (!strcmp(st, "failed") || !strcmp(st, "cancelled")) {
			reply = reply_err(EIO, "%s: migration %s: %s", v.vmx_path, st,
					  req_str(mq, "error-desc") ?: "(no reason given)");
			goto abort;
		}
		if (!strcmp(st, "pre-switchover") && !paused) {
			paused = true;
			t_stop = now_ms();
			stop_wall = wall_ms();
			migrate_progress(cfd, "stop-and-copy", progress_fields(mq));
			if ((rc = qmp_exec(&q, "migrate-continue",
					   json_pack("{s:s}", "state", "pre-switchover"), NULL, &err))) {
				reply = reply_err(rc, "%s: %s", v.vmx_path, err.msg);
				goto abort;
			}
		} else if (!strcmp(st, "active")) {
			json_t *ram = json_object_get(mq, "ram");
			int pass = (int)json_integer_value(json_object_get(ram, "dirty-sync-count"));

			if (pass != last_pass) {
				last_pass = pass;
				migrate_progress(cfd, "pre-copy", progress_fields(mq));
			}
		}
		if (poll(&p, 1, 0) > 0) {      /* the destination said something: it failed */
			reply = reply_err(EIO, "host %s gave up receiving %s", dest, v.vmx_path);
			goto abort;
		}
		sleep_ms(POLL_MS);
	}
	t_completed = now_ms();
	/* the source's disks are inactive now: hand their locks over */
	for (size_t i = 0; i < nextents; i++) {
		const char *id = req_str(r1, "handover") ?: "";
		unsigned long slot;
		unsigned long long gen;

		if (sscanf(id, "%lu %llu", &slot, &gen) != 2) {
			reply = reply_err(EINVAL, "host %s: bad handover identity '%s'", dest, id);
			goto abort;
		}
		snprintf(text, sizeof(text), "give %lu %llu", slot, gen);
		rc = xattr_set_at(v.dirfd, extents[i], text);
		if (rc) {
			reply = reply_err(rc, "%s: handing the lock of %s to host %s failed: %s",
					  v.vmx_path, extents[i], dest, strerror(-rc));
			given = i > 0;
			goto abort;
		}
		given = true;
		ngiven = i + 1;
	}
	t_given = now_ms();
	/* the switch-over happened as far as the locks go: should this agent
	 * die now, the next one's sweep must not take the QEMU's end for a
	 * failure (monitor.c asks migrate_left) */
	sfile(&v, "migrated-to", text, sizeof(text));
	write_text(text, dest);
	fault_point("source-after-give", pid);
	migrate_progress(cfd, "switch-over", json_pack("{s:I}", "lock_handover_ms",
							(json_int_t)(t_given - t_completed)));
	rc = send_json(ctl, json_pack("{s:s}", "cmd", "switch"));
	if (!rc)
		rc = recv_json(ctl, QMP_TIMEOUT_MS * 3, &r2);
	t_switch = now_ms();
	if (rc || !json_is_true(json_object_get(r2, "ok"))) {
		reply = reply_err(rc ? rc : EIO, "host %s could not start %s after the switch-over: %s",
				  dest, v.vmx_path, rc ? strerror(-rc) : req_str(r2, "error") ?: "?");
		goto abort;
	}
	/* done: the source QEMU goes (the lock record names the destination
	 * now, so the cleanup leaves it) */
	qmp_close(&q);
	q.fd = -1;
	{
		json_t *e = qmp_simple(&v, "quit", NULL, NULL, &err);

		json_decref(e);
		if (!wait_pid_gone(pid, QUIT_GRACE_MS)) {
			kill(pid, SIGKILL);
			wait_pid_gone(pid, QUIT_GRACE_MS);
		}
	}
	char why[300];

	snprintf(why, sizeof(why), "migrated to host %s", dest);
	vm_cleanup(a, &v, why);
	inventory_edit(a, NULL, v.vmx_path);
	/* the destination lists it now (in_adopt, before its answer): only
	 * our own entry goes, never the destination's (ha_unprotect would) */
	ha_unprotect_here(a, &v, why);
	{
		json_t *ram = json_object_get(mq, "ram");
		int64_t resume_wall = json_integer_value(json_object_get(r2, "resume_wall_ms"));
		int64_t pause = resume_wall > 0 ? resume_wall - stop_wall : -1;

		agent_event(a, v.vmx_path, "migrate.done",
			    "migrated to host %s in %lld ms; guest paused %lld ms (QEMU downtime %lld ms, lock handover %lld ms)",
			    dest, (long long)(t_switch - t0), (long long)pause,
			    (long long)json_integer_value(json_object_get(mq, "downtime")),
			    (long long)(t_given - t_completed));
		reply = reply_ok("%s migrated to host %s in %.2f s (guest paused %lld ms)", v.vmx_path,
				 dest, (double)(t_switch - t0) / 1000, (long long)pause);
		json_object_set_new(reply, "host", json_string(dest));
		json_object_set_new(reply, "total_ms", json_integer(t_switch - t0));
		json_object_set_new(reply, "pause_ms", json_integer(pause));
		json_object_set_new(reply, "qemu_downtime_ms", json_object_get(mq, "downtime")
			? json_integer(json_integer_value(json_object_get(mq, "downtime"))) : json_null());
		json_object_set_new(reply, "stop_to_completed_ms", json_integer(t_completed - t_stop));
		json_object_set_new(reply, "lock_handover_ms", json_integer(t_given - t_completed));
		json_object_set_new(reply, "switch_ms", json_integer(t_switch - t_given));
		json_object_set_new(reply, "passes", json_integer(json_integer_value(
				    json_object_get(ram, "dirty-sync-count"))));
		json_object_set_new(reply, "transferred", json_integer(json_integer_value(
				    json_object_get(ram, "transferred"))));
	}
	goto out;
abort:
	/* nothing moved (or the destination failed after the handover): the
	 * VM goes on here; the destination's QEMU is killed by its agent when
	 * it reads "abort" or sees us close */
	if (ctl >= 0)
		(void)send_json(ctl, json_pack("{s:s}", "cmd", "abort"));
	if (ctl >= 0)
		close(ctl);
	ctl = -1;
	if (q.fd >= 0) {
		json_t *st = NULL;
		struct vm_err e2;

		if (!qmp_exec(&q, "query-migrate", NULL, &st, &e2) &&
		    !strcmp(req_str(st, "status") ?: "", "active"))
			qmp_exec(&q, "migrate_cancel", NULL, NULL, &e2);
		json_decref(st);
		qmp_close(&q);
		q.fd = -1;
	}
	{
		struct vm_err e2;
		bool rec_given = ngiven == nextents;
		int crc = src_takeback(a, &v, pid, rec_given, given ? TAKEBACK_MS : 5000, &e2);
		char holder[256] = "";
		struct vm_lockrec lr;

		if (crc && given &&
		    ((!vm_lockrec_read(v.dirfd, extents[nextents - 1], &lr) && !strcmp(lr.host, dest)) ||
		     (ds_lock_holder(v.dirfd, extents[0], holder, sizeof(holder)) == 1 &&
		      !strcmp(holder, dest)))) {
			/* the destination runs it (its record says so, or it
			 * holds the disks): our stopped, inactive QEMU has no
			 * future, and goes (with it any claim on the record) */
			json_t *e = qmp_simple(&v, "quit", NULL, NULL, &e2);

			json_decref(e);
			if (!wait_pid_gone(pid, QUIT_GRACE_MS))
				kill(pid, SIGKILL);
			snprintf(text, sizeof(text), "migrated to host %s (its answer was lost)", dest);
			vm_cleanup(a, &v, text);
			inventory_edit(a, NULL, v.vmx_path);
			ha_unprotect_here(a, &v, text);
			agent_event(a, v.vmx_path, "migrate.done", "%s: the VM runs on host %s", text, dest);
			json_decref(reply);
			reply = reply_ok("%s runs on host %s (the switch-over happened; its answer was lost)",
					 v.vmx_path, dest);
			json_object_set_new(reply, "host", json_string(dest));
		} else if (crc) {
			agent_event(a, v.vmx_path, "migrate.failed",
				    "migration to host %s failed (%s) and the VM could not be resumed here: %s",
				    dest, json_string_value(json_object_get(reply, "error")) ?: "?", e2.msg);
		} else {
			sfile(&v, "migrated-to", text, sizeof(text));
			unlink(text);
			agent_event(a, v.vmx_path, "migrate.failed",
				    "migration to host %s failed%s; the VM goes on running here (host %s): %s",
				    dest, given ? " after the lock handover (the locks were taken back)" : "",
				    a->host, json_string_value(json_object_get(reply, "error")) ?: "?");
			json_object_set_new(reply, "still_running_on", json_string(a->host));
		}
	}
out:
	if (q.fd >= 0)
		qmp_close(&q);
	if (ctl >= 0)
		close(ctl);
	if (sfd >= 0)
		close(sfd);
	json_decref(pubj);
	json_decref(r1);
	json_decref(r2);
	json_decref(mq);
	vmctx_close(&v);
	return reply;
}

/* ---------------- after the fact ---------------- */

bool migrate_left(struct agent *a, const char *sdir, const char *vmx)
{
	char p[PATH_MAX + 16], to[256] = "", holder[256] = "", self[256] = "", ln[VM_NAME_MAX + 8];
	char why[400];
	struct vm_err err;
	struct vmctx v;
	struct dsview d;
	bool note;

	snprintf(p, sizeof(p), "%s/migrated-to", sdir);
	note = !read_text(p, to, sizeof(to)) && to[0];
	if (!note) {
		/* a VM killed by a fence is the HA loop's business (ha.c) */
		snprintf(p, sizeof(p), "%s/fenced", sdir);
		if (!access(p, F_OK))
			return false;
	}
	if (vmctx_open(a, vmx, false, &v, &err)) {
		vmctx_close(&v);
		return false;
	}
	snprintf(v.sdir, sizeof(v.sdir), "%s", sdir);
	if (!ds_open(v.folder, &d)) {
		snprintf(self, sizeof(self), "%s", d.self ? d.self : "");
		ds_close(&d);
	}
	/* who holds the lock record now: the host the VM runs on */
	if (!v.cfg_ok || vm_lockrec_name(&v.cfg, ln, sizeof(ln)) ||
	    ds_lock_holder(v.dirfd, ln, holder, sizeof(holder)) != 1 || !self[0] ||
	    !strcmp(holder, self))
		holder[0] = '\0';
	if (!note && !holder[0]) {
		vmctx_close(&v);
		return false;
	}
	if (note)
		snprintf(why, sizeof(why), "migrated to host %s%s%s", to,
			 holder[0] && strcmp(holder, to) ? "; its lock record is held by host " : "",
			 holder[0] && strcmp(holder, to) ? holder : "");
	else
		snprintf(why, sizeof(why), "QEMU ended here; the VM runs on host %s now (it holds the lock record)",
			 holder);
	/* not a guest power-off and not a crash: no restart here, and the
	 * new host's protected list keeps it (only ours loses it) */
	vm_cleanup(a, &v, why);
	inventory_edit(a, NULL, v.vmx_path);
	ha_unprotect_here(a, &v, why);
	unlink(p);
	snprintf(p, sizeof(p), "%s/migrated-to", sdir);
	unlink(p);
	vmctx_close(&v);
	return true;
}

/* ---------------- a migration asked for by another agent ---------------- */

/* The control connection's "migrate-out" (vmfsctl balance --apply on
 * another host): move a VM this host runs to HOST.  It needs this agent's
 * secret, as a migrate-incoming does: whoever may feed this host VMs may
 * also ask it to move one away within the cluster. */
json_t *agent_migrate_out(struct agent *a, json_t *req, int cfd)
{
	const char *token = req_str(req, "token"), *mount = req_str(req, "mount"),
		   *rel = req_str(req, "vmx"), *dest = req_str(req, "host");
	char path[PATH_MAX * 2];
	json_t *mreq, *r;

	if (!token || strcmp(token, a->mig_token))
		return reply_err(EACCES, "migration refused: wrong or missing token");
	if (!mount || !rel || !dest || strstr(rel, "..") || rel[0] == '/' || !is_vmfsd_mount(mount))
		return reply_err(EINVAL, "migration refused: bad datastore or VM path");
	snprintf(path, sizeof(path), "%s/%s", mount, rel);
	mreq = json_pack("{s:s,s:s,s:s}", "cmd", "migrate", "path", path, "host", dest);
	r = agent_migrate(a, mreq, cfd);
	json_decref(mreq);
	return r;
}

/* Asks host FROM's agent (its published control address on ROOT) to
 * migrate REL to TO; its progress lines are passed on to CFD. */
json_t *migrate_remote(const char *root, const char *from, const char *rel, const char *to, int cfd)
{
	char pub[PATH_MAX + 300], text[2048], chost[256], cport[32];
	struct vm_err err;
	json_t *pj = NULL, *r = NULL;
	int fd, rc;

	snprintf(pub, sizeof(pub), "%s/.vmfsd/agents/%s.migration", root, from);
	if (read_text(pub, text, sizeof(text)) || !(pj = json_loads(text, 0, NULL)) ||
	    split_hostport(req_str(pj, "control") ?: "", chost, sizeof(chost), cport, sizeof(cport))) {
		json_decref(pj);
		return reply_err(EHOSTUNREACH, "host %s published no migration address on %s", from, root);
	}
	fd = tcp_connect(chost, cport, &err);
	if (fd < 0) {
		json_decref(pj);
		return reply_err(-fd, "host %s: %s", from, err.msg);
	}
	rc = send_json(fd, json_pack("{s:s,s:s,s:s,s:s,s:s}", "cmd", "migrate-out", "token",
				     req_str(pj, "token") ?: "", "mount", req_str(pj, "mount") ?: "",
				     "vmx", rel, "host", to));
	json_decref(pj);
	while (!rc) {
		json_t *p;

		rc = recv_json(fd, MIGRATE_TIMEOUT_MS, &r);
		if (rc)
			break;
		if (!(p = json_object_get(r, "progress")))
			break;
		json_incref(p);
		(void)send_json(cfd, json_pack("{s:o}", "progress", p));
		json_decref(r);
		r = NULL;
	}
	close(fd);
	if (rc) {
		json_decref(r);
		return reply_err(-rc, "host %s: no answer to the migration of %s: %s", from, rel,
				 strerror(-rc));
	}
	return r;
}
