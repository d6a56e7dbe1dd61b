/* SPDX-License-Identifier: MIT */
/*
 * The shrink policy, table by table: the split by estimate and priority,
 * shares of those without an estimate, the second pass, skipping after
 * deadline misses (soft only), the soft-before-hard phase plan, edge
 * targets, and overflow safety with huge values (plus a randomised check
 * of the invariants).
 */
#include "cunit-run.h"
#include <stdio.h>
#include <string.h>

#include "policy.h"

#define MAXC  6
#define NOEST .none = true /* in the tables: "no estimate" */
#define B56   (UINT64_C(1) << 56)

/* One candidate in a table row; fields not named are 0/false. */
typedef struct {
  bool none; /* no estimate */
  uint64_t est;
  uint16_t prio;
  uint32_t misses;
  uint64_t round_freed;
  uint64_t p1_asked, p1_freed;
  bool p1_answered;
  bool gone;
} row_cand;

typedef struct {
  const char *name;
  uint64_t target;
  proto_level level;
  unsigned pass;
  uint32_t miss_limit;
  size_t n;
  row_cand c[MAXC];
  uint64_t want[MAXC];
  int want_why[MAXC]; /* -1: do not check */
} split_row;

#define ANY            -1
#define ASK            AGENT_POLICY_ASKED
#define SKIP_GONE      AGENT_POLICY_SKIP_GONE
#define SKIP_MISSES    AGENT_POLICY_SKIP_MISSES
#define SKIP_EXHAUSTED AGENT_POLICY_SKIP_EXHAUSTED
#define SKIP_PASS1     AGENT_POLICY_SKIP_PASS1
#define SKIP_NO_SHARE  AGENT_POLICY_SKIP_NO_SHARE
#define SOFT           PROTO_LEVEL_SOFT
#define HARD           PROTO_LEVEL_HARD

/* clang-format off */
static const split_row split_rows[] = {
  { "equal priority: in proportion to estimates", 100, SOFT, 1, 3, 2,
    { { .est = 300, .prio = 50 }, { .est = 100, .prio = 50 } },
    { 75, 25 }, { ASK, ASK } },
  { "priority weighs the share (w = priority + 1)", 101, SOFT, 1, 3, 2,
    { { .est = 1000, .prio = 99 }, { .est = 1000, .prio = 0 } },
    { 100, 1 }, { ASK, ASK } },
  { "estimate x priority together", 70, SOFT, 1, 3, 2,
    { { .est = 100, .prio = 0 }, { .est = 50, .prio = 4 } }, /* scores 100 and 250 */
    { 20, 50 }, { ASK, ASK } },
  { "never above the estimate: the excess goes to the others", 150, SOFT, 1, 3, 2,
    { { .est = 100, .prio = 100 }, { .est = 100, .prio = 0 } },
    { 100, 50 }, { ASK, ASK } },
  { "water-filling over three weight classes", 250, SOFT, 1, 3, 3,
    { { .est = 100, .prio = 100 }, { .est = 100, .prio = 50 }, { .est = 100, .prio = 0 } },
    { 100, 100, 50 }, { ASK, ASK, ASK } },
  { "estimates cover the target: no-estimate ones wait", 100, SOFT, 1, 3, 2,
    { { .est = 200 }, { NOEST } },
    { 100, 0 }, { ASK, SKIP_NO_SHARE } },
  { "uncovered part in equal shares to no-estimate ones", 100, SOFT, 1, 3, 3,
    { { .est = 30, .prio = 100 }, { NOEST, .prio = 100 }, { NOEST, .prio = 0 } },
    { 30, 35, 35 }, { ASK, ASK, ASK } },
  { "remainder bytes go to the earliest", 100, SOFT, 1, 3, 3,
    { { NOEST }, { NOEST }, { NOEST } },
    { 34, 33, 33 }, { ASK, ASK, ASK } },
  { "zero target asks nobody", 0, HARD, 1, 3, 2,
    { { .est = 100 }, { NOEST } },
    { 0, 0 }, { SKIP_NO_SHARE, SKIP_NO_SHARE } },
  { "target larger than all estimates, nobody without one", 1000, SOFT, 1, 3, 2,
    { { .est = 10 }, { .est = 20 } },
    { 10, 20 }, { ASK, ASK } },
  { "single shrinker without estimate gets it all", 5, SOFT, 1, 3, 1,
    { { NOEST } },
    { 5 }, { ASK } },
  { "single shrinker with a smaller estimate", 5, SOFT, 1, 3, 1,
    { { .est = 3 } },
    { 3 }, { ASK } },
  { "estimate of 0 is skipped", 10, SOFT, 1, 3, 2,
    { { .est = 0 }, { NOEST } },
    { 0, 10 }, { SKIP_EXHAUSTED, ASK } },
  { "soft: skipped at the miss limit", 100, SOFT, 1, 3, 2,
    { { NOEST, .misses = 3 }, { NOEST, .misses = 2 } },
    { 0, 100 }, { SKIP_MISSES, ASK } },
  { "hard: asked despite misses", 100, HARD, 1, 3, 2,
    { { NOEST, .misses = 3 }, { NOEST, .misses = 2 } },
    { 50, 50 }, { ASK, ASK } },
  { "miss_limit 0 never skips", 100, SOFT, 1, 0, 1,
    { { NOEST, .misses = 1000 } },
    { 100 }, { ASK } },
  { "gone is never asked", 100, HARD, 1, 3, 2,
    { { NOEST, .gone = true }, { NOEST } },
    { 0, 100 }, { SKIP_GONE, ASK } },
  { "exhausted by an earlier phase", 100, HARD, 1, 3, 2,
    { { .est = 100, .round_freed = 100 }, { NOEST } },
    { 0, 100 }, { SKIP_EXHAUSTED, ASK } },
  { "remaining estimate after an earlier phase", 100, HARD, 1, 3, 2,
    { { .est = 100, .round_freed = 60 }, { NOEST } },
    { 40, 60 }, { ASK, ASK } },
  { "pass 2: only who delivered its whole ask", 90, SOFT, 2, 3, 3,
    { { NOEST, .p1_asked = 50, .p1_freed = 50, .p1_answered = true, .round_freed = 50 },
      { NOEST, .p1_asked = 50, .p1_freed = 10, .p1_answered = true, .round_freed = 10 },
      { NOEST, .p1_asked = 50 } },
    { 90, 0, 0 }, { ASK, SKIP_PASS1, SKIP_PASS1 } },
  { "pass 2: estimate left, split again", 60, SOFT, 2, 3, 2,
    { { .est = 100, .p1_asked = 50, .p1_freed = 50, .p1_answered = true, .round_freed = 50 },
      { .est = 100, .p1_asked = 50, .p1_freed = 50, .p1_answered = true, .round_freed = 50 } },
    { 30, 30 }, { ASK, ASK } },
  { "pass 2: shortfall beyond what is left", 200, SOFT, 2, 3, 2,
    { { .est = 100, .p1_asked = 50, .p1_freed = 50, .p1_answered = true, .round_freed = 50 },
      { .est = 100, .p1_asked = 50, .p1_freed = 50, .p1_answered = true, .round_freed = 50 } },
    { 50, 50 }, { ASK, ASK } },
  { "pass 2: one not asked in pass 1 joins; exhausted one does not", 40, SOFT, 2, 3, 2,
    { { .est = 100, .p1_asked = 100, .p1_freed = 100, .p1_answered = true, .round_freed = 100 },
      { NOEST } },
    { 0, 40 }, { SKIP_EXHAUSTED, ASK } },
  { "pass 2: soft still skips the missers", 40, SOFT, 2, 3, 2,
    { { NOEST, .misses = 5 },
      { NOEST, .p1_asked = 10, .p1_freed = 10, .p1_answered = true, .round_freed = 10 } },
    { 0, 40 }, { SKIP_MISSES, ASK } },
  { "huge estimates are clamped, nothing overflows", UINT64_MAX, HARD, 1, 3, 2,
    { { .est = UINT64_MAX, .prio = 100 }, { .est = UINT64_MAX - 1, .prio = 100 } },
    { B56, B56 }, { ASK, ASK } },
  { "huge target: the no-estimate one takes the rest exactly", UINT64_MAX, HARD, 1, 3, 3,
    { { .est = UINT64_MAX }, { .est = B56 }, { NOEST } },
    { B56, B56, UINT64_MAX - 2 * B56 }, { ASK, ASK, ASK } },
  { "huge values in proportion (128-bit products)", B56, SOFT, 1, 3, 2,
    { { .est = B56, .prio = 100 }, { .est = B56, .prio = 100 } },
    { B56 / 2, B56 / 2 }, { ASK, ASK } },
  { "priorities above the maximum clamp to it", 102, SOFT, 1, 3, 2,
    { { .est = 1000, .prio = 60000 }, { .est = 1000, .prio = 0 } },
    { 101, 1 }, { ASK, ASK } },
};
/* clang-format on */

static void to_candidates(const split_row *row, agent_policy_candidate *c) {
  memset(c, 0, sizeof(*c) * MAXC);
  for (size_t i = 0; i < row->n; i++) {
    const row_cand *r = &row->c[i];

    c[i].has_estimate = !r->none;
    c[i].estimate_bytes = r->est;
    c[i].priority = r->prio;
    c[i].consecutive_misses = r->misses;
    c[i].round_freed_bytes = r->round_freed;
    c[i].pass1_asked_bytes = r->p1_asked;
    c[i].pass1_freed_bytes = r->p1_freed;
    c[i].pass1_answered = r->p1_answered;
    c[i].gone = r->gone;
  }
}

static void test_split_table(void) {
  for (size_t t = 0; t < sizeof(split_rows) / sizeof(split_rows[0]); t++) {
    const split_row *row = &split_rows[t];
    agent_policy_candidate c[MAXC];
    uint64_t ask[MAXC], sum = 0, total;
    agent_policy_decision why[MAXC];
    agent_policy_pass pass = {row->target, row->level, row->pass, row->miss_limit};
    bool ok = true;

    to_candidates(row, c);
    total = agent_policy_split(&pass, c, row->n, ask, why);
    for (size_t i = 0; i < row->n; i++) {
      sum += ask[i];
      if (ask[i] != row->want[i] || (row->want_why[i] != ANY && (int)why[i] != row->want_why[i]))
        ok = false;
    }
    if (!ok || sum != total) {
      printf("\n    FAILED row \"%s\":", row->name);
      for (size_t i = 0; i < row->n; i++)
        printf(" [%zu] ask %llu (want %llu) %s", i, (unsigned long long)ask[i],
               (unsigned long long)row->want[i], agent_policy_decision_name(why[i]));
    }
    CU_ASSERT(ok);
    CU_ASSERT_EQUAL(sum, total);
  }
}

/* The why array is optional. */
static void test_split_without_why(void) {
  agent_policy_candidate c[2] = {{.has_estimate = true, .estimate_bytes = 10}, {0}};
  agent_policy_pass pass = {30, PROTO_LEVEL_SOFT, 1, 3};
  uint64_t ask[2];

  CU_ASSERT_EQUAL(agent_policy_split(&pass, c, 2, ask, NULL), 30);
  CU_ASSERT_EQUAL(ask[0], 10);
  CU_ASSERT_EQUAL(ask[1], 20);
  CU_ASSERT_EQUAL(agent_policy_split(&pass, c, 0, ask, NULL), 0);
}

typedef struct {
  proto_level level;
  uint32_t deadline_ms;
  unsigned soft_pct;
  bool soft_done;
  unsigned want_n;
  agent_policy_phase want[2];
} phase_row;

/* clang-format off */
static const phase_row phase_rows[] = {
  { SOFT, 1000, 50, false, 1, { { SOFT, 1000 } } },
  { HARD, 1000, 50, false, 2, { { SOFT, 500 }, { HARD, 500 } } },
  { HARD, 1000, 25, false, 2, { { SOFT, 250 }, { HARD, 750 } } },
  { HARD, 1000, 0, false, 2, { { SOFT, 10 }, { HARD, 990 } } },    /* share clamps to 1% */
  { HARD, 1000, 100, false, 2, { { SOFT, 990 }, { HARD, 10 } } },  /* and to 99% */
  { HARD, 3, 50, false, 2, { { SOFT, 1 }, { HARD, 2 } } },
  { HARD, 2, 99, false, 2, { { SOFT, 1 }, { HARD, 1 } } },         /* the hard phase keeps 1 ms */
  { HARD, 1, 50, false, 1, { { HARD, 1 } } },                      /* too short to split */
  { SOFT, 0, 50, false, 1, { { SOFT, 1 } } },                      /* 0 is taken as 1 */
  { HARD, PROTO_DEADLINE_MAX_MS, 50, false, 2, { { SOFT, 300000 }, { HARD, 300000 } } },
  { HARD, 1000, 50, true, 1, { { HARD, 1000 } } },              /* escalation: soft already ran */
  { SOFT, 1000, 50, true, 1, { { SOFT, 1000 } } },              /* no effect on a soft round */
};
/* clang-format on */

static void test_phase_plan(void) {
  for (size_t t = 0; t < sizeof(phase_rows) / sizeof(phase_rows[0]); t++) {
    const phase_row *row = &phase_rows[t];
    agent_policy_phase out[AGENT_POLICY_PHASES_MAX];
    unsigned n = agent_policy_plan_phases(row->level, row->deadline_ms, row->soft_pct,
                                          row->soft_done, out);

    CU_ASSERT_EQUAL_FATAL(n, row->want_n);
    for (unsigned i = 0; i < n; i++) {
      CU_ASSERT_EQUAL(out[i].level, row->want[i].level);
      CU_ASSERT_EQUAL(out[i].deadline_ms, row->want[i].deadline_ms);
    }
  }
}

/* Soft comes first in every hard plan, and the phases use the whole
 * deadline, for every deadline and share. */
static void test_phase_plan_properties(void) {
  for (uint32_t d = 1; d <= 2000; d += (d < 50 ? 1 : 37)) {
    for (unsigned pct = 0; pct <= 100; pct += 7) {
      agent_policy_phase out[AGENT_POLICY_PHASES_MAX];
      unsigned n = agent_policy_plan_phases(PROTO_LEVEL_HARD, d, pct, false, out);
      uint64_t sum = 0;

      for (unsigned i = 0; i < n; i++) {
        sum += out[i].deadline_ms;
        CU_ASSERT(out[i].deadline_ms >= 1);
      }
      CU_ASSERT_EQUAL(sum, d);
      CU_ASSERT_EQUAL(out[n - 1].level, PROTO_LEVEL_HARD);
      if (n == 2)
        CU_ASSERT_EQUAL(out[0].level, PROTO_LEVEL_SOFT);
    }
  }
}

static uint64_t rng_state = 0x2545F4914F6CDD1DULL;

static uint64_t rng(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}

/* A value from a spread of magnitudes, overflow-prone ones included. */
static uint64_t rnd_bytes(void) {
  switch (rng() % 5) {
  case 0: return 0;
  case 1: return rng() % 1000;
  case 2: return rng() % (UINT64_C(1) << 40);
  case 3: return UINT64_MAX - rng() % 3;
  default: return rng();
  }
}

/* Randomised: the invariants every split must keep. */
static void test_split_invariants(void) {
  enum { N = 16 };
  unsigned bad = 0;

  for (int iter = 0; iter < 20000; iter++) {
    agent_policy_candidate c[N];
    uint64_t ask[N];
    agent_policy_decision why[N];
    size_t n = rng() % N;
    agent_policy_pass pass = {rnd_bytes(), rng() % 2 ? PROTO_LEVEL_HARD : PROTO_LEVEL_SOFT,
                              1 + (unsigned)(rng() % 2), (uint32_t)(rng() % 4)};
    unsigned __int128 est_sum = 0;
    bool any_unest = false;
    uint64_t total;
    unsigned __int128 sum = 0;

    memset(c, 0, sizeof(c));
    for (size_t i = 0; i < n; i++) {
      c[i].gone = rng() % 10 == 0;
      c[i].has_estimate = rng() % 2;
      c[i].estimate_bytes = rnd_bytes();
      c[i].priority = (uint16_t)(rng() % 120);
      c[i].consecutive_misses = (uint32_t)(rng() % 5);
      c[i].round_freed_bytes = rng() % 3 ? 0 : rnd_bytes();
      c[i].pass1_asked_bytes = rng() % 2 ? 0 : rnd_bytes();
      c[i].pass1_freed_bytes = rng() % 2 ? c[i].pass1_asked_bytes : rnd_bytes();
      c[i].pass1_answered = rng() % 4 != 0;
    }
    total = agent_policy_split(&pass, c, n, ask, why);
    for (size_t i = 0; i < n; i++) {
      sum += ask[i];
      if (why[i] != AGENT_POLICY_ASKED && ask[i] != 0)
        bad++;
      if (why[i] == AGENT_POLICY_ASKED && ask[i] == 0)
        bad++;
      if ((why[i] == AGENT_POLICY_ASKED || why[i] == AGENT_POLICY_SKIP_NO_SHARE) &&
          c[i].has_estimate)
        est_sum += agent_policy_remaining_estimate(&c[i]);
      if (ask[i] && c[i].has_estimate && ask[i] > agent_policy_remaining_estimate(&c[i]))
        bad++; /* never above the estimate */
      if (ask[i] && c[i].gone)
        bad++;
      if (ask[i] && pass.level == PROTO_LEVEL_SOFT && pass.miss_limit &&
          c[i].consecutive_misses >= pass.miss_limit)
        bad++;
      if (why[i] == AGENT_POLICY_ASKED && !c[i].has_estimate)
        any_unest = true;
    }
    if (sum != total || sum > pass.target_bytes)
      bad++;
    /* When no-estimate shrinkers took part, or the estimates cover the
     * target, the target is asked exactly. */
    if ((any_unest || est_sum >= pass.target_bytes) && sum != pass.target_bytes)
      bad++;
  }
  CU_ASSERT_EQUAL(bad, 0);
}

/* Covering estimates are asked exactly the target, and each ask is within
 * one byte of its weighted share. */
static void test_split_proportional_exact(void) {
  enum { N = 8 };
  unsigned bad = 0;

  for (int iter = 0; iter < 5000; iter++) {
    agent_policy_candidate c[N];
    uint64_t ask[N], sum = 0, est_sum = 0;
    size_t n = 1 + rng() % N;
    agent_policy_pass pass = {0, PROTO_LEVEL_SOFT, 1, 3};

    memset(c, 0, sizeof(c));
    for (size_t i = 0; i < n; i++) {
      c[i].has_estimate = true;
      c[i].estimate_bytes = 1 + rng() % (UINT64_C(1) << 50);
      c[i].priority = 50; /* one weight class: no capping */
      est_sum += c[i].estimate_bytes;
    }
    pass.target_bytes = rng() % (est_sum + 1);
    agent_policy_split(&pass, c, n, ask, NULL);
    for (size_t i = 0; i < n; i++) {
      unsigned __int128 exact = (unsigned __int128)pass.target_bytes * c[i].estimate_bytes;
      uint64_t lo = (uint64_t)(exact / est_sum);

      sum += ask[i];
      if (ask[i] < lo || ask[i] > lo + 1 || ask[i] > c[i].estimate_bytes)
        bad++;
    }
    if (sum != pass.target_bytes)
      bad++;
  }
  CU_ASSERT_EQUAL(bad, 0);
}

static void test_remaining_estimate(void) {
  agent_policy_candidate c = {.has_estimate = true, .estimate_bytes = 100, .round_freed_bytes = 30};

  CU_ASSERT_EQUAL(agent_policy_remaining_estimate(&c), 70);
  c.round_freed_bytes = 300; /* freed more than it estimated */
  CU_ASSERT_EQUAL(agent_policy_remaining_estimate(&c), 0);
  c.estimate_bytes = UINT64_MAX;
  c.round_freed_bytes = 0;
  CU_ASSERT_EQUAL(agent_policy_remaining_estimate(&c), AGENT_POLICY_BYTES_MAX);
  CU_ASSERT_STRING_EQUAL(agent_policy_decision_name(AGENT_POLICY_SKIP_MISSES), "skip-misses");
}

int main(void) {
  CU_pSuite s;

  if (CU_initialize_registry() != CUE_SUCCESS)
    return 2;
  s = CU_add_suite("policy", NULL, NULL);
  CU_add_test(s, "split table", test_split_table);
  CU_add_test(s, "split without reasons", test_split_without_why);
  CU_add_test(s, "phase plan table", test_phase_plan);
  CU_add_test(s, "phase plan: soft first, whole deadline", test_phase_plan_properties);
  CU_add_test(s, "split invariants (randomised, huge values)", test_split_invariants);
  CU_add_test(s, "proportional split is exact", test_split_proportional_exact);
  CU_add_test(s, "remaining estimate", test_remaining_estimate);
  return cunit_run_all();
}
