/* SPDX-License-Identifier: MIT */
/*
 * The VsBackend of plain QEMU, without libvirt: the balloon through QMP,
 * the agent through the host end of the virtio-serial port given by the
 * user (a QEMU "-chardev socket,server=on" path).
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
