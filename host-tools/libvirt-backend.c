/* SPDX-License-Identifier: MIT */
/*
 * The libvirt backend (see libvirt-backend.h).
 */
#include "libvirt-backend.h"

#include <stdlib.h>
#include <string.h>

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include "channel-client.h"
#include "domain-xml.h"
#include "vs-error.h"

G_DEFINE_AUTOPTR_CLEANUP_FUNC(virConnect, virConnectClose)
G_DEFINE_AUTOPTR_CLEANUP_FUNC(virDomain, virDomainFree)

typedef struct {
  VsBackend parent; /* first */
  virConnectPtr conn;
  virDomainPtr dom;
} LibvirtBackend;

/* libvirt prints every error to stderr unless told otherwise; we report
 * them ourselves, once, through GError. */
static void quiet_errors(void *data, virErrorPtr err) {}

/* Sets @error from libvirt's last error, after "@what: ". */
static void set_libvirt_error(GError **error, VsErrorCode code, const char *what) {
  g_set_error(error, VS_ERROR, code, "%s: %s", what, virGetLastErrorMessage());
}

static gboolean lv_get_memory(VsBackend *self, VsMemory *out, GError **error) {
  LibvirtBackend *b = (LibvirtBackend *)self;
  virDomainMemoryStatStruct stats[VIR_DOMAIN_MEMORY_STAT_NR];
  unsigned long max_kib;
  int n;

  n = virDomainMemoryStats(b->dom, stats, VIR_DOMAIN_MEMORY_STAT_NR, 0);
  if (n < 0) {
    set_libvirt_error(error, VS_ERROR_FAILED, "cannot read the balloon");
    return FALSE;
  }
  for (int i = 0; i < n; i++) {
    guint64 bytes = (guint64)stats[i].val * 1024;

    switch (stats[i].tag) {
    case VIR_DOMAIN_MEMORY_STAT_ACTUAL_BALLOON: out->actual_bytes = bytes; break;
    case VIR_DOMAIN_MEMORY_STAT_AVAILABLE: out->available_bytes = bytes; break;
    case VIR_DOMAIN_MEMORY_STAT_UNUSED: out->unused_bytes = bytes; break;
    case VIR_DOMAIN_MEMORY_STAT_USABLE: out->usable_bytes = bytes; break;
    case VIR_DOMAIN_MEMORY_STAT_RSS: out->rss_bytes = bytes; break;
    default: break;
    }
  }
  if (out->actual_bytes == 0) {
    /* No balloon statistics (no balloon device, or a driver without
     * them): the domain's current memory is what the guest has. */
    virDomainInfo info;

    if (virDomainGetInfo(b->dom, &info) < 0) {
      set_libvirt_error(error, VS_ERROR_FAILED, "cannot read the domain's memory");
      return FALSE;
    }
    out->actual_bytes = (guint64)info.memory * 1024;
  }
  max_kib = virDomainGetMaxMemory(b->dom);
  if (max_kib > 0)
    out->max_bytes = (guint64)max_kib * 1024;
  return TRUE;
}

static gboolean lv_set_memory(VsBackend *self, guint64 target_bytes, GError **error) {
  LibvirtBackend *b = (LibvirtBackend *)self;
  guint64 kib = (target_bytes + 1023) / 1024;

  if (kib > G_MAXULONG) {
    g_set_error_literal(error, VS_ERROR, VS_ERROR_INVALID, "size too large for libvirt");
    return FALSE;
  }
  if (virDomainSetMemoryFlags(b->dom, (unsigned long)kib, VIR_DOMAIN_AFFECT_LIVE) < 0) {
    set_libvirt_error(error, VS_ERROR_FAILED, "cannot set the balloon");
    return FALSE;
  }
  return TRUE;
}

static const char *state_name(int state) {
  switch (state) {
  case VIR_DOMAIN_NOSTATE: return "no state";
  case VIR_DOMAIN_RUNNING: return "running";
  case VIR_DOMAIN_BLOCKED: return "blocked";
  case VIR_DOMAIN_PAUSED: return "paused";
  case VIR_DOMAIN_SHUTDOWN: return "shutting down";
  case VIR_DOMAIN_SHUTOFF: return "shut off";
  case VIR_DOMAIN_CRASHED: return "crashed";
  case VIR_DOMAIN_PMSUSPENDED: return "suspended";
  default: return "unknown";
  }
}

static gboolean lv_get_state(VsBackend *self, gboolean *running, char **state, GError **error) {
  LibvirtBackend *b = (LibvirtBackend *)self;
  int st, reason;

  if (virDomainGetState(b->dom, &st, &reason, 0) < 0) {
    set_libvirt_error(error, VS_ERROR_FAILED, "cannot read the domain's state");
    return FALSE;
  }
  /* "blocked" is a running guest waiting on a resource. */
  *running = st == VIR_DOMAIN_RUNNING || st == VIR_DOMAIN_BLOCKED;
  *state = g_strdup(state_name(st));
  return TRUE;
}

static VsAgent *lv_open_agent(VsBackend *self, guint timeout_ms, GError **error) {
  LibvirtBackend *b = (LibvirtBackend *)self;
  g_autoptr(GError) local = NULL;
  g_autofree char *path = NULL;
  char *xml;
  VsChannel *ch;

  /* The live XML: libvirt fills in the socket path it created. */
  xml = virDomainGetXMLDesc(b->dom, 0);
  if (!xml) {
    set_libvirt_error(error, VS_ERROR_FAILED, "cannot read the domain XML");
    return NULL;
  }
  path = vs_domain_xml_channel_path(xml, VS_CHANNEL_NAME, &local);
  free(xml);
  if (!path) {
    g_propagate_prefixed_error(error, g_steal_pointer(&local), "%s: ", self->name);
    return NULL;
  }
  ch = vs_channel_open(path, timeout_ms, error);
  return ch ? vs_channel_into_agent(ch) : NULL;
}

static void lv_free(VsBackend *self) {
  LibvirtBackend *b = (LibvirtBackend *)self;

  if (b->dom)
    virDomainFree(b->dom);
  if (b->conn)
    virConnectClose(b->conn);
  g_free(b);
}

static const VsBackendOps libvirt_backend_ops = {
    .get_memory = lv_get_memory,
    .set_memory = lv_set_memory,
    .get_state = lv_get_state,
    .open_agent = lv_open_agent,
    .free = lv_free,
};

/* Looks @name up as virsh's virshLookupDomainBy() does: ID, UUID, name. */
static virDomainPtr lookup_domain(virConnectPtr conn, const char *name) {
  virDomainPtr dom = NULL;
  guint64 id;

  if (g_ascii_string_to_unsigned(name, 10, 0, G_MAXINT, &id, NULL))
    dom = virDomainLookupByID(conn, (int)id);
  if (!dom && strlen(name) == VIR_UUID_STRING_BUFLEN - 1)
    dom = virDomainLookupByUUIDString(conn, name);
  if (!dom)
    dom = virDomainLookupByName(conn, name);
  return dom;
}

VsBackend *vs_libvirt_backend_new(const char *uri, const char *domain, GError **error) {
  g_autoptr(virConnect) conn = NULL;
  g_autoptr(virDomain) dom = NULL;
  LibvirtBackend *b;

  virSetErrorFunc(NULL, quiet_errors);
  if (virInitialize() < 0) {
    set_libvirt_error(error, VS_ERROR_FAILED, "cannot initialise libvirt");
    return NULL;
  }
  conn = virConnectOpenAuth(uri, virConnectAuthPtrDefault, 0);
  if (!conn) {
    g_autofree char *what = g_strdup_printf("cannot connect to the hypervisor%s%s%s",
                                            uri ? " at '" : "", uri ? uri : "", uri ? "'" : "");

    set_libvirt_error(error, VS_ERROR_FAILED, what);
    return NULL;
  }
  dom = lookup_domain(conn, domain);
  if (!dom) {
    virErrorPtr err = virGetLastError();

    if (!err || err->code == VIR_ERR_NO_DOMAIN)
      g_set_error(error, VS_ERROR, VS_ERROR_NOT_FOUND, "domain '%s' not found", domain);
    else
      set_libvirt_error(error, VS_ERROR_FAILED, "cannot look the domain up");
    return NULL;
  }
  b = g_new0(LibvirtBackend, 1);
  b->parent.ops = &libvirt_backend_ops;
  b->parent.name = g_strdup_printf("domain '%s'", virDomainGetName(dom));
  b->parent.guest = g_strdup(virDomainGetName(dom));
  b->conn = g_steal_pointer(&conn);
  b->dom = g_steal_pointer(&dom);
  return &b->parent;
}
