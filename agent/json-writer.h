/* SPDX-License-Identifier: MIT */
/*
 * A streaming JSON writer into a GString, for the agent's replies.
 *
 * Replies are written as text directly instead of building a tree of
 * values and generating it: a status with a thousand shrinkers and its round
 * reports is a tree of tens of thousands of small allocations, and in a
 * process whose memory is locked (mlockall) the heap they fragment stays
 * resident for good. Text is one buffer, freed whole.
 *
 * Every call takes the member name @key inside an object and NULL inside
 * an array (or at the top). Nesting is limited to AGENT_JSON_DEPTH_MAX
 * levels (a programming error beyond that). Output is compact, UTF-8 as
 * given (callers pass valid UTF-8), control characters escaped.
 */
#pragma once

#include <glib.h>
#include <stdint.h>

#include "json-reader.h"

#define AGENT_JSON_DEPTH_MAX 31

typedef struct {
  GString *out;
  unsigned depth;
  guint32 has_items; /* bit d: the container at depth d has an item already */
} AgentJsonWriter;

/* Starts writing into @out (appended to, not owned). */
void agent_json_init(AgentJsonWriter *w, GString *out);

void agent_json_begin_object(AgentJsonWriter *w, const char *key);
void agent_json_end_object(AgentJsonWriter *w);
void agent_json_begin_array(AgentJsonWriter *w, const char *key);
void agent_json_end_array(AgentJsonWriter *w);
void agent_json_int(AgentJsonWriter *w, const char *key, int64_t v);
/* Bytes and counts: JSON integers are read as signed 64-bit, so values
 * above INT64_MAX are written as INT64_MAX. */
void agent_json_uint(AgentJsonWriter *w, const char *key, uint64_t v);
void agent_json_string(AgentJsonWriter *w, const char *key, const char *v);
void agent_json_bool(AgentJsonWriter *w, const char *key, gboolean v);
void agent_json_null(AgentJsonWriter *w, const char *key);
/* Writes a parsed value (json-reader.h; borrowed) as it is, compact: used
 * to echo a request's "id". Doubles are written with g_ascii_dtostr()
 * (round-trip precision), integral ones with ".0" (1.0, not 1): what is
 * written reads back as the same value of the same type. */
void agent_json_node(AgentJsonWriter *w, const char *key, const AgentJsonValue *node);
/* Writes @json, the text of one complete JSON value (written by this
 * writer before, say), as it is: for a value kept as text rather than
 * kept parsed. */
void agent_json_raw(AgentJsonWriter *w, const char *key, const char *json);

/* The compact JSON text of @node, as agent_json_node() writes it
 * (transfer full: g_free it). */
char *agent_json_to_text(const AgentJsonValue *node);
