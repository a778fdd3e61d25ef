// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * vmfs-webd: the HTTPS server of the browser client (docs/webui.md,
 * vmfs-webd(8)).  It serves the UI's static files and the JSON API under
 * /api; the API is a thin layer over the host agent (api.c), so a VM
 * created, started or moved from the browser goes through exactly the
 * code vmfsctl's does.
 *
 * The HTTP side is libmicrohttpd with GnuTLS: one thread per connection
 * (an action may wait for the agent for minutes: a shutdown waits for the
 * guest), bounded in number, per client address and in idle time; request
 * bodies are bounded (JSON: WEBD_MAX_BODY, uploads: --max-upload and the
 * datastore's free space).  Every response carries headers that keep the
 * UI to itself: a Content-Security-Policy allowing only this origin's
 * scripts and styles, no framing, no sniffing, no referrer.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <linux/openat2.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "vm/agentc.h"
#include "vm/vm.h"
#include "webd/webd.h"

#ifndef VMFSD_VERSION
#define VMFSD_VERSION "?"
#endif
#ifndef WEBD_WWW_DIR
#define WEBD_WWW_DIR "/usr/local/share/vmfsd/www"
#endif

static const char *prog = "vmfs-webd";

/* one write per line: requests and jobs log from their own threads */
void webd_log(const char *fmt, ...)
{
	char line[2048];
	int n = snprintf(line, sizeof(line), "%s: ", prog);
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	strcat(line, "\n");
	fputs(line, stderr);
}

/* ------------------------------------------------------------ responses */

enum MHD_Result webd_respond(struct hreq *h, unsigned status, struct MHD_Response *resp)
{
	enum MHD_Result r;

	if (!resp)
		return MHD_NO;
	MHD_add_response_header(resp, "Content-Security-Policy",
				"default-src 'self'; img-src 'self' data:; object-src 'none'; "
				"base-uri 'none'; frame-ancestors 'none'; form-action 'self'");
	MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
	MHD_add_response_header(resp, "X-Frame-Options", "DENY");
	MHD_add_response_header(resp, "Referrer-Policy", "no-referrer");
	MHD_add_response_header(resp, "Strict-Transport-Security", "max-age=31536000");
	if (!MHD_get_response_header(resp, "Cache-Control"))
		MHD_add_response_header(resp, "Cache-Control", "no-store");
	r = MHD_queue_response(h->conn, status, resp);
	MHD_destroy_response(resp);
	h->done = true;
	return r;
}

enum MHD_Result webd_json(struct hreq *h, unsigned status, json_t *o)
{
	char *s = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(12));
	struct MHD_Response *resp;

	json_decref(o);
	if (!s)
		return MHD_NO;
	resp = MHD_create_response_from_buffer(strlen(s), s, MHD_RESPMEM_MUST_FREE);
	MHD_add_response_header(resp, "Content-Type", "application/json; charset=utf-8");
	return webd_respond(h, status, resp);
}

enum MHD_Result webd_error(struct hreq *h, unsigned status, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return webd_json(h, status, json_pack("{s:b,s:s}", "ok", 0, "error", msg));
}

const char *webd_arg(struct hreq *h, const char *name)
{
	return MHD_lookup_connection_value(h->conn, MHD_GET_ARGUMENT_KIND, name);
}

/* ------------------------------------------------------------ static files */

static const char *content_type(const char *name)
{
	static const struct { const char *ext, *type; } t[] = {
		{".html", "text/html; charset=utf-8"}, {".js", "text/javascript; charset=utf-8"},
		{".css", "text/css; charset=utf-8"}, {".png", "image/png"},
		{".svg", "image/svg+xml"}, {".ico", "image/x-icon"}, {".json", "application/json"},
	};
	const char *dot = strrchr(name, '.');

	for (size_t i = 0; dot && i < sizeof(t) / sizeof(t[0]); i++)
		if (!strcmp(dot, t[i].ext))
			return t[i].type;
	return "application/octet-stream";
}

static enum MHD_Result serve_static(struct hreq *h, const char *url)
{
	struct open_how how = {
		.flags = O_RDONLY | O_CLOEXEC,
		.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
	};
	const char *rel = url + 1;
	struct MHD_Response *resp;
	struct stat st;
	int fd;

	if (!*rel)
		rel = "index.html";
	if (strstr(rel, "..") || strspn(rel, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
				  "0123456789._-/") != strlen(rel))
		return webd_error(h, MHD_HTTP_NOT_FOUND, "no such page");
	fd = (int)syscall(SYS_openat2, h->w->wwwfd, rel, &how, sizeof(how));
	if (fd < 0 || fstat(fd, &st) || !S_ISREG(st.st_mode)) {
		if (fd >= 0)
			close(fd);
		return webd_error(h, MHD_HTTP_NOT_FOUND, "no such page");
	}
	resp = MHD_create_response_from_fd64((uint64_t)st.st_size, fd);
	if (!resp) {
		close(fd);
		return MHD_NO;
	}
	MHD_add_response_header(resp, "Content-Type", content_type(rel));
	MHD_add_response_header(resp, "Cache-Control", "no-cache");
	return webd_respond(h, MHD_HTTP_OK, resp);
}

/* ------------------------------------------------------------ requests */

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
				  const char *method, const char *version, const char *data,
				  size_t *data_size, void **ctx)
{
	struct hreq *h = *ctx;
	bool api = !strncmp(url, "/api/", 5);

	(void)version;
	if (!h) {
		const union MHD_ConnectionInfo *ci =
			MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
		const struct sockaddr *sa = ci ? ci->client_addr : NULL;

		h = calloc(1, sizeof(*h));
		if (!h)
			return MHD_NO;
		h->w = cls;
		h->conn = conn;
		h->up_fd = h->up_dirfd = -1;
		snprintf(h->addr, sizeof(h->addr), "?");
		if (sa && sa->sa_family == AF_INET)
			inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, h->addr,
				  sizeof(h->addr));
		else if (sa && sa->sa_family == AF_INET6)
			inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, h->addr,
				  sizeof(h->addr));
		*ctx = h;
		if (!auth_rate(h->w, h->addr))
			return webd_error(h, MHD_HTTP_TOO_MANY_REQUESTS, "too many requests: at most %d "
					  "a second from one address", h->w->rate);
		if (api) {
			bool handled = false;
			enum MHD_Result r = api_begin(h, method, url, &handled);

			if (handled)
				return r;
		} else if (strcmp(method, "GET") && strcmp(method, "HEAD")) {
			return webd_error(h, MHD_HTTP_METHOD_NOT_ALLOWED, "%s: GET only", url);
		}
		return MHD_YES;
	}
	if (h->done) {               /* refused early: drop what is sent */
		*data_size = 0;
		return MHD_YES;
	}
	if (*data_size) {
		if (h->up_fd >= 0) {
			files_upload_data(h, data, *data_size);
		} else if (h->len + *data_size > WEBD_MAX_BODY) {
			h->too_big = true;
		} else if (!h->too_big) {
			char *nb = realloc(h->body, h->len + *data_size + 1);

			if (!nb)
				return MHD_NO;
			h->body = nb;
			memcpy(h->body + h->len, data, *data_size);
			h->len += *data_size;
			h->body[h->len] = '\0';
		}
		*data_size = 0;
		return MHD_YES;
	}
	if (h->too_big)
		return webd_error(h, MHD_HTTP_CONTENT_TOO_LARGE, "request body over %d bytes", WEBD_MAX_BODY);
	if (api)
		return api_handle(h, method, url);
	return serve_static(h, url);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **ctx,
			 enum MHD_RequestTerminationCode toe)
{
	struct hreq *h = *ctx;

	(void)cls;
	(void)conn;
	(void)toe;
	if (!h)
		return;
	files_upload_abort(h);      /* a cut-off upload: its temporary file goes */
	free(h->body);
	free(h);
	*ctx = NULL;
}

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "re");
	char *buf = NULL;
	size_t n = 0;
	long len;

	if (!f)
		return NULL;
	if (!fseek(f, 0, SEEK_END) && (len = ftell(f)) > 0 && len < 1 << 20 && !fseek(f, 0, SEEK_SET)) {
		buf = malloc((size_t)len + 1);
		if (buf) {
			n = fread(buf, 1, (size_t)len, f);
			buf[n] = '\0';
		}
	}
	fclose(f);
	return buf;
}

/* ------------------------------------------------------------ main */

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: %s [OPTIONS]\n"
		"\n"
		"The browser client of the vmfsd VM tools: an HTTPS server for the web UI and\n"
		"its JSON API, talking to this host's agent (vmfs-hostd).\n"
		"\n"
		"Options:\n"
		"  -a, --agent SOCKET        the agent's socket (default as vmfsctl's)\n"
		"  -l, --listen ADDR         address to listen on (default 127.0.0.1; 0.0.0.0 or ::\n"
		"                            for every address)\n"
		"  -p, --port PORT           TCP port (default 8443)\n"
		"      --cert FILE           TLS certificate, PEM (default /var/lib/vmfs-webd/cert.pem;\n"
		"                            made, self-signed, at first start)\n"
		"      --key FILE            its private key (default /var/lib/vmfs-webd/key.pem)\n"
		"      --token-file FILE     the login secret of user root (default\n"
		"                            /etc/vmfs-webd/token; made at first start)\n"
		"      --www DIR             the UI's static files (default %s)\n"
		"      --session-idle SEC    a session ends unused after SEC (default 1800)\n"
		"      --session-max SEC     and at most SEC after login (default 43200)\n"
		"      --rate N              requests per second per client address (default 50)\n"
		"      --login-failures N    failed logins per minute per address (default 5)\n"
		"      --max-upload SIZE     largest upload, K/M/G/T suffixes (default 16G)\n"
		"  -h, --help                this help\n"
		"  -V, --version             version\n"
		"\n"
		"See vmfs-webd(8) and docs/webui.md.\n",
		prog, WEBD_WWW_DIR);
}

static int num_arg(const char *opt, const char *s, long lo, long hi, int *out)
{
	char *end;
	long v = strtol(s, &end, 10);

	if (*end || v < lo || v > hi) {
		fprintf(stderr, "%s: %s: '%s' is not %ld..%ld\n", prog, opt, s, lo, hi);
		return -1;
	}
	*out = (int)v;
	return 0;
}

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

int main(int argc, char **argv)
{
	enum { O_CERT = 256, O_KEY, O_TOKEN, O_WWW, O_IDLE, O_MAX, O_RATE, O_FAILS, O_UPLOAD };
	static const struct option opts[] = {
		{"agent", required_argument, NULL, 'a'},
		{"listen", required_argument, NULL, 'l'},
		{"port", required_argument, NULL, 'p'},
		{"cert", required_argument, NULL, O_CERT},
		{"key", required_argument, NULL, O_KEY},
		{"token-file", required_argument, NULL, O_TOKEN},
		{"www", required_argument, NULL, O_WWW},
		{"session-idle", required_argument, NULL, O_IDLE},
		{"session-max", required_argument, NULL, O_MAX},
		{"rate", required_argument, NULL, O_RATE},
		{"login-failures", required_argument, NULL, O_FAILS},
		{"max-upload", required_argument, NULL, O_UPLOAD},
		{"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, 'V'},
		{0},
	};
	struct webd w = {
		.port = 8443, .session_idle = 1800, .session_max = 43200, .rate = 50,
		.login_fails = 5, .max_upload = 16ULL << 30, .wwwfd = -1,
	};
	struct sockaddr_storage ss = {0};
	struct MHD_Daemon *d;
	char msg[PATH_MAX + 128], *cert, *key;
	bool created;
	int c, rc;

	snprintf(w.listen, sizeof(w.listen), "127.0.0.1");
	snprintf(w.cert, sizeof(w.cert), "/var/lib/vmfs-webd/cert.pem");
	snprintf(w.key, sizeof(w.key), "/var/lib/vmfs-webd/key.pem");
	snprintf(w.token_file, sizeof(w.token_file), "/etc/vmfs-webd/token");
	snprintf(w.www, sizeof(w.www), "%s", WEBD_WWW_DIR);
	while ((c = getopt_long(argc, argv, "a:l:p:hV", opts, NULL)) != -1) {
		switch (c) {
		case 'a':
			snprintf(w.agent, sizeof(w.agent), "%s", optarg);
			break;
		case 'l':
			snprintf(w.listen, sizeof(w.listen), "%s", optarg);
			break;
		case 'p':
			if (num_arg("--port", optarg, 1, 65535, &w.port))
				return 2;
			break;
		case O_CERT:
			snprintf(w.cert, sizeof(w.cert), "%s", optarg);
			break;
		case O_KEY:
			snprintf(w.key, sizeof(w.key), "%s", optarg);
			break;
		case O_TOKEN:
			snprintf(w.token_file, sizeof(w.token_file), "%s", optarg);
			break;
		case O_WWW:
			snprintf(w.www, sizeof(w.www), "%s", optarg);
			break;
		case O_IDLE:
			if (num_arg("--session-idle", optarg, 10, 86400 * 7, &w.session_idle))
				return 2;
			break;
		case O_MAX:
			if (num_arg("--session-max", optarg, 10, 86400 * 30, &w.session_max))
				return 2;
			break;
		case O_RATE:
			if (num_arg("--rate", optarg, 1, 100000, &w.rate))
				return 2;
			break;
		case O_FAILS:
			if (num_arg("--login-failures", optarg, 1, 1000, &w.login_fails))
				return 2;
			break;
		case O_UPLOAD:
			if (vm_parse_size(optarg, &w.max_upload) || !w.max_upload) {
				fprintf(stderr, "%s: --max-upload: '%s' is not a size (e.g. 8G)\n", prog, optarg);
				return 2;
			}
			break;
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			printf("%s %s\n", prog, VMFSD_VERSION);
			return 0;
		default:
			fprintf(stderr, "Try '%s --help'.\n", prog);
			return 2;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "%s: unexpected argument '%s'\nTry '%s --help'.\n", prog, argv[optind], prog);
		return 2;
	}
	if (!w.agent[0]) {
		rc = agentc_default_socket(w.agent, sizeof(w.agent));
		if (rc) {
			fprintf(stderr, "%s: %s: give --agent SOCKET or set VMFS_HOSTD_SOCKET\n", prog,
				rc == -EEXIST ? "several agents in /run/vmfs-hostd"
					      : "no host agent socket found in /run/vmfs-hostd");
			return 1;
		}
	}
	if (inet_pton(AF_INET, w.listen, &((struct sockaddr_in *)&ss)->sin_addr) == 1) {
		ss.ss_family = AF_INET;
		((struct sockaddr_in *)&ss)->sin_port = htons((uint16_t)w.port);
	} else if (inet_pton(AF_INET6, w.listen, &((struct sockaddr_in6 *)&ss)->sin6_addr) == 1) {
		ss.ss_family = AF_INET6;
		((struct sockaddr_in6 *)&ss)->sin6_port = htons((uint16_t)w.port);
	} else {
		fprintf(stderr, "%s: --listen: '%s' is not an IPv4 or IPv6 address\n", prog, w.listen);
		return 2;
	}
	w.wwwfd = open(w.www, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (w.wwwfd < 0) {
		fprintf(stderr, "%s: the UI's files %s: %s\n", prog, w.www, strerror(errno));
		return 1;
	}
	rc = auth_token_init(&w, &created);
	if (rc) {
		fprintf(stderr, "%s: token file %s: %s\n", prog, w.token_file,
			rc == -EPERM ? "must belong to root and be readable by its owner only (chmod 600)"
			: rc == -EINVAL ? "not a regular file with a secret of 16 characters or more"
			: strerror(-rc));
		return 1;
	}
	if (created)
		webd_log("made the login token %s (user root, password: its contents)", w.token_file);
	for (char *p = w.cert, *q = w.key; p; p = p == w.cert ? q : NULL) {
		char dir[PATH_MAX], *slash;

		snprintf(dir, sizeof(dir), "%s", p);
		slash = strrchr(dir, '/');
		if (slash && slash != dir) {
			*slash = '\0';
			mkdir(dir, 0755);
		}
	}
	rc = tls_ensure(w.cert, w.key, w.listen, &created, msg, sizeof(msg));
	if (rc) {
		fprintf(stderr, "%s: %s\n", prog, msg);
		return 1;
	}
	if (created)
		webd_log("made a self-signed certificate %s (key %s)", w.cert, w.key);
	cert = slurp(w.cert);
	key = slurp(w.key);
	if (!cert || !key) {
		fprintf(stderr, "%s: cannot read %s\n", prog, cert ? w.key : w.cert);
		return 1;
	}
	signal(SIGPIPE, SIG_IGN);
	/* thread per connection: an action waits for the agent (a shutdown,
	 * a Storage vMotion) while other requests go on; 64 connections in
	 * all, 16 per client address (a browser opens 6 per origin), 120 s
	 * idle (longer than the UI's polling interval of 2 s by far) */
	d = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
			     MHD_USE_TLS | MHD_USE_ERROR_LOG | (ss.ss_family == AF_INET6 ? MHD_USE_IPv6 : 0),
			     (uint16_t)w.port, NULL, NULL, on_request, &w,
			     MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
			     MHD_OPTION_HTTPS_MEM_CERT, cert,
			     MHD_OPTION_HTTPS_MEM_KEY, key,
			     MHD_OPTION_HTTPS_PRIORITIES, "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2",
			     MHD_OPTION_CONNECTION_LIMIT, 64U,
			     MHD_OPTION_PER_IP_CONNECTION_LIMIT, 16U,
			     MHD_OPTION_CONNECTION_TIMEOUT, 120U,
			     MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
			     MHD_OPTION_END);
	if (!d) {
		fprintf(stderr, "%s: cannot listen on %s port %d (in use? not an address of this host?)\n",
			prog, w.listen, w.port);
		return 1;
	}
	webd_log("listening on https://%s%s%s:%d/ (agent %s, files %s)", ss.ss_family == AF_INET6 ? "[" : "",
		 w.listen, ss.ss_family == AF_INET6 ? "]" : "", w.port, w.agent, w.www);
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);
	while (!stop)
		pause();
	webd_log("stopping");
	MHD_stop_daemon(d);
	free(cert);
	free(key);
	return 0;
}
