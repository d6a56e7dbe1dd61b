/* SPDX-License-Identifier: MIT */
/* The fakes of virt-shrink's unit tests (see vs-fakes.h). */
#include "vs-fakes.h"

#include <CUnit/CUnit.h>
#include <string.h>

#include "vs-error.h"

typedef struct {
  VsAgent parent;
  FakeGuestAgent *g;
} Opened;

static JsonNode *call(VsAgent *self, const char *command, JsonObject *arguments, guint timeout_ms,
                      GError **error) {
  FakeGuestAgent *g = ((Opened *)self)->g;

  g_ptr_array_add(g->calls, g_strdup(command));
  if (strcmp(command, g->command) != 0) {
    g_set_error(error, VS_AGENT_ERROR, VS_AGENT_ERROR_COMMAND_NOT_FOUND, "no %s", command);
    return NULL;
  }
  if (g->args)
    json_object_unref(g->args);
  g->args = json_object_ref(arguments);
  g->call_timeout_ms = timeout_ms;
  switch (g->behaviour) {
  case AGENT_BUSY:
    *g->now_us += 1000;
    g_set_error_literal(error, VS_AGENT_ERROR, VS_AGENT_ERROR_BUSY, "queue full (Busy)");
    return NULL;
  case AGENT_TIMEOUT:
    *g->now_us += (gint64)timeout_ms * 1000;
    g_set_error(error, VS_ERROR, VS_ERROR_TIMEOUT, "%s: no answer from the guest agent within %u ms",
                command, timeout_ms);
    return NULL;
  case AGENT_NOT_OBJECT: return json_from_string("42", NULL);
  default: *g->now_us += g->answer_us; return g->answer(arguments);
  }
}

static void free_opened(VsAgent *self) {
  ((Opened *)self)->g->alive--;
  g_free(self);
}

static const VsAgentOps ops = {call, free_opened};

VsAgent *fake_guest_agent_open(FakeGuestAgent *g, guint timeout_ms, GError **error) {
  Opened *a;

  g_ptr_array_add(g->calls, g_strdup("open-agent"));
  g->open_timeout_ms = timeout_ms;
  if (g->behaviour == AGENT_ABSENT) {
    *g->now_us += (gint64)timeout_ms * 1000;
    g_set_error(error, VS_ERROR, VS_ERROR_NO_AGENT,
                "cannot connect to the guest agent channel at /fake: no answer to "
                "guest-sync-delimited within %u ms",
                timeout_ms);
    return NULL;
  }
  a = g_new0(Opened, 1);
  a->parent.ops = &ops;
  a->g = g;
  g->alive++;
  return &a->parent;
}

void fake_guest_agent_clear(FakeGuestAgent *g) {
  g_clear_pointer(&g->args, json_object_unref);
  CU_ASSERT_EQUAL(g->alive, 0); /* every agent was freed */
}

char *fake_calls_text(GPtrArray *calls, const char *const *skip) {
  GString *s = g_string_new(NULL);

  for (guint i = 0; i < calls->len; i++) {
    const char *c = g_ptr_array_index(calls, i);

    if (g_strv_contains(skip, c))
      continue;
    if (s->len)
      g_string_append_c(s, ' ');
    g_string_append(s, c);
  }
  return g_string_free(s, FALSE);
}

gboolean fake_has_warning(GPtrArray *warnings, const char *words) {
  for (guint i = 0; i < warnings->len; i++)
    if (strstr(g_ptr_array_index(warnings, i), words))
      return TRUE;
  return FALSE;
}
