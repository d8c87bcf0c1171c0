// core/src/build_tree.cpp — the build trees registered by uninstalled programs (build_tree.hpp).
#include "build_tree.hpp"

#include <algorithm>
#include <mutex>
#include <utility>

namespace micro::detail {

namespace {

struct Registered {
  std::mutex mutex;
  std::vector<std::filesystem::path> roots;
};

Registered& registered() {
  static Registered instance;
  return instance;
}

}  // namespace

void add_build_tree_root(std::filesystem::path root) {
  auto& state = registered();
  std::lock_guard lock(state.mutex);
  if (std::find(state.roots.begin(), state.roots.end(), root) == state.roots.end())
    state.roots.push_back(std::move(root));
}

std::vector<std::filesystem::path> build_tree_roots() {
  auto& state = registered();
  std::lock_guard lock(state.mutex);
  return state.roots;
}

}  // namespace micro::detail
