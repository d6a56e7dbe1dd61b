/* SPDX-License-Identifier: MIT */
/*
 * The baseline for the fan-out benchmark: the least a fan-out can cost.
 * One epoll server sends one 40-byte message per "shrinker" over P
 * SOCK_SEQPACKET connections (one per client process, as libshrink has)
 * and waits for one 40-byte reply per message. No protocol, no policy.
 *
 * usage: bare-fanout N PROCS ROUNDS
 * prints: one line per round, the round time in microseconds.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MSG_BYTES 40

static double now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

/* A client process: answer every message with one of the same size. */
static void serve(int fd) {
  char buf[MSG_BYTES];
  for (;;) {
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n <= 0)
      _exit(0);
    if (send(fd, buf, (size_t)n, MSG_NOSIGNAL) != n)
      _exit(1);
  }
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s N PROCS ROUNDS\n", argv[0]);
    return 2;
  }
  int n = atoi(argv[1]), procs = atoi(argv[2]), rounds = atoi(argv[3]);
  if (n < 1 || procs < 1 || procs > n || rounds < 1) {
    fprintf(stderr, "bare-fanout: need 1 <= PROCS <= N and ROUNDS >= 1\n");
    return 2;
  }
  int *fds = calloc((size_t)procs, sizeof *fds);
  pid_t *pids = calloc((size_t)procs, sizeof *pids);
  int ep = epoll_create1(EPOLL_CLOEXEC);
  for (int p = 0; p < procs; p++) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
      perror("socketpair");
      return 1;
    }
    pids[p] = fork();
    if (pids[p] == 0) {
      close(sv[0]);
      serve(sv[1]);
    }
    close(sv[1]);
    fds[p] = sv[0];
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)p};
    epoll_ctl(ep, EPOLL_CTL_ADD, fds[p], &ev);
  }
  char msg[MSG_BYTES] = {1};
  struct epoll_event evs[64];
  for (int r = 0; r < rounds + 1; r++) {
    double t0 = now_us();
    for (int i = 0; i < n; i++)
      if (send(fds[i % procs], msg, sizeof msg, MSG_NOSIGNAL) != (ssize_t)sizeof msg) {
        perror("send");
        return 1;
      }
    int replies = 0;
    while (replies < n) {
      int k = epoll_wait(ep, evs, 64, 10000);
      if (k <= 0) {
        fprintf(stderr, "bare-fanout: no reply in 10 s\n");
        return 1;
      }
      for (int e = 0; e < k; e++) {
        char buf[MSG_BYTES];
        int fd = fds[evs[e].data.u32];
        while (recv(fd, buf, sizeof buf, MSG_DONTWAIT) > 0)
          replies++;
      }
    }
    if (r > 0) /* the first round warms caches up, as shrinkd's does */
      printf("%.1f\n", now_us() - t0);
  }
  for (int p = 0; p < procs; p++)
    close(fds[p]);
  while (wait(NULL) > 0 || errno == EINTR)
    ;
  free(fds);
  free(pids);
  return 0;
}
