/* SPDX-License-Identifier: MIT */
/*
 * OSv's C API on top of the native one, and the process-wide default client
 * it (and <osv/shrinker.h>) registers with.
 *
 * The default client is made once and lives until the process exits: an
 * atexit() handler freeing it would race with C++ destructors of static
 * memory::shrinker objects that still unregister from it.
 */
#include "local-proto.h"
#include "shrink-private.h"
#include "shrink.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static pthread_once_t default_once = PTHREAD_ONCE_INIT;
static shrink_client *default_client;
static int default_error;

static void default_client_init(void) {
  default_error = shrink_client_new(NULL, NULL, 0, &default_client);
}

SHRINK_PUBLIC int shrink_client_get_default(shrink_client **out) {
  if (!out)
    return -EINVAL;
  pthread_once(&default_once, default_client_init);
  if (default_error < 0)
    return default_error;
  *out = default_client;
  return 0;
}

typedef struct {
  size_t (*func)(size_t target, bool hard);
} osv_shrinker;

static size_t osv_call(const shrink_request *req, void *user_data) {
  const osv_shrinker *o = user_data;
  return o->func(req->target_bytes, req->level == SHRINK_LEVEL_HARD);
}

SHRINK_PUBLIC void *osv_register_shrinker(const char *name,
                                          size_t (*func)(size_t target, bool hard)) {
  shrink_client *client;
  int r = -EINVAL;
  if (func)
    r = shrink_client_get_default(&client);
  osv_shrinker *o = NULL;
  if (r == 0) {
    o = malloc(sizeof *o);
    r = o ? 0 : -ENOMEM;
  }
  shrink_shrinker *s = NULL;
  if (r == 0) {
    /* OSv took any name; ours must fit the protocol, so shorten it. */
    char buf[PROTO_NAME_MAX];
    shrink_copy_name(buf, sizeof buf, name, "osv");
    o->func = func;
    r = shrink_client_register(client, buf, SHRINK_PRIORITY_DEFAULT, osv_call, o, free, &s);
  }
  if (r < 0) {
    free(o);
    if (shrink_debug_enabled())
      fprintf(stderr, "libshrink: osv_register_shrinker(%s): %s\n", name ? name : "(null)",
              strerror(-r));
    return NULL;
  }
  return s;
}
