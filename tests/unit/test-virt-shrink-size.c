/* SPDX-License-Identifier: MIT */
/*
 * virt-shrink's sizes: SIZE read as `virsh setmem` reads it (a bare number
 * is KiB, libvirt's suffix rules, rounded up to KiB), option numbers, and
 * sizes printed for people.
 */
#include "cunit-run.h"
#include <string.h>

#include "size.h"
#include "vs-error.h"

#define KiB G_GUINT64_CONSTANT(1024)
#define MiB (KiB * 1024)
#define GiB (MiB * 1024)

typedef struct {
  const char *text;
  guint64 bytes; /* 0: must be refused */
} size_row;

/* clang-format off */
static const size_row size_rows[] = {
  /* virsh's default unit for setmem is KiB */
  {"393216", 384 * MiB},
  {"1", KiB},
  {"1048576", GiB},
  /* binary suffixes, any case, with or without "iB" */
  {"384M", 384 * MiB}, {"384m", 384 * MiB}, {"384MiB", 384 * MiB}, {"384mib", 384 * MiB},
  {"1G", GiB}, {"1g", GiB}, {"1GiB", GiB}, {"512K", 512 * KiB}, {"512KiB", 512 * KiB},
  {"1T", 1024 * GiB}, {"1P", 1024 * 1024 * GiB}, {"7E", 7 * (GiB << 30)},
  {"8E", 0} /* 2^63: above INT64_MAX */,
  /* decimal suffixes */
  {"1KB", 1000 + 24 /* rounded up to a whole KiB */},
  {"1MB", 977 * KiB}, {"1GB", 976563 * KiB}, {"1gb", 976563 * KiB}, {"4096KB", 4000 * KiB},
  /* bytes, rounded up to a whole KiB as virsh does */
  {"402653184b", 384 * MiB}, {"1b", KiB}, {"1024bytes", KiB}, {"1025byte", 2 * KiB},
  {"4096B", 4 * KiB},
  /* refused */
  {"", 0}, {"0", 0}, {"0M", 0}, {"-1", 0}, {"+1", 0}, {" 1", 0}, {"1 ", 0}, {"1.5G", 0},
  {"M", 0}, {"12X", 0}, {"1Mi", 0}, {"1MiBs", 0}, {"1KBB", 0}, {"1bytesx", 0}, {"0x10", 0},
  {"99999999999999999999", 0}, {"9007199254740992K", 0} /* 2^53 KiB = 2^63 bytes */,
  {"9007199254740991K", G_GUINT64_CONSTANT(9007199254740991) * 1024},
};
/* clang-format on */

static void test_parse_size(void) {
  for (guint i = 0; i < G_N_ELEMENTS(size_rows); i++) {
    const size_row *r = &size_rows[i];
    g_autoptr(GError) error = NULL;
    guint64 out = 12345;
    gboolean ok = vs_parse_size(r->text, &out, &error);

    if (ok != (r->bytes != 0) || (ok && out != r->bytes))
      fprintf(stderr, "\n  \"%s\": got %s %" G_GUINT64_FORMAT ", want %" G_GUINT64_FORMAT "\n",
              r->text, ok ? "ok" : "refused", out, r->bytes);
    CU_ASSERT_EQUAL(ok, r->bytes != 0);
    if (ok) {
      CU_ASSERT_EQUAL(out, r->bytes);
      CU_ASSERT_EQUAL(out % 1024, 0);
      CU_ASSERT_PTR_NULL(error);
    } else {
      CU_ASSERT_EQUAL(out, 12345); /* untouched */
      CU_ASSERT(g_error_matches(error, VS_ERROR, VS_ERROR_INVALID));
      CU_ASSERT_PTR_NOT_NULL(error && strstr(error->message, r->text));
    }
  }
}

static void test_parse_uint(void) {
  g_autoptr(GError) error = NULL;
  guint64 v = 0;

  CU_ASSERT(vs_parse_uint("4000", "--deadline", 1, 600000, &v, NULL));
  CU_ASSERT_EQUAL(v, 4000);
  CU_ASSERT_FALSE(vs_parse_uint("0", "--deadline", 1, 600000, &v, &error));
  CU_ASSERT(g_error_matches(error, VS_ERROR, VS_ERROR_INVALID));
  CU_ASSERT_PTR_NOT_NULL(strstr(error->message, "--deadline"));
  CU_ASSERT_PTR_NOT_NULL(strstr(error->message, "\"0\""));
  CU_ASSERT_FALSE(vs_parse_uint("600001", "--deadline", 1, 600000, &v, NULL));
  CU_ASSERT_FALSE(vs_parse_uint("12ms", "--deadline", 1, 600000, &v, NULL));
  CU_ASSERT_FALSE(vs_parse_uint("", "--deadline", 1, 600000, &v, NULL));
  CU_ASSERT_FALSE(vs_parse_uint("-5", "--deadline", 1, 600000, &v, NULL));
}

static void test_format(void) {
  char buf[32];

  CU_ASSERT_STRING_EQUAL(vs_format_bytes(0, buf, sizeof(buf)), "0 B");
  CU_ASSERT_STRING_EQUAL(vs_format_bytes(1023, buf, sizeof(buf)), "1023 B");
  CU_ASSERT_STRING_EQUAL(vs_format_bytes(1024, buf, sizeof(buf)), "1 KiB");
  CU_ASSERT_STRING_EQUAL(vs_format_bytes(1536, buf, sizeof(buf)), "1.50 KiB");
  CU_ASSERT_STRING_EQUAL(vs_format_bytes(64 * MiB, buf, sizeof(buf)), "64 MiB");
  CU_ASSERT_STRING_EQUAL(vs_format_bytes(384 * MiB, buf, sizeof(buf)), "384 MiB");
  CU_ASSERT_STRING_EQUAL(vs_format_bytes(384 * MiB + 1, buf, sizeof(buf)), "384 MiB");
  CU_ASSERT_STRING_EQUAL(vs_format_bytes(64 * MiB + MiB / 2, buf, sizeof(buf)), "64.5 MiB");
  CU_ASSERT_STRING_EQUAL(vs_format_bytes(GiB + GiB / 4, buf, sizeof(buf)), "1.25 GiB");
  CU_ASSERT_STRING_EQUAL(vs_format_bytes(G_MAXUINT64, buf, sizeof(buf)), "16.0 EiB");
  CU_ASSERT_STRING_EQUAL(vs_format_signed_bytes(-(gint64)MiB, buf, sizeof(buf)), "-1 MiB");
  CU_ASSERT_STRING_EQUAL(vs_format_signed_bytes(G_MININT64, buf, sizeof(buf)), "-8 EiB");
  CU_ASSERT_STRING_EQUAL(vs_format_signed_bytes(5, buf, sizeof(buf)), "5 B");
}

static void test_agent_error_classes(void) {
  static const char *const names[] = {"GenericError", "CommandNotFound", "InvalidParameter",
                                      "CommandDisabled", "Busy"};

  for (guint i = 0; i < G_N_ELEMENTS(names); i++) {
    CU_ASSERT_EQUAL(vs_agent_error_from_class(names[i]), (VsAgentErrorCode)i);
    CU_ASSERT_STRING_EQUAL(vs_agent_error_class_name((VsAgentErrorCode)i), names[i]);
  }
  CU_ASSERT_EQUAL(vs_agent_error_from_class(NULL), VS_AGENT_ERROR_GENERIC);
  CU_ASSERT_EQUAL(vs_agent_error_from_class("DeviceNotActive"), VS_AGENT_ERROR_OTHER);
  CU_ASSERT_EQUAL(vs_agent_error_from_class("busy"), VS_AGENT_ERROR_OTHER);
  CU_ASSERT_STRING_EQUAL(vs_agent_error_class_name(VS_AGENT_ERROR_OTHER), "Other");
  CU_ASSERT_STRING_EQUAL(vs_agent_error_class_name((VsAgentErrorCode)99), "Other");
}

/* Guest text on the operator's terminal. */
static void test_printable(void) {
  static const struct {
    const char *in, *out;
  } rows[] = {
      {"cache-server", "cache-server"},
      {"\x1b[2J\x1b]0;owned\x07", "?[2J?]0;owned?"},
      {"tab\there\nnewline\r", "tab?here?newline?"},
      {"caf\xc3\xa9 \xe2\x9c\x93", "caf\xc3\xa9 \xe2\x9c\x93"}, /* UTF-8 stays */
      {"bad \xff\xfe utf8 \xc3", "bad ?? utf8 ?"},
      {"c1 \xc2\x9b" "31m", "c1 ?31m"}, /* U+009B, the 8-bit CSI */
      {"del\x7f", "del?"},
      {"", ""},
  };

  for (guint i = 0; i < G_N_ELEMENTS(rows); i++) {
    g_autofree char *got = vs_printable(rows[i].in, 100);

    CU_ASSERT_STRING_EQUAL(got, rows[i].out);
  }
  {
    g_autofree char *cut = vs_printable("abcdef", 3);
    g_autofree char *null = vs_printable(NULL, 3);

    CU_ASSERT_STRING_EQUAL(cut, "abc...");
    CU_ASSERT_STRING_EQUAL(null, "");
  }
}

int main(void) {
  CU_pSuite s;

  if (CU_initialize_registry() != CUE_SUCCESS)
    return 1;
  s = CU_add_suite("virt-shrink sizes", NULL, NULL);
  CU_add_test(s, "SIZE as virsh setmem reads it", test_parse_size);
  CU_add_test(s, "option numbers", test_parse_uint);
  CU_add_test(s, "sizes for people", test_format);
  CU_add_test(s, "agent error classes", test_agent_error_classes);
  CU_add_test(s, "guest text made printable", test_printable);
  return cunit_run_all();
}
