#!/usr/bin/env bash
# `meson install` into a staging dir, then build and run a service outside the tree with
# only what was installed: headers, libmicro, micro.pc, the plugins.
set -euo pipefail
build_root=$1
source_file=$2
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

meson install -C "$build_root" --destdir "$stage" --no-rebuild --quiet >/dev/null
pc=$(find "$stage" -name micro.pc | head -n1)
[ -n "$pc" ] || { echo "FAIL: micro.pc was not installed"; exit 1; }
plugins=$(find "$stage" -type d -path '*/micro/plugins' | head -n1)
[ -n "$plugins" ] || { echo "FAIL: no plugin directory installed"; exit 1; }
for plugin in micro-registry-memory.so micro-transport-tcp.so micro-selector-roundrobin.so micro-broker-memory.so; do
  [ -f "$plugins/$plugin" ] || { echo "FAIL: $plugin not installed in $plugins"; exit 1; }
done

# The .pc names the real prefix; point it into the staging dir.
export PKG_CONFIG_PATH=$(dirname "$pc")
prefix=$(pkg-config --variable=prefix micro)
flags=$(pkg-config --define-variable=prefix="$stage$prefix" --cflags --libs micro)
g++ -std=c++20 -Wall -Wextra -Werror -o "$stage/outside_service" "$source_file" $flags -pthread

libdir=$(dirname "$(find "$stage" -name 'libmicro.so' | head -n1)")
output=$(MICRO_PLUGIN_PATH="$plugins" LD_LIBRARY_PATH="$libdir" "$stage/outside_service")
echo "$output"
grep -q '^hello installed$' <<<"$output" || { echo "FAIL: the outside service did not answer"; exit 1; }
# The plugins it found first are the installed ones, not the build tree's.
grep -q "plugin transport/tcp $plugins/micro-transport-tcp.so" <<<"$output" \
  || { echo "FAIL: tcp was not loaded from the installed plugins"; exit 1; }
echo "ok: installed headers, libmicro, micro.pc and plugins build and run an outside service"
