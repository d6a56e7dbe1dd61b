/* SPDX-License-Identifier: MIT */
/*
 * Internals shared by libshrink's source files; never installed.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

/*
 * The library is built with hidden visibility; only functions marked with
 * this (and listed in libshrink.map) are exported.
 */
#define SHRINK_PUBLIC __attribute__((visibility("default")))

/*
 * Copies @src into @dst of @dst_size bytes, truncating without splitting a
 * UTF-8 sequence, always NUL-terminated. Returns the length copied. An empty
 * or NULL @src gives @fallback.
 */
size_t shrink_copy_name(char *dst, size_t dst_size, const char *src,
                        const char *fallback);

/* Whether $SHRINK_DEBUG asks for logging to stderr. */
bool shrink_debug_enabled(void);
