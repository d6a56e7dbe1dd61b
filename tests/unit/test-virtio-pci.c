/* SPDX-License-Identifier: MIT */
/*
 * The virtio-balloon PCI function from userspace (agent/virtio-pci.c) and
 * the virtio-balloon source's discovery and fallbacks (source-virtio.c):
 *  - the capability list of real config spaces captured in QEMU guests
 *    (tests/vm/captured/STATE/root/sys/bus/pci/devices/BDF/config), the 64
 *    bytes a non-root reader gets, and hand-made lists (no list, a loop,
 *    MSI-X on and off, a pointer into the header);
 *  - the PCI_CFG window protocol and the legacy I/O BAR against an
 *    in-memory fake device that behaves like QEMU's (writable bar, offset,
 *    length; pci_cfg_data filled from the BAR on read), set up with the
 *    captured config bytes and the captured device config;
 *  - sysfs "resource" and "features" files, captured and malformed;
 *  - discovery of the device in captured roots and in roots without one;
 *  - the source on a copy of a captured root without config access: it
 *    says so and follows /proc/vmstat.
 *
 * The captured states come from argv[1] or SHRINKD_TEST_CAPTURED.
 */
#include "cunit-run.h"
#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "errors.h"
#include "procfs.h"
#include "source.h"
#include "virtio-pci.h"

static const char *captured;

#define BDF "0000:00:02.0"

static const char *const states[] = {
    "idle-1024mib",
    "inflated-512mib",
    "hog-800mib",
    "stalled-256mib-hog",
    "inflated-512mib-deflate-on-oom",
    "idle-free-page-hint-reporting",
    "free-page-hint-migration",
    "after-free-page-hint",
};

static char *state_file(const char *state, const char *rel) {
  return g_build_filename(captured, state, rel, NULL);
}

static GBytes *load(const char *state, const char *rel) {
  g_autofree char *path = state_file(state, rel);
  g_autoptr(GError) error = NULL;
  char *data;
  gsize len;

  if (!g_file_get_contents(path, &data, &len, &error)) {
    printf("\n    %s", error->message);
    return NULL;
  }
  return g_bytes_new_take(data, len);
}

static GBytes *load_config(const char *state) {
  return load(state, "root/sys/bus/pci/devices/" BDF "/config");
}

/* ---- capabilities ---- */

static void test_caps_captured(void) {
  for (gsize i = 0; i < G_N_ELEMENTS(states); i++) {
    g_autoptr(GBytes) cfg = load_config(states[i]);
    g_autoptr(GError) error = NULL;
    AgentVirtioPciCaps caps;
    gsize len;
    const guint8 *p;

    CU_ASSERT_PTR_NOT_NULL_FATAL(cfg);
    p = g_bytes_get_data(cfg, &len);
    CU_ASSERT_EQUAL(len, 256);
    CU_ASSERT_TRUE(agent_virtio_pci_parse_caps(p, len, &caps, &error));
    CU_ASSERT_TRUE(caps.has_cap_list);
    /* As the balloon-cfg tool printed it: cap 0x60 cfg_type=4 bar=4
     * offset=0x2000 length=4096, cap 0x84 cfg_type=5; no MSI-X. */
    CU_ASSERT_EQUAL(caps.device_cfg_bar, 4);
    CU_ASSERT_EQUAL(caps.device_cfg_offset, 0x2000);
    CU_ASSERT_EQUAL(caps.device_cfg_length, 4096);
    CU_ASSERT_EQUAL(caps.pci_cfg_pos, 0x84);
    CU_ASSERT_EQUAL(caps.msix_pos, -1);
    CU_ASSERT_FALSE(caps.msix_enabled);
  }
}

static void test_caps_as_nobody(void) {
  g_autoptr(GBytes) cfg = load("idle-1024mib", "config-as-nobody.bin");
  g_autoptr(GError) error = NULL;
  AgentVirtioPciCaps caps = {.device_cfg_bar = 77};
  gsize len;
  const guint8 *p;

  CU_ASSERT_PTR_NOT_NULL_FATAL(cfg);
  p = g_bytes_get_data(cfg, &len);
  CU_ASSERT_EQUAL(len, 64);
  CU_ASSERT_FALSE(agent_virtio_pci_parse_caps(p, len, &caps, &error));
  CU_ASSERT_TRUE(g_error_matches(error, AGENT_ERROR, AGENT_ERROR_NOT_FOUND));
  CU_ASSERT_PTR_NOT_NULL(error && strstr(error->message, "root"));
  CU_ASSERT_EQUAL(caps.device_cfg_bar, 77); /* untouched */
  g_clear_error(&error);
  CU_ASSERT_FALSE(agent_virtio_pci_parse_caps(p, 63, &caps, &error));
  CU_ASSERT_TRUE(g_error_matches(error, AGENT_ERROR, AGENT_ERROR_INVALID));
}

/* A config space with a capability list starting at @first. */
static void blank_config(guint8 *cfg, guint8 first) {
  memset(cfg, 0, 256);
  cfg[0] = 0xf4;
  cfg[1] = 0x1a;
  cfg[2] = 0x45;
  cfg[3] = 0x10;
  cfg[6] = first ? 0x10 : 0;
  cfg[0x34] = first;
}

static void put_vcap(guint8 *cfg, guint8 pos, guint8 next, guint8 type, guint8 bar, guint32 offset,
                     guint32 length, guint8 cap_len) {
  cfg[pos] = 0x09;
  cfg[pos + 1] = next;
  cfg[pos + 2] = cap_len;
  cfg[pos + 3] = type;
  cfg[pos + 4] = bar;
  memcpy(cfg + pos + 8, &offset, 4);
  memcpy(cfg + pos + 12, &length, 4);
}

static void test_caps_made(void) {
  guint8 cfg[256];
  AgentVirtioPciCaps caps;

  /* No capability list at all (a legacy-only device, say). */
  blank_config(cfg, 0);
  CU_ASSERT_TRUE(agent_virtio_pci_parse_caps(cfg, 256, &caps, NULL));
  CU_ASSERT_FALSE(caps.has_cap_list);
  CU_ASSERT_EQUAL(caps.device_cfg_bar, -1);
  CU_ASSERT_EQUAL(caps.pci_cfg_pos, -1);

  /* MSI-X enabled, then a device cfg, then a PCI_CFG window. */
  blank_config(cfg, 0x98);
  cfg[0x98] = 0x11;
  cfg[0x99] = 0x40;
  cfg[0x9b] = 0x80; /* Message Control bit 15 */
  put_vcap(cfg, 0x40, 0x50, 4, 1, 0x3000, 8, 16);
  put_vcap(cfg, 0x50, 0x00, 5, 0, 0, 0, 20);
  CU_ASSERT_TRUE(agent_virtio_pci_parse_caps(cfg, 256, &caps, NULL));
  CU_ASSERT_EQUAL(caps.msix_pos, 0x98);
  CU_ASSERT_TRUE(caps.msix_enabled);
  CU_ASSERT_EQUAL(caps.device_cfg_bar, 1);
  CU_ASSERT_EQUAL(caps.device_cfg_offset, 0x3000);
  CU_ASSERT_EQUAL(caps.device_cfg_length, 8);
  CU_ASSERT_EQUAL(caps.pci_cfg_pos, 0x50);

  /* MSI-X present but disabled. */
  cfg[0x9b] = 0x00;
  CU_ASSERT_TRUE(agent_virtio_pci_parse_caps(cfg, 256, &caps, NULL));
  CU_ASSERT_FALSE(caps.msix_enabled);

  /* The first capability of a type wins. */
  put_vcap(cfg, 0x50, 0x60, 5, 0, 0, 0, 20);
  put_vcap(cfg, 0x60, 0x00, 4, 2, 0x9000, 16, 16);
  CU_ASSERT_TRUE(agent_virtio_pci_parse_caps(cfg, 256, &caps, NULL));
  CU_ASSERT_EQUAL(caps.device_cfg_bar, 1);

  /* A loop ends; what was found stays. */
  put_vcap(cfg, 0x60, 0x40, 4, 2, 0x9000, 16, 16);
  CU_ASSERT_TRUE(agent_virtio_pci_parse_caps(cfg, 256, &caps, NULL));
  CU_ASSERT_EQUAL(caps.device_cfg_bar, 1);
  CU_ASSERT_EQUAL(caps.pci_cfg_pos, 0x50);

  /* A pointer into the header ends the walk at once. */
  blank_config(cfg, 0x10);
  CU_ASSERT_TRUE(agent_virtio_pci_parse_caps(cfg, 256, &caps, NULL));
  CU_ASSERT_EQUAL(caps.device_cfg_bar, -1);

  /* A capability too short for its type, or a BAR number out of range,
   * is skipped. */
  blank_config(cfg, 0x40);
  put_vcap(cfg, 0x40, 0x50, 4, 1, 0x3000, 8, 12);
  put_vcap(cfg, 0x50, 0x60, 5, 0, 0, 0, 16);
  put_vcap(cfg, 0x60, 0x00, 4, 7, 0x3000, 8, 16);
  CU_ASSERT_TRUE(agent_virtio_pci_parse_caps(cfg, 256, &caps, NULL));
  CU_ASSERT_EQUAL(caps.device_cfg_bar, -1);
  CU_ASSERT_EQUAL(caps.pci_cfg_pos, -1);
}

/* ---- a fake device ---- */

typedef struct {
  guint8 cfg[256];
  guint8 wmask[256];
  guint8 bar[6][0x4000];
  int window; /* the PCI_CFG capability */
  int fail;   /* -errno for every access, or 0 */
  int fail_writes;
  unsigned reads, writes;
} FakeDev;

static guint32 get32(const guint8 *p) {
  guint32 v;

  memcpy(&v, p, 4);
  return GUINT32_FROM_LE(v);
}

static void set32(guint8 *p, guint32 v) {
  v = GUINT32_TO_LE(v);
  memcpy(p, &v, 4);
}

/* A config write as QEMU does it: only writable bits change. */
static int fake_cfg_write(void *ctx, const void *buf, size_t len, uint64_t off) {
  FakeDev *d = ctx;

  d->writes++;
  if (d->fail)
    return d->fail;
  if (d->fail_writes)
    return d->fail_writes;
  if (off + len > 256)
    return -EINVAL;
  for (size_t i = 0; i < len; i++)
    d->cfg[off + i] = (guint8)((d->cfg[off + i] & ~d->wmask[off + i]) |
                               (((const guint8 *)buf)[i] & d->wmask[off + i]));
  return 0;
}

/* A config read; reading pci_cfg_data first fills it from the BAR the
 * window points at, as QEMU's virtio_read_config() does. */
static int fake_cfg_read(void *ctx, void *buf, size_t len, uint64_t off) {
  FakeDev *d = ctx;

  d->reads++;
  if (d->fail)
    return d->fail;
  if (off + len > 256)
    return -EINVAL;
  if (d->window >= 0 && off < (uint64_t)d->window + 20 && off + len > (uint64_t)d->window + 16) {
    guint8 bar = d->cfg[d->window + 4];
    guint32 boff = get32(d->cfg + d->window + 8), blen = get32(d->cfg + d->window + 12);

    if (bar < 6 && (blen == 1 || blen == 2 || blen == 4) && boff + blen <= sizeof(d->bar[0])) {
      memset(d->cfg + d->window + 16, 0, 4);
      memcpy(d->cfg + d->window + 16, d->bar[bar] + boff, blen);
    }
  }
  memcpy(buf, d->cfg + off, len);
  return 0;
}

static int fake_bar0_read(void *ctx, void *buf, size_t len, uint64_t off) {
  FakeDev *d = ctx;

  d->reads++;
  if (d->fail)
    return d->fail;
  if (off + len > 0x40)
    return -EINVAL;
  memcpy(buf, d->bar[0] + off, len);
  return 0;
}

/* A fake with the captured config space of @state and its captured
 * device config (16 bytes) at BAR 4 + 0x2000. */
static FakeDev *fake_from(const char *state) {
  g_autoptr(GBytes) cfg = load_config(state);
  g_autoptr(GBytes) dev = load(state, "balloon-device-config.bin");
  FakeDev *d = g_new0(FakeDev, 1);

  g_assert(cfg && g_bytes_get_size(cfg) == 256);
  g_assert(dev && g_bytes_get_size(dev) == 16);
  memcpy(d->cfg, g_bytes_get_data(cfg, NULL), 256);
  memcpy(d->bar[4] + 0x2000, g_bytes_get_data(dev, NULL), 16);
  d->window = 0x84;
  d->wmask[0x84 + 4] = 0xff;
  memset(d->wmask + 0x84 + 8, 0xff, 12);
  return d;
}

static AgentVirtioPciIo cfg_io(FakeDev *d) {
  return (AgentVirtioPciIo){.read = fake_cfg_read, .write = fake_cfg_write, .ctx = d};
}

typedef struct {
  const char *state;
  guint32 num_pages, actual, hint;
} config_row;

/* What balloon-cfg read through the window in each state. */
static const config_row config_rows[] = {
    {"idle-1024mib", 0, 0, 0},
    {"inflated-512mib", 131072, 131072, 0},
    {"hog-800mib", 0, 0, 0},
    {"stalled-256mib-hog", 196608, 21887, 0},
    {"inflated-512mib-deflate-on-oom", 131072, 131072, 0},
    {"idle-free-page-hint-reporting", 0, 0, 0},
    {"free-page-hint-migration", 0, 0, 0},
    {"after-free-page-hint", 0, 0, 1},
};

static void test_window_captured(void) {
  for (gsize i = 0; i < G_N_ELEMENTS(config_rows); i++) {
    g_autofree FakeDev *d = fake_from(config_rows[i].state);
    AgentVirtioPciDev dev = {.access = AGENT_VIRTIO_ACCESS_WINDOW, .config = cfg_io(d)};
    AgentVirtioBalloonConfig c;
    guint32 v = 0;

    CU_ASSERT_TRUE_FATAL(agent_virtio_pci_parse_caps(d->cfg, 256, &dev.caps, NULL));
    CU_ASSERT_EQUAL(
        agent_virtio_pci_window_read32(&dev.config, &dev.caps, AGENT_VIRTIO_BALLOON_CFG_ACTUAL, &v),
        0);
    CU_ASSERT_EQUAL(v, config_rows[i].actual);
    /* The window now points at the device config's actual field. */
    CU_ASSERT_EQUAL(d->cfg[0x84 + 4], 4);
    CU_ASSERT_EQUAL(get32(d->cfg + 0x84 + 8), 0x2004);
    CU_ASSERT_EQUAL(get32(d->cfg + 0x84 + 12), 4);
    CU_ASSERT_EQUAL(d->cfg[0x84 + 5], 0); /* id untouched */

    d->reads = d->writes = 0;
    CU_ASSERT_EQUAL(agent_virtio_balloon_read(&dev, TRUE, &c), 0);
    CU_ASSERT_EQUAL(c.num_pages, config_rows[i].num_pages);
    CU_ASSERT_EQUAL(c.actual, config_rows[i].actual);
    CU_ASSERT_TRUE(c.has_hint_cmd_id);
    CU_ASSERT_EQUAL(c.free_page_hint_cmd_id, config_rows[i].hint);
    CU_ASSERT_EQUAL(d->writes, 3); /* one write and one read per field */
    CU_ASSERT_EQUAL(d->reads, 3);

    CU_ASSERT_EQUAL(agent_virtio_balloon_read(&dev, FALSE, &c), 0);
    CU_ASSERT_FALSE(c.has_hint_cmd_id);
    CU_ASSERT_EQUAL(c.free_page_hint_cmd_id, 0);
  }
}

static void test_window_edges(void) {
  g_autofree FakeDev *d = fake_from("stalled-256mib-hog");
  AgentVirtioPciDev dev = {.access = AGENT_VIRTIO_ACCESS_WINDOW, .config = cfg_io(d)};
  AgentVirtioBalloonConfig c = {.num_pages = 12345};
  guint32 v;

  CU_ASSERT_TRUE_FATAL(agent_virtio_pci_parse_caps(d->cfg, 256, &dev.caps, NULL));
  /* Values change between reads: each read sees the device now. */
  set32(d->bar[4] + 0x2004, 30000);
  CU_ASSERT_EQUAL(agent_virtio_balloon_read(&dev, FALSE, &c), 0);
  CU_ASSERT_EQUAL(c.actual, 30000);
  CU_ASSERT_EQUAL(c.num_pages, 196608);

  /* A field outside the DEVICE_CFG region. */
  CU_ASSERT_EQUAL(agent_virtio_pci_window_read32(&dev.config, &dev.caps, 4094, &v), -ERANGE);
  /* A device config too short for the hint id: read without it. */
  dev.caps.device_cfg_length = 8;
  CU_ASSERT_EQUAL(agent_virtio_balloon_read(&dev, TRUE, &c), 0);
  CU_ASSERT_FALSE(c.has_hint_cmd_id);
  dev.caps.device_cfg_length = 4096;

  /* Lockdown refuses config writes: the error comes back, @out untouched. */
  d->fail_writes = -EPERM;
  c.num_pages = 12345;
  CU_ASSERT_EQUAL(agent_virtio_balloon_read(&dev, FALSE, &c), -EPERM);
  CU_ASSERT_EQUAL(c.num_pages, 12345);
  d->fail_writes = 0;

  /* No window, or no access at all. */
  dev.caps.pci_cfg_pos = -1;
  CU_ASSERT_EQUAL(agent_virtio_pci_window_read32(&dev.config, &dev.caps, 0, &v), -ENODEV);
  dev.access = AGENT_VIRTIO_ACCESS_NONE;
  CU_ASSERT_EQUAL(agent_virtio_balloon_read(&dev, FALSE, &c), -ENODEV);
}

static void test_legacy(void) {
  g_autofree FakeDev *d = g_new0(FakeDev, 1);
  AgentVirtioPciIo bar0 = {.read = fake_bar0_read, .ctx = d};
  AgentVirtioPciDev dev = {.access = AGENT_VIRTIO_ACCESS_LEGACY, .legacy = bar0};
  AgentVirtioBalloonConfig c;
  guint32 v;

  CU_ASSERT_EQUAL(AGENT_VIRTIO_PCI_LEGACY_CONFIG_OFF(false), 20);
  CU_ASSERT_EQUAL(AGENT_VIRTIO_PCI_LEGACY_CONFIG_OFF(true), 24);
  /* The legacy header, then struct virtio_balloon_config. */
  set32(d->bar[0] + 20, 196608);
  set32(d->bar[0] + 24, 21887);
  set32(d->bar[0] + 28, 0x80000003);
  set32(d->bar[0] + 32, 0);
  CU_ASSERT_EQUAL(agent_virtio_pci_legacy_read32(&bar0, false, 0, &v), 0);
  CU_ASSERT_EQUAL(v, 196608);
  CU_ASSERT_EQUAL(agent_virtio_pci_legacy_read32(&bar0, true, 0, &v), 0);
  CU_ASSERT_EQUAL(v, 21887); /* with MSI-X the header is 4 bytes longer */

  /* Without an MSI-X capability: 20 bytes. */
  dev.caps.msix_pos = -1;
  CU_ASSERT_EQUAL(agent_virtio_balloon_read(&dev, TRUE, &c), 0);
  CU_ASSERT_EQUAL(c.num_pages, 196608);
  CU_ASSERT_EQUAL(c.actual, 21887);
  CU_ASSERT_EQUAL(c.free_page_hint_cmd_id, 0x80000003);

  /* With MSI-X enabled (read again from config space each time): 24. */
  blank_config(d->cfg, 0x40);
  d->cfg[0x40] = 0x11;
  d->cfg[0x43] = 0x80;
  d->window = -1;
  dev.config = cfg_io(d);
  dev.caps.msix_pos = 0x40;
  set32(d->bar[0] + 20, 0xdeadbeef); /* MSI-X vectors live here then */
  set32(d->bar[0] + 24, 1000);
  set32(d->bar[0] + 28, 900);
  CU_ASSERT_EQUAL(agent_virtio_balloon_read(&dev, FALSE, &c), 0);
  CU_ASSERT_EQUAL(c.num_pages, 1000);
  CU_ASSERT_EQUAL(c.actual, 900);
  d->cfg[0x43] = 0x00; /* the driver turned MSI-X off */
  CU_ASSERT_EQUAL(agent_virtio_balloon_read(&dev, FALSE, &c), 0);
  CU_ASSERT_EQUAL(c.num_pages, 0xdeadbeef);

  d->fail = -EACCES;
  CU_ASSERT_EQUAL(agent_virtio_balloon_read(&dev, FALSE, &c), -EACCES);
}

/* ---- sysfs text files ---- */

static void test_resource(void) {
  g_autoptr(GBytes) res = load("idle-1024mib", "root/sys/bus/pci/devices/" BDF "/resource");
  g_autoptr(GError) error = NULL;
  uint64_t start, end, flags;
  gsize len;
  const char *text;

  CU_ASSERT_PTR_NOT_NULL_FATAL(res);
  text = g_bytes_get_data(res, &len);
  CU_ASSERT_TRUE(agent_virtio_pci_parse_resource(text, len, 0, &start, &end, &flags, &error));
  CU_ASSERT_EQUAL(start, 0xc000);
  CU_ASSERT_EQUAL(end, 0xc03f);
  CU_ASSERT_EQUAL(flags, 0x40101);
  CU_ASSERT_TRUE(flags & AGENT_PCI_IORESOURCE_IO);
  CU_ASSERT_TRUE(agent_virtio_pci_parse_resource(text, len, 4, &start, &end, &flags, NULL));
  CU_ASSERT_TRUE(start > 0 && !(flags & AGENT_PCI_IORESOURCE_IO)); /* the modern memory BAR */
  CU_ASSERT_TRUE(agent_virtio_pci_parse_resource(text, len, 1, &start, &end, &flags, NULL));
  CU_ASSERT_EQUAL(flags, 0); /* unused */
  CU_ASSERT_FALSE(agent_virtio_pci_parse_resource(text, len, 40, &start, &end, &flags, &error));
  CU_ASSERT_TRUE(g_error_matches(error, AGENT_ERROR, AGENT_ERROR_NOT_FOUND));
  g_clear_error(&error);
  CU_ASSERT_FALSE(
      agent_virtio_pci_parse_resource("0xc000 0xc03f\n", 14, 0, &start, &end, &flags, &error));
  CU_ASSERT_TRUE(g_error_matches(error, AGENT_ERROR, AGENT_ERROR_INVALID));
  CU_ASSERT_FALSE(
      agent_virtio_pci_parse_resource("c000 c03f 101\n", 14, 0, &start, &end, &flags, NULL));
  CU_ASSERT_FALSE(
      agent_virtio_pci_parse_resource("0x1 0x2 0x3 0x4\n", 16, 0, &start, &end, &flags, NULL));
  CU_ASSERT_FALSE(agent_virtio_pci_parse_resource("", 0, 0, &start, &end, &flags, NULL));
}

typedef struct {
  const char *state;
  gboolean deflate_on_oom, hint, reporting;
} features_row;

static const features_row features_rows[] = {
    {"idle-1024mib", FALSE, FALSE, FALSE},
    {"inflated-512mib-deflate-on-oom", TRUE, FALSE, FALSE},
    {"idle-free-page-hint-reporting", FALSE, TRUE, TRUE},
    {"free-page-hint-migration", FALSE, TRUE, TRUE},
};

static void test_features(void) {
  uint64_t bits = 0;

  for (gsize i = 0; i < G_N_ELEMENTS(features_rows); i++) {
    g_autoptr(GBytes) f =
        load(features_rows[i].state, "root/sys/bus/pci/devices/" BDF "/virtio0/features");
    gsize len;
    const char *text;

    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    text = g_bytes_get_data(f, &len);
    CU_ASSERT_TRUE(agent_virtio_parse_features(text, len, &bits, NULL));
    CU_ASSERT_EQUAL(!!(bits & (1u << AGENT_VIRTIO_BALLOON_F_DEFLATE_ON_OOM)),
                    features_rows[i].deflate_on_oom);
    CU_ASSERT_EQUAL(!!(bits & (1u << AGENT_VIRTIO_BALLOON_F_FREE_PAGE_HINT)),
                    features_rows[i].hint);
    CU_ASSERT_EQUAL(!!(bits & (1u << AGENT_VIRTIO_BALLOON_F_REPORTING)),
                    features_rows[i].reporting);
    CU_ASSERT_TRUE((bits & (UINT64_C(1) << 32)) != 0); /* VIRTIO_F_VERSION_1 */
  }
  CU_ASSERT_FALSE(agent_virtio_parse_features("01x1\n", 5, &bits, NULL));
  CU_ASSERT_FALSE(agent_virtio_parse_features("\n", 1, &bits, NULL));
  CU_ASSERT_TRUE(agent_virtio_parse_features("001", 3, &bits, NULL));
  CU_ASSERT_EQUAL(bits, 4);
}

/* ---- discovery ---- */

static void test_find_captured(void) {
  for (gsize i = 0; i < G_N_ELEMENTS(states); i++) {
    g_autofree char *root = state_file(states[i], "root");
    g_autofree char *bdf = NULL;
    g_autoptr(GError) error = NULL;
    uint16_t id = 0;

    CU_ASSERT_TRUE(agent_virtio_pci_find_balloon(root, &bdf, &id, &error));
    CU_ASSERT_STRING_EQUAL(bdf ? bdf : "", BDF);
    CU_ASSERT_EQUAL(id, AGENT_VIRTIO_PCI_BALLOON_TRANSITIONAL);
  }
}

static void write_text(const char *dir, const char *name, const char *text) {
  g_autofree char *path = g_build_filename(dir, name, NULL);

  g_assert(g_file_set_contents(path, text, -1, NULL));
}

static void remove_tree(const char *path) {
  g_autoptr(GDir) dir = g_dir_open(path, 0, NULL);
  const char *name;

  while (dir && (name = g_dir_read_name(dir))) {
    g_autofree char *child = g_build_filename(path, name, NULL);

    if (g_file_test(child, G_FILE_TEST_IS_DIR) && !g_file_test(child, G_FILE_TEST_IS_SYMLINK))
      remove_tree(child);
    else
      g_unlink(child);
  }
  g_rmdir(path);
}

static void test_find_absent(void) {
  g_autofree char *root = g_dir_make_tmp("shrinkd-pci-XXXXXX", NULL);
  g_autofree char *devices = g_build_filename(root, "sys/bus/pci/devices", NULL);
  g_autofree char *net = g_build_filename(devices, "0000:00:03.0", NULL);
  g_autofree char *modern = g_build_filename(devices, "0000:00:07.0", NULL);
  g_autofree char *bdf = NULL;
  g_autoptr(GError) error = NULL;
  uint16_t id;

  /* No sysfs at all. */
  CU_ASSERT_FALSE(agent_virtio_pci_find_balloon(root, &bdf, &id, &error));
  CU_ASSERT_TRUE(g_error_matches(error, AGENT_ERROR, AGENT_ERROR_NOT_FOUND));
  g_clear_error(&error);

  /* A virtio network card only; a device with unreadable ids. */
  g_mkdir_with_parents(net, 0755);
  write_text(net, "vendor", "0x1af4\n");
  write_text(net, "device", "0x1000\n");
  g_mkdir_with_parents(modern, 0755);
  write_text(modern, "vendor", "garbage\n");
  CU_ASSERT_FALSE(agent_virtio_pci_find_balloon(root, &bdf, &id, &error));
  CU_ASSERT_TRUE(g_error_matches(error, AGENT_ERROR, AGENT_ERROR_NOT_FOUND));
  CU_ASSERT_PTR_NOT_NULL(error && strstr(error->message, "virtio-balloon"));
  g_clear_error(&error);

  /* A modern-only balloon. */
  write_text(modern, "vendor", "0x1af4\n");
  write_text(modern, "device", "0x1045\n");
  CU_ASSERT_TRUE(agent_virtio_pci_find_balloon(root, &bdf, &id, NULL));
  CU_ASSERT_STRING_EQUAL(bdf ? bdf : "", "0000:00:07.0");
  CU_ASSERT_EQUAL(id, AGENT_VIRTIO_PCI_BALLOON_MODERN);
  remove_tree(root);
}

/* ---- the source on fixture roots ---- */

typedef struct {
  int targets, progress;
  AgentSourceEvent last;
} Seen;

static void sink(AgentSource *source, const AgentSourceEvent *ev, gpointer data) {
  Seen *seen = data;

  if (ev->kind == AGENT_SOURCE_EVENT_TARGET)
    seen->targets++;
  if (ev->kind == AGENT_SOURCE_EVENT_PROGRESS)
    seen->progress++;
  seen->last = *ev;
}

/* Copies @src (a directory) into @dst, leaving out files named @skip. */
static void copy_tree(const char *src, const char *dst, const char *const *skip) {
  g_autoptr(GDir) dir = g_dir_open(src, 0, NULL);
  const char *name;

  g_mkdir_with_parents(dst, 0755);
  while (dir && (name = g_dir_read_name(dir))) {
    g_autofree char *from = g_build_filename(src, name, NULL);
    g_autofree char *to = g_build_filename(dst, name, NULL);
    g_autofree char *data = NULL;
    gsize len;

    if (skip && g_strv_contains(skip, name))
      continue;
    if (g_file_test(from, G_FILE_TEST_IS_DIR)) {
      copy_tree(from, to, skip);
    } else if (g_file_get_contents(from, &data, &len, NULL)) {
      g_file_set_contents(to, data, (gssize)len, NULL);
    }
  }
}

static void test_source_without_config(void) {
  /* The stalled guest, as a reader without config access sees it: no
   * config file and no resource0 (neither is in the fixture; config is
   * left out of the copy). */
  static const char *const skip[] = {"config", NULL};
  g_autofree char *src = state_file("stalled-256mib-hog", "root");
  g_autofree char *root = g_dir_make_tmp("shrinkd-vsrc-XXXXXX", NULL);
  AgentProcfs *procfs = agent_procfs_new(root);
  AgentSourceEnv env = {.root = root, .procfs = procfs};
  AgentVirtioSourceConfig vc = {.events = AGENT_VIRTIO_EVENTS_AUTO};
  AgentSource *s;
  AgentSourceStatus st;
  AgentVirtioInfo info;
  Seen seen = {0};

  copy_tree(src, root, skip);
  s = agent_source_virtio_new(&env, &vc);
  agent_source_set_sink(s, sink, &seen);
  agent_source_start(s);
  agent_source_virtio_info(s, &info);
  CU_ASSERT_STRING_EQUAL(info.device ? info.device : "", BDF);
  CU_ASSERT_EQUAL(info.access, AGENT_VIRTIO_ACCESS_NONE);
  CU_ASSERT_PTR_NOT_NULL(info.access_reason && strstr(info.access_reason, "config"));
  /* No kprobe PMU and no tracefs in the fixture: poll, saying why. */
  CU_ASSERT_STRING_EQUAL(info.mode, "poll");
  CU_ASSERT_PTR_NOT_NULL(strstr(info.mode_reason, "kprobe PMU"));
  CU_ASSERT_PTR_NOT_NULL(strstr(info.mode_reason, "idle wake-ups"));
  agent_source_get_status(s, &st);
  CU_ASSERT_TRUE(st.active);
  CU_ASSERT_STRING_EQUAL(st.name, "virtio-balloon");
  /* The first reading: target unknown, actual from vmstat
   * (152959 - 131072 pages). */
  CU_ASSERT_EQUAL(seen.targets, 1);
  CU_ASSERT_TRUE(seen.last.initial);
  CU_ASSERT_FALSE(info.reading.target_known);
  CU_ASSERT_TRUE(info.reading.actual_known);
  CU_ASSERT_EQUAL(info.reading.actual_bytes, UINT64_C(21887) * 4096);
  CU_ASSERT_TRUE(info.features_known);
  agent_source_free(s);
  agent_procfs_free(procfs);
  remove_tree(root);
}

static void test_source_no_device(void) {
  g_autofree char *root = g_dir_make_tmp("shrinkd-vsrc-XXXXXX", NULL);
  AgentProcfs *procfs = agent_procfs_new(root);
  AgentSourceEnv env = {.root = root, .procfs = procfs};
  AgentSource *s = agent_source_virtio_new(&env, NULL);
  AgentSourceStatus st;
  AgentVirtioInfo info;
  Seen seen = {0};

  agent_source_set_sink(s, sink, &seen);
  agent_source_start(s);
  agent_source_get_status(s, &st);
  CU_ASSERT_FALSE(st.active);
  CU_ASSERT_STRING_EQUAL(st.mode, "none");
  CU_ASSERT_PTR_NOT_NULL(strstr(st.reason, "no PCI devices"));
  agent_source_virtio_info(s, &info);
  CU_ASSERT_PTR_NULL(info.device);
  CU_ASSERT_EQUAL(seen.targets, 0);
  agent_source_stop(s);
  agent_source_stop(s); /* idempotent */
  agent_source_free(s);

  /* Disabled by configuration: start does nothing. */
  s = agent_source_virtio_new(&env, NULL);
  agent_source_disable(s, "balloon=off");
  agent_source_start(s);
  agent_source_get_status(s, &st);
  CU_ASSERT_FALSE(st.active);
  CU_ASSERT_PTR_NOT_NULL(strstr(st.reason, "balloon=off"));
  agent_source_free(s);
  agent_procfs_free(procfs);
  remove_tree(root);
}

/* The source polling a copy of a captured root whose config file is a
 * plain file: the "window" then reads back the 4 bytes at pci_cfg_data
 * whatever it asks for, so num_pages, actual and the hint id all take the
 * value written there. Enough to drive the source's reading, its events
 * and the hinting rules (active id .. STOP .. DONE; a run that times out). */
typedef struct {
  int targets, progress, hint_start, hint_end;
} Counts;

static void count_sink(AgentSource *source, const AgentSourceEvent *ev, gpointer data) {
  Counts *n = data;

  switch (ev->kind) {
  case AGENT_SOURCE_EVENT_TARGET: n->targets++; break;
  case AGENT_SOURCE_EVENT_PROGRESS: n->progress++; break;
  case AGENT_SOURCE_EVENT_HINT_START: n->hint_start++; break;
  case AGENT_SOURCE_EVENT_HINT_END: n->hint_end++; break;
  default: break;
  }
}

/* In place: the source keeps the file open. */
static void set_window_data(const char *config, guint32 v) {
  int fd = open(config, O_WRONLY);

  g_assert(fd >= 0);
  v = GUINT32_TO_LE(v);
  g_assert(pwrite(fd, &v, 4, 0x84 + 16) == 4);
  close(fd);
}

static void spin(int ms) {
  int64_t end = g_get_monotonic_time() + ms * 1000;

  while (g_get_monotonic_time() < end) {
    while (g_main_context_iteration(NULL, FALSE))
      ;
    g_usleep(1000);
  }
}

static void test_source_poll_hint(void) {
  g_autofree char *src = state_file("idle-free-page-hint-reporting", "root");
  g_autofree char *root = g_dir_make_tmp("shrinkd-vsrc-XXXXXX", NULL);
  g_autofree char *config = g_build_filename(root, "sys/bus/pci/devices", BDF, "config", NULL);
  AgentProcfs *procfs = agent_procfs_new(root);
  AgentSourceEnv env = {.root = root, .procfs = procfs};
  AgentVirtioSourceConfig vc = {.events = AGENT_VIRTIO_EVENTS_POLL,
                                .poll_fast_ms = 2,
                                .poll_moving_max_ms = 5,
                                .poll_idle_ms = 5,
                                .hint_max_ms = 300};
  AgentSource *s;
  AgentVirtioInfo info;
  Counts n = {0};

  copy_tree(src, root, NULL);
  set_window_data(config, 0);
  s = agent_source_virtio_new(&env, &vc);
  agent_source_set_sink(s, count_sink, &n);
  agent_source_start(s);
  agent_source_virtio_info(s, &info);
  CU_ASSERT_EQUAL(info.access, AGENT_VIRTIO_ACCESS_WINDOW);
  CU_ASSERT_STRING_EQUAL(info.mode, "poll");
  CU_ASSERT_TRUE(info.reading.target_known);
  CU_ASSERT_TRUE(info.reading.hint_supported); /* feature bit 3 */
  CU_ASSERT_FALSE(info.reading.hint_in_progress);
  CU_ASSERT_EQUAL(n.targets, 1); /* the initial reading */

  /* A hinting run begins (an active id; here also the "sizes"). */
  set_window_data(config, 0x80000002u);
  spin(60);
  agent_source_virtio_info(s, &info);
  CU_ASSERT_EQUAL(n.hint_start, 1);
  CU_ASSERT_TRUE(info.reading.hint_in_progress);
  CU_ASSERT_EQUAL(info.reading.free_page_hint_cmd_id, 0x80000002u);
  CU_ASSERT_EQUAL(n.targets, 2);
  CU_ASSERT_EQUAL(n.progress, 1);
  /* STOP: the driver still holds the pages; DONE ends the run. */
  set_window_data(config, 0);
  spin(60);
  agent_source_virtio_info(s, &info);
  CU_ASSERT_TRUE(info.reading.hint_in_progress);
  CU_ASSERT_EQUAL(n.hint_end, 0);
  set_window_data(config, 1);
  spin(60);
  agent_source_virtio_info(s, &info);
  CU_ASSERT_FALSE(info.reading.hint_in_progress);
  CU_ASSERT_EQUAL(n.hint_end, 1);
  CU_ASSERT_TRUE(info.reads > 10);

  /* A run that gives no news for hint_max_ms is over, and stays over. */
  set_window_data(config, 0x80000003u);
  spin(60);
  CU_ASSERT_EQUAL(n.hint_start, 2);
  spin(400);
  agent_source_virtio_info(s, &info);
  CU_ASSERT_FALSE(info.reading.hint_in_progress);
  CU_ASSERT_EQUAL(n.hint_end, 2);
  CU_ASSERT_EQUAL(n.hint_start, 2);
  /* A new id is a new run. */
  set_window_data(config, 0x80000004u);
  spin(60);
  CU_ASSERT_EQUAL(n.hint_start, 3);

  agent_source_free(s);
  spin(5);
  agent_procfs_free(procfs);
  remove_tree(root);
}

int main(int argc, char **argv) {
  CU_pSuite s;

  captured = argc > 1 ? argv[1] : g_getenv("SHRINKD_TEST_CAPTURED");
  if (!captured) {
    fprintf(stderr, "usage: %s CAPTURED_DIR (or SHRINKD_TEST_CAPTURED)\n", argv[0]);
    return 2;
  }
  /* The source logs its one warning per problem; keep them visible but
   * not fatal. */
  g_log_set_always_fatal(G_LOG_FATAL_MASK);
  if (CU_initialize_registry() != CUE_SUCCESS)
    return 1;
  s = CU_add_suite("virtio-pci", NULL, NULL);
  CU_add_test(s, "capabilities of captured config spaces", test_caps_captured);
  CU_add_test(s, "the 64 bytes a non-root reader gets", test_caps_as_nobody);
  CU_add_test(s, "hand-made capability lists", test_caps_made);
  CU_add_test(s, "PCI_CFG window on a fake device with captured bytes", test_window_captured);
  CU_add_test(s, "window: changes, ranges, refused writes", test_window_edges);
  CU_add_test(s, "legacy I/O BAR, with and without MSI-X", test_legacy);
  CU_add_test(s, "sysfs resource file", test_resource);
  CU_add_test(s, "sysfs features file", test_features);
  CU_add_test(s, "discovery in captured roots", test_find_captured);
  CU_add_test(s, "discovery without a balloon", test_find_absent);
  CU_add_test(s, "source: no config access, vmstat only", test_source_without_config);
  CU_add_test(s, "source: no device, disabled", test_source_no_device);
  CU_add_test(s, "source: polling, hinting runs", test_source_poll_hint);
  return cunit_run_all();
}
