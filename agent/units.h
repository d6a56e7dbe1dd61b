/* SPDX-License-Identifier: MIT */
/*
 * Sizes as people write them, for shrinkctl: parsing "64M" and printing
 * "64.0 MiB". Suffixes are binary (K = 1024).
 */
#pragma once

#include <glib.h>
#include <stdint.h>

/*
 * Parses @text: a decimal number, optionally with a fraction ("1.5"), then
 * optionally K, M, G or T (either case), optionally followed by "iB" or
 * "B"; no suffix means bytes ("4096", "4096B"). A fraction is rounded down
 * to whole bytes and needs a suffix that makes it whole enough to matter.
 * Returns TRUE with *@out_bytes, or FALSE with @error (AGENT_ERROR_INVALID)
 * for anything else: empty, negative, junk, or a value above INT64_MAX
 * (JSON carries signed 64-bit integers).
 */
gboolean agent_parse_size(const char *text, uint64_t *out_bytes, GError **error);

/*
 * Writes @bytes for people into @buf (@size >= 16 is always enough):
 * "512 B", "1.5 KiB", "64.0 MiB", "2.00 GiB"... Returns @buf.
 */
char *agent_format_bytes(uint64_t bytes, char *buf, size_t size);
