#!/bin/sh
# SPDX-License-Identifier: MIT
#
# setup-host.sh: make sure the host has what the VM tests need (Debian 12, run as root).
#
#   tests/vm/setup-host.sh
#
# Idempotent: if every package is already installed it does not touch apt at
# all (no `apt-get update`, no lock). Otherwise it runs `apt-get update` and
# `apt-get install`, retrying while another apt/dpkg holds the lock.
#
# Extra packages can be added with SHRINKD_VM_EXTRA_PACKAGES="gcc libc6-dev".
set -eu

PACKAGES="qemu-system-x86 busybox-static cpio python3 socat ${SHRINKD_VM_EXTRA_PACKAGES:-}"

missing=""
for p in $PACKAGES; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
    [ "$status" = installed ] || missing="$missing $p"
done

if [ -z "$missing" ]; then
    # shellcheck disable=SC2086  # one word per package
    echo "setup-host: all packages present:" $PACKAGES >&2
    exit 0
fi

if [ "$(id -u)" != 0 ]; then
    echo "setup-host: missing packages:$missing; run as root to install them" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive

# apt_get ARGS...: run apt-get, retrying for up to ~5 minutes while the apt or
# dpkg lock is held by someone else (unattended-upgrades, a parallel job...).
apt_get() {
    n=0
    until apt-get -o DPkg::Lock::Timeout=30 "$@"; do
        n=$((n + 1))
        if [ $n -ge 10 ]; then
            echo "setup-host: apt-get $* kept failing, giving up" >&2
            return 1
        fi
        echo "setup-host: apt-get failed (lock busy?), retry $n in 10 s" >&2
        sleep 10
    done
}

echo "setup-host: installing:$missing" >&2
apt_get update -q
# shellcheck disable=SC2086  # word splitting of the package list is intended
apt_get install -y -q --no-install-recommends $missing
