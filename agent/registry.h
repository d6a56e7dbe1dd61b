/* SPDX-License-Identifier: MIT */
/*
 * The registry: connected clients and their shrinkers, keyed by
 * (client, id), with each shrinker's figures.
 *
 * A client is one connection that said HELLO; its shrinkers belong to it
 * and go when it goes (agent_registry_remove_client). Before a shrinker is
 * freed the removal hook runs, so that a round waiting for it stops
 * waiting. Names are interned GRefStrings, so that round reports can keep
 * them after the shrinker is gone at the cost of a reference.
 *
 * Errors are AGENT_PROTO_ERROR with the proto_error the peer is to get
 * (PROTO_ERR_DUPLICATE, PROTO_ERR_UNKNOWN_ID, PROTO_ERR_LIMIT). Main loop
 * thread only.
 */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

/* Every local user may connect and register: the bounds per uid keep one
 * user from filling the registry (and the agent's locked memory); uid 0
 * is bounded only by the totals. */
#define AGENT_REGISTRY_SHRINKERS_PER_CLIENT_DEFAULT 1024
#define AGENT_REGISTRY_SHRINKERS_PER_UID_DEFAULT    4096
#define AGENT_REGISTRY_SHRINKERS_DEFAULT            65536

typedef struct AgentRegistry AgentRegistry;
typedef struct AgentClient AgentClient;
typedef struct AgentShrinker AgentShrinker;

struct AgentShrinker {
  AgentClient *client; /* its owner */
  uint32_t id;         /* chosen by the client, unique per client */
  char *name;          /* interned GRefString */
  uint16_t priority;   /* PROTO_PRIORITY_MIN..MAX */
  bool has_estimate;
  uint64_t estimate_bytes; /* reclaimable, as the client last said */
  uint64_t serial;         /* registration order across the registry */

  /* Figures, over the shrinker's life (see agent_shrinker_note_*). */
  uint64_t asked;              /* requests sent */
  uint64_t asked_bytes;        /* sum of what they asked */
  uint64_t freed_bytes;        /* sum of what it claimed, late replies included */
  uint64_t last_freed_bytes;   /* in its last reply */
  int64_t last_reply_us;       /* wall clock of its last reply; 0: never */
  uint32_t consecutive_misses; /* deadline misses since its last reply in time */
  uint64_t misses;             /* deadline misses in all */

  /* Bookkeeping of round.c. */
  uint32_t outstanding; /* requests sent and not answered, any round */
  int round_slot;       /* its index in the running round, or -1 */

  GList *link; /* in its client's list */
};

struct AgentClient {
  uint64_t serial; /* connection order */
  int fd;          /* the connection (not owned: the server closes it) */
  pid_t pid;       /* from SO_PEERCRED */
  uid_t uid;
  char *name;        /* interned GRefString, from HELLO */
  GHashTable *by_id; /* uint32 id -> AgentShrinker* */
  GQueue shrinkers;  /* AgentShrinker*, registration order */
  GList *link;       /* in the registry's list */

  /* What its claims were worth, over its life (round.c): claims are
   * hints; only the fall of the process's RSS confirms them. */
  uint64_t claimed_bytes;  /* claims (each capped at its ask) in rounds that measured it */
  uint64_t verified_bytes; /* the part of them its RSS drops confirmed */
  uint64_t rss_bytes;      /* its process's RSS when last read; 0: unknown */
};

/* How far @client's claims can be believed, in 1/1024ths (1024: fully):
 * (verified + 1 MiB) / (claimed + 1 MiB), so that a new client starts
 * trusted and one that claims without freeing falls towards 0. */
#define AGENT_CLIENT_TRUST_ONE 1024u
uint32_t agent_client_trust(const AgentClient *client);

/* Called before @shrinker is freed (its client still set). */
typedef void (*AgentShrinkerRemovedFunc)(AgentShrinker *shrinker, gpointer user_data);

/* A new, empty registry allowing @max_shrinkers_per_client (>= 1) per
 * client. Free with agent_registry_free(). */
AgentRegistry *agent_registry_new(uint32_t max_shrinkers_per_client);

/* Frees @self and every client and shrinker in it (the hook runs for each
 * shrinker). NULL is fine. */
void agent_registry_free(AgentRegistry *self);

/* The limit @self was made with. */
uint32_t agent_registry_max_shrinkers(const AgentRegistry *self);

/* Sets the bounds beyond the per-client one: @per_uid shrinkers over all
 * the connections of one non-root uid, @total in all (0: no bound). */
void agent_registry_set_limits(AgentRegistry *self, uint32_t per_uid, uint32_t total);

/* Sets the one removal hook (NULL to clear). */
void agent_registry_set_removal_hook(AgentRegistry *self, AgentShrinkerRemovedFunc func,
                                     gpointer user_data);

/* Adds a client for connection @fd. Returns it, owned by @self. */
AgentClient *agent_registry_add_client(AgentRegistry *self, int fd, pid_t pid, uid_t uid,
                                       const char *name);

/* Removes @client and its shrinkers (hook first for each), frees it. */
void agent_registry_remove_client(AgentRegistry *self, AgentClient *client);

/*
 * Registers shrinker @id of @client. Returns it (owned by @self), or NULL
 * with @error: PROTO_ERR_DUPLICATE if @id is taken, PROTO_ERR_LIMIT if the
 * client has max_shrinkers_per_client already.
 */
AgentShrinker *agent_registry_add_shrinker(AgentRegistry *self, AgentClient *client, uint32_t id,
                                           const char *name, uint16_t priority, bool has_estimate,
                                           uint64_t estimate_bytes, GError **error);

/* Unregisters shrinker @id of @client (hook first). Returns TRUE, or
 * FALSE with PROTO_ERR_UNKNOWN_ID. */
gboolean agent_registry_remove_shrinker(AgentRegistry *self, AgentClient *client, uint32_t id,
                                        GError **error);

/* Updates the estimate of shrinker @id. Returns TRUE, or FALSE with
 * PROTO_ERR_UNKNOWN_ID. The running round keeps the estimate it took at
 * its start. */
gboolean agent_registry_set_estimate(AgentRegistry *self, AgentClient *client, uint32_t id,
                                     bool has_estimate, uint64_t estimate_bytes, GError **error);

/* Shrinker @id of @client, or NULL. */
AgentShrinker *agent_registry_lookup(const AgentClient *client, uint32_t id);

/* The clients, in connection order (AgentClient*, owned by @self). */
const GQueue *agent_registry_clients(const AgentRegistry *self);

/* The number of shrinkers over all clients. */
guint agent_registry_n_shrinkers(const AgentRegistry *self);

/* Figures: a request of @bytes was sent. */
void agent_shrinker_note_asked(AgentShrinker *self, uint64_t bytes);

/* Figures: a reply claiming @freed_bytes came at @now_wall_us; @in_time
 * says whether it beat its deadline (only then are misses reset). */
void agent_shrinker_note_reply(AgentShrinker *self, uint64_t freed_bytes, bool in_time,
                               int64_t now_wall_us);

/* Figures: a request missed its deadline (or could not be sent). */
void agent_shrinker_note_miss(AgentShrinker *self);
