/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The client side of the host agent's protocol (docs/vm.md "The host
 * agent"): one JSON request per connection on the agent's unix socket,
 * answered by zero or more {"progress": TASK} lines (long operations) and
 * one JSON reply.  vmfsctl and vmfs-webd both talk to the agent through
 * these two functions, so every operation has one implementation: the
 * agent's.  Library code: nothing is printed; errors come back as a
 * negative errno and a message.
 */
#ifndef VMFSD_AGENTC_H
#define VMFSD_AGENTC_H

#include <stddef.h>

#include <jansson.h>

/* The agent socket to use when none is given: $VMFS_HOSTD_SOCKET, else
 * /run/vmfs-hostd/$(hostname).sock if it exists, else the only socket in
 * /run/vmfs-hostd.  -ENOENT: none found; -EEXIST: several. */
int agentc_default_socket(char *buf, size_t size);

/* Called for each progress line, with the TASK object (borrowed). */
typedef void (*agentc_progress_fn)(json_t *task, void *ctx);

/* Sends REQ (not stolen) to the agent at SOCK, passes progress lines to FN
 * (may be NULL) and returns the reply object in *REPLY.  No deadline: the
 * agent bounds its operations (a shutdown waits for the guest).  On error
 * a negative errno, and MSG says what went wrong. */
int agentc_call(const char *sock, json_t *req, agentc_progress_fn fn, void *ctx, json_t **reply,
		char *msg, size_t msize);

#endif
