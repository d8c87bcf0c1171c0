// Unit tests of the support layer every plugin shares: the logger, text helpers and the
// per-thread random numbers, gzip.
#include <doctest/doctest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <set>
#include <string>
#include <thread>
#include <vector>

#include <micro/gzip.hpp>
#include <micro/log.hpp>
#include <micro/random.hpp>
#include <micro/text.hpp>

namespace {

struct Line {
  micro::log::Level level;
  std::string component;
  std::string message;
};

// Captures every line while alive, and restores the level and the default sink after.
class CapturedLog {
 public:
  CapturedLog() : saved_level_(micro::log::level()) {
    micro::log::set_sink(
        [this](micro::log::Level level, std::string_view component, std::string_view message) {
          lines.push_back({level, std::string(component), std::string(message)});
        });
  }
  ~CapturedLog() {
    micro::log::set_sink(nullptr);
    micro::log::set_level(saved_level_);
  }
  std::vector<Line> lines;

 private:
  micro::log::Level saved_level_;
};

}  // namespace

TEST_CASE("log: lines below the level are not written, the rest reach the sink") {
  CapturedLog log;
  micro::log::set_level(micro::log::Level::warn);
  micro::log::info("broker nats", "connection closed");
  micro::log::warn("registry etcd", "keep-alive failed");
  micro::log::error("server greeter", "deregister failed");
  REQUIRE(log.lines.size() == 2);
  CHECK(log.lines[0].level == micro::log::Level::warn);
  CHECK(log.lines[0].component == "registry etcd");
  CHECK(log.lines[0].message == "keep-alive failed");
  CHECK(log.lines[1].level == micro::log::Level::error);
  CHECK_FALSE(micro::log::enabled(micro::log::Level::info));
  CHECK(micro::log::enabled(micro::log::Level::error));

  micro::log::set_level(micro::log::Level::off);
  micro::log::error("server greeter", "not written");
  CHECK(log.lines.size() == 2);
  CHECK_FALSE(micro::log::enabled(micro::log::Level::off));
}

TEST_CASE("log: one line format, one prefix") {
  CHECK(micro::log::format_line(micro::log::Level::warn, "broker nats", "disconnected") ==
        "[micro] warn broker nats: disconnected");
}

TEST_CASE("log: level names") {
  using micro::log::Level;
  CHECK(micro::log::level_from_string("debug") == Level::debug);
  CHECK(micro::log::level_from_string("WARN") == Level::warn);
  CHECK(micro::log::level_from_string("warning") == Level::warn);
  CHECK(micro::log::level_from_string("off") == Level::off);
  CHECK_FALSE(micro::log::level_from_string("loud").has_value());
  CHECK_FALSE(micro::log::level_from_string("").has_value());
  CHECK(micro::log::to_string(Level::error) == "error");
}

TEST_CASE("log: the default sink writes to stderr and set_sink returns the previous sink") {
  CapturedLog log;
  micro::log::set_level(micro::log::Level::info);
  auto previous = micro::log::set_sink(nullptr);
  CHECK(static_cast<bool>(previous));  // CapturedLog's sink
  micro::log::set_sink(std::move(previous));
  micro::log::info("test", "captured again");
  CHECK(log.lines.size() == 1);
}

TEST_CASE("text: did_you_mean suggests a close candidate and nothing for a far one") {
  std::vector<std::string> names{"registry", "broker", "selector"};
  CHECK(micro::did_you_mean("regsitry", names) == " (did you mean 'registry'?)");
  CHECK(micro::did_you_mean("zzzzzzzz", names).empty());
  CHECK(micro::did_you_mean("x", {}).empty());
  CHECK(micro::edit_distance("kitten", "sitting") == 3);
  CHECK(micro::closest_match("brokr", names) == "broker");
}

TEST_CASE("text: StringMap is searched by string_view") {
  micro::StringMap<int> table;
  table.emplace("alpha", 1);
  std::string_view key = "alpha";
  CHECK(table.find(key) != table.end());
  CHECK(table.find(std::string_view("beta")) == table.end());
}

TEST_CASE("random: ranges, hex and uuid shapes, each thread its own sequence") {
  for (int round = 0; round < 1000; ++round) CHECK(micro::thread_random_below(7) < 7);
  CHECK(micro::thread_random_below(0) == 0);
  auto hex = micro::random_hex(20);
  CHECK(hex.size() == 20);
  CHECK(hex.find_first_not_of("0123456789abcdef") == std::string::npos);
  auto uuid = micro::random_uuid();
  REQUIRE(uuid.size() == 36);
  CHECK(uuid[14] == '4');
  CHECK(std::string("89ab").find(uuid[19]) != std::string::npos);
  CHECK(micro::random_uuid() != uuid);

  std::vector<std::uint64_t> here, there;
  for (int i = 0; i < 4; ++i) here.push_back(micro::thread_random());
  std::thread([&] {
    for (int i = 0; i < 4; ++i) there.push_back(micro::thread_random());
  }).join();
  CHECK(here != there);
}

TEST_CASE("random: a forked child does not repeat its parent's sequence") {
  micro::thread_random();  // seeded before the fork
  int pipe_ends[2];
  REQUIRE(pipe(pipe_ends) == 0);
  pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    std::uint64_t value = micro::thread_random();
    [[maybe_unused]] auto written = write(pipe_ends[1], &value, sizeof value);
    _exit(0);
  }
  std::uint64_t parent_value = micro::thread_random();
  std::uint64_t child_value = 0;
  REQUIRE(read(pipe_ends[0], &child_value, sizeof child_value) == sizeof child_value);
  int status = 0;
  waitpid(child, &status, 0);
  close(pipe_ends[0]);
  close(pipe_ends[1]);
  CHECK(child_value != parent_value);
}

TEST_CASE("gzip: round trip, and bad or oversize input refused with the reason") {
  const std::string text(100000, 'a');
  std::string compressed = micro::gzip::compress(text);
  CHECK(compressed.size() < 1000);
  CHECK(static_cast<unsigned char>(compressed[0]) == 0x1f);  // the gzip magic
  CHECK(static_cast<unsigned char>(compressed[1]) == 0x8b);
  std::string problem;
  auto back = micro::gzip::decompress(compressed, text.size(), problem);
  REQUIRE_MESSAGE(back, problem);
  CHECK(*back == text);
  CHECK(micro::gzip::decompress(micro::gzip::compress(""), 0, problem) == std::string());

  CHECK_FALSE(micro::gzip::decompress(compressed, text.size() - 1, problem));
  CHECK(problem == "gzip message inflates past the limit of 99999 bytes");
  CHECK_FALSE(micro::gzip::decompress(compressed.substr(0, compressed.size() / 2), 1 << 20,
                                      problem));
  CHECK(problem.find("truncated") != std::string::npos);
  CHECK_FALSE(micro::gzip::decompress("not gzip at all", 1 << 20, problem));
  CHECK(problem.find("not valid gzip") != std::string::npos);
  CHECK_FALSE(micro::gzip::decompress("", 1 << 20, problem));
}
