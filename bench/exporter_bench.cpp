// bench/exporter_bench.cpp — the OTLP exporter alone, without the RPC path: batches of 512
// finished spans (a SERVER span with the 4 RPC attributes the wrappers record) encoded and
// POSTed back to back from this process to bench/otlp_receiver, which runs as a process of
// its own (a collector is never in the service's process). The figure the tracing issue asks
// for is spans per second per core of the exporting side: spans exported divided by this
// process's CPU seconds (encode, HTTP, the client's I/O thread). The receiver's CPU is reported
// apart, per span, so its cost is never mixed into ours.
//
//   exporter_bench RECEIVER [seconds, default 3] [--protocol=http/protobuf|http/json]
//                  [--compression=none|gzip] [--discard]
//
// --discard starts the receiver with --discard: it reads each body and answers without
// walking it, as a collector on another machine costs us nothing. Prints `name value unit`.
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <memory>
#include <span>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "exporters.hpp"
#include "resource.hpp"
#include "sdk_tracer.hpp"
#include "span_data.hpp"

extern char** environ;

using namespace micro::trace;
using namespace micro::trace::sdk;
using Clock = std::chrono::steady_clock;

namespace {

double process_cpu_seconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_utime.tv_sec + usage.ru_stime.tv_sec +
         (usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
}

// utime + stime of another process, from /proc/PID/stat (fields 14 and 15, in clock ticks).
double other_cpu_seconds(pid_t pid) {
  std::ifstream file("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  auto close = text.rfind(')');  // the command name may hold spaces
  if (close == std::string::npos) return 0;
  std::istringstream fields(text.substr(close + 2));
  std::string field;
  double ticks = 0;
  for (int index = 3; fields >> field; ++index) {
    if (index == 14 || index == 15) ticks += std::stod(field);
    if (index == 15) break;
  }
  return ticks / static_cast<double>(sysconf(_SC_CLK_TCK));
}

struct Receiver {
  pid_t pid = -1;
  std::FILE* output = nullptr;
  std::string address;
};

Receiver start_receiver(const std::string& program, bool discard) {
  int pipe_ends[2];
  if (pipe(pipe_ends) != 0) throw std::runtime_error("pipe failed");
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, pipe_ends[1], STDOUT_FILENO);
  posix_spawn_file_actions_addclose(&actions, pipe_ends[0]);
  std::vector<std::string> arguments{program, "0"};
  if (discard) arguments.emplace_back("--discard");
  std::vector<char*> argv;
  for (auto& argument : arguments) argv.push_back(argument.data());
  argv.push_back(nullptr);
  Receiver receiver;
  if (posix_spawn(&receiver.pid, program.c_str(), &actions, nullptr, argv.data(), environ) != 0)
    throw std::runtime_error("cannot start " + program);
  posix_spawn_file_actions_destroy(&actions);
  ::close(pipe_ends[1]);
  receiver.output = fdopen(pipe_ends[0], "r");
  char line[256];
  while (std::fgets(line, sizeof line, receiver.output)) {
    std::string_view text(line);
    if (text.starts_with("listening ")) {
      receiver.address = std::string(text.substr(10, text.find_first_of("\r\n") - 10));
      return receiver;
    }
  }
  throw std::runtime_error(program + " did not say where it listens");
}

// 512 finished SERVER spans of one trace each, as the handler wrapper records them.
std::vector<SpanData> make_batch() {
  std::vector<SpanData> batch(512);
  auto now = std::chrono::system_clock::now();
  for (auto& span : batch) {
    span.context.trace_id = random_trace_id();
    span.context.span_id = random_span_id();
    span.context.flags = flag_sampled | flag_random;
    span.parent_span_id = random_span_id();
    span.parent_remote = true;
    span.name = "Greeter.Hello";
    span.kind = SpanKind::server;
    span.start_time = now;
    span.end_time = now + std::chrono::microseconds(42);
    span.attributes = {{"rpc.system", std::string("micro")},
                       {"rpc.service", std::string("greeter")},
                       {"rpc.method", std::string("Hello")},
                       {"server.port", std::int64_t{8080}}};
  }
  return batch;
}

}  // namespace

int main(int argc, char** argv) try {
  if (argc < 2) {
    std::fprintf(stderr,
                 "usage: exporter_bench RECEIVER [seconds] [--protocol=…] [--compression=…] "
                 "[--discard]\n");
    return 2;
  }
  std::string receiver_program = argv[1];
  double seconds = 3;
  ExporterSettings settings;
  bool discard = false;
  for (int i = 2; i < argc; ++i) {
    std::string_view argument = argv[i];
    if (argument.starts_with("--protocol="))
      settings.protocol = std::string(argument.substr(11));
    else if (argument.starts_with("--compression="))
      settings.compression = std::string(argument.substr(14));
    else if (argument == "--discard")
      discard = true;
    else
      seconds = std::atof(argv[i]);
  }
  Receiver receiver = start_receiver(receiver_program, discard);
  settings.endpoint = "http://" + receiver.address + "/v1/traces";
  settings.max_attempts = 1;
  auto statistics = std::make_shared<ExporterStatistics>();
  auto exporter =
      make_exporter(settings, make_resource("bench", "1.0"), {"micro-cpp", "bench"}, statistics);
  auto batch = make_batch();
  // Warm-up: the connection, the encoder's buffer.
  for (int i = 0; i < 20; ++i) exporter->export_spans(std::span<const SpanData>(batch));

  std::uint64_t spans = 0, failures = 0;
  double cpu_before = process_cpu_seconds();
  double receiver_before = other_cpu_seconds(receiver.pid);
  auto started = Clock::now();
  auto deadline = started + std::chrono::duration<double>(seconds);
  while (Clock::now() < deadline) {
    if (exporter->export_spans(std::span<const SpanData>(batch)) == ExportResult::success)
      spans += batch.size();
    else
      ++failures;
  }
  double elapsed = std::chrono::duration<double>(Clock::now() - started).count();
  double cpu = process_cpu_seconds() - cpu_before;
  double receiver_cpu = other_cpu_seconds(receiver.pid) - receiver_before;
  exporter->shutdown(std::chrono::seconds(1));
  kill(receiver.pid, SIGTERM);
  int status = 0;
  waitpid(receiver.pid, &status, 0);
  std::fclose(receiver.output);

  std::string name = "exporter_" + settings.protocol.substr(settings.protocol.find('/') + 1) +
                     (settings.compression == "gzip" ? "_gzip" : "") + (discard ? "_discard" : "");
  std::printf("%s_spans_per_second %.0f spans/s\n", name.c_str(), spans / elapsed);
  std::printf("%s_spans_per_cpu_second %.0f spans/s/core\n", name.c_str(),
              cpu > 0 ? spans / cpu : 0.0);
  std::printf("%s_cpu_per_span %.0f ns\n", name.c_str(), spans ? cpu / spans * 1e9 : 0.0);
  std::printf("%s_receiver_cpu_per_span %.0f ns\n", name.c_str(),
              spans ? receiver_cpu / spans * 1e9 : 0.0);
  std::printf("%s_failed_exports %llu count\n", name.c_str(),
              static_cast<unsigned long long>(failures));
  return failures == 0 ? 0 : 1;
} catch (const std::exception& error) {
  std::fprintf(stderr, "exporter_bench: %s\n", error.what());
  return 1;
}
