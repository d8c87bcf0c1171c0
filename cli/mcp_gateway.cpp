// `micro mcp` (see mcp_gateway.hpp): tools from the registry, the JSON-RPC dispatch of both
// protocol revisions, and the two transports (stdio, Streamable HTTP). Each rule carries the
// revision it is from: [2025-11-25] or [2026-07-28]; [both] where they agree.
#include "mcp_gateway.hpp"

#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <csignal>
#include <cstring>
#include <deque>
#include <iostream>
#include <map>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include <boost/asio/signal_set.hpp>

#include <micro/base64.hpp>
#include <micro/codec.hpp>
#include <micro/error.hpp>
#include <micro/log.hpp>
#include <micro/plugin.hpp>
#include <micro/random.hpp>
#include <micro/text.hpp>
#include <micro/trace.hpp>

namespace micro::mcp {

using json = nlohmann::json;

namespace {

constexpr const char* component = "mcp";
constexpr const char* server_name = "micro-mcp";
constexpr const char* server_version = "0.1.0";
// [2026-07-28] the reserved _meta keys every request carries.
constexpr const char* meta_protocol_version = "io.modelcontextprotocol/protocolVersion";
constexpr const char* meta_client_capabilities = "io.modelcontextprotocol/clientCapabilities";
// Ours: a tool call's budget, in the _meta key form the spec reserves for implementations.
constexpr const char* meta_timeout = "micro/timeoutMs";

// JSON-RPC 2.0's codes [both], and the two MCP adds [2026-07-28].
constexpr int parse_error = -32700;
constexpr int invalid_request = -32600;
constexpr int method_not_found = -32601;
constexpr int invalid_params = -32602;
constexpr int internal_error_code = -32603;
constexpr int header_mismatch = -32020;
constexpr int unsupported_protocol_version = -32022;

json rpc_error(const json& id, int code, std::string message, json data = nullptr) {
  json error = {{"code", code}, {"message", std::move(message)}};
  if (!data.is_null()) error["data"] = std::move(data);
  return {{"jsonrpc", "2.0"}, {"id", id}, {"error", std::move(error)}};
}

json rpc_result(const json& id, json result) {
  return {{"jsonrpc", "2.0"}, {"id", id}, {"result", std::move(result)}};
}

std::string strip_nlohmann_prefix(std::string_view what) {
  if (!what.empty() && what.front() == '[') {
    std::size_t close = what.find("] ");
    if (close != std::string_view::npos) what.remove_prefix(close + 2);
  }
  return std::string(what);
}

std::string type_name_of(const json& value) {
  switch (value.type()) {
    case json::value_t::null:
      return "null";
    case json::value_t::boolean:
      return "boolean";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
      return "integer";
    case json::value_t::number_float:
      return "number";
    case json::value_t::string:
      return "string";
    case json::value_t::array:
      return "array";
    case json::value_t::object:
      return "object";
    default:
      return "value";
  }
}

bool fits_type(const std::string& expected, const json& value) {
  std::string actual = type_name_of(value);
  if (expected == actual) return true;
  if (expected == "number") return actual == "integer";
  // JSON Schema: an integer is any number with a zero fractional part (2.0 too).
  if (expected == "integer" && value.is_number_float()) {
    double number = value.get<double>();
    return number == static_cast<double>(static_cast<long long>(number));
  }
  return false;
}

// Glob with '*' (any run of characters) only.
bool glob_match(std::string_view pattern, std::string_view text) {
  std::size_t p = 0, t = 0, star = std::string_view::npos, mark = 0;
  while (t < text.size()) {
    if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      mark = t;
    } else if (p < pattern.size() && pattern[p] == text[t]) {
      ++p;
      ++t;
    } else if (star != std::string_view::npos) {
      p = star + 1;
      t = ++mark;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

std::uint64_t fnv1a(std::string_view text) {
  std::uint64_t hash = 1469598103934665603ULL;
  for (char c : text) {
    hash ^= static_cast<unsigned char>(c);
    hash *= 1099511628211ULL;
  }
  return hash;
}

bool is_loopback_host(std::string_view host) {
  return host == "localhost" || host == "::1" || host == "[::1]" || host.starts_with("127.");
}

// "scheme://host[:port]" → host; "" when the origin has no such form ("null").
std::string origin_host(std::string_view origin) {
  std::size_t scheme = origin.find("://");
  if (scheme == std::string_view::npos) return {};
  std::string_view rest = origin.substr(scheme + 3);
  rest = rest.substr(0, rest.find('/'));
  if (!rest.empty() && rest.front() == '[') return std::string(rest.substr(0, rest.find(']') + 1));
  return std::string(rest.substr(0, rest.find(':')));
}

// Whether `accept` (an Accept field) lists `type`, or a wildcard covering it.
bool accepts(std::string_view accept, std::string_view type) {
  if (accept.empty()) return true;
  std::string_view major = type.substr(0, type.find('/'));
  while (!accept.empty()) {
    std::size_t comma = accept.find(',');
    std::string_view item = accept.substr(0, comma);
    item = item.substr(0, item.find(';'));
    while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
    while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
    if (iequals(item, type) || item == "*/*" ||
        (item.size() == major.size() + 2 && iequals(item.substr(0, major.size()), major) &&
         item.substr(major.size()) == "/*"))
      return true;
    if (comma == std::string_view::npos) break;
    accept.remove_prefix(comma + 1);
  }
  return false;
}

// Equality of two tokens in constant time for equal lengths (a bearer token).
bool same_secret(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char difference = 0;
  for (std::size_t i = 0; i < a.size(); ++i) difference |= static_cast<unsigned char>(a[i] ^ b[i]);
  return difference == 0;
}

}  // namespace

// ---- Schemas -----------------------------------------------------------------------------

json json_schema_of(const Value& shape, bool strict) {
  json schema = json::object();
  const std::string& type = shape.type;
  if (type == "object") {
    schema["type"] = "object";
    if (shape.values.size() == 1 && shape.values.front().name == "*") {
      schema["additionalProperties"] = json_schema_of(shape.values.front(), strict);
    } else if (!shape.values.empty()) {
      json properties = json::object();
      json required = json::array();
      for (const auto& field : shape.values) {
        properties[field.name] = json_schema_of(field, strict);
        required.push_back(field.name);
      }
      schema["properties"] = std::move(properties);
      // nlohmann's from_json (NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE) needs every key: they are
      // all required on input. Output schemas leave it open, so an added field fits.
      if (strict) {
        schema["required"] = std::move(required);
        schema["additionalProperties"] = false;
      }
    }
  } else if (type == "array") {
    schema["type"] = "array";
    if (!shape.values.empty()) schema["items"] = json_schema_of(shape.values.front(), strict);
  } else if (type == "string" || type == "integer" || type == "number" || type == "boolean") {
    schema["type"] = type;
  }
  // "" (any JSON value): the empty schema, which every value fits.
  return schema;
}

std::string validate_against(const json& schema, const json& value, const std::string& where) {
  if (auto type = schema.find("type"); type != schema.end() && type->is_string()) {
    std::string expected = type->get<std::string>();
    if (!fits_type(expected, value)) {
      std::string shown = value.dump();
      if (shown.size() > 40) shown = shown.substr(0, 37) + "...";
      return where + ": expected " + expected + ", got " + type_name_of(value) + " " + shown;
    }
  }
  if (value.is_object()) {
    auto properties = schema.find("properties");
    if (auto required = schema.find("required"); required != schema.end()) {
      for (const auto& name : *required)
        if (!value.contains(name.get<std::string>()))
          return where + ": missing required field '" + name.get<std::string>() + "'";
    }
    auto additional = schema.find("additionalProperties");
    for (const auto& [key, member] : value.items()) {
      if (properties != schema.end() && properties->contains(key)) {
        std::string problem = validate_against((*properties)[key], member, where + "." + key);
        if (!problem.empty()) return problem;
      } else if (additional != schema.end() && additional->is_boolean() &&
                 !additional->get<bool>()) {
        std::vector<std::string> names;
        if (properties != schema.end())
          for (const auto& [name, ignored] : properties->items()) names.push_back(name);
        std::string list;
        for (const auto& name : names) list += (list.empty() ? "" : ", ") + name;
        return where + ": unknown field '" + key + "'" + did_you_mean(key, names) +
               "; expected fields: " + list;
      } else if (additional != schema.end() && additional->is_object()) {
        std::string problem = validate_against(*additional, member, where + "." + key);
        if (!problem.empty()) return problem;
      }
    }
  } else if (value.is_array()) {
    if (auto items = schema.find("items"); items != schema.end()) {
      for (std::size_t i = 0; i < value.size(); ++i) {
        std::string problem =
            validate_against(*items, value[i], where + "[" + std::to_string(i) + "]");
        if (!problem.empty()) return problem;
      }
    }
  }
  return {};
}

std::string tool_name_of(std::string_view service, std::string_view endpoint) {
  // [2025-11-25] Tool names SHOULD be 1-128 characters of A-Z, a-z, 0-9, '_', '-', '.'.
  constexpr std::size_t longest = 128;
  std::string whole;
  whole.reserve(service.size() + endpoint.size() + 1);
  whole.append(service).append(".").append(endpoint);
  std::string name = whole;
  for (char& c : name) {
    bool allowed = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                   c == '_' || c == '-' || c == '.';
    if (!allowed) c = '_';
  }
  if (name.size() > longest) {
    char hash[17];
    std::snprintf(hash, sizeof hash, "%016llx", static_cast<unsigned long long>(fnv1a(whole)));
    name = name.substr(0, longest - 17) + "-" + hash;
  }
  return name;
}

bool matches_filter(std::string_view pattern, std::string_view service, std::string_view tool) {
  return pattern == service || glob_match(pattern, tool);
}

std::vector<ToolEntry> build_tools(const std::vector<Service>& services,
                                   const McpOptions& options) {
  std::vector<const Service*> ordered;
  for (const auto& service : services) ordered.push_back(&service);
  // By name, then version: for an endpoint in several versions the last (highest) one wins.
  std::sort(ordered.begin(), ordered.end(), [](const Service* a, const Service* b) {
    return a->name != b->name ? a->name < b->name : a->version < b->version;
  });
  std::map<std::string, ToolEntry> tools;
  for (const Service* service : ordered) {
    for (const auto& endpoint : service->endpoints) {
      std::string name = tool_name_of(service->name, endpoint.name);
      bool allowed = options.allow.empty();
      for (const auto& pattern : options.allow)
        allowed = allowed || matches_filter(pattern, service->name, name);
      for (const auto& pattern : options.deny)
        allowed = allowed && !matches_filter(pattern, service->name, name);
      if (!allowed) continue;
      const Value& request = endpoint.request;
      // [2025-11-25] inputSchema MUST be an object schema: endpoints taking a bare string or
      // number cannot be tools.
      if (!request.type.empty() && request.type != "object") {
        log::debug(component, "endpoint " + service->name + " " + endpoint.name + " takes a " +
                                  request.type + ", not an object: no tool");
        continue;
      }
      if (auto existing = tools.find(name);
          existing != tools.end() && (existing->second.service != service->name ||
                                      existing->second.endpoint != endpoint.name)) {
        log::warn(component, "tool name " + name + " of " + service->name + " " + endpoint.name +
                                 " is taken by " + existing->second.service + " " +
                                 existing->second.endpoint + "; the second is not offered");
        continue;
      }
      ToolEntry entry;
      entry.name = name;
      entry.service = service->name;
      entry.endpoint = endpoint.name;
      entry.input_schema = json_schema_of(request, true);
      entry.input_schema["type"] = "object";
      json input = entry.input_schema;
      // [2025-11-25] JSON Schema 2020-12 is the default dialect; said explicitly anyway.
      input["$schema"] = "https://json-schema.org/draft/2020-12/schema";
      std::string description;
      if (auto found = endpoint.metadata.find("description"); found != endpoint.metadata.end())
        description = found->second;
      if (description.empty())
        description = "Calls endpoint " + endpoint.name + " of the micro service " + service->name +
                      (service->version.empty() ? "" : " " + service->version) + ".";
      entry.definition = {{"name", name},
                          {"title", endpoint.name + " (" + service->name + ")"},
                          {"description", description},
                          {"inputSchema", std::move(input)}};
      if (auto stream = endpoint.metadata.find("stream");
          stream != endpoint.metadata.end() && stream->second == "true") {
        // A stream endpoint (Server::handle_stream marks them): the call sends the arguments
        // as its one message and gathers what comes back.
        entry.streaming = true;
        entry.definition["description"] =
            description +
            " Streams: each message it sends is reported as notifications/progress "
            "(with a progressToken), and the result holds them all in structuredContent.messages.";
        json output = {{"$schema", "https://json-schema.org/draft/2020-12/schema"},
                       {"type", "object"},
                       {"properties", {{"messages", {{"type", "array"}}}}},
                       {"required", json::array({"messages"})}};
        entry.definition["outputSchema"] = std::move(output);
        entry.structured = true;
      } else if (endpoint.response.type == "object") {
        json output = json_schema_of(endpoint.response, false);
        output["$schema"] = "https://json-schema.org/draft/2020-12/schema";
        entry.definition["outputSchema"] = std::move(output);
        entry.structured = true;
      }
      tools[name] = std::move(entry);
    }
  }
  std::vector<ToolEntry> list;
  list.reserve(tools.size());
  for (auto& [name, entry] : tools) list.push_back(std::move(entry));
  return list;
}

// ---- Sessions and the tool catalogue -----------------------------------------------------

namespace {

// [2025-11-25] logging levels (RFC 5424 order).
constexpr std::string_view log_levels[] = {"debug", "info",     "notice", "warning",
                                           "error", "critical", "alert",  "emergency"};

int log_level_index(std::string_view level) {
  for (std::size_t i = 0; i < std::size(log_levels); ++i)
    if (log_levels[i] == level) return static_cast<int>(i);
  return -1;
}

// One client of 2025-11-25: the stdio peer, or an Mcp-Session-Id on HTTP.
struct Session {
  std::string id;
  std::mutex mutex;
  bool initialize_answered = false;
  bool initialized = false;  // notifications/initialized received
  int log_level = -1;        // none asked: no notifications/message
  std::vector<json> queued;  // HTTP: notifications for the next answer that can carry them
  // Writes a message at once: stdio, or the HTTP session's GET stream while one is open.
  std::function<void(const json&)> push;
  std::chrono::steady_clock::time_point last_used = std::chrono::steady_clock::now();
  std::unordered_map<std::string, std::shared_ptr<CancellationState>> calls;  // by id dump
  std::unordered_set<std::string> cancelled_by_client;  // ids of notifications/cancelled
  // HTTP: the session's GET stream, while one is open (then `push` writes to it).
  http::ResponseWriterPtr push_stream;
};
using SessionPtr = std::shared_ptr<Session>;

struct Catalog {
  std::vector<ToolEntry> tools;         // sorted by name
  std::vector<std::string> serialised;  // each tool's definition as JSON text
  std::unordered_map<std::string, std::size_t> index;
  std::string signature;  // the listing's JSON: a change of it is a list change
};
using CatalogPtr = std::shared_ptr<const Catalog>;

struct Bucket {
  double tokens = 0;
  std::chrono::steady_clock::time_point refilled;
};

// An answer on its way out, serialised once where it is made (tools/list joins definitions
// serialised when the catalogue was built).
struct Answer {
  std::string text;
  bool error = false;
};

// Takes the answer to one request: a JSON-RPC message, or one serialised already.
class Reply {
 public:
  template <class Function>
  requires std::is_invocable_v<Function&, Answer> Reply(Function function)
      : function_(std::move(function)) {}
  void operator()(const json& message) const {
    function_(Answer{message.dump(), message.contains("error")});
  }
  void operator()(Answer answer) const { function_(std::move(answer)); }

 private:
  std::function<void(Answer)> function_;
};
// Told the cancellation of a tool call as it starts (HTTP: an abandoned exchange cancels it).
using CallStarted = std::function<void(const std::shared_ptr<CancellationState>&)>;
// Takes a request's notifications (notifications/progress) as they happen, before its answer:
// the request's SSE stream on HTTP, lines on stdio. Empty: nowhere to send them.
using Progress = std::function<void(const json&)>;

// One SSE event holding a JSON-RPC message.
std::string sse_event(std::string_view data) {
  std::string event = "event: message\ndata: ";
  event += data;
  event += "\n\n";
  return event;
}

// Writes `text`; when the client is slow and the writer's buffer full, once it drains.
void write_when_room(const http::ResponseWriterPtr& writer, std::string text, bool finish) {
  if (writer->write(text)) {
    if (finish) writer->finish();
    return;
  }
  writer->on_drained([writer, text = std::move(text), finish] {
    writer->write(text);
    if (finish) writer->finish();
  });
}

}  // namespace

struct Gateway::State : std::enable_shared_from_this<Gateway::State> {
  Microservice& service;
  McpOptions options;
  std::chrono::milliseconds timeout;

  std::mutex catalog_mutex;
  CatalogPtr catalog = std::make_shared<Catalog>();

  static constexpr std::chrono::minutes session_idle{30};
  std::mutex sessions_mutex;
  std::unordered_map<std::string, SessionPtr> sessions;  // HTTP
  SessionPtr stdio_session;

  std::mutex buckets_mutex;
  std::unordered_map<std::string, Bucket> buckets;

  // The refresher: rebuilds the catalogue on a watch event or every refresh_interval.
  std::thread refresher;
  std::mutex refresh_mutex;
  std::condition_variable refresh_wake;
  bool refresh_due = false;
  bool refresher_stop = false;
  std::unique_ptr<Watch> watch;

  std::unique_ptr<http::Server> server;
  std::string bound_address;

  std::atomic<std::uint64_t> messages{0}, tool_calls{0}, tool_errors{0}, list_changes{0};
  std::atomic<std::uint64_t> in_flight{0};
  std::mutex drain_mutex;
  std::condition_variable drained;

  State(Microservice& service, McpOptions options)
      : service(service),
        options(std::move(options)),
        timeout(this->options.timeout.count() > 0 ? this->options.timeout
                                                  : service.config().client_request_timeout) {}

  CatalogPtr current_catalog() {
    std::lock_guard lock(catalog_mutex);
    return catalog;
  }

  // ---- The catalogue ---------------------------------------------------------------------

  // Lists the registry (blocking: the refresher thread only) and swaps the catalogue in;
  // true when the tool list changed.
  bool rebuild() {
    auto backend = service.registry().backend();
    std::vector<Service> services;
    std::vector<std::string> names;
    for (const auto& listed : backend->list_services())
      if (std::find(names.begin(), names.end(), listed.name) == names.end())
        names.push_back(listed.name);
    for (const auto& name : names) {
      try {
        for (auto& version : backend->get_service(name)) services.push_back(std::move(version));
      } catch (const Exception& e) {
        if (e.error().code != 404) throw;  // gone between list and get: no tools
      }
    }
    auto next = std::make_shared<Catalog>();
    next->tools = build_tools(services, options);
    json listing = json::array();
    for (std::size_t i = 0; i < next->tools.size(); ++i) {
      next->index[next->tools[i].name] = i;
      listing.push_back(next->tools[i].definition);
      next->serialised.push_back(next->tools[i].definition.dump());
    }
    next->signature = listing.dump();
    std::lock_guard lock(catalog_mutex);
    bool changed = next->signature != catalog->signature;
    catalog = std::move(next);
    return changed;
  }

  void run_refresher() {
    std::unique_lock lock(refresh_mutex);
    while (!refresher_stop) {
      refresh_wake.wait_for(lock, options.refresh_interval,
                            [&] { return refresh_due || refresher_stop; });
      if (refresher_stop) break;
      refresh_due = false;
      lock.unlock();
      expire_sessions();
      // A burst of registrations (a service's nodes starting) is one change, not many.
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      bool changed = false;
      try {
        changed = rebuild();
      } catch (const std::exception& e) {
        log::warn(component, std::string("listing the registry failed: ") + e.what());
      }
      if (changed) announce_list_change();
      lock.lock();
    }
  }

  // HTTP sessions unused for session_idle end, as if the client had sent DELETE: a client
  // that went away without it does not hold its session for ever.
  void expire_sessions() {
    auto cutoff = std::chrono::steady_clock::now() - session_idle;
    std::lock_guard lock(sessions_mutex);
    std::erase_if(sessions, [&](const auto& entry) { return entry.second->last_used < cutoff; });
  }

  // [2025-11-25] notifications/tools/list_changed to every initialized session: at once on
  // stdio and on an HTTP session's GET stream, else with its next answer.
  void announce_list_change() {
    list_changes.fetch_add(1, std::memory_order_relaxed);
    json notification = {{"jsonrpc", "2.0"}, {"method", "notifications/tools/list_changed"}};
    std::vector<SessionPtr> targets;
    {
      std::lock_guard lock(sessions_mutex);
      for (const auto& [id, session] : sessions) targets.push_back(session);
      if (stdio_session) targets.push_back(stdio_session);
    }
    for (const auto& session : targets) {
      {
        std::lock_guard lock(session->mutex);
        if (!session->initialized) continue;
      }
      notify(*session, notification);
      log_to(*session, "info",
             {{"event", "tools changed"}, {"tools", current_catalog()->tools.size()}});
    }
  }

  static void notify(Session& session, const json& message) {
    std::function<void(const json&)> push;
    {
      std::lock_guard lock(session.mutex);
      if (!session.push) {
        // At most this many wait for an answer to carry them; a list change is idempotent.
        if (session.queued.size() < 64) session.queued.push_back(message);
        return;
      }
      push = session.push;
    }
    push(message);
  }

  // [2025-11-25] notifications/message at or above the level the client set.
  static void log_to(Session& session, std::string_view level, json data) {
    {
      std::lock_guard lock(session.mutex);
      if (session.log_level < 0 || log_level_index(level) < session.log_level) return;
    }
    notify(session, {{"jsonrpc", "2.0"},
                     {"method", "notifications/message"},
                     {"params", {{"level", level}, {"logger", "micro.mcp"}, {"data", data}}}});
  }

  // ---- Dispatch --------------------------------------------------------------------------

  // Handles one message. `session`: the 2025-11-25 session it belongs to (null for a
  // 2026-07-28 request). `reply` is called once for a request, never for a notification.
  // Returns false when the message is a notification or a response (nothing to answer).
  bool dispatch(const json& message, const SessionPtr& session, const Reply& reply,
                const CallStarted& started = {}, const Progress& progress = {}) {
    messages.fetch_add(1, std::memory_order_relaxed);
    if (!message.is_object()) {
      // [2025-11-25] batching was removed in 2025-06-18.
      reply(rpc_error(nullptr, invalid_request,
                      message.is_array() ? "JSON-RPC batches are not supported (removed from "
                                           "MCP in 2025-06-18); send one message at a time"
                                         : "a JSON-RPC message must be an object"));
      return true;
    }
    json id = message.contains("id") ? message["id"] : json();
    bool has_id = message.contains("id");
    if (has_id && !id.is_string() && !id.is_number_integer() && !id.is_number_unsigned()) {
      // [both] the id MUST be a string or an integer, and not null.
      reply(rpc_error(nullptr, invalid_request,
                      "id must be a string or an integer, not " + type_name_of(id)));
      return true;
    }
    auto version = message.find("jsonrpc");
    if (version == message.end() || *version != "2.0") {
      std::string got = version == message.end() ? "nothing" : version->dump();
      reply(
          rpc_error(has_id ? id : json(), invalid_request, "jsonrpc must be \"2.0\", got " + got));
      return true;
    }
    auto method_field = message.find("method");
    if (method_field == message.end()) {
      // A response: this server sends no requests, so there is nothing it could answer.
      if (message.contains("result") || message.contains("error")) return false;
      reply(
          rpc_error(has_id ? id : json(), invalid_request, "a request needs a method (a string)"));
      return true;
    }
    if (!method_field->is_string()) {
      reply(rpc_error(has_id ? id : json(), invalid_request,
                      "method must be a string, not " + type_name_of(*method_field)));
      return true;
    }
    const std::string method = method_field->get<std::string>();
    static const json no_params = json::object();
    auto params_field = message.find("params");
    const json& params = params_field != message.end() ? *params_field : no_params;
    if (!params.is_object()) {
      if (has_id)
        reply(
            rpc_error(id, invalid_params, "params must be an object, not " + type_name_of(params)));
      return has_id;
    }
    const json* meta = nullptr;
    if (auto found = params.find("_meta"); found != params.end() && found->is_object())
      meta = &*found;
    bool stateless = meta != nullptr && meta->contains(meta_protocol_version);
    if (!has_id) {
      handle_notification(method, params, session, stateless);
      return false;
    }
    if (stateless)
      handle_stateless(method, id, params, *meta, reply, started, progress);
    else
      handle_stateful(method, id, params, session, reply, started, progress);
    return true;
  }

  void handle_notification(const std::string& method, const json& params, const SessionPtr& session,
                           bool stateless) {
    if (method == "notifications/initialized" && session && !stateless) {
      std::lock_guard lock(session->mutex);
      session->initialized = true;
    } else if (method == "notifications/cancelled" && session) {
      // [both] cancels the request named; unknown or finished ids are ignored.
      if (auto request = params.find("requestId"); request != params.end()) {
        std::shared_ptr<CancellationState> cancellation;
        {
          std::lock_guard lock(session->mutex);
          if (auto call = session->calls.find(request->dump()); call != session->calls.end()) {
            cancellation = call->second;
            session->cancelled_by_client.insert(request->dump());
          }
        }
        if (cancellation) cancellation->cancel();
      }
    }
    // [both] other notifications need nothing, and a notification is never answered.
  }

  // [2026-07-28] a request that says its version in _meta: no session, no initialize.
  void handle_stateless(const std::string& method, const json& id, const json& params,
                        const json& meta, const Reply& reply, const CallStarted& started,
                        const Progress& progress) {
    const json& version = meta[meta_protocol_version];
    if (!version.is_string() || version != stateless_revision) {
      reply(rpc_error(
          id, unsupported_protocol_version,
          "protocol version " + version.dump() + " is not supported; this server speaks " +
              stateless_revision + " per request (and " + stateful_revision +
              " through initialize)",
          {{"requested", version.is_string() ? version.get<std::string>() : version.dump()},
           {"supported", json::array({stateless_revision})}}));
      return;
    }
    auto capabilities = meta.find(meta_client_capabilities);
    if (capabilities == meta.end() || !capabilities->is_object()) {
      reply(rpc_error(id, invalid_params,
                      std::string("params._meta[\"") + meta_client_capabilities +
                          "\"] must be an object; every " + stateless_revision +
                          " request carries the client's capabilities"));
      return;
    }
    if (method == "server/discover") {
      reply(rpc_result(id, discover_result()));
    } else if (method == "tools/list") {
      list_tools(id, params, true, reply);
    } else if (method == "tools/call") {
      call_tool(id, params, true, nullptr, reply, started, progress);
    } else {
      static const std::vector<std::string> offered = {"server/discover", "tools/list",
                                                       "tools/call"};
      std::string why = method == "initialize" || method == "ping" || method == "logging/setLevel"
                            ? " (" + method + " is not part of " + stateless_revision +
                                  "; without _meta it is served as " + stateful_revision + ")"
                            : did_you_mean(method, offered);
      reply(rpc_error(id, method_not_found,
                      "method '" + method + "' not found" + why +
                          "; offered: server/discover, tools/list, tools/call"));
    }
  }

  json discover_result() const {
    // [2026-07-28] server/discover: versions, capabilities, identity, caching hints.
    return {{"resultType", "complete"},
            {"supportedVersions", json::array({stateless_revision})},
            // No listChanged: a stateless client would hear of changes through
            // subscriptions/listen, which is not offered (docs/design.md); ttlMs bounds staleness.
            {"capabilities", {{"tools", json::object()}}},
            {"serverInfo", server_info()},
            {"instructions", instructions()},
            {"ttlMs", options.list_ttl.count()},
            {"cacheScope", cache_scope()}};
  }

  // Results are the same for every caller unless a token says callers differ.
  std::string cache_scope() const { return options.token.empty() ? "public" : "private"; }

  static json server_info() {
    return {{"name", server_name}, {"title", "micro-cpp MCP gateway"}, {"version", server_version}};
  }

  static std::string instructions() {
    return "Each tool calls one endpoint of a micro service found in the registry; tool names "
           "are <service>.<Endpoint>. A failed call comes back as a result with isError set "
           "and the service's error message.";
  }

  // [2025-11-25] the stateful lifecycle: initialize first, then anything.
  void handle_stateful(const std::string& method, const json& id, const json& params,
                       const SessionPtr& session, const Reply& reply, const CallStarted& started,
                       const Progress& progress) {
    if (!session) {
      reply(rpc_error(id, invalid_request, "no session: send initialize first"));
      return;
    }
    if (method == "initialize") {
      initialize(id, params, *session, reply);
      return;
    }
    if (method == "ping") {  // [2025-11-25] allowed at any time
      reply(rpc_result(id, json::object()));
      return;
    }
    static const std::vector<std::string> offered = {"initialize", "ping", "tools/list",
                                                     "tools/call", "logging/setLevel"};
    if (std::find(offered.begin(), offered.end(), method) == offered.end()) {
      // Unknown whatever the state: a client probing with server/discover (the 2026-07-28
      // stdio fallback) learns it is not there and goes on with initialize.
      std::string why = method == "server/discover"
                            ? std::string(" without _meta[\"") + meta_protocol_version +
                                  "\"] (it is part of " + stateless_revision + ")"
                            : did_you_mean(method, offered);
      reply(rpc_error(id, method_not_found,
                      "method '" + method + "' not found" + why +
                          "; offered: initialize, ping, tools/list, tools/call, "
                          "logging/setLevel"));
      return;
    }
    {
      std::lock_guard lock(session->mutex);
      if (!session->initialize_answered) {
        reply(rpc_error(id, invalid_request,
                        "method '" + method + "' before initialize; the " + stateful_revision +
                            " lifecycle starts with initialize (or give _meta[\"" +
                            meta_protocol_version + "\"] for " + stateless_revision + ")"));
        return;
      }
    }
    if (method == "tools/list") {
      list_tools(id, params, false, reply);
    } else if (method == "tools/call") {
      call_tool(id, params, false, session, reply, started, progress);
    } else {  // logging/setLevel
      auto level = params.find("level");
      int index = level != params.end() && level->is_string()
                      ? log_level_index(level->get<std::string>())
                      : -1;
      if (index < 0) {
        reply(rpc_error(id, invalid_params,
                        "params.level must be one of debug, info, notice, warning, error, "
                        "critical, alert, emergency"));
        return;
      }
      {
        std::lock_guard lock(session->mutex);
        session->log_level = index;
      }
      reply(rpc_result(id, json::object()));
    }
  }

  void initialize(const json& id, const json& params, Session& session, const Reply& reply) {
    auto version = params.find("protocolVersion");
    if (version == params.end() || !version->is_string()) {
      reply(rpc_error(id, invalid_params, "initialize needs params.protocolVersion (a string)"));
      return;
    }
    {
      std::lock_guard lock(session.mutex);
      if (session.initialize_answered) {
        reply(rpc_error(id, invalid_request, "this session is initialized already"));
        return;
      }
      session.initialize_answered = true;
    }
    // [2025-11-25] the server answers with the version asked for when it supports it, else
    // with one it does: only 2025-11-25 here.
    reply(rpc_result(
        id, {{"protocolVersion", stateful_revision},
             {"capabilities", {{"tools", {{"listChanged", true}}}, {"logging", json::object()}}},
             {"serverInfo", server_info()},
             {"instructions", instructions()}}));
  }

  void list_tools(const json& id, const json& params, bool stateless, const Reply& reply) {
    CatalogPtr snapshot = current_catalog();
    std::size_t start = 0;
    if (auto cursor = params.find("cursor"); cursor != params.end() && !cursor->is_null()) {
      // [both] the cursor is opaque: here the base64url of the last name of the page before.
      std::optional<std::string> after = cursor->is_string()
                                             ? base64::try_decode_url(cursor->get<std::string>())
                                             : std::optional<std::string>();
      if (!after || after->empty()) {
        reply(rpc_error(id, invalid_params,
                        "invalid cursor " + cursor->dump() +
                            "; pass the nextCursor of the previous tools/list answer"));
        return;
      }
      start = static_cast<std::size_t>(
          std::upper_bound(
              snapshot->tools.begin(), snapshot->tools.end(), *after,
              [](const std::string& name, const ToolEntry& tool) { return name < tool.name; }) -
          snapshot->tools.begin());
    }
    std::size_t end =
        std::min(snapshot->tools.size(), start + std::max<std::size_t>(1, options.page_size));
    // Written out of the definitions serialised once per catalogue: no copy of each per list.
    std::string text = R"({"jsonrpc":"2.0","id":)" + id.dump() + R"(,"result":{"tools":[)";
    std::size_t size = text.size() + 128;
    for (std::size_t i = start; i < end; ++i) size += snapshot->serialised[i].size() + 1;
    text.reserve(size);
    for (std::size_t i = start; i < end; ++i) {
      if (i > start) text += ',';
      text += snapshot->serialised[i];
    }
    text += ']';
    if (end < snapshot->tools.size())
      text += R"(,"nextCursor":)" + json(base64::encode_url(snapshot->tools[end - 1].name)).dump();
    if (stateless) {
      // [2026-07-28] resultType on every result; caching hints on list results.
      text += R"(,"resultType":"complete","ttlMs":)" + std::to_string(options.list_ttl.count()) +
              R"(,"cacheScope":)" + json(cache_scope()).dump();
    }
    text += "}}";
    reply(Answer{std::move(text), false});
  }

  // Whether a call of `tool` may go now (token bucket, rate_limit per second, as big a burst).
  bool take_token(const std::string& tool) {
    if (options.rate_limit <= 0) return true;
    auto now = std::chrono::steady_clock::now();
    std::lock_guard lock(buckets_mutex);
    auto [bucket, fresh] = buckets.try_emplace(tool);
    if (fresh) {
      bucket->second.tokens = std::max(1.0, options.rate_limit);
      bucket->second.refilled = now;
    }
    double elapsed = std::chrono::duration<double>(now - bucket->second.refilled).count();
    bucket->second.tokens = std::min(std::max(1.0, options.rate_limit),
                                     bucket->second.tokens + elapsed * options.rate_limit);
    bucket->second.refilled = now;
    if (bucket->second.tokens < 1.0) return false;
    bucket->second.tokens -= 1.0;
    return true;
  }

  static json tool_error(std::string text, bool stateless) {
    json result = {{"content", json::array({{{"type", "text"}, {"text", std::move(text)}}})},
                   {"isError", true}};
    if (stateless) result["resultType"] = "complete";
    return result;
  }

  void call_tool(const json& id, const json& params, bool stateless, const SessionPtr& session,
                 const Reply& reply, const CallStarted& started, const Progress& progress) {
    auto name_field = params.find("name");
    if (name_field == params.end() || !name_field->is_string()) {
      reply(rpc_error(id, invalid_params, "tools/call needs params.name (a string)"));
      return;
    }
    std::string name = name_field->get<std::string>();
    CatalogPtr snapshot = current_catalog();
    auto found = snapshot->index.find(name);
    if (found == snapshot->index.end()) {
      // [2025-11-25] an unknown tool is a protocol error (-32602).
      std::vector<std::string> names;
      for (const auto& tool : snapshot->tools) names.push_back(tool.name);
      reply(rpc_error(id, invalid_params,
                      "unknown tool '" + name + "'" + did_you_mean(name, names) +
                          "; tools/list lists the " + std::to_string(names.size()) + " tools"));
      return;
    }
    const ToolEntry& tool = snapshot->tools[found->second];
    static const json no_arguments = json::object();
    auto arguments_field = params.find("arguments");
    const json& arguments = arguments_field == params.end() || arguments_field->is_null()
                                ? no_arguments
                                : *arguments_field;
    if (!arguments.is_object()) {
      reply(rpc_error(id, invalid_params,
                      "params.arguments must be an object, not " + type_name_of(arguments)));
      return;
    }
    // [2025-11-25] input validation failures are tool execution errors (isError), so a model
    // can read them and correct its arguments.
    if (std::string problem = validate_against(tool.input_schema, arguments, "arguments");
        !problem.empty()) {
      tool_errors.fetch_add(1, std::memory_order_relaxed);
      reply(rpc_result(
          id, tool_error("invalid arguments for " + name + ": " + problem + " (no call was made)",
                         stateless)));
      return;
    }
    if (!take_token(name)) {
      tool_errors.fetch_add(1, std::memory_order_relaxed);
      reply(rpc_result(id, tool_error("rate limit of " + std::to_string(options.rate_limit) +
                                          " calls per second for " + name +
                                          " exceeded; retry shortly (no call was made)",
                                      stateless)));
      return;
    }

    const json* meta = nullptr;
    if (auto m = params.find("_meta"); m != params.end() && m->is_object()) meta = &*m;
    std::chrono::milliseconds call_timeout = timeout;
    if (meta) {
      if (auto asked = meta->find(meta_timeout); asked != meta->end()) {
        if (!asked->is_number() || asked->get<double>() <= 0) {
          reply(rpc_error(id, invalid_params,
                          std::string("params._meta[\"") + meta_timeout +
                              "\"] must be a positive number of milliseconds"));
          return;
        }
        call_timeout =
            std::min(options.max_timeout, std::chrono::milliseconds(asked->get<std::int64_t>()));
        if (call_timeout.count() <= 0) call_timeout = std::chrono::milliseconds(1);
      }
    }

    // [2025-11-25] progress notifications only for a request that gave a progressToken.
    json progress_token;
    if (meta) {
      if (auto token = meta->find("progressToken");
          token != meta->end() && (token->is_string() || token->is_number_integer()))
        progress_token = *token;
    }

    Request request;
    request.service = tool.service;
    request.endpoint = tool.endpoint;
    request.content_type = "application/json";
    request.body = arguments.dump();
    request.context.set_deadline(std::chrono::steady_clock::now() + call_timeout);
    // W3C trace context from _meta (the OpenTelemetry MCP convention): the call continues it.
    std::shared_ptr<trace::Span> span;
    if (meta) {
      auto traceparent = meta->find("traceparent");
      if (traceparent != meta->end() && traceparent->is_string()) {
        auto tracestate = meta->find("tracestate");
        auto parent = trace::extract(traceparent->get<std::string>(),
                                     tracestate != meta->end() && tracestate->is_string()
                                         ? tracestate->get<std::string>()
                                         : std::string());
        if (parent) {
          trace::StartOptions start;
          start.kind = trace::SpanKind::server;
          start.parent = &*parent;
          start.attributes = {{"mcp.method.name", std::string("tools/call")},
                              {"gen_ai.tool.name", name},
                              {"rpc.service", tool.service},
                              {"rpc.method", tool.endpoint}};
          span = trace::start_span("tools/call " + name, request.context, start);
          request.context.set_span(span);
          // Tracing off here: the service still continues the caller's trace.
          if (!span->context().valid()) trace::inject(*parent, request.context.metadata());
        }
      }
    }
    std::string call_key = id.dump();
    if (session) {
      std::lock_guard lock(session->mutex);
      session->calls[call_key] = request.context.cancellation();
    }
    if (started) started(request.context.cancellation());
    CallOptions call_options;
    call_options.timeout = call_timeout;
    tool_calls.fetch_add(1, std::memory_order_relaxed);
    in_flight.fetch_add(1, std::memory_order_acq_rel);
    auto self = shared_from_this();
    if (tool.streaming) {
      auto call = std::make_shared<StreamToolCall>();
      call->id = id;
      call->name = name;
      call->stateless = stateless;
      call->session = session;
      call->call_key = call_key;
      call->span = span;
      call->reply = reply;
      call->progress = progress_token.is_null() ? Progress() : progress;
      call->progress_token = std::move(progress_token);
      std::string arguments_text = std::move(request.body);
      service.client().async_open_stream(
          std::move(request), call_options,
          [self, call, arguments_text = std::move(arguments_text)](
              MessageStreamPtr stream, std::optional<Error> error) mutable {
            if (!stream) return self->end_stream_call(*call, Response::failure(std::move(*error)));
            call->stream = stream;
            // The arguments are the one request message; then this side is done.
            stream->async_write(std::move(arguments_text),
                                [self, call](std::optional<Error> failed) {
                                  if (failed) {
                                    call->stream->finish(Response::failure(*failed));
                                    return self->end_stream_call(*call, call->stream->status());
                                  }
                                  call->stream->close_send();
                                  self->read_stream_call(call);
                                });
          });
      return;
    }
    service.client().async_call(
        std::move(request), call_options,
        [self, id, name, stateless, session, call_key, span, reply](Response&& response) {
          self->answer_call(id, name, stateless, session, call_key, span, reply,
                            std::move(response));
        });
  }

  // A tool call on a stream endpoint, while its messages come.
  struct StreamToolCall {
    json id;
    std::string name;
    bool stateless = false;
    SessionPtr session;
    std::string call_key;
    std::shared_ptr<trace::Span> span;
    Reply reply = Reply([](Answer) {});
    Progress progress;  // set when the request gave a progressToken and there is a channel
    json progress_token;
    MessageStreamPtr stream;
    json messages = json::array();
  };

  // Reads the stream's messages one by one, each reported as progress as it comes.
  void read_stream_call(const std::shared_ptr<StreamToolCall>& call) {
    auto self = shared_from_this();
    call->stream->async_read([self, call](std::optional<std::string> message) {
      if (!message) return self->end_stream_call(*call, call->stream->status());
      json decoded = json::parse(*message, nullptr, false);
      if (decoded.is_discarded()) decoded = *message;  // not JSON: kept as text
      if (call->progress) {
        // [2025-11-25] progress increases with each notification; the message says what came.
        call->progress(
            {{"jsonrpc", "2.0"},
             {"method", "notifications/progress"},
             {"params",
              {{"progressToken", call->progress_token},
               {"progress", call->messages.size() + 1},
               {"message", decoded.is_string() ? decoded.get<std::string>() : decoded.dump()}}}});
      }
      call->messages.push_back(std::move(decoded));
      self->read_stream_call(call);
    });
  }

  // The stream ended: the result holds every message (structuredContent: {messages: [...]}).
  void end_stream_call(StreamToolCall& call, Response status) {
    if (!status.error) {
      status.content_type = "application/json";
      status.body = json{{"messages", std::move(call.messages)}}.dump();
    }
    answer_call(call.id, call.name, call.stateless, call.session, call.call_key, call.span,
                call.reply, std::move(status));
  }

  void answer_call(const json& id, const std::string& name, bool stateless,
                   const SessionPtr& session, const std::string& call_key,
                   const std::shared_ptr<trace::Span>& span, const Reply& reply,
                   Response&& response) {
    struct Done {  // the in-flight count drops once the answer is handed over, whatever happens
      State& state;
      ~Done() {
        if (state.in_flight.fetch_sub(1, std::memory_order_acq_rel) == 1) {
          std::lock_guard lock(state.drain_mutex);
          state.drained.notify_all();
        }
      }
    } done{*this};
    if (session) {
      std::lock_guard lock(session->mutex);
      session->calls.erase(call_key);
      // [2025-11-25] a request the client cancelled gets no answer (on stdio; an HTTP
      // exchange waits for one, so it is told the call was cancelled).
      if (session->cancelled_by_client.erase(call_key) > 0 && session == stdio_session) {
        if (span) span->end();
        return;
      }
    }
    json result;
    if (response.error) {
      // [both] a failed call is a tool result with isError, not a protocol error.
      tool_errors.fetch_add(1, std::memory_order_relaxed);
      result = tool_error(response.error->message(), stateless);
      result["_meta"] = {{"micro/error", json::parse(response.error->to_json(), nullptr, false)}};
      if (span) span->set_status(trace::StatusCode::error, response.error->message());
      if (session)
        log_to(*session, "warning", {{"tool", name}, {"error", response.error->message()}});
    } else {
      try {
        json decoded = response.body.empty()
                           ? json::object()
                           : codec_for(response.content_type.empty() ? "application/json"
                                                                     : response.content_type)
                                 .decode(response.body);
        // [2025-06-18, kept in 2025-11-25] structured content, and its JSON as text too.
        result = {{"content", json::array({{{"type", "text"}, {"text", decoded.dump()}}})},
                  {"isError", false}};
        // With an outputSchema the object conforms to it; without, it is given all the same.
        if (decoded.is_object()) result["structuredContent"] = std::move(decoded);
        if (stateless) result["resultType"] = "complete";
      } catch (const std::exception& e) {
        tool_errors.fetch_add(1, std::memory_order_relaxed);
        result = tool_error("the answer of " + name + " in " + response.content_type +
                                " cannot be read as JSON: " + strip_nlohmann_prefix(e.what()),
                            stateless);
      }
    }
    if (span) span->end();
    reply(rpc_result(id, std::move(result)));
  }

  // ---- Streamable HTTP -------------------------------------------------------------------

  static http::ServerResponse http_answer(int status, std::string body = {},
                                          std::string_view type = "application/json") {
    http::ServerResponse response;
    response.status = status;
    if (!body.empty()) response.headers.push_back({"Content-Type", std::string(type)});
    response.body = std::move(body);
    return response;
  }

  static http::ServerResponse http_error(int status, int code, std::string message,
                                         const json& id = nullptr, json data = nullptr) {
    return http_answer(status, rpc_error(id, code, std::move(message), std::move(data)).dump());
  }

  // [2025-11-25] Origin MUST be validated (DNS rebinding): loopback origins and those allowed.
  bool origin_allowed(std::string_view origin) const {
    if (origin.empty()) return true;  // not a browser
    for (const auto& allowed : options.allowed_origins)
      if (allowed == "*" || iequals(allowed, origin)) return true;
    return is_loopback_host(origin_host(origin));
  }

  SessionPtr new_session() {
    auto session = std::make_shared<Session>();
    session->id = random_hex(32);  // [2025-11-25] visible ASCII, cryptographically random
    std::lock_guard lock(sessions_mutex);
    if (sessions.size() >= options.max_sessions) {
      auto oldest = std::min_element(sessions.begin(), sessions.end(), [](auto& a, auto& b) {
        return a.second->last_used < b.second->last_used;
      });
      log::info(component, "session " + oldest->first + " dropped: max_sessions reached");
      sessions.erase(oldest);
    }
    sessions[session->id] = session;
    return session;
  }

  SessionPtr find_session(const std::string& id) {
    std::lock_guard lock(sessions_mutex);
    auto found = sessions.find(id);
    if (found == sessions.end()) return nullptr;
    found->second->last_used = std::chrono::steady_clock::now();
    return found->second;
  }

  void handle_http(const http::ExchangePtr& exchange) {
    const http::ServerRequest& request = exchange->request();
    std::string_view target = request.target;
    std::string_view path = target.substr(0, target.find_first_of("?#"));
    if (path != options.path) {
      exchange->respond(
          http_answer(404, "no MCP endpoint at " + std::string(path) + "; it is " + options.path,
                      "text/plain"));
      return;
    }
    if (!origin_allowed(request.header("Origin"))) {
      // [2025-11-25] an invalid Origin MUST get 403; the body MAY be an error without id.
      exchange->respond(http_error(403, invalid_request,
                                   "Origin " + std::string(request.header("Origin")) +
                                       " is not allowed; start micro mcp with --origins=" +
                                       std::string(request.header("Origin")) + " to allow it"));
      return;
    }
    if (!options.token.empty()) {
      std::string_view authorization = request.header("Authorization");
      bool bearer = authorization.size() > 7 && iequals(authorization.substr(0, 7), "Bearer ");
      if (!bearer || !same_secret(authorization.substr(7), options.token)) {
        http::ServerResponse response =
            http_error(401, invalid_request,
                       bearer ? "the bearer token is not the one this gateway was given"
                              : "this gateway needs \"Authorization: Bearer <token>\"");
        response.headers.push_back({"WWW-Authenticate", "Bearer realm=\"micro mcp\""});
        exchange->respond(std::move(response));
        return;
      }
    }
    if (request.method == "POST") {
      handle_post(exchange);
    } else if (request.method == "DELETE") {
      // [2025-11-25] a client ends its session with DELETE and the Mcp-Session-Id.
      std::string id(request.header("Mcp-Session-Id"));
      if (id.empty()) {
        exchange->respond(http_error(400, invalid_request, "DELETE needs an Mcp-Session-Id"));
        return;
      }
      std::lock_guard lock(sessions_mutex);
      bool erased = sessions.erase(id) > 0;
      exchange->respond(erased ? http_answer(204)
                               : http_error(404, invalid_request, "no session " + id));
    } else if (request.method == "GET") {
      open_push_stream(exchange);
    } else {
      http::ServerResponse response =
          http_error(405, invalid_request,
                     "method " + request.method + " is not served at " + options.path +
                         "; POST JSON-RPC messages, GET the session's SSE stream, DELETE the "
                         "session");
      response.headers.push_back({"Allow", "GET, POST, DELETE"});
      exchange->respond(std::move(response));
    }
  }

  void handle_post(const http::ExchangePtr& exchange) {
    const http::ServerRequest& request = exchange->request();
    std::string_view accept = request.header("Accept");
    bool sse_accepted = accepts(accept, "text/event-stream");
    if (!accepts(accept, "application/json") && !sse_accepted) {
      exchange->respond(http_error(406, invalid_request,
                                   "Accept must list application/json and text/event-stream"));
      return;
    }
    std::string_view content_type = request.header("Content-Type");
    if (!content_type.empty() &&
        !iequals(content_type.substr(0, content_type.find(';')), "application/json")) {
      exchange->respond(
          http_error(415, invalid_request,
                     "Content-Type " + std::string(content_type) + " is not application/json"));
      return;
    }
    json message;
    try {
      message = json::parse(request.body);
    } catch (const json::parse_error& e) {
      messages.fetch_add(1, std::memory_order_relaxed);
      exchange->respond(
          http_error(400, parse_error, "the body is not JSON: " + strip_nlohmann_prefix(e.what())));
      return;
    }
    if (!message.is_object()) {
      dispatch(message, nullptr,
               [&](Answer answer) { exchange->respond(http_answer(400, std::move(answer.text))); });
      return;
    }
    json id = message.contains("id") ? message["id"] : json();
    bool is_request = message.contains("method") && message.contains("id");
    std::string method = message.contains("method") && message["method"].is_string()
                             ? message["method"].get<std::string>()
                             : "";
    const json* meta = nullptr;
    if (auto params = message.find("params"); params != message.end() && params->is_object())
      if (auto m = params->find("_meta"); m != params->end() && m->is_object()) meta = &*m;
    std::string_view version_header = request.header("MCP-Protocol-Version");
    bool stateless = meta != nullptr && meta->contains(meta_protocol_version);

    if (stateless || version_header == stateless_revision) {
      if (auto refusal = check_stateless_headers(request, message, method, meta)) {
        refusal->body = rpc_error(is_request ? id : json(), header_mismatch, refusal->body).dump();
        exchange->respond(std::move(*refusal));
        return;
      }
      const json& body_version = (*meta)[meta_protocol_version];
      if (body_version != stateless_revision) {
        // [2026-07-28] an unsupported version is -32022, with HTTP 400.
        exchange->respond(
            http_error(400, unsupported_protocol_version,
                       "protocol version " + body_version.dump() + " is not supported",
                       is_request ? id : json(),
                       {{"requested", body_version.is_string() ? body_version.get<std::string>()
                                                               : body_version.dump()},
                        {"supported", json::array({stateless_revision})}}));
        return;
      }
      answer_dispatch(exchange, message, nullptr, sse_accepted, method == "tools/call");
      return;
    }

    // [2025-11-25] the stateful flow. An invalid or unsupported MCP-Protocol-Version MUST get
    // 400, with a session or without.
    if (!version_header.empty() && version_header != stateful_revision) {
      exchange->respond(
          http_error(400, invalid_request,
                     "MCP-Protocol-Version " + std::string(version_header) + " is not supported; " +
                         stateful_revision + " is spoken after initialize, " + stateless_revision +
                         " with _meta[\"" + meta_protocol_version + "\"] on each request",
                     is_request ? id : json()));
      return;
    }
    SessionPtr session;
    std::string session_header(request.header("Mcp-Session-Id"));
    if (method == "initialize" && session_header.empty()) {
      session = new_session();
    } else if (session_header.empty()) {
      exchange->respond(http_error(
          400, invalid_request,
          "missing Mcp-Session-Id: send initialize first, then its Mcp-Session-Id on every "
          "request (" +
              std::string(stateful_revision) + "), or give _meta[\"" + meta_protocol_version +
              "\"] (" + stateless_revision + ")",
          is_request ? id : json()));
      return;
    } else {
      session = find_session(session_header);
      if (!session) {
        // [2025-11-25] an unknown (ended) session is 404: the client starts a new one.
        exchange->respond(
            http_error(404, invalid_request,
                       "no session " + session_header + " (ended or never begun); initialize again",
                       is_request ? id : json()));
        return;
      }
    }
    answer_dispatch(exchange, message, session, sse_accepted, method == "tools/call");
  }

  // [2025-11-25] a tools/call answered on an SSE stream written event by event: the
  // notifications waiting, the call's progress as it happens, then the result, which ends it.
  void answer_streamed(const http::ExchangePtr& exchange, const json& message,
                       const SessionPtr& session) {
    http::ServerResponse head;
    head.status = 200;
    head.headers.push_back({"Content-Type", "text/event-stream"});
    head.headers.push_back({"Cache-Control", "no-cache"});
    std::vector<json> waiting;
    if (session) {
      std::lock_guard lock(session->mutex);
      waiting.swap(session->queued);
      if (session->initialize_answered) head.headers.push_back({"Mcp-Session-Id", session->id});
    }
    auto writer = exchange->respond_streaming(std::move(head));
    if (!writer) return;
    for (const auto& notification : waiting) writer->write(sse_event(notification.dump()));
    bool answered_later = dispatch(
        message, session,
        [writer](Answer answer) { write_when_room(writer, sse_event(answer.text), true); },
        [exchange](const std::shared_ptr<CancellationState>& cancellation) {
          exchange->on_abandoned([cancellation] { cancellation->cancel(); });
        },
        [writer](const json& notification) {
          // A client too slow for its progress loses some; the result waits for room.
          writer->write(sse_event(notification.dump()));
        });
    if (!answered_later) writer->finish();
  }

  // [2025-11-25] GET opens the session's server-to-client SSE stream: notifications (a tool
  // list change, log messages) are pushed on it as they happen, not with the next answer.
  // One per session: a newer GET replaces the older. Not resumable (no event ids; the spec
  // makes resumption optional), so Last-Event-ID is ignored.
  void open_push_stream(const http::ExchangePtr& exchange) {
    const http::ServerRequest& request = exchange->request();
    if (!accepts(request.header("Accept"), "text/event-stream")) {
      exchange->respond(http_error(406, invalid_request, "GET needs Accept: text/event-stream"));
      return;
    }
    std::string id(request.header("Mcp-Session-Id"));
    if (id.empty()) {
      exchange->respond(http_error(400, invalid_request,
                                   "GET needs an Mcp-Session-Id: the stream belongs to a session "
                                   "(initialize first)"));
      return;
    }
    SessionPtr session = find_session(id);
    if (!session) {
      exchange->respond(http_error(
          404, invalid_request, "no session " + id + " (ended or never begun); initialize again"));
      return;
    }
    http::ServerResponse head;
    head.status = 200;
    head.headers.push_back({"Content-Type", "text/event-stream"});
    head.headers.push_back({"Cache-Control", "no-cache"});
    head.headers.push_back({"Mcp-Session-Id", session->id});
    std::vector<json> waiting;
    http::ResponseWriterPtr previous;
    http::ResponseWriterPtr writer;
    {
      std::lock_guard lock(session->mutex);
      writer = exchange->respond_streaming(std::move(head));
      if (!writer) return;
      previous = std::move(session->push_stream);
      session->push_stream = writer;
      waiting.swap(session->queued);
      session->push = [weak = std::weak_ptr<http::ResponseWriter>(writer)](const json& message) {
        if (auto stream = weak.lock()) stream->write(sse_event(message.dump()));
      };
      for (const auto& notification : waiting) writer->write(sse_event(notification.dump()));
    }
    if (previous) previous->finish();
    // The client went away: notifications wait for answers again.
    exchange->on_abandoned([weak_session = std::weak_ptr<Session>(session), stream = writer.get()] {
      auto session = weak_session.lock();
      if (!session) return;
      std::lock_guard lock(session->mutex);
      if (session->push_stream.get() != stream) return;
      session->push_stream.reset();
      session->push = nullptr;
    });
  }

  // [2026-07-28] MCP-Protocol-Version, Mcp-Method and Mcp-Name mirror the body; a response
  // with the status and the message when they are missing or differ.
  std::optional<http::ServerResponse> check_stateless_headers(const http::ServerRequest& request,
                                                              const json& message,
                                                              const std::string& method,
                                                              const json* meta) {
    auto refuse = [](std::string why) {
      return http_answer(400, std::move(why));
    };
    std::string_view version_header = request.header("MCP-Protocol-Version");
    if (meta == nullptr || !meta->contains(meta_protocol_version))
      return refuse("MCP-Protocol-Version says " + std::string(version_header) +
                    " but the body has no params._meta[\"" + meta_protocol_version + "\"]");
    const json& body_version = (*meta)[meta_protocol_version];
    if (version_header.empty())
      return refuse("missing MCP-Protocol-Version header; it must repeat params._meta[\"" +
                    std::string(meta_protocol_version) + "\"] (" + body_version.dump() + ")");
    if (!body_version.is_string() || version_header != body_version.get<std::string>())
      return refuse("MCP-Protocol-Version header " + std::string(version_header) +
                    " does not match params._meta[\"" + meta_protocol_version + "\"] " +
                    body_version.dump());
    std::string_view method_header = request.header("Mcp-Method");
    if (method_header.empty())
      return refuse("missing Mcp-Method header; it must repeat the body's method '" + method + "'");
    if (method_header != method)
      return refuse("Mcp-Method header '" + std::string(method_header) +
                    "' does not match the body's method '" + method + "'");
    if (method == "tools/call") {
      std::string name;
      if (auto params = message.find("params"); params != message.end())
        if (auto n = params->find("name"); n != params->end() && n->is_string())
          name = n->get<std::string>();
      std::string name_header(request.header("Mcp-Name"));
      // [2026-07-28] a header value may come as =?base64?<Base64>?= (non-ASCII names).
      if (name_header.starts_with("=?base64?") && name_header.size() >= 11 &&
          name_header.ends_with("?=")) {
        auto decoded =
            base64::try_decode(std::string_view(name_header).substr(9, name_header.size() - 11));
        if (!decoded) return refuse("Mcp-Name header " + name_header + " is not valid Base64");
        name_header = *decoded;
      }
      if (name_header.empty())
        return refuse("missing Mcp-Name header; for tools/call it must repeat params.name '" +
                      name + "'");
      if (name_header != name)
        return refuse("Mcp-Name header '" + name_header + "' does not match params.name '" + name +
                      "'");
    }
    return std::nullopt;
  }

  // Dispatches and answers: 202 for what needs no answer; the answer as JSON, or as an SSE
  // stream scoped to the request when the client accepts one and either the session has
  // notifications waiting (they go first) or `prefer_sse` (tools/call, whose stream is where
  // a call's notifications belong).
  void answer_dispatch(const http::ExchangePtr& exchange, const json& message,
                       const SessionPtr& session, bool sse_accepted, bool prefer_sse) {
    auto self = shared_from_this();
    if (sse_accepted && prefer_sse) return answer_streamed(exchange, message, session);
    bool answered_later = dispatch(
        message, session,
        [self, exchange, session, sse_accepted, prefer_sse](Answer answer) {
          std::vector<json> waiting;
          bool session_begun = false;  // an initialize was answered in it
          if (session) {
            std::lock_guard lock(session->mutex);
            if (sse_accepted) waiting.swap(session->queued);
            session_begun = session->initialize_answered;
          }
          bool is_error = answer.error;
          // An initialize that failed leaves no session behind.
          if (is_error && session && !session_begun) {
            std::lock_guard lock(self->sessions_mutex);
            self->sessions.erase(session->id);
          }
          http::ServerResponse response;
          response.status = 200;
          if (sse_accepted && (prefer_sse || !waiting.empty())) {
            std::string body;
            for (const auto& notification : waiting)
              body += "event: message\ndata: " + notification.dump() + "\n\n";
            body += "event: message\ndata: " + answer.text + "\n\n";
            response.headers.push_back({"Content-Type", "text/event-stream"});
            response.headers.push_back({"Cache-Control", "no-cache"});
            response.body = std::move(body);
          } else {
            response.headers.push_back({"Content-Type", "application/json"});
            response.body = std::move(answer.text);
          }
          if (session && session_begun) response.headers.push_back({"Mcp-Session-Id", session->id});
          exchange->respond(std::move(response));
        },
        [exchange](const std::shared_ptr<CancellationState>& cancellation) {
          // A client that goes away cancels its call: the service stops working for nobody.
          exchange->on_abandoned([cancellation] { cancellation->cancel(); });
        });
    if (!answered_later) {
      // [both] an accepted notification or response: 202 with no body.
      http::ServerResponse response = http_answer(202);
      exchange->respond(std::move(response));
    }
  }
};

// ---- Gateway -----------------------------------------------------------------------------

namespace {

// Writes stdio messages on a thread of its own, so no I/O thread ever waits for a client slow
// to read. A client that leaves more than max_queued bytes unread, or closes its end, is gone:
// the output closes and the gateway stops reading.
class StdioWriter {
 public:
  static constexpr std::size_t max_queued = 64 * 1024 * 1024;

  explicit StdioWriter(int fd) : fd_(fd), thread_([this] { run(); }) {}
  ~StdioWriter() { finish(); }

  // [2025-11-25] stdio: one message per line, no embedded newline (dump() escapes them).
  void push(const json& message) { push_text(message.dump()); }
  // A message serialised already (JSON text without a newline).
  void push_text(std::string line) {
    line += '\n';
    std::lock_guard lock(mutex_);
    if (closing_ || !open_) return;
    if (queued_ + line.size() > max_queued) {
      log::error(component, "the client reads none of its messages; closing stdout");
      open_ = false;
      wake_.notify_all();
      return;
    }
    queued_ += line.size();
    lines_.push_back(std::move(line));
    wake_.notify_all();
  }
  bool open() const { return open_.load(); }
  // Writes what is queued (while the client reads), then ends the thread.
  void finish() {
    {
      std::lock_guard lock(mutex_);
      closing_ = true;
      wake_.notify_all();
    }
    if (thread_.joinable()) thread_.join();
  }

 private:
  void run() {
    std::unique_lock lock(mutex_);
    for (;;) {
      wake_.wait(lock, [&] { return closing_ || !open_ || !lines_.empty(); });
      if (lines_.empty() || !open_) return;
      std::string line = std::move(lines_.front());
      lines_.pop_front();
      queued_ -= line.size();
      lock.unlock();
      std::size_t written = 0;
      while (written < line.size()) {
        ssize_t n = ::write(fd_, line.data() + written, line.size() - written);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
          open_ = false;  // EPIPE: the client is gone
          break;
        }
        written += static_cast<std::size_t>(n);
      }
      lock.lock();
    }
  }

  int fd_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::string> lines_;
  std::size_t queued_ = 0;
  bool closing_ = false;
  std::atomic<bool> open_{true};
  std::thread thread_;
};

}  // namespace

Gateway::Gateway(Microservice& service, McpOptions options)
    : state_(std::make_shared<State>(service, std::move(options))) {}

Gateway::~Gateway() {
  try {
    stop();
  } catch (const std::exception& e) {
    log::error(component, std::string("stop failed: ") + e.what());
  }
}

void Gateway::start() {
  State& state = *state_;
  if (!state.options.address.empty()) {
    auto colon = state.options.address.rfind(':');
    std::string host = state.options.address.substr(0, colon);
    if (!is_loopback_host(host) && state.options.token.empty() && !state.options.allow_remote)
      throw Exception(bad_request(
          "micro.mcp", "address " + state.options.address +
                           " is not loopback and no --token is set: anyone who reaches it "
                           "could call every service; give --token=… (or --allow_remote)"));
  }
  try {
    state.rebuild();
  } catch (const std::exception& e) {
    log::warn(component, std::string("listing the registry failed: ") + e.what());
  }
  std::weak_ptr<State> weak = state_;
  state.watch = state.service.registry().watch({}, [weak](const WatchEvent&) {
    if (auto self = weak.lock()) {
      std::lock_guard lock(self->refresh_mutex);
      self->refresh_due = true;
      self->refresh_wake.notify_all();
    }
  });
  state.refresher = std::thread([self = state_] { self->run_refresher(); });
  if (state.options.address.empty()) return;
  http::ServerOptions http_options = state.options.http;
  // The HTTP server's own refusals (413 oversize, 431, 400, 408) as JSON-RPC errors too.
  http_options.refusal = [](int status, std::string message) {
    return State::http_error(status, status == 413 ? invalid_request : parse_error,
                             std::move(message));
  };
  state.server = std::make_unique<http::Server>(
      state.service.runtime().executor(), std::move(http_options),
      [weak](http::ExchangePtr exchange) {
        if (auto self = weak.lock()) {
          self->handle_http(exchange);
        } else {
          exchange->respond(State::http_error(503, internal_error_code, "gateway gone"));
        }
      });
  state.server->listen(state.options.address);
  state.bound_address = state.server->address();
}

std::string Gateway::address() const {
  return state_->bound_address;
}

int Gateway::serve_stdio(int input_fd, int output_fd, const std::function<bool()>& stop_requested) {
  State& state = *state_;
  std::signal(SIGPIPE, SIG_IGN);  // a client gone: write fails with EPIPE instead
  auto writer = std::make_shared<StdioWriter>(output_fd);
  auto write_answer = [writer](Answer answer) {
    writer->push_text(std::move(answer.text));
  };
  auto write_message = [writer](const json& message) {
    writer->push(message);
  };
  auto session = std::make_shared<Session>();
  session->push = write_message;
  {
    std::lock_guard lock(state.sessions_mutex);
    state.stdio_session = session;
  }
  const std::size_t limit = state.options.http.body_limit;
  std::string buffer;
  bool discarding = false;  // inside a line over the limit, until its newline
  auto handle_line = [&](std::string_view line) {
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.find_first_not_of(" \t") == std::string_view::npos) return;
    json message;
    try {
      message = json::parse(line);
    } catch (const json::parse_error& e) {
      state.messages.fetch_add(1, std::memory_order_relaxed);
      write_message(rpc_error(nullptr, parse_error,
                              "the line is not JSON: " + strip_nlohmann_prefix(e.what())));
      return;
    }
    state.dispatch(message, session, write_answer, {}, write_message);
  };
  char chunk[65536];
  while (writer->open() && !(stop_requested && stop_requested())) {
    pollfd descriptor{input_fd, POLLIN, 0};
    int ready = ::poll(&descriptor, 1, 200);
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) continue;
    ssize_t n = ::read(input_fd, chunk, sizeof chunk);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // EOF: the client closed its side
    std::string_view data(chunk, static_cast<std::size_t>(n));
    while (!data.empty()) {
      std::size_t newline = data.find('\n');
      std::string_view piece = data.substr(0, newline);
      if (discarding) {
        if (newline != std::string_view::npos) discarding = false;
      } else if (buffer.size() + piece.size() > limit) {
        // Refused before it is held: the rest of the line is skipped as it comes.
        state.messages.fetch_add(1, std::memory_order_relaxed);
        write_message(rpc_error(nullptr, invalid_request,
                                "message of more than " + std::to_string(limit) +
                                    " bytes exceeds the limit (--max_body)"));
        buffer.clear();
        discarding = newline == std::string_view::npos;
      } else if (newline == std::string_view::npos) {
        buffer.append(piece);
      } else {
        if (buffer.empty()) {
          handle_line(piece);
        } else {
          buffer.append(piece);
          handle_line(buffer);
          buffer.clear();
        }
      }
      if (newline == std::string_view::npos) break;
      data.remove_prefix(newline + 1);
    }
  }
  if (!buffer.empty() && !discarding) handle_line(buffer);  // a last line without newline
  {
    std::unique_lock lock(state.drain_mutex);
    state.drained.wait_for(lock, state.service.config().drain_timeout,
                           [&] { return state.in_flight.load(std::memory_order_acquire) == 0; });
  }
  {
    std::lock_guard lock(state.sessions_mutex);
    state.stdio_session.reset();
  }
  writer->finish();
  return 0;
}

std::size_t Gateway::stop() {
  State& state = *state_;
  if (state.refresher.joinable()) {
    if (state.watch) state.watch->stop();
    {
      std::lock_guard lock(state.refresh_mutex);
      state.refresher_stop = true;
      state.refresh_wake.notify_all();
    }
    state.refresher.join();
  }
  std::size_t unfinished = 0;
  if (state.server) state.server->stop_accepting();
  {
    std::unique_lock lock(state.drain_mutex);
    state.drained.wait_for(lock, state.service.config().drain_timeout,
                           [&] { return state.in_flight.load(std::memory_order_acquire) == 0; });
    unfinished = state.in_flight.load(std::memory_order_acquire);
  }
  if (state.server) {
    state.server->close();
    // As micro api: let the answers already given finish writing before the runtime goes.
    const auto flush_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    while (state.server->statistics().connections_open > 0 &&
           std::chrono::steady_clock::now() < flush_deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    state.server.reset();
  }
  return unfinished;
}

McpStatistics Gateway::statistics() const {
  McpStatistics statistics;
  statistics.messages = state_->messages.load(std::memory_order_relaxed);
  statistics.tool_calls = state_->tool_calls.load(std::memory_order_relaxed);
  statistics.tool_errors = state_->tool_errors.load(std::memory_order_relaxed);
  statistics.list_changes = state_->list_changes.load(std::memory_order_relaxed);
  statistics.tools = state_->current_catalog()->tools.size();
  return statistics;
}

int take_stdout_for_protocol() {
  std::cout.flush();
  int protocol = ::dup(STDOUT_FILENO);
  if (protocol < 0) throw std::runtime_error(std::string("dup(stdout): ") + std::strerror(errno));
  if (::dup2(STDERR_FILENO, STDOUT_FILENO) < 0)
    throw std::runtime_error(std::string("dup2(stderr, stdout): ") + std::strerror(errno));
  return protocol;
}

int run_mcp(Microservice& service, McpOptions options, int protocol_fd) {
  std::mutex mutex;
  std::condition_variable wake;
  std::atomic<bool> stop{false};
  // Caught from before anything opens, so a signal never finds the default action.
  boost::asio::signal_set signals(service.runtime().io_context(), SIGINT, SIGTERM);
  signals.async_wait([&](boost::system::error_code error, int) {
    if (error) return;
    std::lock_guard lock(mutex);
    stop = true;
    wake.notify_all();
  });
  bool stdio = options.address.empty();
  std::string path = options.path;
  Gateway gateway(service, std::move(options));
  gateway.start();
  if (stdio) {
    log::info(component, "serving MCP on stdio");
    gateway.serve_stdio(STDIN_FILENO, protocol_fd, [&] { return stop.load(); });
  } else {
    std::cout << "micro mcp listening on http://" << gateway.address() << path << std::endl;
    std::unique_lock lock(mutex);
    wake.wait(lock, [&] { return stop.load(); });
  }
  signals.cancel();
  std::size_t unfinished = gateway.stop();
  if (unfinished > 0)
    log::warn(component, std::to_string(unfinished) +
                             " tool call(s) unfinished at the drain "
                             "timeout");
  if (!stdio) std::cout << "micro mcp stopped" << std::endl;
  return 0;
}

// ---- Flags -------------------------------------------------------------------------------

McpOptions parse_mcp_flags(const std::vector<std::string>& arguments, const Config& config) {
  McpOptions options;
  options.timeout = config.client_request_timeout;
  static const std::vector<std::string> known = {
      "address", "path",       "timeout",   "max_timeout", "origins",  "token",       "allow",
      "deny",    "rate_limit", "page_size", "list_ttl",    "max_body", "allow_remote"};
  std::string flag_list;
  for (const auto& name : known) flag_list += (flag_list.empty() ? "--" : ", --") + name;
  auto split = [](const std::string& value) {
    std::vector<std::string> items;
    std::string_view list = value;
    while (!list.empty()) {
      std::size_t comma = list.find(',');
      std::string_view item = list.substr(0, comma);
      if (!item.empty()) items.emplace_back(item);
      if (comma == std::string_view::npos) break;
      list.remove_prefix(comma + 1);
    }
    return items;
  };
  for (std::size_t index = 0; index < arguments.size(); ++index) {
    std::string_view argument = arguments[index];
    if (!argument.starts_with("--"))
      throw std::invalid_argument("micro mcp takes no argument '" + std::string(argument) +
                                  "'; flags: " + flag_list);
    std::string_view body = argument.substr(2);
    std::size_t equals = body.find('=');
    std::string name(body.substr(0, equals));
    std::replace(name.begin(), name.end(), '-', '_');
    std::string value;
    if (equals != std::string_view::npos) {
      value = body.substr(equals + 1);
    } else if (name == "allow_remote") {
      value = "true";
    } else if (index + 1 < arguments.size() && !arguments[index + 1].starts_with("--")) {
      value = arguments[++index];
    } else {
      throw std::invalid_argument("flag --" + name + " has no value; expected --" + name +
                                  "=VALUE");
    }
    auto duration = [&]() {
      auto parsed = parse_duration(value);
      if (!parsed || parsed->count() <= 0)
        throw std::invalid_argument("bad duration '" + value + "' for --" + name +
                                    "; expected a duration like 30s, 250ms or 5m");
      return *parsed;
    };
    auto count = [&]() {
      std::size_t number = 0, used = 0;
      try {
        number = std::stoull(value, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      if (used == 0 || used != value.size() || number == 0)
        throw std::invalid_argument("bad count '" + value + "' for --" + name +
                                    "; expected a positive whole number");
      return number;
    };
    if (name == "address") {
      if (value.find(':') == std::string::npos)
        throw std::invalid_argument("bad address '" + value +
                                    "' for --address; expected host:port like 127.0.0.1:8090");
      options.address = value;
    } else if (name == "path") {
      if (value.empty() || value.front() != '/')
        throw std::invalid_argument("bad path '" + value + "' for --path; expected /mcp or so");
      options.path = value;
    } else if (name == "timeout") {
      options.timeout = duration();
    } else if (name == "max_timeout") {
      options.max_timeout = duration();
    } else if (name == "list_ttl") {
      options.list_ttl = duration();
    } else if (name == "origins") {
      options.allowed_origins = split(value);
    } else if (name == "token") {
      if (value.empty()) throw std::invalid_argument("--token is empty");
      options.token = value;
    } else if (name == "allow") {
      options.allow = split(value);
    } else if (name == "deny") {
      options.deny = split(value);
    } else if (name == "rate_limit") {
      std::size_t used = 0;
      double rate = 0;
      try {
        rate = std::stod(value, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      if (used == 0 || used != value.size() || rate <= 0)
        throw std::invalid_argument("bad rate '" + value +
                                    "' for --rate_limit; expected calls per second, like 5 "
                                    "or 0.5");
      options.rate_limit = rate;
    } else if (name == "page_size") {
      options.page_size = count();
    } else if (name == "max_body") {
      options.http.body_limit = count();
    } else if (name == "allow_remote") {
      options.allow_remote = value == "true" || value == "1";
    } else {
      throw std::invalid_argument("unknown flag --" + name + " for micro mcp" +
                                  did_you_mean(name, known) + "; flags: " + flag_list);
    }
  }
  return options;
}

}  // namespace micro::mcp
