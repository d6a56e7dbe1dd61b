/* SPDX-License-Identifier: MIT */
/*
 * The local server: the SOCK_SEQPACKET socket that libshrink clients and
 * shrinkctl connect to, and its peers.
 *
 * Each peer is one GSource (g_unix_fd_add_full) with its SO_PEERCRED pid
 * and uid. A peer must say HELLO first (version negotiated, WELCOME or
 * ERROR(VERSION) and a disconnect); then REGISTER, UNREGISTER, ESTIMATE,
 * SHRINK_DONE and CONTROL. A malformed packet, or a message out of place,
 * gets an ERROR with its typed code and a disconnect; a semantic error
 * (duplicate or unknown id, too many shrinkers) gets an ERROR and the
 * connection stays. At most AGENT_SERVER_BURST packets are read from one
 * peer per wake-up, so that a flooding client cannot starve the others.
 * Nothing the server sends blocks: SHRINK and RELIEF that do not fit are
 * dropped (round.c counts a miss); CONTROL_REPLY chunks wait in a bounded
 * per-peer queue for the socket to drain.
 *
 * Every local user may connect, and each is treated as an attacker: a
 * non-root uid may hold max_clients_per_uid connections, and never the
 * last reserved_root_clients slots of max_clients, so that root's
 * shrinkctl always gets in; a connection that says no HELLO within
 * hello_timeout_ms is closed; queued replies are bounded per peer and, for
 * all non-root peers together, by AGENT_SERVER_OUT_NONROOT_MAX.
 *
 * Start-up: the socket's directory is made (0755) if missing; an exclusive
 * flock on SOCKET.lock is taken first, so that of two agents started
 * together only one goes on to judge the socket; a socket file nobody
 * listens on is removed; if another agent listens there or holds the lock,
 * agent_server_new() fails with AGENT_ERROR_IN_USE. The socket is 0666:
 * anyone may register shrinkers (only root may run rounds or see others').
 *
 * Main loop thread only.
 */
#pragma once

#include <glib.h>

#include "commands.h"
#include "registry.h"
#include "round.h"

#define AGENT_SERVER_BURST         32          /* packets read per peer per wake-up */
#define AGENT_SERVER_CONTROL_CALLS 4           /* CONTROL requests in flight per peer */
#define AGENT_SERVER_OUT_MAX       (4u << 20)  /* memory of queued replies per non-root peer */
#define AGENT_SERVER_OUT_ROOT_MAX  (32u << 20) /* ... per root peer */
#define AGENT_SERVER_OUT_NONROOT_MAX (16u << 20) /* ... of all non-root peers together */

#define AGENT_SERVER_CLIENTS_DEFAULT          1024
#define AGENT_SERVER_CLIENTS_PER_UID_DEFAULT  32
#define AGENT_SERVER_ROOT_RESERVED_DEFAULT    16
#define AGENT_SERVER_HELLO_TIMEOUT_DEFAULT_MS 2000

/* The bounds on peers beyond max_clients (see above); 0 in a field: that
 * bound is off. */
typedef struct {
  unsigned max_clients_per_uid;
  unsigned reserved_root_clients;
  unsigned hello_timeout_ms;
} AgentServerLimits;

typedef struct AgentServer AgentServer;

/*
 * Listens on @socket_path, serving peers into @registry, @rounds and
 * @commands (borrowed; they must outlive the server). At most @max_clients
 * peers at once; more are told ERROR(LIMIT) and closed. Returns the server
 * or NULL with @error (AGENT_ERROR_IN_USE, AGENT_ERROR_INVALID for a path
 * too long, AGENT_ERROR_FAILED with errno's text otherwise).
 */
AgentServer *agent_server_new(const char *socket_path, unsigned max_clients,
                              AgentRegistry *registry, AgentRounds *rounds, AgentCommands *commands,
                              GError **error);

/* Sets the bounds of @limits (copied) for peers that connect from now on. */
void agent_server_set_limits(AgentServer *self, const AgentServerLimits *limits);

/* Disconnects every peer (their shrinkers leave the registry), closes and
 * removes the socket (if it is still ours). NULL is fine. */
void agent_server_free(AgentServer *self);

/* The number of connected peers. */
guint agent_server_n_peers(const AgentServer *self);
