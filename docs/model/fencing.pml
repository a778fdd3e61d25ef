/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Promela model of the vmfsd heartbeat, self-fencing and takeover order
 * (docs/cluster.md §3).  Host A holds a lock and keeps writing;
 * at any moment its heartbeat I/O may start failing, its renewal may hang,
 * or it may crash, and storage may come back later.  Survivor B watches A's
 * heartbeat slot, judges A dead on its own clock, claims the slot with ATS,
 * replays, frees it with generation + 1, and breaks A's lock.
 *
 * Time is discrete: one tick = the fence thread's check period.  Every
 * device I/O completes within D ticks of its issue and takes effect on the
 * medium at some point in between (or never, if it fails); a read samples
 * the medium at some point between its issue and its completion.  Times are
 * kept as ages (ticks since an event), capped where only "more than X"
 * matters, so the state space is finite and the search covers unbounded
 * runs.  Within a tick:
 *   1. A's writer and renewal may issue I/O (unless fenced or crashed);
 *   2. A's fence timer: fence if the last successful renewal was *issued*
 *      more than T - M ago (the writer may have issued just before: the
 *      one-tick race between a writer and the fence timer);
 *   3. B may issue a read of A's slot;
 *   4. in any order: I/Os take effect and complete, B judges and acts
 *      (claim, replay, release, break) as early as the rules allow;
 *   5. time passes.
 * B's rule: the first read that returned a content completed at F; a later
 * read *issued* at S returned it again; dead iff S - F > T.
 * Checked (assertions):
 *   - no write of A takes effect after B broke A's lock;
 *   - B breaks the lock only after the replay and the generation bump;
 *   - a healthy A is never fenced and never judged dead.
 * Mutants (-DMUT_...) break one rule each; docs/model/README.md lists what
 * spin finds for each of them.
 */

#ifndef T
#define T 8             /* heartbeat timeout */
#endif
#ifndef D
#define D 2             /* I/O timeout: every I/O completes within D ticks */
#endif
#ifndef M
#define M 3             /* margin: A fences T - M after its last good renewal */
#endif
#define FA (T - M)
#define CAP_A (FA + 1)          /* a_age: only "> FA" matters */
#define CAP_F (T + D + 1)       /* f_age: only "f_age - q_age > T" matters */

#define FREE 0
#define LIVE 1
#define REPLAYING 2

/* The medium: A's heartbeat slot (state, generation) and the lock. */
byte s_state = LIVE;
byte s_gen = 1;
bool lock_a = true;     /* the lock record names A with generation 1 */

/* Host A. */
bool a_env;             /* A has suffered its failure */
bool a_hb_broken;       /* heartbeat I/O fails (may come back) */
bool a_stall;           /* renewal hangs without failing (may resume) */
bool a_crashed;
bool a_fenced;
byte a_age;             /* ticks since the last successful renewal was issued */
bool a_mine_cur = true; /* the slot still holds what A wrote last */
bool r_on, r_landed, r_fail, r_ok, r_miss;
byte r_age;
bool w_on;
byte w_age;

/* Survivor B. */
bool b_seen;            /* B holds an observation */
bool b_cur;             /* ...and the slot still holds that content */
bool b_live;            /* that content is LIVE */
byte f_age;             /* ticks since the first read returning it completed */
bool q_on, q_exec, q_cur, q_same, q_live;
byte q_age;
bool dead, claimed, replayed, released, broken;

inline slot_written()
{
	a_mine_cur = false; b_cur = false; q_cur = false
}

inline tick()
{
	if
	:: a_age < CAP_A -> a_age++
	:: else -> skip
	fi;
	if
	:: f_age < CAP_F -> f_age++
	:: else -> skip
	fi;
	if
	:: w_on -> w_age++
	:: else -> skip
	fi;
	if
	:: r_on -> r_age++
	:: else -> skip
	fi;
	if
	:: q_on -> q_age++
	:: else -> skip
	fi
}

active proctype world()
{
	do
	:: true ->
		/* A's failure, at any tick; storage may come back later. */
		if
		:: !a_env -> a_env = true; a_hb_broken = true
		:: !a_env -> a_env = true; a_stall = true
		:: !a_env -> a_env = true; a_crashed = true
		:: a_hb_broken -> a_hb_broken = false
		:: a_stall -> a_stall = false
		:: skip
		fi;

		/* 1. A issues. */
		if
		:: !a_fenced && !a_crashed && !w_on -> w_on = true; w_age = 0
		:: skip
		fi;
		if
		:: !a_fenced && !a_crashed && !a_stall && !r_on ->
			r_on = true; r_age = 0; r_landed = false;
			r_fail = a_hb_broken; r_ok = false; r_miss = false
		:: else -> skip
		fi;

		/* 2. A's fence timer (no I/O). */
		if
		:: !a_fenced && a_age > FA ->
			assert(a_env);  /* a healthy host never fences */
			a_fenced = true
		:: else -> skip
		fi;

		/* 3. B may start a read of the slot. */
		if
		:: !q_on && !claimed -> q_on = true; q_age = 0; q_exec = false
		:: skip
		fi;

		/* 4. Effects, completions and B's actions, in any order. */
		do
		:: w_on ->
			assert(!broken);        /* THE safety property */
			w_on = false
		:: r_on && !r_landed ->
			r_landed = true;
			if
			:: r_fail -> skip
#ifdef MUT_PLAIN_RENEW
			:: !r_fail -> s_state = LIVE; slot_written(); a_mine_cur = true; r_ok = true
#else
			:: !r_fail && s_state == LIVE && a_mine_cur ->       /* ATS */
				slot_written(); a_mine_cur = true; r_ok = true
			:: !r_fail && !(s_state == LIVE && a_mine_cur) -> r_miss = true
#endif
			fi
		:: r_on && r_landed ->
			r_on = false;
			if
#ifdef MUT_FENCE_FROM_COMPLETION
			:: r_ok -> a_age = 0
#else
			:: r_ok -> if
				   :: r_age < a_age -> a_age = r_age
				   :: else -> skip
				   fi
#endif
			:: r_miss -> a_fenced = true    /* slot taken over: fence */
			:: else -> skip
			fi
		:: q_on && !q_exec ->
			q_exec = true; q_cur = true; q_same = b_seen && b_cur;
			q_live = s_state == LIVE
		:: q_on && q_exec ->
			q_on = false;
			if
			:: !q_same ->           /* a new content */
				b_seen = true; b_cur = q_cur; b_live = q_live;
#ifdef MUT_FIRST_BY_ISSUE
				f_age = q_age
#else
				f_age = 0
#endif
			:: else -> skip
			fi;
#ifdef MUT_CONFIRM_BY_COMPLETION
			dead = b_live && f_age > T
#else
			dead = b_live && f_age - q_age > T && f_age >= q_age
#endif
		:: dead && !claimed ->
			assert(a_env);          /* a healthy host is never judged dead */
			if
			:: b_cur ->             /* ATS from exactly the content judged */
				s_state = REPLAYING; slot_written(); claimed = true
			:: else -> dead = false
			fi
		:: claimed && !replayed -> replayed = true
		:: replayed && !released -> s_state = FREE; s_gen++; slot_written(); released = true
#ifdef MUT_BREAK_ON_DEAD
		:: dead && !broken ->
#else
		:: released && !broken && s_gen != 1 ->
#endif
			assert(replayed);
			lock_a = false; broken = true
		:: !(w_on && w_age >= D) && !(r_on && r_age >= D) && !(q_on && q_age >= D) ->
			break
		od;

		/* 5. Time passes. */
		tick()
	od
}
