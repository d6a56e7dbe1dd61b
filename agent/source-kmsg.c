/* SPDX-License-Identifier: MIT */
/*
 * The kernel log source (see source.h).
 *
 * When the balloon driver cannot get pages it logs "Out of puff! Can't get
 * N pages" (rate-limited, about every 200 ms while it retries): the
 * clearest sign of a stall, about 250 ms after the host's command. The
 * source reads /dev/kmsg from its end without blocking. Every kernel
 * message wakes it, so it matches the text and passes on only these lines
 * and the OOM killer's "Killed process" lines.
 *
 * The file is read as a stream of lines, which covers both /dev/kmsg (one
 * record per read(), continuation lines starting with a space) and a FIFO
 * (tests). A FIFO is opened read-write so that it never reports end of
 * file when a writer leaves.
 */
#include "source.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define KMSG_DEFAULT_PATH "/dev/kmsg"
/* A /dev/kmsg read needs room for a whole record (text up to 1 KiB plus
 * its dictionary); longer lines in a FIFO are dropped. */
#define LINE_MAX_BYTES    8192

typedef struct {
  AgentSource base;
  char *path;
  int fd;
  GSource *watch;
  char line[LINE_MAX_BYTES];
  char buf[LINE_MAX_BYTES]; /* read into: not on the stack (see kmsg_start) */
  size_t line_len;
  bool line_overflow; /* dropping the rest of a line too long */
  uint64_t stalls;
  uint64_t oom_kills;
  uint64_t lost; /* times records were overwritten before we read them */
} KmsgSource;

/* Is [p, end) a /dev/kmsg prefix "prio,seq,usec,flags" (before its ';')? */
static bool is_record_prefix(const char *p, const char *end) {
  unsigned commas = 0;

  if (p == end || !g_ascii_isdigit(*p))
    return FALSE;
  for (; p < end; p++) {
    if (*p == ',')
      commas++;
    else if (!g_ascii_isalnum(*p) && *p != '-')
      return FALSE;
  }
  return commas >= 3;
}

AgentKmsgKind agent_kmsg_classify(const char *record, size_t len, const char **text,
                                  size_t *text_len) {
  const char *end = memchr(record, '\n', len);
  const char *t = record, *semi;

  if (!end)
    end = record + len;
  semi = memchr(record, ';', (size_t)(end - record));
  if (semi && is_record_prefix(record, semi))
    t = semi + 1;
  if (text)
    *text = t;
  if (text_len)
    *text_len = (size_t)(end - t);
  if (memmem(t, (size_t)(end - t), "Out of puff!", 12))
    return AGENT_KMSG_STALL;
  /* "Out of memory: Killed process N (comm) ..." and the memcg variant
   * "Memory cgroup out of memory: Killed process ...". */
  if (memmem(t, (size_t)(end - t), "Killed process ", 15))
    return AGENT_KMSG_OOM_KILL;
  return AGENT_KMSG_OTHER;
}

static void handle_line(KmsgSource *self, const char *line, size_t len) {
  AgentSourceEvent ev = {0};
  const char *text;
  size_t text_len;
  g_autofree char *copy = NULL;

  if (len == 0 || line[0] == ' ')
    return; /* a continuation (dictionary) line */
  switch (agent_kmsg_classify(line, len, &text, &text_len)) {
  case AGENT_KMSG_STALL:
    self->stalls++;
    ev.kind = AGENT_SOURCE_EVENT_STALL;
    break;
  case AGENT_KMSG_OOM_KILL:
    self->oom_kills++;
    ev.kind = AGENT_SOURCE_EVENT_OOM_KILL;
    break;
  case AGENT_KMSG_OTHER: return;
  }
  copy = g_strndup(text, text_len);
  ev.text = copy;
  agent_source_emit(&self->base, &ev);
}

/* Splits @n new bytes into lines. */
static void take_bytes(KmsgSource *self, const char *buf, size_t n) {
  while (n > 0) {
    const char *nl = memchr(buf, '\n', n);
    size_t chunk = nl ? (size_t)(nl - buf) : n;

    if (!self->line_overflow) {
      if (self->line_len + chunk <= sizeof(self->line)) {
        memcpy(self->line + self->line_len, buf, chunk);
        self->line_len += chunk;
      } else {
        self->line_overflow = TRUE;
      }
    }
    if (!nl) /* the rest comes with the next read */
      return;
    if (!self->line_overflow)
      handle_line(self, self->line, self->line_len);
    self->line_len = 0;
    self->line_overflow = FALSE;
    buf = nl + 1;
    n -= chunk + 1;
  }
}

static void kmsg_stop(AgentSource *base);

static gboolean on_readable(int fd, GIOCondition condition, gpointer data) {
  KmsgSource *self = data;

  for (;;) {
    ssize_t n = read(fd, self->buf, sizeof(self->buf));

    if (n > 0) {
      take_bytes(self, self->buf, (size_t)n);
      continue;
    }
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && errno == EPIPE) {
      /* Records were overwritten before we read them; the next read
       * goes on with the oldest still there. */
      self->lost++;
      continue;
    }
    if (n < 0 && errno == EAGAIN)
      return G_SOURCE_CONTINUE;
    /* End of file or a real error: without this the loop would spin. */
    g_warning("kmsg: %s: %s; no stall detection from the kernel log from now on", self->path,
              n == 0 ? "end of file" : g_strerror(errno));
    agent_source_set_status(&self->base, FALSE, "none", "%s: %s", self->path,
                            n == 0 ? "end of file" : g_strerror(errno));
    g_source_unref(self->watch);
    self->watch = NULL;
    close(self->fd);
    self->fd = -1;
    return G_SOURCE_REMOVE;
  }
}

static void kmsg_start(AgentSource *base) {
  KmsgSource *self = (KmsgSource *)base;
  struct stat st;
  int flags = O_RDONLY;
  int e;

  if (stat(self->path, &st) == 0 && S_ISFIFO(st.st_mode))
    flags = O_RDWR;
  self->fd = open(self->path, flags | O_NONBLOCK | O_CLOEXEC);
  if (self->fd < 0) {
    e = errno;
    g_warning("kmsg: cannot read %s: %s; no stall detection from the kernel log (a balloon "
              "that stops growing still counts)",
              self->path, g_strerror(e));
    agent_source_set_status(base, FALSE, "none", "cannot open %s: %s", self->path, g_strerror(e));
    return;
  }
  if (fstat(self->fd, &st) == 0 && S_ISREG(st.st_mode)) {
    /* A regular file would be readable forever: a busy loop. */
    g_warning("kmsg: %s is a regular file, not the kernel log or a FIFO; ignored", self->path);
    agent_source_set_status(base, FALSE, "none", "%s is a regular file", self->path);
    close(self->fd);
    self->fd = -1;
    return;
  }
  /* Only what is logged from now on matters. */
  if (lseek(self->fd, 0, SEEK_END) < 0 && errno != ESPIPE)
    g_debug("kmsg: seeking to the end of %s: %s", self->path, g_strerror(errno));
  /* The first "Out of puff" line comes when the guest has no memory to
   * spare: a page first touched then may call the OOM killer. Touch the
   * buffers now (the agent locks what it touched). */
  memset(self->line, 0, sizeof(self->line));
  memset(self->buf, 0, sizeof(self->buf));
  self->line_len = 0;
  self->line_overflow = FALSE;
  self->watch =
      agent_source_watch_fd(base, self->fd, G_IO_IN | G_IO_ERR | G_IO_HUP, on_readable, self);
  agent_source_set_status(base, TRUE, "read",
                          "matching \"Out of puff\" (balloon stalls) and OOM kills in %s",
                          self->path);
}

static void kmsg_stop(AgentSource *base) {
  KmsgSource *self = (KmsgSource *)base;

  agent_source_drop(&self->watch);
  if (self->fd >= 0)
    close(self->fd);
  self->fd = -1;
  agent_source_set_status(base, FALSE, "none", "stopped");
}

static void kmsg_finalize(AgentSource *base) {
  KmsgSource *self = (KmsgSource *)base;

  g_free(self->path);
  g_free(self);
}

static const AgentSourceClass kmsg_class = {
    .name = "kmsg",
    .start = kmsg_start,
    .stop = kmsg_stop,
    .finalize = kmsg_finalize,
};

AgentSource *agent_source_kmsg_new(const AgentSourceEnv *env, const char *path) {
  KmsgSource *self = g_new0(KmsgSource, 1);

  agent_source_init(&self->base, &kmsg_class, env);
  self->path = g_strdup(path && *path ? path : KMSG_DEFAULT_PATH);
  self->fd = -1;
  return &self->base;
}

void agent_source_kmsg_counts(const AgentSource *base, uint64_t *stalls, uint64_t *oom_kills) {
  const KmsgSource *self = (const KmsgSource *)base;

  if (stalls)
    *stalls = self->stalls;
  if (oom_kills)
    *oom_kills = self->oom_kills;
}
