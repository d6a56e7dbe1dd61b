/* SPDX-License-Identifier: MIT */
/*
 * Sizes (see size.h). The suffix rules are libvirt's virScaleInteger(), so
 * that "virt-shrink setmem D 384M" means what "virsh setmem D 384M" means.
 */
#include "size.h"

#include <string.h>

#include "vs-error.h"

/* The multiplier of @suffix (already known non-empty), or 0 if unknown. */
static guint64 suffix_scale(const char *suffix) {
  guint64 base, scale = 1;
  int power;

  if (g_ascii_strcasecmp(suffix, "b") == 0 || g_ascii_strcasecmp(suffix, "byte") == 0 ||
      g_ascii_strcasecmp(suffix, "bytes") == 0)
    return 1;
  if (suffix[1] == '\0' || g_ascii_strcasecmp(suffix + 1, "iB") == 0)
    base = 1024;
  else if (g_ascii_tolower(suffix[1]) == 'b' && suffix[2] == '\0')
    base = 1000;
  else
    return 0;
  switch (g_ascii_tolower(suffix[0])) {
  case 'k': power = 1; break;
  case 'm': power = 2; break;
  case 'g': power = 3; break;
  case 't': power = 4; break;
  case 'p': power = 5; break;
  case 'e': power = 6; break;
  default: return 0;
  }
  while (power-- > 0)
    scale *= base;
  return scale;
}

gboolean vs_parse_size(const char *text, guint64 *out_bytes, GError **error) {
  const char *p = text;
  guint64 value = 0, scale = 1024, kib;

  if (!g_ascii_isdigit(*p))
    goto invalid;
  for (; g_ascii_isdigit(*p); p++) {
    if (value > (G_MAXUINT64 - 9) / 10)
      goto too_big;
    value = value * 10 + (guint64)(*p - '0');
  }
  if (*p != '\0' && (scale = suffix_scale(p)) == 0)
    goto invalid;
  if (value > (guint64)G_MAXINT64 / scale)
    goto too_big;
  value *= scale;
  if (value == 0) {
    g_set_error(error, VS_ERROR, VS_ERROR_INVALID, "size \"%s\" is zero", text);
    return FALSE;
  }
  kib = value / 1024 + (value % 1024 != 0);
  if (kib > (guint64)G_MAXINT64 / 1024)
    goto too_big;
  *out_bytes = kib * 1024;
  return TRUE;

invalid:
  g_set_error(error, VS_ERROR, VS_ERROR_INVALID,
              "invalid size \"%s\" (examples: 393216 (KiB), 384M, 1G, 402653184b)", text);
  return FALSE;
too_big:
  g_set_error(error, VS_ERROR, VS_ERROR_INVALID, "size \"%s\" is too large", text);
  return FALSE;
}

gboolean vs_parse_uint(const char *text, const char *what, guint64 min, guint64 max, guint64 *out,
                       GError **error) {
  if (!g_ascii_string_to_unsigned(text, 10, min, max, out, NULL)) {
    g_set_error(error, VS_ERROR, VS_ERROR_INVALID,
                "%s wants a whole number from %" G_GUINT64_FORMAT " to %" G_GUINT64_FORMAT
                ", not \"%s\"",
                what, min, max, text);
    return FALSE;
  }
  return TRUE;
}

char *vs_format_bytes(guint64 bytes, char *buf, gsize size) {
  static const char *const units[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  double v = (double)bytes;
  guint64 unit = 1;
  int u = -1;

  if (bytes < 1024) {
    g_snprintf(buf, size, "%" G_GUINT64_FORMAT " B", bytes);
    return buf;
  }
  while (v >= 1024 && u < (int)G_N_ELEMENTS(units) - 1) {
    v /= 1024;
    unit *= 1024;
    u++;
  }
  /* Exact amounts (what people type) print exactly: "64 MiB", not "64.0 MiB". */
  if (bytes % unit == 0)
    g_snprintf(buf, size, "%" G_GUINT64_FORMAT " %s", bytes / unit, units[u]);
  else
    g_snprintf(buf, size, v < 10 ? "%.2f %s" : v < 100 ? "%.1f %s" : "%.0f %s", v, units[u]);
  return buf;
}

char *vs_format_signed_bytes(gint64 bytes, char *buf, gsize size) {
  char tmp[32];
  guint64 mag = bytes < 0 ? (guint64)0 - (guint64)bytes : (guint64)bytes;

  g_snprintf(buf, size, "%s%s", bytes < 0 ? "-" : "", vs_format_bytes(mag, tmp, sizeof(tmp)));
  return buf;
}
