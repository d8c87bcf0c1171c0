// wrappers/trace — samplers: built-ins, rules by service / endpoint / topic, and settings
// from plugin options and OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG.
#include "samplers.hpp"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>

#include <micro/error.hpp>

namespace micro::trace::sdk {

namespace {

constexpr const char* error_id = "micro.wrapper.trace";

[[noreturn]] void fail(std::string detail) {
  throw Exception(bad_request(error_id, std::move(detail)));
}

std::string_view trim(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
  return text;
}

// A ratio is a plain decimal number in [0, 1]; `where` names its source for the message.
double parse_ratio(std::string_view text, std::string_view where) {
  std::string copy(trim(text));
  char* end = nullptr;
  errno = 0;
  double value = copy.empty() ? NAN : std::strtod(copy.c_str(), &end);
  if (copy.empty() || errno != 0 || end != copy.c_str() + copy.size() || !std::isfinite(value))
    fail(std::string(where) + ": \"" + copy + "\" is not a number (expected a ratio from 0 to 1)");
  if (value < 0 || value > 1)
    fail(std::string(where) + ": " + copy + " is out of range (expected a ratio from 0 to 1)");
  return value;
}

void check_ratio(double ratio, std::string_view where) {
  if (!(ratio >= 0 && ratio <= 1))
    fail(std::string(where) + ": " + std::to_string(ratio) +
         " is out of range (expected a ratio from 0 to 1)");
}

std::string format_ratio(double ratio) {
  char text[32];
  std::snprintf(text, sizeof text, "%.6f", ratio);
  return text;
}

class AlwaysOnSampler final : public Sampler {
 public:
  bool should_sample(const SamplingParameters&) const noexcept override { return true; }
  std::string description() const override { return "AlwaysOnSampler"; }
  Shortcut shortcut() const noexcept override { return {false, Shortcut::Root::always_on}; }
};

class DeferredSampler final : public Sampler {
 public:
  explicit DeferredSampler(double ratio) : ratio_(ratio) {}
  bool should_sample(const SamplingParameters&) const noexcept override { return true; }
  std::string description() const override {
    return "Deferred{ratio=" + std::to_string(ratio_) + "}";
  }
  Shortcut shortcut() const noexcept override {
    Shortcut shortcut{false, Shortcut::Root::always_on};
    shortcut.deferred = true;
    shortcut.deferred_ratio = ratio_;
    return shortcut;
  }

 private:
  double ratio_;
};

class AlwaysOffSampler final : public Sampler {
 public:
  bool should_sample(const SamplingParameters&) const noexcept override { return false; }
  std::string description() const override { return "AlwaysOffSampler"; }
  Shortcut shortcut() const noexcept override { return {false, Shortcut::Root::always_off}; }
};

class TraceIdRatioSampler final : public Sampler {
 public:
  explicit TraceIdRatioSampler(double ratio) : ratio_(ratio) {}
  bool should_sample(const SamplingParameters& parameters) const noexcept override {
    return trace_id_ratio_decision(parameters.trace_id, ratio_);
  }
  std::string description() const override {
    return "TraceIdRatioBased{" + format_ratio(ratio_) + "}";
  }

 private:
  double ratio_;
};

class ParentBasedSampler final : public Sampler {
 public:
  explicit ParentBasedSampler(std::shared_ptr<Sampler> root) : root_(std::move(root)) {}
  bool should_sample(const SamplingParameters& parameters) const noexcept override {
    if (parameters.parent != nullptr && parameters.parent->valid())
      return parameters.parent->sampled();
    return root_->should_sample(parameters);
  }
  std::string description() const override {
    return "ParentBased{root=" + root_->description() + "}";
  }
  Shortcut shortcut() const noexcept override {
    auto root = root_->shortcut();
    // A root that itself follows parents never sees one here; only its own root counts.
    return {true, root.root};
  }

 private:
  std::shared_ptr<Sampler> root_;
};

const std::string* find_string_attribute(std::span<const Attribute> attributes,
                                         std::string_view key) noexcept {
  for (const auto& [name, value] : attributes)
    if (name == key) return std::get_if<std::string>(&value);
  return nullptr;
}

class RuleSampler final : public Sampler {
 public:
  RuleSampler(std::vector<SamplingRule> rules, std::shared_ptr<Sampler> fallback,
              std::string service_name)
      : rules_(std::move(rules)),
        fallback_(std::move(fallback)),
        service_name_(std::move(service_name)) {}

  bool should_sample(const SamplingParameters& parameters) const noexcept override {
    for (const auto& rule : rules_)
      if (matches(rule, parameters))
        return trace_id_ratio_decision(parameters.trace_id, rule.ratio);
    return fallback_->should_sample(parameters);
  }

  std::string description() const override {
    std::string text = "Rules{";
    for (const auto& rule : rules_) text += rule.pattern + "=" + format_ratio(rule.ratio) + ";";
    return text + "else " + fallback_->description() + "}";
  }

 private:
  bool matches_service(const SamplingRule& rule, const SamplingParameters& parameters) const {
    if (!service_name_.empty() && glob_match(rule.pattern, service_name_)) return true;
    for (const char* key : {"rpc.service", "micro.service"}) {
      const auto* value = find_string_attribute(parameters.attributes, key);
      if (value != nullptr && glob_match(rule.pattern, *value)) return true;
    }
    return false;
  }

  // The span name, or the RPC method as "<rpc.service>.<rpc.method>" and alone.
  static bool matches_endpoint(const SamplingRule& rule, const SamplingParameters& parameters) {
    if (glob_match(rule.pattern, parameters.name)) return true;
    const auto* method = find_string_attribute(parameters.attributes, "rpc.method");
    if (method == nullptr) return false;
    if (glob_match(rule.pattern, *method)) return true;
    const auto* service = find_string_attribute(parameters.attributes, "rpc.service");
    return service != nullptr && glob_match(rule.pattern, *service + "." + *method);
  }

  static bool matches_topic(const SamplingRule& rule, const SamplingParameters& parameters) {
    const auto* topic = find_string_attribute(parameters.attributes, "messaging.destination.name");
    return topic != nullptr && glob_match(rule.pattern, *topic);
  }

  bool matches(const SamplingRule& rule, const SamplingParameters& parameters) const {
    switch (rule.subject) {
      case SamplingRule::Subject::service:
        return matches_service(rule, parameters);
      case SamplingRule::Subject::endpoint:
        return matches_endpoint(rule, parameters);
      case SamplingRule::Subject::topic:
        return matches_topic(rule, parameters);
      case SamplingRule::Subject::any:
        break;
    }
    return matches_endpoint(rule, parameters) || matches_topic(rule, parameters) ||
           matches_service(rule, parameters);
  }

  std::vector<SamplingRule> rules_;
  std::shared_ptr<Sampler> fallback_;
  std::string service_name_;
};

std::optional<std::string> environment(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') return std::nullopt;
  return std::string(value);
}

bool known_sampler(std::string_view name) {
  for (std::string_view known : {"always_on", "always_off", "traceidratio", "parentbased_always_on",
                                 "parentbased_always_off", "parentbased_traceidratio", "deferred"})
    if (name == known) return true;
  return false;
}

constexpr const char* known_sampler_list =
    "always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off, "
    "parentbased_traceidratio, deferred";

}  // namespace

std::shared_ptr<Sampler> make_deferred_sampler(double ratio) {
  if (!(ratio >= 0 && ratio <= 1))
    fail("trace: sampling ratio must be within 0..1, got " + std::to_string(ratio));
  return std::make_shared<DeferredSampler>(ratio);
}

bool trace_id_ratio_decision(const TraceId& trace_id, double ratio) noexcept {
  if (ratio >= 1) return true;
  if (ratio <= 0) return false;
  std::uint64_t low = 0;
  for (int index = 8; index < 16; ++index) low = (low << 8) | trace_id.bytes[index];
  // ratio * 2^64 < 2^64 since ratio < 1; computed in long double to keep 64 bits.
  auto bound =
      static_cast<std::uint64_t>(static_cast<long double>(ratio) * 18446744073709551616.0L);
  return low < bound;
}

std::shared_ptr<Sampler> make_always_on_sampler() {
  return std::make_shared<AlwaysOnSampler>();
}
std::shared_ptr<Sampler> make_always_off_sampler() {
  return std::make_shared<AlwaysOffSampler>();
}

std::shared_ptr<Sampler> make_trace_id_ratio_sampler(double ratio) {
  check_ratio(ratio, "trace: ratio");
  return std::make_shared<TraceIdRatioSampler>(ratio);
}

std::shared_ptr<Sampler> make_parent_based_sampler(std::shared_ptr<Sampler> root) {
  return std::make_shared<ParentBasedSampler>(std::move(root));
}

bool glob_match(std::string_view pattern, std::string_view text) noexcept {
  // Iterative matcher with one backtrack point for the last '*': linear for typical patterns.
  std::size_t pattern_index = 0, text_index = 0;
  std::size_t star = std::string_view::npos, star_text = 0;
  while (text_index < text.size()) {
    if (pattern_index < pattern.size() &&
        (pattern[pattern_index] == '?' || pattern[pattern_index] == text[text_index])) {
      ++pattern_index;
      ++text_index;
    } else if (pattern_index < pattern.size() && pattern[pattern_index] == '*') {
      star = pattern_index++;
      star_text = text_index;
    } else if (star != std::string_view::npos) {
      pattern_index = star + 1;
      text_index = ++star_text;
    } else {
      return false;
    }
  }
  while (pattern_index < pattern.size() && pattern[pattern_index] == '*') ++pattern_index;
  return pattern_index == pattern.size();
}

std::vector<SamplingRule> parse_sampling_rules(std::string_view text) {
  std::vector<SamplingRule> rules;
  std::size_t number = 0;
  while (!text.empty()) {
    auto end = text.find(';');
    std::string_view item = trim(text.substr(0, end));
    text = end == std::string_view::npos ? std::string_view{} : text.substr(end + 1);
    ++number;
    if (item.empty()) continue;  // "a=1;;b=0" and a trailing ';' are fine
    std::string where = "trace: rule " + std::to_string(number) + " \"" + std::string(item) + "\"";
    auto equals = item.rfind('=');
    if (equals == std::string_view::npos) fail(where + ": expected <pattern>=<ratio>");
    SamplingRule rule;
    std::string_view pattern = trim(item.substr(0, equals));
    auto colon = pattern.find(':');
    if (colon != std::string_view::npos) {
      std::string_view subject = pattern.substr(0, colon);
      if (subject == "service") {
        rule.subject = SamplingRule::Subject::service;
      } else if (subject == "endpoint") {
        rule.subject = SamplingRule::Subject::endpoint;
      } else if (subject == "topic") {
        rule.subject = SamplingRule::Subject::topic;
      } else {
        fail(where + ": unknown subject \"" + std::string(subject) +
             "\" (expected service, endpoint or topic)");
      }
      pattern = trim(pattern.substr(colon + 1));
    }
    if (pattern.empty()) fail(where + ": empty pattern");
    rule.pattern = std::string(pattern);
    rule.ratio = parse_ratio(item.substr(equals + 1), where);
    rules.push_back(std::move(rule));
  }
  return rules;
}

std::shared_ptr<Sampler> make_rule_sampler(std::vector<SamplingRule> rules,
                                           std::shared_ptr<Sampler> fallback,
                                           std::string service_name) {
  if (rules.empty()) return fallback;
  return std::make_shared<RuleSampler>(std::move(rules), std::move(fallback),
                                       std::move(service_name));
}

SamplerSettings SamplerSettings::from(const PluginArguments& arguments) {
  SamplerSettings settings;
  bool named = false;
  if (arguments.has("sampler")) {
    settings.name = arguments.get_string("sampler");
    named = true;
    if (!known_sampler(settings.name))
      fail("trace: option sampler: unknown sampler \"" + settings.name + "\" (expected one of " +
           known_sampler_list + ")");
  } else if (auto value = environment("OTEL_TRACES_SAMPLER")) {
    settings.name = std::string(trim(*value));
    named = true;
    if (!known_sampler(settings.name))
      fail("trace: OTEL_TRACES_SAMPLER: unknown sampler \"" + settings.name +
           "\" (expected one of " + known_sampler_list + ")");
  }

  if (arguments.has("ratio")) {
    settings.ratio = parse_ratio(arguments.get_string("ratio"), "trace: option ratio");
    if (!named) settings.name = "parentbased_traceidratio";
  } else if (auto value = environment("OTEL_TRACES_SAMPLER_ARG")) {
    // The argument only means something to the ratio samplers; others ignore it (per spec).
    if (settings.name.find("traceidratio") != std::string::npos || settings.name == "deferred")
      settings.ratio = parse_ratio(*value, "trace: OTEL_TRACES_SAMPLER_ARG");
  }

  if (arguments.has("rules")) settings.rules = parse_sampling_rules(arguments.get_string("rules"));
  bool deferred_option =
      arguments.has("keep_errors") || arguments.has("slower_than") || arguments.has("max_buffered");
  if (settings.name == "deferred") {
    if (!settings.rules.empty())
      fail(
          "trace: option rules does not combine with sampler=deferred (rules choose head "
          "samplers' ratios; deferred keeps by error, latency and ratio)");
    if (arguments.has("keep_errors")) settings.keep_errors = arguments.get_bool("keep_errors");
    if (arguments.has("slower_than")) settings.slower_than = arguments.get_duration("slower_than");
    if (arguments.has("max_buffered"))
      settings.max_buffered = static_cast<std::size_t>(arguments.get_int("max_buffered"));
  } else if (deferred_option) {
    fail(
        "trace: options keep_errors, slower_than and max_buffered need sampler=deferred (got "
        "sampler " +
        settings.name + ")");
  }
  return settings;
}

std::shared_ptr<Sampler> make_sampler(const SamplerSettings& settings,
                                      const std::string& service_name) {
  const std::string& name = settings.name;
  bool parent_based = name.starts_with("parentbased_");
  std::string_view root_name = parent_based ? std::string_view(name).substr(12) : name;
  std::shared_ptr<Sampler> root;
  if (root_name == "always_on") {
    root = make_always_on_sampler();
  } else if (root_name == "always_off") {
    root = make_always_off_sampler();
  } else if (root_name == "traceidratio") {
    root = make_trace_id_ratio_sampler(settings.ratio);
  } else if (name == "deferred") {
    return make_deferred_sampler(settings.ratio);
  } else {
    fail("trace: unknown sampler \"" + name + "\" (expected one of " + known_sampler_list + ")");
  }
  root = make_rule_sampler(settings.rules, std::move(root), service_name);
  return parent_based ? make_parent_based_sampler(std::move(root)) : root;
}

}  // namespace micro::trace::sdk
