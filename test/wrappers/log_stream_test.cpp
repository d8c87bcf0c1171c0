// The log wrapper on streams, through the plugin loader and micro::WrapperChains, around an
// in-memory MessageStream: a line when a stream opens and one when it ends, with the outcome
// and the messages counted each way; a client's end line waits until its reader has read out
// the messages that arrived before the end.
#include <doctest/doctest.h>

#include <unistd.h>

#include <atomic>
#include <deque>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>

#include <micro/error.hpp>
#include <micro/plugin_loader.hpp>
#include <micro/stream.hpp>
#include <micro/wrapper.hpp>

#include "wrappers/memory_stream.hpp"

using test_support::MemoryStream;
using test_support::read_all;

namespace {

boost::asio::io_context& io_context() {
  static boost::asio::io_context context;
  return context;
}

std::shared_ptr<micro::Wrapper> load_log(const std::string& path) {
  return micro::PluginLoader::instance().create<micro::Wrapper>(
      "log", "", {{"stream", path}, {"prefix", "[svc]"}}, io_context().get_executor());
}

struct TemporaryFile {
  TemporaryFile() {
    static std::atomic<int> counter{0};
    path = std::filesystem::temp_directory_path() /
           ("micro-log-stream-test-" + std::to_string(::getpid()) + "-" +
            std::to_string(counter.fetch_add(1)) + ".log");
    std::filesystem::remove(path);
  }
  ~TemporaryFile() { std::filesystem::remove(path); }
  std::vector<std::string> lines() const {
    std::ifstream in(path);
    std::vector<std::string> result;
    for (std::string line; std::getline(in, line);) result.push_back(line);
    return result;
  }
  std::filesystem::path path;
};

bool ends_with_duration(const std::string& line) {
  auto space = line.rfind(' ');
  return space != std::string::npos && line.size() > space + 3 &&
         line.compare(line.size() - 2, 2, "ms") == 0;
}

}  // namespace

TEST_CASE("log: a handled stream gets an open line and an end line with its counts") {
  TemporaryFile file;
  micro::WrapperChains chains;
  chains.add(load_log(file.path.string())->wrappers({"echo", "1.0", "tcp", "memory"}));
  auto raw = std::make_shared<MemoryStream>("Chat.Talk");
  raw->incoming = {"a", "b"};
  auto handler = chains.wrap_handler_stream([](const micro::MessageStreamPtr& stream) {
    int read = read_all(stream);
    for (int i = 0; i <= read; ++i) stream->async_write("x", [](std::optional<micro::Error>) {});
    stream->finish(micro::Response{});
  });
  handler(raw);
  CHECK(raw->sent.size() == 3);
  auto lines = file.lines();
  REQUIRE(lines.size() == 2);
  CHECK(lines[0] == "[svc] stream-handler echo Chat.Talk open");
  CHECK(lines[1].rfind("[svc] stream-handler echo Chat.Talk ok sent=3 received=2 ", 0) == 0);
  CHECK(ends_with_duration(lines[1]));
}

TEST_CASE("log: a handled stream that ends with an error logs the error") {
  TemporaryFile file;
  micro::WrapperChains chains;
  chains.add(load_log(file.path.string())->wrappers({"echo", "1.0", "tcp", "memory"}));
  auto raw = std::make_shared<MemoryStream>("Upload.Send");
  raw->incoming = {"chunk"};
  auto handler = chains.wrap_handler_stream([](const micro::MessageStreamPtr& stream) {
    read_all(stream);
    stream->finish(micro::Response::failure(micro::unavailable("echo", "disk full")));
  });
  handler(raw);
  auto lines = file.lines();
  REQUIRE(lines.size() == 2);
  CHECK(lines[1].find("stream-handler echo Upload.Send error") != std::string::npos);
  CHECK(lines[1].find("disk full") != std::string::npos);
  CHECK(lines[1].find("sent=0 received=1") != std::string::npos);
}

TEST_CASE("log: a client stream's end line waits for its reader, then counts everything") {
  TemporaryFile file;
  micro::WrapperChains chains;
  chains.add(load_log(file.path.string())->wrappers({"caller", "1.0", "tcp", "memory"}));
  auto raw = std::make_shared<MemoryStream>("Ticker.Watch");
  auto open =
      chains.wrap_client_stream([raw](const micro::RequestPtr&, const micro::CallOptions&,
                                      micro::OpenStreamHandler done) { done(raw, std::nullopt); });
  auto request = std::make_shared<micro::Request>();
  request->service = "prices";
  request->endpoint = "Ticker.Watch";
  micro::MessageStreamPtr stream;
  open(request, {}, [&](micro::MessageStreamPtr opened, std::optional<micro::Error>) {
    stream = std::move(opened);
  });
  REQUIRE(stream);
  stream->async_write("watch", [](std::optional<micro::Error>) {});
  // The server's ticks and its final status arrive before the client has read them.
  raw->incoming = {"t1", "t2", "t3"};
  raw->finish(micro::Response{});
  CHECK(file.lines().size() == 1);  // only the open line: three ticks are still unread
  CHECK(read_all(stream) == 3);
  auto lines = file.lines();
  REQUIRE(lines.size() == 2);
  CHECK(lines[0] == "[svc] stream-client prices Ticker.Watch open");
  CHECK(lines[1].rfind("[svc] stream-client prices Ticker.Watch ok sent=1 received=3 ", 0) == 0);
}

TEST_CASE("log: a client stream that never opened logs the error with zero counts") {
  TemporaryFile file;
  micro::WrapperChains chains;
  chains.add(load_log(file.path.string())->wrappers({"caller", "1.0", "tcp", "memory"}));
  auto open = chains.wrap_client_stream(
      [](const micro::RequestPtr&, const micro::CallOptions&, micro::OpenStreamHandler done) {
        done(nullptr, micro::unavailable("micro.client", "no node of prices"));
      });
  auto request = std::make_shared<micro::Request>();
  request->service = "prices";
  request->endpoint = "Ticker.Watch";
  std::optional<micro::Error> seen;
  open(request, {}, [&](micro::MessageStreamPtr opened, std::optional<micro::Error> error) {
    CHECK_FALSE(opened);
    seen = error;
  });
  REQUIRE(seen);
  CHECK(seen->code == 503);
  auto lines = file.lines();
  REQUIRE(lines.size() == 2);
  CHECK(lines[1].find("stream-client prices Ticker.Watch error") != std::string::npos);
  CHECK(lines[1].find("no node of prices") != std::string::npos);
  CHECK(lines[1].find("sent=0 received=0") != std::string::npos);
}
