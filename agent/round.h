/* SPDX-License-Identifier: MIT */
/*
 * Running shrink rounds: where a decision of the policy becomes SHRINK
 * messages, and the replies become a report.
 *
 * A round takes a snapshot of the registered shrinkers (shrinkers that
 * register while it runs wait for the next round; their estimates are taken
 * at the start), reads MemAvailable, and runs the phases and passes that
 * policy.c plans: it sends each SHRINK without blocking (a client whose
 * socket buffer is full misses that request, counted as a deadline miss),
 * collects SHRINK_DONE replies, and ends a phase when every request of it
 * is answered or its deadline passes (one GLib timeout per phase, removed
 * when the phase ends: an idle agent has no timer at all). A round ends
 * early as soon as the replies claim the target, as far as it can check:
 * claims are hints. A reply counts for at most what it was asked; a
 * non-root client's shrinkers' estimates are capped at its process's RSS
 * (from /proc/PID/statm of its SO_PEERCRED pid) times its trust (see
 * agent_client_trust()), and its claims count only as far as that RSS fell
 * ("verified"). Root's claims are taken as they are. Then it reads
 * MemAvailable again and files the report.
 *
 * Replies are matched to requests in order per shrinker (a client answers a
 * shrinker's requests in the order they were sent). A reply after its
 * phase's deadline is "late": it counts in the shrinker's figures (freed
 * bytes, last reply) but not in the round's result, and does not reset the
 * shrinker's consecutive misses. A shrinker that goes away mid-round (its
 * client disconnects or unregisters it) is no longer waited for; its open
 * requests are marked missed without counting against it.
 *
 * One round at a time. Requests that come while one runs are QUEUED, in
 * order, up to AgentRoundConfig.queue_max (then refused with
 * AGENT_ERROR_BUSY); they are not merged, so that every caller gets the
 * report of the round it asked for. A round always starts from the main
 * loop (an idle callback), never inside agent_round_request(), so the done
 * callback never runs before agent_round_request() has returned.
 *
 * The last history_max reports (at most AGENT_ROUND_HISTORY_REQUESTS_MAX
 * request lines in all, the newest report always kept) stay for status.
 * Main loop thread only.
 */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "local-proto.h"
#include "procfs.h"
#include "registry.h"

#define AGENT_ROUND_HISTORY_DEFAULT      16
#define AGENT_ROUND_HISTORY_REQUESTS_MAX 2048
#define AGENT_ROUND_QUEUE_DEFAULT        8

typedef struct {
  uint32_t miss_limit; /* soft phases skip shrinkers at this many consecutive misses; 0: never */
  unsigned soft_share_pct; /* a hard round's soft phase gets this much of the deadline */
  unsigned queue_max;      /* rounds waiting behind the running one */
  unsigned history_max;    /* reports kept */
} AgentRoundConfig;

typedef struct {
  uint64_t target_bytes;
  proto_level level;
  uint32_t deadline_ms; /* 1..PROTO_DEADLINE_MAX_MS, the whole round's */
  proto_reason reason;
  bool soft_done; /* hard only: a soft round for this need already ran, skip the soft phase */
} AgentRoundParams;

/* One SHRINK sent, and what became of it. */
typedef struct {
  pid_t pid;
  uid_t uid;      /* not reported; lets status show a user only its own */
  char *client;   /* interned GRefString: the client's HELLO name */
  char *shrinker; /* interned GRefString */
  uint32_t id;
  uint8_t pass; /* 1 or 2, within its phase */
  proto_level level;
  bool answered; /* a reply came before the phase's deadline */
  bool missed;   /* no reply in time, could not be sent, or the shrinker went away */
  uint64_t asked_bytes;
  uint64_t freed_bytes; /* as claimed in the reply in time, at most asked_bytes; 0 otherwise */
  int64_t reply_us;     /* reply time since the round's start; -1 if none in time */
} AgentRoundRequest;

typedef struct {
  uint64_t round_id; /* 1, 2, ... in this agent's life */
  proto_level level;
  proto_reason reason;
  uint64_t target_bytes;
  uint32_t deadline_ms;
  int64_t started_us;     /* wall clock (g_get_real_time) */
  int64_t duration_us;    /* start to end, both measurements included */
  int64_t fanout_us;      /* first SHRINK sent to last reply in time; 0 if none */
  uint64_t claimed_bytes; /* sum of freed_bytes over the requests (saturating) */
  uint64_t verified_bytes; /* of that, what the clients' RSS confirmed (root's claims: all) */
  bool measured;          /* both MemAvailable readings worked */
  uint64_t mem_available_before_bytes;
  uint64_t mem_available_after_bytes;
  int64_t measured_bytes; /* after - before; may be negative (others allocate) */
  GArray *requests;       /* AgentRoundRequest, in the order sent */
} AgentRoundReport;

/* Called once when the round asked for ends, with its report (owned by the
 * runner, valid during the call). */
typedef void (*AgentRoundDoneFunc)(const AgentRoundReport *report, gpointer user_data);

typedef struct AgentRounds AgentRounds;

/*
 * Makes the round runner over @registry (whose removal hook it takes) and
 * @procfs, both borrowed: they must outlive it. @config is copied; zero
 * fields take defaults (history 16, queue 8, soft share 50).
 */
AgentRounds *agent_rounds_new(AgentRegistry *registry, AgentProcfs *procfs,
                              const AgentRoundConfig *config);

/* Frees @self: a running round is abandoned, and queued or running
 * requests get their destroy notify without a done call. NULL is fine. */
void agent_rounds_free(AgentRounds *self);

/*
 * Asks for a round. Returns TRUE (then @done runs once when it ends, and
 * @destroy, if any, on @user_data afterwards or when @self is freed), or
 * FALSE with @error: AGENT_ERROR_INVALID for a bad level, reason or
 * deadline; AGENT_ERROR_BUSY when the queue is full (then @destroy is not
 * called).
 */
gboolean agent_round_request(AgentRounds *self, const AgentRoundParams *params,
                             AgentRoundDoneFunc done, gpointer user_data, GDestroyNotify destroy,
                             GError **error);

/*
 * Takes a SHRINK_DONE from @client. Returns TRUE, or FALSE with an
 * AGENT_PROTO_ERROR for the peer: PROTO_ERR_UNKNOWN_ID (no such shrinker)
 * or PROTO_ERR_STATE (nothing was asked of it).
 */
gboolean agent_round_handle_done(AgentRounds *self, AgentClient *client,
                                 const proto_shrink_done *done, GError **error);

/*
 * Sends RELIEF (@round_id, or 0; @reason) to every client with at least one
 * shrinker, without blocking. Returns how many clients it reached.
 */
guint agent_round_send_relief(AgentRounds *self, uint64_t round_id, proto_reason reason);

/* Whether a round is running. */
gboolean agent_round_is_running(const AgentRounds *self);

/* The kept reports (AgentRoundReport*, oldest first), owned by @self. */
const GQueue *agent_round_history(const AgentRounds *self);

/* Totals over this agent's life; any pointer may be NULL. */
void agent_round_totals(const AgentRounds *self, uint64_t *rounds, uint64_t *claimed_bytes,
                        uint64_t *verified_bytes, int64_t *measured_bytes);

/* Whether a soft phase would skip @shrinker now (misses >= miss limit). */
gboolean agent_round_skips_in_soft(const AgentRounds *self, const AgentShrinker *shrinker);
