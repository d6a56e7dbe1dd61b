/* SPDX-License-Identifier: MIT */
/*
 * The host channel's transports and sessions (see channel.h).
 *
 * One AgentChannel is one transport endpoint. The parts, in this order:
 * the output queue (answers waiting for the host), the input side (read,
 * frame, run one command at a time), sessions and links (an open fd,
 * watched edge-triggered), and the transports that make links: a path
 * (character device or unix socket, reopened with back-off, waited for
 * with inotify) and a vsock listener.
 */
#include "channel.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/vm_sockets.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/inotify.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <termios.h>
#include <unistd.h>

#include "channel-frame.h"
#include "errors.h"
#include "loop.h"
#include "memory.h"
#include "procfs.h"

typedef enum {
  LINK_NONE,
  LINK_CHARDEV,     /* a character device that is not a virtio port (a tty) */
  LINK_VIRTIO_PORT, /* POLLHUP and read() == 0 mean: no host end right now */
  LINK_UNIX,        /* a unix stream socket we connected */
  LINK_VSOCK,       /* a vsock connection we accepted */
} LinkKind;

static const char *const link_kind_names[] = {
    [LINK_NONE] = "none",
    [LINK_CHARDEV] = "character device",
    [LINK_VIRTIO_PORT] = "virtio-serial port",
    [LINK_UNIX] = "unix socket",
    [LINK_VSOCK] = "vsock",
};

/* The command running for the host. Its answer may come after its session
 * ended, or after the channel is gone: then ch is NULL and the answer is
 * dropped. */
typedef struct {
  AgentChannel *ch;
} Pending;

/* An answer on its way out; a newline follows its text on the wire. */
typedef struct {
  char *text;
  gsize len;
  gsize off; /* bytes of text and newline written */
} OutAnswer;

struct AgentChannel {
  AgentCommands *commands;
  AgentChannelConfig cfg;
  char *sys_root;
  char *name;
  char *path; /* path transports; NULL for vsock */
  AgentChannelStats stats;

  int listen_fd; /* vsock */
  guint listen_id;
  guint accept_retry_id;

  /* The link's fd sits in an epoll set, edge-triggered; the loop watches
   * the set for the channel's whole life (an empty set never wakes it). */
  int epfd;
  guint ep_id;
  int fd; /* the link; -1 if none */
  LinkKind kind;
  gboolean host_present; /* a virtio port: no POLLHUP at the last look; else: fd >= 0 */
  gboolean read_eof;     /* a socket peer sent all it will */

  /* Reopening a path. */
  guint retry_id;
  guint retry_ms; /* the next back-off */
  int inotify_fd;
  guint inotify_id;
  gboolean said_failing; /* one message per streak of failures */

  /* Input. */
  proto_frame *frame;
  guint8 in[4096];
  gsize in_off, in_len; /* read and not yet framed */
  gboolean in_more;     /* input may be waiting: we stopped before EAGAIN */
  gboolean processing;  /* process_input() is on the stack */
  Pending *pending;     /* the command running, if any */
  guint resume_id;

  /* Output. */
  GQueue out;             /* OutAnswer, oldest first */
  gsize out_bytes;        /* text and newlines queued, not yet written */
  gsize out_cost;         /* the memory they hold: see answer_cost() */
  gboolean out_full;      /* an answer did not fit: read no more until the queue empties */
  gint64 out_progress_us; /* when the host last took bytes (or the queue began) */
  guint out_timer_id;
};

static void link_failed(AgentChannel *ch, int err, const char *what);
static void link_ended(AgentChannel *ch);
static void process_input(AgentChannel *ch);
static void path_try_open(AgentChannel *ch);
static void host_changed(AgentChannel *ch, gboolean present);

static void out_answer_free(OutAnswer *a) {
  g_free(a->text);
  g_free(a);
}

/* ---- output ---- */

/* What a queued answer of @len bytes costs in memory: its text, its
 * OutAnswer and its queue link, each with malloc's header and rounding.
 * The bound counts this, not the text alone: 159 000 pings of 15 bytes
 * each held 24 MB while their text was within 1 MiB. */
static gsize answer_cost(gsize len) {
  return ((len + 1 + 8 + 15) & ~(gsize)15) + 2 * 32;
}

/* Drops every queued answer, saying why at debug level. */
static void drop_queue(AgentChannel *ch, const char *why) {
  guint n = g_queue_get_length(&ch->out);
  gsize bytes = ch->out_bytes;

  if (ch->out_timer_id) {
    g_source_remove(ch->out_timer_id);
    ch->out_timer_id = 0;
  }
  ch->out_full = FALSE;
  if (n == 0)
    return;
  g_debug("host channel %s: %u answer(s), %" G_GSIZE_FORMAT " bytes dropped: %s", ch->name, n,
          bytes, why);
  g_queue_clear_full(&ch->out, (GDestroyNotify)out_answer_free);
  ch->out_bytes = 0;
  ch->out_cost = 0;
  ch->stats.dropped += n;
  if (bytes >= AGENT_MEMORY_RELEASE_MIN)
    agent_memory_release_soon();
}

static gboolean input_blocked(const AgentChannel *ch) {
  return ch->pending || ch->out_full || ch->out_cost >= ch->cfg.out_max_bytes;
}

static gboolean resume_cb(gpointer data) {
  AgentChannel *ch = data;

  ch->resume_id = 0;
  process_input(ch);
  return G_SOURCE_REMOVE;
}

/* Goes on reading later, from the loop: called where reading now could
 * recurse (an answer delivered from a round's end, a flush). */
static void schedule_resume(AgentChannel *ch) {
  if (!ch->resume_id && ch->fd >= 0)
    ch->resume_id = agent_loop_defer(resume_cb, ch);
}

/* Ends a socket session whose peer stopped sending, once everything it
 * asked for is answered and written. */
static void maybe_end_after_eof(AgentChannel *ch) {
  if (ch->fd >= 0 && ch->read_eof && !ch->processing && !ch->pending && ch->in_off == ch->in_len &&
      g_queue_is_empty(&ch->out))
    link_ended(ch);
}

static gboolean out_timeout_cb(gpointer data);

/* Writes what is queued, as far as the fd takes it without blocking; arms
 * or removes the write timeout. May close the link. */
static void link_flush(AgentChannel *ch) {
  static const char newline = '\n';

  while (ch->fd >= 0 && !g_queue_is_empty(&ch->out)) {
    struct iovec iov[32];
    int n = 0;
    ssize_t w;

    for (GList *l = ch->out.head; l && n + 2 <= (int)G_N_ELEMENTS(iov); l = l->next) {
      OutAnswer *a = l->data;

      if (a->off < a->len)
        iov[n++] = (struct iovec){a->text + a->off, a->len - a->off};
      iov[n++] = (struct iovec){(void *)&newline, 1};
    }
    w = writev(ch->fd, iov, n);
    if (w < 0) {
      if (errno == EINTR)
        continue;
      if (errno == EAGAIN)
        break;
      link_failed(ch, errno, "write");
      return;
    }
    ch->out_progress_us = g_get_monotonic_time();
    while (w > 0) {
      OutAnswer *a = g_queue_peek_head(&ch->out);
      gsize left = a->len + 1 - a->off;

      if ((gsize)w < left) {
        a->off += (gsize)w;
        ch->out_bytes -= (gsize)w;
        break;
      }
      w -= (ssize_t)left;
      ch->out_bytes -= left;
      ch->out_cost -= answer_cost(a->len);
      out_answer_free(g_queue_pop_head(&ch->out));
      ch->stats.answers++;
    }
  }
  if (g_queue_is_empty(&ch->out)) {
    ch->out_full = FALSE;
    if (ch->out_timer_id) {
      g_source_remove(ch->out_timer_id);
      ch->out_timer_id = 0;
    }
  } else if (!ch->out_timer_id && ch->fd >= 0) {
    ch->out_timer_id = g_timeout_add(ch->cfg.write_timeout_ms, out_timeout_cb, ch);
  }
  if (!ch->processing) {
    if (ch->in_more && !input_blocked(ch))
      schedule_resume(ch);
    maybe_end_after_eof(ch);
  }
}

/* The host took nothing for write_timeout_ms: what waits is dropped, and
 * reading goes on. Otherwise the timer waits for the rest of the time. */
static gboolean out_timeout_cb(gpointer data) {
  AgentChannel *ch = data;
  gint64 idle_ms = (g_get_monotonic_time() - ch->out_progress_us) / 1000;
  g_autofree char *why = NULL;

  ch->out_timer_id = 0;
  if (idle_ms < (gint64)ch->cfg.write_timeout_ms) {
    ch->out_timer_id =
        g_timeout_add((guint)(ch->cfg.write_timeout_ms - idle_ms), out_timeout_cb, ch);
    return G_SOURCE_REMOVE;
  }
  why = g_strdup_printf("the host read nothing for %" G_GINT64_FORMAT " ms", idle_ms);
  drop_queue(ch, why);
  if (ch->in_more)
    schedule_resume(ch);
  maybe_end_after_eof(ch);
  return G_SOURCE_REMOVE;
}

/* Queues @text (transfer full, @len bytes) as one answer line and writes
 * what it can. An answer that does not fit the bound (and is not alone)
 * is dropped, as is one with no host to take it. */
static void queue_answer(AgentChannel *ch, char *text, gsize len) {
  OutAnswer *a;

  if (ch->fd < 0 || !ch->host_present) {
    g_debug("host channel %s: an answer dropped: no host", ch->name);
    ch->stats.dropped++;
    g_free(text);
    return;
  }
  if (!g_queue_is_empty(&ch->out) && ch->out_cost + answer_cost(len) > ch->cfg.out_max_bytes) {
    /* Once per fill: a host that floods us must not flood the log. */
    if (!ch->out_full)
      g_debug("host channel %s: an answer of %" G_GSIZE_FORMAT " bytes dropped: %" G_GSIZE_FORMAT
              " bytes wait for the host already; reading stops until they are taken or dropped",
              ch->name, len, ch->out_cost);
    ch->out_full = TRUE;
    ch->stats.dropped++;
    g_free(text);
    return;
  }
  a = g_new(OutAnswer, 1);
  a->text = text;
  a->len = len;
  a->off = 0;
  if (g_queue_is_empty(&ch->out))
    ch->out_progress_us = g_get_monotonic_time();
  g_queue_push_tail(&ch->out, a);
  ch->out_bytes += len + 1;
  ch->out_cost += answer_cost(len);
  link_flush(ch);
}

/* ---- input ---- */

static void on_answer(char *text, gsize len, gpointer user_data) {
  Pending *p = user_data;
  AgentChannel *ch = p->ch;

  if (!ch) {
    g_debug("host channel: an answer dropped: its session is over");
    g_free(text);
    return;
  }
  if (ch->pending == p)
    ch->pending = NULL;
  queue_answer(ch, text, len);
  /* An answer that comes later (a round's end) lets input go on. */
  if (!ch->processing && ch->in_more && !input_blocked(ch))
    schedule_resume(ch);
  if (!ch->processing)
    maybe_end_after_eof(ch);
}

static void pending_free(gpointer data) {
  Pending *p = data;

  if (p->ch && p->ch->pending == p)
    p->ch->pending = NULL;
  g_free(p);
}

/* The GenericError answer for a framing error. */
static void frame_error(AgentChannel *ch, proto_frame_event ev) {
  char *text;
  gsize len;

  ch->stats.frame_errors++;
  switch (ev) {
  case PROTO_FRAME_ERR_TOO_BIG:
    text = agent_commands_error_text("GenericError", NULL, &len,
                                     "request larger than %d bytes: discarded to its end or the "
                                     "next 0xFF",
                                     PROTO_FRAME_OBJECT_MAX);
    break;
  case PROTO_FRAME_ERR_TOO_DEEP:
    text = agent_commands_error_text("GenericError", NULL, &len,
                                     "request nests deeper than %d levels: discarded to its end or "
                                     "the next 0xFF",
                                     PROTO_FRAME_DEPTH_MAX);
    break;
  case PROTO_FRAME_ERR_STRING:
    text = agent_commands_error_text("GenericError", NULL, &len,
                                     "a string longer than %d bytes: the request is discarded to "
                                     "its end or the next 0xFF",
                                     PROTO_FRAME_STRING_MAX);
    break;
  case PROTO_FRAME_ERR_STRAY:
    text = agent_commands_error_text("GenericError", NULL, &len,
                                     "unexpected byte 0x%02x outside a JSON object: input "
                                     "discarded up to the next '{' or 0xFF",
                                     proto_frame_stray_byte(ch->frame));
    break;
  default:
    text = agent_commands_error_text("GenericError", NULL, &len, "%s: request discarded",
                                     proto_frame_event_name(ev));
    break;
  }
  queue_answer(ch, text, len);
}

/* Runs the object the scanner just found. Its answer may come before this
 * returns or later; until it comes, input waits. */
static void run_request(AgentChannel *ch) {
  static const AgentCaller host = {AGENT_CALLER_HOST, 0, 0};
  size_t len;
  const char *text = proto_frame_object(ch->frame, &len);
  Pending *p = g_new0(Pending, 1);

  ch->stats.requests++;
  /* The link carries requests: the next failure starts a fresh back-off. */
  ch->retry_ms = ch->cfg.reopen_min_ms;
  ch->said_failing = FALSE;
  g_debug("host channel %s: a request of %zu bytes", ch->name, len);
  p->ch = ch;
  ch->pending = p;
  agent_commands_handle_text(ch->commands, text, len, &host, on_answer, p, pending_free);
}

/*
 * Reads and frames input and runs what it finds, one request at a time,
 * until the fd has nothing more (EAGAIN: the edge-triggered watch will
 * wake us for more), a command runs, or the answer queue is full (then
 * in_more says to come back).
 */
static void process_input(AgentChannel *ch) {
  guint budget = AGENT_CHANNEL_BURST;

  if (ch->processing)
    return;
  ch->processing = TRUE;
  ch->in_more = FALSE;
  while (ch->fd >= 0) {
    proto_frame_event ev;
    gsize used;

    if (input_blocked(ch)) {
      ch->in_more = TRUE;
      break;
    }
    if (budget == 0) {
      /* A host that keeps sending must not starve the local clients: go
       * on from an idle callback, after what else is ready. */
      ch->in_more = TRUE;
      schedule_resume(ch);
      break;
    }
    if (ch->in_off == ch->in_len) {
      ssize_t n;

      if (ch->read_eof || !ch->host_present)
        break;
      n = read(ch->fd, ch->in, sizeof(ch->in));
      if (n > 0) {
        ch->in_off = 0;
        ch->in_len = (gsize)n;
        continue;
      }
      if (n == 0) {
        if (ch->kind == LINK_VIRTIO_PORT) {
          /* No host end (and nothing left from the last one). */
          host_changed(ch, FALSE);
        } else if (ch->kind == LINK_CHARDEV) {
          link_failed(ch, 0, "hang-up");
        } else {
          ch->read_eof = TRUE;
          proto_frame_reset(ch->frame);
        }
        break;
      }
      if (errno == EINTR)
        continue;
      if (errno != EAGAIN)
        link_failed(ch, errno, "read");
      break;
    }
    used = proto_frame_feed(ch->frame, ch->in + ch->in_off, ch->in_len - ch->in_off, &ev);
    ch->in_off += used;
    switch (ev) {
    case PROTO_FRAME_NEED_MORE: break;
    case PROTO_FRAME_OBJECT:
      budget--;
      run_request(ch);
      break;
    case PROTO_FRAME_SYNC: ch->stats.resyncs++; break;
    default:
      budget--;
      frame_error(ch, ev);
      break;
    }
  }
  ch->processing = FALSE;
  maybe_end_after_eof(ch);
}

/* ---- sessions and links ---- */

/* Forgets everything of the session: partial input, queued answers, the
 * answer of a running command (dropped when it comes). */
static void session_reset(AgentChannel *ch, const char *why) {
  if (ch->pending) {
    ch->pending->ch = NULL;
    ch->pending = NULL;
  }
  proto_frame_reset(ch->frame);
  ch->in_off = ch->in_len = 0;
  ch->in_more = FALSE;
  ch->read_eof = FALSE;
  drop_queue(ch, why);
}

/* A virtio port's host end came or went. */
static void host_changed(AgentChannel *ch, gboolean present) {
  ch->host_present = present;
  if (present) {
    ch->stats.sessions++;
    g_debug("host channel %s: a host is connected", ch->name);
    session_reset(ch, "a new host connected");
  } else {
    g_debug("host channel %s: no host is connected", ch->name);
    session_reset(ch, "the host went away");
  }
}

static gboolean on_link_event(gint fd, GIOCondition condition, gpointer data) {
  AgentChannel *ch = data;
  struct epoll_event evs[4];
  uint32_t revents = 0;
  int n = epoll_wait(ch->epfd, evs, G_N_ELEMENTS(evs), 0);

  for (int i = 0; i < n; i++)
    revents |= evs[i].events;
  if (n <= 0 || ch->fd < 0)
    return G_SOURCE_CONTINUE;
  if (ch->kind == LINK_VIRTIO_PORT) {
    gboolean present = !(revents & EPOLLHUP);

    if (present != ch->host_present)
      host_changed(ch, present);
  }
  link_flush(ch);
  if (ch->fd >= 0)
    process_input(ch);
  return G_SOURCE_CONTINUE;
}

/* Makes @fd (non-blocking, ours) the link, of @kind. */
static void link_attach(AgentChannel *ch, int fd, LinkKind kind) {
  struct epoll_event ev = {
      .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
      .data.fd = fd,
  };

  if (epoll_ctl(ch->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
    int err = errno;

    close(fd);
    link_failed(ch, err, "epoll_ctl");
    return;
  }
  ch->fd = fd;
  ch->kind = kind;
  session_reset(ch, "a new link");
  /* A virtio port's host is there when the first event shows no POLLHUP
   * (adding the fd to the set queues that event at once). */
  ch->host_present = kind != LINK_VIRTIO_PORT;
  if (ch->host_present)
    ch->stats.sessions++;
  if (ch->said_failing)
    g_message("host channel %s: open (%s)", ch->name, link_kind_names[kind]);
  else
    g_debug("host channel %s: open (%s)", ch->name, link_kind_names[kind]);
}

/* Closes the link, if any, and ends its session. */
static void link_close(AgentChannel *ch, const char *why) {
  if (ch->fd < 0)
    return;
  epoll_ctl(ch->epfd, EPOLL_CTL_DEL, ch->fd, NULL);
  close(ch->fd);
  ch->fd = -1;
  ch->kind = LINK_NONE;
  ch->host_present = FALSE;
  session_reset(ch, why);
  if (ch->resume_id) {
    g_source_remove(ch->resume_id);
    ch->resume_id = 0;
  }
}

static gboolean retry_cb(gpointer data) {
  AgentChannel *ch = data;

  ch->retry_id = 0;
  path_try_open(ch);
  return G_SOURCE_REMOVE;
}

/* Tries the path again after the back-off, which then doubles. */
static void schedule_retry(AgentChannel *ch) {
  if (!ch->path || ch->retry_id)
    return;
  ch->retry_id = g_timeout_add(ch->retry_ms, retry_cb, ch);
  ch->retry_ms = MIN(ch->retry_ms * 2, ch->cfg.reopen_max_ms);
}

/* A session ended normally (a socket peer finished): a path is connected
 * again, a vsock listener waits for the next host. */
static void link_ended(AgentChannel *ch) {
  g_debug("host channel %s: the host closed the session", ch->name);
  link_close(ch, "the session ended");
  schedule_retry(ch);
}

/* A read or write failed (@err, 0 for a hang-up) while @what: the link
 * closes; a path is reopened with back-off. */
static void link_failed(AgentChannel *ch, int err, const char *what) {
  /* A host that goes away mid-answer is routine. */
  gboolean routine = err == EPIPE || err == ECONNRESET || err == 0;

  if (!routine && !ch->said_failing) {
    g_message("host channel %s: %s: %s; reopening", ch->name, what, g_strerror(err));
    ch->said_failing = TRUE;
  } else {
    g_debug("host channel %s: %s: %s", ch->name, what, err ? g_strerror(err) : "end of input");
  }
  link_close(ch, "the link failed");
  schedule_retry(ch);
}

/* ---- a path: character device or unix socket ---- */

/* Whether the character device @rdev is a virtio-serial port, by its
 * sysfs subsystem. */
static gboolean is_virtio_port(const AgentChannel *ch, dev_t rdev) {
  g_autofree char *rel = g_strdup_printf("/sys/dev/char/%u:%u/subsystem", major(rdev), minor(rdev));
  g_autofree char *link = agent_procfs_path(ch->sys_root, rel);
  char target[256];
  ssize_t n = readlink(link, target, sizeof(target) - 1);
  const char *base;

  if (n <= 0)
    return FALSE;
  target[n] = '\0';
  base = strrchr(target, '/');
  return strcmp(base ? base + 1 : target, "virtio-ports") == 0;
}

/* A serial line carries bytes as they are: no echo, no line editing, no
 * modem control. */
static void make_raw(int fd) {
  struct termios t;

  if (tcgetattr(fd, &t) < 0)
    return;
  cfmakeraw(&t);
  t.c_cflag |= CLOCAL | CREAD;
  (void)tcsetattr(fd, TCSANOW, &t);
}

/* Opening failed with @err while @what: message once per streak, then a
 * retry after the back-off. */
static void open_failed(AgentChannel *ch, int err, const char *what) {
  if (!ch->said_failing) {
    g_message("host channel %s: cannot %s: %s; retrying", ch->name, what, g_strerror(err));
    ch->said_failing = TRUE;
  } else {
    g_debug("host channel %s: cannot %s: %s", ch->name, what, g_strerror(err));
  }
  schedule_retry(ch);
}

static void stop_waiting(AgentChannel *ch) {
  if (ch->inotify_id) {
    g_source_remove(ch->inotify_id);
    ch->inotify_id = 0;
  }
  if (ch->inotify_fd >= 0) {
    close(ch->inotify_fd);
    ch->inotify_fd = -1;
  }
}

static gboolean on_inotify(gint fd, GIOCondition condition, gpointer data) {
  AgentChannel *ch = data;

  /* Whatever changed, look again (a watch on /dev sees other devices
   * come: rare, and cheap to check). */
  ch->inotify_id = 0;
  stop_waiting(ch);
  path_try_open(ch);
  return G_SOURCE_REMOVE;
}

/* The path does not exist: waits for something to appear in its nearest
 * existing directory (inotify), or retries with back-off without inotify. */
static void wait_for_path(AgentChannel *ch) {
  g_autofree char *dir = g_path_get_dirname(ch->path);
  struct stat st;

  if (!ch->said_failing) {
    g_message("host channel %s: it does not exist (yet); waiting for it", ch->name);
    ch->said_failing = TRUE;
  }
  stop_waiting(ch);
  while (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode)) {
    char *parent = g_path_get_dirname(dir);

    if (strcmp(parent, dir) == 0) {
      g_free(parent);
      break;
    }
    g_free(dir);
    dir = parent;
  }
  ch->inotify_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (ch->inotify_fd < 0 ||
      inotify_add_watch(ch->inotify_fd, dir, IN_CREATE | IN_MOVED_TO | IN_ATTRIB | IN_ONLYDIR) <
          0) {
    g_debug("host channel %s: cannot watch %s: %s", ch->name, dir, g_strerror(errno));
    stop_waiting(ch);
    schedule_retry(ch);
    return;
  }
  ch->inotify_id = agent_loop_add_fd(ch->inotify_fd, G_IO_IN, on_inotify, ch, NULL);
  /* It may have appeared before the watch was in place. */
  if (access(ch->path, F_OK) == 0) {
    stop_waiting(ch);
    ch->retry_id = g_timeout_add(0, retry_cb, ch);
  }
}

/* Connects to the unix socket at the path. Returns the fd or -1 (errno). */
static int connect_unix(const char *path) {
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  int fd;

  if (strlen(path) >= sizeof(sa.sun_path)) {
    errno = ENAMETOOLONG;
    return -1;
  }
  strcpy(sa.sun_path, path);
  fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -1;
  /* A unix connect never blocks half-way: it is made or refused (EAGAIN
   * when the listener's backlog is full: retried like a refusal). */
  if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
    int err = errno;

    close(fd);
    errno = err;
    return -1;
  }
  return fd;
}

static void path_try_open(AgentChannel *ch) {
  struct stat st;
  int fd;

  if (ch->fd >= 0)
    return;
  if (stat(ch->path, &st) < 0) {
    if (errno == ENOENT)
      wait_for_path(ch);
    else
      open_failed(ch, errno, "look it up");
    return;
  }
  if (S_ISSOCK(st.st_mode)) {
    fd = connect_unix(ch->path);
    if (fd < 0) {
      if (errno == ENOENT)
        wait_for_path(ch);
      else
        open_failed(ch, errno, "connect");
      return;
    }
    link_attach(ch, fd, LINK_UNIX);
    return;
  }
  fd = open(ch->path, O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT)
      wait_for_path(ch);
    else
      open_failed(ch, errno, "open");
    return;
  }
  if (fstat(fd, &st) < 0 || !S_ISCHR(st.st_mode)) {
    close(fd);
    open_failed(ch, ENODEV, "use it (neither a character device nor a socket)");
    return;
  }
  if (isatty(fd))
    make_raw(fd);
  link_attach(ch, fd, is_virtio_port(ch, st.st_rdev) ? LINK_VIRTIO_PORT : LINK_CHARDEV);
}

/* ---- making and freeing ---- */

static AgentChannel *channel_new(AgentCommands *commands, const AgentChannelConfig *config,
                                 char *name) {
  AgentChannel *ch = g_new0(AgentChannel, 1);

  if (config)
    ch->cfg = *config;
  if (!ch->cfg.out_max_bytes)
    ch->cfg.out_max_bytes = AGENT_CHANNEL_OUT_MAX_DEFAULT;
  if (!ch->cfg.write_timeout_ms)
    ch->cfg.write_timeout_ms = AGENT_CHANNEL_WRITE_TIMEOUT_DEFAULT;
  if (!ch->cfg.reopen_min_ms)
    ch->cfg.reopen_min_ms = AGENT_CHANNEL_REOPEN_MIN_DEFAULT;
  if (!ch->cfg.reopen_max_ms)
    ch->cfg.reopen_max_ms = AGENT_CHANNEL_REOPEN_MAX_DEFAULT;
  ch->cfg.reopen_max_ms = MAX(ch->cfg.reopen_max_ms, ch->cfg.reopen_min_ms);
  ch->sys_root = g_strdup(ch->cfg.sys_root ? ch->cfg.sys_root : "/");
  ch->cfg.sys_root = NULL; /* the copy above is ours */
  ch->commands = commands;
  ch->name = name;
  ch->fd = -1;
  ch->listen_fd = -1;
  ch->inotify_fd = -1;
  ch->retry_ms = ch->cfg.reopen_min_ms;
  g_queue_init(&ch->out);
  /* The host channel's own bounds (channel-frame.h); only memory can fail. */
  if (proto_frame_new(NULL, &ch->frame) < 0)
    g_error("host channel: out of memory");
  ch->epfd = epoll_create1(EPOLL_CLOEXEC);
  if (ch->epfd < 0)
    g_error("host channel: epoll_create1: %s", g_strerror(errno));
  ch->ep_id = agent_loop_add_fd(ch->epfd, G_IO_IN, on_link_event, ch, NULL);
  return ch;
}

AgentChannel *agent_channel_new_path(const char *path, AgentCommands *commands,
                                     const AgentChannelConfig *config) {
  AgentChannel *ch = channel_new(commands, config, g_strdup(path));

  ch->path = g_strdup(path);
  path_try_open(ch);
  return ch;
}

static gboolean accept_retry_cb(gpointer data);

static gboolean on_vsock_accept(gint fd, GIOCondition condition, gpointer data) {
  AgentChannel *ch = data;
  int last = -1;

  for (;;) {
    int c = accept4(ch->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

    if (c < 0) {
      if (errno == EINTR || errno == ECONNABORTED)
        continue;
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        /* Level-triggered: do not spin while descriptors are short. */
        g_debug("host channel %s: accept: %s; retrying in 1 s", ch->name, g_strerror(errno));
        ch->listen_id = 0;
        ch->accept_retry_id = g_timeout_add_seconds(1, accept_retry_cb, ch);
        if (last >= 0)
          break;
        return G_SOURCE_REMOVE;
      }
      break;
    }
    if (last >= 0)
      close(last);
    last = c;
  }
  if (last >= 0) {
    if (ch->fd >= 0)
      g_debug("host channel %s: a new host connection replaces the old one", ch->name);
    link_close(ch, "a new host connected");
    link_attach(ch, last, LINK_VSOCK);
  }
  return ch->listen_id ? G_SOURCE_CONTINUE : G_SOURCE_REMOVE;
}

static gboolean accept_retry_cb(gpointer data) {
  AgentChannel *ch = data;

  ch->accept_retry_id = 0;
  ch->listen_id = agent_loop_add_fd(ch->listen_fd, G_IO_IN, on_vsock_accept, ch, NULL);
  return G_SOURCE_REMOVE;
}

AgentChannel *agent_channel_new_vsock(guint port, AgentCommands *commands,
                                      const AgentChannelConfig *config, GError **error) {
  struct sockaddr_vm sa = {
      .svm_family = AF_VSOCK,
      .svm_cid = VMADDR_CID_ANY,
      .svm_port = port,
  };
  AgentChannel *ch;
  int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

  if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 4) < 0) {
    int err = errno;

    g_set_error(error, AGENT_ERROR, AGENT_ERROR_FAILED, "vsock port %u: %s", port, g_strerror(err));
    if (fd >= 0)
      close(fd);
    return NULL;
  }
  ch = channel_new(commands, config, g_strdup_printf("vsock:%u", port));
  ch->listen_fd = fd;
  ch->listen_id = agent_loop_add_fd(fd, G_IO_IN, on_vsock_accept, ch, NULL);
  return ch;
}

void agent_channel_free(AgentChannel *self) {
  AgentChannel *ch = self;

  if (!ch)
    return;
  link_close(ch, "shrinkd is stopping");
  stop_waiting(ch);
  if (ch->retry_id)
    g_source_remove(ch->retry_id);
  if (ch->listen_id)
    g_source_remove(ch->listen_id);
  if (ch->accept_retry_id)
    g_source_remove(ch->accept_retry_id);
  if (ch->listen_fd >= 0)
    close(ch->listen_fd);
  g_source_remove(ch->ep_id);
  close(ch->epfd);
  proto_frame_free(ch->frame);
  g_free(ch->sys_root);
  g_free(ch->name);
  g_free(ch->path);
  g_free(ch);
}

void agent_channel_get_stats(const AgentChannel *self, AgentChannelStats *out) {
  *out = self->stats;
  out->connected = self->fd >= 0 && self->host_present;
}

const char *agent_channel_name(const AgentChannel *self) {
  return self->name;
}
