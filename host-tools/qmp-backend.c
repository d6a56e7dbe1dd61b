/* SPDX-License-Identifier: MIT */
/*
 * The plain-QEMU backend (see qmp-backend.h).
 */
#include "qmp-backend.h"

#include "channel-client.h"
#include "qmp.h"
#include "vs-error.h"

typedef struct {
  VsBackend parent; /* first */
  VsQmp *qmp;
  char *channel_path;
  guint64 max_bytes; /* 0 until known */
} QmpBackend;

static gboolean qmp_get_memory(VsBackend *self, VsMemory *out, GError **error) {
  QmpBackend *b = (QmpBackend *)self;

  if (!vs_qmp_query_balloon(b->qmp, &out->actual_bytes, VS_QMP_TIMEOUT_MS, error))
    return FALSE;
  /* The boot size does not change; old QEMUs lack the command, which only
   * costs us the figure. */
  if (b->max_bytes == 0) {
    g_autoptr(GError) ignored = NULL;

    if (!vs_qmp_query_memory_size(b->qmp, &b->max_bytes, VS_QMP_TIMEOUT_MS, &ignored))
      b->max_bytes = 0;
  }
  out->max_bytes = b->max_bytes;
  return TRUE;
}

static gboolean qmp_set_memory(VsBackend *self, guint64 target_bytes, GError **error) {
  return vs_qmp_balloon(((QmpBackend *)self)->qmp, target_bytes, VS_QMP_TIMEOUT_MS, error);
}

static gboolean qmp_get_state(VsBackend *self, gboolean *running, char **state, GError **error) {
  return vs_qmp_query_status(((QmpBackend *)self)->qmp, running, state, VS_QMP_TIMEOUT_MS, error);
}

static VsAgent *qmp_open_agent(VsBackend *self, guint timeout_ms, GError **error) {
  QmpBackend *b = (QmpBackend *)self;
  VsChannel *ch;

  if (!b->channel_path) {
    g_set_error_literal(error, VS_ERROR, VS_ERROR_NO_AGENT,
                        "no agent channel given (--channel SOCKET)");
    return NULL;
  }
  ch = vs_channel_open(b->channel_path, timeout_ms, error);
  return ch ? vs_channel_into_agent(ch) : NULL;
}

static void qmp_free(VsBackend *self) {
  QmpBackend *b = (QmpBackend *)self;

  vs_qmp_free(b->qmp);
  g_free(b->channel_path);
  g_free(b);
}

static const VsBackendOps qmp_backend_ops = {
    .get_memory = qmp_get_memory,
    .set_memory = qmp_set_memory,
    .get_state = qmp_get_state,
    .open_agent = qmp_open_agent,
    .free = qmp_free,
};

VsBackend *vs_qmp_backend_new(const char *qmp_path, const char *channel_path, GError **error) {
  VsQmp *qmp = vs_qmp_open(qmp_path, VS_QMP_TIMEOUT_MS, error);
  QmpBackend *b;

  if (!qmp)
    return NULL;
  b = g_new0(QmpBackend, 1);
  b->parent.ops = &qmp_backend_ops;
  b->parent.name = g_strdup_printf("QEMU at %s", qmp_path);
  b->parent.guest = g_strdup(qmp_path);
  b->qmp = qmp;
  b->channel_path = g_strdup(channel_path);
  return &b->parent;
}
