/* SPDX-License-Identifier: MIT */
/*
 * The kernel log source (see source.h).
 *
 * When the balloon driver cannot get pages it logs "Out of puff! Can't get
 * N pages" (rate-limited, about every 200 ms while it retries): the
 * clearest sign of a stall, about 250 ms after the host's command. The
 * source reads /dev/kmsg from its end without blocking. Every kernel
 * message wakes it, so it matches the text and passes on only these
 * records and the OOM killer's "Killed process" records.
 *
 * Only records the kernel wrote count, because a stall means a hard
 * round: any user can put the driver's words into the log. A process
 * named "Out of puff!" (PR_SET_NAME) that crashes gets the kernel's line
 * "Out of puff![1234]: segfault at ..."; a write to /dev/kmsg makes a
 * record of any text. So (see agent_kmsg_classify()):
 *  - the record's facility must be 0 (kern): the kernel gives whatever
 *    user space writes to /dev/kmsg LOG_USER at least, even when it asks
 *    for facility 0 ("<6>text");
 *  - the words must open the text where only the kernel puts them: the
 *    driver's dev_info() prefix "virtio_balloon virtioN: " before "Out of
 *    puff!", the OOM killer's "Out of memory: " (or memcg, or
 *    oom_kill_allocating_task) before "Killed process ". The kernel lines
 *    that begin with a user's text begin with a task name (comm), at most
 *    15 characters: too short for either prefix;
 *  - the stall record must carry the dictionary dev_info() attaches,
 *    " SUBSYSTEM=virtio" and " DEVICE=+virtio:virtioN" for the same N.
 *    The kernel escapes control characters in a record's text ("\x0a"), so
 *    no text can make dictionary lines of its own.
 *
 * The file is read as a stream of lines: a record is its first line and
 * the dictionary lines after it (they start with a space). /dev/kmsg
 * gives one whole record per read(); a FIFO (tests) may split a record
 * anywhere, so a record is classified again after each of its lines and
 * passed on once, as soon as it qualifies (a stall with its DEVICE line).
 * A FIFO is opened read-write so that it never reports end of file when a
 * writer leaves.
 */
#include "source.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define KMSG_DEFAULT_PATH "/dev/kmsg"
/* A /dev/kmsg read needs room for a whole record (text up to 1 KiB, 4 KiB
 * escaped, plus its dictionary: the kernel's CONSOLE_EXT_LOG_MAX is 8 KiB);
 * a longer record in a FIFO is dropped. */
#define RECORD_MAX_BYTES  8192

typedef struct {
  AgentSource base;
  char *path;
  int fd;
  GSource *watch;
  /* The record being read: its lines so far, each but the last ended by
   * '\n'; the line being read starts at line_start. */
  char record[RECORD_MAX_BYTES];
  char buf[RECORD_MAX_BYTES]; /* read into: not on the stack (see kmsg_start) */
  size_t record_len;
  size_t line_start;
  bool line_overflow; /* dropping the rest of a line too long */
  bool record_taken;  /* the record was passed on (or dropped): ignore the rest */
  uint64_t stalls;
  uint64_t oom_kills;
  uint64_t lost;    /* times records were overwritten before we read them */
} KmsgSource;

/* The words that name a stall or a kill, wherever they are in a text. */
#define STALL_WORDS "Out of puff!"
#define KILL_WORDS  "Killed process "

/* How the kernel's own records begin (see the top of the file). */
#define STALL_PREFIX    "virtio_balloon virtio" /* then N ": " STALL_WORDS */
#define STALL_SUBSYSTEM " SUBSYSTEM=virtio"
#define STALL_DEVICE    " DEVICE=+virtio:virtio" /* then N */
static const char *const kill_prefixes[] = {
    "Out of memory: " KILL_WORDS,
    "Memory cgroup out of memory: " KILL_WORDS,
    "Out of memory (oom_kill_allocating_task): " KILL_WORDS,
};

/* Does [p, p + len) begin with @prefix? */
static bool has_prefix(const char *p, size_t len, const char *prefix) {
  size_t n = strlen(prefix);

  return len >= n && memcmp(p, prefix, n) == 0;
}

/* Is [p, end) exactly @a followed by [b, b + b_len)? */
static bool line_is(const char *p, const char *end, const char *a, const char *b, size_t b_len) {
  size_t n = strlen(a);

  return (size_t)(end - p) == n + b_len && memcmp(p, a, n) == 0 && memcmp(p + n, b, b_len) == 0;
}

/*
 * Parses a /dev/kmsg prefix "prio,seq,usec,flags[,caller=...]" (the part
 * before ';'): TRUE and *@facility if [p, end) is one.
 */
static bool parse_record_prefix(const char *p, const char *end, unsigned *facility) {
  unsigned commas = 0, prio = 0, digits = 0;

  for (; p < end && g_ascii_isdigit(*p); p++, digits++) {
    if (digits >= 9)
      return FALSE; /* no such priority */
    prio = prio * 10 + (unsigned)(*p - '0');
  }
  if (digits == 0)
    return FALSE;
  for (; p < end; p++) {
    if (*p == ',')
      commas++;
    else if (!g_ascii_isalnum(*p) && *p != '-' && *p != '=')
      return FALSE;
  }
  if (commas < 3)
    return FALSE;
  *facility = prio >> 3;
  return TRUE;
}

/*
 * Does the dictionary that starts at @p (the lines after a record's first
 * line, up to @end) name the virtio device whose number is [n, n + n_len)?
 * It must hold both lines dev_printk() writes for it.
 */
static bool dictionary_names_virtio(const char *p, const char *end, const char *n, size_t n_len) {
  bool subsystem = FALSE, device = FALSE;

  while (p < end && *p == ' ') {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    const char *line_end = nl ? nl : end;

    if (line_is(p, line_end, STALL_SUBSYSTEM, "", 0))
      subsystem = TRUE;
    else if (line_is(p, line_end, STALL_DEVICE, n, n_len))
      device = TRUE;
    if (!nl)
      break;
    p = nl + 1;
  }
  return subsystem && device;
}

/* Is [t, end) the balloon driver's text with the dictionary at @dict? */
static bool is_driver_stall(const char *t, const char *end, const char *dict,
                            const char *dict_end) {
  size_t len = (size_t)(end - t);
  const char *n, *p;

  if (!has_prefix(t, len, STALL_PREFIX))
    return FALSE;
  n = p = t + strlen(STALL_PREFIX);
  while (p < end && g_ascii_isdigit(*p) && p - n < 10)
    p++;
  if (p == n || !has_prefix(p, (size_t)(end - p), ": " STALL_WORDS))
    return FALSE;
  return dictionary_names_virtio(dict, dict_end, n, (size_t)(p - n));
}

AgentKmsgKind agent_kmsg_classify(const char *record, size_t len, const char **text,
                                  size_t *text_len) {
  const char *record_end = record + len;
  const char *nl = memchr(record, '\n', len);
  const char *end = nl ? nl : record_end;
  const char *dict = nl ? nl + 1 : record_end;
  const char *t = record, *semi;
  unsigned facility = 1;
  bool kernel = FALSE;
  size_t tlen;

  semi = memchr(record, ';', (size_t)(end - record));
  if (semi && parse_record_prefix(record, semi, &facility)) {
    t = semi + 1;
    kernel = facility == 0;
  }
  tlen = (size_t)(end - t);
  if (text)
    *text = t;
  if (text_len)
    *text_len = tlen;
  if (kernel) {
    if (is_driver_stall(t, end, dict, record_end))
      return AGENT_KMSG_STALL;
    for (size_t i = 0; i < G_N_ELEMENTS(kill_prefixes); i++)
      if (has_prefix(t, tlen, kill_prefixes[i]))
        return AGENT_KMSG_OOM_KILL;
  }
  if (memmem(t, tlen, STALL_WORDS, strlen(STALL_WORDS)) ||
      memmem(t, tlen, KILL_WORDS, strlen(KILL_WORDS)))
    return AGENT_KMSG_REFUSED;
  return AGENT_KMSG_OTHER;
}

/* The record in the buffer is over: another begins, or a blank line. */
static void close_record(KmsgSource *self) {
  const char *text;
  size_t text_len;

  if (!self->record_taken && self->record_len > 0 &&
      agent_kmsg_classify(self->record, self->record_len, &text, &text_len) == AGENT_KMSG_REFUSED) {
    /* Someone may be forging stalls to make us empty the applications:
     * say so once; the text is a user's, so only at debug level. */
    if (self->base.refused++ == 0)
      g_message("kmsg: ignored a record that names a balloon stall or an OOM kill but was not "
                "written by the kernel's balloon driver or OOM killer (more at debug level)");
    g_debug("kmsg: not the kernel's: %.*s", (int)MIN(text_len, 200), text);
  }
  self->record_len = 0;
  self->line_start = 0;
  self->record_taken = FALSE;
}

/* Drops the record in the buffer and the dictionary lines still to come. */
static void drop_record(KmsgSource *self) {
  self->record_len = 0;
  self->line_start = 0;
  self->record_taken = TRUE;
}

/* The line at line_start is complete (without its '\n'). */
static void handle_line(KmsgSource *self) {
  AgentSourceEvent ev = {0};
  const char *text;
  size_t text_len;
  g_autofree char *copy = NULL;

  if (self->record_len == self->line_start) {
    close_record(self); /* a blank line ends a record */
    return;
  }
  if (self->line_start == 0 && self->record[0] == ' ') {
    self->record_len = 0; /* a dictionary line of no record we kept */
    return;
  }
  if (!self->record_taken) {
    switch (agent_kmsg_classify(self->record, self->record_len, &text, &text_len)) {
    case AGENT_KMSG_STALL:
      self->stalls++;
      ev.kind = AGENT_SOURCE_EVENT_STALL;
      break;
    case AGENT_KMSG_OOM_KILL:
      self->oom_kills++;
      ev.kind = AGENT_SOURCE_EVENT_OOM_KILL;
      break;
    case AGENT_KMSG_REFUSED: /* unless its dictionary is still to come */
    case AGENT_KMSG_OTHER: break;
    }
    if (ev.kind == AGENT_SOURCE_EVENT_STALL || ev.kind == AGENT_SOURCE_EVENT_OOM_KILL) {
      self->record_taken = TRUE;
      copy = g_strndup(text, text_len);
      ev.text = copy;
      agent_source_emit(&self->base, &ev);
    }
  }
  if (self->record_len >= sizeof(self->record)) {
    drop_record(self); /* no room for a dictionary line */
    return;
  }
  self->record[self->record_len++] = '\n';
  self->line_start = self->record_len;
}

/* Splits @n new bytes into lines and records. */
static void take_bytes(KmsgSource *self, const char *buf, size_t n) {
  while (n > 0) {
    const char *nl = memchr(buf, '\n', n);
    size_t chunk = nl ? (size_t)(nl - buf) : n;

    /* A line that does not start with a space starts a new record. */
    if (chunk > 0 && !self->line_overflow && self->record_len == self->line_start && buf[0] != ' ')
      close_record(self);
    if (!self->line_overflow) {
      if (self->record_len + chunk <= sizeof(self->record)) {
        memcpy(self->record + self->record_len, buf, chunk);
        self->record_len += chunk;
      } else {
        self->line_overflow = TRUE;
      }
    }
    if (!nl) /* the rest comes with the next read */
      return;
    if (!self->line_overflow) {
      handle_line(self);
    } else if (self->line_start == 0) {
      drop_record(self); /* its first line was too long */
    } else {
      self->record_len = self->line_start; /* drop the dictionary line */
    }
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
  memset(self->record, 0, sizeof(self->record));
  memset(self->buf, 0, sizeof(self->buf));
  self->record_len = 0;
  self->line_start = 0;
  self->line_overflow = FALSE;
  self->record_taken = FALSE;
  self->watch =
      agent_source_watch_fd(base, self->fd, G_IO_IN | G_IO_ERR | G_IO_HUP, on_readable, self);
  agent_source_set_status(base, TRUE, "read",
                          "matching the balloon driver's \"Out of puff\" (stalls) and the OOM "
                          "killer's records in %s",
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

uint64_t agent_source_kmsg_refused(const AgentSource *base) {
  return base->refused;
}
