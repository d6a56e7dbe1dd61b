/* SPDX-License-Identifier: MIT */
/*
 * Little-endian field access with bounds checks, for the wire codecs.
 * A reader or writer that runs past its end sets ->overflow and stops
 * moving, so a codec checks once at the end instead of after every field.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct {
  const uint8_t *p;
  size_t len;
  size_t pos;
  bool overflow;
} wire_reader;

typedef struct {
  uint8_t *p;
  size_t len;
  size_t pos;
  bool overflow;
} wire_writer;

static inline const uint8_t *wire_take(wire_reader *r, size_t n) {
  if (r->overflow || r->len - r->pos < n) {
    r->overflow = true;
    return NULL;
  }
  const uint8_t *at = r->p + r->pos;
  r->pos += n;
  return at;
}

static inline uint8_t wire_u8(wire_reader *r) {
  const uint8_t *b = wire_take(r, 1);
  return b ? b[0] : 0;
}

static inline uint16_t wire_u16(wire_reader *r) {
  const uint8_t *b = wire_take(r, 2);
  return b ? (uint16_t)(b[0] | b[1] << 8) : 0;
}

static inline uint32_t wire_u32(wire_reader *r) {
  const uint8_t *b = wire_take(r, 4);
  return b ? (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24 : 0;
}

static inline uint64_t wire_u64(wire_reader *r) {
  uint64_t lo = wire_u32(r);
  uint64_t hi = wire_u32(r);
  return lo | hi << 32;
}

static inline uint8_t *wire_room(wire_writer *w, size_t n) {
  if (w->overflow || w->len - w->pos < n) {
    w->overflow = true;
    return NULL;
  }
  uint8_t *at = w->p + w->pos;
  w->pos += n;
  return at;
}

static inline void wire_put_u8(wire_writer *w, uint8_t v) {
  uint8_t *b = wire_room(w, 1);
  if (b)
    b[0] = v;
}

static inline void wire_put_u16(wire_writer *w, uint16_t v) {
  uint8_t *b = wire_room(w, 2);
  if (b) {
    b[0] = (uint8_t)v;
    b[1] = (uint8_t)(v >> 8);
  }
}

static inline void wire_put_u32(wire_writer *w, uint32_t v) {
  uint8_t *b = wire_room(w, 4);
  if (b)
    for (int i = 0; i < 4; i++)
      b[i] = (uint8_t)(v >> (8 * i));
}

static inline void wire_put_u64(wire_writer *w, uint64_t v) {
  wire_put_u32(w, (uint32_t)v);
  wire_put_u32(w, (uint32_t)(v >> 32));
}

static inline void wire_put_bytes(wire_writer *w, const void *src, size_t n) {
  uint8_t *b = wire_room(w, n);
  if (b && n)
    memcpy(b, src, n);
}
