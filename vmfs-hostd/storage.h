/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Storage vMotion, clones and templates in the host agent (storage.c), and
 * the task registry that long operations report progress to (task.c):
 * docs/vm.md "Storage vMotion", "Clones and templates" and "Tasks".
 */
#ifndef VMFS_HOSTD_STORAGE_H
#define VMFS_HOSTD_STORAGE_H

#include <stdint.h>

#include "ops.h"

/* ---------------- task.c ---------------- */
struct task {
	struct agent *a;
	char id[96];
	char file[PATH_MAX + 128];    /* state-dir/tasks/<id>.json */
	json_t *j;                    /* what the file holds */
	int64_t t0, last_emit;        /* now_ms() */
	int64_t rate_t;               /* rate sampling */
	uint64_t rate_done;
	double rate;                  /* bytes/s, smoothed */
};

/* A new running task of OP on VM (a .vmx path), DEST the other folder. */
int task_begin(struct task *t, struct agent *a, const char *op, const char *vm, const char *dest,
	       bool live);
/* Progress: DONE of TOTAL bytes of data in PHASE; written to the task file
 * and streamed to the client at most every 250 ms (and always when
 * PHASE changes). */
void task_progress(struct task *t, const char *phase, uint64_t done, uint64_t total);
/* Sets a field of the task (the record stays open). */
void task_set(struct task *t, const char *key, json_t *val);
/* The task ended: REPLY's ok/message/error recorded. */
void task_end(struct task *t, json_t *reply);
/* {"ok":true,"tasks":[...]}: this host's and the datastores' recent tasks */
json_t *tasks_list(struct agent *a, json_t *req);
/* The running tasks of this host whose process is gone (an agent or host
 * crash): handed to fn, then marked "interrupted". */
void tasks_interrupted(struct agent *a, void (*fn)(struct agent *a, json_t *task));

/* ---------------- storage.c ---------------- */
json_t *storage_migrate(struct agent *a, struct vmctx *v, json_t *req);
json_t *storage_clone(struct agent *a, struct vmctx *v, json_t *req);
json_t *storage_template(struct agent *a, struct vmctx *v, json_t *req);
json_t *storage_deploy(struct agent *a, struct vmctx *v, json_t *req);
/* One QMP command on its own connection (FD >= 0: passed along) */
int qmp1(struct vmctx *v, const char *cmd, json_t *args, int fd, json_t **ret, struct vm_err *err);
/* the block node under virtio-blk device vdI (its root: the top of a chain) */
int qemu_disk_node(struct vmctx *v, size_t i, char *node, size_t size, struct vm_err *err);
/* Power-on's check: refuses a template, a folder a move is copying into,
 * a source a move has switched away from; finishes or rolls back a move
 * this host left half done (the caller holds the VM's flock). */
json_t *storage_power_gate(struct agent *a, struct vmctx *v);
/* Agent start: finishes or rolls back the moves and clones of tasks this
 * host was running when it stopped. */
void storage_recover_all(struct agent *a);

#endif
