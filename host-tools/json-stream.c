/* SPDX-License-Identifier: MIT */
/*
 * The JSON object splitter (see json-stream.h): proto/channel-frame.c finds
 * where each top-level object ends (the framing exists once, shared with
 * the agent); json-glib then parses exactly those bytes. Input is scanned
 * when an object is asked for, so an answer that arrives in many reads is
 * scanned once; while the stream skips to a 0xFF, input is scanned as it
 * is fed and nothing before the 0xFF is kept.
 */
#include "json-stream.h"

#include <string.h>

#include "channel-frame.h"
#include "vs-error.h"

struct VsJsonStream {
  proto_frame *frame;
  gsize max_bytes; /* for the error texts */
  guint max_depth;
  GByteArray *in; /* fed and not yet scanned, from in_off */
  gsize in_off;
};

VsJsonStream *vs_json_stream_new(gsize max_bytes, guint max_depth) {
  const proto_frame_limits limits = {.max_bytes = max_bytes, .max_depth = max_depth};
  VsJsonStream *s = g_new0(VsJsonStream, 1);

  if (proto_frame_new(&limits, &s->frame) < 0)
    g_error("json-stream: cannot make a scanner for %" G_GSIZE_FORMAT " bytes, depth %u", max_bytes,
            max_depth);
  s->max_bytes = max_bytes;
  s->max_depth = max_depth;
  s->in = g_byte_array_new();
  return s;
}

void vs_json_stream_free(VsJsonStream *stream) {
  if (!stream)
    return;
  proto_frame_free(stream->frame);
  g_byte_array_unref(stream->in);
  g_free(stream);
}

/* Marks @n more bytes of the unscanned input as scanned. */
static void consume(VsJsonStream *s, gsize n) {
  s->in_off += n;
  /* Compact when everything was scanned or the dead prefix is large, so
   * that input one byte at a time stays linear. */
  if (s->in_off == s->in->len || s->in_off >= 4096) {
    g_byte_array_remove_range(s->in, 0, (guint)s->in_off);
    s->in_off = 0;
  }
}

/* While skipping, scans @len bytes of @p up to the 0xFF that ends the
 * skip. Returns how many were consumed. */
static gsize scan_skipping(VsJsonStream *s, const guint8 *p, gsize len) {
  gsize off = 0;

  while (off < len && proto_frame_is_skipping(s->frame)) {
    proto_frame_event ev;

    off += proto_frame_feed(s->frame, p + off, len - off, &ev);
  }
  return off;
}

void vs_json_stream_feed(VsJsonStream *stream, const void *data, gsize len) {
  const guint8 *p = data;
  /* While skipping, only what follows a 0xFF can matter: do not buffer the
   * rest (a guest could otherwise fill our memory with junk). */
  gsize off = scan_skipping(stream, p, len);

  g_byte_array_append(stream->in, p + off, (guint)(len - off));
}

void vs_json_stream_skip_to_sync(VsJsonStream *stream) {
  proto_frame_skip_to_sync(stream->frame);
  /* The next 0xFF may already be buffered (several answers in one read). */
  consume(stream, scan_skipping(stream, stream->in->data + stream->in_off,
                                stream->in->len - stream->in_off));
}

gboolean vs_json_stream_is_skipping(const VsJsonStream *stream) {
  return proto_frame_is_skipping(stream->frame);
}

gsize vs_json_stream_pending(const VsJsonStream *stream) {
  return stream->in->len - stream->in_off + proto_frame_pending(stream->frame);
}

/* Parses the object the scanner just reported. */
static gboolean parse_object(VsJsonStream *s, JsonNode **out, GError **error) {
  g_autoptr(JsonParser) parser = json_parser_new();
  g_autoptr(GError) local = NULL;
  size_t len;
  const char *text = proto_frame_object(s->frame, &len);

  if (!json_parser_load_from_data(parser, text, (gssize)len, &local)) {
    g_set_error(error, VS_ERROR, VS_ERROR_PROTOCOL, "malformed JSON: %s", local->message);
    return FALSE;
  }
  *out = json_parser_steal_root(parser);
  return TRUE;
}

gboolean vs_json_stream_next(VsJsonStream *stream, JsonNode **out, GError **error) {
  VsJsonStream *s = stream;

  *out = NULL;
  while (s->in_off < s->in->len) {
    proto_frame_event ev;

    consume(s, proto_frame_feed(s->frame, s->in->data + s->in_off, s->in->len - s->in_off, &ev));
    switch (ev) {
    case PROTO_FRAME_NEED_MORE:
    case PROTO_FRAME_SYNC: /* resynchronisation: whatever came before is void */ continue;
    case PROTO_FRAME_OBJECT:
      /* Balanced but malformed JSON is an error; the next object is fine. */
      return parse_object(s, out, error);
    case PROTO_FRAME_ERR_STRAY:
      g_set_error(error, VS_ERROR, VS_ERROR_PROTOCOL, "unexpected byte 0x%02x between JSON objects",
                  proto_frame_stray_byte(s->frame));
      break;
    case PROTO_FRAME_ERR_TOO_BIG:
      g_set_error(error, VS_ERROR, VS_ERROR_PROTOCOL,
                  "a JSON object larger than %" G_GSIZE_FORMAT " bytes", s->max_bytes);
      break;
    case PROTO_FRAME_ERR_TOO_DEEP:
      g_set_error(error, VS_ERROR, VS_ERROR_PROTOCOL, "JSON nested deeper than %u levels",
                  s->max_depth);
      break;
    default:
      g_set_error(error, VS_ERROR, VS_ERROR_PROTOCOL, "%s", proto_frame_event_name(ev));
      break;
    }
    /* Past a framing error the stream skips to the next 0xFF, keeping
     * whatever follows one that is already buffered. */
    vs_json_stream_skip_to_sync(s);
    return FALSE;
  }
  return FALSE;
}
