// test/broker/recording_tracer.hpp — a Tracer that keeps every finished span in memory, so the
// broker conformance suite can check the PRODUCER/CONSUMER spans the trace wrappers make around
// a real broker (kind, parent, links, attributes) without an exporter.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include <micro/trace.hpp>

namespace broker_test {

struct RecordedSpan {
  std::string name;
  micro::trace::SpanKind kind = micro::trace::SpanKind::internal;
  micro::trace::SpanContext context;
  micro::trace::SpanContext parent;  // invalid for a root
  std::vector<micro::trace::Attribute> attributes;
  std::vector<micro::trace::Link> links;

  // The string attribute `key`, or "<missing>".
  std::string text(std::string_view key) const {
    for (const auto& [name, value] : attributes)
      if (name == key && std::holds_alternative<std::string>(value))
        return std::get<std::string>(value);
    return "<missing>";
  }
};

class RecordingTracer : public micro::trace::Tracer {
 public:
  std::shared_ptr<micro::trace::Span> start_span(
      std::string_view name, const micro::Context& context,
      const micro::trace::StartOptions& options) override {
    RecordedSpan data;
    data.name = std::string(name);
    data.kind = options.kind;
    if (!options.root) {
      if (options.parent)
        data.parent = *options.parent;
      else if (context.span())
        data.parent = context.span()->context();
    }
    std::uint64_t id = next_id_.fetch_add(1);
    if (data.parent.valid()) {
      data.context.trace_id = data.parent.trace_id;
    } else {
      data.context.trace_id.bytes[0] = 0x7e;
      for (int i = 0; i < 8; ++i) data.context.trace_id.bytes[15 - i] = std::uint8_t(id >> (8 * i));
    }
    data.context.flags = micro::trace::flag_sampled;
    for (int i = 0; i < 8; ++i) data.context.span_id.bytes[7 - i] = std::uint8_t(id >> (8 * i));
    data.attributes = options.attributes;
    data.links = options.links;
    return std::make_shared<Span>(std::move(data), *this);
  }
  bool enabled() const noexcept override { return true; }

  std::vector<RecordedSpan> finished() {
    std::lock_guard lock(mutex_);
    return finished_;
  }

 private:
  class Span : public micro::trace::Span {
   public:
    Span(RecordedSpan data, RecordingTracer& tracer) : data_(std::move(data)), tracer_(tracer) {}
    const micro::trace::SpanContext& context() const noexcept override { return data_.context; }
    bool recording() const noexcept override { return true; }
    void set_attribute(std::string_view key, micro::trace::AttributeValue value) override {
      std::lock_guard lock(mutex_);
      data_.attributes.emplace_back(std::string(key), std::move(value));
    }
    void add_event(std::string_view, std::vector<micro::trace::Attribute>) override {}
    void add_link(const micro::trace::SpanContext& context,
                  std::vector<micro::trace::Attribute> attributes) override {
      std::lock_guard lock(mutex_);
      data_.links.push_back({context, std::move(attributes)});
    }
    void set_status(micro::trace::StatusCode, std::string_view) override {}
    void update_name(std::string_view name) override {
      std::lock_guard lock(mutex_);
      data_.name = std::string(name);
    }
    void end(std::chrono::system_clock::time_point) override {
      std::lock_guard lock(mutex_);
      if (std::exchange(ended_, true)) return;
      std::lock_guard store(tracer_.mutex_);
      tracer_.finished_.push_back(data_);
    }

   private:
    std::mutex mutex_;
    bool ended_ = false;
    RecordedSpan data_;
    RecordingTracer& tracer_;
  };

  std::atomic<std::uint64_t> next_id_{1};
  std::mutex mutex_;
  std::vector<RecordedSpan> finished_;
};

}  // namespace broker_test
