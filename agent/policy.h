/* SPDX-License-Identifier: MIT */
/*
 * The shrink policy: who is asked for how much, at which level. Pure code:
 * no I/O, no clock, no GLib, no allocation. round.c feeds it plain structs
 * and sends what it returns; the unit tests feed it tables.
 *
 * A round has a target (bytes), a level and a deadline.
 *
 * Phases (agent_policy_plan_phases). A soft round is one soft phase with
 * the whole deadline. A hard round is a soft phase followed by a hard phase
 * for what the soft phase did not free ("soft before hard"); the soft phase
 * gets soft_share_pct percent of the deadline (at least 1 ms), the hard
 * phase the rest. A hard round whose deadline is too short to split (< 2 ms)
 * is a single hard phase, and so is one whose soft phase already ran as
 * a round of its own (an escalation: the balloon controller's hard round
 * after its soft round), since asking softly again only costs time.
 *
 * Passes (agent_policy_split). Each phase has at most two passes. Pass 1
 * covers the phase's target; pass 2, sent only if every pass-1 request was
 * answered before the phase's deadline and the claimed total still falls
 * short, covers the shortfall with the phase's remaining time.
 *
 * Who takes part in a pass:
 *  - a shrinker that has gone away (gone) never;
 *  - in a soft phase, a shrinker with consecutive_misses >= miss_limit is
 *    skipped (miss_limit 0 disables this); a hard phase asks it anyway;
 *  - a shrinker with an estimate whose remaining estimate is 0 is skipped:
 *    remaining = estimate_bytes (taken at the round's start) minus what it
 *    freed in time earlier in this round, never below 0;
 *  - in pass 2, additionally: a shrinker asked in pass 1 of this phase takes
 *    part only if it answered in time and freed at least what it was asked
 *    (it still has something); a shrinker not asked in pass 1 (because the
 *    estimates of others covered the target) takes part.
 *
 * The split rule, for the pass's target T:
 *  - Weight w = priority + 1 (priority 0..100, so 1..101).
 *  - Shrinkers with an estimate: let E = sum of their remaining estimates.
 *    If E >= T, T is split in proportion to remaining estimate x w, and no
 *    one is asked for more than its remaining estimate: a share that would
 *    exceed it is capped there and the excess is split again among the
 *    others by the same rule (water-filling). Rounding remainders (a few
 *    bytes) go to the earliest candidates that still have room. The asks
 *    then sum to exactly T and shrinkers without an estimate are not asked.
 *  - If E < T, each shrinker with an estimate is asked its whole remaining
 *    estimate, and the uncovered part U = T - E is split in equal shares
 *    among the shrinkers without an estimate (priority does not matter
 *    there: without an estimate there is nothing to weigh); remainders go to
 *    the earliest. With none of those, U stays unasked.
 *  - Estimates are clamped to AGENT_POLICY_BYTES_MAX before any arithmetic,
 *    and products are taken in 128 bits, so no value of estimate, target or
 *    priority can overflow.
 *  - A candidate whose share is 0 bytes is not asked.
 *
 * Candidates are given in the order in which they will be asked (round.c
 * sorts by priority, highest first, then by registration).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "local-proto.h"

/* 64 PiB: larger estimates are treated as this much (overflow safety). */
#define AGENT_POLICY_BYTES_MAX  (UINT64_C(1) << 56)
#define AGENT_POLICY_PHASES_MAX 2
#define AGENT_POLICY_PASSES_MAX 2

typedef struct {
  proto_level level;
  uint32_t deadline_ms; /* the phase's share of the round's deadline */
} agent_policy_phase;

/* One shrinker as the policy sees it. */
typedef struct {
  bool gone; /* its client left or unregistered it */
  bool has_estimate;
  uint64_t estimate_bytes;     /* reclaimable, as of the round's start */
  uint16_t priority;           /* PROTO_PRIORITY_MIN..MAX; larger values clamp */
  uint32_t consecutive_misses; /* deadline misses in a row before this round */
  uint64_t round_freed_bytes;  /* freed in time so far in this round, all phases and
                                  passes (for pass 2: pass 1's included) */
  /* pass 1 of the current phase (only read for pass 2): */
  uint64_t pass1_asked_bytes; /* 0: not asked in pass 1 */
  uint64_t pass1_freed_bytes;
  bool pass1_answered; /* replied before the phase's deadline */
} agent_policy_candidate;

typedef struct {
  uint64_t target_bytes; /* pass 1: the phase's target; pass 2: the shortfall */
  proto_level level;     /* the phase's level */
  unsigned pass;         /* 1 or 2 */
  uint32_t miss_limit;   /* skip in soft phases at this many consecutive misses; 0: never */
} agent_policy_pass;

/* Why a candidate got what it got. */
typedef enum {
  AGENT_POLICY_ASKED = 0,      /* asked for ask_bytes > 0 */
  AGENT_POLICY_SKIP_GONE,      /* gone */
  AGENT_POLICY_SKIP_MISSES,    /* too many deadline misses, soft phase */
  AGENT_POLICY_SKIP_EXHAUSTED, /* remaining estimate is 0 */
  AGENT_POLICY_SKIP_PASS1,     /* pass 2: missed or fell short in pass 1 */
  AGENT_POLICY_SKIP_NO_SHARE,  /* eligible, but its share is 0 bytes */
} agent_policy_decision;

/*
 * Plans the phases of a round of @level with @deadline_ms (>= 1) into @out
 * (AGENT_POLICY_PHASES_MAX entries). @soft_share_pct (1..99; other values
 * are clamped) is the soft phase's share of a hard round's deadline.
 * @soft_done: a soft round for the same need already ran, so a hard round
 * is one hard phase. Returns the number of phases (1 or 2). The phases'
 * deadlines sum to @deadline_ms.
 */
unsigned agent_policy_plan_phases(proto_level level, uint32_t deadline_ms, unsigned soft_share_pct,
                                  bool soft_done, agent_policy_phase out[AGENT_POLICY_PHASES_MAX]);

/*
 * Splits @pass's target among the @n candidates @c by the rule above.
 * Writes each candidate's ask to @ask_bytes[i] (0: not asked) and, if
 * @why is not NULL, the reason to @why[i]. Returns the sum of the asks,
 * which is <= the target (== when enough is estimated or there are
 * shrinkers without an estimate to take the rest).
 */
uint64_t agent_policy_split(const agent_policy_pass *pass, const agent_policy_candidate *c,
                            size_t n, uint64_t *ask_bytes, agent_policy_decision *why);

/*
 * The remaining estimate of @c (estimate minus what it freed earlier in
 * the round, clamped to [0, AGENT_POLICY_BYTES_MAX]); meaningless when
 * !@c->has_estimate.
 */
uint64_t agent_policy_remaining_estimate(const agent_policy_candidate *c);

/* Static name of a decision ("asked", "skip-misses", ...), never NULL. */
const char *agent_policy_decision_name(agent_policy_decision why);
