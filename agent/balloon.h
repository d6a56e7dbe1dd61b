/* SPDX-License-Identifier: MIT */
/*
 * The balloon controller: where an event of a pressure source becomes a
 * decision (a soft or hard round, relief, or waiting), tied to the
 * balloon's progress.
 *
 * Two parts. agent_balloon_decide() and agent_balloon_decide_pressure()
 * are pure: plain facts in, one action out, no clock, no I/O (the unit
 * tests feed them tables). AgentBalloon is the GLib glue: it owns the
 * sources, turns their events into facts, asks round.c for rounds and
 * keeps the figures of the current episode for status.
 *
 * Terms. Sizes are in bytes of the balloon: target = what the host wants
 * it to hold (num_pages x 4 KiB), actual = what it holds; the guest has
 * (its memory - actual). missing = target - actual (0 when the balloon
 * holds enough). An episode starts when the target rises above actual
 * (the host takes memory), or at start-up when the balloon is already
 * short, and ends when the balloon holds its target ("converged"), the
 * target falls back to what it holds, or the controller gives up.
 *
 * The rules (agent_balloon_decide), first match wins:
 *  1. The target fell to or below actual (the host gives memory back), or,
 *     the target unknown, the balloon began to shrink: RELIEF (reason
 *     balloon) to every client.
 *  2. No episode: IDLE.
 *  3. A round of ours is queued or running: IDLE (its end brings us back).
 *  4. missing == 0: CONVERGED.
 *  5. Given up in this episode: IDLE (until the target changes).
 *  6. The last round was hard and claimed nothing although every
 *     request was answered in time (nothing more can be freed), or
 *     max_rounds rounds ran: GIVE_UP. (A late reply may still free memory:
 *     then the next stall decides.)
 *  7. First step of an episode with a known target: the shortfall is
 *     missing - (MemAvailable - reserve), i.e. what free memory beyond
 *     the reserve cannot cover. If positive: SOFT round for the
 *     shortfall. If not, the balloon can take free memory: go on.
 *  8. The last round of the episode was soft and the shortfall (as in 7)
 *     is still positive: the balloon is bound to stall once it has taken
 *     what is free, and in a guest that short any allocation may call the
 *     OOM killer, so do not wait for the stall: unless hinting is in
 *     progress (IDLE), HARD round once escalate_delay_ms have passed since
 *     the soft round ended (default 0: at once), for the smaller of that
 *     shortfall and what the soft round asked for but was not claimed.
 *     MemAvailable lags behind what applications free: a transparent huge
 *     page partly given back stays whole until the kernel splits it under
 *     pressure (seen: 50 MiB freed but not yet counted, and a hard round
 *     that much too large). If the claims said more than came back, the
 *     balloon stalls and rule 9 asks for the rest. A soft round whose
 *     claims covered what it asked for: no hard round here (rule 9).
 *  9. Not stalled: WAIT until stall_ms after the last progress. Stalled
 *     means an "Out of puff" line since our last round ended with no
 *     progress after it, or no change of actual for stall_ms (counted
 *     from the last progress, target change or end of our last round,
 *     whichever is latest: after a round the driver gets stall_ms to use
 *     what was freed; it retries every 200 ms). Without a known target
 *     (config space unreadable; the episode began when the balloon grew
 *     or the driver ran out of puff), stopping may just mean done: stalled
 *     is an "Out of puff" line, or no progress for stall_ms while
 *     MemAvailable is below a quarter of the reserve; an episode with
 *     neither progress nor stall for blind_quiet_ms is over.
 * 10. Less than min_interval_ms since our last round ended: WAIT.
 * 11. No round yet in this episode, target known: SOFT round for
 *     missing, so soft comes first. Without a target, no: a stall is the
 *     first sign of the episode and free memory is gone by then (an
 *     "Out of puff" line, or MemAvailable near 0), so a soft round would
 *     come too late; the episode starts hard (13).
 * 12. Free page hinting in progress: IDLE (its MemFree collapse is not
 *     pressure; no hard round while it lasts; its end brings us back).
 * 13. HARD round for missing: the balloon cannot take the free memory we
 *     see, so all of what is missing must come from applications.
 *     Without a target: blind_step_bytes x 2^(rounds so far), at most 16
 *     steps, as the need is unknown and the rounds are few.
 *
 * PSI (agent_balloon_decide_pressure): a SOFT round (reason pressure) of
 * psi_round_bytes, unless an episode is on, hinting is in progress, a
 * round of ours is running, or the last PSI round was less than
 * psi_interval_ms ago. Never hard.
 *
 * Free page hints (agent_balloon_decide_hint). During a live migration
 * the host asks the guest for hints of free pages with a new command id
 * (QEMU: at every bitmap sync of precopy, STOP between them, DONE at the
 * end); free pages are not copied. Memory the applications give back
 * just before is not copied either, so each new id is worth one soft
 * round, reason migration. First match wins:
 *  H1. hint rounds off (hint_off): IDLE.
 *  H2. no hinting in progress: IDLE.
 *  H3. this command id already had its round (at most one per id): IDLE.
 *  H4. a hint round of ours is queued or running: IDLE (its end brings
 *      us back; an id that came meanwhile then gets its round, if hinting
 *      still goes on). So there is never more than one in the queue.
 *  H5. SOFT round of hint_pct percent (rounded up) of the sum of the
 *      registered shrinkers' estimates, or of hint_fallback_bytes (the
 *      reserve) when no shrinker has an estimate; hint_deadline_ms. If
 *      that is 0 bytes (every estimate is 0): IDLE.
 * Never hard: hinting is no pressure. The balloon's episode is not
 * consulted: both go to the round runner's FIFO queue in the order
 * decided, so a hint during a balloon round gets its round after it, and
 * a balloon round decided during a hint round waits for that one. The
 * hint round is tracked apart from the episode: it is not "a round of
 * ours" for rule 3, and does not count in the episode's rounds, its
 * claimed bytes, last_round_hard / _claimed / _missed (rule 6) or the
 * time since our last round (rules 8-10).
 *
 * Main loop thread only.
 */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

#include "local-proto.h"
#include "procfs.h"
#include "round.h"
#include "source.h"

/* ---- the pure part ---- */

typedef struct {
  uint64_t reserve_bytes;       /* free memory the guest keeps for itself */
  uint32_t stall_ms;            /* no progress this long: stalled */
  uint32_t min_interval_ms;     /* between the end of one round and the next */
  uint32_t escalate_delay_ms;   /* the soft round's end to the hard round its shortfall calls for */
  uint32_t max_rounds;          /* per episode */
  uint32_t soft_deadline_ms;    /* of a soft round */
  uint32_t hard_deadline_ms;    /* of a hard round (its soft phase included) */
  uint64_t blind_step_bytes;    /* a round's size when the target is unknown */
  uint32_t blind_quiet_ms;      /* target unknown: no stall this long ends an episode */
  uint64_t psi_round_bytes;     /* a PSI round's size */
  uint32_t psi_interval_ms;     /* PSI rounds at most this often */
  bool hint_off;                /* no rounds for free page hints */
  uint32_t hint_pct;            /* a hint round asks this share of the estimates, 1..100 */
  uint64_t hint_fallback_bytes; /* ...or of this when no shrinker has an estimate */
  uint32_t hint_deadline_ms;    /* of a hint round */
} AgentBalloonPolicy;

#define AGENT_BALLOON_RESERVE_DEFAULT        (UINT64_C(64) << 20)
#define AGENT_BALLOON_STALL_MS_DEFAULT       300
#define AGENT_BALLOON_MIN_INTERVAL_DEFAULT   100
/* At once: it follows one soft round and cannot repeat, and meanwhile the
 * balloon eats the last free memory (convergence in a TCG guest: 1.54x a
 * free-memory inflate with 100 ms here). */
#define AGENT_BALLOON_ESCALATE_DELAY_DEFAULT 0
#define AGENT_BALLOON_MAX_ROUNDS_DEFAULT     6
#define AGENT_BALLOON_SOFT_DEADLINE_DEFAULT  1000
#define AGENT_BALLOON_HARD_DEADLINE_DEFAULT  3000
#define AGENT_BALLOON_BLIND_QUIET_DEFAULT    5000
#define AGENT_BALLOON_PSI_INTERVAL_DEFAULT   10000
#define AGENT_BALLOON_HINT_PCT_DEFAULT       100
/* Short: while the host copies memory the guest's userspace may get
 * little CPU, and a slow application must not hold up the balloon round
 * queued behind this one for long. */
#define AGENT_BALLOON_HINT_DEADLINE_DEFAULT  1000

/* Fills @policy with the defaults (blind step, PSI round and the hint
 * round's fallback: the reserve; hint rounds on, 100%). */
void agent_balloon_policy_init(AgentBalloonPolicy *policy);

typedef struct {
  bool target_known; /* config space is readable */
  uint64_t target_bytes;
  uint64_t actual_bytes;
  bool target_fell; /* the target fell since the last decision */
  bool actual_fell; /* target unknown: the balloon began to shrink since then */
  bool in_episode;
  bool gave_up;         /* in this episode */
  bool round_running;   /* a round of ours is queued or running */
  uint32_t rounds;      /* ours in this episode, the running one included */
  bool last_round_hard; /* the last one that ended in this episode */
  uint64_t last_round_claimed_bytes;
  uint64_t last_round_target_bytes; /* what it asked for; 0: unknown */
  bool last_round_missed; /* a request of it got no reply in time */
  bool mem_known;         /* MemAvailable could be read */
  uint64_t mem_available_bytes;
  bool hint_in_progress;
  bool stall_seen;             /* "Out of puff" since our last round ended, no progress since */
  int64_t since_progress_ms;   /* see rule 9 */
  int64_t since_stall_ms;      /* since the last "Out of puff"; -1: none in this episode */
  int64_t since_round_ms;      /* since our last round ended; -1: none in this episode */
  int64_t since_psi_round_ms;  /* since our last PSI round started; -1: none */
  uint32_t hint_cmd_id;        /* the current free page hint command id */
  bool hint_round_asked;       /* a hint round was asked for since start... */
  uint32_t hint_round_cmd_id;  /* ...the last one for this command id */
  bool hint_round_running;     /* a hint round of ours is queued or running */
  bool estimates_known;        /* a registered shrinker has an estimate */
  uint64_t estimate_sum_bytes; /* the sum of the estimates */
} AgentBalloonFacts;

typedef enum {
  AGENT_BALLOON_IDLE,      /* nothing to do until the next event */
  AGENT_BALLOON_WAIT,      /* look again after wait_ms (or at the next event) */
  AGENT_BALLOON_SOFT,      /* a soft round of round_bytes */
  AGENT_BALLOON_HARD,      /* a hard round of round_bytes */
  AGENT_BALLOON_RELIEF,    /* tell the clients they may grow again */
  AGENT_BALLOON_CONVERGED, /* the episode is over: the balloon holds its target */
  AGENT_BALLOON_GIVE_UP,   /* stop trying in this episode */
} AgentBalloonStep;

typedef struct {
  AgentBalloonStep step;
  uint64_t round_bytes;               /* SOFT, HARD */
  uint32_t deadline_ms;               /* SOFT, HARD */
  uint32_t wait_ms;                   /* WAIT, >= 1 */
  uint64_t free_beyond_reserve_bytes; /* what rule 7 counted (for the log) */
  const char *why;                    /* static text, for the log */
} AgentBalloonAction;

/* The rules above. Pure. */
void agent_balloon_decide(const AgentBalloonPolicy *policy, const AgentBalloonFacts *facts,
                          AgentBalloonAction *out);

/* The PSI rule above (SOFT or IDLE). Pure. */
void agent_balloon_decide_pressure(const AgentBalloonPolicy *policy, const AgentBalloonFacts *facts,
                                   AgentBalloonAction *out);

/* The hint rules above (SOFT or IDLE). Pure. */
void agent_balloon_decide_hint(const AgentBalloonPolicy *policy, const AgentBalloonFacts *facts,
                               AgentBalloonAction *out);

/*
 * The size of a migration round (a hint round, shrinkd-prepare-migration):
 * @pct percent (clamped to 1..100) of @estimate_sum_bytes if
 * @estimates_known, else of @fallback_bytes, rounded up to a byte; the
 * base is clamped to AGENT_POLICY_BYTES_MAX first. Pure.
 */
uint64_t agent_balloon_migration_bytes(bool estimates_known, uint64_t estimate_sum_bytes,
                                       uint64_t fallback_bytes, uint32_t pct);

/*
 * Sums the estimates of @registry's shrinkers into *@sum_bytes
 * (saturating at AGENT_POLICY_BYTES_MAX). Returns whether any shrinker has
 * an estimate (FALSE, sum 0, for a NULL or empty registry).
 */
bool agent_balloon_sum_estimates(const AgentRegistry *registry, uint64_t *sum_bytes);

/* "idle", "wait", "soft", "hard", "relief", "converged", "give-up". */
const char *agent_balloon_step_name(AgentBalloonStep step);

/* ---- the controller ---- */

typedef struct AgentBalloon AgentBalloon;

/*
 * Makes the controller over @rounds and @procfs (borrowed; they must
 * outlive it). @policy is copied; zero fields take defaults.
 */
AgentBalloon *agent_balloon_new(AgentRounds *rounds, AgentProcfs *procfs,
                                const AgentBalloonPolicy *policy);

/* Stops and frees the sources, forgets a round in flight (its report is
 * dropped), frees @self. NULL is fine. */
void agent_balloon_free(AgentBalloon *self);

/* Takes @source (transfer full) and becomes its sink. The first source
 * named "virtio-balloon" is the balloon; "kmsg" counts stalls. */
void agent_balloon_add_source(AgentBalloon *self, AgentSource *source);

/* Lets hint rounds be sized by the estimates of @registry's shrinkers
 * (borrowed; it must outlive @self). Without one, they take the
 * fallback size. */
void agent_balloon_set_registry(AgentBalloon *self, const AgentRegistry *registry);

/* Starts every source (each says in its status what works). */
void agent_balloon_start(AgentBalloon *self);

/* The sources, in the order added (AgentSource*, owned by @self). */
const GPtrArray *agent_balloon_sources(const AgentBalloon *self);

/* The figures of one episode. */
typedef struct {
  int64_t started_us;    /* wall clock (g_get_real_time) */
  uint64_t target_bytes; /* the target that started it (0 when unknown) */
  uint64_t actual_start_bytes;
  uint32_t rounds, soft_rounds, hard_rounds;
  uint64_t claimed_bytes; /* over its rounds */
  uint64_t stalls;        /* "Out of puff" lines during it */
  uint64_t oom_kills;     /* OOM kills during it */
  int64_t first_round_us; /* from its start to its first round's start; -1 if none */
  int64_t converged_us;   /* from its start to convergence; -1 if not (yet) */
  bool gave_up;
  const char *end_reason; /* NULL while on: "converged", "target lowered", a give-up reason */
} AgentBalloonEpisode;

typedef struct {
  bool present;                /* there is a balloon device */
  AgentVirtioInfo virtio;      /* when present */
  const char *state;           /* "idle", "inflating", "stalled", "deflating" */
  uint64_t stalls_seen;        /* "Out of puff" lines since start */
  uint64_t oom_kills;          /* since start */
  uint64_t reliefs;            /* RELIEF sent since start */
  bool has_episode;            /* one ran since start */
  AgentBalloonEpisode episode; /* the current or last one */
  /* Free page hints (also without a device: the policy). */
  bool hint_rounds_on;
  uint32_t hint_pct;
  uint32_t hint_deadline_ms;
  uint64_t hints_seen;       /* new hint command ids since start */
  uint64_t hint_rounds;      /* hint rounds that ended */
  bool hint_round_running;   /* queued or running */
  bool has_hint_round;       /* one ended: the figures below are its */
  uint32_t last_hint_cmd_id; /* the command id it was for */
  uint64_t last_hint_round_id;
  uint64_t last_hint_claimed_bytes;
} AgentBalloonStatus;

/* Fills @out (strings owned by @self, valid until its next event). */
void agent_balloon_get_status(const AgentBalloon *self, AgentBalloonStatus *out);
