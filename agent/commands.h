/* SPDX-License-Identifier: MIT */
/*
 * The JSON commands, in the QEMU guest agent's style, independent of the
 * transport: the local server feeds them the text of CONTROL messages, the
 * host channel (channel.c) the objects the host sends.
 *
 * Request:  {"execute": NAME, "arguments": {...}, "id": ANY}
 *           ("arguments" and "id" optional; "id" is echoed in the reply)
 * Reply:    {"return": ...} or
 *           {"error": {"class": CLASS, "desc": TEXT}}
 * Classes:  GenericError (malformed request, a failure), CommandNotFound,
 *           InvalidParameter (an argument missing, unknown, of the wrong
 *           type or out of range), PermissionDenied (local), Busy (host: the
 *           round queue is full; a local caller gets GenericError there).
 *
 * The host's protocol commands are the host's only (a local caller is
 * told they are not found); the host may also use the local names (over
 * the channel "shrink" takes no "reason": it is always "host").
 *
 * Local commands:
 *  - "status": see write_status() in commands.c for the shape.
 *    A local caller that is not root sees only the shrinkers (and round
 *    requests) of its own uid.
 *  - "shrink": {"target_bytes": N (required, >= 0), "level": "soft"|"hard"
 *    (default "soft"), "deadline_ms": 1..600000 (default: the agent's),
 *    "reason": "manual"|"balloon"|"migration"|"pressure"|"host"|"unspecified"
 *    (default "manual")}. Local root or the host only. Replies when the
 *    round ends, with its report.
 *
 * Host commands (docs/channel-protocol.md; the host is trusted like root):
 *  - "guest-sync-delimited" {"id": int}: the id, the reply text preceded
 *    by the byte AGENT_COMMANDS_SYNC_BYTE (the transport writes it as is);
 *    "guest-sync" {"id": int}: the id; "guest-ping": {}; "guest-info":
 *    {"version", "supported_commands": [{"name", "enabled",
 *    "success-response"}]}.
 *  - "shrinkd-status": the local "status" object, everything visible.
 *  - "shrinkd-shrink": as "shrink" without "reason" (always "host").
 *  - "shrinkd-prepare" {"new_size_bytes": N (required), "deadline_ms":
 *    1..600000 (default AGENT_COMMANDS_PREPARE_DEADLINE_DEFAULT)}: the
 *    guest's size now is MemTotal (less what the balloon holds when
 *    deflate-on-oom keeps it in MemTotal); needed = size - N - (MemAvailable
 *    - reserve), at least 0. If something is needed: a soft round for it
 *    with half the deadline; then, if MemAvailable (re-read) still leaves a
 *    shortfall, a hard round for it with what is left of the deadline.
 *    Answers {"current_size_bytes", "new_size_bytes", "needed_bytes",
 *    "free_bytes" (MemAvailable at the start), "reserve_bytes",
 *    "freed_bytes" (claimed over the rounds), "shortfall_bytes",
 *    "ready" (shortfall 0), "deadline_ms", "duration_us", "rounds":
 *    [report, ...]}. Waiting behind a round already running is not counted
 *    in the deadline.
 *  - "shrinkd-prepare-migration" {"deadline_ms": 1..600000 (default
 *    AGENT_COMMANDS_MIGRATION_DEADLINE_DEFAULT), "fraction_pct": 1..100
 *    (default 100)}: one soft round, reason "migration", for fraction_pct
 *    percent of the sum of the shrinkers' estimates (of the prepare
 *    reserve when no shrinker has one), as for a free page hint
 *    (balloon.h). Answers {"freed_bytes" (claimed), "measured_bytes" |
 *    null, "mem_available_before_bytes" | null, "mem_available_after_bytes"
 *    | null, "target_bytes", "ready": true, "rounds": [report]}.
 *
 * Requests are read by json-reader.h, strictly (RFC 8259, no duplicate
 * member names, integers within int64, finite doubles), under its bounds
 * for text from any peer: at most AGENT_COMMAND_TEXT_MAX bytes and
 * AGENT_COMMAND_NESTING_MAX levels of arrays/objects; no NUL byte; valid
 * UTF-8. The host channel's framing (proto/channel-frame.h) enforces the
 * same bounds and a string length limit while the bytes arrive.
 *
 * Main loop thread only.
 */
#pragma once

#include <glib.h>
#include <sys/types.h>

#include "balloon.h"
#include "json-reader.h"
#include "privileges.h"
#include "procfs.h"
#include "registry.h"
#include "round.h"

#define AGENT_COMMAND_TEXT_MAX    AGENT_JSON_READER_TEXT_MAX
#define AGENT_COMMAND_NESTING_MAX AGENT_JSON_READER_DEPTH_MAX

#define AGENT_COMMANDS_SYNC_BYTE                  0xFF
/* status lists this many shrinkers unless asked for another page; a
 * page is at most AGENT_STATUS_LIMIT_MAX (about 300 bytes each). */
#define AGENT_STATUS_LIMIT_DEFAULT 1000
#define AGENT_STATUS_LIMIT_MAX     10000
#define AGENT_COMMANDS_PREPARE_DEADLINE_DEFAULT   4000
#define AGENT_COMMANDS_PREPARE_RESERVE_DEFAULT    (UINT64_C(64) << 20)
/* The host's migration tool waits for the answer before it migrates. */
#define AGENT_COMMANDS_MIGRATION_DEADLINE_DEFAULT 3000

typedef enum {
  AGENT_CALLER_LOCAL, /* a peer of the local socket */
  AGENT_CALLER_HOST,  /* the host, over the channel: trusted like root */
} AgentCallerKind;

typedef struct {
  AgentCallerKind kind;
  uid_t uid; /* local: SO_PEERCRED; ignored for the host */
  pid_t pid; /* local: SO_PEERCRED; 0 for the host */
} AgentCaller;

/* Receives a reply: JSON text of @len bytes, NUL-terminated (transfer
 * full: g_free it). Text rather than a tree of values: see json-writer.h. */
typedef void (*AgentCommandReplyFunc)(char *text, gsize len, gpointer user_data);

typedef struct AgentCommands AgentCommands;

/*
 * Makes the command layer over @registry, @rounds and @procfs (borrowed;
 * they must outlive it). Rounds that name no deadline get
 * @default_deadline_ms.
 */
AgentCommands *agent_commands_new(AgentRegistry *registry, AgentRounds *rounds, AgentProcfs *procfs,
                                  uint32_t default_deadline_ms);

/* Lets status show @balloon (borrowed; it must outlive @self, or be unset
 * with NULL first): "balloon" and "sources". Without one, status has
 * "balloon": null and "sources": []. */
void agent_commands_set_balloon(AgentCommands *self, AgentBalloon *balloon);

/* Lets status show @privileges (borrowed; it must outlive @self, or be
 * unset with NULL first): "privileges". Without them, "privileges": null. */
void agent_commands_set_privileges(AgentCommands *self, const AgentPrivileges *privileges);

/* Sets the free memory shrinkd-prepare leaves to the guest (default
 * AGENT_COMMANDS_PREPARE_RESERVE_DEFAULT; main.c passes the balloon's
 * reserve, so that both judge a shortfall alike). It is also the size of
 * shrinkd-prepare-migration's round when no shrinker has an estimate, as
 * the balloon's reserve is for a hint round. */
void agent_commands_set_prepare_reserve(AgentCommands *self, uint64_t reserve_bytes);

/* Frees @self. Replies still pending (a shrink whose round runs) are
 * delivered by the round runner's destroy path: none after this. NULL ok. */
void agent_commands_free(AgentCommands *self);

/*
 * Runs @request (borrowed: only read before this returns; a request's
 * "id" is kept as text for a later reply) for @caller. @reply is called
 * exactly once with the reply, possibly before this returns (status,
 * errors) or later from the main loop (shrink); then @destroy on
 * @user_data. If the round runner is freed before a shrink round ends,
 * only @destroy runs.
 */
void agent_commands_dispatch(AgentCommands *self, const AgentJsonValue *request,
                             const AgentCaller *caller, AgentCommandReplyFunc reply,
                             gpointer user_data, GDestroyNotify destroy);

/*
 * agent_json_reader_parse() then agent_commands_dispatch(); a request that
 * does not parse gets a GenericError reply with the reader's message
 * (before this returns).
 */
void agent_commands_handle_text(AgentCommands *self, const char *text, gsize len,
                                const AgentCaller *caller, AgentCommandReplyFunc reply,
                                gpointer user_data, GDestroyNotify destroy);

/*
 * Runs a status command and throws the reply away, so that the one-time
 * work of the first command (the code it runs paged in, GLib's first
 * allocations of those sizes) happens at start-up: after main.c dropped
 * the pages only start-up needed, before it locks memory.
 */
void agent_commands_warm_up(AgentCommands *self);

/*
 * The text of {"error": {"class": @klass, "desc": ...}} (with "id": @id if
 * @id, borrowed, is not NULL), for transports that must answer before a
 * request is parsed. The description must be valid UTF-8. Returns newly
 * allocated text; *@len (may be NULL) gets its length.
 */
char *agent_commands_error_text(const char *klass, const AgentJsonValue *id, gsize *len,
                                const char *format, ...) G_GNUC_PRINTF(4, 5);
