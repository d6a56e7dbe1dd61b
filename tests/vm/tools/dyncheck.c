/* SPDX-License-Identifier: MIT
 *
 * dyncheck: a dynamically linked program using the same libraries as shrinkd
 * (GLib, GIO, json-glib). If it prints "DYNCHECK-OK" in the guest, the
 * initramfs carries a working loader and library set for the real binaries.
 */
#include <gio/gio.h>
#include <json-glib/json-glib.h>
#include <stdio.h>

int main(void)
{
    g_autoptr(JsonParser) parser = json_parser_new();
    g_autoptr(GError) err = NULL;
    g_autoptr(GSocketAddress) addr = g_unix_socket_address_new("/run/dyncheck.sock");

    if (!json_parser_load_from_data(parser, "{\"answer\": 42}", -1, &err)) {
        fprintf(stderr, "dyncheck: %s\n", err->message);
        return 1;
    }
    JsonObject *o = json_node_get_object(json_parser_get_root(parser));
    printf("DYNCHECK-OK glib=%u.%u.%u answer=%" G_GINT64_FORMAT " gio=%s\n",
           glib_major_version, glib_minor_version, glib_micro_version,
           json_object_get_int_member(o, "answer"),
           G_IS_UNIX_SOCKET_ADDRESS(addr) ? "yes" : "no");
    return 0;
}
