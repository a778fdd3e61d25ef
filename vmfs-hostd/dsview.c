// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * The agent's view of a datastore's cluster (docs/ha.md §2): which vmfsd
 * mount a VM folder lives on, what that vmfsd says of the hosts (the
 * virtual attribute user.vmfsd.hosts of its root: live, dead, being
 * replayed, locks broken) and who holds a file's on-disk lock
 * (user.vmfsd.lock).  Power-on, info/list and the HA engine ask these
 * questions; a plain directory (ext4, tmpfs) answers "no cluster".
 */
#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "ops.h"

json_t *ds_hosts_read(const char *root)
{
	static char buf[65536];
	ssize_t n = getxattr(root, "user.vmfsd.hosts", buf, sizeof(buf) - 1);
	json_error_t je;

	if (n <= 0)
		return NULL;
	buf[n] = '\0';
	return json_loads(buf, 0, &je);
}

int ds_open(const char *path, struct dsview *d)
{
	char p[PATH_MAX];

	memset(d, 0, sizeof(*d));
	if (!realpath(path, p))
		return -errno;
	for (;;) {
		json_t *h = ds_hosts_read(p);

		if (h) {
			snprintf(d->root, sizeof(d->root), "%s", p);
			d->hosts = h;
			d->self = json_string_value(json_object_get(json_object_get(h, "self"), "host"));
			d->fenced = json_is_true(json_object_get(json_object_get(h, "self"), "fenced"));
			return 0;
		}
		char *s = strrchr(p, '/');

		if (!s || s == p)
			return -ENOENT;
		*s = '\0';
	}
}

void ds_close(struct dsview *d)
{
	json_decref(d->hosts);
	d->hosts = NULL;
	d->self = NULL;
}

enum ds_hstate ds_host(const struct dsview *d, const char *name, int64_t *ago_ms)
{
	json_t *hosts = json_object_get(d->hosts, "hosts"), *e;
	enum ds_hstate best = DS_UNKNOWN;
	int64_t timeout = json_integer_value(json_object_get(d->hosts, "timeout_ms"));
	size_t i;

	*ago_ms = -1;
	if (!d->hosts || !name || !*name)
		return DS_UNKNOWN;
	json_array_foreach(hosts, i, e) {
		const char *h = json_string_value(json_object_get(e, "host"));
		const char *st = json_string_value(json_object_get(e, "state"));
		json_t *died = json_object_get(e, "died");
		const char *dh = json_string_value(json_object_get(died, "host"));

		if (h && st && !strcmp(h, name) &&
		    (!strcmp(st, "live") || !strcmp(st, "silent")))
			return DS_LIVE;
		if (h && st && !strcmp(h, name) && (!strcmp(st, "dead") || !strcmp(st, "replaying"))) {
			best = DS_DEAD;
			if (died && dh && !strcmp(dh, name))
				*ago_ms = json_integer_value(json_object_get(died, "declared_ago_ms"));
			else
				*ago_ms = json_integer_value(json_object_get(e, "unchanged_ms")) - timeout;
			continue;
		}
		if (died && dh && !strcmp(dh, name) && best != DS_DEAD) {
			bool broken = json_is_true(json_object_get(died, "locks_broken"));

			best = broken ? DS_BROKEN : DS_DEAD;
			*ago_ms = json_integer_value(json_object_get(died, "declared_ago_ms"));
		}
	}
	return best;
}

const char *ds_hstate_name(enum ds_hstate s)
{
	switch (s) {
	case DS_LIVE:
		return "live";
	case DS_DEAD:
		return "dead";
	case DS_BROKEN:
		return "dead, locks broken";
	default:
		return "not on the volume";
	}
}

int ds_lock_holder(int dirfd, const char *name, char *host, size_t hsize)
{
	char desc[320];

	busy_holder(dirfd, name, host, hsize, desc, sizeof(desc));
	if (!desc[0])
		return -ENODATA;
	return host[0] ? 1 : 0;
}

int ds_fd_lock_holder(int fd, char *host, size_t hsize)
{
	char desc[320];
	ssize_t l = fgetxattr(fd, "user.vmfsd.lock", desc, sizeof(desc) - 1);
	const char *by;

	host[0] = '\0';
	if (l <= 0)
		return -ENODATA;
	desc[l] = '\0';
	by = strstr(desc, " by ");
	if (!by)
		return 0;
	by += 4;
	size_t n = strcspn(by, " (");

	if (n >= hsize)
		n = hsize - 1;
	memcpy(host, by, n);
	host[n] = '\0';
	return 1;
}
