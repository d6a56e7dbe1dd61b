/* SPDX-License-Identifier: MIT */
/*
 * The setmem state machine over a fake backend and a fake agent on a fake
 * clock (no sockets, no sleeping): prepare then balloon then follow; a
 * stalled balloon; no agent (warning, reactive path); --no-agent;
 * --require-agent; agent errors; growing; limits; a guest that is paused or
 * gone. Then what the reports make of a prepare answer.
 */
#include "cunit-run.h"
#include <string.h>

#include "report.h"
#include "setmem.h"
#include "vs-fakes.h"
#include "vs-error.h"

#define MiB (G_GUINT64_CONSTANT(1) << 20)

/* ---- the fakes ---- */

typedef struct {
  VsBackend parent;
  gint64 now_us;
  /* The balloon: moves from actual towards target at rate bytes per
   * second once set, and cannot go below stall_at. */
  double actual;
  guint64 target, max, stall_at;
  double rate;
  gint64 set_at_us;
  double set_from;
  const char *state;
  gboolean fail_set, fail_memory_after_set;
  FakeGuestAgent guest; /* the guest agent: its behaviour, what it saw */
  GPtrArray *calls; /* "state", "memory", "open-agent", "prepare", "set" */
  guint progress_calls;
  guint64 last_progress_actual;
  GPtrArray *warnings_seen;
} Fake;

static void record(Fake *f, const char *what) {
  g_ptr_array_add(f->calls, g_strdup(what));
}

static double balloon_now(Fake *f) {
  double moved, want;

  if (f->set_at_us < 0)
    return f->actual;
  moved = f->rate * (double)(f->now_us - f->set_at_us) / 1e6;
  want = (double)MAX(f->target, f->stall_at);
  if (f->set_from > (double)f->target)
    return MAX(f->set_from - moved, MIN(want, f->set_from));
  return MIN(f->set_from + moved, (double)f->target);
}

static gboolean fake_get_memory(VsBackend *self, VsMemory *out, GError **error) {
  Fake *f = (Fake *)self;

  record(f, "memory");
  if (f->fail_memory_after_set && f->set_at_us >= 0) {
    g_set_error_literal(error, VS_ERROR, VS_ERROR_FAILED, "domain is gone");
    return FALSE;
  }
  out->actual_bytes = (guint64)balloon_now(f);
  out->max_bytes = f->max;
  return TRUE;
}

static gboolean fake_set_memory(VsBackend *self, guint64 target_bytes, GError **error) {
  Fake *f = (Fake *)self;

  record(f, "set");
  f->now_us += 3000; /* the hypervisor takes 3 ms */
  if (f->fail_set) {
    g_set_error_literal(error, VS_ERROR, VS_ERROR_FAILED, "cannot set the balloon: refused");
    return FALSE;
  }
  f->set_from = balloon_now(f);
  f->target = target_bytes;
  f->set_at_us = f->now_us;
  return TRUE;
}

static gboolean fake_get_state(VsBackend *self, gboolean *running, char **state, GError **error) {
  Fake *f = (Fake *)self;

  record(f, "state");
  *running = strcmp(f->state, "running") == 0;
  *state = g_strdup(f->state);
  return TRUE;
}

static JsonNode *prepare_answer_for(guint64 new_size) {
  g_autoptr(JsonParser) p = json_parser_new();
  g_autofree char *text = g_strdup_printf(
      "{\"current_size_bytes\": 1073741824, \"new_size_bytes\": %" G_GUINT64_FORMAT ","
      " \"needed_bytes\": 300000000, \"free_bytes\": 100000000, \"freed_bytes\": 310000000,"
      " \"ready\": true, \"rounds\": ["
      "  {\"round_id\": 1, \"level\": \"soft\", \"requests\": ["
      "    {\"pid\": 10, \"client\": \"cache\", \"shrinker\": \"lru\", \"asked_bytes\": 100,"
      "     \"freed_bytes\": 90, \"missed\": false},"
      "    {\"pid\": 20, \"client\": \"db\", \"shrinker\": \"pool\", \"asked_bytes\": 50,"
      "     \"freed_bytes\": 0, \"missed\": true}]},"
      "  {\"round_id\": 2, \"level\": \"hard\", \"requests\": ["
      "    {\"pid\": 10, \"client\": \"cache\", \"shrinker\": \"arena\", \"asked_bytes\": 10,"
      "     \"freed_bytes\": 12},"
      "    {\"pid\": 10, \"client\": \"cache\", \"shrinker\": \"lru\", \"asked_bytes\": 5,"
      "     \"freed_bytes\": 5},"
      "    {\"pid\": 11, \"client\": \"cache\", \"shrinker\": \"lru\", \"asked_bytes\": 1,"
      "     \"freed_bytes\": 1}]}]}",
      new_size);

  g_assert(json_parser_load_from_data(p, text, -1, NULL));
  return json_parser_steal_root(p);
}

/* The fake agent's answer to shrinkd-prepare: for the new size asked. */
static JsonNode *prepare_answer(JsonObject *arguments) {
  return prepare_answer_for((guint64)json_object_get_int_member(arguments, "new_size_bytes"));
}

static VsAgent *fake_open_agent(VsBackend *self, guint timeout_ms, GError **error) {
  return fake_guest_agent_open(&((Fake *)self)->guest, timeout_ms, error);
}

static void fake_free(VsBackend *self) {}

static const VsBackendOps fake_ops = {fake_get_memory, fake_set_memory, fake_get_state,
                                      fake_open_agent, fake_free};

static gint64 fake_now(gpointer data) {
  return ((Fake *)data)->now_us;
}

static void fake_sleep(gpointer data, gint64 us) {
  ((Fake *)data)->now_us += us;
}

static void fake_progress(const VsProgress *p, gpointer data) {
  Fake *f = data;

  CU_ASSERT_EQUAL(p->target_bytes, f->target);
  CU_ASSERT(p->elapsed_us >= 0);
  f->progress_calls++;
  f->last_progress_actual = p->actual_bytes;
}

static void fake_warning(const char *message, gpointer data) {
  g_ptr_array_add(((Fake *)data)->warnings_seen, g_strdup(message));
}

static void fake_init(Fake *f) {
  *f = (Fake){
      .parent = {.ops = &fake_ops, .name = NULL},
      .now_us = 1000000,
      .actual = 1024.0 * MiB,
      .target = 1024 * MiB,
      .max = 1024 * MiB,
      .rate = 512.0 * MiB, /* per second */
      .set_at_us = -1,
      .state = "running",
      .calls = g_ptr_array_new_with_free_func(g_free),
      .guest = {.command = "shrinkd-prepare", .answer_us = 250000, .answer = prepare_answer},
      .warnings_seen = g_ptr_array_new_with_free_func(g_free),
  };
  f->guest.now_us = &f->now_us;
  f->guest.calls = f->calls;
}

static void fake_clear(Fake *f) {
  g_ptr_array_unref(f->calls);
  g_ptr_array_unref(f->warnings_seen);
  fake_guest_agent_clear(&f->guest);
}

static VsClock fake_clock;

/* Runs setmem to @target on @f with @mode; the caller clears @r. */
static void run(Fake *f, guint64 target, VsAgentMode mode, VsSetmemResult *r) {
  VsSetmemOptions o;

  vs_setmem_options_init(&o, target);
  o.agent_mode = mode;
  o.timeout_ms = 5000;
  o.progress = fake_progress;
  o.warning = fake_warning;
  o.data = f;
  fake_clock = (VsClock){fake_now, fake_sleep, f};
  o.clock = &fake_clock;
  f->parent.name = (char *)"domain 'fake'";
  vs_setmem_run(&f->parent, &o, r);
}

/* The calls other than "memory" and "state", joined with spaces. */
static char *calls(Fake *f) {
  static const char *const skip[] = {"memory", "state", NULL};

  return fake_calls_text(f->calls, skip);
}

static gboolean has_warning(VsSetmemResult *r, const char *words) {
  return fake_has_warning(r->warnings, words);
}

/* ---- the state machine ---- */

static void test_prepare_then_balloon_reaches(void) {
  Fake f;
  VsSetmemResult r;
  g_autofree char *seq = NULL;

  fake_init(&f);
  run(&f, 384 * MiB, VS_AGENT_AUTO, &r);
  seq = calls(&f);
  CU_ASSERT_STRING_EQUAL(seq, "open-agent shrinkd-prepare set");
  CU_ASSERT_EQUAL(r.outcome, VS_SETMEM_REACHED);
  CU_ASSERT_EQUAL(vs_setmem_exit_code(&r), 0);
  CU_ASSERT_PTR_NULL(r.error);
  CU_ASSERT(r.agent_used);
  CU_ASSERT_PTR_NULL(r.agent_note);
  CU_ASSERT_PTR_NOT_NULL(r.prepare);
  CU_ASSERT_EQUAL(r.warnings->len, 0);
  CU_ASSERT_EQUAL(f.warnings_seen->len, 0);
  CU_ASSERT_EQUAL(r.asked_bytes, 384 * MiB);
  CU_ASSERT_EQUAL(r.initial_bytes, 1024 * MiB);
  CU_ASSERT(r.reached_bytes <= 385 * MiB && r.reached_bytes >= 383 * MiB);
  CU_ASSERT_EQUAL(r.max_bytes, 1024 * MiB);
  /* The agent was told the new size and the deadline, and given the
   * deadline plus the margin to answer. */
  CU_ASSERT_EQUAL(json_object_get_int_member(f.guest.args, "new_size_bytes"), 384 * MiB);
  CU_ASSERT_EQUAL(json_object_get_int_member(f.guest.args, "deadline_ms"), 4000);
  CU_ASSERT_EQUAL(f.guest.call_timeout_ms, 4000 + VS_SETMEM_PREPARE_MARGIN_MS);
  CU_ASSERT_EQUAL(f.guest.open_timeout_ms, VS_SETMEM_DEFAULT_AGENT_TIMEOUT_MS);
  /* Phases on the fake clock: 250 ms to prepare, 3 ms to set, 640 MiB at
   * 512 MiB/s = 1.25 s to follow (polls of 100 ms: 1.2-1.3 s). */
  CU_ASSERT_EQUAL(r.prepare_us, 250000);
  CU_ASSERT_EQUAL(r.balloon_us, 3000);
  CU_ASSERT(r.follow_us >= 1200000 && r.follow_us <= 1300000);
  CU_ASSERT_EQUAL(r.total_us, r.prepare_us + r.balloon_us + r.follow_us);
  CU_ASSERT(f.progress_calls >= 12);
  CU_ASSERT_EQUAL(f.last_progress_actual, r.reached_bytes);
  vs_setmem_result_clear(&r);
  fake_clear(&f);
}

static void test_balloon_stalls_partial(void) {
  Fake f;
  VsSetmemResult r;

  fake_init(&f);
  f.stall_at = 700 * MiB;
  run(&f, 384 * MiB, VS_AGENT_AUTO, &r);
  CU_ASSERT_EQUAL(r.outcome, VS_SETMEM_PARTIAL);
  CU_ASSERT_EQUAL(vs_setmem_exit_code(&r), 2);
  CU_ASSERT_PTR_NULL(r.error);
  CU_ASSERT_EQUAL(r.reached_bytes, 700 * MiB);
  /* The whole timeout, and not much more. */
  CU_ASSERT(r.follow_us >= 5000000 && r.follow_us < 5000000 + 100000);
  vs_setmem_result_clear(&r);
  fake_clear(&f);
}

static void test_no_agent_warns_and_goes_reactive(void) {
  Fake f;
  VsSetmemResult r;
  g_autofree char *seq = NULL;

  fake_init(&f);
  f.guest.behaviour = AGENT_ABSENT;
  run(&f, 384 * MiB, VS_AGENT_AUTO, &r);
  seq = calls(&f);
  CU_ASSERT_STRING_EQUAL(seq, "open-agent set");
  CU_ASSERT_EQUAL(r.outcome, VS_SETMEM_REACHED);
  CU_ASSERT_FALSE(r.agent_used);
  CU_ASSERT_PTR_NULL(r.prepare);
  CU_ASSERT_EQUAL(r.warnings->len, 1);
  CU_ASSERT(has_warning(&r, "no guest agent: cannot connect to the guest agent channel at /fake"));
  CU_ASSERT(has_warning(&r, "reactive path"));
  /* The callback saw it as it happened. */
  CU_ASSERT_EQUAL(f.warnings_seen->len, 1);
  CU_ASSERT_STRING_EQUAL(g_ptr_array_index(f.warnings_seen, 0), g_ptr_array_index(r.warnings, 0));
  CU_ASSERT_PTR_NOT_NULL(r.agent_note && strstr(r.agent_note, "guest-sync-delimited"));
  CU_ASSERT_EQUAL(r.prepare_us, (gint64)VS_SETMEM_DEFAULT_AGENT_TIMEOUT_MS * 1000);
  vs_setmem_result_clear(&r);
  fake_clear(&f);
}

static void test_no_agent_option(void) {
  Fake f;
  VsSetmemResult r;
  g_autofree char *seq = NULL;

  fake_init(&f);
  run(&f, 384 * MiB, VS_AGENT_NONE, &r);
  seq = calls(&f);
  CU_ASSERT_STRING_EQUAL(seq, "set");
  CU_ASSERT_EQUAL(r.outcome, VS_SETMEM_REACHED);
  CU_ASSERT_EQUAL(r.warnings->len, 0);
  CU_ASSERT_STRING_EQUAL(r.agent_note, "not asked (--no-agent)");
  CU_ASSERT_EQUAL(r.prepare_us, -1);
  vs_setmem_result_clear(&r);
  fake_clear(&f);
}

static void test_required_agent(void) {
  static const AgentBehaviour bad[] = {AGENT_ABSENT, AGENT_BUSY, AGENT_TIMEOUT, AGENT_NOT_OBJECT};

  for (guint i = 0; i < G_N_ELEMENTS(bad); i++) {
    Fake f;
    VsSetmemResult r;
    g_autofree char *seq = NULL;

    fake_init(&f);
    f.guest.behaviour = bad[i];
    run(&f, 384 * MiB, VS_AGENT_REQUIRED, &r);
    seq = calls(&f);
    /* Failed, and the balloon was never touched. */
    CU_ASSERT_PTR_NULL(strstr(seq, "set"));
    CU_ASSERT_EQUAL(r.outcome, VS_SETMEM_FAILED);
    CU_ASSERT_EQUAL(vs_setmem_exit_code(&r), 1);
    CU_ASSERT_PTR_NOT_NULL(r.error && strstr(r.error->message, "(--require-agent)"));
    CU_ASSERT_EQUAL(r.balloon_us, -1);
    CU_ASSERT_EQUAL(r.warnings->len, 0);
    vs_setmem_result_clear(&r);
    fake_clear(&f);
  }
  {
    Fake f;
    VsSetmemResult r;

    fake_init(&f);
    run(&f, 384 * MiB, VS_AGENT_REQUIRED, &r);
    CU_ASSERT_EQUAL(r.outcome, VS_SETMEM_REACHED);
    vs_setmem_result_clear(&r);
    fake_clear(&f);
  }
}

static void test_agent_failures_fall_back(void) {
  static const struct {
    AgentBehaviour b;
    const char *words;
  } rows[] = {
      {AGENT_BUSY, "could not prepare: queue full (Busy)"},
      {AGENT_TIMEOUT, "no answer from the guest agent within 6000 ms"},
      {AGENT_NOT_OBJECT, "the answer is not an object"},
  };

  for (guint i = 0; i < G_N_ELEMENTS(rows); i++) {
    Fake f;
    VsSetmemResult r;
    g_autofree char *seq = NULL;

    fake_init(&f);
    f.guest.behaviour = rows[i].b;
    run(&f, 384 * MiB, VS_AGENT_AUTO, &r);
    seq = calls(&f);
    CU_ASSERT_STRING_EQUAL(seq, "open-agent shrinkd-prepare set");
    CU_ASSERT_EQUAL(r.outcome, VS_SETMEM_REACHED);
    CU_ASSERT_FALSE(r.agent_used);
    CU_ASSERT_PTR_NULL(r.prepare);
    CU_ASSERT(has_warning(&r, rows[i].words));
    CU_ASSERT(has_warning(&r, "setting the balloon anyway"));
    vs_setmem_result_clear(&r);
    fake_clear(&f);
  }
}

static void test_growing_skips_the_agent(void) {
  Fake f;
  VsSetmemResult r;
  g_autofree char *seq = NULL;

  fake_init(&f);
  f.actual = 512.0 * MiB;
  run(&f, 1024 * MiB, VS_AGENT_REQUIRED, &r);
  seq = calls(&f);
  CU_ASSERT_STRING_EQUAL(seq, "set");
  CU_ASSERT_EQUAL(r.outcome, VS_SETMEM_REACHED);
  CU_ASSERT_EQUAL(r.reached_bytes, 1024 * MiB);
  CU_ASSERT_STRING_EQUAL(r.agent_note, "not asked: the guest does not shrink");
  vs_setmem_result_clear(&r);
  fake_clear(&f);
}

static void test_limits_and_states(void) {
  Fake f;
  VsSetmemResult r;
  g_autofree char *seq = NULL;

  /* Above the maximum: nothing is done. */
  fake_init(&f);
  run(&f, 2048 * MiB, VS_AGENT_AUTO, &r);
  seq = calls(&f);
  CU_ASSERT_STRING_EQUAL(seq, "");
  CU_ASSERT_EQUAL(r.outcome, VS_SETMEM_FAILED);
  CU_ASSERT(g_error_matches(r.error, VS_ERROR, VS_ERROR_INVALID));
  CU_ASSERT_STRING_EQUAL(r.error->message,
                         "2 GiB is above the maximum memory of domain 'fake' (1 GiB)");
  vs_setmem_result_clear(&r);
  fake_clear(&f);

  /* Shut off: nothing is done. */
  fake_init(&f);
  f.state = "shut off";
  run(&f, 384 * MiB, VS_AGENT_AUTO, &r);
  CU_ASSERT(g_error_matches(r.error, VS_ERROR, VS_ERROR_NOT_RUNNING));
  CU_ASSERT_STRING_EQUAL(r.error->message, "domain 'fake' is not running (shut off)");
  vs_setmem_result_clear(&r);
  fake_clear(&f);

  /* Paused: a warning; the balloon cannot move, so partial. */
  fake_init(&f);
  f.state = "paused";
  f.rate = 0;
  run(&f, 384 * MiB, VS_AGENT_NONE, &r);
  CU_ASSERT_EQUAL(r.outcome, VS_SETMEM_PARTIAL);
  CU_ASSERT(has_warning(&r, "domain 'fake' is paused"));
  vs_setmem_result_clear(&r);
  fake_clear(&f);

  /* Already there: reached at the first reading. */
  fake_init(&f);
  run(&f, 1024 * MiB, VS_AGENT_AUTO, &r);
  CU_ASSERT_EQUAL(r.outcome, VS_SETMEM_REACHED);
  CU_ASSERT_EQUAL(r.follow_us, 0);
  vs_setmem_result_clear(&r);
  fake_clear(&f);
}

static void test_hypervisor_errors(void) {
  Fake f;
  VsSetmemResult r;

  fake_init(&f);
  f.fail_set = TRUE;
  run(&f, 384 * MiB, VS_AGENT_AUTO, &r);
  CU_ASSERT_EQUAL(r.outcome, VS_SETMEM_FAILED);
  CU_ASSERT_STRING_EQUAL(r.error->message, "cannot set the balloon: refused");
  CU_ASSERT(r.agent_used); /* the guest did prepare */
  CU_ASSERT_EQUAL(r.follow_us, -1);
  vs_setmem_result_clear(&r);
  fake_clear(&f);

  fake_init(&f);
  f.fail_memory_after_set = TRUE;
  run(&f, 384 * MiB, VS_AGENT_AUTO, &r);
  CU_ASSERT_EQUAL(r.outcome, VS_SETMEM_FAILED);
  CU_ASSERT_STRING_EQUAL(r.error->message, "following the balloon: domain is gone");
  vs_setmem_result_clear(&r);
  fake_clear(&f);
}

/* ---- reports ---- */

static void test_applications(void) {
  g_autoptr(JsonNode) prepare = prepare_answer_for(384 * MiB);
  g_autoptr(GPtrArray) apps = vs_prepare_applications(prepare);
  VsAppFreed *a;

  /* (10, cache), (20, db), (11, cache): per pid and name, in order. */
  CU_ASSERT_EQUAL_FATAL(apps->len, 3);
  a = g_ptr_array_index(apps, 0);
  CU_ASSERT_EQUAL(a->pid, 10);
  CU_ASSERT_STRING_EQUAL(a->client, "cache");
  CU_ASSERT_EQUAL(a->shrinkers->len, 2);
  CU_ASSERT_STRING_EQUAL(g_ptr_array_index(a->shrinkers, 0), "lru");
  CU_ASSERT_STRING_EQUAL(g_ptr_array_index(a->shrinkers, 1), "arena");
  CU_ASSERT_EQUAL(a->asked_bytes, 115);
  CU_ASSERT_EQUAL(a->freed_bytes, 107);
  CU_ASSERT_EQUAL(a->requests, 3);
  CU_ASSERT_EQUAL(a->missed, 0);
  a = g_ptr_array_index(apps, 1);
  CU_ASSERT_EQUAL(a->pid, 20);
  CU_ASSERT_EQUAL(a->missed, 1);
  CU_ASSERT_EQUAL(a->freed_bytes, 0);
  a = g_ptr_array_index(apps, 2);
  CU_ASSERT_EQUAL(a->pid, 11);
  CU_ASSERT_EQUAL(a->freed_bytes, 1);
}

static void test_applications_tolerate_junk(void) {
  static const char *const junk[] = {
      "{}",
      "{\"rounds\": 5}",
      "{\"rounds\": [1, \"x\", null, {\"requests\": {}}]}",
      "{\"rounds\": [{\"requests\": [7, {\"pid\": \"ten\", \"client\": 3, \"freed_bytes\": -5,"
      " \"asked_bytes\": 1.5, \"missed\": \"yes\"}]}]}",
  };

  {
    g_autoptr(GPtrArray) none = vs_prepare_applications(NULL);

    CU_ASSERT_EQUAL(none->len, 0);
  }
  for (guint i = 0; i < G_N_ELEMENTS(junk); i++) {
    g_autoptr(JsonNode) n = json_from_string(junk[i], NULL);
    g_autoptr(GPtrArray) apps = vs_prepare_applications(n);

    CU_ASSERT_EQUAL(apps->len, i == 3 ? 1 : 0);
    if (i == 3) {
      VsAppFreed *a = g_ptr_array_index(apps, 0);

      CU_ASSERT_EQUAL(a->pid, 0);
      CU_ASSERT_STRING_EQUAL(a->client, "?");
      CU_ASSERT_EQUAL(a->freed_bytes, 0);
      CU_ASSERT_EQUAL(a->asked_bytes, 0);
      CU_ASSERT_EQUAL(a->missed, 0);
    }
  }
}

static void test_setmem_json(void) {
  Fake f;
  VsSetmemResult r;
  g_autoptr(JsonNode) j = NULL;
  JsonObject *o, *agent, *phases;
  JsonArray *apps;

  fake_init(&f);
  f.stall_at = 700 * MiB;
  run(&f, 384 * MiB, VS_AGENT_AUTO, &r);
  j = vs_report_setmem_json("fake", &r);
  o = json_node_get_object(j);
  CU_ASSERT_STRING_EQUAL(json_object_get_string_member(o, "guest"), "fake");
  CU_ASSERT_STRING_EQUAL(json_object_get_string_member(o, "result"), "partial");
  CU_ASSERT_EQUAL(json_object_get_int_member(o, "exit_status"), 2);
  CU_ASSERT(json_node_is_null(json_object_get_member(o, "error")));
  CU_ASSERT_EQUAL(json_object_get_int_member(o, "asked_bytes"), 384 * MiB);
  CU_ASSERT_EQUAL(json_object_get_int_member(o, "reached_bytes"), 700 * MiB);
  CU_ASSERT_EQUAL(json_object_get_int_member(o, "initial_bytes"), 1024 * MiB);
  phases = json_object_get_object_member(o, "phases_us");
  CU_ASSERT_EQUAL(json_object_get_int_member(phases, "prepare"), 250000);
  CU_ASSERT_EQUAL(json_object_get_int_member(phases, "balloon"), 3000);
  agent = json_object_get_object_member(o, "agent");
  CU_ASSERT(json_object_get_boolean_member(agent, "used"));
  CU_ASSERT(
      json_object_get_boolean_member(json_object_get_object_member(agent, "prepare"), "ready"));
  apps = json_object_get_array_member(o, "applications");
  CU_ASSERT_EQUAL(json_array_get_length(apps), 3);
  CU_ASSERT_EQUAL(json_object_get_int_member(json_array_get_object_element(apps, 0), "freed_bytes"),
                  107);
  CU_ASSERT_EQUAL(json_array_get_length(json_object_get_array_member(o, "warnings")), 0);
  vs_setmem_result_clear(&r);
  fake_clear(&f);
}

static void test_status_json(void) {
  g_autoptr(JsonNode) status = json_from_string("{\"version\": \"0.1.0\", \"clients\": []}", NULL);
  VsMemory mem = {.actual_bytes = 512 * MiB, .max_bytes = 1024 * MiB, .usable_bytes = 100};
  g_autoptr(JsonNode) j = vs_report_status_json("running", &mem, status, NULL);
  g_autoptr(JsonNode) k = vs_report_status_json("paused", &mem, NULL, "no agent here");
  JsonObject *hb;

  CU_ASSERT_STRING_EQUAL(json_object_get_string_member(json_node_get_object(j), "version"),
                         "0.1.0");
  hb = json_object_get_object_member(json_node_get_object(j), "host_balloon");
  CU_ASSERT_STRING_EQUAL(json_object_get_string_member(hb, "state"), "running");
  CU_ASSERT_EQUAL(json_object_get_int_member(hb, "actual_bytes"), 512 * MiB);
  CU_ASSERT_EQUAL(json_object_get_int_member(hb, "max_bytes"), 1024 * MiB);
  CU_ASSERT_EQUAL(json_object_get_int_member(hb, "usable_bytes"), 100);
  CU_ASSERT_FALSE(json_object_has_member(hb, "rss_bytes"));
  CU_ASSERT_STRING_EQUAL(json_object_get_string_member(json_node_get_object(k), "agent_error"),
                         "no agent here");
  CU_ASSERT(json_object_has_member(json_node_get_object(k), "host_balloon"));
}

static void test_sanitize(void) {
  g_autoptr(JsonNode) n =
      json_from_string("{\"clients\": [{\"name\": \"\\u001b[2Jevil\", \"pid\": 5,"
                       " \"shrinkers\": [{\"name\": \"ok\"}, {\"name\": \"bell\\u0007\"}]}]}",
                       NULL);
  JsonObject *cl;
  JsonArray *sh;

  vs_report_sanitize(n);
  vs_report_sanitize(NULL);
  cl = json_array_get_object_element(
      json_object_get_array_member(json_node_get_object(n), "clients"), 0);
  CU_ASSERT_STRING_EQUAL(json_object_get_string_member(cl, "name"), "?[2Jevil");
  CU_ASSERT_EQUAL(json_object_get_int_member(cl, "pid"), 5);
  sh = json_object_get_array_member(cl, "shrinkers");
  CU_ASSERT_STRING_EQUAL(
      json_object_get_string_member(json_array_get_object_element(sh, 0), "name"), "ok");
  CU_ASSERT_STRING_EQUAL(
      json_object_get_string_member(json_array_get_object_element(sh, 1), "name"), "bell?");
}

int main(void) {
  CU_pSuite s;

  if (CU_initialize_registry() != CUE_SUCCESS)
    return 1;
  s = CU_add_suite("virt-shrink setmem", NULL, NULL);
  CU_add_test(s, "prepare, then the balloon reaches the target: exit 0",
              test_prepare_then_balloon_reaches);
  CU_add_test(s, "the balloon stalls: exit 2 at the timeout", test_balloon_stalls_partial);
  CU_add_test(s, "no agent: a warning and the reactive path",
              test_no_agent_warns_and_goes_reactive);
  CU_add_test(s, "--no-agent", test_no_agent_option);
  CU_add_test(s, "--require-agent: fail before the balloon", test_required_agent);
  CU_add_test(s, "agent errors fall back to the reactive path", test_agent_failures_fall_back);
  CU_add_test(s, "growing asks no agent", test_growing_skips_the_agent);
  CU_add_test(s, "maximum, shut off, paused, already there", test_limits_and_states);
  CU_add_test(s, "hypervisor errors", test_hypervisor_errors);
  s = CU_add_suite("virt-shrink reports", NULL, NULL);
  CU_add_test(s, "per-application sums of the prepare rounds", test_applications);
  CU_add_test(s, "a guest's junk in the prepare answer", test_applications_tolerate_junk);
  CU_add_test(s, "setmem JSON", test_setmem_json);
  CU_add_test(s, "status JSON", test_status_json);
  CU_add_test(s, "guest strings made printable for people", test_sanitize);
  return cunit_run_all();
}
