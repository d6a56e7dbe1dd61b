#!/bin/sh
# SPDX-License-Identifier: MIT
# Runs the benchmarks and prints their tables (figures, not assertions).
#   tools/bench.sh [--rounds R] [--idle-seconds S]   (options for bench/fanout.py)
set -eu
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
export BUILD_DIR
tools/install-deps.sh
tools/build.sh
echo "== fan-out: shrinkd against a bare epoll fan-out"
python3 bench/fanout.py "$BUILD_DIR" "$@"
echo
echo "== the balloon in a QEMU guest: reaction and convergence against a free-memory inflate"
python3 bench/vm-balloon.py "$BUILD_DIR"
echo
echo "== the same with 1 vCPU: under TCG the balloon's host side and the applications' freeing take turns"
python3 bench/vm-balloon.py "$BUILD_DIR" --smp 1 --reps 3 --idle-seconds 5
echo
echo "== libvirt: virt-shrink setmem (the guest warned first) against virsh setmem (reactive)"
python3 bench/vm-libvirt.py "$BUILD_DIR"
echo
echo "== live migration: bytes sent without shrinkd, with shrinkd reactive, with virt-shrink"
python3 bench/vm-migrate.py "$BUILD_DIR"
echo
echo "== the host channel: guest-ping round trip, shrinkd against qemu-ga"
python3 bench/channel-ping.py "$BUILD_DIR"
echo
echo "== hostile local users: the daemon's RSS and root's latency under each flood, against no flood"
python3 bench/hostile-rss.py "$BUILD_DIR" || [ $? = 77 ]  # 77: not root, it said so
