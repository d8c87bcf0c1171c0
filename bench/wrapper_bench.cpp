// bench/wrapper_bench.cpp — what each resilience wrapper costs per call, all in one run: the
// breaker (call chain), ratelimit (token bucket; concurrency limit; client side), auth (HS256,
// RS256 and ES256 verification on the handler chain, with its verified-token cache and without;
// attaching a token on the client chain),
// each loaded through the plugin loader and wrapped around a function that answers at once,
// so the figure is the wrapper's own work. Prints `name value unit` lines per wrapper:
//   wrapper_<name>_cpu            this thread's CPU time per call (ns)
//   wrapper_<name>_instructions   user-space instructions per call (when perf events are allowed)
//   wrapper_<name>_overhead_cpu   CPU per call minus the bare chain's of the same kind (ns)
//   wrapper_<name>_overhead_instructions   the same in instructions
//
//   wrapper_bench [seconds per wrapper, default 0.5] [name: only that one, to profile]
//
// Keys and tokens are made at start with the openssl CLI in a temporary directory.
#include <linux/perf_event.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <micro/log.hpp>
#include <micro/plugin_loader.hpp>
#include <micro/runtime.hpp>
#include <micro/wrapper.hpp>

#include "wrappers/jwt_signer.hpp"

namespace {

double thread_cpu_nanoseconds() {
  timespec now{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
  return static_cast<double>(now.tv_sec) * 1e9 + static_cast<double>(now.tv_nsec);
}

// Counts this thread's user-space instructions; reads -1 where perf events are not allowed.
class InstructionCounter {
 public:
  InstructionCounter() {
    perf_event_attr attributes{};
    attributes.type = PERF_TYPE_HARDWARE;
    attributes.size = sizeof attributes;
    attributes.config = PERF_COUNT_HW_INSTRUCTIONS;
    attributes.exclude_kernel = 1;
    attributes.exclude_hv = 1;
    descriptor_ = static_cast<int>(syscall(SYS_perf_event_open, &attributes, 0, -1, -1, 0));
  }
  ~InstructionCounter() {
    if (descriptor_ >= 0) close(descriptor_);
  }
  long long read_count() const {
    long long count = -1;
    if (descriptor_ < 0 || ::read(descriptor_, &count, sizeof count) != sizeof count) return -1;
    return count;
  }

 private:
  int descriptor_ = -1;
};

enum class Chain { handler, call, client };

}  // namespace

int main(int argc, char** argv) try {
  double seconds = argc > 1 ? std::atof(argv[1]) : 0.5;
  std::string only = argc > 2 ? argv[2] : "";
  micro::log::set_level(micro::log::Level::warn);
  jwt_signer::Keys keys("micro-wrapper-bench");
  nlohmann::json claims = {{"sub", "alice"},
                           {"iss", "https://issuer.example"},
                           {"aud", "greeter"},
                           {"exp", jwt_signer::now_seconds() + 3600},
                           {"scope", "greet.read"}};
  std::string token_path = (keys.directory / "client.token").string();
  jwt_signer::write_text(token_path, jwt_signer::token(keys, "hs", claims));

  using Options = std::vector<std::pair<std::string, std::string>>;
  struct Entry {
    std::string name;
    Chain chain;
    std::string plugin;
    Options options;
    std::string authorization;  // put into the request's metadata
  };
  Options verify = {{"side", "server"},
                    {"issuer", "https://issuer.example"},
                    {"audience", "greeter"},
                    {"scopes", "Greeter.Hello:greet.read"}};
  auto with = [](Options base, Options more) {
    base.insert(base.end(), more.begin(), more.end());
    return base;
  };
  std::vector<Entry> entries = {
      {"none_handler", Chain::handler, "", {}, ""},
      {"none_call", Chain::call, "", {}, ""},
      {"none_client", Chain::client, "", {}, ""},
      {"breaker", Chain::call, "breaker", {}, ""},
      {"ratelimit_rate", Chain::handler, "ratelimit", {{"rate", "1e9"}}, ""},
      {"ratelimit_concurrency",
       Chain::handler,
       "ratelimit",
       {{"rate", "0"}, {"concurrency", "1000000"}},
       ""},
      {"ratelimit_client", Chain::client, "ratelimit", {{"side", "client"}, {"rate", "1e9"}}, ""},
      {"auth_hs256", Chain::handler, "auth", with(verify, {{"keys", keys.path("hs", "secret")}}),
       "Bearer " + jwt_signer::token(keys, "hs", claims)},
      {"auth_rs256", Chain::handler, "auth", with(verify, {{"keys", keys.path("rsa", "pub")}}),
       "Bearer " + jwt_signer::token(keys, "rsa", claims)},
      {"auth_es256", Chain::handler, "auth", with(verify, {{"keys", keys.path("ec", "pub")}}),
       "Bearer " + jwt_signer::token(keys, "ec", claims)},
      {"auth_hs256_uncached", Chain::handler, "auth",
       with(verify, {{"keys", keys.path("hs", "secret")}, {"cache", "0"}}),
       "Bearer " + jwt_signer::token(keys, "hs", claims)},
      {"auth_rs256_uncached", Chain::handler, "auth",
       with(verify, {{"keys", keys.path("rsa", "pub")}, {"cache", "0"}}),
       "Bearer " + jwt_signer::token(keys, "rsa", claims)},
      {"auth_es256_uncached", Chain::handler, "auth",
       with(verify, {{"keys", keys.path("ec", "pub")}, {"cache", "0"}}),
       "Bearer " + jwt_signer::token(keys, "ec", claims)},
      {"auth_client", Chain::client, "auth", {{"side", "client"}, {"token_file", token_path}}, ""},
  };

  micro::Runtime runtime{1};
  micro::Node node{"greeter-1", "127.0.0.1:1", {}};
  std::map<Chain, double> bare_cpu, bare_instructions;
  for (const auto& entry : entries) {
    if (!only.empty() && entry.name != only && !entry.name.starts_with("none")) continue;
    std::shared_ptr<micro::Wrapper> wrapper;
    micro::WrapperChains chains;
    if (!entry.plugin.empty()) {
      wrapper = micro::PluginLoader::instance().create<micro::Wrapper>(
          entry.plugin, "", entry.options, runtime.executor());
      chains.add(wrapper->wrappers({"greeter", "1", "tcp", ""}));
    }
    std::uint64_t answered = 0, failed = 0;
    auto answer = [](micro::ResponseHandler& done) {
      micro::Response response;
      response.content_type = "application/json";
      response.body = "{}";
      done(std::move(response));
    };
    std::function<void(const micro::RequestPtr&, micro::ResponseHandler)> run;
    switch (entry.chain) {
      case Chain::handler: {
        auto handler = chains.wrap_handler(
            [&](const micro::RequestPtr&, micro::ResponseHandler done) { answer(done); });
        run = [handler](const micro::RequestPtr& request, micro::ResponseHandler done) {
          handler(request, std::move(done));
        };
        break;
      }
      case Chain::call: {
        auto call = chains.wrap_call([&](const micro::RequestPtr&, const micro::Attempt&,
                                         micro::ResponseHandler done) { answer(done); });
        run = [call, &node](const micro::RequestPtr& request, micro::ResponseHandler done) {
          call(request, micro::Attempt{node, 1}, std::move(done));
        };
        break;
      }
      case Chain::client: {
        auto client = chains.wrap_client([&](const micro::RequestPtr&, const micro::CallOptions&,
                                             micro::ResponseHandler done) { answer(done); });
        run = [client](const micro::RequestPtr& request, micro::ResponseHandler done) {
          client(request, micro::CallOptions{}, std::move(done));
        };
        break;
      }
    }
    auto request = std::make_shared<micro::Request>();
    request->service = "greeter";
    request->endpoint = "Greeter.Hello";
    request->content_type = "application/json";
    request->body = R"({"name":"World"})";
    auto one = [&] {
      if (!entry.authorization.empty())
        request->context.metadata().set("Authorization", entry.authorization);
      run(request, [&](micro::Response&& response) {
        if (response.error)
          ++failed;
        else
          ++answered;
      });
    };
    for (int i = 0; i < 100; ++i) one();  // warm up
    if (failed > 0) {
      std::cerr << "wrapper_bench: " << entry.name << " refuses its calls; check the setup\n";
      return 1;
    }
    InstructionCounter instructions;
    long long instructions_started = instructions.read_count();
    double cpu_started = thread_cpu_nanoseconds();
    double budget = seconds * 1e9;
    std::uint64_t calls = 0;
    while (thread_cpu_nanoseconds() - cpu_started < budget) {
      for (int i = 0; i < 64; ++i) one();
      calls += 64;
    }
    double cpu = (thread_cpu_nanoseconds() - cpu_started) / static_cast<double>(calls);
    long long instructions_ended = instructions.read_count();
    if (failed > 0) {
      std::cerr << "wrapper_bench: " << entry.name << " refused " << failed << " calls\n";
      return 1;
    }
    std::printf("wrapper_%s_cpu %.1f ns\n", entry.name.c_str(), cpu);
    double per_call = -1;
    if (instructions_started >= 0 && instructions_ended >= 0) {
      per_call = static_cast<double>(instructions_ended - instructions_started) /
                 static_cast<double>(calls);
      std::printf("wrapper_%s_instructions %.0f per_call\n", entry.name.c_str(), per_call);
    }
    if (entry.plugin.empty()) {
      bare_cpu[entry.chain] = cpu;
      bare_instructions[entry.chain] = per_call;
      continue;
    }
    std::printf("wrapper_%s_overhead_cpu %.1f ns\n", entry.name.c_str(),
                cpu - bare_cpu[entry.chain]);
    if (per_call >= 0 && bare_instructions[entry.chain] >= 0)
      std::printf("wrapper_%s_overhead_instructions %.0f per_call\n", entry.name.c_str(),
                  per_call - bare_instructions[entry.chain]);
  }
  return 0;
} catch (const std::exception& e) {
  std::cerr << "wrapper_bench: " << e.what() << "\n";
  return 1;
}
