/* SPDX-License-Identifier: MIT */
/*
 * /proc readers under a configurable root (see procfs.h).
 */
#include "procfs.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "errors.h"

/* /proc/vmstat is the largest file read here (about 4 KiB on 6.x kernels);
 * this leaves room for kernels to come. Kept in the reader, not on the
 * stack, so that its pages are touched once. */
#define PROCFS_BUF_SIZE 16384

struct AgentProcfs {
  char *root;
  char buf[PROCFS_BUF_SIZE];
};

AgentProcfs *agent_procfs_new(const char *root) {
  AgentProcfs *self = g_new0(AgentProcfs, 1);

  self->root = g_strdup(root && *root ? root : "/");
  return self;
}

void agent_procfs_free(AgentProcfs *self) {
  if (!self)
    return;
  g_free(self->root);
  g_free(self);
}

const char *agent_procfs_root(const AgentProcfs *self) {
  return self->root;
}

char *agent_procfs_path(const char *root, const char *abs_path) {
  if (!root || !*root || strcmp(root, "/") == 0)
    return g_strdup(abs_path);
  while (*abs_path == '/')
    abs_path++;
  return g_build_filename(root, abs_path, NULL);
}

/*
 * Reads <root>/@abs_path into self->buf, at most PROCFS_BUF_SIZE bytes.
 * Returns the byte count (>= 0) or -1 with @error set.
 */
static gssize read_thin(AgentProcfs *self, const char *abs_path, GError **error) {
  g_autofree char *path = agent_procfs_path(self->root, abs_path);
  size_t len = 0;
  int fd;

  fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    g_set_error(error, AGENT_ERROR, AGENT_ERROR_NOT_FOUND, "cannot open %s: %s", path,
                g_strerror(e));
    return -1;
  }
  while (len < sizeof(self->buf)) {
    ssize_t r = read(fd, self->buf + len, sizeof(self->buf) - len);

    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0) {
      int e = errno;
      g_set_error(error, AGENT_ERROR, AGENT_ERROR_NOT_FOUND, "cannot read %s: %s", path,
                  g_strerror(e));
      close(fd);
      return -1;
    }
    if (r == 0)
      break;
    len += (size_t)r;
  }
  close(fd);
  return (gssize)len;
}

/*
 * Parses a decimal unsigned number at *@p (no sign, no spaces), advancing
 * *@p past it. Returns TRUE, or FALSE when there is no digit or the value
 * does not fit in 64 bits.
 */
static gboolean parse_u64(const char **p, const char *end, uint64_t *out) {
  const char *s = *p;
  uint64_t v = 0;

  if (s >= end || !g_ascii_isdigit(*s))
    return FALSE;
  for (; s < end && g_ascii_isdigit(*s); s++) {
    unsigned d = (unsigned)(*s - '0');

    if (v > (UINT64_MAX - d) / 10)
      return FALSE;
    v = v * 10 + d;
  }
  *p = s;
  *out = v;
  return TRUE;
}

static const char *skip_blanks(const char *p, const char *end) {
  while (p < end && (*p == ' ' || *p == '\t'))
    p++;
  return p;
}

/* Calls @fn on each complete line (without its '\n'); stops early when @fn
 * returns FALSE. */
typedef gboolean (*line_fn)(const char *line, const char *end, gpointer data);

static void foreach_line(const char *buf, size_t len, line_fn fn, gpointer data) {
  const char *p = buf, *end = buf + len;

  while (p < end) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));

    if (!nl)
      return; /* a cut line: ignored */
    if (!fn(p, nl, data))
      return;
    p = nl + 1;
  }
}

/* Does the line start with @label immediately followed by @sep? Sets *@rest
 * to what follows the separator. */
static gboolean line_has_label(const char *line, const char *end, const char *label, char sep,
                               const char **rest) {
  size_t n = strlen(label);

  if ((size_t)(end - line) <= n || memcmp(line, label, n) != 0 || line[n] != sep)
    return FALSE;
  *rest = line + n + 1;
  return TRUE;
}

/* ---- /proc/meminfo ---- */

enum { MI_TOTAL, MI_FREE, MI_AVAILABLE, MI_COUNT };

static const char *const meminfo_labels[MI_COUNT] = {"MemTotal", "MemFree", "MemAvailable"};

typedef struct {
  uint64_t kib[MI_COUNT];
  gboolean seen[MI_COUNT];
  int bad; /* index of the first field whose value is not a number, or -1 */
} MeminfoScan;

static gboolean meminfo_line(const char *line, const char *end, gpointer data) {
  MeminfoScan *scan = data;

  for (int i = 0; i < MI_COUNT; i++) {
    const char *p, *unit;
    uint64_t v = 0;
    gboolean ok;

    if (scan->seen[i] || !line_has_label(line, end, meminfo_labels[i], ':', &p))
      continue;
    scan->seen[i] = TRUE;
    /* The value is the number after the label and its blanks (reading it
     * from the label was low-memory-monitor's bug), then " kB". */
    p = skip_blanks(p, end);
    ok = parse_u64(&p, end, &v);
    unit = skip_blanks(p, end);
    ok = ok && unit > p && end - unit == 2 && memcmp(unit, "kB", 2) == 0;
    if (!ok && scan->bad < 0)
      scan->bad = i;
    scan->kib[i] = v;
    break;
  }
  return !(scan->seen[MI_TOTAL] && scan->seen[MI_FREE] && scan->seen[MI_AVAILABLE]);
}

gboolean agent_meminfo_parse(const char *buf, size_t len, AgentMeminfo *out, GError **error) {
  MeminfoScan scan = {.bad = -1};
  uint64_t bytes[MI_COUNT];

  foreach_line(buf, len, meminfo_line, &scan);
  for (int i = 0; i < MI_COUNT; i++) {
    if (!scan.seen[i]) {
      g_set_error(error, AGENT_ERROR, AGENT_ERROR_NOT_FOUND, "meminfo: no %s line",
                  meminfo_labels[i]);
      return FALSE;
    }
  }
  if (scan.bad >= 0) {
    g_set_error(error, AGENT_ERROR, AGENT_ERROR_INVALID, "meminfo: %s is not a number of kB",
                meminfo_labels[scan.bad]);
    return FALSE;
  }
  for (int i = 0; i < MI_COUNT; i++) {
    if (scan.kib[i] > UINT64_MAX / 1024) {
      g_set_error(error, AGENT_ERROR, AGENT_ERROR_INVALID,
                  "meminfo: %s of %" G_GUINT64_FORMAT " kB does not fit in 64 bits of bytes",
                  meminfo_labels[i], scan.kib[i]);
      return FALSE;
    }
    bytes[i] = scan.kib[i] * 1024;
  }
  out->mem_total_bytes = bytes[MI_TOTAL];
  out->mem_free_bytes = bytes[MI_FREE];
  out->mem_available_bytes = bytes[MI_AVAILABLE];
  return TRUE;
}

gboolean agent_procfs_read_meminfo(AgentProcfs *self, AgentMeminfo *out, GError **error) {
  gssize len = read_thin(self, "/proc/meminfo", error);

  return len >= 0 && agent_meminfo_parse(self->buf, (size_t)len, out, error);
}

/* ---- /proc/vmstat ---- */

typedef struct {
  uint64_t inflate, deflate;
  gboolean seen_inflate, seen_deflate;
  gboolean bad;
} VmstatScan;

static gboolean vmstat_line(const char *line, const char *end, gpointer data) {
  VmstatScan *scan = data;
  const char *p;
  uint64_t *v;
  gboolean *seen;

  if (line_has_label(line, end, "balloon_inflate", ' ', &p)) {
    v = &scan->inflate;
    seen = &scan->seen_inflate;
  } else if (line_has_label(line, end, "balloon_deflate", ' ', &p)) {
    v = &scan->deflate;
    seen = &scan->seen_deflate;
  } else {
    return TRUE;
  }
  if (*seen)
    return TRUE;
  *seen = TRUE;
  if (!parse_u64(&p, end, v) || p != end)
    scan->bad = TRUE;
  return !(scan->seen_inflate && scan->seen_deflate);
}

gboolean agent_vmstat_parse(const char *buf, size_t len, AgentVmstat *out, GError **error) {
  VmstatScan scan = {0};

  foreach_line(buf, len, vmstat_line, &scan);
  if (scan.bad) {
    g_set_error(error, AGENT_ERROR, AGENT_ERROR_INVALID,
                "vmstat: balloon_inflate or balloon_deflate is not a number");
    return FALSE;
  }
  /* Both or neither: one without the other means a mangled file. */
  if (scan.seen_inflate != scan.seen_deflate) {
    g_set_error(error, AGENT_ERROR, AGENT_ERROR_NOT_FOUND, "vmstat: no %s line",
                scan.seen_inflate ? "balloon_deflate" : "balloon_inflate");
    return FALSE;
  }
  out->has_balloon = scan.seen_inflate;
  out->balloon_inflate_pages = scan.seen_inflate ? scan.inflate : 0;
  out->balloon_deflate_pages = scan.seen_deflate ? scan.deflate : 0;
  return TRUE;
}

gboolean agent_procfs_read_vmstat(AgentProcfs *self, AgentVmstat *out, GError **error) {
  gssize len = read_thin(self, "/proc/vmstat", error);

  return len >= 0 && agent_vmstat_parse(self->buf, (size_t)len, out, error);
}

/* ---- /proc/pressure/memory ---- */

/* Parses "12.34" (the kernel always prints two decimals) into 1234. */
static gboolean parse_centi(const char **p, const char *end, uint32_t *out) {
  uint64_t whole, frac;
  const char *s = *p, *f;

  if (!parse_u64(&s, end, &whole) || whole > 100 || s >= end || *s != '.')
    return FALSE;
  f = ++s;
  if (!parse_u64(&s, end, &frac) || s - f != 2)
    return FALSE;
  *out = (uint32_t)(whole * 100 + frac);
  *p = s;
  return TRUE;
}

/* Parses "avg10=A avg60=B avg300=C total=T" after the line's kind. */
static gboolean psi_fields(const char *p, const char *end, uint32_t *avg10, uint64_t *total) {
  static const char *const keys[] = {"avg10=", "avg60=", "avg300=", "total="};
  uint32_t ignored;

  for (unsigned k = 0; k < G_N_ELEMENTS(keys); k++) {
    size_t n = strlen(keys[k]);

    p = skip_blanks(p, end);
    if ((size_t)(end - p) < n || memcmp(p, keys[k], n) != 0)
      return FALSE;
    p += n;
    if (k == 3) {
      if (!parse_u64(&p, end, total))
        return FALSE;
    } else if (!parse_centi(&p, end, k == 0 ? avg10 : &ignored)) {
      return FALSE;
    }
  }
  return skip_blanks(p, end) == end;
}

typedef struct {
  AgentPsi psi;
  gboolean seen_some, seen_full, bad;
} PsiScan;

static gboolean psi_line(const char *line, const char *end, gpointer data) {
  PsiScan *scan = data;
  const char *p;

  if (!scan->seen_some && line_has_label(line, end, "some", ' ', &p)) {
    scan->seen_some = TRUE;
    if (!psi_fields(p, end, &scan->psi.some_avg10_centipct, &scan->psi.some_total_us))
      scan->bad = TRUE;
  } else if (!scan->seen_full && line_has_label(line, end, "full", ' ', &p)) {
    scan->seen_full = TRUE;
    if (!psi_fields(p, end, &scan->psi.full_avg10_centipct, &scan->psi.full_total_us))
      scan->bad = TRUE;
  }
  return TRUE;
}

gboolean agent_psi_parse(const char *buf, size_t len, AgentPsi *out, GError **error) {
  PsiScan scan = {0};

  foreach_line(buf, len, psi_line, &scan);
  if (!scan.seen_some) {
    g_set_error(error, AGENT_ERROR, AGENT_ERROR_NOT_FOUND, "pressure: no \"some\" line");
    return FALSE;
  }
  if (scan.bad) {
    g_set_error(error, AGENT_ERROR, AGENT_ERROR_INVALID, "pressure: malformed line");
    return FALSE;
  }
  scan.psi.has_full = scan.seen_full;
  *out = scan.psi;
  return TRUE;
}

gboolean agent_procfs_read_psi(AgentProcfs *self, AgentPsi *out, GError **error) {
  gssize len = read_thin(self, "/proc/pressure/memory", error);

  return len >= 0 && agent_psi_parse(self->buf, (size_t)len, out, error);
}

gboolean agent_statm_parse(const char *buf, size_t len, uint64_t *rss_pages, GError **error) {
  const char *p = buf, *end = buf + len;
  uint64_t size_pages;

  /* "size resident shared text lib data dt\n", in pages. */
  if (!parse_u64(&p, end, &size_pages) || (p = skip_blanks(p, end)) == end ||
      !parse_u64(&p, end, rss_pages)) {
    g_set_error(error, AGENT_ERROR, AGENT_ERROR_INVALID, "statm: expected two page counts");
    return FALSE;
  }
  return TRUE;
}

gboolean agent_procfs_read_rss(AgentProcfs *self, pid_t pid, uint64_t *rss_bytes, GError **error) {
  char path[48];
  gssize len;
  uint64_t pages, page;

  g_snprintf(path, sizeof(path), "/proc/%d/statm", (int)pid);
  len = read_thin(self, path, error);
  if (len < 0 || !agent_statm_parse(self->buf, (size_t)len, &pages, error))
    return FALSE;
  page = (uint64_t)sysconf(_SC_PAGESIZE);
  *rss_bytes = pages > UINT64_MAX / page ? UINT64_MAX : pages * page;
  return TRUE;
}
