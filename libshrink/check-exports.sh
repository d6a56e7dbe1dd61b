#!/bin/sh
# SPDX-License-Identifier: MIT
#
# The libshrink-exports test: the shared library must export exactly the
# symbols of libshrink.map, each at its version node, and those must be
# exactly the functions <shrink.h> declares. Anything else (proto_* from the
# static wire library, helpers) leaking out would become ABI by accident.
#
# usage: check-exports.sh LIBRARY LIBSHRINK_MAP SHRINK_H
set -eu

lib=$1 map=$2 header=$3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# From the map: "name@@NODE" for every global of every node.
awk '
  /^[ \t]*[A-Z][A-Z0-9_.]*[ \t]*\{/ { node = $1; sub(/\{.*/, "", node); global = 0; next }
  /global:/ { global = 1; next }
  /local:/ { global = 0; next }
  global && /^[ \t]*[A-Za-z_][A-Za-z0-9_]*;/ { gsub(/[ \t;]/, ""); print $0 "@@" node }
' "$map" | sort >"$tmp/map"

# From the library: defined dynamic symbols, without the version nodes.
nm -D --defined-only --with-symbol-versions "$lib" |
  awk '$2 != "A" { print $3 }' | sort >"$tmp/lib"

# From the header: every function it declares or names.
grep -oE '\b(shrink_[a-z_]+|osv_register_shrinker)\(' "$header" |
  tr -d '(' | sort -u >"$tmp/header"
sed 's/@@.*//' "$tmp/map" | sort -u >"$tmp/map-names"

status=0
if ! diff -u "$tmp/map" "$tmp/lib" >"$tmp/diff1"; then
  echo "exports of $lib differ from $map (- map, + library):"
  cat "$tmp/diff1"
  status=1
fi
if ! diff -u "$tmp/map-names" "$tmp/header" >"$tmp/diff2"; then
  echo "functions of $header differ from $map (- map, + header):"
  cat "$tmp/diff2"
  status=1
fi
if [ "$status" = 0 ]; then
  echo "ok: $(wc -l <"$tmp/map") symbols exported, all declared, all at their version"
fi
exit $status
