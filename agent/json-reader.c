/* SPDX-License-Identifier: MIT */
/*
 * The agent's JSON reader (see json-reader.h).
 *
 * Two passes over the text with the same code: the first validates
 * everything but duplicate names and counts the values, string bytes and
 * the largest object; the second, on a text known to be well-formed, fills
 * one block of exactly that size. Only duplicate names are checked in the
 * second pass: names must be decoded to compare ("a" is "\u0061"), and
 * decoded names exist only then.
 *
 * The values are one array in document order: a container's items follow
 * it (an object's as name, then value), and a value's next sibling is
 * 1 + span slots after it. Strings follow the values, each NUL-terminated.
 */
#include "json-reader.h"

#include <math.h>
#include <string.h>

#include "errors.h"

struct AgentJsonValue {
  guint32 type;   /* AgentJsonType */
  guint32 count;  /* array: items; object: members; string: bytes without the NUL */
  guint32 span;   /* array, object: the slots of everything inside (names too) */
  guint32 offset; /* where the value starts in the text, for errors */
  union {
    gint64 i;
    double d;
    gboolean b;
    const char *s;
  } u;
};

struct AgentJsonDoc {
  gsize n_slots;
  AgentJsonValue slots[]; /* then the scratch pointers, then the strings */
};

typedef struct {
  const char *text;
  gsize len;
  gsize pos;
  GError **error;
  /* Counted by the first pass. */
  gsize n_slots;
  gsize n_bytes;     /* of strings, their NULs included */
  gsize max_members; /* of the largest object: the scratch for duplicates */
  /* The second pass: where the next value and string bytes go. */
  gboolean building;
  AgentJsonValue *slot;
  char *bytes;
  const AgentJsonValue **scratch;
} Parser;

static gboolean fail(Parser *P, gsize at, const char *what) {
  g_set_error(P->error, AGENT_ERROR, AGENT_ERROR_INVALID,
              "malformed JSON at byte %" G_GSIZE_FORMAT "%s: %s", at,
              at >= P->len ? " (the end)" : "", what);
  return FALSE;
}

static int peek(const Parser *P) {
  return P->pos < P->len ? (unsigned char)P->text[P->pos] : -1;
}

static gboolean is_digit(const Parser *P, gsize at) {
  return at < P->len && g_ascii_isdigit(P->text[at]);
}

/* JSON's whitespace only: no \f, no \v. */
static void skip_ws(Parser *P) {
  while (P->pos < P->len) {
    char c = P->text[P->pos];

    if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
      return;
    P->pos++;
  }
}

/* Takes the next slot (counts it while counting: NULL then). */
static AgentJsonValue *new_value(Parser *P, AgentJsonType type) {
  AgentJsonValue *v;

  if (!P->building) {
    P->n_slots++;
    return NULL;
  }
  v = P->slot++;
  v->type = type;
  v->count = 0;
  v->span = 0;
  v->offset = (guint32)P->pos;
  v->u.i = 0;
  return v;
}

static const AgentJsonValue *next_sibling(const AgentJsonValue *v) {
  return v + 1 + v->span;
}

static gboolean value_at_depth(Parser *P, unsigned depth);

/* ---- strings ---- */

/* The four hex digits at @at, or FALSE. */
static gboolean read_hex4(const Parser *P, gsize at, gunichar *out) {
  gunichar cp = 0;

  if (at + 4 > P->len)
    return FALSE;
  for (int k = 0; k < 4; k++) {
    int d = g_ascii_xdigit_value(P->text[at + k]);

    if (d < 0)
      return FALSE;
    cp = cp << 4 | (gunichar)d;
  }
  *out = cp;
  return TRUE;
}

/* The string at P->pos (its opening quote) into @v (NULL while counting).
 * The text is valid UTF-8 and has no NUL byte (checked before); "\u0000"
 * puts one in the string, which has its length. */
static gboolean parse_string(Parser *P, AgentJsonValue *v) {
  const unsigned char *t = (const unsigned char *)P->text;
  gsize open = P->pos, n = 0;
  char *out = P->building ? P->bytes : NULL;

  P->pos++;
  for (;;) {
    gsize run = P->pos, esc;
    gunichar cp, lo;

    while (P->pos < P->len && t[P->pos] != '"' && t[P->pos] != '\\' && t[P->pos] >= 0x20)
      P->pos++;
    if (out)
      memcpy(out + n, t + run, P->pos - run);
    n += P->pos - run;
    if (P->pos == P->len)
      return fail(P, open, "a string without its closing '\"'");
    if (t[P->pos] == '"')
      break;
    if (t[P->pos] < 0x20)
      return fail(P, P->pos, "a control character in a string");

    esc = P->pos++;
    switch (peek(P)) {
    case '"': cp = '"'; break;
    case '\\': cp = '\\'; break;
    case '/': cp = '/'; break;
    case 'b': cp = '\b'; break;
    case 'f': cp = '\f'; break;
    case 'n': cp = '\n'; break;
    case 'r': cp = '\r'; break;
    case 't': cp = '\t'; break;
    case 'u':
      if (!read_hex4(P, P->pos + 1, &cp))
        return fail(P, esc, "an invalid \\u escape in a string");
      P->pos += 4;
      if (cp >= 0xD800 && cp <= 0xDBFF) {
        /* A high surrogate: the low one must follow as an escape too. */
        if (P->pos + 2 >= P->len || t[P->pos + 1] != '\\' || t[P->pos + 2] != 'u' ||
            !read_hex4(P, P->pos + 3, &lo) || lo < 0xDC00 || lo > 0xDFFF)
          return fail(P, esc, "an unpaired surrogate in a \\u escape");
        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        P->pos += 6;
      } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
        return fail(P, esc, "an unpaired surrogate in a \\u escape");
      }
      break;
    default: return fail(P, esc, "an invalid escape in a string");
    }
    P->pos++;
    n += (gsize)g_unichar_to_utf8(cp, out ? out + n : NULL);
  }
  P->pos++; /* the closing quote */
  P->n_bytes += n + 1;
  if (out) {
    out[n] = '\0';
    v->count = (guint32)n;
    v->u.s = out;
    P->bytes += n + 1;
  }
  return TRUE;
}

/* ---- numbers ---- */

/* @n bytes at @p, a JSON number with a fraction or an exponent, as a
 * double. g_ascii_strtod() needs a NUL after the number, which the text
 * may not have: copied, on the stack unless it is absurdly long. */
static double to_double(const char *p, gsize n) {
  char buf[64];
  g_autofree char *heap = NULL;
  char *s = buf;

  if (n < sizeof(buf)) {
    memcpy(buf, p, n);
    buf[n] = '\0';
  } else {
    s = heap = g_strndup(p, n);
  }
  return g_ascii_strtod(s, NULL);
}

static gboolean parse_number(Parser *P, AgentJsonValue *v) {
  const char *t = P->text;
  gsize start = P->pos, digits;
  gboolean negative = t[P->pos] == '-', integer = TRUE;

  if (negative)
    P->pos++;
  digits = P->pos;
  if (!is_digit(P, P->pos))
    return fail(P, P->pos, "expected a digit after '-'");
  if (t[P->pos] == '0') {
    if (is_digit(P, ++P->pos))
      return fail(P, start, "a number with a leading zero");
  } else {
    while (is_digit(P, P->pos))
      P->pos++;
  }
  if (peek(P) == '.') {
    integer = FALSE;
    if (!is_digit(P, ++P->pos))
      return fail(P, P->pos, "expected a digit after '.'");
    while (is_digit(P, P->pos))
      P->pos++;
  }
  if (peek(P) == 'e' || peek(P) == 'E') {
    integer = FALSE;
    P->pos++;
    if (peek(P) == '+' || peek(P) == '-')
      P->pos++;
    if (!is_digit(P, P->pos))
      return fail(P, P->pos, "expected a digit in the exponent");
    while (is_digit(P, P->pos))
      P->pos++;
  }

  if (integer) {
    /* Accumulated as a magnitude, so that INT64_MIN fits. A number we
     * cannot hold is refused rather than taken for another. */
    guint64 limit = negative ? (guint64)G_MAXINT64 + 1 : (guint64)G_MAXINT64, mag = 0;

    for (gsize i = digits; i < P->pos; i++) {
      unsigned d = (unsigned)(t[i] - '0');

      if (mag > (limit - d) / 10)
        return fail(P, start, "an integer beyond 64 bits");
      mag = mag * 10 + d;
    }
    if (v) {
      v->type = AGENT_JSON_INT;
      v->u.i = negative ? (gint64)(0 - mag) : (gint64)mag;
    }
  } else {
    /* Infinity has no JSON form: an echoed "id" could not be written back. */
    double d = to_double(t + start, P->pos - start);

    if (!isfinite(d))
      return fail(P, start, "a number beyond the range of a double");
    if (v) {
      v->type = AGENT_JSON_DOUBLE;
      v->u.d = d;
    }
  }
  return TRUE;
}

/* ---- containers ---- */

static gboolean too_deep(Parser *P) {
  g_set_error(P->error, AGENT_ERROR, AGENT_ERROR_INVALID,
              "request nests deeper than %d levels at byte %" G_GSIZE_FORMAT,
              AGENT_JSON_READER_DEPTH_MAX, P->pos);
  return FALSE;
}

static void finish_container(Parser *P, AgentJsonValue *v, guint32 count) {
  if (v) {
    v->count = count;
    v->span = (guint32)(P->slot - v - 1);
  }
}

static gboolean parse_array(Parser *P, unsigned depth) {
  AgentJsonValue *v;
  guint32 count = 0;

  if (depth > AGENT_JSON_READER_DEPTH_MAX)
    return too_deep(P);
  v = new_value(P, AGENT_JSON_ARRAY);
  P->pos++;
  skip_ws(P);
  if (peek(P) == ']') {
    P->pos++;
    finish_container(P, v, 0);
    return TRUE;
  }
  for (;;) {
    if (!value_at_depth(P, depth))
      return FALSE;
    count++;
    skip_ws(P);
    if (peek(P) == ']')
      break;
    if (peek(P) != ',')
      return fail(P, P->pos, "expected ',' or ']'");
    P->pos++;
    skip_ws(P);
  }
  P->pos++;
  finish_container(P, v, count);
  return TRUE;
}

static int name_cmp(const AgentJsonValue *a, const AgentJsonValue *b) {
  int c;

  if (a->count != b->count)
    return a->count < b->count ? -1 : 1;
  c = memcmp(a->u.s, b->u.s, a->count);
  if (c)
    return c;
  return a->offset < b->offset ? -1 : a->offset > b->offset;
}

static void sift_down(const AgentJsonValue **a, gsize root, gsize n) {
  for (;;) {
    gsize child = 2 * root + 1;
    const AgentJsonValue *tmp;

    if (child >= n)
      return;
    if (child + 1 < n && name_cmp(a[child], a[child + 1]) < 0)
      child++;
    if (name_cmp(a[root], a[child]) >= 0)
      return;
    tmp = a[root];
    a[root] = a[child];
    a[child] = tmp;
    root = child;
  }
}

/*
 * Refuses an object that has a name twice. Heapsort on the scratch
 * pointers: O(n log n) on a hostile object of ten thousand members, no
 * allocation (qsort may allocate, and pairs would be quadratic).
 */
static gboolean check_duplicates(Parser *P, const AgentJsonValue *object) {
  const AgentJsonValue **names = P->scratch, *dup = NULL, *p = object + 1;
  gsize n = object->count;

  if (n < 2)
    return TRUE;
  for (gsize i = 0; i < n; i++) {
    names[i] = p;
    p = next_sibling(p + 1);
  }
  for (gsize i = n / 2; i-- > 0;)
    sift_down(names, i, n);
  for (gsize end = n; end-- > 1;) {
    const AgentJsonValue *tmp = names[0];

    names[0] = names[end];
    names[end] = tmp;
    sift_down(names, 0, end);
  }
  /* Equal names sort by offset: the later of a pair repeats the earlier.
   * The first repeat in the text is reported. */
  for (gsize i = 1; i < n; i++) {
    if (names[i]->count == names[i - 1]->count &&
        memcmp(names[i]->u.s, names[i - 1]->u.s, names[i]->count) == 0 &&
        (!dup || names[i]->offset < dup->offset))
      dup = names[i];
  }
  if (!dup)
    return TRUE;
  if (dup->count <= 64 && !memchr(dup->u.s, '\0', dup->count)) {
    g_autofree char *what = g_strdup_printf("a duplicate member name \"%s\"", dup->u.s);

    return fail(P, dup->offset, what);
  }
  return fail(P, dup->offset, "a duplicate member name");
}

static gboolean parse_object(Parser *P, unsigned depth) {
  AgentJsonValue *v;
  guint32 count = 0;

  if (depth > AGENT_JSON_READER_DEPTH_MAX)
    return too_deep(P);
  v = new_value(P, AGENT_JSON_OBJECT);
  P->pos++;
  skip_ws(P);
  if (peek(P) == '}') {
    P->pos++;
    finish_container(P, v, 0);
    return TRUE;
  }
  for (;;) {
    if (peek(P) != '"')
      return fail(P, P->pos, "expected a member name (a string)");
    if (!parse_string(P, new_value(P, AGENT_JSON_STRING)))
      return FALSE;
    skip_ws(P);
    if (peek(P) != ':')
      return fail(P, P->pos, "expected ':'");
    P->pos++;
    skip_ws(P);
    if (!value_at_depth(P, depth))
      return FALSE;
    count++;
    skip_ws(P);
    if (peek(P) == '}')
      break;
    if (peek(P) != ',')
      return fail(P, P->pos, "expected ',' or '}'");
    P->pos++;
    skip_ws(P);
  }
  P->pos++;
  finish_container(P, v, count);
  P->max_members = MAX(P->max_members, count);
  return !v || check_duplicates(P, v);
}

static gboolean expect_word(Parser *P, const char *word, AgentJsonValue *v) {
  gsize n = strlen(word);

  if (P->len - P->pos < n || memcmp(P->text + P->pos, word, n) != 0)
    return fail(P, P->pos, "expected a value");
  P->pos += n;
  return TRUE;
}

/* The value at P->pos, inside @depth levels of containers. */
static gboolean value_at_depth(Parser *P, unsigned depth) {
  AgentJsonValue *v;

  switch (peek(P)) {
  case '{': return parse_object(P, depth + 1);
  case '[': return parse_array(P, depth + 1);
  case '"': return parse_string(P, new_value(P, AGENT_JSON_STRING));
  case 't':
    v = new_value(P, AGENT_JSON_BOOL);
    if (v)
      v->u.b = TRUE;
    return expect_word(P, "true", v);
  case 'f': return expect_word(P, "false", new_value(P, AGENT_JSON_BOOL));
  case 'n': return expect_word(P, "null", new_value(P, AGENT_JSON_NULL));
  case '-':
  case '0' ... '9': return parse_number(P, new_value(P, AGENT_JSON_INT));
  default: return fail(P, P->pos, "expected a value");
  }
}

/* One pass over the whole text. */
static gboolean parse_text(Parser *P) {
  P->pos = 0;
  skip_ws(P);
  if (P->pos == P->len) {
    g_set_error(P->error, AGENT_ERROR, AGENT_ERROR_INVALID, "empty request");
    return FALSE;
  }
  if (!value_at_depth(P, 0))
    return FALSE;
  skip_ws(P);
  if (P->pos != P->len)
    return fail(P, P->pos, "unexpected text after the value");
  return TRUE;
}

AgentJsonDoc *agent_json_reader_parse(const char *text, gsize len, GError **error) {
  Parser P = {.text = text, .len = len, .error = error};
  const char *nul, *end;
  AgentJsonDoc *doc;
  gsize size;

  if (len > AGENT_JSON_READER_TEXT_MAX) {
    g_set_error(error, AGENT_ERROR, AGENT_ERROR_INVALID,
                "request of %" G_GSIZE_FORMAT " bytes exceeds the limit of %d", len,
                AGENT_JSON_READER_TEXT_MAX);
    return NULL;
  }
  /* Checked on the whole text first: the parser can then copy string
   * bytes as they are. */
  nul = len > 0 ? memchr(text, '\0', len) : NULL;
  if (nul) {
    g_set_error(error, AGENT_ERROR, AGENT_ERROR_INVALID,
                "request contains a NUL byte at byte %" G_GSIZE_FORMAT, (gsize)(nul - text));
    return NULL;
  }
  if (!g_utf8_validate_len(text, len, &end)) {
    g_set_error(error, AGENT_ERROR, AGENT_ERROR_INVALID,
                "request is not valid UTF-8 at byte %" G_GSIZE_FORMAT, (gsize)(end - text));
    return NULL;
  }
  if (!parse_text(&P))
    return NULL;

  size = sizeof(AgentJsonDoc) + P.n_slots * sizeof(AgentJsonValue) +
         P.max_members * sizeof(AgentJsonValue *) + P.n_bytes;
  doc = g_malloc(size);
  doc->n_slots = P.n_slots;
  P.building = TRUE;
  P.slot = doc->slots;
  P.scratch = (const AgentJsonValue **)(doc->slots + P.n_slots);
  P.bytes = (char *)(P.scratch + P.max_members);
  if (!parse_text(&P)) {
    g_free(doc);
    return NULL;
  }
  g_assert(P.slot == doc->slots + doc->n_slots && P.bytes == (char *)doc + size);
  return doc;
}

void agent_json_reader_free(AgentJsonDoc *doc) {
  g_free(doc);
}

const AgentJsonValue *agent_json_reader_root(const AgentJsonDoc *doc) {
  return &doc->slots[0];
}

AgentJsonType agent_json_reader_type(const AgentJsonValue *v) {
  return (AgentJsonType)v->type;
}

const AgentJsonValue *agent_json_reader_member(const AgentJsonValue *object, const char *name) {
  gsize n = strlen(name);
  const AgentJsonValue *p;

  if (!object || object->type != AGENT_JSON_OBJECT)
    return NULL;
  p = object + 1;
  for (guint32 i = 0; i < object->count; i++) {
    if (p->count == n && memcmp(p->u.s, name, n) == 0)
      return p + 1;
    p = next_sibling(p + 1);
  }
  return NULL;
}

gsize agent_json_reader_length(const AgentJsonValue *v) {
  return v->type == AGENT_JSON_ARRAY || v->type == AGENT_JSON_OBJECT ? v->count : 0;
}

const AgentJsonValue *agent_json_reader_element(const AgentJsonValue *array, gsize index) {
  const AgentJsonValue *p;

  if (array->type != AGENT_JSON_ARRAY || index >= array->count)
    return NULL;
  p = array + 1;
  while (index-- > 0)
    p = next_sibling(p);
  return p;
}

void agent_json_reader_iter_init(AgentJsonIter *iter, const AgentJsonValue *container) {
  iter->next = container ? container + 1 : NULL;
  iter->left = container ? agent_json_reader_length(container) : 0;
  iter->object = container && container->type == AGENT_JSON_OBJECT;
}

gboolean agent_json_reader_iter_next(AgentJsonIter *iter, const AgentJsonValue **name,
                                     const AgentJsonValue **value) {
  const AgentJsonValue *v = iter->next;

  if (iter->left == 0)
    return FALSE;
  iter->left--;
  if (name)
    *name = iter->object ? v : NULL;
  if (iter->object)
    v++;
  if (value)
    *value = v;
  iter->next = next_sibling(v);
  return TRUE;
}

int64_t agent_json_reader_get_int(const AgentJsonValue *v) {
  return v->type == AGENT_JSON_INT ? v->u.i : 0;
}

double agent_json_reader_get_double(const AgentJsonValue *v) {
  if (v->type == AGENT_JSON_DOUBLE)
    return v->u.d;
  return v->type == AGENT_JSON_INT ? (double)v->u.i : 0.0;
}

gboolean agent_json_reader_get_bool(const AgentJsonValue *v) {
  return v->type == AGENT_JSON_BOOL ? v->u.b : FALSE;
}

const char *agent_json_reader_get_string(const AgentJsonValue *v, gsize *len) {
  if (v->type != AGENT_JSON_STRING) {
    if (len)
      *len = 0;
    return NULL;
  }
  if (len)
    *len = v->count;
  return v->u.s;
}
