/* SPDX-License-Identifier: MIT */
/*
 * The VsBackend over libvirt: any hypervisor URI virsh takes. The balloon
 * through virDomainSetMemoryFlags(VIR_DOMAIN_AFFECT_LIVE) and
 * virDomainMemoryStats ("actual"); the agent through the host end of the
 * domain's org.shrinkd.agent.0 channel, found in its live XML (libvirt
 * itself only talks to org.qemu.guest_agent.0). Migration through
 * virDomainMigrateToURI3 (live, peer to peer) in a thread of its own,
 * followed with virDomainGetJobStats and cancelled with virDomainAbortJob;
 * freeing the backend waits for that thread.
 */
#pragma once

#include "backend.h"

/*
 * Connects to @uri (NULL: $LIBVIRT_DEFAULT_URI or libvirt's default, as
 * virsh does) and finds @domain the way virsh does: by ID if it is a
 * number, by UUID if it is one, else by name. Returns the backend, or NULL
 * with @error: VS_ERROR_NOT_FOUND "domain 'X' not found", VS_ERROR_FAILED
 * with libvirt's message for a connection that fails.
 */
VsBackend *vs_libvirt_backend_new(const char *uri, const char *domain, GError **error);
