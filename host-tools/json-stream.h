/* SPDX-License-Identifier: MIT */
/*
 * Splitting a byte stream into JSON objects, for the guest agent channel and
 * for QMP: both send one top-level object after another, separated by
 * whitespace (a line each in practice, but nothing relies on it). Pure: no
 * I/O, so the framing can be tested with any byte sequence and any split.
 * The framing itself is proto/channel-frame.h's, shared with the agent;
 * this adds buffering, json-glib and the client's error rule.
 *
 * The agent's resynchronisation byte 0xFF (never part of UTF-8 JSON) drops
 * whatever partial object is buffered. After vs_json_stream_skip_to_sync()
 * everything up to and including the next 0xFF is discarded: that is how
 * guest-sync-delimited finds the start of a fresh answer.
 *
 * Limits are security bounds against a broken or hostile guest: an object
 * above max_bytes or nested deeper than max_depth is refused before it is
 * parsed.
 */
#pragma once

#include <glib.h>
#include <json-glib/json-glib.h>

#define VS_JSON_SYNC_BYTE 0xFF

typedef struct VsJsonStream VsJsonStream;

/* A new, empty stream refusing objects above @max_bytes or nested deeper
 * than @max_depth (objects and arrays; the top-level object is depth 1). */
VsJsonStream *vs_json_stream_new(gsize max_bytes, guint max_depth);

/* Frees @stream and what it buffers. NULL is fine. */
void vs_json_stream_free(VsJsonStream *stream);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(VsJsonStream, vs_json_stream_free)

/* Appends @len bytes of input (copied). */
void vs_json_stream_feed(VsJsonStream *stream, const void *data, gsize len);

/* Discards input, buffered or to come, up to and including the next 0xFF. */
void vs_json_stream_skip_to_sync(VsJsonStream *stream);

/* Whether the stream is discarding input until a 0xFF. */
gboolean vs_json_stream_is_skipping(const VsJsonStream *stream);

/*
 * Takes the next complete top-level object out of the buffered input.
 * Returns TRUE with *@out (a JSON_NODE_OBJECT, transfer full); FALSE with
 * *@out NULL and no error when more input is needed; FALSE with @error
 * (VS_ERROR_PROTOCOL) for input that cannot be an object within the limits:
 * a byte outside an object that is not whitespace, an object above the size
 * or depth limit, or one json-glib refuses. After an error the stream skips
 * to the next 0xFF, so the caller may resynchronise and go on.
 */
gboolean vs_json_stream_next(VsJsonStream *stream, JsonNode **out, GError **error);

/* Bytes buffered and not yet returned or discarded (for tests). */
gsize vs_json_stream_pending(const VsJsonStream *stream);
