/* SPDX-License-Identifier: MIT
 *
 * testport: the VM tests' eyes inside the guest, over a virtio-serial port,
 * built so that it keeps working in a guest whose balloon has stalled (where
 * a fork, or a pipe write, calls the OOM killer).
 *
 *   testport PORT [-k]
 *
 * PORT is the guest side of a virtio-serial port (/dev/virtio-ports/NAME)
 * whose host side the test has already connected (a guest write blocks while
 * no host is connected). Everything is opened and the memory locked before
 * "TESTPORT-READY" is written to the port; after that nothing is allocated.
 *
 * Requests from the host, one per line, answered at once on the port:
 *   T TOKEN    "T TOKEN REALTIME_US MONOTONIC_US": the guest's clocks, for an
 *              NTP-style offset estimate (the host keeps the sample with the
 *              smallest round trip)
 *   M TOKEN    "M TOKEN MemTotal=KIB MemFree=KIB MemAvailable=KIB":
 *              /proc/meminfo read through a descriptor opened beforehand
 *   B TOKEN    "B TOKEN armed balloon_inflate=N", then, at the first change
 *              of /proc/vmstat balloon_inflate (read every millisecond
 *              while armed), "B TOKEN REALTIME_US balloon_inflate=M": when
 *              the balloon took its first page, for tests that need to know
 *              what came before it. One watch at a time (a new B re-arms).
 *   Q          "Q": quit
 * With -k, every /dev/kmsg record written after the start is forwarded as
 * "K MONOTONIC_US TEXT" (the record's text, first line). Reading starts at
 * the end of the log (SEEK_END): only what happens during the test.
 *
 * Built static by tests/vm/guestlib.py. Exit status 1 if PORT cannot be
 * opened.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static char inbuf[4096];
static size_t inlen;
static char out[16384];
static char rec[8192];
static char mem[8192];
static char vmstat[16384];

/* The balloon watch of a B request (armed: token[0] != 0). */
static char watch_token[64];
static long watch_start;

static long vmstat_inflate(int fd)
{
    ssize_t len = pread(fd, vmstat, sizeof vmstat - 1, 0);
    vmstat[len > 0 ? len : 0] = 0;
    const char *p = strstr(vmstat, "\nballoon_inflate ");
    return p ? strtol(p + strlen("\nballoon_inflate "), NULL, 10) : -1;
}

static uint64_t clock_us(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Writes all of buf; the port blocks while the host is not reading. */
static int write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN) {
                struct pollfd p = { .fd = fd, .events = POLLOUT };
                poll(&p, 1, 100);
                continue;
            }
            return -1;
        }
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

static long meminfo_kib(const char *text, const char *key)
{
    const char *p = strstr(text, key);
    return p ? strtol(p + strlen(key), NULL, 10) : -1;
}

static void answer(int port, int meminfo, int vmstat_fd, char *line)
{
    int n = 0;
    if (line[0] == 'B' && line[1] == ' ') {
        snprintf(watch_token, sizeof watch_token, "%s", line + 2);
        watch_start = vmstat_inflate(vmstat_fd);
        n = snprintf(out, sizeof out, "B %s armed balloon_inflate=%ld\n", watch_token, watch_start);
    } else if (line[0] == 'T' && line[1] == ' ') {
        uint64_t rt = clock_us(CLOCK_REALTIME), mono = clock_us(CLOCK_MONOTONIC);
        n = snprintf(out, sizeof out, "T %s %" PRIu64 " %" PRIu64 "\n", line + 2, rt, mono);
    } else if (line[0] == 'M') {
        ssize_t len = pread(meminfo, mem, sizeof mem - 1, 0);
        mem[len > 0 ? len : 0] = 0;
        n = snprintf(out, sizeof out, "M %s MemTotal=%ld MemFree=%ld MemAvailable=%ld\n",
                     line[1] == ' ' ? line + 2 : "-", meminfo_kib(mem, "MemTotal:"),
                     meminfo_kib(mem, "MemFree:"), meminfo_kib(mem, "MemAvailable:"));
    } else if (line[0] == 'Q') {
        write_all(port, "Q\n", 2);
        exit(0);
    } else {
        n = snprintf(out, sizeof out, "? %s\n", line);
    }
    if (n > 0)
        write_all(port, out, (size_t)n < sizeof out ? (size_t)n : sizeof out - 1);
}

/* One /dev/kmsg record: "prio,seq,usec,flags;text\n[ continuation...]". */
static void forward_kmsg(int port, const char *r, ssize_t len)
{
    const char *semi = memchr(r, ';', (size_t)len);
    if (!semi)
        return;
    unsigned long long usec = 0;
    sscanf(r, "%*u,%*u,%llu", &usec);
    const char *text = semi + 1;
    const char *end = memchr(text, '\n', (size_t)(r + len - text));
    if (!end)
        end = r + len;
    int n = snprintf(out, sizeof out, "K %llu %.*s\n", usec, (int)(end - text), text);
    if (n > 0)
        write_all(port, out, (size_t)n < sizeof out ? (size_t)n : sizeof out - 1);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: testport PORT [-k]\n");
        return 2;
    }
    int want_kmsg = argc > 2 && strcmp(argv[2], "-k") == 0;
    int port = open(argv[1], O_RDWR | O_CLOEXEC);
    if (port < 0) {
        perror(argv[1]);
        return 1;
    }
    int meminfo = open("/proc/meminfo", O_RDONLY | O_CLOEXEC);
    int vmstat_fd = open("/proc/vmstat", O_RDONLY | O_CLOEXEC);
    int kmsg = -1;
    if (want_kmsg) {
        kmsg = open("/dev/kmsg", O_RDONLY | O_NONBLOCK | O_CLOEXEC);
        if (kmsg >= 0)
            lseek(kmsg, 0, SEEK_END);
    }
    /* Touch the buffers and the stack, then lock everything. */
    memset(out, 0, sizeof out);
    memset(rec, 0, sizeof rec);
    memset(mem, 0, sizeof mem);
    memset(vmstat, 0, sizeof vmstat);
    if (mlockall(MCL_CURRENT | MCL_FUTURE) < 0)
        perror("testport: mlockall");
    {
        int n = snprintf(out, sizeof out, "TESTPORT-READY pid=%ld kmsg=%s\n", (long)getpid(),
                         !want_kmsg ? "off" : kmsg >= 0 ? "on" : strerror(errno));
        write_all(port, out, (size_t)n);
    }

    struct pollfd fds[2] = {
        { .fd = port, .events = POLLIN },
        { .fd = kmsg, .events = POLLIN },
    };
    for (;;) {
        if (poll(fds, kmsg >= 0 ? 2 : 1, watch_token[0] ? 1 : -1) < 0) {
            if (errno == EINTR)
                continue;
            return 1;
        }
        if (fds[0].revents & POLLIN) {
            ssize_t n = read(port, inbuf + inlen, sizeof inbuf - 1 - inlen);
            if (n > 0) {
                inlen += (size_t)n;
                char *start = inbuf, *nl;
                while ((nl = memchr(start, '\n', (size_t)(inbuf + inlen - start)))) {
                    *nl = 0;
                    answer(port, meminfo, vmstat_fd, start);
                    start = nl + 1;
                }
                inlen = (size_t)(inbuf + inlen - start);
                memmove(inbuf, start, inlen);
                if (inlen == sizeof inbuf - 1)
                    inlen = 0; /* a line too long: drop it */
            }
        } else if (fds[0].revents & (POLLHUP | POLLERR)) {
            /* The host closed its end: wait for it to come back. */
            struct timespec ts = { 0, 50 * 1000 * 1000 };
            nanosleep(&ts, NULL);
        }
        if (watch_token[0]) {
            long now = vmstat_inflate(vmstat_fd);
            if (now != watch_start) {
                int n = snprintf(out, sizeof out, "B %s %" PRIu64 " balloon_inflate=%ld\n",
                                 watch_token, clock_us(CLOCK_REALTIME), now);
                write_all(port, out, (size_t)n);
                watch_token[0] = 0;
            }
        }
        if (kmsg >= 0 && (fds[1].revents & POLLIN)) {
            for (;;) {
                ssize_t n = read(kmsg, rec, sizeof rec - 1);
                if (n < 0 && errno == EPIPE)
                    continue; /* records overwritten before we read them */
                if (n <= 0)
                    break;
                forward_kmsg(port, rec, n);
            }
        }
    }
}
