/* SPDX-License-Identifier: MIT */
/*
 * shrink-example-osv: a program written for OSv's shrinker API, unchanged.
 *
 * It includes no header of libshrink: like an OSv program it declares
 * osv_register_shrinker() itself and is only linked with -lshrink. It holds
 * memory in a few large blocks (--mib in total) and, like a program with
 * nothing cheap to give, frees only when asked hard (soft requests get 0).
 * The callback runs on libshrink's thread. OSv's API has no way to name the
 * socket: it comes from $SHRINKD_SOCKET, else the system socket.
 *
 * Standard output gets one machine-readable line per event, flushed at once:
 *   READY t_us=T app=osv pid=P held=B
 *   EVENT t_us=T app=osv pid=P kind=shrink shrinker=osv-blocks level=soft|hard
 *         target=B freed=B held=B
 *   EXIT t_us=T app=osv pid=P held=B
 * (OSv's callback receives neither a round nor a reason.) t_us is
 * CLOCK_REALTIME in microseconds; B are bytes.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Exactly as OSv declares it; libshrink exports it under the same name. */
extern void *osv_register_shrinker(const char *name,
                                   size_t (*func)(size_t target, bool hard));

#define BLOCK_BYTES (4u * 1024 * 1024)

/* The callback runs on libshrink's thread, main() on its own: one lock. */
static pthread_mutex_t blocks_lock = PTHREAD_MUTEX_INITIALIZER;
static void **blocks;
static size_t nblocks;

static uint64_t realtime_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static size_t shrink_blocks(size_t target, bool hard) {
  size_t freed = 0;
  pthread_mutex_lock(&blocks_lock);
  /* Nothing here is cheap to rebuild: give only under hard pressure. */
  if (hard)
    while (freed < target && nblocks > 0) {
      free(blocks[--nblocks]);
      freed += BLOCK_BYTES;
    }
  size_t held = nblocks * BLOCK_BYTES;
  pthread_mutex_unlock(&blocks_lock);
  printf("EVENT t_us=%" PRIu64 " app=osv pid=%ld kind=shrink shrinker=osv-blocks"
         " level=%s target=%zu freed=%zu held=%zu\n",
         realtime_us(), (long)getpid(), hard ? "hard" : "soft", target, freed, held);
  fflush(stdout);
  return freed;
}

static void usage(FILE *out, const char *argv0) {
  fprintf(out,
          "Usage: %s [OPTION]...\n"
          "An OSv-style program: registers with osv_register_shrinker() and frees\n"
          "its blocks only on hard requests. The socket comes from $SHRINKD_SOCKET.\n"
          "\n"
          "  --mib N   hold N MiB in 4 MiB blocks (default 128)\n"
          "  --help    show this help\n",
          argv0);
}

int main(int argc, char **argv) {
  static const struct option options[] = {
      {"mib", required_argument, NULL, 'm'},
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0},
  };
  unsigned long mib = 128;
  int opt;
  while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
    char *end;
    switch (opt) {
    case 'm':
      errno = 0;
      mib = strtoul(optarg, &end, 10);
      if (errno || end == optarg || *end || optarg[0] == '-' || mib == 0 ||
          mib > 1024ul * 1024) {
        fprintf(stderr, "%s: --mib: expected a number of MiB, not '%s'\n", argv[0], optarg);
        return 2;
      }
      break;
    case 'h':
      usage(stdout, argv[0]);
      return 0;
    default:
      usage(stderr, argv[0]);
      return 2;
    }
  }
  if (optind < argc) {
    fprintf(stderr, "%s: unexpected argument '%s'\n", argv[0], argv[optind]);
    return 2;
  }

  /* Blocked before any thread exists, so that sigwait() below gets them. */
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  pthread_sigmask(SIG_BLOCK, &sigs, NULL);

  size_t want = ((size_t)mib * 1024 * 1024 + BLOCK_BYTES - 1) / BLOCK_BYTES;
  blocks = calloc(want, sizeof *blocks);
  if (!blocks) {
    fprintf(stderr, "%s: out of memory\n", argv[0]);
    return 1;
  }
  for (size_t i = 0; i < want; i++) {
    blocks[i] = malloc(BLOCK_BYTES);
    if (!blocks[i]) {
      fprintf(stderr, "%s: out of memory after %zu blocks\n", argv[0], i);
      return 1;
    }
    memset(blocks[i], 0x5a, BLOCK_BYTES); /* touch every page: real RSS */
    nblocks++;
  }

  if (!osv_register_shrinker("osv-blocks", shrink_blocks)) {
    fprintf(stderr, "%s: osv_register_shrinker failed (set SHRINK_DEBUG=1 for why)\n",
            argv[0]);
    return 1;
  }
  pthread_mutex_lock(&blocks_lock);
  size_t held = nblocks * BLOCK_BYTES;
  pthread_mutex_unlock(&blocks_lock);
  printf("READY t_us=%" PRIu64 " app=osv pid=%ld held=%zu\n", realtime_us(), (long)getpid(),
         held);
  fflush(stdout);

  int sig;
  while (sigwait(&sigs, &sig) != 0)
    ;

  /* OSv has no unregister: the shrinker lives until the process ends, so the
   * blocks stay under the lock it takes. */
  pthread_mutex_lock(&blocks_lock);
  held = nblocks * BLOCK_BYTES;
  while (nblocks > 0)
    free(blocks[--nblocks]);
  free(blocks);
  blocks = NULL;
  printf("EXIT t_us=%" PRIu64 " app=osv pid=%ld held=%zu\n", realtime_us(), (long)getpid(),
         held);
  fflush(stdout);
  pthread_mutex_unlock(&blocks_lock);
  return 0;
}
