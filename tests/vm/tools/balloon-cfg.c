/* SPDX-License-Identifier: MIT
 *
 * balloon-cfg: read the virtio-balloon device configuration from guest
 * userspace, independently of shrinkd, so that VM tests can check what the
 * agent reports and so that fixtures can be captured.
 *
 *   balloon-cfg [-m window|legacy] [-o FILE] [-c FILE] [-S DIR] [-w]
 *
 * Finds the PCI function with vendor 0x1af4 and device 0x1002 (transitional)
 * or 0x1045 (modern) under /sys/bus/pci/devices, walks its capability list and
 * reads the device-specific config (struct virtio_balloon_config: num_pages,
 * actual, free_page_hint_cmd_id, poison_val; little endian u32 each):
 *
 *   window  through the VIRTIO_PCI_CAP_PCI_CFG capability: write bar, offset
 *           and length into the capability in sysfs "config", then read its
 *           pci_cfg_data field (root; no boot flags needed). The default.
 *   legacy  from the legacy I/O BAR 0 ("resource0"; transitional devices only),
 *           at offset 20, or 24 when MSI-X is enabled.
 *
 * Prints "device BDF", one "cap" line per virtio capability and
 * "config num_pages=N actual=N free_page_hint_cmd_id=N poison_val=0xN".
 *   -o FILE  also write the device-config bytes read to FILE
 *   -c FILE  also write the PCI config space as read just before (256 bytes)
 *   -S DIR   snapshot: first copy /proc/meminfo, /proc/vmstat,
 *            /proc/pressure/memory and /proc/uptime into DIR (flat names)
 *   -w       prepare everything, print "WAITING pid", then wait for SIGUSR1
 *            before reading. Everything is opened and read once beforehand and
 *            the memory locked, so that the reads after the signal allocate
 *            nothing: a snapshot can then be taken in a guest so short of
 *            memory that a fork, or a pipe write, calls the OOM killer (a
 *            stalled balloon). Results are written out after all reads.
 * Exit status 1 if no device or a read fails.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define PCI_DEVICES "/sys/bus/pci/devices"
#define CAP_VENDOR 0x09
#define CAP_MSIX 0x11
#define VIRTIO_PCI_CAP_DEVICE_CFG 4
#define VIRTIO_PCI_CAP_PCI_CFG 5
#define CFG_WORDS 4

/* /proc files copied by -S; buffers are static so they can be locked. */
static struct {
    const char *path, *name;
    int fd;
    ssize_t len;
    char buf[16384];
} snap[] = {
    { "/proc/meminfo", "meminfo", -1, 0, "" },
    { "/proc/vmstat", "vmstat", -1, 0, "" },
    { "/proc/pressure/memory", "pressure-memory", -1, 0, "" },
    { "/proc/uptime", "uptime", -1, 0, "" },
};
#define NSNAP (sizeof snap / sizeof snap[0])

static volatile sig_atomic_t fired;

static void on_usr1(int sig)
{
    (void)sig;
    fired = 1;
}

static unsigned long read_hex(const char *dir, const char *file)
{
    char path[512], buf[32] = "";
    FILE *f;

    snprintf(path, sizeof path, "%s/%s/%s", PCI_DEVICES, dir, file);
    if (!(f = fopen(path, "r")))
        return 0;
    if (!fgets(buf, sizeof buf, f))
        buf[0] = 0;
    fclose(f);
    return strtoul(buf, NULL, 16);
}

static int find_balloon(char *bdf, size_t n)
{
    DIR *d = opendir(PCI_DEVICES);
    struct dirent *e;
    int found = -1;

    if (!d)
        return -1;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        unsigned long dev = read_hex(e->d_name, "device");
        if (read_hex(e->d_name, "vendor") == 0x1af4 && (dev == 0x1002 || dev == 0x1045)) {
            snprintf(bdf, n, "%s", e->d_name);
            found = 0;
            break;
        }
    }
    closedir(d);
    return found;
}

static int write_file(const char *dir, const char *name, const void *data, size_t len)
{
    char path[600];
    FILE *f;

    if (dir)
        snprintf(path, sizeof path, "%s/%s", dir, name);
    else
        snprintf(path, sizeof path, "%s", name);
    if (!(f = fopen(path, "wb")) || fwrite(data, 1, len, f) != len || fclose(f)) {
        printf("error: %s: %s\n", path, strerror(errno));
        return -1;
    }
    return 0;
}

/* Read the /proc files of -S (pread at 0 reuses the seq_file buffer). */
static int read_snap(void)
{
    for (size_t i = 0; i < NSNAP; i++) {
        snap[i].len = pread(snap[i].fd, snap[i].buf, sizeof snap[i].buf, 0);
        if (snap[i].len < 0)
            return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *method = "window", *out = NULL, *raw_out = NULL, *snapdir = NULL;
    char bdf[256], path[600];
    uint8_t hdr[256];
    int opt, wait_signal = 0, devcfg_bar = -1, pcicfg = -1, msix = 0, io = -1;
    uint32_t devcfg_off = 0, devcfg_len = 0, v[CFG_WORDS];

    while ((opt = getopt(argc, argv, "m:o:c:S:w")) != -1) {
        if (opt == 'm')
            method = optarg;
        else if (opt == 'o')
            out = optarg;
        else if (opt == 'c')
            raw_out = optarg;
        else if (opt == 'S')
            snapdir = optarg;
        else if (opt == 'w')
            wait_signal = 1;
        else {
            fprintf(stderr, "usage: balloon-cfg [-m window|legacy] [-o FILE] [-c FILE] "
                            "[-S DIR] [-w]\n");
            return 2;
        }
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (find_balloon(bdf, sizeof bdf)) {
        printf("no virtio-balloon PCI device\n");
        return 1;
    }
    printf("device %s id 1af4:%04lx\n", bdf, read_hex(bdf, "device"));

    snprintf(path, sizeof path, "%s/%s/config", PCI_DEVICES, bdf);
    int fd = open(path, strcmp(method, "window") ? O_RDONLY : O_RDWR);
    if (fd < 0 || pread(fd, hdr, sizeof hdr, 0) != (ssize_t)sizeof hdr) {
        printf("error: %s: %s\n", path, strerror(errno));
        return 1;
    }
    if (strcmp(method, "window")) {
        snprintf(path, sizeof path, "%s/%s/resource0", PCI_DEVICES, bdf);
        if ((io = open(path, O_RDONLY)) < 0) {
            printf("error: legacy BAR %s: %s\n", path, strerror(errno));
            return 1;
        }
    }
    /* Capability list: status bit 4, pointer at 0x34. */
    for (int pos = (hdr[6] & 0x10) ? hdr[0x34] & 0xfc : 0, guard = 48; pos && guard--;
         pos = hdr[pos + 1] & 0xfc) {
        if (hdr[pos] == CAP_MSIX)
            msix = hdr[pos + 3] >> 7;
        if (hdr[pos] != CAP_VENDOR)
            continue;
        uint32_t off, len;
        memcpy(&off, hdr + pos + 8, 4);
        memcpy(&len, hdr + pos + 12, 4);
        printf("cap 0x%02x cfg_type=%u bar=%u offset=0x%x length=%u\n", pos, hdr[pos + 3],
               hdr[pos + 4], off, len);
        if (hdr[pos + 3] == VIRTIO_PCI_CAP_DEVICE_CFG) {
            devcfg_bar = hdr[pos + 4];
            devcfg_off = off;
            devcfg_len = len;
        } else if (hdr[pos + 3] == VIRTIO_PCI_CAP_PCI_CFG)
            pcicfg = pos;
    }
    if (!strcmp(method, "window") && (devcfg_bar < 0 || pcicfg < 0 || devcfg_len < sizeof v)) {
        printf("error: no DEVICE_CFG/PCI_CFG capability\n");
        return 1;
    }

    if (snapdir) {
        for (size_t i = 0; i < NSNAP; i++)
            if ((snap[i].fd = open(snap[i].path, O_RDONLY)) < 0) {
                printf("error: %s: %s\n", snap[i].path, strerror(errno));
                return 1;
            }
        if (read_snap()) {
            printf("error: reading /proc: %s\n", strerror(errno));
            return 1;
        }
    }
    if (wait_signal) {
        sigset_t usr1, old;
        struct sigaction sa = { .sa_handler = on_usr1 };
        sigemptyset(&usr1);
        sigaddset(&usr1, SIGUSR1);
        sigprocmask(SIG_BLOCK, &usr1, &old);
        sigaction(SIGUSR1, &sa, NULL);
        if (mlockall(MCL_CURRENT | MCL_FUTURE))
            printf("warning: mlockall: %s\n", strerror(errno));
        printf("WAITING %d\n", (int)getpid());
        while (!fired)
            sigsuspend(&old);
    }

    /* The snapshot: /proc first, then config space, then the device config. */
    if (snapdir && read_snap()) {
        printf("error: reading /proc: %s\n", strerror(errno));
        return 1;
    }
    if (pread(fd, hdr, sizeof hdr, 0) != (ssize_t)sizeof hdr) {
        printf("error: config: %s\n", strerror(errno));
        return 1;
    }
    if (!strcmp(method, "window")) {
        for (int i = 0; i < CFG_WORDS; i++) {
            uint8_t bar = (uint8_t)devcfg_bar;
            uint32_t off = devcfg_off + 4 * i, len = 4;
            if (pwrite(fd, &bar, 1, pcicfg + 4) != 1 || pwrite(fd, &off, 4, pcicfg + 8) != 4 ||
                pwrite(fd, &len, 4, pcicfg + 12) != 4 || pread(fd, &v[i], 4, pcicfg + 16) != 4) {
                printf("error: PCI_CFG window: %s\n", strerror(errno));
                return 1;
            }
        }
    } else if (pread(io, v, sizeof v, msix ? 24 : 20) != (ssize_t)sizeof v) {
        printf("error: legacy BAR: %s\n", strerror(errno));
        return 1;
    }

    /* Only now write anything out. */
    printf("config num_pages=%u actual=%u free_page_hint_cmd_id=%u poison_val=0x%x method=%s\n",
           v[0], v[1], v[2], v[3], method);
    if (out && write_file(NULL, out, v, sizeof v))
        return 1;
    if (raw_out && write_file(NULL, raw_out, hdr, sizeof hdr))
        return 1;
    for (size_t i = 0; snapdir && i < NSNAP; i++)
        if (write_file(snapdir, snap[i].name, snap[i].buf, (size_t)snap[i].len))
            return 1;
    return 0;
}
