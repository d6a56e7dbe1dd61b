/* SPDX-License-Identifier: MIT
 *
 * hog: hold anonymous memory inside the test guest, like an application that
 * does not cooperate with the balloon.
 *
 *   hog MIB [STEP_MIB]
 *
 * Maps and touches MIB MiB in steps of STEP_MIB (default 64), printing
 * "HOG <done> MiB t=<seconds>" after each step and "HOG-DONE <done> MiB" at
 * the end, then sleeps until killed. Built static by build-tools.sh so that it
 * needs nothing from the guest.
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    long total = argc > 1 ? atol(argv[1]) : 256;
    long step = argc > 2 ? atol(argv[2]) : 64;
    long done = 0;
    double t0 = now();

    if (total <= 0 || step <= 0) {
        fprintf(stderr, "usage: hog MIB [STEP_MIB]\n");
        return 2;
    }
    setvbuf(stdout, NULL, _IONBF, 0);
    while (done < total) {
        long n = total - done < step ? total - done : step;
        size_t len = (size_t)n << 20;
        char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) {
            perror("hog: mmap");
            break;
        }
        for (size_t i = 0; i < len; i += 4096)
            p[i] = (char)(i >> 12 | 1);
        done += n;
        printf("HOG %ld MiB t=%.3f\n", done, now() - t0);
    }
    printf("HOG-DONE %ld MiB\n", done);
    for (;;)
        pause();
}
