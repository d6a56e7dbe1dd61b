/* SPDX-License-Identifier: MIT */
/*
 * The JSON object splitter (see json-stream.h). It tracks string literals
 * and nesting just enough to find where a top-level object ends; json-glib
 * then parses exactly those bytes. Scanning resumes where the last call
 * stopped, so an answer that arrives in many reads is scanned once.
 */
#include "json-stream.h"

#include <stdarg.h>
#include <string.h>

#include "vs-error.h"

struct VsJsonStream {
  GByteArray *buf;
  gsize max_bytes;
  guint max_depth;
  gsize start; /* where the unconsumed input begins in buf */
  gsize scan;  /* how far buf is scanned; start <= scan <= buf->len */
  guint depth; /* 0: between objects */
  gboolean in_string;
  gboolean escape; /* the previous byte in a string was a backslash */
  gboolean skipping;
};

VsJsonStream *vs_json_stream_new(gsize max_bytes, guint max_depth) {
  VsJsonStream *s = g_new0(VsJsonStream, 1);

  s->buf = g_byte_array_new();
  s->max_bytes = max_bytes;
  s->max_depth = max_depth;
  return s;
}

void vs_json_stream_free(VsJsonStream *stream) {
  if (!stream)
    return;
  g_byte_array_unref(stream->buf);
  g_free(stream);
}

/* Drops the input before @upto and forgets the scanning state: the next
 * object begins at or after @upto. */
static void consume_to(VsJsonStream *s, gsize upto) {
  s->start = upto;
  s->scan = upto;
  s->depth = 0;
  s->in_string = FALSE;
  s->escape = FALSE;
  /* Compact when the dead prefix is large or everything was consumed, so
   * that whitespace or junk one byte at a time stays linear. */
  if (s->start == s->buf->len || s->start >= 4096) {
    g_byte_array_remove_range(s->buf, 0, (guint)s->start);
    s->scan -= s->start;
    s->start = 0;
  }
}

/* The first 0xFF buffered at or after @from, or NULL. */
static const guint8 *find_sync(const VsJsonStream *s, gsize from) {
  if (from >= s->buf->len)
    return NULL; /* (data may be NULL when empty: no memchr) */
  return memchr(s->buf->data + from, VS_JSON_SYNC_BYTE, s->buf->len - from);
}

void vs_json_stream_feed(VsJsonStream *stream, const void *data, gsize len) {
  const guint8 *p = data;

  /* While skipping, only what follows a 0xFF can matter: do not buffer the
   * rest (a guest could otherwise fill our memory with junk). */
  while (stream->skipping && len > 0) {
    const guint8 *ff = memchr(p, VS_JSON_SYNC_BYTE, len);

    if (!ff)
      return;
    len -= (gsize)(ff - p) + 1;
    p = ff + 1;
    stream->skipping = FALSE;
  }
  g_byte_array_append(stream->buf, p, (guint)len);
}

void vs_json_stream_skip_to_sync(VsJsonStream *stream) {
  const guint8 *base = stream->buf->data;
  const guint8 *ff = find_sync(stream, stream->start);

  /* The next 0xFF may already be buffered (several answers in one read). */
  if (ff) {
    consume_to(stream, (gsize)(ff - base) + 1);
    return;
  }
  consume_to(stream, stream->buf->len);
  stream->skipping = TRUE;
}

gboolean vs_json_stream_is_skipping(const VsJsonStream *stream) {
  return stream->skipping;
}

gsize vs_json_stream_pending(const VsJsonStream *stream) {
  return stream->buf->len - stream->start;
}

/* Fails with @error and makes the stream skip to the next 0xFF, keeping
 * whatever follows one that is already buffered. */
static gboolean fail(VsJsonStream *s, GError **error, const char *fmt, ...) G_GNUC_PRINTF(3, 4);

static gboolean fail(VsJsonStream *s, GError **error, const char *fmt, ...) {
  g_autofree char *msg = NULL;
  const guint8 *ff;
  va_list ap;

  va_start(ap, fmt);
  msg = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  g_set_error_literal(error, VS_ERROR, VS_ERROR_PROTOCOL, msg);
  ff = find_sync(s, s->scan);
  if (ff) {
    consume_to(s, (gsize)(ff - s->buf->data) + 1);
  } else {
    consume_to(s, s->buf->len);
    s->skipping = TRUE;
  }
  return FALSE;
}

/* Parses the object in buf[start, end) and consumes it. */
static gboolean parse_object(VsJsonStream *s, gsize end, JsonNode **out, GError **error) {
  g_autoptr(JsonParser) parser = json_parser_new();
  g_autoptr(GError) local = NULL;
  gboolean ok;

  ok = json_parser_load_from_data(parser, (const char *)s->buf->data + s->start,
                                  (gssize)(end - s->start), &local);
  consume_to(s, end);
  if (!ok) {
    g_set_error(error, VS_ERROR, VS_ERROR_PROTOCOL, "malformed JSON: %s", local->message);
    return FALSE;
  }
  *out = json_parser_steal_root(parser);
  return TRUE;
}

gboolean vs_json_stream_next(VsJsonStream *stream, JsonNode **out, GError **error) {
  VsJsonStream *s = stream;

  *out = NULL;
  while (s->scan < s->buf->len) {
    guint8 c = s->buf->data[s->scan];

    if (c == VS_JSON_SYNC_BYTE) {
      /* Resynchronisation: whatever came before is void. */
      consume_to(s, s->scan + 1);
      continue;
    }
    if (s->depth == 0) {
      if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
        consume_to(s, s->scan + 1);
        continue;
      }
      if (c != '{')
        return fail(s, error, "unexpected byte 0x%02x between JSON objects", c);
      s->depth = 1;
      s->scan++;
      continue;
    }
    s->scan++;
    if (s->scan - s->start > s->max_bytes)
      return fail(s, error, "a JSON object larger than %" G_GSIZE_FORMAT " bytes", s->max_bytes);
    if (s->in_string) {
      if (s->escape)
        s->escape = FALSE;
      else if (c == '\\')
        s->escape = TRUE;
      else if (c == '"')
        s->in_string = FALSE;
      continue;
    }
    switch (c) {
    case '"': s->in_string = TRUE; break;
    case '{':
    case '[':
      if (++s->depth > s->max_depth)
        return fail(s, error, "JSON nested deeper than %u levels", s->max_depth);
      break;
    case '}':
    case ']':
      /* Mismatched brackets are json-glib's to refuse. */
      if (--s->depth == 0)
        return parse_object(s, s->scan, out, error);
      break;
    default: break;
    }
  }
  return FALSE;
}
