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

# The installed libmicro and plugins never look into the build tree: no build-tree path in them
# (debug sections aside: they name the build directory by nature). Only the installed CLI
# carries it, registered only while the CLI runs from inside the tree (docs/design.md).
libmicro=$(find "$stage" -name 'libmicro.so.*.*' -type f | head -n1)
[ -n "$libmicro" ] || { echo "FAIL: libmicro was not installed"; exit 1; }
for binary in "$libmicro" "$plugins"/*.so; do
  objcopy --strip-debug "$binary" "$stage/stripped"
  if strings "$stage/stripped" | grep -F "$build_root"; then
    echo "FAIL: $(basename "$binary") holds the build-tree path $build_root (above)"; exit 1
  fi
done
echo "ok: the installed libmicro and plugins hold no build-tree path"

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
# And the loader it runs searches no build tree: every plugin it lists lies outside it.
if grep "^plugin " <<<"$output" | grep -F "$build_root/"; then
  echo "FAIL: the installed libmicro found plugins in the build tree (above)"; exit 1
fi
# The CLI: run from the build tree it finds the build's plugins by itself; installed, it finds
# the installed ones and none in the build tree (though it was built there).
in_tree=$(MICRO_PLUGIN_PATH= "$build_root/cli/micro" plugins)
grep -q "from $build_root/registry/memory/micro-registry-memory.so" <<<"$in_tree" \
  || { echo "FAIL: build/cli/micro did not find the build tree's plugins:"; echo "$in_tree"; exit 1; }
cli=$(find "$stage" -type f -path '*/bin/micro' | head -n1)
[ -n "$cli" ] || { echo "FAIL: the micro CLI was not installed"; exit 1; }
installed_cli=$(MICRO_PLUGIN_PATH="$plugins" LD_LIBRARY_PATH="$libdir" "$cli" plugins)
grep -q "from $plugins/micro-registry-memory.so" <<<"$installed_cli" \
  || { echo "FAIL: the installed CLI did not find the installed plugins:"; echo "$installed_cli"; exit 1; }
if grep -F "from $build_root/" <<<"$installed_cli"; then
  echo "FAIL: the installed CLI searched the build tree (above)"; exit 1
fi
echo "ok: build/cli/micro finds the build tree's plugins, the installed CLI only installed ones"
echo "ok: installed headers, libmicro, micro.pc and plugins build and run an outside service"
