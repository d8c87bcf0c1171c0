// `micro mcp`: a Model Context Protocol gateway. Every endpoint in the registry becomes a tool
// that AI agents (Claude, IDE agents, any MCP client) list and call.
//
//   micro mcp                                 stdio: newline-delimited JSON-RPC on stdin/stdout
//   micro mcp --address=127.0.0.1:8090        Streamable HTTP, one endpoint: POST /mcp
//
// Two protocol revisions at once (docs/design.md, "micro mcp", says which behaviour is from
// which):
//   - 2025-11-25, stateful: initialize → notifications/initialized, ping, logging/setLevel,
//     tools/list (cursor pagination), tools/call, notifications/tools/list_changed; on HTTP
//     an Mcp-Session-Id per session and 202 for notifications.
//   - 2026-07-28, stateless: no initialize; server/discover; every request carries
//     _meta["io.modelcontextprotocol/protocolVersion"] and clientCapabilities; on HTTP the
//     MCP-Protocol-Version, Mcp-Method and Mcp-Name headers must match the body (-32020);
//     results carry resultType, list results ttlMs and cacheScope; an unsupported version
//     is -32022 with the versions supported.
//
// Tools: one per endpoint, named "<service>.<Endpoint>" ("greeter.Greeter.Hello"), described
// by the endpoint's "description" metadata, with inputSchema/outputSchema as JSON Schema
// 2020-12 made from the endpoint's registered request/response shapes (<micro/schema.hpp>).
// tools/call validates the arguments against the input schema, then calls through the
// Microservice's client pipeline (registry cache, selector, retries, wrappers, any transport);
// a failed call is a result with isError, not a protocol error.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <micro/http_server.hpp>
#include <micro/registry.hpp>
#include <micro/service.hpp>

namespace micro::mcp {

// The revisions spoken: the stateful one (reached through initialize) and the stateless one
// (reached through _meta on each request).
inline constexpr const char* stateful_revision = "2025-11-25";
inline constexpr const char* stateless_revision = "2026-07-28";

struct McpOptions {
  // Empty: stdio. Otherwise "host:port" of the Streamable HTTP endpoint (loopback advised:
  // a non-loopback address without --token is refused).
  std::string address;
  std::string path = "/mcp";
  // Each tool call's budget. Zero: the client's (client_request_timeout). A request may ask
  // for less or more (up to max_timeout) with _meta["micro/timeoutMs"].
  std::chrono::milliseconds timeout{0};
  std::chrono::milliseconds max_timeout{std::chrono::minutes(5)};
  // Browser origins allowed besides loopback ones (http://localhost:*, 127.0.0.1, [::1]).
  std::vector<std::string> allowed_origins;
  std::string token;  // when set, HTTP requests need "Authorization: Bearer <token>"
  // Tool filters: a pattern is a service ("greeter"), a tool ("greeter.Greeter.Hello") or a
  // glob with '*' ("greeter.Greeter.*"). Empty allow: everything; deny wins over allow.
  std::vector<std::string> allow;
  std::vector<std::string> deny;
  double rate_limit = 0;        // tool calls per second per tool (burst: the same); 0: unlimited
  std::size_t page_size = 100;  // tools per tools/list page
  // ttlMs of list results (2026-07-28 caching); the list follows the registry anyway.
  std::chrono::milliseconds list_ttl{std::chrono::seconds(10)};
  // How often the tool list is rebuilt even when the registry's watch says nothing.
  std::chrono::milliseconds refresh_interval{std::chrono::seconds(30)};
  std::size_t max_sessions = 1000;  // HTTP sessions of 2025-11-25 kept at once
  bool allow_remote = false;        // bind a non-loopback address without a token
  http::ServerOptions http;         // body_limit (also the longest stdio line), timeouts
};

// Parses `micro mcp`'s flags (--address, --path, --timeout, --max_timeout, --origins, --token,
// --allow, --deny, --rate_limit, --page_size, --list_ttl, --max_body, --allow_remote; '-' or
// '_' alike, "--flag=value" or "--flag value"). Throws std::invalid_argument naming the flag.
McpOptions parse_mcp_flags(const std::vector<std::string>& arguments, const Config& config);

// ---- Pieces with no I/O, public so unit tests and benchmarks reach them ------------------

// JSON Schema 2020-12 for a registry shape. `strict`: objects with known fields refuse others
// (input schemas); output schemas let a service add fields.
nlohmann::json json_schema_of(const Value& shape, bool strict);
// Checks `value` against a schema json_schema_of made (type, properties, required,
// additionalProperties, items). Returns "" when it fits, else what is wrong and where:
// "arguments.name: expected string, got number".
std::string validate_against(const nlohmann::json& schema, const nlohmann::json& value,
                             const std::string& where);
// "<service>.<Endpoint>" within the spec's tool name grammar (1-128 of A-Z a-z 0-9 _ - .):
// other characters become '_', a longer name is cut and ends in a hash of the whole.
std::string tool_name_of(std::string_view service, std::string_view endpoint);
// Whether `name` (a tool) or `service` matches a filter pattern.
bool matches_filter(std::string_view pattern, std::string_view service, std::string_view tool);

struct ToolEntry {
  std::string name;
  std::string service;
  std::string endpoint;
  nlohmann::json definition;    // the Tool object tools/list returns
  nlohmann::json input_schema;  // for validation
  bool structured = false;      // has an outputSchema: results carry structuredContent
  bool streaming = false;       // a stream endpoint (metadata "stream": "true")
};

// The tools of a registry listing, sorted by name (tools/list is deterministic), filtered.
std::vector<ToolEntry> build_tools(const std::vector<Service>& services, const McpOptions& options);

// ---- The gateway -------------------------------------------------------------------------

struct McpStatistics {
  std::uint64_t messages = 0;    // JSON-RPC messages received
  std::uint64_t tool_calls = 0;  // handed to the client pipeline
  std::uint64_t tool_errors = 0;
  std::uint64_t list_changes = 0;  // times the tool list changed after start
  std::size_t tools = 0;
};

// Threading contract: start(), serve_stdio() and stop() from one controlling thread. Messages
// are handled on the runtime's I/O threads (HTTP) or the stdio reader; tool calls complete on
// I/O threads; registry listings run on a refresher thread of the gateway's own. The
// Microservice must outlive the Gateway.
class Gateway {
 public:
  Gateway(Microservice& service, McpOptions options);
  ~Gateway();  // stop()
  Gateway(const Gateway&) = delete;
  Gateway& operator=(const Gateway&) = delete;

  // Builds the tool list and follows the registry; with an address, listens. Throws
  // micro::Exception when the address cannot be used or is refused.
  void start();
  // The bound HTTP address, "host:port" ("" in stdio mode).
  std::string address() const;
  // Serves newline-delimited JSON-RPC from `input_fd` to `output_fd` until EOF on the input or
  // until `stop_requested` returns true (checked a few times a second); then waits (bounded)
  // for tool calls in flight. Returns 0.
  int serve_stdio(int input_fd, int output_fd, const std::function<bool()>& stop_requested);
  // Stops listening, waits for calls in flight up to the drain timeout, closes. Returns how
  // many calls were unfinished.
  std::size_t stop();

  McpStatistics statistics() const;

  struct State;

 private:
  std::shared_ptr<State> state_;
};

// For stdio: moves the process's stdout to a private descriptor, returned, and points stdout
// (fd 1) at stderr, so nothing but MCP messages (no stray line of a plugin or library) can
// reach the client.
int take_stdout_for_protocol();

// `micro mcp` itself: serves on stdio (writing MCP to `protocol_fd`, from
// take_stdout_for_protocol) or on HTTP until SIGINT/SIGTERM (or EOF on stdin), then stops.
int run_mcp(Microservice& service, McpOptions options, int protocol_fd);

}  // namespace micro::mcp
