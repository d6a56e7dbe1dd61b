/* SPDX-License-Identifier: MIT */
/*
 * The shrinkd side of the fan-out benchmark: PROCS processes registering N
 * shrinkers in all through libshrink (one client, so one connection, per
 * process), each callback trivial: it reports freeing what it was asked.
 * malloc_trim is off: the benchmark measures the fan-out, not glibc.
 *
 * usage: client-swarm SOCKET N PROCS
 * prints "READY" when every process has registered its shrinkers, then
 * runs until SIGTERM.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "shrink.h"

static size_t trivial(const shrink_request *req, void *user_data) {
  (void)user_data;
  return req->target_bytes;
}

static void child(const char *sock, int count, int fd) {
  shrink_client *c;
  int r = shrink_client_new(sock, "bench-swarm", SHRINK_CLIENT_NO_TRIM, &c);
  if (r < 0) {
    fprintf(stderr, "client-swarm: %s\n", strerror(-r));
    _exit(1);
  }
  for (int i = 0; i < count; i++) {
    char name[32];
    shrink_shrinker *s;
    snprintf(name, sizeof name, "trivial-%d", i);
    if (shrink_client_register(c, name, SHRINK_PRIORITY_DEFAULT, trivial, NULL, NULL, &s) < 0)
      _exit(1);
  }
  if (write(fd, "r", 1) != 1)
    _exit(1);
  for (;;)
    pause();
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s SOCKET N PROCS\n", argv[0]);
    return 2;
  }
  int n = atoi(argv[2]), procs = atoi(argv[3]);
  if (n < 1 || procs < 1 || procs > n)
    return 2;
  int pipefd[2];
  if (pipe(pipefd) < 0)
    return 1;
  pid_t *pids = calloc((size_t)procs, sizeof *pids);
  for (int p = 0; p < procs; p++) {
    int count = n / procs + (p < n % procs);
    pids[p] = fork();
    if (pids[p] == 0) {
      close(pipefd[0]);
      child(argv[1], count, pipefd[1]);
    }
  }
  close(pipefd[1]);
  for (int p = 0; p < procs; p++) {
    char c;
    if (read(pipefd[0], &c, 1) != 1)
      return 1;
  }
  printf("READY\n");
  fflush(stdout);
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigprocmask(SIG_BLOCK, &set, NULL);
  int sig;
  sigwait(&set, &sig);
  for (int p = 0; p < procs; p++)
    kill(pids[p], SIGKILL);
  while (wait(NULL) > 0)
    ;
  free(pids);
  return 0;
}
