// The `micro` command: look at and talk to a system of services from a terminal.
//
//   micro [--registry=… --broker=… …] <command> [arguments]
//     plugins                         every plugin found, with its options
//     services                        every registered service
//     describe <service>              versions, endpoints and nodes of a service
//     call <service> <endpoint> [json]  call an endpoint with a JSON request (default {})
//     stream <service> <endpoint>     open a stream: JSON lines from stdin are sent, answers
//                                     printed as they arrive (one JSON per line)
//     publish <topic> <json>          publish a JSON message
//     subscribe <topic> [count]       print messages on a topic (count: stop after that many)
//     trace <file> [trace-id]         waterfall of the traces in a span file (exporter=file)
//     api [--address=127.0.0.1:8080]  HTTP gateway: POST /<service>/<Endpoint> with JSON
//     mcp [--address=127.0.0.1:8090]  Model Context Protocol gateway: endpoints as AI tools
//     health <service>                each node's /health/ready, from its advertised admin address
//     stats <service>                 each node's admin summary (rates, errors, p50/p99)
#include <condition_variable>
#include <csignal>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <mutex>
#include <optional>
#include <sstream>
#include <thread>

#include <boost/asio/signal_set.hpp>

#include <micro/http_client.hpp>
#include <micro/log.hpp>
#include <micro/service.hpp>

#include "api_gateway.hpp"
#include "mcp_gateway.hpp"

// The waterfall view is the trace plugin's; the CLI compiles it in (a tool, not a plugin).
#include "waterfall.hpp"

namespace {

constexpr const char* usage = R"(usage: micro [--key=value …] <command> [arguments]

commands:
  plugins                            list every plugin found, with its options
  services                           list registered services
  describe <service>                 show versions, endpoints and nodes of a service
  call <service> <endpoint> [json]   call an endpoint with a JSON request (default {})
  stream <service> <endpoint>        open a stream: each JSON line on stdin is sent, each message
                                     received is printed as one JSON line; end of stdin closes
                                     the send side; the stream's error goes to stderr (exit 1)
  publish <topic> <json>             publish a JSON message to a topic
  subscribe <topic> [count]          print messages on a topic; stop after count (default: never)
  trace <file> [trace-id]            waterfall of the traces in a file written by
                                     wrappers=trace?exporter=file&file=<file>
  api [flags]                        HTTP gateway for curl and browsers, until SIGINT/SIGTERM:
                                       POST /<service>/<Endpoint> (or /<service>/<Service>/<Method>)
                                       with a JSON body calls it; GET / lists services,
                                       GET /<service> describes one, GET /health answers liveness
    --address=127.0.0.1:8080         where to listen
    --timeout=5s                     each call's budget (default: client_request_timeout); a
                                     caller's Timeout header may ask for up to --max_timeout=1m
    --cors_origins=https://a.example,…  origins browsers may call from ("*": any; default none)
    --max_body=4194304               largest request body in bytes (larger: 413)
  mcp [flags]                        Model Context Protocol gateway: every endpoint is a tool
                                     <service>.<Endpoint> for AI agents; stdio by default
    --address=127.0.0.1:8090         serve Streamable HTTP at http://<address>/mcp instead
                                     (--path=/mcp; a non-loopback address needs --token or
                                     --allow_remote)
    --allow=greeter,… --deny=…       services, tools or globs (greeter.Greeter.*) offered
    --token=…                        HTTP callers need "Authorization: Bearer <token>"
    --origins=https://a.example,…    browser origins allowed besides loopback ones
    --rate_limit=5                   tool calls per second per tool
    --timeout=5s --max_timeout=5m    a call's budget; _meta["micro/timeoutMs"] may ask for more
    --page_size=100 --list_ttl=10s --max_body=4194304
  health <service>                   ask every node's admin endpoint (node metadata admin=…)
                                     whether it is ready; exit 1 when one is not
  stats <service>                    every node's admin summary: endpoints with request rate,
                                     error rate, p50 and p99 over the last minute
                                     (--admin_token=… when the nodes ask for one)

configuration flags (also MICRO_* variables): --registry=file?dir=/tmp/x --broker=memory
  --selector=roundrobin --transport=tcp --wrappers=log --client_request_timeout=5s …
)";

int list_plugins() {
  std::vector<std::string> problems;
  auto plugins = micro::PluginLoader::instance().list(&problems);
  for (const auto& plugin : plugins) {
    std::cout << micro::to_string(plugin.kind) << "/" << plugin.name << " — " << plugin.summary
              << "\n";
    for (const auto& option : plugin.options) {
      std::cout << "    " << option.name << " (" << option.type;
      if (option.default_value) std::cout << ", default " << option.default_value;
      if (option.min || option.max)
        std::cout << ", " << (option.min ? option.min : "") << ".."
                  << (option.max ? option.max : "");
      std::cout << "): " << option.help << "\n";
    }
    std::cout << "    from " << plugin.path.string() << "\n";
  }
  for (const auto& problem : problems) std::cerr << "problem: " << problem << "\n";
  if (plugins.empty()) {
    std::cerr << "no plugins found; searched:\n";
    for (const auto& dir : micro::PluginLoader::instance().search_path())
      std::cerr << "  " << dir.string() << "\n";
    return 1;
  }
  return 0;
}

int subscribe(micro::Microservice& service, const std::string& topic, long count) {
  std::mutex mutex;
  std::condition_variable done;
  long received = 0;
  service.broker().connect();
  auto subscription = service.broker().subscribe(topic, [&](micro::Message& message) {
    std::lock_guard lock(mutex);
    std::cout << message.topic;
    for (const auto& [key, value] : message.headers) std::cout << " " << key << "=" << value;
    std::cout << "\n" << message.body << std::endl;
    if (++received == count) done.notify_all();
  });
  static std::atomic<bool> interrupted{false};
  std::signal(SIGINT, [](int) { interrupted = true; });
  std::signal(SIGTERM, [](int) { interrupted = true; });
  std::unique_lock lock(mutex);
  while (!interrupted && (count <= 0 || received < count))
    done.wait_for(lock, std::chrono::milliseconds(100));
  subscription->unsubscribe();
  return 0;
}

// Serves until SIGINT or SIGTERM, then drains the calls in flight and stops.
int run_gateway(micro::Microservice& service, micro::gateway::GatewayOptions options) {
  std::mutex mutex;
  std::condition_variable wake;
  bool stop = false;
  // Caught from before the port opens, so a signal never finds the default action.
  boost::asio::signal_set signals(service.runtime().io_context(), SIGINT, SIGTERM);
  signals.async_wait([&](boost::system::error_code error, int) {
    if (error) return;
    std::lock_guard lock(mutex);
    stop = true;
    wake.notify_all();
  });
  micro::gateway::Gateway gateway(service, std::move(options));
  gateway.start();
  std::cout << "micro api listening on " << gateway.address() << std::endl;
  {
    std::unique_lock lock(mutex);
    wake.wait(lock, [&] { return stop; });
  }
  std::size_t unfinished = gateway.stop();
  if (unfinished > 0)
    std::cerr << "micro api: " << unfinished << " call(s) unfinished at the drain timeout\n";
  std::cout << "micro api stopped" << std::endl;
  return 0;
}

// `micro stream`: stdin's JSON lines go out on one thread while this one prints what arrives.
// The stream's end ends the command, even while stdin is still open (a server stream that
// finished, or an error): nothing more could be sent.
int stream_lines(micro::Microservice& service, const std::string& service_name,
                 const std::string& endpoint) {
  micro::Stream stream = service.client().open_stream(service_name, endpoint);
  const std::string& type = stream.request().content_type;
  const micro::Codec& codec = micro::codec_for(type.empty() ? micro::json_content_type : type);

  std::mutex mutex;
  std::string input_error;  // a line that was not JSON
  bool writer_done = false;
  std::thread writer([&] {
    std::string line;
    long number = 0;
    try {
      while (std::getline(std::cin, line)) {
        ++number;
        if (line.find_first_not_of(" \t\r") == std::string::npos) continue;  // blank line
        nlohmann::json message;
        try {
          message = nlohmann::json::parse(line);
        } catch (const nlohmann::json::parse_error& e) {
          std::lock_guard lock(mutex);
          input_error = "stdin line " + std::to_string(number) + " is not JSON: " + e.what();
          break;
        }
        std::string encoded;
        codec.encode(message, encoded);
        stream.send(std::move(encoded));
      }
      if (input_error.empty())
        stream.close_send();
      else
        stream.cancel();
    } catch (const micro::Exception&) {
      // The stream ended while sending: its error is reported below.
    }
    std::lock_guard lock(mutex);
    writer_done = true;
  });

  while (auto message = stream.receive()) std::cout << codec.decode(*message).dump() << std::endl;

  int status = 0;
  {
    std::lock_guard lock(mutex);
    if (!input_error.empty()) {
      std::cerr << "micro stream: " << input_error << "\n";
      status = 1;
    }
  }
  if (status == 0)
    if (auto error = stream.error()) {
      std::cerr << "micro stream: " << error->message() << "\n";
      status = 1;
    }
  bool joinable;
  {
    std::lock_guard lock(mutex);
    joinable = writer_done;
  }
  if (joinable) {
    writer.join();
    return status;
  }
  // The writer is blocked reading stdin, which cannot be interrupted portably: leave now.
  std::cout.flush();
  std::cerr.flush();
  std::_Exit(status);
}

int show_traces(const std::string& path, const std::string& trace_id) {
  std::ifstream file(path);
  if (!file) throw std::invalid_argument("cannot open " + path);
  auto spans = micro::trace::sdk::read_span_lines(file);
  if (!trace_id.empty())
    std::erase_if(spans,
                  [&](const auto& span) { return span.context.trace_id.to_hex() != trace_id; });
  if (spans.empty()) {
    std::cerr << "no spans" << (trace_id.empty() ? "" : " of trace " + trace_id) << " in " << path
              << "\n";
    return 1;
  }
  std::cout << micro::trace::sdk::render_waterfall(spans, 110);
  return 0;
}

// GET http://<admin><path> with a short deadline; the token, when given, as a bearer.
micro::http::Response admin_get(micro::http::BlockingClient& client, const std::string& admin,
                                const std::string& path, const std::string& token) {
  micro::http::Request request;
  request.method = "GET";
  request.url = micro::http::parse_url("http://" + admin + path);
  request.headers.push_back({"Accept", "text/plain"});
  if (!token.empty()) request.headers.push_back({"Authorization", "Bearer " + token});
  micro::http::RequestOptions options;
  options.deadline = micro::http::Clock::now() + std::chrono::seconds(5);
  return client.request(std::move(request), options);
}

// `micro health` and `micro stats`: every node of `name`, through its admin endpoint.
int ask_nodes(micro::Microservice& service, const std::string& name, bool health,
              const std::string& token) {
  auto services = service.registry().backend()->get_service(name);
  micro::http::BlockingClient client;
  int failures = 0, nodes = 0;
  for (const auto& version : services) {
    for (const auto& node : version.nodes) {
      ++nodes;
      std::cout << node.id << " " << node.address << " (" << version.version << ")";
      auto admin = node.metadata.find("admin");
      if (admin == node.metadata.end()) {
        std::cout << ": advertises no admin address (start it with --admin=host:port)\n";
        ++failures;
        continue;
      }
      try {
        auto response = admin_get(client, admin->second, health ? "/health/ready" : "/", token);
        if (health) {
          auto body = nlohmann::json::parse(response.body, nullptr, false);
          std::cout << " admin " << admin->second << ": "
                    << (response.status == 200 ? "ready" : "NOT READY") << " (" << response.status
                    << ")\n";
          if (body.is_object() && body.contains("checks"))
            for (auto& [check, result] : body["checks"].items())
              std::cout << "  " << (result.value("ok", false) ? "ok  " : "FAIL") << " " << check
                        << ": " << result.value("detail", std::string()) << "\n";
          if (response.status != 200) ++failures;
        } else {
          std::cout << " admin " << admin->second << "\n";
          if (response.status != 200) {
            std::cout << "  " << response.status << ": " << response.body;
            ++failures;
            continue;
          }
          std::istringstream lines(response.body);
          for (std::string line; std::getline(lines, line);) std::cout << "  " << line << "\n";
        }
      } catch (const micro::Exception& e) {
        std::cout << " admin " << admin->second << ": unreachable: " << e.error().message() << "\n";
        ++failures;
      }
    }
  }
  if (nodes == 0) {
    std::cerr << "micro: no nodes of service '" << name << "' registered\n";
    return 1;
  }
  return failures == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) try {
  // A command's output is its answer: the toolkit's routine lines (a connection closed at the
  // end of `micro publish`) stay out of it unless MICRO_LOG_LEVEL or --log_level asks for them.
  const char* level_from_environment = std::getenv("MICRO_LOG_LEVEL");
  if (level_from_environment == nullptr || *level_from_environment == '\0')
    micro::log::set_level(micro::log::Level::warn);
  auto config = micro::Config::load(argc, argv);
  if (argc < 2 || std::string_view(argv[1]) == "help" || std::string_view(argv[1]) == "--help") {
    std::cout << usage;
    return argc < 2 ? 2 : 0;
  }
  std::string command = argv[1];
  std::vector<std::string> args(argv + 2, argv + argc);
  auto need = [&](std::size_t count, const char* form) {
    if (args.size() < count) throw std::invalid_argument(std::string("usage: micro ") + form);
  };

  if (command == "plugins") return list_plugins();
  if (command == "trace") {
    need(1, "trace <file> [trace-id]");
    return show_traces(args[0], args.size() > 1 ? args[1] : "");
  }

  // Checked before any plugin loads: a mistyped flag is the answer, not a connection attempt.
  std::optional<micro::gateway::GatewayOptions> gateway_options;
  if (command == "api") gateway_options = micro::gateway::parse_gateway_flags(args, config);
  std::optional<micro::mcp::McpOptions> mcp_options;
  int mcp_protocol_fd = -1;
  if (command == "mcp") {
    mcp_options = micro::mcp::parse_mcp_flags(args, config);
    // Before any plugin loads: on stdio nothing but MCP may reach stdout.
    if (mcp_options->address.empty()) mcp_protocol_fd = micro::mcp::take_stdout_for_protocol();
  }

  // The CLI serves no admin endpoint of its own; admin_token is for asking nodes.
  std::string admin_token = config.admin_token;
  config.admin_address.clear();
  micro::Microservice service("", config);
  if (command == "health" || command == "stats") {
    need(1, command == "health" ? "health <service>" : "stats <service>");
    return ask_nodes(service, args[0], command == "health", admin_token);
  }
  if (gateway_options) return run_gateway(service, std::move(*gateway_options));
  if (mcp_options) return micro::mcp::run_mcp(service, std::move(*mcp_options), mcp_protocol_fd);
  if (command == "services") {
    for (const auto& found : service.registry().list_services())
      std::cout << found.name << (found.version.empty() ? "" : " " + found.version) << "\n";
    return 0;
  }
  if (command == "describe") {
    need(1, "describe <service>");
    nlohmann::json json = service.registry().backend()->get_service(args[0]);
    std::cout << json.dump(2) << "\n";
    return 0;
  }
  if (command == "call") {
    need(2, "call <service> <endpoint> [json]");
    nlohmann::json body = nlohmann::json::parse(args.size() > 2 ? args[2] : "{}");
    auto response = service.client().call(service.client().make_request(args[0], args[1], body));
    auto decoded =
        micro::codec_for(response.content_type.empty() ? "application/json" : response.content_type)
            .decode(response.body);
    std::cout << decoded.dump(2) << "\n";
    return 0;
  }
  if (command == "stream") {
    need(2, "stream <service> <endpoint>");
    return stream_lines(service, args[0], args[1]);
  }
  if (command == "publish") {
    need(2, "publish <topic> <json>");
    service.broker().connect();
    micro::Context context;
    service.client().publish(args[0], nlohmann::json::parse(args[1]), context);
    service.broker().disconnect();
    return 0;
  }
  if (command == "subscribe") {
    need(1, "subscribe <topic> [count]");
    return subscribe(service, args[0], args.size() > 1 ? std::stol(args[1]) : 0);
  }
  std::cerr << "micro: unknown command '" << command << "'\n\n" << usage;
  return 2;
} catch (const micro::Exception& e) {
  std::cerr << "micro: " << e.error().message() << "\n";
  return 1;
} catch (const std::exception& e) {
  std::cerr << "micro: " << e.what() << "\n";
  return 1;
}
