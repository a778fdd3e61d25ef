// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Who may use vmfs-webd, and how often.
 *
 * Login: the user name "root" and the secret in the token file (default
 * /etc/vmfs-webd/token).  The file must belong to root and be readable by
 * no one else (the server refuses to start otherwise); at first start,
 * when it does not exist, a random 32-character token is written there.
 * Whoever can read it is root on this host already, so the web login is
 * never weaker than the machine's own root (docs/webui.md: why a token and
 * not PAM).
 *
 * Sessions: a login makes a session (a random 256-bit ID in an HttpOnly,
 * Secure, SameSite=Strict cookie) with its own random CSRF token, which
 * every state-changing request must send back in X-CSRF-Token.  A session
 * ends after --session-idle seconds unused or --session-max seconds in all,
 * at logout, or when the server restarts (sessions live in memory only).
 *
 * Limits: a token bucket of --rate requests per second per client address
 * (burst: two seconds' worth), and at most --login-failures failed logins
 * per minute per address (the address is then refused for a minute).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "webd/webd.h"

#define MAX_SESSIONS 64
#define MAX_ADDRS 256

struct session {
	char id[65];
	char csrf[65];
	int64_t created, used;    /* monotonic seconds */
};

struct addr_state {
	char addr[64];
	double tokens;
	int64_t last_ms;
	int fails;                /* failed logins in the current minute */
	int64_t fail_start;       /* monotonic seconds */
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct session sessions[MAX_SESSIONS];
static struct addr_state addrs[MAX_ADDRS];

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int auth_random_hex(char *out, size_t bytes)
{
	unsigned char b[64];

	if (bytes > sizeof(b) || getrandom(b, bytes, 0) != (ssize_t)bytes)
		return -EIO;
	for (size_t i = 0; i < bytes; i++)
		sprintf(out + 2 * i, "%02x", b[i]);
	return 0;
}

/* compares in time independent of where they differ */
bool auth_equal(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	unsigned char d = la != lb;

	for (size_t i = 0; i < la; i++)
		d |= (unsigned char)a[i] ^ (unsigned char)b[i % (lb ? lb : 1)];
	return !d;
}

int auth_token_init(struct webd *w, bool *created)
{
	struct stat st;
	char dir[PATH_MAX], *slash;
	ssize_t n;
	int fd;

	*created = false;
	fd = open(w->token_file, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0 && errno == ENOENT) {
		char tok[33];

		snprintf(dir, sizeof(dir), "%s", w->token_file);
		slash = strrchr(dir, '/');
		if (slash && slash != dir) {
			*slash = '\0';
			mkdir(dir, 0700);
		}
		if (auth_random_hex(tok, 16))
			return -EIO;
		fd = open(w->token_file, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
		if (fd < 0)
			return -errno;
		if (write(fd, tok, 32) != 32 || write(fd, "\n", 1) != 1 || fsync(fd)) {
			close(fd);
			unlink(w->token_file);
			return -EIO;
		}
		close(fd);
		*created = true;
		fd = open(w->token_file, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	}
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
		close(fd);
		return -EINVAL;
	}
	/* readable by its owner only, and the owner is root (or whoever
	 * runs the server, for tests as another user) */
	if ((st.st_mode & 077) || (st.st_uid != 0 && st.st_uid != geteuid())) {
		close(fd);
		return -EPERM;
	}
	n = read(fd, w->token, sizeof(w->token) - 1);
	close(fd);
	if (n < 0)
		return -errno;
	w->token[n] = '\0';
	w->token[strcspn(w->token, "\r\n")] = '\0';
	if (strlen(w->token) < 16)
		return -EINVAL;   /* a guessable secret is no login */
	return 0;
}

/* the entry of ADDR, reusing the least recently seen one; under lock */
static struct addr_state *addr_get(const char *addr)
{
	struct addr_state *old = &addrs[0];

	for (int i = 0; i < MAX_ADDRS; i++) {
		if (!strcmp(addrs[i].addr, addr))
			return &addrs[i];
		if (addrs[i].last_ms < old->last_ms)
			old = &addrs[i];
	}
	memset(old, 0, sizeof(*old));
	snprintf(old->addr, sizeof(old->addr), "%s", addr);
	old->tokens = -1;          /* full on first use */
	return old;
}

bool auth_rate(struct webd *w, const char *addr)
{
	int64_t now = mono_ms();
	double burst = 2.0 * w->rate;
	struct addr_state *a;
	bool ok;

	pthread_mutex_lock(&lock);
	a = addr_get(addr);
	if (a->tokens < 0)
		a->tokens = burst;
	else
		a->tokens += (double)(now - a->last_ms) * w->rate / 1000.0;
	if (a->tokens > burst)
		a->tokens = burst;
	a->last_ms = now;
	ok = a->tokens >= 1;
	if (ok)
		a->tokens -= 1;
	pthread_mutex_unlock(&lock);
	return ok;
}

int auth_login(struct webd *w, const char *addr, const char *user, const char *password,
	       char *id, char *csrf)
{
	int64_t now = mono_ms() / 1000;
	struct session *s = NULL;
	struct addr_state *a;
	bool good;

	pthread_mutex_lock(&lock);
	a = addr_get(addr);
	if (now - a->fail_start >= 60) {
		a->fail_start = now;
		a->fails = 0;
	}
	if (a->fails >= w->login_fails) {
		pthread_mutex_unlock(&lock);
		return -EAGAIN;
	}
	good = user && password && !strcmp(user, "root") && auth_equal(password, w->token);
	if (!good) {
		a->fails++;
		pthread_mutex_unlock(&lock);
		return -EACCES;
	}
	/* a free slot, else an expired one, else the least recently used */
	for (int i = 0; i < MAX_SESSIONS; i++) {
		struct session *c = &sessions[i];

		if (!c->id[0] || now - c->used > w->session_idle || now - c->created > w->session_max) {
			s = c;
			break;
		}
		if (!s || c->used < s->used)
			s = c;
	}
	if (auth_random_hex(s->id, 32) || auth_random_hex(s->csrf, 32)) {
		s->id[0] = '\0';
		pthread_mutex_unlock(&lock);
		return -EIO;
	}
	s->created = s->used = now;
	strcpy(id, s->id);
	strcpy(csrf, s->csrf);
	pthread_mutex_unlock(&lock);
	return 0;
}

int auth_session(struct webd *w, const char *id, char *csrf)
{
	int64_t now = mono_ms() / 1000;
	int rc = -EACCES;

	if (!id || strlen(id) != 64)
		return -EACCES;
	pthread_mutex_lock(&lock);
	for (int i = 0; i < MAX_SESSIONS; i++) {
		struct session *s = &sessions[i];

		if (!s->id[0] || !auth_equal(s->id, id))
			continue;
		if (now - s->used > w->session_idle || now - s->created > w->session_max) {
			memset(s, 0, sizeof(*s));
			break;
		}
		s->used = now;
		strcpy(csrf, s->csrf);
		rc = 0;
		break;
	}
	pthread_mutex_unlock(&lock);
	return rc;
}

void auth_logout(const char *id)
{
	if (!id || strlen(id) != 64)
		return;
	pthread_mutex_lock(&lock);
	for (int i = 0; i < MAX_SESSIONS; i++)
		if (sessions[i].id[0] && auth_equal(sessions[i].id, id))
			memset(&sessions[i], 0, sizeof(sessions[i]));
	pthread_mutex_unlock(&lock);
}
