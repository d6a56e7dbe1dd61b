/* SPDX-License-Identifier: MIT */
#include "vs-error.h"

#include <string.h>

G_DEFINE_QUARK(vs - error - quark, vs_error)
G_DEFINE_QUARK(vs - agent - error - quark, vs_agent_error)

static const char *const class_names[] = {
    [VS_AGENT_ERROR_GENERIC] = "GenericError",
    [VS_AGENT_ERROR_COMMAND_NOT_FOUND] = "CommandNotFound",
    [VS_AGENT_ERROR_INVALID_PARAMETER] = "InvalidParameter",
    [VS_AGENT_ERROR_COMMAND_DISABLED] = "CommandDisabled",
    [VS_AGENT_ERROR_BUSY] = "Busy",
    [VS_AGENT_ERROR_OTHER] = "Other",
};

VsAgentErrorCode vs_agent_error_from_class(const char *klass) {
  if (!klass)
    return VS_AGENT_ERROR_GENERIC;
  for (guint i = 0; i < VS_AGENT_ERROR_OTHER; i++)
    if (strcmp(klass, class_names[i]) == 0)
      return (VsAgentErrorCode)i;
  return VS_AGENT_ERROR_OTHER;
}

char *vs_printable(const char *text, gsize max_chars) {
  GString *out = g_string_new(NULL);
  const char *p = text ? text : "";
  gsize n = 0;

  while (*p) {
    gunichar c = g_utf8_get_char_validated(p, -1);

    if (n == max_chars) {
      g_string_append(out, "...");
      break;
    }
    if (c == (gunichar)-1 || c == (gunichar)-2) {
      g_string_append_c(out, '?');
      p++;
    } else {
      /* C0, DEL and C1 controls could steer the terminal. */
      if (c < 0x20 || (c >= 0x7f && c < 0xa0))
        g_string_append_c(out, '?');
      else
        g_string_append_unichar(out, c);
      p = g_utf8_next_char(p);
    }
    n++;
  }
  return g_string_free(out, FALSE);
}

const char *vs_agent_error_class_name(VsAgentErrorCode code) {
  if ((guint)code > VS_AGENT_ERROR_OTHER)
    return "Other";
  return class_names[code];
}
