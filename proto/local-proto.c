/* SPDX-License-Identifier: MIT */
/* The local shrink protocol codec: see local-proto.h for the wire layout. */
#include "local-proto.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "wire.h"

static const char *const msg_type_names[] = {
  [PROTO_MSG_HELLO] = "HELLO",
  [PROTO_MSG_WELCOME] = "WELCOME",
  [PROTO_MSG_REGISTER] = "REGISTER",
  [PROTO_MSG_UNREGISTER] = "UNREGISTER",
  [PROTO_MSG_ESTIMATE] = "ESTIMATE",
  [PROTO_MSG_SHRINK] = "SHRINK",
  [PROTO_MSG_SHRINK_DONE] = "SHRINK_DONE",
  [PROTO_MSG_RELIEF] = "RELIEF",
  [PROTO_MSG_ERROR] = "ERROR",
  [PROTO_MSG_CONTROL] = "CONTROL",
  [PROTO_MSG_CONTROL_REPLY] = "CONTROL_REPLY",
};

static const char *const error_names[] = {
  [PROTO_ERR_NONE] = "none",
  [PROTO_ERR_VERSION] = "no common protocol version",
  [PROTO_ERR_TYPE] = "unknown message type",
  [PROTO_ERR_LENGTH] = "wrong message length",
  [PROTO_ERR_STRING] = "malformed string",
  [PROTO_ERR_RANGE] = "value out of range",
  [PROTO_ERR_RESERVED] = "reserved field not zero",
  [PROTO_ERR_STATE] = "message not valid in this state",
  [PROTO_ERR_DUPLICATE] = "shrinker id already registered",
  [PROTO_ERR_UNKNOWN_ID] = "no such shrinker id",
  [PROTO_ERR_LIMIT] = "limit exceeded",
  [PROTO_ERR_PERMISSION] = "permission denied",
  [PROTO_ERR_COMMAND] = "command failed",
};

static const char *const level_names[] = {"soft", "hard"};
static const char *const reason_names[] = {"unspecified", "manual", "balloon",
                                           "migration", "pressure", "host"};

const char *proto_msg_type_name(unsigned type) {
  if (type < sizeof msg_type_names / sizeof *msg_type_names && msg_type_names[type])
    return msg_type_names[type];
  return "UNKNOWN";
}

const char *proto_error_name(unsigned code) {
  if (code <= PROTO_ERR_LAST)
    return error_names[code];
  return "unknown error";
}

const char *proto_level_name(unsigned level) {
  return level <= PROTO_LEVEL_HARD ? level_names[level] : "unknown";
}

const char *proto_reason_name(unsigned reason) {
  return reason <= PROTO_REASON_LAST ? reason_names[reason] : "unknown";
}

uint16_t proto_negotiate_version(uint16_t peer_min, uint16_t peer_max) {
  if (peer_min > peer_max)
    return 0;
  uint16_t best = peer_max < PROTO_VERSION ? peer_max : PROTO_VERSION;
  if (best < peer_min || best < PROTO_VERSION_MIN)
    return 0;
  return best;
}

/* ---- encoding ---- */

/* A wire string: u16 count including the NUL, then the bytes. */
static int put_string(wire_writer *w, const char *s, size_t max, bool may_be_empty) {
  size_t n = s ? strlen(s) : 0;
  if ((!may_be_empty && n == 0) || n + 1 > max)
    return -EINVAL;
  wire_put_u16(w, (uint16_t)(n + 1));
  wire_put_bytes(w, s ? s : "", n + 1);
  return 0;
}

static int encode_body(const proto_msg *m, wire_writer *w) {
  switch (m->type) {
  case PROTO_MSG_HELLO:
    if (m->u.hello.min_version == 0 || m->u.hello.min_version > m->u.hello.max_version)
      return -EINVAL;
    wire_put_u16(w, m->u.hello.min_version);
    wire_put_u16(w, m->u.hello.max_version);
    wire_put_u32(w, 0);
    return put_string(w, m->u.hello.name, PROTO_NAME_MAX, false);
  case PROTO_MSG_WELCOME:
    wire_put_u16(w, m->u.welcome.version);
    wire_put_u16(w, 0);
    wire_put_u32(w, m->u.welcome.max_shrinkers);
    return 0;
  case PROTO_MSG_REGISTER:
    if (m->u.reg.priority > PROTO_PRIORITY_MAX || (m->u.reg.flags & ~PROTO_REGISTER_HAS_ESTIMATE))
      return -EINVAL;
    wire_put_u32(w, m->u.reg.id);
    wire_put_u16(w, m->u.reg.priority);
    wire_put_u16(w, m->u.reg.flags);
    wire_put_u64(w, (m->u.reg.flags & PROTO_REGISTER_HAS_ESTIMATE) ? m->u.reg.estimate_bytes : 0);
    return put_string(w, m->u.reg.name, PROTO_NAME_MAX, false);
  case PROTO_MSG_UNREGISTER:
    wire_put_u32(w, m->u.unreg.id);
    wire_put_u32(w, 0);
    return 0;
  case PROTO_MSG_ESTIMATE:
    if (m->u.estimate.flags & ~PROTO_REGISTER_HAS_ESTIMATE)
      return -EINVAL;
    wire_put_u32(w, m->u.estimate.id);
    wire_put_u32(w, m->u.estimate.flags);
    wire_put_u64(w, m->u.estimate.flags ? m->u.estimate.estimate_bytes : 0);
    return 0;
  case PROTO_MSG_SHRINK:
    if (m->u.shrink.level > PROTO_LEVEL_HARD || m->u.shrink.reason > PROTO_REASON_LAST ||
        m->u.shrink.deadline_ms == 0 || m->u.shrink.deadline_ms > PROTO_DEADLINE_MAX_MS)
      return -EINVAL;
    wire_put_u64(w, m->u.shrink.round_id);
    wire_put_u32(w, m->u.shrink.id);
    wire_put_u8(w, m->u.shrink.level);
    wire_put_u8(w, m->u.shrink.reason);
    wire_put_u16(w, 0);
    wire_put_u64(w, m->u.shrink.target_bytes);
    wire_put_u32(w, m->u.shrink.deadline_ms);
    wire_put_u32(w, 0);
    return 0;
  case PROTO_MSG_SHRINK_DONE:
    if (m->u.done.flags & ~PROTO_DONE_TRIMMED)
      return -EINVAL;
    wire_put_u64(w, m->u.done.round_id);
    wire_put_u32(w, m->u.done.id);
    wire_put_u32(w, m->u.done.flags);
    wire_put_u64(w, m->u.done.freed_bytes);
    wire_put_u32(w, m->u.done.elapsed_us);
    wire_put_u32(w, 0);
    return 0;
  case PROTO_MSG_RELIEF:
    if (m->u.relief.reason > PROTO_REASON_LAST)
      return -EINVAL;
    wire_put_u64(w, m->u.relief.round_id);
    wire_put_u8(w, m->u.relief.reason);
    wire_put_u8(w, 0);
    wire_put_u16(w, 0);
    wire_put_u32(w, 0);
    return 0;
  case PROTO_MSG_ERROR:
    if (m->u.error.code == PROTO_ERR_NONE || m->u.error.code > PROTO_ERR_LAST)
      return -EINVAL;
    wire_put_u16(w, m->u.error.code);
    wire_put_u16(w, 0);
    wire_put_u32(w, m->u.error.ref);
    return put_string(w, m->u.error.text, PROTO_ERROR_TEXT_MAX, true);
  case PROTO_MSG_CONTROL:
  case PROTO_MSG_CONTROL_REPLY: {
    const proto_control *c = &m->u.control;
    uint32_t allowed = m->type == PROTO_MSG_CONTROL_REPLY ? PROTO_CONTROL_MORE : 0;
    if ((c->flags & ~allowed) || !c->text || c->text_len == 0 ||
        c->text_len + 1 > PROTO_CONTROL_TEXT_MAX || memchr(c->text, '\0', c->text_len))
      return -EINVAL;
    wire_put_u32(w, c->request_id);
    wire_put_u32(w, c->flags);
    wire_put_u32(w, c->text_len + 1);
    wire_put_bytes(w, c->text, c->text_len);
    wire_put_u8(w, 0);
    return 0;
  }
  }
  return -EINVAL;
}

ssize_t proto_encode(const proto_msg *msg, void *buf, size_t buf_size) {
  wire_writer w = {.p = buf, .len = buf_size};
  wire_put_u8(&w, PROTO_VERSION);
  wire_put_u8(&w, (uint8_t)msg->type);
  wire_put_u16(&w, 0);
  wire_put_u32(&w, 0); /* length, patched below */
  int r = encode_body(msg, &w);
  if (r < 0)
    return r;
  if (w.overflow || w.pos > PROTO_MSG_MAX)
    return -EMSGSIZE;
  uint8_t *len = (uint8_t *)buf + 4;
  for (int i = 0; i < 4; i++)
    len[i] = (uint8_t)(w.pos >> (8 * i));
  return (ssize_t)w.pos;
}

/* ---- decoding: validate everything, allocate nothing ---- */

typedef struct {
  wire_reader r;
  proto_error err;
} decoder;

static void fail(decoder *d, proto_error e) {
  if (d->err == PROTO_ERR_NONE)
    d->err = e;
}

static void reserved_zero(decoder *d, uint64_t v) {
  if (v != 0)
    fail(d, PROTO_ERR_RESERVED);
}

/* A string of 1..max bytes counting its NUL, NUL-terminated, no NUL inside. */
static const char *get_string(decoder *d, uint32_t count, size_t max, bool may_be_empty) {
  if (d->r.overflow)
    return NULL;
  if (count > d->r.len - d->r.pos) {
    fail(d, PROTO_ERR_LENGTH);
    return NULL;
  }
  const char *s = (const char *)wire_take(&d->r, count);
  if (count == 0 || count > max || (!may_be_empty && count < 2) || s[count - 1] != '\0' ||
      memchr(s, '\0', count - 1) != NULL) {
    fail(d, PROTO_ERR_STRING);
    return NULL;
  }
  return s;
}

static void decode_body(decoder *d, proto_msg *m) {
  switch (m->type) {
  case PROTO_MSG_HELLO: {
    proto_hello *h = &m->u.hello;
    h->min_version = wire_u16(&d->r);
    h->max_version = wire_u16(&d->r);
    reserved_zero(d, wire_u32(&d->r));
    h->name = get_string(d, wire_u16(&d->r), PROTO_NAME_MAX, false);
    if (!d->r.overflow && (h->min_version == 0 || h->min_version > h->max_version))
      fail(d, PROTO_ERR_RANGE);
    return;
  }
  case PROTO_MSG_WELCOME:
    m->u.welcome.version = wire_u16(&d->r);
    reserved_zero(d, wire_u16(&d->r));
    m->u.welcome.max_shrinkers = wire_u32(&d->r);
    if (!d->r.overflow && m->u.welcome.version == 0)
      fail(d, PROTO_ERR_RANGE);
    return;
  case PROTO_MSG_REGISTER: {
    proto_register *g = &m->u.reg;
    g->id = wire_u32(&d->r);
    g->priority = wire_u16(&d->r);
    g->flags = wire_u16(&d->r);
    g->estimate_bytes = wire_u64(&d->r);
    g->name = get_string(d, wire_u16(&d->r), PROTO_NAME_MAX, false);
    if (g->flags & ~PROTO_REGISTER_HAS_ESTIMATE)
      fail(d, PROTO_ERR_RESERVED);
    else if (!(g->flags & PROTO_REGISTER_HAS_ESTIMATE))
      reserved_zero(d, g->estimate_bytes);
    if (g->priority > PROTO_PRIORITY_MAX)
      fail(d, PROTO_ERR_RANGE);
    return;
  }
  case PROTO_MSG_UNREGISTER:
    m->u.unreg.id = wire_u32(&d->r);
    reserved_zero(d, wire_u32(&d->r));
    return;
  case PROTO_MSG_ESTIMATE:
    m->u.estimate.id = wire_u32(&d->r);
    m->u.estimate.flags = wire_u32(&d->r);
    m->u.estimate.estimate_bytes = wire_u64(&d->r);
    if (m->u.estimate.flags & ~PROTO_REGISTER_HAS_ESTIMATE)
      fail(d, PROTO_ERR_RESERVED);
    else if (!m->u.estimate.flags)
      reserved_zero(d, m->u.estimate.estimate_bytes);
    return;
  case PROTO_MSG_SHRINK: {
    proto_shrink *s = &m->u.shrink;
    s->round_id = wire_u64(&d->r);
    s->id = wire_u32(&d->r);
    s->level = wire_u8(&d->r);
    s->reason = wire_u8(&d->r);
    reserved_zero(d, wire_u16(&d->r));
    s->target_bytes = wire_u64(&d->r);
    s->deadline_ms = wire_u32(&d->r);
    reserved_zero(d, wire_u32(&d->r));
    if (s->level > PROTO_LEVEL_HARD || s->reason > PROTO_REASON_LAST || s->deadline_ms == 0 ||
        s->deadline_ms > PROTO_DEADLINE_MAX_MS)
      fail(d, PROTO_ERR_RANGE);
    return;
  }
  case PROTO_MSG_SHRINK_DONE: {
    proto_shrink_done *s = &m->u.done;
    s->round_id = wire_u64(&d->r);
    s->id = wire_u32(&d->r);
    s->flags = wire_u32(&d->r);
    s->freed_bytes = wire_u64(&d->r);
    s->elapsed_us = wire_u32(&d->r);
    reserved_zero(d, wire_u32(&d->r));
    if (s->flags & ~PROTO_DONE_TRIMMED)
      fail(d, PROTO_ERR_RESERVED);
    return;
  }
  case PROTO_MSG_RELIEF:
    m->u.relief.round_id = wire_u64(&d->r);
    m->u.relief.reason = wire_u8(&d->r);
    reserved_zero(d, wire_u8(&d->r));
    reserved_zero(d, wire_u16(&d->r));
    reserved_zero(d, wire_u32(&d->r));
    if (m->u.relief.reason > PROTO_REASON_LAST)
      fail(d, PROTO_ERR_RANGE);
    return;
  case PROTO_MSG_ERROR:
    m->u.error.code = wire_u16(&d->r);
    reserved_zero(d, wire_u16(&d->r));
    m->u.error.ref = wire_u32(&d->r);
    m->u.error.text = get_string(d, wire_u16(&d->r), PROTO_ERROR_TEXT_MAX, true);
    if (m->u.error.code == PROTO_ERR_NONE || m->u.error.code > PROTO_ERR_LAST)
      fail(d, PROTO_ERR_RANGE);
    return;
  case PROTO_MSG_CONTROL:
  case PROTO_MSG_CONTROL_REPLY: {
    proto_control *c = &m->u.control;
    uint32_t allowed = m->type == PROTO_MSG_CONTROL_REPLY ? PROTO_CONTROL_MORE : 0;
    c->request_id = wire_u32(&d->r);
    c->flags = wire_u32(&d->r);
    uint32_t count = wire_u32(&d->r);
    if (c->flags & ~allowed)
      fail(d, PROTO_ERR_RESERVED);
    c->text = get_string(d, count, PROTO_CONTROL_TEXT_MAX, false);
    c->text_len = c->text ? count - 1 : 0;
    return;
  }
  }
  fail(d, PROTO_ERR_TYPE);
}

int proto_decode(const void *buf, size_t len, proto_msg *out, proto_error *err) {
  decoder d = {.r = {.p = buf, .len = len}};
  memset(out, 0, sizeof *out);

  if (len < PROTO_HEADER_SIZE || len > PROTO_MSG_MAX) {
    fail(&d, PROTO_ERR_LENGTH);
    goto out;
  }
  uint8_t version = wire_u8(&d.r);
  uint8_t type = wire_u8(&d.r);
  uint16_t flags = wire_u16(&d.r);
  uint32_t length = wire_u32(&d.r);
  out->type = (proto_msg_type)type;
  if (length != len) {
    fail(&d, PROTO_ERR_LENGTH);
    goto out;
  }
  if (type == 0 || type > PROTO_MSG_TYPE_LAST) {
    fail(&d, PROTO_ERR_TYPE);
    goto out;
  }
  /* A HELLO is read whatever version it is framed with: it is what negotiates. */
  if (type != PROTO_MSG_HELLO && (version < PROTO_VERSION_MIN || version > PROTO_VERSION)) {
    fail(&d, PROTO_ERR_VERSION);
    goto out;
  }
  if (flags != 0) {
    fail(&d, PROTO_ERR_RESERVED);
    goto out;
  }
  decode_body(&d, out);
  /* A body cut short reads zeros past its end; say so rather than
   * reporting whatever range check those zeros then failed. */
  if (d.r.overflow)
    d.err = PROTO_ERR_LENGTH;
  else if (d.r.pos != len)
    fail(&d, PROTO_ERR_LENGTH);

out:
  if (err)
    *err = d.err;
  if (d.err != PROTO_ERR_NONE) {
    proto_msg_type t = out->type;
    memset(out, 0, sizeof *out);
    out->type = t; /* kept so that an error reply can say which type failed */
    return -EBADMSG;
  }
  return 0;
}

/* ---- socket helpers ---- */

/* Every message but CONTROL and CONTROL_REPLY fits: the largest is an
 * ERROR with its text. Kept small because the agent locks its stack. */
#define PROTO_SMALL_MSG_MAX (PROTO_HEADER_SIZE + 8 + 2 + PROTO_ERROR_TEXT_MAX)

int proto_send(int fd, const proto_msg *msg, bool nonblock) {
  uint8_t small[PROTO_SMALL_MSG_MAX];
  uint8_t *buf = small;
  ssize_t n = proto_encode(msg, small, sizeof small);
  if (n == -EMSGSIZE) {
    buf = malloc(PROTO_MSG_MAX);
    if (!buf)
      return -ENOMEM;
    n = proto_encode(msg, buf, PROTO_MSG_MAX);
  }
  ssize_t sent = n;
  if (n >= 0) {
    do
      sent = send(fd, buf, (size_t)n, MSG_NOSIGNAL | (nonblock ? MSG_DONTWAIT : 0));
    while (sent < 0 && errno == EINTR);
  }
  int err = errno;
  if (buf != small)
    free(buf);
  if (n < 0)
    return (int)n;
  if (sent < 0)
    return -err;
  return sent == n ? 0 : -EIO;
}

int proto_recv(int fd, void *buf, proto_msg *out, proto_error *err) {
  struct iovec iov = {.iov_base = buf, .iov_len = PROTO_MSG_MAX};
  struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
  ssize_t n;
  if (err)
    *err = PROTO_ERR_NONE;
  do
    n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
  while (n < 0 && errno == EINTR);
  if (n < 0)
    return -errno;
  if (n == 0)
    return -ECONNRESET;
  if (mh.msg_flags & MSG_TRUNC) {
    memset(out, 0, sizeof *out);
    if (err)
      *err = PROTO_ERR_LENGTH;
    return -EBADMSG;
  }
  return proto_decode(buf, (size_t)n, out, err);
}
