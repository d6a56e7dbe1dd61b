/* SPDX-License-Identifier: MIT */
/*
 * The host channel: the transports that carry docs/channel-protocol.md
 * between the host and commands.c (caller AGENT_CALLER_HOST). The framing
 * is proto/channel-frame.h's; what a command does is commands.c's; this is
 * only how bytes come and go.
 *
 * Transports, one AgentChannel each, behind the same session code:
 *  - a path (agent_channel_new_path()): a character device, normally the
 *    virtio-serial port /dev/virtio-ports/org.shrinkd.agent.0 (a serial
 *    line works too: a tty is put in raw mode), or a unix stream socket to
 *    connect to, as QEMU's "-chardev socket" client does (tests play the
 *    host that way: they listen, shrinkd connects).
 *  - AF_VSOCK (agent_channel_new_vsock()): shrinkd listens on a port; one
 *    host connection at a time, a new one replaces the old (a host that
 *    went away without closing must not lock the next one out).
 *
 * Sessions. Requests are read, framed and run one at a time, and answered
 * in order, one line each: while a command runs (a shrink round), further
 * input waits in the kernel. At most AGENT_CHANNEL_BURST requests are run
 * per wake-up (then the rest waits behind the local clients), so that a
 * host that keeps sending cannot starve them. A new session (a new connection; on a virtio
 * port, the host end connecting or going) starts from scratch: partial
 * input, queued answers and the answer of a command still running are
 * dropped, so that a new host never reads an old host's answers before it
 * has resynchronised.
 *
 * Never blocking on the host. A virtio-serial write blocks while no host
 * end is connected, and a host that goes away gives no EOF; so every fd is
 * non-blocking, and an fd is watched edge-triggered (through an epoll set
 * watched by the main loop): a port with no host polls as POLLHUP (and
 * readable) for as long as nobody connects, which a level-triggered watch
 * would see as a busy loop; edge-triggered, it wakes once per change, and
 * the kernel wakes it again when the host connects. Answers wait in a queue
 * of at most out_max_bytes (an answer is dropped when it does not fit,
 * unless the queue is empty); once one did not fit, no more requests are
 * read until the queue is empty again; when the host takes no byte for write_timeout_ms, everything
 * queued is dropped (debug log) and reading goes on. Memory is bounded by the frame buffer (64
 * KiB), the read buffer, and the queue.
 *
 * Zero idle wake-ups: no timer runs unless answers wait for the host
 * (write timeout) or a path is being reopened (back-off from reopen_min_ms
 * to reopen_max_ms); a path that does not exist is waited for with
 * inotify on its nearest existing directory, not polled.
 *
 * Errors. A read or write error, a tty hang-up or the end of a unix socket
 * session closes the link; a path is reopened with back-off; a vsock
 * session just ends (the listener stays). A unix socket peer that shuts
 * its sending side still gets the answers to what it sent, then the link
 * closes.
 *
 * Main loop thread only (the default context).
 */
#pragma once

#include <glib.h>

#include "commands.h"

#define AGENT_CHANNEL_DEFAULT_PATH          "/dev/virtio-ports/org.shrinkd.agent.0"
#define AGENT_CHANNEL_OUT_MAX_DEFAULT       (1024 * 1024)
#define AGENT_CHANNEL_WRITE_TIMEOUT_DEFAULT 5000
#define AGENT_CHANNEL_REOPEN_MIN_DEFAULT    100
#define AGENT_CHANNEL_REOPEN_MAX_DEFAULT    30000
#define AGENT_CHANNEL_BURST                 32 /* requests run per wake-up */

typedef struct {
  gsize out_max_bytes;    /* answers queued at most (0: default) */
  guint write_timeout_ms; /* no byte taken this long: drop the queue (0: default) */
  guint reopen_min_ms;    /* first retry after a failure (0: default) */
  guint reopen_max_ms;    /* back-off cap (0: default) */
  const char *sys_root;   /* /sys is read under it to tell a virtio port (NULL: "/") */
} AgentChannelConfig;

/* What a channel did, for logs and tests. */
typedef struct {
  gboolean connected;   /* a link is open (for a virtio port: and a host is there) */
  guint64 sessions;     /* links opened (and hosts seen on a virtio port) */
  guint64 requests;     /* objects handed to commands.c */
  guint64 frame_errors; /* GenericError answers for framing (limits, stray bytes) */
  guint64 resyncs;      /* 0xFF bytes received */
  guint64 answers;      /* answers written whole */
  guint64 dropped;      /* answers dropped (queue full, timeout, session over) */
} AgentChannelStats;

typedef struct AgentChannel AgentChannel;

/*
 * Serves the host on @path (copied) into @commands (borrowed: it must
 * outlive the channel). @config may be NULL (defaults); it is copied.
 * Never fails: a path that is missing or cannot be opened yet is retried
 * (see above), with one message saying so.
 */
AgentChannel *agent_channel_new_path(const char *path, AgentCommands *commands,
                                     const AgentChannelConfig *config);

/*
 * Listens on AF_VSOCK port @port (any CID) and serves one host connection
 * at a time into @commands (borrowed). Returns the channel, or NULL with
 * @error (AGENT_ERROR_FAILED with errno's text: no vsock support, port in
 * use).
 */
AgentChannel *agent_channel_new_vsock(guint port, AgentCommands *commands,
                                      const AgentChannelConfig *config, GError **error);

/* Closes the link (the answer of a command still running is dropped when
 * it comes) and frees @self. NULL is fine. */
void agent_channel_free(AgentChannel *self);

/* Fills @out with @self's counters. */
void agent_channel_get_stats(const AgentChannel *self, AgentChannelStats *out);

/* The channel's name for logs: the path, or "vsock:PORT" (owned by @self). */
const char *agent_channel_name(const AgentChannel *self);
