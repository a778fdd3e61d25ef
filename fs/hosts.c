// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * The cluster as this host sees it, for the host agent's HA engine
 * (docs/ha.md §2): the virtual attribute user.vmfsd.hosts of the mount
 * root, a JSON document naming this host (slot, generation, fenced) and
 * every claimed heartbeat slot (host, live/silent/dead/replaying/free,
 * generation, how long its content has been unchanged on this observer's
 * clock).  The heartbeat itself keeps no history, so this file keeps a
 * small one per slot: when this vmfsd first saw an incarnation dead (or
 * being replayed) and when its slot was freed with a new generation, i.e.
 * when that host's locks became breakable (docs/cluster.md §4.3).  An
 * agent must not try to take over a dead host's VMs before that moment:
 * their locks still hold.
 *
 * hosts_observe() runs on the commit thread once per commit interval,
 * before and after the dead-host recovery; the attribute read takes the
 * history's own mutex only, never meta_lock, so it answers at once even
 * while a replay runs.
 */
#include <errno.h>
#include <stdarg.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fs_internal.h"

struct hosts_seen {
	bool known;             /* we have looked at this slot (claimed or free) */
	uint64_t gen;           /* ... its generation */
	uint16_t state;         /* ... and state, as last seen */
	char name[VMFSD_HOSTNAME_MAX + 1];
	/* the last incarnation that died in this slot */
	bool died;
	char dead_name[VMFSD_HOSTNAME_MAX + 1];
	uint64_t dead_gen;
	int64_t dead_mono_ms, dead_wall_ms;     /* declared dead (first seen) */
	bool broken;
	int64_t broken_mono_ms, broken_wall_ms; /* freed with generation + 1 */
	bool by_us;                             /* we replayed it */
	int64_t replay_ms;                      /* claim to release, ours */
};

struct hosts_hist {
	pthread_mutex_t mu;
	uint32_t n;
	struct hosts_seen s[VMFSD_MAX_HOSTS];
};

static int64_t mono_ms(void)
{
	return hb_clock_ns() / 1000000;
}

static int64_t wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void fs_log(struct fs *fs, int level, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	if (!fs->log_hook)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fs->log_hook(fs->log_arg, level, msg);
}

int hosts_init(struct fs *fs)
{
	struct hosts_hist *h;

	if (!fs->hb)
		return 0;
	h = calloc(1, sizeof(*h));
	if (!h)
		return -ENOMEM;
	pthread_mutex_init(&h->mu, NULL);
	h->n = fs->sb.max_hosts < VMFSD_MAX_HOSTS ? fs->sb.max_hosts : VMFSD_MAX_HOSTS;
	fs->hosts = h;
	return 0;
}

void hosts_free(struct fs *fs)
{
	if (!fs->hosts)
		return;
	pthread_mutex_destroy(&fs->hosts->mu);
	free(fs->hosts);
	fs->hosts = NULL;
}

static void mark_dead(struct hosts_seen *e, const char *name, uint64_t gen)
{
	if (e->died && e->dead_gen == gen && !strcmp(e->dead_name, name))
		return;
	e->died = true;
	e->broken = false;
	e->by_us = false;
	e->replay_ms = 0;
	snprintf(e->dead_name, sizeof(e->dead_name), "%s", name);
	e->dead_gen = gen;
	e->dead_mono_ms = mono_ms();
	e->dead_wall_ms = wall_ms();
}

static void mark_broken(struct hosts_seen *e)
{
	if (e->broken)
		return;
	e->broken = true;
	e->broken_mono_ms = mono_ms();
	e->broken_wall_ms = wall_ms();
}

/* One look at every slot (hb_slot_state: the monitor thread's latest
 * read).  The transitions that matter:
 *   LIVE g, judged dead or turned REPLAYING     -> declared dead
 *   LIVE/REPLAYING g, then any state with a generation > g
 *                                              -> its locks are broken
 *   LIVE g, then FREE g                         -> a clean unmount */
void hosts_observe(struct fs *fs)
{
	struct hosts_hist *h = fs->hosts;
	/* what changed, logged once the mutex is dropped */
	struct {
		int level;
		char msg[160];
	} ev[8];
	unsigned nev = 0;

#define NOTE(lvl, ...)                                                            \
	do {                                                                      \
		if (nev < sizeof(ev) / sizeof(ev[0])) {                           \
			ev[nev].level = (lvl);                                    \
			snprintf(ev[nev].msg, sizeof(ev[nev].msg), __VA_ARGS__);  \
			nev++;                                                    \
		}                                                                 \
	} while (0)

	if (!h || !fs->hb)
		return;
	pthread_mutex_lock(&h->mu);
	for (uint32_t i = 0; i < h->n; i++) {
		struct hosts_seen *e = &h->s[i];
		struct hb_slot_info si;

		if (hb_slot_state(fs->hb, i, &si) || si.liveness == HB_UNSEEN ||
		    si.liveness == HB_DAMAGED || si.mine)
			continue;
		bool claimed = si.state == VMFSD_HB_LIVE || si.state == VMFSD_HB_REPLAYING;
		bool was_live = e->known && (e->state == VMFSD_HB_LIVE || e->state == VMFSD_HB_REPLAYING);

		if (was_live && si.generation > e->gen) {
			/* the incarnation we knew was replayed and released
			 * (perhaps faster than we looked) */
			mark_dead(e, e->name, e->gen);
			if (!e->broken)
				NOTE(FS_LOG_WARNING, "host %s (slot %u, generation %llu) was recovered "
				     "by another host: its journal is replayed and its locks are "
				     "broken", e->name, i, (unsigned long long)e->gen);
			mark_broken(e);
		}
		if (claimed && (si.liveness == HB_DEAD || si.state == VMFSD_HB_REPLAYING)) {
			if (!(e->died && e->dead_gen == si.generation))
				NOTE(FS_LOG_WARNING, "host %s (slot %u, generation %llu) declared dead: "
				     "%s", si.host_name, i, (unsigned long long)si.generation,
				     si.state == VMFSD_HB_REPLAYING ? "another host is replaying its "
				     "journal" : "its heartbeat stopped for the timeout");
			mark_dead(e, si.host_name, si.generation);
		}
		if (e->known && e->state == VMFSD_HB_FREE && claimed && si.liveness != HB_DEAD)
			NOTE(FS_LOG_INFO, "host %s joined the volume (slot %u, generation %llu)",
			     si.host_name, i, (unsigned long long)si.generation);
		else if (was_live && e->state == VMFSD_HB_LIVE && si.state == VMFSD_HB_FREE &&
			 si.generation == e->gen)
			NOTE(FS_LOG_INFO, "host %s left the volume (slot %u: a clean unmount)",
			     e->name, i);
		if (claimed || si.state == VMFSD_HB_FREE) {
			/* a free slot seen first counts as known: whoever
			 * claims it later is a host joining */
			e->known = true;
			e->gen = si.generation;
			e->state = si.state;
			if (si.host_name[0])
				snprintf(e->name, sizeof(e->name), "%s", si.host_name);
		}
	}
	pthread_mutex_unlock(&h->mu);
#undef NOTE
	for (unsigned k = 0; k < nev; k++)
		fs_log(fs, ev[k].level, "%s", ev[k].msg);
}

void hosts_note_replay(struct fs *fs, uint32_t slot, const char *name, uint64_t gen,
		       int64_t replay_ms)
{
	struct hosts_hist *h = fs->hosts;

	if (!h || slot >= h->n)
		return;
	pthread_mutex_lock(&h->mu);
	mark_dead(&h->s[slot], name, gen);
	mark_broken(&h->s[slot]);
	h->s[slot].by_us = true;
	h->s[slot].replay_ms = replay_ms;
	h->s[slot].known = true;
	h->s[slot].gen = gen + 1;
	h->s[slot].state = VMFSD_HB_FREE;
	pthread_mutex_unlock(&h->mu);
	fs_log(fs, FS_LOG_WARNING, "host %s (slot %u, generation %llu) is dead: this host replayed "
	       "its journal in %lld ms and broke its locks (slot freed with generation %llu)",
	       name, slot, (unsigned long long)gen, (long long)replay_ms,
	       (unsigned long long)gen + 1);
}

/* ---------------- the attribute ---------------- */

struct jbuf {
	char *p;
	size_t len, cap;
	int err;
};

static void jb_printf(struct jbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void jb_printf(struct jbuf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (b->err)
		return;
	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
		va_end(ap);
		if (n < 0) {
			b->err = -EINVAL;
			return;
		}
		if ((size_t)n < b->cap - b->len) {
			b->len += (size_t)n;
			return;
		}
		size_t cap = b->cap * 2 + (size_t)n;
		char *q = realloc(b->p, cap);

		if (!q) {
			b->err = -ENOMEM;
			return;
		}
		b->p = q;
		b->cap = cap;
	}
}

/* a JSON string: host names are printable ASCII in practice, but the
 * slot is on a shared disk, so escape whatever it holds */
static void jb_str(struct jbuf *b, const char *s)
{
	jb_printf(b, "\"");
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\')
			jb_printf(b, "\\%c", c);
		else if (c < 0x20 || c >= 0x7f)
			jb_printf(b, "\\u%04x", c);
		else
			jb_printf(b, "%c", c);
	}
	jb_printf(b, "\"");
}

static const char *slot_word(const struct hb_slot_info *si)
{
	if (si->state == VMFSD_HB_FREE)
		return "free";
	switch (si->liveness) {
	case HB_ALIVE:
		return si->state == VMFSD_HB_REPLAYING ? "replaying" : "live";
	case HB_SILENT:
		return si->state == VMFSD_HB_REPLAYING ? "replaying" : "silent";
	case HB_DEAD:
		return si->state == VMFSD_HB_REPLAYING ? "replaying" : "dead";
	case HB_FREE:
		return "free";
	default:
		return "unknown";
	}
}

int hosts_describe(struct fs *fs, char **out, size_t *len)
{
	struct hosts_hist *h = fs->hosts;
	struct jbuf b = {.cap = 4096};
	const struct hb_timing *t;
	char uuid[37];
	int64_t now = mono_ms();
	bool first = true;

	if (!fs->hb || !h)
		return -ENODATA;        /* read-only mount: no view of its own */
	b.p = malloc(b.cap);
	if (!b.p)
		return -ENOMEM;
	t = hb_get_timing(fs->hb);
	vmfsd_uuid_format(fs->sb.uuid, uuid);
	/* the volume's identity: agents name datastores and derive VM IDs
	 * from it, the same on every host */
	jb_printf(&b, "{\"version\":1,\"volume\":{\"uuid\":\"%s\",\"label\":", uuid);
	jb_str(&b, fs->sb.label);
	jb_printf(&b, "},\"self\":{\"host\":");
	jb_str(&b, fs->host);
	jb_printf(&b, ",\"slot\":%u,\"generation\":%llu,\"fenced\":%s,\"taken_over\":%s,"
		  "\"pid\":%d},\"interval_ms\":%u,\"timeout_ms\":%u,\"wall_ms\":%lld,\"hosts\":[",
		  fs->slot, (unsigned long long)hb_my_generation(fs->hb),
		  fs->fenced ? "true" : "false", hb_is_taken_over(fs->hb) ? "true" : "false",
		  (int)getpid(), t->interval_ms, t->timeout_ms, (long long)wall_ms());
	pthread_mutex_lock(&h->mu);
	for (uint32_t i = 0; i < h->n; i++) {
		struct hosts_seen *e = &h->s[i];
		struct hb_slot_info si;

		if (hb_slot_state(fs->hb, i, &si) || si.liveness == HB_UNSEEN)
			continue;
		if (!si.mine && si.liveness == HB_FREE && !si.generation && !e->died)
			continue;       /* never claimed */
		jb_printf(&b, "%s{\"slot\":%u,\"host\":", first ? "" : ",", i);
		first = false;
		jb_str(&b, si.mine ? fs->host : si.host_name);
		jb_printf(&b, ",\"state\":\"%s\",\"generation\":%llu,\"unchanged_ms\":%lld,"
			  "\"self\":%s", si.mine ? "live" : si.liveness == HB_DAMAGED ? "damaged"
			  : slot_word(&si), (unsigned long long)si.generation,
			  (long long)si.unchanged_ms, si.mine ? "true" : "false");
		if (si.state == VMFSD_HB_REPLAYING)
			jb_printf(&b, ",\"replayer_slot\":%u", si.replayer_slot);
		/* Our own slot as we last wrote it, not as the last scan read it. */
		if (vmfsd_hb_late(si.state, si.mine ? hb_flags(fs->hb) : si.flags))
			jb_printf(&b, ",\"commits_late\":true");
		if (e->died) {
			jb_printf(&b, ",\"died\":{\"host\":");
			jb_str(&b, e->dead_name);
			jb_printf(&b, ",\"generation\":%llu,\"declared_ago_ms\":%lld,"
				  "\"declared_wall_ms\":%lld,\"locks_broken\":%s",
				  (unsigned long long)e->dead_gen, (long long)(now - e->dead_mono_ms),
				  (long long)e->dead_wall_ms, e->broken ? "true" : "false");
			if (e->broken)
				jb_printf(&b, ",\"broken_ago_ms\":%lld,\"broken_wall_ms\":%lld",
					  (long long)(now - e->broken_mono_ms),
					  (long long)e->broken_wall_ms);
			if (e->by_us)
				jb_printf(&b, ",\"replayed_here\":true,\"replay_ms\":%lld",
					  (long long)e->replay_ms);
			jb_printf(&b, "}");
		}
		jb_printf(&b, "}");
	}
	pthread_mutex_unlock(&h->mu);
	jb_printf(&b, "]}");
	if (b.err) {
		free(b.p);
		return b.err;
	}
	*out = b.p;
	*len = b.len;
	return 0;
}
