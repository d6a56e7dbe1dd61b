/* SPDX-License-Identifier: MIT */
/*
 * The /proc readers against real captured files (this machine and QEMU
 * guests with a virtio balloon) and hand-made edge cases, all under
 * tests/data/proc (one proc root per directory; see its README.md).
 *
 * The fixture directory comes from argv[1] or SHRINKD_TEST_PROC.
 */
#include "cunit-run.h"
#include <glib.h>
#include <stdio.h>
#include <string.h>

#include "errors.h"
#include "procfs.h"

static const char *fixtures;

/* A literal and its length, without its NUL. */
#define TEXT(s) s, strlen(s)

static AgentProcfs *open_root(const char *name) {
  g_autofree char *root = g_build_filename(fixtures, name, NULL);

  return agent_procfs_new(root);
}

typedef struct {
  const char *dir;
  uint64_t total_kib, free_kib, avail_kib;
} meminfo_row;

static const meminfo_row meminfo_ok[] = {
    {"host-6.18", 24731708, 21999940, 23564052},
    {"guest-idle-1024mib", 996624, 956532, 889716},
    {"guest-inflated-512mib", 472336, 439708, 372896},                /* MemTotal fell */
    {"guest-inflated-512mib-deflate-on-oom", 996624, 437916, 371100}, /* it did not */
    {"guest-stalled-256mib-hog", 901468, 48800, 0},                   /* nothing available */
    {"label-trap", 4000, 2000, 3000},
    {"huge", UINT64_C(18014398509481983), UINT64_C(18014398509481982), 23564052},
};

static void test_meminfo_files(void) {
  for (size_t i = 0; i < G_N_ELEMENTS(meminfo_ok); i++) {
    AgentProcfs *p = open_root(meminfo_ok[i].dir);
    g_autoptr(GError) error = NULL;
    AgentMeminfo mi = {0};
    gboolean ok = agent_procfs_read_meminfo(p, &mi, &error);

    if (!ok)
      printf("\n    %s: %s", meminfo_ok[i].dir, error->message);
    CU_ASSERT_TRUE(ok);
    CU_ASSERT_EQUAL(mi.mem_total_bytes, meminfo_ok[i].total_kib * 1024);
    CU_ASSERT_EQUAL(mi.mem_free_bytes, meminfo_ok[i].free_kib * 1024);
    CU_ASSERT_EQUAL(mi.mem_available_bytes, meminfo_ok[i].avail_kib * 1024);
    agent_procfs_free(p);
  }
}

typedef struct {
  const char *dir;
  int code;          /* AgentErrorCode */
  const char *names; /* the message mentions this */
} fail_row;

static const fail_row meminfo_bad[] = {
    {"old-kernel", AGENT_ERROR_NOT_FOUND, "MemAvailable"},
    {"truncated", AGENT_ERROR_NOT_FOUND, "MemAvailable"}, /* a cut line does not count */
    {"overflow", AGENT_ERROR_INVALID, "MemTotal"},
    {"no-unit", AGENT_ERROR_INVALID, "MemFree"},
    {"empty", AGENT_ERROR_NOT_FOUND, "meminfo"},
};

static void check_failures(const fail_row *rows, size_t n,
                           gboolean (*read)(AgentProcfs *, void *, GError **), size_t out_size) {
  for (size_t i = 0; i < n; i++) {
    AgentProcfs *p = open_root(rows[i].dir);
    g_autoptr(GError) error = NULL;
    guint8 out[256], before[256];

    g_assert(out_size <= sizeof(out));
    memset(out, 0xA5, sizeof(out));
    memcpy(before, out, sizeof(out));
    CU_ASSERT_FALSE(read(p, out, &error));
    CU_ASSERT_PTR_NOT_NULL_FATAL(error);
    if (!g_error_matches(error, AGENT_ERROR, rows[i].code) ||
        !strstr(error->message, rows[i].names))
      printf("\n    %s: unexpected error %d \"%s\"", rows[i].dir, error->code, error->message);
    CU_ASSERT_TRUE(g_error_matches(error, AGENT_ERROR, rows[i].code));
    CU_ASSERT_PTR_NOT_NULL(strstr(error->message, rows[i].names));
    CU_ASSERT_EQUAL(memcmp(out, before, out_size), 0); /* untouched on failure */
    agent_procfs_free(p);
  }
}

static void test_meminfo_failures(void) {
  check_failures(meminfo_bad, G_N_ELEMENTS(meminfo_bad),
                 (gboolean(*)(AgentProcfs *, void *, GError **))agent_procfs_read_meminfo,
                 sizeof(AgentMeminfo));
}

typedef struct {
  const char *dir;
  gboolean has;
  uint64_t inflate, deflate;
} vmstat_row;

static const vmstat_row vmstat_ok[] = {
    {"host-6.18", TRUE, 0, 0},
    {"guest-idle-1024mib", TRUE, 0, 0},
    {"guest-inflated-512mib", TRUE, 131072, 0},
    {"guest-inflated-512mib-deflate-on-oom", TRUE, 131072, 0},
    {"guest-stalled-256mib-hog", TRUE, 154861, 131072},
    {"old-kernel", FALSE, 0, 0},
    {"label-trap", TRUE, 5, 7},
    {"huge", TRUE, UINT64_MAX, UINT64_MAX - 1},
};

static const fail_row vmstat_bad[] = {
    {"overflow", AGENT_ERROR_INVALID, "balloon_inflate"},
    {"truncated", AGENT_ERROR_NOT_FOUND, "balloon_deflate"},
    {"vmstat-half", AGENT_ERROR_NOT_FOUND, "balloon_inflate"},
    {"empty", AGENT_ERROR_NOT_FOUND, "vmstat"},
};

static void test_vmstat_files(void) {
  for (size_t i = 0; i < G_N_ELEMENTS(vmstat_ok); i++) {
    AgentProcfs *p = open_root(vmstat_ok[i].dir);
    g_autoptr(GError) error = NULL;
    AgentVmstat vm = {0};
    gboolean ok = agent_procfs_read_vmstat(p, &vm, &error);

    if (!ok)
      printf("\n    %s: %s", vmstat_ok[i].dir, error->message);
    CU_ASSERT_TRUE(ok);
    CU_ASSERT_EQUAL(vm.has_balloon, vmstat_ok[i].has);
    CU_ASSERT_EQUAL(vm.balloon_inflate_pages, vmstat_ok[i].inflate);
    CU_ASSERT_EQUAL(vm.balloon_deflate_pages, vmstat_ok[i].deflate);
    agent_procfs_free(p);
  }
  check_failures(vmstat_bad, G_N_ELEMENTS(vmstat_bad),
                 (gboolean(*)(AgentProcfs *, void *, GError **))agent_procfs_read_vmstat,
                 sizeof(AgentVmstat));
}

typedef struct {
  const char *dir;
  uint32_t some_avg10;
  uint64_t some_total;
  gboolean has_full;
  uint32_t full_avg10;
  uint64_t full_total;
} psi_row;

static const psi_row psi_ok[] = {
    {"host-6.18", 0, 0, TRUE, 0, 0},
    {"guest-stalled-256mib-hog", 0, 21988, TRUE, 0, 21988},
    {"psi-nonzero", 564, 10743256, TRUE, 0, 0},
    {"psi-some-only", 1234, 987654321, FALSE, 0, 0},
    {"truncated", 125, 123456, FALSE, 0, 0}, /* the cut "full" line is ignored */
    {"huge", 10000, UINT64_MAX, TRUE, 9999, UINT64_MAX - 1},
};

static const fail_row psi_bad[] = {
    {"overflow", AGENT_ERROR_INVALID, "malformed"},
    {"psi-malformed", AGENT_ERROR_INVALID, "malformed"},
    {"old-kernel", AGENT_ERROR_NOT_FOUND, "pressure/memory"},
};

static void test_psi_files(void) {
  for (size_t i = 0; i < G_N_ELEMENTS(psi_ok); i++) {
    AgentProcfs *p = open_root(psi_ok[i].dir);
    g_autoptr(GError) error = NULL;
    AgentPsi psi = {0};
    gboolean ok = agent_procfs_read_psi(p, &psi, &error);

    if (!ok)
      printf("\n    %s: %s", psi_ok[i].dir, error->message);
    CU_ASSERT_TRUE(ok);
    CU_ASSERT_EQUAL(psi.some_avg10_centipct, psi_ok[i].some_avg10);
    CU_ASSERT_EQUAL(psi.some_total_us, psi_ok[i].some_total);
    CU_ASSERT_EQUAL(psi.has_full, psi_ok[i].has_full);
    CU_ASSERT_EQUAL(psi.full_avg10_centipct, psi_ok[i].full_avg10);
    CU_ASSERT_EQUAL(psi.full_total_us, psi_ok[i].full_total);
    agent_procfs_free(p);
  }
  check_failures(psi_bad, G_N_ELEMENTS(psi_bad),
                 (gboolean(*)(AgentProcfs *, void *, GError **))agent_procfs_read_psi,
                 sizeof(AgentPsi));
}

/* Parsing from a buffer reads only @len bytes: no NUL needed, nothing past
 * the end. */
static void test_parse_buffers(void) {
  static const char text[] = "MemTotal: 100 kB\nMemFree: 50 kB\nMemAvailable: 70 kB\nXXXX";
  char *copy = g_memdup2(text, sizeof(text) - 1); /* no NUL */
  AgentMeminfo mi;
  AgentVmstat vm;
  AgentPsi psi;

  CU_ASSERT_TRUE(agent_meminfo_parse(copy, sizeof(text) - 1, &mi, NULL));
  CU_ASSERT_EQUAL(mi.mem_available_bytes, 70 * 1024);
  /* Cut before the last newline: MemAvailable's line is incomplete. */
  CU_ASSERT_FALSE(agent_meminfo_parse(
      copy, strlen("MemTotal: 100 kB\nMemFree: 50 kB\nMemAvailable: 70 kB"), &mi, NULL));
  CU_ASSERT_FALSE(agent_meminfo_parse(copy, 0, &mi, NULL));
  g_free(copy);

  CU_ASSERT_TRUE(agent_vmstat_parse(TEXT(""), &vm, NULL));
  CU_ASSERT_FALSE(vm.has_balloon);
  CU_ASSERT_FALSE(agent_vmstat_parse(TEXT("balloon_inflate -1\nballoon_deflate 0\n"), &vm, NULL));
  CU_ASSERT_FALSE(agent_vmstat_parse(TEXT("balloon_inflate 1x\nballoon_deflate 0\n"), &vm, NULL));

  CU_ASSERT_FALSE(agent_psi_parse(TEXT(""), &psi, NULL));
  CU_ASSERT_FALSE(
      agent_psi_parse(TEXT("some avg10=101.00 avg60=0.00 avg300=0.00 total=0\n"), &psi, NULL));
  CU_ASSERT_FALSE(
      agent_psi_parse(TEXT("some avg10=1.00 avg60=0.00 avg300=0.00 total=0 x\n"), &psi, NULL));
  CU_ASSERT_TRUE(
      agent_psi_parse(TEXT("some avg10=1.00 avg60=0.00 avg300=0.00 total=0\n"), &psi, NULL));
  CU_ASSERT_EQUAL(psi.some_avg10_centipct, 100);
}

static void test_paths(void) {
  struct {
    const char *root, *path, *want;
  } rows[] = {
      {"/", "/proc/meminfo", "/proc/meminfo"},
      {NULL, "/proc/meminfo", "/proc/meminfo"},
      {"", "/proc/meminfo", "/proc/meminfo"},
      {"/tmp/r", "/proc/meminfo", "/tmp/r/proc/meminfo"},
      {"/tmp/r/", "/sys/bus/pci", "/tmp/r/sys/bus/pci"},
  };

  for (size_t i = 0; i < G_N_ELEMENTS(rows); i++) {
    g_autofree char *p = agent_procfs_path(rows[i].root, rows[i].path);

    CU_ASSERT_STRING_EQUAL(p, rows[i].want);
  }
  {
    AgentProcfs *p = agent_procfs_new(NULL);

    CU_ASSERT_STRING_EQUAL(agent_procfs_root(p), "/");
    agent_procfs_free(p);
    agent_procfs_free(NULL);
  }
}

/* statm: a captured file (pid 4242 of host-6.18, a real cat's), and what
 * a peer cannot make us believe: junk, one field, a number too large. */
static void test_statm(void) {
  g_autofree char *root = g_build_filename(fixtures, "host-6.18", NULL);
  AgentProcfs *p = agent_procfs_new(root);
  g_autoptr(GError) error = NULL;
  uint64_t rss = 0, pages = 0;

  CU_ASSERT_TRUE(agent_procfs_read_rss(p, 4242, &rss, &error));
  CU_ASSERT(rss > 0 && rss % (uint64_t)sysconf(_SC_PAGESIZE) == 0);
  CU_ASSERT_FALSE(agent_procfs_read_rss(p, 4243, &rss, &error));
  CU_ASSERT_TRUE(g_error_matches(error, AGENT_ERROR, AGENT_ERROR_NOT_FOUND));
  g_clear_error(&error);
  agent_procfs_free(p);

  CU_ASSERT_TRUE(agent_statm_parse(TEXT("2000 512 100 10 0 300 0\n"), &pages, NULL));
  CU_ASSERT_EQUAL(pages, 512);
  CU_ASSERT_FALSE(agent_statm_parse(TEXT(""), &pages, NULL));
  CU_ASSERT_FALSE(agent_statm_parse(TEXT("2000\n"), &pages, NULL));
  CU_ASSERT_FALSE(agent_statm_parse(TEXT("2000 x 1\n"), &pages, &error));
  CU_ASSERT_TRUE(g_error_matches(error, AGENT_ERROR, AGENT_ERROR_INVALID));
  CU_ASSERT_FALSE(agent_statm_parse(TEXT("1 99999999999999999999999 1\n"), &pages, NULL));

  /* The live kernel: our own RSS. */
  p = agent_procfs_new("/");
  CU_ASSERT_TRUE(agent_procfs_read_rss(p, getpid(), &rss, NULL));
  CU_ASSERT(rss > 0);
  agent_procfs_free(p);
}

/* The running kernel, through root "/": whatever it says must parse. */
static void test_live_kernel(void) {
  AgentProcfs *p = agent_procfs_new("/");
  g_autoptr(GError) error = NULL;
  AgentMeminfo mi;
  AgentVmstat vm;

  CU_ASSERT_TRUE(agent_procfs_read_meminfo(p, &mi, &error));
  CU_ASSERT(mi.mem_total_bytes > 0 && mi.mem_available_bytes <= mi.mem_total_bytes);
  CU_ASSERT_TRUE(agent_procfs_read_vmstat(p, &vm, NULL));
  agent_procfs_free(p);
}

int main(int argc, char **argv) {
  CU_pSuite s;

  fixtures = argc > 1 ? argv[1] : g_getenv("SHRINKD_TEST_PROC");
  if (!fixtures || !g_file_test(fixtures, G_FILE_TEST_IS_DIR)) {
    fprintf(stderr, "usage: %s FIXTURE_DIR (tests/data/proc), or set SHRINKD_TEST_PROC\n", argv[0]);
    return 2;
  }
  if (CU_initialize_registry() != CUE_SUCCESS)
    return 2;
  s = CU_add_suite("procfs", NULL, NULL);
  CU_add_test(s, "meminfo: captured and edge files", test_meminfo_files);
  CU_add_test(s, "meminfo: refused files", test_meminfo_failures);
  CU_add_test(s, "vmstat: balloon counters", test_vmstat_files);
  CU_add_test(s, "pressure/memory", test_psi_files);
  CU_add_test(s, "parsers on raw buffers", test_parse_buffers);
  CU_add_test(s, "paths under a root", test_paths);
  CU_add_test(s, "statm: RSS of a process", test_statm);
  CU_add_test(s, "the live kernel parses", test_live_kernel);
  return cunit_run_all();
}
