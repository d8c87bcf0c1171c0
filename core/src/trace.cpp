// The tracing API's core pieces: trace and span ids (hex form), the no-op tracer that is
// installed until an SDK replaces it, and the process-wide tracer slot.
#include <micro/trace.hpp>

#include <array>
#include <atomic>
#include <cstdint>
#include <mutex>

namespace micro::trace {

namespace {

constexpr char hex_digits[] = "0123456789abcdef";

// Lowercase hex only: W3C Trace Context forbids uppercase in ids.
// A table rather than range tests: ids are random, so digit-or-letter branches mispredict on
// about every other character, and every traced request parses 48 of them.
constexpr std::array<std::int8_t, 256> lower_hex_values = [] {
  std::array<std::int8_t, 256> values{};
  for (auto& value : values) value = -1;
  for (int digit = 0; digit < 10; ++digit) values['0' + digit] = static_cast<std::int8_t>(digit);
  for (int letter = 0; letter < 6; ++letter)
    values['a' + letter] = static_cast<std::int8_t>(10 + letter);
  return values;
}();

int hex_value(char c) noexcept {
  return lower_hex_values[static_cast<unsigned char>(c)];
}

template <std::size_t Size>
std::string bytes_to_hex(const std::array<std::uint8_t, Size>& bytes) {
  std::string hex(Size * 2, '0');
  for (std::size_t i = 0; i < Size; ++i) {
    hex[2 * i] = hex_digits[bytes[i] >> 4];
    hex[2 * i + 1] = hex_digits[bytes[i] & 0x0f];
  }
  return hex;
}

template <std::size_t Size>
bool hex_to_bytes(std::string_view hex, std::array<std::uint8_t, Size>& bytes) noexcept {
  if (hex.size() != Size * 2) return false;
  int invalid = 0;  // any -1 sets the sign bit; checked once at the end
  for (std::size_t i = 0; i < Size; ++i) {
    int high = hex_value(hex[2 * i]);
    int low = hex_value(hex[2 * i + 1]);
    invalid |= high | low;
    bytes[i] = static_cast<std::uint8_t>((high << 4) | low);
  }
  return invalid >= 0;
}

template <std::size_t Size>
bool any_nonzero(const std::array<std::uint8_t, Size>& bytes) noexcept {
  for (auto byte : bytes)
    if (byte != 0) return true;
  return false;
}

// The span every no-op start_span hands out (invalid context): one static object shared by
// all callers.
NonRecordingSpan noop_span;

class NoopTracer final : public Tracer {
 public:
  std::shared_ptr<Span> start_span(std::string_view, const Context&, const StartOptions&) override {
    // Aliasing constructor with an empty owner: a non-null pointer without a control block,
    // so copying it allocates nothing and touches no reference count.
    return std::shared_ptr<Span>(std::shared_ptr<void>(), &noop_span);
  }
  bool enabled() const noexcept override { return false; }
};

// Constant-initialised, so tracer() works even during other translation units' static
// initialisation.
constinit NoopTracer noop_tracer;
constinit std::atomic<Tracer*> current_tracer{&noop_tracer};

// Every tracer ever installed stays alive until exit: tracer() hands out plain references,
// and a thread may still be inside the previous tracer when set_tracer replaces it.
struct InstalledTracers {
  std::mutex mutex;
  std::vector<std::shared_ptr<Tracer>> tracers;

  ~InstalledTracers() {
    // Late callers (detached threads at exit) fall back to the no-op, not to a dead tracer.
    current_tracer.store(&noop_tracer, std::memory_order_release);
  }
};

InstalledTracers& installed_tracers() {
  static InstalledTracers installed;
  return installed;
}

}  // namespace

bool TraceId::valid() const noexcept {
  return any_nonzero(bytes);
}

std::string TraceId::to_hex() const {
  return bytes_to_hex(bytes);
}

std::optional<TraceId> TraceId::from_hex(std::string_view hex) noexcept {
  TraceId id;
  if (!hex_to_bytes(hex, id.bytes)) return std::nullopt;
  return id;
}

bool SpanId::valid() const noexcept {
  return any_nonzero(bytes);
}

std::string SpanId::to_hex() const {
  return bytes_to_hex(bytes);
}

std::optional<SpanId> SpanId::from_hex(std::string_view hex) noexcept {
  SpanId id;
  if (!hex_to_bytes(hex, id.bytes)) return std::nullopt;
  return id;
}

Tracer& tracer() noexcept {
  return *current_tracer.load(std::memory_order_acquire);
}

void set_tracer(std::shared_ptr<Tracer> tracer) noexcept {
  auto& installed = installed_tracers();
  std::lock_guard lock(installed.mutex);
  if (!tracer) {
    current_tracer.store(&noop_tracer, std::memory_order_release);
    return;
  }
  Tracer* raw = tracer.get();
  try {
    bool known = false;
    for (const auto& kept : installed.tracers) known = known || kept.get() == raw;
    if (!known) installed.tracers.push_back(std::move(tracer));
  } catch (...) {
    // Out of memory keeping it alive: refusing to install is safer than a dangling pointer.
    return;
  }
  current_tracer.store(raw, std::memory_order_release);
}

}  // namespace micro::trace
