/* SPDX-License-Identifier: MIT */
/*
 * A small, strict JSON reader for the agent's requests (RFC 8259), in
 * place of json-glib, which brought GObject, GIO and half a dozen more
 * libraries into a daemon whose memory is locked.
 *
 * A parse validates the whole text first, counting what it needs, then
 * builds the values in one exactly-sized allocation (the document): values
 * and strings are carved out of it and freed whole. A burst of small
 * allocations would fragment the locked heap for good; one block does not.
 *
 * Strict, and stricter than RFC 8259 where a request cannot need more.
 * Refused: anything but one value and whitespace (space, tab, CR, LF);
 * an empty text; a NUL byte, invalid UTF-8; more than
 * AGENT_JSON_READER_TEXT_MAX bytes or AGENT_JSON_READER_DEPTH_MAX levels of
 * arrays and objects (the reader recurses once per level: this bounds its
 * stack); numbers with a leading zero, '+', no digit before or after '.',
 * or an empty exponent; integers (no fraction, no exponent) beyond int64;
 * other numbers that are not finite as a double (1e309); unescaped control
 * characters, escapes JSON does not have and unpaired surrogates in
 * strings; duplicate member names in an object (the same name after
 * escapes are decoded).
 *
 * A string may hold NUL characters, written "\u0000": strings come with
 * their length, and comparing one as a C string would take
 * "status\u0000x" for "status". agent_json_reader_member() compares whole
 * names.
 *
 * Errors are AGENT_ERROR_INVALID and say what and where, as a byte offset
 * counted from 0: "malformed JSON at byte 17: expected ':'".
 *
 * Values are read-only and live as long as their document. Lookups are
 * linear (a request has a handful of members). Not thread-safe per
 * document; documents are independent.
 */
#pragma once

#include <glib.h>
#include <stdint.h>

/* Bounds on one text, as security bounds against any peer. */
#define AGENT_JSON_READER_TEXT_MAX  (64 * 1024) /* bytes */
#define AGENT_JSON_READER_DEPTH_MAX 16          /* levels; a top-level [] or {} is 1 */

typedef enum {
  AGENT_JSON_NULL,
  AGENT_JSON_BOOL,
  AGENT_JSON_INT,    /* no fraction and no exponent: an int64 */
  AGENT_JSON_DOUBLE, /* a fraction or an exponent: a finite double */
  AGENT_JSON_STRING, /* UTF-8, with a length (may hold "\u0000") */
  AGENT_JSON_ARRAY,
  AGENT_JSON_OBJECT, /* members in the order of the text, names unique */
} AgentJsonType;

/* A parsed text: owns every value in it. */
typedef struct AgentJsonDoc AgentJsonDoc;

/* One value inside a document. */
typedef struct AgentJsonValue AgentJsonValue;

/* Walks the items of an array or the members of an object, in order. Its
 * fields are the reader's. */
typedef struct {
  const AgentJsonValue *next;
  gsize left;
  gboolean object;
} AgentJsonIter;

/*
 * Parses @len bytes of @text (need not be NUL-terminated) under the rules
 * above. Returns the document (transfer full: agent_json_reader_free()),
 * or NULL with @error (AGENT_ERROR_INVALID). One allocation on success.
 */
AgentJsonDoc *agent_json_reader_parse(const char *text, gsize len,
                                      GError **error) G_GNUC_WARN_UNUSED_RESULT;

/* Frees @doc and every value in it. NULL ok. */
void agent_json_reader_free(AgentJsonDoc *doc);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(AgentJsonDoc, agent_json_reader_free)

/* The top-level value of @doc (owned by @doc; never NULL). */
const AgentJsonValue *agent_json_reader_root(const AgentJsonDoc *doc);

/* The type of @v (not NULL). */
AgentJsonType agent_json_reader_type(const AgentJsonValue *v);

/*
 * The member @name (UTF-8, NUL-terminated; the whole name is compared) of
 * @object, or NULL if it has none, or if @object is NULL or not an object
 * (so that optional arguments read in one call). Linear in the members.
 */
const AgentJsonValue *agent_json_reader_member(const AgentJsonValue *object, const char *name);

/* The number of items of an array or members of an object; 0 for any
 * other value. */
gsize agent_json_reader_length(const AgentJsonValue *v);

/* Item @index of @array, or NULL if @array is not an array or is shorter.
 * Linear in @index: use an AgentJsonIter to walk every item. */
const AgentJsonValue *agent_json_reader_element(const AgentJsonValue *array, gsize index);

/* Starts walking @container (an array or an object; anything else,
 * NULL included, walks nothing). */
void agent_json_reader_iter_init(AgentJsonIter *iter, const AgentJsonValue *container);

/*
 * The next item: returns TRUE with *@value and *@name (the member's name,
 * an AGENT_JSON_STRING, for an object; NULL for an array), or FALSE at the
 * end. @name and @value may be NULL; what they get is owned by the
 * document.
 */
gboolean agent_json_reader_iter_next(AgentJsonIter *iter, const AgentJsonValue **name,
                                     const AgentJsonValue **value);

/* The integer @v holds; 0 if it is not an AGENT_JSON_INT. */
int64_t agent_json_reader_get_int(const AgentJsonValue *v);

/* The number @v holds (an integer converted); 0.0 if it is not a number. */
double agent_json_reader_get_double(const AgentJsonValue *v);

/* The boolean @v holds; FALSE if it is not an AGENT_JSON_BOOL. */
gboolean agent_json_reader_get_bool(const AgentJsonValue *v);

/*
 * The string @v holds (owned by the document; NUL-terminated), or NULL if
 * it is not an AGENT_JSON_STRING. *@len (may be NULL) gets its length in
 * bytes: where the string may hold NUL characters, compare with it.
 */
const char *agent_json_reader_get_string(const AgentJsonValue *v, gsize *len);
