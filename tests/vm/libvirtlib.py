# SPDX-License-Identifier: MIT
"""A real libvirt daemon for the VM tests, and guests that it starts
(Python standard library only; built on vmlib.py).

    with Libvirtd(workdir, "lv") as lv:           # a private libvirtd
        g = LibvirtGuest(lv, workdir, "t1", initrd=img, ports=(...))
        g.wait_ready()                            # vmlib.Guest's console API
        lv.virsh("setmem", g.domain, "393216", "--live")

Libvirtd runs libvirtd (Debian 12: the monolithic daemon) by hand, as there
is no systemd here, in a mount namespace of its own where /etc/libvirt,
/run/libvirt, /var/lib/libvirt, /var/log/libvirt and /var/cache/libvirt are
directories under WORKDIR/NAME: it leaves the machine's libvirt alone, two
of them can run side by side (a migration between "two hosts"), and its
socket is reached from outside at WORKDIR/NAME/run/libvirt-sock (uri).
Its QEMU runs as root and writes its output to a file, not through
virtlogd (qemu.conf), so nothing else needs to run. libvirtd is pinned to
CPU 0: on hosts where /dev/kvm exists but is unusable, libvirt would
otherwise see "host CPU changed" and probe QEMU again at every lookup
(seconds each).

LibvirtGuest is a vmlib.Guest whose QEMU libvirt starts from a transient
domain: the same kernel, initramfs, command line, balloon and
virtio-serial ports (each a unix socket QEMU listens on), the serial
console on a unix socket instead of stdio, and QMP through `virsh
qemu-monitor-command` (libvirt owns the monitor). balloon() is `virsh
setmem --live`, as an operator would do it.
"""

import json
import os
import shutil
import socket
import subprocess
import time

import vmlib
from vmlib import MiB

LIBVIRT_DIRS = {  # path inside the namespace -> directory under the root
    "/etc/libvirt": "etc",
    "/run/libvirt": "run",
    "/var/lib/libvirt": "lib",
    "/var/log/libvirt": "log",
    "/var/cache/libvirt": "cache",
}


class LibvirtError(RuntimeError):
    pass


class Libvirtd:
    """A private libvirtd; start() on construction, stop() (or the context
    manager) kills it and every domain it runs."""

    def __init__(self, workdir, name="lv", host_uuid=None, start=True):
        self.root = os.path.join(os.path.abspath(workdir), name)
        self.name = name
        self.host_uuid = host_uuid
        self.pid = None
        self.uri = "qemu+unix:///system?socket=%s/run/libvirt-sock" % self.root
        if start:
            self.start()

    def _configure(self):
        etc = os.path.join(self.root, "etc")
        if os.path.exists(self.root):
            shutil.rmtree(self.root)
        for d in LIBVIRT_DIRS.values():
            os.makedirs(os.path.join(self.root, d))
        shutil.rmtree(etc)
        shutil.copytree("/etc/libvirt", etc, symlinks=True)
        # No networks to autostart: they would need dnsmasq and a bridge.
        shutil.rmtree(os.path.join(etc, "qemu", "networks", "autostart"), ignore_errors=True)
        with open(os.path.join(etc, "qemu.conf"), "a") as f:
            f.write('\n# shrinkd VM tests\nuser = "+0"\ngroup = "+0"\n'
                    'stdio_handler = "file"\nremember_owner = 0\n')
        with open(os.path.join(etc, "libvirtd.conf"), "a") as f:
            f.write('\n# shrinkd VM tests\nunix_sock_group = "root"\n'
                    'unix_sock_rw_perms = "0770"\n')
            if self.host_uuid:
                # Migration refuses a destination with the source's host UUID.
                f.write('host_uuid = "%s"\n' % self.host_uuid)
        for sub in ("lib/qemu", "lib/qemu/channel/target", "log/qemu", "run/qemu"):
            os.makedirs(os.path.join(self.root, sub), exist_ok=True)

    def start(self, timeout=60.0):
        if shutil.which("libvirtd") is None:
            raise LibvirtError("libvirtd is not installed (tools/install-deps.sh installs it)")
        self._configure()
        binds = " && ".join("mount --bind %s %s" % (os.path.join(self.root, d), p)
                            for p, d in LIBVIRT_DIRS.items())
        script = ("set -e; mkdir -p %s; %s; exec taskset -c 0 libvirtd --daemon "
                  "--pid-file=/run/libvirt/libvirtd.pid" % (" ".join(LIBVIRT_DIRS), binds))
        t0 = time.monotonic()
        r = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           universal_newlines=True)
        if r.returncode != 0:
            raise LibvirtError("libvirtd %s did not start (exit %d): %s"
                               % (self.name, r.returncode, r.stdout.strip()))
        pidfile = os.path.join(self.root, "run", "libvirtd.pid")
        deadline = t0 + timeout
        while True:
            if os.path.exists(pidfile) and self.pid is None:
                try:
                    self.pid = int(open(pidfile).read().strip())
                except ValueError:
                    pass
            if self.virsh("version", check=False).returncode == 0:
                break
            if time.monotonic() > deadline:
                raise LibvirtError("libvirtd %s does not answer after %.0f s; its log: %s"
                                   % (self.name, timeout, self.log_tail()))
            time.sleep(0.1)
        self.start_s = time.monotonic() - t0
        return self

    def log_tail(self, n=20):
        out = []
        for p in ("log/libvirtd.log",):
            try:
                out += open(os.path.join(self.root, p)).read().splitlines()[-n:]
            except OSError:
                pass
        return "\n".join(out) or "(no log)"

    def virsh(self, *args, check=True, timeout=120.0):
        """Runs virsh against this daemon; returns the CompletedProcess
        (stdout and stderr as text). check: raise LibvirtError on failure."""
        r = subprocess.run(["virsh", "-c", self.uri] + [str(a) for a in args],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           universal_newlines=True, timeout=timeout)
        if check and r.returncode != 0:
            raise LibvirtError("virsh %s: %s" % (" ".join(str(a) for a in args),
                                                r.stderr.strip() or r.stdout.strip()))
        return r

    def qemu_pid(self, domain):
        path = os.path.join(self.root, "run", "qemu", domain + ".pid")
        try:
            return int(open(path).read().strip())
        except (OSError, ValueError):
            return None

    def qemu_log(self, domain):
        try:
            return open(os.path.join(self.root, "log", "qemu", domain + ".log")).read()
        except OSError:
            return ""

    def stop(self):
        if self.pid is None:
            return
        r = self.virsh("list", "--name", check=False)
        for dom in r.stdout.split():
            self.virsh("destroy", dom, check=False)
        try:
            os.kill(self.pid, 15)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            try:
                os.kill(self.pid, 9)
            except ProcessLookupError:
                pass
        self.pid = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False


class _Console:
    """The serial console's unix socket, as the two pipes vmlib.Guest reads
    and writes."""

    def __init__(self, path, timeout=30.0):
        deadline = time.monotonic() + timeout
        while True:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(path)
                break
            except OSError:
                s.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        self.sock = s
        self.stdout = s.makefile("rb")
        self.stdin = s.makefile("wb")


class _DomainProcess:
    """What vmlib.Guest uses of a subprocess.Popen, for a domain's QEMU."""

    def __init__(self, guest, pid, console):
        self._guest = guest
        self.pid = pid
        self.stdin = console.stdin
        self.stdout = console.stdout
        self._console = console
        self._status = None

    def poll(self):
        if self._status is None:
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                self._status = 0
        return self._status

    def kill(self):
        self._guest.libvirtd.virsh("destroy", self._guest.domain, check=False)
        try:
            self._console.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def wait(self):
        deadline = time.monotonic() + 10
        while self.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        return self._status


class VirshQMP:
    """QMP commands through `virsh qemu-monitor-command` (libvirt owns the
    monitor). cmd() returns the "return" value, raises vmlib.QMPError."""

    def __init__(self, libvirtd, domain):
        self.libvirtd = libvirtd
        self.domain = domain

    def cmd(self, name, args=None, timeout=30.0, **kwargs):
        req = {"execute": name}
        a = dict(args or {}, **kwargs)
        if a:
            req["arguments"] = a
        r = self.libvirtd.virsh("qemu-monitor-command", self.domain, json.dumps(req),
                                check=False, timeout=timeout)
        if r.returncode != 0:
            raise vmlib.QMPError(name, {"class": "virsh", "desc": r.stderr.strip()})
        resp = json.loads(r.stdout)
        if "error" in resp:
            raise vmlib.QMPError(name, resp["error"])
        return resp.get("return")

    def close(self):
        pass


def _xml_escape(s):
    return (s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace("'", "&apos;").replace('"', "&quot;"))


class LibvirtGuest(vmlib.Guest):
    """A vmlib.Guest started by libvirt (see the module's comment). Takes
    the Guest's arguments, plus the Libvirtd and, optionally, the domain's
    name (default shrinkd-NAME) and stats_period (the balloon's statistics
    period in seconds, what `virsh dommemstat` reads; 0: off)."""

    def __init__(self, libvirtd, workdir=None, name="g", domain=None, stats_period=2,
                 start=True, **kw):
        self.libvirtd = libvirtd
        self.domain = domain or "shrinkd-" + name
        self.stats_period = stats_period
        super().__init__(workdir, name=name, start=False, **kw)
        self.console_path = os.path.join(os.path.dirname(self.qmp_path), "console.sock")
        self._opts = kw
        if start:
            self.start()

    def domain_xml(self):
        argv = self.argv
        append = argv[argv.index("-append") + 1]
        mem_kib = self.mem_mib * 1024
        kw = self._opts
        overrides = []
        if kw.get("deflate_on_oom"):
            balloon_attrs = " deflate='on'"
        else:
            balloon_attrs = ""
        if kw.get("free_page_reporting"):
            balloon_attrs += " freePageReporting='on'"
        iothreads = ""
        if kw.get("free_page_hint"):
            # libvirt has no attribute for it: set the device's properties.
            iothreads = "  <iothreads>1</iothreads>\n"
            overrides = [("free-page-hint", "bool", "true"),
                         ("iothread", "string", "iothread1")]
        chans = "".join(
            "    <channel type='unix'>\n"
            "      <source mode='bind' path='%s'/>\n"
            "      <target type='virtio' name='%s'/>\n"
            "    </channel>\n" % (_xml_escape(self._port_paths[p]), _xml_escape(p))
            for p in self.ports)
        stats = "      <stats period='%d'/>\n" % self.stats_period if self.stats_period else ""
        qemu_ns = ""
        qemu_override = ""
        if overrides:
            qemu_ns = " xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'"
            props = "".join("          <qemu:property name='%s' type='%s' value='%s'/>\n" % o
                            for o in overrides)
            qemu_override = ("  <qemu:override>\n    <qemu:device alias='balloon0'>\n"
                             "      <qemu:frontend>\n%s      </qemu:frontend>\n"
                             "    </qemu:device>\n  </qemu:override>\n" % props)
        return (
            "<domain type='%s'%s>\n"
            "  <name>%s</name>\n"
            "  <memory unit='KiB'>%d</memory>\n"
            "  <currentMemory unit='KiB'>%d</currentMemory>\n"
            "  <vcpu>1</vcpu>\n%s"
            "  <os>\n"
            "    <type arch='x86_64' machine='pc'>hvm</type>\n"
            "    <kernel>%s</kernel>\n"
            "    <initrd>%s</initrd>\n"
            "    <cmdline>%s</cmdline>\n"
            "  </os>\n"
            "  <features><acpi/><apic/></features>\n"
            "  <on_poweroff>destroy</on_poweroff>\n"
            "  <on_reboot>destroy</on_reboot>\n"
            "  <on_crash>destroy</on_crash>\n"
            "  <devices>\n"
            "    <emulator>/usr/bin/qemu-system-x86_64</emulator>\n"
            "    <serial type='unix'>\n"
            "      <source mode='bind' path='%s'/>\n"
            "      <log file='%s' append='on'/>\n"
            "      <target port='0'/>\n"
            "    </serial>\n"
            "%s"
            "    <memballoon model='virtio'%s>\n"
            "%s"
            "    </memballoon>\n"
            "  </devices>\n%s"
            "</domain>\n" % (
                "kvm" if self.accel == "kvm" else "qemu", qemu_ns, _xml_escape(self.domain),
                mem_kib, mem_kib, iothreads, _xml_escape(self.kernel), _xml_escape(self.initrd),
                _xml_escape(append), _xml_escape(self.console_path),
                _xml_escape(os.path.join(self.dir, "console-qemu.log")), chans, balloon_attrs, stats,
                qemu_override))

    def start(self):
        xml_path = os.path.join(self.dir, "domain.xml")
        with open(xml_path, "w") as f:
            f.write(self.domain_xml())
        for p in [self.console_path] + list(self._port_paths.values()):
            if os.path.lexists(p):
                os.unlink(p)
        self._serial_log = open(os.path.join(self.dir, "serial.log"), "w")
        self._qmp_log = open(os.path.join(self.dir, "qmp.log"), "w")
        self._stderr = open(os.path.join(self.dir, "qemu.stderr"), "w")
        self.libvirtd.virsh("destroy", self.domain, check=False)
        self.t_start = time.monotonic()
        r = self.libvirtd.virsh("create", xml_path, check=False)
        if r.returncode != 0:
            raise vmlib.BootError("%s: virsh create failed: %s\nQEMU log:\n%s" % (
                self.name, r.stderr.strip(), self.libvirtd.qemu_log(self.domain)[-2000:]))
        self.create_s = time.monotonic() - self.t_start
        self._connect()

    def _connect(self):
        pid = self.libvirtd.qemu_pid(self.domain)
        if pid is None:
            raise vmlib.BootError("%s: no QEMU pid file for %s" % (self.name, self.domain))
        self.proc = _DomainProcess(self, pid, _Console(self.console_path))
        vmlib._live_guests.add(self)
        self._reader_thread = vmlib.threading.Thread(target=self._reader,
                                                     name="serial-" + self.name, daemon=True)
        self._reader_thread.start()

    def migration_xml(self, dest_name):
        """The domain's migratable XML with its console and port sockets
        moved to the guest directory dest_name (the destination's QEMU must
        not take the source's sockets), and a LibvirtGuest (not started) that
        attach() connects to the domain there once migrated. Returns
        (xml_path, guest)."""
        xml = self.libvirtd.virsh("dumpxml", "--migratable", self.domain).stdout
        dest = LibvirtGuest(None, self.workdir, name=dest_name, domain=self.domain,
                            start=False, initrd=self.initrd, ports=self.ports,
                            mem_mib=self.mem_mib, **self._opts_without_ports())
        for path, new in [(self.console_path, dest.console_path),
                          (os.path.join(self.dir, "console-qemu.log"),
                           os.path.join(dest.dir, "console-qemu.log"))] + [
                (self._port_paths[p], dest._port_paths[p]) for p in self.ports]:
            xml = xml.replace("'%s'" % _xml_escape(path), "'%s'" % _xml_escape(new))
        xml_path = os.path.join(dest.dir, "domain-migrate.xml")
        with open(xml_path, "w") as f:
            f.write(xml)
        return xml_path, dest

    def _opts_without_ports(self):
        return {k: v for k, v in self._opts.items() if k not in ("ports", "initrd", "mem_mib")}

    def attach(self, libvirtd):
        """Connects to this guest's domain, already running under libvirtd
        (after a migration there): console and ports as set at construction."""
        self.libvirtd = libvirtd
        for f in ("serial.log", "qmp.log", "qemu.stderr"):
            setattr(self, {"serial.log": "_serial_log", "qmp.log": "_qmp_log",
                           "qemu.stderr": "_stderr"}[f], open(os.path.join(self.dir, f), "w"))
        self.t_start = time.monotonic()
        self._connect()
        return self

    def _why(self):
        why = super()._why()
        log = self.libvirtd.qemu_log(self.domain).strip()
        return why + ("\nQEMU log (libvirt):\n" + log[-2000:] if log else "")

    def close(self):
        super().close()
        if os.path.lexists(self.console_path):
            os.unlink(self.console_path)

    # -------------------------------------------------------------- QMP & balloon

    @property
    def qmp(self):
        if self._qmp is None:
            self._qmp = VirshQMP(self.libvirtd, self.domain)
        return self._qmp

    def balloon(self, target_bytes):
        """`virsh setmem DOMAIN KIB --live`: what an operator runs."""
        self.libvirtd.virsh("setmem", self.domain, str(int(target_bytes) // 1024), "--live")

    def dommemstat(self):
        """`virsh dommemstat`, as {name: KiB}."""
        out = self.libvirtd.virsh("dommemstat", self.domain).stdout
        stats = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit():
                stats[parts[0]] = int(parts[1])
        return stats

    def query_balloon(self):
        """The balloon's actual size as libvirt reports it (dommemstat
        "actual", KiB -> bytes)."""
        return self.dommemstat()["actual"] * 1024


__all__ = ["Libvirtd", "LibvirtGuest", "LibvirtError", "VirshQMP", "MiB"]
