/* SPDX-License-Identifier: MIT */
/*
 * shrink-example-cache: a cache of many small malloc'd objects that gives
 * memory back through libshrink's native API.
 *
 * It fills an LRU list with 200-byte entries (--mib of them), registers one
 * shrinker with its size as the reclaimable estimate, and then serves the
 * agent from its own poll() loop (SHRINK_CLIENT_NO_THREAD: get_fd plus
 * dispatch, so no locking is needed). Soft requests free the coldest entries,
 * at most a quarter of the cache, except for a migration (the round's reason):
 * a live migration copies every cached page, so a soft request for one frees
 * every cold entry asked for (all but the hottest --hot-mib), whereas a brief
 * spike of pressure is not worth refilling the cache for. Hard requests free
 * as much as asked. Small
 * objects are what glibc keeps after free(): the library's malloc_trim(0) is
 * what makes the process's RSS fall.
 *
 * Standard output gets one machine-readable line per event, flushed at once:
 *   READY t_us=T app=cache pid=P held=B
 *   EVENT t_us=T app=cache pid=P kind=shrink shrinker=NAME round=R level=soft|hard
 *         reason=WHY target=B freed=B held=B elapsed_us=U
 *   EVENT t_us=T app=cache pid=P kind=relief round=R reason=WHY held=B
 *   EVENT t_us=T app=cache pid=P kind=connected|disconnected held=B
 *   EXIT t_us=T app=cache pid=P held=B
 * t_us is CLOCK_REALTIME in microseconds; B are bytes of cache entries.
 */
#include <shrink.h>

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#define ENTRY_BYTES 200

typedef struct entry {
  struct entry *prev; /* towards the hot end */
  struct entry *next; /* towards the cold end */
  uint64_t key;
  unsigned char payload[ENTRY_BYTES - 2 * sizeof(void *) - sizeof(uint64_t)];
} entry;

_Static_assert(sizeof(entry) == ENTRY_BYTES, "entry size");

typedef struct {
  entry *hot;  /* most recently used */
  entry *cold; /* least recently used: freed first */
  size_t count;
  uint64_t next_key;
  unsigned delay_ms; /* --delay-ms: a slow shrinker, for tests */
  size_t hot_bytes;  /* --hot-mib: never freed by a soft request */
  shrink_shrinker *shrinker;
} cache;

static uint64_t realtime_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static uint64_t monotonic_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static size_t held_bytes(const cache *c) { return c->count * ENTRY_BYTES; }

/* Adds one entry at the hot end, its payload written so that it is real RSS. */
static int cache_add(cache *c) {
  entry *e = malloc(sizeof *e);
  if (!e)
    return -ENOMEM;
  e->key = c->next_key++;
  memset(e->payload, (int)(e->key & 0xff) | 1, sizeof e->payload);
  e->prev = NULL;
  e->next = c->hot;
  if (c->hot)
    c->hot->prev = e;
  c->hot = e;
  if (!c->cold)
    c->cold = e;
  c->count++;
  return 0;
}

/* Frees entries from the cold end until @bytes are freed. Returns bytes freed. */
static size_t cache_evict(cache *c, size_t bytes) {
  size_t freed = 0;
  while (freed < bytes && c->cold) {
    entry *e = c->cold;
    c->cold = e->prev;
    if (c->cold)
      c->cold->next = NULL;
    else
      c->hot = NULL;
    free(e);
    c->count--;
    freed += ENTRY_BYTES;
  }
  return freed;
}

static void print_event(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void print_event(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vprintf(fmt, ap);
  va_end(ap);
  fflush(stdout);
}

static size_t on_shrink(const shrink_request *req, void *user_data) {
  cache *c = user_data;
  uint64_t t0 = monotonic_us();
  if (c->delay_ms) {
    struct timespec ts = {.tv_sec = c->delay_ms / 1000,
                          .tv_nsec = (long)(c->delay_ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
      ;
  }
  /* Soft: only what is cheap, the coldest quarter at most (for a migration:
   * every cold entry). Hard: all asked. */
  size_t budget = req->target_bytes;
  if (req->level == SHRINK_LEVEL_SOFT) {
    size_t held = held_bytes(c);
    size_t cold = held > c->hot_bytes ? held - c->hot_bytes : 0;
    size_t cap = cold;
    if (req->reason != SHRINK_REASON_MIGRATION && cap > held / 4)
      cap = held / 4;
    if (budget > cap)
      budget = cap;
  }
  size_t freed = cache_evict(c, budget);
  if (shrink_shrinker_set_estimate(c->shrinker, held_bytes(c)) < 0) {
    /* Only for a NULL shrinker. */
  }
  print_event("EVENT t_us=%" PRIu64 " app=cache pid=%ld kind=shrink shrinker=cache"
              " round=%" PRIu64 " level=%s reason=%s target=%zu freed=%zu held=%zu"
              " elapsed_us=%" PRIu64 "\n",
              realtime_us(), (long)getpid(), req->round_id, shrink_level_name(req->level),
              shrink_reason_name(req->reason), req->target_bytes, freed, held_bytes(c),
              monotonic_us() - t0);
  return freed;
}

static void on_relief(const shrink_relief *relief, void *user_data) {
  const cache *c = user_data;
  print_event("EVENT t_us=%" PRIu64 " app=cache pid=%ld kind=relief round=%" PRIu64
              " reason=%s held=%zu\n",
              realtime_us(), (long)getpid(), relief->round_id,
              shrink_reason_name(relief->reason), held_bytes(c));
}

static void usage(FILE *out, const char *argv0) {
  fprintf(out,
          "Usage: %s [OPTION]...\n"
          "A cache of small objects that gives memory back to shrinkd.\n"
          "\n"
          "  --mib N          fill the cache with N MiB of 200-byte entries (default 256)\n"
          "  --socket PATH    shrinkd's socket (default: $SHRINKD_SOCKET, else the\n"
          "                   system socket)\n"
          "  --name NAME      the application name shown by shrinkd (default cache)\n"
          "  --priority N     shrinker priority 0..100 (default 50)\n"
          "  --delay-ms N     sleep N ms in every shrink callback (to test deadlines)\n"
          "  --hot-mib N      the hottest N MiB are never freed by a soft request\n"
          "                   (default 0)\n"
          "  --help           show this help\n"
          "\n"
          "Prints READY and EVENT lines on standard output; exits on SIGTERM/SIGINT.\n",
          argv0);
}

static int parse_uint(const char *s, unsigned long max, unsigned long *out) {
  char *end;
  errno = 0;
  unsigned long v = strtoul(s, &end, 10);
  if (errno || end == s || *end || s[0] == '-' || v > max)
    return -EINVAL;
  *out = v;
  return 0;
}

int main(int argc, char **argv) {
  enum { OPT_MIB = 1, OPT_SOCKET, OPT_NAME, OPT_PRIORITY, OPT_DELAY, OPT_HOT, OPT_HELP };
  static const struct option options[] = {
      {"mib", required_argument, NULL, OPT_MIB},
      {"socket", required_argument, NULL, OPT_SOCKET},
      {"name", required_argument, NULL, OPT_NAME},
      {"priority", required_argument, NULL, OPT_PRIORITY},
      {"delay-ms", required_argument, NULL, OPT_DELAY},
      {"hot-mib", required_argument, NULL, OPT_HOT},
      {"help", no_argument, NULL, OPT_HELP},
      {NULL, 0, NULL, 0},
  };
  unsigned long mib = 256, priority = SHRINK_PRIORITY_DEFAULT, delay_ms = 0, hot_mib = 0;
  const char *socket_path = NULL, *name = "cache";
  int opt;
  while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
    switch (opt) {
    case OPT_MIB:
      if (parse_uint(optarg, 1024ul * 1024, &mib) < 0 || mib == 0) {
        fprintf(stderr, "%s: --mib: expected a number of MiB, not '%s'\n", argv[0], optarg);
        return 2;
      }
      break;
    case OPT_SOCKET:
      socket_path = optarg;
      break;
    case OPT_NAME:
      name = optarg;
      break;
    case OPT_PRIORITY:
      if (parse_uint(optarg, SHRINK_PRIORITY_MAX, &priority) < 0) {
        fprintf(stderr, "%s: --priority: expected 0..100, not '%s'\n", argv[0], optarg);
        return 2;
      }
      break;
    case OPT_DELAY:
      if (parse_uint(optarg, UINT_MAX, &delay_ms) < 0) {
        fprintf(stderr, "%s: --delay-ms: expected milliseconds, not '%s'\n", argv[0], optarg);
        return 2;
      }
      break;
    case OPT_HOT:
      if (parse_uint(optarg, 1024ul * 1024, &hot_mib) < 0) {
        fprintf(stderr, "%s: --hot-mib: expected a number of MiB, not '%s'\n", argv[0], optarg);
        return 2;
      }
      break;
    case OPT_HELP:
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

  /* SIGTERM and SIGINT arrive through a descriptor in the poll loop. */
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  sigprocmask(SIG_BLOCK, &sigs, NULL);
  int sfd = signalfd(-1, &sigs, SFD_CLOEXEC | SFD_NONBLOCK);
  if (sfd < 0) {
    perror("signalfd");
    return 1;
  }

  cache c = {.delay_ms = (unsigned)delay_ms, .hot_bytes = (size_t)hot_mib << 20};
  size_t want = (size_t)mib * 1024 * 1024 / ENTRY_BYTES;
  for (size_t i = 0; i < want; i++)
    if (cache_add(&c) < 0) {
      fprintf(stderr, "%s: out of memory after %zu entries\n", argv[0], c.count);
      return 1;
    }

  shrink_client *client;
  int r = shrink_client_new(socket_path, name, SHRINK_CLIENT_NO_THREAD, &client);
  if (r < 0) {
    fprintf(stderr, "%s: shrink_client_new: %s\n", argv[0], strerror(-r));
    return 1;
  }
  r = shrink_client_register(client, "cache", (int)priority, on_shrink, &c, NULL, &c.shrinker);
  if (r == 0)
    r = shrink_shrinker_set_estimate(c.shrinker, held_bytes(&c));
  if (r == 0)
    r = shrink_client_set_relief(client, on_relief, &c, NULL);
  if (r < 0) {
    fprintf(stderr, "%s: registering: %s\n", argv[0], strerror(-r));
    shrink_client_free(client);
    return 1;
  }
  print_event("READY t_us=%" PRIu64 " app=cache pid=%ld held=%zu\n", realtime_us(),
              (long)getpid(), held_bytes(&c));

  bool connected = false;
  struct pollfd fds[2] = {
      {.fd = shrink_client_get_fd(client), .events = POLLIN},
      {.fd = sfd, .events = POLLIN},
  };
  for (;;) {
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR)
        continue;
      perror("poll");
      break;
    }
    if (fds[1].revents & POLLIN)
      break;
    if (fds[0].revents & POLLIN)
      shrink_client_dispatch(client);
    if (shrink_client_is_connected(client) != connected) {
      connected = !connected;
      print_event("EVENT t_us=%" PRIu64 " app=cache pid=%ld kind=%s held=%zu\n",
                  realtime_us(), (long)getpid(), connected ? "connected" : "disconnected",
                  held_bytes(&c));
    }
  }

  shrink_client_free(client);
  print_event("EXIT t_us=%" PRIu64 " app=cache pid=%ld held=%zu\n", realtime_us(),
              (long)getpid(), held_bytes(&c));
  cache_evict(&c, SIZE_MAX);
  close(sfd);
  return 0;
}
