/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Internal interface of vmfs-webd, the browser client's HTTPS server
 * (docs/webui.md).  vmfs-webd holds no VM logic: every resource and every
 * action is a request to the host agent (vmfs-hostd) through the same
 * client library vmfsctl uses (vm/agentc.c).  What it adds is the web's
 * part: TLS, logins and sessions, CSRF tokens, rate limits, JSON over
 * HTTP, the datastore browser (paths confined to the datastore), and the
 * static files of the UI.  The files:
 *   main.c   options, the HTTP server, static files, request plumbing
 *   api.c    the /api routes: resources and actions, the jobs table
 *   auth.c   the login token, sessions, CSRF, rate limits
 *   files.c  the datastore browser: list, download, upload, mkdir, delete
 *   tls.c    the self-signed certificate made at first start
 */
#ifndef VMFS_WEBD_H
#define VMFS_WEBD_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>
#include <microhttpd.h>

struct webd {
	char agent[PATH_MAX];         /* the agent's socket */
	char www[PATH_MAX];           /* the UI's static files */
	char cert[PATH_MAX], key[PATH_MAX];
	char token_file[PATH_MAX];
	char listen[64];              /* address to bind */
	int port;
	int session_idle;             /* seconds a session lives unused */
	int session_max;              /* seconds a session lives at most */
	int rate;                     /* requests per second per client address */
	int login_fails;              /* failed logins per minute per address */
	uint64_t max_upload;          /* bytes of one upload */
	char token[128];              /* the login secret (token file) */
	int wwwfd;                    /* O_PATH of www */
};

/* One HTTP request being served (MHD's per-connection context). */
struct hreq {
	struct webd *w;
	struct MHD_Connection *conn;
	char addr[64];                /* the client's address, for limits and logs */
	char *body;                   /* a JSON body, bounded */
	size_t len;
	bool too_big;
	bool started;                 /* the first call (headers) was handled */
	bool done;                    /* a response was queued */
	/* an upload in progress (files.c) */
	int up_dirfd, up_fd;
	char up_tmp[300], up_name[256];
	uint64_t up_len;
	int up_err;
	char up_msg[256];
};

/* the biggest JSON request body (a create is well under 1 KiB) */
#define WEBD_MAX_BODY (64 * 1024)

/* main.c: responses.  All steal O or RESP; they return MHD's result. */
enum MHD_Result webd_respond(struct hreq *h, unsigned status, struct MHD_Response *resp);
enum MHD_Result webd_json(struct hreq *h, unsigned status, json_t *o);
enum MHD_Result webd_error(struct hreq *h, unsigned status, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
const char *webd_arg(struct hreq *h, const char *name);
void webd_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* api.c */
/* the first call of a request to /api: the checks that must come before
 * the body is read (rate, session, CSRF, sizes); 0 or a response queued */
enum MHD_Result api_begin(struct hreq *h, const char *method, const char *url, bool *handled);
enum MHD_Result api_handle(struct hreq *h, const char *method, const char *url);
/* the agent's answer to REQ (stolen), or a reply {"ok":false,...} */
json_t *api_agent(struct webd *w, json_t *req);
/* the datastore ROOT (a mount path) named NAME by its label or UUID */
int api_datastore(struct webd *w, const char *name, char *root, size_t size);

/* auth.c */
int auth_token_init(struct webd *w, bool *created);
/* 0 and a new session (ID and CSRF token, 64 hex characters each);
 * -EACCES wrong credentials; -EAGAIN too many failures from ADDR */
int auth_login(struct webd *w, const char *addr, const char *user, const char *password,
	       char *id, char *csrf);
/* 0 when the session ID is valid (it is touched), and its CSRF token;
 * -EACCES otherwise */
int auth_session(struct webd *w, const char *id, char *csrf);
void auth_logout(const char *id);
bool auth_equal(const char *a, const char *b);
/* false when ADDR is over its request rate */
bool auth_rate(struct webd *w, const char *addr);
int auth_random_hex(char *out, size_t bytes);

/* files.c (the datastore ROOT is a realpath'd mount) */
/* the HTTP status of a negative errno of the functions below */
unsigned files_status(int rc);
/* opens REL under ROOT: never above it, no symlinks, no other mount */
int files_open(const char *root, const char *rel, int flags, mode_t mode);
enum MHD_Result files_list(struct hreq *h, const char *root, const char *rel);
enum MHD_Result files_download(struct hreq *h, const char *root, const char *rel);
enum MHD_Result files_mkdir(struct hreq *h, const char *root, const char *rel);
enum MHD_Result files_delete(struct hreq *h, const char *root, const char *rel);
/* upload: begin (first call), data, end (last call), abort (cut off) */
int files_upload_begin(struct hreq *h, const char *root, const char *rel, uint64_t length);
void files_upload_data(struct hreq *h, const char *data, size_t size);
enum MHD_Result files_upload_end(struct hreq *h);
void files_upload_abort(struct hreq *h);
/* REL (a datastore-relative file the user picked) as an absolute path
 * inside ROOT that exists, for the agent (an ISO, a kernel) */
int files_resolve(const char *root, const char *rel, char *out, size_t size);
/* a name the user typed for a file or folder: no '/', no "..", not
 * empty, no control characters, not starting with '.' */
bool files_name_ok(const char *name);

/* tls.c: makes a self-signed certificate and key when neither exists */
int tls_ensure(const char *cert, const char *key, const char *listen, bool *created, char *msg,
	       size_t msize);

#endif
