/* SPDX-License-Identifier: MIT */
/*
 * A streaming JSON writer (see json-writer.h).
 */
#include "json-writer.h"

void agent_json_init(AgentJsonWriter *w, GString *out) {
  w->out = out;
  w->depth = 0;
  w->has_items = 0;
}

static void put_string(GString *out, const char *s) {
  g_string_append_c(out, '"');
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    switch (*p) {
    case '"': g_string_append(out, "\\\""); break;
    case '\\': g_string_append(out, "\\\\"); break;
    case '\n': g_string_append(out, "\\n"); break;
    case '\r': g_string_append(out, "\\r"); break;
    case '\t': g_string_append(out, "\\t"); break;
    default:
      if (*p < 0x20)
        g_string_append_printf(out, "\\u%04x", *p);
      else
        g_string_append_c(out, (char)*p);
    }
  }
  g_string_append_c(out, '"');
}

/* The separator and the member name before a value. */
static void start_value(AgentJsonWriter *w, const char *key) {
  guint32 bit = 1u << w->depth;

  if (w->has_items & bit)
    g_string_append_c(w->out, ',');
  w->has_items |= bit;
  if (key) {
    put_string(w->out, key);
    g_string_append_c(w->out, ':');
  }
}

static void begin(AgentJsonWriter *w, const char *key, char open) {
  start_value(w, key);
  g_string_append_c(w->out, open);
  g_assert(w->depth < AGENT_JSON_DEPTH_MAX);
  w->depth++;
  w->has_items &= ~(1u << w->depth);
}

static void end(AgentJsonWriter *w, char close) {
  g_assert(w->depth > 0);
  w->depth--;
  g_string_append_c(w->out, close);
}

void agent_json_begin_object(AgentJsonWriter *w, const char *key) {
  begin(w, key, '{');
}
void agent_json_end_object(AgentJsonWriter *w) {
  end(w, '}');
}
void agent_json_begin_array(AgentJsonWriter *w, const char *key) {
  begin(w, key, '[');
}
void agent_json_end_array(AgentJsonWriter *w) {
  end(w, ']');
}

void agent_json_int(AgentJsonWriter *w, const char *key, int64_t v) {
  start_value(w, key);
  g_string_append_printf(w->out, "%" G_GINT64_FORMAT, (gint64)v);
}

void agent_json_uint(AgentJsonWriter *w, const char *key, uint64_t v) {
  agent_json_int(w, key, v > G_MAXINT64 ? G_MAXINT64 : (int64_t)v);
}

void agent_json_string(AgentJsonWriter *w, const char *key, const char *v) {
  start_value(w, key);
  put_string(w->out, v);
}

void agent_json_bool(AgentJsonWriter *w, const char *key, gboolean v) {
  start_value(w, key);
  g_string_append(w->out, v ? "true" : "false");
}

void agent_json_null(AgentJsonWriter *w, const char *key) {
  start_value(w, key);
  g_string_append(w->out, "null");
}

void agent_json_node(AgentJsonWriter *w, const char *key, JsonNode *node) {
  switch (json_node_get_node_type(node)) {
  case JSON_NODE_OBJECT: {
    JsonObjectIter iter;
    const char *name;
    JsonNode *member;

    agent_json_begin_object(w, key);
    json_object_iter_init_ordered(&iter, json_node_get_object(node));
    while (json_object_iter_next_ordered(&iter, &name, &member))
      agent_json_node(w, name, member);
    agent_json_end_object(w);
    return;
  }
  case JSON_NODE_ARRAY: {
    JsonArray *array = json_node_get_array(node);

    agent_json_begin_array(w, key);
    for (guint i = 0; i < json_array_get_length(array); i++)
      agent_json_node(w, NULL, json_array_get_element(array, i));
    agent_json_end_array(w);
    return;
  }
  case JSON_NODE_NULL: agent_json_null(w, key); return;
  case JSON_NODE_VALUE: break;
  }
  switch (json_node_get_value_type(node)) {
  case G_TYPE_INT64: agent_json_int(w, key, json_node_get_int(node)); break;
  case G_TYPE_BOOLEAN: agent_json_bool(w, key, json_node_get_boolean(node)); break;
  case G_TYPE_STRING: agent_json_string(w, key, json_node_get_string(node)); break;
  case G_TYPE_DOUBLE: {
    char buf[G_ASCII_DTOSTR_BUF_SIZE];

    start_value(w, key);
    g_string_append(w->out, g_ascii_dtostr(buf, sizeof(buf), json_node_get_double(node)));
    break;
  }
  default: agent_json_null(w, key); break;
  }
}
