/* SPDX-License-Identifier: MIT */
/*
 * The local server (see server.h).
 */
#include "server.h"

#include "loop.h"

#include <errno.h>
#include <glib-unix.h>
#include <glib/gstdio.h>
#include <malloc.h>
#include <fcntl.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "errors.h"
#include "local-proto.h"
#include "memory.h"

typedef struct Peer Peer;

struct AgentServer {
  char *path;
  int listen_fd;
  guint listen_id;
  guint accept_retry_id; /* one-shot, after EMFILE */
  dev_t sock_dev;
  ino_t sock_ino;
  unsigned max_clients;
  AgentServerLimits limits;
  GHashTable *per_uid;   /* uid -> its connections (uint), non-root only */
  gsize out_bytes_nonroot; /* memory of replies queued for non-root peers, together */
  char *lock_path;
  int lock_fd;
  AgentRegistry *registry;
  AgentRounds *rounds;
  AgentCommands *commands;
  GQueue peers;
  void *buf; /* one receive buffer: the main loop reads one packet at a time */
};

struct Peer {
  int refs;
  AgentServer *server; /* NULL once closed */
  int fd;
  guint in_id;
  guint out_id;
  guint hello_id; /* the HELLO timeout, until HELLO */
  gboolean counted; /* in per_uid */
  pid_t pid;
  uid_t uid;
  AgentClient *client; /* after HELLO */
  GQueue out;          /* OutReply: replies waiting for the socket */
  gsize out_bytes;     /* the memory they hold: see reply_cost() */
  guint calls; /* CONTROL requests in flight */
  GList *link;
};

/* A reply on its way out, cut into CONTROL_REPLY chunks as the socket
 * takes them (so a large reply is held once, as text, not also as
 * encoded chunks). */
typedef struct {
  uint32_t request_id;
  char *text;
  gsize len;
  gsize off;  /* what was sent already */
  gsize cost; /* what it holds until it is freed, sent or not */
} OutReply;

static void out_reply_free(OutReply *r) {
  g_free(r->text);
  g_free(r);
}

static void peer_close(Peer *peer, const char *why);
static void watch_listener(AgentServer *self);

static guint uid_conn_count(const AgentServer *self, uid_t uid) {
  return GPOINTER_TO_UINT(g_hash_table_lookup(self->per_uid, GUINT_TO_POINTER(uid)));
}

static void uid_conn_add(AgentServer *self, uid_t uid, int delta) {
  guint n = uid_conn_count(self, uid);

  n = delta > 0 ? n + 1 : n - 1;
  if (n == 0)
    g_hash_table_remove(self->per_uid, GUINT_TO_POINTER(uid));
  else
    g_hash_table_insert(self->per_uid, GUINT_TO_POINTER(uid), GUINT_TO_POINTER(n));
}

static Peer *peer_ref(Peer *peer) {
  peer->refs++;
  return peer;
}

static void peer_unref(Peer *peer) {
  if (--peer->refs > 0)
    return;
  g_queue_clear_full(&peer->out, (GDestroyNotify)out_reply_free);
  g_free(peer);
}

/* Sends a typed ERROR without blocking; a failure does not matter (the
 * peer is usually being dropped). */
static void send_error(Peer *peer, proto_error code, uint32_t ref, const char *text) {
  proto_msg msg = {.type = PROTO_MSG_ERROR};
  char buf[PROTO_ERROR_TEXT_MAX];

  g_strlcpy(buf, text ? text : proto_error_name(code), sizeof(buf));
  msg.u.error.code = (uint16_t)code;
  msg.u.error.ref = ref;
  msg.u.error.text = buf;
  proto_send(peer->fd, &msg, true);
}

/* Drops @peer for a protocol violation: ERROR @code, then disconnect. */
static void peer_reject(Peer *peer, proto_error code, uint32_t ref, const char *text) {
  g_debug("peer pid %d: %s (%s)", (int)peer->pid, proto_error_name(code), text ? text : "");
  send_error(peer, code, ref, text);
  peer_close(peer, proto_error_name(code));
}

/* ---- output queue (CONTROL_REPLY) ---- */

static gboolean peer_writable_cb(gint fd, GIOCondition cond, gpointer data);

/* Sends what is queued, a chunk at a time. Returns FALSE if @peer was
 * closed. */
static gboolean peer_flush(Peer *peer) {
  const gsize chunk_max = PROTO_CONTROL_TEXT_MAX - 1;
  OutReply *r;

  while ((r = g_queue_peek_head(&peer->out))) {
    gsize n = MIN(chunk_max, r->len - r->off);
    proto_msg msg = {.type = PROTO_MSG_CONTROL_REPLY};
    /* Not proto_send(): its buffer is on the stack, and a full chunk would
     * leave 64 KiB of stack resident (and locked) for good. A full chunk's
     * buffer here is a mapping of its own (main.c sets M_MMAP_THRESHOLD),
     * returned when freed. */
    g_autofree guint8 *buf = g_malloc(n + PROTO_HEADER_SIZE + 16);
    ssize_t len, sent;

    msg.u.control.request_id = r->request_id;
    msg.u.control.flags = r->off + n < r->len ? PROTO_CONTROL_MORE : 0;
    msg.u.control.text = r->text + r->off; /* the codec takes text_len bytes */
    msg.u.control.text_len = (uint32_t)n;
    len = proto_encode(&msg, buf, n + PROTO_HEADER_SIZE + 16);
    if (len < 0) {
      peer_close(peer, "cannot encode a reply");
      return FALSE;
    }
    do
      sent = send(peer->fd, buf, (size_t)len, MSG_DONTWAIT | MSG_NOSIGNAL);
    while (sent < 0 && errno == EINTR);
    if (sent < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (!peer->out_id)
        peer->out_id = agent_loop_add_fd(peer->fd, G_IO_OUT, peer_writable_cb, peer_ref(peer),
                                        (GDestroyNotify)peer_unref);
      return TRUE;
    }
    if (sent < 0) {
      peer_close(peer, g_strerror(errno));
      return FALSE;
    }
    r->off += n;
    if (r->off == r->len) {
      if (r->len >= AGENT_MEMORY_RELEASE_MIN)
        agent_memory_release_soon();
      peer->out_bytes -= r->cost;
      if (peer->uid != 0)
        peer->server->out_bytes_nonroot -= r->cost;
      out_reply_free(g_queue_pop_head(&peer->out));
    }
  }
  if (peer->out_id) {
    g_source_remove(peer->out_id);
    peer->out_id = 0;
  }
  return TRUE;
}

static gboolean peer_writable_cb(gint fd, GIOCondition cond, gpointer data) {
  Peer *peer = data;

  if (!peer->server)
    return G_SOURCE_REMOVE;
  peer->out_id = 0; /* peer_flush adds it again if still needed */
  peer_flush(peer);
  return G_SOURCE_REMOVE;
}

/* What a queued reply holds: its text as malloc keeps it (rounding, or
 * the pages of its own mapping), its OutReply and its queue link with
 * their headers. The bounds count this, not the text: a reply's text is
 * held whole until its last chunk is sent. */
static gsize reply_cost(const char *text) {
  return malloc_usable_size((void *)text) + 2 * 32 + sizeof(OutReply);
}

/* Queues @text (@len bytes and a NUL, taken) as the reply to
 * @request_id and sends what fits. A peer that would pass its bound, or
 * (not root) the bound of all non-root peers together, is closed
 * instead: replies nobody reads must not fill the agent's locked memory. */
static void peer_queue_reply(Peer *peer, uint32_t request_id, char *text, gsize len) {
  AgentServer *server = peer->server;
  gboolean root = peer->uid == 0;
  gsize cost;
  OutReply *r;

  /* A GString's text has room to grow (up to twice its length), which
   * malloc's perturbation or a later use may touch: give it back. */
  if (malloc_usable_size(text) > len + 1 + 256)
    text = g_realloc(text, len + 1);
  cost = reply_cost(text);
  if (peer->out_bytes + cost > (root ? AGENT_SERVER_OUT_ROOT_MAX : AGENT_SERVER_OUT_MAX) ||
      (!root && server->out_bytes_nonroot + cost > AGENT_SERVER_OUT_NONROOT_MAX)) {
    g_free(text);
    peer_close(peer, "does not read its replies");
    return;
  }
  r = g_new0(OutReply, 1);
  r->request_id = request_id;
  r->text = text;
  r->len = len;
  r->cost = cost;
  g_queue_push_tail(&peer->out, r);
  peer->out_bytes += cost;
  if (!root)
    server->out_bytes_nonroot += cost;
  peer_flush(peer);
}

/* ---- CONTROL ---- */

typedef struct {
  Peer *peer;
  uint32_t request_id;
} ControlCall;

static void control_call_free(ControlCall *call) {
  call->peer->calls--;
  peer_unref(call->peer);
  g_free(call);
}

static void control_reply_cb(char *text, gsize len, gpointer user_data) {
  ControlCall *call = user_data;

  if (call->peer->server && len > 0)
    peer_queue_reply(call->peer, call->request_id, text, len);
  else
    g_free(text);
}

static void handle_control(Peer *peer, const proto_control *control) {
  AgentServer *server = peer->server;
  AgentCaller caller = {AGENT_CALLER_LOCAL, peer->uid, peer->pid};
  ControlCall *call;

  if (peer->calls >= AGENT_SERVER_CONTROL_CALLS) {
    send_error(peer, PROTO_ERR_LIMIT, PROTO_MSG_CONTROL, "too many commands in flight");
    return;
  }
  call = g_new0(ControlCall, 1);
  call->peer = peer_ref(peer);
  call->request_id = control->request_id;
  peer->calls++;
  agent_commands_handle_text(server->commands, control->text, control->text_len, &caller,
                             control_reply_cb, call, (GDestroyNotify)control_call_free);
}

/* ---- messages ---- */

static void handle_hello(Peer *peer, const proto_hello *hello) {
  AgentServer *server = peer->server;
  proto_msg msg = {.type = PROTO_MSG_WELCOME};
  uint16_t version = proto_negotiate_version(hello->min_version, hello->max_version);
  char text[PROTO_ERROR_TEXT_MAX];

  if (peer->hello_id) {
    g_source_remove(peer->hello_id);
    peer->hello_id = 0;
  }
  if (version == 0) {
    g_snprintf(text, sizeof(text), "this agent speaks versions %d..%d, not %u..%u",
               PROTO_VERSION_MIN, PROTO_VERSION, hello->min_version, hello->max_version);
    peer_reject(peer, PROTO_ERR_VERSION, PROTO_MSG_HELLO, text);
    return;
  }
  peer->client =
      agent_registry_add_client(server->registry, peer->fd, peer->pid, peer->uid, hello->name);
  msg.u.welcome.version = version;
  msg.u.welcome.max_shrinkers = agent_registry_max_shrinkers(server->registry);
  if (proto_send(peer->fd, &msg, true) < 0) {
    peer_close(peer, "cannot send WELCOME");
    return;
  }
  g_debug("peer pid %d uid %u is \"%s\" (version %u)", (int)peer->pid, (unsigned)peer->uid,
          peer->client->name, version);
}

/* Answers a semantic error: ERROR with the code from @error, connection stays. */
static void reply_error(Peer *peer, const GError *error, uint32_t ref) {
  proto_error code =
      error->domain == AGENT_PROTO_ERROR ? (proto_error)error->code : PROTO_ERR_COMMAND;

  g_debug("peer pid %d: %s", (int)peer->pid, error->message);
  send_error(peer, code, ref, error->message);
}

static void handle_message(Peer *peer, const proto_msg *msg) {
  AgentServer *server = peer->server;
  g_autoptr(GError) error = NULL;

  if (!peer->client) {
    if (msg->type == PROTO_MSG_HELLO)
      handle_hello(peer, &msg->u.hello);
    else
      peer_reject(peer, PROTO_ERR_STATE, msg->type, "the first message must be HELLO");
    return;
  }

  switch (msg->type) {
  case PROTO_MSG_REGISTER: {
    const proto_register *r = &msg->u.reg;
    AgentShrinker *s = agent_registry_add_shrinker(
        server->registry, peer->client, r->id, r->name, r->priority,
        (r->flags & PROTO_REGISTER_HAS_ESTIMATE) != 0, r->estimate_bytes, &error);

    if (!s)
      reply_error(peer, error, r->id);
    else
      g_debug("%s (pid %d) registered %s (id %u, priority %u)", peer->client->name, (int)peer->pid,
              s->name, s->id, s->priority);
    break;
  }
  case PROTO_MSG_UNREGISTER:
    if (!agent_registry_remove_shrinker(server->registry, peer->client, msg->u.unreg.id, &error))
      reply_error(peer, error, msg->u.unreg.id);
    break;
  case PROTO_MSG_ESTIMATE: {
    const proto_estimate *e = &msg->u.estimate;

    if (!agent_registry_set_estimate(server->registry, peer->client, e->id,
                                     (e->flags & PROTO_REGISTER_HAS_ESTIMATE) != 0,
                                     e->estimate_bytes, &error))
      reply_error(peer, error, e->id);
    break;
  }
  case PROTO_MSG_SHRINK_DONE:
    if (!agent_round_handle_done(server->rounds, peer->client, &msg->u.done, &error))
      reply_error(peer, error, msg->u.done.id);
    break;
  case PROTO_MSG_CONTROL: handle_control(peer, &msg->u.control); break;
  case PROTO_MSG_ERROR:
    g_debug("peer pid %d reports: %s (%s)", (int)peer->pid, proto_error_name(msg->u.error.code),
            msg->u.error.text);
    break;
  case PROTO_MSG_HELLO:
  case PROTO_MSG_WELCOME:
  case PROTO_MSG_SHRINK:
  case PROTO_MSG_RELIEF:
  case PROTO_MSG_CONTROL_REPLY:
  default:
    peer_reject(peer, PROTO_ERR_STATE, msg->type, "message not valid from a client now");
    break;
  }
}

static gboolean peer_readable_cb(gint fd, GIOCondition cond, gpointer data) {
  Peer *peer = data;
  gboolean keep = G_SOURCE_CONTINUE;

  if (!peer->server)
    return G_SOURCE_REMOVE;
  peer_ref(peer);
  /* A bounded burst: a flooding peer stays ready and is served again on
   * the next iteration, after everyone else. */
  for (int i = 0; i < AGENT_SERVER_BURST && peer->server; i++) {
    proto_msg msg;
    proto_error err = PROTO_ERR_NONE;
    int rc = proto_recv(peer->fd, peer->server->buf, &msg, &err);

    if (rc == -EAGAIN || rc == -EINTR)
      break;
    if (rc == -ECONNRESET) {
      peer_close(peer, "disconnected");
      break;
    }
    if (rc == -EBADMSG) {
      if (err == PROTO_ERR_NONE)
        err = PROTO_ERR_LENGTH;
      peer_reject(peer, err, 0, proto_error_name(err));
      break;
    }
    if (rc < 0) {
      peer_close(peer, g_strerror(-rc));
      break;
    }
    handle_message(peer, &msg);
  }
  if (!peer->server)
    keep = G_SOURCE_REMOVE;
  peer_unref(peer);
  return keep;
}

static void peer_close(Peer *peer, const char *why) {
  AgentServer *server = peer->server;

  if (!server)
    return;
  g_debug("peer pid %d closed: %s", (int)peer->pid, why);
  peer->server = NULL;
  if (peer->in_id) {
    g_source_remove(peer->in_id);
    peer->in_id = 0;
  }
  if (peer->out_id) {
    g_source_remove(peer->out_id);
    peer->out_id = 0;
  }
  if (peer->hello_id) {
    g_source_remove(peer->hello_id);
    peer->hello_id = 0;
  }
  if (peer->uid != 0)
    server->out_bytes_nonroot -= peer->out_bytes;
  peer->out_bytes = 0;
  g_queue_clear_full(&peer->out, (GDestroyNotify)out_reply_free);
  if (peer->counted)
    uid_conn_add(server, peer->uid, -1);
  peer->counted = FALSE;
  if (peer->client) {
    /* A client with many shrinkers leaves a hole in the heap. */
    if (g_queue_get_length(&peer->client->shrinkers) >= 64)
      agent_memory_release_soon();
    agent_registry_remove_client(server->registry, peer->client);
    peer->client = NULL;
  }
  close(peer->fd);
  peer->fd = -1;
  g_queue_delete_link(&server->peers, peer->link);
  peer->link = NULL;
  /* A descriptor is free again: resume accepting if EMFILE paused it. */
  if (server->accept_retry_id) {
    g_source_remove(server->accept_retry_id);
    server->accept_retry_id = 0;
    watch_listener(server);
  }
  peer_unref(peer); /* the server's */
}

/* ---- listening ---- */

static gboolean listen_cb(gint fd, GIOCondition cond, gpointer data);

static void watch_listener(AgentServer *self) {
  if (!self->listen_id)
    self->listen_id = agent_loop_add_fd(self->listen_fd, G_IO_IN, listen_cb, self, NULL);
}

static gboolean accept_retry_cb(gpointer data) {
  AgentServer *self = data;

  self->accept_retry_id = 0;
  watch_listener(self);
  return G_SOURCE_REMOVE;
}

static gboolean hello_timeout_cb(gpointer data) {
  Peer *peer = data;
  char text[PROTO_ERROR_TEXT_MAX];

  peer->hello_id = 0;
  if (!peer->server || peer->client)
    return G_SOURCE_REMOVE;
  g_snprintf(text, sizeof(text), "no HELLO within %u ms", peer->server->limits.hello_timeout_ms);
  peer_reject(peer, PROTO_ERR_STATE, 0, text);
  return G_SOURCE_REMOVE;
}

/* Why @self refuses one more connection of @uid, or NULL: the total less
 * root's reserve for others, the total for root, and the share of a uid. */
static const char *refusal(AgentServer *self, uid_t uid, char *buf, gsize size) {
  guint n = g_queue_get_length(&self->peers);
  unsigned reserve = MIN(self->limits.reserved_root_clients, self->max_clients - 1);

  if (n >= self->max_clients || (uid != 0 && n >= self->max_clients - reserve))
    return "too many clients";
  if (uid != 0 && self->limits.max_clients_per_uid &&
      uid_conn_count(self, uid) >= self->limits.max_clients_per_uid) {
    g_snprintf(buf, size, "too many connections from uid %u (max_clients_per_uid=%u)",
               (unsigned)uid, self->limits.max_clients_per_uid);
    return buf;
  }
  return NULL;
}

static void add_peer(AgentServer *self, int fd) {
  struct ucred cred = {0};
  socklen_t len = sizeof(cred);
  char buf[PROTO_ERROR_TEXT_MAX];
  const char *why;
  Peer *peer;

  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
    g_warning("cannot read a peer's credentials: %s", g_strerror(errno));
    close(fd);
    return;
  }
  peer = g_new0(Peer, 1);
  peer->refs = 1;
  peer->server = self;
  peer->fd = fd;
  peer->pid = cred.pid;
  peer->uid = cred.uid;
  g_queue_init(&peer->out);
  why = refusal(self, peer->uid, buf, sizeof(buf));
  g_queue_push_tail(&self->peers, peer);
  peer->link = g_queue_peek_tail_link(&self->peers);
  if (why) {
    peer_reject(peer, PROTO_ERR_LIMIT, 0, why);
    return;
  }
  if (peer->uid != 0) {
    uid_conn_add(self, peer->uid, 1);
    peer->counted = TRUE;
  }
  if (self->limits.hello_timeout_ms)
    peer->hello_id = g_timeout_add_full(G_PRIORITY_DEFAULT, self->limits.hello_timeout_ms,
                                        hello_timeout_cb, peer_ref(peer),
                                        (GDestroyNotify)peer_unref);
  peer->in_id = agent_loop_add_fd(fd, G_IO_IN | G_IO_HUP | G_IO_ERR, peer_readable_cb,
                                  peer_ref(peer), (GDestroyNotify)peer_unref);
}

static gboolean listen_cb(gint fd, GIOCondition cond, gpointer data) {
  AgentServer *self = data;

  for (int i = 0; i < AGENT_SERVER_BURST; i++) {
    int peer_fd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

    if (peer_fd >= 0) {
      add_peer(self, peer_fd);
      continue;
    }
    if (errno == EINTR || errno == ECONNABORTED)
      continue;
    if (errno == EMFILE || errno == ENFILE) {
      /* Level-triggered: pause instead of spinning, until a peer goes or
       * a second has passed. */
      g_warning("cannot accept a client: %s", g_strerror(errno));
      self->listen_id = 0;
      if (!self->accept_retry_id)
        self->accept_retry_id = g_timeout_add_seconds(1, accept_retry_cb, self);
      return G_SOURCE_REMOVE;
    }
    break; /* EAGAIN, or an error of one connection */
  }
  return G_SOURCE_CONTINUE;
}

/*
 * Takes the exclusive lock beside the socket: @lock_path, opened (made if
 * missing) and flock()ed without waiting. Returns its fd, or -1 with
 * @error: AGENT_ERROR_IN_USE if another agent holds it. The lock is
 * checked to be on the file that is at @lock_path now: an agent that
 * stopped removes it, and a lock on a removed file protects nothing.
 */
static int take_lock(const char *lock_path, GError **error) {
  for (int tries = 0; tries < 8; tries++) {
    int fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    struct stat held, now;
    int err;

    if (fd < 0) {
      err = errno;
      g_set_error(error, AGENT_ERROR, AGENT_ERROR_FAILED, "cannot open %s: %s", lock_path,
                  g_strerror(err));
      return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
      err = errno;
      close(fd);
      if (err == EWOULDBLOCK) {
        g_set_error(error, AGENT_ERROR, AGENT_ERROR_IN_USE,
                    "another shrinkd is running (it holds %s)", lock_path);
      } else {
        g_set_error(error, AGENT_ERROR, AGENT_ERROR_FAILED, "cannot lock %s: %s", lock_path,
                    g_strerror(err));
      }
      return -1;
    }
    if (fstat(fd, &held) == 0 && stat(lock_path, &now) == 0 && held.st_dev == now.st_dev &&
        held.st_ino == now.st_ino)
      return fd;
    close(fd); /* removed by the agent that held it: take the new one */
  }
  g_set_error(error, AGENT_ERROR, AGENT_ERROR_FAILED, "cannot lock %s: it keeps being replaced",
              lock_path);
  return -1;
}

/* Is somebody accepting connections at @path? */
static gboolean someone_listens(const struct sockaddr_un *addr, int *err) {
  int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  gboolean yes;

  if (fd < 0) {
    *err = errno;
    return FALSE;
  }
  yes = connect(fd, (const struct sockaddr *)addr, sizeof(*addr)) == 0;
  *err = yes ? 0 : errno;
  close(fd);
  return yes;
}

AgentServer *agent_server_new(const char *socket_path, unsigned max_clients,
                              AgentRegistry *registry, AgentRounds *rounds, AgentCommands *commands,
                              GError **error) {
  g_autofree char *dir = g_path_get_dirname(socket_path);
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  g_autofree char *lock_path = g_strconcat(socket_path, ".lock", NULL);
  struct stat st;
  AgentServer *self;
  int fd, err, lock_fd;

  if (strlen(socket_path) >= sizeof(addr.sun_path)) {
    g_set_error(error, AGENT_ERROR, AGENT_ERROR_INVALID, "socket path %s is too long", socket_path);
    return NULL;
  }
  strcpy(addr.sun_path, socket_path);

  if (g_mkdir_with_parents(dir, 0755) < 0) {
    err = errno;
    g_set_error(error, AGENT_ERROR, AGENT_ERROR_FAILED, "cannot create %s: %s", dir,
                g_strerror(err));
    return NULL;
  }
  /* Before the socket is judged: two agents started together would both
   * find it stale, and the second would remove the first one's. */
  lock_fd = take_lock(lock_path, error);
  if (lock_fd < 0)
    return NULL;
  if (lstat(socket_path, &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      g_set_error(error, AGENT_ERROR, AGENT_ERROR_IN_USE, "%s exists and is not a socket",
                  socket_path);
      goto fail;
    }
    if (someone_listens(&addr, &err)) {
      g_set_error(error, AGENT_ERROR, AGENT_ERROR_IN_USE, "another shrinkd is listening on %s",
                  socket_path);
      goto fail;
    }
    if (err != ECONNREFUSED) {
      g_set_error(error, AGENT_ERROR, AGENT_ERROR_FAILED, "cannot check %s: %s", socket_path,
                  g_strerror(err));
      goto fail;
    }
    g_info("removing the stale socket %s", socket_path);
    if (unlink(socket_path) < 0 && errno != ENOENT) {
      err = errno;
      g_set_error(error, AGENT_ERROR, AGENT_ERROR_FAILED, "cannot remove %s: %s", socket_path,
                  g_strerror(err));
      goto fail;
    }
  }

  fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 ||
      chmod(socket_path, 0666) < 0 || listen(fd, SOMAXCONN) < 0 || stat(socket_path, &st) < 0) {
    err = errno;
    g_set_error(error, AGENT_ERROR, AGENT_ERROR_FAILED, "cannot listen on %s: %s", socket_path,
                g_strerror(err));
    if (fd >= 0)
      close(fd);
    goto fail;
  }

  self = g_new0(AgentServer, 1);
  self->path = g_strdup(socket_path);
  self->listen_fd = fd;
  self->sock_dev = st.st_dev;
  self->sock_ino = st.st_ino;
  self->max_clients = MAX(max_clients, 1);
  self->registry = registry;
  self->rounds = rounds;
  self->commands = commands;
  self->buf = g_malloc(PROTO_MSG_MAX);
  self->per_uid = g_hash_table_new(g_direct_hash, g_direct_equal);
  self->lock_path = g_steal_pointer(&lock_path);
  self->lock_fd = lock_fd;
  self->limits = (AgentServerLimits){
      .max_clients_per_uid = AGENT_SERVER_CLIENTS_PER_UID_DEFAULT,
      .reserved_root_clients = AGENT_SERVER_ROOT_RESERVED_DEFAULT,
      .hello_timeout_ms = AGENT_SERVER_HELLO_TIMEOUT_DEFAULT_MS,
  };
  g_queue_init(&self->peers);
  watch_listener(self);
  return self;

fail:
  close(lock_fd);
  return NULL;
}

void agent_server_set_limits(AgentServer *self, const AgentServerLimits *limits) {
  self->limits = *limits;
}

void agent_server_free(AgentServer *self) {
  struct stat st;

  if (!self)
    return;
  while (!g_queue_is_empty(&self->peers))
    peer_close(g_queue_peek_head(&self->peers), "agent stopping");
  if (self->listen_id)
    g_source_remove(self->listen_id);
  if (self->accept_retry_id)
    g_source_remove(self->accept_retry_id);
  close(self->listen_fd);
  /* Only our own socket: a newer agent may have replaced it. */
  if (lstat(self->path, &st) == 0 && st.st_dev == self->sock_dev && st.st_ino == self->sock_ino)
    unlink(self->path);
  /* Removed while still held: an agent that waits for it finds it gone
   * (take_lock checks) and makes a new one. */
  unlink(self->lock_path);
  close(self->lock_fd);
  g_hash_table_unref(self->per_uid);
  g_free(self->lock_path);
  g_free(self->buf);
  g_free(self->path);
  g_free(self);
}

guint agent_server_n_peers(const AgentServer *self) {
  return g_queue_get_length((GQueue *)&self->peers);
}
