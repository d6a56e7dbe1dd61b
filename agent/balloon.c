/* SPDX-License-Identifier: MIT */
/*
 * The balloon controller (see balloon.h): the pure decisions first, then
 * the glue that feeds them and carries them out.
 */
#include "balloon.h"

#include <string.h>

#include "errors.h"
#include "policy.h"
#include "saturate.h"

#define MIB(b) ((double)(b) / (1024.0 * 1024.0))

/* ---- the pure part ---- */

void agent_balloon_policy_init(AgentBalloonPolicy *p) {
  memset(p, 0, sizeof(*p));
  p->reserve_bytes = AGENT_BALLOON_RESERVE_DEFAULT;
  p->stall_ms = AGENT_BALLOON_STALL_MS_DEFAULT;
  p->min_interval_ms = AGENT_BALLOON_MIN_INTERVAL_DEFAULT;
  p->escalate_delay_ms = AGENT_BALLOON_ESCALATE_DELAY_DEFAULT;
  p->max_rounds = AGENT_BALLOON_MAX_ROUNDS_DEFAULT;
  p->soft_deadline_ms = AGENT_BALLOON_SOFT_DEADLINE_DEFAULT;
  p->hard_deadline_ms = AGENT_BALLOON_HARD_DEADLINE_DEFAULT;
  p->blind_step_bytes = AGENT_BALLOON_RESERVE_DEFAULT;
  p->blind_quiet_ms = AGENT_BALLOON_BLIND_QUIET_DEFAULT;
  p->psi_round_bytes = AGENT_BALLOON_RESERVE_DEFAULT;
  p->psi_interval_ms = AGENT_BALLOON_PSI_INTERVAL_DEFAULT;
  p->hint_pct = AGENT_BALLOON_HINT_PCT_DEFAULT;
  p->hint_fallback_bytes = AGENT_BALLOON_RESERVE_DEFAULT;
  p->hint_deadline_ms = AGENT_BALLOON_HINT_DEADLINE_DEFAULT;
}

const char *agent_balloon_step_name(AgentBalloonStep step) {
  static const char *const names[] = {"idle",   "wait",      "soft",   "hard",
                                      "relief", "converged", "give-up"};

  return (unsigned)step < G_N_ELEMENTS(names) ? names[step] : "?";
}

static void act(AgentBalloonAction *out, AgentBalloonStep step, const char *why) {
  out->step = step;
  out->why = why;
}

static void act_round(AgentBalloonAction *out, const AgentBalloonPolicy *p, bool hard,
                      uint64_t bytes, const char *why) {
  act(out, hard ? AGENT_BALLOON_HARD : AGENT_BALLOON_SOFT, why);
  out->round_bytes = bytes;
  out->deadline_ms = hard ? p->hard_deadline_ms : p->soft_deadline_ms;
}

static void act_wait(AgentBalloonAction *out, int64_t ms, const char *why) {
  act(out, AGENT_BALLOON_WAIT, why);
  out->wait_ms = (uint32_t)CLAMP(ms, 1, G_MAXINT32);
}

void agent_balloon_decide(const AgentBalloonPolicy *p, const AgentBalloonFacts *f,
                          AgentBalloonAction *out) {
  uint64_t missing = 0, free_beyond = 0, amount;
  bool stalled;

  memset(out, 0, sizeof(*out));
  if (f->target_known && f->target_fell && f->target_bytes <= f->actual_bytes) {
    act(out, AGENT_BALLOON_RELIEF, "the host lowered the balloon's target");
    return;
  }
  if (!f->target_known && f->actual_fell) {
    act(out, AGENT_BALLOON_RELIEF, "the balloon shrank (target unknown)");
    return;
  }
  if (!f->in_episode) {
    act(out, AGENT_BALLOON_IDLE, "no episode");
    return;
  }
  if (f->round_running) {
    act(out, AGENT_BALLOON_IDLE, "a round of ours is running");
    return;
  }
  if (f->target_known) {
    missing = f->target_bytes > f->actual_bytes ? f->target_bytes - f->actual_bytes : 0;
    if (missing == 0) {
      act(out, AGENT_BALLOON_CONVERGED, "the balloon holds its target");
      return;
    }
  }
  if (f->gave_up) {
    act(out, AGENT_BALLOON_IDLE, "given up in this episode");
    return;
  }
  if (f->rounds > 0 && f->last_round_hard && f->last_round_claimed_bytes == 0 &&
      !f->last_round_missed) {
    act(out, AGENT_BALLOON_GIVE_UP, "the last hard round freed nothing");
    return;
  }
  if (f->rounds >= p->max_rounds) {
    act(out, AGENT_BALLOON_GIVE_UP, "the episode's rounds are used up");
    return;
  }
  if (f->mem_known && f->mem_available_bytes > p->reserve_bytes)
    free_beyond = f->mem_available_bytes - p->reserve_bytes;
  out->free_beyond_reserve_bytes = free_beyond;

  if (f->target_known && f->rounds == 0 && missing > free_beyond) {
    act_round(out, p, false, missing - free_beyond,
              "free memory beyond the reserve cannot cover the target");
    return;
  }
  /* The soft round left a shortfall: the balloon is bound to stall when
   * it has taken what is free, and by then any allocation in the guest
   * may call the OOM killer. Go hard now rather than wait for that. */
  if (f->target_known && f->rounds > 0 && !f->last_round_hard && missing > free_beyond &&
      (f->last_round_target_bytes == 0 || f->last_round_claimed_bytes < f->last_round_target_bytes)) {
    amount = missing - free_beyond;
    if (f->last_round_target_bytes)
      amount = MIN(amount, f->last_round_target_bytes - f->last_round_claimed_bytes);
    if (f->hint_in_progress) {
      act(out, AGENT_BALLOON_IDLE, "free page hinting in progress: no hard round");
      return;
    }
    if (f->since_round_ms >= 0 && f->since_round_ms < p->escalate_delay_ms) {
      act_wait(out, (int64_t)p->escalate_delay_ms - f->since_round_ms,
               "the hard round follows the soft one after escalate_delay_ms");
      return;
    }
    act_round(out, p, true, amount, "the soft round left a shortfall free memory cannot cover");
    return;
  }

  if (f->target_known) {
    stalled = f->stall_seen || f->since_progress_ms >= p->stall_ms;
    if (!stalled) {
      act_wait(out, (int64_t)p->stall_ms - f->since_progress_ms,
               f->rounds == 0 ? "free memory covers the target; the balloon is moving"
                              : "the balloon is moving");
      return;
    }
  } else {
    /* Without a target, "stopped" may mean "done": a stall needs an
     * "Out of puff" line, or no progress while memory is really short (a
     * stalled balloon leaves MemAvailable near 0; a guest that has just
     * given the balloon all it wanted may well sit a little below the
     * reserve). */
    bool short_of_memory = f->mem_known && f->mem_available_bytes < p->reserve_bytes / 4;

    stalled = f->stall_seen || (f->since_progress_ms >= p->stall_ms && short_of_memory);
    if (!stalled) {
      int64_t quiet = f->since_progress_ms, wait;

      if (f->since_stall_ms >= 0 && f->since_stall_ms < quiet)
        quiet = f->since_stall_ms;
      if (quiet >= p->blind_quiet_ms) {
        act(out, AGENT_BALLOON_CONVERGED, "the balloon has settled (target unknown)");
        return;
      }
      wait = (int64_t)p->blind_quiet_ms - quiet;
      if (f->since_progress_ms < p->stall_ms)
        wait = MIN(wait, (int64_t)p->stall_ms - f->since_progress_ms);
      act_wait(out, wait, "the balloon is moving (target unknown)");
      return;
    }
  }

  if (f->since_round_ms >= 0 && f->since_round_ms < p->min_interval_ms) {
    act_wait(out, (int64_t)p->min_interval_ms - f->since_round_ms, "rounds are rate-limited");
    return;
  }
  /* Without a target, each round asks twice the last (up to 16 steps'
   * worth): the balloon's need is unknown, the rounds are few. */
  amount = f->target_known ? missing : p->blind_step_bytes << MIN(f->rounds, 4u);
  /* Without a target a stall is the first sign of the episode, and it
   * means free memory is already gone (an "Out of puff" line, or
   * MemAvailable near 0): a soft round would come too late, the next
   * allocation in the guest calls the OOM killer. Seen in a TCG guest
   * with config space and the I/O BAR unreadable: soft 64 MiB, OOM kill
   * 90 ms later. */
  if (f->rounds == 0 && f->target_known) {
    act_round(out, p, false, amount,
              f->stall_seen ? "the driver is out of puff" : "the balloon stopped moving");
    return;
  }
  if (f->hint_in_progress) {
    act(out, AGENT_BALLOON_IDLE, "free page hinting in progress: no hard round");
    return;
  }
  act_round(out, p, true, amount,
            f->stall_seen ? "the driver is out of puff" : "the balloon stopped moving");
}

void agent_balloon_decide_pressure(const AgentBalloonPolicy *p, const AgentBalloonFacts *f,
                                   AgentBalloonAction *out) {
  memset(out, 0, sizeof(*out));
  if (f->in_episode && !f->gave_up)
    act(out, AGENT_BALLOON_IDLE, "the balloon's episode is being handled");
  else if (f->hint_in_progress)
    act(out, AGENT_BALLOON_IDLE,
        "free page hinting in progress: MemFree collapsing is no pressure");
  else if (f->round_running)
    act(out, AGENT_BALLOON_IDLE, "a round of ours is running");
  else if (f->since_psi_round_ms >= 0 && f->since_psi_round_ms < p->psi_interval_ms)
    act(out, AGENT_BALLOON_IDLE, "PSI rounds are rate-limited");
  else
    act_round(out, p, false, p->psi_round_bytes, "memory pressure (PSI)");
}

uint64_t agent_balloon_migration_bytes(bool estimates_known, uint64_t estimate_sum_bytes,
                                       uint64_t fallback_bytes, uint32_t pct) {
  uint64_t base =
      MIN(estimates_known ? estimate_sum_bytes : fallback_bytes, AGENT_POLICY_BYTES_MAX);

  pct = CLAMP(pct, 1u, 100u);
  /* base < 2^57, so base x 100 cannot overflow. */
  return (base * pct + 99) / 100;
}

bool agent_balloon_sum_estimates(const AgentRegistry *registry, uint64_t *sum_bytes) {
  bool known = FALSE;

  *sum_bytes = 0;
  if (!registry)
    return FALSE;
  for (const GList *c = agent_registry_clients(registry)->head; c; c = c->next) {
    const AgentClient *client = c->data;

    for (const GList *l = client->shrinkers.head; l; l = l->next) {
      const AgentShrinker *s = l->data;

      if (!s->has_estimate)
        continue;
      known = TRUE;
      *sum_bytes += MIN(s->estimate_bytes, AGENT_POLICY_BYTES_MAX - *sum_bytes);
    }
  }
  return known;
}

void agent_balloon_decide_hint(const AgentBalloonPolicy *p, const AgentBalloonFacts *f,
                               AgentBalloonAction *out) {
  uint64_t bytes;

  memset(out, 0, sizeof(*out));
  if (p->hint_off) {
    act(out, AGENT_BALLOON_IDLE, "hint rounds are off");
    return;
  }
  if (!f->hint_in_progress) {
    act(out, AGENT_BALLOON_IDLE, "no free page hinting in progress");
    return;
  }
  if (f->hint_round_asked && f->hint_round_cmd_id == f->hint_cmd_id) {
    act(out, AGENT_BALLOON_IDLE, "this hint had its round");
    return;
  }
  if (f->hint_round_running) {
    act(out, AGENT_BALLOON_IDLE, "a hint round is queued or running");
    return;
  }
  bytes = agent_balloon_migration_bytes(f->estimates_known, f->estimate_sum_bytes,
                                        p->hint_fallback_bytes, p->hint_pct);
  if (bytes == 0) {
    act(out, AGENT_BALLOON_IDLE, "the estimates leave nothing to free");
    return;
  }
  act(out, AGENT_BALLOON_SOFT,
      f->estimates_known ? "free page hinting began: the shrinkers' estimates"
                         : "free page hinting began: no estimates, the fallback size");
  out->round_bytes = bytes;
  out->deadline_ms = p->hint_deadline_ms;
}

/* ---- the glue ---- */

/* The done callback's link back to the controller, cleared when the
 * controller goes first (the round runner outlives it). */
typedef struct {
  AgentBalloon *owner;
  proto_reason reason;
  uint32_t hint_cmd_id; /* a hint round's */
} Ticket;

struct AgentBalloon {
  AgentRounds *rounds;
  AgentProcfs *procfs;
  AgentBalloonPolicy policy;
  GPtrArray *sources;
  AgentSource *virtio; /* borrowed from sources */
  bool refreshing;     /* evaluate_fresh() is asking the sources for a look */

  bool have_reading;
  AgentBalloonReading reading;
  bool target_fell;
  bool actual_fell; /* target unknown: the balloon began to shrink */
  bool blind_shrinking;

  bool in_episode;
  bool has_episode;
  AgentBalloonEpisode episode;
  int64_t episode_mono;
  bool last_round_hard;
  uint64_t last_round_claimed;
  uint64_t last_round_target;
  bool last_round_missed;
  int64_t last_progress_mono;
  int64_t last_round_end_mono; /* 0: none in this episode */
  bool stall_seen;
  int64_t last_stall_mono; /* 0: none in this episode */

  uint64_t stalls_seen;
  uint64_t oom_kills;
  uint64_t reliefs;
  Ticket *ticket;              /* our round in flight (balloon or PSI) */
  int64_t last_psi_round_mono; /* 0: none */
  guint timer_id;

  /* Free page hints, apart from the episode (balloon.h). */
  const AgentRegistry *registry; /* for the estimates; may be NULL */
  Ticket *hint_ticket;           /* our hint round in flight */
  bool hint_seen_any;
  uint32_t hint_seen_id; /* the last new command id */
  uint64_t hints_seen;
  bool hint_round_asked;
  uint32_t hint_round_cmd_id; /* the last one asked for */
  uint64_t hint_rounds;       /* ended */
  bool has_hint_round;
  uint32_t last_hint_cmd_id;
  uint64_t last_hint_round_id;
  uint64_t last_hint_claimed;
  guint hint_timer_id; /* retry after a full queue */
  bool hint_warned_busy;
  bool warned_busy;
  const char *last_why; /* of the last WAIT or IDLE, logged once */
};

AgentBalloon *agent_balloon_new(AgentRounds *rounds, AgentProcfs *procfs,
                                const AgentBalloonPolicy *policy) {
  AgentBalloon *self = g_new0(AgentBalloon, 1);
  AgentBalloonPolicy d;

  agent_balloon_policy_init(&d);
  self->rounds = rounds;
  self->procfs = procfs;
  self->policy = policy ? *policy : d;
#define DEFAULT(field)                                                                             \
  if (!self->policy.field)                                                                         \
  self->policy.field = d.field
  DEFAULT(reserve_bytes);
  DEFAULT(stall_ms);
  DEFAULT(min_interval_ms);
  DEFAULT(max_rounds);
  DEFAULT(soft_deadline_ms);
  DEFAULT(hard_deadline_ms);
  DEFAULT(blind_quiet_ms);
  DEFAULT(psi_interval_ms);
  DEFAULT(hint_pct);
  DEFAULT(hint_deadline_ms);
#undef DEFAULT
  self->policy.hint_pct = MIN(self->policy.hint_pct, 100u);
  if (!self->policy.blind_step_bytes)
    self->policy.blind_step_bytes = self->policy.reserve_bytes;
  if (!self->policy.psi_round_bytes)
    self->policy.psi_round_bytes = self->policy.reserve_bytes;
  if (!self->policy.hint_fallback_bytes)
    self->policy.hint_fallback_bytes = self->policy.reserve_bytes;
  self->sources = g_ptr_array_new_with_free_func((GDestroyNotify)agent_source_free);
  return self;
}

void agent_balloon_free(AgentBalloon *self) {
  if (!self)
    return;
  if (self->timer_id)
    g_source_remove(self->timer_id);
  if (self->hint_timer_id)
    g_source_remove(self->hint_timer_id);
  if (self->ticket)
    self->ticket->owner = NULL;
  if (self->hint_ticket)
    self->hint_ticket->owner = NULL;
  g_ptr_array_free(self->sources, TRUE);
  g_free(self);
}

static void on_event(AgentSource *source, const AgentSourceEvent *ev, gpointer user_data);

void agent_balloon_add_source(AgentBalloon *self, AgentSource *source) {
  agent_source_set_sink(source, on_event, self);
  g_ptr_array_add(self->sources, source);
  if (!self->virtio && strcmp(agent_source_name(source), "virtio-balloon") == 0)
    self->virtio = source;
}

void agent_balloon_set_registry(AgentBalloon *self, const AgentRegistry *registry) {
  self->registry = registry;
}

void agent_balloon_start(AgentBalloon *self) {
  for (guint i = 0; i < self->sources->len; i++)
    agent_source_start(g_ptr_array_index(self->sources, i));
}

const GPtrArray *agent_balloon_sources(const AgentBalloon *self) {
  return self->sources;
}

static int64_t ms_since(int64_t then_mono, int64_t now_mono) {
  return then_mono ? (now_mono - then_mono) / 1000 : -1;
}

static void facts_now(AgentBalloon *self, int64_t now, AgentBalloonFacts *f) {
  AgentMeminfo mi;

  memset(f, 0, sizeof(*f));
  f->target_known = self->have_reading && self->reading.target_known;
  f->target_bytes = self->reading.target_bytes;
  f->actual_bytes = self->reading.actual_bytes;
  f->target_fell = self->target_fell;
  f->actual_fell = self->actual_fell;
  f->in_episode = self->in_episode;
  f->gave_up = self->episode.gave_up;
  f->round_running = self->ticket != NULL;
  f->rounds = self->episode.rounds;
  f->last_round_hard = self->last_round_hard;
  f->last_round_claimed_bytes = self->last_round_claimed;
  f->last_round_target_bytes = self->last_round_target;
  f->last_round_missed = self->last_round_missed;
  if (agent_procfs_read_meminfo(self->procfs, &mi, NULL)) {
    f->mem_known = TRUE;
    f->mem_available_bytes = mi.mem_available_bytes;
  }
  f->hint_in_progress = self->have_reading && self->reading.hint_in_progress;
  f->stall_seen = self->stall_seen;
  f->since_progress_ms = ms_since(self->last_progress_mono, now);
  if (f->since_progress_ms < 0)
    f->since_progress_ms = 0;
  f->since_stall_ms = ms_since(self->last_stall_mono, now);
  f->since_round_ms = ms_since(self->last_round_end_mono, now);
  f->since_psi_round_ms = ms_since(self->last_psi_round_mono, now);
  f->hint_cmd_id = self->reading.free_page_hint_cmd_id;
  f->hint_round_asked = self->hint_round_asked;
  f->hint_round_cmd_id = self->hint_round_cmd_id;
  f->hint_round_running = self->hint_ticket != NULL;
  /* The estimates only in evaluate_hint(): summing every shrinker on
   * every progress event of the balloon would be wasted. */
}

static void start_episode(AgentBalloon *self, int64_t now, const char *why) {
  self->in_episode = TRUE;
  self->has_episode = TRUE;
  memset(&self->episode, 0, sizeof(self->episode));
  self->episode.started_us = g_get_real_time();
  self->episode.target_bytes = self->reading.target_known ? self->reading.target_bytes : 0;
  self->episode.actual_start_bytes = self->reading.actual_bytes;
  self->episode.first_round_us = -1;
  self->episode.converged_us = -1;
  self->episode_mono = now;
  self->last_round_hard = FALSE;
  self->last_round_claimed = 0;
  self->last_round_target = 0;
  self->last_round_missed = FALSE;
  self->last_progress_mono = now;
  self->last_round_end_mono = 0;
  self->stall_seen = FALSE;
  self->last_stall_mono = 0;
  g_debug("balloon: episode begins: %s", why);
}

static void end_episode(AgentBalloon *self, int64_t now, const char *reason) {
  if (!self->in_episode)
    return;
  self->in_episode = FALSE;
  self->episode.end_reason = reason;
  if (strcmp(reason, "converged") == 0)
    self->episode.converged_us = now - self->episode_mono;
}

static void evaluate(AgentBalloon *self);

/* evaluate() on a reading taken now. The sources' readings are as old as
 * their last look (a poll every 20 ms or more while the balloon moves, and
 * later when the guest's CPU is busy freeing), while MemAvailable is read
 * at once: a stale, smaller actual beside a fresh MemAvailable makes the
 * shortfall look larger than it is (seen: rounds asking the applications
 * for tens of MiB more than the balloon still needed). For decisions not
 * prompted by a reading: a round's end, a timer. The refresh's own events
 * come back through on_event(), whose evaluate() waits for this one. */
static void evaluate_fresh(AgentBalloon *self) {
  self->refreshing = TRUE;
  for (guint i = 0; i < self->sources->len; i++)
    agent_source_refresh(g_ptr_array_index(self->sources, i));
  self->refreshing = FALSE;
  evaluate(self);
}

static gboolean on_timer(gpointer data) {
  AgentBalloon *self = data;

  self->timer_id = 0;
  evaluate_fresh(self);
  return G_SOURCE_REMOVE;
}

static void arm_timer(AgentBalloon *self, uint32_t ms) {
  if (self->timer_id)
    g_source_remove(self->timer_id);
  self->timer_id = ms ? g_timeout_add(ms, on_timer, self) : 0;
}

static void ticket_free(gpointer data) {
  Ticket *t = data;

  if (t->owner && t->owner->ticket == t)
    t->owner->ticket = NULL;
  if (t->owner && t->owner->hint_ticket == t)
    t->owner->hint_ticket = NULL;
  g_free(t);
}

static void on_round_done(const AgentRoundReport *report, gpointer user_data) {
  Ticket *t = user_data;
  AgentBalloon *self = t->owner;
  int64_t now = g_get_monotonic_time();

  if (!self)
    return;
  self->ticket = NULL; /* before evaluate(), which may ask for the next */
  t->owner = NULL;
  if (t->reason == PROTO_REASON_PRESSURE) {
    g_info("pressure: round %" G_GUINT64_FORMAT " claimed %.1f MiB", report->round_id,
           MIB(report->claimed_bytes));
    evaluate(self);
    return;
  }
  self->last_round_end_mono = now;
  if (self->last_progress_mono < now)
    self->last_progress_mono = now;
  self->last_round_hard = report->level == PROTO_LEVEL_HARD;
  self->last_round_claimed = report->verified_bytes;
  self->last_round_target = report->target_bytes;
  self->last_round_missed = FALSE;
  for (guint i = 0; i < report->requests->len; i++)
    if (g_array_index(report->requests, AgentRoundRequest, i).missed)
      self->last_round_missed = TRUE;
  self->episode.claimed_bytes = agent_sat_add(self->episode.claimed_bytes, report->verified_bytes);
  if (report->measured)
    g_info("balloon: round %" G_GUINT64_FORMAT " (%s) claimed %.1f of %.1f MiB, MemAvailable "
           "%+.1f MiB, in %.0f ms",
           report->round_id, proto_level_name(report->level), MIB(report->claimed_bytes),
           MIB(report->target_bytes), (double)report->measured_bytes / (1024.0 * 1024.0),
           report->duration_us / 1000.0);
  else
    g_info("balloon: round %" G_GUINT64_FORMAT " (%s) claimed %.1f of %.1f MiB in %.0f ms",
           report->round_id, proto_level_name(report->level), MIB(report->claimed_bytes),
           MIB(report->target_bytes), report->duration_us / 1000.0);
  evaluate_fresh(self);
}

/* Asks for a round; returns whether it was queued. */
static bool request_round(AgentBalloon *self, const AgentBalloonAction *a, proto_reason reason) {
  g_autoptr(GError) error = NULL;
  AgentRoundParams params = {
      .target_bytes = a->round_bytes,
      .level = a->step == AGENT_BALLOON_HARD ? PROTO_LEVEL_HARD : PROTO_LEVEL_SOFT,
      .deadline_ms = a->deadline_ms,
      .reason = reason,
      /* Every hard round of an episode follows its soft round (rule 10 of
       * agent_balloon_decide()): asking softly again would only cost time. */
      .soft_done = a->step == AGENT_BALLOON_HARD,
  };
  Ticket *t = g_new0(Ticket, 1);

  t->owner = self;
  t->reason = reason;
  self->ticket = t;
  if (!agent_round_request(self->rounds, &params, on_round_done, t, ticket_free, &error)) {
    self->ticket = NULL;
    g_free(t);
    if (!self->warned_busy)
      g_warning("balloon: cannot ask for a round: %s", error->message);
    self->warned_busy = TRUE;
    return FALSE;
  }
  self->warned_busy = FALSE;
  return TRUE;
}

static void log_round(AgentBalloon *self, const AgentBalloonFacts *f, const AgentBalloonAction *a) {
  if (f->target_known)
    g_info("balloon: target %.1f MiB, actual %.1f MiB, missing %.1f MiB; MemAvailable %.1f MiB, "
           "free beyond the reserve %.1f MiB; %s round %u for %.1f MiB (%u ms): %s",
           MIB(f->target_bytes), MIB(f->actual_bytes), MIB(f->target_bytes - f->actual_bytes),
           MIB(f->mem_available_bytes), MIB(a->free_beyond_reserve_bytes),
           agent_balloon_step_name(a->step), f->rounds + 1, MIB(a->round_bytes), a->deadline_ms,
           a->why);
  else
    g_info("balloon: target unknown, actual %.1f MiB; MemAvailable %.1f MiB; %s round %u for "
           "%.1f MiB (%u ms): %s",
           MIB(f->actual_bytes), MIB(f->mem_available_bytes), agent_balloon_step_name(a->step),
           f->rounds + 1, MIB(a->round_bytes), a->deadline_ms, a->why);
}

/* Decides and acts until the answer is to wait. */
static void evaluate(AgentBalloon *self) {
  if (self->refreshing)
    return; /* evaluate_fresh() decides when the refresh is over */
  for (int guard = 0; guard < 8; guard++) {
    int64_t now = g_get_monotonic_time();
    AgentBalloonFacts f;
    AgentBalloonAction a;

    facts_now(self, now, &f);
    agent_balloon_decide(&self->policy, &f, &a);
    self->target_fell = FALSE; /* edges: seen once */
    self->actual_fell = FALSE;
    if (a.step != AGENT_BALLOON_WAIT && a.step != AGENT_BALLOON_IDLE)
      self->last_why = NULL;
    switch (a.step) {
    case AGENT_BALLOON_RELIEF: {
      guint reached = agent_round_send_relief(self->rounds, 0, PROTO_REASON_BALLOON);

      self->reliefs++;
      g_info("balloon: target %.1f MiB, actual %.1f MiB: %s; relief sent to %u clients",
             MIB(f.target_bytes), MIB(f.actual_bytes), a.why, reached);
      continue;
    }
    case AGENT_BALLOON_CONVERGED:
      end_episode(self, now, "converged");
      g_info("balloon: %s (%.1f MiB) %.0f ms after the episode began; %u rounds (%u soft, %u "
             "hard) claimed %.1f MiB",
             a.why, MIB(f.actual_bytes), self->episode.converged_us / 1000.0, self->episode.rounds,
             self->episode.soft_rounds, self->episode.hard_rounds,
             MIB(self->episode.claimed_bytes));
      arm_timer(self, 0);
      return;
    case AGENT_BALLOON_GIVE_UP:
      self->episode.gave_up = TRUE;
      self->episode.end_reason = a.why;
      if (f.target_known)
        g_warning("balloon: giving up on this episode: %s (target %.1f MiB, actual %.1f MiB, %u "
                  "rounds claimed %.1f MiB)",
                  a.why, MIB(f.target_bytes), MIB(f.actual_bytes), self->episode.rounds,
                  MIB(self->episode.claimed_bytes));
      else
        g_warning("balloon: giving up on this episode: %s (target unknown, actual %.1f MiB, %u "
                  "rounds claimed %.1f MiB)",
                  a.why, MIB(f.actual_bytes), self->episode.rounds,
                  MIB(self->episode.claimed_bytes));
      arm_timer(self, 0);
      return;
    case AGENT_BALLOON_SOFT:
    case AGENT_BALLOON_HARD:
      log_round(self, &f, &a);
      if (!request_round(self, &a, PROTO_REASON_BALLOON)) {
        arm_timer(self, self->policy.min_interval_ms);
        return;
      }
      if (self->episode.rounds == 0) {
        self->episode.first_round_us = now - self->episode_mono;
        g_info("balloon: first round of the episode asked for %.1f ms after the change",
               self->episode.first_round_us / 1000.0);
      }
      self->episode.rounds++;
      if (a.step == AGENT_BALLOON_HARD)
        self->episode.hard_rounds++;
      else
        self->episode.soft_rounds++;
      self->stall_seen = FALSE;
      arm_timer(self, 0);
      return;
    case AGENT_BALLOON_WAIT:
    case AGENT_BALLOON_IDLE:
      /* Every progress event comes here while the balloon moves: say
       * only what changed. */
      if (a.why != self->last_why)
        g_debug("balloon: %s: %s", agent_balloon_step_name(a.step), a.why);
      self->last_why = a.why;
      arm_timer(self, a.step == AGENT_BALLOON_WAIT ? a.wait_ms : 0);
      return;
    }
  }
}

/* ---- free page hints: apart from the episode (balloon.h) ---- */

static void evaluate_hint(AgentBalloon *self);

static gboolean on_hint_timer(gpointer data) {
  AgentBalloon *self = data;

  self->hint_timer_id = 0;
  evaluate_hint(self);
  return G_SOURCE_REMOVE;
}

static void on_hint_round_done(const AgentRoundReport *report, gpointer user_data) {
  Ticket *t = user_data;
  AgentBalloon *self = t->owner;

  if (!self)
    return;
  self->hint_ticket = NULL;
  t->owner = NULL;
  self->hint_rounds++;
  self->has_hint_round = TRUE;
  self->last_hint_cmd_id = t->hint_cmd_id;
  self->last_hint_round_id = report->round_id;
  self->last_hint_claimed = report->verified_bytes;
  g_info("hint: round %" G_GUINT64_FORMAT " (command id 0x%x) claimed %.1f of %.1f MiB in %.0f ms",
         report->round_id, t->hint_cmd_id, MIB(report->claimed_bytes), MIB(report->target_bytes),
         report->duration_us / 1000.0);
  /* A new command id that came while it ran gets its round now. */
  evaluate_hint(self);
}

/* Decides on the current hint and asks for its round. */
static void evaluate_hint(AgentBalloon *self) {
  g_autoptr(GError) error = NULL;
  AgentBalloonFacts f;
  AgentBalloonAction a;
  AgentRoundParams params = {.level = PROTO_LEVEL_SOFT, .reason = PROTO_REASON_MIGRATION};
  Ticket *t;

  facts_now(self, g_get_monotonic_time(), &f);
  f.estimates_known = agent_balloon_sum_estimates(self->registry, &f.estimate_sum_bytes);
  agent_balloon_decide_hint(&self->policy, &f, &a);
  if (a.step != AGENT_BALLOON_SOFT) {
    g_debug("hint: no round: %s", a.why);
    return;
  }
  g_info("hint: command id 0x%x: soft round (reason migration) for %.1f MiB (%u ms): %s",
         f.hint_cmd_id, MIB(a.round_bytes), a.deadline_ms, a.why);
  params.target_bytes = a.round_bytes;
  params.deadline_ms = a.deadline_ms;
  t = g_new0(Ticket, 1);
  t->owner = self;
  t->reason = PROTO_REASON_MIGRATION;
  t->hint_cmd_id = f.hint_cmd_id;
  self->hint_ticket = t;
  if (!agent_round_request(self->rounds, &params, on_hint_round_done, t, ticket_free, &error)) {
    self->hint_ticket = NULL;
    g_free(t);
    if (!self->hint_warned_busy)
      g_warning("hint: cannot ask for a round: %s; trying again", error->message);
    self->hint_warned_busy = TRUE;
    /* Not lost: tried again while the hint lasts. */
    if (!self->hint_timer_id)
      self->hint_timer_id = g_timeout_add(self->policy.min_interval_ms, on_hint_timer, self);
    return;
  }
  self->hint_warned_busy = FALSE;
  self->hint_round_asked = TRUE;
  self->hint_round_cmd_id = f.hint_cmd_id;
}

static void on_hint_start(AgentBalloon *self, const AgentSourceEvent *ev) {
  uint32_t id = ev->balloon.free_page_hint_cmd_id;

  if (self->hint_seen_any && self->hint_seen_id == id)
    return;
  self->hint_seen_any = TRUE;
  self->hint_seen_id = id;
  self->hints_seen++;
}

static void on_pressure(AgentBalloon *self, const AgentSourceEvent *ev) {
  int64_t now = g_get_monotonic_time();
  AgentBalloonFacts f;
  AgentBalloonAction a;

  facts_now(self, now, &f);
  agent_balloon_decide_pressure(&self->policy, &f, &a);
  if (a.step != AGENT_BALLOON_SOFT) {
    g_debug("pressure: PSI fired (%s); no round: %s", ev->text ? ev->text : "", a.why);
    return;
  }
  g_info("pressure: PSI fired (%s); MemAvailable %.1f MiB; soft round for %.1f MiB (%u ms)",
         ev->text ? ev->text : "", MIB(f.mem_available_bytes), MIB(a.round_bytes), a.deadline_ms);
  if (request_round(self, &a, PROTO_REASON_PRESSURE))
    self->last_psi_round_mono = now;
}

static void on_target(AgentBalloon *self, const AgentSourceEvent *ev) {
  const AgentBalloonReading *r = &ev->balloon;

  if (!r->target_known)
    return;
  if (ev->initial) {
    g_info("balloon: target %.1f MiB, actual %.1f MiB at start%s", MIB(r->target_bytes),
           MIB(r->actual_bytes), r->hint_in_progress ? "; free page hinting in progress" : "");
    if (r->target_bytes > r->actual_bytes)
      start_episode(self, ev->mono_us, "the balloon is short of its target at start");
    return;
  }
  g_info("balloon: target %.1f MiB (%+.1f), actual %.1f MiB (changed %.1f ms ago)",
         MIB(r->target_bytes), MIB(r->target_bytes) - MIB(ev->prev_bytes), MIB(r->actual_bytes),
         (g_get_monotonic_time() - ev->mono_us) / 1000.0);
  if (r->target_bytes > ev->prev_bytes) {
    /* The host takes memory: a new episode (counters afresh). */
    if (r->target_bytes > r->actual_bytes)
      start_episode(self, ev->mono_us, "the target rose");
  } else {
    self->target_fell = TRUE;
    if (r->target_bytes <= r->actual_bytes)
      end_episode(self, ev->mono_us, "target lowered");
    else if (self->in_episode)
      self->last_progress_mono = ev->mono_us;
  }
}

/* Without a target, the balloon's size is all there is: growing starts
 * an episode, shrinking ends it (and relieves, once per shrinking). */
static void on_blind_progress(AgentBalloon *self, const AgentSourceEvent *ev) {
  bool grew = ev->balloon.actual_bytes > ev->prev_bytes;

  if (grew) {
    self->blind_shrinking = FALSE;
    if (!self->in_episode) {
      g_info("balloon: growing (%.1f MiB, target unknown)", MIB(ev->balloon.actual_bytes));
      start_episode(self, ev->mono_us, "the balloon grows (target unknown)");
    }
  } else if (!self->blind_shrinking) {
    self->blind_shrinking = TRUE;
    self->actual_fell = TRUE;
    g_info("balloon: shrinking (%.1f MiB, target unknown)", MIB(ev->balloon.actual_bytes));
    end_episode(self, ev->mono_us, "the balloon shrank");
  }
}

static void on_event(AgentSource *source, const AgentSourceEvent *ev, gpointer user_data) {
  AgentBalloon *self = user_data;

  switch (ev->kind) {
  case AGENT_SOURCE_EVENT_TARGET:
    self->have_reading = TRUE;
    self->reading = ev->balloon;
    on_target(self, ev);
    break;
  case AGENT_SOURCE_EVENT_PROGRESS:
    self->have_reading = TRUE;
    self->reading = ev->balloon;
    self->last_progress_mono = ev->mono_us;
    self->stall_seen = FALSE;
    if (!ev->balloon.target_known)
      on_blind_progress(self, ev);
    break;
  case AGENT_SOURCE_EVENT_HINT_START:
  case AGENT_SOURCE_EVENT_HINT_END:
    self->have_reading = TRUE;
    self->reading = ev->balloon;
    g_info("balloon: free page hinting %s (command id 0x%x)",
           ev->kind == AGENT_SOURCE_EVENT_HINT_START ? "began: MemFree may collapse, that is no "
                                                       "pressure"
                                                     : "ended",
           ev->balloon.free_page_hint_cmd_id);
    if (ev->kind == AGENT_SOURCE_EVENT_HINT_START) {
      on_hint_start(self, ev);
      /* The balloon first: if this reading calls for a round of the
       * episode as well, it goes to the queue before the hint's. */
      evaluate(self);
      evaluate_hint(self);
      return;
    }
    break;
  case AGENT_SOURCE_EVENT_STALL:
    self->stalls_seen++;
    if (self->in_episode)
      self->episode.stalls++;
    g_debug("balloon: stall line: %s", ev->text ? ev->text : "");
    /* During our round the driver is expected to be short; after it, a
     * stall line means it could not use what the round freed. */
    if (self->ticket && self->ticket->reason == PROTO_REASON_BALLOON)
      return;
    self->stall_seen = TRUE;
    self->last_stall_mono = ev->mono_us;
    if (!self->in_episode && !(self->have_reading && self->reading.target_known)) {
      g_info("balloon: the driver is out of puff (target unknown)");
      start_episode(self, ev->mono_us, "out of puff with the target unknown");
      self->stall_seen = TRUE;
      self->last_stall_mono = ev->mono_us;
      self->episode.stalls = 1;
    }
    break;
  case AGENT_SOURCE_EVENT_OOM_KILL:
    self->oom_kills++;
    if (self->in_episode)
      self->episode.oom_kills++;
    g_warning("balloon: the kernel killed a process for memory: %s", ev->text ? ev->text : "");
    return;
  case AGENT_SOURCE_EVENT_PRESSURE: on_pressure(self, ev); return;
  }
  evaluate(self);
}

void agent_balloon_get_status(const AgentBalloon *self, AgentBalloonStatus *out) {
  memset(out, 0, sizeof(*out));
  if (self->virtio) {
    agent_source_virtio_info(self->virtio, &out->virtio);
    out->present = out->virtio.device != NULL;
  }
  out->stalls_seen = self->stalls_seen;
  out->oom_kills = self->oom_kills;
  out->reliefs = self->reliefs;
  out->has_episode = self->has_episode;
  out->episode = self->episode;
  out->hint_rounds_on = !self->policy.hint_off;
  out->hint_pct = self->policy.hint_off ? 0 : self->policy.hint_pct;
  out->hint_deadline_ms = self->policy.hint_deadline_ms;
  out->hints_seen = self->hints_seen;
  out->hint_rounds = self->hint_rounds;
  out->hint_round_running = self->hint_ticket != NULL;
  out->has_hint_round = self->has_hint_round;
  out->last_hint_cmd_id = self->last_hint_cmd_id;
  out->last_hint_round_id = self->last_hint_round_id;
  out->last_hint_claimed_bytes = self->last_hint_claimed;
  out->state = "idle";
  if (self->have_reading && self->reading.target_known) {
    const AgentBalloonReading *r = &self->reading;

    if (r->target_bytes < r->actual_bytes) {
      out->state = "deflating";
    } else if (r->target_bytes > r->actual_bytes) {
      int64_t since = ms_since(self->last_progress_mono, g_get_monotonic_time());

      out->state = self->episode.gave_up || self->stall_seen ||
                           (!self->ticket && since >= (int64_t)self->policy.stall_ms)
                       ? "stalled"
                       : "inflating";
    }
  } else if (self->in_episode) {
    /* Target unknown: an episode is a growing balloon, or a stuck one. */
    int64_t since = ms_since(self->last_progress_mono, g_get_monotonic_time());

    out->state = self->episode.gave_up || self->stall_seen ||
                         (!self->ticket && since >= (int64_t)self->policy.stall_ms)
                     ? "stalled"
                     : "inflating";
  }
}
