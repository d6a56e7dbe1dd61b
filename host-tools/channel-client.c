/* SPDX-License-Identifier: MIT */
/*
 * The QEMU-guest-agent-style client of shrinkd's host channel (see
 * channel-client.h).
 */
#include "channel-client.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "json-stream.h"
#include "unix-io.h"
#include "vs-error.h"

struct VsChannel {
  VsAgent parent; /* first: a VsChannel is a VsAgent */
  int fd;
  char *where;
  VsJsonStream *stream;
  gboolean synced;
};

static const VsAgentOps channel_agent_ops;

VsChannel *vs_channel_new_for_fd(int fd, const char *where) {
  VsChannel *ch = g_new0(VsChannel, 1);
  int flags = fcntl(fd, F_GETFL);

  if (flags >= 0 && !(flags & O_NONBLOCK))
    (void)fcntl(fd, F_SETFL, flags | O_NONBLOCK);
  ch->parent.ops = &channel_agent_ops;
  ch->fd = fd;
  ch->where = g_strdup(where);
  ch->stream = vs_json_stream_new(VS_CHANNEL_MAX_ANSWER_BYTES, VS_CHANNEL_MAX_DEPTH);
  return ch;
}

void vs_channel_free(VsChannel *channel) {
  if (!channel)
    return;
  if (channel->fd >= 0)
    close(channel->fd);
  vs_json_stream_free(channel->stream);
  g_free(channel->where);
  g_free(channel);
}

/* Writes {"execute": @command[, "arguments": @arguments]} and a newline,
 * after a 0xFF if @sync_byte. */
static gboolean send_command(VsChannel *ch, gboolean sync_byte, const char *command,
                             JsonObject *arguments, gint64 deadline_us, GError **error) {
  g_autoptr(JsonNode) root = json_node_new(JSON_NODE_OBJECT);
  g_autoptr(GString) text = g_string_new(NULL);
  g_autofree char *json = NULL;

  json_node_take_object(root, vs_json_request_new(command, arguments));
  json = vs_json_to_string(root);
  if (sync_byte)
    g_string_append_c(text, (char)VS_JSON_SYNC_BYTE);
  g_string_append(text, json);
  g_string_append_c(text, '\n');
  g_debug("%s: -> %s%s", ch->where, sync_byte ? "0xFF " : "", json);
  return vs_write_all(ch->fd, text->str, text->len, deadline_us, error);
}

/* Prefixes @error's message with what we were doing. */
static void prefix_error(GError **error, const char *command) {
  g_prefix_error(error, "%s: ", command);
}

static gboolean sync_until(VsChannel *ch, gint64 deadline_us, GError **error) {
  gint64 id = g_random_int_range(1, G_MAXINT32);
  g_autoptr(JsonObject) args = json_object_new();

  ch->synced = FALSE;
  json_object_set_int_member(args, "id", id);
  vs_json_stream_skip_to_sync(ch->stream);
  if (!send_command(ch, TRUE, "guest-sync-delimited", args, deadline_us, error)) {
    prefix_error(error, "guest-sync-delimited");
    return FALSE;
  }
  for (;;) {
    g_autoptr(JsonNode) answer = NULL;
    g_autoptr(GError) local = NULL;
    JsonObject *o;
    JsonNode *ret;

    if (!vs_read_object(ch->fd, ch->stream, deadline_us, &answer, &local)) {
      /* Junk after a 0xFF is someone else's: keep waiting for ours. */
      if (g_error_matches(local, VS_ERROR, VS_ERROR_PROTOCOL))
        continue;
      if (g_error_matches(local, VS_ERROR, VS_ERROR_TIMEOUT))
        g_set_error(error, VS_ERROR, VS_ERROR_TIMEOUT, "no answer to guest-sync-delimited");
      else
        g_propagate_prefixed_error(error, g_steal_pointer(&local), "guest-sync-delimited: ");
      return FALSE;
    }
    o = json_node_get_object(answer);
    ret = json_object_get_member(o, "return");
    if (ret && JSON_NODE_HOLDS_VALUE(ret) && json_node_get_value_type(ret) == G_TYPE_INT64 &&
        json_node_get_int(ret) == id) {
      ch->synced = TRUE;
      return TRUE;
    }
    /* A stale answer (an earlier client's sync, or whatever followed its
     * 0xFF): wait for the next 0xFF. */
    g_debug("%s: <- a stale answer after a 0xFF, skipped", ch->where);
    vs_json_stream_skip_to_sync(ch->stream);
  }
}

gboolean vs_channel_sync(VsChannel *channel, guint timeout_ms, GError **error) {
  return sync_until(channel, vs_deadline_in(timeout_ms), error);
}

/* The "return" of @answer, or NULL with @error for an error answer or one
 * that is neither. */
static JsonNode *answer_return(JsonNode *answer, GError **error) {
  JsonObject *o = json_node_get_object(answer);
  JsonNode *ret = json_object_get_member(o, "return");
  JsonNode *err = json_object_get_member(o, "error");

  if (ret)
    return json_node_copy(ret);
  if (err && JSON_NODE_HOLDS_OBJECT(err)) {
    JsonObject *e = json_node_get_object(err);
    const char *klass = json_object_get_string_member_with_default(e, "class", "GenericError");
    const char *desc = json_object_get_string_member_with_default(e, "desc", "(no description)");
    /* The text is the guest's: it ends up on the operator's terminal. */
    g_autofree char *safe_desc = vs_printable(desc, 512);
    g_autofree char *safe_class = vs_printable(klass, 64);

    g_set_error(error, VS_AGENT_ERROR, (gint)vs_agent_error_from_class(klass), "%s (%s)", safe_desc,
                safe_class);
    return NULL;
  }
  g_set_error_literal(error, VS_ERROR, VS_ERROR_PROTOCOL,
                      "an answer with neither \"return\" nor \"error\"");
  return NULL;
}

JsonNode *vs_channel_call(VsChannel *channel, const char *command, JsonObject *arguments,
                          guint timeout_ms, GError **error) {
  VsChannel *ch = channel;
  gint64 deadline_us = vs_deadline_in(timeout_ms);
  g_autoptr(JsonNode) answer = NULL;
  g_autoptr(GError) local = NULL;
  gint64 t0 = g_get_monotonic_time();
  JsonNode *ret;

  if (!ch->synced && !sync_until(ch, deadline_us, error))
    return NULL;
  if (!send_command(ch, FALSE, command, arguments, deadline_us, &local) ||
      !vs_read_object(ch->fd, ch->stream, deadline_us, &answer, &local)) {
    /* Whatever answer is still coming must not be taken for the next
     * command's. */
    ch->synced = FALSE;
    if (g_error_matches(local, VS_ERROR, VS_ERROR_TIMEOUT))
      g_set_error(error, VS_ERROR, VS_ERROR_TIMEOUT,
                  "%s: no answer from the guest agent within %u ms", command, timeout_ms);
    else
      g_propagate_prefixed_error(error, g_steal_pointer(&local), "%s: ", command);
    return NULL;
  }
  /* The answer's text is the guest's: its size only, at debug level. */
  g_debug("%s: <- %s answered in %.1f ms (%s)", ch->where, command,
          (double)(g_get_monotonic_time() - t0) / 1000.0,
          json_object_has_member(json_node_get_object(answer), "return") ? "return" : "error");
  ret = answer_return(answer, &local);
  if (!ret) {
    if (local->domain != VS_AGENT_ERROR)
      ch->synced = FALSE;
    g_propagate_error(error, g_steal_pointer(&local));
  }
  return ret;
}

VsChannel *vs_channel_open(const char *path, guint timeout_ms, GError **error) {
  gint64 deadline_us = vs_deadline_in(timeout_ms);
  g_autoptr(GError) local = NULL;
  g_autoptr(VsChannel) ch = NULL;
  int fd;

  fd = vs_unix_connect(path, deadline_us, &local);
  if (fd < 0) {
    /* The message already starts with the path. */
    const char *why = local->message;

    if (g_str_has_prefix(why, path) && why[strlen(path)] == ':')
      why += strlen(path) + 2;
    g_set_error(error, VS_ERROR, VS_ERROR_NO_AGENT,
                "cannot connect to the guest agent channel at %s: %s (is shrinkd running in the "
                "guest?)",
                path, why);
    return NULL;
  }
  ch = vs_channel_new_for_fd(fd, path);
  if (!sync_until(ch, deadline_us, &local)) {
    if (g_error_matches(local, VS_ERROR, VS_ERROR_TIMEOUT))
      g_set_error(error, VS_ERROR, VS_ERROR_NO_AGENT,
                  "cannot connect to the guest agent channel at %s: no answer to "
                  "guest-sync-delimited within %u ms (is shrinkd running in the guest? is another "
                  "client using the channel?)",
                  path, timeout_ms);
    else
      g_set_error(error, VS_ERROR, VS_ERROR_NO_AGENT,
                  "cannot connect to the guest agent channel at %s: %s (is shrinkd running in the "
                  "guest?)",
                  path, local->message);
    return NULL;
  }
  return g_steal_pointer(&ch);
}

static JsonNode *agent_call(VsAgent *self, const char *command, JsonObject *arguments,
                            guint timeout_ms, GError **error) {
  return vs_channel_call((VsChannel *)self, command, arguments, timeout_ms, error);
}

static void agent_free(VsAgent *self) {
  vs_channel_free((VsChannel *)self);
}

static const VsAgentOps channel_agent_ops = {
    .call = agent_call,
    .free = agent_free,
};

VsAgent *vs_channel_into_agent(VsChannel *channel) {
  return &channel->parent;
}
