// core/src/build_tree.hpp — build trees the plugin loader also searches, for programs that run
// uninstalled. libmicro knows no build tree of its own (an installed libmicro must never look
// in one); the programs the build runs from its tree (tests, examples, benchmarks, the CLI)
// link core/uninstalled/in_build_tree.cpp, which registers theirs before main.
#pragma once

#include <filesystem>
#include <vector>

namespace micro::detail {

// Adds a build tree (plugins in <root>/<kind folder>/<name>/) to the default search path
// of every PluginLoader made afterwards, PluginLoader::instance() included: call it before
// the first one. Thread-safe; a root given twice is kept once.
void add_build_tree_root(std::filesystem::path root);

// The roots added so far, in the order added.
std::vector<std::filesystem::path> build_tree_roots();

}  // namespace micro::detail
