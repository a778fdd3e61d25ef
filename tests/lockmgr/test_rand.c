// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * lockmgr_rand: every process draws its own back-off sequence (issue 9:
 * with rand() unseeded, contending hosts retried in lockstep).  Checks
 * that two separately started processes, and two children forked from one
 * parent after it drew, get different sequences; that threads drawing at
 * once never get the same value; that lockmgr_rand_below stays in range.
 * Exit 0 pass, 1 fail.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lockmgr/lockmgr.h"

#define NDRAW 16
#define NTHREAD 4
#define PER_THREAD 20000

static int failures;

static void check(int ok, const char *what)
{
	printf("%s: %s\n", ok ? "ok" : "FAIL", what);
	if (!ok)
		failures++;
}

/* Runs CMD (or, with CMD NULL, forks and draws) and reads NDRAW values. */
static int draws_of(const char *self, uint64_t *v)
{
	int fd[2], i, st;
	pid_t pid;
	FILE *f;

	if (pipe(fd))
		return -1;
	fflush(stdout);         /* the child must not write our buffer again */
	pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		dup2(fd[1], 1);
		close(fd[0]);
		if (self) {
			execl(self, self, "draw", (char *)NULL);
			_exit(127);
		}
		for (i = 0; i < NDRAW; i++)
			printf("%llu\n", (unsigned long long)lockmgr_rand());
		fflush(stdout);
		_exit(0);
	}
	close(fd[1]);
	f = fdopen(fd[0], "r");
	for (i = 0; i < NDRAW; i++) {
		unsigned long long x;

		if (!f || fscanf(f, "%llu", &x) != 1)
			break;
		v[i] = x;
	}
	if (f)
		fclose(f);
	waitpid(pid, &st, 0);
	return i == NDRAW && WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

static int cmp64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static void *thread_draw(void *arg)
{
	uint64_t *v = arg;
	int i;

	for (i = 0; i < PER_THREAD; i++)
		v[i] = lockmgr_rand();
	return NULL;
}

int main(int argc, char **argv)
{
	uint64_t a[NDRAW], b[NDRAW], p[NDRAW], *t;
	pthread_t th[NTHREAD];
	int i, ok;

	if (argc > 1 && !strcmp(argv[1], "draw")) {
		for (i = 0; i < NDRAW; i++)
			printf("%llu\n", (unsigned long long)lockmgr_rand());
		return 0;
	}
	check(draws_of("/proc/self/exe", a) == 0 && draws_of("/proc/self/exe", b) == 0 &&
	      memcmp(a, b, sizeof(a)) != 0,
	      "two processes started separately draw different sequences");

	for (i = 0; i < NDRAW; i++)
		p[i] = lockmgr_rand();          /* the parent is seeded and has drawn */
	check(draws_of(NULL, a) == 0 && draws_of(NULL, b) == 0 && memcmp(a, b, sizeof(a)) != 0,
	      "two children forked from one parent draw different sequences");
	for (i = 0; i < NDRAW; i++)
		p[i] = lockmgr_rand();
	check(memcmp(a, p, sizeof(a)) != 0, "a forked child does not repeat its parent");

	t = calloc(NTHREAD * PER_THREAD, sizeof(*t));
	if (!t)
		return 1;
	for (i = 0; i < NTHREAD; i++)
		pthread_create(&th[i], NULL, thread_draw, t + i * PER_THREAD);
	for (i = 0; i < NTHREAD; i++)
		pthread_join(th[i], NULL);
	qsort(t, NTHREAD * PER_THREAD, sizeof(*t), cmp64);
	for (ok = 1, i = 1; i < NTHREAD * PER_THREAD; i++)
		ok &= t[i] != t[i - 1];
	check(ok, "4 threads x 20000 draws at once: no value twice");
	free(t);

	for (ok = 1, i = 0; i < 100000; i++)
		ok &= lockmgr_rand_below(7) < 7 && lockmgr_rand_below(1) == 0;
	check(ok && lockmgr_rand_below(0) == 0, "lockmgr_rand_below stays in range");
	printf("%d passed, %d failed\n", 5 - failures, failures);
	return failures ? 1 : 0;
}
