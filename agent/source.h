/* SPDX-License-Identifier: MIT */
/*
 * Pressure sources: where a kernel event enters the agent.
 *
 * Every source (the virtio balloon, the kernel log's stall lines, PSI; later
 * Xen and the host channel) is an AgentSource behind this one interface:
 * made with its own constructor (source-*.c), started and stopped on a
 * GMainContext, describing itself for status (name, whether it works, in
 * which mode, and why), and handing what it sees to one sink, the balloon
 * controller (balloon.c), as AgentSourceEvent.
 *
 * A source never fails to start: one that cannot work (no device, no
 * permission, no PSI) logs ONE warning saying why, shows active = FALSE and
 * the reason in its status, and the agent carries on with the others. All
 * /proc and /sys paths are taken under the source's root
 * (agent_procfs_path()).
 *
 * Main loop thread only (the thread that runs the context).
 */
#pragma once

#include <glib-unix.h>
#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

#include "procfs.h"
#include "virtio-pci.h"

typedef enum {
  AGENT_SOURCE_EVENT_TARGET,   /* the balloon's target changed (balloon; prev_bytes: old target) */
  AGENT_SOURCE_EVENT_PROGRESS, /* the balloon's size changed (balloon; prev_bytes: old size) */
  AGENT_SOURCE_EVENT_STALL,    /* the balloon driver could not get pages (text) */
  AGENT_SOURCE_EVENT_HINT_START, /* a new active free-page hint command id (balloon): QEMU
                                  * sends one per pass over memory */
  AGENT_SOURCE_EVENT_HINT_END,   /* it ended: the driver gave the pages back (balloon) */
  AGENT_SOURCE_EVENT_PRESSURE,   /* memory pressure that does not come from the balloon */
  AGENT_SOURCE_EVENT_OOM_KILL,   /* the kernel killed a process for memory (text) */
} AgentSourceEventKind;

/* What a balloon source knows, in bytes (the device counts 4 KiB pages). */
typedef struct {
  bool target_known;     /* config space is readable */
  uint64_t target_bytes; /* what the host wants the balloon to hold */
  bool actual_known;     /* from config space, else /proc/vmstat */
  uint64_t actual_bytes; /* what the balloon holds */
  bool hint_supported;   /* VIRTIO_BALLOON_F_FREE_PAGE_HINT negotiated, id readable */
  uint32_t free_page_hint_cmd_id;
  bool hint_in_progress; /* from an active command id until DONE */
} AgentBalloonReading;

typedef struct {
  AgentSourceEventKind kind;
  const char *source;          /* the source's name (set by agent_source_emit) */
  int64_t mono_us;             /* when the agent saw it (set by agent_source_emit if 0) */
  AgentBalloonReading balloon; /* balloon events: the reading after the change */
  uint64_t prev_bytes;         /* TARGET, PROGRESS: the value before */
  const char *text;            /* STALL, OOM_KILL, PRESSURE: what was seen; valid during the call */
  bool initial;                /* TARGET: the first reading after start (no change seen) */
} AgentSourceEvent;

typedef struct AgentSource AgentSource;

/* Receives every event of a source, on the main loop. */
typedef void (*AgentSourceSink)(AgentSource *source, const AgentSourceEvent *event,
                                gpointer user_data);

/* What every constructor takes. */
typedef struct {
  GMainContext *context; /* NULL: the default context */
  const char *root;      /* /proc and /sys are read under it; NULL means "/" */
  AgentProcfs *procfs;   /* borrowed, must outlive the source; under the same root */
} AgentSourceEnv;

/* A source's status, for shrinkctl status (strings owned by the source). */
typedef struct {
  const char *name;   /* "virtio-balloon", "kmsg", "psi" */
  gboolean active;    /* it delivers events */
  const char *mode;   /* how: "kprobe-pmu", "poll", "trigger", "none", ... */
  const char *reason; /* why that mode, or why inactive */
  uint64_t refused;   /* inputs refused as not the kernel's (forged records) */
} AgentSourceStatus;

/* ---- using a source ---- */

/* Sets who gets the events (before start). */
void agent_source_set_sink(AgentSource *self, AgentSourceSink sink, gpointer user_data);

/* Starts watching. Never fails: see the status for what works. Starting a
 * started source does nothing. */
void agent_source_start(AgentSource *self);

/* Stops watching: no event after this, no fd or timer left. Idempotent. */
void agent_source_stop(AgentSource *self);

/* Stops and frees @self. NULL is fine. */
void agent_source_free(AgentSource *self);

/* Keeps @self from starting (agent_source_start does nothing) and says
 * why in its status. */
void agent_source_disable(AgentSource *self, const char *reason);

/* Reads what @self watches now, if it can (a started balloon source:
 * its config space), and emits any change as events before returning, as
 * a look of its own would. For a decision that must not rest on a reading
 * that may be a poll old (the balloon keeps moving between polls). Does
 * nothing for a source without a reading of its own or not started. */
void agent_source_refresh(AgentSource *self);

/* Fills @out; valid until the source changes its status or is freed. */
void agent_source_get_status(const AgentSource *self, AgentSourceStatus *out);

/* The name given by its class. */
const char *agent_source_name(const AgentSource *self);

/* ---- implementing a source ---- */

typedef struct {
  const char *name;
  void (*start)(AgentSource *self);
  void (*stop)(AgentSource *self);     /* must leave no fd or GSource behind */
  void (*finalize)(AgentSource *self); /* frees the implementation's part (after stop) */
  void (*refresh)(AgentSource *self);  /* optional: agent_source_refresh() */
} AgentSourceClass;

/* The common part; an implementation embeds it first. */
struct AgentSource {
  const AgentSourceClass *klass;
  GMainContext *context;
  char *root;
  AgentSourceSink sink;
  gpointer sink_data;
  gboolean started;
  gboolean disabled;
  gboolean active;
  char *mode;
  char *reason;
  uint64_t refused; /* see AgentSourceStatus */
};

/* Fills the common part of a newly allocated (zeroed) implementation. */
void agent_source_init(AgentSource *self, const AgentSourceClass *klass, const AgentSourceEnv *env);

/* Sets the status; @format gives the reason. */
void agent_source_set_status(AgentSource *self, gboolean active, const char *mode,
                             const char *format, ...) G_GNUC_PRINTF(4, 5);

/* Sends @event to the sink (fills source and, if 0, mono_us). */
void agent_source_emit(AgentSource *self, AgentSourceEvent *event);

/* The path of @abs_path under the source's root (g_free). */
char *agent_source_path(const AgentSource *self, const char *abs_path);

/* Watches @fd on the source's context. Returns the attached GSource
 * (owned by the caller: g_source_destroy + g_source_unref, or
 * agent_source_drop()). */
GSource *agent_source_watch_fd(AgentSource *self, int fd, GIOCondition condition,
                               GUnixFDSourceFunc func, gpointer user_data);

/* A one-shot or repeating timer on the source's context (same ownership). */
GSource *agent_source_timeout(AgentSource *self, guint interval_ms, GSourceFunc func,
                              gpointer user_data);

/* Destroys and unrefs *@gsource if set, and clears it. */
void agent_source_drop(GSource **gsource);

/* ---- the sources ---- */

/* How the virtio-balloon source learns that the config changed. */
typedef enum {
  AGENT_VIRTIO_EVENTS_AUTO,           /* kprobe PMU, else tracefs, else poll */
  AGENT_VIRTIO_EVENTS_KPROBE_PMU,     /* only the kprobe PMU (else poll) */
  AGENT_VIRTIO_EVENTS_KPROBE_TRACEFS, /* only a tracefs kprobe event (else poll) */
  AGENT_VIRTIO_EVENTS_POLL,           /* poll config space */
} AgentVirtioEvents;

typedef struct {
  AgentVirtioEvents events;
  uint32_t poll_fast_ms;       /* after a change (default 20) */
  uint32_t poll_moving_max_ms; /* slowest poll while target != actual (default 100) */
  uint32_t poll_idle_ms;       /* poll mode's slowest, when nothing moves (default 250) */
  uint32_t hint_max_ms;        /* a hint run with no news for this long is over (default 120000) */
} AgentVirtioSourceConfig;

/* Defaults of AgentVirtioSourceConfig. */
#define AGENT_VIRTIO_POLL_FAST_MS_DEFAULT   20
#define AGENT_VIRTIO_POLL_MOVING_MS_DEFAULT 100
#define AGENT_VIRTIO_POLL_IDLE_MS_DEFAULT   250
#define AGENT_VIRTIO_HINT_MAX_MS_DEFAULT    120000

/*
 * The virtio-balloon source ("virtio-balloon"): finds the device, reads its
 * config through the PCI_CFG window or the legacy I/O BAR (else follows
 * only /proc/vmstat's balloon counters: actual known, target not), and
 * learns of changes from a kprobe on virtballoon_changed (perf_event_open,
 * one ring per CPU, no idle wake-up) or by polling. While the balloon
 * moves it polls to follow progress, and stops when it settles (kprobe
 * modes). Emits TARGET (also once at start, initial), PROGRESS,
 * HINT_START and HINT_END. @config may be NULL (defaults); zero fields
 * take defaults.
 */
AgentSource *agent_source_virtio_new(const AgentSourceEnv *env,
                                     const AgentVirtioSourceConfig *config);

/* The virtio source's own figures, for status (strings owned by it). */
typedef struct {
  const char *device; /* PCI address, or NULL when there is no device */
  const char *mode;   /* "kprobe-pmu", "kprobe-tracefs", "poll" or "none" */
  const char *mode_reason;
  AgentVirtioAccess access;
  const char *access_reason; /* why that access (the errors when none) */
  bool features_known;
  uint64_t features;
  bool deflate_on_oom;
  AgentBalloonReading reading;
  uint64_t kprobe_hits; /* samples drained from the rings */
  uint64_t reads;       /* config (or vmstat) reads */
} AgentVirtioInfo;

/* Fills @out from a source made by agent_source_virtio_new(). */
void agent_source_virtio_info(const AgentSource *self, AgentVirtioInfo *out);

/*
 * The kernel log source ("kmsg"): reads @path (NULL: /dev/kmsg; a FIFO
 * works too, for tests, fed with records in /dev/kmsg's format) without
 * blocking, from its end, and emits STALL for the balloon driver's "Out of
 * puff" records and OOM_KILL for the OOM killer's "Killed process"
 * records: only those the kernel wrote (see agent_kmsg_classify()). Every
 * kernel message wakes it; only those are matched.
 */
AgentSource *agent_source_kmsg_new(const AgentSourceEnv *env, const char *path);

/* What a kernel log record is to the agent. */
typedef enum {
  AGENT_KMSG_OTHER,
  AGENT_KMSG_STALL,    /* virtio_balloon: "Out of puff! Can't get N pages" */
  AGENT_KMSG_OOM_KILL, /* "Out of memory: Killed process ..." and the memcg variant */
  AGENT_KMSG_REFUSED,  /* names a stall or a kill ("Out of puff!", "Killed process ")
                        * but the kernel's driver or OOM killer did not write it */
} AgentKmsgKind;

/*
 * Classifies one /dev/kmsg record of @len bytes: "prio,seq,usec,flags;text"
 * then its dictionary lines ("\n SUBSYSTEM=virtio\n DEVICE=+virtio:virtio0",
 * a trailing '\n' or not); what follows a line that does not start with a
 * space is not looked at.
 *  STALL: facility 0 (prio < 8), the text begins "virtio_balloon virtioN:
 *    Out of puff!" (the driver's dev_info()), and the dictionary holds
 *    " SUBSYSTEM=virtio" and " DEVICE=+virtio:virtioN" for the same N.
 *  OOM_KILL: facility 0, the text begins "Out of memory: Killed process ",
 *    "Memory cgroup out of memory: Killed process " or "Out of memory
 *    (oom_kill_allocating_task): Killed process ".
 *  REFUSED: any other record, or text without a record prefix, that holds
 *    "Out of puff!" or "Killed process " (written to /dev/kmsg from user
 *    space, a crashing process named so, the driver's text without its
 *    dictionary...).
 * *@text and *@text_len (may be NULL) get the message text of the first
 * line, without prefix and newline (the whole first line when it has no
 * record prefix).
 */
AgentKmsgKind agent_kmsg_classify(const char *record, size_t len, const char **text,
                                  size_t *text_len);

/* Counters of the kmsg source, for status. */
void agent_source_kmsg_counts(const AgentSource *self, uint64_t *stalls, uint64_t *oom_kills);

/* Records refused by the kmsg source (AGENT_KMSG_REFUSED), counted when
 * the next record begins. */
uint64_t agent_source_kmsg_refused(const AgentSource *self);

/*
 * The PSI source ("psi"): a trigger @trigger (e.g. "some 150000 1000000":
 * 150 ms of stall within 1 s) on <root>/proc/pressure/memory; emits
 * PRESSURE when it fires. Without CAP_SYS_RESOURCE the kernel takes only
 * 2 s windows: a trigger refused with EINVAL or EPERM is tried once more
 * over 2 s (threshold scaled), saying so; a trigger still refused, or a
 * kernel without PSI, leaves the source inactive, saying why. NULL or ""
 * or "off": disabled.
 */
AgentSource *agent_source_psi_new(const AgentSourceEnv *env, const char *trigger);

#define AGENT_PSI_TRIGGER_DEFAULT "some 150000 1000000"
