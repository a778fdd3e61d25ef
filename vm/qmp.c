// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * A small synchronous QMP client (QEMU Machine Protocol: JSON objects, one
 * per line, over the unix socket QEMU listens on).  Connect, read the
 * greeting, leave capabilities negotiation with qmp_capabilities, then one
 * command at a time: send {"execute": ...}, skip asynchronous events, take
 * the {"return": ...} or {"error": ...} that follows.  Every read has a
 * deadline so a wedged QEMU cannot hang the agent.  File descriptors (for
 * migration to a .vmss file) travel as SCM_RIGHTS with the getfd command.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "vm.h"

#define QMP_MAX_LINE (4 << 20)    /* query replies are KiB; bounds a runaway peer */

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Reads one line into a new JSON object; returns -ETIMEDOUT, -EPIPE... */
static int qmp_read_msg(struct qmp *q, json_t **out, struct vm_err *err)
{
	int64_t deadline = now_ms() + q->timeout_ms;

	for (;;) {
		char *nl = q->len ? memchr(q->buf, '\n', q->len) : NULL;

		if (nl) {
			json_error_t je;
			size_t l = (size_t)(nl - q->buf);
			json_t *j = json_loadb(q->buf, l, 0, &je);

			memmove(q->buf, nl + 1, q->len - l - 1);
			q->len -= l + 1;
			if (!j || !json_is_object(j)) {
				json_decref(j);
				return vm_errf(err, -EPROTO, "QMP: malformed message: %s", je.text);
			}
			*out = j;
			return 0;
		}
		if (q->len == q->cap) {
			size_t cap = q->cap ? q->cap * 2 : 8192;
			char *b;

			if (cap > QMP_MAX_LINE)
				return vm_errf(err, -EPROTO, "QMP: message longer than %d bytes", QMP_MAX_LINE);
			b = realloc(q->buf, cap);
			if (!b)
				return vm_errf(err, -ENOMEM, "QMP: out of memory");
			q->buf = b;
			q->cap = cap;
		}
		int64_t left = deadline - now_ms();
		struct pollfd p = {.fd = q->fd, .events = POLLIN};

		if (left <= 0)
			return vm_errf(err, -ETIMEDOUT, "QMP: no answer from QEMU within %d ms",
				       q->timeout_ms);
		int r = poll(&p, 1, (int)left);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return vm_errf(err, -errno, "QMP: poll: %s", strerror(errno));
		if (r == 0)
			continue;
		ssize_t n = read(q->fd, q->buf + q->len, q->cap - q->len);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n < 0)
			return vm_errf(err, -errno, "QMP: read: %s", strerror(errno));
		if (n == 0)
			return vm_errf(err, -EPIPE, "QMP: QEMU closed the connection");
		q->len += (size_t)n;
	}
}

static int send_all(int fd, const char *s, size_t len, int passfd)
{
	bool first = true;

	while (len) {
		struct iovec iov = {.iov_base = (void *)s, .iov_len = len};
		union {
			char buf[CMSG_SPACE(sizeof(int))];
			struct cmsghdr align;
		} u;
		struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
		ssize_t n;

		if (first && passfd >= 0) {
			struct cmsghdr *c;

			memset(&u, 0, sizeof(u));
			mh.msg_control = u.buf;
			mh.msg_controllen = sizeof(u.buf);
			c = CMSG_FIRSTHDR(&mh);
			c->cmsg_level = SOL_SOCKET;
			c->cmsg_type = SCM_RIGHTS;
			c->cmsg_len = CMSG_LEN(sizeof(int));
			memcpy(CMSG_DATA(c), &passfd, sizeof(int));
		}
		n = sendmsg(fd, &mh, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		first = false;
		s += n;
		len -= (size_t)n;
	}
	return 0;
}

static int qmp_exec_common(struct qmp *q, const char *cmd, json_t *args, int fd, json_t **ret,
			   struct vm_err *err)
{
	json_t *req = json_object(), *resp = NULL;
	char *text;
	int rc;

	if (ret)
		*ret = NULL;
	if (!req) {
		json_decref(args);
		return vm_errf(err, -ENOMEM, "QMP: out of memory");
	}
	json_object_set_new(req, "execute", json_string(cmd));
	if (args)
		json_object_set_new(req, "arguments", args);
	text = json_dumps(req, JSON_COMPACT);
	json_decref(req);
	if (!text)
		return vm_errf(err, -ENOMEM, "QMP: out of memory");
	size_t tl = strlen(text);
	char *line = realloc(text, tl + 2);
	if (!line) {
		free(text);
		return vm_errf(err, -ENOMEM, "QMP: out of memory");
	}
	line[tl] = '\n';
	line[tl + 1] = '\0';
	rc = send_all(q->fd, line, tl + 1, fd);
	free(line);
	if (rc)
		return vm_errf(err, rc, "QMP: sending %s: %s", cmd, strerror(-rc));
	for (;;) {
		rc = qmp_read_msg(q, &resp, err);
		if (rc)
			return rc;
		if (json_object_get(resp, "event")) {
			json_decref(resp);
			continue;
		}
		break;
	}
	json_t *e = json_object_get(resp, "error");
	if (e) {
		const char *desc = json_string_value(json_object_get(e, "desc"));

		rc = vm_errf(err, -EIO, "QEMU refused %s: %s", cmd, desc ? desc : "(no description)");
	} else if (ret) {
		*ret = json_incref(json_object_get(resp, "return"));
	}
	json_decref(resp);
	return rc;
}

int qmp_exec(struct qmp *q, const char *cmd, json_t *args, json_t **ret, struct vm_err *err)
{
	return qmp_exec_common(q, cmd, args, -1, ret, err);
}

int qmp_exec_fd(struct qmp *q, const char *cmd, json_t *args, int fd, json_t **ret,
		struct vm_err *err)
{
	return qmp_exec_common(q, cmd, args, fd, ret, err);
}

/* Messages left from an earlier client that qmp_open skips, at most. */
#define QMP_STALE_MAX 64

int qmp_open(struct qmp *q, const char *path, int timeout_ms, struct vm_err *err)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	json_t *greet = NULL;
	int rc;

	memset(q, 0, sizeof(*q));
	q->timeout_ms = timeout_ms;
	if (strlen(path) >= sizeof(sa.sun_path))
		return vm_errf(err, -ENAMETOOLONG, "QMP socket path too long: %s", path);
	strcpy(sa.sun_path, path);
	q->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (q->fd < 0)
		return vm_errf(err, -errno, "socket: %s", strerror(errno));
	if (connect(q->fd, (struct sockaddr *)&sa, sizeof(sa))) {
		rc = -errno;
		close(q->fd);
		q->fd = -1;
		return vm_errf(err, rc, "QMP: connect %s: %s", path, strerror(-rc));
	}
	/* Other messages may come first: QEMU keeps the output it could not
	 * send to the previous client (events, a late reply) and hands it to
	 * the next one before its banner (seen once in vm-svm-live's hot
	 * clone, right after the mirror's block job ended).  Skip them, a
	 * bounded number: each read has the timeout. */
	for (int skipped = 0;; skipped++) {
		rc = qmp_read_msg(q, &greet, err);
		if (rc)
			goto fail;
		if (json_object_get(greet, "QMP") || skipped == QMP_STALE_MAX)
			break;
		json_decref(greet);
	}
	if (!json_object_get(greet, "QMP")) {
		char *got = json_dumps(greet, JSON_COMPACT);

		json_decref(greet);
		rc = vm_errf(err, -EPROTO, "QMP: %s did not greet with a QMP banner (its last "
			     "message: %.120s)", path, got ? got : "?");
		free(got);
		goto fail;
	}
	json_decref(greet);
	rc = qmp_exec(q, "qmp_capabilities", NULL, NULL, err);
	if (rc)
		goto fail;
	return 0;
fail:
	qmp_close(q);
	return rc;
}

void qmp_close(struct qmp *q)
{
	if (q->fd >= 0)
		close(q->fd);
	q->fd = -1;
	free(q->buf);
	q->buf = NULL;
	q->len = q->cap = 0;
}
