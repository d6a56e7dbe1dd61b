/* SPDX-License-Identifier: MIT */
/*
 * The balloon controller (agent/balloon.c) and the PSI source:
 *  - the decision table of agent_balloon_decide() and
 *    agent_balloon_decide_pressure(), rule by rule;
 *  - the controller end to end with a fake source and the real round
 *    runner (no clients: every round claims nothing): a target drop gives
 *    a soft round sized to the shortfall, then convergence; a stall gives
 *    a hard round, then giving up; the target rising again gives relief;
 *    hinting holds hard rounds back; PSI gives rate-limited soft rounds;
 *  - free page hints: the table of agent_balloon_decide_hint() and the
 *    round's size; the controller runs one soft round (reason migration)
 *    per new command id, after a balloon round that is running or queued,
 *    apart from the episode's figures, and again when the queue was full;
 *    the virtio source over a fake device says HINT_START for every new
 *    command id (active id, STOP, the next id, DONE);
 *  - the PSI source without PSI and disabled.
 * (The kmsg source has its own tests: test-kmsg.c.)
 *
 * Fixtures: argv[1] or SHRINKD_TEST_CAPTURED (tests/vm/captured) and
 * argv[2] or SHRINKD_TEST_PROC (tests/data/proc).
 */
#include "cunit-run.h"
#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "balloon.h"
#include "errors.h"
#include "policy.h"
#include "procfs.h"
#include "registry.h"
#include "round.h"
#include "settings.h"
#include "source.h"

#define MiB (UINT64_C(1) << 20)

static const char *captured;
static const char *proc_fixtures;

/* ---- the decision table ---- */

static AgentBalloonPolicy policy;

/* An episode just begun: the host wants 640 MiB in the balloon, it holds
 * nothing yet, 214 MiB available (150 beyond the 64 MiB reserve). */
static AgentBalloonFacts base_facts(void) {
  AgentBalloonFacts f = {
      .target_known = true,
      .target_bytes = 640 * MiB,
      .actual_bytes = 0,
      .in_episode = true,
      .mem_known = true,
      .mem_available_bytes = 214 * MiB,
      .since_progress_ms = 0,
      .since_stall_ms = -1,
      .since_round_ms = -1,
      .since_psi_round_ms = -1,
  };

  return f;
}

static AgentBalloonAction decide(const AgentBalloonFacts *f) {
  AgentBalloonAction a;

  agent_balloon_decide(&policy, f, &a);
  return a;
}

static void test_defaults(void) {
  CU_ASSERT_EQUAL(policy.reserve_bytes, 64 * MiB);
  CU_ASSERT_EQUAL(policy.stall_ms, 300);
  CU_ASSERT_EQUAL(policy.max_rounds, 6);
  CU_ASSERT_EQUAL(policy.min_interval_ms, 100);
  CU_ASSERT_EQUAL(policy.escalate_delay_ms, 0);
  CU_ASSERT_EQUAL(policy.soft_deadline_ms, 1000);
  CU_ASSERT_EQUAL(policy.hard_deadline_ms, 3000);
  /* Stall detection plus a hard round fit well inside squeezed's 5 s. */
  CU_ASSERT_TRUE(policy.stall_ms + policy.min_interval_ms + policy.hard_deadline_ms < 4000);
  CU_ASSERT_STRING_EQUAL(agent_balloon_step_name(AGENT_BALLOON_HARD), "hard");
  CU_ASSERT_STRING_EQUAL(agent_balloon_step_name(AGENT_BALLOON_GIVE_UP), "give-up");
}

static void test_target_drop_soft(void) {
  AgentBalloonFacts f = base_facts();
  AgentBalloonAction a = decide(&f);

  /* Shortfall = 640 - (214 - 64) = 490 MiB. */
  CU_ASSERT_EQUAL(a.step, AGENT_BALLOON_SOFT);
  CU_ASSERT_EQUAL(a.round_bytes, 490 * MiB);
  CU_ASSERT_EQUAL(a.deadline_ms, 1000);
  CU_ASSERT_EQUAL(a.free_beyond_reserve_bytes, 150 * MiB);

  /* The balloon already took some: the shortfall does not change, as
   * what it took came out of what was free. */
  f.actual_bytes = 100 * MiB;
  f.mem_available_bytes = 114 * MiB;
  a = decide(&f);
  CU_ASSERT_EQUAL(a.step, AGENT_BALLOON_SOFT);
  CU_ASSERT_EQUAL(a.round_bytes, 490 * MiB);

  /* Nothing available beyond the reserve, or MemAvailable unreadable:
   * all that is missing. */
  f = base_facts();
  f.mem_available_bytes = 10 * MiB;
  a = decide(&f);
  CU_ASSERT_EQUAL(a.round_bytes, 640 * MiB);
  f.mem_known = false;
  a = decide(&f);
  CU_ASSERT_EQUAL(a.step, AGENT_BALLOON_SOFT);
  CU_ASSERT_EQUAL(a.round_bytes, 640 * MiB);
}

static void test_zero_shortfall(void) {
  AgentBalloonFacts f = base_facts();
  AgentBalloonAction a;

  /* Free memory covers the target: no round, wait for the balloon. */
  f.mem_available_bytes = 900 * MiB;
  a = decide(&f);
  CU_ASSERT_EQUAL(a.step, AGENT_BALLOON_WAIT);
  CU_ASSERT_EQUAL(a.wait_ms, 300);
  f.since_progress_ms = 120;
  a = decide(&f);
  CU_ASSERT_EQUAL(a.step, AGENT_BALLOON_WAIT);
  CU_ASSERT_EQUAL(a.wait_ms, 180);
  /* It stalls anyway: soft first, for all that is missing. */
  f.since_progress_ms = 300;
  f.actual_bytes = 600 * MiB;
  a = decide(&f);
  CU_ASSERT_EQUAL(a.step, AGENT_BALLOON_SOFT);
  CU_ASSERT_EQUAL(a.round_bytes, 40 * MiB);
  /* An "Out of puff" line counts at once. */
  f.since_progress_ms = 5;
  f.stall_seen = true;
  a = decide(&f);
  CU_ASSERT_EQUAL(a.step, AGENT_BALLOON_SOFT);
}

static void test_escalation(void) {
  AgentBalloonFacts f = base_facts();
  AgentBalloonAction a;

  /* The soft round covered the shortfall (340 MiB missing, 350 MiB
   * free beyond the reserve) and the balloon moves: wait. */
  f.rounds = 1;
  f.last_round_claimed_bytes = 100 * MiB;
  f.actual_bytes = 300 * MiB;
  f.mem_available_bytes = 414 * MiB;
  f.since_round_ms = 100;
  f.since_progress_ms = 100;
  a = decide(&f);
  CU_ASSERT_EQUAL(a.step, AGENT_BALLOON_WAIT);
  CU_ASSERT_EQUAL(a.wait_ms, 200);

  /* The soft round left a shortfall (only 6 MiB free beyond the
   * reserve): hard at once for it, without waiting for a stall... */
  f.mem_available_bytes = 70 * MiB;
  a = decide(&f);
  CU_ASSERT_EQUAL(a.step, AGENT_BALLOON_HARD);
  CU_ASSERT_EQUAL(a.round_bytes, 334 * MiB);
  CU_ASSERT_EQUAL(a.deadline_ms, 3000);
  /* ...at once by default, even 30 ms after the soft round... */
  f.since_round_ms = 30;
  a = decide(&f);
  CU_ASSERT_EQUAL(a.step, AGENT_BALLOON_HARD);
  /* ...or after escalate_delay_ms when one is set... */
  policy.escalate_delay_ms = 100;
  a = decide(&f);
  CU_ASSERT_EQUAL(a.step, AGENT_BALLOON_WAIT);
  CU_ASSERT_EQUAL(a.wait_ms, 70);
  policy.escalate_delay_ms = 0;
  /* ...and never while hinting. */
  f.since_round_ms = 100;
  f.hint_in_progress = true;
  a = decide(&f);
  CU_ASSERT_EQUAL(a.step, AGENT_BALLOON_IDLE);
  f.hint_in_progress = false;

  /* The soft round asked for 390 MiB and 100 came back by its claims:
   * 290 more are needed, although MemAvailable (which lags behind what
   * applications free: huge pages split later) says 334. The smaller. */
  f.last_round_target_bytes = 390 * MiB;
  a = decide(&f);
  CU_ASSERT_EQUAL(a.step, AGENT_BALLOON_HARD);
  CU_ASSERT_EQUAL(a.round_bytes, 290 * MiB);
  /* MemAvailable says less than the claims: that. */
  f.last_round_target_bytes = 600 * MiB;
  a = decide(&f);
  CU_ASSERT_EQUAL(a.round_bytes, 334 * MiB);
  /* The claims covered all it asked for: no hard round yet; a stall
   * will say whether the memory really came back. */
  f.last_round_target_bytes = 100 * MiB;
  a = decide(&f);
  CU_ASSERT_EQUAL(a.step, AGENT_BALLOON_WAIT);
  CU_ASSERT_EQUAL(a.wait_ms, 200);
  f.since_progress_ms = 300;
  a = decide(&f);
  CU_ASSERT_EQUAL(a.step, AGENT_BALLOON_HARD);
  CU_ASSERT_EQUAL(a.round_bytes, 340 * MiB);
  f.since_progress_ms = 100;
  f.last_round_target_bytes = 0;

  /* After a hard round, moving: wait, even with a shortfall left (the
   * freed memory may still be on its way back to the kernel). */
  f.last_round_hard = true;
  a = decide(&f);
  CU_ASSERT_EQUAL(a.step, AGENT_BALLOON_WAIT);
  CU_ASSERT_EQUAL(a.wait_ms, 200);

  /* No progress for stall_ms: hard, for all that is still missing. */
  f.since_progress_ms = 300;
  f.since_round_ms = 300;
  a = decide(&f);
  CU_ASSERT_EQUAL(a.step, AGENT_BALLOON_HARD);
  CU_ASSERT_EQUAL(a.round_bytes, 340 * MiB);
  CU_ASSERT_EQUAL(a.deadline_ms, 3000);

  /* Out of puff soon after the round ended: rate-limited, then hard. */
  f.since_progress_ms = 40;
  f.since_round_ms = 40;
  f.stall_seen = true;
  a = decide(&f);
  CU_ASSERT_EQUAL(a.step, AGENT_BALLOON_WAIT);
  CU_ASSERT_EQUAL(a.wait_ms, 60);
  f.since_round_ms = 100;
  a = decide(&f);
  CU_ASSERT_EQUAL(a.step, AGENT_BALLOON_HARD);

  /* A soft round that freed nothing is no reason to stop: hard next. */
  f.last_round_claimed_bytes = 0;
  f.last_round_hard = false;
  a = decide(&f);
  CU_ASSERT_EQUAL(a.step, AGENT_BALLOON_HARD);
  f.last_round_hard = true;

  /* Repeated hard rounds while they free something... */
  f.rounds = 3;
  f.last_round_hard = true;
  f.last_round_claimed_bytes = 10 * MiB;
  a = decide(&f);
  CU_ASSERT_EQUAL(a.step, AGENT_BALLOON_HARD);
  /* ...until one frees nothing (late replies may still free memory: not
   * a reason to stop)... */
  f.last_round_claimed_bytes = 0;
  f.last_round_missed = true;
  a = decide(&f);
  CU_ASSERT_EQUAL(a.step, AGENT_BALLOON_HARD);
  f.last_round_missed = false;
  a = decide(&f);
  CU_ASSERT_EQUAL(a.step, AGENT_BALLOON_GIVE_UP);
  /* ...or the episode's rounds are used up. */
  f.last_round_claimed_bytes = 10 * MiB;
  f.rounds = 6;
  a = decide(&f);
  CU_ASSERT_EQUAL(a.step, AGENT_BALLOON_GIVE_UP);
  /* Given up: quiet until the target changes. */
  f.gave_up = true;
  a = decide(&f);
  CU_ASSERT_EQUAL(a.step, AGENT_BALLOON_IDLE);
}

static void test_converged_and_idle(void) {
  AgentBalloonFacts f = base_facts();
  AgentBalloonAction a;

  f.rounds = 2;
  f.actual_bytes = 640 * MiB;
  a = decide(&f);
  CU_ASSERT_EQUAL(a.step, AGENT_BALLOON_CONVERGED);
  /* Converged wins over having given up. */
  f.gave_up = true;
  a = decide(&f);
  CU_ASSERT_EQUAL(a.step, AGENT_BALLOON_CONVERGED);

  f = base_facts();
  f.round_running = true;
  f.since_progress_ms = 10000;
  a = decide(&f);
  CU_ASSERT_EQUAL(a.step, AGENT_BALLOON_IDLE);

  f = base_facts();
  f.in_episode = false;
  a = decide(&f);
  CU_ASSERT_EQUAL(a.step, AGENT_BALLOON_IDLE);
}

static void test_relief(void) {
  AgentBalloonFacts f = base_facts();
  AgentBalloonAction a;

  /* The host gives memory back: target below what the balloon holds. */
  f.in_episode = false;
  f.target_fell = true;
  f.target_bytes = 0;
  f.actual_bytes = 640 * MiB;
  a = decide(&f);
  CU_ASSERT_EQUAL(a.step, AGENT_BALLOON_RELIEF);
  /* Even while a round runs. */
  f.round_running = true;
  a = decide(&f);
  CU_ASSERT_EQUAL(a.step, AGENT_BALLOON_RELIEF);
  /* Lowered, but still above what the balloon holds: no relief, the
   * episode goes on. */
  f = base_facts();
  f.target_fell = true;
  f.target_bytes = 500 * MiB;
  f.actual_bytes = 300 * MiB;
  f.rounds = 1;
  f.since_round_ms = 50;
  f.since_progress_ms = 50;
  a = decide(&f);
  CU_ASSERT_EQUAL(a.step, AGENT_BALLOON_HARD); /* the soft round's shortfall, at once */
  /* Without a known target there is no relief from this rule. */
  f.target_known = false;
  f.target_bytes = 0;
  a = decide(&f);
  CU_ASSERT_NOT_EQUAL(a.step, AGENT_BALLOON_RELIEF);
}

static void test_hint(void) {
  AgentBalloonFacts f = base_facts();
  AgentBalloonAction a;

  /* Hinting collapses MemFree: never a hard round because of it. */
  f.hint_in_progress = true;
  f.rounds = 1;
  f.since_round_ms = 1000;
  f.since_progress_ms = 1000;
  f.stall_seen = true;
  a = decide(&f);
  CU_ASSERT_EQUAL(a.step, AGENT_BALLOON_IDLE);
  /* Once it ends, the hard round comes. */
  f.hint_in_progress = false;
  a = decide(&f);
  CU_ASSERT_EQUAL(a.step, AGENT_BALLOON_HARD);
  /* A real target change during hinting still gets its soft round. */
  f = base_facts();
  f.hint_in_progress = true;
  a = decide(&f);
  CU_ASSERT_EQUAL(a.step, AGENT_BALLOON_SOFT);
  /* No episode (hinting alone moves no target): nothing at all. */
  f.in_episode = false;
  f.mem_available_bytes = 0;
  a = decide(&f);
  CU_ASSERT_EQUAL(a.step, AGENT_BALLOON_IDLE);
}

static void test_blind(void) {
  AgentBalloonFacts f = base_facts();
  AgentBalloonAction a;

  /* Config space unreadable: target unknown; an episode starts with an
   * "Out of puff" line and rounds are blind_step_bytes. A stall is the
   * first sign, and free memory is gone by then: hard at once. */
  f.target_known = false;
  f.target_bytes = 0;
  f.actual_bytes = 90 * MiB;
  f.stall_seen = true;
  f.since_stall_ms = 0;
  a = decide(&f);
  CU_ASSERT_EQUAL(a.step, AGENT_BALLOON_HARD);
  CU_ASSERT_EQUAL(a.round_bytes, 64 * MiB);
  f.rounds = 1;
  f.since_round_ms = 500;
  f.last_round_claimed_bytes = 1;
  a = decide(&f);
  CU_ASSERT_EQUAL(a.step, AGENT_BALLOON_HARD);
  CU_ASSERT_EQUAL(a.round_bytes, 128 * MiB); /* doubling: the need is unknown */
  f.rounds = 5;
  a = decide(&f);
  CU_ASSERT_EQUAL(a.round_bytes, 1024 * MiB); /* at most 16 steps */
  f.rounds = 1;
  /* No progress alone is no stall without a target. */
  f.stall_seen = false;
  f.since_progress_ms = 100000;
  f.since_stall_ms = 1000;
  a = decide(&f);
  CU_ASSERT_EQUAL(a.step, AGENT_BALLOON_WAIT);
  CU_ASSERT_EQUAL(a.wait_ms, 4000);
  f.since_stall_ms = 5000;
  a = decide(&f);
  CU_ASSERT_EQUAL(a.step, AGENT_BALLOON_CONVERGED);
  /* ...unless memory is really short: then it is a stall (no kmsg
   * needed). A little below the reserve is not enough. */
  f.mem_available_bytes = 30 * MiB;
  f.since_progress_ms = 300;
  a = decide(&f);
  CU_ASSERT_EQUAL(a.step, AGENT_BALLOON_WAIT);
  f.mem_available_bytes = 10 * MiB;
  a = decide(&f);
  CU_ASSERT_EQUAL(a.step, AGENT_BALLOON_HARD);
  f.rounds = 0;
  f.since_round_ms = -1;
  a = decide(&f);
  CU_ASSERT_EQUAL(a.step, AGENT_BALLOON_HARD);
  CU_ASSERT_EQUAL(a.round_bytes, 64 * MiB);
  /* Hinting still forbids the hard round. */
  f.hint_in_progress = true;
  a = decide(&f);
  CU_ASSERT_EQUAL(a.step, AGENT_BALLOON_IDLE);
  f.hint_in_progress = false;
  /* Still growing: wait for stall_ms after the last progress. */
  f.since_progress_ms = 100;
  f.since_stall_ms = -1;
  a = decide(&f);
  CU_ASSERT_EQUAL(a.step, AGENT_BALLOON_WAIT);
  CU_ASSERT_EQUAL(a.wait_ms, 200);
  /* It began to shrink: relief. */
  f.actual_fell = true;
  a = decide(&f);
  CU_ASSERT_EQUAL(a.step, AGENT_BALLOON_RELIEF);
  /* With a known target, a shrinking size alone is no relief. */
  f = base_facts();
  f.actual_fell = true;
  a = decide(&f);
  CU_ASSERT_EQUAL(a.step, AGENT_BALLOON_SOFT);
}

static void test_pressure(void) {
  AgentBalloonFacts f = base_facts();
  AgentBalloonAction a;

  f.in_episode = false;
  agent_balloon_decide_pressure(&policy, &f, &a);
  CU_ASSERT_EQUAL(a.step, AGENT_BALLOON_SOFT);
  CU_ASSERT_EQUAL(a.round_bytes, 64 * MiB);
  CU_ASSERT_EQUAL(a.deadline_ms, 1000);
  f.since_psi_round_ms = 5000;
  agent_balloon_decide_pressure(&policy, &f, &a);
  CU_ASSERT_EQUAL(a.step, AGENT_BALLOON_IDLE);
  f.since_psi_round_ms = 10000;
  agent_balloon_decide_pressure(&policy, &f, &a);
  CU_ASSERT_EQUAL(a.step, AGENT_BALLOON_SOFT);
  f.hint_in_progress = true;
  agent_balloon_decide_pressure(&policy, &f, &a);
  CU_ASSERT_EQUAL(a.step, AGENT_BALLOON_IDLE);
  f.hint_in_progress = false;
  f.round_running = true;
  agent_balloon_decide_pressure(&policy, &f, &a);
  CU_ASSERT_EQUAL(a.step, AGENT_BALLOON_IDLE);
  f.round_running = false;
  f.in_episode = true;
  agent_balloon_decide_pressure(&policy, &f, &a);
  CU_ASSERT_EQUAL(a.step, AGENT_BALLOON_IDLE);
  f.gave_up = true; /* the balloon's episode is stuck: PSI may act */
  agent_balloon_decide_pressure(&policy, &f, &a);
  CU_ASSERT_EQUAL(a.step, AGENT_BALLOON_SOFT);
}

/* ---- free page hints: the table ---- */

/* Hinting in progress with command id 0x80000002, nothing asked yet, the
 * shrinkers estimate 300 MiB between them. */
static AgentBalloonFacts hint_facts(void) {
  AgentBalloonFacts f = base_facts();

  f.in_episode = false;
  f.hint_in_progress = true;
  f.hint_cmd_id = 0x80000002u;
  f.estimates_known = true;
  f.estimate_sum_bytes = 300 * MiB;
  return f;
}

static void test_hint_table(void) {
  static const struct {
    const char *name;
    bool off;
    uint32_t pct;
    bool in_progress;
    bool asked;
    uint32_t asked_id;
    bool hint_running;
    bool known;
    uint64_t sum;
    bool balloon_busy; /* an episode with a round of it running */
    AgentBalloonStep step;
    uint64_t bytes;
  } rows[] = {
      {"new hint: the estimates", false, 100, true, false, 0, false, true, 300 * MiB, false,
       AGENT_BALLOON_SOFT, 300 * MiB},
      {"50%", false, 50, true, false, 0, false, true, 300 * MiB, false, AGENT_BALLOON_SOFT,
       150 * MiB},
      {"33% of 10 bytes: rounded up", false, 33, true, false, 0, false, true, 10, false,
       AGENT_BALLOON_SOFT, 4},
      {"no estimates: the fallback", false, 100, true, false, 0, false, false, 0, false,
       AGENT_BALLOON_SOFT, 64 * MiB},
      {"no estimates, 25%", false, 25, true, false, 0, false, false, 0, false, AGENT_BALLOON_SOFT,
       16 * MiB},
      {"estimates beyond 2^56: clamped", false, 100, true, false, 0, false, true, UINT64_MAX, false,
       AGENT_BALLOON_SOFT, AGENT_POLICY_BYTES_MAX},
      {"an older id had its round", false, 100, true, true, 0x80000001u, false, true, 300 * MiB,
       false, AGENT_BALLOON_SOFT, 300 * MiB},
      {"a balloon round runs: asked anyway, queued behind", false, 100, true, false, 0, false, true,
       300 * MiB, true, AGENT_BALLOON_SOFT, 300 * MiB},
      {"off", true, 100, true, false, 0, false, true, 300 * MiB, false, AGENT_BALLOON_IDLE, 0},
      {"no hinting", false, 100, false, false, 0, false, true, 300 * MiB, false, AGENT_BALLOON_IDLE,
       0},
      {"this id had its round", false, 100, true, true, 0x80000002u, false, true, 300 * MiB, false,
       AGENT_BALLOON_IDLE, 0},
      {"a hint round is queued or running", false, 100, true, true, 0x80000001u, true, true,
       300 * MiB, false, AGENT_BALLOON_IDLE, 0},
      {"every estimate is 0", false, 100, true, false, 0, false, true, 0, false, AGENT_BALLOON_IDLE,
       0},
  };

  for (size_t i = 0; i < G_N_ELEMENTS(rows); i++) {
    AgentBalloonPolicy p = policy;
    AgentBalloonFacts f = hint_facts();
    AgentBalloonAction a;

    p.hint_off = rows[i].off;
    p.hint_pct = rows[i].pct;
    f.hint_in_progress = rows[i].in_progress;
    f.hint_round_asked = rows[i].asked;
    f.hint_round_cmd_id = rows[i].asked_id;
    f.hint_round_running = rows[i].hint_running;
    f.estimates_known = rows[i].known;
    f.estimate_sum_bytes = rows[i].sum;
    if (rows[i].balloon_busy) {
      f.in_episode = true;
      f.round_running = true;
      f.rounds = 1;
    }
    agent_balloon_decide_hint(&p, &f, &a);
    if (a.step != rows[i].step || a.round_bytes != rows[i].bytes)
      printf("\n    %s: %s %" G_GUINT64_FORMAT " (want %s %" G_GUINT64_FORMAT ")", rows[i].name,
             agent_balloon_step_name(a.step), a.round_bytes, agent_balloon_step_name(rows[i].step),
             rows[i].bytes);
    CU_ASSERT_EQUAL(a.step, rows[i].step);
    CU_ASSERT_EQUAL(a.round_bytes, rows[i].bytes);
    CU_ASSERT_PTR_NOT_NULL(a.why);
    if (a.step == AGENT_BALLOON_SOFT)
      CU_ASSERT_EQUAL(a.deadline_ms, AGENT_BALLOON_HINT_DEADLINE_DEFAULT);
  }
}

static void test_hint_never_hard(void) {
  AgentBalloonFacts f = hint_facts();
  AgentBalloonAction a;

  /* Whatever the episode looks like, a hint gives a soft round or none. */
  f.in_episode = true;
  f.rounds = 3;
  f.last_round_hard = true;
  f.stall_seen = true;
  f.since_progress_ms = 10000;
  f.mem_available_bytes = 0;
  agent_balloon_decide_hint(&policy, &f, &a);
  CU_ASSERT_EQUAL(a.step, AGENT_BALLOON_SOFT);
  CU_ASSERT_EQUAL(policy.hint_pct, 100);
  CU_ASSERT_FALSE(policy.hint_off);
  CU_ASSERT_EQUAL(policy.hint_fallback_bytes, policy.reserve_bytes);

  /* A hint round in flight is not a round of the episode (rule 3). */
  f = base_facts();
  f.hint_in_progress = true;
  f.hint_round_running = true;
  a = decide(&f);
  CU_ASSERT_EQUAL(a.step, AGENT_BALLOON_SOFT);
  CU_ASSERT_EQUAL(a.round_bytes, 490 * MiB);
  f.round_running = true;
  a = decide(&f);
  CU_ASSERT_EQUAL(a.step, AGENT_BALLOON_IDLE);

  /* The size on its own (shrinkd-prepare-migration's too). */
  CU_ASSERT_EQUAL(agent_balloon_migration_bytes(true, 1000, 64, 100), 1000);
  CU_ASSERT_EQUAL(agent_balloon_migration_bytes(true, 1000, 64, 1), 10);
  CU_ASSERT_EQUAL(agent_balloon_migration_bytes(true, 999, 64, 1), 10);
  CU_ASSERT_EQUAL(agent_balloon_migration_bytes(false, 1000, 64, 50), 32);
  CU_ASSERT_EQUAL(agent_balloon_migration_bytes(true, 1000, 64, 0), 10);     /* clamped to 1 */
  CU_ASSERT_EQUAL(agent_balloon_migration_bytes(true, 1000, 64, 500), 1000); /* to 100 */
  CU_ASSERT_EQUAL(agent_balloon_migration_bytes(true, 0, 64, 100), 0);
}

static void test_hint_estimates(void) {
  AgentRegistry *reg = agent_registry_new(16);
  AgentClient *a, *b;
  uint64_t sum = 1;

  CU_ASSERT_FALSE(agent_balloon_sum_estimates(NULL, &sum));
  CU_ASSERT_EQUAL(sum, 0);
  CU_ASSERT_FALSE(agent_balloon_sum_estimates(reg, &sum));
  a = agent_registry_add_client(reg, -1, 10, 0, "a");
  b = agent_registry_add_client(reg, -1, 11, 0, "b");
  g_assert(agent_registry_add_shrinker(reg, a, 1, "none", 50, false, 0, NULL));
  CU_ASSERT_FALSE(agent_balloon_sum_estimates(reg, &sum));
  CU_ASSERT_EQUAL(sum, 0);
  g_assert(agent_registry_add_shrinker(reg, a, 2, "cache", 50, true, 100 * MiB, NULL));
  g_assert(agent_registry_add_shrinker(reg, b, 1, "heap", 50, true, 28 * MiB, NULL));
  CU_ASSERT_TRUE(agent_balloon_sum_estimates(reg, &sum));
  CU_ASSERT_EQUAL(sum, 128 * MiB);
  /* Saturates instead of wrapping. */
  g_assert(agent_registry_add_shrinker(reg, b, 2, "huge", 50, true, UINT64_MAX, NULL));
  g_assert(agent_registry_add_shrinker(reg, b, 3, "huge2", 50, true, UINT64_MAX, NULL));
  CU_ASSERT_TRUE(agent_balloon_sum_estimates(reg, &sum));
  CU_ASSERT_EQUAL(sum, AGENT_POLICY_BYTES_MAX);
  agent_registry_free(reg);
}

/* ---- the controller with a fake source ---- */

static void fake_start(AgentSource *s) {
  agent_source_set_status(s, TRUE, "fake", "made by the test");
}

static void fake_stop(AgentSource *s) {}

static void fake_finalize(AgentSource *s) {
  g_free(s);
}

static const AgentSourceClass fake_class = {
    .name = "fake-balloon",
    .start = fake_start,
    .stop = fake_stop,
    .finalize = fake_finalize,
};

static AgentSource *fake;

static void emit(AgentSourceEventKind kind, uint64_t target, uint64_t actual, uint64_t prev,
                 bool hint) {
  AgentSourceEvent ev = {
      .kind = kind,
      .balloon = {.target_known = true,
                  .target_bytes = target,
                  .actual_known = true,
                  .actual_bytes = actual,
                  .hint_supported = true,
                  .free_page_hint_cmd_id = hint ? 0x80000001u : 1,
                  .hint_in_progress = hint},
      .prev_bytes = prev,
  };

  agent_source_emit(fake, &ev);
}

static void emit_simple(AgentSourceEventKind kind, const char *text) {
  AgentSourceEvent ev = {.kind = kind, .text = text};

  agent_source_emit(fake, &ev);
}

static guint history_len(AgentRounds *rounds) {
  return g_queue_get_length((GQueue *)agent_round_history(rounds));
}

static const AgentRoundReport *report_at(AgentRounds *rounds, guint i) {
  return g_queue_peek_nth((GQueue *)agent_round_history(rounds), i);
}

/* Runs the default context until @rounds has @n reports, or @ms pass. */
static gboolean run_until_reports(AgentRounds *rounds, guint n, int ms) {
  int64_t end = g_get_monotonic_time() + ms * 1000;

  while (history_len(rounds) < n && g_get_monotonic_time() < end)
    g_main_context_iteration(NULL, FALSE), g_usleep(1000);
  return history_len(rounds) >= n;
}

static void run_for(int ms) {
  int64_t end = g_get_monotonic_time() + ms * 1000;

  while (g_get_monotonic_time() < end)
    g_main_context_iteration(NULL, FALSE), g_usleep(1000);
}

static void test_controller(void) {
  g_autofree char *root = g_build_filename(proc_fixtures, "guest-stalled-256mib-hog", NULL);
  AgentProcfs *procfs = agent_procfs_new(root); /* MemAvailable 0 */
  AgentRegistry *reg = agent_registry_new(16);
  AgentRounds *rounds = agent_rounds_new(reg, procfs, NULL);
  AgentBalloonPolicy p;
  AgentBalloon *b;
  AgentBalloonStatus st;
  const AgentRoundReport *r;

  agent_balloon_policy_init(&p);
  p.stall_ms = 40;
  p.min_interval_ms = 200; /* room to report progress between rounds */
  p.escalate_delay_ms = 200;
  p.psi_interval_ms = 100000;
  b = agent_balloon_new(rounds, procfs, &p);
  fake = g_malloc0(sizeof(AgentSource));
  agent_source_init(fake, &fake_class, &(AgentSourceEnv){.root = root, .procfs = procfs});
  agent_balloon_add_source(b, fake);
  agent_balloon_start(b);
  CU_ASSERT_EQUAL(agent_balloon_sources(b)->len, 1);

  /* Start-up: the balloon holds its target of 0. */
  {
    AgentSourceEvent ev = {.kind = AGENT_SOURCE_EVENT_TARGET,
                           .initial = true,
                           .balloon = {.target_known = true, .actual_known = true}};

    agent_source_emit(fake, &ev);
  }
  run_for(20);
  CU_ASSERT_EQUAL(history_len(rounds), 0);
  agent_balloon_get_status(b, &st);
  CU_ASSERT_FALSE(st.present); /* a fake is no virtio device */
  CU_ASSERT_STRING_EQUAL(st.state, "idle");
  CU_ASSERT_FALSE(st.has_episode);

  /* The host wants 640 MiB: nothing free beyond the reserve, so a soft
   * round (reason balloon) for all of it. */
  emit(AGENT_SOURCE_EVENT_TARGET, 640 * MiB, 0, 0, false);
  CU_ASSERT_TRUE_FATAL(run_until_reports(rounds, 1, 1000));
  r = report_at(rounds, 0);
  CU_ASSERT_EQUAL(r->level, PROTO_LEVEL_SOFT);
  CU_ASSERT_EQUAL(r->reason, PROTO_REASON_BALLOON);
  CU_ASSERT_EQUAL(r->target_bytes, 640 * MiB);
  CU_ASSERT_EQUAL(r->deadline_ms, 1000);
  agent_balloon_get_status(b, &st);
  CU_ASSERT_TRUE(st.has_episode);
  CU_ASSERT_EQUAL(st.episode.rounds, 1);
  CU_ASSERT_EQUAL(st.episode.soft_rounds, 1);
  CU_ASSERT_EQUAL(st.episode.target_bytes, 640 * MiB);
  CU_ASSERT_TRUE(st.episode.first_round_us >= 0);

  /* The balloon moves and gets there before the next round may start:
   * converged, no hard round. */
  emit(AGENT_SOURCE_EVENT_PROGRESS, 640 * MiB, 300 * MiB, 0, false);
  run_for(20);
  emit(AGENT_SOURCE_EVENT_PROGRESS, 640 * MiB, 640 * MiB, 300 * MiB, false);
  run_for(100);
  CU_ASSERT_EQUAL(history_len(rounds), 1);
  agent_balloon_get_status(b, &st);
  CU_ASSERT_STRING_EQUAL(st.state, "idle");
  CU_ASSERT_TRUE(st.episode.converged_us > 0);
  CU_ASSERT_STRING_EQUAL(st.episode.end_reason ? st.episode.end_reason : "", "converged");

  /* 800 MiB: a new episode. Soft; it frees nothing and leaves the
   * shortfall: hard after min_interval_ms; it frees nothing: give up. */
  emit(AGENT_SOURCE_EVENT_TARGET, 800 * MiB, 640 * MiB, 640 * MiB, false);
  CU_ASSERT_TRUE_FATAL(run_until_reports(rounds, 3, 2000));
  r = report_at(rounds, 1);
  CU_ASSERT_EQUAL(r->level, PROTO_LEVEL_SOFT);
  CU_ASSERT_EQUAL(r->target_bytes, 160 * MiB);
  r = report_at(rounds, 2);
  CU_ASSERT_EQUAL(r->level, PROTO_LEVEL_HARD);
  CU_ASSERT_EQUAL(r->reason, PROTO_REASON_BALLOON);
  CU_ASSERT_EQUAL(r->target_bytes, 160 * MiB);
  CU_ASSERT_EQUAL(r->deadline_ms, 3000);
  run_for(150);
  CU_ASSERT_EQUAL(history_len(rounds), 3); /* gave up: no more */
  agent_balloon_get_status(b, &st);
  CU_ASSERT_TRUE(st.episode.gave_up);
  CU_ASSERT_EQUAL(st.episode.hard_rounds, 1);
  CU_ASSERT_STRING_EQUAL(st.state, "stalled");
  /* Stall lines and OOM kills are counted. */
  emit_simple(AGENT_SOURCE_EVENT_STALL, "virtio_balloon virtio0: Out of puff! Can't get 1 pages");
  emit_simple(AGENT_SOURCE_EVENT_OOM_KILL, "Out of memory: Killed process 210 (hog)");
  agent_balloon_get_status(b, &st);
  CU_ASSERT_EQUAL(st.stalls_seen, 1);
  CU_ASSERT_EQUAL(st.oom_kills, 1);
  CU_ASSERT_EQUAL(st.episode.oom_kills, 1);
  run_for(50);
  CU_ASSERT_EQUAL(history_len(rounds), 3);

  /* The host gives it all back: relief, the episode ends. */
  emit(AGENT_SOURCE_EVENT_TARGET, 0, 700 * MiB, 800 * MiB, false);
  run_for(20);
  agent_balloon_get_status(b, &st);
  CU_ASSERT_EQUAL(st.reliefs, 1);
  CU_ASSERT_STRING_EQUAL(st.state, "deflating");
  CU_ASSERT_STRING_EQUAL(st.episode.end_reason ? st.episode.end_reason : "", "target lowered");
  emit(AGENT_SOURCE_EVENT_PROGRESS, 0, 0, 700 * MiB, false);
  run_for(20);
  CU_ASSERT_EQUAL(history_len(rounds), 3);

  /* Hinting: the soft round comes, the hard one waits for its end. */
  emit(AGENT_SOURCE_EVENT_TARGET, 100 * MiB, 0, 0, true);
  CU_ASSERT_TRUE_FATAL(run_until_reports(rounds, 4, 1000));
  CU_ASSERT_EQUAL(report_at(rounds, 3)->level, PROTO_LEVEL_SOFT);
  run_for(200);
  CU_ASSERT_EQUAL(history_len(rounds), 4);
  emit(AGENT_SOURCE_EVENT_HINT_END, 100 * MiB, 0, 0, false);
  CU_ASSERT_TRUE_FATAL(run_until_reports(rounds, 5, 1000));
  CU_ASSERT_EQUAL(report_at(rounds, 4)->level, PROTO_LEVEL_HARD);
  run_for(50);

  /* The balloon's episode is over (given up): PSI gives a soft round
   * (reason pressure), then is rate-limited. */
  emit(AGENT_SOURCE_EVENT_TARGET, 0, 0, 100 * MiB, false);
  emit_simple(AGENT_SOURCE_EVENT_PRESSURE, "some 150000 1000000");
  CU_ASSERT_TRUE_FATAL(run_until_reports(rounds, 6, 1000));
  r = report_at(rounds, 5);
  CU_ASSERT_EQUAL(r->level, PROTO_LEVEL_SOFT);
  CU_ASSERT_EQUAL(r->reason, PROTO_REASON_PRESSURE);
  CU_ASSERT_EQUAL(r->target_bytes, 64 * MiB);
  emit_simple(AGENT_SOURCE_EVENT_PRESSURE, "some 150000 1000000");
  run_for(50);
  CU_ASSERT_EQUAL(history_len(rounds), 6);

  /* Freed while a round is still queued: the round's end finds no one. */
  emit(AGENT_SOURCE_EVENT_TARGET, 50 * MiB, 0, 0, false);
  agent_balloon_free(b);
  agent_rounds_free(rounds);
  agent_registry_free(reg);
  agent_procfs_free(procfs);
  while (g_main_context_iteration(NULL, FALSE))
    ;
}

/* ---- the controller refreshes its reading before sizing a round ---- */

/* What the fake device holds: the test moves it without an event, as a
 * balloon moves between two polls; a refresh emits it. */
static uint64_t device_target, device_actual;
static guint refreshes;

static void fake_refresh(AgentSource *s) {
  refreshes++;
  emit(AGENT_SOURCE_EVENT_PROGRESS, device_target, device_actual, 0, false);
}

static const AgentSourceClass fake_refresh_class = {
    .name = "fake-balloon",
    .start = fake_start,
    .stop = fake_stop,
    .finalize = fake_finalize,
    .refresh = fake_refresh,
};

static void test_controller_fresh_reading(void) {
  g_autofree char *root = g_build_filename(proc_fixtures, "guest-stalled-256mib-hog", NULL);
  AgentProcfs *procfs = agent_procfs_new(root); /* MemAvailable 0 */
  AgentRegistry *reg = agent_registry_new(16);
  AgentRounds *rounds = agent_rounds_new(reg, procfs, NULL);
  AgentBalloonPolicy p;
  AgentBalloon *b;

  agent_balloon_policy_init(&p); /* escalate_delay_ms 0: hard at the soft round's end */
  p.psi_interval_ms = 100000;
  b = agent_balloon_new(rounds, procfs, &p);
  fake = g_malloc0(sizeof(AgentSource));
  agent_source_init(fake, &fake_refresh_class, &(AgentSourceEnv){.root = root, .procfs = procfs});
  agent_balloon_add_source(b, fake);
  agent_balloon_start(b);

  /* The host wants 800 MiB; the event says the balloon holds 0: soft
   * round for 800 MiB. Meanwhile, unseen by any event, it takes 300. */
  device_target = 800 * MiB;
  device_actual = 300 * MiB;
  refreshes = 0;
  emit(AGENT_SOURCE_EVENT_TARGET, 800 * MiB, 0, 0, false);
  CU_ASSERT_TRUE_FATAL(run_until_reports(rounds, 2, 1000));
  CU_ASSERT_EQUAL(report_at(rounds, 0)->level, PROTO_LEVEL_SOFT);
  CU_ASSERT_EQUAL(report_at(rounds, 0)->target_bytes, 800 * MiB);
  /* The soft round's end looks again: the hard round is for the 500 MiB
   * still missing, not for the 800 of the last event. */
  CU_ASSERT(refreshes >= 1);
  CU_ASSERT_EQUAL(report_at(rounds, 1)->level, PROTO_LEVEL_HARD);
  CU_ASSERT_EQUAL(report_at(rounds, 1)->target_bytes, 500 * MiB);

  agent_balloon_free(b);
  agent_rounds_free(rounds);
  agent_registry_free(reg);
  agent_procfs_free(procfs);
  while (g_main_context_iteration(NULL, FALSE))
    ;
}

/* ---- free page hints: the controller ---- */

static void emit_hint(AgentSourceEventKind kind, uint64_t target, uint64_t actual, uint32_t id,
                      bool in_progress) {
  AgentSourceEvent ev = {
      .kind = kind,
      .balloon = {.target_known = true,
                  .target_bytes = target,
                  .actual_known = true,
                  .actual_bytes = actual,
                  .hint_supported = true,
                  .free_page_hint_cmd_id = id,
                  .hint_in_progress = in_progress},
  };

  agent_source_emit(fake, &ev);
}

/* An application that never answers: each of its rounds runs to its
 * deadline, so that a round is seen running. */
typedef struct {
  int fd[2];
  AgentClient *client;
} Silent;

static void silent_up(Silent *s, AgentRegistry *reg) {
  g_assert(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, s->fd) == 0);
  s->client = agent_registry_add_client(reg, s->fd[0], 42, 0, "silent");
  g_assert(agent_registry_add_shrinker(reg, s->client, 1, "cache", 50, true, 100 * MiB, NULL));
  g_assert(agent_registry_add_shrinker(reg, s->client, 2, "heap", 50, true, 28 * MiB, NULL));
  g_assert(agent_registry_add_shrinker(reg, s->client, 3, "other", 50, false, 0, NULL));
}

static void silent_down(Silent *s, AgentRegistry *reg) {
  agent_registry_remove_client(reg, s->client);
  close(s->fd[0]);
  close(s->fd[1]);
}

static void test_controller_hint(void) {
  g_autofree char *root = g_build_filename(proc_fixtures, "guest-stalled-256mib-hog", NULL);
  AgentProcfs *procfs = agent_procfs_new(root); /* MemAvailable 0 */
  AgentRegistry *reg = agent_registry_new(16);
  AgentRounds *rounds = agent_rounds_new(reg, procfs, NULL);
  AgentBalloonPolicy p;
  AgentBalloon *b;
  AgentBalloonStatus st;
  const AgentRoundReport *r;
  Silent app;

  agent_balloon_policy_init(&p);
  p.stall_ms = 40;
  p.min_interval_ms = 50;
  p.max_rounds = 2;
  p.soft_deadline_ms = 300;
  p.hard_deadline_ms = 300;
  p.hint_deadline_ms = 200;
  p.psi_interval_ms = 100000;
  b = agent_balloon_new(rounds, procfs, &p);
  agent_balloon_set_registry(b, reg);
  fake = g_malloc0(sizeof(AgentSource));
  agent_source_init(fake, &fake_class, &(AgentSourceEnv){.root = root, .procfs = procfs});
  agent_balloon_add_source(b, fake);
  agent_balloon_start(b);
  silent_up(&app, reg);
  {
    AgentSourceEvent ev = {.kind = AGENT_SOURCE_EVENT_TARGET,
                           .initial = true,
                           .balloon = {.target_known = true, .actual_known = true}};

    agent_source_emit(fake, &ev);
  }
  agent_balloon_get_status(b, &st);
  CU_ASSERT_TRUE(st.hint_rounds_on);
  CU_ASSERT_EQUAL(st.hint_pct, 100);
  CU_ASSERT_EQUAL(st.hint_deadline_ms, 200);
  CU_ASSERT_EQUAL(st.hints_seen, 0);
  CU_ASSERT_FALSE(st.has_hint_round);

  /* The balloon's soft round is running when hinting begins: the hint's
   * round comes after it, sized to the estimates (100 + 28 MiB). */
  emit_hint(AGENT_SOURCE_EVENT_TARGET, 640 * MiB, 0, 1, false);
  run_for(30);
  CU_ASSERT_TRUE(agent_round_is_running(rounds));
  CU_ASSERT_EQUAL(history_len(rounds), 0);
  emit_hint(AGENT_SOURCE_EVENT_HINT_START, 640 * MiB, 0, 0x80000001u, true);
  agent_balloon_get_status(b, &st);
  CU_ASSERT_EQUAL(st.hints_seen, 1);
  CU_ASSERT_TRUE(st.hint_round_running);
  CU_ASSERT_EQUAL(st.episode.rounds, 1);
  CU_ASSERT_TRUE_FATAL(run_until_reports(rounds, 2, 3000));
  r = report_at(rounds, 0);
  CU_ASSERT_EQUAL(r->reason, PROTO_REASON_BALLOON);
  CU_ASSERT_EQUAL(r->level, PROTO_LEVEL_SOFT);
  CU_ASSERT_EQUAL(r->target_bytes, 640 * MiB);
  r = report_at(rounds, 1);
  CU_ASSERT_EQUAL(r->reason, PROTO_REASON_MIGRATION);
  CU_ASSERT_EQUAL(r->level, PROTO_LEVEL_SOFT);
  CU_ASSERT_EQUAL(r->target_bytes, 128 * MiB);
  CU_ASSERT_EQUAL(r->deadline_ms, 200);
  agent_balloon_get_status(b, &st);
  CU_ASSERT_EQUAL(st.hint_rounds, 1);
  CU_ASSERT_FALSE(st.hint_round_running);
  CU_ASSERT_TRUE(st.has_hint_round);
  CU_ASSERT_EQUAL(st.last_hint_cmd_id, 0x80000001u);
  CU_ASSERT_EQUAL(st.last_hint_round_id, r->round_id);
  /* The episode knows only its own round. */
  CU_ASSERT_EQUAL(st.episode.rounds, 1);
  CU_ASSERT_EQUAL(st.episode.soft_rounds, 1);
  CU_ASSERT_EQUAL(st.episode.hard_rounds, 0);

  /* Hinting holds the hard round back; the same id brings no second
   * round. */
  emit_hint(AGENT_SOURCE_EVENT_HINT_START, 640 * MiB, 0, 0x80000001u, true);
  run_for(150);
  CU_ASSERT_EQUAL(history_len(rounds), 2);
  agent_balloon_get_status(b, &st);
  CU_ASSERT_EQUAL(st.hints_seen, 1);

  /* The host's next request (a new id after STOP): one more round. */
  emit_hint(AGENT_SOURCE_EVENT_HINT_START, 640 * MiB, 0, 0x80000002u, true);
  CU_ASSERT_TRUE_FATAL(run_until_reports(rounds, 3, 3000));
  CU_ASSERT_EQUAL(report_at(rounds, 2)->reason, PROTO_REASON_MIGRATION);
  agent_balloon_get_status(b, &st);
  CU_ASSERT_EQUAL(st.hints_seen, 2);
  CU_ASSERT_EQUAL(st.hint_rounds, 2);
  CU_ASSERT_EQUAL(st.last_hint_cmd_id, 0x80000002u);

  /* A hint round is running when hinting ends: the balloon's hard round
   * is asked for at once, not held back by it, and runs after it; it is
   * the episode's second round (max_rounds 2): then the episode gives up,
   * as if there had been no hint round. */
  emit_hint(AGENT_SOURCE_EVENT_HINT_START, 640 * MiB, 0, 0x80000003u, true);
  run_for(30);
  agent_balloon_get_status(b, &st);
  CU_ASSERT_TRUE(st.hint_round_running);
  emit_hint(AGENT_SOURCE_EVENT_HINT_END, 640 * MiB, 0, 1, false);
  agent_balloon_get_status(b, &st);
  CU_ASSERT_EQUAL(st.episode.rounds, 2);
  CU_ASSERT_EQUAL(st.episode.hard_rounds, 1);
  CU_ASSERT_TRUE_FATAL(run_until_reports(rounds, 5, 3000));
  r = report_at(rounds, 3);
  CU_ASSERT_EQUAL(r->reason, PROTO_REASON_MIGRATION);
  r = report_at(rounds, 4);
  CU_ASSERT_EQUAL(r->reason, PROTO_REASON_BALLOON);
  CU_ASSERT_EQUAL(r->level, PROTO_LEVEL_HARD);
  CU_ASSERT_EQUAL(r->target_bytes, 640 * MiB);
  run_for(150);
  CU_ASSERT_EQUAL(history_len(rounds), 5);
  agent_balloon_get_status(b, &st);
  CU_ASSERT_TRUE(st.episode.gave_up);
  CU_ASSERT_STRING_EQUAL(st.episode.end_reason ? st.episode.end_reason : "",
                         "the episode's rounds are used up");
  CU_ASSERT_EQUAL(st.episode.claimed_bytes, 0);
  CU_ASSERT_EQUAL(st.hint_rounds, 3);
  CU_ASSERT_EQUAL(st.hints_seen, 3);

  /* Freed while a hint round is queued: its end finds no one. */
  emit_hint(AGENT_SOURCE_EVENT_HINT_START, 640 * MiB, 0, 0x80000004u, true);
  agent_balloon_free(b);
  silent_down(&app, reg);
  agent_rounds_free(rounds);
  agent_registry_free(reg);
  agent_procfs_free(procfs);
  while (g_main_context_iteration(NULL, FALSE))
    ;
}

/* A full round queue delays the hint's round, it does not lose it; off
 * means no round at all. */
static void test_controller_hint_busy(void) {
  g_autofree char *root = g_build_filename(proc_fixtures, "guest-stalled-256mib-hog", NULL);
  AgentProcfs *procfs = agent_procfs_new(root);
  AgentRegistry *reg = agent_registry_new(16);
  AgentRounds *rounds = agent_rounds_new(reg, procfs, &(AgentRoundConfig){.queue_max = 1});
  AgentRoundParams manual = {.target_bytes = MiB,
                             .level = PROTO_LEVEL_SOFT,
                             .deadline_ms = 200,
                             .reason = PROTO_REASON_MANUAL};
  AgentBalloonPolicy p;
  AgentBalloon *b;
  AgentBalloonStatus st;
  Silent app;

  agent_balloon_policy_init(&p);
  p.min_interval_ms = 20;
  p.hint_deadline_ms = 100;
  p.hint_pct = 50;
  b = agent_balloon_new(rounds, procfs, &p);
  agent_balloon_set_registry(b, reg);
  fake = g_malloc0(sizeof(AgentSource));
  agent_source_init(fake, &fake_class, &(AgentSourceEnv){.root = root, .procfs = procfs});
  agent_balloon_add_source(b, fake);
  agent_balloon_start(b);
  silent_up(&app, reg);

  /* One round runs, one waits: the queue is full. */
  CU_ASSERT_TRUE(agent_round_request(rounds, &manual, NULL, NULL, NULL, NULL));
  run_for(20);
  CU_ASSERT_TRUE(agent_round_is_running(rounds));
  CU_ASSERT_TRUE(agent_round_request(rounds, &manual, NULL, NULL, NULL, NULL));
  emit_hint(AGENT_SOURCE_EVENT_HINT_START, 0, 0, 0x80000007u, true);
  agent_balloon_get_status(b, &st);
  CU_ASSERT_EQUAL(st.hints_seen, 1);
  CU_ASSERT_FALSE(st.hint_round_running);
  CU_ASSERT_TRUE_FATAL(run_until_reports(rounds, 3, 3000));
  CU_ASSERT_EQUAL(report_at(rounds, 0)->reason, PROTO_REASON_MANUAL);
  CU_ASSERT_EQUAL(report_at(rounds, 1)->reason, PROTO_REASON_MANUAL);
  CU_ASSERT_EQUAL(report_at(rounds, 2)->reason, PROTO_REASON_MIGRATION);
  CU_ASSERT_EQUAL(report_at(rounds, 2)->target_bytes, 64 * MiB); /* 50% of 128 MiB */
  run_for(100);
  CU_ASSERT_EQUAL(history_len(rounds), 3);
  agent_balloon_free(b);

  /* hint-rounds=off: seen, no round. */
  p.hint_off = TRUE;
  b = agent_balloon_new(rounds, procfs, &p);
  fake = g_malloc0(sizeof(AgentSource));
  agent_source_init(fake, &fake_class, &(AgentSourceEnv){.root = root, .procfs = procfs});
  agent_balloon_add_source(b, fake);
  agent_balloon_start(b);
  emit_hint(AGENT_SOURCE_EVENT_HINT_START, 0, 0, 0x80000008u, true);
  run_for(100);
  CU_ASSERT_EQUAL(history_len(rounds), 3);
  agent_balloon_get_status(b, &st);
  CU_ASSERT_FALSE(st.hint_rounds_on);
  CU_ASSERT_EQUAL(st.hint_pct, 0);
  CU_ASSERT_EQUAL(st.hints_seen, 1);
  CU_ASSERT_EQUAL(st.hint_rounds, 0);

  agent_balloon_free(b);
  silent_down(&app, reg);
  agent_rounds_free(rounds);
  agent_registry_free(reg);
  agent_procfs_free(procfs);
  while (g_main_context_iteration(NULL, FALSE))
    ;
}

/* ---- free page hints: the virtio source and the controller ---- */

/* Copies the directory @src into @dst. */
static void copy_tree(const char *src, const char *dst) {
  g_autoptr(GDir) dir = g_dir_open(src, 0, NULL);
  const char *name;

  g_mkdir_with_parents(dst, 0755);
  while (dir && (name = g_dir_read_name(dir))) {
    g_autofree char *from = g_build_filename(src, name, NULL);
    g_autofree char *to = g_build_filename(dst, name, NULL);
    g_autofree char *data = NULL;
    gsize len;

    if (g_file_test(from, G_FILE_TEST_IS_DIR))
      copy_tree(from, to);
    else if (g_file_get_contents(from, &data, &len, NULL))
      g_file_set_contents(to, data, (gssize)len, NULL);
  }
}

static void remove_tree(const char *path) {
  g_autoptr(GDir) dir = g_dir_open(path, 0, NULL);
  const char *name;

  while (dir && (name = g_dir_read_name(dir))) {
    g_autofree char *child = g_build_filename(path, name, NULL);

    if (g_file_test(child, G_FILE_TEST_IS_DIR) && !g_file_test(child, G_FILE_TEST_IS_SYMLINK))
      remove_tree(child);
    else
      g_unlink(child);
  }
  g_rmdir(path);
}

/* The captured config file, a plain file in the copy, answers every read
 * of the PCI_CFG window with the 4 bytes at pci_cfg_data: num_pages,
 * actual and the hint command id all read @v. (As test-virtio-pci.c
 * does.) In place: the source keeps the file open. */
static void set_window_data(const char *config, guint32 v) {
  int fd = open(config, O_WRONLY);

  g_assert(fd >= 0);
  v = GUINT32_TO_LE(v);
  g_assert(pwrite(fd, &v, 4, 0x84 + 16) == 4);
  close(fd);
}

static guint migration_rounds(AgentRounds *rounds) {
  guint n = 0;

  for (guint i = 0; i < history_len(rounds); i++)
    n += report_at(rounds, i)->reason == PROTO_REASON_MIGRATION;
  return n;
}

static void test_source_hint_ids(void) {
  g_autofree char *src = g_build_filename(captured, "idle-free-page-hint-reporting", "root", NULL);
  g_autofree char *root = g_dir_make_tmp("shrinkd-hint-XXXXXX", NULL);
  g_autofree char *config = g_build_filename(root, "sys/bus/pci/devices/0000:00:02.0/config", NULL);
  AgentProcfs *procfs;
  AgentRegistry *reg = agent_registry_new(16);
  AgentRounds *rounds;
  AgentSourceEnv env;
  AgentVirtioSourceConfig vc = {.events = AGENT_VIRTIO_EVENTS_POLL,
                                .poll_fast_ms = 2,
                                .poll_moving_max_ms = 5,
                                .poll_idle_ms = 5};
  AgentBalloon *b;
  AgentBalloonStatus st;

  copy_tree(src, root);
  set_window_data(config, 0);
  procfs = agent_procfs_new(root);
  env = (AgentSourceEnv){.root = root, .procfs = procfs};
  rounds = agent_rounds_new(reg, procfs, NULL);
  b = agent_balloon_new(rounds, procfs, NULL);
  agent_balloon_set_registry(b, reg);
  agent_balloon_add_source(b, agent_source_virtio_new(&env, &vc));
  agent_balloon_start(b);
  agent_balloon_get_status(b, &st);
  CU_ASSERT_TRUE_FATAL(st.present);
  CU_ASSERT_TRUE(st.virtio.reading.hint_supported);
  CU_ASSERT_FALSE(st.virtio.reading.hint_in_progress);

  /* A request (an active id): one round, no estimates: the reserve. */
  set_window_data(config, 0x80000002u);
  run_for(60);
  agent_balloon_get_status(b, &st);
  CU_ASSERT_TRUE(st.virtio.reading.hint_in_progress);
  CU_ASSERT_EQUAL(st.hints_seen, 1);
  CU_ASSERT_EQUAL(migration_rounds(rounds), 1);
  CU_ASSERT_EQUAL(report_at(rounds, 0)->target_bytes, 64 * MiB);
  /* STOP: still hinting (the driver holds the pages), no new request. */
  set_window_data(config, 0);
  run_for(60);
  agent_balloon_get_status(b, &st);
  CU_ASSERT_TRUE(st.virtio.reading.hint_in_progress);
  CU_ASSERT_EQUAL(st.hints_seen, 1);
  CU_ASSERT_EQUAL(migration_rounds(rounds), 1);
  /* The next pass's id, with no DONE between: a new request. */
  set_window_data(config, 0x80000003u);
  run_for(60);
  agent_balloon_get_status(b, &st);
  CU_ASSERT_EQUAL(st.hints_seen, 2);
  CU_ASSERT_EQUAL(migration_rounds(rounds), 2);
  CU_ASSERT_EQUAL(st.last_hint_cmd_id, 0x80000003u);
  /* DONE ends it; the same id again is no new request. */
  set_window_data(config, 1);
  run_for(60);
  agent_balloon_get_status(b, &st);
  CU_ASSERT_FALSE(st.virtio.reading.hint_in_progress);
  set_window_data(config, 0x80000003u);
  run_for(60);
  agent_balloon_get_status(b, &st);
  CU_ASSERT_TRUE(st.virtio.reading.hint_in_progress);
  CU_ASSERT_EQUAL(st.hints_seen, 2);
  CU_ASSERT_EQUAL(migration_rounds(rounds), 2);
  CU_ASSERT_EQUAL(st.hint_rounds, 2);

  agent_balloon_free(b);
  agent_rounds_free(rounds);
  agent_registry_free(reg);
  agent_procfs_free(procfs);
  while (g_main_context_iteration(NULL, FALSE))
    ;
  remove_tree(root);
}

static void emit_blind(uint64_t actual, uint64_t prev) {
  AgentSourceEvent ev = {
      .kind = AGENT_SOURCE_EVENT_PROGRESS,
      .balloon = {.actual_known = true, .actual_bytes = actual},
      .prev_bytes = prev,
  };

  agent_source_emit(fake, &ev);
}

/* Config space unreadable: only the balloon's size and stall lines. */
static void test_controller_blind(void) {
  g_autofree char *root = g_build_filename(proc_fixtures, "guest-stalled-256mib-hog", NULL);
  AgentProcfs *procfs = agent_procfs_new(root);
  AgentRegistry *reg = agent_registry_new(16);
  AgentRounds *rounds = agent_rounds_new(reg, procfs, NULL);
  AgentBalloonPolicy p;
  AgentBalloon *b;
  AgentBalloonStatus st;

  agent_balloon_policy_init(&p);
  p.stall_ms = 150;
  p.min_interval_ms = 10;
  b = agent_balloon_new(rounds, procfs, &p);
  fake = g_malloc0(sizeof(AgentSource));
  agent_source_init(fake, &fake_class, &(AgentSourceEnv){.root = root, .procfs = procfs});
  agent_balloon_add_source(b, fake);
  agent_balloon_start(b);

  /* It grows: an episode, but no round while it moves... */
  emit_blind(10 * MiB, 0);
  run_for(10);
  emit_blind(50 * MiB, 10 * MiB);
  agent_balloon_get_status(b, &st);
  CU_ASSERT_TRUE(st.has_episode);
  CU_ASSERT_STRING_EQUAL(st.state, "inflating");
  run_for(10);
  CU_ASSERT_EQUAL(history_len(rounds), 0);
  /* ...then it stops with MemAvailable at 0: a hard round of one step at
   * once (a blind stall means free memory is gone). It claims nothing,
   * with nobody registered, and every request was answered: give up. */
  CU_ASSERT_TRUE_FATAL(run_until_reports(rounds, 1, 2000));
  CU_ASSERT_EQUAL(report_at(rounds, 0)->level, PROTO_LEVEL_HARD);
  CU_ASSERT_EQUAL(report_at(rounds, 0)->target_bytes, 64 * MiB);
  run_for(100);
  CU_ASSERT_EQUAL(history_len(rounds), 1);
  agent_balloon_get_status(b, &st);
  CU_ASSERT_TRUE(st.episode.gave_up);
  CU_ASSERT_EQUAL(st.episode.target_bytes, 0);

  /* It shrinks: relief, once. */
  emit_blind(40 * MiB, 50 * MiB);
  run_for(10);
  emit_blind(0, 40 * MiB);
  run_for(10);
  agent_balloon_get_status(b, &st);
  CU_ASSERT_EQUAL(st.reliefs, 1);
  CU_ASSERT_STRING_EQUAL(st.episode.end_reason ? st.episode.end_reason : "", "the balloon shrank");

  /* An "Out of puff" line alone starts an episode too. */
  emit_simple(AGENT_SOURCE_EVENT_STALL, "virtio_balloon virtio0: Out of puff! Can't get 1 pages");
  CU_ASSERT_TRUE_FATAL(run_until_reports(rounds, 2, 1000));
  CU_ASSERT_EQUAL(report_at(rounds, 1)->level, PROTO_LEVEL_HARD);
  agent_balloon_get_status(b, &st);
  CU_ASSERT_EQUAL(st.stalls_seen, 1);

  agent_balloon_free(b);
  agent_rounds_free(rounds);
  agent_registry_free(reg);
  agent_procfs_free(procfs);
  while (g_main_context_iteration(NULL, FALSE))
    ;
}

static void test_psi_source(void) {
  g_autofree char *empty = g_dir_make_tmp("shrinkd-psi-XXXXXX", NULL);
  AgentSourceEnv env = {.root = empty};
  AgentSourceStatus st;
  AgentSource *s;

  /* A kernel without PSI. */
  s = agent_source_psi_new(&env, AGENT_PSI_TRIGGER_DEFAULT);
  agent_source_start(s);
  agent_source_get_status(s, &st);
  CU_ASSERT_STRING_EQUAL(st.name, "psi");
  CU_ASSERT_FALSE(st.active);
  CU_ASSERT_PTR_NOT_NULL(strstr(st.reason, "without PSI"));
  agent_source_free(s);
  /* Off. */
  s = agent_source_psi_new(&env, "off");
  agent_source_start(s);
  agent_source_get_status(s, &st);
  CU_ASSERT_FALSE(st.active);
  CU_ASSERT_PTR_NOT_NULL(strstr(st.reason, "disabled"));
  agent_source_free(s);
  g_rmdir(empty);
}

/* ---- settings ---- */

static gboolean load_text(AgentSettings *s, const char *text, GError **error) {
  g_autofree char *path = NULL;
  int fd = g_file_open_tmp("shrinkd-conf-XXXXXX", &path, NULL);
  gboolean ok;

  g_assert(fd >= 0);
  close(fd);
  g_assert(g_file_set_contents(path, text, -1, NULL));
  ok = agent_settings_load_file(s, path, TRUE, error);
  g_unlink(path);
  return ok;
}

static void test_settings(void) {
  AgentSettings s;
  g_autoptr(GError) error = NULL;

  agent_settings_init(&s);
  CU_ASSERT_TRUE(s.balloon);
  CU_ASSERT_STRING_EQUAL(s.balloon_events, "auto");
  CU_ASSERT_STRING_EQUAL(s.kmsg_path, "/dev/kmsg");
  CU_ASSERT_STRING_EQUAL(s.psi_trigger, AGENT_PSI_TRIGGER_DEFAULT);
  CU_ASSERT_EQUAL(s.balloon_reserve_mib, 64);
  CU_ASSERT_EQUAL(s.balloon_stall_ms, AGENT_BALLOON_STALL_MS_DEFAULT);
  CU_ASSERT_EQUAL(s.balloon_hard_deadline_ms, AGENT_BALLOON_HARD_DEADLINE_DEFAULT);
  CU_ASSERT_EQUAL(s.poll_idle_ms, AGENT_VIRTIO_POLL_IDLE_MS_DEFAULT);

  CU_ASSERT_TRUE(load_text(&s,
                           "[shrinkd]\nballoon=off\nballoon_events=poll\nballoon_reserve_mib=32\n"
                           "balloon_stall_ms=500\nballoon_max_rounds=3\npoll_idle_ms=1000\n"
                           "kmsg=/tmp/kmsg.fifo\npsi_trigger=some 300000 2000000\n",
                           &error));
  CU_ASSERT_FALSE(s.balloon);
  CU_ASSERT_STRING_EQUAL(s.balloon_events, "poll");
  CU_ASSERT_EQUAL(s.balloon_reserve_mib, 32);
  CU_ASSERT_EQUAL(s.balloon_stall_ms, 500);
  CU_ASSERT_EQUAL(s.balloon_max_rounds, 3);
  CU_ASSERT_EQUAL(s.poll_idle_ms, 1000);
  CU_ASSERT_STRING_EQUAL(s.kmsg_path, "/tmp/kmsg.fifo");
  CU_ASSERT_STRING_EQUAL(s.psi_trigger, "some 300000 2000000");

  /* Refused, naming the key; the settings stay as they were. */
  CU_ASSERT_FALSE(load_text(&s, "[shrinkd]\nballoon_events=sometimes\n", &error));
  CU_ASSERT_PTR_NOT_NULL(error && strstr(error->message, "balloon_events"));
  g_clear_error(&error);
  CU_ASSERT_FALSE(load_text(&s, "[shrinkd]\nballoon=maybe\n", &error));
  CU_ASSERT_PTR_NOT_NULL(error && strstr(error->message, "balloon"));
  g_clear_error(&error);
  CU_ASSERT_FALSE(load_text(&s, "[shrinkd]\nkmsg=dev/kmsg\n", &error));
  CU_ASSERT_PTR_NOT_NULL(error && strstr(error->message, "kmsg"));
  g_clear_error(&error);
  CU_ASSERT_FALSE(load_text(&s, "[shrinkd]\nballoon_hard_deadline_ms=9000\n", &error));
  CU_ASSERT_PTR_NOT_NULL(error && strstr(error->message, "balloon_hard_deadline_ms"));
  g_clear_error(&error);
  CU_ASSERT_FALSE(load_text(&s, "[shrinkd]\nballoon_stall_ms=0\n", &error));
  g_clear_error(&error);
  CU_ASSERT_STRING_EQUAL(s.balloon_events, "poll");
  CU_ASSERT_EQUAL(s.balloon_stall_ms, 500);
  CU_ASSERT_TRUE(agent_settings_valid_balloon_events("kprobe-tracefs"));
  CU_ASSERT_FALSE(agent_settings_valid_balloon_events("kprobe"));
  agent_settings_clear(&s);
}

static void test_settings_hint_rounds(void) {
  static const struct {
    const char *value;
    gboolean ok;
    uint32_t pct;
  } rows[] = {
      {"off", TRUE, 0},   {"soft", TRUE, 100}, {"1", TRUE, 1},     {"100", TRUE, 100},
      {"25", TRUE, 25},   {"0", FALSE, 0},     {"101", FALSE, 0},  {"+5", FALSE, 0},
      {"-5", FALSE, 0},   {"5%", FALSE, 0},    {" 5", FALSE, 0},   {"", FALSE, 0},
      {"hard", FALSE, 0}, {"Soft", FALSE, 0},  {"0x10", FALSE, 0}, {NULL, FALSE, 0},
  };
  AgentSettings s;
  g_autoptr(GError) error = NULL;

  for (size_t i = 0; i < G_N_ELEMENTS(rows); i++) {
    uint32_t pct = 77;
    gboolean ok = agent_settings_parse_hint_rounds(rows[i].value, &pct);

    if (ok != rows[i].ok)
      printf("\n    \"%s\": %s", rows[i].value ? rows[i].value : "(null)",
             ok ? "taken" : "refused");
    CU_ASSERT_EQUAL(ok, rows[i].ok);
    CU_ASSERT_EQUAL(pct, rows[i].ok ? rows[i].pct : 77);
  }

  agent_settings_init(&s);
  CU_ASSERT_EQUAL(s.hint_rounds_pct, 100); /* soft */
  CU_ASSERT_TRUE(load_text(&s, "[shrinkd]\nhint_rounds=off\n", &error));
  CU_ASSERT_EQUAL(s.hint_rounds_pct, 0);
  CU_ASSERT_TRUE(load_text(&s, "[shrinkd]\nhint_rounds = 40 \n", &error));
  CU_ASSERT_EQUAL(s.hint_rounds_pct, 40);
  CU_ASSERT_FALSE(load_text(&s, "[shrinkd]\nhint_rounds=250\n", &error));
  CU_ASSERT_PTR_NOT_NULL(error && strstr(error->message, "hint_rounds"));
  g_clear_error(&error);
  CU_ASSERT_EQUAL(s.hint_rounds_pct, 40);
  CU_ASSERT_TRUE(load_text(&s, "[shrinkd]\nhint_rounds=soft\n", &error));
  CU_ASSERT_EQUAL(s.hint_rounds_pct, 100);
  agent_settings_clear(&s);
}

int main(int argc, char **argv) {
  CU_pSuite s;

  captured = argc > 1 ? argv[1] : g_getenv("SHRINKD_TEST_CAPTURED");
  proc_fixtures = argc > 2 ? argv[2] : g_getenv("SHRINKD_TEST_PROC");
  if (!captured || !proc_fixtures) {
    fprintf(stderr,
            "usage: %s CAPTURED_DIR PROC_DIR (or SHRINKD_TEST_CAPTURED, "
            "SHRINKD_TEST_PROC)\n",
            argv[0]);
    return 2;
  }
  g_log_set_always_fatal(G_LOG_FATAL_MASK);
  agent_balloon_policy_init(&policy);
  if (CU_initialize_registry() != CUE_SUCCESS)
    return 1;
  s = CU_add_suite("balloon", NULL, NULL);
  CU_add_test(s, "defaults", test_defaults);
  CU_add_test(s, "target drop: soft round sized to the shortfall", test_target_drop_soft);
  CU_add_test(s, "zero shortfall: no round until a stall", test_zero_shortfall);
  CU_add_test(s, "no progress: hard, bounded, rate-limited", test_escalation);
  CU_add_test(s, "converged, running, no episode", test_converged_and_idle);
  CU_add_test(s, "target rises: relief", test_relief);
  CU_add_test(s, "free page hinting: no hard round", test_hint);
  CU_add_test(s, "target unknown: stall lines only", test_blind);
  CU_add_test(s, "PSI: soft, rate-limited", test_pressure);
  CU_add_test(s, "hints: the table", test_hint_table);
  CU_add_test(s, "hints: never hard, apart from the episode, the size", test_hint_never_hard);
  CU_add_test(s, "hints: the sum of the estimates", test_hint_estimates);
  CU_add_test(s, "controller with a fake source and real rounds", test_controller);
  CU_add_test(s, "controller without a known target", test_controller_blind);
  CU_add_test(s, "controller: a round's end sizes the next on a fresh reading",
              test_controller_fresh_reading);
  CU_add_test(s, "controller: one hint round per id, after the balloon's", test_controller_hint);
  CU_add_test(s, "controller: a full queue delays a hint round; off", test_controller_hint_busy);
  CU_add_test(s, "virtio source: every new hint id is a request", test_source_hint_ids);
  CU_add_test(s, "psi source: absent, off", test_psi_source);
  CU_add_test(s, "settings: the balloon's keys", test_settings);
  CU_add_test(s, "settings: hint_rounds", test_settings_hint_rounds);
  return cunit_run_all();
}
