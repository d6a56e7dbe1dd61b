/* SPDX-License-Identifier: MIT */
/*
 * The common part of pressure sources (see source.h).
 */
#include "source.h"

#include <stdarg.h>

#include "procfs.h"

void agent_source_init(AgentSource *self, const AgentSourceClass *klass,
                       const AgentSourceEnv *env) {
  self->klass = klass;
  self->context = env && env->context ? g_main_context_ref(env->context) : NULL;
  self->root = g_strdup(env && env->root && *env->root ? env->root : "/");
  self->mode = g_strdup("none");
  self->reason = g_strdup("not started");
}

void agent_source_set_sink(AgentSource *self, AgentSourceSink sink, gpointer user_data) {
  self->sink = sink;
  self->sink_data = user_data;
}

void agent_source_disable(AgentSource *self, const char *reason) {
  agent_source_stop(self);
  self->disabled = TRUE;
  agent_source_set_status(self, FALSE, "none", "disabled: %s", reason);
}

void agent_source_start(AgentSource *self) {
  if (self->started || self->disabled)
    return;
  self->started = TRUE;
  self->klass->start(self);
}

void agent_source_stop(AgentSource *self) {
  if (!self->started)
    return;
  self->started = FALSE;
  self->klass->stop(self);
}

void agent_source_refresh(AgentSource *self) {
  if (self->started && self->klass->refresh)
    self->klass->refresh(self);
}

void agent_source_free(AgentSource *self) {
  if (!self)
    return;
  agent_source_stop(self);
  g_free(self->root);
  g_free(self->mode);
  g_free(self->reason);
  if (self->context)
    g_main_context_unref(self->context);
  self->klass->finalize(self);
}

void agent_source_get_status(const AgentSource *self, AgentSourceStatus *out) {
  out->name = self->klass->name;
  out->active = self->active;
  out->mode = self->mode;
  out->reason = self->reason;
  out->refused = self->refused;
}

const char *agent_source_name(const AgentSource *self) {
  return self->klass->name;
}

void agent_source_set_status(AgentSource *self, gboolean active, const char *mode,
                             const char *format, ...) {
  va_list ap;

  self->active = active;
  g_free(self->mode);
  self->mode = g_strdup(mode);
  g_free(self->reason);
  va_start(ap, format);
  self->reason = g_strdup_vprintf(format, ap);
  va_end(ap);
}

void agent_source_emit(AgentSource *self, AgentSourceEvent *event) {
  event->source = self->klass->name;
  if (event->mono_us == 0)
    event->mono_us = g_get_monotonic_time();
  if (self->sink)
    self->sink(self, event, self->sink_data);
}

char *agent_source_path(const AgentSource *self, const char *abs_path) {
  return agent_procfs_path(self->root, abs_path);
}

GSource *agent_source_watch_fd(AgentSource *self, int fd, GIOCondition condition,
                               GUnixFDSourceFunc func, gpointer user_data) {
  GSource *s = g_unix_fd_source_new(fd, condition);

  /* Recursion allowed for the reason given at agent_loop_add_fd(): a
   * dispatch then does not wake the loop a second time. */
  g_source_set_can_recurse(s, TRUE);
  g_source_set_callback(s, (GSourceFunc)(void (*)(void))func, user_data, NULL);
  g_source_attach(s, self->context);
  return s;
}

GSource *agent_source_timeout(AgentSource *self, guint interval_ms, GSourceFunc func,
                              gpointer user_data) {
  GSource *s = g_timeout_source_new(interval_ms);

  g_source_set_callback(s, func, user_data, NULL);
  g_source_attach(s, self->context);
  return s;
}

void agent_source_drop(GSource **gsource) {
  if (*gsource) {
    g_source_destroy(*gsource);
    g_source_unref(*gsource);
    *gsource = NULL;
  }
}
