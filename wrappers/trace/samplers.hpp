// wrappers/trace — samplers: the OTel built-ins (always_on, always_off, traceidratio and the
// parentbased_* family) plus sampling rules by service, endpoint or topic, and how plugin
// options and OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG choose among them.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <micro/plugin.hpp>
#include <micro/trace.hpp>

namespace micro::trace::sdk {

// What a sampler sees when a span starts.
struct SamplingParameters {
  const SpanContext* parent = nullptr;  // null, or a valid parent
  const TraceId& trace_id;
  std::string_view name;
  SpanKind kind = SpanKind::internal;
  std::span<const Attribute> attributes;
};

class Sampler {
 public:
  virtual ~Sampler() = default;
  // True: record and sample. False: drop (a non-recording span that still propagates).
  virtual bool should_sample(const SamplingParameters& parameters) const noexcept = 0;
  // "ParentBased{root=TraceIdRatioBased{0.100000}}" and the like, for logs.
  virtual std::string description() const = 0;

  // What the tracer may decide without calling should_sample: the built-in samplers say
  // so, and the tracer caches it at construction (saves two virtual calls per span).
  struct Shortcut {
    enum class Root : std::uint8_t { ask, always_on, always_off };
    bool follows_parent = false;  // a valid parent's sampled flag decides
    Root root = Root::ask;        // without a parent (or when not following it)
    // sampler=deferred: every span records, and the keep-or-drop decision is the
    // DeferredProcessor's at the end of the local root span. The sampled flag sent on is the
    // parent's, or for a new trace the traceidratio decision at `deferred_ratio`.
    bool deferred = false;
    double deferred_ratio = 1.0;
  };
  virtual Shortcut shortcut() const noexcept { return {}; }
};

std::shared_ptr<Sampler> make_always_on_sampler();
std::shared_ptr<Sampler> make_always_off_sampler();
// Throws micro::Exception 400 unless 0 <= ratio <= 1.
std::shared_ptr<Sampler> make_trace_id_ratio_sampler(double ratio);
// Follows a valid parent's sampled flag (remote or local), `root` decides for new traces.
std::shared_ptr<Sampler> make_parent_based_sampler(std::shared_ptr<Sampler> root);

// The traceidratio decision: the lower 8 bytes of the trace id, read big-endian (they carry
// the W3C random part), compared with ratio * 2^64. Deterministic and monotonic in ratio.
bool trace_id_ratio_decision(const TraceId& trace_id, double ratio) noexcept;

// One sampling rule: spans whose subject matches `pattern` are sampled at `ratio`.
struct SamplingRule {
  enum class Subject { any, service, endpoint, topic };
  Subject subject = Subject::any;
  std::string pattern;  // glob: '*' any run of characters, '?' one character
  double ratio = 1.0;
};

// Parses "payment.*=1.0;Greeter.*=0.5;topic:audit.*=0". Throws micro::Exception 400
// naming the rule and what was wrong.
std::vector<SamplingRule> parse_sampling_rules(std::string_view text);
bool glob_match(std::string_view pattern, std::string_view text) noexcept;

// The first matching rule decides (by traceidratio on the trace id); no match: `fallback`.
// `service_name` is this process's service, used when a span has no rpc.service.
std::shared_ptr<Sampler> make_rule_sampler(std::vector<SamplingRule> rules,
                                           std::shared_ptr<Sampler> fallback,
                                           std::string service_name);

// sampler=deferred ("tail in process"): records every span and keeps a local trace when it
// has an error (keep_errors), a span at least `slower_than` long (0: off), or its trace id
// falls within `ratio`; see DeferredProcessor.
std::shared_ptr<Sampler> make_deferred_sampler(double ratio);

// Which sampler, after options, environment and defaults are merged.
struct SamplerSettings {
  std::string name = "parentbased_always_on";
  double ratio = 1.0;
  std::vector<SamplingRule> rules;
  // sampler=deferred only.
  bool keep_errors = true;
  std::chrono::nanoseconds slower_than{0};
  std::size_t max_buffered = 16384;  // spans of undecided traces held at once

  // Explicit plugin options (sampler, ratio, rules) win over OTEL_TRACES_SAMPLER and
  // OTEL_TRACES_SAMPLER_ARG, which win over the defaults. A `ratio` with no sampler
  // named anywhere selects parentbased_traceidratio. Throws micro::Exception 400 naming
  // the option or variable that holds a bad name or ratio.
  static SamplerSettings from(const PluginArguments& arguments);
};

// Builds the sampler; rules go where the named sampler makes its own decision (the root
// of a parentbased_* sampler, or in front of a plain one). Throws 400 on an unknown name.
std::shared_ptr<Sampler> make_sampler(const SamplerSettings& settings,
                                      const std::string& service_name = {});

}  // namespace micro::trace::sdk
