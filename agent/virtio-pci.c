/* SPDX-License-Identifier: MIT */
/*
 * The virtio-balloon PCI function from userspace (see virtio-pci.h).
 */
#include "virtio-pci.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "errors.h"
#include "procfs.h"

#define PCI_STATUS          0x06
#define PCI_STATUS_CAP_LIST 0x10
#define PCI_CAPABILITY_LIST 0x34
#define PCI_CAP_ID_VNDR     0x09
#define PCI_CAP_ID_MSIX     0x11
#define PCI_HEADER_BYTES    64

/* struct virtio_pci_cap: cap_vndr, cap_next, cap_len, cfg_type, bar, id,
 * padding[2], offset (le32), length (le32); virtio_pci_cfg_cap adds
 * pci_cfg_data[4]. */
#define VCAP_LEN     2
#define VCAP_TYPE    3
#define VCAP_BAR     4
#define VCAP_OFFSET  8
#define VCAP_LENGTH  12
#define VCAP_SIZE    16
#define VCFGCAP_DATA 16
#define VCFGCAP_SIZE 20

static uint32_t le32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put_le32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)v;
  p[1] = (uint8_t)(v >> 8);
  p[2] = (uint8_t)(v >> 16);
  p[3] = (uint8_t)(v >> 24);
}

gboolean agent_virtio_pci_parse_caps(const uint8_t *cfg, size_t len, AgentVirtioPciCaps *out,
                                     GError **error) {
  AgentVirtioPciCaps caps = {
      .device_cfg_bar = -1,
      .pci_cfg_pos = -1,
      .msix_pos = -1,
  };
  size_t pos;
  /* A list has at most (256 - 64) / 4 entries: more means a loop. */
  unsigned guard = 48;

  if (len < PCI_HEADER_BYTES) {
    g_set_error(error, AGENT_ERROR, AGENT_ERROR_INVALID,
                "PCI config space of %zu bytes is shorter than its 64-byte header", len);
    return FALSE;
  }
  caps.has_cap_list = (cfg[PCI_STATUS] & PCI_STATUS_CAP_LIST) != 0;
  if (!caps.has_cap_list) {
    *out = caps;
    return TRUE;
  }
  pos = cfg[PCI_CAPABILITY_LIST] & 0xfc;
  if (pos != 0 && pos + 2 > len) {
    g_set_error(error, AGENT_ERROR, AGENT_ERROR_NOT_FOUND,
                "the capability list starts at 0x%02zx, beyond the %zu readable bytes of "
                "config space (only root reads all of it)",
                pos, len);
    return FALSE;
  }
  while (pos >= PCI_HEADER_BYTES && pos + 2 <= len && guard-- > 0) {
    const uint8_t *c = cfg + pos;

    if (c[0] == PCI_CAP_ID_MSIX && pos + 4 <= len) {
      if (caps.msix_pos < 0) {
        caps.msix_pos = (int)pos;
        caps.msix_enabled = (c[3] & 0x80) != 0;
      }
    } else if (c[0] == PCI_CAP_ID_VNDR && pos + VCAP_SIZE <= len && c[VCAP_LEN] >= VCAP_SIZE) {
      /* The first capability of each type is the one to use (virtio
       * 1.x, 4.1.4: the driver uses the first it can). */
      if (c[VCAP_TYPE] == AGENT_VIRTIO_PCI_CAP_DEVICE_CFG && caps.device_cfg_bar < 0 &&
          c[VCAP_BAR] <= 5) {
        caps.device_cfg_bar = c[VCAP_BAR];
        caps.device_cfg_offset = le32(c + VCAP_OFFSET);
        caps.device_cfg_length = le32(c + VCAP_LENGTH);
      } else if (c[VCAP_TYPE] == AGENT_VIRTIO_PCI_CAP_PCI_CFG && caps.pci_cfg_pos < 0 &&
                 c[VCAP_LEN] >= VCFGCAP_SIZE && pos + VCFGCAP_SIZE <= len) {
        caps.pci_cfg_pos = (int)pos;
        memcpy(caps.pci_cfg_id_pad, c + VCAP_BAR + 1, sizeof(caps.pci_cfg_id_pad));
      }
    }
    pos = c[1] & 0xfc;
  }
  *out = caps;
  return TRUE;
}

/* Parses "0x" and hex digits at *@p, advancing it. */
static gboolean parse_hex(const char **p, const char *end, uint64_t *out) {
  const char *s = *p;
  uint64_t v = 0;
  unsigned digits = 0;

  if (end - s < 3 || s[0] != '0' || (s[1] != 'x' && s[1] != 'X'))
    return FALSE;
  for (s += 2; s < end && g_ascii_isxdigit(*s); s++, digits++) {
    if (digits >= 16)
      return FALSE;
    v = v << 4 | (uint64_t)g_ascii_xdigit_value(*s);
  }
  if (digits == 0)
    return FALSE;
  *p = s;
  *out = v;
  return TRUE;
}

gboolean agent_virtio_pci_parse_resource(const char *text, size_t len, unsigned bar,
                                         uint64_t *start, uint64_t *end, uint64_t *flags,
                                         GError **error) {
  const char *p = text, *stop = text + len;
  uint64_t v[3];

  for (unsigned line = 0; line < bar; line++) {
    const char *nl = memchr(p, '\n', (size_t)(stop - p));

    if (!nl) {
      g_set_error(error, AGENT_ERROR, AGENT_ERROR_NOT_FOUND, "resource: no line for BAR %u", bar);
      return FALSE;
    }
    p = nl + 1;
  }
  if (p >= stop) {
    g_set_error(error, AGENT_ERROR, AGENT_ERROR_NOT_FOUND, "resource: no line for BAR %u", bar);
    return FALSE;
  }
  for (int i = 0; i < 3; i++) {
    while (p < stop && *p == ' ')
      p++;
    if (!parse_hex(&p, stop, &v[i])) {
      g_set_error(error, AGENT_ERROR, AGENT_ERROR_INVALID,
                  "resource: BAR %u's line is not three hex numbers", bar);
      return FALSE;
    }
  }
  if (p < stop && *p != '\n') {
    g_set_error(error, AGENT_ERROR, AGENT_ERROR_INVALID,
                "resource: BAR %u's line has more than three numbers", bar);
    return FALSE;
  }
  *start = v[0];
  *end = v[1];
  *flags = v[2];
  return TRUE;
}

gboolean agent_virtio_parse_features(const char *text, size_t len, uint64_t *bits, GError **error) {
  uint64_t v = 0;
  size_t n = 0;

  while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == ' '))
    len--;
  for (; n < len; n++) {
    if (text[n] != '0' && text[n] != '1') {
      g_set_error(error, AGENT_ERROR, AGENT_ERROR_INVALID,
                  "features: character %zu is not '0' or '1'", n);
      return FALSE;
    }
    if (text[n] == '1' && n < 64)
      v |= UINT64_C(1) << n;
  }
  if (n == 0) {
    g_set_error(error, AGENT_ERROR, AGENT_ERROR_INVALID, "features: empty");
    return FALSE;
  }
  *bits = v;
  return TRUE;
}

/* ---- I/O ---- */

int agent_virtio_pci_fd_read(void *fd_ptr, void *buf, size_t len, uint64_t offset) {
  ssize_t r;

  do
    r = pread(*(int *)fd_ptr, buf, len, (off_t)offset);
  while (r < 0 && errno == EINTR);
  if (r < 0)
    return -errno;
  return (size_t)r == len ? 0 : -EIO;
}

int agent_virtio_pci_fd_write(void *fd_ptr, const void *buf, size_t len, uint64_t offset) {
  ssize_t r;

  do
    r = pwrite(*(int *)fd_ptr, buf, len, (off_t)offset);
  while (r < 0 && errno == EINTR);
  if (r < 0)
    return -errno;
  return (size_t)r == len ? 0 : -EIO;
}

int agent_virtio_pci_window_read32(const AgentVirtioPciIo *config_io,
                                   const AgentVirtioPciCaps *caps, uint32_t field_offset,
                                   uint32_t *out) {
  uint8_t sel[VCAP_SIZE - VCAP_BAR], data[4];
  int rc;

  if (caps->pci_cfg_pos < 0 || caps->device_cfg_bar < 0)
    return -ENODEV;
  if ((uint64_t)field_offset + 4 > caps->device_cfg_length ||
      (uint64_t)caps->device_cfg_offset + field_offset > UINT32_MAX)
    return -ERANGE;
  /* bar, id, padding[2], offset, length: one write from cap+4 to cap+16
   * instead of three. id and padding are read-only; they go back as they
   * were read. */
  sel[0] = (uint8_t)caps->device_cfg_bar;
  memcpy(sel + 1, caps->pci_cfg_id_pad, sizeof(caps->pci_cfg_id_pad));
  put_le32(sel + (VCAP_OFFSET - VCAP_BAR), caps->device_cfg_offset + field_offset);
  put_le32(sel + (VCAP_LENGTH - VCAP_BAR), 4);
  rc = config_io->write(config_io->ctx, sel, sizeof(sel), (uint64_t)caps->pci_cfg_pos + VCAP_BAR);
  if (rc < 0)
    return rc;
  rc = config_io->read(config_io->ctx, data, sizeof(data),
                       (uint64_t)caps->pci_cfg_pos + VCFGCAP_DATA);
  if (rc < 0)
    return rc;
  *out = le32(data);
  return 0;
}

int agent_virtio_pci_legacy_read32(const AgentVirtioPciIo *bar_io, bool msix_enabled,
                                   uint32_t field_offset, uint32_t *out) {
  uint8_t data[4];
  int rc = bar_io->read(bar_io->ctx, data, sizeof(data),
                        AGENT_VIRTIO_PCI_LEGACY_CONFIG_OFF(msix_enabled) + (uint64_t)field_offset);

  if (rc < 0)
    return rc;
  *out = le32(data);
  return 0;
}

const char *agent_virtio_access_name(AgentVirtioAccess access) {
  switch (access) {
  case AGENT_VIRTIO_ACCESS_WINDOW: return "pci-cfg-window";
  case AGENT_VIRTIO_ACCESS_LEGACY: return "legacy-io";
  case AGENT_VIRTIO_ACCESS_NONE: break;
  }
  return "none";
}

int agent_virtio_balloon_read(const AgentVirtioPciDev *dev, bool want_hint,
                              AgentVirtioBalloonConfig *out) {
  static const uint32_t fields[] = {AGENT_VIRTIO_BALLOON_CFG_NUM_PAGES,
                                    AGENT_VIRTIO_BALLOON_CFG_ACTUAL,
                                    AGENT_VIRTIO_BALLOON_CFG_HINT_CMD_ID};
  uint32_t v[G_N_ELEMENTS(fields)] = {0};
  size_t n = want_hint ? 3 : 2;
  bool msix = false;
  int rc = 0;

  switch (dev->access) {
  case AGENT_VIRTIO_ACCESS_WINDOW:
    if (want_hint && dev->caps.device_cfg_length < AGENT_VIRTIO_BALLOON_CFG_HINT_CMD_ID + 4)
      n = 2;
    for (size_t i = 0; i < n && rc == 0; i++)
      rc = agent_virtio_pci_window_read32(&dev->config, &dev->caps, fields[i], &v[i]);
    break;
  case AGENT_VIRTIO_ACCESS_LEGACY:
    if (dev->caps.msix_pos >= 0) {
      uint8_t ctl;

      rc = dev->config.read(dev->config.ctx, &ctl, 1, (uint64_t)dev->caps.msix_pos + 3);
      msix = rc == 0 && (ctl & 0x80);
    }
    for (size_t i = 0; i < n && rc == 0; i++)
      rc = agent_virtio_pci_legacy_read32(&dev->legacy, msix, fields[i], &v[i]);
    break;
  case AGENT_VIRTIO_ACCESS_NONE: return -ENODEV;
  }
  if (rc < 0)
    return rc;
  out->num_pages = v[0];
  out->actual = v[1];
  out->has_hint_cmd_id = n == 3;
  out->free_page_hint_cmd_id = n == 3 ? v[2] : 0;
  return 0;
}

/* ---- discovery ---- */

/* Reads a sysfs id file ("0x1af4\n") as a number. */
static gboolean read_hex_id(const char *path, unsigned *out) {
  g_autofree char *text = NULL;
  const char *p;
  uint64_t v;

  if (!g_file_get_contents(path, &text, NULL, NULL))
    return FALSE;
  p = text;
  if (!parse_hex(&p, text + strlen(text), &v) || v > 0xffff)
    return FALSE;
  *out = (unsigned)v;
  return TRUE;
}

static gint compare_names(gconstpointer a, gconstpointer b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

gboolean agent_virtio_pci_find_balloon(const char *root, char **bdf, uint16_t *device_id,
                                       GError **error) {
  g_autofree char *dir_path = agent_procfs_path(root, "/sys/bus/pci/devices");
  g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func(g_free);
  g_autoptr(GError) local = NULL;
  g_autoptr(GDir) dir = g_dir_open(dir_path, 0, &local);
  const char *name;

  if (!dir) {
    g_set_error(error, AGENT_ERROR, AGENT_ERROR_NOT_FOUND, "no PCI devices to look at: %s",
                local->message);
    return FALSE;
  }
  while ((name = g_dir_read_name(dir)))
    g_ptr_array_add(names, g_strdup(name));
  g_ptr_array_sort(names, compare_names);
  for (guint i = 0; i < names->len; i++) {
    const char *n = g_ptr_array_index(names, i);
    g_autofree char *vendor_path = g_build_filename(dir_path, n, "vendor", NULL);
    g_autofree char *device_path = g_build_filename(dir_path, n, "device", NULL);
    unsigned vendor, device;

    if (!read_hex_id(vendor_path, &vendor) || vendor != AGENT_VIRTIO_PCI_VENDOR)
      continue;
    if (!read_hex_id(device_path, &device) || (device != AGENT_VIRTIO_PCI_BALLOON_TRANSITIONAL &&
                                               device != AGENT_VIRTIO_PCI_BALLOON_MODERN))
      continue;
    *bdf = g_strdup(n);
    *device_id = (uint16_t)device;
    return TRUE;
  }
  g_set_error(error, AGENT_ERROR, AGENT_ERROR_NOT_FOUND,
              "no virtio-balloon PCI device (1af4:1002 or 1af4:1045) in %s", dir_path);
  return FALSE;
}
