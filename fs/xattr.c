// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * user.* extended attributes, stored packed in the inode's 512-byte xattr
 * area (entry: u8 name length, le16 value length, name, value).  That is
 * enough for tags and the lock-mode switch a VM platform needs; larger sets
 * get -ENOSPC rather than silently spilling.  Other namespaces are not
 * supported: get answers -ENODATA (cheap for the kernel's per-write
 * security.capability probe), set answers -EOPNOTSUPP.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/xattr.h>

#include "fs_internal.h"

#define XHDR 3u

/* Virtual attributes of the cluster layer (not stored, not listed):
 *   user.vmfsd.lock         read: who holds the file's on-disk lock
 *   user.vmfsd.multiwriter  "1": opens take the multi-writer lock, so
 *                           several hosts may write (clustered guests) */
#define XATTR_LOCK "user.vmfsd.lock"
#define XATTR_MW "user.vmfsd.multiwriter"
/*   user.vmfsd.hosts        read, on the mount root: the cluster as this
 *                           host sees it, JSON (fs/hosts.c, docs/ha.md) */
#define XATTR_HOSTS "user.vmfsd.hosts"
/*   user.vmfsd.handover     read: this mount's "<slot> <generation> <host>";
 *                           write "accept", "cancel", "give SLOT GEN": a
 *                           lock handover (fs/handover.c) */
#define XATTR_HANDOVER FS_XATTR_HANDOVER

static bool user_ns(const char *name)
{
	return !strncmp(name, "user.", 5) && name[5];
}

/* Offset of NAME's entry in the area, or -1. */
static int xfind(const struct vmfsd_inode *d, const char *name, size_t nl)
{
	unsigned off = 0;

	while (off + XHDR <= d->xattr_len) {
		unsigned l = d->xattr[off], vl = d->xattr[off + 1] | d->xattr[off + 2] << 8;

		if (off + XHDR + l + vl > d->xattr_len)
			break;  /* damaged area: never read past it */
		if (l == nl && !memcmp(d->xattr + off + XHDR, name, nl))
			return (int)off;
		off += XHDR + l + vl;
	}
	return -1;
}

static unsigned xsize(const struct vmfsd_inode *d, unsigned off)
{
	return XHDR + d->xattr[off] + (d->xattr[off + 1] | d->xattr[off + 2] << 8);
}

static int set_multiwriter(struct fs *fs, uint64_t ino, const void *value, size_t size)
{
	struct fs_inode *ip;
	bool on;
	int r;

	if (size != 1 || (((const char *)value)[0] != '0' && ((const char *)value)[0] != '1'))
		return -EINVAL;
	on = ((const char *)value)[0] == '1';
	r = inode_get(fs, ino, &ip);
	if (r)
		return r;
	if (!S_ISREG(ip->d.mode)) {
		inode_put(fs, ip);
		return -EINVAL;
	}
	/* Changing the mode of a file someone else has open is refused. */
	r = cluster_lock_inode(fs, ip, VMFSD_LOCK_EXCL, true);
	if (!r) {
		pthread_mutex_lock(&fs->meta_lock);
		r = cluster_refresh_inode(fs, ip);
		if (!r) {
			ip->d.iflags = on ? ip->d.iflags | VMFSD_IFLAG_MW
					  : ip->d.iflags & ~VMFSD_IFLAG_MW;
			inode_touch(fs, ip, false, true);
			r = inode_commit(fs, ip);
		}
		pthread_mutex_unlock(&fs->meta_lock);
	}
	inode_put(fs, ip);
	return r;
}

int fs_setxattr(struct fs *fs, uint64_t ino, const char *name, const void *value,
		size_t size, int flags)
{
	struct fs_inode *ip;
	size_t nl = strlen(name);
	int r, off;

	if (fs->readonly)
		return -EROFS;
	if (!user_ns(name))
		return -EOPNOTSUPP;
	if (!strcmp(name, XATTR_LOCK) || !strcmp(name, XATTR_HOSTS))
		return -EPERM;
	if (!strcmp(name, XATTR_MW))
		return set_multiwriter(fs, ino, value, size);
	if (!strcmp(name, XATTR_HANDOVER))
		return handover_xattr_set(fs, ino, value, size);
	if (nl > 255)
		return -ERANGE;
	if (size > VMFSD_XATTR_AREA)
		return -E2BIG;
	/* The inode's lock and its current image, as for any change of it:
	 * our cached copy may be older than another host's writes. */
	r = ns_enter_ino(fs, ino, &ip, false);
	if (r)
		return r;
	off = xfind(&ip->d, name, nl);
	if (off >= 0 && (flags & XATTR_CREATE))
		r = -EEXIST;
	else if (off < 0 && (flags & XATTR_REPLACE))
		r = -ENODATA;
	else {
		unsigned used = ip->d.xattr_len, old = off >= 0 ? xsize(&ip->d, (unsigned)off) : 0;

		if (used - old + XHDR + nl + size > VMFSD_XATTR_AREA) {
			r = -ENOSPC;
		} else {
			uint8_t *p;

			if (off >= 0) {
				memmove(ip->d.xattr + off, ip->d.xattr + off + old, used - off - old);
				used -= old;
			}
			p = ip->d.xattr + used;
			p[0] = (uint8_t)nl;
			p[1] = (uint8_t)(size & 0xff);
			p[2] = (uint8_t)(size >> 8);
			memcpy(p + XHDR, name, nl);
			memcpy(p + XHDR + nl, value, size);
			used += XHDR + (unsigned)nl + (unsigned)size;
			memset(ip->d.xattr + used, 0, VMFSD_XATTR_AREA - used);
			ip->d.xattr_len = (uint16_t)used;
			inode_touch(fs, ip, false, true);
			r = inode_commit(fs, ip);
		}
	}
	ns_exit(fs, &ip, 1);
	inode_put(fs, ip);
	return r;
}

int fs_getxattr(struct fs *fs, uint64_t ino, const char *name, void *value, size_t size)
{
	struct fs_inode *ip;
	size_t nl = strlen(name);
	int r, off;

	if (!user_ns(name))
		return -ENODATA;
	if (!strcmp(name, XATTR_HOSTS) && ino == VMFSD_ROOT_INO) {
		char *doc;
		size_t dl;

		r = hosts_describe(fs, &doc, &dl);
		if (r)
			return r;
		if (size && size < dl)
			r = -ERANGE;
		else if (dl > 65536)
			r = -E2BIG;     /* XATTR_SIZE_MAX */
		else
			r = (int)dl;
		if (r > 0 && size)
			memcpy(value, doc, dl);
		free(doc);
		return r;
	}
	r = inode_get(fs, ino, &ip);
	if (r)
		return r;
	if (!strcmp(name, XATTR_LOCK) || !strcmp(name, XATTR_MW) || !strcmp(name, XATTR_HANDOVER)) {
		char txt[512];

		if (!strcmp(name, XATTR_HANDOVER)) {
			r = handover_xattr_get(fs, txt, sizeof(txt));
		} else if (!strcmp(name, XATTR_MW)) {
			r = ns_read(fs, ip);
			if (!r) {
				snprintf(txt, sizeof(txt), "%d", !!(ip->d.iflags & VMFSD_IFLAG_MW));
				pthread_mutex_unlock(&fs->meta_lock);
			}
		} else {
			r = cluster_describe_lock(fs, ip, txt, sizeof(txt));
		}
		inode_put(fs, ip);
		if (r)
			return r;
		if (size && size < strlen(txt))
			return -ERANGE;
		if (size)
			memcpy(value, txt, strlen(txt));
		return (int)strlen(txt);
	}
	/* Another host may have changed them since we read the inode. */
	r = ns_read(fs, ip);
	if (r) {
		inode_put(fs, ip);
		return r;
	}
	off = xfind(&ip->d, name, nl);
	if (off < 0) {
		r = -ENODATA;
	} else {
		unsigned vl = ip->d.xattr[off + 1] | ip->d.xattr[off + 2] << 8;

		r = (int)vl;
		if (size && size < vl)
			r = -ERANGE;
		else if (size)
			memcpy(value, ip->d.xattr + off + XHDR + nl, vl);
	}
	pthread_mutex_unlock(&fs->meta_lock);
	inode_put(fs, ip);
	return r;
}

int fs_listxattr(struct fs *fs, uint64_t ino, char *list, size_t size)
{
	struct fs_inode *ip;
	unsigned off = 0;
	size_t need = 0;
	int r;

	r = inode_get(fs, ino, &ip);
	if (r)
		return r;
	r = ns_read(fs, ip);
	if (r) {
		inode_put(fs, ip);
		return r;
	}
	while (off + XHDR <= ip->d.xattr_len) {
		unsigned l = ip->d.xattr[off];

		if (off + xsize(&ip->d, off) > ip->d.xattr_len)
			break;

		if (size) {
			if (need + l + 1 > size) {
				need = 0;
				r = -ERANGE;
				break;
			}
			memcpy(list + need, ip->d.xattr + off + XHDR, l);
			list[need + l] = 0;
		}
		need += l + 1;
		off += xsize(&ip->d, off);
	}
	pthread_mutex_unlock(&fs->meta_lock);
	inode_put(fs, ip);
	return r ? r : (int)need;
}

int fs_removexattr(struct fs *fs, uint64_t ino, const char *name)
{
	struct fs_inode *ip;
	int r, off;

	if (fs->readonly)
		return -EROFS;
	if (!user_ns(name))
		return -ENODATA;
	r = ns_enter_ino(fs, ino, &ip, false);
	if (r)
		return r;
	off = xfind(&ip->d, name, strlen(name));
	if (off < 0) {
		r = -ENODATA;
	} else {
		unsigned sz = xsize(&ip->d, (unsigned)off), used = ip->d.xattr_len;

		memmove(ip->d.xattr + off, ip->d.xattr + off + sz, used - off - sz);
		memset(ip->d.xattr + used - sz, 0, sz);
		ip->d.xattr_len = (uint16_t)(used - sz);
		inode_touch(fs, ip, false, true);
		r = inode_commit(fs, ip);
	}
	ns_exit(fs, &ip, 1);
	inode_put(fs, ip);
	return r;
}
