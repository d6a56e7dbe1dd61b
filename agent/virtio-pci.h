/* SPDX-License-Identifier: MIT */
/*
 * The virtio-balloon device as guest userspace can reach it: its PCI
 * function under /sys/bus/pci/devices, its capability list, and its device
 * config (struct virtio_balloon_config: num_pages, actual,
 * free_page_hint_cmd_id) read without the kernel driver's help.
 *
 * Two ways in, both root only:
 *  - the VIRTIO_PCI_CAP_PCI_CFG window (virtio 1.x, section 4.1.4.9): write
 *    bar, offset and length into the capability inside the config file,
 *    then read pci_cfg_data, which the device fills from that BAR;
 *  - the legacy I/O BAR (BAR0 of a transitional device, sysfs resource0):
 *    the device config follows the 20-byte legacy header (24 with MSI-X
 *    enabled).
 * A non-root reader of the config file gets only its first 64 bytes, which
 * end before the capabilities, so neither way is open to it.
 *
 * The parsers are pure functions over bytes and the readers do their I/O
 * through AgentVirtioPciIo, so the unit tests run them on captured config
 * bytes and an in-memory fake device. Values are little-endian in both
 * ways (legacy is guest-endian; the agent runs on little-endian guests).
 *
 * Errors: GError (AGENT_ERROR) for the parsers and discovery, 0 or -errno
 * for the I/O readers (their errors are the kernel's: EACCES, EPERM under
 * lockdown, EIO). Thread-agnostic, no global state.
 */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AGENT_VIRTIO_PCI_VENDOR               0x1af4
#define AGENT_VIRTIO_PCI_BALLOON_TRANSITIONAL 0x1002
#define AGENT_VIRTIO_PCI_BALLOON_MODERN       0x1045

/* Capability types (virtio 1.x, struct virtio_pci_cap.cfg_type). */
#define AGENT_VIRTIO_PCI_CAP_DEVICE_CFG 4
#define AGENT_VIRTIO_PCI_CAP_PCI_CFG    5

/* struct virtio_balloon_config: offsets of its little-endian u32 fields. */
#define AGENT_VIRTIO_BALLOON_CFG_NUM_PAGES   0
#define AGENT_VIRTIO_BALLOON_CFG_ACTUAL      4
#define AGENT_VIRTIO_BALLOON_CFG_HINT_CMD_ID 8

/* free_page_hint_cmd_id values with a meaning of their own; any other
 * value is the id of a hinting run the host asked for. */
#define AGENT_VIRTIO_BALLOON_CMD_ID_STOP 0
#define AGENT_VIRTIO_BALLOON_CMD_ID_DONE 1

/* Feature bits (sysfs virtioN/features: one '0'/'1' per bit, bit 0 first). */
#define AGENT_VIRTIO_BALLOON_F_DEFLATE_ON_OOM 2
#define AGENT_VIRTIO_BALLOON_F_FREE_PAGE_HINT 3
#define AGENT_VIRTIO_BALLOON_F_PAGE_POISON    4
#define AGENT_VIRTIO_BALLOON_F_REPORTING      5

/* The balloon counts 4 KiB pages whatever the guest's page size. */
#define AGENT_VIRTIO_BALLOON_PAGE_BYTES 4096u

/* The legacy header's length before the device config. */
#define AGENT_VIRTIO_PCI_LEGACY_CONFIG_OFF(msix_enabled) ((msix_enabled) ? 24u : 20u)

/* What the capability list says (positions are config-space offsets). */
typedef struct {
  bool has_cap_list;          /* PCI status bit 4: there is a list */
  int device_cfg_bar;         /* BAR of VIRTIO_PCI_CAP_DEVICE_CFG; -1 if none */
  uint32_t device_cfg_offset; /* within that BAR */
  uint32_t device_cfg_length;
  int pci_cfg_pos;           /* the VIRTIO_PCI_CAP_PCI_CFG capability; -1 if none */
  uint8_t pci_cfg_id_pad[3]; /* its id and padding bytes, as read (read-only) */
  int msix_pos;              /* the MSI-X capability; -1 if none */
  bool msix_enabled;         /* its Message Control bit 15, as read */
} AgentVirtioPciCaps;

/*
 * Walks the capability list in @len bytes of config space @cfg (at least
 * the 64-byte header). Returns TRUE and fills @out (a device without a list
 * is fine: has_cap_list false, nothing found), or FALSE with @error:
 * AGENT_ERROR_INVALID for fewer than 64 bytes; AGENT_ERROR_NOT_FOUND when
 * the list points beyond @len (a non-root reader's 64 bytes). A malformed
 * list (a loop, a pointer into the header, a capability cut short) ends
 * the walk; what was found before it stays.
 */
gboolean agent_virtio_pci_parse_caps(const uint8_t *cfg, size_t len, AgentVirtioPciCaps *out,
                                     GError **error);

/*
 * Parses the sysfs "resource" file text (one "0xSTART 0xEND 0xFLAGS" line
 * per BAR, BAR0 first) for @bar. Returns TRUE with the figures, or FALSE
 * with @error (AGENT_ERROR_NOT_FOUND: no such line; AGENT_ERROR_INVALID:
 * not three hex numbers). An unused BAR is all zero.
 */
gboolean agent_virtio_pci_parse_resource(const char *text, size_t len, unsigned bar,
                                         uint64_t *start, uint64_t *end, uint64_t *flags,
                                         GError **error);

#define AGENT_PCI_IORESOURCE_IO 0x100 /* the resource is an I/O port range */

/*
 * Parses the sysfs virtioN/features text (a string of '0' and '1', bit 0
 * first, then a newline) into @bits (bits beyond 63 are ignored). Returns
 * TRUE, or FALSE with AGENT_ERROR_INVALID for any other character or an
 * empty string.
 */
gboolean agent_virtio_parse_features(const char *text, size_t len, uint64_t *bits, GError **error);

/* I/O on one file (the config file or resource0): each call moves exactly
 * @len bytes at @offset and returns 0, or returns -errno. */
typedef struct {
  int (*read)(void *ctx, void *buf, size_t len, uint64_t offset);
  int (*write)(void *ctx, const void *buf, size_t len, uint64_t offset);
  void *ctx;
} AgentVirtioPciIo;

/* The AgentVirtioPciIo of a file descriptor (pread/pwrite, EINTR retried,
 * a short transfer is -EIO). @fd_ptr points at the int descriptor. */
int agent_virtio_pci_fd_read(void *fd_ptr, void *buf, size_t len, uint64_t offset);
int agent_virtio_pci_fd_write(void *fd_ptr, const void *buf, size_t len, uint64_t offset);

/*
 * Reads the u32 at @field_offset of the device config through the PCI_CFG
 * window, on @config_io (the config file, opened read-write). One write of
 * bar, offset and length (the capability's read-only id and padding
 * written back as parsed) then one read of pci_cfg_data.
 * Returns 0, -ENODEV when @caps lack the DEVICE_CFG or PCI_CFG capability,
 * -ERANGE when the field lies outside the DEVICE_CFG region, or the I/O's
 * -errno. Another process using the window at the same moment can make
 * the value wrong: callers that care read twice.
 */
int agent_virtio_pci_window_read32(const AgentVirtioPciIo *config_io,
                                   const AgentVirtioPciCaps *caps, uint32_t field_offset,
                                   uint32_t *out);

/*
 * Reads the u32 at @field_offset of the device config through the legacy
 * I/O BAR on @bar_io (resource0), after the legacy header (20 bytes, 24
 * with @msix_enabled). Returns 0 or the I/O's -errno.
 */
int agent_virtio_pci_legacy_read32(const AgentVirtioPciIo *bar_io, bool msix_enabled,
                                   uint32_t field_offset, uint32_t *out);

typedef enum {
  AGENT_VIRTIO_ACCESS_NONE,
  AGENT_VIRTIO_ACCESS_WINDOW, /* VIRTIO_PCI_CAP_PCI_CFG through the config file */
  AGENT_VIRTIO_ACCESS_LEGACY, /* BAR0 I/O through resource0 */
} AgentVirtioAccess;

/* "pci-cfg-window", "legacy-io" or "none". */
const char *agent_virtio_access_name(AgentVirtioAccess access);

/* The fields of struct virtio_balloon_config the agent follows. */
typedef struct {
  uint32_t num_pages; /* the target: pages the host wants in the balloon */
  uint32_t actual;    /* pages the balloon holds */
  bool has_hint_cmd_id;
  uint32_t free_page_hint_cmd_id;
} AgentVirtioBalloonConfig;

/* A balloon device's ways in. */
typedef struct {
  AgentVirtioAccess access;
  AgentVirtioPciIo config; /* the config file (window; MSI-X state for legacy) */
  AgentVirtioPciIo legacy; /* resource0, for AGENT_VIRTIO_ACCESS_LEGACY */
  AgentVirtioPciCaps caps;
} AgentVirtioPciDev;

/*
 * Reads num_pages and actual (and free_page_hint_cmd_id if @want_hint)
 * through @dev's access. For legacy access the MSI-X state is read again
 * first (the header's length depends on it; the driver enables MSI-X after
 * the agent may have started). Returns 0, -ENODEV for no access, or the
 * -errno of the first read that failed (@out then untouched).
 */
int agent_virtio_balloon_read(const AgentVirtioPciDev *dev, bool want_hint,
                              AgentVirtioBalloonConfig *out);

/*
 * Finds the first virtio-balloon PCI function (vendor 0x1af4, device 0x1002
 * or 0x1045; in name order) under <@root>/sys/bus/pci/devices. Returns TRUE
 * with *@bdf (newly allocated, "0000:00:02.0") and *@device_id, or FALSE
 * with @error: AGENT_ERROR_NOT_FOUND when there is none (or no such
 * directory: the message says which).
 */
gboolean agent_virtio_pci_find_balloon(const char *root, char **bdf, uint16_t *device_id,
                                       GError **error);
