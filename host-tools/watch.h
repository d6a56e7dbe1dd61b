/* SPDX-License-Identifier: MIT */
/*
 * virt-shrink watch: a line per change of the balloon, of the guest's
 * state, of the agent's reachability, registrations and rounds, until
 * stopped.
 *
 * The agent channel is opened for each poll and closed in between: QEMU
 * serves one client per channel socket, and a setmem run next to the watch
 * must be able to reach the agent.
 */
#pragma once

#include <signal.h>
#include <stdio.h>

#include "backend.h"

typedef struct {
  guint interval_ms;      /* between polls */
  guint agent_timeout_ms; /* connect, sync and shrinkd-status */
  gboolean use_agent;     /* FALSE: the balloon only */
  /* Set (by a signal handler) to stop; checked between polls and while
   * sleeping. */
  volatile sig_atomic_t *stop;
  FILE *out;
} VsWatchOptions;

/* Watches @backend until *opts->stop. Returns the exit status: 0 when
 * stopped, 1 when the hypervisor can no longer be read (the guest is gone;
 * a line says why). */
int vs_watch_run(VsBackend *backend, const VsWatchOptions *opts);
