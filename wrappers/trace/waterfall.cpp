// wrappers/trace — the waterfall view, the console line and reading span files back (see
// waterfall.hpp).
#include "waterfall.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <map>
#include <set>
#include <sstream>

#include <micro/error.hpp>

#include "otlp_json.hpp"

namespace micro::trace::sdk {

namespace {

bool has_parent(const SpanData& span) {
  return std::any_of(span.parent_span_id.bytes.begin(), span.parent_span_id.bytes.end(),
                     [](std::uint8_t byte) { return byte != 0; });
}

std::string milliseconds_text(std::chrono::system_clock::duration duration) {
  char text[32];
  std::snprintf(text, sizeof text, "%.3fms",
                std::chrono::duration<double, std::milli>(duration).count());
  return text;
}

std::string format_time(std::chrono::system_clock::time_point time) {
  auto seconds = std::chrono::floor<std::chrono::seconds>(time);
  auto micros = std::chrono::duration_cast<std::chrono::microseconds>(time - seconds).count();
  std::time_t plain = std::chrono::system_clock::to_time_t(seconds);
  std::tm parts{};
  gmtime_r(&plain, &parts);
  char text[40];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%S", &parts);
  char out[64];
  std::snprintf(out, sizeof out, "%s.%06lldZ", text, static_cast<long long>(micros));
  return out;
}

const char* kind_name(SpanKind kind) {
  switch (kind) {
    case SpanKind::server:
      return "server";
    case SpanKind::client:
      return "client";
    case SpanKind::producer:
      return "producer";
    case SpanKind::consumer:
      return "consumer";
    default:
      return "internal";
  }
}

void write_value(std::ostream& out, const AttributeValue& value) {
  std::visit(
      [&out](const auto& held) {
        using Held = std::decay_t<decltype(held)>;
        if constexpr (std::is_same_v<Held, bool>) {
          out << (held ? "true" : "false");
        } else if constexpr (std::is_same_v<Held, std::string>) {
          out << '"' << held << '"';
        } else if constexpr (std::is_same_v<Held, std::int64_t> || std::is_same_v<Held, double>) {
          out << held;
        } else {
          out << '[';
          bool first = true;
          for (const auto& element : held) {
            if (!first) out << ',';
            first = false;
            write_value(out, AttributeValue(typename Held::value_type(element)));
          }
          out << ']';
        }
      },
      value);
}

}  // namespace

std::string format_console_line(const SpanData& span) {
  std::ostringstream out;
  out << format_time(span.start_time) << " trace=" << bytes_to_hex(span.context.trace_id.bytes)
      << " span=" << bytes_to_hex(span.context.span_id.bytes)
      << " parent=" << (has_parent(span) ? bytes_to_hex(span.parent_span_id.bytes) : "-")
      << " kind=" << kind_name(span.kind) << " name=\"" << span.name << "\""
      << " duration=" << milliseconds_text(span.end_time - span.start_time) << " status="
      << (span.status == StatusCode::error ? "error"
          : span.status == StatusCode::ok  ? "ok"
                                           : "unset");
  if (!span.status_message.empty()) out << "(\"" << span.status_message << "\")";
  for (const auto& [key, value] : span.attributes) {
    out << ' ' << key << '=';
    write_value(out, value);
  }
  if (!span.events.empty()) out << " events=" << span.events.size();
  if (!span.links.empty()) out << " links=" << span.links.size();
  return out.str();
}

namespace {

struct Row {
  const SpanData* span;
  int depth;
};

// Depth-first, children by start time (then name, so equal starts render stably).
void collect_rows(const SpanData* span, int depth,
                  const std::multimap<std::string, const SpanData*>& children,
                  std::set<const SpanData*>& visited, std::vector<Row>& rows) {
  if (!visited.insert(span).second) return;  // a cycle in bad data must not loop forever
  rows.push_back({span, depth});
  auto [first, last] = children.equal_range(bytes_to_hex(span->context.span_id.bytes));
  std::vector<const SpanData*> ordered;
  for (auto it = first; it != last; ++it) ordered.push_back(it->second);
  std::stable_sort(ordered.begin(), ordered.end(), [](const SpanData* a, const SpanData* b) {
    return a->start_time != b->start_time ? a->start_time < b->start_time : a->name < b->name;
  });
  for (const auto* child : ordered) collect_rows(child, depth + 1, children, visited, rows);
}

void render_trace(const std::vector<const SpanData*>& spans, int width, std::string& out) {
  auto trace_start = spans.front()->start_time, trace_end = spans.front()->end_time;
  std::set<std::string> ids;
  std::multimap<std::string, const SpanData*> children;
  for (const auto* span : spans) {
    trace_start = std::min(trace_start, span->start_time);
    trace_end = std::max(trace_end, span->end_time);
    ids.insert(bytes_to_hex(span->context.span_id.bytes));
  }
  std::vector<const SpanData*> roots;
  for (const auto* span : spans) {
    std::string parent = has_parent(*span) ? bytes_to_hex(span->parent_span_id.bytes) : "";
    if (!parent.empty() && ids.contains(parent)) {
      children.emplace(parent, span);
    } else {
      roots.push_back(span);
    }
  }
  std::stable_sort(roots.begin(), roots.end(), [](const SpanData* a, const SpanData* b) {
    return a->start_time < b->start_time;
  });
  std::vector<Row> rows;
  std::set<const SpanData*> visited;
  for (const auto* root : roots) collect_rows(root, 0, children, visited, rows);

  auto total = trace_end - trace_start;
  out += "trace " + bytes_to_hex(spans.front()->context.trace_id.bytes) + "  " +
         std::to_string(spans.size()) + (spans.size() == 1 ? " span  " : " spans  ") +
         milliseconds_text(total) + "\n";

  std::vector<std::string> labels;
  std::size_t label_width = 0;
  for (const auto& row : rows) {
    std::string label = std::string(2 * static_cast<std::size_t>(row.depth), ' ') + row.span->name +
                        " (" + kind_name(row.span->kind) + ")";
    if (row.span->status == StatusCode::error) label += " !";
    label_width = std::max(label_width, label.size());
    labels.push_back(std::move(label));
  }
  constexpr int time_column = 11;  // "1234.567ms" right-aligned
  // label, 2 spaces, offset, space, duration, 2 spaces, the bar between two '|'
  const int fixed = 2 + time_column + 1 + time_column + 2 + 2;
  label_width =
      std::min<std::size_t>(label_width, static_cast<std::size_t>(std::max(width / 2, 12)));
  const int bar_width = std::max(10, width - static_cast<int>(label_width) - fixed);

  for (std::size_t i = 0; i < rows.size(); ++i) {
    const SpanData& span = *rows[i].span;
    std::string label = labels[i];
    if (label.size() > label_width) label = label.substr(0, label_width - 1) + "~";
    label.resize(label_width, ' ');
    char times[64];
    std::snprintf(times, sizeof times, "  %*s %*s  ", time_column,
                  milliseconds_text(span.start_time - trace_start).c_str(), time_column,
                  milliseconds_text(span.end_time - span.start_time).c_str());
    // Columns [first, last) of the bar, proportional to the span's place in the trace;
    // always at least one column so instant spans stay visible.
    int first = 0, last = bar_width;
    if (total.count() > 0) {
      auto scale = [&](std::chrono::system_clock::duration at) {
        return static_cast<double>(at.count()) / static_cast<double>(total.count()) * bar_width;
      };
      first = static_cast<int>(scale(span.start_time - trace_start));
      last = static_cast<int>(std::ceil(scale(span.end_time - trace_start) - 1e-9));
      first = std::clamp(first, 0, bar_width - 1);
      last = std::clamp(last, first + 1, bar_width);
    }
    std::string bar(static_cast<std::size_t>(bar_width), ' ');
    std::fill(bar.begin() + first, bar.begin() + last, '#');
    out += label + times + "|" + bar + "|\n";
  }
}

}  // namespace

std::string render_waterfall(std::span<const SpanData> spans, int width) {
  std::vector<std::string> order;  // trace ids by first start
  std::map<std::string, std::vector<const SpanData*>> traces;
  std::vector<const SpanData*> by_start;
  for (const auto& span : spans) by_start.push_back(&span);
  std::stable_sort(by_start.begin(), by_start.end(), [](const SpanData* a, const SpanData* b) {
    return a->start_time < b->start_time;
  });
  for (const auto* span : by_start) {
    auto id = bytes_to_hex(span->context.trace_id.bytes);
    auto& list = traces[id];
    if (list.empty()) order.push_back(id);
    list.push_back(span);
  }
  std::string out;
  for (const auto& id : order) {
    if (!out.empty()) out += "\n";
    render_trace(traces[id], width, out);
  }
  return out;
}

std::vector<SpanData> read_span_lines(std::istream& input) {
  std::vector<SpanData> out;
  std::string line;
  for (int number = 1; std::getline(input, line); ++number) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    try {
      auto spans = decode_otlp_json(line);
      std::move(spans.begin(), spans.end(), std::back_inserter(out));
    } catch (const Exception& error) {
      throw Exception(Error("micro.trace", ErrorCode::bad_request,
                            "line " + std::to_string(number) + ": " + error.error().detail));
    }
  }
  return out;
}

}  // namespace micro::trace::sdk
