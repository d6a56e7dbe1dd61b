/* SPDX-License-Identifier: MIT */
/*
 * The agent's privileges: after start-up shrinkd gives up every capability
 * it does not use any more, and stays uid 0.
 *
 * Start-up needs a lot (config space opened by a CAP_SYS_ADMIN opener, the
 * kprobe's perf_event_open, /dev/kmsg under dmesg_restrict, a PSI trigger
 * with a short window, a vsock port below 1024), but each of those is
 * checked once, when the file or event is opened, and the descriptor keeps
 * working without the capability. What is checked again later is kept;
 * the table in privileges.c says which and why. The uid stays 0: the
 * files opened later (the host channel's /dev/vport*, the socket's lock
 * file) are root's, and being their owner needs no capability.
 *
 * The drop: the bounding set (CAP_SETPCAP is still held then), ambient
 * capabilities cleared, securebits that make uid 0 gain nothing at an
 * execve, then capset() to the kept set, then no-new-privs.
 *
 * Process-wide, main loop thread only (before the loop runs).
 */
#pragma once

#include <glib.h>
#include <stdint.h>

/* Capability numbers go up to 63 in the two 32-bit words of version 3. */
#define AGENT_PRIVILEGES_CAP_MAX 63

typedef struct {
  gboolean dropped;            /* capabilities beyond the kept set were given up */
  gboolean no_new_privs;       /* PR_GET_NO_NEW_PRIVS after the drop */
  uint64_t effective_at_start; /* CapEff before the drop */
  uint64_t effective;          /* CapEff, CapPrm, CapBnd after it */
  uint64_t permitted;
  uint64_t bounding;
  int securebits;   /* PR_GET_SECUREBITS after the drop, or -1 */
  char reason[160]; /* one line for the log and status: what was done, or why not */
} AgentPrivileges;

/* The capabilities kept after start-up (the table in privileges.c), as a
 * mask of 1 << CAP_*. */
uint64_t agent_privileges_kept_mask(void);

/*
 * Gives up every capability outside agent_privileges_kept_mask(), and
 * sets no-new-privs, as described at the top. Never fails the agent: a
 * step the kernel refuses is logged as a warning and said in
 * @out->reason; a process without capabilities (not root) changes nothing
 * but no-new-privs. Fills @out with the state afterwards.
 */
void agent_privileges_drop(AgentPrivileges *out);

/* Fills @out with the process's state now, changing nothing (for
 * --keep-privileges); @reason (copied) says why nothing was dropped. */
void agent_privileges_read(AgentPrivileges *out, const char *reason);

/* The name of capability @cap ("CAP_IPC_LOCK"), or NULL for a number this
 * build does not know. Static storage. */
const char *agent_privileges_cap_name(unsigned cap);

/* The names of the bits of @mask, joined by @sep ("CAP_A,CAP_B"); unknown
 * bits as "cap_N"; "" for 0. Newly allocated. */
char *agent_privileges_mask_names(uint64_t mask, const char *sep);

/*
 * Parses the text of /proc/sys/kernel/cap_last_cap ("40\n") into *@out.
 * Returns FALSE (and leaves *@out) unless it is one number within
 * 0..AGENT_PRIVILEGES_CAP_MAX and an optional newline.
 */
gboolean agent_privileges_parse_last_cap(const char *text, gsize len, unsigned *out);
