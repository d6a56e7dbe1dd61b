/* SPDX-License-Identifier: MIT */
/*
 * The VsBackend of plain QEMU, without libvirt: the balloon through QMP,
 * the agent through the host end of the virtio-serial port given by the
 * user (a QEMU "-chardev socket,server=on" path), migration through QMP
 * migrate-set-parameters, migrate, query-migrate and migrate_cancel.
 */
#pragma once

#include "backend.h"

/* How long one QMP command may take. */
#define VS_QMP_TIMEOUT_MS 5000

/*
 * Connects to QMP at @qmp_path (greeting and capabilities within
 * VS_QMP_TIMEOUT_MS). @channel_path (NULL: none, so no agent) is only
 * remembered; vs_backend_open_agent() connects to it. Returns the backend,
 * or NULL with @error from vs_qmp_open().
 */
VsBackend *vs_qmp_backend_new(const char *qmp_path, const char *channel_path, GError **error);

/*
 * Reads the answer of QMP query-migrate (@ret, borrowed) into @out
 * (initialised here). QEMU's statuses map to VsMigrationStatus ("none" or
 * an empty answer: NONE; "pre-switchover", "device", "postcopy-*" and words
 * this version does not know: ACTIVE) and its word is kept; "ram"
 * gives the byte figures (its "mbps", megabits per second, the rate), and
 * "total-time", "setup-time", "downtime" or "expected-downtime" the times.
 * Missing or ill-typed figures stay -1. Returns TRUE, or FALSE with @error
 * (VS_ERROR_PROTOCOL) when @ret is not an object.
 */
gboolean vs_qmp_parse_migration(JsonNode *ret, VsMigrationInfo *out, GError **error);
