/* SPDX-License-Identifier: MIT */
/*
 * The agent's two GError domains.
 *
 * AGENT_ERROR is for the daemon's own failures (configuration, files, busy
 * round queue, permissions). AGENT_PROTO_ERROR carries a proto_error code as
 * its GError code, so that a failure caused by a peer (duplicate id, unknown
 * id, too many shrinkers) travels up to the server unchanged and becomes the
 * typed ERROR message the peer receives.
 */
#pragma once

#include <glib.h>

typedef enum {
  AGENT_ERROR_FAILED,     /* anything else */
  AGENT_ERROR_INVALID,    /* malformed input or data (a file, an argument) */
  AGENT_ERROR_NOT_FOUND,  /* a file or field that should be there is not */
  AGENT_ERROR_BUSY,       /* a bounded queue is full */
  AGENT_ERROR_PERMISSION, /* the caller may not do that */
  AGENT_ERROR_IN_USE,     /* another shrinkd listens on the socket */
} AgentErrorCode;

#define AGENT_ERROR       (agent_error_quark())
#define AGENT_PROTO_ERROR (agent_proto_error_quark())

/* The quark of AGENT_ERROR. Thread-safe, never fails. */
GQuark agent_error_quark(void);

/* The quark of AGENT_PROTO_ERROR, whose codes are proto_error values. */
GQuark agent_proto_error_quark(void);
