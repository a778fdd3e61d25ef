// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Agent client (agentc.h): connect to vmfs-hostd's unix socket, send one
 * request line, read the progress lines and the reply.  The reply of a
 * long operation follows its progress lines on the same connection, so the
 * reader splits at newlines and treats the first line that is not a
 * progress object (and everything after it) as the reply.
 */
#include <errno.h>
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "vm/agentc.h"

int agentc_default_socket(char *buf, size_t size)
{
	const char *env = getenv("VMFS_HOSTD_SOCKET");
	char host[256];
	glob_t g;
	int rc = -ENOENT;

	if (env && *env) {
		snprintf(buf, size, "%s", env);
		return 0;
	}
	if (!gethostname(host, sizeof(host))) {
		host[sizeof(host) - 1] = '\0';
		snprintf(buf, size, "/run/vmfs-hostd/%s.sock", host);
		if (!access(buf, F_OK))
			return 0;
	}
	if (!glob("/run/vmfs-hostd/*.sock", 0, NULL, &g)) {
		if (g.gl_pathc == 1) {
			snprintf(buf, size, "%s", g.gl_pathv[0]);
			rc = 0;
		} else {
			rc = -EEXIST;
		}
		globfree(&g);
	}
	return rc;
}

static int agentc_connect(const char *path, char *msg, size_t msize)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int fd, rc;

	if (strlen(path) >= sizeof(sa.sun_path)) {
		snprintf(msg, msize, "agent socket path too long: %s", path);
		return -ENAMETOOLONG;
	}
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		rc = -errno;
		snprintf(msg, msize, "cannot reach the host agent at %s: %s (is vmfs-hostd running?)",
			 path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return rc;
	}
	return fd;
}

int agentc_call(const char *sock, json_t *req, agentc_progress_fn fn, void *ctx, json_t **reply,
		char *msg, size_t msize)
{
	char *text = json_dumps(req, JSON_COMPACT), *buf = NULL;
	size_t len = 0, cap = 0;
	json_error_t je;
	int fd, rc = 0;

	*reply = NULL;
	if (!text) {
		snprintf(msg, msize, "cannot encode the request");
		return -ENOMEM;
	}
	fd = agentc_connect(sock, msg, msize);
	if (fd < 0) {
		free(text);
		return fd;
	}
	if (send(fd, text, strlen(text), MSG_NOSIGNAL) < 0 || send(fd, "\n", 1, MSG_NOSIGNAL) < 0) {
		rc = -errno;
		snprintf(msg, msize, "sending to the agent: %s", strerror(errno));
		goto out;
	}
	for (;;) {
		ssize_t n;
		char *nl = NULL;

		if (len + 4096 > cap) {
			char *nb;

			cap = cap ? cap * 2 : 65536;
			nb = realloc(buf, cap);
			if (!nb) {
				rc = -ENOMEM;
				snprintf(msg, msize, "out of memory reading the agent's answer");
				goto out;
			}
			buf = nb;
		}
		n = read(fd, buf + len, cap - len - 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
		while ((nl = memchr(buf, '\n', len))) {
			json_t *p = json_loadb(buf, (size_t)(nl - buf), 0, NULL);

			if (!json_is_object(p) || !json_object_get(p, "progress")) {
				json_decref(p);
				break;
			}
			if (fn)
				fn(json_object_get(p, "progress"), ctx);
			json_decref(p);
			len -= (size_t)(nl + 1 - buf);
			memmove(buf, nl + 1, len);
		}
		if (nl)
			break;
	}
	if (!len) {
		rc = -EPROTO;
		snprintf(msg, msize, "the agent closed the connection without an answer");
		goto out;
	}
	buf[len] = '\0';
	*reply = json_loads(buf, JSON_DISABLE_EOF_CHECK, &je);
	if (!json_is_object(*reply)) {
		json_decref(*reply);
		*reply = NULL;
		rc = -EPROTO;
		snprintf(msg, msize, "malformed answer from the agent: %s", je.text);
	}
out:
	free(text);
	free(buf);
	close(fd);
	return rc;
}
