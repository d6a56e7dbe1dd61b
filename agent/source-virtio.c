/* SPDX-License-Identifier: MIT */
/*
 * The virtio-balloon source (see source.h): where a balloon event enters.
 *
 * Finding out: the device's config space holds the target (num_pages) and
 * what the balloon holds (actual); virtio-pci.c reads them. Learning of a
 * change: the driver's config-change handler virtballoon_changed() runs
 * within a few milliseconds of the host's command, so a kprobe on it,
 * opened with perf_event_open(), wakes the agent without any idle wake-up.
 * Two ways to get that kprobe: the "kprobe" PMU (fd-local, needs no
 * tracefs, gone with the process) and a tracefs kprobe_events entry (also
 * survives a reload of the module). Each needs a ring buffer mmap'd per
 * fd: without one, poll() reports POLLHUP at once. The probe only says
 * "the config changed"; the balloon's progress (actual) is the driver's
 * own doing and fires nothing we can probe cheaply (fill_balloon is
 * inlined), so while target != actual the source polls, fast after a
 * change and slower while nothing moves, and stops once they meet.
 *
 * Without a kprobe (no permission, lockdown, no such symbol) the source
 * polls all the time: fast after a change, backing off to poll_idle_ms.
 *
 * Without config-space access (not root, lockdown=integrity), the target
 * is unknown; actual is followed through /proc/vmstat's balloon counters
 * (inflate - deflate, in pages since boot).
 */
#include "source.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/perf_event.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "errors.h"

#define PROBE_SYMBOL       "virtballoon_changed"
#define TRACEFS_EVENT      "shrinkd/virtballoon_changed"
#define VMSTAT_SETTLE_MS   1000 /* vmstat-only: polls stop after this long without change */
#define READ_FAILURES_WARN 5    /* config reads failing in a row before a warning */
#define STUCK_MS           2000 /* a balloon that has not moved for this long is polled slowly */

typedef enum {
  MODE_NONE,
  MODE_KPROBE_PMU,
  MODE_KPROBE_TRACEFS,
  MODE_POLL,
} Mode;

static const char *const mode_names[] = {"none", "kprobe-pmu", "kprobe-tracefs", "poll"};

typedef struct {
  int fd;
  void *map;
  size_t map_len;
  GSource *watch;
} Ring;

typedef struct {
  AgentSource base;
  AgentVirtioSourceConfig config;
  AgentProcfs *procfs;

  char *bdf;
  char *dev_dir;
  uint16_t device_id;
  bool features_known;
  uint64_t features;

  int config_fd;
  int legacy_fd;
  AgentVirtioPciDev dev;
  char *access_reason;

  Mode mode;
  GArray *rings;     /* Ring */
  char *tracefs_dir; /* set when this source created the tracefs event */

  GSource *poll_timer;
  guint poll_ms;
  GSource *hint_timer;
  bool hint_stale; /* the run with hint_stale_id timed out */
  uint32_t hint_stale_id;

  bool have_reading;
  AgentBalloonReading reading;
  int64_t last_change_mono;
  unsigned read_failures;
  bool read_warned;
  uint64_t kprobe_hits;
  uint64_t reads;
} VirtioSource;

static void read_now(VirtioSource *self, int64_t happened_us);

/* ---- the device ---- */

static void close_fd(int *fd) {
  if (*fd >= 0)
    close(*fd);
  *fd = -1;
}

/* Reads the features file of the device's virtioN child, if there. */
static void read_features(VirtioSource *self) {
  g_autoptr(GDir) dir = g_dir_open(self->dev_dir, 0, NULL);
  const char *name;

  while (dir && (name = g_dir_read_name(dir))) {
    g_autofree char *path = NULL;
    g_autofree char *text = NULL;
    gsize len;

    if (!g_str_has_prefix(name, "virtio"))
      continue;
    path = g_build_filename(self->dev_dir, name, "features", NULL);
    if (g_file_get_contents(path, &text, &len, NULL) &&
        agent_virtio_parse_features(text, len, &self->features, NULL)) {
      self->features_known = TRUE;
      return;
    }
  }
}

static bool want_hint(const VirtioSource *self) {
  return self->features_known &&
         (self->features & (UINT64_C(1) << AGENT_VIRTIO_BALLOON_F_FREE_PAGE_HINT));
}

/* Tries the PCI_CFG window; on failure appends why to @why. */
static bool try_window(VirtioSource *self, GString *why) {
  g_autofree char *path = g_build_filename(self->dev_dir, "config", NULL);
  g_autoptr(GError) error = NULL;
  AgentVirtioBalloonConfig probe;
  uint8_t cfg[256];
  ssize_t n;
  int rc;

  self->config_fd = open(path, O_RDWR | O_CLOEXEC);
  if (self->config_fd < 0) {
    int e = errno;

    g_string_append_printf(why, "open %s read-write: %s", path, g_strerror(e));
    /* Read-only still shows the capabilities to root (for the legacy
     * path's MSI-X state); others get only the header. */
    self->config_fd = open(path, O_RDONLY | O_CLOEXEC);
    if (self->config_fd >= 0) {
      n = pread(self->config_fd, cfg, sizeof(cfg), 0);
      if (n <= 0 || !agent_virtio_pci_parse_caps(cfg, (size_t)n, &self->dev.caps, NULL))
        self->dev.caps.msix_pos = -1;
    }
    return FALSE;
  }
  n = pread(self->config_fd, cfg, sizeof(cfg), 0);
  if (n < 0) {
    g_string_append_printf(why, "read %s: %s", path, g_strerror(errno));
    return FALSE;
  }
  if (!agent_virtio_pci_parse_caps(cfg, (size_t)n, &self->dev.caps, &error)) {
    g_string_append_printf(why, "%s: %s", path, error->message);
    return FALSE;
  }
  if (self->dev.caps.pci_cfg_pos < 0 || self->dev.caps.device_cfg_bar < 0) {
    g_string_append_printf(why,
                           "%s: no PCI_CFG window or no device config capability (a "
                           "legacy-only device?)",
                           path);
    return FALSE;
  }
  self->dev.config.read = agent_virtio_pci_fd_read;
  self->dev.config.write = agent_virtio_pci_fd_write;
  self->dev.config.ctx = &self->config_fd;
  self->dev.access = AGENT_VIRTIO_ACCESS_WINDOW;
  rc = agent_virtio_balloon_read(&self->dev, want_hint(self), &probe);
  if (rc < 0) {
    g_string_append_printf(why, "PCI_CFG window in %s: %s", path, g_strerror(-rc));
    self->dev.access = AGENT_VIRTIO_ACCESS_NONE;
    return FALSE;
  }
  return TRUE;
}

/* Tries BAR0 of a transitional device; on failure appends why to @why. */
static bool try_legacy(VirtioSource *self, GString *why) {
  g_autofree char *res_path = g_build_filename(self->dev_dir, "resource", NULL);
  g_autofree char *bar_path = g_build_filename(self->dev_dir, "resource0", NULL);
  g_autofree char *text = NULL;
  AgentVirtioBalloonConfig probe;
  uint64_t start, end, flags;
  gsize len;
  int rc;

  if (why->len)
    g_string_append(why, "; legacy: ");
  if (self->device_id != AGENT_VIRTIO_PCI_BALLOON_TRANSITIONAL) {
    g_string_append(why, "no legacy I/O BAR (a modern-only device)");
    return FALSE;
  }
  if (!g_file_get_contents(res_path, &text, &len, NULL) ||
      !agent_virtio_pci_parse_resource(text, len, 0, &start, &end, &flags, NULL) ||
      !(flags & AGENT_PCI_IORESOURCE_IO) || end < start + 24 + 12) {
    g_string_append_printf(why, "%s: BAR0 is not a legacy I/O range", res_path);
    return FALSE;
  }
  self->legacy_fd = open(bar_path, O_RDONLY | O_CLOEXEC);
  if (self->legacy_fd < 0) {
    g_string_append_printf(why, "open %s: %s", bar_path, g_strerror(errno));
    return FALSE;
  }
  self->dev.legacy.read = agent_virtio_pci_fd_read;
  self->dev.legacy.write = agent_virtio_pci_fd_write;
  self->dev.legacy.ctx = &self->legacy_fd;
  /* The MSI-X state is read through the config file when it is open. */
  self->dev.config.read = agent_virtio_pci_fd_read;
  self->dev.config.write = agent_virtio_pci_fd_write;
  self->dev.config.ctx = &self->config_fd;
  if (self->config_fd < 0)
    self->dev.caps.msix_pos = -1;
  self->dev.access = AGENT_VIRTIO_ACCESS_LEGACY;
  rc = agent_virtio_balloon_read(&self->dev, want_hint(self), &probe);
  if (rc < 0) {
    g_string_append_printf(why, "read %s: %s", bar_path, g_strerror(-rc));
    self->dev.access = AGENT_VIRTIO_ACCESS_NONE;
    close_fd(&self->legacy_fd);
    return FALSE;
  }
  return TRUE;
}

static void open_device(VirtioSource *self) {
  g_autoptr(GString) why = g_string_new(NULL);

  g_clear_pointer(&self->access_reason, g_free);
  memset(&self->dev, 0, sizeof(self->dev));
  self->dev.caps.device_cfg_bar = -1;
  self->dev.caps.pci_cfg_pos = -1;
  self->dev.caps.msix_pos = -1;
  read_features(self);
  if (try_window(self, why)) {
    self->access_reason = g_strdup("config space through the PCI_CFG capability window");
    return;
  }
  {
    gsize window_len = why->len;

    if (try_legacy(self, why)) {
      g_string_truncate(why, window_len);
      self->access_reason =
          g_strdup_printf("config space through the legacy I/O BAR (no window: %s)", why->str);
      return;
    }
  }
  close_fd(&self->config_fd);
  self->access_reason = g_string_free(g_steal_pointer(&why), FALSE);
}

/* ---- kprobe rings ---- */

static long perf_event_open(struct perf_event_attr *attr, int cpu) {
  return syscall(SYS_perf_event_open, attr, -1, cpu, -1, PERF_FLAG_FD_CLOEXEC);
}

/* Parses a cpu list ("0-3,5") into @cpus. */
static gboolean parse_cpu_list(const char *text, GArray *cpus) {
  g_auto(GStrv) parts = g_strsplit(g_strstrip((char *)text), ",", -1);

  for (char **p = parts; *p && **p; p++) {
    guint64 a, b;
    char *dash = strchr(*p, '-');

    if (dash)
      *dash = '\0';
    if (!g_ascii_string_to_unsigned(*p, 10, 0, 8191, &a, NULL))
      return FALSE;
    b = a;
    if (dash && !g_ascii_string_to_unsigned(dash + 1, 10, a, 8191, &b, NULL))
      return FALSE;
    for (guint64 c = a; c <= b; c++) {
      int cpu = (int)c;

      g_array_append_val(cpus, cpu);
    }
  }
  return cpus->len > 0;
}

static GArray *online_cpus(VirtioSource *self) {
  g_autofree char *path = agent_source_path(&self->base, "/sys/devices/system/cpu/online");
  g_autofree char *text = NULL;
  GArray *cpus = g_array_new(FALSE, FALSE, sizeof(int));

  if (g_file_get_contents(path, &text, NULL, NULL) && parse_cpu_list(text, cpus))
    return cpus;
  g_array_set_size(cpus, 0);
  for (int cpu = 0; cpu < (int)sysconf(_SC_NPROCESSORS_CONF); cpu++)
    g_array_append_val(cpus, cpu);
  return cpus;
}

static void drop_rings(VirtioSource *self) {
  for (guint i = 0; self->rings && i < self->rings->len; i++) {
    Ring *r = &g_array_index(self->rings, Ring, i);

    agent_source_drop(&r->watch);
    if (r->map)
      munmap(r->map, r->map_len);
    close_fd(&r->fd);
  }
  if (self->rings)
    g_array_set_size(self->rings, 0);
}

/* Copies @len bytes at ring offset @off out of the data area (it wraps). */
static void ring_copy(const uint8_t *data, size_t size, uint64_t off, void *dst, size_t len) {
  for (size_t i = 0; i < len; i++)
    ((uint8_t *)dst)[i] = data[(off + i) % size];
}

/* Empties @r's ring; returns the number of samples and the newest
 * sample's time (CLOCK_MONOTONIC ns; 0 if none). */
static unsigned drain_ring(Ring *r, uint64_t *newest_ns) {
  struct perf_event_mmap_page *mp = r->map;
  const uint8_t *data = (const uint8_t *)r->map + mp->data_offset;
  uint64_t size = mp->data_size;
  uint64_t head = __atomic_load_n(&mp->data_head, __ATOMIC_ACQUIRE);
  uint64_t tail = mp->data_tail;
  unsigned samples = 0;

  *newest_ns = 0;
  while (tail < head) {
    struct perf_event_header h;

    ring_copy(data, size, tail, &h, sizeof(h));
    if (h.size < sizeof(h))
      break; /* cannot happen; do not spin on it */
    if (h.type == PERF_RECORD_SAMPLE) {
      samples++;
      if (h.size >= sizeof(h) + sizeof(uint64_t))
        ring_copy(data, size, tail + sizeof(h), newest_ns, sizeof(uint64_t));
    }
    tail += h.size;
  }
  __atomic_store_n(&mp->data_tail, head, __ATOMIC_RELEASE);
  return samples;
}

static void fall_back_to_poll(VirtioSource *self, const char *why);

static gboolean on_ring(int fd, GIOCondition condition, gpointer data) {
  VirtioSource *self = data;
  unsigned samples = 0;
  uint64_t newest_ns = 0;

  for (guint i = 0; i < self->rings->len; i++) {
    Ring *r = &g_array_index(self->rings, Ring, i);
    uint64_t ns;

    if (r->fd == fd) {
      samples += drain_ring(r, &ns);
      newest_ns = MAX(newest_ns, ns);
    }
  }
  if (condition & (G_IO_HUP | G_IO_ERR)) {
    /* The probe went away (the module was unloaded, say). */
    fall_back_to_poll(self, "the kprobe on " PROBE_SYMBOL " went away");
    read_now(self, 0);
    return G_SOURCE_REMOVE;
  }
  self->kprobe_hits += samples;
  if (newest_ns)
    g_debug("balloon: kprobe hit, woke %" G_GINT64_FORMAT " us after it",
            g_get_monotonic_time() - (int64_t)(newest_ns / 1000));
  /* The sample's time is when the config changed: events carry it. */
  read_now(self, (int64_t)(newest_ns / 1000));
  return G_SOURCE_CONTINUE;
}

/* Opens @attr on every online CPU, each with a ring watched on the loop.
 * Returns the number of CPUs covered; on 0, *@err is the first errno. */
static guint open_rings(VirtioSource *self, struct perf_event_attr *attr, int *err) {
  g_autoptr(GArray) cpus = online_cpus(self);
  size_t page = (size_t)sysconf(_SC_PAGESIZE);

  *err = 0;
  for (guint i = 0; i < cpus->len; i++) {
    Ring r = {.fd = (int)perf_event_open(attr, g_array_index(cpus, int, i))};

    if (r.fd < 0) {
      if (!*err)
        *err = errno;
      continue;
    }
    /* One metadata page and one data page (2^0): enough, as the ring is
     * drained on each wake-up. */
    r.map_len = 2 * page;
    r.map = mmap(NULL, r.map_len, PROT_READ | PROT_WRITE, MAP_SHARED, r.fd, 0);
    if (r.map == MAP_FAILED) {
      if (!*err)
        *err = errno;
      close(r.fd);
      continue;
    }
    r.watch = agent_source_watch_fd(&self->base, r.fd, G_IO_IN, on_ring, self);
    g_array_append_val(self->rings, r);
  }
  if (self->rings->len == 0 && !*err)
    *err = ENODEV;
  return self->rings->len;
}

static void base_attr(struct perf_event_attr *attr) {
  memset(attr, 0, sizeof(*attr));
  attr->size = sizeof(*attr);
  attr->sample_period = 1; /* every hit is a sample... */
  attr->wakeup_events = 1; /* ...and wakes the reader */
  attr->sample_type = PERF_SAMPLE_TIME;
  attr->use_clockid = 1;
  attr->clockid = CLOCK_MONOTONIC; /* comparable with g_get_monotonic_time() */
}

static bool try_kprobe_pmu(VirtioSource *self, GString *why) {
  g_autofree char *type_path =
      agent_source_path(&self->base, "/sys/bus/event_source/devices/kprobe/type");
  g_autofree char *text = NULL;
  static const char symbol[] = PROBE_SYMBOL;
  struct perf_event_attr attr;
  guint64 type;
  guint n;
  int err;

  if (!g_file_get_contents(type_path, &text, NULL, NULL) ||
      !g_ascii_string_to_unsigned(g_strstrip(text), 10, 0, UINT32_MAX, &type, NULL)) {
    g_string_append_printf(why, "kprobe PMU: no %s", type_path);
    return FALSE;
  }
  base_attr(&attr);
  attr.type = (uint32_t)type;
  attr.config = 0; /* bit 0 would make it a kretprobe */
  attr.kprobe_func = (uint64_t)(uintptr_t)symbol;
  attr.probe_offset = 0;
  n = open_rings(self, &attr, &err);
  if (n == 0) {
    g_string_append_printf(why, "kprobe PMU: perf_event_open(%s): %s", PROBE_SYMBOL,
                           g_strerror(err));
    return FALSE;
  }
  self->mode = MODE_KPROBE_PMU;
  agent_source_set_status(&self->base, TRUE, "kprobe-pmu",
                          "event-driven on " PROBE_SYMBOL " (kprobe PMU, %u CPU%s)", n,
                          n == 1 ? "" : "s");
  return TRUE;
}

static char *find_tracefs(VirtioSource *self) {
  static const char *const dirs[] = {"/sys/kernel/tracing", "/sys/kernel/debug/tracing"};

  for (gsize i = 0; i < G_N_ELEMENTS(dirs); i++) {
    g_autofree char *dir = agent_source_path(&self->base, dirs[i]);
    g_autofree char *events = g_build_filename(dir, "kprobe_events", NULL);

    if (g_file_test(events, G_FILE_TEST_EXISTS))
      return g_steal_pointer(&dir);
  }
  return NULL;
}

/* Appends @line to <tracefs>/kprobe_events; returns 0 or -errno. */
static int kprobe_events_write(const char *dir, const char *line) {
  g_autofree char *path = g_build_filename(dir, "kprobe_events", NULL);
  int fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
  ssize_t n;
  int e;

  if (fd < 0)
    return -errno;
  n = write(fd, line, strlen(line));
  e = errno;
  close(fd);
  return n < 0 ? -e : 0;
}

static bool try_kprobe_tracefs(VirtioSource *self, GString *why) {
  g_autofree char *dir = find_tracefs(self);
  g_autofree char *id_path = NULL;
  g_autofree char *text = NULL;
  struct perf_event_attr attr;
  bool created = FALSE;
  guint64 id;
  guint n;
  int rc, err;

  if (why->len)
    g_string_append(why, "; ");
  if (!dir) {
    g_string_append(why, "tracefs: no kprobe_events (tracefs not mounted)");
    return FALSE;
  }
  id_path = g_build_filename(dir, "events", TRACEFS_EVENT, "id", NULL);
  if (!g_file_test(id_path, G_FILE_TEST_EXISTS)) {
    rc = kprobe_events_write(dir, "p:" TRACEFS_EVENT " " PROBE_SYMBOL "\n");
    if (rc < 0) {
      g_string_append_printf(why, "tracefs: adding a kprobe on %s: %s", PROBE_SYMBOL,
                             g_strerror(-rc));
      return FALSE;
    }
    created = TRUE;
  }
  if (!g_file_get_contents(id_path, &text, NULL, NULL) ||
      !g_ascii_string_to_unsigned(g_strstrip(text), 10, 0, G_MAXUINT64, &id, NULL)) {
    g_string_append_printf(why, "tracefs: cannot read %s", id_path);
    if (created)
      kprobe_events_write(dir, "-:" TRACEFS_EVENT "\n");
    return FALSE;
  }
  base_attr(&attr);
  attr.type = PERF_TYPE_TRACEPOINT;
  attr.config = id;
  n = open_rings(self, &attr, &err);
  if (n == 0) {
    g_string_append_printf(why, "tracefs: perf_event_open(%s): %s", TRACEFS_EVENT, g_strerror(err));
    if (created)
      kprobe_events_write(dir, "-:" TRACEFS_EVENT "\n");
    return FALSE;
  }
  if (created)
    self->tracefs_dir = g_steal_pointer(&dir);
  self->mode = MODE_KPROBE_TRACEFS;
  agent_source_set_status(&self->base, TRUE, "kprobe-tracefs",
                          "event-driven on " PROBE_SYMBOL " (tracefs kprobe event, %u CPU%s)", n,
                          n == 1 ? "" : "s");
  return TRUE;
}

static void remove_tracefs_event(VirtioSource *self) {
  int rc;

  if (!self->tracefs_dir)
    return;
  rc = kprobe_events_write(self->tracefs_dir, "-:" TRACEFS_EVENT "\n");
  if (rc < 0)
    g_debug("balloon: removing the tracefs kprobe: %s", g_strerror(-rc));
  g_clear_pointer(&self->tracefs_dir, g_free);
}

static void set_poll_status(VirtioSource *self, const char *why) {
  self->mode = MODE_POLL;
  agent_source_set_status(&self->base, TRUE, "poll",
                          "%s; polling every %u-%u ms (idle wake-ups; a change is seen within "
                          "%u ms)",
                          why, self->config.poll_fast_ms, self->config.poll_idle_ms,
                          self->config.poll_idle_ms);
}

static void fall_back_to_poll(VirtioSource *self, const char *why) {
  g_warning("balloon: %s; polling instead", why);
  drop_rings(self);
  remove_tracefs_event(self);
  set_poll_status(self, why);
}

static void choose_mode(VirtioSource *self) {
  g_autoptr(GString) why = g_string_new(NULL);
  AgentVirtioEvents ev = self->config.events;

  if (ev == AGENT_VIRTIO_EVENTS_POLL) {
    set_poll_status(self, "poll chosen by configuration");
    return;
  }
  if ((ev == AGENT_VIRTIO_EVENTS_AUTO || ev == AGENT_VIRTIO_EVENTS_KPROBE_PMU) &&
      try_kprobe_pmu(self, why))
    return;
  if ((ev == AGENT_VIRTIO_EVENTS_AUTO || ev == AGENT_VIRTIO_EVENTS_KPROBE_TRACEFS) &&
      try_kprobe_tracefs(self, why))
    return;
  g_warning("balloon: no event on config changes (%s); polling %s instead", why->str,
            self->dev.access != AGENT_VIRTIO_ACCESS_NONE ? "config space" : "/proc/vmstat");
  set_poll_status(self, why->str);
}

/* ---- reading and following ---- */

static void arm_poll(VirtioSource *self, guint ms);

static gboolean on_poll(gpointer data) {
  VirtioSource *self = data;

  g_source_unref(self->poll_timer);
  self->poll_timer = NULL;
  read_now(self, 0);
  return G_SOURCE_REMOVE;
}

static void arm_poll(VirtioSource *self, guint ms) {
  agent_source_drop(&self->poll_timer);
  self->poll_ms = ms;
  if (ms)
    self->poll_timer = agent_source_timeout(&self->base, ms, on_poll, self);
}

static gboolean on_hint_timeout(gpointer data);

static void emit_balloon(VirtioSource *self, AgentSourceEventKind kind, uint64_t prev,
                         int64_t now) {
  AgentSourceEvent ev = {
      .kind = kind,
      .mono_us = now,
      .balloon = self->reading,
      .prev_bytes = prev,
  };

  agent_source_emit(&self->base, &ev);
}

static bool hint_active_id(uint32_t id) {
  return id != AGENT_VIRTIO_BALLOON_CMD_ID_STOP && id != AGENT_VIRTIO_BALLOON_CMD_ID_DONE;
}

/* Takes a new reading: emits what changed, plans the next poll. */
static void take_reading(VirtioSource *self, const AgentBalloonReading *now_r, int64_t now,
                         int64_t ev_time) {
  AgentBalloonReading old = self->reading;
  bool first = !self->have_reading;
  bool changed = FALSE, moving;
  guint next;

  self->reading = *now_r;
  /* Hinting holds its pages from an active command id until DONE (the
   * driver gives them back only then; STOP only stops the reporting). */
  self->reading.hint_in_progress =
      now_r->hint_supported && (hint_active_id(now_r->free_page_hint_cmd_id) ||
                                (!first && old.hint_in_progress &&
                                 now_r->free_page_hint_cmd_id != AGENT_VIRTIO_BALLOON_CMD_ID_DONE));
  /* A run that timed out stays over until the host sends a new id. */
  if (self->hint_stale && now_r->free_page_hint_cmd_id == self->hint_stale_id)
    self->reading.hint_in_progress = FALSE;
  else
    self->hint_stale = FALSE;
  self->have_reading = TRUE;

  if (first) {
    AgentSourceEvent ev = {.kind = AGENT_SOURCE_EVENT_TARGET,
                           .mono_us = now,
                           .balloon = self->reading,
                           .initial = TRUE};

    self->last_change_mono = now;
    agent_source_emit(&self->base, &ev);
    if (self->reading.hint_in_progress)
      emit_balloon(self, AGENT_SOURCE_EVENT_HINT_START, 0, now);
  } else {
    if (self->reading.target_known &&
        (!old.target_known || old.target_bytes != self->reading.target_bytes)) {
      changed = TRUE;
      emit_balloon(self, AGENT_SOURCE_EVENT_TARGET, old.target_bytes, ev_time);
    }
    if (self->reading.actual_known &&
        (!old.actual_known || old.actual_bytes != self->reading.actual_bytes)) {
      changed = TRUE;
      emit_balloon(self, AGENT_SOURCE_EVENT_PROGRESS, old.actual_bytes, now);
    }
    if (self->reading.free_page_hint_cmd_id != old.free_page_hint_cmd_id)
      changed = TRUE;
    /* A new active command id is a new request for hints, also while
     * the last run has not ended (QEMU sends STOP, then a new id, at
     * every bitmap sync of precopy, and DONE only at the end). */
    if (self->reading.hint_in_progress &&
        (!old.hint_in_progress ||
         (hint_active_id(self->reading.free_page_hint_cmd_id) &&
          self->reading.free_page_hint_cmd_id != old.free_page_hint_cmd_id)))
      emit_balloon(self, AGENT_SOURCE_EVENT_HINT_START, 0, ev_time);
    else if (!self->reading.hint_in_progress && old.hint_in_progress)
      emit_balloon(self, AGENT_SOURCE_EVENT_HINT_END, 0, ev_time);
    if (changed)
      self->last_change_mono = now;
  }
  if (self->reading.hint_in_progress &&
      (!old.hint_in_progress || old.free_page_hint_cmd_id != now_r->free_page_hint_cmd_id ||
       first)) {
    agent_source_drop(&self->hint_timer);
    self->hint_timer =
        agent_source_timeout(&self->base, self->config.hint_max_ms, on_hint_timeout, self);
  } else if (!self->reading.hint_in_progress) {
    agent_source_drop(&self->hint_timer);
  }

  /* The next look. */
  if (self->reading.target_known)
    moving = self->reading.target_bytes != self->reading.actual_bytes;
  else
    moving = (now - self->last_change_mono) / 1000 < VMSTAT_SETTLE_MS;
  if (changed || first)
    next = self->config.poll_fast_ms;
  else
    next = MAX(self->poll_ms, self->config.poll_fast_ms) * 2;
  if (moving && (now - self->last_change_mono) / 1000 < STUCK_MS)
    next = MIN(next, self->config.poll_moving_max_ms);
  else if (moving)
    next = MIN(next, self->config.poll_idle_ms); /* stuck: follow it, but slowly */
  else if (self->mode == MODE_POLL)
    next = MIN(next, self->config.poll_idle_ms);
  else
    next = 0; /* settled: the kprobe will say when something changes */
  if (self->mode == MODE_NONE)
    next = 0;
  arm_poll(self, next);
}

static gboolean on_hint_timeout(gpointer data) {
  VirtioSource *self = data;

  g_source_unref(self->hint_timer);
  self->hint_timer = NULL;
  if (self->reading.hint_in_progress) {
    g_warning("balloon: free page hinting (command id 0x%x) gave no news for %u ms; taking it as "
              "over",
              self->reading.free_page_hint_cmd_id, self->config.hint_max_ms);
    self->reading.hint_in_progress = FALSE;
    self->hint_stale = TRUE;
    self->hint_stale_id = self->reading.free_page_hint_cmd_id;
    emit_balloon(self, AGENT_SOURCE_EVENT_HINT_END, 0, g_get_monotonic_time());
  }
  return G_SOURCE_REMOVE;
}

/* Reads the balloon now; @happened_us (monotonic, 0: now) is when the
 * change that prompted the read took place, for the events. */
static void read_now(VirtioSource *self, int64_t happened_us) {
  AgentBalloonReading r = {0};
  int64_t now = g_get_monotonic_time();

  self->reads++;
  if (self->dev.access != AGENT_VIRTIO_ACCESS_NONE) {
    AgentVirtioBalloonConfig c;
    int rc = agent_virtio_balloon_read(&self->dev, want_hint(self), &c);

    if (rc < 0) {
      if (++self->read_failures >= READ_FAILURES_WARN && !self->read_warned) {
        g_warning("balloon: reading config space (%s) keeps failing: %s",
                  agent_virtio_access_name(self->dev.access), g_strerror(-rc));
        self->read_warned = TRUE;
      }
      /* Keep following at the same pace; the old reading stands. */
      arm_poll(self, self->poll_ms ? self->poll_ms : self->config.poll_moving_max_ms);
      return;
    }
    self->read_failures = 0;
    r.target_known = TRUE;
    r.target_bytes = (uint64_t)c.num_pages * AGENT_VIRTIO_BALLOON_PAGE_BYTES;
    r.actual_known = TRUE;
    r.actual_bytes = (uint64_t)c.actual * AGENT_VIRTIO_BALLOON_PAGE_BYTES;
    r.hint_supported = c.has_hint_cmd_id;
    r.free_page_hint_cmd_id = c.free_page_hint_cmd_id;
  } else {
    AgentVmstat vm;

    /* The config changed, but the target cannot be read: follow the
     * balloon's size for a while, whatever it does. */
    if (happened_us > 0)
      self->last_change_mono = now;
    if (agent_procfs_read_vmstat(self->procfs, &vm, NULL) && vm.has_balloon) {
      r.actual_known = TRUE;
      r.actual_bytes = vm.balloon_inflate_pages > vm.balloon_deflate_pages
                           ? (vm.balloon_inflate_pages - vm.balloon_deflate_pages) *
                                 AGENT_VIRTIO_BALLOON_PAGE_BYTES
                           : 0;
    }
  }
  take_reading(self, &r, now, happened_us > 0 && happened_us <= now ? happened_us : now);
}

/* ---- the source ---- */

static void virtio_start(AgentSource *base) {
  VirtioSource *self = (VirtioSource *)base;
  g_autoptr(GError) error = NULL;

  g_clear_pointer(&self->bdf, g_free);
  if (!agent_virtio_pci_find_balloon(base->root, &self->bdf, &self->device_id, &error)) {
    g_warning("balloon: %s; balloon events are off", error->message);
    agent_source_set_status(base, FALSE, "none", "%s", error->message);
    self->mode = MODE_NONE;
    return;
  }
  {
    g_autofree char *devices = agent_source_path(base, "/sys/bus/pci/devices");

    g_free(self->dev_dir);
    self->dev_dir = g_build_filename(devices, self->bdf, NULL);
  }
  open_device(self);
  if (self->dev.access == AGENT_VIRTIO_ACCESS_NONE) {
    AgentVmstat vm;
    gboolean vmstat_ok = agent_procfs_read_vmstat(self->procfs, &vm, NULL) && vm.has_balloon;

    g_warning("balloon: device %s found, but its config space cannot be read (%s); the target "
              "is unknown, %s",
              self->bdf, self->access_reason,
              vmstat_ok ? "following the balloon's size through /proc/vmstat only"
                        : "and /proc/vmstat has no balloon counters either");
  }
  choose_mode(self);
  g_message("balloon: device %s (%04x:%04x), config access %s, mode %s: %s", self->bdf,
            AGENT_VIRTIO_PCI_VENDOR, self->device_id, agent_virtio_access_name(self->dev.access),
            base->mode, base->reason);
  read_now(self, 0);
}

static void virtio_stop(AgentSource *base) {
  VirtioSource *self = (VirtioSource *)base;

  agent_source_drop(&self->poll_timer);
  agent_source_drop(&self->hint_timer);
  drop_rings(self);
  remove_tracefs_event(self);
  close_fd(&self->config_fd);
  close_fd(&self->legacy_fd);
  self->dev.access = AGENT_VIRTIO_ACCESS_NONE;
  self->have_reading = FALSE;
  self->mode = MODE_NONE;
  agent_source_set_status(base, FALSE, "none", "stopped");
}

/* A look between polls, for a decision that needs the balloon's size now.
 * Only with a readable config space: what /proc/vmstat says is followed
 * by polls, and sizes no round. */
static void virtio_refresh(AgentSource *base) {
  VirtioSource *self = (VirtioSource *)base;

  if (self->mode != MODE_NONE && self->have_reading &&
      self->dev.access != AGENT_VIRTIO_ACCESS_NONE)
    read_now(self, 0);
}

static void virtio_finalize(AgentSource *base) {
  VirtioSource *self = (VirtioSource *)base;

  g_array_free(self->rings, TRUE);
  g_free(self->bdf);
  g_free(self->dev_dir);
  g_free(self->access_reason);
  g_free(self);
}

static const AgentSourceClass virtio_class = {
    .name = "virtio-balloon",
    .start = virtio_start,
    .stop = virtio_stop,
    .finalize = virtio_finalize,
    .refresh = virtio_refresh,
};

AgentSource *agent_source_virtio_new(const AgentSourceEnv *env,
                                     const AgentVirtioSourceConfig *config) {
  VirtioSource *self = g_new0(VirtioSource, 1);

  agent_source_init(&self->base, &virtio_class, env);
  if (config)
    self->config = *config;
  if (!self->config.poll_fast_ms)
    self->config.poll_fast_ms = AGENT_VIRTIO_POLL_FAST_MS_DEFAULT;
  if (!self->config.poll_moving_max_ms)
    self->config.poll_moving_max_ms = AGENT_VIRTIO_POLL_MOVING_MS_DEFAULT;
  if (!self->config.poll_idle_ms)
    self->config.poll_idle_ms = AGENT_VIRTIO_POLL_IDLE_MS_DEFAULT;
  if (!self->config.hint_max_ms)
    self->config.hint_max_ms = AGENT_VIRTIO_HINT_MAX_MS_DEFAULT;
  self->config.poll_moving_max_ms = MAX(self->config.poll_moving_max_ms, self->config.poll_fast_ms);
  self->config.poll_idle_ms = MAX(self->config.poll_idle_ms, self->config.poll_fast_ms);
  self->procfs = env->procfs;
  self->config_fd = -1;
  self->legacy_fd = -1;
  self->rings = g_array_new(FALSE, TRUE, sizeof(Ring));
  return &self->base;
}

void agent_source_virtio_info(const AgentSource *base, AgentVirtioInfo *out) {
  const VirtioSource *self = (const VirtioSource *)base;

  memset(out, 0, sizeof(*out));
  out->device = self->bdf;
  out->mode = mode_names[self->mode];
  out->mode_reason = base->reason;
  out->access = self->dev.access;
  out->access_reason = self->access_reason;
  out->features_known = self->features_known;
  out->features = self->features;
  out->deflate_on_oom = self->features_known &&
                        (self->features & (UINT64_C(1) << AGENT_VIRTIO_BALLOON_F_DEFLATE_ON_OOM));
  out->reading = self->reading;
  out->kprobe_hits = self->kprobe_hits;
  out->reads = self->reads;
}
