/* SPDX-License-Identifier: MIT */
/*
 * Non-blocking AF_UNIX stream I/O with deadlines, shared by the agent
 * channel client and the QMP client. Nothing here can block past its
 * deadline: a guest that does not read, or a QEMU that does not answer,
 * costs at most the time the caller allowed.
 *
 * Deadlines are g_get_monotonic_time() values in microseconds.
 */
#pragma once

#include <glib.h>
#include <json-glib/json-glib.h>

#include "json-stream.h"

/* The monotonic deadline @timeout_ms from now. */
gint64 vs_deadline_in(gint64 timeout_ms);

/*
 * Connects to the AF_UNIX stream socket at @path before @deadline_us. Paths
 * longer than sun_path are reached through /proc/self/fd. Returns a
 * non-blocking, close-on-exec fd (the caller closes it), or -1 with @error:
 * VS_ERROR_TIMEOUT, or VS_ERROR_FAILED naming @path and the errno text (the
 * GError message is "PATH: strerror").
 */
int vs_unix_connect(const char *path, gint64 deadline_us, GError **error);

/*
 * Writes all @len bytes of @data to the non-blocking @fd before
 * @deadline_us (never raises SIGPIPE). Returns TRUE, or FALSE with @error:
 * VS_ERROR_TIMEOUT (the peer does not read), VS_ERROR_CLOSED, VS_ERROR_FAILED.
 */
gboolean vs_write_all(int fd, const void *data, gsize len, gint64 deadline_us, GError **error);

/*
 * Reads from the non-blocking @fd into @stream until it yields the next
 * object or @deadline_us passes. Returns TRUE with *@out (transfer full), or
 * FALSE with @error: VS_ERROR_TIMEOUT, VS_ERROR_CLOSED (end of file),
 * VS_ERROR_PROTOCOL (from the stream), VS_ERROR_FAILED.
 */
gboolean vs_read_object(int fd, VsJsonStream *stream, gint64 deadline_us, JsonNode **out,
                        GError **error);

/* Serialises @node compactly (transfer full, NUL-terminated). */
char *vs_json_to_string(JsonNode *node);

/* A request as the guest agent and QMP both read it: {"execute": @command}
 * plus "arguments": @arguments when not NULL (referenced, not copied).
 * Returns the object (transfer full): a caller may add members ("id"). */
JsonObject *vs_json_request_new(const char *command, JsonObject *arguments);
