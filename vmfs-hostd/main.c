// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * vmfs-hostd: the host agent.  One per hypervisor host: it listens on a
 * unix socket for vmfsctl, launches the QEMU of every VM powered on here
 * and keeps its state (pid files, QMP and serial sockets) in --state-dir,
 * so that VMs outlive both the CLI and the agent: QEMU runs daemonized in
 * its own session, and a restarted agent re-attaches to the QEMUs its
 * state folder names.  Each request is served by a forked child (a long
 * shutdown or suspend never blocks other requests); per-VM flocks in the
 * state folder serialize operations on one VM.  The agent is a child
 * subreaper, so the QEMUs it starts are reaped by it and their end is
 * noticed at once; every second it also sweeps the state folder for VMs
 * whose QEMU ended (guest power-off) and releases their lock records.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "hostd.h"

#ifndef VMFSD_VERSION
#define VMFSD_VERSION "?"
#endif

static const char *prog = "vmfs-hostd";
/* the migration control listener (-1: none); children close it, or a
 * leftover child of a stopped agent would accept its connections */
static int mig_listen_fd = -1;

/* A request must arrive this fast once connected: vmfsctl writes it at
 * once; this only frees children stuck on a peer that never speaks. */
#define REQUEST_READ_TIMEOUT_MS 10000
#define REQUEST_MAX (64 * 1024)

void agent_log(const struct agent *a, const char *fmt, ...)
{
	va_list ap;
	char ts[32];
	time_t t = time(NULL);
	struct tm tm;

	localtime_r(&t, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%d %H:%M:%S", &tm);
	fprintf(stderr, "%s %s[%s]: ", ts, prog, a->host);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* The control listener for live migrations on ADDR[:PORT] (port 0: any
 * free one); fills the agent's published addresses and secret. */
static int migration_listen(struct agent *a, const char *spec)
{
	char host[64], port[16] = "0";
	const char *c = strrchr(spec, ':');
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST}, *ai;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	int fd, one = 1;

	if (c && strchr(spec, ':') == c) {          /* v4 or name with a port */
		snprintf(host, sizeof(host), "%.*s", (int)(c - spec), spec);
		snprintf(port, sizeof(port), "%s", c + 1);
	} else if (spec[0] == '[' && (c = strstr(spec, "]:"))) {
		snprintf(host, sizeof(host), "%.*s", (int)(c - spec - 1), spec + 1);
		snprintf(port, sizeof(port), "%s", c + 2);
	} else {
		snprintf(host, sizeof(host), "%s", spec);
	}
	if (getaddrinfo(host, port, &hints, &ai)) {
		fprintf(stderr, "%s: --migration-address: '%s' is not ADDR[:PORT] (a numeric address)\n",
			prog, spec);
		return -1;
	}
	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd >= 0)
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (fd < 0 || bind(fd, ai->ai_addr, ai->ai_addrlen) || listen(fd, 16) ||
	    getsockname(fd, (struct sockaddr *)&ss, &sl)) {
		fprintf(stderr, "%s: cannot listen on %s: %s\n", prog, spec, strerror(errno));
		freeaddrinfo(ai);
		return -1;
	}
	freeaddrinfo(ai);
	snprintf(a->mig_addr, sizeof(a->mig_addr), "%s", host);
	snprintf(a->mig_listen, sizeof(a->mig_listen), ss.ss_family == AF_INET6 ? "[%s]:%d" : "%s:%d",
		 host, ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
						     : ((struct sockaddr_in6 *)&ss)->sin6_port));
	agent_migration_init(a);
	return fd;
}

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: %s --host NAME [--socket PATH] [--state-dir DIR] [options]\n"
		"\n"
		"The vmfsd host agent: runs the VMs of this host (QEMU) for vmfsctl.\n"
		"\n"
		"Options:\n"
		"  -H, --host NAME          this host's name (as in vmfsd -o host=NAME;\n"
		"                           default: the machine's host name)\n"
		"  -s, --socket PATH        the socket vmfsctl talks to\n"
		"                           (default /run/vmfs-hostd/NAME.sock)\n"
		"  -S, --state-dir DIR      pid files and QEMU sockets of the running VMs\n"
		"                           (default /run/vmfs-hostd/NAME)\n"
		"  -a, --accel auto|kvm|tcg accelerator of VMs whose .vmx does not choose\n"
		"                           (default auto: KVM when /dev/kvm works and this\n"
		"                           host is not itself a VM, else TCG)\n"
		"  -q, --qemu PATH          QEMU binary (default qemu-system-x86_64)\n"
		"  -m, --migration-address ADDR[:PORT]\n"
		"                           accept live migrations: the control port and\n"
		"                           the migration streams listen on ADDR only\n"
		"                           (published on every vmfsd datastore; default:\n"
		"                           no migrations to this host)\n"
		"  -t, --shutdown-timeout S seconds a guest gets to shut down after the\n"
		"                           ACPI power button before it is powered off\n"
		"                           (default 90)\n"
		"HA (vmfs-hostd(8), HA):\n"
		"  -D, --datastore PATH     a datastore (vmfsd mount) to watch (repeatable);\n"
		"                           default: every vmfsd mount of this host name\n"
		"                           found in /proc/self/mountinfo\n"
		"  -M, --max-memory MIB     memory HA may fill with restarted VMs here\n"
		"                           (default: all of MemTotal)\n"
		"  -R, --cpu-ratio R        vCPUs per host CPU HA may commit here (default 4)\n"
		"      --no-ha              do not restart other hosts' VMs here\n"
		"      --vm-monitoring on|off  restart a VM in place when its QEMU crashes,\n"
		"                           its guest panics or QEMU hangs (default on)\n"
		"      --max-restarts N     at most N restarts of a VM ... (default 3)\n"
		"      --restart-window S   ... within S seconds, then it is left off\n"
		"                           (default 3600)\n"
		"      --restart-backoff S  wait before the 2nd restart, doubling up to\n"
		"                           300 s (default 10; the 1st restart is at once)\n"
		"      --hang-timeout S     QEMU silent on QMP this long is hung: killed and\n"
		"                           restarted (default 30)\n"
		"  -h, --help               this help\n"
		"  -V, --version            version\n"
		"\n"
		"Runs in the foreground and logs to standard error; see vmfs-hostd(8).\n",
		prog);
}

enum {
	OPT_VM_MONITORING = 0x100,
	OPT_MAX_RESTARTS,
	OPT_RESTART_WINDOW,
	OPT_RESTART_BACKOFF,
	OPT_HANG_TIMEOUT,
};

/* An integer option in [min, max]; prints the error itself. */
static int opt_int(const char *arg, const char *name, long min, long max, int *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(arg, &end, 10);
	if (errno || end == arg || *end || v < min || v > max) {
		fprintf(stderr, "%s: %s: '%s' is not a number in %ld..%ld\n", prog, name, arg, min, max);
		return -EINVAL;
	}
	*out = (int)v;
	return 0;
}

static int mkdir_p(const char *path, mode_t mode)
{
	char tmp[PATH_MAX];

	if (strlen(path) >= sizeof(tmp))
		return -ENAMETOOLONG;
	strcpy(tmp, path);
	for (char *p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(tmp, mode) && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(tmp, mode) && errno != EEXIST)
		return -errno;
	return 0;
}

static int read_request(int fd, json_t **out)
{
	char *buf = malloc(REQUEST_MAX + 1);
	size_t n = 0;
	json_error_t je;

	if (!buf)
		return -ENOMEM;
	while (n < REQUEST_MAX) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		int r = poll(&p, 1, REQUEST_READ_TIMEOUT_MS);
		ssize_t k;

		if (r <= 0) {
			free(buf);
			return r == 0 ? -ETIMEDOUT : -errno;
		}
		k = read(fd, buf + n, REQUEST_MAX - n);
		if (k <= 0) {
			free(buf);
			return k == 0 ? -EPIPE : -errno;
		}
		n += (size_t)k;
		if (memchr(buf, '\n', n))
			break;
	}
	buf[n] = '\0';
	*out = json_loads(buf, JSON_DISABLE_EOF_CHECK, &je);
	free(buf);
	return *out && json_is_object(*out) ? 0 : -EPROTO;
}

static void write_reply(int fd, json_t *reply)
{
	char *s = json_dumps(reply, JSON_COMPACT);
	size_t len, off = 0;

	if (!s)
		return;
	len = strlen(s);
	s[len] = '\0';
	while (off < len) {
		ssize_t k = send(fd, s + off, len - off, MSG_NOSIGNAL);

		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			break;
		off += (size_t)k;
	}
	(void)!send(fd, "\n", 1, MSG_NOSIGNAL);
	free(s);
}

static void serve(struct agent *a, int cfd)
{
	json_t *req = NULL, *reply;
	int rc = read_request(cfd, &req);

	if (rc) {
		reply = json_pack("{s:b,s:s,s:i}", "ok", 0, "error", "malformed request", "errno",
				  -rc);
	} else {
		/* long operations stream progress lines on it (task.c,
		 * migrate.c) */
		a->client_fd = cfd;
		reply = agent_request(a, req);
		json_decref(req);
	}
	write_reply(cfd, reply);
	json_decref(reply);
}

/* Another agent's control connection (live migration): one request, a
 * migrate-incoming, which then runs its whole dialogue on CFD. */
static void serve_migration(struct agent *a, int cfd, const struct sockaddr_storage *ss)
{
	json_t *req = NULL;
	char peer[64] = "";

	if (ss->ss_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr, peer, sizeof(peer));
	else if (ss->ss_family == AF_INET6)
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)ss)->sin6_addr, peer, sizeof(peer));
	if (read_request(cfd, &req))
		return;
	if (!strcmp(json_string_value(json_object_get(req, "cmd")) ?: "", "migrate-incoming")) {
		agent_migrate_incoming(a, req, cfd, peer);
	} else if (!strcmp(json_string_value(json_object_get(req, "cmd")) ?: "", "migrate-out")) {
		json_t *r = agent_migrate_out(a, req, cfd);

		write_reply(cfd, r);
		json_decref(r);
	} else
		write_reply(cfd, json_pack("{s:b,s:s,s:i}", "ok", 0, "error",
					   "only migrate-incoming and migrate-out are served here", "errno", EPERM));
	json_decref(req);
}

bool agent_reaped_status(const struct agent *a, pid_t pid, int *status)
{
	for (unsigned i = 0; i < AGENT_REAPED_MAX && i < a->nreaped; i++)
		if (a->reaped[i].pid == pid) {
			*status = a->reaped[i].status;
			return true;
		}
	return false;
}

int agent_reaped_signal(const struct agent *a, pid_t pid)
{
	int st;

	if (agent_reaped_status(a, pid, &st) && WIFSIGNALED(st))
		return WTERMSIG(st);
	return 0;
}

/* The agent's own descriptors (its socket, the signal fd, the state
 * folder's lock): closed in every child (main sets them). */
static int loop_fds[3] = {-1, -1, -1};

/* A child of the agent's loop: signals back to normal and none of the
 * agent's descriptors, the listeners above all (a child must not keep
 * accepting for us).  0 in the child; its pid, or -1 (logged), here. */
static pid_t fork_child(struct agent *a, const sigset_t *mask)
{
	pid_t pid = fork();

	if (pid == 0) {
		sigprocmask(SIG_UNBLOCK, mask, NULL);
		signal(SIGTERM, SIG_DFL);
		for (int i = 0; i < 3; i++)
			if (loop_fds[i] >= 0)
				close(loop_fds[i]);
		if (mig_listen_fd >= 0)
			close(mig_listen_fd);
	} else if (pid < 0) {
		agent_log(a, "fork: %s", strerror(errno));
	}
	return pid;
}

static pid_t reconcile_child(struct agent *a, bool startup, const sigset_t *mask)
{
	pid_t pid = fork_child(a, mask);

	if (pid == 0) {
		agent_reconcile(a, startup);
		_exit(0);
	}
	return pid < 0 ? 0 : pid;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"host", required_argument, NULL, 'H'},
		{"socket", required_argument, NULL, 's'},
		{"state-dir", required_argument, NULL, 'S'},
		{"accel", required_argument, NULL, 'a'},
		{"qemu", required_argument, NULL, 'q'},
		{"shutdown-timeout", required_argument, NULL, 't'},
		{"datastore", required_argument, NULL, 'D'},
		{"max-memory", required_argument, NULL, 'M'},
		{"cpu-ratio", required_argument, NULL, 'R'},
		{"no-ha", no_argument, NULL, 'N'},
		{"vm-monitoring", required_argument, NULL, OPT_VM_MONITORING},
		{"max-restarts", required_argument, NULL, OPT_MAX_RESTARTS},
		{"restart-window", required_argument, NULL, OPT_RESTART_WINDOW},
		{"restart-backoff", required_argument, NULL, OPT_RESTART_BACKOFF},
		{"hang-timeout", required_argument, NULL, OPT_HANG_TIMEOUT},
		{"migration-address", required_argument, NULL, 'm'},
		{"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, 'V'},
		{0},
	};
	struct agent a = {
		.qemu = "qemu-system-x86_64",
		/* systemd's DefaultTimeoutStopSec (90 s): the grace a service
		 * gets to stop is a fair grace for a guest OS to shut down */
		.shutdown_timeout = 90,
		.client_fd = -1,
		.ha = true,
		/* VM monitoring (docs/vm.md "VM monitoring" has the sources):
		 * vSphere HA's default "Maximum per-VM resets" (3) and its
		 * 1-hour reset period; Kubernetes' CrashLoopBackOff start (10 s,
		 * doubling); vSphere's shortest failure interval (30 s) */
		.mon = {.enabled = true, .max_restarts = 3, .window = 3600, .backoff = 10,
			.hang_timeout = 30},
	};
	double cpu_ratio = 4.0;
	long long max_mem = 0;
	char hostbuf[256];
	const char *sock = NULL, *sdir = NULL, *maddr = NULL;
	int c, rc, lockfd, lfd, sfd, mfd = -1;
	sigset_t mask;

	while ((c = getopt_long(argc, argv, "H:s:S:a:q:t:m:D:M:R:hV", opts, NULL)) != -1) {
		switch (c) {
		case 'H':
			a.host = optarg;
			break;
		case 's':
			sock = optarg;
			break;
		case 'S':
			sdir = optarg;
			break;
		case 'a':
			if (vm_accel_parse(optarg, &a.accel)) {
				fprintf(stderr, "%s: --accel: '%s' is not auto, kvm or tcg\n", prog, optarg);
				return 2;
			}
			break;
		case 'q':
			a.qemu = optarg;
			break;
		case 't': {
			char *end;
			long v = strtol(optarg, &end, 10);

			if (*end || v < 1 || v > 86400) {
				fprintf(stderr, "%s: --shutdown-timeout: '%s' is not 1..86400 seconds\n", prog,
					optarg);
				return 2;
			}
			a.shutdown_timeout = (int)v;
			break;
		}
		case 'm':
			maddr = optarg;
			break;
		case 'D':
			if (a.nds == 16 || optarg[0] != '/') {
				fprintf(stderr, "%s: --datastore: at most 16, absolute paths\n", prog);
				return 2;
			}
			a.datastores[a.nds++] = optarg;
			break;
		case 'M': {
			char *end;

			max_mem = strtoll(optarg, &end, 10);
			if (*end || max_mem < 16) {
				fprintf(stderr, "%s: --max-memory: '%s' is not a size in MiB (>= 16)\n", prog,
					optarg);
				return 2;
			}
			break;
		}
		case 'R': {
			char *end;

			cpu_ratio = strtod(optarg, &end);
			if (*end || !(cpu_ratio > 0 && cpu_ratio <= 64)) {
				fprintf(stderr, "%s: --cpu-ratio: '%s' is not a number in (0, 64]\n", prog,
					optarg);
				return 2;
			}
			break;
		}
		case 'N':
			a.ha = false;
			break;
		case OPT_VM_MONITORING:
			if (strcmp(optarg, "on") && strcmp(optarg, "off")) {
				fprintf(stderr, "%s: --vm-monitoring: '%s' is not on or off\n", prog, optarg);
				return 2;
			}
			a.mon.enabled = !strcmp(optarg, "on");
			break;
		case OPT_MAX_RESTARTS:
			if (opt_int(optarg, "--max-restarts", VM_HA_MAX_RESTARTS_MIN, VM_HA_MAX_RESTARTS_MAX,
				    &a.mon.max_restarts))
				return 2;
			break;
		case OPT_RESTART_WINDOW:
			if (opt_int(optarg, "--restart-window", VM_HA_WINDOW_MIN, VM_HA_WINDOW_MAX,
				    &a.mon.window))
				return 2;
			break;
		case OPT_RESTART_BACKOFF:
			if (opt_int(optarg, "--restart-backoff", 0, 300, &a.mon.backoff))
				return 2;
			break;
		case OPT_HANG_TIMEOUT:
			if (opt_int(optarg, "--hang-timeout", VM_HA_HANG_MIN, VM_HA_HANG_MAX,
				    &a.mon.hang_timeout))
				return 2;
			break;
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			printf("%s %s\n", prog, VMFSD_VERSION);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "%s: unexpected argument '%s'\n", prog, argv[optind]);
		usage(stderr);
		return 2;
	}
	if (!a.host) {
		if (gethostname(hostbuf, sizeof(hostbuf))) {
			fprintf(stderr, "%s: no --host and gethostname failed: %s\n", prog, strerror(errno));
			return 1;
		}
		hostbuf[sizeof(hostbuf) - 1] = '\0';
		a.host = hostbuf;
	}
	if (!*a.host || strlen(a.host) > 64 || strpbrk(a.host, "/\n\r\t ")) {
		fprintf(stderr, "%s: --host: '%s' is not a host name (1-64 characters, no '/' or spaces)\n",
			prog, a.host);
		return 2;
	}
	if (sdir)
		snprintf(a.state_dir, sizeof(a.state_dir), "%s", sdir);
	else
		snprintf(a.state_dir, sizeof(a.state_dir), "/run/vmfs-hostd/%s", a.host);
	if (sock)
		snprintf(a.socket_path, sizeof(a.socket_path), "%s", sock);
	else
		snprintf(a.socket_path, sizeof(a.socket_path), "/run/vmfs-hostd/%s.sock", a.host);
	/* QEMU's sockets live in state_dir/vms/<16 hex>/serial.sock: they
	 * must fit sockaddr_un.sun_path (108 bytes, unix(7)) */
	if (strlen(a.state_dir) + 40 >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
		fprintf(stderr, "%s: --state-dir '%s' is too long for unix socket paths (at most 67 characters)\n",
			prog, a.state_dir);
		return 2;
	}
	if (strlen(a.socket_path) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
		fprintf(stderr, "%s: --socket '%s' is too long (at most 107 characters)\n", prog,
			a.socket_path);
		return 2;
	}
	a.pid = getpid();
	rc = vm_host_resources(&a.res);
	if (rc) {
		fprintf(stderr, "%s: reading /proc/meminfo: %s\n", prog, strerror(-rc));
		return 1;
	}
	/* HA capacity: memory is never overcommitted by default (a restart
	 * that swaps helps nobody); vCPUs are time-shared, 4 per CPU is the
	 * common consolidation ratio for general-purpose VMs (docs/ha.md §6) */
	a.cap_mem_mib = max_mem ? max_mem : (long long)a.res.mem_mib;
	a.cap_vcpus = (int)(cpu_ratio * a.res.cpus);
	char vms[PATH_MAX + 8];
	snprintf(vms, sizeof(vms), "%s/vms", a.state_dir);
	rc = mkdir_p(vms, 0700);
	if (rc) {
		fprintf(stderr, "%s: cannot create the state folder %s: %s\n", prog, a.state_dir,
			strerror(-rc));
		return 1;
	}
	char lockpath[PATH_MAX + 16];
	snprintf(lockpath, sizeof(lockpath), "%s/agent.lock", a.state_dir);
	lockfd = open(lockpath, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (lockfd < 0 || flock(lockfd, LOCK_EX | LOCK_NB)) {
		fprintf(stderr, "%s: another vmfs-hostd already uses the state folder %s\n", prog,
			a.state_dir);
		return 1;
	}
	{
		char *slash = strrchr(a.socket_path, '/');

		if (slash && slash != a.socket_path) {
			*slash = '\0';
			mkdir_p(a.socket_path, 0755);
			*slash = '/';
		}
	}

	/* the QEMUs we start (daemonized, so orphaned) are reparented to us
	 * and reaped here instead of by whatever pid 1 the machine has */
	prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&mask);
	sigaddset(&mask, SIGCHLD);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGHUP);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	if (sfd < 0) {
		fprintf(stderr, "%s: signalfd: %s\n", prog, strerror(errno));
		return 1;
	}

	lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	strcpy(sa.sun_path, a.socket_path);
	unlink(a.socket_path);      /* ours: the state-dir flock says no other agent runs */
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) || listen(lfd, 64)) {
		fprintf(stderr, "%s: cannot listen on %s: %s\n", prog, a.socket_path, strerror(errno));
		return 1;
	}
	chmod(a.socket_path, 0600);   /* the agent runs VMs as root: root's CLI only */
	if (maddr && (mfd = migration_listen(&a, maddr)) < 0)
		return 1;
	mig_listen_fd = mfd;
	loop_fds[0] = lfd;
	loop_fds[1] = sfd;
	loop_fds[2] = lockfd;

	agent_log(&a, "started (version %s, pid %d, socket %s, state %s, accel %s%s, %u CPUs, %llu MiB)",
		  VMFSD_VERSION, (int)getpid(), a.socket_path, a.state_dir, vm_accel_name(a.accel),
		  a.accel != VM_ACCEL_AUTO ? ""
		  : vm_accel_resolve(VM_ACCEL_AUTO) == VM_ACCEL_KVM ? " = kvm"
		  : !vm_kvm_usable() ? " = tcg (no usable /dev/kvm)"
				     : " = tcg (nested: this host is a VM; --accel kvm forces KVM)",
		  a.res.cpus, (unsigned long long)a.res.mem_mib);
	agent_log(&a, "VM monitoring %s (at most %d restarts within %d s, backoff %d s, hang timeout %d s)",
		  a.mon.enabled ? "on" : "off", a.mon.max_restarts, a.mon.window, a.mon.backoff,
		  a.mon.hang_timeout);
	/* The sweep touches the datastores (logs, lock records): it runs in a
	 * child, one at a time, so a datastore that hangs cannot stall this
	 * loop (a fence notice from vmfsd must still be answered), and a
	 * fenced vmfsd that kills every process holding files on its mount
	 * kills that child, not the agent. */
	pid_t sweeper = reconcile_child(&a, true, &mask);

	/* the first sweep (re-attach) is over before the first request is
	 * answered, as when it ran in this process */
	if (sweeper > 0) {
		int st;

		while (waitpid(sweeper, &st, 0) < 0 && errno == EINTR)
			;
		sweeper = 0;
	}

	/* the HA loop (ha.c): a child like the sweep, so a datastore that
	 * hangs or a fence that kills it never stalls this loop; restarted
	 * (at most once a second) when it ends */
	pid_t haloop = 0;
	int64_t ha_started = 0, sweep_started = 0;

	bool stop = false;
	while (!stop) {
		struct pollfd p[3] = {{.fd = lfd, .events = POLLIN}, {.fd = sfd, .events = POLLIN},
				      {.fd = mfd, .events = POLLIN}};
		/* the sweep runs once a second (below): a guest that powers
		 * itself off has its lock record released within about a
		 * second (the same bound docs/architecture.md gives for another
		 * host to see a change); 250 ms keeps that bound while idle */
		int r = poll(p, mfd >= 0 ? 3 : 2, 250);

		if (r < 0 && errno != EINTR) {
			agent_log(&a, "poll: %s", strerror(errno));
			break;
		}
		if (r > 0 && (p[1].revents & POLLIN)) {
			struct signalfd_siginfo si;

			while (read(sfd, &si, sizeof(si)) == sizeof(si)) {
				if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT ||
				    si.ssi_signo == SIGHUP)
					stop = true;
			}
		}
		for (;;) {
			int st;
			pid_t pid = waitpid(-1, &st, WNOHANG);

			if (pid <= 0)
				break;
			if (pid == sweeper) {
				sweeper = 0;
				continue;
			}
			if (pid == haloop) {
				haloop = 0;
				agent_log(&a, "HA loop (pid %d) ended (%s %d); restarting it", (int)pid,
					  WIFSIGNALED(st) ? "signal" : "status",
					  WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
				continue;
			}
			a.reaped[a.nreaped % AGENT_REAPED_MAX].pid = pid;
			a.reaped[a.nreaped % AGENT_REAPED_MAX].status = st;
			a.nreaped++;
		}
		if (r > 0 && (p[0].revents & POLLIN)) {
			int cfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);

			if (cfd >= 0) {
				if (fork_child(&a, &mask) == 0) {
					serve(&a, cfd);
					_exit(0);
				}
				close(cfd);
			}
		}
		if (r > 0 && mfd >= 0 && (p[2].revents & POLLIN)) {
			struct sockaddr_storage ss;
			socklen_t sl = sizeof(ss);
			int cfd = accept4(mfd, (struct sockaddr *)&ss, &sl, SOCK_CLOEXEC);

			if (cfd >= 0) {
				pid_t pid = fork_child(&a, &mask);

				if (pid == 0) {
					serve_migration(&a, cfd, &ss);
					_exit(0);
				}
				close(cfd);
			}
		}
		/* one sweep a second: the end of the previous one (SIGCHLD)
		 * wakes poll at once, and starting the next right away made
		 * the agent fork sweeps back to back, ~12 % of a CPU per idle
		 * agent */
		struct timespec now_ts;

		clock_gettime(CLOCK_MONOTONIC, &now_ts);
		int64_t now_ms_ = (int64_t)now_ts.tv_sec * 1000 + now_ts.tv_nsec / 1000000;

		if (!sweeper && now_ms_ - sweep_started >= 1000) {
			sweep_started = now_ms_;
			sweeper = reconcile_child(&a, false, &mask);
		}
		if (a.ha && !haloop && !stop) {
			struct timespec ts;

			clock_gettime(CLOCK_MONOTONIC, &ts);
			int64_t now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;

			if (now - ha_started >= 1000) {
				ha_started = now;
				haloop = fork_child(&a, &mask);
				if (haloop == 0) {
					prctl(PR_SET_PDEATHSIG, SIGTERM);
					ha_main(&a);
					_exit(0);
				}
				if (haloop < 0)
					haloop = 0;
			}
		}
	}
	if (haloop > 0) {
		int st;

		kill(haloop, SIGTERM);
		while (waitpid(haloop, &st, 0) < 0 && errno == EINTR)
			;
	}
	/* no sweep of ours may outlive us: it holds per-VM flocks that the
	 * next agent's first sweep must get (a sweep is idempotent, so
	 * stopping one halfway loses nothing) */
	if (sweeper > 0) {
		int st;

		kill(sweeper, SIGKILL);
		while (waitpid(sweeper, &st, 0) < 0 && errno == EINTR)
			;
	}
	agent_log(&a, "stopping; running VMs keep running and a new agent re-attaches to them");
	close(lfd);
	unlink(a.socket_path);
	return 0;
}
