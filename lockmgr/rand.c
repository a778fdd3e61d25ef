// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * The random numbers of the cluster code: jitter for the back-off between
 * attempts on a contended lock record (lock.c) and between the
 * filesystem's lock retries (fs/cluster.c).  Hosts that collide once must
 * not retry in lockstep, so every process draws its own sequence: the
 * generator is seeded from getrandom() on first use and again in a forked
 * child (test hosts are forked processes), never left at rand()'s fixed
 * default seed.  SplitMix64 over an atomic counter: one atomic add per
 * draw, so threads share it without a lock and never draw the same state.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "lockmgr.h"

static _Atomic uint64_t rand_state;
static pthread_once_t rand_once = PTHREAD_ONCE_INIT;

/* SplitMix64's increment and output mix (Steele, Lea, Flood: "Fast
 * splittable pseudorandom number generators", OOPSLA 2014). */
#define RAND_GAMMA 0x9e3779b97f4a7c15ull

static uint64_t rand_mix(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static void rand_seed(void)
{
	uint64_t seed;
	struct timespec ts;

	if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) != (ssize_t)sizeof(seed)) {
		/* No entropy yet (early boot): the pid and the clock still
		 * differ between the processes that contend. */
		clock_gettime(CLOCK_MONOTONIC, &ts);
		seed = rand_mix((uint64_t)getpid() << 32 ^ (uint64_t)ts.tv_nsec ^
				(uint64_t)ts.tv_sec * RAND_GAMMA);
	}
	atomic_store(&rand_state, seed);
}

static void rand_init(void)
{
	rand_seed();
	/* A forked child would otherwise repeat its parent's sequence. */
	pthread_atfork(NULL, NULL, rand_seed);
}

uint64_t lockmgr_rand(void)
{
	pthread_once(&rand_once, rand_init);
	return rand_mix(atomic_fetch_add(&rand_state, RAND_GAMMA) + RAND_GAMMA);
}

uint32_t lockmgr_rand_below(uint32_t n)
{
	/* Multiply-shift: uniform enough for jitter, no division. */
	return n ? (uint32_t)(((lockmgr_rand() >> 32) * (uint64_t)n) >> 32) : 0;
}
