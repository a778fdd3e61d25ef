// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * The .vmx parser and the VM model built from it.  Syntax (VMware's): one
 * `key = "value"` per line, '#' comments, blank lines; values are double
 * quoted and may carry |XX hex escapes (VMware writes a quote as |22).  The
 * input comes from a shared disk, so it is hostile until proven otherwise:
 * every size is bounded, control characters are refused, duplicate keys
 * are refused (which one would win is a trap), keys outside the documented
 * subset are refused unless they are VMware bookkeeping keys we knowingly
 * ignore, and every file name must be one component of the VM folder.
 * Nothing from the .vmx ever becomes a free-form QEMU argument: the model
 * holds only numbers, names from fixed tables, and checked file names.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <dirent.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vm.h"

int vm_errf(struct vm_err *err, int rc, const char *fmt, ...)
{
	va_list ap;

	if (err) {
		va_start(ap, fmt);
		vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
		va_end(ap);
	}
	return rc;
}

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = tolower(c);
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

static bool key_char_ok(int c)
{
	return isalnum(c) || c == '.' || c == ':' || c == '_' || c == '-';
}

const struct vmx_kv *vmx_find(const struct vmx_file *f, const char *key)
{
	for (size_t i = 0; i < f->n; i++)
		if (!strcasecmp(f->kv[i].key, key))
			return &f->kv[i];
	return NULL;
}

static int vmx_append(struct vmx_file *f, const char *key, const char *value, int line)
{
	if (f->n == f->cap) {
		size_t cap = f->cap ? f->cap * 2 : 32;
		struct vmx_kv *kv = realloc(f->kv, cap * sizeof(*kv));

		if (!kv)
			return -ENOMEM;
		f->kv = kv;
		f->cap = cap;
	}
	f->kv[f->n].key = strdup(key);
	f->kv[f->n].value = strdup(value);
	f->kv[f->n].line = line;
	if (!f->kv[f->n].key || !f->kv[f->n].value) {
		free(f->kv[f->n].key);
		free(f->kv[f->n].value);
		return -ENOMEM;
	}
	f->n++;
	return 0;
}

int vmx_set(struct vmx_file *f, const char *key, const char *value)
{
	for (size_t i = 0; i < f->n; i++) {
		if (!strcasecmp(f->kv[i].key, key)) {
			char *v = strdup(value);

			if (!v)
				return -ENOMEM;
			free(f->kv[i].value);
			f->kv[i].value = v;
			return 0;
		}
	}
	return vmx_append(f, key, value, 0);
}

void vmx_free(struct vmx_file *f)
{
	for (size_t i = 0; i < f->n; i++) {
		free(f->kv[i].key);
		free(f->kv[i].value);
	}
	free(f->kv);
	f->kv = NULL;
	f->n = f->cap = 0;
}

/* One line, already split from the text and NUL-terminated. */
static int parse_line(char *s, int lineno, const char *what, struct vmx_file *out,
		      struct vm_err *err)
{
	char key[VMX_MAX_KEY + 1], value[VMX_MAX_VALUE + 1];
	size_t kl = 0, vl = 0;

	while (*s == ' ' || *s == '\t')
		s++;
	if (*s == '\0' || *s == '#')
		return 0;
	while (key_char_ok((unsigned char)*s)) {
		if (kl == VMX_MAX_KEY)
			return vm_errf(err, -EINVAL, "%s:%d: key longer than %d characters", what,
				       lineno, VMX_MAX_KEY);
		key[kl++] = *s++;
	}
	key[kl] = '\0';
	if (kl == 0)
		return vm_errf(err, -EINVAL, "%s:%d: expected a key (letters, digits, '.', ':', '_', '-')",
			       what, lineno);
	while (*s == ' ' || *s == '\t')
		s++;
	if (*s != '=')
		return vm_errf(err, -EINVAL, "%s:%d: key '%s': expected '=' after the key", what,
			       lineno, key);
	s++;
	while (*s == ' ' || *s == '\t')
		s++;
	if (*s != '"')
		return vm_errf(err, -EINVAL, "%s:%d: key '%s': the value must be in double quotes",
			       what, lineno, key);
	s++;
	for (;;) {
		int c = (unsigned char)*s;

		if (c == '\0')
			return vm_errf(err, -EINVAL, "%s:%d: key '%s': missing closing quote", what,
				       lineno, key);
		if (c == '"')
			break;
		if (c == '|') {
			int h = hexval((unsigned char)s[1]), l = h >= 0 ? hexval((unsigned char)s[2]) : -1;

			if (h < 0 || l < 0)
				return vm_errf(err, -EINVAL,
					       "%s:%d: key '%s': '|' must start a |XX hex escape",
					       what, lineno, key);
			c = h * 16 + l;
			s += 2;
		}
		if (c < 0x20 || c == 0x7f)
			return vm_errf(err, -EINVAL, "%s:%d: key '%s': control character 0x%02x in the value",
				       what, lineno, key, c);
		if (vl == VMX_MAX_VALUE)
			return vm_errf(err, -E2BIG, "%s:%d: key '%s': value longer than %d bytes", what,
				       lineno, key, VMX_MAX_VALUE);
		value[vl++] = (char)c;
		s++;
	}
	value[vl] = '\0';
	s++;
	while (*s == ' ' || *s == '\t' || *s == '\r')
		s++;
	if (*s != '\0' && *s != '#')
		return vm_errf(err, -EINVAL, "%s:%d: key '%s': unexpected text after the value", what,
			       lineno, key);
	const struct vmx_kv *dup = vmx_find(out, key);

	if (dup)
		return vm_errf(err, -EINVAL, "%s:%d: key '%s' is set twice (first on line %d)", what,
			       lineno, key, dup->line);
	if (vmx_append(out, key, value, lineno))
		return vm_errf(err, -ENOMEM, "%s: out of memory", what);
	return 0;
}

int vmx_parse(const char *text, size_t len, const char *what, struct vmx_file *out,
	      struct vm_err *err)
{
	char *line = malloc(VMX_MAX_LINE + 1);
	size_t pos = 0;
	int lineno = 0, rc = 0;

	memset(out, 0, sizeof(*out));
	if (!line)
		return vm_errf(err, -ENOMEM, "%s: out of memory", what);
	if (len > VMX_MAX_FILE) {
		rc = vm_errf(err, -EFBIG, "%s: larger than %d bytes", what, VMX_MAX_FILE);
		goto out;
	}
	if (len >= 3 && !memcmp(text, "\xef\xbb\xbf", 3))
		pos = 3;        /* UTF-8 byte order mark */
	while (pos < len) {
		size_t n = 0;

		lineno++;
		while (pos < len && text[pos] != '\n') {
			if (text[pos] == '\0') {
				rc = vm_errf(err, -EINVAL, "%s:%d: NUL byte in the file", what, lineno);
				goto out;
			}
			if (n == VMX_MAX_LINE) {
				rc = vm_errf(err, -E2BIG, "%s:%d: line longer than %d bytes", what, lineno,
					     VMX_MAX_LINE);
				goto out;
			}
			line[n++] = text[pos++];
		}
		pos++;
		if (n && line[n - 1] == '\r')
			n--;
		line[n] = '\0';
		rc = parse_line(line, lineno, what, out, err);
		if (rc)
			goto out;
	}
out:
	free(line);
	if (rc)
		vmx_free(out);
	return rc;
}

char *vmx_format(const struct vmx_file *f)
{
	size_t cap = 64, n = 0;
	char *s = malloc(cap);

	if (!s)
		return NULL;
	s[0] = '\0';
	for (size_t i = 0; i < f->n; i++) {
		size_t need = strlen(f->kv[i].key) + 3 * strlen(f->kv[i].value) + 8;

		if (n + need + 1 > cap) {
			while (n + need + 1 > cap)
				cap *= 2;
			char *t = realloc(s, cap);

			if (!t) {
				free(s);
				return NULL;
			}
			s = t;
		}
		n += (size_t)sprintf(s + n, "%s = \"", f->kv[i].key);
		for (const char *v = f->kv[i].value; *v; v++) {
			if (*v == '"' || *v == '|' || (unsigned char)*v < 0x20)
				n += (size_t)sprintf(s + n, "|%02X", (unsigned char)*v);
			else
				s[n++] = *v;
		}
		n += (size_t)sprintf(s + n, "\"\n");
	}
	return s;
}

/* ------------------------------------------------------------ model */

const char *vm_accel_name(enum vm_accel a)
{
	switch (a) {
	case VM_ACCEL_KVM:
		return "kvm";
	case VM_ACCEL_TCG:
		return "tcg";
	default:
		return "auto";
	}
}

int vm_accel_parse(const char *s, enum vm_accel *out)
{
	if (!strcasecmp(s, "auto") || !*s)
		*out = VM_ACCEL_AUTO;
	else if (!strcasecmp(s, "kvm"))
		*out = VM_ACCEL_KVM;
	else if (!strcasecmp(s, "tcg"))
		*out = VM_ACCEL_TCG;
	else
		return -EINVAL;
	return 0;
}

int vm_name_check(const char *name, const char *key, int line, const char *what,
		  struct vm_err *err)
{
	char where[128];
	size_t len = strlen(name);

	if (line > 0)
		snprintf(where, sizeof(where), "%s:%d: key '%s'", what, line, key);
	else
		snprintf(where, sizeof(where), "%s: %s", what, key);
	if (len == 0)
		return vm_errf(err, -EINVAL, "%s: empty file name", where);
	if (name[0] == '/')
		return vm_errf(err, -EPERM,
			       "%s: absolute path '%.*s' refused: files must be in the VM folder",
			       where, 64, name);
	if (!strcmp(name, "..") || !strncmp(name, "../", 3) || strstr(name, "/../") ||
	    (len >= 3 && !strcmp(name + len - 3, "/..")))
		return vm_errf(err, -EPERM, "%s: '..' in '%.*s' refused: files must be in the VM folder",
			       where, 64, name);
	if (strchr(name, '/'))
		return vm_errf(err, -EPERM,
			       "%s: '%.*s' names a subfolder: files must be directly in the VM folder",
			       where, 64, name);
	if (!strcmp(name, "."))
		return vm_errf(err, -EINVAL, "%s: '.' is not a file name", where);
	if (len > VM_NAME_MAX)
		return vm_errf(err, -ENAMETOOLONG, "%s: file name longer than %d bytes", where,
			       VM_NAME_MAX);
	for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
		if (*p < 0x20 || *p == 0x7f)
			return vm_errf(err, -EINVAL, "%s: control character 0x%02x in the file name",
				       where, *p);
		/* No shell ever sees these names, and QEMU gets descriptors,
		 * not names; but a name with shell or QEMU option syntax in it
		 * (',' separates QEMU options) is a sign of an attack, and
		 * refusing it keeps every tool that might quote them wrong
		 * (scripts, logs pasted into a shell) out of trouble. */
		if (strchr(";|&$`<>\\\"'*?,=!{}[]~", *p))
			return vm_errf(err, -EINVAL, "%s: character '%c' not allowed in a file name ('%.64s')",
				       where, *p, name);
	}
	return 0;
}

/* VMware bookkeeping keys that a real .vmx carries and that have no effect
 * here: accepted and ignored (after the general value checks).  Everything
 * else outside the documented subset is refused, so a key that looks like
 * a QEMU option can never be mistaken for one.  A trailing '*' matches any
 * suffix. */
static const char *const ignored_keys[] = {
	".encoding", "config.version", "virtualHW.version", "virtualHW.productCompatibility",
	"nvram", "pciBridge*", "vmci0.*", "hpet0.*", "tools.*", "toolScripts.*", "uuid.*",
	"vc.uuid", "migrate.*", "sched.*", "svga.*", "floppy0.*", "powerType.*",
	"extendedConfigFile", "cleanShutdown", "softPowerOff", "numa.*", "monitor.*",
	"annotation", "usb.*", "usb_xhci.*", "ehci.*", "sound.*", "mks.*", "checkpoint.*",
	"scsi?.pciSlotNumber", "scsi?.sasWWID", "ethernet?.pciSlotNumber",
	"ethernet?.generatedAddressOffset", "ethernet?.addressType", "ethernet?.uptCompatibility",
	"sata?.pciSlotNumber", "nvme?.pciSlotNumber", "firmware", "bios.*", "isolation.*",
	"replay.*", "RemoteDisplay.*", "vmfsd.template", "messageBus.*", "vmotion.*", "guestInfo.*",
	"vmware.tools.*", "toolsInstallManager.*", "cpuid.*", "memory.hotAdd", "vcpu.hotadd",
	"ide?:?.startConnected", "ide?:?.autodetect", "scsi?:?.redo", "scsi?:?.mode",
	"sata?:?.redo", "sata?:?.mode", "nvme?:?.redo", "scsi?.virtualDev", "cpuid.coresPerSocket",
	"cpuid.coresPerSocket.cookie", "displayName.ascii",
	NULL,
};

/* glob with '?' = one digit, '*' = any suffix; case-insensitive */
static bool key_match(const char *pat, const char *key)
{
	for (; *pat; pat++, key++) {
		if (*pat == '*')
			return true;
		if (*pat == '?') {
			if (!isdigit((unsigned char)*key))
				return false;
			continue;
		}
		if (tolower((unsigned char)*pat) != tolower((unsigned char)*key))
			return false;
	}
	return *key == '\0';
}

static int parse_uint(const struct vmx_kv *kv, const char *what, unsigned min, unsigned max,
		      unsigned *out, struct vm_err *err)
{
	unsigned long long v = 0;
	const char *p = kv->value;

	if (!*p)
		return vm_errf(err, -EINVAL, "%s:%d: key '%s': empty, expected a number", what,
			       kv->line, kv->key);
	for (; *p; p++) {
		if (!isdigit((unsigned char)*p))
			return vm_errf(err, -EINVAL, "%s:%d: key '%s': '%.32s' is not a number", what,
				       kv->line, kv->key, kv->value);
		v = v * 10 + (unsigned)(*p - '0');
		if (v > max)
			return vm_errf(err, -ERANGE, "%s:%d: key '%s': %.32s is more than %u", what,
				       kv->line, kv->key, kv->value, max);
	}
	if (v < min)
		return vm_errf(err, -ERANGE, "%s:%d: key '%s': %llu is less than %u", what, kv->line,
			       kv->key, v, min);
	*out = (unsigned)v;
	return 0;
}

static bool is_true(const char *v)
{
	return !strcasecmp(v, "TRUE") || !strcmp(v, "1") || !strcasecmp(v, "yes");
}

static bool is_false(const char *v)
{
	return !strcasecmp(v, "FALSE") || !strcmp(v, "0") || !strcasecmp(v, "no");
}

static int parse_bool(const struct vmx_kv *kv, const char *what, bool *out, struct vm_err *err)
{
	if (is_true(kv->value))
		*out = true;
	else if (is_false(kv->value))
		*out = false;
	else
		return vm_errf(err, -EINVAL, "%s:%d: key '%s': expected TRUE or FALSE, not '%.32s'",
			       what, kv->line, kv->key, kv->value);
	return 0;
}

/* Device keys: "<bus><ctrl>:<unit>.<field>" with bus in scsi/sata/nvme/ide. */
static bool device_key(const char *key, char *dev, size_t devsize, const char **field)
{
	static const char *const buses[] = {"scsi", "sata", "nvme", "ide", NULL};
	const char *p;

	for (int i = 0; buses[i]; i++) {
		size_t bl = strlen(buses[i]);

		if (strncasecmp(key, buses[i], bl))
			continue;
		p = key + bl;
		if (!isdigit((unsigned char)p[0]) || p[1] != ':' || !isdigit((unsigned char)p[2]))
			return false;
		size_t n = 4;                       /* "0:0." */
		if (isdigit((unsigned char)p[3]))
			n = 5;                      /* "0:15." */
		if (p[n - 1] != '.')
			return false;
		if ((size_t)snprintf(dev, devsize, "%s%.*s", buses[i], (int)(n - 1), p) >= devsize)
			return false;
		for (char *d = dev; *d; d++)
			*d = (char)tolower((unsigned char)*d);
		*field = p + n;
		return true;
	}
	return false;
}

static int check_mac(const struct vmx_kv *kv, const char *what, struct vm_err *err)
{
	const char *v = kv->value;

	if (strlen(v) != 17)
		goto bad;
	for (int i = 0; i < 17; i++) {
		if (i % 3 == 2 ? v[i] != ':' : hexval((unsigned char)v[i]) < 0)
			goto bad;
	}
	if (hexval((unsigned char)v[1]) & 1)
		return vm_errf(err, -EINVAL, "%s:%d: key '%s': %s is a multicast address", what,
			       kv->line, kv->key, v);
	return 0;
bad:
	return vm_errf(err, -EINVAL, "%s:%d: key '%s': '%.32s' is not a MAC address (xx:xx:xx:xx:xx:xx)",
		       what, kv->line, kv->key, v);
}

static int plain_text(const struct vmx_kv *kv, const char *what, size_t max, const char *extra,
		      struct vm_err *err)
{
	if (strlen(kv->value) > max)
		return vm_errf(err, -E2BIG, "%s:%d: key '%s': longer than %zu bytes", what, kv->line,
			       kv->key, max);
	for (const char *p = kv->value; *p; p++)
		if (!isalnum((unsigned char)*p) && !strchr(extra, *p))
			return vm_errf(err, -EINVAL, "%s:%d: key '%s': character '%c' not allowed in '%.32s'",
				       what, kv->line, kv->key, *p, kv->value);
	return 0;
}

static struct vm_nic *nic_of(struct vm_config *cfg, int idx)
{
	for (size_t i = 0; i < cfg->nnics; i++)
		if (cfg->nics[i].index == idx)
			return &cfg->nics[i];
	return NULL;
}

/* ---------------- .vmx -> vm_config: one parser per section ---------------- */

/* What the section parsers share while one .vmx is read */
struct vmx_ctx {
	const char *what;             /* the file name, for messages */
	struct vm_config *cfg;
	struct vm_err *err;
	struct {
		char dev[16];
		bool present, present_set, cdrom;
		const struct vmx_kv *file;
		int line;
	} devs[64];                   /* scsiN:M / sataN:M / ... seen so far */
	size_t ndevs;
	bool nic_present[VM_MAX_NICS];
};

static bool key_ignored(const char *k)
{
	for (int j = 0; ignored_keys[j]; j++)
		if (key_match(ignored_keys[j], k))
			return true;
	return false;
}

static int unknown_key(struct vmx_ctx *x, const struct vmx_kv *kv);

/* the machine: name, vCPUs, memory, guest type, direct kernel boot */

static int key_display_name(struct vmx_ctx *x, const struct vmx_kv *kv)
{
	snprintf(x->cfg->display_name, sizeof(x->cfg->display_name), "%s", kv->value);
	return 0;
}

static int key_numvcpus(struct vmx_ctx *x, const struct vmx_kv *kv)
{
	return parse_uint(kv, x->what, 1, VM_MAX_VCPUS, &x->cfg->vcpus, x->err);
}

static int key_memsize(struct vmx_ctx *x, const struct vmx_kv *kv)
{
	/* MiB; 16 TiB is far beyond any host here but keeps the arithmetic
	 * in range */
	return parse_uint(kv, x->what, VM_MIN_MEM_MIB, 16u << 20, &x->cfg->mem_mib, x->err);
}

static int key_guest_os(struct vmx_ctx *x, const struct vmx_kv *kv)
{
	int rc = plain_text(kv, x->what, 64, "-_.", x->err);

	if (!rc)
		snprintf(x->cfg->guest_os, sizeof(x->cfg->guest_os), "%s", kv->value);
	return rc;
}

static int key_kernel_file(struct vmx_ctx *x, const struct vmx_kv *kv)
{
	int rc = vm_name_check(kv->value, kv->key, kv->line, x->what, x->err);

	if (!rc)
		snprintf(!strcasecmp(kv->key, "vmfsd.kernel") ? x->cfg->kernel : x->cfg->initrd,
			 VM_NAME_MAX + 1, "%s", kv->value);
	return rc;
}

static int key_append(struct vmx_ctx *x, const struct vmx_kv *kv)
{
	/* goes to the guest kernel only (QEMU does not parse it); control
	 * characters were refused by the parser */
	snprintf(x->cfg->append, sizeof(x->cfg->append), "%s", kv->value);
	return 0;
}

static int key_accel(struct vmx_ctx *x, const struct vmx_kv *kv)
{
	if (vm_accel_parse(kv->value, &x->cfg->accel))
		return vm_errf(x->err, -EINVAL, "%s:%d: key '%s': '%.32s' is not auto, kvm or tcg",
			       x->what, kv->line, kv->key, kv->value);
	return 0;
}

const char *vm_ha_priority_name(enum vm_ha_priority p)
{
	switch (p) {
	case VM_HA_DISABLED:
		return "disabled";
	case VM_HA_LOW:
		return "low";
	case VM_HA_HIGH:
		return "high";
	default:
		return "medium";
	}
}

int vm_ha_priority_parse(const char *s, enum vm_ha_priority *out)
{
	static const enum vm_ha_priority all[] = {VM_HA_DISABLED, VM_HA_LOW, VM_HA_MEDIUM, VM_HA_HIGH};

	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
		if (!strcasecmp(s, vm_ha_priority_name(all[i]))) {
			*out = all[i];
			return 0;
		}
	return -EINVAL;
}

int vm_ha_priority_rank(enum vm_ha_priority p)
{
	return p == VM_HA_HIGH ? 3 : p == VM_HA_MEDIUM ? 2 : p == VM_HA_LOW ? 1 : 0;
}

static int key_ha_priority(struct vmx_ctx *x, const struct vmx_kv *kv)
{
	if (vm_ha_priority_parse(kv->value, &x->cfg->ha_priority))
		return vm_errf(x->err, -EINVAL,
			       "%s:%d: key '%s': '%.32s' is not disabled, low, medium or high",
			       x->what, kv->line, kv->key, kv->value);
	return 0;
}

/* VM monitoring: restart in place after a crash, panic or hang (the
 * bounds and why: docs/vm.md "VM monitoring") */
static int key_ha_monitoring(struct vmx_ctx *x, const struct vmx_kv *kv)
{
	if (!strcasecmp(kv->value, "enabled"))
		x->cfg->ha_monitoring = 1;
	else if (!strcasecmp(kv->value, "disabled"))
		x->cfg->ha_monitoring = 0;
	else
		return vm_errf(x->err, -EINVAL, "%s:%d: key '%s': '%.32s' is not enabled or disabled",
			       x->what, kv->line, kv->key, kv->value);
	return 0;
}

static int key_ha_number(struct vmx_ctx *x, const struct vmx_kv *kv)
{
	unsigned v;
	int rc;

	if (!strcasecmp(kv->key, "vmfsd.ha.maxRestarts")) {
		rc = parse_uint(kv, x->what, VM_HA_MAX_RESTARTS_MIN, VM_HA_MAX_RESTARTS_MAX, &v, x->err);
		x->cfg->ha_max_restarts = (int)v;
	} else if (!strcasecmp(kv->key, "vmfsd.ha.restartWindow")) {
		rc = parse_uint(kv, x->what, VM_HA_WINDOW_MIN, VM_HA_WINDOW_MAX, &v, x->err);
		x->cfg->ha_restart_window = (int)v;
	} else {
		rc = parse_uint(kv, x->what, VM_HA_HANG_MIN, VM_HA_HANG_MAX, &v, x->err);
		x->cfg->ha_hang_timeout = (int)v;
	}
	return rc;
}

static const struct {
	const char *key;
	int (*parse)(struct vmx_ctx *x, const struct vmx_kv *kv);
} machine_keys[] = {
	{"displayName", key_display_name},
	{"numvcpus", key_numvcpus},
	{"memSize", key_memsize},
	{"guestOS", key_guest_os},
	{"vmfsd.kernel", key_kernel_file},
	{"vmfsd.initrd", key_kernel_file},
	{"vmfsd.append", key_append},
	{"vmfsd.accel", key_accel},
	{"vmfsd.ha.restartPriority", key_ha_priority},
	{"vmfsd.ha.vmMonitoring", key_ha_monitoring},
	{"vmfsd.ha.maxRestarts", key_ha_number},
	{"vmfsd.ha.restartWindow", key_ha_number},
	{"vmfsd.ha.hangTimeout", key_ha_number},
};

/* The refusal names what is supported, from the tables themselves: the
 * message is all a user of the installed programs has at hand. */
static int unknown_key(struct vmx_ctx *x, const struct vmx_kv *kv)
{
	char keys[320] = "";

	for (size_t i = 0; i < sizeof(machine_keys) / sizeof(machine_keys[0]); i++)
		snprintf(keys + strlen(keys), sizeof(keys) - strlen(keys), "%s%s", i ? ", " : "",
			 machine_keys[i].key);
	return vm_errf(x->err, -EINVAL,
		       "%s:%d: unknown key '%s' (supported: %s; scsiN:M, sataN:M, nvmeN:M, ideN:M "
		       ".fileName/.present/.deviceType; ethernetN.present/.virtualDev/"
		       ".connectionType/.networkName/.address; see vmfsctl(8))",
		       x->what, kv->line, kv->key, keys);
}

/* ethernetN.FIELD: a NIC */
static int section_nic(struct vmx_ctx *x, const struct vmx_kv *kv)
{
	const char *k = kv->key, *field = k + 10, *v = kv->value;
	int idx = k[8] - '0', rc = 0;
	struct vm_nic *nic;
	bool b;

	if (idx >= VM_MAX_NICS)
		return vm_errf(x->err, -ERANGE, "%s:%d: key '%s': at most %d network adapters", x->what,
			       kv->line, k, VM_MAX_NICS);
	nic = nic_of(x->cfg, idx);
	if (!nic) {
		nic = &x->cfg->nics[x->cfg->nnics++];
		nic->index = idx;
		strcpy(nic->model, "virtio-net-pci");
		strcpy(nic->conn, "nat");
	}
	if (!strcasecmp(field, "present")) {
		rc = parse_bool(kv, x->what, &b, x->err);
		x->nic_present[idx] = b;
	} else if (!strcasecmp(field, "virtualDev")) {
		if (!strcasecmp(v, "virtio") || !strcasecmp(v, "vmxnet3") || !strcasecmp(v, "vmxnet"))
			/* a KVM guest is best served by virtio; vmxnet3 is
			 * mapped to it (QEMU's vmxnet3 model is slower and less
			 * maintained) */
			strcpy(nic->model, "virtio-net-pci");
		else if (!strcasecmp(v, "e1000") || !strcasecmp(v, "e1000e"))
			strcpy(nic->model, !strcasecmp(v, "e1000") ? "e1000" : "e1000e");
		else
			rc = vm_errf(x->err, -EINVAL,
				     "%s:%d: key '%s': '%.32s' is not virtio, vmxnet3, e1000 or e1000e",
				     x->what, kv->line, k, v);
	} else if (!strcasecmp(field, "connectionType")) {
		if (!strcasecmp(v, "nat") || !strcasecmp(v, "user"))
			strcpy(nic->conn, "nat");
		else if (!strcasecmp(v, "bridged"))
			strcpy(nic->conn, "bridged");
		else if (!strcasecmp(v, "none"))
			strcpy(nic->conn, "none");
		else
			rc = vm_errf(x->err, -EINVAL, "%s:%d: key '%s': '%.32s' is not nat, bridged or none",
				     x->what, kv->line, k, v);
	} else if (!strcasecmp(field, "networkName")) {
		/* a Linux bridge name: IFNAMSIZ - 1 */
		rc = plain_text(kv, x->what, 15, "-_.", x->err);
		if (!rc)
			snprintf(nic->bridge, sizeof(nic->bridge), "%s", v);
	} else if (!strcasecmp(field, "address") || !strcasecmp(field, "generatedAddress")) {
		rc = check_mac(kv, x->what, x->err);
		if (!rc && (!nic->mac[0] || !strcasecmp(field, "address")))
			snprintf(nic->mac, sizeof(nic->mac), "%s", v);
	} else if (!strcasecmp(field, "startConnected") || !strcasecmp(field, "wakeOnPcktRcv")) {
		rc = parse_bool(kv, x->what, &b, x->err);
	} else if (!key_ignored(k)) {
		rc = unknown_key(x, kv);
	}
	return rc;
}

/* scsiN:M.FIELD (sata, nvme, ide): a disk or CD-ROM, gathered here and
 * turned into disks by finish_disks once every key was read */
static int section_device(struct vmx_ctx *x, const struct vmx_kv *kv, const char *dev,
			  const char *field)
{
	const char *k = kv->key, *v = kv->value;
	size_t d;

	for (d = 0; d < x->ndevs; d++)
		if (!strcmp(x->devs[d].dev, dev))
			break;
	if (d == x->ndevs) {
		if (x->ndevs == sizeof(x->devs) / sizeof(x->devs[0]))
			return vm_errf(x->err, -E2BIG, "%s:%d: key '%s': too many devices", x->what,
				       kv->line, k);
		memset(&x->devs[d], 0, sizeof(x->devs[d]));
		snprintf(x->devs[d].dev, sizeof(x->devs[d].dev), "%s", dev);
		x->devs[d].line = kv->line;
		x->ndevs++;
	}
	if (!strcasecmp(field, "present")) {
		x->devs[d].present_set = true;
		return parse_bool(kv, x->what, &x->devs[d].present, x->err);
	}
	if (!strcasecmp(field, "fileName")) {
		x->devs[d].file = kv;
		return vm_name_check(v, k, kv->line, x->what, x->err);
	}
	if (!strcasecmp(v, "cdrom-image"))
		x->devs[d].cdrom = true;
	else if (!strcasecmp(v, "disk") || !strcasecmp(v, "scsi-hardDisk") ||
		 !strcasecmp(v, "ata-hardDisk"))
		x->devs[d].cdrom = false;
	else
		return vm_errf(x->err, -EINVAL,
			       "%s:%d: key '%s': '%.32s' is not disk, scsi-hardDisk, ata-hardDisk or cdrom-image (host devices are not passed through)",
			       x->what, kv->line, k, v);
	return 0;
}

/* anything else: a key VMware writes that means nothing here, or refused */
static int section_other(struct vmx_ctx *x, const struct vmx_kv *kv)
{
	static const char *const ctrl[] = {"scsi?.present", "sata?.present", "nvme?.present",
					   "ide?.present", NULL};
	const char *field;
	char dev[16];

	if (key_ignored(kv->key))
		return 0;
	/* controller keys ("scsi0.present") carry no choice here: every disk
	 * is a virtio-blk device (docs/vm.md) */
	if (!device_key(kv->key, dev, sizeof(dev), &field))
		for (int j = 0; ctrl[j]; j++)
			if (key_match(ctrl[j], kv->key))
				return 0;
	return unknown_key(x, kv);
}

/* One key of the file, to the parser of its section. */
static int parse_key(struct vmx_ctx *x, const struct vmx_kv *kv)
{
	const char *k = kv->key, *field;
	char dev[16];

	for (size_t i = 0; i < sizeof(machine_keys) / sizeof(machine_keys[0]); i++)
		if (!strcasecmp(k, machine_keys[i].key))
			return machine_keys[i].parse(x, kv);
	if (!strncasecmp(k, "ethernet", 8) && isdigit((unsigned char)k[8]) && k[9] == '.')
		return section_nic(x, kv);
	if (device_key(k, dev, sizeof(dev), &field) &&
	    (!strcasecmp(field, "present") || !strcasecmp(field, "fileName") ||
	     !strcasecmp(field, "deviceType")))
		return section_device(x, kv, dev, field);
	return section_other(x, kv);
}

/* The devices that exist (present, with a file) become the VM's disks. */
static int finish_disks(struct vmx_ctx *x)
{
	struct vm_config *cfg = x->cfg;

	for (size_t d = 0; d < x->ndevs; d++) {
		struct vm_disk *dk;
		size_t fl;

		if (x->devs[d].present_set && !x->devs[d].present)
			continue;
		if (!x->devs[d].file) {
			if (x->devs[d].present_set)
				return vm_errf(x->err, -EINVAL,
					       "%s:%d: device %s is present but has no fileName", x->what,
					       x->devs[d].line, x->devs[d].dev);
			continue;
		}
		if (cfg->ndisks == VM_MAX_DISKS)
			return vm_errf(x->err, -E2BIG, "%s:%d: more than %d disks", x->what,
				       x->devs[d].line, VM_MAX_DISKS);
		dk = &cfg->disks[cfg->ndisks++];
		snprintf(dk->key, sizeof(dk->key), "%s", x->devs[d].dev);
		snprintf(dk->file, sizeof(dk->file), "%s", x->devs[d].file->value);
		dk->cdrom = x->devs[d].cdrom;
		fl = strlen(dk->file);
		if (!dk->cdrom && (fl < 6 || strcasecmp(dk->file + fl - 5, ".vmdk")))
			return vm_errf(x->err, -EINVAL,
				       "%s:%d: key '%s.fileName': a disk must be a .vmdk descriptor, not '%.64s'",
				       x->what, x->devs[d].file->line, x->devs[d].dev, dk->file);
	}
	return 0;
}

/* NICs without ethernetN.present = "TRUE" do not exist (VMware's rule) */
static int finish_nics(struct vmx_ctx *x)
{
	struct vm_config *cfg = x->cfg;
	size_t keep = 0;

	for (size_t i = 0; i < cfg->nnics; i++) {
		if (!x->nic_present[cfg->nics[i].index])
			continue;
		if (!strcmp(cfg->nics[i].conn, "bridged") && !cfg->nics[i].bridge[0])
			return vm_errf(x->err, -EINVAL, "%s: ethernet%d is bridged but has no networkName",
				       x->what, cfg->nics[i].index);
		cfg->nics[keep++] = cfg->nics[i];
	}
	cfg->nnics = keep;
	return 0;
}

int vm_config_from_vmx(const struct vmx_file *f, const char *vmx_name, struct vm_config *cfg,
		       struct vm_err *err)
{
	struct vmx_ctx *x;
	size_t nl;
	int rc;

	memset(cfg, 0, sizeof(*cfg));
	rc = vm_name_check(vmx_name, "file name", 0, "VM", err);
	if (rc)
		return rc;
	nl = strlen(vmx_name);
	if (nl < 5 || strcasecmp(vmx_name + nl - 4, ".vmx"))
		return vm_errf(err, -EINVAL, "%s: the configuration file name must end in .vmx", vmx_name);
	snprintf(cfg->vmx_name, sizeof(cfg->vmx_name), "%s", vmx_name);
	snprintf(cfg->name, sizeof(cfg->name), "%.*s", (int)(nl - 4), vmx_name);
	/* an empty file (a copy that failed, a truncated write) is not a VM
	 * with every default */
	if (!f->n)
		return vm_errf(err, -EINVAL, "%s: no keys: an empty file is not a VM configuration",
			       vmx_name);
	cfg->vcpus = 1;
	cfg->mem_mib = 256;
	cfg->ha_monitoring = cfg->ha_max_restarts = cfg->ha_restart_window = cfg->ha_hang_timeout = -1;

	x = calloc(1, sizeof(*x));
	if (!x)
		return vm_errf(err, -ENOMEM, "%s: out of memory", vmx_name);
	x->what = vmx_name;
	x->cfg = cfg;
	x->err = err;
	for (size_t i = 0; !rc && i < f->n; i++)
		rc = parse_key(x, &f->kv[i]);
	if (!rc)
		rc = finish_disks(x);
	if (!rc)
		rc = finish_nics(x);
	free(x);
	if (rc)
		return rc;
	if (cfg->initrd[0] && !cfg->kernel[0])
		return vm_errf(err, -EINVAL, "%s: vmfsd.initrd without vmfsd.kernel", vmx_name);
	if (cfg->append[0] && !cfg->kernel[0])
		return vm_errf(err, -EINVAL, "%s: vmfsd.append without vmfsd.kernel", vmx_name);
	return 0;
}

int vm_read_file(int dirfd, const char *name, size_t max, char **out, size_t *len)
{
	int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
	struct stat st;
	char *buf = NULL;
	size_t n = 0;
	int rc;

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st)) {
		rc = -errno;
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		rc = -EINVAL;
		goto out;
	}
	if ((uint64_t)st.st_size > max) {
		rc = -EFBIG;
		goto out;
	}
	buf = malloc((size_t)st.st_size + 1);
	if (!buf) {
		rc = -ENOMEM;
		goto out;
	}
	for (;;) {
		ssize_t r = read(fd, buf + n, (size_t)st.st_size + 1 - n);

		if (r < 0) {
			if (errno == EINTR)
				continue;
			rc = -errno;
			goto out;
		}
		if (r == 0)
			break;
		n += (size_t)r;
		if (n > (size_t)st.st_size) {   /* grew while we read */
			rc = -EFBIG;
			goto out;
		}
	}
	buf[n] = '\0';
	*out = buf;
	*len = n;
	buf = NULL;
	rc = 0;
out:
	free(buf);
	close(fd);
	return rc;
}

int vm_config_load(int dirfd, const char *vmx_name, struct vm_config *cfg, struct vm_err *err)
{
	struct vmx_file f;
	char *text;
	size_t len;
	int rc;

	rc = vm_name_check(vmx_name, "file name", 0, "VM", err);
	if (rc)
		return rc;
	rc = vm_read_file(dirfd, vmx_name, VMX_MAX_FILE, &text, &len);
	if (rc == -ELOOP)
		return vm_errf(err, rc, "%s: is a symbolic link (refused: it could point outside the VM folder)",
			       vmx_name);
	if (rc == -EFBIG)
		return vm_errf(err, rc, "%s: larger than %d bytes", vmx_name, VMX_MAX_FILE);
	if (rc == -EINVAL)
		return vm_errf(err, rc, "%s: not a regular file", vmx_name);
	if (rc)
		return vm_errf(err, rc, "%s: %s", vmx_name, strerror(-rc));
	rc = vmx_parse(text, len, vmx_name, &f, err);
	free(text);
	if (rc)
		return rc;
	rc = vm_config_from_vmx(&f, vmx_name, cfg, err);
	vmx_free(&f);
	return rc;
}

int vm_find_vmx(int dirfd, char *name, size_t size)
{
	int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d;
	struct dirent *de;
	int found = 0;

	if (fd < 0)
		return -errno;
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return -errno;
	}
	while ((de = readdir(d))) {
		size_t l = strlen(de->d_name);

		if (l > 4 && !strcasecmp(de->d_name + l - 4, ".vmx") && de->d_name[0] != '.') {
			if (found++ == 0 && (size_t)snprintf(name, size, "%s", de->d_name) >= size)
				found = -1;
		}
	}
	closedir(d);
	if (found < 0)
		return -ENAMETOOLONG;
	return found == 0 ? -ENOENT : found > 1 ? -EEXIST : 0;
}
