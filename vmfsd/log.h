/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * vmfsd's system log (syslog, so journald under systemd): every line names
 * the volume and this host, so that the logs of several hosts (or of one
 * host with several datastores) can be read side by side.
 */
#ifndef VMFSD_LOG_H
#define VMFSD_LOG_H

#include <stdbool.h>

/* openlog; FOREGROUND: the lines go to stderr too */
void vmfsd_log_open(bool foreground);
/* every line also appended to PATH (with a timestamp), for hosts without a
 * system log; 0 or a negative errno */
int vmfsd_log_file(const char *path);
/* what every line starts with: the volume (its label once known, and the
 * device) and the host */
void vmfsd_log_name(const char *label, const char *device, const char *host);
void vmfsd_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* fs_mount_opts.log_hook */
void vmfsd_log_hook(void *arg, int level, const char *msg);

#endif
