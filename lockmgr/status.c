// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * What `vmfsd --status DEVICE` shows: the heartbeat slots (watched for a
 * while on this process's clock, since a single read cannot tell a live
 * host from a dead one) and every lock record that is not free, on the
 * resource clusters and on the allocated inodes.  Read-only: safe to run
 * against a volume that other hosts have mounted.  The formatter returns
 * text; printing is the program's business.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lockmgr_internal.h"

const char *hb_liveness_name(enum hb_liveness l)
{
	switch (l) {
	case HB_UNSEEN:
		return "unseen";
	case HB_FREE:
		return "free";
	case HB_ALIVE:
		return "alive";
	case HB_SILENT:
		return "silent";
	case HB_DEAD:
		return "dead";
	case HB_DAMAGED:
		return "damaged";
	}
	return "?";
}

const char *hb_state_name(uint16_t state)
{
	switch (state) {
	case VMFSD_HB_FREE:
		return "free";
	case VMFSD_HB_LIVE:
		return "live";
	case VMFSD_HB_REPLAYING:
		return "replaying";
	}
	return "?";
}

void lockmgr_status_free(struct lockmgr_status *st)
{
	if (!st)
		return;
	free(st->hosts);
	for (uint32_t i = 0; st->locks && i < st->nlocks; i++)
		free(st->locks[i].path);
	free(st->locks);
	free(st);
}

static void sleep_ms(uint32_t ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000l };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static int add_lock(struct lockmgr_status *st, size_t *cap, const struct lockmgr_lock *lk)
{
	if (st->nlocks == *cap) {
		size_t nc = *cap ? *cap * 2 : 64;
		struct lockmgr_lock *n = realloc(st->locks, nc * sizeof(*n));

		if (!n)
			return -ENOMEM;
		st->locks = n;
		*cap = nc;
	}
	st->locks[st->nlocks++] = *lk;
	return 0;
}

/* Judges one lock sector against the slots as last observed. */
static int note_lock(struct lockmgr_status *st, size_t *cap, const struct hb_obs *o,
		     const uint8_t *sec, enum lockmgr_obj obj, uint64_t id, uint64_t off)
{
	struct lockmgr_lock lk = { .obj = obj, .id = id, .off = off };
	struct vmfsd_lock rec;
	uint32_t s;
	int r;

	for (s = 0; s < VMFSD_SECTOR && !sec[s]; s++)
		;
	if (s == VMFSD_SECTOR)
		return 0;       /* never written: free */
	r = vmfsd_lock_decode(sec, off / VMFSD_META_BLOCK, &rec);
	if (r) {
		lk.damaged = r;
		return add_lock(st, cap, &lk);
	}
	if (rec.mode == VMFSD_LOCK_FREE)
		return 0;
	lk.mode = rec.mode;
	lk.lock_gen = rec.lock_gen;
	lk.owner_slot = rec.owner_slot;
	lk.owner_gen = rec.owner_slot_gen;
	memcpy(lk.holders, rec.holders, sizeof(lk.holders));
	lk.holders[rec.owner_slot / 8] |= (uint8_t)(1u << (rec.owner_slot % 8));
	for (s = 0; s < VMFSD_MAX_HOSTS; s++) {
		const struct hb_obs_slot *hs;
		bool full = s == rec.owner_slot;

		if (!(lk.holders[s / 8] & (1u << (s % 8))))
			continue;
		if (s >= o->n) {
			lk.stale[s / 8] |= (uint8_t)(1u << (s % 8));
			continue;
		}
		hs = &o->s[s];
		if (!lock_holder_valid(&hs->d, hs->zero, !hs->seen || !hs->ok,
				       full ? rec.owner_slot_gen : rec.holder_gen8[s], full))
			lk.stale[s / 8] |= (uint8_t)(1u << (s % 8));
	}
	return add_lock(st, cap, &lk);
}

/* Lock sectors of the COUNT clusters of one kind, and for the inode kind
 * the lock sectors of every inode whose bit is set. */
static int scan_clusters(struct bdev *bd, struct lockmgr_status *st, size_t *cap,
			 const struct hb_obs *o, int kind, uint32_t count)
{
	const struct vmfsd_sb *sb = &st->sb;
	const uint32_t batch = 64;
	uint8_t *buf = bdev_alloc((size_t)batch * VMFSD_META_BLOCK);
	uint8_t *sec = bdev_alloc(VMFSD_SECTOR);
	struct vmfsd_rc *rc = malloc(sizeof(*rc));  /* 3.5 KiB: off the stack */
	uint32_t i, j, b;
	int r = 0;

	if (!buf || !sec || !rc) {
		r = -ENOMEM;
		goto out;
	}
	for (i = 0; i < count && !r; i += batch) {
		uint32_t n = count - i < batch ? count - i : batch;
		uint64_t off = vmfsd_rc_off(sb, kind, i);

		r = bdev_pread(bd, buf, (size_t)n * VMFSD_META_BLOCK, off);
		for (j = 0; j < n && !r; j++) {
			uint8_t *blk = buf + (size_t)j * VMFSD_META_BLOCK;
			uint64_t boff = off + (uint64_t)j * VMFSD_META_BLOCK;

			r = note_lock(st, cap, o, blk, (enum lockmgr_obj)kind, i + j, boff);
			if (r || kind != VMFSD_RC_INODE ||
			    vmfsd_rc_decode(blk, boff / VMFSD_META_BLOCK, rc))
				continue;
			for (b = 0; b < rc->nitems && !r; b++) {
				uint64_t ino = rc->first_item + b, ioff;

				if (!(rc->bitmap[b / 8] & (1u << (b % 8))) || !ino ||
				    ino >= sb->inode_count)
					continue;
				ioff = vmfsd_inode_off(sb, ino);
				r = bdev_pread(bd, sec, VMFSD_SECTOR, ioff);
				if (!r)
					r = note_lock(st, cap, o, sec, LOCKMGR_OBJ_INODE, ino, ioff);
				st->inodes_checked++;
			}
		}
	}
out:
	bdev_free(buf);
	bdev_free(sec);
	free(rc);
	return r;
}

int lockmgr_status(struct bdev *bd, uint32_t watch_ms, struct lockmgr_status **out)
{
	struct lockmgr_status *st = calloc(1, sizeof(*st));
	uint8_t *blk = bdev_alloc(VMFSD_META_BLOCK);
	struct hb_obs o = { 0 };
	size_t cap = 0;
	int64_t start, now;
	uint32_t i;
	int r;

	if (!st || !blk) {
		r = -ENOMEM;
		goto fail;
	}
	r = bdev_pread(bd, blk, VMFSD_META_BLOCK, 0);
	if (!r)
		r = vmfsd_sb_decode(blk, 0, &st->sb);
	if (!r)
		r = vmfsd_sb_check_layout(&st->sb);
	if (!r)
		r = hb_obs_init(&o, bd, &st->sb, -1);
	if (r)
		goto fail;
	st->timing = o.t;
	/* One interval plus the I/O timeout: every host that is alive
	 * completes a renewal in that time (docs/cluster.md §2). */
	if (!watch_ms)
		watch_ms = st->timing.interval_ms + st->timing.io_timeout_ms;
	st->watch_ms = watch_ms;
	start = hb_clock_ns();
	r = hb_obs_scan(&o);
	while (!r) {
		int64_t left = start + (int64_t)watch_ms * NS_PER_MS - hb_clock_ns();

		if (left <= 0)
			break;
		sleep_ms((uint32_t)((left / NS_PER_MS) < st->timing.interval_ms / 2 + 1 ?
				    left / NS_PER_MS + 1 : st->timing.interval_ms / 2 + 1));
		r = hb_obs_scan(&o);
	}
	if (r)
		goto fail;
	st->hosts = calloc(o.n, sizeof(*st->hosts));
	if (!st->hosts) {
		r = -ENOMEM;
		goto fail;
	}
	now = hb_clock_ns();
	for (i = 0; i < o.n; i++) {
		const struct hb_obs_slot *s = &o.s[i];
		struct lockmgr_host *h = &st->hosts[st->nhosts];

		if (!s->seen || (s->ok && s->zero))
			continue;
		st->nhosts++;
		h->slot = i;
		h->liveness = hb_obs_liveness_locked(&o, i);
		h->since_beat_ms = s->changed ? (now - s->first_seen) / NS_PER_MS : -1;
		if (s->ok)
			h->hb = s->d;
	}
	r = scan_clusters(bd, st, &cap, &o, VMFSD_RC_INODE, st->sb.ibm_count);
	if (!r)
		r = scan_clusters(bd, st, &cap, &o, VMFSD_RC_SUB, st->sb.sbm_count);
	if (!r)
		r = scan_clusters(bd, st, &cap, &o, VMFSD_RC_BLOCK, st->sb.dbm_count);
	if (r)
		goto fail;
	hb_obs_destroy(&o);
	bdev_free(blk);
	*out = st;
	return 0;
fail:
	hb_obs_destroy(&o);
	bdev_free(blk);
	lockmgr_status_free(st);
	return r;
}

/* ---------------- formatting ---------------- */

struct sbuf {
	char *p;
	size_t len, cap;
	int err;
};

__attribute__((format(printf, 2, 3)))
static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (b->err)
		return;
	for (;;) {
		size_t room = b->cap - b->len;

		va_start(ap, fmt);
		n = vsnprintf(b->p ? b->p + b->len : NULL, room, fmt, ap);
		va_end(ap);
		if (n < 0) {
			b->err = -EINVAL;
			return;
		}
		if ((size_t)n < room) {
			b->len += (size_t)n;
			return;
		}
		{
			size_t nc = (b->cap ? b->cap * 2 : 4096) + (size_t)n;
			char *np = realloc(b->p, nc);

			if (!np) {
				b->err = -ENOMEM;
				return;
			}
			b->p = np;
			b->cap = nc;
		}
	}
}

/* JSON string: host names are bytes from the disk, so escape everything
 * that is not printable ASCII. */
static void sb_json_str(struct sbuf *b, const char *s)
{
	sb_printf(b, "\"");
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\')
			sb_printf(b, "\\%c", c);
		else if (c < 0x20 || c >= 0x7f)
			sb_printf(b, "\\u%04x", c);
		else
			sb_printf(b, "%c", c);
	}
	sb_printf(b, "\"");
}

/* Text: non-printable bytes of a name shown as '?'. */
static void printable(char *dst, const char *src, size_t len)
{
	size_t i;

	for (i = 0; i + 1 < len && src[i]; i++)
		dst[i] = (unsigned char)src[i] < 0x20 || (unsigned char)src[i] >= 0x7f ? '?' : src[i];
	dst[i] = 0;
}

static const char *obj_name(enum lockmgr_obj o)
{
	switch (o) {
	case LOCKMGR_OBJ_INODE:
		return "inode";
	case LOCKMGR_OBJ_RC_INODE:
		return "inode-cluster";
	case LOCKMGR_OBJ_RC_SUB:
		return "subblock-cluster";
	case LOCKMGR_OBJ_RC_BLOCK:
		return "block-cluster";
	}
	return "?";
}

static const char *slot_name(const struct lockmgr_status *st, uint32_t slot)
{
	uint32_t i;

	for (i = 0; i < st->nhosts; i++)
		if (st->hosts[i].slot == slot)
			return st->hosts[i].hb.host_name;
	return "";
}

static void format_text(const struct lockmgr_status *st, struct sbuf *b)
{
	char uuid[37], name[VMFSD_HOSTNAME_MAX + 1];
	uint32_t i, s;

	vmfsd_uuid_format(st->sb.uuid, uuid);
	printable(name, st->sb.label, sizeof(name));
	sb_printf(b, "volume %s (%s): heartbeat every %u ms, dead after %u ms, watched %u ms\n",
		  name[0] ? name : "(no label)", uuid, st->timing.interval_ms,
		  st->timing.timeout_ms, st->watch_ms);
	sb_printf(b, "\nSLOT  HOST                 STATE      LIVENESS  GEN      COUNTER   PID      LAST BEAT\n");
	for (i = 0; i < st->nhosts; i++) {
		const struct lockmgr_host *h = &st->hosts[i];
		char beat[64];

		printable(name, h->hb.host_name, sizeof(name));
		if (h->since_beat_ms >= 0)
			snprintf(beat, sizeof(beat), "%.1f s ago", (double)h->since_beat_ms / 1000);
		else if (h->hb.state == VMFSD_HB_FREE)
			snprintf(beat, sizeof(beat), "-");
		else
			snprintf(beat, sizeof(beat), "none in %.1f s", (double)st->watch_ms / 1000);
		sb_printf(b, "%-5u %-20s %-10s %-9s %-8" PRIu64 " %-9" PRIu64 " %-8u %s",
			  h->slot, name[0] ? name : "-", hb_state_name(h->hb.state),
			  hb_liveness_name(h->liveness), h->hb.generation, h->hb.counter, h->hb.pid, beat);
		if (h->hb.state == VMFSD_HB_REPLAYING)
			sb_printf(b, " (replayed by slot %u)", h->hb.replayer_slot);
		if (vmfsd_hb_late(h->hb.state, h->hb.flags))
			sb_printf(b, " (alone: commits late)");
		sb_printf(b, "\n");
	}
	sb_printf(b, "\nLOCKS (%u not free, %" PRIu64 " inodes checked)\n", st->nlocks,
		  st->inodes_checked);
	for (i = 0; i < st->nlocks; i++) {
		const struct lockmgr_lock *lk = &st->locks[i];
		const char *sep = "";

		sb_printf(b, "%s %" PRIu64, obj_name(lk->obj), lk->id);
		if (lk->path)
			sb_printf(b, " (%s)", lk->path);
		sb_printf(b, ": ");
		if (lk->damaged) {
			sb_printf(b, "damaged lock record (%s)\n", strerror(-lk->damaged));
			continue;
		}
		sb_printf(b, "%s by ", lock_mode_name(lk->mode));
		for (s = 0; s < VMFSD_MAX_HOSTS; s++) {
			if (!(lk->holders[s / 8] & (1u << (s % 8))))
				continue;
			printable(name, slot_name(st, s), sizeof(name));
			sb_printf(b, "%s%s (slot %u%s)", sep, name[0] ? name : "?", s,
				  lk->stale[s / 8] & (1u << (s % 8)) ? ", stale" : "");
			sep = ", ";
		}
		sb_printf(b, " [lock generation %" PRIu64 "]\n", lk->lock_gen);
	}
}

static void format_json(const struct lockmgr_status *st, struct sbuf *b)
{
	char uuid[37];
	uint32_t i, s;

	vmfsd_uuid_format(st->sb.uuid, uuid);
	sb_printf(b, "{\n  \"volume\": {\"label\": ");
	sb_json_str(b, st->sb.label);
	sb_printf(b, ", \"uuid\": \"%s\", \"hb_interval_ms\": %u, \"hb_timeout_ms\": %u, "
		  "\"watch_ms\": %u},\n  \"hosts\": [", uuid, st->timing.interval_ms,
		  st->timing.timeout_ms, st->watch_ms);
	for (i = 0; i < st->nhosts; i++) {
		const struct lockmgr_host *h = &st->hosts[i];

		vmfsd_uuid_format(h->hb.host_uuid, uuid);
		sb_printf(b, "%s\n    {\"slot\": %u, \"name\": ", i ? "," : "", h->slot);
		sb_json_str(b, h->hb.host_name);
		sb_printf(b, ", \"uuid\": \"%s\", \"state\": \"%s\", \"liveness\": \"%s\", "
			  "\"generation\": %" PRIu64 ", \"counter\": %" PRIu64 ", \"pid\": %u, ",
			  uuid, hb_state_name(h->hb.state), hb_liveness_name(h->liveness),
			  h->hb.generation, h->hb.counter, h->hb.pid);
		if (h->since_beat_ms >= 0)
			sb_printf(b, "\"seconds_since_beat\": %.3f, ", (double)h->since_beat_ms / 1000);
		else
			sb_printf(b, "\"seconds_since_beat\": null, ");
		sb_printf(b, "\"wall_time_ms\": %" PRIu64 ", \"commits_late\": %s", h->hb.wall_time_ms,
			  vmfsd_hb_late(h->hb.state, h->hb.flags) ? "true" : "false");
		if (h->hb.state == VMFSD_HB_REPLAYING)
			sb_printf(b, ", \"replayer_slot\": %u, \"replayer_generation\": %" PRIu64,
				  h->hb.replayer_slot, h->hb.replayer_gen);
		sb_printf(b, "}");
	}
	sb_printf(b, "\n  ],\n  \"locks\": [");
	for (i = 0; i < st->nlocks; i++) {
		const struct lockmgr_lock *lk = &st->locks[i];
		const char *sep = "";

		sb_printf(b, "%s\n    {\"object\": \"%s\", \"id\": %" PRIu64 ", \"offset\": %" PRIu64,
			  i ? "," : "", obj_name(lk->obj), lk->id, lk->off);
		if (lk->path) {
			sb_printf(b, ", \"path\": ");
			sb_json_str(b, lk->path);
		}
		if (lk->damaged) {
			sb_printf(b, ", \"damaged\": true}");
			continue;
		}
		sb_printf(b, ", \"mode\": \"%s\", \"lock_generation\": %" PRIu64
			  ", \"owner_slot\": %u, \"holders\": [", lock_mode_name(lk->mode),
			  lk->lock_gen, lk->owner_slot);
		for (s = 0; s < VMFSD_MAX_HOSTS; s++) {
			if (!(lk->holders[s / 8] & (1u << (s % 8))))
				continue;
			sb_printf(b, "%s{\"slot\": %u, \"host\": ", sep, s);
			sb_json_str(b, slot_name(st, s));
			sb_printf(b, ", \"valid\": %s}",
				  lk->stale[s / 8] & (1u << (s % 8)) ? "false" : "true");
			sep = ", ";
		}
		sb_printf(b, "]}");
	}
	sb_printf(b, "\n  ]\n}\n");
}

int lockmgr_status_format(const struct lockmgr_status *st, int json, char **text)
{
	struct sbuf b = { 0 };

	if (json)
		format_json(st, &b);
	else
		format_text(st, &b);
	if (b.err) {
		free(b.p);
		return b.err;
	}
	*text = b.p;
	return 0;
}
