/* SPDX-License-Identifier: MIT */
/*
 * The PSI source (see source.h): memory pressure that does not come from
 * the balloon.
 *
 * A trigger written to /proc/pressure/memory makes the kernel signal
 * POLLPRI on that fd when the stall time within the window exceeds the
 * threshold (at most once per window). The fd is never read: reading a
 * PSI file often stops its own trigger from firing. POLLERR means the
 * trigger is gone (the file's owner went away); the source then stops.
 *
 * Without CAP_SYS_RESOURCE the kernel takes only 2 s windows; a refused
 * trigger is tried once more over 2 s, its threshold scaled, and the
 * status says so.
 *
 * A balloon stall with no swap barely moves PSI (66 ms of stall in 20 s
 * was measured): PSI is an extra trigger for other pressure, never the
 * balloon's.
 */
#include "source.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

typedef struct {
  AgentSource base;
  char *trigger;
  int fd;
  GSource *watch;
  uint64_t fired;
} PsiSource;

static gboolean on_event(int fd, GIOCondition condition, gpointer data) {
  PsiSource *self = data;
  AgentSourceEvent ev = {.kind = AGENT_SOURCE_EVENT_PRESSURE};

  if (condition & G_IO_ERR) {
    g_warning("psi: the trigger \"%s\" went away; no PSI events from now on", self->trigger);
    agent_source_set_status(&self->base, FALSE, "none", "the trigger went away");
    g_source_unref(self->watch);
    self->watch = NULL;
    close(self->fd);
    self->fd = -1;
    return G_SOURCE_REMOVE;
  }
  self->fired++;
  ev.text = self->trigger;
  agent_source_emit(&self->base, &ev);
  return G_SOURCE_CONTINUE;
}

/* Writes @trigger to a new fd on @path; returns the fd or -errno. The
 * kernel takes the trigger with its NUL. */
static int open_trigger(const char *path, const char *trigger) {
  int fd = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC);
  int e;

  if (fd < 0)
    return -errno;
  if (write(fd, trigger, strlen(trigger) + 1) < 0) {
    e = errno;
    close(fd);
    return -e;
  }
  return fd;
}

/* The same trigger over a 2 s window (threshold scaled), or NULL when
 * @trigger is not "some|full THRESHOLD WINDOW" or has that window. */
static char *two_second_variant(const char *trigger) {
  char kind[8];
  unsigned long long threshold, window;
  char end;

  if (sscanf(trigger, "%7s %llu %llu %c", kind, &threshold, &window, &end) != 3 || window == 0 ||
      window == 2000000 || window > 10000000 || threshold > window)
    return NULL;
  return g_strdup_printf("%s %llu 2000000", kind, threshold * 2000000 / window);
}

static void psi_start(AgentSource *base) {
  PsiSource *self = (PsiSource *)base;
  g_autofree char *path = agent_source_path(base, "/proc/pressure/memory");
  g_autofree char *variant = NULL;
  int fd, e;

  if (!self->trigger) {
    agent_source_set_status(base, FALSE, "none", "disabled by configuration");
    return;
  }
  fd = open_trigger(path, self->trigger);
  if (fd == -ENOENT) {
    g_warning("psi: no %s (a kernel without PSI, or booted with psi=0); no PSI trigger", path);
    agent_source_set_status(base, FALSE, "none", "no %s: a kernel without PSI", path);
    return;
  }
  if ((fd == -EINVAL || fd == -EPERM) && (variant = two_second_variant(self->trigger))) {
    /* Without CAP_SYS_RESOURCE the kernel takes only windows of 2 s. */
    e = -fd;
    fd = open_trigger(path, variant);
    if (fd >= 0) {
      g_warning("psi: the trigger \"%s\" was refused (%s: without CAP_SYS_RESOURCE windows must "
                "be 2 s); using \"%s\"",
                self->trigger, g_strerror(e), variant);
      self->fd = fd;
      self->watch = agent_source_watch_fd(base, fd, G_IO_PRI | G_IO_ERR, on_event, self);
      agent_source_set_status(base, TRUE, "trigger",
                              "\"%s\" on %s (\"%s\" was refused: %s; without "
                              "CAP_SYS_RESOURCE windows must be 2 s)",
                              variant, path, self->trigger, g_strerror(e));
      g_free(self->trigger);
      self->trigger = g_steal_pointer(&variant);
      return;
    }
  }
  if (fd < 0) {
    e = -fd;
    g_warning("psi: the trigger \"%s\" on %s was refused: %s%s; no PSI trigger", self->trigger,
              path, g_strerror(e),
              e == EINVAL || e == EPERM ? " (without CAP_SYS_RESOURCE windows must be 2 s)" : "");
    agent_source_set_status(
        base, FALSE, "none", "trigger \"%s\" refused: %s%s", self->trigger, g_strerror(e),
        e == EINVAL || e == EPERM ? " (without CAP_SYS_RESOURCE windows must be 2 s)" : "");
    return;
  }
  self->fd = fd;
  self->watch = agent_source_watch_fd(base, fd, G_IO_PRI | G_IO_ERR, on_event, self);
  agent_source_set_status(base, TRUE, "trigger", "\"%s\" on %s", self->trigger, path);
}

static void psi_stop(AgentSource *base) {
  PsiSource *self = (PsiSource *)base;

  agent_source_drop(&self->watch);
  if (self->fd >= 0)
    close(self->fd);
  self->fd = -1;
  agent_source_set_status(base, FALSE, "none", "%s", self->trigger ? "stopped" : "disabled");
}

static void psi_finalize(AgentSource *base) {
  PsiSource *self = (PsiSource *)base;

  g_free(self->trigger);
  g_free(self);
}

static const AgentSourceClass psi_class = {
    .name = "psi",
    .start = psi_start,
    .stop = psi_stop,
    .finalize = psi_finalize,
};

AgentSource *agent_source_psi_new(const AgentSourceEnv *env, const char *trigger) {
  PsiSource *self = g_new0(PsiSource, 1);

  agent_source_init(&self->base, &psi_class, env);
  if (trigger && *trigger && strcmp(trigger, "off") != 0)
    self->trigger = g_strdup(trigger);
  else
    agent_source_set_status(&self->base, FALSE, "none", "disabled by configuration");
  self->fd = -1;
  return &self->base;
}
