/* SPDX-License-Identifier: MIT */
/*
 * The host end of shrinkd's channel (docs/channel-protocol.md): the QEMU
 * guest agent's framing over an AF_UNIX stream socket, which is the
 * host-side end of the virtio-serial port org.shrinkd.agent.0.
 *
 * A host that connects may find stale bytes in the channel (answers meant
 * for an earlier client, half a request in the agent's buffer), so before
 * its first command the client sends 0xFF (the agent drops partial input)
 * and guest-sync-delimited with a random id, and discards everything up to
 * the agent's 0xFF and the answer with that id. After a timeout or a
 * protocol error the next command synchronises again first, so a late
 * answer is never taken for the next one's.
 *
 * Every operation has a timeout; none blocks past it.
 */
#pragma once

#include <glib.h>
#include <json-glib/json-glib.h>

#include "backend.h"

#define VS_CHANNEL_NAME "org.shrinkd.agent.0"

/* Security bounds on the agent's answers: a status of thousands of
 * shrinkers is well below 16 MiB. */
#define VS_CHANNEL_MAX_ANSWER_BYTES (16u << 20)
#define VS_CHANNEL_MAX_DEPTH        32

typedef struct VsChannel VsChannel;

/*
 * Connects to the channel socket at @path and synchronises, all within
 * @timeout_ms. Returns the channel, or NULL with @error VS_ERROR_NO_AGENT
 * whose message says "cannot connect to the guest agent channel at PATH:
 * WHY (is shrinkd running in the guest?)".
 */
VsChannel *vs_channel_open(const char *path, guint timeout_ms, GError **error);

/* A channel over the connected stream socket @fd (taken; made
 * non-blocking), not yet synchronised: the first call synchronises.
 * @where names the peer in messages (copied). Never fails. */
VsChannel *vs_channel_new_for_fd(int fd, const char *where);

/*
 * Sends 0xFF and guest-sync-delimited with a fresh random id, and waits at
 * most @timeout_ms for the 0xFF and that id, discarding anything else.
 * Returns TRUE, or FALSE with @error (VS_ERROR_TIMEOUT: nobody answered;
 * VS_ERROR_CLOSED, VS_ERROR_FAILED).
 */
gboolean vs_channel_sync(VsChannel *channel, guint timeout_ms, GError **error);

/*
 * Runs @command with @arguments (NULL: none; borrowed), synchronising first
 * if needed, all within @timeout_ms. Returns the "return" value (transfer
 * full), or NULL with @error: VS_AGENT_ERROR with the class as code and
 * "DESC (CLASS)" as message, or a VS_ERROR (TIMEOUT, CLOSED, PROTOCOL,
 * FAILED); after those the channel synchronises again before the next
 * command.
 */
JsonNode *vs_channel_call(VsChannel *channel, const char *command, JsonObject *arguments,
                          guint timeout_ms, GError **error);

/* Closes and frees @channel. NULL is fine. */
void vs_channel_free(VsChannel *channel);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(VsChannel, vs_channel_free)

/* @channel as a VsAgent (transfer full: vs_agent_free() frees the channel). */
VsAgent *vs_channel_into_agent(VsChannel *channel);
