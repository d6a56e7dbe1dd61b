/* SPDX-License-Identifier: MIT */
/*
 * The agent's own memory: locked so that it can work when the guest has
 * none to spare, and kept small (the target is a Pss under 2 MiB).
 *
 * Locking uses mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT): pages are
 * locked as they are touched, so only what the agent uses is resident
 * (without MCL_ONFAULT every thread stack and library page would be). The
 * price of locking is that the heap can no longer give free pages back
 * from the inside (the kernel refuses MADV_DONTNEED on locked pages), so a
 * burst (a thousand shrinkers, a large status) would stay resident for
 * good; agent_memory_release_soon() undoes that when it is worth it.
 *
 * Process-wide state, main loop thread only.
 */
#pragma once

#include <glib.h>

/*
 * Drops what only start-up needed, before locking: pages of the libraries'
 * read-only segments that only this process maps (relocation tables and
 * init code the dynamic linker and constructors touched), paged out with
 * MADV_PAGEOUT (Linux >= 5.4; a hint: a page touched again comes back from
 * its file) and marked MADV_RANDOM (a later fault maps one page, not the
 * cached ones around it), and the heap start-up freed. The agent's own code is touched
 * instead, every page of it: it is small, and a round must not have to
 * fault it in when the guest has no memory left. Call before the work
 * whose code should stay resident (the sources' start, the warm-up).
 */
void agent_memory_drop_startup_pages(void);

/* Locks memory as above, after touching a heap reserve of
 * AGENT_MEMORY_HEAP_RESERVE bytes that trimming never gives back: a
 * round started when the guest has no memory left (a stalled balloon)
 * must not grow the heap by a page, since that page fault may call the
 * OOM killer on an application (seen in a guest whose balloon config
 * space was unreadable). A failure to lock is logged as a warning (the
 * agent works on, unlocked). */
void agent_memory_lock(void);

/*
 * Schedules (once, from an idle callback) a check that gives free heap
 * back to the kernel if at least AGENT_MEMORY_RELEASE_MIN bytes of it are
 * free: unlock, malloc_trim(), lock again. Call after freeing something
 * large (a peer with many shrinkers, a large reply). Cheap when there is
 * nothing to do.
 */
void agent_memory_release_soon(void);

/* Removes a scheduled check (at shutdown). */
void agent_memory_shutdown(void);

#define AGENT_MEMORY_RELEASE_MIN (128 * 1024)
#define AGENT_MEMORY_HEAP_RESERVE (192 * 1024)
