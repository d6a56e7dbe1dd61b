/* SPDX-License-Identifier: MIT */
/*
 * A streaming JSON writer (see json-writer.h).
 */
#include "json-writer.h"

#include <string.h>

void agent_json_init(AgentJsonWriter *w, GString *out) {
  w->out = out;
  w->depth = 0;
  w->has_items = 0;
}

/* @len bytes of @s: a parsed string may hold NUL characters. */
static void put_string(GString *out, const char *s, gsize len) {
  g_string_append_c(out, '"');
  for (const unsigned char *p = (const unsigned char *)s; p < (const unsigned char *)s + len; p++) {
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

/* The separator and the member name (@key_len bytes) before a value. */
static void start_value_len(AgentJsonWriter *w, const char *key, gsize key_len) {
  guint32 bit = 1u << w->depth;

  if (w->has_items & bit)
    g_string_append_c(w->out, ',');
  w->has_items |= bit;
  if (key) {
    put_string(w->out, key, key_len);
    g_string_append_c(w->out, ':');
  }
}

static void start_value(AgentJsonWriter *w, const char *key) {
  start_value_len(w, key, key ? strlen(key) : 0);
}

static void begin_len(AgentJsonWriter *w, const char *key, gsize key_len, char open) {
  start_value_len(w, key, key_len);
  g_string_append_c(w->out, open);
  g_assert(w->depth < AGENT_JSON_DEPTH_MAX);
  w->depth++;
  w->has_items &= ~(1u << w->depth);
}

static void begin(AgentJsonWriter *w, const char *key, char open) {
  begin_len(w, key, key ? strlen(key) : 0, open);
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
  put_string(w->out, v, strlen(v));
}

void agent_json_bool(AgentJsonWriter *w, const char *key, gboolean v) {
  start_value(w, key);
  g_string_append(w->out, v ? "true" : "false");
}

void agent_json_null(AgentJsonWriter *w, const char *key) {
  start_value(w, key);
  g_string_append(w->out, "null");
}

/* @v, as member @key (@key_len bytes) or an item (@key NULL). */
static void put_value(AgentJsonWriter *w, const char *key, gsize key_len, const AgentJsonValue *v) {
  AgentJsonIter iter;
  const AgentJsonValue *name, *item;
  const char *s;
  gsize len = 0;

  switch (agent_json_reader_type(v)) {
  case AGENT_JSON_OBJECT:
  case AGENT_JSON_ARRAY: {
    gboolean object = agent_json_reader_type(v) == AGENT_JSON_OBJECT;

    begin_len(w, key, key_len, object ? '{' : '[');
    agent_json_reader_iter_init(&iter, v);
    while (agent_json_reader_iter_next(&iter, &name, &item)) {
      s = name ? agent_json_reader_get_string(name, &len) : NULL;
      put_value(w, s, len, item);
    }
    end(w, object ? '}' : ']');
    return;
  }
  case AGENT_JSON_STRING:
    s = agent_json_reader_get_string(v, &len);
    start_value_len(w, key, key_len);
    put_string(w->out, s, len);
    return;
  case AGENT_JSON_NULL:
    start_value_len(w, key, key_len);
    g_string_append(w->out, "null");
    return;
  case AGENT_JSON_BOOL:
    start_value_len(w, key, key_len);
    g_string_append(w->out, agent_json_reader_get_bool(v) ? "true" : "false");
    return;
  case AGENT_JSON_INT:
    start_value_len(w, key, key_len);
    g_string_append_printf(w->out, "%" G_GINT64_FORMAT, (gint64)agent_json_reader_get_int(v));
    return;
  case AGENT_JSON_DOUBLE: {
    /* The reader holds finite doubles only: the text is always a JSON
     * number. An integral one gets ".0", so that it reads back as a double
     * (an echoed id 1.0 is not the integer 1). */
    char buf[G_ASCII_DTOSTR_BUF_SIZE];
    const char *text = g_ascii_dtostr(buf, sizeof(buf), agent_json_reader_get_double(v));

    start_value_len(w, key, key_len);
    g_string_append(w->out, text);
    if (!strpbrk(text, ".eE"))
      g_string_append(w->out, ".0");
    return;
  }
  }
  g_assert_not_reached();
}

void agent_json_node(AgentJsonWriter *w, const char *key, const AgentJsonValue *node) {
  put_value(w, key, key ? strlen(key) : 0, node);
}

void agent_json_raw(AgentJsonWriter *w, const char *key, const char *json) {
  start_value(w, key);
  g_string_append(w->out, json);
}

char *agent_json_to_text(const AgentJsonValue *node) {
  GString *out = g_string_new(NULL);
  AgentJsonWriter w;

  agent_json_init(&w, out);
  agent_json_node(&w, NULL, node);
  return g_string_free(out, FALSE);
}
