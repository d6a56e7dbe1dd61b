/* SPDX-License-Identifier: MIT */
/* Main-loop helpers shared by the agent's modules. */
#pragma once

#include <glib-unix.h>
#include <glib.h>

/*
 * Like g_unix_fd_add_full() on the default context, but the source may
 * recurse. Why: GLib blocks a non-recursive source while dispatching it and
 * unblocks it afterwards, and unblocking re-adds its fd to the poll set,
 * which signals the context's wake-up eventfd. Every dispatch then costs a
 * write, an extra poll and a read: about half of a one-shrinker round. The
 * agent never iterates the main loop from inside a callback, so recursion
 * cannot happen. Returns the source id (for g_source_remove()).
 */
guint agent_loop_add_fd(int fd, GIOCondition condition, GUnixFDSourceFunc func,
                        gpointer user_data, GDestroyNotify notify);
