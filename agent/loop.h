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

/*
 * Runs @func(@user_data) on a next iteration of the default context, at
 * the priority of the agent's sockets. Not g_idle_add(): an idle source
 * runs only when nothing of a higher priority is ready, and a local user
 * who keeps connecting (every refused connection comes back at once)
 * keeps the listener ready forever: a round queued as idle never started
 * (seen with 4096 connections that never said HELLO). At the same
 * priority, GLib dispatches every ready source of an iteration, so the
 * deferred call runs within one. Returns the source id.
 */
guint agent_loop_defer(GSourceFunc func, gpointer user_data);
