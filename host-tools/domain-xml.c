/* SPDX-License-Identifier: MIT */
/*
 * The channel lookup in the domain XML (see domain-xml.h).
 */
#include "domain-xml.h"

#include <string.h>

#include "vs-error.h"

typedef struct {
  const char *want; /* the target name we look for */
  GPtrArray *stack; /* element names from the root (borrowed from GMarkup: copied) */
  /* The channel being read. */
  gboolean in_channel;
  char *type, *source_mode, *source_path, *target_type, *target_name;
  /* The result, once the wanted channel closed. */
  gboolean found;
  char *found_type, *found_mode, *found_path, *found_target_type;
} XmlScan;

static const char *attr(const char **names, const char **values, const char *name) {
  for (guint i = 0; names[i]; i++)
    if (strcmp(names[i], name) == 0)
      return values[i];
  return NULL;
}

/* Whether the element about to open is a child of the path @a/@b/... */
static gboolean parent_is(XmlScan *s, const char *const *path, guint n) {
  if (s->stack->len != n)
    return FALSE;
  for (guint i = 0; i < n; i++)
    if (strcmp(g_ptr_array_index(s->stack, i), path[i]) != 0)
      return FALSE;
  return TRUE;
}

static void clear_channel(XmlScan *s) {
  g_clear_pointer(&s->type, g_free);
  g_clear_pointer(&s->source_mode, g_free);
  g_clear_pointer(&s->source_path, g_free);
  g_clear_pointer(&s->target_type, g_free);
  g_clear_pointer(&s->target_name, g_free);
  s->in_channel = FALSE;
}

static void on_start(GMarkupParseContext *ctx, const char *element, const char **names,
                     const char **values, gpointer data, GError **error) {
  static const char *const devices[] = {"domain", "devices"};
  static const char *const channel[] = {"domain", "devices", "channel"};
  XmlScan *s = data;

  if (parent_is(s, devices, 2) && strcmp(element, "channel") == 0) {
    clear_channel(s);
    s->in_channel = TRUE;
    s->type = g_strdup(attr(names, values, "type"));
  } else if (s->in_channel && parent_is(s, channel, 3)) {
    if (strcmp(element, "source") == 0 && !s->source_mode && !s->source_path) {
      s->source_mode = g_strdup(attr(names, values, "mode"));
      s->source_path = g_strdup(attr(names, values, "path"));
    } else if (strcmp(element, "target") == 0) {
      g_free(s->target_type);
      g_free(s->target_name);
      s->target_type = g_strdup(attr(names, values, "type"));
      s->target_name = g_strdup(attr(names, values, "name"));
    }
  }
  g_ptr_array_add(s->stack, g_strdup(element));
}

static void on_end(GMarkupParseContext *ctx, const char *element, gpointer data, GError **error) {
  static const char *const channel[] = {"domain", "devices", "channel"};
  XmlScan *s = data;

  if (s->in_channel && parent_is(s, channel, 3)) {
    if (!s->found && s->target_name && strcmp(s->target_name, s->want) == 0) {
      s->found = TRUE;
      s->found_type = g_strdup(s->type);
      s->found_mode = g_strdup(s->source_mode);
      s->found_path = g_strdup(s->source_path);
      s->found_target_type = g_strdup(s->target_type);
    }
    clear_channel(s);
  }
  if (s->stack->len > 0)
    g_ptr_array_remove_index(s->stack, s->stack->len - 1);
}

static const GMarkupParser scan_parser = {
    .start_element = on_start,
    .end_element = on_end,
};

char *vs_domain_xml_channel_path(const char *xml, const char *target_name, GError **error) {
  XmlScan s = {.want = target_name, .stack = g_ptr_array_new_with_free_func(g_free)};
  GMarkupParseContext *ctx = g_markup_parse_context_new(&scan_parser, 0, &s, NULL);
  g_autoptr(GError) local = NULL;
  char *path = NULL;

  if (!g_markup_parse_context_parse(ctx, xml, -1, &local) ||
      !g_markup_parse_context_end_parse(ctx, &local)) {
    g_set_error(error, VS_ERROR, VS_ERROR_PROTOCOL, "cannot read the domain XML: %s",
                local->message);
  } else if (!s.found) {
    g_set_error(error, VS_ERROR, VS_ERROR_NO_AGENT,
                "no channel %s in the domain XML (add <channel type='unix'><target type='virtio' "
                "name='%s'/></channel> to its <devices>)",
                target_name, target_name);
  } else if (g_strcmp0(s.found_target_type, "virtio") != 0) {
    g_set_error(error, VS_ERROR, VS_ERROR_NO_AGENT,
                "channel %s is not a virtio channel (target type '%s')", target_name,
                s.found_target_type ? s.found_target_type : "");
  } else if (g_strcmp0(s.found_type, "unix") != 0) {
    g_set_error(error, VS_ERROR, VS_ERROR_NO_AGENT, "channel %s is of type '%s', not a unix socket",
                target_name, s.found_type ? s.found_type : "");
  } else if (g_strcmp0(s.found_mode, "bind") != 0 || !s.found_path || !*s.found_path) {
    g_set_error(error, VS_ERROR, VS_ERROR_NO_AGENT,
                "channel %s is not a socket QEMU listens on (source mode '%s'%s)", target_name,
                s.found_mode ? s.found_mode : "", s.found_path ? "" : ", no path");
  } else {
    path = g_strdup(s.found_path);
  }
  g_markup_parse_context_free(ctx);
  clear_channel(&s);
  g_ptr_array_unref(s.stack);
  g_free(s.found_type);
  g_free(s.found_mode);
  g_free(s.found_path);
  g_free(s.found_target_type);
  return path;
}
