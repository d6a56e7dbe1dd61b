/* SPDX-License-Identifier: MIT */
/*
 * Reading libvirt's live domain XML: where the host end of our
 * virtio-serial channel is. libvirt only talks to the channel named
 * org.qemu.guest_agent.0 itself, so for org.shrinkd.agent.0 we look up
 *
 *   <channel type='unix'>
 *     <source mode='bind' path='/var/lib/libvirt/qemu/channel/target/domain-ID-NAME/...'/>
 *     <target type='virtio' name='org.shrinkd.agent.0' state='connected'/>
 *   </channel>
 *
 * and connect to the path ourselves. Pure: GLib's GMarkup only.
 */
#pragma once

#include <glib.h>

/*
 * Finds the host-side socket of the virtio channel named @target_name among
 * /domain/devices/channel in @xml. Returns the path (transfer full), or
 * NULL with @error: VS_ERROR_NO_AGENT when there is no such channel, or it
 * is not a unix socket that QEMU listens on (mode='bind' with a path), the
 * message saying which; VS_ERROR_PROTOCOL when @xml does not parse.
 */
char *vs_domain_xml_channel_path(const char *xml, const char *target_name, GError **error);
