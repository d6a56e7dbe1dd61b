/* SPDX-License-Identifier: MIT */
/*
 * libshrink's client against a scripted fake agent in the same process: a
 * listening SOCK_SEQPACKET socket in a temporary directory, driven with the
 * real codec. Clients made with SHRINK_CLIENT_NO_THREAD are pumped by the
 * test itself, so that every step is deterministic; the thread-mode tests
 * (own thread, OSv API, default client) wait with timeouts instead.
 */
#include "cunit-run.h"
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "local-proto.h"
#include "shrink.h"

#define TIMEOUT_MS 3000

static char tmpdir[64];
static unsigned char rxbuf[PROTO_MSG_MAX];

static uint64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void sleep_ms(unsigned ms) {
  struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
    ;
}

/* ---- the fake agent ---- */

typedef struct {
  char path[108];
  int lfd; /* listening, or -1 */
  int fd;  /* the accepted client, or -1 */
} fake_agent;

static void agent_path(fake_agent *a, const char *name) {
  snprintf(a->path, sizeof a->path, "%s/%s", tmpdir, name);
  a->lfd = a->fd = -1;
}

static int agent_listen(fake_agent *a) {
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  strcpy(addr.sun_path, a->path);
  unlink(a->path);
  a->lfd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (a->lfd < 0 || bind(a->lfd, (struct sockaddr *)&addr, sizeof addr) < 0 ||
      listen(a->lfd, 8) < 0)
    return -errno;
  return 0;
}

static void agent_close_client(fake_agent *a) {
  if (a->fd >= 0)
    close(a->fd);
  a->fd = -1;
}

static void agent_stop(fake_agent *a) {
  agent_close_client(a);
  if (a->lfd >= 0)
    close(a->lfd);
  a->lfd = -1;
  unlink(a->path);
}

/* Lets a NO_THREAD client do its work for up to @ms; a threaded one runs alone. */
static void pump(shrink_client *c, bool threaded, int ms) {
  if (threaded) {
    sleep_ms((unsigned)ms);
    return;
  }
  struct pollfd p = {.fd = shrink_client_get_fd(c), .events = POLLIN};
  if (poll(&p, 1, ms) > 0)
    shrink_client_dispatch(c);
}

static bool agent_accept(fake_agent *a, shrink_client *c, bool threaded) {
  uint64_t end = mono_ms() + TIMEOUT_MS;
  while (mono_ms() < end) {
    a->fd = accept4(a->lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (a->fd >= 0)
      return true;
    pump(c, threaded, 5);
  }
  return false;
}

/* Receives the next message from the client into @m (strings in rxbuf). */
static int agent_recv(fake_agent *a, shrink_client *c, bool threaded, proto_msg *m) {
  uint64_t end = mono_ms() + TIMEOUT_MS;
  while (mono_ms() < end) {
    int r = proto_recv(a->fd, rxbuf, m, NULL);
    if (r != -EAGAIN)
      return r;
    pump(c, threaded, 5);
  }
  return -ETIMEDOUT;
}

/* Whether the client sends nothing for @ms. */
static bool agent_quiet(fake_agent *a, shrink_client *c, bool threaded, int ms) {
  uint64_t end = mono_ms() + (uint64_t)ms;
  proto_msg m;
  while (mono_ms() < end) {
    pump(c, threaded, 5);
    if (proto_recv(a->fd, rxbuf, &m, NULL) != -EAGAIN)
      return false;
  }
  return true;
}

static int agent_send(fake_agent *a, const proto_msg *m) { return proto_send(a->fd, m, true); }

/* Accepts, checks HELLO, answers WELCOME. */
static bool agent_handshake(fake_agent *a, shrink_client *c, bool threaded,
                            uint32_t max_shrinkers, const char *want_name) {
  if (!agent_accept(a, c, threaded))
    return false;
  proto_msg m;
  if (agent_recv(a, c, threaded, &m) != 0 || m.type != PROTO_MSG_HELLO)
    return false;
  if (m.u.hello.min_version > PROTO_VERSION || m.u.hello.max_version < PROTO_VERSION)
    return false;
  if (want_name && strcmp(m.u.hello.name, want_name) != 0)
    return false;
  proto_msg w = {.type = PROTO_MSG_WELCOME};
  w.u.welcome.version = PROTO_VERSION;
  w.u.welcome.max_shrinkers = max_shrinkers;
  return agent_send(a, &w) == 0;
}

static int send_shrink(fake_agent *a, uint64_t round, uint32_t id, uint64_t target,
                       proto_level level) {
  proto_msg m = {.type = PROTO_MSG_SHRINK};
  m.u.shrink.round_id = round;
  m.u.shrink.id = id;
  m.u.shrink.level = (uint8_t)level;
  m.u.shrink.reason = PROTO_REASON_BALLOON;
  m.u.shrink.target_bytes = target;
  m.u.shrink.deadline_ms = 750;
  return agent_send(a, &m);
}

/* ---- callbacks ---- */

typedef struct {
  atomic_int calls;
  atomic_int frees;
  size_t give;           /* bytes the callback claims to free */
  unsigned sleep_ms;     /* time the callback takes */
  shrink_request last;   /* the last request seen */
  pthread_t thread;      /* where it last ran */
  shrink_client *client; /* for unregistering from the callback */
  shrink_shrinker *self;
  bool unregister_self;
  int unregister_result;
  bool nested_dispatch; /* call dispatch from the callback */
  int nested_dispatch_result;
  atomic_bool running;
} probe;

static size_t probe_shrink(const shrink_request *req, void *data) {
  probe *p = data;
  atomic_store(&p->running, true);
  p->last = *req;
  p->thread = pthread_self();
  if (p->sleep_ms)
    sleep_ms(p->sleep_ms);
  if (p->unregister_self)
    p->unregister_result = shrink_client_unregister(p->client, p->self);
  if (p->nested_dispatch)
    p->nested_dispatch_result = shrink_client_dispatch(p->client);
  atomic_fetch_add(&p->calls, 1);
  atomic_store(&p->running, false);
  return p->give;
}

static void probe_free(void *data) {
  probe *p = data;
  atomic_fetch_add(&p->frees, 1);
}

/* ---- tests ---- */

static void test_version(void) {
  CU_ASSERT_STRING_EQUAL(shrink_version(), SHRINK_VERSION_STRING);
  CU_ASSERT_EQUAL(SHRINK_VERSION_HEX, (SHRINK_VERSION_MAJOR << 16) |
                                          (SHRINK_VERSION_MINOR << 8) | SHRINK_VERSION_MICRO);
  CU_ASSERT_STRING_EQUAL(shrink_level_name(SHRINK_LEVEL_HARD), "hard");
  CU_ASSERT_STRING_EQUAL(shrink_reason_name(SHRINK_REASON_MIGRATION), "migration");
  CU_ASSERT_STRING_EQUAL(shrink_reason_name((shrink_reason)99), "unknown");
}

static void test_invalid_arguments(void) {
  shrink_client *c = NULL, *other = NULL;
  char long_path[200];
  memset(long_path, 'x', sizeof long_path - 1);
  long_path[sizeof long_path - 1] = '\0';
  CU_ASSERT_EQUAL(shrink_client_new("/nonexistent", "t", 0, NULL), -EINVAL);
  CU_ASSERT_EQUAL(shrink_client_new("/nonexistent", "t", 0x80, &c), -EINVAL);
  CU_ASSERT_EQUAL(shrink_client_new("", "t", 0, &c), -EINVAL);
  CU_ASSERT_EQUAL(shrink_client_new(long_path, "t", 0, &c), -ENAMETOOLONG);

  CU_ASSERT_EQUAL_FATAL(shrink_client_new("/nonexistent", "t", 0, &c), 0);
  CU_ASSERT_EQUAL_FATAL(shrink_client_new("/nonexistent", "t", SHRINK_CLIENT_NO_THREAD, &other), 0);
  /* get_fd and dispatch are for NO_THREAD clients only. */
  CU_ASSERT_EQUAL(shrink_client_get_fd(c), -EINVAL);
  CU_ASSERT_EQUAL(shrink_client_dispatch(c), -EINVAL);
  CU_ASSERT(shrink_client_get_fd(other) >= 0);
  CU_ASSERT_EQUAL(shrink_client_dispatch(other), 0);

  probe p = {0};
  shrink_shrinker *s = NULL;
  char long_name[PROTO_NAME_MAX + 1];
  memset(long_name, 'n', sizeof long_name - 1);
  long_name[sizeof long_name - 1] = '\0';
  CU_ASSERT_EQUAL(shrink_client_register(c, "", 50, probe_shrink, &p, NULL, &s), -EINVAL);
  CU_ASSERT_EQUAL(shrink_client_register(c, long_name, 50, probe_shrink, &p, NULL, &s),
                  -ENAMETOOLONG);
  CU_ASSERT_EQUAL(shrink_client_register(c, "x", 101, probe_shrink, &p, NULL, &s), -EINVAL);
  CU_ASSERT_EQUAL(shrink_client_register(c, "x", -1, probe_shrink, &p, NULL, &s), -EINVAL);
  CU_ASSERT_EQUAL(shrink_client_register(c, "x", 50, NULL, &p, NULL, &s), -EINVAL);
  CU_ASSERT_EQUAL(shrink_client_register(NULL, "x", 50, probe_shrink, &p, NULL, &s), -EINVAL);
  CU_ASSERT_EQUAL(shrink_client_set_relief(c, NULL, &p, NULL), -EINVAL);
  CU_ASSERT_EQUAL(shrink_shrinker_set_estimate(NULL, 1), -EINVAL);

  /* A shrinker belongs to its client. */
  CU_ASSERT_EQUAL_FATAL(shrink_client_register(other, "x", 50, probe_shrink, &p, probe_free, &s), 0);
  CU_ASSERT_EQUAL(shrink_client_unregister(c, s), -EINVAL);
  CU_ASSERT_EQUAL(shrink_client_unregister(other, s), 0);
  CU_ASSERT_EQUAL(atomic_load(&p.frees), 1);
  CU_ASSERT_FALSE(shrink_client_is_connected(other));
  shrink_client_free(c);
  shrink_client_free(other);
  shrink_client_free(NULL);
}

/* Registers before the agent exists; the agent appears; everything arrives. */
static void test_register_before_agent(void) {
  fake_agent a;
  agent_path(&a, "early.sock");
  shrink_client *c;
  CU_ASSERT_EQUAL_FATAL(shrink_client_new(a.path, "early-app", SHRINK_CLIENT_NO_THREAD, &c), 0);
  probe p1 = {0}, p2 = {0};
  shrink_shrinker *s1, *s2;
  CU_ASSERT_EQUAL_FATAL(shrink_client_register(c, "first", 70, probe_shrink, &p1, probe_free, &s1), 0);
  CU_ASSERT_EQUAL_FATAL(shrink_client_register(c, "second", 10, probe_shrink, &p2, probe_free, &s2), 0);
  CU_ASSERT_EQUAL(shrink_shrinker_set_estimate(s1, 123456), 0);
  for (int i = 0; i < 20; i++)
    pump(c, false, 10); /* a few failed attempts */
  CU_ASSERT_FALSE(shrink_client_is_connected(c));

  CU_ASSERT_EQUAL_FATAL(agent_listen(&a), 0);
  uint64_t t0 = mono_ms();
  CU_ASSERT_FATAL(agent_handshake(&a, c, false, 100, "early-app"));
  proto_msg m;
  CU_ASSERT_EQUAL_FATAL(agent_recv(&a, c, false, &m), 0);
  CU_ASSERT_EQUAL(m.type, PROTO_MSG_REGISTER);
  CU_ASSERT_STRING_EQUAL(m.u.reg.name, "first");
  CU_ASSERT_EQUAL(m.u.reg.priority, 70);
  CU_ASSERT_EQUAL(m.u.reg.flags, PROTO_REGISTER_HAS_ESTIMATE);
  CU_ASSERT_EQUAL(m.u.reg.estimate_bytes, 123456);
  uint32_t id1 = m.u.reg.id;
  CU_ASSERT_EQUAL_FATAL(agent_recv(&a, c, false, &m), 0);
  CU_ASSERT_EQUAL(m.type, PROTO_MSG_REGISTER);
  CU_ASSERT_STRING_EQUAL(m.u.reg.name, "second");
  CU_ASSERT_EQUAL(m.u.reg.flags, 0);
  CU_ASSERT_NOT_EQUAL(m.u.reg.id, id1);
  CU_ASSERT(mono_ms() - t0 < 1500); /* the back-off is capped at 1 s */
  pump(c, false, 10);
  CU_ASSERT_TRUE(shrink_client_is_connected(c));
  CU_ASSERT_EQUAL(atomic_load(&p1.calls), 0);

  shrink_client_free(c);
  CU_ASSERT_EQUAL(atomic_load(&p1.frees), 1);
  CU_ASSERT_EQUAL(atomic_load(&p2.frees), 1);
  /* Closing the connection is how the agent learns the shrinkers are gone. */
  CU_ASSERT_EQUAL(agent_recv(&a, NULL, true, &m), -ECONNRESET);
  agent_stop(&a);
}

/* A connected NO_THREAD client with one registered shrinker. */
typedef struct {
  fake_agent a;
  shrink_client *c;
  shrink_shrinker *s;
  uint32_t id;
  probe p;
} fixture;

static bool fixture_up(fixture *f, const char *sock, unsigned flags) {
  memset(f, 0, sizeof *f);
  agent_path(&f->a, sock);
  if (agent_listen(&f->a) < 0 ||
      shrink_client_new(f->a.path, "fixture", SHRINK_CLIENT_NO_THREAD | flags, &f->c) < 0)
    return false;
  f->p.client = f->c;
  if (shrink_client_register(f->c, "probe", SHRINK_PRIORITY_DEFAULT, probe_shrink, &f->p,
                             probe_free, &f->s) < 0)
    return false;
  f->p.self = f->s;
  if (!agent_handshake(&f->a, f->c, false, 100, "fixture"))
    return false;
  proto_msg m;
  if (agent_recv(&f->a, f->c, false, &m) != 0 || m.type != PROTO_MSG_REGISTER)
    return false;
  f->id = m.u.reg.id;
  return true;
}

static void fixture_down(fixture *f) {
  shrink_client_free(f->c);
  agent_stop(&f->a);
}

static void test_shrink_and_done(void) {
  fixture f;
  CU_ASSERT_FATAL(fixture_up(&f, "done.sock", 0));
  f.p.give = 5000;
  CU_ASSERT_EQUAL_FATAL(send_shrink(&f.a, 7, f.id, 4096, PROTO_LEVEL_HARD), 0);
  proto_msg m;
  CU_ASSERT_EQUAL_FATAL(agent_recv(&f.a, f.c, false, &m), 0);
  CU_ASSERT_EQUAL(m.type, PROTO_MSG_SHRINK_DONE);
  CU_ASSERT_EQUAL(m.u.done.round_id, 7);
  CU_ASSERT_EQUAL(m.u.done.id, f.id);
  CU_ASSERT_EQUAL(m.u.done.freed_bytes, 5000);
  CU_ASSERT_EQUAL(m.u.done.flags, PROTO_DONE_TRIMMED); /* freed > 0: trimmed */
  CU_ASSERT_EQUAL(atomic_load(&f.p.calls), 1);
  CU_ASSERT_EQUAL(f.p.last.round_id, 7);
  CU_ASSERT_EQUAL(f.p.last.target_bytes, 4096);
  CU_ASSERT_EQUAL(f.p.last.level, SHRINK_LEVEL_HARD);
  CU_ASSERT_EQUAL(f.p.last.reason, SHRINK_REASON_BALLOON);
  CU_ASSERT_EQUAL(f.p.last.deadline_ms, 750);
  CU_ASSERT(pthread_equal(f.p.thread, pthread_self())); /* inside dispatch */

  /* Nothing freed: nothing to trim. The elapsed time is the callback's. */
  f.p.give = 0;
  f.p.sleep_ms = 30;
  CU_ASSERT_EQUAL_FATAL(send_shrink(&f.a, 8, f.id, 4096, PROTO_LEVEL_SOFT), 0);
  CU_ASSERT_EQUAL_FATAL(agent_recv(&f.a, f.c, false, &m), 0);
  CU_ASSERT_EQUAL(m.type, PROTO_MSG_SHRINK_DONE);
  CU_ASSERT_EQUAL(m.u.done.freed_bytes, 0);
  CU_ASSERT_EQUAL(m.u.done.flags, 0);
  CU_ASSERT(m.u.done.elapsed_us >= 30000);
  CU_ASSERT_EQUAL(f.p.last.level, SHRINK_LEVEL_SOFT);

  /* Dispatching from a callback would deadlock: refused. */
  f.p.sleep_ms = 0;
  f.p.nested_dispatch = true;
  CU_ASSERT_EQUAL_FATAL(send_shrink(&f.a, 10, f.id, 1, PROTO_LEVEL_SOFT), 0);
  CU_ASSERT_EQUAL_FATAL(agent_recv(&f.a, f.c, false, &m), 0);
  CU_ASSERT_EQUAL(m.type, PROTO_MSG_SHRINK_DONE);
  CU_ASSERT_EQUAL(f.p.nested_dispatch_result, -EDEADLK);
  f.p.nested_dispatch = false;

  /* An id the client never had still gets its answer. */
  CU_ASSERT_EQUAL_FATAL(send_shrink(&f.a, 9, 999, 1, PROTO_LEVEL_HARD), 0);
  CU_ASSERT_EQUAL_FATAL(agent_recv(&f.a, f.c, false, &m), 0);
  CU_ASSERT_EQUAL(m.type, PROTO_MSG_SHRINK_DONE);
  CU_ASSERT_EQUAL(m.u.done.id, 999);
  CU_ASSERT_EQUAL(m.u.done.freed_bytes, 0);
  CU_ASSERT_EQUAL(atomic_load(&f.p.calls), 3);
  fixture_down(&f);
}

static void test_no_trim(void) {
  fixture f;
  CU_ASSERT_FATAL(fixture_up(&f, "notrim.sock", SHRINK_CLIENT_NO_TRIM));
  f.p.give = 1;
  CU_ASSERT_EQUAL_FATAL(send_shrink(&f.a, 1, f.id, 1, PROTO_LEVEL_HARD), 0);
  proto_msg m;
  CU_ASSERT_EQUAL_FATAL(agent_recv(&f.a, f.c, false, &m), 0);
  CU_ASSERT_EQUAL(m.u.done.freed_bytes, 1);
  CU_ASSERT_EQUAL(m.u.done.flags, 0);
  fixture_down(&f);
}

static void test_estimates(void) {
  fixture f;
  CU_ASSERT_FATAL(fixture_up(&f, "estimate.sock", 0));
  proto_msg m;
  CU_ASSERT_EQUAL(shrink_shrinker_set_estimate(f.s, 1 << 20), 0);
  CU_ASSERT_EQUAL_FATAL(agent_recv(&f.a, f.c, false, &m), 0);
  CU_ASSERT_EQUAL(m.type, PROTO_MSG_ESTIMATE);
  CU_ASSERT_EQUAL(m.u.estimate.id, f.id);
  CU_ASSERT_EQUAL(m.u.estimate.flags, PROTO_REGISTER_HAS_ESTIMATE);
  CU_ASSERT_EQUAL(m.u.estimate.estimate_bytes, 1 << 20);
  /* The same figure again is not news. */
  CU_ASSERT_EQUAL(shrink_shrinker_set_estimate(f.s, 1 << 20), 0);
  CU_ASSERT_TRUE(agent_quiet(&f.a, f.c, false, 50));
  CU_ASSERT_EQUAL(shrink_shrinker_clear_estimate(f.s), 0);
  CU_ASSERT_EQUAL_FATAL(agent_recv(&f.a, f.c, false, &m), 0);
  CU_ASSERT_EQUAL(m.type, PROTO_MSG_ESTIMATE);
  CU_ASSERT_EQUAL(m.u.estimate.flags, 0);
  fixture_down(&f);
}

static void test_unregister(void) {
  fixture f;
  CU_ASSERT_FATAL(fixture_up(&f, "unreg.sock", 0));
  CU_ASSERT_EQUAL(shrink_client_unregister(f.c, f.s), 0);
  CU_ASSERT_EQUAL(atomic_load(&f.p.frees), 1);
  proto_msg m;
  CU_ASSERT_EQUAL_FATAL(agent_recv(&f.a, f.c, false, &m), 0);
  CU_ASSERT_EQUAL(m.type, PROTO_MSG_UNREGISTER);
  CU_ASSERT_EQUAL(m.u.unreg.id, f.id);
  /* A request that crossed the UNREGISTER gets 0, without a call. */
  CU_ASSERT_EQUAL_FATAL(send_shrink(&f.a, 3, f.id, 10, PROTO_LEVEL_HARD), 0);
  CU_ASSERT_EQUAL_FATAL(agent_recv(&f.a, f.c, false, &m), 0);
  CU_ASSERT_EQUAL(m.type, PROTO_MSG_SHRINK_DONE);
  CU_ASSERT_EQUAL(m.u.done.freed_bytes, 0);
  CU_ASSERT_EQUAL(atomic_load(&f.p.calls), 0);
  fixture_down(&f);
  CU_ASSERT_EQUAL(atomic_load(&f.p.frees), 1);
}

/* A callback unregistering its own shrinker: no deadlock, DONE before UNREGISTER. */
static void test_unregister_from_callback(void) {
  fixture f;
  CU_ASSERT_FATAL(fixture_up(&f, "selfunreg.sock", 0));
  f.p.unregister_self = true;
  f.p.unregister_result = -1;
  f.p.give = 64;
  /* Two requests in one batch: the second must not reach the callback. */
  CU_ASSERT_EQUAL_FATAL(send_shrink(&f.a, 1, f.id, 10, PROTO_LEVEL_HARD), 0);
  CU_ASSERT_EQUAL_FATAL(send_shrink(&f.a, 2, f.id, 10, PROTO_LEVEL_HARD), 0);
  proto_msg m;
  CU_ASSERT_EQUAL_FATAL(agent_recv(&f.a, f.c, false, &m), 0);
  CU_ASSERT_EQUAL(m.type, PROTO_MSG_SHRINK_DONE);
  CU_ASSERT_EQUAL(m.u.done.round_id, 1);
  CU_ASSERT_EQUAL(m.u.done.freed_bytes, 64);
  CU_ASSERT_EQUAL_FATAL(agent_recv(&f.a, f.c, false, &m), 0);
  CU_ASSERT_EQUAL(m.type, PROTO_MSG_SHRINK_DONE);
  CU_ASSERT_EQUAL(m.u.done.round_id, 2);
  CU_ASSERT_EQUAL(m.u.done.freed_bytes, 0);
  CU_ASSERT_EQUAL_FATAL(agent_recv(&f.a, f.c, false, &m), 0);
  CU_ASSERT_EQUAL(m.type, PROTO_MSG_UNREGISTER);
  CU_ASSERT_EQUAL(m.u.unreg.id, f.id);
  CU_ASSERT_EQUAL(f.p.unregister_result, 0);
  CU_ASSERT_EQUAL(atomic_load(&f.p.calls), 1);
  CU_ASSERT_EQUAL(atomic_load(&f.p.frees), 1);
  fixture_down(&f);
  CU_ASSERT_EQUAL(atomic_load(&f.p.frees), 1);
}

/* The agent goes away and comes back: HELLO and every REGISTER again. */
static void test_reconnect(void) {
  fixture f;
  CU_ASSERT_FATAL(fixture_up(&f, "reconnect.sock", 0));
  CU_ASSERT_EQUAL(shrink_shrinker_set_estimate(f.s, 4242), 0);
  proto_msg m;
  CU_ASSERT_EQUAL_FATAL(agent_recv(&f.a, f.c, false, &m), 0);

  /* A restart: the listener goes, then comes back a little later. */
  agent_stop(&f.a);
  for (int i = 0; i < 10; i++)
    pump(f.c, false, 10);
  CU_ASSERT_FALSE(shrink_client_is_connected(f.c));
  CU_ASSERT_EQUAL_FATAL(agent_listen(&f.a), 0);
  uint64_t t0 = mono_ms();
  CU_ASSERT_FATAL(agent_handshake(&f.a, f.c, false, 100, "fixture"));
  CU_ASSERT_EQUAL_FATAL(agent_recv(&f.a, f.c, false, &m), 0);
  CU_ASSERT_EQUAL(m.type, PROTO_MSG_REGISTER);
  CU_ASSERT_EQUAL(m.u.reg.id, f.id);
  CU_ASSERT_EQUAL(m.u.reg.estimate_bytes, 4242);
  CU_ASSERT(mono_ms() - t0 < 2000);
  pump(f.c, false, 10);
  CU_ASSERT_TRUE(shrink_client_is_connected(f.c));

  /* Still works after it. */
  f.p.give = 1;
  CU_ASSERT_EQUAL_FATAL(send_shrink(&f.a, 11, f.id, 1, PROTO_LEVEL_SOFT), 0);
  CU_ASSERT_EQUAL_FATAL(agent_recv(&f.a, f.c, false, &m), 0);
  CU_ASSERT_EQUAL(m.type, PROTO_MSG_SHRINK_DONE);
  CU_ASSERT_EQUAL(m.u.done.round_id, 11);
  fixture_down(&f);
}

/* Garbage or a message in the wrong state: the client hangs up and comes back. */
static void test_malformed_from_agent(void) {
  static const struct {
    const char *what;
    unsigned char bytes[16];
    size_t len;
  } bad[] = {
      {"truncated header", {PROTO_VERSION, PROTO_MSG_SHRINK, 0}, 3},
      {"length mismatch", {PROTO_VERSION, PROTO_MSG_RELIEF, 0, 0, 99, 0, 0, 0}, 8},
      {"unknown type", {PROTO_VERSION, 200, 0, 0, 8, 0, 0, 0}, 8},
  };
  fixture f;
  CU_ASSERT_FATAL(fixture_up(&f, "garbage.sock", 0));
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    CU_ASSERT_EQUAL(send(f.a.fd, bad[i].bytes, bad[i].len, 0), (ssize_t)bad[i].len);
    proto_msg m;
    int r;
    /* Maybe an ERROR first, then the end of the connection. */
    while ((r = agent_recv(&f.a, f.c, false, &m)) == 0)
      CU_ASSERT_EQUAL(m.type, PROTO_MSG_ERROR);
    CU_ASSERT_EQUAL(r, -ECONNRESET);
    agent_close_client(&f.a);
    CU_ASSERT_FATAL(agent_handshake(&f.a, f.c, false, 100, "fixture"));
    CU_ASSERT_EQUAL_FATAL(agent_recv(&f.a, f.c, false, &m), 0);
    CU_ASSERT_EQUAL(m.type, PROTO_MSG_REGISTER);
  }
  /* A second WELCOME is valid on the wire but not now. */
  proto_msg w = {.type = PROTO_MSG_WELCOME};
  w.u.welcome.version = PROTO_VERSION;
  CU_ASSERT_EQUAL(agent_send(&f.a, &w), 0);
  proto_msg m;
  int r;
  while ((r = agent_recv(&f.a, f.c, false, &m)) == 0)
    CU_ASSERT_EQUAL(m.type, PROTO_MSG_ERROR);
  CU_ASSERT_EQUAL(r, -ECONNRESET);
  CU_ASSERT_EQUAL(atomic_load(&f.p.calls), 0);
  fixture_down(&f);
}

/* An ERROR from the agent is logged at most, never fatal. */
static void test_error_from_agent(void) {
  fixture f;
  CU_ASSERT_FATAL(fixture_up(&f, "error.sock", 0));
  proto_msg e = {.type = PROTO_MSG_ERROR};
  e.u.error.code = PROTO_ERR_LIMIT;
  e.u.error.ref = f.id;
  e.u.error.text = "too many";
  CU_ASSERT_EQUAL(agent_send(&f.a, &e), 0);
  CU_ASSERT_TRUE(agent_quiet(&f.a, f.c, false, 50));
  CU_ASSERT_TRUE(shrink_client_is_connected(f.c));
  fixture_down(&f);
}

typedef struct {
  atomic_int calls;
  atomic_int frees;
  shrink_relief last;
} relief_probe;

static void relief_cb(const shrink_relief *r, void *data) {
  relief_probe *p = data;
  p->last = *r;
  atomic_fetch_add(&p->calls, 1);
}

static void relief_free(void *data) {
  relief_probe *p = data;
  atomic_fetch_add(&p->frees, 1);
}

static void test_relief(void) {
  fixture f;
  CU_ASSERT_FATAL(fixture_up(&f, "relief.sock", 0));
  relief_probe r1 = {0}, r2 = {0};
  CU_ASSERT_EQUAL(shrink_client_set_relief(f.c, relief_cb, &r1, relief_free), 0);
  proto_msg m = {.type = PROTO_MSG_RELIEF};
  m.u.relief.round_id = 77;
  m.u.relief.reason = PROTO_REASON_BALLOON;
  CU_ASSERT_EQUAL(agent_send(&f.a, &m), 0);
  for (int i = 0; i < 50 && atomic_load(&r1.calls) == 0; i++)
    pump(f.c, false, 10);
  CU_ASSERT_EQUAL(atomic_load(&r1.calls), 1);
  CU_ASSERT_EQUAL(r1.last.round_id, 77);
  CU_ASSERT_EQUAL(r1.last.reason, SHRINK_REASON_BALLOON);
  /* Replacing releases the old user data. */
  CU_ASSERT_EQUAL(shrink_client_set_relief(f.c, relief_cb, &r2, relief_free), 0);
  CU_ASSERT_EQUAL(atomic_load(&r1.frees), 1);
  CU_ASSERT_EQUAL(agent_send(&f.a, &m), 0);
  for (int i = 0; i < 50 && atomic_load(&r2.calls) == 0; i++)
    pump(f.c, false, 10);
  CU_ASSERT_EQUAL(atomic_load(&r2.calls), 1);
  CU_ASSERT_EQUAL(atomic_load(&r1.calls), 1);
  CU_ASSERT_TRUE(shrink_client_is_connected(f.c));
  fixture_down(&f);
  CU_ASSERT_EQUAL(atomic_load(&r2.frees), 1);
}

/* The agent takes fewer shrinkers than we have: the rest wait for a place. */
static void test_max_shrinkers(void) {
  fake_agent a;
  agent_path(&a, "max.sock");
  CU_ASSERT_EQUAL_FATAL(agent_listen(&a), 0);
  shrink_client *c;
  CU_ASSERT_EQUAL_FATAL(shrink_client_new(a.path, "max", SHRINK_CLIENT_NO_THREAD, &c), 0);
  probe p = {0};
  shrink_shrinker *s1, *s2;
  CU_ASSERT_EQUAL_FATAL(shrink_client_register(c, "one", 50, probe_shrink, &p, NULL, &s1), 0);
  CU_ASSERT_EQUAL_FATAL(shrink_client_register(c, "two", 50, probe_shrink, &p, NULL, &s2), 0);
  CU_ASSERT_FATAL(agent_handshake(&a, c, false, 1, "max"));
  proto_msg m;
  CU_ASSERT_EQUAL_FATAL(agent_recv(&a, c, false, &m), 0);
  CU_ASSERT_STRING_EQUAL(m.u.reg.name, "one");
  uint32_t id1 = m.u.reg.id;
  CU_ASSERT_TRUE(agent_quiet(&a, c, false, 50));
  CU_ASSERT_EQUAL(shrink_client_unregister(c, s1), 0);
  CU_ASSERT_EQUAL_FATAL(agent_recv(&a, c, false, &m), 0);
  CU_ASSERT_EQUAL(m.type, PROTO_MSG_UNREGISTER);
  CU_ASSERT_EQUAL(m.u.unreg.id, id1);
  CU_ASSERT_EQUAL_FATAL(agent_recv(&a, c, false, &m), 0);
  CU_ASSERT_EQUAL(m.type, PROTO_MSG_REGISTER);
  CU_ASSERT_STRING_EQUAL(m.u.reg.name, "two");
  shrink_client_free(c);
  agent_stop(&a);
}

/*
 * More messages than the socket holds while the agent does not read: they
 * wait in the client's queue, in order, and pending estimates merge.
 */
static void test_backpressure(void) {
  enum { N = 3000 };
  fake_agent a;
  agent_path(&a, "pressure.sock");
  CU_ASSERT_EQUAL_FATAL(agent_listen(&a), 0);
  shrink_client *c;
  CU_ASSERT_EQUAL_FATAL(shrink_client_new(a.path, "many", SHRINK_CLIENT_NO_THREAD, &c), 0);
  probe p = {0};
  CU_ASSERT_FATAL(agent_handshake(&a, c, false, N, "many"));
  /* Let the client read WELCOME before the flood. */
  for (int i = 0; i < 20 && !shrink_client_is_connected(c); i++)
    pump(c, false, 10);
  CU_ASSERT_FATAL(shrink_client_is_connected(c));
  shrink_shrinker *last = NULL;
  for (int i = 0; i < N; i++) {
    char name[32];
    snprintf(name, sizeof name, "s%d", i);
    CU_ASSERT_EQUAL_FATAL(shrink_client_register(c, name, 50, probe_shrink, &p, NULL, &last), 0);
  }
  for (size_t est = 1; est <= 100; est++)
    CU_ASSERT_EQUAL(shrink_shrinker_set_estimate(last, est), 0);

  int registers = 0, estimates = 0;
  uint32_t prev_id = 0;
  proto_msg m;
  while (agent_recv(&a, c, false, &m) == 0) {
    if (m.type == PROTO_MSG_REGISTER) {
      CU_ASSERT(m.u.reg.id > prev_id);
      prev_id = m.u.reg.id;
      registers++;
    } else if (m.type == PROTO_MSG_ESTIMATE) {
      estimates++;
      CU_ASSERT_EQUAL(m.u.estimate.estimate_bytes, 100);
      break;
    }
  }
  CU_ASSERT_EQUAL(registers, N);
  CU_ASSERT_EQUAL(estimates, 1);
  CU_ASSERT_TRUE(shrink_client_is_connected(c));
  shrink_client_free(c);
  agent_stop(&a);
}

/* Thread mode: callbacks on the library's one thread; unregister waits for a
 * running callback. */
static void test_thread_mode(void) {
  fake_agent a;
  agent_path(&a, "thread.sock");
  CU_ASSERT_EQUAL_FATAL(agent_listen(&a), 0);
  shrink_client *c;
  CU_ASSERT_EQUAL_FATAL(shrink_client_new(a.path, "threaded", 0, &c), 0);
  probe p1 = {0}, p2 = {0};
  shrink_shrinker *s1, *s2;
  CU_ASSERT_EQUAL_FATAL(shrink_client_register(c, "one", 50, probe_shrink, &p1, probe_free, &s1), 0);
  CU_ASSERT_EQUAL_FATAL(shrink_client_register(c, "two", 50, probe_shrink, &p2, probe_free, &s2), 0);
  CU_ASSERT_FATAL(agent_handshake(&a, c, true, 100, "threaded"));
  proto_msg m;
  uint32_t ids[2];
  for (int i = 0; i < 2; i++) {
    CU_ASSERT_EQUAL_FATAL(agent_recv(&a, c, true, &m), 0);
    CU_ASSERT_EQUAL_FATAL(m.type, PROTO_MSG_REGISTER);
    ids[i] = m.u.reg.id;
  }
  p1.give = p2.give = 1;
  CU_ASSERT_EQUAL(send_shrink(&a, 1, ids[0], 1, PROTO_LEVEL_HARD), 0);
  CU_ASSERT_EQUAL(send_shrink(&a, 1, ids[1], 1, PROTO_LEVEL_HARD), 0);
  for (int i = 0; i < 2; i++) {
    CU_ASSERT_EQUAL_FATAL(agent_recv(&a, c, true, &m), 0);
    CU_ASSERT_EQUAL(m.type, PROTO_MSG_SHRINK_DONE);
  }
  CU_ASSERT_FALSE(pthread_equal(p1.thread, pthread_self()));
  CU_ASSERT(pthread_equal(p1.thread, p2.thread));

  /* Unregistering while the callback runs returns only after it is done. */
  p1.sleep_ms = 200;
  CU_ASSERT_EQUAL(send_shrink(&a, 2, ids[0], 1, PROTO_LEVEL_HARD), 0);
  uint64_t end = mono_ms() + TIMEOUT_MS;
  while (!atomic_load(&p1.running) && mono_ms() < end)
    sleep_ms(1);
  CU_ASSERT_TRUE(atomic_load(&p1.running));
  CU_ASSERT_EQUAL(shrink_client_unregister(c, s1), 0);
  CU_ASSERT_FALSE(atomic_load(&p1.running));
  CU_ASSERT_EQUAL(atomic_load(&p1.calls), 2);
  CU_ASSERT_EQUAL(atomic_load(&p1.frees), 1);
  CU_ASSERT_EQUAL_FATAL(agent_recv(&a, c, true, &m), 0);
  CU_ASSERT_EQUAL(m.type, PROTO_MSG_SHRINK_DONE);
  CU_ASSERT_EQUAL_FATAL(agent_recv(&a, c, true, &m), 0);
  CU_ASSERT_EQUAL(m.type, PROTO_MSG_UNREGISTER);

  /* Freeing the client waits for a running callback too. */
  p2.sleep_ms = 100;
  CU_ASSERT_EQUAL(send_shrink(&a, 3, ids[1], 1, PROTO_LEVEL_HARD), 0);
  end = mono_ms() + TIMEOUT_MS;
  while (!atomic_load(&p2.running) && mono_ms() < end)
    sleep_ms(1);
  shrink_client_free(c);
  CU_ASSERT_FALSE(atomic_load(&p2.running));
  CU_ASSERT_EQUAL(atomic_load(&p2.frees), 1);
  agent_stop(&a);
}

/* OSv's API, through the default client, which reads $SHRINKD_SOCKET. */
static atomic_int osv_calls;
static atomic_bool osv_last_hard;
static atomic_size_t osv_last_target;

static size_t osv_func(size_t target, bool hard) {
  atomic_store(&osv_last_target, target);
  atomic_store(&osv_last_hard, hard);
  atomic_fetch_add(&osv_calls, 1);
  return hard ? target : 0;
}

static void test_osv_api(void) {
  fake_agent a;
  agent_path(&a, "osv.sock");
  CU_ASSERT_EQUAL_FATAL(agent_listen(&a), 0);
  setenv("SHRINKD_SOCKET", a.path, 1);
  char long_name[200];
  memset(long_name, 'o', sizeof long_name - 1);
  long_name[sizeof long_name - 1] = '\0';
  void *h = osv_register_shrinker(long_name, osv_func);
  CU_ASSERT_PTR_NOT_NULL_FATAL(h);
  CU_ASSERT_PTR_NULL(osv_register_shrinker("no-func", NULL));
  shrink_client *dflt = NULL, *again = NULL;
  CU_ASSERT_EQUAL(shrink_client_get_default(&dflt), 0);
  CU_ASSERT_EQUAL(shrink_client_get_default(&again), 0);
  CU_ASSERT_PTR_EQUAL(dflt, again);

  CU_ASSERT_FATAL(agent_handshake(&a, dflt, true, 100, NULL));
  proto_msg m;
  CU_ASSERT_EQUAL_FATAL(agent_recv(&a, dflt, true, &m), 0);
  CU_ASSERT_EQUAL_FATAL(m.type, PROTO_MSG_REGISTER);
  CU_ASSERT_EQUAL(strlen(m.u.reg.name), PROTO_NAME_MAX - 1); /* shortened, not refused */
  CU_ASSERT_EQUAL(m.u.reg.priority, PROTO_PRIORITY_DEFAULT);
  uint32_t id = m.u.reg.id;

  CU_ASSERT_EQUAL(send_shrink(&a, 5, id, 1 << 20, PROTO_LEVEL_SOFT), 0);
  CU_ASSERT_EQUAL_FATAL(agent_recv(&a, dflt, true, &m), 0);
  CU_ASSERT_EQUAL(m.u.done.freed_bytes, 0);
  CU_ASSERT_FALSE(atomic_load(&osv_last_hard));
  CU_ASSERT_EQUAL(send_shrink(&a, 6, id, 1 << 20, PROTO_LEVEL_HARD), 0);
  CU_ASSERT_EQUAL_FATAL(agent_recv(&a, dflt, true, &m), 0);
  CU_ASSERT_EQUAL(m.u.done.freed_bytes, 1 << 20);
  CU_ASSERT_EQUAL(m.u.done.flags, PROTO_DONE_TRIMMED);
  CU_ASSERT_TRUE(atomic_load(&osv_last_hard));
  CU_ASSERT_EQUAL(atomic_load(&osv_last_target), 1 << 20);
  CU_ASSERT_EQUAL(atomic_load(&osv_calls), 2);

  /* The handle is a shrinker of the default client. */
  CU_ASSERT_EQUAL(shrink_client_unregister(dflt, h), 0);
  CU_ASSERT_EQUAL_FATAL(agent_recv(&a, dflt, true, &m), 0);
  CU_ASSERT_EQUAL(m.type, PROTO_MSG_UNREGISTER);
  agent_stop(&a);
}

int main(void) {
  snprintf(tmpdir, sizeof tmpdir, "/tmp/test-libshrink-XXXXXX");
  if (!mkdtemp(tmpdir)) {
    perror("mkdtemp");
    return 1;
  }
  unsetenv("SHRINK_MALLOC_TRIM");
  if (CU_initialize_registry() != CUE_SUCCESS)
    return 1;
  CU_pSuite s = CU_add_suite("libshrink-client", NULL, NULL);
  CU_add_test(s, "version and names", test_version);
  CU_add_test(s, "invalid arguments", test_invalid_arguments);
  CU_add_test(s, "register before the agent runs", test_register_before_agent);
  CU_add_test(s, "shrink and reply", test_shrink_and_done);
  CU_add_test(s, "no trim", test_no_trim);
  CU_add_test(s, "estimates", test_estimates);
  CU_add_test(s, "unregister", test_unregister);
  CU_add_test(s, "unregister from its own callback", test_unregister_from_callback);
  CU_add_test(s, "reconnect after an agent restart", test_reconnect);
  CU_add_test(s, "malformed messages from the agent", test_malformed_from_agent);
  CU_add_test(s, "errors from the agent", test_error_from_agent);
  CU_add_test(s, "relief", test_relief);
  CU_add_test(s, "the agent's shrinker limit", test_max_shrinkers);
  CU_add_test(s, "back-pressure and merged estimates", test_backpressure);
  CU_add_test(s, "thread mode", test_thread_mode);
  CU_add_test(s, "OSv API and the default client", test_osv_api);
  int status = cunit_run_all();
  rmdir(tmpdir);
  return status;
}
