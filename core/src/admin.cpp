// AdminServer: /metrics, /health/*, and the pages for people, on a thread of its own; the
// per-endpoint figures over the last minute come from snapshots of the request histogram taken
// every few seconds on that thread.
#include <micro/admin.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>
#include <vector>

#include <unistd.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include <micro/error.hpp>
#include <micro/http_server.hpp>
#include <micro/log.hpp>

namespace micro::admin {

namespace {

using Clock = std::chrono::steady_clock;
using json = nlohmann::json;

constexpr std::string_view request_histogram = "micro_request_duration_seconds";
constexpr auto snapshot_interval = std::chrono::seconds(5);
constexpr auto window = std::chrono::seconds(60);

std::string lowered(std::string_view text) {
  std::string out(text);
  for (auto& c : out)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return out;
}

bool secret_name(std::string_view name) {
  std::string lower = lowered(name);
  for (std::string_view suffix : {"_file", "_path", "_dir"})
    if (lower.ends_with(suffix)) return false;
  for (std::string_view word : {"password", "passwd", "secret", "token", "credential", "key"})
    if (lower.find(word) != std::string::npos) return true;
  return false;
}

std::string html_escape(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '&':
        out += "&amp;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

bool wants_html(const http::ServerRequest& request) {
  return request.header("Accept").find("text/html") != std::string_view::npos;
}

http::ServerResponse text_response(int status, std::string content_type, std::string body) {
  http::ServerResponse response;
  response.status = status;
  response.headers.push_back({"Content-Type", std::move(content_type)});
  response.headers.push_back({"Cache-Control", "no-store"});
  response.body = std::move(body);
  return response;
}

// One endpoint's numbers over the window.
struct EndpointFigures {
  double rate = 0;        // requests per second
  double error_rate = 0;  // fraction of them that failed
  double p50 = NAN, p99 = NAN;
  std::uint64_t requests = 0;
};

struct Snapshot {
  Clock::time_point at;
  // "chain service endpoint" → per-bucket counts summed over statuses, and errors.
  std::map<std::string, std::pair<std::vector<std::uint64_t>, std::uint64_t>> endpoints;
};

// The process figures Prometheus' client libraries export under these names, from /proc.
void collect_process(metrics::Collector& collector) {
  std::ifstream stat("/proc/self/stat");
  std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  // Fields after the command name (which may hold spaces) in parentheses.
  auto close = text.rfind(')');
  if (close != std::string::npos) {
    std::istringstream fields(text.substr(close + 2));
    std::vector<std::string> values;
    for (std::string field; fields >> field;) values.push_back(field);
    // utime, stime are fields 14, 15; num_threads 20; rss 24 (1-based, counting from pid).
    if (values.size() > 21) {
      double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
      double cpu = (std::stod(values[11]) + std::stod(values[12])) / ticks;
      collector.counter("process_cpu_seconds_total", "user and system CPU time spent", {}, cpu);
      collector.gauge("process_threads", "threads of the process", {}, std::stod(values[17]));
      collector.gauge("process_resident_memory_bytes", "resident memory size", {},
                      std::stod(values[21]) * static_cast<double>(sysconf(_SC_PAGESIZE)));
      // starttime (field 22) counts ticks since boot; /proc/stat's btime is the boot time.
      std::ifstream boot("/proc/stat");
      for (std::string line; std::getline(boot, line);) {
        if (line.starts_with("btime "))
          collector.gauge("process_start_time_seconds", "start time of the process since the epoch",
                          {}, std::stod(line.substr(6)) + std::stod(values[19]) / ticks);
      }
    }
  }
  std::error_code error;
  std::size_t descriptors = 0;
  for (auto it = std::filesystem::directory_iterator("/proc/self/fd", error);
       !error && it != std::filesystem::directory_iterator(); it.increment(error))
    ++descriptors;
  if (!error)
    collector.gauge("process_open_fds", "open file descriptors", {},
                    static_cast<double>(descriptors));
}

}  // namespace

std::string redact_secrets(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  std::size_t i = 0;
  while (i < text.size()) {
    // A name at a boundary, followed by '=': a key of the config string or a plugin option.
    bool boundary = i == 0 || text[i - 1] == ' ' || text[i - 1] == '?' || text[i - 1] == '&' ||
                    text[i - 1] == ',' || text[i - 1] == '\n' || text[i - 1] == '\t';
    if (boundary) {
      std::size_t end = i;
      while (end < text.size() && (std::isalnum(static_cast<unsigned char>(text[end])) ||
                                   text[end] == '_' || text[end] == '-'))
        ++end;
      if (end > i && end < text.size() && text[end] == '=' &&
          secret_name(text.substr(i, end - i))) {
        out.append(text.substr(i, end - i + 1));
        out += "***";
        std::size_t value_end = end + 1;
        // A top-level key's value runs to the next space; an option's to '&', ',' or space.
        bool option = i > 0 && text[i - 1] != ' ' && text[i - 1] != '\n' && text[i - 1] != '\t';
        while (value_end < text.size() && text[value_end] != ' ' && text[value_end] != '\n' &&
               !(option && (text[value_end] == '&' || text[value_end] == ',')))
          ++value_end;
        i = value_end;
        continue;
      }
    }
    // "scheme://user:password@host": the password goes.
    if (text.substr(i, 3) == "://") {
      std::size_t stop = text.find_first_of(" /?&,", i + 3);
      std::size_t at = text.find('@', i + 3);
      std::size_t colon = text.find(':', i + 3);
      if (at != std::string_view::npos && (stop == std::string_view::npos || at < stop) &&
          colon < at) {
        out.append(text.substr(i, colon + 1 - i));
        out += "***";
        i = at;
        continue;
      }
    }
    out += text[i++];
  }
  return out;
}

bool constant_time_equal(std::string_view a, std::string_view b) noexcept {
  volatile unsigned char difference = static_cast<unsigned char>(a.size() != b.size());
  std::size_t length = std::max(a.size(), b.size());
  for (std::size_t i = 0; i < length; ++i) {
    unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    difference = static_cast<unsigned char>(difference | (x ^ y));
  }
  return difference == 0;
}

double bucket_quantile(double q, const std::vector<double>& bounds,
                       const std::vector<std::uint64_t>& counts) {
  std::uint64_t total = 0;
  for (auto count : counts) total += count;
  if (total == 0 || counts.size() != bounds.size() + 1) return NAN;
  double rank = q * static_cast<double>(total);
  std::uint64_t cumulative = 0;
  for (std::size_t i = 0; i < counts.size(); ++i) {
    std::uint64_t before = cumulative;
    cumulative += counts[i];
    if (static_cast<double>(cumulative) >= rank && counts[i] > 0) {
      if (i == bounds.size()) return bounds.empty() ? NAN : bounds.back();  // in +Inf
      double lower = i == 0 ? 0 : bounds[i - 1];
      double upper = bounds[i];
      return lower + (upper - lower) * (rank - static_cast<double>(before)) /
                         static_cast<double>(counts[i]);
    }
  }
  return bounds.empty() ? NAN : bounds.back();
}

SpanRing::SpanRing(std::size_t capacity) : capacity_(std::max<std::size_t>(capacity, 1)) {}

void SpanRing::record(SpanRecord span) {
  std::lock_guard lock(mutex_);
  ++recorded_;
  if (ring_.size() < capacity_) {
    ring_.push_back(std::move(span));
    return;
  }
  ring_[next_] = std::move(span);
  next_ = (next_ + 1) % capacity_;
}

std::vector<SpanRecord> SpanRing::recent() const {
  std::lock_guard lock(mutex_);
  std::vector<SpanRecord> spans;
  spans.reserve(ring_.size());
  for (std::size_t i = 0; i < ring_.size(); ++i) spans.push_back(ring_[(next_ + i) % ring_.size()]);
  return spans;
}

std::uint64_t SpanRing::recorded() const {
  std::lock_guard lock(mutex_);
  return recorded_;
}

SpanRing& recent_spans() {
  static SpanRing* ring = new SpanRing();  // never destroyed: SDK threads may record at exit
  return *ring;
}

namespace {

// /traces: the recent spans grouped by trace, newest trace first; HTML draws each trace as a
// waterfall (a bar per span, offset and width in proportion to the trace's extent).
// /connections: the page's JSON as JSON (?format=json or Accept: application/json), HTML to
// browsers, and otherwise plain text with one line per connection, as brpc's /connections.
// Any other query is refused with 400 naming it, so a typo does not silently show the default.
http::ServerResponse connections_page(const http::ServerRequest& request, const json& body) {
  std::string format;
  auto mark = request.target.find('?');
  if (mark != std::string::npos) {
    std::string_view query = std::string_view(request.target).substr(mark + 1);
    while (!query.empty()) {
      auto amp = query.find('&');
      std::string_view pair = query.substr(0, amp);
      query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
      if (pair.empty()) continue;
      auto equals = pair.find('=');
      std::string_view key = pair.substr(0, equals);
      std::string_view value = equals == std::string_view::npos ? "" : pair.substr(equals + 1);
      if (key != "format" || (value != "json" && value != "text" && value != "html"))
        return text_response(400, "text/plain; charset=utf-8",
                             "/connections: bad query parameter '" + std::string(pair) +
                                 "'; the only one is format=json, format=text or format=html\n");
      format = value;
    }
  }
  if (format.empty()) {
    if (request.header("Accept").find("application/json") != std::string_view::npos)
      format = "json";
    else
      format = wants_html(request) ? "html" : "text";
  }
  if (format == "json") return text_response(200, "application/json", body.dump(2) + "\n");
  static const char* columns[] = {"transport", "side",     "peer",     "local",    "age_seconds",
                                  "in_flight", "requests", "bytes_in", "bytes_out"};
  auto cell = [](const json& value) {
    if (value.is_string()) return value.get<std::string>();
    if (value.is_number_float()) {
      char buffer[32];
      std::snprintf(buffer, sizeof buffer, "%.1f", value.get<double>());
      return std::string(buffer);
    }
    return value.dump();
  };
  const json rows = body.contains("rows") ? body["rows"] : json::array();
  if (format == "text") {
    std::string out = "connections: " + std::to_string(rows.size()) + "\n";
    for (const char* column : columns) out += std::string(column) + " ";
    out.back() = '\n';
    for (const auto& row : rows) {
      for (const char* column : columns) out += cell(row.value(column, json())) + " ";
      out.back() = '\n';
    }
    return text_response(200, "text/plain; charset=utf-8", std::move(out));
  }
  std::string html =
      "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>/connections</title>"
      "<style>body{font-family:sans-serif}td,th{padding:1px 6px;text-align:left}</style></head>"
      "<body><p><a href=\"/\">admin</a> /connections (<a href=\"?format=json\">json</a>)</p>"
      "<table><tr>";
  for (const char* column : columns) html += "<th>" + std::string(column) + "</th>";
  html += "</tr>";
  for (const auto& row : rows) {
    html += "<tr>";
    for (const char* column : columns)
      html += "<td>" + html_escape(cell(row.value(column, json()))) + "</td>";
    html += "</tr>";
  }
  html += "</table><pre>" + html_escape(body.dump(2)) + "</pre></body></html>\n";
  return text_response(200, "text/html; charset=utf-8", std::move(html));
}

http::ServerResponse traces_page(const http::ServerRequest& request) {
  auto spans = recent_spans().recent();
  std::map<std::string, std::vector<SpanRecord>> traces;
  for (auto& span : spans) traces[span.trace_id].push_back(std::move(span));
  std::vector<std::pair<double, std::string>> order;  // (start, trace id), newest first
  for (auto& [id, members] : traces) {
    std::sort(members.begin(), members.end(),
              [](const SpanRecord& a, const SpanRecord& b) { return a.start < b.start; });
    order.emplace_back(members.front().start, id);
  }
  std::sort(order.rbegin(), order.rend());
  if (!wants_html(request)) {
    json body;
    body["recorded"] = recent_spans().recorded();
    body["enabled"] = recent_spans().enabled();
    body["traces"] = json::array();
    for (const auto& [start, id] : order) {
      json trace{{"trace_id", id}, {"spans", json::array()}};
      for (const auto& span : traces[id])
        trace["spans"].push_back({{"span_id", span.span_id},
                                  {"parent_span_id", span.parent_span_id},
                                  {"name", span.name},
                                  {"kind", span.kind},
                                  {"status", span.status},
                                  {"start", span.start},
                                  {"duration_ms", span.duration * 1000}});
      body["traces"].push_back(std::move(trace));
    }
    return text_response(200, "application/json", body.dump(2) + "\n");
  }
  std::string html =
      "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>traces</title><style>"
      "body{font-family:sans-serif}td{padding:1px 6px;white-space:nowrap}"
      ".lane{position:relative;width:480px;height:12px;background:#eee}"
      ".bar{position:absolute;height:12px;background:#4a7}.error{background:#c44}"
      "</style></head><body><p><a href=\"/\">admin</a> /traces</p>";
  if (order.empty())
    html +=
        "<p>No spans recorded. Spans appear here when the trace wrapper records them "
        "(wrappers=trace).</p>";
  for (const auto& [trace_start, id] : order) {
    const auto& members = traces[id];
    double end = trace_start;
    for (const auto& span : members) end = std::max(end, span.start + span.duration);
    double extent = std::max(end - trace_start, 1e-9);
    html += "<h3>trace " + html_escape(id) + "</h3><table>";
    for (const auto& span : members) {
      char geometry[96];
      std::snprintf(geometry, sizeof geometry, "left:%.2f%%;width:%.2f%%",
                    100 * (span.start - trace_start) / extent,
                    std::max(0.3, 100 * span.duration / extent));
      char duration[32];
      std::snprintf(duration, sizeof duration, "%.3f ms", span.duration * 1000);
      html += "<tr><td>" + html_escape(span.name) + "</td><td>" + html_escape(span.kind) +
              "</td><td>" + duration + "</td><td><div class=\"lane\"><div class=\"bar" +
              (span.status == "error" ? " error" : "") + "\" style=\"" + geometry +
              "\"></div></div></td></tr>";
    }
    html += "</table>";
  }
  html += "</body></html>\n";
  return text_response(200, "text/html; charset=utf-8", std::move(html));
}

}  // namespace

struct AdminServer::State : std::enable_shared_from_this<AdminServer::State> {
  AdminOptions options;
  metrics::Registry* registry;
  boost::asio::io_context io_context{1};
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work{
      io_context.get_executor()};
  std::thread thread;
  std::unique_ptr<http::Server> server;
  boost::asio::steady_timer timer{io_context};
  std::atomic<bool> draining{false};
  Clock::time_point started = Clock::now();

  std::mutex mutex;  // checks, summary, pages (set by the owner's thread, read on the admin one)
  struct Check {
    std::string name;
    Probe probe;
    CheckFunction check;
  };
  std::vector<Check> checks;
  std::function<json()> summary;
  std::map<std::string, std::function<json()>> pages;
  std::deque<Snapshot> snapshots;  // admin thread only
  metrics::Registration process_collector;

  Snapshot take_snapshot() const;
  std::map<std::string, EndpointFigures> figures();
  void schedule_snapshot();
  http::ServerResponse answer(const http::ServerRequest& request);
  http::ServerResponse health(Probe probe);
  http::ServerResponse index(const http::ServerRequest& request);
  http::ServerResponse page(const http::ServerRequest& request, const std::string& path,
                            const json& body);
};

Snapshot AdminServer::State::take_snapshot() const {
  Snapshot snapshot;
  snapshot.at = Clock::now();
  const auto* family = registry->find(request_histogram);
  const auto* histogram = dynamic_cast<const metrics::Histogram*>(family);
  if (!histogram) return snapshot;
  const auto& names = histogram->label_names();
  auto index_of = [&](std::string_view name) {
    return static_cast<std::size_t>(std::find(names.begin(), names.end(), name) - names.begin());
  };
  std::size_t chain = index_of("chain"), service = index_of("service"),
              endpoint = index_of("endpoint"), status = index_of("status");
  for (auto& [values, numbers] : histogram->snapshots()) {
    auto value = [&](std::size_t index) {
      return index < values.size() ? values[index] : std::string();
    };
    std::string key = value(chain) + " " + value(service) + " " + value(endpoint);
    auto& [counts, errors] = snapshot.endpoints[key];
    if (counts.empty()) counts.assign(numbers.counts.size(), 0);
    for (std::size_t i = 0; i < counts.size() && i < numbers.counts.size(); ++i)
      counts[i] += numbers.counts[i];
    if (status < values.size() && values[status] != "success") errors += numbers.count;
  }
  return snapshot;
}

std::map<std::string, EndpointFigures> AdminServer::State::figures() {
  std::map<std::string, EndpointFigures> result;
  Snapshot now = take_snapshot();
  const Snapshot* base = nullptr;
  // The oldest snapshot inside the window (or the start, all zero).
  for (const auto& snapshot : snapshots) {
    if (now.at - snapshot.at <= window + snapshot_interval) {
      base = &snapshot;
      break;
    }
  }
  double seconds = std::chrono::duration<double>(now.at - (base ? base->at : started)).count();
  seconds = std::max(seconds, 1e-3);
  const auto* histogram =
      dynamic_cast<const metrics::Histogram*>(registry->find(request_histogram));
  for (auto& [key, numbers] : now.endpoints) {
    auto counts = numbers.first;
    std::uint64_t errors = numbers.second;
    if (base) {
      auto found = base->endpoints.find(key);
      if (found != base->endpoints.end()) {
        for (std::size_t i = 0; i < counts.size() && i < found->second.first.size(); ++i)
          counts[i] -= found->second.first[i];
        errors -= found->second.second;
      }
    }
    EndpointFigures figures;
    for (auto count : counts) figures.requests += count;
    figures.rate = static_cast<double>(figures.requests) / seconds;
    figures.error_rate =
        figures.requests ? static_cast<double>(errors) / static_cast<double>(figures.requests) : 0;
    if (histogram) {
      figures.p50 = bucket_quantile(0.5, histogram->bounds(), counts);
      figures.p99 = bucket_quantile(0.99, histogram->bounds(), counts);
    }
    result[key] = figures;
  }
  return result;
}

void AdminServer::State::schedule_snapshot() {
  timer.expires_after(snapshot_interval);
  timer.async_wait([weak = weak_from_this()](boost::system::error_code error) {
    auto self = weak.lock();
    if (error || !self) return;
    self->snapshots.push_back(self->take_snapshot());
    while (!self->snapshots.empty() &&
           Clock::now() - self->snapshots.front().at > window + 2 * snapshot_interval)
      self->snapshots.pop_front();
    self->schedule_snapshot();
  });
}

http::ServerResponse AdminServer::State::health(Probe probe) {
  std::vector<Check> selected;
  {
    std::lock_guard lock(mutex);
    for (const auto& check : checks)
      if (probe == Probe::readiness || check.probe == Probe::liveness) selected.push_back(check);
  }
  json body;
  body["checks"] = json::object();
  bool ok = true;
  for (const auto& check : selected) {
    CheckResult result;
    try {
      result = check.check();
    } catch (const std::exception& e) {
      result = {false, std::string("check threw: ") + e.what()};
    }
    ok = ok && result.ok;
    body["checks"][check.name] = {{"ok", result.ok}, {"detail", result.detail}};
  }
  if (probe == Probe::readiness) {
    bool is_draining = draining.load();
    body["checks"]["draining"] = {
        {"ok", !is_draining},
        {"detail", is_draining ? "not serving: starting or stopping" : "serving"}};
    ok = ok && !is_draining;
  }
  body["status"] = ok ? "ok" : "unavailable";
  return text_response(ok ? 200 : 503, "application/json", body.dump(2) + "\n");
}

http::ServerResponse AdminServer::State::page(const http::ServerRequest& request,
                                              const std::string& path, const json& body) {
  if (!wants_html(request)) return text_response(200, "application/json", body.dump(2) + "\n");
  std::string html = "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>" +
                     html_escape(path) + "</title></head><body><p><a href=\"/\">admin</a> " +
                     html_escape(path) + "</p><pre>" + html_escape(body.dump(2)) +
                     "</pre></body></html>\n";
  return text_response(200, "text/html; charset=utf-8", std::move(html));
}

http::ServerResponse AdminServer::State::index(const http::ServerRequest& request) {
  json summary;
  {
    std::function<json()> make;
    {
      std::lock_guard lock(mutex);
      make = this->summary;
    }
    if (make) summary = make();
  }
  if (!summary.is_object()) summary = json::object();
  auto uptime = std::chrono::duration_cast<std::chrono::seconds>(Clock::now() - started);
  summary["uptime_seconds"] = uptime.count();
  auto endpoint_figures = figures();
  std::vector<std::string> links = {"/metrics", "/health/live", "/health/ready", "/traces"};
  {
    std::lock_guard lock(mutex);
    for (const auto& entry : pages) links.push_back(entry.first);
  }
  auto number = [](double value, const char* format) {
    if (std::isnan(value)) return std::string("-");
    char buffer[48];
    std::snprintf(buffer, sizeof buffer, format, value);
    return std::string(buffer);
  };
  bool html = wants_html(request);
  std::string out;
  if (html) {
    out = "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>" +
          html_escape(summary.value("service", std::string("micro"))) +
          "</title><style>body{font-family:sans-serif}td,th{padding:2px 8px;text-align:left}"
          "</style></head><body><h1>" +
          html_escape(summary.value("service", std::string("micro"))) + "</h1><table>";
    for (auto& [key, value] : summary.items())
      out += "<tr><th>" + html_escape(key) + "</th><td>" +
             html_escape(value.is_string() ? value.get<std::string>() : value.dump()) +
             "</td></tr>";
    out +=
        "</table><h2>Endpoints (last minute)</h2><table><tr><th>chain</th><th>service</th>"
        "<th>endpoint</th><th>req/s</th><th>errors</th><th>p50 ms</th><th>p99 ms</th></tr>";
  } else {
    for (auto& [key, value] : summary.items())
      out += key + ": " + (value.is_string() ? value.get<std::string>() : value.dump()) + "\n";
    out += "\nendpoints (last minute): chain service endpoint req/s error% p50_ms p99_ms\n";
  }
  for (auto& [key, figures] : endpoint_figures) {
    std::string chain = key.substr(0, key.find(' '));
    std::string rest = key.substr(key.find(' ') + 1);
    std::string service = rest.substr(0, rest.find(' '));
    std::string endpoint = rest.substr(rest.find(' ') + 1);
    std::string rate = number(figures.rate, "%.2f");
    std::string errors = number(figures.error_rate * 100, "%.1f%%");
    std::string p50 = number(figures.p50 * 1000, "%.3f");
    std::string p99 = number(figures.p99 * 1000, "%.3f");
    if (html)
      out += "<tr><td>" + html_escape(chain) + "</td><td>" + html_escape(service) + "</td><td>" +
             html_escape(endpoint) + "</td><td>" + rate + "</td><td>" + errors + "</td><td>" + p50 +
             "</td><td>" + p99 + "</td></tr>";
    else
      out += "  " + chain + " " + service + " " + endpoint + " " + rate + " " + errors + " " + p50 +
             " " + p99 + "\n";
  }
  if (html) {
    out += "</table><h2>Pages</h2><ul>";
    for (const auto& link : links)
      out += "<li><a href=\"" + html_escape(link) + "\">" + html_escape(link) + "</a></li>";
    out += "</ul></body></html>\n";
    return text_response(200, "text/html; charset=utf-8", std::move(out));
  }
  out += "\npages:";
  for (const auto& link : links) out += " " + link;
  out += "\n";
  return text_response(200, "text/plain; charset=utf-8", std::move(out));
}

http::ServerResponse AdminServer::State::answer(const http::ServerRequest& request) {
  std::string path = request.target.substr(0, request.target.find('?'));
  bool probe = path == "/health/live" || path == "/health/ready";
  if (!options.token.empty() && !probe) {
    std::string_view authorization = request.header("Authorization");
    constexpr std::string_view scheme = "Bearer ";
    bool ok = authorization.size() > scheme.size() &&
              lowered(authorization.substr(0, scheme.size())) == "bearer " &&
              constant_time_equal(authorization.substr(scheme.size()), options.token);
    if (!ok) {
      auto response = text_response(401, "text/plain; charset=utf-8",
                                    "this admin endpoint needs Authorization: Bearer <token>\n");
      response.headers.push_back({"WWW-Authenticate", "Bearer realm=\"micro admin\""});
      return response;
    }
  }
  if (request.method != "GET" && request.method != "HEAD") {
    auto response = text_response(405, "text/plain; charset=utf-8",
                                  "method " + request.method + " not allowed; use GET\n");
    response.headers.push_back({"Allow", "GET, HEAD"});
    return response;
  }
  if (path == "/metrics") {
    auto format = metrics::negotiate(request.header("Accept"));
    return text_response(200, std::string(metrics::content_type(format)), registry->expose(format));
  }
  if (path == "/health/live") return health(Probe::liveness);
  if (path == "/health/ready") return health(Probe::readiness);
  if (path == "/") return index(request);
  if (path == "/traces") return traces_page(request);
  std::function<json()> make;
  {
    std::lock_guard lock(mutex);
    auto found = pages.find(path);
    if (found != pages.end()) make = found->second;
  }
  if (make && path == "/connections") return connections_page(request, make());
  if (make) return page(request, path, make());
  return text_response(
      404, "text/plain; charset=utf-8",
      "no admin page at '" + path + "'; try /, /metrics, /health/live, /health/ready, /traces\n");
}

AdminServer::AdminServer(AdminOptions options) : state_(std::make_shared<State>()) {
  state_->options = std::move(options);
  state_->registry =
      state_->options.registry ? state_->options.registry : &metrics::default_registry();
}

AdminServer::~AdminServer() {
  close();
}

void AdminServer::listen() {
  if (state_->server) return;
  http::ServerOptions http_options;
  http_options.body_limit = 64 * 1024;  // admin requests carry no bodies worth the name
  http_options.max_connections = 64;
  std::weak_ptr<State> weak = state_;
  state_->server = std::make_unique<http::Server>(
      state_->io_context.get_executor(), std::move(http_options),
      [weak](http::ExchangePtr exchange) {
        auto self = weak.lock();
        if (!self) {
          exchange->respond({503, {}, "admin server stopping\n"});
          return;
        }
        http::ServerResponse response;
        try {
          response = self->answer(exchange->request());
        } catch (const std::exception& e) {
          response = text_response(500, "text/plain; charset=utf-8",
                                   std::string("admin page failed: ") + e.what() + "\n");
        }
        if (exchange->request().method == "HEAD") response.body.clear();
        exchange->respond(std::move(response));
      });
  state_->server->listen(state_->options.address);
  state_->process_collector = state_->registry->add_collector(collect_process);
  recent_spans().set_enabled(true);
  state_->schedule_snapshot();
  state_->thread = std::thread([state = state_] { state->io_context.run(); });
}

std::string AdminServer::address() const {
  return state_->server ? state_->server->address() : std::string();
}

void AdminServer::add_check(std::string name, Probe probe, CheckFunction check) {
  std::lock_guard lock(state_->mutex);
  state_->checks.push_back({std::move(name), probe, std::move(check)});
}

void AdminServer::set_draining(bool draining) {
  state_->draining.store(draining);
}

bool AdminServer::draining() const noexcept {
  return state_->draining.load();
}

void AdminServer::set_summary(std::function<json()> summary) {
  std::lock_guard lock(state_->mutex);
  state_->summary = std::move(summary);
}

void AdminServer::set_page(std::string path, std::function<json()> page) {
  std::lock_guard lock(state_->mutex);
  state_->pages[std::move(path)] = std::move(page);
}

void AdminServer::close() {
  if (!state_->thread.joinable()) return;
  // The server and timer belong to the admin thread: closed there, then the thread ends.
  boost::asio::post(state_->io_context, [state = state_] {
    state->timer.cancel();
    if (state->server) state->server->close();
    state->work.reset();
  });
  state_->thread.join();
  state_->process_collector.reset();
  state_->server.reset();
  state_->io_context.stop();
}

}  // namespace micro::admin
