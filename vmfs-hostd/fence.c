// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * kill-volume: what the agent does when a host loses a datastore (its
 * vmfsd fenced, docs/cluster.md §3 "The VMs"): kill this host's VMs of it
 * at once, and when vmfsd itself sent the request, record each VM as
 * killed by the fence (state folder note, log) so nothing restarts it.
 */
#include <dirent.h>
#include <errno.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

#include "ops.h"

static bool pid_listed(json_t *pids, pid_t pid)
{
	size_t i;
	json_t *e;

	json_array_foreach(pids, i, e)
		if (pid > 0 && json_integer_value(e) == pid)
			return true;
	return false;
}

/* Kills at once (SIGKILL, no QMP round trip) every VM of this host whose
 * folder is under `mount`: what a host must do the instant it loses a
 * volume, before any survivor may break its locks and restart the VMs
 * (docs/cluster.md §3, docs/vm.md "Fencing").  vmfsd sends this request
 * itself when its host fences ("fenced": true), after it has already
 * killed every process holding files on the mount ("killed": their
 * pids); so a VM counts as ours to mark when its QEMU still runs, or when
 * its current or last pid is one vmfsd killed.  Marked VMs get a "fenced"
 * note in their state folder: `info` shows it, the cleanup logs it, and
 * nothing here restarts them.  Lock records are left alone: the volume
 * refuses this host's writes now. */
json_t *kill_volume(struct agent *a, json_t *req, const char *mount)
{
	char vms[PATH_MAX + 8], pre[PATH_MAX + 2];
	json_t *killed = json_array(), *r, *vpids = json_object_get(req, "killed");
	bool fenced = json_is_true(json_object_get(req, "fenced"));
	DIR *d;
	struct dirent *de;

	if (!mount || mount[0] != '/')
		return reply_err(EINVAL, "kill-volume: the agent needs an absolute mount point");
	snprintf(pre, sizeof(pre), "%s", mount);
	while (strlen(pre) > 1 && pre[strlen(pre) - 1] == '/')
		pre[strlen(pre) - 1] = '\0';
	strcat(pre, "/");
	if (fenced)
		agent_event(a, NULL, "host.fenced",
			    "volume %s fenced: vmfsd killed %zu process(es) holding files on it", mount,
			    json_array_size(vpids));
	snprintf(vms, sizeof(vms), "%s/vms", a->state_dir);
	d = opendir(vms);
	while (d && (de = readdir(d))) {
		struct vmctx v;
		char p[PATH_MAX + 16], vmx[PATH_MAX], buf[64];
		pid_t pid, last = 0;

		if (de->d_name[0] == '.')
			continue;
		memset(&v, 0, sizeof(v));
		v.dirfd = v.lockfd = -1;
		snprintf(v.sdir, sizeof(v.sdir), "%s/%s", vms, de->d_name);
		sfile(&v, "vmx", p, sizeof(p));
		if (read_text(p, vmx, sizeof(vmx)) || strncmp(vmx, pre, strlen(pre)))
			continue;
		pid = vm_qemu_pid(&v);
		sfile(&v, "pid", p, sizeof(p));
		if (!read_text(p, buf, sizeof(buf)))
			last = atoi(buf);
		sfile(&v, "last-pid", p, sizeof(p));
		if (!pid && !pid_listed(vpids, last) && !read_text(p, buf, sizeof(buf)))
			last = atoi(buf);
		if (!pid && !(fenced && pid_listed(vpids, last)))
			continue;
		if (fenced) {
			char note[PATH_MAX + 64];

			snprintf(note, sizeof(note), "%s %lld\n", mount, (long long)time(NULL));
			sfile(&v, "fenced", p, sizeof(p));
			write_text(p, note);
		}
		if (pid) {
			/* before the kill: the VM monitor must not take it
			 * for a crash and restart it on a volume we lost */
			monitor_no_restart(v.sdir, "killed by kill-volume (volume lost)");
			kill(pid, SIGKILL);
		}
		if (fenced)
			agent_event(a, vmx, "vm.fenced",
				    "killed by the fence of volume %s (QEMU pid %d, killed by %s); "
				    "not restarted here: the survivors may take the VM over", mount,
				    (int)(pid ? pid : last), pid ? "the agent" : "vmfsd");
		else
			agent_event(a, vmx, "vm.killed", "killed (QEMU pid %d): volume %s lost", (int)pid,
				    mount);
		json_array_append_new(killed, json_string(vmx));
	}
	if (d)
		closedir(d);
	r = reply_ok("killed %zu VM(s) of %s", json_array_size(killed), mount);
	json_object_set_new(r, "killed", killed);
	return r;
}
