/* SPDX-License-Identifier: MIT */
/*
 * The agent's privileges (agent/privileges.c):
 *  - the helpers: capability names by number, a mask as names, the kept
 *    set (CAP_IPC_LOCK alone), the parser of /proc/sys/kernel/cap_last_cap;
 *  - status: "privileges" as commands.c writes it, null when none is set;
 *  - the drop itself, in a forked child (the test process keeps its own):
 *    as root, CapEff, CapPrm and CapBnd become the kept set, CapInh and
 *    CapAmb 0, NoNewPrivs 1, as /proc/self/status says and the struct
 *    reports; not root, nothing but no-new-privs changes and nothing fails.
 */
#include "cunit-run.h"
#include <glib.h>
#include <inttypes.h>
#include <json-glib/json-glib.h>
#include <linux/capability.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "commands.h"
#include "privileges.h"

static void test_names(void) {
  g_autofree char *none = agent_privileges_mask_names(0, ",");
  g_autofree char *two = agent_privileges_mask_names(
      (UINT64_C(1) << CAP_IPC_LOCK) | (UINT64_C(1) << CAP_SYS_ADMIN), ", ");
  g_autofree char *unknown = agent_privileges_mask_names(UINT64_C(1) << 63, ",");
  g_autofree char *all = agent_privileges_mask_names((UINT64_C(1) << 41) - 1, ",");
  g_auto(GStrv) parts = g_strsplit(all, ",", -1);

  CU_ASSERT_STRING_EQUAL(agent_privileges_cap_name(CAP_CHOWN), "CAP_CHOWN");
  CU_ASSERT_STRING_EQUAL(agent_privileges_cap_name(CAP_IPC_LOCK), "CAP_IPC_LOCK");
  CU_ASSERT_STRING_EQUAL(agent_privileges_cap_name(CAP_SYS_ADMIN), "CAP_SYS_ADMIN");
  CU_ASSERT_STRING_EQUAL(agent_privileges_cap_name(CAP_SYSLOG), "CAP_SYSLOG");
  CU_ASSERT_STRING_EQUAL(agent_privileges_cap_name(38), "CAP_PERFMON");
  CU_ASSERT_STRING_EQUAL(agent_privileges_cap_name(40), "CAP_CHECKPOINT_RESTORE");
  CU_ASSERT_PTR_NULL(agent_privileges_cap_name(41));
  CU_ASSERT_STRING_EQUAL(none, "");
  CU_ASSERT_STRING_EQUAL(two, "CAP_IPC_LOCK, CAP_SYS_ADMIN");
  CU_ASSERT_STRING_EQUAL(unknown, "cap_63");
  CU_ASSERT_EQUAL(g_strv_length(parts), 41);
  CU_ASSERT_STRING_EQUAL(parts[24], "CAP_SYS_RESOURCE");
}

static void test_kept(void) {
  CU_ASSERT_EQUAL(agent_privileges_kept_mask(), UINT64_C(1) << CAP_IPC_LOCK);
}

static void test_parse_last_cap(void) {
  unsigned v = 99;

  CU_ASSERT_TRUE(agent_privileges_parse_last_cap("40\n", 3, &v));
  CU_ASSERT_EQUAL(v, 40);
  CU_ASSERT_TRUE(agent_privileges_parse_last_cap("37", 2, &v));
  CU_ASSERT_EQUAL(v, 37);
  CU_ASSERT_TRUE(agent_privileges_parse_last_cap("0\n", 2, &v));
  CU_ASSERT_EQUAL(v, 0);
  v = 99;
  CU_ASSERT_FALSE(agent_privileges_parse_last_cap("", 0, &v));
  CU_ASSERT_FALSE(agent_privileges_parse_last_cap("\n", 1, &v));
  CU_ASSERT_FALSE(agent_privileges_parse_last_cap("64\n", 3, &v));
  CU_ASSERT_FALSE(agent_privileges_parse_last_cap("99999999999\n", 12, &v));
  CU_ASSERT_FALSE(agent_privileges_parse_last_cap("40\n\n", 4, &v));
  CU_ASSERT_FALSE(agent_privileges_parse_last_cap("4 0", 3, &v));
  CU_ASSERT_FALSE(agent_privileges_parse_last_cap("-1", 2, &v));
  CU_ASSERT_EQUAL(v, 99);
}

static void store_reply(char *text, gsize len, gpointer user_data) {
  *(char **)user_data = text;
}

static JsonObject *status_of(AgentCommands *cmds, JsonParser *parser) {
  g_autofree char *text = NULL;
  static const char request[] = "{\"execute\":\"status\"}";
  AgentCaller caller = {.kind = AGENT_CALLER_LOCAL, .uid = 1000, .pid = 1};

  agent_commands_handle_text(cmds, request, sizeof(request) - 1, &caller, store_reply, &text, NULL);
  if (!text || !json_parser_load_from_data(parser, text, -1, NULL))
    return NULL;
  return json_object_get_object_member(json_node_get_object(json_parser_get_root(parser)),
                                       "return");
}

static void test_status(void) {
  g_autoptr(JsonParser) parser = json_parser_new();
  AgentProcfs *procfs = agent_procfs_new("/");
  AgentRegistry *reg = agent_registry_new(16);
  AgentRounds *rounds = agent_rounds_new(reg, procfs, NULL);
  AgentCommands *cmds = agent_commands_new(reg, rounds, procfs, 1000);
  AgentPrivileges p = {
      .dropped = TRUE,
      .no_new_privs = TRUE,
      .effective_at_start = UINT64_C(0x000001ffffffffff),
      .effective = (UINT64_C(1) << CAP_IPC_LOCK) | (UINT64_C(1) << 50),
      .securebits = -1,
      .reason = "kept what shrinkd uses after start-up",
  };
  JsonObject *st, *pj;
  JsonArray *caps;

  st = status_of(cmds, parser);
  CU_ASSERT_PTR_NOT_NULL_FATAL(st);
  CU_ASSERT_TRUE(json_object_has_member(st, "privileges") &&
                 JSON_NODE_HOLDS_NULL(json_object_get_member(st, "privileges")));

  agent_commands_set_privileges(cmds, &p);
  st = status_of(cmds, parser);
  CU_ASSERT_PTR_NOT_NULL_FATAL(st);
  pj = json_object_get_object_member(st, "privileges");
  CU_ASSERT_PTR_NOT_NULL_FATAL(pj);
  caps = json_object_get_array_member(pj, "capabilities");
  CU_ASSERT_EQUAL_FATAL(json_array_get_length(caps), 2);
  CU_ASSERT_STRING_EQUAL(json_array_get_string_element(caps, 0), "CAP_IPC_LOCK");
  CU_ASSERT_STRING_EQUAL(json_array_get_string_element(caps, 1), "cap_50");
  CU_ASSERT_TRUE(json_object_get_boolean_member(pj, "no_new_privs"));
  CU_ASSERT_TRUE(json_object_get_boolean_member(pj, "dropped"));
  CU_ASSERT_STRING_EQUAL(json_object_get_string_member(pj, "cap_eff"), "0004000000004000");
  CU_ASSERT_STRING_EQUAL(json_object_get_string_member(pj, "cap_eff_at_start"), "000001ffffffffff");
  CU_ASSERT_TRUE(JSON_NODE_HOLDS_NULL(json_object_get_member(pj, "securebits")));
  CU_ASSERT_STRING_EQUAL(json_object_get_string_member(pj, "reason"),
                         "kept what shrinkd uses after start-up");

  agent_commands_free(cmds);
  agent_rounds_free(rounds);
  agent_registry_free(reg);
  agent_procfs_free(procfs);
}

/* A "NAME:\t<hex>" line of /proc/self/status. */
static uint64_t status_mask(const char *status, const char *name) {
  g_autofree char *key = g_strdup_printf("\n%s:\t", name);
  const char *p = strstr(status, key);

  return p ? g_ascii_strtoull(p + strlen(key), NULL, 16) : UINT64_MAX;
}

/* The child's findings, written to the parent through a pipe. */
typedef struct {
  AgentPrivileges p;
  uint64_t eff, prm, bnd, inh, amb, nnp;
} Findings;

static void test_drop(void) {
  int fds[2];
  pid_t pid;
  Findings f;
  int wstatus;
  ssize_t n;
  uint64_t kept = agent_privileges_kept_mask();

  CU_ASSERT_FATAL(pipe(fds) == 0);
  pid = fork();
  CU_ASSERT_FATAL(pid >= 0);
  if (pid == 0) {
    g_autofree char *status = NULL;

    close(fds[0]);
    memset(&f, 0, sizeof(f));
    agent_privileges_drop(&f.p);
    if (g_file_get_contents("/proc/self/status", &status, NULL, NULL)) {
      f.eff = status_mask(status, "CapEff");
      f.prm = status_mask(status, "CapPrm");
      f.bnd = status_mask(status, "CapBnd");
      f.inh = status_mask(status, "CapInh");
      f.amb = status_mask(status, "CapAmb");
      f.nnp = status_mask(status, "NoNewPrivs");
    }
    _exit(write(fds[1], &f, sizeof(f)) == (ssize_t)sizeof(f) ? 0 : 1);
  }
  close(fds[1]);
  n = read(fds[0], &f, sizeof(f));
  close(fds[0]);
  CU_ASSERT(waitpid(pid, &wstatus, 0) == pid && WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0);
  CU_ASSERT_EQUAL_FATAL(n, (ssize_t)sizeof(f));
  printf("\n    CapEff %016" PRIx64 " -> %016" PRIx64 " (CapBnd %016" PRIx64 "): %s ",
         f.p.effective_at_start, f.eff, f.bnd, f.p.reason);
  CU_ASSERT_EQUAL(f.nnp, 1);
  CU_ASSERT_TRUE(f.p.no_new_privs);
  CU_ASSERT_EQUAL(f.inh, 0);
  CU_ASSERT_EQUAL(f.amb, 0);
  CU_ASSERT_EQUAL(f.p.effective, f.eff);
  CU_ASSERT_EQUAL(f.p.permitted, f.prm);
  CU_ASSERT_EQUAL(f.p.bounding, f.bnd);
  if (f.p.effective_at_start & ~kept) {
    /* Root (or capabilities): exactly the kept set is left, everywhere. */
    CU_ASSERT_TRUE(f.p.dropped);
    CU_ASSERT_EQUAL(f.eff, kept & f.p.effective_at_start);
    CU_ASSERT_EQUAL(f.prm, kept & f.p.effective_at_start);
    CU_ASSERT_EQUAL(f.bnd, kept & f.p.effective_at_start);
    CU_ASSERT_STRING_EQUAL(f.p.reason, "kept what shrinkd uses after start-up");
  } else {
    CU_ASSERT_FALSE(f.p.dropped);
    CU_ASSERT_EQUAL(f.eff, f.p.effective_at_start);
    CU_ASSERT_STRING_EQUAL(f.p.reason, "started without capabilities to give up");
  }
}

int main(void) {
  CU_pSuite s;

  if (CU_initialize_registry() != CUE_SUCCESS)
    return 1;
  s = CU_add_suite("privileges", NULL, NULL);
  CU_add_test(s, "capability names and masks", test_names);
  CU_add_test(s, "the kept set", test_kept);
  CU_add_test(s, "cap_last_cap parsing", test_parse_last_cap);
  CU_add_test(s, "status shows the privileges", test_status);
  CU_add_test(s, "the drop, in a child", test_drop);
  return cunit_run_all();
}
