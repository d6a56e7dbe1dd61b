/* SPDX-License-Identifier: MIT */
/*
 * virt-shrink's two GError domains.
 *
 * VS_ERROR is for our own failures and those of the things we talk to
 * (hypervisor, sockets, timeouts). VS_AGENT_ERROR carries an error the
 * guest agent answered with: its code is the protocol's error class, and
 * its message the agent's "desc".
 */
#pragma once

#include <glib.h>

typedef enum {
  VS_ERROR_FAILED,      /* anything else, e.g. the hypervisor refused */
  VS_ERROR_INVALID,     /* bad input: a size, an option value */
  VS_ERROR_NOT_FOUND,   /* no such domain */
  VS_ERROR_NO_AGENT,    /* no agent channel, cannot connect, or no answer to the sync */
  VS_ERROR_TIMEOUT,     /* a peer did not answer in time */
  VS_ERROR_CLOSED,      /* a peer closed the connection */
  VS_ERROR_PROTOCOL,    /* a peer broke its protocol (not JSON, too large, too deep) */
  VS_ERROR_NOT_RUNNING, /* the domain is not running */
} VsErrorCode;

/* The guest agent's error classes (docs/channel-protocol.md). */
typedef enum {
  VS_AGENT_ERROR_GENERIC,           /* "GenericError" */
  VS_AGENT_ERROR_COMMAND_NOT_FOUND, /* "CommandNotFound" */
  VS_AGENT_ERROR_INVALID_PARAMETER, /* "InvalidParameter" */
  VS_AGENT_ERROR_COMMAND_DISABLED,  /* "CommandDisabled" */
  VS_AGENT_ERROR_BUSY,              /* "Busy" */
  VS_AGENT_ERROR_OTHER,             /* a class this version does not know */
} VsAgentErrorCode;

#define VS_ERROR       (vs_error_quark())
#define VS_AGENT_ERROR (vs_agent_error_quark())

/* The quark of VS_ERROR. Thread-safe, never fails. */
GQuark vs_error_quark(void);

/* The quark of VS_AGENT_ERROR. Thread-safe, never fails. */
GQuark vs_agent_error_quark(void);

/* The VS_AGENT_ERROR code of the error class @klass (any string, NULL
 * counts as "GenericError"). Unknown classes give VS_AGENT_ERROR_OTHER. */
VsAgentErrorCode vs_agent_error_from_class(const char *klass);

/*
 * A copy of @text (which came from the guest) that is safe to print on a
 * terminal: control characters and bytes that are not UTF-8 become '?', and
 * more than @max_chars characters are cut with "...". Transfer full; NULL
 * gives "".
 */
char *vs_printable(const char *text, gsize max_chars);

/* The protocol's name of @code ("Busy"...); "Other" for VS_AGENT_ERROR_OTHER.
 * Static string. */
const char *vs_agent_error_class_name(VsAgentErrorCode code);
