// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * ATS: compare-and-write of one 512-byte sector, the primitive every
 * heartbeat claim and lock change is made of (docs/cluster.md §1).  Two
 * implementations sit behind struct bdev_ats_ops: the OFD-lock emulation for
 * hosts that are processes of one kernel (image files, loop devices, local
 * disks), and SCSI COMPARE AND WRITE for LUNs shared by several machines:
 * through libiscsi for iscsi:// LUNs (bdev/iscsi.c), while the SG_IO seam
 * for kernel SCSI block devices still refuses with -EOPNOTSUPP.  The OFD
 * emulation goes through bdev_pread/bdev_pwrite and the iSCSI one through
 * bdev's write gate, so fault injection sees ATS like any other write.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <scsi/sg.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bdev.h"
#include "iscsi.h"

/* ---------------- OFD-lock emulation ---------------- */

/* OFD locks belong to an open file description: two threads of one process
 * sharing the bdev's descriptor would both be granted the same lock.  A
 * striped process-wide mutex serialises them first.  Order is always stripe
 * mutex, then OFD lock, and the OFD lock is only held under the mutex, so
 * the two cannot deadlock (a thread waiting for an OFD lock held by another
 * process waits for a thread that needs nothing of ours). */
#define ATS_STRIPES 64u
static pthread_mutex_t ats_stripe[ATS_STRIPES] = {
	[0 ... ATS_STRIPES - 1] = PTHREAD_MUTEX_INITIALIZER
};

static pthread_mutex_t *stripe_of(uint64_t off)
{
	uint64_t h = (off / BDEV_ATS_SECTOR) * 0x9e3779b97f4a7c15ull;

	return &ats_stripe[h >> 58];    /* top 6 bits: 64 stripes */
}

static int ofd_sector_lock(int fd, uint64_t off, short type)
{
	struct flock fl = {
		.l_type = type,
		.l_whence = SEEK_SET,
		.l_start = (off_t)off,
		.l_len = BDEV_ATS_SECTOR,
	};

	/* F_OFD_SETLKW waits; a signal interrupts the wait, not the protocol. */
	while (fcntl(fd, type == F_UNLCK ? F_OFD_SETLK : F_OFD_SETLKW, &fl) < 0)
		if (errno != EINTR)
			return -errno;
	return 0;
}

/* Up to ATS_BATCH compare-and-writes of distinct sectors at once (one ATS
 * is a batch of one): every sector's stripe mutex and OFD lock taken in
 * ascending order (another batch takes them in the same order, and the
 * OFD lock is only held under the mutex: no deadlock), all sectors read
 * in one round trip, the matching ones written in one more, then
 * everything unlocked.  Returns an error when nothing was written; else
 * 0 with each sector's result in RES. */
#define ATS_BATCH 64u

static int ofd_cmp_write_batch(struct bdev *bd, unsigned n, const uint64_t *off,
			       const uint8_t *expect, const uint8_t *newval, uint8_t *actual,
			       int *res, bool whole)
{
	/* WHOLE (bdev_ats_many_block): each sector's 4 KiB block is read,
	 * and written back with the new sector in front */
	const size_t len = whole ? BDEV_ALIGN : BDEV_ATS_SECTOR;
	struct bdev_vec v[ATS_BATCH];
	unsigned ord[ATS_BATCH], i, k, nlk = 0, nw = 0, miss = 0;
	uint64_t stripes = 0;
	uint8_t *buf;
	int r = 0, fd = bdev_fd(bd);

	/* ascending offsets (insertion sort: at most 64) */
	for (i = 0; i < n; i++) {
		for (k = i; k > 0 && off[ord[k - 1]] > off[i]; k--)
			ord[k] = ord[k - 1];
		ord[k] = i;
	}
	for (i = 1; i < n; i++)
		if (off[ord[i]] == off[ord[i - 1]])
			return -EINVAL;
	buf = bdev_alloc((size_t)n * BDEV_ALIGN);
	if (!buf)
		return -ENOMEM;
	for (i = 0; i < n; i++)
		stripes |= 1ull << (stripe_of(off[i]) - ats_stripe);
	for (i = 0; i < ATS_STRIPES; i++)
		if (stripes & (1ull << i))
			pthread_mutex_lock(&ats_stripe[i]);
	for (nlk = 0; nlk < n && !r; nlk++)
		r = ofd_sector_lock(fd, off[ord[nlk]], F_WRLCK);
	if (r) {
		nlk--;          /* that one was not taken */
		goto unlock;
	}
	for (i = 0; i < n; i++)
		v[i] = (struct bdev_vec){ buf + (size_t)i * BDEV_ALIGN, len, off[i] };
	r = bdev_rw_many(bd, 0, v, n);
	if (r)
		goto unlock;
	for (i = 0; i < n; i++) {
		const size_t at = (size_t)i * BDEV_ATS_SECTOR;

		if (memcmp(v[i].buf, expect + at, BDEV_ATS_SECTOR)) {
			memcpy(actual + at, v[i].buf, BDEV_ATS_SECTOR);
			res[i] = -ECANCELED;
			miss++;
			continue;
		}
		res[i] = 0;
		memcpy(buf + (size_t)i * BDEV_ALIGN, newval + at, BDEV_ATS_SECTOR);
		v[nw++] = (struct bdev_vec){ buf + (size_t)i * BDEV_ALIGN, len, off[i] };
	}
	/* A miscompare writes nothing, but ATS is a write command: a device
	 * whose writes fail (fault injection, power cut) must fail it with
	 * -EIO like a real COMPARE AND WRITE would.  A zero-length bdev_pwrite
	 * passes every such check and transfers nothing. */
	if (miss && bdev_pwrite(bd, buf, 0, off[0]))
		for (i = 0; i < n; i++)
			if (res[i] == -ECANCELED)
				res[i] = -EIO;
	if (nw) {
		int w = bdev_rw_many(bd, 1, v, nw);

		/* which one failed is not known: none counts as written */
		for (i = 0; w && i < n; i++)
			if (!res[i])
				res[i] = w;
	}
unlock:
	while (nlk-- > 0) {
		int u = ofd_sector_lock(fd, off[ord[nlk]], F_UNLCK);

		for (i = 0; u && !r && i < n; i++)      /* written, but reported */
			if (!res[i])
				res[i] = u;
	}
	for (i = 0; i < ATS_STRIPES; i++)
		if (stripes & (1ull << i))
			pthread_mutex_unlock(&ats_stripe[i]);
	bdev_free(buf);
	return r;
}

static int ofd_cmp_write(struct bdev *bd, uint64_t off, const void *expect, const void *newval,
			 void *actual)
{
	uint8_t act[BDEV_ATS_SECTOR];
	int res, r = ofd_cmp_write_batch(bd, 1, &off, expect, newval, actual ? actual : act,
					 &res, false);

	return r ? r : res;
}

static int ofd_cmp_write_many_as(struct bdev *bd, unsigned n, const uint64_t *off,
				 const uint8_t *expect, const uint8_t *newval, uint8_t *actual,
				 int *res, bool whole)
{
	unsigned i, k;
	int r;

	for (i = 0; i < n; i += k) {
		const size_t at = (size_t)i * BDEV_ATS_SECTOR;

		k = n - i < ATS_BATCH ? n - i : ATS_BATCH;
		r = ofd_cmp_write_batch(bd, k, off + i, expect + at, newval + at, actual + at,
					res + i, whole);
		for (unsigned j = i; r && j < i + k; j++)
			res[j] = r;     /* that batch wrote nothing */
	}
	return 0;
}

static int ofd_cmp_write_many(struct bdev *bd, unsigned n, const uint64_t *off,
			      const uint8_t *expect, const uint8_t *newval, uint8_t *actual,
			      int *res)
{
	return ofd_cmp_write_many_as(bd, n, off, expect, newval, actual, res, false);
}

const struct bdev_ats_ops bdev_ats_ofd_ops = {
	.name = "ofd",
	.cmp_write = ofd_cmp_write,
	.cmp_write_many = ofd_cmp_write_many,
};

/* ---------------- SCSI COMPARE AND WRITE (seam) ---------------- */

/* What an implementation has to do (SBC-3 5.3): a 16-byte CDB with opcode
 * 0x89, the LBA big-endian in bytes 2..9, NUMBER OF LOGICAL BLOCKS = 1 in
 * byte 13, and a data-out buffer of two logical blocks (the verify data
 * EXPECT, then the write data NEWVAL), sent with SG_IO.  A miscompare comes
 * back as CHECK CONDITION, sense key MISCOMPARE (0x0e), ASC 0x1d: then read
 * the sector for ACTUAL and return -ECANCELED.  Logical blocks larger than
 * 512 bytes (4Kn LUNs) need the whole block compared.  Until that is written
 * and tested against a real target (LIO/tcmu), refuse. */
static int scsi_cmp_write(struct bdev *bd, uint64_t off, const void *expect, const void *newval,
			  void *actual)
{
	(void)bd;
	(void)off;
	(void)expect;
	(void)newval;
	(void)actual;
	return -EOPNOTSUPP;
}

const struct bdev_ats_ops bdev_ats_scsi_ops = {
	.name = "scsi",
	.cmp_write = scsi_cmp_write,
};

/* INQUIRY, EVPD page 0xb0 (Block Limits): byte 5 is MAXIMUM COMPARE AND
 * WRITE LENGTH, non-zero when the LUN implements COMPARE AND WRITE.
 * Returns 1 if it does, 0 if not or if the device speaks no SG_IO. */
static int scsi_reports_caw(int fd)
{
	uint8_t cdb[6] = { 0x12, 0x01, 0xb0, 0, 64, 0 };
	uint8_t page[64], sense[32];
	struct sg_io_hdr io;
	int ver;

	if (ioctl(fd, SG_GET_VERSION_NUM, &ver) < 0 || ver < 30000)
		return 0;
	memset(&io, 0, sizeof(io));
	memset(page, 0, sizeof(page));
	io.interface_id = 'S';
	io.dxfer_direction = SG_DXFER_FROM_DEV;
	io.cmd_len = sizeof(cdb);
	io.cmdp = cdb;
	io.dxfer_len = sizeof(page);
	io.dxferp = page;
	io.mx_sb_len = sizeof(sense);
	io.sbp = sense;
	io.timeout = 5000;      /* ms; a probe at open time, not on any clock */
	if (ioctl(fd, SG_IO, &io) < 0 || io.status || io.host_status || io.driver_status)
		return 0;
	return page[1] == 0xb0 && page[5] != 0;
}

/* The answer depends on the device only, so it is cached by device number
 * (a few entries; a process serves one or two volumes). */
#define ATS_CACHE 8u
static struct {
	dev_t rdev;
	const struct bdev_ats_ops *ops;
} ats_cache[ATS_CACHE];
static unsigned ats_cache_n;
static pthread_mutex_t ats_cache_lock = PTHREAD_MUTEX_INITIALIZER;

/* ---------------- iSCSI COMPARE AND WRITE ---------------- */

/* The command itself, its timeout and the reconnect hazard are in
 * bdev/iscsi.c; bdev_open already proved with a trial command that the
 * target does it (docs/cluster.md §8). */
const struct bdev_ats_ops bdev_ats_iscsi_ops = {
	.name = "iscsi",
	.cmp_write = bdev_scsi_caw,
};

const struct bdev_ats_ops *bdev_ats_ops_get(struct bdev *bd)
{
	const struct bdev_ats_ops *ops = &bdev_ats_ofd_ops;
	struct stat st;
	unsigned i;

	if (bdev_is_iscsi(bd))
		return &bdev_ats_iscsi_ops;

	if (!bdev_is_blockdev(bd) || fstat(bdev_fd(bd), &st) < 0)
		return ops;
	pthread_mutex_lock(&ats_cache_lock);
	for (i = 0; i < ats_cache_n; i++)
		if (ats_cache[i].rdev == st.st_rdev) {
			ops = ats_cache[i].ops;
			goto out;
		}
	if (scsi_reports_caw(bdev_fd(bd)))
		ops = &bdev_ats_scsi_ops;
	ats_cache[ats_cache_n % ATS_CACHE].rdev = st.st_rdev;
	ats_cache[ats_cache_n % ATS_CACHE].ops = ops;
	if (ats_cache_n < ATS_CACHE)
		ats_cache_n++;
out:
	pthread_mutex_unlock(&ats_cache_lock);
	return ops;
}

/* Every OFF[i] aligned to UNIT (-EINVAL) and UNIT bytes inside the device
 * (-ERANGE): checked before anything is done. */
static int check_offs(struct bdev *bd, unsigned n, const uint64_t *off, uint64_t unit)
{
	unsigned i;

	for (i = 0; i < n; i++) {
		if (off[i] % unit)
			return -EINVAL;
		if (off[i] >= bdev_size(bd) || bdev_size(bd) - off[i] < unit)
			return -ERANGE;
	}
	return 0;
}

int bdev_ats_many(struct bdev *bd, unsigned n, const uint64_t *off, const uint8_t *expect,
		  const uint8_t *newval, uint8_t *actual, int *res)
{
	const struct bdev_ats_ops *ops = bdev_ats_ops_get(bd);
	unsigned i;
	int r = check_offs(bd, n, off, BDEV_ATS_SECTOR);

	if (r)
		return r;
	if (ops->cmp_write_many)
		return ops->cmp_write_many(bd, n, off, expect, newval, actual, res);
	for (i = 0; i < n; i++) {
		const size_t at = (size_t)i * BDEV_ATS_SECTOR;

		res[i] = ops->cmp_write(bd, off[i], expect + at, newval + at, actual + at);
	}
	return 0;
}

/* Why whole blocks: on an image file in a filesystem of 4 KiB blocks
 * (ext4 here), a direct write smaller than a block is "unaligned": ext4
 * runs each one alone, waiting for every other direct I/O to the file
 * (ext4_dio_write_iter), so a batch of 64 sector writes took 64 device
 * round trips one after the other (~250 us a record measured in a commit
 * publishing 1000 new inodes' locks, issue 17); block-sized ones go
 * together.  The read is whole too: the write puts back what it found. */
int bdev_ats_many_block(struct bdev *bd, unsigned n, const uint64_t *off, const uint8_t *expect,
			const uint8_t *newval, uint8_t *actual, int *res)
{
	int r;

	if (bdev_ats_ops_get(bd) != &bdev_ats_ofd_ops)
		return bdev_ats_many(bd, n, off, expect, newval, actual, res);
	r = check_offs(bd, n, off, BDEV_ALIGN);
	return r ? r : ofd_cmp_write_many_as(bd, n, off, expect, newval, actual, res, true);
}

int bdev_ats(struct bdev *bd, uint64_t off, const void *expect, const void *newval,
	     void *actual)
{
	if (off % BDEV_ATS_SECTOR || !expect || !newval)
		return -EINVAL;
	if (off >= bdev_size(bd) || bdev_size(bd) - off < BDEV_ATS_SECTOR)
		return -ERANGE;
	return bdev_ats_ops_get(bd)->cmp_write(bd, off, expect, newval, actual);
}
