/* SPDX-License-Identifier: MIT */
/*
 * What the unit tests of virt-shrink's state machines (setmem, migrate)
 * share: a fake guest agent, what VsBackendOps.open_agent hands out, on
 * the test's fake clock (it knows one command and behaves as the test
 * says: a report, no agent at all, Busy, a timeout, or an answer that is
 * no object); and readers of what a run recorded.
 */
#pragma once

#include <glib.h>
#include <json-glib/json-glib.h>

#include "backend.h"

typedef enum {
  AGENT_OK,         /* answers its command with answer() */
  AGENT_ABSENT,     /* open fails with VS_ERROR_NO_AGENT */
  AGENT_BUSY,       /* answers with a Busy error */
  AGENT_TIMEOUT,    /* no answer in time */
  AGENT_NOT_OBJECT, /* answers 42 */
} AgentBehaviour;

typedef struct {
  AgentBehaviour behaviour;
  const char *command; /* the one command it answers; others: CommandNotFound */
  gint64 answer_us;    /* how long a good answer takes on the fake clock */
  JsonNode *(*answer)(JsonObject *arguments); /* a good answer (transfer full) */
  gint64 *now_us;      /* the fake clock, advanced by what takes time */
  GPtrArray *calls;    /* "open-agent" and each command are appended (g_strdup) */
  /* What it saw. */
  JsonObject *args; /* the last command's arguments (a reference) */
  guint call_timeout_ms, open_timeout_ms;
  guint alive; /* opened and not freed yet */
} FakeGuestAgent;

/* VsBackendOps.open_agent for @g: an agent, or NULL with @error. */
VsAgent *fake_guest_agent_open(FakeGuestAgent *g, guint timeout_ms, GError **error);

/* Drops what @g holds; asserts that every agent it opened was freed. */
void fake_guest_agent_clear(FakeGuestAgent *g);

/* The recorded @calls joined with spaces, leaving out those in @skip
 * (NULL-terminated). Transfer full. */
char *fake_calls_text(GPtrArray *calls, const char *const *skip);

/* Whether one of @warnings (of char *) contains @words. */
gboolean fake_has_warning(GPtrArray *warnings, const char *words);
