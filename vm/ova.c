// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * The package around an OVF descriptor (ovf.h): SHA digests (nettle), the
 * manifest (.mf: one "SHA256(file)= hex" line per file; ovftool before 4.x
 * and VirtualBox 4 wrote SHA1, ovftool may write SHA512), and the OVA, a
 * POSIX ustar archive.  DSP0243 wants the descriptor first, then the
 * manifest and certificate (or both at the end), then the files in the
 * order of References; the writer does exactly that and the reader does
 * not depend on it (it indexes the whole archive first).  An archive from
 * elsewhere is read defensively: every header's checksum verified, only
 * regular files (no links, devices or directories), names of one plain
 * component (no '/', no '..', no hidden files), every member inside the
 * file (a truncated archive is refused, not read short), pax extended
 * headers read for the names and sizes they give (and their result checked
 * like any other), at most OVA_MAX_MEMBERS.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <nettle/sha1.h>
#include <nettle/sha2.h>

#include "ovf.h"

#define BLK 512

/* ---------------------------------------------------------------- digests */

struct dctx {
	enum ovf_digest alg;
	union {
		struct sha1_ctx s1;
		struct sha256_ctx s256;
		struct sha512_ctx s512;
	} u;
};

static void d_init(struct dctx *d, enum ovf_digest alg)
{
	d->alg = alg;
	if (alg == OVF_SHA1)
		sha1_init(&d->u.s1);
	else if (alg == OVF_SHA256)
		sha256_init(&d->u.s256);
	else
		sha512_init(&d->u.s512);
}

static void d_update(struct dctx *d, const void *p, size_t n)
{
	if (d->alg == OVF_SHA1)
		sha1_update(&d->u.s1, n, p);
	else if (d->alg == OVF_SHA256)
		sha256_update(&d->u.s256, n, p);
	else
		sha512_update(&d->u.s512, n, p);
}

static void d_hex(struct dctx *d, char *hex)
{
	uint8_t md[SHA512_DIGEST_SIZE];
	size_t n = d->alg == OVF_SHA1 ? SHA1_DIGEST_SIZE
		 : d->alg == OVF_SHA256 ? SHA256_DIGEST_SIZE : SHA512_DIGEST_SIZE;

	if (d->alg == OVF_SHA1)
		sha1_digest(&d->u.s1, n, md);
	else if (d->alg == OVF_SHA256)
		sha256_digest(&d->u.s256, n, md);
	else
		sha512_digest(&d->u.s512, n, md);
	for (size_t i = 0; i < n; i++)
		sprintf(hex + 2 * i, "%02x", md[i]);
}

void ovf_digest_mem(const void *buf, size_t len, enum ovf_digest alg, char *hex)
{
	struct dctx d;

	d_init(&d, alg);
	d_update(&d, buf, len);
	d_hex(&d, hex);
}

int ovf_digest_fd(int fd, uint64_t off, uint64_t len, enum ovf_digest alg, char *hex,
		  void (*cb)(void *arg, uint64_t done), void *arg)
{
	size_t bs = 1 << 20;
	char *buf = malloc(bs);
	struct dctx d;
	uint64_t done = 0;

	if (!buf)
		return -ENOMEM;
	d_init(&d, alg);
	while (done < len) {
		size_t want = len - done < bs ? (size_t)(len - done) : bs;
		ssize_t n = pread(fd, buf, want, (off_t)(off + done));

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			int rc = n < 0 ? -errno : -ENODATA;

			free(buf);
			return rc;
		}
		d_update(&d, buf, (size_t)n);
		done += (uint64_t)n;
		if (cb)
			cb(arg, done);
	}
	free(buf);
	d_hex(&d, hex);
	return 0;
}

/* ---------------------------------------------------------------- manifest */

int ovf_mf_parse(const char *text, size_t len, const char *what, struct ovf_mf *mf,
		 struct vm_err *err)
{
	static const struct {
		const char *name;
		enum ovf_digest alg;
		size_t hexlen;
	} algs[] = {{"SHA1", OVF_SHA1, 40}, {"SHA256", OVF_SHA256, 64}, {"SHA512", OVF_SHA512, 128}};
	size_t pos = 0;
	int lineno = 0;

	memset(mf, 0, sizeof(*mf));
	if (len > OVF_MAX_MF)
		return vm_errf(err, -EFBIG, "%s: larger than %d bytes: not a manifest", what, OVF_MAX_MF);
	while (pos < len) {
		char line[512], *open, *close, *hex;
		size_t n = 0, a;
		struct ovf_mf_entry *e;

		lineno++;
		while (pos < len && text[pos] != '\n') {
			if (n + 1 == sizeof(line))
				return vm_errf(err, -E2BIG, "%s:%d: line too long", what, lineno);
			line[n++] = text[pos++];
		}
		pos++;
		while (n && (line[n - 1] == '\r' || line[n - 1] == ' '))
			n--;
		line[n] = '\0';
		if (!n)
			continue;
		/* "SHA256(file)= hex" (ovftool) or "SHA1 (file) = hex"
		 * (VirtualBox, openssl dgst) */
		open = strchr(line, '(');
		close = strrchr(line, ')');
		hex = close ? close + 1 : NULL;
		while (hex && *hex == ' ')
			hex++;
		if (!open || !close || close < open || *hex != '=')
			return vm_errf(err, -EINVAL, "%s:%d: expected ALG(file)= digest", what, lineno);
		*close = '\0';
		for (char *e = open; e > line && e[-1] == ' '; e--)
			e[-1] = '\0';
		*open = '\0';
		hex++;
		while (*hex == ' ')
			hex++;
		for (a = 0; a < sizeof(algs) / sizeof(algs[0]); a++)
			if (!strcmp(line, algs[a].name))
				break;
		if (a == sizeof(algs) / sizeof(algs[0]))
			return vm_errf(err, -ENOTSUP, "%s:%d: digest %.16s: only SHA1, SHA256 and SHA512 are known",
				       what, lineno, line);
		if (strlen(hex) != algs[a].hexlen || strspn(hex, "0123456789abcdefABCDEF") != algs[a].hexlen)
			return vm_errf(err, -EINVAL, "%s:%d: %s digest of '%.60s' is not %zu hex digits", what,
				       lineno, algs[a].name, open + 1, algs[a].hexlen);
		if (mf->n == sizeof(mf->e) / sizeof(mf->e[0]))
			return vm_errf(err, -E2BIG, "%s:%d: too many lines", what, lineno);
		e = &mf->e[mf->n++];
		if (strlen(open + 1) >= sizeof(e->file))
			return vm_errf(err, -E2BIG, "%s:%d: file name too long", what, lineno);
		strcpy(e->file, open + 1);
		for (char *c = e->file; *c; c++)   /* shown in messages: no terminal controls */
			if ((unsigned char)*c < 0x20 || *c == 0x7f)
				*c = '?';
		e->alg = algs[a].alg;
		for (size_t i = 0; hex[i]; i++)
			e->hex[i] = (char)(hex[i] | 0x20);   /* lower case */
		e->hex[algs[a].hexlen] = '\0';
	}
	return 0;
}

/* ---------------------------------------------------------------- ustar */

struct ustar {
	char name[100], mode[8], uid[8], gid[8], size[12], mtime[12], chksum[8], typeflag;
	char linkname[100], magic[6], version[2], uname[32], gname[32], devmajor[8], devminor[8];
	char prefix[155], pad[12];
};
_Static_assert(sizeof(struct ustar) == BLK, "ustar header is one block");

static bool zero_block(const unsigned char *b)
{
	for (int i = 0; i < BLK; i++)
		if (b[i])
			return false;
	return true;
}

/* octal (NUL or space terminated) or GNU base-256 (high bit of byte 0) */
static bool tar_num(const char *f, size_t len, uint64_t *out)
{
	uint64_t v = 0;
	size_t i = 0;

	if ((unsigned char)f[0] & 0x80) {
		if (f[0] != (char)0x80)
			return false;   /* negative or over 2^63 */
		for (i = 1; i < len; i++) {
			if (v >> 56)
				return false;
			v = v << 8 | (unsigned char)f[i];
		}
		*out = v;
		return true;
	}
	while (i < len && f[i] == ' ')
		i++;
	if (i == len || f[i] < '0' || f[i] > '7')
		return false;
	for (; i < len && f[i] >= '0' && f[i] <= '7'; i++) {
		if (v >> 60)
			return false;
		v = v << 3 | (uint64_t)(f[i] - '0');
	}
	for (; i < len; i++)
		if (f[i] != ' ' && f[i] != '\0')
			return false;
	*out = v;
	return true;
}

static unsigned chksum(const unsigned char *b)
{
	unsigned s = 0;

	for (int i = 0; i < BLK; i++)
		s += (i >= 148 && i < 156) ? ' ' : b[i];
	return s;
}

static int read_full(int fd, void *buf, size_t len, uint64_t off)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = pread(fd, (char *)buf + done, len - done, (off_t)(off + done));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -ENODATA;
		done += (size_t)n;
	}
	return 0;
}

/* pax extended header records "LEN key=value\n" (POSIX.1-2001): the
 * path and size that replace the next header's; other keys (mtime,
 * uid, ...) mean nothing here.  -EINVAL on a malformed record. */
static int pax_parse(const char *buf, size_t len, char *path, size_t psize, uint64_t *size,
		     bool *have_size)
{
	size_t pos = 0;

	while (pos < len) {
		const char *rec = buf + pos, *key, *eq, *end;
		unsigned long rl = 0;
		size_t i = 0;

		while (pos + i < len && rec[i] >= '0' && rec[i] <= '9' && rl < 1000000)
			rl = rl * 10 + (unsigned long)(rec[i++] - '0');
		if (!i || rl <= i + 1 || rl > len - pos || rec[i] != ' ' || rec[rl - 1] != '\n')
			return -EINVAL;
		key = rec + i + 1;
		end = rec + rl - 1;
		eq = memchr(key, '=', (size_t)(end - key));
		if (!eq)
			return -EINVAL;
		if ((size_t)(eq - key) == 4 && !memcmp(key, "path", 4)) {
			size_t vl = (size_t)(end - eq - 1);

			if (vl >= psize)
				return -EINVAL;
			memcpy(path, eq + 1, vl);
			path[vl] = '\0';
		} else if ((size_t)(eq - key) == 4 && !memcmp(key, "size", 4)) {
			uint64_t v = 0;

			if (eq + 1 == end)
				return -EINVAL;
			for (const char *c = eq + 1; c < end; c++) {
				if (*c < '0' || *c > '9' || v > (UINT64_MAX - 9) / 10)
					return -EINVAL;
				v = v * 10 + (uint64_t)(*c - '0');
			}
			*size = v;
			*have_size = true;
		} else if ((size_t)(eq - key) == 8 && !memcmp(key, "linkpath", 8)) {
			return -EINVAL;   /* only links have one */
		}
		pos += rl;
	}
	return 0;
}

int ova_index(int fd, const char *what, struct ova_member *m, size_t max, size_t *n,
	      struct vm_err *err)
{
	unsigned char b[BLK];
	struct stat st;
	uint64_t off = 0, pax_size = 0;
	char pax_path[256] = "";
	bool pax_have_size = false;
	int rc;

	*n = 0;
	if (fstat(fd, &st) || !S_ISREG(st.st_mode))
		return vm_errf(err, -EINVAL, "%s: not a regular file", what);
	for (;;) {
		const struct ustar *h = (const struct ustar *)b;
		uint64_t size, sum;
		char name[256];
		size_t nl;

		if (off == (uint64_t)st.st_size) {
			if (!*n)
				return vm_errf(err, -EINVAL, "%s: an empty archive", what);
			return 0;   /* no end-of-archive blocks: tolerated (nothing is missing) */
		}
		if (off + BLK > (uint64_t)st.st_size)
			return vm_errf(err, -EINVAL, "%s: truncated archive (a partial header at byte %" PRIu64 ")",
				       what, off);
		if ((rc = read_full(fd, b, BLK, off)))
			return vm_errf(err, rc, "%s: reading at %" PRIu64 ": %s", what, off, strerror(-rc));
		if (zero_block(b)) {
			if (!*n)
				return vm_errf(err, -EINVAL, "%s: an empty archive", what);
			return 0;
		}
		if (!tar_num(h->chksum, sizeof(h->chksum), &sum) || sum != chksum(b))
			return vm_errf(err, -EINVAL, "%s: not a tar archive (bad header checksum at byte %" PRIu64 ")",
				       what, off);
		if (memcmp(h->magic, "ustar", 5))
			return vm_errf(err, -EINVAL, "%s: header at byte %" PRIu64 " is not POSIX ustar", what, off);
		if (!tar_num(h->size, sizeof(h->size), &size))
			return vm_errf(err, -EINVAL, "%s: header at byte %" PRIu64 ": bad size field", what, off);
		snprintf(name, sizeof(name), "%.155s%s%.100s", h->prefix, h->prefix[0] ? "/" : "", h->name);
		for (char *c = name; *c; c++)   /* shown in messages: no terminal controls */
			if ((unsigned char)*c < 0x20 || *c == 0x7f)
				*c = '?';
		if (size > (uint64_t)st.st_size || off + BLK + size > (uint64_t)st.st_size)
			return vm_errf(err, -EINVAL, "%s: truncated archive: member '%.100s' needs %" PRIu64 " bytes past the end",
				       what, name, off + BLK + size - (uint64_t)st.st_size);
		if (h->typeflag == 'x' || h->typeflag == 'g') {
			/* pax extended header: 'x' names and sizes the next
			 * member (long names, 8 GiB and more); a global one
			 * ('g') may not */
			char *pax;
			char gpath[sizeof(pax_path)] = "";
			uint64_t gsize;
			bool gsz = false;

			if (size > 65536)
				return vm_errf(err, -E2BIG, "%s: pax header of %" PRIu64 " bytes", what, size);
			pax = malloc(size + 1);
			if (!pax)
				return vm_errf(err, -ENOMEM, "out of memory");
			rc = read_full(fd, pax, size, off + BLK);
			if (!rc)
				rc = h->typeflag == 'x'
				   ? pax_parse(pax, size, pax_path, sizeof(pax_path), &pax_size, &pax_have_size)
				   : pax_parse(pax, size, gpath, sizeof(gpath), &gsize, &gsz);
			free(pax);
			if (!rc && (gpath[0] || gsz))
				rc = -EINVAL;
			if (rc)
				return vm_errf(err, rc, "%s: pax header at byte %" PRIu64 " is malformed (or a global one names a path or size)",
					       what, off);
			off += BLK + ((size + BLK - 1) / BLK) * BLK;
			continue;
		}
		if (pax_path[0]) {
			snprintf(name, sizeof(name), "%s", pax_path);
			for (char *c = name; *c; c++)
				if ((unsigned char)*c < 0x20 || *c == 0x7f)
					*c = '?';
		}
		if (pax_have_size) {
			size = pax_size;
			if (size > (uint64_t)st.st_size || off + BLK + size > (uint64_t)st.st_size)
				return vm_errf(err, -EINVAL, "%s: truncated archive: member '%.100s' needs %" PRIu64 " bytes past the end",
					       what, name, off + BLK + size - (uint64_t)st.st_size);
		}
		pax_path[0] = '\0';
		pax_have_size = false;
		if (h->typeflag != '0' && h->typeflag != '\0')
			return vm_errf(err, -EPERM, "%s: member '%.100s' is not a regular file (type '%c'): refused",
				       what, name, h->typeflag >= 0x20 && h->typeflag < 0x7f ? h->typeflag : '?');
		nl = strlen(name);
		if (nl > 2 && !strncmp(name, "./", 2))
			memmove(name, name + 2, nl - 1);   /* "./x.ovf" as some tar runs write */
		if (strchr(name, '/') || !strcmp(name, "..") || name[0] == '.' || !name[0])
			return vm_errf(err, -EPERM, "%s: member '%.100s' is not a plain file name (a path would leave the package): refused",
				       what, name);
		if ((rc = vm_name_check(name, "member", 0, what, err)))
			return rc;
		for (size_t i = 0; i < *n; i++)
			if (!strcmp(m[i].name, name))
				return vm_errf(err, -EINVAL, "%s: member '%.100s' appears twice", what, name);
		if (*n == max)
			return vm_errf(err, -E2BIG, "%s: more than %zu members", what, max);
		snprintf(m[*n].name, sizeof(m[0].name), "%s", name);
		m[*n].off = off + BLK;
		m[*n].size = size;
		(*n)++;
		off += BLK + ((size + BLK - 1) / BLK) * BLK;
		if (off > (uint64_t)st.st_size)
			return vm_errf(err, -EINVAL, "%s: truncated archive (member '%.100s' is not padded)",
				       what, name);
	}
}

const struct ova_member *ova_find(const struct ova_member *m, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(m[i].name, name))
			return &m[i];
	return NULL;
}

static int write_all(int fd, const void *buf, size_t len)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = write(fd, (const char *)buf + done, len - done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		done += (size_t)n;
	}
	return 0;
}

int ova_write_header(int fd, const char *name, uint64_t size)
{
	unsigned char b[BLK] = {0};
	struct ustar *h = (struct ustar *)b;

	if (strlen(name) > sizeof(h->name))
		return -ENAMETOOLONG;
	memcpy(h->name, name, strlen(name));
	snprintf(h->mode, sizeof(h->mode), "%07o", 0644);
	snprintf(h->uid, sizeof(h->uid), "%07o", 0);
	snprintf(h->gid, sizeof(h->gid), "%07o", 0);
	if (size < (1ULL << 33)) {
		char tmp[16];

		snprintf(tmp, sizeof(tmp), "%011" PRIo64, size);
		memcpy(h->size, tmp, 12);
	} else {
		/* GNU base-256 for 8 GiB and more (ovftool and GNU tar read it) */
		h->size[0] = (char)0x80;
		for (int i = 11; i >= 4; i--, size >>= 8)
			h->size[i] = (char)(size & 0xff);
	}
	snprintf(h->mtime, sizeof(h->mtime), "%011llo", (unsigned long long)time(NULL));
	h->typeflag = '0';
	memcpy(h->magic, "ustar", 6);
	memcpy(h->version, "00", 2);
	strcpy(h->uname, "root");
	strcpy(h->gname, "root");
	snprintf(h->chksum, sizeof(h->chksum), "%06o", chksum(b));
	h->chksum[7] = ' ';
	return write_all(fd, b, BLK);
}

int ova_write_member(int fd, const char *name, const void *buf, size_t len)
{
	int rc = ova_write_header(fd, name, len);

	if (!rc)
		rc = write_all(fd, buf, len);
	return rc ? rc : ova_pad(fd, len);
}

int ova_pad(int fd, uint64_t size)
{
	static const unsigned char z[BLK];

	return size % BLK ? write_all(fd, z, BLK - size % BLK) : 0;
}

int ova_finish(int fd)
{
	static const unsigned char z[2 * BLK];

	return write_all(fd, z, sizeof(z));
}
