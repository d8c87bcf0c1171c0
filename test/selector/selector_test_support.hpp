// test/selector/selector_test_support.hpp — what the selector test programs share: loading a
// selector plugin as an application would, a few nodes, outcomes, and counting picks.
#pragma once

#include <array>
#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <doctest/doctest.h>

#include <boost/asio/io_context.hpp>

#include <micro/context.hpp>
#include <micro/plugin_loader.hpp>
#include <micro/registry.hpp>
#include <micro/selector.hpp>

namespace selector_test {

using namespace std::chrono_literals;

inline boost::asio::io_context& io_context() {
  static boost::asio::io_context context;
  return context;
}

inline std::shared_ptr<micro::Selector> load_selector(
    const std::string& name, const std::vector<std::pair<std::string, std::string>>& options = {}) {
  return micro::PluginLoader::instance().create<micro::Selector>(name, "", options,
                                                                 io_context().get_executor());
}

inline std::vector<micro::Node> nodes_named(std::size_t count) {
  std::vector<micro::Node> nodes;
  for (std::size_t i = 0; i < count; ++i) {
    nodes.push_back({"node-" + std::to_string(i), "127.0.0.1:" + std::to_string(1001 + i), {}});
  }
  return nodes;
}

inline std::vector<micro::Node> three_nodes() {
  return nodes_named(3);
}

inline const micro::Outcome failure{false, 503, 1ms};
inline const micro::Outcome success{true, 0, 1ms};

// Counts picks of `count` first attempts over three nodes.
inline std::array<int, 3> pick_counts(micro::Selector& selector, std::string_view service,
                                      const std::vector<micro::Node>& nodes, int count) {
  std::array<int, 3> counts{};
  micro::Context context;
  for (int i = 0; i < count; ++i) {
    std::size_t index = selector.select_node(service, nodes, context, 1);
    REQUIRE(index < nodes.size());
    ++counts[index];
  }
  return counts;
}

}  // namespace selector_test
