/* SPDX-License-Identifier: MIT */
/*
 * The kernel log source (agent/source-kmsg.c): which records count as the
 * balloon driver's stall or the OOM killer's kill, and which are refused.
 *  - the real records of two captured guests (tests/vm/captured): every
 *    "Out of puff" record of a stalled guest with its dictionary is a
 *    stall, its OOM kill a kill, nothing else matches; the same stall
 *    records without their dictionary are refused;
 *  - forged records: what an unprivileged user can get into the log (the
 *    segfault line of a process named "Out of puff!" or "Killed process ",
 *    text written to /dev/kmsg, the words in the middle of a line, a stall
 *    with no or the wrong dictionary), in a table and in a file
 *    (tests/data/kmsg/forged.txt, written by hand in the kernel's format:
 *    not yet captured from a guest);
 *  - the source on a FIFO: the captured log line by line and in pieces of
 *    every size, a record split anywhere, one event per record, forged
 *    records counted as refused and never passed on; missing and unusable
 *    paths.
 *
 * Fixtures: argv[1] or SHRINKD_TEST_CAPTURED (tests/vm/captured) and
 * argv[2] or SHRINKD_TEST_KMSG (tests/data/kmsg).
 */
#include "cunit-run.h"
#include <fcntl.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "source.h"

static const char *captured;
static const char *kmsg_data;

static void run_for(int ms) {
  int64_t end = g_get_monotonic_time() + ms * 1000;

  do
    g_main_context_iteration(NULL, FALSE), g_usleep(1000);
  while (g_get_monotonic_time() < end);
}

static char *read_text(const char *dir, const char *rel) {
  g_autofree char *path = g_build_filename(dir, rel, NULL);
  char *text = NULL;

  if (!g_file_get_contents(path, &text, NULL, NULL))
    return NULL;
  return text;
}

/* Splits a /dev/kmsg dump into records: a line and the dictionary lines
 * (starting with a space) after it, joined by '\n'. */
static GPtrArray *split_records(const char *text) {
  GPtrArray *out = g_ptr_array_new_with_free_func(g_free);
  g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
  GString *rec = NULL;

  for (char **l = lines; *l; l++) {
    if (**l == ' ' && rec) {
      g_string_append_c(rec, '\n');
      g_string_append(rec, *l);
      continue;
    }
    if (rec)
      g_ptr_array_add(out, g_string_free(rec, FALSE));
    rec = **l ? g_string_new(*l) : NULL;
  }
  if (rec)
    g_ptr_array_add(out, g_string_free(rec, FALSE));
  return out;
}

static AgentKmsgKind classify(const char *rec) {
  return agent_kmsg_classify(rec, strlen(rec), NULL, NULL);
}

/* ---- captured records ---- */

static void test_captured(void) {
  g_autofree char *stalled = read_text(captured, "stalled-256mib-hog/kmsg.txt");
  g_autofree char *boot = read_text(captured, "idle-1024mib/kmsg.txt");
  g_autofree char *puff = read_text(captured, "stalled-256mib-hog/out-of-puff.txt");
  g_autoptr(GPtrArray) recs = NULL;
  g_autoptr(GPtrArray) boot_recs = NULL;
  g_auto(GStrv) puff_lines = NULL;
  unsigned n_stall = 0, n_oom = 0, n_other = 0, n_refused = 0, n_dict = 0;
  const char *text;
  size_t len;

  CU_ASSERT_PTR_NOT_NULL_FATAL(stalled);
  CU_ASSERT_PTR_NOT_NULL_FATAL(boot);
  CU_ASSERT_PTR_NOT_NULL_FATAL(puff);
  recs = split_records(stalled);
  for (guint i = 0; i < recs->len; i++) {
    const char *r = recs->pdata[i];

    switch (agent_kmsg_classify(r, strlen(r), &text, &len)) {
    case AGENT_KMSG_STALL:
      n_stall++;
      CU_ASSERT_TRUE(
          g_str_has_prefix(text, "virtio_balloon virtio0: Out of puff! Can't get 1 pages"));
      CU_ASSERT_EQUAL(text[len], '\n'); /* the text stops before the dictionary */
      CU_ASSERT_PTR_NOT_NULL(strstr(r, "\n SUBSYSTEM=virtio\n DEVICE=+virtio:virtio0"));
      break;
    case AGENT_KMSG_OOM_KILL:
      n_oom++;
      CU_ASSERT_TRUE(g_str_has_prefix(text, "Out of memory: Killed process 210 (hog)"));
      CU_ASSERT_EQUAL(text[len], '\0');
      break;
    case AGENT_KMSG_REFUSED: n_refused++; break;
    case AGENT_KMSG_OTHER:
      n_other++;
      CU_ASSERT_PTR_NULL(strstr(r, "Out of puff"));
      break;
    }
    if (strchr(r, '\n'))
      n_dict++;
  }
  CU_ASSERT_EQUAL(n_stall, 20);
  CU_ASSERT_EQUAL(n_oom, 1);
  CU_ASSERT_EQUAL(n_refused, 0);
  CU_ASSERT_TRUE(n_other > 400);
  CU_ASSERT_TRUE(n_dict > 20); /* the stalls' and the boot's device messages */

  /* A whole boot log, with its acpi, pci and virtio dictionaries: nothing. */
  boot_recs = split_records(boot);
  CU_ASSERT_TRUE(boot_recs->len > 300);
  for (guint i = 0; i < boot_recs->len; i++)
    CU_ASSERT_EQUAL(classify(boot_recs->pdata[i]), AGENT_KMSG_OTHER);

  /* The driver's records without their dictionary: not enough. */
  puff_lines = g_strsplit(puff, "\n", -1);
  n_refused = 0;
  for (char **l = puff_lines; *l; l++) {
    if (!**l)
      continue;
    CU_ASSERT_EQUAL(classify(*l), AGENT_KMSG_REFUSED);
    n_refused++;
    {
      /* Half the dictionary, or both lines: one trailing newline or none. */
      g_autofree char *half = g_strconcat(*l, "\n SUBSYSTEM=virtio\n", NULL);
      g_autofree char *dev = g_strconcat(*l, "\n DEVICE=+virtio:virtio0", NULL);
      g_autofree char *both =
          g_strconcat(*l, "\n SUBSYSTEM=virtio\n DEVICE=+virtio:virtio0\n", NULL);

      CU_ASSERT_EQUAL(classify(half), AGENT_KMSG_REFUSED);
      CU_ASSERT_EQUAL(classify(dev), AGENT_KMSG_REFUSED);
      CU_ASSERT_EQUAL(classify(both), AGENT_KMSG_STALL);
    }
  }
  CU_ASSERT_EQUAL(n_refused, 20);
}

/* ---- forged records ---- */

#define DICT0 "\n SUBSYSTEM=virtio\n DEVICE=+virtio:virtio0"
#define PUFF  "virtio_balloon virtio0: Out of puff! Can't get 1 pages"

static const struct {
  const char *record;
  AgentKmsgKind kind;
} cases[] = {
    /* The kernel's own, as the driver and the OOM killer write them. */
    {"6,1,2,-;" PUFF DICT0, AGENT_KMSG_STALL},
    {"6,1,2,-;" PUFF DICT0 "\n", AGENT_KMSG_STALL},
    {"6,1,2,-;virtio_balloon virtio12: Out of puff! Can't get 256 pages\n SUBSYSTEM=virtio\n"
     " DEVICE=+virtio:virtio12\n",
     AGENT_KMSG_STALL},
    {"6,1,2,-;" PUFF "\n DEVICE=+virtio:virtio0\n SUBSYSTEM=virtio", AGENT_KMSG_STALL},
    {"6,1,2,-,caller=T42;" PUFF DICT0, AGENT_KMSG_STALL}, /* CONFIG_PRINTK_CALLER */
    {"3,9,9,-;Out of memory: Killed process 7 (x) total-vm:1kB", AGENT_KMSG_OOM_KILL},
    {"3,9,9,c;Memory cgroup out of memory: Killed process 7 (x)", AGENT_KMSG_OOM_KILL},
    {"3,9,9,-;Out of memory (oom_kill_allocating_task): Killed process 7 (x)", AGENT_KMSG_OOM_KILL},
    /* A process named "Out of puff!" (comm: 15 bytes at most) that crashes. */
    {"6,500,1000,-;Out of puff![1234]: segfault at 0 ip 0000000000401005 sp 00007ffc6b2a8e50 "
     "error 6 in forge[401000+1000] likely on CPU 0 (core 0, socket 0)",
     AGENT_KMSG_REFUSED},
    {"6,500,1000,-;Out of puff![1234]: segfault at 0 ip 0000000000401005" DICT0,
     AGENT_KMSG_REFUSED},
    {"6,500,1000,-;Killed process [99]: segfault at 0 ip 0000000000401005", AGENT_KMSG_REFUSED},
    {"6,500,1000,-;Out of memory: [99]: segfault at 0 ip 0000000000401005", AGENT_KMSG_OTHER},
    {"6,500,1000,-;virtio_balloon [99]: segfault at 0 ip 0000000000401005", AGENT_KMSG_OTHER},
    /* Written to /dev/kmsg: facility LOG_USER or another, never 0, even for
     * "<6>..." or "<0>...". */
    {"14,501,1001,-;" PUFF, AGENT_KMSG_REFUSED},
    {"14,501,1001,-;" PUFF DICT0, AGENT_KMSG_REFUSED},
    {"8,501,1001,-;" PUFF DICT0, AGENT_KMSG_REFUSED},
    {"12,502,1002,-;Out of puff! Can't get 1 pages", AGENT_KMSG_REFUSED},
    {"11,503,1003,-;Out of memory: Killed process 1 (init)", AGENT_KMSG_REFUSED},
    {"190,503,1003,-;Out of memory: Killed process 1 (init)", AGENT_KMSG_REFUSED},
    /* A newline written into the text is escaped by the kernel: no dictionary. */
    {"14,504,1004,-;" PUFF "\\x0a SUBSYSTEM=virtio\\x0a DEVICE=+virtio:virtio0",
     AGENT_KMSG_REFUSED},
    /* The words elsewhere in a kernel line. */
    {"6,505,1005,-;hello " PUFF DICT0, AGENT_KMSG_REFUSED},
    {"6,505,1005,-; " PUFF DICT0, AGENT_KMSG_REFUSED},
    {"4,506,1006,-;task x: Out of memory: Killed process 1 (init)", AGENT_KMSG_REFUSED},
    /* The driver's text without or with the wrong dictionary. */
    {"6,507,1007,-;" PUFF, AGENT_KMSG_REFUSED},
    {"6,507,1007,-;" PUFF "\n SUBSYSTEM=virtio\n DEVICE=+virtio:virtio1", AGENT_KMSG_REFUSED},
    {"6,507,1007,-;" PUFF "\n SUBSYSTEM=virtio\n DEVICE=+virtio:virtio00", AGENT_KMSG_REFUSED},
    {"6,507,1007,-;" PUFF "\n SUBSYSTEM=virtio\n DEVICE=+virtio:virtio0 ", AGENT_KMSG_REFUSED},
    {"6,507,1007,-;" PUFF "\n SUBSYSTEM=pci\n DEVICE=+virtio:virtio0", AGENT_KMSG_REFUSED},
    {"6,507,1007,-;" PUFF "\n SUBSYSTEM=virtio\n DEVICE=+pci:0000:00:04.0", AGENT_KMSG_REFUSED},
    {"6,507,1007,-;" PUFF "\nSUBSYSTEM=virtio\nDEVICE=+virtio:virtio0", AGENT_KMSG_REFUSED},
    /* The dictionary of the next record is not this one's. */
    {"6,507,1007,-;" PUFF "\n6,508,1008,-;x" DICT0, AGENT_KMSG_REFUSED},
    {"6,507,1007,-;virtio_balloon virtio: Out of puff!" DICT0, AGENT_KMSG_REFUSED},
    {"6,507,1007,-;virtio_balloon virtio0:Out of puff!" DICT0, AGENT_KMSG_REFUSED},
    /* No record prefix, or a broken one: no facility, no trust. */
    {PUFF DICT0, AGENT_KMSG_REFUSED},
    {"Out of memory: Killed process 1 (init)", AGENT_KMSG_REFUSED},
    {"6,1;" PUFF DICT0, AGENT_KMSG_REFUSED},
    {"6,1,2,x y;" PUFF DICT0, AGENT_KMSG_REFUSED},
    {"x6,1,2,-;" PUFF DICT0, AGENT_KMSG_REFUSED},
    {"0000000006,1,2,-;" PUFF DICT0, AGENT_KMSG_REFUSED}, /* 10 digits: no priority */
    /* Nothing to do with us. */
    {"6,1,2,-;Out of puff", AGENT_KMSG_OTHER},
    {"6,1,2,-;virtio_balloon virtio0: something else" DICT0, AGENT_KMSG_OTHER},
    {"", AGENT_KMSG_OTHER},
    {"6,1,2,-;", AGENT_KMSG_OTHER},
};

static void test_forged(void) {
  const char *text;
  size_t len;

  for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
    AgentKmsgKind k = classify(cases[i].record);

    if (k != cases[i].kind)
      fprintf(stderr, "\n  case %zu: %d, expected %d: %s\n", i, k, cases[i].kind, cases[i].record);
    CU_ASSERT_EQUAL(k, cases[i].kind);
  }
  /* The text: after the prefix, the first line only; all of it when
   * there is no prefix. */
  CU_ASSERT_EQUAL(agent_kmsg_classify("14,3,4,-;Out of puff!\n x=y", 26, &text, &len),
                  AGENT_KMSG_REFUSED);
  CU_ASSERT_EQUAL(len, 12);
  CU_ASSERT_EQUAL(strncmp(text, "Out of puff!", len), 0);
  CU_ASSERT_EQUAL(agent_kmsg_classify("12,3;x Out of puff!", 19, &text, &len), AGENT_KMSG_REFUSED);
  CU_ASSERT_EQUAL(text[0], '1');
  CU_ASSERT_EQUAL(len, 19);
  /* @len bounds the record: the dictionary past it does not count. */
  {
    static const char rec[] = "6,1,2,-;" PUFF DICT0;

    CU_ASSERT_EQUAL(agent_kmsg_classify(rec, sizeof(rec) - 1, NULL, NULL), AGENT_KMSG_STALL);
    CU_ASSERT_EQUAL(agent_kmsg_classify(rec, sizeof(rec) - 2, NULL, NULL), AGENT_KMSG_REFUSED);
  }
}

/* Records as the kernel writes them when processes named "Out of puff!"
 * and "Killed process " crash and user space writes the driver's words to
 * /dev/kmsg (hand-written, see the file's README.txt): none is a stall or
 * a kill. */
static void test_forged_captured(void) {
  g_autofree char *forged = read_text(kmsg_data, "forged.txt");
  g_autoptr(GPtrArray) recs = NULL;
  unsigned n_refused = 0, n_segv = 0, n_user = 0;

  CU_ASSERT_PTR_NOT_NULL_FATAL(forged);
  recs = split_records(forged);
  for (guint i = 0; i < recs->len; i++) {
    const char *r = recs->pdata[i];
    AgentKmsgKind k = classify(r);

    CU_ASSERT_TRUE(k == AGENT_KMSG_OTHER || k == AGENT_KMSG_REFUSED);
    if (k == AGENT_KMSG_REFUSED)
      n_refused++;
    if (strstr(r, "]: segfault at "))
      n_segv++;
    if (atoi(r) >= 8)
      n_user++;
  }
  CU_ASSERT_TRUE(n_segv >= 2);
  CU_ASSERT_TRUE(n_user >= 2);
  CU_ASSERT_TRUE(n_refused >= 4);
}

/* ---- the source on a FIFO ---- */

typedef struct {
  unsigned stalls, ooms, others;
  char *last_text;
} KmsgSeen;

static void kmsg_sink(AgentSource *source, const AgentSourceEvent *ev, gpointer data) {
  KmsgSeen *seen = data;

  (void)source;
  if (ev->kind == AGENT_SOURCE_EVENT_STALL)
    seen->stalls++;
  else if (ev->kind == AGENT_SOURCE_EVENT_OOM_KILL)
    seen->ooms++;
  else
    seen->others++;
  g_free(seen->last_text);
  seen->last_text = g_strdup(ev->text);
}

static void write_all(int fd, const char *p, size_t n) {
  CU_ASSERT_EQUAL(write(fd, p, n), (ssize_t)n);
}

/* Writes @text to @fd in pieces of @piece bytes, letting the source read
 * after each. */
static void feed(int fd, const char *text, size_t piece) {
  size_t n = strlen(text);

  for (size_t off = 0; off < n; off += piece) {
    write_all(fd, text + off, MIN(piece, n - off));
    while (g_main_context_iteration(NULL, FALSE))
      ;
  }
  run_for(0);
}

static void test_source(void) {
  g_autofree char *dir = g_dir_make_tmp("shrinkd-kmsg-XXXXXX", NULL);
  g_autofree char *fifo = g_build_filename(dir, "kmsg", NULL);
  g_autofree char *regular = g_build_filename(dir, "plain", NULL);
  g_autofree char *missing = g_build_filename(dir, "missing", NULL);
  g_autofree char *all = read_text(captured, "stalled-256mib-hog/kmsg.txt");
  g_autofree char *forged = read_text(kmsg_data, "forged.txt");
  g_auto(GStrv) lines = NULL;
  static const size_t pieces[] = {1, 7, 100, 4096};
  AgentSourceEnv env = {0};
  AgentSourceStatus st;
  AgentSource *s;
  KmsgSeen seen = {0};
  uint64_t stalls, ooms, refused;
  int wfd;

  CU_ASSERT_PTR_NOT_NULL_FATAL(all);
  CU_ASSERT_PTR_NOT_NULL_FATAL(forged);
  CU_ASSERT_EQUAL_FATAL(mkfifo(fifo, 0600), 0);
  s = agent_source_kmsg_new(&env, fifo);
  agent_source_set_sink(s, kmsg_sink, &seen);
  agent_source_start(s);
  agent_source_get_status(s, &st);
  CU_ASSERT_TRUE(st.active);
  CU_ASSERT_STRING_EQUAL(st.name, "kmsg");
  wfd = open(fifo, O_WRONLY | O_NONBLOCK);
  CU_ASSERT_TRUE_FATAL(wfd >= 0);

  /* The captured log one line per write, as a test writer would. */
  lines = g_strsplit(all, "\n", -1);
  for (char **l = lines; *l; l++) {
    if (**l) {
      g_autofree char *line = g_strconcat(*l, "\n", NULL);

      feed(wfd, line, strlen(line));
    }
  }
  CU_ASSERT_EQUAL(seen.stalls, 20);
  CU_ASSERT_EQUAL(seen.ooms, 1);
  CU_ASSERT_STRING_EQUAL(seen.last_text ? seen.last_text : "",
                         "Out of memory: Killed process 210 (hog) total-vm:820188kB, "
                         "anon-rss:819212kB, file-rss:4kB, shmem-rss:648kB, UID:0 "
                         "pgtables:1640kB oom_score_adj:0");
  /* ...and in pieces of every size: a record cut anywhere. */
  for (size_t i = 0; i < G_N_ELEMENTS(pieces); i++)
    feed(wfd, all, pieces[i]);
  CU_ASSERT_EQUAL(seen.stalls, 100);
  CU_ASSERT_EQUAL(seen.ooms, 5);
  CU_ASSERT_EQUAL(seen.others, 0);

  /* A stall counts when its DEVICE line comes, once. */
  feed(wfd, "6,999,1,-;virtio_balloon virtio0: Out of ", 100);
  feed(wfd, "puff! Can't get 1 pages\n", 100);
  feed(wfd, " SUBSYSTEM=virtio\n", 100);
  CU_ASSERT_EQUAL(seen.stalls, 100);
  feed(wfd, " DEVICE=+virtio:virtio0\n", 100);
  CU_ASSERT_EQUAL(seen.stalls, 101);
  CU_ASSERT_STRING_EQUAL(seen.last_text ? seen.last_text : "", PUFF);
  feed(wfd, " DEVICE=+virtio:virtio0\n SUBSYSTEM=virtio\n", 100);
  CU_ASSERT_EQUAL(seen.stalls, 101);
  refused = agent_source_kmsg_refused(s);
  CU_ASSERT_EQUAL(refused, 0);

  /* Forged records: never passed on, counted as refused once the next
   * record begins. Dictionary lines with no record before them, or after
   * a blank line, belong to nothing. */
  feed(wfd, forged, 4096);
  feed(wfd, "6,1000,1,-;" PUFF "\n\n SUBSYSTEM=virtio\n DEVICE=+virtio:virtio0\n", 100);
  feed(wfd, "6,1001,1,-;Out of puff![77]: segfault at 0\n SUBSYSTEM=virtio\n", 100);
  feed(wfd, " DEVICE=+virtio:virtio0\n", 100);
  feed(wfd, "14,1002,1,-;" PUFF DICT0 "\n", 100);
  feed(wfd, "6,1003,1,-;the end\n", 100);
  CU_ASSERT_EQUAL(seen.stalls, 101);
  CU_ASSERT_EQUAL(seen.ooms, 5);
  CU_ASSERT_EQUAL(seen.others, 0);
  CU_ASSERT_TRUE(agent_source_kmsg_refused(s) >= 3 + 4);

  /* A record too long is dropped, its dictionary with it; the next counts. */
  {
    g_autofree char *big = g_strnfill(10000, 'x');
    g_autofree char *rec = g_strconcat("6,1004,1,-;" PUFF, big, DICT0 "\n", NULL);

    feed(wfd, rec, 4096);
    CU_ASSERT_EQUAL(seen.stalls, 101);
    feed(wfd, "6,1005,1,-;" PUFF DICT0 "\n", 4096);
    CU_ASSERT_EQUAL(seen.stalls, 102);
  }
  agent_source_kmsg_counts(s, &stalls, &ooms);
  CU_ASSERT_EQUAL(stalls, 102);
  CU_ASSERT_EQUAL(ooms, 5);
  /* A writer leaving is no end of file for the source. */
  close(wfd);
  run_for(20);
  agent_source_get_status(s, &st);
  CU_ASSERT_TRUE(st.active);
  agent_source_free(s);
  g_unlink(fifo);

  /* Missing, and a regular file: inactive, saying why. */
  s = agent_source_kmsg_new(&env, missing);
  agent_source_start(s);
  agent_source_get_status(s, &st);
  CU_ASSERT_FALSE(st.active);
  CU_ASSERT_PTR_NOT_NULL(strstr(st.reason, "No such file"));
  agent_source_free(s);
  g_file_set_contents(regular, "6,1,1,-;Out of puff!\n", -1, NULL);
  s = agent_source_kmsg_new(&env, regular);
  agent_source_start(s);
  agent_source_get_status(s, &st);
  CU_ASSERT_FALSE(st.active);
  CU_ASSERT_PTR_NOT_NULL(strstr(st.reason, "regular file"));
  agent_source_free(s);
  g_unlink(regular);
  g_rmdir(dir);
  g_free(seen.last_text);
}

int main(int argc, char **argv) {
  CU_pSuite s;

  captured = argc > 1 ? argv[1] : g_getenv("SHRINKD_TEST_CAPTURED");
  kmsg_data = argc > 2 ? argv[2] : g_getenv("SHRINKD_TEST_KMSG");
  if (!captured || !kmsg_data) {
    fprintf(stderr,
            "usage: %s CAPTURED_DIR KMSG_DATA_DIR (or SHRINKD_TEST_CAPTURED, "
            "SHRINKD_TEST_KMSG)\n",
            argv[0]);
    return 2;
  }
  g_log_set_always_fatal(G_LOG_FATAL_MASK);
  if (CU_initialize_registry() != CUE_SUCCESS)
    return 1;
  s = CU_add_suite("kmsg", NULL, NULL);
  CU_add_test(s, "captured records: stalls, a kill, a boot", test_captured);
  CU_add_test(s, "forged records refused", test_forged);
  CU_add_test(s, "forged records from a file", test_forged_captured);
  CU_add_test(s, "the source on a FIFO", test_source);
  return cunit_run_all();
}
