// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * iSCSI LUNs through libiscsi: the backend behind iscsi:// device names,
 * for volumes shared by hosts on different machines (docs/cluster.md §8).
 *
 * A libiscsi context must not be used by two threads at once, so each open
 * LUN has one service thread that owns its context: callers (FUSE workers,
 * the heartbeat, the lock manager, the asynchronous data path) put requests
 * on a queue and wake it through an eventfd; it sends up to ISC_QUEUE_DEPTH
 * commands at a time, polls the socket, and completes requests from the
 * libiscsi callbacks (the same structure as QEMU's block/iscsi.c: one
 * context per LUN, one event loop).
 *
 * The cluster protocol assumes that an I/O completes or fails within D of
 * its issue (docs/cluster.md §2).  Here that is made true: every request
 * carries a deadline a little under D from the moment it is queued; when a
 * command on the wire passes its deadline the whole session is dropped
 * (every command in flight fails with -EIO) and a new one is logged in for
 * later requests.  libiscsi's own automatic reconnect is off: it re-sends
 * the commands that were in flight, so a COMPARE AND WRITE that had landed
 * would come back as a miscompare, and a write would land twice, possibly
 * after the host fenced.  We never re-send: a command lost with its session
 * fails with -EIO, "outcome unknown", which every caller already handles
 * (hb.c recognises its own lost renewal; lock.c re-reads).  Every session
 * of one bdev uses the same initiator name and ISID, so it is the same
 * I_T nexus to the target and keeps its persistent-reservation
 * registration across reconnects (and a preempted registration stays
 * preempted).
 */
#include <errno.h>
#include <fcntl.h>
#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "bdev.h"
#include "iscsi.h"

/* Commands in flight per LUN.  istgt's default QueueDepth is 32 per
 * session; more would only queue in the target.  Requests beyond it wait
 * in our queue (their deadline running). */
#define ISC_QUEUE_DEPTH 32u
/* Writes longer than this go to the target as several WRITE(16)s of at
 * most this size, all in flight at once.  It is the FirstBurstLength
 * istgt and libiscsi negotiate by default: a command up to it carries
 * all its data as immediate data, while a longer one waits for the
 * target's R2T for the rest.  Measured here with istgt at QD16, 1 MiB
 * writes as single commands ran at 30-40 MB/s with latencies up to 1.5 s,
 * the same bytes as 256 KiB commands at 140-170 MB/s.  A target that
 * negotiates less still gets correct writes (libiscsi answers its R2Ts). */
#define ISC_WRITE_CHUNK (256u << 10)
/* Login at open and after a lost session: istgt takes about a second to
 * log a session in on this kind of machine; 10 s bounds a target that does
 * not answer at all (the mount fails instead of hanging). */
#define ISC_LOGIN_MS 10000u
/* Before the cluster layer sets D (bdev_set_io_timeout): the default
 * D of docs/cluster.md §3. */
#define ISC_DEFAULT_TIMEOUT_MS 2000u
/* After a failed login, wait this long before trying again, so a target
 * that is down is not hammered; requests queued meanwhile fail at their
 * deadline. */
#define ISC_RELOGIN_PAUSE_MS 200u

enum isc_op {
	ISC_READ,
	ISC_WRITE,
	ISC_CAW,
	ISC_SYNC,
	ISC_READCAP,
	ISC_PR_OUT,
	ISC_PR_IN,
};

struct isc_req {
	struct bdev_iscsi *li;
	enum isc_op op;
	uint64_t lba;
	uint32_t nblk;
	void *buf;
	size_t len;
	/* persistent reservations */
	int pr_action;
	uint64_t key, sa_key;
	struct scsi_persistent_reserve_out_basic pr;
	uint64_t *keys;
	unsigned max_keys, nkeys;
	uint64_t holder;
	int pr_type;
	/* readcap */
	uint64_t nblocks;
	uint32_t blksz;

	int64_t deadline;       /* ns, CLOCK_BOOTTIME */
	int res;
	int ua_retries;
	struct scsi_task *task;
	struct scsi_iovec iov;
	struct bdev_aio *aio;   /* asynchronous: complete through aio->cb */
	sem_t done;             /* synchronous: the caller waits here */
	struct isc_req *next;
	struct isc_req *iprev, *inext;  /* in flight */
	struct isc_group *grp;  /* one command of a split write */
};

/* A write split into several commands (ISC_WRITE_CHUNK): it completes as
 * HEAD, with the first error, when its last command does. */
struct isc_group {
	struct isc_req head;    /* first: freed as a request */
	_Atomic unsigned left;
	_Atomic int err;
};

struct bdev_iscsi {
	/* Set at open, read-only afterwards. */
	struct iscsi_url url;   /* parsed copy (portal, target, lun, user) */
	char initiator[256];
	uint32_t isid_rnd;
	int rdonly;
	uint32_t blksz;
	uint64_t nblocks;
	bdev_iscsi_gate_fn gate;
	void *gate_arg;
	_Atomic unsigned timeout_ms;

	pthread_t thr;
	int efd;
	pthread_mutex_t lock;   /* the queues, stop, aio_pending */
	pthread_cond_t idle;
	struct isc_req *qhead, **qtail;
	unsigned aio_pending;
	atomic_int sleeping;    /* the service thread is (about to be) in poll */
	int stop;
	/* Finished asynchronous requests, whose callbacks run on their own
	 * thread: a callback may do synchronous I/O on this LUN, which the
	 * service thread could not serve while running it. */
	pthread_t done_thr;
	pthread_cond_t done_cv;
	struct isc_req *dhead, **dtail;
	int done_stop;

	/* Service thread only. */
	struct iscsi_context *ctx;
	int logged_in;
	int64_t login_deadline;
	int64_t next_login;
	struct isc_req *inflight;       /* doubly linked */
	unsigned ninflight;
	char last_error[256];
};

static int64_t now_ns(void)
{
	struct timespec ts;

	/* BOOTTIME, like the heartbeat clocks: a suspended machine must find
	 * its commands expired when it wakes. */
	clock_gettime(CLOCK_BOOTTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000ll + ts.tv_nsec;
}

/* The per-command timeout: a tenth under D, so that a command fails
 * strictly before the protocol's bound, and the session teardown that
 * follows fits in what is left. */
static int64_t req_timeout_ns(struct bdev_iscsi *li)
{
	unsigned ms = atomic_load(&li->timeout_ms);

	return (int64_t)(ms - ms / 10) * 1000000ll;
}

/* ---------------- completion ---------------- */

static void inflight_del(struct bdev_iscsi *li, struct isc_req *r)
{
	if (r->iprev)
		r->iprev->inext = r->inext;
	else
		li->inflight = r->inext;
	if (r->inext)
		r->inext->iprev = r->iprev;
	r->iprev = r->inext = NULL;
	li->ninflight--;
}

/* One asynchronous request fewer, after its callback ran: bdev_aio_drain
 * promises that. */
static void aio_count_done(struct bdev_iscsi *li, unsigned n)
{
	pthread_mutex_lock(&li->lock);
	li->aio_pending -= n;
	if (!li->aio_pending)
		pthread_cond_broadcast(&li->idle);
	pthread_mutex_unlock(&li->lock);
}

/* Synchronous requests wake their caller; asynchronous ones run their
 * callback here when it never waits (cb_inline) or does not have to this
 * time (cb_try), else on the completer thread. */
static void req_complete(struct bdev_iscsi *li, struct isc_req *r, int res)
{
	struct bdev_aio *a;

	if (r->grp) {
		struct isc_group *g = r->grp;
		int zero = 0;

		if (res)
			atomic_compare_exchange_strong(&g->err, &zero, res);
		free(r);
		if (atomic_fetch_sub(&g->left, 1) != 1)
			return;
		r = &g->head;
		res = atomic_load(&g->err);
	}
	a = r->aio;
	r->res = res;
	if (!a) {
		sem_post(&r->done);
		return;
	}
	if (a->cb_inline) {
		free(r);
		a->cb(a, res);
		aio_count_done(li, 1);
		return;
	}
	/* (A may be freed once cb_try returned 0) */
	if (a->cb_try && !a->cb_try(a, res)) {
		free(r);
		aio_count_done(li, 1);
		return;
	}
	r->next = NULL;
	pthread_mutex_lock(&li->lock);
	*li->dtail = r;
	li->dtail = &r->next;
	pthread_cond_signal(&li->done_cv);
	pthread_mutex_unlock(&li->lock);
}

static void *completer(void *arg)
{
	struct bdev_iscsi *li = arg;

	pthread_mutex_lock(&li->lock);
	for (;;) {
		struct isc_req *r = li->dhead;
		unsigned n = 0;

		if (!r) {
			if (li->done_stop)
				break;
			pthread_cond_wait(&li->done_cv, &li->lock);
			continue;
		}
		li->dhead = NULL;
		li->dtail = &li->dhead;
		pthread_mutex_unlock(&li->lock);
		while (r) {
			struct isc_req *next = r->next;
			struct bdev_aio *a = r->aio;
			int res = r->res;

			free(r);
			a->cb(a, res);
			n++;
			r = next;
		}
		aio_count_done(li, n);
		pthread_mutex_lock(&li->lock);
	}
	pthread_mutex_unlock(&li->lock);
	return NULL;
}

static int issue(struct bdev_iscsi *li, struct isc_req *r);

/* The errno of a finished command.  MISCOMPARE is -ECANCELED (ATS lost the
 * race), RESERVATION CONFLICT -EACCES (this host's registration was
 * preempted: fenced by the target), an unsupported command -EOPNOTSUPP,
 * anything else -EIO. */
static int status_errno(int status, const struct scsi_task *task)
{
	if (status == SCSI_STATUS_GOOD)
		return 0;
	if (status == SCSI_STATUS_RESERVATION_CONFLICT)
		return -EACCES;
	if (status == SCSI_STATUS_CHECK_CONDITION && task) {
		if (task->sense.key == SCSI_SENSE_MISCOMPARE)
			return -ECANCELED;
		if (task->sense.key == SCSI_SENSE_ILLEGAL_REQUEST &&
		    task->sense.ascq == SCSI_SENSE_ASCQ_INVALID_OPERATION_CODE)
			return -EOPNOTSUPP;
		if (task->sense.key == SCSI_SENSE_UNIT_ATTENTION)
			return -EAGAIN;
	}
	return -EIO;
}

static void scsi_cb(struct iscsi_context *ctx, int status, void *command_data, void *priv)
{
	struct scsi_task *task = command_data;
	struct isc_req *r = priv;
	struct bdev_iscsi *li = r->li;
	int res = status_errno(status, task);

	(void)ctx;
	if (!res && r->op == ISC_READCAP) {
		struct scsi_readcapacity16 *rc = scsi_datain_unmarshall(task);

		if (rc) {
			r->nblocks = rc->returned_lba + 1;
			r->blksz = rc->block_length;
		} else {
			res = -EIO;
		}
	} else if (!res && r->op == ISC_PR_IN && r->pr_action == SCSI_PERSISTENT_RESERVE_READ_KEYS) {
		struct scsi_persistent_reserve_in_read_keys *rk = scsi_datain_unmarshall(task);
		int i;

		if (rk) {
			r->nkeys = (unsigned)rk->num_keys;
			for (i = 0; i < rk->num_keys && (unsigned)i < r->max_keys; i++)
				r->keys[i] = rk->keys[i];
		} else {
			res = -EIO;
		}
	} else if (!res && r->op == ISC_PR_IN) {
		struct scsi_persistent_reserve_in_read_reservation *rr = scsi_datain_unmarshall(task);

		if (rr) {
			r->holder = rr->reserved ? rr->reservation_key : 0;
			r->pr_type = rr->reserved ? rr->pr_type : 0;
		} else {
			res = -EIO;
		}
	}
	if (task)
		scsi_free_scsi_task(task);
	r->task = NULL;
	inflight_del(li, r);
	if (res == -EAGAIN && status != SCSI_STATUS_CANCELLED && r->ua_retries++ < 3 &&
	    now_ns() < r->deadline && issue(li, r) == 0)
		return;
	if (res == -EAGAIN)
		res = -EIO;
	req_complete(li, r, res);
}

/* Sends R on the current session.  0: in flight; <0: not sent. */
static int issue(struct bdev_iscsi *li, struct isc_req *r)
{
	int lun = li->url.lun;
	struct scsi_task *t = NULL;

	if (r->op == ISC_WRITE || r->op == ISC_CAW || r->op == ISC_SYNC || r->op == ISC_PR_OUT)
		if (li->gate && li->gate(li->gate_arg, 1))
			return -EIO;
	switch (r->op) {
	case ISC_READ:
		r->iov.iov_base = r->buf;
		r->iov.iov_len = r->len;
		t = iscsi_read16_iov_task(li->ctx, lun, r->lba, (uint32_t)r->len, li->blksz, 0, 0,
					  0, 0, 0, scsi_cb, r, &r->iov, 1);
		break;
	case ISC_WRITE:
		r->iov.iov_base = r->buf;
		r->iov.iov_len = r->len;
		t = iscsi_write16_iov_task(li->ctx, lun, r->lba, NULL, (uint32_t)r->len, li->blksz,
					   0, 0, 0, 0, 0, scsi_cb, r, &r->iov, 1);
		break;
	case ISC_CAW:
		/* Data-out is the verify block then the write block. */
		t = iscsi_compareandwrite_task(li->ctx, lun, r->lba, r->buf, (uint32_t)r->len,
					       li->blksz, 0, 0, 0, 0, 0, scsi_cb, r);
		break;
	case ISC_SYNC:
		t = iscsi_synchronizecache16_task(li->ctx, lun, 0, 0, 0, 0, scsi_cb, r);
		break;
	case ISC_READCAP:
		t = iscsi_readcapacity16_task(li->ctx, lun, scsi_cb, r);
		break;
	case ISC_PR_OUT:
		memset(&r->pr, 0, sizeof(r->pr));
		r->pr.reservation_key = r->key;
		r->pr.service_action_reservation_key = r->sa_key;
		t = iscsi_persistent_reserve_out_task(li->ctx, lun, r->pr_action,
				SCSI_PERSISTENT_RESERVE_SCOPE_LU,
				SCSI_PERSISTENT_RESERVE_TYPE_WRITE_EXCLUSIVE_REGISTRANTS_ONLY,
				&r->pr, scsi_cb, r);
		break;
	case ISC_PR_IN:
		t = iscsi_persistent_reserve_in_task(li->ctx, lun, r->pr_action, 8 + 8 * 256,
						     scsi_cb, r);
		break;
	}
	if (!t)
		return -ENOMEM;
	r->task = t;
	r->inext = li->inflight;
	r->iprev = NULL;
	if (li->inflight)
		li->inflight->iprev = r;
	li->inflight = r;
	li->ninflight++;
	return 0;
}

/* ---------------- the session ---------------- */

static void login_cb(struct iscsi_context *ctx, int status, void *command_data, void *priv)
{
	struct bdev_iscsi *li = priv;

	(void)command_data;
	if (status == SCSI_STATUS_GOOD) {
		li->logged_in = 1;
	} else {
		snprintf(li->last_error, sizeof(li->last_error), "login failed: %s",
			 iscsi_get_error(ctx));
		li->logged_in = -1;
	}
}

/* Drops the session: every command in flight fails with -EIO (libiscsi
 * calls their callbacks with CANCELLED), the socket is closed.  A command
 * the target had already received may still execute there; with
 * persistent reservations a survivor's PREEMPT rejects it if it comes late
 * (docs/cluster.md §8). */
static void session_drop(struct bdev_iscsi *li, const char *why)
{
	if (!li->ctx)
		return;
	if (why && !li->last_error[0])
		snprintf(li->last_error, sizeof(li->last_error), "%s", why);
	iscsi_scsi_cancel_all_tasks(li->ctx);
	/* Anything libiscsi did not know about any more (should be none). */
	while (li->inflight) {
		struct isc_req *r = li->inflight;

		inflight_del(li, r);
		if (r->task)
			scsi_free_scsi_task(r->task);
		r->task = NULL;
		req_complete(li, r, -EIO);
	}
	iscsi_destroy_context(li->ctx);
	li->ctx = NULL;
	li->logged_in = 0;
	li->next_login = now_ns() + (int64_t)ISC_RELOGIN_PAUSE_MS * 1000000ll;
}

static int session_start(struct bdev_iscsi *li)
{
	struct iscsi_context *ctx = iscsi_create_context(li->initiator);

	if (!ctx)
		return -ENOMEM;
	/* Same ISID every time: one I_T nexus for the life of this bdev. */
	iscsi_set_isid_random(ctx, li->isid_rnd, 0);
	iscsi_set_targetname(ctx, li->url.target);
	iscsi_set_session_type(ctx, ISCSI_SESSION_NORMAL);
	iscsi_set_header_digest(ctx, ISCSI_HEADER_DIGEST_NONE_CRC32C);
	iscsi_set_noautoreconnect(ctx, 1);
	/* A dead link must fail the socket, not let TCP retransmit for
	 * minutes: the kernel gives up on unacknowledged data after D. */
	iscsi_set_tcp_user_timeout(ctx, (int)atomic_load(&li->timeout_ms));
	if (li->url.user[0] &&
	    iscsi_set_initiator_username_pwd(ctx, li->url.user, li->url.passwd)) {
		iscsi_destroy_context(ctx);
		return -EINVAL;
	}
	li->ctx = ctx;
	li->logged_in = 0;
	li->last_error[0] = 0;
	li->login_deadline = now_ns() + (int64_t)ISC_LOGIN_MS * 1000000ll;
	if (iscsi_full_connect_async(ctx, li->url.portal, li->url.lun, login_cb, li)) {
		snprintf(li->last_error, sizeof(li->last_error), "connect: %s",
			 iscsi_get_error(ctx));
		iscsi_destroy_context(ctx);
		li->ctx = NULL;
		li->next_login = now_ns() + (int64_t)ISC_RELOGIN_PAUSE_MS * 1000000ll;
		return -EIO;
	}
	return 0;
}

static void logout_cb(struct iscsi_context *ctx, int status, void *command_data, void *priv)
{
	(void)ctx;
	(void)status;
	(void)command_data;
	*(int *)priv = 1;
}

/* A clean end of the session at close (the target then frees it at once
 * instead of waiting for its connection timeout).  Bounded by D: a target
 * that does not answer is simply dropped. */
static void session_logout(struct bdev_iscsi *li)
{
	int64_t end = now_ns() + req_timeout_ns(li);
	int done = 0;

	if (!li->ctx || li->logged_in <= 0 || iscsi_logout_async(li->ctx, logout_cb, &done))
		return;
	while (!done && now_ns() < end) {
		struct pollfd pfd = { .fd = iscsi_get_fd(li->ctx),
				      .events = (short)iscsi_which_events(li->ctx) };

		if (pfd.fd < 0 || poll(&pfd, 1, 10) < 0 ||
		    iscsi_service(li->ctx, pfd.revents) < 0)
			break;
	}
}

/* ---------------- the service thread ---------------- */

static void *service(void *arg)
{
	struct bdev_iscsi *li = arg;
	struct isc_req *pending = NULL, **ptail = &pending;

	for (;;) {
		struct isc_req *r, **pp;
		struct pollfd pfd[2];
		int64_t now, wake;
		int stop, n, timeout;

		pthread_mutex_lock(&li->lock);
		if (li->qhead) {
			*ptail = li->qhead;
			ptail = li->qtail;
			li->qhead = NULL;
			li->qtail = &li->qhead;
		}
		stop = li->stop;
		pthread_mutex_unlock(&li->lock);
		if (stop && !pending && !li->ninflight)
			break;

		now = now_ns();
		/* Requests that waited past their deadline (no session, or a
		 * full queue) fail without ever being sent. */
		for (pp = &pending; *pp;) {
			r = *pp;
			if (r->deadline > now) {
				pp = &r->next;
				continue;
			}
			*pp = r->next;
			req_complete(li, r, -EIO);
		}
		ptail = &pending;
		while (*ptail)
			ptail = &(*ptail)->next;

		if (pending && !li->ctx && now >= li->next_login)
			session_start(li);
		if (li->ctx && li->logged_in < 0)
			session_drop(li, NULL);
		while (li->ctx && li->logged_in > 0 && pending && li->ninflight < ISC_QUEUE_DEPTH) {
			int e;

			r = pending;
			pending = r->next;
			if (!pending)
				ptail = &pending;
			r->next = NULL;
			e = issue(li, r);
			if (e)
				req_complete(li, r, e);
		}

		/* Sleep until something is queued, the socket is ready, or the
		 * nearest deadline. */
		wake = INT64_MAX;
		for (r = pending; r; r = r->next)
			if (r->deadline < wake)
				wake = r->deadline;
		for (r = li->inflight; r; r = r->inext)
			if (r->deadline < wake)
				wake = r->deadline;
		if (li->ctx && li->logged_in == 0 && li->login_deadline < wake)
			wake = li->login_deadline;
		if (pending && !li->ctx && li->next_login < wake)
			wake = li->next_login;
		timeout = -1;
		if (wake != INT64_MAX) {
			int64_t d = wake - now_ns();

			timeout = d <= 0 ? 0 : (int)((d + 999999) / 1000000);
		}
		pfd[0].fd = li->efd;
		pfd[0].events = POLLIN;
		pfd[0].revents = 0;
		n = 1;
		if (li->ctx) {
			pfd[1].fd = iscsi_get_fd(li->ctx);
			pfd[1].events = (short)iscsi_which_events(li->ctx);
			pfd[1].revents = 0;
			if (pfd[1].fd >= 0) {
				n = 2;
				/* No events wanted (libiscsi between states): look
				 * again soon rather than sleeping on it. */
				if (!pfd[1].events && (timeout < 0 || timeout > 10))
					timeout = 10;
			}
		}
		/* Submitters write the eventfd only while this thread sleeps
		 * (a syscall less per request while it is busy): announce the
		 * sleep, then look at the queue once more, since a request
		 * queued just before saw us awake and did not write it. */
		atomic_store(&li->sleeping, 1);
		pthread_mutex_lock(&li->lock);
		if (li->qhead)
			timeout = 0;
		pthread_mutex_unlock(&li->lock);
		if (poll(pfd, (nfds_t)n, timeout) < 0 && errno != EINTR)
			usleep(1000);
		atomic_store(&li->sleeping, 0);
		if (pfd[0].revents & POLLIN) {
			uint64_t v;

			if (read(li->efd, &v, sizeof(v)) < 0) {
				/* EAGAIN: already drained */
			}
		}
		if (n == 2 && li->ctx && iscsi_service(li->ctx, pfd[1].revents) < 0)
			session_drop(li, iscsi_get_error(li->ctx));

		now = now_ns();
		if (li->ctx && li->logged_in == 0 && now >= li->login_deadline) {
			snprintf(li->last_error, sizeof(li->last_error), "login timed out");
			session_drop(li, NULL);
		}
		for (r = li->inflight; r; r = r->inext)
			if (r->deadline <= now) {
				session_drop(li, "command timed out");
				break;
			}
	}
	session_logout(li);
	session_drop(li, NULL);
	return NULL;
}

/* Queues R and, for a synchronous request, waits for its result. */
static int submit(struct bdev_iscsi *li, struct isc_req *r, int wait)
{
	uint64_t one = 1;
	int res;

	r->li = li;
	r->next = NULL;
	r->deadline = now_ns() + req_timeout_ns(li);
	if (wait)
		sem_init(&r->done, 0, 0);
	pthread_mutex_lock(&li->lock);
	*li->qtail = r;
	li->qtail = &r->next;
	pthread_mutex_unlock(&li->lock);
	if (atomic_load(&li->sleeping) && write(li->efd, &one, sizeof(one)) < 0) {
		/* the counter saturated: the thread wakes anyway */
	}
	if (!wait)
		return 0;
	while (sem_wait(&r->done) < 0 && errno == EINTR)
		;
	res = r->res;
	sem_destroy(&r->done);
	return res;
}

/* ---------------- the interface for bdev.c ---------------- */

uint32_t bdev_iscsi_block_size(const struct bdev_iscsi *li)
{
	return li->blksz;
}

void bdev_iscsi_set_timeout(struct bdev_iscsi *li, unsigned ms)
{
	if (ms >= 20)
		atomic_store(&li->timeout_ms, ms);
}

/* A write of more than ISC_WRITE_CHUNK, as that many commands at once;
 * completes through A, or for A NULL waits and returns the result. */
static int write_split(struct bdev_iscsi *li, void *buf, size_t len, uint64_t off,
		       struct bdev_aio *a)
{
	unsigned i, n = (unsigned)((len + ISC_WRITE_CHUNK - 1) / ISC_WRITE_CHUNK);
	struct isc_req **v = calloc(n, sizeof(*v));
	struct isc_group *g = calloc(1, sizeof(*g));
	int res = 0;

	for (i = 0; v && g && i < n; i++) {
		size_t at = (size_t)i * ISC_WRITE_CHUNK;

		v[i] = calloc(1, sizeof(**v));
		if (!v[i])
			break;
		v[i]->op = ISC_WRITE;
		v[i]->lba = (off + at) / li->blksz;
		v[i]->buf = (uint8_t *)buf + at;
		v[i]->len = len - at < ISC_WRITE_CHUNK ? len - at : ISC_WRITE_CHUNK;
		v[i]->grp = g;
	}
	if (!v || !g || i < n) {
		if (v)
			while (i--)
				free(v[i]);
		free(v);
		free(g);
		return -ENOMEM;
	}
	g->head.li = li;
	g->head.aio = a;
	atomic_init(&g->left, n);
	atomic_init(&g->err, 0);
	if (!a)
		sem_init(&g->head.done, 0, 0);
	for (i = 0; i < n; i++)
		submit(li, v[i], 0);
	free(v);
	if (a)
		return 0;
	while (sem_wait(&g->head.done) < 0 && errno == EINTR)
		;
	res = g->head.res;
	sem_destroy(&g->head.done);
	free(g);
	return res;
}

int bdev_iscsi_rw(struct bdev_iscsi *li, int write, void *buf, size_t len, uint64_t off)
{
	struct isc_req r;
	int res;

	if ((off | len) % li->blksz)
		return -EINVAL;
	if (!len)
		return 0;
	if (write && len > ISC_WRITE_CHUNK) {
		res = write_split(li, buf, len, off, NULL);
		return res == -EACCES ? -EIO : res;
	}
	memset(&r, 0, sizeof(r));
	r.op = write ? ISC_WRITE : ISC_READ;
	r.lba = off / li->blksz;
	r.buf = buf;
	r.len = len;
	res = submit(li, &r, 1);
	return res == -EACCES ? -EIO : res;
}

int bdev_iscsi_flush(struct bdev_iscsi *li)
{
	struct isc_req r;
	int res;

	memset(&r, 0, sizeof(r));
	r.op = ISC_SYNC;
	res = submit(li, &r, 1);
	return res == -EACCES ? -EIO : res;
}

int bdev_iscsi_submit(struct bdev_iscsi *li, struct bdev_aio *a)
{
	struct isc_req *r;
	int res;

	if ((a->off | a->len) % li->blksz)
		return -EINVAL;
	pthread_mutex_lock(&li->lock);
	li->aio_pending++;
	pthread_mutex_unlock(&li->lock);
	if (a->write && a->len > ISC_WRITE_CHUNK) {
		res = write_split(li, a->buf, a->len, a->off, a);
		if (res)
			aio_count_done(li, 1);
		return res;
	}
	r = calloc(1, sizeof(*r));
	if (!r) {
		aio_count_done(li, 1);
		return -ENOMEM;
	}
	r->op = a->write ? ISC_WRITE : ISC_READ;
	r->lba = a->off / li->blksz;
	r->buf = a->buf;
	r->len = a->len;
	r->aio = a;
	return submit(li, r, 0);
}

void bdev_iscsi_drain(struct bdev_iscsi *li)
{
	pthread_mutex_lock(&li->lock);
	while (li->aio_pending)
		pthread_cond_wait(&li->idle, &li->lock);
	pthread_mutex_unlock(&li->lock);
}

/* COMPARE AND WRITE; RESERVATION CONFLICT stays -EACCES (the probe needs
 * to tell it apart). */
static int caw_raw(struct bdev_iscsi *li, uint64_t off, const void *expect, const void *newval,
		   void *actual)
{
	struct isc_req r;
	uint8_t *buf;
	int res;

	if (li->blksz != BDEV_ATS_SECTOR)
		return -EOPNOTSUPP;
	buf = bdev_alloc(2 * BDEV_ATS_SECTOR);
	if (!buf)
		return -ENOMEM;
	memcpy(buf, expect, BDEV_ATS_SECTOR);
	memcpy(buf + BDEV_ATS_SECTOR, newval, BDEV_ATS_SECTOR);
	memset(&r, 0, sizeof(r));
	r.op = ISC_CAW;
	r.lba = off / li->blksz;
	r.buf = buf;
	r.len = 2 * BDEV_ATS_SECTOR;
	res = submit(li, &r, 1);
	/* The sense data says where the first difference is, not what the
	 * sector holds: read it for the caller.  (Another host may change it
	 * in between; callers treat ACTUAL as a hint and compare again.) */
	if (res == -ECANCELED && actual) {
		int e = bdev_iscsi_rw(li, 0, buf, BDEV_ATS_SECTOR, off);

		if (e)
			res = e;
		else
			memcpy(actual, buf, BDEV_ATS_SECTOR);
	}
	bdev_free(buf);
	return res;
}

int bdev_iscsi_pr(struct bdev_iscsi *li, int action, uint64_t key, uint64_t sa_key)
{
	struct isc_req r;

	memset(&r, 0, sizeof(r));
	r.op = ISC_PR_OUT;
	r.pr_action = action;
	r.key = key;
	r.sa_key = sa_key;
	return submit(li, &r, 1);
}

int bdev_iscsi_pr_keys(struct bdev_iscsi *li, uint64_t *keys, unsigned max, unsigned *n,
		       uint64_t *holder, int *type)
{
	struct isc_req r;
	int res;

	memset(&r, 0, sizeof(r));
	r.op = ISC_PR_IN;
	r.pr_action = SCSI_PERSISTENT_RESERVE_READ_KEYS;
	r.keys = keys;
	r.max_keys = max;
	res = submit(li, &r, 1);
	if (res)
		return res;
	*n = r.nkeys;
	memset(&r, 0, sizeof(r));
	r.op = ISC_PR_IN;
	r.pr_action = SCSI_PERSISTENT_RESERVE_READ_RESERVATION;
	res = submit(li, &r, 1);
	if (res)
		return res;
	*holder = r.holder;
	*type = r.pr_type;
	return 0;
}

int bdev_iscsi_caw(struct bdev_iscsi *li, uint64_t off, const void *expect, const void *newval,
		   void *actual)
{
	int r = caw_raw(li, off, expect, newval, actual);

	return r == -EACCES ? -EIO : r;
}

/* The trial COMPARE AND WRITE (issue 13: a target's Block Limits page can
 * advertise CAW and the target still reject it, as Debian's tgt does).
 * Two commands on sector 0, both writing back what it holds, so neither
 * changes the volume whatever the target does: one whose comparison must
 * match (GOOD), one whose comparison must fail (MISCOMPARE, nothing
 * written).  A concurrent change of sector 0 by another host turns the
 * first into a miscompare: then read again and retry. */
static int caw_probe_once(struct bdev_iscsi *li)
{
	uint8_t *cur = bdev_alloc(3 * BDEV_ATS_SECTOR), *bad, *act;
	int r = -EIO, tries;

	if (!cur)
		return -ENOMEM;
	bad = cur + BDEV_ATS_SECTOR;
	act = bad + BDEV_ATS_SECTOR;
	for (tries = 0; tries < 5; tries++) {
		r = bdev_iscsi_rw(li, 0, cur, BDEV_ATS_SECTOR, 0);
		if (r)
			goto out;
		r = caw_raw(li, 0, cur, cur, NULL);
		if (r != -ECANCELED)
			break;
	}
	if (r)
		goto out;
	memcpy(bad, cur, BDEV_ATS_SECTOR);
	bad[BDEV_ATS_SECTOR - 1] ^= 0xff;
	r = caw_raw(li, 0, bad, cur, act);
	if (r == -ECANCELED)
		r = 0;
	else if (!r)
		r = -EMEDIUMTYPE;      /* "matched" a wrong expectation */
out:
	bdev_free(cur);
	return r;
}

/* A LUN that mounted hosts have reserved (Write Exclusive - Registrants
 * Only, lockmgr/pr.c) refuses our trial write with RESERVATION CONFLICT
 * before comparing anything.  Then probe under a provisional key of our
 * own, and drop it again: the heartbeat registers this nexus's real key
 * before its first write. */
static int caw_probe(struct bdev_iscsi *li)
{
	uint64_t key;
	int r = caw_probe_once(li);

	if (r != -EACCES)
		return r;
	key = 0x5646505200000000ull | li->isid_rnd;     /* "VFPR" */
	r = bdev_iscsi_pr(li, SCSI_PR_REGISTER_AND_IGNORE, 0, key);
	if (r)
		return r == -EACCES ? -EIO : r;
	r = caw_probe_once(li);
	(void)bdev_iscsi_pr(li, SCSI_PR_REGISTER, key, 0);
	return r == -EACCES ? -EIO : r;
}

void bdev_iscsi_close(struct bdev_iscsi *li)
{
	uint64_t one = 1;

	if (!li)
		return;
	bdev_iscsi_drain(li);
	pthread_mutex_lock(&li->lock);
	li->stop = 1;
	pthread_mutex_unlock(&li->lock);
	if (write(li->efd, &one, sizeof(one)) < 0) {
		/* saturated: it wakes anyway */
	}
	pthread_join(li->thr, NULL);
	pthread_mutex_lock(&li->lock);
	li->done_stop = 1;
	pthread_cond_signal(&li->done_cv);
	pthread_mutex_unlock(&li->lock);
	pthread_join(li->done_thr, NULL);
	close(li->efd);
	pthread_mutex_destroy(&li->lock);
	pthread_cond_destroy(&li->idle);
	pthread_cond_destroy(&li->done_cv);
	free(li);
}

/* The initiator name: the host name and the process, so that each vmfsd is
 * its own initiator (and its own persistent-reservation registrant).  The
 * environment can name it (VMFSD_ISCSI_INITIATOR) for targets whose ACLs
 * list initiators. */
static void initiator_name(char *buf, size_t len)
{
	const char *env = getenv("VMFSD_ISCSI_INITIATOR");
	char host[64] = "localhost";

	if (env && *env) {
		snprintf(buf, len, "%s", env);
		return;
	}
	gethostname(host, sizeof(host) - 1);
	snprintf(buf, len, "iqn.2024-01.org.vmfsd:%s.%ld", host, (long)getpid());
}

int bdev_iscsi_open(const char *url, int rdonly, bdev_iscsi_gate_fn gate, void *gate_arg,
		    struct bdev_iscsi **out, uint64_t *size)
{
	struct iscsi_context *pctx;
	struct iscsi_url *u;
	struct bdev_iscsi *li;
	struct isc_req rc;
	int r;

	li = calloc(1, sizeof(*li));
	if (!li)
		return -ENOMEM;
	initiator_name(li->initiator, sizeof(li->initiator));
	/* A context only to parse the URL with (libiscsi reports parse errors
	 * through one). */
	pctx = iscsi_create_context(li->initiator);
	if (!pctx) {
		free(li);
		return -ENOMEM;
	}
	u = iscsi_parse_full_url(pctx, url);
	if (!u) {
		iscsi_destroy_context(pctx);
		free(li);
		return -EINVAL;
	}
	li->url = *u;
	li->url.iscsi = NULL;
	iscsi_destroy_url(u);
	iscsi_destroy_context(pctx);

	if (getrandom(&li->isid_rnd, sizeof(li->isid_rnd), 0) != sizeof(li->isid_rnd))
		li->isid_rnd = (uint32_t)getpid() * 2654435761u;
	li->isid_rnd &= 0xffffff;       /* the ISID's 24-bit random field */
	li->rdonly = rdonly;
	li->gate = gate;
	li->gate_arg = gate_arg;
	li->blksz = 512;
	atomic_store(&li->timeout_ms, ISC_DEFAULT_TIMEOUT_MS);
	pthread_mutex_init(&li->lock, NULL);
	pthread_cond_init(&li->idle, NULL);
	pthread_cond_init(&li->done_cv, NULL);
	li->qtail = &li->qhead;
	li->dtail = &li->dhead;
	li->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (li->efd < 0) {
		r = -errno;
		goto fail_mutex;
	}
	r = -pthread_create(&li->done_thr, NULL, completer, li);
	if (r) {
		close(li->efd);
		goto fail_mutex;
	}
	r = -pthread_create(&li->thr, NULL, service, li);
	if (r) {
		pthread_mutex_lock(&li->lock);
		li->done_stop = 1;
		pthread_cond_signal(&li->done_cv);
		pthread_mutex_unlock(&li->lock);
		pthread_join(li->done_thr, NULL);
		close(li->efd);
		goto fail_mutex;
	}
	/* The first command waits for the login, which takes longer than
	 * D: give it the login bound. */
	memset(&rc, 0, sizeof(rc));
	rc.op = ISC_READCAP;
	atomic_store(&li->timeout_ms, ISC_LOGIN_MS + ISC_LOGIN_MS / 9);
	r = submit(li, &rc, 1);
	atomic_store(&li->timeout_ms, ISC_DEFAULT_TIMEOUT_MS);
	if (r) {
		r = r == -EIO ? -EHOSTUNREACH : r;
		goto fail;
	}
	/* Block sizes other than 512 would make the 512-byte ATS sector a
	 * part of a logical block: COMPARE AND WRITE compares whole blocks. */
	if (rc.blksz != 512) {
		r = -EMEDIUMTYPE;
		goto fail;
	}
	li->blksz = rc.blksz;
	li->nblocks = rc.nblocks;
	if (!rdonly) {
		r = caw_probe(li);
		if (r) {
			r = r == -EOPNOTSUPP ? -EMEDIUMTYPE : r;
			goto fail;
		}
	}
	*size = li->nblocks * li->blksz;
	*out = li;
	return 0;
fail:
	bdev_iscsi_close(li);
	return r;
fail_mutex:
	pthread_mutex_destroy(&li->lock);
	pthread_cond_destroy(&li->idle);
	pthread_cond_destroy(&li->done_cv);
	free(li);
	return r;
}
