/* SPDX-License-Identifier: MIT */
/*
 * Sums of figures that come from peers: a client may claim 2^64-1 bytes,
 * and a wrapped total would read as almost nothing. Every such sum
 * saturates instead. Pure C, no GLib (policy.c uses it).
 */
#pragma once

#include <stdint.h>

/* @a + @b, or UINT64_MAX where that does not fit. */
static inline uint64_t agent_sat_add(uint64_t a, uint64_t b) {
  return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

/* @a + @b for a signed figure (a measurement may be negative), clamped to
 * the range of int64_t. */
static inline int64_t agent_sat_add_signed(int64_t a, int64_t b) {
  if (b > 0 && a > INT64_MAX - b)
    return INT64_MAX;
  if (b < 0 && a < INT64_MIN - b)
    return INT64_MIN;
  return a + b;
}
