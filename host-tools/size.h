/* SPDX-License-Identifier: MIT */
/*
 * Memory sizes as virsh reads them, and sizes for people.
 */
#pragma once

#include <glib.h>

/*
 * Parses @text the way `virsh setmem` reads its size: a whole decimal number
 * and an optional unit suffix, case-insensitive: none = KiB (virsh's default
 * for setmem); "b", "byte", "bytes" = bytes; "k", "m", "g", "t", "p", "e",
 * alone or followed by "iB", are powers of 1024; "KB", "MB", "GB", "TB",
 * "PB", "EB" are powers of 1000. The result is rounded up to a whole KiB, as
 * virsh does (libvirt takes KiB).
 * Returns TRUE with *@out_bytes (> 0, a multiple of 1024, at most
 * G_MAXINT64 rounded down to KiB), or FALSE with @error (VS_ERROR_INVALID)
 * naming @text.
 */
gboolean vs_parse_size(const char *text, guint64 *out_bytes, GError **error);

/*
 * Parses a whole number between @min and @max for the option @what (used in
 * the error message, e.g. "--deadline"). Returns TRUE with *@out, or FALSE
 * with @error (VS_ERROR_INVALID).
 */
gboolean vs_parse_uint(const char *text, const char *what, guint64 min, guint64 max, guint64 *out,
                       GError **error);

/*
 * Writes @bytes for people into @buf (@size >= 16 is always enough):
 * "512 B", "1.50 KiB", "64.0 MiB", "384 MiB", "2.00 GiB". Returns @buf.
 */
char *vs_format_bytes(guint64 bytes, char *buf, gsize size);

/* As vs_format_bytes() for a signed amount: "-1.50 MiB". Returns @buf. */
char *vs_format_signed_bytes(gint64 bytes, char *buf, gsize size);
