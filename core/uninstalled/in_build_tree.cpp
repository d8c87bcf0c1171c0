// core/uninstalled/in_build_tree.cpp — linked only into programs the build runs from its tree
// (tests, examples, benchmarks, the `micro` CLI; meson: micro_uninstalled_dep), never into
// libmicro. Before main it tells the plugin loader about this build tree, so build/examples/…
// and build/cli/micro find the plugins built beside them without MICRO_PLUGIN_PATH.
//
// The CLI is also installed, and the installed copy carries this object: it registers the
// build tree only while the running program itself lies inside the tree, so an installed
// program searches only MICRO_PLUGIN_PATH and the install directory, like the installed
// libmicro.
#include <algorithm>
#include <filesystem>
#include <system_error>

#include "build_tree.hpp"

#ifndef MICRO_BUILD_ROOT
#error "MICRO_BUILD_ROOT (the build tree's root) is set by core/meson.build"
#endif

namespace {

bool is_inside(const std::filesystem::path& path, const std::filesystem::path& root) {
  auto [root_end, path_end] = std::mismatch(root.begin(), root.end(), path.begin(), path.end());
  (void)path_end;
  return root_end == root.end();
}

// Priority 101: before any ordinary static initialiser of the program could make a loader.
[[gnu::constructor(101)]] void register_build_tree() {
  std::error_code error;
  const auto root = std::filesystem::canonical(MICRO_BUILD_ROOT, error);
  if (error) return;  // the build tree is gone: nothing to find there
  const auto program = std::filesystem::canonical("/proc/self/exe", error);
  if (error || !is_inside(program, root)) return;
  micro::detail::add_build_tree_root(root);
}

}  // namespace
