/* SPDX-License-Identifier: MIT */
/*
 * A small QMP client for plain QEMU (no libvirt): the greeting and
 * qmp_capabilities, then one command at a time; asynchronous events are
 * skipped. Only what virt-shrink needs: balloon, query-balloon,
 * query-status, query-memory-size-summary.
 *
 * QEMU serves one client per QMP socket: while another client is connected,
 * the greeting does not come, and vs_qmp_open() says so after its timeout.
 */
#pragma once

#include <glib.h>
#include <json-glib/json-glib.h>

typedef struct VsQmp VsQmp;

/*
 * Connects to the QMP socket at @path, reads the greeting and negotiates
 * capabilities, within @timeout_ms. Returns the client, or NULL with @error
 * (VS_ERROR_FAILED for a socket that cannot be connected to, naming it;
 * VS_ERROR_TIMEOUT when no greeting comes; VS_ERROR_PROTOCOL).
 */
VsQmp *vs_qmp_open(const char *path, guint timeout_ms, GError **error);

/* Frees @qmp and closes its socket. NULL is fine. */
void vs_qmp_free(VsQmp *qmp);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(VsQmp, vs_qmp_free)

/*
 * Runs @command with @arguments (NULL: none; borrowed) and waits at most
 * @timeout_ms for its answer, skipping events. Returns the "return" value
 * (transfer full), or NULL with @error: VS_ERROR_FAILED "COMMAND: DESC
 * (CLASS)" when QEMU refused, VS_ERROR_TIMEOUT, VS_ERROR_CLOSED,
 * VS_ERROR_PROTOCOL.
 */
JsonNode *vs_qmp_call(VsQmp *qmp, const char *command, JsonObject *arguments, guint timeout_ms,
                      GError **error);

/* balloon: asks for a balloon leaving the guest @target_bytes. Returns
 * TRUE, or FALSE with @error. */
gboolean vs_qmp_balloon(VsQmp *qmp, guint64 target_bytes, guint timeout_ms, GError **error);

/* query-balloon: *@actual_bytes, the memory the guest has now. Returns
 * TRUE, or FALSE with @error. */
gboolean vs_qmp_query_balloon(VsQmp *qmp, guint64 *actual_bytes, guint timeout_ms, GError **error);

/* query-status: whether the guest runs, and QEMU's status word (transfer
 * full). Returns TRUE, or FALSE with @error. */
gboolean vs_qmp_query_status(VsQmp *qmp, gboolean *running, char **status, guint timeout_ms,
                             GError **error);

/* query-memory-size-summary: base-memory plus plugged-memory, the most the
 * balloon can give back. Returns TRUE, or FALSE with @error. */
gboolean vs_qmp_query_memory_size(VsQmp *qmp, guint64 *bytes, guint timeout_ms, GError **error);
