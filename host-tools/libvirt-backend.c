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

/*
 * virDomainMigrateToURI3() returns only when the migration has ended, so
 * it runs in a thread of its own while the caller's thread follows the job
 * with virDomainGetJobStats() (libvirt's connections are thread-safe; virsh
 * migrate --verbose does the same). The thread's answer is the migration's
 * fate; the statistics are only the figures.
 */
typedef struct {
  GThread *thread;
  virDomainPtr dom; /* the backend's */
  char *dconnuri;
  virTypedParameterPtr params;
  int nparams;
  unsigned int flags;
  GMutex lock; /* guards what follows */
  gboolean done, ok;
  int error_code;      /* virErrorNumber when !ok */
  char *error_message; /* libvirt's, when !ok */
} Migration;

typedef struct {
  VsBackend parent; /* first */
  virConnectPtr conn;
  virDomainPtr dom;
  Migration *migration; /* NULL until one is started */
  VsMigrationInfo last; /* the last statistics read while it ran */
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

static gpointer migration_thread(gpointer data) {
  Migration *m = data;
  int rc =
      virDomainMigrateToURI3(m->dom, m->dconnuri, m->params, (unsigned int)m->nparams, m->flags);

  g_mutex_lock(&m->lock);
  m->ok = rc == 0;
  if (rc < 0) {
    /* libvirt's last error is per thread: take it here. */
    m->error_code = virGetLastErrorCode();
    m->error_message = g_strdup(virGetLastErrorMessage());
  }
  m->done = TRUE;
  g_mutex_unlock(&m->lock);
  return NULL;
}

static void migration_free(Migration *m) {
  if (!m)
    return;
  /* The call cannot be abandoned: wait for libvirt to return. */
  if (m->thread)
    g_thread_join(m->thread);
  virTypedParamsFree(m->params, m->nparams);
  g_free(m->dconnuri);
  g_free(m->error_message);
  g_mutex_clear(&m->lock);
  g_free(m);
}

static gboolean lv_migrate_start(VsBackend *self, const VsMigrateParams *params, GError **error) {
  LibvirtBackend *b = (LibvirtBackend *)self;
  g_autoptr(GError) local = NULL;
  Migration *m;
  int maxparams = 0;
  gboolean ok = TRUE;

  if (b->migration) {
    g_set_error_literal(error, VS_ERROR, VS_ERROR_INVALID, "a migration was already started");
    return FALSE;
  }
  m = g_new0(Migration, 1);
  g_mutex_init(&m->lock);
  m->dom = b->dom;
  m->dconnuri = g_strdup(params->dest_uri);
  /* Live and peer to peer, as "virsh migrate --live --p2p": libvirtd talks
   * to the destination itself, so this process needs no connection to it. */
  m->flags = VIR_MIGRATE_LIVE | VIR_MIGRATE_PEER2PEER;
  if (params->persistent)
    m->flags |= VIR_MIGRATE_PERSIST_DEST;
  if (params->undefine_source)
    m->flags |= VIR_MIGRATE_UNDEFINE_SOURCE;
  if (params->migrate_uri)
    ok = virTypedParamsAddString(&m->params, &m->nparams, &maxparams, VIR_MIGRATE_PARAM_URI,
                                 params->migrate_uri) == 0;
  if (ok && params->dest_xml)
    ok = virTypedParamsAddString(&m->params, &m->nparams, &maxparams, VIR_MIGRATE_PARAM_DEST_XML,
                                 params->dest_xml) == 0;
  if (ok && params->bandwidth_mib_s)
    ok = virTypedParamsAddULLong(&m->params, &m->nparams, &maxparams, VIR_MIGRATE_PARAM_BANDWIDTH,
                                 params->bandwidth_mib_s) == 0;
  if (!ok) {
    set_libvirt_error(error, VS_ERROR_FAILED, "cannot set the migration parameters");
    migration_free(m);
    return FALSE;
  }
  m->thread = g_thread_try_new("migrate", migration_thread, m, &local);
  if (!m->thread) {
    g_set_error(error, VS_ERROR, VS_ERROR_FAILED, "cannot start the migration thread: %s",
                local->message);
    migration_free(m);
    return FALSE;
  }
  b->migration = m;
  return TRUE;
}

/* Copies the job statistics @params into @out (figures it lacks are left
 * alone). */
static void read_job_stats(virTypedParameterPtr params, int n, gboolean completed,
                           VsMigrationInfo *out) {
  unsigned long long v;

  /* Memory first; the data figures (memory and disks) when there are none. */
  if (virTypedParamsGetULLong(params, n, VIR_DOMAIN_JOB_MEMORY_PROCESSED, &v) == 1 ||
      virTypedParamsGetULLong(params, n, VIR_DOMAIN_JOB_DATA_PROCESSED, &v) == 1)
    out->transferred_bytes = (gint64)MIN(v, (unsigned long long)G_MAXINT64);
  if (virTypedParamsGetULLong(params, n, VIR_DOMAIN_JOB_MEMORY_REMAINING, &v) == 1 ||
      virTypedParamsGetULLong(params, n, VIR_DOMAIN_JOB_DATA_REMAINING, &v) == 1)
    out->remaining_bytes = (gint64)MIN(v, (unsigned long long)G_MAXINT64);
  if (virTypedParamsGetULLong(params, n, VIR_DOMAIN_JOB_MEMORY_TOTAL, &v) == 1 ||
      virTypedParamsGetULLong(params, n, VIR_DOMAIN_JOB_DATA_TOTAL, &v) == 1)
    out->total_bytes = (gint64)MIN(v, (unsigned long long)G_MAXINT64);
  if (virTypedParamsGetULLong(params, n, VIR_DOMAIN_JOB_MEMORY_BPS, &v) == 1)
    out->rate_bytes_per_s = (gint64)MIN(v, (unsigned long long)G_MAXINT64);
  if (virTypedParamsGetULLong(params, n, VIR_DOMAIN_JOB_TIME_ELAPSED, &v) == 1)
    out->total_time_ms = (gint64)MIN(v, (unsigned long long)G_MAXINT64);
  if (virTypedParamsGetULLong(params, n, VIR_DOMAIN_JOB_SETUP_TIME, &v) == 1)
    out->setup_time_ms = (gint64)MIN(v, (unsigned long long)G_MAXINT64);
  /* While it runs, this is the downtime expected; once completed, the real. */
  if (virTypedParamsGetULLong(params, n, VIR_DOMAIN_JOB_DOWNTIME, &v) == 1)
    out->downtime_ms = (gint64)MIN(v, (unsigned long long)G_MAXINT64);
  else if (completed)
    out->downtime_ms = -1;
}

static void copy_figures(VsMigrationInfo *to, const VsMigrationInfo *from) {
  to->transferred_bytes = from->transferred_bytes;
  to->remaining_bytes = from->remaining_bytes;
  to->total_bytes = from->total_bytes;
  to->rate_bytes_per_s = from->rate_bytes_per_s;
  to->total_time_ms = from->total_time_ms;
  to->setup_time_ms = from->setup_time_ms;
  to->downtime_ms = from->downtime_ms;
}

static void set_status(VsMigrationInfo *out, VsMigrationStatus status, const char *word) {
  out->status = status;
  g_strlcpy(out->status_word, word, sizeof(out->status_word));
}

static gboolean lv_migrate_query(VsBackend *self, VsMigrationInfo *out, GError **error) {
  LibvirtBackend *b = (LibvirtBackend *)self;
  Migration *m = b->migration;
  virTypedParameterPtr params = NULL;
  int type = VIR_DOMAIN_JOB_NONE, n = 0;
  gboolean done, ok;
  int code;
  g_autofree char *message = NULL;

  if (!m)
    return TRUE; /* NONE */
  g_mutex_lock(&m->lock);
  done = m->done;
  ok = m->ok;
  code = m->error_code;
  message = g_strdup(m->error_message);
  g_mutex_unlock(&m->lock);

  copy_figures(out, &b->last);
  if (!done) {
    /* Only figures: a failure here (a driver without job statistics, the
     * job just ended) leaves the fate to the thread. */
    if (virDomainGetJobStats(b->dom, &type, &params, &n, 0) < 0) {
      g_debug("%s: no job statistics: %s", self->name, virGetLastErrorMessage());
      type = VIR_DOMAIN_JOB_NONE;
    }
    if (type == VIR_DOMAIN_JOB_NONE) {
      /* The call has not reached the job yet, or the job is over and the
       * call not yet back. */
      set_status(out, b->last.status == VS_MIGRATION_NONE ? VS_MIGRATION_SETUP : b->last.status,
                 b->last.status == VS_MIGRATION_NONE ? "setup" : b->last.status_word);
    } else {
      read_job_stats(params, n, FALSE, out);
      set_status(out, VS_MIGRATION_ACTIVE, "active");
      copy_figures(&b->last, out);
      set_status(&b->last, VS_MIGRATION_ACTIVE, "active");
    }
    virTypedParamsFree(params, n);
    return TRUE;
  }
  if (ok) {
    set_status(out, VS_MIGRATION_COMPLETED, "completed");
    /* The figures of the whole job, if the domain is still here to give
     * them (a transient domain is gone once it migrated). */
    if (virDomainGetJobStats(b->dom, &type, &params, &n,
                             VIR_DOMAIN_JOB_STATS_COMPLETED |
                                 VIR_DOMAIN_JOB_STATS_KEEP_COMPLETED) == 0 &&
        type == VIR_DOMAIN_JOB_COMPLETED) {
      read_job_stats(params, n, TRUE, out);
    } else {
      /* The last figures seen while it ran: all was sent since, and only
       * the expected downtime was known. */
      g_debug("%s: no statistics of the completed job: %s", self->name, virGetLastErrorMessage());
      if (out->remaining_bytes > 0)
        out->remaining_bytes = 0;
      out->downtime_ms = -1;
    }
    virTypedParamsFree(params, n);
  } else if (code == VIR_ERR_OPERATION_ABORTED) {
    set_status(out, VS_MIGRATION_CANCELLED, "cancelled");
    out->downtime_ms = -1;
  } else {
    set_status(out, VS_MIGRATION_FAILED, "failed");
    out->downtime_ms = -1;
    out->error = g_steal_pointer(&message);
  }
  return TRUE;
}

static gboolean lv_migrate_cancel(VsBackend *self, GError **error) {
  LibvirtBackend *b = (LibvirtBackend *)self;

  if (virDomainAbortJob(b->dom) < 0) {
    set_libvirt_error(error, VS_ERROR_FAILED, "cannot cancel the migration");
    return FALSE;
  }
  return TRUE;
}

static void lv_free(VsBackend *self) {
  LibvirtBackend *b = (LibvirtBackend *)self;

  migration_free(b->migration);
  vs_migration_info_clear(&b->last);

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
    .migrate_start = lv_migrate_start,
    .migrate_query = lv_migrate_query,
    .migrate_cancel = lv_migrate_cancel,
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
  vs_migration_info_init(&b->last);
  b->parent.name = g_strdup_printf("domain '%s'", virDomainGetName(dom));
  b->parent.guest = g_strdup(virDomainGetName(dom));
  b->conn = g_steal_pointer(&conn);
  b->dom = g_steal_pointer(&dom);
  return &b->parent;
}
