/* SPDX-License-Identifier: MIT */
/*
 * The channel's object scanner (see channel-frame.h).
 */
#include "channel-frame.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

typedef enum {
  ST_TOP,            /* between objects */
  ST_OBJECT,         /* inside an object, holding its bytes */
  ST_DISCARD_OBJECT, /* inside an object past a limit: tracking, not holding */
  ST_DISCARD_STRAY,  /* after a stray byte: until '{' or 0xFF */
  ST_SKIP_TO_SYNC,   /* until 0xFF */
} scan_state;

struct proto_frame {
  proto_frame_limits limits;
  uint8_t *buf;
  size_t len; /* bytes of the current object held */
  size_t cap;
  uint32_t depth;    /* of the current object, held or discarded */
  size_t string_len; /* bytes of the current string literal so far */
  scan_state state;
  bool in_string;
  bool escape;       /* the previous byte in a string was a backslash */
  bool object_ready; /* buf holds an object that was reported */
  uint8_t stray;
};

#define GROW_MIN 256

int proto_frame_new(const proto_frame_limits *limits, proto_frame **out) {
  static const proto_frame_limits host = {
      .max_bytes = PROTO_FRAME_OBJECT_MAX,
      .max_depth = PROTO_FRAME_DEPTH_MAX,
      .max_string = PROTO_FRAME_STRING_MAX,
  };
  proto_frame *f;

  if (!limits)
    limits = &host;
  /* max_bytes + 1 (the NUL) must not overflow. */
  if (limits->max_bytes < 2 || limits->max_bytes > SIZE_MAX / 2 || limits->max_depth < 1)
    return -EINVAL;
  f = calloc(1, sizeof(*f));
  if (!f)
    return -ENOMEM;
  f->limits = *limits;
  f->state = ST_TOP;
  *out = f;
  return 0;
}

void proto_frame_free(proto_frame *f) {
  if (!f)
    return;
  free(f->buf);
  free(f);
}

/* Forgets the current object (held or discarded) and its tracking. */
static void clear_object(proto_frame *f) {
  f->len = 0;
  f->depth = 0;
  f->string_len = 0;
  f->in_string = false;
  f->escape = false;
  f->object_ready = false;
}

void proto_frame_reset(proto_frame *f) {
  clear_object(f);
  f->state = ST_TOP;
}

void proto_frame_skip_to_sync(proto_frame *f) {
  clear_object(f);
  f->state = ST_SKIP_TO_SYNC;
}

bool proto_frame_is_skipping(const proto_frame *f) {
  return f->state == ST_SKIP_TO_SYNC;
}

size_t proto_frame_pending(const proto_frame *f) {
  return f->state == ST_OBJECT ? f->len : 0;
}

size_t proto_frame_capacity(const proto_frame *f) {
  return f->cap;
}

uint8_t proto_frame_stray_byte(const proto_frame *f) {
  return f->stray;
}

const char *proto_frame_object(const proto_frame *f, size_t *len) {
  if (!f->object_ready)
    return NULL;
  if (len)
    *len = f->len;
  return (const char *)f->buf;
}

const char *proto_frame_event_name(proto_frame_event event) {
  switch (event) {
  case PROTO_FRAME_NEED_MORE: return "need more input";
  case PROTO_FRAME_OBJECT: return "object";
  case PROTO_FRAME_SYNC: return "resynchronisation (0xFF)";
  case PROTO_FRAME_ERR_TOO_BIG: return "object too big";
  case PROTO_FRAME_ERR_TOO_DEEP: return "object nested too deep";
  case PROTO_FRAME_ERR_STRING: return "string too long";
  case PROTO_FRAME_ERR_STRAY: return "unexpected byte outside an object";
  case PROTO_FRAME_ERR_NO_MEMORY: return "out of memory";
  }
  return "unknown event";
}

/* Makes room for one more byte plus the terminating NUL. Returns false if
 * the buffer cannot grow (the caller checked the size limit before). */
static bool reserve_one(proto_frame *f) {
  size_t need = f->len + 2, cap;
  uint8_t *p;

  if (need <= f->cap)
    return true;
  cap = f->cap < GROW_MIN ? GROW_MIN : f->cap * 2;
  if (cap > f->limits.max_bytes + 1)
    cap = f->limits.max_bytes + 1;
  if (cap < need)
    cap = need;
  p = realloc(f->buf, cap);
  if (!p)
    return false;
  f->buf = p;
  f->cap = cap;
  return true;
}

/* After a large object, give its buffer back: a burst must not stay
 * resident (the agent locks its memory). */
static void shrink_buffer(proto_frame *f) {
  uint8_t *p;

  if (f->cap <= PROTO_FRAME_KEEP_BYTES)
    return;
  p = realloc(f->buf, PROTO_FRAME_KEEP_BYTES);
  if (p) {
    f->buf = p;
    f->cap = PROTO_FRAME_KEEP_BYTES;
  }
}

/* Starts an object with its '{'. */
static proto_frame_event begin_object(proto_frame *f) {
  clear_object(f);
  f->depth = 1;
  if (!reserve_one(f)) {
    f->state = ST_DISCARD_OBJECT;
    return PROTO_FRAME_ERR_NO_MEMORY;
  }
  f->buf[f->len++] = '{';
  f->state = ST_OBJECT;
  return PROTO_FRAME_NEED_MORE;
}

static bool is_space(uint8_t c) {
  return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/*
 * One byte inside an object (held or discarded). Returns an error event
 * when a limit is passed (the object is then discarded from here on),
 * PROTO_FRAME_OBJECT when it completes a held object, else NEED_MORE.
 */
static proto_frame_event object_byte(proto_frame *f, uint8_t c) {
  proto_frame_event err = PROTO_FRAME_NEED_MORE;
  bool hold = f->state == ST_OBJECT;

  if (hold) {
    if (f->len >= f->limits.max_bytes) {
      err = PROTO_FRAME_ERR_TOO_BIG;
    } else if (!reserve_one(f)) {
      err = PROTO_FRAME_ERR_NO_MEMORY;
    } else {
      f->buf[f->len++] = c;
    }
  }

  /* The structure is tracked whether the bytes are held or not. */
  if (f->in_string) {
    if (f->escape) {
      f->escape = false;
    } else if (c == '\\') {
      f->escape = true;
    } else if (c == '"') {
      f->in_string = false;
      goto out;
    }
    f->string_len++;
    if (hold && f->limits.max_string && f->string_len > f->limits.max_string &&
        err == PROTO_FRAME_NEED_MORE)
      err = PROTO_FRAME_ERR_STRING;
    goto out;
  }
  switch (c) {
  case '"':
    f->in_string = true;
    f->string_len = 0;
    break;
  case '{':
  case '[':
    if (f->depth < UINT32_MAX)
      f->depth++;
    if (hold && f->depth > f->limits.max_depth && err == PROTO_FRAME_NEED_MORE)
      err = PROTO_FRAME_ERR_TOO_DEEP;
    break;
  case '}':
  case ']':
    /* Mismatched pairs ('{' closed by ']') are the parser's to refuse. */
    if (--f->depth == 0) {
      if (err == PROTO_FRAME_NEED_MORE && hold) {
        f->buf[f->len] = '\0';
        f->object_ready = true;
        f->state = ST_TOP;
        return PROTO_FRAME_OBJECT;
      }
      /* A discarded object is over: back to the top level. */
      f->len = 0;
      f->state = ST_TOP;
      return err;
    }
    break;
  default: break;
  }
out:
  if (err != PROTO_FRAME_NEED_MORE) {
    f->len = 0;
    f->state = ST_DISCARD_OBJECT;
  }
  return err;
}

size_t proto_frame_feed(proto_frame *f, const void *data, size_t len, proto_frame_event *event) {
  const uint8_t *p = data;
  size_t i = 0;

  *event = PROTO_FRAME_NEED_MORE;
  if (f->object_ready) {
    size_t was = f->len;

    clear_object(f);
    if (was > PROTO_FRAME_KEEP_BYTES)
      shrink_buffer(f);
  }
  while (i < len) {
    uint8_t c = p[i++];
    proto_frame_event ev;

    if (c == PROTO_FRAME_SYNC_BYTE) {
      proto_frame_reset(f);
      *event = PROTO_FRAME_SYNC;
      return i;
    }
    switch (f->state) {
    case ST_SKIP_TO_SYNC: {
      /* Nothing but a 0xFF matters: find it at once. */
      const uint8_t *ff = memchr(p + i, PROTO_FRAME_SYNC_BYTE, len - i);

      i = ff ? (size_t)(ff - p) : len;
      continue;
    }
    case ST_DISCARD_STRAY:
    case ST_TOP:
      if (c == '{') {
        ev = begin_object(f);
        if (ev != PROTO_FRAME_NEED_MORE) {
          *event = ev;
          return i;
        }
        continue;
      }
      /* One error per run of stray bytes. */
      if (is_space(c) || f->state == ST_DISCARD_STRAY)
        continue;
      f->stray = c;
      f->state = ST_DISCARD_STRAY;
      *event = PROTO_FRAME_ERR_STRAY;
      return i;
    case ST_OBJECT:
    case ST_DISCARD_OBJECT:
      ev = object_byte(f, c);
      if (ev != PROTO_FRAME_NEED_MORE) {
        *event = ev;
        return i;
      }
      continue;
    }
  }
  return i;
}
