/* SPDX-License-Identifier: MIT */
/*
 * The baseline for the fan-out benchmark: the least a fan-out can cost.
 * One epoll server sends one 40-byte message per "shrinker" over P
 * SOCK_SEQPACKET connections (one per client process, as libshrink has)
 * and waits for one 40-byte reply per message. No protocol, no policy.
 *
 * To measure what fanout.py measures of shrinkd, a round here is like one
 * of shrinkd's: it starts on a trigger after a quiet pause (fanout.py
 * sends a line on stdin, as it sends shrinkd a control request), the
 * messages go to the connections in ORDER (the order shrinkd sent them
 * in, as its report says), and the time runs from the first send to the
 * receipt of the last reply.
 *
 * usage: bare-fanout N PROCS ROUNDS [PAUSE_US [ORDER]]
 *   ROUNDS: rounds to run, each after PAUSE_US of sleep (default 0); or
 *   "-": one round per line read on stdin, until its end.
 *   ORDER: N comma-separated connection indices (0..PROCS-1), one per
 *   message in sending order; default: round robin.
 * prints: one line per round, the round time in microseconds; for the
 * first round, which warms caches up, nothing ("warm-up" when driven).
 */
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
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

static void pause_us(long us) {
  struct timespec ts = {.tv_sec = us / 1000000, .tv_nsec = (us % 1000000) * 1000};
  while (us > 0 && nanosleep(&ts, &ts) < 0 && errno == EINTR)
    ;
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

/* Fills @order (N entries) from "i,j,..." or round robin. Returns 0 or -1. */
static int parse_order(const char *text, int n, int procs, int *order) {
  if (!text) {
    for (int i = 0; i < n; i++)
      order[i] = i % procs;
    return 0;
  }
  for (int i = 0; i < n; i++) {
    char *end;
    long v = strtol(text, &end, 10);
    if (end == text || v < 0 || v >= procs || *end != (i + 1 < n ? ',' : '\0'))
      return -1;
    order[i] = (int)v;
    text = end + 1;
  }
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 4 || argc > 6) {
    fprintf(stderr, "usage: %s N PROCS ROUNDS [PAUSE_US [ORDER]]\n", argv[0]);
    return 2;
  }
  int n = atoi(argv[1]), procs = atoi(argv[2]);
  bool driven = strcmp(argv[3], "-") == 0;
  int rounds = driven ? INT_MAX - 1 : atoi(argv[3]);
  long pause = argc > 4 ? atol(argv[4]) : 0;
  if (n < 1 || procs < 1 || procs > n || rounds < 1 || pause < 0) {
    fprintf(stderr, "bare-fanout: need 1 <= PROCS <= N, ROUNDS >= 1 or -, and PAUSE_US >= 0\n");
    return 2;
  }
  int *order = calloc((size_t)n, sizeof *order);
  if (parse_order(argc > 5 ? argv[5] : NULL, n, procs, order) < 0) {
    fprintf(stderr, "bare-fanout: ORDER must be %d indices in 0..%d\n", n, procs - 1);
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
    if (driven) {
      int c;
      while ((c = getchar()) != '\n' && c != EOF)
        ;
      if (c == EOF)
        break;
    }
    pause_us(pause);
    double t0 = now_us(), t1 = 0;
    for (int i = 0; i < n; i++)
      if (send(fds[order[i]], msg, sizeof msg, MSG_NOSIGNAL) != (ssize_t)sizeof msg) {
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
          if (++replies == n)
            t1 = now_us(); /* as shrinkd stamps its last reply: on receipt */
      }
    }
    if (r > 0) /* the first round warms caches up, as shrinkd's does */
      printf("%.1f\n", t1 - t0);
    else if (driven)
      printf("warm-up\n");
    if (driven)
      fflush(stdout);
  }
  for (int p = 0; p < procs; p++)
    close(fds[p]);
  while (wait(NULL) > 0 || errno == EINTR)
    ;
  free(order);
  free(fds);
  free(pids);
  return 0;
}
