// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * The certificate of vmfs-webd.  At first start, when neither the
 * certificate nor the key file exists, a self-signed certificate is made
 * with GnuTLS (ECDSA P-256; subject CN = the machine's host name; subject
 * alternative names: the host name, localhost, 127.0.0.1, ::1 and the
 * listen address) and written with mode 0600 (key) and 0644 (certificate).
 * Replacing it: put your own PEM files there (or name them with --cert and
 * --key) and restart.  One file present without the other is an error,
 * never overwritten.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <gnutls/gnutls.h>
#include <gnutls/crypto.h>
#include <gnutls/x509.h>

#include "webd/webd.h"

/* 825 days: the longest validity browsers accept for a TLS server
 * certificate (CA/Browser Forum baseline, since 2018) */
#define CERT_DAYS 825

static int write_file(const char *path, const gnutls_datum_t *d, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
	int rc = 0;

	if (fd < 0)
		return -errno;
	if (write(fd, d->data, d->size) != (ssize_t)d->size || fsync(fd))
		rc = errno ? -errno : -EIO;
	close(fd);
	if (rc)
		unlink(path);
	return rc;
}

static void add_ip(gnutls_x509_crt_t crt, const char *text)
{
	unsigned char ip[16];

	if (inet_pton(AF_INET, text, ip) == 1)
		gnutls_x509_crt_set_subject_alt_name(crt, GNUTLS_SAN_IPADDRESS, ip, 4,
						     GNUTLS_FSAN_APPEND);
	else if (inet_pton(AF_INET6, text, ip) == 1)
		gnutls_x509_crt_set_subject_alt_name(crt, GNUTLS_SAN_IPADDRESS, ip, 16,
						     GNUTLS_FSAN_APPEND);
}

int tls_ensure(const char *cert, const char *key, const char *listen, bool *created, char *msg,
	       size_t msize)
{
	bool have_cert = !access(cert, F_OK), have_key = !access(key, F_OK);
	gnutls_x509_privkey_t pk = NULL;
	gnutls_x509_crt_t crt = NULL;
	gnutls_datum_t kd = {0}, cd = {0};
	unsigned char serial[16];
	char host[256] = "localhost";
	time_t now = time(NULL);
	int rc;

	*created = false;
	if (have_cert && have_key)
		return 0;
	if (have_cert != have_key) {
		snprintf(msg, msize, "%s exists but %s does not: give both or neither", have_cert ? cert : key,
			 have_cert ? key : cert);
		return -ENOENT;
	}
	gethostname(host, sizeof(host));
	host[sizeof(host) - 1] = '\0';
	if (gnutls_x509_privkey_init(&pk) || gnutls_x509_crt_init(&crt)) {
		rc = -ENOMEM;
		goto fail;
	}
	rc = gnutls_x509_privkey_generate(pk, GNUTLS_PK_ECDSA,
					  GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP256R1), 0);
	if (!rc)
		rc = gnutls_rnd(GNUTLS_RND_NONCE, serial, sizeof(serial));
	serial[0] &= 0x7f;            /* a positive serial number */
	if (!rc)
		rc = gnutls_x509_crt_set_key(crt, pk);
	if (!rc)
		rc = gnutls_x509_crt_set_version(crt, 3);
	if (!rc)
		rc = gnutls_x509_crt_set_serial(crt, serial, sizeof(serial));
	if (!rc)
		rc = gnutls_x509_crt_set_activation_time(crt, now - 3600);
	if (!rc)
		rc = gnutls_x509_crt_set_expiration_time(crt, now + (time_t)CERT_DAYS * 86400);
	if (!rc)
		rc = gnutls_x509_crt_set_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, host, strlen(host));
	if (!rc)
		rc = gnutls_x509_crt_set_dn_by_oid(crt, GNUTLS_OID_X520_ORGANIZATION_NAME, 0,
						   "vmfs-webd self-signed", 21);
	if (!rc)
		rc = gnutls_x509_crt_set_subject_alt_name(crt, GNUTLS_SAN_DNSNAME, host, strlen(host),
							  GNUTLS_FSAN_SET);
	if (!rc)
		rc = gnutls_x509_crt_set_subject_alt_name(crt, GNUTLS_SAN_DNSNAME, "localhost", 9,
							  GNUTLS_FSAN_APPEND);
	if (rc)
		goto fail;
	add_ip(crt, "127.0.0.1");
	add_ip(crt, "::1");
	if (listen && *listen)
		add_ip(crt, listen);
	/* a self-signed leaf that is its own CA, so a client can pin it as
	 * its trust anchor (curl --cacert, Python's ssl) */
	rc = gnutls_x509_crt_set_basic_constraints(crt, 1, 0);
	if (!rc)
		rc = gnutls_x509_crt_set_key_usage(crt, GNUTLS_KEY_DIGITAL_SIGNATURE |
						   GNUTLS_KEY_KEY_CERT_SIGN);
	if (!rc)
		rc = gnutls_x509_crt_set_key_purpose_oid(crt, GNUTLS_KP_TLS_WWW_SERVER, 0);
	if (!rc)
		rc = gnutls_x509_crt_sign2(crt, crt, pk, GNUTLS_DIG_SHA256, 0);
	if (!rc)
		rc = gnutls_x509_privkey_export2(pk, GNUTLS_X509_FMT_PEM, &kd);
	if (!rc)
		rc = gnutls_x509_crt_export2(crt, GNUTLS_X509_FMT_PEM, &cd);
	if (rc)
		goto fail;
	rc = write_file(key, &kd, 0600);
	if (rc) {
		snprintf(msg, msize, "writing %s: %s", key, strerror(-rc));
		goto out;
	}
	rc = write_file(cert, &cd, 0644);
	if (rc) {
		unlink(key);
		snprintf(msg, msize, "writing %s: %s", cert, strerror(-rc));
		goto out;
	}
	*created = true;
	goto out;
fail:
	snprintf(msg, msize, "making a certificate: %s", gnutls_strerror(rc));
	rc = -EINVAL;
out:
	gnutls_free(kd.data);
	gnutls_free(cd.data);
	if (crt)
		gnutls_x509_crt_deinit(crt);
	if (pk)
		gnutls_x509_privkey_deinit(pk);
	return rc;
}
