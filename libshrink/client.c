/* SPDX-License-Identifier: MIT */
/*
 * The native client: one connection to shrinkd, the shrinkers registered on
 * it, and the machinery that keeps the two in step across agent restarts.
 *
 * Everything the client waits for sits in one epoll set, whose descriptor is
 * what shrink_client_get_fd() hands out, so that it stays the same across
 * reconnections: the timerfd that paces connection attempts, the socket while
 * there is one, and (for a client with its own thread) an eventfd that wakes
 * the thread to stop it. A dispatch pass (on the client's thread, or in
 * shrink_client_dispatch()) takes whatever is ready.
 *
 * Locking: client->lock guards the connection, the outgoing queue and the
 * shrinkers; it is never held while a callback runs, so that callbacks may
 * call back into the library. client->dispatch_lock only keeps two dispatch
 * passes apart, which is what makes callbacks of one client run one at a
 * time. A shrinker is "busy" from the moment its callback is chosen to run
 * until its reply is queued; unregistering waits for that (idle_cond), except
 * when it is called from a callback, where it is deferred instead.
 *
 * Sending never blocks: messages are encoded into a queue and written as the
 * socket accepts them (EPOLLOUT when it is full). Whatever goes wrong with the
 * connection (send or receive error, a malformed or unexpected message, no
 * memory for the queue), the remedy is the same: drop it and reconnect,
 * which registers everything again.
 */
#include "config.h"

#include "local-proto.h"
#include "shrink-private.h"
#include "shrink.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#ifdef HAVE_MALLOC_TRIM
#include <malloc.h>
#endif

/* Connection attempts: 50 ms after a failure, doubling up to 1 s. */
#define BACKOFF_MIN_MS 50u
#define BACKOFF_MAX_MS 1000u
/* A connection that lasted this long was good: the next retry is quick. */
#define STABLE_CONNECTION_US (1000u * 1000u)
/* Messages handled in one dispatch pass (and replies sent together). */
#define DISPATCH_BATCH 32
/* Room for the largest message a client sends (REGISTER: 90 bytes). */
#define OUT_SLOT_MAX 128
/* An outgoing queue larger than this is released once it drains. */
#define OUT_KEEP_SLOTS 16
#define EPOLL_EVENTS_MAX 8

_Static_assert(SHRINK_LEVEL_SOFT == (int)PROTO_LEVEL_SOFT, "level");
_Static_assert(SHRINK_LEVEL_HARD == (int)PROTO_LEVEL_HARD, "level");
_Static_assert(SHRINK_REASON_HOST == (int)PROTO_REASON_HOST, "reason");
_Static_assert(SHRINK_REASON_HOST == (int)PROTO_REASON_LAST, "reason");
_Static_assert(SHRINK_PRIORITY_MIN == PROTO_PRIORITY_MIN, "priority");
_Static_assert(SHRINK_PRIORITY_MAX == PROTO_PRIORITY_MAX, "priority");
_Static_assert(SHRINK_PRIORITY_DEFAULT == PROTO_PRIORITY_DEFAULT, "priority");

/* What an epoll event is about; the socket's also carries its generation. */
enum { TAG_WAKE = 1, TAG_TIMER = 2, TAG_SOCK = 3 };

typedef enum {
  CONN_DOWN,  /* no socket; the timer says when to try */
  CONN_HELLO, /* connected, HELLO sent, waiting for WELCOME */
  CONN_READY, /* WELCOME received: shrinkers registered, requests flow */
} conn_state;

typedef struct {
  uint16_t len;
  uint8_t type; /* proto_msg_type, to merge ESTIMATEs */
  uint32_t id;  /* the shrinker concerned, to merge ESTIMATEs */
  unsigned char data[OUT_SLOT_MAX];
} out_slot;

/* Reference-counted so that it can be replaced while it runs. */
typedef struct {
  shrink_relief_func func;
  void *user_data;
  shrink_free_func free_func;
  unsigned refs;
} relief_handler;

struct shrink_shrinker {
  shrink_client *client;
  uint32_t id; /* unique in the client, never reused: the wire id */
  uint16_t priority;
  bool has_estimate;
  uint64_t estimate_bytes;
  shrink_func func;
  void *user_data;
  shrink_free_func free_func;
  bool sent;           /* REGISTER sent on the current connection */
  bool busy;           /* its callback runs, or its reply is not queued yet */
  bool unregistering;  /* never call it again */
  bool unreg_deferred; /* unregistered from a callback: finish after replies */
  char name[PROTO_NAME_MAX];
};

struct shrink_client {
  pthread_mutex_t lock;
  pthread_cond_t idle_cond; /* a shrinker stopped being busy */
  pthread_mutex_t dispatch_lock;

  unsigned int flags;
  bool trim;
  bool debug;
  struct sockaddr_un addr;
  socklen_t addr_len;
  char app_name[PROTO_NAME_MAX];

  int epfd;
  int timerfd;
  int wakefd; /* -1 without a thread */
  int sock;   /* -1 when CONN_DOWN */
  conn_state state;
  uint32_t conn_gen; /* bumped on every drop: stale events and replies */
  unsigned backoff_ms;
  uint64_t ready_since_us;
  uint32_t max_shrinkers; /* from WELCOME */
  uint32_t nsent;         /* shrinkers registered on this connection */
  bool want_out;          /* EPOLLOUT is in the socket's events */
  uint32_t jitter_state;

  /* Sorted by id (ids only grow), so lookups are binary searches. */
  shrink_shrinker **shrinkers;
  size_t nshrinkers;
  size_t shrinkers_cap;
  uint32_t next_id;

  out_slot *outq; /* pending messages are outq[out_head .. out_head+out_len) */
  size_t out_head;
  size_t out_len;
  size_t out_cap;

  relief_handler *relief;

  bool thread_started;
  bool stopping;
  pthread_t thread;
  bool in_callback; /* a callback runs on callback_thread */
  pthread_t callback_thread;

  unsigned char *rxbuf; /* PROTO_MSG_MAX bytes; used under dispatch_lock */
};

/* ---- small helpers ---- */

static uint64_t now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

bool shrink_debug_enabled(void) {
  const char *v = getenv("SHRINK_DEBUG");
  return v && *v;
}

__attribute__((format(printf, 2, 3))) static void debug_log(const shrink_client *c,
                                                            const char *fmt, ...) {
  if (!c->debug)
    return;
  char line[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  /* One write per line, so that lines of several threads do not mix. */
  fprintf(stderr, "libshrink[%ld] %s: %s\n", (long)getpid(), c->app_name, line);
}

size_t shrink_copy_name(char *dst, size_t dst_size, const char *src,
                        const char *fallback) {
  if (!src || !*src)
    src = fallback;
  size_t n = strnlen(src, dst_size - 1);
  /* Back off over UTF-8 continuation bytes if the cut fell inside a character. */
  if (src[n] != '\0')
    while (n > 0 && ((unsigned char)src[n] & 0xC0) == 0x80)
      n--;
  memcpy(dst, src, n);
  dst[n] = '\0';
  return n;
}

static void lock(shrink_client *c) { pthread_mutex_lock(&c->lock); }
static void unlock(shrink_client *c) { pthread_mutex_unlock(&c->lock); }

static bool in_own_callback(const shrink_client *c) {
  return c->in_callback && pthread_equal(c->callback_thread, pthread_self());
}

/* ---- the reconnection timer ---- */

static void arm_timer_locked(shrink_client *c, unsigned ms) {
  struct itimerspec its = {0};
  if (ms == 0)
    its.it_value.tv_nsec = 1; /* 0 would disarm it */
  else {
    its.it_value.tv_sec = ms / 1000;
    its.it_value.tv_nsec = (long)(ms % 1000) * 1000000L;
  }
  timerfd_settime(c->timerfd, 0, &its, NULL);
}

/*
 * Arms the timer for the next attempt and doubles the back-off. Up to a
 * quarter is taken off at random so that the clients of a restarted agent
 * do not all knock at the same millisecond.
 */
static void schedule_connect_locked(shrink_client *c) {
  unsigned ms = c->backoff_ms;
  c->jitter_state = c->jitter_state * 1103515245u + 12345u;
  ms -= (c->jitter_state >> 16) % (ms / 4 + 1);
  arm_timer_locked(c, ms);
  c->backoff_ms = c->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : c->backoff_ms * 2;
}

/* ---- the connection and its outgoing queue ---- */

static void drop_connection_locked(shrink_client *c, const char *why, int err);

static void set_want_out_locked(shrink_client *c, bool want) {
  if (c->want_out == want || c->sock < 0)
    return;
  struct epoll_event ev = {
      .events = EPOLLIN | (want ? EPOLLOUT : 0),
      .data.u64 = ((uint64_t)c->conn_gen << 8) | TAG_SOCK,
  };
  if (epoll_ctl(c->epfd, EPOLL_CTL_MOD, c->sock, &ev) < 0) {
    drop_connection_locked(c, "epoll_ctl", errno);
    return;
  }
  c->want_out = want;
}

static void clear_queue_locked(shrink_client *c) {
  c->out_head = 0;
  c->out_len = 0;
  if (c->out_cap > OUT_KEEP_SLOTS) {
    free(c->outq);
    c->outq = NULL;
    c->out_cap = 0;
  }
}

/* Writes queued messages until the queue is empty or the socket full. */
static void flush_locked(shrink_client *c) {
  while (c->out_len > 0 && c->sock >= 0) {
    const out_slot *slot = &c->outq[c->out_head];
    ssize_t n = send(c->sock, slot->data, slot->len, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        set_want_out_locked(c, true);
        return;
      }
      drop_connection_locked(c, "send", errno);
      return;
    }
    c->out_head++;
    c->out_len--;
  }
  if (c->out_len == 0) {
    clear_queue_locked(c);
    set_want_out_locked(c, false);
  }
}

/*
 * Queues @msg and writes what the socket accepts. An ESTIMATE replaces one
 * for the same shrinker that is still waiting. Returns 0, or -errno after
 * dropping the connection (out of memory): the reconnection will resend
 * everything that matters.
 */
static int send_locked(shrink_client *c, const proto_msg *msg) {
  if (c->sock < 0)
    return -ENOTCONN;
  uint32_t id = 0;
  if (msg->type == PROTO_MSG_ESTIMATE) {
    id = msg->u.estimate.id;
    for (size_t i = 0; i < c->out_len; i++) {
      out_slot *slot = &c->outq[c->out_head + i];
      if (slot->type == PROTO_MSG_ESTIMATE && slot->id == id) {
        ssize_t n = proto_encode(msg, slot->data, sizeof slot->data);
        if (n < 0) {
          drop_connection_locked(c, "encode", (int)-n);
          return (int)n;
        }
        slot->len = (uint16_t)n;
        return 0;
      }
    }
  }
  if (c->out_head + c->out_len == c->out_cap) {
    if (c->out_head > 0) {
      memmove(c->outq, c->outq + c->out_head, c->out_len * sizeof *c->outq);
      c->out_head = 0;
    } else {
      size_t cap = c->out_cap ? c->out_cap * 2 : 8;
      out_slot *q = realloc(c->outq, cap * sizeof *q);
      if (!q) {
        drop_connection_locked(c, "queue", ENOMEM);
        return -ENOMEM;
      }
      c->outq = q;
      c->out_cap = cap;
    }
  }
  out_slot *slot = &c->outq[c->out_head + c->out_len];
  ssize_t n = proto_encode(msg, slot->data, sizeof slot->data);
  if (n < 0) {
    /* A bug of ours (a name or value out of range): say so, and start over. */
    drop_connection_locked(c, "encode", (int)-n);
    return (int)n;
  }
  slot->len = (uint16_t)n;
  slot->type = (uint8_t)msg->type;
  slot->id = id;
  c->out_len++;
  /* When the socket is known to be full, EPOLLOUT will say when to go on. */
  if (!c->want_out)
    flush_locked(c);
  return 0;
}

static void send_register_locked(shrink_client *c, shrink_shrinker *s) {
  proto_msg m = {.type = PROTO_MSG_REGISTER};
  m.u.reg.id = s->id;
  m.u.reg.priority = s->priority;
  m.u.reg.flags = s->has_estimate ? PROTO_REGISTER_HAS_ESTIMATE : 0;
  m.u.reg.estimate_bytes = s->has_estimate ? s->estimate_bytes : 0;
  m.u.reg.name = s->name;
  s->sent = true;
  c->nsent++;
  send_locked(c, &m);
}

/* Registers shrinkers that are not yet, as far as the agent allows. */
static void register_pending_locked(shrink_client *c) {
  for (size_t i = 0; i < c->nshrinkers && c->state == CONN_READY; i++) {
    shrink_shrinker *s = c->shrinkers[i];
    if (c->nsent >= c->max_shrinkers)
      break;
    if (!s->sent && !s->unregistering)
      send_register_locked(c, s);
  }
}

/* Best effort, straight to the socket: used just before dropping it. */
static void send_error_now_locked(shrink_client *c, proto_error code, uint32_t ref,
                                  const char *text) {
  proto_msg m = {.type = PROTO_MSG_ERROR};
  m.u.error.code = (uint16_t)code;
  m.u.error.ref = ref;
  m.u.error.text = text;
  if (c->sock >= 0)
    proto_send(c->sock, &m, true);
}

static void drop_connection_locked(shrink_client *c, const char *why, int err) {
  if (c->state == CONN_DOWN)
    return;
  debug_log(c, "disconnected from %s (%s: %s)", c->addr.sun_path, why,
            err ? strerror(err) : "protocol");
  epoll_ctl(c->epfd, EPOLL_CTL_DEL, c->sock, NULL);
  close(c->sock);
  c->sock = -1;
  c->state = CONN_DOWN;
  c->conn_gen++;
  c->want_out = false;
  c->nsent = 0;
  for (size_t i = 0; i < c->nshrinkers; i++)
    c->shrinkers[i]->sent = false;
  clear_queue_locked(c);
  if (c->ready_since_us && now_us() - c->ready_since_us >= STABLE_CONNECTION_US)
    c->backoff_ms = BACKOFF_MIN_MS;
  c->ready_since_us = 0;
  schedule_connect_locked(c);
}

static void try_connect_locked(shrink_client *c) {
  if (c->state != CONN_DOWN || c->stopping)
    return;
  int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) {
    debug_log(c, "socket: %s", strerror(errno));
    schedule_connect_locked(c);
    return;
  }
  /*
   * connect() on AF_UNIX completes at once (the agent need not have called
   * accept() yet) or fails: ENOENT or ECONNREFUSED while no agent listens,
   * EAGAIN when its backlog is full. All of them mean: later.
   */
  if (connect(fd, (const struct sockaddr *)&c->addr, c->addr_len) < 0) {
    debug_log(c, "connect %s: %s", c->addr.sun_path, strerror(errno));
    close(fd);
    schedule_connect_locked(c);
    return;
  }
  struct epoll_event ev = {
      .events = EPOLLIN,
      .data.u64 = ((uint64_t)c->conn_gen << 8) | TAG_SOCK,
  };
  if (epoll_ctl(c->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
    debug_log(c, "epoll_ctl: %s", strerror(errno));
    close(fd);
    schedule_connect_locked(c);
    return;
  }
  c->sock = fd;
  c->state = CONN_HELLO;
  c->want_out = false;
  debug_log(c, "connected to %s", c->addr.sun_path);

  proto_msg m = {.type = PROTO_MSG_HELLO};
  m.u.hello.min_version = PROTO_VERSION_MIN;
  m.u.hello.max_version = PROTO_VERSION;
  m.u.hello.name = c->app_name;
  send_locked(c, &m);
}

/* ---- receiving ---- */

typedef struct {
  uint32_t id;
  uint64_t round_id;
  uint64_t freed_bytes;
  uint32_t elapsed_us;
  shrink_shrinker *called; /* busy until the reply is queued, or NULL */
} pending_reply;

static void protocol_error_locked(shrink_client *c, proto_error code, uint32_t ref,
                                  const char *what) {
  debug_log(c, "protocol error from the agent: %s (%s)", what, proto_error_name(code));
  send_error_now_locked(c, code, ref, what);
  drop_connection_locked(c, what, 0);
}

static shrink_shrinker *find_shrinker_locked(shrink_client *c, uint32_t id) {
  size_t lo = 0, hi = c->nshrinkers;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    uint32_t mid_id = c->shrinkers[mid]->id;
    if (mid_id == id)
      return c->shrinkers[mid];
    if (mid_id < id)
      lo = mid + 1;
    else
      hi = mid;
  }
  return NULL;
}

static void handle_welcome_locked(shrink_client *c, const proto_welcome *w) {
  if (c->state != CONN_HELLO) {
    protocol_error_locked(c, PROTO_ERR_STATE, PROTO_MSG_WELCOME, "unexpected WELCOME");
    return;
  }
  if (w->version < PROTO_VERSION_MIN || w->version > PROTO_VERSION) {
    protocol_error_locked(c, PROTO_ERR_VERSION, PROTO_MSG_WELCOME,
                          "WELCOME chose a version outside our range");
    return;
  }
  c->state = CONN_READY;
  c->max_shrinkers = w->max_shrinkers;
  c->ready_since_us = now_us();
  debug_log(c, "agent speaks version %u, takes up to %u shrinkers; registering %zu",
            w->version, w->max_shrinkers, c->nshrinkers);
  if (c->nshrinkers > c->max_shrinkers)
    debug_log(c, "the agent takes only %u of our %zu shrinkers", c->max_shrinkers,
              c->nshrinkers);
  register_pending_locked(c);
}

static void handle_error_locked(shrink_client *c, const proto_error_msg *e) {
  debug_log(c, "agent error %s (about %u): %s", proto_error_name(e->code), e->ref,
            e->text ? e->text : "");
  /* No common version: retrying at once would only hear the same answer. */
  if (e->code == PROTO_ERR_VERSION)
    drop_connection_locked(c, "version refused", 0);
}

/* Runs the relief callback; called and returns with the lock held. */
static void run_relief_locked(shrink_client *c, const proto_relief *r) {
  relief_handler *h = c->relief;
  debug_log(c, "relief after round %llu", (unsigned long long)r->round_id);
  if (!h)
    return;
  h->refs++;
  c->in_callback = true;
  c->callback_thread = pthread_self();
  unlock(c);
  shrink_relief rel = {.round_id = r->round_id, .reason = (shrink_reason)r->reason};
  h->func(&rel, h->user_data);
  lock(c);
  c->in_callback = false;
  if (--h->refs == 0) {
    unlock(c);
    if (h->free_func)
      h->free_func(h->user_data);
    free(h);
    lock(c);
  }
}

/*
 * Runs the callback for one SHRINK (called and returns with the lock held)
 * and fills @reply. Unknown or departing shrinkers get a reply of 0 without
 * being called, so that the agent never waits for nothing.
 */
static void run_shrink_locked(shrink_client *c, const proto_shrink *sh,
                              pending_reply *reply) {
  *reply = (pending_reply){.id = sh->id, .round_id = sh->round_id};
  shrink_shrinker *s = find_shrinker_locked(c, sh->id);
  if (!s || s->unregistering) {
    debug_log(c, "SHRINK for %s shrinker %u: replying 0", s ? "a departing" : "an unknown",
              sh->id);
    return;
  }
  s->busy = true;
  c->in_callback = true;
  c->callback_thread = pthread_self();
  unlock(c);

  shrink_request req = {
      .round_id = sh->round_id,
      .target_bytes = sh->target_bytes > SIZE_MAX ? SIZE_MAX : (size_t)sh->target_bytes,
      .level = (shrink_level)sh->level,
      .reason = (shrink_reason)sh->reason,
      .deadline_ms = sh->deadline_ms,
  };
  uint64_t t0 = now_us();
  size_t freed = s->func(&req, s->user_data);
  uint64_t elapsed = now_us() - t0;

  lock(c);
  c->in_callback = false;
  reply->called = s;
  reply->freed_bytes = freed;
  reply->elapsed_us = elapsed > UINT32_MAX ? UINT32_MAX : (uint32_t)elapsed;
}

static void remove_shrinker_locked(shrink_client *c, shrink_shrinker *s);

/*
 * Reads and handles up to DISPATCH_BATCH messages from connection @gen, then
 * trims the heap once if any callback freed memory, and queues the replies.
 * One trim for a batch: when the agent asks several shrinkers of this process
 * in one round, a trim per callback would cost 20-130 ms each.
 */
static void process_input(shrink_client *c, uint32_t gen) {
  pending_reply replies[DISPATCH_BATCH];
  size_t nreplies = 0;
  bool freed_any = false;

  lock(c);
  for (int i = 0; i < DISPATCH_BATCH; i++) {
    if (c->state == CONN_DOWN || c->conn_gen != gen)
      break;
    proto_msg msg;
    proto_error perr = PROTO_ERR_NONE;
    int r = proto_recv(c->sock, c->rxbuf, &msg, &perr);
    if (r == -EAGAIN || r == -EWOULDBLOCK)
      break;
    if (r == -EBADMSG) {
      protocol_error_locked(c, perr, 0, "malformed message");
      break;
    }
    if (r < 0) {
      drop_connection_locked(c, "receive", -r);
      break;
    }
    switch (msg.type) {
    case PROTO_MSG_WELCOME:
      handle_welcome_locked(c, &msg.u.welcome);
      break;
    case PROTO_MSG_SHRINK:
      if (c->state != CONN_READY) {
        protocol_error_locked(c, PROTO_ERR_STATE, msg.type, "SHRINK before WELCOME");
        break;
      }
      run_shrink_locked(c, &msg.u.shrink, &replies[nreplies]);
      freed_any |= replies[nreplies].freed_bytes > 0;
      nreplies++;
      break;
    case PROTO_MSG_RELIEF:
      if (c->state != CONN_READY) {
        protocol_error_locked(c, PROTO_ERR_STATE, msg.type, "RELIEF before WELCOME");
        break;
      }
      run_relief_locked(c, &msg.u.relief);
      break;
    case PROTO_MSG_ERROR:
      handle_error_locked(c, &msg.u.error);
      break;
    default:
      protocol_error_locked(c, PROTO_ERR_STATE, msg.type, "message not for a client");
      break;
    }
  }

  bool trimmed = false;
#ifdef HAVE_MALLOC_TRIM
  if (freed_any && c->trim) {
    unlock(c);
    malloc_trim(0);
    trimmed = true;
    lock(c);
  }
#endif

  /* Replies first, then what callbacks unregistered: the agent hears DONE
   * before UNREGISTER for the same shrinker. */
  for (size_t i = 0; i < nreplies; i++) {
    const pending_reply *p = &replies[i];
    if (c->state != CONN_READY || c->conn_gen != gen)
      break; /* the round died with its connection */
    proto_msg m = {.type = PROTO_MSG_SHRINK_DONE};
    m.u.done.round_id = p->round_id;
    m.u.done.id = p->id;
    m.u.done.flags = trimmed && p->freed_bytes > 0 ? PROTO_DONE_TRIMMED : 0;
    m.u.done.freed_bytes = p->freed_bytes;
    m.u.done.elapsed_us = p->elapsed_us;
    send_locked(c, &m);
  }
  bool woke = false;
  for (size_t i = 0; i < nreplies; i++)
    if (replies[i].called) {
      replies[i].called->busy = false;
      woke = true;
    }
  if (woke)
    pthread_cond_broadcast(&c->idle_cond);

  shrink_shrinker *gone[DISPATCH_BATCH];
  size_t ngone = 0;
  for (size_t i = 0; i < nreplies; i++) {
    shrink_shrinker *s = replies[i].called;
    if (s && s->unreg_deferred) {
      s->unreg_deferred = false;
      remove_shrinker_locked(c, s);
      gone[ngone++] = s;
    }
  }
  unlock(c);

  for (size_t i = 0; i < ngone; i++) {
    if (gone[i]->free_func)
      gone[i]->free_func(gone[i]->user_data);
    free(gone[i]);
  }
}

/* One dispatch pass over the events epoll reported; under dispatch_lock. */
static void handle_events(shrink_client *c, const struct epoll_event *ev, int n) {
  for (int i = 0; i < n; i++) {
    unsigned tag = (unsigned)(ev[i].data.u64 & 0xff);
    uint32_t gen = (uint32_t)(ev[i].data.u64 >> 8);
    uint64_t count;
    switch (tag) {
    case TAG_WAKE:
      if (read(c->wakefd, &count, sizeof count) < 0) {
        /* Nothing to do: EAGAIN means another pass drained it. */
      }
      break;
    case TAG_TIMER:
      if (read(c->timerfd, &count, sizeof count) == (ssize_t)sizeof count) {
        lock(c);
        try_connect_locked(c);
        unlock(c);
      }
      break;
    case TAG_SOCK: {
      lock(c);
      bool current = c->state != CONN_DOWN && c->conn_gen == gen;
      if (current && (ev[i].events & EPOLLOUT))
        flush_locked(c);
      unlock(c);
      if (current && (ev[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
        process_input(c, gen);
      break;
    }
    default:
      break;
    }
  }
}

static void *client_thread(void *data) {
  shrink_client *c = data;
  struct epoll_event ev[EPOLL_EVENTS_MAX];
  for (;;) {
    int n = epoll_wait(c->epfd, ev, EPOLL_EVENTS_MAX, -1);
    if (n < 0 && errno != EINTR) {
      debug_log(c, "epoll_wait: %s; the client thread stops", strerror(errno));
      break;
    }
    lock(c);
    bool stop = c->stopping;
    unlock(c);
    if (stop)
      break;
    if (n > 0) {
      pthread_mutex_lock(&c->dispatch_lock);
      handle_events(c, ev, n);
      pthread_mutex_unlock(&c->dispatch_lock);
    }
  }
  return NULL;
}

/* Starts the client's thread if it has none yet. Returns 0 or -errno. */
static int ensure_thread_locked(shrink_client *c) {
  if ((c->flags & SHRINK_CLIENT_NO_THREAD) || c->thread_started)
    return 0;
  /* The thread blocks every signal: they belong to the application's threads. */
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  int r = pthread_create(&c->thread, NULL, client_thread, c);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (r != 0) {
    debug_log(c, "cannot start the client thread: %s", strerror(r));
    return -EAGAIN;
  }
  pthread_setname_np(c->thread, "libshrink");
  c->thread_started = true;
  return 0;
}

/* Takes @s out of the client (and out of the agent's registry). */
static void remove_shrinker_locked(shrink_client *c, shrink_shrinker *s) {
  size_t i = 0;
  while (i < c->nshrinkers && c->shrinkers[i] != s)
    i++;
  if (i == c->nshrinkers)
    return;
  memmove(&c->shrinkers[i], &c->shrinkers[i + 1],
          (c->nshrinkers - i - 1) * sizeof *c->shrinkers);
  c->nshrinkers--;
  if (s->sent && c->state == CONN_READY) {
    s->sent = false;
    c->nsent--;
    proto_msg m = {.type = PROTO_MSG_UNREGISTER};
    m.u.unreg.id = s->id;
    send_locked(c, &m);
    /* A place became free for one the agent had no room for. */
    register_pending_locked(c);
  }
}

/* ---- public API ---- */

SHRINK_PUBLIC const char *shrink_version(void) { return SHRINK_VERSION_STRING; }

SHRINK_PUBLIC const char *shrink_level_name(shrink_level level) {
  switch (level) {
  case SHRINK_LEVEL_SOFT:
    return "soft";
  case SHRINK_LEVEL_HARD:
    return "hard";
  }
  return "unknown";
}

SHRINK_PUBLIC const char *shrink_reason_name(shrink_reason reason) {
  switch (reason) {
  case SHRINK_REASON_UNSPECIFIED:
    return "unspecified";
  case SHRINK_REASON_MANUAL:
    return "manual";
  case SHRINK_REASON_BALLOON:
    return "balloon";
  case SHRINK_REASON_MIGRATION:
    return "migration";
  case SHRINK_REASON_PRESSURE:
    return "pressure";
  case SHRINK_REASON_HOST:
    return "host";
  }
  return "unknown";
}

SHRINK_PUBLIC int shrink_client_new(const char *socket_path, const char *app_name,
                                    unsigned int flags, shrink_client **out) {
  if (!out || (flags & ~(SHRINK_CLIENT_NO_THREAD | SHRINK_CLIENT_NO_TRIM)))
    return -EINVAL;
  *out = NULL;
  const char *path = socket_path;
  if (!path) {
    /* secure_getenv: a set-user-ID program must not be pointed elsewhere. */
    path = secure_getenv("SHRINKD_SOCKET");
    if (!path || !*path)
      path = SHRINKD_DEFAULT_SOCKET;
  }
  if (!*path)
    return -EINVAL;
  shrink_client *c = calloc(1, sizeof *c);
  if (!c)
    return -ENOMEM;
  size_t path_len = strlen(path);
  if (path_len >= sizeof c->addr.sun_path) {
    free(c);
    return -ENAMETOOLONG;
  }
  c->addr.sun_family = AF_UNIX;
  memcpy(c->addr.sun_path, path, path_len + 1);
  c->addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + path_len + 1);
  shrink_copy_name(c->app_name, sizeof c->app_name,
                   app_name ? app_name : program_invocation_short_name, "unknown");

  c->flags = flags;
  c->debug = shrink_debug_enabled();
#ifdef HAVE_MALLOC_TRIM
  const char *trim_env = getenv("SHRINK_MALLOC_TRIM");
  c->trim = !(flags & SHRINK_CLIENT_NO_TRIM) && !(trim_env && strcmp(trim_env, "0") == 0);
#endif
  c->epfd = c->timerfd = c->wakefd = c->sock = -1;
  c->state = CONN_DOWN;
  c->backoff_ms = BACKOFF_MIN_MS;
  c->next_id = 1;
  c->jitter_state = (uint32_t)getpid() ^ (uint32_t)now_us();
  pthread_mutex_init(&c->lock, NULL);
  pthread_mutex_init(&c->dispatch_lock, NULL);
  pthread_cond_init(&c->idle_cond, NULL);

  int r = 0;
  c->rxbuf = malloc(PROTO_MSG_MAX);
  if (!c->rxbuf) {
    r = -ENOMEM;
    goto fail;
  }
  c->epfd = epoll_create1(EPOLL_CLOEXEC);
  c->timerfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  if (c->epfd < 0 || c->timerfd < 0) {
    r = -errno;
    goto fail;
  }
  struct epoll_event ev = {.events = EPOLLIN, .data.u64 = TAG_TIMER};
  if (epoll_ctl(c->epfd, EPOLL_CTL_ADD, c->timerfd, &ev) < 0) {
    r = -errno;
    goto fail;
  }
  if (!(flags & SHRINK_CLIENT_NO_THREAD)) {
    c->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    ev = (struct epoll_event){.events = EPOLLIN, .data.u64 = TAG_WAKE};
    if (c->wakefd < 0 || epoll_ctl(c->epfd, EPOLL_CTL_ADD, c->wakefd, &ev) < 0) {
      r = -errno;
      goto fail;
    }
  }
  /* The first attempt at the first dispatch pass. */
  arm_timer_locked(c, 0);
  *out = c;
  return 0;

fail:
  if (c->wakefd >= 0)
    close(c->wakefd);
  if (c->timerfd >= 0)
    close(c->timerfd);
  if (c->epfd >= 0)
    close(c->epfd);
  free(c->rxbuf);
  pthread_cond_destroy(&c->idle_cond);
  pthread_mutex_destroy(&c->dispatch_lock);
  pthread_mutex_destroy(&c->lock);
  free(c);
  return r;
}

SHRINK_PUBLIC void shrink_client_free(shrink_client *c) {
  if (!c)
    return;
  lock(c);
  if (in_own_callback(c) || (c->thread_started && pthread_equal(c->thread, pthread_self()))) {
    /* Called from a callback: joining ourselves would hang. Leak instead. */
    unlock(c);
    fprintf(stderr, "libshrink: shrink_client_free() called from a callback; ignored\n");
    return;
  }
  c->stopping = true;
  unlock(c);
  if (c->thread_started) {
    uint64_t one = 1;
    if (write(c->wakefd, &one, sizeof one) < 0) {
      /* Cannot fail short of a counter overflow; the join would tell. */
    }
    pthread_join(c->thread, NULL);
  }
  /* A dispatch pass of a NO_THREAD client finishes first. */
  pthread_mutex_lock(&c->dispatch_lock);
  pthread_mutex_unlock(&c->dispatch_lock);

  /* Closing the connection unregisters everything on the agent's side. */
  if (c->sock >= 0)
    close(c->sock);
  for (size_t i = 0; i < c->nshrinkers; i++) {
    shrink_shrinker *s = c->shrinkers[i];
    if (s->free_func)
      s->free_func(s->user_data);
    free(s);
  }
  free(c->shrinkers);
  if (c->relief) {
    if (c->relief->free_func)
      c->relief->free_func(c->relief->user_data);
    free(c->relief);
  }
  free(c->outq);
  free(c->rxbuf);
  if (c->wakefd >= 0)
    close(c->wakefd);
  close(c->timerfd);
  close(c->epfd);
  pthread_cond_destroy(&c->idle_cond);
  pthread_mutex_destroy(&c->dispatch_lock);
  pthread_mutex_destroy(&c->lock);
  free(c);
}

SHRINK_PUBLIC int shrink_client_register(shrink_client *c, const char *name,
                                         int priority, shrink_func func,
                                         void *user_data, shrink_free_func free_func,
                                         shrink_shrinker **out) {
  if (!c || !name || !func || !out || priority < SHRINK_PRIORITY_MIN ||
      priority > SHRINK_PRIORITY_MAX)
    return -EINVAL;
  size_t name_len = strlen(name);
  if (name_len == 0)
    return -EINVAL;
  if (name_len >= PROTO_NAME_MAX)
    return -ENAMETOOLONG;
  shrink_shrinker *s = calloc(1, sizeof *s);
  if (!s)
    return -ENOMEM;
  memcpy(s->name, name, name_len + 1);
  s->client = c;
  s->priority = (uint16_t)priority;
  s->func = func;
  s->user_data = user_data;
  s->free_func = free_func;

  lock(c);
  int r = 0;
  if (c->stopping)
    r = -EINVAL;
  if (r == 0 && c->nshrinkers == c->shrinkers_cap) {
    size_t cap = c->shrinkers_cap ? c->shrinkers_cap * 2 : 8;
    shrink_shrinker **v = realloc(c->shrinkers, cap * sizeof *v);
    if (v) {
      c->shrinkers = v;
      c->shrinkers_cap = cap;
    } else
      r = -ENOMEM;
  }
  if (r == 0)
    r = ensure_thread_locked(c);
  if (r < 0) {
    unlock(c);
    free(s);
    return r;
  }
  s->id = c->next_id++;
  if (c->next_id == 0)
    c->next_id = 1;
  c->shrinkers[c->nshrinkers++] = s;
  /* Before the agent can hear of it: a callback may use the handle. */
  *out = s;
  if (c->state == CONN_READY && c->nsent < c->max_shrinkers)
    send_register_locked(c, s);
  unlock(c);
  return 0;
}

SHRINK_PUBLIC int shrink_client_unregister(shrink_client *c, shrink_shrinker *s) {
  if (!c || !s)
    return -EINVAL;
  lock(c);
  /* Compare pointers only: @s may be a stale handle we must not read. */
  size_t i = 0;
  while (i < c->nshrinkers && c->shrinkers[i] != s)
    i++;
  if (i == c->nshrinkers || s->unregistering) {
    unlock(c);
    return -EINVAL;
  }
  s->unregistering = true;
  if (s->busy) {
    if (in_own_callback(c)) {
      /* Its reply is still to be sent, by this very thread after the callback. */
      s->unreg_deferred = true;
      unlock(c);
      return 0;
    }
    while (s->busy)
      pthread_cond_wait(&c->idle_cond, &c->lock);
  }
  remove_shrinker_locked(c, s);
  unlock(c);
  if (s->free_func)
    s->free_func(s->user_data);
  free(s);
  return 0;
}

static int update_estimate(shrink_shrinker *s, bool has, size_t bytes) {
  if (!s)
    return -EINVAL;
  shrink_client *c = s->client;
  lock(c);
  if (s->has_estimate != has || s->estimate_bytes != bytes) {
    s->has_estimate = has;
    s->estimate_bytes = has ? bytes : 0;
    if (s->sent && c->state == CONN_READY && !s->unregistering) {
      proto_msg m = {.type = PROTO_MSG_ESTIMATE};
      m.u.estimate.id = s->id;
      m.u.estimate.flags = has ? PROTO_REGISTER_HAS_ESTIMATE : 0;
      m.u.estimate.estimate_bytes = s->estimate_bytes;
      send_locked(c, &m);
    }
  }
  unlock(c);
  return 0;
}

SHRINK_PUBLIC int shrink_shrinker_set_estimate(shrink_shrinker *s, size_t bytes) {
  return update_estimate(s, true, bytes);
}

SHRINK_PUBLIC int shrink_shrinker_clear_estimate(shrink_shrinker *s) {
  return update_estimate(s, false, 0);
}

SHRINK_PUBLIC int shrink_client_set_relief(shrink_client *c, shrink_relief_func func,
                                           void *user_data, shrink_free_func free_func) {
  if (!c || (!func && (user_data || free_func)))
    return -EINVAL;
  relief_handler *h = NULL;
  if (func) {
    h = malloc(sizeof *h);
    if (!h)
      return -ENOMEM;
    *h = (relief_handler){.func = func, .user_data = user_data,
                          .free_func = free_func, .refs = 1};
  }
  lock(c);
  int r = c->stopping ? -EINVAL : 0;
  if (r == 0 && h)
    r = ensure_thread_locked(c);
  if (r < 0) {
    unlock(c);
    free(h);
    return r;
  }
  relief_handler *old = c->relief;
  c->relief = h;
  /* A running relief callback holds its own reference and frees it after. */
  if (old && --old->refs > 0)
    old = NULL;
  unlock(c);
  if (old) {
    if (old->free_func)
      old->free_func(old->user_data);
    free(old);
  }
  return 0;
}

SHRINK_PUBLIC int shrink_client_get_fd(shrink_client *c) {
  if (!c || !(c->flags & SHRINK_CLIENT_NO_THREAD))
    return -EINVAL;
  return c->epfd;
}

SHRINK_PUBLIC int shrink_client_dispatch(shrink_client *c) {
  if (!c || !(c->flags & SHRINK_CLIENT_NO_THREAD))
    return -EINVAL;
  lock(c);
  bool nested = in_own_callback(c);
  unlock(c);
  if (nested)
    return -EDEADLK;
  struct epoll_event ev[EPOLL_EVENTS_MAX];
  pthread_mutex_lock(&c->dispatch_lock);
  int n = epoll_wait(c->epfd, ev, EPOLL_EVENTS_MAX, 0);
  if (n > 0)
    handle_events(c, ev, n);
  pthread_mutex_unlock(&c->dispatch_lock);
  return 0;
}

SHRINK_PUBLIC bool shrink_client_is_connected(shrink_client *c) {
  if (!c)
    return false;
  lock(c);
  bool ready = c->state == CONN_READY;
  unlock(c);
  return ready;
}
