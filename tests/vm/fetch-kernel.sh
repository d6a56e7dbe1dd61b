#!/bin/sh
# shellcheck disable=SC2012  # ls on globs of our own, plain file names
# SPDX-License-Identifier: MIT
#
# fetch-kernel.sh: get a guest kernel for the VM tests without installing it.
#
#   tests/vm/fetch-kernel.sh WORKDIR        # prints the path of vmlinuz on stdout
#
# Downloads (apt-get download, never apt-get install) the kernel package that
# the Debian metapackage linux-image-cloud-amd64 currently depends on, e.g.
# linux-image-6.1.0-56-cloud-amd64, and unpacks it with dpkg-deb -x into
# WORKDIR/kernel (so WORKDIR/kernel/boot/vmlinuz-* and
# WORKDIR/kernel/lib/modules/<version>/). The .deb is kept in WORKDIR/debs.
#
# Idempotent: an already unpacked kernel is reused as is (no apt at all); an
# already downloaded .deb is unpacked without downloading again. To pick up a
# newer kernel, delete WORKDIR/kernel and WORKDIR/debs.
#
# Environment:
#   SHRINKD_VM_KERNEL_PKG   package to fetch instead of resolving the metapackage
#                           (e.g. linux-image-6.1.0-56-cloud-amd64)
#   SHRINKD_VM_KERNEL_META  metapackage to resolve (default linux-image-cloud-amd64)
set -eu

W=${1:?usage: fetch-kernel.sh WORKDIR}
mkdir -p "$W"
W=$(cd "$W" && pwd)
META=${SHRINKD_VM_KERNEL_META:-linux-image-cloud-amd64}

log() { echo "fetch-kernel: $*" >&2; }

find_vmlinuz() { ls "$W"/kernel/boot/vmlinuz-* 2>/dev/null | head -n 1; }

# 1. Already unpacked: nothing to do.
v=$(find_vmlinuz)
if [ -n "$v" ] && [ -d "$W/kernel/lib/modules" ]; then
    log "reusing $v"
    echo "$v"
    exit 0
fi

mkdir -p "$W/debs"

# 2. Which package? Prefer a cached .deb so that no apt metadata is needed.
PKG=${SHRINKD_VM_KERNEL_PKG:-}
if [ -z "$PKG" ]; then
    deb=$(ls "$W"/debs/linux-image-*_amd64.deb 2>/dev/null | head -n 1 || true)
    if [ -n "$deb" ]; then
        PKG=$(basename "$deb" | cut -d_ -f1)
    else
        resolve() {
            apt-cache depends "$META" 2>/dev/null |
                awk '/Depends: linux-image-[0-9]/ { print $2; exit }'
        }
        PKG=$(resolve)
        if [ -z "$PKG" ]; then
            # Fresh machine without package lists.
            log "cannot resolve $META, running apt-get update"
            apt-get -q -o DPkg::Lock::Timeout=60 update >&2
            PKG=$(resolve)
        fi
        [ -n "$PKG" ] || { log "cannot resolve the kernel package behind $META"; exit 1; }
    fi
fi

# 3. Download (only if not cached).
deb=$(ls "$W"/debs/"$PKG"_*_amd64.deb 2>/dev/null | head -n 1 || true)
if [ -z "$deb" ]; then
    log "downloading $PKG"
    # As root, apt would try to drop to the _apt user, which cannot write to
    # WORKDIR; download as root instead (nothing is installed).
    (cd "$W/debs" && apt-get download -q -o APT::Sandbox::User=root "$PKG" >&2)
    deb=$(ls "$W"/debs/"$PKG"_*_amd64.deb | head -n 1)
else
    log "using cached $deb"
fi

# 4. Unpack into a temporary directory, then move into place, so that an
#    interrupted run never leaves a half-unpacked WORKDIR/kernel behind.
rm -rf "$W/kernel.tmp" "$W/kernel"
dpkg-deb -x "$deb" "$W/kernel.tmp"
mv "$W/kernel.tmp" "$W/kernel"

v=$(find_vmlinuz)
[ -n "$v" ] || { log "no vmlinuz in $deb"; exit 1; }
log "unpacked $PKG ($(ls "$W/kernel/lib/modules"))"
echo "$v"
