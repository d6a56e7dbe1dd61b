/* SPDX-License-Identifier: MIT
 *
 * forge-puff: what any guest user can do to the kernel log, to check that
 * shrinkd does not take it for the balloon driver's or the OOM killer's.
 *
 *   forge-puff COUNT [UID]
 *
 * Forks COUNT children; each drops to UID (default 65534, nobody), names
 * itself "Out of puff!" (PR_SET_NAME) and dies of a segfault, so that the
 * kernel logs "Out of puff![PID]: segfault at 0 ...". Run as root, it first
 * writes two records to /dev/kmsg (which the kernel files as LOG_USER):
 * the driver's exact words, and an OOM killer's line. Prints
 * "FORGED <crashes> <kmsg-writes>" at the end. Static (build-tools.sh).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

static int write_kmsg(void)
{
    static const char *lines[] = {
        "<4>virtio_balloon virtio0: Out of puff! Can't get 1 pages\n",
        "<3>Out of memory: Killed process 1 (init) total-vm:1kB, anon-rss:1kB\n",
    };
    int fd = open("/dev/kmsg", O_WRONLY), n = 0;

    if (fd < 0)
        return 0;
    for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++)
        n += write(fd, lines[i], strlen(lines[i])) > 0;
    close(fd);
    return n;
}

int main(int argc, char **argv)
{
    int count = argc > 1 ? atoi(argv[1]) : 0;
    uid_t uid = argc > 2 ? (uid_t)atol(argv[2]) : 65534;
    int crashed = 0, written = geteuid() == 0 ? write_kmsg() : 0;

    if (count <= 0) {
        fprintf(stderr, "usage: forge-puff COUNT [UID]\n");
        return 2;
    }
    for (int i = 0; i < count; i++) {
        int st;
        pid_t pid = fork();

        if (pid == 0) {
            if (setgid(uid) != 0 || setuid(uid) != 0)
                _exit(3);
            prctl(PR_SET_NAME, "Out of puff!", 0, 0, 0);
            *(volatile int *)0 = 0;
            _exit(4);
        }
        if (pid > 0 && waitpid(pid, &st, 0) == pid && WIFSIGNALED(st))
            crashed++;
        /* The kernel rate-limits segfault lines (10 in 5 s): space them. */
        usleep(100 * 1000);
    }
    printf("FORGED %d %d\n", crashed, written);
    return crashed == count ? 0 : 1;
}
