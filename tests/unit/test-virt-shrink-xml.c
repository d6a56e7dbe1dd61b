/* SPDX-License-Identifier: MIT */
/*
 * Finding our channel's host-side socket in libvirt's live domain XML. The
 * main fixture is the shape libvirt 9.0 (Debian 12) gives for the domain of
 * the VM recipe with both agent channels: the paths libvirt generates under
 * /var/lib/libvirt/qemu/channel/target/domain-ID-NAME/, and the state
 * attributes of the live XML.
 */
#include "cunit-run.h"
#include <string.h>

#include "domain-xml.h"
#include "vs-error.h"

#define CHAN "org.shrinkd.agent.0"

static const char live_xml[] =
    "<domain type='qemu' id='3'>\n"
    "  <name>shrinkd-test</name>\n"
    "  <uuid>0d4ad6f3-8c5e-4a52-9a8c-3b2f4c1e7d10</uuid>\n"
    "  <memory unit='KiB'>1048576</memory>\n"
    "  <currentMemory unit='KiB'>1048576</currentMemory>\n"
    "  <vcpu placement='static'>1</vcpu>\n"
    "  <resource>\n    <partition>/machine</partition>\n  </resource>\n"
    "  <os>\n    <type arch='x86_64' machine='pc-i440fx-7.2'>hvm</type>\n"
    "    <kernel>/tmp/shrink-vm/k/boot/vmlinuz-6.1.0-27-cloud-amd64</kernel>\n"
    "    <cmdline>console=ttyS0 panic=-1 quiet</cmdline>\n    <boot dev='hd'/>\n  </os>\n"
    "  <cpu mode='custom' match='exact' check='none'>\n    <model "
    "fallback='forbid'>qemu64</model>\n"
    "  </cpu>\n"
    "  <clock offset='utc'/>\n"
    "  <devices>\n"
    "    <emulator>/usr/bin/qemu-system-x86_64</emulator>\n"
    "    <controller type='virtio-serial' index='0'>\n      <alias name='virtio-serial0'/>\n"
    "      <address type='pci' domain='0x0000' bus='0x00' slot='0x03' function='0x0'/>\n"
    "    </controller>\n"
    "    <serial type='unix'>\n"
    "      <source mode='bind' path='/tmp/shrink-vm/lvsock/shrinkd-test.serial'/>\n"
    "      <target type='isa-serial' port='0'>\n        <model name='isa-serial'/>\n"
    "      </target>\n      <alias name='serial0'/>\n    </serial>\n"
    "    <console type='unix'>\n"
    "      <source mode='bind' path='/tmp/shrink-vm/lvsock/shrinkd-test.serial'/>\n"
    "      <target type='serial' port='0'/>\n      <alias name='serial0'/>\n    </console>\n"
    "    <channel type='unix'>\n"
    "      <source mode='bind' "
    "path='/var/lib/libvirt/qemu/channel/target/domain-3-shrinkd-test/org.qemu.guest_agent.0'/>\n"
    "      <target type='virtio' name='org.qemu.guest_agent.0' state='disconnected'/>\n"
    "      <alias name='channel0'/>\n"
    "      <address type='virtio-serial' controller='0' bus='0' port='1'/>\n"
    "    </channel>\n"
    "    <channel type='unix'>\n"
    "      <source mode='bind' "
    "path='/var/lib/libvirt/qemu/channel/target/domain-3-shrinkd-test/org.shrinkd.agent.0'/>\n"
    "      <target type='virtio' name='org.shrinkd.agent.0' state='connected'/>\n"
    "      <alias name='channel1'/>\n"
    "      <address type='virtio-serial' controller='0' bus='0' port='2'/>\n"
    "    </channel>\n"
    "    <memballoon model='virtio'>\n      <stats period='2'/>\n"
    "      <alias name='balloon0'/>\n"
    "      <address type='pci' domain='0x0000' bus='0x00' slot='0x04' function='0x0'/>\n"
    "    </memballoon>\n"
    "  </devices>\n"
    "  <seclabel type='dynamic' model='dac' relabel='yes'>\n"
    "    <label>+0:+0</label>\n    <imagelabel>+0:+0</imagelabel>\n  </seclabel>\n"
    "</domain>\n";

static void test_live_xml(void) {
  g_autoptr(GError) error = NULL;
  g_autofree char *path = vs_domain_xml_channel_path(live_xml, CHAN, &error);

  CU_ASSERT_PTR_NULL(error);
  CU_ASSERT_STRING_EQUAL(path, "/var/lib/libvirt/qemu/channel/target/domain-3-shrinkd-test/" CHAN);
  g_free(path);
  /* The same function finds the QEMU guest agent's channel. */
  path = vs_domain_xml_channel_path(live_xml, "org.qemu.guest_agent.0", NULL);
  CU_ASSERT_PTR_NOT_NULL(path && strstr(path, "/org.qemu.guest_agent.0"));
}

/* Expects @xml to be refused with @code and a message containing @words. */
static void refused(const char *xml, int code, const char *words) {
  g_autoptr(GError) error = NULL;
  char *path = vs_domain_xml_channel_path(xml, CHAN, &error);

  CU_ASSERT_PTR_NULL(path);
  g_free(path);
  CU_ASSERT(g_error_matches(error, VS_ERROR, code));
  if (error && !strstr(error->message, words))
    fprintf(stderr, "\n  message \"%s\" lacks \"%s\"\n", error->message, words);
  CU_ASSERT_PTR_NOT_NULL(error && strstr(error->message, words));
}

#define DOM(devices) "<domain type='kvm'><name>d</name><devices>" devices "</devices></domain>"

static void test_refusals(void) {
  refused(DOM(""), VS_ERROR_NO_AGENT, "no channel org.shrinkd.agent.0 in the domain XML (add");
  refused(DOM("<channel type='unix'><source mode='bind' path='/x'/>"
              "<target type='virtio' name='org.qemu.guest_agent.0'/></channel>"),
          VS_ERROR_NO_AGENT, "no channel");
  refused(DOM("<channel type='pty'><source path='/dev/pts/3'/>"
              "<target type='virtio' name='" CHAN "'/></channel>"),
          VS_ERROR_NO_AGENT, "of type 'pty', not a unix socket");
  refused(DOM("<channel type='unix'><source mode='connect' path='/x'/>"
              "<target type='virtio' name='" CHAN "'/></channel>"),
          VS_ERROR_NO_AGENT, "source mode 'connect'");
  /* An inactive domain's XML: no path yet. */
  refused(DOM("<channel type='unix'><target type='virtio' name='" CHAN "'/></channel>"),
          VS_ERROR_NO_AGENT, "no path");
  refused(DOM("<channel type='unix'><source mode='bind' path='/x'/>"
              "<target type='guestfwd' name='" CHAN "'/></channel>"),
          VS_ERROR_NO_AGENT, "not a virtio channel");
  refused("<domain><devices><channel", VS_ERROR_PROTOCOL, "cannot read the domain XML");
  refused("not xml at all", VS_ERROR_PROTOCOL, "cannot read the domain XML");
  refused("", VS_ERROR_PROTOCOL, "cannot read the domain XML");
}

static void test_only_devices_channels_count(void) {
  g_autoptr(GError) error = NULL;
  g_autofree char *path = NULL;

  /* A <channel> elsewhere (metadata) is not a device. */
  refused("<domain><metadata><channel type='unix'><source mode='bind' path='/meta'/>"
          "<target type='virtio' name='" CHAN "'/></channel></metadata><devices/></domain>",
          VS_ERROR_NO_AGENT, "no channel");
  /* The first matching channel wins; attributes in any order; entities. */
  path =
      vs_domain_xml_channel_path(DOM("<channel type='unix'><target name='" CHAN "' type='virtio'/>"
                                     "<source path='/run/a&amp;b.sock' mode='bind'/></channel>"
                                     "<channel type='unix'><source mode='bind' path='/second'/>"
                                     "<target type='virtio' name='" CHAN "'/></channel>"),
                                 CHAN, &error);
  CU_ASSERT_PTR_NULL(error);
  CU_ASSERT_STRING_EQUAL(path, "/run/a&b.sock");
}

int main(void) {
  CU_pSuite s;

  if (CU_initialize_registry() != CUE_SUCCESS)
    return 1;
  s = CU_add_suite("virt-shrink domain XML", NULL, NULL);
  CU_add_test(s, "libvirt 9.0 live XML with both agent channels", test_live_xml);
  CU_add_test(s, "missing or unusable channels, broken XML", test_refusals);
  CU_add_test(s, "only /domain/devices/channel counts", test_only_devices_channels_count);
  return cunit_run_all();
}
