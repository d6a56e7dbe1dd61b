/* SPDX-License-Identifier: MIT */
/*
 * Running shrink rounds (see round.h for the contract).
 *
 * A round is a small state machine driven by advance(): it runs whenever
 * something may have changed (a reply, a deadline, a shrinker gone) and
 * moves on while nothing is open: finish if the target is claimed, else a
 * second pass, else the next phase, else finish.
 */
#include "round.h"

#include <errno.h>

#include "errors.h"
#include "memory.h"
#include "loop.h"
#include "policy.h"
#include "saturate.h"

/* Per-request log lines are checked first: a g_debug() that is dropped
 * still formats its text (about 0.3 us here), paid three times per request
 * on the fan-out's hot path. */
#define REQ_DEBUG(r, ...)                                                                          \
  do {                                                                                             \
    if (G_UNLIKELY((r)->debug))                                                                    \
      g_debug(__VA_ARGS__);                                                                        \
  } while (0)

#define MAX_REQS_PER_SLOT (AGENT_POLICY_PHASES_MAX * AGENT_POLICY_PASSES_MAX)

typedef struct {
  AgentRoundParams params;
  AgentRoundDoneFunc done;
  gpointer user_data;
  GDestroyNotify destroy;
} Pending;

/* A client (connection) in the running round, and what its process's RSS
 * says of its claims. Root's claims are taken as they are (root could stop
 * the agent anyway); any other user's count only as far as the RSS of the
 * process at the other end of the connection fell. */
typedef struct {
  AgentClient *client; /* NULL once it went away */
  gboolean checked;    /* not root: claims are checked against RSS */
  gboolean rss_known;  /* rss_before_bytes could be read */
  uint64_t rss_before_bytes;
  uint64_t claimed_bytes;  /* this round, each reply capped at its ask */
  uint64_t verified_bytes; /* of that, what the RSS drop confirms */
} ClientRound;

typedef struct {
  AgentShrinker *shrinker;      /* NULL once it went away */
  guint client;                 /* index into Round.clients */
  guint req[MAX_REQS_PER_SLOT]; /* its requests, indices into report->requests */
  guint n_req;
  guint n_matched; /* replies matched so far (in order) */
} Slot;

typedef struct {
  Pending *pending;
  AgentRoundReport *report;

  agent_policy_phase phases[AGENT_POLICY_PHASES_MAX];
  unsigned n_phases;
  unsigned phase;         /* index of the current phase */
  unsigned pass;          /* 0: phase not started; 1 or 2 */
  gboolean phase_expired; /* its deadline passed */
  uint64_t phase_target;  /* what the phase must free */
  guint phase_first_req;  /* first request of the phase */
  guint phase_open;       /* requests of the phase neither answered nor missed */
  int64_t phase_start_mono;

  int64_t start_mono;
  int64_t first_send_mono; /* 0: nothing sent yet */
  int64_t last_reply_mono; /* 0: no reply in time yet */

  Slot *slots;
  GArray *clients;               /* ClientRound, one per client with shrinkers in the round */
  uint64_t verified_bytes;       /* claims the clients' RSS confirmed (root's: all) */
  uint64_t phase_verified_start; /* verified_bytes when the phase began */
  agent_policy_candidate *cands; /* parallel to slots, as the policy sees them */
  uint64_t *asks;                /* scratch for the policy */
  size_t n_slots;
  GArray *req_slot; /* guint slot index of each request */

  gboolean debug; /* per-request debug lines wanted */
  guint timer_id; /* the phase's deadline */
  guint check_id; /* idle: re-evaluate after a shrinker went away */
} Round;

struct AgentRounds {
  AgentRegistry *registry;
  AgentProcfs *procfs;
  AgentRoundConfig config;

  GQueue pending; /* Pending*, waiting behind the running round */
  Round *current;
  guint start_id; /* idle that starts the next round */
  uint64_t last_round_id;

  GQueue history; /* AgentRoundReport*, oldest first */
  guint history_requests;
  uint64_t total_rounds;
  uint64_t total_claimed;
  uint64_t total_verified;
  int64_t total_measured;
  gboolean meminfo_warned;
};

static void advance(AgentRounds *self);
static void on_shrinker_removed(AgentShrinker *shrinker, gpointer user_data);

static void pending_free(Pending *p, gboolean notify) {
  if (notify && p->destroy)
    p->destroy(p->user_data);
  g_free(p);
}

static void report_free(AgentRoundReport *report) {
  for (guint i = 0; i < report->requests->len; i++) {
    AgentRoundRequest *req = &g_array_index(report->requests, AgentRoundRequest, i);

    g_ref_string_release(req->client);
    g_ref_string_release(req->shrinker);
  }
  g_array_free(report->requests, TRUE);
  g_free(report);
}

static void round_free(Round *r) {
  if (r->timer_id)
    g_source_remove(r->timer_id);
  if (r->check_id)
    g_source_remove(r->check_id);
  for (size_t i = 0; i < r->n_slots; i++)
    if (r->slots[i].shrinker)
      r->slots[i].shrinker->round_slot = -1;
  g_free(r->slots);
  g_array_free(r->clients, TRUE);
  g_free(r->cands);
  g_free(r->asks);
  g_array_free(r->req_slot, TRUE);
  if (r->report)
    report_free(r->report);
  if (r->pending)
    pending_free(r->pending, TRUE);
  g_free(r);
}

AgentRounds *agent_rounds_new(AgentRegistry *registry, AgentProcfs *procfs,
                              const AgentRoundConfig *config) {
  AgentRounds *self = g_new0(AgentRounds, 1);

  self->registry = registry;
  self->procfs = procfs;
  if (config)
    self->config = *config;
  if (self->config.history_max == 0)
    self->config.history_max = AGENT_ROUND_HISTORY_DEFAULT;
  if (self->config.queue_max == 0)
    self->config.queue_max = AGENT_ROUND_QUEUE_DEFAULT;
  if (self->config.soft_share_pct == 0)
    self->config.soft_share_pct = 50;
  g_queue_init(&self->pending);
  g_queue_init(&self->history);
  agent_registry_set_removal_hook(registry, on_shrinker_removed, self);
  return self;
}

void agent_rounds_free(AgentRounds *self) {
  Pending *p;
  AgentRoundReport *report;

  if (!self)
    return;
  agent_registry_set_removal_hook(self->registry, NULL, NULL);
  if (self->start_id)
    g_source_remove(self->start_id);
  if (self->current)
    round_free(self->current);
  while ((p = g_queue_pop_head(&self->pending)))
    pending_free(p, TRUE);
  while ((report = g_queue_pop_head(&self->history)))
    report_free(report);
  g_free(self);
}

static int64_t since_ms(int64_t from_mono, int64_t now_mono) {
  return (now_mono - from_mono) / 1000;
}

/* ---- starting ---- */

static gint by_priority(gconstpointer a, gconstpointer b) {
  const AgentShrinker *x = *(AgentShrinker *const *)a;
  const AgentShrinker *y = *(AgentShrinker *const *)b;

  if (x->priority != y->priority)
    return x->priority > y->priority ? -1 : 1;
  return x->serial < y->serial ? -1 : x->serial > y->serial;
}

static gboolean read_mem_available(AgentRounds *self, uint64_t *out) {
  g_autoptr(GError) error = NULL;
  AgentMeminfo mi;

  if (!agent_procfs_read_meminfo(self->procfs, &mi, &error)) {
    /* Once: a broken proc root would otherwise log every round. */
    if (!self->meminfo_warned)
      g_warning("rounds will not be measured: %s", error->message);
    self->meminfo_warned = TRUE;
    return FALSE;
  }
  *out = mi.mem_available_bytes;
  return TRUE;
}

/* ---- what clients' claims are worth ---- */

/* @a * @num / @den without overflow (@num <= @den). */
static uint64_t scale(uint64_t a, uint64_t num, uint64_t den) {
  return den == 0 ? a : (uint64_t)((unsigned __int128)a * num / den);
}

/*
 * Files the round's clients (r->clients, each slot's index into it) and,
 * for the checked ones, reads their RSS and caps their shrinkers'
 * estimates: together at most what the process holds (those without one
 * get a share of it; nothing where it cannot be read), scaled by how well
 * its past claims held up. An estimate is a hint: a client cannot hold
 * more than it has mapped, and one that claimed without freeing gets less
 * of the next split.
 */
static void take_clients(AgentRounds *self, Round *r) {
  g_autoptr(GHashTable) index = g_hash_table_new(g_direct_hash, g_direct_equal);

  for (size_t i = 0; i < r->n_slots; i++) {
    AgentClient *client = r->slots[i].shrinker->client;
    gpointer found;

    if (!g_hash_table_lookup_extended(index, client, NULL, &found)) {
      ClientRound cr = {.client = client, .checked = client->uid != 0};

      if (cr.checked) {
        cr.rss_known =
            agent_procfs_read_rss(self->procfs, client->pid, &cr.rss_before_bytes, NULL);
        client->rss_bytes = cr.rss_known ? cr.rss_before_bytes : 0;
      }
      found = GUINT_TO_POINTER(r->clients->len);
      g_array_append_val(r->clients, cr);
      g_hash_table_insert(index, client, found);
    }
    r->slots[i].client = GPOINTER_TO_UINT(found);
  }

  for (guint k = 0; k < r->clients->len; k++) {
    ClientRound *cr = &g_array_index(r->clients, ClientRound, k);
    uint64_t trust = agent_client_trust(cr->client), cap, sum = 0, n_unestimated = 0;
    uint64_t rss = cr->rss_known ? cr->rss_before_bytes : 0;

    if (!cr->checked)
      continue;
    for (size_t i = 0; i < r->n_slots; i++)
      if (r->slots[i].client == k && !r->cands[i].has_estimate)
        n_unestimated++;
    /* A shrinker with no estimate would share what estimates leave over
     * with every other such shrinker: 4096 of them would leave a real
     * client 1/4097 of a hard round. Here it is estimated at its share of
     * what its process holds, and so capped like the rest. */
    for (size_t i = 0; i < r->n_slots; i++) {
      if (r->slots[i].client != k)
        continue;
      if (!r->cands[i].has_estimate) {
        r->cands[i].has_estimate = TRUE;
        r->cands[i].estimate_bytes = rss / n_unestimated;
      }
      sum = agent_sat_add(sum, r->cands[i].estimate_bytes);
    }
    cap = cr->rss_known ? MIN(sum, rss) : sum;
    cap = scale(cap, trust, AGENT_CLIENT_TRUST_ONE);
    for (size_t i = 0; i < r->n_slots; i++)
      if (r->slots[i].client == k && r->cands[i].has_estimate)
        r->cands[i].estimate_bytes = scale(r->cands[i].estimate_bytes, cap, sum);
  }
}

/*
 * Brings r->verified_bytes up to date: for each checked client that
 * claimed more than is confirmed, reads its RSS again; what fell since the
 * round began confirms its claims up to that much. A client that is gone,
 * or whose RSS cannot be read, confirms nothing more.
 */
static void verify_claims(AgentRounds *self, Round *r) {
  uint64_t total = 0;

  for (guint k = 0; k < r->clients->len; k++) {
    ClientRound *cr = &g_array_index(r->clients, ClientRound, k);
    uint64_t now;

    if (!cr->checked) {
      cr->verified_bytes = cr->claimed_bytes;
    } else if (cr->client && cr->rss_known && cr->verified_bytes < cr->claimed_bytes &&
               agent_procfs_read_rss(self->procfs, cr->client->pid, &now, NULL)) {
      cr->client->rss_bytes = now;
      if (now < cr->rss_before_bytes)
        cr->verified_bytes = MIN(cr->claimed_bytes, cr->rss_before_bytes - now);
    }
    total = agent_sat_add(total, cr->verified_bytes);
  }
  r->verified_bytes = total;
}

/* What the phase freed so far, as confirmed. */
static uint64_t phase_verified(const Round *r) {
  return r->verified_bytes - MIN(r->phase_verified_start, r->verified_bytes);
}

static void begin_round(AgentRounds *self, Pending *pending) {
  g_autoptr(GPtrArray) all = g_ptr_array_new();
  Round *r = g_new0(Round, 1);
  AgentRoundReport *report = g_new0(AgentRoundReport, 1);

  r->pending = pending;
  r->report = report;
  report->round_id = ++self->last_round_id;
  report->level = pending->params.level;
  report->reason = pending->params.reason;
  report->target_bytes = pending->params.target_bytes;
  report->deadline_ms = pending->params.deadline_ms;
  report->requests = g_array_new(FALSE, FALSE, sizeof(AgentRoundRequest));
  report->started_us = g_get_real_time();
  r->start_mono = g_get_monotonic_time();
  r->req_slot = g_array_new(FALSE, FALSE, sizeof(guint));
  r->debug = !g_log_writer_default_would_drop(G_LOG_LEVEL_DEBUG, G_LOG_DOMAIN);
  report->measured = read_mem_available(self, &report->mem_available_before_bytes);

  for (const GList *c = agent_registry_clients(self->registry)->head; c; c = c->next)
    for (const GList *s = ((AgentClient *)c->data)->shrinkers.head; s; s = s->next)
      g_ptr_array_add(all, s->data);
  g_ptr_array_sort(all, by_priority);

  r->n_slots = all->len;
  r->slots = g_new0(Slot, MAX(r->n_slots, 1));
  r->cands = g_new0(agent_policy_candidate, MAX(r->n_slots, 1));
  r->asks = g_new0(uint64_t, MAX(r->n_slots, 1));
  r->clients = g_array_new(FALSE, TRUE, sizeof(ClientRound));
  for (size_t i = 0; i < r->n_slots; i++) {
    AgentShrinker *s = g_ptr_array_index(all, i);

    r->slots[i].shrinker = s;
    s->round_slot = (int)i;
    r->cands[i].has_estimate = s->has_estimate;
    r->cands[i].estimate_bytes = s->estimate_bytes;
    r->cands[i].priority = s->priority;
    r->cands[i].consecutive_misses = s->consecutive_misses;
  }
  take_clients(self, r);

  r->n_phases = agent_policy_plan_phases(report->level, report->deadline_ms,
                                         self->config.soft_share_pct, pending->params.soft_done,
                                         r->phases);
  r->phase = 0;
  r->pass = 0;
  r->phase_target = report->target_bytes;
  r->phase_start_mono = r->start_mono;
  self->current = r;
  g_info("round %" G_GUINT64_FORMAT ": %s %s, target %" G_GUINT64_FORMAT
         " bytes, %u ms, %zu shrinkers",
         report->round_id, proto_level_name(report->level), proto_reason_name(report->reason),
         report->target_bytes, report->deadline_ms, r->n_slots);
  advance(self);
}

static gboolean start_next_cb(gpointer data) {
  AgentRounds *self = data;
  Pending *p;

  self->start_id = 0;
  if (self->current)
    return G_SOURCE_REMOVE;
  p = g_queue_pop_head(&self->pending);
  if (p)
    begin_round(self, p);
  return G_SOURCE_REMOVE;
}

static void schedule_start(AgentRounds *self) {
  if (!self->current && !self->start_id && !g_queue_is_empty(&self->pending))
    self->start_id = agent_loop_defer(start_next_cb, self);
}

gboolean agent_round_request(AgentRounds *self, const AgentRoundParams *params,
                             AgentRoundDoneFunc done, gpointer user_data, GDestroyNotify destroy,
                             GError **error) {
  Pending *p;

  if (params->level != PROTO_LEVEL_SOFT && params->level != PROTO_LEVEL_HARD) {
    g_set_error(error, AGENT_ERROR, AGENT_ERROR_INVALID, "unknown level %d", params->level);
    return FALSE;
  }
  if ((unsigned)params->reason > PROTO_REASON_LAST) {
    g_set_error(error, AGENT_ERROR, AGENT_ERROR_INVALID, "unknown reason %d", params->reason);
    return FALSE;
  }
  if (params->deadline_ms < 1 || params->deadline_ms > PROTO_DEADLINE_MAX_MS) {
    g_set_error(error, AGENT_ERROR, AGENT_ERROR_INVALID, "deadline of %u ms is not within 1..%u ms",
                params->deadline_ms, PROTO_DEADLINE_MAX_MS);
    return FALSE;
  }
  if (g_queue_get_length(&self->pending) >= self->config.queue_max) {
    g_set_error(error, AGENT_ERROR, AGENT_ERROR_BUSY,
                "%u rounds are already waiting; try again later", self->config.queue_max);
    return FALSE;
  }
  p = g_new0(Pending, 1);
  p->params = *params;
  p->done = done;
  p->user_data = user_data;
  p->destroy = destroy;
  g_queue_push_tail(&self->pending, p);
  schedule_start(self);
  return TRUE;
}

/* ---- sending ---- */

/* Sends one SHRINK for slot @i asking @ask bytes; files the request. */
static void send_one(AgentRounds *self, Round *r, guint i, uint64_t ask, uint32_t deadline_ms) {
  Slot *slot = &r->slots[i];
  AgentShrinker *s = slot->shrinker;
  AgentRoundRequest req = {0};
  proto_msg msg = {.type = PROTO_MSG_SHRINK};
  int64_t now = g_get_monotonic_time();
  int rc;

  req.pid = s->client->pid;
  req.uid = s->client->uid;
  req.client = g_ref_string_acquire(s->client->name);
  req.shrinker = g_ref_string_acquire(s->name);
  req.id = s->id;
  req.pass = (uint8_t)r->pass;
  req.level = r->phases[r->phase].level;
  req.asked_bytes = ask;
  req.reply_us = -1;

  msg.u.shrink.round_id = r->report->round_id;
  msg.u.shrink.id = s->id;
  msg.u.shrink.level = (uint8_t)req.level;
  msg.u.shrink.reason = (uint8_t)r->report->reason;
  msg.u.shrink.target_bytes = ask;
  msg.u.shrink.deadline_ms = deadline_ms;

  if (r->first_send_mono == 0)
    r->first_send_mono = now;
  agent_shrinker_note_asked(s, ask);
  rc = proto_send(s->client->fd, &msg, true);
  if (rc < 0) {
    /* A full socket buffer (or a peer on its way out) must not block
     * the agent: the request is simply missed. */
    REQ_DEBUG(r, "round %" G_GUINT64_FORMAT ": cannot send to %s/%s (pid %d): %s",
              r->report->round_id, s->client->name, s->name, (int)s->client->pid, g_strerror(-rc));
    req.missed = TRUE;
    agent_shrinker_note_miss(s);
  } else {
    s->outstanding++;
    r->phase_open++;
  }
  REQ_DEBUG(r, "round %" G_GUINT64_FORMAT ": pass %u %s: %s/%s asked %" G_GUINT64_FORMAT " bytes",
            r->report->round_id, r->pass, proto_level_name(req.level), s->client->name, s->name,
            ask);
  g_assert(slot->n_req < MAX_REQS_PER_SLOT);
  slot->req[slot->n_req++] = r->report->requests->len;
  g_array_append_val(r->report->requests, req);
  g_array_append_val(r->req_slot, i);
}

static gboolean deadline_cb(gpointer data) {
  AgentRounds *self = data;
  Round *r = self->current;

  r->timer_id = 0;
  r->phase_expired = TRUE;
  advance(self);
  return G_SOURCE_REMOVE;
}

/* Sends pass r->pass of the current phase. */
static void send_pass(AgentRounds *self, Round *r) {
  const agent_policy_phase *phase = &r->phases[r->phase];
  int64_t now = g_get_monotonic_time();
  int64_t left_ms = (int64_t)phase->deadline_ms - since_ms(r->phase_start_mono, now);
  agent_policy_pass pass = {
      .target_bytes = r->pass == 1 ? r->phase_target : r->phase_target - MIN(phase_verified(r), r->phase_target),
      .level = phase->level,
      .pass = r->pass,
      .miss_limit = self->config.miss_limit,
  };

  if (left_ms < 1)
    left_ms = 1;
  agent_policy_split(&pass, r->cands, r->n_slots, r->asks, NULL);
  for (size_t i = 0; i < r->n_slots; i++) {
    if (r->pass == 1) {
      r->cands[i].pass1_asked_bytes = r->asks[i];
      r->cands[i].pass1_freed_bytes = 0;
      r->cands[i].pass1_answered = FALSE;
    }
    if (r->asks[i] > 0)
      send_one(self, r, (guint)i, r->asks[i], (uint32_t)left_ms);
  }
  if (r->phase_open > 0 && !r->timer_id)
    r->timer_id = g_timeout_add((guint)left_ms, deadline_cb, self);
}

/* ---- ending ---- */

/* Marks every open request of the current phase missed. */
static void close_phase(Round *r) {
  if (r->timer_id) {
    g_source_remove(r->timer_id);
    r->timer_id = 0;
  }
  for (guint i = r->phase_first_req; i < r->report->requests->len; i++) {
    AgentRoundRequest *req = &g_array_index(r->report->requests, AgentRoundRequest, i);
    Slot *slot = &r->slots[g_array_index(r->req_slot, guint, i)];

    if (req->answered || req->missed)
      continue;
    req->missed = TRUE;
    if (slot->shrinker)
      agent_shrinker_note_miss(slot->shrinker);
  }
  r->phase_open = 0;
}

static void file_report(AgentRounds *self, AgentRoundReport *report) {
  g_queue_push_tail(&self->history, report);
  self->history_requests += report->requests->len;
  while (g_queue_get_length(&self->history) > 1 &&
         (g_queue_get_length(&self->history) > self->config.history_max ||
          self->history_requests > AGENT_ROUND_HISTORY_REQUESTS_MAX)) {
    AgentRoundReport *old = g_queue_pop_head(&self->history);

    self->history_requests -= old->requests->len;
    report_free(old);
  }
  self->total_rounds++;
  self->total_claimed = agent_sat_add(self->total_claimed, report->claimed_bytes);
  self->total_verified = agent_sat_add(self->total_verified, report->verified_bytes);
  if (report->measured)
    self->total_measured = agent_sat_add_signed(self->total_measured, report->measured_bytes);
}

static void finish_round(AgentRounds *self) {
  Round *r = self->current;
  AgentRoundReport *report = r->report;
  Pending *pending = r->pending;
  uint64_t after;

  close_phase(r);
  verify_claims(self, r);
  report->verified_bytes = r->verified_bytes;
  for (guint k = 0; k < r->clients->len; k++) {
    ClientRound *cr = &g_array_index(r->clients, ClientRound, k);

    if (cr->client && cr->checked && cr->claimed_bytes > 0) {
      cr->client->claimed_bytes = agent_sat_add(cr->client->claimed_bytes, cr->claimed_bytes);
      cr->client->verified_bytes = agent_sat_add(cr->client->verified_bytes, cr->verified_bytes);
    }
  }
  if (r->first_send_mono && r->last_reply_mono)
    report->fanout_us = r->last_reply_mono - r->first_send_mono;
  if (report->measured && read_mem_available(self, &after)) {
    report->mem_available_after_bytes = after;
    report->measured_bytes = (int64_t)after - (int64_t)report->mem_available_before_bytes;
  } else {
    report->measured = FALSE;
    report->mem_available_before_bytes = 0;
  }
  report->duration_us = g_get_monotonic_time() - r->start_mono;

  r->report = NULL;
  r->pending = NULL;
  self->current = NULL;
  if (r->n_slots >= 256) /* its bookkeeping leaves holes in the heap */
    agent_memory_release_soon();
  round_free(r);
  file_report(self, report);

  g_info("round %" G_GUINT64_FORMAT " done: claimed %" G_GUINT64_FORMAT " of %" G_GUINT64_FORMAT
         " bytes, measured %" G_GINT64_FORMAT "%s, %u requests, %" G_GINT64_FORMAT " us",
         report->round_id, report->claimed_bytes, report->target_bytes, report->measured_bytes,
         report->measured ? "" : " (not measured)", report->requests->len, report->duration_us);
  if (pending->done)
    pending->done(report, pending->user_data);
  pending_free(pending, TRUE);
  schedule_start(self);
}

/* Moves the current round on while nothing is open. */
static void advance(AgentRounds *self) {
  Round *r;

  while ((r = self->current)) {
    const agent_policy_phase *phase = &r->phases[r->phase];

    if (r->phase_expired)
      close_phase(r);
    if (r->phase_open > 0)
      return;
    /* Claims alone never end a round: only what the RSS confirms. */
    verify_claims(self, r);
    if (r->verified_bytes >= r->report->target_bytes) {
      finish_round(self);
      return;
    }
    if (r->pass == 0) {
      r->pass = 1;
      send_pass(self, r);
      continue;
    }
    if (r->pass == 1 && !r->phase_expired && phase_verified(r) < r->phase_target &&
        since_ms(r->phase_start_mono, g_get_monotonic_time()) < phase->deadline_ms) {
      r->pass = 2;
      send_pass(self, r);
      continue;
    }
    /* The phase is over. */
    close_phase(r);
    if (r->phase + 1 >= r->n_phases) {
      finish_round(self);
      return;
    }
    r->phase++;
    r->pass = 0;
    r->phase_expired = FALSE;
    r->phase_target = r->report->target_bytes - MIN(r->verified_bytes, r->report->target_bytes);
    r->phase_verified_start = r->verified_bytes;
    r->phase_first_req = r->report->requests->len;
    r->phase_start_mono = g_get_monotonic_time();
  }
}

static gboolean check_cb(gpointer data) {
  AgentRounds *self = data;

  self->current->check_id = 0;
  advance(self);
  return G_SOURCE_REMOVE;
}

/* The registry is about to free @shrinker: stop waiting for it. Only
 * marks; the round moves on from an idle callback, because here we are
 * inside the registry's removal of a whole client, whose other shrinkers a
 * second pass must not pick. */
static void on_shrinker_removed(AgentShrinker *shrinker, gpointer user_data) {
  AgentRounds *self = user_data;
  Round *r = self->current;
  Slot *slot;

  if (!r || shrinker->round_slot < 0)
    return;
  slot = &r->slots[shrinker->round_slot];
  /* Its client may be going too: forget it (its last confirmation stays). */
  if (g_queue_get_length(&shrinker->client->shrinkers) <= 1)
    g_array_index(r->clients, ClientRound, slot->client).client = NULL;
  r->cands[shrinker->round_slot].gone = TRUE;
  slot->shrinker = NULL;
  shrinker->round_slot = -1;
  for (guint k = slot->n_matched; k < slot->n_req; k++) {
    AgentRoundRequest *req = &g_array_index(r->report->requests, AgentRoundRequest, slot->req[k]);

    if (!req->answered && !req->missed) {
      req->missed = TRUE;
      r->phase_open--;
    }
  }
  if (r->phase_open == 0 && !r->check_id)
    r->check_id = agent_loop_defer(check_cb, self);
}

/* ---- replies ---- */

gboolean agent_round_handle_done(AgentRounds *self, AgentClient *client,
                                 const proto_shrink_done *done, GError **error) {
  AgentShrinker *s = agent_registry_lookup(client, done->id);
  Round *r = self->current;
  int64_t now = g_get_monotonic_time();

  if (!s) {
    g_set_error(error, AGENT_PROTO_ERROR, PROTO_ERR_UNKNOWN_ID, "no shrinker with id %u", done->id);
    return FALSE;
  }
  if (s->outstanding == 0) {
    g_set_error(error, AGENT_PROTO_ERROR, PROTO_ERR_STATE, "shrinker %u was not asked for anything",
                done->id);
    return FALSE;
  }
  s->outstanding--;

  if (r && done->round_id == r->report->round_id && s->round_slot >= 0) {
    Slot *slot = &r->slots[s->round_slot];

    if (slot->n_matched < slot->n_req) {
      AgentRoundRequest *req =
          &g_array_index(r->report->requests, AgentRoundRequest, slot->req[slot->n_matched++]);

      if (!req->missed) {
        agent_policy_candidate *c = &r->cands[s->round_slot];
        ClientRound *cr = &g_array_index(r->clients, ClientRound, slot->client);
        /* Nobody frees more than it was asked for, as far as the round
         * is concerned: a claim of 2^64-1 counts as its ask. */
        uint64_t freed = MIN(done->freed_bytes, req->asked_bytes);

        req->answered = TRUE;
        req->freed_bytes = freed;
        req->reply_us = now - r->start_mono;
        r->last_reply_mono = now;
        c->round_freed_bytes = agent_sat_add(c->round_freed_bytes, freed);
        if (req->pass == 1) {
          c->pass1_answered = TRUE;
          c->pass1_freed_bytes = freed;
        }
        r->report->claimed_bytes = agent_sat_add(r->report->claimed_bytes, freed);
        cr->claimed_bytes = agent_sat_add(cr->claimed_bytes, freed);
        r->phase_open--;
        agent_shrinker_note_reply(s, freed, TRUE, g_get_real_time());
        REQ_DEBUG(r,
                  "round %" G_GUINT64_FORMAT ": %s/%s freed %" G_GUINT64_FORMAT
                  " bytes in %" G_GINT64_FORMAT " us",
                  r->report->round_id, client->name, s->name, done->freed_bytes, req->reply_us);
        advance(self);
        return TRUE;
      }
    }
  }
  g_debug("late reply from %s/%s (round %" G_GUINT64_FORMAT "): %" G_GUINT64_FORMAT " bytes",
          client->name, s->name, done->round_id, done->freed_bytes);
  agent_shrinker_note_reply(s, done->freed_bytes, FALSE, g_get_real_time());
  return TRUE;
}

/* ---- the rest ---- */

guint agent_round_send_relief(AgentRounds *self, uint64_t round_id, proto_reason reason) {
  proto_msg msg = {.type = PROTO_MSG_RELIEF};
  guint reached = 0;

  msg.u.relief.round_id = round_id;
  msg.u.relief.reason = (uint8_t)reason;
  for (const GList *c = agent_registry_clients(self->registry)->head; c; c = c->next) {
    AgentClient *client = c->data;

    if (g_queue_is_empty(&client->shrinkers))
      continue;
    if (proto_send(client->fd, &msg, true) == 0)
      reached++;
  }
  return reached;
}

gboolean agent_round_is_running(const AgentRounds *self) {
  return self->current != NULL;
}

const GQueue *agent_round_history(const AgentRounds *self) {
  return &self->history;
}

void agent_round_totals(const AgentRounds *self, uint64_t *rounds, uint64_t *claimed_bytes,
                        uint64_t *verified_bytes, int64_t *measured_bytes) {
  if (rounds)
    *rounds = self->total_rounds;
  if (claimed_bytes)
    *claimed_bytes = self->total_claimed;
  if (verified_bytes)
    *verified_bytes = self->total_verified;
  if (measured_bytes)
    *measured_bytes = self->total_measured;
}

gboolean agent_round_skips_in_soft(const AgentRounds *self, const AgentShrinker *shrinker) {
  return self->config.miss_limit > 0 && shrinker->consecutive_misses >= self->config.miss_limit;
}
