#!/bin/sh
# shellcheck disable=SC2012  # ls on globs of our own, plain file names
# SPDX-License-Identifier: MIT
#
# boot.sh: boot the test guest by hand, with an interactive shell on the
# serial console (this terminal). Ctrl-A X quits QEMU, Ctrl-A C toggles the
# QEMU monitor.
#
#   tests/vm/boot.sh [WORKDIR] [INITRD]        (INITRD default WORKDIR/smoke.img)
#
# Sockets, under WORKDIR/manual/:
#   qmp.sock     QMP, e.g. balloon the guest to 512 MiB:
#                echo '{"execute":"qmp_capabilities"}{"execute":"balloon","arguments":{"value":536870912}}' |
#                    socat - UNIX-CONNECT:WORKDIR/manual/qmp.sock
#   port0.sock   host side of the virtio-serial port org.shrinkd.agent.0
# Environment: MEM (MiB, default 1024), FPH=1 free-page-hint, FPR=1
# free-page-reporting, DOOM=1 deflate-on-oom, ACCEL (default tcg),
# APPEND (extra kernel command line).
set -eu
D=$(cd "$(dirname "$0")" && pwd)
W=$(cd "${1:-${SHRINKD_VM_WORKDIR:-$D/../../vm-work}}" && pwd)
INITRD=${2:-$W/smoke.img}
KERNEL=$(ls "$W"/kernel/boot/vmlinuz-* | tail -n 1)
S=$W/manual
mkdir -p "$S"
rm -f "$S/qmp.sock" "$S/port0.sock"

B=virtio-balloon-pci,id=balloon0
X=""
[ "${FPH:-0}" = 1 ] && { B="$B,free-page-hint=on,iothread=balloon-io"; X="-object iothread,id=balloon-io"; }
[ "${FPR:-0}" = 1 ] && B="$B,free-page-reporting=on"
[ "${DOOM:-0}" = 1 ] && B="$B,deflate-on-oom=on"

echo "QMP: $S/qmp.sock  port org.shrinkd.agent.0: $S/port0.sock  (Ctrl-A X quits)" >&2
# shellcheck disable=SC2086  # $X is a list of words
exec qemu-system-x86_64 -accel "${ACCEL:-tcg}" -machine pc -smp 1 -m "${MEM:-1024}" \
    -nodefaults -no-user-config -display none -no-reboot \
    -serial mon:stdio -kernel "$KERNEL" -initrd "$INITRD" \
    -append "console=ttyS0 panic=-1 quiet shrinkvm.ports=1 ${APPEND:-}" \
    -qmp "unix:$S/qmp.sock,server=on,wait=off" \
    -device "$B" $X \
    -device virtio-serial-pci,id=vser0 \
    -chardev "socket,id=port0,path=$S/port0.sock,server=on,wait=off" \
    -device virtserialport,bus=vser0.0,chardev=port0,name=org.shrinkd.agent.0
