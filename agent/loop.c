/* SPDX-License-Identifier: MIT */
/* Main-loop helpers shared by the agent's modules. */
#include "loop.h"

guint agent_loop_add_fd(int fd, GIOCondition condition, GUnixFDSourceFunc func,
                        gpointer user_data, GDestroyNotify notify) {
  GSource *source = g_unix_fd_source_new(fd, condition);
  guint id;

  g_source_set_can_recurse(source, TRUE);
  g_source_set_callback(source, (GSourceFunc)(void (*)(void))func, user_data, notify);
  id = g_source_attach(source, NULL);
  g_source_unref(source);
  return id;
}

guint agent_loop_defer(GSourceFunc func, gpointer user_data) {
  return g_idle_add_full(G_PRIORITY_DEFAULT, func, user_data, NULL);
}
