/* SPDX-License-Identifier: MIT */
/*
 * Framing of the host channel (docs/channel-protocol.md): finds complete
 * top-level JSON objects in a byte stream that arrives in arbitrary pieces.
 * The agent uses it for what the host sends, virt-shrink for what the guest
 * and QMP answer: the framing exists once.
 *
 * The scanner tracks string literals, escapes and the nesting of objects
 * and arrays just enough to see where a top-level object ends; it does not
 * validate JSON (the caller's parser does, on exactly the bytes of one
 * object). Between objects, whitespace is skipped. The byte 0xFF, which
 * never occurs in UTF-8, means "resynchronise": whatever partial input is
 * held is dropped, wherever it occurs (inside a string too).
 *
 * Limits, as security bounds against a broken or hostile peer: an object
 * is refused before it is handed on if it is longer than max_bytes (braces
 * included; the buffer never grows beyond that), nests deeper than
 * max_depth (objects and arrays; the top-level object is depth 1), or has
 * a string literal longer than max_string bytes as written (escapes count
 * as their bytes). The host channel's bounds are PROTO_FRAME_OBJECT_MAX,
 * PROTO_FRAME_DEPTH_MAX and PROTO_FRAME_STRING_MAX, the agent's parser's
 * (agent/json-reader.h) own limits, and nothing the channel's commands
 * take needs more.
 *
 * After an error, input is discarded without being held:
 *  - past a limit (too big, too deep, string too long): to the end of the
 *    offending object, still tracking strings and nesting (so that a
 *    well-formed object that is merely too large costs one error and the
 *    next object is read normally), or to the next 0xFF, whichever comes
 *    first;
 *  - a stray byte (outside an object, neither whitespace nor '{'): that
 *    byte and any that follow, up to the next '{' at top level (which
 *    starts an object) or the next 0xFF. One error per run of such bytes.
 * That is docs/channel-protocol.md's "discards input until the next 0xFF
 * or the next well-formed object". proto_frame_skip_to_sync() gives the
 * stricter rule a client needs after guest-sync-delimited: everything up
 * to the next 0xFF.
 *
 * Pure: no I/O, no clock; the only allocation is the object buffer, grown
 * as needed up to max_bytes + 1 and shrunk back to PROTO_FRAME_KEEP_BYTES
 * when an object larger than that has been handed on. libc only, no GLib.
 * Not thread-safe: one scanner per stream.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PROTO_FRAME_SYNC_BYTE  0xFF
#define PROTO_FRAME_OBJECT_MAX (64 * 1024) /* bytes in one host request */
#define PROTO_FRAME_DEPTH_MAX  16          /* nesting of one host request */
#define PROTO_FRAME_STRING_MAX 4096        /* bytes in one string of a host request */
#define PROTO_FRAME_KEEP_BYTES 4096        /* object buffer kept between objects */

/* What proto_frame_feed() stopped for. */
typedef enum {
  PROTO_FRAME_NEED_MORE = 0, /* all the input was consumed, nothing to report */
  PROTO_FRAME_OBJECT,        /* a complete object: proto_frame_object() */
  PROTO_FRAME_SYNC,          /* a 0xFF: partial input dropped, discarding over */
  PROTO_FRAME_ERR_TOO_BIG,   /* an object longer than max_bytes */
  PROTO_FRAME_ERR_TOO_DEEP,  /* nesting deeper than max_depth */
  PROTO_FRAME_ERR_STRING,    /* a string literal longer than max_string */
  PROTO_FRAME_ERR_STRAY,     /* a byte outside an object: proto_frame_stray_byte() */
  PROTO_FRAME_ERR_NO_MEMORY, /* the buffer could not grow; the object is discarded */
} proto_frame_event;

#define PROTO_FRAME_EVENT_LAST PROTO_FRAME_ERR_NO_MEMORY

typedef struct {
  size_t max_bytes;   /* >= 2 */
  unsigned max_depth; /* >= 1 */
  size_t max_string;  /* 0: no limit of its own (max_bytes still holds) */
} proto_frame_limits;

typedef struct proto_frame proto_frame;

/*
 * Makes a scanner with @limits (copied; NULL: the host channel's bounds
 * above). Returns 0 with *@out set, -EINVAL for limits out of range, or
 * -ENOMEM. Free with proto_frame_free().
 */
int proto_frame_new(const proto_frame_limits *limits, proto_frame **out);

/* Frees @f and its buffer. NULL is fine. */
void proto_frame_free(proto_frame *f);

/*
 * Scans up to @len bytes of @data, stopping right after the byte that
 * completes an event. Returns the number of bytes consumed (all of them
 * when *@event is PROTO_FRAME_NEED_MORE; at least 1 otherwise) and sets
 * *@event. Feed the rest again to go on. An object reported with
 * PROTO_FRAME_OBJECT stays readable until the next call to
 * proto_frame_feed(), proto_frame_reset() or proto_frame_skip_to_sync().
 */
size_t proto_frame_feed(proto_frame *f, const void *data, size_t len, proto_frame_event *event);

/*
 * The object just reported: its bytes (from '{' to the matching '}' or
 * ']', which the caller's parser judges), NUL-terminated for convenience
 * (the object itself may contain NUL bytes: use *@len). Returns NULL when
 * the last event was not PROTO_FRAME_OBJECT. @len may be NULL.
 */
const char *proto_frame_object(const proto_frame *f, size_t *len);

/* The byte that caused the last PROTO_FRAME_ERR_STRAY. */
uint8_t proto_frame_stray_byte(const proto_frame *f);

/* Drops any partial input and goes back to the top level, as a 0xFF does
 * (a new connection, say). */
void proto_frame_reset(proto_frame *f);

/* Drops any partial input and discards everything up to and including the
 * next 0xFF (reported as PROTO_FRAME_SYNC). */
void proto_frame_skip_to_sync(proto_frame *f);

/* Whether the scanner discards input until a 0xFF (after
 * proto_frame_skip_to_sync(), before the 0xFF). */
bool proto_frame_is_skipping(const proto_frame *f);

/* Bytes of a partial object held (0 between objects and while
 * discarding). */
size_t proto_frame_pending(const proto_frame *f);

/* Bytes allocated for the buffer now (for tests of the bound). */
size_t proto_frame_capacity(const proto_frame *f);

/* A short English text for @event ("object too big", ...), static. */
const char *proto_frame_event_name(proto_frame_event event);
