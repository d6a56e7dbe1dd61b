/* SPDX-License-Identifier: MIT */
/*
 * The request reader (agent/json-reader.c):
 *  - the corpus tests/data/json (argv[1]): every valid/NAME.in parses and
 *    agent_json_node() writes it back as NAME.out, which reads back to the
 *    same; every invalid/NAME.in is refused with NAME.expect's message;
 *  - the limits at their edges (depth, size, int64, doubles), NUL, UTF-8,
 *    surrogates, duplicate names in a large object;
 *  - the lookups, and the "id" echo through agent_json_node();
 *  - that the reader reads no byte past the length it is given.
 */
#include "cunit-run.h"
#include <glib.h>
#include <stdio.h>
#include <string.h>

#include "errors.h"
#include "json-reader.h"
#include "json-writer.h"

static const char *corpus_dir;

/* A string literal and its length (NULs inside included). */
#define S(lit) lit, sizeof(lit) - 1

/* The compact text agent_json_node() writes for @v. */
static char *write_back(const AgentJsonValue *v) {
  return agent_json_to_text(v);
}

/* Parses @text (of @len bytes); NULL with *@error on failure. */
static AgentJsonDoc *parse(const char *text, gsize len, GError **error) {
  return agent_json_reader_parse(text, len, error);
}

/* Checks that @text (NUL-terminated) is refused with a message containing
 * @needle. */
static void refused_with(const char *text, gsize len, const char *needle) {
  g_autoptr(GError) error = NULL;
  g_autoptr(AgentJsonDoc) doc = parse(text, len, &error);

  CU_ASSERT_PTR_NULL(doc);
  CU_ASSERT_TRUE(g_error_matches(error, AGENT_ERROR, AGENT_ERROR_INVALID));
  if (!error || !strstr(error->message, needle)) {
    printf("\n    %.60s: got \"%s\", want \"...%s...\"", text,
           error ? error->message : "(accepted)", needle);
    CU_FAIL("message");
  }
}

static AgentJsonDoc *accepted(const char *text, gsize len) {
  g_autoptr(GError) error = NULL;
  AgentJsonDoc *doc = parse(text, len, &error);

  if (!doc)
    printf("\n    %.60s: refused: %s", text, error->message);
  CU_ASSERT_PTR_NOT_NULL(doc);
  return doc;
}

/* Reads every @dir/ *.in. */
static GPtrArray *case_names(const char *sub) {
  g_autofree char *dir = g_build_filename(corpus_dir, sub, NULL);
  g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
  GPtrArray *names = g_ptr_array_new_with_free_func(g_free);
  const char *n;

  CU_ASSERT_PTR_NOT_NULL_FATAL(d);
  while ((n = g_dir_read_name(d)))
    if (g_str_has_suffix(n, ".in"))
      g_ptr_array_add(names, g_strndup(n, strlen(n) - 3));
  g_ptr_array_sort(names, (GCompareFunc)g_strcmp0);
  return names;
}

static char *read_case(const char *sub, const char *name, const char *ext, gsize *len) {
  g_autofree char *file = g_strconcat(name, ext, NULL);
  g_autofree char *path = g_build_filename(corpus_dir, sub, file, NULL);
  char *data = NULL;

  CU_ASSERT_FATAL(g_file_get_contents(path, &data, len, NULL));
  return data;
}

static void test_corpus_valid(void) {
  g_autoptr(GPtrArray) names = case_names("valid");

  CU_ASSERT(names->len >= 20);
  for (guint i = 0; i < names->len; i++) {
    const char *name = g_ptr_array_index(names, i);
    gsize len, out_len;
    g_autofree char *in = read_case("valid", name, ".in", &len);
    g_autofree char *want = read_case("valid", name, ".out", &out_len);
    g_autoptr(GError) error = NULL;
    g_autoptr(AgentJsonDoc) doc = parse(in, len, &error);
    g_autoptr(AgentJsonDoc) again = NULL;
    g_autofree char *got = NULL;
    g_autofree char *got_again = NULL;

    g_strchomp(want);
    if (!doc) {
      printf("\n    valid/%s: refused: %s", name, error->message);
      CU_FAIL("a valid case refused");
      continue;
    }
    got = write_back(agent_json_reader_root(doc));
    if (strcmp(got, want) != 0) {
      printf("\n    valid/%s: wrote %s, want %s", name, got, want);
      CU_FAIL("a valid case written back wrong");
    }
    /* What the writer wrote reads back to the same. */
    again = parse(got, strlen(got), NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(again);
    got_again = write_back(agent_json_reader_root(again));
    CU_ASSERT_STRING_EQUAL(got_again, got);
  }
}

static void test_corpus_invalid(void) {
  g_autoptr(GPtrArray) names = case_names("invalid");

  CU_ASSERT(names->len >= 50);
  for (guint i = 0; i < names->len; i++) {
    const char *name = g_ptr_array_index(names, i);
    gsize len, expect_len;
    g_autofree char *in = read_case("invalid", name, ".in", &len);
    g_autofree char *want = read_case("invalid", name, ".expect", &expect_len);
    g_autoptr(GError) error = NULL;
    g_autoptr(AgentJsonDoc) doc = parse(in, len, &error);

    g_strchomp(want);
    if (doc) {
      printf("\n    invalid/%s: accepted", name);
      CU_FAIL("an invalid case accepted");
      continue;
    }
    CU_ASSERT_TRUE(g_error_matches(error, AGENT_ERROR, AGENT_ERROR_INVALID));
    if (strcmp(error->message, want) != 0) {
      printf("\n    invalid/%s: \"%s\", want \"%s\"", name, error->message, want);
      CU_FAIL("an invalid case refused with another message");
    }
  }
}

/* Depth, size, numbers at their edges. */
static void test_limits(void) {
  g_autoptr(GString) deep = g_string_new(NULL);
  g_autoptr(GString) big = g_string_new("[\"");
  g_autoptr(AgentJsonDoc) doc = NULL;
  g_autofree char *msg = NULL;

  /* Depth: 16 levels, arrays and objects mixed, then 17. */
  for (int i = 0; i < AGENT_JSON_READER_DEPTH_MAX; i++)
    g_string_append(deep, i % 2 ? "[" : "{\"k\":");
  g_string_append(deep, "0");
  for (int i = AGENT_JSON_READER_DEPTH_MAX - 1; i >= 0; i--)
    g_string_append_c(deep, i % 2 ? ']' : '}');
  doc = accepted(deep->str, deep->len);
  g_clear_pointer(&doc, agent_json_reader_free);
  g_string_prepend_c(deep, '[');
  g_string_append_c(deep, ']');
  msg = g_strdup_printf("request nests deeper than %d levels", AGENT_JSON_READER_DEPTH_MAX);
  refused_with(deep->str, deep->len, msg);
  /* Brackets inside strings do not nest. */
  doc = accepted(S("[\"[[[[[[[[[[[[[[[[[[[[{{{{{{{{{{{{{{{{{{{\"]"));
  g_clear_pointer(&doc, agent_json_reader_free);

  /* Size: exactly the limit, then one byte more. */
  while (big->len < AGENT_JSON_READER_TEXT_MAX - 2)
    g_string_append_c(big, 'x');
  g_string_append(big, "\"]");
  CU_ASSERT_EQUAL(big->len, AGENT_JSON_READER_TEXT_MAX);
  doc = accepted(big->str, big->len);
  if (doc)
    CU_ASSERT_EQUAL(strlen(agent_json_reader_get_string(
                        agent_json_reader_element(agent_json_reader_root(doc), 0), NULL)),
                    AGENT_JSON_READER_TEXT_MAX - 4);
  g_clear_pointer(&doc, agent_json_reader_free);
  g_string_append_c(big, ' ');
  refused_with(big->str, big->len, "request of 65537 bytes exceeds the limit of 65536");

  /* Integers: int64's edges are integers; one beyond is refused, as an
   * integer (no fraction) would otherwise be taken for another number. */
  doc = accepted(S("[9223372036854775807,-9223372036854775808,0,-0]"));
  if (doc) {
    const AgentJsonValue *a = agent_json_reader_root(doc);

    CU_ASSERT_EQUAL(agent_json_reader_type(agent_json_reader_element(a, 0)), AGENT_JSON_INT);
    CU_ASSERT_EQUAL(agent_json_reader_get_int(agent_json_reader_element(a, 0)), G_MAXINT64);
    CU_ASSERT_EQUAL(agent_json_reader_get_int(agent_json_reader_element(a, 1)), G_MININT64);
    CU_ASSERT_EQUAL(agent_json_reader_get_int(agent_json_reader_element(a, 3)), 0);
  }
  g_clear_pointer(&doc, agent_json_reader_free);
  refused_with(S("9223372036854775808"), "malformed JSON at byte 0: an integer beyond 64 bits");
  refused_with(S("-9223372036854775809"), "an integer beyond 64 bits");
  refused_with(S("18446744073709551616"), "an integer beyond 64 bits");
  refused_with(S("99999999999999999999999"), "an integer beyond 64 bits");

  /* Doubles: finite only. */
  doc = accepted(S("[1.7976931348623157e308,4.9e-324,1e-400,9223372036854775808.0]"));
  if (doc) {
    const AgentJsonValue *a = agent_json_reader_root(doc);

    CU_ASSERT_EQUAL(agent_json_reader_type(agent_json_reader_element(a, 0)), AGENT_JSON_DOUBLE);
    CU_ASSERT_DOUBLE_EQUAL(agent_json_reader_get_double(agent_json_reader_element(a, 0)),
                           1.7976931348623157e308, 1e292);
    CU_ASSERT_DOUBLE_EQUAL(agent_json_reader_get_double(agent_json_reader_element(a, 2)), 0.0, 0.0);
    CU_ASSERT_DOUBLE_EQUAL(agent_json_reader_get_double(agent_json_reader_element(a, 3)),
                           9223372036854775808.0, 1.0);
  }
  g_clear_pointer(&doc, agent_json_reader_free);
  refused_with(S("1e309"), "malformed JSON at byte 0: a number beyond the range of a double");
  refused_with(S("[-1.8e308]"), "a number beyond the range of a double");

  /* NUL and UTF-8 over the whole text, with where. */
  refused_with(S("{\"a\":\"b\0\"}"), "request contains a NUL byte at byte 7");
  refused_with(S("{\"a\":\"\xc3\"}"), "request is not valid UTF-8 at byte 6");

  /* Surrogates: a pair is one character; alone, either half is refused. */
  doc = accepted(S("\"\\ud83d\\ude00\\uDBFF\\uDFFF\""));
  if (doc)
    CU_ASSERT_STRING_EQUAL(agent_json_reader_get_string(agent_json_reader_root(doc), NULL),
                           "\xf0\x9f\x98\x80\xf4\x8f\xbf\xbf");
  g_clear_pointer(&doc, agent_json_reader_free);
  refused_with(S("\"\\ud83d\""), "malformed JSON at byte 1: an unpaired surrogate");
  refused_with(S("\"\\ude00\\ud83d\""), "an unpaired surrogate");
}

/* Only @len bytes are read: what follows is not the reader's. */
static void test_length_respected(void) {
  g_autoptr(AgentJsonDoc) a = accepted("[1]garbage", 3);
  g_autoptr(AgentJsonDoc) b = accepted("1.5e3xyz", 5);
  g_autoptr(AgentJsonDoc) c = accepted("12345", 3);
  g_autoptr(AgentJsonDoc) d = accepted("\"ab\"cd", 4);
  /* A number at the very end of a buffer with nothing after it: no NUL
   * for g_ascii_strtod to stop at. */
  char *exact = g_memdup2("2.5", 3);
  g_autoptr(AgentJsonDoc) e = accepted(exact, 3);

  if (b)
    CU_ASSERT_DOUBLE_EQUAL(agent_json_reader_get_double(agent_json_reader_root(b)), 1500.0, 0.0);
  if (c)
    CU_ASSERT_EQUAL(agent_json_reader_get_int(agent_json_reader_root(c)), 123);
  if (d)
    CU_ASSERT_STRING_EQUAL(agent_json_reader_get_string(agent_json_reader_root(d), NULL), "ab");
  if (e)
    CU_ASSERT_DOUBLE_EQUAL(agent_json_reader_get_double(agent_json_reader_root(e)), 2.5, 0.0);
  g_free(exact);
  refused_with("[1]", 2, "malformed JSON at byte 2 (the end): expected ',' or ']'");
  refused_with("\"abc\"", 4, "a string without its closing '\"'");
}

/* Lookups: what commands.c and the writer use. */
static void test_lookups(void) {
  static const char text[] =
      "{\"execute\":\"shrink\",\"arguments\":{\"target_bytes\":1048576,\"level\":\"soft\","
      "\"x\":[true,null,{\"y\":[]},2.5]},\"id\":-7}";
  g_autoptr(AgentJsonDoc) doc = accepted(text, sizeof(text) - 1);
  const AgentJsonValue *root, *args, *x, *v;
  const char *names[3];
  AgentJsonIter iter;
  const AgentJsonValue *name;
  gsize n = 0;

  CU_ASSERT_PTR_NOT_NULL_FATAL(doc);
  root = agent_json_reader_root(doc);
  CU_ASSERT_EQUAL(agent_json_reader_type(root), AGENT_JSON_OBJECT);
  CU_ASSERT_EQUAL(agent_json_reader_length(root), 3);
  CU_ASSERT_STRING_EQUAL(
      agent_json_reader_get_string(agent_json_reader_member(root, "execute"), NULL), "shrink");
  CU_ASSERT_EQUAL(agent_json_reader_get_int(agent_json_reader_member(root, "id")), -7);
  CU_ASSERT_PTR_NULL(agent_json_reader_member(root, "exec"));
  CU_ASSERT_PTR_NULL(agent_json_reader_member(root, "executes"));
  CU_ASSERT_PTR_NULL(agent_json_reader_member(NULL, "execute"));
  CU_ASSERT_PTR_NULL(agent_json_reader_member(agent_json_reader_member(root, "id"), "x"));

  /* Members in the text's order, names and values. */
  agent_json_reader_iter_init(&iter, root);
  while (agent_json_reader_iter_next(&iter, &name, &v) && n < 3)
    names[n++] = agent_json_reader_get_string(name, NULL);
  CU_ASSERT_EQUAL_FATAL(n, 3);
  CU_ASSERT_STRING_EQUAL(names[0], "execute");
  CU_ASSERT_STRING_EQUAL(names[1], "arguments");
  CU_ASSERT_STRING_EQUAL(names[2], "id");
  CU_ASSERT_FALSE(agent_json_reader_iter_next(&iter, &name, &v));

  args = agent_json_reader_member(root, "arguments");
  CU_ASSERT_EQUAL(agent_json_reader_type(args), AGENT_JSON_OBJECT);
  CU_ASSERT_EQUAL(agent_json_reader_get_int(agent_json_reader_member(args, "target_bytes")),
                  1048576);
  x = agent_json_reader_member(args, "x");
  CU_ASSERT_EQUAL(agent_json_reader_type(x), AGENT_JSON_ARRAY);
  CU_ASSERT_EQUAL(agent_json_reader_length(x), 4);
  CU_ASSERT_TRUE(agent_json_reader_get_bool(agent_json_reader_element(x, 0)));
  CU_ASSERT_EQUAL(agent_json_reader_type(agent_json_reader_element(x, 1)), AGENT_JSON_NULL);
  CU_ASSERT_EQUAL(
      agent_json_reader_length(agent_json_reader_member(agent_json_reader_element(x, 2), "y")), 0);
  CU_ASSERT_DOUBLE_EQUAL(agent_json_reader_get_double(agent_json_reader_element(x, 3)), 2.5, 0.0);
  CU_ASSERT_PTR_NULL(agent_json_reader_element(x, 4));
  CU_ASSERT_PTR_NULL(agent_json_reader_element(args, 0));

  /* An array walks with NULL names; a scalar or NULL walks nothing. */
  n = 0;
  agent_json_reader_iter_init(&iter, x);
  while (agent_json_reader_iter_next(&iter, &name, NULL)) {
    CU_ASSERT_PTR_NULL(name);
    n++;
  }
  CU_ASSERT_EQUAL(n, 4);
  agent_json_reader_iter_init(&iter, agent_json_reader_member(root, "id"));
  CU_ASSERT_FALSE(agent_json_reader_iter_next(&iter, NULL, NULL));
  agent_json_reader_iter_init(&iter, NULL);
  CU_ASSERT_FALSE(agent_json_reader_iter_next(&iter, NULL, NULL));

  /* The getters of another type give their zero. */
  v = agent_json_reader_member(root, "execute");
  CU_ASSERT_EQUAL(agent_json_reader_get_int(v), 0);
  CU_ASSERT_FALSE(agent_json_reader_get_bool(v));
  CU_ASSERT_DOUBLE_EQUAL(agent_json_reader_get_double(v), 0.0, 0.0);
  CU_ASSERT_PTR_NULL(agent_json_reader_get_string(agent_json_reader_member(root, "id"), NULL));
  CU_ASSERT_DOUBLE_EQUAL(agent_json_reader_get_double(agent_json_reader_member(root, "id")), -7.0,
                         0.0);
  CU_ASSERT_EQUAL(agent_json_reader_length(v), 0);
}

/* "\u0000" is a character like another: strings have their length, and a
 * name with a NUL in it is not its prefix. */
static void test_nul_characters(void) {
  g_autoptr(AgentJsonDoc) doc =
      accepted(S("{\"a\\u0000b\":1,\"a\":2,\"a\\u0000\":3,\"s\":\"x\\u0000\"}"));
  const AgentJsonValue *root;
  AgentJsonIter iter;
  const AgentJsonValue *name;
  const char *s;
  gsize len = 99;

  CU_ASSERT_PTR_NOT_NULL_FATAL(doc);
  root = agent_json_reader_root(doc);
  CU_ASSERT_EQUAL(agent_json_reader_length(root), 4);
  CU_ASSERT_EQUAL(agent_json_reader_get_int(agent_json_reader_member(root, "a")), 2);
  agent_json_reader_iter_init(&iter, root);
  CU_ASSERT_TRUE_FATAL(agent_json_reader_iter_next(&iter, &name, NULL));
  s = agent_json_reader_get_string(name, &len);
  CU_ASSERT_EQUAL(len, 3);
  CU_ASSERT(memcmp(s, "a\0b", 4) == 0); /* NUL-terminated after its length too */
  s = agent_json_reader_get_string(agent_json_reader_member(root, "s"), &len);
  CU_ASSERT_EQUAL(len, 2);
  CU_ASSERT(memcmp(s, "x\0", 3) == 0);
  CU_ASSERT_PTR_NULL(agent_json_reader_get_string(agent_json_reader_member(root, "a"), &len));
  CU_ASSERT_EQUAL(len, 0);

  /* Written back whole. */
  {
    g_autofree char *back = write_back(root);

    CU_ASSERT_STRING_EQUAL(back, "{\"a\\u0000b\":1,\"a\":2,\"a\\u0000\":3,\"s\":\"x\\u0000\"}");
  }
  /* Duplicates compare whole names too. */
  refused_with(S("{\"a\\u0000b\":1,\"a\\u0000b\":2}"),
               "malformed JSON at byte 14: a duplicate member name");
}

/* The "id" echo: a request's id, any JSON, is written back as the same. */
static void test_id_echo(void) {
  static const char *const ids[] = {
      "7",
      "-9223372036854775808",
      "\"abc\"",
      "\"we\\\"ird\\\\ \\n\\t\\u0001 \\u00e9 \\ud83d\\ude00 \\/\"",
      "{\"a\":[1,true,null,\"x\",-1.5e3,{}],\"b\":{\"c\":[[]]}}",
      "[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]",
      "0.1",
      "1.0",
      "-0.0",
      "\"a\\u0000b\"",
      "null",
  };

  for (gsize i = 0; i < G_N_ELEMENTS(ids); i++) {
    g_autofree char *request = g_strdup_printf("{\"execute\":\"x\",\"id\":%s}", ids[i]);
    g_autoptr(AgentJsonDoc) doc = accepted(request, strlen(request));
    g_autoptr(AgentJsonDoc) again = NULL;
    g_autoptr(AgentJsonDoc) original = NULL;
    g_autofree char *echo = NULL;
    g_autofree char *echo_again = NULL;
    g_autofree char *want = NULL;

    if (!doc)
      continue;
    echo = write_back(agent_json_reader_member(agent_json_reader_root(doc), "id"));
    again = accepted(echo, strlen(echo));
    if (!again)
      continue;
    echo_again = write_back(agent_json_reader_root(again));
    CU_ASSERT_STRING_EQUAL(echo_again, echo);
    /* The same as the id read on its own, and written. */
    original = accepted(ids[i], strlen(ids[i]));
    want = original ? write_back(agent_json_reader_root(original)) : NULL;
    CU_ASSERT_STRING_EQUAL(echo, want ? want : "");
  }
  {
    g_autoptr(AgentJsonDoc) doc = accepted(S("\"\\u00e9\\ud83d\\ude00\""));
    g_autofree char *echo = doc ? write_back(agent_json_reader_root(doc)) : NULL;

    CU_ASSERT_STRING_EQUAL(echo, "\"\xc3\xa9\xf0\x9f\x98\x80\"");
  }
}

/* Duplicate names: decoded, in any object, found in a large one fast. */
static void test_duplicates(void) {
  g_autoptr(GString) many = g_string_new("{");
  g_autoptr(AgentJsonDoc) doc = NULL;
  g_autofree char *where = NULL;
  gsize dup_at;
  gint64 start;

  /* As many members as fit in a request. */
  for (int i = 0; many->len < AGENT_JSON_READER_TEXT_MAX - 32; i++)
    g_string_append_printf(many, "%s\"%x\":0", i ? "," : "", i);
  g_string_append_c(many, '}');
  start = g_get_monotonic_time();
  doc = accepted(many->str, many->len);
  if (doc)
    CU_ASSERT(agent_json_reader_length(agent_json_reader_root(doc)) > 7000);
  g_clear_pointer(&doc, agent_json_reader_free);
  /* The same, one name repeated at the end. */
  many->str[--many->len] = '\0';
  dup_at = many->len + 1;
  g_string_append(many, ",\"1a2\":1}");
  refused_with(many->str, many->len, "a duplicate member name \"1a2\"");
  where = g_strdup_printf("at byte %" G_GSIZE_FORMAT ":", dup_at);
  refused_with(many->str, many->len, where);
  /* Quadratic would take seconds here; heapsort, milliseconds. */
  CU_ASSERT(g_get_monotonic_time() - start < G_USEC_PER_SEC);

  refused_with(S("{\"a\":1,\"\\u0061\":2}"),
               "malformed JSON at byte 7: a duplicate member name \"a\"");
  refused_with(S("[{\"a\":1},{\"b\":{\"c\":1,\"c\":1}}]"), "a duplicate member name \"c\"");
  doc = accepted(S("[{\"a\":1},{\"a\":1}]"));
}

int main(int argc, char **argv) {
  CU_pSuite s;

  if (argc != 2) {
    fprintf(stderr, "usage: %s CORPUS-DIR (tests/data/json)\n", argv[0]);
    return 2;
  }
  corpus_dir = argv[1];
  if (CU_initialize_registry() != CUE_SUCCESS)
    return 2;
  s = CU_add_suite("json-reader", NULL, NULL);
  CU_add_test(s, "corpus: valid, written back", test_corpus_valid);
  CU_add_test(s, "corpus: invalid, with messages", test_corpus_invalid);
  CU_add_test(s, "limits: depth, size, numbers, NUL, UTF-8, surrogates", test_limits);
  CU_add_test(s, "reads only the length given", test_length_respected);
  CU_add_test(s, "lookups", test_lookups);
  CU_add_test(s, "NUL characters in strings", test_nul_characters);
  CU_add_test(s, "id echo through agent_json_node()", test_id_echo);
  CU_add_test(s, "duplicate member names", test_duplicates);
  return cunit_run_all();
}
