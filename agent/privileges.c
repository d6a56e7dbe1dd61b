/* SPDX-License-Identifier: MIT */
/*
 * The agent's privileges (see privileges.h). Raw capget/capset (version 3:
 * two 32-bit words) and prctl(): no libcap in the locked daemon.
 */
#include "privileges.h"

#include <errno.h>
#include <inttypes.h>
#include <linux/capability.h>
#include <linux/securebits.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

/*
 * What shrinkd still uses after start-up, found by reading every file it
 * opens and every call it makes later, and by running it in the VM tests
 * (tests/vm/test_balloon.py check 0) with only this set.
 *
 * Not kept, because the kernel checks them once, when shrinkd opens the
 * descriptor at start-up, and the descriptor works on without them:
 *  - CAP_SYS_ADMIN: config space beyond its first 64 bytes;
 *    pci_read_config() asks file_ns_capable(), the opener's credentials.
 *    The PCI_CFG window's selector writes check no capability at all, only
 *    the file's mode (0644, root's), and so does the legacy I/O BAR
 *    (resource0, 0600, root's). Also the kprobe PMU's perf_event_open().
 *  - CAP_PERFMON: perf_event_open() of the kprobe; its rings are read
 *    without it. A probe that goes away is followed by polling, never
 *    opened again. (Removing a tracefs kprobe event at shutdown writes
 *    kprobe_events, root's file: no capability.)
 *  - CAP_SYSLOG: /dev/kmsg under dmesg_restrict (devkmsg_open()); reading
 *    it later is not checked.
 *  - CAP_SYS_RESOURCE: a PSI trigger with a window other than 2 s (Linux
 *    6.1 asks at open() of /proc/pressure/memory for writing; later
 *    kernels ask the opener's credentials when the trigger is written,
 *    right after); the descriptor limit is raised before (to the hard
 *    limit: no capability either).
 *  - CAP_NET_BIND_SERVICE: a vsock port below 1024, bound at start-up.
 *  - CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH: what is opened later is root's
 *    (the host channel's /dev/vport*, waited for and reopened; the lock
 *    file and socket, removed at shutdown) and uid 0 owns it; the clients'
 *    /proc/PID/statm are readable by everyone.
 *  - CAP_SETPCAP: only the drop itself needs it.
 */
static const struct {
  unsigned cap;
  const char *why;
} kept[] = {
    {CAP_IPC_LOCK, "mlockall(MCL_FUTURE) locks every later mapping as it is made (heap growth, "
                   "a large reply), and memory.c unlocks and locks again to trim: beyond "
                   "RLIMIT_MEMLOCK only CAP_IPC_LOCK lets those succeed"},
};

/* The names the kernel headers give, by number (capability(7)). */
static const char *const cap_names[] = {
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
};
G_STATIC_ASSERT(G_N_ELEMENTS(cap_names) == 41);
G_STATIC_ASSERT(CAP_IPC_LOCK == 14 && CAP_SETPCAP == 8);

/*
 * Securebits: uid 0 gains no capability at an execve (NOROOT), none can be
 * made ambient (NO_CAP_AMBIENT_RAISE), and both stay so (_LOCKED).
 * shrinkd never executes a program, so this only closes a door. Not
 * NO_SETUID_FIXUP and not KEEP_CAPS: with them a change of uid away from 0
 * would keep the capabilities; locked off instead (their _LOCKED bits with
 * the bits clear), the kernel clears them at such a change, as it should.
 */
#define SECUREBITS_WANTED                                                                          \
  (SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_NO_SETUID_FIXUP_LOCKED |                          \
   SECBIT_KEEP_CAPS_LOCKED | SECBIT_NO_CAP_AMBIENT_RAISE | SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED)

#define BIT(cap) (UINT64_C(1) << (cap))

uint64_t agent_privileges_kept_mask(void) {
  uint64_t mask = 0;

  for (size_t i = 0; i < G_N_ELEMENTS(kept); i++)
    mask |= BIT(kept[i].cap);
  return mask;
}

const char *agent_privileges_cap_name(unsigned cap) {
  return cap < G_N_ELEMENTS(cap_names) ? cap_names[cap] : NULL;
}

char *agent_privileges_mask_names(uint64_t mask, const char *sep) {
  GString *s = g_string_new(NULL);

  for (unsigned cap = 0; cap <= AGENT_PRIVILEGES_CAP_MAX; cap++) {
    const char *name;

    if (!(mask & BIT(cap)))
      continue;
    if (s->len)
      g_string_append(s, sep);
    name = agent_privileges_cap_name(cap);
    if (name)
      g_string_append(s, name);
    else
      g_string_append_printf(s, "cap_%u", cap);
  }
  return g_string_free(s, FALSE);
}

gboolean agent_privileges_parse_last_cap(const char *text, gsize len, unsigned *out) {
  unsigned v = 0;
  gsize i = 0;

  for (; i < len && g_ascii_isdigit(text[i]); i++) {
    v = v * 10 + (unsigned)(text[i] - '0');
    if (v > AGENT_PRIVILEGES_CAP_MAX)
      return FALSE;
  }
  if (i == 0 || (i < len && !(text[i] == '\n' && i + 1 == len)))
    return FALSE;
  *out = v;
  return TRUE;
}

/* The kernel's highest capability. The real /proc, not the agent's proc
 * root: these are this process's capabilities, whatever tree the sources
 * read. */
static unsigned last_cap(void) {
  g_autofree char *text = NULL;
  gsize len;
  unsigned v;

  if (g_file_get_contents("/proc/sys/kernel/cap_last_cap", &text, &len, NULL) &&
      agent_privileges_parse_last_cap(text, len, &v))
    return v;
  return CAP_LAST_CAP;
}

typedef struct {
  uint64_t effective, permitted, inheritable;
} Sets;

static int get_sets(Sets *s) {
  struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
  struct __user_cap_data_struct d[2] = {{0}};

  if (syscall(SYS_capget, &h, d) < 0)
    return -errno;
  s->effective = d[0].effective | (uint64_t)d[1].effective << 32;
  s->permitted = d[0].permitted | (uint64_t)d[1].permitted << 32;
  s->inheritable = d[0].inheritable | (uint64_t)d[1].inheritable << 32;
  return 0;
}

static int set_sets(const Sets *s) {
  struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
  struct __user_cap_data_struct d[2] = {
      {(uint32_t)s->effective, (uint32_t)s->permitted, (uint32_t)s->inheritable},
      {(uint32_t)(s->effective >> 32), (uint32_t)(s->permitted >> 32),
       (uint32_t)(s->inheritable >> 32)},
  };

  return syscall(SYS_capset, &h, d) < 0 ? -errno : 0;
}

static uint64_t bounding_set(unsigned last) {
  uint64_t mask = 0;

  for (unsigned cap = 0; cap <= last; cap++)
    if (prctl(PR_CAPBSET_READ, (unsigned long)cap, 0, 0, 0) == 1)
      mask |= BIT(cap);
  return mask;
}

/* The state now into @out (not its reason, not dropped). */
static void read_state(AgentPrivileges *out) {
  Sets s = {0};

  if (get_sets(&s) == 0) {
    out->effective = s.effective;
    out->permitted = s.permitted;
  }
  out->bounding = bounding_set(MIN(last_cap(), AGENT_PRIVILEGES_CAP_MAX));
  out->no_new_privs = prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 1;
  out->securebits = prctl(PR_GET_SECUREBITS, 0, 0, 0, 0);
}

void agent_privileges_read(AgentPrivileges *out, const char *reason) {
  memset(out, 0, sizeof(*out));
  read_state(out);
  out->effective_at_start = out->effective;
  g_strlcpy(out->reason, reason, sizeof(out->reason));
}

/* Appends "; @what: strerror(@err)" to @problems. */
static void problem(GString *problems, const char *what, int err) {
  g_string_append_printf(problems, "%s%s: %s", problems->len ? "; " : "", what, g_strerror(err));
}

void agent_privileges_drop(AgentPrivileges *out) {
  g_autoptr(GString) problems = g_string_new(NULL);
  g_autofree char *names = NULL;
  unsigned last = MIN(last_cap(), AGENT_PRIVILEGES_CAP_MAX);
  Sets old, now;
  uint64_t keep;
  unsigned refused = 0;
  int rc, first_err = 0;

  memset(out, 0, sizeof(*out));
  rc = get_sets(&old);
  if (rc < 0) {
    agent_privileges_read(out, "");
    g_snprintf(out->reason, sizeof(out->reason), "capget: %s; nothing dropped", g_strerror(-rc));
    g_warning("privileges: %s", out->reason);
    return;
  }
  keep = agent_privileges_kept_mask() & old.permitted;
  for (size_t i = 0; i < G_N_ELEMENTS(kept); i++)
    g_debug("privileges: keeping %s%s: %s", cap_names[kept[i].cap],
            keep & BIT(kept[i].cap) ? "" : " (not held)", kept[i].why);

  /* The bounding set and securebits need CAP_SETPCAP in the effective
   * set; raise it there if it is only permitted. Without it (not root, a
   * unit that bounded it away) the bounding set stays as it is, which
   * the capset() below makes moot for this process: no execve follows. */
  if ((old.permitted & BIT(CAP_SETPCAP)) && !(old.effective & BIT(CAP_SETPCAP))) {
    now = old;
    now.effective |= BIT(CAP_SETPCAP);
    if ((rc = set_sets(&now)) < 0)
      problem(problems, "raising CAP_SETPCAP", -rc);
    else
      old.effective = now.effective;
  }
  if (old.effective & BIT(CAP_SETPCAP)) {
    int bits = prctl(PR_GET_SECUREBITS, 0, 0, 0, 0);

    if (bits >= 0 && (bits & SECUREBITS_WANTED) != SECUREBITS_WANTED &&
        prctl(PR_SET_SECUREBITS, (unsigned long)(bits | SECUREBITS_WANTED), 0, 0, 0) < 0)
      problem(problems, "securebits", errno);
    for (unsigned cap = 0; cap <= last; cap++) {
      if ((keep & BIT(cap)) || prctl(PR_CAPBSET_READ, (unsigned long)cap, 0, 0, 0) != 1)
        continue;
      if (prctl(PR_CAPBSET_DROP, (unsigned long)cap, 0, 0, 0) < 0) {
        refused++;
        if (!first_err)
          first_err = errno;
      }
    }
    if (refused)
      g_string_append_printf(problems, "%sbounding set: %u capabilities not dropped (%s)",
                             problems->len ? "; " : "", refused, g_strerror(first_err));
  }
  /* Cleared anyway by the capset() below (ambient must stay within
   * permitted and inheritable); said, for kernels that differ. EINVAL:
   * before Linux 4.3 there is no ambient set. */
  if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
    problem(problems, "clearing ambient capabilities", errno);

  now = (Sets){.effective = keep, .permitted = keep, .inheritable = 0};
  rc = set_sets(&now);
  if (rc < 0)
    problem(problems, "capset", -rc);
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
    problem(problems, "no-new-privs", errno);

  read_state(out);
  out->effective_at_start = old.effective;
  out->dropped = rc == 0 && (old.permitted & ~keep) != 0;
  names = agent_privileges_mask_names(out->effective, ",");
  if (problems->len)
    g_snprintf(out->reason, sizeof(out->reason), "%s", problems->str);
  else if (out->dropped)
    g_snprintf(out->reason, sizeof(out->reason), "kept what shrinkd uses after start-up");
  else
    g_snprintf(out->reason, sizeof(out->reason), "started without capabilities to give up");
  if (problems->len)
    g_warning("privileges: %s; capabilities now %s (CapEff %016" PRIx64 ")", problems->str,
              *names ? names : "none", out->effective);
  else
    g_message("privileges: capabilities %s (CapEff %016" PRIx64 " -> %016" PRIx64 ")%s; %s",
              *names ? names : "none", out->effective_at_start, out->effective,
              out->no_new_privs ? ", no-new-privs" : "", out->reason);
}
