/* SPDX-License-Identifier: MIT */
/*
 * The QMP client (see qmp.h).
 */
#include "qmp.h"

#include <string.h>
#include <unistd.h>

#include "json-stream.h"
#include "unix-io.h"
#include "vs-error.h"

/* QMP answers are small; these bound a QEMU gone wrong. */
#define QMP_MAX_MESSAGE_BYTES (4u << 20)
#define QMP_MAX_DEPTH         64

struct VsQmp {
  int fd;
  char *path;
  VsJsonStream *stream;
  gint64 next_id;
};

void vs_qmp_free(VsQmp *qmp) {
  if (!qmp)
    return;
  if (qmp->fd >= 0)
    close(qmp->fd);
  vs_json_stream_free(qmp->stream);
  g_free(qmp->path);
  g_free(qmp);
}

static gboolean send_command(VsQmp *q, const char *command, JsonObject *arguments, gint64 id,
                             gint64 deadline_us, GError **error) {
  g_autoptr(JsonNode) root = json_node_new(JSON_NODE_OBJECT);
  JsonObject *request = vs_json_request_new(command, arguments);
  g_autofree char *json = NULL;
  g_autofree char *line = NULL;

  json_object_set_int_member(request, "id", id);
  json_node_take_object(root, request);
  json = vs_json_to_string(root);
  line = g_strconcat(json, "\n", NULL);
  g_debug("QMP %s: -> %s", q->path, json);
  return vs_write_all(q->fd, line, strlen(line), deadline_us, error);
}

JsonNode *vs_qmp_call(VsQmp *qmp, const char *command, JsonObject *arguments, guint timeout_ms,
                      GError **error) {
  gint64 deadline_us = vs_deadline_in(timeout_ms);
  gint64 id = ++qmp->next_id;

  if (!send_command(qmp, command, arguments, id, deadline_us, error)) {
    g_prefix_error(error, "QMP %s: ", command);
    return NULL;
  }
  for (;;) {
    g_autoptr(JsonNode) msg = NULL;
    JsonObject *o;
    JsonNode *idn, *ret, *err;

    if (!vs_read_object(qmp->fd, qmp->stream, deadline_us, &msg, error)) {
      g_prefix_error(error, "QMP %s: ", command);
      return NULL;
    }
    o = json_node_get_object(msg);
    if (json_object_has_member(o, "event"))
      continue;
    /* An answer to an earlier command that timed out is not ours. */
    idn = json_object_get_member(o, "id");
    if (idn && (!JSON_NODE_HOLDS_VALUE(idn) || json_node_get_value_type(idn) != G_TYPE_INT64 ||
                json_node_get_int(idn) != id))
      continue;
    ret = json_object_get_member(o, "return");
    if (ret)
      return json_node_copy(ret);
    err = json_object_get_member(o, "error");
    if (err && JSON_NODE_HOLDS_OBJECT(err)) {
      JsonObject *e = json_node_get_object(err);

      g_set_error(error, VS_ERROR, VS_ERROR_FAILED, "QMP %s: %s (%s)", command,
                  json_object_get_string_member_with_default(e, "desc", "(no description)"),
                  json_object_get_string_member_with_default(e, "class", "GenericError"));
      return NULL;
    }
    g_set_error(error, VS_ERROR, VS_ERROR_PROTOCOL,
                "QMP %s: an answer with neither \"return\" nor \"error\"", command);
    return NULL;
  }
}

VsQmp *vs_qmp_open(const char *path, guint timeout_ms, GError **error) {
  gint64 deadline_us = vs_deadline_in(timeout_ms);
  g_autoptr(VsQmp) q = g_new0(VsQmp, 1);
  g_autoptr(JsonNode) caps = NULL;
  g_autoptr(GError) local = NULL;

  q->path = g_strdup(path);
  q->stream = vs_json_stream_new(QMP_MAX_MESSAGE_BYTES, QMP_MAX_DEPTH);
  q->fd = vs_unix_connect(path, deadline_us, error);
  if (q->fd < 0) {
    g_prefix_error(error, "cannot connect to QMP at ");
    return NULL;
  }
  for (;;) {
    g_autoptr(JsonNode) msg = NULL;

    if (!vs_read_object(q->fd, q->stream, deadline_us, &msg, &local)) {
      if (g_error_matches(local, VS_ERROR, VS_ERROR_TIMEOUT))
        g_set_error(error, VS_ERROR, VS_ERROR_TIMEOUT,
                    "no QMP greeting from %s within %u ms (is another client connected?)", path,
                    timeout_ms);
      else
        g_propagate_prefixed_error(error, g_steal_pointer(&local), "QMP at %s: ", path);
      return NULL;
    }
    if (json_object_has_member(json_node_get_object(msg), "QMP"))
      break;
  }
  caps = vs_qmp_call(q, "qmp_capabilities", NULL,
                     (guint)MAX(1, (deadline_us - g_get_monotonic_time()) / 1000), error);
  if (!caps)
    return NULL;
  return g_steal_pointer(&q);
}

/* The non-negative integer member @name of the object @node, or FALSE with
 * @error naming @command. */
static gboolean get_uint_member(JsonNode *node, const char *command, const char *name, guint64 *out,
                                GError **error) {
  JsonNode *m = JSON_NODE_HOLDS_OBJECT(node)
                    ? json_object_get_member(json_node_get_object(node), name)
                    : NULL;

  if (!m || !JSON_NODE_HOLDS_VALUE(m) || json_node_get_value_type(m) != G_TYPE_INT64 ||
      json_node_get_int(m) < 0) {
    g_set_error(error, VS_ERROR, VS_ERROR_PROTOCOL, "QMP %s: no integer \"%s\" in the answer",
                command, name);
    return FALSE;
  }
  *out = (guint64)json_node_get_int(m);
  return TRUE;
}

gboolean vs_qmp_balloon(VsQmp *qmp, guint64 target_bytes, guint timeout_ms, GError **error) {
  g_autoptr(JsonObject) args = json_object_new();
  g_autoptr(JsonNode) ret = NULL;

  json_object_set_int_member(args, "value", (gint64)target_bytes);
  ret = vs_qmp_call(qmp, "balloon", args, timeout_ms, error);
  return ret != NULL;
}

gboolean vs_qmp_query_balloon(VsQmp *qmp, guint64 *actual_bytes, guint timeout_ms, GError **error) {
  g_autoptr(JsonNode) ret = vs_qmp_call(qmp, "query-balloon", NULL, timeout_ms, error);

  return ret && get_uint_member(ret, "query-balloon", "actual", actual_bytes, error);
}

gboolean vs_qmp_query_status(VsQmp *qmp, gboolean *running, char **status, guint timeout_ms,
                             GError **error) {
  g_autoptr(JsonNode) ret = vs_qmp_call(qmp, "query-status", NULL, timeout_ms, error);
  JsonObject *o;

  if (!ret)
    return FALSE;
  if (!JSON_NODE_HOLDS_OBJECT(ret)) {
    g_set_error_literal(error, VS_ERROR, VS_ERROR_PROTOCOL, "QMP query-status: not an object");
    return FALSE;
  }
  o = json_node_get_object(ret);
  *running = json_object_get_boolean_member_with_default(o, "running", FALSE);
  *status = g_strdup(json_object_get_string_member_with_default(o, "status", "unknown"));
  return TRUE;
}

gboolean vs_qmp_query_memory_size(VsQmp *qmp, guint64 *bytes, guint timeout_ms, GError **error) {
  g_autoptr(JsonNode) ret = vs_qmp_call(qmp, "query-memory-size-summary", NULL, timeout_ms, error);
  guint64 base, plugged = 0;

  if (!ret || !get_uint_member(ret, "query-memory-size-summary", "base-memory", &base, error))
    return FALSE;
  /* plugged-memory is only there when memory hotplug is configured. */
  if (JSON_NODE_HOLDS_OBJECT(ret) &&
      json_object_has_member(json_node_get_object(ret), "plugged-memory") &&
      !get_uint_member(ret, "query-memory-size-summary", "plugged-memory", &plugged, error))
    return FALSE;
  *bytes = base + plugged;
  return TRUE;
}
