// The trace plugin's SDK half, compiled straight into this test: samplers (ratio statistics,
// parent-based, rules, environment and option precedence, bad values), span limits and
// redaction, the resource from the environment, the batch processor (batch size, delay,
// full queue, flush on shutdown, stuck exporter), span parentage and unsampled spans, and
// deferred sampling (sampler=deferred: keep by error, latency and ratio at the local root).
#include <doctest/doctest.h>

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <micro/error.hpp>
#include <micro/plugin.hpp>
#include <micro/trace.hpp>

#include "batch_processor.hpp"
#include "deferred_processor.hpp"
#include "resource.hpp"
#include "samplers.hpp"
#include "sdk_tracer.hpp"
#include "support/wait.hpp"

// Counts allocations made by the test process, to check that unsampled spans make none.
// (Replacing operator new with malloc/free is valid; g++ cannot see that and warns.)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
namespace {
std::atomic<std::uint64_t> allocation_count{0};
}
void* operator new(std::size_t size) {
  allocation_count.fetch_add(1, std::memory_order_relaxed);
  if (void* pointer = std::malloc(size == 0 ? 1 : size)) return pointer;
  throw std::bad_alloc();
}
void operator delete(void* pointer) noexcept {
  std::free(pointer);
}
void operator delete(void* pointer, std::size_t) noexcept {
  std::free(pointer);
}

using namespace std::chrono_literals;
using test_support::wait_until;
using namespace micro::trace;
using namespace micro::trace::sdk;

namespace {

// Sets (or unsets, with nullptr) an environment variable for one scope.
class ScopedEnvironment {
 public:
  ScopedEnvironment(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value != nullptr)
      setenv(name, value, 1);
    else
      unsetenv(name);
  }
  ~ScopedEnvironment() {
    if (old_)
      setenv(name_.c_str(), old_->c_str(), 1);
    else
      unsetenv(name_.c_str());
  }

 private:
  std::string name_;
  std::optional<std::string> old_;
};

micro::PluginArguments arguments(std::map<std::string, std::string> options = {}) {
  return micro::PluginArguments(micro::PluginKind::wrapper, "trace", "", std::move(options), {});
}

template <class Function>
std::string error_detail(Function&& function) {
  try {
    function();
  } catch (const micro::Exception& error) {
    CHECK(error.error().code == 400);
    return error.error().detail;
  }
  return "(no exception)";
}

TraceId trace_id_with_low(std::uint64_t low) {
  TraceId id;
  id.bytes[0] = 1;
  for (int index = 15; index >= 8; --index) {
    id.bytes[index] = static_cast<std::uint8_t>(low);
    low >>= 8;
  }
  return id;
}

bool decide(const Sampler& sampler, const TraceId& trace_id, const SpanContext* parent = nullptr,
            std::string_view name = "span", std::vector<Attribute> attributes = {}) {
  SamplingParameters parameters{parent, trace_id, name, SpanKind::internal,
                                std::span<const Attribute>(attributes)};
  return sampler.should_sample(parameters);
}

// Keeps every ended span in memory.
class CollectingProcessor final : public SpanProcessor {
 public:
  void on_end(SpanData&& span) noexcept override {
    std::lock_guard lock(mutex_);
    spans_.push_back(std::move(span));
  }
  bool force_flush(std::chrono::milliseconds) override { return true; }
  bool shutdown() override { return true; }
  std::vector<SpanData> spans() {
    std::lock_guard lock(mutex_);
    return spans_;
  }

 private:
  std::mutex mutex_;
  std::vector<SpanData> spans_;
};

// Records batch sizes; optionally blocks in export until released.
struct ExportLog {
  std::mutex mutex;
  std::condition_variable released_signal;
  std::vector<std::size_t> batch_sizes;
  std::vector<std::string> names;
  bool block = false;
  bool released = false;
  std::atomic<int> exports_entered{0};
  std::atomic<bool> shut_down{false};

  std::size_t exported() {
    std::lock_guard lock(mutex);
    std::size_t total = 0;
    for (auto size : batch_sizes) total += size;
    return total;
  }
  void release() {
    std::lock_guard lock(mutex);
    released = true;
    released_signal.notify_all();
  }
};

class TestExporter final : public SpanExporter {
 public:
  explicit TestExporter(std::shared_ptr<ExportLog> log) : log_(std::move(log)) {}
  ExportResult export_spans(std::span<const SpanData> spans) override {
    log_->exports_entered.fetch_add(1);
    std::unique_lock lock(log_->mutex);
    if (log_->block) log_->released_signal.wait(lock, [&] { return log_->released; });
    log_->batch_sizes.push_back(spans.size());
    for (const auto& span : spans) log_->names.push_back(span.name);
    return ExportResult::success;
  }
  void shutdown(std::chrono::milliseconds) override { log_->shut_down = true; }

 private:
  std::shared_ptr<ExportLog> log_;
};

SpanData span_named(std::string name) {
  SpanData span;
  span.name = std::move(name);
  return span;
}

const AttributeValue* attribute(const std::vector<Attribute>& attributes, std::string_view key) {
  for (const auto& [name, value] : attributes)
    if (name == key) return &value;
  return nullptr;
}

std::string string_attribute(const std::vector<Attribute>& attributes, std::string_view key) {
  const auto* value = attribute(attributes, key);
  if (value == nullptr) return "(absent)";
  const auto* text = std::get_if<std::string>(value);
  return text ? *text : "(not a string)";
}

}  // namespace

// ---------------------------------------------------------------- samplers

TEST_CASE("traceidratio samples the configured share of random trace ids") {
  auto sampler = make_trace_id_ratio_sampler(0.25);
  int sampled = 0;
  constexpr int total = 100000;
  for (int index = 0; index < total; ++index) sampled += decide(*sampler, random_trace_id());
  CHECK(sampled > total * 0.24);
  CHECK(sampled < total * 0.26);
  CHECK(sampler->description() == "TraceIdRatioBased{0.250000}");
}

TEST_CASE("traceidratio compares the lower 8 bytes with ratio * 2^64, monotonic in the ratio") {
  CHECK(trace_id_ratio_decision(trace_id_with_low(0), 0.0001));
  CHECK_FALSE(trace_id_ratio_decision(trace_id_with_low(0), 0));
  CHECK_FALSE(trace_id_ratio_decision(trace_id_with_low(~0ULL), 0.9999));
  CHECK(trace_id_ratio_decision(trace_id_with_low(~0ULL), 1));
  // 2^63 - 1 is just below half: sampled at 0.5, not at 0.4999.
  CHECK(trace_id_ratio_decision(trace_id_with_low((1ULL << 63) - 1), 0.5));
  CHECK_FALSE(trace_id_ratio_decision(trace_id_with_low(1ULL << 63), 0.5));
  for (int index = 0; index < 1000; ++index) {
    auto id = random_trace_id();
    if (trace_id_ratio_decision(id, 0.1)) CHECK(trace_id_ratio_decision(id, 0.5));
  }
}

TEST_CASE("always_on, always_off, and parent-based samplers follow the parent's flag") {
  auto id = random_trace_id();
  CHECK(decide(*make_always_on_sampler(), id));
  CHECK_FALSE(decide(*make_always_off_sampler(), id));

  SpanContext sampled_parent{id, random_span_id(), flag_sampled, "", true};
  SpanContext unsampled_parent{id, random_span_id(), 0, "", true};
  auto off = make_parent_based_sampler(make_always_off_sampler());
  auto on = make_parent_based_sampler(make_always_on_sampler());
  CHECK(decide(*off, id, &sampled_parent));
  CHECK_FALSE(decide(*off, id));  // no parent: the root sampler decides
  CHECK_FALSE(decide(*on, id, &unsampled_parent));
  CHECK(decide(*on, id));
  unsampled_parent.remote = false;  // local parents are followed the same way
  CHECK_FALSE(decide(*on, id, &unsampled_parent));
  CHECK(on->description() == "ParentBased{root=AlwaysOnSampler}");
}

TEST_CASE("may_record agrees with what start_span then decides, and is unsure only for ratios") {
  auto processor = std::make_shared<CollectingProcessor>();
  auto id = random_trace_id();
  SpanContext sampled_parent{id, random_span_id(), flag_sampled, "", true};
  SpanContext unsampled_parent{id, random_span_id(), 0, "", true};
  micro::Context context;
  auto records = [&](SdkTracer& tracer, const SpanContext* parent) {
    StartOptions options;
    options.parent = parent;
    return tracer.start_span("probe", context, options)->recording();
  };
  SdkTracer off(make_always_off_sampler(), processor);
  CHECK_FALSE(off.may_record(nullptr));
  CHECK_FALSE(off.may_record(&sampled_parent));  // always_off ignores parents
  CHECK_FALSE(records(off, &sampled_parent));
  SdkTracer on(make_parent_based_sampler(make_always_on_sampler()), processor);
  CHECK(on.may_record(nullptr));
  CHECK(on.may_record(&sampled_parent));
  CHECK_FALSE(on.may_record(&unsampled_parent));
  CHECK_FALSE(records(on, &unsampled_parent));
  CHECK(records(on, &sampled_parent));
  SdkTracer ratio(make_parent_based_sampler(make_trace_id_ratio_sampler(0.5)), processor);
  CHECK(ratio.may_record(nullptr));  // a new trace: the ratio must see its id
  CHECK_FALSE(ratio.may_record(&unsampled_parent));
  CHECK_FALSE(micro::trace::tracer().may_record(nullptr));  // the no-op never records
}

TEST_CASE("glob patterns") {
  CHECK(glob_match("payment.*", "payment.Charge"));
  CHECK(glob_match("payment.*", "payment."));
  CHECK_FALSE(glob_match("payment.*", "payments.Charge"));
  CHECK(glob_match("*.Hello", "Greeter.Hello"));
  CHECK(glob_match("G?eeter.*", "Greeter.Hello"));
  CHECK(glob_match("*", ""));
  CHECK(glob_match("a*b*c", "axxbyyc"));
  CHECK_FALSE(glob_match("a*b*c", "axxbyy"));
  CHECK_FALSE(glob_match("Greeter", "Greeter.Hello"));
}

TEST_CASE("sampling rules pick the first matching ratio by endpoint, service or topic") {
  auto rules = parse_sampling_rules(
      "payment.*=1.0; Greeter.*=0.5 ;topic:audit.*=0;service:billing*=1;endpoint:Health.*=0;");
  REQUIRE(rules.size() == 5);
  CHECK(rules[0].pattern == "payment.*");
  CHECK(rules[0].subject == SamplingRule::Subject::any);
  CHECK(rules[1].ratio == 0.5);
  CHECK(rules[2].subject == SamplingRule::Subject::topic);
  CHECK(rules[3].subject == SamplingRule::Subject::service);
  CHECK(rules[4].subject == SamplingRule::Subject::endpoint);

  // The default drops everything, so any sampled span was sampled by a rule.
  auto sampler = make_rule_sampler(rules, make_always_off_sampler(), "greeter");
  CHECK(decide(*sampler, random_trace_id(), nullptr, "payment.Charge"));
  CHECK_FALSE(decide(*sampler, random_trace_id(), nullptr, "Inventory.Get"));
  CHECK(decide(*sampler, random_trace_id(), nullptr, "publish",
               {{"messaging.destination.name", std::string("payment.done")}}));
  CHECK_FALSE(decide(*sampler, random_trace_id(), nullptr, "publish",
                     {{"messaging.destination.name", std::string("audit.log")}}));
  // service: the called service (rpc.service) or this process's service.
  CHECK(decide(*sampler, random_trace_id(), nullptr, "Bill.Pay",
               {{"rpc.service", std::string("billing")}}));
  CHECK(decide(*make_rule_sampler(rules, make_always_off_sampler(), "billing-api"),
               random_trace_id(), nullptr, "Other.Thing"));
  // endpoint: rpc.service.rpc.method is matched too.
  CHECK(decide(*sampler, random_trace_id(), nullptr, "call",
               {{"rpc.service", std::string("payment")}, {"rpc.method", std::string("Refund")}}));

  // Greeter.* at 0.5: about half.
  int sampled = 0;
  for (int index = 0; index < 20000; ++index)
    sampled += decide(*sampler, random_trace_id(), nullptr, "Greeter.Hello");
  CHECK(sampled > 9400);
  CHECK(sampled < 10600);
}

TEST_CASE("rules under a parent-based sampler apply only to new traces") {
  SamplerSettings settings;
  settings.name = "parentbased_always_off";
  settings.rules = parse_sampling_rules("payment.*=1");
  auto sampler = make_sampler(settings);
  auto id = random_trace_id();
  SpanContext unsampled_parent{id, random_span_id(), 0, "", true};
  CHECK(decide(*sampler, id, nullptr, "payment.Charge"));
  CHECK_FALSE(decide(*sampler, id, &unsampled_parent, "payment.Charge"));
  CHECK_FALSE(decide(*sampler, id, nullptr, "Other.Call"));
}

TEST_CASE("malformed rules are rejected with the rule and the reason") {
  CHECK(error_detail([] { parse_sampling_rules("payment.*"); }) ==
        "trace: rule 1 \"payment.*\": expected <pattern>=<ratio>");
  CHECK(error_detail([] { parse_sampling_rules("a=1;b=1.5"); }) ==
        "trace: rule 2 \"b=1.5\": 1.5 is out of range (expected a ratio from 0 to 1)");
  CHECK(error_detail([] { parse_sampling_rules("a=half"); }) ==
        "trace: rule 1 \"a=half\": \"half\" is not a number (expected a ratio from 0 to 1)");
  CHECK(error_detail([] { parse_sampling_rules("a="); }) ==
        "trace: rule 1 \"a=\": \"\" is not a number (expected a ratio from 0 to 1)");
  CHECK(error_detail([] { parse_sampling_rules("queue:a=1"); }) ==
        "trace: rule 1 \"queue:a=1\": unknown subject \"queue\" (expected service, endpoint or "
        "topic)");
  CHECK(error_detail([] { parse_sampling_rules(" =1"); }) == "trace: rule 1 \"=1\": empty pattern");
}

TEST_CASE("sampler settings: explicit options > OTEL_TRACES_SAMPLER(_ARG) > defaults") {
  ScopedEnvironment sampler_variable("OTEL_TRACES_SAMPLER", nullptr);
  ScopedEnvironment argument_variable("OTEL_TRACES_SAMPLER_ARG", nullptr);
  {
    auto settings = SamplerSettings::from(arguments());
    CHECK(settings.name == "parentbased_always_on");
    CHECK(make_sampler(settings)->description() == "ParentBased{root=AlwaysOnSampler}");
  }
  {
    ScopedEnvironment name("OTEL_TRACES_SAMPLER", "traceidratio");
    ScopedEnvironment ratio("OTEL_TRACES_SAMPLER_ARG", "0.25");
    auto settings = SamplerSettings::from(arguments());
    CHECK(settings.name == "traceidratio");
    CHECK(settings.ratio == 0.25);
    CHECK(make_sampler(settings)->description() == "TraceIdRatioBased{0.250000}");

    auto explicit_settings =
        SamplerSettings::from(arguments({{"sampler", "always_off"}, {"ratio", "0.5"}}));
    CHECK(explicit_settings.name == "always_off");
    CHECK(explicit_settings.ratio == 0.5);
    auto ratio_only = SamplerSettings::from(arguments({{"ratio", "0.1"}}));
    CHECK(ratio_only.name == "traceidratio");  // the environment's name, the option's ratio
    CHECK(ratio_only.ratio == 0.1);
  }
  {
    auto ratio_only = SamplerSettings::from(arguments({{"ratio", "0.1"}}));
    CHECK(ratio_only.name == "parentbased_traceidratio");
    CHECK(make_sampler(ratio_only)->description() ==
          "ParentBased{root=TraceIdRatioBased{0.100000}}");
  }
  {
    // The argument means nothing to always_on and is ignored, even when malformed.
    ScopedEnvironment name("OTEL_TRACES_SAMPLER", "always_on");
    ScopedEnvironment ratio("OTEL_TRACES_SAMPLER_ARG", "lots");
    CHECK(SamplerSettings::from(arguments()).name == "always_on");
  }
}

TEST_CASE("bad sampler names and ratios name their source") {
  ScopedEnvironment sampler_variable("OTEL_TRACES_SAMPLER", nullptr);
  ScopedEnvironment argument_variable("OTEL_TRACES_SAMPLER_ARG", nullptr);
  const std::string expected_names =
      "(expected one of always_on, always_off, traceidratio, parentbased_always_on, "
      "parentbased_always_off, parentbased_traceidratio, deferred)";
  CHECK(error_detail([] {
          SamplerSettings::from(arguments({{"sampler", "sometimes"}}));
        }) == "trace: option sampler: unknown sampler \"sometimes\" " + expected_names);
  CHECK(error_detail([] {
          SamplerSettings::from(arguments({{"ratio", "1.5"}}));
        }) == "trace: option ratio: 1.5 is out of range (expected a ratio from 0 to 1)");
  CHECK(error_detail([] {
          SamplerSettings::from(arguments({{"ratio", "-0.1"}}));
        }) == "trace: option ratio: -0.1 is out of range (expected a ratio from 0 to 1)");
  {
    ScopedEnvironment name("OTEL_TRACES_SAMPLER", "jaeger_remote");
    CHECK(error_detail([] { SamplerSettings::from(arguments()); }) ==
          "trace: OTEL_TRACES_SAMPLER: unknown sampler \"jaeger_remote\" " + expected_names);
  }
  {
    ScopedEnvironment name("OTEL_TRACES_SAMPLER", "parentbased_traceidratio");
    ScopedEnvironment ratio("OTEL_TRACES_SAMPLER_ARG", "10%");
    CHECK(error_detail([] { SamplerSettings::from(arguments()); }) ==
          "trace: OTEL_TRACES_SAMPLER_ARG: \"10%\" is not a number (expected a ratio from 0 to "
          "1)");
  }
  CHECK(error_detail([] { make_trace_id_ratio_sampler(2); }) ==
        "trace: ratio: 2.000000 is out of range (expected a ratio from 0 to 1)");
}

// ---------------------------------------------------------------- limits and redaction

TEST_CASE("span limits: attribute count and value length, events, links; dropped counts kept") {
  auto processor = std::make_shared<CollectingProcessor>();
  SpanLimits limits;
  limits.attribute_count = 3;
  limits.attribute_value_length = 4;
  limits.event_count = 2;
  limits.link_count = 1;
  SdkTracer tracer(make_always_on_sampler(), processor, limits, Redactor(Redactor::parse("none")));

  micro::Context context;
  StartOptions options;
  options.attributes = {{"a", std::string("abcdefg")}};
  options.links = {{SpanContext{random_trace_id(), random_span_id(), 1, "", true}, {}},
                   {SpanContext{random_trace_id(), random_span_id(), 1, "", true}, {}}};
  auto span = tracer.start_span("limited", context, options);
  span->set_attribute("b", std::int64_t{1});
  span->set_attribute("c", std::vector<std::string>{"123456", "12"});
  span->set_attribute("d", true);                         // over the count: dropped
  span->set_attribute("b", std::int64_t{2});              // replacing an existing key is not a drop
  span->set_attribute("a", std::string("h\xc3\xa9llo"));  // cut before the split 'é'... see below
  span->add_event("one", {{"x", std::string("1")},
                          {"y", std::string("2")},
                          {"z", std::string("3")},
                          {"w", std::string("4")}});
  span->add_event("two");
  span->add_event("three");
  span->add_link(SpanContext{random_trace_id(), random_span_id(), 1, "", true});
  span->end();

  auto spans = processor->spans();
  REQUIRE(spans.size() == 1);
  const auto& data = spans[0];
  CHECK(data.attributes.size() == 3);
  CHECK(data.dropped_attributes == 1);
  // "héllo" is h, 0xC3 0xA9, l…: 4 bytes would end inside nothing, so "hé" + "l" = 4 bytes.
  CHECK(string_attribute(data.attributes, "a") == "h\xc3\xa9l");
  CHECK(std::get<std::int64_t>(*attribute(data.attributes, "b")) == 2);
  CHECK(std::get<std::vector<std::string>>(*attribute(data.attributes, "c")) ==
        std::vector<std::string>{"1234", "12"});
  REQUIRE(data.events.size() == 2);
  CHECK(data.events[0].attributes.size() == 3);
  CHECK(data.events[0].dropped_attributes == 1);
  CHECK(data.dropped_events == 1);
  CHECK(data.links.size() == 1);
  CHECK(data.dropped_links == 2);

  SpanData truncated;
  AttributeValue split(std::string("a\xc3\xa9"));  // limit 2 would split é: keep "a"
  truncate_value(split, 2);
  CHECK(std::get<std::string>(split) == "a");
}

TEST_CASE("span limits from OTEL_SPAN_*_LIMIT, with malformed values rejected") {
  {
    ScopedEnvironment count("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "10");
    ScopedEnvironment length("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", "256");
    ScopedEnvironment events("OTEL_SPAN_EVENT_COUNT_LIMIT", "5");
    ScopedEnvironment links("OTEL_SPAN_LINK_COUNT_LIMIT", "0");
    auto limits = SpanLimits::from_environment();
    CHECK(limits.attribute_count == 10);
    CHECK(limits.attribute_value_length == 256);
    CHECK(limits.event_count == 5);
    CHECK(limits.link_count == 0);
  }
  {
    auto limits = SpanLimits::from_environment();
    CHECK(limits.attribute_count == 128);
    CHECK(limits.attribute_value_length == SpanLimits::unlimited);
    CHECK(limits.event_count == 128);
    CHECK(limits.link_count == 128);
  }
  ScopedEnvironment bad("OTEL_SPAN_EVENT_COUNT_LIMIT", "-3");
  CHECK(error_detail([] { SpanLimits::from_environment(); }) ==
        "trace: OTEL_SPAN_EVENT_COUNT_LIMIT: \"-3\" is not a non-negative integer");
}

TEST_CASE("sensitive attribute keys are redacted, case-insensitively, everywhere") {
  Redactor redactor;
  for (const char* key :
       {"password", "user.Password", "db.passwd", "client_secret",
        "http.request.header.authorization", "X-API_KEY", "apikey", "auth_token",
        "card.credit_card", "card_number", "Cookie", "session.id", "refresh-TOKEN"})
    CHECK_MESSAGE(redactor.sensitive(key), key);
  for (const char* key :
       {"rpc.service", "db.statement", "messaging.destination.name", "user", "author", "pass", ""})
    CHECK_MESSAGE(!redactor.sensitive(key), key);

  Redactor custom(Redactor::parse(" pin, SSN ,"));
  CHECK(custom.sensitive("user.pin"));
  CHECK(custom.sensitive("ssn"));
  CHECK_FALSE(custom.sensitive("password"));  // the list replaces the default
  CHECK(Redactor::parse("none").empty());
  CHECK_FALSE(Redactor(Redactor::parse("")).sensitive("password"));

  // The per-thread cache: the same buffer holding another key, the same key under another
  // redactor, and a copy (which shares the patterns) all get the scan's verdict.
  char buffer[] = "user.password";
  std::string_view key(buffer);
  CHECK(redactor.sensitive(key));
  CHECK(redactor.sensitive(key));  // from the cache
  std::memcpy(buffer, "user.passwore", sizeof buffer);
  CHECK_FALSE(redactor.sensitive(key));
  CHECK(redactor.scan("user.password"));
  CHECK_FALSE(custom.sensitive("user.password"));
  Redactor copy = custom;
  CHECK(copy.sensitive("user.pin"));
  CHECK_FALSE(copy.sensitive("user.password"));
  std::string long_key(100, 'x');
  long_key += "token";
  CHECK(redactor.sensitive(long_key));

  auto processor = std::make_shared<CollectingProcessor>();
  SdkTracer tracer(make_always_on_sampler(), processor);
  micro::Context context;
  StartOptions options;
  options.attributes = {{"db.password", std::string("hunter2")}};
  auto span = tracer.start_span("login", context, options);
  span->set_attribute("user.name", std::string("ada"));
  span->set_attribute("http.request.header.cookie", std::string("sid=1"));
  span->add_event("retry", {{"api_key", std::string("k-123")}});
  span->add_link(SpanContext{random_trace_id(), random_span_id(), 1, "", true},
                 {{"session", std::string("s")}});
  span->end();
  auto data = processor->spans().at(0);
  CHECK(string_attribute(data.attributes, "db.password") == "[REDACTED]");
  CHECK(string_attribute(data.attributes, "http.request.header.cookie") == "[REDACTED]");
  CHECK(string_attribute(data.attributes, "user.name") == "ada");
  CHECK(string_attribute(data.events.at(0).attributes, "api_key") == "[REDACTED]");
  CHECK(string_attribute(data.links.at(0).attributes, "session") == "[REDACTED]");
}

TEST_CASE("status, name, and end: OK is final, end is idempotent and thread-safe") {
  auto processor = std::make_shared<CollectingProcessor>();
  SdkTracer tracer(make_always_on_sampler(), processor);
  micro::Context context;
  auto span = tracer.start_span("first", context);
  span->set_status(StatusCode::ok, "ignored with OK");
  span->set_status(StatusCode::error, "too late");
  span->update_name("renamed");
  CHECK(span->recording());

  std::vector<std::thread> threads;
  for (int index = 0; index < 8; ++index) threads.emplace_back([&] { span->end(); });
  for (auto& thread : threads) thread.join();
  span->set_attribute("after", true);
  span->end();
  CHECK_FALSE(span->recording());
  CHECK(span->context().valid());  // still usable as a parent after end

  auto spans = processor->spans();
  REQUIRE(spans.size() == 1);
  CHECK(spans[0].name == "renamed");
  CHECK(spans[0].status == StatusCode::ok);
  CHECK(spans[0].status_message.empty());
  CHECK(spans[0].attributes.empty());
  CHECK(spans[0].end_time >= spans[0].start_time);

  auto failed = tracer.start_span("failed", context);
  failed->set_status(StatusCode::error, "boom");
  failed->end();
  CHECK(processor->spans().at(1).status == StatusCode::error);
  CHECK(processor->spans().at(1).status_message == "boom");
}

// ---------------------------------------------------------------- resource

TEST_CASE("resource: service name from the service, OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES") {
  ScopedEnvironment service("OTEL_SERVICE_NAME", "billing");
  ScopedEnvironment attributes(
      "OTEL_RESOURCE_ATTRIBUTES",
      "service.name=ignored, deployment.environment = prod ,team=a%2Cb%3Dc,broken,=x,bad=%zz");
  std::vector<std::string> warnings;
  auto parsed = parse_resource_attributes(std::getenv("OTEL_RESOURCE_ATTRIBUTES"), &warnings);
  CHECK(parsed.size() == 3);
  CHECK(string_attribute(parsed, "team") == "a,b=c");
  CHECK(string_attribute(parsed, "deployment.environment") == "prod");
  REQUIRE(warnings.size() == 3);
  CHECK(warnings[0] == "OTEL_RESOURCE_ATTRIBUTES entry 4 \"broken\" ignored: expected key=value");
  CHECK(warnings[1] == "OTEL_RESOURCE_ATTRIBUTES entry 5 \"=x\" ignored: empty key");
  CHECK(warnings[2] ==
        "OTEL_RESOURCE_ATTRIBUTES entry 6 \"bad=%zz\" ignored: bad percent-encoding");

  auto resource = make_resource("", "1.2.3");
  CHECK(*find_attribute(resource, "service.name") == "billing");  // OTEL_SERVICE_NAME wins
  CHECK(*find_attribute(resource, "service.version") == "1.2.3");
  CHECK(*find_attribute(resource, "deployment.environment") == "prod");
  CHECK(*find_attribute(resource, "telemetry.sdk.name") == "micro-cpp");
  CHECK(*find_attribute(resource, "telemetry.sdk.language") == "cpp");
  CHECK(find_attribute(resource, "telemetry.sdk.version") != nullptr);
  REQUIRE(find_attribute(resource, "host.name") != nullptr);
  CHECK_FALSE(find_attribute(resource, "host.name")->empty());
  const AttributeValue* pid = nullptr;
  for (const auto& [key, value] : resource.attributes)
    if (key == "process.pid") pid = &value;
  REQUIRE(pid != nullptr);
  CHECK(std::get<std::int64_t>(*pid) == getpid());

  // The service's own name beats the environment.
  CHECK(*find_attribute(make_resource("greeter", ""), "service.name") == "greeter");
  CHECK(find_attribute(make_resource("greeter", ""), "service.version") == nullptr);
}

TEST_CASE("resource: service.name falls back to OTEL_RESOURCE_ATTRIBUTES, then unknown_service") {
  ScopedEnvironment service("OTEL_SERVICE_NAME", nullptr);
  {
    ScopedEnvironment attributes("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-attributes");
    CHECK(*find_attribute(make_resource("", ""), "service.name") == "from-attributes");
  }
  ScopedEnvironment attributes("OTEL_RESOURCE_ATTRIBUTES", nullptr);
  auto name = *find_attribute(make_resource("", ""), "service.name");
  CHECK(name.starts_with("unknown_service:"));  // and the executable's name
  CHECK(name.find("sdk_test") != std::string::npos);
}

// ---------------------------------------------------------------- batch processor

TEST_CASE("batch settings: options > OTEL_BSP_* > defaults; malformed values rejected") {
  {
    auto settings = BatchSettings::from(arguments());
    CHECK(settings.max_queue_size == 2048);
    CHECK(settings.max_export_batch_size == 512);
    CHECK(settings.schedule_delay == 5000ms);
    CHECK(settings.export_timeout == 30000ms);
  }
  ScopedEnvironment queue("OTEL_BSP_MAX_QUEUE_SIZE", "100");
  ScopedEnvironment batch("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "200");
  ScopedEnvironment delay("OTEL_BSP_SCHEDULE_DELAY", "250");
  ScopedEnvironment timeout("OTEL_BSP_EXPORT_TIMEOUT", "1000");
  {
    auto settings = BatchSettings::from(arguments());
    CHECK(settings.max_queue_size == 100);
    CHECK(settings.max_export_batch_size == 100);  // clamped to the queue
    CHECK(settings.schedule_delay == 250ms);
    CHECK(settings.export_timeout == 1000ms);
  }
  {
    auto settings = BatchSettings::from(arguments({{"max_queue_size", "64"},
                                                   {"max_export_batch_size", "16"},
                                                   {"schedule_delay", "2s"},
                                                   {"export_timeout", "500ms"}}));
    CHECK(settings.max_queue_size == 64);
    CHECK(settings.max_export_batch_size == 16);
    CHECK(settings.schedule_delay == 2000ms);
    CHECK(settings.export_timeout == 500ms);
  }
  CHECK(error_detail([] {
          BatchSettings::from(arguments({{"max_queue_size", "0"}}));
        }) == "trace: option max_queue_size: 0 is not a positive integer");
  CHECK(error_detail([] {
          BatchSettings::from(arguments({{"schedule_delay", "0s"}}));
        }) == "trace: option schedule_delay: \"0s\" is not a positive duration");
  ScopedEnvironment bad("OTEL_BSP_SCHEDULE_DELAY", "5s");
  CHECK(error_detail([] { BatchSettings::from(arguments()); }) ==
        "trace: OTEL_BSP_SCHEDULE_DELAY: \"5s\" is not a positive integer");
}

TEST_CASE("batch processor exports full batches of the configured size") {
  auto log = std::make_shared<ExportLog>();
  BatchSettings settings;
  settings.max_queue_size = 100;
  settings.max_export_batch_size = 10;
  settings.schedule_delay = std::chrono::hours(1);  // only full batches trigger an export
  BatchProcessor processor(std::make_unique<TestExporter>(log), settings);
  for (int index = 0; index < 35; ++index) processor.on_end(span_named(std::to_string(index)));
  REQUIRE(wait_until([&] { return log->exported() >= 30; }));
  {
    std::lock_guard lock(log->mutex);
    CHECK(log->batch_sizes == std::vector<std::size_t>{10, 10, 10});
    CHECK(log->names.front() == "0");  // in order
    CHECK(log->names.back() == "29");
  }
  CHECK(processor.queued() == 5);
  CHECK(processor.shutdown());
  CHECK(log->exported() == 35);
  CHECK(log->shut_down);
}

TEST_CASE("batch processor exports a partial batch when the schedule delay passes") {
  auto log = std::make_shared<ExportLog>();
  BatchSettings settings;
  settings.schedule_delay = 50ms;
  BatchProcessor processor(std::make_unique<TestExporter>(log), settings);
  auto started = std::chrono::steady_clock::now();
  for (int index = 0; index < 3; ++index) processor.on_end(span_named("delayed"));
  REQUIRE(wait_until([&] { return log->exported() == 3; }));
  CHECK(std::chrono::steady_clock::now() - started < 4s);  // not the default 5 s
}

TEST_CASE("force_flush exports what ended before it") {
  auto log = std::make_shared<ExportLog>();
  BatchSettings settings;
  settings.schedule_delay = std::chrono::hours(1);
  BatchProcessor processor(std::make_unique<TestExporter>(log), settings);
  for (int index = 0; index < 7; ++index) processor.on_end(span_named("flushed"));
  CHECK(processor.force_flush(10s));
  CHECK(log->exported() == 7);
}

// Keeps a copy of every exported span.
class CopyingExporter final : public SpanExporter {
 public:
  explicit CopyingExporter(std::shared_ptr<std::vector<SpanData>> spans)
      : spans_(std::move(spans)) {}
  ExportResult export_spans(std::span<const SpanData> spans) override {
    spans_->insert(spans_->end(), spans.begin(), spans.end());  // only the worker calls
    return ExportResult::success;
  }
  void shutdown(std::chrono::milliseconds) override {}

 private:
  std::shared_ptr<std::vector<SpanData>> spans_;
};

TEST_CASE("pooled span data: a reused node carries nothing of its previous span") {
  auto exported = std::make_shared<std::vector<SpanData>>();
  BatchSettings settings;
  settings.max_queue_size = 4;
  settings.schedule_delay = std::chrono::hours(1);
  auto processor =
      std::make_shared<BatchProcessor>(std::make_unique<CopyingExporter>(exported), settings);
  SdkTracer tracer(make_always_on_sampler(), processor);
  micro::Context empty;
  SpanContext remote{random_trace_id(), random_span_id(), flag_sampled, "vendor=1", true};
  constexpr int rounds = 4;
  for (int round = 0; round < rounds; ++round) {
    StartOptions options;
    options.parent = &remote;
    options.kind = SpanKind::client;
    auto full = tracer.start_span("full", empty, options);
    full->set_attribute("round", std::int64_t{round});
    full->set_attribute("text", std::string(300, 'x'));
    full->add_event("event");
    full->add_link(remote);
    full->set_status(StatusCode::error, "broken");
    full->end();
    tracer.start_span("never ended", empty);  // its data goes back unexported
    CHECK(processor->force_flush(10s));
    tracer.start_span("bare", empty)->end();
    CHECK(processor->force_flush(10s));
  }
  CHECK(processor->shutdown());
  REQUIRE(exported->size() == 2 * rounds);
  for (int round = 0; round < rounds; ++round) {
    const auto& full = exported->at(2 * round);
    CHECK(full.name == "full");
    CHECK(full.kind == SpanKind::client);
    CHECK(full.parent_span_id == remote.span_id);
    CHECK(full.parent_remote);
    CHECK(full.context.trace_state == "vendor=1");
    REQUIRE(full.attributes.size() == 2);
    CHECK(std::get<std::int64_t>(full.attributes[0].second) == round);
    CHECK(full.events.size() == 1);
    CHECK(full.links.size() == 1);
    CHECK(full.status == StatusCode::error);
    CHECK(full.status_message == "broken");
    const auto& bare = exported->at(2 * round + 1);
    CHECK(bare.name == "bare");
    CHECK(bare.kind == SpanKind::internal);
    CHECK_FALSE(bare.parent_span_id.valid());
    CHECK_FALSE(bare.parent_remote);
    CHECK(bare.context.trace_state.empty());
    CHECK(bare.attributes.empty());
    CHECK(bare.events.empty());
    CHECK(bare.links.empty());
    CHECK(bare.status == StatusCode::unset);
    CHECK(bare.status_message.empty());
    CHECK(bare.dropped_attributes + bare.dropped_events + bare.dropped_links == 0);
  }
}

TEST_CASE("pooled span data under concurrent producers: every span whole, counts add up") {
  auto exported = std::make_shared<std::vector<SpanData>>();
  BatchSettings settings;
  settings.max_queue_size = 64;  // small: drops and node reuse both happen
  settings.max_export_batch_size = 16;
  settings.schedule_delay = 1ms;
  auto processor =
      std::make_shared<BatchProcessor>(std::make_unique<CopyingExporter>(exported), settings);
  SdkTracer tracer(make_always_on_sampler(), processor);
  auto before = statistics();
  constexpr int threads = 4, spans_per_thread = 5000;
  std::vector<std::thread> producers;
  for (int thread = 0; thread < threads; ++thread)
    producers.emplace_back([&, thread] {
      micro::Context empty;
      for (int index = 0; index < spans_per_thread; ++index) {
        // Each span's name, attributes and status all encode the same number.
        std::string number = std::to_string(thread * spans_per_thread + index);
        auto span = tracer.start_span(number, empty);
        span->set_attribute("number", number);
        if (index % 3 == 0) span->set_attribute("extra." + number, true);
        if (index % 5 == 0) span->set_status(StatusCode::error, number);
        span->end();
      }
    });
  for (auto& producer : producers) producer.join();
  CHECK(processor->shutdown());
  auto after = statistics();
  CHECK(after.spans_ended - before.spans_ended == threads * spans_per_thread);
  CHECK(exported->size() + (after.spans_dropped - before.spans_dropped) ==
        threads * spans_per_thread);
  CHECK_FALSE(exported->empty());
  std::size_t broken = 0;
  for (const auto& span : *exported) {
    int number = std::stoi(span.name);
    bool whole = string_attribute(span.attributes, "number") == span.name &&
                 span.attributes.size() == (number % spans_per_thread % 3 == 0 ? 2u : 1u) &&
                 (number % spans_per_thread % 5 == 0
                      ? span.status == StatusCode::error && span.status_message == span.name
                      : span.status == StatusCode::unset && span.status_message.empty());
    if (!whole) ++broken;
  }
  CHECK(broken == 0);
}

TEST_CASE("a full queue drops and counts without blocking; shutdown loses nothing queued") {
  auto log = std::make_shared<ExportLog>();
  log->block = true;
  BatchSettings settings;
  settings.max_queue_size = 8;
  settings.max_export_batch_size = 4;
  settings.schedule_delay = std::chrono::hours(1);
  BatchProcessor processor(std::make_unique<TestExporter>(log), settings);
  auto before = statistics();

  for (int index = 0; index < 4; ++index) processor.on_end(span_named("first batch"));
  REQUIRE(wait_until([&] { return log->exports_entered.load() == 1; }));  // worker is stuck
  REQUIRE(wait_until([&] { return processor.queued() == 0; }));

  auto started = std::chrono::steady_clock::now();
  for (int index = 0; index < 13; ++index) processor.on_end(span_named("queued"));
  CHECK(std::chrono::steady_clock::now() - started < 500ms);  // never waited on the exporter
  auto after = statistics();
  CHECK(after.spans_dropped - before.spans_dropped == 5);
  CHECK(processor.queued() == 8);

  log->release();
  CHECK(processor.shutdown());
  CHECK(log->exported() == 12);
  CHECK(statistics().spans_exported - before.spans_exported == 12);
  processor.on_end(span_named("after shutdown"));  // dropped, counted
  CHECK(statistics().spans_dropped - before.spans_dropped == 6);
}

TEST_CASE("shutdown flushes everything queued in batches") {
  auto log = std::make_shared<ExportLog>();
  BatchSettings settings;
  settings.schedule_delay = std::chrono::hours(1);
  {
    BatchProcessor processor(std::make_unique<TestExporter>(log), settings);
    // Concurrent producers: nothing lost, nothing duplicated.
    std::vector<std::thread> threads;
    for (int thread = 0; thread < 4; ++thread)
      threads.emplace_back([&] {
        for (int index = 0; index < 250; ++index) processor.on_end(span_named("many"));
      });
    for (auto& thread : threads) thread.join();
  }  // the destructor shuts down
  CHECK(log->exported() == 1000);
  std::lock_guard lock(log->mutex);
  for (auto size : log->batch_sizes) CHECK(size <= 512);
}

TEST_CASE("shutdown is bounded by export_timeout when the exporter is stuck") {
  auto log = std::make_shared<ExportLog>();
  log->block = true;
  BatchSettings settings;
  settings.export_timeout = 200ms;
  settings.schedule_delay = std::chrono::hours(1);
  auto processor = std::make_unique<BatchProcessor>(std::make_unique<TestExporter>(log), settings);
  processor->on_end(span_named("stuck"));
  auto started = std::chrono::steady_clock::now();
  CHECK_FALSE(processor->shutdown());
  auto elapsed = std::chrono::steady_clock::now() - started;
  CHECK(elapsed >= 150ms);
  CHECK(elapsed < 3s);
  processor.reset();
  log->release();  // the worker, left on its own, finishes and shuts the exporter down
  CHECK(wait_until([&] { return log->shut_down.load(); }));
}

// ---------------------------------------------------------------- parentage

TEST_CASE("a new root gets a random trace id with the random flag; children share it") {
  auto processor = std::make_shared<CollectingProcessor>();
  SdkTracer tracer(make_always_on_sampler(), processor);
  micro::Context context;
  auto root = tracer.start_span("root", context);
  CHECK(root->context().valid());
  CHECK(root->context().flags == (flag_sampled | flag_random));
  CHECK_FALSE(root->context().remote);
  CHECK(tracer.start_span("another root", context)->context().trace_id != root->context().trace_id);

  context.set_span(root);
  StartOptions client_options;
  client_options.kind = SpanKind::client;
  auto child = tracer.start_span("child", context, client_options);
  CHECK(child->context().trace_id == root->context().trace_id);
  CHECK(child->context().span_id != root->context().span_id);
  CHECK(child->context().flags == (flag_sampled | flag_random));

  StartOptions new_root;
  new_root.root = true;
  auto detached = tracer.start_span("detached", context, new_root);
  CHECK(detached->context().trace_id != root->context().trace_id);

  child->end();
  detached->end();
  root->end();
  auto spans = processor->spans();
  REQUIRE(spans.size() == 3);
  CHECK(spans[0].name == "child");
  CHECK(spans[0].kind == SpanKind::client);
  CHECK(spans[0].parent_span_id == root->context().span_id);
  CHECK_FALSE(spans[0].parent_remote);
  CHECK(spans[0].context == child->context());
  CHECK_FALSE(spans[1].parent_span_id.valid());
  CHECK_FALSE(spans[2].parent_span_id.valid());
}

TEST_CASE("an explicit remote parent wins over the context's span") {
  auto processor = std::make_shared<CollectingProcessor>();
  SdkTracer tracer(make_parent_based_sampler(make_always_off_sampler()), processor);
  micro::Context context;
  SpanContext remote{random_trace_id(), random_span_id(), flag_sampled, "vendor=abc", true};
  StartOptions options;
  options.kind = SpanKind::server;
  options.parent = &remote;
  auto server = tracer.start_span("Greeter.Hello", context, options);
  CHECK(server->recording());  // the parent was sampled
  CHECK(server->context().trace_id == remote.trace_id);
  CHECK(server->context().trace_state == "vendor=abc");
  CHECK(server->context().flags == flag_sampled);  // no random flag: the parent had none
  server->end();
  auto data = processor->spans().at(0);
  CHECK(data.parent_span_id == remote.span_id);
  CHECK(data.parent_remote);
}

TEST_CASE("the tracer decides like its sampler, shortcuts for built-ins included") {
  auto processor = std::make_shared<CollectingProcessor>();
  micro::Context empty;
  auto id = random_trace_id();
  SpanContext sampled_parent{id, random_span_id(), flag_sampled, "", true};
  SpanContext unsampled_parent{id, random_span_id(), 0, "", true};
  auto recording = [&](std::shared_ptr<Sampler> sampler, const SpanContext* parent,
                       std::string_view name = "Any.Call") {
    SdkTracer tracer(std::move(sampler), processor);
    StartOptions options;
    options.parent = parent;
    auto span = tracer.start_span(name, empty, options);
    bool result = span->recording();
    CHECK(span->context().sampled() == result);
    span->end();
    return result;
  };
  CHECK(recording(make_always_on_sampler(), &unsampled_parent));
  CHECK_FALSE(recording(make_always_off_sampler(), &sampled_parent));
  CHECK(recording(make_parent_based_sampler(make_always_off_sampler()), &sampled_parent));
  CHECK_FALSE(recording(make_parent_based_sampler(make_always_off_sampler()), nullptr));
  CHECK_FALSE(recording(make_parent_based_sampler(make_always_on_sampler()), &unsampled_parent));
  CHECK(recording(make_parent_based_sampler(make_always_on_sampler()), nullptr));
  // Nested parent-based: without a parent the innermost root decides.
  CHECK_FALSE(recording(
      make_parent_based_sampler(make_parent_based_sampler(make_always_off_sampler())), nullptr));
  CHECK(recording(make_trace_id_ratio_sampler(1.0), &unsampled_parent));
  CHECK_FALSE(recording(make_trace_id_ratio_sampler(0.0), &sampled_parent));
  // Rules are asked (no shortcut) for new traces only.
  SamplerSettings settings;
  settings.name = "parentbased_always_off";
  settings.rules = parse_sampling_rules("payment.*=1");
  CHECK(recording(make_sampler(settings), nullptr, "payment.Charge"));
  CHECK_FALSE(recording(make_sampler(settings), nullptr, "Other.Call"));
  CHECK_FALSE(recording(make_sampler(settings), &unsampled_parent, "payment.Charge"));
}

TEST_CASE("unsampled spans propagate a valid context with sampled=0 and allocate nothing") {
  auto processor = std::make_shared<CollectingProcessor>();
  SdkTracer tracer(make_parent_based_sampler(make_always_off_sampler()), processor);
  micro::Context context;
  auto root = tracer.start_span("dropped", context);
  CHECK_FALSE(root->recording());
  CHECK(root->context().valid());
  CHECK_FALSE(root->context().sampled());
  CHECK(root->context().flags == flag_random);
  root->set_attribute("ignored", true);
  root->end();

  context.set_span(root);
  auto child = tracer.start_span("child", context);
  CHECK_FALSE(child->recording());
  CHECK(child->context().trace_id == root->context().trace_id);
  CHECK(child->context().span_id != root->context().span_id);
  child->end();
  CHECK(processor->spans().empty());

  // Warm the pool, then count.
  micro::Context empty;
  for (int index = 0; index < 10; ++index) tracer.start_span("warm", empty)->end();
  auto before = allocation_count.load();
  for (int index = 0; index < 1000; ++index) {
    auto span = tracer.start_span("unsampled", empty);
    span->end();
  }
  CHECK(allocation_count.load() - before == 0);
}

TEST_CASE("statistics count started and ended recording spans") {
  auto processor = std::make_shared<CollectingProcessor>();
  SdkTracer tracer(make_always_on_sampler(), processor);
  auto before = statistics();
  micro::Context context;
  for (int index = 0; index < 5; ++index) tracer.start_span("counted", context)->end();
  tracer.start_span("open", context);  // never ended
  auto after = statistics();
  CHECK(after.spans_started - before.spans_started == 6);
  CHECK(after.spans_ended - before.spans_ended == 5);
  // Counted per thread: a live thread's counts and an exited thread's both show.
  std::mutex mutex;
  std::condition_variable changed;
  bool counted = false, may_exit = false;
  std::thread other([&] {
    for (int index = 0; index < 3; ++index) tracer.start_span("elsewhere", context)->end();
    std::unique_lock lock(mutex);
    counted = true;
    changed.notify_all();
    changed.wait(lock, [&] { return may_exit; });
  });
  {
    std::unique_lock lock(mutex);
    changed.wait(lock, [&] { return counted; });
  }
  CHECK(statistics().spans_ended - after.spans_ended == 3);
  {
    std::lock_guard lock(mutex);
    may_exit = true;
  }
  changed.notify_all();
  other.join();
  auto finally = statistics();
  CHECK(finally.spans_started - after.spans_started == 3);
  CHECK(finally.spans_ended - after.spans_ended == 3);
  CHECK(format_statistics(Statistics{1, 2, 3, 4, 5, 6}) ==
        "spans started=1 ended=2 exported=3 dropped=4 export_failed=5 export_failures=6");
}

// ---- W3C Trace Context level 2: the random trace id flag, as the SDK sets and keeps it ----

TEST_CASE("random flag rule: a new trace's id is random, so the flag is set") {
  auto processor = std::make_shared<CollectingProcessor>();
  micro::Context context;
  SdkTracer sampled(make_always_on_sampler(), processor);
  SdkTracer unsampled(make_always_off_sampler(), processor);
  auto recorded = sampled.start_span("root", context);
  CHECK(recorded->context().flags == (flag_sampled | flag_random));
  auto unrecorded = unsampled.start_span("root", context);
  CHECK(unrecorded->context().flags == flag_random);
  CHECK(format_traceparent(unrecorded->context()).substr(53) == "02");

  // The flag promises at least the right-most 7 bytes random: across 200 new traces each of
  // those bytes takes many values (a counter or a clock would repeat most of them).
  std::vector<std::set<std::uint8_t>> seen(16);
  for (int index = 0; index < 200; ++index) {
    auto span = sampled.start_span("root", context);
    for (std::size_t byte = 0; byte < 16; ++byte)
      seen[byte].insert(span->context().trace_id.bytes[byte]);
  }
  for (std::size_t byte = 9; byte < 16; ++byte) CHECK_MESSAGE(seen[byte].size() > 100, byte);
}

TEST_CASE("random flag rule: a continued trace keeps the incoming flag, set or unset") {
  auto processor = std::make_shared<CollectingProcessor>();
  SdkTracer tracer(make_parent_based_sampler(make_always_on_sampler()), processor);
  micro::Context context;
  for (std::uint8_t incoming : {0x00, 0x01, 0x02, 0x03}) {
    micro::Metadata metadata{
        {"traceparent",
         "00-12345678901234567890123456789012-1234567890123456-0" + std::to_string(incoming)},
        {"tracestate", "rojo=00f067aa0ba902b7"}};
    auto parent = extract(metadata);
    REQUIRE(parent);
    StartOptions options;
    options.kind = SpanKind::server;
    options.parent = &*parent;
    auto span = tracer.start_span("continued", context, options);
    const SpanContext& child = span->context();
    CAPTURE(int(incoming));
    CHECK((child.flags & flag_random) == (incoming & flag_random));
    CHECK(child.sampled() == ((incoming & flag_sampled) != 0));  // parent-based
    CHECK(child.trace_id == parent->trace_id);

    // What goes on: the same trace id, a new parent id, the flags, the tracestate.
    micro::Metadata outgoing;
    inject(child, outgoing);
    std::string traceparent = outgoing.get("traceparent");
    CHECK(traceparent.substr(0, 36) == "00-12345678901234567890123456789012-");
    CHECK(traceparent.substr(36, 16) != "1234567890123456");
    CHECK(traceparent.substr(53) == "0" + std::to_string(incoming));
    CHECK(outgoing.get("tracestate") == "rojo=00f067aa0ba902b7");
    span->end();
  }
}

TEST_CASE("deferred: an error deep in a local trace keeps all of it; a clean trace is discarded") {
  auto collected = std::make_shared<CollectingProcessor>();
  auto deferred = std::make_shared<DeferredProcessor>(collected, DeferredSettings{});
  SdkTracer tracer(make_deferred_sampler(0.0), deferred);
  CHECK(tracer.may_record(nullptr));
  auto tree = [&](bool fail_deepest) {
    const std::size_t before = collected->spans().size();
    micro::Context context;
    auto root = tracer.start_span("Greeter.Hello", context);
    CHECK(root->recording());                // every span records…
    CHECK_FALSE(root->context().sampled());  // …but ratio 0 sends sampled=0 on
    micro::Context in_root;
    in_root.set_span(root);
    auto child = tracer.start_span("Store.Get", in_root);
    micro::Context in_child;
    in_child.set_span(child);
    auto deepest = tracer.start_span("Disk.Read", in_child);
    if (fail_deepest) deepest->set_status(StatusCode::error, "disk on fire");
    deepest->end();
    child->end();
    CHECK(collected->spans().size() == before);  // held until the root ends
    root->end();
    return root->context().trace_id;
  };
  TraceId failed = tree(true);
  auto spans = collected->spans();
  REQUIRE(spans.size() == 3);
  for (const auto& span : spans) CHECK(span.context.trace_id == failed);
  tree(false);
  CHECK(collected->spans().size() == 3);  // the clean tree went nowhere
  auto counts = deferred->counts();
  CHECK(counts.traces_kept == 1);
  CHECK(counts.traces_discarded == 1);
  CHECK(counts.spans_kept == 3);
  CHECK(counts.spans_discarded == 3);
}

TEST_CASE(
    "deferred: slow spans keep their trace; the ratio keeps its share; flags follow parents") {
  auto collected = std::make_shared<CollectingProcessor>();
  DeferredSettings settings;
  settings.slower_than = 250ms;
  auto deferred = std::make_shared<DeferredProcessor>(collected, settings);
  SdkTracer tracer(make_deferred_sampler(0.0), deferred);
  micro::Context context;
  auto slow = tracer.start_span("Report.Build", context);
  slow->end(std::chrono::system_clock::now() + 300ms);  // lasted 300 ms
  auto quick = tracer.start_span("Report.Build", context);
  quick->end();
  REQUIRE(collected->spans().size() == 1);
  CHECK(collected->spans()[0].context == slow->context());

  // A caller's sampled flag is kept (and sent on), and keeps the trace; an unsampled caller's
  // clean trace is discarded.
  SpanContext sampled_caller{random_trace_id(), random_span_id(), flag_sampled, "", true};
  SpanContext unsampled_caller{random_trace_id(), random_span_id(), 0, "", true};
  for (const SpanContext* caller : {&sampled_caller, &unsampled_caller}) {
    StartOptions options;
    options.kind = SpanKind::server;
    options.parent = caller;
    auto server = tracer.start_span("Greeter.Hello", context, options);
    CHECK(server->recording());
    CHECK(server->context().sampled() == caller->sampled());
    server->end();
  }
  REQUIRE(collected->spans().size() == 2);
  CHECK(collected->spans()[1].context.trace_id == sampled_caller.trace_id);

  // ratio 0.25 of clean new traces kept: exactly those whose id the ratio decision takes.
  auto share = std::make_shared<CollectingProcessor>();
  auto quarter = std::make_shared<DeferredProcessor>(share, DeferredSettings{});
  SdkTracer quarter_tracer(make_deferred_sampler(0.25), quarter);
  int flagged = 0;
  for (int i = 0; i < 4000; ++i) {
    auto span = quarter_tracer.start_span("x", context);
    flagged += span->context().sampled();
    CHECK(span->context().sampled() == trace_id_ratio_decision(span->context().trace_id, 0.25));
    span->end();
  }
  CHECK(share->spans().size() == static_cast<std::size_t>(flagged));
  CHECK(flagged > 800);
  CHECK(flagged < 1200);
}

TEST_CASE("deferred: late spans follow the decision; the buffer is bounded; shutdown decides") {
  auto collected = std::make_shared<CollectingProcessor>();
  DeferredSettings settings;
  settings.max_buffered = 4;
  auto deferred = std::make_shared<DeferredProcessor>(collected, settings);
  SdkTracer tracer(make_deferred_sampler(0.0), deferred);
  micro::Context context;

  // Async work that outlives its root: a clean late child is discarded with its trace, a
  // failing one is kept (and keeps what comes after).
  auto root = tracer.start_span("Job.Start", context);
  micro::Context in_root;
  in_root.set_span(root);
  auto late_clean = tracer.start_span("Job.Step", in_root);
  auto late_failing = tracer.start_span("Job.Step", in_root);
  root->end();
  late_clean->end();
  CHECK(collected->spans().empty());
  late_failing->set_status(StatusCode::error, "step failed");
  late_failing->end();
  REQUIRE(collected->spans().size() == 1);
  CHECK(collected->spans()[0].context == late_failing->context());

  // Roots that never end: at most 4 spans wait; past that the oldest trace is decided (by
  // what it has: here an error, so kept).
  std::vector<std::shared_ptr<Span>> open_roots, children;
  for (int i = 0; i < 5; ++i) {
    open_roots.push_back(tracer.start_span("Open.Root", context));
    micro::Context inside;
    inside.set_span(open_roots.back());
    children.push_back(tracer.start_span("Open.Child", inside));
    if (i == 0) children.back()->set_status(StatusCode::error, "first");
    children.back()->end();
  }
  CHECK(deferred->counts().traces_forced == 1);
  REQUIRE(collected->spans().size() == 2);
  CHECK(collected->spans()[1].context == children[0]->context());
  // Shutdown decides the rest (clean, ratio 0: discarded) and loses nothing kept.
  deferred->shutdown();
  CHECK(collected->spans().size() == 2);
  CHECK(deferred->counts().traces_discarded == 1 + 4);
}

TEST_CASE("deferred sampler settings: its options, and the ones that need it") {
  ScopedEnvironment sampler_variable("OTEL_TRACES_SAMPLER", nullptr);
  ScopedEnvironment argument_variable("OTEL_TRACES_SAMPLER_ARG", nullptr);
  auto settings = SamplerSettings::from(arguments({{"sampler", "deferred"},
                                                   {"ratio", "0.01"},
                                                   {"keep_errors", "false"},
                                                   {"slower_than", "250ms"}}));
  CHECK(settings.name == "deferred");
  CHECK(settings.ratio == 0.01);
  CHECK_FALSE(settings.keep_errors);
  CHECK(settings.slower_than == 250ms);
  CHECK(make_sampler(settings)->description().rfind("Deferred{ratio=0.01", 0) == 0);
  CHECK_THROWS_WITH_AS(SamplerSettings::from(arguments({{"slower_than", "1s"}})),
                       doctest::Contains("need sampler=deferred"), micro::Exception);
  CHECK_THROWS_WITH_AS(
      SamplerSettings::from(arguments({{"sampler", "deferred"}, {"rules", "a.*=1"}})),
      doctest::Contains("does not combine with sampler=deferred"), micro::Exception);
}

TEST_CASE("deferred: one trace entering the process twice is decided per local root") {
  auto collected = std::make_shared<CollectingProcessor>();
  auto deferred = std::make_shared<DeferredProcessor>(collected, DeferredSettings{});
  SdkTracer tracer(make_deferred_sampler(0.0), deferred);
  SpanContext caller{random_trace_id(), random_span_id(), 0, "", true};
  auto serve = [&](const char* name) {
    StartOptions options;
    options.kind = SpanKind::server;
    options.parent = &caller;
    micro::Context context;
    return tracer.start_span(name, context, options);
  };
  auto child_of = [&](const std::shared_ptr<Span>& parent) {
    micro::Context context;
    context.set_span(parent);
    return tracer.start_span("Store.Get", context);
  };
  auto first = serve("Greeter.Hello");
  auto second = serve("Greeter.Hello");
  auto first_child = child_of(first);
  auto second_child = child_of(second);
  second_child->end();
  second->end();  // a clean part: discarded
  CHECK(collected->spans().empty());
  first_child->set_status(StatusCode::error, "store down");
  first_child->end();
  first->end();  // its own part, with the error: kept, all of it
  auto spans = collected->spans();
  REQUIRE(spans.size() == 2);
  CHECK(spans[0].context == first_child->context());
  CHECK(spans[1].context == first->context());
  CHECK(spans[0].local_root == first->context().span_id);
}
