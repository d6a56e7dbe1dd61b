/* SPDX-License-Identifier: MIT */
/*
 * Readers of the kernel's memory figures, every path under one root.
 *
 * The root is "/" in production and a fixture tree in tests (and later the
 * VM tests use the real kernel again): agent_procfs_path() is the one place
 * that builds a /proc or /sys path, for this module and for the future
 * sysfs readers.
 *
 * Each file is read thinly into a fixed buffer (no allocation, one read()
 * loop) and parsed from that buffer, earlyoom style. The parsers are
 * exposed so that the tests can feed them edge cases directly. Only lines
 * that end in '\n' count: a file cut short in the middle of a line loses
 * that line rather than yielding a truncated number.
 *
 * Errors (GError, AGENT_ERROR): AGENT_ERROR_NOT_FOUND when a file cannot be
 * opened or a required field is absent; AGENT_ERROR_INVALID when a required
 * field's value is not a number or does not fit. Not thread-safe: one
 * AgentProcfs per thread (the agent has one, on the main loop).
 */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

/* From /proc/meminfo (the file gives KiB; these are bytes). */
typedef struct {
  uint64_t mem_total_bytes;
  uint64_t mem_free_bytes;
  uint64_t mem_available_bytes;
} AgentMeminfo;

/* From /proc/vmstat; the balloon counters count pages (4 KiB here). */
typedef struct {
  bool has_balloon; /* the kernel has CONFIG_MEMORY_BALLOON's counters */
  uint64_t balloon_inflate_pages;
  uint64_t balloon_deflate_pages;
} AgentVmstat;

/* From /proc/pressure/memory. avg10 is a percentage with two decimals,
 * kept exact as hundredths of a percent (12.34% -> 1234). */
typedef struct {
  uint32_t some_avg10_centipct;
  uint64_t some_total_us;
  bool has_full; /* the "full" line is there */
  uint32_t full_avg10_centipct;
  uint64_t full_total_us;
} AgentPsi;

typedef struct AgentProcfs AgentProcfs;

/*
 * Makes a reader rooted at @root (a directory; NULL or "" means "/"),
 * copied. Never fails; a wrong root shows as NOT_FOUND on reads. Free with
 * agent_procfs_free().
 */
AgentProcfs *agent_procfs_new(const char *root);

/* Frees @self; NULL is fine. */
void agent_procfs_free(AgentProcfs *self);

/* The root @self was made with (never NULL, owned by @self). */
const char *agent_procfs_root(const AgentProcfs *self);

/*
 * Builds @abs_path (absolute, like "/proc/meminfo") under @root. Returns a
 * newly allocated string (g_free). With root "/" it is @abs_path itself.
 */
char *agent_procfs_path(const char *root, const char *abs_path);

/* Reads and parses <root>/proc/meminfo. Returns TRUE and fills @out, or
 * FALSE with @error set (then @out is untouched). */
gboolean agent_procfs_read_meminfo(AgentProcfs *self, AgentMeminfo *out, GError **error);

/* Reads <root>/proc/vmstat. Absent balloon counters are not an error
 * (has_balloon is false). */
gboolean agent_procfs_read_vmstat(AgentProcfs *self, AgentVmstat *out, GError **error);

/* Reads <root>/proc/pressure/memory (NOT_FOUND on kernels without PSI). */
gboolean agent_procfs_read_psi(AgentProcfs *self, AgentPsi *out, GError **error);

/* The resident set of process @pid from <root>/proc/PID/statm, in bytes.
 * statm is world-readable with no ptrace check: this needs no capability
 * for other users' processes. */
gboolean agent_procfs_read_rss(AgentProcfs *self, pid_t pid, uint64_t *rss_bytes, GError **error);

/*
 * Parsers of a file's text in @buf of @len bytes (need not be
 * NUL-terminated). MemTotal, MemFree and MemAvailable are required.
 * Same returns as the readers.
 */
gboolean agent_meminfo_parse(const char *buf, size_t len, AgentMeminfo *out, GError **error);
gboolean agent_vmstat_parse(const char *buf, size_t len, AgentVmstat *out, GError **error);
gboolean agent_psi_parse(const char *buf, size_t len, AgentPsi *out, GError **error);
gboolean agent_statm_parse(const char *buf, size_t len, uint64_t *rss_pages, GError **error);
