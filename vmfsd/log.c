// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * vmfsd's system log: syslog lines prefixed with the volume and the host
 * (log.h).  The filesystem's cluster events (hosts joining, leaving,
 * declared dead, recovered) arrive through fs_mount_opts.log_hook on its
 * commit thread, the fence's on the fence responder's thread, so the
 * prefix is guarded by a mutex.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static char log_prefix[512];
static int log_fd = -1;

void vmfsd_log_open(bool foreground)
{
	openlog("vmfsd", LOG_PID | (foreground ? LOG_PERROR : 0), LOG_DAEMON);
}

int vmfsd_log_file(const char *path)
{
	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0640);

	if (fd < 0)
		return -errno;
	pthread_mutex_lock(&log_mu);
	log_fd = fd;
	pthread_mutex_unlock(&log_mu);
	return 0;
}

void vmfsd_log_name(const char *label, const char *device, const char *host)
{
	pthread_mutex_lock(&log_mu);
	if (label && *label)
		snprintf(log_prefix, sizeof(log_prefix), "volume %s (%s), host %s: ", label, device,
			 host);
	else
		snprintf(log_prefix, sizeof(log_prefix), "volume %s, host %s: ", device, host);
	pthread_mutex_unlock(&log_mu);
}

void vmfsd_log_hook(void *arg, int level, const char *msg)
{
	(void)arg;
	vmfsd_log(level, "%s", msg);
}

void vmfsd_log(int level, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	pthread_mutex_lock(&log_mu);
	syslog(level, "%s%s", log_prefix, msg);
	if (log_fd >= 0) {
		/* one write(2) per line, O_APPEND: lines of several daemons
		 * sharing a file do not interleave */
		char line[1700], ts[32];
		struct timespec now;
		struct tm tm;
		int n;

		clock_gettime(CLOCK_REALTIME, &now);
		localtime_r(&now.tv_sec, &tm);
		strftime(ts, sizeof(ts), "%Y-%m-%d %H:%M:%S", &tm);
		n = snprintf(line, sizeof(line), "%s.%03ld vmfsd[%d]: %s%s\n", ts,
			     now.tv_nsec / 1000000, (int)getpid(), log_prefix, msg);
		if (n > (int)sizeof(line) - 1) {
			n = (int)sizeof(line) - 1;
			line[n - 1] = '\n';
		}
		(void)!write(log_fd, line, (size_t)n);
	}
	pthread_mutex_unlock(&log_mu);
}
