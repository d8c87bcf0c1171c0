// selector/weighted — smooth weighted round robin by node metadata `weight`.
//
// A node's weight is its metadata "weight": a whole number from 0 to 1000, default 1 when
// absent. A weight that is not such a number is logged (once per service and node list) and
// taken as 1, so one badly registered node does not make its service uncallable. Weight 0
// takes a node out of the rotation while any node has a weight above 0.
//
// Order: the smooth weighted round robin of nginx — every turn each node gains its weight,
// the node with the most is picked and loses the total — so weights 5,1,1 give
// a a b a c a a, never five `a` in a row. The sequence repeats after the sum of the weights
// (divided by their greatest common divisor), so it is computed once per node list and a turn
// is then one atomic increment into it: every select_node(), first attempt or retry, takes
// the next turn of the service's sequence.
//
// Feedback: every report() goes to a micro::NodeHealth (<micro/node_health.hpp>): a turn
// that lands on a penalised or ejected node moves on along the sequence to the next usable
// node; an ejected node's half-open probe is carried by the next pick after its period.
//
// Hot path: one shared (read) lock to find the service's sequence, a hash over the node ids
// and weights to see the node list is the one the sequence was made for, one atomic
// increment; the health table is read only while some node is penalised or ejected.
#include <atomic>
#include <charconv>
#include <cstdint>
#include <memory>
#include <mutex>
#include <numeric>
#include <shared_mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <micro/context.hpp>
#include <micro/log.hpp>
#include <micro/node_health.hpp>
#include <micro/plugin.hpp>
#include <micro/registry.hpp>
#include <micro/selector.hpp>
#include <micro/text.hpp>

namespace {

constexpr int max_weight = 1000;

// FNV-1a over the ids (or addresses) and weight strings: which node list a sequence is for.
std::uint64_t fingerprint(std::span<const micro::Node> nodes) {
  std::uint64_t hash = 14695981039346656037ull;
  auto add = [&hash](std::string_view text) {
    for (unsigned char character : text) hash = (hash ^ character) * 1099511628211ull;
    hash = (hash ^ 0xff) * 1099511628211ull;  // a separator, so "ab","c" differs from "a","bc"
  };
  for (const micro::Node& node : nodes) {
    add(node.id.empty() ? node.address : node.id);
    auto weight = node.metadata.find("weight");
    add(weight == node.metadata.end() ? std::string_view("-") : std::string_view(weight->second));
  }
  return hash ^ nodes.size();
}

// The node's weight, or nullopt when its metadata holds something else than 0…1000.
std::optional<int> parse_weight(const micro::Node& node) {
  auto found = node.metadata.find("weight");
  if (found == node.metadata.end()) return 1;
  const std::string& text = found->second;
  int weight = 0;
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), weight);
  if (error != std::errc() || end != text.data() + text.size() || weight < 0 || weight > max_weight)
    return std::nullopt;
  return weight;
}

struct Sequence {
  std::uint64_t fingerprint = 0;
  std::size_t size = 0;              // the node list's length
  std::vector<std::uint32_t> turns;  // node indexes, one period of the smooth rotation
  std::atomic<std::uint64_t> next{0};
};

// One period of smooth weighted round robin over `weights`.
std::vector<std::uint32_t> smooth_rotation(std::vector<int> weights) {
  int divisor = 0;
  for (int weight : weights) divisor = std::gcd(divisor, weight);
  if (divisor == 0) {  // every weight is 0: equal turns
    std::fill(weights.begin(), weights.end(), 1);
    divisor = 1;
  }
  long total = 0;
  for (int& weight : weights) total += weight /= divisor;
  std::vector<long> current(weights.size(), 0);
  std::vector<std::uint32_t> turns;
  turns.reserve(static_cast<std::size_t>(total));
  for (long turn = 0; turn < total; ++turn) {
    std::size_t best = 0;
    for (std::size_t index = 0; index < weights.size(); ++index) {
      current[index] += weights[index];
      if (current[index] > current[best]) best = index;
    }
    current[best] -= total;
    turns.push_back(static_cast<std::uint32_t>(best));
  }
  return turns;
}

class WeightedSelector final : public micro::Selector {
 public:
  explicit WeightedSelector(const micro::PluginArguments& arguments)
      : health_(micro::NodeHealthOptions::from(arguments)) {}

  std::size_t select_node(std::string_view service, std::span<const micro::Node> nodes,
                          const micro::Context&, int) override {
    micro::require_nodes("weighted", service, nodes);
    std::size_t count = nodes.size();
    if (count == 1) return 0;
    std::uint64_t print = fingerprint(nodes);
    auto now = micro::NodeHealth::Clock::now();
    std::shared_lock lock(mutex_);
    Sequence* sequence = find(service);
    if (!sequence || sequence->fingerprint != print || sequence->size != count) {
      lock.unlock();
      rebuild(service, nodes, print);
      lock.lock();
      sequence = find(service);
      // Another thread made it for a different list meanwhile: this pick goes by chance.
      if (!sequence || sequence->size != count) return micro::thread_random_below(count);
    }
    const auto& turns = sequence->turns;
    std::uint64_t turn = sequence->next.fetch_add(1, std::memory_order_relaxed);
    std::size_t index = turns[turn % turns.size()];
    if (health_.all_healthy(now)) return index;

    micro::NodeHealth::PickView view = health_.pick(service, nodes, now);
    if (auto probe = view.probe()) return *probe;
    for (std::size_t step = 0; step < turns.size(); ++step) {
      std::size_t candidate = turns[(turn + step) % turns.size()];
      if (view.usable(candidate)) return candidate;
    }
    // The usable nodes all have weight 0 (not in the sequence): the first of them.
    for (std::size_t candidate = 0; candidate < count; ++candidate)
      if (view.usable(candidate)) return candidate;
    return index;
  }

  void report(std::string_view service, const micro::Node& node,
              const micro::Outcome& outcome) override {
    health_.record(service, node, outcome);
  }

 private:
  Sequence* find(std::string_view service) const {
    auto found = sequences_.find(service);
    return found == sequences_.end() ? nullptr : found->second.get();
  }

  // A new node list for the service: its sequence, made outside the lock, replaces the old.
  void rebuild(std::string_view service, std::span<const micro::Node> nodes, std::uint64_t print) {
    std::vector<int> weights;
    weights.reserve(nodes.size());
    std::string refused;
    for (const micro::Node& node : nodes) {
      auto weight = parse_weight(node);
      if (!weight) {
        if (!refused.empty()) refused += ", ";
        refused += "node '" + (node.id.empty() ? node.address : node.id) + "' has weight '" +
                   node.metadata.at("weight") + "'";
      }
      weights.push_back(weight.value_or(1));
    }
    auto sequence = std::make_unique<Sequence>();
    sequence->fingerprint = print;
    sequence->size = nodes.size();
    sequence->turns = smooth_rotation(std::move(weights));
    std::unique_lock lock(mutex_);
    auto& slot = sequences_[std::string(service)];
    if (slot && slot->fingerprint == print && slot->size == nodes.size()) return;  // a race
    if (!refused.empty())
      micro::log::warn("selector weighted", "service '" + std::string(service) + "': " + refused +
                                                "; expected a whole number from 0 to 1000 "
                                                "(taken as 1)");
    // The old sequence's turn carries over, so a changed list does not restart at node 0.
    // A new service starts at a random turn, so clients started together spread at once.
    sequence->next.store(slot ? slot->next.load(std::memory_order_relaxed)
                              : micro::thread_random());
    // Readers hold the shared lock while they use a sequence, so replacing it here is safe.
    slot = std::move(sequence);
  }

  micro::NodeHealth health_;
  std::shared_mutex mutex_;
  micro::StringMap<std::unique_ptr<Sequence>> sequences_;
};

const micro::PluginOption options[] = {MICRO_NODE_HEALTH_PLUGIN_OPTIONS};

}  // namespace

MICRO_PLUGIN(selector, weighted, "smooth weighted round robin by node metadata 'weight'", options,
             [](const micro::PluginArguments& arguments) -> micro::PluginObject* {
               return new WeightedSelector(arguments);
             })
