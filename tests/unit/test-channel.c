/* SPDX-License-Identifier: MIT */
/*
 * The host channel's transport (agent/channel.c) in-process, so that the
 * sanitizers see it: the test is the host on a unix socket the channel
 * connects to, or on a pty; the main loop is iterated by hand. Requests
 * split byte by byte, framing errors and recovery, a host that never
 * reads (bounded queue, write timeout, reading resumes), a host that goes
 * away mid-answer and one that half-closes, a path that appears later, a
 * serial line in raw mode, the channel freed while a command runs.
 *
 * argv[1]: a proc root (tests/data/proc/...) for the commands' figures.
 */
#include "cunit-run.h"

#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "channel.h"
#include "commands.h"
#include "errors.h"
#include "procfs.h"
#include "registry.h"
#include "round.h"

static const char *proc_root = "/";

typedef struct {
  char *dir;
  char *path;
  int listen_fd;
  int conn; /* the host's end */
  AgentProcfs *procfs;
  AgentRegistry *registry;
  AgentRounds *rounds;
  AgentCommands *commands;
  AgentChannel *ch;
  GString *in; /* what the host read and has not consumed */
} Env;

static Env E;

/* Runs what is ready in the main loop, for about @ms. */
static void spin(int ms) {
  gint64 end = g_get_monotonic_time() + (gint64)ms * 1000;

  do {
    while (g_main_context_iteration(NULL, FALSE))
      ;
    g_usleep(1000);
  } while (g_get_monotonic_time() < end);
}

static int listen_on(const char *path) {
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

  g_strlcpy(sa.sun_path, path, sizeof(sa.sun_path));
  CU_ASSERT_FATAL(fd >= 0);
  CU_ASSERT_FATAL(bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
  CU_ASSERT_FATAL(listen(fd, 4) == 0);
  return fd;
}

/* Accepts the channel's connection, iterating the loop meanwhile. */
static int host_accept(int timeout_ms) {
  gint64 end = g_get_monotonic_time() + (gint64)timeout_ms * 1000;

  while (g_get_monotonic_time() < end) {
    struct pollfd p = {E.listen_fd, POLLIN, 0};

    while (g_main_context_iteration(NULL, FALSE))
      ;
    if (poll(&p, 1, 2) == 1) {
      int c = accept4(E.listen_fd, NULL, NULL, SOCK_CLOEXEC);

      if (E.conn >= 0)
        close(E.conn);
      E.conn = c;
      g_string_truncate(E.in, 0);
      return c;
    }
  }
  return -1;
}

/* Reads what is there into E.in, without blocking. */
static void host_take(void) {
  char buf[65536];
  ssize_t n;

  while ((n = recv(E.conn, buf, sizeof(buf), MSG_DONTWAIT)) > 0)
    g_string_append_len(E.in, buf, n);
}

/* Writes all of @data, running the loop and reading meanwhile (the channel
 * runs in this thread: a blocking write would wait for it forever). */
static void host_send(const void *data, gsize len) {
  const char *p = data;
  gint64 end = g_get_monotonic_time() + 10 * G_USEC_PER_SEC;

  while (len > 0) {
    ssize_t n = send(E.conn, p, len, MSG_DONTWAIT | MSG_NOSIGNAL);

    if (n > 0) {
      p += n;
      len -= (gsize)n;
      continue;
    }
    CU_ASSERT_FATAL(n < 0 && errno == EAGAIN && g_get_monotonic_time() < end);
    while (g_main_context_iteration(NULL, FALSE))
      ;
    host_take();
    g_usleep(500);
  }
}

#define SEND(lit) host_send(lit, sizeof(lit) - 1)

/* Reads until @in holds a newline (or @timeout_ms pass), iterating the
 * loop. Returns the line without its newline (g_free), or NULL. */
static char *host_line(int timeout_ms) {
  gint64 end = g_get_monotonic_time() + (gint64)timeout_ms * 1000;

  for (;;) {
    char *nl = memchr(E.in->str, '\n', E.in->len);
    struct pollfd p = {E.conn, POLLIN, 0};
    char buf[65536];
    ssize_t n;

    if (nl) {
      char *line = g_strndup(E.in->str, (gsize)(nl - E.in->str));

      g_string_erase(E.in, 0, (gssize)(nl - E.in->str) + 1);
      return line;
    }
    if (g_get_monotonic_time() >= end)
      return NULL;
    while (g_main_context_iteration(NULL, FALSE))
      ;
    if (poll(&p, 1, 2) == 1) {
      n = read(E.conn, buf, sizeof(buf));
      if (n <= 0)
        return NULL;
      g_string_append_len(E.in, buf, n);
    }
  }
}

/* The class of an error line, "return" for a return, "?" otherwise. */
static char *line_kind(const char *line) {
  const char *c;

  if (!line)
    return g_strdup("(none)");
  if (g_str_has_prefix(line, "{\"return\""))
    return g_strdup("return");
  c = strstr(line, "\"class\":\"");
  if (!c)
    return g_strdup("?");
  c += 9;
  return g_strndup(c, strcspn(c, "\""));
}

static void expect_kind(const char *want) {
  g_autofree char *line = host_line(3000);
  g_autofree char *kind = line_kind(line);

  if (strcmp(kind, want) != 0)
    fprintf(stderr, "\n    got %s (%s), want %s\n", kind, line ? line : "", want);
  CU_ASSERT_STRING_EQUAL(kind, want);
}

/* 0xFF + guest-sync-delimited; skips to the channel's 0xFF. */
static gboolean host_sync(guint id) {
  g_autofree char *req =
      g_strdup_printf("\xff{\"execute\":\"guest-sync-delimited\",\"arguments\":{\"id\":%u}}\n", id);
  g_autofree char *want = g_strdup_printf("\xff{\"return\":%u}", id);

  host_send(req, strlen(req));
  for (int i = 0; i < 100000; i++) {
    g_autofree char *line = host_line(5000);
    const char *ff;

    if (!line)
      return FALSE;
    ff = strrchr(line, '\xff');
    if (ff && strcmp(ff, want) == 0)
      return TRUE;
  }
  return FALSE;
}

static void env_up(const AgentChannelConfig *cfg, gboolean listen_now) {
  memset(&E, 0, sizeof(E));
  E.conn = -1;
  E.listen_fd = -1;
  E.in = g_string_new(NULL);
  E.dir = g_dir_make_tmp("shrinkd-chan-XXXXXX", NULL);
  E.path = g_build_filename(E.dir, "host.sock", NULL);
  if (listen_now)
    E.listen_fd = listen_on(E.path);
  E.procfs = agent_procfs_new(proc_root);
  E.registry = agent_registry_new(64);
  E.rounds = agent_rounds_new(E.registry, E.procfs, &(AgentRoundConfig){0});
  E.commands = agent_commands_new(E.registry, E.rounds, E.procfs, 100);
  E.ch = agent_channel_new_path(E.path, E.commands, cfg);
  if (listen_now)
    CU_ASSERT_FATAL(host_accept(3000) >= 0);
}

static void env_down(void) {
  agent_channel_free(E.ch);
  spin(5); /* answers that come now are dropped */
  agent_commands_free(E.commands);
  agent_rounds_free(E.rounds);
  agent_registry_free(E.registry);
  agent_procfs_free(E.procfs);
  if (E.conn >= 0)
    close(E.conn);
  if (E.listen_fd >= 0)
    close(E.listen_fd);
  g_unlink(E.path);
  g_rmdir(E.dir);
  g_free(E.path);
  g_free(E.dir);
  g_string_free(E.in, TRUE);
}

/* ---- the tests ---- */

static void test_commands_and_split_requests(void) {
  static const char ping[] = "{\"execute\":\"guest-ping\"}";
  AgentChannelStats st;
  g_autofree char *line = NULL;

  env_up(NULL, TRUE);
  CU_ASSERT(host_sync(1));
  SEND("{\"execute\":\"guest-ping\"}\n");
  line = host_line(3000);
  CU_ASSERT_STRING_EQUAL(line, "{\"return\":{}}");
  /* One byte at a time, the loop running in between. */
  for (gsize i = 0; i < sizeof(ping) - 1; i++) {
    host_send(ping + i, 1);
    spin(1);
  }
  expect_kind("return");
  /* Several in one write, answered in order. */
  SEND("{\"execute\":\"guest-sync\",\"arguments\":{\"id\":1}}{\"execute\":\"guest-sync\","
       "\"arguments\":{\"id\":2}}\n{\"execute\":\"guest-info\"}");
  g_free(line);
  line = host_line(3000);
  CU_ASSERT_STRING_EQUAL(line, "{\"return\":1}");
  g_free(line);
  line = host_line(3000);
  CU_ASSERT_STRING_EQUAL(line, "{\"return\":2}");
  expect_kind("return");
  agent_channel_get_stats(E.ch, &st);
  CU_ASSERT(st.connected);
  CU_ASSERT_EQUAL(st.sessions, 1);
  CU_ASSERT_EQUAL(st.requests, 6);
  CU_ASSERT_EQUAL(st.resyncs, 1);
  CU_ASSERT_STRING_EQUAL(agent_channel_name(E.ch), E.path);
  env_down();
}

static void test_framing_errors_and_recovery(void) {
  g_autoptr(GString) big = g_string_new("{\"execute\":\"guest-ping\",\"arguments\":{\"s\":\"");
  AgentChannelStats st;

  env_up(NULL, TRUE);
  SEND("garbage\x01\x02 {\"execute\":\"guest-ping\"}");
  expect_kind("GenericError");
  expect_kind("return");
  for (int i = 0; i < 100000; i++)
    g_string_append_c(big, 'x');
  g_string_append(big, "\"}}{\"execute\":\"guest-ping\"}");
  host_send(big->str, big->len);
  expect_kind("GenericError");
  expect_kind("return");
  SEND("{\"execute\":\"nope\"}{\"execute\":\"guest-sync\"}{\"execute\": ]");
  expect_kind("CommandNotFound");
  expect_kind("InvalidParameter");
  expect_kind("GenericError");
  /* A partial object, then a resync. */
  SEND("{\"execute\":\"guest-ping\",\"arguments\":{");
  CU_ASSERT(host_sync(7));
  agent_channel_get_stats(E.ch, &st);
  CU_ASSERT_EQUAL(st.frame_errors, 2);
  env_down();
}

static void test_host_that_never_reads(void) {
  const AgentChannelConfig cfg = {.out_max_bytes = 64 * 1024, .write_timeout_ms = 100};
  static const char status[] = "{\"execute\":\"shrinkd-status\"}\n";
  AgentChannelStats st;
  gsize sent = 0;
  int flags;

  env_up(&cfg, TRUE);
  flags = fcntl(E.conn, F_GETFL);
  fcntl(E.conn, F_SETFL, flags | O_NONBLOCK);
  /* 1.5 s of requests, never a byte read. */
  for (gint64 end = g_get_monotonic_time() + 1500000; g_get_monotonic_time() < end;) {
    ssize_t n = write(E.conn, status, sizeof(status) - 1);

    if (n > 0)
      sent += (gsize)n;
    while (g_main_context_iteration(NULL, FALSE))
      ;
    if (n < 0)
      g_usleep(1000);
  }
  agent_channel_get_stats(E.ch, &st);
  fprintf(stderr,
          "\n    sent %zu KiB; %" G_GUINT64_FORMAT " requests run, %" G_GUINT64_FORMAT
          " answers dropped, %" G_GUINT64_FORMAT " written  ",
          sent / 1024, st.requests, st.dropped, st.answers);
  CU_ASSERT(st.dropped > 0);
  CU_ASSERT(st.requests > 0);
  /* Reading stopped while answers waited: far fewer requests run than
   * 1.5 s of a loop that reads at once would run. */
  CU_ASSERT(st.requests < 20000);
  fcntl(E.conn, F_SETFL, flags);
  /* The host reads again: it resynchronises. */
  CU_ASSERT(host_sync(99));
  env_down();
}

/* Many small answers: the bound counts what they hold in memory, not their
 * text (159 000 pings of 15 bytes once held 24 MB under a 1 MiB bound). */
static void test_small_answers_bounded_by_memory(void) {
  const AgentChannelConfig cfg = {.out_max_bytes = 64 * 1024, .write_timeout_ms = 60000};
  static const char ping[] = "{\"execute\":\"guest-ping\"}\n";
  AgentChannelStats st;
  guint64 queued;
  int flags;

  env_up(&cfg, TRUE);
  flags = fcntl(E.conn, F_GETFL);
  fcntl(E.conn, F_SETFL, flags | O_NONBLOCK);
  for (gint64 end = g_get_monotonic_time() + 1500000; g_get_monotonic_time() < end;) {
    ssize_t n = write(E.conn, ping, sizeof(ping) - 1);

    while (g_main_context_iteration(NULL, FALSE))
      ;
    if (n < 0)
      g_usleep(1000);
  }
  agent_channel_get_stats(E.ch, &st);
  queued = st.requests - st.dropped - st.answers;
  fprintf(stderr, "\n    %" G_GUINT64_FORMAT " pings run, %" G_GUINT64_FORMAT " answers written, %"
          G_GUINT64_FORMAT " dropped, %" G_GUINT64_FORMAT " queued  ",
          st.requests, st.answers, st.dropped, queued);
  CU_ASSERT(st.answers > 0);
  /* Each answer holds its text, its record and its queue link: at least
   * 80 bytes of the 64 KiB. */
  CU_ASSERT(queued > 0);
  CU_ASSERT(queued <= 64 * 1024 / 80);
  fcntl(E.conn, F_SETFL, flags);
  CU_ASSERT(host_sync(98));
  env_down();
}

static void test_host_goes_away_mid_answer(void) {
  AgentChannelStats st;
  char buf[100];

  env_up(NULL, TRUE);
  for (int i = 0; i < 100; i++)
    SEND("{\"execute\":\"shrinkd-status\"}");
  spin(20);
  close(E.conn);
  E.conn = -1;
  CU_ASSERT_FATAL(host_accept(3000) >= 0);
  CU_ASSERT(host_sync(3));
  /* Reads a little of an answer, then goes. */
  SEND("{\"execute\":\"shrinkd-status\"}");
  spin(20);
  CU_ASSERT(read(E.conn, buf, sizeof(buf)) > 0);
  close(E.conn);
  E.conn = -1;
  CU_ASSERT_FATAL(host_accept(3000) >= 0);
  CU_ASSERT(host_sync(4));
  agent_channel_get_stats(E.ch, &st);
  CU_ASSERT_EQUAL(st.sessions, 3);
  env_down();
}

static void test_half_close(void) {
  g_autofree char *a = NULL;
  g_autofree char *b = NULL;

  env_up(NULL, TRUE);
  SEND("{\"execute\":\"guest-ping\"}{\"execute\":\"guest-sync\",\"arguments\":{\"id\":5}}");
  shutdown(E.conn, SHUT_WR);
  a = host_line(3000);
  b = host_line(3000);
  CU_ASSERT_STRING_EQUAL(a, "{\"return\":{}}");
  CU_ASSERT_STRING_EQUAL(b, "{\"return\":5}");
  /* Then the channel closes and comes back. */
  CU_ASSERT_PTR_NULL(host_line(1000));
  CU_ASSERT_FATAL(host_accept(3000) >= 0);
  CU_ASSERT(host_sync(6));
  env_down();
}

static void test_path_that_appears_later(void) {
  AgentChannelStats st;

  env_up(NULL, FALSE);
  spin(50);
  agent_channel_get_stats(E.ch, &st);
  CU_ASSERT_FALSE(st.connected);
  E.listen_fd = listen_on(E.path);
  CU_ASSERT_FATAL(host_accept(2000) >= 0);
  CU_ASSERT(host_sync(8));
  env_down();
}

static void test_freed_while_a_command_runs(void) {
  env_up(NULL, TRUE);
  /* A round starts from an idle callback: the answer comes after the
   * channel is gone, and is dropped. */
  SEND("{\"execute\":\"shrinkd-shrink\",\"arguments\":{\"target_bytes\":1}}");
  for (int i = 0; i < 50; i++) {
    struct pollfd p = {E.conn, POLLIN, 0};

    g_main_context_iteration(NULL, FALSE);
    if (poll(&p, 1, 1) == 0 && i > 5)
      break;
  }
  env_down();
}

static void test_serial_line(void) {
  int master, slave;
  char name[256];
  char buf[256];
  gsize got = 0;
  AgentChannel *ch;
  static const char want[] = "\xff{\"return\":77}\n{\"return\":{}}\n";
  static const char req[] = "\xff{\"execute\":\"guest-sync-delimited\",\"arguments\":{\"id\":77}}\n"
                            "{\"execute\":\"guest-ping\"}\n";

  memset(&E, 0, sizeof(E));
  E.procfs = agent_procfs_new(proc_root);
  E.registry = agent_registry_new(64);
  E.rounds = agent_rounds_new(E.registry, E.procfs, &(AgentRoundConfig){0});
  E.commands = agent_commands_new(E.registry, E.rounds, E.procfs, 100);
  CU_ASSERT_FATAL(openpty(&master, &slave, name, NULL, NULL) == 0);
  close(slave);
  ch = agent_channel_new_path(name, E.commands, NULL);
  spin(20);
  CU_ASSERT(write(master, req, strlen(req)) == (ssize_t)strlen(req));
  for (gint64 end = g_get_monotonic_time() + 3000000;
       got < sizeof(want) - 1 && g_get_monotonic_time() < end;) {
    struct pollfd p = {master, POLLIN, 0};

    while (g_main_context_iteration(NULL, FALSE))
      ;
    if (poll(&p, 1, 2) == 1) {
      ssize_t n = read(master, buf + got, sizeof(buf) - 1 - got);

      if (n > 0)
        got += (gsize)n;
    }
  }
  buf[got] = '\0';
  /* Raw: no echo of the request, no CR before the newlines. */
  CU_ASSERT_EQUAL(got, sizeof(want) - 1);
  CU_ASSERT(memcmp(buf, want, sizeof(want) - 1) == 0);
  agent_channel_free(ch);
  close(master);
  agent_commands_free(E.commands);
  agent_rounds_free(E.rounds);
  agent_registry_free(E.registry);
  agent_procfs_free(E.procfs);
}

static void test_vsock(void) {
  g_autoptr(GError) error = NULL;
  AgentCommands *cmds = agent_commands_new(NULL, NULL, NULL, 100);
  AgentChannel *ch = agent_channel_new_vsock(47012, cmds, NULL, &error);

  /* Listening works where the kernel has vsock; a host end needs a VM. */
  if (ch) {
    CU_ASSERT_STRING_EQUAL(agent_channel_name(ch), "vsock:47012");
    agent_channel_free(ch);
  } else {
    CU_ASSERT(g_error_matches(error, AGENT_ERROR, AGENT_ERROR_FAILED));
  }
  agent_commands_free(cmds);
}

int main(int argc, char **argv) {
  CU_pSuite suite;

  if (argc > 1)
    proc_root = argv[1];
  signal(SIGPIPE, SIG_IGN);
  g_log_set_always_fatal(G_LOG_LEVEL_CRITICAL);
  if (CU_initialize_registry() != CUE_SUCCESS)
    return 1;
  suite = CU_add_suite("channel", NULL, NULL);
  CU_add_test(suite, "commands, split requests", test_commands_and_split_requests);
  CU_add_test(suite, "framing errors and recovery", test_framing_errors_and_recovery);
  CU_add_test(suite, "a host that never reads", test_host_that_never_reads);
  CU_add_test(suite, "small answers: bounded by their memory", test_small_answers_bounded_by_memory);
  CU_add_test(suite, "a host that goes away mid-answer", test_host_goes_away_mid_answer);
  CU_add_test(suite, "a half-closed host", test_half_close);
  CU_add_test(suite, "a path that appears later", test_path_that_appears_later);
  CU_add_test(suite, "freed while a command runs", test_freed_while_a_command_runs);
  CU_add_test(suite, "a serial line, raw", test_serial_line);
  CU_add_test(suite, "vsock", test_vsock);
  return cunit_run_all();
}
