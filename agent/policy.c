/* SPDX-License-Identifier: MIT */
/*
 * The shrink policy (see policy.h for the rule). Pure: no I/O, no GLib.
 */
#include "policy.h"

#include "saturate.h"

#if defined(__SIZEOF_INT128__)
typedef unsigned __int128 wide_t;
#else
/* No 128-bit integers: long double keeps at least 64 bits of mantissa on
 * the platforms we build for; shares may then be off by a few bytes, which
 * the remainder pass corrects. */
typedef long double wide_t;
#endif

static uint64_t clamp_bytes(uint64_t v) {
  return v > AGENT_POLICY_BYTES_MAX ? AGENT_POLICY_BYTES_MAX : v;
}

static uint64_t weight_of(uint16_t priority) {
  if (priority > PROTO_PRIORITY_MAX)
    priority = PROTO_PRIORITY_MAX;
  return (uint64_t)priority + 1;
}

uint64_t agent_policy_remaining_estimate(const agent_policy_candidate *c) {
  uint64_t est = clamp_bytes(c->estimate_bytes);

  return c->round_freed_bytes >= est ? 0 : est - c->round_freed_bytes;
}

const char *agent_policy_decision_name(agent_policy_decision why) {
  switch (why) {
  case AGENT_POLICY_ASKED: return "asked";
  case AGENT_POLICY_SKIP_GONE: return "skip-gone";
  case AGENT_POLICY_SKIP_MISSES: return "skip-misses";
  case AGENT_POLICY_SKIP_EXHAUSTED: return "skip-exhausted";
  case AGENT_POLICY_SKIP_PASS1: return "skip-pass1";
  case AGENT_POLICY_SKIP_NO_SHARE: return "skip-no-share";
  }
  return "unknown";
}

unsigned agent_policy_plan_phases(proto_level level, uint32_t deadline_ms, unsigned soft_share_pct,
                                  bool soft_done, agent_policy_phase out[AGENT_POLICY_PHASES_MAX]) {
  uint32_t soft_ms;

  if (deadline_ms == 0)
    deadline_ms = 1;
  if (level != PROTO_LEVEL_HARD) {
    out[0] = (agent_policy_phase){PROTO_LEVEL_SOFT, deadline_ms};
    return 1;
  }
  if (deadline_ms < 2 || soft_done) {
    out[0] = (agent_policy_phase){PROTO_LEVEL_HARD, deadline_ms};
    return 1;
  }
  if (soft_share_pct < 1)
    soft_share_pct = 1;
  if (soft_share_pct > 99)
    soft_share_pct = 99;
  soft_ms = (uint32_t)((uint64_t)deadline_ms * soft_share_pct / 100);
  if (soft_ms < 1)
    soft_ms = 1;
  if (soft_ms > deadline_ms - 1)
    soft_ms = deadline_ms - 1;
  out[0] = (agent_policy_phase){PROTO_LEVEL_SOFT, soft_ms};
  out[1] = (agent_policy_phase){PROTO_LEVEL_HARD, deadline_ms - soft_ms};
  return 2;
}

/* Decides whether @c takes part in @pass; sets *why when it does not. */
static bool eligible(const agent_policy_pass *pass, const agent_policy_candidate *c,
                     agent_policy_decision *why) {
  if (c->gone) {
    *why = AGENT_POLICY_SKIP_GONE;
    return false;
  }
  if (pass->level == PROTO_LEVEL_SOFT && pass->miss_limit > 0 &&
      c->consecutive_misses >= pass->miss_limit) {
    *why = AGENT_POLICY_SKIP_MISSES;
    return false;
  }
  if (c->has_estimate && agent_policy_remaining_estimate(c) == 0) {
    *why = AGENT_POLICY_SKIP_EXHAUSTED;
    return false;
  }
  if (pass->pass >= 2 && c->pass1_asked_bytes > 0 &&
      (!c->pass1_answered || c->pass1_freed_bytes < c->pass1_asked_bytes)) {
    *why = AGENT_POLICY_SKIP_PASS1;
    return false;
  }
  return true;
}

/* Takes part in the proportional split: eligible, with an estimate. */
static bool estimated(const agent_policy_pass *pass, const agent_policy_candidate *c) {
  agent_policy_decision d;

  return c->has_estimate && eligible(pass, c, &d);
}

static bool unestimated(const agent_policy_pass *pass, const agent_policy_candidate *c) {
  agent_policy_decision d;

  return !c->has_estimate && eligible(pass, c, &d);
}

/*
 * Water-filling split of @target among the estimated candidates,
 * proportional to remaining estimate x weight, never above the remaining
 * estimate (the cap). The caller guarantees that the caps sum to >= @target
 * and that ask[] is all 0. A candidate is still "open" while its ask is 0:
 * a capped one holds its cap, which is > 0 since exhausted ones are not
 * eligible.
 */
static void split_proportional(const agent_policy_pass *pass, const agent_policy_candidate *c,
                               size_t n, uint64_t target, uint64_t *ask) {
  for (;;) {
    wide_t sum = 0;
    bool capped = false;

    for (size_t i = 0; i < n; i++)
      if (ask[i] == 0 && estimated(pass, &c[i]))
        sum += (wide_t)agent_policy_remaining_estimate(&c[i]) * weight_of(c[i].priority);
    if (sum == 0 || target == 0)
      return;
    /* share_i >= cap_i  <=>  target * w_i >= sum: it depends on the weight
     * only, so each sweep caps a whole weight class and there are at most
     * 101 sweeps. */
    for (size_t i = 0; i < n; i++) {
      if (ask[i] != 0 || !estimated(pass, &c[i]))
        continue;
      if ((wide_t)target * weight_of(c[i].priority) >= sum) {
        ask[i] = agent_policy_remaining_estimate(&c[i]);
        target -= ask[i];
        capped = true;
      }
    }
    if (capped)
      continue;

    uint64_t given = 0;
    for (size_t i = 0; i < n; i++) {
      if (ask[i] != 0 || !estimated(pass, &c[i]))
        continue;
      uint64_t cap = agent_policy_remaining_estimate(&c[i]);
      wide_t share = (wide_t)target * cap * weight_of(c[i].priority) / sum;
      ask[i] = (uint64_t)share;
      if (ask[i] > cap) /* only possible with the long double fallback */
        ask[i] = cap;
      given += ask[i];
    }
    /* Rounding left fewer bytes than there are open candidates: one byte
     * each to the earliest with room. */
    uint64_t rest = target - given;
    for (size_t i = 0; i < n && rest > 0; i++) {
      if (estimated(pass, &c[i]) && ask[i] < agent_policy_remaining_estimate(&c[i])) {
        ask[i]++;
        rest--;
      }
    }
    return;
  }
}

uint64_t agent_policy_split(const agent_policy_pass *pass, const agent_policy_candidate *c,
                            size_t n, uint64_t *ask_bytes, agent_policy_decision *why) {
  uint64_t estimated_sum = 0;
  uint64_t n_unestimated = 0;
  uint64_t total = 0;

  for (size_t i = 0; i < n; i++) {
    agent_policy_decision d = AGENT_POLICY_ASKED;

    ask_bytes[i] = 0;
    if (eligible(pass, &c[i], &d)) {
      if (c[i].has_estimate)
        estimated_sum = agent_sat_add(estimated_sum, agent_policy_remaining_estimate(&c[i]));
      else
        n_unestimated++;
    }
    if (why)
      why[i] = d;
  }

  if (pass->target_bytes == 0)
    goto out;

  if (estimated_sum >= pass->target_bytes) {
    split_proportional(pass, c, n, pass->target_bytes, ask_bytes);
  } else {
    for (size_t i = 0; i < n; i++)
      if (estimated(pass, &c[i]))
        ask_bytes[i] = agent_policy_remaining_estimate(&c[i]);
    if (n_unestimated > 0) {
      uint64_t uncovered = pass->target_bytes - estimated_sum;
      uint64_t share = uncovered / n_unestimated;
      uint64_t rest = uncovered - share * n_unestimated;

      for (size_t i = 0; i < n; i++) {
        if (!unestimated(pass, &c[i]))
          continue;
        ask_bytes[i] = share;
        if (rest > 0) {
          ask_bytes[i]++;
          rest--;
        }
      }
    }
  }

out:
  for (size_t i = 0; i < n; i++) {
    if (why && why[i] == AGENT_POLICY_ASKED && ask_bytes[i] == 0)
      why[i] = AGENT_POLICY_SKIP_NO_SHARE;
    total += ask_bytes[i];
  }
  return total;
}
