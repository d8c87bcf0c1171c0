// selector/hash — consistent hashing on a metadata key of the call
// (`selector=hash?key=user-id`): calls with the same key value go to the same node.
//
// Algorithm: rendezvous (highest random weight) hashing. Every node gets a score, a 64-bit
// mix of the key value's hash and the node id's hash; the call goes to the node with the
// highest score. Removing a node moves exactly the keys it had (each to its second-best
// node); adding one moves exactly the keys it now wins, about 1/(N+1) of them; no other key
// moves. Chosen over a ring with virtual nodes because service node lists are short (a score
// per node is a few nanoseconds), it needs no ring rebuilt whenever the registry's list
// changes, and its spread is even without tuning a virtual-node count. The hashes are FNV-1a
// and a splitmix64 finaliser: the same key picks the same node in every client process.
//
// Nodes are identified by Node::id, or by Node::address when the id is empty.
//
// Retries and failures: nodes that micro::NodeHealth (<micro/node_health.hpp>) has penalised
// or ejected are passed over for the next-best usable node, so a key moves only while its
// node is unhealthy; an ejected node's half-open probe is carried by the next pick after its
// period. A retry (attempt 2, 3, …) while every node counts as healthy goes to the key's 2nd,
// 3rd, … node, so it does not hit the node that just failed.
//
// A call without the metadata key is given a uniformly random usable node.
#include <algorithm>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include <micro/context.hpp>
#include <micro/node_health.hpp>
#include <micro/plugin.hpp>
#include <micro/registry.hpp>
#include <micro/selector.hpp>

namespace {

std::uint64_t fnv1a(std::string_view text) {
  std::uint64_t hash = 14695981039346656037ull;
  for (unsigned char character : text) hash = (hash ^ character) * 1099511628211ull;
  return hash;
}

std::uint64_t mix(std::uint64_t value) {  // splitmix64's finaliser
  value ^= value >> 30;
  value *= 0xbf58476d1ce4e5b9ull;
  value ^= value >> 27;
  value *= 0x94d049bb133111ebull;
  return value ^ (value >> 31);
}

std::uint64_t score(std::uint64_t key_hash, const micro::Node& node) {
  return mix(key_hash ^ mix(fnv1a(node.id.empty() ? node.address : node.id)));
}

class HashSelector final : public micro::Selector {
 public:
  explicit HashSelector(const micro::PluginArguments& arguments)
      : key_(arguments.get_string("key")), health_(micro::NodeHealthOptions::from(arguments)) {}

  std::size_t select_node(std::string_view service, std::span<const micro::Node> nodes,
                          const micro::Context& context, int attempt) override {
    micro::require_nodes("hash", service, nodes);
    const std::size_t count = nodes.size();
    if (count == 1) return 0;
    const std::string* value = context.metadata().find(key_);
    auto now = micro::NodeHealth::Clock::now();

    if (health_.all_healthy(now)) {
      if (!value) return micro::thread_random_below(count);
      // The attempt-th best node: attempt 1 is the key's own.
      return ranked(fnv1a(*value), nodes,
                    static_cast<std::size_t>(std::max(attempt, 1) - 1) % count,
                    [](std::size_t) { return true; });
    }
    micro::NodeHealth::PickView view = health_.pick(service, nodes, now);
    if (auto probe = view.probe()) return *probe;
    auto usable = [&view](std::size_t index) {
      return view.usable(index);
    };
    if (!value) {
      std::size_t wanted = micro::thread_random_below(view.usable_count());
      for (std::size_t index = 0; index < count; ++index) {
        if (!view.usable(index)) continue;
        if (wanted == 0) return index;
        --wanted;
      }
    }
    return ranked(fnv1a(value ? std::string_view(*value) : std::string_view()), nodes, 0, usable);
  }

  void report(std::string_view service, const micro::Node& node,
              const micro::Outcome& outcome) override {
    health_.record(service, node, outcome);
  }

 private:
  // The index of the node ranked `place` (0: best) by score among those `allowed` takes.
  // One pass per place; places past 0 only come with retries.
  template <class Allowed>
  static std::size_t ranked(std::uint64_t key_hash, std::span<const micro::Node> nodes,
                            std::size_t place, Allowed allowed) {
    std::size_t best = nodes.size();
    std::uint64_t best_score = 0, ceiling = UINT64_MAX;
    std::size_t ceiling_index = nodes.size();
    for (std::size_t round = 0; round <= place; ++round) {
      best = nodes.size();
      for (std::size_t index = 0; index < nodes.size(); ++index) {
        if (!allowed(index)) continue;
        std::uint64_t value = score(key_hash, nodes[index]);
        // Below the previous round's winner (ties broken by index, so every node has a place).
        bool below = value < ceiling || (value == ceiling && index > ceiling_index);
        if (round > 0 && !below) continue;
        if (best == nodes.size() || value > best_score || (value == best_score && index < best)) {
          best = index;
          best_score = value;
        }
      }
      if (best == nodes.size()) return ceiling_index == nodes.size() ? 0 : ceiling_index;
      ceiling = best_score;
      ceiling_index = best;
    }
    return best;
  }

  const std::string key_;
  micro::NodeHealth health_;
};

const micro::PluginOption options[] = {
    {"key", "string", "Hash-Key",
     "the call metadata key whose value picks the node (absent: a random node)"},
    MICRO_NODE_HEALTH_PLUGIN_OPTIONS};

}  // namespace

MICRO_PLUGIN(selector, hash, "consistent (rendezvous) hashing on a call metadata key", options,
             [](const micro::PluginArguments& arguments) -> micro::PluginObject* {
               return new HashSelector(arguments);
             })
