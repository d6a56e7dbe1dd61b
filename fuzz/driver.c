/* SPDX-License-Identifier: MIT */
/*
 * A standalone driver for LLVMFuzzerTestOneInput(), for compilers without
 * libFuzzer (gcc in CI): runs every seed once, then mutates seeds for a
 * bounded time with a deterministic generator. No coverage feedback; the
 * mutations aim at the channel's edges instead (0xFF, braces, quotes,
 * escapes, long runs past the limits, numbers at the int64 edge, splices
 * of valid requests).
 *
 *   fuzz-channel [--seconds N] [--seed S] [--runs N] [--max-len BYTES] PATH...
 *
 * PATH: a file (a seed) or a directory (its *.in files). The same seed and
 * run count replay the same inputs; when a check or a sanitizer fails, the
 * input is written to fuzz-channel-crash.bin (in the current directory)
 * and the run number printed, so that it can be replayed.
 */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The sanitizers' hook, when they are linked in. */
void __sanitizer_set_death_callback(void (*callback)(void)) __attribute__((weak));

typedef struct {
  uint8_t *data;
  size_t len;
} Input;

static Input *pool;
static size_t n_pool, cap_pool;
static size_t max_len = 128 * 1024;
static uint64_t rng;

static const uint8_t *cur_data;
static size_t cur_len;
static unsigned long cur_run;

static uint64_t next(void) {
  /* xorshift64* */
  rng ^= rng >> 12;
  rng ^= rng << 25;
  rng ^= rng >> 27;
  return rng * 0x2545F4914F6CDD1Dull;
}

static size_t below(size_t n) {
  return n ? (size_t)(next() % n) : 0;
}

static void add(const uint8_t *data, size_t len) {
  if (len > max_len)
    len = max_len;
  if (n_pool == cap_pool) {
    cap_pool = cap_pool ? cap_pool * 2 : 64;
    pool = realloc(pool, cap_pool * sizeof(*pool));
    if (!pool)
      abort();
  }
  pool[n_pool].data = malloc(len ? len : 1);
  if (!pool[n_pool].data)
    abort();
  memcpy(pool[n_pool].data, data, len);
  pool[n_pool].len = len;
  n_pool++;
}

static void load_file(const char *path) {
  FILE *f = fopen(path, "rb");
  uint8_t *buf;
  size_t n;

  if (!f) {
    fprintf(stderr, "fuzz-channel: %s: %s\n", path, strerror(errno));
    exit(2);
  }
  buf = malloc(max_len);
  if (!buf)
    abort();
  n = fread(buf, 1, max_len, f);
  fclose(f);
  add(buf, n);
  free(buf);
}

static void load(const char *path) {
  struct stat st;
  DIR *d;
  struct dirent *e;

  if (stat(path, &st) < 0) {
    fprintf(stderr, "fuzz-channel: %s: %s\n", path, strerror(errno));
    exit(2);
  }
  if (!S_ISDIR(st.st_mode)) {
    load_file(path);
    return;
  }
  d = opendir(path);
  while (d && (e = readdir(d))) {
    size_t l = strlen(e->d_name);
    char full[4096];

    if (l < 4 || strcmp(e->d_name + l - 3, ".in") != 0)
      continue;
    snprintf(full, sizeof(full), "%s/%s", path, e->d_name);
    load_file(full);
  }
  if (d)
    closedir(d);
}

static void on_death(void) {
  FILE *f = fopen("fuzz-channel-crash.bin", "wb");

  fprintf(stderr, "fuzz-channel: failed at run %lu (%zu bytes); input in fuzz-channel-crash.bin\n",
          cur_run, cur_len);
  if (f) {
    fwrite(cur_data, 1, cur_len, f);
    fclose(f);
  }
}

/* A failed check aborts: save the input, then die of the signal. */
static void on_abort(int sig) {
  on_death();
  signal(sig, SIG_DFL);
  raise(sig);
}

static void run(const uint8_t *data, size_t len) {
  cur_data = data;
  cur_len = len;
  cur_run++;
  LLVMFuzzerTestOneInput(data, len);
}

/* ---- mutations ---- */

static const uint8_t interesting[] = {0xFF, '{',  '}',  '[',  ']', '"', '\\', ':',
                                      ',',  '0',  '9',  '-',  'e', '.', 0,    ' ',
                                      '\n', 0xC3, 0x80, 0xED, 'u', 't', 'n'};
static const char *const tokens[] = {
    "{\"execute\":\"guest-ping\"}",
    "\xff{\"execute\":\"guest-sync-delimited\",\"arguments\":{\"id\":1}}",
    "{\"execute\":\"guest-sync\",\"arguments\":{\"id\":",
    "{\"execute\":\"shrinkd-prepare\",\"arguments\":{\"new_size_bytes\":1048576}}",
    "{\"execute\":\"shrinkd-shrink\",\"arguments\":{\"target_bytes\":4096,\"level\":\"hard\"}}",
    "{\"execute\":\"shrinkd-status\"}",
    "{\"execute\":\"guest-info\"}",
    "\"arguments\":{",
    "\"id\":",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775809",
    "1e400",
    "0012",
    "\\u0000",
    "\\ud800",
    "\\\"",
    "[[[[[[[[[[[[[[[[[",
    "]]]]]]]]]]]]]]]]]",
    "true",
    "null",
};

static void insert(uint8_t *buf, size_t *len, size_t at, const uint8_t *what, size_t n) {
  if (*len + n > max_len)
    n = max_len - *len;
  memmove(buf + at + n, buf + at, *len - at);
  memcpy(buf + at, what, n);
  *len += n;
}

static void mutate(uint8_t *buf, size_t *len) {
  size_t at = below(*len + 1), n, from;

  switch (below(11)) {
  case 0:
    if (*len)
      buf[below(*len)] ^= (uint8_t)(1u << below(8));
    break;
  case 1:
    if (*len)
      buf[below(*len)] = (uint8_t)next();
    break;
  case 2:
    if (*len)
      buf[below(*len)] = interesting[below(sizeof(interesting))];
    break;
  case 3: insert(buf, len, at, &interesting[below(sizeof(interesting))], 1); break;
  case 4: /* delete a range */
    if (at < *len) {
      n = 1 + below(*len - at < 64 ? *len - at : 64);
      memmove(buf + at, buf + at + n, *len - at - n);
      *len -= n;
    }
    break;
  case 5: /* duplicate a range */
    if (*len) {
      from = below(*len);
      n = 1 + below(*len - from < 256 ? *len - from : 256);
      {
        uint8_t tmp[256];

        memcpy(tmp, buf + from, n);
        insert(buf, len, at, tmp, n);
      }
    }
    break;
  case 6: { /* splice another input's tail */
    const Input *o = &pool[below(n_pool)];

    from = below(o->len + 1);
    *len = at;
    insert(buf, len, at, o->data + from, o->len - from);
    break;
  }
  case 7: {
    const char *t = tokens[below(sizeof(tokens) / sizeof(tokens[0]))];

    insert(buf, len, at, (const uint8_t *)t, strlen(t));
    break;
  }
  case 8: /* truncate */ *len = at; break;
  case 9: { /* a long run of one byte: past the string, size or depth limits */
    uint8_t *run_buf;

    n = below(5) == 0 ? 70000 : 1 + below(5000);
    run_buf = malloc(n);
    if (!run_buf)
      abort();
    memset(run_buf, *len ? buf[below(*len)] : 'x', n);
    insert(buf, len, at, run_buf, n);
    free(run_buf);
    break;
  }
  case 10: { /* a byte repeated, e.g. '[' 17 times */
    uint8_t c = interesting[below(sizeof(interesting))];

    for (n = 1 + below(40); n > 0; n--)
      insert(buf, len, at, &c, 1);
    break;
  }
  }
}

int main(int argc, char **argv) {
  double seconds = 10;
  unsigned long seed = 1, max_runs = 0, runs = 0;
  struct timespec t0, t;
  uint8_t *buf;
  size_t seeds;
  double took;

  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc)
      seconds = atof(argv[++i]);
    else if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc)
      seed = strtoul(argv[++i], NULL, 0);
    else if (strcmp(argv[i], "--runs") == 0 && i + 1 < argc)
      max_runs = strtoul(argv[++i], NULL, 0);
    else if (strcmp(argv[i], "--max-len") == 0 && i + 1 < argc)
      max_len = strtoul(argv[++i], NULL, 0);
    else if (argv[i][0] == '-') {
      fprintf(stderr, "usage: %s [--seconds N] [--seed S] [--runs N] [--max-len BYTES] PATH...\n",
              argv[0]);
      return 2;
    } else
      load(argv[i]);
  }
  if (max_len < 1024)
    max_len = 1024;
  for (size_t i = 0; i < sizeof(tokens) / sizeof(tokens[0]); i++)
    add((const uint8_t *)tokens[i], strlen(tokens[i]));
  seeds = n_pool;
  rng = seed * 0x9E3779B97F4A7C15ull + 1;
  if (__sanitizer_set_death_callback)
    __sanitizer_set_death_callback(on_death);
  signal(SIGABRT, on_abort);
  clock_gettime(CLOCK_MONOTONIC, &t0);

  for (size_t i = 0; i < seeds; i++)
    run(pool[i].data, pool[i].len);
  buf = malloc(max_len);
  if (!buf)
    abort();
  for (;;) {
    const Input *in = &pool[below(n_pool)];
    size_t len = in->len;

    if ((runs & 63) == 0) {
      clock_gettime(CLOCK_MONOTONIC, &t);
      took = (double)(t.tv_sec - t0.tv_sec) + (double)(t.tv_nsec - t0.tv_nsec) / 1e9;
      if (took >= seconds)
        break;
    }
    if (max_runs && runs >= max_runs)
      break;
    memcpy(buf, in->data, len);
    for (size_t m = 1 + below(8); m > 0; m--)
      mutate(buf, &len);
    run(buf, len);
    runs++;
    /* Keep some mutants to mutate further (no coverage feedback here). */
    if (below(16) == 0 && n_pool < 4096 && len <= 8192)
      add(buf, len);
  }
  clock_gettime(CLOCK_MONOTONIC, &t);
  took = (double)(t.tv_sec - t0.tv_sec) + (double)(t.tv_nsec - t0.tv_nsec) / 1e9;
  printf("fuzz-channel: %zu seeds and %lu mutants in %.1f s (seed %lu, %.0f runs/s), no failure\n",
         seeds, runs, took, seed, (double)(seeds + runs) / took);
  free(buf);
  for (size_t i = 0; i < n_pool; i++)
    free(pool[i].data);
  free(pool);
  return 0;
}
