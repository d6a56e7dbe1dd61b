/* SPDX-License-Identifier: MIT */
/*
 * Clients and their shrinkers (see registry.h).
 */
#include "registry.h"

#include "errors.h"
#include "local-proto.h"
#include "saturate.h"

struct AgentRegistry {
  uint32_t max_per_client;
  uint32_t max_per_uid; /* 0: none */
  uint32_t max_total;   /* 0: none */
  GHashTable *per_uid;  /* uid -> shrinkers of that uid (uint), non-root only */
  GQueue clients;
  guint n_shrinkers;
  uint64_t next_serial;
  AgentShrinkerRemovedFunc hook;
  gpointer hook_data;
};

/* Names come from peers: made valid UTF-8 here so that status can always
 * be written as JSON. */
static char *intern_name(const char *name) {
  g_autofree char *valid = NULL;

  if (!name)
    name = "";
  if (g_utf8_validate(name, -1, NULL))
    return g_ref_string_new_intern(name);
  valid = g_utf8_make_valid(name, -1);
  return g_ref_string_new_intern(valid);
}

AgentRegistry *agent_registry_new(uint32_t max_shrinkers_per_client) {
  AgentRegistry *self = g_new0(AgentRegistry, 1);

  self->max_per_client = MAX(max_shrinkers_per_client, 1);
  self->per_uid = g_hash_table_new(g_direct_hash, g_direct_equal);
  g_queue_init(&self->clients);
  return self;
}

void agent_registry_free(AgentRegistry *self) {
  if (!self)
    return;
  while (!g_queue_is_empty(&self->clients))
    agent_registry_remove_client(self, g_queue_peek_head(&self->clients));
  g_hash_table_unref(self->per_uid);
  g_free(self);
}

uint32_t agent_registry_max_shrinkers(const AgentRegistry *self) {
  return self->max_per_client;
}

void agent_registry_set_limits(AgentRegistry *self, uint32_t per_uid, uint32_t total) {
  self->max_per_uid = per_uid;
  self->max_total = total;
}

static guint uid_count(const AgentRegistry *self, uid_t uid) {
  return GPOINTER_TO_UINT(g_hash_table_lookup(self->per_uid, GUINT_TO_POINTER(uid)));
}

/* Counts a shrinker of @uid in (@delta 1) or out (-1); root is not counted. */
static void uid_count_add(AgentRegistry *self, uid_t uid, int delta) {
  guint n = uid_count(self, uid);

  if (uid == 0)
    return;
  n = delta > 0 ? n + 1 : n - 1;
  if (n == 0)
    g_hash_table_remove(self->per_uid, GUINT_TO_POINTER(uid));
  else
    g_hash_table_insert(self->per_uid, GUINT_TO_POINTER(uid), GUINT_TO_POINTER(n));
}

uint32_t agent_client_trust(const AgentClient *client) {
  const uint64_t prior = 1u << 20;
  uint64_t claimed = client->claimed_bytes, verified = MIN(client->verified_bytes, claimed);

  /* Scaled down together so that the sums cannot overflow. */
  while (claimed > UINT64_MAX / 2048 - prior) {
    claimed >>= 1;
    verified >>= 1;
  }
  return (uint32_t)((verified + prior) * AGENT_CLIENT_TRUST_ONE / (claimed + prior));
}

void agent_registry_set_removal_hook(AgentRegistry *self, AgentShrinkerRemovedFunc func,
                                     gpointer user_data) {
  self->hook = func;
  self->hook_data = user_data;
}

AgentClient *agent_registry_add_client(AgentRegistry *self, int fd, pid_t pid, uid_t uid,
                                       const char *name) {
  AgentClient *client = g_new0(AgentClient, 1);

  client->serial = ++self->next_serial;
  client->fd = fd;
  client->pid = pid;
  client->uid = uid;
  client->name = intern_name(name);
  client->by_id = g_hash_table_new(g_direct_hash, g_direct_equal);
  g_queue_init(&client->shrinkers);
  g_queue_push_tail(&self->clients, client);
  client->link = g_queue_peek_tail_link(&self->clients);
  return client;
}

static void shrinker_free(AgentRegistry *self, AgentShrinker *s) {
  AgentClient *client = s->client;

  if (self->hook)
    self->hook(s, self->hook_data);
  g_hash_table_remove(client->by_id, GUINT_TO_POINTER(s->id));
  g_queue_delete_link(&client->shrinkers, s->link);
  self->n_shrinkers--;
  uid_count_add(self, client->uid, -1);
  g_ref_string_release(s->name);
  g_free(s);
}

void agent_registry_remove_client(AgentRegistry *self, AgentClient *client) {
  while (!g_queue_is_empty(&client->shrinkers))
    shrinker_free(self, g_queue_peek_tail(&client->shrinkers));
  g_queue_delete_link(&self->clients, client->link);
  g_hash_table_unref(client->by_id);
  g_ref_string_release(client->name);
  g_free(client);
}

AgentShrinker *agent_registry_add_shrinker(AgentRegistry *self, AgentClient *client, uint32_t id,
                                           const char *name, uint16_t priority, bool has_estimate,
                                           uint64_t estimate_bytes, GError **error) {
  AgentShrinker *s;

  if (agent_registry_lookup(client, id)) {
    g_set_error(error, AGENT_PROTO_ERROR, PROTO_ERR_DUPLICATE,
                "shrinker id %u is already registered", id);
    return NULL;
  }
  if (g_queue_get_length(&client->shrinkers) >= self->max_per_client) {
    g_set_error(error, AGENT_PROTO_ERROR, PROTO_ERR_LIMIT, "at most %u shrinkers per connection",
                self->max_per_client);
    return NULL;
  }
  if (client->uid != 0 && self->max_per_uid && uid_count(self, client->uid) >= self->max_per_uid) {
    g_set_error(error, AGENT_PROTO_ERROR, PROTO_ERR_LIMIT,
                "uid %u has %u shrinkers already (max_shrinkers_per_uid)", (unsigned)client->uid,
                self->max_per_uid);
    return NULL;
  }
  if (self->max_total && self->n_shrinkers >= self->max_total) {
    g_set_error(error, AGENT_PROTO_ERROR, PROTO_ERR_LIMIT,
                "the agent holds %u shrinkers already (max_shrinkers)", self->max_total);
    return NULL;
  }
  s = g_new0(AgentShrinker, 1);
  s->client = client;
  s->id = id;
  s->name = intern_name(name);
  s->priority = priority;
  s->has_estimate = has_estimate;
  s->estimate_bytes = has_estimate ? estimate_bytes : 0;
  s->serial = ++self->next_serial;
  s->round_slot = -1;
  g_hash_table_insert(client->by_id, GUINT_TO_POINTER(id), s);
  g_queue_push_tail(&client->shrinkers, s);
  s->link = g_queue_peek_tail_link(&client->shrinkers);
  self->n_shrinkers++;
  uid_count_add(self, client->uid, 1);
  return s;
}

AgentShrinker *agent_registry_lookup(const AgentClient *client, uint32_t id) {
  return g_hash_table_lookup(client->by_id, GUINT_TO_POINTER(id));
}

static AgentShrinker *lookup_or_error(const AgentClient *client, uint32_t id, GError **error) {
  AgentShrinker *s = agent_registry_lookup(client, id);

  if (!s)
    g_set_error(error, AGENT_PROTO_ERROR, PROTO_ERR_UNKNOWN_ID, "no shrinker with id %u", id);
  return s;
}

gboolean agent_registry_remove_shrinker(AgentRegistry *self, AgentClient *client, uint32_t id,
                                        GError **error) {
  AgentShrinker *s = lookup_or_error(client, id, error);

  if (!s)
    return FALSE;
  shrinker_free(self, s);
  return TRUE;
}

gboolean agent_registry_set_estimate(AgentRegistry *self, AgentClient *client, uint32_t id,
                                     bool has_estimate, uint64_t estimate_bytes, GError **error) {
  AgentShrinker *s = lookup_or_error(client, id, error);

  if (!s)
    return FALSE;
  s->has_estimate = has_estimate;
  s->estimate_bytes = has_estimate ? estimate_bytes : 0;
  return TRUE;
}

const GQueue *agent_registry_clients(const AgentRegistry *self) {
  return &self->clients;
}

guint agent_registry_n_shrinkers(const AgentRegistry *self) {
  return self->n_shrinkers;
}

void agent_shrinker_note_asked(AgentShrinker *self, uint64_t bytes) {
  self->asked++;
  self->asked_bytes = agent_sat_add(self->asked_bytes, bytes);
}

void agent_shrinker_note_reply(AgentShrinker *self, uint64_t freed_bytes, bool in_time,
                               int64_t now_wall_us) {
  self->freed_bytes = agent_sat_add(self->freed_bytes, freed_bytes);
  self->last_freed_bytes = freed_bytes;
  self->last_reply_us = now_wall_us;
  if (in_time)
    self->consecutive_misses = 0;
}

void agent_shrinker_note_miss(AgentShrinker *self) {
  if (self->consecutive_misses < UINT32_MAX)
    self->consecutive_misses++;
  self->misses++;
}
