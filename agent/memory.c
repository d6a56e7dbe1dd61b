/* SPDX-License-Identifier: MIT */
/*
 * The agent's own memory (see memory.h).
 */
#include "memory.h"
#include "loop.h"

#include <errno.h>
#include <stdbool.h>
#include <link.h>
#include <malloc.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef MCL_ONFAULT
#define MCL_ONFAULT 4 /* Linux >= 4.4; older glibc headers lack the name */
#endif
#ifndef MADV_PAGEOUT
#define MADV_PAGEOUT 21 /* Linux >= 5.4 */
#endif

static gboolean locked;
static guint release_id;

/* Reads one byte of every page in [start, end). Not instrumented: the
 * pages hold our read-only data too, whose globals AddressSanitizer
 * surrounds with red zones that a plain read would trip over. */
static void __attribute__((no_sanitize_address)) touch_pages(uintptr_t start, uintptr_t end,
                                                            uintptr_t page) {
  for (uintptr_t p = start; p < end; p += page)
    (void)*(volatile const char *)p;
}

static int page_out_segments(struct dl_phdr_info *info, size_t size, void *data) {
  const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
  /* The first object is the program itself (its name is empty). */
  const bool ours = info->dlpi_name == NULL || info->dlpi_name[0] == '\0';

  for (int i = 0; i < info->dlpi_phnum; i++) {
    const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
    uintptr_t start, end;

    /* Read-only segments only: writable ones (relocated data, RELRO
     * included) hold private copies that must not be dropped. */
    if (ph->p_type != PT_LOAD || (ph->p_flags & PF_W))
      continue;
    start = (info->dlpi_addr + ph->p_vaddr) & ~(page - 1);
    end = (info->dlpi_addr + ph->p_vaddr + ph->p_memsz + page - 1) & ~(page - 1);
    if (ours) {
      touch_pages(start, end, page);
    } else {
      madvise((void *)start, end - start, MADV_PAGEOUT);
      /* No fault-around and no read-ahead: a fault maps the one page the
       * code needs, not the 16 around it that happen to be cached, which
       * would be locked too (measured: 1.56 -> 1.27 MiB of Pss). */
      madvise((void *)start, end - start, MADV_RANDOM);
    }
  }
  return 0;
}

void agent_memory_drop_startup_pages(void) {
  dl_iterate_phdr(page_out_segments, NULL);
  malloc_trim(0);
}

/* Touches AGENT_MEMORY_HEAP_RESERVE bytes of heap and frees them: glibc
 * keeps them at the top of the heap (the trim threshold is set above
 * them), so later allocations reuse pages already resident and locked. */
static void reserve_heap(void) {
  enum { PIECE = 16 * 1024, PIECES = AGENT_MEMORY_HEAP_RESERVE / PIECE };
  void *pieces[PIECES];

  mallopt(M_TRIM_THRESHOLD, 2 * AGENT_MEMORY_HEAP_RESERVE);
  for (int i = 0; i < PIECES; i++) {
    pieces[i] = malloc(PIECE);
    if (pieces[i])
      memset(pieces[i], 0, PIECE);
  }
  for (int i = PIECES - 1; i >= 0; i--)
    free(pieces[i]);
}

static gboolean lock_all(void) {
  return mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT) == 0;
}

void agent_memory_lock(void) {
  reserve_heap();
  locked = lock_all();
  if (!locked)
    g_warning("cannot lock memory (mlockall: %s); shrinkd may stall when memory is short",
              g_strerror(errno));
}

static gboolean release_cb(gpointer data) {
  struct mallinfo2 mi = mallinfo2();

  release_id = 0;
  if (mi.fordblks < AGENT_MEMORY_RELEASE_MIN)
    return G_SOURCE_REMOVE;
  /* Free pages inside a locked heap cannot be given back: unlock for the
   * moment of the trim. Pages in use stay resident meanwhile. */
  if (locked)
    munlockall();
  malloc_trim(AGENT_MEMORY_HEAP_RESERVE);
  if (locked && !lock_all())
    g_warning("cannot lock memory again (mlockall: %s)", g_strerror(errno));
  g_debug("gave back free heap (%zu bytes were free)", mi.fordblks);
  return G_SOURCE_REMOVE;
}

void agent_memory_release_soon(void) {
  if (!release_id)
    release_id = agent_loop_defer(release_cb, NULL);
}

void agent_memory_shutdown(void) {
  if (release_id) {
    g_source_remove(release_id);
    release_id = 0;
  }
}
