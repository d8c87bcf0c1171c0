// examples/chain — "trail", the smallest useful wrapper plugin: it prints a line when a
// request enters it and when the response leaves it, labelled, so a chain configured as
//   wrappers=trail?label=outer,log,trail?label=inner
// shows the order wrappers run in. Copy this file to start a wrapper plugin of your own.
#include <iostream>
#include <mutex>
#include <string>

#include <micro/plugin.hpp>
#include <micro/wrapper.hpp>

namespace {

std::mutex print_mutex;

void print(const std::string& line) {
  std::lock_guard lock(print_mutex);
  std::cout << line << std::endl;
}

class TrailWrapper final : public micro::Wrapper {
 public:
  explicit TrailWrapper(const micro::PluginArguments& arguments)
      : label_(arguments.get_string("label")) {}

  micro::WrapperSet wrappers(const micro::WrapperScope&) override {
    micro::WrapperSet set;
    std::string label = label_;
    // Server side: around the handler.
    set.handler = [label](micro::HandlerFunction next) -> micro::HandlerFunction {
      return [label, next](const micro::RequestPtr& request, micro::ResponseHandler respond) {
        print("    " + label + " handler enter " + request->endpoint);
        next(request, [label, respond](micro::Response&& response) {
          print("    " + label + " handler leave");
          respond(std::move(response));
        });
      };
    };
    // Client side: around the whole logical call.
    set.client = [label](micro::ClientFunction next) -> micro::ClientFunction {
      return [label, next](const micro::RequestPtr& request, const micro::CallOptions& options,
                           micro::ResponseHandler done) {
        print(label + " client enter " + request->endpoint);
        next(request, options, [label, done](micro::Response&& response) {
          print(label + " client leave");
          done(std::move(response));
        });
      };
    };
    return set;
  }

 private:
  std::string label_;
};

const micro::PluginOption options[] = {
    {"label", "string", "trail", "the name printed on each line"},
};

}  // namespace

MICRO_PLUGIN(wrapper, trail, "prints where a request enters and leaves (chain example)", options,
             [](const micro::PluginArguments& arguments) -> micro::PluginObject* {
               return new TrailWrapper(arguments);
             })
