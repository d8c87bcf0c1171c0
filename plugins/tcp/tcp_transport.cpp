// plugins/tcp/tcp_transport.cpp — the tcp transport plugin: option checking, the
// micro::Transport object tying the client pools and listeners together, and the entry
// point the loader finds.
#include <chrono>
#include <limits>

#include <boost/asio/post.hpp>

#include <micro/plugin.hpp>
#include <micro/transport.hpp>

#include "client.hpp"
#include "frame.hpp"
#include "server.hpp"

namespace micro::tcp {

namespace {

// Ranges are the descriptor's (tcp_options): the loader has checked them.
Settings read_settings(const PluginArguments& arguments) {
  Settings settings;
  settings.max_frame = static_cast<std::uint32_t>(arguments.get_int("max_frame"));
  settings.pool_size = static_cast<std::size_t>(arguments.get_int("pool_size"));
  settings.connect_timeout = arguments.get_duration("connect_timeout");
  settings.nodelay = arguments.get_bool("nodelay");
  settings.stream_window = static_cast<std::uint32_t>(arguments.get_int("stream_window"));
  return settings;
}

class TcpTransport final : public Transport {
 public:
  explicit TcpTransport(const PluginArguments& arguments)
      : executor_(arguments.executor()),
        settings_(std::make_shared<const Settings>(read_settings(arguments))),
        pools_(std::make_shared<ClientPools>(io_executor(executor_), settings_)) {}

  ~TcpTransport() override { close(); }

  TransportStatistics statistics() const override {
    return {settings_->counts->server.load(std::memory_order_relaxed),
            settings_->counts->client.load(std::memory_order_relaxed)};
  }

  std::unique_ptr<Listener> listen(std::string_view address, CallHandler handler) override {
    return make_listener(executor_, *settings_, address, std::move(handler));
  }

  void async_call(std::string_view address, std::shared_ptr<const Request> shared,
                  ResponseHandler done) override {
    const Request& request = *shared;
    if (request.context.cancelled()) {
      fail(std::move(done), cancelled_error(client_error_id));
      return;
    }
    OutgoingCall call;
    std::uint64_t timeout_nanoseconds = 0;
    if (request.context.has_deadline()) {
      auto left = request.context.deadline() - Context::Clock::now();
      if (left.count() <= 0) {
        fail(std::move(done),
             timeout_error(client_error_id, "tcp: deadline passed before the call to " +
                                                std::string(address) + " was sent"));
        return;
      }
      timeout_nanoseconds = static_cast<std::uint64_t>(std::max<std::int64_t>(
          1, std::chrono::duration_cast<std::chrono::nanoseconds>(left).count()));
      call.deadline = request.context.deadline();
    }
    std::size_t size = request_frame_size(request);
    if (size > settings_->max_frame) {
      fail(std::move(done),
           Error(client_error_id, 413,
                 "tcp: request of " + std::to_string(size) + " bytes exceeds max_frame " +
                     std::to_string(settings_->max_frame) + "; not sent to " +
                     std::string(address)));
      return;
    }
    std::string problem;
    auto connection = pools_->pick(address, problem);
    if (!connection) {
      fail(std::move(done), bad_request(client_error_id, problem));
      return;
    }
    call.request_id = pools_->next_request_id();
    call.request = std::move(shared);
    call.timeout_nanoseconds = timeout_nanoseconds;
    call.done = std::move(done);
    submit_call(connection, std::move(call));
  }

  void open_stream(std::string_view address, std::shared_ptr<const Request> head,
                   OpenStreamHandler done) override {
    const Request& request = *head;
    if (request.context.cancelled()) {
      fail_open(std::move(done), cancelled_error(client_error_id, "stream cancelled"));
      return;
    }
    std::uint64_t timeout_nanoseconds = 0;
    if (request.context.has_deadline()) {
      auto left = request.context.deadline() - Context::Clock::now();
      if (left.count() <= 0) {
        fail_open(std::move(done),
                  timeout_error(client_error_id, "tcp: deadline passed before the stream to " +
                                                     std::string(address) + " was opened"));
        return;
      }
      timeout_nanoseconds = static_cast<std::uint64_t>(std::max<std::int64_t>(
          1, std::chrono::duration_cast<std::chrono::nanoseconds>(left).count()));
    }
    std::size_t size = request_frame_size(request) - request.body.size();
    if (size > settings_->max_frame) {
      fail_open(std::move(done),
                Error(client_error_id, 413,
                      "tcp: stream head of " + std::to_string(size) + " bytes exceeds max_frame " +
                          std::to_string(settings_->max_frame) + "; not sent to " +
                          std::string(address)));
      return;
    }
    std::string problem;
    auto connection = pools_->pick(address, problem);
    if (!connection) {
      fail_open(std::move(done), bad_request(client_error_id, problem));
      return;
    }
    submit_stream(connection, pools_->next_request_id(), std::move(head), timeout_nanoseconds,
                  settings_->stream_window, std::move(done));
  }

  std::string transport_name() const override { return "tcp"; }

  void close() override { pools_->close_all(); }

  // Not Go-Micro's mucp: the frame is this plugin's own (README.md), so only micro-cpp peers
  // with the tcp transport can call the node.
  std::map<std::string, std::string> node_metadata() const override {
    return {{"protocol", "micro-tcp"}, {"transport", "tcp"}};
  }

 private:
  // Completions run on the executor, never inside async_call.
  void fail(ResponseHandler done, Error error) {
    asio::post(executor_, [done = std::move(done), error = std::move(error)]() mutable {
      done(Response::failure(std::move(error)));
    });
  }

  void fail_open(OpenStreamHandler done, Error error) {
    asio::post(executor_, [done = std::move(done), error = std::move(error)]() mutable {
      done(nullptr, std::move(error));
    });
  }

  asio::any_io_executor executor_;
  std::shared_ptr<const Settings> settings_;
  std::shared_ptr<ClientPools> pools_;
};

const PluginOption tcp_options[] = {
    // At least room for a header plus a few fields; the u32 length field bounds the other end.
    {"max_frame", "int", "4194304",
     "largest frame sent or accepted, in bytes, header included (refused with 413)", "64",
     "4294967295"},
    {"pool_size", "int", "2", "connections kept per node address; calls are spread across them",
     "1", "64"},
    {"connect_timeout", "duration", "5s", "how long connecting may take before calls fail with 503",
     "1ms"},
    {"nodelay", "bool", "true", "set TCP_NODELAY on every connection"},
    {"stream_window", "int", "262144",
     "bytes of messages one stream end buffers for a slow reader before the writer waits", "65536",
     "1073741824"},
};

}  // namespace

}  // namespace micro::tcp

MICRO_PLUGIN(transport, tcp,
             "framed binary protocol over TCP: pooled, multiplexed, the fast default",
             micro::tcp::tcp_options,
             [](const micro::PluginArguments& arguments) -> micro::PluginObject* {
               return new micro::tcp::TcpTransport(arguments);
             })
