#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Capture real guest files for the agent's unit tests.

    tests/vm/capture-fixtures.py [WORKDIR] [--out DIR]

Boots test guests and copies what shrinkd reads -- /proc/meminfo,
/proc/vmstat, /proc/pressure/memory, the virtio-balloon PCI function's sysfs
files (config space, resource, ids), the virtio device's features, and
/dev/kmsg -- in several states, into DIR/<state>/ (default
tests/vm/captured/), each with a README.txt saying how it was captured.

Each state directory holds a tree under root/ laid out as in the guest
(root/proc/..., root/sys/bus/pci/devices/BDF/...), so that readers with a
configurable root can be pointed at it, plus:
  balloon-cfg.txt                output of tools/balloon-cfg (window method)
  balloon-device-config.bin      the 16 bytes of struct virtio_balloon_config
                                 it read (num_pages, actual, free_page_hint_cmd_id,
                                 poison_val; little endian u32)
  config-as-nobody.bin           the PCI config file read by uid 65534 (64 bytes)
  query-balloon.json             QMP query-balloon at capture time
  kmsg.txt                       (some states) raw /dev/kmsg records
States: idle-1024mib, inflated-512mib, hog-800mib, stalled-256mib-hog,
inflated-512mib-deflate-on-oom, idle-free-page-hint-reporting,
free-page-hint-migration, after-free-page-hint.
"""

import argparse
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vmlib  # noqa: E402
from vmlib import MiB  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
T0 = time.monotonic()

# Runs in the guest as /usr/local/bin/snap, in three steps so that the moment
# of the snapshot allocates no memory (in a guest with a stalled balloon, a
# fork or even a pipe write calls the OOM killer):
#   snap prepare STATE   copy the static sysfs files; start `balloon-cfg -w -S`
#                        (tools/balloon-cfg.c), which opens and primes
#                        everything, locks its memory and waits for SIGUSR1;
#                        prints "SNAP-READY STATE pid=PID"
#   kill -USR1 PID       (a shell builtin) takes the snapshot; when balloon-cfg
#                        has written it out, /tmp/cap/STATE/done appears
#   snap finish STATE [kmsg]   arranges the files, copies /dev/kmsg if asked
SNAP = r"""#!/bin/sh
set -u
cmd=$1; st=$2; d=/tmp/cap/$st; r=$d/root
case $cmd in
prepare)
    rm -rf "$d"; mkdir -p "$r/proc/pressure" "$d/snap"
    for p in /sys/bus/pci/devices/*; do
        [ "$(cat $p/vendor)" = 0x1af4 ] || continue
        case "$(cat $p/device)" in 0x1002|0x1045) ;; *) continue;; esac
        o=$r/sys/bus/pci/devices/${p##*/}
        mkdir -p "$o"
        for f in resource vendor device subsystem_vendor subsystem_device class revision irq; do
            cat "$p/$f" > "$o/$f"
        done
        for v in "$p"/virtio*; do
            mkdir -p "$o/${v##*/}"
            for f in device vendor features status; do cat "$v/$f" > "$o/${v##*/}/$f"; done
            echo "${v##*/}/driver -> $(readlink "$v/driver")" >> "$d/links.txt"
        done
        echo "/sys/bus/pci/devices/${p##*/} -> $(readlink "$p")" >> "$d/links.txt"
        su -s /bin/sh nobody -c "cat $p/config" > "$d/config-as-nobody.bin"
        cfg=$o/config
    done
    ( balloon-cfg -w -S "$d/snap" -c "$cfg" -o "$d/balloon-device-config.bin" \
          > "$d/balloon-cfg.txt" 2>&1 </dev/null; : > "$d/done" ) &
    while ! grep -q '^WAITING' "$d/balloon-cfg.txt" 2>/dev/null; do
        [ -e "$d/done" ] && { cat "$d/balloon-cfg.txt"; exit 1; }
        sleep 0.05
    done
    echo "SNAP-READY $st pid=$(sed -n 's/^WAITING //p' "$d/balloon-cfg.txt")"
    ;;
finish)
    mv "$d/snap/meminfo" "$d/snap/vmstat" "$r/proc/"
    mv "$d/snap/pressure-memory" "$r/proc/pressure/memory"
    mv "$d/snap/uptime" "$d/uptime"
    rmdir "$d/snap"
    sed -i '/^WAITING/d' "$d/balloon-cfg.txt"
    if [ "${3:-}" = kmsg ]; then
        # /dev/kmsg blocks at the end of the buffer: stop reading after 1 s
        timeout 1 cat /dev/kmsg > "$d/kmsg.txt" 2>/dev/null
    fi
    rm -f "$d/done"
    echo "SNAP-DONE $st"
    ;;
esac
"""


def log(msg):
    print("[%7.3f] %s" % (time.monotonic() - T0, msg), flush=True)


class Capture:
    def __init__(self, g, out, qemu_version, release):
        self.g = g
        self.out = out
        self.qemu_version = qemu_version
        self.release = release

    def prepare(self, state):
        """Step 1: static files, and balloon-cfg waiting to take the snapshot."""
        r = self.g.sh("snap prepare %s" % state, timeout=60)
        m = re.search(r"SNAP-READY \S+ pid=(\d+)", r.out)
        if not m:
            raise RuntimeError("snap prepare %s failed: %s" % (state, r.out))
        self.pid = int(m.group(1))

    def fire(self, state, timeout=30):
        """Step 2: take the snapshot; the console runs shell builtins only."""
        g = self.g
        self.query_balloon = g.qmp.cmd("query-balloon")
        g.sh("kill -USR1 %d" % self.pid)
        deadline = time.monotonic() + timeout
        while g.sh("[ -e /tmp/cap/%s/done ]" % state).rc != 0:
            if time.monotonic() > deadline:
                raise RuntimeError("snapshot %s did not complete" % state)
            time.sleep(0.1)

    def finish(self, state, how, kmsg=False, extra=None,
               prepared="right before the snapshot"):
        """Phase 3: kmsg if asked, bring the files to the host, write README.txt."""
        g = self.g
        r = g.sh("snap finish %s%s" % (state, " kmsg" if kmsg else ""), timeout=60)
        if "SNAP-DONE" not in r.out:
            raise RuntimeError("snap finish %s failed: %s" % (state, r.out))
        dest = os.path.join(self.out, state)
        if os.path.exists(dest):
            shutil.rmtree(dest)
        g.fetch_dir("/tmp/cap/" + state, dest)
        with open(os.path.join(dest, "query-balloon.json"), "w") as f:
            json.dump(self.query_balloon, f)
            f.write("\n")
        for name, text in (extra or {}).items():
            with open(os.path.join(dest, name), "w") as f:
                f.write(text)
        self.readme(dest, state, how, kmsg, prepared)
        log("captured %s: %s" % (state, open(os.path.join(dest, "balloon-cfg.txt")).read()
                                 .splitlines()[-1]))
        return dest

    def snap(self, state, how, kmsg=False, extra=None):
        """All three phases at once (for states where forking is fine)."""
        self.prepare(state)
        self.fire(state)
        return self.finish(state, how, kmsg, extra)

    def readme(self, dest, state, how, kmsg, prepared):
        g = self.g
        cmdline = open(os.path.join(g.dir, "cmdline.txt")).read().strip()
        cmdline = cmdline.replace(g.workdir, "$WORKDIR")
        files = []
        for dirpath, _dirs, names in os.walk(dest):
            for n in sorted(names):
                files.append(os.path.relpath(os.path.join(dirpath, n), dest))
        text = """State: {state}
Captured {date} by tests/vm/capture-fixtures.py (re-run it to refresh; it
overwrites this directory).

Guest kernel: Debian {release} (package linux-image-{release}, unpacked by
  tests/vm/fetch-kernel.sh, not installed), busybox initramfs from
  tests/vm/mkinitramfs.py with tools/balloon-cfg and tools/hog.
QEMU: {qemu}, accel {accel}, {mem} MiB guest, 1 vCPU, no swap.
QEMU command line:
  {cmdline}

What was done before the snapshot (host side through QMP, guest side on the
serial console, as root unless said otherwise):
{how}

The snapshot was taken by the guest script `snap` (the SNAP string in
capture-fixtures.py) and tools/balloon-cfg.c, as root, in steps so that the
snapshot itself allocates no memory (in a guest whose balloon is stalled, a
fork or a pipe write calls the OOM killer):
 1. "snap prepare" ({prepared}) copied with cat the
    static files of the virtio-balloon PCI function (vendor 0x1af4, device
    0x1002 or 0x1045):
      root/sys/bus/pci/devices/BDF/{{resource,vendor,device,subsystem_vendor,
          subsystem_device,class,revision,irq}}
      root/sys/bus/pci/devices/BDF/virtioN/{{device,vendor,features,status}}
      links.txt: where the sysfs symlinks pointed (readlink)
      config-as-nobody.bin: BDF/config read as uid 65534 (the kernel gives
          unprivileged readers only the first 64 bytes)
    and started `balloon-cfg -w -S ...`, which opened and read everything once,
    locked its memory and waited for SIGUSR1.
 2. The host sent `kill -USR1 PID` (a shell builtin) on the console. balloon-cfg
    then read again, in this order, within a millisecond or so:
      root/proc/meminfo, root/proc/vmstat, root/proc/pressure/memory, uptime
          (/proc/uptime),
      root/sys/bus/pci/devices/BDF/config: the 256-byte PCI config space as root
          sees it (the VIRTIO_PCI_CAP_PCI_CFG window fields hold whatever the
          last window access left there: zero on a fresh boot),
      balloon-device-config.bin: struct virtio_balloon_config through the
          PCI_CFG window: num_pages, actual, free_page_hint_cmd_id, poison_val
          (little-endian u32 each); balloon-cfg.txt is its output,
    and only then wrote them out.{kmsg}
query-balloon.json: QMP query-balloon (bytes), just before the signal.

balloon-cfg read: {cfgline}

Files:
{files}
""".format(state=state, date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           release=self.release, qemu=self.qemu_version, accel=g.accel, mem=g.mem_mib,
           cmdline=cmdline, how="\n".join("  - " + h for h in how),
           prepared=prepared,
           cfgline=open(os.path.join(dest, "balloon-cfg.txt")).read().splitlines()[-1],
           kmsg=("\n 3. \"snap finish\": kmsg.txt, `timeout 1 cat /dev/kmsg` as root: every\n"
                 "    record in the kernel's buffer, in /dev/kmsg format\n"
                 "    (\"prio,seq,usec,flags;text\", continuation lines start with a space).")
                if kmsg else "",
           files="\n".join("  " + f for f in sorted(files)))
        with open(os.path.join(dest, "README.txt"), "w") as f:
            f.write(text)


def wait_hog(g, mib, timeout=300):
    # in a subshell: not a job of the console shell, which would print
    # "Killed" into some command's output when the OOM killer takes hog
    g.run("(hog %d 64 > /tmp/hog.log 2>&1 & echo $! > /tmp/hog.pid)" % mib)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if "HOG-DONE" in g.sh("cat /tmp/hog.log").out:
            return
        time.sleep(0.5)
    raise RuntimeError("hog did not finish")


def main():
    ap = argparse.ArgumentParser(description="capture guest fixtures")
    ap.add_argument("workdir", nargs="?", default=vmlib.default_workdir())
    ap.add_argument("--out", default=os.path.join(HERE, "captured"))
    args = ap.parse_args()
    workdir = os.path.abspath(args.workdir)
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)

    kernel = subprocess.run([os.path.join(HERE, "fetch-kernel.sh"), workdir], check=True,
                            stdout=subprocess.PIPE, universal_newlines=True).stdout.split()[-1]
    release = vmlib.kernel_release(kernel)
    tools = subprocess.run([os.path.join(HERE, "build-tools.sh"), workdir], check=True,
                           stdout=subprocess.PIPE, universal_newlines=True).stdout.split()
    snap = os.path.join(workdir, "snap.sh")
    with open(snap, "w") as f:
        f.write(SNAP)
    os.chmod(snap, 0o755)
    initrd = os.path.join(workdir, "capture.img")
    argv = [sys.executable, os.path.join(HERE, "mkinitramfs.py"), workdir, "-o", initrd,
            "--file", snap + "=/usr/local/bin/snap"]
    for t in tools:
        if not t.endswith("/dyncheck"):
            argv += ["--bin", t]
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    qv = vmlib.qemu_version()

    # ---- guest 1: default balloon; idle, inflated, hog, stalled
    with vmlib.Guest(workdir, name="capture", mem_mib=1024, initrd=initrd) as g:
        g.wait_ready()
        c = Capture(g, out, qv, release)
        c.snap("idle-1024mib", ["booted; nothing else (balloon target = guest size, num_pages 0)"],
               kmsg=True)

        t = time.monotonic()
        g.balloon(512 * MiB)
        w = g.wait_balloon(512 * MiB, 60)
        time.sleep(1)
        c.snap("inflated-512mib", [
            "QMP {\"execute\": \"balloon\", \"arguments\": {\"value\": 536870912}}",
            "polled query-balloon until actual = 512 MiB (took %.2f s), then waited 1 s"
            % (time.monotonic() - t - 1)])

        g.balloon(1024 * MiB)
        g.wait_balloon(1024 * MiB, 60)
        wait_hog(g, 800)
        time.sleep(1)
        how_hog = [
            "inflated to 512 MiB and deflated back to 1024 MiB through QMP balloon",
            "guest: `hog 800 64 &` (tools/hog.c: mmap + touch 800 MiB of anonymous memory "
            "in 64 MiB steps, then sleep), waited for HOG-DONE, then 1 s"]
        c.snap("hog-800mib", how_hog)

        # The stall: target 256 MiB while hog holds 800 MiB; no swap.
        c.prepare("stalled-256mib-hog")
        m = g.mark()
        t0 = time.monotonic()
        g.balloon(256 * MiB)
        timeline = ["# seconds after the QMP balloon command, query-balloon actual (MiB)"]
        while time.monotonic() - t0 < 10:
            timeline.append("%.2f %d" % (time.monotonic() - t0, g.query_balloon() // MiB))
            time.sleep(0.5)
        actual = g.query_balloon() // MiB
        c.fire("stalled-256mib-hog")
        c.finish("stalled-256mib-hog", how_hog + [
            "snapshot hog-800mib taken; snap prepare stalled-256mib-hog",
            "QMP {\"execute\": \"balloon\", \"arguments\": {\"value\": 268435456}} (target 256 MiB)",
            "polled query-balloon every 0.5 s for 10 s (query-balloon-timeline.txt), nothing "
            "run in the guest meanwhile: the balloon stalls short of the target (actual %d MiB "
            "at 10 s) and the driver logs \"Out of puff\" (kmsg.txt, out-of-puff.txt)" % actual,
            "console lines seen meanwhile: %d" % len(g.lines_since(m))],
            kmsg=True, extra={"query-balloon-timeline.txt": "\n".join(timeline) + "\n"},
            prepared="before the balloon command")
        d = os.path.join(out, "stalled-256mib-hog")
        with open(os.path.join(d, "kmsg.txt"), errors="replace") as f:
            recs = f.read().splitlines()
        puff = [r for r in recs if "Out of puff" in r]
        oom = [r for r in recs if "Out of memory" in r or "oom-kill" in r or "Killed process" in r]
        with open(os.path.join(d, "out-of-puff.txt"), "w") as f:
            f.write("\n".join(puff) + "\n")
        hog_alive = g.sh("kill -0 $(cat /tmp/hog.pid)").rc == 0
        with open(os.path.join(d, "README.txt"), "a") as f:
            f.write("\nout-of-puff.txt: the records of kmsg.txt containing \"Out of puff\" (%d).\n"
                    "After the snapshot: hog %s; kmsg.txt holds %d OOM-related records.\n"
                    % (len(puff), "still alive" if hog_alive else "was killed", len(oom)))
        log("stall: actual %d MiB, %d 'Out of puff' records, %d OOM records, hog %s"
            % (actual, len(puff), len(oom), "alive" if hog_alive else "killed"))

    # ---- guest 2: deflate-on-oom (MemTotal does not move)
    with vmlib.Guest(workdir, name="capture-doom", mem_mib=1024, initrd=initrd,
                     deflate_on_oom=True) as g:
        g.wait_ready()
        c = Capture(g, out, qv, release)
        g.balloon(512 * MiB)
        w = g.wait_balloon(512 * MiB, 60)
        time.sleep(1)
        c.snap("inflated-512mib-deflate-on-oom", [
            "balloon device with deflate-on-oom=on (feature bit 2; the guest keeps "
            "ballooned pages in MemTotal)",
            "QMP balloon 512 MiB, polled query-balloon until reached (%.2f s), waited 1 s"
            % w.elapsed])

    # ---- guest 3: free page hinting + reporting: idle, during and after a migration
    with vmlib.Guest(workdir, name="capture-fph", mem_mib=1024, initrd=initrd,
                     free_page_hint=True, free_page_reporting=True) as g:
        g.wait_ready()
        c = Capture(g, out, qv, release)
        how_fph = ["balloon device with free-page-hint=on (with an iothread) and "
                   "free-page-reporting=on (feature bits 3 and 5); booted"]
        c.snap("idle-free-page-hint-reporting", how_fph + ["nothing else"])

        # During hinting MemFree collapses for a moment although the memory is
        # free: a guest loop (shell builtins only) fires the snapshot when
        # MemFree drops below 300 MiB. The collapse is short (a few hundred ms)
        # and the loop does not always see it: migrate again if it did not.
        state = "free-page-hint-migration"
        c.prepare(state)
        g.run("(m=999999999; while :; do while read -r k v u; do [ $k = MemFree: ] && break; done "
              "</proc/meminfo; [ $v -lt $m ] && m=$v; [ $v -lt 307200 ] && { kill -USR1 %d; break; }; "
              "done >/dev/null 2>&1 &)" % c.pid)
        g.qmp.cmd("migrate-set-parameters", {"max-bandwidth": 64 * MiB})
        for attempt in range(1, 6):
            t0 = time.monotonic()
            g.qmp.cmd("migrate", uri="exec:cat > /dev/null")
            while True:
                st = g.qmp.cmd("query-migrate")
                if st.get("status") in ("completed", "failed", "cancelled"):
                    break
                time.sleep(0.05)
            took = time.monotonic() - t0
            g.qmp.cmd("cont")
            c.query_balloon = g.qmp.cmd("query-balloon")
            deadline = time.monotonic() + 3
            while g.sh("[ -e /tmp/cap/%s/done ]" % state).rc != 0 and time.monotonic() < deadline:
                time.sleep(0.1)
            if g.sh("[ -e /tmp/cap/%s/done ]" % state).rc == 0:
                break
            log("migration %d: the collapse was not seen, migrating again" % attempt)
        else:
            raise RuntimeError("the MemFree collapse never fired the snapshot")
        ram = st.get("ram", {})
        c.finish(state, how_fph + [
            "snap prepare %s; then in the guest a loop of shell builtins reading "
            "/proc/meminfo that sends SIGUSR1 to balloon-cfg when MemFree < 300 MiB" % state,
            "QMP migrate-set-parameters max-bandwidth=64 MiB/s; QMP migrate "
            "uri=\"exec:cat > /dev/null\": %s in %.2f s (ram total %s, transferred %s); "
            "then QMP cont (the guest is paused after a completed migration); "
            "migration number %d of this guest (the loop can miss the collapse; "
            "the script then migrates again)"
            % (st.get("status"), took, ram.get("total"), ram.get("transferred"), attempt),
            "the snapshot fired during the free page hinting, while MemFree had collapsed "
            "(memory is really free: the guest driver holds it to report it to the host); "
            "query-balloon.json was taken after cont"],
            prepared="before the migration")

        c.snap("after-free-page-hint", how_fph + [
            "the migration of state free-page-hint-migration completed and the guest resumed "
            "(free_page_hint_cmd_id is now 1, VIRTIO_BALLOON_CMD_ID_DONE, and MemFree is back)"])
    write_index(out, release, qv)
    log("fixtures in %s" % out)


INDEX = """Real files captured from QEMU test guests, for the agent's unit tests.
Written by tests/vm/capture-fixtures.py (re-run it to refresh everything):
Debian kernel {release}, {qemu}, TCG, 1024 MiB guests, 1 vCPU, no swap.

Each directory is one state; its README.txt says exactly how it was reached
and captured. root/ in each is laid out like the guest's / (root/proc/meminfo,
root/proc/vmstat, root/proc/pressure/memory, root/sys/bus/pci/devices/BDF/...),
so readers that take a root directory can be pointed at it.

  idle-1024mib                     fresh boot, balloon empty (num_pages 0); kmsg.txt
                                   is the whole boot log in /dev/kmsg format
  inflated-512mib                  balloon holds 512 MiB of a 1024 MiB guest, done
                                   (num_pages = actual = 131072; MemTotal fell)
  hog-800mib                       an application holds 800 MiB, balloon empty
  stalled-256mib-hog               target 256 MiB while the application holds
                                   800 MiB: num_pages 196608, actual far short,
                                   MemFree near the watermarks, PSI barely moved;
                                   kmsg.txt has the driver's "Out of puff" records
                                   and the OOM kill that followed the snapshot
  inflated-512mib-deflate-on-oom   deflate-on-oom=on: 512 MiB ballooned but MemTotal
                                   unchanged (feature bit 2 set)
  idle-free-page-hint-reporting    free-page-hint=on, free-page-reporting=on
                                   (feature bits 3 and 5), idle
  free-page-hint-migration         the same during a migration: MemFree collapsed
                                   while the memory is really free (not pressure);
                                   free_page_hint_cmd_id is >= 0x80000000 while QEMU
                                   asks for hints, 0 (STOP) once it stops asking:
                                   which one a capture gets depends on timing
  after-free-page-hint             after it: free_page_hint_cmd_id = 1 (DONE)

Binary files: root/sys/bus/pci/devices/BDF/config (256 bytes of PCI config
space as root), config-as-nobody.bin (the 64 bytes a non-root reader gets),
balloon-device-config.bin (16 bytes: num_pages, actual, free_page_hint_cmd_id,
poison_val, little-endian u32, read through the PCI_CFG capability window).
"""


def write_index(out, release, qemu):
    with open(os.path.join(out, "README.txt"), "w") as f:
        f.write(INDEX.format(release=release, qemu=qemu))


if __name__ == "__main__":
    main()
