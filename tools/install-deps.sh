#!/bin/sh
# SPDX-License-Identifier: MIT
# Installs what shrinkd needs to build, test and run its demo on Debian 12.
# Idempotent: does nothing when every package is already installed.
#   tools/install-deps.sh          installs what is missing
#   tools/install-deps.sh --list   prints the package list (for .ci/run)
set -eu

# qemu-guest-agent: bench/channel-ping.py measures shrinkd's channel beside it.
# libvirt-daemon-*: the libvirt VM tests start their own libvirtd (no systemd).
PACKAGES="meson ninja-build pkg-config gcc g++ libc6-dev \
  libglib2.0-dev libjson-glib-dev libcunit1-dev libvirt-dev \
  python3 procps strace \
  qemu-system-x86 busybox-static cpio socat \
  qemu-guest-agent \
  libvirt-daemon-system libvirt-daemon-system-sysv libvirt-clients libvirt-daemon-driver-qemu"

if [ "${1:-}" = --list ]; then
  echo $PACKAGES
  exit 0
fi

missing=""
for p in $PACKAGES; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" != 0 ]; then
  echo "install-deps: missing packages:$missing" >&2
  echo "install-deps: run as root (or install them) and try again" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# apt may be busy with another run on a shared machine: wait for it.
apt_get() {
  n=0
  until apt-get "$@"; do
    n=$((n + 1))
    [ $n -ge 30 ] && return 1
    echo "install-deps: apt is busy, retrying in 10 s" >&2
    sleep 10
  done
}
echo "install-deps: installing$missing"
apt_get update -q
apt_get install -y -q --no-install-recommends $missing
