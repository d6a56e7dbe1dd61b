/* SPDX-License-Identifier: MIT */
/*
 * libshrink: give memory back to the system before the hypervisor's balloon
 * takes it by force.
 *
 * An application registers one or more shrinkers with a client. The client
 * connects to the shrinkd agent (and reconnects whenever the agent restarts),
 * and when the guest runs short of memory the agent asks shrinkers to free
 * some: softly first ("pressure is building, free what is cheap"), hard if
 * that was not enough ("free now, or the balloon stalls"). A shrinker answers
 * with the number of bytes it freed. After a callback frees memory the library
 * calls malloc_trim(0), so that the pages really leave the process.
 *
 * Threads. By default a client runs its callbacks on one thread of its own,
 * created when the first shrinker or relief callback is set: callbacks never
 * run concurrently with each other, but they do run concurrently with the
 * rest of the application, like a signal handler that may take locks. An
 * application with its own event loop can create its client with
 * SHRINK_CLIENT_NO_THREAD instead, watch shrink_client_get_fd() for input and
 * call shrink_client_dispatch(): callbacks then run inside dispatch.
 *
 * Every function in this header may be called from any thread unless its
 * comment says otherwise. Functions returning int return 0 (or a value >= 0
 * where stated) on success and a negative errno value on failure.
 *
 * Environment:
 *   SHRINKD_SOCKET      the agent's socket when the application passes none
 *                       (ignored in set-user-ID and similar programs)
 *   SHRINK_MALLOC_TRIM  "0": never call malloc_trim(0) (see SHRINK_CLIENT_NO_TRIM)
 *   SHRINK_DEBUG        set: log connection events and agent errors to stderr
 *
 * Link with `pkg-config --cflags --libs libshrink`.
 */
#ifndef SHRINK_H
#define SHRINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The version of this header. shrink_version() gives the library's. */
#define SHRINK_VERSION_MAJOR 0
#define SHRINK_VERSION_MINOR 1
#define SHRINK_VERSION_MICRO 0
#define SHRINK_VERSION_STRING "0.1.0"
/* Comparable: SHRINK_VERSION_HEX >= 0x000100 means 0.1.0 or later. */
#define SHRINK_VERSION_HEX                                                    \
  ((SHRINK_VERSION_MAJOR << 16) | (SHRINK_VERSION_MINOR << 8) |               \
   SHRINK_VERSION_MICRO)

#if defined(__GNUC__) || defined(__clang__)
#define SHRINK_WARN_UNUSED_RESULT __attribute__((warn_unused_result))
#else
#define SHRINK_WARN_UNUSED_RESULT
#endif

/* A connection to the agent, owning the shrinkers registered on it. */
typedef struct shrink_client shrink_client;
/* One registered callback. */
typedef struct shrink_shrinker shrink_shrinker;

typedef enum {
  SHRINK_LEVEL_SOFT = 0, /* pressure is building: free what is cheap, may defer */
  SHRINK_LEVEL_HARD = 1, /* free now, or the balloon stalls and the guest may OOM */
} shrink_level;

/* Why the agent asks; information only, a callback may ignore it. */
typedef enum {
  SHRINK_REASON_UNSPECIFIED = 0,
  SHRINK_REASON_MANUAL = 1,    /* an operator's `shrinkctl shrink` */
  SHRINK_REASON_BALLOON = 2,   /* the balloon's target fell */
  SHRINK_REASON_MIGRATION = 3, /* a live migration is under way */
  SHRINK_REASON_PRESSURE = 4,  /* PSI or another memory-pressure signal */
  SHRINK_REASON_HOST = 5,      /* the host asked over the agent's channel */
} shrink_reason;

/* Priorities: a higher one is asked first and for a larger share. */
#define SHRINK_PRIORITY_MIN 0
#define SHRINK_PRIORITY_DEFAULT 50
#define SHRINK_PRIORITY_MAX 100

/* Flags of shrink_client_new(). */
#define SHRINK_CLIENT_NO_THREAD (1u << 0) /* no library thread: get_fd + dispatch */
#define SHRINK_CLIENT_NO_TRIM (1u << 1)   /* never call malloc_trim(0) */

/*
 * One request to free memory, valid during the callback only. Fields may be
 * appended in later versions (the library allocates it; never copy it into
 * a structure of your own by size).
 */
typedef struct {
  uint64_t round_id;    /* the agent's round, for logs; never 0 */
  size_t target_bytes;  /* what this shrinker is asked to free */
  shrink_level level;
  shrink_reason reason;
  uint32_t deadline_ms; /* the agent waits this long for the answer (from
                           when it asked); a late answer still counts as
                           memory freed, but the round has moved on */
} shrink_request;

/* The end of a period of pressure: caches may grow again. */
typedef struct {
  uint64_t round_id;    /* the round whose pressure is over, or 0 */
  shrink_reason reason;
} shrink_relief;

/*
 * A shrinker callback: free memory, about @req->target_bytes of it, and
 * return how many bytes were freed (0 if none; more than the target is fine).
 * It runs on the client's thread (or inside shrink_client_dispatch()), never
 * concurrently with another callback of the same client. It may call any
 * function of this library except shrink_client_free() on its own client, and
 * may allocate. It should return within req->deadline_ms.
 */
typedef size_t (*shrink_func)(const shrink_request *req, void *user_data);

/* Called like a shrinker callback when the agent reports relief. */
typedef void (*shrink_relief_func)(const shrink_relief *relief, void *user_data);

/* Frees user data handed to the library, once the library no longer uses it. */
typedef void (*shrink_free_func)(void *user_data);

/*
 * The version of the library at run time, e.g. "0.1.0": static, never NULL.
 */
const char *shrink_version(void);

/*
 * Static English names ("soft", "hard"; "unspecified", "manual", "balloon",
 * "migration", "pressure", "host"); "unknown" for other values. Never NULL.
 */
const char *shrink_level_name(shrink_level level);
const char *shrink_reason_name(shrink_reason reason);

/*
 * Creates a client in *@out.
 *
 * @socket_path: the agent's socket; NULL means $SHRINKD_SOCKET, or else the
 *   build's default (/run/shrinkd/shrinkd.sock).
 * @app_name: how the agent shows this application; NULL means the program's
 *   name. Truncated to 63 bytes; an empty name is replaced by "unknown".
 * @flags: SHRINK_CLIENT_* or 0.
 *
 * Returns 0 with the client in *@out, or:
 *   -EINVAL        an argument is invalid or an unknown flag is set
 *   -ENAMETOOLONG  the socket path does not fit in an AF_UNIX address
 *   -ENOMEM, -EMFILE, -ENFILE  out of memory or descriptors
 *
 * It does not wait for the agent, which need not be running: the client
 * connects in the background, retrying with back-off (50 ms doubling to 1 s),
 * and registers every shrinker again after each reconnection. Unless the
 * flags include SHRINK_CLIENT_NO_THREAD, the thread starts (and the first
 * connection attempt is made) when the first shrinker or relief callback is
 * set.
 *
 * The client must be freed with shrink_client_free(). After fork() the child
 * must not use a client made by the parent, not even to free it.
 */
SHRINK_WARN_UNUSED_RESULT
int shrink_client_new(const char *socket_path, const char *app_name,
                      unsigned int flags, shrink_client **out);

/*
 * The process-wide default client, created on first use with the default
 * socket, the program's name and no flags (the one osv_register_shrinker()
 * and <osv/shrinker.h> use). Returns 0 with it in *@out, or the error with
 * which it could not be created (the same error every time). The default
 * client lives until the process exits: never free it.
 */
SHRINK_WARN_UNUSED_RESULT
int shrink_client_get_default(shrink_client **out);

/*
 * Disconnects, stops the client's thread, unregisters every shrinker (calling
 * each one's free function) and the relief callback, and frees the client.
 * NULL is ignored.
 *
 * No other call on @client or its shrinkers may be in progress or follow,
 * and it must not be called from one of the client's callbacks. It waits for
 * a running callback to return.
 */
void shrink_client_free(shrink_client *client);

/*
 * Registers a shrinker with @client and returns it in *@out.
 *
 * @name: shown by the agent; 1 to 63 bytes.
 * @priority: SHRINK_PRIORITY_MIN..SHRINK_PRIORITY_MAX (use
 *   SHRINK_PRIORITY_DEFAULT when unsure).
 * @func: the callback, called with @user_data.
 * @free_func: called with @user_data when the shrinker is unregistered or
 *   its client freed, or NULL. It is not called when registration fails.
 *
 * Returns 0, or -EINVAL (an argument is NULL or out of range, or the name is
 * empty), -ENAMETOOLONG (name), -ENOMEM, or -EAGAIN (the client's thread
 * could not be started).
 *
 * Works whether or not the agent is connected; the agent learns about it as
 * soon as it is. With a client thread, @func may be called before this
 * returns; *@out is set before that can happen.
 */
SHRINK_WARN_UNUSED_RESULT
int shrink_client_register(shrink_client *client, const char *name,
                           int priority, shrink_func func, void *user_data,
                           shrink_free_func free_func, shrink_shrinker **out);

/*
 * Unregisters @shrinker and frees it; its user data is then released with
 * its free function. Returns 0, or -EINVAL if @shrinker is not registered
 * with @client (or already being unregistered).
 *
 * If the shrinker's callback is running on another thread, this waits for it
 * to return: after this returns the callback is not running and will not be
 * called again. Called from one of the client's own callbacks (including the
 * shrinker's own), it does not wait: the shrinker is not called again and is
 * freed, after its reply, when the running callback has returned.
 */
int shrink_client_unregister(shrink_client *client, shrink_shrinker *shrinker);

/*
 * Sets (or, with clear_estimate, forgets) how many bytes the shrinker could
 * free now if asked hard, like the kernel's count_objects. The agent uses it
 * to split a target among shrinkers; without one it guesses. Cheap: call it
 * whenever the figure changes noticeably; updates that the agent has not
 * read yet are merged. Returns 0 or -EINVAL (NULL).
 */
int shrink_shrinker_set_estimate(shrink_shrinker *shrinker, size_t bytes);
int shrink_shrinker_clear_estimate(shrink_shrinker *shrinker);

/*
 * Sets the callback run when the agent reports relief (the end of pressure),
 * replacing any previous one; @func NULL removes it. The previous user data
 * is released with its free function once the previous callback is not
 * running. Returns 0, or -ENOMEM, or -EAGAIN (the thread could not be
 * started), or -EINVAL (@client NULL, or @func NULL with @user_data set).
 */
int shrink_client_set_relief(shrink_client *client, shrink_relief_func func,
                             void *user_data, shrink_free_func free_func);

/*
 * For SHRINK_CLIENT_NO_THREAD clients: a descriptor to watch for input
 * (POLLIN/EPOLLIN) in the application's loop; whenever it is readable, call
 * shrink_client_dispatch(). It stays the same for the client's whole life,
 * across reconnections; do not read, write or close it. Returns the
 * descriptor (>= 0), or -EINVAL for a client with its own thread.
 */
int shrink_client_get_fd(shrink_client *client);

/*
 * For SHRINK_CLIENT_NO_THREAD clients: does whatever is ready without
 * blocking: connecting or reconnecting, sending queued messages, receiving
 * requests and running callbacks for them, replying. Callbacks run inside
 * this call. Calls from several threads are serialised. Returns 0, -EINVAL
 * for a client with its own thread, or -EDEADLK when called from one of the
 * client's callbacks. Connection failures are not errors: the client
 * retries by itself.
 */
int shrink_client_dispatch(shrink_client *client);

/*
 * Whether the client is connected to the agent and has registered its
 * shrinkers (in the agent's reply to our greeting). A snapshot: it may change
 * at any moment.
 */
bool shrink_client_is_connected(shrink_client *client);

/*
 * OSv's C API, for programs written for OSv: registers @func with the default
 * client (see shrink_client_get_default()) under @name (truncated to 63
 * bytes) with the default priority. @func is called with the target in bytes
 * and hard = (level == SHRINK_LEVEL_HARD) and returns the bytes it freed.
 * Returns an opaque handle (a shrink_shrinker *, which may be passed to
 * shrink_client_unregister() with the default client), or NULL on failure
 * (set $SHRINK_DEBUG to see why). A program may declare this function itself
 * and include no header of ours.
 */
void *osv_register_shrinker(const char *name,
                            size_t (*func)(size_t target, bool hard));

#ifdef __cplusplus
}
#endif

#endif /* SHRINK_H */
