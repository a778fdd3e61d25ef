// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * The host agent's small helpers: a monotonic clock in milliseconds, the
 * JSON replies every operation answers with ({"ok":true,"message":...} or
 * {"ok":false,"error":...,"errno":...}, docs/vm.md), and one-line text
 * files of the state folder written atomically (temporary file + rename),
 * and the agent's event log (--state-dir/events.jsonl): what `vmfsctl
 * events` shows.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ops.h"

int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The wall clock in milliseconds: for records and events people read,
 * never for durations (now_ms) nor compared across hosts. */
int64_t wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void sleep_ms(int ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};

	nanosleep(&ts, NULL);
}

json_t *reply_err(int rc, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return json_pack("{s:b,s:s,s:i}", "ok", 0, "error", msg, "errno", rc < 0 ? -rc : rc);
}

json_t *reply_ok(const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return json_pack("{s:b,s:s}", "ok", 1, "message", msg);
}

int write_text(const char *path, const char *text)
{
	char tmp[PATH_MAX + 8];
	int fd;
	size_t len = strlen(text);

	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	if (write(fd, text, len) != (ssize_t)len) {
		close(fd);
		unlink(tmp);
		return -EIO;
	}
	close(fd);
	if (rename(tmp, path))
		return -errno;
	return 0;
}

int sync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), rc = 0;

	if (fd < 0)
		return -errno;
	if (fsync(fd))
		rc = -errno;
	close(fd);
	return rc;
}

int read_text(const char *path, char *buf, size_t size)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = read(fd, buf, size - 1);
	close(fd);
	if (n < 0)
		return -errno;
	buf[n] = '\0';
	buf[strcspn(buf, "\n")] = '\0';
	return 0;
}

const char *req_str(json_t *req, const char *key)
{
	return json_string_value(json_object_get(req, key));
}

/* The event log keeps the last EVENTS_MAX_BYTES (about 5,000 events) plus
 * one rotated file of as much: a host's recent history, not an archive
 * (the agent's standard error, usually the journal, has everything). */
#define EVENTS_MAX_BYTES (1 << 20)

void agent_event(const struct agent *a, const char *vmx, const char *type, const char *fmt, ...)
{
	char msg[1024], path[PATH_MAX + 16], old[PATH_MAX + 16], *line;
	struct stat st;
	va_list ap;
	json_t *e;
	int fd;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	agent_log(a, "%s%s%s", vmx ? vmx : "", vmx ? ": " : "", msg);
	e = json_pack("{s:I,s:s,s:s,s:s}", "time_ms", (json_int_t)wall_ms(), "host", a->host,
		      "type", type, "message", msg);
	if (!e)
		return;
	if (vmx)
		json_object_set_new(e, "vmx", json_string(vmx));
	line = json_dumps(e, JSON_COMPACT);
	json_decref(e);
	if (!line)
		return;
	snprintf(path, sizeof(path), "%s/events.jsonl", a->state_dir);
	snprintf(old, sizeof(old), "%s/events.jsonl.1", a->state_dir);
	/* requests and the sweep are separate processes: each event is one
	 * O_APPEND write (atomic for a regular file), the rotation is under
	 * an flock of the log */
	fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	if (fd >= 0) {
		size_t len = strlen(line);

		line[len] = '\n';
		flock(fd, LOCK_EX);
		if (write(fd, line, len + 1) < 0)
			agent_log(a, "cannot write the event log %s: %s", path, strerror(errno));
		if (!fstat(fd, &st) && st.st_size > EVENTS_MAX_BYTES)
			rename(path, old);
		close(fd);
	}
	free(line);
}

/* Appends the events of FILE (optionally only VMX's) to ARR. */
static void events_load(const char *file, const char *vmx, json_t *arr)
{
	FILE *f = fopen(file, "re");
	char *line = NULL;
	size_t cap = 0;

	while (f && getline(&line, &cap, f) > 0) {
		json_t *e = json_loads(line, 0, NULL);

		if (!json_is_object(e) ||
		    (vmx && strcmp(vmx, json_string_value(json_object_get(e, "vmx")) ?: "")))
			json_decref(e);
		else
			json_array_append_new(arr, e);
	}
	free(line);
	if (f)
		fclose(f);
}

json_t *events_read(const struct agent *a, const char *vmx, size_t max)
{
	char path[PATH_MAX + 16];
	json_t *arr = json_array();

	snprintf(path, sizeof(path), "%s/events.jsonl.1", a->state_dir);
	events_load(path, vmx, arr);
	snprintf(path, sizeof(path), "%s/events.jsonl", a->state_dir);
	events_load(path, vmx, arr);
	while (max && json_array_size(arr) > max)
		json_array_remove(arr, 0);
	return arr;
}
