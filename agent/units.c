/* SPDX-License-Identifier: MIT */
/*
 * Sizes for people (see units.h).
 */
#include "units.h"

#include <string.h>

#include "errors.h"

gboolean agent_parse_size(const char *text, uint64_t *out_bytes, GError **error) {
  const char *p = text;
  uint64_t whole = 0, frac = 0, frac_scale = 1, mult = 1, bytes;
  gboolean digits = FALSE;

  for (; g_ascii_isdigit(*p); p++) {
    if (whole > (UINT64_MAX - 9) / 10)
      goto too_big;
    whole = whole * 10 + (uint64_t)(*p - '0');
    digits = TRUE;
  }
  if (*p == '.') {
    p++;
    for (; g_ascii_isdigit(*p); p++) {
      /* Six decimals are plenty (a millionth of a TiB is about 1 MiB) and
       * keep frac * mult below 2^61. */
      if (frac_scale < 1000000) {
        frac = frac * 10 + (uint64_t)(*p - '0');
        frac_scale *= 10;
      }
      digits = TRUE;
    }
  }
  if (!digits)
    goto invalid;
  switch (g_ascii_toupper(*p)) {
  case 'K':
    mult = UINT64_C(1) << 10;
    p++;
    break;
  case 'M':
    mult = UINT64_C(1) << 20;
    p++;
    break;
  case 'G':
    mult = UINT64_C(1) << 30;
    p++;
    break;
  case 'T':
    mult = UINT64_C(1) << 40;
    p++;
    break;
  default: break;
  }
  if (mult > 1 &&
      (strcmp(p, "iB") == 0 || strcmp(p, "ib") == 0 || strcmp(p, "B") == 0 || strcmp(p, "b") == 0))
    p += strlen(p);
  else if (mult == 1 && (strcmp(p, "B") == 0 || strcmp(p, "b") == 0))
    p++;
  if (*p != '\0')
    goto invalid;
  if (whole > (uint64_t)G_MAXINT64 / mult)
    goto too_big;
  bytes = whole * mult + frac * mult / frac_scale;
  if (bytes > (uint64_t)G_MAXINT64)
    goto too_big;
  *out_bytes = bytes;
  return TRUE;

invalid:
  g_set_error(error, AGENT_ERROR, AGENT_ERROR_INVALID,
              "invalid size \"%s\" (examples: 4096, 512K, 64M, 1.5G)", text);
  return FALSE;
too_big:
  g_set_error(error, AGENT_ERROR, AGENT_ERROR_INVALID, "size \"%s\" is too large", text);
  return FALSE;
}

char *agent_format_bytes(uint64_t bytes, char *buf, size_t size) {
  static const char *const units[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  double v = (double)bytes;
  int u = -1;

  if (bytes < 1024) {
    g_snprintf(buf, size, "%" G_GUINT64_FORMAT " B", bytes);
    return buf;
  }
  while (v >= 1024 && u < (int)G_N_ELEMENTS(units) - 1) {
    v /= 1024;
    u++;
  }
  g_snprintf(buf, size, v < 10 ? "%.2f %s" : v < 100 ? "%.1f %s" : "%.0f %s", v, units[u]);
  return buf;
}
